//! Products as the product service knows them: names and prices are only
//! ever read from there (over Spin service chaining), never taken from the
//! client. Lookups are cached briefly in the key-value store; hits and
//! misses are counted in Redis for `/api/carts/metrics`.

use bv_service::{Currency, Money, Problem};
use futures::future::join_all;
use serde::{Deserialize, Serialize};
use spin_sdk::http::body::IncomingBodyExt;
use spin_sdk::key_value;

use crate::domain::ProductId;
use crate::store::Store;

/// The product service, reached in-process through service chaining.
const PRODUCT_SERVICE: &str = "http://product.spin.internal/api/products";

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
#[derive(Deserialize)]
struct Wire {
    id: ProductId,
    sku: String,
    name: String,
    price: WirePrice,
}

#[derive(Deserialize)]
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
}

impl<'a> Catalog<'a> {
    /// Opens the default key-value store as the cache.
    pub async fn open(store: &'a Store, ttl_seconds: u64) -> Self {
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
            ttl_ms: ttl_seconds.saturating_mul(1000),
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
        let cached = join_all(ids.iter().map(|id| self.cached(id, now))).await;
        let hits = cached.iter().filter(|c| c.is_some()).count();
        self.store.count_cache(hits, ids.len() - hits).await;
        join_all(ids.iter().zip(cached).map(|(id, cached)| async move {
            match cached {
                Some(product) => Ok(Lookup::Found(product)),
                None => self.fetch(id, now).await,
            }
        }))
        .await
        .into_iter()
        .collect()
    }

    fn cache_key(&self, id: &ProductId) -> String {
        format!("{}cart:product:{id}", self.store.prefix())
    }

    /// The cached product when there is one younger than the TTL.
    async fn cached(&self, id: &ProductId, now: u64) -> Option<Product> {
        let bytes = self.cache.as_ref()?.get(self.cache_key(id)).await.ok()??;
        let cached: Cached = serde_json::from_slice(&bytes).ok()?;
        let fresh = cached.fetched_at_ms <= now && now - cached.fetched_at_ms < self.ttl_ms;
        fresh.then_some(cached.product)
    }

    /// Asks the product service, and caches what it knows. Unknown products
    /// are not cached: one created a moment later must be found at once.
    async fn fetch(&self, id: &ProductId, now: u64) -> Result<Lookup, Problem> {
        let unavailable = |detail: String| {
            eprintln!("cart: product service: {detail}");
            Problem::unavailable(format!("the product service failed looking up `{id}`"))
        };
        let response = spin_sdk::http::get(format!("{PRODUCT_SERVICE}/{id}"))
            .await
            .map_err(|e| unavailable(format!("GET {id}: {e:?}")))?;
        let status = response.status().as_u16();
        if status == 404 || status == 410 {
            return Ok(Lookup::Unknown);
        }
        let body = response
            .into_body()
            .bytes()
            .await
            .map_err(|e| unavailable(format!("reading {id}: {e:?}")))?;
        if status != 200 {
            return Err(unavailable(format!(
                "GET {id} answered {status}: {}",
                String::from_utf8_lossy(&body)
            )));
        }
        let wire: Wire = serde_json::from_slice(&body)
            .map_err(|e| unavailable(format!("product {id} does not parse: {e}")))?;
        let currency = Currency::parse(&wire.price.currency).ok_or_else(|| {
            unavailable(format!(
                "product {id} is priced in unknown currency `{}`",
                wire.price.currency
            ))
        })?;
        let price = Money::new(wire.price.amount, currency)
            .map_err(|e| unavailable(format!("product {id}: price: {e}")))?;
        let product = Product {
            id: wire.id,
            sku: wire.sku,
            name: wire.name,
            price,
        };
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
        Ok(Lookup::Found(product))
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
