//! A shared breaker store with a per-instance stand-in.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::breaker::{BreakerConfig, BreakerStore, MemoryStore, Permit, State, StoreError};

/// How long the shared store is left alone after it failed.
pub const RETRY_SHARED_AFTER: Duration = Duration::from_secs(1);

/// Breakers in a shared store (Redis), or, while it fails (and when there
/// is none), in the instance's memory. Never fails: a shared store that
/// cannot be reached costs one error, then is left alone for
/// [`RETRY_SHARED_AFTER`] while the instance's own breakers decide. Those
/// start closed, so the calls go through (fail-open), but a dependency
/// that fails meanwhile is still cut off by each instance on its own.
pub struct Fallback<'a, P> {
    shared: Option<P>,
    local: &'a MemoryStore,
    /// Until when (wall-clock ms) the shared store is not tried.
    down_until: &'a AtomicU64,
}

impl<'a, P: BreakerStore> Fallback<'a, P> {
    /// Breakers in `shared` (`None`: in `local` only), with `local` and
    /// `down_until` kept per instance.
    pub fn new(shared: Option<P>, local: &'a MemoryStore, down_until: &'a AtomicU64) -> Self {
        Self {
            shared,
            local,
            down_until,
        }
    }

    /// The shared store, unless it failed less than a moment ago.
    fn shared(&self, now_ms: u64) -> Option<&P> {
        self.shared
            .as_ref()
            .filter(|_| now_ms >= self.down_until.load(Ordering::Relaxed))
    }

    fn failed(&self, name: &str, now_ms: u64, e: &StoreError) {
        let until = now_ms + RETRY_SHARED_AFTER.as_millis() as u64;
        self.down_until.store(until, Ordering::Relaxed);
        eprintln!(
            "breaker {name}: shared state unreachable ({e}); this instance decides alone for {} ms",
            RETRY_SHARED_AFTER.as_millis()
        );
    }
}

impl<P: BreakerStore> BreakerStore for Fallback<'_, P> {
    async fn acquire(
        &self,
        name: &str,
        config: &BreakerConfig,
        now_ms: u64,
    ) -> Result<Permit, StoreError> {
        if let Some(shared) = self.shared(now_ms) {
            match shared.acquire(name, config, now_ms).await {
                Ok(permit) => return Ok(permit),
                Err(e) => self.failed(name, now_ms, &e),
            }
        }
        self.local.acquire(name, config, now_ms).await
    }

    async fn record(
        &self,
        name: &str,
        config: &BreakerConfig,
        now_ms: u64,
        success: bool,
        probe: bool,
    ) -> Result<State, StoreError> {
        if let Some(shared) = self.shared(now_ms) {
            match shared.record(name, config, now_ms, success, probe).await {
                Ok(state) => return Ok(state),
                Err(e) => self.failed(name, now_ms, &e),
            }
        }
        self.local
            .record(name, config, now_ms, success, probe)
            .await
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use futures::executor::block_on;

    use super::*;

    /// A shared store that is down while `down` is set, counting its calls.
    #[derive(Default)]
    struct Flaky {
        down: Cell<bool>,
        calls: Cell<u32>,
        inner: MemoryStore,
    }

    impl BreakerStore for Flaky {
        async fn acquire(
            &self,
            name: &str,
            config: &BreakerConfig,
            now_ms: u64,
        ) -> Result<Permit, StoreError> {
            self.calls.set(self.calls.get() + 1);
            if self.down.get() {
                return Err(StoreError("connection refused".into()));
            }
            self.inner.acquire(name, config, now_ms).await
        }
        async fn record(
            &self,
            name: &str,
            config: &BreakerConfig,
            now_ms: u64,
            success: bool,
            probe: bool,
        ) -> Result<State, StoreError> {
            self.calls.set(self.calls.get() + 1);
            if self.down.get() {
                return Err(StoreError("connection refused".into()));
            }
            self.inner
                .record(name, config, now_ms, success, probe)
                .await
        }
    }

    const C: BreakerConfig = BreakerConfig::DEFAULT;

    #[test]
    fn while_the_shared_store_is_down_the_instance_decides() {
        let local = MemoryStore::new();
        let down_until = AtomicU64::new(0);
        let store = Fallback::new(Some(Flaky::default()), &local, &down_until);
        let shared = store.shared.as_ref().unwrap();
        block_on(async {
            shared.down.set(true);
            // Fail-open: the call is let through.
            assert_eq!(store.acquire("payment", &C, 0).await, Ok(Permit::Allow));
            assert_eq!(shared.calls.get(), 1);
            // The shared store is left alone for a second...
            for i in 0..5 {
                store
                    .record("payment", &C, 10 + i, false, false)
                    .await
                    .unwrap();
            }
            assert_eq!(shared.calls.get(), 1);
            // ...while the instance's own breaker opened.
            assert!(matches!(
                store.acquire("payment", &C, 20).await,
                Ok(Permit::Reject { .. })
            ));
            // A second later the shared store is back, and decides again.
            shared.down.set(false);
            assert_eq!(store.acquire("payment", &C, 1_000).await, Ok(Permit::Allow));
            assert_eq!(shared.calls.get(), 2);
        });
    }

    #[test]
    fn without_a_shared_store_breakers_are_per_instance() {
        let local = MemoryStore::new();
        let down_until = AtomicU64::new(0);
        let store: Fallback<'_, MemoryStore> = Fallback::new(None, &local, &down_until);
        block_on(async {
            for i in 0..5 {
                store
                    .record("inventory", &C, i, false, false)
                    .await
                    .unwrap();
            }
        });
        assert_eq!(local.state("inventory"), State::Open);
    }
}
