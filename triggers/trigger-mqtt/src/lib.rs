//! The MQTT trigger, compatible with the spin-trigger-mqtt plugin's manifest
//! and guest interface:
//!
//! ```toml
//! [application.trigger.mqtt]
//! address = "mqtt://localhost:1883"   # each may be a "{{ variable }}"
//! username = ""
//! password = ""
//! keep_alive_interval = "30"
//!
//! [[trigger.mqtt]]
//! component = "handler"
//! topic = "orders/#"
//! qos = "1"
//! ```
//!
//! Each `[[trigger.mqtt]]` entry has its own MQTT session, and each message
//! it receives is one call of the component's `handle-message` export
//! (`spin:mqtt-trigger@3.0.0`, world `spin-mqtt`) in a fresh instance,
//! within the component's request timeout. Messages of one subscription are
//! handled one at a time, in arrival order. A handler that fails (error,
//! trap, timeout) is logged and counted in [`Metrics`], and the next message
//! is handled as usual.
//!
//! Beyond Spin, a component's `message_batch` (`[component.<id>.tool.bv]`)
//! lets the trigger hand it the messages already waiting, up to that many,
//! in one instance as concurrent calls of `handle-message`, so the handler
//! may store them together. Each call still has its own outcome and
//! acknowledgement; the request timeout covers the whole batch, and a trap
//! fails all of its messages. Under the `reuse` instance policy (bv's
//! default) the instance is kept for the next batch, as an HTTP instance is
//! for the next request (at most `instance_max_requests` batches, idle at
//! most a second, dropped after any failure), so what the handler set up
//! once (a migration checked, say) is not redone per batch; `strict` gives
//! each batch a fresh instance. Batches of one subscription follow one
//! another, so the arrival order between batches holds. Mosquitto sends a
//! session at most `max_inflight_messages` (20 by default) unacknowledged
//! messages, which caps a batch.
//!
//! # Acknowledgements and redelivery
//!
//! Sessions are persistent (`clean_session = false`) under a client id that
//! is stable across restarts (`bv-` and a hash of the application name, the
//! entry's position, component, topic and broker address), and
//! acknowledgements are manual: a QoS 1 message is acknowledged (PUBACK) only
//! after its handler succeeded; a QoS 2 message is acknowledged (PUBREC) at
//! the same point. An acknowledgement goes only to the broker session its
//! message arrived in: a broker that lost its sessions (a CONNACK without
//! `session_present`) numbers packets afresh, so an acknowledgement from
//! before would name another message of the new session.
//!
//! A message whose handler failed is not acknowledged. Mosquitto (as MQTT
//! 3.1.1 requires) does not send it again on the same connection: it stays
//! in the client's session as an in-flight message, and Mosquitto resends
//! it, with the DUP flag set, right after the client next connects with the
//! same client id and `clean_session = false`: after a `bv` restart, a
//! network failure, or a broker restart when the broker persists sessions
//! (`persistence true`, and a shut-down that saves them). Each such message
//! holds one of the session's in-flight slots (Mosquitto's
//! `max_inflight_messages`, 20 by default) until then; with every slot taken
//! Mosquitto stops sending, queueing newer messages instead. So that
//! failures cannot stall a subscription, the trigger reconnects on its own
//! once [`MAX_UNACKED`] failed messages are outstanding: the reconnect is
//! the "negative acknowledgement" MQTT 3.1.1 lacks, and the broker then
//! redelivers them. A message whose handler always fails is therefore
//! retried at every reconnect; MQTT has no dead-letter mechanism.
//!
//! Stopping the trigger (the `CancellationToken`) abandons the message in
//! hand unacknowledged and disconnects; the broker redelivers it to the
//! next `bv` that starts with the same manifest.
//!
//! # Reconnecting
//!
//! When the connection fails (broker restarted, network error), the trigger
//! retries with a capped exponential backoff, logging each attempt. On each
//! CONNACK it subscribes again unless the broker reports that the session
//! (and with it the subscription) survived.

mod config;

