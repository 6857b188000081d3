//! Products as the product service knows them: names and prices are only
//! ever read from there (over Spin service chaining), never taken from the
//! client. Lookups are cached briefly in the key-value store; hits and
//! misses are counted in Redis for `/api/carts/metrics` and reported as
//! metric lines for bv's `/metrics`.
//!
//! The products a request needs and the cache cannot answer are asked for
//! in one call (`GET /api/products?ids=…`), so a checkout prices every line
//! of its cart with one request to the product service.
//!
//! Calls to the product service are guarded (`bv-resilience`): each
//! attempt has a deadline (`product_timeout_ms`), a failed one is retried
//! once (a GET is idempotent), and a circuit breaker shared through the
//! cart's Redis stops calling a product service that keeps failing. When
//! the product service cannot answer, the last copy of the product the
//! cache holds (kept without expiry: only its freshness runs out) is
//! served instead, marked stale, so the cart keeps working; only a product
//! never seen before is then 503.

use std::time::Duration;

use bv_resilience::spin::{self, RedisStore};
use bv_resilience::{BreakerConfig, Outcome, Policy, Verdict};
use bv_service::{Currency, Money, Problem, Trace};
use bytes::Bytes;
use futures::future::join_all;
use serde::{Deserialize, Serialize};
use spin_sdk::http::body::IncomingBodyExt;
use spin_sdk::key_value;

use crate::config::Config;
use crate::domain::ProductId;
use crate::store::Store;

/// The product service, reached in-process through service chaining.
const PRODUCT_SERVICE: &str = "http://product.spin.internal/api/products";

/// How many times `product_timeout_ms` a revalidating lookup waits for
/// each attempt (two attempts stay within the order service's 10 s for
/// the whole cart call).
const REVALIDATE_PATIENCE: u32 = 3;

/// What the cart needs of a product.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Product {
    /// Its id.
    pub id: ProductId,
    /// Its stock-keeping unit.
    pub sku: String,
    /// Its display name.
    pub name: String,
    /// Its current unit price.
    pub price: Money,
    /// Set when this is the last copy known, served because the product
    /// service could not be asked (never stored).
    #[serde(skip)]
    pub stale: bool,
}

/// The outcome of one lookup.
#[derive(Debug, Clone)]
pub enum Lookup {
    /// The product exists.
    Found(Product),
    /// The product service does not know it (never created, or deleted).
    Unknown,
}

/// A cached lookup: the product and when it was fetched, so its age can be
/// checked (the key-value interface has no expiry of its own).
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Cached {
    fetched_at_ms: u64,
    product: Product,
}

/// The product service's answer, read leniently: only the fields the cart
/// uses, whatever else it adds. Its `id` is the product's canonical id (the
/// one asked for may be spelled differently), under which the cart keeps
/// the line.
#[derive(Clone, Deserialize)]
struct Wire {
    id: ProductId,
    sku: String,
    name: String,
    price: WirePrice,
}

#[derive(Clone, Deserialize)]
struct WirePrice {
    amount: i64,
    currency: String,
}

/// Product lookups for one request.
pub struct Catalog<'a> {
    store: &'a Store,
    /// `None` when the key-value store cannot be opened: every lookup is
    /// then a miss, which is slower but still right.
    cache: Option<key_value::Store>,
    ttl_ms: u64,
    /// The request's trace, forwarded to the product service.
    trace: Trace,
    /// Each attempt's deadline.
    timeout: Duration,
    /// The product service's breaker.
    breaker: BreakerConfig,
    /// Set when the request asked for current data (`Cache-Control:
    /// no-cache`): every product is asked for, the cache only stands in
    /// when the product service cannot answer.
    revalidate: bool,
    /// Where the breaker is kept: the cart's Redis.
    breakers: spin::Store,
}

