//! Reading orders and moving them between states, each move with its
//! event in the same transaction.

use bv_events_guest::{CloudEvent, Transaction};
use bv_service::{Currency, Money, Problem};
use serde_json::{json, Value};
use spin_sdk::pg::{Connection, ParameterValue, Row};

use super::model::{status_in, CustomerId, OrderId, OrderLine, Phase, SagaState, Status, Step};

/// Where the order service's events come from.
pub const SOURCE: &str = "/orders";

/// The columns [`Order::from_row`] reads.
pub const COLUMNS: &str = "order_id, customer_id, status, reason, \
     items::text AS items, total_amount, currency, \
     to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') AS created_at, \
     to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') AS updated_at";

/// An order as stored.
#[derive(Debug, Clone)]
pub struct Order {
    /// Its id (also the reservation id and the payment id).
    pub id: OrderId,
    /// Whose it is.
    pub customer: CustomerId,
    /// Where it is.
    pub status: Status,
    /// Why it failed or was cancelled; `None` otherwise.
    pub reason: Option<String>,
    /// Its lines.
    pub items: Vec<OrderLine>,
    /// The sum of its lines.
    pub total: Money,
    /// When it was placed.
    pub created_at: String,
    /// When it last changed.
    pub updated_at: String,
}

impl Order {
    /// Reads a row selected with [`COLUMNS`].
    pub fn from_row(row: &Row) -> Result<Self, Problem> {
        let text = |c: &str| {
            row.get::<String>(c)
                .ok_or_else(|| Problem::internal(format!("orders.{c} is missing")))
        };
        let status = Status::parse(&text("status")?)
            .ok_or_else(|| Problem::internal("orders.status is unknown"))?;
        let currency = Currency::parse(&text("currency")?)
            .ok_or_else(|| Problem::internal("orders.currency is unknown"))?;
        let amount = row
            .get::<i64>("total_amount")
            .ok_or_else(|| Problem::internal("orders.total_amount is missing"))?;
        Ok(Self {
            id: OrderId::from(text("order_id")?),
            customer: CustomerId::from(text("customer_id")?),
            status,
            reason: row
                .get::<Option<String>>("reason")
                .ok_or_else(|| Problem::internal("orders.reason is missing"))?
                .filter(|r| !r.is_empty()),
            items: serde_json::from_str(&text("items")?).map_err(Problem::internal)?,
            total: Money::new(amount, currency).map_err(Problem::internal)?,
            created_at: text("created_at")?,
            updated_at: text("updated_at")?,
        })
    }

    /// The order as the API shows it.
    pub fn view(&self) -> Value {
        let mut v = json!({
            "orderId": self.id,
            "customerId": self.customer,
            "status": self.status.as_str(),
            "items": self.items,
            "total": self.total,
            "createdAt": self.created_at,
            "updatedAt": self.updated_at,
        });
        if let Some(reason) = &self.reason {
            v["reason"] = json!(reason);
        }
        v
    }
}

/// Opens the database named by the `db_url` variable.
pub async fn open() -> Result<Connection, Problem> {
    let url = spin_sdk::variables::get("db_url")
        .await
        .map_err(|e| Problem::internal(format!("variable db_url: {e:?}")))?;
    Connection::open(url)
        .await
        .map_err(|e| Problem::unavailable(format!("the order database: {e}")))
}

/// The order `id`, if any.
pub async fn load(conn: &Connection, id: &OrderId) -> Result<Option<Order>, Problem> {
    let rows = conn
        .query(
            format!("SELECT {COLUMNS} FROM orders.orders WHERE order_id = $1"),
            vec![ParameterValue::Str(id.as_str().to_string())],
        )
        .await?
        .collect()
        .await?;
    rows.first().map(Order::from_row).transpose()
}

/// One saga log entry: a step's phase, with why it failed (`detail`; an
/// empty one is stored as none).
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    /// The step.
    pub step: Step,
    /// How far it got.
    pub phase: Phase,
    /// Why it failed.
    pub detail: Option<&'a str>,
}

impl Entry<'_> {
    /// `step` reached `phase`, with nothing more to say.
    pub fn of(step: Step, phase: Phase) -> Entry<'static> {
        Entry {
            step,
            phase,
            detail: None,
        }
    }
}

/// The statement that records `n` entries (in their order) and, while the
/// saga is `running`, marks it alive at the last entry's step; with its
/// parameters.
fn log_statement(order_id: &OrderId, entries: &[Entry<'_>]) -> (String, Vec<ParameterValue>) {
    let mut params = vec![ParameterValue::Str(order_id.as_str().to_string())];
    let mut rows = Vec::with_capacity(entries.len());
    for e in entries {
        let n = params.len();
        rows.push(format!(
            "($1, ${}, ${}, NULLIF(${}, ''))",
            n + 1,
            n + 2,
            n + 3
        ));
        params.push(ParameterValue::Str(e.step.as_str().to_string()));
        params.push(ParameterValue::Str(e.phase.as_str().to_string()));
        params.push(ParameterValue::Str(
            e.detail.unwrap_or_default().to_string(),
        ));
    }
    let last_step = params.len() - 2;
    let sql = format!(
        "WITH logged AS (
             INSERT INTO orders.saga_log (order_id, step, phase, detail) VALUES {})
         UPDATE orders.sagas SET step = ${last_step}, updated_at = clock_timestamp()
         WHERE order_id = $1 AND state = 'running'",
        rows.join(", ")
    );
    (sql, params)
}

