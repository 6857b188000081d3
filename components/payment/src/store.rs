//! The `payments` table: its migration, its statements, and a row as a
//! [`Payment`].

use bv_service::{Currency, Migration, Money, Problem};
use serde_json::{json, Map, Value};
use spin_sdk::pg::{DbValue, ParameterValue, Row};

use crate::domain::{Authorize, Decline};

/// The component's migrations (`bv_service::migrate`).
pub const MIGRATIONS: &[Migration] = &[Migration {
    name: "0001_payments",
    sql: "CREATE TABLE payments (
    payment_id         text PRIMARY KEY,
    order_id           text NOT NULL,
    amount             bigint NOT NULL CHECK (amount > 0),
    currency           text NOT NULL,
    card_token         text NOT NULL,
    status             text NOT NULL
                       CHECK (status IN ('AUTHORIZED', 'DECLINED', 'CAPTURED', 'REFUNDED')),
    authorization_code text,
    decline_code       text,
    refund_kind        text CHECK (refund_kind IN ('refund', 'void')),
    created_at         timestamptz NOT NULL DEFAULT now(),
    captured_at        timestamptz,
    refunded_at        timestamptz,
    CHECK ((status = 'DECLINED') = (decline_code IS NOT NULL)),
    CHECK ((status = 'DECLINED') = (authorization_code IS NULL)),
    CHECK ((status = 'REFUNDED') = (refund_kind IS NOT NULL))
);
CREATE INDEX payments_order_id ON payments (order_id)",
}];

/// An RFC 3339 UTC text of a `timestamptz` column, millisecond precision.
macro_rules! ts {
    ($col:literal) => {
        concat!(
            "to_char(",
            $col,
            " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"
        )
    };
}

/// The columns every statement returns, in [`Payment::from_row`]'s order.
macro_rules! columns {
    () => {
        concat!(
            "payment_id, order_id, amount, currency, card_token, status, ",
            "authorization_code, decline_code, refund_kind, ",
            ts!("created_at"),
            ", ",
            ts!("captured_at"),
            ", ",
            ts!("refunded_at")
        )
    };
}

/// Records a new payment unless its id exists (then no row comes back).
/// The authorization code is drawn here, only for an approval.
pub const INSERT: &str = concat!(
    "INSERT INTO payments (payment_id, order_id, amount, currency, card_token, status, ",
    "authorization_code, decline_code) ",
    "VALUES ($1, $2, $3, $4, $5, $6, ",
    "CASE WHEN $7::text IS NULL THEN upper(substr(md5(gen_random_uuid()::text), 1, 8)) END, $7) ",
    "ON CONFLICT (payment_id) DO NOTHING RETURNING ",
    columns!()
);

/// A payment by id.
pub const SELECT: &str = concat!(
    "SELECT ",
    columns!(),
    " FROM payments WHERE payment_id = $1"
);

/// A payment by id, locked until the transaction ends.
pub const SELECT_FOR_UPDATE: &str = concat!(
    "SELECT ",
    columns!(),
    " FROM payments WHERE payment_id = $1 FOR UPDATE"
);

/// AUTHORIZED → CAPTURED.
pub const CAPTURE: &str = concat!(
    "UPDATE payments SET status = 'CAPTURED', captured_at = now() ",
    "WHERE payment_id = $1 AND status = 'AUTHORIZED' RETURNING ",
    columns!()
);

/// AUTHORIZED or CAPTURED → REFUNDED, with the kind ($2).
pub const REFUND: &str = concat!(
    "UPDATE payments SET status = 'REFUNDED', refund_kind = $2, refunded_at = now() ",
    "WHERE payment_id = $1 AND status IN ('AUTHORIZED', 'CAPTURED') RETURNING ",
    columns!()
);

/// The parameters of [`INSERT`] for a request and its decision.
pub fn insert_params(a: &Authorize, decision: Result<(), Decline>) -> Vec<ParameterValue> {
    let (status, decline) = match decision {
        Ok(()) => (Status::Authorized, ParameterValue::DbNull),
        Err(d) => (Status::Declined, ParameterValue::Str(d.code().into())),
    };
    vec![
        ParameterValue::Str(a.payment_id.as_str().into()),
        ParameterValue::Str(a.order_id.as_str().into()),
        ParameterValue::Int64(a.amount.amount()),
        ParameterValue::Str(a.amount.currency().code().into()),
        ParameterValue::Str(a.token.as_str().into()),
        ParameterValue::Str(status.as_str().into()),
        decline,
    ]
}

/// Where a payment is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Approved, amount reserved, not yet captured.
    Authorized,
    /// Refused (for good: a repeat answers the same decline).
    Declined,
    /// Captured (the money moves).
    Captured,
    /// Refunded after capture, or voided before it.
    Refunded,
}

