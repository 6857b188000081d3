//! Traces and logs: what `bv` exports over OTLP (collected by the in-test
//! receiver of `otlp_support`) and the JSON lines it writes to stderr.

use std::time::Duration;

use crate::harness::*;
use crate::otlp_support::*;
use crate::pg_support::TestDb;

/// The caller's trace, as a W3C `traceparent` would name it.
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

fn inbound_traceparent() -> String {
    format!("00-{TRACE_ID}-{CALLER_SPAN}-01")
}

const WAIT: Duration = Duration::from_secs(15);

/// Starts `bv` on `manifest`, exporting to `receiver`, plus `env`.
async fn traced_app(manifest: &str, receiver: &OtlpReceiver, env: &[(&str, &str)]) -> TestApp {
    let mut all = tracing_env(&receiver.endpoint());
    all.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    spawn_app_with(
        manifest,
        Spawn {
            env: all,
            ..Default::default()
        },
    )
    .await
}

async fn get_traced(app: &TestApp, path: &str) -> Reply {
    request(
        app.addr,
        "GET",
        path,
        &[("traceparent", &inbound_traceparent())],
        "",
    )
    .await
}

fn find<'a>(spans: &'a [SpanRecord], name: &str) -> Option<&'a SpanRecord> {
    spans.iter().find(|s| s.name == name)
}

fn named<'a>(spans: &'a [SpanRecord], name: &str) -> &'a SpanRecord {
    find(spans, name).unwrap_or_else(|| panic!("no span `{name}` in:\n{}", describe(spans)))
}

/// The receiver reads OTLP JSON as the exporter writes it (hex ids,
/// `intValue` as a string, numeric kind).
#[tokio::test]
async fn receiver_reads_otlp_json() {
    let receiver = OtlpReceiver::start().await;
    let body = serde_json::json!({"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "bv"}}]},
        "scopeSpans": [{"spans": [{
            "traceId": "0AF7651916CD43DD8448EB211C80319C",
            "spanId": "b7ad6b7169203331",
            "parentSpanId": "",
            "name": "GET /x",
            "kind": 2,
            "attributes": [
                {"key": "http.response.status_code", "value": {"intValue": "200"}},
                {"key": "url.path", "value": {"stringValue": "/x"}}
            ],
            "status": {"code": 2}
        }]}]
    }]});
    let reply = request(
        receiver
            .endpoint()
            .strip_prefix("http://")
            .unwrap()
            .parse()
            .unwrap(),
        "POST",
        "/v1/traces",
        &[("content-type", "application/json")],
        body.to_string(),
    )
    .await;
    assert_eq!(reply.status, 200);
    let spans = receiver
        .wait_for_spans(Duration::from_secs(1), |s| !s.is_empty())
        .await;
    let span = &spans[0];
    assert_eq!(span.trace_id, "0af7651916cd43dd8448eb211c80319c");
    assert_eq!(span.span_id, "b7ad6b7169203331");
    assert_eq!(span.parent_span_id, "");
    assert_eq!(span.kind, KIND_SERVER);
    assert_eq!(span.service_name, "bv");
    assert_eq!(span.status_code, 2);
    assert_eq!(span.attr_i64("http.response.status_code"), Some(200));
    assert_eq!(span.attr_str("url.path"), Some("/x"));
}

