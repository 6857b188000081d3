//! The cart service end to end: `cart` keeps carts in the real Redis and
//! prices them from the `product` component (service chaining), whose
//! products live in a PostgreSQL database of the test's own. Each test has
//! its own customers and its own Redis key prefix; checked through HTTP and
//! Redis.

use std::sync::atomic::{AtomicU32, Ordering};

use bytes::Bytes;
use serde_json::{json, Value};

use crate::auth_support::{self, admin};
use crate::harness::*;
use crate::pg_support::*;
use crate::redis::redis_shared_lock;
use crate::repo_manifest::RepoManifest;

const REDIS: &str = "redis://127.0.0.1:6379";

/// The cart expires this long after its last change, in these tests.
const TTL: i64 = 3600;

/// The cart and the catalogue as `spin.toml` has them, the cart's keys
/// under `prefix`.
fn manifest(prefix: &str, cache_ttl: u32) -> String {
    RepoManifest::load()
        .only("commerce-cart", &["product", "cart"])
        .without_rate_limits()
        .trigger_setting("postgres", "poll_interval_ms", 100)
        .component_variable("cart", "cart_ttl_seconds", &TTL.to_string())
        .component_variable("cart", "cart_key_prefix", prefix)
        .component_variable("cart", "product_cache_ttl_seconds", &cache_ttl.to_string())
        .render()
}

/// A running app, its database, and its Redis key prefix.
struct Shop {
    app: TestApp,
    prefix: String,
    db: TestDb,
    _lock: std::fs::File,
}

impl Shop {
    /// Ann's cart at current prices (`Cache-Control: no-cache`, as a
    /// checkout asks for it).
    async fn revalidated_cart(&self) -> Reply {
        let headers = [auth_support::customer("ann"), ("cache-control", "no-cache")];
        request(
            self.app.addr,
            "GET",
            "/api/carts/me",
            &headers,
            Bytes::new(),
        )
        .await
    }

