//! The SQLite side: where each database lives, and running one statement.
//! Everything here blocks; the host calls it on `spawn_blocking`.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::types::{Value as SqlValue, ValueRef};
use rusqlite::Connection;

use crate::wit::{Error as WitError, RowResult, Value};

/// Where a database lives.
pub(crate) enum Location {
    /// A file, created on first open.
    File(PathBuf),
    /// A private in-memory database (a runtime-config entry without `path`,
    /// as in Spin). `keeper` holds it open so that it lives as long as the
    /// application rather than as long as one guest connection.
    Memory {
        uri: String,
        keeper: Mutex<Connection>,
    },
}

impl Location {
    /// A file database at `path`; its directory is created, and it is put in
    /// WAL mode once so that readers do not block the writer.
    pub(crate) fn file(path: &Path) -> anyhow::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let conn = Connection::open(path)
            .map_err(|e| anyhow::anyhow!("opening SQLite database {}: {e}", path.display()))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        Ok(Location::File(path.to_path_buf()))
    }

    /// A named in-memory database shared by this application's connections.
    pub(crate) fn memory(label: &str) -> anyhow::Result<Self> {
        let uri = format!(
            "file:bv-sqlite-{}-{label}?mode=memory&cache=shared",
            std::process::id()
        );
        let keeper = open_uri(&uri)?;
        Ok(Location::Memory {
            uri,
            keeper: Mutex::new(keeper),
        })
    }

    /// A new connection to this database.
    pub(crate) fn connect(&self) -> rusqlite::Result<Connection> {
        let conn = match self {
            Location::File(path) => Connection::open(path)?,
            Location::Memory { uri, keeper } => {
                let _keep = keeper.lock();
                open_uri(uri)?
            }
        };
        conn.busy_timeout(Duration::from_secs(5))?;
        Ok(conn)
    }
}

fn open_uri(uri: &str) -> rusqlite::Result<Connection> {
    use rusqlite::OpenFlags;
    Connection::open_with_flags(
        uri,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
}

/// A statement's outcome: its columns and rows, and, when stepping failed
/// part-way, the error that ended it.
pub struct Outcome {
    /// The statement's column names.
    pub columns: Vec<String>,
    /// The rows read before the end or the error.
    pub rows: Vec<RowResult>,
    /// The error that ended stepping, if any.
    pub error: Option<WitError>,
}

/// Runs `sql` with `params` on `conn`. A statement that does not prepare or
/// bind is an `Err`; a failure while stepping ends the rows and is reported
/// in [`Outcome::error`].
pub(crate) fn execute(
    conn: &Connection,
    sql: &str,
    params: Vec<Value>,
) -> Result<Outcome, WitError> {
    let mut stmt = conn.prepare_cached(sql).map_err(error)?;
    let columns: Vec<String> = stmt.column_names().into_iter().map(String::from).collect();
    let params: Vec<SqlValue> = params.into_iter().map(to_sql).collect();
    let mut rows = stmt
        .query(rusqlite::params_from_iter(params))
        .map_err(error)?;
    let mut out = Vec::new();
    loop {
        match rows.next() {
            Ok(Some(row)) => {
                let values = (0..columns.len())
                    .map(|i| row.get_ref(i).map(from_sql))
                    .collect::<rusqlite::Result<Vec<Value>>>();
                match values {
                    Ok(values) => out.push(RowResult { values }),
                    Err(e) => {
                        return Ok(Outcome {
                            columns,
                            rows: out,
                            error: Some(error(e)),
                        })
                    }
                }
            }
            Ok(None) => break,
            Err(e) => {
                return Ok(Outcome {
                    columns,
                    rows: out,
                    error: Some(error(e)),
                })
            }
        }
    }
    Ok(Outcome {
        columns,
        rows: out,
        error: None,
    })
}

fn to_sql(value: Value) -> SqlValue {
    match value {
        Value::Integer(i) => SqlValue::Integer(i),
        Value::Real(f) => SqlValue::Real(f),
        Value::Text(s) => SqlValue::Text(s),
        Value::Blob(b) => SqlValue::Blob(b),
        Value::Null => SqlValue::Null,
    }
}

fn from_sql(value: ValueRef<'_>) -> Value {
    match value {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::Integer(i),
        ValueRef::Real(f) => Value::Real(f),
        ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => Value::Blob(b.to_vec()),
    }
}

/// A SQLite failure as the guest sees it: `database-full` for
/// `SQLITE_FULL`, otherwise `io` with SQLite's own message.
pub(crate) fn error(e: rusqlite::Error) -> WitError {
    if let rusqlite::Error::SqliteFailure(f, _) = &e {
        if f.code == rusqlite::ErrorCode::DiskFull {
            return WitError::DatabaseFull;
        }
    }
    WitError::Io(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_type_round_trips() {
        let conn = Location::memory("t1").unwrap().connect().unwrap();
        execute(&conn, "CREATE TABLE t (v)", vec![]).unwrap();
        let values = vec![
            Value::Integer(i64::MIN),
            Value::Real(1.25),
            Value::Text("héllo".into()),
            Value::Blob(vec![0, 255, 7]),
            Value::Null,
        ];
        for v in values.clone() {
            execute(&conn, "INSERT INTO t (v) VALUES (?)", vec![v]).unwrap();
        }
        let out = execute(&conn, "SELECT v FROM t ORDER BY rowid", vec![]).unwrap();
        assert_eq!(out.columns, ["v"]);
        let got: Vec<Value> = out.rows.into_iter().map(|r| r.values[0].clone()).collect();
        assert_eq!(format!("{got:?}"), format!("{values:?}"));
    }

    #[test]
    fn sql_errors_carry_sqlite_message() {
        let conn = Location::memory("t2").unwrap().connect().unwrap();
        let Err(WitError::Io(message)) = execute(&conn, "SELEC 1", vec![]) else {
            panic!("expected an error");
        };
        assert!(message.contains("syntax error"), "{message}");
    }

    #[test]
    fn memory_database_is_shared_between_connections() {
        let db = Location::memory("t3").unwrap();
        let a = db.connect().unwrap();
        execute(&a, "CREATE TABLE x (v)", vec![]).unwrap();
        drop(a);
        let b = db.connect().unwrap();
        execute(&b, "SELECT * FROM x", vec![]).unwrap();
    }
}
