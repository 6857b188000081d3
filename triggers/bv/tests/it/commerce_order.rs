//! The order service end to end: `order` runs the checkout saga against
//! the real `product`, `inventory` (+ `inventory-projector`), `cart` and
//! `payment` components over service chaining; `order-sweeper` cancels
//! stalled sagas. Real PostgreSQL (a database per test) and Redis (a key
//! prefix per test); checked through HTTP and the tables.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::auth_support::{self, admin};
use crate::harness::*;
use crate::pg_support::*;
use crate::redis::redis_shared_lock;
use crate::repo_manifest::{RepoManifest, CHECKOUT};

const JSON: (&str, &str) = ("content-type", "application/json");

/// Every commerce component the checkout touches, as `spin.toml` has them;
/// the cart's and the breakers' Redis keys under `prefix`.
fn manifest(prefix: &str, latency_ms: u32, saga_timeout: u32, more: &[&str]) -> String {
    shop_manifest(prefix, latency_ms, saga_timeout, more).render()
}

fn shop_manifest(prefix: &str, latency_ms: u32, saga_timeout: u32, more: &[&str]) -> RepoManifest {
    RepoManifest::load()
        .only("commerce-order", &[&CHECKOUT[..], more].concat())
        .without_rate_limits()
        .trigger_setting("postgres", "poll_interval_ms", 100)
        .trigger_field("postgres", "order-sweeper", "retry_initial_ms", 100)
        .trigger_field("postgres", "order-sweeper", "retry_max_ms", 400)
        .trigger_field("cron", "order-sweeper", "cron_expression", "*/1 * * * * *")
        .component_variable("cart", "cart_ttl_seconds", "3600")
        .component_variable("cart", "cart_key_prefix", prefix)
        .component_variable("order", "breaker_key_prefix", prefix)
        .variable("payment_latency_ms", &latency_ms.to_string())
        .environment(
            "order-sweeper",
            "SAGA_TIMEOUT_SECONDS",
            &saga_timeout.to_string(),
        )
}

pub(crate) struct Shop {
    pub(crate) app: TestApp,
    pub(crate) db: TestDb,
    prefix: String,
    _lock: std::fs::File,
}

impl Shop {
    pub(crate) async fn start(tag: &str) -> Self {
        Self::start_with(tag, 0, 30).await
    }

    async fn start_with(tag: &str, latency_ms: u32, saga_timeout: u32) -> Self {
        Self::start_with_more(tag, latency_ms, saga_timeout, &[]).await
    }

    /// The shop with the components `more` besides the checkout's.
    pub(crate) async fn start_with_more(
        tag: &str,
        latency_ms: u32,
        saga_timeout: u32,
        more: &[&str],
    ) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let lock = redis_shared_lock();
        let prefix = format!(
            "bv-it-order-{tag}-{}-{}:",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let db = TestDb::new(&format!("order_{tag}")).await;
        let app = Self::spawn(&db, &prefix, latency_ms, saga_timeout, more).await;
        Self {
            app,
            db,
            prefix,
            _lock: lock,
        }
    }

    /// The checkout's components and `more`, with `edit` applied to the
    /// manifest.
    pub(crate) async fn start_edited(
        tag: &str,
        more: &[&str],
        edit: impl FnOnce(RepoManifest) -> RepoManifest,
    ) -> Self {
        Self::start_edited_with_env(tag, more, edit, Vec::new()).await
    }

    /// [`Shop::start_edited`] with `bv` given `env` too.
    pub(crate) async fn start_edited_with_env(
        tag: &str,
        more: &[&str],
        edit: impl FnOnce(RepoManifest) -> RepoManifest,
        env: Vec<(String, String)>,
    ) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let lock = redis_shared_lock();
        let prefix = format!(
            "bv-it-order-{tag}-{}-e{}:",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let db = TestDb::new(&format!("order_{tag}")).await;
        let manifest = edit(shop_manifest(&prefix, 0, 30, more)).render();
        let app = Self::spawn_manifest_with_env(&db, &manifest, env).await;
        Self {
            app,
            db,
            prefix,
            _lock: lock,
        }
    }

    async fn spawn(
        db: &TestDb,
        prefix: &str,
        latency_ms: u32,
        saga_timeout: u32,
        more: &[&str],
    ) -> TestApp {
        Self::spawn_manifest(db, &manifest(prefix, latency_ms, saga_timeout, more)).await
    }

