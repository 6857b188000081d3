//! The HTTP trigger of `bv`.
//!
//! [`HttpTrigger`] routes each request with Spin's rules (`bv-routes`), sets
//! the `spin-*` headers, applies the component's concurrency limit and request
//! timeout, and hands the request, body still streaming, to wasmtime-wasi-http's
//! `ProxyHandler`, which instantiates or reuses an instance according to the
//! component's instance policy. Faults stay with their request: a trap is a
//! 500, a timeout a 504, a full component a 503 with `Retry-After`. Requests to
//! `http://<component>.spin.internal` from a guest come back in through
//! [`HttpTrigger::handle_chained`] without a socket.

mod body;
mod client_addr;
mod cors;
mod grpc;
mod hardening;
pub mod headers;
mod instance;
mod limits;
mod metrics;
mod problem;
mod rate_limit;
mod security_headers;
mod server;
mod trace;
mod websocket;

pub use metrics::Metrics;
pub use server::{serve, Drained, HttpServer, ServeOptions};

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bv_factor_outbound_http::{BoxFuture, LocalService};
use bv_routes::{RouteMatch, Router};
use bv_runtime::AppRuntime;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;
use wasmtime_wasi_http::handler::{ExpirationError, ProxyHandler, ProxyPre, TrapOrPanicError};
use wasmtime_wasi_http::WasiBody;

use instance::{ComponentInstances, ReusePolicy};
use metrics::{RejectionLabels, RouteMetrics};

struct ComponentHandler {
    id: Arc<str>,
    proxy: ProxyHandler<ComponentInstances>,
    concurrency: Arc<Semaphore>,
    timeout: Duration,
    stream_idle_timeout: Duration,
    in_flight: prometheus_client::metrics::gauge::Gauge,
    /// Requests chained from guests, counted under Spin's catch-all `/...`.
    chained: RouteMetrics,
    /// Its WebSocket limits, when it takes WebSocket connections.
    websocket: Option<bv_websocket::ConnectionSettings>,
}

/// What a route leads to, resolved when the trigger is built.
struct RouteTarget {
    component: Arc<str>,
    /// The route as written in the manifest.
    route: String,
    metrics: RouteMetrics,
    /// Its `spin-*` header values, made on its first match.
    headers: std::sync::OnceLock<headers::RouteHeaders>,
}

/// The route Spin matches every chained request with.
const CHAINED_ROUTE: &str = "/...";

/// Spin's reserved route prefix: the runtime's own, before the app's routes.
const RESERVED_PREFIX: &str = "/.well-known/spin/";

/// The HTTP trigger for one application.
pub struct HttpTrigger {
    runtime: Arc<AppRuntime>,
    router: Router<Arc<RouteTarget>>,
    /// Answers no route led to (404s), counted under empty labels.
    unrouted: RouteMetrics,
    components: HashMap<Arc<str>, ComponentHandler>,
    metrics: Arc<Metrics>,
    ready: AtomicBool,
    /// Cancelled when the server starts draining: event streams end.
    draining: CancellationToken,
    /// Request limits, CORS, rate limits and security headers.
    hardening: hardening::Hardening,
    /// The WebSocket connections, when a component takes them.
    websocket: Option<Arc<bv_websocket::Hub>>,
    /// Itself, for the tasks it spawns (WebSocket connections).
    this: Weak<HttpTrigger>,
}

