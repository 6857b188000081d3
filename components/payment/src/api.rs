//! The payment calls: authorize, capture, refund, look up. Every state
//! change and its event are written in one transaction, and every call is
//! idempotent: a repeat answers what the first call answered, marked with
//! `idempotent-replayed: true`.

use std::sync::atomic::AtomicBool;

use bv_events_guest::Transaction;
use bv_service::{json, migrate, parse_json, read_json, Problem, ProblemKind, Reply, Trace};
use serde_json::Value;
use spin_sdk::http::body::IncomingBodyExt;
use spin_sdk::http::{HeaderValue, Request};
use spin_sdk::pg::{Connection, ParameterValue};

use crate::config::Config;
use crate::domain::{decide, Authorize, AuthorizeBody, Decline, PaymentId};
use crate::events;
use crate::store::{self, Payment, Status};

/// The largest request body accepted.
const MAX_BODY: usize = 8 * 1024;

/// Whether this instance has applied the migrations.
static MIGRATED: AtomicBool = AtomicBool::new(false);

/// A step after authorization.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// AUTHORIZED → CAPTURED.
    Capture,
    /// AUTHORIZED → REFUNDED (a void) or CAPTURED → REFUNDED (a refund).
    Refund,
}

impl Step {
    fn name(self) -> &'static str {
        match self {
            Step::Capture => "capture",
            Step::Refund => "refund",
        }
    }
}

/// `POST /authorize`.
pub async fn authorize(req: Request, config: &Config) -> Result<Reply, Problem> {
    let trace = Trace::of(&req);
    let body: AuthorizeBody = read_json(req, MAX_BODY).await?;
    let request = Authorize::try_from(body)?;
    let decision = decide(request.amount, &request.token, config.amount_limit);
    let conn = open().await?;
    let tx = Transaction::begin(&conn).await?;
    match record(&tx, &request, decision, &trace).await {
        Ok(Some(payment)) => {
            tx.commit().await?;
            Ok(authorize_answer(&payment, false))
        }
        Ok(None) => {
            tx.rollback().await?;
            let first = find(&conn, store::SELECT, request.payment_id.as_str())
                .await?
                .ok_or_else(|| Problem::internal("an existing payment vanished"))?;
            let fields = first.differences(&request);
            if !fields.is_empty() {
                return Err(Problem::new(
                    422,
                    ProblemKind::IdempotencyMismatch,
                    "The payment id was used with another request",
                    format!(
                        "payment `{}` was first authorized with another {}: choose a new paymentId for a new payment",
                        first.payment_id,
                        fields.join(", ")
                    ),
                )
                .with("paymentId", first.payment_id.as_str())
                .with("fields", fields));
            }
            Ok(authorize_answer(&first, true))
        }
        Err(p) => {
            let _ = tx.rollback().await;
            Err(p)
        }
    }
}

/// Inserts the payment with its event; `None` when the id exists.
async fn record(
    tx: &Transaction<'_>,
    request: &Authorize,
    decision: Result<(), Decline>,
    trace: &Trace,
) -> Result<Option<Payment>, Problem> {
    let rows = tx
        .query(store::INSERT, store::insert_params(request, decision))
        .await?
        .collect()
        .await?;
    let Some(row) = rows.first() else {
        return Ok(None);
    };
    let payment = Payment::from_row(row)?;
    let event = match payment.status {
        Status::Declined => events::declined(&payment),
        _ => events::authorized(&payment),
    };
    tx.publish(&event.traced(trace.traceparent())).await?;
    Ok(Some(payment))
}

/// 201 with the authorization, or 402 with the decline: the same for the
/// first call and every repeat.
fn authorize_answer(payment: &Payment, replayed: bool) -> Reply {
    let first = payment.as_authorized();
    let reply = match first.decline {
        None => json(201, &first.view()),
        Some(d) => Problem::new(
            402,
            d.kind(),
            d.title(),
            format!("payment `{}` was declined: {}", first.payment_id, d.code()),
        )
        .with("paymentId", first.payment_id.as_str())
        .with("orderId", first.order_id.as_str())
        .with("paymentStatus", Status::Declined.as_str())
        .with("declineCode", d.code())
        .with("declinedAt", first.created_at.as_str())
        .into_response(),
    };
    mark(reply, replayed)
}

/// `POST /{paymentId}/capture` and `POST /{paymentId}/refund`: always of
/// the whole amount, so the body is empty (or `{}`).
pub async fn step(id: &str, step: Step, req: Request) -> Result<Reply, Problem> {
    let id = known_id(id)?;
    let trace = Trace::of(&req);
    no_fields(req).await?;
    let conn = open().await?;
    let tx = Transaction::begin(&conn).await?;
    let result = advance(&tx, &id, step, &trace).await;
    match &result {
        Ok((_, true)) => tx.commit().await?,
        _ => {
            let _ = tx.rollback().await;
        }
    }
    let (payment, changed) = result?;
    Ok(mark(json(200, &payment.view()), !changed))
}

