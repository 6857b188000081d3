//! Running the same manifest as Spin: chained requests get the headers
//! Spin gives them, the commerce components' chained calls reach the same
//! handlers as the same requests from the network, and `bv up` says which
//! triggers will not run under Spin.

use serde_json::{json, Value};

use crate::auth_support::{self, admin};
use crate::harness::*;
use crate::pg_support::*;
use crate::repo_manifest::{is_grpc_route, RepoManifest};

/// `s` percent-encoded for a query parameter.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

const CHAINING: &str = r#"spin_manifest_version = 2
[application]
name = "chaining"
[[trigger.http]]
route = "/front/..."
component = "front"
[[trigger.http]]
route = "/headers/:kind/..."
component = "public"
[[trigger.http]]
route = { private = true }
component = "private"
[component.front]
source = "{probe}"
environment = { PROBE_NAME = "front" }
allowed_outbound_hosts = ["http://public.spin.internal", "http://private.spin.internal"]
[component.public]
source = "{probe}"
environment = { PROBE_NAME = "public" }
[component.private]
source = "{probe}"
environment = { PROBE_NAME = "private" }
"#;

/// A request to `http://<component>.spin.internal/<path>` gets exactly the
/// headers Spin 4.1 gives it, whatever routes the callee has. Spin does not
/// match the callee's routes: its outbound interceptor
/// (`crates/trigger-http/src/outbound_http.rs` in Spin's source) routes the
/// request with `RouteMatch::synthetic(component, path)`
/// (`crates/routes/src/lib.rs`: raw and based route `/...`, trailing
/// wildcard = the whole path, no named wildcards) and the client address
/// `0.0.0.0:0`; `compute_default_headers` (`crates/trigger-http/src/headers.rs`)
/// turns that into the headers below, with `spin-base-path` always `/`,
/// `spin-component-route` = the raw route without `/...` (empty) and
/// `spin-full-url` built from the `host` header, which Spin removes from
/// outbound requests before intercepting them
/// (`crates/factor-outbound-http/src/wasi.rs`), hence `localhost`.
#[tokio::test]
async fn chained_requests_get_spins_synthetic_route() {
    let app = spawn_app(CHAINING).await;
    // From the network, `public` is matched by its own route.
    let direct = app.get("/headers/x/deep").await;
    assert_eq!(direct.status, 404, "path info `/deep`: {}", direct.text());

    for callee in ["public", "private"] {
        let url = format!("http://{callee}.spin.internal/headers/x/deep?q=1");
        let reply = app.get(&format!("/front/fetch?url={}", encode(&url))).await;
        assert_eq!(reply.status, 200, "{callee}: {}", reply.text());
        let fetched = reply.json();
        assert_eq!(fetched["status"], 200, "{callee}: {fetched}");
        let seen: serde_json::Value =
            serde_json::from_str(fetched["body"].as_str().unwrap()).unwrap();
        assert_eq!(seen["name"], callee);
        let h = seen["headers"].as_object().unwrap();
        let expected = [
            ("spin-full-url", "http://localhost/headers/x/deep?q=1"),
            ("spin-path-info", "/headers/x/deep"),
            ("spin-matched-route", "/..."),
            ("spin-raw-component-route", "/..."),
            ("spin-component-route", ""),
            ("spin-base-path", "/"),
            ("spin-client-addr", "0.0.0.0:0"),
        ];
        for (name, value) in expected {
            assert_eq!(
                h.get(name).and_then(|v| v.as_str()),
                Some(value),
                "{callee}: {name} in {h:?}"
            );
        }
        let spin: Vec<&String> = h.keys().filter(|k| k.starts_with("spin-")).collect();
        assert_eq!(
            spin.len(),
            expected.len(),
            "{callee}: no other spin-* header: {spin:?}"
        );
        assert!(!h.contains_key("host"), "{callee}: {h:?}");
        assert_eq!(
            seen["uri"], url,
            "{callee}: the request itself is unchanged"
        );
    }
}

