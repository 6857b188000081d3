//! The invariant checker: reconciles the books of a run's orders once the
//! platform has settled.
//!
//! - every checkout answered 201 is an order, once;
//! - every PAID (or FULFILLED) order has a captured payment and its stock
//!   held (a RESERVED or COMMITTED reservation);
//! - every FAILED or CANCELLED order holds no stock and no money (no
//!   RESERVED/COMMITTED reservation, no AUTHORIZED/CAPTURED payment);
//! - stock is never negative: on hand ≥ 0, 0 ≤ reserved ≤ on hand, and
//!   reserved equals what the open reservations hold;
//! - every accepted event is delivered exactly once in effect: each PAID
//!   order has exactly one `order.paid` event, every subscription has
//!   passed the run's events with no dead letter, and the analytics read
//!   model (where it runs) shows each order's final status.
//!
//! It reads the platform's database directly, read-only.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::Serialize;
use tokio_postgres::Client;

/// One invariant's result.
#[derive(Clone, Debug, Serialize)]
pub struct Check {
    /// Its name.
    pub name: String,
    /// Whether it held.
    pub held: bool,
    /// What was counted, and what broke it.
    pub detail: String,
}

/// What the checker is given: the run's orders and products.
pub struct Scope<'a> {
    /// Customer ids of the run start with this (`load-<tag>-`).
    pub customer_prefix: &'a str,
    /// Orders whose checkout was answered 201.
    pub accepted: &'a [String],
    /// The run's product ids (flash-sale product included).
    pub products: &'a [String],
}

async fn connect(db_url: &str) -> anyhow::Result<Client> {
    let config: tokio_postgres::Config = db_url
        .parse()
        .with_context(|| "the database URL (--db-url) does not parse")?;
    let (client, connection) = config
        .connect(tokio_postgres::NoTls)
        .await
        .with_context(|| "connecting to the platform's database (--db-url)")?;
    tokio::spawn(connection);
    Ok(client)
}

