//! An OTLP/HTTP receiver inside the test process: `bv` exports its spans
//! here (JSON encoding, `OTEL_EXPORTER_OTLP_PROTOCOL=http/json`) and the
//! tests assert on what arrived.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

/// One exported span, flattened out of `resourceSpans[].scopeSpans[].spans[]`.
#[derive(Clone, Debug, PartialEq)]
pub struct SpanRecord {
    /// 32 lowercase hex digits.
    pub trace_id: String,
    /// 16 lowercase hex digits.
    pub span_id: String,
    /// The parent's span id; empty for a root span.
    pub parent_span_id: String,
    pub name: String,
    /// OTLP `SpanKind`: 1 internal, 2 server, 3 client, 4 producer, 5 consumer.
    pub kind: i64,
    /// Attribute values unwrapped from their `AnyValue` (`stringValue`,
    /// `boolValue`, `doubleValue`, ...); `intValue` (a string in OTLP JSON)
    /// becomes a JSON number.
    pub attributes: BTreeMap<String, serde_json::Value>,
    /// The resource's `service.name`.
    pub service_name: String,
    /// OTLP `StatusCode`: 0 unset, 1 ok, 2 error.
    pub status_code: i64,
    /// The names of its events (a log line in the span is one).
    pub events: Vec<String>,
}

/// Span kinds as OTLP numbers them.
pub const KIND_INTERNAL: i64 = 1;
pub const KIND_SERVER: i64 = 2;
pub const KIND_CLIENT: i64 = 3;
pub const KIND_PRODUCER: i64 = 4;
pub const KIND_CONSUMER: i64 = 5;

impl SpanRecord {
    /// A string attribute, if present and a string.
    pub fn attr_str(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).and_then(|v| v.as_str())
    }

    /// An integer attribute, if present and an integer.
    pub fn attr_i64(&self, key: &str) -> Option<i64> {
        self.attributes.get(key).and_then(|v| v.as_i64())
    }
}

#[derive(Default)]
struct Received {
    spans: Vec<SpanRecord>,
    /// Raw request bodies by path (`/v1/traces`, `/v1/metrics`, `/v1/logs`).
    bodies: BTreeMap<String, Vec<Bytes>>,
    /// Bodies that could not be read as OTLP JSON traces, with the reason.
    errors: Vec<String>,
}

