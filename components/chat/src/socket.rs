//! The WebSocket, `/api/chat/live`: `bv` holds the connections and calls
//! here for each connect, message and disconnect.
//!
//! Commands (JSON; a `ref` given is echoed in the answer):
//! - `{"type":"join","roomId"}` → `joined` with the room's `lastSeq`: the
//!   connection gets the room's pushes (members and administrators only);
//!   `leave` → `left`.
//! - `{"type":"send","roomId","body","clientId"?}` → `sent` with the
//!   message (the room's live members get it as `message`).
//! - `{"type":"typing","roomId"}`, `{"type":"delivered"|"read","roomId",
//!   "seq"}`: no answer; the room gets `typing` / `receipt`.
//! - `{"type":"ping"}` → `pong`.
//! - A command refused → `error` with the HTTP API's `status`, `kind` and
//!   `detail`.

use bv_auth::Principal;
use bv_service::{Problem, ProblemKind, Reply, Trace};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Value};
use spin_sdk::http::{FullBody, Request, Response};

use crate::api::room_id;
use crate::ephemeral::Ephemeral;
use crate::model::{ClientId, MessageText};
use crate::store::Store;
use crate::{push, service};

/// Accepts a connection on `/live` whose token verifies, naming its
/// principal, and marks the user online.
pub async fn connect(req: &Request, path: &str) -> Result<Reply, Problem> {
    if path != "/live" {
        return Err(Problem::not_found(format!(
            "no WebSocket at /api/chat{path}; connect to /api/chat/live"
        )));
    }
    let who = bv_auth::authenticate_handshake(req.headers(), req.uri().query()).await?;
    let connection = header(req, "bv-websocket-connection").unwrap_or_default();
    let redis = Ephemeral::open().await?;
    redis.connected(who.subject.as_str(), &connection).await?;
    Ok(Response::builder()
        .status(200)
        .header("bv-websocket-principal", who.to_header())
        .body(FullBody::new(Bytes::new()))
        .expect("static parts are valid"))
}

/// Forgets the connection.
pub async fn disconnect(req: &Request) {
    let (Some(who), Some(connection)) = (principal(req), header(req, "bv-websocket-connection"))
    else {
        return;
    };
    let gone = async {
        Ephemeral::open()
            .await?
            .disconnected(who.subject.as_str(), &connection)
            .await
    };
    if let Err(problem) = gone.await {
        eprintln!(
            "chat: forgetting connection {connection}: {}",
            problem.detail
        );
    }
}

