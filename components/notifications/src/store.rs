//! The notifications' tables.

use std::sync::atomic::AtomicBool;

use bv_service::{migrate, Problem};
use serde::Serialize;
use serde_json::Value;
use spin_sdk::pg::{Connection, ParameterValue, Row};

use crate::schema;

static MIGRATED: AtomicBool = AtomicBool::new(false);

/// A timestamp column as RFC 3339 (UTC, milliseconds).
pub fn rfc3339(column: &str) -> String {
    format!("to_char(({column}) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')")
}

/// A text parameter.
pub fn text(s: impl Into<String>) -> ParameterValue {
    ParameterValue::Str(s.into())
}

fn missing(column: &str) -> Problem {
    Problem::internal(format!("notifications: column `{column}` is missing"))
}

/// A column of `row`, or 500.
pub fn col<T: spin_sdk::pg::Decode>(row: &Row, column: &str) -> Result<T, Problem> {
    row.get::<T>(column).ok_or_else(|| missing(column))
}

/// The database, migrated (once per instance).
pub async fn open() -> Result<Connection, Problem> {
    let url = spin_sdk::variables::get("db_url")
        .await
        .map_err(|e| Problem::internal(format!("variable db_url: {e:?}")))?;
    let conn = Connection::open(url).await.map_err(|e| {
        eprintln!("notifications: connecting to the database: {e}");
        Problem::unavailable("the notifications database is unreachable")
    })?;
    migrate(&conn, schema::COMPONENT, schema::MIGRATIONS, &MIGRATED).await?;
    Ok(conn)
}

/// The rows of a query.
pub async fn rows(
    conn: &Connection,
    sql: &str,
    params: Vec<ParameterValue>,
) -> Result<Vec<Row>, Problem> {
    Ok(conn.query(sql, params).await?.collect().await?)
}

/// A customer's preferences (the defaults when they set none).
#[derive(Debug, Clone)]
pub struct Preferences {
    /// Keep in-app notifications.
    pub in_app: bool,
    /// Where webhooks go, if anywhere.
    pub webhook_url: Option<String>,
    /// The key webhooks are signed with.
    pub webhook_secret: Option<String>,
    /// Where emails go, if anywhere.
    pub email: Option<String>,
}

/// `customer`'s preferences.
pub async fn preferences(conn: &Connection, customer: &str) -> Result<Preferences, Problem> {
    let found = rows(
        conn,
        "SELECT in_app, webhook_url, webhook_secret, email FROM notifications.preferences WHERE customer_id = $1",
        vec![text(customer)],
    )
    .await?;
    Ok(match found.first() {
        Some(r) => Preferences {
            in_app: col(r, "in_app")?,
            webhook_url: r.get::<Option<String>>("webhook_url").flatten(),
            webhook_secret: r.get::<Option<String>>("webhook_secret").flatten(),
            email: r.get::<Option<String>>("email").flatten(),
        },
        None => Preferences {
            in_app: true,
            webhook_url: None,
            webhook_secret: None,
            email: None,
        },
    })
}

/// An in-app notification.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Notification {
    /// Its id.
    pub id: String,
    /// E.g. `order.paid`.
    pub kind: String,
    /// A line for a person.
    pub title: String,
    /// What a client needs to act on it.
    pub data: Value,
    /// When it was made.
    pub created_at: String,
    /// When its customer read it.
    pub read_at: Option<String>,
}

/// The columns [`notification`] reads.
pub fn notification_columns() -> String {
    format!(
        "id::text AS id, kind, title, data::text AS data, {} AS created_at, {} AS read_at",
        rfc3339("created_at"),
        rfc3339("read_at")
    )
}

/// Reads a row selected with [`notification_columns`].
pub fn notification(row: &Row) -> Result<Notification, Problem> {
    let data: String = col(row, "data")?;
    Ok(Notification {
        id: col(row, "id")?,
        kind: col(row, "kind")?,
        title: col(row, "title")?,
        data: serde_json::from_str(&data).unwrap_or(Value::Null),
        created_at: col(row, "created_at")?,
        read_at: row.get::<Option<String>>("read_at").flatten(),
    })
}

/// A webhook or email delivery and its log.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    /// Its id (`bv-delivery-id`).
    pub id: String,
    /// Whose.
    pub customer_id: String,
    /// The event it is for.
    pub event_id: String,
    /// E.g. `order.paid`.
    pub kind: String,
    /// `webhook` or `email`.
    pub channel: String,
    /// Where it goes: the webhook's URL or the email address.
    pub url: String,
    /// `pending`, `delivered` or `failed`.
    pub status: String,
    /// Attempts so far.
    pub attempts: i32,
    /// The receiver's last status, if it answered.
    pub last_status: Option<i32>,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// When it was made.
    pub created_at: String,
    /// When it was last tried.
    pub last_attempt_at: Option<String>,
    /// When it was delivered.
    pub delivered_at: Option<String>,
    /// The body sent.
    #[serde(skip)]
    pub payload: String,
}

/// The columns [`delivery`] reads.
pub fn delivery_columns() -> String {
    format!(
        "id::text AS id, customer_id, event_id, kind, channel, url, status, attempts, last_status, last_error, \
         payload::text AS payload, {} AS created_at, {} AS last_attempt_at, {} AS delivered_at",
        rfc3339("created_at"),
        rfc3339("last_attempt_at"),
        rfc3339("delivered_at")
    )
}

/// Reads a row selected with [`delivery_columns`].
pub fn delivery(row: &Row) -> Result<Delivery, Problem> {
    Ok(Delivery {
        id: col(row, "id")?,
        customer_id: col(row, "customer_id")?,
        event_id: col(row, "event_id")?,
        kind: col(row, "kind")?,
        channel: col(row, "channel")?,
        url: col(row, "url")?,
        status: col(row, "status")?,
        attempts: col(row, "attempts")?,
        last_status: row.get::<Option<i32>>("last_status").flatten(),
        last_error: row.get::<Option<String>>("last_error").flatten(),
        created_at: col(row, "created_at")?,
        last_attempt_at: row.get::<Option<String>>("last_attempt_at").flatten(),
        delivered_at: row.get::<Option<String>>("delivered_at").flatten(),
        payload: col(row, "payload")?,
    })
}
