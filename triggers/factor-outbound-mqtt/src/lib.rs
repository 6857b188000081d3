//! `spin:mqtt@3.0.0` for `bv`: components publish MQTT messages.
//!
//! Shape: [`MqttApp`] (per application) keeps the open connections,
//! [`MqttInstance`] (per instance) checks `allowed_outbound_hosts` and holds
//! the guest's connection handles. Real I/O sits behind [`Connector`] and
//! [`Publisher`]; [`RumqttcConnector`] is the real one.
//!
//! Quality of service is honoured: at QoS 0 `publish` returns once the
//! message is handed to the connection (fire and forget); at QoS 1 and 2 it
//! returns only after the broker's PUBACK or PUBCOMP, and reports an error
//! if the connection drops or the acknowledgement does not come in time.

mod client;

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bv_capability::{bv_faults, ComponentFaults};
use bv_outbound_networking::{AllowedHosts, OutboundUrl};
use bv_telemetry::CurrentSpan;
use tracing::Instrument as _;
use wasmtime::component::{Accessor, HasData, Linker, Resource, ResourceTable};

pub use client::{mqtt_options, RumqttcConnector};

mod bindings {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "bitvelocity:host/mqtt-host",
        imports: { default: store | trappable },
        with: { "spin:mqtt/mqtt.connection": crate::OpenConnection },
    });
}

use bindings::spin::mqtt::mqtt::{self, Error as WitError, Qos as WitQos};

/// MQTT quality of service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Qos {
    /// QoS 0: sent once, never acknowledged.
    AtMostOnce,
    /// QoS 1: acknowledged with PUBACK; may arrive more than once.
    AtLeastOnce,
    /// QoS 2: four-way handshake ending with PUBCOMP; arrives exactly once.
    ExactlyOnce,
}

/// A failure to connect or publish.
#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    /// The connection could not be made (refused, timed out, bad TLS...).
    #[error("{0}")]
    Connect(String),
    /// The message was not (or not provably) delivered to the broker.
    #[error("{0}")]
    Publish(String),
}

/// A parsed broker address: `mqtt://host[:port][?client_id=id]` or
/// `mqtts://...` (TLS).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Address {
    /// True for `mqtts`.
    pub tls: bool,
    /// Host name or IP (IPv6 without brackets).
    pub host: String,
    /// Port; 1883 (`mqtt`) or 8883 (`mqtts`) when not given.
    pub port: u16,
    /// The `client_id` query parameter, if any.
    pub client_id: Option<String>,
}

impl Address {
    /// Parses `address`; `None` if it is not an `mqtt`/`mqtts` URL with a
    /// host.
    pub fn parse(address: &str) -> Option<Address> {
        let url = url::Url::parse(address).ok()?;
        let tls = match url.scheme() {
            "mqtt" => false,
            "mqtts" => true,
            _ => return None,
        };
        let target = OutboundUrl::parse(address).ok()?;
        let client_id = url
            .query_pairs()
            .find(|(k, _)| k == "client_id")
            .map(|(_, v)| v.into_owned())
            .filter(|v| !v.is_empty());
        Some(Address {
            tls,
            host: target.host,
            port: target.port,
            client_id,
        })
    }

    /// The address as an allow-list checks it.
    pub fn outbound_url(&self) -> OutboundUrl {
        OutboundUrl {
            scheme: if self.tls { "mqtts" } else { "mqtt" }.into(),
            host: self.host.clone(),
            port: self.port,
        }
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.outbound_url().fmt(f)
    }
}

/// What a connection is opened with.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ConnectOptions {
    /// The broker.
    pub address: Address,
    /// The MQTT client id (from the address, or generated).
    pub client_id: String,
    /// User name; empty means no credentials.
    pub username: String,
    /// Password (used only with a user name).
    pub password: String,
    /// Keep-alive interval; zero turns keep-alive off.
    pub keep_alive: Duration,
}

impl fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectOptions")
            .field("address", &self.address)
            .field("client_id", &self.client_id)
            .field("username", &self.username)
            .field("keep_alive", &self.keep_alive)
            .finish_non_exhaustive()
    }
}

/// Opens connections. Implementations do real I/O; tests can swap them.
#[async_trait]
pub trait Connector: Send + Sync {
    /// Connects and waits for the broker to accept (CONNACK).
    async fn connect(&self, options: &ConnectOptions) -> Result<Arc<dyn Publisher>, MqttError>;
}