use std::hash::Hasher as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use bv_factor_outbound_mqtt::{mqtt_options, Address};
use bv_runtime::{AppRuntime, ComponentRuntime, InstanceState};
use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, Publish, QoS};
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

pub use bv_runtime::trigger::{Delivered, Failure, MessageMetrics as Metrics, Outcome};
pub use config::{BrokerSettings, MqttTriggerConfig, StringOrInt, Subscription};

mod bindings {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "bitvelocity:host/mqtt-trigger-host",
        exports: { default: async | store },
    });
}

use bindings::spin::mqtt_trigger::spin_mqtt_types::Metadata;
use bindings::{MqttTriggerHost, MqttTriggerHostPre};
use bv_runtime::trigger::{WarmInstances, WARM_IDLE_TIMEOUT};

/// Messages a subscription may have waiting for its handler before the
/// trigger stops reading from the broker.
const QUEUE_DEPTH: usize = 256;
/// First wait before reconnecting; doubled after each failure.
const BACKOFF_START: Duration = Duration::from_millis(100);
/// Longest wait between reconnect attempts.
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How long TCP connect plus CONNECT/CONNACK may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Failed, unacknowledged QoS 1/2 messages after which the trigger
/// reconnects so that the broker redelivers them (below Mosquitto's default
/// in-flight window of 20, see the crate docs).
pub const MAX_UNACKED: usize = 10;

/// A message as the session task hands it to the worker, with the broker
/// session it arrived in: an acknowledgement names a message by its packet
/// id, which a new session (after a broker that lost its sessions) gives to
/// other messages, so an acknowledgement is only sent in the session its
/// message came from.
struct Received {
    session: u64,
    publish: Publish,
}

/// One `[[trigger.mqtt]]` entry, resolved.
struct Sub {
    index: usize,
    component: Arc<ComponentRuntime>,
    pre: MqttTriggerHostPre<InstanceState>,
    topic: String,
    qos: QoS,
    options: MqttOptions,
    shown: String,
    /// The instance kept between batches (components with a
    /// `message_batch` above 1 under the `reuse` instance policy).
    warm: WarmInstances<MqttTriggerHost>,
}

/// The MQTT trigger of one application.
pub struct MqttTrigger {
    runtime: Arc<AppRuntime>,
    subs: Vec<Arc<Sub>>,
    metrics: Arc<Metrics>,
}

fn render(
    runtime: &AppRuntime,
    template: &bv_manifest::Template,
    field: &str,
) -> anyhow::Result<String> {
    template
        .render(|name| runtime.app_variable(name))
        .with_context(|| field.to_string())
}

fn number(runtime: &AppRuntime, value: &StringOrInt, field: &str) -> anyhow::Result<i64> {
    match value {
        StringOrInt::Int(n) => Ok(*n),
        StringOrInt::String(t) => {
            let s = render(runtime, t, field)?;
            s.trim()
                .parse()
                .with_context(|| format!("{field}: `{s}` is not a number"))
        }
    }
}

/// A stable 64-bit FNV-1a hash: client ids must not change between builds.
struct Fnv(u64);

impl std::hash::Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= *b as u64;
            self.0 = self.0.wrapping_mul(0x100000001b3);
        }
    }
}