/// Records `entries` (in their order) and marks the saga as alive while it
/// is `running`, in one statement; nothing to do for none.
pub async fn log_steps(
    conn: &Connection,
    order_id: &OrderId,
    entries: &[Entry<'_>],
) -> Result<(), Problem> {
    if entries.is_empty() {
        return Ok(());
    }
    let (sql, params) = log_statement(order_id, entries);
    conn.execute(sql, params).await?;
    Ok(())
}

/// Records one saga step's phase ([`log_steps`] of one entry).
pub async fn log_step(
    conn: &Connection,
    order_id: &OrderId,
    step: Step,
    phase: Phase,
    detail: Option<&str>,
) -> Result<(), Problem> {
    log_steps(
        conn,
        order_id,
        &[Entry {
            step,
            phase,
            detail,
        }],
    )
    .await
}

/// A move of an order from one of `from` to `to`.
pub struct Move<'a> {
    /// The statuses the move may start from.
    pub from: &'a [Status],
    /// Where it goes.
    pub to: Status,
    /// Why (FAILED, CANCELLED).
    pub reason: Option<&'a str>,
    /// The saga's state afterwards, if it changes.
    pub saga: Option<SagaState>,
    /// The event type to publish (`com.bitvelocity.order.<x>.v1`) and its data.
    pub event: (&'a str, Value),
    /// The `traceparent` of the request or event that makes the move: the
    /// event joins its trace.
    pub trace: Option<&'a str>,
}

/// Applies `m` to order `id` in one transaction with its event; `false`
/// (and nothing changed) when the order is no longer in one of `m.from`.
pub async fn transition(conn: &Connection, id: &OrderId, m: Move<'_>) -> Result<bool, Problem> {
    transition_logged(conn, id, &[], m).await
}

/// Records the saga log `entries` and applies `m`, in one transaction: the
/// entries are kept even when the order is no longer in one of `m.from`
/// (`false`; the order and its events unchanged).
pub async fn transition_logged(
    conn: &Connection,
    order_id: &OrderId,
    entries: &[Entry<'_>],
    m: Move<'_>,
) -> Result<bool, Problem> {
    let id = order_id.as_str();
    let tx = Transaction::begin(conn).await?;
    if !entries.is_empty() {
        let (sql, params) = log_statement(order_id, entries);
        tx.execute(sql, params).await?;
    }
    let moved = tx
        .execute(
            format!(
                "UPDATE orders.orders SET status = $2, reason = coalesce($3, reason),
                     updated_at = clock_timestamp()
                 WHERE order_id = $1 AND {}",
                status_in(m.from)
            ),
            vec![
                ParameterValue::Str(id.to_string()),
                ParameterValue::Str(m.to.as_str().to_string()),
                m.reason
                    .map_or(ParameterValue::DbNull, |r| ParameterValue::Str(r.into())),
            ],
        )
        .await?;
    if moved == 0 {
        if entries.is_empty() {
            tx.rollback().await?;
        } else {
            tx.commit().await?;
        }
        return Ok(false);
    }
    if let Some(state) = m.saga {
        tx.execute(
            "UPDATE orders.sagas SET state = $2, updated_at = clock_timestamp()
             WHERE order_id = $1",
            vec![
                ParameterValue::Str(id.to_string()),
                ParameterValue::Str(state.as_str().to_string()),
            ],
        )
        .await?;
    }
    let (ty, data) = m.event;
    tx.publish(&CloudEvent::new(ty, SOURCE, id, data).traced(m.trace))
        .await?;
    tx.commit().await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_logged_in_order_and_the_saga_is_at_the_last_step() {
        let id = OrderId::from("o-1".to_string());
        let failed = Entry {
            step: Step::AuthorizePayment,
            phase: Phase::Failed,
            detail: Some("declined"),
        };
        let compensating = Entry::of(Step::Compensate, Phase::Started);
        let (sql, params) = log_statement(&id, &[failed, compensating]);
        assert!(
            sql.contains("VALUES ($1, $2, $3, NULLIF($4, '')), ($1, $5, $6, NULLIF($7, '')))"),
            "{sql}"
        );
        assert!(sql.contains("SET step = $5,"), "{sql}");
        let text: Vec<String> = params
            .iter()
            .map(|p| match p {
                ParameterValue::Str(s) => s.clone(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            text,
            [
                "o-1",
                Step::AuthorizePayment.as_str(),
                "failed",
                "declined",
                Step::Compensate.as_str(),
                "started",
                ""
            ]
        );
    }
}
