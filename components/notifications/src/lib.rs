//! `notifications`: tells customers what happened to their orders,
//! payments and chats.
//!
//! 1. **Event handler** (`[[trigger.postgres]]` on the order, payment
//!    refund and chat message events): each event becomes a notice for
//!    its customer (a chat message, one per member who was offline), and
//!    in one transaction with the event's claim (so a redelivered event
//!    makes nothing twice) an in-app notification (unless the customer
//!    turned them off), a webhook delivery (when they set a URL) and an
//!    email delivery (when they gave an address). After
//!    the commit the in-app ones are pushed to the customer's live
//!    connections and the webhooks are attempted; while one is still
//!    pending the handler fails, so the trigger retries the event with its
//!    backoff, until the delivery is `failed` after
//!    `webhook_max_attempts` (5). A delivered webhook is never sent again
//!    by a redelivery; a replay sends it on request.
//! 2. **HTTP** (`/api/notifications/...`, [`api`]): the inbox, read
//!    marks, preferences, the delivery log and replay.
//!
//! Webhooks are signed (HMAC-SHA256, [`webhook`]); email goes through
//! `bv`'s `bitvelocity:smtp` interface ([`email`]) when
//! `notification_email_from` is set (docs/NOTIFICATIONS.md).

#![deny(missing_docs)]

mod api;
mod deliver;
mod email;
mod messages;
mod schema;
mod store;
mod webhook;

use bv_events_guest::{Event, Transaction};
use bv_service::{path_info, Problem, Reply};
use serde_json::{json, Value};
use spin_sdk::http::{Method, Request};
use spin_sdk::http_service;

use crate::store::{col, notification, notification_columns, rows, text};

/// Where `spin.toml` mounts the component (`route = "/api/notifications/..."`).
const MOUNT: &str = "/api/notifications";

fn failed(p: Problem) -> anyhow::Error {
    anyhow::anyhow!("{}", p.detail)
}

/// The customer of an order, for events that name only the order.
async fn customer_of_order(conn: &spin_sdk::pg::Connection, order: &str) -> Option<String> {
    let found = rows(
        conn,
        "SELECT customer_id FROM orders.orders WHERE order_id = $1",
        vec![text(order)],
    )
    .await
    .ok()?;
    found
        .first()
        .and_then(|r| col::<String>(r, "customer_id").ok())
}

#[bv_events_guest::handler]
async fn on_event(event: Event<Value>) -> anyhow::Result<()> {
    let conn = store::open().await.map_err(failed)?;
    let owner = match event.data["orderId"].as_str() {
        Some(order) if event.data.get("customerId").is_none() => {
            customer_of_order(&conn, order).await
        }
        _ => None,
    };
    let notices = messages::notices(&event, owner);
    let email_on = deliver::email_settings().await.map_err(failed)?.is_some();
    let tx = Transaction::begin(&conn).await?;
    let mut made = Vec::new();
    if tx.claim(&event).await? {
        for notice in &notices {
            let prefs = store::preferences(&conn, &notice.customer)
                .await
                .map_err(failed)?;
            if prefs.in_app {
                let inserted: Vec<_> = tx
                    .query(
                        format!(
                            "INSERT INTO notifications.inbox (customer_id, event_id, kind, title, data) \
                             VALUES ($1, $2, $3, $4, $5::text::jsonb) ON CONFLICT DO NOTHING \
                             RETURNING {}",
                            notification_columns()
                        ),
                        vec![
                            text(&notice.customer),
                            text(&event.id),
                            text(&notice.kind),
                            text(&notice.title),
                            text(notice.data.to_string()),
                        ],
                    )
                    .await?
                    .collect()
                    .await?;
                if let Some(row) = inserted.first() {
                    made.push((notice.customer.clone(), notification(row).map_err(failed)?));
                }
            }
            let payload = json!({
                "eventId": event.id, "type": notice.kind, "occurredAt": event.time,
                "title": notice.title, "data": notice.data,
            });
            let email = prefs.email.as_ref().filter(|_| email_on);
            for (channel, target) in [("webhook", prefs.webhook_url.as_ref()), ("email", email)] {
                let Some(target) = target else { continue };
                tx.execute(
                    "INSERT INTO notifications.deliveries (customer_id, event_id, kind, channel, url, payload) \
                     VALUES ($1, $2, $3, $4, $5, $6::text::jsonb) ON CONFLICT DO NOTHING",
                    vec![
                        text(&notice.customer),
                        text(&event.id),
                        text(&notice.kind),
                        text(channel),
                        text(target),
                        text(payload.to_string()),
                    ],
                )
                .await?;
            }
        }
        tx.commit().await?;
    } else {
        tx.rollback().await?;
    }
    for (customer, notification) in &made {
        deliver::push(customer, notification).await;
    }
    let mut pending = 0;
    for delivery in deliver::pending_of_event(&conn, &event.id)
        .await
        .map_err(failed)?
    {
        let after = deliver::attempt(&conn, &delivery.id, false)
            .await
            .map_err(failed)?;
        if after.status == "pending" {
            pending += 1;
        }
    }
    if pending > 0 {
        anyhow::bail!(
            "{pending} webhook deliveries of event {} still pending",
            event.id
        );
    }
    Ok(())
}

#[http_service]
async fn handle(req: Request) -> Reply {
    route(req).await.unwrap_or_else(Problem::into_response)
}

async fn route(req: Request) -> Result<Reply, Problem> {
    let path = path_info(&req, MOUNT)?;
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let method = req.method().clone();
    let get = method == Method::GET || method == Method::HEAD;
    let allowed = match parts.as_slice() {
        [] | ["deliveries"] => "GET, HEAD",
        ["preferences"] => "GET, HEAD, PUT",
        [_, "read"] | ["deliveries", _, "replay"] => "POST",
        _ => return Err(Problem::not_found(format!("no route {MOUNT}{path}"))),
    };
    if !allowed.split(", ").any(|m| m == method.as_str()) {
        return Err(Problem::method_not_allowed(allowed));
    }
    let who = bv_auth::authenticate(req.headers()).await?;
    let query = req.uri().query().unwrap_or("").to_owned();
    match (parts.as_slice(), get) {
        ([], _) => api::inbox(&who, &query).await,
        (["deliveries"], _) => api::deliveries(&who, &query).await,
        (["preferences"], true) => api::preferences(&who).await,
        (["preferences"], false) => api::set_preferences(req, &who).await,
        (["deliveries", id, "replay"], _) => api::replay(id, &who).await,
        ([id, "read"], _) => api::read(id, &who).await,
        _ => Err(Problem::not_found(format!("no route {MOUNT}{path}"))),
    }
}