/// One open connection.
#[async_trait]
pub trait Publisher: Send + Sync {
    /// Publishes, honouring `qos` (see the crate docs).
    async fn publish(&self, topic: &str, payload: Vec<u8>, qos: Qos) -> Result<(), MqttError>;
    /// True once the connection is gone for good; it is then replaced.
    fn is_closed(&self) -> bool;
}

type Slot = Arc<tokio::sync::Mutex<Option<Arc<dyn Publisher>>>>;

/// Per-application state: the connections, shared by every instance.
///
/// Connections are reused per (address, client id, credentials,
/// keep-alive), for three reasons. Opening one costs a TCP (and TLS)
/// handshake plus CONNECT/CONNACK, which would otherwise be paid by every
/// request that publishes. Sharing is safe because this interface only
/// publishes: a connection carries no subscriptions or other state a guest
/// could see or disturb, and each QoS 1/2 publish waits for its own
/// acknowledgement. And a broker allows one live connection per client id,
/// so two instances opening the same `?client_id=` at once would otherwise
/// disconnect each other. A connection that has failed is replaced by the
/// next `open`.
pub struct MqttApp {
    connector: Arc<dyn Connector>,
    connections: Mutex<HashMap<ConnectOptions, Slot>>,
}

/// Client ids generated for addresses without `?client_id=`.
static NEXT_CLIENT: AtomicU64 = AtomicU64::new(0);

impl Default for MqttApp {
    fn default() -> Self {
        Self::new(Arc::new(RumqttcConnector::default()))
    }
}

impl MqttApp {
    /// An application whose connections `connector` opens.
    pub fn new(connector: Arc<dyn Connector>) -> Self {
        Self {
            connector,
            connections: Mutex::new(HashMap::new()),
        }
    }

    /// An open connection for `options`, reusing a live one.
    pub async fn connect(&self, options: ConnectOptions) -> Result<Arc<dyn Publisher>, MqttError> {
        let slot = self
            .connections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(options.clone())
            .or_default()
            .clone();
        // One connect per key at a time; other keys are not held up.
        let mut slot = slot.lock().await;
        if let Some(conn) = slot.as_ref().filter(|c| !c.is_closed()) {
            return Ok(conn.clone());
        }
        let conn = self.connector.connect(&options).await?;
        *slot = Some(conn.clone());
        Ok(conn)
    }

    /// The per-instance state of the instance `ctx` describes: it may reach
    /// what its allow-list lists; publish spans are children of its span.
    pub fn instance(self: &Arc<Self>, ctx: &bv_capability::InstanceContext<'_>) -> MqttInstance {
        MqttInstance {
            app: self.clone(),
            component: ctx.id.clone(),
            allowed: ctx.allowed_hosts.clone(),
            table: ResourceTable::new(),
            open: 0,
            span: ctx.span.clone(),
            faults: ctx.faults.clone(),
        }
    }
}

/// A connection handle, as the guest holds it, with the broker it goes to.
pub struct OpenConnection(Arc<dyn Publisher>, Address);

/// Per-instance state.
pub struct MqttInstance {
    app: Arc<MqttApp>,
    component: Arc<str>,
    allowed: Arc<AllowedHosts>,
    table: ResourceTable,
    open: usize,
    /// Parent of the publishes' client spans.
    span: CurrentSpan,
    faults: ComponentFaults,
}

impl MqttInstance {
    /// A producer span for one publish; `None` when tracing is off or the
    /// request is not traced.
    fn publish_span(&self, broker: &Address, topic: &str, qos: Qos) -> Option<tracing::Span> {
        let parent = self.span.get();
        if !bv_telemetry::records(&parent) {
            return None;
        }
        Some(tracing::info_span!(
            parent: &parent,
            "mqtt.publish",
            otel.name = format!("publish {topic}"),
            otel.kind = "producer",
            otel.status_code = tracing::field::Empty,
            messaging.system = "mqtt",
            messaging.operation.type = "send",
            messaging.destination.name = topic,
            messaging.mqtt.qos = qos as i64,
            server.address = %broker.host,
            server.port = i64::from(broker.port),
            bv.component = &*self.component,
        ))
    }
}

/// Most connection handles one instance may hold at once.
const MAX_OPEN_CONNECTIONS: usize = 64;

