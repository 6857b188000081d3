//! Game days: an experiment (`loadtest/experiments/*.toml`) runs a
//! scenario as its load and, on one timeline,
//!
//! 1. checks the steady-state hypothesis (the API objectives hold over the
//!    first `steady_s` seconds; if not, nothing is injected),
//! 2. injects its faults (bv's `/faults` admin API, the payment provider's
//!    outage switch, or commands such as `kill -9` and restarts),
//! 3. holds them `hold_s` seconds, removes them,
//! 4. checks recovery (the objectives hold again over the last
//!    `recovery_s - grace_s` seconds),
//! 5. settles and reconciles the books ([`crate::invariants`]).
//!
//! The report says what held and what did not, step by step.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context as _};
use bv_faults::FaultSpec;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::client::Connection;
use crate::driver::{self, RunOptions};
use crate::invariants::{self, Check, Scope};
use crate::record::Sample;
use crate::report::Report;
use crate::scenario::{Scenario, Stage};
use crate::slo::{self, SloResult, Targets};

/// An experiment as its file declares it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Experiment {
    /// Its name.
    pub name: String,
    /// The hypothesis and what it shows, in words.
    #[serde(default)]
    pub description: String,
    /// The runbook for the failure it rehearses.
    pub runbook: String,
    /// The load: a scenario file, relative to the experiment file. Its
    /// last stage's rate is the steady rate.
    pub scenario: PathBuf,
    /// Seconds of steady state before the faults.
    pub steady_s: u64,
    /// Seconds the faults are held.
    pub hold_s: u64,
    /// Seconds of load after the faults are removed.
    pub recovery_s: u64,
    /// Seconds right after removal that the recovery check leaves out.
    #[serde(default = "default_grace")]
    pub grace_s: u64,
    /// The arrival rate while the faults are held, as a multiple of the
    /// steady rate (5: a traffic spike).
    #[serde(default = "one")]
    pub rate_during_hold: f64,
    /// How long the checker waits for sagas and deliveries to settle.
    #[serde(default = "default_settle")]
    pub settle_s: u64,
    /// What is done at the start of the hold, and undone at its end.
    #[serde(default, rename = "inject")]
    pub injections: Vec<Injection>,
}

fn default_grace() -> u64 {
    5
}
fn one() -> f64 {
    1.0
}
fn default_settle() -> u64 {
    60
}

/// One thing an experiment does to the platform.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum Injection {
    /// A fault at the component boundary, through bv's admin API.
    Fault(FaultSpec),
    /// The payment provider's outage switch (`/api/payments/admin/outage`).
    PaymentOutage(bool),
    /// A shell command at the start of the hold (`run`) and another at its
    /// end (`undo`, optional): kill -9 a process, stop a service, start it.
    Command {
        /// What the report calls it (default: the command itself).
        #[serde(default)]
        label: Option<String>,
        /// Run at the start of the hold.
        run: String,
        /// Run at its end.
        #[serde(default)]
        undo: Option<String>,
    },
}

impl Injection {
    fn label(&self) -> String {
        match self {
            Self::Fault(f) => format!(
                "{} {} {} on {} ({}%)",
                f.effect.as_str(),
                f.capability.as_str(),
                f.delay_ms.map(|d| format!("{d} ms")).unwrap_or_default(),
                f.component,
                (f.share * 100.0).round()
            ),
            Self::PaymentOutage(_) => "payment provider outage".into(),
            Self::Command {
                label: Some(label), ..
            } => label.clone(),
            Self::Command { run, .. } => format!("`{}`", run.trim()),
        }
    }
}

/// Where the platform is and how to reach its controls.
#[derive(Clone, Debug)]
pub struct ChaosOptions {
    /// The load's options (base URL, metrics, SLO file, keys).
    pub run: RunOptions,
    /// bv's admin address (`http://127.0.0.1:9400`), for `/faults`.
    pub admin_url: String,
    /// bv's admin token (`--admin-token` / `BV_ADMIN_TOKEN`).
    pub admin_token: Option<String>,
    /// The platform's database, for the invariant checker.
    pub db_url: String,
    /// Every duration of the experiment multiplied by this (a short form).
    pub time_scale: f64,
    /// Environment for the experiment's commands, besides the process's
    /// own (e.g. `BV_CHAOS_PG_STOP`).
    pub command_env: Vec<(String, String)>,
}

