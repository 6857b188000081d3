//! Where a subscription's events go: a component's `handle-event`, or a
//! best-effort mirror on Redis or MQTT.

use std::sync::Arc;
use std::time::Duration;

use bv_runtime::trigger::instantiate_span;
use bv_runtime::{AppRuntime, ComponentRuntime};
use tracing::Instrument as _;

mod bindings {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "bitvelocity:host/postgres-trigger-host",
        exports: { default: async },
    });
}

use bindings::bitvelocity::events::types::{Delivery, Error as HandlerError};
pub(crate) use bindings::PostgresTriggerHostPre;

/// One event read from the outbox.
#[derive(Debug, Clone)]
pub struct OutboxEvent {
    /// Its position: `outbox.seq`.
    pub seq: i64,
    /// Its position: the writing transaction (`outbox.tx`, as text).
    pub tx: String,
    /// The event id.
    pub id: String,
    /// Its `source`.
    pub source: String,
    /// Its `type`.
    pub ty: String,
    /// Its `subject`.
    pub subject: Option<String>,
    /// The CloudEvent, JSON.
    pub json: String,
}

/// How one attempt ended.
#[derive(Debug)]
pub enum Attempt {
    /// Handled; move on.
    Ok,
    /// Worth retrying (handler error, trap, timeout, connection failure).
    Retry {
        /// The metric outcome: `error`, `trap` or `timeout`.
        outcome: &'static str,
        /// What went wrong.
        error: String,
    },
    /// Never worth retrying: dead-letter now.
    Reject(String),
}

/// A delivery target.
pub enum Sink {
    /// A component's `handle-event` export, in a fresh instance per event.
    Component {
        /// The loaded component.
        component: Arc<ComponentRuntime>,
        /// Its instance-pre for the event-handler world.
        pre: PostgresTriggerHostPre<bv_runtime::InstanceState>,
        /// Its request timeout.
        timeout: Duration,
    },
    /// PUBLISH to a Redis channel.
    Redis {
        /// The server's address (for messages).
        address: String,
        /// The client; connections are made lazily and remade after errors.
        client: redis::Client,
        /// The connection, once made.
        connection: tokio::sync::Mutex<Option<redis::aio::MultiplexedConnection>>,
        /// The channel template.
        channel: String,
    },
    /// Publish to an MQTT topic.
    Mqtt {
        /// Connections, remade after errors.
        app: Arc<bv_factor_outbound_mqtt::MqttApp>,
        /// How to connect.
        options: bv_factor_outbound_mqtt::ConnectOptions,
        /// The topic template.
        topic: String,
        /// The quality of service.
        qos: bv_factor_outbound_mqtt::Qos,
    },
}

impl Sink {
    /// True for a component handler (failures become dead letters); false
    /// for a best-effort mirror (failures are dropped and counted).
    pub fn is_component(&self) -> bool {
        matches!(self, Sink::Component { .. })
    }

