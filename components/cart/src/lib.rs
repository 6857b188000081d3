//! `cart`: one shopping cart per customer.
//!
//! | route                                  | what it does                                     |
//! |----------------------------------------|--------------------------------------------------|
//! | `GET /api/carts/me`                    | the cart, priced now                             |
//! | `DELETE /api/carts/me`                 | empties it (204)                                 |
//! | `POST /api/carts/me/items`             | `{productId, quantity}` adds to the product's line |
//! | `PUT /api/carts/me/items/{productId}`  | `{quantity}` sets the line's quantity (0 removes it) |
//! | `DELETE /api/carts/me/items/{productId}` | removes the line                               |
//! | `GET /api/carts/metrics`               | product cache counters, Prometheus text format   |
//!
//! Changes answer the cart as `GET` does. The customer is the subject of
//! the request's bearer token (see [`identity`]). Carts live in Redis and expire
//! `cart_ttl_seconds` after their last change; names and prices always come
//! from the product service (see [`catalog`]), so a cart is in one currency,
//! that of its first line. Errors are RFC 9457 problems: `unauthenticated`
//! and `invalid-token` 401, `malformed-json` 400, `unsupported-media-type` 415,
//! `body-too-large` 413, `invalid-field` 422, `unknown-product` 404,
//! `item-not-in-cart` 404, `currency-mismatch` 409, `quantity-limit` 409,
//! `unavailable` 503 (Redis or the product service is down), and
//! `not-found` 404 / `method-not-allowed` 405 (with `Allow`) elsewhere.
//!
//! Product lookups are cached for display (`product_cache_ttl_seconds`),
//! and the catalogue's `product.updated` / `product.deleted` events
//! refresh or drop a cached copy as soon as they are delivered (see
//! [`invalidation`]). `GET /api/carts/me` with `Cache-Control: no-cache`
//! (what the order service sends at checkout) looks every line's product
//! up now.
//!
//! While the product service is down (failing, slow, or cut off by its
//! circuit breaker), a product the cart has seen before is priced from its
//! last known copy: the answer is 200 with `degraded: true`, the line
//! `stale: true` and a `Warning: 111` header (only a product never seen is
//! 503). The order service refuses to check out a degraded cart.
#![deny(missing_docs)]

mod catalog;
mod config;
mod domain;
mod identity;
mod invalidation;
mod metrics;
mod store;
mod view;

use bv_service::{json, path_info, read_json, Problem, ProblemKind, Reply, Trace};
use bytes::Bytes;
use spin_sdk::http::{FullBody, Method, Request, Response};
use spin_sdk::http_service;

use crate::catalog::{now_ms, Catalog, Lookup, Product};
use crate::config::Config;
use crate::domain::{AddItem, ChangeItem, ProductId, MAX_QUANTITY};
use crate::identity::CustomerId;
use crate::store::{Outcome, Store};

/// Where `spin.toml` mounts this component (`route = "/api/carts/..."`); callers
/// use the same path over service chaining.
const MOUNT: &str = "/api/carts";

/// Bodies are a product id and a quantity: a few bytes.
const MAX_BODY: usize = 4 * 1024;

#[http_service]
async fn handle(req: Request) -> Reply {
    route(req).await.unwrap_or_else(Problem::into_response)
}

/// 405, with `Allow` ([`Problem::method_not_allowed`] sets it).
fn method_not_allowed(allowed: &str) -> Result<Reply, Problem> {
    Ok(Problem::method_not_allowed(allowed).into_response())
}

async fn route(req: Request) -> Result<Reply, Problem> {
    let path = path_info(&req, MOUNT)?;
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    // HEAD is GET without the body (the runtime drops it).
    let method = match req.method() {
        &Method::HEAD => Method::GET,
        m => m.clone(),
    };
    match (segments.as_slice(), method) {
        (["me"], Method::GET) => show(req).await,
        (["me"], Method::DELETE) => clear(req).await,
        (["me"], _) => method_not_allowed("GET, HEAD, DELETE"),
        (["me", "items"], Method::POST) => add(req).await,
        (["me", "items"], _) => method_not_allowed("POST"),
        (["me", "items", id], Method::PUT) => change(req, id).await,
        (["me", "items", id], Method::DELETE) => remove(req, id).await,
        (["me", "items", _], _) => method_not_allowed("PUT, DELETE"),
        (["metrics"], Method::GET) => cache_metrics().await,
        (["metrics"], _) => method_not_allowed("GET, HEAD"),
        _ => Err(Problem::not_found(format!(
            "no cart resource at `/api/carts{path}`"
        ))),
    }
}

/// What every cart request starts with.
struct Carts {
    config: Config,
    store: Store,
}

impl Carts {
    async fn open() -> Result<Self, Problem> {
        let config = Config::load().await?;
        let store = Store::open(&config).await?;
        Ok(Self { config, store })
    }

    /// Product lookups for a request in `trace`.
    async fn catalog(&self, trace: Trace) -> Catalog<'_> {
        Catalog::open(&self.store, &self.config, trace).await
    }

    /// The customer's cart as a 200 answer.
    async fn reply(
        &self,
        catalog: &Catalog<'_>,
        customer: &CustomerId,
        known: &[Product],
    ) -> Result<Reply, Problem> {
        let cart = self.store.load(customer).await?;
        let view = view::render(catalog, customer, cart, known).await?;
        let mut reply = json(200, &view);
        if view.degraded() {
            // Warning 111 (RFC 7234, "revalidation failed"): served,
            // but not current.
            reply.headers_mut().insert(
                "warning",
                spin_sdk::http::HeaderValue::from_static(view::STALE_WARNING),
            );
        }
        Ok(reply)
    }
}

