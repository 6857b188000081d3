//! The calls to the services a checkout holds resources in, over service
//! chaining (`http://<component>.spin.internal`, served in-process).
//!
//! Every call is idempotent on the callee's side (reservation id and
//! payment id are the order id), so a retry, a compensation after a crash
//! or a compensation racing the saga it undoes never holds or gives back
//! twice.

use bv_service::{Trace, TYPE_PREFIX};

use crate::model::OrderId;
use bytes::Bytes;
use serde_json::Value;
use spin_sdk::http::body::IncomingBodyExt;
use spin_sdk::http::FullBody;

/// The inventory service's API.
pub const INVENTORY: &str = "http://inventory.spin.internal/api/inventory";
/// The payment service's API.
pub const PAYMENT: &str = "http://payment.spin.internal/api/payments";
/// The cart service's API.
pub const CART: &str = "http://cart.spin.internal/api/carts/me";

/// A callee's answer: its status and its body as JSON (`null` when empty
/// or not JSON). Over gRPC, the HTTP status and problem body the HTTP API
/// would have answered (`bv_grpc::status::to_problem`), and the code.
#[derive(Debug)]
pub struct Answer {
    /// The HTTP status.
    pub status: u16,
    /// The body.
    pub body: Value,
    /// The gRPC status code when the call went over gRPC.
    pub grpc: Option<bv_grpc::Code>,
}

impl Answer {
    /// An answer over HTTP.
    pub fn http(status: u16, body: Value) -> Self {
        Self {
            status,
            body,
            grpc: None,
        }
    }

    /// The problem kind of an error answer (`urn:bitvelocity:problem:<kind>`).
    pub fn kind(&self) -> Option<&str> {
        self.body
            .get("type")
            .and_then(Value::as_str)
            .and_then(|t| t.strip_prefix(TYPE_PREFIX))
    }
}

/// How long an unguarded call (the cart, a cancel's or the sweeper's
/// give-back, a fulfilment) may take before it is abandoned; the saga's
/// own calls have deadlines of their own (`order`'s `resilience`).
pub const CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// [`send`] within [`CALL_TIMEOUT`]: a callee that does not answer in time
/// is an `Err` like one that cannot be reached.
pub async fn call(
    trace: &Trace,
    method: &str,
    url: &str,
    authorization: Option<&str>,
    body: Option<&Value>,
) -> Result<Answer, String> {
    call_with(trace, method, url, authorization, &[], body).await
}

/// [`call`] with extra request `headers`.
pub async fn call_with(
    trace: &Trace,
    method: &str,
    url: &str,
    authorization: Option<&str>,
    headers: &[(&str, &str)],
    body: Option<&Value>,
) -> Result<Answer, String> {
    let sent = send(
        trace,
        method,
        url,
        authorization,
        headers,
        body,
        CALL_TIMEOUT,
    );
    bv_resilience::within(sent, spin_sdk::time::sleep(CALL_TIMEOUT))
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "{method} {url}: no answer within {} s",
                CALL_TIMEOUT.as_secs()
            ))
        })
}

/// Sends `method url` with a JSON `body` (if any) and the caller's
/// `authorization` header (if any: the cart is asked for the customer with
/// the customer's own token; inventory and payment take internal calls),
/// in `trace` (its `traceparent` forwarded, so the callee's work joins the
/// caller's trace). `Err` when the call itself failed (no answer). No
/// deadline of its own (see [`call`]): `deadline` is what the callee is
/// told (`grpc-timeout`) when the call goes over gRPC, as the inventory's
/// do when `inventory_protocol` is `grpc` ([`crate::inventory_grpc`]).
pub async fn send(
    trace: &Trace,
    method: &str,
    url: &str,
    authorization: Option<&str>,
    headers: &[(&str, &str)],
    body: Option<&Value>,
    deadline: std::time::Duration,
) -> Result<Answer, String> {
    if url.starts_with(INVENTORY) && crate::inventory_grpc::chosen().await {
        return crate::inventory_grpc::send(trace, method, url, body, deadline).await;
    }
    let mut builder = trace.forward(http::Request::builder().method(method).uri(url));
    if let Some(authorization) = authorization {
        builder = builder.header("authorization", authorization);
    }
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let bytes = match body {
        Some(body) => {
            builder = builder.header("content-type", "application/json");
            Bytes::from(body.to_string())
        }
        None => Bytes::new(),
    };
    let request = builder
        .body(FullBody::new(bytes))
        .map_err(|e| format!("{method} {url}: {e}"))?;
    let response = spin_sdk::http::send(request)
        .await
        .map_err(|e| format!("{method} {url}: {e:?}"))?;
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .bytes()
        .await
        .map_err(|e| format!("{method} {url}: reading the answer: {e:?}"))?;
    let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
    Ok(Answer::http(status, body))
}

/// Gives back everything a checkout of `order_id` may hold: the stock
/// reservation and the payment (voided when only authorized, refunded when
/// captured). Both are idempotent and answer 404 when there is nothing to
/// give back, so this is safe whatever step the saga reached. `Err` names
/// the call that failed; compensating again later is the remedy.
pub async fn give_back(trace: &Trace, order_id: &OrderId) -> Result<(), String> {
    let released = call(
        trace,
        "POST",
        &format!("{INVENTORY}/reservations/{order_id}/release"),
        None,
        None,
    )
    .await?;
    if !matches!(released.status, 200 | 404) {
        return Err(format!(
            "releasing reservation {order_id}: {} {}",
            released.status, released.body
        ));
    }
    let refunded = call(
        trace,
        "POST",
        &format!("{PAYMENT}/{order_id}/refund"),
        None,
        None,
    )
    .await?;
    // 409: the payment was declined, so there is nothing to give back.
    if !matches!(refunded.status, 200 | 404 | 409) {
        return Err(format!(
            "refunding payment {order_id}: {} {}",
            refunded.status, refunded.body
        ));
    }
    Ok(())
}
