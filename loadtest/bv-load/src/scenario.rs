//! A load scenario as its file declares it (`loadtest/scenarios/*.toml`),
//! parsed into a [`Scenario`] whose rates, durations and weights are known
//! to make sense: nothing later re-checks them.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

/// A scenario file that cannot be run, with the reason.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The TOML does not have the scenario's shape.
    #[error("{0}")]
    Shape(String),
    /// A value is out of its range.
    #[error("{field}: {reason}")]
    Invalid {
        /// Where, e.g. `stage[2].rate`.
        field: String,
        /// What is wrong.
        reason: String,
    },
}

/// What a virtual user does, start to end.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum JourneyKind {
    /// Catalogue page, a search, a product page.
    Browse,
    /// Browse, a product, add to cart, check out, follow the order to its
    /// outcome.
    Shop,
    /// Add the run's one flash-sale product (little stock) and check out at
    /// once: most are refused `insufficient-stock`, none oversold.
    FlashSale,
    /// Register a new account, then log in.
    Register,
    /// A burst of restocks by an admin: durable `stock.restocked` events
    /// for the consumers.
    EventBurst,
}

impl JourneyKind {
    /// The name the scenario file and the report use.
    pub fn name(self) -> &'static str {
        match self {
            Self::Browse => "browse",
            Self::Shop => "shop",
            Self::FlashSale => "flash-sale",
            Self::Register => "register",
            Self::EventBurst => "event-burst",
        }
    }
}

/// One stage of the arrival rate: from `from_rate` to `to_rate` journeys
/// per second, linearly, over `duration`.
#[derive(Clone, Debug, PartialEq)]
pub struct Stage {
    /// How long it lasts.
    pub duration: Duration,
    /// Journeys started per second at its start.
    pub from_rate: f64,
    /// Journeys started per second at its end.
    pub to_rate: f64,
}

/// The data a run seeds before it starts: its own products, so runs never
/// share stock.
#[derive(Clone, Debug, PartialEq)]
pub struct Seed {
    /// Products for browsing and shopping.
    pub products: usize,
    /// Units of stock each of them gets.
    pub stock: i64,
    /// Units of the flash-sale product.
    pub flash_stock: i64,
}

