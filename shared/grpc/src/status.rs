//! Problems as gRPC statuses and back.
//!
//! The HTTP API answers an RFC 9457 problem (`type`, `title`, `status`,
//! `detail`, extension members). Over gRPC the same problem is a status
//! whose code follows the HTTP status ([`code_for`]), whose message is the
//! `detail`, and whose `grpc-status-details-bin` holds a
//! `google.rpc.ErrorInfo` (the standard place for a machine-readable
//! reason): `reason` is the problem kind, `domain` [`DOMAIN`], `metadata`
//! the HTTP status, the title and the extension members. [`to_problem`]
//! turns it back into the body the HTTP API would have answered, so a
//! caller reads one shape whichever protocol carried the call.

use std::collections::HashMap;

use serde_json::{Map, Value};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// The `ErrorInfo.domain` of the platform's problems.
pub const DOMAIN: &str = "bitvelocity";

/// What a problem's `type` starts with.
pub const TYPE_PREFIX: &str = "urn:bitvelocity:problem:";

/// The gRPC code for an HTTP status (the inverse of gRPC's own
/// HTTP-to-gRPC table, for the statuses the platform answers).
pub fn code_for(http_status: u16) -> Code {
    match http_status {
        200..=299 => Code::Ok,
        400 | 413 | 415 | 422 => Code::InvalidArgument,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::NotFound,
        405 | 501 => Code::Unimplemented,
        409 | 412 => Code::FailedPrecondition,
        429 => Code::ResourceExhausted,
        499 => Code::Cancelled,
        502 | 503 => Code::Unavailable,
        504 => Code::DeadlineExceeded,
        400..=499 => Code::FailedPrecondition,
        _ => Code::Internal,
    }
}

/// The HTTP status a code stands for when the status names none.
pub fn http_status_for(code: Code) -> u16 {
    match code {
        Code::Ok => 200,
        Code::InvalidArgument | Code::OutOfRange => 400,
        Code::Unauthenticated => 401,
        Code::PermissionDenied => 403,
        Code::NotFound => 404,
        Code::AlreadyExists | Code::Aborted | Code::FailedPrecondition => 409,
        Code::ResourceExhausted => 429,
        Code::Cancelled => 499,
        Code::Unimplemented => 501,
        Code::Unavailable => 503,
        Code::DeadlineExceeded => 504,
        Code::Unknown | Code::Internal | Code::DataLoss => 500,
    }
}

/// A problem body as a status (see the module docs).
pub fn from_problem(problem: &Value) -> Status {
    let http_status = problem["status"]
        .as_u64()
        .and_then(|s| u16::try_from(s).ok())
        .unwrap_or(500);
    let kind = problem["type"]
        .as_str()
        .and_then(|t| t.strip_prefix(TYPE_PREFIX))
        .unwrap_or("internal");
    let detail = problem["detail"].as_str().unwrap_or_default();
    let mut metadata = HashMap::new();
    metadata.insert("status".to_string(), http_status.to_string());
    if let Some(members) = problem.as_object() {
        for (name, value) in members {
            if matches!(name.as_str(), "type" | "status" | "detail") {
                continue;
            }
            let text = match value {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            metadata.insert(name.clone(), text);
        }
    }
    Status::with_error_details(
        code_for(http_status),
        detail,
        ErrorDetails::with_error_info(kind, DOMAIN, metadata),
    )
}

/// A status as `(HTTP status, problem body)`: the body the HTTP API would
/// have answered when the status carries the platform's `ErrorInfo`, else
/// one made from the code and message (kind `grpc-<code>`, e.g.
/// `grpc-unavailable`).
pub fn to_problem(status: &Status) -> (u16, Value) {
    let mut body = Map::new();
    let info = status
        .get_details_error_info()
        .filter(|info| info.domain == DOMAIN);
    let (http_status, kind) = match &info {
        Some(info) => {
            let http_status = info
                .metadata
                .get("status")
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| http_status_for(status.code()));
            for (name, text) in &info.metadata {
                if name == "status" {
                    continue;
                }
                // Members other than strings were sent as JSON.
                let value = match text.chars().next() {
                    Some('[' | '{') => {
                        serde_json::from_str(text).unwrap_or(Value::from(text.clone()))
                    }
                    _ => Value::from(text.clone()),
                };
                body.insert(name.clone(), value);
            }
            (http_status, info.reason.clone())
        }
        None => (
            http_status_for(status.code()),
            format!("grpc-{}", code_name(status.code())),
        ),
    };
    body.insert("type".into(), Value::from(format!("{TYPE_PREFIX}{kind}")));
    body.insert("status".into(), Value::from(http_status));
    body.insert("detail".into(), Value::from(status.message()));
    (http_status, Value::Object(body))
}

