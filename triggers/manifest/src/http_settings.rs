//! bv's HTTP hardening settings in `[application.tool.bv]` and
//! `[component.<id>.tool.bv]`: request size limits, CORS, rate limits and
//! the trusted proxies.
//!
//! Spin ignores tool tables, so a manifest using them still runs under Spin
//! (without these protections). The serde types here are strict like the rest
//! of the manifest; the rules serde cannot express (an origin's shape,
//! `allow_credentials` with a `*` origin, settings that only make sense for
//! the whole application) are checked by [`validate_app`] and
//! [`validate_component`], which name the offending field.

use serde::de::{self, Deserializer};
use serde::Deserialize;

use crate::{ComponentBvSettings, Template};

/// Default for `max_request_headers`.
pub const DEFAULT_MAX_REQUEST_HEADERS: u32 = 64;
/// Default for `max_request_header_bytes`: 32 KiB of header names and values.
pub const DEFAULT_MAX_REQUEST_HEADER_BYTES: u32 = 32 * 1024;
/// The most header fields the HTTP parser accepts at all; above it the
/// connection gets a bare 431 before bv sees the request, so a larger
/// `max_request_headers` would never apply.
pub const PARSER_MAX_HEADERS: u32 = 100;
/// Default for `rate_limit.timeout_ms`.
pub const DEFAULT_RATE_LIMIT_TIMEOUT_MS: u64 = 100;
/// Default for `websocket.max_message_bytes`: 64 KiB.
pub const DEFAULT_WEBSOCKET_MAX_MESSAGE_BYTES: u64 = 64 * 1024;
/// Default for `websocket.ping_interval_ms`: 30 s.
pub const DEFAULT_WEBSOCKET_PING_INTERVAL_MS: u64 = 30_000;

/// `[component.<id>.tool.bv.websocket]`: bv terminates WebSocket
/// connections on the component's routes (Spin has no WebSocket support) and
/// calls the component for each connect, message and disconnect; components
/// send to connections and groups through `http://bv-websocket.spin.internal`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebSocketSettings {
    /// The largest message a client may send; a larger one closes the
    /// connection with 1009 (message too big).
    #[serde(default, deserialize_with = "some_positive_u64")]
    pub max_message_bytes: Option<u64>,
    /// How often bv pings an idle connection; a connection that answers
    /// nothing for two intervals is closed.
    #[serde(default, deserialize_with = "some_positive_u64")]
    pub ping_interval_ms: Option<u64>,
    /// Redis address (`redis://…` or `rediss://…`, possibly a
    /// `{{ variable }}` template) through which several bv processes reach
    /// each other's connections; without it, sends reach this process's
    /// connections only. Every WebSocket component must name the same one.
    #[serde(default)]
    pub redis: Option<Template>,
}

impl WebSocketSettings {
    /// `max_message_bytes`, else 64 KiB.
    pub fn max_message_bytes(&self) -> u64 {
        self.max_message_bytes
            .unwrap_or(DEFAULT_WEBSOCKET_MAX_MESSAGE_BYTES)
    }

    /// `ping_interval_ms`, else 30 s.
    pub fn ping_interval_ms(&self) -> u64 {
        self.ping_interval_ms
            .unwrap_or(DEFAULT_WEBSOCKET_PING_INTERVAL_MS)
    }
}

/// `[application.tool.bv.cors]`: which browser origins may call the
/// application's routes, and with what.
///
/// With it set, bv answers CORS preflights (`OPTIONS` with `Origin` and
/// `Access-Control-Request-Method`) itself and adds the CORS response headers
/// for allowed origins; a request from any other origin gets no CORS headers,
/// so the browser refuses its answer to the page.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorsSettings {
    /// Exact origins (`https://shop.example.com`, `http://localhost:5173`:
    /// scheme, host and optional port, lowercase, no path), or `"*"` for any.
    pub allowed_origins: Vec<String>,
    /// Methods a cross-origin request may use.
    #[serde(default = "default_methods")]
    pub allowed_methods: Vec<String>,
    /// Request headers a cross-origin request may send (lowercase); `"*"`
    /// allows whatever the preflight asks for.
    #[serde(default = "default_headers")]
    pub allowed_headers: Vec<String>,
    /// Response headers the page's script may read besides the CORS-safelisted
    /// ones (e.g. `etag`, `location`, `retry-after`, `ratelimit`).
    #[serde(default)]
    pub expose_headers: Vec<String>,
    /// How long (seconds) a browser may cache a preflight answer.
    #[serde(default)]
    pub max_age: Option<u64>,
    /// Whether cross-origin requests may carry cookies and HTTP auth
    /// (`Access-Control-Allow-Credentials: true`); not allowed with `"*"`.
    #[serde(default)]
    pub allow_credentials: bool,
}

