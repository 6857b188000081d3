//! One guarded call: breaker, deadline, retries.

use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use crate::backoff::Backoff;
use crate::breaker::{BreakerConfig, BreakerStore, Permit};
use crate::budget::{BudgetConfig, RetryBudgets};
use crate::deadline::within;

/// What the guard needs of its surroundings; a guest's is
/// [`crate::spin::SpinRuntime`], the tests' a fake clock.
#[allow(async_fn_in_trait)]
pub trait Runtime {
    /// Wall-clock milliseconds (the breaker's state is shared between
    /// processes, so it is kept in wall-clock time).
    fn now_ms(&self) -> u64;
    /// A uniformly distributed random number.
    fn random(&self) -> u64;
    /// Waits `duration`.
    async fn sleep(&self, duration: Duration);
}

/// How to make one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Each attempt's deadline.
    pub timeout: Duration,
    /// Whether repeating the call is safe (it carries its own idempotency
    /// key, or changes nothing). Only idempotent calls are retried.
    pub idempotent: bool,
    /// Attempts in all, retries included (idempotent calls only).
    pub attempts: u32,
    /// The wait before each retry.
    pub backoff: Backoff,
}

impl Policy {
    /// An idempotent call: up to 3 attempts of `timeout` each.
    pub fn idempotent(timeout: Duration) -> Self {
        Self {
            timeout,
            idempotent: true,
            attempts: 3,
            backoff: Backoff::default(),
        }
    }

    /// A call that must not be repeated: one attempt of `timeout`.
    pub fn once(timeout: Duration) -> Self {
        Self {
            timeout,
            idempotent: false,
            attempts: 1,
            backoff: Backoff::default(),
        }
    }
}

/// What an answered attempt says about the dependency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// It works (a refusal about the request itself, like a declined card
    /// or a 404, is the dependency working).
    Success,
    /// It failed: a transport error, a 5xx, a 429. Counted by the breaker;
    /// retried when the call is idempotent.
    Failure,
    /// It failed in a way another attempt would meet again (gRPC's
    /// `INTERNAL` or `UNIMPLEMENTED`): counted by the breaker, not retried.
    Fault,
}

/// How a guarded call ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome<T, E> {
    /// The last attempt's result, whatever its [`Verdict`].
    Answered(Result<T, E>),
    /// The last attempt passed its deadline.
    TimedOut,
    /// The breaker refused the call (or its retry) without sending it.
    Open {
        /// Until the breaker may let a call through again.
        retry_after: Duration,
    },
}

/// A guarded call's outcome and how many attempts were sent.
#[derive(Debug, PartialEq, Eq)]
pub struct Called<T, E> {
    /// How it ended.
    pub outcome: Outcome<T, E>,
    /// Attempts sent (0 when the breaker refused the first).
    pub attempts: u32,
}

/// Calls to one dependency.
pub struct Guard<'a, S, R> {
    /// The dependency's name: its breaker and its retry budget.
    pub name: &'a str,
    /// Its breaker's rules.
    pub breaker: BreakerConfig,
    /// Its retry budget's rule.
    pub budget: BudgetConfig,
    /// Where its breaker is kept.
    pub store: &'a S,
    /// The instance's retry budgets.
    pub budgets: &'a Mutex<RetryBudgets>,
    /// Clock, randomness, timer.
    pub runtime: &'a R,
}

