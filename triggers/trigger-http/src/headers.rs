//! The `spin-*` request headers Spin sets for every component.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::LazyLock;

use bv_routes::RouteMatch;
use http::{HeaderMap, HeaderName, HeaderValue};

/// Full URL of the request as the client addressed it.
pub const FULL_URL: &str = "spin-full-url";
/// The path after the matched route (for `/...` routes).
pub const PATH_INFO: &str = "spin-path-info";
/// The matched route, with the application base.
pub const MATCHED_ROUTE: &str = "spin-matched-route";
/// The component's route, without a trailing `/...`.
pub const COMPONENT_ROUTE: &str = "spin-component-route";
/// The component's route as written in the manifest.
pub const RAW_COMPONENT_ROUTE: &str = "spin-raw-component-route";
/// The application base path.
pub const BASE_PATH: &str = "spin-base-path";
/// The client's socket address.
pub const CLIENT_ADDR: &str = "spin-client-addr";
/// Prefix of one header per `:name` route parameter.
pub const PATH_MATCH_PREFIX: &str = "spin-path-match-";

/// The client address Spin gives a service-chaining request
/// (`CHAINED_CLIENT_ADDR` in Spin's `crates/trigger-http/src/outbound_http.rs`).
pub const CHAINED_CLIENT_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0);

// Names of the headers set on every request: static, so setting one neither
// parses nor allocates.
static FULL_URL_NAME: HeaderName = HeaderName::from_static(FULL_URL);
static PATH_INFO_NAME: HeaderName = HeaderName::from_static(PATH_INFO);
static MATCHED_ROUTE_NAME: HeaderName = HeaderName::from_static(MATCHED_ROUTE);
static COMPONENT_ROUTE_NAME: HeaderName = HeaderName::from_static(COMPONENT_ROUTE);
static RAW_COMPONENT_ROUTE_NAME: HeaderName = HeaderName::from_static(RAW_COMPONENT_ROUTE);
static BASE_PATH_NAME: HeaderName = HeaderName::from_static(BASE_PATH);
static CLIENT_ADDR_NAME: HeaderName = HeaderName::from_static(CLIENT_ADDR);

/// The `spin-*` values a route fixes (matched route, component route, raw
/// route, base path), made once per route rather than per request. A value
/// that is not a valid header value is left out, as before.
pub(crate) struct RouteHeaders {
    matched: Option<HeaderValue>,
    component: Option<HeaderValue>,
    raw: Option<HeaderValue>,
    base: Option<HeaderValue>,
}

impl RouteHeaders {
    /// The values of `matched`'s route.
    pub(crate) fn of<T>(matched: &RouteMatch<'_, T>) -> Self {
        let value = |s: &str| HeaderValue::from_str(s).ok();
        Self {
            matched: value(matched.based_route),
            component: value(matched.component_route),
            raw: value(matched.raw_route),
            base: value(matched.base),
        }
    }
}

/// Every chained request is matched by Spin's synthetic catch-all.
static CHAINED: LazyLock<RouteHeaders> =
    LazyLock::new(|| RouteHeaders::of(&RouteMatch::synthetic(&(), "/")));

/// Sets the headers of a request a guest sent to
/// `http://<component>.spin.internal`, exactly as Spin 4.1 does:
///
/// - Spin does not match the callee's routes; it takes the request as
///   matched by the catch-all `/...` ([`RouteMatch::synthetic`]), so
///   `spin-matched-route` and `spin-raw-component-route` are `/...`,
///   `spin-component-route` is empty, `spin-path-info` is the whole path and
///   no `spin-path-match-*` header is set, whatever routes the callee has
///   (public or private);
/// - `spin-base-path` is `/` (Spin always sets `/`);
/// - `spin-client-addr` is `0.0.0.0:0`;
/// - Spin drops the `host` header before it intercepts the request, and
///   builds `spin-full-url` from the `host` header, else `localhost`: so it
///   is `http://localhost<path and query>`.
///
/// Spin's code: `crates/factor-outbound-http/src/wasi.rs` (`prepare_request`
/// removes `host`), `crates/trigger-http/src/outbound_http.rs` (the
/// interceptor: synthetic match, client address),
/// `crates/trigger-http/src/headers.rs` (`compute_default_headers`) and
/// `crates/routes/src/lib.rs` (`RouteMatch::synthetic`).
pub(crate) fn set_chained(headers: &mut HeaderMap, uri: &http::Uri) {
    headers.remove(http::header::HOST);
    let path_and_query = uri.path_and_query().map_or("/", |pq| pq.as_str());
    let matched = RouteMatch::synthetic(&(), uri.path());
    set(
        headers,
        &format!("http://localhost{path_and_query}"),
        &CHAINED,
        &matched,
        Some(CHAINED_CLIENT_ADDR),
    );
}

/// Removes any `spin-*` header the client sent (they are the runtime's to
/// set; a client must not spoof `spin-client-addr`), then sets them: the
/// route's fixed values from `route`, the request's own from `matched`.
pub(crate) fn set<T>(
    headers: &mut HeaderMap,
    full_url: &str,
    route: &RouteHeaders,
    matched: &RouteMatch<'_, T>,
    client: Option<SocketAddr>,
) {
    let spoofed: Vec<HeaderName> = headers
        .keys()
        .filter(|name| name.as_str().starts_with("spin-"))
        .cloned()
        .collect();
    for name in spoofed {
        headers.remove(name);
    }
    headers.reserve(7 + matched.params.len());
    let mut put = |name: &HeaderName, value: Option<HeaderValue>| {
        if let Some(value) = value {
            headers.insert(name.clone(), value);
        }
    };
    let value = |s: &str| HeaderValue::from_str(s).ok();
    put(&FULL_URL_NAME, value(full_url));
    put(&PATH_INFO_NAME, value(&matched.path_info));
    put(&MATCHED_ROUTE_NAME, route.matched.clone());
    put(&COMPONENT_ROUTE_NAME, route.component.clone());
    put(&RAW_COMPONENT_ROUTE_NAME, route.raw.clone());
    put(&BASE_PATH_NAME, route.base.clone());
    if let Some(addr) = client {
        put(&CLIENT_ADDR_NAME, value(&addr.to_string()));
    }
    for (name, param) in &matched.params {
        let name = format!("{PATH_MATCH_PREFIX}{}", name.to_ascii_lowercase());
        if let Ok(name) = HeaderName::from_bytes(name.as_bytes()) {
            put(&name, value(param));
        }
    }
}