fn default_methods() -> Vec<String> {
    ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]
        .map(String::from)
        .to_vec()
}

fn default_headers() -> Vec<String> {
    [
        "authorization",
        "content-type",
        "idempotency-key",
        "if-match",
    ]
    .map(String::from)
    .to_vec()
}

/// `rate_limit = { requests, per_seconds, burst, per_account, redis }`: a
/// token bucket per client address and route of the component, kept in
/// Redis so every bv process serving the application shares it.
///
/// The bucket holds up to `burst` requests (default: `requests`) and refills
/// at `requests / per_seconds` per second. With `per_account`, a request
/// carrying a bearer credential (`Authorization: Bearer …`) also takes a
/// token from a bucket of that credential, so one account is limited across
/// all the addresses it uses. The numbers may be `{{ variable }}` templates
/// (strings), so a deployment tunes them with `SPIN_VARIABLE_*` without
/// touching the manifest. When Redis cannot be reached within `timeout_ms`,
/// requests are let through (fail open) and counted.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSettings {
    /// Requests allowed per `per_seconds`, sustained.
    pub requests: Count,
    /// The window the `requests` are counted over, in seconds.
    pub per_seconds: Count,
    /// The most requests a client may make at once after being idle.
    #[serde(default)]
    pub burst: Option<Count>,
    /// Whether a bearer credential also gets a bucket of its own.
    #[serde(default)]
    pub per_account: bool,
    /// Redis address (`redis://…` or `rediss://…`), possibly a
    /// `{{ variable }}` template.
    pub redis: Template,
    /// How long a request waits for Redis before it is let through.
    #[serde(default, deserialize_with = "some_positive_u64")]
    pub timeout_ms: Option<u64>,
}

/// A rate limit's numbers once its templates are rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitNumbers {
    /// Requests allowed per `per_seconds`, sustained.
    pub requests: u32,
    /// The window, in seconds.
    pub per_seconds: u64,
    /// The bucket's capacity: `burst`, else `requests`.
    pub capacity: u32,
}

impl RateLimitSettings {
    /// The Redis timeout: `timeout_ms`, else 100 ms.
    pub fn timeout_ms(&self) -> u64 {
        self.timeout_ms.unwrap_or(DEFAULT_RATE_LIMIT_TIMEOUT_MS)
    }

    /// The numbers, templates rendered with `lookup`; the error names the
    /// field (`requests`, `per_seconds`, `burst`) and the problem.
    pub fn numbers(
        &self,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<RateLimitNumbers, (String, String)> {
        let get = |name: &str, count: &Count, max: u64| {
            count
                .resolve(lookup, max)
                .map_err(|message| (name.to_string(), message))
        };
        let requests = get("requests", &self.requests, u32::MAX as u64)? as u32;
        let per_seconds = get("per_seconds", &self.per_seconds, u64::MAX)?;
        let capacity = match &self.burst {
            Some(burst) => get("burst", burst, u32::MAX as u64)? as u32,
            None => requests,
        };
        Ok(RateLimitNumbers {
            requests,
            per_seconds,
            capacity,
        })
    }
}

/// A positive whole number of a `rate_limit`: a TOML integer, or a string
/// holding one or a `{{ variable }}` template whose value is one (rendered
/// at start-up).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Count {
    /// A number written in the manifest.
    Fixed(u64),
    /// A template, rendered at start-up.
    Template(Template),
}

impl Count {
    /// The number, at most `max`, rendering a template with `lookup`.
    pub fn resolve(
        &self,
        lookup: &dyn Fn(&str) -> Option<String>,
        max: u64,
    ) -> Result<u64, String> {
        let n = match self {
            Count::Fixed(n) => *n,
            Count::Template(t) => {
                let text = t.render(lookup).map_err(|e| e.to_string())?;
                parse_count(text.trim()).map_err(|m| format!("`{t}` is `{text}`, which {m}"))?
            }
        };
        if n > max {
            return Err(format!("must be at most {max}"));
        }
        Ok(n)
    }
}

