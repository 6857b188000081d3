//! Telemetry of `bv`: OpenTelemetry traces, W3C trace-context propagation and
//! the span an instance is working under.
//!
//! Spans are ordinary `tracing` spans; when tracing is on (see
//! [`tracing_enabled`]) the `tracing-opentelemetry` layer turns them into
//! OpenTelemetry spans, and the helpers here read or set their W3C trace
//! context. When tracing is off every helper is a cheap no-op.
//!
//! [`init`] installs both halves at start-up: the log lines ([`LogFormat`],
//! JSON by default) and, when an OTLP endpoint is configured, the span
//! exporter ([`config`] checks the `OTEL_*` variables).

pub mod config;
mod export;
mod logs;
pub mod metrics_push;
pub mod sampling;

pub use logs::LogFormat;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use opentelemetry::trace::TracerProvider as _;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::TraceContextExt as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

static TRACING: AtomicBool = AtomicBool::new(false);

/// The sampler applied at the edge ([`decide_request`]).
static SAMPLING: OnceLock<sampling::Sampling> = OnceLock::new();

/// Whether a request that arrived with `traceparent` is traced, decided
/// before its spans are made (see [`sampling`]). Only meaningful while
/// [`tracing_enabled`].
pub fn decide_request(traceparent: Option<&str>) -> sampling::Decision {
    edge_sampling().decide(traceparent)
}

/// The sampler in force at the edge (the default until [`init`] set one).
fn edge_sampling() -> sampling::Sampling {
    SAMPLING.get().copied().unwrap_or_default()
}

/// Whether work that carries `traceparent` (a guest's outbound request, a
/// delivered event) belongs to a trace that was left out, so it makes no
/// spans either: the sampler follows callers (`parentbased_*`) and the
/// `traceparent`'s sampled flag is off.
pub fn left_out(traceparent: Option<&str>) -> bool {
    tracing_enabled()
        && edge_sampling().follows_callers()
        && traceparent.is_some_and(sampling::is_unsampled)
}

/// The `traceparent` a left-out request or delivery hands on, kept with its
/// log-only span ([`remember_left_out`]).
struct LeftOut(String);

impl LeftOut {
    /// `(trace id, span id)` of the kept `traceparent`, for log lines.
    fn ids(&self) -> Option<(String, String)> {
        let mut parts = self.0.split('-').skip(1);
        Some((parts.next()?.to_string(), parts.next()?.to_string()))
    }
}

/// Keeps `traceparent` (sampled flag off) with `span`, the log-only span of
/// a left-out request or delivery, so that an outbound call the guest makes
/// without a `traceparent` of its own still tells the callee the trace was
/// left out ([`left_out_traceparent`]), as Spin's host does.
pub fn remember_left_out(span: &tracing::Span, traceparent: String) {
    span.with_subscriber(|(id, dispatch)| {
        if let Some(registry) = dispatch.downcast_ref::<tracing_subscriber::Registry>() {
            if let Some(span) = tracing_subscriber::registry::LookupSpan::span(registry, id) {
                span.extensions_mut().insert(LeftOut(traceparent));
            }
        }
    });
}

/// The `traceparent` kept with a left-out request's `span`, if it is one.
pub fn left_out_traceparent(span: &tracing::Span) -> Option<String> {
    if records(span) {
        return None;
    }
    span.with_subscriber(|(id, dispatch)| {
        let registry = dispatch.downcast_ref::<tracing_subscriber::Registry>()?;
        let span = tracing_subscriber::registry::LookupSpan::span(registry, id)?;
        let extensions = span.extensions();
        extensions.get::<LeftOut>().map(|l| l.0.clone())
    })
    .flatten()
}

/// Whether spans are made under `parent`: tracing is on and `parent` is not
/// an unsampled request's log-only span. Capabilities ask this before
/// making a client span, so an unsampled request costs what it costs with
/// tracing off.
pub fn records(parent: &tracing::Span) -> bool {
    tracing_enabled()
        && parent
            .metadata()
            .is_none_or(|m| m.target() != sampling::UNSAMPLED_TARGET)
}

/// The tracer of spans recorded after the fact ([`record_finished_span`]).
static TRACER: OnceLock<opentelemetry_sdk::trace::SdkTracer> = OnceLock::new();

/// Whether spans are exported (an OTLP endpoint is configured).
pub fn tracing_enabled() -> bool {
    TRACING.load(Ordering::Relaxed)
}

/// Marks tracing as on; called by the initialisation once the exporter and
/// the `tracing-opentelemetry` layer are installed.
pub fn set_tracing_enabled(on: bool) {
    TRACING.store(on, Ordering::Relaxed);
}

