//! Consumer-driven contracts between the services that call each other
//! over service chaining: cart → product, order → inventory and
//! order → payment.
//!
//! Each consumer's expectations are a Pact (`tests/pacts/<consumer>-<provider>.json`):
//! the consumer tests build it with `pact_consumer`, send the consumer's
//! requests to its mock server, check that what the consumer reads parses,
//! and require the pact written to equal the committed one (run with
//! `BV_UPDATE_PACTS=1` to rewrite the committed files after a deliberate
//! change). The provider tests start the provider component under `bv`
//! with a database of their own, set up each provider state (SQL or the
//! provider's own API as an administrator) and replay every interaction of
//! the committed pact against it with `pact_verifier`: a provider change
//! that breaks a consumer fails here.
//!
//! The consumers call without a token (service chaining is trusted); from
//! outside, inventory and payment take those calls only from an
//! administrator, so the verifier adds an administrator's token.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Once};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pact_consumer::prelude::*;
use pact_models::provider_states::ProviderState;
use pact_verifier::callback_executors::ProviderStateExecutor;
use pact_verifier::verification_result::VerificationExecutionResult;
use pact_verifier::{
    FilterInfo, NullRequestFilterExecutor, PactSource, ProviderInfo, ProviderTransport,
    VerificationOptions,
};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth_support::{self, admin};
use crate::harness::*;
use crate::pg_support::*;
use crate::repo_manifest::RepoManifest;

/// Set to `1` to rewrite the committed pacts from the consumer tests.
const UPDATE: &str = "BV_UPDATE_PACTS";

/// The problem `type` prefix (`urn:bitvelocity:problem:<kind>`).
const PROBLEM: &str = "urn:bitvelocity:problem:";

/// Demo catalogue products (product migration `0002_demo_catalog`).
const MUG_RED: &str = "5eed0000-0000-4000-8000-000000000001";
const MUG_BLUE: &str = "5eed0000-0000-4000-8000-000000000002";
const MUG_TRAVEL: &str = "5eed0000-0000-4000-8000-000000000003";
const MUG_ESPRESSO: &str = "5eed0000-0000-4000-8000-000000000004";
/// A product id no service knows.
const NO_PRODUCT: &str = "5eed0000-0000-4000-8000-0000000000ff";

/// Orders of the order → inventory and order → payment contracts (the
/// order service uses the order id as reservation id and payment id).
const ORDER_RESERVED: &str = "0c4e1f6a-1d2b-4c3e-9f00-000000000001";
const ORDER_SHORT: &str = "0c4e1f6a-1d2b-4c3e-9f00-000000000002";
const ORDER_UNKNOWN: &str = "0c4e1f6a-1d2b-4c3e-9f00-000000000003";
const ORDER_RELEASE: &str = "0c4e1f6a-1d2b-4c3e-9f00-000000000004";
const ORDER_COMMIT: &str = "0c4e1f6a-1d2b-4c3e-9f00-000000000005";
const ORDER_NONE: &str = "0c4e1f6a-1d2b-4c3e-9f00-000000000006";
const ORDER_PAID: &str = "0c4e1f6a-1d2b-4c3e-9f00-000000000011";
const ORDER_BROKE: &str = "0c4e1f6a-1d2b-4c3e-9f00-000000000012";
const ORDER_CAPTURE: &str = "0c4e1f6a-1d2b-4c3e-9f00-000000000013";
const ORDER_REFUND: &str = "0c4e1f6a-1d2b-4c3e-9f00-000000000014";
const ORDER_DECLINED: &str = "0c4e1f6a-1d2b-4c3e-9f00-000000000015";

/// Card tokens of the simulated processor: one that pays, one declined
/// for insufficient funds.
const CARD_OK: &str = "tok_visa";
const CARD_BROKE: &str = "tok_insufficient_funds";

