//! Outbound `wasi:http` for `bv`.
//!
//! Every request a guest sends passes through [`OutboundHttp`], the
//! per-instance hooks wasmtime-wasi-http calls: requests to
//! `http://<component>.spin.internal` are handed to the [`LocalService`]
//! (the application's own HTTP trigger) without touching a socket; every other
//! request must match the component's `allowed_outbound_hosts`, or the guest
//! gets `error-code::http-request-denied` and the denial is logged.
//!
//! When tracing is on, every request gets a client span, and its W3C
//! `traceparent` goes out with the request (a chained request's server span
//! becomes its child). The span's parent is the `traceparent` the guest put
//! on the request, if any (a guest that forwards its inbound `traceparent`
//! names its own request exactly), else the span the instance works under.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bv_capability::{bv_faults, ComponentFaults};
use bv_outbound_networking::{AllowedHosts, OutboundUrl};
use bv_telemetry::CurrentSpan;
use http_body_util::BodyExt;
use tracing::Instrument as _;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

/// Host suffix that addresses a component of the same application.
pub const CHAINING_SUFFIX: &str = ".spin.internal";

/// A boxed future, as the hooks return them.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// The application's own HTTP handler, reached by service chaining.
pub trait LocalService: Send + Sync {
    /// Handles `request` with the component `component`, routed as Spin
    /// routes a chained request (the catch-all `/...`, whatever the
    /// component's routes), with the component's limits and metrics.
    fn handle(
        &self,
        component: &str,
        request: http::Request<WasiBody>,
    ) -> BoxFuture<Result<http::Response<WasiBody>, Error>>;
}

/// How long outbound requests may take by default.
#[derive(Clone, Debug)]
pub struct OutboundHttpSettings {
    /// Connect timeout unless the guest sets its own.
    pub connect_timeout: Duration,
    /// Time to the first response byte unless the guest sets its own.
    pub first_byte_timeout: Duration,
}

impl Default for OutboundHttpSettings {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            first_byte_timeout: Duration::from_secs(30),
        }
    }
}

/// Per-application state: the settings, and the application's own HTTP
/// handler once the HTTP trigger has registered it.
#[derive(Default)]
pub struct OutboundHttpApp {
    settings: OutboundHttpSettings,
    local: OnceLock<Arc<dyn LocalService>>,
}

impl OutboundHttpApp {
    /// Registers the handler of `http://<component>.spin.internal` requests
    /// (the HTTP trigger does this once it is built; later calls are ignored).
    pub fn set_local_service(&self, service: Arc<dyn LocalService>) {
        let _ = self.local.set(service);
    }
}

/// The outbound `wasi:http` capability. Its imports are `wasi:http`'s own,
/// linked by the runtime with the rest of WASI; this capability supplies the
/// hooks those imports call ([`OutboundHttp`]).
#[derive(Default)]
pub struct OutboundHttpCapability {
    /// Default timeouts.
    pub settings: OutboundHttpSettings,
}

impl bv_capability::Capability for OutboundHttpCapability {
    type AppState = Arc<OutboundHttpApp>;
    type ComponentState = ();
    type InstanceState = OutboundHttp;

    fn init(&self, _: &bv_capability::AppContext<'_>) -> anyhow::Result<Self::AppState> {
        Ok(Arc::new(OutboundHttpApp {
            settings: self.settings.clone(),
            local: OnceLock::new(),
        }))
    }

    fn instance(
        &self,
        app: &Self::AppState,
        _: &(),
        ctx: &bv_capability::InstanceContext<'_>,
    ) -> OutboundHttp {
        OutboundHttp {
            component: ctx.id.clone(),
            allowed: ctx.allowed_hosts.clone(),
            app: app.clone(),
            span: ctx.span.clone(),
            faults: ctx.faults.clone(),
        }
    }

    fn add_to_linker<T: Send + 'static>(
        _: &mut wasmtime::component::Linker<T>,
        _: fn(&mut T) -> &mut OutboundHttp,
    ) -> anyhow::Result<()> {
        Ok(())
    }
}

/// Per-instance state: the hooks for one component instance.
pub struct OutboundHttp {
    component: Arc<str>,
    allowed: Arc<AllowedHosts>,
    app: Arc<OutboundHttpApp>,
    span: CurrentSpan,
    faults: ComponentFaults,
}

