//! `spin:postgres/postgres@4.2.0` for `bv`.
//!
//! Shape: [`PostgresApp`] is per-application state: the [`Connector`] that
//! opens server sessions, by default [`Pools`], one connection pool per
//! address (deadpool-postgres over tokio-postgres), so connections are
//! reused across requests and instances; [`PgComponent`] is per-component
//! state (the component's share of each pool, [`Bulkhead`]);
//! [`PostgresInstance`] is the
//! per-instance state (the component's allow-list and its open connection
//! resources). The real I/O sits behind [`Connector`] and [`Client`], in
//! [`session`]: a `connection` resource holds one pooled server session for
//! its whole life, so `BEGIN … COMMIT` works, and hands it back to the pool
//! clean when it is dropped.
//!
//! Addresses are checked against `allowed_outbound_hosts` before any socket is
//! opened ([`address`]); parameters are always bound by the type the server
//! infers for each placeholder, never spliced into the SQL ([`convert`]);
//! server errors reach the guest as `query-failed(db-error)` with the
//! server's SQLSTATE and message.
// The WIT's error carries a whole server error record (SQLSTATE, message,
// detail, extras); it is returned by value as the generated bindings do.
#![allow(clippy::result_large_err)]

pub mod address;
pub mod convert;
pub mod session;
pub mod session_state;
mod trace;

use std::sync::Arc;

use bv_capability::{bv_faults, ComponentFaults};
use bv_outbound_networking::AllowedHosts;
use bv_telemetry::CurrentSpan;
use wasmtime::component::{
    Accessor, FutureReader, HasData, Linker, Resource, ResourceTable, StreamReader,
};

pub use session::{PoolSettings, Pools, Session};

use async_trait::async_trait;

mod bindings {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "bitvelocity:host/postgres-host",
        // Sync WIT functions are `async` on the host (the calling guest
        // blocks, the host does not); WIT `async func`s get the store.
        imports: { default: async | trappable },
        with: {
            "spin:postgres/postgres.connection": crate::PgConnection,
            "spin:postgres/postgres.connection-builder": crate::PgConnectionBuilder,
        },
    });
}

use bindings::spin::postgres::postgres::{self as pg, Column, DbValue, Error as PgError, RowSet};

/// A `connection` resource as the guest holds it: one server session.
pub struct PgConnection(Arc<dyn Client>);

/// One server session, held by a guest `connection`. The real one is
/// [`Session`]; tests swap it.
#[async_trait]
pub trait Client: Send + Sync {
    /// Runs a query and decodes every row.
    async fn query(
        &self,
        statement: &str,
        params: &[pg::ParameterValue],
    ) -> Result<(Vec<Column>, Vec<Vec<DbValue>>), PgError>;
    /// Runs a command and returns the number of rows it affected.
    async fn execute(&self, statement: &str, params: &[pg::ParameterValue])
        -> Result<u64, PgError>;
}

/// Opens server sessions. The real one is [`Pools`]; tests swap it.
#[async_trait]
pub trait Connector: Send + Sync {
    /// A session at `address`, already parsed (`parsed`) and allowed.
    async fn connect(
        &self,
        address: &str,
        parsed: &address::Address,
    ) -> Result<Arc<dyn Client>, PgError>;

    /// The most sessions one component may hold at one address at once, and
    /// how long an `open` past it waits for one of them to end; `None`: no
    /// bound (a connector with nothing shared to protect).
    fn bulkhead(&self) -> Option<Bulkhead> {
        None
    }
}

/// A per-component bound on the sessions of one address's shared pool, so
/// that a component whose statements slow down or hang (a slow query, a
/// lock, an injected fault) fills its own share and not the whole pool:
/// the other components keep getting connections.
#[derive(Clone, Copy, Debug)]
pub struct Bulkhead {
    /// Sessions one component may hold at one address.
    pub sessions: usize,
    /// How long an `open` past that waits before `connection-failed`.
    pub wait: std::time::Duration,
}

