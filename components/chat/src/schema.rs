//! The chat tables, in the schema `chat`.

use bv_service::Migration;

/// The name the migrations are recorded under in `bv_migrations`.
pub const COMPONENT: &str = "chat";

/// The migrations, in order.
pub const MIGRATIONS: &[Migration] = &[Migration {
    name: "0001_rooms_members_messages",
    sql: "CREATE SCHEMA IF NOT EXISTS chat;
CREATE TABLE chat.rooms (
    id          uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    kind        text        NOT NULL CHECK (kind IN ('direct', 'group')),
    name        text,
    -- The two members of a direct room, sorted: one direct room per pair.
    direct_key  text        UNIQUE,
    created_by  text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    -- The seq of the room's last message: messages take the next one
    -- under this row's lock, so a room's order has no gaps or ties.
    last_seq    bigint      NOT NULL DEFAULT 0
);
CREATE TABLE chat.members (
    room_id       uuid        NOT NULL REFERENCES chat.rooms ON DELETE CASCADE,
    user_id       text        NOT NULL,
    role          text        NOT NULL CHECK (role IN ('owner', 'moderator', 'member')),
    muted_until   timestamptz,
    delivered_seq bigint      NOT NULL DEFAULT 0,
    read_seq      bigint      NOT NULL DEFAULT 0,
    joined_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (room_id, user_id)
);
CREATE INDEX members_by_user ON chat.members (user_id, room_id);
CREATE TABLE chat.messages (
    room_id     uuid        NOT NULL REFERENCES chat.rooms ON DELETE CASCADE,
    seq         bigint      NOT NULL,
    sender      text        NOT NULL,
    body        text,
    -- The sender's id for the message: the same id again is the same
    -- message (a retried send posts nothing twice).
    client_id   text,
    sent_at     timestamptz NOT NULL DEFAULT now(),
    deleted_at  timestamptz,
    deleted_by  text,
    PRIMARY KEY (room_id, seq),
    UNIQUE (room_id, sender, client_id)
);
",
}];
