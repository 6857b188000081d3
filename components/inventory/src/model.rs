//! The inventory's domain types. Each parses (through serde's `try_from`)
//! instead of being checked afterwards, so a handler that holds one holds
//! a valid value, and a request that breaks a rule is a 422 naming the
//! field.

use serde::Deserialize;

/// The most of one product a single restock or reservation line may move:
/// far above any real order, far below anything that could overflow.
pub const MAX_QUANTITY: i64 = 1_000_000;

/// The most lines a reservation may hold.
pub const MAX_LINES: usize = 100;

/// The longest identifier accepted, in bytes.
const MAX_ID_BYTES: usize = 256;

/// A catalogue product's id, as the catalogue assigned it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct ProductId(String);

/// A reservation's id, chosen by the caller: the idempotency key of the
/// reservation. Letters, digits and `-_.:` only, so it appears in paths as
/// is.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct ReservationId(String);

/// The order a reservation holds stock for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct OrderId(String);

/// A number of units: 1 to [`MAX_QUANTITY`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(try_from = "i64")]
pub struct Quantity(i64);

fn plain_text(what: &str, s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err(format!("{what} must not be empty"));
    }
    if s.len() > MAX_ID_BYTES {
        return Err(format!("{what} must be at most {MAX_ID_BYTES} bytes"));
    }
    if s.chars().any(char::is_control) {
        return Err(format!("{what} must not contain control characters"));
    }
    Ok(())
}

impl TryFrom<String> for ProductId {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        plain_text("a product id", &s)?;
        Ok(Self(s))
    }
}

impl TryFrom<String> for OrderId {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        plain_text("an order id", &s)?;
        Ok(Self(s))
    }
}

impl TryFrom<String> for ReservationId {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        if s.is_empty() || s.len() > 128 {
            return Err("a reservation id must be 1 to 128 characters".into());
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        {
            return Err(format!(
                "a reservation id may hold only letters, digits and `-_.:`, got `{s}`"
            ));
        }
        Ok(Self(s))
    }
}

impl TryFrom<i64> for Quantity {
    type Error = String;
    fn try_from(n: i64) -> Result<Self, String> {
        if !(1..=MAX_QUANTITY).contains(&n) {
            return Err(format!(
                "must be an integer from 1 to {MAX_QUANTITY}, got {n}"
            ));
        }
        Ok(Self(n))
    }
}

macro_rules! text_access {
    ($($ty:ident),*) => {$(
        impl $ty {
            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }
    )*};
}

text_access!(ProductId, ReservationId, OrderId);

impl Quantity {
    /// The number of units.
    pub fn get(self) -> i64 {
        self.0
    }
}

/// `POST /api/inventory/{productId}/restock`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Restock {
    /// Units received.
    pub quantity: Quantity,
}

/// One line of a reservation.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Line {
    /// The product.
    pub product_id: ProductId,
    /// Units to hold.
    pub quantity: Quantity,
}

/// The lines of a reservation: 1 to [`MAX_LINES`], one per product, kept
/// in product-id order (byte order, `COLLATE "C"` in SQL). Every
/// transaction locks stock rows in that order, so two reservations
/// sharing products can never deadlock; and two requests listing the same
/// lines in another order are the same request.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "Vec<Line>")]
pub struct Lines(Vec<Line>);

impl TryFrom<Vec<Line>> for Lines {
    type Error = String;
    fn try_from(mut lines: Vec<Line>) -> Result<Self, String> {
        if lines.is_empty() {
            return Err("a reservation needs at least one line".into());
        }
        if lines.len() > MAX_LINES {
            return Err(format!(
                "at most {MAX_LINES} lines per reservation, got {}",
                lines.len()
            ));
        }
        lines.sort_by(|a, b| a.product_id.cmp(&b.product_id));
        if let Some(pair) = lines
            .windows(2)
            .find(|w| w[0].product_id == w[1].product_id)
        {
            return Err(format!(
                "product `{}` is listed twice: give one line per product",
                pair[0].product_id
            ));
        }
        Ok(Self(lines))
    }
}

impl Lines {
    /// The lines, in product-id order.
    pub fn iter(&self) -> std::slice::Iter<'_, Line> {
        self.0.iter()
    }

    /// The product ids, in order.
    pub fn product_ids(&self) -> Vec<&ProductId> {
        self.0.iter().map(|l| &l.product_id).collect()
    }
}

/// `POST /api/inventory/reservations`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NewReservation {
    /// The caller's idempotency key.
    pub reservation_id: ReservationId,
    /// The order the stock is for.
    pub order_id: OrderId,
    /// What to hold.
    pub items: Lines,
}

/// Where a reservation stands. `Reserved` moves to `Released` (the stock
/// goes back) or `Committed` (the stock leaves for good), never further.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Stock is held.
    Reserved,
    /// The hold was given back.
    Released,
    /// The held stock was taken out of the warehouse.
    Committed,
}

impl Status {
    /// The stored and serialized name.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Reserved => "RESERVED",
            Status::Released => "RELEASED",
            Status::Committed => "COMMITTED",
        }
    }

    /// The status of a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        [Status::Reserved, Status::Released, Status::Committed]
            .into_iter()
            .find(|st| st.as_str() == s)
    }
}

/// A reservation line as stored.
#[derive(Debug, Clone)]
pub struct Item {
    /// The product.
    pub product_id: String,
    /// Its SKU, which the events name.
    pub sku: String,
    /// Units held.
    pub quantity: i64,
}

