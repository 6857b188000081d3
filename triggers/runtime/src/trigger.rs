//! What every message trigger (Redis, MQTT, cron, Postgres) shares: the one
//! delivery path ([`deliver`]: a fresh store, instantiation under a span, the
//! export's call, all within the component's request timeout), how a
//! delivery ended ([`Failure`], [`Outcome`]), the counters that report it on
//! the admin `/metrics` (the Postgres trigger keeps counters of its own, with
//! its dead letters and lag), and the spans that trace it.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bv_manifest::InstancePolicy;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use tracing::Instrument as _;
use wasmtime::Store;

use crate::{AppRuntime, ComponentRuntime, InstanceState};

/// Why a message was not handled.
#[derive(Debug, Clone)]
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

    /// A handler's own error (the export's `err` value).
    pub fn handler(error: impl std::fmt::Debug) -> Self {
        Failure::Handler(format!("{error:?}"))
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
/// delivery's `parent`; `Span::none()` when tracing is off or the delivery
/// is not traced.
pub fn instantiate_span(parent: &tracing::Span, component: &str) -> tracing::Span {
    if !bv_telemetry::records(parent) {
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

/// Calls one export of `component` in a fresh instance, under `span` (the
/// delivery's): makes the store, which works under `span`; `instantiate`s it
/// under an [`instantiate_span`]; hands the instance to `call`. All of it
/// runs within the component's request timeout. Whatever the export
/// returned comes back as it is; a store or instantiation error or a trap
/// is [`Failure::Trap`], running past the timeout [`Failure::Timeout`].
pub async fn deliver<I, R>(
    runtime: &AppRuntime,
    component: &ComponentRuntime,
    span: &tracing::Span,
    instantiate: impl AsyncFnOnce(&mut Store<InstanceState>) -> wasmtime::Result<I>,
    call: impl AsyncFnOnce(&mut Store<InstanceState>, I) -> wasmtime::Result<R>,
) -> Result<R, Failure> {
    let work = async {
        let (mut store, instance) = fresh_instance(runtime, component, span, instantiate).await?;
        call(&mut store, instance).await.map_err(Failure::trap)
    };
    within(
        Duration::from_millis(component.settings.request_timeout_ms),
        work,
    )
    .await
}

/// Instances of one component kept between deliveries, for a trigger of
/// bv's own whose handlers may see several messages per instance (the
/// Postgres trigger under the `reuse` instance policy). Spin's triggers
/// (Redis, MQTT, cron) keep their fresh instance per message.
///
/// An instance goes back only after a delivery its handler finished well
/// (see [`deliver_warm`]): a trap, a timeout or a handler's error drops it,
/// so the next message starts from a fresh one. It serves at most the
/// component's `instance_max_requests` messages, and one idle for longer
/// than [`WARM_IDLE_TIMEOUT`] is dropped (by the next [`take`](Self::take)
/// or [`reap`](Self::reap)), so an instance cannot hold what it borrowed
/// (a database connection kept in a static, say) for long.
pub struct WarmInstances<I> {
    max_uses: u32,
    max_idle: usize,
    idle: Mutex<Vec<Warm<I>>>,
}

/// How long an instance may wait unused before it is dropped.
pub const WARM_IDLE_TIMEOUT: Duration = Duration::from_secs(1);

struct Warm<I> {
    store: Store<InstanceState>,
    instance: I,
    uses: u32,
    parked: Instant,
}

impl<I> WarmInstances<I> {
    /// A pool for `component` keeping at most `max_idle` instances between
    /// deliveries (none under the `strict` policy).
    pub fn new(component: &ComponentRuntime, max_idle: usize) -> Self {
        let s = &component.settings;
        let (max_uses, max_idle) = match s.instance_policy {
            InstancePolicy::Strict => (1, 0),
            InstancePolicy::Reuse => (s.instance_max_requests.max(1), max_idle),
        };
        Self {
            max_uses,
            max_idle,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// A kept instance that may serve one more message, if there is one.
    fn take(&self) -> Option<Warm<I>> {
        self.fresh_idle().pop()
    }

    fn put(&self, mut warm: Warm<I>) {
        warm.uses += 1;
        if warm.uses >= self.max_uses {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < self.max_idle {
            warm.parked = Instant::now();
            idle.push(warm);
        }
    }

    /// Drops the instances idle for longer than [`WARM_IDLE_TIMEOUT`];
    /// a trigger calls it while it has nothing to deliver.
    pub fn reap(&self) {
        drop(self.fresh_idle());
    }

    /// The waiting instances, those idle for too long dropped.
    fn fresh_idle(&self) -> std::sync::MutexGuard<'_, Vec<Warm<I>>> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        idle.retain(|w| w.parked.elapsed() < WARM_IDLE_TIMEOUT);
        idle
    }
}

/// As [`deliver`], but in an instance from `warm` when one is waiting
/// (instantiating only when none is); the instance goes back to `warm`
/// when `call` returned and `keep` says its result leaves it fit for the
/// next message. All of it runs within the component's request timeout;
/// an instance that runs past it is dropped with the delivery.
pub async fn deliver_warm<I, R>(
    runtime: &AppRuntime,
    component: &ComponentRuntime,
    warm: &WarmInstances<I>,
    span: &tracing::Span,
    instantiate: impl AsyncFnOnce(&mut Store<InstanceState>) -> wasmtime::Result<I>,
    call: impl AsyncFnOnce(&mut Store<InstanceState>, &I) -> wasmtime::Result<R>,
    keep: impl FnOnce(&R) -> bool,
) -> Result<R, Failure> {
    let work = async {
        let mut kept = match warm.take() {
            Some(kept) => {
                kept.store.data().span.set(span.clone());
                kept
            }
            None => {
                let (store, instance) =
                    fresh_instance(runtime, component, span, instantiate).await?;
                Warm {
                    store,
                    instance,
                    uses: 0,
                    parked: Instant::now(),
                }
            }
        };
        let result = call(&mut kept.store, &kept.instance)
            .await
            .map_err(Failure::trap)?;
        if keep(&result) {
            warm.put(kept);
        }
        Ok(result)
    };
    within(
        Duration::from_millis(component.settings.request_timeout_ms),
        work,
    )
    .await
}

/// A new store for `component` working under `span`, and the instance
/// `instantiate` makes in it under an [`instantiate_span`].
async fn fresh_instance<I>(
    runtime: &AppRuntime,
    component: &ComponentRuntime,
    span: &tracing::Span,
    instantiate: impl AsyncFnOnce(&mut Store<InstanceState>) -> wasmtime::Result<I>,
) -> Result<(Store<InstanceState>, I), Failure> {
    let mut store = runtime.new_store(component).map_err(Failure::trap)?;
    store.data().span.set(span.clone());
    let instance = runtime
        .instantiate_alone(instantiate(&mut store))
        .instrument(instantiate_span(span, &component.id))
        .await
        .map_err(Failure::trap)?;
    Ok((store, instance))
}

/// `work`'s result, or [`Failure::Timeout`] when it runs past `timeout`.
pub async fn within<R>(
    timeout: Duration,
    work: impl Future<Output = Result<R, Failure>>,
) -> Result<R, Failure> {
    tokio::time::timeout(timeout, work)
        .await
        .unwrap_or(Err(Failure::Timeout))
}

/// How one message's delivery ended, once recorded.
#[derive(Debug)]
pub struct Delivered {
    /// Handled, or why not.
    pub result: Result<(), Failure>,
    /// Failed messages so far (all components), this one included.
    pub failures: u64,
    /// How long the delivery took.
    pub elapsed: Duration,
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

    /// Runs one message's `delivery` (see [`deliver`]) of `component` from
    /// `source` under `span`, marks the span with a failure and counts the
    /// outcome.
    pub async fn deliver(
        &self,
        component: &str,
        source: &str,
        span: &tracing::Span,
        delivery: impl Future<Output = Result<(), Failure>>,
    ) -> Delivered {
        let started = Instant::now();
        let result = delivery.instrument(span.clone()).await;
        self.recorded(component, source, span, result, started)
    }

    /// Records the `result` of one message's delivery that began at
    /// `started` (for deliveries made otherwise than by [`deliver`](Self::deliver),
    /// several messages at once, say): marks its span with a failure and
    /// counts the outcome.
    pub fn recorded(
        &self,
        component: &str,
        source: &str,
        span: &tracing::Span,
        result: Result<(), Failure>,
        started: Instant,
    ) -> Delivered {
        if let Err(failure) = &result {
            failure.record_on(span);
        }
        let failures = self.record(component, source, Outcome::of(&result));
        Delivered {
            result,
            failures,
            elapsed: started.elapsed(),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics() -> MessageMetrics {
        MessageMetrics::register(&mut Registry::default(), "test", "channel")
    }

    #[tokio::test]
    async fn within_passes_the_result_on() {
        let ok = within(Duration::from_secs(1), async { Ok::<_, Failure>(7) }).await;
        assert_eq!(ok.unwrap(), 7);
        let err = within(Duration::from_secs(1), async {
            Err::<(), _>(Failure::trap(anyhow::anyhow!("boom")))
        })
        .await;
        assert!(
            matches!(err, Err(Failure::Trap(ref e)) if e == "boom"),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn within_times_out() {
        let slow = within(Duration::from_millis(20), async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok::<_, Failure>(())
        })
        .await;
        assert!(matches!(slow, Err(Failure::Timeout)), "{slow:?}");
    }

    #[test]
    fn failures_name_their_outcome() {
        assert_eq!(
            Failure::handler("bad").to_string(),
            "handler returned an error: \"bad\""
        );
        assert_eq!(Failure::handler("bad").outcome(), Outcome::Error);
        assert_eq!(
            Failure::trap("unreachable").to_string(),
            "trap: unreachable"
        );
        assert_eq!(Failure::trap("x").outcome(), Outcome::Trap);
        assert_eq!(Failure::Timeout.to_string(), "timed out");
        assert_eq!(Outcome::of(&Err(Failure::Timeout)).as_str(), "timeout");
        assert_eq!(Outcome::of(&Ok(())).as_str(), "ok");
    }

    #[tokio::test]
    async fn a_delivery_is_counted_by_outcome() {
        let metrics = metrics();
        let span = tracing::Span::none();
        let ok = metrics
            .deliver("c", "orders", &span, async { Ok(()) })
            .await;
        assert!(ok.result.is_ok());
        assert_eq!(ok.failures, 0);
        let failed = metrics
            .deliver("c", "orders", &span, async { Err(Failure::handler("no")) })
            .await;
        assert!(matches!(failed.result, Err(Failure::Handler(_))));
        assert_eq!(failed.failures, 1);
        let timed_out = metrics
            .deliver("d", "orders", &span, async { Err(Failure::Timeout) })
            .await;
        assert_eq!(timed_out.failures, 2);
        assert_eq!(metrics.count("c", "orders", Outcome::Ok), 1);
        assert_eq!(metrics.count("c", "orders", Outcome::Error), 1);
        assert_eq!(metrics.count("d", "orders", Outcome::Timeout), 1);
        assert_eq!(metrics.count("c", "orders", Outcome::Trap), 0);
        assert_eq!(metrics.failures(), 2);
    }
}