/// A session holding one of its component's bulkhead permits until it goes.
struct Bulkheaded {
    client: Arc<dyn Client>,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

#[async_trait]
impl Client for Bulkheaded {
    async fn query(
        &self,
        statement: &str,
        params: &[pg::ParameterValue],
    ) -> Result<(Vec<Column>, Vec<Vec<DbValue>>), PgError> {
        self.client.query(statement, params).await
    }

    async fn execute(
        &self,
        statement: &str,
        params: &[pg::ParameterValue],
    ) -> Result<u64, PgError> {
        self.client.execute(statement, params).await
    }
}

/// Per-application state: what opens sessions, and the addresses parsed so
/// far (parsing one, with its `tokio_postgres::Config`, costs more than the
/// rest of an `open` from the pool).
pub struct PostgresApp {
    connector: Arc<dyn Connector>,
    parsed: std::sync::Mutex<std::collections::HashMap<String, Arc<address::Address>>>,
}

/// Per-component state, shared by the component's instances: its share of
/// each address's pool ([`Bulkhead`]), by address.
#[derive(Default)]
pub struct PgComponent {
    shares: std::sync::Mutex<std::collections::HashMap<String, Arc<tokio::sync::Semaphore>>>,
}

impl PgComponent {
    /// The component's share of `address`'s sessions, `sessions` permits
    /// the first time.
    fn share(&self, address: &str, sessions: usize) -> Arc<tokio::sync::Semaphore> {
        let mut shares = self.shares.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(share) = shares.get(address) {
            return share.clone();
        }
        let share = Arc::new(tokio::sync::Semaphore::new(sessions));
        shares.insert(address.to_string(), share.clone());
        share
    }
}

/// Most parsed addresses kept; past it the cache starts over, so guests
/// naming ever-new addresses cannot grow it without bound.
const MAX_PARSED_ADDRESSES: usize = 256;

impl PostgresApp {
    /// An application whose sessions `connector` opens.
    pub fn new(connector: Arc<dyn Connector>) -> Self {
        Self {
            connector,
            parsed: Default::default(),
        }
    }

    fn parse(&self, address: &str) -> Result<Arc<address::Address>, PgError> {
        let mut parsed = self.parsed.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(known) = parsed.get(address) {
            return Ok(known.clone());
        }
        let new = Arc::new(
            address::parse(address).map_err(|e| PgError::ConnectionFailed(e.to_string()))?,
        );
        if parsed.len() >= MAX_PARSED_ADDRESSES {
            parsed.clear();
        }
        parsed.insert(address.to_string(), new.clone());
        Ok(new)
    }

    /// Opens a session for `component` (its per-component state `shares`)
    /// at `address`, if `allowed` lists it.
    pub async fn open(
        &self,
        component: &str,
        shares: &PgComponent,
        address: &str,
        allowed: &AllowedHosts,
    ) -> Result<Arc<dyn Client>, PgError> {
        let parsed = self.parse(address)?;
        if let Err(e @ address::AddressError::NotAllowed { .. }) =
            address::check_allowed(&parsed, allowed)
        {
            tracing::warn!(component, error = %e, "postgres connection denied");
            return Err(PgError::ConnectionFailed(e.to_string()));
        }
        let Some(bulkhead) = self.connector.bulkhead() else {
            return self.connector.connect(address, &parsed).await;
        };
        let share = shares.share(address, bulkhead.sessions);
        let permit = match share.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => match tokio::time::timeout(bulkhead.wait, share.acquire_owned()).await {
                Ok(Ok(permit)) => permit,
                _ => {
                    tracing::warn!(
                        component,
                        sessions = bulkhead.sessions,
                        "postgres: the component holds its whole share of the pool"
                    );
                    return Err(PgError::ConnectionFailed(format!(
                        "component `{component}` already holds {} sessions to this database \
                         (its share of the pool) and none ended within {:.1}s",
                        bulkhead.sessions,
                        bulkhead.wait.as_secs_f64()
                    )));
                }
            },
        };
        let client = self.connector.connect(address, &parsed).await?;
        Ok(Arc::new(Bulkheaded {
            client,
            _permit: permit,
        }))
    }
}