impl MqttInstance {
    /// `address` parsed, if it is an MQTT address the component may reach
    /// and the instance may open one more connection.
    fn admit(&self, address: &str) -> Result<Address, WitError> {
        let Some(parsed) = Address::parse(address) else {
            return Err(WitError::InvalidAddress);
        };
        if !self.allowed.allows(&parsed.outbound_url()) {
            tracing::warn!(
                component = %self.component,
                address = %parsed,
                "outbound MQTT connection denied: {parsed} is not in allowed_outbound_hosts"
            );
            return Err(WitError::ConnectionFailed(format!(
                "address {parsed} is not permitted by allowed_outbound_hosts"
            )));
        }
        if self.open >= MAX_OPEN_CONNECTIONS {
            return Err(WitError::TooManyConnections);
        }
        Ok(parsed)
    }
}

/// The `spin:mqtt` capability; `connector` opens the connections.
pub struct OutboundMqttCapability {
    /// Opens connections (the real one is [`RumqttcConnector`]).
    pub connector: Arc<dyn Connector>,
}

impl Default for OutboundMqttCapability {
    fn default() -> Self {
        Self {
            connector: Arc::new(RumqttcConnector::default()),
        }
    }
}

impl bv_capability::Capability for OutboundMqttCapability {
    type AppState = Arc<MqttApp>;
    type ComponentState = ();
    type InstanceState = MqttInstance;

    fn init(&self, _: &bv_capability::AppContext<'_>) -> anyhow::Result<Self::AppState> {
        Ok(Arc::new(MqttApp::new(self.connector.clone())))
    }

    fn instance(
        &self,
        app: &Self::AppState,
        _: &(),
        ctx: &bv_capability::InstanceContext<'_>,
    ) -> MqttInstance {
        app.instance(ctx)
    }

    fn add_to_linker<T: Send + 'static>(
        linker: &mut Linker<T>,
        get: fn(&mut T) -> &mut MqttInstance,
    ) -> anyhow::Result<()> {
        mqtt::add_to_linker::<T, HasMqtt>(linker, get)?;
        Ok(())
    }
}

struct HasMqtt;

impl HasData for HasMqtt {
    type Data<'a> = &'a mut MqttInstance;
}

type Acc<'a, T> = &'a Accessor<T, HasMqtt>;

impl<T: Send> mqtt::HostConnectionWithStore<T> for HasMqtt {
    async fn open(
        accessor: Acc<'_, T>,
        address: String,
        username: String,
        password: String,
        keep_alive_interval_in_secs: u64,
    ) -> wasmtime::Result<Result<Resource<OpenConnection>, WitError>> {
        let (app, component, admitted) = accessor.with(|mut access| {
            let s = access.get();
            (s.app.clone(), s.component.clone(), s.admit(&address))
        });
        let parsed = match admitted {
            Ok(parsed) => parsed,
            Err(e) => return Ok(Err(e)),
        };
        let client_id = parsed.client_id.clone().unwrap_or_else(|| {
            format!(
                "bv-{}-{}",
                std::process::id(),
                NEXT_CLIENT.fetch_add(1, Ordering::Relaxed)
            )
        });
        let options = ConnectOptions {
            address: parsed.clone(),
            client_id,
            username,
            password,
            keep_alive: Duration::from_secs(keep_alive_interval_in_secs),
        };
        let conn = match app.connect(options).await {
            Ok(conn) => conn,
            Err(e) => {
                tracing::warn!(component = %component, address = %parsed, error = %e, "outbound MQTT connection failed");
                return Ok(Err(WitError::ConnectionFailed(e.to_string())));
            }
        };
        accessor.with(|mut access| {
            let s = access.get();
            if s.open >= MAX_OPEN_CONNECTIONS {
                return Ok(Err(WitError::TooManyConnections));
            }
            let handle = s.table.push(OpenConnection(conn, parsed))?;
            s.open += 1;
            Ok(Ok(handle))
        })
    }

    async fn publish(
        accessor: Acc<'_, T>,
        this: Resource<OpenConnection>,
        topic: String,
        payload: Vec<u8>,
        qos: WitQos,
    ) -> wasmtime::Result<Result<(), WitError>> {
        let qos = match qos {
            WitQos::AtMostOnce => Qos::AtMostOnce,
            WitQos::AtLeastOnce => Qos::AtLeastOnce,
            WitQos::ExactlyOnce => Qos::ExactlyOnce,
        };
        let (conn, span, faults, instance_span) =
            accessor.with(|mut access| -> wasmtime::Result<_> {
                let state = access.get();
                let open = state.table.get(&this)?;
                Ok((
                    open.0.clone(),
                    state.publish_span(&open.1, &topic, qos),
                    state.faults.clone(),
                    state.span.clone(),
                ))
            })?;
        if let Err(e) = faults
            .inject(bv_faults::Capability::Mqtt, &instance_span)
            .await
        {
            return Ok(Err(WitError::ConnectionFailed(e.to_string())));
        }
        let publish = conn.publish(&topic, payload, qos);
        let result = match &span {
            Some(span) => publish.instrument(span.clone()).await,
            None => publish.await,
        };
        if let (Some(span), Err(_)) = (&span, &result) {
            span.record("otel.status_code", "error");
        }
        Ok(result.map_err(|e| WitError::Other(e.to_string())))
    }

