//! Request size limits: header fields (431) and body bytes (413).
//!
//! The header limits are checked on the parsed request; the HTTP parser's own
//! ceilings (100 fields, `ServeOptions::max_header_bytes`) stay above them as
//! the hard stop. The body limit is checked twice: a `Content-Length` above it
//! is refused before the component runs, and a body without one (chunked) is
//! counted while it streams. When the count passes the limit the component's
//! body stream fails with `HttpRequestBodySize`, and whatever the component
//! answers is replaced with the 413 — unless it had already answered before
//! reading that far, in which case its answer stands.

// The error of these checks is the response to send instead: it is moved
// once, on the path that refuses a request, so boxing it would buy nothing.
#![allow(clippy::result_large_err)]

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use wasmtime_wasi_http::WasiBody;

use crate::problem;

/// Answers 431 when `headers` has more than `max_count` fields or more than
/// `max_bytes` bytes of names and values (not counting `spin-*` headers).
pub(crate) fn check_headers(
    headers: &HeaderMap,
    max_count: u32,
    max_bytes: u32,
) -> Result<(), Response<WasiBody>> {
    // The `spin-*` headers are the runtime's own (any a client sent are
    // replaced), so only the client's are counted.
    let client_headers = || {
        headers
            .iter()
            .filter(|(name, _)| !name.as_str().starts_with("spin-"))
    };
    let count = client_headers().count();
    if count > max_count as usize {
        return Err(header_problem(&format!(
            "the request has {count} header fields; at most {max_count} are accepted"
        )));
    }
    let bytes: usize = client_headers()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    if bytes > max_bytes as usize {
        return Err(header_problem(&format!(
            "the request's header fields take {bytes} bytes; at most {max_bytes} are accepted"
        )));
    }
    Ok(())
}

fn header_problem(detail: &str) -> Response<WasiBody> {
    problem::response(
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        "request-headers-too-large",
        "Request Header Fields Too Large",
        detail,
    )
}

fn body_problem(component: &str, limit: u64) -> Response<WasiBody> {
    problem::response(
        StatusCode::PAYLOAD_TOO_LARGE,
        "request-body-too-large",
        "Content Too Large",
        &format!(
            "the request body is larger than the {limit} bytes component `{component}` accepts"
        ),
    )
}

/// Set on a request whose body is counted; tells [`BodyLimitHit::answer`]
/// whether the count passed the limit.
#[derive(Clone)]
pub(crate) struct BodyLimitHit {
    exceeded: Arc<AtomicBool>,
    limit: u64,
}

impl BodyLimitHit {
    /// The marker of a request limited by [`limit_body`], if any.
    pub(crate) fn of<B>(req: &Request<B>) -> Option<Self> {
        req.extensions().get::<Self>().cloned()
    }

    /// `response`, or the 413 if the request's body passed the limit while
    /// the component read it.
    pub(crate) fn answer(
        hit: Option<Self>,
        component: &str,
        response: Response<WasiBody>,
    ) -> Response<WasiBody> {
        match hit {
            Some(hit) if hit.exceeded.load(Ordering::SeqCst) => {
                tracing::debug!(component, "request body over the limit: 413");
                body_problem(component, hit.limit)
            }
            _ => response,
        }
    }
}

/// Refuses a request whose `Content-Length` is above `limit`, else wraps its
/// body so it is counted as it streams (see [`BodyLimitHit`]).
pub(crate) fn limit_body(
    req: Request<WasiBody>,
    component: &str,
    limit: u64,
) -> Result<Request<WasiBody>, Response<WasiBody>> {
    let declared = req
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(body_problem(component, limit));
    }
    let hit = BodyLimitHit {
        exceeded: Arc::new(AtomicBool::new(false)),
        limit,
    };
    let (mut parts, body) = req.into_parts();
    parts.extensions.insert(hit.clone());
    let body = Limited {
        inner: body,
        seen: 0,
        hit,
        failed: false,
    };
    Ok(Request::from_parts(parts, body.boxed_unsync()))
}

