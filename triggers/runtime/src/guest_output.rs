//! A component's stdout and stderr, captured line by line.
//!
//! Each line becomes a `tracing` event (target `guest`) with the fields
//! `component` and `stream`, parented on the instance's current span so it
//! carries the trace of the request or delivery that printed it. Its level
//! is `info` for stdout and `warn` for stderr, unless the line names one
//! (`WARN: …`, `debug …`, or a JSON object with a `level`). Lines below the
//! component's `log_level` are dropped.
//!
//! A JSON line with a `"bv.metric"` member is not logged: it is a business
//! metric, added to [`AppMetrics`] (the line format is in
//! `docs/OBSERVABILITY.md`). Under plain Spin the same lines are just output,
//! so components need no import bv alone provides.
//!
//! Lines are cut at [`MAX_LINE`] bytes; a partial last line is logged when
//! the instance goes away.

mod line;
mod metrics;

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bv_manifest::LogLevel;
use bv_telemetry::CurrentSpan;
use bytes::Bytes;
use tracing::level_filters::LevelFilter;
use tracing::Level;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

pub use metrics::AppMetrics;

use line::{Line, Malformed};

/// The longest line kept; the rest of a longer one is dropped.
pub const MAX_LINE: usize = 16 * 1024;

/// Which output a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// stdout: lines default to `info`.
    Stdout,
    /// stderr: lines default to `warn`.
    Stderr,
}

impl Stream {
    fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }

    fn default_level(self) -> Level {
        match self {
            Stream::Stdout => Level::INFO,
            Stream::Stderr => Level::WARN,
        }
    }
}

/// Where a component's lines go: its id, level, instance span and the
/// application's metrics.
#[derive(Clone)]
pub struct OutputTarget {
    component: Arc<str>,
    filter: LevelFilter,
    span: CurrentSpan,
    metrics: Arc<AppMetrics>,
}

impl OutputTarget {
    /// The target of one instance of `component`.
    pub fn new(
        component: Arc<str>,
        level: LogLevel,
        span: CurrentSpan,
        metrics: Arc<AppMetrics>,
    ) -> Self {
        let filter = match level {
            LogLevel::Trace => LevelFilter::TRACE,
            LogLevel::Debug => LevelFilter::DEBUG,
            LogLevel::Info => LevelFilter::INFO,
            LogLevel::Warn => LevelFilter::WARN,
            LogLevel::Error => LevelFilter::ERROR,
            LogLevel::Off => LevelFilter::OFF,
        };
        Self {
            component,
            filter,
            span,
            metrics,
        }
    }

    /// The instance's stdout or stderr, for `WasiCtxBuilder::stdout`/`stderr`.
    pub fn stream(&self, stream: Stream) -> GuestOutput {
        GuestOutput(Arc::new(Shared {
            target: self.clone(),
            stream,
            buffer: Mutex::new(LineBuffer::default()),
        }))
    }

    /// Handles one complete line (without its newline).
    fn line(&self, stream: Stream, bytes: &[u8], truncated: bool) {
        let text = String::from_utf8_lossy(bytes);
        let text = text.strip_suffix('\r').unwrap_or(&text);
        if text.trim().is_empty() {
            return;
        }
        // Cheap checks first: most lines are plain text at the default level.
        let could_be_json = text.trim_start().starts_with('{');
        if !could_be_json && self.filter == LevelFilter::OFF {
            return;
        }
        match line::parse(text) {
            Line::Metric(_) if truncated => self.warn(
                stream,
                format_args!("metric line longer than {MAX_LINE} bytes dropped"),
            ),
            Line::Metric(Ok(metric)) => {
                if let Some(warning) = self.metrics.record(&self.component, metric) {
                    self.warn(stream, format_args!("{warning}"));
                }
            }
            Line::Metric(Err(Malformed { reason, once })) => {
                let first = match once {
                    Some(key) => self
                        .metrics
                        .warn_once(format!("{}:{key}", self.component), String::new())
                        .is_some(),
                    None => true,
                };
                if first {
                    self.warn(
                        stream,
                        format_args!("malformed metric line dropped ({reason}): {text}"),
                    );
                }
            }
            Line::Log(log) => {
                let level = log.level.unwrap_or(stream.default_level());
                if level > self.filter {
                    return;
                }
                let span = self.span.get();
                let truncated = truncated.then_some(true);
                let fields = log.fields.as_deref();
                macro_rules! emit {
                    ($level:expr) => {
                        tracing::event!(
                            target: "guest",
                            parent: &span,
                            $level,
                            component = &*self.component,
                            stream = stream.as_str(),
                            guest_fields = fields,
                            truncated,
                            "{}",
                            log.message
                        )
                    };
                }
                match level {
                    Level::ERROR => emit!(Level::ERROR),
                    Level::WARN => emit!(Level::WARN),
                    Level::INFO => emit!(Level::INFO),
                    Level::DEBUG => emit!(Level::DEBUG),
                    _ => emit!(Level::TRACE),
                }
            }
        }
    }

