//! `order-analytics`, as `spin.toml` has it: order events written straight
//! to the outbox with chosen times (so the minute windows and the late
//! event are exact), the read model and the windows checked through the
//! HTTP API, then redelivered, replayed from a later point, and rebuilt
//! from scratch by `bv events replay --forget-processed`: the same answers
//! every time.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio_postgres::Client;

use crate::auth_support::{self, admin};
use crate::harness::*;
use crate::pg_support::*;
use crate::repo_manifest::RepoManifest;

const SUBSCRIPTION: &str = "order-analytics";
const PLACED: &str = "com.bitvelocity.order.placed.v1";
const CONFIRMED: &str = "com.bitvelocity.order.confirmed.v1";
const PAID: &str = "com.bitvelocity.order.paid.v1";
const FULFILLED: &str = "com.bitvelocity.order.fulfilled.v1";
const CANCELLED: &str = "com.bitvelocity.order.cancelled.v1";
const FAILED: &str = "com.bitvelocity.order.failed.v1";

const MUG: &str = "5eed0000-0000-4000-8000-000000000001";
const TEA: &str = "5eed0000-0000-4000-8000-000000000005";
const LAMP: &str = "5eed0000-0000-4000-8000-000000000007";

fn manifest() -> String {
    RepoManifest::load()
        .only("analytics", &["order-analytics"])
        .without_rate_limits()
        .trigger_setting("postgres", "poll_interval_ms", 100)
        .render()
}

/// Writes one order event to the outbox, in a transaction of its own (so
/// the outbox order is the order of the calls), with `time` as its
/// CloudEvents time.
async fn publish(client: &Client, n: u32, ty: &str, time: &str, data: Value) {
    let id = format!("analytics-it-{n}");
    let order = data["orderId"].as_str().unwrap().to_string();
    let event = json!({
        "specversion": "1.0", "id": id, "source": "/orders", "type": ty,
        "subject": order, "time": time, "datacontenttype": "application/json",
        "data": data,
    });
    client
        .execute(
            "INSERT INTO bv_events.outbox (id, source, type, subject, time, event)
             VALUES ($1, '/orders', $2, $3, $4::text::timestamptz, $5::text::jsonb)",
            &[&id, &ty, &order, &time, &event.to_string()],
        )
        .await
        .unwrap();
}

fn line(product: &str, sku: &str, quantity: u32, price: u32, currency: &str) -> Value {
    json!({
        "productId": product, "sku": sku, "quantity": quantity,
        "unitPrice": { "amount": price, "currency": currency }
    })
}

fn placed(order: &str, customer: &str, items: Vec<Value>) -> Value {
    let currency = items[0]["unitPrice"]["currency"].clone();
    let total: u64 = items
        .iter()
        .map(|i| i["quantity"].as_u64().unwrap() * i["unitPrice"]["amount"].as_u64().unwrap())
        .sum();
    json!({
        "orderId": order, "customerId": customer, "items": items,
        "total": { "amount": total, "currency": currency }
    })
}

fn paid(order: &str, customer: &str, amount: u32, currency: &str) -> Value {
    json!({
        "orderId": order, "customerId": customer, "paymentId": order,
        "total": { "amount": amount, "currency": currency }
    })
}

