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
//! A metric with a cycle (`seasonalPeriodSeconds` in its type, say a day)
//! gets a **seasonal baseline**: the cycle is cut into [`SEASON_BUCKETS`]
//! phases, each with its offset from the level, and spike and level judge
//! `value − offset(phase)` (interpolated between neighbouring phases), so
//! the afternoon's warmth is not an anomaly. The first whole cycle only
//! learns (each phase's mean); after it, each phase's offset follows the
//! calm samples of that phase, a step of [`SEASON_STEP`] of their mean
//! residual each time the cycle leaves the phase, so a drift within one
//! phase moves it little and a change of the daily pattern is learnt over
//! a few cycles. Rate and flatline look at the raw values.
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

/// Phases of a seasonal cycle.
pub const SEASON_BUCKETS: usize = 48;
/// How far a phase's offset moves towards its calm samples per cycle.
pub const SEASON_STEP: f64 = 0.3;

/// What the detector knows of a metric from its device type.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct MetricRules {
    /// The fastest plausible change per second (`rate`).
    pub max_rate: Option<f64>,
    /// The period of a seasonal baseline, in milliseconds.
    pub season_ms: Option<i64>,
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
    /// The seasonal baseline, for a metric with a cycle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub season: Option<Season>,
}

/// A seasonal baseline: the offset of each phase of the cycle from the
/// level (`MetricState::mean`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Season {
    /// The cycle, in milliseconds; another period starts over.
    pub period_ms: i64,
    /// The first sample's time.
    pub first_ms: i64,
    /// Whether the first cycle is over (until then, only learning).
    pub learnt: bool,
    /// Each phase's offset; while learning, each phase's sum.
    pub offsets: Vec<f64>,
    /// While learning, each phase's samples; after, only
    /// `counts[phase]`'s entry is in use.
    pub counts: Vec<u32>,
    /// While learning, each phase's sum of squares.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub squares: Vec<f64>,
    /// The phase the newest sample fell in.
    pub phase: usize,
    /// The sum of its calm residuals in this cycle.
    pub residual: f64,
}

impl Season {
    fn new(period_ms: i64, first_ms: i64) -> Self {
        Self {
            period_ms,
            first_ms,
            learnt: false,
            offsets: vec![0.0; SEASON_BUCKETS],
            counts: vec![0; SEASON_BUCKETS],
            squares: vec![0.0; SEASON_BUCKETS],
            phase: 0,
            residual: 0.0,
        }
    }

    /// The position of `ts_ms` in the cycle, in phases (`0..SEASON_BUCKETS`).
    fn position(&self, ts_ms: i64) -> f64 {
        let within = ts_ms.rem_euclid(self.period_ms) as f64 / self.period_ms as f64;
        within * SEASON_BUCKETS as f64
    }

    fn phase_of(&self, ts_ms: i64) -> usize {
        (self.position(ts_ms) as usize).min(SEASON_BUCKETS - 1)
    }

    /// The offset at `ts_ms`, interpolated between the centres of the two
    /// nearest phases.
    fn offset(&self, ts_ms: i64) -> f64 {
        let p = self.position(ts_ms) - 0.5;
        let lower = p.floor();
        let w = p - lower;
        let i0 = (lower as i64).rem_euclid(SEASON_BUCKETS as i64) as usize;
        let i1 = (i0 + 1) % SEASON_BUCKETS;
        (1.0 - w) * self.offsets[i0] + w * self.offsets[i1]
    }

    /// Ends the first cycle: the level is the mean of the phases' means,
    /// each offset its phase's mean from it, the variance the pooled
    /// variance within phases. Returns (mean, variance).
    fn finish_learning(&mut self) -> (f64, f64) {
        let seen: Vec<usize> = (0..SEASON_BUCKETS)
            .filter(|&b| self.counts[b] > 0)
            .collect();
        let means: Vec<f64> = seen
            .iter()
            .map(|&b| self.offsets[b] / f64::from(self.counts[b]))
            .collect();
        let level = means.iter().sum::<f64>() / means.len().max(1) as f64;
        let (mut within, mut samples) = (0.0, 0.0);
        for (&b, m) in seen.iter().zip(&means) {
            let n = f64::from(self.counts[b]);
            within += (self.squares[b] - n * m * m).max(0.0);
            samples += n;
        }
        let mut offsets = vec![0.0; SEASON_BUCKETS];
        for (&b, m) in seen.iter().zip(&means) {
            offsets[b] = m - level;
        }
        self.offsets = offsets;
        self.counts = vec![0; SEASON_BUCKETS];
        self.squares = Vec::new();
        self.learnt = true;
        (level, within / samples.max(1.0))
    }

