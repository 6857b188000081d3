//! Where a subscription's events go: a component's `handle-event`
//! ([`ComponentSink`]: failures become dead letters), or a best-effort
//! mirror on Redis or MQTT ([`FanoutSink`]: failures are dropped and
//! counted).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bv_runtime::trigger::{deliver_warm, within, Failure, WarmInstances};
use bv_runtime::{AppRuntime, ComponentRuntime};
use tokio_postgres::Client;

use crate::metrics::Metrics;

mod bindings {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "bitvelocity:host/postgres-trigger-host",
        exports: { default: async },
    });
}

use bindings::bitvelocity::events::types::{Delivery, Error as HandlerError};
pub(crate) use bindings::{PostgresTriggerHost, PostgresTriggerHostPre};

/// How long a fan-out's connect, and then its publish, may take.
const FANOUT_TIMEOUT: Duration = Duration::from_secs(5);

pub use bv_outbox::OutboxEvent;

/// Why an attempt did not handle its event.
#[derive(Debug)]
pub enum Unhandled {
    /// Worth retrying (handler error, trap, timeout, connection failure).
    Failed(Failure),
    /// Never worth retrying: dead-letter now.
    Rejected(String),
}

impl Unhandled {
    /// The metric outcome: `error`, `trap`, `timeout` or `rejected`.
    pub fn outcome(&self) -> &'static str {
        match self {
            Unhandled::Failed(failure) => failure.outcome().as_str(),
            Unhandled::Rejected(_) => "rejected",
        }
    }

    /// What went wrong, as logged and kept with a dead letter: a handler's
    /// (or a publish's) own words.
    pub fn reason(&self) -> String {
        match self {
            Unhandled::Failed(Failure::Handler(e)) | Unhandled::Rejected(e) => e.clone(),
            Unhandled::Failed(failure) => failure.to_string(),
        }
    }
}

/// How one attempt ended.
pub type Attempt = Result<(), Unhandled>;

/// A delivery target: what one attempt is, and what becomes of an event
/// that could not be delivered.
pub trait Sink: Send + Sync + 'static {
    /// Whether undeliverable events are kept as dead letters (which
    /// `bv events dead-letters retry` sends again) rather than dropped.
    const KEEPS_DEAD_LETTERS: bool;

    /// The span of one attempt of `event` (`Span::none()` where attempts
    /// are not traced).
    fn span(&self, subscription: &str, event: &OutboxEvent, attempt: u32) -> tracing::Span;

    /// Called while the subscription has nothing to deliver: a moment to
    /// let go of what waits for the next event.
    fn idle(&self) {}

    /// Delivers `event` once, under `span`.
    fn deliver(
        &self,
        subscription: &str,
        event: &OutboxEvent,
        attempt: u32,
        span: &tracing::Span,
    ) -> impl Future<Output = Attempt> + Send;

    /// Gives `event` up after `attempts` attempts, the last of which ended
    /// with `why`, under the last attempt's `span`.
    fn give_up(
        &self,
        client: &Client,
        subscription: &str,
        event: &OutboxEvent,
        attempts: i32,
        why: &Unhandled,
        span: &tracing::Span,
    ) -> impl Future<Output = anyhow::Result<()>> + Send;
}

/// A component's `handle-event` export; an event it cannot handle is
/// parked as a dead letter. Under the `reuse` instance policy an instance
/// whose handler succeeded takes the next event (up to
/// `instance_max_requests`); after a failure, and under `strict`, each
/// event gets a fresh one.
pub struct ComponentSink {
    /// The application.
    pub runtime: Arc<AppRuntime>,
    /// The loaded component.
    pub component: Arc<ComponentRuntime>,
    /// Its instance-pre for the event-handler world.
    pub pre: PostgresTriggerHostPre<bv_runtime::InstanceState>,
    /// Instances kept between events.
    pub warm: WarmInstances<PostgresTriggerHost>,
    /// Figures.
    pub metrics: Arc<Metrics>,
}

impl Sink for ComponentSink {
    const KEEPS_DEAD_LETTERS: bool = true;

