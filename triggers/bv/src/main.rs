//! `bv`: run a Spin application on this machine.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use bv_runtime::Drained;
use clap::{Parser, Subcommand, ValueEnum};

mod chaos;
mod compat;
mod events;
mod mqtt_auth;
mod registry;
mod ws;

/// Every request allocates (headers, bodies, per-instance state) across
/// threads; under load glibc's malloc shows up in profiles (`_int_free`,
/// `malloc_consolidate`), which mimalloc's thread-local free lists avoid.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "bv",
    version,
    about = "Runs a Spin application (spin.toml) on wasmtime"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the application's triggers.
    Up(UpArgs),
    /// Build every component the manifest lists, for wasm32-wasip2.
    Build(BuildArgs),
    /// Operate durable events: subscriptions, replay, dead letters.
    Events(events::EventsArgs),
    /// Push an application to (or pull one from) an OCI registry.
    Registry(registry::RegistryArgs),
    /// Talk to a WebSocket endpoint: stdin lines out, messages in.
    Ws(ws::WsArgs),
    /// Game days: `bv chaos run loadtest/experiments/<name>.toml` (runs
    /// `bv-load chaos …`).
    Chaos(chaos::ForwardArgs),
    /// Load scenarios with an SLO gate: `bv load run
    /// loadtest/scenarios/<name>.toml` (runs `bv-load …`).
    Load(chaos::ForwardArgs),
    /// Mosquitto's password and ACL files from the IoT device registry,
    /// kept in step (docs/IOT.md).
    MqttAuth(mqtt_auth::MqttAuthArgs),
}

#[derive(Parser)]
struct BuildArgs {
    /// The manifest, or a directory holding spin.toml.
    #[arg(short = 'f', long = "from", default_value = "spin.toml")]
    from: PathBuf,
}

#[derive(Clone, Copy, ValueEnum)]
enum Policy {
    /// An instance serves a bounded number of requests, a bounded number at once.
    Reuse,
    /// A fresh instance for every request: nothing can leak between requests.
    Strict,
}

#[derive(Parser)]
struct UpArgs {
    /// The manifest, a directory holding spin.toml, or an OCI reference
    /// (registry/name:tag, as `bv registry push` or `spin registry push`
    /// left it) to pull and run.
    #[arg(short = 'f', long = "from", default_value = "spin.toml")]
    from: PathBuf,
    #[command(flatten)]
    registry: registry::RegistryFlags,
    /// Address the HTTP trigger listens on.
    #[arg(long, default_value = "127.0.0.1:3000")]
    listen: SocketAddr,
    /// Address of the admin endpoints (/healthz, /readyz, /metrics). Without
    /// it, 127.0.0.1:9400, or a free port when another process has that one.
    #[arg(long, env = "BV_ADMIN_LISTEN")]
    admin_listen: Option<SocketAddr>,
    /// Runtime configuration (key-value stores, databases).
    #[arg(long)]
    runtime_config_file: Option<PathBuf>,
    /// Build the components before starting.
    #[arg(long)]
    build: bool,
    /// Instance policy for every component, overriding the manifest.
    #[arg(long, value_enum)]
    instance_policy: Option<Policy>,
    /// Directory for runtime state (default: .spin next to the manifest).
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Seconds in-flight requests get to finish after SIGTERM or Ctrl-C;
    /// past it their connections are closed and the exit code is 2.
    #[arg(
        long,
        env = "BV_DRAIN_TIMEOUT",
        default_value_t = 30,
        value_name = "SECONDS"
    )]
    drain_timeout: u64,
    /// Directory for compiled code (default: <state-dir>/cache).
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Serve only this component (repeat for several): the others' routes
    /// and triggers are absent, and chaining to one answers 502. As Spin's
    /// `--component-id`; SpinKube passes one per selected component.
    #[arg(long = "component-id", value_name = "ID")]
    component_id: Vec<String>,
    /// Log lines as JSON objects (one per line) or human-readable text
    /// (default: text when stderr is a terminal, JSON otherwise).
    #[arg(long, env = "BV_LOG_FORMAT", value_enum)]
    log_format: Option<LogFormatArg>,
    /// Faults to switch on at start-up: a TOML file of `[[fault]]` tables
    /// (component, capability, effect, delay_ms, share, duration_s); see
    /// docs/RESILIENCE.md. Beyond Spin.
    #[arg(long, env = "BV_CHAOS_FILE", value_name = "FILE")]
    chaos_file: Option<PathBuf>,
    /// Bearer token of the admin API's /faults endpoints (at least 16
    /// characters); without it they are off. Beyond Spin.
    #[arg(
        long,
        env = "BV_ADMIN_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    admin_token: Option<String>,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormatArg {
    /// One JSON object per line: time, level, target, message, fields,
    /// component, route, trace_id, span_id.
    Json,
    /// Human-readable lines.
    Text,
}