const JSON: (&str, &str) = ("content-type", "application/json");

/// The services the cart and the order saga call, and `caller`, a probe
/// that sends whatever request it is given over service chaining.
fn shop_manifest(prefix: &str) -> String {
    RepoManifest::load()
        .only(
            "chaining-shop",
            &["product", "inventory", "inventory-projector", "cart", "payment"],
        )
        .without_rate_limits()
        .trigger_setting("postgres", "poll_interval_ms", 100)
        .component_variable("cart", "cart_ttl_seconds", "3600")
        .component_variable("cart", "cart_key_prefix", prefix)
        .merge(
            r#"
[[trigger.http]]
route = "/caller/..."
component = "caller"

[component.caller]
source = "{probe}"
allowed_outbound_hosts = ["http://product.spin.internal", "http://inventory.spin.internal", "http://payment.spin.internal", "http://cart.spin.internal"]
"#,
        )
        .render()
}

struct Shop {
    app: TestApp,
    _db: TestDb,
    _lock: std::fs::File,
}

impl Shop {
    async fn start() -> Self {
        let lock = crate::redis::redis_shared_lock();
        let prefix = format!("bv-it-chaining-{}:", std::process::id());
        let db = TestDb::new("chaining").await;
        let app = spawn_app_with(
            &shop_manifest(&prefix),
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
            app,
            _db: db,
            _lock: lock,
        }
    }

