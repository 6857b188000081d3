//! Pools and sessions: the real I/O.
//!
//! One deadpool-postgres pool per address lives in [`Pools`] for the
//! whole application, so a connection opened by one request is reused by the
//! next. No component holds more than half of a pool at once
//! ([`crate::Bulkhead`]), so one whose statements slow down cannot starve
//! the others. A guest `connection` is one [`Session`]: a pooled client held for the
//! resource's whole life.
//!
//! ## Returning a session clean
//!
//! A session follows what the guest's statements leave behind
//! ([`SessionState`]): a transaction still open, or anything that outlives
//! one — a setting, a cursor, a listener, a prepared statement, a temporary
//! object, a session-level advisory lock. A finished transaction and schema
//! changes leave the session clean. When the last reference to a session
//! that is not clean goes, it runs `ROLLBACK` and resets session state
//! before the client goes back to the pool; if that fails or times out the
//! client is discarded instead. A clean session (a lookup, a committed
//! transaction) goes back with no extra round
//! trip. A session whose statement was abandoned mid-flight (the guest or the
//! instance went away while it ran) is cancelled on the server and discarded.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use std::time::Duration;

use deadpool_postgres::{
    Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod, Runtime,
};
use tokio_postgres::error::{DbError, SqlState};
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Statement};

use crate::address::Address;
use crate::bindings::spin::postgres::postgres::{
    Column, DbError as WitDbError, DbValue, Error as PgError, ParameterValue, QueryError,
};
use crate::convert::{self, Cell, Param, ParamError};
use crate::session_state::SessionState;

/// Pool settings, shared by every address an application connects to.
#[derive(Clone, Debug)]
pub struct PoolSettings {
    /// How long connecting (TCP and the startup handshake) or waiting for a
    /// free pooled connection may take before the guest gets
    /// `connection-failed`: a dead server fails the request, it does not hang it.
    pub connect_timeout: Duration,
    /// Most connections one address's pool keeps open.
    pub max_connections: usize,
    /// Most prepared statements cached per connection; the cache is cleared
    /// past this so guests issuing ever-new SQL cannot grow it without bound.
    pub max_cached_statements: usize,
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            max_connections: 16,
            max_cached_statements: 256,
        }
    }
}

/// The real [`Connector`](crate::Connector): one pool per address.
#[derive(Default)]
pub struct Pools {
    settings: PoolSettings,
    pools: Mutex<HashMap<String, Pool>>,
}

fn connection_failed(msg: impl Into<String>) -> PgError {
    PgError::ConnectionFailed(msg.into())
}

impl Pools {
    /// Pools that use `settings`.
    pub fn new(settings: PoolSettings) -> Self {
        Self {
            settings,
            pools: Mutex::default(),
        }
    }

    /// The settings every pool uses.
    pub fn settings(&self) -> &PoolSettings {
        &self.settings
    }

    fn pool(&self, address: &str, config: &tokio_postgres::Config) -> Result<Pool, PgError> {
        let mut pools = self.pools.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(pool) = pools.get(address) {
            return Ok(pool.clone());
        }
        let mut config = config.clone();
        config.connect_timeout(self.settings.connect_timeout);
        if config.get_application_name().is_none() {
            config.application_name("bv");
        }
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                // Sessions reset themselves when they need to (see the module
                // docs); recycling only checks the client is still open.
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let t = Some(self.settings.connect_timeout);
        let pool = Pool::builder(manager)
            .max_size(self.settings.max_connections)
            .runtime(Runtime::Tokio1)
            .wait_timeout(t)
            .create_timeout(t)
            .recycle_timeout(t)
            .build()
            .map_err(|e| connection_failed(format!("creating the connection pool: {e}")))?;
        pools.insert(address.to_string(), pool.clone());
        Ok(pool)
    }

    /// Opens a session at `address` (already checked against the
    /// allow-list).
    async fn open(&self, address: &str, parsed: &Address) -> Result<Session, PgError> {
        let endpoint = parsed
            .endpoints
            .first()
            .map(|e| format!("{}:{}", e.host, e.port))
            .unwrap_or_default();
        let pool = self.pool(address, &parsed.config)?;
        // The pool's own timeouts cover waiting and connecting; this one is
        // the backstop should any step not honour them.
        let limit = self.settings.connect_timeout + Duration::from_millis(500);
        let object = match tokio::time::timeout(limit, pool.get()).await {
            Ok(Ok(object)) => object,
            Ok(Err(e)) => return Err(pool_error(&endpoint, e, self.settings.connect_timeout)),
            Err(_) => return Err(timed_out(&endpoint, self.settings.connect_timeout)),
        };
        Ok(Session {
            client: Some(object),
            state: Mutex::default(),
            abandoned: AtomicBool::new(false),
            max_cached_statements: self.settings.max_cached_statements,
        })
    }
}

