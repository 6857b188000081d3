//! Durable events end to end: the `event-producer` component publishes
//! through the transactional outbox, the Postgres trigger delivers to the
//! idempotent `event-consumer` component, all against the real PostgreSQL.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::*;
use crate::pg_support::*;

/// The producer on `/products`, the consumer subscribed to product events,
/// plus `extra` appended (more trigger entries, fan-out…).
fn manifest(trigger_extra: &str, app_extra: &str) -> String {
    format!(
        r#"spin_manifest_version = 2
[application]
name = "events"
[variables]
db_url = {{ required = true }}

[application.trigger.postgres]
address = "{{{{ db_url }}}}"
poll_interval_ms = 200
{app_extra}

[[trigger.http]]
route = "/products"
component = "producer"

[[trigger.postgres]]
component = "consumer"
events = ["com.bitvelocity.product.*"]
max_attempts = 3
retry_initial_ms = 100
retry_max_ms = 400
{trigger_extra}

[component.producer]
source = "{{wasm:event-producer}}"
allowed_outbound_hosts = ["postgres://127.0.0.1:5432"]
[component.producer.variables]
db_url = "{{{{ db_url }}}}"

[component.consumer]
source = "{{wasm:event-consumer}}"
allowed_outbound_hosts = ["postgres://127.0.0.1:5432"]
[component.consumer.variables]
db_url = "{{{{ db_url }}}}"
"#
    )
}

async fn start(db: &TestDb, manifest: &str) -> TestApp {
    spawn_app_with(
        manifest,
        Spawn {
            env: vec![("SPIN_VARIABLE_DB_URL".into(), db.url())],
            ..Default::default()
        },
    )
    .await
}

fn product(id: &str, name: &str) -> Value {
    json!({
        "productId": id,
        "sku": format!("SKU-{id}"),
        "name": name,
        "price": { "amount": 1299, "currency": "EUR" }
    })
}

async fn produce(app: &TestApp, body: Value) -> Reply {
    app.send("POST", "/products", body.to_string()).await
}

async fn count(db: &TestDb, sql: &str) -> i64 {
    let client = db.client().await;
    match client.query_one(sql, &[]).await {
        Ok(row) => row.get(0),
        // The consumer creates its tables on first use.
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) => 0,
        Err(e) => panic!("{sql}: {e}"),
    }
}

