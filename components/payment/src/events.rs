//! The events a payment's steps publish (schemas under
//! `shared/events/schemas/payment.*`), built from the row the step wrote.

use bv_events_guest::CloudEvent;
use serde_json::json;

use crate::store::Payment;

/// The `source` of every payment event.
const SOURCE: &str = "/payments";

/// Who processed the payment, as the events name it.
const PROVIDER: &str = "bitvelocity-simulator";

/// `payment.authorized`: the amount is reserved on the card.
pub fn authorized(p: &Payment) -> CloudEvent {
    event(
        "com.bitvelocity.payment.authorized.v1",
        p,
        json!({
            "paymentId": p.payment_id,
            "orderId": p.order_id,
            "amount": p.amount,
            "provider": PROVIDER,
            "authorizationCode": p.authorization_code,
            "authorizedAt": p.created_at,
        }),
    )
}

/// `payment.declined`: refused, for good.
pub fn declined(p: &Payment) -> CloudEvent {
    event(
        "com.bitvelocity.payment.declined.v1",
        p,
        json!({
            "paymentId": p.payment_id,
            "orderId": p.order_id,
            "amount": p.amount,
            "provider": PROVIDER,
            "reason": p.decline.map(|d| d.code()),
            "declinedAt": p.created_at,
        }),
    )
}

/// `payment.captured`: the authorized amount moves.
pub fn captured(p: &Payment) -> CloudEvent {
    event(
        "com.bitvelocity.payment.captured.v1",
        p,
        json!({
            "paymentId": p.payment_id,
            "orderId": p.order_id,
            "amount": p.amount,
            "provider": PROVIDER,
            "authorizationCode": p.authorization_code,
            "capturedAt": p.captured_at,
        }),
    )
}

/// `payment.refunded`: money returned (`kind` `refund`) or an
/// authorization released before capture (`kind` `void`).
pub fn refunded(p: &Payment) -> CloudEvent {
    event(
        "com.bitvelocity.payment.refunded.v1",
        p,
        json!({
            "paymentId": p.payment_id,
            "orderId": p.order_id,
            "amount": p.amount,
            "provider": PROVIDER,
            "kind": p.refund_kind,
            "refundedAt": p.refunded_at,
        }),
    )
}

fn event(ty: &str, p: &Payment, data: serde_json::Value) -> CloudEvent {
    CloudEvent::new(ty, SOURCE, &p.payment_id, data)
}
