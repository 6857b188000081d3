//! Request limits, security headers and CORS, on the probe component.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::*;

const PROBLEM_PREFIX: &str = "urn:bitvelocity:problem:";

/// Two probes: `small` (`/small/...`, body limit 1 KiB) and `big`
/// (`/big/...`, the application's limit: none unless `app_settings` sets
/// one), plus `app_settings` in `[application.tool.bv]`.
fn two_probes(app_settings: &str) -> String {
    format!(
        r#"spin_manifest_version = 2
[application]
name = "hardening"

[application.tool.bv]
{app_settings}

[[trigger.http]]
route = "/small/..."
component = "small"

[[trigger.http]]
route = "/big/..."
component = "big"

[component.small]
source = "{{probe}}"
[component.small.tool.bv]
max_request_body_bytes = 1024

[component.big]
source = "{{probe}}"
"#
    )
}

#[track_caller]
fn assert_problem(reply: &Reply, status: u16, kind: &str) {
    assert_eq!(reply.status, status, "{}", reply.text());
    assert_eq!(
        reply.headers["content-type"],
        "application/problem+json",
        "{}",
        reply.text()
    );
    assert_eq!(reply.json()["type"], format!("{PROBLEM_PREFIX}{kind}"));
    assert_eq!(reply.json()["status"], status);
}

/// Sends `POST path` with a chunked body (no `Content-Length`) of `chunks`
/// chunks of `chunk` bytes, and reads the whole answer.
async fn post_chunked(addr: SocketAddr, path: &str, chunks: usize, chunk: usize) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: test\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let data = vec![b'x'; chunk];
    for _ in 0..chunks {
        // The server may answer and stop reading before the body ends.
        if stream
            .write_all(format!("{chunk:x}\r\n").as_bytes())
            .await
            .is_err()
            || stream.write_all(&data).await.is_err()
            || stream.write_all(b"\r\n").await.is_err()
        {
            break;
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    read_answer(stream).await
}

/// Sends the head of `POST path` declaring a `Content-Length` of `length`
/// and no body: only a server that refuses on the declaration answers.
async fn post_declared(addr: SocketAddr, path: &str, length: usize) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: test\r\ncontent-length: {length}\r\nconnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    read_answer(stream).await
}

/// Reads a whole HTTP/1.1 answer up to the close: status and (de-chunked) body.
async fn read_answer(mut stream: tokio::net::TcpStream) -> (u16, String) {
    let mut received = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), async {
        let mut buf = [0u8; 8192];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => received.extend_from_slice(&buf[..n]),
                Err(e) if !received.is_empty() => {
                    eprintln!("read after the answer: {e}");
                    break;
                }
                Err(e) => panic!("no answer: {e}"),
            }
        }
    })
    .await
    .expect("an answer within 20 s");
    let text = String::from_utf8_lossy(&received).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {text:?}"));
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    (status, body)
}

/// The data of a chunked body.
fn dechunk(mut body: &str) -> String {
    let mut data = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 || rest.len() < size {
            break;
        }
        data.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    data
}

#[tokio::test]
async fn a_declared_body_over_the_limit_is_refused_before_the_component_runs() {
    let app = spawn_app(&two_probes("")).await;
    let at_limit = app.send("POST", "/small/count", vec![b'x'; 1024]).await;
    assert_eq!((at_limit.status, at_limit.text()), (200, "1024".into()));

    // Declared but never sent: the answer cannot come from reading the body.
    let (status, body) = post_declared(app.addr, "/small/count", 1025).await;
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("1024 bytes"), "{body}");
}

#[tokio::test]
async fn without_a_body_limit_a_large_upload_reaches_the_component() {
    // As under Spin: no limit unless the manifest sets one.
    let app = spawn_app(&two_probes("")).await;
    let five_mib = 5 * 1024 * 1024;
    let reply = app.send("POST", "/big/count", vec![b'x'; five_mib]).await;
    assert_eq!((reply.status, reply.text()), (200, five_mib.to_string()));
    let (status, body) = post_chunked(app.addr, "/big/count", 80, 64 * 1024).await;
    assert_eq!((status, body), (200, five_mib.to_string()));
}

/// Sends `POST path` with the whole of a `size`-byte body, declared
/// (`Content-Length`) or chunked, before reading anything, as most clients
/// do; then reads the answer. Panics if the server stops the upload.
async fn post_whole(addr: SocketAddr, path: &str, size: usize, chunked: bool) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let framing = match chunked {
        true => "transfer-encoding: chunked".to_string(),
        false => format!("content-length: {size}"),
    };
    let head = format!("POST {path} HTTP/1.1\r\nhost: test\r\n{framing}\r\n\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    let chunk = vec![b'x'; 64 * 1024];
    let mut sent = 0;
    while sent < size {
        let n = chunk.len().min(size - sent);
        if chunked {
            stream
                .write_all(format!("{n:x}\r\n").as_bytes())
                .await
                .unwrap_or_else(|e| panic!("upload stopped after {sent} bytes: {e}"));
        }
        stream
            .write_all(&chunk[..n])
            .await
            .unwrap_or_else(|e| panic!("upload stopped after {sent} bytes: {e}"));
        if chunked {
            stream.write_all(b"\r\n").await.unwrap();
        }
        sent += n;
    }
    if chunked {
        stream.write_all(b"0\r\n\r\n").await.unwrap();
    }
    read_answer(stream).await
}

