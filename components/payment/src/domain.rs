//! The payment domain: identifiers, card tokens, the authorize request,
//! and the processor's decision. Values are parsed once, at the edge, so
//! the handlers only ever see valid ones.

use bv_service::{Money, Problem, ProblemKind};
use serde::de::IgnoredAny;
use serde::Deserialize;

/// Words of the API's paths that can never be a payment id, so that
/// `/api/payments/authorize` and `/api/payments/admin/…` stay unambiguous.
const RESERVED_IDS: &[&str] = &["authorize", "admin"];

/// The client-chosen id of a payment, which is also its idempotency key:
/// 1–64 characters of `A–Z a–z 0–9 . _ -`, starting with a letter or a
/// digit (it appears in paths).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct PaymentId(String);

impl TryFrom<String> for PaymentId {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let first_ok = s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
        let chars_ok = s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if s.is_empty() || s.len() > 64 || !first_ok || !chars_ok {
            return Err(format!(
                "`{s}` is not a payment id: 1–64 characters of A–Z, a–z, 0–9, `.`, `_`, `-`, starting with a letter or digit"
            ));
        }
        if RESERVED_IDS.contains(&s.as_str()) {
            return Err(format!("`{s}` is reserved by the API's paths"));
        }
        Ok(Self(s))
    }
}

impl PaymentId {
    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The order a payment pays for: 1–128 characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct OrderId(String);

impl TryFrom<String> for OrderId {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        if s.trim().is_empty() || s.chars().count() > 128 || s.chars().any(char::is_control) {
            return Err("must be 1–128 characters without control characters".into());
        }
        Ok(Self(s))
    }
}

impl OrderId {
    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A card token (`tok_…`), the only way a card reaches this service: card
/// numbers are never accepted, so no card data is ever stored.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct CardToken(String);

impl TryFrom<String> for CardToken {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let digits = s.chars().filter(char::is_ascii_digit).count();
        if digits >= 12
            && s.chars()
                .all(|c| c.is_ascii_digit() || c == ' ' || c == '-')
        {
            return Err(
                "looks like a card number: card numbers are never accepted, send a token (`tok_…`)"
                    .into(),
            );
        }
        let rest = s.strip_prefix("tok_").unwrap_or_default();
        if rest.is_empty()
            || s.len() > 64
            || !rest.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(
                "must be a card token: `tok_` followed by 1–60 of A–Z, a–z, 0–9, `_`".into(),
            );
        }
        Ok(Self(s))
    }
}

impl CardToken {
    /// The token as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Why the processor refused an authorization. Each is a stable problem
/// kind (and `declineCode`), answered with 402.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decline {
    /// `tok_decline`: the issuer refused the card.
    CardDeclined,
    /// `tok_insufficient_funds`.
    InsufficientFunds,
    /// `tok_expired`.
    CardExpired,
    /// The amount is over `payment_amount_limit`.
    AmountLimit,
}

impl Decline {
    /// Every decline, for parsing stored codes.
    const ALL: [Decline; 4] = [
        Decline::CardDeclined,
        Decline::InsufficientFunds,
        Decline::CardExpired,
        Decline::AmountLimit,
    ];

    /// The stable code: the problem kind, the stored `decline_code`, the
    /// event's `reason`.
    pub fn code(self) -> &'static str {
        match self {
            Decline::CardDeclined => "card-declined",
            Decline::InsufficientFunds => "insufficient-funds",
            Decline::CardExpired => "card-expired",
            Decline::AmountLimit => "amount-limit",
        }
    }

    /// The problem kind a decline is answered with (its code as a kind).
    pub fn kind(self) -> ProblemKind {
        match self {
            Decline::CardDeclined => ProblemKind::CardDeclined,
            Decline::InsufficientFunds => ProblemKind::InsufficientFunds,
            Decline::CardExpired => ProblemKind::CardExpired,
            Decline::AmountLimit => ProblemKind::AmountLimit,
        }
    }

    /// A stored code back into a decline.
    pub fn parse(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.code() == code)
    }

    /// The problem title.
    pub fn title(self) -> &'static str {
        match self {
            Decline::CardDeclined => "The card was declined",
            Decline::InsufficientFunds => "The card has insufficient funds",
            Decline::CardExpired => "The card has expired",
            Decline::AmountLimit => "The amount is over the processor's limit",
        }
    }
}

/// The processor's decision on an authorization: the amount limit (the
/// processor's own rule) first, then the card (the issuer's answer).
/// Deterministic, so tests and demos choose the outcome with the token.
pub fn decide(amount: Money, token: &CardToken, amount_limit: i64) -> Result<(), Decline> {
    if amount.amount() > amount_limit {
        return Err(Decline::AmountLimit);
    }
    match token.as_str() {
        "tok_decline" => Err(Decline::CardDeclined),
        "tok_insufficient_funds" => Err(Decline::InsufficientFunds),
        "tok_expired" => Err(Decline::CardExpired),
        _ => Ok(()),
    }
}

/// A valid authorize request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorize {
    /// The client's id and idempotency key.
    pub payment_id: PaymentId,
    /// The order paid for.
    pub order_id: OrderId,
    /// At least one minor unit.
    pub amount: Money,
    /// The card.
    pub token: CardToken,
}

/// The authorize body as sent. Fields are optional here so that a missing
/// one is reported by name (serde would report it at the document root).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AuthorizeBody {
    payment_id: Option<PaymentId>,
    order_id: Option<OrderId>,
    amount: Option<Money>,
    card: Option<CardBody>,
}

