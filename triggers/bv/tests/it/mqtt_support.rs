//! Native MQTT clients for the MQTT tests (shared by `it` and the
//! broker-restart binary): a subscriber that collects messages and a
//! one-shot publisher, both on rumqttc against the local Mosquitto.

#![allow(dead_code)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};

/// The broker the tests use.
pub const BROKER: &str = "mqtt://127.0.0.1:1883";

/// A name unique to this process and call, for topics and client ids.
pub fn unique(what: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "bvtest-{what}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Collects every message on one topic, resubscribing after reconnects.
pub struct Subscriber {
    received: Arc<Mutex<Vec<Vec<u8>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Subscriber {
    /// Subscribes (QoS 1) and returns once the broker confirmed it.
    pub async fn new(topic: &str) -> Subscriber {
        let mut options = MqttOptions::new(unique("sub"), "127.0.0.1", 1883);
        options.set_keep_alive(Duration::from_secs(5));
        let (client, mut eventloop) = AsyncClient::new(options, 16);
        let received = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let topic = topic.to_string();
        let sink = received.clone();
        let task = tokio::spawn(async move {
            let mut ready = Some(ready_tx);
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        client
                            .try_subscribe(topic.clone(), QoS::AtLeastOnce)
                            .unwrap();
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        if let Some(tx) = ready.take() {
                            let _ = tx.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        sink.lock().unwrap().push(p.payload.to_vec());
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), ready_rx)
            .await
            .expect("subscribing timed out")
            .unwrap();
        Subscriber { received, task }
    }

    /// Everything received so far, as text.
    pub fn messages(&self) -> Vec<String> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .map(|m| String::from_utf8_lossy(m).into_owned())
            .collect()
    }

    /// How often `payload` was received.
    pub fn count(&self, payload: &str) -> usize {
        self.messages().iter().filter(|m| *m == payload).count()
    }

    /// Waits (up to `secs`) until `payload` was received `times` times.
    pub async fn wait_for(&self, payload: &str, times: usize, secs: u64) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        while self.count(payload) < times {
            assert!(
                tokio::time::Instant::now() < deadline,
                "`{payload}` not received {times} time(s) within {secs}s; got {:?}",
                self.messages()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Publishes one message and waits for the broker's acknowledgement (QoS
/// 1/2) or the write (QoS 0). Retries the connection for up to 20 s, so it
/// also serves right after a broker restart.
pub async fn publish(topic: &str, payload: &str, qos: QoS) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match try_publish(topic, payload, qos).await {
            Ok(()) => return,
            Err(e) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "cannot publish: {e}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

async fn try_publish(topic: &str, payload: &str, qos: QoS) -> Result<(), String> {
    let options = MqttOptions::new(unique("pub"), "127.0.0.1", 1883);
    let (client, mut eventloop) = AsyncClient::new(options, 16);
    client
        .publish(topic, qos, false, payload.as_bytes().to_vec())
        .await
        .map_err(|e| e.to_string())?;
    let done = async {
        loop {
            match eventloop.poll().await.map_err(|e| e.to_string())? {
                Event::Incoming(Packet::PubAck(_)) | Event::Incoming(Packet::PubComp(_)) => {
                    return Ok(())
                }
                Event::Outgoing(Outgoing::Publish(_)) if qos == QoS::AtMostOnce => return Ok(()),
                _ => {}
            }
        }
    };
    let result = tokio::time::timeout(Duration::from_secs(5), done)
        .await
        .map_err(|_| "timed out".to_string())?;
    let _ = client.try_disconnect();
    let _ = tokio::time::timeout(Duration::from_millis(200), eventloop.poll()).await;
    result
}

/// Discards the broker's persistent session of `client_id` (connects once
/// with a clean session).
pub async fn drop_session(client_id: &str) {
    let mut options = MqttOptions::new(client_id, "127.0.0.1", 1883);
    options.set_clean_session(true);
    let (client, mut eventloop) = AsyncClient::new(options, 4);
    let _ = tokio::time::timeout(Duration::from_secs(5), eventloop.poll()).await;
    let _ = client.try_disconnect();
    let _ = tokio::time::timeout(Duration::from_millis(200), eventloop.poll()).await;
}

/// A manifest with the `mqtt-handler` component on `topic` (QoS `qos`),
/// the trigger's session under `client_id`.
pub fn handler_app(topic: &str, qos: u8, client_id: &str) -> String {
    r#"spin_manifest_version = 2
[application]
name = "mqtt-trigger-test"

[variables]
broker = { default = "mqtt://127.0.0.1:1883" }
trigger_client = { default = "CLIENT" }

[application.trigger.mqtt]
address = "{{ broker }}?client_id={{ trigger_client }}"
username = ""
password = ""
keep_alive_interval = "5"

[[trigger.mqtt]]
component = "handler"
topic = "TOPIC"
qos = "QOS"

[component.handler]
source = "{wasm:mqtt-handler}"
allowed_outbound_hosts = ["mqtt://127.0.0.1:1883"]

[component.handler.variables]
mqtt_address = "{{ broker }}"
"#
    .replace("CLIENT", client_id)
    .replace("TOPIC", topic)
    .replace("QOS", &qos.to_string())
}
