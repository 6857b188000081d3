//! The cron trigger: the spin-trigger-cron plugin's `[[trigger.cron]]`.
//!
//! ```toml
//! [[trigger.cron]]
//! component = "nightly-report"
//! cron_expression = "0 0 2 * * *"   # sec min hour day-of-month month day-of-week [year]
//! ```
//!
//! Expressions have a seconds field (6 fields, or 7 with a year), like the
//! plugin's; times are UTC. At each tick the component's
//! `fermyon:spin-cron@2.0.0` `handle-cron-event` export is called once, in a
//! fresh instance, within the component's request timeout, with the tick's
//! time (seconds since the Unix epoch) as `metadata.timestamp`.
//!
//! A tick that comes while the previous firing of the same entry is still
//! running is skipped and logged rather than run alongside it: a scheduled
//! job usually assumes it is alone (e.g. "process everything since the last
//! run"). A handler that returns an error, traps or times out is logged and
//! counted in [`Metrics`] (outcome by component and `schedule`, the cron
//! expression); the next tick fires as usual.

mod config;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use bv_runtime::{AppRuntime, ComponentRuntime};
use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

pub use bv_runtime::trigger::{Failure, MessageMetrics as Metrics, Outcome};
pub use config::{parse_expression, CronEntry, Job};

mod bindings {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "bitvelocity:host/cron-trigger-host",
        exports: { default: async },
    });
}

use bindings::fermyon::spin_cron::cron_types::Metadata;
use bindings::CronTriggerHostPre;

/// One `[[trigger.cron]]` entry, ready to run.
struct Scheduled {
    index: usize,
    expression: String,
    schedule: cron::Schedule,
    component: Arc<ComponentRuntime>,
    pre: CronTriggerHostPre<bv_runtime::InstanceState>,
}

/// The cron trigger of one application.
pub struct CronTrigger {
    runtime: Arc<AppRuntime>,
    jobs: Vec<Arc<Scheduled>>,
    metrics: Arc<Metrics>,
}

impl CronTrigger {
    /// Reads `[[trigger.cron]]` from the runtime's manifest, parses every
    /// cron expression and checks that every component exports
    /// `handle-cron-event`; any problem stops start-up, naming the field.
    pub fn new(runtime: Arc<AppRuntime>) -> anyhow::Result<Self> {
        let mut jobs = Vec::new();
        for (index, job) in config::from_app(runtime.app())?.into_iter().enumerate() {
            let id = &job.entry.component;
            let component = runtime
                .component(id)
                .with_context(|| format!("trigger.cron[{index}].component: no component `{id}`"))?
                .clone();
            let pre = CronTriggerHostPre::new(component.pre.clone()).map_err(|e| {
                anyhow::anyhow!(
                    "trigger.cron[{index}]: component `{id}` does not export fermyon:spin-cron@2.0.0 handle-cron-event: {e}"
                )
            })?;
            jobs.push(Arc::new(Scheduled {
                index,
                expression: job.entry.cron_expression.clone(),
                schedule: job.schedule,
                component,
                pre,
            }));
        }
        let metrics = runtime.register_metrics(|r| Metrics::register(r, "cron", "schedule"));
        Ok(Self {
            runtime,
            jobs,
            metrics: Arc::new(metrics),
        })
    }

    /// The trigger's counters (firings by component, schedule and outcome).
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// `(cron expression, component)` pairs, for the start-up banner.
    pub fn schedules(&self) -> Vec<(String, String)> {
        self.jobs
            .iter()
            .map(|j| (j.expression.clone(), j.component.id.to_string()))
            .collect()
    }

    /// Fires every entry on its schedule until `stop` is cancelled, then
    /// waits for the firings in progress (each bounded by its timeout).
    pub async fn run(self, stop: CancellationToken) -> anyhow::Result<()> {
        let mut tasks = tokio::task::JoinSet::new();
        for job in self.jobs {
            tasks.spawn(schedule_loop(
                self.runtime.clone(),
                job,
                self.metrics.clone(),
                stop.clone(),
            ));
        }
        while tasks.join_next().await.is_some() {}
        Ok(())
    }
}

