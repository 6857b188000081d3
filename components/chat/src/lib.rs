//! `chat`: rooms, members and messages, over HTTP (`/api/chat/...`) and
//! live over a WebSocket (`/api/chat/live`, held by `bv`).
//!
//! - **Rooms**: direct (two people, one room per pair) and groups (an
//!   owner, moderators, members; at most [`model::MAX_MEMBERS`]).
//! - **Messages** are stored in Postgres (schema `chat`) with a per-room
//!   `seq` from 1 without gaps, taken under the room's row lock; a
//!   `clientId` makes a retried send the same message. History pages by
//!   cursor, newest first (`before`) or catching up (`after`).
//! - **Receipts**: each member's delivered and read `seq`, only forward.
//! - **Ephemeral state** in Redis ([`ephemeral`]): presence (a user's
//!   open connections), typing, the per-user send rate.
//! - **Moderation**: moderators delete any message and mute members;
//!   administrators act as moderators everywhere.
//! - Every message publishes `com.bitvelocity.chat.message.posted.v1` in
//!   its transaction, naming the members who were offline, for the
//!   notifications service.
//!
//! Everything takes the platform's JWTs; a room is visible only to its
//! members (and administrators): anyone else gets 404.

#![deny(missing_docs)]

mod api;
mod ephemeral;
mod events;
mod model;
mod push;
mod schema;
mod service;
mod socket;
mod store;

use bv_service::{path_info, Problem, ProblemKind, Reply};
use spin_sdk::http::{Method, Request};
use spin_sdk::http_service;

/// Where `spin.toml` mounts the component (`route = "/api/chat/..."`).
const MOUNT: &str = "/api/chat";

#[http_service]
async fn handle(req: Request) -> Reply {
    match socket::header(&req, "bv-websocket-event").as_deref() {
        Some("connect") => {
            let path = path_info(&req, MOUNT).unwrap_or_default();
            socket::connect(&req, &path)
                .await
                .unwrap_or_else(Problem::into_response)
        }
        Some("message") => match socket::message(req).await {
            Some(answer) => bv_service::json(200, &answer),
            // An empty answer: nothing goes back to the client.
            None => spin_sdk::http::Response::builder()
                .status(200)
                .body(spin_sdk::http::FullBody::new(bytes::Bytes::new()))
                .expect("static parts are valid"),
        },
        Some("disconnect") => {
            socket::disconnect(&req).await;
            bv_service::json(200, &serde_json::json!({}))
        }
        _ => route(req).await.unwrap_or_else(Problem::into_response),
    }
}

fn not_allowed(allowed: &str) -> Result<Reply, Problem> {
    Err(Problem::method_not_allowed(allowed))
}

async fn route(req: Request) -> Result<Reply, Problem> {
    let path = path_info(&req, MOUNT)?;
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let method = req.method().clone();
    let get = method == Method::GET || method == Method::HEAD;
    if parts.as_slice() == ["live"] {
        return if get {
            Err(Problem::new(
                426,
                ProblemKind::UpgradeRequired,
                "Upgrade Required",
                "/api/chat/live is a WebSocket endpoint: connect with `Connection: Upgrade` and `Upgrade: websocket`",
            ))
        } else {
            not_allowed("GET, HEAD")
        };
    }
    let known = matches!(
        parts.as_slice(),
        ["rooms"]
            | ["rooms", _]
            | ["rooms", _, "members", _]
            | ["rooms", _, "members", _, "mute"]
            | ["rooms", _, "messages"]
            | ["rooms", _, "messages", _]
            | ["rooms", _, "receipts"]
    );
    if !known {
        return Err(Problem::not_found(format!("no route {MOUNT}{path}")));
    }
    let allowed = match parts.as_slice() {
        ["rooms"] => "GET, HEAD, POST",
        ["rooms", _] => "GET, HEAD",
        ["rooms", _, "members", _] => "PUT, DELETE",
        ["rooms", _, "members", _, "mute"] => "PUT, DELETE",
        ["rooms", _, "messages"] => "GET, HEAD, POST",
        ["rooms", _, "messages", _] => "DELETE",
        _ => "PUT",
    };
    let served = allowed.split(", ").any(|m| m == method.as_str());
    if !served {
        return not_allowed(allowed);
    }
    let who = bv_auth::authenticate(req.headers()).await?;
    let query = req.uri().query().unwrap_or("").to_string();
    match (parts.as_slice(), get) {
        (["rooms"], true) => api::my_rooms(&who).await,
        (["rooms"], false) => api::create_room(req, &who).await,
        (["rooms", room], _) => api::room(&api::room_id(room)?, &who).await,
        (["rooms", room, "members", user], _) => {
            let room = api::room_id(room)?;
            if method == Method::PUT {
                api::put_member(req, &room, user, &who).await
            } else {
                api::remove_member(&room, user, &who).await
            }
        }
        (["rooms", room, "members", user, "mute"], _) => {
            let room = api::room_id(room)?;
            let body = (method == Method::PUT).then_some(req);
            api::mute(body, &room, user, &who).await
        }
        (["rooms", room, "messages"], true) => {
            api::history(&api::room_id(room)?, &query, &who).await
        }
        (["rooms", room, "messages"], false) => {
            api::post_message(req, &api::room_id(room)?, &who).await
        }
        (["rooms", room, "messages", seq], _) => {
            api::delete_message(&api::room_id(room)?, seq, &who).await
        }
        (["rooms", room, "receipts"], _) => api::receipts(req, &api::room_id(room)?, &who).await,
        _ => Err(Problem::not_found(format!("no route {MOUNT}{path}"))),
    }
}
