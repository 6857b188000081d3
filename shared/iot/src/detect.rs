//! Streaming anomaly detection for one metric of one device.
//!
//! A [`MetricState`] is all the detector remembers (it is stored as JSON
//! beside the metric); [`MetricState::observe`] takes the next sample and
//! answers whether an incident was raised or cleared. Four detectors look
//! at each sample:
//!
//! - **spike**: `|x − mean| / sd ≥ spike_z`, against a slow EWMA baseline
//!   (mean and variance, `alpha_slow`);
//! - **level** (drifts and shifts): a fast EWMA (`alpha_fast`) that moves
//!   away from the slow baseline by `level_z` of its own standard error,
//!   `sd·√(α/(2−α))`;
//! - **rate**: faster than the metric's `maxRatePerSecond`;
//! - **flatline** (a stuck sensor): the same value `flat_samples` times in a
//!   row.
//!
//! The baseline learns only from calm samples (`|z| < 3`, no incident
//! open), so an incident does not teach the detector that it is normal.
//! Hysteresis makes one incident one alert: an incident opens when any
//! detector fires, and closes only after `clear_after` samples in a row on
//! which none fires. Samples older than the newest one seen are stored but
//! not evaluated (the detector is a stream in time order). The first
//! `warmup` samples only learn.

use serde::{Deserialize, Serialize};

/// The detector's settings; [`Default`] is what the platform runs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DetectorConfig {
    /// Weight of a new sample in the baseline.
    pub alpha_slow: f64,
    /// Weight of a new sample in the level.
    pub alpha_fast: f64,
    /// Samples that only learn.
    pub warmup: u64,
    /// Spike threshold, in baseline standard deviations.
    pub spike_z: f64,
    /// Level threshold, in standard errors of the fast EWMA.
    pub level_z: f64,
    /// Equal samples in a row that make a flatline.
    pub flat_samples: u32,
    /// Quiet samples in a row that close an incident.
    pub clear_after: u32,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        Self {
            alpha_slow: 0.01,
            alpha_fast: 0.1,
            warmup: 30,
            spike_z: 5.0,
            level_z: 5.0,
            flat_samples: 10,
            clear_after: 5,
        }
    }
}

/// What fired first in an incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// One or a few samples far from the baseline.
    Spike,
    /// The level moved away from the baseline (a drift or a shift).
    Level,
    /// Faster change than the metric allows.
    Rate,
    /// The same value over and over: a stuck sensor.
    Flatline,
}

impl Kind {
    /// The name in events and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Spike => "spike",
            Kind::Level => "level",
            Kind::Rate => "rate",
            Kind::Flatline => "flatline",
        }
    }
}

/// An incident opened or closed by a sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Transition {
    /// An incident opened.
    Raised {
        /// The detector that fired.
        kind: Kind,
        /// Its score (z, or the rate, or the run length).
        score: f64,
        /// The baseline mean at the time.
        baseline: f64,
    },
    /// The open incident closed.
    Cleared {
        /// The detector that opened it.
        kind: Kind,
        /// When it opened, milliseconds since the epoch.
        since_ms: i64,
    },
}

/// The detector's memory for one metric of one device.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetricState {
    /// Samples evaluated.
    pub n: u64,
    /// Baseline mean.
    pub mean: f64,
    /// Baseline variance.
    pub var: f64,
    /// The fast EWMA.
    pub fast: f64,
    /// The newest sample.
    pub last_value: f64,
    /// Its time.
    pub last_ms: i64,
    /// Equal samples in a row, beyond the first.
    pub flat_run: u32,
    /// The open incident, if any.
    pub open: Option<Kind>,
    /// When it opened.
    pub open_since_ms: i64,
    /// Quiet samples since the last firing, while an incident is open.
    pub calm: u32,
}