/// A runnable scenario.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// Its name (the reports' file names).
    pub name: String,
    /// What it exercises, for the report.
    pub description: String,
    /// The arrival rate over time.
    pub stages: Vec<Stage>,
    /// Journeys and their weights (a share of arrivals each).
    pub journeys: Vec<(JourneyKind, u32)>,
    /// Pause between a journey's steps: uniform in this range.
    pub think_time: (Duration, Duration),
    /// Data seeded per run.
    pub seed: Seed,
    /// Journeys in flight at most; an arrival past it is counted as
    /// `client-saturated`, not delayed (the model stays open).
    pub max_in_flight: usize,
    /// A request's bound; past it the step is `timeout`.
    pub request_timeout: Duration,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    name: String,
    #[serde(default)]
    description: String,
    #[serde(rename = "stage")]
    stages: Vec<StageFile>,
    #[serde(rename = "journey")]
    journeys: Vec<JourneyFile>,
    #[serde(default)]
    think_time_ms: Option<RangeFile>,
    #[serde(default)]
    seed: Option<SeedFile>,
    #[serde(default = "default_max_in_flight")]
    max_in_flight: usize,
    #[serde(default = "default_request_timeout_ms")]
    request_timeout_ms: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StageFile {
    duration_s: f64,
    rate: f64,
    #[serde(default)]
    ramp: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JourneyFile {
    kind: JourneyKind,
    #[serde(default = "one")]
    weight: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RangeFile {
    min: u64,
    max: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SeedFile {
    #[serde(default = "default_products")]
    products: usize,
    #[serde(default = "default_stock")]
    stock: i64,
    #[serde(default = "default_flash_stock")]
    flash_stock: i64,
}

fn one() -> u32 {
    1
}
fn default_max_in_flight() -> usize {
    500
}
fn default_request_timeout_ms() -> u64 {
    10_000
}
fn default_products() -> usize {
    8
}
fn default_stock() -> i64 {
    1_000_000
}
fn default_flash_stock() -> i64 {
    20
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ScenarioError {
    ScenarioError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

impl Scenario {
    /// Reads and parses `path`.
    pub fn load(path: &Path) -> Result<Self, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text).map_err(|e| match e {
            ScenarioError::Shape(m) => ScenarioError::Shape(format!("{}: {m}", path.display())),
            ScenarioError::Invalid { field, reason } => ScenarioError::Invalid {
                field: format!("{}: {field}", path.display()),
                reason,
            },
            other => other,
        })
    }

    /// Parses a scenario file's text.
    pub fn parse(text: &str) -> Result<Self, ScenarioError> {
        let file: File = toml::from_str(text).map_err(|e| ScenarioError::Shape(e.to_string()))?;
        let name_ok = !file.name.is_empty()
            && file.name.len() <= 64
            && file
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !name_ok {
            return Err(invalid("name", "1–64 of a-z, 0-9 and `-`"));
        }
        if file.stages.is_empty() {
            return Err(invalid("stage", "at least one [[stage]]"));
        }
        let mut stages = Vec::new();
        let mut previous = 0.0;
        for (i, s) in file.stages.iter().enumerate() {
            if !(s.duration_s > 0.0 && s.duration_s <= 86_400.0) {
                return Err(invalid(format!("stage[{i}].duration_s"), "in (0, 86400]"));
            }
            if !(s.rate >= 0.0 && s.rate <= 100_000.0) {
                return Err(invalid(format!("stage[{i}].rate"), "in [0, 100000]"));
            }
            if i == 0 && s.ramp && s.rate == 0.0 {
                return Err(invalid("stage[0]", "a ramp from 0 to 0 starts nothing"));
            }
            stages.push(Stage {
                duration: Duration::from_secs_f64(s.duration_s),
                from_rate: if s.ramp { previous } else { s.rate },
                to_rate: s.rate,
            });
            previous = s.rate;
        }
        if stages
            .iter()
            .all(|s| s.from_rate == 0.0 && s.to_rate == 0.0)
        {
            return Err(invalid("stage", "every rate is 0: nothing would run"));
        }
        if file.journeys.is_empty() {
            return Err(invalid("journey", "at least one [[journey]]"));
        }
        let mut journeys = Vec::new();
        for (i, j) in file.journeys.iter().enumerate() {
            if j.weight == 0 || j.weight > 1000 {
                return Err(invalid(format!("journey[{i}].weight"), "in 1..=1000"));
            }
            if journeys.iter().any(|(k, _)| *k == j.kind) {
                return Err(invalid(
                    format!("journey[{i}].kind"),
                    format!("`{}` is listed twice", j.kind.name()),
                ));
            }
            journeys.push((j.kind, j.weight));
        }
        let think = file.think_time_ms.unwrap_or(RangeFile { min: 0, max: 0 });
        if think.min > think.max || think.max > 60_000 {
            return Err(invalid("think_time_ms", "min <= max <= 60000"));
        }
        let seed = file.seed.unwrap_or(SeedFile {
            products: default_products(),
            stock: default_stock(),
            flash_stock: default_flash_stock(),
        });
        if !(1..=100).contains(&seed.products) {
            return Err(invalid("seed.products", "in 1..=100"));
        }
        if !(1..=1_000_000_000).contains(&seed.stock)
            || !(1..=1_000_000).contains(&seed.flash_stock)
        {
            return Err(invalid("seed", "stock in 1..=1e9, flash_stock in 1..=1e6"));
        }
        if !(1..=100_000).contains(&file.max_in_flight) {
            return Err(invalid("max_in_flight", "in 1..=100000"));
        }
        if !(100..=600_000).contains(&file.request_timeout_ms) {
            return Err(invalid("request_timeout_ms", "in 100..=600000"));
        }
        Ok(Self {
            name: file.name,
            description: file.description,
            stages,
            journeys,
            think_time: (
                Duration::from_millis(think.min),
                Duration::from_millis(think.max),
            ),
            seed: Seed {
                products: seed.products,
                stock: seed.stock,
                flash_stock: seed.flash_stock,
            },
            max_in_flight: file.max_in_flight,
            request_timeout: Duration::from_millis(file.request_timeout_ms),
        })
    }

    /// The same scenario with every stage `factor` times as long (a short
    /// form of a long run, same rates).
    pub fn time_scaled(mut self, factor: f64) -> Self {
        for s in &mut self.stages {
            s.duration = s.duration.mul_f64(factor);
        }
        self
    }

    /// The same scenario with every rate `factor` times as high (a spike).
    pub fn rate_scaled(mut self, factor: f64) -> Self {
        for s in &mut self.stages {
            s.from_rate *= factor;
            s.to_rate *= factor;
        }
        self
    }

    /// How long its stages last in all.
    pub fn duration(&self) -> Duration {
        self.stages.iter().map(|s| s.duration).sum()
    }

    /// The arrival rate `at` into the run (0 past its end).
    pub fn rate_at(&self, at: Duration) -> f64 {
        let mut start = Duration::ZERO;
        for s in &self.stages {
            if at < start + s.duration {
                let progress = (at - start).as_secs_f64() / s.duration.as_secs_f64();
                return s.from_rate + (s.to_rate - s.from_rate) * progress;
            }
            start += s.duration;
        }
        0.0
    }

    /// When each journey starts, from the start of the run: an open model,
    /// so arrivals follow the rate whatever the answers take.
    pub fn arrivals(&self) -> Vec<Duration> {
        let end = self.duration();
        let mut at = Duration::ZERO;
        let mut out = Vec::new();
        // Integrate the rate: an arrival each time a whole journey's worth
        // has accumulated, in 1 ms steps.
        let step = Duration::from_millis(1);
        let mut owed = 0.0;
        while at < end {
            owed += self.rate_at(at) * step.as_secs_f64();
            while owed >= 1.0 {
                out.push(at);
                owed -= 1.0;
            }
            at += step;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = r#"
name = "t"
[[stage]]
duration_s = 2
rate = 10
[[stage]]
duration_s = 2
rate = 30
ramp = true
[[journey]]
kind = "shop"
weight = 3
[[journey]]
kind = "browse"
"#;

    #[test]
    fn arrivals_follow_the_stages() {
        let s = Scenario::parse(OK).unwrap();
        assert_eq!(s.stages[1].from_rate, 10.0);
        assert_eq!(s.duration(), Duration::from_secs(4));
        // 2 s at 10/s, then a ramp 10 → 30 over 2 s: 20 + 40.
        let n = s.arrivals().len();
        assert!((58..=61).contains(&n), "{n}");
        assert_eq!(s.clone().rate_scaled(5.0).arrivals().len() / n, 5);
        assert!((28..=31).contains(&s.time_scaled(0.5).arrivals().len()));
    }

    #[test]
    fn bad_files_name_the_field() {
        let cases = [
            (OK.replace("rate = 10", "rate = -1"), "stage[0].rate"),
            (OK.replace("weight = 3", "weight = 0"), "journey[0].weight"),
            (OK.replace("\"shop\"", "\"browse\""), "journey[1].kind"),
            (OK.replace("name = \"t\"", "name = \"T T\""), "name"),
            (format!("max_in_flight = 0\n{OK}"), "max_in_flight"),
        ];
        for (text, field) in cases {
            match Scenario::parse(&text) {
                Err(ScenarioError::Invalid { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: {other:?}"),
            }
        }
        let unknown = Scenario::parse(&OK.replace("ramp = true", "rmap = true")).unwrap_err();
        assert!(unknown.to_string().contains("rmap"), "{unknown}");
        let kind = Scenario::parse(&OK.replace("\"shop\"", "\"shoplift\"")).unwrap_err();
        assert!(kind.to_string().contains("shoplift"), "{kind}");
    }
}
