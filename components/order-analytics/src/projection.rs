//! The event half: each order event, in outbox order, into the read model
//! and the windows.
//!
//! One transaction per event: the claim (`bv_events.processed`), the
//! record of the event in `analytics.applied`, and every write it makes,
//! so an event has its effect once however often it is delivered.
//!
//! Window time is the event's own `time`. The watermark is the latest
//! event time applied so far minus [`ALLOWED_LATENESS_MS`]; an event whose
//! minute ended at or before it is late: it does not go into the windows
//! (`minute_totals`, `minute_products`) but into `late_events`, which the
//! API counts. The read model takes every event. Replay feeds the same
//! events in the same order, so the same events are late again.
//!
//! Rebuilding: `bv events replay <subscription> --from-offset 0
//! --forget-processed` clears the claims, so the projection's first event
//! comes again with a claim that succeeds although `analytics.applied`
//! has it. That is the rebuild's start: every table is emptied in that
//! event's transaction, and the log is applied again from it. Any other
//! event already applied (a replay that starts later in the log, or an
//! event a subscription still had in hand when the replay moved it back)
//! changes nothing and is not claimed, so it comes again in its place.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;

use anyhow::Context;
use bv_events_guest::{Event, Reject, Transaction};
use serde::Deserialize;
use spin_sdk::pg::{Connection, ParameterValue};

use crate::schema;
use crate::time::{self, ALLOWED_LATENESS_MS, MINUTE_MS};

static MIGRATED: AtomicBool = AtomicBool::new(false);

/// The `data` of every order event, as far as the projections need it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderData {
    order_id: String,
    customer_id: String,
    /// `order.placed`.
    #[serde(default)]
    items: Vec<Item>,
    /// `order.placed`, `order.paid`.
    #[serde(default)]
    total: Option<Amount>,
    /// `order.expired`: the order's status when its checkout stalled.
    #[serde(default)]
    status: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Item {
    product_id: String,
    sku: String,
    quantity: i64,
}

#[derive(Debug, Deserialize)]
struct Amount {
    amount: i64,
    currency: String,
}

/// The order events the projections take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Placed,
    Confirmed,
    Paid,
    Fulfilled,
    Cancelled,
    Failed,
    Expired,
}

impl Kind {
    fn of(ty: &str) -> Option<Self> {
        Some(match ty {
            "com.bitvelocity.order.placed.v1" => Kind::Placed,
            "com.bitvelocity.order.confirmed.v1" => Kind::Confirmed,
            "com.bitvelocity.order.paid.v1" => Kind::Paid,
            "com.bitvelocity.order.fulfilled.v1" => Kind::Fulfilled,
            "com.bitvelocity.order.cancelled.v1" => Kind::Cancelled,
            "com.bitvelocity.order.failed.v1" => Kind::Failed,
            "com.bitvelocity.order.expired.v1" => Kind::Expired,
            _ => return None,
        })
    }

    /// The order's status after the event.
    fn status(self, data: &OrderData) -> &str {
        match self {
            Kind::Placed => "PENDING",
            Kind::Confirmed => "CONFIRMED",
            Kind::Paid => "PAID",
            Kind::Fulfilled => "FULFILLED",
            Kind::Cancelled => "CANCELLED",
            Kind::Failed => "FAILED",
            Kind::Expired => data.status.as_deref().unwrap_or("PENDING"),
        }
    }
}

/// The database, migrated.
pub async fn open() -> anyhow::Result<Connection> {
    let url = spin_sdk::variables::get("db_url")
        .await
        .context("variable db_url")?;
    let conn = Connection::open(url).await.context("connecting")?;
    bv_service::migrate(&conn, schema::COMPONENT, schema::MIGRATIONS, &MIGRATED)
        .await
        .map_err(|p| anyhow::anyhow!("migrating: {}", p.detail))?;
    Ok(conn)
}

