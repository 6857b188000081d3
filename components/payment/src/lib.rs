//! `payment`: a simulated card processor under `/api/payments`, the kind
//! of payment service commerce demos use, with failures a test or a demo
//! chooses.
//!
//! | call | answer |
//! |---|---|
//! | `POST /api/payments/authorize` `{paymentId, orderId, amount: {amount, currency}, card: {token}}` | 201 `AUTHORIZED` with an `authorizationCode`, or 402 with the decline |
//! | `POST /api/payments/{paymentId}/capture` | 200 `CAPTURED` |
//! | `POST /api/payments/{paymentId}/refund` | 200 `REFUNDED` |
//! | `GET /api/payments/{paymentId}` | 200, the payment as it is now |
//! | `GET` / `POST {"on": bool}` / `DELETE` `/api/payments/admin/outage` | the outage switch (an administrator's token) |
//!
//! The payment calls are made by the order saga: they take requests from
//! other components over service chaining, or from an administrator's
//! bearer token (401 without a valid token, 403 for a customer's).
//!
//! Capture and refund are always of the whole amount (a body with fields
//! is 422). A refund of a captured payment gives the money back
//! (`refundKind: "refund"`); a refund of an authorized one releases the
//! authorization instead (`refundKind: "void"`); either way the payment is
//! `REFUNDED`, and capturing it afterwards is 409.
//!
//! # Idempotency
//!
//! `paymentId` is chosen by the client and is the idempotency key:
//! repeating a call answers what the first one did, with the header
//! `idempotent-replayed: true`. A repeated authorize answers the
//! authorization (or the decline) even when the payment has moved on since;
//! a repeated capture answers while the payment is `CAPTURED`, a repeated
//! refund while it is `REFUNDED`. The same `paymentId` with another
//! `orderId`, amount or token is 422 `idempotency-mismatch` (`fields`
//! names them). Any other step the state does not allow is 409
//! `illegal-transition` (capture after refund, capture or refund of a
//! declined payment).
//!
//! # Failure modes
//!
//! Deterministic, chosen per request or per start:
//!
//! - card tokens `tok_decline`, `tok_insufficient_funds`, `tok_expired`
//!   are declined: 402 `card-declined`, `insufficient-funds`,
//!   `card-expired`; any other `tok_…` is approved. Card numbers are never
//!   accepted (`card.number` is 422).
//! - amounts over `payment_amount_limit` (minor units, default 100000) are
//!   declined 402 `amount-limit`. The limit is checked before the card.
//! - every answer of the payment calls waits `payment_latency_ms` (default
//!   0) after the work is done: a slow processor that has already acted,
//!   which is what retries with the same `paymentId` are for.
//! - `payment_outage=true` makes every payment call (the admin one aside)
//!   503 `unavailable` with `Retry-After`, recording nothing.
//!
//! Declines are recorded (`DECLINED`), so a repeat gets the same decline
//! even after the limit changed. Variables are read on every request:
//! start with `SPIN_VARIABLE_PAYMENT_OUTAGE=true` (or `…_LATENCY_MS`,
//! `…_AMOUNT_LIMIT`) and restart to change them. The outage can also be
//! switched while running: `POST /api/payments/admin/outage {"on": true}`
//! stores an override in the default key-value store (it wins over the
//! variable until `DELETE` clears it).
//!
//! # State and events
//!
//! The `payments` table (migrated on first use) holds every payment; each
//! step publishes its event to the outbox in the same transaction:
//! `payment.authorized`, `payment.declined`, `payment.captured`,
//! `payment.refunded` (source `/payments`, subject the payment id).
#![deny(missing_docs)]

mod admin;
mod api;
mod config;
mod domain;
mod events;
mod store;

use bv_service::{path_info, Problem, Reply};
use spin_sdk::http::{HeaderValue, Method, Request};
use spin_sdk::http_service;

use crate::api::Step;
use crate::config::Config;

/// Where `spin.toml` mounts this component (`route = "/api/payments/..."`); callers
/// use the same path over service chaining.
const MOUNT: &str = "/api/payments";

/// Seconds a client should wait after a 503.
const RETRY_AFTER_SECONDS: &str = "5";

#[http_service]
async fn handle(req: Request) -> Reply {
    let path = match path_info(&req, MOUNT) {
        Ok(path) => path,
        Err(p) => return p.into_response(),
    };
    let endpoint = match Endpoint::parse(req.method(), &path) {
        Ok(endpoint) => endpoint,
        Err(reply) => return *reply,
    };
    if endpoint == Endpoint::Outage {
        return admin::outage(req)
            .await
            .unwrap_or_else(Problem::into_response);
    }
    // The payment calls are the order saga's: from other components over
    // service chaining, or from an administrator.
    if let Err(p) = bv_auth::require_internal_or_admin(req.headers()).await {
        return p.into_response();
    }
    let config = match Config::load().await {
        Ok(config) => config,
        Err(p) => return p.into_response(),
    };
    let reply = if config.outage.on() {
        unavailable()
    } else {
        let result = match endpoint {
            Endpoint::Authorize => api::authorize(req, &config).await,
            Endpoint::Get(id) => api::get(&id).await,
            Endpoint::Step(id, step) => api::step(&id, step, req).await,
            Endpoint::Outage => unreachable!("handled above"),
        };
        result.unwrap_or_else(Problem::into_response)
    };
    // After the work, before the answer: a slow processor that has already
    // acted, which is what makes retries with the same paymentId matter.
    spin_sdk::time::sleep(config.latency).await;
    reply
}

/// What a request asks for.
#[derive(Debug, PartialEq, Eq)]
enum Endpoint {
    Authorize,
    Get(String),
    Step(String, Step),
    Outage,
}

impl Endpoint {
    /// Routes a path after `/api/payments`: 404 for an unknown path, 405
    /// (with `Allow`) for a known path with another method.
    fn parse(method: &Method, path: &str) -> Result<Self, Box<Reply>> {
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let (endpoint, allowed): (_, &[Method]) = match segments.as_slice() {
            ["authorize"] => (Endpoint::Authorize, &[Method::POST]),
            ["admin", "outage"] => (
                Endpoint::Outage,
                &[Method::GET, Method::HEAD, Method::POST, Method::DELETE],
            ),
            [id] if !id.is_empty() => (Endpoint::Get(id.to_string()), &[Method::GET, Method::HEAD]),
            [id, "capture"] if !id.is_empty() => (
                Endpoint::Step(id.to_string(), Step::Capture),
                &[Method::POST],
            ),
            [id, "refund"] if !id.is_empty() => (
                Endpoint::Step(id.to_string(), Step::Refund),
                &[Method::POST],
            ),
            _ => {
                return Err(Box::new(
                    Problem::not_found(format!("no such payment call: `/api/payments{path}`"))
                        .into_response(),
                ))
            }
        };
        if allowed.contains(method) {
            return Ok(endpoint);
        }
        let allow = allowed
            .iter()
            .map(Method::as_str)
            .collect::<Vec<_>>()
            .join(", ");
        Err(Box::new(
            Problem::method_not_allowed(&allow).into_response(),
        ))
    }
}

/// 503 while the processor is down: nothing is read or recorded.
fn unavailable() -> Reply {
    let mut reply = Problem::unavailable(
        "the card processor is down (payment_outage); retry later with the same paymentId",
    )
    .into_response();
    reply
        .headers_mut()
        .insert("retry-after", HeaderValue::from_static(RETRY_AFTER_SECONDS));
    reply
}