impl<S: BreakerStore, R: Runtime> Guard<'_, S, R> {
    fn spend<T>(&self, f: impl FnOnce(&mut crate::budget::RetryBudget) -> T) -> T {
        let mut budgets = self.budgets.lock().unwrap_or_else(|p| p.into_inner());
        f(budgets.of(self.name))
    }

    /// Calls `attempt` (given the attempt's number, from 0) under
    /// `policy`: refused at once while the breaker is open; each attempt
    /// within its deadline; a failed attempt ([`Verdict::Failure`] by
    /// `classify`, or a timeout) retried when the call is idempotent, the
    /// budget allows and attempts are left. A store that fails is logged
    /// and the call goes through (fail-open).
    pub async fn call<T, E, F, Fut>(
        &self,
        policy: &Policy,
        mut attempt: F,
        classify: impl Fn(&Result<T, E>) -> Verdict,
    ) -> Called<T, E>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let attempts = if policy.idempotent {
            policy.attempts.max(1)
        } else {
            1
        };
        let now = self.runtime.now_ms();
        self.spend(|b| b.record_call(&self.budget, now));
        let mut made = 0;
        loop {
            let now = self.runtime.now_ms();
            let permit = match self.store.acquire(self.name, &self.breaker, now).await {
                Ok(permit) => permit,
                Err(e) => {
                    eprintln!(
                        "breaker {}: store failed, letting the call through: {e}",
                        self.name
                    );
                    Permit::Allow
                }
            };
            if let Permit::Reject { retry_after } = permit {
                return Called {
                    outcome: Outcome::Open { retry_after },
                    attempts: made,
                };
            }
            let result = within(attempt(made), self.runtime.sleep(policy.timeout)).await;
            made += 1;
            let verdict = match &result {
                Ok(answer) => classify(answer),
                Err(_) => Verdict::Failure,
            };
            let success = verdict == Verdict::Success;
            let now = self.runtime.now_ms();
            let probe = permit == Permit::Probe;
            if let Err(e) = self
                .store
                .record(self.name, &self.breaker, now, success, probe)
                .await
            {
                eprintln!(
                    "breaker {}: store failed recording a result: {e}",
                    self.name
                );
            }
            let outcome = match result {
                Ok(answer) => Outcome::Answered(answer),
                Err(_) => Outcome::TimedOut,
            };
            let retry = verdict == Verdict::Failure;
            if !retry || made >= attempts || !self.spend(|b| b.try_retry(&self.budget, now)) {
                return Called {
                    outcome,
                    attempts: made,
                };
            }
            let delay = policy.backoff.delay(made - 1, self.runtime.random());
            self.runtime.sleep(delay).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::{Cell, RefCell};

    use futures::executor::block_on;
    use futures::future::{pending, ready, BoxFuture, FutureExt};

    use super::*;
    use crate::breaker::{MemoryStore, State, StoreError};

    /// A clock that sleeping moves forward at once.
    #[derive(Default)]
    struct FakeRuntime {
        now: Cell<u64>,
        sleeps: RefCell<Vec<Duration>>,
    }

    impl Runtime for FakeRuntime {
        fn now_ms(&self) -> u64 {
            self.now.get()
        }
        fn random(&self) -> u64 {
            self.sleeps.borrow().len() as u64 * 7_919_000
        }
        async fn sleep(&self, duration: Duration) {
            self.sleeps.borrow_mut().push(duration);
            self.now.set(self.now.get() + duration.as_millis() as u64);
        }
    }

    /// A store that is down.
    struct DownStore;

    impl BreakerStore for DownStore {
        async fn acquire(&self, _: &str, _: &BreakerConfig, _: u64) -> Result<Permit, StoreError> {
            Err(StoreError("connection refused".into()))
        }
        async fn record(
            &self,
            _: &str,
            _: &BreakerConfig,
            _: u64,
            _: bool,
            _: bool,
        ) -> Result<State, StoreError> {
            Err(StoreError("connection refused".into()))
        }
    }

    struct World<S> {
        store: S,
        budgets: Mutex<RetryBudgets>,
        runtime: FakeRuntime,
    }

    impl<S: BreakerStore> World<S> {
        fn new(store: S) -> Self {
            Self {
                store,
                budgets: Mutex::new(RetryBudgets::new()),
                runtime: FakeRuntime::default(),
            }
        }

        fn guard(&self) -> Guard<'_, S, FakeRuntime> {
            Guard {
                name: "payment",
                breaker: BreakerConfig::DEFAULT,
                budget: BudgetConfig::DEFAULT,
                store: &self.store,
                budgets: &self.budgets,
                runtime: &self.runtime,
            }
        }

        /// Calls with attempts answering `answers` in turn (`None`: hangs);
        /// the outcome and the attempts made.
        fn call(&self, policy: Policy, answers: &[Option<u16>]) -> (Outcome<u16, ()>, u32) {
            let made = Cell::new(0u32);
            let called = block_on(self.guard().call(
                &policy,
                |n| {
                    made.set(made.get() + 1);
                    let fut: BoxFuture<'static, Result<u16, ()>> = match answers[n as usize] {
                        Some(status) => ready(Ok(status)).boxed(),
                        None => pending().boxed(),
                    };
                    fut
                },
                classify,
            ));
            assert_eq!(called.attempts, made.get());
            (called.outcome, made.get())
        }
    }

    fn classify(r: &Result<u16, ()>) -> Verdict {
        match r {
            Ok(s) if *s < 500 => Verdict::Success,
            Ok(501) => Verdict::Fault,
            _ => Verdict::Failure,
        }
    }

    #[test]
    fn a_fault_is_not_retried() {
        let w = World::new(MemoryStore::new());
        assert_eq!(
            w.call(Policy::idempotent(T), &[Some(501), Some(200)]),
            (Outcome::Answered(Ok(501)), 1)
        );
        assert!(w.runtime.sleeps.borrow().is_empty());
    }

    const T: Duration = Duration::from_millis(500);

    #[test]
    fn a_success_is_answered_at_once() {
        let w = World::new(MemoryStore::new());
        assert_eq!(
            w.call(Policy::idempotent(T), &[Some(200)]),
            (Outcome::Answered(Ok(200)), 1)
        );
        assert!(w.runtime.sleeps.borrow().is_empty());
    }

    #[test]
    fn idempotent_calls_are_retried_with_backoff() {
        let w = World::new(MemoryStore::new());
        assert_eq!(
            w.call(Policy::idempotent(T), &[Some(503), Some(502), Some(201)]),
            (Outcome::Answered(Ok(201)), 3)
        );
        let sleeps = w.runtime.sleeps.borrow();
        assert_eq!(sleeps.len(), 2);
        let backoff = Backoff::default();
        assert!(sleeps[0] <= backoff.ceiling(0) && sleeps[1] <= backoff.ceiling(1));
    }

    #[test]
    fn other_calls_are_never_retried() {
        let w = World::new(MemoryStore::new());
        assert_eq!(
            w.call(Policy::once(T), &[Some(503), Some(200)]),
            (Outcome::Answered(Ok(503)), 1)
        );
    }

    #[test]
    fn a_refusal_about_the_request_is_not_retried() {
        let w = World::new(MemoryStore::new());
        assert_eq!(
            w.call(Policy::idempotent(T), &[Some(402), Some(201)]),
            (Outcome::Answered(Ok(402)), 1)
        );
    }

    #[test]
    fn a_hanging_attempt_times_out_and_is_retried() {
        let w = World::new(MemoryStore::new());
        assert_eq!(
            w.call(Policy::idempotent(T), &[None, None, None]),
            (Outcome::TimedOut, 3)
        );
        // Three deadlines waited for (and two backoffs).
        let waited = w
            .runtime
            .sleeps
            .borrow()
            .iter()
            .filter(|d| **d == T)
            .count();
        assert_eq!(waited, 3);
        assert_eq!(
            w.call(Policy::idempotent(T), &[None, Some(200)]),
            (Outcome::Answered(Ok(200)), 2)
        );
    }

    #[test]
    fn the_breaker_opens_and_refuses_without_calling() {
        let w = World::new(MemoryStore::new());
        // Three failed attempts, then two: five in a row.
        w.call(Policy::idempotent(T), &[Some(500); 3]);
        w.call(Policy::once(T), &[Some(500)]);
        assert_eq!(w.store.state("payment"), State::Closed);
        w.call(Policy::once(T), &[Some(500)]);
        assert_eq!(w.store.state("payment"), State::Open);
        let (outcome, made) = w.call(Policy::idempotent(T), &[Some(200)]);
        assert_eq!(made, 0, "nothing was sent");
        let Outcome::Open { retry_after } = outcome else {
            panic!("{outcome:?}")
        };
        assert!(retry_after <= BreakerConfig::DEFAULT.open_for);

        // After open_for: one probe; its success closes the breaker.
        w.runtime.now.set(w.runtime.now.get() + 10_000);
        assert_eq!(
            w.call(Policy::idempotent(T), &[Some(200)]),
            (Outcome::Answered(Ok(200)), 1)
        );
        assert_eq!(w.store.state("payment"), State::Closed);
    }

    #[test]
    fn a_retry_stops_when_the_breaker_opens_meanwhile() {
        let w = World::new(MemoryStore::new());
        w.call(Policy::once(T), &[Some(500)]);
        w.call(Policy::once(T), &[Some(500)]);
        w.call(Policy::once(T), &[Some(500)]);
        // Attempts 4 and 5 fail, the 5th opens it: the third attempt is
        // refused instead of sent.
        let (outcome, made) = w.call(Policy::idempotent(T), &[Some(500), Some(500), Some(200)]);
        assert_eq!(made, 2);
        assert!(matches!(outcome, Outcome::Open { .. }), "{outcome:?}");
    }

    #[test]
    fn retries_stop_when_the_budget_is_spent() {
        let w = World::new(MemoryStore::new());
        // A budget's floor is 3 retries when there is little traffic.
        for _ in 0..3 {
            w.guard()
                .spend(|b| assert!(b.try_retry(&BudgetConfig::DEFAULT, 0)));
        }
        assert_eq!(
            w.call(Policy::idempotent(T), &[Some(503), Some(200)]),
            (Outcome::Answered(Ok(503)), 1)
        );
    }

    #[test]
    fn a_store_that_is_down_lets_calls_through() {
        let w = World::new(DownStore);
        for _ in 0..10 {
            assert_eq!(
                w.call(Policy::once(T), &[Some(500)]),
                (Outcome::Answered(Ok(500)), 1)
            );
        }
        assert_eq!(
            w.call(Policy::once(T), &[Some(200)]),
            (Outcome::Answered(Ok(200)), 1)
        );
    }
}