/// One phase's verdict.
#[derive(Clone, Debug, Serialize)]
pub struct Phase {
    /// `steady state`, `during the faults`, `recovery`.
    pub name: String,
    /// Seconds from the start of the load.
    pub from_s: f64,
    /// Seconds from the start of the load.
    pub to_s: f64,
    /// Whether it must hold for the experiment to pass.
    pub gating: bool,
    /// The objectives over it.
    pub slo: Vec<SloResult>,
    /// Whether every evaluated objective held.
    pub held: bool,
}

/// An experiment's outcome.
#[derive(Clone, Debug, Serialize)]
pub struct GameDay {
    /// The experiment.
    pub name: String,
    /// Its runbook.
    pub runbook: String,
    /// What was injected.
    pub injected: Vec<String>,
    /// Steady state, during, recovery.
    pub phases: Vec<Phase>,
    /// The invariants after settling.
    pub invariants: Vec<Check>,
    /// Whether the steady state held, the platform recovered and every
    /// invariant held.
    pub pass: bool,
    /// The load's report (with the faults marked on its timeline).
    pub load: Report,
}

impl Experiment {
    /// Reads and checks `path`.
    pub fn load(path: &Path) -> anyhow::Result<(Self, Scenario)> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let experiment: Self = toml::from_str(&text)
            .with_context(|| format!("{}: not an experiment", path.display()))?;
        for (i, injection) in experiment.injections.iter().enumerate() {
            if let Injection::Fault(f) = injection {
                // The component is checked by bv when the fault is posted.
                let known = [f.component.clone()];
                bv_faults::Fault::parse(0, f.clone(), &known, std::time::Instant::now())
                    .with_context(|| format!("{}: inject[{i}]", path.display()))?;
            }
        }
        if experiment.injections.is_empty() && experiment.rate_during_hold == 1.0 {
            bail!(
                "{}: nothing to inject (no [[inject]], rate_during_hold 1)",
                path.display()
            );
        }
        if experiment.steady_s == 0
            || experiment.hold_s == 0
            || experiment.recovery_s <= experiment.grace_s
        {
            bail!(
                "{}: steady_s and hold_s must be > 0 and recovery_s > grace_s",
                path.display()
            );
        }
        if !(experiment.rate_during_hold > 0.0 && experiment.rate_during_hold <= 100.0) {
            bail!("{}: rate_during_hold must be in (0, 100]", path.display());
        }
        let scenario_path = path
            .parent()
            .unwrap_or(Path::new("."))
            .join(&experiment.scenario);
        let scenario = Scenario::load(&scenario_path)?;
        Ok((experiment, scenario))
    }

    /// The experiment's load: the scenario's journeys at its steady rate
    /// through steady state, hold (times `rate_during_hold`) and recovery.
    fn load_scenario(&self, scenario: &Scenario, scale: f64) -> Scenario {
        let rate = scenario.stages.last().map(|s| s.to_rate).unwrap_or(1.0);
        let stage = |secs: u64, rate: f64| Stage {
            duration: Duration::from_secs_f64(secs as f64 * scale),
            from_rate: rate,
            to_rate: rate,
        };
        let mut load = scenario.clone();
        load.name = self.name.clone();
        load.stages = vec![
            stage(self.steady_s, rate),
            stage(self.hold_s, rate * self.rate_during_hold),
            stage(self.recovery_s, rate),
        ];
        load
    }
}

