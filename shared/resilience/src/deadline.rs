//! Deadlines on futures.

use std::future::Future;
use std::pin::pin;

use futures::future::{select, Either};

/// The deadline passed before the future finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimedOut;

impl std::fmt::Display for TimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("timed out")
    }
}

impl std::error::Error for TimedOut {}

/// Runs `work` until `timer` fires, whichever comes first. When the timer
/// wins, `work` is dropped: in a guest that cancels the host call it was
/// waiting on. `work` is polled first, so work that is ready at once
/// always wins.
pub async fn within<F: Future>(
    work: F,
    timer: impl Future<Output = ()>,
) -> Result<F::Output, TimedOut> {
    match select(pin!(work), pin!(timer)).await {
        Either::Left((output, _)) => Ok(output),
        Either::Right(((), _)) => Err(TimedOut),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::executor::block_on;
    use futures::future::{pending, ready};

    #[test]
    fn work_that_finishes_wins() {
        assert_eq!(block_on(within(ready(7), ready(()))), Ok(7));
        assert_eq!(block_on(within(ready(7), pending::<()>())), Ok(7));
    }

    #[test]
    fn work_that_hangs_times_out() {
        assert_eq!(block_on(within(pending::<u8>(), ready(()))), Err(TimedOut));
    }
}
