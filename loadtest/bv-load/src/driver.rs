//! Running a scenario: seed, start journeys at the scenario's arrival
//! times (an open model), collect, judge.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::journey::{self, Ctx};
use crate::record::{Outcome, Recorder};
use crate::report::Report;
use crate::scenario::{JourneyKind, Scenario};
use crate::slo::{self, Targets};
use crate::token::Minter;

/// Where a run goes and what it is judged by.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// `http://host:port` of the platform (bv's HTTP listener).
    pub base_url: String,
    /// bv's `/metrics` (admin address), for the events objective; `None`
    /// leaves that objective unevaluated.
    pub metrics_url: Option<String>,
    /// The objectives (`infra/observability/sli-targets.yaml`).
    pub slo_file: PathBuf,
    /// The development signing key file, used when
    /// `SPIN_VARIABLE_AUTH_SIGNING_KEYS` is not set.
    pub dev_keys: PathBuf,
    /// Print a progress line every few seconds.
    pub progress: bool,
}

/// A finished run.
pub struct RunResult {
    /// Its report.
    pub report: Report,
    /// What its journeys shared (accepted orders, the tag, the catalogue).
    pub ctx: Arc<Ctx>,
}

/// A tag for a run: upper case letters and digits, unique enough per
/// machine (time and process id).
pub fn run_tag() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    format!("{:X}{:X}", now % 0xFFFF_FFFF, std::process::id() % 0xFFFF)
}

/// Seeds the run's data and makes the journeys' context; its recorder's
/// clock starts when this returns.
pub async fn prepare(scenario: &Scenario, options: &RunOptions) -> anyhow::Result<Arc<Ctx>> {
    let minter = Minter::from_environment(&options.dev_keys)?;
    let tag = run_tag();
    let admin = journey::admin_bearer(&minter, &tag);
    if options.progress {
        eprintln!(
            "bv-load: seeding {} products (+1 flash-sale) for run {tag} at {}",
            scenario.seed.products, options.base_url
        );
    }
    let catalogue = crate::seed::seed(&options.base_url, &admin, &tag, &scenario.seed).await?;
    Ok(Arc::new(Ctx::new(
        &options.base_url,
        minter,
        &tag,
        catalogue,
        Arc::new(Recorder::new()),
        scenario.think_time,
        scenario.request_timeout,
    )))
}

/// Starts the scenario's journeys at its arrival times and waits for them
/// all; returns how many of each kind started.
pub async fn drive(ctx: Arc<Ctx>, scenario: &Scenario, progress: bool) -> BTreeMap<String, u64> {
    let arrivals = scenario.arrivals();
    let total_weight: u64 = scenario.journeys.iter().map(|(_, w)| *w as u64).sum();
    let in_flight = Arc::new(AtomicUsize::new(0));
    let start = ctx.recorder.start();
    let mut started: BTreeMap<String, u64> = BTreeMap::new();
    let mut tasks = tokio::task::JoinSet::new();
    let reporter = progress.then(|| {
        let (ctx, in_flight, arrivals) = (ctx.clone(), in_flight.clone(), arrivals.len());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                let samples = ctx.recorder.samples();
                let failures = samples
                    .iter()
                    .filter(|s| s.outcome.is_server_failure())
                    .count();
                eprintln!(
                    "bv-load: {:>5.0} s  {} requests, {failures} server-side failures, {} \
                     journeys in flight (of {arrivals} to start)",
                    ctx.recorder.start().elapsed().as_secs_f64(),
                    samples.len(),
                    in_flight.load(Ordering::Relaxed),
                );
            }
        })
    });
    for (user, at) in arrivals.into_iter().enumerate() {
        tokio::time::sleep_until((start + at).into()).await;
        let mut pick = ctx.random() % total_weight;
        let kind = scenario
            .journeys
            .iter()
            .find(|(_, w)| {
                let hit = pick < *w as u64;
                pick = pick.saturating_sub(*w as u64);
                hit
            })
            .map(|(k, _)| *k)
            .unwrap_or(JourneyKind::Browse);
        if in_flight.load(Ordering::Relaxed) >= scenario.max_in_flight {
            ctx.recorder
                .record("journey", Instant::now(), Outcome::Saturated);
            continue;
        }
        *started.entry(kind.name().to_string()).or_insert(0) += 1;
        in_flight.fetch_add(1, Ordering::Relaxed);
        let (ctx, in_flight) = (ctx.clone(), in_flight.clone());
        tasks.spawn(async move {
            journey::run(&ctx, kind, user as u64).await;
            in_flight.fetch_sub(1, Ordering::Relaxed);
        });
    }
    while tasks.join_next().await.is_some() {}
    if let Some(reporter) = reporter {
        reporter.abort();
    }
    started
}

/// Runs `scenario` against the platform: seeds, drives, reads the event
/// metrics around it, and judges the run against the objectives.
pub async fn run(scenario: &Scenario, options: &RunOptions) -> anyhow::Result<RunResult> {
    let targets = Targets::load(&options.slo_file)?;
    let ctx = prepare(scenario, options).await?;
    let before = read_metrics(options).await;
    let started = drive(ctx.clone(), scenario, options.progress).await;
    let duration = ctx.recorder.start().elapsed();
    let after = read_metrics(options).await;
    let deliveries = match (&before, &after) {
        (Ok(b), Ok(a)) => Ok(b.until(a)),
        (Err(e), _) | (_, Err(e)) => Err(e.clone()),
    };
    let samples = ctx.recorder.samples();
    let verdict = slo::verdict(
        &targets,
        &samples,
        deliveries.as_ref().map_err(String::as_str),
    );
    let report = Report::new(
        &scenario.name,
        &scenario.description,
        duration,
        started,
        &samples,
        ctx.recorder.marks(),
        verdict,
    );
    Ok(RunResult { report, ctx })
}

/// The delivery counters, or why they could not be read.
pub async fn read_metrics(
    options: &RunOptions,
) -> Result<crate::metrics::DeliveryCounters, String> {
    let Some(url) = &options.metrics_url else {
        return Err("no metrics URL given (--metrics-url)".into());
    };
    crate::metrics::deliveries(url)
        .await
        .map_err(|e| format!("reading {url}: {e:#}"))
}
