//! `order`: orders and the checkout saga, under `/api/orders`.
//!
//! | method and path | answer |
//! |---|---|
//! | `POST /api/orders` `{card: {token}}`, header `Idempotency-Key` | 201 the order, `PAID`; or a problem (below) with the order left `FAILED` |
//! | `GET /api/orders` | 200 `{orders: [...]}`, the customer's, newest first |
//! | `GET /api/orders/{id}` | 200 the order; 404 (also for another customer's) |
//! | `POST /api/orders/{id}/cancel` | 200 `CANCELLED` (from PENDING, CONFIRMED, PAID; stock released, payment voided or refunded) |
//! | `POST /api/orders/{id}/fulfil` (header `x-bv-role: admin`) | 200 `FULFILLED` (from PAID; the reservation committed) |
//!
//! The customer is the `x-bv-customer` header (401 `unauthenticated`
//! without it). States: `PENDING → CONFIRMED → PAID → FULFILLED`, with
//! `CANCELLED` (from PENDING, CONFIRMED, PAID) and `FAILED` (from PENDING,
//! CONFIRMED); any other move is 409 `illegal-transition`.
//!
//! # Checkout
//!
//! The order is the customer's cart (prices, lines and total recomputed
//! from the cart's lines). One transaction creates it `PENDING` with its
//! saga row, its first saga log entry and `order.placed`; then the saga
//! reserves the stock (reservation id = order id) → `CONFIRMED`
//! (`order.confirmed`), authorizes and captures the total (payment id =
//! order id) → `PAID` (`order.paid`), and empties the cart. Each step is
//! logged before it is attempted and after it ended (`orders.saga_log`).
//! A failing step gives back what was held (release the reservation,
//! void or refund the payment) and the order ends `FAILED` with a
//! `reason` (`order.failed`); the answer is then a problem with the
//! order's id in `orderId`:
//!
//! - 409 `insufficient-stock` (or `unknown-product`) when stock is short;
//! - 402 `card-declined`, `insufficient-funds`, `card-expired`,
//!   `amount-limit` as the payment service declined;
//! - 422 `payment-rejected` when the payment service refused the request;
//! - 503 `inventory-unavailable` / `payment-unavailable` when a dependency
//!   is down.
//!
//! Before an order exists: 428 `idempotency-key-required` without the
//! header (422 `invalid-field` naming `Idempotency-Key` when it is empty or
//! longer than 200 bytes), 415/413/400/422 for the body, 409 `empty-cart`,
//! 409 `currency-mismatch` when the cart mixes currencies, 503
//! `unavailable` when the cart service is down.
//!
//! # Idempotency
//!
//! `Idempotency-Key` is per customer. The first request that creates an
//! order records its key with a fingerprint of the body; a repeat answers
//! the first answer (same status and body, header `idempotent-replayed:
//! true`) without a second order; the same key with another body is 422
//! `idempotency-mismatch`; a repeat while the first is still running is
//! 409 `checkout-in-progress`. Answers given before an order existed
//! (empty cart, cart down, bad body) are not recorded: retrying them is a
//! new attempt.
//!
//! A saga that stops moving (its process crashed, a dependency hung) is
//! taken over by `order-sweeper` after its timeout and cancelled with its
//! resources given back.

#![deny(missing_docs)]

mod checkout;
mod shared;

use std::sync::atomic::AtomicBool;

use bv_service::{json, migrate, path_info, Problem, Reply};
use serde_json::json;
use spin_sdk::http::{Method, Request};
use spin_sdk::http_service;
use spin_sdk::pg::{Connection, ParameterValue};

use shared::model::Status;
use shared::services::{self, INVENTORY};
use shared::store::{self, Move, Order, COLUMNS};

/// Set once this instance has seen the migrations applied.
static MIGRATED: AtomicBool = AtomicBool::new(false);

/// The most orders `GET /api/orders` lists.
const LIST_LIMIT: i64 = 100;

#[http_service]
async fn handle(req: Request) -> Reply {
    route(req).await.unwrap_or_else(Problem::into_response)
}

async fn route(req: Request) -> Result<Reply, Problem> {
    let path = path_info(&req);
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let method = req.method().clone();
    match (parts.as_slice(), &method) {
        ([], &Method::POST) => checkout::checkout(req).await,
        ([], &Method::GET) => list(&req).await,
        ([], _) => Err(Problem::method_not_allowed("GET, POST")),
        ([id], &Method::GET) => get(&req, id).await,
        ([_], _) => Err(Problem::method_not_allowed("GET")),
        ([id, "cancel"], &Method::POST) => cancel(&req, id).await,
        ([id, "fulfil"], &Method::POST) => fulfil(&req, id).await,
        ([_, "cancel" | "fulfil"], _) => Err(Problem::method_not_allowed("POST")),
        _ => Err(Problem::not_found(format!("no route /api/orders{path}"))),
    }
}

/// The customer named by `x-bv-customer`: 1–128 ASCII letters, digits,
/// `-`, `_`, `.` or `@` (as the cart accepts). The one place to replace
/// when authentication arrives.
fn customer(req: &Request) -> Result<String, Problem> {
    let unauthenticated =
        |detail: &str| Problem::new(401, "unauthenticated", "Not authenticated", detail);
    let raw = req
        .headers()
        .get("x-bv-customer")
        .ok_or_else(|| unauthenticated("the `x-bv-customer` header is missing"))?
        .to_str()
        .map_err(|_| unauthenticated("the `x-bv-customer` header is not ASCII"))?;
    let ok = (1..=128).contains(&raw.len())
        && raw
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c));
    if !ok {
        return Err(unauthenticated(
            "the `x-bv-customer` header must be 1–128 of A-Z a-z 0-9 - _ . @",
        ));
    }
    Ok(raw.to_string())
}