/// The `spin:postgres` capability; `connector` opens the sessions.
pub struct OutboundPgCapability {
    /// Opens sessions (the real one is [`Pools`]).
    pub connector: Arc<dyn Connector>,
}

impl Default for OutboundPgCapability {
    fn default() -> Self {
        Self {
            connector: Arc::new(Pools::default()),
        }
    }
}

impl bv_capability::Capability for OutboundPgCapability {
    type AppState = Arc<PostgresApp>;
    type ComponentState = Arc<PgComponent>;
    type InstanceState = PostgresInstance;

    fn init(&self, _: &bv_capability::AppContext<'_>) -> anyhow::Result<Self::AppState> {
        Ok(Arc::new(PostgresApp::new(self.connector.clone())))
    }

    fn instance(
        &self,
        app: &Self::AppState,
        component: &Arc<PgComponent>,
        ctx: &bv_capability::InstanceContext<'_>,
    ) -> PostgresInstance {
        app.instance(component, ctx)
    }

    fn add_to_linker<T: Send + 'static>(
        linker: &mut Linker<T>,
        get: fn(&mut T) -> &mut PostgresInstance,
    ) -> anyhow::Result<()> {
        pg::add_to_linker::<T, HasPg>(linker, get)?;
        Ok(())
    }
}

/// A `connection-builder` resource: an address waiting for `build`.
pub struct PgConnectionBuilder {
    address: String,
    ca_root: Option<String>,
}

/// Most connection and builder resources one instance may hold at once.
const MAX_OPEN: usize = 64;

/// Per-instance state.
pub struct PostgresInstance {
    app: Arc<PostgresApp>,
    component: Arc<str>,
    /// The component's share of each pool.
    shares: Arc<PgComponent>,
    allowed: Arc<AllowedHosts>,
    table: ResourceTable,
    open: usize,
    /// Parent of the statements' client spans.
    span: CurrentSpan,
    faults: ComponentFaults,
}

impl PostgresApp {
    /// The per-instance state of the instance `ctx` describes, of the
    /// component whose state is `component`: it may connect to what its
    /// allow-list lists; statement spans are children of its span.
    pub fn instance(
        self: &Arc<Self>,
        component: &Arc<PgComponent>,
        ctx: &bv_capability::InstanceContext<'_>,
    ) -> PostgresInstance {
        PostgresInstance {
            app: self.clone(),
            component: ctx.id.clone(),
            shares: component.clone(),
            allowed: ctx.allowed_hosts.clone(),
            table: ResourceTable::new(),
            open: 0,
            span: ctx.span.clone(),
            faults: ctx.faults.clone(),
        }
    }
}

impl PostgresInstance {
    fn statement_span(&self, statement: &str) -> Option<tracing::Span> {
        trace::statement_span(&self.span, &self.component, statement)
    }
}

struct HasPg;

impl HasData for HasPg {
    type Data<'a> = &'a mut PostgresInstance;
}

type Acc<'a, T> = &'a Accessor<T, HasPg>;

/// Applies the faults switched on for the instance's component to one
/// Postgres call; an injected failure is a `connection-failed`.
async fn faults(faults: &ComponentFaults, span: &CurrentSpan) -> Result<(), PgError> {
    faults
        .inject(bv_faults::Capability::Postgres, span)
        .await
        .map_err(|e| PgError::ConnectionFailed(e.to_string()))
}

/// The session behind `handle` and a client span for `statement`, once the
/// component's faults let the call through.
async fn session<T>(
    accessor: Acc<'_, T>,
    handle: &Resource<PgConnection>,
    statement: &str,
) -> wasmtime::Result<Result<(Arc<dyn Client>, Option<tracing::Span>), PgError>> {
    let (session, span, injected, current) =
        accessor.with(|mut access| -> wasmtime::Result<_> {
            let state = access.get();
            Ok((
                state.table.get(handle)?.0.clone(),
                state.statement_span(statement),
                state.faults.clone(),
                state.span.clone(),
            ))
        })?;
    Ok(faults(&injected, &current).await.map(|()| (session, span)))
}

