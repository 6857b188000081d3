//! Reading requests, writing JSON answers.

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;
use spin_sdk::http::body::IncomingBodyExt;
use spin_sdk::http::{FullBody, Request, Response};

use crate::{Problem, ProblemKind};

/// The response type of every component.
pub type Reply = Response<FullBody<Bytes>>;

/// A JSON answer.
pub fn json(status: u16, body: &impl Serialize) -> Reply {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(FullBody::new(Bytes::from(
            serde_json::to_vec(body).expect("serializable"),
        )))
        .expect("a valid status")
}

/// The path inside the component, without a trailing `/`: `""` for the
/// mount point itself, `/<id>` for `/api/products/<id>` when `mount` is
/// `/api/products`. A request from the network and a request over service
/// chaining to the same resource get the same path.
///
/// `mount` is where the manifest mounts the component: its route without
/// the trailing `/...` (`route = "/api/products/..."` → `/api/products`).
/// Callers address the component at the same path over service chaining
/// (`http://product.spin.internal/api/products/<id>`).
///
/// Why not `spin-path-info` alone: Spin matches a request from the network
/// against the component's route (`spin-path-info: /<id>`), but takes a
/// chained request as matched by the catch-all `/...`, so the callee sees
/// `spin-path-info` = the whole path and an empty `spin-component-route`.
/// What both hosts give in both cases is the request's full path (also the
/// path of `spin-full-url`) and `spin-base-path`: the path inside the
/// component is the full path with the base and the mount removed. A path
/// outside the mount (possible only over service chaining) is 404.
pub fn path_info(req: &Request, mount: &str) -> Result<String, Problem> {
    path_within(req.uri().path(), req.headers(), mount)
}

/// [`path_info`] from the request's path and headers.
pub fn path_within(path: &str, headers: &http::HeaderMap, mount: &str) -> Result<String, Problem> {
    let base = headers
        .get("spin-base-path")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("/")
        .trim_end_matches('/');
    let mount = mount.trim_end_matches('/');
    strip_segments(path, base)
        .and_then(|path| strip_segments(path, mount))
        .map(|inner| inner.trim_end_matches('/').to_string())
        .ok_or_else(|| {
            Problem::not_found(format!(
                "no resource at `{path}` here (mounted on `{mount}`)"
            ))
        })
}

/// `path` without `prefix` when `prefix` is a whole number of its leading
/// segments (`""` is every path's prefix).
fn strip_segments<'a>(path: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = path.strip_prefix(prefix)?;
    (rest.is_empty() || rest.starts_with('/')).then_some(rest)
}

/// Reads the body as JSON into `T`: 415 without a JSON content type, 413
/// past `max_bytes`, 400 when it is not JSON, 422 naming the field when it
/// does not fit `T` (wrong type, missing field, unknown field where `T`
/// denies them, or a value `T`'s parsing refuses).
pub async fn read_json<T: DeserializeOwned>(req: Request, max_bytes: usize) -> Result<T, Problem> {
    let content_type = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let media = content_type.split(';').next().unwrap_or("").trim();
    if media != "application/json" && !media.ends_with("+json") {
        return Err(Problem::new(
            415,
            ProblemKind::UnsupportedMediaType,
            "The body must be JSON",
            format!("content-type `{content_type}`: send application/json"),
        ));
    }
    if let Some(length) = req
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
    {
        if length > max_bytes {
            return Err(too_large(max_bytes));
        }
    }
    let bytes = req.into_body().bytes().await.map_err(|e| {
        Problem::new(
            400,
            ProblemKind::UnreadableBody,
            "The body could not be read",
            format!("{e:?}"),
        )
    })?;
    if bytes.len() > max_bytes {
        return Err(too_large(max_bytes));
    }
    parse_json(&bytes)
}

/// Parses JSON bytes into `T` with [`read_json`]'s problems.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Problem> {
    // Syntax first, so that a broken document is 400, not 422.
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| Problem::malformed(e.to_string()))?;
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let message = e.into_inner().to_string();
        // A missing field is reported at its parent object: name the
        // field itself.
        let missing = message
            .strip_prefix("missing field `")
            .and_then(|rest| rest.split('`').next());
        let field = match (missing, path.as_str()) {
            (Some(name), ".") => name.to_string(),
            (Some(name), parent) => format!("{parent}.{name}"),
            (None, ".") => "$".to_string(),
            (None, _) => path,
        };
        Problem::invalid_field(&field, message)
    })
}

fn too_large(max: usize) -> Problem {
    Problem::new(
        413,
        ProblemKind::BodyTooLarge,
        "The body is too large",
        format!("at most {max} bytes"),
    )
}

