//! What the trigger checks before a request reaches a component, and adds to
//! every response it sends, in one place:
//!
//! 1. header limits (431, [`limits`]),
//! 2. CORS preflights, answered by the host ([`cors`]),
//! 3. the component's rate limit (429, [`rate_limit`]),
//! 4. the component's body limit, when it has one (413, [`limits`]);
//!
//! then on the way out: rate-limit headers, CORS headers and security headers
//! ([`security_headers`]). Only requests from the network pass here; requests
//! between components (`*.spin.internal`) do not.
//!
//! [`limits`]: crate::limits
//! [`cors`]: crate::cors
//! [`rate_limit`]: crate::rate_limit
//! [`security_headers`]: crate::security_headers

// The error of these checks is the response to send instead: it is moved
// once, on the path that refuses a request, so boxing it would buy nothing.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::net::SocketAddr;

use http::{HeaderValue, Request, Response};
use wasmtime_wasi_http::WasiBody;

use bv_runtime::AppRuntime;

use crate::client_addr::TrustedProxies;
use crate::cors::Cors;
use crate::rate_limit::{RateLimiter, Verdict};
use crate::{limits, security_headers};

/// The application's request checks and response headers.
pub(crate) struct Hardening {
    max_headers: u32,
    max_header_bytes: u32,
    cors: Option<Cors>,
    /// Each component's body limit; `None`: no limit (Spin's default).
    body_limits: HashMap<String, Option<u64>>,
    rate_limits: RateLimiter,
    trusted_proxies: TrustedProxies,
}

/// What [`Hardening::finish`] needs to know about the request.
pub(crate) struct Ticket {
    origin: Option<HeaderValue>,
    preflight: bool,
    rate: Option<Verdict>,
}

impl Ticket {
    /// Notes what the response depends on (the `Origin`), before the request
    /// moves on.
    pub(crate) fn new<B>(req: &Request<B>) -> Self {
        Self {
            origin: req.headers().get(http::header::ORIGIN).cloned(),
            preflight: false,
            rate: None,
        }
    }
}

impl Hardening {
    /// Reads the settings of the app and of each HTTP component.
    pub(crate) fn new(runtime: &AppRuntime) -> anyhow::Result<Self> {
        let app = runtime.app();
        let body_limits = app
            .http_triggers
            .iter()
            .map(|t| {
                let limit = runtime
                    .component(&t.component)
                    .and_then(|c| c.settings.max_request_body_bytes);
                (t.component.clone(), limit)
            })
            .collect();
        Ok(Self {
            max_headers: app.bv.max_request_headers,
            max_header_bytes: app.bv.max_request_header_bytes,
            cors: app.bv.cors.as_ref().map(Cors::new).transpose()?,
            body_limits,
            rate_limits: RateLimiter::new(runtime)?,
            trusted_proxies: TrustedProxies::new(runtime)?,
        })
    }

    /// The client of a request from the network that came from `peer`:
    /// `peer`, or the address a trusted proxy forwarded
    /// ([`crate::client_addr`]).
    pub(crate) fn client<B>(&self, peer: SocketAddr, req: &Request<B>) -> SocketAddr {
        self.trusted_proxies.client(peer, req.headers())
    }

    /// Lets `req` on to `component`, or answers it here.
    pub(crate) async fn admit(
        &self,
        component: &str,
        route: &str,
        req: Request<WasiBody>,
        client: Option<SocketAddr>,
        ticket: &mut Ticket,
    ) -> Result<Request<WasiBody>, Response<WasiBody>> {
        limits::check_headers(req.headers(), self.max_headers, self.max_header_bytes)?;
        if let Some(answer) = self.cors.as_ref().and_then(|c| c.preflight(&req)) {
            ticket.preflight = true;
            return Err(answer);
        }
        if let Some(verdict) = self
            .rate_limits
            .check(component, route, client.map(|a| a.ip()), req.headers())
            .await
        {
            let rejection = verdict.rejection();
            ticket.rate = Some(verdict);
            if let Some(rejection) = rejection {
                return Err(rejection);
            }
        }
        match self.body_limits.get(component).copied().flatten() {
            Some(limit) => limits::limit_body(req, component, limit),
            None => Ok(req),
        }
    }

    /// Adds the rate-limit, CORS and security headers to a response to the
    /// network.
    pub(crate) fn finish(
        &self,
        ticket: Ticket,
        mut response: Response<WasiBody>,
    ) -> Response<WasiBody> {
        let headers = response.headers_mut();
        if let Some(verdict) = &ticket.rate {
            verdict.apply(headers);
        }
        if let (Some(cors), false) = (&self.cors, ticket.preflight) {
            cors.apply(ticket.origin.as_ref(), headers);
        }
        security_headers::apply(headers);
        response
    }
}
