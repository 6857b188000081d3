//! `spin:postgres@4.2.0` against the real PostgreSQL on 127.0.0.1:5432,
//! through the `pg-probe` component. Each test creates its own database.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::*;

use crate::pg_support::*;

fn manifest(allowed: &str) -> String {
    format!(
        r#"spin_manifest_version = 2
[application]
name = "pg"
[variables]
db_url = {{ required = true }}
[[trigger.http]]
route = "/pg/..."
component = "pg"
[component.pg]
source = "{{wasm:pg-probe}}"
allowed_outbound_hosts = [{allowed}]
[component.pg.variables]
db_url = "{{{{ db_url }}}}"
# Oversized values travel in the request body.
[component.pg.tool.bv]
max_request_body_bytes = 67108864
"#
    )
}

async fn app_for(db_url: &str, allowed: &str) -> TestApp {
    spawn_app_with(
        &manifest(allowed),
        Spawn {
            env: vec![("SPIN_VARIABLE_DB_URL".into(), db_url.into())],
            ..Default::default()
        },
    )
    .await
}

const LOCAL: &str = r#""postgres://127.0.0.1:5432""#;

async fn call(app: &TestApp, path: &str, body: Value) -> (u16, Value) {
    let r = app
        .send("POST", &format!("/pg/{path}"), body.to_string())
        .await;
    (r.status, r.json())
}

async fn sql(app: &TestApp, sql: &str, params: Value) -> (u16, Value) {
    call(app, "query", json!({"sql": sql, "params": params})).await
}

async fn exec(app: &TestApp, sql: &str, params: Value) -> (u16, Value) {
    call(
        app,
        "query",
        json!({"sql": sql, "params": params, "mode": "execute"}),
    )
    .await
}

fn ok(r: (u16, Value)) -> Value {
    assert_eq!(r.0, 200, "{}", r.1);
    r.1
}