    /// Moves on to the phase of `ts_ms`; leaving a phase moves its offset
    /// towards the calm residuals it saw. Returns the shift of the level
    /// that keeps the offsets centred on zero.
    fn enter(&mut self, ts_ms: i64) -> f64 {
        let phase = self.phase_of(ts_ms);
        if phase == self.phase {
            return 0.0;
        }
        let left = self.phase;
        let n = self.counts[left];
        self.phase = phase;
        if n == 0 {
            return 0.0;
        }
        self.offsets[left] += SEASON_STEP * self.residual / f64::from(n);
        self.counts[left] = 0;
        self.residual = 0.0;
        let centre = self.offsets.iter().sum::<f64>() / SEASON_BUCKETS as f64;
        for o in &mut self.offsets {
            *o -= centre;
        }
        centre
    }
}

impl MetricState {
    /// Takes the next sample of a metric with these `rules`.
    pub fn observe(
        &mut self,
        config: &DetectorConfig,
        ts_ms: i64,
        value: f64,
        rules: MetricRules,
    ) -> Option<Transition> {
        if self.n > 0 && ts_ms <= self.last_ms {
            return None;
        }
        let max_rate = rules.max_rate;
        match (rules.season_ms, &self.season) {
            (None, Some(_)) => self.season = None,
            (Some(period), season) if season.as_ref().is_none_or(|s| s.period_ms != period) => {
                self.season = Some(Season::new(period, ts_ms));
            }
            _ => {}
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
        let mut offset = 0.0;
        if let Some(season) = self.season.as_mut() {
            if !season.learnt {
                let b = season.phase_of(ts_ms);
                season.offsets[b] += value;
                season.squares[b] += value * value;
                season.counts[b] += 1;
                if ts_ms - season.first_ms >= season.period_ms {
                    let (level, var) = season.finish_learning();
                    season.phase = season.phase_of(ts_ms);
                    self.mean = level;
                    self.var = var;
                    self.fast = level;
                    self.n = self.n.max(config.warmup);
                }
                return None;
            }
            let shift = season.enter(ts_ms);
            self.mean += shift;
            self.fast += shift;
            offset = season.offset(ts_ms);
        }
        let raw = value;
        let value = raw - offset;
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
            let r = (raw - previous.0).abs() / seconds.max(1e-3);
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
            if let Some(season) = self.season.as_mut() {
                season.residual += value - self.mean;
                season.counts[season.phase] += 1;
            }
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
                    baseline: self.mean + offset,
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
/// message's (metric, value) pairs, `rules` each metric's rules.
pub fn evaluate(
    config: &DetectorConfig,
    ts_ms: i64,
    values: &[(String, f64)],
    states: &mut [(String, MetricState)],
    rules: impl Fn(&str) -> MetricRules,
) -> Vec<Change> {
    let mut changes = Vec::new();
    for (metric, state) in states.iter_mut() {
        let Some(value) = values.iter().find(|(m, _)| m == metric).map(|(_, v)| *v) else {
            continue;
        };
        if let Some(transition) = state.observe(config, ts_ms, value, rules(metric)) {
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
                state
                    .observe(&config, t, *v, MetricRules::default())
                    .map(|tr| (t, tr))
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
            s.observe(
                &DetectorConfig::default(),
                5_000,
                99.0,
                MetricRules::default()
            ),
            None
        );
        assert_eq!(s, before);
    }

    #[test]
    fn a_seasonal_state_survives_its_json_between_samples() {
        // The ingester keeps the state as JSON between messages.
        let rules = MetricRules {
            max_rate: None,
            season_ms: Some(600_000),
        };
        let config = DetectorConfig::default();
        let (mut kept, mut json) = (MetricState::default(), String::new());
        let wave = |i: usize| 20.0 + 5.0 * (i as f64 / 600.0 * std::f64::consts::TAU).sin();
        let values = noise(2000);
        for (i, v) in values.iter().enumerate() {
            let t = i as i64 * 1000;
            let x = wave(i) + v - 20.0 + if i == 1500 { 2.0 } else { 0.0 };
            let mut reloaded: MetricState = if json.is_empty() {
                MetricState::default()
            } else {
                serde_json::from_str(&json).unwrap()
            };
            let a = kept.observe(&config, t, x, rules);
            let b = reloaded.observe(&config, t, x, rules);
            // serde_json parses floats to within an ulp, not exactly.
            let what = |t: Option<Transition>| match t {
                Some(Transition::Raised { kind, .. }) => Some((true, kind)),
                Some(Transition::Cleared { kind, .. }) => Some((false, kind)),
                None => None,
            };
            assert_eq!(what(a), what(b), "sample {i}");
            json = serde_json::to_string(&reloaded).unwrap();
            if i == 1500 {
                assert!(
                    matches!(
                        a,
                        Some(Transition::Raised {
                            kind: Kind::Spike,
                            ..
                        })
                    ),
                    "{a:?}"
                );
            } else if i < 1500 {
                assert!(a.is_none(), "sample {i}: {a:?}");
            }
        }
        assert!(kept.season.as_ref().is_some_and(|s| s.learnt));
    }

    #[test]
    fn rate_of_change_uses_the_metric_limit() {
        let mut s = MetricState::default();
        feed(&mut s, &noise(100), 0);
        let rules = MetricRules {
            max_rate: Some(1.0),
            season_ms: None,
        };
        let t = s.observe(&DetectorConfig::default(), 99_000 + 100, 20.6, rules);
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