async fn show(req: Request) -> Result<Reply, Problem> {
    let customer = identity::customer(&req).await?;
    let carts = Carts::open().await?;
    let mut catalog = carts.catalog(Trace::of(&req)).await;
    if no_cache(&req) {
        catalog = catalog.revalidating();
    }
    carts.reply(&catalog, &customer, &[]).await
}

/// Whether the request asks for current data, not cached (RFC 9111
/// §5.2.1: `Cache-Control: no-cache` or `max-age=0`): the checkout prices
/// the order this way.
fn no_cache(req: &Request) -> bool {
    req.headers()
        .get_all("cache-control")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|d| d.trim().to_ascii_lowercase())
        .any(|d| d == "no-cache" || d == "max-age=0")
}

async fn clear(req: Request) -> Result<Reply, Problem> {
    let customer = identity::customer(&req).await?;
    let carts = Carts::open().await?;
    carts.store.clear(&customer).await?;
    Ok(Response::builder()
        .status(204)
        .body(FullBody::new(Bytes::new()))
        .expect("a valid status"))
}

async fn add(req: Request) -> Result<Reply, Problem> {
    let customer = identity::customer(&req).await?;
    let trace = Trace::of(&req);
    let body: AddItem = read_json(req, MAX_BODY).await?;
    let carts = Carts::open().await?;
    let catalog = carts.catalog(trace).await;
    let product = known_product(catalog.lookup(&body.product_id).await?, &body.product_id)?;
    let outcome = carts
        .store
        .add(
            &customer,
            &product.id,
            body.quantity,
            product.price.currency(),
            now_ms(),
        )
        .await?;
    refused(outcome, &product)?;
    carts.reply(&catalog, &customer, &[product]).await
}

async fn change(req: Request, id: &str) -> Result<Reply, Problem> {
    let customer = identity::customer(&req).await?;
    let id = line_id(id)?;
    let trace = Trace::of(&req);
    let body: ChangeItem = read_json(req, MAX_BODY).await?;
    let Some(quantity) = body.quantity.positive() else {
        return remove_line(&customer, &id, trace).await;
    };
    let carts = Carts::open().await?;
    let catalog = carts.catalog(trace).await;
    let product = known_product(catalog.lookup(&id).await?, &id)?;
    let outcome = carts
        .store
        .set(
            &customer,
            &product.id,
            quantity,
            product.price.currency(),
            now_ms(),
        )
        .await?;
    refused(outcome, &product)?;
    carts.reply(&catalog, &customer, &[product]).await
}

async fn remove(req: Request, id: &str) -> Result<Reply, Problem> {
    let customer = identity::customer(&req).await?;
    remove_line(&customer, &line_id(id)?, Trace::of(&req)).await
}

/// Removes a line without asking the product service: a product that no
/// longer exists must still be removable.
async fn remove_line(
    customer: &CustomerId,
    id: &ProductId,
    trace: Trace,
) -> Result<Reply, Problem> {
    let carts = Carts::open().await?;
    let outcome = carts.store.remove(customer, id, now_ms()).await?;
    if let Outcome::NotInCart = outcome {
        return Err(not_in_cart(id.as_str()));
    }
    let catalog = carts.catalog(trace).await;
    carts.reply(&catalog, customer, &[]).await
}

async fn cache_metrics() -> Result<Reply, Problem> {
    let carts = Carts::open().await?;
    let (hits, misses) = carts.store.cache_counts().await?;
    Ok(metrics::reply(hits, misses))
}

/// A product id from the path; one that cannot be an id cannot be in the
/// cart either.
fn line_id(raw: &str) -> Result<ProductId, Problem> {
    ProductId::try_from(raw.to_string()).map_err(|_| not_in_cart(raw))
}

fn not_in_cart(id: &str) -> Problem {
    Problem::new(
        404,
        ProblemKind::ItemNotInCart,
        "The cart has no such item",
        format!("the cart has no line for product `{id}`"),
    )
    .with("productId", id)
}

fn known_product(lookup: Lookup, id: &ProductId) -> Result<Product, Problem> {
    match lookup {
        Lookup::Found(product) => Ok(product),
        Lookup::Unknown => Err(Problem::new(
            404,
            ProblemKind::UnknownProduct,
            "No such product",
            format!("the product service has no product `{id}`"),
        )
        .with("productId", id.as_str())),
    }
}

/// The problem for a change the cart refused, if it was.
fn refused(outcome: Outcome, product: &Product) -> Result<(), Problem> {
    let id = product.id.as_str();
    match outcome {
        Outcome::Done => Ok(()),
        Outcome::NotInCart => Err(not_in_cart(id)),
        Outcome::CurrencyMismatch(cart) => {
            let currency = product.price.currency().code();
            Err(Problem::new(
                409,
                ProblemKind::CurrencyMismatch,
                "The cart is in another currency",
                format!("the cart is in {cart}; product `{id}` is priced in {currency}"),
            )
            .with("cartCurrency", cart)
            .with("productCurrency", currency))
        }
        Outcome::QuantityLimit(have) => Err(Problem::new(
            409,
            ProblemKind::QuantityLimit,
            "Too many of one product",
            format!("the cart holds {have} of `{id}`; a line holds at most {MAX_QUANTITY}"),
        )
        .with("inCart", have)
        .with("max", MAX_QUANTITY)),
    }
}
