//! The Postgres trigger: durable events from a transactional outbox.
//!
//! ```toml
//! [application.trigger.postgres]
//! address = "postgres://app@db:5432/shop?sslmode=disable"
//!
//! [[trigger.postgres]]
//! component = "projector"
//! events = ["com.bitvelocity.product.*"]
//! max_attempts = 5
//!
//! [[application.trigger.postgres.fanout]]   # best-effort mirror
//! events = ["com.bitvelocity.order.*"]
//! mqtt = { address = "mqtt://broker:1883", topic = "bitvelocity/{type}/{subject}" }
//! ```
//!
//! Producers insert events into `bv_events.outbox` in the same transaction
//! as their state change (bv-events-guest's `Transaction::publish`). Each
//! `[[trigger.postgres]]` entry is a *subscription*: a named position in
//! the outbox, stored in `bv_events.subscriptions`, and a component whose
//! `bitvelocity:events/inbound-event` export receives every matching event.
//!
//! # Guarantees
//!
//! * **At least once.** The position moves past an event only after its
//!   handler returned `ok` (or the event was dead-lettered), so a crash
//!   redelivers, never skips. Consumers deduplicate by event id in their own
//!   transaction (`Transaction::claim`).
//! * **In order.** Events are read in (writing transaction, `seq`) order,
//!   and only from transactions older than every running one
//!   (`pg_snapshot_xmin`), so a slow transaction's events are never
//!   overtaken and skipped. One subscription delivers one event at a time,
//!   hence in order per subject too; a long-running transaction holds
//!   delivery back until it ends.
//! * **Retries, then dead letters.** A failed delivery is retried with
//!   exponential backoff and jitter, holding back the events after it (as a
//!   partition does); after `max_attempts` — or at once when the handler
//!   rejects the event — it is parked in `bv_events.dead_letters` and
//!   delivery goes on. `bv events dead-letters retry` re-delivers parked
//!   events.
//! * **One deliverer.** A subscription is delivered by whichever `bv` holds
//!   its advisory lock; others stand by and take over when it goes away.
//! * **Woken by NOTIFY** naming the new event's type (a subscription ignores
//!   types it does not take), polling every `poll_interval_ms` as a
//!   fallback and to move past the events of other types.
//! * **Fan-out is best effort**: mirrors to Redis channels or MQTT topics
//!   keep their own position; an event that cannot be published after a few
//!   attempts is dropped and counted, never blocks the outbox.

pub mod admin;
pub mod backoff;
pub mod config;
mod metrics;
pub use bv_outbox::{pattern, schema};
mod sink;
mod subscriber;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use bv_manifest::Template;
use bv_runtime::trigger::WarmInstances;
use bv_runtime::AppRuntime;
use tokio_util::sync::CancellationToken;

pub use config::{Entry, Fanout, PostgresTriggerConfig, Start};
pub use metrics::Metrics;
pub use sink::OutboxEvent;

use sink::{ComponentSink, Fanout as FanoutTarget, FanoutSink, PostgresTriggerHostPre};
use subscriber::Subscriber;

/// Attempts a fan-out makes before dropping an event.
const FANOUT_ATTEMPTS: u32 = 3;

/// The Postgres trigger of one application.
pub struct PostgresTrigger {
    /// Subscriptions of components.
    subscribers: Vec<Subscriber<ComponentSink>>,
    /// Fan-out mirrors.
    fanouts: Vec<Subscriber<FanoutSink>>,
    metrics: Arc<Metrics>,
}