impl HttpTrigger {
    /// Builds the router and one instance pool per component with an HTTP
    /// route, and registers itself as the app's service-chaining target.
    pub fn new(runtime: Arc<AppRuntime>) -> anyhow::Result<Arc<Self>> {
        let app = runtime.app();
        let base = app.application.http_base.clone();
        let metrics = Arc::new(runtime.register_metrics(Metrics::register));
        let router = Router::build(
            &base,
            app.http_triggers.iter().map(|t| {
                let route = t.route.to_string();
                let target = RouteTarget {
                    component: Arc::from(t.component.as_str()),
                    metrics: RouteMetrics::new(&t.component, &route),
                    route,
                    headers: Default::default(),
                };
                (t.route.clone(), Arc::new(target))
            }),
        )
        .with_context(|| format!("{}: trigger.http", app.path.display()))?;

        let mut components = HashMap::new();
        for trigger in &app.http_triggers {
            let id: Arc<str> = Arc::from(trigger.component.as_str());
            if components.contains_key(&id) {
                continue;
            }
            let component = runtime
                .component(&id)
                .with_context(|| format!("component `{id}` is not loaded"))?
                .clone();
            let pre = match wasmtime_wasi_http::p3::bindings::ServicePre::new(component.pre.clone())
            {
                Ok(pre) => ProxyPre::P3(pre),
                Err(p3_err) => ProxyPre::P2(
                    wasmtime_wasi_http::p2::bindings::ProxyPre::new(component.pre.clone())
                        .map_err(|_| anyhow::Error::from(p3_err))
                        .with_context(|| {
                            format!("component `{id}` does not export wasi:http/handler")
                        })?,
                ),
            };
            let timeout = Duration::from_millis(component.settings.request_timeout_ms);
            let stream_idle_timeout =
                Duration::from_millis(component.settings.stream_idle_timeout_ms);
            let handler = ComponentHandler {
                id: id.clone(),
                stream_idle_timeout,
                concurrency: Arc::new(Semaphore::new(
                    component.settings.max_concurrent_requests as usize,
                )),
                timeout,
                in_flight: metrics
                    .in_flight
                    .get_or_create(&Metrics::component(&id))
                    .clone(),
                chained: RouteMetrics::new(&id, CHAINED_ROUTE),
                websocket: websocket::settings(&component),
                proxy: ProxyHandler::new(ComponentInstances {
                    runtime: runtime.clone(),
                    policy: ReusePolicy::for_component(&component),
                    component,
                    pre,
                    timeout,
                    stream_idle_timeout,
                    metrics: metrics.clone(),
                }),
            };
            components.insert(id, handler);
        }

        let hardening = hardening::Hardening::new(&runtime)?;
        let websocket = websocket::hub(&runtime)?;
        let trigger = Arc::new_cyclic(|this| Self {
            this: this.clone(),
            websocket,
            hardening,
            runtime,
            router,
            unrouted: RouteMetrics::new("", ""),
            components,
            metrics,
            ready: AtomicBool::new(false),
            draining: CancellationToken::new(),
        });
        trigger
            .runtime
            .set_local_service(Arc::new(Chaining(Arc::downgrade(&trigger))));
        Ok(trigger)
    }

    /// The routes served, as `(route with base, component id)`, in the order
    /// they are tried.
    pub fn routes(&self) -> Vec<(String, String)> {
        self.router
            .routes()
            .map(|(route, target)| (route.to_string(), target.component.to_string()))
            .collect()
    }

    /// The application this trigger serves.
    pub fn runtime(&self) -> &Arc<AppRuntime> {
        &self.runtime
    }

    /// Every metric of the application (all triggers), in the OpenMetrics
    /// text format.
    pub fn encode_metrics(&self) -> String {
        self.runtime.encode_metrics()
    }

    /// Whether the trigger is accepting requests (false before start and
    /// while draining).
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    pub(crate) fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    /// Stops being ready and ends the event streams (`text/event-stream`
    /// responses) cleanly, so that their clients reconnect elsewhere
    /// rather than hold the drain until its deadline.
    pub(crate) fn begin_drain(&self) {
        self.set_ready(false);
        self.draining.cancel();
    }

    /// Handles one request that arrived from the network, inside its server
    /// span.
    pub async fn handle(
        &self,
        mut req: Request<WasiBody>,
        client: Option<SocketAddr>,
        full_url: String,
    ) -> Response<WasiBody> {
        if let Some(reserved) = req.uri().path().strip_prefix(RESERVED_PREFIX) {
            return self.reserved(reserved);
        }
        // Routed first, so that the span is made with its route and
        // component rather than recorded into (each record visits every
        // layer).
        let path = req.uri().path().to_string();
        let matched = self.router.route(&path);
        let span = trace::server_span(
            &mut req,
            matched
                .as_ref()
                .map(|m| (&*m.target.component, m.target.route.as_str())),
        );
        let call = grpc::GrpcCall::of(&req);
        let component = call
            .as_ref()
            .and(matched.as_ref())
            .map(|m| m.target.component.clone());
        let mut response = self
            .route_and_dispatch(req, client, full_url, &path, matched)
            .instrument(span.clone())
            .await;
        if let Some(call) = call {
            call.record_on(&span);
            response = grpc::answer(&call, component.as_deref(), &self.metrics, response).await;
        }
        trace::finish(&span, &response);
        response
    }

