//! The inventory tables, in the Postgres schema `inventory`.
//!
//! Both inventory components apply these migrations before touching the
//! tables (the projector includes this file with `#[path]`), so whichever
//! runs first creates them and the two always agree on their shape.
//!
//! The CHECK constraints are the last line of defence for the stock
//! invariants: whatever a handler gets wrong, a row can never hold
//! negative stock or more reserved than on hand.

use bv_service::Migration;

/// The name the migrations are recorded under in `bv_migrations`.
pub const COMPONENT: &str = "inventory";

/// In order; never edit one that has shipped, add the next.
pub const MIGRATIONS: &[Migration] = &[Migration {
    name: "0001_stock_and_reservations",
    sql: "CREATE SCHEMA IF NOT EXISTS inventory;
CREATE TABLE inventory.stock (
    product_id text PRIMARY KEY,
    sku        text NOT NULL,
    on_hand    bigint NOT NULL DEFAULT 0,
    reserved   bigint NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT stock_on_hand_not_negative CHECK (on_hand >= 0),
    CONSTRAINT stock_reserved_not_negative CHECK (reserved >= 0),
    CONSTRAINT stock_reserved_within_on_hand CHECK (reserved <= on_hand)
);
CREATE TABLE inventory.reservations (
    reservation_id text PRIMARY KEY,
    order_id       text NOT NULL,
    status         text NOT NULL DEFAULT 'RESERVED'
                   CHECK (status IN ('RESERVED', 'RELEASED', 'COMMITTED')),
    expires_at     timestamptz NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE inventory.reservation_items (
    reservation_id text NOT NULL REFERENCES inventory.reservations ON DELETE CASCADE,
    product_id     text NOT NULL REFERENCES inventory.stock,
    quantity       bigint NOT NULL CHECK (quantity > 0),
    PRIMARY KEY (reservation_id, product_id)
);
",
}];