    async fn spawn_manifest(db: &TestDb, manifest: &str) -> TestApp {
        Self::spawn_manifest_with_env(db, manifest, Vec::new()).await
    }

    async fn spawn_manifest_with_env(
        db: &TestDb,
        manifest: &str,
        env: Vec<(String, String)>,
    ) -> TestApp {
        spawn_app_with(
            manifest,
            Spawn {
                env: [("SPIN_VARIABLE_DB_URL".into(), db.url())]
                    .into_iter()
                    .chain(auth_support::env())
                    .chain(env)
                    .collect(),
                ..Default::default()
            },
        )
        .await
    }

    pub(crate) async fn call(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Reply {
        request(self.app.addr, method, path, headers, body.to_string()).await
    }

    /// A product priced `price` cents with `on_hand` units in stock: its id.
    pub(crate) async fn product(&self, sku: &str, price: i64, on_hand: i64) -> String {
        let body = json!({
            "sku": sku, "name": format!("Product {sku}"), "category": "mugs",
            "price": { "amount": price, "currency": "EUR" }
        });
        let r = self
            .call("POST", "/api/products", &[admin(), JSON], &body.to_string())
            .await;
        assert_eq!(r.status, 201, "{}", r.text());
        let id = r.json()["id"].as_str().unwrap().to_string();
        // The projector opens the stock record from product.created.
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.app.get(&format!("/api/inventory/{id}")).await.status != 200 {
            assert!(
                Instant::now() < deadline,
                "no stock record\n{}",
                self.app.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if on_hand > 0 {
            let r = self
                .call(
                    "POST",
                    &format!("/api/inventory/{id}/restock"),
                    &[admin(), JSON],
                    &json!({ "quantity": on_hand }).to_string(),
                )
                .await;
            assert_eq!(r.status, 200, "{}", r.text());
        }
        id
    }

    pub(crate) async fn stock(&self, id: &str) -> Value {
        let r = self.app.get(&format!("/api/inventory/{id}")).await;
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()
    }

    pub(crate) async fn add_to_cart(&self, customer: &str, product: &str, quantity: i64) {
        let r = self
            .call(
                "POST",
                "/api/carts/me/items",
                &[auth_support::customer(customer), JSON],
                &json!({ "productId": product, "quantity": quantity }).to_string(),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
    }

    pub(crate) async fn checkout(&self, customer: &str, key: &str, token: &str) -> Reply {
        self.call(
            "POST",
            "/api/orders",
            &[
                auth_support::customer(customer),
                ("idempotency-key", key),
                JSON,
            ],
            &json!({ "card": { "token": token } }).to_string(),
        )
        .await
    }

    pub(crate) async fn order(&self, customer: &str, id: &str) -> Reply {
        self.call(
            "GET",
            &format!("/api/orders/{id}"),
            &[auth_support::customer(customer)],
            "",
        )
        .await
    }

    async fn count(&self, sql: &str) -> i64 {
        self.db
            .client()
            .await
            .query_one(sql, &[])
            .await
            .unwrap()
            .get(0)
    }

    /// Like [`Shop::count`], 0 while the tables do not exist yet.
    async fn try_count(&self, sql: &str) -> i64 {
        let client = self.db.client().await;
        client.query_one(sql, &[]).await.map_or(0, |r| r.get(0))
    }
}

#[track_caller]
pub(crate) fn assert_problem(r: &Reply, status: u16, kind: &str) {
    assert_eq!(r.status, status, "{}", r.text());
    assert_eq!(
        r.json()["type"],
        format!("urn:bitvelocity:problem:{kind}"),
        "{}",
        r.text()
    );
}

#[tokio::test]
async fn checkout_pays_and_fulfilment_commits_the_stock() {
    let shop = Shop::start("happy").await;
    let mug = shop.product("MUG", 1299, 5).await;
    let tea = shop.product("TEA", 450, 5).await;
    shop.add_to_cart("alice", &mug, 2).await;
    shop.add_to_cart("alice", &tea, 1).await;

    let r = shop.checkout("alice", "k-1", "tok_visa").await;
    assert_eq!(r.status, 201, "{}\n{}", r.text(), shop.app.log());
    let order = r.json();
    assert_eq!(order["status"], "PAID");
    assert_eq!(
        order["total"],
        json!({ "amount": 2 * 1299 + 450, "currency": "EUR" })
    );
    assert_eq!(order["items"].as_array().unwrap().len(), 2);
    let id = order["orderId"].as_str().unwrap().to_string();
    assert_eq!(r.headers["location"], format!("/api/orders/{id}"));
    assert_eq!(shop.stock(&mug).await["reserved"], 2);
    assert_eq!(shop.stock(&mug).await["available"], 3);
    // The cart was emptied.
    let cart = shop
        .call(
            "GET",
            "/api/carts/me",
            &[auth_support::customer("alice")],
            "",
        )
        .await;
    assert_eq!(cart.json()["items"], json!([]), "{}", cart.text());
    // The payment was captured.
    let pay = shop
        .call("GET", &format!("/api/payments/{id}"), &[admin()], "")
        .await;
    assert_eq!(pay.json()["status"], "CAPTURED", "{}", pay.text());

    // Visible to its customer only.
    assert_eq!(shop.order("alice", &id).await.json()["status"], "PAID");
    assert_problem(&shop.order("bob", &id).await, 404, "not-found");
    let list = shop
        .call("GET", "/api/orders", &[auth_support::customer("alice")], "")
        .await;
    assert_eq!(list.json()["orders"][0]["orderId"], id.as_str());

    // Fulfil: admin only, commits the stock.
    let path = format!("/api/orders/{id}/fulfil");
    assert_problem(
        &shop.call("POST", &path, &[], "").await,
        401,
        "unauthenticated",
    );
    assert_problem(
        &shop
            .call("POST", &path, &[auth_support::customer("alice")], "")
            .await,
        403,
        "forbidden",
    );
    let r = shop.call("POST", &path, &[admin()], "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["status"], "FULFILLED");
    let stock = shop.stock(&mug).await;
    assert_eq!(
        (stock["onHand"].as_i64(), stock["reserved"].as_i64()),
        (Some(3), Some(0))
    );

    // Illegal moves.
    assert_problem(
        &shop.call("POST", &path, &[admin()], "").await,
        409,
        "illegal-transition",
    );
    let cancel = format!("/api/orders/{id}/cancel");
    let r = shop
        .call("POST", &cancel, &[auth_support::customer("alice")], "")
        .await;
    assert_problem(&r, 409, "illegal-transition");

    // The saga log and the events.
    let steps = shop
        .count(&format!(
            "SELECT count(*) FROM orders.saga_log WHERE order_id = '{id}'"
        ))
        .await;
    assert!(steps >= 8, "{steps} saga log rows");
    let events = shop
        .count(&format!(
            "SELECT count(*) FROM bv_events.outbox WHERE subject = '{id}' AND type IN (
                'com.bitvelocity.order.placed.v1', 'com.bitvelocity.order.confirmed.v1',
                'com.bitvelocity.order.paid.v1', 'com.bitvelocity.order.fulfilled.v1')"
        ))
        .await;
    assert_eq!(events, 4);
}

#[tokio::test]
async fn a_declined_card_fails_the_order_and_releases_the_stock() {
    let shop = Shop::start("decline").await;
    let mug = shop.product("MUG", 1299, 3).await;
    shop.add_to_cart("carol", &mug, 2).await;
    let r = shop.checkout("carol", "k-1", "tok_decline").await;
    assert_problem(&r, 402, "card-declined");
    let id = r.json()["orderId"].as_str().unwrap().to_string();
    let order = shop.order("carol", &id).await.json();
    assert_eq!(
        (order["status"].as_str(), order["reason"].as_str()),
        (Some("FAILED"), Some("card-declined"))
    );
    let stock = shop.stock(&mug).await;
    assert_eq!(
        (stock["available"].as_i64(), stock["reserved"].as_i64()),
        (Some(3), Some(0))
    );
    assert_eq!(
        shop.count(
            "SELECT count(*) FROM bv_events.outbox WHERE type = 'com.bitvelocity.order.failed.v1'"
        )
        .await,
        1
    );
    // Cancelling a failed order is illegal.
    let r = shop
        .call(
            "POST",
            &format!("/api/orders/{id}/cancel"),
            &[auth_support::customer("carol")],
            "",
        )
        .await;
    assert_problem(&r, 409, "illegal-transition");

    // A paid order can be cancelled: stock back, payment refunded.
    let r = shop.checkout("carol", "k-2", "tok_visa").await;
    assert_eq!(r.status, 201, "{}", r.text());
    let id = r.json()["orderId"].as_str().unwrap().to_string();
    let r = shop
        .call(
            "POST",
            &format!("/api/orders/{id}/cancel"),
            &[auth_support::customer("carol")],
            "",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["status"], "CANCELLED");
    assert_eq!(shop.stock(&mug).await["available"], 3);
    let pay = shop
        .call("GET", &format!("/api/payments/{id}"), &[admin()], "")
        .await;
    assert_eq!(pay.json()["status"], "REFUNDED", "{}", pay.text());
}

#[tokio::test]
async fn fifty_concurrent_checkouts_for_ten_units() {
    let shop = Shop::start("rush").await;
    let mug = shop.product("MUG", 500, 10).await;
    for i in 0..50 {
        shop.add_to_cart(&format!("c{i}"), &mug, 1).await;
    }
    let shop = std::sync::Arc::new(shop);
    let mut tasks = Vec::new();
    for i in 0..50 {
        let shop = shop.clone();
        tasks.push(tokio::spawn(async move {
            shop.checkout(&format!("c{i}"), "k", "tok_visa").await
        }));
    }
    let (mut paid, mut short) = (0, 0);
    for t in tasks {
        let r = t.await.unwrap();
        match r.status {
            201 => {
                assert_eq!(r.json()["status"], "PAID");
                paid += 1;
            }
            409 => {
                assert_problem(&r, 409, "insufficient-stock");
                short += 1;
            }
            s => panic!("unexpected {s}: {}\n{}", r.text(), shop.app.log()),
        }
    }
    assert_eq!((paid, short), (10, 40));
    let stock = shop.stock(&mug).await;
    assert_eq!(
        (stock["available"].as_i64(), stock["reserved"].as_i64()),
        (Some(0), Some(10))
    );
    assert_eq!(
        shop.count("SELECT count(*) FROM orders.orders WHERE status = 'PAID'")
            .await,
        10
    );
    assert_eq!(
        shop.count("SELECT count(*) FROM orders.orders WHERE status = 'FAILED' AND reason = 'insufficient-stock'")
            .await,
        40
    );
    assert_eq!(
        shop.count("SELECT count(*) FROM orders.sagas WHERE state <> 'finished'")
            .await,
        0
    );
}

#[tokio::test]
async fn replays_answer_the_first_answer() {
    let shop = Shop::start("replay").await;
    let mug = shop.product("MUG", 1299, 5).await;
    shop.add_to_cart("dave", &mug, 1).await;
    let first = shop.checkout("dave", "key-A", "tok_visa").await;
    assert_eq!(first.status, 201, "{}", first.text());
    let again = shop.checkout("dave", "key-A", "tok_visa").await;
    assert_eq!(again.status, 201);
    assert_eq!(again.json(), first.json());
    assert_eq!(again.headers["idempotent-replayed"], "true");
    assert_eq!(again.headers["location"], first.headers["location"]);
    assert_problem(
        &shop.checkout("dave", "key-A", "tok_other").await,
        422,
        "idempotency-mismatch",
    );
    assert_eq!(shop.count("SELECT count(*) FROM orders.orders").await, 1);
    assert_eq!(shop.stock(&mug).await["reserved"], 1);

    // A failed checkout replays its problem too.
    shop.add_to_cart("dave", &mug, 1).await;
    let failed = shop
        .checkout("dave", "key-B", "tok_insufficient_funds")
        .await;
    assert_problem(&failed, 402, "insufficient-funds");
    let again = shop
        .checkout("dave", "key-B", "tok_insufficient_funds")
        .await;
    assert_eq!((again.status, again.json()), (402, failed.json()));
    assert_eq!(shop.count("SELECT count(*) FROM orders.orders").await, 2);
}

#[tokio::test]
async fn a_crashed_checkout_is_cancelled_by_the_sweeper() {
    let mut shop = Shop::start_with("crash", 20_000, 30).await;
    let mug = shop.product("MUG", 1299, 4).await;
    shop.add_to_cart("erin", &mug, 3).await;
    let addr = shop.app.addr;
    let pending = tokio::spawn(async move {
        request(
            addr,
            "POST",
            "/api/orders",
            &[
                auth_support::customer("erin"),
                ("idempotency-key", "k"),
                JSON,
            ],
            json!({ "card": { "token": "tok_visa" } }).to_string(),
        )
        .await
    });
    // Wait until the saga is authorizing (the payment holds it there).
    let deadline = Instant::now() + Duration::from_secs(20);
    while shop
        .try_count("SELECT count(*) FROM orders.saga_log WHERE step = 'authorize-payment' AND phase = 'started'")
        .await
        == 0
    {
        assert!(Instant::now() < deadline, "{}", shop.app.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    shop.app.kill();
    let _ = pending.await;
    assert_eq!(shop.stock_direct(&mug).await, 3, "reserved while crashed");

    shop.app = Shop::spawn(&shop.db, &shop.prefix, 0, 1, &[]).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status: String = shop
            .db
            .client()
            .await
            .query_one("SELECT status FROM orders.orders", &[])
            .await
            .unwrap()
            .get(0);
        if status == "CANCELLED" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still {status}\n{}",
            shop.app.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stock = shop.stock(&mug).await;
    assert_eq!(
        (stock["available"].as_i64(), stock["reserved"].as_i64()),
        (Some(4), Some(0))
    );
    assert_eq!(
        shop.count("SELECT count(*) FROM orders.orders WHERE reason = 'saga-timeout'")
            .await,
        1
    );
    assert_eq!(
        shop.count("SELECT count(*) FROM orders.sagas WHERE state = 'finished'")
            .await,
        1
    );
    // The payment (authorized before the crash, or not at all) holds nothing.
    let status: String = shop
        .db
        .client()
        .await
        .query_one(
            "SELECT coalesce((SELECT status FROM payments WHERE payment_id = (SELECT order_id FROM orders.orders)), 'NONE')",
            &[],
        )
        .await
        .map(|r| r.get(0))
        .unwrap_or_else(|_| "UNKNOWN".into());
    assert!(
        matches!(status.as_str(), "REFUNDED" | "NONE" | "UNKNOWN"),
        "{status}"
    );
}

impl Shop {
    /// Reserved units of `id`, read from the database (bv may be down).
    async fn stock_direct(&self, id: &str) -> i64 {
        self.db
            .client()
            .await
            .query_one(
                "SELECT reserved::bigint FROM inventory.stock WHERE product_id = $1",
                &[&id],
            )
            .await
            .unwrap()
            .get(0)
    }
}

/// Request headers of a case.
type Headers<'a> = Vec<(&'a str, &'a str)>;

#[tokio::test]
async fn bad_input_is_refused_and_changes_nothing() {
    let shop = Shop::start("bad").await;
    let mug = shop.product("MUG", 1299, 5).await;
    let customer = auth_support::customer("frank");
    let key = ("idempotency-key", "k");
    let good = json!({ "card": { "token": "tok_visa" } }).to_string();
    // Empty cart.
    assert_problem(
        &shop.checkout("frank", "k0", "tok_visa").await,
        409,
        "empty-cart",
    );
    shop.add_to_cart("frank", &mug, 1).await;
    let cases: Vec<(Headers, String, u16, &str)> = vec![
        (vec![key, JSON], good.clone(), 401, "unauthenticated"),
        (
            vec![customer, JSON],
            good.clone(),
            428,
            "idempotency-key-required",
        ),
        (vec![customer, key, JSON], "{".into(), 400, "malformed-json"),
        (
            vec![customer, key],
            good.clone(),
            415,
            "unsupported-media-type",
        ),
        (
            vec![customer, key, JSON],
            json!({ "card": { "token": 5 } }).to_string(),
            422,
            "invalid-field",
        ),
        (
            vec![customer, key, JSON],
            json!({ "card": { "token": "4242424242424242" } }).to_string(),
            422,
            "invalid-field",
        ),
        (
            vec![customer, key, JSON],
            json!({ "card": {} }).to_string(),
            422,
            "invalid-field",
        ),
        (
            vec![customer, key, JSON],
            json!({ "card": { "token": "tok_visa" }, "extra": 1 }).to_string(),
            422,
            "invalid-field",
        ),
        (
            vec![customer, key, JSON],
            format!("{{\"card\":{{\"token\":\"tok_{}\"}}}}", "x".repeat(100_000)),
            413,
            "body-too-large",
        ),
    ];
    for (headers, body, status, kind) in cases {
        let r = shop.call("POST", "/api/orders", &headers, &body).await;
        assert_problem(&r, status, kind);
    }
    let r = shop
        .call(
            "POST",
            "/api/orders",
            &[customer, key, JSON],
            &json!({ "card": { "token": 5 } }).to_string(),
        )
        .await;
    assert_eq!(r.json()["field"], "card.token");
    assert_problem(
        &shop.order("frank", "no-such-order").await,
        404,
        "not-found",
    );
    let r = shop
        .call("POST", "/api/orders/no-such-order/cancel", &[customer], "")
        .await;
    assert_problem(&r, 404, "not-found");
    assert_problem(
        &shop.call("GET", "/api/orders", &[], "").await,
        401,
        "unauthenticated",
    );
    // `Idempotency-Key` is visible ASCII only: a space is not.
    for bad in ["two words", "tab\tbed"] {
        let r = shop
            .call(
                "POST",
                "/api/orders",
                &[customer, ("idempotency-key", bad), JSON],
                &good,
            )
            .await;
        assert_problem(&r, 422, "invalid-field");
        assert_eq!(r.json()["field"], "Idempotency-Key", "{bad:?}");
    }
    assert_eq!(shop.count("SELECT count(*) FROM orders.orders").await, 0);
    assert_eq!(shop.stock(&mug).await["reserved"], 0);
}

impl Shop {
    /// Changes `id`'s price through the catalogue's admin API.
    async fn reprice(&self, id: &str, amount: i64) {
        let r = self.app.get(&format!("/api/products/{id}")).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let etag = r.headers["etag"].to_str().unwrap().to_string();
        let product = r.json();
        let body = json!({
            "sku": product["sku"], "name": product["name"], "category": product["category"],
            "price": { "amount": amount, "currency": product["price"]["currency"].clone() },
        });
        let r = self
            .call(
                "PUT",
                &format!("/api/products/{id}"),
                &[admin(), JSON, ("if-match", etag.as_str())],
                &body.to_string(),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
    }

    /// Withdraws `id` from the catalogue.
    async fn withdraw(&self, id: &str) {
        let r = self
            .call("DELETE", &format!("/api/products/{id}"), &[admin()], "")
            .await;
        assert_eq!(r.status, 204, "{}", r.text());
        assert_eq!(
            self.app.get(&format!("/api/products/{id}")).await.status,
            404
        );
    }

    async fn cart(&self, customer: &str) -> Value {
        let r = self
            .call(
                "GET",
                "/api/carts/me",
                &[auth_support::customer(customer)],
                "",
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()
    }
}

#[tokio::test]
async fn checkout_charges_the_price_the_catalogue_has_now() {
    let shop = Shop::start("reprice").await;
    let mug = shop.product("MUG", 1000, 5).await;
    shop.add_to_cart("grace", &mug, 2).await;
    // The cart has cached the product at 1000 (for 30 s here).
    assert_eq!(shop.cart("grace").await["total"], 2000);
    shop.reprice(&mug, 5000).await;
    // At once: no time for the cart's cache to be refreshed.
    let r = shop.checkout("grace", "reprice-1", "tok_visa").await;
    assert_eq!(r.status, 201, "{}\n{}", r.text(), shop.app.log());
    let order = r.json();
    assert_eq!(order["status"], "PAID");
    assert_eq!(
        order["total"],
        json!({ "amount": 10000, "currency": "EUR" }),
        "{order}"
    );
    assert_eq!(
        order["items"][0]["unitPrice"],
        json!({ "amount": 5000, "currency": "EUR" })
    );
    let id = order["orderId"].as_str().unwrap();
    let pay = shop
        .call("GET", &format!("/api/payments/{id}"), &[admin()], "")
        .await;
    assert_eq!(
        pay.json()["amount"],
        json!({ "amount": 10000, "currency": "EUR" }),
        "{}",
        pay.text()
    );
}

#[tokio::test]
async fn a_withdrawn_product_is_not_sold() {
    let shop = Shop::start("withdrawn").await;
    let mug = shop.product("MUG", 1000, 5).await;
    let tea = shop.product("TEA", 300, 5).await;
    shop.add_to_cart("heidi", &mug, 1).await;
    shop.add_to_cart("heidi", &tea, 1).await;
    shop.withdraw(&mug).await;
    let r = shop.checkout("heidi", "withdrawn-1", "tok_visa").await;
    assert_problem(&r, 409, "unknown-product");
    assert_eq!(r.json()["productId"], mug.as_str(), "{}", r.text());
    // Nothing was ordered, held or charged; the cart is kept.
    assert_eq!(shop.count("SELECT count(*) FROM orders.orders").await, 0);
    assert_eq!(shop.stock(&tea).await["reserved"], 0);
    // Once the line is removed, the rest can be bought.
    let r = shop
        .call(
            "DELETE",
            &format!("/api/carts/me/items/{mug}"),
            &[auth_support::customer("heidi")],
            "",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = shop.checkout("heidi", "withdrawn-2", "tok_visa").await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(
        r.json()["total"],
        json!({ "amount": 300, "currency": "EUR" })
    );
}

#[tokio::test]
async fn a_cart_shows_catalogue_changes_within_a_second() {
    let shop = Shop::start("cart_events").await;
    let mug = shop.product("MUG", 1000, 5).await;
    let tea = shop.product("TEA", 300, 5).await;
    shop.add_to_cart("ivan", &mug, 1).await;
    shop.add_to_cart("ivan", &tea, 1).await;
    assert_eq!(shop.cart("ivan").await["total"], 1300);

    // The product's cached copy is refreshed by product.updated, long
    // before its 30 s freshness runs out.
    shop.reprice(&mug, 5000).await;
    let changed = Instant::now();
    loop {
        let cart = shop.cart("ivan").await;
        if cart["total"] == 5300 {
            break;
        }
        assert!(
            changed.elapsed() < Duration::from_secs(1),
            "the cart still shows the old price after a second: {cart}\n{}",
            shop.app.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // And a withdrawn product leaves the priced lines (product.deleted).
    shop.withdraw(&tea).await;
    let deleted = Instant::now();
    loop {
        let cart = shop.cart("ivan").await;
        if cart["unavailable"] == json!([tea]) {
            assert_eq!(cart["total"], 5000, "{cart}");
            break;
        }
        assert!(
            deleted.elapsed() < Duration::from_secs(1),
            "the cart still sells the withdrawn product after a second: {cart}\n{}",
            shop.app.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_demo_catalogue_can_be_bought_on_a_fresh_database() {
    // Nothing created or restocked here: the catalogue's and the
    // inventory's demo migrations are all there is.
    let shop = Shop::start("demo").await;
    let mugs = shop.app.get("/api/products?category=mugs&limit=2").await;
    assert_eq!(mugs.status, 200, "{}", mugs.text());
    let mug = mugs.json()["items"][0].clone();
    let id = mug["id"].as_str().unwrap().to_string();
    assert_eq!(id, "5eed0000-0000-4000-8000-000000000001", "{mug}");
    let stock = shop.stock(&id).await;
    assert_eq!(
        (stock["onHand"].as_i64(), stock["available"].as_i64()),
        (Some(25), Some(25)),
        "{stock}"
    );

    shop.add_to_cart("grace", &id, 2).await;
    let r = shop.checkout("grace", "k-demo", "tok_visa").await;
    assert_eq!(r.status, 201, "{}\n{}", r.text(), shop.app.log());
    let order = r.json();
    assert_eq!(order["status"], "PAID", "{order}");
    assert_eq!(
        order["total"],
        json!({ "amount": 2 * 1299, "currency": "USD" })
    );

    // The catalogue's product.created reach the projector after the
    // units arrived: every demo product keeps its count.
    let delivered =
        "SELECT coalesce(max(delivered), 0) FROM bv_events.subscriptions WHERE name = 'inventory-projector'";
    let deadline = Instant::now() + Duration::from_secs(30);
    while shop.try_count(delivered).await < 10 {
        assert!(Instant::now() < deadline, "{}", shop.app.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stock = shop.stock(&id).await;
    assert_eq!(
        (
            stock["onHand"].as_i64(),
            stock["reserved"].as_i64(),
            stock["available"].as_i64()
        ),
        (Some(25), Some(2), Some(23)),
        "{stock}"
    );
    assert_eq!(
        shop.count("SELECT count(*) FROM inventory.stock WHERE on_hand = 25")
            .await,
        10
    );
    let r = shop
        .call(
            "POST",
            &format!("/api/orders/{}/fulfil", order["orderId"].as_str().unwrap()),
            &[admin()],
            "",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(shop.stock(&id).await["onHand"], 23);
}

/// The events of a Server-Sent Events answer: `(id, event type)`, in order.
fn sse_events(text: &str) -> Vec<(i64, String)> {
    let mut events = Vec::new();
    let mut id = None;
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("id: ") {
            id = v.trim().parse().ok();
        } else if let Some(ty) = line.strip_prefix("event: ") {
            events.push((
                id.take().expect("an id before each event"),
                ty.trim().to_string(),
            ));
        }
    }
    events
}

fn types(events: &[(i64, String)]) -> Vec<&str> {
    events
        .iter()
        .map(|(_, ty)| ty.trim_start_matches("com.bitvelocity.order."))
        .collect()
}

#[tokio::test]
async fn an_orders_events_stream_live_and_resume_after_the_last_one_seen() {
    use crate::streaming::{open_stream_with, read_until, CLEAN_END};

    let shop = Shop::start("live").await;
    let mug = shop.product("LIVE-MUG", 1299, 5).await;
    shop.add_to_cart("carol", &mug, 1).await;
    let r = shop.checkout("carol", "k-live", "tok_visa").await;
    assert_eq!(r.status, 201, "{}", r.text());
    let id = r.json()["orderId"].as_str().unwrap().to_string();
    let path = format!("/api/orders/{id}/events");
    let carol = auth_support::customer("carol");

    // What happened so far; the stream stays open, a paid order can still
    // change.
    let mut stream = open_stream_with(shop.app.addr, &path, &[carol]).await;
    let (seen, closed) = read_until(&mut stream, "order.paid.v1", Duration::from_secs(10)).await;
    assert!(seen.starts_with("HTTP/1.1 200"), "{seen}");
    assert!(seen.contains("content-type: text/event-stream"), "{seen}");
    let first = sse_events(&seen);
    assert_eq!(
        types(&first),
        ["placed.v1", "confirmed.v1", "paid.v1"],
        "{seen}"
    );
    assert!(
        !closed,
        "the stream closed while the order can still change"
    );
    let data = seen
        .lines()
        .find_map(|l| l.strip_prefix("data: "))
        .expect("a data line");
    let event: Value = serde_json::from_str(data).unwrap();
    assert_eq!(event["subject"], id.as_str(), "{data}");

    // Live: the cancel arrives on the open stream, which then ends cleanly.
    let r = shop
        .call(
            "POST",
            &format!("/api/orders/{id}/cancel"),
            &[auth_support::customer("carol")],
            "",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let (rest, _) = read_until(&mut stream, CLEAN_END, Duration::from_secs(10)).await;
    let live = sse_events(&rest);
    assert_eq!(types(&live), ["cancelled.v1"], "{rest}");
    assert!(live[0].0 > first[2].0);
    assert!(rest.ends_with(CLEAN_END), "{rest}");

    // Resumed after the first event: the rest, each once, then the end.
    let placed = first[0].0.to_string();
    let mut again = open_stream_with(
        shop.app.addr,
        &path,
        &[
            auth_support::customer("carol"),
            ("last-event-id", placed.as_str()),
        ],
    )
    .await;
    let (resumed, _) = read_until(&mut again, CLEAN_END, Duration::from_secs(10)).await;
    assert_eq!(
        sse_events(&resumed),
        [first[1..].to_vec(), live.clone()].concat(),
        "{resumed}"
    );

    // Nobody else's, and a bad position is refused.
    let dave = shop
        .call("GET", &path, &[auth_support::customer("dave")], "")
        .await;
    assert_problem(&dave, 404, "not-found");
    assert_problem(
        &shop.call("GET", &path, &[], "").await,
        401,
        "unauthenticated",
    );
    let bad = shop
        .call(
            "GET",
            &path,
            &[auth_support::customer("carol"), ("last-event-id", "soon")],
            "",
        )
        .await;
    assert_eq!(bad.status, 422, "{}", bad.text());
    assert!(bad.text().contains("Last-Event-ID"), "{}", bad.text());
    let admin_view = shop
        .call(
            "GET",
            &format!("{path}?lastEventId={}", live[0].0),
            &[admin()],
            "",
        )
        .await;
    assert_eq!(admin_view.status, 200, "{}", admin_view.text());
    assert!(
        sse_events(&admin_view.text()).is_empty(),
        "{}",
        admin_view.text()
    );
}
