//! The circuit breaker: its rules, its state machine, and where the state
//! is kept.
//!
//! `closed` lets every call through and counts results; `open` refuses
//! every call until `open_for` has passed since it opened; then the first
//! caller becomes the probe (`half-open`) and everybody else is refused
//! while the probe holds its slot (`probe_lease`; a probe that never
//! reports back loses the slot, and the next caller probes). Only the
//! probe's result moves a half-open breaker: success closes it (and
//! forgets the counts), failure opens it again.
//!
//! [`BreakerState`] is the state machine in Rust (kept per instance by
//! [`MemoryStore`]); [`SCRIPT`] is the same machine in Lua for Redis,
//! where every instance shares it. The two are kept equal by a test that
//! runs one sequence of calls through both.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

/// The Lua script that keeps a breaker in a Redis hash (see
/// [`BreakerConfig::script_argv`] for its arguments).
pub const SCRIPT: &str = include_str!("breaker.lua");

/// Buckets per window: the failure-rate window slides by a tenth of itself.
const BUCKETS: u64 = 10;

/// When a breaker opens and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// This many failures in a row open it.
    pub consecutive_failures: u32,
    /// The failure-rate rule needs at least this many calls in the window.
    pub min_calls: u32,
    /// A failure rate (percent of the window's calls) at least this high
    /// opens it.
    pub failure_rate_pct: u32,
    /// The failure-rate window.
    pub window: Duration,
    /// How long it stays open before a probe is let through.
    pub open_for: Duration,
    /// How long a probe holds the half-open slot: at least the call's
    /// timeout, so a slow probe is not joined by a second one.
    pub probe_lease: Duration,
}

impl BreakerConfig {
    /// 5 consecutive failures, or ≥ 50 % of ≥ 10 calls in 30 s, open it
    /// for 10 s; a probe holds its slot for 5 s.
    pub const DEFAULT: Self = Self {
        consecutive_failures: 5,
        min_calls: 10,
        failure_rate_pct: 50,
        window: Duration::from_secs(30),
        open_for: Duration::from_secs(10),
        probe_lease: Duration::from_secs(5),
    };

    fn bucket_ms(&self) -> u64 {
        (self.window.as_millis() as u64 / BUCKETS).max(1)
    }

    fn ttl_ms(&self) -> u64 {
        self.bucket_ms() * BUCKETS
            + self.open_for.as_millis() as u64
            + self.probe_lease.as_millis() as u64
            + 60_000
    }

    /// [`SCRIPT`]'s `ARGV` for `op` (`acquire`, `success` or `failure`) at
    /// `now_ms`; `probe` tells whether a result is the probe's.
    pub fn script_argv(&self, op: &str, now_ms: u64, probe: bool) -> Vec<String> {
        vec![
            op.to_string(),
            now_ms.to_string(),
            self.consecutive_failures.to_string(),
            self.min_calls.to_string(),
            self.failure_rate_pct.to_string(),
            self.bucket_ms().to_string(),
            BUCKETS.to_string(),
            (self.open_for.as_millis() as u64).to_string(),
            (self.probe_lease.as_millis() as u64).to_string(),
            if probe { "1" } else { "0" }.to_string(),
        ]
    }
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Where a breaker is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum State {
    /// Calls go through.
    #[default]
    Closed,
    /// Calls are refused.
    Open,
    /// One probe is (or may be) under way; other calls are refused.
    HalfOpen,
}

impl State {
    /// `closed`, `open` or `half-open`.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half-open",
        }
    }

    /// The state named `s`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "closed" => Some(State::Closed),
            "open" => Some(State::Open),
            "half-open" => Some(State::HalfOpen),
            _ => None,
        }
    }
}

/// Whether a call may go out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permit {
    /// Closed: go.
    Allow,
    /// Go as the half-open probe: report the result with `probe = true`.
    Probe,
    /// Refused without being sent; try again after `retry_after`.
    Reject {
        /// Until the breaker may let a call through again.
        retry_after: Duration,
    },
}

/// The breaker's store failed (Redis unreachable, a timeout, an answer
/// that does not parse).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreError(pub String);

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StoreError {}

/// One breaker's state: the Rust twin of [`SCRIPT`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BreakerState {
    state: State,
    /// Consecutive failures (closed only).
    failures: u32,
    opened_ms: u64,
    /// Half-open: until when the probe holds its slot.
    probe_until_ms: u64,
    /// Window bucket index → (calls, failures), closed only.
    buckets: BTreeMap<u64, (u32, u32)>,
    /// When an idle state is forgotten (Redis: the key's expiry).
    expires_ms: Option<u64>,
}

impl BreakerState {
    /// Where it is.
    pub fn state(&self) -> State {
        self.state
    }

    fn expire(&mut self, now_ms: u64) {
        if self.expires_ms.is_some_and(|at| now_ms >= at) {
            *self = Self::default();
        }
    }

