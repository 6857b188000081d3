//! What a protected component calls: who is asking, and may they.
//!
//! Tokens are verified locally, with the public keys of the Spin variable
//! [`PUBLIC_KEYS_VARIABLE`] (a JWKS document): no call to the auth service
//! per request. The parsed key set is kept per instance and rebuilt only
//! when the variable's text changes.
//!
//! Requests a component receives over service chaining (from another
//! component of the app, `http://<component>.spin.internal`) are told
//! apart from network requests by `spin-client-addr`: the runtime sets it
//! on every network request to the client's socket address, and to
//! `0.0.0.0:0` on chained ones (Spin and bv alike). A request is chained
//! only when it carries exactly one such header, with port 0: `bv`
//! removes any `spin-client-addr` a client sends, but Spin keeps it and
//! appends its own after it, so a forged `0.0.0.0:0` from the network
//! comes with a second value. Which components can chain to which is the
//! manifest's `allowed_outbound_hosts`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bv_service::{Problem, ProblemKind};
use spin_sdk::http::HeaderMap;

use crate::keys::KeySet;
use crate::principal::{Principal, Role};
use crate::token::{TokenError, Verifier};

/// The token issuer every service expects (`iss`).
pub const ISSUER: &str = "urn:bitvelocity:auth";
/// The audience every service expects (`aud`).
pub const AUDIENCE: &str = "urn:bitvelocity:api";
/// The Spin variable holding the public keys (a JWKS document).
pub const PUBLIC_KEYS_VARIABLE: &str = "auth_public_keys";

/// The header the runtime sets to a network client's address.
const CLIENT_ADDR: &str = "spin-client-addr";

/// 401 `unauthenticated`: no credentials (bv-service adds
/// `WWW-Authenticate: Bearer`).
pub fn unauthenticated(detail: impl Into<String>) -> Problem {
    Problem::new(
        401,
        ProblemKind::Unauthenticated,
        "Not authenticated",
        detail,
    )
}

/// 401 `invalid-token`: a bearer token that does not verify (bv-service
/// adds `WWW-Authenticate: Bearer error="invalid_token"`).
pub fn invalid_token(error: &TokenError) -> Problem {
    Problem::new(
        401,
        ProblemKind::InvalidToken,
        "The access token is not valid",
        format!("{error}: log in again or refresh the token"),
    )
}

/// 403 `forbidden`: authenticated, but the role does not allow the call.
pub fn forbidden(detail: impl Into<String>) -> Problem {
    Problem::new(403, ProblemKind::Forbidden, "Forbidden", detail)
}

/// The verifier built from the public keys, cached per instance.
pub async fn verifier() -> Result<Arc<Verifier>, Problem> {
    static CACHE: Mutex<Option<(String, Arc<Verifier>)>> = Mutex::new(None);
    let document = spin_sdk::variables::get(PUBLIC_KEYS_VARIABLE)
        .await
        .map_err(|e| Problem::internal(format!("variable {PUBLIC_KEYS_VARIABLE}: {e:?}")))?;
    let mut cache = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((text, verifier)) = cache.as_ref() {
        if *text == document {
            return Ok(verifier.clone());
        }
    }
    let keys = KeySet::from_jwks(&document)
        .map_err(|e| Problem::internal(format!("variable {PUBLIC_KEYS_VARIABLE}: {e}")))?;
    let verifier = Arc::new(Verifier::new(keys, ISSUER, AUDIENCE));
    *cache = Some((document, verifier.clone()));
    Ok(verifier)
}

/// The bearer token of `Authorization: Bearer <token>`: 401
/// `unauthenticated` without one.
pub fn bearer_token(headers: &HeaderMap) -> Result<&str, Problem> {
    let value = headers.get("authorization").ok_or_else(|| {
        unauthenticated("send `Authorization: Bearer <access token>` (POST /api/auth/login)")
    })?;
    let value = value
        .to_str()
        .map_err(|_| unauthenticated("the Authorization header is not ASCII"))?;
    let (scheme, token) = value.trim().split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(unauthenticated(
            "the Authorization header must be `Bearer <access token>`",
        ));
    }
    Ok(token.trim())
}

/// Seconds since the epoch.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The principal of a request's bearer token: 401 without a token
/// (`unauthenticated`) or with one that does not verify (`invalid-token`).
pub async fn authenticate(headers: &HeaderMap) -> Result<Principal, Problem> {
    let token = bearer_token(headers)?;
    let verifier = verifier().await?;
    verifier
        .verify(token, now())
        .map(|claims| claims.principal)
        .map_err(|e| invalid_token(&e))
}

