//! Fault injection at the component boundary: capability calls of a chosen
//! component fail, slow down or hang, switched by a chaos file or live
//! through the admin API, with no change to the components.

use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{json, Value};

use crate::faults::metric;
use crate::harness::*;
use crate::otlp_support::{tracing_env, OtlpReceiver, KIND_SERVER};
use crate::pg_support::TestDb;

const TOKEN: &str = "a-long-enough-admin-token";

/// Two probes with a key-value store (one chaining to the other) and the
/// Postgres probe.
fn manifest() -> String {
    r#"spin_manifest_version = 2
[application]
name = "faults"
[variables]
db_url = { required = true }
[[trigger.http]]
route = "/a/..."
component = "a"
[[trigger.http]]
route = "/b/..."
component = "b"
[[trigger.http]]
route = "/pg/..."
component = "pg"
[component.a]
source = "{probe}"
key_value_stores = ["default"]
allowed_outbound_hosts = ["http://b.spin.internal"]
[component.b]
source = "{probe}"
environment = { PROBE_NAME = "b" }
key_value_stores = ["default"]
[component.pg]
source = "{wasm:pg-probe}"
allowed_outbound_hosts = ["postgres://127.0.0.1:5432"]
[component.pg.variables]
db_url = "{{ db_url }}"
[component.pg.tool.bv]
request_timeout_ms = 1500
"#
    .to_string()
}