/// Runs the experiment at `path`.
pub async fn run(path: &Path, options: &ChaosOptions) -> anyhow::Result<GameDay> {
    let (experiment, scenario) = Experiment::load(path)?;
    let targets = Targets::load(&options.run.slo_file)?;
    let scale = options.time_scale;
    let load = experiment.load_scenario(&scenario, scale);
    let secs = |s: u64| Duration::from_secs_f64(s as f64 * scale);
    let (steady, hold, recovery, grace) = (
        secs(experiment.steady_s),
        secs(experiment.hold_s),
        secs(experiment.recovery_s),
        secs(experiment.grace_s),
    );
    let progress = options.run.progress;
    let ctx = driver::prepare(&load, &options.run).await?;
    let driving = {
        let (ctx, load) = (ctx.clone(), load.clone());
        tokio::spawn(async move { driver::drive(ctx, &load, progress).await })
    };
    let start = ctx.recorder.start();
    tokio::time::sleep_until((start + steady).into()).await;
    let steady_phase = phase(
        &targets,
        "steady state",
        &ctx.recorder.samples(),
        Duration::ZERO,
        steady,
        true,
    );
    let mut injected = Vec::new();
    let mut undo = Vec::new();
    if steady_phase.held {
        for injection in &experiment.injections {
            ctx.recorder.mark(format!("on: {}", injection.label()));
            if progress {
                eprintln!("bv-load chaos: injecting {}", injection.label());
            }
            undo.push(inject(injection, options, &ctx.admin()).await?);
            injected.push(injection.label());
        }
        if experiment.rate_during_hold != 1.0 {
            ctx.recorder
                .mark(format!("rate x{}", experiment.rate_during_hold));
            injected.push(format!("arrival rate x{}", experiment.rate_during_hold));
        }
    } else if progress {
        eprintln!("bv-load chaos: the steady state does not hold; nothing injected");
    }
    tokio::time::sleep_until((start + steady + hold).into()).await;
    for u in undo.into_iter().rev() {
        remove(u, options, &ctx.admin()).await?;
    }
    if !injected.is_empty() {
        ctx.recorder.mark("off");
        if progress {
            eprintln!("bv-load chaos: faults removed; recovering");
        }
    }
    let started = driving.await.context("the load driver panicked")?;
    let duration = ctx.recorder.start().elapsed();
    let samples = ctx.recorder.samples();
    let during = phase(
        &targets,
        "during the faults",
        &samples,
        steady,
        steady + hold,
        false,
    );
    let recovered = phase(
        &targets,
        "recovery",
        &samples,
        steady + hold + grace,
        steady + hold + recovery,
        true,
    );
    let accepted = ctx.accepted_orders.lock().unwrap().clone();
    let products = ctx.catalogue.all();
    let prefix = ctx.customer_prefix();
    let checks = invariants::check(
        &options.db_url,
        &Scope {
            customer_prefix: &prefix,
            accepted: &accepted,
            products: &products,
        },
        Duration::from_secs(experiment.settle_s),
    )
    .await?;
    let all = phase(
        &targets,
        "whole run",
        &samples,
        Duration::ZERO,
        duration,
        false,
    );
    let report = Report::new(
        &experiment.name,
        &experiment.description,
        duration,
        started,
        &samples,
        ctx.recorder.marks(),
        all.slo,
    )
    .reported_only();
    let phases = vec![steady_phase, during, recovered];
    let pass = phases.iter().all(|p| !p.gating || p.held)
        && checks.iter().all(|c| c.held)
        && !injected.is_empty();
    Ok(GameDay {
        name: experiment.name,
        runbook: experiment.runbook,
        injected,
        phases,
        invariants: checks,
        pass,
        load: report,
    })
}

fn phase(
    targets: &Targets,
    name: &str,
    samples: &[Sample],
    from: Duration,
    to: Duration,
    gating: bool,
) -> Phase {
    let window: Vec<Sample> = samples
        .iter()
        .filter(|s| s.at >= from && s.at < to)
        .cloned()
        .collect();
    let api_only = Targets {
        slos: targets
            .slos
            .iter()
            .filter(|o| o.name.starts_with("api-"))
            .cloned()
            .collect(),
    };
    let slo = slo::verdict(&api_only, &window, Err("not measured per phase"));
    let held = slo.iter().all(|r| r.pass != Some(false));
    Phase {
        name: name.to_string(),
        from_s: from.as_secs_f64(),
        to_s: to.as_secs_f64(),
        gating,
        slo,
        held,
    }
}

/// What undoes an injection.
enum Undo {
    Fault(String),
    PaymentOutage,
    Command(Option<String>),
}

