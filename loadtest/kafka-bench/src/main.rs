//! `kafka-bench`: the driver and the native peer of `loadtest/kafka.sh`.
//!
//! The peer does the bridge's work with nothing around it: `out-native`
//! reads the outbox in batches and produces the same binary-mode records
//! with an idempotent producer, awaiting every acknowledgement;
//! `in-native` consumes a topic in a group, checks each record the same way
//! and writes it into the outbox with the same statement, storing the offset
//! after the write. What it leaves out is what the bridge adds: the
//! subscription row, its position and lock, `LISTEN`, metrics.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bv_kafka_bridge::binding::{self, Coordinates, Record};
use bv_kafka_bridge::config::BridgeConfig;
use bv_kafka_bridge::kafka;
use clap::{Parser, Subcommand};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer as _, StreamConsumer};
use rdkafka::message::{Headers as _, Message as _};
use rdkafka::{Offset, TopicPartitionList};
use tokio_postgres::{Client, NoTls};

/// The benchmark's event type and its topic by the naming rule.
const TYPE: &str = "com.bitvelocity.stock.restocked.v1";

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Writes N events into the outbox, 500 per transaction, over 50 subjects.
    Fill {
        #[arg(long)]
        db: String,
        #[arg(long)]
        events: usize,
    },
    /// Produces the outbox's events natively until N were acknowledged
    /// (with --follow: keeps polling every 5 ms until killed).
    OutNative {
        #[arg(long)]
        db: String,
        #[arg(long)]
        brokers: String,
        #[arg(long)]
        events: usize,
        #[arg(long)]
        follow: bool,
    },
    /// Reads a topic from its start until N records came; prints
    /// `<records/s first to last> <seconds>`.
    WatchTopic {
        #[arg(long)]
        brokers: String,
        #[arg(long)]
        topic: String,
        #[arg(long)]
        want: usize,
        #[arg(long, default_value_t = 300)]
        timeout: u64,
    },
    /// Writes one event per transaction at RATE per second for SECONDS and
    /// times each to its arrival on the topic; prints `<p50 ms> <p99 ms> <n>`.
    Latency {
        #[arg(long)]
        db: String,
        #[arg(long)]
        brokers: String,
        #[arg(long)]
        topic: String,
        #[arg(long)]
        rate: u32,
        #[arg(long)]
        seconds: u64,
    },
    /// Produces N binary-mode CloudEvents to a topic.
    InProduce {
        #[arg(long)]
        brokers: String,
        #[arg(long)]
        topic: String,
        #[arg(long)]
        events: usize,
    },
    /// Takes a topic into the outbox natively until N records were taken.
    InNative {
        #[arg(long)]
        db: String,
        #[arg(long)]
        brokers: String,
        #[arg(long)]
        topic: String,
        #[arg(long)]
        events: usize,
    },
    /// Polls the outbox until it holds N events; prints
    /// `<events/s first to last> <seconds>`.
    WatchOutbox {
        #[arg(long)]
        db: String,
        #[arg(long)]
        want: i64,
        #[arg(long, default_value_t = 300)]
        timeout: u64,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Fill { db, events } => fill(&connect(&db).await?, 0, events).await,
        Command::OutNative {
            db,
            brokers,
            events,
            follow,
        } => out_native(&db, &brokers, events, follow).await,
        Command::WatchTopic {
            brokers,
            topic,
            want,
            timeout,
        } => {
            let (rate, seconds) = watch_topic(&brokers, &topic, want, timeout)?;
            println!("{rate:.0} {seconds:.3}");
            Ok(())
        }
        Command::Latency {
            db,
            brokers,
            topic,
            rate,
            seconds,
        } => latency(&db, &brokers, &topic, rate, seconds).await,
        Command::InProduce {
            brokers,
            topic,
            events,
        } => in_produce(&brokers, &topic, events).await,
        Command::InNative {
            db,
            brokers,
            topic,
            events,
        } => in_native(&db, &brokers, &topic, events).await,
        Command::WatchOutbox { db, want, timeout } => watch_outbox(&db, want, timeout).await,
    }
}

async fn connect(url: &str) -> anyhow::Result<Client> {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .with_context(|| format!("connecting to {url}"))?;
    tokio::spawn(connection);
    Ok(client)
}

fn bridge_config(brokers: &str) -> BridgeConfig {
    let mut config = bv_kafka_bridge::config::parse("[[out]]\nevents = [\"com.bitvelocity.*\"]\n")
        .expect("a valid configuration")
        .config;
    config.brokers = brokers.to_string();
    config
}

fn event(i: usize) -> bv_events::CloudEvent {
    event_with_id(format!("ev-{i}"), i)
}

fn event_with_id(id: String, i: usize) -> bv_events::CloudEvent {
    let subject = format!("p{}", i % 50);
    bv_events::CloudEvent::with_id(
        id,
        TYPE,
        "/bench",
        subject.clone(),
        serde_json::json!({
            "productId": subject, "sku": format!("S{i}"), "warehouseId": "w",
            "quantity": 1, "onHand": i,
        }),
    )
}

