//! Password hashing has a bulkhead of its own: a flood of registrations
//! (argon2id in `auth`) on the same host must not starve the catalogue and
//! the cart. Real PostgreSQL (a database of the test's own) and Redis (a
//! key prefix of its own).

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::auth_support;
use crate::harness::*;
use crate::pg_support::*;
use crate::redis::redis_shared_lock;
use crate::repo_manifest::RepoManifest;

const JSON: (&str, &str) = ("content-type", "application/json");

/// Demo products (migration `0002_demo_catalog`).
const DEMO: [&str; 10] = [
    "5eed0000-0000-4000-8000-000000000001",
    "5eed0000-0000-4000-8000-000000000002",
    "5eed0000-0000-4000-8000-000000000003",
    "5eed0000-0000-4000-8000-000000000004",
    "5eed0000-0000-4000-8000-000000000005",
    "5eed0000-0000-4000-8000-000000000006",
    "5eed0000-0000-4000-8000-000000000007",
    "5eed0000-0000-4000-8000-000000000008",
    "5eed0000-0000-4000-8000-000000000009",
    "5eed0000-0000-4000-8000-00000000000a",
];

/// `auth` with the catalogue and the cart beside it. The cart caches no
/// product for longer than a second, and the adds come slower than ten a
/// second, so that every add asks the product service.
fn manifest(prefix: &str) -> String {
    RepoManifest::load()
        .only("auth-bulkhead", &["auth", "product", "cart"])
        .without_rate_limits()
        .component_variable("auth", "login_key_prefix", prefix)
        .component_variable("cart", "cart_ttl_seconds", "3600")
        .component_variable("cart", "cart_key_prefix", prefix)
        .component_variable("cart", "product_cache_ttl_seconds", "1")
        .render()
}

#[tokio::test]
async fn a_registration_flood_leaves_the_cart_answering() {
    let _lock = redis_shared_lock();
    static N: AtomicU32 = AtomicU32::new(0);
    let prefix = format!(
        "bv-it-bulkhead-{}-{}:",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    let db = TestDb::new("auth_bulkhead").await;
    let app = spawn_app_with(
        &manifest(&prefix),
        Spawn {
            env: [("SPIN_VARIABLE_DB_URL".into(), db.url())]
                .into_iter()
                .chain(auth_support::env_with_signing_keys())
                .collect(),
            ..Default::default()
        },
    )
    .await;
    let addr = app.addr;
    let password = "quiet harbour lantern 58";
    crate::suite_secrets::used(password);

    // Tables and the demo catalogue first, one registration, one add.
    let r = app.get("/api/products?limit=1").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let account = json!({ "email": "first@example.com", "password": password }).to_string();
    let r = request(addr, "POST", "/api/auth/register", &[JSON], account).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let add = |customer: String, product: &'static str| async move {
        let body = json!({ "productId": product, "quantity": 1 }).to_string();
        let started = Instant::now();
        let customer = auth_support::customer(&customer);
        let r = request(addr, "POST", "/api/carts/me/items", &[customer, JSON], body).await;
        (r, started.elapsed())
    };
    let (r, _) = add("bulkhead-warm".into(), DEMO[0]).await;
    assert_eq!(r.status, 200, "{}", r.text());

    // 16 clients register as fast as they are answered...
    let stop = Arc::new(AtomicBool::new(false));
    let mut flood = Vec::new();
    for client in 0..16 {
        let stop = stop.clone();
        flood.push(tokio::spawn(async move {
            let mut answers = Vec::new();
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let body = json!({
                    "email": format!("flood-{client}-{n}@example.com"),
                    "password": password,
                })
                .to_string();
                let r = request(addr, "POST", "/api/auth/register", &[JSON], body).await;
                answers.push(r);
            }
            answers
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    // ... while customers fill their carts.
    let mut faults = Vec::new();
    let mut slowest = Duration::ZERO;
    for i in 0..50 {
        let (r, took) = add(format!("bulkhead-{}", i % 5), DEMO[i % DEMO.len()]).await;
        slowest = slowest.max(took);
        if r.status != 200 || r.json().get("degraded").is_some() {
            faults.push(format!(
                "add {i}: {} after {took:?}: {}",
                r.status,
                r.text()
            ));
        }
    }
    stop.store(true, Ordering::Relaxed);
    let mut registered = 0;
    let mut refused = 0;
    for client in flood {
        for r in client.await.unwrap() {
            match r.status {
                201 => registered += 1,
                503 => {
                    refused += 1;
                    assert_eq!(
                        r.json()["type"],
                        "urn:bitvelocity:problem:concurrency-limit",
                        "{}",
                        r.text()
                    );
                    assert!(
                        r.headers.contains_key("retry-after"),
                        "a 503 without Retry-After: {}",
                        r.text()
                    );
                }
                other => panic!("a registration answered {other}: {}", r.text()),
            }
        }
    }
    eprintln!(
        "registration flood: {registered} registered, {refused} refused; slowest cart add {slowest:?}"
    );
    assert!(
        faults.is_empty(),
        "cart adds failed during the registration flood ({registered} registered, {refused} refused):\n  {}\nbv log:\n{}",
        faults.join("\n  "),
        app.log()
    );
    assert!(registered > 0, "no registration got through the flood");
}