#[async_trait]
impl crate::Connector for Pools {
    async fn connect(
        &self,
        address: &str,
        parsed: &Address,
    ) -> Result<Arc<dyn crate::Client>, PgError> {
        Ok(Arc::new(self.open(address, parsed).await?))
    }

    /// Half of each address's pool per component: a component whose
    /// statements slow down or hang leaves the other half to the rest.
    fn bulkhead(&self) -> Option<crate::Bulkhead> {
        Some(crate::Bulkhead {
            sessions: (self.settings.max_connections / 2).max(1),
            wait: self.settings.connect_timeout,
        })
    }
}

fn timed_out(endpoint: &str, t: Duration) -> PgError {
    connection_failed(format!(
        "timed out after {:.1}s connecting to postgres at {endpoint}",
        t.as_secs_f64()
    ))
}

fn pool_error(endpoint: &str, e: PoolError, t: Duration) -> PgError {
    match e {
        PoolError::Timeout(_) => timed_out(endpoint, t),
        PoolError::Backend(e) => match e.as_db_error() {
            Some(db) => connection_failed(format!(
                "postgres at {endpoint} refused the connection: {} (SQLSTATE {})",
                db.message(),
                db.code().code()
            )),
            None => connection_failed(format!("connecting to postgres at {endpoint}: {e}")),
        },
        other => connection_failed(format!("connecting to postgres at {endpoint}: {other}")),
    }
}

/// One guest connection: a pooled client held until the guest drops it.
pub struct Session {
    client: Option<Object>,
    state: Mutex<SessionState>,
    abandoned: AtomicBool,
    max_cached_statements: usize,
}

/// Marks a session abandoned unless the statement it guards completed.
struct InFlight<'a> {
    session: &'a Session,
    done: bool,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.session.abandoned.store(true, Ordering::Relaxed);
        }
    }
}

impl Session {
    fn client(&self) -> &Object {
        self.client.as_ref().expect("the client is held until drop")
    }

    fn note(&self, statement: &str) {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .note(statement);
    }

    /// Prepares `statement` through the per-connection statement cache,
    /// re-preparing once if the server dropped or invalidated the cached plan.
    async fn prepare(&self, statement: &str) -> Result<Statement, tokio_postgres::Error> {
        let client = self.client();
        if client.statement_cache.size() >= self.max_cached_statements {
            client.statement_cache.clear();
        }
        client.prepare_cached(statement).await
    }

    async fn with_statement<R, F, Fut>(&self, statement: &str, run: F) -> Result<R, PgError>
    where
        F: Fn(Statement) -> Fut,
        Fut: std::future::Future<Output = Result<R, tokio_postgres::Error>>,
    {
        self.note(statement);
        let mut guard = InFlight {
            session: self,
            done: false,
        };
        let mut retried = false;
        let result = loop {
            let stmt = match self.prepare(statement).await {
                Ok(s) => s,
                Err(e) => break Err(e),
            };
            match run(stmt).await {
                Err(e) if !retried && stale_plan(&e) => {
                    self.client().statement_cache.remove(statement, &[]);
                    retried = true;
                }
                other => break other,
            }
        };
        guard.done = true;
        result.map_err(query_error)
    }

    /// Runs a query and decodes every row.
    pub async fn query(
        &self,
        statement: &str,
        params: &[ParameterValue],
    ) -> Result<(Vec<Column>, Vec<Vec<DbValue>>), PgError> {
        let bound: Vec<Param<'_>> = params.iter().map(Param).collect();
        let refs: Vec<&(dyn ToSql + Sync)> = bound.iter().map(|p| p as _).collect();
        let client = self.client();
        let (stmt, rows) = self
            .with_statement(statement, |stmt| {
                let refs = &refs;
                async move {
                    let rows = client.query(&stmt, refs).await?;
                    Ok((stmt, rows))
                }
            })
            .await?;
        let columns: Vec<Column> = stmt
            .columns()
            .iter()
            .map(|c| Column {
                name: c.name().to_string(),
                data_type: convert::data_type(c.type_()),
            })
            .collect();
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let mut values = Vec::with_capacity(columns.len());
            for (i, column) in columns.iter().enumerate() {
                let cell: Cell = row.try_get(i).map_err(|e| {
                    let cause = std::error::Error::source(&e)
                        .map(|s| s.to_string())
                        .unwrap_or_else(|| e.to_string());
                    PgError::ValueConversionFailed(format!("column `{}`: {cause}", column.name))
                })?;
                values.push(cell.0);
            }
            out.push(values);
        }
        Ok((columns, out))
    }

    /// Runs a command and returns the number of rows it affected.
    pub async fn execute(
        &self,
        statement: &str,
        params: &[ParameterValue],
    ) -> Result<u64, PgError> {
        let bound: Vec<Param<'_>> = params.iter().map(Param).collect();
        let refs: Vec<&(dyn ToSql + Sync)> = bound.iter().map(|p| p as _).collect();
        let client = self.client();
        self.with_statement(statement, |stmt| {
            let refs = &refs;
            async move { client.execute(&stmt, refs).await }
        })
        .await
    }
}