#[tokio::test]
async fn a_request_span_continues_the_callers_trace() {
    let receiver = OtlpReceiver::start().await;
    let app = traced_app(&probe_app("/p/...", ""), &receiver, &[]).await;
    let reply = get_traced(&app, "/p/headers").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let seen_by_guest = reply.json()["headers"]["traceparent"]
        .as_str()
        .expect("the guest gets a traceparent")
        .to_string();

    let spans = receiver
        .wait_for_spans(WAIT, |s| {
            find(s, "GET /p/...").is_some() && find(s, "instantiate probe").is_some()
        })
        .await;
    let server = named(&spans, "GET /p/...");
    assert_eq!(server.kind, KIND_SERVER);
    assert_eq!(server.trace_id, TRACE_ID);
    assert_eq!(server.parent_span_id, CALLER_SPAN);
    assert_eq!(server.service_name, "bv");
    assert_eq!(server.attr_str("http.request.method"), Some("GET"));
    assert_eq!(server.attr_str("http.route"), Some("/p/..."));
    assert_eq!(server.attr_str("url.path"), Some("/p/headers"));
    assert_eq!(server.attr_i64("http.response.status_code"), Some(200));
    assert_eq!(server.attr_str("bv.component"), Some("probe"));
    assert_ne!(server.status_code, 2, "a 200 is not an error");
    // The guest sees the server span as its parent, so what it forwards
    // continues this trace under this request.
    assert_eq!(
        seen_by_guest,
        format!("00-{TRACE_ID}-{}-01", server.span_id)
    );

    let instantiate = named(&spans, "instantiate probe");
    assert_eq!(instantiate.trace_id, TRACE_ID);
    assert_eq!(instantiate.parent_span_id, server.span_id);
    assert_eq!(instantiate.kind, KIND_INTERNAL);
    assert_eq!(instantiate.attr_str("bv.component"), Some("probe"));
}

#[tokio::test]
async fn a_failing_request_is_an_error_span_and_a_request_without_traceparent_starts_a_trace() {
    let receiver = OtlpReceiver::start().await;
    let app = traced_app(&probe_app("/p/...", ""), &receiver, &[]).await;
    assert_eq!(app.get("/p/status/503").await.status, 503);
    let spans = receiver
        .wait_for_spans(WAIT, |s| find(s, "GET /p/...").is_some())
        .await;
    let server = named(&spans, "GET /p/...");
    assert_eq!(server.parent_span_id, "", "a root span");
    assert_eq!(server.trace_id.len(), 32);
    assert_ne!(server.trace_id, TRACE_ID);
    assert_eq!(server.attr_i64("http.response.status_code"), Some(503));
    assert_eq!(server.status_code, 2, "a 5xx is an error");
}

#[tokio::test]
async fn a_chained_request_is_a_child_of_the_callers_client_span() {
    let receiver = OtlpReceiver::start().await;
    let manifest = CHAIN;
    let app = traced_app(manifest, &receiver, &[]).await;
    let reply = get_traced(&app, "/front/fetch?url=http://back.spin.internal/headers").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let fetched = reply.json();
    assert_eq!(fetched["status"], 200, "{fetched}");
    let back_view: serde_json::Value =
        serde_json::from_str(fetched["body"].as_str().unwrap()).unwrap();
    let seen_by_back = back_view["headers"]["traceparent"]
        .as_str()
        .expect("the chained request carries a traceparent")
        .to_string();

    let spans = receiver
        .wait_for_spans(WAIT, |s| {
            find(s, "GET /front/...").is_some()
                && find(s, "GET /...").is_some()
                && s.iter().any(|x| x.kind == KIND_CLIENT)
        })
        .await;
    let front = named(&spans, "GET /front/...");
    // A chained request is routed as Spin routes it: by the catch-all `/...`.
    let back = named(&spans, "GET /...");
    let client = spans.iter().find(|s| s.kind == KIND_CLIENT).unwrap();
    for span in [front, back, client] {
        assert_eq!(span.trace_id, TRACE_ID, "one trace:\n{}", describe(&spans));
    }
    assert_eq!(front.parent_span_id, CALLER_SPAN);
    assert_eq!(client.name, "GET");
    assert_eq!(client.parent_span_id, front.span_id, "{}", describe(&spans));
    assert_eq!(client.attr_str("http.request.method"), Some("GET"));
    assert_eq!(
        client.attr_str("server.address"),
        Some("back.spin.internal")
    );
    assert_eq!(
        client.attr_str("url.full"),
        Some("http://back.spin.internal/headers")
    );
    assert_eq!(client.attr_i64("http.response.status_code"), Some(200));
    assert_eq!(client.attr_str("bv.component"), Some("front"));
    assert_eq!(back.kind, KIND_SERVER);
    assert_eq!(back.parent_span_id, client.span_id, "{}", describe(&spans));
    assert_eq!(back.attr_str("bv.component"), Some("back"));
    assert_eq!(back.attr_i64("http.response.status_code"), Some(200));
    assert_eq!(seen_by_back, format!("00-{TRACE_ID}-{}-01", back.span_id));
}

