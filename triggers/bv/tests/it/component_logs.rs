//! Components' stdout and stderr: every line a JSON log line of `bv`'s
//! tagged with the component and stream, at the level the line names (or
//! info/warn), filtered by `log_level`, in the trace of the request that
//! printed it; metric lines (`bv_service::telemetry`) become `bv_app_*`
//! series on the admin `/metrics`. The `log-probe` test component writes
//! request bodies to its stdout/stderr as they are.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::*;

/// Three instances of the log probe: `chatty` (the application's level,
/// debug; a fresh instance per request, so its partial last line is
/// flushed at once), `quiet` (warn) and `silent` (off).
const MANIFEST: &str = r#"spin_manifest_version = 2
[application]
name = "component-logs"
[application.tool.bv]
log_level = "debug"

[[trigger.http]]
route = "/chatty/..."
component = "chatty"
[[trigger.http]]
route = "/quiet/..."
component = "quiet"
[[trigger.http]]
route = "/silent/..."
component = "silent"

[component.chatty]
source = "{wasm:log-probe}"
[component.chatty.tool.bv]
instance_policy = "strict"

[component.quiet]
source = "{wasm:log-probe}"
[component.quiet.tool.bv]
log_level = "warn"

[component.silent]
source = "{wasm:log-probe}"
[component.silent.tool.bv]
log_level = "off"
"#;

/// `RUST_LOG` lets every guest line through, so `log_level` alone decides.
fn env() -> Vec<(String, String)> {
    vec![("RUST_LOG".into(), "info,guest=trace".into())]
}

async fn start() -> TestApp {
    spawn_app_with(
        MANIFEST,
        Spawn {
            env: env(),
            ..Default::default()
        },
    )
    .await
}

async fn write(app: &TestApp, path: &str, body: &str) {
    let r = app.send("POST", path, body.to_string()).await;
    assert_eq!(r.status, 204, "{path}: {}", r.text());
}

/// bv's log lines that come from components' output.
fn guest_lines(app: &TestApp) -> Vec<Value> {
    app.log()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["target"] == "guest")
        .collect()
}

