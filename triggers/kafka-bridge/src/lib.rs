//! The Kafka bridge: a native sidecar between the platform's durable event
//! log (the PostgreSQL outbox) and Kafka. Components never speak Kafka:
//! Spin has no Kafka trigger and SpinKube's runtime bundles none.
//!
//! - **Out** ([`outbound`]): the outbox's events of configured types to
//!   topics, in CloudEvents' Kafka binding (binary mode), key = subject,
//!   position moved only after the broker acknowledged.
//! - **In** ([`inbound`]): records of configured topics into the outbox,
//!   checked and deduplicated by event id, offsets committed only after the
//!   write; refused records to a dead-letter topic.
//! - **Change data capture** ([`cdc`]): chosen tables' row changes from
//!   PostgreSQL's logical replication to topics in Debezium's envelope, the
//!   slot advanced only after the broker acknowledged.
//!
//! Configured by `[application.tool.kafka-bridge]` in the app's `spin.toml`
//! ([`config`]); metrics on its own admin listener ([`admin`]).

pub mod admin;
pub mod binding;
pub mod cdc;
pub mod config;
pub mod inbound;
pub mod kafka;
pub mod metrics;
pub mod outbound;
pub mod retry;

/// Aborts a task when dropped: a session's connection driver ends with the
/// session, whichever way it ends.
pub(crate) struct AbortOnDrop(pub(crate) tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