fn main() {
    // wasmtime creates errors on hot paths (an instance dropped after its
    // last request is one); with RUST_BACKTRACE=1 each would capture a
    // backtrace and cost more than the request. Panics keep their backtraces.
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        // Nothing else runs yet, so no other thread reads the environment.
        std::env::set_var("RUST_LIB_BACKTRACE", "0");
    }
    let cli = Cli::parse();
    // `bv up` logs JSON lines for a log collector, text for a person at a
    // terminal (as `spin up` does), and exports traces when an OTLP endpoint
    // is configured; the other commands talk to a person and keep plain text.
    let telemetry = match &cli.command {
        Command::Up(args) => bv_telemetry::init(
            match args.log_format {
                Some(LogFormatArg::Json) => bv_telemetry::LogFormat::Json,
                Some(LogFormatArg::Text) => bv_telemetry::LogFormat::Text,
                None if std::io::IsTerminal::is_terminal(&std::io::stderr()) => {
                    bv_telemetry::LogFormat::Text
                }
                None => bv_telemetry::LogFormat::Json,
            },
            true,
        ),
        _ => bv_telemetry::init(bv_telemetry::LogFormat::Text, false),
    };
    let telemetry = match telemetry {
        Ok(t) => t,
        Err(e) => {
            eprintln!("Error: {e:#}");
            std::process::exit(1);
        }
    };
    let result = match cli.command {
        Command::Up(args) => up(args),
        Command::Build(args) => build(&manifest_path(&args.from)).map(|()| 0),
        Command::Events(args) => events::run(args).map(|()| 0),
        Command::Registry(args) => registry::run(args).map(|()| 0),
        Command::Ws(args) => ws::run(args),
        Command::Chaos(args) => chaos::forward(&["chaos"], args),
        Command::Load(args) => chaos::forward(&[], args),
        Command::MqttAuth(args) => mqtt_auth::run(args).map(|()| 0),
    };
    // Spans still queued reach the collector before the process ends.
    telemetry.shutdown();
    match result {
        Ok(0) => {}
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("Error: {e:#}");
            std::process::exit(1);
        }
    }
}

/// The exit code of a `bv up` whose drain had to cut requests.
const EXIT_DRAIN_CUT: i32 = 2;

/// How long the async runtime's shutdown waits for tasks that are still
/// running once every trigger has stopped (or was given up on).
const RUNTIME_SHUTDOWN: Duration = Duration::from_secs(1);

/// How long, past the drain timeout, the triggers get to stop.
const TRIGGER_STOP_GRACE: Duration = Duration::from_secs(2);

fn manifest_path(from: &Path) -> PathBuf {
    if from.is_dir() {
        from.join("spin.toml")
    } else {
        from.to_path_buf()
    }
}

fn build(manifest: &Path) -> anyhow::Result<()> {
    let app = bv_manifest::load(manifest)?;
    let base_dir = &app.base_dir;
    let steps: Vec<bv_build::BuildStep> = app
        .components
        .values()
        .filter_map(|c| c.build.as_ref().map(|b| (c, b)))
        .flat_map(|(c, b)| {
            b.commands.iter().map(move |command| bv_build::BuildStep {
                component_id: c.id.clone(),
                command: command.clone(),
                workdir: b.workdir.clone().unwrap_or_else(|| base_dir.clone()),
            })
        })
        .collect();
    if steps.is_empty() {
        eprintln!("Nothing to build: no component has a [component.<id>.build] command.");
        return Ok(());
    }
    let mut progress = |msg: &str| eprintln!("{msg}");
    let toolchain = bv_build::detect_toolchain()?;
    bv_build::ensure_toolchain(toolchain, &mut progress)?;
    bv_build::build(&steps, toolchain, &mut progress)?;
    eprintln!("Finished building all components.");
    Ok(())
}

