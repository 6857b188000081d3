//! `order`: orders and the checkout saga, under `/api/orders`.
//!
//! | method and path | answer |
//! |---|---|
//! | `POST /api/orders` `{card: {token}}`, header `Idempotency-Key` | 201 the order, `PAID`, with its `Location`; or a problem (below) with the order left `FAILED` |
//! | `GET /api/orders` | 200 `{orders: [...]}`, the customer's, newest first |
//! | `GET /api/orders/{id}` | 200 the order; 404 (also for another customer's; an administrator sees every order) |
//! | `POST /api/orders/{id}/cancel` | 200 `CANCELLED` (from PENDING, CONFIRMED, PAID; stock released, payment voided or refunded); the order's customer only |
//! | `POST /api/orders/{id}/fulfil` (admin) | 200 `FULFILLED` (from PAID; the reservation committed) |
//! | `GET /api/orders/{id}/events` | 200 `text/event-stream`: the order's events, live, resumable with `Last-Event-ID` (see [`live`]); 404 as for the order |
//!
//! The customer is the subject of the request's bearer token (401
//! `unauthenticated` without one, `invalid-token` when it does not
//! verify; 403 for a customer on an admin call). The calls the saga makes
//! to the cart forward that token; the inventory and payment calls are
//! internal (service chaining). States: `PENDING → CONFIRMED → PAID → FULFILLED`, with
//! `CANCELLED` (from PENDING, CONFIRMED, PAID) and `FAILED` (from PENDING,
//! CONFIRMED); any other move is 409 `illegal-transition`.
//!
//! # Checkout
//!
//! The order is the customer's cart, priced from the catalogue at
//! checkout: the cart is asked with `Cache-Control: no-cache`, so that it
//! looks every product up now instead of using its display cache (lines
//! and total are recomputed from its answer). One transaction creates it `PENDING` with its
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
//!   is down (failed or timed out after its retries);
//! - 503 `dependency-unavailable` (with `dependency`, `retryAfterSeconds`
//!   and a `Retry-After` header) at once, without calling it, while the
//!   dependency's circuit breaker is open (see [`resilience`]).
//!
//! Before an order exists: 428 `idempotency-key-required` without the
//! header (422 `invalid-field` naming `Idempotency-Key` when it is empty,
//! longer than 200 bytes or not all visible ASCII, 0x21–0x7E),
//! 415/413/400/422 for the body, 409 `empty-cart`, 409 `unknown-product`
//! when a line's product is no longer in the catalogue, 409
//! `currency-mismatch` when the cart mixes currencies, 503 `unavailable`
//! when the cart service is down, 503 `dependency-unavailable` when the
//! catalogue cannot confirm the prices. Every 503 carries `Retry-After`.
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
//!
//! # Metrics
//!
//! Reported with `bv_service::telemetry` (stdout lines bv serves on its
//! `/metrics`): `orders` by `outcome` (`paid`, `failed` with the problem
//! kind as `reason`, `cancelled`; `order-sweeper` adds `expired`),
//! `saga_compensations` by `step` and `result`, and the
//! `checkout_saga_seconds` histogram by `outcome`.

#![deny(missing_docs)]

mod checkout;
mod live;
mod resilience;

use std::sync::atomic::AtomicBool;

use bv_auth::Principal;
use bv_orders::model::{CustomerId, OrderId, SagaState, Status};
use bv_orders::services::{self, INVENTORY};
use bv_orders::store::{self, Move, Order, COLUMNS};
use bv_service::{json, migrate, path_info, Problem, ProblemKind, Reply, Trace};
use serde_json::json;
use spin_sdk::http::{box_body, BoxBody, Method, Request, Response};
use spin_sdk::http_service;
use spin_sdk::pg::{Connection, ParameterValue};

/// Where `spin.toml` mounts this component (`route = "/api/orders/..."`); callers
/// use the same path over service chaining.
const MOUNT: &str = "/api/orders";

/// Set once this instance has seen the migrations applied.
static MIGRATED: AtomicBool = AtomicBool::new(false);

/// The most orders `GET /api/orders` lists.
const LIST_LIMIT: i64 = 100;

#[http_service]
async fn handle(req: Request) -> Response<BoxBody> {
    if let Some(id) = events_path(&req) {
        return match live::events(&req, &id).await {
            Ok(stream) => stream,
            Err(problem) => problem.into_response().map(box_body),
        };
    }
    route(req)
        .await
        .unwrap_or_else(Problem::into_response)
        .map(box_body)
}

/// The order of `GET|HEAD /api/orders/{id}/events`, the one streamed answer.
fn events_path(req: &Request) -> Option<OrderId> {
    if !matches!(req.method(), &Method::GET | &Method::HEAD) {
        return None;
    }
    let path = path_info(req, MOUNT).ok()?;
    match path
        .split('/')
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()[..]
    {
        [id, "events"] => Some(OrderId::from(id)),
        _ => None,
    }
}