/// Admin-only calls: header `x-bv-role: admin` (403 otherwise). The one
/// place to replace when authentication arrives.
fn require_admin(req: &Request) -> Result<(), Problem> {
    let role = req.headers().get("x-bv-role").and_then(|v| v.to_str().ok());
    if role == Some("admin") {
        Ok(())
    } else {
        Err(Problem::new(
            403,
            "forbidden",
            "Forbidden",
            "this call needs the header `x-bv-role: admin`",
        ))
    }
}

/// The database, migrated.
async fn open() -> Result<Connection, Problem> {
    let conn = store::open().await?;
    migrate(&conn, "order", shared::schema::MIGRATIONS, &MIGRATED).await?;
    Ok(conn)
}

/// The order `id` when it is `customer`'s (404 otherwise, so another
/// customer's orders cannot even be detected).
async fn owned(conn: &Connection, id: &str, customer: Option<&str>) -> Result<Order, Problem> {
    match store::load(conn, id).await? {
        Some(order) if customer.is_none_or(|c| c == order.customer) => Ok(order),
        _ => Err(Problem::not_found(format!("no order `{id}`"))),
    }
}

fn illegal(order: &Order, to: Status) -> Problem {
    illegal_because(
        order,
        format!(
            "order `{}` is {}: it cannot become {}",
            order.id,
            order.status.as_str(),
            to.as_str()
        ),
    )
}

/// The `illegal-transition` problem of `order`, with its own explanation.
fn illegal_because(order: &Order, detail: String) -> Problem {
    Problem::new(
        409,
        "illegal-transition",
        "The order cannot make that move",
        detail,
    )
    .with("orderStatus", order.status.as_str())
}

async fn list(req: &Request) -> Result<Reply, Problem> {
    let customer = customer(req)?;
    let conn = open().await?;
    let rows = conn
        .query(
            format!(
                "SELECT {COLUMNS} FROM orders.orders WHERE customer_id = $1
                 ORDER BY created_at DESC, order_id DESC LIMIT $2"
            ),
            vec![
                ParameterValue::Str(customer),
                ParameterValue::Int64(LIST_LIMIT),
            ],
        )
        .await?
        .collect()
        .await?;
    let orders = rows
        .iter()
        .map(|r| Order::from_row(r).map(|o| o.view()))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(json(200, &json!({ "orders": orders })))
}

async fn get(req: &Request, id: &str) -> Result<Reply, Problem> {
    let customer = customer(req)?;
    let conn = open().await?;
    Ok(json(200, &owned(&conn, id, Some(&customer)).await?.view()))
}

async fn cancel(req: &Request, id: &str) -> Result<Reply, Problem> {
    let customer = customer(req)?;
    let conn = open().await?;
    let order = owned(&conn, id, Some(&customer)).await?;
    if !Status::CANCELLABLE.contains(&order.status) {
        return Err(illegal(&order, Status::Cancelled));
    }
    // The pool is shared with the services called: hold no connection
    // across a call.
    drop(conn);
    services::give_back(id).await.map_err(|e| {
        eprintln!("order {id}: cancel: {e}");
        Problem::unavailable("giving back the order's stock or payment failed; try again")
    })?;
    let conn = open().await?;
    let moved = store::transition(
        &conn,
        id,
        Move {
            from: &Status::CANCELLABLE,
            to: Status::Cancelled,
            reason: Some("customer-request"),
            saga: Some("finished"),
            event: (
                "com.bitvelocity.order.cancelled.v1",
                json!({
                    "orderId": id, "customerId": order.customer,
                    "reason": "customer-request", "previousStatus": order.status.as_str()
                }),
            ),
        },
    )
    .await?;
    let now = owned(&conn, id, None).await?;
    if !moved {
        return Err(illegal(&now, Status::Cancelled));
    }
    Ok(json(200, &now.view()))
}

async fn fulfil(req: &Request, id: &str) -> Result<Reply, Problem> {
    require_admin(req)?;
    let conn = open().await?;
    let order = owned(&conn, id, None).await?;
    if order.status != Status::Paid {
        return Err(illegal(&order, Status::Fulfilled));
    }
    drop(conn);
    let committed = services::call(
        "POST",
        &format!("{INVENTORY}/reservations/{id}/commit"),
        None,
        None,
    )
    .await
    .map_err(|e| {
        eprintln!("order {id}: fulfil: {e}");
        Problem::unavailable("the inventory service failed committing the stock")
    })?;
    if committed.status == 409 {
        // The reservation was released meanwhile (a cancel won the race):
        // retrying cannot help, so this is a conflict, not an outage.
        return Err(illegal_because(
            &order,
            format!(
                "order `{id}`: its stock reservation is no longer held, so it cannot be fulfilled"
            ),
        ));
    }
    if committed.status != 200 {
        eprintln!(
            "order {id}: committing the reservation: {} {}",
            committed.status, committed.body
        );
        return Err(Problem::unavailable(
            "the inventory service failed committing the stock",
        ));
    }
    let conn = open().await?;
    let moved = store::transition(
        &conn,
        id,
        Move {
            from: &[Status::Paid],
            to: Status::Fulfilled,
            reason: None,
            saga: None,
            event: (
                "com.bitvelocity.order.fulfilled.v1",
                json!({ "orderId": id, "customerId": order.customer }),
            ),
        },
    )
    .await?;
    let now = owned(&conn, id, None).await?;
    if !moved {
        return Err(illegal(&now, Status::Fulfilled));
    }
    Ok(json(200, &now.view()))
}