fn pg_manifest() -> String {
    r#"spin_manifest_version = 2
[application]
name = "pg"
[variables]
db_url = { required = true }
[[trigger.http]]
route = "/pg/..."
component = "pg"
[component.pg]
source = "{wasm:pg-probe}"
allowed_outbound_hosts = ["postgres://127.0.0.1:5432"]
[component.pg.variables]
db_url = "{{ db_url }}"
"#
    .to_string()
}

#[tokio::test]
async fn postgres_statements_are_client_spans_of_the_request() {
    let db = TestDb::new("tracing").await;
    let receiver = OtlpReceiver::start().await;
    let url = db.url();
    let app = traced_app(
        &pg_manifest(),
        &receiver,
        &[("SPIN_VARIABLE_DB_URL", url.as_str())],
    )
    .await;
    let traceparent = inbound_traceparent();
    for (sql, status) in [
        ("SELECT 1 AS one", 200),
        ("SELECT * FROM no_such_table", 500),
    ] {
        let body = serde_json::json!({"sql": sql, "params": []}).to_string();
        let reply = request(
            app.addr,
            "POST",
            "/pg/query",
            &[("traceparent", traceparent.as_str())],
            body,
        )
        .await;
        assert_eq!(reply.status, status, "{sql}: {}", reply.text());
    }

    let spans = receiver
        .wait_for_spans(WAIT, |s| {
            s.iter().filter(|x| x.name == "POST /pg/...").count() == 2
                && s.iter().filter(|x| x.name == "SELECT").count() == 2
        })
        .await;
    let servers: Vec<&SpanRecord> = spans.iter().filter(|s| s.name == "POST /pg/...").collect();
    for db_span in spans.iter().filter(|s| s.name == "SELECT") {
        assert_eq!(db_span.kind, KIND_CLIENT);
        assert_eq!(db_span.trace_id, TRACE_ID);
        assert!(
            servers.iter().any(|s| s.span_id == db_span.parent_span_id),
            "a statement's parent is its request:\n{}",
            describe(&spans)
        );
        assert_eq!(db_span.attr_str("db.system.name"), Some("postgresql"));
        assert_eq!(db_span.attr_str("db.operation.name"), Some("SELECT"));
        assert_eq!(db_span.attr_str("bv.component"), Some("pg"));
    }
    let ok = spans
        .iter()
        .find(|s| s.attr_str("db.query.text") == Some("SELECT 1 AS one"))
        .expect("the statement's text is recorded");
    assert_ne!(ok.status_code, 2);
    let failed = spans
        .iter()
        .find(|s| s.attr_str("db.query.text") == Some("SELECT * FROM no_such_table"))
        .expect("the failed statement's span");
    assert_eq!(failed.status_code, 2);
    assert_eq!(failed.attr_str("db.response.status_code"), Some("42P01"));
}

#[tokio::test]
async fn with_tracing_off_nothing_is_exported_and_traceparent_passes_through() {
    let receiver = OtlpReceiver::start().await;
    let app = traced_app(
        &probe_app("/p/...", ""),
        &receiver,
        &[("OTEL_SDK_DISABLED", "true")],
    )
    .await;
    let reply = get_traced(&app, "/p/headers").await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.json()["headers"]["traceparent"],
        inbound_traceparent().as_str(),
        "untouched when tracing is off"
    );
    // Past the idle instance's drop and several export intervals.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert!(
        receiver.spans().is_empty(),
        "{}",
        describe(&receiver.spans())
    );
    assert!(receiver.bodies("/v1/traces").is_empty());
    for line in app.stderr.lock().unwrap().lines() {
        let line: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        assert!(line.get("trace_id").is_none(), "{line}");
    }
}