/// The stream of the test, in outbox order: four customers' orders over
/// ten minutes of event time. `o5` comes after an event at 10:09:00, so
/// the watermark (latest time − 5 minutes) is 10:04:00 and its minute
/// (10:03) is closed: late. `o6` (10:05:20) is out of order too, but
/// within the allowed lateness.
async fn publish_stream(client: &Client) -> u32 {
    let eur = "EUR";
    let events = [
        (
            PLACED,
            "2026-03-01T10:00:10.250Z",
            placed(
                "o1",
                "alice",
                vec![
                    line(MUG, "MUG-01", 2, 1299, eur),
                    line(TEA, "TEA-05", 1, 450, eur),
                ],
            ),
        ),
        (
            CONFIRMED,
            "2026-03-01T10:00:11Z",
            json!({"orderId": "o1", "customerId": "alice", "reservationId": "o1"}),
        ),
        (PAID, "2026-03-01T10:00:12Z", paid("o1", "alice", 3048, eur)),
        (
            PLACED,
            "2026-03-01T10:01:30Z",
            placed("o2", "bob", vec![line(MUG, "MUG-01", 1, 1299, eur)]),
        ),
        (
            PLACED,
            "2026-03-01T10:02:05Z",
            placed("o3", "alice", vec![line(LAMP, "LAMP-07", 1, 2500, "USD")]),
        ),
        (
            FAILED,
            "2026-03-01T10:02:06Z",
            json!({"orderId": "o2", "customerId": "bob", "reason": "insufficient-stock", "step": "reserve-stock"}),
        ),
        (
            CONFIRMED,
            "2026-03-01T10:02:07Z",
            json!({"orderId": "o3", "customerId": "alice", "reservationId": "o3"}),
        ),
        (
            PAID,
            "2026-03-01T10:02:08Z",
            paid("o3", "alice", 2500, "USD"),
        ),
        (
            PLACED,
            "2026-03-01T10:09:00Z",
            placed("o4", "carol", vec![line(TEA, "TEA-05", 3, 450, eur)]),
        ),
        (
            PLACED,
            "2026-03-01T10:03:30Z",
            placed("o5", "bob", vec![line(MUG, "MUG-01", 5, 1299, eur)]),
        ),
        (
            PLACED,
            "2026-03-01T10:05:20Z",
            placed("o6", "carol", vec![line(TEA, "TEA-05", 1, 450, eur)]),
        ),
        (
            FULFILLED,
            "2026-03-01T10:10:00Z",
            json!({"orderId": "o1", "customerId": "alice"}),
        ),
        (
            CANCELLED,
            "2026-03-01T10:10:30Z",
            json!({"orderId": "o4", "customerId": "carol", "reason": "customer-request", "previousStatus": "PENDING"}),
        ),
    ];
    let mut n = 0;
    for (ty, time, data) in events {
        n += 1;
        publish(client, n, ty, time, data).await;
    }
    n
}

async fn scalar(client: &Client, sql: &str) -> i64 {
    match client.query_one(sql, &[]).await {
        Ok(row) => row.get(0),
        Err(_) => -1, // the table does not exist yet
    }
}

/// Waits until the projections have applied `events` events and the
/// subscription has moved past every event.
async fn caught_up(client: &Client, events: i64, app: &TestApp) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let applied = scalar(client, "SELECT events FROM analytics.stream").await;
        let lag = scalar(
            client,
            "SELECT count(*) FROM bv_events.outbox o, bv_events.subscriptions s
             WHERE s.name = 'order-analytics' AND (o.tx, o.seq) > (s.position_tx, s.position_seq)",
        )
        .await;
        if applied == events && lag == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the projections applied {applied} of {events} events (lag {lag}):\n{}",
            app.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `bv events replay order-analytics <args>`; it returns once the
/// subscription has caught up.
async fn replay(db: &TestDb, args: &[&str]) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_bv"));
    cmd.args(["events", "replay", SUBSCRIPTION])
        .args(args)
        .args(["--database", &db.url()])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = tokio::time::timeout(
        Duration::from_secs(90),
        tokio::task::spawn_blocking(move || cmd.output().expect("running bv events replay")),
    )
    .await
    .expect("bv events replay did not finish")
    .unwrap();
    assert!(
        out.status.success(),
        "bv events replay {args:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn get(app: &TestApp, path: &str, auth: (&str, &str)) -> (u16, Value) {
    let reply = request(app.addr, "GET", path, &[auth], "").await;
    (reply.status, reply.json())
}

const REVENUE: &str = "/api/analytics/revenue?from=2026-03-01T10:00:00Z&to=2026-03-01T10:15:00Z";
const TOP_AT_0930: &str = "/api/analytics/top-products?at=2026-03-01T10:09:30Z";
const TOP_AT_1659: &str = "/api/analytics/top-products?at=2026-03-01T10:16:59Z&limit=1";

/// Every answer the test compares across rebuilds.
async fn answers(app: &TestApp) -> Vec<Value> {
    let mut out = Vec::new();
    for path in [
        "/api/analytics/customers/alice/orders",
        "/api/analytics/customers/bob/orders",
        "/api/analytics/customers/carol/orders",
        REVENUE,
        TOP_AT_0930,
        TOP_AT_1659,
    ] {
        let (status, body) = get(app, path, admin()).await;
        assert_eq!(status, 200, "GET {path}: {body}\n{}", app.log());
        out.push(body);
    }
    out
}

fn money(amount: u64, currency: &str) -> Value {
    json!({ "amount": amount, "currency": currency })
}

