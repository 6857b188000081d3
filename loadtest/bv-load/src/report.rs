//! A run's report: per step rate, latency percentiles and errors by kind,
//! the timeline, and the SLO verdict; written as text, JSON and PNG plots.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::record::{Mark, Outcome, Sample};
use crate::slo::SloResult;

/// One step's figures.
#[derive(Clone, Debug, Serialize)]
pub struct StepReport {
    /// The step.
    pub step: String,
    /// Requests made.
    pub count: u64,
    /// Answered below 400.
    pub ok: u64,
    /// Requests per second over the run.
    pub rate_per_s: f64,
    /// Latency percentiles and maximum, milliseconds.
    pub p50_ms: f64,
    /// 95th percentile.
    pub p95_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Slowest.
    pub max_ms: f64,
    /// Everything that was not `ok`, by kind.
    pub errors: BTreeMap<String, u64>,
}

/// One second of the run.
#[derive(Clone, Debug, Serialize)]
pub struct Second {
    /// Seconds from the start.
    pub t: u64,
    /// Requests started in it.
    pub requests: u64,
    /// Of which failed on the server side (5xx, timeout, connection).
    pub server_failures: u64,
    /// Of which refused (4xx).
    pub refused: u64,
    /// Latency percentiles of its requests, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
}

/// A whole run.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The scenario (or experiment) name.
    pub name: String,
    /// What it exercises.
    pub description: String,
    /// Seconds the run lasted.
    pub duration_s: f64,
    /// Journeys started, by kind.
    pub journeys: BTreeMap<String, u64>,
    /// Per step.
    pub steps: Vec<StepReport>,
    /// All steps' non-`ok` outcomes, by kind.
    pub errors: BTreeMap<String, u64>,
    /// Per second.
    pub timeline: Vec<Second>,
    /// Events on the timeline (faults, kills).
    pub marks: Vec<Mark>,
    /// The SLO verdict.
    pub slo: Vec<SloResult>,
    /// Whether every evaluated objective held.
    pub pass: bool,
    /// Whether the verdict decides the run (a load run), or is reported
    /// only (a game day's whole run, judged by its phases instead).
    pub gating: bool,
}

fn histogram(samples: &[&Sample]) -> Histogram<u64> {
    let mut h = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds");
    for s in samples {
        h.saturating_record(s.latency.as_micros().max(1) as u64);
    }
    h
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    if h.is_empty() {
        0.0
    } else {
        h.value_at_quantile(q) as f64 / 1000.0
    }
}

impl Report {
    /// The report of `samples` over `duration`.
    pub fn new(
        name: &str,
        description: &str,
        duration: Duration,
        journeys: BTreeMap<String, u64>,
        samples: &[Sample],
        marks: Vec<Mark>,
        slo: Vec<SloResult>,
    ) -> Self {
        let seconds = duration.as_secs_f64().max(0.001);
        let mut by_step: BTreeMap<&str, Vec<&Sample>> = BTreeMap::new();
        let mut errors = BTreeMap::new();
        for s in samples {
            by_step.entry(s.step).or_default().push(s);
            if let Some(kind) = s.outcome.kind() {
                *errors.entry(kind).or_insert(0) += 1;
            }
        }
        let steps = by_step
            .into_iter()
            .map(|(step, list)| {
                let sent: Vec<&Sample> = list
                    .iter()
                    .copied()
                    .filter(|s| s.outcome != Outcome::Saturated)
                    .collect();
                let h = histogram(&sent);
                let mut errors = BTreeMap::new();
                for s in &list {
                    if let Some(kind) = s.outcome.kind() {
                        *errors.entry(kind).or_insert(0) += 1;
                    }
                }
                StepReport {
                    step: step.to_string(),
                    count: list.len() as u64,
                    ok: list.iter().filter(|s| s.outcome == Outcome::Ok).count() as u64,
                    rate_per_s: list.len() as f64 / seconds,
                    p50_ms: ms(&h, 0.50),
                    p95_ms: ms(&h, 0.95),
                    p99_ms: ms(&h, 0.99),
                    max_ms: if h.is_empty() {
                        0.0
                    } else {
                        h.max() as f64 / 1000.0
                    },
                    errors,
                }
            })
            .collect();
        let last = samples.iter().map(|s| s.at.as_secs()).max().unwrap_or(0);
        let mut per_second: Vec<Vec<&Sample>> = vec![Vec::new(); last as usize + 1];
        for s in samples.iter().filter(|s| s.outcome != Outcome::Saturated) {
            per_second[s.at.as_secs() as usize].push(s);
        }
        let timeline = per_second
            .iter()
            .enumerate()
            .map(|(t, list)| {
                let h = histogram(list);
                Second {
                    t: t as u64,
                    requests: list.len() as u64,
                    server_failures: list
                        .iter()
                        .filter(|s| s.outcome.is_server_failure())
                        .count() as u64,
                    refused: list
                        .iter()
                        .filter(|s| matches!(s.outcome, Outcome::Refused(..)))
                        .count() as u64,
                    p50_ms: ms(&h, 0.50),
                    p99_ms: ms(&h, 0.99),
                }
            })
            .collect();
        let pass = slo.iter().all(|r| r.pass != Some(false));
        Self {
            name: name.to_string(),
            description: description.to_string(),
            duration_s: duration.as_secs_f64(),
            journeys,
            steps,
            errors,
            timeline,
            marks,
            slo,
            pass,
            gating: true,
        }
    }