    /// Requests bv has served the product component over service chaining.
    async fn product_calls(&self) -> u64 {
        let text = self.app.admin_get("/metrics").await.text();
        text.lines()
            .filter(|l| {
                l.starts_with("bv_http_requests_total{")
                    && l.contains(r#"component="product""#)
                    && l.contains(r#"route="/...""#)
            })
            .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
            .sum()
    }

    async fn start(tag: &str) -> Self {
        Self::start_with(tag, 30).await
    }

    /// With product lookups cached for `cache_ttl` seconds.
    async fn start_with(tag: &str, cache_ttl: u32) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let lock = redis_shared_lock();
        let prefix = format!(
            "bv-it-cart-{tag}-{}-{}:",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let db = TestDb::new(&format!("cart_{tag}")).await;
        let app = spawn_app_with(
            &manifest(&prefix, cache_ttl),
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
            prefix,
            db,
            _lock: lock,
        }
    }

    /// Creates a product through the product service's admin API; its id.
    async fn product(&self, sku: &str, amount: i64, currency: &str) -> String {
        let body = json!({
            "sku": sku,
            "name": format!("Product {sku}"),
            "category": "mugs",
            "price": { "amount": amount, "currency": currency },
        });
        let r = request(
            self.app.addr,
            "POST",
            "/api/products",
            &[("content-type", "application/json"), admin()],
            body.to_string(),
        )
        .await;
        assert_eq!(r.status, 201, "creating {sku}: {}", r.text());
        r.json()["id"].as_str().unwrap().to_string()
    }

    /// A cart request with `customer`'s token (none: no token).
    async fn call(&self, customer: Option<&str>, method: &str, path: &str, body: &str) -> Reply {
        self.call_with(customer, method, path, "application/json", body.to_string())
            .await
    }

    async fn call_with(
        &self,
        customer: Option<&str>,
        method: &str,
        path: &str,
        content_type: &str,
        body: impl Into<Bytes>,
    ) -> Reply {
        let mut headers = vec![("content-type", content_type)];
        if let Some(customer) = customer {
            headers.push(auth_support::customer(customer));
        }
        request(self.app.addr, method, path, &headers, body).await
    }

    async fn cart(&self, customer: &str) -> Value {
        let r = self.call(Some(customer), "GET", "/api/carts/me", "").await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.headers["content-type"], "application/json");
        r.json()
    }

    async fn add(&self, customer: &str, product: &str, quantity: i64) -> Reply {
        let body = json!({ "productId": product, "quantity": quantity });
        self.call(
            Some(customer),
            "POST",
            "/api/carts/me/items",
            &body.to_string(),
        )
        .await
    }

    async fn added(&self, customer: &str, product: &str, quantity: i64) -> Value {
        let r = self.add(customer, product, quantity).await;
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()
    }

    async fn set(&self, customer: &str, product: &str, quantity: Value) -> Reply {
        let body = json!({ "quantity": quantity });
        self.call(
            Some(customer),
            "PUT",
            &format!("/api/carts/me/items/{product}"),
            &body.to_string(),
        )
        .await
    }

    async fn redis(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(REDIS)
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .expect("Redis on 127.0.0.1:6379")
    }

    fn cart_key(&self, customer: &str) -> String {
        format!("{}cart:{customer}", self.prefix)
    }

    /// The cart's hash in Redis.
    async fn stored(&self, customer: &str) -> std::collections::BTreeMap<String, String> {
        redis::cmd("HGETALL")
            .arg(self.cart_key(customer))
            .query_async(&mut self.redis().await)
            .await
            .unwrap()
    }

    async fn ttl(&self, customer: &str) -> i64 {
        redis::cmd("TTL")
            .arg(self.cart_key(customer))
            .query_async(&mut self.redis().await)
            .await
            .unwrap()
    }

    async fn metrics(&self) -> String {
        let r = self.app.get("/api/carts/metrics").await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(
            r.headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/plain; version=0.0.4"),
            "{:?}",
            r.headers
        );
        r.text()
    }
}

impl Drop for Shop {
    fn drop(&mut self) {
        // This test's keys go with it.
        let pattern = format!("{}*", self.prefix);
        let _ = std::thread::spawn(move || {
            let mut conn = redis::Client::open(REDIS)
                .unwrap()
                .get_connection()
                .unwrap();
            let keys: Vec<String> = redis::cmd("KEYS").arg(&pattern).query(&mut conn).unwrap();
            if !keys.is_empty() {
                let _: () = redis::cmd("DEL").arg(keys).query(&mut conn).unwrap();
            }
        })
        .join();
    }
}

/// The problem's `type` kind and status; panics when `r` is no problem.
fn problem(r: &Reply) -> (u16, String) {
    assert_eq!(
        r.headers["content-type"],
        "application/problem+json",
        "{} {}",
        r.status,
        r.text()
    );
    let body = r.json();
    let kind = body["type"]
        .as_str()
        .unwrap()
        .strip_prefix("urn:bitvelocity:problem:")
        .unwrap()
        .to_string();
    (r.status, kind)
}

/// `(productId, quantity, lineTotal)` of each line.
fn lines(cart: &Value) -> Vec<(String, i64, i64)> {
    cart["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["productId"].as_str().unwrap().to_string(),
                l["quantity"].as_i64().unwrap(),
                l["lineTotal"].as_i64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn items_are_added_merged_changed_removed_and_cleared_with_totals() {
    let shop = Shop::start("crud").await;
    let mug = shop.product("MUG-1", 1299, "EUR").await;
    let cup = shop.product("CUP-1", 250, "EUR").await;
    let (ann, bob) = ("ann", "bob");

    // A customer without a cart has an empty one.
    let empty = shop.cart(ann).await;
    assert_eq!(
        empty,
        json!({ "customerId": ann, "items": [], "total": 0, "currency": null, "updatedAt": null })
    );

    shop.added(ann, &mug, 2).await;
    let cart = shop.added(ann, &mug, 1).await;
    assert_eq!(
        lines(&cart),
        vec![(mug.clone(), 3, 3897)],
        "quantities merge"
    );
    let cart = shop.added(ann, &cup, 4).await;
    assert_eq!(cart["total"], 3 * 1299 + 4 * 250);
    assert_eq!(cart["currency"], "EUR");
    assert_eq!(shop.cart(ann).await, cart, "a change answers the cart");
    let line = cart["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["productId"] == mug.as_str())
        .unwrap();
    assert_eq!(
        line,
        &json!({
            "productId": mug, "sku": "MUG-1", "name": "Product MUG-1",
            "unitPrice": { "amount": 1299, "currency": "EUR" },
            "quantity": 3, "lineTotal": 3897
        })
    );
    let updated = cart["updatedAt"].as_str().unwrap();
    assert!(
        updated.ends_with('Z') && updated.len() == "2026-11-25T10:00:00.000Z".len(),
        "{updated}"
    );

    // Another customer's cart is their own.
    shop.added(bob, &cup, 1).await;
    assert_eq!(lines(&shop.cart(bob).await), vec![(cup.clone(), 1, 250)]);
    assert_eq!(shop.cart(ann).await["total"], 3 * 1299 + 4 * 250);

    // Change, then remove with quantity 0, then with DELETE.
    let r = shop.set(ann, &mug, json!(1)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["total"], 1299 + 4 * 250);
    let r = shop.set(ann, &cup, json!(0)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(lines(&r.json()), vec![(mug.clone(), 1, 1299)]);
    let r = shop
        .call(
            Some(ann),
            "DELETE",
            &format!("/api/carts/me/items/{mug}"),
            "",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["items"], json!([]));
    assert_eq!(
        r.json()["currency"],
        Value::Null,
        "an empty cart has no currency"
    );
    assert!(
        shop.stored(ann).await.is_empty(),
        "the last line takes the cart with it"
    );

    // Removing or changing a line that is not there.
    let r = shop
        .call(
            Some(ann),
            "DELETE",
            &format!("/api/carts/me/items/{mug}"),
            "",
        )
        .await;
    assert_eq!(problem(&r), (404, "item-not-in-cart".into()));
    let r = shop.set(ann, &mug, json!(2)).await;
    assert_eq!(problem(&r), (404, "item-not-in-cart".into()));

    // Clearing.
    shop.added(ann, &mug, 5).await;
    let r = shop.call(Some(ann), "DELETE", "/api/carts/me", "").await;
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(shop.cart(ann).await["items"], json!([]));
    assert!(shop.stored(ann).await.is_empty());
    assert_eq!(
        lines(&shop.cart(bob).await),
        vec![(cup, 1, 250)],
        "bob's cart stays"
    );
}

#[tokio::test]
async fn a_cart_expires_and_every_change_renews_it() {
    let shop = Shop::start("ttl").await;
    let mug = shop.product("MUG-1", 1299, "EUR").await;
    let cup = shop.product("CUP-1", 250, "EUR").await;
    shop.added("ann", &mug, 1).await;
    let ttl = shop.ttl("ann").await;
    assert!(ttl > TTL - 60 && ttl <= TTL, "TTL {ttl}");

    let shorten = || async {
        let _: bool = redis::cmd("EXPIRE")
            .arg(shop.cart_key("ann"))
            .arg(100)
            .query_async(&mut shop.redis().await)
            .await
            .unwrap();
    };
    // Reading does not renew it; each kind of change does.
    shorten().await;
    shop.cart("ann").await;
    assert!(shop.ttl("ann").await <= 100);
    shop.added("ann", &cup, 1).await;
    assert!(shop.ttl("ann").await > TTL - 60, "add renews");
    shorten().await;
    assert_eq!(shop.set("ann", &mug, json!(3)).await.status, 200);
    assert!(shop.ttl("ann").await > TTL - 60, "change renews");
    shorten().await;
    let r = shop
        .call(
            Some("ann"),
            "DELETE",
            &format!("/api/carts/me/items/{cup}"),
            "",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(shop.ttl("ann").await > TTL - 60, "remove renews");
}

#[tokio::test]
async fn prices_and_names_come_from_the_product_service_only() {
    let shop = Shop::start("price").await;
    let mug = shop.product("MUG-1", 1299, "EUR").await;

    // A client-sent price (or name) is refused, not used.
    let sneaky = json!({
        "productId": mug, "quantity": 1,
        "price": { "amount": 1, "currency": "EUR" }
    });
    let r = shop
        .call(
            Some("ann"),
            "POST",
            "/api/carts/me/items",
            &sneaky.to_string(),
        )
        .await;
    assert_eq!(problem(&r), (422, "invalid-field".into()));
    assert_eq!(r.json()["field"], "price", "{}", r.text());
    let sneaky = json!({ "productId": mug, "quantity": 1, "name": "Free mug" });
    let r = shop
        .call(
            Some("ann"),
            "POST",
            "/api/carts/me/items",
            &sneaky.to_string(),
        )
        .await;
    assert_eq!(r.json()["field"], "name", "{}", r.text());
    assert!(shop.stored("ann").await.is_empty(), "nothing changed");

    let cart = shop.added("ann", &mug, 2).await;
    assert_eq!(
        cart["items"][0]["unitPrice"],
        json!({ "amount": 1299, "currency": "EUR" })
    );
    assert_eq!(cart["items"][0]["name"], "Product MUG-1");
    assert_eq!(cart["total"], 2598);
    // Redis holds quantities, never prices or names.
    let stored = shop.stored("ann").await;
    let fields: Vec<&str> = stored.keys().map(String::as_str).collect();
    assert_eq!(
        fields,
        vec!["currency", &format!("item:{mug}"), "updatedAt"]
    );
    assert_eq!(stored[&format!("item:{mug}")], "2");
    assert_eq!(stored["currency"], "EUR");

    // The id is matched however the client spells the UUID's case.
    let cart = shop.added("ann", &mug.to_uppercase(), 1).await;
    assert_eq!(lines(&cart), vec![(mug.clone(), 3, 3897)]);
}

#[tokio::test]
async fn unknown_and_deleted_products_are_refused() {
    let shop = Shop::start_with("unknown", 1).await;
    let mug = shop.product("MUG-1", 1299, "EUR").await;
    for id in ["3f1e9a56-8d1c-4c41-9a8e-0d2b5f7a9c10", "no-such-product"] {
        let r = shop.add("ann", id, 1).await;
        assert_eq!(problem(&r), (404, "unknown-product".into()), "{id}");
        assert_eq!(r.json()["productId"], id);
    }
    assert!(shop.stored("ann").await.is_empty(), "nothing changed");

    // A product deleted while in the cart: no longer priced or counted, but
    // still removable.
    let cup = shop.product("CUP-1", 250, "EUR").await;
    shop.added("ann", &mug, 1).await;
    shop.added("ann", &cup, 1).await;
    let r = request(
        shop.app.addr,
        "DELETE",
        &format!("/api/products/{cup}"),
        &[admin()],
        Bytes::new(),
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.text());
    // Past the cache's TTL (1 s here), the cart sees the deletion.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let r = shop.add("ann", &cup, 1).await;
    assert_eq!(problem(&r), (404, "unknown-product".into()));
    let r = shop.set("ann", &cup, json!(2)).await;
    assert_eq!(problem(&r), (404, "unknown-product".into()));
    let cart = shop.cart("ann").await;
    assert_eq!(lines(&cart), vec![(mug.clone(), 1, 1299)]);
    assert_eq!(cart["unavailable"], json!([cup]));
    assert_eq!(cart["total"], 1299);
    let r = shop
        .call(
            Some("ann"),
            "DELETE",
            &format!("/api/carts/me/items/{cup}"),
            "",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(lines(&r.json()), vec![(mug, 1, 1299)]);
    assert!(r.json().get("unavailable").is_none(), "{}", r.text());
}

#[tokio::test]
async fn a_revalidating_cart_asks_for_all_its_lines_at_once_and_falls_back_line_by_line() {
    let shop = Shop::start("batch").await;
    let mut products = Vec::new();
    for (i, sku) in ["MUG-1", "CUP-1", "POT-1"].iter().enumerate() {
        let id = shop.product(sku, 100 * (i as i64 + 1), "EUR").await;
        shop.added("ann", &id, 1).await;
        products.push(id);
    }
    // Current prices for three lines: one call to the product service.
    let before = shop.product_calls().await;
    let r = shop.revalidated_cart().await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(shop.product_calls().await - before, 1);
    assert_eq!(r.json()["total"], 600, "{}", r.text());
    assert!(r.headers.get("warning").is_none());
    let mut ids: Vec<String> = lines(&r.json()).into_iter().map(|l| l.0).collect();
    ids.sort();
    products.sort();
    assert_eq!(ids, products);

    // The product service failing (its table gone): each line falls back
    // to its own last copy, marked stale, and the cart says so.
    shop.db
        .client()
        .await
        .batch_execute("ALTER TABLE product.products RENAME TO products_away")
        .await
        .unwrap();
    let r = shop.revalidated_cart().await;
    shop.db
        .client()
        .await
        .batch_execute("ALTER TABLE product.products_away RENAME TO products")
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["total"], 600, "{}", r.text());
    assert!(r.headers.get("warning").is_some(), "{:?}", r.headers);
    let stale: Vec<bool> = r.json()["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["stale"].as_bool().unwrap_or(false))
        .collect();
    assert_eq!(stale, [true, true, true], "{}", r.text());
}

#[tokio::test]
async fn a_cart_holds_one_currency() {
    let shop = Shop::start("currency").await;
    let mug = shop.product("MUG-1", 1299, "EUR").await;
    let hat = shop.product("HAT-1", 2000, "USD").await;
    shop.added("ann", &mug, 1).await;
    let before = shop.stored("ann").await;
    let r = shop.add("ann", &hat, 1).await;
    assert_eq!(problem(&r), (409, "currency-mismatch".into()));
    let body = r.json();
    assert_eq!(
        (&body["cartCurrency"], &body["productCurrency"]),
        (&json!("EUR"), &json!("USD"))
    );
    assert_eq!(shop.stored("ann").await, before, "nothing changed");
    // Once the cart is empty, any currency goes.
    let r = shop.call(Some("ann"), "DELETE", "/api/carts/me", "").await;
    assert_eq!(r.status, 204);
    let cart = shop.added("ann", &hat, 2).await;
    assert_eq!(
        (&cart["currency"], &cart["total"]),
        (&json!("USD"), &json!(4000))
    );
}

#[tokio::test]
async fn concurrent_adds_lose_no_update() {
    let shop = Shop::start("race").await;
    let mug = shop.product("MUG-1", 1299, "EUR").await;
    let cup = shop.product("CUP-1", 250, "EUR").await;
    let (shop_ref, mug_ref, cup_ref) = (&shop, mug.as_str(), cup.as_str());
    let adds = (0..20).map(|i| async move {
        // All on one line of one cart, and half each on two lines of another.
        let r = shop_ref.add("ann", mug_ref, 1).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let product = if i % 2 == 0 { mug_ref } else { cup_ref };
        let r = shop_ref.add("bea", product, 1).await;
        assert_eq!(r.status, 200, "{}", r.text());
    });
    futures::future::join_all(adds).await;
    assert_eq!(
        lines(&shop.cart("ann").await),
        vec![(mug.clone(), 20, 20 * 1299)]
    );
    let bea = shop.cart("bea").await;
    let mut got = lines(&bea);
    got.sort();
    let mut want = vec![(mug, 10, 10 * 1299), (cup, 10, 10 * 250)];
    want.sort();
    assert_eq!(got, want);
    assert_eq!(bea["total"], 10 * 1299 + 10 * 250);
}

#[tokio::test]
async fn product_lookups_are_cached_and_the_hit_ratio_exported() {
    let shop = Shop::start("cache").await;
    let mug = shop.product("MUG-1", 1299, "EUR").await;
    let metrics = shop.metrics().await;
    assert!(
        metrics.contains("cart_product_cache_hits_total 0\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("cart_product_cache_misses_total 0\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("cart_product_cache_hit_ratio 0\n"),
        "{metrics}"
    );

    // First lookup: a miss (the answer reuses what the add looked up).
    shop.added("ann", &mug, 1).await;
    let metrics = shop.metrics().await;
    assert!(
        metrics.contains("cart_product_cache_hits_total 0\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("cart_product_cache_misses_total 1\n"),
        "{metrics}"
    );
    // Second lookup: a hit.
    shop.cart("ann").await;
    let metrics = shop.metrics().await;
    assert!(
        metrics.contains("# TYPE cart_product_cache_hits_total counter\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("# TYPE cart_product_cache_hit_ratio gauge\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("cart_product_cache_hits_total 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("cart_product_cache_misses_total 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("cart_product_cache_hit_ratio 0.5\n"),
        "{metrics}"
    );
    shop.added("bob", &mug, 1).await;
    assert!(shop
        .metrics()
        .await
        .contains("cart_product_cache_hits_total 2\n"));
    // The counters are in Redis, shared by every instance.
    let hits: i64 = redis::cmd("GET")
        .arg(format!("{}cart:cache:hits", shop.prefix))
        .query_async(&mut shop.redis().await)
        .await
        .unwrap();
    assert_eq!(hits, 2);
}

#[tokio::test]
async fn bad_input_is_a_specific_problem_and_changes_nothing() {
    let shop = Shop::start("bad").await;
    let mug = shop.product("MUG-1", 1299, "EUR").await;
    shop.added("ann", &mug, 98).await;
    let before = shop.stored("ann").await;
    let add = |body: Value| body.to_string();

    // No customer.
    let r = shop.call(None, "GET", "/api/carts/me", "").await;
    assert_eq!(problem(&r), (401, "unauthenticated".into()));
    let r = shop
        .call(
            None,
            "POST",
            "/api/carts/me/items",
            &add(json!({"productId": mug, "quantity": 1})),
        )
        .await;
    assert_eq!(problem(&r), (401, "unauthenticated".into()));
    let r = shop
        .call(Some("not a customer"), "GET", "/api/carts/me", "")
        .await;
    assert_eq!(problem(&r), (401, "invalid-token".into()));

    // Malformed JSON, wrong media type, too large.
    let r = shop
        .call(
            Some("ann"),
            "POST",
            "/api/carts/me/items",
            "{\"productId\": ",
        )
        .await;
    assert_eq!(problem(&r), (400, "malformed-json".into()));
    let r = shop
        .call_with(
            Some("ann"),
            "POST",
            "/api/carts/me/items",
            "text/plain",
            "{}",
        )
        .await;
    assert_eq!(problem(&r), (415, "unsupported-media-type".into()));
    let huge = format!(
        "{{\"productId\": \"{mug}\", \"quantity\": 1, \"pad\": \"{}\"}}",
        "x".repeat(64 * 1024)
    );
    let r = shop
        .call(Some("ann"), "POST", "/api/carts/me/items", &huge)
        .await;
    assert_eq!(problem(&r), (413, "body-too-large".into()));

    // Wrong types and out-of-range quantities name the field.
    for (body, field) in [
        (json!({"productId": mug, "quantity": 0}), "quantity"),
        (json!({"productId": mug, "quantity": -1}), "quantity"),
        (json!({"productId": mug, "quantity": 100}), "quantity"),
        (json!({"productId": mug, "quantity": 1.5}), "quantity"),
        (json!({"productId": mug, "quantity": "1"}), "quantity"),
        (json!({"productId": 7, "quantity": 1}), "productId"),
        (json!({"productId": "a b", "quantity": 1}), "productId"),
    ] {
        let r = shop
            .call(
                Some("ann"),
                "POST",
                "/api/carts/me/items",
                &add(body.clone()),
            )
            .await;
        assert_eq!(problem(&r), (422, "invalid-field".into()), "{body}");
        assert_eq!(r.json()["field"], field, "{body}: {}", r.text());
    }
    let r = shop
        .call(
            Some("ann"),
            "POST",
            "/api/carts/me/items",
            &add(json!({"quantity": 1})),
        )
        .await;
    assert_eq!(problem(&r), (422, "invalid-field".into()));
    assert!(
        r.json()["detail"].as_str().unwrap().contains("productId"),
        "{}",
        r.text()
    );
    for quantity in [json!(-1), json!(100), json!("2"), json!(null)] {
        let r = shop.set("ann", &mug, quantity.clone()).await;
        assert_eq!(problem(&r), (422, "invalid-field".into()), "{quantity}");
        assert_eq!(r.json()["field"], "quantity");
    }

    // A line holds at most 99.
    let r = shop.add("ann", &mug, 2).await;
    assert_eq!(problem(&r), (409, "quantity-limit".into()));
    assert_eq!(
        (r.json()["inCart"].clone(), r.json()["max"].clone()),
        (json!(98), json!(99))
    );

    // Unknown routes and methods.
    let r = shop.call(Some("ann"), "GET", "/api/carts/you", "").await;
    assert_eq!(problem(&r), (404, "not-found".into()));
    let r = shop.call(Some("ann"), "PATCH", "/api/carts/me", "").await;
    assert_eq!(problem(&r), (405, "method-not-allowed".into()));
    assert_eq!(r.headers["allow"], "GET, HEAD, DELETE");

    assert_eq!(shop.stored("ann").await, before, "nothing changed");
    assert_eq!(lines(&shop.cart("ann").await), vec![(mug, 98, 98 * 1299)]);
}
