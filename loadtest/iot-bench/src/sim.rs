//! Simulated devices, and the measurements taken from the database.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bv_iot::message::encode_binary;
use bv_iot::sim::{generate, Scenario};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

use crate::{broker, connect};

/// The device type every simulated device has.
const TYPE: &str = r#"{"name": "bench-thermostat", "metrics": [
    {"name": "temperature", "unit": "°C", "min": -40, "max": 85},
    {"name": "humidity", "unit": "%", "min": 0, "max": 100}]}"#;

/// The device `setup` registers for the latency probes.
const PROBE_DEVICE: &str = "probe-device";

/// `setup` options.
#[derive(clap::Args)]
pub struct SetupArgs {
    /// The database.
    #[arg(long)]
    db: String,
    /// Devices to register: `<prefix>-0` …
    #[arg(long, default_value_t = 20)]
    devices: usize,
    /// Their id prefix.
    #[arg(long, default_value = "sim")]
    prefix: String,
}

/// Creates the schema as the components' migration, the type and the
/// devices (with a password hash nobody knows: the benchmark's broker
/// admits anyone).
pub async fn setup(args: SetupArgs) -> anyhow::Result<()> {
    let db = connect(&args.db).await?;
    db.batch_execute(
        "CREATE TABLE IF NOT EXISTS bv_migrations (
             component text NOT NULL, name text NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now(),
             PRIMARY KEY (component, name))",
    )
    .await?;
    for (name, sql) in bv_iot::schema::MIGRATIONS {
        let done = db
            .query_opt(
                "SELECT 1 FROM bv_migrations WHERE component = $1 AND name = $2",
                &[&bv_iot::schema::COMPONENT, &name],
            )
            .await?;
        if done.is_none() {
            db.batch_execute(sql).await.context("the iot schema")?;
            db.execute(
                "INSERT INTO bv_migrations (component, name) VALUES ($1, $2)",
                &[&bv_iot::schema::COMPONENT, &name],
            )
            .await?;
        }
    }
    db.execute(
        "INSERT INTO iot.device_types (name, spec) VALUES ('bench-thermostat', $1::text::jsonb)
         ON CONFLICT DO NOTHING",
        &[&TYPE],
    )
    .await?;
    // The simulated devices, and the one the latency probes come from
    // (apart, so that no probe lands on a simulated sample's time).
    let ids = (0..args.devices)
        .map(|i| format!("{}-{i}", args.prefix))
        .chain([PROBE_DEVICE.to_string()]);
    for id in ids {
        db.execute(
            "INSERT INTO iot.devices (id, type, owner, mqtt_password_hash)
             VALUES ($1, 'bench-thermostat', 'bench', '$7$101$x$y') ON CONFLICT DO NOTHING",
            &[&id],
        )
        .await?;
    }
    Ok(())
}

/// `simulate` options.
#[derive(clap::Args)]
pub struct SimulateArgs {
    /// The broker, mqtt://host:port.
    #[arg(long, default_value = "mqtt://127.0.0.1:1883")]
    broker: String,
    /// Devices publishing at once.
    #[arg(long, default_value_t = 20)]
    devices: usize,
    /// Their id prefix (as `setup` made them).
    #[arg(long, default_value = "sim")]
    prefix: String,
    /// Messages per device.
    #[arg(long, default_value_t = 1000)]
    messages: usize,
    /// Messages per second per device; 0: as fast as the broker takes them.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Share of messages in the binary form (0 to 1).
    #[arg(long, default_value_t = 0.5)]
    binary: f64,
}

/// Runs the devices; each publishes its signal's samples one second of
/// device time apart, ending now.
pub async fn simulate(args: SimulateArgs) -> anyhow::Result<()> {
    let (host, port) = broker(&args.broker)?;
    let sent = Arc::new(AtomicU64::new(0));
    let total = (args.devices * args.messages) as u64;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64;
    let first_ms = now - args.messages as i64 * 1000;
    let mut tasks = Vec::new();
    for d in 0..args.devices {
        let labelled = generate(&Scenario {
            samples: args.messages,
            seed: d as u64 + 1,
            anomalies: args.messages / 500,
            gap: 150,
            quiet: 300,
            ..Scenario::default()
        });
        let id = format!("{}-{d}", args.prefix);
        let mut options = MqttOptions::new(
            format!("bench-{id}-{}", std::process::id()),
            host.clone(),
            port,
        );
        options.set_keep_alive(Duration::from_secs(30));
        options.set_inflight(100);
        let (client, mut eventloop) = AsyncClient::new(options, 200);
        let sent = sent.clone();
        let binary_every = if args.binary <= 0.0 {
            usize::MAX
        } else {
            (1.0 / args.binary).round().max(1.0) as usize
        };
        let rate = args.rate;
        let messages = args.messages;
        tasks.push(tokio::spawn(async move {
            let publisher = tokio::spawn(async move {
                let topic = format!("devices/{id}/telemetry");
                let start = Instant::now();
                for (i, value) in labelled.values.iter().enumerate() {
                    if rate > 0.0 {
                        let due = start + Duration::from_secs_f64(i as f64 / rate);
                        tokio::time::sleep_until(due.into()).await;
                    }
                    let ts = first_ms + i as i64 * 1000;
                    let humidity = 40.0 + (i % 17) as f64 * 0.3;
                    let payload = if i % binary_every == 0 {
                        encode_binary(i as u32, ts, &[(0, *value as f32), (1, humidity as f32)])
                    } else {
                        serde_json::json!({"seq": i, "ts": ts, "metrics": {"temperature": value, "humidity": humidity}})
                            .to_string()
                            .into_bytes()
                    };
                    client.publish(topic.clone(), QoS::AtLeastOnce, false, payload).await?;
                }
                anyhow::Ok(client)
            });
            let mut acked = 0;
            while acked < messages {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::PubAck(_))) => {
                        acked += 1;
                        sent.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(_) => {}
                    Err(e) => anyhow::bail!("device {d}: {e}"),
                }
            }
            let client = publisher.await??;
            let _ = client.disconnect().await;
            anyhow::Ok(())
        }));
    }
    let start = Instant::now();
    let progress = {
        let sent = sent.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let n = sent.load(Ordering::Relaxed);
                eprintln!(
                    "  published {n}/{total} ({:.0}/s)",
                    n as f64 / start.elapsed().as_secs_f64()
                );
            }
        })
    };
    for t in tasks {
        t.await??;
    }
    progress.abort();
    let elapsed = start.elapsed().as_secs_f64();
    println!(
        "published {total} messages in {elapsed:.2} s ({:.0}/s)",
        total as f64 / elapsed
    );
    Ok(())
}

