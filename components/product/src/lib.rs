//! `product`: the catalogue service.
//!
//! | request | who | answer |
//! |---|---|---|
//! | `GET /api/products?limit&cursor&q&category&currency&min_price&max_price&ids` | anyone | 200 `{items, next, nextCursor}` |
//! | `POST /api/products` `{sku, name, description?, category, price}` | admin | 201, `Location`, `ETag` |
//! | `GET /api/products/{id}` | anyone | 200, `ETag` |
//! | `PUT /api/products/{id}` (`If-Match` required) | admin | 200, new `ETag` |
//! | `DELETE /api/products/{id}` (`If-Match` optional) | admin | 204 |
//!
//! GETs carry `ETag` and `Cache-Control` and answer 304 to a matching
//! `If-None-Match`; `HEAD` answers what `GET` would, without the body. Errors are `application/problem+json` with a stable
//! `type` (`urn:bitvelocity:problem:<kind>`); a refused request changes
//! nothing. Every change publishes its event
//! (`com.bitvelocity.product.{created,updated,deleted}.v1`) through the
//! outbox, in the change's transaction.
//!
//! The database is the variable `db_url`; the component creates its
//! tables (and, if missing, the event log) on first use, with a demo
//! catalogue.
#![deny(missing_docs)]

mod caching;
mod domain;
mod events;
mod list_sql;
mod listing;
mod migrations;
mod store;

use bv_service::{json, path_info, read_json, Problem, ProblemKind, Reply, Trace};
use serde_json::json;
use spin_sdk::http::{Method, Request};
use spin_sdk::http_service;

use caching::{conditional, etag_of, header, with_headers};
use domain::{NewProduct, ProductId, Replacement};
use listing::{Cursor, ListQuery};
use store::Store;

/// Where `spin.toml` mounts this component (`route = "/api/products/..."`); callers
/// use the same path over service chaining.
const MOUNT: &str = "/api/products";

/// The largest request body accepted.
const MAX_BODY: usize = 64 * 1024;

#[http_service]
async fn handle(req: Request) -> Reply {
    serve(req).await.unwrap_or_else(Problem::into_response)
}

async fn serve(req: Request) -> Result<Reply, Problem> {
    let path = path_info(&req, MOUNT)?;
    // HEAD is GET without the body (the runtime drops it).
    let method = match req.method() {
        &Method::HEAD => Method::GET,
        m => m.clone(),
    };
    if path.is_empty() {
        return match method {
            Method::GET => list(req).await,
            Method::POST => create(req).await,
            _ => method_not_allowed("GET, HEAD, POST"),
        };
    }
    let segment = path
        .strip_prefix('/')
        .filter(|s| !s.contains('/'))
        .ok_or_else(|| Problem::not_found(format!("no resource {path} here")))?
        .to_string();
    match method {
        Method::GET => get(req, &segment).await,
        Method::PUT => replace(req, &segment).await,
        Method::DELETE => delete(req, &segment).await,
        _ => method_not_allowed("GET, HEAD, PUT, DELETE"),
    }
}

/// 405 with `Allow` ([`Problem::method_not_allowed`] sets it).
fn method_not_allowed(allowed: &str) -> Result<Reply, Problem> {
    Ok(Problem::method_not_allowed(allowed).into_response())
}

/// The one place that decides who may change the catalogue: an
/// administrator's bearer token (401 without a valid token, 403 for a
/// customer's).
async fn require_admin(req: &Request) -> Result<(), Problem> {
    bv_auth::require_admin(req.headers()).await.map(drop)
}

/// A product id from the path: one that is not a UUID names no product.
fn product_id(segment: &str) -> Result<ProductId, Problem> {
    ProductId::parse(segment).ok_or_else(|| Problem::not_found(format!("no product {segment}")))
}

/// The collection's path as the client sees it (`/api/products`, behind
/// the application's base path if it has one). Not `spin-component-route`:
/// over service chaining it is empty.
fn collection(req: &Request) -> String {
    let base = header(req, "spin-base-path").unwrap_or("/");
    format!("{}{MOUNT}", base.trim_end_matches('/'))
}

async fn list(req: Request) -> Result<Reply, Problem> {
    let query = ListQuery::parse(req.uri().query().unwrap_or(""))?;
    let mut items = Store::open().await?.list(&query).await?;
    let mut next = None;
    if items.len() as i64 > query.limit {
        items.truncate(query.limit as usize);
        next = items.last().map(|p| Cursor(p.seq));
    }
    let link = next.map(|c| format!("{}?{}", collection(&req), query.next_query(c)));
    let body = json!({
        "items": items,
        "next": link,
        "nextCursor": next.map(Cursor::encode),
    });
    let bytes = serde_json::to_vec(&body).expect("serializable");
    let reply = conditional(&req, &etag_of(&bytes), caching::LIST, bytes);
    Ok(match link {
        Some(link) => with_headers(reply, &[("link", &format!("<{link}>; rel=\"next\""))]),
        None => reply,
    })
}

async fn get(req: Request, segment: &str) -> Result<Reply, Problem> {
    let id = product_id(segment)?;
    let product = Store::open().await?.get(id).await?;
    let body = serde_json::to_vec(&product).expect("serializable");
    Ok(conditional(&req, &product.etag(), caching::ITEM, body))
}

async fn create(req: Request) -> Result<Reply, Problem> {
    require_admin(&req).await?;
    let collection = collection(&req);
    let trace = Trace::of(&req);
    let new: NewProduct = read_json(req, MAX_BODY).await?;
    let product = Store::open().await?.create(new, &trace).await?;
    let location = format!("{collection}/{}", product.id);
    Ok(with_headers(
        json(201, &product),
        &[("location", &location), ("etag", &product.etag())],
    ))
}

async fn replace(req: Request, segment: &str) -> Result<Reply, Problem> {
    require_admin(&req).await?;
    let id = product_id(segment)?;
    let if_match = header(&req, "if-match").map(str::to_string).ok_or_else(|| {
        Problem::new(
            428,
            ProblemKind::PreconditionRequired,
            "If-Match is required",
            "send If-Match with the product's current ETag, so that no one else's change is overwritten",
        )
    })?;
    let trace = Trace::of(&req);
    let replacement: Replacement = read_json(req, MAX_BODY).await?;
    let product = Store::open()
        .await?
        .replace(id, &if_match, replacement, &trace)
        .await?;
    Ok(with_headers(
        json(200, &product),
        &[("etag", &product.etag())],
    ))
}

async fn delete(req: Request, segment: &str) -> Result<Reply, Problem> {
    require_admin(&req).await?;
    let id = product_id(segment)?;
    let if_match = header(&req, "if-match").map(str::to_string);
    Store::open()
        .await?
        .delete(id, if_match.as_deref(), &Trace::of(&req))
        .await?;
    Ok(spin_sdk::http::Response::builder()
        .status(204)
        .body(spin_sdk::http::FullBody::new(bytes::Bytes::new()))
        .expect("a valid response"))
}
