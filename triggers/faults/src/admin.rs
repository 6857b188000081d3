//! The admin API's `/faults` endpoints, answered on `bv`'s admin listener.
//!
//! | request | answer |
//! |---|---|
//! | `GET /faults` | 200 `{"faults": [ … ]}`: those on, with `id`, `remaining_s`, `injected` |
//! | `POST /faults` `{"faults": [ … ]}` | 201 `{"ids": [ … ]}`: switched on besides the others |
//! | `PUT /faults` `{"faults": [ … ]}` | 200 `{"ids": [ … ]}`: these replace every fault |
//! | `DELETE /faults` | 204: every fault off |
//! | `DELETE /faults/{id}` | 204, or 404 when there is no such fault |
//!
//! Every request carries `Authorization: Bearer <token>`, the token `bv`
//! was started with (`BV_ADMIN_TOKEN`); without one configured the
//! endpoints are off (403), so an admin port reached by mistake cannot break
//! the application. A refused change changes nothing.

use http::{Method, StatusCode};
use serde::Deserialize;

use crate::{FaultSpec, Faults};

/// Largest request body the endpoints read.
pub const MAX_BODY: usize = 64 * 1024;

/// What the endpoints answer; the HTTP trigger writes it (problems as RFC
/// 9457 `application/problem+json`).
#[derive(Debug, PartialEq)]
pub enum Answer {
    /// A JSON body.
    Json(StatusCode, serde_json::Value),
    /// No body.
    Empty(StatusCode),
    /// A problem: status, kind (the `type` after the runtime's prefix),
    /// title and detail.
    Problem(StatusCode, &'static str, &'static str, String),
}

/// One request to the endpoints.
pub struct Request<'a> {
    /// Its method.
    pub method: &'a Method,
    /// Its path (`/faults` or `/faults/{id}`).
    pub path: &'a str,
    /// Its `Authorization` header.
    pub authorization: Option<&'a [u8]>,
    /// Its body (at most [`MAX_BODY`] bytes).
    pub body: &'a [u8],
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Change {
    faults: Vec<FaultSpec>,
}

/// Whether `path` is one of these endpoints.
pub fn is_faults_path(path: &str) -> bool {
    path == "/faults" || path.starts_with("/faults/")
}

/// Answers `request`; `token` is the admin token (`None`: the API is off).
pub fn handle(faults: &Faults, token: Option<&str>, request: &Request<'_>) -> Answer {
    let Some(token) = token else {
        return Answer::Problem(
            StatusCode::FORBIDDEN,
            "admin-api-off",
            "Forbidden",
            "switching faults is off: start bv with BV_ADMIN_TOKEN set and send it as a bearer token"
                .into(),
        );
    };
    if !bearer_matches(request.authorization, token) {
        return Answer::Problem(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Unauthorized",
            "send the admin token as `Authorization: Bearer <token>`".into(),
        );
    }
    let id = request.path.strip_prefix("/faults/");
    match (request.method, id) {
        (&Method::GET, None) => Answer::Json(
            StatusCode::OK,
            serde_json::json!({ "faults": faults.list() }),
        ),
        (&Method::POST, None) => change(faults, request.body, false),
        (&Method::PUT, None) => change(faults, request.body, true),
        (&Method::DELETE, None) => {
            faults.clear();
            Answer::Empty(StatusCode::NO_CONTENT)
        }
        (&Method::DELETE, Some(id)) => match id.parse::<u64>() {
            Ok(id) if faults.remove(id) => Answer::Empty(StatusCode::NO_CONTENT),
            _ => Answer::Problem(
                StatusCode::NOT_FOUND,
                "not-found",
                "Not Found",
                format!("no fault `{id}` is on"),
            ),
        },
        (_, None) => method_not_allowed("GET, POST, PUT, DELETE"),
        (_, Some(_)) => method_not_allowed("DELETE"),
    }
}

fn method_not_allowed(allowed: &str) -> Answer {
    Answer::Problem(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        "Method Not Allowed",
        format!("use {allowed}"),
    )
}

fn change(faults: &Faults, body: &[u8], replace: bool) -> Answer {
    let mut de = serde_json::Deserializer::from_slice(body);
    let change: Change = match serde_path_to_error::deserialize(&mut de) {
        Ok(c) => c,
        Err(e) => {
            let path = e.path().to_string();
            return invalid(if path == "." {
                e.inner().to_string()
            } else {
                format!("{path}: {}", e.inner())
            });
        }
    };
    let result = if replace {
        faults.replace(change.faults)
    } else {
        faults.add(change.faults)
    };
    match result {
        Ok(ids) => Answer::Json(
            if replace {
                StatusCode::OK
            } else {
                StatusCode::CREATED
            },
            serde_json::json!({ "ids": ids }),
        ),
        Err((index, error)) => invalid(format!("faults[{index}]: {error}")),
    }
}

