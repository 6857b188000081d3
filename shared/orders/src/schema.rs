//! The order service's tables, in schema `orders`.
//!
//! - `orders`: one row per order, its status and (for FAILED and
//!   CANCELLED) why.
//! - `sagas`: one row per checkout saga: `running` while the checkout
//!   works, `compensating` once the sweeper took it over (or a failure's
//!   compensation did not complete), `finished` when nothing is held any
//!   more that should not be. `updated_at` moves with every step, so a saga
//!   that stopped moving is found by the sweeper.
//! - `saga_log`: every step, written before it is attempted (`started`)
//!   and after it ended (`done` or `failed`).
//! - `idempotency`: the first answer to each (customer, `Idempotency-Key`)
//!   with a fingerprint of its body.

use bv_service::Migration;

/// The migrations, in order.
pub const MIGRATIONS: &[Migration] = &[Migration {
    name: "0001_orders",
    sql: "CREATE SCHEMA IF NOT EXISTS orders;
CREATE TABLE orders.orders (
    order_id     text PRIMARY KEY,
    customer_id  text NOT NULL,
    status       text NOT NULL CHECK (status IN
                   ('PENDING', 'CONFIRMED', 'PAID', 'FULFILLED', 'CANCELLED', 'FAILED')),
    reason       text,
    items        jsonb NOT NULL,
    total_amount bigint NOT NULL CHECK (total_amount >= 0),
    currency     text NOT NULL,
    card_token   text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at   timestamptz NOT NULL DEFAULT clock_timestamp());
CREATE INDEX orders_by_customer ON orders.orders (customer_id, created_at DESC, order_id);
CREATE TABLE orders.sagas (
    order_id   text PRIMARY KEY REFERENCES orders.orders,
    state      text NOT NULL CHECK (state IN ('running', 'compensating', 'finished')),
    step       text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT clock_timestamp());
CREATE INDEX sagas_unfinished ON orders.sagas (updated_at) WHERE state <> 'finished';
CREATE TABLE orders.saga_log (
    id       bigserial PRIMARY KEY,
    order_id text NOT NULL REFERENCES orders.orders,
    step     text NOT NULL,
    phase    text NOT NULL CHECK (phase IN ('started', 'done', 'failed')),
    detail   text,
    at       timestamptz NOT NULL DEFAULT clock_timestamp());
CREATE INDEX saga_log_by_order ON orders.saga_log (order_id, id);
CREATE TABLE orders.idempotency (
    customer_id text NOT NULL,
    key         text NOT NULL,
    fingerprint text NOT NULL,
    order_id    text NOT NULL,
    status      integer,
    body        text,
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (customer_id, key))",
}];