/// The answers the stream must give.
fn check(answers: &[Value]) {
    let alice = &answers[0];
    assert_eq!(
        alice,
        &json!({
            "customerId": "alice",
            "orders": [
                { "orderId": "o3", "status": "PAID", "total": money(2500, "USD"), "itemCount": 1,
                  "placedAt": "2026-03-01T10:02:05.000Z", "updatedAt": "2026-03-01T10:02:08.000Z" },
                { "orderId": "o1", "status": "FULFILLED", "total": money(3048, "EUR"), "itemCount": 3,
                  "placedAt": "2026-03-01T10:00:10.250Z", "updatedAt": "2026-03-01T10:10:00.000Z" },
            ]
        })
    );
    // The late order is in the read model all the same.
    let bob: Vec<(&str, &str, &Value)> = answers[1]["orders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["orderId"].as_str().unwrap(),
                o["status"].as_str().unwrap(),
                &o["total"],
            )
        })
        .collect();
    assert_eq!(
        bob,
        [
            ("o5", "PENDING", &money(6495, "EUR")),
            ("o2", "FAILED", &money(1299, "EUR"))
        ]
    );
    let carol: Vec<(&str, &str)> = answers[2]["orders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["orderId"].as_str().unwrap(),
                o["status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(carol, [("o4", "CANCELLED"), ("o6", "PENDING")]);

    let window = |start: &str,
                  end: &str,
                  currency: &str,
                  orders: u64,
                  value: u64,
                  paid: u64,
                  revenue: u64| {
        json!({
            "start": start, "end": end, "currency": currency, "orders": orders,
            "orderValue": money(value, currency), "paidOrders": paid,
            "revenue": money(revenue, currency),
        })
    };
    assert_eq!(
        answers[3],
        json!({
            "from": "2026-03-01T10:00:00.000Z",
            "to": "2026-03-01T10:15:00.000Z",
            "windows": [
                window("2026-03-01T10:00:00.000Z", "2026-03-01T10:01:00.000Z", "EUR", 1, 3048, 1, 3048),
                window("2026-03-01T10:01:00.000Z", "2026-03-01T10:02:00.000Z", "EUR", 1, 1299, 0, 0),
                window("2026-03-01T10:02:00.000Z", "2026-03-01T10:03:00.000Z", "USD", 1, 2500, 1, 2500),
                // 10:03 (o5) came too late: not here.
                window("2026-03-01T10:05:00.000Z", "2026-03-01T10:06:00.000Z", "EUR", 1, 450, 0, 0),
                window("2026-03-01T10:09:00.000Z", "2026-03-01T10:10:00.000Z", "EUR", 1, 1350, 0, 0),
            ],
            "lateEvents": 1,
            "watermark": "2026-03-01T10:05:30.000Z",
            "allowedLatenessSeconds": 300,
        })
    );
    let product = |id: &str, sku: &str, quantity: u64, orders: u64| json!({ "productId": id, "sku": sku, "quantity": quantity, "orders": orders });
    assert_eq!(
        answers[4],
        json!({
            "at": "2026-03-01T10:09:30.000Z",
            "windowStart": "2026-03-01T09:55:00.000Z",
            "windowEnd": "2026-03-01T10:10:00.000Z",
            "products": [
                product(TEA, "TEA-05", 5, 3),
                product(MUG, "MUG-01", 3, 2),
                product(LAMP, "LAMP-07", 1, 1),
            ],
            "lateEvents": 1,
            "watermark": "2026-03-01T10:05:30.000Z",
            "allowedLatenessSeconds": 300,
        })
    );
    // Fifteen minutes on, 10:00 and 10:01 have left the window.
    assert_eq!(answers[5]["windowStart"], "2026-03-01T10:02:00.000Z");
    assert_eq!(answers[5]["windowEnd"], "2026-03-01T10:17:00.000Z");
    assert_eq!(
        answers[5]["products"],
        json!([product(TEA, "TEA-05", 4, 2)])
    );
}

#[tokio::test]
async fn projections_are_exact_and_rebuilt_by_replay_to_the_same_answers() {
    let db = TestDb::new("analytics").await;
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
    let client = db.client().await;
    // The trigger creates the outbox and the subscription as it starts.
    let deadline = Instant::now() + Duration::from_secs(30);
    while scalar(
        &client,
        "SELECT count(*) FROM bv_events.subscriptions WHERE name = 'order-analytics'",
    )
    .await
        != 1
    {
        assert!(Instant::now() < deadline, "no subscription:\n{}", app.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let events = i64::from(publish_stream(&client).await);
    caught_up(&client, events, &app).await;
    let first = answers(&app).await;
    check(&first);
    let late: Vec<(String, String)> = client
        .query("SELECT order_id, to_char(watermark AT TIME ZONE 'UTC', 'HH24:MI:SS') FROM analytics.late_events", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(late, [("o5".to_string(), "10:04:00".to_string())]);

    // Every event delivered again: the claims make them no-ops.
    replay(&db, &["--from-offset", "0"]).await;
    caught_up(&client, events, &app).await;
    assert_eq!(
        answers(&app).await,
        first,
        "a redelivery changed the answers"
    );

    // A replay from the middle of the log, claims forgotten: the events
    // are in the projections already, nothing changes.
    let middle: i64 = client
        .query_one(
            "SELECT seq FROM bv_events.outbox WHERE id = 'analytics-it-5'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    replay(
        &db,
        &["--from-offset", &middle.to_string(), "--forget-processed"],
    )
    .await;
    caught_up(&client, events, &app).await;
    assert_eq!(
        answers(&app).await,
        first,
        "a partial replay changed the answers"
    );

    // The projections damaged, then rebuilt from scratch by replay.
    client
        .batch_execute(
            "UPDATE analytics.minute_totals SET revenue = 0;
             DELETE FROM analytics.orders_by_customer WHERE order_id = 'o2';
             DELETE FROM analytics.late_events;
             UPDATE analytics.minute_products SET quantity = 1000 WHERE product_id LIKE '%7'",
        )
        .await
        .unwrap();
    assert_ne!(answers(&app).await, first);
    replay(&db, &["--from-offset", "0", "--forget-processed"]).await;
    caught_up(&client, events, &app).await;
    let rebuilt = answers(&app).await;
    check(&rebuilt);
    assert_eq!(rebuilt, first, "the rebuild gave other answers");
    assert!(
        app.log().contains("rebuilding the projections"),
        "{}",
        app.log()
    );
    assert_eq!(
        scalar(
            &client,
            "SELECT count(*) FROM bv_events.processed WHERE consumer = 'order-analytics'"
        )
        .await,
        events
    );
    assert_eq!(
        scalar(&client, "SELECT count(*) FROM bv_events.dead_letters").await,
        0
    );
}

#[tokio::test]
async fn callers_and_parameters_are_checked() {
    let db = TestDb::new("analytics_api").await;
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
    let alice = auth_support::customer("alice");
    let bob = auth_support::customer("bob");

    // A customer sees their own orders, not another's.
    let (status, body) = get(&app, "/api/analytics/customers/alice/orders", alice).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({ "customerId": "alice", "orders": [] }));
    let (status, body) = get(&app, "/api/analytics/customers/alice/orders", bob).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["type"], "urn:bitvelocity:problem:forbidden");
    // The windows are an administrator's.
    for path in ["/api/analytics/revenue", "/api/analytics/top-products"] {
        let (status, body) = get(&app, path, alice).await;
        assert_eq!(status, 403, "{path}: {body}");
        let reply = app.get(path).await;
        assert_eq!(reply.status, 401, "{path}: {}", reply.text());
        let (status, body) = get(&app, path, admin()).await;
        assert_eq!(status, 200, "{path}: {body}");
        assert_eq!(body["lateEvents"], 0);
        assert_eq!(body["watermark"], Value::Null);
    }

    // Bad parameters: 422 naming the parameter.
    for (path, parameter) in [
        ("/api/analytics/revenue?from=yesterday", "from"),
        (
            "/api/analytics/revenue?from=2026-03-01T10:00:00Z&to=2026-03-01T09:00:00Z",
            "from",
        ),
        (
            "/api/analytics/revenue?from=2026-03-01T10:00:00Z&to=2026-03-03T10:00:00Z",
            "from",
        ),
        ("/api/analytics/revenue?to=2026-03-01", "to"),
        ("/api/analytics/revenue?since=2026-03-01T10:00:00Z", "since"),
        ("/api/analytics/top-products?limit=0", "limit"),
        ("/api/analytics/top-products?limit=5&limit=6", "limit"),
        ("/api/analytics/top-products?at=1969-07-20T20:17:40Z", "at"),
        ("/api/analytics/customers/alice/orders?limit=many", "limit"),
    ] {
        let reply = request(app.addr, "GET", path, &[admin()], "").await;
        assert_eq!(reply.status, 422, "{path}: {}", reply.text());
        assert_eq!(
            reply.headers["content-type"], "application/problem+json",
            "{path}"
        );
        let body = reply.json();
        assert_eq!(
            body["type"], "urn:bitvelocity:problem:invalid-parameter",
            "{path}"
        );
        assert_eq!(body["parameter"], parameter, "{path}: {body}");
    }
    let reply = request(app.addr, "POST", "/api/analytics/revenue", &[admin()], "").await;
    assert_eq!(reply.status, 405);
    assert_eq!(reply.headers["allow"], "GET, HEAD");
    let reply = request(app.addr, "GET", "/api/analytics/nothing", &[admin()], "").await;
    assert_eq!(reply.status, 404);
}