#[tokio::test]
async fn log_lines_are_json_and_carry_the_trace_of_their_request() {
    let receiver = OtlpReceiver::start().await;
    let app = traced_app(&probe_app("/p/...", ""), &receiver, &[]).await;
    // Not in allowed_outbound_hosts: denied, and the denial is logged.
    let reply = get_traced(&app, "/p/fetch?url=http://denied.example/").await;
    assert_eq!(reply.status, 502, "{}", reply.text());
    wait_for_log(&app, "outbound request denied").await;

    let stderr = app.stderr.lock().unwrap().clone();
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|line| {
            serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"))
        })
        .collect();
    for line in &lines {
        let time = line["time"].as_str().expect("time");
        assert!(
            time.ends_with('Z') && chrono::DateTime::parse_from_rfc3339(time).is_ok(),
            "time is RFC 3339 UTC: {line}"
        );
        for key in ["level", "target", "message"] {
            assert!(line[key].is_string(), "no `{key}`: {line}");
        }
    }
    let loaded = lines
        .iter()
        .find(|l| l["message"].as_str().unwrap().starts_with("loaded "))
        .expect("the start-up line");
    assert!(loaded.get("trace_id").is_none(), "outside any request");

    let denied = lines
        .iter()
        .find(|l| {
            l["message"]
                .as_str()
                .unwrap()
                .starts_with("outbound request denied")
        })
        .unwrap();
    assert_eq!(denied["level"], "WARN");
    assert_eq!(denied["component"], "probe");
    assert_eq!(denied["route"], "/p/...");
    assert_eq!(denied["trace_id"], TRACE_ID, "{denied}");
    let spans = receiver
        .wait_for_spans(WAIT, |s| find(s, "GET /p/...").is_some())
        .await;
    assert_eq!(
        denied["span_id"],
        named(&spans, "GET /p/...").span_id.as_str(),
        "the line names its request's span"
    );
}

#[tokio::test]
async fn text_logs_on_request() {
    let app = spawn_app_with(
        &probe_app("/p/...", ""),
        Spawn {
            args: vec!["--log-format".into(), "text".into()],
            ..Default::default()
        },
    )
    .await;
    wait_for_log(&app, "loaded 1 component").await;
    let stderr = app.stderr.lock().unwrap().clone();
    let line = stderr
        .lines()
        .find(|l| l.contains("loaded 1 component"))
        .unwrap();
    assert!(!line.starts_with('{'), "{line}");
    assert!(line.contains("INFO"), "{line}");
}

#[tokio::test]
async fn a_bad_otel_setting_stops_start_up() {
    let receiver = OtlpReceiver::start().await;
    let mut env = tracing_env(&receiver.endpoint());
    env.push(("OTEL_EXPORTER_OTLP_PROTOCOL".into(), "http/xml".into()));
    let Err((code, log)) = try_spawn(
        &probe_app("/p/...", ""),
        Spawn {
            env,
            ..Default::default()
        },
    )
    .await
    else {
        panic!("bv started with OTEL_EXPORTER_OTLP_PROTOCOL=http/xml");
    };
    assert_eq!(code, Some(1));
    assert!(
        log.contains("OTEL_EXPORTER_OTLP_PROTOCOL `http/xml` is not a protocol"),
        "{log}"
    );
}