    /// Marks the verdict as reported only: something else judges the run
    /// (a game day judges its phases, and a fault is meant to break the
    /// whole run's objectives).
    pub fn reported_only(mut self) -> Self {
        self.gating = false;
        self
    }

    /// The report as text: the tables a person reads.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# {} ({:.1} s)", self.name, self.duration_s);
        if !self.description.is_empty() {
            let _ = writeln!(out, "{}", self.description.trim());
        }
        let journeys: Vec<String> = self
            .journeys
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        let _ = writeln!(out, "\njourneys started: {}", journeys.join(", "));
        let _ = writeln!(
            out,
            "\n{:<16} {:>8} {:>8} {:>8} {:>9} {:>9} {:>9} {:>9}  errors",
            "step", "count", "ok", "rate/s", "p50 ms", "p95 ms", "p99 ms", "max ms"
        );
        for s in &self.steps {
            let errors: Vec<String> = s.errors.iter().map(|(k, n)| format!("{k}: {n}")).collect();
            let _ = writeln!(
                out,
                "{:<16} {:>8} {:>8} {:>8.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1}  {}",
                s.step,
                s.count,
                s.ok,
                s.rate_per_s,
                s.p50_ms,
                s.p95_ms,
                s.p99_ms,
                s.max_ms,
                if errors.is_empty() {
                    "-".into()
                } else {
                    errors.join(", ")
                }
            );
        }
        for m in &self.marks {
            let _ = writeln!(out, "mark at {:.1} s: {}", m.at_s, m.label);
        }
        let verdict = if self.pass { "PASS" } else { "FAIL" };
        if self.gating {
            let _ = writeln!(out, "\nSLO verdict: {verdict}");
        } else {
            let _ = writeln!(
                out,
                "\nSLO verdict over the whole run, faults included (reported only; the phases above decide): {verdict}"
            );
        }
        for r in &self.slo {
            let verdict = match r.pass {
                Some(true) => "pass",
                Some(false) => "FAIL",
                None => "n/a ",
            };
            let _ = writeln!(out, "  {verdict}  {:<18} {}", r.name, r.reason);
        }
        out
    }

    /// Writes `<dir>/<stem>.txt`, `.json`, `-latency.png` and
    /// `-throughput.png`; returns their paths.
    pub fn write(&self, dir: &Path, stem: &str) -> anyhow::Result<Vec<PathBuf>> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let text = dir.join(format!("{stem}.txt"));
        std::fs::write(&text, self.text()).with_context(|| text.display().to_string())?;
        let json = dir.join(format!("{stem}.json"));
        std::fs::write(&json, serde_json::to_vec_pretty(self)?)
            .with_context(|| json.display().to_string())?;
        let latency = dir.join(format!("{stem}-latency.png"));
        crate::plot::latency(self, &latency)?;
        let throughput = dir.join(format!("{stem}-throughput.png"));
        crate::plot::throughput(self, &throughput)?;
        Ok(vec![text, json, latency, throughput])
    }
}
