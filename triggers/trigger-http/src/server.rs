//! The listeners: the application's HTTP port and the admin port
//! (`/healthz`, `/readyz`, `/metrics`), and the graceful drain on shutdown.
//! The application's port speaks HTTP/1.1 and cleartext HTTP/2 with prior
//! knowledge (gRPC's h2c); the `Upgrade: h2c` dance, which RFC 9113
//! deprecates, is not offered: such a request is answered over HTTP/1.1.
//!
//! The drain has a deadline: connections still busy when it passes are
//! closed, so a request that never ends (a guest in a loop, a stream that
//! never finishes, an outbound call that hangs) cannot keep the process
//! alive. A connection the server closes while the client is still sending
//! (a body refused with 413, an answer given before the body was read) is
//! closed the way [`Lingering`] describes, so the client reads the answer
//! instead of a reset.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use crate::HttpTrigger;

static STOPPING: AtomicBool = AtomicBool::new(false);

/// Whether the process has finished draining and is about to exit.
pub(crate) fn is_stopping() -> bool {
    STOPPING.load(Ordering::SeqCst)
}

/// How the trigger serves.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// How long in-flight requests may take to finish after shutdown starts.
    pub drain_timeout: Duration,
    /// Most bytes of request line and headers a client may send.
    pub max_header_bytes: usize,
    /// The bearer token of the admin API's `/faults` endpoints; `None`
    /// leaves them off (see [`bv_faults::admin`]).
    pub admin_token: Option<String>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            drain_timeout: Duration::from_secs(30),
            max_header_bytes: 64 * 1024,
            admin_token: None,
        }
    }
}

pub use bv_runtime::Drained;

/// The HTTP trigger bound to its listeners: what `bv up` runs beside the
/// other triggers.
pub struct HttpServer {
    trigger: Arc<HttpTrigger>,
    listener: TcpListener,
    admin: Option<TcpListener>,
    options: ServeOptions,
}

impl HttpServer {
    /// `trigger`, to be served on `listener` (and the admin endpoints on
    /// `admin`) with `options`.
    pub fn new(
        trigger: Arc<HttpTrigger>,
        listener: TcpListener,
        admin: Option<TcpListener>,
        options: ServeOptions,
    ) -> Self {
        Self {
            trigger,
            listener,
            admin,
            options,
        }
    }
}

#[async_trait::async_trait]
impl bv_runtime::Trigger for HttpServer {
    fn kind(&self) -> &'static str {
        "http"
    }

    fn listing(&self) -> Vec<bv_runtime::Listed> {
        let addr = match self.listener.local_addr() {
            Ok(addr) => addr.to_string(),
            Err(_) => "?".into(),
        };
        self.trigger
            .routes()
            .into_iter()
            .map(|(route, component)| {
                bv_runtime::Listed::new(component, format!("http://{addr}{route}"))
            })
            .collect()
    }

    async fn run(
        self: Box<Self>,
        stop: tokio_util::sync::CancellationToken,
    ) -> anyhow::Result<Drained> {
        let this = *self;
        serve(
            this.trigger,
            this.listener,
            this.admin,
            this.options,
            stop.cancelled_owned(),
        )
        .await
    }
}

