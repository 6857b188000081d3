//! The server span of each request.
//!
//! Every request, from the network or chained from a guest, runs inside a
//! span named `"{METHOD} {route}"` (kind server) that carries the OTel HTTP
//! attributes and `bv.component`; log lines inside it get its component and
//! route. When tracing is on, its parent is the caller's W3C `traceparent`
//! and the `traceparent` the guest sees is rewritten to the span's own, so
//! what the guest forwards continues this trace.

use bv_telemetry::sampling::{Decision, UNSAMPLED_TARGET};
use bv_telemetry::tracing_enabled;
use http::{Request, Response};
use tracing::field::Empty;
use wasmtime_wasi_http::WasiBody;

const TRACEPARENT: &str = "traceparent";

/// A server span for `req`, with where it was routed (`(component,
/// route)`; `None` when no route matched). With tracing off, or for a
/// request the sampler leaves out ([`bv_telemetry::decide_request`], decided
/// here before any span exists), the span only carries what log lines take
/// from it, the component and the route: every field of a span is visited
/// (and, in text logs, formatted) when it is made or recorded, and that
/// cost several thousand instructions per request for fields nothing read.
/// A left-out request's guest gets a `traceparent` with the sampled flag
/// off, so what it chains and publishes is left out too.
pub(crate) fn server_span(
    req: &mut Request<WasiBody>,
    routed: Option<(&str, &str)>,
) -> tracing::Span {
    let (component, route) = (routed.map(|r| r.0), routed.map(|r| r.1));
    if !tracing_enabled() {
        return tracing::info_span!(
            parent: None,
            "http.server",
            http.route = route,
            bv.component = component,
        );
    }
    let inbound = req.headers().get(TRACEPARENT).and_then(|v| v.to_str().ok());
    if let Decision::Skip(traceparent) = bv_telemetry::decide_request(inbound) {
        if let Ok(value) = http::HeaderValue::from_str(&traceparent) {
            req.headers_mut().insert(TRACEPARENT, value);
        }
        let span = tracing::info_span!(
            target: UNSAMPLED_TARGET,
            parent: None,
            "http.server",
            http.route = route,
            bv.component = component,
        );
        bv_telemetry::remember_left_out(&span, traceparent);
        return span;
    }
    let name = match route {
        Some(route) => format!("{} {route}", req.method()),
        None => req.method().to_string(),
    };
    let span = tracing::info_span!(
        parent: None,
        "http.server",
        otel.name = name,
        otel.kind = "server",
        otel.status_code = Empty,
        http.request.method = req.method().as_str(),
        http.route = route,
        url.path = req.uri().path(),
        http.response.status_code = Empty,
        bv.component = component,
        rpc.system = Empty,
        rpc.service = Empty,
        rpc.method = Empty,
    );
    let inbound = req.headers().get(TRACEPARENT).and_then(|v| v.to_str().ok());
    bv_telemetry::set_remote_parent(&span, inbound);
    span
}

/// Hands the guest the span's own `traceparent`, so that what it forwards
/// continues this trace.
pub(crate) fn propagate(span: &tracing::Span, req: &mut Request<WasiBody>) {
    if !bv_telemetry::records(span) {
        return;
    }
    if let Some(value) =
        bv_telemetry::traceparent(span).and_then(|tp| http::HeaderValue::from_str(&tp).ok())
    {
        req.headers_mut().insert(TRACEPARENT, value);
    }
}

/// Records the response status; a 5xx makes the span an error.
pub(crate) fn finish(span: &tracing::Span, response: &Response<WasiBody>) {
    if !bv_telemetry::records(span) {
        return;
    }
    let status = response.status().as_u16();
    // As i64: the OpenTelemetry layer records unsigned values as text.
    span.record("http.response.status_code", i64::from(status));
    if status >= 500 {
        span.record("otel.status_code", "error");
    }
}
