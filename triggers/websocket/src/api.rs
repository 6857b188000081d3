//! The interface components send through, at
//! `http://bv-websocket.spin.internal` (a component needs it in its
//! `allowed_outbound_hosts`, as any chained host):
//!
//! | request | does | answers |
//! |---|---|---|
//! | `POST /connections/{id}` | sends the body to the connection (text for `text/*` and JSON, else binary) | 202; 404 no such connection |
//! | `DELETE /connections/{id}?code=&reason=` | closes it (default 1000) | 204; 404 |
//! | `PUT /connections/{id}/groups/{group}` | puts it in the group | 204; 404 |
//! | `DELETE /connections/{id}/groups/{group}` | takes it out | 204; 404 |
//! | `POST /groups/{group}` | sends the body to every member, in every process | 202, `{"delivered_here": n}` |
//!
//! Errors are RFC 9457 problems; 503 when another process had to be
//! reached and Redis could not be.

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};

use crate::{Hub, Message, SendError};

/// The longest group name.
const MAX_GROUP: usize = 200;

/// Answers one request to the interface.
pub async fn handle(hub: &Hub, request: Request<Bytes>) -> Response<Bytes> {
    let path = request.uri().path().to_string();
    let query = request.uri().query().unwrap_or("").to_string();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let method = request.method().clone();
    let message = || {
        let content_type = request
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        Message::from_body(content_type, request.body().clone())
            .map_err(|e| Refusal::new(StatusCode::BAD_REQUEST, "invalid-message", e))
    };
    let result = match (&method, segments.as_slice()) {
        (&Method::POST, ["connections", id]) => match message() {
            Ok(m) => outcome(hub.send(id, m).await, StatusCode::ACCEPTED, id),
            Err(p) => Err(p),
        },
        (&Method::DELETE, ["connections", id]) => match close_frame(&query) {
            Ok((code, reason)) => outcome(
                hub.close(id, code, &reason).await,
                StatusCode::NO_CONTENT,
                id,
            ),
            Err(p) => Err(p),
        },
        (&Method::PUT | &Method::DELETE, ["connections", id, "groups", group]) => {
            match group_name(group) {
                Ok(group) => outcome(
                    hub.membership(id, &group, method == Method::PUT).await,
                    StatusCode::NO_CONTENT,
                    id,
                ),
                Err(p) => Err(p),
            }
        }
        (&Method::POST, ["groups", group]) => match (group_name(group), message()) {
            (Ok(group), Ok(m)) => match hub.broadcast(&group, m).await {
                Ok(here) => Ok(json(
                    StatusCode::ACCEPTED,
                    serde_json::json!({ "delivered_here": here }),
                )),
                Err(e) => outcome(Err(e), StatusCode::ACCEPTED, ""),
            },
            (Err(p), _) | (_, Err(p)) => Err(p),
        },
        (_, ["connections", _] | ["connections", _, "groups", _] | ["groups", _]) => {
            Err(Refusal::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                format!("{method} is not allowed on `{path}`"),
            ))
        }
        _ => Err(Refusal::new(
            StatusCode::NOT_FOUND,
            "not-found",
            format!("`{path}` is not part of the WebSocket interface (see /connections/{{id}} and /groups/{{group}})"),
        )),
    };
    result.unwrap_or_else(Refusal::response)
}

/// Why a request to the interface was not carried out: an RFC 9457 problem.
#[derive(Debug)]
struct Refusal {
    status: StatusCode,
    kind: &'static str,
    detail: String,
}

impl Refusal {
    fn new(status: StatusCode, kind: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            detail: detail.into(),
        }
    }

    fn response(self) -> Response<Bytes> {
        let mut response = json(
            self.status,
            serde_json::json!({
                "type": format!("urn:bitvelocity:problem:{}", self.kind),
                "title": self.status.canonical_reason().unwrap_or("Error"),
                "status": self.status.as_u16(),
                "detail": self.detail,
            }),
        );
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/problem+json"),
        );
        response
    }
}

fn outcome(
    result: Result<(), SendError>,
    ok: StatusCode,
    id: &str,
) -> Result<Response<Bytes>, Refusal> {
    match result {
        Ok(()) => Ok(empty(ok)),
        Err(SendError::NotFound) => Err(Refusal::new(
            StatusCode::NOT_FOUND,
            "connection-not-found",
            format!("no WebSocket connection `{id}` is open"),
        )),
        Err(SendError::Unreachable(e)) => Err(Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "websocket-fanout-unavailable",
            format!("the other bv processes could not be reached through Redis: {e}"),
        )),
    }
}

/// A group name: 1 to 200 of letters, digits and `:._-` (room and channel
/// names such as `order:0b5c…`).
fn group_name(raw: &str) -> Result<String, Refusal> {
    let ok = !raw.is_empty()
        && raw.len() <= MAX_GROUP
        && raw
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, ':' | '.' | '_' | '-'));
    if ok {
        Ok(raw.to_string())
    } else {
        Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "invalid-group",
            format!("group `{raw}` must be 1 to {MAX_GROUP} letters, digits or `:._-`"),
        ))
    }
}

/// `code` (1000, or 3000-4999 for applications) and `reason` (at most 123
/// bytes, as a close frame holds) from the query.
fn close_frame(query: &str) -> Result<(u16, String), Refusal> {
    let mut code = 1000;
    let mut reason = String::new();
    for (key, value) in query.split('&').filter_map(|p| p.split_once('=')) {
        match key {
            "code" => {
                code = value
                    .parse::<u16>()
                    .ok()
                    .filter(|c| *c == 1000 || (3000..=4999).contains(c))
                    .ok_or_else(|| {
                        Refusal::new(
                            StatusCode::BAD_REQUEST,
                            "invalid-close-code",
                            format!("close code `{value}` must be 1000 or 3000 to 4999"),
                        )
                    })?;
            }
            "reason" => reason = value.replace('+', " "),
            _ => {}
        }
    }
    if reason.len() > 123 {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "invalid-close-reason",
            "the close reason must be at most 123 bytes",
        ));
    }
    Ok((code, reason))
}

fn empty(status: StatusCode) -> Response<Bytes> {
    let mut response = Response::new(Bytes::new());
    *response.status_mut() = status;
    response
}

fn json(status: StatusCode, value: serde_json::Value) -> Response<Bytes> {
    let mut response = Response::new(Bytes::from(value.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_names_and_close_frames_are_checked() {
        assert_eq!(group_name("order:0b5c-1").unwrap(), "order:0b5c-1");
        assert!(group_name("").is_err() && group_name("a b").is_err());
        assert!(group_name(&"a".repeat(201)).is_err());
        assert_eq!(close_frame("").unwrap(), (1000, String::new()));
        assert_eq!(
            close_frame("code=4001&reason=muted+by+admin").unwrap(),
            (4001, "muted by admin".into())
        );
        assert!(close_frame("code=1006").is_err());
        assert!(close_frame(&format!("reason={}", "x".repeat(124))).is_err());
    }
}
