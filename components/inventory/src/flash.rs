//! Flash sales: `units` of one product offered between `startsAt` and
//! `endsAt`, announced live to everyone following the sale.
//!
//! | method and path | answer |
//! |---|---|
//! | `POST /flash-sales` `{productId, units, startsAt, endsAt}` (admin) | 201 the sale, with its `Location`; 401, 403, 415, 413, 400; 422 `invalid-field` naming the field (`endsAt` not after `startsAt` or already past, a `productId` without a stock record) |
//! | `GET /flash-sales/{saleId}` | 200 the sale; 404 |
//! | `GET /flash-sales/{saleId}/stream` | 200 `text/event-stream`: `event: sale` with the sale at once, then after every change of its `state` or `unitsLeft`; the stream ends after the `ended` one; 404 |
//!
//! A sale is `{saleId, productId, units, startsAt, endsAt, state,
//! unitsLeft}`: `state` is `scheduled`, `live` or `ended` by the database's
//! clock; `unitsLeft` is what the product has free to reserve, at most
//! `units`, while the sale has not ended, then 0. Every event carries the
//! whole sale, so a client that reconnects catches up with its first event.

use bv_service::{json, read_json, sse, Problem};
use bytes::Bytes;
use chrono::{DateTime, Datelike as _, SecondsFormat, Utc};
use futures::SinkExt;
use serde::Deserialize;
use spin_sdk::http::body::stream;
use spin_sdk::http::{BoxBody, Request, Response};
use spin_sdk::pg::{Connection, ParameterValue};

use crate::model::{ProductId, Quantity};

/// The largest body of a new sale.
const MAX_BODY: usize = 4 * 1024;

/// A point in time, given as RFC 3339 (`2026-12-24T18:00:00Z`).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(try_from = "String")]
struct Timestamp(DateTime<Utc>);

impl TryFrom<String> for Timestamp {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let t = DateTime::parse_from_rfc3339(&s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|_| format!("`{s}` is not an RFC 3339 time (e.g. 2026-12-24T18:00:00Z)"))?;
        // What the database stores, and more than any sale needs.
        if !(1970..=9999).contains(&t.year()) {
            return Err(format!("`{s}` is outside the years 1970 to 9999"));
        }
        Ok(Timestamp(t))
    }
}

impl Timestamp {
    fn param(self) -> ParameterValue {
        ParameterValue::Str(self.0.to_rfc3339_opts(SecondsFormat::Millis, true))
    }
}

/// `POST /flash-sales`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct NewSale {
    product_id: ProductId,
    units: Quantity,
    starts_at: Timestamp,
    ends_at: Timestamp,
}

/// Schedules a sale (an administrator's call).
pub(crate) async fn create(req: Request) -> Result<crate::Reply, Problem> {
    crate::require_admin(&req).await?;
    let sale: NewSale = read_json(req, MAX_BODY).await?;
    if sale.ends_at.0 <= sale.starts_at.0 {
        return Err(Problem::invalid_field("endsAt", "must be after startsAt"));
    }
    if sale.ends_at.0 <= Utc::now() {
        return Err(Problem::invalid_field("endsAt", "is already past"));
    }
    let conn = crate::connect().await?;
    let created = conn
        .query(
            "INSERT INTO inventory.flash_sales (product_id, units, starts_at, ends_at)
             SELECT product_id, $2, $3::text::timestamptz, $4::text::timestamptz
             FROM inventory.stock WHERE product_id = $1
             RETURNING sale_id",
            vec![
                ParameterValue::Str(sale.product_id.as_str().to_string()),
                ParameterValue::Int64(sale.units.get()),
                sale.starts_at.param(),
                sale.ends_at.param(),
            ],
        )
        .await
        .map_err(crate::problems::pg)?
        .collect()
        .await
        .map_err(crate::problems::pg)?;
    let Some(id) = created.first().and_then(|r| r.get::<String>("sale_id")) else {
        return Err(Problem::invalid_field(
            "productId",
            format!("product `{}` has no stock record", sale.product_id),
        ));
    };
    let view = load(&conn, &id)
        .await?
        .ok_or_else(|| Problem::internal(format!("flash sale `{id}` vanished")))?;
    let mut reply = json(201, &view);
    reply.headers_mut().insert(
        "location",
        format!("/api/inventory/flash-sales/{id}")
            .parse()
            .map_err(Problem::internal)?,
    );
    Ok(reply)
}

