//! Rate limits: a token bucket per (component, route, client IP), kept in
//! Redis so every `bv` process serving the application draws from the same
//! bucket. The client IP is the TCP peer's, or the one a trusted proxy
//! forwarded ([`crate::client_addr`]).
//!
//! **Per account** (`per_account = true`): a request with a bearer
//! credential (`Authorization: Bearer <token>`) also takes a token from the
//! bucket of that credential (keyed by its SHA-256), in the same script, and
//! is refused when either bucket is empty. The runtime does not verify the
//! token (the component does): a made-up token only buys a bucket of its own,
//! which the client's bucket still bounds, and no one can drain another
//! account's bucket without holding its token. An account's tokens are
//! issued at most as fast as the strict authentication limits allow, so
//! this bounds one account's writes across every address it uses.
//!
//! One Lua script reads, refills and takes from the bucket atomically, on
//! Redis's clock (so the processes' clocks do not matter). A bucket holds up
//! to `burst` tokens and refills at `requests / per_seconds` per second; a
//! request takes one token or is answered 429 with `Retry-After`. Responses
//! of a limited route carry the IETF `RateLimit-Policy` and `RateLimit`
//! headers (draft-ietf-httpapi-ratelimit-headers): the policy is
//! `q` = burst requests per `w` seconds (the time an empty bucket takes to
//! fill), and `r`/`t` are the tokens left and the seconds until it is full.
//!
//! **Redis unreachable: fail open.** A rate limit protects capacity; it is
//! not an authorization check, so losing it must not take the routes down.
//! A check that cannot reach Redis within the limit's `timeout_ms` (100 ms by
//! default) lets the request through, counts `bv_http_rate_limit_errors`, and
//! logs once per outage. After a failed connection attempt the next one waits
//! a second, and requests in between do not wait for Redis at all.
//!
//! Requests between components (`*.spin.internal`) are not limited: the
//! client is the application itself.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::future::{BoxFuture, FutureExt, Shared};
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use redis::aio::MultiplexedConnection;
use wasmtime_wasi_http::WasiBody;

use bv_manifest::{RateLimitNumbers, RateLimitSettings};
use bv_runtime::AppRuntime;

use crate::problem;

/// The IETF `RateLimit-Policy` header.
pub(crate) const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
/// The IETF `RateLimit` header.
pub(crate) const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// Takes one token from each bucket of `KEYS` (the client's, and the
/// credential's), refilled at `ARGV[1]` tokens per millisecond up to
/// `ARGV[2]`; only when every bucket has one. Returns `{allowed (0/1),
/// whole tokens left (the fewest), ms until a token is back in every bucket
/// (0 if allowed), ms until all are full}`. A key expires once its bucket
/// would be full again, so idle clients cost nothing.
const SCRIPT: &str = r#"
if redis.replicate_commands then redis.replicate_commands() end
local rate = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local all = {}
local allowed = 1
for i, key in ipairs(KEYS) do
  local bucket = redis.call('HMGET', key, 'tokens', 'at')
  local tokens = tonumber(bucket[1])
  local at = tonumber(bucket[2])
  if tokens == nil or at == nil then
    tokens = capacity
    at = now
  end
  if now > at then
    tokens = math.min(capacity, tokens + (now - at) * rate)
    at = now
  end
  if tokens < 1 then allowed = 0 end
  all[i] = {tokens, at}
end
local left = capacity
local retry_ms = 0
local full_ms = 0
for i, key in ipairs(KEYS) do
  local tokens = all[i][1]
  if allowed == 1 then
    tokens = tokens - 1
  elseif tokens < 1 then
    retry_ms = math.max(retry_ms, math.ceil((1 - tokens) / rate))
  end
  left = math.min(left, tokens)
  local full = math.ceil((capacity - tokens) / rate)
  full_ms = math.max(full_ms, full)
  redis.call('HSET', key, 'tokens', tostring(tokens), 'at', tostring(all[i][2]))
  redis.call('PEXPIRE', key, full + 1000)
end
return {allowed, math.floor(left), retry_ms, full_ms}
"#;

/// How long one connection attempt may take (in the background: requests
/// wait at most their limit's `timeout_ms` for it).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// The pause after a failed connection attempt.
const RECONNECT_AFTER: Duration = Duration::from_secs(1);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ComponentLabels {
    component: String,
}

struct RateLimitMetrics {
    limited: Family<ComponentLabels, Counter>,
    errors: Family<ComponentLabels, Counter>,
}

