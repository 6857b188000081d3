//! The notifications' tables, in the schema `notifications`.

use bv_service::Migration;

/// The name the migrations are recorded under in `bv_migrations`.
pub const COMPONENT: &str = "notifications";

/// The migrations, in order.
pub const MIGRATIONS: &[Migration] = &[Migration {
    name: "0001_preferences_inbox_deliveries",
    sql: "CREATE SCHEMA IF NOT EXISTS notifications;
CREATE TABLE notifications.preferences (
    customer_id    text        PRIMARY KEY,
    in_app         boolean     NOT NULL DEFAULT true,
    webhook_url    text,
    webhook_secret text,
    email          text,
    updated_at     timestamptz NOT NULL DEFAULT now()
);
-- In-app notifications: one per customer and event, whatever the
-- redeliveries.
CREATE TABLE notifications.inbox (
    id          uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    customer_id text        NOT NULL,
    event_id    text        NOT NULL,
    kind        text        NOT NULL,
    title       text        NOT NULL,
    data        jsonb       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    read_at     timestamptz,
    UNIQUE (customer_id, event_id)
);
CREATE INDEX inbox_by_customer ON notifications.inbox (customer_id, created_at DESC, id);
-- Webhook and email deliveries and their log: one per customer, event and
-- channel. `url` is the webhook's URL or the email address.
CREATE TABLE notifications.deliveries (
    id              uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    customer_id     text        NOT NULL,
    event_id        text        NOT NULL,
    kind            text        NOT NULL,
    channel         text        NOT NULL CHECK (channel IN ('webhook', 'email')),
    url             text        NOT NULL,
    payload         jsonb       NOT NULL,
    status          text        NOT NULL DEFAULT 'pending'
                                CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts        integer     NOT NULL DEFAULT 0,
    last_status     integer,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    last_attempt_at timestamptz,
    delivered_at    timestamptz,
    UNIQUE (customer_id, event_id, channel)
);
CREATE INDEX deliveries_by_customer ON notifications.deliveries (customer_id, created_at DESC);
CREATE INDEX deliveries_by_event ON notifications.deliveries (event_id);
",
}];
