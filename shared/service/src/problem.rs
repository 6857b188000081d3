//! RFC 9457 problem details.

use bytes::Bytes;
use serde_json::{json, Map, Value};
use spin_sdk::http::{FullBody, Response};

use crate::Reply;

/// The `Retry-After` of a 503 that names no delay of its own, in seconds.
pub const DEFAULT_RETRY_AFTER_SECONDS: u64 = 1;

/// The prefix of every problem's `type` member.
pub const TYPE_PREFIX: &str = "urn:bitvelocity:problem:";

/// Declares [`ProblemKind`]: each variant with the kind string clients see.
macro_rules! problem_kinds {
    ($($(#[$doc:meta])* $variant:ident => $name:literal,)*) => {
        /// The stable kinds of error a component answers; the `type` member
        /// is `urn:bitvelocity:problem:<kind>`. Clients match on these
        /// strings, so a kind's string never changes.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ProblemKind {
            $($(#[$doc])* $variant,)*
        }

        impl ProblemKind {
            /// Every kind.
            pub const ALL: &'static [ProblemKind] = &[$(ProblemKind::$variant,)*];

            /// The kind as clients see it, e.g. `invalid-field`.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(ProblemKind::$variant => $name,)*
                }
            }
        }
    };
}

problem_kinds! {
    // The body and the request.
    /// 413: the body is over the limit.
    BodyTooLarge => "body-too-large",
    /// 400: the body could not be read.
    UnreadableBody => "unreadable-body",
    /// 400: the body is not JSON.
    MalformedJson => "malformed-json",
    /// 415: the body is not JSON by its content type.
    UnsupportedMediaType => "unsupported-media-type",
    /// 422: a body field is wrong (with `field`).
    InvalidField => "invalid-field",
    /// 422: a query parameter is wrong (with `parameter`).
    InvalidParameter => "invalid-parameter",
    /// 404: no such resource or route.
    NotFound => "not-found",
    /// 405: only [`Problem::method_not_allowed`] makes it (with `Allow`).
    MethodNotAllowed => "method-not-allowed",
    /// 426: a WebSocket endpoint asked without the upgrade.
    UpgradeRequired => "upgrade-required",
    /// 409: a generic conflict.
    Conflict => "conflict",
    /// 428: `If-Match` is required.
    PreconditionRequired => "precondition-required",
    /// 412: `If-Match` does not match.
    PreconditionFailed => "precondition-failed",
    /// 409: the resource cannot make that move.
    IllegalTransition => "illegal-transition",
    /// 422: an idempotency key was reused with another request.
    IdempotencyMismatch => "idempotency-mismatch",
    /// 428: the `Idempotency-Key` header is missing.
    IdempotencyKeyRequired => "idempotency-key-required",
    // The service itself.
    /// 500: the service failed.
    Internal => "internal",
    /// 503: a dependency is down.
    Unavailable => "unavailable",
    /// 503: a named dependency is down or its circuit breaker is open.
    DependencyUnavailable => "dependency-unavailable",
    /// 503: a bounded resource is at its limit.
    ConcurrencyLimit => "concurrency-limit",
    // Authentication.
    /// 401: no credentials.
    Unauthenticated => "unauthenticated",
    /// 401: a bearer token that does not verify.
    InvalidToken => "invalid-token",
    /// 403: authenticated, not allowed.
    Forbidden => "forbidden",
    /// 429: too many requests in a window (with `Retry-After`); the same
    /// kind `bv`'s own rate limits answer.
    RateLimited => "rate-limited",
    /// 401: a login that matches no account.
    InvalidCredentials => "invalid-credentials",
    /// 401: a refresh token that is not valid.
    InvalidRefreshToken => "invalid-refresh-token",
    /// 429: too many failed logins.
    LoginThrottled => "login-throttled",
    /// 409: the email has an account.
    EmailTaken => "email-taken",
    // Catalogue, cart and stock.
    /// 409: another product has the SKU.
    SkuTaken => "sku-taken",
    /// A product the catalogue or the stock does not have.
    UnknownProduct => "unknown-product",
    /// 404: the cart has no line for the product.
    ItemNotInCart => "item-not-in-cart",
    /// 409: too many of one product in a cart line.
    QuantityLimit => "quantity-limit",
    /// 409: currencies that do not mix.
    CurrencyMismatch => "currency-mismatch",
    /// 409: not enough stock.
    InsufficientStock => "insufficient-stock",
    // Checkout and payment.
    /// 409: checking out an empty cart.
    EmptyCart => "empty-cart",
    /// 409: the first checkout with this key is still running.
    CheckoutInProgress => "checkout-in-progress",
    /// 409: the order was cancelled during its checkout.
    OrderCancelled => "order-cancelled",
    /// 402: the card was declined.
    CardDeclined => "card-declined",
    /// 402: the card has insufficient funds.
    InsufficientFunds => "insufficient-funds",
    /// 402: the card has expired.
    CardExpired => "card-expired",
    /// 402: the amount is over the processor's limit.
    AmountLimit => "amount-limit",
    /// 402: a decline of a kind the order service does not know.
    PaymentDeclined => "payment-declined",
    /// 422: the payment service refused the payment request.
    PaymentRejected => "payment-rejected",
    /// 503: the inventory service failed during a checkout.
    InventoryUnavailable => "inventory-unavailable",
    /// 503: the payment service failed during a checkout.
    PaymentUnavailable => "payment-unavailable",
}

impl ProblemKind {
    /// The kind named `s`.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|k| k.as_str() == s)
    }

    /// The kind of a problem `type` URI (`urn:bitvelocity:problem:<kind>`).
    pub fn from_type_uri(uri: &str) -> Option<Self> {
        uri.strip_prefix(TYPE_PREFIX).and_then(Self::parse)
    }
}

