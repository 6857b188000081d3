//! What a fault is, as written in a chaos file or sent to the admin API
//! ([`FaultSpec`]), and the checked form the runtime applies ([`Fault`]).

use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// A capability whose calls a fault can be injected into.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Capability {
    /// `spin:postgres`: opening a connection, queries and statements.
    Postgres,
    /// `spin:redis` (outbound Redis): every command and publish.
    Redis,
    /// `spin:key-value`: every store operation.
    KeyValue,
    /// `spin:mqtt` (outbound MQTT): publishing.
    Mqtt,
    /// Outbound HTTP to hosts outside the application.
    Http,
    /// Service chaining: outbound HTTP to `*.spin.internal`.
    Chained,
    /// `spin:sqlite`: every statement.
    Sqlite,
}

impl Capability {
    /// The name used in chaos files, the admin API and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Capability::Postgres => "postgres",
            Capability::Redis => "redis",
            Capability::KeyValue => "key-value",
            Capability::Mqtt => "mqtt",
            Capability::Http => "http",
            Capability::Chained => "chained",
            Capability::Sqlite => "sqlite",
        }
    }
}

/// What an injected fault does to the call.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EffectKind {
    /// The call fails at once with the capability's own error.
    Fail,
    /// The call waits `delay_ms`, then runs.
    Delay,
    /// The call never answers; the component's request timeout (or the
    /// trigger's delivery timeout) ends it.
    Hang,
}

impl EffectKind {
    /// The name used in chaos files, the admin API and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            EffectKind::Fail => "fail",
            EffectKind::Delay => "delay",
            EffectKind::Hang => "hang",
        }
    }
}

/// Longest delay a fault may add: ten minutes.
pub const MAX_DELAY_MS: u64 = 600_000;

/// One fault as written: a `[[fault]]` table of a chaos file, or an element
/// of the admin API's `faults` array.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultSpec {
    /// The component whose calls are hit, or `*` for every component.
    pub component: String,
    /// Which of its capabilities.
    pub capability: Capability,
    /// What happens to a hit call.
    pub effect: EffectKind,
    /// For `delay`: how long each hit call waits, 1 to 600,000 ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
    /// The share of calls hit, more than 0 and at most 1 (default 1: all).
    #[serde(default = "all_calls")]
    pub share: f64,
    /// How long the fault lasts once switched on, in seconds (default:
    /// until removed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_s: Option<u64>,
}

fn all_calls() -> f64 {
    1.0
}

/// Why a [`FaultSpec`] was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SpecError {
    /// The component is not in the application.
    #[error("no component `{0}` in the application (use a component id or `*`)")]
    UnknownComponent(String),
    /// `delay` without `delay_ms`.
    #[error("effect `delay` needs `delay_ms`")]
    MissingDelay,
    /// `delay_ms` with another effect.
    #[error("`delay_ms` is only for effect `delay`")]
    DelayWithoutDelayEffect,
    /// `delay_ms` out of range.
    #[error("`delay_ms` must be between 1 and {MAX_DELAY_MS}, not {0}")]
    DelayOutOfRange(u64),
    /// `share` out of range.
    #[error("`share` must be more than 0 and at most 1, not {0}")]
    ShareOutOfRange(f64),
    /// `duration_s` of zero.
    #[error("`duration_s` must be at least 1")]
    ZeroDuration,
}

/// What a hit call suffers, checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Fails at once.
    Fail,
    /// Waits, then runs.
    Delay(Duration),
    /// Never answers.
    Hang,
}

/// A fault switched on: a checked [`FaultSpec`] with its id, its end and its
/// count of hit calls.
#[derive(Debug)]
pub struct Fault {
    /// Assigned when switched on; names it in the admin API, logs and traces.
    pub id: u64,
    /// As written.
    pub spec: FaultSpec,
    /// `None` for every component.
    pub(crate) component: Option<String>,
    pub(crate) effect: Effect,
    /// When it stops hitting calls (`None`: never).
    pub(crate) until: Option<Instant>,
    /// Calls hit so far.
    pub(crate) injected: AtomicU64,
}

