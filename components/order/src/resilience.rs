//! The saga's calls to inventory and payment, guarded by `bv-resilience`:
//! each attempt has a deadline; failed attempts are retried (every one of
//! these calls is idempotent: the reservation id and the payment id are
//! the order id) with exponential backoff, full jitter and the instance's
//! retry budget; and each dependency has a circuit breaker, shared by
//! every instance through Redis when `redis_url` is set (per instance
//! otherwise, and while Redis is unreachable: fail-open).
//!
//! | variable | default | what it sets |
//! |---|---|---|
//! | `inventory_timeout_ms` | 3000 | each attempt's deadline for inventory |
//! | `payment_timeout_ms` | 5000 | each attempt's deadline for payment |
//! | `breaker_open_ms` | 10000 | how long an open breaker refuses calls before a probe |
//! | `redis_url` | none | where the breakers are shared |
//! | `breaker_key_prefix` | empty | put in front of the breakers' Redis keys |

use std::time::Duration;

use bv_orders::model::OrderId;
use bv_orders::saga::{CallError, Dependency};
use bv_orders::services::{self, Answer, INVENTORY, PAYMENT};
use bv_resilience::spin::{self, RedisStore, Store};
use bv_resilience::{BreakerConfig, Outcome, Policy, Verdict};
use bv_service::{Problem, Trace};
use serde_json::Value;

/// The guarded calls of one request.
pub struct Calls {
    inventory_timeout: Duration,
    payment_timeout: Duration,
    open_for: Duration,
    store: Store,
}

impl Calls {
    /// Reads the settings (see the module docs).
    pub async fn open() -> Result<Self, Problem> {
        let redis = match optional("redis_url").await? {
            Some(url) => Some(RedisStore::new(
                url,
                optional("breaker_key_prefix").await?.unwrap_or_default(),
            )),
            None => None,
        };
        Ok(Self {
            inventory_timeout: millis("inventory_timeout_ms", 3_000).await?,
            payment_timeout: millis("payment_timeout_ms", 5_000).await?,
            open_for: millis("breaker_open_ms", 10_000).await?,
            store: spin::store(redis),
        })
    }

    fn timeout(&self, dependency: Dependency) -> Duration {
        match dependency {
            Dependency::Inventory => self.inventory_timeout,
            Dependency::Payment => self.payment_timeout,
        }
    }

    /// Calls `dependency` (idempotent: retried), in `trace`.
    pub async fn call(
        &self,
        trace: &Trace,
        dependency: Dependency,
        method: &str,
        url: &str,
        body: Option<&Value>,
    ) -> Result<Answer, CallError> {
        let timeout = self.timeout(dependency);
        let breaker = BreakerConfig {
            open_for: self.open_for,
            // A probe holds its slot for as long as its attempt may take.
            probe_lease: timeout + Duration::from_secs(1),
            ..BreakerConfig::DEFAULT
        };
        let guard = spin::guard(dependency.name(), breaker, &self.store);
        let called = guard
            .call(
                &Policy::idempotent(timeout),
                |_| services::send(trace, method, url, None, &[], body, timeout),
                classify,
            )
            .await;
        match called.outcome {
            Outcome::Answered(answer) => answer.map_err(CallError::Failed),
            Outcome::TimedOut => Err(CallError::TimedOut {
                attempts: called.attempts,
                timeout,
            }),
            Outcome::Open { retry_after } => {
                if called.attempts == 0 {
                    eprintln!("order: {}: circuit open, failing fast", dependency.name());
                }
                Err(CallError::Open {
                    retry_after,
                    attempts: called.attempts,
                })
            }
        }
    }