/// The principal of a WebSocket handshake: the bearer token of
/// `Authorization`, or, since browsers cannot set headers on a WebSocket,
/// of the `access_token` query parameter. Problems as [`authenticate`].
pub async fn authenticate_handshake(
    headers: &HeaderMap,
    query: Option<&str>,
) -> Result<Principal, Problem> {
    if headers.contains_key("authorization") {
        return authenticate(headers).await;
    }
    let token = query.and_then(|q| {
        q.split('&')
            .filter_map(|p| p.split_once('='))
            .find(|(k, _)| *k == "access_token")
            .map(|(_, v)| v)
    });
    let Some(token) = token.filter(|t| !t.is_empty()) else {
        return Err(unauthenticated(
            "send `Authorization: Bearer <access token>` or `?access_token=<access token>`",
        ));
    };
    verifier()
        .await?
        .verify(token, now())
        .map(|claims| claims.principal)
        .map_err(|e| invalid_token(&e))
}

/// An administrator's principal: 401 as [`authenticate`], 403 for a
/// customer.
pub async fn require_admin(headers: &HeaderMap) -> Result<Principal, Problem> {
    let principal = authenticate(headers).await?;
    if principal.role != Role::Admin {
        return Err(forbidden("this call needs the admin role"));
    }
    Ok(principal)
}

/// Whether the request came from another component of the app over
/// service chaining rather than from the network (see the module's
/// documentation).
pub fn is_chained(headers: &HeaderMap) -> bool {
    let mut addrs = headers.get_all(CLIENT_ADDR).iter();
    match (addrs.next(), addrs.next()) {
        (Some(v), None) => v
            .to_str()
            .ok()
            .and_then(|v| v.parse::<SocketAddr>().ok())
            .is_some_and(|addr| addr.port() == 0),
        // None: not set by a host that follows Spin. Several: Spin keeps
        // a `spin-client-addr` the client sent and appends its own after
        // it, so a second value means the first is someone's forgery.
        _ => false,
    }
}

/// Who may call an internal route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// Another component of the app, over service chaining.
    Internal,
    /// An administrator, from anywhere.
    Admin(Principal),
}

/// Internal routes (those a saga drives: reservations, payment steps):
/// a chained request from another component, or an administrator's
/// token. From the network without a token 401; with a customer's 403.
pub async fn require_internal_or_admin(headers: &HeaderMap) -> Result<Caller, Problem> {
    if is_chained(headers) {
        return Ok(Caller::Internal);
    }
    let principal = authenticate(headers).await?;
    if principal.role != Role::Admin {
        return Err(forbidden(
            "this call is made by the order service; from outside it needs the admin role",
        ));
    }
    Ok(Caller::Admin(principal))
}

/// The request's `Authorization` header as it came, to forward on calls
/// made for this caller (so the callee authenticates the same principal).
pub fn authorization(headers: &HeaderMap) -> Option<String> {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn bearer_tokens_are_read_from_the_authorization_header() {
        assert_eq!(
            bearer_token(&headers(&[("authorization", "Bearer abc.def.ghi")])).unwrap(),
            "abc.def.ghi"
        );
        assert_eq!(
            bearer_token(&headers(&[("authorization", "bearer  abc")])).unwrap(),
            "abc"
        );
        for bad in ["Basic dXNlcjpwdw==", "Bearer", "Bearer   ", "abc"] {
            let p = bearer_token(&headers(&[("authorization", bad)])).unwrap_err();
            assert_eq!(
                (p.status, p.kind),
                (401, ProblemKind::Unauthenticated),
                "{bad}"
            );
        }
        let p = bearer_token(&HeaderMap::new()).unwrap_err();
        assert_eq!((p.status, p.kind), (401, ProblemKind::Unauthenticated));
    }

    #[test]
    fn chained_requests_have_no_network_client_address() {
        assert!(is_chained(&headers(&[("spin-client-addr", "0.0.0.0:0")])));
        assert!(!is_chained(&HeaderMap::new()));
        // Spin appends its own address after one a client sent.
        let mut forged = headers(&[("spin-client-addr", "0.0.0.0:0")]);
        forged.append("spin-client-addr", "203.0.113.9:41000".parse().unwrap());
        assert!(!is_chained(&forged));
        assert!(!is_chained(&headers(&[(
            "spin-client-addr",
            "127.0.0.1:53211"
        )])));
        assert!(!is_chained(&headers(&[("spin-client-addr", "[::1]:4000")])));
        assert!(!is_chained(&headers(&[("spin-client-addr", "garbage")])));
    }
}