    fn touch(&mut self, config: &BreakerConfig, now_ms: u64) {
        self.expires_ms = Some(now_ms + config.ttl_ms());
    }

    fn open(&mut self, config: &BreakerConfig, now_ms: u64) -> State {
        *self = Self {
            state: State::Open,
            opened_ms: now_ms,
            ..Self::default()
        };
        self.touch(config, now_ms);
        State::Open
    }

    /// May a call go out at `now_ms`?
    pub fn acquire(&mut self, config: &BreakerConfig, now_ms: u64) -> Permit {
        self.expire(now_ms);
        let reject = |until: u64| Permit::Reject {
            retry_after: Duration::from_millis(until - now_ms),
        };
        match self.state {
            State::Closed => return Permit::Allow,
            State::Open => {
                let until = self.opened_ms + config.open_for.as_millis() as u64;
                if now_ms < until {
                    return reject(until);
                }
            }
            State::HalfOpen if now_ms < self.probe_until_ms => return reject(self.probe_until_ms),
            State::HalfOpen => {}
        }
        self.state = State::HalfOpen;
        self.probe_until_ms = now_ms + config.probe_lease.as_millis() as u64;
        self.touch(config, now_ms);
        Permit::Probe
    }

    /// Records a call's result at `now_ms`; the state after.
    pub fn record(
        &mut self,
        config: &BreakerConfig,
        now_ms: u64,
        success: bool,
        probe: bool,
    ) -> State {
        self.expire(now_ms);
        match self.state {
            // Only the probe decides; other results are of calls sent before.
            State::HalfOpen if !probe => return State::HalfOpen,
            State::HalfOpen if success => {
                *self = Self::default();
                return State::Closed;
            }
            State::HalfOpen => return self.open(config, now_ms),
            State::Open => return State::Open,
            State::Closed => {}
        }
        let bucket_ms = config.bucket_ms();
        let index = now_ms / bucket_ms;
        self.buckets.retain(|i, _| i + BUCKETS > index);
        let (calls, mut failed) = self
            .buckets
            .values()
            .fold((1u64, 0u64), |(c, f), (bc, bf)| {
                (c + u64::from(*bc), f + u64::from(*bf))
            });
        let bucket = self.buckets.entry(index).or_insert((0, 0));
        bucket.0 += 1;
        if success {
            self.failures = 0;
        } else {
            self.failures += 1;
            failed += 1;
            bucket.1 += 1;
            let rate_rule = calls >= u64::from(config.min_calls)
                && failed * 100 >= u64::from(config.failure_rate_pct) * calls;
            if self.failures >= config.consecutive_failures || rate_rule {
                return self.open(config, now_ms);
            }
        }
        self.touch(config, now_ms);
        State::Closed
    }
}

/// Where breakers are kept.
#[allow(async_fn_in_trait)]
pub trait BreakerStore {
    /// May a call to `name` go out at `now_ms`?
    async fn acquire(
        &self,
        name: &str,
        config: &BreakerConfig,
        now_ms: u64,
    ) -> Result<Permit, StoreError>;

    /// Records the result of a call to `name`; the state after.
    async fn record(
        &self,
        name: &str,
        config: &BreakerConfig,
        now_ms: u64,
        success: bool,
        probe: bool,
    ) -> Result<State, StoreError>;
}

/// Breakers kept in memory: per instance in a guest (a `static`), and the
/// fake the tests use. Never fails.
#[derive(Debug, Default)]
pub struct MemoryStore {
    breakers: Mutex<BTreeMap<String, BreakerState>>,
}

impl MemoryStore {
    /// No breaker yet (all closed).
    pub const fn new() -> Self {
        Self {
            breakers: Mutex::new(BTreeMap::new()),
        }
    }

    fn with<R>(&self, name: &str, f: impl FnOnce(&mut BreakerState) -> R) -> R {
        let mut breakers = self.breakers.lock().unwrap_or_else(|p| p.into_inner());
        f(breakers.entry(name.to_string()).or_default())
    }

    /// `name`'s state now.
    pub fn state(&self, name: &str) -> State {
        self.with(name, |b| b.state())
    }
}

impl BreakerStore for MemoryStore {
    async fn acquire(
        &self,
        name: &str,
        config: &BreakerConfig,
        now_ms: u64,
    ) -> Result<Permit, StoreError> {
        Ok(self.with(name, |b| b.acquire(config, now_ms)))
    }