const INSERT: &str = "INSERT INTO bv_events.outbox (id, source, type, subject, time, event) \
     VALUES ($1, $2, $3, $4, $5::text::timestamptz, $6::text::jsonb) \
     ON CONFLICT (source, id) DO NOTHING";

async fn insert(client: &Client, e: &bv_events::CloudEvent) -> anyhow::Result<u64> {
    Ok(client
        .execute(
            INSERT,
            &[
                &e.id(),
                &e.source(),
                &e.ty(),
                &e.subject(),
                &e.time(),
                &e.to_json(),
            ],
        )
        .await?)
}

async fn fill(client: &Client, from: usize, events: usize) -> anyhow::Result<()> {
    let statement = client.prepare(INSERT).await?;
    for chunk in (from..from + events).collect::<Vec<_>>().chunks(500) {
        client.batch_execute("BEGIN").await?;
        for i in chunk {
            let e = event(*i);
            client
                .execute(
                    &statement,
                    &[
                        &e.id(),
                        &e.source(),
                        &e.ty(),
                        &e.subject(),
                        &e.time(),
                        &e.to_json(),
                    ],
                )
                .await?;
        }
        client.batch_execute("COMMIT").await?;
    }
    Ok(())
}

async fn out_native(db: &str, brokers: &str, events: usize, follow: bool) -> anyhow::Result<()> {
    let client = connect(db).await?;
    let config = bridge_config(brokers);
    let producer = kafka::producer(&config)?;
    let mut topics = kafka::Topics::new(&config)?;
    let read = client
        .prepare("SELECT seq, type, event::text FROM bv_events.outbox WHERE seq > $1 ORDER BY seq LIMIT 1024")
        .await?;
    let (mut position, mut done) = (0i64, 0usize);
    while follow || done < events {
        let rows = client.query(&read, &[&position]).await?;
        if rows.is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        }
        let mut pending = Vec::with_capacity(rows.len());
        for row in &rows {
            let ty: String = row.get(1);
            let topic = config.topic_for(&ty).context("no topic")?;
            topics.ensure(&topic).await?;
            let record = binding::to_record(row.get(2))?;
            pending.push(kafka::send(&producer, &topic, &record).await?);
        }
        for delivery in pending {
            kafka::acknowledged(delivery).await?;
        }
        position = rows.last().expect("not empty").get(0);
        done += rows.len();
    }
    Ok(())
}

fn assigned_from_start(brokers: &str, topic: &str, limit: Instant) -> anyhow::Result<BaseConsumer> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "kafka-bench-watch")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "5")
        .create()?;
    let partitions = loop {
        if let Ok(meta) = consumer.fetch_metadata(Some(topic), Duration::from_secs(5)) {
            let n = meta.topics().first().map_or(0, |t| t.partitions().len());
            if n > 0 {
                break n;
            }
        }
        anyhow::ensure!(Instant::now() < limit, "topic {topic} never appeared");
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p as i32, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    Ok(consumer)
}

fn watch_topic(
    brokers: &str,
    topic: &str,
    want: usize,
    timeout: u64,
) -> anyhow::Result<(f64, f64)> {
    let limit = Instant::now() + Duration::from_secs(timeout);
    let consumer = assigned_from_start(brokers, topic, limit)?;
    let (mut first, mut last, mut seen) = (None, Instant::now(), 0usize);
    let mut shown = Instant::now();
    while seen < want {
        anyhow::ensure!(
            Instant::now() < limit,
            "only {seen} of {want} records on {topic}"
        );
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            m?;
            seen += 1;
            last = Instant::now();
            first.get_or_insert(last);
        }
        if shown.elapsed() > Duration::from_secs(1) {
            eprintln!("   {seen} of {want} records on {topic}");
            shown = Instant::now();
        }
    }
    let seconds = last.duration_since(first.unwrap_or(last)).as_secs_f64();
    Ok(((want.saturating_sub(1)) as f64 / seconds.max(1e-9), seconds))
}

