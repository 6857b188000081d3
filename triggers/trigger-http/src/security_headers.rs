//! Security headers on every response the application's listener sends.
//!
//! The platform's routes are JSON APIs, so the defaults are the strict ones
//! (nothing may be framed, sniffed into another type, or load anything); a
//! component serving a page that needs more sets its own
//! `Content-Security-Policy`, `X-Frame-Options` or `Referrer-Policy`, which
//! are kept. Headers that name server software are removed so the response
//! does not advertise what to attack.

use http::header::{
    HeaderName, CONTENT_SECURITY_POLICY, REFERRER_POLICY, SERVER, X_CONTENT_TYPE_OPTIONS,
    X_FRAME_OPTIONS,
};
use http::{HeaderMap, HeaderValue};

/// The CSP of responses whose component set none: an API response needs to
/// load nothing and be embedded nowhere.
pub(crate) const DEFAULT_CSP: &str = "default-src 'none'; frame-ancestors 'none'";

const X_POWERED_BY: HeaderName = HeaderName::from_static("x-powered-by");

/// Adds the security headers to `headers` (a response's), keeping the
/// component's own framing, referrer and content-security policies.
pub(crate) fn apply(headers: &mut HeaderMap) {
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers
        .entry(X_FRAME_OPTIONS)
        .or_insert(HeaderValue::from_static("DENY"));
    headers
        .entry(REFERRER_POLICY)
        .or_insert(HeaderValue::from_static("no-referrer"));
    headers
        .entry(CONTENT_SECURITY_POLICY)
        .or_insert(HeaderValue::from_static(DEFAULT_CSP));
    headers.remove(SERVER);
    headers.remove(X_POWERED_BY);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_added_and_server_names_removed() {
        let mut headers = HeaderMap::new();
        headers.insert(SERVER, HeaderValue::from_static("wasmtime/48"));
        headers.insert(X_POWERED_BY, HeaderValue::from_static("bv"));
        headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("bogus"));
        apply(&mut headers);
        assert_eq!(headers[X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert_eq!(headers[X_FRAME_OPTIONS], "DENY");
        assert_eq!(headers[REFERRER_POLICY], "no-referrer");
        assert_eq!(headers[CONTENT_SECURITY_POLICY], DEFAULT_CSP);
        assert!(!headers.contains_key(SERVER));
        assert!(!headers.contains_key(X_POWERED_BY));
    }

    #[test]
    fn a_components_own_policies_are_kept() {
        let mut headers = HeaderMap::new();
        headers.insert(
            CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("default-src 'self'"),
        );
        headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("SAMEORIGIN"));
        headers.insert(
            REFERRER_POLICY,
            HeaderValue::from_static("strict-origin-when-cross-origin"),
        );
        apply(&mut headers);
        assert_eq!(headers[CONTENT_SECURITY_POLICY], "default-src 'self'");
        assert_eq!(headers[X_FRAME_OPTIONS], "SAMEORIGIN");
        assert_eq!(headers[REFERRER_POLICY], "strict-origin-when-cross-origin");
    }
}
