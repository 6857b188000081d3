//! Where a subscription's events go: a component's `handle-event`, or a
//! best-effort mirror on Redis or MQTT.

use std::sync::Arc;
use std::time::Duration;

use bv_runtime::{AppRuntime, ComponentRuntime};

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

    /// Delivers `event` once.
    pub async fn deliver(
        &self,
        runtime: &AppRuntime,
        subscription: &str,
        event: &OutboxEvent,
        attempt: u32,
    ) -> Attempt {
        match self {
            Sink::Component {
                component,
                pre,
                timeout,
            } => {
                let delivery = Delivery {
                    event: event.json.clone(),
                    offset: event.seq.max(0) as u64,
                    attempt,
                    subscription: subscription.to_string(),
                };
                let call = async {
                    let mut store = runtime.new_store(component).map_err(|e| format!("{e:#}"))?;
                    let instance = pre
                        .instantiate_async(&mut store)
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
