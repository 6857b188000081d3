-- The durable event log of one database, in the schema `bv_events`.
-- Idempotent: `bv` applies it when a Postgres trigger or `bv events init`
-- first uses a database (under an advisory lock, so concurrent starts agree).

CREATE SCHEMA IF NOT EXISTS bv_events;

-- Events written by producers, in the same transaction as their state change.
-- `tx` is the writing transaction's id: readers take only rows whose
-- transaction is older than every transaction still running, so an event
-- never becomes visible "behind" a position a reader has already passed.
CREATE TABLE IF NOT EXISTS bv_events.outbox (
    seq         bigserial   PRIMARY KEY,
    tx          xid8        NOT NULL DEFAULT pg_current_xact_id(),
    id          text        NOT NULL,
    source      text        NOT NULL,
    type        text        NOT NULL,
    subject     text,
    time        timestamptz NOT NULL,
    event       jsonb       NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    UNIQUE (source, id)
);
CREATE INDEX IF NOT EXISTS outbox_position ON bv_events.outbox (tx, seq);
CREATE INDEX IF NOT EXISTS outbox_recorded_at ON bv_events.outbox (recorded_at);
-- One subject's events in order: live streams of one order read these.
CREATE INDEX IF NOT EXISTS outbox_subject ON bv_events.outbox (subject, seq);

-- Wakes the trigger's LISTEN connections, naming the event's type so that a
-- subscription ignores wake-ups that cannot concern it (Postgres sends one
-- notification per distinct type and transaction); polling covers a lost
-- notification. An empty payload wakes every subscription.
CREATE OR REPLACE FUNCTION bv_events.notify_outbox() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('bv_events', NEW.type);
    RETURN NULL;
END $$;
CREATE OR REPLACE TRIGGER outbox_notify AFTER INSERT ON bv_events.outbox
    FOR EACH ROW EXECUTE FUNCTION bv_events.notify_outbox();

-- One row per subscription: where it is in the outbox, as (tx, seq).
CREATE TABLE IF NOT EXISTS bv_events.subscriptions (
    name          text        PRIMARY KEY,
    component     text        NOT NULL,
    types         text[]      NOT NULL,
    position_tx   xid8        NOT NULL DEFAULT '0',
    position_seq  bigint      NOT NULL DEFAULT 0,
    delivered     bigint      NOT NULL DEFAULT 0,
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- Events a subscription gave up on after its attempts (or that its handler
-- rejected). `retry_requested` is set by `bv events dead-letters retry`.
CREATE TABLE IF NOT EXISTS bv_events.dead_letters (
    id              bigserial   PRIMARY KEY,
    subscription    text        NOT NULL,
    seq             bigint      NOT NULL,
    event_id        text        NOT NULL,
    type            text        NOT NULL,
    subject         text,
    event           jsonb       NOT NULL,
    attempts        integer     NOT NULL,
    last_error      text        NOT NULL,
    retry_requested boolean     NOT NULL DEFAULT false,
    failed_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (subscription, seq)
);

-- Events an idempotent consumer has handled, recorded in the consumer's own
-- transaction (bv-events-guest's `Transaction::claim`).
CREATE TABLE IF NOT EXISTS bv_events.processed (
    consumer     text        NOT NULL,
    source       text        NOT NULL,
    event_id     text        NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, source, event_id)
);