    fn span(&self, subscription: &str, event: &OutboxEvent, attempt: u32) -> tracing::Span {
        delivery_span(subscription, &self.component.id, event, attempt)
    }

    fn idle(&self) {
        self.warm.reap();
    }

    /// A component works under the span, and gets the event with
    /// `traceparent` naming it, so that what the handler calls or publishes
    /// joins the trace.
    async fn deliver(
        &self,
        subscription: &str,
        event: &OutboxEvent,
        attempt: u32,
        span: &tracing::Span,
    ) -> Attempt {
        let json = match bv_telemetry::traceparent(span) {
            Some(traceparent) => with_traceparent(&event.json, &traceparent),
            None => event.json.clone(),
        };
        let delivery = Delivery {
            event: json,
            offset: event.seq.max(0) as u64,
            attempt,
            subscription: subscription.to_string(),
        };
        let result = deliver_warm(
            &self.runtime,
            &self.component,
            &self.warm,
            span,
            async |store| self.pre.instantiate_async(store).await,
            async |store, instance| {
                store
                    .run_concurrent(async move |accessor| {
                        instance
                            .bitvelocity_events_inbound_event()
                            .call_handle_event(accessor, delivery)
                            .await
                    })
                    .await
                    .and_then(|r| r)
            },
            |handled| handled.is_ok(),
        )
        .await;
        match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(HandlerError::Retry(e))) => Err(Unhandled::Failed(Failure::Handler(e))),
            Ok(Err(HandlerError::Reject(e))) => Err(Unhandled::Rejected(e)),
            Err(failure) => Err(Unhandled::Failed(failure)),
        }
    }

    /// Parks `event` in `bv_events.dead_letters`.
    async fn give_up(
        &self,
        client: &Client,
        subscription: &str,
        event: &OutboxEvent,
        attempts: i32,
        why: &Unhandled,
        span: &tracing::Span,
    ) -> anyhow::Result<()> {
        span.record("bv.event.dead_lettered", true);
        let error = why.reason();
        client
            .execute(
                "INSERT INTO bv_events.dead_letters
                     (subscription, seq, event_id, type, subject, event, attempts, last_error)
                 VALUES ($1, $2, $3, $4, $5, $6::text::jsonb, $7, $8)
                 ON CONFLICT (subscription, seq) DO UPDATE
                 SET attempts = EXCLUDED.attempts, last_error = EXCLUDED.last_error,
                     retry_requested = false, failed_at = now()",
                &[
                    &subscription,
                    &event.seq,
                    &event.id,
                    &event.ty,
                    &event.subject,
                    &event.json,
                    &attempts,
                    &error,
                ],
            )
            .await?;
        self.metrics.dead_lettered(subscription);
        tracing::error!(
            subscription = %subscription,
            event_id = %event.id,
            offset = event.seq,
            "postgres trigger: event parked as a dead letter after {attempts} attempt(s){}: {error}",
            if matches!(why, Unhandled::Rejected(_)) {
                " (rejected by the handler)"
            } else {
                ""
            }
        );
        Ok(())
    }
}

/// A best-effort mirror; an event it cannot publish is dropped and counted.
pub struct FanoutSink {
    /// Where it publishes.
    pub target: Fanout,
    /// Figures.
    pub metrics: Arc<Metrics>,
}

/// Where a fan-out publishes.
pub enum Fanout {
    /// PUBLISH to a Redis channel.
    Redis {
        /// The Redis capability's connections (remade after errors).
        app: Arc<bv_factor_outbound_redis::RedisApp>,
        /// The server's address.
        address: String,
        /// The channel template.
        channel: String,
    },
    /// Publish to an MQTT topic.
    Mqtt {
        /// The MQTT capability's connections (remade after errors).
        app: Arc<bv_factor_outbound_mqtt::MqttApp>,
        /// How to connect.
        options: bv_factor_outbound_mqtt::ConnectOptions,
        /// The topic template.
        topic: String,
        /// The quality of service.
        qos: bv_factor_outbound_mqtt::Qos,
    },
}

impl Sink for FanoutSink {
    const KEEPS_DEAD_LETTERS: bool = false;