/// The guest line whose message is `message`, waiting up to 10 s for it.
async fn line(app: &TestApp, message: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(l) = guest_lines(app)
            .into_iter()
            .find(|l| l["message"] == message)
        {
            return l;
        }
        assert!(
            Instant::now() < deadline,
            "no guest line `{message}` in:\n{}",
            app.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The first guest line whose message contains `needle` (waits up to 10 s).
async fn line_containing(app: &TestApp, needle: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let found = guest_lines(app)
            .into_iter()
            .find(|l| l["message"].as_str().is_some_and(|m| m.contains(needle)));
        if let Some(l) = found {
            return l;
        }
        assert!(
            Instant::now() < deadline,
            "no guest line containing `{needle}` in:\n{}",
            app.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[track_caller]
fn assert_tagged(line: &Value, component: &str, stream: &str, level: &str) {
    assert_eq!(
        (
            line["component"].as_str(),
            line["stream"].as_str(),
            line["level"].as_str()
        ),
        (Some(component), Some(stream), Some(level)),
        "{line}"
    );
}

#[tokio::test]
async fn output_lines_are_tagged_leveled_and_filtered_per_component() {
    let app = start().await;
    write(
        &app,
        "/chatty/stdout",
        "hello out\nWARN: careful\ndebug: details\ntrace: too deep\n\
         {\"level\":\"error\",\"msg\":\"json boom\",\"orderId\":\"o-1\"}\nno newline at the end",
    )
    .await;
    write(&app, "/chatty/stderr", "oops\r\n\n").await;
    write(
        &app,
        "/quiet/stdout",
        "quiet info\nDEBUG: quiet debug\nERROR: quiet error\n",
    )
    .await;
    write(&app, "/quiet/stderr", "quiet oops\n").await;
    write(&app, "/silent/stderr", "ERROR: silent error\n").await;
    // Lines of one write are handled in order: once this metric is counted,
    // the silent error before it was dropped, not pending.
    write(
        &app,
        "/silent/stdout",
        "ERROR: silent too\n{\"bv.metric\":\"silent_marker\",\"kind\":\"counter\",\"value\":1}\n",
    )
    .await;

    assert_tagged(&line(&app, "hello out").await, "chatty", "stdout", "INFO");
    assert_tagged(&line(&app, "careful").await, "chatty", "stdout", "WARN");
    assert_tagged(&line(&app, "details").await, "chatty", "stdout", "DEBUG");
    let json_line = line(&app, "json boom").await;
    assert_tagged(&json_line, "chatty", "stdout", "ERROR");
    assert_eq!(
        json_line["guest_fields"],
        json!({ "orderId": "o-1" }),
        "the JSON line's other members are kept: {json_line}"
    );
    // The instance ended (strict policy) with its last line unfinished.
    assert_tagged(
        &line(&app, "no newline at the end").await,
        "chatty",
        "stdout",
        "INFO",
    );
    assert_tagged(&line(&app, "oops").await, "chatty", "stderr", "WARN");
    assert_tagged(&line(&app, "quiet error").await, "quiet", "stdout", "ERROR");
    assert_tagged(&line(&app, "quiet oops").await, "quiet", "stderr", "WARN");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !app
        .admin_get("/metrics")
        .await
        .text()
        .contains("bv_app_silent_marker_total{component=\"silent\"} 1\n")
    {
        assert!(
            Instant::now() < deadline,
            "the silent metric line was not counted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let messages: Vec<String> = guest_lines(&app)
        .iter()
        .map(|l| l["message"].as_str().unwrap_or_default().to_string())
        .collect();
    for dropped in [
        "too deep",
        "quiet info",
        "quiet debug",
        "silent error",
        "silent too",
    ] {
        assert!(
            !messages.iter().any(|m| m == dropped),
            "`{dropped}` is below its component's level: {messages:?}"
        );
    }
    assert!(
        !messages
            .iter()
            .any(|m| m.is_empty() || m.contains("bv.metric")),
        "blank lines and metric lines are not logged: {messages:?}"
    );
}

/// Polls the admin `/metrics` until every line of `expected` is in it.
async fn metrics_with(app: &TestApp, expected: &[&str]) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = app.admin_get("/metrics").await.text();
        let missing: Vec<_> = expected
            .iter()
            .filter(|e| !text.lines().any(|l| l == **e))
            .collect();
        if missing.is_empty() {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "missing from /metrics: {missing:?}\n{text}\nlog:\n{}",
            app.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn metric(app: &TestApp, component: &str, body: Value) {
    write(app, &format!("/{component}/metric"), &body.to_string()).await;
}

#[tokio::test]
async fn metric_lines_become_app_metrics_with_exact_values() {
    let app = start().await;
    for _ in 0..3 {
        metric(
            &app,
            "chatty",
            json!({ "name": "widgets", "kind": "counter", "value": 2, "labels": { "color": "red" } }),
        )
        .await;
    }
    metric(
        &app,
        "quiet",
        json!({ "name": "widgets", "kind": "counter", "value": 1, "labels": { "color": "red" } }),
    )
    .await;
    metric(
        &app,
        "chatty",
        json!({ "name": "queue_depth", "kind": "gauge", "value": 9 }),
    )
    .await;
    metric(
        &app,
        "chatty",
        json!({ "name": "queue_depth", "kind": "gauge", "value": 7.5 }),
    )
    .await;
    for seconds in [0.2, 3.0] {
        metric(
            &app,
            "chatty",
            json!({ "name": "work_seconds", "kind": "histogram", "value": seconds }),
        )
        .await;
    }
    // Written by hand, by a component whose logs are off: still counted.
    write(
        &app,
        "/silent/stdout",
        "{\"bv.metric\":\"widgets_total\",\"kind\":\"counter\",\"value\":5,\"labels\":{\"color\":\"blue\"}}\n",
    )
    .await;
    // Malformed: logged, not counted. A bad name is reported once.
    write(
        &app,
        "/chatty/stdout",
        "{\"bv.metric\":\"widgets\",\"kind\":\"counter\",\"value\":-1,\"labels\":{\"color\":\"red\"}}\n\
         {\"bv.metric\":\"bad-name\",\"kind\":\"counter\",\"value\":1}\n\
         {\"bv.metric\":\"bad-name\",\"kind\":\"counter\",\"value\":1}\n\
         {\"bv.metric\":\"widgets\",\"kind\":\"gauge\",\"value\":1}\n",
    )
    .await;

    let text = metrics_with(
        &app,
        &[
            "# TYPE bv_app_widgets counter",
            "bv_app_widgets_total{component=\"chatty\",color=\"red\"} 6",
            "bv_app_widgets_total{component=\"quiet\",color=\"red\"} 1",
            "bv_app_widgets_total{component=\"silent\",color=\"blue\"} 5",
            "# TYPE bv_app_queue_depth gauge",
            "bv_app_queue_depth{component=\"chatty\"} 7.5",
            "# TYPE bv_app_work_seconds histogram",
            "bv_app_work_seconds_bucket{le=\"0.25\",component=\"chatty\"} 1",
            "bv_app_work_seconds_bucket{le=\"5.0\",component=\"chatty\"} 2",
            "bv_app_work_seconds_count{component=\"chatty\"} 2",
            "bv_app_work_seconds_sum{component=\"chatty\"} 3.2",
        ],
    )
    .await;
    assert!(!text.contains("bad"), "{text}");

    // Warnings come in the order of the lines: once the last is there, all
    // are.
    line_containing(&app, "`bv_app_widgets_total` is a counter").await;
    let warnings: Vec<String> = guest_lines(&app)
        .into_iter()
        .filter(|l| l["level"] == "WARN" && l["component"] == "chatty")
        .map(|l| l["message"].as_str().unwrap_or_default().to_string())
        .collect();
    let about = |needle: &str| warnings.iter().filter(|m| m.contains(needle)).count();
    assert_eq!(
        about("malformed metric line dropped (a counter's `value` must be a whole number"),
        1,
        "{warnings:?}"
    );
    assert_eq!(about("`bad-name` is invalid"), 1, "{warnings:?}");
    assert_eq!(
        about("`bv_app_widgets_total` is a counter"),
        1,
        "{warnings:?}"
    );
}

#[tokio::test]
async fn a_line_carries_the_trace_of_the_request_that_printed_it() {
    let receiver = crate::otlp_support::OtlpReceiver::start().await;
    let mut env = crate::otlp_support::tracing_env(&receiver.endpoint());
    env.extend(self::env());
    let app = spawn_app_with(
        MANIFEST,
        Spawn {
            env,
            ..Default::default()
        },
    )
    .await;
    let trace_id = "0af7651916cd43dd8448eb211c80319c";
    let r = request(
        app.addr,
        "POST",
        "/quiet/stderr",
        &[("traceparent", &format!("00-{trace_id}-b7ad6b7169203331-01"))],
        "traced line\n",
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.text());
    let l = line(&app, "traced line").await;
    assert_tagged(&l, "quiet", "stderr", "WARN");
    assert_eq!(l["trace_id"], trace_id, "{l}");
    assert_eq!(l["route"], "/quiet/...", "{l}");
    assert!(
        l["span_id"]
            .as_str()
            .is_some_and(|s| s.len() == 16 && s != "b7ad6b7169203331"),
        "the line is in bv's own span of the request: {l}"
    );
}

/// The order service's outcomes after known checkouts: exact counts.
#[tokio::test]
async fn order_outcomes_are_counted_by_the_real_order_service() {
    let shop = crate::commerce_order::Shop::start("metrics").await;
    let mug = shop.product("MUG", 1299, 10).await;
    let mut paid = Vec::new();
    for (i, token) in [
        "tok_visa",
        "tok_decline",
        "tok_visa",
        "tok_decline",
        "tok_visa",
    ]
    .into_iter()
    .enumerate()
    {
        let customer = format!("m{i}");
        shop.add_to_cart(&customer, &mug, 1).await;
        let r = shop.checkout(&customer, "k-1", token).await;
        let expected = if token == "tok_visa" { 201 } else { 402 };
        assert_eq!(r.status, expected, "{}", r.text());
        if token == "tok_visa" {
            paid.push((customer, r.json()["orderId"].as_str().unwrap().to_string()));
        }
    }
    // A replayed checkout is not a second order.
    let r = shop.checkout("m0", "k-1", "tok_visa").await;
    assert_eq!(r.headers["idempotent-replayed"], "true");
    let (customer, id) = &paid[0];
    let r = shop
        .call(
            "POST",
            &format!("/api/orders/{id}/cancel"),
            &[crate::auth_support::customer(customer)],
            "",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());

    let text = metrics_with(
        &shop.app,
        &[
            "bv_app_orders_total{component=\"order\",outcome=\"paid\"} 3",
            "bv_app_orders_total{component=\"order\",outcome=\"failed\",reason=\"card-declined\"} 2",
            "bv_app_orders_total{component=\"order\",outcome=\"cancelled\"} 1",
            "bv_app_saga_compensations_total{component=\"order\",result=\"done\",step=\"authorize-payment\"} 2",
            "bv_app_stock_reservations_total{component=\"inventory\",outcome=\"created\"} 5",
            "bv_app_checkout_saga_seconds_count{component=\"order\",outcome=\"paid\"} 3",
            "bv_app_checkout_saga_seconds_count{component=\"order\",outcome=\"failed\"} 2",
        ],
    )
    .await;
    // The cart looked each product up: hits and misses add up to lookups.
    let lookups: u64 = text
        .lines()
        .filter(|l| l.starts_with("bv_app_product_cache_lookups_total{component=\"cart\""))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert!(lookups >= 5, "{text}");
}