    async fn record(
        &self,
        name: &str,
        config: &BreakerConfig,
        now_ms: u64,
        success: bool,
        probe: bool,
    ) -> Result<State, StoreError> {
        Ok(self.with(name, |b| b.record(config, now_ms, success, probe)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const C: BreakerConfig = BreakerConfig::DEFAULT;

    fn fail(b: &mut BreakerState, now: u64) -> State {
        b.record(&C, now, false, false)
    }

    fn ok(b: &mut BreakerState, now: u64) -> State {
        b.record(&C, now, true, false)
    }

    #[test]
    fn five_consecutive_failures_open_it() {
        let mut b = BreakerState::default();
        for i in 0..4 {
            assert_eq!(fail(&mut b, i), State::Closed);
        }
        assert_eq!(b.acquire(&C, 4), Permit::Allow);
        assert_eq!(fail(&mut b, 4), State::Open);
        assert_eq!(
            b.acquire(&C, 1_004),
            Permit::Reject {
                retry_after: Duration::from_millis(9_000)
            }
        );
    }

    #[test]
    fn a_success_resets_the_consecutive_count() {
        let mut b = BreakerState::default();
        for i in 0..4 {
            fail(&mut b, i);
        }
        ok(&mut b, 5);
        // Nine calls, eight failed, but never five in a row (and nine is
        // under the rate rule's ten calls).
        for i in 0..4 {
            assert_eq!(fail(&mut b, 10 + i), State::Closed);
        }
        assert_eq!(b.failures, 4);
    }

    #[test]
    fn half_of_ten_calls_in_the_window_open_it() {
        let mut b = BreakerState::default();
        // Alternating: never two failures in a row.
        for i in 0..9 {
            let state = if i % 2 == 0 {
                fail(&mut b, i * 100)
            } else {
                ok(&mut b, i * 100)
            };
            assert_eq!(state, State::Closed, "call {i}");
        }
        // 10th call, 5th failure: 50 % of 10.
        assert_eq!(ok(&mut b, 950), State::Closed);
        assert_eq!(fail(&mut b, 960), State::Open);
    }

    #[test]
    fn old_calls_leave_the_window() {
        let mut b = BreakerState::default();
        for i in 0..4 {
            fail(&mut b, i);
            ok(&mut b, i);
        }
        // 30 s later those 8 calls no longer count: 2 failures of 3 calls
        // is under the rate rule's 10 calls.
        ok(&mut b, 31_000);
        fail(&mut b, 31_001);
        assert_eq!(fail(&mut b, 31_002), State::Closed);
    }

    #[test]
    fn after_open_for_one_probe_goes_through() {
        let mut b = BreakerState::default();
        for i in 0..5 {
            fail(&mut b, i);
        }
        assert_eq!(b.state(), State::Open);
        assert_eq!(b.acquire(&C, 10_004), Permit::Probe);
        // Everybody else waits for the probe.
        assert_eq!(
            b.acquire(&C, 10_005),
            Permit::Reject {
                retry_after: Duration::from_millis(4_999)
            }
        );
        // A late result of a call sent before does not decide.
        assert_eq!(ok(&mut b, 10_006), State::HalfOpen);
        assert_eq!(b.record(&C, 10_007, true, true), State::Closed);
        assert_eq!(b.acquire(&C, 10_008), Permit::Allow);
        // And the counts start afresh: four failures do not open it.
        for i in 0..4 {
            assert_eq!(fail(&mut b, 10_010 + i), State::Closed);
        }
    }

    #[test]
    fn a_failed_probe_opens_it_again() {
        let mut b = BreakerState::default();
        for i in 0..5 {
            fail(&mut b, i);
        }
        assert_eq!(b.acquire(&C, 10_004), Permit::Probe);
        assert_eq!(b.record(&C, 10_100, false, true), State::Open);
        assert!(matches!(b.acquire(&C, 20_099), Permit::Reject { .. }));
        assert_eq!(b.acquire(&C, 20_100), Permit::Probe);
    }

    #[test]
    fn a_probe_that_never_reports_loses_its_slot() {
        let mut b = BreakerState::default();
        for i in 0..5 {
            fail(&mut b, i);
        }
        assert_eq!(b.acquire(&C, 10_004), Permit::Probe);
        assert!(matches!(b.acquire(&C, 15_003), Permit::Reject { .. }));
        assert_eq!(b.acquire(&C, 15_004), Permit::Probe);
    }

    #[test]
    fn an_idle_breaker_is_forgotten() {
        let mut b = BreakerState::default();
        for i in 0..4 {
            fail(&mut b, i);
        }
        // Long after (the Redis key would have expired): a fresh start.
        assert_eq!(fail(&mut b, 3 + C.ttl_ms()), State::Closed);
        assert_eq!(b.failures, 1);
    }

    #[test]
    fn the_memory_store_keeps_one_breaker_per_name() {
        let store = MemoryStore::new();
        futures::executor::block_on(async {
            for i in 0..5 {
                store.record("payment", &C, i, false, false).await.unwrap();
            }
            assert!(matches!(
                store.acquire("payment", &C, 10).await,
                Ok(Permit::Reject { .. })
            ));
            assert_eq!(store.acquire("inventory", &C, 10).await, Ok(Permit::Allow));
        });
        assert_eq!(store.state("payment"), State::Open);
    }

    #[test]
    fn states_have_names() {
        for s in [State::Closed, State::Open, State::HalfOpen] {
            assert_eq!(State::parse(s.as_str()), Some(s));
        }
        assert_eq!(State::parse("ajar"), None);
    }
}
