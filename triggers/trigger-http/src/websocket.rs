//! WebSocket on the routes of components with
//! `[component.<id>.tool.bv.websocket]` (beyond Spin): the handshake, the
//! component calls for each connection's events, and
//! `http://bv-websocket.spin.internal`. The connections themselves are
//! `bv-websocket`'s.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bv_runtime::AppRuntime;
use bv_websocket::{BoxFuture, ConnectionSettings, Events, Hub, Session};
use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use tracing::Instrument as _;
use wasmtime_wasi_http::WasiBody;

use crate::{problem, trace, ComponentHandler, HttpTrigger, RouteTarget};

/// The most bytes of a component's answer to an event, or of a request to
/// the interface, that are read.
const MAX_BODY: usize = 1 << 20;

/// The application's hub when a component takes WebSocket connections; the
/// Redis address every such component names (they must agree).
pub(crate) fn hub(runtime: &AppRuntime) -> anyhow::Result<Option<Arc<Hub>>> {
    let app = runtime.app();
    let mut redis: Option<(String, &str)> = None;
    let mut any = false;
    for trigger in &app.http_triggers {
        let id = trigger.component.as_str();
        let Some(settings) = runtime
            .component(id)
            .and_then(|c| c.settings.websocket.as_ref())
        else {
            continue;
        };
        any = true;
        let Some(template) = &settings.redis else {
            continue;
        };
        let field = format!("component.{id}.tool.bv.websocket.redis");
        let url = template
            .render(|name| runtime.app_variable(name))
            .with_context(|| field.clone())?;
        match &redis {
            Some((other_url, other)) if *other_url != url => anyhow::bail!(
                "{field}: `{url}` is not the Redis of component `{other}` (`{other_url}`); every WebSocket component must name the same one"
            ),
            _ => redis = Some((url, id)),
        }
    }
    if !any {
        return Ok(None);
    }
    let metrics = Arc::new(runtime.register_metrics(bv_websocket::Metrics::register));
    Hub::new(
        &app.application.name,
        metrics,
        redis.as_ref().map(|(url, _)| url.as_str()),
    )
    .map(Some)
}

/// A component's connection limits, when it takes WebSocket connections.
pub(crate) fn settings(component: &bv_runtime::ComponentRuntime) -> Option<ConnectionSettings> {
    let ws = component.settings.websocket.as_ref()?;
    Some(ConnectionSettings {
        max_message_bytes: usize::try_from(ws.max_message_bytes()).unwrap_or(usize::MAX),
        ping_interval: Duration::from_millis(ws.ping_interval_ms()),
    })
}

impl HttpTrigger {
    /// Answers a WebSocket handshake on `target`'s route: the component's
    /// connect call decides; accepted, the connection runs on its own.
    pub(crate) async fn websocket_handshake(
        &self,
        hub: &Arc<Hub>,
        settings: &ConnectionSettings,
        target: &Arc<RouteTarget>,
        req: Request<WasiBody>,
    ) -> Response<WasiBody> {
        let accept = match bv_websocket::accept_key(req.method(), req.headers()) {
            Ok(accept) => accept,
            Err(detail) => {
                return problem::response(
                    StatusCode::BAD_REQUEST,
                    "invalid-websocket-handshake",
                    "Bad Request",
                    &detail,
                )
            }
        };
        let (mut parts, _) = req.into_parts();
        let Some(upgrade) = parts.extensions.remove::<hyper::upgrade::OnUpgrade>() else {
            return problem::response(
                StatusCode::BAD_REQUEST,
                "invalid-websocket-handshake",
                "Bad Request",
                "this request cannot be upgraded to WebSocket",
            );
        };
        let session = Session {
            component: target.component.clone(),
            uri: parts.uri,
            headers: parts.headers,
            settings: settings.clone(),
            events: Arc::new(ComponentEvents {
                trigger: self.this.clone(),
                target: target.clone(),
            }),
        };
        let (pending, answer) = match hub.begin(session).connect().await {
            Ok(accepted) => accepted,
            Err(refused) => return refused.map(full),
        };
        let principal = answer
            .headers()
            .get(bv_websocket::PRINCIPAL_HEADER)
            .cloned();
        pending.spawn(principal, async move {
            upgrade
                .await
                .map(hyper_util::rt::TokioIo::new)
                .map_err(std::io::Error::other)
        });
        let mut response = Response::new(full(Bytes::new()));
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let headers = response.headers_mut();
        headers.insert(http::header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(
            http::header::CONNECTION,
            HeaderValue::from_static("upgrade"),
        );
        headers.insert(http::header::SEC_WEBSOCKET_ACCEPT, accept);
        if let Some(protocol) = answer.headers().get(http::header::SEC_WEBSOCKET_PROTOCOL) {
            headers.insert(http::header::SEC_WEBSOCKET_PROTOCOL, protocol.clone());
        }
        response
    }

    /// Answers a guest's request to `http://bv-websocket.spin.internal`.
    pub(crate) async fn websocket_api(&self, req: Request<WasiBody>) -> Response<WasiBody> {
        let Some(hub) = &self.websocket else {
            return problem::response(
                StatusCode::NOT_FOUND,
                "websocket-not-configured",
                "Not Found",
                "no component of this application takes WebSocket connections ([component.<id>.tool.bv.websocket])",
            );
        };
        let (parts, body) = req.into_parts();
        let body = match Limited::new(body, MAX_BODY).collect().await {
            Ok(body) => body.to_bytes(),
            Err(_) => {
                return problem::response(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "message-too-large",
                    "Payload Too Large",
                    &format!("a WebSocket message sent by a component is at most {MAX_BODY} bytes"),
                )
            }
        };
        bv_websocket::handle_api(hub, Request::from_parts(parts, body))
            .await
            .map(full)
    }

    /// Closes the WebSocket connections (1001) and waits for their
    /// disconnect calls, at most `deadline`.
    pub(crate) async fn drain_websockets(&self, deadline: Duration) {
        if let Some(hub) = &self.websocket {
            hub.drain(deadline).await;
        }
    }
}

fn full(body: Bytes) -> WasiBody {
    Full::new(body)
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A connection's way to its component: through the trigger's dispatch, so
/// every event call has the component's limits, metrics and a span.
struct ComponentEvents {
    trigger: Weak<HttpTrigger>,
    target: Arc<RouteTarget>,
}

impl Events for ComponentEvents {
    fn call(&self, request: Request<Bytes>) -> BoxFuture<Response<Bytes>> {
        let trigger = self.trigger.upgrade();
        let target = self.target.clone();
        Box::pin(async move {
            let Some(trigger) = trigger else {
                return gone();
            };
            let handler: &ComponentHandler = &trigger.components[&*target.component];
            let mut req = request.map(full);
            let span = trace::server_span(&mut req, Some((&target.component, &target.route)));
            let response = async {
                trace::propagate(&tracing::Span::current(), &mut req);
                trigger
                    .dispatch(handler, &target.metrics, req, Instant::now())
                    .await
            }
            .instrument(span.clone())
            .await;
            trace::finish(&span, &response);
            let (parts, body) = response.into_parts();
            match Limited::new(body, MAX_BODY).collect().await {
                Ok(body) => Response::from_parts(parts, body.to_bytes()),
                Err(e) => {
                    tracing::warn!(
                        component = &*target.component,
                        "WebSocket event answer unreadable: {e}"
                    );
                    let mut response = Response::new(Bytes::new());
                    *response.status_mut() = StatusCode::BAD_GATEWAY;
                    response
                }
            }
        })
    }
}

fn gone() -> Response<Bytes> {
    let mut response = Response::new(Bytes::new());
    *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    response
}
