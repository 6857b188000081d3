//! Exponential backoff with full jitter.

use std::time::Duration;

/// How long to wait before a retry: a uniformly random delay between zero
/// and `min(cap, base · 2^retry)` ("full jitter"). Randomizing the whole
/// delay, not a part of it, spreads the retries of callers that failed
/// together, so they do not come back together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The ceiling of the first retry's delay.
    pub base: Duration,
    /// The largest ceiling.
    pub cap: Duration,
}

impl Default for Backoff {
    /// 50 ms doubling up to 1 s.
    fn default() -> Self {
        Self {
            base: Duration::from_millis(50),
            cap: Duration::from_secs(1),
        }
    }
}

impl Backoff {
    /// The ceiling of retry number `retry` (0 for the first retry).
    pub fn ceiling(&self, retry: u32) -> Duration {
        let factor = 1u32.checked_shl(retry.min(31)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// The delay before retry number `retry`, drawn with `random` (any
    /// `u64`, uniformly distributed).
    pub fn delay(&self, retry: u32, random: u64) -> Duration {
        let ceiling = self.ceiling(retry).as_micros() as u64;
        Duration::from_micros(random % (ceiling + 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ceiling_doubles_up_to_the_cap() {
        let b = Backoff {
            base: Duration::from_millis(100),
            cap: Duration::from_millis(700),
        };
        let ceilings: Vec<u128> = (0..5).map(|r| b.ceiling(r).as_millis()).collect();
        assert_eq!(ceilings, [100, 200, 400, 700, 700]);
        // No overflow however many retries.
        assert_eq!(b.ceiling(u32::MAX), Duration::from_millis(700));
    }

    #[test]
    fn the_delay_is_anywhere_from_zero_to_the_ceiling() {
        let b = Backoff::default();
        assert_eq!(b.delay(0, 0), Duration::ZERO);
        assert_eq!(b.delay(0, 50_000), Duration::from_millis(50));
        assert_eq!(b.delay(0, 50_001), Duration::ZERO);
        for random in [1, 7, 12_345, u64::MAX / 3, u64::MAX] {
            for retry in 0..10 {
                assert!(b.delay(retry, random) <= b.ceiling(retry));
            }
        }
        // Spread out: many draws give many distinct delays.
        let mut seen: Vec<Duration> = (0..100u64)
            .map(|i| b.delay(3, i.wrapping_mul(0x9E37_79B9_7F4A_7C15)))
            .collect();
        seen.sort();
        seen.dedup();
        assert!(seen.len() > 90, "{} distinct", seen.len());
    }
}
