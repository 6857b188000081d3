//! The platform's durable event log, `bv_events.outbox` in PostgreSQL, read
//! as named subscriptions.
//!
//! Producers write events into the outbox in the same transaction as their
//! state change. Every reader — a `[[trigger.postgres]]` subscription of
//! `bv`, or the Kafka bridge — is a row in `bv_events.subscriptions` whose
//! position moves only after what it read is done, so `bv events list`,
//! `replay` and the lag metrics treat them all alike.

pub mod pattern;
pub mod schema;
pub mod subscription;

pub use schema::{ensure_schema, LOCK_CLASS};
pub use subscription::{
    advance, next_batch, prepare_reader, register, try_lock, Batch, OutboxEvent, Position, Start,
};