    fn span(&self, _: &str, _: &OutboxEvent, _: u32) -> tracing::Span {
        tracing::Span::none()
    }

    async fn deliver(&self, _: &str, event: &OutboxEvent, _: u32, _: &tracing::Span) -> Attempt {
        let destination = |template: &str| {
            crate::config::render_destination(
                template,
                &event.ty,
                event.subject.as_deref(),
                &event.source,
            )
        };
        let failed = |e: String| Unhandled::Failed(Failure::Handler(e));
        match &self.target {
            Fanout::Redis {
                app,
                address,
                channel,
            } => {
                let channel = destination(channel);
                let connect = async {
                    app.connection(address).await.map_err(|e| {
                        use bv_factor_outbound_redis::WitErrorKind::{InvalidAddress, Other};
                        let (InvalidAddress(e) | Other(e)) = e;
                        Failure::Handler(format!("connecting to {address}: {e}"))
                    })
                };
                let connection = within(FANOUT_TIMEOUT, connect)
                    .await
                    .map_err(Unhandled::Failed)?;
                let mut cmd = redis::cmd("PUBLISH");
                cmd.arg(&channel).arg(&event.json);
                let publish = async {
                    connection
                        .run(&cmd)
                        .await
                        .and_then(redis::from_owned_redis_value::<i64>)
                        .map_err(|e| Failure::Handler(format!("PUBLISH {channel}: {e}")))
                };
                within(FANOUT_TIMEOUT, publish)
                    .await
                    .map(drop)
                    .map_err(Unhandled::Failed)
            }
            Fanout::Mqtt {
                app,
                options,
                topic,
                qos,
            } => {
                let topic = destination(topic);
                let publisher = app
                    .connect(options.clone())
                    .await
                    .map_err(|e| failed(format!("connecting to {}: {e}", options.address)))?;
                publisher
                    .publish(&topic, event.json.clone().into_bytes(), *qos)
                    .await
                    .map_err(|e| failed(format!("publishing to {topic}: {e}")))
            }
        }
    }

    /// Drops `event`, counting it.
    async fn give_up(
        &self,
        _: &Client,
        subscription: &str,
        event: &OutboxEvent,
        attempts: i32,
        why: &Unhandled,
        _: &tracing::Span,
    ) -> anyhow::Result<()> {
        self.metrics.fanout_dropped(subscription);
        tracing::error!(
            subscription = %subscription,
            event_id = %event.id,
            offset = event.seq,
            "postgres trigger: fan-out dropped the event after {attempts} attempt(s): {}",
            why.reason()
        );
        Ok(())
    }
}

/// The span of one delivery attempt of `event` to `subscription`
/// (`process {type}`, kind consumer, OpenTelemetry messaging conventions),
/// a child of the span named by the event's `traceparent` when it has one,
/// a root otherwise; `Span::none()` when tracing is off, and the log-only
/// span of a left-out trace when the event's `traceparent` says its trace
/// was not sampled (then nothing under it makes spans either).
pub fn delivery_span(
    subscription: &str,
    component: &str,
    event: &OutboxEvent,
    attempt: u32,
) -> tracing::Span {
    if !bv_telemetry::tracing_enabled() {
        return tracing::Span::none();
    }
    let traceparent = traceparent_of(&event.json);
    if let Some(left_out) = traceparent
        .as_deref()
        .filter(|tp| bv_telemetry::left_out(Some(tp)))
    {
        let span = tracing::info_span!(
            target: bv_telemetry::sampling::UNSAMPLED_TARGET,
            parent: None,
            "bv_events.process",
            bv.component = component,
        );
        bv_telemetry::remember_left_out(&span, left_out.to_string());
        return span;
    }
    let span = tracing::info_span!(
        parent: None,
        "bv_events.process",
        otel.name = %format!("process {}", event.ty),
        otel.kind = "consumer",
        otel.status_code = tracing::field::Empty,
        otel.status_description = tracing::field::Empty,
        messaging.system = "bv_events",
        messaging.operation.type = "process",
        messaging.destination.name = subscription,
        messaging.message.id = %event.id,
        cloudevents.event_type = %event.ty,
        cloudevents.event_source = %event.source,
        cloudevents.event_subject = event.subject.as_deref(),
        bv.component = component,
        bv.event.offset = event.seq,
        // i64: the OpenTelemetry layer records unsigned integers as text.
        bv.event.attempt = i64::from(attempt),
        error.type = tracing::field::Empty,
        bv.event.dead_lettered = tracing::field::Empty,
    );
    bv_telemetry::set_remote_parent(&span, traceparent.as_deref());
    span
}

