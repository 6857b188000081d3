//! `iot-bench`: the device simulator, driver and native baseline of
//! `loadtest/iot.sh`, the IoT ingestion benchmark.
//!
//! - `setup` creates the `iot` schema (recorded as the components'
//!   migration), a device type and the simulated devices;
//! - `simulate` runs devices that publish a temperature-like signal with
//!   injected anomalies (`bv_iot::sim`), JSON or binary, QoS 1, throttled
//!   or as fast as the broker takes them, showing progress every second;
//! - `wait` polls the database until every message is stored and prints
//!   the throughput;
//! - `latency` publishes probes one at a time and measures publish →
//!   stored, idle;
//! - `native-consumer` does the ingester's work (`components/iot-ingest`)
//!   in plain rumqttc + tokio-postgres, statement for statement: the
//!   baseline.

mod native;
mod sim;

use clap::{Parser, Subcommand};

/// The IoT ingestion benchmark's tools.
#[derive(Parser)]
#[command(name = "iot-bench")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create the schema, the device type and the devices.
    Setup(sim::SetupArgs),
    /// Publish from simulated devices.
    Simulate(sim::SimulateArgs),
    /// Wait until the database holds the messages; print the throughput.
    Wait(sim::WaitArgs),
    /// Publish probes one at a time; print publish-to-stored latency.
    Latency(sim::LatencyArgs),
    /// The native baseline consumer, until SIGTERM or Ctrl-C.
    NativeConsumer(native::Args),
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let result = rt.block_on(async {
        match Cli::parse().command {
            Command::Setup(args) => sim::setup(args).await,
            Command::Simulate(args) => sim::simulate(args).await,
            Command::Wait(args) => sim::wait(args).await,
            Command::Latency(args) => sim::latency(args).await,
            Command::NativeConsumer(args) => native::run(args).await,
        }
    });
    if let Err(e) = result {
        eprintln!("iot-bench: {e:#}");
        std::process::exit(1);
    }
}

/// Connects to Postgres, driving the connection in the background.
pub async fn connect(db: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::connect(db, tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// `host:port` of an `mqtt://host:port` address (or a bare `host:port`).
pub fn broker(address: &str) -> anyhow::Result<(String, u16)> {
    let rest = address.strip_prefix("mqtt://").unwrap_or(address);
    let (host, port) = rest
        .rsplit_once(':')
        .ok_or_else(|| anyhow::anyhow!("broker {address:?}: expected mqtt://host:port"))?;
    Ok((host.to_string(), port.parse()?))
}