async fn route(req: Request) -> Result<Reply, Problem> {
    let path = path_info(&req, MOUNT)?;
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    // HEAD is GET without the body (the runtime drops it).
    let method = match req.method() {
        &Method::HEAD => Method::GET,
        m => m.clone(),
    };
    match (parts.as_slice(), &method) {
        ([], &Method::POST) => checkout::checkout(req).await,
        ([], &Method::GET) => list(&req).await,
        ([], _) => Err(Problem::method_not_allowed("GET, HEAD, POST")),
        ([id], &Method::GET) => get(&req, &OrderId::from(*id)).await,
        ([_], _) => Err(Problem::method_not_allowed("GET, HEAD")),
        ([id, "cancel"], &Method::POST) => cancel(&req, &OrderId::from(*id)).await,
        ([id, "fulfil"], &Method::POST) => fulfil(&req, &OrderId::from(*id)).await,
        ([_, "cancel" | "fulfil"], _) => Err(Problem::method_not_allowed("POST")),
        ([_, "events"], _) => Err(Problem::method_not_allowed("GET, HEAD")),
        _ => Err(Problem::not_found(format!("no route /api/orders{path}"))),
    }
}

/// The caller: the principal of the request's bearer token.
async fn caller(req: &Request) -> Result<Principal, Problem> {
    bv_auth::authenticate(req.headers()).await
}

/// The customer placing an order or owning the orders asked for: the
/// token's subject.
async fn customer(req: &Request) -> Result<CustomerId, Problem> {
    Ok(CustomerId::from(caller(req).await?.subject.as_str()))
}

/// Admin-only calls: an administrator's token (403 for a customer's).
async fn require_admin(req: &Request) -> Result<(), Problem> {
    bv_auth::require_admin(req.headers()).await.map(drop)
}

/// The database, migrated.
async fn open() -> Result<Connection, Problem> {
    let conn = store::open().await?;
    migrate(&conn, "order", bv_orders::schema::MIGRATIONS, &MIGRATED).await?;
    Ok(conn)
}

/// The order `id` when it is `customer`'s (404 otherwise, so another
/// customer's orders cannot even be detected).
async fn owned(
    conn: &Connection,
    id: &OrderId,
    customer: Option<&CustomerId>,
) -> Result<Order, Problem> {
    match store::load(conn, id).await? {
        Some(order) if customer.is_none_or(|c| *c == order.customer) => Ok(order),
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
        ProblemKind::IllegalTransition,
        "The order cannot make that move",
        detail,
    )
    .with("orderStatus", order.status.as_str())
}

async fn list(req: &Request) -> Result<Reply, Problem> {
    let customer = customer(req).await?;
    let conn = open().await?;
    let rows = conn
        .query(
            format!(
                "SELECT {COLUMNS} FROM orders.orders WHERE customer_id = $1
                 ORDER BY created_at DESC, order_id DESC LIMIT $2"
            ),
            vec![
                ParameterValue::Str(customer.as_str().to_string()),
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

async fn get(req: &Request, id: &OrderId) -> Result<Reply, Problem> {
    let caller = caller(req).await?;
    // An administrator sees every order, a customer only their own.
    let owner = (!caller.is_admin()).then(|| CustomerId::from(caller.subject.as_str()));
    let conn = open().await?;
    Ok(json(200, &owned(&conn, id, owner.as_ref()).await?.view()))
}

async fn cancel(req: &Request, id: &OrderId) -> Result<Reply, Problem> {
    let customer = customer(req).await?;
    let trace = Trace::of(req);
    let conn = open().await?;
    let order = owned(&conn, id, Some(&customer)).await?;
    if !Status::CANCELLABLE.contains(&order.status) {
        return Err(illegal(&order, Status::Cancelled));
    }
    // The pool is shared with the services called: hold no connection
    // across a call.
    drop(conn);
    services::give_back(&trace, id).await.map_err(|e| {
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
            saga: Some(SagaState::Finished),
            event: (
                "com.bitvelocity.order.cancelled.v1",
                json!({
                    "orderId": id, "customerId": order.customer,
                    "reason": "customer-request", "previousStatus": order.status.as_str()
                }),
            ),
            trace: trace.traceparent(),
        },
    )
    .await?;
    let now = owned(&conn, id, None).await?;
    if !moved {
        return Err(illegal(&now, Status::Cancelled));
    }
    bv_service::telemetry::counter("orders", &[("outcome", "cancelled")], 1);
    Ok(json(200, &now.view()))
}

async fn fulfil(req: &Request, id: &OrderId) -> Result<Reply, Problem> {
    require_admin(req).await?;
    let trace = Trace::of(req);
    let conn = open().await?;
    let order = owned(&conn, id, None).await?;
    if order.status != Status::Paid {
        return Err(illegal(&order, Status::Fulfilled));
    }
    drop(conn);
    let committed = services::call(
        &trace,
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
            trace: trace.traceparent(),
        },
    )
    .await?;
    let now = owned(&conn, id, None).await?;
    if !moved {
        return Err(illegal(&now, Status::Fulfilled));
    }
    Ok(json(200, &now.view()))
}
