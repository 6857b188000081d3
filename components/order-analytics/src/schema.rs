//! The tables of the projections, in the schema `analytics`.

use bv_service::Migration;

/// The name the migrations are recorded under in `bv_migrations`.
pub const COMPONENT: &str = "order-analytics";

/// Every table the projections write; a rebuild empties them all.
pub const TABLES: [&str; 6] = [
    "analytics.orders_by_customer",
    "analytics.minute_totals",
    "analytics.minute_products",
    "analytics.late_events",
    "analytics.applied",
    "analytics.stream",
];

/// The migrations, in order.
pub const MIGRATIONS: &[Migration] = &[Migration {
    name: "0001_projections",
    sql: "CREATE SCHEMA IF NOT EXISTS analytics;
CREATE TABLE analytics.orders_by_customer (
    order_id     text        PRIMARY KEY,
    customer_id  text        NOT NULL,
    status       text        NOT NULL,
    total_amount bigint,
    currency     text,
    item_count   integer,
    placed_at    timestamptz,
    updated_at   timestamptz NOT NULL
);
CREATE INDEX orders_by_customer_customer
    ON analytics.orders_by_customer (customer_id, placed_at DESC, order_id);
CREATE TABLE analytics.minute_totals (
    minute      timestamptz NOT NULL,
    currency    text        NOT NULL,
    orders      bigint      NOT NULL DEFAULT 0,
    order_value bigint      NOT NULL DEFAULT 0,
    paid        bigint      NOT NULL DEFAULT 0,
    revenue     bigint      NOT NULL DEFAULT 0,
    PRIMARY KEY (minute, currency)
);
CREATE TABLE analytics.minute_products (
    minute     timestamptz NOT NULL,
    product_id text        NOT NULL,
    sku        text        NOT NULL,
    quantity   bigint      NOT NULL,
    orders     bigint      NOT NULL,
    PRIMARY KEY (minute, product_id)
);
CREATE TABLE analytics.late_events (
    source     text        NOT NULL,
    event_id   text        NOT NULL,
    type       text        NOT NULL,
    order_id   text        NOT NULL,
    event_time timestamptz NOT NULL,
    watermark  timestamptz NOT NULL,
    PRIMARY KEY (source, event_id)
);
CREATE INDEX late_events_time ON analytics.late_events (event_time);
CREATE TABLE analytics.applied (
    source   text NOT NULL,
    event_id text NOT NULL,
    PRIMARY KEY (source, event_id)
);
CREATE TABLE analytics.stream (
    id             boolean     PRIMARY KEY DEFAULT true CHECK (id),
    first_source   text        NOT NULL,
    first_event_id text        NOT NULL,
    max_event_time timestamptz NOT NULL,
    events         bigint      NOT NULL DEFAULT 0
);
",
}];