/// Serves `trigger` on `listener` (and the admin endpoints on `admin`) until
/// `shutdown` resolves, then stops accepting and waits for in-flight requests
/// up to the drain timeout, past which it closes their connections.
pub async fn serve(
    trigger: Arc<HttpTrigger>,
    listener: TcpListener,
    admin: Option<TcpListener>,
    options: ServeOptions,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<Drained> {
    let local_addr = listener.local_addr()?;
    // Tells the connections to finish their request in progress and close.
    let (drain, drain_rx) = tokio::sync::watch::channel(false);
    // Closes the connections the drain did not finish.
    let (cut, cut_rx) = tokio::sync::watch::channel(false);
    let open = Arc::new(AtomicUsize::new(0));
    let admin_token: Option<Arc<str>> = options.admin_token.as_deref().map(Arc::from);
    let admin_task =
        admin.map(|admin| tokio::spawn(serve_admin(trigger.clone(), admin, admin_token)));
    trigger.set_ready(true);
    // HTTP/1.1, or HTTP/2 with prior knowledge (what gRPC clients speak),
    // told apart by the connection preface.
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .keep_alive(true)
        .max_buf_size(options.max_header_bytes.max(8192));
    builder.http2().max_header_list_size(
        u32::try_from(options.max_header_bytes.max(8192)).unwrap_or(u32::MAX),
    );
    let builder = Arc::new(builder);
    tokio::pin!(shutdown);
    loop {
        let (stream, client) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: keep serving.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let trigger = trigger.clone();
        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
            let trigger = trigger.clone();
            async move {
                let full_url = full_url(&req, local_addr);
                let req =
                    req.map(|body| body.map_err(wasmtime_wasi_http::Error::from).boxed_unsync());
                Ok::<_, Infallible>(trigger.handle(req, Some(client), full_url).await)
            }
        });
        let (mut drain, mut cut) = (drain_rx.clone(), cut_rx.clone());
        let guard = OpenConnection::new(&open);
        let builder = builder.clone();
        tokio::spawn(async move {
            let _guard = guard;
            // With upgrades: a WebSocket handshake hands the socket over.
            let connection = builder
                .serve_connection_with_upgrades(TokioIo::new(Lingering::new(stream)), service);
            tokio::pin!(connection);
            let mut draining = false;
            loop {
                tokio::select! {
                    result = connection.as_mut() => {
                        if let Err(e) = result {
                            tracing::debug!("connection error: {e}");
                        }
                        break;
                    }
                    _ = drain.wait_for(|drain| *drain), if !draining => {
                        connection.as_mut().graceful_shutdown();
                        draining = true;
                    }
                    // Dropping the connection closes it (and drops the
                    // request's future, which gives up waiting for the guest).
                    _ = cut.wait_for(|cut| *cut) => break,
                }
            }
        });
    }
    trigger.begin_drain();
    drop(listener);
    tracing::info!(
        "shutting down: draining in-flight requests (at most {:?})",
        options.drain_timeout
    );
    let _ = drain.send(true);
    let requests = async {
        while open.load(Ordering::SeqCst) > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    let finished = tokio::time::timeout(options.drain_timeout, async {
        tokio::join!(requests, trigger.drain_websockets(options.drain_timeout))
    })
    .await;
    let drained = match finished {
        Ok(_) => Drained::Complete,
        Err(_) => {
            let connections = open.load(Ordering::SeqCst);
            tracing::warn!(
                "drain timeout of {:?} reached: closing {connections} connection(s) \
                 with requests still in progress",
                options.drain_timeout
            );
            let _ = cut.send(true);
            // The connection tasks drop their connections at their next
            // poll; give them a moment, not a wait without end.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
            while open.load(Ordering::SeqCst) > 0 && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Drained::Cut(connections)
        }
    };
    if let Some(task) = admin_task {
        task.abort();
    }
    STOPPING.store(true, Ordering::SeqCst);
    Ok(drained)
}

/// Counts a connection as open until its task ends.
struct OpenConnection(Arc<AtomicUsize>);

