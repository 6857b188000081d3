//! The service level objectives a run is judged by, read from
//! `infra/observability/sli-targets.yaml` (the same file the alerts are
//! built from), and the verdict.

use std::path::Path;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use crate::record::Sample;

/// The objectives file.
#[derive(Debug, Deserialize)]
pub struct Targets {
    /// The objectives.
    pub slos: Vec<Objective>,
}

/// One objective.
#[derive(Clone, Debug, Deserialize)]
pub struct Objective {
    /// Its name (`api-availability`, `api-latency`, `events-delivery`).
    pub name: String,
    /// The share of good events it promises, in (0, 1).
    pub objective: f64,
    /// The latency objective's bound.
    #[serde(default)]
    pub threshold_seconds: Option<f64>,
    /// The delivery objective's lag bound.
    #[serde(default)]
    pub max_lag_events: Option<f64>,
}

impl Targets {
    /// Reads `path`.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the SLO targets {}", path.display()))?;
        let targets: Self = serde_norway::from_str(&text)
            .with_context(|| format!("{}: not the SLO targets' shape", path.display()))?;
        for o in &targets.slos {
            anyhow::ensure!(
                o.objective > 0.0 && o.objective < 1.0,
                "{}: {}'s objective must be in (0, 1)",
                path.display(),
                o.name
            );
        }
        Ok(targets)
    }
}

/// The delivery figures of bv's /metrics over a run (see
/// [`crate::metrics`]).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Deliveries {
    /// Deliveries that succeeded during the run.
    pub ok: f64,
    /// All delivery attempts during the run.
    pub all: f64,
    /// The largest subscription lag at the end of the run.
    pub max_lag: f64,
}

/// One objective's verdict.
#[derive(Clone, Debug, Serialize)]
pub struct SloResult {
    /// The objective's name.
    pub name: String,
    /// What it promises.
    pub objective: f64,
    /// What the run measured (`None`: could not be measured).
    pub measured: Option<f64>,
    /// Held, failed, or not evaluated (`None`).
    pub pass: Option<bool>,
    /// Why, in words.
    pub reason: String,
}

/// Judges `samples` (and, when the metrics were read, `deliveries`)
/// against `targets`.
pub fn verdict(
    targets: &Targets,
    samples: &[Sample],
    deliveries: Result<&Deliveries, &str>,
) -> Vec<SloResult> {
    let sent: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.outcome != crate::record::Outcome::Saturated)
        .collect();
    targets
        .slos
        .iter()
        .map(|o| {
            let result = |measured: Option<f64>, pass: Option<bool>, reason: String| SloResult {
                name: o.name.clone(),
                objective: o.objective,
                measured,
                pass,
                reason,
            };
            if sent.is_empty() && o.name.starts_with("api-") {
                return result(None, Some(false), "no request was sent".into());
            }
            match o.name.as_str() {
                "api-availability" => {
                    let bad = sent
                        .iter()
                        .filter(|s| s.outcome.is_server_failure())
                        .count();
                    let share = 1.0 - bad as f64 / sent.len() as f64;
                    let pass = share >= o.objective;
                    result(
                        Some(share),
                        Some(pass),
                        format!(
                            "{bad} of {} requests failed on the server side (5xx, timeout, \
                             connection error): {:.4} {} {}",
                            sent.len(),
                            share,
                            if pass { ">=" } else { "<" },
                            o.objective
                        ),
                    )
                }
                "api-latency" => {
                    let bound = o.threshold_seconds.unwrap_or(0.3);
                    let fast = sent
                        .iter()
                        .filter(|s| {
                            !s.outcome.is_server_failure() && s.latency.as_secs_f64() <= bound
                        })
                        .count();
                    let share = fast as f64 / sent.len() as f64;
                    let pass = share >= o.objective;
                    result(
                        Some(share),
                        Some(pass),
                        format!(
                            "{fast} of {} requests answered within {:.0} ms: {:.4} {} {}",
                            sent.len(),
                            bound * 1000.0,
                            share,
                            if pass { ">=" } else { "<" },
                            o.objective
                        ),
                    )
                }
                "events-delivery" => match deliveries {
                    Err(why) => result(None, None, format!("not evaluated: {why}")),
                    Ok(d) if d.all == 0.0 => {
                        let lag_ok = d.max_lag <= o.max_lag_events.unwrap_or(f64::INFINITY);
                        result(
                            Some(1.0),
                            Some(lag_ok),
                            format!("no delivery attempt during the run; max lag {}", d.max_lag),
                        )
                    }
                    Ok(d) => {
                        let share = d.ok / d.all;
                        let max_lag = o.max_lag_events.unwrap_or(f64::INFINITY);
                        let pass = share >= o.objective && d.max_lag <= max_lag;
                        result(
                            Some(share),
                            Some(pass),
                            format!(
                                "{} of {} deliveries ok ({share:.4} vs {}); largest lag at \
                                 the end {} events (bound {max_lag})",
                                d.ok, d.all, o.objective, d.max_lag
                            ),
                        )
                    }
                },
                other => result(
                    None,
                    None,
                    format!("not evaluated: `{other}` is unknown here"),
                ),
            }
        })
        .collect()
}
