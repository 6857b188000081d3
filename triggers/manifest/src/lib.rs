//! Loads and validates a Spin application manifest (`spin.toml`, manifest
//! version 2) and a bv runtime config (`runtime-config.toml`).
//!
//! bv runs unmodified Spin applications, so it must accept what Spin accepts
//! and mean the same thing by it. Unlike Spin, it is strict about everything
//! else: every unknown field, malformed route, undefined variable or bad
//! `allowed_outbound_hosts` entry is an error at load time, reported as
//! `<file>: <dotted.field>: <message>` so the user can fix the manifest
//! without reading bv's source. The resulting [`App`] is a fully-resolved,
//! validated model (absolute paths, parsed routes and templates) that the
//! trigger crates consume without re-checking.
//!
//! Things bv cannot run (remote component sources, inline components, the
//! Wagi executor, AI models, component dependencies) are rejected with a clear
//! "not supported" message rather than ignored.

mod app;
mod component;
mod error;
mod http_settings;
mod load;
mod names;
mod raw;
mod runtime_config;
mod settings;
mod template;
mod triggers;
mod variables;

pub use app::{App, Application};
pub use bv_routes::RouteSpec;
pub use component::{BuildConfig, Component, FileMount};
pub use error::ManifestError;
pub use http_settings::{
    CorsSettings, Count, IpNetwork, RateLimitNumbers, RateLimitSettings, WebSocketSettings,
    DEFAULT_MAX_REQUEST_HEADERS, DEFAULT_MAX_REQUEST_HEADER_BYTES,
    DEFAULT_WEBSOCKET_MAX_MESSAGE_BYTES, DEFAULT_WEBSOCKET_PING_INTERVAL_MS,
};
pub use load::{load, parse};
pub use runtime_config::{
    load_runtime_config, parse_runtime_config, KeyValueStoreConfig, RuntimeConfig,
    SqliteDatabaseConfig,
};
pub use settings::{BvSettings, ComponentBvSettings, InstancePolicy, LogLevel};
pub use template::{Template, TemplateError};
pub use triggers::HttpTrigger;
pub use variables::Variable;

/// The name under `*.spin.internal` of bv's WebSocket interface
/// (`http://bv-websocket.spin.internal`), so no component may have it.
pub const WEBSOCKET_HOST_ID: &str = "bv-websocket";

#[cfg(test)]
mod tests;
