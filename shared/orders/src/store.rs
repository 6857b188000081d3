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

/// Records a saga step's phase, with why it failed (`detail`; an empty one
/// is stored as none), and marks the saga as alive while it is
/// `running`, in one statement.
pub async fn log_step(
    conn: &Connection,
    order_id: &OrderId,
    step: Step,
    phase: Phase,
    detail: Option<&str>,
) -> Result<(), Problem> {
    conn.execute(
        "WITH logged AS (
             INSERT INTO orders.saga_log (order_id, step, phase, detail)
             VALUES ($1, $2, $3, NULLIF($4, '')))
         UPDATE orders.sagas SET step = $2, updated_at = clock_timestamp()
         WHERE order_id = $1 AND state = 'running'",
        vec![
            ParameterValue::Str(order_id.as_str().to_string()),
            ParameterValue::Str(step.as_str().to_string()),
            ParameterValue::Str(phase.as_str().to_string()),
            ParameterValue::Str(detail.unwrap_or_default().to_string()),
        ],
    )
    .await?;
    Ok(())
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
    let id = id.as_str();
    let tx = Transaction::begin(conn).await.map_err(Problem::internal)?;
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
        .await
        .map_err(Problem::internal)?;
    if moved == 0 {
        tx.rollback().await.map_err(Problem::internal)?;
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
        .await
        .map_err(Problem::internal)?;
    }
    let (ty, data) = m.event;
    tx.publish(&CloudEvent::new(ty, SOURCE, id, data).traced(m.trace))
        .await
        .map_err(Problem::internal)?;
    tx.commit().await.map_err(Problem::internal)?;
    Ok(true)
}