/// Opens a pooled session for `address` on behalf of the accessor's instance
/// (allow-list checked first) and stores it as a resource.
async fn open<T>(
    accessor: Acc<'_, T>,
    address: String,
) -> wasmtime::Result<Result<Resource<PgConnection>, PgError>> {
    let (app, component, shares, allowed, full, injected, span) = accessor.with(|mut access| {
        let state = access.get();
        (
            state.app.clone(),
            state.component.clone(),
            state.shares.clone(),
            state.allowed.clone(),
            state.open >= MAX_OPEN,
            state.faults.clone(),
            state.span.clone(),
        )
    });
    if full {
        return Ok(Err(too_many()));
    }
    if let Err(e) = faults(&injected, &span).await {
        return Ok(Err(e));
    }
    let session = match app.open(&component, &shares, &address, &allowed).await {
        Ok(s) => s,
        Err(e) => return Ok(Err(e)),
    };
    accessor.with(|mut access| {
        let state = access.get();
        let handle = state.table.push(PgConnection(session))?;
        state.open += 1;
        Ok(Ok(handle))
    })
}

impl PostgresInstance {
    /// `open`, for the blocking WIT functions that hold `&mut self`.
    async fn open_blocking(
        &mut self,
        address: String,
    ) -> wasmtime::Result<Result<Resource<PgConnection>, PgError>> {
        if self.open >= MAX_OPEN {
            return Ok(Err(too_many()));
        }
        if let Err(e) = faults(&self.faults, &self.span).await {
            return Ok(Err(e));
        }
        let session = match self
            .app
            .open(&self.component, &self.shares, &address, &self.allowed)
            .await
        {
            Ok(s) => s,
            Err(e) => return Ok(Err(e)),
        };
        let handle = self.table.push(PgConnection(session))?;
        self.open += 1;
        Ok(Ok(handle))
    }

    fn session(&self, handle: &Resource<PgConnection>) -> wasmtime::Result<Arc<dyn Client>> {
        Ok(self.table.get(handle)?.0.clone())
    }
}

fn too_many() -> PgError {
    PgError::ConnectionFailed(format!(
        "this instance already holds {MAX_OPEN} open postgres resources"
    ))
}

impl pg::HostConnection for PostgresInstance {
    async fn open(
        &mut self,
        address: String,
    ) -> wasmtime::Result<Result<Resource<PgConnection>, PgError>> {
        self.open_blocking(address).await
    }

    async fn query(
        &mut self,
        this: Resource<PgConnection>,
        statement: String,
        params: Vec<pg::ParameterValue>,
    ) -> wasmtime::Result<Result<RowSet, PgError>> {
        let session = self.session(&this)?;
        if let Err(e) = faults(&self.faults, &self.span).await {
            return Ok(Err(e));
        }
        let span = self.statement_span(&statement);
        Ok(trace::traced(span, session.query(&statement, &params))
            .await
            .map(|(columns, rows)| RowSet { columns, rows }))
    }

    async fn execute(
        &mut self,
        this: Resource<PgConnection>,
        statement: String,
        params: Vec<pg::ParameterValue>,
    ) -> wasmtime::Result<Result<u64, PgError>> {
        let session = self.session(&this)?;
        if let Err(e) = faults(&self.faults, &self.span).await {
            return Ok(Err(e));
        }
        let span = self.statement_span(&statement);
        Ok(trace::traced(span, session.execute(&statement, &params)).await)
    }

    async fn drop(&mut self, this: Resource<PgConnection>) -> wasmtime::Result<()> {
        // Dropping the last reference hands the session back to its pool
        // (rolled back first when it may hold a transaction; see `Session`).
        self.table.delete(this)?;
        self.open -= 1;
        Ok(())
    }
}

