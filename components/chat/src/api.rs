//! The HTTP API, `/api/chat/...`: rooms, members, messages, receipts.

use bv_auth::Principal;
use bv_service::{json, read_json, Problem, Reply, Trace};
use serde::Deserialize;
use serde_json::json;
use spin_sdk::http::Request;

use crate::ephemeral::Ephemeral;
use crate::model::{self, ClientId, MemberRole, MessageText, RoomId, RoomKind, MAX_MEMBERS};
use crate::service::{self, Access};
use crate::store::{Cursor, Store};

/// The largest request body the API reads.
const MAX_BODY_BYTES: usize = 16 * 1024;
/// A page of history: `limit`'s default and most.
const DEFAULT_PAGE: i64 = 50;
const MAX_PAGE: i64 = 100;
/// The longest mute, in minutes: a week.
const MAX_MUTE_MINUTES: i64 = 7 * 24 * 60;

/// A path segment naming a room.
pub fn room_id(raw: &str) -> Result<RoomId, Problem> {
    RoomId::parse(raw).ok_or_else(|| Problem::not_found(format!("no room {raw}")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewRoom {
    kind: String,
    name: Option<String>,
    #[serde(default)]
    members: Vec<String>,
    with: Option<String>,
}

/// `POST /rooms`: a group (`{"kind":"group","name","members"}`, the
/// caller its owner) or the caller's direct room with someone
/// (`{"kind":"direct","with"}`, 201 the first time, 200 after).
pub async fn create_room(req: Request, who: &Principal) -> Result<Reply, Problem> {
    let new: NewRoom = read_json(req, MAX_BODY_BYTES).await?;
    let kind = RoomKind::parse(&new.kind)
        .ok_or_else(|| Problem::invalid_field("kind", "`direct` or `group`"))?;
    let store = Store::open().await?;
    match kind {
        RoomKind::Direct => {
            if new.name.is_some() || !new.members.is_empty() {
                return Err(Problem::invalid_field(
                    "with",
                    "a direct room takes only `with`, the other person",
                ));
            }
            let other = model::user(
                "with",
                new.with
                    .as_deref()
                    .ok_or_else(|| Problem::invalid_field("with", "required for a direct room"))?,
            )?;
            if other == who.subject {
                return Err(Problem::invalid_field(
                    "with",
                    "a direct room is with someone else",
                ));
            }
            let (room, created) = store.open_direct(&who.subject, &other).await?;
            let members = store.members(&RoomId::from_db(room.id.clone())).await?;
            Ok(json(
                if created { 201 } else { 200 },
                &json!({"room": room, "members": members}),
            ))
        }
        RoomKind::Group => {
            if new.with.is_some() {
                return Err(Problem::invalid_field("with", "only for a direct room"));
            }
            let name = model::room_name(
                new.name
                    .as_deref()
                    .ok_or_else(|| Problem::invalid_field("name", "required for a group"))?,
            )?;
            if new.members.len() >= MAX_MEMBERS {
                return Err(Problem::invalid_field(
                    "members",
                    format!("at most {} besides you", MAX_MEMBERS - 1),
                ));
            }
            let members = new
                .members
                .iter()
                .enumerate()
                .map(|(i, m)| model::user(&format!("members[{i}]"), m))
                .collect::<Result<Vec<_>, _>>()?;
            let room = store.create_group(&who.subject, &name, &members).await?;
            let members = store.members(&RoomId::from_db(room.id.clone())).await?;
            Ok(json(201, &json!({"room": room, "members": members})))
        }
    }
}

/// `GET /rooms`: the caller's rooms, with their role and unread count.
pub async fn my_rooms(who: &Principal) -> Result<Reply, Problem> {
    let store = Store::open().await?;
    let rooms: Vec<_> = store
        .rooms_of(&who.subject)
        .await?
        .into_iter()
        .map(|(room, me)| {
            json!({
                "room": room, "role": me.role, "readSeq": me.read_seq,
                "unread": (room.last_seq - me.read_seq).max(0),
            })
        })
        .collect();
    Ok(json(200, &json!({ "rooms": rooms })))
}

/// `GET /rooms/{id}`: the room and its members, with who is online.
pub async fn room(room: &RoomId, who: &Principal) -> Result<Reply, Problem> {
    let store = Store::open().await?;
    let access = service::access(&store, room, who).await?;
    let mut members = store.members(room).await?;
    // Presence is a nicety: the room answers without it when Redis is
    // down.
    if let Ok(redis) = Ephemeral::open().await {
        let names: Vec<String> = members.iter().map(|m| m.user.clone()).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        if let Ok(online) = redis.online(&names).await {
            for (member, on) in members.iter_mut().zip(online) {
                member.online = Some(on);
            }
        }
    }
    Ok(json(200, &json!({"room": access.room, "members": members})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PutMember {
    role: Option<String>,
}

/// `PUT /rooms/{id}/members/{user}`: adds a member or changes their role.
/// Moderators add members; only the owner (or an administrator) names or
/// demotes moderators; nobody is made owner, and a direct room's members
/// are fixed.
pub async fn put_member(
    req: Request,
    room: &RoomId,
    user: &str,
    who: &Principal,
) -> Result<Reply, Problem> {
    let body: PutMember = read_json(req, MAX_BODY_BYTES).await?;
    let user = bv_auth::Subject::parse(user)
        .ok_or_else(|| Problem::not_found(format!("{user} is not a user id")))?;
    let role = match body.role.as_deref() {
        None => MemberRole::Member,
        Some(raw) => match MemberRole::parse(raw) {
            Some(MemberRole::Owner) | None => {
                return Err(Problem::invalid_field("role", "`member` or `moderator`"))
            }
            Some(role) => role,
        },
    };
    let store = Store::open().await?;
    let access = service::access(&store, room, who).await?;
    if access.direct() {
        return Err(Problem::conflict("a direct room's members are fixed"));
    }
    let power = access.power(who);
    let current = store.member(room, user.as_str()).await?;
    let owner_like = power == Some(MemberRole::Owner) || who.is_admin();
    if current.as_ref().map(|m| m.role()) == Some(MemberRole::Owner) {
        return Err(Problem::conflict("the owner's role does not change"));
    }
    let touches_moderators = role == MemberRole::Moderator
        || current.as_ref().map(|m| m.role()) == Some(MemberRole::Moderator);
    if power < Some(MemberRole::Moderator) || (touches_moderators && !owner_like) {
        return Err(bv_auth::guest::forbidden(if touches_moderators {
            "only the room's owner names or demotes moderators"
        } else {
            "only the room's moderators and owner add members"
        }));
    }
    let Some(created) = store.put_member(room, &user, role, MAX_MEMBERS).await? else {
        return Err(Problem::conflict(format!(
            "the room has {MAX_MEMBERS} members, its most"
        )));
    };
    let member = store.member(room, user.as_str()).await?;
    service::tell_members(
        room,
        json!({"type": "member", "roomId": room.as_str(), "member": member}),
    )
    .await;
    Ok(json(if created { 201 } else { 200 }, &member))
}

/// `DELETE /rooms/{id}/members/{user}`: a member leaves (the owner
/// cannot), or a moderator removes someone below them.
pub async fn remove_member(room: &RoomId, user: &str, who: &Principal) -> Result<Reply, Problem> {
    let store = Store::open().await?;
    let access = service::access(&store, room, who).await?;
    if access.direct() {
        return Err(Problem::conflict("a direct room's members are fixed"));
    }
    let target = store
        .member(room, user)
        .await?
        .ok_or_else(|| Problem::not_found(format!("{user} is not in room {room}")))?;
    if target.role() == MemberRole::Owner {
        return Err(Problem::conflict("the owner does not leave the room"));
    }
    let own = user == who.subject.as_str();
    let allowed = own
        || who.is_admin()
        || access
            .power(who)
            .is_some_and(|p| p >= MemberRole::Moderator && p > target.role());
    if !allowed {
        return Err(bv_auth::guest::forbidden(
            "moderators remove members; only the owner removes moderators",
        ));
    }
    store.remove_member(room, user).await?;
    service::unsubscribe_all(room, user).await?;
    service::tell_members(
        room,
        json!({"type": "member-left", "roomId": room.as_str(), "user": user}),
    )
    .await;
    Ok(json(
        200,
        &json!({"roomId": room.as_str(), "user": user, "removed": true}),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Mute {
    minutes: i64,
}

/// `PUT /rooms/{id}/members/{user}/mute` (`{"minutes"}`) and `DELETE`
/// (unmute): moderators mute members below them.
pub async fn mute(
    req: Option<Request>,
    room: &RoomId,
    user: &str,
    who: &Principal,
) -> Result<Reply, Problem> {
    let minutes = match req {
        Some(req) => {
            let mute: Mute = read_json(req, MAX_BODY_BYTES).await?;
            if !(1..=MAX_MUTE_MINUTES).contains(&mute.minutes) {
                return Err(Problem::invalid_field(
                    "minutes",
                    format!("from 1 to {MAX_MUTE_MINUTES}"),
                ));
            }
            Some(mute.minutes)
        }
        None => None,
    };
    let store = Store::open().await?;
    let access: Access = service::access(&store, room, who).await?;
    let target = store
        .member(room, user)
        .await?
        .ok_or_else(|| Problem::not_found(format!("{user} is not in room {room}")))?;
    let allowed = !access.direct()
        && (who.is_admin()
            || access
                .power(who)
                .is_some_and(|p| p >= MemberRole::Moderator && p > target.role()));
    if !allowed {
        return Err(bv_auth::guest::forbidden(
            "moderators mute members of a group; the owner mutes moderators",
        ));
    }
    let member = store
        .mute(room, user, minutes)
        .await?
        .ok_or_else(|| Problem::not_found(format!("{user} is not in room {room}")))?;
    service::tell_members(
        room,
        json!({"type": "member", "roomId": room.as_str(), "member": member}),
    )
    .await;
    Ok(json(200, &member))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct NewMessage {
    body: String,
    client_id: Option<String>,
}

/// `POST /rooms/{id}/messages`: 201 and the message; 200 and the first
/// one when its `clientId` was sent before.
pub async fn post_message(req: Request, room: &RoomId, who: &Principal) -> Result<Reply, Problem> {
    let trace = Trace::of(&req);
    let new: NewMessage = read_json(req, MAX_BODY_BYTES).await?;
    let body = MessageText::parse("body", &new.body)?;
    let client_id = new
        .client_id
        .as_deref()
        .map(|c| ClientId::parse("clientId", c))
        .transpose()?;
    let store = Store::open().await?;
    let (message, created) =
        service::send(&store, room, who, &body, client_id.as_ref(), &trace).await?;
    Ok(json(if created { 201 } else { 200 }, &message))
}

/// `GET /rooms/{id}/messages?before=&after=&limit=`: newest first before
/// a seq (the latest by default), or oldest first after one; `next` is
/// the cursor of the following page, `null` at the end.
pub async fn history(room: &RoomId, query: &str, who: &Principal) -> Result<Reply, Problem> {
    let mut before = None;
    let mut after = None;
    let mut limit = None;
    for (name, value) in form_urlencoded::parse(query.as_bytes()) {
        let slot = match name.as_ref() {
            "before" => &mut before,
            "after" => &mut after,
            "limit" => &mut limit,
            other => {
                return Err(Problem::invalid_parameter(
                    other,
                    "unknown parameter (known: before, after, limit)",
                ))
            }
        };
        if slot.is_some() {
            return Err(Problem::invalid_parameter(&name, "given more than once"));
        }
        let n = value
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .ok_or_else(|| {
                Problem::invalid_parameter(&name, format!("must be a whole number, got {value:?}"))
            })?;
        *slot = Some(n);
    }
    let cursor = match (before, after) {
        (Some(_), Some(_)) => {
            return Err(Problem::invalid_parameter(
                "after",
                "give `before` or `after`, not both",
            ))
        }
        (Some(b), None) => Cursor::Before(b),
        (None, Some(a)) => Cursor::After(a),
        (None, None) => Cursor::Before(i64::MAX),
    };
    let limit = limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(Problem::invalid_parameter(
            "limit",
            format!("from 1 to {MAX_PAGE}"),
        ));
    }
    let store = Store::open().await?;
    service::access(&store, room, who).await?;
    let messages = store.history(room, cursor, limit).await?;
    let full = messages.len() as i64 == limit;
    let next = match (cursor, messages.last()) {
        (Cursor::Before(_), Some(last)) if full && last.seq > 1 => json!({"before": last.seq}),
        (Cursor::After(_), Some(last)) if full => json!({"after": last.seq}),
        _ => serde_json::Value::Null,
    };
    Ok(json(200, &json!({"messages": messages, "next": next})))
}

/// `DELETE /rooms/{id}/messages/{seq}`.
pub async fn delete_message(room: &RoomId, seq: &str, who: &Principal) -> Result<Reply, Problem> {
    let seq = seq
        .parse::<i64>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| Problem::not_found(format!("no message {seq} in room {room}")))?;
    let store = Store::open().await?;
    let message = service::delete(&store, room, seq, who).await?;
    Ok(json(200, &message))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Receipts {
    delivered_seq: Option<i64>,
    read_seq: Option<i64>,
}

/// `PUT /rooms/{id}/receipts` (`{"deliveredSeq", "readSeq"}`): moves the
/// caller's receipts forward; the answer says where they stand.
pub async fn receipts(req: Request, room: &RoomId, who: &Principal) -> Result<Reply, Problem> {
    let body: Receipts = read_json(req, MAX_BODY_BYTES).await?;
    if body.delivered_seq.is_none() && body.read_seq.is_none() {
        return Err(Problem::invalid_field(
            "$",
            "give `deliveredSeq`, `readSeq` or both",
        ));
    }
    for (field, value) in [
        ("deliveredSeq", body.delivered_seq),
        ("readSeq", body.read_seq),
    ] {
        if value.is_some_and(|v| v < 0) {
            return Err(Problem::invalid_field(field, "must not be negative"));
        }
    }
    let store = Store::open().await?;
    let receipt = service::receipt(
        &store,
        room,
        who,
        body.delivered_seq.unwrap_or(0),
        body.read_seq.unwrap_or(0),
    )
    .await?;
    Ok(json(200, &receipt))
}
