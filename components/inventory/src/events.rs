//! The events the inventory publishes, built from the state they describe.
//!
//! Reservation events have ids derived from the reservation and the
//! change (`reservation/<id>/<change>`): each change happens at most once,
//! and the outbox's unique (source, id) would refuse a second copy.

use bv_events_guest::CloudEvent;
use serde_json::{json, Value};

use crate::model::{Reservation, Status, Stock};

/// The `source` of every inventory event.
pub const SOURCE: &str = "/inventory";

/// The one warehouse stock is kept in for now; the events name it so that
/// consumers are ready for more.
pub const WAREHOUSE: &str = "main";

/// `stock.reserved`, `stock.released` or `stock.committed`, after
/// `reservation` reached its current status.
pub fn reservation(reservation: &Reservation) -> CloudEvent {
    let (ty, change) = match reservation.status {
        Status::Reserved => ("com.bitvelocity.stock.reserved.v1", "reserved"),
        Status::Released => ("com.bitvelocity.stock.released.v1", "released"),
        Status::Committed => ("com.bitvelocity.stock.committed.v1", "committed"),
    };
    let items: Vec<Value> = reservation
        .items
        .iter()
        .map(|i| json!({"productId": i.product_id, "sku": i.sku, "quantity": i.quantity}))
        .collect();
    let mut data = json!({
        "reservationId": reservation.id.as_str(),
        "orderId": reservation.order_id,
        "warehouseId": WAREHOUSE,
        "items": items,
    });
    if reservation.status == Status::Reserved {
        data["expiresAt"] = json!(reservation.expires_at);
    }
    CloudEvent::with_id(
        format!("reservation/{}/{change}", reservation.id),
        ty,
        SOURCE,
        reservation.id.as_str(),
        data,
    )
}

/// `stock.restocked`: `quantity` units arrived, leaving `stock`.
pub fn restocked(stock: &Stock, quantity: i64) -> CloudEvent {
    CloudEvent::new(
        "com.bitvelocity.stock.restocked.v1",
        SOURCE,
        &stock.product_id,
        json!({
            "productId": stock.product_id,
            "sku": stock.sku,
            "warehouseId": WAREHOUSE,
            "quantity": quantity,
            "onHand": stock.on_hand,
        }),
    )
}