impl RateLimitMetrics {
    fn register(registry: &mut Registry) -> Self {
        let limited = Family::<ComponentLabels, Counter>::default();
        let errors = Family::<ComponentLabels, Counter>::default();
        registry.register(
            "http_rate_limited",
            "Requests refused with 429 by a rate limit, by component",
            limited.clone(),
        );
        registry.register(
            "http_rate_limit_errors",
            "Rate-limit checks that could not reach Redis in time (the request was let through), by component",
            errors.clone(),
        );
        Self { limited, errors }
    }

    fn count(family: &Family<ComponentLabels, Counter>, component: &str) {
        family
            .get_or_create(&ComponentLabels {
                component: component.to_string(),
            })
            .inc();
    }
}

/// Every component's rate limit.
pub(crate) struct RateLimiter {
    app: String,
    limits: HashMap<Arc<str>, Arc<Limit>>,
    metrics: RateLimitMetrics,
}

/// One component's limit.
struct Limit {
    component: Arc<str>,
    /// Tokens per millisecond.
    rate: f64,
    capacity: u32,
    policy: HeaderValue,
    timeout: Duration,
    /// Whether a bearer credential has a bucket too.
    per_account: bool,
    backend: Arc<Backend>,
}

impl RateLimiter {
    /// The limits of the app's HTTP components (their `rate_limit`, with
    /// `{{ variable }}` Redis addresses rendered). Connections to Redis are
    /// opened in the background when a Tokio runtime is running.
    pub(crate) fn new(runtime: &AppRuntime) -> anyhow::Result<Self> {
        let app = runtime.app();
        let mut backends: HashMap<String, Arc<Backend>> = HashMap::new();
        let mut limits = HashMap::new();
        for trigger in &app.http_triggers {
            let id = trigger.component.as_str();
            if limits.contains_key(id) {
                continue;
            }
            let Some(component) = runtime.component(id) else {
                continue;
            };
            let Some(settings) = &component.settings.rate_limit else {
                continue;
            };
            let lookup = |name: &str| runtime.app_variable(name);
            let numbers = settings.numbers(&lookup).map_err(|(field, message)| {
                anyhow::anyhow!("component.{id}.tool.bv.rate_limit.{field}: {message}")
            })?;
            let field = format!("component.{id}.tool.bv.rate_limit.redis");
            let url = settings
                .redis
                .render(|name| runtime.app_variable(name))
                .with_context(|| field.clone())?;
            let backend = match backends.get(&url) {
                Some(backend) => backend.clone(),
                None => {
                    let backend = Backend::new(&url)
                        .map_err(|e| anyhow::anyhow!("{field}: invalid Redis address: {e}"))?;
                    backends.insert(url, backend.clone());
                    backend
                }
            };
            let id: Arc<str> = Arc::from(id);
            limits.insert(
                id.clone(),
                Arc::new(Limit::new(id, settings, numbers, backend)?),
            );
        }
        if tokio::runtime::Handle::try_current().is_ok() {
            for backend in backends.values() {
                drop(backend.connection());
            }
        }
        Ok(Self {
            app: app.application.name.clone(),
            limits,
            metrics: runtime.register_metrics(RateLimitMetrics::register),
        })
    }

    /// Takes a token for `client` (and, with `per_account`, for the bearer
    /// credential in `headers`) on the component's `route`; `None` when the
    /// component has no limit (or the client is unknown).
    pub(crate) async fn check(
        &self,
        component: &str,
        route: &str,
        client: Option<IpAddr>,
        headers: &HeaderMap,
    ) -> Option<Verdict> {
        let limit = self.limits.get(component)?;
        let client = client?;
        let prefix = format!("bv:rate-limit:{}:{component}:{route}", self.app);
        let mut keys = vec![format!("{prefix}:{client}")];
        if limit.per_account {
            if let Some(credential) = bearer_credential(headers) {
                keys.push(format!("{prefix}:account:{credential}"));
            }
        }
        let outcome = match tokio::time::timeout(limit.timeout, limit.take(&keys)).await {
            Ok(Ok(outcome)) => {
                limit.backend.recovered();
                outcome
            }
            Ok(Err(error)) => {
                limit.backend.failed(&error);
                RateLimitMetrics::count(&self.metrics.errors, component);
                Outcome::Unknown
            }
            Err(_) => {
                limit
                    .backend
                    .failed(&format!("no answer within {:?}", limit.timeout));
                RateLimitMetrics::count(&self.metrics.errors, component);
                Outcome::Unknown
            }
        };
        if let Outcome::Limited { .. } = outcome {
            RateLimitMetrics::count(&self.metrics.limited, component);
        }
        Some(Verdict {
            limit: limit.clone(),
            outcome,
        })
    }
}