/// A request body that fails once more than `hit.limit` bytes went through.
struct Limited {
    inner: WasiBody,
    seen: u64,
    hit: BodyLimitHit,
    failed: bool,
}

impl Body for Limited {
    type Data = Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.failed {
            return Poll::Ready(None);
        }
        let frame = match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => frame,
            other => return other,
        };
        if let Some(data) = frame.data_ref() {
            self.seen += data.len() as u64;
            if self.seen > self.hit.limit {
                self.failed = true;
                self.hit.exceeded.store(true, Ordering::SeqCst);
                return Poll::Ready(Some(Err(wasmtime_wasi_http::Error::HttpRequestBodySize(
                    Some(self.seen),
                ))));
            }
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.failed || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{Full, StreamBody};

    fn request(body: WasiBody, content_length: Option<u64>) -> Request<WasiBody> {
        let mut req = Request::builder().uri("/").body(body).unwrap();
        if let Some(n) = content_length {
            req.headers_mut()
                .insert(http::header::CONTENT_LENGTH, n.to_string().parse().unwrap());
        }
        req
    }

    fn chunks(sizes: &[usize]) -> WasiBody {
        let frames: Vec<Result<Frame<Bytes>, wasmtime_wasi_http::Error>> = sizes
            .iter()
            .map(|n| Ok(Frame::data(Bytes::from(vec![b'x'; *n]))))
            .collect();
        StreamBody::new(futures::stream::iter(frames)).boxed_unsync()
    }

    #[test]
    fn a_declared_length_over_the_limit_is_refused_at_once() {
        let body = Full::new(Bytes::from(vec![0u8; 11]))
            .map_err(|never| match never {})
            .boxed_unsync();
        let response = limit_body(request(body, Some(11)), "c", 10).unwrap_err();
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    }

    #[tokio::test]
    async fn a_streamed_body_fails_past_the_limit_and_marks_the_request() {
        let req = limit_body(request(chunks(&[4, 4, 4]), None), "c", 10).unwrap();
        let hit = BodyLimitHit::of(&req);
        let mut body = req.into_body();
        assert!(body.frame().await.unwrap().is_ok());
        assert!(body.frame().await.unwrap().is_ok());
        assert!(matches!(
            body.frame().await.unwrap(),
            Err(wasmtime_wasi_http::Error::HttpRequestBodySize(Some(12)))
        ));
        assert!(body.frame().await.is_none());
        let ok = Response::new(
            Full::new(Bytes::new())
                .map_err(|n| match n {})
                .boxed_unsync(),
        );
        assert_eq!(
            BodyLimitHit::answer(hit, "c", ok).status(),
            StatusCode::PAYLOAD_TOO_LARGE
        );
    }

    #[tokio::test]
    async fn a_body_at_the_limit_passes() {
        let req = limit_body(request(chunks(&[5, 5]), None), "c", 10).unwrap();
        let hit = BodyLimitHit::of(&req);
        let collected = req.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(collected.len(), 10);
        let ok = Response::new(
            Full::new(Bytes::new())
                .map_err(|n| match n {})
                .boxed_unsync(),
        );
        assert_eq!(BodyLimitHit::answer(hit, "c", ok).status(), StatusCode::OK);
    }

    #[test]
    fn header_limits() {
        let mut headers = HeaderMap::new();
        for i in 0..5 {
            headers.insert(
                http::HeaderName::from_bytes(format!("x-h{i}").as_bytes()).unwrap(),
                "v".parse().unwrap(),
            );
        }
        assert!(check_headers(&headers, 5, 1000).is_ok());
        let too_many = check_headers(&headers, 4, 1000).unwrap_err();
        assert_eq!(
            too_many.status(),
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        );
        // 5 × ("x-hN" + "v") = 25 bytes.
        assert!(check_headers(&headers, 5, 25).is_ok());
        assert!(check_headers(&headers, 5, 24).is_err());
    }
}
