//! The chat tables: rooms, members and messages, each change in one
//! transaction (a message, its seq and its event commit together).

use std::sync::atomic::AtomicBool;

use bv_events_guest::{CloudEvent, Transaction};
use bv_service::{migrate, Problem};
use serde::Serialize;
use spin_sdk::pg::{Connection, ParameterValue, Row};

use crate::model::{ClientId, MemberRole, MessageText, RoomId, RoomKind, UserId};
use crate::schema;

static MIGRATED: AtomicBool = AtomicBool::new(false);

/// A timestamp column as RFC 3339 (UTC, milliseconds).
fn rfc3339(column: &str) -> String {
    format!("to_char(({column}) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')")
}

fn text(s: impl Into<String>) -> ParameterValue {
    ParameterValue::Str(s.into())
}

fn missing(column: &str) -> Problem {
    Problem::internal(format!("chat: column `{column}` is missing"))
}

fn col<T: spin_sdk::pg::Decode>(row: &Row, column: &str) -> Result<T, Problem> {
    row.get::<T>(column).ok_or_else(|| missing(column))
}

/// A room.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Room {
    /// Its id.
    pub id: String,
    /// `direct` or `group`.
    pub kind: &'static str,
    /// A group's name; a direct room has none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Who made it.
    pub created_by: String,
    /// When.
    pub created_at: String,
    /// The seq of its last message (0 when it has none).
    pub last_seq: i64,
}

const ROOM_COLUMNS: &str = "id::text AS id, kind, name, created_by, last_seq";

fn room_of(row: &Row) -> Result<Room, Problem> {
    let kind: String = col(row, "kind")?;
    Ok(Room {
        id: col(row, "id")?,
        kind: RoomKind::parse(&kind)
            .ok_or_else(|| missing("kind"))?
            .as_str(),
        name: row.get::<Option<String>>("name").flatten(),
        created_by: col(row, "created_by")?,
        created_at: col(row, "created_at")?,
        last_seq: col(row, "last_seq")?,
    })
}

/// One member of a room.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Member {
    /// The user.
    pub user: String,
    /// `owner`, `moderator` or `member`.
    pub role: &'static str,
    /// Until when they may not write, while they may not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub muted_until: Option<String>,
    /// The last message their client confirmed receiving.
    pub delivered_seq: i64,
    /// The last message they read.
    pub read_seq: i64,
    /// Whether a connection of theirs is open (filled from presence).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub online: Option<bool>,
    #[serde(skip)]
    role_parsed: Option<MemberRole>,
}

impl Member {
    /// Their role.
    pub fn role(&self) -> MemberRole {
        self.role_parsed.unwrap_or(MemberRole::Member)
    }
}

const MEMBER_COLUMNS: &str = "user_id, role, delivered_seq, read_seq, \
     CASE WHEN muted_until > now() THEN to_char(muted_until AT TIME ZONE 'UTC', \
     'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') END AS muted_until";

fn member_of(row: &Row) -> Result<Member, Problem> {
    let role: String = col(row, "role")?;
    let parsed = MemberRole::parse(&role).ok_or_else(|| missing("role"))?;
    Ok(Member {
        user: col(row, "user_id")?,
        role: parsed.as_str(),
        muted_until: row.get::<Option<String>>("muted_until").flatten(),
        delivered_seq: col(row, "delivered_seq")?,
        read_seq: col(row, "read_seq")?,
        online: None,
        role_parsed: Some(parsed),
    })
}

/// A message as answered and pushed. A deleted message keeps its place in
/// the room's order but loses its text.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Message {
    /// The room.
    pub room_id: String,
    /// Its place in the room's order, from 1, without gaps.
    pub seq: i64,
    /// Who sent it.
    pub sender: String,
    /// The text; `None` once deleted.
    pub body: Option<String>,
    /// The sender's id for it, if they gave one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// When it was stored.
    pub sent_at: String,
    /// Whether it was deleted.
    pub deleted: bool,
}

fn message_columns() -> String {
    format!(
        "room_id::text AS room_id, seq, sender, body, client_id, {} AS sent_at, \
         deleted_at IS NOT NULL AS deleted",
        rfc3339("sent_at")
    )
}

