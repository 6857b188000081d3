//! Spin's HTTP route rules, implemented for bv.
//!
//! A Spin application declares `[[trigger.http]]` entries whose `route` is
//! either a path pattern (`/hello`, `/users/:id`, `/static/...`) or
//! `{ private = true }` (reachable only through service chaining). bv must
//! route requests exactly the way `spin up` would, otherwise an app that works
//! under Spin silently breaks under bv. This crate therefore owns both halves
//! of that contract:
//!
//! * [`RouteSpec`] parses and validates a route as written in `spin.toml`, so
//!   that malformed routes are rejected when the manifest is loaded rather than
//!   when the first request arrives;
//! * [`Router`] resolves a request path to the most specific route and yields a
//!   [`RouteMatch`] whose fields are exactly the values Spin puts in the
//!   `spin-matched-route`, `spin-component-route`, `spin-raw-component-route`,
//!   `spin-path-info`, `spin-base-path` and `spin-path-match-*` request headers.
//!
//! The crate is deliberately free of any HTTP or wasm dependency so that the
//! manifest loader and the HTTP trigger can both use it.

use std::cmp::Ordering;
use std::fmt;

/// The wildcard suffix Spin uses for "this path and everything below it".
const WILDCARD: &str = "...";
/// Spin also accepts routefinder's `*` as a trailing wildcard; keep accepting it
/// so manifests written for Spin keep working.
const STAR_WILDCARD: &str = "*";

/// A route as written in a `[[trigger.http]]` entry.
///
/// Kept as the raw string (rather than pre-parsed segments) because several
/// Spin headers must echo the route exactly as the user wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RouteSpec {
    /// `route = "/path"`: the raw route as written (already validated).
    Route(String),
    /// `route = { private = true }`: not reachable over HTTP, only through
    /// service chaining.
    Private,
}

/// Why a route, a base path or a set of routes was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// The route string does not follow Spin's route syntax.
    #[error("invalid route `{route}`: {reason}")]
    Invalid {
        /// The route as written.
        route: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The application base path (`[application.trigger.http] base`) is malformed.
    #[error("invalid base path `{base}`: {reason}")]
    InvalidBase {
        /// The base as written.
        base: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Two routes would match exactly the same set of paths, so one of them
    /// could never be reached.
    #[error("duplicate route `{route}`: another trigger already uses an equivalent route")]
    Duplicate {
        /// The second occurrence of the route, as written.
        route: String,
    },
}

/// One parsed path segment of a route.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    /// Must equal the request segment byte for byte (no percent-decoding).
    Literal(String),
    /// `:name`: matches any non-empty segment and captures it.
    Param(String),
    /// Trailing `...` (or `*`): matches the rest of the path, including nothing.
    Wildcard,
}

impl Segment {
    /// Precedence rank used to pick the most specific route: literal beats
    /// parameter beats wildcard. `END_RANK` (an exact route ending here) is
    /// above everything so `/a` beats `/a/...` for the path `/a`.
    fn rank(&self) -> u8 {
        match self {
            Segment::Wildcard => 0,
            Segment::Param(_) => 1,
            Segment::Literal(_) => 2,
        }
    }
}

const END_RANK: u8 = 3;

fn invalid(route: &str, reason: impl Into<String>) -> RouteError {
    RouteError::Invalid {
        route: route.to_string(),
        reason: reason.into(),
    }
}

