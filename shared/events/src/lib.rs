//! The platform's events: the CloudEvents 1.0 envelope and one JSON Schema
//! per event type and version.
//!
//! A plain library (serde, serde_json, chrono, uuid; no I/O, no async) so
//! that both host crates and guest components (wasm32-wasip2) use the same
//! definitions.
//!
//! # Types and versions
//!
//! An event's `type` is `com.bitvelocity.<name>.v<version>`, e.g.
//! `com.bitvelocity.order.placed.v1` ([`EventType`]). Its `data` must match
//! `schemas/<name>/<version>.json`, embedded in [`SCHEMAS`]. Money is always
//! `{ "amount": <integer minor units>, "currency": "<ISO 4217 code>" }`.
//!
//! # Producers
//!
//! ```
//! use bv_events::{encode, CloudEvent};
//! let event = CloudEvent::new(
//!     "com.bitvelocity.product.created.v1",
//!     "/catalog",
//!     "p-42",
//!     serde_json::json!({
//!         "productId": "p-42", "sku": "MUG-RED", "name": "Red mug",
//!         "price": { "amount": 1299, "currency": "EUR" }, "status": "active"
//!     }),
//! );
//! let json = encode(&event).expect("matches its schema"); // publish `json`
//! # assert!(json.contains("MUG-RED"));
//! ```
//!
//! [`encode`] refuses an event whose `data` breaks its schema, naming the
//! field (`data.price.amount: must be an integer ≥ 0`), so a bad event is a
//! producer bug found at the producer, not a poison message downstream.
//!
//! # Consumers
//!
//! [`decode`] parses the envelope ([`CloudEvent::parse`]) and checks `data`
//! against the schema of `type`; a consumer handles only what it gets back
//! as `Ok`, and dead-letters the rest with the error's text. Deduplicate on
//! (`source`, `id`): delivery is at least once.
//!
//! # Changing a schema
//!
//! Within a version a schema may only gain optional fields; anything else
//! is a new version file (see [`compat`]). The contract tests compare every
//! schema with `schemas/compat.lock.json` and explain how to refresh it.
//!
//! # Schema subset
//!
//! Schemas use the small JSON Schema subset of [`schema`] (no `pattern`,
//! `$ref` or combinators), validated by this crate itself so that guests
//! need no regex engine or network-capable resolver.

pub mod compat;
mod envelope;
mod registry;
pub mod schema;

pub use envelope::{CloudEvent, EnvelopeError, DATA_CONTENT_TYPE, SPEC_VERSION};
pub use registry::{schema, validate, EventType, SchemaError, SchemaSource, SCHEMAS, TYPE_PREFIX};

/// The SQL that creates a database's durable event log (schema `bv_events`:
/// `outbox`, `subscriptions`, `dead_letters`, `processed`). Idempotent.
pub const POSTGRES_SCHEMA: &str = include_str!("../postgres/schema.sql");

/// Why an event cannot be published or consumed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventError {
    /// The envelope is malformed.
    Envelope(EnvelopeError),
    /// `data` breaks the schema of `type` (or `type` is unknown).
    Schema(SchemaError),
}

impl EventError {
    /// The attribute or `data.…` path at fault.
    pub fn field(&self) -> &str {
        match self {
            EventError::Envelope(e) => &e.field,
            EventError::Schema(e) => e.field(),
        }
    }
}

impl std::fmt::Display for EventError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EventError::Envelope(e) => e.fmt(f),
            EventError::Schema(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for EventError {}

/// For producers: the event as JSON, if it matches its schema.
pub fn encode(event: &CloudEvent) -> Result<String, EventError> {
    validate(event).map_err(EventError::Schema)?;
    Ok(event.to_json())
}

/// For consumers: a received JSON text as an event whose envelope is well
/// formed and whose `data` matches its schema.
pub fn decode(json: &str) -> Result<CloudEvent, EventError> {
    let event = CloudEvent::parse(json).map_err(EventError::Envelope)?;
    validate(&event).map_err(EventError::Schema)?;
    Ok(event)
}