fn message_of(row: &Row) -> Result<Message, Problem> {
    Ok(Message {
        room_id: col(row, "room_id")?,
        seq: col(row, "seq")?,
        sender: col(row, "sender")?,
        body: row.get::<Option<String>>("body").flatten(),
        client_id: row.get::<Option<String>>("client_id").flatten(),
        sent_at: col(row, "sent_at")?,
        deleted: col(row, "deleted")?,
    })
}

/// What [`Store::post`] came to.
pub enum Posted {
    /// A new message.
    New(Message),
    /// The sender had already sent this `clientId`: that message,
    /// unchanged (nothing stored, nothing published).
    Again(Message),
}

/// A receipt as it stands after a change.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Receipt {
    /// The last message the member's client confirmed receiving.
    pub delivered_seq: i64,
    /// The last message they read.
    pub read_seq: i64,
}

/// The chat database of one request.
pub struct Store {
    conn: Connection,
}

impl Store {
    /// Connects to `db_url`, with the event log and the chat tables in
    /// place (checked once per instance).
    pub async fn open() -> Result<Self, Problem> {
        let url = spin_sdk::variables::get("db_url")
            .await
            .map_err(|e| Problem::internal(format!("variable db_url: {e:?}")))?;
        let conn = Connection::open(url).await.map_err(|e| {
            eprintln!("chat: connecting to the database: {e}");
            Problem::unavailable("the chat database is unreachable")
        })?;
        bv_service::event_log::ensure(&conn).await?;
        migrate(&conn, schema::COMPONENT, schema::MIGRATIONS, &MIGRATED).await?;
        Ok(Self { conn })
    }

    async fn rows(&self, sql: &str, params: Vec<ParameterValue>) -> Result<Vec<Row>, Problem> {
        Ok(self.conn.query(sql, params).await?.collect().await?)
    }