/// Whether `name` is acceptable as a `:param` name. Spin exposes captures as
/// `spin-path-match-<name>` headers, so the name must be header-safe.
fn valid_param_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Splits a route into segments, enforcing Spin's syntax.
fn parse_segments(route: &str) -> Result<Vec<Segment>, RouteError> {
    let Some(body) = route.strip_prefix('/') else {
        return Err(invalid(route, "routes must start with '/'"));
    };
    if body.is_empty() {
        return Ok(Vec::new());
    }
    // Spin strips a single trailing slash from routes, so `/a/` means `/a`.
    let body = body.strip_suffix('/').unwrap_or(body);
    if body.is_empty() {
        return Err(invalid(route, "empty path segment ('//')"));
    }
    if body.contains(['?', '#']) {
        return Err(invalid(
            route,
            "routes must not contain a query string or fragment ('?' or '#')",
        ));
    }
    let parts: Vec<&str> = body.split('/').collect();
    let mut segments = Vec::with_capacity(parts.len());
    let mut names: Vec<&str> = Vec::new();
    for (i, part) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        let segment = if part.is_empty() {
            return Err(invalid(route, "empty path segment ('//')"));
        } else if *part == WILDCARD || *part == STAR_WILDCARD {
            if !last {
                return Err(invalid(
                    route,
                    format!("'{part}' is only allowed as the final segment"),
                ));
            }
            Segment::Wildcard
        } else if let Some(name) = part.strip_prefix(':') {
            if !valid_param_name(name) {
                return Err(invalid(
                    route,
                    format!(
                        "invalid parameter name '{name}': use ASCII letters, digits, '_' or '-', starting with a letter or '_'"
                    ),
                ));
            }
            if names.contains(&name) {
                return Err(invalid(route, format!("parameter ':{name}' is used twice")));
            }
            names.push(name);
            Segment::Param(name.to_string())
        } else {
            Segment::Literal(part.to_string())
        };
        segments.push(segment);
    }
    Ok(segments)
}

/// Renders segments in a parameter-name-independent form, used to detect
/// routes that can never both be reached.
fn canonical(segments: &[Segment]) -> String {
    let mut out = String::new();
    for s in segments {
        out.push('/');
        match s {
            Segment::Literal(l) => out.push_str(l),
            Segment::Param(_) => out.push(':'),
            Segment::Wildcard => out.push_str(WILDCARD),
        }
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

impl RouteSpec {
    /// Parses and validates a route string as written in `spin.toml`.
    ///
    /// Rules: it must start with '/'; `...` (or `*`) is allowed only as the
    /// final segment; `:name` segments need a valid, unique name; there must be
    /// no empty segments (`//`), except that the root `/` is fine and a single
    /// trailing slash is tolerated as Spin does (`/a/` routes like `/a`).
    pub fn parse(raw: &str) -> Result<RouteSpec, RouteError> {
        parse_segments(raw)?;
        Ok(RouteSpec::Route(raw.to_string()))
    }

    /// The raw route string, or `None` for a private route.
    pub fn as_route(&self) -> Option<&str> {
        match self {
            RouteSpec::Route(r) => Some(r),
            RouteSpec::Private => None,
        }
    }

    /// True for `{ private = true }`.
    pub fn is_private(&self) -> bool {
        matches!(self, RouteSpec::Private)
    }

    /// A form of the route in which parameter names are erased (`/a/:x` and
    /// `/a/:y` both give `/a/:`) and `*` is spelled `...`. Two routes with the
    /// same canonical form match exactly the same paths, which is what the
    /// manifest loader uses to report duplicates against the right trigger.
    /// `None` for private routes (they never conflict).
    pub fn canonical(&self) -> Option<String> {
        match self {
            RouteSpec::Route(r) => parse_segments(r).ok().map(|s| canonical(&s)),
            RouteSpec::Private => None,
        }
    }
}

impl fmt::Display for RouteSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RouteSpec::Route(r) => f.write_str(r),
            RouteSpec::Private => f.write_str("{ private = true }"),
        }
    }
}

impl std::str::FromStr for RouteSpec {
    type Err = RouteError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RouteSpec::parse(s)
    }
}

impl<'de> serde::Deserialize<'de> for RouteSpec {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct RouteVisitor;

        impl<'de> serde::de::Visitor<'de> for RouteVisitor {
            type Value = RouteSpec;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a route string such as \"/hello/...\" or { private = true }")
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RouteSpec, E> {
                RouteSpec::parse(v).map_err(E::custom)
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<RouteSpec, A::Error> {
                use serde::de::Error;
                let mut private = None;
                while let Some(key) = map.next_key::<String>()? {
                    if key != "private" {
                        return Err(A::Error::unknown_field(&key, &["private"]));
                    }
                    if private.is_some() {
                        return Err(A::Error::duplicate_field("private"));
                    }
                    private = Some(map.next_value::<bool>()?);
                }
                match private {
                    Some(true) => Ok(RouteSpec::Private),
                    Some(false) => Err(A::Error::custom(
                        "route must be a string pattern or `{ private = true }`; `{ private = false }` is not allowed",
                    )),
                    None => Err(A::Error::missing_field("private")),
                }
            }
        }

