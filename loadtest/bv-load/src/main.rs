//! `bv-load`: load scenarios with an SLO gate, and game days.
//!
//! - `bv-load run loadtest/scenarios/shop.toml`: seeds the run's data,
//!   drives the scenario's journeys at its arrival rates against the
//!   platform, prints the report, writes it (text, JSON, PNG plots) into
//!   `--out`, and exits 1 when an objective failed.
//! - `bv-load chaos run loadtest/experiments/payment-outage.toml` (also
//!   `bv chaos run …`): a game day; exits 1 when the steady state did not
//!   hold, the platform did not recover, or an invariant broke.
//! - `bv-load chaos proxy --listen A --upstream B` (also `bv chaos proxy`):
//!   a TCP fault proxy, switched by commands on stdin.

use std::path::PathBuf;

use bv_load::chaos::{self, ChaosOptions};
use bv_load::driver::{self, RunOptions};
use bv_load::scenario::Scenario;
use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "bv-load",
    about = "Load scenarios with an SLO gate, and game days"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a load scenario and judge it against the SLOs.
    Run(RunArgs),
    /// Game days.
    Chaos {
        #[command(subcommand)]
        command: ChaosCommand,
    },
}

#[derive(Subcommand)]
enum ChaosCommand {
    /// Run an experiment: steady state, faults, recovery, invariants.
    Run(ChaosArgs),
    /// A TCP fault proxy, switched live by commands on stdin.
    Proxy(ProxyArgs),
}

#[derive(Args)]
struct ProxyArgs {
    /// Where the proxy listens (point the platform's address there).
    #[arg(long)]
    listen: std::net::SocketAddr,
    /// The server it forwards to.
    #[arg(long)]
    upstream: std::net::SocketAddr,
}

#[derive(Args)]
struct Common {
    /// The platform's HTTP address.
    #[arg(long, env = "BV_LOAD_URL", default_value = "http://127.0.0.1:3000")]
    url: String,
    /// bv's /metrics, for the events objective ("" to skip it).
    #[arg(
        long,
        env = "BV_LOAD_METRICS_URL",
        default_value = "http://127.0.0.1:9400/metrics"
    )]
    metrics_url: String,
    /// The objectives.
    #[arg(long, default_value = "infra/observability/sli-targets.yaml")]
    slo_file: PathBuf,
    /// The development signing key (used when SPIN_VARIABLE_AUTH_SIGNING_KEYS
    /// is not set).
    #[arg(long, default_value = ".spin/dev-auth-keys.env")]
    dev_keys: PathBuf,
    /// Where the reports go.
    #[arg(long, default_value = "loadtest/results")]
    out: PathBuf,
    /// Multiply every duration (0.1: a short form of a long run).
    #[arg(long, default_value_t = 1.0, value_parser = positive)]
    time_scale: f64,
    /// No progress lines.
    #[arg(long)]
    quiet: bool,
}

#[derive(Args)]
struct RunArgs {
    /// The scenario file.
    scenario: PathBuf,
    /// Multiply every arrival rate.
    #[arg(long, default_value_t = 1.0, value_parser = positive)]
    rate_scale: f64,
    #[command(flatten)]
    common: Common,
}

#[derive(Args)]
struct ChaosArgs {
    /// The experiment file.
    experiment: PathBuf,
    /// bv's admin address (for /faults).
    #[arg(long, env = "BV_ADMIN_URL", default_value = "http://127.0.0.1:9400")]
    admin_url: String,
    /// bv's admin token (the one bv was started with).
    #[arg(long, env = "BV_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// Where the admin token is read from when not given: the development
    /// token `bash infra/scripts/up.sh` keeps.
    #[arg(long, default_value = ".spin/dev-admin-token")]
    admin_token_file: PathBuf,
    /// The platform's database, for the invariant checker.
    #[arg(
        long,
        env = "BV_CHAOS_DB_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/bitvelocity?sslmode=disable"
    )]
    db_url: String,
    #[command(flatten)]
    common: Common,
}

fn positive(raw: &str) -> Result<f64, String> {
    match raw.parse::<f64>() {
        Ok(v) if v > 0.0 && v <= 1000.0 => Ok(v),
        _ => Err(format!("`{raw}`: a number in (0, 1000]")),
    }
}

fn options(common: &Common) -> RunOptions {
    RunOptions {
        base_url: common.url.clone(),
        metrics_url: (!common.metrics_url.is_empty()).then(|| common.metrics_url.clone()),
        slo_file: common.slo_file.clone(),
        dev_keys: common.dev_keys.clone(),
        progress: !common.quiet,
    }
}

fn stamp() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    secs.to_string()
}

async fn main_async(cli: Cli) -> anyhow::Result<bool> {
    match cli.command {
        Command::Run(args) => {
            let scenario = Scenario::load(&args.scenario)?
                .time_scaled(args.common.time_scale)
                .rate_scaled(args.rate_scale);
            let result = driver::run(&scenario, &options(&args.common)).await?;
            print!("{}", result.report.text());
            let stem = format!("{}-{}", scenario.name, stamp());
            for file in result.report.write(&args.common.out, &stem)? {
                eprintln!("bv-load: wrote {}", file.display());
            }
            Ok(result.report.pass)
        }
        Command::Chaos {
            command: ChaosCommand::Proxy(args),
        } => {
            bv_load::proxy::run(args.listen, args.upstream).await?;
            Ok(true)
        }
        Command::Chaos {
            command: ChaosCommand::Run(args),
        } => {
            let options = ChaosOptions {
                run: options(&args.common),
                admin_url: args.admin_url.clone(),
                admin_token: args.admin_token.clone().or_else(|| {
                    std::fs::read_to_string(&args.admin_token_file)
                        .ok()
                        .map(|t| t.trim().to_string())
                }),
                db_url: args.db_url.clone(),
                time_scale: args.common.time_scale,
                command_env: Vec::new(),
            };
            let day = chaos::run(&args.experiment, &options).await?;
            print!("{}", day.text());
            let stem = format!("gameday-{}-{}", day.name, stamp());
            for file in day.write(&args.common.out, &stem)? {
                eprintln!("bv-load: wrote {}", file.display());
            }
            Ok(day.pass)
        }
    }
}

fn main() {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    match runtime.block_on(main_async(cli)) {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("bv-load: {e:#}");
            std::process::exit(2);
        }
    }
}