// Provider states.
const ST_MUG_RED: &str = "product 5eed0000-0000-4000-8000-000000000001 exists priced 1299 USD";
const ST_NO_PRODUCT: &str = "product 5eed0000-0000-4000-8000-0000000000ff does not exist";
const ST_STOCK_10: &str = "product 5eed0000-0000-4000-8000-000000000001 has 10 units available";
const ST_STOCK_1: &str = "product 5eed0000-0000-4000-8000-000000000002 has 1 unit available";
const ST_NO_STOCK: &str = "product 5eed0000-0000-4000-8000-0000000000ff has no stock record";
const ST_HELD_RELEASE: &str =
    "reservation 0c4e1f6a-1d2b-4c3e-9f00-000000000004 holds 1 unit of product 5eed0000-0000-4000-8000-000000000003";
const ST_HELD_COMMIT: &str =
    "reservation 0c4e1f6a-1d2b-4c3e-9f00-000000000005 holds 1 unit of product 5eed0000-0000-4000-8000-000000000004";
const ST_NO_RESERVATION: &str = "reservation 0c4e1f6a-1d2b-4c3e-9f00-000000000006 does not exist";
const ST_NO_PAYMENT_PAID: &str = "payment 0c4e1f6a-1d2b-4c3e-9f00-000000000011 does not exist";
const ST_NO_PAYMENT_BROKE: &str = "payment 0c4e1f6a-1d2b-4c3e-9f00-000000000012 does not exist";
const ST_AUTHORIZED: &str = "payment 0c4e1f6a-1d2b-4c3e-9f00-000000000013 is authorized";
const ST_CAPTURED: &str = "payment 0c4e1f6a-1d2b-4c3e-9f00-000000000014 is captured";
const ST_DECLINED: &str = "payment 0c4e1f6a-1d2b-4c3e-9f00-000000000015 was declined";

/// Keeps the Pact libraries from reporting usage over the network.
fn offline() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| std::env::set_var("PACT_DO_NOT_TRACK", "true"));
}

/// The committed pact of `consumer` and `provider`.
fn committed(consumer: &str, provider: &str) -> PathBuf {
    repo_root()
        .join("triggers/bv/tests/pacts")
        .join(format!("{consumer}-{provider}.json"))
}

/// The mock server's address.
fn mock_addr(server: &dyn ValidatingMockServer) -> SocketAddr {
    let url = server.url();
    let host = url.host_str().expect("mock server host");
    let host = if host == "localhost" {
        "127.0.0.1"
    } else {
        host
    };
    format!("{host}:{}", url.port().expect("mock server port"))
        .parse()
        .expect("mock server address")
}

/// A pact file's parts that the contract is made of: who, and the
/// interactions (the metadata names library versions, not expectations).
fn contract_of(pact: &Value) -> Value {
    json!({
        "consumer": pact["consumer"],
        "provider": pact["provider"],
        "interactions": pact["interactions"],
    })
}

/// Runs the consumer's `exercise` against a mock server of `pact`, then
/// checks the pact written equals the committed one (or rewrites the
/// committed one under `BV_UPDATE_PACTS=1`).
async fn consumer_contract<F, Fut>(
    pact: &mut PactBuilder,
    consumer: &str,
    provider: &str,
    exercise: F,
) where
    F: FnOnce(SocketAddr) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let dir = tempfile::tempdir().unwrap();
    pact.with_output_dir(dir.path());
    let server = pact.start_mock_server(None, None);
    exercise(mock_addr(server.as_ref())).await;
    // Dropping the mock server checks every interaction was asked for
    // exactly as declared (else it panics with the mismatches) and writes
    // the pact.
    drop(server);
    let written = dir.path().join(format!("{consumer}-{provider}.json"));
    let text = std::fs::read_to_string(&written).unwrap_or_else(|e| {
        panic!(
            "the mock server wrote no pact at {}: {e}",
            written.display()
        )
    });
    let generated: Value = serde_json::from_str(&text).unwrap();
    let path = committed(consumer, provider);
    if std::env::var(UPDATE).as_deref() == Ok("1") {
        let pretty = serde_json::to_string_pretty(&generated).unwrap() + "\n";
        std::fs::write(&path, pretty).unwrap();
        return;
    }
    let on_disk: Value = std::fs::read_to_string(&path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Value::Null);
    assert_eq!(
        contract_of(&generated),
        contract_of(&on_disk),
        "the {consumer} → {provider} expectations differ from {}: if the change is \
         deliberate, regenerate the pact with `{UPDATE}=1 cargo test --release -p bv --test it \
         -- contracts::` and commit it with the change (its provider must still pass)",
        path.display()
    );
}

