//! The Redis trigger: Spin's `[[trigger.redis]]`.
//!
//! ```toml
//! [application.trigger.redis]
//! address = "redis://localhost:6379"        # may be "{{ variable }}"
//!
//! [[trigger.redis]]
//! channel = "orders"
//! component = "order-handler"
//! # address = "redis://other:6379"         # overrides the application's
//! ```
//!
//! For every message published on a channel, each component subscribed to
//! it gets exactly one call of its `spin:redis/inbound-redis@3.0.0`
//! `handle-message` export, in a fresh instance, within the component's
//! request timeout. One subscriber connection serves all channels of an
//! address; each component has its own queue and worker, so messages reach a
//! component in publish order and a slow component does not hold up the
//! others. When the connection drops (Redis restarts), the trigger reconnects
//! and resubscribes with a capped exponential backoff, logging every attempt.
//! A handler that returns an error, traps or times out is logged and counted
//! in [`Metrics`]; the next message is handled as usual.

mod config;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use bv_runtime::{AppRuntime, ComponentRuntime};
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use bv_runtime::trigger::{Failure, MessageMetrics as Metrics, Outcome};
pub use config::{RedisTriggerConfig, Subscription};

mod bindings {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "bitvelocity:host/redis-trigger-host",
        exports: { default: async | store },
    });
}

use bindings::RedisTriggerHostPre;

/// Messages a component may have waiting before the subscriber waits for it.
const QUEUE_DEPTH: usize = 1024;
/// First wait before reconnecting; doubled after each failure.
const BACKOFF_START: Duration = Duration::from_millis(100);
/// Longest wait between reconnect attempts.
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How long a connect or subscribe may take before it counts as failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// One component's handler, ready to instantiate.
struct Handler {
    component: Arc<ComponentRuntime>,
    pre: RedisTriggerHostPre<bv_runtime::InstanceState>,
}

/// The Redis trigger of one application.
pub struct RedisTrigger {
    runtime: Arc<AppRuntime>,
    /// Address → channel → components, deduplicated.
    subscriptions: BTreeMap<String, BTreeMap<String, BTreeSet<String>>>,
    handlers: HashMap<String, Arc<Handler>>,
    metrics: Arc<Metrics>,
}

impl RedisTrigger {
    /// Reads `[application.trigger.redis]` and `[[trigger.redis]]` from the
    /// runtime's manifest, renders addresses against the application
    /// variables, and checks that every component exports
    /// `spin:redis/inbound-redis@3.0.0`.
    pub fn new(runtime: Arc<AppRuntime>) -> anyhow::Result<Self> {
        let app = runtime.app();
        let config = RedisTriggerConfig::from_app(app)?;
        let mut subscriptions: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> =
            BTreeMap::new();
        let mut handlers = HashMap::new();
        for (i, sub) in config.subscriptions.iter().enumerate() {
            let (template, field) = match (&sub.address, &config.address) {
                (Some(t), _) => (t, format!("trigger.redis[{i}].address")),
                (None, Some(t)) => (t, "application.trigger.redis.address".to_string()),
                (None, None) => anyhow::bail!(
                    "trigger.redis[{i}]: no address: set `address` here or in [application.trigger.redis]"
                ),
            };
            let address = template
                .render(|name| runtime.app_variable(name))
                .with_context(|| field.clone())?;
            redis::Client::open(address.as_str())
                .map_err(|e| anyhow::anyhow!("{field}: invalid Redis address: {e}"))?;
            let component = runtime.component(&sub.component).with_context(|| {
                format!(
                    "trigger.redis[{i}].component: no component `{}`",
                    sub.component
                )
            })?;
            if !handlers.contains_key(&sub.component) {
                let pre = RedisTriggerHostPre::new(component.pre.clone()).map_err(|e| {
                    anyhow::anyhow!(
                        "trigger.redis[{i}]: component `{}` does not export spin:redis/inbound-redis@3.0.0 (use #[redis_subscriber]): {e}",
                        sub.component
                    )
                })?;
                handlers.insert(
                    sub.component.clone(),
                    Arc::new(Handler {
                        component: component.clone(),
                        pre,
                    }),
                );
            }
            subscriptions
                .entry(address)
                .or_default()
                .entry(sub.channel.clone())
                .or_default()
                .insert(sub.component.clone());
        }
        let metrics = runtime.register_metrics(|r| Metrics::register(r, "redis", "channel"));
        Ok(Self {
            runtime,
            subscriptions,
            handlers,
            metrics: Arc::new(metrics),
        })
    }