#[tokio::test]
async fn a_refused_body_reaches_the_client_as_413_not_a_reset() {
    let app = spawn_app(&two_probes("")).await;
    // Far more than the socket buffers hold: the server must read (and
    // discard) it for the client to get to its answer.
    let size = 16 * 1024 * 1024;
    for chunked in [false, true] {
        let (status, body) = post_whole(app.addr, "/small/count", size, chunked).await;
        assert_eq!(status, 413, "chunked: {chunked}: {body}");
        let problem: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            problem["type"],
            format!("{PROBLEM_PREFIX}request-body-too-large")
        );
        assert!(body.contains("1024 bytes"), "{body}");
    }
    // A client library that writes the body while it reads.
    let reply = app.send("POST", "/small/count", vec![b'x'; size]).await;
    assert_problem(&reply, 413, "request-body-too-large");
    // And the component still serves.
    let reply = app.send("POST", "/small/count", "abc").await;
    assert_eq!((reply.status, reply.text()), (200, "3".into()));
}

#[tokio::test]
async fn a_streamed_body_is_counted_while_it_streams() {
    let app = spawn_app(&two_probes("max_request_body_bytes = 4096")).await;
    // No Content-Length: only counting the stream can catch it.
    let (status, body) = post_chunked(app.addr, "/small/count", 4, 256).await;
    assert_eq!((status, body.as_str()), (200, "1024"));
    let (status, body) = post_chunked(app.addr, "/small/count", 8, 256).await;
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("request-body-too-large"), "{body}");

    // The application-wide limit applies to `big`.
    let (status, body) = post_chunked(app.addr, "/big/count", 4, 1024).await;
    assert_eq!((status, body.as_str()), (200, "4096"));
    let (status, body) = post_chunked(app.addr, "/big/count", 5, 1024).await;
    assert_eq!(status, 413, "{body}");

    // The component is unharmed: the next request is served.
    let reply = app.send("POST", "/small/count", "abc").await;
    assert_eq!((reply.status, reply.text()), (200, "3".into()));
    let metrics = app.admin_get("/metrics").await.text();
    assert!(
        metrics.contains(
            r#"bv_http_requests_total{component="small",route="/small/...",status="413"} 1"#
        ),
        "the 413 is counted as such, not as the component's answer:\n{metrics}"
    );
}

#[tokio::test]
async fn too_many_or_too_large_headers_are_refused_with_431() {
    let app = spawn_app(&two_probes(
        "max_request_headers = 12\nmax_request_header_bytes = 600",
    ))
    .await;
    let names: Vec<String> = (0..12).map(|i| format!("x-h{i}")).collect();
    let many: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "1")).collect();
    // The client adds `host` (and nothing else), so 11 of ours is 12 in all.
    let reply = request(app.addr, "GET", "/big/headers", &many[..11], "").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let reply = request(app.addr, "GET", "/big/headers", &many, "").await;
    assert_problem(&reply, 431, "request-headers-too-large");
    assert!(reply.json()["detail"]
        .as_str()
        .unwrap()
        .contains("13 header fields"));

    let long = "v".repeat(500);
    let reply = request(app.addr, "GET", "/big/headers", &[("x-long", &long)], "").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let longer = "v".repeat(600);
    let reply = request(app.addr, "GET", "/big/headers", &[("x-long", &longer)], "").await;
    assert_problem(&reply, 431, "request-headers-too-large");
}

