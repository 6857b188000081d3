//! gRPC calls through the HTTP trigger.
//!
//! A gRPC call is an HTTP/2 request with `content-type: application/grpc`;
//! the component answers it itself (tonic, through spin-sdk's `grpc`
//! feature). The runtime adds what a gRPC server owes its callers:
//!
//! - the caller's deadline (`grpc-timeout`) bounds the call, as the
//!   component's `request_timeout_ms` does (the shorter wins);
//! - the runtime's own refusals (no route, at capacity, a timeout, a failed
//!   instance), which are RFC 9457 problems over plain HTTP, are answered
//!   as gRPC statuses (trailers-only: `grpc-status` and `grpc-message` in
//!   the headers), since a gRPC client reads only those: a passed deadline
//!   is `DEADLINE_EXCEEDED`, capacity `UNAVAILABLE`, no route
//!   `UNIMPLEMENTED`;
//! - the deadline also ends a response still streaming when it passes
//!   (trailers with `DEADLINE_EXCEEDED`), as gRPC's deadline covers the
//!   whole call;
//! - every call is counted by component, method and code
//!   (`bv_grpc_server_handled_total`) when its status is known (the
//!   response's trailers, or its headers for a trailers-only answer), and
//!   the server span carries `rpc.system`, `rpc.service`, `rpc.method`.

use std::future::Future as _;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use prometheus_client::metrics::counter::Counter;
use wasmtime_wasi_http::WasiBody;

use crate::metrics::{GrpcLabels, Metrics};

/// A gRPC call: its method (the request path, `/package.Service/Method`)
/// and when its caller's deadline passes.
#[derive(Debug, Clone)]
pub(crate) struct GrpcCall {
    pub method: String,
    expires: Option<tokio::time::Instant>,
}

impl GrpcCall {
    /// The call `req` makes, if it is a gRPC request.
    pub(crate) fn of<B>(req: &Request<B>) -> Option<Self> {
        let content_type = req
            .headers()
            .get(http::header::CONTENT_TYPE)?
            .to_str()
            .ok()?;
        if content_type != "application/grpc" && !content_type.starts_with("application/grpc+") {
            return None;
        }
        Some(Self {
            method: req.uri().path().to_string(),
            expires: Self::deadline(req.headers()).map(|d| tokio::time::Instant::now() + d),
        })
    }

    /// The deadline of `headers`' call, if they are a gRPC call's with one.
    pub(crate) fn deadline(headers: &HeaderMap) -> Option<Duration> {
        let grpc = headers
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
        if !grpc {
            return None;
        }
        parse_timeout(headers.get("grpc-timeout")?.to_str().ok()?)
    }

    /// The service and method names, when the path has gRPC's shape.
    fn names(&self) -> Option<(&str, &str)> {
        let (service, method) = self.method.strip_prefix('/')?.split_once('/')?;
        (!service.is_empty() && !method.is_empty() && !method.contains('/'))
            .then_some((service, method))
    }

    /// Records the call's names on the current (server) span.
    pub(crate) fn record_on(&self, span: &tracing::Span) {
        if !bv_telemetry::records(span) {
            return;
        }
        if let Some((service, method)) = self.names() {
            span.record("rpc.system", "grpc");
            span.record("rpc.service", service);
            span.record("rpc.method", method);
        }
    }
}

/// `grpc-timeout`: at most 8 digits and a unit (`H`, `M`, `S`, `m`, `u`,
/// `n`). Anything else is no deadline (as gRPC servers treat it).
pub(crate) fn parse_timeout(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// gRPC's status codes the runtime answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Code {
    Cancelled = 1,
    InvalidArgument = 3,
    DeadlineExceeded = 4,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
    Unauthenticated = 16,
}

/// The code's name as gRPC writes it (`DEADLINE_EXCEEDED`), for a metric
/// label; codes the runtime does not name are their number.
fn code_name(code: &str) -> &'static str {
    const NAMES: [&str; 17] = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];
    code.parse::<usize>()
        .ok()
        .and_then(|n| NAMES.get(n).copied())
        .unwrap_or("UNKNOWN")
}

/// The code for a runtime problem's HTTP status (gRPC's own mapping of
/// HTTP statuses, with a timeout as the deadline it is).
fn code_for(status: StatusCode) -> Code {
    match status.as_u16() {
        400 | 413 | 431 => Code::InvalidArgument,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 | 405 => Code::Unimplemented,
        408 | 504 => Code::DeadlineExceeded,
        429 => Code::ResourceExhausted,
        502 | 503 => Code::Unavailable,
        499 => Code::Cancelled,
        _ => Code::Internal,
    }
}

