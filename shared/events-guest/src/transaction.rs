//! A Postgres transaction that can publish events and claim delivered ones.

use bv_events::{CloudEvent, EventError};
use spin_sdk::pg::{Connection, ParameterValue, PgError, QueryError, QueryResult};

use crate::Event;

/// The outbox row of one event. `time` is bound as text and cast (the
/// host binds strings to text and JSON types only); the envelope goes to
/// `event` whole, as `encode` wrote it.
const PUBLISH: &str = "INSERT INTO bv_events.outbox (id, source, type, subject, time, event) \
     VALUES ($1, $2, $3, $4, $5::text::timestamptz, $6::text::jsonb)";

/// Records an event as handled by a consumer, unless it already is.
const CLAIM: &str = "INSERT INTO bv_events.processed (consumer, source, event_id) \
     VALUES ($1, $2, $3) ON CONFLICT DO NOTHING";

/// A transaction on a [`Connection`], begun by [`Transaction::begin`] and
/// ended by [`Transaction::commit`] or [`Transaction::rollback`].
///
/// Statements go through the same connection, so anything run on the
/// connection while the transaction is open is part of it. Dropping a
/// `Transaction` without ending it leaves the transaction open on the
/// connection until the connection is dropped, when the host rolls it back.
/// A statement that fails aborts the transaction: roll it back (or drop
/// the connection).
pub struct Transaction<'c> {
    conn: &'c Connection,
}

impl<'c> Transaction<'c> {
    /// Runs `BEGIN` on `conn`.
    pub async fn begin(conn: &'c Connection) -> Result<Self, Error> {
        run(conn, "BEGIN", Vec::new(), "BEGIN").await?;
        Ok(Self { conn })
    }

    /// Runs a statement that returns no rows; the number of rows it
    /// changed.
    pub async fn execute(
        &self,
        statement: impl Into<String>,
        params: impl Into<Vec<ParameterValue>>,
    ) -> Result<u64, Error> {
        run(self.conn, statement, params, "statement").await
    }

    /// Runs a query; its rows, as [`Connection::query`] returns them.
    pub async fn query(
        &self,
        statement: impl Into<String>,
        params: impl Into<Vec<ParameterValue>>,
    ) -> Result<QueryResult, Error> {
        self.conn
            .query(statement, params)
            .await
            .map_err(|source| Error::Postgres {
                operation: "query",
                source,
            })
    }

    /// Writes `event` to `bv_events.outbox`, visible to subscriptions once
    /// (and only if) the transaction commits.
    ///
    /// The event is checked against the schema of its type first
    /// ([`bv_events::encode`]); one that breaks it is [`Error::Invalid`],
    /// naming the field, and nothing is written.
    pub async fn publish(&self, event: &CloudEvent) -> Result<(), Error> {
        let json = bv_events::encode(event).map_err(|source| Error::Invalid {
            ty: event.ty().to_string(),
            source,
        })?;
        let params = vec![
            ParameterValue::Str(event.id().to_string()),
            ParameterValue::Str(event.source().to_string()),
            ParameterValue::Str(event.ty().to_string()),
            event.subject().map_or(ParameterValue::DbNull, |s| {
                ParameterValue::Str(s.to_string())
            }),
            ParameterValue::Str(event.time().to_string()),
            ParameterValue::Str(json),
        ];
        run(self.conn, PUBLISH, params, "publish").await?;
        Ok(())
    }

    /// Records `event` as handled by its subscription (the consumer name
    /// `bv events replay` clears); `true` if this transaction claimed it,
    /// `false` if it was handled before.
    ///
    /// On `false`, do nothing more: roll back (or commit nothing) and
    /// return `Ok`. The claim commits or rolls back with the handler's
    /// effects, so an event counts as handled exactly when they are
    /// committed. A concurrent claim of the same event waits for the
    /// other transaction and then answers `false` if it committed.
    pub async fn claim<T>(&self, event: &Event<T>) -> Result<bool, Error> {
        self.claim_as(&event.subscription, event).await
    }

    /// [`Transaction::claim`] under another consumer name: for a handler
    /// that keeps separate idempotency records for separate effects, or
    /// that shares records across subscriptions.
    pub async fn claim_as<T>(&self, consumer: &str, event: &Event<T>) -> Result<bool, Error> {
        let params = vec![
            ParameterValue::Str(consumer.to_string()),
            ParameterValue::Str(event.source.clone()),
            ParameterValue::Str(event.id.clone()),
        ];
        Ok(run(self.conn, CLAIM, params, "claim").await? == 1)
    }

    /// Runs `COMMIT`.
    pub async fn commit(self) -> Result<(), Error> {
        run(self.conn, "COMMIT", Vec::new(), "COMMIT").await?;
        Ok(())
    }

    /// Runs `ROLLBACK`.
    pub async fn rollback(self) -> Result<(), Error> {
        run(self.conn, "ROLLBACK", Vec::new(), "ROLLBACK").await?;
        Ok(())
    }
}

async fn run(
    conn: &Connection,
    statement: impl Into<String>,
    params: impl Into<Vec<ParameterValue>>,
    operation: &'static str,
) -> Result<u64, Error> {
    conn.execute(statement, params)
        .await
        .map_err(|source| Error::Postgres { operation, source })
}

/// Why a [`Transaction`] operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The event breaks the schema of its type (or its type is unknown);
    /// nothing was written.
    #[error("event `{ty}` not published: {source}")]
    Invalid {
        /// The event's `type`.
        ty: String,
        /// The violation, naming the field (`data.price.amount: …`).
        source: EventError,
    },
    /// Postgres refused a statement (or the connection failed).
    #[error("{operation} failed: {}", describe(.source))]
    Postgres {
        /// `BEGIN`, `statement`, `query`, `publish`, `claim`, `COMMIT` or
        /// `ROLLBACK`.
        operation: &'static str,
        /// The error spin-sdk returned.
        source: spin_sdk::pg::Error,
    },
}

impl Error {
    /// For [`Error::Invalid`], the field at fault (`data.price.amount`,
    /// `type`).
    pub fn field(&self) -> Option<&str> {
        match self {
            Error::Invalid { source, .. } => Some(source.field()),
            Error::Postgres { .. } => None,
        }
    }

    /// For an error Postgres reported, its SQLSTATE (`23505` for a unique
    /// violation, `40001` for a serialization failure, …).
    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            Error::Postgres {
                source: spin_sdk::pg::Error::PgError(PgError::QueryFailed(QueryError::DbError(db))),
                ..
            } => Some(&db.code),
            _ => None,
        }
    }
}

/// A one-line text for a spin-sdk Postgres error (the generated types'
/// own `Display` is their `Debug`).
fn describe(e: &spin_sdk::pg::Error) -> String {
    let e = match e {
        spin_sdk::pg::Error::PgError(e) => e,
        other => return other.to_string(),
    };
    match e {
        PgError::ConnectionFailed(m) => format!("connection failed: {m}"),
        PgError::BadParameter(m) => format!("bad parameter: {m}"),
        PgError::ValueConversionFailed(m) => format!("value conversion failed: {m}"),
        PgError::Other(m) => m.clone(),
        PgError::QueryFailed(QueryError::Text(m)) => m.clone(),
        PgError::QueryFailed(QueryError::DbError(db)) => {
            let mut s = format!("{} {}: {}", db.severity, db.code, db.message);
            if let Some(detail) = &db.detail {
                s += &format!(" ({detail})");
            }
            s
        }
    }
}
