//! The saga's inventory calls over gRPC, when the manifest says so
//! (variable `inventory_protocol = "grpc"`; `http`, the default, keeps
//! them on the HTTP API).
//!
//! The saga describes its calls the HTTP way (`POST
//! {INVENTORY}/reservations` with a JSON body, `.../{id}/release`,
//! `.../{id}/commit`); [`send`] carries each as its gRPC method
//! (`Reserve`, `Release`, `Commit` of `bitvelocity.inventory.v1.Inventory`)
//! and hands back the [`Answer`] the HTTP API would have given: the
//! reservation as JSON, or the problem carried by the status
//! (`bv_grpc::status`). So the same saga, with the same classifiers, runs
//! over either protocol. Each call carries the attempt's deadline
//! (`grpc-timeout`) and the trace (`traceparent` metadata); the gRPC code
//! stays on the answer ([`Answer::grpc`]) for the caller's retry policy.

use std::time::Duration;

use bv_grpc::channel::{SendFailed, SpinChannel};
use bv_grpc::inventory::inventory_client::InventoryClient;
use bv_grpc::inventory::{Line, Reservation, ReservationRef, ReservationStatus, ReserveRequest};
use bv_service::Trace;
use serde_json::{json, Value};
use tonic::{Code, Status};

use crate::services::{Answer, INVENTORY};

/// Where the inventory component is reached (service chaining).
const ORIGIN: &str = "http://inventory.spin.internal";

/// Whether the manifest routes the inventory's calls over gRPC.
pub async fn chosen() -> bool {
    matches!(
        spin_sdk::variables::get("inventory_protocol")
            .await
            .as_deref()
            .map(str::trim),
        Ok("grpc")
    )
}

/// Sends the saga's call `method url` (with its JSON `body`) as its gRPC
/// method (see the module docs). `Err` when no answer came.
pub async fn send(
    trace: &Trace,
    method: &str,
    url: &str,
    body: Option<&Value>,
    deadline: Duration,
) -> Result<Answer, String> {
    let path = url.strip_prefix(INVENTORY).unwrap_or(url);
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let origin = http::Uri::from_static(ORIGIN);
    let mut client = InventoryClient::with_origin(SpinChannel, origin);
    let by_ref = |id: &str| {
        call(
            trace,
            deadline,
            ReservationRef {
                reservation_id: id.to_string(),
            },
        )
    };
    let answered = match (method, segments.as_slice()) {
        ("POST", ["reservations"]) => {
            let request = reserve_request(body).map_err(|e| format!("{method} {url}: {e}"))?;
            client.reserve(call(trace, deadline, request)).await
        }
        ("POST", ["reservations", id, "release"]) => client.release(by_ref(id)).await,
        ("POST", ["reservations", id, "commit"]) => client.commit(by_ref(id)).await,
        _ => {
            return Err(format!(
                "{method} {url}: no gRPC method of the inventory carries this call"
            ))
        }
    };
    match answered {
        Ok(reply) => {
            let reservation = reply.into_inner();
            let status = if reservation.replayed || method_is_move(&segments) {
                200
            } else {
                201
            };
            Ok(Answer {
                status,
                body: reservation_json(&reservation),
                grpc: Some(Code::Ok),
            })
        }
        Err(status) => answer_of(status).map_err(|e| format!("{method} {url}: {e}")),
    }
}

fn method_is_move(segments: &[&str]) -> bool {
    segments.len() == 3
}

/// A request with the attempt's deadline and the trace.
fn call<T>(trace: &Trace, deadline: Duration, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(deadline);
    if let Some(value) = trace.traceparent().and_then(|t| t.parse().ok()) {
        request.metadata_mut().insert("traceparent", value);
    }
    request
}

/// A status as the answer the HTTP API would have given; `Err` when the
/// call could not be sent at all (no answer, like a refused connection).
fn answer_of(status: Status) -> Result<Answer, String> {
    let unsent =
        std::error::Error::source(&status).and_then(|source| source.downcast_ref::<SendFailed>());
    if let Some(unsent) = unsent {
        return Err(unsent.to_string());
    }
    let code = status.code();
    let (http_status, body) = bv_grpc::status::to_problem(&status);
    Ok(Answer {
        status: http_status,
        body,
        grpc: Some(code),
    })
}

/// The saga's reservation body (`{reservationId, orderId, items}`) as the
/// gRPC request.
fn reserve_request(body: Option<&Value>) -> Result<ReserveRequest, String> {
    let body = body.ok_or("a reservation needs a body")?;
    let text = |name: &str| {
        body[name]
            .as_str()
            .map(str::to_string)
            .ok_or(format!("no `{name}`"))
    };
    let items = body["items"]
        .as_array()
        .ok_or("no `items`")?
        .iter()
        .map(|line| {
            Ok(Line {
                product_id: line["productId"]
                    .as_str()
                    .ok_or("a line without `productId`")?
                    .to_string(),
                quantity: line["quantity"]
                    .as_i64()
                    .ok_or("a line without `quantity`")?,
            })
        })
        .collect::<Result<_, String>>()?;
    Ok(ReserveRequest {
        reservation_id: text("reservationId")?,
        order_id: text("orderId")?,
        items,
    })
}

/// The reservation as the HTTP API renders it.
fn reservation_json(r: &Reservation) -> Value {
    let status = ReservationStatus::try_from(r.status)
        .map(|s| s.as_str_name())
        .unwrap_or("RESERVATION_STATUS_UNSPECIFIED");
    json!({
        "reservationId": r.reservation_id,
        "orderId": r.order_id,
        "status": status,
        "items": r.items.iter().map(|l| json!({"productId": l.product_id, "quantity": l.quantity})).collect::<Vec<_>>(),
        "expiresAt": r.expires_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sagas_reservation_body_becomes_the_grpc_request() {
        let body = json!({
            "reservationId": "o-1", "orderId": "o-1",
            "items": [{"productId": "p-1", "quantity": 2}],
        });
        let request = reserve_request(Some(&body)).unwrap();
        assert_eq!(request.reservation_id, "o-1");
        assert_eq!(
            request.items,
            [Line {
                product_id: "p-1".into(),
                quantity: 2
            }]
        );
        assert!(reserve_request(Some(&json!({"reservationId": "o-1"}))).is_err());
        assert!(reserve_request(None).is_err());
    }

    #[test]
    fn a_refusal_is_an_answer_and_an_unsent_call_is_not() {
        let refused = bv_grpc::status::from_problem(&json!({
            "type": "urn:bitvelocity:problem:insufficient-stock",
            "status": 409, "detail": "not enough stock for p-1",
        }));
        let answer = answer_of(refused).unwrap();
        assert_eq!(
            (answer.status, answer.kind()),
            (409, Some("insufficient-stock"))
        );
        assert_eq!(answer.grpc, Some(Code::FailedPrecondition));
        let unsent = Status::from_error(Box::new(SendFailed("connection refused".into())));
        assert!(answer_of(unsent)
            .unwrap_err()
            .contains("connection refused"));
    }

    #[test]
    fn the_reservation_reads_as_over_http() {
        let r = Reservation {
            reservation_id: "o-1".into(),
            order_id: "o-1".into(),
            status: ReservationStatus::Reserved.into(),
            items: vec![Line {
                product_id: "p-1".into(),
                quantity: 2,
            }],
            expires_at: "2026-01-01T00:00:00.000Z".into(),
            replayed: false,
        };
        assert_eq!(reservation_json(&r)["status"], "RESERVED");
        assert_eq!(reservation_json(&r)["items"][0]["quantity"], 2);
    }
}