impl<'a> Catalog<'a> {
    /// Opens the default key-value store as the cache; lookups made for
    /// the request in `trace` join it.
    pub async fn open(store: &'a Store, config: &Config, trace: Trace) -> Self {
        let cache = match key_value::Store::open_default().await {
            Ok(cache) => Some(cache),
            Err(e) => {
                eprintln!("cart: product cache unavailable, looking up every product: {e:?}");
                None
            }
        };
        Self {
            store,
            cache,
            ttl_ms: config.product_cache_ttl_seconds.saturating_mul(1000),
            trace,
            timeout: config.product_timeout,
            breaker: BreakerConfig {
                open_for: config.breaker_open,
                probe_lease: config.product_timeout + Duration::from_secs(1),
                ..BreakerConfig::DEFAULT
            },
            breakers: spin::store(Some(RedisStore::new(
                config.redis_url.clone(),
                config.key_prefix.clone(),
            ))),
            revalidate: false,
        }
    }

    /// Lookups that ask the product service every time (the request said
    /// `Cache-Control: no-cache`, as a checkout does).
    pub fn revalidating(self) -> Self {
        Self {
            revalidate: true,
            ..self
        }
    }

    /// Looks up one product.
    pub async fn lookup(&self, id: &ProductId) -> Result<Lookup, Problem> {
        let mut found = self.lookup_many(std::slice::from_ref(id)).await?;
        Ok(found.pop().expect("one lookup per id"))
    }

