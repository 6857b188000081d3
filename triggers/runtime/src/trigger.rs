//! What every message trigger (Redis, MQTT, …) shares: how a delivery ended,
//! the counters that report it on the admin `/metrics`, and the spans that
//! trace it.

use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// Why a message was not handled.
#[derive(Debug)]
pub enum Failure {
    /// The handler returned an error.
    Handler(String),
    /// The instance trapped (or could not be instantiated).
    Trap(String),
    /// The handler ran past the component's request timeout.
    Timeout,
}

impl Failure {
    /// A trap, from any error wasmtime or the runtime returned.
    pub fn trap(error: impl std::fmt::Display) -> Self {
        Failure::Trap(format!("{error:#}"))
    }

    /// The outcome this failure is counted as.
    pub fn outcome(&self) -> Outcome {
        match self {
            Failure::Handler(_) => Outcome::Error,
            Failure::Trap(_) => Outcome::Trap,
            Failure::Timeout => Outcome::Timeout,
        }
    }
}

impl Failure {
    /// Marks `span` (a delivery's) as failed by this failure.
    pub fn record_on(&self, span: &tracing::Span) {
        record_failure(span, self.outcome().as_str(), &self.to_string());
    }
}

/// Marks a delivery's `span` as failed: status `error`, `description` as its
/// message and `outcome` (the metric's `outcome` label: `error`, `trap`,
/// `timeout`, …) as `error.type`, so traces and metrics name a failure alike.
pub fn record_failure(span: &tracing::Span, outcome: &str, description: &str) {
    span.record("otel.status_code", "error");
    span.record("otel.status_description", description);
    span.record("error.type", outcome);
}

/// The span of instantiating `component` for a delivery, a child of the
/// delivery's `parent`; `Span::none()` when tracing is off.
pub fn instantiate_span(parent: &tracing::Span, component: &str) -> tracing::Span {
    if !bv_telemetry::tracing_enabled() {
        return tracing::Span::none();
    }
    tracing::info_span!(
        parent: parent,
        "instantiate",
        otel.name = %format!("instantiate {component}"),
        bv.component = component,
    )
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Handler(e) => write!(f, "handler returned an error: {e}"),
            Failure::Trap(e) => write!(f, "trap: {e}"),
            Failure::Timeout => f.write_str("timed out"),
        }
    }
}

/// How the handling of one message ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The handler returned `ok`.
    Ok,
    /// The handler returned an error.
    Error,
    /// The instance trapped.
    Trap,
    /// The handler ran past the request timeout.
    Timeout,
}

impl Outcome {
    /// The outcome of a handled message.
    pub fn of(result: &Result<(), Failure>) -> Self {
        match result {
            Ok(()) => Outcome::Ok,
            Err(failure) => failure.outcome(),
        }
    }

    /// The label value (`ok`, `error`, `trap`, `timeout`).
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Error => "error",
            Outcome::Trap => "trap",
            Outcome::Timeout => "timeout",
        }
    }
}

type Labels = Vec<(&'static str, String)>;

/// Counters of one message trigger: messages by component, source (channel,
/// topic, …) and outcome; lost connections; failed reconnects.
pub struct MessageMetrics {
    source_label: &'static str,
    messages: Family<Labels, Counter>,
    disconnects: Counter,
    reconnect_failures: Counter,
    failures: AtomicU64,
}

impl MessageMetrics {
    /// Registers the counters of trigger `kind` (e.g. `redis`) in `registry`;
    /// `source_label` names what a message arrived on (e.g. `channel`).
    pub fn register(registry: &mut Registry, kind: &str, source_label: &'static str) -> Self {
        let metrics = Self {
            source_label,
            messages: Family::default(),
            disconnects: Counter::default(),
            reconnect_failures: Counter::default(),
            failures: AtomicU64::new(0),
        };
        registry.register(
            format!("{kind}_messages"),
            format!("{kind} messages handled, by component, {source_label} and outcome (ok, error, trap, timeout)"),
            metrics.messages.clone(),
        );
        registry.register(
            format!("{kind}_disconnects"),
            format!("{kind} subscriber connections that were lost"),
            metrics.disconnects.clone(),
        );
        registry.register(
            format!("{kind}_reconnect_failures"),
            format!("failed attempts to reconnect or resubscribe to {kind}"),
            metrics.reconnect_failures.clone(),
        );
        metrics
    }

    fn labels(&self, component: &str, source: &str, outcome: Outcome) -> Labels {
        vec![
            ("component", component.to_string()),
            (self.source_label, source.to_string()),
            ("outcome", outcome.as_str().to_string()),
        ]
    }

    /// Counts one handled message; returns the failures so far (all
    /// components) including this one.
    pub fn record(&self, component: &str, source: &str, outcome: Outcome) -> u64 {
        self.messages
            .get_or_create(&self.labels(component, source, outcome))
            .inc();
        if outcome == Outcome::Ok {
            self.failures.load(Ordering::Relaxed)
        } else {
            self.failures.fetch_add(1, Ordering::Relaxed) + 1
        }
    }

    /// Counts a lost connection.
    pub fn disconnected(&self) {
        self.disconnects.inc();
    }

    /// Counts a failed reconnect or resubscribe.
    pub fn reconnect_failed(&self) {
        self.reconnect_failures.inc();
    }

    /// Messages of `component` from `source` that ended with `outcome`.
    pub fn count(&self, component: &str, source: &str, outcome: Outcome) -> u64 {
        self.messages
            .get_or_create(&self.labels(component, source, outcome))
            .get()
    }

    /// Failed messages of every component.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }
}
