//! `api-docs`: the OpenAPI 3.1 description of the whole HTTP API, served at
//! `GET /api/openapi.json`.
//!
//! The document is `docs/openapi.json`, compiled into the component, so the
//! description a deployment serves is always the one it was built with. Its
//! entity tag is a hash of those bytes, computed at compile time: clients
//! revalidate with `If-None-Match` and get 304 until a new build ships a new
//! document. Any other method is 405 `method-not-allowed` with `Allow`.
#![deny(missing_docs)]

use bv_service::{Problem, Reply};
use bytes::Bytes;
use spin_sdk::http::{FullBody, Method, Request, Response};
use spin_sdk::http_service;

/// The document, as written in the repository.
const DOCUMENT: &str = include_str!("../../../docs/openapi.json");

/// A 64-bit FNV-1a hash of the document: its strong entity tag.
const HASH: u64 = fnv1a(DOCUMENT.as_bytes());

/// Caches may keep the document for five minutes, then revalidate.
const CACHE_CONTROL: &str = "public, max-age=300";

/// The methods this resource answers.
const ALLOW: &str = "GET, HEAD";

const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325_u64;
    let mut i = 0;
    while i < bytes.len() {
        hash = (hash ^ bytes[i] as u64).wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    hash
}

#[http_service]
async fn handle(req: Request) -> Reply {
    // HEAD is GET without the body (the runtime drops it).
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Problem::method_not_allowed(ALLOW).into_response();
    }
    let etag = format!("\"{HASH:016x}\"");
    let builder = Response::builder()
        .header("etag", &etag)
        .header("cache-control", CACHE_CONTROL);
    let reply = if none_match(&req, &etag) {
        builder.status(304).body(FullBody::new(Bytes::new()))
    } else {
        builder
            .status(200)
            .header("content-type", "application/json")
            .body(FullBody::new(Bytes::from_static(DOCUMENT.as_bytes())))
    };
    reply.expect("a valid response")
}

/// Whether the request's `If-None-Match` names `etag` (or is `*`), weakly
/// compared as RFC 9110 requires for it.
fn none_match(req: &Request, etag: &str) -> bool {
    let Some(header) = req
        .headers()
        .get("if-none-match")
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let opaque = |t: &str| t.trim().trim_start_matches("W/").to_string();
    header.trim() == "*" || header.split(',').any(|t| opaque(t) == opaque(etag))
}