    /// Delivers `event` once, under `span` (the attempt's delivery span;
    /// `Span::none()` when tracing is off). A component works under the
    /// span, and gets the event with `traceparent` naming it, so that what
    /// the handler calls or publishes joins the trace.
    pub async fn deliver(
        &self,
        runtime: &AppRuntime,
        subscription: &str,
        event: &OutboxEvent,
        attempt: u32,
        span: &tracing::Span,
    ) -> Attempt {
        match self {
            Sink::Component {
                component,
                pre,
                timeout,
            } => {
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
                let call = async {
                    let mut store = runtime.new_store(component).map_err(|e| format!("{e:#}"))?;
                    store.data().span.set(span.clone());
                    let instance = pre
                        .instantiate_async(&mut store)
                        .instrument(instantiate_span(span, &component.id))
                        .await
                        .map_err(|e| format!("{e:#}"))?;
                    store
                        .run_concurrent(async move |accessor| {
                            instance
                                .bitvelocity_events_inbound_event()
                                .call_handle_event(accessor, delivery)
                                .await
                        })
                        .await
                        .and_then(|r| r)
                        .map_err(|e| format!("{e:#}"))
                };
                match tokio::time::timeout(*timeout, call).await {
                    Err(_) => Attempt::Retry {
                        outcome: "timeout",
                        error: format!("timed out after {timeout:?}"),
                    },
                    Ok(Err(trap)) => Attempt::Retry {
                        outcome: "trap",
                        error: format!("trap: {trap}"),
                    },
                    Ok(Ok(Ok(()))) => Attempt::Ok,
                    Ok(Ok(Err(HandlerError::Retry(e)))) => Attempt::Retry {
                        outcome: "error",
                        error: e,
                    },
                    Ok(Ok(Err(HandlerError::Reject(e)))) => Attempt::Reject(e),
                }
            }
            Sink::Redis {
                address,
                client,
                connection,
                channel,
            } => {
                let channel = crate::config::render_destination(
                    channel,
                    &event.ty,
                    event.subject.as_deref(),
                    &event.source,
                );
                let mut slot = connection.lock().await;
                if slot.is_none() {
                    let connect = client.get_multiplexed_async_connection();
                    match tokio::time::timeout(Duration::from_secs(5), connect).await {
                        Ok(Ok(c)) => *slot = Some(c),
                        Ok(Err(e)) => {
                            return Attempt::Retry {
                                outcome: "error",
                                error: format!("connecting to {address}: {e}"),
                            }
                        }
                        Err(_) => {
                            return Attempt::Retry {
                                outcome: "timeout",
                                error: format!("connecting to {address}: timed out"),
                            }
                        }
                    }
                }
                let conn = slot.as_mut().expect("connected above");
                let mut cmd = redis::cmd("PUBLISH");
                cmd.arg(&channel).arg(&event.json);
                let publish = cmd.query_async::<i64>(conn);
                match tokio::time::timeout(Duration::from_secs(5), publish).await {
                    Ok(Ok(_)) => Attempt::Ok,
                    Ok(Err(e)) => {
                        *slot = None;
                        Attempt::Retry {
                            outcome: "error",
                            error: format!("PUBLISH {channel}: {e}"),
                        }
                    }
                    Err(_) => {
                        *slot = None;
                        Attempt::Retry {
                            outcome: "timeout",
                            error: format!("PUBLISH {channel}: timed out"),
                        }
                    }
                }
            }
            Sink::Mqtt {
                app,
                options,
                topic,
                qos,
            } => {
                let topic = crate::config::render_destination(
                    topic,
                    &event.ty,
                    event.subject.as_deref(),
                    &event.source,
                );
                let publisher = match app.connect(options.clone()).await {
                    Ok(p) => p,
                    Err(e) => {
                        return Attempt::Retry {
                            outcome: "error",
                            error: format!("connecting to {}: {e}", options.address),
                        }
                    }
                };
                match publisher
                    .publish(&topic, event.json.clone().into_bytes(), *qos)
                    .await
                {
                    Ok(()) => Attempt::Ok,
                    Err(e) => Attempt::Retry {
                        outcome: "error",
                        error: format!("publishing to {topic}: {e}"),
                    },
                }
            }
        }
    }
}

/// The span of one delivery attempt of `event` to `subscription`
/// (`process {type}`, kind consumer, OpenTelemetry messaging conventions),
/// a child of the span named by the event's `traceparent` when it has one,
/// a root otherwise; `Span::none()` when tracing is off.
pub fn delivery_span(
    subscription: &str,
    component: &str,
    event: &OutboxEvent,
    attempt: u32,
) -> tracing::Span {
    if !bv_telemetry::tracing_enabled() {
        return tracing::Span::none();
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
    bv_telemetry::set_remote_parent(&span, traceparent_of(&event.json).as_deref());
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
        assert!(instantiate_span(&tracing::Span::none(), "c").is_none());
    }
}