/// Whether the server rejected a cached plan that a retry would fix.
fn stale_plan(e: &tokio_postgres::Error) -> bool {
    e.as_db_error().is_some_and(|db| {
        *db.code() == SqlState::INVALID_SQL_STATEMENT_NAME
            || (*db.code() == SqlState::FEATURE_NOT_SUPPORTED
                && db.message().contains("cached plan"))
    })
}

/// Runs when a dirty session goes back: ends any transaction, resets session
/// state, keeps server-side prepared statements (they are cached per client).
const RESET: &str = "ROLLBACK; CLOSE ALL; SET SESSION AUTHORIZATION DEFAULT; RESET ALL; \
                     UNLISTEN *; SELECT pg_advisory_unlock_all(); DISCARD TEMP; DISCARD SEQUENCES";

#[async_trait]
impl crate::Client for Session {
    async fn query(
        &self,
        statement: &str,
        params: &[ParameterValue],
    ) -> Result<(Vec<Column>, Vec<Vec<DbValue>>), PgError> {
        Session::query(self, statement, params).await
    }

    async fn execute(&self, statement: &str, params: &[ParameterValue]) -> Result<u64, PgError> {
        Session::execute(self, statement, params).await
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let Some(client) = self.client.take() else {
            return;
        };
        let abandoned = *self.abandoned.get_mut();
        let needs_reset = self
            .state
            .get_mut()
            .map_or(true, |state| state.needs_reset());
        if !abandoned && !needs_reset {
            return; // Back to the pool as it is.
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            drop(Object::take(client));
            return;
        };
        runtime.spawn(async move {
            if abandoned {
                // Stop the statement still running on the server, then drop
                // the client: its protocol state is unknown.
                let _ = client.cancel_token().cancel_query(NoTls).await;
                drop(Object::take(client));
                return;
            }
            match tokio::time::timeout(Duration::from_secs(5), client.batch_execute(RESET)).await {
                Ok(Ok(())) => {
                    // The reset keeps server-side prepared statements, so the
                    // cache stays valid: the next guest's statements are not
                    // prepared again (half the round trips of a handler that
                    // uses a transaction). A guest that ran `DEALLOCATE` makes
                    // a cached statement fail once with SQLSTATE 26000, which
                    // `with_statement` answers by preparing it again.
                    drop(client);
                }
                outcome => {
                    tracing::warn!(?outcome, "postgres session reset failed; discarding it");
                    drop(Object::take(client));
                }
            }
        });
    }
}

fn query_error(e: tokio_postgres::Error) -> PgError {
    if let Some(db) = e.as_db_error() {
        return PgError::QueryFailed(QueryError::DbError(db_error(db)));
    }
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        if let Some(p) = s.downcast_ref::<ParamError>() {
            return PgError::BadParameter(p.0.clone());
        }
        source = s.source();
    }
    if e.is_closed() {
        return PgError::ConnectionFailed(format!("the connection was closed: {e}"));
    }
    let text = e.to_string();
    if text.starts_with("expected") && text.contains("parameters") {
        return PgError::BadParameter(text);
    }
    PgError::QueryFailed(QueryError::Text(text))
}

fn db_error(db: &DbError) -> WitDbError {
    let mut extras = Vec::new();
    let mut put = |k: &str, v: Option<&str>| {
        if let Some(v) = v {
            extras.push((k.to_string(), v.to_string()));
        }
    };
    put("hint", db.hint());
    put("where", db.where_());
    put("schema", db.schema());
    put("table", db.table());
    put("column", db.column());
    put("datatype", db.datatype());
    put("constraint", db.constraint());
    put("routine", db.routine());
    WitDbError {
        as_text: db.to_string(),
        severity: db.severity().to_string(),
        code: db.code().code().to_string(),
        message: db.message().to_string(),
        detail: db.detail().map(str::to_string),
        extras,
    }
}
