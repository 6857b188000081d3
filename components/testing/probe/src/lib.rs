//! `probe`: the test component behind the runtime's integration tests.
//!
//! One component, mounted under various routes and manifests, with one small
//! endpoint per host feature. It dispatches on the first segment of the
//! `spin-path-info` header (the part of the path after the matched route; the
//! request path when the header is absent):
//!
//! | path info              | answer                                                        |
//! |------------------------|---------------------------------------------------------------|
//! | `` `/` `/headers`      | 200 JSON `{name, method, uri, headers}` (`name` = `$PROBE_NAME`) |
//! | `/var/<name>`          | the Spin variable's value; 500 with the error                 |
//! | `/env/<NAME>`          | the environment variable; 404 if unset                        |
//! | `/file?path=/x`        | the file's contents; 404 with the error                       |
//! | `/kv/<store>/<key>`    | GET value (404 if none), PUT/POST set (204), DELETE (204), `?exists` → `true`/`false` |
//! | `/kv/<store>`          | GET: the sorted keys as a JSON array; 403 if the store can't be opened |
//! | `/fetch?url=<url>[&method=M]` | outbound request (GET by default) with this request's body, `authorization` and `content-type`: 200 JSON `{status, body}`; 502 with the error |
//! | `/panic`               | panics (a trap for the host)                                  |
//! | `/loop`                | spins forever                                                 |
//! | `/alloc?mb=N`          | allocates and touches N MiB, answers the length               |
//! | `/sleep?ms=N`          | sleeps N ms on the WASI monotonic clock, answers `slept`      |
//! | `/counter`             | bumps a per-instance counter and answers it                   |
//! | `/count`               | reads the body chunk by chunk, answers its length             |
//! | `/first-chunk`         | reads one body chunk, answers its length at once              |
//! | `/status/<code>`       | that status, empty body                                       |
//!
//! Anything else is `404 unknown probe action`.

use std::borrow::Cow;
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use spin_sdk::http::body::IncomingBodyExt;
use spin_sdk::http::{FullBody, Method, Request, Response};
use spin_sdk::http_service;
use spin_sdk::key_value::Store;

type Reply = Response<FullBody<Bytes>>;

/// Requests served by this instance so far via `/counter`.
static COUNTER: AtomicU64 = AtomicU64::new(0);

#[http_service]
async fn handle(req: Request) -> Reply {
    let path_info = match req.headers().get("spin-path-info") {
        Some(value) => value.to_str().unwrap_or("").to_owned(),
        None => req.uri().path().to_owned(),
    };
    let mut segments = path_info.trim_start_matches('/').splitn(2, '/');
    let action = segments.next().unwrap_or("");
    let rest = segments.next().unwrap_or("");

    match action {
        "" | "headers" => describe(&req),
        "var" => match spin_sdk::variables::get(decode(rest)).await {
            Ok(value) => reply(200, value),
            Err(e) => reply(500, format!("{e:?}")),
        },
        "env" => match std::env::var(&*decode(rest)) {
            Ok(value) => reply(200, value),
            Err(e) => reply(404, e.to_string()),
        },
        "file" => match std::fs::read(query(&req, "path").unwrap_or_default()) {
            Ok(contents) => reply(200, contents),
            Err(e) => reply(404, e.to_string()),
        },
        "kv" => key_value(req, rest).await,
        "fetch" => fetch(req).await,
        "panic" => panic!("probe panic"),
        "loop" => {
            let mut n = 0u64;
            loop {
                n = black_box(n.wrapping_add(1));
            }
        }
        "alloc" => {
            let mb: usize = query_num(&req, "mb");
            let mut block = vec![0u8; mb << 20];
            block.fill(black_box(1));
            reply(200, black_box(block).len().to_string())
        }
        "sleep" => {
            spin_sdk::time::sleep(Duration::from_millis(query_num(&req, "ms"))).await;
            reply(200, "slept")
        }
        "counter" => reply(
            200,
            (COUNTER.fetch_add(1, Ordering::SeqCst) + 1).to_string(),
        ),
        "count" => {
            let mut body = req.into_body().stream();
            let mut total = 0;
            while let Some(chunk) = body.next().await {
                match chunk {
                    Ok(chunk) => total += chunk.len(),
                    Err(e) => return reply(500, format!("{e:?}")),
                }
            }
            reply(200, total.to_string())
        }
        "first-chunk" => match req.into_body().stream().next().await {
            Some(Ok(chunk)) => reply(200, chunk.len().to_string()),
            Some(Err(e)) => reply(500, format!("{e:?}")),
            None => reply(200, "0"),
        },
        "status" => match rest.parse() {
            Ok(code) if (100..1000).contains(&code) => reply(code, ""),
            _ => reply(400, "bad status code"),
        },
        _ => reply(404, "unknown probe action"),
    }
}