        deserializer.deserialize_any(RouteVisitor)
    }
}

/// Normalises an application base path: validated like a literal route, with
/// a trailing slash dropped (`"/"` becomes `""`) so it can be prefixed to
/// routes by plain concatenation, as Spin does.
pub fn normalize_base(base: &str) -> Result<String, RouteError> {
    let bad = |reason: &str| RouteError::InvalidBase {
        base: base.to_string(),
        reason: reason.to_string(),
    };
    let segments = parse_segments(base).map_err(|e| match e {
        RouteError::Invalid { reason, .. } => bad(&reason),
        other => other,
    })?;
    if segments.iter().any(|s| !matches!(s, Segment::Literal(_))) {
        return Err(bad("the base path must not contain ':params' or wildcards"));
    }
    Ok(canonical(&segments).trim_end_matches('/').to_string())
}

/// Combines a normalised base and a raw route the way Spin does: the route's
/// single trailing slash is dropped, and an empty result means the root.
fn based_route(base: &str, raw: &str) -> String {
    let route = if raw.len() > 1 {
        raw.strip_suffix('/').unwrap_or(raw)
    } else {
        ""
    };
    let based = format!("{base}{route}");
    if based.is_empty() {
        "/".to_string()
    } else {
        based
    }
}

struct Entry<T> {
    raw: String,
    based: String,
    segments: Vec<Segment>,
    target: T,
}

/// Resolves request paths to targets using Spin's precedence rules.
///
/// Built once per application; routing is a linear scan, which is plenty for
/// the handful of routes an app has and keeps the precedence logic obvious.
pub struct Router<T> {
    base: String,
    entries: Vec<Entry<T>>,
}

impl<T: fmt::Debug> fmt::Debug for Router<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.entries.iter().map(|e| (&e.based, &e.target)))
            .finish()
    }
}

/// The result of routing a path: which target, and everything Spin derives
/// from the match for the component's request headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteMatch<'a, T> {
    /// The matched target (typically a component id).
    pub target: &'a T,
    /// The route exactly as written in the manifest, e.g. `/hello/...`.
    /// Feeds `spin-raw-component-route`.
    pub raw_route: &'a str,
    /// The base joined with the route (Spin drops a trailing slash of each),
    /// e.g. `/base/hello/...`. Feeds `spin-matched-route`.
    pub based_route: &'a str,
    /// `based_route` without a trailing `/...`, e.g. `/base/hello` (and `""`
    /// for `/...` under the root base, as in Spin). Feeds
    /// `spin-component-route`.
    pub component_route: &'a str,
    /// For wildcard routes, the part of the request path after the matched
    /// prefix, keeping any trailing slash (`/a/...` on `/a` gives `""`, on
    /// `/a/` gives `/`, on `/a/x/y` gives `/x/y`); `""` for exact routes.
    /// Feeds `spin-path-info`.
    pub path_info: String,
    /// Captured `:name` segments in route order, raw (not percent-decoded).
    /// Each feeds a `spin-path-match-<name>` header.
    pub params: Vec<(String, String)>,
    /// The application base as configured (`"/"` by default).
    /// Feeds `spin-base-path`.
    pub base: &'a str,
}

impl<'a, T> RouteMatch<'a, T> {
    /// The match Spin gives a service-chaining request
    /// (`http://<component>.spin.internal/<path>`): the component's own
    /// routes are not consulted; the request is taken as matched by the
    /// catch-all `/...` under the root base, so the whole `path` is the path
    /// info, the component route is empty and there are no parameters.
    /// (Spin: `RouteMatch::synthetic` in `crates/routes/src/lib.rs`, used by
    /// `crates/trigger-http/src/outbound_http.rs`.)
    pub fn synthetic(target: &'a T, path: &str) -> Self {
        Self {
            target,
            raw_route: "/...",
            based_route: "/...",
            component_route: "",
            path_info: path.to_string(),
            params: Vec::new(),
            base: "/",
        }
    }
}

/// A successful match of one route against a path, before choosing the best.
struct Candidate {
    params: Vec<(String, String)>,
    path_info: String,
    /// Precedence key: per-segment ranks, compared lexicographically.
    key: Vec<u8>,
}

