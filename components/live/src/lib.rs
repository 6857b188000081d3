//! `live`: the platform's WebSocket endpoint, `GET /api/live`, and the
//! consumer that feeds it.
//!
//! `bv` holds the connections (`[component.live.tool.bv.websocket]` in
//! `spin.toml`) and calls this component for each of their events:
//!
//! - `connect`: the access token, from `Authorization: Bearer …` or, for
//!   browsers (which cannot set headers on a WebSocket), `?access_token=`,
//!   must verify; the connection's principal is then `<role>:<subject>`.
//!   Without a valid token the handshake is answered 401.
//! - `message`: JSON commands, each answered with one JSON message:
//!   `{"type":"subscribe","channel":"order:<id>"}` → `subscribed` (the
//!   order must be the caller's, or the caller an admin; otherwise
//!   `error` with status 404, as the HTTP API answers another customer's
//!   order), `{"type":"unsubscribe","channel":…}` → `unsubscribed`,
//!   `{"type":"ping"}` → `pong`; anything else → `error` with status 400.
//!   `{"type":"subscribe","channel":"notifications"}` follows the
//!   caller's own notifications (pushed by the `notifications` component
//!   as `{"type":"notification","notification":{…}}`).
//!
//! As a Postgres-trigger consumer of the order events it sends each one to
//! the channel of its order: `{"type":"event","channel":"order:<id>",
//! "event":{"id","type","time","offset","data"}}`. A channel's events come
//! in the order they were written (the trigger's per-subject order); a
//! client that needs what it missed while disconnected reads
//! `GET /api/orders/{id}/events` with `Last-Event-ID`.

use bv_auth::Principal;
use bv_events_guest::Event;
use bv_orders::model::OrderId;
use bv_service::{Problem, ProblemKind, Reply};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Value};
use spin_sdk::http::body::IncomingBodyExt;
use spin_sdk::http::{FullBody, Method, Request, Response};
use spin_sdk::http_service;

/// bv's WebSocket interface.
const WEBSOCKET: &str = "http://bv-websocket.spin.internal";

#[http_service]
async fn handle(req: Request) -> Reply {
    let event = header(&req, "bv-websocket-event");
    match event.as_deref() {
        Some("connect") => connect(&req).await.unwrap_or_else(Problem::into_response),
        Some("message") => {
            let principal = header(&req, "bv-websocket-principal").unwrap_or_default();
            let connection = header(&req, "bv-websocket-connection").unwrap_or_default();
            let body = req.into_body().bytes().await.unwrap_or_default();
            let answer = message(&principal, &connection, &body).await;
            bv_service::json(200, &answer)
        }
        Some(_) => bv_service::json(200, &json!({})),
        None if req.method() != Method::GET && req.method() != Method::HEAD => {
            Problem::method_not_allowed("GET, HEAD").into_response()
        }
        None => Problem::new(
            426,
            ProblemKind::UpgradeRequired,
            "Upgrade Required",
            "/api/live is a WebSocket endpoint: connect with `Connection: Upgrade` and `Upgrade: websocket`",
        )
        // (`Upgrade` is a hop-by-hop header wasi:http does not let a
        // component set; the detail says what to do.)
        .into_response(),
    }
}