fn invalid(detail: String) -> Answer {
    Answer::Problem(
        StatusCode::BAD_REQUEST,
        "invalid-fault",
        "Bad Request",
        detail,
    )
}

/// `Bearer <token>`, compared in time that does not depend on where it
/// differs.
fn bearer_matches(header: Option<&[u8]>, token: &str) -> bool {
    let Some(given) = header.and_then(|h| h.strip_prefix(b"Bearer ")) else {
        return false;
    };
    let expected = token.as_bytes();
    given.len() == expected.len()
        && given
            .iter()
            .zip(expected)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request<'a>(method: &'a Method, path: &'a str, auth: &'a str, body: &'a str) -> Request<'a> {
        Request {
            method,
            path,
            authorization: Some(auth.as_bytes()),
            body: body.as_bytes(),
        }
    }

    const ONE: &str =
        r#"{"faults":[{"component":"cart","capability":"redis","effect":"fail","share":0.5}]}"#;

    #[test]
    fn without_a_token_or_with_a_wrong_one_nothing_changes() {
        let faults = Faults::new(["cart".to_string()]);
        let post = Method::POST;
        let off = handle(&faults, None, &request(&post, "/faults", "Bearer x", ONE));
        assert!(matches!(off, Answer::Problem(StatusCode::FORBIDDEN, ..)));
        for auth in ["Bearer wrong", "Bearer secre", "secret", "Basic secret"] {
            let refused = handle(
                &faults,
                Some("secret"),
                &request(&post, "/faults", auth, ONE),
            );
            assert!(
                matches!(refused, Answer::Problem(StatusCode::UNAUTHORIZED, ..)),
                "{auth}"
            );
        }
        assert!(faults.list().is_empty());
    }

    #[test]
    fn faults_are_added_listed_replaced_and_removed() {
        let faults = Faults::new(["cart".to_string(), "order".to_string()]);
        let token = Some("secret");
        let auth = "Bearer secret";
        let (get, post, put, delete) = (Method::GET, Method::POST, Method::PUT, Method::DELETE);
        let Answer::Json(StatusCode::CREATED, ids) =
            handle(&faults, token, &request(&post, "/faults", auth, ONE))
        else {
            panic!("not created")
        };
        let id = ids["ids"][0].as_u64().unwrap();
        let Answer::Json(StatusCode::OK, listed) =
            handle(&faults, token, &request(&get, "/faults", auth, ""))
        else {
            panic!("not listed")
        };
        assert_eq!(listed["faults"][0]["id"], id);
        assert_eq!(listed["faults"][0]["capability"], "redis");
        assert_eq!(listed["faults"][0]["share"], 0.5);
        assert_eq!(listed["faults"][0]["injected"], 0);

        let bad = r#"{"faults":[{"component":"order","capability":"redis","effect":"delay"}]}"#;
        assert_eq!(
            handle(&faults, token, &request(&put, "/faults", auth, bad)),
            Answer::Problem(
                StatusCode::BAD_REQUEST,
                "invalid-fault",
                "Bad Request",
                "faults[0]: effect `delay` needs `delay_ms`".into()
            )
        );
        let typo = r#"{"faults":[{"component":"order","capability":"redis","efect":"fail"}]}"#;
        let Answer::Problem(StatusCode::BAD_REQUEST, _, _, detail) =
            handle(&faults, token, &request(&put, "/faults", auth, typo))
        else {
            panic!("a typo is refused")
        };
        assert!(detail.starts_with("faults[0]"), "{detail}");
        assert_eq!(faults.list()[0].id, id, "refused changes changed nothing");

        assert_eq!(
            handle(
                &faults,
                token,
                &request(&delete, &format!("/faults/{id}"), auth, "")
            ),
            Answer::Empty(StatusCode::NO_CONTENT)
        );
        assert!(matches!(
            handle(
                &faults,
                token,
                &request(&delete, &format!("/faults/{id}"), auth, "")
            ),
            Answer::Problem(StatusCode::NOT_FOUND, ..)
        ));
        assert!(faults.list().is_empty());
    }
}
