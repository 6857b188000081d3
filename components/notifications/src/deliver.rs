//! Delivering: in-app notifications pushed to their customer's live
//! connections, webhook deliveries attempted and logged.

use bv_service::Problem;
use serde_json::json;
use spin_sdk::pg::{Connection, ParameterValue};
use spin_sdk::variables::{self, Error};

use crate::email;
use crate::store::{self, delivery_columns, rows, text, Delivery, Notification};
use crate::webhook::{self, Attempt};

/// How many times a webhook is tried before it is `failed` (then only a
/// replay sends it again), unless `webhook_max_attempts` says otherwise.
const DEFAULT_MAX_ATTEMPTS: i32 = 5;

/// `webhook_max_attempts`.
pub async fn max_attempts() -> Result<i32, Problem> {
    match variables::get("webhook_max_attempts").await {
        Ok(raw) => raw.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
            Problem::internal(format!(
                "variable `webhook_max_attempts` = `{raw}`: not a positive integer"
            ))
        }),
        Err(Error::Undefined(_)) => Ok(DEFAULT_MAX_ATTEMPTS),
        Err(e) => Err(Problem::internal(format!(
            "variable `webhook_max_attempts`: {e:?}"
        ))),
    }
}

/// Pushes `notification` to `customer`'s live connections (the `live`
/// component's `notifications` channel). Best effort: it is stored.
pub async fn push(customer: &str, notification: &Notification) {
    let body = json!({"type": "notification", "notification": notification}).to_string();
    let request = spin_sdk::http::Request::builder()
        .method("POST")
        .uri(format!(
            "http://bv-websocket.spin.internal/groups/notifications:{customer}"
        ))
        .header("content-type", "application/json")
        .body(spin_sdk::http::FullBody::new(bytes::Bytes::from(body)));
    let Ok(request) = request else { return };
    match spin_sdk::http::send(request).await {
        Ok(r) if r.status().as_u16() == 202 => {}
        Ok(r) => eprintln!("notifications: push to {customer}: {}", r.status()),
        Err(e) => eprintln!("notifications: push to {customer}: {e:?}"),
    }
}

/// The pending deliveries of an event.
pub async fn pending_of_event(conn: &Connection, event_id: &str) -> Result<Vec<Delivery>, Problem> {
    rows(
        conn,
        &format!(
            "SELECT {} FROM notifications.deliveries WHERE event_id = $1 AND status = 'pending' ORDER BY created_at",
            delivery_columns()
        ),
        vec![text(event_id)],
    )
    .await?
    .iter()
    .map(store::delivery)
    .collect()
}

/// Tries `delivery` once (a replay: whatever its status), records the
/// attempt, and answers the delivery as it stands after.
pub async fn attempt(conn: &Connection, id: &str, replay: bool) -> Result<Delivery, Problem> {
    let condition = if replay {
        ""
    } else {
        " AND status = 'pending'"
    };
    let started = rows(
        conn,
        &format!(
            "UPDATE notifications.deliveries SET attempts = attempts + 1, last_attempt_at = now(), \
             status = 'pending' WHERE id = $1::text::uuid{condition} RETURNING {}",
            delivery_columns()
        ),
        vec![text(id)],
    )
    .await?;
    let Some(row) = started.first() else {
        // Delivered meanwhile (another attempt won): as it stands.
        return load(conn, id).await;
    };
    let delivery = store::delivery(row)?;
    let outcome = match delivery.channel.as_str() {
        "email" => send_email(&delivery).await?,
        _ => {
            let secret = store::preferences(conn, &delivery.customer_id)
                .await?
                .webhook_secret
                .unwrap_or_default();
            webhook::send(
                &delivery.url,
                &secret,
                &delivery.id,
                &delivery.kind,
                delivery.payload.as_bytes(),
            )
            .await
        }
    };
    let (status, code, error) = match outcome {
        Attempt::Delivered(code) => ("delivered", Some(code), None),
        Attempt::Refused(why) => ("failed", None, Some(why)),
        Attempt::Failed(code, why) => {
            let given_up = !replay && delivery.attempts >= max_attempts().await?;
            (
                if given_up || replay {
                    "failed"
                } else {
                    "pending"
                },
                code,
                Some(why),
            )
        }
    };
    let after = rows(
        conn,
        &format!(
            "UPDATE notifications.deliveries SET status = $2, last_status = $3, last_error = $4, \
             delivered_at = CASE WHEN $2 = 'delivered' THEN now() ELSE delivered_at END \
             WHERE id = $1::text::uuid RETURNING {}",
            delivery_columns()
        ),
        vec![
            text(id),
            text(status),
            code.map_or(ParameterValue::DbNull, |c| ParameterValue::Int32(c.into())),
            error.map_or(ParameterValue::DbNull, text),
        ],
    )
    .await?;
    store::delivery(
        after
            .first()
            .ok_or_else(|| Problem::internal("delivery vanished"))?,
    )
}

/// The mail server and sender: `None` (email off) unless
/// `notification_email_from` is set.
pub async fn email_settings() -> Result<Option<(String, String)>, Problem> {
    let from = match variables::get("notification_email_from").await {
        Ok(from) if !from.trim().is_empty() => from,
        Ok(_) | Err(Error::Undefined(_)) => return Ok(None),
        Err(e) => {
            return Err(Problem::internal(format!(
                "variable `notification_email_from`: {e:?}"
            )))
        }
    };
    let server = variables::get("smtp_url")
        .await
        .map_err(|e| Problem::internal(format!("variable `smtp_url`: {e:?}")))?;
    Ok(Some((server, from)))
}

/// Sends an email delivery once.
async fn send_email(delivery: &Delivery) -> Result<Attempt, Problem> {
    let Some((server, from)) = email_settings().await? else {
        return Ok(Attempt::Refused(
            "email is off (notification_email_from is not set)".into(),
        ));
    };
    let payload: serde_json::Value = serde_json::from_str(&delivery.payload).unwrap_or_default();
    let title = payload["title"].as_str().unwrap_or("BitVelocity");
    let body = format!(
        "{title}\n\n{}\n\n(notification {} for event {})\n",
        serde_json::to_string_pretty(&payload["data"]).unwrap_or_default(),
        delivery.id,
        delivery.event_id
    );
    Ok(
        match email::send(&server, &from, &delivery.url, title, &body).await {
            email::Sent::Accepted => Attempt::Delivered(250),
            email::Sent::Transient(why) => Attempt::Failed(None, why),
            email::Sent::Permanent(why) => Attempt::Refused(why),
        },
    )
}

/// A delivery by id.
pub async fn load(conn: &Connection, id: &str) -> Result<Delivery, Problem> {
    let found = rows(
        conn,
        &format!(
            "SELECT {} FROM notifications.deliveries WHERE id = $1::text::uuid",
            delivery_columns()
        ),
        vec![text(id)],
    )
    .await?;
    let row = found
        .first()
        .ok_or_else(|| Problem::not_found(format!("no delivery {id}")))?;
    store::delivery(row)
}