    /// Gives back what the checkout of `order_id` may hold: the stock
    /// reservation, and the payment when a payment call was sent
    /// (`payment_sent`; voided when only authorized, refunded when
    /// captured). Both are idempotent and answer 404 when there is nothing
    /// to give back. `Err` names the call that failed: the saga is then
    /// left `compensating` for `order-sweeper` to finish.
    pub async fn give_back(
        &self,
        trace: &Trace,
        order_id: &OrderId,
        payment_sent: bool,
    ) -> Result<(), String> {
        let released = self
            .call(
                trace,
                Dependency::Inventory,
                "POST",
                &format!("{INVENTORY}/reservations/{order_id}/release"),
                None,
            )
            .await
            .map_err(|e| format!("releasing reservation {order_id}: {e}"))?;
        if !matches!(released.status, 200 | 404) {
            return Err(format!(
                "releasing reservation {order_id}: {} {}",
                released.status, released.body
            ));
        }
        if !payment_sent {
            return Ok(());
        }
        let refunded = self
            .call(
                trace,
                Dependency::Payment,
                "POST",
                &format!("{PAYMENT}/{order_id}/refund"),
                None,
            )
            .await
            .map_err(|e| format!("refunding payment {order_id}: {e}"))?;
        // 409: the payment was declined, so there is nothing to give back.
        if !matches!(refunded.status, 200 | 404 | 409) {
            return Err(format!(
                "refunding payment {order_id}: {} {}",
                refunded.status, refunded.body
            ));
        }
        Ok(())
    }
}

/// A failed call, a 5xx or a 429 is the dependency failing; any other
/// answer (a decline, a shortage, a 404) is the dependency working. Over
/// gRPC the code decides: only `UNAVAILABLE` and `DEADLINE_EXCEEDED` are
/// worth another attempt; `INTERNAL`, `UNIMPLEMENTED` and the like are
/// the dependency failing, but would fail again.
fn classify(result: &Result<Answer, String>) -> Verdict {
    use bv_grpc::status::{is_failure, is_retryable};
    match result {
        Ok(Answer {
            grpc: Some(code), ..
        }) => match *code {
            code if is_retryable(code) => Verdict::Failure,
            code if is_failure(code) => Verdict::Fault,
            _ => Verdict::Success,
        },
        Ok(a) if a.status < 500 && a.status != 429 => Verdict::Success,
        _ => Verdict::Failure,
    }
}

/// A variable the manifest may leave out.
async fn optional(name: &str) -> Result<Option<String>, Problem> {
    match spin_sdk::variables::get(name).await {
        Ok(v) if v.trim().is_empty() => Ok(None),
        Ok(v) => Ok(Some(v.trim().to_string())),
        Err(spin_sdk::variables::Error::Undefined(_)) => Ok(None),
        Err(e) => Err(Problem::internal(format!("variable `{name}`: {e:?}"))),
    }
}

/// A positive number of milliseconds, `default` when the variable is
/// absent.
async fn millis(name: &str, default: u64) -> Result<Duration, Problem> {
    match optional(name).await? {
        None => Ok(Duration::from_millis(default)),
        Some(raw) => match raw.parse::<u64>() {
            Ok(ms) if ms > 0 => Ok(Duration::from_millis(ms)),
            _ => Err(Problem::internal(format!(
                "variable `{name}`: `{raw}` is not a positive number of milliseconds"
            ))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bv_grpc::Code;
    use serde_json::Value;

    fn over_grpc(code: Code) -> Result<Answer, String> {
        Ok(Answer {
            status: bv_grpc::status::http_status_for(code),
            body: Value::Null,
            grpc: Some(code),
        })
    }

    #[test]
    fn grpc_answers_are_retried_only_when_another_attempt_can_help() {
        assert_eq!(classify(&over_grpc(Code::Unavailable)), Verdict::Failure);
        assert_eq!(
            classify(&over_grpc(Code::DeadlineExceeded)),
            Verdict::Failure
        );
        assert_eq!(classify(&over_grpc(Code::Internal)), Verdict::Fault);
        assert_eq!(classify(&over_grpc(Code::Unimplemented)), Verdict::Fault);
        assert_eq!(
            classify(&over_grpc(Code::FailedPrecondition)),
            Verdict::Success
        );
        assert_eq!(classify(&over_grpc(Code::Ok)), Verdict::Success);
        // Over HTTP a 500 is retried, as before.
        assert_eq!(
            classify(&Ok(Answer::http(500, Value::Null))),
            Verdict::Failure
        );
        assert_eq!(classify(&Err("refused".into())), Verdict::Failure);
    }
}
