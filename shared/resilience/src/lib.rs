//! Calls from one component to another (or to a provider) that survive a
//! failing dependency.
//!
//! Every call goes through a [`Guard`], which gives it:
//!
//! - **a deadline** ([`within`]): an attempt that has not answered after
//!   [`Policy::timeout`] is abandoned (its future dropped) and counts as a
//!   failure. In a WASI P3 guest the timer is `wasi:clocks/monotonic-clock`
//!   `wait-for` (through `spin_sdk::time::sleep`).
//! - **retries, only when the caller declares the call idempotent**
//!   ([`Policy::idempotent`]): up to [`Policy::attempts`] attempts, spaced
//!   by exponential backoff with full jitter ([`Backoff`]), and only while
//!   the instance's [`RetryBudget`] allows (retries ≤ 20 % of the calls of
//!   the last 10 s, plus a floor of 3), so that retries cannot multiply
//!   the load on a dependency that is already struggling.
//! - **a circuit breaker per dependency** ([`BreakerConfig`]): after 5
//!   consecutive failures, or when at least half of ≥ 10 calls in the last
//!   30 s failed, the breaker opens and calls fail at once, without being
//!   sent, for 10 s; then one probe goes through (half-open): its success
//!   closes the breaker, its failure opens it again. The state is shared
//!   by every instance of every process through Redis ([`spin::RedisStore`]:
//!   one hash per dependency, changed only by one Lua script, so each
//!   decision is atomic).
//!
//! What counts as a failure is the caller's call ([`Verdict`]): a transport
//! error, a timeout, a 5xx or 429 answer are the dependency failing; a 4xx
//! answer about the request (a declined card, a product out of stock) is
//! the dependency working.
//!
//! **When Redis itself is unreachable** the breaker fails open: calls are
//! not refused because the shared state cannot be read. Each instance then
//! keeps a breaker of its own in memory ([`MemoryStore`], same rules;
//! [`Fallback`]) until
//! Redis answers again (it is tried again after a second), so a dependency
//! that fails while Redis is down is still cut off, per instance.
//!
//! Everything but [`spin`] is plain Rust over two small traits,
//! [`Runtime`] (clock, randomness, timer) and [`BreakerStore`], and is
//! unit-tested on the host with fakes.
#![deny(missing_docs)]

mod backoff;
mod breaker;
mod budget;
mod deadline;
mod fallback;
mod guard;
pub mod spin;

pub use backoff::Backoff;
pub use breaker::{
    BreakerConfig, BreakerState, BreakerStore, MemoryStore, Permit, State, StoreError, SCRIPT,
};
pub use budget::{BudgetConfig, RetryBudget, RetryBudgets};
pub use deadline::{within, TimedOut};
pub use fallback::{Fallback, RETRY_SHARED_AFTER};
pub use guard::{Called, Guard, Outcome, Policy, Runtime, Verdict};