/// A problem answer's kind (`type` without the prefix), as the order
/// service reads it.
fn kind(body: &Value) -> Option<&str> {
    body["type"].as_str().and_then(|t| t.strip_prefix(PROBLEM))
}

// ---------------------------------------------------------------------
// cart → product

/// What the cart reads of a product (`cart/src/catalog.rs`'s `Wire`).
#[derive(Debug, Deserialize)]
struct WireProduct {
    id: String,
    sku: String,
    name: String,
    price: WirePrice,
}

#[derive(Debug, Deserialize)]
struct WirePrice {
    amount: i64,
    currency: String,
}

/// What the cart reads of the red mug, alone or in a page's `items`.
fn red_mug() -> JsonPattern {
    json_pattern!({
        "id": like!(MUG_RED),
        "sku": like!("MUG-RED-350"),
        "name": like!("Red stoneware mug"),
        "price": {
            "amount": like!(1299),
            "currency": term!("^[A-Z]{3}$", "USD"),
        },
    })
}

fn cart_product() -> PactBuilder {
    offline();
    let mut pact = PactBuilder::new("cart", "product");
    pact.interaction("a lookup of a product", "", |mut i| {
        i.given(ST_MUG_RED);
        i.request.get().path(format!("/api/products/{MUG_RED}"));
        i.response.ok().json_body(red_mug());
        i
    })
    .interaction("a lookup of an unknown product", "", |mut i| {
        i.given(ST_NO_PRODUCT);
        i.request.get().path(format!("/api/products/{NO_PRODUCT}"));
        i.response.not_found();
        i
    })
    // A checkout's cart asks for all its lines at once; a product left out
    // of `items` is unknown to the cart.
    .interaction("a lookup of several products, one unknown", "", |mut i| {
        i.given(ST_MUG_RED);
        i.given(ST_NO_PRODUCT);
        i.request
            .get()
            .path("/api/products")
            .query_param("ids", format!("{MUG_RED},{NO_PRODUCT}"));
        i.response
            .ok()
            .json_body(json_pattern!({ "items": [red_mug()] }));
        i
    });
    pact
}

