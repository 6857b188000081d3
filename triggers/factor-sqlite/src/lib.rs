//! `spin:sqlite/sqlite@3.1.0` for `bv`.
//!
//! [`SqliteApp`] knows where each database the application may use lives:
//! `default` in `<state_dir>/sqlite_db.db` (Spin's file name, so a `.spin/`
//! directory moves between the two runtimes), the others from the runtime
//! config's `[sqlite_database.<label>]` sections (`type = "spin"`; a `path`
//! is a file, no `path` a private in-memory database, as in Spin).
//! [`SqliteInstance`] holds which labels the component lists in
//! `sqlite_databases` (anything else is `access-denied`) and its open
//! connections.
//!
//! The I/O sits behind [`Database`] and [`DbConnection`]: the real ones are
//! SQLite files and in-memory databases through rusqlite; tests swap them.
//!
//! Every guest connection owns its own SQLite connection, so that
//! `last-insert-rowid` and `changes` mean what the WIT says (this
//! connection's last statement) even while other instances write to the same
//! database. SQLite is blocking: all of its work runs on `spawn_blocking`.

mod db;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};

use bv_capability::{bv_faults, ComponentFaults};
use bv_manifest::{App, RuntimeConfig, SqliteDatabaseConfig};
use bv_telemetry::CurrentSpan;
use wasmtime::component::{
    Accessor, FutureReader, HasData, Linker, Resource, ResourceTable, StreamReader,
};

use db::Location;
pub use db::Outcome;

mod bindings {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "bitvelocity:host/sqlite-host",
        imports: {
            "spin:sqlite/sqlite.[static]connection.open": async | trappable,
            "spin:sqlite/sqlite.[method]connection.execute": async | trappable,
            "spin:sqlite/sqlite.[method]connection.last-insert-rowid": trappable,
            "spin:sqlite/sqlite.[method]connection.changes": trappable,
            default: store | trappable,
        },
        with: { "spin:sqlite/sqlite.connection": crate::Connection },
    });
}

use bindings::spin::sqlite::sqlite as wit;
use wit::{Error as WitError, QueryResult, RowResult, Value};

/// Most connections one instance may hold open at once.
const MAX_OPEN_CONNECTIONS: usize = 64;

/// The file name of the default database under the state directory (Spin's).
pub const DEFAULT_DATABASE_FILE: &str = "sqlite_db.db";

/// One database. Its methods block; the host calls them on
/// `spawn_blocking`.
pub trait Database: Send + Sync {
    /// A new connection of its own.
    fn connect(&self) -> Result<Box<dyn DbConnection>, WitError>;
}

/// One connection to a [`Database`]. Its methods block.
pub trait DbConnection: Send {
    /// Runs `statement` with `parameters`. A statement that does not prepare
    /// or bind is an `Err`; a failure while stepping ends the rows and is
    /// reported in [`Outcome::error`].
    fn execute(&mut self, statement: &str, parameters: Vec<Value>) -> Result<Outcome, WitError>;
    /// The rowid of this connection's last insert.
    fn last_insert_rowid(&self) -> i64;
    /// Rows changed by this connection's last statement.
    fn changes(&self) -> u64;
}

impl Database for Location {
    fn connect(&self) -> Result<Box<dyn DbConnection>, WitError> {
        Ok(Box::new(Location::connect(self).map_err(db::error)?))
    }
}

impl DbConnection for rusqlite::Connection {
    fn execute(&mut self, statement: &str, parameters: Vec<Value>) -> Result<Outcome, WitError> {
        db::execute(self, statement, parameters)
    }

    fn last_insert_rowid(&self) -> i64 {
        rusqlite::Connection::last_insert_rowid(self)
    }

    fn changes(&self) -> u64 {
        rusqlite::Connection::changes(self)
    }
}

/// Per-application state: every database by label.
pub struct SqliteApp {
    databases: HashMap<String, Arc<dyn Database>>,
}

impl SqliteApp {
    /// The databases some component lists: `default` (unless the runtime
    /// config redefines it) at `<state_dir>/sqlite_db.db`, the others as the
    /// runtime config says. Files and their directories are created here, so
    /// a bad path stops start-up.
    pub fn new(app: &App, config: &RuntimeConfig, state_dir: &Path) -> anyhow::Result<Self> {
        let used: HashSet<&str> = app
            .components
            .values()
            .flat_map(|c| c.sqlite_databases.iter().map(String::as_str))
            .collect();
        let mut databases = HashMap::new();
        for label in used {
            let location = match (label, config.sqlite_databases.get(label)) {
                (_, Some(SqliteDatabaseConfig::Spin { path: Some(path) })) => Location::file(path)?,
                (_, Some(SqliteDatabaseConfig::Spin { path: None })) => Location::memory(label)?,
                ("default", None) => Location::file(&state_dir.join(DEFAULT_DATABASE_FILE))?,
                // The manifest checks that every other label is configured.
                (_, None) => continue,
            };
            databases.insert(label.to_string(), Arc::new(location) as Arc<dyn Database>);
        }
        Ok(Self { databases })
    }