struct One<'a>(Option<&'a str>);

impl Extractor for One<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        (key == "traceparent").then_some(self.0).flatten()
    }
    fn keys(&self) -> Vec<&str> {
        vec!["traceparent"]
    }
}

/// Makes the remote span named by the W3C `traceparent` the parent of
/// `span` (a malformed or missing value leaves `span` a root).
pub fn set_remote_parent(span: &tracing::Span, traceparent: Option<&str>) {
    if !tracing_enabled() || traceparent.is_none() {
        return;
    }
    let context = TraceContextPropagator::new().extract(&One(traceparent));
    if context.span().span_context().is_valid() {
        let _ = span.set_parent(context);
    }
}

/// The W3C `traceparent` of `span`, to send on an outbound call or carry in
/// an event; `None` when tracing is off or the span is disabled.
pub fn traceparent(span: &tracing::Span) -> Option<String> {
    if !tracing_enabled() {
        return None;
    }
    let context = span.context();
    let otel = context.span();
    let sc = otel.span_context();
    sc.is_valid().then(|| format_traceparent(sc))
}

/// `00-<trace id>-<span id>-<flags>`, written directly: the propagator's
/// `format!` cost about as much as building the context, on every request.
fn format_traceparent(sc: &opentelemetry::trace::SpanContext) -> String {
    let mut out = String::with_capacity(55);
    out.push_str("00-");
    push_hex(&mut out, &sc.trace_id().to_bytes());
    out.push('-');
    push_hex(&mut out, &sc.span_id().to_bytes());
    out.push('-');
    push_hex(&mut out, &[sc.trace_flags().to_u8()]);
    out
}

fn push_hex(out: &mut String, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(HEX[usize::from(b >> 4)] as char);
        out.push(HEX[usize::from(b & 15)] as char);
    }
}

/// `(trace_id, span_id)` of `sc` in lowercase hex, for log lines.
pub(crate) fn hex_ids(sc: &opentelemetry::trace::SpanContext) -> (String, String) {
    let (mut trace_id, mut span_id) = (String::with_capacity(32), String::with_capacity(16));
    push_hex(&mut trace_id, &sc.trace_id().to_bytes());
    push_hex(&mut span_id, &sc.span_id().to_bytes());
    (trace_id, span_id)
}

/// The trace id of `span` in lowercase hex when its trace is sampled (is
/// exported): for a metric's exemplar, which should lead to a trace that
/// exists.
pub fn sampled_trace_id(span: &tracing::Span) -> Option<String> {
    if !tracing_enabled() {
        return None;
    }
    let context = span.context();
    let otel = context.span();
    let sc = otel.span_context();
    (sc.is_valid() && sc.is_sampled()).then(|| hex_ids(sc).0)
}

/// Records a finished span `name` (kind internal) under `parent` that ran
/// from `start` to `end`: for work measured before the span it belongs to
/// was known (an instance is created before the request that needed it is
/// handed to it). A no-op when tracing is off.
pub fn record_finished_span(
    parent: &tracing::Span,
    name: String,
    start: SystemTime,
    end: SystemTime,
    attributes: Vec<opentelemetry::KeyValue>,
) {
    use opentelemetry::trace::{Span as _, Tracer as _};
    let (true, Some(tracer)) = (records(parent), TRACER.get()) else {
        return;
    };
    let context = parent.context();
    if !context.span().span_context().is_valid() {
        return;
    }
    let mut span = tracer
        .span_builder(name)
        .with_kind(opentelemetry::trace::SpanKind::Internal)
        .with_start_time(start)
        .with_attributes(attributes)
        .start_with_context(tracer, &context);
    span.end_with_timestamp(end);
}

/// The span an instance is working under: the request or delivery it is
/// handling. Shared between the trigger (which sets it when a request
/// starts) and the capabilities (which parent their client spans and the
/// component's log lines on it).
///
/// A reused instance may serve several requests at once; it then holds the
/// most recently started one, so host-side spans of such an instance can
/// land under a neighbouring request. Outbound HTTP prefers the
/// `traceparent` the guest forwards, which is exact.
#[derive(Clone)]
pub struct CurrentSpan(Arc<Mutex<tracing::Span>>);

impl Default for CurrentSpan {
    fn default() -> Self {
        Self(Arc::new(Mutex::new(tracing::Span::none())))
    }
}

impl CurrentSpan {
    /// Holds `span` from now on.
    pub fn set(&self, span: tracing::Span) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = span;
    }

    /// The span held now (`Span::none()` before the first request).
    pub fn get(&self) -> tracing::Span {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl std::fmt::Debug for CurrentSpan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CurrentSpan")
    }
}