impl std::fmt::Display for ProblemKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error answer: `application/problem+json` with `type`, `title`,
/// `status`, `detail`, and any extension members.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    /// The HTTP status.
    pub status: u16,
    /// The stable kind; the `type` member is
    /// `urn:bitvelocity:problem:<kind>`.
    pub kind: ProblemKind,
    /// A short, fixed summary of the kind.
    pub title: &'static str,
    /// What went wrong this time, for a human.
    pub detail: String,
    /// Extension members (e.g. `field`).
    pub extensions: Map<String, Value>,
    /// Headers the answer carries besides `content-type` (e.g. `allow`).
    headers: Vec<(&'static str, String)>,
}

impl Problem {
    /// A problem of `kind` with `status`, `title` and `detail`.
    pub fn new(
        status: u16,
        kind: ProblemKind,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            status,
            kind,
            title,
            detail: detail.into(),
            extensions: Map::new(),
            headers: Vec::new(),
        }
    }

    /// Adds a header to the answer (a later one of the same name replaces
    /// an earlier one).
    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.retain(|(n, _)| *n != name);
        self.headers.push((name, value.into()));
        self
    }

    /// The value of a header the answer will carry, if set.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Adds an extension member.
    pub fn with(mut self, name: &str, value: impl Into<Value>) -> Self {
        self.extensions.insert(name.to_string(), value.into());
        self
    }

    /// 400 `malformed-json`.
    pub fn malformed(detail: impl Into<String>) -> Self {
        Self::new(
            400,
            ProblemKind::MalformedJson,
            "The body is not valid JSON",
            detail,
        )
    }

    /// 422 `invalid-field`, naming the field.
    pub fn invalid_field(field: &str, detail: impl Into<String>) -> Self {
        let detail = detail.into();
        Self::new(
            422,
            ProblemKind::InvalidField,
            "A field has an invalid value",
            format!("{field}: {detail}"),
        )
        .with("field", field)
    }

    /// 422 `invalid-parameter`, naming the query parameter at fault.
    pub fn invalid_parameter(parameter: &str, detail: impl Into<String>) -> Self {
        Self::new(
            422,
            ProblemKind::InvalidParameter,
            "A query parameter has an invalid value",
            format!("{parameter}: {}", detail.into()),
        )
        .with("parameter", parameter)
    }

    /// 404 `not-found`.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(404, ProblemKind::NotFound, "Not found", detail)
    }

    /// 405 `method-not-allowed`, with `Allow: <allowed>` (RFC 9110
    /// §15.5.6: a 405 must list the methods the resource has).
    pub fn method_not_allowed(allowed: &str) -> Self {
        Self::new(
            405,
            ProblemKind::MethodNotAllowed,
            "Method not allowed",
            format!("allowed: {allowed}"),
        )
        .with_header("allow", allowed)
    }

    /// 409 `conflict`.
    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::new(409, ProblemKind::Conflict, "Conflict", detail)
    }

    /// 500 `internal`: the detail is logged, not sent.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        eprintln!("internal error: {detail}");
        Self::new(
            500,
            ProblemKind::Internal,
            "Internal error",
            "the service failed; see its log",
        )
    }

    /// 503 `unavailable`: a dependency is down. Like every 503 it is
    /// answered with `Retry-After` (see [`Problem::into_response`]).
    pub fn unavailable(detail: impl Into<String>) -> Self {
        Self::new(
            503,
            ProblemKind::Unavailable,
            "A dependency is unavailable",
            detail,
        )
    }

    /// The `type` member.
    pub fn type_uri(&self) -> String {
        format!("{TYPE_PREFIX}{}", self.kind.as_str())
    }

    /// The answer's body: the extension members, then the standard
    /// members, which an extension can never replace (a `status`
    /// extension would break every client's parsing). The one rendering
    /// of a problem, whether answered now or stored to answer again.
    pub fn body(&self) -> Value {
        let mut body = self.extensions.clone();
        body.insert("type".into(), json!(self.type_uri()));
        body.insert("title".into(), json!(self.title));
        body.insert("status".into(), json!(self.status));
        body.insert("detail".into(), json!(self.detail));
        Value::Object(body)
    }

    /// The response. A 503 always carries `Retry-After`: the one set
    /// with [`Problem::with_header`], else the `retryAfterSeconds`
    /// extension, else [`DEFAULT_RETRY_AFTER_SECONDS`].
    pub fn into_response(self) -> Reply {
        let body = self.body();
        let challenge = self.challenge();
        let mut builder = Response::builder()
            .status(self.status)
            .header("content-type", "application/problem+json");
        if let Some(challenge) = challenge {
            builder = builder.header("www-authenticate", challenge);
        }
        if self.status == 503 && !self.headers.iter().any(|(n, _)| *n == "retry-after") {
            let seconds = body
                .get("retryAfterSeconds")
                .and_then(Value::as_u64)
                .unwrap_or(DEFAULT_RETRY_AFTER_SECONDS);
            builder = builder.header("retry-after", seconds);
        }
        for (name, value) in self.headers {
            builder = builder.header(name, value);
        }
        builder
            .body(FullBody::new(Bytes::from(body.to_string())))
            .expect("a valid status")
    }

    /// A 401 must say how to authenticate (RFC 9110 §15.5.2): bearer
    /// tokens (RFC 6750), with `invalid_token` when one was sent and
    /// refused (kind `invalid-token`).
    fn challenge(&self) -> Option<&'static str> {
        match (self.status, self.kind) {
            (401, ProblemKind::InvalidToken) => Some("Bearer error=\"invalid_token\""),
            (401, _) => Some("Bearer"),
            _ => None,
        }
    }
}