/// A running receiver; stops when dropped.
pub struct OtlpReceiver {
    addr: SocketAddr,
    received: Arc<Mutex<Received>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl OtlpReceiver {
    /// Listens on 127.0.0.1 on a free port.
    pub async fn start() -> OtlpReceiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Received::default()));
        let sink = received.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let sink = sink.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| handle(sink.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        OtlpReceiver {
            addr,
            received,
            task,
        }
    }

    /// The base URL to put in `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every span received so far, in arrival order.
    pub fn spans(&self) -> Vec<SpanRecord> {
        self.received.lock().unwrap().spans.clone()
    }

    /// Raw bodies POSTed to `path` (e.g. `/v1/metrics`) so far.
    pub fn bodies(&self, path: &str) -> Vec<Bytes> {
        self.received
            .lock()
            .unwrap()
            .bodies
            .get(path)
            .cloned()
            .unwrap_or_default()
    }

    /// Bodies POSTed to `path`, each parsed as JSON.
    pub fn json_bodies(&self, path: &str) -> Vec<serde_json::Value> {
        self.bodies(path)
            .iter()
            .map(|b| serde_json::from_slice(b).expect("OTLP body is not JSON"))
            .collect()
    }

    /// Waits until `done` holds for the spans received so far and returns
    /// them; panics with everything received if it does not within `timeout`.
    pub async fn wait_for_spans(
        &self,
        timeout: Duration,
        done: impl Fn(&[SpanRecord]) -> bool,
    ) -> Vec<SpanRecord> {
        let deadline = Instant::now() + timeout;
        loop {
            let spans = self.spans();
            if done(&spans) {
                return spans;
            }
            if Instant::now() >= deadline {
                let errors = self.received.lock().unwrap().errors.clone();
                panic!(
                    "expected spans did not arrive within {timeout:?}; got {} span(s):\n{}\nunreadable bodies: {errors:?}",
                    spans.len(),
                    describe(&spans)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// One line per span: name, kind, ids and attributes (for failure messages).
pub fn describe(spans: &[SpanRecord]) -> String {
    spans
        .iter()
        .map(|s| {
            format!(
                "  {:?} kind={} trace={} span={} parent={} service={} status={} {:?}",
                s.name,
                s.kind,
                s.trace_id,
                s.span_id,
                s.parent_span_id,
                s.service_name,
                s.status_code,
                s.attributes
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The environment that makes `bv` export to `endpoint` promptly, in JSON.
pub fn tracing_env(endpoint: &str) -> Vec<(String, String)> {
    [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ("OTEL_METRIC_EXPORT_INTERVAL", "500"),
        ("OTEL_BLRP_SCHEDULE_DELAY", "100"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

async fn handle(
    sink: Arc<Mutex<Received>>,
    req: hyper::Request<Incoming>,
) -> Result<hyper::Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_string();
    let is_post = req.method() == hyper::Method::POST;
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Ok(reply(400, "{}")),
    };
    if !is_post || !matches!(path.as_str(), "/v1/traces" | "/v1/metrics" | "/v1/logs") {
        return Ok(reply(404, "{}"));
    }
    let mut received = sink.lock().unwrap();
    if path == "/v1/traces" {
        match parse_traces(&body) {
            Ok(spans) => received.spans.extend(spans),
            Err(e) => received.errors.push(e),
        }
    }
    received.bodies.entry(path).or_default().push(body);
    Ok(reply(200, "{}"))
}

fn reply(status: u16, body: &'static str) -> hyper::Response<Full<Bytes>> {
    hyper::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap()
}

/// Flattens an OTLP JSON `ExportTraceServiceRequest`.
fn parse_traces(body: &[u8]) -> Result<Vec<SpanRecord>, String> {
    let doc: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| format!("not JSON ({e}): {}", String::from_utf8_lossy(body)))?;
    let mut out = Vec::new();
    for rs in array(&doc, "resourceSpans") {
        let resource = attributes(&rs["resource"]);
        let service_name = resource
            .get("service.name")
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string();
        for ss in array(rs, "scopeSpans") {
            for span in array(ss, "spans") {
                out.push(SpanRecord {
                    trace_id: hex_id(&span["traceId"]),
                    span_id: hex_id(&span["spanId"]),
                    parent_span_id: hex_id(&span["parentSpanId"]),
                    name: span["name"].as_str().unwrap_or_default().to_string(),
                    kind: span["kind"].as_i64().unwrap_or(0),
                    attributes: attributes(span),
                    service_name: service_name.clone(),
                    status_code: span["status"]["code"].as_i64().unwrap_or(0),
                    events: array(span, "events")
                        .iter()
                        .filter_map(|e| e["name"].as_str().map(str::to_string))
                        .collect(),
                });
            }
        }
    }
    Ok(out)
}

fn array<'a>(v: &'a serde_json::Value, key: &str) -> &'a [serde_json::Value] {
    v[key].as_array().map(Vec::as_slice).unwrap_or_default()
}

/// A trace or span id, lowercase (OTLP JSON writes hex; some writers use upper case).
fn hex_id(v: &serde_json::Value) -> String {
    v.as_str().unwrap_or_default().to_lowercase()
}

/// `attributes: [{key, value: AnyValue}]` of `owner` as a map.
fn attributes(owner: &serde_json::Value) -> BTreeMap<String, serde_json::Value> {
    array(owner, "attributes")
        .iter()
        .filter_map(|kv| Some((kv["key"].as_str()?.to_string(), any_value(&kv["value"]))))
        .collect()
}

/// The inner value of an OTLP `AnyValue`.
fn any_value(v: &serde_json::Value) -> serde_json::Value {
    let Some(obj) = v.as_object() else {
        return serde_json::Value::Null;
    };
    let Some((kind, inner)) = obj.iter().next() else {
        return serde_json::Value::Null;
    };
    match kind.as_str() {
        "intValue" => match inner {
            serde_json::Value::String(s) => s
                .parse::<i64>()
                .map(serde_json::Value::from)
                .unwrap_or_else(|_| inner.clone()),
            _ => inner.clone(),
        },
        "arrayValue" => {
            serde_json::Value::Array(array(inner, "values").iter().map(any_value).collect())
        }
        _ => inner.clone(),
    }
}