#[tokio::test]
async fn every_response_carries_the_security_headers() {
    let app = spawn_app(&two_probes("")).await;
    let answers = [
        app.get("/big/headers").await,    // the component's 200
        app.get("/big/status/418").await, // the component's own status
        app.get("/big/panic").await,      // the runtime's 500
        app.get("/nowhere").await,        // the router's 404
        app.send("POST", "/small/count", vec![0u8; 2048]).await, // a limit's 413
    ];
    for (i, reply) in answers.iter().enumerate() {
        let h = &reply.headers;
        assert_eq!(h["x-content-type-options"], "nosniff", "answer {i}");
        assert_eq!(h["x-frame-options"], "DENY", "answer {i}");
        assert_eq!(h["referrer-policy"], "no-referrer", "answer {i}");
        assert_eq!(
            h["content-security-policy"], "default-src 'none'; frame-ancestors 'none'",
            "answer {i}"
        );
        assert!(!h.contains_key("server"), "answer {i} names the server");
        assert!(!h.contains_key("x-powered-by"), "answer {i}");
    }
    assert_eq!(
        answers.iter().map(|r| r.status).collect::<Vec<_>>(),
        [200, 418, 500, 404, 413]
    );
    // The admin listener's answers too.
    for path in ["/metrics", "/healthz", "/nowhere"] {
        let h = app.admin_get(path).await.headers;
        assert_eq!(h["x-content-type-options"], "nosniff", "admin {path}");
        assert_eq!(h["x-frame-options"], "DENY", "admin {path}");
        assert_eq!(
            h["content-security-policy"], "default-src 'none'; frame-ancestors 'none'",
            "admin {path}"
        );
    }
}

const CORS: &str = r#"[application.tool.bv.cors]
allowed_origins = ["https://shop.example.com", "http://localhost:5173"]
allowed_methods = ["GET", "POST"]
allowed_headers = ["content-type", "authorization"]
expose_headers = ["etag", "ratelimit"]
max_age = 600
allow_credentials = true
"#;

fn has_cors_headers(reply: &Reply) -> bool {
    reply
        .headers
        .keys()
        .any(|k| k.as_str().starts_with("access-control-"))
}

#[tokio::test]
async fn preflights_from_allowed_origins_are_answered_by_the_host() {
    let app = spawn_app(&two_probes(CORS)).await;
    let reply = request(
        app.addr,
        "OPTIONS",
        "/big/headers",
        &[
            ("origin", "https://shop.example.com"),
            ("access-control-request-method", "POST"),
            ("access-control-request-headers", "content-type"),
        ],
        "",
    )
    .await;
    // The probe would answer 200 with a JSON description: the host did.
    assert_eq!(reply.status, 204, "{}", reply.text());
    assert!(reply.body.is_empty());
    let h = &reply.headers;
    assert_eq!(h["access-control-allow-origin"], "https://shop.example.com");
    assert_eq!(h["access-control-allow-methods"], "GET, POST");
    assert_eq!(
        h["access-control-allow-headers"],
        "content-type, authorization"
    );
    assert_eq!(h["access-control-max-age"], "600");
    assert_eq!(h["access-control-allow-credentials"], "true");
    assert_eq!(h["x-content-type-options"], "nosniff");

    let reply = request(
        app.addr,
        "OPTIONS",
        "/big/headers",
        &[
            ("origin", "https://evil.example.com"),
            ("access-control-request-method", "POST"),
        ],
        "",
    )
    .await;
    assert_problem(&reply, 403, "cors-origin-not-allowed");
    assert!(!has_cors_headers(&reply), "{:?}", reply.headers);

    // A plain OPTIONS (not a preflight) still reaches the component.
    let reply = request(app.addr, "OPTIONS", "/big/headers", &[], "").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["method"], "OPTIONS");
}

#[tokio::test]
async fn responses_get_cors_headers_only_for_allowed_origins() {
    let app = spawn_app(&two_probes(CORS)).await;
    let reply = request(
        app.addr,
        "GET",
        "/big/headers",
        &[("origin", "http://localhost:5173")],
        "",
    )
    .await;
    assert_eq!(reply.status, 200);
    let h = &reply.headers;
    assert_eq!(h["access-control-allow-origin"], "http://localhost:5173");
    assert_eq!(h["access-control-allow-credentials"], "true");
    assert_eq!(h["access-control-expose-headers"], "etag, ratelimit");
    assert_eq!(h["vary"], "origin");

    for origin in [
        "https://evil.example.com",
        "https://shop.example.com.evil.com",
        "null",
    ] {
        let reply = request(app.addr, "GET", "/big/headers", &[("origin", origin)], "").await;
        assert_eq!(
            reply.status, 200,
            "the request is served; the browser hides it"
        );
        assert!(!has_cors_headers(&reply), "{origin}: {:?}", reply.headers);
    }
    // Errors a page must be able to read carry them too.
    let reply = request(
        app.addr,
        "POST",
        "/small/count",
        &[("origin", "https://shop.example.com")],
        vec![0u8; 4096],
    )
    .await;
    assert_eq!(reply.status, 413);
    assert_eq!(
        reply.headers["access-control-allow-origin"],
        "https://shop.example.com"
    );
}

#[tokio::test]
async fn without_a_cors_policy_preflights_reach_the_component() {
    let app = spawn_app(&two_probes("")).await;
    let reply = request(
        app.addr,
        "OPTIONS",
        "/big/headers",
        &[
            ("origin", "https://shop.example.com"),
            ("access-control-request-method", "POST"),
        ],
        "",
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["method"], "OPTIONS");
    assert!(!has_cors_headers(&reply));
}