fn text(s: &str) -> ParameterValue {
    ParameterValue::Str(s.to_string())
}

#[bv_events_guest::handler]
async fn on_order_event(event: Event<OrderData>) -> anyhow::Result<()> {
    let Some(kind) = Kind::of(&event.ty) else {
        return Err(Reject::new(format!("type: `{}` is not an order event", event.ty)).into());
    };
    let Some(at) = time::parse(&event.time) else {
        return Err(Reject::new(format!("time: `{}` is not RFC 3339", event.time)).into());
    };
    let conn = open().await?;
    let tx = Transaction::begin(&conn).await?;
    if !tx.claim(&event).await? {
        tx.rollback().await?;
        return Ok(());
    }
    let key = vec![text(&event.source), text(&event.id)];
    let applied = !tx
        .query(
            "SELECT 1 FROM analytics.applied WHERE source = $1 AND event_id = $2",
            key.clone(),
        )
        .await?
        .collect()
        .await?
        .is_empty();
    let stream = tx
        .query(
            "SELECT first_source, first_event_id,
                    round(extract(epoch FROM max_event_time) * 1000)::bigint AS max_ms
             FROM analytics.stream FOR UPDATE",
            Vec::new(),
        )
        .await?
        .collect()
        .await?;
    let mut latest = stream.first().and_then(|r| r.get::<i64>("max_ms"));
    if applied {
        let first = stream.first().is_some_and(|r| {
            r.get::<String>("first_source").as_deref() == Some(event.source.as_str())
                && r.get::<String>("first_event_id").as_deref() == Some(event.id.as_str())
        });
        if !first {
            // In the projection already: nothing to do, and no claim, so
            // that the event counts again if a rebuild reaches it.
            tx.rollback().await?;
            return Ok(());
        }
        // A replay from the start of the log: rebuild from scratch.
        for table in schema::TABLES {
            tx.execute(format!("DELETE FROM {table}"), Vec::new())
                .await?;
        }
        latest = None;
        eprintln!(
            "order-analytics: rebuilding the projections from event {}",
            event.id
        );
    }
    let data = &event.data;

    // The read model takes every event.
    let total = data.total.as_ref();
    let amount = total.map_or(ParameterValue::DbNull, |t| ParameterValue::Int64(t.amount));
    let currency = total.map_or(ParameterValue::DbNull, |t| text(&t.currency));
    let when = text(&time::format(at));
    if kind == Kind::Placed {
        let items: i64 = data.items.iter().map(|i| i.quantity).sum();
        tx.execute(
            "INSERT INTO analytics.orders_by_customer
                 (order_id, customer_id, status, total_amount, currency, item_count, placed_at, updated_at)
             VALUES ($1, $2, 'PENDING', $3, $4, $5, $6::text::timestamptz, $6::text::timestamptz)
             ON CONFLICT (order_id) DO UPDATE SET
                 customer_id = EXCLUDED.customer_id, total_amount = EXCLUDED.total_amount,
                 currency = EXCLUDED.currency, item_count = EXCLUDED.item_count,
                 placed_at = EXCLUDED.placed_at, updated_at = EXCLUDED.updated_at",
            vec![
                text(&data.order_id),
                text(&data.customer_id),
                amount.clone(),
                currency.clone(),
                ParameterValue::Int32(i32::try_from(items).unwrap_or(i32::MAX)),
                when.clone(),
            ],
        )
        .await?;
    } else {
        tx.execute(
            "INSERT INTO analytics.orders_by_customer
                 (order_id, customer_id, status, total_amount, currency, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6::text::timestamptz)
             ON CONFLICT (order_id) DO UPDATE SET
                 status = EXCLUDED.status,
                 total_amount = COALESCE(EXCLUDED.total_amount, orders_by_customer.total_amount),
                 currency = COALESCE(EXCLUDED.currency, orders_by_customer.currency),
                 updated_at = EXCLUDED.updated_at",
            vec![
                text(&data.order_id),
                text(&data.customer_id),
                text(kind.status(data)),
                amount,
                currency,
                when.clone(),
            ],
        )
        .await?;
    }

    // The windows take orders placed and paid, unless late.
    if let (Kind::Placed | Kind::Paid, Some(total)) = (kind, total) {
        let minute = time::minute(at);
        let watermark = latest.map(|l| l - ALLOWED_LATENESS_MS);
        if watermark.is_some_and(|w| minute + MINUTE_MS <= w) {
            tx.execute(
                "INSERT INTO analytics.late_events
                     (source, event_id, type, order_id, event_time, watermark)
                 VALUES ($1, $2, $3, $4, $5::text::timestamptz, $6::text::timestamptz)
                 ON CONFLICT DO NOTHING",
                vec![
                    text(&event.source),
                    text(&event.id),
                    text(&event.ty),
                    text(&data.order_id),
                    when.clone(),
                    text(&time::format(watermark.unwrap_or_default())),
                ],
            )
            .await?;
        } else {
            add_to_windows(&tx, kind, minute, total, &data.items).await?;
        }
    }

    tx.execute(
        "INSERT INTO analytics.applied (source, event_id) VALUES ($1, $2)",
        key,
    )
    .await?;
    tx.execute(
        "INSERT INTO analytics.stream (first_source, first_event_id, max_event_time, events)
         VALUES ($1, $2, $3::text::timestamptz, 1)
         ON CONFLICT (id) DO UPDATE SET
             max_event_time = GREATEST(stream.max_event_time, EXCLUDED.max_event_time),
             events = stream.events + 1",
        vec![text(&event.source), text(&event.id), when],
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Adds an order placed or paid to its minute.
async fn add_to_windows(
    tx: &Transaction<'_>,
    kind: Kind,
    minute: i64,
    total: &Amount,
    items: &[Item],
) -> anyhow::Result<()> {
    let minute = text(&time::format(minute));
    let (orders, paid) = if kind == Kind::Placed { (1, 0) } else { (0, 1) };
    tx.execute(
        "INSERT INTO analytics.minute_totals (minute, currency, orders, order_value, paid, revenue)
         VALUES ($1::text::timestamptz, $2, $3, $4, $5, $6)
         ON CONFLICT (minute, currency) DO UPDATE SET
             orders = minute_totals.orders + EXCLUDED.orders,
             order_value = minute_totals.order_value + EXCLUDED.order_value,
             paid = minute_totals.paid + EXCLUDED.paid,
             revenue = minute_totals.revenue + EXCLUDED.revenue",
        vec![
            minute.clone(),
            text(&total.currency),
            ParameterValue::Int64(orders),
            ParameterValue::Int64(total.amount * orders),
            ParameterValue::Int64(paid),
            ParameterValue::Int64(total.amount * paid),
        ],
    )
    .await?;
    if kind != Kind::Placed {
        return Ok(());
    }
    // One order counts once per product, whatever its lines.
    let mut products: BTreeMap<&str, (&str, i64)> = BTreeMap::new();
    for item in items {
        let entry = products
            .entry(item.product_id.as_str())
            .or_insert((item.sku.as_str(), 0));
        entry.1 += item.quantity;
    }
    for (product, (sku, quantity)) in products {
        tx.execute(
            "INSERT INTO analytics.minute_products (minute, product_id, sku, quantity, orders)
             VALUES ($1::text::timestamptz, $2, $3, $4, 1)
             ON CONFLICT (minute, product_id) DO UPDATE SET
                 sku = EXCLUDED.sku,
                 quantity = minute_products.quantity + EXCLUDED.quantity,
                 orders = minute_products.orders + 1",
            vec![
                minute.clone(),
                text(product),
                text(sku),
                ParameterValue::Int64(quantity),
            ],
        )
        .await?;
    }
    Ok(())
}