    /// `method path` from the network.
    async fn direct(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Reply {
        request(self.app.addr, method, path, headers, body.to_string()).await
    }

    /// `method path` sent by `caller` to `http://<component>.spin.internal<path>`,
    /// with `headers` (`authorization`, `content-type`) and `body`: the
    /// callee's status and body.
    async fn chained(
        &self,
        component: &str,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> (u16, String) {
        let url = format!("http://{component}.spin.internal{path}");
        let reply = request(
            self.app.addr,
            "POST",
            &format!("/caller/fetch?method={method}&url={}", encode(&url)),
            headers,
            body.to_string(),
        )
        .await;
        assert_eq!(reply.status, 200, "{method} {url}: {}", reply.text());
        let answer = reply.json();
        (
            answer["status"].as_u64().unwrap() as u16,
            answer["body"].as_str().unwrap().to_string(),
        )
    }
}

fn parse(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or(Value::Null)
}

/// Every call the cart makes to the product service and the order saga (and
/// its sweeper) to the cart, inventory and payment services, over service
/// chaining, where the callee sees Spin's synthetic route (`spin-path-info`
/// = the whole path): each reaches the handler the same request from the
/// network reaches, with the same answer.
#[tokio::test]
async fn the_shops_chained_calls_reach_the_same_handlers_as_direct_ones() {
    let shop = Shop::start().await;
    let admin = admin();
    let customer = auth_support::customer("chaining-customer");

    // A product in stock.
    let body = json!({
        "sku": "CHAIN-1", "name": "Chained mug", "category": "mugs",
        "price": { "amount": 1250, "currency": "EUR" }
    });
    let r = shop
        .direct("POST", "/api/products", &[admin, JSON], &body.to_string())
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_string();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while shop.app.get(&format!("/api/inventory/{id}")).await.status != 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "no stock record\n{}",
            shop.app.log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let restock = json!({ "quantity": 10 }).to_string();
    let r = shop
        .direct(
            "POST",
            &format!("/api/inventory/{id}/restock"),
            &[admin, JSON],
            &restock,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());

    // cart → product: GET /api/products/<id>.
    let path = format!("/api/products/{id}");
    let direct = shop.direct("GET", &path, &[], "").await;
    assert_eq!(direct.status, 200, "{}", direct.text());
    let (status, body) = shop.chained("product", "GET", &path, &[], "").await;
    assert_eq!((status, parse(&body)), (200, direct.json()), "GET {path}");

    // The cart prices a line through that call.
    let line = json!({ "productId": id, "quantity": 2 }).to_string();
    let r = shop
        .direct("POST", "/api/carts/me/items", &[customer, JSON], &line)
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["items"][0]["unitPrice"]["amount"],
        1250,
        "{}",
        r.text()
    );

    // order → cart: GET /api/carts/me with the customer's token.
    let direct = shop.direct("GET", "/api/carts/me", &[customer], "").await;
    assert_eq!(direct.status, 200, "{}", direct.text());
    let (status, body) = shop
        .chained("cart", "GET", "/api/carts/me", &[customer], "")
        .await;
    assert_eq!(
        (status, parse(&body)),
        (200, direct.json()),
        "GET /api/carts/me"
    );

    // order → inventory: reserve (then the same from the network: a replay).
    let reservation = json!({
        "reservationId": "chained-1", "orderId": "chained-1",
        "items": [{ "productId": id, "quantity": 2 }],
    })
    .to_string();
    let path = "/api/inventory/reservations";
    let (status, chained) = shop
        .chained("inventory", "POST", path, &[JSON], &reservation)
        .await;
    assert_eq!(status, 201, "POST {path}: {chained}");
    let direct = shop
        .direct("POST", path, &[admin, JSON], &reservation)
        .await;
    assert_eq!(direct.status, 200, "a replay: {}", direct.text());
    assert_eq!(parse(&chained), direct.json(), "POST {path}");

    // order → payment: authorize, capture, refund; each then repeated from
    // the network, which answers what the chained call did.
    let authorize = json!({
        "paymentId": "chained-1", "orderId": "chained-1",
        "amount": { "amount": 2500, "currency": "EUR" },
        "card": { "token": "tok_visa" },
    })
    .to_string();
    for (path, body, status) in [
        ("/api/payments/authorize", authorize.as_str(), 201),
        ("/api/payments/chained-1/capture", "", 200),
        ("/api/payments/chained-1/refund", "", 200),
    ] {
        let headers: &[(&str, &str)] = if body.is_empty() { &[] } else { &[JSON] };
        let (got, chained) = shop.chained("payment", "POST", path, headers, body).await;
        assert_eq!(got, status, "POST {path}: {chained}");
        let mut with_admin = vec![admin];
        with_admin.extend_from_slice(headers);
        let direct = shop.direct("POST", path, &with_admin, body).await;
        assert_eq!(direct.status, status, "POST {path}: {}", direct.text());
        assert_eq!(parse(&chained), direct.json(), "POST {path}");
    }

    // order → inventory: commit this reservation, release another (the
    // sweeper's and a failed saga's give-back).
    let r = shop
        .direct(
            "POST",
            "/api/inventory/reservations",
            &[admin, JSON],
            &reservation.replace("chained-1", "chained-2"),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    for (path, status) in [
        ("/api/inventory/reservations/chained-1/commit", "COMMITTED"),
        ("/api/inventory/reservations/chained-2/release", "RELEASED"),
    ] {
        let (got, chained) = shop.chained("inventory", "POST", path, &[], "").await;
        assert_eq!(got, 200, "POST {path}: {chained}");
        assert_eq!(parse(&chained)["status"], status, "POST {path}: {chained}");
        let direct = shop.direct("POST", path, &[admin], "").await;
        assert_eq!(direct.status, 200, "POST {path}: {}", direct.text());
        assert_eq!(parse(&chained), direct.json(), "POST {path}");
    }

    // order → cart: DELETE /api/carts/me once the order is placed.
    let (status, body) = shop
        .chained("cart", "DELETE", "/api/carts/me", &[customer], "")
        .await;
    assert_eq!(status, 204, "DELETE /api/carts/me: {body}");
    let cart = shop.direct("GET", "/api/carts/me", &[customer], "").await;
    assert_eq!(cart.json()["items"], json!([]), "{}", cart.text());
    let direct = shop
        .direct("DELETE", "/api/carts/me", &[customer], "")
        .await;
    assert_eq!(direct.status, 204, "{}", direct.text());

    // A chained path outside the callee's mount is no resource of it.
    let (status, body) = shop
        .chained("product", "GET", &format!("/{id}"), &[], "")
        .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(
        parse(&body)["type"],
        "urn:bitvelocity:problem:not-found",
        "{body}"
    );
}

/// Each component's `MOUNT` (where its routing expects to be mounted) is
/// its route in `spin.toml`.
#[test]
fn every_mount_is_the_manifests_route() {
    let root = repo_root();
    let manifest: toml::Value =
        toml::from_str(&std::fs::read_to_string(root.join("spin.toml")).unwrap()).unwrap();
    let mut checked = Vec::new();
    for trigger in manifest["trigger"]["http"].as_array().unwrap() {
        let component = trigger["component"].as_str().unwrap();
        let Some(route) = trigger["route"].as_str().filter(|r| !is_grpc_route(r)) else {
            continue;
        };
        let source = root.join("components").join(component).join("src/lib.rs");
        let Ok(code) = std::fs::read_to_string(&source) else {
            continue;
        };
        let uses_path = code.contains("path_info(&req, MOUNT)");
        let mount = code
            .lines()
            .find_map(|l| l.strip_prefix("const MOUNT: &str = \""))
            .map(|rest| rest.trim_end_matches("\";"));
        match mount {
            Some(mount) => assert_eq!(
                format!("{mount}/..."),
                route,
                "{component}: MOUNT in {}",
                source.display()
            ),
            None => assert!(!uses_path, "{component}: no MOUNT"),
        }
        if uses_path {
            checked.push(component.to_string());
        }
    }
    checked.sort();
    assert_eq!(
        checked,
        [
            "auth",
            "cart",
            "chat",
            "inventory",
            "iot",
            "notifications",
            "order",
            "order-analytics",
            "payment",
            "product",
        ],
        "components that route with bv_service::path_info"
    );
}

/// `bv up` warns about a trigger only `bv` has, naming its components, and
/// says nothing of the kind for an HTTP-only manifest.
#[tokio::test]
async fn bv_up_warns_about_triggers_spin_does_not_have() {
    let db = TestDb::new("compat_warn").await;
    let manifest = r#"spin_manifest_version = 2
[application]
name = "bv-only"
[variables]
db_url = { required = true }
[application.trigger.postgres]
address = "{{ db_url }}"
[[trigger.http]]
route = "/p/..."
component = "probe"
[[trigger.postgres]]
component = "consumer"
events = ["com.bitvelocity.product.*"]
[[trigger.cron]]
component = "ticker"
cron_expression = "0 0 0 1 1 *"
[component.probe]
source = "{probe}"
[component.consumer]
source = "{wasm:event-consumer}"
allowed_outbound_hosts = ["postgres://127.0.0.1:5432"]
[component.consumer.variables]
db_url = "{{ db_url }}"
[component.ticker]
source = "{wasm:cron-probe}"
"#;
    let app = spawn_app_with(
        manifest,
        Spawn {
            env: vec![("SPIN_VARIABLE_DB_URL".into(), db.url())],
            ..Default::default()
        },
    )
    .await;
    let log = app.log();
    let warning = log
        .lines()
        .find(|l| l.contains("[[trigger.postgres]] (consumer) runs only under bv"))
        .unwrap_or_else(|| panic!("no warning in:\n{log}"));
    assert!(warning.contains("\"level\":\"WARN\""), "{warning}");
    assert!(
        warning.contains("No built-in trigger named 'postgres'"),
        "{warning}"
    );
    let cron = log
        .lines()
        .find(|l| l.contains("[[trigger.cron]] (ticker) needs the Spin plugin `trigger-cron`"))
        .unwrap_or_else(|| panic!("no cron note in:\n{log}"));
    assert!(cron.contains("\"level\":\"INFO\""), "{cron}");

    let plain = spawn_app(&probe_app("/p/...", "")).await;
    let log = plain.log();
    assert!(!log.contains("runs only under bv"), "{log}");
    assert!(!log.contains("needs the Spin plugin"), "{log}");
}

/// The manifest `spin up` can run (docs/SPIN.md): spin.toml with only the
/// trigger types Spin has built in, every component they name but those
/// importing bv's own interfaces, sources made absolute, and nothing else
/// changed; `bv`'s own parser takes it.
#[test]
fn the_manifest_for_spin_has_only_spins_triggers_and_every_http_component() {
    let root = repo_root();
    let out = std::process::Command::new("python3")
        .arg("infra/scripts/spin_side_by_side.py")
        .arg("--print-manifest")
        .current_dir(&root)
        .output()
        .expect("running python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let derived: toml::Table = text.parse().unwrap();
    let shipped: toml::Table = std::fs::read_to_string(root.join("spin.toml"))
        .unwrap()
        .parse()
        .unwrap();

    let kinds: Vec<&String> = derived["trigger"].as_table().unwrap().keys().collect();
    assert_eq!(kinds, ["http"], "spin.toml has no Redis trigger today");
    assert!(derived["application"].get("trigger").is_none());
    // Components that import bv's own interfaces (`bitvelocity:smtp`) are
    // left out: Spin cannot link them (the script's BV_ONLY_COMPONENTS).
    let bv_only = ["notifications"];
    let spin_http: Vec<toml::Value> = shipped["trigger"]["http"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| !bv_only.contains(&t["component"].as_str().unwrap()))
        .cloned()
        .collect();
    assert_eq!(
        derived["trigger"]["http"],
        toml::Value::Array(spin_http.clone())
    );
    let http_components: std::collections::BTreeSet<&str> = spin_http
        .iter()
        .map(|t| t["component"].as_str().unwrap())
        .collect();
    let components = derived["component"].as_table().unwrap();
    assert_eq!(
        components
            .keys()
            .map(String::as_str)
            .collect::<std::collections::BTreeSet<_>>(),
        http_components
    );
    for (id, component) in components {
        let mut expected = shipped["component"][id].clone();
        let source = root.join(expected["source"].as_str().unwrap());
        expected
            .as_table_mut()
            .unwrap()
            .insert("source".into(), source.to_str().unwrap().into());
        assert_eq!(component, &expected, "{id}");
    }
    assert_eq!(derived["variables"], shipped["variables"]);

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("spin.toml"), &text).unwrap();
    bv_manifest::load(&dir.path().join("spin.toml")).expect("bv parses it too");
}

/// Spin's reserved routes (`/.well-known/spin/...`) are the runtime's, ahead
/// of the app's: even a catch-all route never sees them. SpinKube's probes
/// ask `health`.
#[tokio::test]
async fn the_reserved_routes_are_answered_by_the_runtime() {
    let app = spawn_app(&probe_app("/...", "")).await;
    let health = app.get("/.well-known/spin/health").await;
    assert_eq!((health.status, health.text().as_str()), (200, "OK"));
    let info = app.get("/.well-known/spin/info").await;
    assert_eq!(info.status, 200, "{}", info.text());
    assert_eq!(info.json()["name"], "test", "{}", info.text());
    assert!(info.json()["runtime"].as_str().unwrap().starts_with("bv "));
    let other = app.get("/.well-known/spin/other").await;
    assert_eq!(other.status, 404);
    assert_eq!(other.headers["content-type"], "application/problem+json");
    // Beside them, the catch-all still gets everything else (the probe
    // itself answers an action it does not know).
    let beside = app.get("/.well-known/other").await;
    assert!(
        beside.text().contains("unknown probe action"),
        "{}",
        beside.text()
    );
}