    /// Looks up several products at once (cache reads and service calls run
    /// concurrently); one answer per id, in order.
    pub async fn lookup_many(&self, ids: &[ProductId]) -> Result<Vec<Lookup>, Problem> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let now = now_ms();
        let cached = join_all(ids.iter().map(|id| self.cached(id))).await;
        let fresh = |c: &Cached| {
            !self.revalidate && c.fetched_at_ms <= now && now - c.fetched_at_ms < self.ttl_ms
        };
        let hits = cached.iter().flatten().filter(|c| fresh(c)).count();
        self.store.count_cache(hits, ids.len() - hits).await;
        // The same counts for bv's /metrics
        // (`bv_app_product_cache_lookups_total{result}`).
        for (result, n) in [("hit", hits), ("miss", ids.len() - hits)] {
            if n > 0 {
                bv_service::telemetry::counter(
                    "product_cache_lookups",
                    &[("result", result)],
                    n as u64,
                );
            }
        }
        let mut answers: Vec<Option<Lookup>> = Vec::with_capacity(ids.len());
        let mut missing: Vec<(usize, &ProductId, Option<Product>)> = Vec::new();
        for (i, (id, cached)) in ids.iter().zip(cached).enumerate() {
            match cached {
                Some(c) if fresh(&c) => answers.push(Some(Lookup::Found(c.product))),
                last => {
                    answers.push(None);
                    missing.push((i, id, last.map(|c| c.product)));
                }
            }
        }
        // One call for every product the cache could not answer, however
        // many: a checkout of several lines asks the product service once.
        let fetched = if missing.len() > 1 && missing.iter().all(|(_, id, _)| is_uuid(id)) {
            self.fetch_many(&missing, now).await?
        } else {
            // The product service names its products by UUID; an id of
            // another shape is asked for alone (and is not found).
            join_all(
                missing
                    .iter()
                    .map(|(_, id, last)| self.fetch(id, now, last.clone())),
            )
            .await
            .into_iter()
            .collect::<Result<_, _>>()?
        };
        for ((i, _, _), lookup) in missing.iter().zip(fetched) {
            answers[*i] = Some(lookup);
        }
        Ok(answers
            .into_iter()
            .map(|a| a.expect("every id answered"))
            .collect())
    }

    fn cache_key(&self, id: &ProductId) -> String {
        cache_key(self.store.prefix(), id.as_str())
    }

    /// The cached copy of a product, fresh or not (the key-value store
    /// keeps it until it is replaced).
    async fn cached(&self, id: &ProductId) -> Option<Cached> {
        let bytes = self.cache.as_ref()?.get(self.cache_key(id)).await.ok()??;
        serde_json::from_slice(&bytes).ok()
    }

    /// One GET of the product service (`path` after its collection): its
    /// status and body.
    async fn get(&self, path: &str) -> Result<(u16, Bytes), String> {
        let request = self
            .trace
            .forward(spin_sdk::http::Request::<()>::get(format!(
                "{PRODUCT_SERVICE}{path}"
            )))
            .body(spin_sdk::http::EmptyBody::new())
            .map_err(|e| format!("GET {path}: {e}"))?;
        let response = spin_sdk::http::send(request)
            .await
            .map_err(|e| format!("GET {path}: {e:?}"))?;
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .bytes()
            .await
            .map_err(|e| format!("reading {path}: {e:?}"))?;
        Ok((status, body))
    }

    /// Calls the product service for `path` through its breaker: the
    /// answer, or why there is none (the caller falls back to the last
    /// copies known).
    async fn guarded_get(&self, path: &str) -> Result<(u16, Bytes), String> {
        let guard = spin::guard("product", self.breaker, &self.breakers);
        // A checkout's lookups (all of a cart's lines at once, under a
        // checkout rush) may wait longer for an answer than a display's:
        // without one the checkout is refused.
        let timeout = if self.revalidate {
            self.timeout * REVALIDATE_PATIENCE
        } else {
            self.timeout
        };
        let policy = Policy {
            attempts: 2,
            ..Policy::idempotent(timeout)
        };
        let called = guard.call(&policy, |_| self.get(path), classify).await;
        match called.outcome {
            Outcome::Answered(answer) => answer,
            Outcome::TimedOut => Err(format!(
                "GET {path}: no answer within {} ms ({} attempts)",
                timeout.as_millis(),
                called.attempts
            )),
            Outcome::Open { .. } => Err(format!("GET {path}: circuit open")),
        }
    }

    /// Asks the product service for one product (guarded), and caches what
    /// it knows. Unknown products are not cached: one created a moment
    /// later must be found at once. When the service cannot answer, `last`
    /// (the last copy known) is served, marked stale.
    async fn fetch(
        &self,
        id: &ProductId,
        now: u64,
        last: Option<Product>,
    ) -> Result<Lookup, Problem> {
        let path = format!("/{id}");
        let (status, body) = match self.guarded_get(&path).await {
            Ok(answer) => answer,
            Err(e) => return fall_back(id, last, e),
        };
        if status == 404 || status == 410 {
            return Ok(Lookup::Unknown);
        }
        if status != 200 {
            let detail = format!(
                "GET {path} answered {status}: {}",
                String::from_utf8_lossy(&body)
            );
            if status >= 500 || status == 429 {
                return fall_back(id, last, detail);
            }
            return Err(unavailable(id, detail));
        }
        let wire: Wire = serde_json::from_slice(&body)
            .map_err(|e| unavailable(id, format!("product {id} does not parse: {e}")))?;
        let product = wire.product().map_err(|e| unavailable(id, e))?;
        self.cache(id, now, &product).await;
        Ok(Lookup::Found(product))
    }

    /// [`Catalog::fetch`] for several products in one call
    /// (`GET /api/products?ids=…`): one answer per entry of `missing`, in
    /// order. Each product the service cannot answer for falls back to its
    /// own last copy.
    async fn fetch_many(
        &self,
        missing: &[(usize, &ProductId, Option<Product>)],
        now: u64,
    ) -> Result<Vec<Lookup>, Problem> {
        let ids: Vec<String> = missing.iter().map(|(_, id, _)| id.to_string()).collect();
        let path = format!("?ids={}", ids.join(","));
        let all_fall_back = |detail: String| {
            missing
                .iter()
                .map(|(_, id, last)| fall_back(id, last.clone(), detail.clone()))
                .collect::<Result<Vec<_>, _>>()
        };
        let (status, body) = match self.guarded_get(&path).await {
            Ok(answer) => answer,
            Err(e) => return all_fall_back(e),
        };
        let first = missing[0].1;
        if status != 200 {
            let detail = format!(
                "GET {path} answered {status}: {}",
                String::from_utf8_lossy(&body)
            );
            if status >= 500 || status == 429 {
                return all_fall_back(detail);
            }
            return Err(unavailable(first, detail));
        }
        #[derive(Deserialize)]
        struct Page {
            items: Vec<Wire>,
        }
        let page: Page = serde_json::from_slice(&body)
            .map_err(|e| unavailable(first, format!("GET {path} does not parse: {e}")))?;
        let mut answers = Vec::with_capacity(missing.len());
        for (_, id, _) in missing {
            // The service answers with every live product asked for; one
            // it leaves out it does not know.
            let Some(wire) = page.items.iter().find(|w| w.id == **id) else {
                answers.push(Lookup::Unknown);
                continue;
            };
            let product = wire.clone().product().map_err(|e| unavailable(id, e))?;
            self.cache(id, now, &product).await;
            answers.push(Lookup::Found(product));
        }
        Ok(answers)
    }

    /// Keeps `product` as the cached copy of `id`, fetched at `now`.
    async fn cache(&self, id: &ProductId, now: u64, product: &Product) {
        if let Some(cache) = &self.cache {
            let entry = Cached {
                fetched_at_ms: now,
                product: product.clone(),
            };
            let bytes = serde_json::to_vec(&entry).expect("serializable");
            if let Err(e) = cache.set(self.cache_key(id), bytes).await {
                eprintln!("cart: caching product {id}: {e:?}");
            }
        }
    }
}