    /// The trigger's counters (messages handled and failed, reconnects).
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// `(channel, component)` pairs, for the start-up banner.
    pub fn channels(&self) -> Vec<(String, String)> {
        self.subscriptions
            .values()
            .flat_map(|channels| {
                channels.iter().flat_map(|(channel, components)| {
                    components.iter().map(move |c| (channel.clone(), c.clone()))
                })
            })
            .collect()
    }

    /// Subscribes and handles messages until `stop` is cancelled. Lost
    /// connections are retried for ever, so this only returns on `stop`.
    pub async fn run(self, stop: CancellationToken) -> anyhow::Result<()> {
        let mut tasks = tokio::task::JoinSet::new();
        for (address, channels) in self.subscriptions {
            // One queue and worker per (channel, component) on this address.
            let mut routes: HashMap<String, Vec<mpsc::Sender<Vec<u8>>>> = HashMap::new();
            for (channel, components) in &channels {
                for component in components {
                    let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
                    routes.entry(channel.clone()).or_default().push(tx);
                    tasks.spawn(worker(
                        self.runtime.clone(),
                        self.handlers[component].clone(),
                        channel.clone(),
                        rx,
                        self.metrics.clone(),
                    ));
                }
            }
            tasks.spawn(subscriber(
                address,
                routes,
                self.metrics.clone(),
                stop.clone(),
            ));
        }
        stop.cancelled().await;
        // Subscribers return on `stop`, which closes the queues; workers
        // finish the message in hand and return.
        while tasks.join_next().await.is_some() {}
        Ok(())
    }
}

/// `address` without any password, for logs.
fn redact(address: &str) -> String {
    match address.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((_, host)) => format!("{scheme}://***@{host}"),
            None => address.to_string(),
        },
        None => address.to_string(),
    }
}

