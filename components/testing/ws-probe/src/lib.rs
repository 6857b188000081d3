//! `ws-probe`: a WebSocket component for the runtime's WebSocket tests.
//!
//! bv calls it for each event of a connection (`bv-websocket-event`):
//!
//! - `connect`: refused with 403 when the query has `refuse`; otherwise
//!   accepted, naming the principal from the query's `as=` (none without
//!   it) and, if the client offered it, the subprotocol `probe.v1`.
//! - `message`, text commands, answered to the sender:
//!   `whoami` → `<connection> <principal or -> auth=<yes|no>`;
//!   `join G` / `leave G` → `joined G <status>` / `left G <status>`;
//!   `group G TEXT` → `group <status> <answer>`; `to ID TEXT` → `to <status>`;
//!   `close CODE` → closes its own connection, no answer;
//!   `slow MS` → `slept MS` after that long; anything else → `echo: TEXT`;
//!   binary messages come back as they are.
//! - `disconnect`: prints `disconnect <connection> code=<code>`.
//!
//! A request without the event header (a plain GET) is answered `plain`,
//! with `forged` if it carries a `bv-websocket-*` header (bv strips them).

use bytes::Bytes;
use spin_sdk::http::body::IncomingBodyExt;
use spin_sdk::http::{FullBody, IntoResponse, Request, Response};
use spin_sdk::http_service;

const API: &str = "http://bv-websocket.spin.internal";

fn header(req: &Request, name: &str) -> Option<String> {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn answer(status: u16, content_type: &str, body: impl Into<Bytes>) -> Response<FullBody<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(FullBody::new(body.into()))
        .unwrap()
}

/// Sends `method` `path` with `body` to bv's WebSocket interface; the status
/// and the answer's body.
async fn api(method: &str, path: &str, body: &str) -> (u16, String) {
    let request = Request::builder()
        .method(method)
        .uri(format!("{API}{path}"))
        .header("content-type", "text/plain")
        .body(FullBody::new(Bytes::from(body.to_owned())))
        .unwrap();
    match spin_sdk::http::send(request).await {
        Ok(response) => {
            let status = response.status().as_u16();
            let body = response.into_body().bytes().await.unwrap_or_default();
            (status, String::from_utf8_lossy(&body).into_owned())
        }
        Err(e) => (0, format!("{e:?}")),
    }
}

#[http_service]
async fn handle(req: Request) -> impl IntoResponse {
    let event = header(&req, "bv-websocket-event");
    let connection = header(&req, "bv-websocket-connection").unwrap_or_default();
    let principal = header(&req, "bv-websocket-principal");
    match event.as_deref() {
        Some("connect") => connect(&req, &connection),
        Some("message") => {
            let binary =
                header(&req, "content-type").as_deref() == Some("application/octet-stream");
            let authorized = req.headers().contains_key("authorization");
            let body = req.into_body().bytes().await.unwrap_or_default();
            if binary {
                return answer(200, "application/octet-stream", body);
            }
            let text = String::from_utf8_lossy(&body).into_owned();
            let reply = message(&text, &connection, principal.as_deref(), authorized).await;
            answer(200, "text/plain", reply)
        }
        Some("disconnect") => {
            let code = header(&req, "bv-websocket-close-code").unwrap_or_default();
            println!("disconnect {connection} code={code}");
            answer(200, "text/plain", "")
        }
        _ => {
            let forged = req
                .headers()
                .keys()
                .any(|k| k.as_str().starts_with("bv-websocket-"));
            answer(
                200,
                "text/plain",
                if forged { "plain forged" } else { "plain" },
            )
        }
    }
}

fn connect(req: &Request, connection: &str) -> Response<FullBody<Bytes>> {
    let query = req.uri().query().unwrap_or("").to_owned();
    let param = |name: &str| {
        query
            .split('&')
            .filter_map(|p| p.split_once('=').or(Some((p, ""))))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_owned())
    };
    if param("refuse").is_some() {
        println!("connect {connection} refused");
        return answer(
            403,
            "application/problem+json",
            r#"{"type":"urn:test:refused","title":"Forbidden","status":403,"detail":"refused by ws-probe"}"#,
        );
    }
    println!("connect {connection}");
    let mut response = Response::builder().status(200);
    if let Some(principal) = param("as") {
        response = response.header("bv-websocket-principal", principal);
    }
    let offered = header(req, "sec-websocket-protocol").unwrap_or_default();
    if offered.split(',').any(|p| p.trim() == "probe.v1") {
        response = response.header("sec-websocket-protocol", "probe.v1");
    }
    response.body(FullBody::new(Bytes::new())).unwrap()
}

async fn message(
    text: &str,
    connection: &str,
    principal: Option<&str>,
    authorized: bool,
) -> String {
    let mut words = text.splitn(3, ' ');
    let (command, first, rest) = (
        words.next().unwrap_or(""),
        words.next().unwrap_or(""),
        words.next().unwrap_or(""),
    );
    match command {
        "whoami" => format!(
            "{connection} {} auth={}",
            principal.unwrap_or("-"),
            if authorized { "yes" } else { "no" }
        ),
        "join" => {
            let (status, _) = api(
                "PUT",
                &format!("/connections/{connection}/groups/{first}"),
                "",
            )
            .await;
            format!("joined {first} {status}")
        }
        "leave" => {
            let (status, _) = api(
                "DELETE",
                &format!("/connections/{connection}/groups/{first}"),
                "",
            )
            .await;
            format!("left {first} {status}")
        }
        "group" => {
            let (status, body) = api("POST", &format!("/groups/{first}"), rest).await;
            format!("group {status} {body}")
        }
        "to" => {
            let (status, _) = api("POST", &format!("/connections/{first}"), rest).await;
            format!("to {status}")
        }
        "close" => {
            api(
                "DELETE",
                &format!("/connections/{connection}?code={first}"),
                "",
            )
            .await;
            String::new()
        }
        "slow" => {
            let ms: u64 = first.parse().unwrap_or(0);
            spin_sdk::time::sleep(std::time::Duration::from_millis(ms)).await;
            format!("slept {ms}")
        }
        _ => format!("echo: {text}"),
    }
}