/// `card`: a token only. `number` is recognised in order to refuse it
/// clearly; anything else (cvc, expiry…) is an unknown field.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CardBody {
    token: Option<CardToken>,
    number: Option<IgnoredAny>,
}

impl TryFrom<AuthorizeBody> for Authorize {
    type Error = Problem;
    fn try_from(body: AuthorizeBody) -> Result<Self, Problem> {
        let required = |field: &str| Problem::invalid_field(field, "required");
        let payment_id = body.payment_id.ok_or_else(|| required("paymentId"))?;
        let order_id = body.order_id.ok_or_else(|| required("orderId"))?;
        let amount = body.amount.ok_or_else(|| required("amount"))?;
        if amount.amount() < 1 {
            return Err(Problem::invalid_field(
                "amount.amount",
                "must be at least 1 minor unit",
            ));
        }
        let card = body.card.ok_or_else(|| required("card"))?;
        if card.number.is_some() {
            return Err(Problem::invalid_field(
                "card.number",
                "card numbers are never accepted: send a token (`card.token`, `tok_…`)",
            ));
        }
        let token = card.token.ok_or_else(|| required("card.token"))?;
        Ok(Self {
            payment_id,
            order_id,
            amount,
            token,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bv_service::{parse_json, Currency};

    fn parse(json: &str) -> Result<Authorize, Problem> {
        parse_json::<AuthorizeBody>(json.as_bytes()).and_then(Authorize::try_from)
    }

    fn field(p: Problem) -> String {
        p.extensions["field"].as_str().unwrap().to_string()
    }

    #[test]
    fn a_valid_request() {
        let a = parse(r#"{"paymentId":"p-1","orderId":"o-1","amount":{"amount":1299,"currency":"EUR"},"card":{"token":"tok_visa"}}"#).unwrap();
        assert_eq!(a.payment_id.as_str(), "p-1");
        assert_eq!(a.amount, Money::new(1299, Currency::EUR).unwrap());
        assert_eq!(a.token.as_str(), "tok_visa");
    }

    #[test]
    fn each_fault_names_its_field() {
        let ok =
            r#""orderId":"o","amount":{"amount":1,"currency":"EUR"},"card":{"token":"tok_visa"}"#;
        assert_eq!(field(parse(&format!("{{{ok}}}")).unwrap_err()), "paymentId");
        assert_eq!(
            field(parse(&format!(r#"{{"paymentId":"a b",{ok}}}"#)).unwrap_err()),
            "paymentId"
        );
        assert_eq!(
            field(parse(&format!(r#"{{"paymentId":"admin",{ok}}}"#)).unwrap_err()),
            "paymentId"
        );
        let p = parse(r#"{"paymentId":"p","orderId":"o","amount":{"amount":-1,"currency":"EUR"},"card":{"token":"tok_visa"}}"#).unwrap_err();
        assert_eq!((p.status, field(p)), (422, "amount.amount".to_string()));
        let p = parse(r#"{"paymentId":"p","orderId":"o","amount":{"amount":0,"currency":"EUR"},"card":{"token":"tok_visa"}}"#).unwrap_err();
        assert_eq!(field(p), "amount.amount");
        let p = parse(r#"{"paymentId":"p","orderId":"o","amount":{"amount":"5","currency":"EUR"},"card":{"token":"tok_visa"}}"#).unwrap_err();
        assert_eq!(field(p), "amount.amount");
        let p = parse(r#"{"paymentId":"p","orderId":"o","amount":{"amount":5,"currency":"EUR"},"card":{"number":"4242424242424242"}}"#).unwrap_err();
        assert_eq!(field(p), "card.number");
        let p = parse(r#"{"paymentId":"p","orderId":"o","amount":{"amount":5,"currency":"EUR"},"card":{"token":"4242 4242 4242 4242"}}"#).unwrap_err();
        assert_eq!(field(p.clone()), "card.token");
        assert!(p.detail.contains("card number"), "{}", p.detail);
        let p = parse(
            r#"{"paymentId":"p","orderId":"o","amount":{"amount":5,"currency":"EUR"},"card":{}}"#,
        )
        .unwrap_err();
        assert_eq!(field(p), "card.token");
        assert_eq!(parse("{").unwrap_err().status, 400);
    }

    #[test]
    fn decisions() {
        let eur = |n| Money::new(n, Currency::EUR).unwrap();
        let tok = |s: &str| CardToken::try_from(s.to_string()).unwrap();
        assert_eq!(decide(eur(100), &tok("tok_visa"), 100), Ok(()));
        assert_eq!(
            decide(eur(101), &tok("tok_visa"), 100),
            Err(Decline::AmountLimit)
        );
        assert_eq!(
            decide(eur(1), &tok("tok_decline"), 100),
            Err(Decline::CardDeclined)
        );
        assert_eq!(
            decide(eur(1), &tok("tok_insufficient_funds"), 100),
            Err(Decline::InsufficientFunds)
        );
        assert_eq!(
            decide(eur(1), &tok("tok_expired"), 100),
            Err(Decline::CardExpired)
        );
        for d in Decline::ALL {
            assert_eq!(Decline::parse(d.code()), Some(d));
            assert_eq!(d.kind().as_str(), d.code(), "answered under its code");
        }
    }
}