impl MetricState {
    /// Takes the next sample; `max_rate` is the metric's limit per second.
    pub fn observe(
        &mut self,
        config: &DetectorConfig,
        ts_ms: i64,
        value: f64,
        max_rate: Option<f64>,
    ) -> Option<Transition> {
        if self.n > 0 && ts_ms <= self.last_ms {
            return None;
        }
        let first = self.n == 0;
        let previous = (self.last_value, self.last_ms);
        self.flat_run = if !first && value == self.last_value {
            self.flat_run + 1
        } else {
            0
        };
        self.last_value = value;
        self.last_ms = ts_ms;
        self.n += 1;
        if self.n <= config.warmup {
            // Learn quickly: a running mean and variance, then the EWMA.
            let alpha = (1.0 / self.n as f64).max(config.alpha_slow);
            self.learn(value, alpha);
            self.fast = self.mean;
            return None;
        }
        let sd = self.var.sqrt().max(1e-9);
        let z = (value - self.mean).abs() / sd;
        let af = config.alpha_fast;
        self.fast += af * (value - self.fast);
        let level_z = (self.fast - self.mean).abs() / (sd * (af / (2.0 - af)).sqrt());
        let rate = max_rate.and_then(|limit| {
            let seconds = (ts_ms - previous.1) as f64 / 1000.0;
            let r = (value - previous.0).abs() / seconds.max(1e-3);
            (r > limit).then_some(r)
        });
        let firing = if self.flat_run + 1 >= config.flat_samples {
            Some((Kind::Flatline, f64::from(self.flat_run + 1)))
        } else if let Some(r) = rate {
            Some((Kind::Rate, r))
        } else if z >= config.spike_z {
            Some((Kind::Spike, z))
        } else if level_z >= config.level_z {
            Some((Kind::Level, level_z))
        } else {
            None
        };
        if self.open.is_none() && firing.is_none() && z < 3.0 {
            self.learn(value, config.alpha_slow);
        }
        match (self.open, firing) {
            (None, Some((kind, score))) => {
                self.open = Some(kind);
                self.open_since_ms = ts_ms;
                self.calm = 0;
                Some(Transition::Raised {
                    kind,
                    score,
                    baseline: self.mean,
                })
            }
            (Some(_), Some(_)) => {
                self.calm = 0;
                None
            }
            (Some(kind), None) => {
                self.calm += 1;
                if self.calm < config.clear_after {
                    return None;
                }
                self.open = None;
                self.calm = 0;
                // Start the level from the baseline again, so that the
                // decay of the incident does not open the next one.
                self.fast = self.mean;
                Some(Transition::Cleared {
                    kind,
                    since_ms: self.open_since_ms,
                })
            }
            (None, None) => None,
        }
    }

    fn learn(&mut self, value: f64, alpha: f64) {
        let delta = value - self.mean;
        self.mean += alpha * delta;
        self.var = (1.0 - alpha) * (self.var + alpha * delta * delta);
    }
}

/// A transition of one metric of a message.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// The metric.
    pub metric: String,
    /// The sample that caused it.
    pub value: f64,
    /// Opened or closed.
    pub transition: Transition,
}

/// Runs each metric's detector over one message's values: `states` holds
/// the state of every metric to evaluate (updated in place), `values` the
/// message's (metric, value) pairs, `max_rate` each metric's limit.
pub fn evaluate(
    config: &DetectorConfig,
    ts_ms: i64,
    values: &[(String, f64)],
    states: &mut [(String, MetricState)],
    max_rate: impl Fn(&str) -> Option<f64>,
) -> Vec<Change> {
    let mut changes = Vec::new();
    for (metric, state) in states.iter_mut() {
        let Some(value) = values.iter().find(|(m, _)| m == metric).map(|(_, v)| *v) else {
            continue;
        };
        if let Some(transition) = state.observe(config, ts_ms, value, max_rate(metric)) {
            changes.push(Change {
                metric: metric.clone(),
                value,
                transition,
            });
        }
    }
    changes
}

