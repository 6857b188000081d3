//! The inventory service end to end: `inventory-projector` opens stock
//! records from the catalogue's `product.created` (written into the
//! outbox here, as the catalogue would), `inventory` serves the HTTP API;
//! all against the real PostgreSQL, checked through HTTP and the tables.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::auth_support::{self, admin, customer};
use crate::harness::*;
use crate::pg_support::*;
use crate::repo_manifest::RepoManifest;

/// The inventory service as `spin.toml` has it, its events polled often
/// and retried quickly.
fn manifest() -> String {
    RepoManifest::load()
        .only("inventory", &["inventory", "inventory-projector"])
        .without_rate_limits()
        .trigger_setting("postgres", "poll_interval_ms", 100)
        .trigger_field("postgres", "inventory-projector", "max_attempts", 3)
        .trigger_field("postgres", "inventory-projector", "retry_initial_ms", 100)
        .trigger_field("postgres", "inventory-projector", "retry_max_ms", 400)
        .render()
}

const RESERVED: &str = "com.bitvelocity.stock.reserved.v1";
const RELEASED: &str = "com.bitvelocity.stock.released.v1";
const COMMITTED: &str = "com.bitvelocity.stock.committed.v1";
const RESTOCKED: &str = "com.bitvelocity.stock.restocked.v1";

/// What the ids of the catalogue's demo products (product migration
/// `0002_demo_catalog`) start with; inventory migration `0002_demo_stock`
/// gives each [`DEMO_ON_HAND`] units.
const DEMO_PREFIX: &str = "5eed0000-0000-4000-8000-";
const DEMO_ON_HAND: i64 = 25;
/// The demo products' `(id, sku)`.
const DEMO: [(&str, &str); 10] = [
    ("5eed0000-0000-4000-8000-000000000001", "MUG-RED-350"),
    ("5eed0000-0000-4000-8000-000000000002", "MUG-BLUE-350"),
    ("5eed0000-0000-4000-8000-000000000003", "MUG-TRAVEL-450"),
    ("5eed0000-0000-4000-8000-000000000004", "MUG-ESPRESSO-2"),
    ("5eed0000-0000-4000-8000-000000000005", "TEA-EARLGREY-100"),
    ("5eed0000-0000-4000-8000-000000000006", "TEA-SENCHA-100"),
    ("5eed0000-0000-4000-8000-000000000007", "TEA-CHAI-20"),
    ("5eed0000-0000-4000-8000-000000000008", "NB-A5-DOT"),
    ("5eed0000-0000-4000-8000-000000000009", "NB-A6-POCKET"),
    ("5eed0000-0000-4000-8000-00000000000a", "PEN-FOUNTAIN-F"),
];

struct Shop {
    db: TestDb,
    app: TestApp,
}

impl Shop {
    async fn start(tag: &str) -> Self {
        let db = TestDb::new(tag).await;
        let app = spawn_app_with(
            &manifest(),
            Spawn {
                env: [("SPIN_VARIABLE_DB_URL".into(), db.url())]
                    .into_iter()
                    .chain(auth_support::env())
                    .collect(),
                ..Default::default()
            },
        )
        .await;
        Self { db, app }
    }