impl Status {
    /// The stored and answered spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Authorized => "AUTHORIZED",
            Status::Declined => "DECLINED",
            Status::Captured => "CAPTURED",
            Status::Refunded => "REFUNDED",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        [
            Status::Authorized,
            Status::Declined,
            Status::Captured,
            Status::Refunded,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
    }
}

/// One row of `payments`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payment {
    pub payment_id: String,
    pub order_id: String,
    pub amount: Money,
    pub token: String,
    pub status: Status,
    /// Set exactly when it was approved.
    pub authorization_code: Option<String>,
    /// Set exactly when it was declined.
    pub decline: Option<Decline>,
    /// `refund` or `void`, once refunded.
    pub refund_kind: Option<String>,
    /// When it was authorized or declined.
    pub created_at: String,
    pub captured_at: Option<String>,
    pub refunded_at: Option<String>,
}

impl Payment {
    /// A row of the [`columns!`] shape.
    pub fn from_row(row: &Row) -> Result<Self, Problem> {
        let text = |i: usize| -> Result<Option<String>, Problem> {
            match &row[i] {
                DbValue::Str(s) => Ok(Some(s.clone())),
                DbValue::DbNull => Ok(None),
                v => Err(Problem::internal(format!("payments column {i}: {v:?}"))),
            }
        };
        let required = |i: usize| {
            text(i)?.ok_or_else(|| Problem::internal(format!("payments column {i} is null")))
        };
        let amount = match &row[2] {
            DbValue::Int64(n) => *n,
            v => return Err(Problem::internal(format!("payments.amount: {v:?}"))),
        };
        let currency = required(3)?;
        let currency = Currency::parse(&currency)
            .ok_or_else(|| Problem::internal(format!("payments.currency `{currency}`")))?;
        let status = required(5)?;
        let status = Status::parse(&status)
            .ok_or_else(|| Problem::internal(format!("payments.status `{status}`")))?;
        let decline = match text(7)? {
            None => None,
            Some(code) => Some(
                Decline::parse(&code)
                    .ok_or_else(|| Problem::internal(format!("payments.decline_code `{code}`")))?,
            ),
        };
        Ok(Self {
            payment_id: required(0)?,
            order_id: required(1)?,
            amount: Money::new(amount, currency).map_err(Problem::internal)?,
            token: required(4)?,
            status,
            authorization_code: text(6)?,
            decline,
            refund_kind: text(8)?,
            created_at: required(9)?,
            captured_at: text(10)?,
            refunded_at: text(11)?,
        })
    }

    /// What the API answers about the payment as it is now. Fields of
    /// steps not taken are absent; the card token is never echoed.
    pub fn view(&self) -> Value {
        let mut v = Map::new();
        v.insert("paymentId".into(), json!(self.payment_id));
        v.insert("orderId".into(), json!(self.order_id));
        v.insert("amount".into(), json!(self.amount));
        v.insert("status".into(), json!(self.status.as_str()));
        if let Some(code) = &self.authorization_code {
            v.insert("authorizationCode".into(), json!(code));
            v.insert("authorizedAt".into(), json!(self.created_at));
        }
        if let Some(d) = self.decline {
            v.insert("declineCode".into(), json!(d.code()));
            v.insert("declinedAt".into(), json!(self.created_at));
        }
        if let Some(at) = &self.captured_at {
            v.insert("capturedAt".into(), json!(at));
        }
        if let Some(at) = &self.refunded_at {
            v.insert("refundedAt".into(), json!(at));
        }
        if let Some(kind) = &self.refund_kind {
            v.insert("refundKind".into(), json!(kind));
        }
        Value::Object(v)
    }

    /// The payment as it was when authorized (or declined): what the first
    /// authorize call answered, and so what every repeat answers, whatever
    /// happened to the payment since.
    pub fn as_authorized(&self) -> Self {
        Self {
            status: if self.decline.is_some() {
                Status::Declined
            } else {
                Status::Authorized
            },
            refund_kind: None,
            captured_at: None,
            refunded_at: None,
            ..self.clone()
        }
    }

    /// The fields of `a` that differ from what this payment was first
    /// authorized with (empty when `a` repeats the first request).
    pub fn differences(&self, a: &Authorize) -> Vec<&'static str> {
        let mut fields = Vec::new();
        if self.order_id != a.order_id.as_str() {
            fields.push("orderId");
        }
        if self.amount != a.amount {
            fields.push("amount");
        }
        if self.token != a.token.as_str() {
            fields.push("card.token");
        }
        fields
    }
}