/// Runs the application until SIGTERM or Ctrl-C; the exit code: 0 when every
/// in-flight request finished, [`EXIT_DRAIN_CUT`] when the drain timeout cut
/// some.
fn up(args: UpArgs) -> anyhow::Result<i32> {
    let manifest = registry::resolve_from(&args.from, &args.registry)?;
    if args.build {
        build(&manifest)?;
    }
    let mut app = bv_manifest::load(&manifest)?;
    app.select(&args.component_id)?;
    if !app.unselected.is_empty() {
        tracing::info!(
            "serving components {} (--component-id); not deployed here: {}",
            app.components
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", "),
            app.unselected
                .iter()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    compat::report(&app);
    let runtime_config = match &args.runtime_config_file {
        Some(path) => bv_manifest::load_runtime_config(path)?,
        None => bv_manifest::RuntimeConfig::default(),
    };
    let options = bv_runtime::RuntimeOptions {
        state_dir: args.state_dir.clone(),
        instance_policy: args.instance_policy.map(|p| match p {
            Policy::Reuse => bv_manifest::InstancePolicy::Reuse,
            Policy::Strict => bv_manifest::InstancePolicy::Strict,
        }),
        extra_variables: Vec::new(),
        cache_dir: args.cache_dir.clone(),
    };
    let started = std::time::Instant::now();
    let runtime = Arc::new(bv_runtime::AppRuntime::load(
        app,
        &runtime_config,
        &options,
    )?);
    tracing::info!(
        "loaded {} component(s) in {:?}",
        runtime.app().components.len(),
        started.elapsed()
    );
    if let Some(token) = &args.admin_token {
        anyhow::ensure!(
            token.chars().count() >= MIN_ADMIN_TOKEN_CHARS,
            "the admin token (BV_ADMIN_TOKEN) must be at least {MIN_ADMIN_TOKEN_CHARS} characters"
        );
    }
    if let Some(path) = &args.chaos_file {
        let ids = runtime
            .faults()
            .load_file(path)
            .with_context(|| format!("--chaos-file {}", path.display()))?;
        println!(
            "Fault injection: {} fault(s) switched on from {}",
            ids.len(),
            path.display()
        );
    }

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    // The epoch ticker outlives every task of the async runtime: a guest
    // still running when the runtime shuts down (one in a loop) only gives
    // its thread back at an epoch tick, and only then can its instance be
    // dropped. With the ticker stopped first, the runtime's shutdown would
    // wait for that thread for ever.
    let epoch = bv_runtime::start_epoch_ticker(runtime.engine());
    let result = rt.block_on(run_triggers(runtime, args));
    // Whatever is still running (an instance past its request, a blocking
    // call) is dropped here, within a bound.
    rt.shutdown_timeout(RUNTIME_SHUTDOWN);
    drop(epoch);
    let drained = result?;
    match drained {
        Drained::Complete => {
            tracing::info!("stopped: every in-flight request finished");
            println!("Stopped.");
            Ok(0)
        }
        Drained::Cut(n) => {
            tracing::warn!(
                "stopped: the drain timeout cut {n} connection(s) with requests in progress"
            );
            println!("Stopped: the drain timeout cut requests in progress.");
            Ok(EXIT_DRAIN_CUT)
        }
    }
}

/// The trigger types `bv` runs besides HTTP (which always runs: it also
/// serves the admin endpoints and chained requests). A new trigger type is a
/// crate exporting a [`bv_runtime::TriggerKind`] and a line here.
const TRIGGER_KINDS: &[bv_runtime::TriggerKind] = &[
    bv_trigger_redis::KIND,
    bv_trigger_mqtt::KIND,
    bv_trigger_postgres::KIND,
    bv_trigger_cron::KIND,
];

/// Starts every trigger the manifest uses and runs them until SIGTERM or
/// Ctrl-C; then each drains, within the drain timeout.
async fn run_triggers(
    runtime: Arc<bv_runtime::AppRuntime>,
    args: UpArgs,
) -> anyhow::Result<Drained> {
    let metrics_push = bv_telemetry::metrics_push::MetricsPush::from_env()?;
    let shutdown = tokio_util::sync::CancellationToken::new();

    // Build every trigger first, so a bad trigger table stops start-up before
    // anything listens; the others only when the manifest has entries for them.
    let http = bv_trigger_http::HttpTrigger::new(runtime.clone())?;
    let mut built: Vec<Box<dyn bv_runtime::Trigger>> = Vec::new();
    for kind in TRIGGER_KINDS {
        if runtime.app().other_triggers.contains_key(kind.name) {
            built.push(
                (kind.build)(runtime.clone()).with_context(|| format!("{} trigger", kind.name))?,
            );
        }
    }
    for trigger in &built {
        trigger.prepare().await;
    }

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let admin = bind_admin(args.admin_listen).await?;
    println!("Serving http://{}", listener.local_addr()?);
    println!("Admin endpoints on http://{}", admin.local_addr()?);
    let drain_timeout = Duration::from_secs(args.drain_timeout);
    let serve_options = bv_trigger_http::ServeOptions {
        drain_timeout,
        admin_token: args.admin_token.clone(),
        ..Default::default()
    };
    built.insert(
        0,
        Box::new(bv_trigger_http::HttpServer::new(
            http,
            listener,
            Some(admin),
            serve_options,
        )),
    );
    println!("Available Routes:");
    let mut triggers = tokio::task::JoinSet::new();
    for trigger in built {
        for listed in trigger.listing() {
            println!("  {}: {}", listed.component, listed.what);
        }
        let (kind, stop) = (trigger.kind(), shutdown.clone());
        triggers.spawn(async move {
            trigger
                .run(stop)
                .await
                .with_context(|| format!("{kind} trigger"))
        });
    }

    let pusher = metrics_push.clone().map(|push| {
        let runtime = runtime.clone();
        push.spawn(move || runtime.encode_metrics())
    });

    tokio::select! {
        _ = shutdown_signal() => {}
        Some(result) = triggers.join_next() => {
            // A trigger stopped on its own: that is an error; stop the rest.
            shutdown.cancel();
            result??;
            anyhow::bail!("a trigger stopped unexpectedly");
        }
    }
    shutdown.cancel();
    // Every trigger stops within the drain timeout (and a little more to
    // close what it cut); one that does not is given up on.
    // A second SIGTERM or Ctrl-C stops at once, as an operator who sends it
    // means: whatever is still in flight is cut (and counted as cut).
    let deadline = tokio::time::Instant::now() + drain_timeout + TRIGGER_STOP_GRACE;
    let mut drained = Drained::Complete;
    let second_signal = shutdown_signal();
    tokio::pin!(second_signal);
    let mut told = false;
    loop {
        // `None`: stop waiting (the deadline passed, or a second signal).
        let next = tokio::select! {
            next = tokio::time::timeout_at(deadline, triggers.join_next()) => next.ok(),
            _ = &mut second_signal, if !told => {
                told = true;
                tracing::warn!(
                    "second signal: stopping now, without waiting for what is in flight"
                );
                None
            }
        };
        match next {
            Some(None) => break,
            Some(Some(result)) => {
                if let Drained::Cut(n) = result?? {
                    drained = Drained::Cut(n);
                }
            }
            None => {
                if !told {
                    tracing::warn!(
                        "{} trigger(s) did not stop within the drain timeout; stopping them",
                        triggers.len()
                    );
                }
                triggers.abort_all();
                let cut = match drained {
                    Drained::Cut(n) => n,
                    Drained::Complete => 0,
                };
                drained = Drained::Cut(cut + triggers.len());
                break;
            }
        }
    }
    if let (Some(pusher), Some(push)) = (pusher, metrics_push) {
        // The last figures, so a short run still reaches the collector.
        pusher.abort();
        match tokio::time::timeout(TRIGGER_STOP_GRACE, push.push(&runtime.encode_metrics())).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!("pushing the final metrics failed: {e:#}"),
            Err(_) => tracing::warn!("pushing the final metrics timed out"),
        }
    }
    Ok(drained)
}

