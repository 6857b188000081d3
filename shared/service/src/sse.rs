//! Server-Sent Events: the frames, the pacing and the answer that carries
//! them, the same for every component that streams.
//!
//! ```
//! use bv_service::sse;
//! let frame = sse::frame(Some(7), "com.bitvelocity.order.paid.v1", r#"{"a":1}"#);
//! assert_eq!(&frame[..], b"id: 7\nevent: com.bitvelocity.order.paid.v1\ndata: {\"a\":1}\n\n");
//! ```

use std::time::Duration;

use bytes::Bytes;
use spin_sdk::http::{BoxBody, Response};

/// How often a stream polls what it reports.
pub const POLL: Duration = Duration::from_millis(250);

/// The longest a stream stays silent: then it sends [`KEEP_ALIVE`], so
/// that proxies and the runtime's `stream_idle_timeout_ms` keep it open.
pub const HEARTBEAT: Duration = Duration::from_secs(15);

/// A comment line: keeps a quiet stream open.
pub const KEEP_ALIVE: Bytes = Bytes::from_static(b": keep-alive\n\n");

/// `EventSource`'s reconnection delay: one second.
pub const RETRY: Bytes = Bytes::from_static(b"retry: 1000\n\n");

/// One event: `id` (what a reconnecting client sends back as
/// `Last-Event-ID`), its `event` name and its `data`, which must be one
/// line (compact JSON is).
pub fn frame(id: Option<i64>, event: &str, data: &str) -> Bytes {
    debug_assert!(!data.contains('\n'), "SSE data must be one line");
    let mut out = String::with_capacity(data.len() + event.len() + 32);
    if let Some(id) = id {
        out.push_str(&format!("id: {id}\n"));
    }
    out.push_str(&format!("event: {event}\ndata: {data}\n\n"));
    Bytes::from(out)
}

/// A `200 text/event-stream` answer streaming `body`, uncached and
/// unbuffered by proxies.
pub fn response<B>(body: B) -> Response<BoxBody>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<anyhow::Error>,
{
    Response::builder()
        .status(200)
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .header("x-accel-buffering", "no")
        .body(spin_sdk::http::box_body(body))
        .expect("a valid response head")
}

/// Counts the silence between sends: [`Heartbeat::due`] says when a
/// [`KEEP_ALIVE`] is owed.
#[derive(Debug, Default)]
pub struct Heartbeat {
    silent: Duration,
}

impl Heartbeat {
    /// Something was sent.
    pub fn sent(&mut self) {
        self.silent = Duration::ZERO;
    }

    /// `waited` passed without sending; whether a heartbeat is due now
    /// (counted as sent).
    pub fn waited(&mut self, waited: Duration) -> bool {
        self.silent += waited;
        if self.silent >= HEARTBEAT {
            self.silent = Duration::ZERO;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_without_an_id_name_the_event_and_its_data() {
        assert_eq!(
            &frame(None, "stock", "{}")[..],
            b"event: stock\ndata: {}\n\n"
        );
    }

    #[test]
    fn a_heartbeat_is_due_after_fifteen_silent_seconds_only() {
        let mut beat = Heartbeat::default();
        assert!(!beat.waited(Duration::from_secs(10)));
        beat.sent();
        assert!(!beat.waited(Duration::from_secs(10)));
        assert!(beat.waited(Duration::from_secs(5)));
        assert!(!beat.waited(Duration::from_secs(14)));
    }
}