#[tokio::test]
async fn every_type_round_trips_with_nulls_arrays_and_ranges() {
    let db = TestDb::new("types").await;
    let app = app_for(&db.url(), LOCAL).await;
    ok(exec(
        &app,
        r#"CREATE TABLE t (b bool, c "char", i2 int2, i4 int4, i8 int8, f4 float4, f8 float8,
            s text, vc varchar(20), by bytea, d date, tm time, ts timestamp, tz timestamptz,
            u uuid, j jsonb, js json, n numeric, r4 int4range, r8 int8range, rn numrange,
            a4 int4[], a8 int8[], an numeric[], at text[], iv interval)"#,
        json!([]),
    )
    .await);
    let values = json!([
        {"type": "boolean", "value": true},
        {"type": "int8", "value": 65},
        {"type": "int16", "value": -12345},
        {"type": "int32", "value": 2147483647},
        {"type": "int64", "value": i64::MIN},
        {"type": "floating32", "value": 1.5},
        {"type": "floating64", "value": -2.25e10},
        {"type": "str", "value": "héllo ✓ 'quoted' \"double\""},
        {"type": "str", "value": "abc"},
        {"type": "binary", "value": "00ff10"},
        {"type": "date", "value": [2024, 2, 29]},
        {"type": "time", "value": [23, 59, 58, 123456000]},
        {"type": "datetime", "value": [2024, 2, 29, 12, 34, 56, 789000000]},
        {"type": "datetime", "value": [1999, 12, 31, 23, 59, 59, 0]},
        {"type": "uuid", "value": "67e55044-10b1-426f-9247-bb680e5fe0c8"},
        {"type": "jsonb", "value": {"a": [1, 2, {"b": null}], "c": "ü"}},
        {"type": "jsonb", "value": {"x": 1}},
        {"type": "decimal", "value": "-12345678901234567890.000123456789"},
        {"type": "range-int32", "value": {"lower": [1, "inclusive"], "upper": [10, "inclusive"]}},
        {"type": "range-int64", "value": {"lower": null, "upper": [5000000000i64, "exclusive"]}},
        {"type": "range-decimal", "value": {"lower": ["1.5", "exclusive"], "upper": ["2.25", "inclusive"]}},
        {"type": "array-int32", "value": [1, null, -3]},
        {"type": "array-int64", "value": [9007199254740993i64, null]},
        {"type": "array-decimal", "value": ["1.10", null, "-0.5"]},
        {"type": "array-str", "value": ["a", null, "c,d \"e\""]},
        {"type": "interval", "value": {"micros": 3723000004i64, "days": 2, "months": 14}},
    ]);
    let placeholders: Vec<String> = (1..=26).map(|i| format!("${i}")).collect();
    let insert = format!("INSERT INTO t VALUES ({})", placeholders.join(", "));
    assert_eq!(ok(exec(&app, &insert, values.clone()).await)["affected"], 1);
    let nulls: Vec<Value> = (0..26).map(|_| json!({"type": "db-null"})).collect();
    assert_eq!(ok(exec(&app, &insert, json!(nulls)).await)["affected"], 1);

    let got = ok(sql(&app, "SELECT * FROM t ORDER BY b NULLS LAST", json!([])).await);
    let types: Vec<&str> = got["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "boolean",
            "int8",
            "int16",
            "int32",
            "int64",
            "floating32",
            "floating64",
            "str",
            "str",
            "binary",
            "date",
            "time",
            "datetime",
            "datetime",
            "uuid",
            "jsonb",
            "jsonb",
            "decimal",
            "range-int32",
            "range-int64",
            "range-decimal",
            "array-int32",
            "array-int64",
            "array-decimal",
            "array-str",
            "interval"
        ]
    );
    let row = got["rows"][0].as_array().unwrap();
    let mut expected = values.as_array().unwrap().clone();
    // The server's canonical forms: discrete ranges become `[a, b)`.
    expected[18] = json!({"type": "range-int32", "value": {"lower": [1, "inclusive"], "upper": [11, "exclusive"]}});
    for (i, (g, e)) in row.iter().zip(&expected).enumerate() {
        assert_eq!(g, e, "column {i} ({})", got["columns"][i]["name"]);
    }
    for (i, v) in got["rows"][1].as_array().unwrap().iter().enumerate() {
        assert_eq!(v, &json!({"type": "db-null", "value": null}), "column {i}");
    }

    // The blocking API and the key-value address form read the same row.
    let kv = format!(
        "host=127.0.0.1 port=5432 user=postgres dbname={} sslmode=disable",
        db.name
    );
    drop(app);
    let app = app_for(&kv, LOCAL).await;
    let sync = ok(call(
        &app,
        "query",
        json!({"sql": "SELECT * FROM t ORDER BY b NULLS LAST", "params": [], "api": "sync"}),
    )
    .await);
    assert_eq!(sync, got);

    // Unix seconds bind to timestamps and to bigint; empty ranges survive.
    let r = ok(sql(
        &app,
        "SELECT $1::timestamptz, $2::int8, 'empty'::int4range, $3::int4range",
        json!([{"type": "timestamp", "value": 1700000000}, {"type": "timestamp", "value": 42},
               {"type": "range-int32", "value": {"lower": [0, "exclusive"], "upper": [0, "exclusive"]}}]),
    )
    .await);
    assert_eq!(
        r["rows"][0],
        json!([
            {"type": "datetime", "value": [2023, 11, 14, 22, 13, 20, 0]},
            {"type": "int64", "value": 42},
            {"type": "range-int32", "value": {"lower": [0, "exclusive"], "upper": [0, "exclusive"]}},
            {"type": "range-int32", "value": {"lower": [0, "exclusive"], "upper": [0, "exclusive"]}},
        ])
    );
    // Types the WIT has no case for arrive as their raw bytes.
    let r = ok(sql(&app, "SELECT '1.2.3.4'::inet", json!([])).await);
    assert_eq!(r["columns"][0]["type"], "other:inet");
    assert_eq!(r["rows"][0][0]["type"], "unsupported");
}

