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

/// The probe on `/limited/...` with `rate_limit = { limit }`, behind the
/// trusted proxies `trusted` (a TOML list); the limit's numbers may use the
/// variable `n` (default 2).
fn proxied_app(name: &str, trusted: &str, limit: &str) -> String {
    format!(
        r#"spin_manifest_version = 2
[application]
name = "{name}"
[application.tool.bv]
trusted_proxies = {trusted}

[variables]
n = {{ default = "2" }}

[[trigger.http]]
route = "/limited/..."
component = "limited"

[component.limited]
source = "{{probe}}"
[component.limited.tool.bv]
rate_limit = {{ {limit}, redis = "{REDIS}" }}
"#
    )
}

/// A GET of the probe's `/limited/headers` with `headers`: the status and
/// the `spin-client-addr` the component saw.
async fn get_from(app: &TestApp, headers: &[(&str, &str)]) -> (u16, String) {
    let reply = request(app.addr, "GET", "/limited/headers", headers, "").await;
    let client = if reply.status == 200 {
        reply.json()["headers"]["spin-client-addr"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    } else {
        String::new()
    };
    (reply.status, client)
}

#[tokio::test]
async fn behind_a_trusted_proxy_limits_and_spin_client_addr_follow_the_forwarded_address() {
    let name = unique_name("trusted");
    let app = spawn_app(&proxied_app(
        &name,
        r#"["10.0.0.0/8, 127.0.0.1"]"#,
        "requests = \"{{ n }}\", per_seconds = 60",
    ))
    .await;
    let xff = |v| [("x-forwarded-for", v)];
    let (status, client) = get_from(&app, &xff("203.0.113.1")).await;
    assert_eq!(status, 200);
    assert!(client.starts_with("203.0.113.1:"), "{client}");
    assert_eq!(get_from(&app, &xff("203.0.113.1")).await.0, 200);
    assert_eq!(get_from(&app, &xff("203.0.113.1")).await.0, 429);
    // Another forwarded client has a bucket of its own; an address the
    // client wrote itself, left of what the proxy appended, is ignored.
    let (status, client) = get_from(&app, &xff("203.0.113.1, 203.0.113.2")).await;
    assert_eq!(status, 200);
    assert!(client.starts_with("203.0.113.2:"), "{client}");
    // Trusted hops are skipped, from the right.
    let (status, client) = get_from(&app, &xff("203.0.113.1, 203.0.113.2, 10.1.2.3")).await;
    assert_eq!(status, 200);
    assert!(client.starts_with("203.0.113.2:"), "{client}");
    assert_eq!(get_from(&app, &xff("203.0.113.2")).await.0, 429);
    // RFC 7239 `Forwarded`, with a port.
    let (status, client) = get_from(
        &app,
        &[("forwarded", r#"for="[2001:db8::7]:4711";proto=http"#)],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(client, "[2001:db8::7]:4711");
    // Without a forwarded address the proxy itself is the client.
    let (status, client) = get_from(&app, &[]).await;
    assert_eq!(status, 200);
    assert!(client.starts_with("127.0.0.1:"), "{client}");
}

#[tokio::test]
async fn a_spoofed_x_forwarded_for_from_an_untrusted_client_changes_nothing() {
    let name = unique_name("untrusted");
    // A proxy is trusted, but not this client (127.0.0.1).
    let app = spawn_app(&proxied_app(
        &name,
        r#"["10.0.0.0/8"]"#,
        "requests = 2, per_seconds = 60",
    ))
    .await;
    let mut statuses = Vec::new();
    for i in 0..4 {
        let spoof = format!("198.51.100.{i}");
        let forwarded = format!("for={spoof}");
        let (status, client) = get_from(
            &app,
            &[("x-forwarded-for", &spoof), ("forwarded", &forwarded)],
        )
        .await;
        if status == 200 {
            assert!(client.starts_with("127.0.0.1:"), "{client}");
        }
        statuses.push(status);
    }
    assert_eq!(statuses, [200, 200, 429, 429]);
}

#[tokio::test]
async fn per_account_limits_follow_the_bearer_credential_across_addresses() {
    let name = unique_name("account");
    let app = spawn_app_with(
        &proxied_app(
            &name,
            r#"["127.0.0.1"]"#,
            "requests = \"{{ n }}\", per_seconds = 60, per_account = true",
        ),
        Spawn {
            // The numbers are variables: a deployment tunes them.
            env: vec![("SPIN_VARIABLE_N".into(), "3".into())],
            ..Spawn::default()
        },
    )
    .await;
    let token = format!("Bearer rl-account-{name}");
    let other = format!("Bearer rl-other-{name}");
    // One account from three addresses: three requests, then refused from
    // a fourth address whose own bucket is full.
    for from in ["192.0.2.1", "192.0.2.2", "192.0.2.3"] {
        let headers = [("x-forwarded-for", from), ("authorization", token.as_str())];
        assert_eq!(get_from(&app, &headers).await.0, 200, "{from}");
    }
    let fourth = [
        ("x-forwarded-for", "192.0.2.4"),
        ("authorization", token.as_str()),
    ];
    assert_eq!(get_from(&app, &fourth).await.0, 429);
    // The fourth address without that credential, or with another: fine.
    assert_eq!(
        get_from(&app, &[("x-forwarded-for", "192.0.2.4")]).await.0,
        200
    );
    let another = [
        ("x-forwarded-for", "192.0.2.4"),
        ("authorization", other.as_str()),
    ];
    assert_eq!(get_from(&app, &another).await.0, 200);
    // The refused request took nothing: the fourth address has one token
    // left, then none, and the other account (one left) is refused there.
    assert_eq!(get_from(&app, &another).await.0, 200);
    assert_eq!(get_from(&app, &another).await.0, 429);
}

#[tokio::test]
async fn a_rate_limit_variable_that_is_not_a_number_stops_start_up() {
    let name = unique_name("nan");
    let manifest = proxied_app(&name, "[]", "requests = \"{{ n }}\", per_seconds = 60");
    let Err((code, log)) = try_spawn(
        &manifest,
        Spawn {
            env: vec![("SPIN_VARIABLE_N".into(), "lots".into())],
            ..Spawn::default()
        },
    )
    .await
    else {
        panic!("bv started with a rate limit of `lots`");
    };
    assert_ne!(code, Some(0));
    assert!(
        log.contains("component.limited.tool.bv.rate_limit.requests"),
        "{log}"
    );
}