impl<T: Send> pg::HostConnectionWithStore<T> for HasPg {
    async fn open_async(
        accessor: Acc<'_, T>,
        address: String,
    ) -> wasmtime::Result<Result<Resource<PgConnection>, PgError>> {
        open(accessor, address).await
    }

    async fn query_async(
        accessor: Acc<'_, T>,
        this: Resource<PgConnection>,
        statement: String,
        params: Vec<pg::ParameterValue>,
    ) -> wasmtime::Result<
        Result<
            (
                Vec<Column>,
                StreamReader<Vec<DbValue>>,
                FutureReader<Result<(), PgError>>,
            ),
            PgError,
        >,
    > {
        let (session, span) = match session(accessor, &this, &statement).await? {
            Ok(s) => s,
            Err(e) => return Ok(Err(e)),
        };
        // Rows are read in full before the stream opens: errors that happen
        // while reading (a conversion, a server error mid-result) then reach
        // the guest as the immediate error rather than a truncated stream.
        let (columns, rows) = match trace::traced(span, session.query(&statement, &params)).await {
            Ok(r) => r,
            Err(e) => return Ok(Err(e)),
        };
        accessor.with(|mut access| {
            let stream = StreamReader::new(&mut access, rows)?;
            let done = FutureReader::new(&mut access, async { Ok::<_, wasmtime::Error>(Ok(())) })?;
            Ok(Ok((columns, stream, done)))
        })
    }

    async fn execute_async(
        accessor: Acc<'_, T>,
        this: Resource<PgConnection>,
        statement: String,
        params: Vec<pg::ParameterValue>,
    ) -> wasmtime::Result<Result<u64, PgError>> {
        let (session, span) = match session(accessor, &this, &statement).await? {
            Ok(s) => s,
            Err(e) => return Ok(Err(e)),
        };
        Ok(trace::traced(span, session.execute(&statement, &params)).await)
    }
}

fn build_checks(builder: &PgConnectionBuilder) -> Result<(), PgError> {
    if builder.ca_root.is_some() {
        // A CA root only matters for TLS, which this host does not offer;
        // say so now rather than connect in plain text to a server the
        // guest meant to verify.
        return Err(PgError::ConnectionFailed(
            "a CA root was set but this host connects without TLS; use sslmode=disable".into(),
        ));
    }
    Ok(())
}

impl pg::HostConnectionBuilder for PostgresInstance {
    async fn new(&mut self, address: String) -> wasmtime::Result<Resource<PgConnectionBuilder>> {
        if self.open >= MAX_OPEN {
            wasmtime::bail!("this instance already holds {MAX_OPEN} open postgres resources");
        }
        let handle = self.table.push(PgConnectionBuilder {
            address,
            ca_root: None,
        })?;
        self.open += 1;
        Ok(handle)
    }

    async fn set_ca_root(
        &mut self,
        this: Resource<PgConnectionBuilder>,
        certificate: String,
    ) -> wasmtime::Result<Result<(), PgError>> {
        self.table.get_mut(&this)?.ca_root = Some(certificate);
        Ok(Ok(()))
    }

    async fn build(
        &mut self,
        this: Resource<PgConnectionBuilder>,
    ) -> wasmtime::Result<Result<Resource<PgConnection>, PgError>> {
        match build_checks(self.table.get(&this)?) {
            Ok(()) => {
                let address = self.table.get(&this)?.address.clone();
                self.open_blocking(address).await
            }
            Err(e) => Ok(Err(e)),
        }
    }

    async fn drop(&mut self, this: Resource<PgConnectionBuilder>) -> wasmtime::Result<()> {
        self.table.delete(this)?;
        self.open -= 1;
        Ok(())
    }
}