/// A trailers-only answer with `code` and `message`.
pub(crate) fn status_response(code: Code, message: &str) -> Response<WasiBody> {
    let mut response = Response::new(
        http_body_util::Empty::new()
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    headers.insert("grpc-status", HeaderValue::from((code as u8) as u16));
    if let Ok(message) = HeaderValue::from_str(&percent_encode(message)) {
        headers.insert("grpc-message", message);
    }
    response
}

/// `grpc-message` is percent-encoded UTF-8 (every byte outside printable
/// ASCII, and `%`).
fn percent_encode(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for byte in message.bytes() {
        if (0x20..0x7f).contains(&byte) && byte != b'%' {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The answer to `call`: the runtime's own problem turned into a status;
/// the component's answer as it is, counted by method and code when its
/// status arrives.
pub(crate) async fn answer(
    call: &GrpcCall,
    component: Option<&str>,
    metrics: &Metrics,
    response: Response<WasiBody>,
) -> Response<WasiBody> {
    let is_problem = response
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"));
    let response = if is_problem {
        let status = response.status();
        let body = response.into_body().collect().await.map(|b| b.to_bytes());
        let detail = body
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|p| p["detail"].as_str().map(str::to_string))
            .unwrap_or_else(|| status.to_string());
        status_response(code_for(status), &detail)
    } else {
        response
    };
    let counter = component.map(|component| CallCounter {
        metrics: metrics.grpc_handled.clone(),
        component: component.to_string(),
        method: call.method.clone(),
    });
    if let Some(code) = response.headers().get("grpc-status") {
        // Trailers-only: the call is over.
        if let Some(counter) = counter {
            counter.count(code);
        }
        return response;
    }
    let expiry = call
        .expires
        .map(|at| Box::pin(tokio::time::sleep_until(at)));
    response.map(|body| {
        CallBody {
            body,
            counter,
            expiry,
        }
        .boxed_unsync()
    })
}

/// Counts one finished call.
struct CallCounter {
    metrics: prometheus_client::metrics::family::Family<GrpcLabels, Counter>,
    component: String,
    method: String,
}

impl CallCounter {
    fn count(self, code: &HeaderValue) {
        let code = code_name(code.to_str().unwrap_or_default());
        // A method the component does not have is the caller's to name:
        // one series for them all, not one per name.
        let method = if code == "UNIMPLEMENTED" {
            "unknown".to_string()
        } else {
            self.method
        };
        self.metrics
            .get_or_create(&GrpcLabels {
                component: self.component,
                method,
                code,
            })
            .inc();
    }

    fn count_trailers(self, trailers: &HeaderMap) {
        match trailers.get("grpc-status") {
            Some(code) => self.count(code),
            None => self.count(&HeaderValue::from_static("2")),
        }
    }
}

/// A call's response body: it counts the call when its trailers pass (or
/// as `UNKNOWN` when the body ends without them: the call broke off), and
/// ends it with `DEADLINE_EXCEEDED` when the caller's deadline passes first
/// (a server stream that would go on), dropping the component's body so
/// its work stops.
struct CallBody {
    body: WasiBody,
    counter: Option<CallCounter>,
    expiry: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl CallBody {
    fn finish(&mut self, trailers: &HeaderMap) {
        self.expiry = None;
        if let Some(counter) = self.counter.take() {
            counter.count_trailers(trailers);
        }
    }
}

impl Body for CallBody {
    type Data = Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Some(expiry) = &mut self.expiry {
            if expiry.as_mut().poll(cx).is_ready() {
                let mut trailers = HeaderMap::new();
                trailers.insert(
                    "grpc-status",
                    HeaderValue::from((Code::DeadlineExceeded as u8) as u16),
                );
                trailers.insert(
                    "grpc-message",
                    HeaderValue::from_static("the caller's deadline passed"),
                );
                self.finish(&trailers);
                self.body = WasiBody::default();
                return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
            }
        }
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    self.finish(trailers);
                }
            }
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => self.finish(&HeaderMap::new()),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse_by_their_unit() {
        assert_eq!(parse_timeout("100m"), Some(Duration::from_millis(100)));
        assert_eq!(parse_timeout("3S"), Some(Duration::from_secs(3)));
        assert_eq!(parse_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_timeout("250u"), Some(Duration::from_micros(250)));
        assert_eq!(
            parse_timeout("99999999n"),
            Some(Duration::from_nanos(99_999_999))
        );
        for bad in ["", "m", "123456789m", "10x", "-1S", "1.5S"] {
            assert_eq!(parse_timeout(bad), None, "{bad}");
        }
    }

    #[test]
    fn runtime_refusals_become_the_codes_grpc_clients_expect() {
        assert_eq!(
            code_for(StatusCode::GATEWAY_TIMEOUT),
            Code::DeadlineExceeded
        );
        assert_eq!(code_for(StatusCode::SERVICE_UNAVAILABLE), Code::Unavailable);
        assert_eq!(code_for(StatusCode::NOT_FOUND), Code::Unimplemented);
        assert_eq!(
            code_for(StatusCode::TOO_MANY_REQUESTS),
            Code::ResourceExhausted
        );
        assert_eq!(code_for(StatusCode::INTERNAL_SERVER_ERROR), Code::Internal);
        let answer = status_response(Code::DeadlineExceeded, "late: 5 ms ∅");
        assert_eq!(answer.headers()["grpc-status"], "4");
        assert_eq!(answer.headers()["grpc-message"], "late: 5 ms %E2%88%85");
        assert_eq!(code_name("4"), "DEADLINE_EXCEEDED");
        assert_eq!(code_name("0"), "OK");
        assert_eq!(code_name("x"), "UNKNOWN");
    }

    #[test]
    fn the_method_names_its_service() {
        let call = GrpcCall {
            method: "/bitvelocity.inventory.v1.Inventory/Reserve".into(),
            expires: None,
        };
        assert_eq!(
            call.names(),
            Some(("bitvelocity.inventory.v1.Inventory", "Reserve"))
        );
        let odd = GrpcCall {
            method: "/api/x/y".into(),
            expires: None,
        };
        assert_eq!(odd.names(), None);
    }
}