    /// Runs `work` in a transaction: committed when it returns `Ok`, rolled
    /// back otherwise.
    async fn in_transaction<T>(
        &self,
        work: impl AsyncFnOnce(&Transaction<'_>) -> Result<T, Problem>,
    ) -> Result<T, Problem> {
        let tx = Transaction::begin(&self.conn).await?;
        match work(&tx).await {
            Ok(value) => {
                tx.commit().await?;
                Ok(value)
            }
            Err(problem) => {
                let _ = tx.rollback().await;
                Err(problem)
            }
        }
    }

    /// A new group room owned by `owner`, with `members` in it.
    pub async fn create_group(
        &self,
        owner: &UserId,
        name: &str,
        members: &[UserId],
    ) -> Result<Room, Problem> {
        self.in_transaction(async |tx| {
            let rows: Vec<Row> = tx
                .query(
                    format!(
                        "INSERT INTO chat.rooms (kind, name, created_by) VALUES ('group', $1, $2) \
                         RETURNING {ROOM_COLUMNS}, {} AS created_at",
                        rfc3339("created_at")
                    ),
                    vec![text(name), text(owner.as_str())],
                )
                .await?
                .collect()
                .await?;
            let room = room_of(rows.first().ok_or_else(|| missing("id"))?)?;
            let mut users = vec![Some(owner.to_string())];
            users.extend(
                members
                    .iter()
                    .filter(|m| *m != owner)
                    .map(|m| Some(m.to_string())),
            );
            tx.execute(
                "INSERT INTO chat.members (room_id, user_id, role) \
                 SELECT $1::text::uuid, u, CASE WHEN u = $2 THEN 'owner' ELSE 'member' END \
                 FROM unnest($3::text[]) AS u ON CONFLICT DO NOTHING",
                vec![
                    text(&room.id),
                    text(owner.as_str()),
                    ParameterValue::ArrayStr(users),
                ],
            )
            .await?;
            Ok(room)
        })
        .await
    }

    /// The direct room of `a` and `b`, made the first time it is asked
    /// for: the room and whether it is new.
    pub async fn open_direct(&self, a: &UserId, b: &UserId) -> Result<(Room, bool), Problem> {
        let mut pair = [a.as_str(), b.as_str()];
        pair.sort();
        let key = pair.join(" ");
        self.in_transaction(async |tx| {
            let created: Vec<Row> = tx
                .query(
                    format!(
                        "INSERT INTO chat.rooms (kind, direct_key, created_by) \
                         VALUES ('direct', $1, $2) ON CONFLICT (direct_key) DO NOTHING \
                         RETURNING {ROOM_COLUMNS}, {} AS created_at",
                        rfc3339("created_at")
                    ),
                    vec![text(&key), text(a.as_str())],
                )
                .await?
                .collect()
                .await?;
            if let Some(row) = created.first() {
                let room = room_of(row)?;
                tx.execute(
                    "INSERT INTO chat.members (room_id, user_id, role) \
                     VALUES ($1::text::uuid, $2, 'owner'), ($1::text::uuid, $3, 'owner')",
                    vec![text(&room.id), text(a.as_str()), text(b.as_str())],
                )
                .await?;
                return Ok((room, true));
            }
            let rows: Vec<Row> = tx
                .query(
                    format!(
                        "SELECT {ROOM_COLUMNS}, {} AS created_at FROM chat.rooms WHERE direct_key = $1",
                        rfc3339("created_at")
                    ),
                    vec![text(&key)],
                )
                .await?
                .collect()
                .await?;
            Ok((room_of(rows.first().ok_or_else(|| missing("id"))?)?, false))
        })
        .await
    }

    /// A room, if it exists.
    pub async fn room(&self, id: &RoomId) -> Result<Option<Room>, Problem> {
        let rows = self
            .rows(
                &format!(
                    "SELECT {ROOM_COLUMNS}, {} AS created_at FROM chat.rooms WHERE id = $1::text::uuid",
                    rfc3339("created_at")
                ),
                vec![text(id.as_str())],
            )
            .await?;
        rows.first().map(room_of).transpose()
    }

    /// The rooms `user` is in, most recently active first, with their role
    /// and how many messages they have not read.
    pub async fn rooms_of(&self, user: &UserId) -> Result<Vec<(Room, Member)>, Problem> {
        let rows = self
            .rows(
                &format!(
                    // (The two tables share no column name but the
                    // join's.)
                    "SELECT r.id::text AS id, kind, name, created_by, last_seq, \
                     {} AS created_at, {MEMBER_COLUMNS} \
                     FROM chat.members m JOIN chat.rooms r ON r.id = m.room_id \
                     WHERE m.user_id = $1 ORDER BY r.last_seq DESC, r.created_at DESC LIMIT 500",
                    rfc3339("r.created_at"),
                ),
                vec![text(user.as_str())],
            )
            .await?;
        rows.iter()
            .map(|r| Ok((room_of(r)?, member_of(r)?)))
            .collect()
    }

    /// Every member of a room, by role then join time.
    pub async fn members(&self, room: &RoomId) -> Result<Vec<Member>, Problem> {
        let rows = self
            .rows(
                &format!(
                    "SELECT {MEMBER_COLUMNS} FROM chat.members WHERE room_id = $1::text::uuid \
                     ORDER BY CASE role WHEN 'owner' THEN 0 WHEN 'moderator' THEN 1 ELSE 2 END, joined_at, user_id"
                ),
                vec![text(room.as_str())],
            )
            .await?;
        rows.iter().map(member_of).collect()
    }

    /// `user`'s membership of `room`, if they are in it.
    pub async fn member(&self, room: &RoomId, user: &str) -> Result<Option<Member>, Problem> {
        let rows = self
            .rows(
                &format!(
                    "SELECT {MEMBER_COLUMNS} FROM chat.members WHERE room_id = $1::text::uuid AND user_id = $2"
                ),
                vec![text(room.as_str()), text(user)],
            )
            .await?;
        rows.first().map(member_of).transpose()
    }

    /// Puts `user` in `room` with `role`, or gives a member that role:
    /// whether they are new. Refused past [`crate::model::MAX_MEMBERS`].
    pub async fn put_member(
        &self,
        room: &RoomId,
        user: &UserId,
        role: MemberRole,
        max_members: usize,
    ) -> Result<Option<bool>, Problem> {
        self.in_transaction(async |tx| {
            // The room's row lock orders concurrent joins, so the count
            // holds.
            tx.execute(
                "SELECT 1 FROM chat.rooms WHERE id = $1::text::uuid FOR UPDATE",
                vec![text(room.as_str())],
            )
            .await?;
            let rows: Vec<Row> = tx
                .query(
                    "SELECT count(*) AS n, bool_or(user_id = $2) AS present FROM chat.members \
                     WHERE room_id = $1::text::uuid",
                    vec![text(room.as_str()), text(user.as_str())],
                )
                .await?
                .collect()
                .await?;
            let row = rows.first().ok_or_else(|| missing("n"))?;
            let present = row.get::<Option<bool>>("present").flatten() == Some(true);
            let count: i64 = col(row, "n")?;
            if !present && count as usize >= max_members {
                return Ok(None);
            }
            tx.execute(
                "INSERT INTO chat.members (room_id, user_id, role) VALUES ($1::text::uuid, $2, $3) \
                 ON CONFLICT (room_id, user_id) DO UPDATE SET role = EXCLUDED.role",
                vec![text(room.as_str()), text(user.as_str()), text(role.as_str())],
            )
            .await?;
            Ok(Some(!present))
        })
        .await
    }

    /// Takes `user` out of `room`: whether they were in it.
    pub async fn remove_member(&self, room: &RoomId, user: &str) -> Result<bool, Problem> {
        let rows = self
            .rows(
                "DELETE FROM chat.members WHERE room_id = $1::text::uuid AND user_id = $2 RETURNING 1 AS gone",
                vec![text(room.as_str()), text(user)],
            )
            .await?;
        Ok(!rows.is_empty())
    }

    /// Mutes `user` in `room` for `minutes` (or unmutes them with `None`):
    /// the member after the change, or `None` when they are not in it.
    pub async fn mute(
        &self,
        room: &RoomId,
        user: &str,
        minutes: Option<i64>,
    ) -> Result<Option<Member>, Problem> {
        let until = match minutes {
            Some(m) => ParameterValue::Int64(m),
            None => ParameterValue::DbNull,
        };
        let rows = self
            .rows(
                &format!(
                    "UPDATE chat.members SET muted_until = now() + make_interval(mins => $3::bigint::int) \
                     WHERE room_id = $1::text::uuid AND user_id = $2 RETURNING {MEMBER_COLUMNS}"
                ),
                vec![text(room.as_str()), text(user), until],
            )
            .await?;
        rows.first().map(member_of).transpose()
    }

    /// Stores a message from `sender` (already checked to be a member who
    /// may write) as the room's next, with `event` made from it published
    /// in the same transaction. A `client_id` the sender used before in
    /// this room gives back that message instead.
    pub async fn post(
        &self,
        room: &RoomId,
        sender: &UserId,
        body: &MessageText,
        client_id: Option<&ClientId>,
        event: impl FnOnce(&Message) -> CloudEvent,
    ) -> Result<Posted, Problem> {
        let tx = Transaction::begin(&self.conn).await?;
        match self
            .post_in(&tx, room, sender, body, client_id, event)
            .await
        {
            Ok(Posted::New(message)) => {
                tx.commit().await?;
                Ok(Posted::New(message))
            }
            // The seq taken goes back with the rollback: no gap.
            other => {
                let _ = tx.rollback().await;
                other
            }
        }
    }

    async fn post_in(
        &self,
        tx: &Transaction<'_>,
        room: &RoomId,
        sender: &UserId,
        body: &MessageText,
        client_id: Option<&ClientId>,
        event: impl FnOnce(&Message) -> CloudEvent,
    ) -> Result<Posted, Problem> {
        // The room's lock: messages of one room are numbered one at a
        // time, and a retry with the same client id waits for the first
        // to commit, then finds it.
        let seq: Vec<Row> = tx
            .query(
                "UPDATE chat.rooms SET last_seq = last_seq + 1 WHERE id = $1::text::uuid RETURNING last_seq",
                vec![text(room.as_str())],
            )
            .await?
            .collect()
            .await?;
        let seq: i64 = col(seq.first().ok_or_else(|| missing("last_seq"))?, "last_seq")?;
        if let Some(client_id) = client_id {
            let earlier: Vec<Row> = tx
                .query(
                    format!(
                        "SELECT {} FROM chat.messages WHERE room_id = $1::text::uuid \
                         AND sender = $2 AND client_id = $3",
                        message_columns()
                    ),
                    vec![
                        text(room.as_str()),
                        text(sender.as_str()),
                        text(client_id.as_str()),
                    ],
                )
                .await?
                .collect()
                .await?;
            if let Some(row) = earlier.first() {
                return Ok(Posted::Again(message_of(row)?));
            }
        }
        let rows: Vec<Row> = tx
            .query(
                format!(
                    "INSERT INTO chat.messages (room_id, seq, sender, body, client_id) \
                     VALUES ($1::text::uuid, $2, $3, $4, $5) RETURNING {}",
                    message_columns()
                ),
                vec![
                    text(room.as_str()),
                    ParameterValue::Int64(seq),
                    text(sender.as_str()),
                    text(body.as_str()),
                    client_id.map_or(ParameterValue::DbNull, |c| text(c.as_str())),
                ],
            )
            .await?
            .collect()
            .await?;
        let message = message_of(rows.first().ok_or_else(|| missing("seq"))?)?;
        // The sender has read what they wrote.
        tx.execute(
            "UPDATE chat.members SET delivered_seq = $3, read_seq = $3 \
             WHERE room_id = $1::text::uuid AND user_id = $2",
            vec![
                text(room.as_str()),
                text(sender.as_str()),
                ParameterValue::Int64(seq),
            ],
        )
        .await?;
        tx.publish(&event(&message)).await?;
        Ok(Posted::New(message))
    }

    /// The message `seq` of `room`.
    pub async fn message(&self, room: &RoomId, seq: i64) -> Result<Option<Message>, Problem> {
        let rows = self
            .rows(
                &format!(
                    "SELECT {} FROM chat.messages WHERE room_id = $1::text::uuid AND seq = $2",
                    message_columns()
                ),
                vec![text(room.as_str()), ParameterValue::Int64(seq)],
            )
            .await?;
        rows.first().map(message_of).transpose()
    }

    /// Up to `limit` messages of `room`: newest first before `before`, or
    /// oldest first after `after`.
    pub async fn history(
        &self,
        room: &RoomId,
        cursor: Cursor,
        limit: i64,
    ) -> Result<Vec<Message>, Problem> {
        let (condition, order, from) = match cursor {
            Cursor::Before(seq) => ("seq < $2", "DESC", seq),
            Cursor::After(seq) => ("seq > $2", "ASC", seq),
        };
        self.rows(
            &format!(
                "SELECT {} FROM chat.messages WHERE room_id = $1::text::uuid AND {condition} \
                 ORDER BY seq {order} LIMIT $3",
                message_columns()
            ),
            vec![
                text(room.as_str()),
                ParameterValue::Int64(from),
                ParameterValue::Int64(limit),
            ],
        )
        .await?
        .iter()
        .map(message_of)
        .collect()
    }

    /// Deletes message `seq` of `room` (its text goes; its place stays):
    /// the message after, or `None` when there is no such message.
    pub async fn delete_message(
        &self,
        room: &RoomId,
        seq: i64,
        by: &UserId,
    ) -> Result<Option<Message>, Problem> {
        let rows = self
            .rows(
                &format!(
                    "UPDATE chat.messages SET body = NULL, \
                     deleted_at = coalesce(deleted_at, now()), deleted_by = coalesce(deleted_by, $3) \
                     WHERE room_id = $1::text::uuid AND seq = $2 RETURNING {}",
                    message_columns()
                ),
                vec![text(room.as_str()), ParameterValue::Int64(seq), text(by.as_str())],
            )
            .await?;
        rows.first().map(message_of).transpose()
    }

    /// Moves `user`'s receipts in `room` forward (never back, never past
    /// the last message; reading implies receiving): where they stand.
    pub async fn receipt(
        &self,
        room: &RoomId,
        user: &UserId,
        delivered: i64,
        read: i64,
    ) -> Result<Option<Receipt>, Problem> {
        let rows = self
            .rows(
                "UPDATE chat.members m SET \
                 read_seq = GREATEST(m.read_seq, LEAST($4, r.last_seq)), \
                 delivered_seq = GREATEST(m.delivered_seq, LEAST(GREATEST($3, $4), r.last_seq)) \
                 FROM chat.rooms r WHERE r.id = m.room_id AND m.room_id = $1::text::uuid AND m.user_id = $2 \
                 RETURNING m.delivered_seq, m.read_seq",
                vec![
                    text(room.as_str()),
                    text(user.as_str()),
                    ParameterValue::Int64(delivered),
                    ParameterValue::Int64(read),
                ],
            )
            .await?;
        rows.first()
            .map(|r| {
                Ok(Receipt {
                    delivered_seq: col(r, "delivered_seq")?,
                    read_seq: col(r, "read_seq")?,
                })
            })
            .transpose()
    }
}

/// Where a page of history starts.
#[derive(Debug, Clone, Copy)]
pub enum Cursor {
    /// The messages before this seq, newest first (`i64::MAX`: the latest).
    Before(i64),
    /// The messages after this seq, oldest first (catching up).
    After(i64),
}