fn parse_count(text: &str) -> Result<u64, String> {
    match text.parse::<u64>() {
        Ok(0) => Err("must be greater than 0".into()),
        Ok(n) => Ok(n),
        Err(_) => Err("is not a whole number".into()),
    }
}

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = Count;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a positive whole number, or a string with a `{{ variable }}`")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Count, E> {
                match u64::try_from(v) {
                    Ok(v) => self.visit_u64(v),
                    Err(_) => Err(E::custom("must be greater than 0")),
                }
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Count, E> {
                match v {
                    0 => Err(E::custom("must be greater than 0")),
                    n => Ok(Count::Fixed(n)),
                }
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Count, E> {
                let template = Template::parse(v).map_err(E::custom)?;
                if template.is_literal() {
                    parse_count(v.trim())
                        .map(Count::Fixed)
                        .map_err(|m| E::custom(format!("`{v}` {m}")))
                } else {
                    Ok(Count::Template(template))
                }
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// One entry of `trusted_proxies`: an address, or a network in CIDR
/// notation (`10.0.0.0/8`, `fd00::/8`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNetwork {
    addr: std::net::IpAddr,
    prefix: u8,
}

impl IpNetwork {
    /// Parses `10.1.2.3`, `10.0.0.0/8`, `::1` or `fd00::/8`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: std::net::IpAddr = addr
            .parse()
            .map_err(|_| format!("`{s}` is not an IP address or CIDR network"))?;
        let addr = addr.to_canonical();
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(p) if p <= max => p,
                _ => return Err(format!("`{s}`: the prefix length must be 0 to {max}")),
            },
        };
        Ok(Self { addr, prefix })
    }

    /// Parses a comma- or whitespace-separated list (empty entries skipped).
    pub fn parse_list(s: &str) -> Result<Vec<Self>, String> {
        s.split(|c: char| c == ',' || c.is_whitespace())
            .filter(|e| !e.is_empty())
            .map(Self::parse)
            .collect()
    }

    /// Whether `ip` is in the network (IPv4-mapped IPv6 addresses count as
    /// IPv4).
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr;
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - self.prefix as u32).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - self.prefix as u32).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

fn positive_u64<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    match u64::deserialize(d)? {
        0 => Err(de::Error::custom("must be greater than 0")),
        n => Ok(n),
    }
}

fn some_positive_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    positive_u64(d).map(Some)
}

/// A problem found by validation: (dotted field below the settings table,
/// message).
pub(crate) type Problem = (String, String);

/// Checks the application-level settings (`settings` is the raw
/// `[application.tool.bv]`); `undefined_var` reports a template naming an
/// undeclared variable.
pub(crate) fn validate_app(
    settings: &ComponentBvSettings,
    undefined_var: &dyn Fn(&Template) -> Option<String>,
) -> Result<(), Problem> {
    if let Some(n) = settings.max_request_headers {
        if n > PARSER_MAX_HEADERS {
            return Err((
                "max_request_headers".into(),
                format!("must be at most {PARSER_MAX_HEADERS} (the HTTP parser refuses more header fields before bv sees them)"),
            ));
        }
    }
    if let Some(cors) = &settings.cors {
        validate_cors(cors)?;
    }
    if let Some(limit) = &settings.rate_limit {
        validate_rate_limit(limit, undefined_var)?;
    }
    if settings.websocket.is_some() {
        return Err((
            "websocket".into(),
            "`websocket` is set per component; set it in [component.<id>.tool.bv]".into(),
        ));
    }
    for (i, entry) in settings.trusted_proxies.iter().flatten().enumerate() {
        let field = format!("trusted_proxies[{i}]");
        if let Some(message) = undefined_var(entry) {
            return Err((field, message));
        }
        if entry.is_literal() {
            IpNetwork::parse_list(entry.as_str()).map_err(|m| (field, m))?;
        }
    }
    Ok(())
}