/// The admin listener at `explicit` (an error when it is taken), else at
/// [`DEFAULT_ADMIN_LISTEN`], else, when another process (a second app on the
/// same machine) holds that one, at a free port.
async fn bind_admin(explicit: Option<SocketAddr>) -> anyhow::Result<tokio::net::TcpListener> {
    if let Some(addr) = explicit {
        return tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} (admin)"));
    }
    let default: SocketAddr = DEFAULT_ADMIN_LISTEN.parse()?;
    match tokio::net::TcpListener::bind(default).await {
        Ok(listener) => Ok(listener),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            let any = SocketAddr::new(default.ip(), 0);
            let listener = tokio::net::TcpListener::bind(any)
                .await
                .with_context(|| format!("cannot listen on {any} (admin)"))?;
            tracing::warn!(
                "admin address {default} is taken; admin endpoints on {} instead \
                 (set --admin-listen or BV_ADMIN_LISTEN to choose)",
                listener.local_addr()?
            );
            Ok(listener)
        }
        Err(e) => Err(e).with_context(|| format!("cannot listen on {default} (admin)")),
    }
}

/// Shortest admin token accepted: a guessable one would hand the fault
/// switches to anyone who reaches the admin port.
const MIN_ADMIN_TOKEN_CHARS: usize = 16;

/// Where the admin endpoints listen unless told otherwise.
const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9400";

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_compatibility_table_says_bv_runs_exactly_the_registered_kinds() {
        for support in compat::TRIGGERS {
            let registered =
                support.kind == "http" || TRIGGER_KINDS.iter().any(|k| k.name == support.kind);
            assert_eq!(support.bv, registered, "{}", support.kind);
        }
        for kind in TRIGGER_KINDS {
            assert!(
                compat::TRIGGERS.iter().any(|s| s.kind == kind.name),
                "{} is missing from compat::TRIGGERS",
                kind.name
            );
        }
    }
}
