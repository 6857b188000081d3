//! `inventory`: how many units of each product are in the warehouse, and
//! which of them are held for orders.
//!
//! A product's stock record appears when the catalogue publishes
//! `product.created` (the `inventory-projector` component), with nothing
//! on hand; the catalogue's demo products come with 25 units each
//! (migration `0002_demo_stock`), so a fresh platform can take orders.
//! This component is the HTTP API, mounted at `/api/inventory`:
//!
//! | method and path | answer |
//! |---|---|
//! | `GET /{productId}` | 200 `{productId, sku, onHand, reserved, available}`; 404 |
//! | `GET /{productId}/stream` | 200 `text/event-stream`: the same, live, after every change (see [`live`]); 404 |
//! | `POST /flash-sales`, `GET /flash-sales/{saleId}`, `GET /flash-sales/{saleId}/stream` | flash sales, announced live (see [`flash`]) |
//! | `POST /{productId}/restock` `{quantity}` (admin) | 200 the stock after it; 401, 403, 404, 422 |
//! | `POST /reservations` `{reservationId, orderId, items: [{productId, quantity}]}` | 201 the reservation; 200 when replayed; 409 `insufficient-stock`; 422 `unknown-product`, `idempotency-mismatch` |
//! | `GET /reservations/{id}` | 200 the reservation; 404 |
//! | `POST /reservations/{id}/release` | 200, the stock is free again; 409 `illegal-transition` once committed |
//! | `POST /reservations/{id}/commit` | 200, the stock left on-hand; 409 `illegal-transition` once released |
//!
//! Who may call: anyone reads stock; restocking needs an administrator's
//! bearer token; the reservation calls are the order saga's, so they take
//! requests from other components over service chaining, or from an
//! administrator (401 without a valid token, 403 for a customer's).
//!
//! A reservation holds all of its lines or none. Its `reservationId` is
//! the caller's idempotency key: the same request again answers 200 with
//! the reservation as it stands and holds nothing more; the same id with
//! another order or other lines is 422 `idempotency-mismatch`. A refused
//! reservation leaves no trace, so retrying it later is a new attempt.
//! Release and commit are idempotent too. Each change publishes its event
//! (`stock.reserved`, `stock.released`, `stock.committed`,
//! `stock.restocked`) in its own transaction, through the outbox.
//!
//! Bodies are JSON: 415 otherwise, 413 when too large, 400 when not JSON,
//! 422 `invalid-field` naming the field that breaks a rule. Errors are
//! `application/problem+json` (RFC 9457).
//!
//! `expiresAt` says until when a reservation is meant to hold its stock;
//! nothing releases it automatically yet. A release of an id nothing was
//! reserved under still answers 404, and bars the id (a `RELEASED` row
//! with no lines, invisible to reads): a reserve under it that arrives
//! later, because its caller gave up waiting and released, is refused 409
//! `illegal-transition` and holds nothing.

mod events;
mod flash;
mod grpc;
mod live;
mod model;
mod problems;
mod schema;
mod store;

use std::sync::atomic::AtomicBool;

use bv_service::{json, path_info, read_json, Problem, ProblemKind, Reply, Trace};
use spin_sdk::http::{box_body, BoxBody, Method, Request, Response};
use spin_sdk::http_service;
use spin_sdk::pg::Connection;

use model::{NewReservation, ProductId, Reservation, ReservationId, Restock, Status};
use store::{atomically, Reserved};

/// Where `spin.toml` mounts this component (`route = "/api/inventory/..."`); callers
/// use the same path over service chaining.
const MOUNT: &str = "/api/inventory";

/// The largest restock body: `{"quantity": n}` needs a few bytes.
const MAX_RESTOCK_BODY: usize = 1024;

/// The largest reservation body: room for [`model::MAX_LINES`] lines with
/// long ids.
const MAX_RESERVATION_BODY: usize = 64 * 1024;

/// Set once this instance has seen the migrations applied.
static MIGRATED: AtomicBool = AtomicBool::new(false);

