//! The component's settings, from Spin variables.

use std::time::Duration;

use bv_service::Problem;
use spin_sdk::variables::{self, Error};

/// A week: how long an untouched cart lives unless `cart_ttl_seconds` says
/// otherwise.
const DEFAULT_CART_TTL_SECONDS: u64 = 7 * 24 * 60 * 60;

/// How long a product looked up in the product service is reused unless
/// `product_cache_ttl_seconds` says otherwise: short, so a price change
/// shows within half a minute.
const DEFAULT_PRODUCT_CACHE_TTL_SECONDS: u64 = 30;

/// Each attempt's deadline on the product service unless
/// `product_timeout_ms` says otherwise: a product lookup is one indexed
/// read.
const DEFAULT_PRODUCT_TIMEOUT_MS: u64 = 1_000;

/// How long the product service's open circuit breaker refuses calls
/// before a probe, unless `breaker_open_ms` says otherwise.
const DEFAULT_BREAKER_OPEN_MS: u64 = 10_000;

/// What one request needs to know.
#[derive(Debug, Clone)]
pub struct Config {
    /// `redis_url` (required): where carts live.
    pub redis_url: String,
    /// `cart_ttl_seconds`: a cart expires this long after its last change.
    pub cart_ttl_seconds: u64,
    /// `cart_key_prefix` (default empty): put in front of every Redis key,
    /// so that several deployments (or tests) can share one Redis.
    pub key_prefix: String,
    /// `product_cache_ttl_seconds`: how long a product lookup is reused.
    pub product_cache_ttl_seconds: u64,
    /// `product_timeout_ms`: each attempt's deadline on the product service.
    pub product_timeout: Duration,
    /// `breaker_open_ms`: how long the product service's open breaker
    /// refuses calls.
    pub breaker_open: Duration,
}

impl Config {
    /// Reads the variables; 500 when one is missing or not a number.
    pub async fn load() -> Result<Self, Problem> {
        Ok(Self {
            redis_url: variables::get("redis_url")
                .await
                .map_err(|e| Problem::internal(format!("variable `redis_url`: {e:?}")))?,
            cart_ttl_seconds: seconds("cart_ttl_seconds", DEFAULT_CART_TTL_SECONDS).await?,
            key_prefix: optional("cart_key_prefix").await?.unwrap_or_default(),
            product_cache_ttl_seconds: seconds(
                "product_cache_ttl_seconds",
                DEFAULT_PRODUCT_CACHE_TTL_SECONDS,
            )
            .await?,
            product_timeout: Duration::from_millis(
                positive("product_timeout_ms", DEFAULT_PRODUCT_TIMEOUT_MS).await?,
            ),
            breaker_open: Duration::from_millis(
                positive("breaker_open_ms", DEFAULT_BREAKER_OPEN_MS).await?,
            ),
        })
    }
}

/// `cart_key_prefix` alone (what the product events' handler needs).
pub async fn key_prefix() -> Result<String, Problem> {
    Ok(optional("cart_key_prefix").await?.unwrap_or_default())
}

/// A variable the manifest may leave out.
async fn optional(name: &str) -> Result<Option<String>, Problem> {
    match variables::get(name).await {
        Ok(value) => Ok(Some(value)),
        Err(Error::Undefined(_)) => Ok(None),
        Err(e) => Err(Problem::internal(format!("variable `{name}`: {e:?}"))),
    }
}

/// A positive number of seconds, `default` when the variable is absent.
async fn seconds(name: &str, default: u64) -> Result<u64, Problem> {
    positive(name, default).await
}

/// A positive number (of seconds or milliseconds, as the name says),
/// `default` when the variable is absent.
async fn positive(name: &str, default: u64) -> Result<u64, Problem> {
    match optional(name).await? {
        None => Ok(default),
        Some(raw) => match raw.trim().parse::<u64>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(Problem::internal(format!(
                "variable `{name}`: `{raw}` is not a positive number"
            ))),
        },
    }
}