    /// An application whose databases are given directly (used by tests).
    pub fn from_databases(databases: HashMap<String, Arc<dyn Database>>) -> Self {
        Self { databases }
    }

    /// The per-instance state for a component allowed to open `allowed`.
    pub fn instance(self: &Arc<Self>, allowed: Arc<HashSet<String>>) -> SqliteInstance {
        SqliteInstance {
            app: self.clone(),
            allowed,
            table: ResourceTable::new(),
            open: 0,
            faults: ComponentFaults::none(),
            span: CurrentSpan::default(),
        }
    }
}

type Shared = Arc<Mutex<Box<dyn DbConnection>>>;

/// A guest's open connection: its own database connection, behind a lock so
/// that blocking work can borrow it on another thread.
pub struct Connection {
    conn: Shared,
}

/// Per-instance state.
pub struct SqliteInstance {
    app: Arc<SqliteApp>,
    allowed: Arc<HashSet<String>>,
    table: ResourceTable,
    open: usize,
    faults: ComponentFaults,
    /// The span the instance works under (injected faults are marked on it).
    span: CurrentSpan,
}

impl SqliteInstance {
    /// The same instance, its statements subject to `faults` (marked on
    /// `span`).
    pub fn with_faults(self, faults: ComponentFaults, span: CurrentSpan) -> Self {
        Self {
            faults,
            span,
            ..self
        }
    }

    /// Checks access to `database` and returns where it lives.
    fn location(&self, database: &str) -> Result<Arc<dyn Database>, WitError> {
        if !self.allowed.contains(database) {
            tracing::warn!(
                database,
                "sqlite: database not listed in the component's sqlite_databases"
            );
            return Err(WitError::AccessDenied);
        }
        if self.open >= MAX_OPEN_CONNECTIONS {
            return Err(WitError::Io(format!(
                "too many open connections (at most {MAX_OPEN_CONNECTIONS} per instance)"
            )));
        }
        self.app
            .databases
            .get(database)
            .cloned()
            .ok_or(WitError::NoSuchDatabase)
    }

    fn push(&mut self, conn: Box<dyn DbConnection>) -> wasmtime::Result<Resource<Connection>> {
        let handle = self.table.push(Connection {
            conn: Arc::new(Mutex::new(conn)),
        })?;
        self.open += 1;
        Ok(handle)
    }

    fn conn(&self, this: &Resource<Connection>) -> wasmtime::Result<Shared> {
        Ok(self.table.get(this)?.conn.clone())
    }
}

/// Runs `f` on the connection on a blocking thread.
async fn blocking<R: Send + 'static>(
    conn: Shared,
    f: impl FnOnce(&mut dyn DbConnection) -> R + Send + 'static,
) -> wasmtime::Result<R> {
    Ok(tokio::task::spawn_blocking(move || {
        let mut conn = conn.lock().unwrap_or_else(|p| p.into_inner());
        f(conn.as_mut())
    })
    .await?)
}

async fn connect(
    database: Arc<dyn Database>,
) -> wasmtime::Result<Result<Box<dyn DbConnection>, WitError>> {
    Ok(tokio::task::spawn_blocking(move || database.connect()).await?)
}

fn last_insert_rowid(conn: &mut dyn DbConnection) -> i64 {
    conn.last_insert_rowid()
}

fn changes(conn: &mut dyn DbConnection) -> u64 {
    conn.changes()
}

// The synchronous functions of 3.0.0, kept for guests built against it.
impl wit::HostConnection for SqliteInstance {
    async fn open(
        &mut self,
        database: String,
    ) -> wasmtime::Result<Result<Resource<Connection>, WitError>> {
        let location = match self.location(&database) {
            Ok(location) => location,
            Err(e) => return Ok(Err(e)),
        };
        match connect(location).await? {
            Ok(conn) => Ok(Ok(self.push(conn)?)),
            Err(e) => Ok(Err(e)),
        }
    }

    async fn execute(
        &mut self,
        this: Resource<Connection>,
        statement: String,
        parameters: Vec<Value>,
    ) -> wasmtime::Result<Result<QueryResult, WitError>> {
        let conn = self.conn(&this)?;
        if let Err(e) = injected(&self.faults, &self.span).await {
            return Ok(Err(e));
        }
        let outcome = blocking(conn, move |c| c.execute(&statement, parameters)).await?;
        Ok(outcome.and_then(|o| match o.error {
            Some(e) => Err(e),
            None => Ok(QueryResult {
                columns: o.columns,
                rows: o.rows,
            }),
        }))
    }