/// A reservation as stored.
#[derive(Debug, Clone)]
pub struct Reservation {
    /// Its id.
    pub id: ReservationId,
    /// Its order (kept as stored: it was valid when it was made).
    pub order_id: String,
    /// Where it stands.
    pub status: Status,
    /// Its lines, in product-id order.
    pub items: Vec<Item>,
    /// Until when the stock is meant to be held (RFC 3339, UTC).
    pub expires_at: String,
}

impl Reservation {
    /// Whether this is a bar: what a release leaves under an id nothing
    /// was reserved under (`RELEASED`, no lines), so that a late reserve
    /// holds nothing.
    pub fn is_bar(&self) -> bool {
        self.status == Status::Released && self.items.is_empty()
    }

    /// Whether `request` asks for exactly this reservation (same order,
    /// same lines in any order): a replay rather than a reuse of the id.
    pub fn matches(&self, request: &NewReservation) -> bool {
        self.order_id == request.order_id.as_str()
            && self.items.len() == request.items.0.len()
            && self
                .items
                .iter()
                .zip(request.items.iter())
                .all(|(item, line)| {
                    item.product_id == line.product_id.as_str()
                        && item.quantity == line.quantity.get()
                })
    }

    /// The JSON answer.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "reservationId": self.id.as_str(),
            "orderId": self.order_id,
            "status": self.status.as_str(),
            "items": self
                .items
                .iter()
                .map(|i| serde_json::json!({"productId": i.product_id, "quantity": i.quantity}))
                .collect::<Vec<_>>(),
            "expiresAt": self.expires_at,
        })
    }
}

/// A product's stock.
#[derive(Debug, Clone)]
pub struct Stock {
    /// The product.
    pub product_id: String,
    /// Its SKU, from the catalogue's event.
    pub sku: String,
    /// Units in the warehouse.
    pub on_hand: i64,
    /// Units held by reservations.
    pub reserved: i64,
}

impl Stock {
    /// Units free to reserve.
    pub fn available(&self) -> i64 {
        self.on_hand - self.reserved
    }

    /// The JSON answer.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "productId": self.product_id,
            "sku": self.sku,
            "onHand": self.on_hand,
            "reserved": self.reserved,
            "available": self.available(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(json: &str) -> Result<NewReservation, String> {
        serde_json::from_str(json).map_err(|e| e.to_string())
    }

    #[test]
    fn quantities_and_ids_parse_or_say_why() {
        assert_eq!(Quantity::try_from(1).unwrap().get(), 1);
        assert!(Quantity::try_from(0).unwrap_err().contains("from 1 to"));
        assert!(Quantity::try_from(-3).is_err());
        assert!(Quantity::try_from(MAX_QUANTITY + 1).is_err());
        assert!(ReservationId::try_from("r-1:a_b.c".to_string()).is_ok());
        for bad in ["", "a b", "a/b", "é"] {
            assert!(ReservationId::try_from(bad.to_string()).is_err(), "{bad}");
        }
        assert!(ProductId::try_from("p 1/ü".to_string()).is_ok());
        assert!(ProductId::try_from(String::new()).is_err());
        assert!(ProductId::try_from("a\nb".to_string()).is_err());
        assert!(ProductId::try_from("x".repeat(257)).is_err());
    }

    #[test]
    fn lines_are_sorted_unique_and_bounded() {
        let r = request(
            r#"{"reservationId":"r","orderId":"o","items":[{"productId":"b","quantity":1},{"productId":"a","quantity":2}]}"#,
        )
        .unwrap();
        let ids: Vec<&str> = r.items.product_ids().iter().map(|p| p.as_str()).collect();
        assert_eq!(ids, ["a", "b"]);
        let twice = request(
            r#"{"reservationId":"r","orderId":"o","items":[{"productId":"a","quantity":1},{"productId":"a","quantity":2}]}"#,
        );
        assert!(twice.unwrap_err().contains("listed twice"));
        let none = request(r#"{"reservationId":"r","orderId":"o","items":[]}"#);
        assert!(none.unwrap_err().contains("at least one line"));
    }

    #[test]
    fn a_replay_is_the_same_order_and_lines_in_any_order() {
        let stored = Reservation {
            id: ReservationId::try_from("r".to_string()).unwrap(),
            order_id: "o".into(),
            status: Status::Released,
            items: vec![
                Item {
                    product_id: "a".into(),
                    sku: "A".into(),
                    quantity: 2,
                },
                Item {
                    product_id: "b".into(),
                    sku: "B".into(),
                    quantity: 1,
                },
            ],
            expires_at: "2026-01-01T00:00:00.000Z".into(),
        };
        let same = request(
            r#"{"reservationId":"r","orderId":"o","items":[{"productId":"b","quantity":1},{"productId":"a","quantity":2}]}"#,
        )
        .unwrap();
        assert!(stored.matches(&same));
        for other in [
            r#"{"reservationId":"r","orderId":"o2","items":[{"productId":"b","quantity":1},{"productId":"a","quantity":2}]}"#,
            r#"{"reservationId":"r","orderId":"o","items":[{"productId":"b","quantity":2},{"productId":"a","quantity":2}]}"#,
            r#"{"reservationId":"r","orderId":"o","items":[{"productId":"a","quantity":2}]}"#,
        ] {
            assert!(!stored.matches(&request(other).unwrap()), "{other}");
        }
    }
}