#[http_service]
async fn handle(req: Request) -> Response<BoxBody> {
    if bv_grpc::is_grpc(req.headers()) {
        return grpc::serve(req).await;
    }
    let streamed = match stream_path(&req) {
        Some(Stream::Stock(product)) => match product_id(&product) {
            Ok(product) => live::stock(product).await,
            Err(problem) => Err(problem),
        },
        Some(Stream::Sale(id)) => flash::follow(id).await,
        None => {
            return route(req)
                .await
                .unwrap_or_else(Problem::into_response)
                .map(box_body)
        }
    };
    streamed.unwrap_or_else(|problem| problem.into_response().map(box_body))
}

/// The streamed answers.
enum Stream {
    /// `GET|HEAD /api/inventory/{productId}/stream`.
    Stock(String),
    /// `GET|HEAD /api/inventory/flash-sales/{saleId}/stream`.
    Sale(String),
}

fn stream_path(req: &Request) -> Option<Stream> {
    if !matches!(req.method(), &Method::GET | &Method::HEAD) {
        return None;
    }
    let path = path_info(req, MOUNT).ok()?;
    match path.trim_start_matches('/').split('/').collect::<Vec<_>>()[..] {
        ["flash-sales", id, "stream"] => bv_service::percent_decode(id).map(Stream::Sale),
        [product, "stream"] if product != "reservations" && product != "flash-sales" => {
            bv_service::percent_decode(product).map(Stream::Stock)
        }
        _ => None,
    }
}

/// Where each path goes; anything else is 404, a known path with another
/// method 405.
async fn route(req: Request) -> Result<Reply, Problem> {
    let path = path_info(&req, MOUNT)?;
    let segments: Vec<String> = path
        .trim_start_matches('/')
        .split('/')
        .map(bv_service::percent_decode)
        .collect::<Option<_>>()
        .ok_or_else(|| Problem::not_found(format!("no resource at `{path}`")))?;
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    if segments.first() == Some(&"reservations") {
        // The order saga's calls: internal or an administrator's.
        bv_auth::require_internal_or_admin(req.headers()).await?;
    }
    let method = req.method().clone();
    // The events a change publishes join the request's trace.
    let trace = Trace::of(&req);
    let post = method == Method::POST;
    // HEAD is GET without the body (the runtime drops it).
    let get = method == Method::GET || method == Method::HEAD;
    match segments.as_slice() {
        ["flash-sales"] if post => flash::create(req).await,
        ["flash-sales"] => Err(Problem::method_not_allowed("POST")),
        ["flash-sales", id] if get => flash::get(id).await,
        ["flash-sales", _] | ["flash-sales", _, "stream"] => {
            Err(Problem::method_not_allowed("GET, HEAD"))
        }
        ["reservations"] if post => create_reservation(req, &trace).await,
        ["reservations"] => Err(Problem::method_not_allowed("POST")),
        ["reservations", id] if get => get_reservation(reservation_id(id)?).await,
        ["reservations", _] => Err(Problem::method_not_allowed("GET, HEAD")),
        ["reservations", id, "release"] if post => {
            transition(reservation_id(id)?, Status::Released, &trace).await
        }
        ["reservations", id, "commit"] if post => {
            transition(reservation_id(id)?, Status::Committed, &trace).await
        }
        ["reservations", _, "release" | "commit"] => Err(Problem::method_not_allowed("POST")),
        [product] if !product.is_empty() && get => get_stock(product_id(product)?).await,
        [product] if !product.is_empty() => Err(Problem::method_not_allowed("GET, HEAD")),
        [product, "restock"] if post => restock(product_id(product)?, req, &trace).await,
        [_, "restock"] => Err(Problem::method_not_allowed("POST")),
        [_, "stream"] => Err(Problem::method_not_allowed("GET, HEAD")),
        _ => Err(Problem::not_found(format!("no resource at `{path}`"))),
    }
}

/// Restocking: an administrator's bearer token (401 without a valid
/// token, 403 for a customer's).
async fn require_admin(req: &Request) -> Result<(), Problem> {
    bv_auth::require_admin(req.headers()).await.map(drop)
}

/// A path segment naming a product; one that cannot be a product id names
/// nothing.
fn product_id(segment: &str) -> Result<ProductId, Problem> {
    ProductId::try_from(segment.to_string())
        .map_err(|_| Problem::not_found(format!("no stock record for product `{segment}`")))
}

