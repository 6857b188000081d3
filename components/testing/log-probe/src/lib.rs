//! `log-probe`: the test component behind the output-capture tests.
//!
//! | request | effect |
//! |---|---|
//! | `POST /stdout` | writes the body to stdout as it is, in one write; 204 |
//! | `POST /stderr` | the same on stderr |
//! | `POST /metric` `{name, kind, value, labels}` | reports it through `bv_service::telemetry`; 204 |
//!
//! The path is the part after the matched route (`spin-path-info`).

use std::io::Write;

use bytes::Bytes;
use spin_sdk::http::body::IncomingBodyExt;
use spin_sdk::http::{FullBody, Request, Response};
use spin_sdk::http_service;

type Reply = Response<FullBody<Bytes>>;

#[http_service]
async fn handle(req: Request) -> Reply {
    let path = match req.headers().get("spin-path-info") {
        Some(value) => value.to_str().unwrap_or("").to_owned(),
        None => req.uri().path().to_owned(),
    };
    let body = match req.into_body().bytes().await {
        Ok(body) => body,
        Err(e) => return reply(400, format!("reading the body: {e:?}")),
    };
    // Flushed, so a last line without a newline reaches the host too (and
    // stays pending there until the instance ends).
    let written = match path.as_str() {
        "/stdout" => {
            let mut out = std::io::stdout().lock();
            out.write_all(&body).and_then(|()| out.flush())
        }
        "/stderr" => std::io::stderr().lock().write_all(&body),
        "/metric" => return metric(&body),
        _ => return reply(404, "unknown action"),
    };
    match written {
        Ok(()) => reply(204, ""),
        Err(e) => reply(500, e.to_string()),
    }
}

/// `POST /metric`.
fn metric(body: &[u8]) -> Reply {
    let Ok(m) = serde_json::from_slice::<serde_json::Value>(body) else {
        return reply(400, "not JSON");
    };
    let name = m["name"].as_str().unwrap_or_default();
    let labels: Vec<(String, String)> = m["labels"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
        .collect();
    let labels: Vec<(&str, &str)> = labels
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    match m["kind"].as_str() {
        Some("counter") => {
            bv_service::telemetry::counter(name, &labels, m["value"].as_u64().unwrap_or(0))
        }
        Some("gauge") => {
            bv_service::telemetry::gauge(name, &labels, m["value"].as_f64().unwrap_or(0.0))
        }
        Some("histogram") => {
            bv_service::telemetry::observe(name, &labels, m["value"].as_f64().unwrap_or(0.0))
        }
        _ => return reply(400, "kind: counter, gauge or histogram"),
    }
    reply(204, "")
}

fn reply(status: u16, body: impl Into<Bytes>) -> Reply {
    Response::builder()
        .status(status)
        .body(FullBody::new(body.into()))
        .expect("valid status")
}