    /// Spin's reserved routes, answered by the runtime before any of the
    /// app's (a catch-all route never sees them): `health` (200 `OK` while
    /// serving; SpinKube's probes ask it), `info` (the app's name and
    /// version), anything else 404.
    fn reserved(&self, path: &str) -> Response<WasiBody> {
        let app = &self.runtime.app().application;
        let (status, content_type, body) = match path {
            "health" if self.is_ready() => (StatusCode::OK, "text/plain", "OK".to_string()),
            "health" => (
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                "not ready".to_string(),
            ),
            "info" => (
                StatusCode::OK,
                "application/json",
                serde_json::json!({
                    "name": app.name,
                    "version": app.version,
                    "runtime": format!("bv {}", env!("CARGO_PKG_VERSION")),
                })
                .to_string(),
            ),
            _ => {
                return problem::response(
                    StatusCode::NOT_FOUND,
                    "route-not-found",
                    "Not Found",
                    &format!("`{RESERVED_PREFIX}{path}` is not defined (the runtime reserves `{RESERVED_PREFIX}...`)"),
                )
            }
        };
        problem::plain(status, content_type, body)
    }

    async fn route_and_dispatch(
        &self,
        mut req: Request<WasiBody>,
        client: Option<SocketAddr>,
        full_url: String,
        path: &str,
        matched: Option<RouteMatch<'_, Arc<RouteTarget>>>,
    ) -> Response<WasiBody> {
        let start = Instant::now();
        let client = client.map(|peer| self.hardening.client(peer, &req));
        let mut ticket = hardening::Ticket::new(&req);
        let Some(matched) = matched else {
            let response = problem::response(
                StatusCode::NOT_FOUND,
                "route-not-found",
                "Not Found",
                &format!("no route matches `{path}`"),
            );
            self.unrouted
                .record(&self.metrics, response.status().as_u16(), start.elapsed());
            return self.hardening.finish(ticket, response);
        };
        let target = matched.target.clone();
        let route_headers = target
            .headers
            .get_or_init(|| headers::RouteHeaders::of(&matched));
        headers::set(
            req.headers_mut(),
            &full_url,
            route_headers,
            &matched,
            client,
        );
        drop(matched);
        let (component, route) = (&*target.component, target.route.as_str());
        trace::propagate(&tracing::Span::current(), &mut req);
        let admitted = self
            .hardening
            .admit(component, route, req, client, &mut ticket)
            .await;
        let handler = &self.components[component];
        let response = match admitted {
            Ok(mut req) if handler.websocket.is_some() => {
                for name in bv_websocket::EVENT_HEADERS {
                    req.headers_mut().remove(name);
                }
                match (&self.websocket, &handler.websocket) {
                    (Some(hub), Some(settings)) if bv_websocket::is_upgrade(req.headers()) => {
                        self.websocket_handshake(hub, settings, &target, req).await
                    }
                    _ => self.dispatch(handler, &target.metrics, req, start).await,
                }
            }
            Ok(req) => self.dispatch(handler, &target.metrics, req, start).await,
            Err(response) => {
                target
                    .metrics
                    .record(&self.metrics, response.status().as_u16(), start.elapsed());
                response
            }
        };
        self.hardening.finish(ticket, response)
    }

    /// Handles a request a guest sent to `http://<component>.spin.internal`,
    /// inside a server span of its own (child of the caller's client span).
    pub async fn handle_chained(
        &self,
        component: &str,
        mut req: Request<WasiBody>,
    ) -> Result<Response<WasiBody>, wasmtime_wasi_http::Error> {
        if component == bv_manifest::WEBSOCKET_HOST_ID {
            return Ok(self.websocket_api(req).await);
        }
        let Some(handler) = self.components.get(component) else {
            if self.runtime.app().unselected.contains(component) {
                // The app has it, this process does not serve it (selective
                // deployment): the caller gets an answer, as from a gateway.
                tracing::warn!(
                    component,
                    "chained request to a component not deployed here"
                );
                return Ok(problem::response(
                    StatusCode::BAD_GATEWAY,
                    "component-not-deployed",
                    "Bad Gateway",
                    &format!(
                        "component `{component}` is not deployed in this process (it was left out by --component-id)"
                    ),
                ));
            }
            return Err(wasmtime_wasi_http::Error::DestinationNotFound);
        };
        let span = trace::server_span(&mut req, Some((&handler.id, CHAINED_ROUTE)));
        let call = grpc::GrpcCall::of(&req);
        let mut result = self.chained(handler, req).instrument(span.clone()).await;
        if let (Some(call), Ok(response)) = (call, &mut result) {
            call.record_on(&span);
            let answered = std::mem::replace(response, Response::new(WasiBody::default()));
            *response = grpc::answer(&call, Some(&handler.id), &self.metrics, answered).await;
        }
        if let Ok(response) = &result {
            trace::finish(&span, response);
        }
        result
    }

