//! Money: integer minor units and an ISO 4217 currency.

use serde::{Deserialize, Serialize};

/// The currencies the shop prices in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Currency {
    /// US dollar.
    USD,
    /// Euro.
    EUR,
    /// Pound sterling.
    GBP,
    /// Indian rupee.
    INR,
    /// Japanese yen.
    JPY,
    /// Canadian dollar.
    CAD,
    /// Australian dollar.
    AUD,
}

impl Currency {
    /// The ISO 4217 code.
    pub fn code(self) -> &'static str {
        match self {
            Currency::USD => "USD",
            Currency::EUR => "EUR",
            Currency::GBP => "GBP",
            Currency::INR => "INR",
            Currency::JPY => "JPY",
            Currency::CAD => "CAD",
            Currency::AUD => "AUD",
        }
    }

    /// Parses an ISO 4217 code this shop prices in.
    pub fn parse(code: &str) -> Option<Self> {
        [
            Currency::USD,
            Currency::EUR,
            Currency::GBP,
            Currency::INR,
            Currency::JPY,
            Currency::CAD,
            Currency::AUD,
        ]
        .into_iter()
        .find(|c| c.code() == code)
    }
}

/// An amount of money: `amount` minor units (cents, pence, yen) of
/// `currency`. Never negative; never a float.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "RawMoney")]
pub struct Money {
    amount: i64,
    currency: Currency,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMoney {
    amount: MinorUnits,
    currency: Currency,
}

/// The amount on its own, so that a negative one is reported at
/// `….amount`, not at the whole money object.
#[derive(Deserialize)]
#[serde(try_from = "i64")]
struct MinorUnits(i64);

impl TryFrom<i64> for MinorUnits {
    type Error = String;
    fn try_from(amount: i64) -> Result<Self, String> {
        if amount < 0 {
            return Err(format!("must be ≥ 0 minor units, got {amount}"));
        }
        Ok(Self(amount))
    }
}

impl TryFrom<RawMoney> for Money {
    type Error = String;
    fn try_from(raw: RawMoney) -> Result<Self, String> {
        Money::new(raw.amount.0, raw.currency)
    }
}

impl Money {
    /// `amount` minor units of `currency`; an error when negative.
    pub fn new(amount: i64, currency: Currency) -> Result<Self, String> {
        if amount < 0 {
            return Err(format!("amount must be ≥ 0 minor units, got {amount}"));
        }
        Ok(Self { amount, currency })
    }

    /// Minor units.
    pub fn amount(self) -> i64 {
        self.amount
    }

    /// The currency.
    pub fn currency(self) -> Currency {
        self.currency
    }

    /// `self × quantity`, or `None` on overflow.
    pub fn times(self, quantity: i64) -> Option<Self> {
        Some(Self {
            amount: self.amount.checked_mul(quantity)?,
            currency: self.currency,
        })
    }

    /// `self + other`; `None` on overflow or mixed currencies.
    pub fn plus(self, other: Self) -> Option<Self> {
        if self.currency != other.currency {
            return None;
        }
        Some(Self {
            amount: self.amount.checked_add(other.amount)?,
            currency: self.currency,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_refuses() {
        let m: Money = serde_json::from_str(r#"{"amount":1299,"currency":"EUR"}"#).unwrap();
        assert_eq!((m.amount(), m.currency()), (1299, Currency::EUR));
        assert!(serde_json::from_str::<Money>(r#"{"amount":-1,"currency":"EUR"}"#).is_err());
        assert!(serde_json::from_str::<Money>(r#"{"amount":12.5,"currency":"EUR"}"#).is_err());
        assert!(serde_json::from_str::<Money>(r#"{"amount":1,"currency":"XXX"}"#).is_err());
        assert_eq!(m.times(3).unwrap().amount(), 3897);
        assert!(m.plus(Money::new(1, Currency::USD).unwrap()).is_none());
    }
}
