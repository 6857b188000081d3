//! The read API: `GET /api/analytics/...`.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;

use bv_auth::{Role, Subject};
use bv_service::{json, migrate, Problem, Reply};
use serde_json::{json, Value};
use spin_sdk::http::Request;
use spin_sdk::pg::{Connection, ParameterValue, Row};

use crate::schema;
use crate::time::{self, ALLOWED_LATENESS_MS, EARLIEST_MS, LATEST_MS, MINUTE_MS};

static MIGRATED: AtomicBool = AtomicBool::new(false);

/// The sliding window of the top products, in minutes.
pub const TOP_WINDOW_MINUTES: i64 = 15;
/// The widest range `GET /revenue` answers: a day of one-minute windows.
const MAX_RANGE_MS: i64 = 24 * 60 * MINUTE_MS;
/// `GET /revenue`'s range when `from` is not given: the hour before `to`.
const DEFAULT_RANGE_MS: i64 = 60 * MINUTE_MS;

/// A timestamp column as RFC 3339 (UTC, milliseconds).
fn rfc3339(column: &str) -> String {
    format!("to_char(({column}) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')")
}

/// The query's parameters; unknown and repeated ones are refused (a typo
/// must not silently change the answer).
fn params(query: &str, known: &[&str]) -> Result<BTreeMap<String, String>, Problem> {
    let mut out = BTreeMap::new();
    for (name, value) in form_urlencoded::parse(query.as_bytes()) {
        if !known.contains(&name.as_ref()) {
            return Err(Problem::invalid_parameter(
                &name,
                format!("unknown parameter (known: {})", known.join(", ")),
            ));
        }
        if out.insert(name.to_string(), value.to_string()).is_some() {
            return Err(Problem::invalid_parameter(&name, "given more than once"));
        }
    }
    Ok(out)
}

/// An instant parameter: RFC 3339, between 1970 and 9999.
fn instant(parameter: &str, value: &str) -> Result<i64, Problem> {
    let ms = time::parse(value).ok_or_else(|| {
        Problem::invalid_parameter(
            parameter,
            format!("must be an RFC 3339 timestamp (e.g. 2026-01-02T03:04:05Z), got {value:?}"),
        )
    })?;
    if !(EARLIEST_MS..=LATEST_MS).contains(&ms) {
        return Err(Problem::invalid_parameter(
            parameter,
            "must be between 1970-01-01T00:00:00Z and 9999-01-01T00:00:00Z",
        ));
    }
    Ok(ms)
}

/// An integer parameter within `range`, or `default`.
fn count(
    params: &BTreeMap<String, String>,
    parameter: &str,
    range: std::ops::RangeInclusive<i64>,
    default: i64,
) -> Result<i64, Problem> {
    let Some(value) = params.get(parameter) else {
        return Ok(default);
    };
    value
        .parse::<i64>()
        .ok()
        .filter(|n| range.contains(n))
        .ok_or_else(|| {
            Problem::invalid_parameter(
                parameter,
                format!(
                    "must be an integer from {} to {}, got {value:?}",
                    range.start(),
                    range.end()
                ),
            )
        })
}

/// The database, migrated.
async fn open() -> Result<Connection, Problem> {
    let url = spin_sdk::variables::get("db_url")
        .await
        .map_err(|e| Problem::internal(format!("variable db_url: {e:?}")))?;
    let conn = Connection::open(url)
        .await
        .map_err(|e| Problem::unavailable(format!("the analytics database: {e}")))?;
    migrate(&conn, schema::COMPONENT, schema::MIGRATIONS, &MIGRATED).await?;
    Ok(conn)
}

async fn rows(
    conn: &Connection,
    sql: &str,
    params: Vec<ParameterValue>,
) -> Result<Vec<Row>, Problem> {
    Ok(conn.query(sql, params).await?.collect().await?)
}

fn text(row: &Row, column: &str) -> Result<String, Problem> {
    row.get::<String>(column)
        .ok_or_else(|| Problem::internal(format!("analytics: {column} is missing")))
}

fn int(row: &Row, column: &str) -> Result<i64, Problem> {
    row.get::<i64>(column)
        .ok_or_else(|| Problem::internal(format!("analytics: {column} is missing")))
}

