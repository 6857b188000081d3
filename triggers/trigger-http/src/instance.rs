//! How instances are made and reused: the [`HandlerState`] wasmtime-wasi-http's
//! `ProxyHandler` calls whenever it needs a new worker for a component.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use bv_manifest::InstancePolicy;
use bv_runtime::{AppRuntime, ComponentRuntime, InstanceState};
use wasmtime::component::GuestTaskId;
use wasmtime::{Store, StoreContextMut};
use wasmtime_wasi_http::handler::{
    ExpirationError, HandlerState, Instance, ProxyPre, ShouldAccept, WorkerExpiration, WorkerState,
    WorkerStatus,
};
use wasmtime_wasi_http::WasiHttpView;

use crate::body::{Activity, ActivityLink};
use crate::metrics::Metrics;

/// How many requests an instance takes, in total and at once.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ReusePolicy {
    pub max_requests: usize,
    pub max_concurrent: usize,
    /// How long an idle instance is kept for the next request.
    pub idle_timeout: Duration,
}

impl ReusePolicy {
    pub(crate) fn for_component(component: &ComponentRuntime) -> Self {
        let s = &component.settings;
        match s.instance_policy {
            InstancePolicy::Strict => Self {
                max_requests: 1,
                max_concurrent: 1,
                idle_timeout: Duration::ZERO,
            },
            InstancePolicy::Reuse => Self {
                max_requests: s.instance_max_requests as usize,
                max_concurrent: s.instance_max_concurrent as usize,
                idle_timeout: Duration::from_secs(1),
            },
        }
    }
}

pub(crate) struct ComponentInstances {
    pub runtime: Arc<AppRuntime>,
    pub component: Arc<ComponentRuntime>,
    pub pre: ProxyPre<InstanceState>,
    pub policy: ReusePolicy,
    pub timeout: Duration,
    /// How long a response body may send nothing (see `body::Streamed`).
    pub stream_idle_timeout: Duration,
    pub metrics: Arc<Metrics>,
}

impl HandlerState for ComponentInstances {
    type StoreData = InstanceState;
    type WorkerExpiration = Expiration;
    type WorkerState = Worker;

    async fn instantiate(&self) -> wasmtime::Result<Instance<InstanceState, Expiration, Worker>> {
        let start = Instant::now();
        let started_at = SystemTime::now();
        let mut store = self
            .runtime
            .new_store(&self.component)
            .map_err(wasmtime::Error::from_anyhow)?;
        let proxy = self
            .runtime
            .instantiate_alone(self.pre.instantiate_async(&mut store))
            .await?;
        self.metrics
            .instantiation
            .get_or_create(&Metrics::component(&self.component.id))
            .observe(start.elapsed().as_secs_f64());
        // The request this instance was made for is not known here; its
        // span gets the instantiation when it starts (`on_request_start`).
        let instantiated = bv_telemetry::tracing_enabled().then(|| (started_at, SystemTime::now()));
        let expired = Arc::new(AtomicBool::new(false));
        let request_expired = Arc::new(AtomicBool::new(false));
        let activity = Arc::new(Activity::new());
        Ok(Instance {
            store,
            proxy,
            view: WasiHttpView::http,
            expiration: Expiration {
                idle_timeout: self.policy.idle_timeout,
                request_timeout: self.timeout,
                stream_idle_timeout: self.stream_idle_timeout,
                activity: activity.clone(),
                sleep: Box::pin(tokio::time::sleep(Duration::from_secs(86400 * 365))),
                expired: expired.clone(),
                request_expired: request_expired.clone(),
            },
            state: Worker {
                expired,
                request_expired,
                activity,
                policy: self.policy,
                timeout: self.timeout,
                component: self.component.id.to_string(),
                metrics: self.metrics.clone(),
                instantiated: Mutex::new(instantiated),
            },
        })
    }
}

/// How long past the request timeout a busy instance is kept before it is
/// dropped.
const INSTANCE_EXPIRY_GRACE: Duration = Duration::from_millis(200);

/// Drops an instance that has been idle, or busy past the request timeout
/// (a guest that never answers cannot hold its slot forever) without a
/// response body of its still sending (a stream keeps its instance for as
/// long as it sends something every `stream_idle_timeout`).
pub(crate) struct Expiration {
    idle_timeout: Duration,
    request_timeout: Duration,
    stream_idle_timeout: Duration,
    activity: Arc<Activity>,
    sleep: Pin<Box<tokio::time::Sleep>>,
    /// Set when a busy instance is expired, so its drop is not taken for a trap.
    expired: Arc<AtomicBool>,
    /// Set when one of its requests ran past the request timeout: from then
    /// on it takes no request, and it goes as soon as the others are done.
    request_expired: Arc<AtomicBool>,
}

