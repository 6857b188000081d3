//! `order-analytics`: projections of the order stream, and their read API.
//!
//! 1. **Event handler** (`[[trigger.postgres]]` on the order events,
//!    `max_in_flight = 1`: one event at a time, in outbox order), in
//!    [`projection`]: keeps, in the schema `analytics`,
//!    - `orders_by_customer`: one row per order (customer, status, total,
//!      item count, placed and updated times);
//!    - `minute_totals`: per minute of event time and currency, orders
//!      placed and their value, orders paid and the revenue;
//!    - `minute_products`: per minute and product, units ordered and the
//!      orders they came in, from which the top products of a sliding
//!      15-minute window are read;
//!    - `late_events`: the events that came too late for their minute.
//! 2. **HTTP** (`/api/analytics/...`): the same tables, read
//!    ([`api`]): a customer's orders (the customer or an administrator),
//!    revenue per minute and top products (administrators).
//!
//! The rules (windows, late events, rebuilding by replay): docs/ANALYTICS.md.

#![deny(missing_docs)]

mod api;
mod projection;
mod schema;
mod time;

use bv_service::{path_info, Problem, Reply};
use spin_sdk::http::{Method, Request};
use spin_sdk::http_service;

/// Where `spin.toml` mounts the component (`route = "/api/analytics/..."`).
const MOUNT: &str = "/api/analytics";

#[http_service]
async fn handle(req: Request) -> Reply {
    route(req).await.unwrap_or_else(Problem::into_response)
}

async fn route(req: Request) -> Result<Reply, Problem> {
    let path = path_info(&req, MOUNT)?;
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    // HEAD is GET without the body (the runtime drops it).
    let get = *req.method() == Method::GET || *req.method() == Method::HEAD;
    let query = req.uri().query().unwrap_or("").to_string();
    match (parts.as_slice(), get) {
        (["revenue"], true) => api::revenue(&req, &query).await,
        (["top-products"], true) => api::top_products(&req, &query).await,
        (["customers", customer, "orders"], true) => {
            api::customer_orders(&req, customer, &query).await
        }
        (["revenue"] | ["top-products"] | ["customers", _, "orders"], false) => {
            Err(Problem::method_not_allowed("GET, HEAD"))
        }
        _ => Err(Problem::not_found(format!("no route {MOUNT}{path}"))),
    }
}