impl MqttTrigger {
    /// Reads `[application.trigger.mqtt]` and `[[trigger.mqtt]]` from the
    /// runtime's manifest, renders templates against the application
    /// variables, and checks that every component exports `handle-message`.
    pub fn new(runtime: Arc<AppRuntime>) -> anyhow::Result<Self> {
        let app = runtime.app();
        let config = MqttTriggerConfig::from_app(app)?;
        let b = &config.broker;
        let at = "application.trigger.mqtt";
        let address_text = render(&runtime, &b.address, &format!("{at}.address"))?;
        let address = Address::parse(&address_text).with_context(|| {
            format!("{at}.address: `{address_text}` is not an mqtt:// or mqtts:// URL with a host")
        })?;
        let username = render(&runtime, &b.username, &format!("{at}.username"))?;
        let password = render(&runtime, &b.password, &format!("{at}.password"))?;
        let keep_alive = number(
            &runtime,
            &b.keep_alive_interval,
            &format!("{at}.keep_alive_interval"),
        )?;
        let keep_alive = u64::try_from(keep_alive)
            .ok()
            .with_context(|| format!("{at}.keep_alive_interval: must not be negative"))?;

        let mut subs = Vec::new();
        for (i, sub) in config.subscriptions.iter().enumerate() {
            let field = |f: &str| format!("trigger.mqtt[{i}].{f}");
            let topic = render(&runtime, &sub.topic, &field("topic"))?;
            let qos = match number(&runtime, &sub.qos, &field("qos"))? {
                0 => QoS::AtMostOnce,
                1 => QoS::AtLeastOnce,
                2 => QoS::ExactlyOnce,
                n => anyhow::bail!("{}: {n} is not a QoS level (0, 1 or 2)", field("qos")),
            };
            let component = runtime.component(&sub.component).with_context(|| {
                format!("{}: no component `{}`", field("component"), sub.component)
            })?;
            let pre = MqttTriggerHostPre::new(component.pre.clone()).map_err(|e| {
                anyhow::anyhow!(
                    "trigger.mqtt[{i}]: component `{}` does not export `handle-message` of spin:mqtt-trigger@3.0.0: {e}",
                    sub.component
                )
            })?;
            let mut hash = Fnv(0xcbf29ce484222325);
            for part in [
                app.application.name.as_str(),
                &i.to_string(),
                &sub.component,
                &topic,
                &address_text,
            ] {
                hash.write(part.as_bytes());
                hash.write(&[0]);
            }
            let client_id = match &address.client_id {
                // An explicit id can serve only one session.
                Some(id) if config.subscriptions.len() == 1 => id.clone(),
                Some(id) => format!("{id}-{i}"),
                None => format!("bv-{:016x}", hash.finish()),
            };
            let mut options = mqtt_options(
                &address,
                &client_id,
                &username,
                &password,
                Duration::from_secs(keep_alive),
            )
            .map_err(|e| anyhow::anyhow!("{at}: {e}"))?;
            options.set_clean_session(false);
            options.set_manual_acks(true);
            subs.push(Arc::new(Sub {
                index: i,
                component: component.clone(),
                pre,
                topic,
                qos,
                options,
                shown: address.to_string(),
                warm: WarmInstances::new(component, 1),
            }));
        }
        let metrics = runtime.register_metrics(|r| Metrics::register(r, "mqtt", "topic"));
        Ok(Self {
            runtime,
            subs,
            metrics: Arc::new(metrics),
        })
    }

    /// The trigger's counters.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// `(topic, component)` pairs, for the start-up banner.
    pub fn topics(&self) -> Vec<(String, String)> {
        self.subs
            .iter()
            .map(|s| (s.topic.clone(), s.component.id.to_string()))
            .collect()
    }

    /// Subscribes and handles messages until `stop` is cancelled. Lost
    /// connections are retried for ever, so this only returns on `stop`.
    pub async fn run(self, stop: CancellationToken) -> anyhow::Result<()> {
        let mut tasks = tokio::task::JoinSet::new();
        for sub in self.subs {
            tasks.spawn(subscription(
                self.runtime.clone(),
                sub,
                self.metrics.clone(),
                stop.clone(),
            ));
        }
        while tasks.join_next().await.is_some() {}
        Ok(())
    }
}

