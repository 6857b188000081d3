//! Outbound `wasi:http` for `bv`.
//!
//! Every request a guest sends passes through [`OutboundHttp`], the
//! per-instance hooks wasmtime-wasi-http calls: requests to
//! `http://<component>.spin.internal` are handed to the [`LocalService`]
//! (the application's own HTTP trigger) without touching a socket; every other
//! request must match the component's `allowed_outbound_hosts`, or the guest
//! gets `error-code::http-request-denied` and the denial is logged.
#![deny(missing_docs)]

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bv_outbound_networking::{AllowedHosts, OutboundUrl};
use http_body_util::BodyExt;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

/// Host suffix that addresses a component of the same application.
pub const CHAINING_SUFFIX: &str = ".spin.internal";

/// A boxed future, as the hooks return them.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// The application's own HTTP handler, reached by service chaining.
pub trait LocalService: Send + Sync {
    /// Handles `request` with the component `component`, as if it had arrived
    /// from the network (same routing headers, limits and metrics).
    fn handle(
        &self,
        component: &str,
        request: http::Request<WasiBody>,
    ) -> BoxFuture<Result<http::Response<WasiBody>, Error>>;
}

/// Per-application state: how long outbound requests may take by default.
#[derive(Clone, Debug)]
pub struct OutboundHttpApp {
    /// Connect timeout unless the guest sets its own.
    pub connect_timeout: Duration,
    /// Time to the first response byte unless the guest sets its own.
    pub first_byte_timeout: Duration,
}

impl Default for OutboundHttpApp {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            first_byte_timeout: Duration::from_secs(30),
        }
    }
}

/// Per-instance state: the hooks for one component instance.
pub struct OutboundHttp {
    component: Arc<str>,
    allowed: Arc<AllowedHosts>,
    local: Option<Arc<dyn LocalService>>,
    app: OutboundHttpApp,
}

impl OutboundHttp {
    /// Hooks for an instance of `component`, allowed to reach `allowed`;
    /// `local` serves `*.spin.internal`.
    pub fn new(
        component: Arc<str>,
        allowed: Arc<AllowedHosts>,
        local: Option<Arc<dyn LocalService>>,
        app: OutboundHttpApp,
    ) -> Self {
        Self {
            component,
            allowed,
            local,
            app,
        }
    }
}

fn denied(component: &str, target: &str, why: &str) -> Error {
    tracing::warn!(component, target, "outbound request denied: {why}");
    Error::HttpRequestDenied
}

type SendResult = Result<
    (
        http::Response<WasiBody>,
        Box<dyn Future<Output = Result<(), Error>> + Send>,
    ),
    Error,
>;

impl WasiHttpHooks for OutboundHttp {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> Box<dyn Future<Output = SendResult> + Send> {
        let uri = request.uri().clone();
        let scheme = uri.scheme_str().unwrap_or("https").to_ascii_lowercase();
        let Some(host) = uri.host().map(str::to_ascii_lowercase) else {
            return Box::new(async { Err(Error::HttpRequestUriInvalid) });
        };

        if let Some(target) = host.strip_suffix(CHAINING_SUFFIX) {
            let target = target.to_string();
            if !self.allowed.allows_chaining_to(&target) {
                let err = denied(
                    &self.component,
                    &uri.to_string(),
                    "not in allowed_outbound_hosts (add \"http://self\" or the component's spin.internal address)",
                );
                return Box::new(async move { Err(err) });
            }
            let Some(local) = self.local.clone() else {
                return Box::new(async { Err(Error::DestinationNotFound) });
            };
            return Box::new(async move {
                let response = local.handle(&target, request).await?;
                let done: Box<dyn Future<Output = Result<(), Error>> + Send> =
                    Box::new(async { Ok(()) });
                Ok((response, done))
            });
        }

        let port = uri
            .port_u16()
            .unwrap_or(if scheme == "https" { 443 } else { 80 });
        let url = OutboundUrl {
            scheme: scheme.clone(),
            host,
            port,
        };
        if !self.allowed.allows(&url) {
            let err = denied(
                &self.component,
                &uri.to_string(),
                "not in allowed_outbound_hosts",
            );
            return Box::new(async move { Err(err) });
        }

        let mut options = options.unwrap_or_default();
        options
            .connect_timeout
            .get_or_insert(self.app.connect_timeout);
        options
            .first_byte_timeout
            .get_or_insert(self.app.first_byte_timeout);
        Box::new(async move {
            let (response, io) =
                wasmtime_wasi_http::default_send_request(request, Some(options)).await?;
            let io: Box<dyn Future<Output = Result<(), Error>> + Send> = Box::new(io);
            Ok((response.map(BodyExt::boxed_unsync), io))
        })
    }
}