/// `GET /flash-sales/{saleId}`.
pub(crate) async fn get(id: &str) -> Result<crate::Reply, Problem> {
    let conn = crate::connect().await?;
    Ok(json(200, &found(load(&conn, id).await?, id)?))
}

fn found(sale: Option<serde_json::Value>, id: &str) -> Result<serde_json::Value, Problem> {
    sale.ok_or_else(|| Problem::not_found(format!("no flash sale `{id}`")))
}

/// `GET /flash-sales/{saleId}/stream`: 404 before it starts for an unknown
/// sale.
pub(crate) async fn follow(id: String) -> Result<Response<BoxBody>, Problem> {
    let first = {
        let conn = crate::connect().await?;
        found(load(&conn, &id).await?, &id)?
    };
    let (mut tx, body) = stream::<Bytes>();
    spin_sdk::wasip3::spawn(async move {
        let mut last = first;
        if tx.send(sse::RETRY).await.is_err() {
            return;
        }
        let mut heartbeat = sse::Heartbeat::default();
        let mut changed = true;
        loop {
            if changed {
                if tx
                    .send(sse::frame(None, "sale", &last.to_string()))
                    .await
                    .is_err()
                {
                    return;
                }
                heartbeat.sent();
                if last["state"] == "ended" {
                    return;
                }
            } else if heartbeat.waited(sse::POLL) && tx.send(sse::KEEP_ALIVE).await.is_err() {
                return;
            }
            spin_sdk::time::sleep(sse::POLL).await;
            let now = match crate::connect().await {
                Ok(conn) => load(&conn, &id).await,
                Err(e) => Err(e),
            };
            changed = match now {
                Ok(Some(now)) if now != last => {
                    last = now;
                    true
                }
                Ok(_) => false,
                // The next poll tries again.
                Err(e) => {
                    eprintln!("flash sale {id}: {}", e.detail);
                    false
                }
            };
        }
    });
    Ok(sse::response(body))
}

/// The sale `id` as its JSON answer, its state and units left as of now.
async fn load(conn: &Connection, id: &str) -> Result<Option<serde_json::Value>, Problem> {
    let rows = conn
        .query(
            "SELECT f.sale_id, f.product_id, f.units,
                    to_char(f.starts_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') AS starts_at,
                    to_char(f.ends_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') AS ends_at,
                    CASE WHEN clock_timestamp() < f.starts_at THEN 'scheduled'
                         WHEN clock_timestamp() < f.ends_at THEN 'live'
                         ELSE 'ended' END AS state,
                    GREATEST(LEAST(f.units, s.on_hand - s.reserved), 0) AS free
             FROM inventory.flash_sales f JOIN inventory.stock s USING (product_id)
             WHERE f.sale_id = $1",
            vec![ParameterValue::Str(id.to_string())],
        )
        .await
        .map_err(crate::problems::pg)?
        .collect()
        .await
        .map_err(crate::problems::pg)?;
    let Some(row) = rows.first() else {
        return Ok(None);
    };
    let col = |name: &str| Problem::internal(format!("flash_sales.{name} is missing"));
    let state: String = row.get("state").ok_or_else(|| col("state"))?;
    let free: i64 = row.get("free").ok_or_else(|| col("free"))?;
    Ok(Some(serde_json::json!({
        "saleId": row.get::<String>("sale_id").ok_or_else(|| col("sale_id"))?,
        "productId": row.get::<String>("product_id").ok_or_else(|| col("product_id"))?,
        "units": row.get::<i64>("units").ok_or_else(|| col("units"))?,
        "startsAt": row.get::<String>("starts_at").ok_or_else(|| col("starts_at"))?,
        "endsAt": row.get::<String>("ends_at").ok_or_else(|| col("ends_at"))?,
        "unitsLeft": if state == "ended" { 0 } else { free },
        "state": state,
    })))
}
