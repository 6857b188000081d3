//! One connection: its handshake, its events, the frames both ways.
//!
//! A connection is two tasks. The reader takes the client's frames one at a
//! time and calls the component for each message, so a client that sends
//! faster than its component answers is held back by TCP, not buffered. The
//! writer sends what the hub queued for the client, pings it when idle and
//! sends the close frame, whoever decided to close.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http::{HeaderMap, HeaderValue, Request, Response, Uri};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message as Frame};
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;

use crate::{
    Events, Hub, Message, CLOSE_CODE_HEADER, CONNECTION_HEADER, EVENT_HEADER, PRINCIPAL_HEADER,
};

/// Whether `headers` ask to upgrade to WebSocket (`Connection: upgrade`,
/// `Upgrade: websocket`).
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    let has = |name: http::header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    has(http::header::CONNECTION, "upgrade") && has(http::header::UPGRADE, "websocket")
}

/// The `Sec-WebSocket-Accept` answer to a handshake, or why the handshake is
/// not one bv accepts (RFC 6455 section 4.2.1).
pub fn accept_key(method: &http::Method, headers: &HeaderMap) -> Result<HeaderValue, String> {
    if method != http::Method::GET {
        return Err(format!("a WebSocket handshake is a GET, not {method}"));
    }
    match headers.get(http::header::SEC_WEBSOCKET_VERSION) {
        Some(v) if v == "13" => {}
        Some(v) => {
            return Err(format!(
                "Sec-WebSocket-Version `{}` is not supported; use 13",
                v.to_str().unwrap_or("?")
            ))
        }
        None => return Err("Sec-WebSocket-Version is missing; use 13".into()),
    }
    let key = headers
        .get(http::header::SEC_WEBSOCKET_KEY)
        .ok_or("Sec-WebSocket-Key is missing")?;
    HeaderValue::from_str(&tungstenite::handshake::derive_accept_key(key.as_bytes()))
        .map_err(|e| e.to_string())
}

/// A connection's limits (`[component.<id>.tool.bv.websocket]`).
#[derive(Clone, Debug)]
pub struct ConnectionSettings {
    /// The largest message a client may send.
    pub max_message_bytes: usize,
    /// How often an idle client is pinged; silence for two intervals closes
    /// the connection.
    pub ping_interval: Duration,
}

/// Who a connection's events go to, and the handshake they are made from.
pub struct Session {
    /// The component, for logs and metrics.
    pub component: Arc<str>,
    /// The route's URI and the handshake's headers (after bv set the
    /// `spin-*` ones): each event call is a `POST` with these.
    pub uri: Uri,
    /// See [`Session::uri`].
    pub headers: HeaderMap,
    /// The connection's limits.
    pub settings: ConnectionSettings,
    /// Runs the component.
    pub events: Arc<dyn Events>,
}

/// Headers of the handshake that are not the component's business on an
/// event call (the upgrade itself, and the body's framing).
const HANDSHAKE_ONLY: [&str; 7] = [
    "connection",
    "upgrade",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-extensions",
    "content-length",
    "transfer-encoding",
];
/// Credentials are seen by the connect call only: later calls carry the
/// principal the component named instead.
const CREDENTIALS: [&str; 2] = ["authorization", "cookie"];

impl Session {
    fn request(
        &self,
        event: &'static str,
        connection: &str,
        principal: Option<&HeaderValue>,
        body: Bytes,
        content_type: Option<&'static str>,
    ) -> Request<Bytes> {
        let mut headers = self.headers.clone();
        for name in HANDSHAKE_ONLY {
            headers.remove(name);
        }
        if event != "connect" {
            for name in CREDENTIALS {
                headers.remove(name);
            }
        }
        for name in crate::EVENT_HEADERS {
            headers.remove(name);
        }
        headers.insert(EVENT_HEADER, HeaderValue::from_static(event));
        if let Ok(id) = HeaderValue::from_str(connection) {
            headers.insert(CONNECTION_HEADER, id);
        }
        if let Some(principal) = principal {
            headers.insert(PRINCIPAL_HEADER, principal.clone());
        }
        if let Some(content_type) = content_type {
            headers.insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static(content_type),
            );
        }
        headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        let mut request = Request::new(body);
        *request.method_mut() = http::Method::POST;
        *request.uri_mut() = self.uri.clone();
        *request.headers_mut() = headers;
        request
    }
}

/// Closes a connection once, with the first code and reason given.
#[derive(Clone, Default)]
pub(crate) struct Closer(Arc<CloserState>);