/// The watermark (RFC 3339), `null` before the first event.
async fn watermark(conn: &Connection) -> Result<Value, Problem> {
    let stream = rows(
        conn,
        "SELECT round(extract(epoch FROM max_event_time) * 1000)::bigint AS max_ms FROM analytics.stream",
        Vec::new(),
    )
    .await?;
    Ok(match stream.first().and_then(|r| r.get::<i64>("max_ms")) {
        Some(latest) => Value::from(time::format(latest - ALLOWED_LATENESS_MS)),
        None => Value::Null,
    })
}

/// Late events whose own time is in `[from, to)` (of `type`, if given).
async fn late_events(
    conn: &Connection,
    from: i64,
    to: i64,
    ty: Option<&str>,
) -> Result<i64, Problem> {
    let found = rows(
        conn,
        "SELECT count(*) AS n FROM analytics.late_events
         WHERE event_time >= $1::text::timestamptz AND event_time < $2::text::timestamptz
           AND ($3::text IS NULL OR type = $3::text)",
        vec![
            ParameterValue::Str(time::format(from)),
            ParameterValue::Str(time::format(to)),
            ty.map_or(ParameterValue::DbNull, |t| ParameterValue::Str(t.into())),
        ],
    )
    .await?;
    found.first().map_or(Ok(0), |r| int(r, "n"))
}

/// `GET /revenue?from=&to=`: every one-minute window overlapping
/// `[from, to)` that has orders, per currency (administrators).
pub async fn revenue(req: &Request, query: &str) -> Result<Reply, Problem> {
    bv_auth::require_admin(req.headers()).await?;
    let params = params(query, &["from", "to"])?;
    let to = match params.get("to") {
        Some(v) => instant("to", v)?,
        None => time::now(),
    };
    let from = match params.get("from") {
        Some(v) => instant("from", v)?,
        None => to - DEFAULT_RANGE_MS,
    };
    if from >= to {
        return Err(Problem::invalid_parameter("from", "must be before `to`"));
    }
    if to - from > MAX_RANGE_MS {
        return Err(Problem::invalid_parameter(
            "from",
            "the range may span at most 24 hours",
        ));
    }
    let conn = open().await?;
    let found = rows(
        &conn,
        &format!(
            "SELECT {} AS start, {} AS end_, currency, orders, order_value, paid, revenue
             FROM analytics.minute_totals
             WHERE minute > $1::text::timestamptz AND minute < $2::text::timestamptz
             ORDER BY minute, currency",
            rfc3339("minute"),
            rfc3339("minute + interval '1 minute'")
        ),
        vec![
            ParameterValue::Str(time::format(from - MINUTE_MS)),
            ParameterValue::Str(time::format(to)),
        ],
    )
    .await?;
    let mut windows = Vec::with_capacity(found.len());
    for r in &found {
        let currency = text(r, "currency")?;
        windows.push(json!({
            "start": text(r, "start")?,
            "end": text(r, "end_")?,
            "currency": currency,
            "orders": int(r, "orders")?,
            "orderValue": { "amount": int(r, "order_value")?, "currency": currency },
            "paidOrders": int(r, "paid")?,
            "revenue": { "amount": int(r, "revenue")?, "currency": currency },
        }));
    }
    Ok(json(
        200,
        &json!({
            "from": time::format(from),
            "to": time::format(to),
            "windows": windows,
            "lateEvents": late_events(&conn, from, to, None).await?,
            "watermark": watermark(&conn).await?,
            "allowedLatenessSeconds": ALLOWED_LATENESS_MS / 1000,
        }),
    ))
}