#[tokio::test]
async fn spans_still_queued_are_flushed_when_bv_stops() {
    let receiver = OtlpReceiver::start().await;
    // Batches would wait a minute: only the flush at exit can deliver them.
    let mut app = traced_app(
        &probe_app("/p/...", ""),
        &receiver,
        &[("OTEL_BSP_SCHEDULE_DELAY", "60000")],
    )
    .await;
    assert_eq!(get_traced(&app, "/p/headers").await.status, 200);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        receiver.spans().is_empty(),
        "{}",
        describe(&receiver.spans())
    );
    assert_eq!(app.terminate().await, Some(0));
    let spans = receiver.spans();
    let server = named(&spans, "GET /p/...");
    assert_eq!(server.trace_id, TRACE_ID);
}

#[tokio::test]
async fn redis_commands_and_mqtt_publishes_are_spans_of_the_request() {
    let receiver = OtlpReceiver::start().await;
    let redis = traced_app(
        r#"spin_manifest_version = 2
[application]
name = "redis-probe"
[[trigger.http]]
route = "/..."
component = "probe"
[component.probe]
source = "{wasm:redis-probe}"
allowed_outbound_hosts = ["redis://127.0.0.1:6379"]
"#,
        &receiver,
        &[],
    )
    .await;
    let command = serde_json::json!({
        "address": "redis://127.0.0.1:6379",
        "op": "get",
        "key": "bv-tracing-test-missing-key",
    });
    let reply = request(
        redis.addr,
        "POST",
        "/redis",
        &[("traceparent", inbound_traceparent().as_str())],
        command.to_string(),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());

    let mqtt = traced_app(
        r#"spin_manifest_version = 2
[application]
name = "mqtt-probe"
[[trigger.http]]
route = "/..."
component = "mqtt-probe"
[component.mqtt-probe]
source = "{wasm:mqtt-probe}"
allowed_outbound_hosts = ["mqtt://127.0.0.1:1883"]
[component.mqtt-probe.variables]
mqtt_address = "mqtt://127.0.0.1:1883"
"#,
        &receiver,
        &[],
    )
    .await;
    let topic = format!("bvtest-tracing-{}", std::process::id());
    let body = serde_json::json!({"topic": topic, "payload": "hello", "qos": 1});
    let reply = request(
        mqtt.addr,
        "POST",
        "/publish",
        &[("traceparent", inbound_traceparent().as_str())],
        body.to_string(),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());

    let spans = receiver
        .wait_for_spans(WAIT, |s| {
            find(s, "GET").is_some()
                && find(s, &format!("publish {topic}")).is_some()
                && s.iter().filter(|x| x.name == "POST /...").count() == 2
        })
        .await;
    let servers: Vec<&SpanRecord> = spans.iter().filter(|s| s.name == "POST /...").collect();
    let get = named(&spans, "GET");
    assert_eq!(get.kind, KIND_CLIENT);
    assert_eq!(get.attr_str("db.system.name"), Some("redis"));
    assert_eq!(get.attr_str("db.operation.name"), Some("GET"));
    let publish = named(&spans, &format!("publish {topic}"));
    assert_eq!(publish.kind, KIND_PRODUCER);
    assert_eq!(publish.attr_str("messaging.system"), Some("mqtt"));
    assert_eq!(
        publish.attr_str("messaging.destination.name"),
        Some(topic.as_str())
    );
    assert_eq!(publish.attr_str("bv.component"), Some("mqtt-probe"));
    for span in [get, publish] {
        assert_eq!(span.trace_id, TRACE_ID);
        assert!(
            servers.iter().any(|s| s.span_id == span.parent_span_id),
            "a client span's parent is its request:\n{}",
            describe(&spans)
        );
    }
}

