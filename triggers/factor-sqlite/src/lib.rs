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
//! Every guest connection owns its own SQLite connection, so that
//! `last-insert-rowid` and `changes` mean what the WIT says (this
//! connection's last statement) even while other instances write to the same
//! database. SQLite is blocking: all of its work runs on `spawn_blocking`.

mod db;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};

use bv_manifest::{App, RuntimeConfig, SqliteDatabaseConfig};
use wasmtime::component::{
    Accessor, FutureReader, HasData, Linker, Resource, ResourceTable, StreamReader,
};

use db::Location;

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

/// Per-application state: the location of every database by label.
pub struct SqliteApp {
    databases: HashMap<String, Arc<Location>>,
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
            databases.insert(label.to_string(), Arc::new(location));
        }
        Ok(Self { databases })
    }

    /// The per-instance state for a component allowed to open `allowed`.
    pub fn instance(self: &Arc<Self>, allowed: Arc<HashSet<String>>) -> SqliteInstance {
        SqliteInstance {
            app: self.clone(),
            allowed,
            table: ResourceTable::new(),
            open: 0,
        }
    }
}

/// A guest's open connection: its own SQLite connection, behind a lock so
/// that blocking work can borrow it on another thread.
pub struct Connection {
    conn: Arc<Mutex<rusqlite::Connection>>,
}

/// Per-instance state.
pub struct SqliteInstance {
    app: Arc<SqliteApp>,
    allowed: Arc<HashSet<String>>,
    table: ResourceTable,
    open: usize,
}

impl SqliteInstance {
    /// Checks access to `database` and returns where it lives.
    fn location(&self, database: &str) -> Result<Arc<Location>, WitError> {
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

    fn push(&mut self, conn: rusqlite::Connection) -> wasmtime::Result<Resource<Connection>> {
        let handle = self.table.push(Connection {
            conn: Arc::new(Mutex::new(conn)),
        })?;
        self.open += 1;
        Ok(handle)
    }

    fn conn(
        &self,
        this: &Resource<Connection>,
    ) -> wasmtime::Result<Arc<Mutex<rusqlite::Connection>>> {
        Ok(self.table.get(this)?.conn.clone())
    }
}

/// Runs `f` on the connection on a blocking thread.
async fn blocking<R: Send + 'static>(
    conn: Arc<Mutex<rusqlite::Connection>>,
    f: impl FnOnce(&rusqlite::Connection) -> R + Send + 'static,
) -> wasmtime::Result<R> {
    Ok(tokio::task::spawn_blocking(move || {
        let conn = conn.lock().unwrap_or_else(|p| p.into_inner());
        f(&conn)
    })
    .await?)
}

async fn connect(
    location: Arc<Location>,
) -> wasmtime::Result<Result<rusqlite::Connection, WitError>> {
    Ok(tokio::task::spawn_blocking(move || location.connect().map_err(db::error)).await?)
}

fn last_insert_rowid(conn: &rusqlite::Connection) -> i64 {
    conn.last_insert_rowid()
}

fn changes(conn: &rusqlite::Connection) -> u64 {
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
        let outcome = blocking(conn, move |c| db::execute(c, &statement, parameters)).await?;
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
        let conn = conn.lock().unwrap_or_else(|p| p.into_inner());
        Ok(last_insert_rowid(&conn))
    }

    fn changes(&mut self, this: Resource<Connection>) -> wasmtime::Result<u64> {
        let conn = self.conn(&this)?;
        let conn = conn.lock().unwrap_or_else(|p| p.into_inner());
        Ok(changes(&conn))
    }
}

impl wit::Host for SqliteInstance {}

struct HasSqlite;

impl HasData for HasSqlite {
    type Data<'a> = &'a mut SqliteInstance;
}

type Acc<'a, T> = &'a Accessor<T, HasSqlite>;

fn conn_of<T>(
    accessor: Acc<'_, T>,
    this: &Resource<Connection>,
) -> wasmtime::Result<Arc<Mutex<rusqlite::Connection>>> {
    accessor.with(|mut access| access.get().conn(this))
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
        let conn = conn_of(accessor, &this)?;
        // The statement runs to completion here; its rows are then streamed
        // to the guest from memory, and a failure part-way through arrives on
        // the future after the rows that preceded it.
        let outcome = match blocking(conn, move |c| db::execute(c, &statement, parameters)).await? {
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
        let conn = conn_of(accessor, &this)?;
        blocking(conn, last_insert_rowid).await
    }

    async fn changes_async(
        accessor: Acc<'_, T>,
        this: Resource<Connection>,
    ) -> wasmtime::Result<u64> {
        let conn = conn_of(accessor, &this)?;
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

/// Adds `spin:sqlite/sqlite@3.1.0` to `linker`.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> &mut SqliteInstance,
) -> anyhow::Result<()> {
    wit::add_to_linker::<T, HasSqlite>(linker, get)?;
    Ok(())
}