impl PostgresTrigger {
    /// Reads the trigger's tables, renders and checks database addresses
    /// and checks that every component exports
    /// `bitvelocity:events/inbound-event@0.1.0`; any problem stops start-up,
    /// naming the field.
    pub fn new(runtime: Arc<AppRuntime>) -> anyhow::Result<Self> {
        let config = PostgresTriggerConfig::from_app(runtime.app())?;
        let metrics = Arc::new(runtime.register_metrics(Metrics::register));
        let poll_interval = Duration::from_millis(config.poll_interval_ms);
        let mut subscribers = Vec::new();
        for (i, entry) in config.entries.iter().enumerate() {
            let field = format!("trigger.postgres[{i}]");
            let (template, address_field) = match &entry.address {
                Some(a) => (a, format!("{field}.address")),
                None => (
                    config.address.as_ref().expect("checked by from_app"),
                    "application.trigger.postgres.address".to_string(),
                ),
            };
            let (pg, display) = database(&runtime, template, &address_field)?;
            let id = &entry.component;
            let component = runtime
                .component(id)
                .with_context(|| format!("{field}.component: no component `{id}`"))?
                .clone();
            let pre = PostgresTriggerHostPre::new(component.pre.clone()).map_err(|e| {
                anyhow::anyhow!(
                    "{field}: component `{id}` does not export bitvelocity:events/inbound-event@0.1.0 handle-event: {e}"
                )
            })?;
            subscribers.push(Subscriber {
                name: entry.subscription.clone().unwrap_or_else(|| id.clone()),
                component: id.clone(),
                likes: entry.events.iter().map(|p| pattern::to_like(p)).collect(),
                patterns: entry.events.clone(),
                config: pg,
                address_display: display,
                start: entry.start,
                max_attempts: entry.max_attempts,
                max_in_flight: entry.max_in_flight,
                backoff: backoff::Backoff {
                    initial: Duration::from_millis(entry.retry_initial_ms),
                    max: Duration::from_millis(entry.retry_max_ms),
                },
                poll_interval,
                sink: ComponentSink {
                    runtime: runtime.clone(),
                    warm: WarmInstances::new(&component, entry.max_in_flight.max(1) as usize),
                    component,
                    pre,
                    metrics: metrics.clone(),
                },
                metrics: metrics.clone(),
            });
        }
        let mut fanouts = Vec::new();
        // Fan-outs publish over the capabilities' own connections, so a
        // broker the components also use sees one client, not two.
        let mqtt = runtime.capabilities().mqtt.clone();
        let redis = runtime.capabilities().redis.clone();
        for (i, fanout) in config.fanout.iter().enumerate() {
            let template = config.address.as_ref().expect("checked by from_app");
            let (pg, display) =
                database(&runtime, template, "application.trigger.postgres.address")?;
            let target = fanout_target(&runtime, fanout, i, &mqtt, &redis)?;
            fanouts.push(Subscriber {
                name: config::fanout_name(fanout, i),
                component: "-".into(),
                likes: fanout.events.iter().map(|p| pattern::to_like(p)).collect(),
                patterns: fanout.events.clone(),
                config: pg,
                address_display: display,
                // A mirror is for live consumers: history is not replayed to them.
                start: Start::Latest,
                max_attempts: FANOUT_ATTEMPTS,
                // A mirror's receivers see the outbox's order.
                max_in_flight: 1,
                backoff: backoff::Backoff {
                    initial: Duration::from_millis(100),
                    max: Duration::from_secs(1),
                },
                poll_interval,
                sink: FanoutSink {
                    target,
                    metrics: metrics.clone(),
                },
                metrics: metrics.clone(),
            });
        }
        Ok(Self {
            subscribers,
            fanouts,
            metrics,
        })
    }

    /// Creates the `bv_events` schema in every database the trigger reads,
    /// so that producers can publish as soon as the application serves.
    /// A database that cannot be reached now is only logged: its
    /// subscribers keep trying, and create the schema when they connect.
    pub async fn prepare(&self) {
        let mut done: Vec<&tokio_postgres::Config> = Vec::new();
        let databases = (self
            .subscribers
            .iter()
            .map(|s| (&s.config, &s.address_display)))
        .chain(self.fanouts.iter().map(|s| (&s.config, &s.address_display)));
        for (config, address_display) in databases {
            if done.contains(&config) {
                continue;
            }
            done.push(config);
            let result = async {
                let (mut client, connection) = config.connect(tokio_postgres::NoTls).await?;
                let driver = tokio::spawn(connection);
                let result = schema::ensure_schema(&mut client).await;
                drop(client);
                let _ = driver.await;
                result
            };
            match tokio::time::timeout(Duration::from_secs(10), result).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!("postgres trigger: cannot prepare {address_display} yet: {e:#}")
                }
                Err(_) => tracing::warn!(
                    "postgres trigger: cannot prepare {address_display} yet: timed out"
                ),
            }
        }
    }

    /// The trigger's figures.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// `(subscription, patterns, component)` triples, for the start-up
    /// banner (`-` for a fan-out).
    pub fn subscriptions(&self) -> Vec<(String, String, String)> {
        let listed = |name: &String, patterns: &[String], component: &String| {
            (name.clone(), patterns.join(", "), component.clone())
        };
        (self.subscribers.iter())
            .map(|s| listed(&s.name, &s.patterns, &s.component))
            .chain((self.fanouts.iter()).map(|s| listed(&s.name, &s.patterns, &s.component)))
            .collect()
    }

    /// Delivers every subscription until `stop` is cancelled; each finishes
    /// the delivery in progress (bounded by the component's timeout) and
    /// records its position.
    pub async fn run(self, stop: CancellationToken) -> anyhow::Result<()> {
        let mut tasks = tokio::task::JoinSet::new();
        for subscriber in self.subscribers {
            tasks.spawn(subscriber.run(stop.clone()));
        }
        for fanout in self.fanouts {
            tasks.spawn(fanout.run(stop.clone()));
        }
        while tasks.join_next().await.is_some() {}
        Ok(())
    }
}

