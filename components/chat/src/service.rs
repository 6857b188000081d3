//! What a member can do in the chat, the same over HTTP and over the
//! WebSocket: each operation checks who may, changes the tables, then
//! pushes the change to the room's live members.

use bv_auth::Principal;
use bv_service::{Problem, Trace};
use serde_json::{json, Value};

use crate::ephemeral::Ephemeral;
use crate::model::{ClientId, MemberRole, MessageText, RoomId, RoomKind};
use crate::store::{Member, Message, Posted, Receipt, Room, Store};
use crate::{events, push};

/// A room and the caller's place in it (`None` for an administrator who
/// is not a member).
pub struct Access {
    /// The room.
    pub room: Room,
    /// The caller's membership.
    pub me: Option<Member>,
}

impl Access {
    /// The caller's role; administrators act as moderators of any room.
    pub fn power(&self, who: &Principal) -> Option<MemberRole> {
        match (&self.me, who.is_admin()) {
            (Some(me), true) => Some(me.role().max(MemberRole::Moderator)),
            (Some(me), false) => Some(me.role()),
            (None, true) => Some(MemberRole::Moderator),
            (None, false) => None,
        }
    }

    /// Whether the room is a direct one.
    pub fn direct(&self) -> bool {
        self.room.kind == RoomKind::Direct.as_str()
    }
}

/// The room, if the caller may see it: its members and administrators.
/// Anyone else gets 404, as if it did not exist.
pub async fn access(store: &Store, room: &RoomId, who: &Principal) -> Result<Access, Problem> {
    let not_found = || Problem::not_found(format!("no room {room}"));
    let found = store.room(room).await?.ok_or_else(not_found)?;
    let me = store.member(room, who.subject.as_str()).await?;
    if me.is_none() && !who.is_admin() {
        return Err(not_found());
    }
    Ok(Access { room: found, me })
}

/// Posts `body` to `room` from `who`: the message and whether it is new
/// (a `client_id` used before gives back the first message, unchanged).
pub async fn send(
    store: &Store,
    room: &RoomId,
    who: &Principal,
    body: &MessageText,
    client_id: Option<&ClientId>,
    trace: &Trace,
) -> Result<(Message, bool), Problem> {
    let access = access(store, room, who).await?;
    let Some(me) = &access.me else {
        return Err(bv_auth::guest::forbidden("only members write in a room"));
    };
    if let Some(until) = &me.muted_until {
        return Err(
            bv_auth::guest::forbidden(format!("you are muted in this room until {until}"))
                .with("mutedUntil", until.clone()),
        );
    }
    let redis = Ephemeral::open().await?;
    redis.count_send(who.subject.as_str()).await?;
    let members = store.members(room).await?;
    let recipients: Vec<String> = members
        .iter()
        .map(|m| m.user.clone())
        .filter(|u| u != who.subject.as_str())
        .collect();
    let names: Vec<&str> = recipients.iter().map(String::as_str).collect();
    let online = redis.online(&names).await?;
    let offline: Vec<String> = recipients
        .iter()
        .zip(online)
        .filter(|(_, on)| !on)
        .map(|(u, _)| u.clone())
        .collect();
    let posted = store
        .post(room, &who.subject, body, client_id, |m| {
            events::message_posted(m, &recipients, &offline).traced(trace.traceparent())
        })
        .await?;
    match posted {
        Posted::New(message) => {
            push::to_group(
                &room.group(),
                &json!({"type": "message", "message": message}),
            )
            .await;
            Ok((message, true))
        }
        Posted::Again(message) => Ok((message, false)),
    }
}

/// Moves `who`'s receipts in `room` and tells the room.
pub async fn receipt(
    store: &Store,
    room: &RoomId,
    who: &Principal,
    delivered: i64,
    read: i64,
) -> Result<Receipt, Problem> {
    let receipt = store
        .receipt(room, &who.subject, delivered, read)
        .await?
        .ok_or_else(|| Problem::not_found(format!("no room {room}")))?;
    push::to_group(
        &room.group(),
        &json!({
            "type": "receipt", "roomId": room.as_str(), "user": who.subject.as_str(),
            "deliveredSeq": receipt.delivered_seq, "readSeq": receipt.read_seq,
        }),
    )
    .await;
    Ok(receipt)
}

/// Tells the room `who` is typing (at most once every few seconds).
pub async fn typing(store: &Store, room: &RoomId, who: &Principal) -> Result<(), Problem> {
    if store.member(room, who.subject.as_str()).await?.is_none() {
        return Err(Problem::not_found(format!("no room {room}")));
    }
    if Ephemeral::open()
        .await?
        .typing(room.as_str(), who.subject.as_str())
        .await?
    {
        push::to_group(
            &room.group(),
            &json!({"type": "typing", "roomId": room.as_str(), "user": who.subject.as_str()}),
        )
        .await;
    }
    Ok(())
}

/// Deletes message `seq`: its sender, a moderator or owner of the room,
/// or an administrator may.
pub async fn delete(
    store: &Store,
    room: &RoomId,
    seq: i64,
    who: &Principal,
) -> Result<Message, Problem> {
    let access = access(store, room, who).await?;
    let message = store
        .message(room, seq)
        .await?
        .ok_or_else(|| Problem::not_found(format!("no message {seq} in room {room}")))?;
    let moderator = access.power(who) >= Some(MemberRole::Moderator) && !access.direct();
    if message.sender != who.subject.as_str() && !moderator && !who.is_admin() {
        return Err(bv_auth::guest::forbidden(
            "only its sender, the room's moderators and owner delete a message",
        ));
    }
    let deleted = store
        .delete_message(room, seq, &who.subject)
        .await?
        .ok_or_else(|| Problem::not_found(format!("no message {seq} in room {room}")))?;
    push::to_group(
        &room.group(),
        &json!({"type": "deleted", "roomId": room.as_str(), "seq": seq, "by": who.subject.as_str()}),
    )
    .await;
    Ok(deleted)
}

/// Takes every connection of `user` out of the room's group (after they
/// left or were removed).
pub async fn unsubscribe_all(room: &RoomId, user: &str) -> Result<(), Problem> {
    let redis = Ephemeral::open().await?;
    for connection in redis.connections(user).await? {
        push::membership("DELETE", &connection, &room.group())
            .await
            .map_err(Problem::unavailable)?;
    }
    Ok(())
}

/// A push to the room about its members.
pub async fn tell_members(room: &RoomId, change: Value) {
    push::to_group(&room.group(), &change).await;
}