impl From<spin_sdk::pg::Error> for Problem {
    /// A database that cannot be reached (down, restarting, shutting down)
    /// is 503 `unavailable`, answered as soon as the connection fails so
    /// that the client retries later; any other database error is 500.
    fn from(e: spin_sdk::pg::Error) -> Self {
        if database_unavailable(&e) {
            eprintln!("postgres unavailable: {e}");
            return Problem::unavailable("the database is unavailable; retry later");
        }
        Problem::internal(format!("postgres: {e}"))
    }
}

#[cfg(feature = "events")]
impl From<bv_events_guest::Error> for Problem {
    /// A statement of a transaction that failed is answered as any
    /// Postgres error ([`From<spin_sdk::pg::Error>`]): 503 when the
    /// database went away mid-transaction, so the client retries; an event
    /// that breaks its schema is a bug, 500.
    fn from(e: bv_events_guest::Error) -> Self {
        match e {
            bv_events_guest::Error::Postgres { source, .. } => Problem::from(source),
            invalid => Problem::internal(invalid),
        }
    }
}

/// Connection failures, and the SQLSTATEs of a server going away or not
/// back yet: class 08 (connection exception), 57P01–57P03 (shut down by
/// an administrator or a crash, cannot connect now).
fn database_unavailable(e: &spin_sdk::pg::Error) -> bool {
    use spin_sdk::pg::{Error, PgError, QueryError};
    match e {
        Error::PgError(PgError::ConnectionFailed(_)) => true,
        Error::PgError(PgError::QueryFailed(QueryError::DbError(db))) => {
            db.code.starts_with("08") || matches!(db.code.as_str(), "57P01" | "57P02" | "57P03")
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(reply: &Reply, name: &str) -> Option<String> {
        reply
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
    }

    #[test]
    fn every_503_carries_retry_after() {
        let plain = Problem::unavailable("the product service failed").into_response();
        assert_eq!(plain.status(), 503);
        assert_eq!(header(&plain, "retry-after").as_deref(), Some("1"));
        let named = Problem::new(
            503,
            ProblemKind::DependencyUnavailable,
            "A dependency is unavailable",
            "x",
        )
        .with("retryAfterSeconds", 7)
        .into_response();
        assert_eq!(header(&named, "retry-after").as_deref(), Some("7"));
        let set = Problem::unavailable("busy")
            .with_header("retry-after", "3")
            .into_response();
        assert_eq!(header(&set, "retry-after").as_deref(), Some("3"));
        assert_eq!(set.headers().get_all("retry-after").iter().count(), 1);
        let other = Problem::not_found("nothing").into_response();
        assert_eq!(header(&other, "retry-after"), None);
    }

    #[test]
    fn a_405_names_the_allowed_methods() {
        let reply = Problem::method_not_allowed("GET, HEAD, POST").into_response();
        assert_eq!(reply.status(), 405);
        assert_eq!(header(&reply, "allow").as_deref(), Some("GET, HEAD, POST"));
        assert_eq!(
            header(&reply, "content-type").as_deref(),
            Some("application/problem+json")
        );
    }

    #[test]
    fn kind_strings_are_stable_and_parse_back() {
        let expected = [
            (ProblemKind::InvalidField, "invalid-field"),
            (ProblemKind::MalformedJson, "malformed-json"),
            (ProblemKind::MethodNotAllowed, "method-not-allowed"),
            (ProblemKind::NotFound, "not-found"),
            (ProblemKind::InsufficientStock, "insufficient-stock"),
            (ProblemKind::DependencyUnavailable, "dependency-unavailable"),
            (
                ProblemKind::IdempotencyKeyRequired,
                "idempotency-key-required",
            ),
            (ProblemKind::PaymentDeclined, "payment-declined"),
            (ProblemKind::Internal, "internal"),
            (ProblemKind::Unavailable, "unavailable"),
        ];
        for (kind, name) in expected {
            assert_eq!(kind.as_str(), name);
        }
        let mut seen = std::collections::HashSet::new();
        for &kind in ProblemKind::ALL {
            assert!(seen.insert(kind.as_str()), "{kind} twice");
            assert_eq!(ProblemKind::parse(kind.as_str()), Some(kind));
            let uri = Problem::new(400, kind, "t", "d").type_uri();
            assert_eq!(uri, format!("urn:bitvelocity:problem:{kind}"));
            assert_eq!(ProblemKind::from_type_uri(&uri), Some(kind));
        }
        assert_eq!(ProblemKind::parse("Not-Found"), None);
        assert_eq!(ProblemKind::from_type_uri("not-found"), None);
    }

    #[test]
    fn every_kind_is_documented_in_the_openapi_document() {
        // Clients learn the kinds from `x-problem-types`: a kind added here
        // is added there too.
        let doc: Value = serde_json::from_str(include_str!("../../../docs/openapi.json")).unwrap();
        let listed = doc["x-problem-types"].as_object().unwrap();
        for &kind in ProblemKind::ALL {
            let uri = Problem::new(500, kind, "t", "d").type_uri();
            assert!(listed.contains_key(&uri), "{uri} is not in x-problem-types");
        }
    }

    #[test]
    fn the_body_keeps_the_standard_members_over_extensions() {
        let p = Problem::not_found("no order `x`")
            .with("orderId", "x")
            .with("status", 200);
        assert_eq!(
            p.body().to_string(),
            r#"{"detail":"no order `x`","orderId":"x","status":404,"title":"Not found","type":"urn:bitvelocity:problem:not-found"}"#
        );
    }

    #[test]
    fn only_method_not_allowed_sets_allow() {
        let p = Problem::method_not_allowed("POST");
        assert_eq!((p.status, p.kind), (405, ProblemKind::MethodNotAllowed));
        assert_eq!(p.header("allow"), Some("POST"));
        assert_eq!(Problem::not_found("x").header("allow"), None);
    }
}