impl Limit {
    fn new(
        component: Arc<str>,
        settings: &RateLimitSettings,
        numbers: RateLimitNumbers,
        backend: Arc<Backend>,
    ) -> anyhow::Result<Self> {
        let capacity = numbers.capacity;
        let per_ms = numbers.requests as f64 / (numbers.per_seconds as f64 * 1000.0);
        // Seconds an empty bucket takes to fill: the window of `capacity`
        // requests.
        let window = (capacity as f64 * numbers.per_seconds as f64 / numbers.requests as f64)
            .ceil()
            .max(1.0) as u64;
        let policy = HeaderValue::from_str(&format!("\"{component}\";q={capacity};w={window}"))?;
        Ok(Self {
            component,
            rate: per_ms,
            capacity,
            policy,
            timeout: Duration::from_millis(settings.timeout_ms()),
            per_account: settings.per_account,
            backend,
        })
    }

    async fn take(&self, keys: &[String]) -> Result<Outcome, String> {
        let Some(mut connection) = self.backend.connection().await else {
            return Err("not connected".into());
        };
        let reply: Vec<i64> = redis::cmd("EVAL")
            .arg(SCRIPT)
            .arg(keys.len())
            .arg(keys)
            .arg(self.rate)
            .arg(self.capacity)
            .query_async(&mut connection)
            .await
            .map_err(|e| {
                if e.is_io_error() || e.is_connection_dropped() || e.is_unrecoverable_error() {
                    self.backend.disconnect();
                }
                e.to_string()
            })?;
        let [allowed, left, retry_ms, full_ms] = reply[..] else {
            return Err(format!("unexpected script reply {reply:?}"));
        };
        let reset = seconds(full_ms);
        Ok(if allowed == 1 {
            Outcome::Allowed {
                remaining: left.max(0) as u64,
                reset,
            }
        } else {
            Outcome::Limited {
                retry_after: seconds(retry_ms).max(1),
                reset,
            }
        })
    }
}

/// The SHA-256 (hex) of the request's bearer token, if it has one.
fn bearer_credential(headers: &HeaderMap) -> Option<String> {
    use sha2::{Digest as _, Sha256};
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return None;
    }
    let digest = Sha256::digest(token.as_bytes());
    Some(digest.iter().map(|b| format!("{b:02x}")).collect())
}

/// Whole seconds, rounded up.
fn seconds(ms: i64) -> u64 {
    (ms.max(0) as u64).div_ceil(1000)
}

enum Outcome {
    Allowed {
        remaining: u64,
        reset: u64,
    },
    Limited {
        retry_after: u64,
        reset: u64,
    },
    /// Redis could not be asked: the request was let through.
    Unknown,
}

/// What the limit decided for one request.
pub(crate) struct Verdict {
    limit: Arc<Limit>,
    outcome: Outcome,
}

impl Verdict {
    /// The 429 to answer, if the request is over the limit.
    pub(crate) fn rejection(&self) -> Option<Response<WasiBody>> {
        let Outcome::Limited { retry_after, .. } = self.outcome else {
            return None;
        };
        let mut response = problem::response(
            StatusCode::TOO_MANY_REQUESTS,
            "rate-limited",
            "Too Many Requests",
            &format!(
                "too many requests to component `{}` from this client; retry in {retry_after} s",
                self.limit.component
            ),
        );
        response
            .headers_mut()
            .insert(http::header::RETRY_AFTER, HeaderValue::from(retry_after));
        Some(response)
    }

    /// Sets the `RateLimit-Policy` and `RateLimit` headers of the response.
    pub(crate) fn apply(&self, headers: &mut HeaderMap) {
        headers.insert(RATELIMIT_POLICY, self.limit.policy.clone());
        let (remaining, reset) = match self.outcome {
            Outcome::Allowed { remaining, reset } => (remaining, reset),
            Outcome::Limited { reset, .. } => (0, reset),
            Outcome::Unknown => return,
        };
        let value = format!("\"{}\";r={remaining};t={reset}", self.limit.component);
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(RATELIMIT, value);
        }
    }
}

/// A shared connection to one Redis address, opened lazily and reopened
/// after failures.
struct Backend {
    client: redis::Client,
    slot: Mutex<Slot>,
    /// Whether the last check reached Redis, so an outage is logged once.
    healthy: AtomicBool,
}

type Connecting = Shared<BoxFuture<'static, Option<MultiplexedConnection>>>;