/// Renders and parses a database address; returns its configuration and a
/// password-free form for messages.
fn database(
    runtime: &AppRuntime,
    template: &Template,
    field: &str,
) -> anyhow::Result<(tokio_postgres::Config, String)> {
    let address = template
        .render(|name| runtime.app_variable(name))
        .with_context(|| field.to_string())?;
    let parsed = bv_factor_outbound_pg::address::parse(&address)
        .map_err(|e| anyhow::anyhow!("{field}: {e}"))?;
    let display = parsed
        .endpoints
        .iter()
        .map(|e| format!("{}:{}", e.host, e.port))
        .collect::<Vec<_>>()
        .join(",");
    let db = parsed.config.get_dbname().unwrap_or("postgres").to_string();
    let mut config = parsed.config;
    config.connect_timeout(Duration::from_secs(5));
    config.application_name("bv postgres trigger");
    Ok((config, format!("postgres://{display}/{db}")))
}

fn fanout_target(
    runtime: &AppRuntime,
    fanout: &Fanout,
    index: usize,
    mqtt: &Arc<bv_factor_outbound_mqtt::MqttApp>,
    redis: &Arc<bv_factor_outbound_redis::RedisApp>,
) -> anyhow::Result<FanoutTarget> {
    let field = format!("application.trigger.postgres.fanout[{index}]");
    if let Some(target) = &fanout.redis {
        let address = target
            .address
            .render(|name| runtime.app_variable(name))
            .with_context(|| format!("{field}.redis.address"))?;
        redis::Client::open(address.as_str())
            .map_err(|e| anyhow::anyhow!("{field}.redis.address: invalid Redis address: {e}"))?;
        return Ok(FanoutTarget::Redis {
            app: redis.clone(),
            address,
            channel: target.channel.clone(),
        });
    }
    let target = fanout.mqtt.as_ref().expect("checked by from_app");
    let address = target
        .address
        .render(|name| runtime.app_variable(name))
        .with_context(|| format!("{field}.mqtt.address"))?;
    let parsed = bv_factor_outbound_mqtt::Address::parse(&address).with_context(|| {
        format!("{field}.mqtt.address: `{address}` is not an mqtt:// or mqtts:// address")
    })?;
    let qos = match target.qos {
        0 => bv_factor_outbound_mqtt::Qos::AtMostOnce,
        1 => bv_factor_outbound_mqtt::Qos::AtLeastOnce,
        _ => bv_factor_outbound_mqtt::Qos::ExactlyOnce,
    };
    let client_id = parsed
        .client_id
        .clone()
        .unwrap_or_else(|| format!("bv-fanout-{}-{index}", std::process::id()));
    Ok(FanoutTarget::Mqtt {
        app: mqtt.clone(),
        options: bv_factor_outbound_mqtt::ConnectOptions {
            address: parsed,
            client_id,
            username: String::new(),
            password: String::new(),
            keep_alive: Duration::from_secs(30),
        },
        topic: target.topic.clone(),
        qos,
    })
}

/// The `[[trigger.postgres]]` trigger type, for `bv`'s list of kinds.
pub const KIND: bv_runtime::TriggerKind = bv_runtime::TriggerKind {
    name: "postgres",
    build: |runtime| Ok(Box::new(PostgresTrigger::new(runtime)?)),
};

#[async_trait::async_trait]
impl bv_runtime::Trigger for PostgresTrigger {
    fn kind(&self) -> &'static str {
        KIND.name
    }

    fn listing(&self) -> Vec<bv_runtime::Listed> {
        use bv_runtime::Listed;
        self.subscriptions()
            .into_iter()
            .map(|(subscription, events, component)| {
                Listed::new(
                    component,
                    format!("postgres events {events} (subscription {subscription})"),
                )
            })
            .collect()
    }

    async fn prepare(&self) {
        PostgresTrigger::prepare(self).await
    }

    async fn run(self: Box<Self>, stop: CancellationToken) -> anyhow::Result<bv_runtime::Drained> {
        PostgresTrigger::run(*self, stop).await?;
        Ok(bv_runtime::Drained::Complete)
    }
}