/// Checks a component's overrides: the application-wide settings are
/// refused, the rest checked like the application's.
pub(crate) fn validate_component(
    settings: &ComponentBvSettings,
    undefined_var: &dyn Fn(&Template) -> Option<String>,
) -> Result<(), Problem> {
    let app_only = [
        ("cors", settings.cors.is_some()),
        (
            "max_request_headers",
            settings.max_request_headers.is_some(),
        ),
        (
            "max_request_header_bytes",
            settings.max_request_header_bytes.is_some(),
        ),
        ("trusted_proxies", settings.trusted_proxies.is_some()),
    ];
    if let Some((name, _)) = app_only.iter().find(|(_, set)| *set) {
        return Err((
            (*name).into(),
            format!("`{name}` applies to the whole application; set it in [application.tool.bv]"),
        ));
    }
    if let Some(limit) = &settings.rate_limit {
        validate_rate_limit(limit, undefined_var)?;
    }
    if let Some(redis) = settings.websocket.as_ref().and_then(|w| w.redis.as_ref()) {
        validate_redis("websocket.redis", redis, undefined_var)?;
    }
    Ok(())
}

fn validate_redis(
    field: &str,
    redis: &Template,
    undefined_var: &dyn Fn(&Template) -> Option<String>,
) -> Result<(), Problem> {
    if let Some(message) = undefined_var(redis) {
        return Err((field.into(), message));
    }
    if redis.is_literal() {
        let url = redis.as_str();
        if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
            return Err((
                field.into(),
                format!("`{url}` is not a redis:// or rediss:// URL"),
            ));
        }
    }
    Ok(())
}

fn validate_cors(cors: &CorsSettings) -> Result<(), Problem> {
    let field = |name: &str, i: usize| format!("cors.{name}[{i}]");
    if cors.allowed_origins.is_empty() {
        return Err((
            "cors.allowed_origins".into(),
            "must list at least one origin (or \"*\")".into(),
        ));
    }
    for (i, origin) in cors.allowed_origins.iter().enumerate() {
        if origin != "*" {
            check_origin(origin).map_err(|m| (field("allowed_origins", i), m))?;
        }
    }
    if cors.allow_credentials && cors.allowed_origins.iter().any(|o| o == "*") {
        return Err((
            "cors.allow_credentials".into(),
            "cannot be true with the origin \"*\": list the origins allowed to send credentials"
                .into(),
        ));
    }
    for (i, method) in cors.allowed_methods.iter().enumerate() {
        if !is_token(method) {
            return Err((
                field("allowed_methods", i),
                format!("`{method}` is not an HTTP method"),
            ));
        }
    }
    for (name, list) in [
        ("allowed_headers", &cors.allowed_headers),
        ("expose_headers", &cors.expose_headers),
    ] {
        for (i, header) in list.iter().enumerate() {
            let wildcard = name == "allowed_headers" && header == "*";
            if !wildcard && (!is_token(header) || header.to_ascii_lowercase() != *header) {
                return Err((
                    field(name, i),
                    format!("`{header}` is not a lowercase header name"),
                ));
            }
        }
    }
    Ok(())
}

/// An origin as browsers send it: `scheme://host[:port]`, lowercase, no
/// path, query or trailing slash (anything else would never match).
fn check_origin(origin: &str) -> Result<(), String> {
    let bad = |why: &str| {
        Err(format!(
            "`{origin}` is not an origin ({why}); write it as the browser sends it, e.g. `https://shop.example.com` or `http://localhost:5173`"
        ))
    };
    let Some((scheme, rest)) = origin.split_once("://") else {
        return bad("no scheme");
    };
    if scheme.is_empty()
        || !scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
    {
        return bad("invalid scheme");
    }
    if origin.to_ascii_lowercase() != origin {
        return bad("not lowercase");
    }
    let (host, port) = if rest.starts_with('[') {
        let Some(end) = rest.find(']') else {
            return bad("invalid host");
        };
        let (host, tail) = rest.split_at(end + 1);
        match tail.strip_prefix(':') {
            Some(port) => (host, Some(port)),
            None if tail.is_empty() => (host, None),
            None => return bad("a path, query or invalid host"),
        }
    } else {
        match rest.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (rest, None),
        }
    };
    if host.is_empty()
        || !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-.[]:".contains(c))
    {
        return bad("a path, query or invalid host");
    }
    if let Some(port) = port {
        if port.parse::<u16>().is_err() {
            return bad("invalid port");
        }
    }
    Ok(())
}

