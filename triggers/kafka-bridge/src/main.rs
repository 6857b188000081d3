//! `bv-kafka-bridge`: bridges the app's outbox and Kafka both ways, as
//! `[application.tool.kafka-bridge]` in its `spin.toml` says.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use bv_kafka_bridge::config;
use bv_kafka_bridge::inbound::Inbound;
use bv_kafka_bridge::metrics::Metrics;
use bv_kafka_bridge::outbound::Outbound;
use bv_telemetry::LogFormat;
use clap::Parser;
use tokio_util::sync::CancellationToken;

/// Bridges the platform's event outbox (PostgreSQL) and Kafka.
#[derive(Parser, Debug)]
#[command(name = "bv-kafka-bridge", version)]
struct Cli {
    /// The app's spin.toml (with [application.tool.kafka-bridge]) or a
    /// bridge file with the same fields at the top level.
    #[arg(long = "from", short = 'f', default_value = "spin.toml")]
    from: PathBuf,
    /// Kafka's bootstrap servers; overrides the file's `brokers`.
    #[arg(long, env = "BV_KAFKA_BROKERS")]
    brokers: Option<String>,
    /// The outbox's database; overrides the file's `db_url` and the app's
    /// `db_url` variable (also read from SPIN_VARIABLE_DB_URL).
    #[arg(long, env = "BV_KAFKA_BRIDGE_DB_URL")]
    db_url: Option<String>,
    /// Where /metrics and /healthz are served.
    #[arg(long, default_value = "127.0.0.1:9410")]
    admin_listen: SocketAddr,
    /// `json` (default) or `text`.
    #[arg(long, default_value = "json")]
    log_format: LogFormat,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let _telemetry = match bv_telemetry::init(cli.log_format, false) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("bv-kafka-bridge: {e:#}");
            return std::process::ExitCode::from(2);
        }
    };
    match run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("kafka bridge: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let loaded = config::load(&cli.from)?;
    let mut bridge = loaded.config;
    if let Some(brokers) = cli.brokers {
        bridge.brokers = brokers;
    }
    let db_url = cli
        .db_url
        .or(bridge.db_url.clone())
        .or_else(|| std::env::var("SPIN_VARIABLE_DB_URL").ok())
        .or(loaded.app_db_url)
        .context("no database: give --db-url, `db_url` in the bridge's table, or an app with a db_url variable")?;
    let db: tokio_postgres::Config = db_url
        .parse()
        .map_err(|e| anyhow::anyhow!("the database address is not valid: {e}"))?;
    let bridge = Arc::new(bridge);

    let metrics = Arc::new(Metrics::default());
    let mut registry = prometheus_client::registry::Registry::default();
    metrics.register(&mut registry);
    let listener = tokio::net::TcpListener::bind(cli.admin_listen)
        .await
        .with_context(|| format!("binding the admin listener {}", cli.admin_listen))?;
    tracing::info!(
        "kafka bridge: admin on http://{}/metrics",
        listener.local_addr()?
    );

    let stop = CancellationToken::new();
    let mut halves = tokio::task::JoinSet::new();
    halves.spawn(bv_kafka_bridge::admin::serve(
        listener,
        Arc::new(registry),
        stop.clone(),
    ));
    if !bridge.out.is_empty() {
        let out = Outbound {
            config: bridge.clone(),
            db: db.clone(),
            metrics: metrics.clone(),
        };
        halves.spawn(out.run(stop.clone()));
    }
    if let Some(cdc) = &bridge.cdc {
        let captured = match &cdc.db_url {
            Some(url) => url.parse().map_err(|e| {
                anyhow::anyhow!("cdc.db_url: the database address is not valid: {e}")
            })?,
            None => db.clone(),
        };
        let cdc = bv_kafka_bridge::cdc::Cdc {
            config: bridge.clone(),
            db: captured,
            metrics: metrics.clone(),
        };
        halves.spawn(cdc.run(stop.clone()));
    }
    let mut groups: std::collections::BTreeMap<&str, Vec<_>> = Default::default();
    for route in &bridge.inbound {
        groups
            .entry(route.group.as_str())
            .or_default()
            .push(route.clone());
    }
    for routes in groups.into_values() {
        let inbound = Inbound {
            routes,
            config: bridge.clone(),
            db: db.clone(),
            metrics: metrics.clone(),
        };
        halves.spawn(inbound.run(stop.clone()));
    }

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("kafka bridge: stopping (committing offsets, finishing the batch in hand)");
    stop.cancel();
    while halves.join_next().await.is_some() {}
    Ok(())
}