/// Sleeps until each tick of `job` and starts a firing, unless the previous
/// one is still running.
async fn schedule_loop(
    runtime: Arc<AppRuntime>,
    job: Arc<Scheduled>,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    let component = job.component.id.clone();
    let mut last: Option<DateTime<Utc>> = None;
    let mut running: Option<tokio::task::JoinHandle<()>> = None;
    loop {
        // Never before (or at) the last tick: the wall clock may read a
        // little behind the timer that woke us.
        let from = match last {
            Some(last) => last.max(Utc::now()),
            None => Utc::now(),
        };
        let Some(tick) = job.schedule.after(&from).next() else {
            tracing::info!(
                component = %component,
                schedule = %job.expression,
                "cron trigger: trigger.cron[{}] has no more ticks",
                job.index
            );
            break;
        };
        let wait = (tick - Utc::now()).to_std().unwrap_or(Duration::ZERO);
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(wait) => {}
        }
        last = Some(tick);
        if running.as_ref().is_some_and(|r| !r.is_finished()) {
            tracing::warn!(
                component = %component,
                schedule = %job.expression,
                tick = %tick.to_rfc3339(),
                "cron trigger: skipped a tick: the previous firing is still running"
            );
            continue;
        }
        let (runtime, job, metrics) = (runtime.clone(), job.clone(), metrics.clone());
        running = Some(tokio::spawn(async move {
            fire(&runtime, &job, &metrics, tick).await;
        }));
    }
    if let Some(running) = running {
        let _ = running.await;
    }
}

/// One firing: calls the handler and logs and counts how it ended.
async fn fire(runtime: &AppRuntime, job: &Scheduled, metrics: &Metrics, tick: DateTime<Utc>) {
    let component = &job.component.id;
    let span = tick_span(component, &job.expression, tick);
    let timestamp = tick.timestamp().max(0) as u64;
    let delivery = bv_runtime::trigger::deliver(
        runtime,
        &job.component,
        &span,
        async |store| job.pre.instantiate_async(store).await,
        async |store, instance| {
            instance
                .call_handle_cron_event(store, Metadata { timestamp })
                .await
        },
    );
    let delivered = metrics
        .deliver(component, &job.expression, &span, async {
            delivery.await.and_then(|r| r.map_err(Failure::handler))
        })
        .await;
    match delivered.result {
        Ok(()) => tracing::debug!(
            component = %component,
            schedule = %job.expression,
            elapsed_ms = delivered.elapsed.as_millis() as u64,
            "cron handler ran"
        ),
        // In the firing's span, so the line has its trace id.
        Err(failure) => span.in_scope(|| {
            tracing::error!(
                component = %component,
                schedule = %job.expression,
                "cron handler failed: {failure} (failures so far: {})",
                delivered.failures
            )
        }),
    }
}

/// The span of one firing (`cron {expression}`, a root: a tick starts a
/// trace of its own); `Span::none()` when tracing is off.
fn tick_span(component: &str, expression: &str, tick: DateTime<Utc>) -> tracing::Span {
    if !bv_telemetry::tracing_enabled() {
        return tracing::Span::none();
    }
    tracing::info_span!(
        parent: None,
        "cron.tick",
        otel.name = %format!("cron {expression}"),
        otel.kind = "internal",
        otel.status_code = tracing::field::Empty,
        otel.status_description = tracing::field::Empty,
        bv.cron.expression = expression,
        bv.cron.tick = %tick.to_rfc3339(),
        bv.component = component,
        error.type = tracing::field::Empty,
    )
}

/// The `[[trigger.cron]]` trigger type, for `bv`'s list of kinds.
pub const KIND: bv_runtime::TriggerKind = bv_runtime::TriggerKind {
    name: "cron",
    build: |runtime| Ok(Box::new(CronTrigger::new(runtime)?)),
};

#[async_trait::async_trait]
impl bv_runtime::Trigger for CronTrigger {
    fn kind(&self) -> &'static str {
        KIND.name
    }

    fn listing(&self) -> Vec<bv_runtime::Listed> {
        use bv_runtime::Listed;
        self.schedules()
            .into_iter()
            .map(|(schedule, component)| Listed::new(component, format!("cron {schedule}")))
            .collect()
    }

    async fn run(self: Box<Self>, stop: CancellationToken) -> anyhow::Result<bv_runtime::Drained> {
        CronTrigger::run(*self, stop).await?;
        Ok(bv_runtime::Drained::Complete)
    }
}
