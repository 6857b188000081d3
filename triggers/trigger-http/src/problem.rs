//! RFC 9457 problem details for the errors the runtime itself answers.

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Full};
use wasmtime_wasi_http::WasiBody;

/// Prefix of the stable `type` of every runtime problem.
pub const PROBLEM_TYPE_PREFIX: &str = "urn:bitvelocity:problem:";

pub(crate) fn response(
    status: StatusCode,
    kind: &str,
    title: &str,
    detail: &str,
) -> Response<WasiBody> {
    plain(
        status,
        "application/problem+json",
        problem_json(kind, title, status.as_u16(), detail),
    )
}

/// A response of the runtime's own that is not a problem.
pub(crate) fn plain(status: StatusCode, content_type: &str, body: String) -> Response<WasiBody> {
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, content_type)
        .body(
            Full::new(Bytes::from(body))
                .map_err(|never| match never {})
                .boxed_unsync(),
        )
        .expect("static response parts are valid")
}

/// 503 `concurrency-limit` with `Retry-After: 1`: the runtime has no room
/// for the request now (the component's concurrency limit, or no free
/// instance slot), and asking again shortly may succeed.
pub(crate) fn at_capacity(detail: &str) -> Response<WasiBody> {
    let mut response = response(
        StatusCode::SERVICE_UNAVAILABLE,
        "concurrency-limit",
        "Service Unavailable",
        detail,
    );
    response.headers_mut().insert(
        http::header::RETRY_AFTER,
        http::HeaderValue::from_static("1"),
    );
    response
}

pub(crate) fn problem_json(kind: &str, title: &str, status: u16, detail: &str) -> String {
    serde_json::json!({
        "type": format!("{PROBLEM_TYPE_PREFIX}{kind}"),
        "title": title,
        "status": status,
        "detail": detail,
    })
    .to_string()
}