/// Waits up to `settle` for the run's sagas to finish and its events to be
/// consumed, then checks every invariant.
pub async fn check(
    db_url: &str,
    scope: &Scope<'_>,
    settle: Duration,
) -> anyhow::Result<Vec<Check>> {
    let client = connect(db_url).await?;
    let like = format!("{}%", scope.customer_prefix);
    let deadline = Instant::now() + settle;
    loop {
        let open = open_sagas(&client, &like).await?;
        let behind = undelivered(&client, &like, scope.products).await?;
        if (open == 0 && behind == 0) || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let mut checks = Vec::new();
    checks.push(sagas_finished(&client, &like).await?);
    checks.push(accepted_kept(&client, scope.accepted).await?);
    checks.push(paid_whole(&client, &like).await?);
    checks.push(unpaid_hold_nothing(&client, &like).await?);
    checks.push(stock_sound(&client, scope.products).await?);
    checks.push(events_once(&client, &like, scope.products).await?);
    Ok(checks)
}

fn verdict(name: &str, bad: i64, detail: String) -> Check {
    Check {
        name: name.to_string(),
        held: bad == 0,
        detail,
    }
}

async fn count(
    client: &Client,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> anyhow::Result<i64> {
    Ok(client
        .query_one(sql, params)
        .await
        .with_context(|| {
            sql.split_whitespace()
                .take(12)
                .collect::<Vec<_>>()
                .join(" ")
        })?
        .get::<_, Option<i64>>(0)
        .unwrap_or(0))
}

/// The run's sagas not yet finished.
async fn open_sagas(client: &Client, like: &str) -> anyhow::Result<i64> {
    count(
        client,
        "SELECT count(*) FROM orders.sagas s JOIN orders.orders o USING (order_id)
         WHERE o.customer_id LIKE $1 AND s.state <> 'finished'",
        &[&like],
    )
    .await
}

async fn sagas_finished(client: &Client, like: &str) -> anyhow::Result<Check> {
    let open = open_sagas(client, like).await?;
    Ok(verdict(
        "every saga finished",
        open,
        format!("{open} sagas still open"),
    ))
}

async fn accepted_kept(client: &Client, accepted: &[String]) -> anyhow::Result<Check> {
    let ids: Vec<&str> = accepted.iter().map(String::as_str).collect();
    let found = count(
        client,
        "SELECT count(*) FROM orders.orders WHERE order_id = ANY($1)",
        &[&ids],
    )
    .await?;
    let lost = ids.len() as i64 - found;
    Ok(verdict(
        "every accepted checkout is an order",
        lost,
        format!("{} accepted (201), {found} found, {lost} lost", ids.len()),
    ))
}

async fn paid_whole(client: &Client, like: &str) -> anyhow::Result<Check> {
    let row = client
        .query_one(
            "SELECT count(*),
                    count(*) FILTER (WHERE p.status IS DISTINCT FROM 'CAPTURED'),
                    count(*) FILTER (WHERE r.status IS NULL OR r.status NOT IN ('RESERVED', 'COMMITTED'))
             FROM orders.orders o
             LEFT JOIN payments p ON p.payment_id = o.order_id
             LEFT JOIN inventory.reservations r ON r.reservation_id = o.order_id
             WHERE o.customer_id LIKE $1 AND o.status IN ('PAID', 'FULFILLED')",
            &[&like],
        )
        .await?;
    let (paid, uncaptured, unheld): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
    Ok(verdict(
        "every PAID order is captured and holds its stock",
        uncaptured + unheld,
        format!(
            "{paid} PAID; {uncaptured} without a captured payment, {unheld} without held stock"
        ),
    ))
}

async fn unpaid_hold_nothing(client: &Client, like: &str) -> anyhow::Result<Check> {
    let row = client
        .query_one(
            "SELECT count(*),
                    count(*) FILTER (WHERE p.status IN ('AUTHORIZED', 'CAPTURED')),
                    count(*) FILTER (WHERE r.status IN ('RESERVED', 'COMMITTED'))
             FROM orders.orders o
             LEFT JOIN payments p ON p.payment_id = o.order_id
             LEFT JOIN inventory.reservations r ON r.reservation_id = o.order_id
             WHERE o.customer_id LIKE $1 AND o.status IN ('FAILED', 'CANCELLED')",
            &[&like],
        )
        .await?;
    let (unpaid, money, stock): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
    Ok(verdict(
        "every FAILED or CANCELLED order holds no stock and no money",
        money + stock,
        format!(
            "{unpaid} FAILED/CANCELLED; {money} still holding money, {stock} still holding stock"
        ),
    ))
}

async fn stock_sound(client: &Client, products: &[String]) -> anyhow::Result<Check> {
    let ids: Vec<&str> = products.iter().map(String::as_str).collect();
    let row = client
        .query_one(
            "SELECT count(*),
                    count(*) FILTER (WHERE s.on_hand < 0 OR s.reserved < 0 OR s.reserved > s.on_hand),
                    count(*) FILTER (WHERE s.reserved <> coalesce(h.held, 0))
             FROM inventory.stock s
             LEFT JOIN (SELECT i.product_id, sum(i.quantity)::bigint AS held
                        FROM inventory.reservation_items i
                        JOIN inventory.reservations r USING (reservation_id)
                        WHERE r.status = 'RESERVED' GROUP BY i.product_id) h USING (product_id)
             WHERE s.product_id = ANY($1)",
            &[&ids],
        )
        .await?;
    let (n, negative, mismatched): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
    Ok(verdict(
        "stock never negative, reserved = open reservations",
        negative + mismatched + (ids.len() as i64 - n),
        format!(
            "{n} of {} products checked; {negative} negative or over-reserved, {mismatched} whose \
             reserved units differ from their open reservations",
            ids.len()
        ),
    ))
}

/// Events of the run (about its orders or products) that some subscription
/// of their type has not yet passed.
async fn undelivered(client: &Client, like: &str, products: &[String]) -> anyhow::Result<i64> {
    let ids: Vec<&str> = products.iter().map(String::as_str).collect();
    count(
        client,
        "SELECT count(*) FROM bv_events.outbox e
         JOIN bv_events.subscriptions s ON e.type = ANY(s.types)
         WHERE (e.subject IN (SELECT order_id FROM orders.orders WHERE customer_id LIKE $1)
                OR e.subject = ANY($2))
           AND (e.tx, e.seq) > (s.position_tx, s.position_seq)",
        &[&like, &ids],
    )
    .await
}

async fn events_once(client: &Client, like: &str, products: &[String]) -> anyhow::Result<Check> {
    let ids: Vec<&str> = products.iter().map(String::as_str).collect();
    let behind = undelivered(client, like, products).await?;
    let dead = count(
        client,
        "SELECT count(*) FROM bv_events.dead_letters d
         WHERE d.subject IN (SELECT order_id FROM orders.orders WHERE customer_id LIKE $1)
            OR d.subject = ANY($2)",
        &[&like, &ids],
    )
    .await?;
    let dead_letters: Vec<String> = client
        .query(
            "SELECT d.subscription, d.type, d.attempts, d.last_error FROM bv_events.dead_letters d
             WHERE d.subject IN (SELECT order_id FROM orders.orders WHERE customer_id LIKE $1)
                OR d.subject = ANY($2)
             ORDER BY d.id LIMIT 3",
            &[&like, &ids],
        )
        .await?
        .iter()
        .map(|r| {
            format!(
                "{} <- {} after {} attempts: {}",
                r.get::<_, String>(0),
                r.get::<_, String>(1),
                r.get::<_, i32>(2),
                r.get::<_, String>(3)
            )
        })
        .collect();
    let not_once = count(
        client,
        "SELECT count(*) FROM orders.orders o
         WHERE o.customer_id LIKE $1 AND o.status IN ('PAID', 'FULFILLED')
           AND (SELECT count(*) FROM bv_events.outbox e
                WHERE e.subject = o.order_id AND e.type = 'com.bitvelocity.order.paid.v1') <> 1",
        &[&like],
    )
    .await?;
    let analytics: bool = client
        .query_one(
            "SELECT to_regclass('analytics.orders_by_customer') IS NOT NULL",
            &[],
        )
        .await?
        .get(0);
    let (stale, analytics_note) = if analytics {
        let stale = count(
            client,
            "SELECT count(*) FROM orders.orders o
             LEFT JOIN analytics.orders_by_customer a USING (order_id)
             WHERE o.customer_id LIKE $1 AND a.status IS DISTINCT FROM o.status",
            &[&like],
        )
        .await?;
        (
            stale,
            format!("{stale} orders whose analytics status differs"),
        )
    } else {
        (0, "no analytics read model in this database".to_string())
    };
    Ok(verdict(
        "every accepted event delivered exactly once in effect",
        behind + dead + not_once + stale,
        format!(
            "{behind} events not yet passed by a subscription, {dead} dead letters{}, {not_once} \
             PAID orders without exactly one order.paid event, {analytics_note}",
            if dead_letters.is_empty() {
                String::new()
            } else {
                format!(" ({})", dead_letters.join("; "))
            }
        ),
    ))
}