/// A path segment with its `%XX` escapes decoded; `None` for a broken
/// escape or bytes that are not UTF-8.
pub fn percent_decode(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Money;

    #[test]
    fn decodes_path_segments() {
        assert_eq!(percent_decode("p-1").as_deref(), Some("p-1"));
        assert_eq!(percent_decode("a%2Fb%20c").as_deref(), Some("a/b c"));
        assert_eq!(percent_decode("a%40b").as_deref(), Some("a@b"));
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%4"), None);
        assert_eq!(percent_decode("a%4"), None);
        assert_eq!(percent_decode("%FF"), None);
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Item {
        sku: String,
        price: Money,
    }

    fn field(json: &str) -> (u16, String) {
        let p = parse_json::<Item>(json.as_bytes()).unwrap_err();
        (
            p.status,
            p.extensions
                .get("field")
                .map_or(String::new(), |f| f.as_str().unwrap().to_string()),
        )
    }

    /// The headers Spin gives a request from the network matched by
    /// `route = "<mount>/..."` (`crates/trigger-http/src/headers.rs`).
    fn direct(mount: &str, path: &str) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        let info = path.strip_prefix(mount).unwrap();
        h.insert("spin-path-info", info.parse().unwrap());
        h.insert("spin-component-route", mount.parse().unwrap());
        h.insert(
            "spin-matched-route",
            format!("{mount}/...").parse().unwrap(),
        );
        h.insert("spin-base-path", "/".parse().unwrap());
        h.insert("spin-client-addr", "127.0.0.1:50000".parse().unwrap());
        h
    }

    /// The headers Spin gives a request to `http://<component>.spin.internal<path>`:
    /// the synthetic catch-all match (`crates/trigger-http/src/outbound_http.rs`).
    fn chained(path: &str) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        h.insert("spin-path-info", path.parse().unwrap());
        h.insert("spin-component-route", "".parse().unwrap());
        h.insert("spin-matched-route", "/...".parse().unwrap());
        h.insert("spin-raw-component-route", "/...".parse().unwrap());
        h.insert("spin-base-path", "/".parse().unwrap());
        h.insert("spin-client-addr", "0.0.0.0:0".parse().unwrap());
        h
    }

    /// Every call the cart and the order saga (and its sweeper) make over
    /// service chaining: (mount, full path, path inside the callee).
    const CHAINED_CALLS: &[(&str, &str, &str)] = &[
        // cart → product: a product's price.
        (
            "/api/products",
            "/api/products/0b7c6f1e-8a36-4a8c-9a53-2f1d3c4b5a69",
            "/0b7c6f1e-8a36-4a8c-9a53-2f1d3c4b5a69",
        ),
        // order → cart: read the customer's cart, clear it after the order.
        ("/api/carts", "/api/carts/me", "/me"),
        // order → inventory: reserve, release (also the sweeper), commit.
        (
            "/api/inventory",
            "/api/inventory/reservations",
            "/reservations",
        ),
        (
            "/api/inventory",
            "/api/inventory/reservations/ord-1/release",
            "/reservations/ord-1/release",
        ),
        (
            "/api/inventory",
            "/api/inventory/reservations/ord-1/commit",
            "/reservations/ord-1/commit",
        ),
        // order → payment: authorize, capture, refund (also the sweeper).
        ("/api/payments", "/api/payments/authorize", "/authorize"),
        (
            "/api/payments",
            "/api/payments/ord-1/capture",
            "/ord-1/capture",
        ),
        (
            "/api/payments",
            "/api/payments/ord-1/refund",
            "/ord-1/refund",
        ),
    ];

    #[test]
    fn chained_and_direct_requests_reach_the_same_path() {
        for &(mount, path, inner) in CHAINED_CALLS {
            assert_eq!(
                path_within(path, &direct(mount, path), mount).unwrap(),
                inner,
                "from the network: {path}"
            );
            assert_eq!(
                path_within(path, &chained(path), mount).unwrap(),
                inner,
                "over service chaining: {path}"
            );
        }
    }

    #[test]
    fn the_mount_point_and_trailing_slashes() {
        let mount = "/api/orders";
        for path in ["/api/orders", "/api/orders/"] {
            assert_eq!(path_within(path, &direct(mount, path), mount).unwrap(), "");
            assert_eq!(path_within(path, &chained(path), mount).unwrap(), "");
        }
        let path = "/api/orders/o1/";
        assert_eq!(path_within(path, &chained(path), mount).unwrap(), "/o1");
        // No headers at all: the path as it is.
        assert_eq!(
            path_within("/api/orders/o1", &http::HeaderMap::new(), mount).unwrap(),
            "/o1"
        );
    }

    #[test]
    fn an_application_base_is_removed_first() {
        let mut h = direct("/shop/api/carts", "/shop/api/carts/me");
        h.insert("spin-base-path", "/shop".parse().unwrap());
        assert_eq!(
            path_within("/shop/api/carts/me", &h, "/api/carts").unwrap(),
            "/me"
        );
        let mut h = http::HeaderMap::new();
        h.insert("spin-base-path", "/shop/".parse().unwrap());
        assert_eq!(
            path_within("/shop/api/carts", &h, "/api/carts").unwrap(),
            ""
        );
    }

    #[test]
    fn paths_outside_the_mount_are_404() {
        let mount = "/api/products";
        for path in [
            "/",
            "/x",
            "/api/productsx/1",
            "/api/product",
            "/api/orders/1",
        ] {
            let p = path_within(path, &chained(path), mount).unwrap_err();
            assert_eq!((p.status, p.kind), (404, ProblemKind::NotFound), "{path}");
        }
    }

    #[test]
    fn problems_name_the_field() {
        assert_eq!(field("{"), (400, String::new()));
        assert_eq!(
            field(r#"{"price":{"amount":1,"currency":"EUR"}}"#),
            (422, "sku".into())
        );
        assert_eq!(
            field(r#"{"sku":"A","price":{"currency":"EUR"}}"#),
            (422, "price.amount".into())
        );
        assert_eq!(
            field(r#"{"sku":"A","price":{"amount":-1,"currency":"EUR"}}"#),
            (422, "price.amount".into())
        );
        assert_eq!(
            field(r#"{"sku":1,"price":{"amount":1,"currency":"EUR"}}"#),
            (422, "sku".into())
        );
        assert_eq!(
            field(r#"{"sku":"A","colour":"red","price":{"amount":1,"currency":"EUR"}}"#),
            (422, "colour".into())
        );
        assert_eq!(field("[]"), (422, "$".into()));
    }
}