/// The `traceparent` attribute of a CloudEvent in JSON, if any.
fn traceparent_of(json: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Envelope {
        traceparent: Option<String>,
    }
    serde_json::from_str::<Envelope>(json).ok()?.traceparent
}

/// The CloudEvent `json` with its `traceparent` set to `traceparent`, every
/// other attribute kept as written; a text that is not a JSON object is
/// left as it is (the handler rejects it).
fn with_traceparent(json: &str, traceparent: &str) -> String {
    use serde_json::value::RawValue;
    let Ok(mut attributes) =
        serde_json::from_str::<std::collections::BTreeMap<String, Box<RawValue>>>(json)
    else {
        return json.to_string();
    };
    let value = serde_json::to_string(traceparent)
        .ok()
        .and_then(|v| RawValue::from_string(v).ok());
    let Some(value) = value else {
        return json.to_string();
    };
    attributes.insert("traceparent".into(), value);
    serde_json::to_string(&attributes).unwrap_or_else(|_| json.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_or_adds_the_traceparent() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let event = r#"{"id":"e-1","traceparent":"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01","data":{"a":1,"f":0.30000000000000004,"big":123456789012345678901234567890}}"#;
        assert_eq!(
            traceparent_of(event).as_deref(),
            Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
        );
        let rewritten = with_traceparent(event, tp);
        assert_eq!(traceparent_of(&rewritten).as_deref(), Some(tp));
        let value: serde_json::Value = serde_json::from_str(&rewritten).unwrap();
        assert_eq!(value["data"]["a"], 1);
        assert_eq!(value["id"], "e-1");
        // `data` is kept byte for byte (numbers are not re-printed).
        assert!(
            rewritten.contains(
                r#""data":{"a":1,"f":0.30000000000000004,"big":123456789012345678901234567890}"#
            ),
            "{rewritten}"
        );

        let untraced = r#"{"id":"e-2"}"#;
        assert_eq!(traceparent_of(untraced), None);
        assert_eq!(
            traceparent_of(&with_traceparent(untraced, tp)).as_deref(),
            Some(tp)
        );
        assert_eq!(with_traceparent("[1]", tp), "[1]");
        assert_eq!(traceparent_of("not json"), None);
    }

    #[test]
    fn no_spans_while_tracing_is_off() {
        let event = OutboxEvent {
            seq: 1,
            tx: "1".into(),
            id: "e".into(),
            source: "/s".into(),
            ty: "t.v1".into(),
            subject: None,
            json: "{}".into(),
        };
        assert!(delivery_span("s", "c", &event, 1).is_none());
        assert!(bv_runtime::trigger::instantiate_span(&tracing::Span::none(), "c").is_none());
    }
}

#[cfg(test)]
mod attempt_tests {
    use super::*;

    #[test]
    fn an_unhandled_event_names_its_outcome_and_reason() {
        let retry = Unhandled::Failed(Failure::Handler("database down".into()));
        assert_eq!(
            (retry.outcome(), retry.reason().as_str()),
            ("error", "database down")
        );
        let reject = Unhandled::Rejected("bad price".into());
        assert_eq!(
            (reject.outcome(), reject.reason().as_str()),
            ("rejected", "bad price")
        );
        let trap = Unhandled::Failed(Failure::trap("unreachable"));
        assert_eq!(
            (trap.outcome(), trap.reason().as_str()),
            ("trap", "trap: unreachable")
        );
        let timeout = Unhandled::Failed(Failure::Timeout);
        assert_eq!(timeout.outcome(), "timeout");
    }
}
