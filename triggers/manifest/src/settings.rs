//! bv's runtime settings (`[application.tool.bv]` and
//! `[component.<id>.tool.bv]`).

use serde::Deserialize;

use crate::raw;
use crate::{
    CorsSettings, RateLimitSettings, Template, WebSocketSettings, DEFAULT_MAX_REQUEST_HEADERS,
    DEFAULT_MAX_REQUEST_HEADER_BYTES,
};

/// What to do with a component instance after a request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InstancePolicy {
    /// Reuse instances across requests (bounded by `instance_max_requests`)
    /// for throughput.
    #[default]
    Reuse,
    /// A fresh instance per request, exactly like Spin: no state can leak
    /// between requests.
    Strict,
}

/// bv's runtime settings (`[application.tool.bv]`); Spin ignores tool tables,
/// so these keep the manifest runnable by Spin too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BvSettings {
    /// Instance reuse policy (`"reuse"` or `"strict"`).
    pub instance_policy: InstancePolicy,
    /// Requests served by one instance before it is discarded (reuse policy).
    pub instance_max_requests: u32,
    /// Instances of one component alive at the same time.
    pub instance_max_concurrent: u32,
    /// Per-request deadline in milliseconds: until the response's headers.
    pub request_timeout_ms: u64,
    /// Once the headers are sent, how long a response body (a Server-Sent
    /// Events stream, say) may go without sending anything before it is cut
    /// off, in milliseconds. A stream that keeps sending runs as long as it
    /// likes; streams send heartbeats (an SSE comment line) to stay open.
    pub stream_idle_timeout_ms: u64,
    /// Linear memory limit per instance, in MiB.
    pub memory_limit_mb: u64,
    /// Requests in flight per component before bv answers 503.
    pub max_concurrent_requests: u32,
    /// The least severe level of the component's stdout/stderr lines that
    /// bv logs; lines below it are dropped.
    pub log_level: LogLevel,
    /// Most bytes of request body the component is given; a longer body is
    /// answered 413 (checked while the body streams, not only against
    /// `Content-Length`). `None` (the default, as under Spin): no limit.
    pub max_request_body_bytes: Option<u64>,
    /// Most request header fields (application-wide); more is answered 431.
    pub max_request_headers: u32,
    /// Most bytes of request header names and values (application-wide);
    /// more is answered 431.
    pub max_request_header_bytes: u32,
    /// `[application.tool.bv.cors]` (application-wide); `None`: no CORS
    /// headers, preflights go to the component.
    pub cors: Option<CorsSettings>,
    /// The component's rate limit; `None`: unlimited.
    pub rate_limit: Option<RateLimitSettings>,
    /// The proxies (addresses or CIDR networks, application-wide) whose
    /// `Forwarded` / `X-Forwarded-For` headers name the client; each entry
    /// may be a `{{ variable }}` template holding a comma-separated list.
    /// Empty: the client is the TCP peer.
    pub trusted_proxies: Vec<Template>,
    /// `[component.<id>.tool.bv.websocket]` (per component): bv accepts
    /// WebSocket connections on the component's routes and calls the
    /// component for their events. `None`: no WebSocket.
    pub websocket: Option<WebSocketSettings>,
    /// Beyond Spin: how many waiting messages a message trigger (MQTT) may
    /// hand to one instance at once, as concurrent calls of its handler, so
    /// a handler can write them together. 1 (the default, as Spin): one
    /// message at a time, each in a fresh instance.
    pub message_batch: u32,
}

/// How much of a component's output (stdout and stderr lines) bv logs
/// (`log_level = "trace" | "debug" | "info" | "warn" | "error" | "off"`).
/// Ordered from the most to the least verbose.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Everything.
    Trace,
    /// Debug and above.
    Debug,
    /// Info and above: plain stdout lines (info) and stderr lines (warn).
    #[default]
    Info,
    /// Warnings and errors.
    Warn,
    /// Errors only.
    Error,
    /// Nothing (metric lines are still counted).
    Off,
}

impl Default for BvSettings {
    fn default() -> Self {
        BvSettings {
            instance_policy: InstancePolicy::Reuse,
            instance_max_requests: 128,
            instance_max_concurrent: 16,
            request_timeout_ms: 30_000,
            stream_idle_timeout_ms: 60_000,
            memory_limit_mb: 128,
            max_concurrent_requests: 1000,
            log_level: LogLevel::Info,
            max_request_body_bytes: None,
            max_request_headers: DEFAULT_MAX_REQUEST_HEADERS,
            max_request_header_bytes: DEFAULT_MAX_REQUEST_HEADER_BYTES,
            cors: None,
            rate_limit: None,
            trusted_proxies: Vec::new(),
            websocket: None,
            message_batch: 1,
        }
    }
}

