//! What a run saw: one [`Sample`] per request a journey made.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::client::Answer;

/// How a request ended.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Outcome {
    /// 1xx–3xx.
    Ok,
    /// A 4xx answer: a refusal the API documents (out of stock, rate
    /// limited…), named by its problem type.
    Refused(u16, String),
    /// A 5xx answer, named by its problem type.
    ServerError(u16, String),
    /// No answer within the scenario's request timeout.
    Timeout,
    /// The connection failed or closed.
    Transport,
    /// The client had `max_in_flight` journeys running: not sent.
    Saturated,
}

impl Outcome {
    /// The outcome of an answer.
    pub fn of(answer: &Answer) -> Self {
        let kind = || problem_kind(&answer.json());
        match answer.status {
            s if s < 400 => Self::Ok,
            s if s < 500 => Self::Refused(s, kind()),
            s => Self::ServerError(s, kind()),
        }
    }

    /// Whether the server failed to serve it (the availability SLI's
    /// "bad"): a 5xx, a timeout or a cut connection.
    pub fn is_server_failure(&self) -> bool {
        matches!(
            self,
            Self::ServerError(..) | Self::Timeout | Self::Transport
        )
    }

    /// A short name for the report's error tally (`None` for `Ok`).
    pub fn kind(&self) -> Option<String> {
        match self {
            Self::Ok => None,
            Self::Refused(s, k) | Self::ServerError(s, k) => Some(format!("{s} {k}")),
            Self::Timeout => Some("timeout".into()),
            Self::Transport => Some("connection-error".into()),
            Self::Saturated => Some("client-saturated".into()),
        }
    }
}

/// The problem type of an RFC 9457 body, without the platform's URN
/// prefix (`-` when the body is not a problem).
pub fn problem_kind(body: &Value) -> String {
    body["type"]
        .as_str()
        .map(|t| t.trim_start_matches("urn:bitvelocity:problem:").to_string())
        .unwrap_or_else(|| "-".into())
}

/// One request.
#[derive(Clone, Debug)]
pub struct Sample {
    /// The journey's step (`product`, `checkout`…).
    pub step: &'static str,
    /// When it started, from the start of the run.
    pub at: Duration,
    /// How long until its answer (or its failure).
    pub latency: Duration,
    /// How it ended.
    pub outcome: Outcome,
}

/// A mark on the run's timeline (a fault switched on, a process killed).
#[derive(Clone, Debug, serde::Serialize)]
pub struct Mark {
    /// Seconds from the start of the run.
    pub at_s: f64,
    /// What happened.
    pub label: String,
}

/// Collects a run's samples and marks.
pub struct Recorder {
    start: Instant,
    samples: Mutex<Vec<Sample>>,
    marks: Mutex<Vec<Mark>>,
}

impl Recorder {
    /// A recorder whose clock starts now.
    pub fn new() -> Self {
        Self::starting_at(Instant::now())
    }

    /// A recorder whose clock starts at `start`.
    pub fn starting_at(start: Instant) -> Self {
        Self {
            start,
            samples: Mutex::new(Vec::new()),
            marks: Mutex::new(Vec::new()),
        }
    }

    /// When the run started.
    pub fn start(&self) -> Instant {
        self.start
    }

    /// Records `step`, begun at `begun`, ending as `outcome` now.
    pub fn record(&self, step: &'static str, begun: Instant, outcome: Outcome) {
        let sample = Sample {
            step,
            at: begun.saturating_duration_since(self.start),
            latency: begun.elapsed(),
            outcome,
        };
        self.samples.lock().unwrap().push(sample);
    }

    /// Marks the timeline now with `label`.
    pub fn mark(&self, label: impl Into<String>) {
        let mark = Mark {
            at_s: self.start.elapsed().as_secs_f64(),
            label: label.into(),
        };
        self.marks.lock().unwrap().push(mark);
    }

    /// Everything recorded so far.
    pub fn samples(&self) -> Vec<Sample> {
        self.samples.lock().unwrap().clone()
    }

    /// The marks so far.
    pub fn marks(&self) -> Vec<Mark> {
        self.marks.lock().unwrap().clone()
    }
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}
