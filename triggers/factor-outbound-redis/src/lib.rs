//! `spin:redis/redis@3.0.0` (outbound Redis) for `bv`.
//!
//! Spin opens a new TCP connection for every `connection.open`, so a request
//! that touches Redis pays a connect (and the server accumulates short-lived
//! clients). Here [`Pool`], the real [`Connector`], keeps one multiplexed
//! [`ConnectionManager`](redis::aio::ConnectionManager) per address, made on
//! first use and shared by every request and instance of the application; it
//! pipelines concurrent commands over one socket and reconnects by itself
//! after the server restarts. A guest's `connection` is only a handle on it.
//! [`RedisApp`] is the per-application state, [`RedisInstance`] the
//! per-instance state; the I/O sits behind [`Connector`] and [`Commands`].
//!
//! Every `open` is checked against the component's `allowed_outbound_hosts`
//! (`redis://` / `rediss://` entries); a denied address is reported to the
//! guest as `error::invalid-address`, as Spin does, and logged. The first
//! connect to an address is bounded by a timeout so that a dead server fails
//! the request instead of hanging it.

mod convert;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bv_capability::{bv_faults, ComponentFaults};
use bv_outbound_networking::{AllowedHosts, OutboundUrl};
use bv_telemetry::CurrentSpan;
use redis::aio::ConnectionManager;
use tokio::sync::OnceCell;
use tracing::Instrument as _;
use wasmtime::component::{Accessor, HasData, Linker, Resource, ResourceTable};

mod bindings {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "bitvelocity:host/redis-host",
        imports: { default: store | trappable },
        with: { "spin:redis/redis.connection": crate::Connection },
    });
}

use bindings::spin::redis::redis as wit;
use wit::{Error as WitError, RedisParameter, RedisResult};

/// How long the first connection to an address may take by default.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one command may wait for its reply by default.
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);
/// Most connection handles one instance may hold at once.
const MAX_OPEN_CONNECTIONS: usize = 256;

type Slot = Arc<OnceCell<ConnectionManager>>;

/// Runs commands on one address's shared connection. The real one wraps a
/// [`ConnectionManager`]; tests swap it.
#[async_trait]
pub trait Commands: Send + Sync {
    /// Sends `cmd` and returns its reply (a server error reply is an `Err`).
    async fn run(&self, cmd: &redis::Cmd) -> redis::RedisResult<redis::Value>;
}

/// Opens the shared connection of an address. The real one is [`Pool`];
/// tests swap it.
#[async_trait]
pub trait Connector: Send + Sync {
    /// The connection to `address` (already checked against the allow-list).
    async fn connect(&self, address: &str) -> Result<Arc<dyn Commands>, WitErrorKind>;
}

/// Per-application state: what opens connections.
pub struct RedisApp {
    connector: Arc<dyn Connector>,
}

impl Default for RedisApp {
    fn default() -> Self {
        Self::new(Arc::new(Pool::default()))
    }
}

impl RedisApp {
    /// An application whose connections `connector` opens.
    pub fn new(connector: Arc<dyn Connector>) -> Self {
        Self { connector }
    }

    /// The per-instance state of the instance `ctx` describes: limited to its
    /// allow-list; command spans are children of its span.
    pub fn instance(self: &Arc<Self>, ctx: &bv_capability::InstanceContext<'_>) -> RedisInstance {
        RedisInstance {
            app: self.clone(),
            allowed_hosts: ctx.allowed_hosts.clone(),
            table: ResourceTable::new(),
            open: 0,
            span: ctx.span.clone(),
            faults: ctx.faults.clone(),
        }
    }

    /// The shared connection to `address`.
    pub async fn connection(&self, address: &str) -> Result<Arc<dyn Commands>, WitErrorKind> {
        self.connector.connect(address).await
    }
}

/// The real [`Connector`]: the shared connection of every address used so
/// far.
pub struct Pool {
    pool: Mutex<HashMap<String, Slot>>,
    connect_timeout: Duration,
    response_timeout: Duration,
}

impl Default for Pool {
    fn default() -> Self {
        Self::new(DEFAULT_CONNECT_TIMEOUT, DEFAULT_RESPONSE_TIMEOUT)
    }
}

impl Pool {
    /// An empty pool whose connects give up after `connect_timeout` and whose
    /// commands give up after `response_timeout`.
    pub fn new(connect_timeout: Duration, response_timeout: Duration) -> Self {
        Self {
            pool: Mutex::new(HashMap::new()),
            connect_timeout,
            response_timeout,
        }
    }