/// Keeps one subscription to all of `routes`' channels on `address`,
/// reconnecting after failures, and forwards each message to the queues of
/// its channel.
async fn subscriber(
    address: String,
    routes: HashMap<String, Vec<mpsc::Sender<Vec<u8>>>>,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    let shown = redact(&address);
    let channels: Vec<&String> = routes.keys().collect();
    let mut backoff = BACKOFF_START;
    let mut attempt: u32 = 0;
    loop {
        attempt += 1;
        let connected = tokio::select! {
            _ = stop.cancelled() => return,
            r = tokio::time::timeout(CONNECT_TIMEOUT, subscribe(&address, &channels)) => r,
        };
        let pubsub = match connected {
            Ok(Ok(pubsub)) => pubsub,
            failed => {
                let error = match failed {
                    Ok(Err(e)) => e.to_string(),
                    _ => format!("timed out after {CONNECT_TIMEOUT:?}"),
                };
                metrics.reconnect_failed();
                tracing::warn!(
                    address = %shown,
                    attempt,
                    retry_in_ms = backoff.as_millis() as u64,
                    "redis trigger: cannot subscribe: {error}"
                );
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
        };
        tracing::info!(
            address = %shown,
            attempt,
            channels = ?channels,
            "redis trigger: subscribed"
        );
        backoff = BACKOFF_START;
        attempt = 0;
        let mut messages = pubsub.into_on_message();
        loop {
            let msg = tokio::select! {
                _ = stop.cancelled() => return,
                msg = messages.next() => msg,
            };
            let Some(msg) = msg else { break };
            let channel = msg.get_channel_name();
            let Some(queues) = routes.get(channel) else {
                continue;
            };
            let payload = msg.get_payload_bytes();
            for queue in queues {
                // Waits when a component is `QUEUE_DEPTH` messages behind,
                // which pushes back on Redis rather than dropping messages.
                let _ = queue.send(payload.to_vec()).await;
            }
        }
        metrics.disconnected();
        tracing::warn!(address = %shown, "redis trigger: connection lost; resubscribing");
    }
}

async fn subscribe(address: &str, channels: &[&String]) -> redis::RedisResult<redis::aio::PubSub> {
    let client = redis::Client::open(address)?;
    let mut pubsub = client.get_async_pubsub().await?;
    for channel in channels {
        pubsub.subscribe(channel.as_str()).await?;
    }
    Ok(pubsub)
}

/// Handles the messages of one (channel, component) in order.
async fn worker(
    runtime: Arc<AppRuntime>,
    handler: Arc<Handler>,
    channel: String,
    mut queue: mpsc::Receiver<Vec<u8>>,
    metrics: Arc<Metrics>,
) {
    let component = handler.component.id.clone();
    while let Some(payload) = queue.recv().await {
        let span = message_span(&component, &channel);
        let delivery = bv_runtime::trigger::deliver(
            &runtime,
            &handler.component,
            &span,
            async |store| handler.pre.instantiate_async(store).await,
            async |store, instance| {
                store
                    .run_concurrent(async move |accessor| {
                        instance
                            .spin_redis_inbound_redis()
                            .call_handle_message(accessor, payload)
                            .await
                    })
                    .await
                    .and_then(|r| r)
            },
        );
        let delivered = metrics
            .deliver(&component, &channel, &span, async {
                delivery.await.and_then(|r| r.map_err(Failure::handler))
            })
            .await;
        match delivered.result {
            Ok(()) => tracing::debug!(
                component = %component,
                channel = %channel,
                elapsed_ms = delivered.elapsed.as_millis() as u64,
                "redis message handled"
            ),
            // In the message's span, so the line has its trace id.
            Err(failure) => span.in_scope(|| {
                tracing::error!(
                    component = %component,
                    channel = %channel,
                    "redis handler failed: {failure} (failures so far: {})",
                    delivered.failures
                )
            }),
        }
    }
}

/// The span of handling one message of `channel` (`process {channel}`,
/// kind consumer); a root, as Redis messages carry no trace context.
/// `Span::none()` when tracing is off.
fn message_span(component: &str, channel: &str) -> tracing::Span {
    if !bv_telemetry::tracing_enabled() {
        return tracing::Span::none();
    }
    tracing::info_span!(
        parent: None,
        "redis.process",
        otel.name = %format!("process {channel}"),
        otel.kind = "consumer",
        otel.status_code = tracing::field::Empty,
        otel.status_description = tracing::field::Empty,
        messaging.system = "redis",
        messaging.operation.type = "process",
        messaging.destination.name = channel,
        bv.component = component,
        error.type = tracing::field::Empty,
    )
}

/// The `[[trigger.redis]]` trigger type, for `bv`'s list of kinds.
pub const KIND: bv_runtime::TriggerKind = bv_runtime::TriggerKind {
    name: "redis",
    build: |runtime| Ok(Box::new(RedisTrigger::new(runtime)?)),
};

#[async_trait::async_trait]
impl bv_runtime::Trigger for RedisTrigger {
    fn kind(&self) -> &'static str {
        KIND.name
    }

    fn listing(&self) -> Vec<bv_runtime::Listed> {
        use bv_runtime::Listed;
        self.channels()
            .into_iter()
            .map(|(channel, component)| Listed::new(component, format!("redis channel {channel}")))
            .collect()
    }

    async fn run(self: Box<Self>, stop: CancellationToken) -> anyhow::Result<bv_runtime::Drained> {
        RedisTrigger::run(*self, stop).await?;
        Ok(bv_runtime::Drained::Complete)
    }
}