fn reservation_id(segment: &str) -> Result<ReservationId, Problem> {
    ReservationId::try_from(segment.to_string())
        .map_err(|_| Problem::not_found(format!("no reservation `{segment}`")))
}

/// A connection with the inventory tables in place; 503 when the database
/// cannot be reached.
async fn connect() -> Result<Connection, Problem> {
    let url = spin_sdk::variables::get("db_url")
        .await
        .map_err(|e| Problem::internal(format!("variable db_url: {e:?}")))?;
    let conn = Connection::open(url)
        .await
        .map_err(|e| Problem::unavailable(format!("the inventory database: {e}")))?;
    bv_service::migrate(&conn, schema::COMPONENT, schema::MIGRATIONS, &MIGRATED).await?;
    Ok(conn)
}

async fn get_stock(product: ProductId) -> Result<Reply, Problem> {
    Ok(json(200, &stock_json(&product).await?))
}

/// `product`'s stock record as JSON; 404 without one.
async fn stock_json(product: &ProductId) -> Result<serde_json::Value, Problem> {
    Ok(stock(product).await?.to_json())
}

/// `product`'s stock record; 404 without one.
async fn stock(product: &ProductId) -> Result<model::Stock, Problem> {
    let conn = connect().await?;
    atomically(&conn, async |tx| store::stock(tx, product).await)
        .await?
        .ok_or_else(|| Problem::not_found(format!("no stock record for product `{product}`")))
}

async fn restock(product: ProductId, req: Request, trace: &Trace) -> Result<Reply, Problem> {
    require_admin(&req).await?;
    let body: Restock = read_json(req, MAX_RESTOCK_BODY).await?;
    let conn = connect().await?;
    let stock = atomically(&conn, async |tx| {
        store::restock(tx, &product, &body, trace).await
    })
    .await?;
    Ok(json(200, &stock.to_json()))
}

async fn create_reservation(req: Request, trace: &Trace) -> Result<Reply, Problem> {
    let body: NewReservation = read_json(req, MAX_RESERVATION_BODY).await?;
    match reserve(&body, trace).await? {
        Reserved::Created(r) => Ok(json(201, &r.to_json())),
        Reserved::Replayed(r) => Ok(json(200, &r.to_json())),
    }
}

/// Holds `body`'s lines (or answers the reservation it repeats), counted
/// by outcome.
async fn reserve(body: &NewReservation, trace: &Trace) -> Result<Reserved, Problem> {
    let conn = connect().await?;
    let reserved = atomically(&conn, async |tx| store::reserve(tx, body, trace).await).await;
    // Reservations by outcome (`bv_app_stock_reservations_total`): a fixed
    // set of label values, whatever the problem.
    let outcome = match &reserved {
        Ok(Reserved::Created(_)) => "created",
        Ok(Reserved::Replayed(_)) => "replayed",
        Err(p) => match p.kind {
            ProblemKind::InsufficientStock
            | ProblemKind::UnknownProduct
            | ProblemKind::IdempotencyMismatch => p.kind.as_str(),
            _ => "error",
        },
    };
    bv_service::telemetry::counter("stock_reservations", &[("outcome", outcome)], 1);
    reserved
}

async fn get_reservation(id: ReservationId) -> Result<Reply, Problem> {
    Ok(json(200, &reservation(&id).await?.to_json()))
}

/// Reservation `id`; 404 without one.
async fn reservation(id: &ReservationId) -> Result<Reservation, Problem> {
    let conn = connect().await?;
    atomically(&conn, async |tx| store::reservation(tx, id, false).await)
        .await?
        .filter(|r| !r.is_bar())
        .ok_or_else(|| Problem::not_found(format!("no reservation `{id}`")))
}

async fn transition(id: ReservationId, to: Status, trace: &Trace) -> Result<Reply, Problem> {
    Ok(json(200, &moved(&id, to, trace).await?.to_json()))
}

/// Moves reservation `id` to `to` (idempotent); 409 when it already went
/// the other way.
async fn moved(id: &ReservationId, to: Status, trace: &Trace) -> Result<Reservation, Problem> {
    let conn = connect().await?;
    atomically(&conn, async |tx| store::transition(tx, id, to, trace).await)
        .await?
        .ok_or_else(|| Problem::not_found(format!("no reservation `{id}`")))
}