/// An RFC 9110 token (methods and header names).
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn validate_rate_limit(
    limit: &RateLimitSettings,
    undefined_var: &dyn Fn(&Template) -> Option<String>,
) -> Result<(), Problem> {
    let mut counts = vec![
        ("requests", &limit.requests),
        ("per_seconds", &limit.per_seconds),
    ];
    if let Some(burst) = &limit.burst {
        counts.push(("burst", burst));
    }
    for (name, count) in counts {
        if let Count::Template(t) = count {
            if let Some(message) = undefined_var(t) {
                return Err((format!("rate_limit.{name}"), message));
            }
        }
    }
    validate_redis("rate_limit.redis", &limit.redis, undefined_var)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::{parse, App, ManifestError};

    fn manifest(extra: &str) -> String {
        format!(
            r#"spin_manifest_version = 2
[application]
name = "test-app"

[variables]
limits_redis = {{ default = "redis://127.0.0.1:6379" }}

[[trigger.http]]
route = "/a"
component = "a"

[[trigger.http]]
route = "/b"
component = "b"

[component.a]
source = "a.wasm"

[component.b]
source = "b.wasm"
{extra}"#
        )
    }

    fn ok(extra: &str) -> App {
        let text = manifest(extra);
        parse(&text, Path::new("/app/spin.toml"))
            .unwrap_or_else(|e| panic!("unexpected error: {e}\n{text}"))
    }

    #[track_caller]
    fn assert_err(extra: &str, field: &str, msg: &str) {
        let text = manifest(extra);
        let e: ManifestError = match parse(&text, Path::new("/app/spin.toml")) {
            Ok(_) => panic!("expected an error for\n{text}"),
            Err(e) => e,
        };
        assert_eq!(e.field, field, "field of: {e}");
        assert!(e.message.contains(msg), "message of `{e}` lacks `{msg}`");
    }

    #[test]
    fn defaults_when_nothing_is_set() {
        let app = ok("");
        // As under Spin: no body limit unless one is set.
        assert_eq!(app.bv.max_request_body_bytes, None);
        assert_eq!(app.bv_settings_for("a").max_request_body_bytes, None);
        assert_eq!(app.bv.max_request_headers, 64);
        assert_eq!(app.bv.max_request_header_bytes, 32 * 1024);
        assert_eq!(app.bv.cors, None);
        assert_eq!(app.bv.rate_limit, None);
    }

    #[test]
    fn body_limit_and_rate_limit_are_inherited_and_overridden() {
        let app = ok(r#"
[application.tool.bv]
max_request_body_bytes = 2048
max_request_headers = 20
max_request_header_bytes = 4096
rate_limit = { requests = 10, per_seconds = 60, redis = "{{ limits_redis }}" }
[component.b.tool.bv]
max_request_body_bytes = 10
rate_limit = { requests = 1, per_seconds = 2, burst = 5, redis = "redis://other:6379", timeout_ms = 20 }
"#);
        let a = app.bv_settings_for("a");
        assert_eq!(a.max_request_body_bytes, Some(2048));
        assert_eq!(a.max_request_headers, 20);
        assert_eq!(a.max_request_header_bytes, 4096);
        let limit = a.rate_limit.unwrap();
        let numbers = limit.numbers(&|_| None).unwrap();
        assert_eq!((numbers.requests, numbers.per_seconds), (10, 60));
        assert_eq!((numbers.capacity, limit.timeout_ms()), (10, 100));
        assert!(!limit.per_account);
        assert_eq!(limit.redis.as_str(), "{{ limits_redis }}");

        let b = app.bv_settings_for("b");
        assert_eq!(b.max_request_body_bytes, Some(10));
        assert_eq!(b.max_request_headers, 20, "application-wide");
        let limit = b.rate_limit.unwrap();
        let numbers = limit.numbers(&|_| None).unwrap();
        assert_eq!((numbers.capacity, limit.timeout_ms()), (5, 20));
    }

    #[test]
    fn rate_limit_numbers_may_be_variables() {
        // (`limits_redis` is the fixture's one variable; its value here is
        // whatever the lookup says.)
        let app = ok(r#"
[component.a.tool.bv]
rate_limit = { requests = "{{ limits_redis }}", per_seconds = "60", burst = "{{limits_redis}}", per_account = true, redis = "redis://x" }
"#);
        let limit = app.bv_settings_for("a").rate_limit.unwrap();
        assert!(limit.per_account);
        assert_eq!(limit.per_seconds, super::Count::Fixed(60));
        let numbers = limit.numbers(&|_| Some(" 30 ".to_string())).unwrap();
        assert_eq!((numbers.requests, numbers.capacity), (30, 30));
        assert_eq!(numbers.per_seconds, 60);
        let (field, message) = limit.numbers(&|_| Some("0".to_string())).unwrap_err();
        assert_eq!(field, "requests");
        assert!(message.contains("greater than 0"), "{message}");
        let (field, message) = limit.numbers(&|_| Some("lots".into())).unwrap_err();
        assert_eq!(field, "requests");
        assert!(message.contains("not a whole number"), "{message}");
    }

    #[test]
    fn trusted_proxies_are_addresses_or_networks() {
        use super::IpNetwork;
        let app = ok("[application.tool.bv]\ntrusted_proxies = [\"10.0.0.0/8\", \"::1, 192.168.1.7\", \"{{ limits_redis }}\"]\n");
        assert_eq!(app.bv.trusted_proxies.len(), 3);
        let net = IpNetwork::parse("10.0.0.0/8").unwrap();
        assert!(net.contains("10.200.1.1".parse().unwrap()));
        assert!(net.contains("::ffff:10.1.1.1".parse().unwrap()));
        assert!(!net.contains("11.0.0.1".parse().unwrap()));
        assert!(!net.contains("::1".parse().unwrap()));
        let one = IpNetwork::parse("192.168.1.7").unwrap();
        assert!(one.contains("192.168.1.7".parse().unwrap()));
        assert!(!one.contains("192.168.1.8".parse().unwrap()));
        let v6 = IpNetwork::parse("fd00::/8").unwrap();
        assert!(v6.contains("fd12::1".parse().unwrap()));
        assert!(!v6.contains("fe80::1".parse().unwrap()));
        assert!(IpNetwork::parse("0.0.0.0/0")
            .unwrap()
            .contains("8.8.8.8".parse().unwrap()));
        assert_eq!(
            IpNetwork::parse_list(" a, ").unwrap_err(),
            "`a` is not an IP address or CIDR network"
        );
        assert_eq!(IpNetwork::parse_list("").unwrap(), vec![]);
        assert_err(
            "[application.tool.bv]\ntrusted_proxies = [\"10.0.0.0/33\"]",
            "application.tool.bv.trusted_proxies[0]",
            "prefix length",
        );
        assert_err(
            "[application.tool.bv]\ntrusted_proxies = [\"{{ nope }}\"]",
            "application.tool.bv.trusted_proxies[0]",
            "undefined application variable",
        );
        assert_err(
            "[component.a.tool.bv]\ntrusted_proxies = [\"10.0.0.1\"]",
            "component.a.tool.bv.trusted_proxies",
            "whole application",
        );
    }

    #[test]
    fn cors_defaults_and_full_form() {
        let app =
            ok("[application.tool.bv.cors]\nallowed_origins = [\"https://shop.example.com\"]\n");
        let cors = app.bv.cors.unwrap();
        assert_eq!(
            cors.allowed_methods,
            ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]
        );
        assert!(cors.allowed_headers.contains(&"content-type".to_string()));
        assert!(!cors.allow_credentials);
        assert_eq!(cors.max_age, None);

        let app = ok(r#"
[application.tool.bv.cors]
allowed_origins = ["http://localhost:5173", "https://[::1]:8443"]
allowed_methods = ["GET"]
allowed_headers = ["*"]
expose_headers = ["etag", "ratelimit"]
max_age = 600
allow_credentials = true
"#);
        let cors = app.bv_settings_for("a").cors.unwrap();
        assert_eq!(cors.allowed_origins.len(), 2);
        assert_eq!(cors.max_age, Some(600));
        assert!(cors.allow_credentials);
    }

    #[test]
    fn bad_cors_is_refused_naming_the_field() {
        let cors = |body: &str| format!("[application.tool.bv.cors]\n{body}\n");
        assert_err(
            &cors("allowed_origins = []"),
            "application.tool.bv.cors.allowed_origins",
            "at least one origin",
        );
        for (origin, why) in [
            ("shop.example.com", "no scheme"),
            ("https://shop.example.com/", "path"),
            ("https://Shop.example.com", "lowercase"),
            ("https://shop.example.com:99999", "port"),
        ] {
            assert_err(
                &cors(&format!("allowed_origins = [\"*\", \"{origin}\"]")),
                "application.tool.bv.cors.allowed_origins[1]",
                why,
            );
        }
        assert_err(
            &cors("allowed_origins = [\"*\"]\nallow_credentials = true"),
            "application.tool.bv.cors.allow_credentials",
            "cannot be true",
        );
        assert_err(
            &cors("allowed_origins = [\"*\"]\nallowed_methods = [\"GET POST\"]"),
            "application.tool.bv.cors.allowed_methods[0]",
            "not an HTTP method",
        );
        assert_err(
            &cors("allowed_origins = [\"*\"]\nexpose_headers = [\"ETag\"]"),
            "application.tool.bv.cors.expose_headers[0]",
            "lowercase header name",
        );
        assert_err(
            &cors("allowed_origins = [\"*\"]\nmax_age = -1"),
            "application.tool.bv.cors.max_age",
            "",
        );
        assert_err(
            &cors("allowed_origins = [\"*\"]\norigins = [\"*\"]"),
            "application.tool.bv.cors.origins",
            "unknown field",
        );
    }

    #[test]
    fn bad_limits_are_refused_naming_the_field() {
        assert_err(
            "[application.tool.bv]\nmax_request_headers = 101",
            "application.tool.bv.max_request_headers",
            "at most 100",
        );
        for field in [
            "max_request_body_bytes",
            "max_request_headers",
            "max_request_header_bytes",
        ] {
            assert_err(
                &format!("[application.tool.bv]\n{field} = 0"),
                &format!("application.tool.bv.{field}"),
                "greater than 0",
            );
        }
        for field in ["max_request_headers = 10", "max_request_header_bytes = 10"] {
            let name = field.split(' ').next().unwrap();
            assert_err(
                &format!("[component.a.tool.bv]\n{field}"),
                &format!("component.a.tool.bv.{name}"),
                "whole application",
            );
        }
        assert_err(
            "[component.a.tool.bv.cors]\nallowed_origins = [\"*\"]",
            "component.a.tool.bv.cors",
            "whole application",
        );
    }

    #[test]
    fn bad_rate_limits_are_refused_naming_the_field() {
        let limit = |body: &str| format!("[component.a.tool.bv]\nrate_limit = {{ {body} }}");
        assert_err(
            &limit("requests = 0, per_seconds = 1, redis = \"redis://x\""),
            "component.a.tool.bv.rate_limit.requests",
            "greater than 0",
        );
        assert_err(
            &limit("requests = 1, per_seconds = 0, redis = \"redis://x\""),
            "component.a.tool.bv.rate_limit.per_seconds",
            "greater than 0",
        );
        assert_err(
            &limit("requests = 1, per_seconds = 1, burst = 0, redis = \"redis://x\""),
            "component.a.tool.bv.rate_limit.burst",
            "greater than 0",
        );
        assert_err(
            &limit("requests = \"ten\", per_seconds = 1, redis = \"redis://x\""),
            "component.a.tool.bv.rate_limit.requests",
            "not a whole number",
        );
        assert_err(
            &limit("requests = \"{{ nope }}\", per_seconds = 1, redis = \"redis://x\""),
            "component.a.tool.bv.rate_limit.requests",
            "undefined application variable",
        );
        assert_err(
            &limit("requests = 1, per_seconds = 1"),
            "component.a.tool.bv.rate_limit",
            "missing field `redis`",
        );
        assert_err(
            &limit("requests = 1, per_seconds = 1, redis = \"http://x\""),
            "component.a.tool.bv.rate_limit.redis",
            "not a redis:// or rediss:// URL",
        );
        assert_err(
            &limit("requests = 1, per_seconds = 1, redis = \"{{ nope }}\""),
            "component.a.tool.bv.rate_limit.redis",
            "undefined application variable",
        );
        assert_err(
            &limit("requests = 1, per_seconds = 1, redis = \"redis://x\", window = 3"),
            "component.a.tool.bv.rate_limit.window",
            "unknown field",
        );
        assert_err(
            "[application.tool.bv]\nrate_limit = { requests = 1, per_seconds = 1, redis = \"{{ nope }}\" }",
            "application.tool.bv.rate_limit.redis",
            "undefined application variable",
        );
    }
}
