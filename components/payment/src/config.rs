//! The simulation's knobs, read on every request so that a restart with
//! new `SPIN_VARIABLE_*` values (or an admin toggle) takes effect at once.
//!
//! | variable | default | effect |
//! |---|---|---|
//! | `payment_amount_limit` | 100000 | authorizations over it (minor units, any currency) are declined `amount-limit` |
//! | `payment_latency_ms` | 0 | every payment call waits this long before answering |
//! | `payment_outage` | false | every payment API call answers 503 `unavailable` |
//!
//! The outage can also be switched at run time: the key [`OUTAGE_KEY`] of
//! the default key-value store, when set, overrides the variable.

use std::time::Duration;

use bv_service::Problem;
use spin_sdk::key_value::Store;

/// The key-value key of the outage override (`"true"` / `"false"`).
pub const OUTAGE_KEY: &str = "payment:outage";

/// The default limit when the variable is not defined.
const DEFAULT_AMOUNT_LIMIT: i64 = 100_000;

/// The longest latency accepted (ten minutes): anything longer is surely
/// a typo in the variable.
const MAX_LATENCY_MS: u64 = 600_000;

/// The knobs for one request.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// The largest amount authorized, in minor units.
    pub amount_limit: i64,
    /// Added to every answer.
    pub latency: Duration,
    /// Whether the processor is down.
    pub outage: Outage,
}

/// The outage switch: the variable, the run-time override, and the result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outage {
    /// `payment_outage`.
    pub variable: bool,
    /// The key-value override, if set.
    pub overridden: Option<bool>,
}

impl Outage {
    /// Whether the processor is down now.
    pub fn on(self) -> bool {
        self.overridden.unwrap_or(self.variable)
    }
}

impl Config {
    /// Reads every knob. A variable with a value it cannot use is a 500
    /// naming the variable (an operator's mistake, not the client's).
    pub async fn load() -> Result<Self, Problem> {
        let amount_limit = match variable("payment_amount_limit").await? {
            None => DEFAULT_AMOUNT_LIMIT,
            Some(v) => v
                .parse::<i64>()
                .ok()
                .filter(|n| *n >= 0)
                .ok_or_else(|| bad_variable("payment_amount_limit", &v, "minor units ≥ 0"))?,
        };
        let latency_ms = match variable("payment_latency_ms").await? {
            None => 0,
            Some(v) => v
                .parse::<u64>()
                .ok()
                .filter(|n| *n <= MAX_LATENCY_MS)
                .ok_or_else(|| bad_variable("payment_latency_ms", &v, "milliseconds, 0–600000"))?,
        };
        let variable = match variable("payment_outage").await? {
            None => false,
            Some(v) => parse_bool(&v)
                .ok_or_else(|| bad_variable("payment_outage", &v, "`true` or `false`"))?,
        };
        Ok(Self {
            amount_limit,
            latency: Duration::from_millis(latency_ms),
            outage: Outage {
                variable,
                overridden: outage_override().await,
            },
        })
    }
}

/// A variable's value; `None` when it is not defined for the component
/// (the defaults above then apply).
async fn variable(name: &str) -> Result<Option<String>, Problem> {
    match spin_sdk::variables::get(name).await {
        Ok(v) => Ok(Some(v.trim().to_string())),
        Err(spin_sdk::variables::Error::Undefined(_)) => Ok(None),
        Err(e) => Err(Problem::internal(format!("variable {name}: {e:?}"))),
    }
}

fn bad_variable(name: &str, value: &str, expected: &str) -> Problem {
    Problem::internal(format!("variable {name} = `{value}`: expected {expected}"))
}

fn parse_bool(s: &str) -> Option<bool> {
    match s.to_ascii_lowercase().as_str() {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

/// The run-time override. A store that cannot be read counts as no
/// override (and is logged): the switch must not take the service down.
async fn outage_override() -> Option<bool> {
    let read = async {
        let store = Store::open_default().await?;
        store.get(OUTAGE_KEY).await
    };
    match read.await {
        Ok(value) => value.and_then(|v| parse_bool(std::str::from_utf8(&v).ok()?)),
        Err(e) => {
            eprintln!("payment: reading the outage override: {e:?}");
            None
        }
    }
}

/// Sets (`Some`) or clears (`None`) the run-time override.
pub async fn set_outage_override(on: Option<bool>) -> Result<(), Problem> {
    let store = Store::open_default()
        .await
        .map_err(|e| Problem::internal(format!("opening the default key-value store: {e:?}")))?;
    let result = match on {
        Some(on) => store.set(OUTAGE_KEY, on.to_string()).await,
        None => store.delete(OUTAGE_KEY).await,
    };
    result.map_err(|e| Problem::internal(format!("writing {OUTAGE_KEY}: {e:?}")))
}