async fn inject(
    injection: &Injection,
    options: &ChaosOptions,
    admin: &str,
) -> anyhow::Result<Undo> {
    match injection {
        Injection::Fault(spec) => {
            let token = options.admin_token.as_deref().context(
                "a fault needs bv's admin token: set BV_ADMIN_TOKEN (or --admin-token) to the \
                 token bv was started with",
            )?;
            let answer = admin_call(
                options,
                "POST",
                "/faults",
                token,
                Some(&json!({ "faults": [spec] })),
            )
            .await?;
            let id = answer["ids"][0]
                .as_str()
                .map(str::to_string)
                .or_else(|| answer["ids"][0].as_u64().map(|n| n.to_string()))
                .context("POST /faults answered no id")?;
            Ok(Undo::Fault(id))
        }
        Injection::PaymentOutage(on) => {
            outage(options, admin, *on).await?;
            Ok(Undo::PaymentOutage)
        }
        Injection::Command { run, undo, .. } => {
            shell(run, &options.command_env).await?;
            Ok(Undo::Command(undo.clone()))
        }
    }
}

async fn remove(undo: Undo, options: &ChaosOptions, admin: &str) -> anyhow::Result<()> {
    match undo {
        Undo::Fault(id) => {
            let token = options.admin_token.as_deref().unwrap_or_default();
            admin_call(options, "DELETE", &format!("/faults/{id}"), token, None).await?;
        }
        Undo::PaymentOutage => outage(options, admin, false).await?,
        Undo::Command(Some(cmd)) => shell(&cmd, &options.command_env).await?,
        Undo::Command(None) => {}
    }
    Ok(())
}

async fn admin_call(
    options: &ChaosOptions,
    method: &str,
    path: &str,
    token: &str,
    body: Option<&serde_json::Value>,
) -> anyhow::Result<serde_json::Value> {
    let mut conn = Connection::open(&options.admin_url).await?;
    let bearer = format!("Bearer {token}");
    let answer = conn
        .send(method, path, &[("authorization", &bearer)], body)
        .await?;
    if answer.status >= 300 {
        bail!(
            "{method} {}{path} answered {}: {}",
            options.admin_url,
            answer.status,
            answer.text()
        );
    }
    Ok(answer.json())
}

async fn outage(options: &ChaosOptions, admin: &str, on: bool) -> anyhow::Result<()> {
    let mut conn = Connection::open(&options.run.base_url).await?;
    let answer = conn
        .send(
            "POST",
            "/api/payments/admin/outage",
            &[("authorization", admin)],
            Some(&json!({ "on": on })),
        )
        .await?;
    if answer.status != 200 {
        bail!(
            "switching the payment outage {on}: {} {}",
            answer.status,
            answer.text()
        );
    }
    Ok(())
}

async fn shell(command: &str, env: &[(String, String)]) -> anyhow::Result<()> {
    let status = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .status()
        .await
        .with_context(|| format!("running `{command}`"))?;
    if !status.success() {
        bail!("`{command}` exited with {status}");
    }
    Ok(())
}

impl GameDay {
    /// The outcome as text.
    pub fn text(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# game day: {} — {}",
            self.name,
            if self.pass { "PASS" } else { "FAIL" }
        );
        let _ = writeln!(out, "runbook: {}", self.runbook);
        let _ = writeln!(
            out,
            "injected: {}",
            if self.injected.is_empty() {
                "nothing".to_string()
            } else {
                self.injected.join("; ")
            }
        );
        for p in &self.phases {
            let _ = writeln!(
                out,
                "\n{} ({:.0}–{:.0} s){}: {}",
                p.name,
                p.from_s,
                p.to_s,
                if p.gating { "" } else { ", reported only" },
                if p.held { "held" } else { "did NOT hold" }
            );
            for r in &p.slo {
                let _ = writeln!(out, "  {:<18} {}", r.name, r.reason);
            }
        }
        let _ = writeln!(out, "\ninvariants:");
        for c in &self.invariants {
            let _ = writeln!(
                out,
                "  {}  {}: {}",
                if c.held { "held  " } else { "BROKEN" },
                c.name,
                c.detail
            );
        }
        let _ = writeln!(out, "\n{}", self.load.text());
        out
    }

    /// Writes the text, the JSON and the load's plots into `dir`.
    pub fn write(&self, dir: &Path, stem: &str) -> anyhow::Result<Vec<PathBuf>> {
        let mut files = self.load.write(dir, &format!("{stem}-load"))?;
        let text = dir.join(format!("{stem}.txt"));
        std::fs::write(&text, self.text())?;
        let json = dir.join(format!("{stem}.json"));
        std::fs::write(&json, serde_json::to_vec_pretty(self)?)?;
        files.splice(0..0, [text, json]);
        Ok(files)
    }
}