/// Per-component overrides of [`BvSettings`] (`[component.<id>.tool.bv]`);
/// `None` inherits the application setting.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComponentBvSettings {
    /// See [`BvSettings::instance_policy`].
    #[serde(default)]
    pub instance_policy: Option<InstancePolicy>,
    /// See [`BvSettings::instance_max_requests`].
    #[serde(default, deserialize_with = "raw::positive_u32")]
    pub instance_max_requests: Option<u32>,
    /// See [`BvSettings::instance_max_concurrent`].
    #[serde(default, deserialize_with = "raw::positive_u32")]
    pub instance_max_concurrent: Option<u32>,
    /// See [`BvSettings::request_timeout_ms`].
    #[serde(default, deserialize_with = "raw::positive_u64")]
    pub request_timeout_ms: Option<u64>,
    /// See [`BvSettings::stream_idle_timeout_ms`].
    #[serde(default, deserialize_with = "raw::positive_u64")]
    pub stream_idle_timeout_ms: Option<u64>,
    /// See [`BvSettings::memory_limit_mb`].
    #[serde(default, deserialize_with = "raw::positive_u64")]
    pub memory_limit_mb: Option<u64>,
    /// See [`BvSettings::max_concurrent_requests`].
    #[serde(default, deserialize_with = "raw::positive_u32")]
    pub max_concurrent_requests: Option<u32>,
    /// See [`BvSettings::log_level`].
    #[serde(default)]
    pub log_level: Option<LogLevel>,
    /// See [`BvSettings::max_request_body_bytes`].
    #[serde(default, deserialize_with = "raw::positive_u64")]
    pub max_request_body_bytes: Option<u64>,
    /// See [`BvSettings::max_request_headers`] (application only).
    #[serde(default, deserialize_with = "raw::positive_u32")]
    pub max_request_headers: Option<u32>,
    /// See [`BvSettings::max_request_header_bytes`] (application only).
    #[serde(default, deserialize_with = "raw::positive_u32")]
    pub max_request_header_bytes: Option<u32>,
    /// See [`BvSettings::cors`] (application only).
    #[serde(default)]
    pub cors: Option<CorsSettings>,
    /// See [`BvSettings::rate_limit`]; at the application level, the limit
    /// of every component that sets none (each has its own buckets).
    #[serde(default)]
    pub rate_limit: Option<RateLimitSettings>,
    /// See [`BvSettings::trusted_proxies`] (application only).
    #[serde(default)]
    pub trusted_proxies: Option<Vec<Template>>,
    /// See [`BvSettings::websocket`] (components only).
    #[serde(default)]
    pub websocket: Option<WebSocketSettings>,
    /// See [`BvSettings::message_batch`].
    #[serde(default, deserialize_with = "raw::positive_u32")]
    pub message_batch: Option<u32>,
}

impl ComponentBvSettings {
    /// The effective settings for the component: each override, else the
    /// application's value.
    pub fn resolve(&self, app: &BvSettings) -> BvSettings {
        BvSettings {
            instance_policy: self.instance_policy.unwrap_or(app.instance_policy),
            instance_max_requests: self
                .instance_max_requests
                .unwrap_or(app.instance_max_requests),
            instance_max_concurrent: self
                .instance_max_concurrent
                .unwrap_or(app.instance_max_concurrent),
            request_timeout_ms: self.request_timeout_ms.unwrap_or(app.request_timeout_ms),
            stream_idle_timeout_ms: self
                .stream_idle_timeout_ms
                .unwrap_or(app.stream_idle_timeout_ms),
            memory_limit_mb: self.memory_limit_mb.unwrap_or(app.memory_limit_mb),
            max_concurrent_requests: self
                .max_concurrent_requests
                .unwrap_or(app.max_concurrent_requests),
            log_level: self.log_level.unwrap_or(app.log_level),
            max_request_body_bytes: self.max_request_body_bytes.or(app.max_request_body_bytes),
            max_request_headers: self.max_request_headers.unwrap_or(app.max_request_headers),
            max_request_header_bytes: self
                .max_request_header_bytes
                .unwrap_or(app.max_request_header_bytes),
            cors: self.cors.clone().or_else(|| app.cors.clone()),
            rate_limit: self.rate_limit.clone().or_else(|| app.rate_limit.clone()),
            trusted_proxies: self
                .trusted_proxies
                .clone()
                .unwrap_or_else(|| app.trusted_proxies.clone()),
            websocket: self.websocket.clone(),
            message_batch: self.message_batch.unwrap_or(app.message_batch),
        }
    }
}