enum Slot {
    Idle,
    Connecting(Connecting),
    Ready(MultiplexedConnection),
    /// The last attempt failed; no new one before this instant.
    Down(Instant),
}

impl Backend {
    fn new(url: &str) -> redis::RedisResult<Arc<Self>> {
        Ok(Arc::new(Self {
            client: redis::Client::open(url)?,
            slot: Mutex::new(Slot::Idle),
            healthy: AtomicBool::new(true),
        }))
    }

    /// The connection, waiting for an attempt in progress (the caller's
    /// timeout bounds the wait); `None` right after a failed attempt.
    fn connection(self: &Arc<Self>) -> BoxFuture<'static, Option<MultiplexedConnection>> {
        let mut slot = self.slot.lock().unwrap_or_else(|p| p.into_inner());
        let pending = match &*slot {
            Slot::Ready(connection) => {
                let connection = connection.clone();
                return async move { Some(connection) }.boxed();
            }
            Slot::Connecting(pending) => pending.clone(),
            Slot::Down(until) if Instant::now() < *until => return async { None }.boxed(),
            Slot::Idle | Slot::Down(_) => {
                let this = self.clone();
                let task = tokio::spawn(async move { this.connect().await });
                let this = self.clone();
                let pending = task
                    .map(move |joined| {
                        joined.unwrap_or_else(|_| {
                            // The attempt was cancelled (its runtime went
                            // away): let the next check try again.
                            this.disconnect_if(|slot| matches!(slot, Slot::Connecting(_)));
                            None
                        })
                    })
                    .boxed()
                    .shared();
                *slot = Slot::Connecting(pending.clone());
                pending
            }
        };
        pending.boxed()
    }

    async fn connect(&self) -> Option<MultiplexedConnection> {
        let config = redis::AsyncConnectionConfig::new().set_connection_timeout(CONNECT_TIMEOUT);
        let result = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await;
        let mut slot = self.slot.lock().unwrap_or_else(|p| p.into_inner());
        match result {
            Ok(connection) => {
                *slot = Slot::Ready(connection.clone());
                Some(connection)
            }
            Err(e) => {
                *slot = Slot::Down(Instant::now() + RECONNECT_AFTER);
                drop(slot);
                self.failed(&e);
                None
            }
        }
    }

    /// Drops the connection after an I/O error; the next check reconnects.
    fn disconnect(&self) {
        self.disconnect_if(|slot| matches!(slot, Slot::Ready(_)));
    }

    fn disconnect_if(&self, condition: impl FnOnce(&Slot) -> bool) {
        let mut slot = self.slot.lock().unwrap_or_else(|p| p.into_inner());
        if condition(&slot) {
            *slot = Slot::Idle;
        }
    }

    fn failed(&self, error: &dyn std::fmt::Display) {
        if self.healthy.swap(false, Ordering::SeqCst) {
            tracing::warn!(
                redis = %self.client.get_connection_info().addr,
                "rate limits cannot reach Redis; requests are let through until it is back: {error}"
            );
        }
    }

    fn recovered(&self) {
        if !self.healthy.swap(true, Ordering::SeqCst) {
            tracing::info!(
                redis = %self.client.get_connection_info().addr,
                "rate limits reach Redis again"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(requests: u32, per_seconds: u64, burst: Option<u32>) -> Limit {
        use bv_manifest::Count;
        let settings = RateLimitSettings {
            requests: Count::Fixed(requests as u64),
            per_seconds: Count::Fixed(per_seconds),
            burst: burst.map(|b| Count::Fixed(b as u64)),
            per_account: true,
            redis: "redis://127.0.0.1:6379".parse().unwrap(),
            timeout_ms: None,
        };
        let numbers = settings.numbers(&|_| None).unwrap();
        let backend = Backend::new("redis://127.0.0.1:6379").unwrap();
        Limit::new(Arc::from("cart"), &settings, numbers, backend).unwrap()
    }

    #[test]
    fn the_policy_header_states_burst_and_fill_time() {
        assert_eq!(limit(10, 60, None).policy, "\"cart\";q=10;w=60");
        assert_eq!(limit(10, 60, Some(20)).policy, "\"cart\";q=20;w=120");
        assert_eq!(limit(100, 1, Some(5)).policy, "\"cart\";q=5;w=1");
    }

    #[test]
    fn headers_of_each_outcome() {
        let limit = Arc::new(limit(10, 60, None));
        let verdict = |outcome| Verdict {
            limit: limit.clone(),
            outcome,
        };
        let mut headers = HeaderMap::new();
        verdict(Outcome::Allowed {
            remaining: 7,
            reset: 18,
        })
        .apply(&mut headers);
        assert_eq!(headers[RATELIMIT], "\"cart\";r=7;t=18");

        let limited = verdict(Outcome::Limited {
            retry_after: 6,
            reset: 60,
        });
        let response = limited.rejection().unwrap();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[http::header::RETRY_AFTER], "6");
        let mut headers = HeaderMap::new();
        limited.apply(&mut headers);
        assert_eq!(headers[RATELIMIT], "\"cart\";r=0;t=60");

        let mut headers = HeaderMap::new();
        verdict(Outcome::Unknown).apply(&mut headers);
        assert!(headers.contains_key(RATELIMIT_POLICY));
        assert!(!headers.contains_key(RATELIMIT));
        assert!(verdict(Outcome::Unknown).rejection().is_none());
    }

    #[test]
    fn seconds_round_up() {
        assert_eq!(seconds(0), 0);
        assert_eq!(seconds(1), 1);
        assert_eq!(seconds(1000), 1);
        assert_eq!(seconds(1001), 2);
        assert_eq!(seconds(-5), 0);
    }

    /// The script against the real Redis: a burst, then refusal, then refill.
    #[tokio::test]
    async fn the_bucket_empties_and_refills_in_redis() {
        let limit = limit(10, 1, Some(3));
        let key = vec![format!("bv:rate-limit:unit-test:{}", std::process::id())];
        let mut outcomes = Vec::new();
        for _ in 0..4 {
            outcomes.push(limit.take(&key).await.expect("Redis on 127.0.0.1:6379"));
        }
        let allowed = outcomes
            .iter()
            .filter(|o| matches!(o, Outcome::Allowed { .. }))
            .count();
        assert_eq!(allowed, 3, "the burst");
        let Outcome::Limited { retry_after, .. } = outcomes[3] else {
            panic!("the fourth request is limited");
        };
        assert_eq!(retry_after, 1);
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(matches!(
            limit.take(&key).await.unwrap(),
            Outcome::Allowed { .. }
        ));
    }

    /// Two buckets (a client's and a credential's): a request is refused
    /// when either is empty, and a refused request takes from neither.
    #[tokio::test]
    async fn a_request_takes_from_every_bucket_or_none() {
        let limit = limit(1, 60, Some(2));
        let base = format!("bv:rate-limit:unit-test-pair:{}", std::process::id());
        let (client_a, client_b, account) = (
            format!("{base}:a"),
            format!("{base}:b"),
            format!("{base}:account"),
        );
        let take = |keys: Vec<&String>| {
            let keys: Vec<String> = keys.into_iter().cloned().collect();
            let limit = &limit;
            async move { limit.take(&keys).await.expect("Redis on 127.0.0.1:6379") }
        };
        // The account spends its two tokens from two clients.
        assert!(matches!(
            take(vec![&client_a, &account]).await,
            Outcome::Allowed { remaining: 1, .. }
        ));
        assert!(matches!(
            take(vec![&client_b, &account]).await,
            Outcome::Allowed { remaining: 0, .. }
        ));
        // Client b still has a token, the account none: refused.
        assert!(matches!(
            take(vec![&client_b, &account]).await,
            Outcome::Limited { .. }
        ));
        // ... and client b's token was not taken.
        assert!(matches!(
            take(vec![&client_b]).await,
            Outcome::Allowed { .. }
        ));
        let mut redis = redis::Client::open("redis://127.0.0.1:6379")
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let _: () = redis::cmd("DEL")
            .arg(&client_a)
            .arg(&client_b)
            .arg(&account)
            .query_async(&mut redis)
            .await
            .unwrap();
    }

    #[test]
    fn the_credential_is_the_bearer_token_hashed() {
        let mut headers = HeaderMap::new();
        assert_eq!(bearer_credential(&headers), None);
        headers.insert(
            http::header::AUTHORIZATION,
            HeaderValue::from_static("Basic abc"),
        );
        assert_eq!(bearer_credential(&headers), None);
        headers.insert(
            http::header::AUTHORIZATION,
            HeaderValue::from_static("bearer abc"),
        );
        let hashed = bearer_credential(&headers).unwrap();
        assert_eq!(hashed.len(), 64);
        assert!(!hashed.contains("abc"));
        headers.insert(
            http::header::AUTHORIZATION,
            HeaderValue::from_static("Bearer  abc "),
        );
        assert_eq!(bearer_credential(&headers).unwrap(), hashed);
    }
}
