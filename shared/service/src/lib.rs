//! What every BitVelocity HTTP component needs, so that all of them answer
//! the same way:
//!
//! - [`Problem`]: RFC 9457 `application/problem+json` errors with a stable
//!   `type` per kind of error (`urn:bitvelocity:problem:<kind>`).
//! - [`read_json`]: a request body parsed into a domain type, with a
//!   specific problem for each way it can be wrong (415, 413, 400, 422
//!   naming the field).
//! - [`Money`]: integer minor units plus an ISO 4217 currency, never floats.
//! - [`migrate`]: versioned SQL migrations, applied once per database under
//!   an advisory lock.
//! - [`trace`]: the W3C `traceparent` of a request, to forward on the calls
//!   and events it causes.
//! - [`telemetry`]: business metrics as stdout lines `bv` turns into
//!   Prometheus series.
//! - [`sse`]: Server-Sent Events frames, heartbeats and the streamed answer.
//! - `event_log` (feature `events`): creates the durable event log for a
//!   component that publishes before any subscriber has started.
#![deny(missing_docs)]

#[cfg(feature = "events")]
pub mod event_log;
mod migrate;
mod money;
mod problem;
mod request;
pub mod sse;
pub mod telemetry;
pub mod trace;

pub use migrate::{migrate, migrations, Migration};
pub use money::{Currency, Money};
pub use problem::{Problem, ProblemKind, DEFAULT_RETRY_AFTER_SECONDS, TYPE_PREFIX};
pub use request::{json, parse_json, path_info, path_within, percent_decode, read_json, Reply};
pub use trace::Trace;
