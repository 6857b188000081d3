//! Waiting between attempts: doubling from 250 ms to 10 s, cut short by a stop.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

const FIRST: Duration = Duration::from_millis(250);
const LAST: Duration = Duration::from_secs(10);

/// The delay before the next attempt.
#[derive(Debug)]
pub struct Retry(Duration);

impl Default for Retry {
    fn default() -> Self {
        Self(FIRST)
    }
}

impl Retry {
    /// How long the next [`Retry::wait`] waits.
    pub fn delay(&self) -> Duration {
        self.0
    }

    /// Waits the delay (or until `stop`) and doubles it.
    pub async fn wait(&mut self, stop: &CancellationToken) {
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = tokio::time::sleep(self.0) => {}
        }
        self.0 = (self.0 * 2).min(LAST);
    }

    /// Back to the first delay, after a success.
    pub fn reset(&mut self) {
        self.0 = FIRST;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn doubles_up_to_the_last_delay_and_resets() {
        // A stopped token makes every wait return at once.
        let stop = CancellationToken::new();
        stop.cancel();
        let mut retry = Retry::default();
        retry.wait(&stop).await;
        assert_eq!(retry.delay(), FIRST * 2);
        for _ in 0..10 {
            retry.wait(&stop).await;
        }
        assert_eq!(retry.delay(), LAST);
        retry.reset();
        assert_eq!(retry.delay(), FIRST);
    }
}
