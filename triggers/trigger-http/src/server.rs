//! The listeners: the application's HTTP port and the admin port
//! (`/healthz`, `/readyz`, `/metrics`), and the graceful drain on shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

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
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            drain_timeout: Duration::from_secs(30),
            max_header_bytes: 64 * 1024,
        }
    }
}

/// Serves `trigger` on `listener` (and the admin endpoints on `admin`) until
/// `shutdown` resolves, then stops accepting and waits for in-flight requests
/// (up to the drain timeout).
pub async fn serve(
    trigger: Arc<HttpTrigger>,
    listener: TcpListener,
    admin: Option<TcpListener>,
    options: ServeOptions,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let local_addr = listener.local_addr()?;
    let graceful = GracefulShutdown::new();
    let admin_task = admin.map(|admin| tokio::spawn(serve_admin(trigger.clone(), admin)));
    trigger.set_ready(true);
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
        let connection = http1::Builder::new()
            .keep_alive(true)
            .max_buf_size(options.max_header_bytes.max(8192))
            .serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!("connection error: {e}");
            }
        });
    }
    trigger.set_ready(false);
    drop(listener);
    tracing::info!("shutting down: draining in-flight requests");
    if tokio::time::timeout(options.drain_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            "drain timeout of {:?} reached; closing remaining connections",
            options.drain_timeout
        );
    }
    if let Some(task) = admin_task {
        task.abort();
    }
    STOPPING.store(true, Ordering::SeqCst);
    Ok(())
}

fn full_url(req: &Request<Incoming>, local: SocketAddr) -> String {
    let host = req
        .headers()
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .unwrap_or_else(|| local.to_string());
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    format!("http://{host}{path}")
}

async fn serve_admin(trigger: Arc<HttpTrigger>, listener: TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let trigger = trigger.clone();
        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
            let trigger = trigger.clone();
            async move { Ok::<_, Infallible>(admin_response(&trigger, req.uri().path())) }
        });
        tokio::spawn(async move {
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
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
    let mut response = Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, content_type)
        .body(Full::new(Bytes::from(body)))
        .expect("static response parts are valid");
    // The admin listener may be reached from a browser too (a dashboard
    // proxy, an operator): the same headers as the application's answers.
    crate::security_headers::apply(response.headers_mut());
    response
}