    fn last_insert_rowid(&mut self, this: Resource<Connection>) -> wasmtime::Result<i64> {
        let conn = self.conn(&this)?;
        let mut conn = conn.lock().unwrap_or_else(|p| p.into_inner());
        Ok(last_insert_rowid(conn.as_mut()))
    }

    fn changes(&mut self, this: Resource<Connection>) -> wasmtime::Result<u64> {
        let conn = self.conn(&this)?;
        let mut conn = conn.lock().unwrap_or_else(|p| p.into_inner());
        Ok(changes(conn.as_mut()))
    }
}

impl wit::Host for SqliteInstance {}

struct HasSqlite;

impl HasData for HasSqlite {
    type Data<'a> = &'a mut SqliteInstance;
}

type Acc<'a, T> = &'a Accessor<T, HasSqlite>;

/// The connection behind `this`, and the faults its statements are subject
/// to.
fn conn_of<T>(
    accessor: Acc<'_, T>,
    this: &Resource<Connection>,
) -> wasmtime::Result<(Shared, ComponentFaults, CurrentSpan)> {
    accessor.with(|mut access| {
        let state = access.get();
        Ok((state.conn(this)?, state.faults.clone(), state.span.clone()))
    })
}

/// Applies the component's faults to one statement; an injected failure is
/// an I/O error.
async fn injected(faults: &ComponentFaults, span: &CurrentSpan) -> Result<(), WitError> {
    faults
        .inject(bv_faults::Capability::Sqlite, span)
        .await
        .map_err(|e| WitError::Io(e.to_string()))
}

type ExecuteAsync = (
    Vec<String>,
    StreamReader<RowResult>,
    FutureReader<Result<(), WitError>>,
);

impl<T: Send> wit::HostConnectionWithStore<T> for HasSqlite {
    async fn open_async(
        accessor: Acc<'_, T>,
        database: String,
    ) -> wasmtime::Result<Result<Resource<Connection>, WitError>> {
        let location = match accessor.with(|mut access| access.get().location(&database)) {
            Ok(location) => location,
            Err(e) => return Ok(Err(e)),
        };
        match connect(location).await? {
            Ok(conn) => accessor.with(|mut access| Ok(Ok(access.get().push(conn)?))),
            Err(e) => Ok(Err(e)),
        }
    }

    async fn execute_async(
        accessor: Acc<'_, T>,
        this: Resource<Connection>,
        statement: String,
        parameters: Vec<Value>,
    ) -> wasmtime::Result<Result<ExecuteAsync, WitError>> {
        let (conn, faults, span) = conn_of(accessor, &this)?;
        if let Err(e) = injected(&faults, &span).await {
            return Ok(Err(e));
        }
        // The statement runs to completion here; its rows are then streamed
        // to the guest from memory, and a failure part-way through arrives on
        // the future after the rows that preceded it.
        let outcome = match blocking(conn, move |c| c.execute(&statement, parameters)).await? {
            Ok(outcome) => outcome,
            Err(e) => return Ok(Err(e)),
        };
        let result = match outcome.error {
            Some(e) => Err(e),
            None => Ok(()),
        };
        accessor.with(|mut access| {
            let rows = StreamReader::new(&mut access, outcome.rows)?;
            let future =
                FutureReader::new(&mut access, async move { Ok::<_, wasmtime::Error>(result) })?;
            Ok(Ok((outcome.columns, rows, future)))
        })
    }

    async fn last_insert_rowid_async(
        accessor: Acc<'_, T>,
        this: Resource<Connection>,
    ) -> wasmtime::Result<i64> {
        let (conn, ..) = conn_of(accessor, &this)?;
        blocking(conn, last_insert_rowid).await
    }