impl OutboundHttp {
    /// A client span for `request` and its `traceparent` set on the request;
    /// `None` (and the request untouched) when tracing is off or the
    /// request is not traced (the guest's `traceparent` says so, or the
    /// request it serves was left out).
    fn client_span(&self, request: &mut http::Request<WasiBody>) -> Option<tracing::Span> {
        if !bv_telemetry::tracing_enabled() {
            return None;
        }
        let uri = request.uri();
        let guest_parent = request
            .headers()
            .get(TRACEPARENT)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let parent = match guest_parent.as_deref() {
            Some(traceparent) if bv_telemetry::left_out(Some(traceparent)) => return None,
            Some(_) => tracing::Span::none(),
            None => self.span.get(),
        };
        if !bv_telemetry::records(&parent) {
            // A left-out request: the callee learns so from the trace's
            // traceparent, as from a guest that forwarded it.
            if let Some(value) = bv_telemetry::left_out_traceparent(&parent)
                .and_then(|tp| http::HeaderValue::from_str(&tp).ok())
            {
                request.headers_mut().insert(TRACEPARENT, value);
            }
            return None;
        }
        let method = request.method().as_str();
        let span = tracing::info_span!(
            parent: &parent,
            "http.client",
            otel.name = method,
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            http.request.method = method,
            server.address = uri.host().unwrap_or_default(),
            server.port = i64::from(uri.port_u16().unwrap_or(match uri.scheme_str() {
                Some("https") => 443,
                _ => 80,
            })),
            url.full = %uri,
            http.response.status_code = tracing::field::Empty,
            bv.component = &*self.component,
            rpc.system = tracing::field::Empty,
            rpc.service = tracing::field::Empty,
            rpc.method = tracing::field::Empty,
        );
        if let Some((service, method)) = grpc_method(request) {
            span.record("rpc.system", "grpc");
            span.record("rpc.service", service);
            span.record("rpc.method", method);
        }
        if guest_parent.is_some() {
            bv_telemetry::set_remote_parent(&span, guest_parent.as_deref());
        }
        if let Some(value) =
            bv_telemetry::traceparent(&span).and_then(|tp| http::HeaderValue::from_str(&tp).ok())
        {
            request.headers_mut().insert(TRACEPARENT, value);
        }
        Some(span)
    }
}

const TRACEPARENT: &str = "traceparent";

/// The service and method of a gRPC call (`content-type:
/// application/grpc`, path `/package.Service/Method`).
fn grpc_method<B>(request: &http::Request<B>) -> Option<(&str, &str)> {
    let content_type = request.headers().get(http::header::CONTENT_TYPE)?;
    if !content_type.as_bytes().starts_with(b"application/grpc") {
        return None;
    }
    let (service, method) = request.uri().path().strip_prefix('/')?.split_once('/')?;
    (!service.is_empty() && !method.is_empty()).then_some((service, method))
}

/// Records the outcome of a request on its client span.
fn record_outcome<T>(
    span: &tracing::Span,
    result: &Result<(http::Response<T>, impl Sized), Error>,
) {
    match result {
        Ok((response, _)) => {
            let status = response.status().as_u16();
            span.record("http.response.status_code", i64::from(status));
            if status >= 400 {
                span.record("otel.status_code", "error");
            }
        }
        Err(_) => {
            span.record("otel.status_code", "error");
        }
    }
}

/// Runs `send` inside the client span (when there is one) and records its
/// outcome there.
async fn traced<B, D>(
    span: Option<tracing::Span>,
    send: impl Future<Output = Result<(http::Response<B>, D), Error>>,
) -> Result<(http::Response<B>, D), Error> {
    match span {
        None => send.await,
        Some(span) => {
            let result = send.instrument(span.clone()).await;
            record_outcome(&span, &result);
            result
        }
    }
}