/// The `data` of the event a [`Change`] publishes, and its type: an
/// opened incident is `iot.anomaly.detected`, a closed one
/// `iot.anomaly.cleared` (schemas in shared/events/schemas).
pub fn event_data(
    change: &Change,
    anomaly_id: i64,
    device: &str,
    owner: &str,
    at: &str,
) -> (&'static str, serde_json::Value) {
    let finite = |x: f64| if x.is_finite() { x } else { f64::MAX };
    match change.transition {
        Transition::Raised {
            kind,
            score,
            baseline,
        } => (
            DETECTED,
            serde_json::json!({
                "anomalyId": anomaly_id, "deviceId": device, "owner": owner,
                "metric": change.metric, "kind": kind.as_str(), "value": change.value,
                "score": finite(score), "baseline": finite(baseline), "at": at,
            }),
        ),
        Transition::Cleared { kind, since_ms } => (
            CLEARED,
            serde_json::json!({
                "anomalyId": anomaly_id, "deviceId": device, "owner": owner,
                "metric": change.metric, "kind": kind.as_str(),
                "openedAt": crate::message::format_ms(since_ms), "at": at,
            }),
        ),
    }
}

/// The event type of an opened incident.
pub const DETECTED: &str = "com.bitvelocity.iot.anomaly.detected.v1";
/// The event type of a closed incident.
pub const CLEARED: &str = "com.bitvelocity.iot.anomaly.cleared.v1";
/// The `source` of IoT events.
pub const SOURCE: &str = "/iot";

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(state: &mut MetricState, values: &[f64], from: i64) -> Vec<(i64, Transition)> {
        let config = DetectorConfig::default();
        values
            .iter()
            .enumerate()
            .filter_map(|(i, v)| {
                let t = (from + i as i64) * 1000;
                state.observe(&config, t, *v, None).map(|tr| (t, tr))
            })
            .collect()
    }

    fn noise(n: usize) -> Vec<f64> {
        // A fixed, irregular pattern with sd about 0.1.
        (0..n)
            .map(|i| 20.0 + ((i * 7919 % 23) as f64 - 11.0) / 66.0)
            .collect()
    }

    #[test]
    fn a_spike_raises_once_and_clears() {
        let mut s = MetricState::default();
        assert!(feed(&mut s, &noise(200), 0).is_empty());
        let mut tail = vec![25.0, 25.0];
        tail.extend(noise(60));
        let got = feed(&mut s, &tail, 200);
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(matches!(
            got[0].1,
            Transition::Raised {
                kind: Kind::Spike,
                ..
            }
        ));
        assert!(matches!(
            got[1].1,
            Transition::Cleared {
                kind: Kind::Spike,
                since_ms: 200_000
            }
        ));
    }

    #[test]
    fn a_stuck_sensor_is_a_flatline() {
        let mut s = MetricState::default();
        feed(&mut s, &noise(200), 0);
        let got = feed(&mut s, &[20.05; 30], 200);
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(matches!(
            got[0].1,
            Transition::Raised {
                kind: Kind::Flatline,
                ..
            }
        ));
    }

    #[test]
    fn old_samples_are_not_evaluated() {
        let mut s = MetricState::default();
        feed(&mut s, &noise(100), 0);
        let before = s.clone();
        assert_eq!(
            s.observe(&DetectorConfig::default(), 5_000, 99.0, None),
            None
        );
        assert_eq!(s, before);
    }

    #[test]
    fn rate_of_change_uses_the_metric_limit() {
        let mut s = MetricState::default();
        feed(&mut s, &noise(100), 0);
        let t = s.observe(&DetectorConfig::default(), 99_000 + 100, 20.6, Some(1.0));
        assert!(
            matches!(
                t,
                Some(Transition::Raised {
                    kind: Kind::Rate,
                    ..
                })
            ),
            "{t:?}"
        );
    }
}
