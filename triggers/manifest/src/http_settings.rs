//! bv's HTTP hardening settings in `[application.tool.bv]` and
//! `[component.<id>.tool.bv]`: request size limits, CORS and rate limits.
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

/// `rate_limit = { requests, per_seconds, burst, redis }`: a token bucket per
/// client IP and route of the component, kept in Redis so every bv process
/// serving the application shares it.
///
/// The bucket holds up to `burst` requests (default: `requests`) and refills
/// at `requests / per_seconds` per second. When Redis cannot be reached
/// within `timeout_ms`, requests are let through (fail open) and counted.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSettings {
    /// Requests allowed per `per_seconds`, sustained.
    #[serde(deserialize_with = "positive_u32")]
    pub requests: u32,
    /// The window the `requests` are counted over, in seconds.
    #[serde(deserialize_with = "positive_u64")]
    pub per_seconds: u64,
    /// The most requests a client may make at once after being idle.
    #[serde(default, deserialize_with = "some_positive_u32")]
    pub burst: Option<u32>,
    /// Redis address (`redis://…` or `rediss://…`), possibly a
    /// `{{ variable }}` template.
    pub redis: Template,
    /// How long a request waits for Redis before it is let through.
    #[serde(default, deserialize_with = "some_positive_u64")]
    pub timeout_ms: Option<u64>,
}

impl RateLimitSettings {
    /// The bucket's capacity: `burst`, else `requests`.
    pub fn capacity(&self) -> u32 {
        self.burst.unwrap_or(self.requests)
    }

    /// The Redis timeout: `timeout_ms`, else 100 ms.
    pub fn timeout_ms(&self) -> u64 {
        self.timeout_ms.unwrap_or(DEFAULT_RATE_LIMIT_TIMEOUT_MS)
    }
}

fn positive_u32<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    match u32::deserialize(d)? {
        0 => Err(de::Error::custom("must be greater than 0")),
        n => Ok(n),
    }
}

fn positive_u64<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    match u64::deserialize(d)? {
        0 => Err(de::Error::custom("must be greater than 0")),
        n => Ok(n),
    }
}

fn some_positive_u32<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    positive_u32(d).map(Some)
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
    let field = "rate_limit.redis".to_string();
    if let Some(message) = undefined_var(&limit.redis) {
        return Err((field, message));
    }
    if limit.redis.is_literal() {
        let url = limit.redis.as_str();
        if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
            return Err((field, format!("`{url}` is not a redis:// or rediss:// URL")));
        }
    }
    Ok(())
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
        assert_eq!((limit.requests, limit.per_seconds), (10, 60));
        assert_eq!((limit.capacity(), limit.timeout_ms()), (10, 100));
        assert_eq!(limit.redis.as_str(), "{{ limits_redis }}");

        let b = app.bv_settings_for("b");
        assert_eq!(b.max_request_body_bytes, Some(10));
        assert_eq!(b.max_request_headers, 20, "application-wide");
        let limit = b.rate_limit.unwrap();
        assert_eq!((limit.capacity(), limit.timeout_ms()), (5, 20));
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