    async fn changes_async(
        accessor: Acc<'_, T>,
        this: Resource<Connection>,
    ) -> wasmtime::Result<u64> {
        let (conn, ..) = conn_of(accessor, &this)?;
        blocking(conn, changes).await
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

/// The `spin:sqlite` capability.
#[derive(Default)]
pub struct SqliteCapability {
    /// Databases by label that replace what the runtime config says
    /// (tests); empty by default.
    pub databases: HashMap<String, Arc<dyn Database>>,
}

impl bv_capability::Capability for SqliteCapability {
    type AppState = Arc<SqliteApp>;
    /// The database labels the component lists.
    type ComponentState = Arc<HashSet<String>>;
    type InstanceState = SqliteInstance;

    fn init(&self, ctx: &bv_capability::AppContext<'_>) -> anyhow::Result<Self::AppState> {
        let mut app = SqliteApp::new(ctx.app, ctx.runtime_config, ctx.state_dir)?;
        app.databases.extend(self.databases.clone());
        Ok(Arc::new(app))
    }

    fn prepare(
        &self,
        _: &Self::AppState,
        ctx: &bv_capability::ComponentContext<'_>,
    ) -> anyhow::Result<Self::ComponentState> {
        Ok(Arc::new(
            ctx.component.sqlite_databases.iter().cloned().collect(),
        ))
    }

    fn instance(
        &self,
        app: &Self::AppState,
        component: &Self::ComponentState,
        ctx: &bv_capability::InstanceContext<'_>,
    ) -> SqliteInstance {
        app.instance(component.clone())
            .with_faults(ctx.faults.clone(), ctx.span.clone())
    }

    fn add_to_linker<T: Send + 'static>(
        linker: &mut Linker<T>,
        get: fn(&mut T) -> &mut SqliteInstance,
    ) -> anyhow::Result<()> {
        wit::add_to_linker::<T, HasSqlite>(linker, get)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bv_capability::testing::TestApp;
    use wit::HostConnection as _;

    const MANIFEST: &str = r#"
        [component.notes]
        source = "notes.wasm"
        sqlite_databases = ["default", "scratch"]
        [component.other]
        source = "other.wasm"
        sqlite_databases = ["default"]
    "#;

    fn test_app() -> TestApp {
        TestApp::with_tables(MANIFEST)
            .unwrap()
            .with_runtime_config("[sqlite_database.scratch]\ntype = \"spin\"\n")
            .unwrap()
    }

    async fn run(
        instance: &mut SqliteInstance,
        conn: &Resource<Connection>,
        sql: &str,
        params: Vec<Value>,
    ) -> Result<QueryResult, WitError> {
        instance
            .execute(Resource::new_borrow(conn.rep()), sql.into(), params)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn the_default_database_is_a_file_in_the_state_directory_shared_by_components() {
        let app = test_app();
        let mut notes = app
            .prepare(SqliteCapability::default(), "notes")
            .unwrap()
            .instance();
        let conn = notes.open("default".into()).await.unwrap().unwrap();
        run(&mut notes, &conn, "CREATE TABLE n (t TEXT)", vec![])
            .await
            .unwrap();
        run(
            &mut notes,
            &conn,
            "INSERT INTO n VALUES (?)",
            vec![Value::Text("hi".into())],
        )
        .await
        .unwrap();
        assert_eq!(
            notes
                .last_insert_rowid(Resource::new_borrow(conn.rep()))
                .unwrap(),
            1
        );
        assert_eq!(notes.changes(Resource::new_borrow(conn.rep())).unwrap(), 1);
        assert!(app.state_dir().join(DEFAULT_DATABASE_FILE).exists());

        let mut other = app
            .prepare(SqliteCapability::default(), "other")
            .unwrap()
            .instance();
        let conn = other.open("default".into()).await.unwrap().unwrap();
        let rows = run(&mut other, &conn, "SELECT t FROM n", vec![])
            .await
            .unwrap();
        assert_eq!(rows.columns, ["t"]);
        assert_eq!(rows.rows.len(), 1);
    }

    #[tokio::test]
    async fn a_component_opens_only_the_databases_it_lists() {
        let app = test_app();
        let mut other = app
            .prepare(SqliteCapability::default(), "other")
            .unwrap()
            .instance();
        assert!(matches!(
            other.open("scratch".into()).await.unwrap(),
            Err(WitError::AccessDenied)
        ));
        let mut notes = app
            .prepare(SqliteCapability::default(), "notes")
            .unwrap()
            .instance();
        assert!(notes.open("scratch".into()).await.unwrap().is_ok());
    }

    struct Unreachable;

    impl Database for Unreachable {
        fn connect(&self) -> Result<Box<dyn DbConnection>, WitError> {
            Err(WitError::Io("disk gone".into()))
        }
    }

    #[tokio::test]
    async fn a_database_that_cannot_be_opened_is_an_io_error_and_holds_no_handle() {
        let app = test_app();
        let capability = SqliteCapability {
            databases: HashMap::from([(
                "scratch".to_string(),
                Arc::new(Unreachable) as Arc<dyn Database>,
            )]),
        };
        let mut notes = app.prepare(capability, "notes").unwrap().instance();
        assert!(matches!(
            notes.open("scratch".into()).await.unwrap(),
            Err(WitError::Io(m)) if m == "disk gone"
        ));
        assert_eq!(notes.open, 0);
    }
}
