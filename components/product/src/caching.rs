//! Entity tags, `Cache-Control` and conditional GETs.

use bv_service::Reply;
use bytes::Bytes;
use spin_sdk::http::{FullBody, Request, Response};

/// A product: may be served from a cache for 30 s.
pub const ITEM: &str = "public, max-age=30";
/// A page of the listing changes with every write to any product: 5 s.
pub const LIST: &str = "public, max-age=5";

/// A header of the request, as text.
pub fn header<'r>(req: &'r Request, name: &str) -> Option<&'r str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

/// Whether `If-None-Match` names `etag` (weak comparison, as RFC 9110
/// requires for it, so `W/"3"` matches `"3"`).
fn none_match(if_none_match: Option<&str>, etag: &str) -> bool {
    let Some(header) = if_none_match else {
        return false;
    };
    let opaque = |t: &str| t.trim().trim_start_matches("W/").to_string();
    header.trim() == "*" || header.split(',').any(|t| opaque(t) == opaque(etag))
}

/// A 200 with the JSON `body`, its ETag and `cache_control`, or a 304
/// without a body when the client's `If-None-Match` already names that
/// ETag.
pub fn conditional(req: &Request, etag: &str, cache_control: &str, body: Vec<u8>) -> Reply {
    let not_modified = none_match(header(req, "if-none-match"), etag);
    let builder = Response::builder()
        .status(if not_modified { 304 } else { 200 })
        .header("etag", etag)
        .header("cache-control", cache_control);
    if not_modified {
        builder.body(FullBody::new(Bytes::new()))
    } else {
        builder
            .header("content-type", "application/json")
            .body(FullBody::new(Bytes::from(body)))
    }
    .expect("a valid response")
}

/// `reply` with more headers.
pub fn with_headers(mut reply: Reply, headers: &[(&str, &str)]) -> Reply {
    for (name, value) in headers {
        reply.headers_mut().insert(
            spin_sdk::http::HeaderName::from_bytes(name.as_bytes()).expect("a valid header name"),
            spin_sdk::http::HeaderValue::from_str(value).expect("a valid header value"),
        );
    }
    reply
}

/// The ETag of a response body that has no version of its own (a page of
/// the listing): a 64-bit FNV-1a hash of its bytes.
pub fn etag_of(bytes: &[u8]) -> String {
    let hash = bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("\"{hash:016x}\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_none_match() {
        assert!(none_match(Some("\"3\""), "\"3\""));
        assert!(none_match(Some("\"1\", W/\"3\""), "\"3\""));
        assert!(none_match(Some("*"), "\"3\""));
        assert!(!none_match(Some("\"2\""), "\"3\""));
        assert!(!none_match(None, "\"3\""));
        assert_ne!(etag_of(b"a"), etag_of(b"b"));
    }
}
