//! The rumqttc-backed [`Connector`]: one [`AsyncClient`] and a task that
//! drives its [`EventLoop`] per connection.
//!
//! rumqttc does not say which `publish` call got which packet id, so the
//! driver infers it: publish requests enter rumqttc's request channel in the
//! order their waiters are queued (both happen under one lock), and rumqttc
//! assigns ids in the order it takes requests from that channel, announcing
//! each as `Outgoing::Publish(pkid)`. The driver pairs each announcement with
//! the oldest queued waiter and completes it on the matching PUBACK (QoS 1)
//! or PUBCOMP (QoS 2).
//!
//! That pairing only holds while rumqttc never re-sends on its own, which it
//! does after a reconnect. So a connection here is one network session: on
//! the first network error the driver stops, fails every waiting publish
//! ("connection lost", so the guest knows the message may not have arrived),
//! and the connection reports itself closed; the next `open` makes a new one.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event, EventLoop, MqttOptions, Outgoing,
    Packet, QoS, TlsConfiguration, Transport,
};
use tokio::sync::oneshot;

use crate::{Address, ConnectOptions, Connector, MqttError, Publisher, Qos};

/// Opens real MQTT connections with rumqttc.
#[derive(Clone, Debug)]
pub struct RumqttcConnector {
    /// How long TCP (and TLS) connect plus CONNECT/CONNACK may take.
    pub connect_timeout: Duration,
    /// How long a QoS 1/2 publish waits for the broker's acknowledgement.
    pub ack_timeout: Duration,
}

impl Default for RumqttcConnector {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            ack_timeout: Duration::from_secs(10),
        }
    }
}

/// rumqttc options for `address` with the given credentials (no credentials
/// when `username` is empty, as Spin's MQTT plugin does) and keep-alive;
/// `mqtts` uses TLS with the webpki root certificates. Shared with the MQTT
/// trigger so both sides speak to brokers the same way.
pub fn mqtt_options(
    address: &Address,
    client_id: &str,
    username: &str,
    password: &str,
    keep_alive: Duration,
) -> Result<MqttOptions, MqttError> {
    let mut options = MqttOptions::new(client_id, address.host.clone(), address.port);
    // rumqttc rejects keep-alives below one second (other than zero, which
    // turns keep-alive off); MQTT's field is 16 bits.
    let keep_alive = match keep_alive.as_secs() {
        0 => Duration::ZERO,
        s => Duration::from_secs(s.min(u16::MAX as u64)),
    };
    options.set_keep_alive(keep_alive);
    if !username.is_empty() {
        options.set_credentials(username, password);
    }
    if address.tls {
        options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
            Arc::new(tls_config()?),
        )));
    }
    Ok(options)
}

fn tls_config() -> Result<rustls::ClientConfig, MqttError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| MqttError::Connect(format!("TLS setup: {e}")))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(config)
}

/// Makes `secs` whole seconds for rumqttc's network timeout (at least 1).
pub(crate) fn whole_secs(d: Duration) -> u64 {
    d.as_secs_f64().ceil().max(1.0) as u64
}