/// `/headers`: what the component was given.
fn describe(req: &Request) -> Reply {
    let mut headers = serde_json::Map::new();
    for name in req.headers().keys() {
        let values: Vec<_> = req
            .headers()
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()))
            .collect();
        headers.insert(name.as_str().to_owned(), values.join(", ").into());
    }
    json(serde_json::json!({
        "name": std::env::var("PROBE_NAME").unwrap_or_default(),
        "method": req.method().as_str(),
        "uri": req.uri().to_string(),
        "headers": headers,
    }))
}

/// `/kv/<store>[/<key>]`.
async fn key_value(req: Request, rest: &str) -> Reply {
    let (store, key) = rest.split_once('/').unwrap_or((rest, ""));
    let store = match Store::open(decode(store)).await {
        Ok(store) => store,
        Err(e) => return reply(403, format!("{e:?}")),
    };
    let key = decode(key);
    let result = match (req.method().clone(), key.is_empty()) {
        (Method::GET, true) => store.get_keys().await.collect().await.map(|mut keys| {
            keys.sort();
            json(keys.into())
        }),
        (Method::GET, false) if query(&req, "exists").is_some() => store
            .exists(&key)
            .await
            .map(|exists| reply(200, exists.to_string())),
        (Method::GET, false) => store.get(&key).await.map(|value| match value {
            Some(value) => reply(200, value),
            None => reply(404, "no such key"),
        }),
        (Method::PUT | Method::POST, false) => match req.into_body().bytes().await {
            Ok(value) => store.set(&key, &value).await.map(|()| reply(204, "")),
            Err(e) => return reply(500, format!("{e:?}")),
        },
        (Method::DELETE, false) => store.delete(&key).await.map(|()| reply(204, "")),
        _ => return reply(405, "method not allowed"),
    };
    result.unwrap_or_else(|e| reply(500, format!("{e:?}")))
}

/// `/fetch?url=...[&method=M]`: an outbound request (GET unless `method`
/// says otherwise) carrying this request's body and its `authorization` and
/// `content-type` headers.
async fn fetch(req: Request) -> Reply {
    let url = query(&req, "url").unwrap_or_default();
    let method = query(&req, "method").unwrap_or_else(|| "GET".into());
    let mut builder = http::Request::builder().method(method.as_str()).uri(&url);
    for name in ["authorization", "content-type"] {
        if let Some(value) = req.headers().get(name) {
            builder = builder.header(name, value.clone());
        }
    }
    let body = match req.into_body().bytes().await {
        Ok(body) => body,
        Err(e) => return reply(500, format!("{e:?}")),
    };
    let request = match builder.body(FullBody::new(body)) {
        Ok(request) => request,
        Err(e) => return reply(400, e.to_string()),
    };
    let response = match spin_sdk::http::send(request).await {
        Ok(response) => response,
        Err(e) => return reply(502, format!("{e:?}")),
    };
    let status = response.status().as_u16();
    match response.into_body().bytes().await {
        Ok(body) => json(serde_json::json!({
            "status": status,
            "body": String::from_utf8_lossy(&body),
        })),
        Err(e) => reply(502, format!("{e:?}")),
    }
}

fn reply(status: u16, body: impl Into<Bytes>) -> Reply {
    Response::builder()
        .status(status)
        .body(FullBody::new(body.into()))
        .expect("valid status")
}

fn json(value: serde_json::Value) -> Reply {
    let mut response = reply(200, value.to_string());
    response
        .headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    response
}

/// The first value of the query parameter `name`, percent-decoded.
fn query(req: &Request, name: &str) -> Option<String> {
    let query = req.uri().query()?;
    form_urlencoded::parse(query.as_bytes())
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
}

/// A numeric query parameter, 0 when absent or not a number.
fn query_num<T: std::str::FromStr + Default>(req: &Request, name: &str) -> T {
    query(req, name)
        .and_then(|v| v.parse().ok())
        .unwrap_or_default()
}

/// Percent-decodes a path segment.
fn decode(segment: &str) -> Cow<'_, str> {
    percent_encoding::percent_decode_str(segment).decode_utf8_lossy()
}