impl Fault {
    /// Checks `spec` against the application's `components`; the fault
    /// starts now.
    pub fn parse(
        id: u64,
        spec: FaultSpec,
        components: &[String],
        now: Instant,
    ) -> Result<Self, SpecError> {
        let component = match spec.component.as_str() {
            "*" => None,
            id if components.iter().any(|c| c == id) => Some(id.to_string()),
            other => return Err(SpecError::UnknownComponent(other.to_string())),
        };
        let effect = match (spec.effect, spec.delay_ms) {
            (EffectKind::Delay, None) => return Err(SpecError::MissingDelay),
            (EffectKind::Delay, Some(ms)) if ms == 0 || ms > MAX_DELAY_MS => {
                return Err(SpecError::DelayOutOfRange(ms))
            }
            (EffectKind::Delay, Some(ms)) => Effect::Delay(Duration::from_millis(ms)),
            (_, Some(_)) => return Err(SpecError::DelayWithoutDelayEffect),
            (EffectKind::Fail, None) => Effect::Fail,
            (EffectKind::Hang, None) => Effect::Hang,
        };
        // `!(x > 0)` also refuses NaN.
        if !(spec.share > 0.0 && spec.share <= 1.0) {
            return Err(SpecError::ShareOutOfRange(spec.share));
        }
        let until = match spec.duration_s {
            Some(0) => return Err(SpecError::ZeroDuration),
            Some(s) => Some(now + Duration::from_secs(s)),
            None => None,
        };
        Ok(Self {
            id,
            spec,
            component,
            effect,
            until,
            injected: AtomicU64::new(0),
        })
    }

    /// Whether it hits calls of `component` to `capability` at `now`.
    pub(crate) fn applies(&self, component: &str, capability: Capability, now: Instant) -> bool {
        self.spec.capability == capability
            && self.component.as_deref().is_none_or(|c| c == component)
            && !self.ended(now)
    }

    /// Whether its duration has passed.
    pub(crate) fn ended(&self, now: Instant) -> bool {
        self.until.is_some_and(|until| now >= until)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(effect: EffectKind) -> FaultSpec {
        FaultSpec {
            component: "product".into(),
            capability: Capability::Postgres,
            effect,
            delay_ms: None,
            share: 1.0,
            duration_s: None,
        }
    }

    fn parse(spec: FaultSpec) -> Result<Fault, SpecError> {
        Fault::parse(1, spec, &["product".into(), "cart".into()], Instant::now())
    }

    #[test]
    fn bad_specs_are_refused_with_their_reason() {
        let mut unknown = spec(EffectKind::Fail);
        unknown.component = "nope".into();
        assert_eq!(
            parse(unknown).unwrap_err(),
            SpecError::UnknownComponent("nope".into())
        );
        assert_eq!(
            parse(spec(EffectKind::Delay)).unwrap_err(),
            SpecError::MissingDelay
        );
        let mut zero = spec(EffectKind::Delay);
        zero.delay_ms = Some(0);
        assert_eq!(parse(zero).unwrap_err(), SpecError::DelayOutOfRange(0));
        let mut stray = spec(EffectKind::Fail);
        stray.delay_ms = Some(5);
        assert_eq!(
            parse(stray).unwrap_err(),
            SpecError::DelayWithoutDelayEffect
        );
        for share in [0.0, -0.5, 1.5, f64::NAN] {
            let mut s = spec(EffectKind::Hang);
            s.share = share;
            assert!(matches!(
                parse(s).unwrap_err(),
                SpecError::ShareOutOfRange(_)
            ));
        }
        let mut zero_duration = spec(EffectKind::Fail);
        zero_duration.duration_s = Some(0);
        assert_eq!(parse(zero_duration).unwrap_err(), SpecError::ZeroDuration);
    }

    #[test]
    fn a_fault_hits_its_component_and_capability_until_it_ends() {
        let now = Instant::now();
        let mut s = spec(EffectKind::Fail);
        s.duration_s = Some(10);
        let fault = Fault::parse(1, s, &["product".into()], now).unwrap();
        assert!(fault.applies("product", Capability::Postgres, now));
        assert!(!fault.applies("cart", Capability::Postgres, now));
        assert!(!fault.applies("product", Capability::Redis, now));
        assert!(!fault.applies(
            "product",
            Capability::Postgres,
            now + Duration::from_secs(10)
        ));

        let mut every = spec(EffectKind::Fail);
        every.component = "*".into();
        let every = Fault::parse(2, every, &[], now).unwrap();
        assert!(every.applies("cart", Capability::Postgres, now));
    }
}