    /// Number of addresses with a live shared connection (for tests and
    /// diagnostics).
    pub fn pooled(&self) -> usize {
        self.pool
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|slot| slot.initialized())
            .count()
    }

    /// The shared connection to `address`, connecting on first use. A failed
    /// connect is not remembered: the next `open` tries again.
    pub async fn manager(&self, address: &str) -> Result<ConnectionManager, WitErrorKind> {
        let client = redis::Client::open(address)
            .map_err(|e| WitErrorKind::InvalidAddress(format!("invalid redis address: {e}")))?;
        let slot = self
            .pool
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(address.to_string())
            .or_default()
            .clone();
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(self.connect_timeout)
            .set_response_timeout(self.response_timeout)
            .set_number_of_retries(0);
        let timeout = self.connect_timeout;
        slot.get_or_try_init(|| async move {
            // The outer timeout also bounds DNS and the handshake.
            match tokio::time::timeout(
                timeout + Duration::from_millis(500),
                ConnectionManager::new_with_config(client, config),
            )
            .await
            {
                Ok(Ok(conn)) => Ok(conn),
                Ok(Err(e)) => Err(WitErrorKind::Other(format!("redis connect: {e}"))),
                Err(_) => Err(WitErrorKind::Other(format!(
                    "redis connect: timed out after {timeout:?}"
                ))),
            }
        })
        .await
        .cloned()
    }
}

#[async_trait]
impl Connector for Pool {
    async fn connect(&self, address: &str) -> Result<Arc<dyn Commands>, WitErrorKind> {
        Ok(Arc::new(Shared(self.manager(address).await?)))
    }
}

/// One address's shared connection.
struct Shared(ConnectionManager);

#[async_trait]
impl Commands for Shared {
    /// When the shared connection turns out to be dead (the server restarted
    /// since it was last used), the manager starts reconnecting and the
    /// command is tried once more, so that a request after a restart does
    /// not fail just because it was the first to notice. Only errors that
    /// mean the command could not be written (the connection was already
    /// gone) are retried.
    async fn run(&self, cmd: &redis::Cmd) -> redis::RedisResult<redis::Value> {
        let mut conn = self.0.clone();
        match cmd.query_async(&mut conn).await {
            Err(e) if e.is_connection_dropped() || e.is_connection_refusal() => {
                tracing::debug!(error = %e, "outbound redis: connection lost; retrying once");
                cmd.query_async(&mut conn).await
            }
            result => result,
        }
    }
}

/// Why a connection could not be had, before it becomes the WIT error.
#[derive(Debug, Clone)]
pub enum WitErrorKind {
    /// The address does not parse or is not allowed.
    InvalidAddress(String),
    /// Anything else (connect refused, timed out, ...).
    Other(String),
}

/// A guest's `connection`: a handle on the shared connection of its address.
pub struct Connection {
    conn: Arc<dyn Commands>,
}

/// Per-instance state: the component's allow-list and its open handles.
pub struct RedisInstance {
    app: Arc<RedisApp>,
    allowed_hosts: Arc<AllowedHosts>,
    table: ResourceTable,
    open: usize,
    /// Parent of the commands' client spans.
    span: CurrentSpan,
    faults: ComponentFaults,
}

impl RedisInstance {
    /// A client span for `command`; `None` when tracing is off or the
    /// request is not traced.
    fn command_span(&self, command: &str) -> Option<tracing::Span> {
        let parent = self.span.get();
        if !bv_telemetry::records(&parent) {
            return None;
        }
        let command = command.to_ascii_uppercase();
        Some(tracing::info_span!(
            parent: &parent,
            "db.redis",
            otel.name = %command,
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            db.system.name = "redis",
            db.operation.name = %command,
        ))
    }