pub fn header(req: &Request, name: &str) -> Option<String> {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

pub fn principal(req: &Request) -> Option<Principal> {
    Principal::from_header(&header(req, "bv-websocket-principal")?)
}

/// A client's command; its `ref`, if any, is taken out first (every
/// command may carry one).
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
enum Command {
    Join {
        #[serde(rename = "roomId")]
        room_id: String,
    },
    Leave {
        #[serde(rename = "roomId")]
        room_id: String,
    },
    Send {
        #[serde(rename = "roomId")]
        room_id: String,
        body: String,
        #[serde(rename = "clientId")]
        client_id: Option<String>,
    },
    Typing {
        #[serde(rename = "roomId")]
        room_id: String,
    },
    Delivered {
        #[serde(rename = "roomId")]
        room_id: String,
        seq: i64,
    },
    Read {
        #[serde(rename = "roomId")]
        room_id: String,
        seq: i64,
    },
    Ping {},
}

fn error(problem: &Problem, reference: Option<Value>) -> Value {
    let mut answer = json!({
        "type": "error",
        "status": problem.status,
        "kind": problem.kind.as_str(),
        "detail": problem.detail,
    });
    if let Some(r) = reference {
        answer["ref"] = r;
    }
    answer
}

fn with_ref(mut answer: Value, reference: Option<Value>) -> Value {
    if let Some(r) = reference {
        answer["ref"] = r;
    }
    answer
}

/// The answer to one message (`None`: nothing goes back).
pub async fn message(req: Request) -> Option<Value> {
    let Some(who) = principal(&req) else {
        let problem = Problem::new(
            401,
            ProblemKind::Unauthenticated,
            "Unauthorized",
            "the connection has no principal",
        );
        return Some(error(&problem, None));
    };
    let connection = header(&req, "bv-websocket-connection").unwrap_or_default();
    // Every message renews the user's presence, so a connection open for
    // longer than its time to live stays online (best effort).
    if let Ok(redis) = Ephemeral::open().await {
        let _ = redis.connected(who.subject.as_str(), &connection).await;
    }
    let trace = Trace::of(&req);
    let body = spin_sdk::http::body::IncomingBodyExt::bytes(req.into_body())
        .await
        .unwrap_or_default();
    let malformed = |detail: String| {
        let problem = Problem::new(
            400,
            ProblemKind::MalformedJson,
            "Not a command",
            format!("{detail}; send join, leave, send, typing, delivered, read or ping"),
        );
        Some(error(&problem, None))
    };
    let mut value: Value = match serde_json::from_slice(&body) {
        Ok(value) => value,
        Err(e) => return malformed(e.to_string()),
    };
    let reference = value.as_object_mut().and_then(|o| o.remove("ref"));
    let command = match serde_json::from_value::<Command>(value) {
        Ok(command) => command,
        Err(e) => {
            let mut answer = malformed(e.to_string())?;
            if let Some(r) = reference {
                answer["ref"] = r;
            }
            return Some(answer);
        }
    };
    match run(command, &who, &connection, &trace).await {
        Ok(answer) => answer.map(|a| with_ref(a, reference)),
        Err(problem) => Some(error(&problem, reference)),
    }
}

async fn run(
    command: Command,
    who: &Principal,
    connection: &str,
    trace: &Trace,
) -> Result<Option<Value>, Problem> {
    match command {
        Command::Ping {} => Ok(Some(json!({"type": "pong"}))),
        Command::Join { room_id: raw } => {
            let room = room_id(&raw)?;
            let store = Store::open().await?;
            let access = service::access(&store, &room, who).await?;
            push::membership("PUT", connection, &room.group())
                .await
                .map_err(Problem::unavailable)?;
            Ok(Some(json!({
                "type": "joined", "roomId": room.as_str(), "lastSeq": access.room.last_seq,
            })))
        }
        Command::Leave { room_id: raw } => {
            let room = room_id(&raw)?;
            push::membership("DELETE", connection, &room.group())
                .await
                .map_err(Problem::unavailable)?;
            Ok(Some(json!({"type": "left", "roomId": room.as_str()})))
        }
        Command::Send {
            room_id: raw,
            body,
            client_id,
        } => {
            let room = room_id(&raw)?;
            let body = MessageText::parse("body", &body)?;
            let client_id = client_id
                .as_deref()
                .map(|c| ClientId::parse("clientId", c))
                .transpose()?;
            let store = Store::open().await?;
            let (message, _) =
                service::send(&store, &room, who, &body, client_id.as_ref(), trace).await?;
            Ok(Some(json!({"type": "sent", "message": message})))
        }
        Command::Typing { room_id: raw } => {
            let room = room_id(&raw)?;
            service::typing(&Store::open().await?, &room, who).await?;
            Ok(None)
        }
        Command::Delivered { room_id: raw, seq } | Command::Read { room_id: raw, seq }
            if seq < 0 =>
        {
            let _ = raw;
            Err(Problem::invalid_field("seq", "must not be negative"))
        }
        Command::Delivered { room_id: raw, seq } => {
            let room = room_id(&raw)?;
            service::receipt(&Store::open().await?, &room, who, seq, 0).await?;
            Ok(None)
        }
        Command::Read { room_id: raw, seq } => {
            let room = room_id(&raw)?;
            service::receipt(&Store::open().await?, &room, who, 0, seq).await?;
            Ok(None)
        }
    }
}