    /// A problem with the component's output, logged as its own line.
    fn warn(&self, stream: Stream, message: std::fmt::Arguments<'_>) {
        tracing::warn!(
            target: "guest",
            parent: &self.span.get(),
            component = &*self.component,
            stream = stream.as_str(),
            "{message}"
        );
    }
}

/// The bytes of a line not yet ended.
#[derive(Default)]
struct LineBuffer {
    pending: Vec<u8>,
    /// The pending line reached [`MAX_LINE`] and was logged: drop the rest
    /// of it.
    skipping: bool,
}

struct Shared {
    target: OutputTarget,
    stream: Stream,
    buffer: Mutex<LineBuffer>,
}

impl Shared {
    fn write(&self, bytes: &[u8]) {
        let mut buffer = self.buffer.lock().unwrap_or_else(|p| p.into_inner());
        split(&mut buffer, bytes, &mut |line, truncated| {
            self.target.line(self.stream, line, truncated)
        });
    }
}

/// Feeds `bytes` to `buffer`, calling `emit` with each line ended (or cut
/// at [`MAX_LINE`], then `truncated`).
fn split(buffer: &mut LineBuffer, mut bytes: &[u8], emit: &mut dyn FnMut(&[u8], bool)) {
    while !bytes.is_empty() {
        let newline = bytes.iter().position(|b| *b == b'\n');
        let (chunk, rest) = match newline {
            Some(at) => (&bytes[..at], &bytes[at + 1..]),
            None => (bytes, &[][..]),
        };
        bytes = rest;
        if buffer.skipping {
            buffer.skipping = newline.is_none();
            continue;
        }
        let room = MAX_LINE - buffer.pending.len();
        if chunk.len() > room {
            // Too long: log the first MAX_LINE bytes now, drop the rest.
            buffer.pending.extend_from_slice(&chunk[..room]);
            emit(&buffer.pending, true);
            buffer.pending.clear();
            buffer.skipping = newline.is_none();
        } else if newline.is_none() {
            buffer.pending.extend_from_slice(chunk);
        } else if buffer.pending.is_empty() {
            emit(chunk, false);
        } else {
            buffer.pending.extend_from_slice(chunk);
            emit(&buffer.pending, false);
            buffer.pending.clear();
        }
    }
}

impl Drop for Shared {
    /// The instance is gone: its last line will not be ended.
    fn drop(&mut self) {
        let buffer = self.buffer.get_mut().unwrap_or_else(|p| p.into_inner());
        if !buffer.pending.is_empty() {
            self.target.line(self.stream, &buffer.pending, false);
        }
    }
}

/// One instance's stdout or stderr (WASI P2 and P3).
pub struct GuestOutput(Arc<Shared>);

/// A handle the guest writes through; every handle of one stream shares its
/// line buffer.
struct Writer(Arc<Shared>);

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(Writer(self.0.clone()))
    }

    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(Writer(self.0.clone()))
    }
}

/// How much the guest may write at once through WASI P2.
const P2_PERMIT: usize = 64 * 1024;

#[async_trait::async_trait]
impl OutputStream for Writer {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.0.write(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(P2_PERMIT)
    }
}

#[async_trait::async_trait]
impl Pollable for Writer {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for Writer {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.0.write(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines a stream produced, with the truncation flag.
    fn lines_of(writes: &[&[u8]]) -> Vec<(String, bool)> {
        let out = Arc::new(Mutex::new(Vec::new()));
        let sink = out.clone();
        let mut buffer = LineBuffer::default();
        for bytes in writes {
            split(&mut buffer, bytes, &mut |line, truncated| {
                sink.lock()
                    .unwrap()
                    .push((String::from_utf8_lossy(line).into_owned(), truncated))
            });
        }
        if !buffer.pending.is_empty() {
            out.lock()
                .unwrap()
                .push((String::from_utf8_lossy(&buffer.pending).into_owned(), false));
        }
        let lines = out.lock().unwrap().clone();
        lines
    }

    #[test]
    fn splits_lines_across_writes() {
        assert_eq!(
            lines_of(&[b"one\ntw", b"o\n", b"\nthree"]),
            vec![
                ("one".into(), false),
                ("two".into(), false),
                ("".into(), false),
                ("three".into(), false)
            ]
        );
    }

    #[test]
    fn long_lines_are_cut_and_the_rest_dropped() {
        let long = vec![b'a'; MAX_LINE + 10];
        let lines = lines_of(&[&long[..100], &long[100..], b"tail\nnext\n"]);
        assert_eq!(
            lines.len(),
            2,
            "{:?}",
            lines.iter().map(|l| l.0.len()).collect::<Vec<_>>()
        );
        assert_eq!((lines[0].0.len(), lines[0].1), (MAX_LINE, true));
        assert_eq!(lines[1], ("next".into(), false));
        // Exactly MAX_LINE bytes and a newline is a whole line.
        let exact = [vec![b'b'; MAX_LINE], b"\n".to_vec()].concat();
        assert_eq!(lines_of(&[&exact]), vec![("b".repeat(MAX_LINE), false)]);
    }
}