/// Waits until `sql` (a count) reaches `want`, up to 30 s.
async fn wait_count(db: &TestDb, app: &TestApp, sql: &str, want: i64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let n = count(db, sql).await;
        if n == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "`{sql}` stayed at {n}, expected {want}\nbv log:\n{}",
            app.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn committed_events_are_delivered_and_rolled_back_ones_never_exist() {
    let db = TestDb::new("ev_outbox").await;
    let app = start(&db, &manifest("", "")).await;
    let r = produce(
        &app,
        json!({ "products": [product("p1", "Mug"), product("p2", "Cup")], "updates": 2 }),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["published"], 6, "{}", r.text());
    let r = produce(
        &app,
        json!({ "products": [product("p3", "Plate")], "rollback": true }),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    wait_count(&db, &app, "SELECT count(*) FROM seen", 6).await;
    // Give a rolled-back event every chance to show up.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(count(&db, "SELECT count(*) FROM seen").await, 6);
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM bv_events.outbox WHERE subject = 'p3'"
        )
        .await,
        0
    );
    assert_eq!(
        count(&db, "SELECT count(*) FROM products WHERE product_id = 'p3'").await,
        0
    );
    let client = db.client().await;
    let rows = client
        .query(
            "SELECT product_id, updates FROM product_view ORDER BY product_id",
            &[],
        )
        .await
        .unwrap();
    let view: Vec<(String, i32)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(view, vec![("p1".into(), 2), ("p2".into(), 2)]);
    // The subscription's position and counters are in Postgres.
    let row = client
        .query_one(
            "SELECT delivered, component FROM bv_events.subscriptions WHERE name = 'consumer'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 6);
    assert_eq!(row.get::<_, String>(1), "consumer");
    let metrics = app.admin_get("/metrics").await.text();
    assert!(
        metrics.contains(r#"events_deliveries_total{subscription="consumer",outcome="ok"} 6"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn an_event_that_breaks_its_schema_is_refused_and_nothing_is_written() {
    let db = TestDb::new("ev_schema").await;
    let app = start(&db, &manifest("", "")).await;
    let mut bad = product("p1", "Mug");
    bad["price"]["amount"] = json!(-5);
    let r = produce(&app, json!({ "products": [product("p0", "Fine"), bad] })).await;
    assert_eq!(r.status, 422, "{}", r.text());
    assert_eq!(
        r.headers["content-type"],
        "application/problem+json",
        "{}",
        r.text()
    );
    let detail = r.json()["detail"].as_str().unwrap_or_default().to_string();
    assert!(detail.contains("data.price.amount"), "{detail}");
    assert_eq!(count(&db, "SELECT count(*) FROM bv_events.outbox").await, 0);
    assert_eq!(count(&db, "SELECT count(*) FROM products").await, 0);
}

#[tokio::test]
async fn a_redelivered_event_has_exactly_one_effect() {
    let db = TestDb::new("ev_dup").await;
    let app = start(&db, &manifest("", "")).await;
    // `dup-`: the consumer commits its effects, then fails the first
    // attempt, as if it crashed before acknowledging.
    let r = produce(&app, json!({ "products": [product("p1", "dup-mug")] })).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let id = r.json()["ids"][0].as_str().unwrap().to_string();
    wait_count(
        &db,
        &app,
        &format!("SELECT count(*) FROM deliveries WHERE event_id = '{id}'"),
        2,
    )
    .await;
    // Both deliveries happened; only one had an effect.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        count(
            &db,
            &format!("SELECT count(*) FROM seen WHERE event_id = '{id}'")
        )
        .await,
        1
    );
    assert_eq!(
        count(&db, "SELECT count(*) FROM bv_events.dead_letters").await,
        0
    );
}

#[tokio::test]
async fn failures_are_retried_with_growing_delays_then_dead_lettered() {
    let db = TestDb::new("ev_dlq").await;
    let app = start(&db, &manifest("", "")).await;
    let r = produce(
        &app,
        json!({ "products": [product("p1", "flaky-mug"), product("p2", "fail-cup"),
                              product("p3", "reject-plate"), product("p4", "bowl")] }),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let ids: Vec<String> = r.json()["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    // The events after the failing ones are still delivered; the failing
    // ones end as dead letters after their attempts.
    wait_count(
        &db,
        &app,
        "SELECT count(*) FROM seen WHERE subject = 'p4'",
        1,
    )
    .await;
    wait_count(
        &db,
        &app,
        "SELECT count(*) FROM bv_events.dead_letters WHERE subscription = 'consumer'",
        2,
    )
    .await;
    wait_count(&db, &app, "SELECT count(*) FROM seen", 2).await;
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM seen WHERE subject IN ('p1', 'p4')"
        )
        .await,
        2,
        "flaky and bowl"
    );
    let client = db.client().await;
    let attempts = |id: &str| {
        let id = id.to_string();
        let client = &client;
        async move {
            client
                .query(
                    "SELECT attempt, at FROM deliveries WHERE event_id = $1 ORDER BY attempt",
                    &[&id],
                )
                .await
                .unwrap()
                .iter()
                .map(|r| {
                    (
                        r.get::<_, i32>(0),
                        r.get::<_, chrono::DateTime<chrono::Utc>>(1),
                    )
                })
                .collect::<Vec<_>>()
        }
    };
    // flaky: failed once, handled on the second attempt.
    assert_eq!(attempts(&ids[0]).await.len(), 2);
    // fail: max_attempts = 3, with delays of at least half the ceiling
    // (100 ms, then 200 ms).
    let fail = attempts(&ids[1]).await;
    assert_eq!(
        fail.iter().map(|a| a.0).collect::<Vec<_>>(),
        vec![1, 2, 3],
        "{fail:?}"
    );
    let gap1 = (fail[1].1 - fail[0].1).num_milliseconds();
    let gap2 = (fail[2].1 - fail[1].1).num_milliseconds();
    assert!(gap1 >= 50, "first retry after {gap1} ms");
    assert!(gap2 >= 100, "second retry after {gap2} ms");
    // reject: one attempt, parked at once.
    assert_eq!(attempts(&ids[2]).await.len(), 1);
    let rows = client
        .query(
            "SELECT event_id, attempts, last_error FROM bv_events.dead_letters
             WHERE subscription = 'consumer' ORDER BY seq",
            &[],
        )
        .await
        .unwrap();
    let dead: Vec<(String, i32, String)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(dead.len(), 2, "{dead:?}");
    assert_eq!((dead[0].0.as_str(), dead[0].1), (ids[1].as_str(), 3));
    assert!(!dead[0].2.is_empty());
    assert_eq!((dead[1].0.as_str(), dead[1].1), (ids[2].as_str(), 1));
    let metrics = app.admin_get("/metrics").await.text();
    assert!(
        metrics.contains(r#"events_dead_letters_total{subscription="consumer"} 2"#),
        "{metrics}"
    );

    // A retried dead letter that still fails is parked again, with its
    // attempts added up.
    let bv = env!("CARGO_BIN_EXE_bv");
    let out = std::process::Command::new(bv)
        .args([
            "events",
            "dead-letters",
            "retry",
            "--all",
            "--database",
            &db.url(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_count(
        &db,
        &app,
        &format!(
            "SELECT count(*) FROM deliveries WHERE event_id = '{}'",
            ids[1]
        ),
        6,
    )
    .await;
    wait_count(
        &db,
        &app,
        "SELECT count(*) FROM bv_events.dead_letters WHERE attempts = 6 AND NOT retry_requested",
        1,
    )
    .await;
}

#[tokio::test]
async fn events_of_one_subject_arrive_in_the_order_they_were_written() {
    let db = TestDb::new("ev_order").await;
    let app = start(&db, &manifest("", "")).await;
    // Several producers at once, each writing a created event and five
    // updates per product in one transaction; then more updates later.
    let mut tasks = Vec::new();
    for batch in 0..6 {
        let addr = app.addr;
        tasks.push(tokio::spawn(async move {
            let products: Vec<Value> = (0..3)
                .map(|i| product(&format!("b{batch}-{i}"), &format!("item {batch}-{i}")))
                .collect();
            request(
                addr,
                "POST",
                "/products",
                &[],
                json!({ "products": products, "updates": 5 }).to_string(),
            )
            .await
        }));
    }
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!(r.status, 201, "{}", r.text());
    }
    wait_count(&db, &app, "SELECT count(*) FROM seen", 6 * 3 * 6).await;
    let client = db.client().await;
    let rows = client
        .query(
            "SELECT s.subject, o.seq FROM seen s JOIN bv_events.outbox o ON o.id = s.event_id
             ORDER BY s.n",
            &[],
        )
        .await
        .unwrap();
    let mut per_subject: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for r in rows {
        per_subject.entry(r.get(0)).or_default().push(r.get(1));
    }
    assert_eq!(per_subject.len(), 18);
    for (subject, seqs) in per_subject {
        let mut sorted = seqs.clone();
        sorted.sort();
        assert_eq!(seqs, sorted, "subject {subject} applied out of order");
        assert_eq!(seqs.len(), 6);
    }
}

/// Under the `reuse` policy (the default) an instance whose handler
/// succeeded takes the next events, up to `instance_max_requests`; one whose
/// handler failed is never used again. Under `strict`, one per event.
#[tokio::test]
async fn instances_take_many_events_but_none_after_a_failure() {
    let mut products: Vec<Value> = (0..30)
        .map(|i| product(&format!("r{i}"), &format!("item {i}")))
        .collect();
    products.push(product("rf", "fail-cup"));
    products.push(product("rl", "flaky-lamp"));
    let body = json!({ "products": products });
    let reuse = format!(
        "{}\n[component.consumer.tool.bv]\ninstance_max_requests = 5\n",
        manifest("", "")
    );
    let db = TestDb::new("ev_reuse").await;
    let app = start(&db, &reuse).await;
    assert_eq!(produce(&app, body.clone()).await.status, 201);
    wait_count(&db, &app, "SELECT count(*) FROM seen", 31).await;
    wait_count(&db, &app, "SELECT count(*) FROM bv_events.dead_letters", 1).await;
    let deliveries = count(&db, "SELECT count(*) FROM deliveries").await;
    let instances = count(&db, "SELECT count(DISTINCT instance) FROM deliveries").await;
    assert_eq!(deliveries, 30 + 3 + 2, "each delivery is one row");
    assert!(
        instances < deliveries / 2,
        "{instances} instances for {deliveries} deliveries: not reused"
    );
    let most = count(
        &db,
        "SELECT max(n) FROM (SELECT count(*) AS n FROM deliveries GROUP BY instance) t",
    )
    .await;
    assert!(
        (2..=5).contains(&most),
        "an instance took {most} events (instance_max_requests = 5)"
    );
    let failed = "FROM deliveries d JOIN bv_events.outbox o ON o.id = d.event_id
                  WHERE (o.subject = 'rf' OR (o.subject = 'rl' AND d.attempt = 1))";
    assert_eq!(count(&db, &format!("SELECT count(*) {failed}")).await, 4);
    let used_after_failing = count(
        &db,
        &format!(
            "SELECT count(*) {} AND EXISTS (SELECT 1 FROM deliveries later
                 WHERE later.instance = d.instance AND later.at > d.at)",
            failed
        ),
    )
    .await;
    assert_eq!(
        used_after_failing, 0,
        "an instance whose handler failed took another event"
    );
    drop(app);

    let strict = format!(
        "{}\n[component.consumer.tool.bv]\ninstance_policy = \"strict\"\n",
        manifest("", "")
    );
    let db = TestDb::new("ev_strict").await;
    let app = start(&db, &strict).await;
    assert_eq!(produce(&app, body).await.status, 201);
    wait_count(&db, &app, "SELECT count(*) FROM seen", 31).await;
    wait_count(&db, &app, "SELECT count(*) FROM bv_events.dead_letters", 1).await;
    assert_eq!(
        count(&db, "SELECT count(DISTINCT instance) FROM deliveries").await,
        count(&db, "SELECT count(*) FROM deliveries").await,
        "strict: a fresh instance per event"
    );
}

/// Pairs of events whose handling overlapped: one's delivery started
/// (its first `deliveries` row) before the other was applied (`seen.at`),
/// both ways.
async fn overlapping_pairs(db: &TestDb) -> i64 {
    count(
        db,
        "WITH span AS (
             SELECT s.event_id, min(d.at) AS started, s.at AS ended
             FROM seen s JOIN deliveries d USING (event_id) GROUP BY s.event_id, s.at)
         SELECT count(*) FROM span a JOIN span b ON a.event_id < b.event_id
         WHERE a.started < b.ended AND b.started < a.ended",
    )
    .await
}

#[tokio::test]
async fn events_of_different_subjects_are_handled_side_by_side_each_subject_in_order() {
    // Four products whose handler takes 200 ms each, with two updates
    // each: by default up to 4 subjects are in flight at once.
    let slow: Vec<Value> = (0..4)
        .map(|i| product(&format!("s{i}"), &format!("slow-{i}")))
        .collect();
    let body = json!({ "products": slow, "updates": 2 });
    let db = TestDb::new("ev_parallel").await;
    let app = start(&db, &manifest("", "")).await;
    assert_eq!(produce(&app, body.clone()).await.status, 201);
    wait_count(&db, &app, "SELECT count(*) FROM seen", 12).await;
    let overlapping = overlapping_pairs(&db).await;
    assert!(overlapping > 0, "no two events were handled at once");
    let out_of_order = count(
        &db,
        "SELECT count(*) FROM seen a JOIN seen b ON a.subject = b.subject
         JOIN bv_events.outbox oa ON oa.id = a.event_id JOIN bv_events.outbox ob ON ob.id = b.event_id
         WHERE a.n < b.n AND oa.seq > ob.seq",
    )
    .await;
    assert_eq!(
        out_of_order, 0,
        "a subject's events were applied out of order"
    );
    assert_eq!(
        count(
            &db,
            "SELECT updates::bigint FROM product_view WHERE product_id = 's3'"
        )
        .await,
        2
    );
    drop(app);

    // `max_in_flight = 1`: one event at a time, in outbox order.
    let db = TestDb::new("ev_serial").await;
    let app = start(&db, &manifest("max_in_flight = 1", "")).await;
    assert_eq!(produce(&app, body).await.status, 201);
    wait_count(&db, &app, "SELECT count(*) FROM seen", 12).await;
    assert_eq!(overlapping_pairs(&db).await, 0, "events overlapped");
    let out_of_order = count(
        &db,
        "SELECT count(*) FROM seen a JOIN seen b ON a.n < b.n
         JOIN bv_events.outbox oa ON oa.id = a.event_id JOIN bv_events.outbox ob ON ob.id = b.event_id
         WHERE oa.seq > ob.seq",
    )
    .await;
    assert_eq!(out_of_order, 0, "events were applied out of outbox order");
}

/// Kills `bv` (SIGKILL, no draining) while events flow, restarts it, and
/// checks that every committed event had its effect exactly once.
#[tokio::test]
async fn kill_and_restart_mid_stream_loses_and_duplicates_nothing() {
    let db = TestDb::new("ev_kill").await;
    let manifest = manifest("", "");
    let mut app = start(&db, &manifest).await;
    let mut published = 0i64;
    for batch in 0..20 {
        let products: Vec<Value> = (0..5)
            .map(|i| {
                // The first events are slow, so the kill lands mid-stream.
                let prefix = if batch < 2 { "slow" } else { "item" };
                product(&format!("k{batch}-{i}"), &format!("{prefix}-{batch}-{i}"))
            })
            .collect();
        let r = produce(&app, json!({ "products": products, "updates": 1 })).await;
        assert_eq!(r.status, 201, "{}", r.text());
        published += r.json()["published"].as_i64().unwrap();
    }
    // Let part of the stream through, then kill.
    let deadline = Instant::now() + Duration::from_secs(30);
    while count(&db, "SELECT count(*) FROM seen").await < 5 {
        assert!(
            Instant::now() < deadline,
            "nothing delivered:\n{}",
            app.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    app.kill();
    let seen_at_kill = count(&db, "SELECT count(*) FROM seen").await;
    assert!(seen_at_kill < published, "the stream ended before the kill");
    let app = start(&db, &manifest).await;
    wait_count(&db, &app, "SELECT count(*) FROM seen", published).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(count(&db, "SELECT count(*) FROM seen").await, published);
    assert_eq!(
        count(&db, "SELECT count(DISTINCT event_id) FROM seen").await,
        published
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM bv_events.outbox o WHERE NOT EXISTS
             (SELECT 1 FROM seen s WHERE s.event_id = o.id)"
        )
        .await,
        0
    );
}

#[tokio::test]
async fn replay_rebuilds_a_read_model_identical_to_the_original() {
    let db = TestDb::new("ev_replay").await;
    let app = start(&db, &manifest("", "")).await;
    for batch in 0..4 {
        let products: Vec<Value> = (0..5)
            .map(|i| product(&format!("r{batch}-{i}"), &format!("item {i}")))
            .collect();
        let r = produce(&app, json!({ "products": products, "updates": 3 })).await;
        assert_eq!(r.status, 201, "{}", r.text());
    }
    wait_count(&db, &app, "SELECT count(*) FROM seen", 80).await;
    let snapshot = read_model(&db).await;
    assert_eq!(snapshot.len(), 20);
    // Lose the read model, then rebuild it from the log.
    db.client()
        .await
        .batch_execute("TRUNCATE product_view; TRUNCATE seen;")
        .await
        .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_bv"))
        .args([
            "events",
            "replay",
            "consumer",
            "--from-offset",
            "0",
            "--forget-processed",
            "--database",
            &db.url(),
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("80"),
        "progress should name the events: {stderr}"
    );
    wait_count(&db, &app, "SELECT count(*) FROM seen", 80).await;
    assert_eq!(read_model(&db).await, snapshot);
}

async fn read_model(db: &TestDb) -> BTreeSet<(String, String, String, i64, String, i32)> {
    db.client()
        .await
        .query(
            "SELECT product_id, name, sku, price_amount, currency, updates FROM product_view",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5)))
        .collect()
}

#[tokio::test]
async fn fan_out_mirrors_events_to_redis_and_mqtt() {
    let db = TestDb::new("ev_fanout").await;
    let channel = format!("bv-fanout-{}", std::process::id());
    let topic = format!("bv-fanout-{}", std::process::id());
    let app_extra = format!(
        r#"[[application.trigger.postgres.fanout]]
name = "cache"
events = ["com.bitvelocity.product.updated.*"]
redis = {{ address = "redis://127.0.0.1:6379", channel = "{channel}.{{subject}}" }}
[[application.trigger.postgres.fanout]]
name = "live"
events = ["com.bitvelocity.product.*"]
mqtt = {{ address = "mqtt://127.0.0.1:1883", topic = "{topic}/{{type}}", qos = 1 }}
"#
    );
    let app = start(&db, &manifest("", &app_extra)).await;
    wait_for_log(&app, "delivering subscription `fanout:live`").await;
    wait_for_log(&app, "delivering subscription `fanout:cache`").await;

    let redis = ::redis::Client::open("redis://127.0.0.1:6379").unwrap();
    let mut pubsub = redis.get_async_pubsub().await.unwrap();
    pubsub.psubscribe(format!("{channel}.*")).await.unwrap();
    let created = crate::mqtt::support::Subscriber::new(&format!(
        "{topic}/com.bitvelocity.product.created.v1"
    ))
    .await;
    let updated = crate::mqtt::support::Subscriber::new(&format!(
        "{topic}/com.bitvelocity.product.updated.v1"
    ))
    .await;

    let r = produce(
        &app,
        json!({ "products": [product("f1", "Mug")], "updates": 1 }),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());

    use futures::StreamExt as _;
    let msg = tokio::time::timeout(Duration::from_secs(10), pubsub.on_message().next())
        .await
        .expect("no Redis message")
        .unwrap();
    assert_eq!(msg.get_channel_name(), format!("{channel}.f1"));
    let event: Value = serde_json::from_str(&msg.get_payload::<String>().unwrap()).unwrap();
    assert_eq!(event["type"], "com.bitvelocity.product.updated.v1");

    for (subscriber, ty) in [(&created, "created"), (&updated, "updated")] {
        let deadline = Instant::now() + Duration::from_secs(10);
        while subscriber.messages().is_empty() {
            assert!(Instant::now() < deadline, "no MQTT message for {ty}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let messages = subscriber.messages();
        assert_eq!(messages.len(), 1, "{messages:?}");
        let event: Value = serde_json::from_str(&messages[0]).unwrap();
        assert_eq!(event["subject"], "f1");
        assert_eq!(event["type"], format!("com.bitvelocity.product.{ty}.v1"));
    }
    // The durable consumer got them too.
    wait_count(&db, &app, "SELECT count(*) FROM seen", 2).await;
}

#[tokio::test]
async fn a_second_bv_stands_by_and_takes_over() {
    let db = TestDb::new("ev_standby").await;
    let manifest = manifest("", "");
    let mut first = start(&db, &manifest).await;
    wait_for_log(&first, "delivering subscription `consumer`").await;
    let second = start(&db, &manifest).await;
    wait_for_log(&second, "standing by").await;
    first.kill();
    wait_for_log(&second, "delivering subscription `consumer`").await;
    let r = produce(&second, json!({ "products": [product("s1", "Mug")] })).await;
    assert_eq!(r.status, 201, "{}", r.text());
    wait_count(&db, &second, "SELECT count(*) FROM seen", 1).await;
}

#[tokio::test]
async fn bad_postgres_trigger_tables_stop_start_up_naming_the_field() {
    let cases = [
        (
            "events = []",
            r#"events = ["com.bitvelocity.product.*"]"#,
            "trigger.postgres[0].events: list at least one event type",
        ),
        (
            "max_attempts = 0",
            "max_attempts = 3",
            "trigger.postgres[0].max_attempts: must be at least 1",
        ),
        (
            "max_attempts = 3\nmax_in_flight = 0",
            "max_attempts = 3",
            "trigger.postgres[0].max_in_flight: must be 1 to 128",
        ),
        (
            "nonsense = 1\nmax_attempts = 3",
            "max_attempts = 3",
            "nonsense",
        ),
    ];
    for (replacement, original, expected) in cases {
        let manifest = manifest("", "").replacen(original, replacement, 1);
        let err = try_spawn(
            &manifest,
            Spawn {
                env: vec![(
                    "SPIN_VARIABLE_DB_URL".into(),
                    "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable".into(),
                )],
                ..Default::default()
            },
        )
        .await
        .err()
        .unwrap_or_else(|| panic!("started with {replacement}"));
        assert_eq!(err.0, Some(1));
        assert!(
            err.1.contains(expected),
            "expected `{expected}` in:\n{}",
            err.1
        );
    }
    // A component without the handle-event export.
    let manifest = manifest("", "").replacen("{wasm:event-consumer}", "{probe}", 1);
    let err = try_spawn(
        &manifest,
        Spawn {
            env: vec![(
                "SPIN_VARIABLE_DB_URL".into(),
                "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable".into(),
            )],
            ..Default::default()
        },
    )
    .await
    .err()
    .expect("started with a component that is not an event handler");
    assert!(
        err.1
            .contains("does not export bitvelocity:events/inbound-event@0.1.0"),
        "{}",
        err.1
    );
}

#[tokio::test]
async fn an_event_that_breaks_its_schema_is_dead_lettered_by_the_consumer() {
    let db = TestDb::new("ev_poison").await;
    let app = start(&db, &manifest("", "")).await;
    // Written around the helper, as a buggy or foreign producer might.
    let event = json!({
        "specversion": "1.0", "id": "poison-1", "source": "/elsewhere",
        "type": "com.bitvelocity.product.created.v1", "subject": "x1",
        "time": "2026-01-01T00:00:00Z", "datacontenttype": "application/json",
        "data": { "productId": "x1", "sku": "X", "name": "X",
                  "price": { "amount": -1, "currency": "EUR" }, "status": "active" }
    });
    db.client()
        .await
        .execute(
            "INSERT INTO bv_events.outbox (id, source, type, subject, time, event)
             VALUES ('poison-1', '/elsewhere', $1, 'x1', now(), $2::text::jsonb)",
            &[&event["type"].as_str().unwrap(), &event.to_string()],
        )
        .await
        .unwrap();
    let r = produce(&app, json!({ "products": [product("p1", "Mug")] })).await;
    assert_eq!(r.status, 201, "{}", r.text());
    wait_count(
        &db,
        &app,
        "SELECT count(*) FROM seen WHERE subject = 'p1'",
        1,
    )
    .await;
    let row = db
        .client()
        .await
        .query_one(
            "SELECT attempts, last_error FROM bv_events.dead_letters WHERE event_id = 'poison-1'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 1, "a rejected event is not retried");
    let error: String = row.get(1);
    assert!(error.contains("data.price.amount"), "{error}");
    assert_eq!(
        count(&db, "SELECT count(*) FROM seen WHERE subject = 'x1'").await,
        0
    );
}

/// The trigger's connections are cut (as by a database failover) while
/// events flow: it reconnects, and every event has its effect once.
#[tokio::test]
async fn lost_connections_mid_stream_lose_and_duplicate_nothing() {
    let db = TestDb::new("ev_cut").await;
    let app = start(&db, &manifest("", "")).await;
    let mut published = 0i64;
    for batch in 0..6 {
        let products: Vec<Value> = (0..5)
            .map(|i| {
                let prefix = if batch < 2 { "slow" } else { "item" };
                product(&format!("c{batch}-{i}"), &format!("{prefix}-{batch}-{i}"))
            })
            .collect();
        let r = produce(&app, json!({ "products": products, "updates": 1 })).await;
        assert_eq!(r.status, 201, "{}", r.text());
        published += r.json()["published"].as_i64().unwrap();
    }
    let admin = connect(ADMIN).await;
    for round in 0..3 {
        // Wait for the trigger to be connected (again), then cut it.
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let cut = admin
                .query(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                     WHERE datname = $1 AND application_name = 'bv postgres trigger'",
                    &[&db.name],
                )
                .await
                .unwrap()
                .len();
            if cut > 0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "round {round}: the trigger did not reconnect:\n{}",
                app.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    wait_count(&db, &app, "SELECT count(*) FROM seen", published).await;
    assert_eq!(
        count(&db, "SELECT count(DISTINCT event_id) FROM seen").await,
        published
    );
    let metrics = app.admin_get("/metrics").await.text();
    let disconnects: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("bv_events_subscriber_disconnects_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no disconnect counter:\n{metrics}"));
    assert!(disconnects >= 3, "{disconnects} disconnects counted");
}

/// A subscription moves past events it does not take, so a wake does not
/// read them again; the events it does take are still all delivered.
#[tokio::test]
async fn a_subscription_moves_past_events_it_does_not_take() {
    let db = TestDb::new("ev_skip").await;
    let extra = r#"
[[trigger.postgres]]
component = "consumer"
subscription = "updates-only"
events = ["com.bitvelocity.product.updated.v1"]

[[trigger.postgres]]
component = "consumer"
subscription = "orders-only"
events = ["com.bitvelocity.order.*"]
"#;
    let app = start(&db, &manifest(extra, "")).await;
    for batch in 0..3 {
        let products: Vec<Value> = (0..4)
            .map(|i| product(&format!("s{batch}-{i}"), &format!("item {i}")))
            .collect();
        let r = produce(&app, json!({ "products": products, "updates": 1 })).await;
        assert_eq!(r.status, 201, "{}", r.text());
    }
    // `consumer` takes all 24; `updates-only` the 12 updates (its claims are
    // under its own name, so both apply to the shared read model's log).
    wait_count(&db, &app, "SELECT count(*) FROM seen", 36).await;
    let last_seq = count(&db, "SELECT max(seq) FROM bv_events.outbox").await;
    for name in ["orders-only", "updates-only", "consumer"] {
        wait_count(
            &db,
            &app,
            &format!(
                "SELECT count(*) FROM bv_events.subscriptions
                 WHERE name = '{name}' AND position_seq = {last_seq}"
            ),
            1,
        )
        .await;
    }
    assert_eq!(
        count(
            &db,
            "SELECT delivered FROM bv_events.subscriptions WHERE name = 'orders-only'"
        )
        .await,
        0
    );
    assert_eq!(
        count(
            &db,
            "SELECT delivered FROM bv_events.subscriptions WHERE name = 'updates-only'"
        )
        .await,
        12
    );
}
