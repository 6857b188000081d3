//! Carts in Redis.
//!
//! One hash per customer, `<prefix>cart:<customerId>`:
//!
//! | field          | value                                        |
//! |----------------|----------------------------------------------|
//! | `item:<id>`    | the line's quantity                          |
//! | `currency`     | the cart's currency (that of its first line) |
//! | `updatedAt`    | the last change, Unix milliseconds           |
//!
//! Every change is one Lua script, which Redis runs atomically: checking
//! the currency, merging quantities and refreshing the expiry cannot
//! interleave with another request's change, so concurrent adds never lose
//! an update and no lock or WATCH is needed. A cart whose last line goes
//! is deleted, so an empty cart has no currency.
//!
//! The product cache's counters are `<prefix>cart:cache:hits` and
//! `<prefix>cart:cache:misses`.

use std::collections::BTreeMap;

use bv_service::{Currency, Problem};
use spin_sdk::redis::{Connection, RedisParameter, RedisResult};

use crate::config::Config;
use crate::domain::{ProductId, Quantity, MAX_QUANTITY};
use crate::identity::CustomerId;

/// Adds to a line. KEYS: cart. ARGV: item field, quantity, currency, now,
/// TTL, maximum quantity.
const ADD: &str = r#"
local currency = redis.call('HGET', KEYS[1], 'currency')
if currency and currency ~= ARGV[3] then
  return {'currency-mismatch', currency}
end
local have = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
if have + tonumber(ARGV[2]) > tonumber(ARGV[6]) then
  return {'quantity-limit', have}
end
local now = redis.call('HINCRBY', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[1], 'currency', ARGV[3], 'updatedAt', ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return {'ok', now}
"#;

/// Sets an existing line's quantity. KEYS: cart. ARGV: item field,
/// quantity, currency, now, TTL.
const SET: &str = r#"
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then
  return {'not-in-cart'}
end
local currency = redis.call('HGET', KEYS[1], 'currency')
if currency and currency ~= ARGV[3] then
  return {'currency-mismatch', currency}
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2], 'currency', ARGV[3], 'updatedAt', ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return {'ok', tonumber(ARGV[2])}
"#;

/// Removes a line; the cart goes with its last line. KEYS: cart. ARGV:
/// item field, now, TTL.
const REMOVE: &str = r#"
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then
  return {'not-in-cart'}
end
local lines = redis.call('HLEN', KEYS[1])
  - redis.call('HEXISTS', KEYS[1], 'currency')
  - redis.call('HEXISTS', KEYS[1], 'updatedAt')
if lines <= 0 then
  redis.call('DEL', KEYS[1])
else
  redis.call('HSET', KEYS[1], 'updatedAt', ARGV[2])
  redis.call('EXPIRE', KEYS[1], ARGV[3])
end
return {'ok', 0}
"#;

const ITEM: &str = "item:";

/// A cart as stored.
#[derive(Debug, Default)]
pub struct StoredCart {
    /// The currency of its lines; `None` for an empty cart.
    pub currency: Option<Currency>,
    /// The last change, Unix milliseconds.
    pub updated_at_ms: Option<i64>,
    /// Quantity per product.
    pub lines: BTreeMap<ProductId, i64>,
}

/// What a change came to.
#[derive(Debug)]
pub enum Outcome {
    /// Done.
    Done,
    /// The cart is in another currency; nothing changed.
    CurrencyMismatch(String),
    /// The line would pass [`MAX_QUANTITY`]; it holds this many, unchanged.
    QuantityLimit(i64),
    /// The cart has no line for the product; nothing changed.
    NotInCart,
}

/// The cart store of one request.
pub struct Store {
    conn: Connection,
    prefix: String,
    ttl_seconds: u64,
}

impl Store {
    /// Connects to `redis_url`.
    pub async fn open(config: &Config) -> Result<Self, Problem> {
        let conn = Connection::open(&config.redis_url)
            .await
            .map_err(unavailable)?;
        Ok(Self {
            conn,
            prefix: config.key_prefix.clone(),
            ttl_seconds: config.cart_ttl_seconds,
        })
    }