impl<T: Send> pg::HostConnectionBuilderWithStore<T> for HasPg {
    async fn build_async(
        accessor: Acc<'_, T>,
        this: Resource<PgConnectionBuilder>,
    ) -> wasmtime::Result<Result<Resource<PgConnection>, PgError>> {
        let checked = accessor.with(|mut access| -> wasmtime::Result<_> {
            let b = access.get().table.get(&this)?;
            Ok(build_checks(b).map(|()| b.address.clone()))
        })?;
        match checked {
            Ok(address) => open(accessor, address).await,
            Err(e) => Ok(Err(e)),
        }
    }
}

impl pg::Host for PostgresInstance {}

#[cfg(test)]
mod tests {
    use super::*;
    use bv_capability::testing::TestApp;
    use pg::HostConnection as _;
    use std::sync::Mutex;

    const MANIFEST: &str = r#"
        [component.orders]
        source = "orders.wasm"
        allowed_outbound_hosts = ["postgres://db.internal:5432"]
    "#;

    /// Records what reaches the server and answers one row per query.
    #[derive(Default)]
    struct Recorder {
        connects: Mutex<Vec<String>>,
        statements: Arc<Mutex<Vec<String>>>,
    }

    struct RecordingClient(Arc<Mutex<Vec<String>>>);

    #[async_trait]
    impl Client for RecordingClient {
        async fn query(
            &self,
            statement: &str,
            _: &[pg::ParameterValue],
        ) -> Result<(Vec<Column>, Vec<Vec<DbValue>>), PgError> {
            self.0.lock().unwrap().push(statement.to_string());
            Ok((
                vec![Column {
                    name: "n".into(),
                    data_type: pg::DbDataType::Int32,
                }],
                vec![vec![DbValue::Int32(7)]],
            ))
        }

        async fn execute(&self, statement: &str, _: &[pg::ParameterValue]) -> Result<u64, PgError> {
            self.0.lock().unwrap().push(statement.to_string());
            Ok(3)
        }
    }

    #[async_trait]
    impl Connector for Recorder {
        async fn connect(
            &self,
            address: &str,
            _: &address::Address,
        ) -> Result<Arc<dyn Client>, PgError> {
            self.connects.lock().unwrap().push(address.to_string());
            Ok(Arc::new(RecordingClient(self.statements.clone())))
        }
    }

    fn orders(recorder: &Arc<Recorder>) -> PostgresInstance {
        let app = TestApp::with_tables(MANIFEST).unwrap();
        let capability = OutboundPgCapability {
            connector: recorder.clone(),
        };
        app.prepare(capability, "orders").unwrap().instance()
    }