impl OpenConnection {
    fn new(open: &Arc<AtomicUsize>) -> Self {
        open.fetch_add(1, Ordering::SeqCst);
        Self(open.clone())
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// How long a closing connection keeps reading what the client still sends.
const LINGER_TIME: Duration = Duration::from_secs(5);
/// How many bytes a closing connection reads and discards at most.
const LINGER_BYTES: u64 = 64 * 1024 * 1024;

/// A client connection that closes gently.
///
/// When the server closes a connection whose client is still sending (a
/// body refused with 413 before it was read, a component that answered
/// without reading it), closing the socket with unread data makes the kernel
/// send a reset, and a client that writes its whole body before reading the
/// answer gets a broken pipe and never sees the answer. So on shutdown the
/// answer is flushed, the sending half is closed (the client sees the end of
/// the answer), and what the client still sends is read and discarded, up to
/// [`LINGER_BYTES`] or [`LINGER_TIME`], until it closes its half.
struct Lingering {
    stream: TcpStream,
    closing: Option<Closing>,
}

struct Closing {
    write_closed: bool,
    discarded: u64,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl Lingering {
    fn new(stream: TcpStream) -> Self {
        Self {
            stream,
            closing: None,
        }
    }
}

impl AsyncRead for Lingering {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Lingering {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let closing = this.closing.get_or_insert_with(|| Closing {
            write_closed: false,
            discarded: 0,
            deadline: Box::pin(tokio::time::sleep(LINGER_TIME)),
        });
        if !closing.write_closed {
            // The answer is flushed before the end of it is sent.
            if ready!(Pin::new(&mut this.stream).poll_shutdown(cx)).is_err() {
                return Poll::Ready(Ok(()));
            }
            closing.write_closed = true;
        }
        let mut scratch = [0u8; 8192];
        loop {
            if closing.discarded >= LINGER_BYTES || closing.deadline.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Ok(()));
            }
            let mut buf = ReadBuf::new(&mut scratch);
            match Pin::new(&mut this.stream).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if buf.filled().is_empty() => return Poll::Ready(Ok(())),
                Poll::Ready(Ok(())) => closing.discarded += buf.filled().len() as u64,
                Poll::Ready(Err(_)) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

fn full_url(req: &Request<Incoming>, local: SocketAddr) -> String {
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    // HTTP/2 names the host in the `:authority`, not a `Host` header.
    let host = req
        .headers()
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()));
    // One allocation, sized for the usual host.
    let mut url = String::with_capacity("http://".len() + host.map_or(21, str::len) + path.len());
    url.push_str("http://");
    match host {
        Some(host) => url.push_str(host),
        None => {
            use std::fmt::Write as _;
            let _ = write!(url, "{local}");
        }
    }
    url.push_str(path);
    url
}

async fn serve_admin(trigger: Arc<HttpTrigger>, listener: TcpListener, token: Option<Arc<str>>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let (trigger, token) = (trigger.clone(), token.clone());
        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
            let (trigger, token) = (trigger.clone(), token.clone());
            async move {
                Ok::<_, Infallible>(if bv_faults::admin::is_faults_path(req.uri().path()) {
                    faults_response(&trigger, token.as_deref(), req).await
                } else {
                    admin_response(&trigger, req.uri().path())
                })
            }
        });
        tokio::spawn(async move {
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// The admin API's `/faults` endpoints (see [`bv_faults::admin`]).
async fn faults_response(
    trigger: &HttpTrigger,
    token: Option<&str>,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    use bv_faults::admin::{self, Answer};
    let (parts, body) = req.into_parts();
    let answer = match http_body_util::Limited::new(body, admin::MAX_BODY)
        .collect()
        .await
    {
        Ok(body) => admin::handle(
            trigger.runtime().faults(),
            token,
            &admin::Request {
                method: &parts.method,
                path: parts.uri.path(),
                authorization: parts
                    .headers
                    .get(http::header::AUTHORIZATION)
                    .map(|v| v.as_bytes()),
                body: &body.to_bytes(),
            },
        ),
        Err(_) => Answer::Problem(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body-too-large",
            "Content Too Large",
            format!(
                "the body is larger than {} bytes, or was cut off",
                admin::MAX_BODY
            ),
        ),
    };
    let (status, content_type, body) = match answer {
        Answer::Json(status, value) => (status, "application/json", value.to_string()),
        Answer::Empty(status) => (status, "text/plain", String::new()),
        Answer::Problem(status, kind, title, detail) => (
            status,
            "application/problem+json",
            crate::problem::problem_json(kind, title, status.as_u16(), &detail),
        ),
    };
    admin_reply(status, content_type, body)
}

fn admin_response(trigger: &HttpTrigger, path: &str) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match path {
        "/healthz" => (StatusCode::OK, "text/plain", "ok\n".to_string()),
        "/readyz" if trigger.is_ready() => (StatusCode::OK, "text/plain", "ready\n".to_string()),
        "/readyz" => (
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "not ready\n".to_string(),
        ),
        "/metrics" => (
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            trigger.encode_metrics(),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found\n".to_string(),
        ),
    };
    admin_reply(status, content_type, body)
}

/// An answer of the admin listener.
fn admin_reply(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, content_type)
        .body(Full::new(Bytes::from(body)))
        .expect("static response parts are valid");
    let headers = response.headers_mut();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        // As every 503: when to ask again (a load balancer polling readiness
        // during a drain or before start-up may honour it).
        headers.insert(
            http::header::RETRY_AFTER,
            http::HeaderValue::from_static("1"),
        );
    }
    if status == StatusCode::UNAUTHORIZED {
        headers.insert(
            http::header::WWW_AUTHENTICATE,
            http::HeaderValue::from_static("Bearer"),
        );
    }
    // The admin listener may be reached from a browser too (a dashboard
    // proxy, an operator): the same headers as the application's answers.
    crate::security_headers::apply(headers);
    response
}