impl WorkerExpiration for Expiration {
    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        status: WorkerStatus,
        start: Instant,
    ) -> Poll<()> {
        let deadline = match status {
            WorkerStatus::Idle => start.checked_add(self.idle_timeout),
            // An instance winding down after a timeout goes now, not after
            // its guest's abandoned work: wasmtime-wasi-http's request
            // queue may hand the next request's wake-up to this instance,
            // which no longer takes requests, and the request would wait
            // for as long as the instance lives.
            WorkerStatus::PostReturn if self.request_expired.load(Ordering::SeqCst) => Some(start),
            // The per-request expiration (see `on_request_start`) answers the
            // request first; the instance goes a little later, unless one
            // of its response bodies is still sending.
            WorkerStatus::Requests | WorkerStatus::PostReturn => start
                .checked_add(self.request_timeout)
                .max(
                    self.activity
                        .streaming_since()
                        .and_then(|last| last.checked_add(self.stream_idle_timeout)),
                )
                .and_then(|d| d.checked_add(INSTANCE_EXPIRY_GRACE)),
        };
        let Some(deadline) = deadline else {
            return Poll::Pending;
        };
        let deadline = tokio::time::Instant::from_std(deadline);
        if self.sleep.deadline() != deadline {
            self.sleep.as_mut().reset(deadline);
        }
        let ready = self.sleep.as_mut().poll(cx);
        if ready.is_ready() && status != WorkerStatus::Idle {
            self.expired.store(true, Ordering::SeqCst);
        }
        ready
    }
}

pub(crate) struct Worker {
    expired: Arc<AtomicBool>,
    /// Shared with its [`Expiration`].
    request_expired: Arc<AtomicBool>,
    /// When this instance's response bodies last sent something.
    activity: Arc<Activity>,
    policy: ReusePolicy,
    timeout: Duration,
    component: String,
    metrics: Arc<Metrics>,
    /// When this instance was made, until its first request records it.
    instantiated: Mutex<Option<(SystemTime, SystemTime)>>,
}

impl WorkerState for Worker {
    type StoreData = InstanceState;
    /// The request's server span, and where to tell its response body
    /// which instance it belongs to.
    type RequestData = (tracing::Span, ActivityLink);

    fn should_accept_request(&self, concurrent: usize, total: usize) -> ShouldAccept {
        if total >= self.policy.max_requests {
            ShouldAccept::Never
        } else if concurrent >= self.policy.max_concurrent {
            ShouldAccept::No
        } else {
            ShouldAccept::Yes
        }
    }

    fn on_request_start(
        &self,
        store: StoreContextMut<'_, InstanceState>,
        (span, link): (tracing::Span, ActivityLink),
        _task: GuestTaskId,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + Sync>> {
        let _ = link.set(self.activity.clone());
        let instantiated = self
            .instantiated
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some((start, end)) = instantiated {
            bv_telemetry::record_finished_span(
                &span,
                format!("instantiate {}", self.component),
                start,
                end,
                vec![opentelemetry::KeyValue::new(
                    "bv.component",
                    self.component.clone(),
                )],
            );
        }
        // Host calls of the guest (outbound HTTP, Postgres, ...) and its
        // log lines belong to this request from now on.
        store.data().span.set(span);
        let (timeout, request_expired) = (self.timeout, self.request_expired.clone());
        Box::pin(async move {
            tokio::time::sleep(timeout).await;
            request_expired.store(true, Ordering::SeqCst);
        })
    }

    fn drop(&self, store: Store<InstanceState>, result: wasmtime::Result<()>) {
        if crate::server::is_stopping() {
            // The runtime is shutting down and cancels idle workers; that is
            // not a guest fault.
            drop(store);
            return;
        }
        if let Err(error) = result {
            if error.is::<ExpirationError>() || self.expired.load(Ordering::SeqCst) {
                tracing::warn!(
                    component = %self.component,
                    "instance dropped: busy past the request timeout"
                );
                drop(store);
                return;
            }
            self.metrics
                .traps
                .get_or_create(&Metrics::component(&self.component))
                .inc();
            tracing::error!(component = %self.component, "instance trapped: {error:?}");
        }
        drop(store);
    }
}