/// Applies the component's faults to one outbound request; an injected
/// failure is a refused connection.
async fn injected(
    faults: &ComponentFaults,
    capability: bv_faults::Capability,
    span: &CurrentSpan,
) -> Result<(), Error> {
    faults
        .inject(capability, span)
        .await
        .map_err(|_| Error::ConnectionRefused)
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
        mut request: http::Request<WasiBody>,
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
                let err = self.span.get().in_scope(|| denied(
                    &self.component,
                    &uri.to_string(),
                    "not in allowed_outbound_hosts (add \"http://self\" or the component's spin.internal address)",
                ));
                return Box::new(async move { Err(err) });
            }
            let Some(local) = self.app.local.get().cloned() else {
                return Box::new(async { Err(Error::DestinationNotFound) });
            };
            let span = self.client_span(&mut request);
            let (faults, instance_span) = (self.faults.clone(), self.span.clone());
            return Box::new(traced(span, async move {
                injected(&faults, bv_faults::Capability::Chained, &instance_span).await?;
                let response = local.handle(&target, request).await?;
                let done: Box<dyn Future<Output = Result<(), Error>> + Send> =
                    Box::new(async { Ok(()) });
                Ok((response, done))
            }));
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
            let err = self.span.get().in_scope(|| {
                denied(
                    &self.component,
                    &uri.to_string(),
                    "not in allowed_outbound_hosts",
                )
            });
            return Box::new(async move { Err(err) });
        }
        let span = self.client_span(&mut request);

        let mut options = options.unwrap_or_default();
        options
            .connect_timeout
            .get_or_insert(self.app.settings.connect_timeout);
        options
            .first_byte_timeout
            .get_or_insert(self.app.settings.first_byte_timeout);
        let (faults, instance_span) = (self.faults.clone(), self.span.clone());
        Box::new(traced(span, async move {
            injected(&faults, bv_faults::Capability::Http, &instance_span).await?;
            let (response, io) =
                wasmtime_wasi_http::default_send_request(request, Some(options)).await?;
            let io: Box<dyn Future<Output = Result<(), Error>> + Send> = Box::new(io);
            Ok((response.map(BodyExt::boxed_unsync), io))
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bv_capability::testing::TestApp;
    use bv_capability::Capability as _;

    const MANIFEST: &str = r#"
        [component.web]
        source = "web.wasm"
        allowed_outbound_hosts = ["http://cart.spin.internal", "https://api.example.com"]
        [component.cart]
        source = "cart.wasm"
    "#;

    fn get(uri: &str) -> http::Request<WasiBody> {
        let body = http_body_util::Empty::<bytes::Bytes>::new()
            .map_err(|never| match never {})
            .boxed_unsync();
        http::Request::get(uri).body(body).unwrap()
    }

    async fn send(hooks: &mut OutboundHttp, uri: &str) -> Result<u16, Error> {
        let sent = hooks.send_request(get(uri), None, Box::new(async { Ok(()) }));
        let (response, _) = Box::into_pin(sent).await?;
        Ok(response.status().as_u16())
    }

    struct Teapot(std::sync::Mutex<Vec<String>>);

    impl LocalService for Teapot {
        fn handle(
            &self,
            component: &str,
            request: http::Request<WasiBody>,
        ) -> BoxFuture<Result<http::Response<WasiBody>, Error>> {
            self.0
                .lock()
                .unwrap()
                .push(format!("{component} {}", request.uri().path()));
            Box::pin(async {
                let body = http_body_util::Empty::<bytes::Bytes>::new()
                    .map_err(|never| match never {})
                    .boxed_unsync();
                Ok(http::Response::builder().status(418).body(body).unwrap())
            })
        }
    }

    #[tokio::test]
    async fn hosts_outside_the_allow_list_are_denied_without_a_socket() {
        let app = TestApp::with_tables(MANIFEST).unwrap();
        let mut web = app
            .prepare(OutboundHttpCapability::default(), "web")
            .unwrap()
            .instance();
        assert!(matches!(
            send(&mut web, "https://elsewhere.example.com/").await,
            Err(Error::HttpRequestDenied)
        ));
        assert!(
            matches!(
                send(&mut web, "http://api.example.com/").await,
                Err(Error::HttpRequestDenied)
            ),
            "the scheme is part of the entry"
        );
        let mut cart = app
            .prepare(OutboundHttpCapability::default(), "cart")
            .unwrap()
            .instance();
        assert!(matches!(
            send(&mut cart, "http://web.spin.internal/").await,
            Err(Error::HttpRequestDenied)
        ));
    }

    #[tokio::test]
    async fn chained_requests_reach_the_local_service_once_it_is_registered() {
        let app = TestApp::with_tables(MANIFEST).unwrap();
        let prepared = app
            .prepare(OutboundHttpCapability::default(), "web")
            .unwrap();
        let mut before = prepared.instance();
        assert!(matches!(
            send(&mut before, "http://cart.spin.internal/items").await,
            Err(Error::DestinationNotFound)
        ));
        let teapot = Arc::new(Teapot(Default::default()));
        prepared.app_state.set_local_service(teapot.clone());
        let mut after = prepared.instance();
        assert_eq!(
            send(&mut after, "http://cart.spin.internal/items")
                .await
                .unwrap(),
            418
        );
        assert_eq!(*teapot.0.lock().unwrap(), ["cart /items"]);
        // The capability is the same object for every instance, so an
        // instance made before registration sees it too.
        assert_eq!(
            send(&mut before, "http://cart.spin.internal/x")
                .await
                .unwrap(),
            418
        );
    }

    #[test]
    fn the_default_timeouts_are_spins() {
        let app = TestApp::with_tables(MANIFEST).unwrap();
        let state = OutboundHttpCapability::default()
            .init(&bv_capability::AppContext {
                app: app.app(),
                runtime_config: &Default::default(),
                state_dir: app.state_dir(),
            })
            .unwrap();
        assert_eq!(state.settings.connect_timeout, Duration::from_secs(10));
        assert_eq!(state.settings.first_byte_timeout, Duration::from_secs(30));
    }
}