    /// What goes in front of every key of this deployment.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn cart_key(&self, customer: &CustomerId) -> String {
        format!("{}cart:{customer}", self.prefix)
    }

    fn counter_key(&self, name: &str) -> String {
        format!("{}cart:cache:{name}", self.prefix)
    }

    /// The customer's cart (empty when there is none).
    pub async fn load(&self, customer: &CustomerId) -> Result<StoredCart, Problem> {
        let fields = self
            .conn
            .execute("HGETALL", [bin(self.cart_key(customer))])
            .await
            .map_err(unavailable)?;
        let mut cart = StoredCart::default();
        let mut fields = fields.into_iter();
        while let (Some(name), Some(value)) = (fields.next(), fields.next()) {
            let (name, value) = (text(name), text(value));
            match (name.strip_prefix(ITEM), name.as_str()) {
                (Some(id), _) => match (ProductId::try_from(id.to_string()), value.parse()) {
                    (Ok(id), Ok(quantity)) => {
                        cart.lines.insert(id, quantity);
                    }
                    _ => eprintln!("cart {customer}: skipping bad line `{name}` = `{value}`"),
                },
                (None, "currency") => cart.currency = Currency::parse(&value),
                (None, "updatedAt") => cart.updated_at_ms = value.parse().ok(),
                _ => {}
            }
        }
        if cart.lines.is_empty() {
            cart.currency = None;
        }
        Ok(cart)
    }

    /// Adds `quantity` of a product priced in `currency` to its line.
    pub async fn add(
        &self,
        customer: &CustomerId,
        id: &ProductId,
        quantity: Quantity,
        currency: Currency,
        now_ms: u64,
    ) -> Result<Outcome, Problem> {
        self.script(
            ADD,
            customer,
            vec![
                bin(format!("{ITEM}{id}")),
                int(quantity.get().into()),
                bin(currency.code()),
                int(now_ms as i64),
                int(self.ttl_seconds as i64),
                int(MAX_QUANTITY.into()),
            ],
        )
        .await
    }

    /// Sets the quantity of a product's existing line.
    pub async fn set(
        &self,
        customer: &CustomerId,
        id: &ProductId,
        quantity: Quantity,
        currency: Currency,
        now_ms: u64,
    ) -> Result<Outcome, Problem> {
        self.script(
            SET,
            customer,
            vec![
                bin(format!("{ITEM}{id}")),
                int(quantity.get().into()),
                bin(currency.code()),
                int(now_ms as i64),
                int(self.ttl_seconds as i64),
            ],
        )
        .await
    }

    /// Removes a product's line.
    pub async fn remove(
        &self,
        customer: &CustomerId,
        id: &ProductId,
        now_ms: u64,
    ) -> Result<Outcome, Problem> {
        self.script(
            REMOVE,
            customer,
            vec![
                bin(format!("{ITEM}{id}")),
                int(now_ms as i64),
                int(self.ttl_seconds as i64),
            ],
        )
        .await
    }

    /// Empties the customer's cart.
    pub async fn clear(&self, customer: &CustomerId) -> Result<(), Problem> {
        self.conn
            .del(&[self.cart_key(customer)])
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn script(
        &self,
        script: &str,
        customer: &CustomerId,
        args: Vec<RedisParameter>,
    ) -> Result<Outcome, Problem> {
        let mut params = vec![bin(script), int(1), bin(self.cart_key(customer))];
        params.extend(args);
        let reply = self
            .conn
            .execute("EVAL", params)
            .await
            .map_err(unavailable)?;
        let mut reply = reply.into_iter();
        let status = reply.next().map(text).unwrap_or_default();
        let detail = reply.next();
        let number = || match &detail {
            Some(RedisResult::Int64(n)) => *n,
            _ => 0,
        };
        Ok(match status.as_str() {
            "ok" => Outcome::Done,
            "quantity-limit" => Outcome::QuantityLimit(number()),
            "not-in-cart" => Outcome::NotInCart,
            "currency-mismatch" => {
                Outcome::CurrencyMismatch(detail.clone().map(text).unwrap_or_default())
            }
            other => return Err(Problem::internal(format!("cart script answered `{other}`"))),
        })
    }

    /// Counts product cache hits and misses. A failure is logged, never
    /// fails the request: the counters are for watching, not for serving.
    pub async fn count_cache(&self, hits: usize, misses: usize) {
        for (name, n) in [("hits", hits), ("misses", misses)] {
            if n == 0 {
                continue;
            }
            let counted = self
                .conn
                .execute("INCRBY", [bin(self.counter_key(name)), int(n as i64)])
                .await;
            if let Err(e) = counted {
                eprintln!("cart: counting product cache {name}: {e:?}");
            }
        }
    }

    /// The product cache's hits and misses so far.
    pub async fn cache_counts(&self) -> Result<(u64, u64), Problem> {
        let values = self
            .conn
            .execute(
                "MGET",
                [
                    bin(self.counter_key("hits")),
                    bin(self.counter_key("misses")),
                ],
            )
            .await
            .map_err(unavailable)?;
        let mut counts = values
            .into_iter()
            .map(|v| text(v).parse::<u64>().unwrap_or(0));
        Ok((counts.next().unwrap_or(0), counts.next().unwrap_or(0)))
    }
}

fn bin(s: impl Into<String>) -> RedisParameter {
    RedisParameter::Binary(s.into().into_bytes())
}

fn int(n: i64) -> RedisParameter {
    RedisParameter::Int64(n)
}

/// A reply element as text (`""` for nil).
fn text(result: RedisResult) -> String {
    match result {
        RedisResult::Binary(b) => String::from_utf8_lossy(&b).into_owned(),
        RedisResult::Status(s) => s,
        RedisResult::Int64(n) => n.to_string(),
        RedisResult::Nil => String::new(),
    }
}

fn unavailable(e: spin_sdk::redis::Error) -> Problem {
    eprintln!("cart: redis: {e:?}");
    Problem::unavailable("the cart store is unavailable")
}
