//! The `spin-*` request headers Spin sets for every component.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

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
        &matched.base,
        &matched,
        Some(CHAINED_CLIENT_ADDR),
    );
}

/// Removes any `spin-*` header the client sent (they are the runtime's to
/// set; a client must not spoof `spin-client-addr`), then sets them.
pub(crate) fn set<T>(
    headers: &mut HeaderMap,
    full_url: &str,
    base: &str,
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
    // Names known at compile time are static: no allocation or parsing.
    let mut put = |name: HeaderName, value: &str| {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
    };
    put(HeaderName::from_static(FULL_URL), full_url);
    put(HeaderName::from_static(PATH_INFO), &matched.path_info);
    put(HeaderName::from_static(MATCHED_ROUTE), &matched.based_route);
    put(
        HeaderName::from_static(COMPONENT_ROUTE),
        &matched.component_route,
    );
    put(
        HeaderName::from_static(RAW_COMPONENT_ROUTE),
        &matched.raw_route,
    );
    put(HeaderName::from_static(BASE_PATH), base);
    if let Some(addr) = client {
        put(HeaderName::from_static(CLIENT_ADDR), &addr.to_string());
    }
    for (name, value) in &matched.params {
        let name = format!("{PATH_MATCH_PREFIX}{}", name.to_ascii_lowercase());
        if let Ok(name) = HeaderName::from_bytes(name.as_bytes()) {
            put(name, value);
        }
    }
}