    fn check_allowed(&self, address: &str) -> Result<(), WitError> {
        let url = OutboundUrl::parse(address).map_err(|e| {
            tracing::warn!(address = %redact(address), error = %e, "outbound redis: invalid address");
            WitError::InvalidAddress
        })?;
        if !matches!(url.scheme.as_str(), "redis" | "rediss") {
            tracing::warn!(address = %redact(address), "outbound redis: not a redis:// or rediss:// address");
            return Err(WitError::InvalidAddress);
        }
        if !self.allowed_hosts.allows(&url) {
            tracing::warn!(
                address = %url,
                "outbound redis: destination not allowed by allowed_outbound_hosts"
            );
            return Err(WitError::InvalidAddress);
        }
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

struct HasRedis;

impl HasData for HasRedis {
    type Data<'a> = &'a mut RedisInstance;
}

type Acc<'a, T> = &'a Accessor<T, HasRedis>;

/// Where one command goes: the shared connection, the command's client
/// span, and the faults switched on for the instance's component.
struct Target {
    conn: Arc<dyn Commands>,
    span: Option<tracing::Span>,
    faults: ComponentFaults,
    instance_span: CurrentSpan,
}

/// The [`Target`] of `command` on the connection behind `this`.
fn conn<T>(
    accessor: Acc<'_, T>,
    this: &Resource<Connection>,
    command: &str,
) -> wasmtime::Result<Target> {
    accessor.with(|mut access| {
        let state = access.get();
        Ok(Target {
            conn: state.table.get(this)?.conn.clone(),
            span: state.command_span(command),
            faults: state.faults.clone(),
            instance_span: state.span.clone(),
        })
    })
}

/// Applies the component's faults to one Redis call; an injected failure
/// is an `other` error.
async fn faults(faults: &ComponentFaults, span: &CurrentSpan) -> Result<(), WitError> {
    faults
        .inject(bv_faults::Capability::Redis, span)
        .await
        .map_err(|e| WitError::Other(e.to_string()))
}

/// Runs the command `name` with the arguments `args` adds on the connection
/// behind `this`, in a client span.
async fn run<T, R: redis::FromRedisValue>(
    accessor: Acc<'_, T>,
    this: &Resource<Connection>,
    name: &str,
    args: impl FnOnce(&mut redis::Cmd),
) -> wasmtime::Result<Result<R, WitError>> {
    let target = conn(accessor, this, name)?;
    let mut cmd = redis::cmd(name);
    args(&mut cmd);
    Ok(query(target, cmd).await)
}

/// Runs one command on the shared connection and converts its reply.
///
/// Inside `span` when tracing is on; a failed command marks it as an error.
async fn query<R: redis::FromRedisValue>(target: Target, cmd: redis::Cmd) -> Result<R, WitError> {
    faults(&target.faults, &target.instance_span).await?;
    let (conn, span) = (target.conn, target.span);
    let run = async move {
        conn.run(&cmd)
            .await
            .and_then(redis::from_owned_redis_value)
            .map_err(convert::error)
    };
    let Some(span) = span else {
        return run.await;
    };
    let result = run.instrument(span.clone()).await;
    if result.is_err() {
        span.record("otel.status_code", "error");
    }
    result
}

impl<T: Send> wit::HostConnectionWithStore<T> for HasRedis {
    async fn open(
        accessor: Acc<'_, T>,
        address: String,
    ) -> wasmtime::Result<Result<Resource<Connection>, WitError>> {
        let (app, checked, injected, span) = accessor.with(|mut access| {
            let state = access.get();
            (
                state.app.clone(),
                state.check_allowed(&address),
                state.faults.clone(),
                state.span.clone(),
            )
        });
        if let Err(e) = checked {
            return Ok(Err(e));
        }
        if let Err(e) = faults(&injected, &span).await {
            return Ok(Err(e));
        }
        let conn = match app.connection(&address).await {
            Ok(conn) => conn,
            Err(WitErrorKind::InvalidAddress(message)) => {
                tracing::warn!(address = %redact(&address), "outbound redis: {message}");
                return Ok(Err(WitError::InvalidAddress));
            }
            Err(WitErrorKind::Other(message)) => {
                tracing::warn!(address = %redact(&address), "outbound redis: {message}");
                return Ok(Err(WitError::Other(message)));
            }
        };
        accessor.with(|mut access| {
            let state = access.get();
            if state.open >= MAX_OPEN_CONNECTIONS {
                return Ok(Err(WitError::TooManyConnections));
            }
            let handle = state.table.push(Connection { conn })?;
            state.open += 1;
            Ok(Ok(handle))
        })
    }

    async fn publish(
        accessor: Acc<'_, T>,
        this: Resource<Connection>,
        channel: String,
        payload: Vec<u8>,
    ) -> wasmtime::Result<Result<(), WitError>> {
        run::<_, i64>(accessor, &this, "PUBLISH", |cmd| {
            cmd.arg(channel).arg(payload);
        })
        .await
        .map(|r| r.map(drop))
    }

    async fn get(
        accessor: Acc<'_, T>,
        this: Resource<Connection>,
        key: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, WitError>> {
        run(accessor, &this, "GET", |cmd| {
            cmd.arg(key);
        })
        .await
    }

    async fn set(
        accessor: Acc<'_, T>,
        this: Resource<Connection>,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), WitError>> {
        run::<_, ()>(accessor, &this, "SET", |cmd| {
            cmd.arg(key).arg(value);
        })
        .await
    }

    async fn incr(
        accessor: Acc<'_, T>,
        this: Resource<Connection>,
        key: String,
    ) -> wasmtime::Result<Result<i64, WitError>> {
        run(accessor, &this, "INCR", |cmd| {
            cmd.arg(key);
        })
        .await
    }

    async fn del(
        accessor: Acc<'_, T>,
        this: Resource<Connection>,
        keys: Vec<String>,
    ) -> wasmtime::Result<Result<u32, WitError>> {
        if keys.is_empty() {
            return Ok(Ok(0));
        }
        run(accessor, &this, "DEL", |cmd| {
            cmd.arg(keys);
        })
        .await
    }

    async fn sadd(
        accessor: Acc<'_, T>,
        this: Resource<Connection>,
        key: String,
        values: Vec<String>,
    ) -> wasmtime::Result<Result<u32, WitError>> {
        if values.is_empty() {
            return Ok(Ok(0));
        }
        run(accessor, &this, "SADD", |cmd| {
            cmd.arg(key).arg(values);
        })
        .await
    }

    async fn smembers(
        accessor: Acc<'_, T>,
        this: Resource<Connection>,
        key: String,
    ) -> wasmtime::Result<Result<Vec<String>, WitError>> {
        run(accessor, &this, "SMEMBERS", |cmd| {
            cmd.arg(key);
        })
        .await
    }

    async fn srem(
        accessor: Acc<'_, T>,
        this: Resource<Connection>,
        key: String,
        values: Vec<String>,
    ) -> wasmtime::Result<Result<u32, WitError>> {
        if values.is_empty() {
            return Ok(Ok(0));
        }
        run(accessor, &this, "SREM", |cmd| {
            cmd.arg(key).arg(values);
        })
        .await
    }

    async fn execute(
        accessor: Acc<'_, T>,
        this: Resource<Connection>,
        command: String,
        arguments: Vec<RedisParameter>,
    ) -> wasmtime::Result<Result<Vec<RedisResult>, WitError>> {
        let target = conn(accessor, &this, &command)?;
        let mut cmd = redis::cmd(&command);
        for argument in arguments {
            match argument {
                RedisParameter::Int64(i) => cmd.arg(i),
                RedisParameter::Binary(b) => cmd.arg(b),
            };
        }
        let value: redis::Value = match query(target, cmd).await {
            Ok(value) => value,
            Err(e) => return Ok(Err(e)),
        };
        Ok(convert::results(value))
    }

    fn drop(
        mut access: wasmtime::component::Access<'_, T, Self>,
        this: Resource<Connection>,
    ) -> wasmtime::Result<()> {
        let state = access.get();
        state.table.delete(this)?;
        state.open -= 1;
        Ok(())
    }
}

impl wit::HostConnection for RedisInstance {}
impl wit::Host for RedisInstance {}

/// The `spin:redis` capability; `connector` opens the connections.
pub struct OutboundRedisCapability {
    /// Opens connections (the real one is [`Pool`]).
    pub connector: Arc<dyn Connector>,
}

impl Default for OutboundRedisCapability {
    fn default() -> Self {
        Self {
            connector: Arc::new(Pool::default()),
        }
    }
}

impl bv_capability::Capability for OutboundRedisCapability {
    type AppState = Arc<RedisApp>;
    type ComponentState = ();
    type InstanceState = RedisInstance;

    fn init(&self, _: &bv_capability::AppContext<'_>) -> anyhow::Result<Self::AppState> {
        Ok(Arc::new(RedisApp::new(self.connector.clone())))
    }

    fn instance(
        &self,
        app: &Self::AppState,
        _: &(),
        ctx: &bv_capability::InstanceContext<'_>,
    ) -> RedisInstance {
        app.instance(ctx)
    }

    fn add_to_linker<T: Send + 'static>(
        linker: &mut Linker<T>,
        get: fn(&mut T) -> &mut RedisInstance,
    ) -> anyhow::Result<()> {
        wit::add_to_linker::<T, HasRedis>(linker, get)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(entries: &[&str]) -> RedisInstance {
        let hosts = AllowedHosts::parse(&entries.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap();
        Arc::new(RedisApp::default()).instance(&bv_capability::InstanceContext {
            id: &Arc::from("test"),
            allowed_hosts: &Arc::new(hosts),
            span: &CurrentSpan::default(),
            faults: &ComponentFaults::none(),
        })
    }

    #[test]
    fn allow_list_is_checked_per_address() {
        let i = instance(&["redis://127.0.0.1:6379"]);
        assert!(i.check_allowed("redis://127.0.0.1:6379").is_ok());
        assert!(i.check_allowed("redis://127.0.0.1").is_ok(), "default port");
        assert!(matches!(
            i.check_allowed("redis://127.0.0.1:6380"),
            Err(WitError::InvalidAddress)
        ));
        assert!(matches!(
            i.check_allowed("http://127.0.0.1:6379"),
            Err(WitError::InvalidAddress)
        ));
        assert!(matches!(
            i.check_allowed("not a url"),
            Err(WitError::InvalidAddress)
        ));
        let none = instance(&[]);
        assert!(none.check_allowed("redis://127.0.0.1:6379").is_err());
    }

    /// Answers every command from a script and records what it was sent.
    struct Scripted {
        sent: Mutex<Vec<String>>,
        reply: fn(&str) -> redis::RedisResult<redis::Value>,
    }

    #[async_trait]
    impl Commands for Scripted {
        async fn run(&self, cmd: &redis::Cmd) -> redis::RedisResult<redis::Value> {
            let words: Vec<String> = cmd
                .args_iter()
                .map(|a| match a {
                    redis::Arg::Simple(b) => String::from_utf8_lossy(b).into_owned(),
                    redis::Arg::Cursor => "<cursor>".into(),
                })
                .collect();
            let line = words.join(" ");
            self.sent.lock().unwrap().push(line.clone());
            (self.reply)(&line)
        }
    }

    struct OneConnection(Arc<Scripted>, Mutex<Vec<String>>);

    #[async_trait]
    impl Connector for OneConnection {
        async fn connect(&self, address: &str) -> Result<Arc<dyn Commands>, WitErrorKind> {
            self.1.lock().unwrap().push(address.to_string());
            Ok(self.0.clone())
        }
    }

    fn reply(line: &str) -> redis::RedisResult<redis::Value> {
        match line {
            "GET cart:1" => Ok(redis::Value::BulkString(b"3 items".to_vec())),
            "INCR name" => Err(redis::RedisError::from((
                redis::ErrorKind::ResponseError,
                "An error was signalled by the server",
                "value is not an integer or out of range".to_string(),
            ))),
            _ => Ok(redis::Value::Nil),
        }
    }

    #[tokio::test]
    async fn a_component_connects_to_listed_addresses_and_replies_are_converted() {
        let app = bv_capability::testing::TestApp::with_tables(
            r#"
            [component.cart]
            source = "cart.wasm"
            allowed_outbound_hosts = ["redis://cache.internal:6379"]
            "#,
        )
        .unwrap();
        let scripted = Arc::new(Scripted {
            sent: Mutex::default(),
            reply,
        });
        let connector = Arc::new(OneConnection(scripted.clone(), Mutex::default()));
        let prepared = app
            .prepare(
                OutboundRedisCapability {
                    connector: connector.clone(),
                },
                "cart",
            )
            .unwrap();
        let cart = prepared.instance();
        assert!(cart.check_allowed("redis://cache.internal:6379").is_ok());
        assert!(matches!(
            cart.check_allowed("redis://cache.internal:6380"),
            Err(WitError::InvalidAddress)
        ));

        let conn = prepared
            .app_state
            .connection("redis://cache.internal:6379")
            .await
            .unwrap();
        let mut get = redis::cmd("GET");
        get.arg("cart:1");
        let target = |conn: &Arc<dyn Commands>| Target {
            conn: conn.clone(),
            span: None,
            faults: ComponentFaults::none(),
            instance_span: CurrentSpan::default(),
        };
        let value: Option<Vec<u8>> = query(target(&conn), get).await.unwrap();
        assert_eq!(value.as_deref(), Some(&b"3 items"[..]));
        let mut incr = redis::cmd("INCR");
        incr.arg("name");
        assert!(matches!(
            query::<i64>(target(&conn), incr).await,
            Err(WitError::TypeError)
        ));
        let mut missing = redis::cmd("GET");
        missing.arg("nothing");
        assert_eq!(
            query::<Option<Vec<u8>>>(target(&conn), missing)
                .await
                .unwrap(),
            None
        );
        assert_eq!(
            *scripted.sent.lock().unwrap(),
            ["GET cart:1", "INCR name", "GET nothing"]
        );
        assert_eq!(
            *connector.1.lock().unwrap(),
            ["redis://cache.internal:6379"]
        );
    }

    #[test]
    fn passwords_are_not_logged() {
        assert_eq!(redact("redis://user:pw@host:1/0"), "redis://***@host:1/0");
        assert_eq!(redact("redis://host"), "redis://host");
    }
}