/// The request counter of `component` in one OTLP/JSON metrics export, if
/// the export has it.
fn exported_requests(body: &serde_json::Value, component: &str) -> Option<f64> {
    let metrics = body["resourceMetrics"][0]["scopeMetrics"][0]["metrics"].as_array()?;
    let requests = metrics.iter().find(|m| m["name"] == "bv_http_requests")?;
    assert_eq!(requests["sum"]["isMonotonic"], true, "{requests}");
    requests["sum"]["dataPoints"]
        .as_array()?
        .iter()
        .filter(|point| {
            point["attributes"].as_array().is_some_and(|attributes| {
                attributes
                    .iter()
                    .any(|a| a["key"] == "component" && a["value"]["stringValue"] == component)
            })
        })
        .map(|point| point["asDouble"].as_f64().unwrap_or(0.0))
        .reduce(|a, b| a + b)
}

#[tokio::test]
async fn metrics_are_pushed_over_otlp_with_the_figures_of_metrics() {
    let receiver = OtlpReceiver::start().await;
    let app = traced_app(&probe_app("/p/...", ""), &receiver, &[]).await;
    for _ in 0..3 {
        assert_eq!(app.get("/p/headers").await.status, 200);
    }
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let pushed = receiver
            .json_bodies("/v1/metrics")
            .iter()
            .filter_map(|body| exported_requests(body, "probe"))
            .fold(0.0, f64::max);
        if pushed == 3.0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no OTLP export counted the 3 requests (best: {pushed}); got {} bodies",
            receiver.bodies("/v1/metrics").len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let body = &receiver.json_bodies("/v1/metrics")[0];
    let resource = body["resourceMetrics"][0]["resource"]["attributes"].to_string();
    assert!(resource.contains("service.name"), "{resource}");
    let text = app.admin_get("/metrics").await.text();
    assert!(
        text.contains("bv_http_requests_total{component=\"probe\""),
        "/metrics serves the same counter: {text}"
    );
}

/// `front` fetches `back` over service chaining.
const CHAIN: &str = r#"spin_manifest_version = 2
[application]
name = "chain"

[[trigger.http]]
route = "/front/..."
component = "front"

[[trigger.http]]
route = "/back/..."
component = "back"

[component.front]
source = "{probe}"
allowed_outbound_hosts = ["http://back.spin.internal"]

[component.back]
source = "{probe}"
"#;

/// `(trace id, span id, flags)` of a traceparent a guest saw.
fn parts(traceparent: &str) -> (String, String, String) {
    let p: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(p.len(), 4, "{traceparent}");
    assert_eq!(p[0], "00");
    (p[1].to_string(), p[2].to_string(), p[3].to_string())
}

