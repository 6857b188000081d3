//! RFC 9457 problem details.

use bytes::Bytes;
use serde_json::{json, Map, Value};
use spin_sdk::http::{FullBody, Response};

use crate::Reply;

/// The `Retry-After` of a 503 that names no delay of its own, in seconds.
pub const DEFAULT_RETRY_AFTER_SECONDS: u64 = 1;

/// An error answer: `application/problem+json` with `type`, `title`,
/// `status`, `detail`, and any extension members.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    /// The HTTP status.
    pub status: u16,
    /// The stable kind, e.g. `invalid-field`; the `type` member is
    /// `urn:bitvelocity:problem:<kind>`.
    pub kind: &'static str,
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
        kind: &'static str,
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
        Self::new(400, "malformed-json", "The body is not valid JSON", detail)
    }

    /// 422 `invalid-field`, naming the field.
    pub fn invalid_field(field: &str, detail: impl Into<String>) -> Self {
        let detail = detail.into();
        Self::new(
            422,
            "invalid-field",
            "A field has an invalid value",
            format!("{field}: {detail}"),
        )
        .with("field", field)
    }

    /// 404 `not-found`.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(404, "not-found", "Not found", detail)
    }

    /// 405 `method-not-allowed`, with `Allow: <allowed>` (RFC 9110
    /// §15.5.6: a 405 must list the methods the resource has).
    pub fn method_not_allowed(allowed: &str) -> Self {
        Self::new(
            405,
            "method-not-allowed",
            "Method not allowed",
            format!("allowed: {allowed}"),
        )
        .with_header("allow", allowed)
    }

    /// 409 `conflict`.
    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::new(409, "conflict", "Conflict", detail)
    }

    /// 500 `internal`: the detail is logged, not sent.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        eprintln!("internal error: {detail}");
        Self::new(
            500,
            "internal",
            "Internal error",
            "the service failed; see its log",
        )
    }

    /// 503 `unavailable`: a dependency is down. Like every 503 it is
    /// answered with `Retry-After` (see [`Problem::into_response`]).
    pub fn unavailable(detail: impl Into<String>) -> Self {
        Self::new(503, "unavailable", "A dependency is unavailable", detail)
    }

    /// The `type` member.
    pub fn type_uri(&self) -> String {
        format!("urn:bitvelocity:problem:{}", self.kind)
    }

    /// The response. A 503 always carries `Retry-After`: the one set
    /// with [`Problem::with_header`], else the `retryAfterSeconds`
    /// extension, else [`DEFAULT_RETRY_AFTER_SECONDS`].
    pub fn into_response(self) -> Reply {
        // The standard members go in last: an extension can never replace
        // them (a `status` extension would break every client's parsing).
        let mut body = Map::new();
        let type_uri = self.type_uri();
        let challenge = self.challenge();
        body.extend(self.extensions);
        body.insert("type".into(), json!(type_uri));
        body.insert("title".into(), json!(self.title));
        body.insert("status".into(), json!(self.status));
        body.insert("detail".into(), json!(self.detail));
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
            .body(FullBody::new(Bytes::from(Value::Object(body).to_string())))
            .expect("a valid status")
    }

    /// A 401 must say how to authenticate (RFC 9110 §15.5.2): bearer
    /// tokens (RFC 6750), with `invalid_token` when one was sent and
    /// refused (kind `invalid-token`).
    fn challenge(&self) -> Option<&'static str> {
        match (self.status, self.kind) {
            (401, "invalid-token") => Some("Bearer error=\"invalid_token\""),
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
            "dependency-unavailable",
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
}