#[async_trait]
impl Connector for RumqttcConnector {
    async fn connect(&self, options: &ConnectOptions) -> Result<Arc<dyn Publisher>, MqttError> {
        let mqtt = mqtt_options(
            &options.address,
            &options.client_id,
            &options.username,
            &options.password,
            options.keep_alive,
        )?;
        let (client, mut eventloop) = AsyncClient::new(mqtt, 64);
        let mut network = eventloop.network_options();
        network.set_connection_timeout(whole_secs(self.connect_timeout));
        eventloop.set_network_options(network);

        // The first poll connects and returns the CONNACK (rumqttc turns a
        // refusal into an error); a broker that accepts TCP but never
        // answers is cut off by the timeout.
        match tokio::time::timeout(self.connect_timeout, eventloop.poll()).await {
            Ok(Ok(Event::Incoming(Packet::ConnAck(ack))))
                if ack.code == ConnectReturnCode::Success => {}
            Ok(Ok(other)) => {
                return Err(MqttError::Connect(format!(
                    "unexpected first packet from the broker: {other:?}"
                )))
            }
            Ok(Err(e)) => return Err(MqttError::Connect(e.to_string())),
            Err(_) => {
                return Err(MqttError::Connect(format!(
                    "the broker did not accept the connection within {:?}",
                    self.connect_timeout
                )))
            }
        }

        let tracker = Arc::new(Mutex::new(Tracker::default()));
        let driver = tokio::spawn(drive(eventloop, tracker.clone(), options.address.clone()));
        Ok(Arc::new(RumqttcPublisher {
            client,
            tracker,
            order: tokio::sync::Mutex::new(()),
            ack_timeout: self.ack_timeout,
            driver: driver.abort_handle(),
        }))
    }
}

type Waiter = oneshot::Sender<Result<(), String>>;

/// Publishes waiting for their acknowledgement.
#[derive(Default)]
struct Tracker {
    /// Set once the connection is gone, with the reason.
    closed: Option<String>,
    /// Sent to rumqttc but not yet given a packet id, oldest first.
    queued: VecDeque<Waiter>,
    /// Given a packet id, waiting for PUBACK/PUBCOMP. A list per id because
    /// rumqttc may reuse a QoS 2 id after PUBREC, before PUBCOMP.
    inflight: HashMap<u16, VecDeque<Waiter>>,
    /// A publish rumqttc held back because its id was still in use; it is
    /// announced again (as `Outgoing::Publish`) once that id is acked.
    collided: Option<(u16, Waiter)>,
}

impl Tracker {
    fn sent(&mut self, pkid: u16) {
        let waiter = match self.collided.take() {
            Some((id, waiter)) if id == pkid => Some(waiter),
            other => {
                self.collided = other;
                self.queued.pop_front()
            }
        };
        if let Some(waiter) = waiter {
            self.inflight.entry(pkid).or_default().push_back(waiter);
        }
    }

    fn collided(&mut self, pkid: u16) {
        if let Some(waiter) = self.queued.pop_front() {
            self.collided = Some((pkid, waiter));
        }
    }

    fn acked(&mut self, pkid: u16) {
        if let Some(waiters) = self.inflight.get_mut(&pkid) {
            if let Some(waiter) = waiters.pop_front() {
                let _ = waiter.send(Ok(()));
            }
            if waiters.is_empty() {
                self.inflight.remove(&pkid);
            }
        }
    }

    fn close(&mut self, reason: String) {
        let waiters = self
            .queued
            .drain(..)
            .chain(self.inflight.drain().flat_map(|(_, w)| w))
            .chain(self.collided.take().map(|(_, w)| w));
        for waiter in waiters {
            let _ = waiter.send(Err(reason.clone()));
        }
        self.closed = Some(reason);
    }
}

async fn drive(mut eventloop: EventLoop, tracker: Arc<Mutex<Tracker>>, address: Address) {
    loop {
        let event = eventloop.poll().await;
        let mut t = tracker.lock().unwrap_or_else(|p| p.into_inner());
        match event {
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) if pkid != 0 => t.sent(pkid),
            Ok(Event::Outgoing(Outgoing::AwaitAck(pkid))) => t.collided(pkid),
            Ok(Event::Incoming(Packet::PubAck(ack))) => t.acked(ack.pkid),
            Ok(Event::Incoming(Packet::PubComp(comp))) => t.acked(comp.pkid),
            Ok(_) => {}
            Err(ConnectionError::RequestsDone) => {
                t.close("the connection was closed".into());
                return;
            }
            Err(e) => {
                tracing::warn!(address = %address, error = %e, "outbound MQTT connection lost");
                t.close(format!("connection lost: {e}"));
                return;
            }
        }
    }
}