    #[tokio::test]
    async fn statements_run_on_the_session_the_connection_holds() {
        let recorder = Arc::new(Recorder::default());
        let mut instance = orders(&recorder);
        let address = "postgres://app@db.internal:5432/shop";
        let conn = instance.open(address.into()).await.unwrap().unwrap();
        let rows = instance
            .query(
                Resource::new_borrow(conn.rep()),
                "SELECT 7 AS n".into(),
                vec![],
            )
            .await
            .unwrap()
            .unwrap();
        assert!(
            matches!(rows.rows.as_slice(), [row] if matches!(row.as_slice(), [DbValue::Int32(7)]))
        );
        assert_eq!(rows.columns[0].name, "n");
        let affected = instance
            .execute(
                Resource::new_borrow(conn.rep()),
                "DELETE FROM t".into(),
                vec![],
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!(affected, 3);
        assert_eq!(*recorder.connects.lock().unwrap(), [address]);
        assert_eq!(
            *recorder.statements.lock().unwrap(),
            ["SELECT 7 AS n", "DELETE FROM t"]
        );
        pg::HostConnection::drop(&mut instance, conn).await.unwrap();
        assert_eq!(instance.open, 0);
    }

    /// A recorder whose pool gives each component one session.
    struct OneEach(Recorder);

    #[async_trait]
    impl Connector for OneEach {
        async fn connect(
            &self,
            address: &str,
            parsed: &address::Address,
        ) -> Result<Arc<dyn Client>, PgError> {
            self.0.connect(address, parsed).await
        }

        fn bulkhead(&self) -> Option<Bulkhead> {
            Some(Bulkhead {
                sessions: 1,
                wait: std::time::Duration::from_millis(50),
            })
        }
    }

    #[tokio::test]
    async fn a_component_past_its_share_waits_then_gets_a_clear_error_and_the_next_gets_one() {
        let app = TestApp::with_tables(MANIFEST).unwrap();
        let capability = OutboundPgCapability {
            connector: Arc::new(OneEach(Recorder::default())),
        };
        let mut instance = app.prepare(capability, "orders").unwrap().instance();
        let address = "postgres://app@db.internal:5432/shop";
        let first = instance.open(address.into()).await.unwrap().unwrap();
        let refused = instance.open(address.into()).await.unwrap();
        assert!(
            matches!(&refused, Err(PgError::ConnectionFailed(m))
                if m.contains("component `orders` already holds 1 sessions")),
            "{refused:?}"
        );
        // Its session ended: the share is free again.
        pg::HostConnection::drop(&mut instance, first)
            .await
            .unwrap();
        let again = instance.open(address.into()).await.unwrap();
        assert!(again.is_ok(), "{again:?}");
    }

    #[tokio::test]
    async fn an_address_outside_the_allow_list_is_refused_before_connecting() {
        let recorder = Arc::new(Recorder::default());
        let mut instance = orders(&recorder);
        let refused = instance
            .open("postgres://app@elsewhere:5432/shop".into())
            .await
            .unwrap();
        assert!(matches!(
            refused,
            Err(PgError::ConnectionFailed(m)) if m.contains("allowed_outbound_hosts")
        ));
        let malformed = instance.open("not an address".into()).await.unwrap();
        assert!(matches!(malformed, Err(PgError::ConnectionFailed(_))));
        assert!(recorder.connects.lock().unwrap().is_empty());
    }

    #[test]
    fn an_address_is_parsed_once_and_the_cache_is_bounded() {
        let app = PostgresApp::new(Arc::new(Recorder::default()));
        let address = "postgres://app@db.internal:5432/shop";
        let first = app.parse(address).unwrap();
        assert!(Arc::ptr_eq(&first, &app.parse(address).unwrap()));
        assert!(app.parse("not an address").is_err());
        for i in 0..MAX_PARSED_ADDRESSES + 10 {
            app.parse(&format!("postgres://app@db.internal:5432/db{i}"))
                .unwrap();
        }
        assert!(app.parsed.lock().unwrap().len() <= MAX_PARSED_ADDRESSES);
    }

    #[tokio::test]
    async fn an_instance_holds_a_bounded_number_of_connections() {
        let recorder = Arc::new(Recorder::default());
        let mut instance = orders(&recorder);
        let address = "postgres://app@db.internal:5432/shop";
        for _ in 0..MAX_OPEN {
            instance.open(address.into()).await.unwrap().unwrap();
        }
        assert!(matches!(
            instance.open(address.into()).await.unwrap(),
            Err(PgError::ConnectionFailed(m)) if m.contains("already holds")
        ));
        assert_eq!(recorder.connects.lock().unwrap().len(), MAX_OPEN);
    }

    #[tokio::test]
    async fn a_ca_root_is_refused_since_sessions_are_not_encrypted() {
        let recorder = Arc::new(Recorder::default());
        let mut instance = orders(&recorder);
        let builder = pg::HostConnectionBuilder::new(
            &mut instance,
            "postgres://app@db.internal:5432/shop".into(),
        )
        .await
        .unwrap();
        pg::HostConnectionBuilder::set_ca_root(
            &mut instance,
            Resource::new_borrow(builder.rep()),
            "pem".into(),
        )
        .await
        .unwrap()
        .unwrap();
        let built = pg::HostConnectionBuilder::build(&mut instance, builder)
            .await
            .unwrap();
        assert!(matches!(built, Err(PgError::ConnectionFailed(m)) if m.contains("TLS")));
        assert!(recorder.connects.lock().unwrap().is_empty());
    }
}