/// Keeps one subscription's session alive and feeds its worker.
async fn subscription(
    runtime: Arc<AppRuntime>,
    sub: Arc<Sub>,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    let (client, mut eventloop) = AsyncClient::new(sub.options.clone(), 64);
    let mut network = eventloop.network_options();
    network.set_connection_timeout(CONNECT_TIMEOUT.as_secs());
    eventloop.set_network_options(network);

    let (queue, messages) = mpsc::channel(QUEUE_DEPTH);
    // Acknowledgements come back from the worker on a channel of their own
    // and are handed to rumqttc here, without waiting: rumqttc takes them
    // only while its event loop is polled, and this task stops polling
    // while the worker's queue is full, so a worker that waited on
    // `AsyncClient::ack` and a loop that waited on the queue would each
    // wait for the other for good.
    let (acks, mut handled) = mpsc::unbounded_channel::<Received>();
    let mut pending_acks = std::collections::VecDeque::<Received>::new();
    let unacked = Arc::new(AtomicUsize::new(0));
    let redeliver = Arc::new(Notify::new());
    let worker = tokio::spawn(worker(
        runtime,
        sub.clone(),
        acks,
        messages,
        metrics.clone(),
        unacked.clone(),
        redeliver.clone(),
    ));

    let component = sub.component.id.clone();
    let mut backoff = BACKOFF_START;
    let mut attempt: u32 = 0;
    let mut subscribed = false;
    // Counts the broker sessions: a CONNACK without `session_present` starts
    // a new one, and what the old one left unacknowledged is redelivered
    // by nobody (the broker forgot it), nor acknowledged by us.
    let mut session: u64 = 0;
    'session: loop {
        while let Some(done) = pending_acks.front() {
            if done.session != session {
                tracing::warn!(
                    component = %component,
                    topic = %sub.topic,
                    "mqtt trigger: not acknowledging a message of a session the broker no longer has"
                );
            } else if client.try_ack(&done.publish).is_err() {
                break;
            }
            pending_acks.pop_front();
        }
        let event = tokio::select! {
            _ = stop.cancelled() => break,
            Some(publish) = handled.recv() => {
                pending_acks.push_back(publish);
                continue;
            }
            _ = redeliver.notified() => {
                tracing::info!(
                    component = %component,
                    topic = %sub.topic,
                    "mqtt trigger: {MAX_UNACKED} failed messages unacknowledged; reconnecting so the broker redelivers them"
                );
                // Drops the connection; the next poll reconnects with the
                // same persistent session.
                eventloop.clean();
                unacked.store(0, Ordering::SeqCst);
                continue;
            }
            event = eventloop.poll() => event,
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                tracing::info!(
                    component = %component,
                    topic = %sub.topic,
                    address = %sub.shown,
                    session_present = ack.session_present,
                    "mqtt trigger: connected"
                );
                backoff = BACKOFF_START;
                attempt = 0;
                if !ack.session_present {
                    session += 1;
                }
                if !ack.session_present || !subscribed {
                    match client.try_subscribe(sub.topic.clone(), sub.qos) {
                        Ok(()) => subscribed = true,
                        Err(e) => tracing::error!(
                            component = %component,
                            topic = %sub.topic,
                            "mqtt trigger: cannot subscribe: {e}"
                        ),
                    }
                }
            }
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                if ack
                    .return_codes
                    .iter()
                    .any(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure))
                {
                    tracing::error!(
                        component = %component,
                        topic = %sub.topic,
                        "mqtt trigger: the broker refused the subscription"
                    );
                } else {
                    tracing::info!(component = %component, topic = %sub.topic, "mqtt trigger: subscribed");
                }
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                // Waits while the handler is `QUEUE_DEPTH` messages behind,
                // which pushes back on the broker rather than dropping, and
                // keeps taking the worker's acknowledgements meanwhile.
                let mut publish = Some(publish);
                while let Some(next) = publish.take() {
                    tokio::select! {
                        _ = stop.cancelled() => break 'session,
                        permit = queue.reserve() => match permit {
                            Ok(permit) => permit.send(Received { session, publish: next }),
                            Err(_) => break 'session,
                        },
                        Some(done) = handled.recv() => {
                            pending_acks.push_back(done);
                            publish = Some(next);
                        }
                    }
                }
            }
            Ok(_) => {}
            Err(e) => {
                attempt += 1;
                metrics.disconnected();
                // Unacknowledged messages come back with the next session.
                unacked.store(0, Ordering::SeqCst);
                tracing::warn!(
                    component = %component,
                    topic = %sub.topic,
                    address = %sub.shown,
                    attempt,
                    retry_in_ms = backoff.as_millis() as u64,
                    "mqtt trigger: connection failed: {e}"
                );
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
    worker.abort();
    // A clean DISCONNECT; the session (and unacknowledged messages) stays.
    if client.try_disconnect().is_ok() {
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        })
        .await;
    }
    tracing::info!(component = %component, topic = %sub.topic, index = sub.index, "mqtt trigger: stopped");
}