/// One live MQTT session (see the module docs).
struct RumqttcPublisher {
    client: AsyncClient,
    tracker: Arc<Mutex<Tracker>>,
    /// Keeps "queue the waiter" and "send the request" in the same order
    /// across concurrent publishers.
    order: tokio::sync::Mutex<()>,
    ack_timeout: Duration,
    driver: tokio::task::AbortHandle,
}

impl Drop for RumqttcPublisher {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

fn to_qos(qos: Qos) -> QoS {
    match qos {
        Qos::AtMostOnce => QoS::AtMostOnce,
        Qos::AtLeastOnce => QoS::AtLeastOnce,
        Qos::ExactlyOnce => QoS::ExactlyOnce,
    }
}

#[async_trait]
impl Publisher for RumqttcPublisher {
    async fn publish(&self, topic: &str, payload: Vec<u8>, qos: Qos) -> Result<(), MqttError> {
        let (tx, rx) = oneshot::channel();
        {
            let _order = self.order.lock().await;
            {
                let mut t = self.tracker.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(reason) = &t.closed {
                    return Err(MqttError::Publish(reason.clone()));
                }
                if qos != Qos::AtMostOnce {
                    t.queued.push_back(tx);
                }
            }
            if let Err(e) = self
                .client
                .publish(topic, to_qos(qos), false, payload)
                .await
            {
                if qos != Qos::AtMostOnce {
                    // Still ours: nobody else queues while `order` is held
                    // (a concurrent close may already have taken it).
                    self.tracker
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .queued
                        .pop_back();
                }
                return Err(MqttError::Publish(e.to_string()));
            }
        }
        if qos == Qos::AtMostOnce {
            return Ok(());
        }
        match tokio::time::timeout(self.ack_timeout, rx).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(reason))) => Err(MqttError::Publish(reason)),
            Ok(Err(_)) => Err(MqttError::Publish("the connection was closed".into())),
            Err(_) => Err(MqttError::Publish(format!(
                "the broker did not acknowledge the message within {:?}",
                self.ack_timeout
            ))),
        }
    }

    fn is_closed(&self) -> bool {
        self.tracker
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .closed
            .is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiter() -> (Waiter, oneshot::Receiver<Result<(), String>>) {
        oneshot::channel()
    }

    #[test]
    fn acks_complete_the_publish_that_got_the_id() {
        let mut t = Tracker::default();
        let (a, mut ra) = waiter();
        let (b, mut rb) = waiter();
        t.queued.push_back(a);
        t.queued.push_back(b);
        t.sent(1);
        t.sent(2);
        t.acked(2);
        assert_eq!(rb.try_recv().unwrap(), Ok(()));
        assert!(ra.try_recv().is_err());
        t.acked(1);
        assert_eq!(ra.try_recv().unwrap(), Ok(()));
        assert!(t.inflight.is_empty());
    }

    #[test]
    fn a_collided_publish_keeps_its_waiter() {
        let mut t = Tracker::default();
        let (a, mut ra) = waiter();
        let (b, mut rb) = waiter();
        t.queued.push_back(a);
        t.sent(1);
        t.queued.push_back(b);
        t.collided(1);
        t.acked(1);
        assert_eq!(ra.try_recv().unwrap(), Ok(()));
        t.sent(1);
        t.acked(1);
        assert_eq!(rb.try_recv().unwrap(), Ok(()));
    }

    #[test]
    fn close_fails_every_waiter() {
        let mut t = Tracker::default();
        let (a, mut ra) = waiter();
        let (b, mut rb) = waiter();
        t.queued.push_back(a);
        t.sent(7);
        t.queued.push_back(b);
        t.close("gone".into());
        assert_eq!(ra.try_recv().unwrap(), Err("gone".into()));
        assert_eq!(rb.try_recv().unwrap(), Err("gone".into()));
        assert!(t.closed.is_some());
    }
}