#[tokio::test]
async fn cart_expectations_of_product_are_the_committed_pact() {
    consumer_contract(&mut cart_product(), "cart", "product", |addr| async move {
        let r = request(addr, "GET", &format!("/api/products/{MUG_RED}"), &[], "").await;
        assert_eq!(r.status, 200, "{}", r.text());
        let p: WireProduct = serde_json::from_slice(&r.body).expect("the cart reads the product");
        assert_eq!(
            (p.id.as_str(), p.sku.as_str(), p.name.as_str()),
            (MUG_RED, "MUG-RED-350", "Red stoneware mug")
        );
        assert_eq!((p.price.amount, p.price.currency.as_str()), (1299, "USD"));
        // 404 (or 410) is an unknown product to the cart.
        let r = request(addr, "GET", &format!("/api/products/{NO_PRODUCT}"), &[], "").await;
        assert_eq!(r.status, 404);
        let r = request(
            addr,
            "GET",
            &format!("/api/products?ids={MUG_RED},{NO_PRODUCT}"),
            &[],
            "",
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
        #[derive(Deserialize)]
        struct Page {
            items: Vec<WireProduct>,
        }
        let page: Page = serde_json::from_slice(&r.body).expect("the cart reads the page");
        let ids: Vec<&str> = page.items.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(ids, [MUG_RED]);
    })
    .await;
}

// ---------------------------------------------------------------------
// order → inventory

/// The saga's reservation body (`bv_orders::saga::reservation`).
fn reservation(order: &str, product: &str, quantity: i64) -> Value {
    json!({
        "reservationId": order,
        "orderId": order,
        "items": [{ "productId": product, "quantity": quantity }],
    })
}

fn order_inventory() -> PactBuilder {
    offline();
    let mut pact = PactBuilder::new("order", "inventory");
    pact.interaction("a reservation of stock in hand", "", |mut i| {
        i.given(ST_STOCK_10);
        i.request
            .post()
            .path("/api/inventory/reservations")
            .content_type("application/json")
            .json_body(reservation(ORDER_RESERVED, MUG_RED, 2));
        i.response.created();
        i
    })
    .interaction("a reservation beyond the stock in hand", "", |mut i| {
        i.given(ST_STOCK_1);
        i.request
            .post()
            .path("/api/inventory/reservations")
            .content_type("application/json")
            .json_body(reservation(ORDER_SHORT, MUG_BLUE, 5));
        i.response.status(409).json_body(json_pattern!({
            "detail": like!("not enough stock"),
        }));
        i
    })
    .interaction("a reservation of a product without stock", "", |mut i| {
        i.given(ST_NO_STOCK);
        i.request
            .post()
            .path("/api/inventory/reservations")
            .content_type("application/json")
            .json_body(reservation(ORDER_UNKNOWN, NO_PRODUCT, 1));
        i.response.status(422).json_body(json_pattern!({
            "type": "urn:bitvelocity:problem:unknown-product",
            "detail": like!("no stock record"),
        }));
        i
    })
    .interaction("the release of a held reservation", "", |mut i| {
        i.given(ST_HELD_RELEASE);
        i.request.post().path(format!(
            "/api/inventory/reservations/{ORDER_RELEASE}/release"
        ));
        i.response.ok();
        i
    })
    .interaction("the release of an unknown reservation", "", |mut i| {
        i.given(ST_NO_RESERVATION);
        i.request
            .post()
            .path(format!("/api/inventory/reservations/{ORDER_NONE}/release"));
        i.response.not_found();
        i
    })
    .interaction("the commit of a held reservation", "", |mut i| {
        i.given(ST_HELD_COMMIT);
        i.request
            .post()
            .path(format!("/api/inventory/reservations/{ORDER_COMMIT}/commit"));
        i.response.ok();
        i
    });
    pact
}

/// A JSON POST as the order service sends it (no token; `body` as JSON).
async fn post(addr: SocketAddr, path: &str, body: Option<&Value>) -> Reply {
    match body {
        Some(body) => {
            request(
                addr,
                "POST",
                path,
                &[("content-type", "application/json")],
                body.to_string(),
            )
            .await
        }
        None => request(addr, "POST", path, &[], "").await,
    }
}

/// The answer's body as the order service reads it (`null` unless JSON).
fn answer(r: &Reply) -> Value {
    serde_json::from_slice(&r.body).unwrap_or(Value::Null)
}

#[tokio::test]
async fn order_expectations_of_inventory_are_the_committed_pact() {
    consumer_contract(
        &mut order_inventory(),
        "order",
        "inventory",
        |addr| async move {
            let path = "/api/inventory/reservations";
            let r = post(addr, path, Some(&reservation(ORDER_RESERVED, MUG_RED, 2))).await;
            assert!(matches!(r.status, 200 | 201), "held: {}", r.status);
            // 409: insufficient stock, its detail shown to the customer.
            let r = post(addr, path, Some(&reservation(ORDER_SHORT, MUG_BLUE, 5))).await;
            assert_eq!(r.status, 409);
            assert!(answer(&r)["detail"].is_string(), "{}", r.text());
            // unknown-product is told apart by its problem kind.
            let r = post(addr, path, Some(&reservation(ORDER_UNKNOWN, NO_PRODUCT, 1))).await;
            assert_eq!(kind(&answer(&r)), Some("unknown-product"), "{}", r.text());
            assert!(answer(&r)["detail"].is_string(), "{}", r.text());
            // Giving back: 200 released, 404 nothing held.
            let r = post(addr, &format!("{path}/{ORDER_RELEASE}/release"), None).await;
            assert_eq!(r.status, 200);
            let r = post(addr, &format!("{path}/{ORDER_NONE}/release"), None).await;
            assert_eq!(r.status, 404);
            // Fulfilling: 200 committed.
            let r = post(addr, &format!("{path}/{ORDER_COMMIT}/commit"), None).await;
            assert_eq!(r.status, 200);
        },
    )
    .await;
}

// ---------------------------------------------------------------------
// order → payment

/// The saga's authorization body (`bv_orders::saga::authorization`).
fn authorization(order: &str, amount: i64, card: &str) -> Value {
    json!({
        "paymentId": order,
        "orderId": order,
        "amount": { "amount": amount, "currency": "EUR" },
        "card": { "token": card },
    })
}

fn order_payment() -> PactBuilder {
    offline();
    let mut pact = PactBuilder::new("order", "payment");
    pact.interaction("an authorization of a card in funds", "", |mut i| {
        i.given(ST_NO_PAYMENT_PAID);
        i.request
            .post()
            .path("/api/payments/authorize")
            .content_type("application/json")
            .json_body(authorization(ORDER_PAID, 4998, CARD_OK));
        i.response.created();
        i
    })
    .interaction("an authorization of a card without funds", "", |mut i| {
        i.given(ST_NO_PAYMENT_BROKE);
        i.request
            .post()
            .path("/api/payments/authorize")
            .content_type("application/json")
            .json_body(authorization(ORDER_BROKE, 4998, CARD_BROKE));
        i.response.status(402).json_body(json_pattern!({
            "type": term!("^urn:bitvelocity:problem:[a-z-]+$", "urn:bitvelocity:problem:insufficient-funds"),
            "detail": like!("declined"),
        }));
        i
    })
    .interaction("the capture of an authorized payment", "", |mut i| {
        i.given(ST_AUTHORIZED);
        i.request
            .post()
            .path(format!("/api/payments/{ORDER_CAPTURE}/capture"));
        i.response.ok();
        i
    })
    .interaction("the refund of a captured payment", "", |mut i| {
        i.given(ST_CAPTURED);
        i.request
            .post()
            .path(format!("/api/payments/{ORDER_REFUND}/refund"));
        i.response.ok();
        i
    })
    .interaction("the refund of a declined payment", "", |mut i| {
        i.given(ST_DECLINED);
        i.request
            .post()
            .path(format!("/api/payments/{ORDER_DECLINED}/refund"));
        i.response.status(409);
        i
    });
    pact
}

#[tokio::test]
async fn order_expectations_of_payment_are_the_committed_pact() {
    consumer_contract(
        &mut order_payment(),
        "order",
        "payment",
        |addr| async move {
            let path = "/api/payments/authorize";
            let r = post(addr, path, Some(&authorization(ORDER_PAID, 4998, CARD_OK))).await;
            assert!(matches!(r.status, 200 | 201), "authorized: {}", r.status);
            // 402: a decline, its kind the failure's reason.
            let r = post(
                addr,
                path,
                Some(&authorization(ORDER_BROKE, 4998, CARD_BROKE)),
            )
            .await;
            assert_eq!(r.status, 402);
            assert_eq!(
                kind(&answer(&r)),
                Some("insufficient-funds"),
                "{}",
                r.text()
            );
            assert!(answer(&r)["detail"].is_string(), "{}", r.text());
            let r = post(
                addr,
                &format!("/api/payments/{ORDER_CAPTURE}/capture"),
                None,
            )
            .await;
            assert_eq!(r.status, 200);
            let r = post(addr, &format!("/api/payments/{ORDER_REFUND}/refund"), None).await;
            assert_eq!(r.status, 200);
            // 409: declined, nothing to give back.
            let r = post(
                addr,
                &format!("/api/payments/{ORDER_DECLINED}/refund"),
                None,
            )
            .await;
            assert_eq!(r.status, 409);
        },
    )
    .await;
}

// ---------------------------------------------------------------------
// The providers under bv

/// A provider component running under `bv` on a database of its own.
struct Provider {
    name: &'static str,
    app: TestApp,
    db: TestDb,
}

impl Provider {
    /// `component` alone from `spin.toml`; `events`: whether the database
    /// needs the `bv_events` schema first (as `bv events init` makes it).
    async fn start(component: &'static str, events: bool) -> Self {
        let db = TestDb::new(&format!("contract_{component}")).await;
        if events {
            events_init(&db).await;
        }
        let manifest = RepoManifest::load()
            .only(&format!("contract-{component}"), &[component])
            .without_rate_limits()
            .render();
        let app = spawn_app_with(
            &manifest,
            Spawn {
                env: [("SPIN_VARIABLE_DB_URL".into(), db.url())]
                    .into_iter()
                    .chain(auth_support::env())
                    .collect(),
                ..Default::default()
            },
        )
        .await;
        Self {
            name: component,
            app,
            db,
        }
    }

    /// Waits until `path` answers `status` (as an administrator): the
    /// component has migrated its schema.
    async fn ready(&self, path: &str, status: u16) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let r = request(self.app.addr, "GET", path, &[admin()], "").await;
            if r.status == status {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} never answered {status} to {path} (last {} {})\nbv log:\n{}",
                self.name,
                r.status,
                r.text(),
                self.app.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Verifies the pact at `pact` against this provider.
    async fn verify(&self, pact: &Path) -> VerificationExecutionResult {
        let info = ProviderInfo {
            name: self.name.to_string(),
            host: "127.0.0.1".to_string(),
            transports: vec![ProviderTransport {
                transport: "http".to_string(),
                port: Some(self.app.addr.port()),
                path: None,
                scheme: Some("http".to_string()),
            }],
            ..Default::default()
        };
        let (name, value) = admin();
        let options = VerificationOptions::<NullRequestFilterExecutor> {
            request_timeout: 30_000,
            custom_headers: HashMap::from([(name.to_string(), value.to_string())]),
            coloured_output: false,
            ..Default::default()
        };
        let states = Arc::new(States {
            provider: self.name,
            addr: self.app.addr,
            db: self.db.name.clone(),
        });
        pact_verifier::verify_provider_async(
            info,
            vec![PactSource::File(pact.display().to_string())],
            FilterInfo::None,
            vec![],
            &options,
            None,
            &states,
            None,
        )
        .await
        .expect("the verification ran")
    }

    /// Verifies `pact` and fails listing every mismatch.
    async fn honours(&self, pact: &Path) {
        let result = self.verify(pact).await;
        assert!(
            result.result && result.errors.is_empty(),
            "{} breaks {}:\n{}\n{}\nbv log:\n{}",
            self.name,
            pact.display(),
            mismatches(&result),
            result.output.join("\n"),
            self.app.log()
        );
        assert_eq!(
            result.interaction_results.len(),
            interactions(pact),
            "every interaction was verified"
        );
    }
}

/// The number of interactions in the pact at `path`.
fn interactions(path: &Path) -> usize {
    let pact: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    pact["interactions"].as_array().map_or(0, Vec::len)
}

/// The mismatches of a verification, one interaction a line.
fn mismatches(result: &VerificationExecutionResult) -> String {
    result
        .errors
        .iter()
        .map(|(interaction, mismatch)| format!("- {interaction}: {mismatch:?}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Sets up the provider states the pacts name, on one provider.
#[derive(Debug)]
struct States {
    provider: &'static str,
    addr: SocketAddr,
    db: String,
}

impl States {
    async fn sql(&self, sql: &str, params: &[&str]) -> u64 {
        let client = connect(&format!(
            "host=127.0.0.1 port=5432 user=postgres dbname={} sslmode=disable",
            self.db
        ))
        .await;
        let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = params
            .iter()
            .map(|p| p as &(dyn tokio_postgres::types::ToSql + Sync))
            .collect();
        client
            .execute(sql, &params)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// A POST as an administrator; its status and body.
    async fn admin_post(&self, path: &str, body: Option<&Value>) -> (u16, String) {
        let r = match body {
            Some(body) => {
                request(
                    self.addr,
                    "POST",
                    path,
                    &[("content-type", "application/json"), admin()],
                    body.to_string(),
                )
                .await
            }
            None => request(self.addr, "POST", path, &[admin()], "").await,
        };
        (r.status, r.text())
    }

    /// `product` has `on_hand` units, none reserved.
    async fn stock(&self, product: &str, on_hand: i64) {
        let on_hand = on_hand.to_string();
        self.sql(
            "INSERT INTO inventory.stock (product_id, sku, on_hand, reserved)
             VALUES ($1, 'SKU-' || $1, $2::text::bigint, 0)
             ON CONFLICT (product_id) DO UPDATE SET on_hand = EXCLUDED.on_hand, reserved = 0",
            &[product, &on_hand],
        )
        .await;
    }

    /// Reservation `order` holds one unit of `product`.
    async fn held(&self, order: &str, product: &str) -> anyhow::Result<()> {
        self.stock(product, 10).await;
        let (status, body) = self
            .admin_post(
                "/api/inventory/reservations",
                Some(&reservation(order, product, 1)),
            )
            .await;
        anyhow::ensure!(status == 201, "reserving {order}: {status} {body}");
        Ok(())
    }

    /// The payment of `order` authorized with `card`; the answer's status.
    async fn authorized(&self, order: &str, card: &str) -> u16 {
        self.admin_post(
            "/api/payments/authorize",
            Some(&authorization(order, 2500, card)),
        )
        .await
        .0
    }

    /// No payment of `order` exists.
    async fn no_payment(&self, order: &str) -> anyhow::Result<()> {
        let r = request(
            self.addr,
            "GET",
            &format!("/api/payments/{order}"),
            &[admin()],
            "",
        )
        .await;
        anyhow::ensure!(
            r.status == 404,
            "payment {order}: {} {}",
            r.status,
            r.text()
        );
        Ok(())
    }

    async fn set_up(&self, state: &str) -> anyhow::Result<()> {
        match (self.provider, state) {
            ("product", ST_MUG_RED) => {
                let n = self
                    .sql(
                        "UPDATE product.products
                         SET sku = 'MUG-RED-350', name = 'Red stoneware mug',
                             price_amount = 1299, currency = 'USD', deleted_at = NULL
                         WHERE id = $1::text::uuid",
                        &[MUG_RED],
                    )
                    .await;
                anyhow::ensure!(n == 1, "no product {MUG_RED}");
            }
            ("product", ST_NO_PRODUCT) => {
                self.sql(
                    "DELETE FROM product.products WHERE id = $1::text::uuid",
                    &[NO_PRODUCT],
                )
                .await;
            }
            ("inventory", ST_STOCK_10) => self.stock(MUG_RED, 10).await,
            ("inventory", ST_STOCK_1) => self.stock(MUG_BLUE, 1).await,
            ("inventory", ST_NO_STOCK) => {
                self.sql(
                    "DELETE FROM inventory.stock WHERE product_id = $1",
                    &[NO_PRODUCT],
                )
                .await;
            }
            ("inventory", ST_HELD_RELEASE) => self.held(ORDER_RELEASE, MUG_TRAVEL).await?,
            ("inventory", ST_HELD_COMMIT) => self.held(ORDER_COMMIT, MUG_ESPRESSO).await?,
            ("inventory", ST_NO_RESERVATION) => {
                let n = self
                    .sql(
                        "DELETE FROM inventory.reservations WHERE reservation_id = $1",
                        &[ORDER_NONE],
                    )
                    .await;
                anyhow::ensure!(n == 0, "reservation {ORDER_NONE} existed");
            }
            ("payment", ST_NO_PAYMENT_PAID) => self.no_payment(ORDER_PAID).await?,
            ("payment", ST_NO_PAYMENT_BROKE) => self.no_payment(ORDER_BROKE).await?,
            ("payment", ST_AUTHORIZED) => {
                let status = self.authorized(ORDER_CAPTURE, CARD_OK).await;
                anyhow::ensure!(status == 201, "authorizing {ORDER_CAPTURE}: {status}");
            }
            ("payment", ST_CAPTURED) => {
                let status = self.authorized(ORDER_REFUND, CARD_OK).await;
                anyhow::ensure!(status == 201, "authorizing {ORDER_REFUND}: {status}");
                let (status, body) = self
                    .admin_post(&format!("/api/payments/{ORDER_REFUND}/capture"), None)
                    .await;
                anyhow::ensure!(status == 200, "capturing {ORDER_REFUND}: {status} {body}");
            }
            ("payment", ST_DECLINED) => {
                let status = self.authorized(ORDER_DECLINED, CARD_BROKE).await;
                anyhow::ensure!(status == 402, "declining {ORDER_DECLINED}: {status}");
            }
            (provider, state) => anyhow::bail!("{provider}: unknown provider state `{state}`"),
        }
        Ok(())
    }
}

#[async_trait]
impl ProviderStateExecutor for States {
    async fn call(
        self: Arc<Self>,
        _interaction_id: Option<String>,
        provider_state: &ProviderState,
        setup: bool,
        _client: Option<&reqwest::Client>,
    ) -> anyhow::Result<HashMap<String, Value>> {
        if setup {
            self.set_up(&provider_state.name).await?;
        }
        Ok(HashMap::new())
    }

    fn teardown(&self) -> bool {
        false
    }
}

#[tokio::test]
async fn product_honours_the_cart_pact() {
    let product = Provider::start("product", false).await;
    product
        .ready(&format!("/api/products/{MUG_RED}"), 200)
        .await;
    let pact = committed("cart", "product");
    product.honours(&pact).await;

    // A consumer needing what the provider does not give fails the
    // verification, naming the field: here the price under another name.
    let text = std::fs::read_to_string(&pact).unwrap();
    let mut altered: Value = serde_json::from_str(&text).unwrap();
    let found = altered["interactions"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|i| i["response"]["status"] == 200)
        .expect("the lookup interaction");
    let body = found["response"]["body"].as_object_mut().unwrap();
    let price = body.remove("price").expect("the pact reads the price");
    body.insert("unitPrice".into(), price);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cart-product.json");
    std::fs::write(&path, altered.to_string()).unwrap();
    let result = product.verify(&path).await;
    assert!(
        !result.result,
        "the altered pact passed:\n{}",
        result.output.join("\n")
    );
    let listed = mismatches(&result);
    assert_eq!(result.errors.len(), 1, "{listed}");
    assert!(
        result.errors[0].0.ends_with(" - a lookup of a product"),
        "{listed}"
    );
    assert!(listed.contains("unitPrice"), "{listed}");
}

#[tokio::test]
async fn inventory_honours_the_order_pact() {
    let inventory = Provider::start("inventory", true).await;
    inventory
        .ready(&format!("/api/inventory/{NO_PRODUCT}"), 404)
        .await;
    inventory.honours(&committed("order", "inventory")).await;
}

#[tokio::test]
async fn payment_honours_the_order_pact() {
    let payment = Provider::start("payment", true).await;
    payment
        .ready(&format!("/api/payments/{ORDER_NONE}"), 404)
        .await;
    payment.honours(&committed("order", "payment")).await;
}