/// Handles one subscription's messages in arrival order, acknowledging each
/// QoS 1/2 message only after its handler succeeded. Under the component's
/// `message_batch` (beyond Spin), the messages already waiting, up to that
/// many, go to one instance together (see [`deliver_batch`]).
async fn worker(
    runtime: Arc<AppRuntime>,
    sub: Arc<Sub>,
    acks: mpsc::UnboundedSender<Received>,
    mut messages: mpsc::Receiver<Received>,
    metrics: Arc<Metrics>,
    unacked: Arc<AtomicUsize>,
    redeliver: Arc<Notify>,
) {
    let component = sub.component.id.clone();
    let most = (sub.component.settings.message_batch as usize).clamp(1, QUEUE_DEPTH);
    loop {
        // Only batches keep an instance, so only they need the idle timer
        // (one message at a time, as Spin, arms no timer per message).
        let next = if most == 1 {
            messages.recv().await
        } else {
            tokio::select! {
                next = messages.recv() => next,
                _ = tokio::time::sleep(WARM_IDLE_TIMEOUT) => {
                    sub.warm.reap();
                    continue;
                }
            }
        };
        let Some(first) = next else { break };
        let mut batch = vec![first];
        while batch.len() < most {
            match messages.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let spans: Vec<tracing::Span> = batch
            .iter()
            .map(|r| message_span(&component, &r.publish.topic, r.publish.qos as u8))
            .collect();
        let delivered = if most == 1 {
            vec![deliver_one(&runtime, &sub, &metrics, &spans[0], &batch[0].publish).await]
        } else {
            deliver_batch(&runtime, &sub, &metrics, &spans, &batch).await
        };
        for ((received, span), delivered) in batch.into_iter().zip(&spans).zip(delivered) {
            let publish = &received.publish;
            let failures = delivered.failures;
            match delivered.result {
                Ok(()) => {
                    tracing::debug!(
                        component = %component,
                        topic = %publish.topic,
                        elapsed_ms = delivered.elapsed.as_millis() as u64,
                        "mqtt message handled"
                    );
                    if publish.qos != QoS::AtMostOnce && acks.send(received).is_err() {
                        tracing::warn!(component = %component, "mqtt trigger: stopped before acknowledging a message");
                    }
                }
                Err(failure) => {
                    // In the message's span, so the line has its trace id.
                    span.in_scope(|| {
                        tracing::error!(
                            component = %component,
                            topic = %publish.topic,
                            qos = publish.qos as u8,
                            dup = publish.dup,
                            failures,
                            "mqtt handler failed: {failure}"
                        )
                    });
                    if publish.qos != QoS::AtMostOnce
                        && unacked.fetch_add(1, Ordering::SeqCst) + 1 >= MAX_UNACKED
                    {
                        redeliver.notify_one();
                    }
                }
            }
        }
    }
}

/// One message, in a fresh instance (Spin's way).
async fn deliver_one(
    runtime: &AppRuntime,
    sub: &Sub,
    metrics: &Metrics,
    span: &tracing::Span,
    publish: &Publish,
) -> Delivered {
    let (payload, topic) = (publish.payload.to_vec(), publish.topic.clone());
    let delivery = bv_runtime::trigger::deliver(
        runtime,
        &sub.component,
        span,
        async |store| sub.pre.instantiate_async(store).await,
        async |store, instance| {
            store
                .run_concurrent(async move |accessor| {
                    instance
                        .call_handle_message(accessor, payload, Metadata { topic })
                        .await
                })
                .await
                .and_then(|r| r)
        },
    );
    metrics
        .deliver(&sub.component.id, &sub.topic, span, async {
            delivery.await.and_then(|r| r.map_err(Failure::handler))
        })
        .await
}

/// Several messages in one instance, as concurrent calls of its handler: a
/// handler that gathers the calls in hand can store them in one
/// transaction. Each message has its own outcome; a trap, or running past
/// the request timeout (which covers the whole batch), fails them all. The
/// instance serves the next batch too (under the `reuse` instance policy,
/// up to `instance_max_requests` batches, idle for at most
/// [`WARM_IDLE_TIMEOUT`]) unless one of its messages failed.
async fn deliver_batch(
    runtime: &AppRuntime,
    sub: &Sub,
    metrics: &Metrics,
    spans: &[tracing::Span],
    batch: &[Received],
) -> Vec<Delivered> {
    let started = std::time::Instant::now();
    let inputs: Vec<(Vec<u8>, String)> = batch
        .iter()
        .map(|r| (r.publish.payload.to_vec(), r.publish.topic.clone()))
        .collect();
    let delivery = bv_runtime::trigger::deliver_warm(
        runtime,
        &sub.component,
        &sub.warm,
        &spans[0],
        async |store| sub.pre.instantiate_async(store).await,
        async |store, instance| {
            store
                .run_concurrent(async move |accessor| {
                    let calls = inputs.into_iter().map(|(payload, topic)| {
                        instance.call_handle_message(accessor, payload, Metadata { topic })
                    });
                    futures::future::join_all(calls).await
                })
                .await
        },
        |each| each.iter().all(|r| matches!(r, Ok(Ok(())))),
    )
    .await;
    let results: Vec<Result<(), Failure>> = match delivery {
        Ok(each) => each
            .into_iter()
            .map(|r| match r {
                Ok(handled) => handled.map_err(Failure::handler),
                Err(trap) => Err(Failure::trap(trap)),
            })
            .collect(),
        Err(failure) => batch.iter().map(|_| Err(failure.clone())).collect(),
    };
    spans
        .iter()
        .zip(results)
        .map(|(span, result)| {
            metrics.recorded(&sub.component.id, &sub.topic, span, result, started)
        })
        .collect()
}

/// The span of handling one message on `topic` (`process {topic}`, kind
/// consumer); a root, as MQTT 3.1.1 messages carry no trace context.
/// `Span::none()` when tracing is off.
fn message_span(component: &str, topic: &str, qos: u8) -> tracing::Span {
    if !bv_telemetry::tracing_enabled() {
        return tracing::Span::none();
    }
    tracing::info_span!(
        parent: None,
        "mqtt.process",
        otel.name = %format!("process {topic}"),
        otel.kind = "consumer",
        otel.status_code = tracing::field::Empty,
        otel.status_description = tracing::field::Empty,
        messaging.system = "mqtt",
        messaging.operation.type = "process",
        messaging.destination.name = topic,
        // i64: the OpenTelemetry layer records unsigned integers as text.
        messaging.mqtt.qos = i64::from(qos),
        bv.component = component,
        error.type = tracing::field::Empty,
    )
}

/// The `[[trigger.mqtt]]` trigger type, for `bv`'s list of kinds.
pub const KIND: bv_runtime::TriggerKind = bv_runtime::TriggerKind {
    name: "mqtt",
    build: |runtime| Ok(Box::new(MqttTrigger::new(runtime)?)),
};

#[async_trait::async_trait]
impl bv_runtime::Trigger for MqttTrigger {
    fn kind(&self) -> &'static str {
        KIND.name
    }

    fn listing(&self) -> Vec<bv_runtime::Listed> {
        use bv_runtime::Listed;
        self.topics()
            .into_iter()
            .map(|(topic, component)| Listed::new(component, format!("mqtt topic {topic}")))
            .collect()
    }

    async fn run(self: Box<Self>, stop: CancellationToken) -> anyhow::Result<bv_runtime::Drained> {
        MqttTrigger::run(*self, stop).await?;
        Ok(bv_runtime::Drained::Complete)
    }
}
