//! What a response body carries on its way to the client after the
//! headers: the limits that count the request until its last byte, and the
//! streaming policy (an idle timeout, the instance kept alive while it
//! sends, a clean end for Server-Sent Events when the server drains).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::WaitForCancellationFutureOwned;
use wasmtime_wasi_http::WasiBody;

/// An instance's response bodies still being sent, and when they last sent
/// something: the instance's expiry waits for a body that keeps sending
/// (see `instance::Expiration`).
#[derive(Debug)]
pub(crate) struct Activity {
    base: std::time::Instant,
    /// Milliseconds after `base`.
    last_ms: AtomicU64,
    open: AtomicUsize,
}

impl Activity {
    pub(crate) fn new() -> Self {
        Self {
            base: std::time::Instant::now(),
            last_ms: AtomicU64::new(0),
            open: AtomicUsize::new(0),
        }
    }

    /// When a body still open last sent a frame; `None` when no body of
    /// the instance is open.
    pub(crate) fn streaming_since(&self) -> Option<std::time::Instant> {
        (self.open.load(Ordering::Relaxed) > 0).then(|| self.last())
    }

    fn touch(&self) {
        let now = self.base.elapsed().as_millis() as u64;
        self.last_ms.fetch_max(now, Ordering::Relaxed);
    }

    fn last(&self) -> std::time::Instant {
        self.base + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

/// Set by the instance that takes the request, so that its response body
/// can report activity to it.
pub(crate) type ActivityLink = Arc<OnceLock<Arc<Activity>>>;

/// A response body that holds something (a concurrency permit, an in-flight
/// gauge guard) until the body has been sent or dropped, so limits count a
/// request for as long as it streams; ends with an error when it sends
/// nothing for `idle_timeout`; and, given `drain`, ends cleanly when the
/// server starts draining (an SSE client then reconnects elsewhere with its
/// `Last-Event-ID`).
pub(crate) struct Streamed<G> {
    inner: WasiBody,
    _guard: G,
    idle_timeout: Duration,
    last_frame: Instant,
    /// Made the first time the body waits: a body sent at once never
    /// touches the timer wheel.
    idle: Option<Pin<Box<Sleep>>>,
    activity: ActivityLink,
    drain: Option<Pin<Box<WaitForCancellationFutureOwned>>>,
}

impl<G> Streamed<G> {
    pub(crate) fn new(
        inner: WasiBody,
        guard: G,
        idle_timeout: Duration,
        activity: ActivityLink,
        drain: Option<WaitForCancellationFutureOwned>,
    ) -> Self {
        if let Some(activity) = activity.get() {
            activity.open.fetch_add(1, Ordering::Relaxed);
            activity.touch();
        }
        Self {
            inner,
            _guard: guard,
            idle_timeout,
            last_frame: Instant::now(),
            idle: None,
            activity,
            drain: drain.map(Box::pin),
        }
    }
}

impl<G> Drop for Streamed<G> {
    fn drop(&mut self) {
        if let Some(activity) = self.activity.get() {
            activity.open.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl<G: Unpin> Body for Streamed<G> {
    type Data = Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if let Some(drain) = &mut this.drain {
            if drain.as_mut().poll(cx).is_ready() {
                return Poll::Ready(None);
            }
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(frame)) => {
                this.last_frame = Instant::now();
                if let Some(activity) = this.activity.get() {
                    activity.touch();
                }
                Poll::Ready(Some(frame))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                let deadline = this.last_frame + this.idle_timeout;
                let idle = this
                    .idle
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if idle.deadline() != deadline {
                    idle.as_mut().reset(deadline);
                }
                match idle.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        tracing::warn!(
                            "response body sent nothing for {:?}: cut off",
                            this.idle_timeout
                        );
                        Poll::Ready(Some(Err(wasmtime_wasi_http::Error::HttpResponseTimeout)))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
