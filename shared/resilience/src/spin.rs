//! The guest side: Spin's timer, clock and Redis.
//!
//! A component builds one [`Guard`] per dependency per request with
//! [`guard`]; the retry budgets, the per-instance breakers and the memory
//! of a failed Redis are `static`s, so they live as long as the instance
//! (many requests under bv's and Spin's instance reuse; one request under
//! a fresh-instance policy, where the shared Redis state is what carries
//! over).

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;
use std::time::Duration;

use spin_sdk::redis::{Connection, RedisParameter, RedisResult};

use crate::breaker::{BreakerConfig, BreakerStore, MemoryStore, Permit, State, StoreError, SCRIPT};
use crate::budget::{BudgetConfig, RetryBudgets};
use crate::deadline::within;
use crate::fallback::Fallback;
use crate::guard::{Guard, Runtime};

/// The guest's clock, randomness and timer.
#[derive(Debug, Clone, Copy, Default)]
pub struct SpinRuntime;

impl Runtime for SpinRuntime {
    fn now_ms(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }

    fn random(&self) -> u64 {
        // std's hasher keys come from the host's randomness (`wasi:random`).
        RandomState::new().hash_one(0u8)
    }

    async fn sleep(&self, duration: Duration) {
        // `wasi:clocks/monotonic-clock` `wait-for`.
        spin_sdk::time::sleep(duration).await;
    }
}

/// How long one breaker command may take before Redis counts as
/// unreachable.
pub const REDIS_TIMEOUT: Duration = Duration::from_millis(250);

/// Breakers in Redis, one hash per dependency at `<prefix>breaker:<name>`,
/// changed only by [`SCRIPT`].
#[derive(Debug, Clone)]
pub struct RedisStore {
    url: String,
    prefix: String,
}

impl RedisStore {
    /// Breakers in the Redis at `url`, under keys starting with `prefix`
    /// (so that deployments sharing a Redis keep their breakers apart).
    pub fn new(url: impl Into<String>, prefix: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            prefix: prefix.into(),
        }
    }

    /// The hash of `name`'s breaker.
    pub fn key(&self, name: &str) -> String {
        format!("{}breaker:{name}", self.prefix)
    }

    async fn eval(&self, name: &str, argv: Vec<String>) -> Result<Vec<RedisResult>, StoreError> {
        let mut params = vec![
            RedisParameter::Binary(SCRIPT.as_bytes().to_vec()),
            RedisParameter::Int64(1),
            RedisParameter::Binary(self.key(name).into_bytes()),
        ];
        params.extend(
            argv.into_iter()
                .map(|a| RedisParameter::Binary(a.into_bytes())),
        );
        let run = async {
            let conn = Connection::open(&self.url).await?;
            conn.execute("EVAL", params).await
        };
        match within(run, spin_sdk::time::sleep(REDIS_TIMEOUT)).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(e)) => Err(StoreError(format!("redis: {e:?}"))),
            Err(_) => Err(StoreError(format!(
                "redis: no answer within {} ms",
                REDIS_TIMEOUT.as_millis()
            ))),
        }
    }
}

fn text(r: Option<&RedisResult>) -> String {
    match r {
        Some(RedisResult::Binary(b)) => String::from_utf8_lossy(b).into_owned(),
        Some(RedisResult::Status(s)) => s.clone(),
        Some(RedisResult::Int64(n)) => n.to_string(),
        Some(RedisResult::Nil) | None => String::new(),
    }
}

impl BreakerStore for RedisStore {
    async fn acquire(
        &self,
        name: &str,
        config: &BreakerConfig,
        now_ms: u64,
    ) -> Result<Permit, StoreError> {
        let reply = self
            .eval(name, config.script_argv("acquire", now_ms, false))
            .await?;
        let retry_after = match reply.get(1) {
            Some(RedisResult::Int64(ms)) => Duration::from_millis((*ms).max(0) as u64),
            _ => Duration::ZERO,
        };
        match text(reply.first()).as_str() {
            "allow" => Ok(Permit::Allow),
            "probe" => Ok(Permit::Probe),
            "reject" => Ok(Permit::Reject { retry_after }),
            other => Err(StoreError(format!("breaker script answered `{other}`"))),
        }
    }

    async fn record(
        &self,
        name: &str,
        config: &BreakerConfig,
        now_ms: u64,
        success: bool,
        probe: bool,
    ) -> Result<State, StoreError> {
        let op = if success { "success" } else { "failure" };
        let reply = self
            .eval(name, config.script_argv(op, now_ms, probe))
            .await?;
        let state = text(reply.first());
        State::parse(&state).ok_or_else(|| StoreError(format!("breaker script answered `{state}`")))
    }
}

/// The instance's own breakers (used alone without Redis, and while Redis
/// is unreachable).
static LOCAL: MemoryStore = MemoryStore::new();
/// Until when Redis is left alone after it failed.
static REDIS_DOWN_UNTIL: AtomicU64 = AtomicU64::new(0);
/// The instance's retry budgets.
static BUDGETS: Mutex<RetryBudgets> = Mutex::new(RetryBudgets::new());
/// The runtime every guard uses.
static RUNTIME: SpinRuntime = SpinRuntime;

/// Where a component's breakers are: in Redis when it has one (shared by
/// every instance), else (and while Redis is unreachable) per instance.
pub type Store = Fallback<'static, RedisStore>;

/// The breaker store for `redis` (`None`: per instance only).
pub fn store(redis: Option<RedisStore>) -> Store {
    Fallback::new(redis, &LOCAL, &REDIS_DOWN_UNTIL)
}

/// The guard of calls to the dependency `name`, its breaker following
/// `breaker` and kept in `store`, with the default retry budget.
pub fn guard<'a>(
    name: &'a str,
    breaker: BreakerConfig,
    store: &'a Store,
) -> Guard<'a, Store, SpinRuntime> {
    Guard {
        name,
        breaker,
        budget: BudgetConfig::DEFAULT,
        store,
        budgets: &BUDGETS,
        runtime: &RUNTIME,
    }
}