/// `GET /top-products?at=&limit=`: the products ordered most in the 15
/// one-minute windows ending with the one `at` falls in (administrators).
pub async fn top_products(req: &Request, query: &str) -> Result<Reply, Problem> {
    bv_auth::require_admin(req.headers()).await?;
    let params = params(query, &["at", "limit"])?;
    let at = match params.get("at") {
        Some(v) => instant("at", v)?,
        None => time::now(),
    };
    let limit = count(&params, "limit", 1..=100, 10)?;
    let end = time::minute(at) + MINUTE_MS;
    let start = end - TOP_WINDOW_MINUTES * MINUTE_MS;
    let conn = open().await?;
    let found = rows(
        &conn,
        "SELECT product_id, (array_agg(sku ORDER BY minute DESC))[1] AS sku,
                sum(quantity)::bigint AS units, sum(orders)::bigint AS in_orders
         FROM analytics.minute_products
         WHERE minute >= $1::text::timestamptz AND minute < $2::text::timestamptz
         GROUP BY product_id
         ORDER BY 3 DESC, 4 DESC, 1
         LIMIT $3",
        vec![
            ParameterValue::Str(time::format(start)),
            ParameterValue::Str(time::format(end)),
            ParameterValue::Int64(limit),
        ],
    )
    .await?;
    let mut products = Vec::with_capacity(found.len());
    for r in &found {
        products.push(json!({
            "productId": text(r, "product_id")?,
            "sku": text(r, "sku")?,
            "quantity": int(r, "units")?,
            "orders": int(r, "in_orders")?,
        }));
    }
    Ok(json(
        200,
        &json!({
            "at": time::format(at),
            "windowStart": time::format(start),
            "windowEnd": time::format(end),
            "products": products,
            "lateEvents": late_events(&conn, start, end, Some("com.bitvelocity.order.placed.v1")).await?,
            "watermark": watermark(&conn).await?,
            "allowedLatenessSeconds": ALLOWED_LATENESS_MS / 1000,
        }),
    ))
}

/// `GET /customers/{customerId}/orders?limit=`: the customer's orders,
/// newest first (the customer themself, or an administrator).
pub async fn customer_orders(req: &Request, segment: &str, query: &str) -> Result<Reply, Problem> {
    let principal = bv_auth::authenticate(req.headers()).await?;
    let customer = bv_service::percent_decode(segment).unwrap_or_default();
    if principal.role != Role::Admin && principal.subject.as_str() != customer {
        return Err(bv_auth::guest::forbidden(
            "a customer sees only their own orders",
        ));
    }
    if Subject::parse(&customer).is_none() {
        return Err(Problem::not_found(format!(
            "no customer `{segment}`: an id is 1-128 letters, digits, `-`, `_`, `.` or `@`"
        )));
    }
    let params = params(query, &["limit"])?;
    let limit = count(&params, "limit", 1..=200, 50)?;
    let conn = open().await?;
    let found = rows(
        &conn,
        &format!(
            "SELECT order_id, status, total_amount, currency, item_count,
                    {} AS placed_at, {} AS updated_at
             FROM analytics.orders_by_customer WHERE customer_id = $1
             ORDER BY placed_at DESC NULLS LAST, order_id LIMIT $2",
            rfc3339("placed_at"),
            rfc3339("updated_at")
        ),
        vec![
            ParameterValue::Str(customer.clone()),
            ParameterValue::Int64(limit),
        ],
    )
    .await?;
    let mut orders = Vec::with_capacity(found.len());
    for r in &found {
        let total = match (
            r.get::<Option<i64>>("total_amount").flatten(),
            r.get::<Option<String>>("currency").flatten(),
        ) {
            (Some(amount), Some(currency)) => json!({ "amount": amount, "currency": currency }),
            _ => Value::Null,
        };
        orders.push(json!({
            "orderId": text(r, "order_id")?,
            "status": text(r, "status")?,
            "total": total,
            "itemCount": r.get::<Option<i32>>("item_count").flatten(),
            "placedAt": r.get::<Option<String>>("placed_at").flatten(),
            "updatedAt": text(r, "updated_at")?,
        }));
    }
    Ok(json(
        200,
        &json!({ "customerId": customer, "orders": orders }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_strict() {
        assert_eq!(params("at=x", &["at"]).unwrap()["at"], "x");
        let p = params("at=1&at=2", &["at"]).unwrap_err();
        assert_eq!(p.status, 422);
        assert_eq!(p.extensions["parameter"], "at");
        let p = params("since=1", &["at", "limit"]).unwrap_err();
        assert_eq!(p.extensions["parameter"], "since");
        assert_eq!(instant("to", "2026-01-02T03:04:05Z").unwrap() % 1000, 0);
        assert_eq!(
            instant("to", "soon").unwrap_err().extensions["parameter"],
            "to"
        );
        assert!(instant("to", "1969-12-31T23:59:59Z").is_err());
    }
}
