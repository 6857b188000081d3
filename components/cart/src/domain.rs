//! The cart's domain types. Each one parses its raw form once, at the edge,
//! so the rest of the code never sees an invalid id or quantity.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The most of one product a cart may hold.
pub const MAX_QUANTITY: u8 = 99;

/// A product's id, as the product service names it (a UUID today): 1–64
/// ASCII letters, digits, `-` or `_`, which is what makes it safe to put in
/// a URL path and a Redis hash field without escaping. Lower-cased, so that
/// two spellings of one UUID are one cart line.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ProductId(String);

impl TryFrom<String> for ProductId {
    type Error = String;
    fn try_from(raw: String) -> Result<Self, String> {
        let ok = (1..=64).contains(&raw.len())
            && raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if ok {
            Ok(Self(raw.to_ascii_lowercase()))
        } else {
            Err("must be 1–64 letters, digits, `-` or `_`".into())
        }
    }
}

impl From<ProductId> for String {
    fn from(id: ProductId) -> String {
        id.0
    }
}

impl ProductId {
    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ProductId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A quantity to add: 1 to [`MAX_QUANTITY`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quantity(u8);

impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = i64::deserialize(d)?;
        match u8::try_from(n) {
            Ok(q) if (1..=MAX_QUANTITY).contains(&q) => Ok(Self(q)),
            _ => Err(serde::de::Error::custom(format!(
                "must be an integer from 1 to {MAX_QUANTITY}, got {n}"
            ))),
        }
    }
}

impl Quantity {
    /// The number of units.
    pub fn get(self) -> u8 {
        self.0
    }
}

/// A line's new quantity: 0 (remove the line) to [`MAX_QUANTITY`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewQuantity(u8);

impl<'de> Deserialize<'de> for NewQuantity {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = i64::deserialize(d)?;
        match u8::try_from(n) {
            Ok(q) if q <= MAX_QUANTITY => Ok(Self(q)),
            _ => Err(serde::de::Error::custom(format!(
                "must be an integer from 0 to {MAX_QUANTITY}, got {n}"
            ))),
        }
    }
}

impl NewQuantity {
    /// The line's quantity, or `None` when the line is to go.
    pub fn positive(self) -> Option<Quantity> {
        (self.0 > 0).then_some(Quantity(self.0))
    }
}

/// `POST /api/carts/me/items`. No price, name or currency: those come from
/// the product service, and a body that sends them is refused (422 naming
/// the field) rather than silently ignored.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AddItem {
    /// The product to add.
    pub product_id: ProductId,
    /// How many more of it.
    pub quantity: Quantity,
}

/// `PUT /api/carts/me/items/{productId}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangeItem {
    /// The line's new quantity; 0 removes it.
    pub quantity: NewQuantity,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_refuses() {
        let add: AddItem = serde_json::from_str(r#"{"productId":"p-1","quantity":3}"#).unwrap();
        assert_eq!((add.product_id.as_str(), add.quantity.get()), ("p-1", 3));
        for bad in [
            r#"{"productId":"p-1","quantity":0}"#,
            r#"{"productId":"p-1","quantity":-1}"#,
            r#"{"productId":"p-1","quantity":100}"#,
            r#"{"productId":"p-1","quantity":1.5}"#,
            r#"{"productId":"p-1","quantity":"2"}"#,
            r#"{"productId":"p 1","quantity":1}"#,
            r#"{"productId":"","quantity":1}"#,
            r#"{"productId":"p-1","quantity":1,"price":{"amount":1,"currency":"EUR"}}"#,
        ] {
            assert!(serde_json::from_str::<AddItem>(bad).is_err(), "{bad}");
        }
        let change: ChangeItem = serde_json::from_str(r#"{"quantity":0}"#).unwrap();
        assert!(change.quantity.positive().is_none());
        assert!(serde_json::from_str::<ChangeItem>(r#"{"quantity":99}"#).is_ok());
        assert!(serde_json::from_str::<ChangeItem>(r#"{"quantity":100}"#).is_err());
    }
}
