//! Every read and change of the inventory tables.
//!
//! Stock never goes negative, also under concurrent requests: a change
//! first locks the stock rows it touches (`FOR UPDATE`, in product-id byte
//! order everywhere, so that two transactions sharing products wait for
//! each other instead of deadlocking), checks against what it locked, and
//! only then writes; the tables' CHECK constraints refuse anything that
//! slipped past. Each change publishes its event in its own transaction.

use bv_events_guest::Transaction;
use bv_service::{Problem, Trace};
use serde_json::json;
use spin_sdk::pg::{Connection, Decode, ParameterValue, Row};

use crate::events;
use crate::model::{
    Item, NewReservation, ProductId, Reservation, ReservationId, Restock, Status, Stock,
};
use crate::problems::{self, db, pg};

/// How long a reservation is meant to hold its stock (`expiresAt`).
const HOLD: &str = "15 minutes";

/// A timestamp column as RFC 3339 in UTC, with milliseconds.
macro_rules! rfc3339 {
    ($col:literal) => {
        concat!(
            "to_char(",
            $col,
            r#" AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') AS "#,
            $col
        )
    };
}

/// Runs `work` in a transaction: committed when it returns `Ok`, rolled
/// back when it returns a problem (so a refused request changes nothing).
pub async fn atomically<T>(
    conn: &Connection,
    work: impl AsyncFnOnce(&Transaction<'_>) -> Result<T, Problem>,
) -> Result<T, Problem> {
    let tx = Transaction::begin(conn).await.map_err(db)?;
    match work(&tx).await {
        Ok(value) => {
            tx.commit().await.map_err(db)?;
            Ok(value)
        }
        Err(problem) => {
            // The connection is dropped with the request anyway, and the
            // host rolls back what is left open.
            let _ = tx.rollback().await;
            Err(problem)
        }
    }
}

async fn rows(
    tx: &Transaction<'_>,
    sql: &str,
    params: Vec<ParameterValue>,
) -> Result<Vec<Row>, Problem> {
    tx.query(sql, params)
        .await
        .map_err(db)?
        .collect()
        .await
        .map_err(pg)
}

fn col<T: Decode>(row: &Row, name: &str) -> Result<T, Problem> {
    row.get(name)
        .ok_or_else(|| Problem::internal(format!("column `{name}` missing or of another type")))
}

fn text(s: &str) -> ParameterValue {
    ParameterValue::Str(s.to_string())
}

fn stock_of(row: &Row) -> Result<Stock, Problem> {
    Ok(Stock {
        product_id: col(row, "product_id")?,
        sku: col(row, "sku")?,
        on_hand: col(row, "on_hand")?,
        reserved: col(row, "reserved")?,
    })
}

/// The stock of `product`, if the inventory knows it.
pub async fn stock(tx: &Transaction<'_>, product: &ProductId) -> Result<Option<Stock>, Problem> {
    let found = rows(
        tx,
        "SELECT product_id, sku, on_hand, reserved FROM inventory.stock WHERE product_id = $1",
        vec![text(product.as_str())],
    )
    .await?;
    found.first().map(stock_of).transpose()
}

/// Adds `restock.quantity` to `product`'s stock on hand and publishes
/// `stock.restocked`; 404 when the product has no stock record.
pub async fn restock(
    tx: &Transaction<'_>,
    product: &ProductId,
    restock: &Restock,
    trace: &Trace,
) -> Result<Stock, Problem> {
    let quantity = restock.quantity.get();
    let found = rows(
        tx,
        "UPDATE inventory.stock SET on_hand = on_hand + $2, updated_at = now()
         WHERE product_id = $1
         RETURNING product_id, sku, on_hand, reserved",
        vec![text(product.as_str()), ParameterValue::Int64(quantity)],
    )
    .await?;
    let stock =
        found.first().map(stock_of).transpose()?.ok_or_else(|| {
            Problem::not_found(format!("no stock record for product `{product}`"))
        })?;
    tx.publish(&events::restocked(&stock, quantity).traced(trace.traceparent()))
        .await
        .map_err(db)?;
    Ok(stock)
}

/// The reservation `id`, with its lines; locked for update when `lock`.
pub async fn reservation(
    tx: &Transaction<'_>,
    id: &ReservationId,
    lock: bool,
) -> Result<Option<Reservation>, Problem> {
    let sql = format!(
        "SELECT order_id, status, {} FROM inventory.reservations WHERE reservation_id = $1{}",
        rfc3339!("expires_at"),
        if lock { " FOR UPDATE" } else { "" }
    );
    let found = rows(tx, &sql, vec![text(id.as_str())]).await?;
    let Some(row) = found.first() else {
        return Ok(None);
    };
    let status: String = col(row, "status")?;
    let status = Status::parse(&status)
        .ok_or_else(|| Problem::internal(format!("unknown reservation status `{status}`")))?;
    let lines = rows(
        tx,
        r#"SELECT i.product_id, s.sku, i.quantity
           FROM inventory.reservation_items i JOIN inventory.stock s USING (product_id)
           WHERE i.reservation_id = $1 ORDER BY i.product_id COLLATE "C""#,
        vec![text(id.as_str())],
    )
    .await?;
    Ok(Some(Reservation {
        id: id.clone(),
        order_id: col(row, "order_id")?,
        status,
        items: lines
            .iter()
            .map(|l| {
                Ok(Item {
                    product_id: col(l, "product_id")?,
                    sku: col(l, "sku")?,
                    quantity: col(l, "quantity")?,
                })
            })
            .collect::<Result<_, Problem>>()?,
        expires_at: col(row, "expires_at")?,
    }))
}

/// What [`reserve`] did.
pub enum Reserved {
    /// A new reservation (201).
    Created(Reservation),
    /// The same request again: the reservation as it stands (200).
    Replayed(Reservation),
}

/// Holds every line of `request` or none: 409 `insufficient-stock` naming
/// each product short, 422 `unknown-product` for products without stock,
/// 422 `idempotency-mismatch` when the id was used for another request.
pub async fn reserve(
    tx: &Transaction<'_>,
    request: &NewReservation,
    trace: &Trace,
) -> Result<Reserved, Problem> {
    let id = &request.reservation_id;
    // The id first: a concurrent request with the same id waits here for
    // the other transaction, then finds its reservation (or, if that one
    // was refused and rolled back, goes ahead itself).
    let inserted = rows(
        tx,
        &format!(
            "INSERT INTO inventory.reservations (reservation_id, order_id, expires_at)
             VALUES ($1, $2, now() + interval '{HOLD}')
             ON CONFLICT (reservation_id) DO NOTHING
             RETURNING {}",
            rfc3339!("expires_at")
        ),
        vec![text(id.as_str()), text(request.order_id.as_str())],
    )
    .await?;
    let Some(row) = inserted.first() else {
        let existing = reservation(tx, id, false)
            .await?
            .ok_or_else(|| Problem::internal(format!("reservation `{id}` vanished")))?;
        if existing.is_bar() {
            // Barred by a release that came first: its caller gave up.
            return Err(problems::illegal_transition(
                id.as_str(),
                Status::Released.as_str(),
                Status::Reserved.as_str(),
            ));
        }
        if !existing.matches(request) {
            return Err(problems::idempotency_mismatch(id.as_str()));
        }
        return Ok(Reserved::Replayed(existing));
    };
    let expires_at: String = col(row, "expires_at")?;

    let ids: Vec<Option<String>> = request
        .items
        .product_ids()
        .into_iter()
        .map(|p| Some(p.to_string()))
        .collect();
    let locked = rows(
        tx,
        r#"SELECT product_id, sku, on_hand, reserved FROM inventory.stock
           WHERE product_id = ANY($1) ORDER BY product_id COLLATE "C" FOR UPDATE"#,
        vec![ParameterValue::ArrayStr(ids)],
    )
    .await?
    .iter()
    .map(stock_of)
    .collect::<Result<Vec<_>, _>>()?;

    let mut unknown = Vec::new();
    let mut short = Vec::new();
    let mut items = Vec::new();
    for line in request.items.iter() {
        let wanted = line.quantity.get();
        match locked
            .iter()
            .find(|s| s.product_id == line.product_id.as_str())
        {
            None => unknown.push(line.product_id.to_string()),
            Some(s) if s.available() < wanted => short.push(json!({
                "productId": s.product_id, "requested": wanted, "available": s.available()
            })),
            Some(s) => items.push(Item {
                product_id: s.product_id.clone(),
                sku: s.sku.clone(),
                quantity: wanted,
            }),
        }
    }
    if !unknown.is_empty() {
        return Err(problems::unknown_products(unknown));
    }
    if !short.is_empty() {
        return Err(problems::insufficient_stock(short));
    }

    for item in &items {
        tx.execute(
            "UPDATE inventory.stock SET reserved = reserved + $2, updated_at = now()
             WHERE product_id = $1",
            vec![text(&item.product_id), ParameterValue::Int64(item.quantity)],
        )
        .await
        .map_err(db)?;
        tx.execute(
            "INSERT INTO inventory.reservation_items (reservation_id, product_id, quantity)
             VALUES ($1, $2, $3)",
            vec![
                text(id.as_str()),
                text(&item.product_id),
                ParameterValue::Int64(item.quantity),
            ],
        )
        .await
        .map_err(db)?;
    }
    let created = Reservation {
        id: id.clone(),
        order_id: request.order_id.to_string(),
        status: Status::Reserved,
        items,
        expires_at,
    };
    tx.publish(&events::reservation(&created).traced(trace.traceparent()))
        .await
        .map_err(db)?;
    Ok(Reserved::Created(created))
}

/// Records reservation `id` as `RELEASED` with no lines (a bar) when no
/// reservation has it; `None` then. When a reserve under the same id is
/// still running, the insert waits for it and finds its reservation,
/// returned locked.
async fn bar(tx: &Transaction<'_>, id: &ReservationId) -> Result<Option<Reservation>, Problem> {
    let barred = rows(
        tx,
        "INSERT INTO inventory.reservations (reservation_id, order_id, status, expires_at)
         VALUES ($1, $1, 'RELEASED', now())
         ON CONFLICT (reservation_id) DO NOTHING
         RETURNING reservation_id",
        vec![text(id.as_str())],
    )
    .await?;
    if !barred.is_empty() {
        return Ok(None);
    }
    reservation(tx, id, true).await
}

/// Moves reservation `id` from `RESERVED` to `to` (`RELEASED`: its stock
/// is free again; `COMMITTED`: its stock leaves on-hand for good) and
/// publishes the matching event. Asking for the status it already has
/// changes nothing; any other move is 409 `illegal-transition`. `Ok(None)`:
/// a release of an id nothing was reserved under, which barred it.
pub async fn transition(
    tx: &Transaction<'_>,
    id: &ReservationId,
    to: Status,
    trace: &Trace,
) -> Result<Option<Reservation>, Problem> {
    let found = match reservation(tx, id, true).await? {
        // Nothing was reserved under this id: bar it (committed with this
        // transaction: `Ok(None)`), so that a reserve arriving late (its
        // caller gave up and released) holds nothing.
        None if to == Status::Released => match bar(tx, id).await? {
            None => return Ok(None),
            found => found,
        },
        found => found,
    };
    let mut r = found
        .filter(|r| !r.is_bar())
        .ok_or_else(|| Problem::not_found(format!("no reservation `{id}`")))?;
    if r.status == to {
        return Ok(Some(r));
    }
    if r.status != Status::Reserved || to == Status::Reserved {
        return Err(problems::illegal_transition(
            id.as_str(),
            r.status.as_str(),
            to.as_str(),
        ));
    }
    let sql = if to == Status::Committed {
        "UPDATE inventory.stock
         SET on_hand = on_hand - $2, reserved = reserved - $2, updated_at = now()
         WHERE product_id = $1"
    } else {
        "UPDATE inventory.stock SET reserved = reserved - $2, updated_at = now()
         WHERE product_id = $1"
    };
    // `r.items` is in product-id byte order: the same lock order as
    // `reserve`.
    for item in &r.items {
        tx.execute(
            sql,
            vec![text(&item.product_id), ParameterValue::Int64(item.quantity)],
        )
        .await
        .map_err(db)?;
    }
    tx.execute(
        "UPDATE inventory.reservations SET status = $2, updated_at = now()
         WHERE reservation_id = $1",
        vec![text(id.as_str()), text(to.as_str())],
    )
    .await
    .map_err(db)?;
    r.status = to;
    tx.publish(&events::reservation(&r).traced(trace.traceparent()))
        .await
        .map_err(db)?;
    Ok(Some(r))
}