async fn latency(
    db: &str,
    brokers: &str,
    topic: &str,
    rate: u32,
    seconds: u64,
) -> anyhow::Result<()> {
    let client = connect(db).await?;
    let total = (rate as u64 * seconds) as usize;
    let (brokers, topic) = (brokers.to_string(), topic.to_string());
    // The reader runs on a thread of its own, timing arrivals by id.
    let reader = std::thread::spawn(move || -> anyhow::Result<HashMap<String, Instant>> {
        let limit = Instant::now() + Duration::from_secs(seconds + 120);
        let consumer = assigned_from_start(&brokers, &topic, limit)?;
        let mut arrived = HashMap::new();
        while arrived.len() < total && Instant::now() < limit {
            if let Some(m) = consumer.poll(Duration::from_millis(50)) {
                let m = m?;
                let id = m
                    .headers()
                    .and_then(|h| h.iter().find(|h| h.key == "ce_id").and_then(|h| h.value))
                    .map(|v| String::from_utf8_lossy(v).into_owned());
                // Only the events this run writes (not the warm-up's).
                if let Some(id) = id.filter(|id| id.starts_with("lat-")) {
                    arrived.entry(id).or_insert_with(Instant::now);
                }
            }
        }
        Ok(arrived)
    });
    let gap = Duration::from_secs_f64(1.0 / rate as f64);
    let start = Instant::now();
    let mut sent = HashMap::with_capacity(total);
    for n in 0..total {
        let due = start + gap * n as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            tokio::time::sleep(wait).await;
        }
        let e = event_with_id(format!("lat-{n}"), n);
        insert(&client, &e).await?;
        sent.insert(e.id().to_string(), Instant::now());
    }
    let arrived = reader.join().expect("the reader")?;
    let mut ms: Vec<f64> = sent
        .iter()
        .filter_map(|(id, at)| {
            arrived
                .get(id)
                .map(|a| a.duration_since(*at).as_secs_f64() * 1000.0)
        })
        .collect();
    anyhow::ensure!(ms.len() == total, "{} of {total} events arrived", ms.len());
    ms.sort_by(f64::total_cmp);
    let q = |p: f64| ms[((ms.len() as f64 * p) as usize).min(ms.len() - 1)];
    println!("{:.1} {:.1} {}", q(0.5), q(0.99), ms.len());
    Ok(())
}

async fn in_produce(brokers: &str, topic: &str, events: usize) -> anyhow::Result<()> {
    let config = bridge_config(brokers);
    kafka::Topics::new(&config)?.ensure(topic).await?;
    let producer = kafka::producer(&config)?;
    let mut pending = Vec::with_capacity(events);
    for i in 0..events {
        let e = event(i);
        let record = binding::to_record(&e.to_json())?;
        pending.push(kafka::send(&producer, topic, &record).await?);
    }
    for delivery in pending {
        kafka::acknowledged(delivery).await?;
    }
    Ok(())
}

async fn in_native(db: &str, brokers: &str, topic: &str, events: usize) -> anyhow::Result<()> {
    let mut client = connect(db).await?;
    let statement = client.prepare(INSERT).await?;
    let config = bridge_config(brokers);
    let consumer: StreamConsumer = kafka::consumer(&config, "kafka-bench-native")?;
    consumer.subscribe(&[topic])?;
    let mut taken = 0;
    while taken < events {
        // As the bridge does: what has arrived, up to 256, in one transaction.
        let mut batch = vec![consumer.recv().await?];
        while batch.len() < 256 {
            match tokio::time::timeout(Duration::ZERO, consumer.recv()).await {
                Ok(m) => batch.push(m?),
                Err(_) => break,
            }
        }
        let mut checked = Vec::with_capacity(batch.len());
        for m in &batch {
            let record = Record {
                key: m.key().map(<[u8]>::to_vec),
                value: m.payload().map(<[u8]>::to_vec),
                headers: m
                    .headers()
                    .map(|hs| {
                        hs.iter()
                            .map(|h| (h.key.to_string(), h.value.unwrap_or_default().to_vec()))
                            .collect()
                    })
                    .unwrap_or_default(),
            };
            let at = Coordinates {
                topic: m.topic(),
                partition: m.partition(),
                offset: m.offset(),
            };
            checked.push(binding::from_record(&record, None, &at).map_err(anyhow::Error::msg)?);
        }
        let tx = client.transaction().await?;
        let (transaction, statement) = (&tx, &statement);
        futures::future::try_join_all(checked.iter().map(|e| async move {
            let json = e.to_json();
            transaction
                .execute(
                    statement,
                    &[
                        &e.id(),
                        &e.source(),
                        &e.ty(),
                        &e.subject(),
                        &e.time(),
                        &json,
                    ],
                )
                .await
        }))
        .await?;
        tx.commit().await?;
        for m in &batch {
            consumer.store_offset_from_message(m)?;
        }
        taken += batch.len();
    }
    Ok(())
}

async fn watch_outbox(db: &str, want: i64, timeout: u64) -> anyhow::Result<()> {
    let client = connect(db).await?;
    let limit = Instant::now() + Duration::from_secs(timeout);
    let (mut first, mut shown) = (None, Instant::now());
    loop {
        let n: i64 = client
            .query_one("SELECT count(*) FROM bv_events.outbox", &[])
            .await?
            .get(0);
        if n > 0 {
            first.get_or_insert_with(Instant::now);
        }
        if n >= want {
            let seconds = first.map_or(0.0, |f: Instant| f.elapsed().as_secs_f64());
            println!("{:.0} {seconds:.3}", want as f64 / seconds.max(1e-9));
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < limit,
            "only {n} of {want} events in the outbox"
        );
        if shown.elapsed() > Duration::from_secs(1) {
            eprintln!("   {n} of {want} events in the outbox");
            shown = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