    fn drop(
        mut access: wasmtime::component::Access<'_, T, Self>,
        this: Resource<OpenConnection>,
    ) -> wasmtime::Result<()> {
        let state = access.get();
        state.table.delete(this)?;
        state.open -= 1;
        Ok(())
    }
}

impl mqtt::HostConnection for MqttInstance {}
impl mqtt::Host for MqttInstance {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn addresses() {
        let a = Address::parse("mqtt://Broker.example:1884?client_id=abc").unwrap();
        assert_eq!(
            a,
            Address {
                tls: false,
                host: "broker.example".into(),
                port: 1884,
                client_id: Some("abc".into())
            }
        );
        let b = Address::parse("mqtts://broker.example").unwrap();
        assert!(b.tls);
        assert_eq!(b.port, 8883);
        assert_eq!(b.client_id, None);
        assert_eq!(Address::parse("mqtt://h").unwrap().port, 1883);
        assert!(Address::parse("http://h").is_none());
        assert!(Address::parse("not a url").is_none());
        assert!(Address::parse("mqtt://").is_none());
    }

    struct Fake {
        connects: AtomicUsize,
        closed: std::sync::atomic::AtomicBool,
    }

    #[async_trait]
    impl Publisher for Fake {
        async fn publish(&self, _: &str, _: Vec<u8>, _: Qos) -> Result<(), MqttError> {
            Ok(())
        }
        fn is_closed(&self) -> bool {
            self.closed.load(Ordering::SeqCst)
        }
    }

    struct FakeConnector(Mutex<Vec<Arc<Fake>>>);

    #[async_trait]
    impl Connector for FakeConnector {
        async fn connect(&self, _: &ConnectOptions) -> Result<Arc<dyn Publisher>, MqttError> {
            let fake = Arc::new(Fake {
                connects: AtomicUsize::new(1),
                closed: Default::default(),
            });
            self.0.lock().unwrap().push(fake.clone());
            Ok(fake)
        }
    }

    fn options(user: &str) -> ConnectOptions {
        ConnectOptions {
            address: Address::parse("mqtt://h").unwrap(),
            client_id: "c".into(),
            username: user.into(),
            password: String::new(),
            keep_alive: Duration::from_secs(30),
        }
    }

    #[test]
    fn a_component_reaches_only_the_brokers_it_lists() {
        let app = bv_capability::testing::TestApp::with_tables(
            r#"
            [component.sensor]
            source = "sensor.wasm"
            allowed_outbound_hosts = ["mqtt://broker.example:1883"]
            "#,
        )
        .unwrap();
        let capability = OutboundMqttCapability {
            connector: Arc::new(FakeConnector(Mutex::new(Vec::new()))),
        };
        let sensor = app.prepare(capability, "sensor").unwrap().instance();
        let admitted = sensor
            .admit("mqtt://broker.example:1883?client_id=s1")
            .unwrap();
        assert_eq!(admitted.client_id.as_deref(), Some("s1"));
        assert!(matches!(
            sensor.admit("mqtt://other.example:1883"),
            Err(WitError::ConnectionFailed(m)) if m.contains("allowed_outbound_hosts")
        ));
        assert!(matches!(
            sensor.admit("http://broker.example:1883"),
            Err(WitError::InvalidAddress)
        ));
    }

    #[tokio::test]
    async fn connections_are_shared_per_options_and_replaced_when_closed() {
        let connector = Arc::new(FakeConnector(Mutex::new(Vec::new())));
        let app = MqttApp::new(connector.clone());
        app.connect(options("a")).await.unwrap();
        app.connect(options("a")).await.unwrap();
        assert_eq!(connector.0.lock().unwrap().len(), 1);
        app.connect(options("b")).await.unwrap();
        assert_eq!(connector.0.lock().unwrap().len(), 2);
        connector.0.lock().unwrap()[0]
            .closed
            .store(true, Ordering::SeqCst);
        app.connect(options("a")).await.unwrap();
        let made = connector.0.lock().unwrap();
        assert_eq!(made.len(), 3);
        assert_eq!(made[2].connects.load(Ordering::SeqCst), 1);
    }
}