/// Matches `segments` against `path`; returns captures, path info and the
/// precedence key on success.
fn match_segments(segments: &[Segment], path: &str) -> Option<Candidate> {
    let mut rest = path;
    let mut params = Vec::new();
    let mut key = Vec::with_capacity(segments.len() + 1);
    for segment in segments {
        key.push(segment.rank());
        if let Segment::Wildcard = segment {
            // `rest` is "" or starts with '/': exactly Spin's path info.
            return Some(Candidate {
                params,
                path_info: rest.to_string(),
                key,
            });
        }
        let after_slash = rest.strip_prefix('/')?;
        let (part, next) = match after_slash.find('/') {
            Some(i) => after_slash.split_at(i),
            None => (after_slash, ""),
        };
        match segment {
            Segment::Literal(lit) if lit == part => {}
            Segment::Param(name) if !part.is_empty() => {
                params.push((name.clone(), part.to_string()));
            }
            _ => return None,
        }
        rest = next;
    }
    // Exact route: the whole path must be consumed, tolerating one trailing
    // slash as Spin's router does.
    if rest.is_empty() || rest == "/" {
        key.push(END_RANK);
        Some(Candidate {
            params,
            path_info: String::new(),
            key,
        })
    } else {
        None
    }
}

impl<T> Router<T> {
    /// Builds a router for an application whose HTTP base is `base`
    /// (`[application.trigger.http] base`, `"/"` by default).
    ///
    /// Private routes are accepted and dropped: they are not routable. Routes
    /// that would match exactly the same paths (after erasing parameter names)
    /// are rejected with [`RouteError::Duplicate`] because one of them could
    /// never be reached.
    pub fn build(
        base: &str,
        routes: impl IntoIterator<Item = (RouteSpec, T)>,
    ) -> Result<Router<T>, RouteError> {
        let norm_base = normalize_base(base)?;
        let base_segments = parse_segments(&format!("{norm_base}/"))?;
        let mut entries: Vec<Entry<T>> = Vec::new();
        let mut seen: Vec<String> = Vec::new();
        for (spec, target) in routes {
            let RouteSpec::Route(raw) = spec else {
                continue;
            };
            // Validate the raw route itself: `RouteSpec::Route` can be built
            // directly, bypassing `RouteSpec::parse`.
            let mut segments = base_segments.clone();
            segments.extend(parse_segments(&raw)?);
            let based = based_route(&norm_base, &raw);
            let key = canonical(&segments);
            if seen.contains(&key) {
                return Err(RouteError::Duplicate { route: raw });
            }
            seen.push(key);
            entries.push(Entry {
                raw,
                based,
                segments,
                target,
            });
        }
        Ok(Router {
            base: base.to_string(),
            entries,
        })
    }

    /// Finds the most specific route for `path` (the raw request path, without
    /// the query string). Segments are compared left to right: a literal beats
    /// a `:param`, which beats the wildcard; an exact route beats a wildcard
    /// that also matches.
    pub fn route(&self, path: &str) -> Option<RouteMatch<'_, T>> {
        if !path.starts_with('/') {
            return None;
        }
        let mut best: Option<(&Entry<T>, Candidate)> = None;
        for entry in &self.entries {
            let Some(candidate) = match_segments(&entry.segments, path) else {
                continue;
            };
            let better = match &best {
                None => true,
                Some((_, b)) => candidate.key.cmp(&b.key) == Ordering::Greater,
            };
            if better {
                best = Some((entry, candidate));
            }
        }
        let (
            entry,
            Candidate {
                params, path_info, ..
            },
        ) = best?;
        // Borrowed from the route: only the path info and the parameters
        // are the request's own.
        Some(RouteMatch {
            target: &entry.target,
            raw_route: &entry.raw,
            based_route: &entry.based,
            component_route: entry.based.strip_suffix("/...").unwrap_or(&entry.based),
            path_info,
            params,
            base: &self.base,
        })
    }

    /// The routable routes in insertion order, as `(based route, target)`;
    /// meant for printing the app's endpoints at startup.
    pub fn routes(&self) -> impl Iterator<Item = (&str, &T)> {
        self.entries.iter().map(|e| (e.based.as_str(), &e.target))
    }

    /// Number of routable (non-private) routes.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no route is routable (e.g. all are private).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests;
