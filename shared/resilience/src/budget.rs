//! The retry budget: retries may add only so much load.

use std::collections::BTreeMap;
use std::time::Duration;

/// The budget's rule: over the last `window`, retries may be at most
/// `ratio_pct` % of the calls, plus `floor` (so a quiet instance can still
/// retry at all).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetConfig {
    /// Retries allowed per hundred calls.
    pub ratio_pct: u32,
    /// Retries allowed in any window whatever the traffic.
    pub floor: u32,
    /// The sliding window.
    pub window: Duration,
}

impl BudgetConfig {
    /// 20 % of the calls of the last 10 s, plus 3.
    pub const DEFAULT: Self = Self {
        ratio_pct: 20,
        floor: 3,
        window: Duration::from_secs(10),
    };
}

impl Default for BudgetConfig {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Buckets per window: the window slides by a tenth of itself.
const BUCKETS: u64 = 10;

/// One dependency's budget, kept per instance: calls and retries counted
/// in [`BUCKETS`] buckets of a tenth of the window each.
#[derive(Debug, Clone, Default)]
pub struct RetryBudget {
    /// bucket index → (calls, retries).
    buckets: BTreeMap<u64, (u32, u32)>,
}

impl RetryBudget {
    fn bucket_ms(config: &BudgetConfig) -> u64 {
        (config.window.as_millis() as u64 / BUCKETS).max(1)
    }

    /// Drops the buckets that left the window; the current bucket's index.
    fn slide(&mut self, config: &BudgetConfig, now_ms: u64) -> u64 {
        let now = now_ms / Self::bucket_ms(config);
        self.buckets.retain(|index, _| index + BUCKETS > now);
        now
    }

    /// Counts a call (its first attempt).
    pub fn record_call(&mut self, config: &BudgetConfig, now_ms: u64) {
        let now = self.slide(config, now_ms);
        self.buckets.entry(now).or_default().0 += 1;
    }

    /// Whether one more retry fits the budget; if it does, it is counted.
    pub fn try_retry(&mut self, config: &BudgetConfig, now_ms: u64) -> bool {
        let now = self.slide(config, now_ms);
        let (calls, retries) = self
            .buckets
            .values()
            .fold((0u64, 0u64), |(c, r), (bc, br)| {
                (c + u64::from(*bc), r + u64::from(*br))
            });
        let allowed = u64::from(config.floor) + calls * u64::from(config.ratio_pct) / 100;
        if retries >= allowed {
            return false;
        }
        self.buckets.entry(now).or_default().1 += 1;
        true
    }
}

/// The budgets of every dependency an instance calls, by name: what a
/// component keeps in a `static` (see [`crate::spin::guard`]).
#[derive(Debug, Default)]
pub struct RetryBudgets {
    by_name: BTreeMap<String, RetryBudget>,
}

impl RetryBudgets {
    /// No budget spent yet.
    pub const fn new() -> Self {
        Self {
            by_name: BTreeMap::new(),
        }
    }

    /// `name`'s budget.
    pub fn of(&mut self, name: &str) -> &mut RetryBudget {
        self.by_name.entry(name.to_string()).or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: BudgetConfig = BudgetConfig::DEFAULT;

    #[test]
    fn retries_are_at_most_a_fifth_of_the_calls_plus_the_floor() {
        let mut budget = RetryBudget::default();
        for _ in 0..100 {
            budget.record_call(&CONFIG, 1_000);
        }
        let granted = (0..100)
            .filter(|_| budget.try_retry(&CONFIG, 1_000))
            .count();
        assert_eq!(granted, 3 + 20);
    }

    #[test]
    fn a_quiet_instance_still_gets_the_floor() {
        let mut budget = RetryBudget::default();
        budget.record_call(&CONFIG, 0);
        let granted = (0..10).filter(|_| budget.try_retry(&CONFIG, 0)).count();
        assert_eq!(granted, 3);
    }

    #[test]
    fn the_window_slides() {
        let mut budget = RetryBudget::default();
        budget.record_call(&CONFIG, 0);
        while budget.try_retry(&CONFIG, 0) {}
        assert!(!budget.try_retry(&CONFIG, 9_999), "still in the window");
        // Ten seconds later the spent retries have left the window.
        assert!(budget.try_retry(&CONFIG, 10_000));
    }

    #[test]
    fn dependencies_have_budgets_of_their_own() {
        let mut budgets = RetryBudgets::new();
        while budgets.of("payment").try_retry(&CONFIG, 0) {}
        assert!(!budgets.of("payment").try_retry(&CONFIG, 0));
        assert!(budgets.of("inventory").try_retry(&CONFIG, 0));
    }
}