    /// Writes the catalogue's `product.created` for `id` into the outbox
    /// under event id `event_id`.
    async fn product_created(&self, event_id: &str, id: &str, sku: &str) {
        let client = self.db.client().await;
        // The Postgres trigger creates the event schema as it starts.
        let deadline = Instant::now() + Duration::from_secs(30);
        while client
            .query_one("SELECT to_regclass('bv_events.outbox') IS NOT NULL", &[])
            .await
            .unwrap()
            .get::<_, bool>(0)
            .eq(&false)
        {
            assert!(Instant::now() < deadline, "no bv_events.outbox");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let event = json!({
            "specversion": "1.0", "id": event_id, "source": "/catalog",
            "type": "com.bitvelocity.product.created.v1", "subject": id,
            "time": "2026-11-25T10:00:00.000Z", "datacontenttype": "application/json",
            "data": {
                "productId": id, "sku": sku, "name": format!("Product {id}"),
                "price": { "amount": 1299, "currency": "EUR" }, "status": "active"
            }
        });
        client
            .execute(
                "INSERT INTO bv_events.outbox (id, source, type, subject, time, event)
                 VALUES ($1, '/catalog', 'com.bitvelocity.product.created.v1', $2,
                         '2026-11-25T10:00:00Z', $3::text::jsonb)",
                &[&event_id, &id, &event.to_string()],
            )
            .await
            .unwrap();
    }

    /// A product the inventory knows, with `on_hand` units restocked.
    async fn product(&self, id: &str, on_hand: i64) {
        self.product_created(&format!("created-{id}"), id, &format!("SKU-{id}"))
            .await;
        self.wait_stock(id).await;
        if on_hand > 0 {
            let r = self.restock(id, json!({ "quantity": on_hand })).await;
            assert_eq!(r.status, 200, "{}", r.text());
        }
    }

    /// Waits until `GET /api/inventory/{id}` answers 200; its body.
    async fn wait_stock(&self, id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let r = self.app.get(&format!("/api/inventory/{id}")).await;
            if r.status == 200 {
                return r.json();
            }
            assert_eq!(r.status, 404, "{}", r.text());
            assert!(
                Instant::now() < deadline,
                "no stock record for {id}\nbv log:\n{}",
                self.app.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn stock(&self, id: &str) -> Value {
        let r = self.app.get(&format!("/api/inventory/{id}")).await;
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()
    }

    /// `(onHand, reserved, available)` of `id`.
    async fn counts(&self, id: &str) -> (i64, i64, i64) {
        let s = self.stock(id).await;
        (
            s["onHand"].as_i64().unwrap(),
            s["reserved"].as_i64().unwrap(),
            s["available"].as_i64().unwrap(),
        )
    }

    /// A POST as an administrator: restocking is theirs, and the
    /// reservation calls (the order saga's, over service chaining) take
    /// outside callers only with an administrator's token.
    async fn post(&self, path: &str, headers: &[(&str, &str)], body: impl Into<String>) -> Reply {
        let mut headers = headers.to_vec();
        headers.push(admin());
        request(self.app.addr, "POST", path, &headers, body.into()).await
    }

    /// A GET as an administrator.
    async fn get(&self, path: &str) -> Reply {
        request(self.app.addr, "GET", path, &[admin()], "").await
    }

    async fn post_json(&self, path: &str, body: &Value) -> Reply {
        self.post(
            path,
            &[("content-type", "application/json")],
            body.to_string(),
        )
        .await
    }

    async fn restock(&self, id: &str, body: Value) -> Reply {
        self.post(
            &format!("/api/inventory/{id}/restock"),
            &[("content-type", "application/json")],
            body.to_string(),
        )
        .await
    }

    async fn reserve(&self, body: &Value) -> Reply {
        self.post_json("/api/inventory/reservations", body).await
    }

    async fn count(&self, sql: &str) -> i64 {
        let client = self.db.client().await;
        client
            .query_one(sql, &[])
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .get(0)
    }

    async fn events(&self, ty: &str) -> Vec<Value> {
        let client = self.db.client().await;
        client
            .query(
                "SELECT event::text FROM bv_events.outbox WHERE type = $1 ORDER BY seq",
                &[&ty],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| serde_json::from_str(r.get::<_, &str>(0)).unwrap())
            .collect()
    }
}

fn reservation(id: &str, order: &str, items: &[(&str, i64)]) -> Value {
    json!({
        "reservationId": id,
        "orderId": order,
        "items": items
            .iter()
            .map(|(p, q)| json!({ "productId": p, "quantity": q }))
            .collect::<Vec<_>>(),
    })
}

/// Asserts a problem answer of `status` and `kind`; its body.
fn problem(r: &Reply, status: u16, kind: &str) -> Value {
    assert_eq!(r.status, status, "{}", r.text());
    assert_eq!(
        r.headers["content-type"],
        "application/problem+json",
        "{}",
        r.text()
    );
    let body = r.json();
    assert_eq!(
        body["type"],
        format!("urn:bitvelocity:problem:{kind}"),
        "{body}"
    );
    assert_eq!(body["status"], status, "{body}");
    body
}

#[tokio::test]
async fn a_stock_record_comes_from_product_created_once() {
    let shop = Shop::start("inv_projector").await;
    shop.product_created("ev-1", "p1", "MUG-RED").await;
    let stock = shop.wait_stock("p1").await;
    assert_eq!(
        stock,
        json!({ "productId": "p1", "sku": "MUG-RED", "onHand": 0, "reserved": 0, "available": 0 })
    );
    let r = shop.restock("p1", json!({ "quantity": 4 })).await;
    assert_eq!(r.status, 200, "{}", r.text());

    // A redelivery (the subscription replayed from the start) is claimed
    // already: no second effect. (First wait for the position to move past
    // the event, or the replay could race with that.)
    let delivered =
        "SELECT delivered FROM bv_events.subscriptions WHERE name = 'inventory-projector'";
    let deadline = Instant::now() + Duration::from_secs(30);
    while shop.count(delivered).await < 1 {
        assert!(Instant::now() < deadline, "{}", shop.app.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let client = shop.db.client().await;
    client
        .batch_execute(
            "UPDATE bv_events.subscriptions SET position_tx = '0', position_seq = 0
             WHERE name = 'inventory-projector';
             NOTIFY bv_events",
        )
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while shop.count(delivered).await < 2 {
        assert!(
            Instant::now() < deadline,
            "no redelivery\n{}",
            shop.app.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(shop.counts("p1").await, (4, 0, 4));
    assert_eq!(
        shop.count(
            "SELECT count(*) FROM bv_events.processed WHERE consumer = 'inventory-projector'"
        )
        .await,
        1
    );

    // The catalogue publishing the product again (a new event id) keeps
    // the counts and takes the SKU.
    shop.product_created("ev-2", "p1", "MUG-CRIMSON").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while shop.stock("p1").await["sku"] != "MUG-CRIMSON" {
        assert!(Instant::now() < deadline, "{}", shop.app.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(shop.counts("p1").await, (4, 0, 4));
    assert_eq!(
        shop.count(&format!(
            "SELECT count(*) FROM inventory.stock WHERE product_id NOT LIKE '{DEMO_PREFIX}%'"
        ))
        .await,
        1
    );
    assert_eq!(
        shop.count("SELECT count(*) FROM bv_events.dead_letters")
            .await,
        0
    );
    let r = shop.app.get("/api/inventory/nope").await;
    problem(&r, 404, "not-found");
}

#[tokio::test]
async fn restocking_is_for_admins_and_adds_to_on_hand() {
    let shop = Shop::start("inv_restock").await;
    shop.product("p1", 0).await;

    let r = request(
        shop.app.addr,
        "POST",
        "/api/inventory/p1/restock",
        &[("content-type", "application/json")],
        r#"{"quantity": 5}"#,
    )
    .await;
    problem(&r, 401, "unauthenticated");
    let r = request(
        shop.app.addr,
        "POST",
        "/api/inventory/p1/restock",
        &[("content-type", "application/json"), customer("cora")],
        r#"{"quantity": 5}"#,
    )
    .await;
    problem(&r, 403, "forbidden");

    let r = shop.restock("p1", json!({ "quantity": 5 })).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json(),
        json!({ "productId": "p1", "sku": "SKU-p1", "onHand": 5, "reserved": 0, "available": 5 })
    );
    let r = shop.restock("p1", json!({ "quantity": 3 })).await;
    assert_eq!(r.json()["onHand"], 8, "{}", r.text());

    let r = shop.restock("ghost", json!({ "quantity": 3 })).await;
    problem(&r, 404, "not-found");

    for (body, field) in [
        (json!({ "quantity": 0 }), "quantity"),
        (json!({ "quantity": -2 }), "quantity"),
        (json!({ "quantity": 1.5 }), "quantity"),
        (json!({ "quantity": "3" }), "quantity"),
        (json!({ "quantity": 1_000_001 }), "quantity"),
        (json!({}), "quantity"),
        (json!({ "quantity": 1, "note": "x" }), "note"),
    ] {
        let r = shop.restock("p1", body.clone()).await;
        let p = problem(&r, 422, "invalid-field");
        assert_eq!(p["field"], field, "{body}: {p}");
    }
    let r = shop
        .post(
            "/api/inventory/p1/restock",
            &[("content-type", "application/json")],
            "{\"quantity\": ",
        )
        .await;
    problem(&r, 400, "malformed-json");
    let r = shop
        .post("/api/inventory/p1/restock", &[], r#"{"quantity": 5}"#)
        .await;
    problem(&r, 415, "unsupported-media-type");
    let r = shop
        .post(
            "/api/inventory/p1/restock",
            &[("content-type", "application/json")],
            format!(r#"{{"quantity": 5, "pad": "{}"}}"#, "x".repeat(4096)),
        )
        .await;
    problem(&r, 413, "body-too-large");
    let r = shop.app.get("/api/inventory/p1/restock").await;
    problem(&r, 405, "method-not-allowed");

    assert_eq!(shop.counts("p1").await, (8, 0, 8));
    // (Besides the demo catalogue's stock.)
    let events: Vec<Value> = shop
        .events(RESTOCKED)
        .await
        .into_iter()
        .filter(|e| e["subject"] == "p1")
        .collect();
    let data: Vec<&Value> = events.iter().map(|e| &e["data"]).collect();
    assert_eq!(
        data,
        vec![
            &json!({ "productId": "p1", "sku": "SKU-p1", "warehouseId": "main", "quantity": 5, "onHand": 5 }),
            &json!({ "productId": "p1", "sku": "SKU-p1", "warehouseId": "main", "quantity": 3, "onHand": 8 }),
        ]
    );
    assert_eq!(events[0]["source"], "/inventory");
    assert_eq!(events[0]["subject"], "p1");
}

#[tokio::test]
async fn a_reservation_holds_every_line_or_none() {
    let shop = Shop::start("inv_reserve").await;
    shop.product("p1", 10).await;
    shop.product("p2", 1).await;
    shop.product("p3", 0).await;

    // p2 and p3 are short: neither p1's line nor anything else is held.
    let r = shop
        .reserve(&reservation(
            "r-short",
            "o-1",
            &[("p1", 3), ("p2", 2), ("p3", 1)],
        ))
        .await;
    let p = problem(&r, 409, "insufficient-stock");
    assert_eq!(
        p["shortages"],
        json!([
            { "productId": "p2", "requested": 2, "available": 1 },
            { "productId": "p3", "requested": 1, "available": 0 }
        ]),
        "{p}"
    );
    let detail = p["detail"].as_str().unwrap();
    assert!(
        detail.contains("p2") && detail.contains("p3") && !detail.contains("p1"),
        "{detail}"
    );
    assert_eq!(shop.counts("p1").await, (10, 0, 10));
    assert_eq!(shop.counts("p2").await, (1, 0, 1));

    // An unknown product: 422, nothing held either.
    let r = shop
        .reserve(&reservation("r-ghost", "o-1", &[("p1", 3), ("ghost", 1)]))
        .await;
    let p = problem(&r, 422, "unknown-product");
    assert_eq!(p["productIds"], json!(["ghost"]), "{p}");
    assert_eq!(shop.counts("p1").await, (10, 0, 10));
    assert_eq!(
        shop.count("SELECT count(*) FROM inventory.reservations")
            .await,
        0
    );
    assert!(shop.events(RESERVED).await.is_empty());

    // A refused reservation left no trace: its id can be used again.
    let r = shop
        .reserve(&reservation("r-short", "o-1", &[("p2", 1), ("p1", 3)]))
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let body = r.json();
    assert_eq!(body["reservationId"], "r-short");
    assert_eq!(body["orderId"], "o-1");
    assert_eq!(body["status"], "RESERVED");
    assert_eq!(
        body["items"],
        json!([{ "productId": "p1", "quantity": 3 }, { "productId": "p2", "quantity": 1 }])
    );
    assert!(body["expiresAt"].as_str().unwrap().ends_with('Z'), "{body}");
    assert_eq!(shop.counts("p1").await, (10, 3, 7));
    assert_eq!(shop.counts("p2").await, (1, 1, 0));
    let r = shop.get("/api/inventory/reservations/r-short").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), body);

    let events = shop.events(RESERVED).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["id"], "reservation/r-short/reserved");
    assert_eq!(events[0]["subject"], "r-short");
    assert_eq!(
        events[0]["data"],
        json!({
            "reservationId": "r-short", "orderId": "o-1", "warehouseId": "main",
            "items": [
                { "productId": "p1", "sku": "SKU-p1", "quantity": 3 },
                { "productId": "p2", "sku": "SKU-p2", "quantity": 1 }
            ],
            "expiresAt": body["expiresAt"]
        })
    );

    // Now p2 is out: the whole next order is refused.
    let r = shop
        .reserve(&reservation("r-next", "o-2", &[("p1", 1), ("p2", 1)]))
        .await;
    problem(&r, 409, "insufficient-stock");
    assert_eq!(shop.counts("p1").await, (10, 3, 7));
}

#[tokio::test]
async fn a_reservation_id_is_an_idempotency_key() {
    let shop = Shop::start("inv_idem").await;
    shop.product("p1", 10).await;
    shop.product("p2", 10).await;

    let first = reservation("r-1", "o-1", &[("p1", 2), ("p2", 3)]);
    let r = shop.reserve(&first).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let created = r.json();

    // The same request, also with its lines in another order: the first
    // answer again, nothing more held.
    for again in [
        first.clone(),
        reservation("r-1", "o-1", &[("p2", 3), ("p1", 2)]),
    ] {
        let r = shop.reserve(&again).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json(), created);
    }
    assert_eq!(shop.counts("p1").await, (10, 2, 8));
    assert_eq!(shop.counts("p2").await, (10, 3, 7));

    // The same id for something else.
    for other in [
        reservation("r-1", "o-1", &[("p1", 2), ("p2", 4)]),
        reservation("r-1", "o-1", &[("p1", 2)]),
        reservation("r-1", "o-9", &[("p1", 2), ("p2", 3)]),
    ] {
        let r = shop.reserve(&other).await;
        let p = problem(&r, 422, "idempotency-mismatch");
        assert_eq!(p["field"], "reservationId");
    }
    assert_eq!(shop.counts("p1").await, (10, 2, 8));
    assert_eq!(shop.counts("p2").await, (10, 3, 7));
    assert_eq!(shop.events(RESERVED).await.len(), 1);

    // Concurrent copies of one new request: one reservation.
    let body = reservation("r-2", "o-2", &[("p1", 1)]);
    let addr = shop.app.addr;
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let body = body.to_string();
            tokio::spawn(async move {
                request(
                    addr,
                    "POST",
                    "/api/inventory/reservations",
                    &[("content-type", "application/json"), admin()],
                    body,
                )
                .await
                .status
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    statuses.sort();
    assert_eq!(statuses, vec![200, 200, 200, 200, 200, 200, 200, 201]);
    assert_eq!(shop.counts("p1").await, (10, 3, 7));
    assert_eq!(shop.events(RESERVED).await.len(), 2);
}

#[tokio::test]
async fn release_and_commit_happen_once_and_never_after_each_other() {
    let shop = Shop::start("inv_states").await;
    shop.product("p1", 10).await;

    let r = shop
        .reserve(&reservation("r-rel", "o-1", &[("p1", 4)]))
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let r = shop
        .reserve(&reservation("r-com", "o-2", &[("p1", 3)]))
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(shop.counts("p1").await, (10, 7, 3));

    // Release gives the stock back, once.
    for _ in 0..2 {
        let r = shop
            .post("/api/inventory/reservations/r-rel/release", &[], "")
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["status"], "RELEASED");
        assert_eq!(shop.counts("p1").await, (10, 3, 7));
    }
    // Commit takes it out of on-hand for good, once.
    for _ in 0..2 {
        let r = shop
            .post("/api/inventory/reservations/r-com/commit", &[], "")
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["status"], "COMMITTED");
        assert_eq!(shop.counts("p1").await, (7, 0, 7));
    }

    let r = shop
        .post("/api/inventory/reservations/r-rel/commit", &[], "")
        .await;
    let p = problem(&r, 409, "illegal-transition");
    assert_eq!(p["reservationStatus"], "RELEASED");
    assert!(p["detail"].as_str().unwrap().contains("RELEASED"), "{p}");
    let r = shop
        .post("/api/inventory/reservations/r-com/release", &[], "")
        .await;
    problem(&r, 409, "illegal-transition");
    assert_eq!(shop.counts("p1").await, (7, 0, 7));

    // A replayed reservation request answers with where it stands now,
    // and holds nothing again.
    let r = shop
        .reserve(&reservation("r-rel", "o-1", &[("p1", 4)]))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["status"], "RELEASED");
    assert_eq!(shop.counts("p1").await, (7, 0, 7));

    for path in [
        "/api/inventory/reservations/nope/release",
        "/api/inventory/reservations/nope/commit",
    ] {
        let r = shop.post(path, &[], "").await;
        problem(&r, 404, "not-found");
    }
    // A reserve that comes after the release of its id (its caller gave
    // up waiting and released) is refused and holds nothing.
    let r = shop
        .reserve(&reservation("nope", "o-3", &[("p1", 2)]))
        .await;
    let p = problem(&r, 409, "illegal-transition");
    assert_eq!(p["reservationStatus"], "RELEASED");
    assert_eq!(shop.counts("p1").await, (7, 0, 7));
    let r = shop.get("/api/inventory/reservations/nope").await;
    problem(&r, 404, "not-found");
    let r = shop.get("/api/inventory/reservations/r-rel/release").await;
    problem(&r, 405, "method-not-allowed");

    let released = shop.events(RELEASED).await;
    assert_eq!(released.len(), 1);
    assert_eq!(
        released[0]["data"],
        json!({
            "reservationId": "r-rel", "orderId": "o-1", "warehouseId": "main",
            "items": [{ "productId": "p1", "sku": "SKU-p1", "quantity": 4 }]
        })
    );
    let committed = shop.events(COMMITTED).await;
    assert_eq!(committed.len(), 1);
    assert_eq!(committed[0]["data"]["reservationId"], "r-com");
    assert_eq!(committed[0]["id"], "reservation/r-com/committed");
    let statuses = shop
        .count(
            "SELECT count(*) FROM inventory.reservations
             WHERE (reservation_id, status) IN (('r-rel', 'RELEASED'), ('r-com', 'COMMITTED'))",
        )
        .await;
    assert_eq!(statuses, 2);
}

#[tokio::test]
async fn concurrent_reservations_never_oversell() {
    let shop = Shop::start("inv_race").await;
    shop.product("p1", 10).await;

    let addr = shop.app.addr;
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let body = reservation(&format!("r-{i}"), &format!("o-{i}"), &[("p1", 1)]).to_string();
            tokio::spawn(async move {
                let r = request(
                    addr,
                    "POST",
                    "/api/inventory/reservations",
                    &[("content-type", "application/json"), admin()],
                    body,
                )
                .await;
                (r.status, r.text())
            })
        })
        .collect();
    let mut created = 0;
    let mut refused = 0;
    for t in tasks {
        match t.await.unwrap() {
            (201, _) => created += 1,
            (409, text) => {
                assert!(text.contains("insufficient-stock"), "{text}");
                refused += 1;
            }
            (status, text) => panic!("unexpected {status}: {text}"),
        }
    }
    assert_eq!((created, refused), (10, 40));
    assert_eq!(shop.counts("p1").await, (10, 10, 0));
    assert_eq!(
        shop.count("SELECT count(*) FROM inventory.reservations")
            .await,
        10
    );
    assert_eq!(
        shop.count("SELECT coalesce(sum(quantity), 0)::bigint FROM inventory.reservation_items")
            .await,
        10
    );
    assert_eq!(shop.events(RESERVED).await.len(), 10);
    assert_eq!(
        shop.count(
            "SELECT count(*) FROM inventory.stock
             WHERE on_hand < 0 OR reserved < 0 OR reserved > on_hand"
        )
        .await,
        0
    );

    // Orders sharing two products, listed in either order, while earlier
    // reservations are released and committed: no deadlock (it would be a
    // 500), no overselling.
    shop.product("p2", 6).await;
    shop.product("p3", 6).await;
    let tasks: Vec<_> = (0..30)
        .map(|i| {
            let (path, body) = match i % 3 {
                0 => (
                    "/api/inventory/reservations".to_string(),
                    reservation(&format!("m-{i}"), "o", &[("p2", 1), ("p3", 1)]).to_string(),
                ),
                1 => (
                    "/api/inventory/reservations".to_string(),
                    reservation(&format!("m-{i}"), "o", &[("p3", 1), ("p2", 1)]).to_string(),
                ),
                _ => (
                    format!(
                        "/api/inventory/reservations/r-{}/{}",
                        i / 3,
                        if i % 2 == 0 { "release" } else { "commit" }
                    ),
                    String::new(),
                ),
            };
            tokio::spawn(async move {
                let r = request(
                    addr,
                    "POST",
                    &path,
                    &[("content-type", "application/json"), admin()],
                    body,
                )
                .await;
                (r.status, r.text())
            })
        })
        .collect();
    let mut created = 0;
    for t in tasks {
        match t.await.unwrap() {
            (201, _) => created += 1,
            (200 | 404, _) => {}
            (409, text) if text.contains("insufficient-stock") => {}
            (status, text) => panic!("unexpected {status}: {text}"),
        }
    }
    assert_eq!(created, 6);
    assert_eq!(shop.counts("p2").await, (6, 6, 0));
    assert_eq!(shop.counts("p3").await, (6, 6, 0));
    let (on_hand, reserved, _) = shop.counts("p1").await;
    let settled = shop
        .count(
            // Releases of ids whose reservation was refused leave bars
            // (RELEASED, no lines), which never held stock.
            "SELECT count(*) FROM inventory.reservations r
             WHERE status <> 'RESERVED' AND reservation_id LIKE 'r-%'
               AND EXISTS (SELECT 1 FROM inventory.reservation_items i
                           WHERE i.reservation_id = r.reservation_id)",
        )
        .await;
    let committed = shop
        .count("SELECT count(*) FROM inventory.reservations WHERE status = 'COMMITTED'")
        .await;
    assert_eq!((on_hand, reserved), (10 - committed, 10 - settled));
    assert_eq!(
        shop.count(
            "SELECT count(*) FROM inventory.stock
             WHERE on_hand < 0 OR reserved < 0 OR reserved > on_hand"
        )
        .await,
        0
    );
}

#[tokio::test]
async fn bad_reservations_are_refused_and_change_nothing() {
    let shop = Shop::start("inv_bad").await;
    shop.product("p1", 5).await;

    let good = reservation("r-1", "o-1", &[("p1", 1)]);
    let with = |edit: &dyn Fn(&mut Value)| {
        let mut v = good.clone();
        edit(&mut v);
        v
    };
    for (body, field) in [
        (
            with(&|v| v["items"][0]["quantity"] = json!(0)),
            "items[0].quantity",
        ),
        (
            with(&|v| v["items"][0]["quantity"] = json!(-1)),
            "items[0].quantity",
        ),
        (
            with(&|v| v["items"][0]["quantity"] = json!("1")),
            "items[0].quantity",
        ),
        (
            with(&|v| v["items"][0]["quantity"] = json!(2.5)),
            "items[0].quantity",
        ),
        (
            with(&|v| v["items"][0]["quantity"] = json!(1e30)),
            "items[0].quantity",
        ),
        (
            with(&|v| v["items"][0]["productId"] = json!(7)),
            "items[0].productId",
        ),
        (
            with(&|v| v["items"][0]["productId"] = json!("")),
            "items[0].productId",
        ),
        (with(&|v| v["items"] = json!([])), "items"),
        (with(&|v| v["items"] = json!({})), "items"),
        (
            with(
                &|v| v["items"] = json!([{ "productId": "p1", "quantity": 1 }, { "productId": "p1", "quantity": 2 }]),
            ),
            "items",
        ),
        (
            with(&|v| v["reservationId"] = json!("a b")),
            "reservationId",
        ),
        (
            with(&|v| v["reservationId"] = json!("a/b")),
            "reservationId",
        ),
        (with(&|v| v["reservationId"] = json!(12)), "reservationId"),
        (with(&|v| v["orderId"] = json!(null)), "orderId"),
        (with(&|v| v["extra"] = json!(1)), "extra"),
        (
            with(&|v| v["items"][0]["warehouse"] = json!("w")),
            "items[0].warehouse",
        ),
        (json!([]), "$"),
        (
            json!({ "orderId": "o-1", "items": [{ "productId": "p1", "quantity": 1 }] }),
            "reservationId",
        ),
    ] {
        let r = shop.reserve(&body).await;
        let p = problem(&r, 422, "invalid-field");
        assert_eq!(p["field"], field, "{body}: {p}");
    }

    let r = shop
        .post(
            "/api/inventory/reservations",
            &[("content-type", "application/json")],
            r#"{"reservationId": "r-1", "#,
        )
        .await;
    problem(&r, 400, "malformed-json");
    let r = shop
        .post(
            "/api/inventory/reservations",
            &[("content-type", "text/plain")],
            good.to_string(),
        )
        .await;
    problem(&r, 415, "unsupported-media-type");
    let huge = json!({
        "reservationId": "r-1", "orderId": "o-1",
        "items": [{ "productId": "x".repeat(100_000), "quantity": 1 }]
    });
    let r = shop.reserve(&huge).await;
    problem(&r, 413, "body-too-large");
    let many: Vec<(String, i64)> = (0..101).map(|i| (format!("p{i}"), 1)).collect();
    let many: Vec<(&str, i64)> = many.iter().map(|(p, q)| (p.as_str(), *q)).collect();
    let r = shop.reserve(&reservation("r-1", "o-1", &many)).await;
    let p = problem(&r, 422, "invalid-field");
    assert_eq!(p["field"], "items");

    let r = shop.get("/api/inventory/reservations").await;
    problem(&r, 405, "method-not-allowed");
    let r = shop.app.send("DELETE", "/api/inventory/p1", "").await;
    problem(&r, 405, "method-not-allowed");
    for path in [
        "/api/inventory",
        "/api/inventory/p1/somewhere",
        "/api/inventory/reservations/r-1/refund",
        "/api/inventory/reservations/bad%20id",
        "/api/inventory/reservations/r-1",
    ] {
        let r = shop.get(path).await;
        problem(&r, 404, "not-found");
    }

    assert_eq!(shop.counts("p1").await, (5, 0, 5));
    assert_eq!(
        shop.count("SELECT count(*) FROM inventory.reservations")
            .await,
        0
    );
    assert!(shop.events(RESERVED).await.is_empty());

    // After all that, the good request still works.
    let r = shop.reserve(&good).await;
    assert_eq!(r.status, 201, "{}", r.text());
}

#[tokio::test]
async fn the_demo_catalogue_is_in_stock_from_the_start() {
    let shop = Shop::start("inv_demo").await;
    // The first request migrates: every demo product has its units, before
    // (and whether or not) the catalogue's product.created arrives.
    for (id, sku) in DEMO {
        assert_eq!(
            shop.stock(id).await,
            json!({
                "productId": id, "sku": sku,
                "onHand": DEMO_ON_HAND, "reserved": 0, "available": DEMO_ON_HAND
            })
        );
    }
    assert_eq!(shop.count("SELECT count(*) FROM inventory.stock").await, 10);

    // Each arrival has its stock.restocked, like a restock through the API
    // (same envelope and data as `events::restocked` builds).
    let events = shop.events(RESTOCKED).await;
    assert_eq!(events.len(), DEMO.len());
    for (event, (id, sku)) in events.iter().zip(DEMO) {
        assert_eq!(event["specversion"], "1.0", "{event}");
        assert_eq!(event["source"], "/inventory", "{event}");
        assert_eq!(event["subject"], id, "{event}");
        assert_eq!(event["datacontenttype"], "application/json", "{event}");
        assert!(!event["id"].as_str().unwrap().is_empty(), "{event}");
        let time = event["time"].as_str().unwrap();
        assert!(
            time.len() == 24 && time.ends_with('Z') && time.as_bytes()[10] == b'T',
            "{event}"
        );
        assert_eq!(
            event["data"],
            json!({
                "productId": id, "sku": sku, "warehouseId": "main",
                "quantity": DEMO_ON_HAND, "onHand": DEMO_ON_HAND
            })
        );
    }
    let event_ids = shop
        .count("SELECT count(DISTINCT id) FROM bv_events.outbox")
        .await;
    assert_eq!(event_ids, 10);

    // The catalogue's product.created for a demo product, arriving after
    // the units: the record keeps them.
    let (mug, sku) = DEMO[0];
    shop.product_created("created-demo-1", mug, sku).await;
    let processed =
        "SELECT count(*) FROM bv_events.processed WHERE consumer = 'inventory-projector'";
    let deadline = Instant::now() + Duration::from_secs(30);
    while shop.count(processed).await < 1 {
        assert!(Instant::now() < deadline, "{}", shop.app.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(shop.counts(mug).await, (DEMO_ON_HAND, 0, DEMO_ON_HAND));

    // And it can be reserved at once.
    let (tea, _) = DEMO[4];
    let r = shop
        .reserve(&reservation("r-demo", "o-demo", &[(mug, 2), (tea, 1)]))
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(shop.counts(mug).await, (DEMO_ON_HAND, 2, DEMO_ON_HAND - 2));
    assert_eq!(shop.counts(tea).await, (DEMO_ON_HAND, 1, DEMO_ON_HAND - 1));
}

#[tokio::test]
async fn a_products_stock_streams_live_after_every_change() {
    use crate::streaming::{open_stream_with, read_until};

    let shop = Shop::start("inv_stream").await;
    shop.product("p1", 3).await;
    let mut stream = open_stream_with(shop.app.addr, "/api/inventory/p1/stream", &[]).await;
    let wait = Duration::from_secs(5);
    let (first, _) = read_until(&mut stream, "\"available\":3", wait).await;
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    assert!(first.contains("content-type: text/event-stream"), "{first}");
    assert!(first.contains("event: stock\ndata: {"), "{first}");

    // A reservation, then a restock: each arrives as it happens.
    let r = shop.reserve(&reservation("r1", "o1", &[("p1", 2)])).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let (reserved, _) = read_until(&mut stream, "\"available\":1", wait).await;
    assert!(reserved.contains("\"reserved\":2"), "{reserved}");
    assert_eq!(
        reserved.matches("event: stock").count(),
        1,
        "one event per change:\n{reserved}"
    );
    let r = shop.restock("p1", json!({ "quantity": 4 })).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let (restocked, _) = read_until(&mut stream, "\"available\":5", wait).await;
    assert!(restocked.contains("\"onHand\":7"), "{restocked}");

    // Nothing to stream for a product without stock; other methods are 405.
    problem(
        &shop.get("/api/inventory/nope/stream").await,
        404,
        "not-found",
    );
    let r = shop.post("/api/inventory/p1/stream", &[], "").await;
    assert_eq!(r.status, 405, "{}", r.text());
    assert_eq!(r.headers["allow"], "GET, HEAD");
}

#[tokio::test]
async fn a_flash_sale_is_announced_live_and_late_followers_catch_up() {
    use crate::streaming::{open_stream_with, read_until, CLEAN_END};

    let shop = Shop::start("inv_flash").await;
    shop.product("p1", 10).await;
    // Times by the database's clock, as the sale's state is.
    let client = shop.db.client().await;
    let at = |ms: i64| {
        let client = &client;
        async move {
            let row = client
                .query_one(
                    "SELECT to_char((clock_timestamp() + $1::float8 * interval '1 millisecond')
                        AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')",
                    &[&(ms as f64)],
                )
                .await
                .unwrap();
            row.get::<_, String>(0)
        }
    };
    let sale = json!({
        "productId": "p1", "units": 4,
        "startsAt": at(1500).await, "endsAt": at(3500).await,
    });
    let r = shop.post_json("/api/inventory/flash-sales", &sale).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let created = r.json();
    let id = created["saleId"].as_str().unwrap().to_string();
    assert_eq!(
        r.headers["location"],
        format!("/api/inventory/flash-sales/{id}")
    );
    assert_eq!(created["state"], "scheduled");
    assert_eq!(created["unitsLeft"], 4);

    // A follower from before the start sees it scheduled, start, units
    // going as stock is reserved, and the end; then the stream ends.
    let path = format!("/api/inventory/flash-sales/{id}/stream");
    let mut stream = open_stream_with(shop.app.addr, &path, &[]).await;
    let wait = Duration::from_secs(5);
    let (seen, _) = read_until(&mut stream, "\"state\":\"live\"", wait).await;
    assert!(seen.contains("content-type: text/event-stream"), "{seen}");
    assert!(seen.contains("\"state\":\"scheduled\""), "{seen}");
    let r = shop.reserve(&reservation("r1", "o1", &[("p1", 8)])).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let (left, _) = read_until(&mut stream, "\"unitsLeft\":2", wait).await;
    assert!(left.contains("\"state\":\"live\""), "{left}");
    let (ended, _) = read_until(&mut stream, CLEAN_END, wait).await;
    assert!(ended.contains("\"state\":\"ended\""), "{ended}");
    assert!(ended.contains("\"unitsLeft\":0"), "{ended}");

    // A late follower gets the sale as it is, once, and the end at once.
    let mut late = open_stream_with(shop.app.addr, &path, &[]).await;
    let (all, _) = read_until(&mut late, CLEAN_END, wait).await;
    assert_eq!(all.matches("event: sale").count(), 1, "{all}");
    assert!(all.contains("\"state\":\"ended\""), "{all}");
    let r = shop.get(&format!("/api/inventory/flash-sales/{id}")).await;
    assert_eq!(r.json()["state"], "ended", "{}", r.text());

    // Bad sales are refused, naming the field, and nothing is kept.
    let before = shop
        .count("SELECT count(*) FROM inventory.flash_sales")
        .await;
    for (body, field) in [
        (
            json!({ "productId": "p1", "units": 1, "startsAt": at(2000).await, "endsAt": at(1000).await }),
            "endsAt",
        ),
        (
            json!({ "productId": "p1", "units": 1, "startsAt": at(-3000).await, "endsAt": at(-1000).await }),
            "endsAt",
        ),
        (
            json!({ "productId": "nope", "units": 1, "startsAt": at(0).await, "endsAt": at(1000).await }),
            "productId",
        ),
        (
            json!({ "productId": "p1", "units": 0, "startsAt": at(0).await, "endsAt": at(1000).await }),
            "units",
        ),
        (
            json!({ "productId": "p1", "units": 1, "startsAt": "tomorrow", "endsAt": at(1000).await }),
            "startsAt",
        ),
        (
            json!({ "productId": "p1", "units": 1, "startsAt": "0000-01-01T00:00:00Z", "endsAt": at(1000).await }),
            "startsAt",
        ),
    ] {
        let r = shop.post_json("/api/inventory/flash-sales", &body).await;
        let p = problem(&r, 422, "invalid-field");
        assert_eq!(p["field"], field, "{body}: {}", r.text());
    }
    assert_eq!(
        shop.count("SELECT count(*) FROM inventory.flash_sales")
            .await,
        before
    );
    let r = request(
        shop.app.addr,
        "POST",
        "/api/inventory/flash-sales",
        &[("content-type", "application/json"), customer("cora")],
        sale.to_string(),
    )
    .await;
    problem(&r, 403, "forbidden");
    problem(
        &shop.get("/api/inventory/flash-sales/nope/stream").await,
        404,
        "not-found",
    );
}