#[tokio::test]
async fn parameters_are_bound_never_spliced() {
    let db = TestDb::new("inject").await;
    let app = app_for(&db.url(), LOCAL).await;
    ok(exec(&app, "CREATE TABLE items (v text)", json!([])).await);
    let evil = "x'); DROP TABLE items; --";
    ok(exec(
        &app,
        "INSERT INTO items (v) VALUES ($1)",
        json!([{"type": "str", "value": evil}]),
    )
    .await);
    let also = "$2 ' OR '1'='1";
    let r = ok(sql(
        &app,
        "SELECT v FROM items WHERE v = $1 OR v = $2",
        json!([{"type": "str", "value": evil}, {"type": "str", "value": also}]),
    )
    .await);
    assert_eq!(r["rows"], json!([[{"type": "str", "value": evil}]]));
    let native = db.client().await;
    let stored: String = native
        .query_one("SELECT v FROM items", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, evil, "stored literally, table intact");
}

#[tokio::test]
async fn server_errors_carry_sqlstate_and_message() {
    let db = TestDb::new("errors").await;
    let app = app_for(&db.url(), LOCAL).await;
    let (status, e) = sql(&app, "SELECT * FROM no_such_table", json!([])).await;
    assert_eq!(status, 500);
    assert_eq!(e["error"], "query-failed", "{e}");
    assert_eq!(e["sqlstate"], "42P01");
    assert!(
        e["message"].as_str().unwrap().contains("no_such_table"),
        "{e}"
    );
    assert_eq!(e["severity"], "ERROR");

    ok(exec(
        &app,
        "CREATE TABLE u (id int CONSTRAINT u_pk PRIMARY KEY)",
        json!([]),
    )
    .await);
    let one = json!([{"type": "int32", "value": 1}]);
    ok(exec(&app, "INSERT INTO u VALUES ($1)", one.clone()).await);
    let (status, e) = exec(&app, "INSERT INTO u VALUES ($1)", one).await;
    assert_eq!(status, 500);
    assert_eq!(e["sqlstate"], "23505", "{e}");
    assert!(e["message"].as_str().unwrap().contains("u_pk"), "{e}");
    assert!(
        e["detail"].as_str().unwrap().contains("already exists"),
        "{e}"
    );
    assert_eq!(e["extras"]["constraint"], "u_pk");
    assert_eq!(e["extras"]["table"], "u");

    let (_, e) = sql(&app, "SELEC 1", json!([])).await;
    assert_eq!(e["sqlstate"], "42601", "{e}");

    // Parameters that do not fit the placeholder never reach the server.
    let (status, e) = sql(
        &app,
        "SELECT $1::text",
        json!([{"type": "int32", "value": 1}]),
    )
    .await;
    assert_eq!(
        (status, e["error"].as_str()),
        (400, Some("bad-parameter")),
        "{e}"
    );
    assert!(e["message"].as_str().unwrap().contains("int32"), "{e}");
    let (status, e) = sql(
        &app,
        "SELECT $1::int4, $2::int4",
        json!([{"type": "int32", "value": 1}]),
    )
    .await;
    assert_eq!(
        (status, e["error"].as_str()),
        (400, Some("bad-parameter")),
        "{e}"
    );
}

