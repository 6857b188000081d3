//! W3C trace context for components: which trace the work of a request
//! belongs to, and how to keep the next call in it.
//!
//! `bv` (when tracing is on) hands each request a `traceparent` header
//! naming its own server span. A component keeps one trace across services
//! by passing that value on: in the `traceparent` header of the calls it
//! makes (`forward`), and on the events it publishes
//! (`CloudEvent::traced(trace.traceparent())` in `bv-events`).
//!
//! A [`Trace`] is a plain value read from the request, never a global: a
//! reused instance may serve several requests at once, each in its own
//! trace.

use spin_sdk::http::{HeaderMap, HeaderValue, Request};

/// The header that carries the trace context (W3C Trace Context).
pub const HEADER: &str = "traceparent";

/// The trace a piece of work belongs to: the `traceparent` of the request
/// (or event) that caused it, or none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Trace(Option<String>);

impl Trace {
    /// Outside any trace: calls made with it carry no `traceparent`.
    pub fn none() -> Self {
        Self(None)
    }

    /// The trace of an incoming request: its `traceparent` header, if it
    /// is a well-formed W3C one.
    pub fn of<B>(req: &Request<B>) -> Self {
        Self::from_headers(req.headers())
    }

    /// The trace named by the `traceparent` in `headers`, if well formed.
    pub fn from_headers(headers: &HeaderMap) -> Self {
        Self::from_traceparent(headers.get(HEADER).and_then(|v| v.to_str().ok()))
    }

    /// The trace named by a `traceparent` value (an event's, say); a
    /// malformed value is no trace, so that a bad header from a client can
    /// never fail a call.
    pub fn from_traceparent(traceparent: Option<&str>) -> Self {
        Self(
            traceparent
                .map(str::trim)
                .filter(|t| is_traceparent(t))
                .map(str::to_string),
        )
    }

    /// The `traceparent` value, if in a trace.
    pub fn traceparent(&self) -> Option<&str> {
        self.0.as_deref()
    }

    /// Puts the `traceparent` on an outgoing request being built, so the
    /// callee's work joins this trace (`bv` makes its client span the
    /// callee's parent).
    pub fn forward(&self, builder: http::request::Builder) -> http::request::Builder {
        match &self.0 {
            Some(t) => builder.header(HEADER, t.as_str()),
            None => builder,
        }
    }

    /// [`Trace::forward`] on a header map: sets `traceparent` (replacing
    /// any) or leaves the map alone when not in a trace.
    pub fn forward_headers(&self, headers: &mut HeaderMap) {
        if let Some(value) = self
            .0
            .as_deref()
            .and_then(|t| HeaderValue::from_str(t).ok())
        {
            headers.insert(HEADER, value);
        }
    }
}

/// `00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`, lower case,
/// ids not all zero (version 00 as W3C Trace Context defines it).
fn is_traceparent(t: &str) -> bool {
    let parts: Vec<&str> = t.split('-').collect();
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let nonzero = |s: &str| s.bytes().any(|b| b != b'0');
    parts.len() == 4
        && parts[0] == "00"
        && hex(parts[1], 32)
        && hex(parts[2], 16)
        && hex(parts[3], 2)
        && nonzero(parts[1])
        && nonzero(parts[2])
}

#[cfg(test)]
mod tests {
    use super::*;

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn request(traceparent: Option<&str>) -> Request<()> {
        let mut builder = http::Request::builder().uri("http://x/");
        if let Some(t) = traceparent {
            builder = builder.header("traceparent", t);
        }
        builder.body(()).unwrap()
    }

    #[test]
    fn reads_the_request_header() {
        assert_eq!(Trace::of(&request(Some(TP))).traceparent(), Some(TP));
        assert_eq!(Trace::of(&request(None)), Trace::none());
    }

    #[test]
    fn malformed_values_are_no_trace() {
        for bad in [
            "",
            "00-abc",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
        ] {
            assert_eq!(Trace::from_traceparent(Some(bad)), Trace::none(), "{bad}");
            assert_eq!(Trace::of(&request(Some(bad))), Trace::none(), "{bad}");
        }
    }

    #[test]
    fn forwards_on_outgoing_requests() {
        let trace = Trace::from_traceparent(Some(TP));
        let req = trace
            .forward(http::Request::builder().uri("http://callee.spin.internal/"))
            .body(())
            .unwrap();
        assert_eq!(req.headers()["traceparent"], TP);
        assert_eq!(Trace::of(&req), trace);

        let req = Trace::none()
            .forward(http::Request::builder().uri("http://callee.spin.internal/"))
            .body(())
            .unwrap();
        assert!(req.headers().get("traceparent").is_none());

        let mut headers = HeaderMap::new();
        headers.insert("traceparent", HeaderValue::from_static("stale"));
        trace.forward_headers(&mut headers);
        assert_eq!(headers["traceparent"], TP);
        let mut empty = HeaderMap::new();
        Trace::none().forward_headers(&mut empty);
        assert!(empty.is_empty());
    }
}