/// The log filter when `RUST_LOG` is unset or invalid. Components' output
/// (target `guest`) passes at every level: each component's `log_level`
/// filters it.
pub const DEFAULT_LOG_FILTER: &str =
    "info,guest=trace,wasmtime=warn,cranelift=warn,tokio_postgres=warn";

/// How long exiting waits for queued spans to reach the collector.
const FLUSH_LIMIT: Duration = Duration::from_secs(5);

/// What [`init`] installed; [`Telemetry::shutdown`] (or dropping it)
/// flushes the spans still queued.
pub struct Telemetry {
    exporter: Option<(
        opentelemetry_sdk::trace::SdkTracerProvider,
        tokio::runtime::Runtime,
    )>,
}

impl Telemetry {
    /// Exports what is queued and stops the exporter (at most a few seconds:
    /// an unreachable collector must not hold up the exit).
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some((provider, runtime)) = self.exporter.take() {
            set_tracing_enabled(false);
            export::shutdown(provider, runtime, FLUSH_LIMIT);
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Installs the global subscriber: log lines in `format` on stderr, filtered
/// by `RUST_LOG` (default [`DEFAULT_LOG_FILTER`]), and, if `traces` is true
/// and the environment configures an OTLP endpoint, the OpenTelemetry layer
/// that exports `bv`'s spans. Without an endpoint no OpenTelemetry layer is
/// installed at all, so spans cost only what logging needs of them.
///
/// Fails on an `OTEL_*` value that would otherwise be ignored or guessed at
/// (see [`config::trace_config`]).
pub fn init(format: LogFormat, traces: bool) -> anyhow::Result<Telemetry> {
    let trace_config = if traces {
        config::trace_config(|name| std::env::var(name).ok())?
    } else {
        None
    };
    let edge = sampling::Sampling::from_env(
        std::env::var("OTEL_TRACES_SAMPLER").ok().as_deref(),
        std::env::var("OTEL_TRACES_SAMPLER_ARG").ok().as_deref(),
    );
    let exporter = trace_config
        .as_ref()
        .map(|config| export::provider(config, edge.sdk_sampler()))
        .transpose()?;
    if exporter.is_some() {
        let _ = SAMPLING.set(edge);
    }

    let log_filter =
        || EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG_FILTER));
    let log_layer = match format {
        LogFormat::Json => logs::JsonLayer.with_filter(log_filter()).boxed(),
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_filter(log_filter())
            .boxed(),
    };
    let otel_layer = exporter.as_ref().map(|(provider, _)| {
        opentelemetry::global::set_tracer_provider(provider.clone());
        let _ = TRACER.set(provider.tracer("bv"));
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("bv"))
            .with_location(false)
            .with_threads(false)
            .with_target(false)
            .with_level(false)
            .with_tracked_inactivity(false)
            // Parents come from tracing's own span tree; entering a span
            // need not attach an OpenTelemetry context (cheaper, and a
            // span's name can still be set after it is first entered).
            .with_context_activation(false)
            // Only bv's own spans and events: never the exporter's or the
            // HTTP client's (which would trace the export of traces).
            // Nor an unsampled request's log-only span (the spans a request
            // makes ask `records` first, and its log lines have no span here).
            .with_filter(
                Targets::new()
                    .with_target("bv", LevelFilter::INFO)
                    .with_target(sampling::UNSAMPLED_TARGET, LevelFilter::OFF),
            )
    });
    tracing_subscriber::registry()
        .with(otel_layer)
        .with(log_layer)
        .try_init()
        .map_err(|e| anyhow::anyhow!("installing the log subscriber: {e}"))?;
    set_tracing_enabled(exporter.is_some());
    Ok(Telemetry { exporter })
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::propagation::Injector;
    use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};

    struct Capture(Option<String>);

    impl Injector for Capture {
        fn set(&mut self, key: &str, value: String) {
            if key == "traceparent" {
                self.0 = Some(value);
            }
        }
    }

    #[test]
    fn traceparent_is_written_as_the_propagator_writes_it() {
        for flags in [TraceFlags::SAMPLED, TraceFlags::default()] {
            let sc = SpanContext::new(
                TraceId::from_hex("0af7651916cd43dd8448eb211c80319c").unwrap(),
                SpanId::from_hex("00f067aa0ba902b7").unwrap(),
                flags,
                true,
                TraceState::default(),
            );
            let mut by_propagator = Capture(None);
            TraceContextPropagator::new().inject_context(
                &opentelemetry::Context::new().with_remote_span_context(sc.clone()),
                &mut by_propagator,
            );
            assert_eq!(Some(format_traceparent(&sc)), by_propagator.0);
        }
    }
}