#[tokio::test]
async fn transactions_commit_or_roll_back_on_one_session() {
    let db = TestDb::new("tx").await;
    let app = app_for(&db.url(), LOCAL).await;
    let native = db.client().await;
    // Made outside the app: the app's sessions run only transactions.
    native
        .batch_execute("CREATE TABLE items (v text)")
        .await
        .unwrap();
    ok(call(&app, "tx", json!({"value": "kept", "end": "commit"})).await);
    ok(call(&app, "tx", json!({"value": "undone", "end": "rollback"})).await);
    let rows: Vec<String> = native
        .query("SELECT v FROM items ORDER BY v", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(rows, ["kept"]);
    // A transaction the guest finished leaves nothing to reset: no
    // connection of the app ran the reset on its way back to the pool.
    let resets: i64 = native
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
             AND pid <> pg_backend_pid() AND query LIKE 'ROLLBACK; CLOSE ALL%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(resets, 0, "a finished transaction was reset");

    // Connections are pooled: sequential requests reuse server sessions.
    let mut pids = std::collections::HashSet::new();
    for _ in 0..6 {
        let s = ok(app.get("/pg/session").await.into_pair());
        pids.insert(s["pid"].as_i64().unwrap());
    }
    assert!(pids.len() <= 2, "sessions were not reused: {pids:?}");
}

#[tokio::test]
async fn a_guest_that_deallocates_statements_does_not_break_the_next_one() {
    let db = TestDb::new("dealloc").await;
    let app = app_for(&db.url(), LOCAL).await;
    ok(exec(&app, "CREATE TABLE items (v int)", json!([])).await);
    let insert = "INSERT INTO items (v) VALUES ($1)";
    ok(exec(&app, insert, json!([{"type": "int32", "value": 1}])).await);
    // Drops the server's prepared statements (and makes the session dirty,
    // so it is reset on its way back to the pool).
    ok(exec(&app, "DEALLOCATE ALL", json!([])).await);
    for v in 2..6 {
        ok(exec(&app, insert, json!([{"type": "int32", "value": v}])).await);
    }
    let n: i64 = db
        .client()
        .await
        .query_one("SELECT count(*) FROM items", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 5);
}

trait IntoPair {
    fn into_pair(self) -> (u16, Value);
}

impl IntoPair for Reply {
    fn into_pair(self) -> (u16, Value) {
        (self.status, self.json())
    }
}

#[tokio::test]
async fn an_open_transaction_is_rolled_back_when_the_connection_is_dropped() {
    let db = TestDb::new("leak").await;
    let app = app_for(&db.url(), LOCAL).await;
    ok(exec(&app, "CREATE TABLE items (v text)", json!([])).await);
    let left = ok(call(&app, "leave-open", json!({"value": "never-committed"})).await);
    let pid = left["pid"].as_i64().unwrap();

    let native = db.client().await;
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let idle_in_tx: i64 = native
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
                 AND state LIKE 'idle in transaction%'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if idle_in_tx == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the transaction stayed open");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let n: i64 = native
        .query_one("SELECT count(*) FROM items", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0, "the insert was rolled back");

    // The same server session serves later requests, outside any transaction.
    let mut reused = false;
    for _ in 0..20 {
        let s = ok(app.get("/pg/session").await.into_pair());
        assert_eq!(
            s["xid"],
            Value::Null,
            "a later request ran inside a transaction: {s}"
        );
        if s["pid"].as_i64() == Some(pid) {
            reused = true;
            break;
        }
    }
    assert!(reused, "the cleaned session did not go back to the pool");
    let (status, _) = exec(&app, "INSERT INTO items VALUES ('after')", json!([])).await;
    assert_eq!(status, 200);
    let n: i64 = native
        .query_one("SELECT count(*) FROM items", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        n, 1,
        "later writes are autocommitted, not stuck in the old transaction"
    );
}

#[tokio::test]
async fn a_host_not_allowed_is_refused_and_logged() {
    let db = TestDb::new("denied").await;
    let url = format!(
        "postgres://postgres@127.0.0.1:5432/{}?sslmode=disable",
        db.name
    );
    let app = app_for(&url, r#""postgres://127.0.0.1:6543""#).await;
    let (status, e) = sql(&app, "SELECT 1", json!([])).await;
    assert_eq!(status, 500);
    assert_eq!(e["error"], "connection-failed", "{e}");
    assert!(
        e["message"].as_str().unwrap().contains("not allowed"),
        "{e}"
    );
    wait_for_log(&app, "postgres connection denied").await;

    // TLS modes are refused with a clear message rather than downgraded.
    let app = app_for(&url.replace("sslmode=disable", "sslmode=require"), LOCAL).await;
    let (_, e) = sql(&app, "SELECT 1", json!([])).await;
    assert_eq!(e["error"], "connection-failed", "{e}");
    assert!(
        e["message"].as_str().unwrap().contains("sslmode=require"),
        "{e}"
    );
}

#[tokio::test]
async fn a_dead_server_fails_the_request_quickly() {
    let app = app_for(
        "postgres://postgres@127.0.0.1:1/x?sslmode=disable",
        r#""postgres://127.0.0.1:*""#,
    )
    .await;
    let start = Instant::now();
    let (status, e) = sql(&app, "SELECT 1", json!([])).await;
    assert_eq!(
        (status, e["error"].as_str()),
        (500, Some("connection-failed")),
        "{e}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(6),
        "{:?}",
        start.elapsed()
    );

    // A server that accepts but never answers: the connect timeout (5 s) ends it.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let app = app_for(
        &format!("postgres://postgres@127.0.0.1:{port}/x?sslmode=disable"),
        r#""postgres://127.0.0.1:*""#,
    )
    .await;
    let start = Instant::now();
    let (status, e) = sql(&app, "SELECT 1", json!([])).await;
    let took = start.elapsed();
    assert_eq!(
        (status, e["error"].as_str()),
        (500, Some("connection-failed")),
        "{e}"
    );
    assert!(e["message"].as_str().unwrap().contains("timed out"), "{e}");
    assert!(took < Duration::from_secs(6), "took {took:?}");
    hold.abort();
}

#[tokio::test]
async fn bad_text_and_oversized_values_are_clear_errors() {
    let db = TestDb::new("bytes").await;
    let app = app_for(&db.url(), LOCAL).await;
    ok(exec(
        &app,
        "CREATE TABLE s (short varchar(5), n int4, t text)",
        json!([]),
    )
    .await);
    let cases = [
        (
            "INSERT INTO s (t) VALUES ($1)",
            json!([{"type": "binary", "value": "c328ff"}]),
            "UTF-8",
        ),
        (
            "SELECT $1::jsonb",
            json!([{"type": "jsonb-raw", "value": "7bff7d"}]),
            "UTF-8",
        ),
        (
            "INSERT INTO s (n) VALUES ($1)",
            json!([{"type": "int64", "value": 1i64 << 40}]),
            "out of range",
        ),
        (
            "SELECT $1::numeric",
            json!([{"type": "decimal", "value": "12abc"}]),
            "decimal",
        ),
        (
            "SELECT $1::uuid",
            json!([{"type": "uuid", "value": "not-a-uuid"}]),
            "UUID",
        ),
        (
            "SELECT $1::date",
            json!([{"type": "date", "value": [2023, 2, 30]}]),
            "not a valid date",
        ),
    ];
    for (statement, params, needle) in cases {
        let (status, e) = sql(&app, statement, params).await;
        assert_eq!(
            (status, e["error"].as_str()),
            (400, Some("bad-parameter")),
            "{statement}: {e}"
        );
        assert!(
            e["message"].as_str().unwrap().contains(needle),
            "{statement}: {e}"
        );
    }
    let (status, e) = exec(
        &app,
        "INSERT INTO s (short) VALUES ($1)",
        json!([{"type": "str", "value": "too long"}]),
    )
    .await;
    assert_eq!(status, 500);
    assert_eq!(e["sqlstate"], "22001", "{e}");

    // A large value is fine.
    let big = "x".repeat(1 << 20);
    let r = ok(sql(
        &app,
        "SELECT length($1::text)",
        json!([{"type": "str", "value": big}]),
    )
    .await);
    assert_eq!(r["rows"][0][0]["value"], 1 << 20);

    // Bytes that are not UTF-8 stored as text (possible in a SQL_ASCII
    // database) are refused by the server on the way out (the session's
    // client_encoding is UTF8): a clear error with its SQLSTATE, no trap.
    // (The host checks UTF-8 itself too, before any text reaches the guest.)
    let ascii = TestDb::with_options(
        "ascii",
        "ENCODING 'SQL_ASCII' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0",
    )
    .await;
    let app = app_for(&ascii.url(), LOCAL).await;
    let (status, e) = sql(&app, r"SELECT E'\xff'::text AS raw", json!([])).await;
    assert_eq!(
        (status, e["error"].as_str()),
        (500, Some("query-failed")),
        "{e}"
    );
    assert_eq!(e["sqlstate"], "22021", "{e}");
    assert!(e["message"].as_str().unwrap().contains("UTF8"), "{e}");
    let r = ok(sql(&app, "SELECT 1", json!([])).await);
    assert_eq!(r["rows"][0][0]["value"], 1, "the component still serves");
}

#[tokio::test]
async fn product_lookup() {
    let db = TestDb::new("product").await;
    let native = db.client().await;
    native
        .batch_execute(
            "CREATE TABLE products (id int PRIMARY KEY, name text NOT NULL, price numeric(10,2) NOT NULL, stock int NOT NULL);
             INSERT INTO products VALUES (7, 'widget', 12.50, 3)",
        )
        .await
        .unwrap();
    let app = app_for(&db.url(), LOCAL).await;
    let r = app.get("/pg/product/7").await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json(),
        json!({"id": 7, "name": "widget", "price": "12.50", "stock": 3})
    );
    assert_eq!(app.get("/pg/product/8").await.status, 404);
}