/// The sampler decides before a request's spans exist: a request left out
/// exports nothing (no server span, no instantiation, no client span, no
/// chained request's span), and its guest gets a `traceparent` of its trace
/// with the sampled flag off, so the request it chains is left out too; a
/// caller's sampled flag is followed either way.
#[tokio::test]
async fn a_request_the_sampler_leaves_out_exports_nothing_and_says_so_downstream() {
    let receiver = OtlpReceiver::start().await;
    let app = traced_app(
        CHAIN,
        &receiver,
        &[
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0"),
        ],
    )
    .await;
    let fetch = "/front/fetch?url=http://back.spin.internal/headers";
    let back_saw = |reply: &Reply| -> String {
        let fetched = reply.json();
        assert_eq!(fetched["status"], 200, "{fetched}");
        let back: serde_json::Value =
            serde_json::from_str(fetched["body"].as_str().unwrap()).unwrap();
        back["headers"]["traceparent"]
            .as_str()
            .expect("the chained request carries a traceparent")
            .to_string()
    };

    // A root: ratio 0 leaves it out.
    let root = app.get(fetch).await;
    assert_eq!(root.status, 200, "{}", root.text());
    let (root_trace, _, flags) = parts(&back_saw(&root));
    assert_eq!(flags, "00");
    assert_ne!(root_trace, TRACE_ID);
    let direct = app.get("/back/headers").await;
    let seen = direct.json()["headers"]["traceparent"]
        .as_str()
        .expect("a left-out request's guest still gets a traceparent")
        .to_string();
    assert_eq!(parts(&seen).2, "00");

    // A caller that left its trace out: followed, same trace, own span id.
    let unsampled = format!("00-{TRACE_ID}-{CALLER_SPAN}-00");
    let reply = request(app.addr, "GET", fetch, &[("traceparent", &unsampled)], "").await;
    let (trace, span, flags) = parts(&back_saw(&reply));
    assert_eq!((trace.as_str(), flags.as_str()), (TRACE_ID, "00"));
    assert_ne!(span, CALLER_SPAN);

    // Its log lines still name the trace (a denied outbound call logs one).
    let denied = request(
        app.addr,
        "GET",
        "/front/fetch?url=http://denied.example/",
        &[("traceparent", &unsampled)],
        "",
    )
    .await;
    assert_eq!(denied.status, 502, "{}", denied.text());
    wait_for_log(&app, "outbound request denied").await;
    let stderr = app.stderr.lock().unwrap().clone();
    let line: serde_json::Value = stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("outbound request denied"))
        })
        .expect("the denial's line");
    assert_eq!(line["trace_id"], TRACE_ID, "{line}");
    assert_eq!(line["route"], "/front/...", "{line}");

    // Past the idle instances' drop and several export intervals: nothing.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert!(
        receiver.spans().is_empty(),
        "left-out requests exported spans:\n{}",
        describe(&receiver.spans())
    );

    // A caller that traces: followed, the whole chain exported.
    let reply = get_traced(&app, fetch).await;
    let (trace, _, flags) = parts(&back_saw(&reply));
    assert_eq!((trace.as_str(), flags.as_str()), (TRACE_ID, "01"));
    let spans = receiver
        .wait_for_spans(WAIT, |s| {
            find(s, "GET /front/...").is_some() && find(s, "GET /...").is_some()
        })
        .await;
    assert!(
        spans.iter().all(|s| s.trace_id == TRACE_ID),
        "only the traced request's spans:\n{}",
        describe(&spans)
    );
    let back = named(&spans, "GET /...");
    let client = spans
        .iter()
        .find(|s| s.kind == KIND_CLIENT)
        .expect("the front's client span");
    assert_eq!(back.parent_span_id, client.span_id, "{}", describe(&spans));
}

/// At a ratio, about that share of root requests is traced, each whole: every
/// exported statement span has its request's server span, and every traced
/// request has its statement span.
#[tokio::test]
async fn a_sampled_share_of_requests_is_traced_whole() {
    let db = TestDb::new("tracing_ratio").await;
    let receiver = OtlpReceiver::start().await;
    let url = db.url();
    let app = traced_app(
        &pg_manifest(),
        &receiver,
        &[
            ("SPIN_VARIABLE_DB_URL", url.as_str()),
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.5"),
        ],
    )
    .await;
    let body = serde_json::json!({"sql": "SELECT 1 AS one", "params": []}).to_string();
    for _ in 0..200 {
        let reply = app.send("POST", "/pg/query", body.clone()).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    // The exporter sends in batches; wait until two exports in a row add
    // nothing.
    let mut seen = usize::MAX;
    let spans = loop {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let spans = receiver.spans();
        if spans.len() == seen {
            break spans;
        }
        seen = spans.len();
    };
    let servers: Vec<&SpanRecord> = spans.iter().filter(|s| s.name == "POST /pg/...").collect();
    let statements: Vec<&SpanRecord> = spans.iter().filter(|s| s.name == "SELECT").collect();
    assert!(
        (60..=140).contains(&servers.len()),
        "{} of 200 requests traced at ratio 0.5",
        servers.len()
    );
    assert_eq!(statements.len(), servers.len(), "{}", describe(&spans));
    for statement in &statements {
        assert!(
            servers
                .iter()
                .any(|s| s.span_id == statement.parent_span_id && s.trace_id == statement.trace_id),
            "a statement span without its request:\n{}",
            describe(&spans)
        );
    }
}
