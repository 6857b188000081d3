//! Client spans of statements (only when tracing is on).

use std::future::Future;

use bv_telemetry::CurrentSpan;
use tracing::Instrument as _;

use crate::bindings::spin::postgres::postgres::QueryError;
use crate::session_state::leading_keyword;
use crate::PgError;

/// A client span for `statement`, child of the span the instance works
/// under; `None` when tracing is off or the request is not traced.
pub(crate) fn statement_span(
    current: &CurrentSpan,
    component: &str,
    statement: &str,
) -> Option<tracing::Span> {
    let parent = current.get();
    if !bv_telemetry::records(&parent) {
        return None;
    }
    let operation = leading_keyword(statement);
    Some(tracing::info_span!(
        parent: &parent,
        "db.postgresql",
        otel.name = %operation,
        otel.kind = "client",
        otel.status_code = tracing::field::Empty,
        db.system.name = "postgresql",
        db.operation.name = %operation,
        db.query.text = statement,
        db.response.status_code = tracing::field::Empty,
        bv.component = component,
    ))
}

/// Runs `run` inside `span` (if any); a failed statement marks the span as
/// an error, with the server's SQLSTATE when there is one.
pub(crate) async fn traced<T>(
    span: Option<tracing::Span>,
    run: impl Future<Output = Result<T, PgError>>,
) -> Result<T, PgError> {
    let Some(span) = span else {
        return run.await;
    };
    let result = run.instrument(span.clone()).await;
    if let Err(e) = &result {
        span.record("otel.status_code", "error");
        if let PgError::QueryFailed(QueryError::DbError(db)) = e {
            span.record("db.response.status_code", db.code.as_str());
        }
    }
    result
}