#[derive(Default)]
struct CloserState {
    token: CancellationToken,
    frame: Mutex<Option<(u16, String)>>,
}

impl Closer {
    pub(crate) fn close(&self, code: u16, reason: &str) {
        let mut frame = self.0.frame.lock().unwrap_or_else(|p| p.into_inner());
        if frame.is_none() {
            *frame = Some((code, reason.to_string()));
        }
        self.0.token.cancel();
    }

    /// Whether a close was asked for.
    pub(crate) fn is_closing(&self) -> bool {
        self.0.token.is_cancelled()
    }

    fn frame(&self) -> Option<(u16, String)> {
        self.0
            .frame
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// A connection registered with the hub whose connect call is under way:
/// the component may already send to it and put it in groups (delivered
/// once it is open).
pub struct Pending {
    hub: Arc<Hub>,
    id: String,
    /// Taken by the writer once the connection runs.
    outgoing: Option<mpsc::Receiver<Message>>,
    closer: Closer,
    session: Session,
    finished: bool,
    /// Dropped last: the drain waits for it.
    _running: crate::Running,
}

impl Hub {
    /// Registers a new connection for `session` (before its connect call).
    pub fn begin(self: &Arc<Self>, session: Session) -> Pending {
        let (id, outgoing, closer) = self.register(session.component.clone());
        Pending {
            _running: self.running(),
            hub: self.clone(),
            id,
            outgoing: Some(outgoing),
            closer,
            session,
            finished: false,
        }
    }
}

impl Pending {
    /// The connection's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Calls the component's connect; `Ok` with its answer when it accepted
    /// (2xx), `Err` with the answer the client gets otherwise (the
    /// connection is then forgotten).
    pub async fn connect(mut self) -> Result<(Self, Response<Bytes>), Response<Bytes>> {
        let request = self
            .session
            .request("connect", &self.id, None, Bytes::new(), None);
        let answer = self.session.events.call(request).await;
        if answer.status().is_success() {
            Ok((self, answer))
        } else {
            self.finished = true;
            self.hub.unregister(&self.id);
            Err(answer)
        }
    }

    /// Runs the accepted connection once `upgraded` gives its socket, until
    /// it closes; `principal` (from the connect answer) goes on every later
    /// call.
    pub fn spawn<S, F>(mut self, principal: Option<HeaderValue>, upgraded: F)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        F: std::future::Future<Output = io::Result<S>> + Send + 'static,
    {
        self.finished = true;
        tokio::spawn(async move {
            let id = self.id.clone();
            let hub = self.hub.clone();
            let code = match upgraded.await {
                Ok(io) => self.run(principal.as_ref(), io).await,
                Err(e) => {
                    tracing::debug!(connection = %id, "WebSocket upgrade failed: {e}");
                    1006
                }
            };
            hub.unregister(&id);
            let mut request =
                self.session
                    .request("disconnect", &id, principal.as_ref(), Bytes::new(), None);
            request
                .headers_mut()
                .insert(CLOSE_CODE_HEADER, HeaderValue::from(code));
            let answer = self.session.events.call(request).await;
            if !answer.status().is_success() {
                tracing::debug!(connection = %id, status = %answer.status(), "disconnect call failed");
            }
        });
    }

    /// Reads the client's frames until the connection ends; the close code.
    async fn run<S>(&mut self, principal: Option<&HeaderValue>, io: S) -> u16
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let limit = self.session.settings.max_message_bytes;
        // A small read buffer: most connections sit idle, and the buffer
        // grows for the message that needs more.
        let config = WebSocketConfig::default()
            .read_buffer_size(READ_BUFFER)
            .max_message_size(Some(limit))
            .max_frame_size(Some(limit));
        let ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
        let (sink, mut stream) = ws.split();
        let started = Instant::now();
        let last_seen = Arc::new(AtomicU64::new(0));
        let outgoing = self.outgoing.take().expect("a connection runs once");
        let writer = tokio::spawn(write(
            sink,
            outgoing,
            self.closer.clone(),
            self.hub.draining.clone(),
            self.session.settings.ping_interval,
            (started, last_seen.clone()),
        ));
        let mut client_code = None;
        let mut closing_since: Option<Instant> = None;
        loop {
            let grace = async {
                match closing_since {
                    Some(at) => tokio::time::sleep_until((at + CLOSE_GRACE).into()).await,
                    None => self.closer.0.token.cancelled().await,
                }
            };
            let frame = tokio::select! {
                frame = stream.next() => frame,
                () = grace => {
                    if closing_since.is_some() {
                        break;
                    }
                    closing_since = Some(Instant::now());
                    continue;
                }
            };
            last_seen.store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
            let (body, content_type) = match frame {
                None => break,
                Some(Ok(Frame::Text(text))) => (Bytes::from(text), "text/plain; charset=utf-8"),
                Some(Ok(Frame::Binary(data))) => (data, "application/octet-stream"),
                Some(Ok(Frame::Close(frame))) => {
                    client_code = Some(frame.map_or(1005, |f| u16::from(f.code)));
                    continue;
                }
                Some(Ok(_)) => continue,
                Some(Err(tungstenite::Error::Capacity(e))) => {
                    tracing::debug!(connection = %self.id, "closing: {e}");
                    self.closer.close(1009, "message too big");
                    continue;
                }
                Some(Err(e)) => {
                    tracing::debug!(connection = %self.id, "connection broke: {e}");
                    break;
                }
            };
            if closing_since.is_some() {
                continue;
            }
            self.hub.metrics.message(&self.session.component, "in");
            let request =
                self.session
                    .request("message", &self.id, principal, body, Some(content_type));
            let answer = self.session.events.call(request).await;
            self.reply(answer);
        }
        self.closer.close(1000, "");
        let _ = writer.await;
        client_code
            .or_else(|| self.closer.frame().map(|(code, _)| code))
            .unwrap_or(1006)
    }

    /// Sends a message call's answer (if it has a body) back to the client.
    fn reply(&self, answer: Response<Bytes>) {
        if !answer.status().is_success() {
            tracing::debug!(connection = %self.id, status = %answer.status(), "message call answered an error");
        }
        if answer.body().is_empty() {
            return;
        }
        let content_type = answer
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        match Message::from_body(content_type.as_deref(), answer.into_body()) {
            Ok(message) => {
                let local = self.hub.lock();
                if let Some(held) = local.connections.get(&self.id) {
                    self.hub.deliver(&self.id, held, message);
                }
            }
            Err(e) => tracing::warn!(connection = %self.id, "answer not sent: {e}"),
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        // A handshake given up before its end (the client left during the
        // connect call) leaves nothing registered.
        if !self.finished {
            self.hub.unregister(&self.id);
        }
    }
}

/// Bytes of read buffer a connection starts with (tungstenite's default,
/// 128 KiB, would make 10,000 idle connections cost over a gigabyte).
const READ_BUFFER: usize = 4096;

/// How long a closing connection waits for the client's close frame.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

async fn write<S>(
    mut sink: futures::stream::SplitSink<WebSocketStream<S>, Frame>,
    mut outgoing: mpsc::Receiver<Message>,
    closer: Closer,
    draining: CancellationToken,
    ping_interval: Duration,
    (started, last_seen): (Instant, Arc<AtomicU64>),
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut ping =
        tokio::time::interval_at(tokio::time::Instant::now() + ping_interval, ping_interval);
    loop {
        let frame = tokio::select! {
            biased;
            () = closer.0.token.cancelled() => break,
            () = draining.cancelled() => {
                closer.close(1001, "server shutting down");
                continue;
            }
            message = outgoing.recv() => match message {
                Some(Message::Text(text)) => Frame::text(text),
                Some(Message::Binary(data)) => Frame::binary(data),
                None => break,
            },
            _ = ping.tick() => {
                let idle = started.elapsed().saturating_sub(Duration::from_millis(last_seen.load(Ordering::Relaxed)));
                if idle >= ping_interval * 2 {
                    closer.close(1001, "no answer to pings");
                    continue;
                }
                Frame::Ping(Bytes::new())
            }
        };
        // A client that reads nothing leaves a send waiting without end: a
        // close (too slow, say) must not wait behind it.
        let sent = tokio::select! {
            sent = sink.send(frame) => sent,
            () = closer.0.token.cancelled() => break,
        };
        if sent.is_err() {
            closer.close(1006, "");
            return;
        }
    }
    if let Some((code, reason)) = closer.frame() {
        if code != 1006 {
            let frame = CloseFrame {
                code: CloseCode::from(code),
                reason: reason.into(),
            };
            let _ = tokio::time::timeout(CLOSE_GRACE, sink.send(Frame::Close(Some(frame)))).await;
        }
    }
    let _ = tokio::time::timeout(CLOSE_GRACE, sink.flush()).await;
}