/// The last copy known of `id`, marked stale, when the product service
/// could not answer (`detail` says why); 503 when there is none.
fn fall_back(id: &ProductId, last: Option<Product>, detail: String) -> Result<Lookup, Problem> {
    eprintln!("cart: product service: {detail}");
    match last {
        Some(product) => {
            bv_service::telemetry::counter("product_stale_served", &[], 1);
            Ok(Lookup::Found(Product {
                stale: true,
                ..product
            }))
        }
        None => Err(Problem::unavailable(format!(
            "the product service failed looking up `{id}`"
        ))),
    }
}

/// Whether `id` is spelled as a UUID (the product service's ids, which its
/// `ids` parameter takes; anything else it refuses).
fn is_uuid(id: &ProductId) -> bool {
    let id = id.as_str().as_bytes();
    id.len() == 36
        && id.iter().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => *b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

/// The product service answered something the cart cannot use.
fn unavailable(id: &ProductId, detail: String) -> Problem {
    eprintln!("cart: product service: {detail}");
    Problem::unavailable(format!("the product service failed looking up `{id}`"))
}

impl Wire {
    /// The product, its price checked.
    fn product(self) -> Result<Product, String> {
        let id = self.id;
        let currency = Currency::parse(&self.price.currency).ok_or_else(|| {
            format!(
                "product {id} is priced in unknown currency `{}`",
                self.price.currency
            )
        })?;
        let price = Money::new(self.price.amount, currency)
            .map_err(|e| format!("product {id}: price: {e}"))?;
        Ok(Product {
            id,
            sku: self.sku,
            name: self.name,
            price,
            stale: false,
        })
    }
}

/// A failed call, a 5xx or a 429 is the product service failing; any other
/// answer (a product, a 404) is it working.
fn classify(result: &Result<(u16, Bytes), String>) -> Verdict {
    match result {
        Ok((status, _)) if *status < 500 && *status != 429 => Verdict::Success,
        _ => Verdict::Failure,
    }
}

/// The key-value key of product `id`'s cached copy.
pub fn cache_key(prefix: &str, id: &str) -> String {
    format!("{prefix}cart:product:{id}")
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> ProductId {
        ProductId::try_from(s.to_string()).unwrap()
    }

    #[test]
    fn only_uuid_spellings_are_asked_for_together() {
        assert!(is_uuid(&id("5eed0000-0000-4000-8000-000000000001")));
        assert!(is_uuid(&id("5EED0000-0000-4000-8000-00000000000A")));
        assert!(!is_uuid(&id("no-such-product")));
        assert!(!is_uuid(&id("5eed0000000040008000000000000001")));
        assert!(!is_uuid(&id("5eed0000-0000-4000-8000-00000000000g")));
    }
}