fn header(req: &Request, name: &str) -> Option<String> {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// Accepts a connection whose token verifies, naming its principal.
async fn connect(req: &Request) -> Result<Reply, Problem> {
    let principal = bv_auth::authenticate_handshake(req.headers(), req.uri().query()).await?;
    Ok(Response::builder()
        .status(200)
        .header("bv-websocket-principal", principal.to_header())
        .body(FullBody::new(Bytes::new()))
        .expect("static parts are valid"))
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum Command {
    Subscribe { channel: String },
    Unsubscribe { channel: String },
    Ping,
}

/// The answer to one message from `principal` on `connection`.
async fn message(principal: &str, connection: &str, body: &[u8]) -> Value {
    let command = match serde_json::from_slice::<Command>(body) {
        Ok(command) => command,
        Err(e) => {
            return error(
                400,
                &format!("not a command ({e}); send {{\"type\":\"subscribe\",\"channel\":\"order:<id>\"}}, unsubscribe or ping"),
            )
        }
    };
    match command {
        Command::Ping => json!({ "type": "pong" }),
        Command::Subscribe { channel } => match authorize(principal, &channel).await {
            Ok(group) => match membership("PUT", connection, &group).await {
                Ok(()) => json!({ "type": "subscribed", "channel": channel }),
                Err(e) => error(503, &e),
            },
            Err(problem) => error(problem.status, &problem.detail),
        },
        Command::Unsubscribe { channel } => {
            let group = match Principal::from_header(principal) {
                Some(who) if channel == NOTIFICATIONS => notifications_group(&who),
                _ => channel.clone(),
            };
            match membership("DELETE", connection, &group).await {
                Ok(()) => json!({ "type": "unsubscribed", "channel": channel }),
                Err(e) => error(503, &e),
            }
        }
    }
}

fn error(status: u16, detail: &str) -> Value {
    json!({ "type": "error", "status": status, "detail": detail })
}

/// The channel of the caller's own notifications.
const NOTIFICATIONS: &str = "notifications";

/// The group the notifications service pushes `who`'s notifications to.
fn notifications_group(who: &Principal) -> String {
    format!("{NOTIFICATIONS}:{}", who.subject.as_str())
}

/// The group `principal` (`<role>:<subject>`) joins to follow `channel`,
/// if they may: an order's channel is its customer's and the admins';
/// `notifications` is everyone's own.
async fn authorize(principal: &str, channel: &str) -> Result<String, Problem> {
    let principal = Principal::from_header(principal).ok_or_else(|| {
        Problem::new(
            401,
            ProblemKind::Unauthenticated,
            "Unauthorized",
            "the connection has no principal",
        )
    })?;
    if channel == NOTIFICATIONS {
        return Ok(notifications_group(&principal));
    }
    let Some(order) = channel.strip_prefix("order:").filter(|id| !id.is_empty()) else {
        return Err(Problem::invalid_field(
            "channel",
            format!("`{channel}` is not a channel (order:<id> or notifications)"),
        ));
    };
    let conn = bv_orders::store::open().await?;
    let found = bv_orders::store::load(&conn, &OrderId::from(order)).await?;
    match found {
        Some(o) if principal.may_access(&o.customer.to_string()) => Ok(channel.to_owned()),
        _ => Err(Problem::not_found(format!("no order `{order}`"))),
    }
}

/// Puts `connection` into `channel` (`PUT`) or takes it out (`DELETE`).
async fn membership(method: &str, connection: &str, channel: &str) -> Result<(), String> {
    let request = Request::builder()
        .method(method)
        .uri(format!(
            "{WEBSOCKET}/connections/{connection}/groups/{channel}"
        ))
        .body(FullBody::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
    let response = spin_sdk::http::send(request)
        .await
        .map_err(|e| format!("the WebSocket interface: {e:?}"))?;
    match response.status().as_u16() {
        204 => Ok(()),
        status => Err(format!("the WebSocket interface answered {status}")),
    }
}

/// Sends an order event to its order's channel. Nobody listening is not a
/// failure; the interface being unreachable is (the trigger retries).
#[bv_events_guest::handler]
async fn on_order_event(event: Event<Value>) -> anyhow::Result<()> {
    let Some(order) = event.subject.as_deref() else {
        return Ok(());
    };
    let channel = format!("order:{order}");
    let message = json!({
        "type": "event",
        "channel": channel,
        "event": {
            "id": event.id,
            "type": event.ty,
            "time": event.time,
            "offset": event.offset,
            "data": event.data,
        },
    });
    let request = Request::builder()
        .method("POST")
        .uri(format!("{WEBSOCKET}/groups/{channel}"))
        .header("content-type", "application/json")
        .body(FullBody::new(Bytes::from(message.to_string())))?;
    let response = spin_sdk::http::send(request)
        .await
        .map_err(|e| anyhow::anyhow!("the WebSocket interface: {e:?}"))?;
    match response.status().as_u16() {
        202 => Ok(()),
        // A channel name the interface refuses (an odd subject): nobody
        // can be listening to it.
        400 => Ok(()),
        status => anyhow::bail!("the WebSocket interface answered {status}"),
    }
}