async fn start(db: &TestDb, extra_env: &[(&str, &str)], spawn: Spawn) -> TestApp {
    let mut env = spawn.env.clone();
    env.push(("SPIN_VARIABLE_DB_URL".to_string(), db.url()));
    env.extend(
        extra_env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    spawn_app_with(&manifest(), Spawn { env, ..spawn }).await
}

async fn admin(app: &TestApp, method: &str, path: &str, auth: Option<&str>, body: Value) -> Reply {
    let bearer = auth.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = bearer
        .as_deref()
        .map(|b| vec![("authorization", b), ("content-type", "application/json")])
        .unwrap_or_default();
    let body = if body.is_null() {
        Bytes::new()
    } else {
        Bytes::from(body.to_string())
    };
    request(app.admin, method, path, &headers, body).await
}

async fn switch_on(app: &TestApp, faults: Value) -> Vec<u64> {
    let r = admin(
        app,
        "POST",
        "/faults",
        Some(TOKEN),
        json!({ "faults": faults }),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    r.json()["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect()
}

async fn query(app: &TestApp, sql: &str) -> Reply {
    app.send(
        "POST",
        "/pg/query",
        json!({ "sql": sql, "params": [] }).to_string(),
    )
    .await
}

#[tokio::test]
async fn a_fault_switched_live_hits_only_its_component_and_capability_and_is_counted() {
    let db = TestDb::new("faults_live").await;
    let otlp = OtlpReceiver::start().await;
    let app = start(
        &db,
        &[("BV_ADMIN_TOKEN", TOKEN)],
        Spawn {
            env: tracing_env(&otlp.endpoint()),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(app.send("PUT", "/a/kv/default/k", "kept").await.status, 204);

    let ids = switch_on(
        &app,
        json!([{ "component": "a", "capability": "key-value", "effect": "fail" }]),
    )
    .await;
    let failed = app.get("/a/kv/default/k").await;
    assert_eq!(failed.status, 500, "{}", failed.text());
    assert!(
        failed.text().contains("injected fault"),
        "the component sees the capability's own error: {}",
        failed.text()
    );
    let refused_write = app.send("PUT", "/a/kv/default/k", "lost").await;
    assert_eq!(refused_write.status, 500);
    // The other component, the same capability: untouched.
    assert_eq!(app.get("/b/kv/default/k").await.text(), "kept");
    // The same component, another capability: untouched.
    let chained = app
        .get("/a/fetch?url=http%3A%2F%2Fb.spin.internal%2Fheaders")
        .await;
    assert_eq!(chained.status, 200, "{}", chained.text());
    assert_eq!(query(&app, "SELECT 1 AS one").await.status, 200);

    let listed = admin(&app, "GET", "/faults", Some(TOKEN), Value::Null).await;
    assert_eq!(listed.status, 200);
    let listed = listed.json();
    assert_eq!(listed["faults"][0]["id"], ids[0]);
    assert_eq!(listed["faults"][0]["injected"], 2);
    let metrics = app.admin_get("/metrics").await.text();
    assert_eq!(
        metric(
            &metrics,
            r#"bv_faults_injected_total{component="a",capability="key-value",effect="fail"}"#
        ),
        2.0,
        "{metrics}"
    );
    wait_for_log(&app, "fault injected").await;
    // Marked on the trace: an event of the request's server span.
    otlp.wait_for_spans(Duration::from_secs(10), |spans| {
        spans.iter().any(|s| {
            s.kind == KIND_SERVER
                && s.attr_str("bv.component") == Some("a")
                && s.events.iter().any(|e| e == "fault injected")
        })
    })
    .await;

    let cleared = admin(
        &app,
        "DELETE",
        &format!("/faults/{}", ids[0]),
        Some(TOKEN),
        Value::Null,
    )
    .await;
    assert_eq!(cleared.status, 204);
    // Nothing the failed calls touched changed.
    assert_eq!(app.get("/a/kv/default/k").await.text(), "kept");
}

#[tokio::test]
async fn the_fault_api_refuses_strangers_and_bad_faults_and_changes_nothing() {
    let db = TestDb::new("faults_refusals").await;
    let app = start(&db, &[("BV_ADMIN_TOKEN", TOKEN)], Spawn::default()).await;
    let one = json!({ "faults": [{ "component": "a", "capability": "redis", "effect": "fail" }] });
    for auth in [None, Some("wrong-token-of-some-length")] {
        let r = admin(&app, "POST", "/faults", auth, one.clone()).await;
        assert_eq!(r.status, 401, "{}", r.text());
        assert_eq!(r.headers["content-type"], "application/problem+json");
        assert_eq!(r.headers["www-authenticate"], "Bearer");
        assert_eq!(r.json()["type"], "urn:bitvelocity:problem:unauthorized");
    }
    for (faults, detail) in [
        (
            json!([{ "component": "nope", "capability": "redis", "effect": "fail" }]),
            "faults[0]: no component `nope`",
        ),
        (
            json!([{ "component": "a", "capability": "redis", "effect": "delay" }]),
            "faults[0]: effect `delay` needs `delay_ms`",
        ),
        (
            json!([
                { "component": "a", "capability": "redis", "effect": "fail" },
                { "component": "a", "capability": "redis", "effect": "fail", "share": 2 }
            ]),
            "faults[1]: `share` must be more than 0 and at most 1",
        ),
        (
            json!([{ "component": "a", "capability": "pg", "effect": "fail" }]),
            "faults[0].capability: unknown variant `pg`",
        ),
    ] {
        let r = admin(
            &app,
            "PUT",
            "/faults",
            Some(TOKEN),
            json!({ "faults": faults }),
        )
        .await;
        assert_eq!(r.status, 400, "{}", r.text());
        let problem = r.json();
        assert_eq!(problem["type"], "urn:bitvelocity:problem:invalid-fault");
        assert!(
            problem["detail"].as_str().unwrap().starts_with(detail),
            "{problem}"
        );
    }
    let listed = admin(&app, "GET", "/faults", Some(TOKEN), Value::Null).await;
    assert_eq!(
        listed.json()["faults"],
        json!([]),
        "refused changes changed nothing"
    );
    let missing = admin(&app, "DELETE", "/faults/999", Some(TOKEN), Value::Null).await;
    assert_eq!(missing.status, 404);

    // Without a token the API is off; a short token stops start-up.
    let off = start(&db, &[], Spawn::default()).await;
    let r = admin(&off, "GET", "/faults", Some(TOKEN), Value::Null).await;
    assert_eq!(r.status, 403, "{}", r.text());
    let (code, log) = try_spawn(
        &manifest(),
        Spawn {
            env: vec![
                ("SPIN_VARIABLE_DB_URL".into(), db.url()),
                ("BV_ADMIN_TOKEN".into(), "short".into()),
            ],
            ..Default::default()
        },
    )
    .await
    .err()
    .expect("a short admin token stops start-up");
    assert_ne!(code, Some(0));
    assert!(log.contains("at least 16 characters"), "{log}");
}

#[tokio::test]
async fn a_slow_then_hanging_database_for_one_component_while_another_serves() {
    let db = TestDb::new("faults_pg").await;
    let app = start(&db, &[("BV_ADMIN_TOKEN", TOKEN)], Spawn::default()).await;
    let before = Instant::now();
    assert_eq!(query(&app, "SELECT 1 AS one").await.status, 200);
    let baseline = before.elapsed();

    // Slow: every statement waits 400 ms first.
    switch_on(
        &app,
        json!([{ "component": "pg", "capability": "postgres", "effect": "delay", "delay_ms": 400 }]),
    )
    .await;
    let started = Instant::now();
    let slow = query(&app, "SELECT 1 AS one").await;
    assert_eq!(slow.status, 200, "{}", slow.text());
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "delayed: {:?} (baseline {baseline:?})",
        started.elapsed()
    );

    // Hanging, for 3 seconds: calls end with the component's request
    // timeout (1.5 s) while the other components go on serving.
    let replaced = admin(
        &app,
        "PUT",
        "/faults",
        Some(TOKEN),
        json!({ "faults": [{ "component": "pg", "capability": "postgres", "effect": "hang", "duration_s": 3 }] }),
    )
    .await;
    assert_eq!(replaced.status, 200, "{}", replaced.text());
    let switched = Instant::now();
    let hung = tokio::spawn({
        let addr = app.addr;
        async move {
            let started = Instant::now();
            let r = request(
                addr,
                "POST",
                "/pg/query",
                &[],
                json!({ "sql": "SELECT 1", "params": [] }).to_string(),
            )
            .await;
            (r.status, started.elapsed())
        }
    });
    for _ in 0..20 {
        assert_eq!(app.get("/b/headers").await.status, 200);
        assert_eq!(app.send("PUT", "/b/kv/default/x", "y").await.status, 204);
    }
    let (status, took) = hung.await.unwrap();
    assert_eq!(status, 504);
    assert!(
        took < Duration::from_secs(3),
        "ended by the timeout: {took:?}"
    );

    // The fault ends by itself.
    tokio::time::sleep(Duration::from_secs(3).saturating_sub(switched.elapsed())).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = query(&app, "SELECT 1 AS one").await;
    assert_eq!(after.status, 200, "{}", after.text());
    let listed = admin(&app, "GET", "/faults", Some(TOKEN), Value::Null).await;
    assert_eq!(listed.json()["faults"], json!([]));
    let metrics = app.admin_get("/metrics").await.text();
    assert_eq!(
        metric(
            &metrics,
            r#"bv_faults_injected_total{component="pg",capability="postgres",effect="hang"}"#
        ),
        1.0,
        "{metrics}"
    );
}

#[tokio::test]
async fn a_chaos_file_switches_a_share_of_chained_calls_off_at_start_up() {
    let db = TestDb::new("faults_file").await;
    let chaos = r#"
[[fault]]
component = "a"
capability = "chained"
effect = "fail"
share = 0.5
"#;
    let app = start(
        &db,
        &[],
        Spawn {
            args: vec!["--chaos-file".into(), "{dir}/chaos.toml".into()],
            files: vec![("chaos.toml".into(), chaos.into())],
            ..Default::default()
        },
    )
    .await;
    assert!(
        app.log().contains("1 fault(s) switched on"),
        "{}",
        app.log()
    );
    let mut refused = 0;
    for _ in 0..200 {
        let r = app
            .get("/a/fetch?url=http%3A%2F%2Fb.spin.internal%2Fheaders")
            .await;
        match r.status {
            200 => {}
            502 => {
                assert!(r.text().contains("ConnectionRefused"), "{}", r.text());
                refused += 1;
            }
            other => panic!("{other}: {}", r.text()),
        }
    }
    assert!(
        (60..140).contains(&refused),
        "about half refused: {refused} of 200"
    );

    // A bad chaos file stops start-up and says where.
    let (code, log) = try_spawn(
        &manifest(),
        Spawn {
            env: vec![("SPIN_VARIABLE_DB_URL".into(), db.url())],
            args: vec!["--chaos-file".into(), "{dir}/chaos.toml".into()],
            files: vec![(
                "chaos.toml".into(),
                "[[fault]]\ncomponent = \"a\"\ncapability = \"http\"\neffect = \"delay\"\ndelay_ms = 0\n"
                    .into(),
            )],
            ..Default::default()
        },
    )
    .await
    .err()
    .expect("a bad chaos file stops start-up");
    assert_ne!(code, Some(0));
    assert!(
        log.contains("fault 1 of the chaos file: `delay_ms` must be between 1 and 600000, not 0"),
        "{log}"
    );
}

/// The Postgres probe behind a [`FaultProxy`] in front of the machine's
/// PostgreSQL.
async fn behind_proxy(db: &TestDb) -> (TestApp, bv_fault_proxy::FaultProxy) {
    let proxy = bv_fault_proxy::FaultProxy::start("127.0.0.1:5432".parse().unwrap())
        .await
        .unwrap();
    let url = db
        .url()
        .replace(":5432/", &format!(":{}/", proxy.addr().port()));
    let manifest = manifest().replace(
        r#"allowed_outbound_hosts = ["postgres://127.0.0.1:5432"]"#,
        r#"allowed_outbound_hosts = ["postgres://127.0.0.1:*"]"#,
    );
    let app = spawn_app_with(
        &manifest,
        Spawn {
            env: vec![("SPIN_VARIABLE_DB_URL".into(), url)],
            ..Default::default()
        },
    )
    .await;
    (app, proxy)
}

/// Sends `sql` until it answers 200 or `within` passes; how long it took.
async fn recovers(app: &TestApp, sql: &str, within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let r = query(app, sql).await;
        if r.status == 200 {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "not recovered within {within:?}: {} {}",
            r.status,
            r.text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_slow_blackholed_then_reset_network_to_postgres_loses_no_write_and_recovers() {
    use bv_fault_proxy::NetFault;
    let db = TestDb::new("faults_net").await;
    let (app, proxy) = behind_proxy(&db).await;
    assert_eq!(
        query(&app, "CREATE TABLE t (n int PRIMARY KEY)")
            .await
            .status,
        200
    );
    let insert = |n: i32| format!("INSERT INTO t VALUES ({n})");
    assert_eq!(query(&app, &insert(1)).await.status, 200);

    // Slow: 100 ms each way on every packet.
    proxy.set(NetFault {
        latency: Duration::from_millis(100),
        ..NetFault::default()
    });
    let start = Instant::now();
    assert_eq!(query(&app, &insert(2)).await.status, 200);
    assert!(start.elapsed() >= Duration::from_millis(200));

    // A blackhole: the statement in flight hangs until the component's
    // request timeout (1.5 s) while the other components serve; whether
    // its row landed is not known to the caller, who gets a 504.
    proxy.set(NetFault {
        blackhole: true,
        ..NetFault::default()
    });
    let lost = tokio::spawn({
        let addr = app.addr;
        async move {
            request(
                addr,
                "POST",
                "/pg/query",
                &[],
                json!({ "sql": "INSERT INTO t VALUES (3)", "params": [] }).to_string(),
            )
            .await
            .status
        }
    });
    for _ in 0..10 {
        assert_eq!(app.get("/b/headers").await.status, 200);
    }
    assert_eq!(lost.await.unwrap(), 504);

    // The route comes back, then every connection is reset: the pool drops
    // what is dead and later statements get fresh connections.
    proxy.set(NetFault::default());
    proxy.reset();
    let took = recovers(&app, &insert(4), Duration::from_secs(10)).await;
    eprintln!("recovered after the reset in {took:?}");
    let rows = query(&app, "SELECT n FROM t ORDER BY n").await;
    assert_eq!(rows.status, 200, "{}", rows.text());
    let rows = rows.json()["rows"].clone();
    let ns: Vec<i64> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r[0]["value"].as_i64().unwrap())
        .collect();
    // Every write that was answered 200 is there; the blackholed one is
    // there or not, never twice.
    assert!(ns.starts_with(&[1, 2]), "{ns:?}");
    assert!(ns == [1, 2, 4] || ns == [1, 2, 3, 4], "{ns:?}");

    // Refused connections: a stopped server's port.
    proxy.refuse(true);
    proxy.reset();
    let refused = query(&app, &insert(5)).await;
    assert_ne!(refused.status, 200, "{}", refused.text());
    proxy.refuse(false);
    recovers(&app, &insert(6), Duration::from_secs(10)).await;
}

#[tokio::test]
async fn a_blackholed_then_reset_network_to_redis_mixes_up_no_replies_and_recovers() {
    redis_behind_a_blackhole("strict").await;
}

/// Under `reuse`, the requests right after a few that timed out are answered
/// at once, not after the instance that timed out has gone.
#[tokio::test]
async fn after_timeouts_a_reused_instance_answers_at_once() {
    redis_behind_a_blackhole("reuse").await;
}

async fn redis_behind_a_blackhole(policy: &str) {
    use bv_fault_proxy::{FaultProxy, NetFault};
    let _lock = crate::redis::redis_shared_lock();
    let proxy = FaultProxy::start("127.0.0.1:6379".parse().unwrap())
        .await
        .unwrap();
    let address = format!("redis://127.0.0.1:{}", proxy.addr().port());
    let app = spawn_app(
        &r#"spin_manifest_version = 2
[application]
name = "redis-faults"
[[trigger.http]]
route = "/..."
component = "probe"
[component.probe]
source = "{wasm:redis-probe}"
allowed_outbound_hosts = ["redis://127.0.0.1:*"]
[component.probe.tool.bv]
request_timeout_ms = 1000
instance_policy = "POLICY"
"#
        .replace("POLICY", policy),
    )
    .await;
    let prefix = format!("bv-faults-{}", std::process::id());
    let op = |command: Value| {
        let mut command = command;
        command["address"] = json!(address);
        let addr = app.addr;
        async move {
            let r = request(addr, "POST", "/redis", &[], command.to_string()).await;
            (r.status, r.json())
        }
    };
    let key = |n: u32| format!("{prefix}-{n}");
    assert_eq!(
        op(json!({"op": "set", "key": key(0), "value": "v0"}))
            .await
            .0,
        200
    );

    // Blackholed: commands in flight get no reply; the caller gets the
    // request timeout.
    proxy.set(NetFault {
        blackhole: true,
        ..NetFault::default()
    });
    let stuck: Vec<_> = (1..=3)
        .map(|n| {
            tokio::spawn(op(
                json!({"op": "set", "key": key(n), "value": format!("v{n}")}),
            ))
        })
        .collect();
    for s in stuck {
        let (status, body) = s.await.unwrap();
        assert_eq!(status, 504, "{body}");
    }

    // Back: the held commands arrive late, and every later reply still
    // goes to the command it answers.
    proxy.set(NetFault::default());
    for n in 10..30 {
        let (status, body) =
            op(json!({"op": "set", "key": key(n), "value": format!("v{n}")})).await;
        assert_eq!(status, 200, "set {n}: {body}");
        let (status, body) = op(json!({"op": "get", "key": key(n)})).await;
        assert_eq!(
            (status, body),
            (200, json!({"bin": format!("v{n}")})),
            "get {n}"
        );
    }

    // Reset: the shared connection is replaced; commands go on.
    proxy.reset();
    let start = Instant::now();
    loop {
        let (status, body) = op(json!({"op": "get", "key": key(0)})).await;
        if status == 200 {
            assert_eq!(body, json!({"bin": "v0"}));
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{status} {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("redis recovered after the reset in {:?}", start.elapsed());
    let keys: Vec<String> = (0..30).map(key).collect();
    op(json!({"op": "del", "keys": keys})).await;
}