/// Whether another attempt of an idempotent call may succeed where this
/// one ended with `code`: the service could not be reached or did not
/// answer within the attempt's deadline. Every other code is an answer
/// (a refusal about the request, or a fault another attempt would meet
/// again).
pub fn is_retryable(code: Code) -> bool {
    matches!(code, Code::Unavailable | Code::DeadlineExceeded)
}

/// Whether `code` says the service failed, rather than refused the
/// request (what a circuit breaker counts).
pub fn is_failure(code: Code) -> bool {
    matches!(
        code,
        Code::Unknown
            | Code::DeadlineExceeded
            | Code::ResourceExhausted
            | Code::Internal
            | Code::Unavailable
            | Code::DataLoss
            | Code::Unimplemented
    )
}

/// The code's name in lower case with dashes (`deadline-exceeded`).
pub fn code_name(code: Code) -> String {
    format!("{code:?}")
        .chars()
        .enumerate()
        .flat_map(|(i, c)| {
            let dash = (i > 0 && c.is_ascii_uppercase()).then_some('-');
            dash.into_iter()
                .chain(std::iter::once(c.to_ascii_lowercase()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_problem_survives_the_trip_through_a_status() {
        let problem = json!({
            "type": "urn:bitvelocity:problem:insufficient-stock",
            "title": "Not enough stock",
            "status": 409,
            "detail": "not enough stock for p-1 (requested 3, available 1)",
            "shortages": [{"productId": "p-1", "requested": 3, "available": 1}],
        });
        let status = from_problem(&problem);
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert_eq!(status.message(), problem["detail"]);
        // Through the wire encoding, as a caller receives it.
        let mut headers = http::HeaderMap::new();
        status.add_header(&mut headers).unwrap();
        let received = Status::from_header_map(&headers).unwrap();
        let (http_status, body) = to_problem(&received);
        assert_eq!(http_status, 409);
        assert_eq!(body, problem);
    }

    #[test]
    fn a_foreign_status_becomes_a_problem_of_its_code() {
        let (http_status, body) = to_problem(&Status::unavailable("connection refused"));
        assert_eq!(http_status, 503);
        assert_eq!(body["type"], "urn:bitvelocity:problem:grpc-unavailable");
        assert_eq!(body["detail"], "connection refused");
        assert_eq!(code_name(Code::DeadlineExceeded), "deadline-exceeded");
    }

    #[test]
    fn codes_follow_http_statuses_and_back() {
        for (http_status, code) in [
            (404, Code::NotFound),
            (409, Code::FailedPrecondition),
            (422, Code::InvalidArgument),
            (401, Code::Unauthenticated),
            (403, Code::PermissionDenied),
            (429, Code::ResourceExhausted),
            (503, Code::Unavailable),
            (504, Code::DeadlineExceeded),
            (500, Code::Internal),
        ] {
            assert_eq!(code_for(http_status), code, "{http_status}");
        }
        assert_eq!(http_status_for(Code::NotFound), 404);
        assert_eq!(http_status_for(Code::Unavailable), 503);
    }

    #[test]
    fn only_unreachable_or_late_is_worth_another_attempt() {
        assert!(is_retryable(Code::Unavailable));
        assert!(is_retryable(Code::DeadlineExceeded));
        for code in [
            Code::Internal,
            Code::Unimplemented,
            Code::FailedPrecondition,
            Code::InvalidArgument,
            Code::NotFound,
            Code::ResourceExhausted,
        ] {
            assert!(!is_retryable(code), "{code:?}");
        }
        assert!(is_failure(Code::Internal));
        assert!(!is_failure(Code::FailedPrecondition));
    }
}