    async fn chained(
        &self,
        handler: &ComponentHandler,
        mut req: Request<WasiBody>,
    ) -> Result<Response<WasiBody>, wasmtime_wasi_http::Error> {
        let start = Instant::now();
        // Spin's routing of a chained request, not the callee's own routes:
        // see `headers::set_chained`.
        let uri = req.uri().clone();
        headers::set_chained(req.headers_mut(), &uri);
        trace::propagate(&tracing::Span::current(), &mut req);
        Ok(self.dispatch(handler, &handler.chained, req, start).await)
    }

    async fn dispatch(
        &self,
        handler: &ComponentHandler,
        route: &RouteMetrics,
        req: Request<WasiBody>,
        start: Instant,
    ) -> Response<WasiBody> {
        let component = &*handler.id;
        let Ok(permit) = handler.concurrency.clone().try_acquire_owned() else {
            self.reject(component, "concurrency");
            let response = problem::at_capacity(&format!(
                "component `{component}` is at its concurrency limit"
            ));
            route.record(&self.metrics, response.status().as_u16(), start.elapsed());
            return response;
        };
        handler.in_flight.inc();
        let in_flight = InFlight(handler.in_flight.clone());

        let body_limit = limits::BodyLimitHit::of(&req);
        let activity = body::ActivityLink::default();
        // A gRPC caller's deadline bounds the call too.
        let timeout = grpc::GrpcCall::deadline(req.headers())
            .map_or(handler.timeout, |deadline| deadline.min(handler.timeout));
        let outcome = tokio::time::timeout(
            timeout,
            handler
                .proxy
                .handle((tracing::Span::current(), activity.clone()), req),
        )
        .await;
        let response = match outcome {
            Ok(Ok(response)) => {
                let drain =
                    is_event_stream(&response).then(|| self.draining.clone().cancelled_owned());
                response.map(|body| {
                    body::Streamed::new(
                        body,
                        (permit, in_flight),
                        handler.stream_idle_timeout,
                        activity,
                        drain,
                    )
                    .boxed_unsync()
                })
            }
            Ok(Err(e)) if e.is::<ExpirationError>() => self.timed_out(component, handler.timeout),
            Err(_) => self.timed_out(component, timeout),
            Ok(Err(e)) if pool_exhausted(&e) => {
                // Every instance slot of the runtime is taken (more requests
                // at once than the pool holds): capacity, not a fault.
                tracing::warn!(component, "request refused: no free instance slot ({e})");
                self.reject(component, "instances");
                problem::at_capacity(&format!(
                    "no instance of component `{component}` could be made: every instance slot is in use"
                ))
            }
            Ok(Err(e)) => {
                if e.is::<TrapOrPanicError>() {
                    tracing::warn!(component, "request failed: the instance trapped");
                } else {
                    tracing::error!(component, "request failed: {e:?}");
                }
                problem::response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "component-failed",
                    "Internal Server Error",
                    &format!("component `{component}` failed to handle the request"),
                )
            }
        };
        let response = limits::BodyLimitHit::answer(body_limit, component, response);
        route.record(&self.metrics, response.status().as_u16(), start.elapsed());
        response
    }

    fn timed_out(&self, component: &str, timeout: Duration) -> Response<WasiBody> {
        self.reject(component, "timeout");
        problem::response(
            StatusCode::GATEWAY_TIMEOUT,
            "request-timeout",
            "Gateway Timeout",
            &format!("component `{component}` did not answer within {timeout:?}"),
        )
    }

    fn reject(&self, component: &str, limit: &'static str) {
        self.metrics
            .rejections
            .get_or_create(&RejectionLabels {
                component: component.to_string(),
                limit,
            })
            .inc();
    }
}

/// Whether `response` is a Server-Sent Events stream.
fn is_event_stream(response: &Response<WasiBody>) -> bool {
    response
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("text/event-stream"))
        })
}

/// Whether `e` says the runtime's pool of instance slots (or of their
/// memories, tables or stacks) was full.
fn pool_exhausted(e: &wasmtime::Error) -> bool {
    e.is::<wasmtime::PoolConcurrencyLimitError>()
        || format!("{e:#}").contains("maximum concurrent limit")
}

struct InFlight(prometheus_client::metrics::gauge::Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The service-chaining entry point the runtime hands to every instance; weak
/// so the trigger and the runtime do not keep each other alive.
struct Chaining(Weak<HttpTrigger>);

impl LocalService for Chaining {
    fn handle(
        &self,
        component: &str,
        request: Request<WasiBody>,
    ) -> BoxFuture<Result<Response<WasiBody>, wasmtime_wasi_http::Error>> {
        let trigger = self.0.upgrade();
        let component = component.to_string();
        Box::pin(async move {
            let trigger = trigger.ok_or(wasmtime_wasi_http::Error::DestinationUnavailable)?;
            trigger.handle_chained(&component, request).await
        })
    }
}