/// Two components on one database, `slow` and `fast`, both the pg probe.
fn two_components() -> String {
    let component = |name: &str| {
        format!(
            r#"
[[trigger.http]]
route = "/{name}/..."
component = "{name}"
[component.{name}]
source = "{{wasm:pg-probe}}"
allowed_outbound_hosts = [{LOCAL}]
[component.{name}.variables]
db_url = "{{{{ db_url }}}}"
"#
        )
    };
    format!(
        "spin_manifest_version = 2\n[application]\nname = \"pg\"\n[variables]\ndb_url = {{ required = true }}\n{}{}",
        component("slow"),
        component("fast")
    )
}

/// A component whose statements all hang for a while fills its own share of
/// the address's pool (half of it), not the whole pool: another component
/// on the same database keeps getting connections at once, and the slow
/// one's extra requests wait for its share and then succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_component_with_slow_statements_leaves_the_pool_to_the_others() {
    let db = TestDb::new("pg_bulkhead").await;
    let app = spawn_app_with(
        &two_components(),
        Spawn {
            env: vec![("SPIN_VARIABLE_DB_URL".into(), db.url())],
            ..Default::default()
        },
    )
    .await;
    let sleep = json!({"sql": "SELECT pg_sleep(1.5)::text AS slept", "params": []}).to_string();
    // More sleepers than the whole pool (16 sessions) holds.
    let slow: Vec<_> = (0..20)
        .map(|_| {
            let (addr, body) = (app.addr, sleep.clone());
            tokio::spawn(async move {
                let started = Instant::now();
                let r = request(addr, "POST", "/slow/query", &[], body).await;
                (r.status, r.text(), started.elapsed())
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let one = json!({"sql": "SELECT 1 AS one", "params": []}).to_string();
    for _ in 0..5 {
        let started = Instant::now();
        let r = request(app.addr, "POST", "/fast/query", &[], one.clone()).await;
        let took = started.elapsed();
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(
            took < Duration::from_millis(700),
            "the fast component waited {took:?} for a connection behind the slow one"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut longest = Duration::ZERO;
    for task in slow {
        let (status, text, took) = task.await.unwrap();
        assert_eq!(status, 200, "{text}");
        longest = longest.max(took);
    }
    // 20 sleepers, at most 8 at a time: three rounds of 1.5 s.
    assert!(
        longest >= Duration::from_millis(4000),
        "the slow component was not bounded to its share: its last sleeper took {longest:?}"
    );
}