/// `wait` options.
#[derive(clap::Args)]
pub struct WaitArgs {
    /// The database.
    #[arg(long)]
    db: String,
    /// Messages expected (one `temperature` row each).
    #[arg(long)]
    messages: i64,
    /// Longest wait, in seconds.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
}

/// Polls until `messages` are stored; prints messages/s between the first
/// and the last poll that saw progress.
pub async fn wait(args: WaitArgs) -> anyhow::Result<()> {
    let db = connect(&args.db).await?;
    let count = "SELECT count(*) FROM iot.telemetry WHERE metric = 'temperature'";
    let start = Instant::now();
    let mut first: Option<(Instant, i64)> = None;
    let mut last_print = Instant::now();
    loop {
        let n: i64 = db.query_one(count, &[]).await?.get(0);
        if n > 0 && first.is_none() {
            first = Some((Instant::now(), n));
        }
        if n >= args.messages {
            let (t0, n0) = first.expect("set above");
            let secs = t0.elapsed().as_secs_f64().max(1e-3);
            let rate = (n - n0) as f64 / secs;
            println!("stored {n} messages; {rate:.0} messages/s");
            println!("RATE {rate:.1}");
            return Ok(());
        }
        if start.elapsed() > Duration::from_secs(args.timeout) {
            anyhow::bail!(
                "only {n} of {} messages stored after {} s",
                args.messages,
                args.timeout
            );
        }
        if last_print.elapsed() >= Duration::from_secs(1) {
            eprintln!("  stored {n}/{}", args.messages);
            last_print = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `latency` options.
#[derive(clap::Args)]
pub struct LatencyArgs {
    /// The broker, mqtt://host:port.
    #[arg(long, default_value = "mqtt://127.0.0.1:1883")]
    broker: String,
    /// The database.
    #[arg(long)]
    db: String,
    /// The device that publishes the probes (registered by `setup`).
    #[arg(long, default_value = PROBE_DEVICE)]
    device: String,
    /// Probes.
    #[arg(long, default_value_t = 200)]
    probes: usize,
}

/// One probe at a time: publish, then poll (every 0.5 ms) until its row
/// is there.
pub async fn latency(args: LatencyArgs) -> anyhow::Result<()> {
    let (host, port) = broker(&args.broker)?;
    let db = connect(&args.db).await?;
    let found = db
        .prepare(
            "SELECT 1 FROM iot.telemetry WHERE device_id = $1 AND metric = 'temperature'
             AND ts = to_timestamp($2::bigint / 1000.0)",
        )
        .await?;
    let mut options = MqttOptions::new(format!("bench-probe-{}", std::process::id()), host, port);
    options.set_keep_alive(Duration::from_secs(30));
    let (client, mut eventloop) = AsyncClient::new(options, 10);
    tokio::spawn(async move { while eventloop.poll().await.is_ok() {} });
    let topic = format!("devices/{}/telemetry", args.device);
    let mut samples = Vec::with_capacity(args.probes);
    for i in 0..args.probes {
        let ts = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis() as i64;
        let payload = serde_json::json!({"seq": i, "ts": ts, "metrics": {"temperature": 21.0 + (i % 5) as f64 * 0.1, "humidity": 40.0 + (i % 7) as f64}});
        let start = Instant::now();
        client
            .publish(
                topic.clone(),
                QoS::AtLeastOnce,
                false,
                payload.to_string().into_bytes(),
            )
            .await?;
        loop {
            if !db.query(&found, &[&args.device, &ts]).await?.is_empty() {
                break;
            }
            if start.elapsed() > Duration::from_secs(10) {
                anyhow::bail!("probe {i} not stored after 10 s");
            }
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
        samples.push(start.elapsed().as_secs_f64() * 1000.0);
        // Keep device time moving (the detector ignores older samples).
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    println!(
        "publish → stored over {} probes: p50 {:.2} ms, p99 {:.2} ms",
        samples.len(),
        at(0.5),
        at(0.99)
    );
    println!("LATENCY {:.2} {:.2}", at(0.5), at(0.99));
    Ok(())
}
