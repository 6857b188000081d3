//! Rate limits kept in the real Redis (127.0.0.1:6379).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::harness::*;

/// An application name no other test (or earlier run) uses, so its buckets
/// in Redis are its own.
fn unique_name(test: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("rl-{test}-{}-{nanos}", std::process::id())
}

/// The probe on `/limited/...` with `rate_limit = { limit }` and on
/// `/free/...` without a limit; `redis_url` is a variable.
fn limited_app(name: &str, limit: &str, redis_url: &str) -> String {
    format!(
        r#"spin_manifest_version = 2
[application]
name = "{name}"

[variables]
limits_redis = {{ default = "{redis_url}" }}

[[trigger.http]]
route = "/limited/..."
component = "limited"

[[trigger.http]]
route = "/free/..."
component = "free"

[component.limited]
source = "{{probe}}"
[component.limited.tool.bv]
rate_limit = {{ {limit}, redis = "{{{{ limits_redis }}}}" }}

[component.free]
source = "{{probe}}"
"#
    )
}

const REDIS: &str = "redis://127.0.0.1:6379";

#[tokio::test]
async fn the_limit_answers_429_with_retry_after_and_ratelimit_headers() {
    let name = unique_name("headers");
    let app = spawn_app(&limited_app(&name, "requests = 3, per_seconds = 60", REDIS)).await;
    for left in [2, 1, 0] {
        let reply = app.get("/limited/headers").await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(reply.headers["ratelimit-policy"], r#""limited";q=3;w=60"#);
        let ratelimit = reply.headers["ratelimit"].to_str().unwrap().to_string();
        assert!(
            ratelimit.starts_with(&format!(r#""limited";r={left};t="#)),
            "{ratelimit}"
        );
    }
    let reply = app.get("/limited/headers").await;
    assert_eq!(reply.status, 429, "{}", reply.text());
    assert_eq!(reply.headers["content-type"], "application/problem+json");
    assert_eq!(reply.json()["type"], "urn:bitvelocity:problem:rate-limited");
    // One request comes back every 20 s (3 per minute).
    let retry_after: u64 = reply.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (19..=20).contains(&retry_after),
        "Retry-After {retry_after}"
    );
    assert_eq!(reply.headers["ratelimit-policy"], r#""limited";q=3;w=60"#);
    assert!(reply.headers["ratelimit"]
        .to_str()
        .unwrap()
        .starts_with(r#""limited";r=0;t="#));

    // Another route of the app is not limited and says nothing about limits.
    for _ in 0..5 {
        let reply = app.get("/free/headers").await;
        assert_eq!(reply.status, 200);
        assert!(!reply.headers.contains_key("ratelimit"));
        assert!(!reply.headers.contains_key("ratelimit-policy"));
    }
    let metrics = app.admin_get("/metrics").await.text();
    assert!(
        metrics.contains(r#"bv_http_rate_limited_total{component="limited"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn two_bv_processes_draw_from_one_bucket() {
    let name = unique_name("shared");
    let manifest = limited_app(&name, "requests = 4, per_seconds = 60", REDIS);
    let first = spawn_app(&manifest).await;
    let second = spawn_app(&manifest).await;
    for app in [&first, &second, &first, &second] {
        assert_eq!(app.get("/limited/headers").await.status, 200);
    }
    // Four requests were spread over two processes: each has seen two, but
    // the bucket they share is empty.
    for app in [&first, &second] {
        let reply = app.get("/limited/headers").await;
        assert_eq!(reply.status, 429, "{}", reply.text());
    }
}

#[tokio::test]
async fn the_bucket_refills_with_time() {
    let name = unique_name("refill");
    let app = spawn_app(&limited_app(
        &name,
        "requests = 2, per_seconds = 1, burst = 2",
        REDIS,
    ))
    .await;
    assert_eq!(app.get("/limited/headers").await.status, 200);
    assert_eq!(app.get("/limited/headers").await.status, 200);
    let limited = app.get("/limited/headers").await;
    assert_eq!(limited.status, 429);
    assert_eq!(limited.headers["retry-after"], "1");
    // Two tokens a second: after 1.1 s the bucket is full again.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(app.get("/limited/headers").await.status, 200);
    assert_eq!(app.get("/limited/headers").await.status, 200);
    assert_eq!(app.get("/limited/headers").await.status, 429);
}

#[tokio::test]
async fn an_unreachable_redis_lets_requests_through_and_is_counted() {
    let name = unique_name("closed");
    // Port 1 on the loopback: nothing listens, connections are refused.
    let app = spawn_app(&limited_app(
        &name,
        "requests = 1, per_seconds = 60",
        "redis://127.0.0.1:1",
    ))
    .await;
    for i in 0..5 {
        let start = Instant::now();
        let reply = app.get("/limited/headers").await;
        assert_eq!(
            reply.status,
            200,
            "request {i} fails open: {}",
            reply.text()
        );
        assert!(
            start.elapsed() < Duration::from_millis(500),
            "request {i} took {:?}",
            start.elapsed()
        );
        // The policy is known, the state of the bucket is not.
        assert!(reply.headers.contains_key("ratelimit-policy"));
        assert!(!reply.headers.contains_key("ratelimit"));
    }
    let metrics = app.admin_get("/metrics").await.text();
    assert!(
        metrics.contains(r#"bv_http_rate_limit_errors_total{component="limited"} 5"#),
        "{metrics}"
    );
    wait_for_log(&app, "rate limits cannot reach Redis").await;
}

#[tokio::test]
async fn a_redis_that_never_answers_delays_requests_by_the_timeout_at_most() {
    // Accepts connections and never answers: connecting and every command
    // hang, so only the limit's timeout keeps requests moving.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = silent.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut connections = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            connections.push(stream);
        }
    });
    let name = unique_name("silent");
    let app = spawn_app(&limited_app(
        &name,
        "requests = 1, per_seconds = 60, timeout_ms = 50",
        &format!("redis://{address}"),
    ))
    .await;
    for i in 0..5 {
        let start = Instant::now();
        let reply = app.get("/limited/headers").await;
        assert_eq!(
            reply.status,
            200,
            "request {i} fails open: {}",
            reply.text()
        );
        assert!(
            start.elapsed() < Duration::from_millis(400),
            "request {i} took {:?}",
            start.elapsed()
        );
    }
    let metrics = app.admin_get("/metrics").await.text();
    assert!(
        metrics.contains(r#"bv_http_rate_limit_errors_total{component="limited"} 5"#),
        "{metrics}"
    );
    held.abort();
}

#[tokio::test]
async fn an_invalid_redis_address_stops_start_up() {
    let name = unique_name("invalid");
    let manifest = limited_app(&name, "requests = 1, per_seconds = 60", REDIS);
    let Err((code, log)) = try_spawn(
        &manifest,
        Spawn {
            env: vec![("SPIN_VARIABLE_LIMITS_REDIS".into(), "nonsense".into())],
            ..Spawn::default()
        },
    )
    .await
    else {
        panic!("bv started with an invalid Redis address");
    };
    assert_ne!(code, Some(0));
    assert!(
        log.contains("component.limited.tool.bv.rate_limit.redis"),
        "{log}"
    );
}