/// Makes `step` under a row lock; the payment and whether it changed
/// (`false`: the step was made before, a replay).
async fn advance(
    tx: &Transaction<'_>,
    id: &PaymentId,
    step: Step,
    trace: &Trace,
) -> Result<(Payment, bool), Problem> {
    let rows = tx
        .query(
            store::SELECT_FOR_UPDATE,
            vec![ParameterValue::Str(id.as_str().into())],
        )
        .await?
        .collect()
        .await?;
    let payment = match rows.first() {
        Some(row) => Payment::from_row(row)?,
        None => return Err(not_found(id.as_str())),
    };
    let (sql, params, publish): (_, _, fn(&Payment) -> _) = match (step, payment.status) {
        (Step::Capture, Status::Captured) | (Step::Refund, Status::Refunded) => {
            return Ok((payment, false))
        }
        (Step::Capture, Status::Authorized) => (
            store::CAPTURE,
            vec![ParameterValue::Str(id.as_str().into())],
            events::captured,
        ),
        (Step::Refund, Status::Authorized | Status::Captured) => {
            let kind = if payment.status == Status::Authorized {
                "void"
            } else {
                "refund"
            };
            (
                store::REFUND,
                vec![
                    ParameterValue::Str(id.as_str().into()),
                    ParameterValue::Str(kind.into()),
                ],
                events::refunded,
            )
        }
        (_, status) => {
            return Err(Problem::new(
                409,
                ProblemKind::IllegalTransition,
                "The payment cannot take that step",
                format!(
                    "payment `{}` is {}: it cannot be {}d",
                    id.as_str(),
                    status.as_str(),
                    step.name()
                ),
            )
            .with("paymentId", id.as_str())
            .with("paymentStatus", status.as_str())
            .with("step", step.name()))
        }
    };
    let rows = tx.query(sql, params).await?.collect().await?;
    let changed = Payment::from_row(
        rows.first()
            .ok_or_else(|| Problem::internal("a locked payment did not change"))?,
    )?;
    tx.publish(&publish(&changed).traced(trace.traceparent()))
        .await?;
    Ok((changed, true))
}

/// `GET /{paymentId}`: the payment as it is now.
pub async fn get(id: &str) -> Result<Reply, Problem> {
    let id = known_id(id)?;
    let conn = open().await?;
    match find(&conn, store::SELECT, id.as_str()).await? {
        Some(payment) => Ok(json(200, &payment.view())),
        None => Err(not_found(id.as_str())),
    }
}

/// A payment id from a path: one that cannot be valid cannot exist.
fn known_id(id: &str) -> Result<PaymentId, Problem> {
    PaymentId::try_from(id.to_string()).map_err(|_| not_found(id))
}

fn not_found(id: &str) -> Problem {
    Problem::not_found(format!("no payment `{id}`")).with("paymentId", id)
}

/// Refuses a body with fields: partial captures and refunds do not exist
/// here, and silently taking the whole amount would surprise the caller.
async fn no_fields(req: Request) -> Result<(), Problem> {
    let too_large = || {
        Problem::new(
            413,
            ProblemKind::BodyTooLarge,
            "The body is too large",
            format!("at most {MAX_BODY} bytes"),
        )
    };
    let declared = req
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_BODY) {
        return Err(too_large());
    }
    let bytes = req.into_body().bytes().await.map_err(|e| {
        Problem::new(
            400,
            ProblemKind::UnreadableBody,
            "The body could not be read",
            format!("{e:?}"),
        )
    })?;
    if bytes.len() > MAX_BODY {
        return Err(too_large());
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(());
    }
    match parse_json::<Value>(&bytes)? {
        Value::Object(fields) => match fields.keys().next() {
            None => Ok(()),
            Some(field) => Err(Problem::invalid_field(
                field,
                "not supported: a capture or refund is always of the whole amount, send no body",
            )),
        },
        _ => Err(Problem::invalid_field("$", "send no body (or `{}`)")),
    }
}

/// A connection to the component's database, migrated.
async fn open() -> Result<Connection, Problem> {
    let url = spin_sdk::variables::get("db_url")
        .await
        .map_err(|e| Problem::internal(format!("variable db_url: {e:?}")))?;
    let conn = Connection::open(url).await?;
    migrate(&conn, "payment", store::MIGRATIONS, &MIGRATED).await?;
    Ok(conn)
}

async fn find(conn: &Connection, sql: &str, id: &str) -> Result<Option<Payment>, Problem> {
    let rows = conn
        .query(sql, vec![ParameterValue::Str(id.into())])
        .await?
        .collect()
        .await?;
    rows.first().map(Payment::from_row).transpose()
}

/// Marks a repeat's answer.
fn mark(mut reply: Reply, replayed: bool) -> Reply {
    if replayed {
        reply
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    reply
}
