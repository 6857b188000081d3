//! The load and the measurement of one run (bv or native consumer; the
//! producer is the `event-producer` component either way).
//!
//! 1. Trickle: one warm-up event (not counted), then `--trickle` requests
//!    of one product each, `--trickle-gap-ms` apart, so that the consumer
//!    is idle when each is published: their latency is the idle path
//!    (commit → NOTIFY → read → handle).
//! 2. Burst: `--events` events from `--clients` concurrent connections,
//!    `--products` products with `--updates` updates each per request, so
//!    the outbox fills while the consumer drains it.
//!
//! Figures come from the database: each event's latency is
//! `seen.at − outbox.recorded_at` (both the server's `clock_timestamp()`),
//! throughput is events over first to last `seen` row. The results go to
//! `--out` as `key value` lines for `loadtest/events.sh`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use serde_json::{json, Value};
use tokio_postgres::{Client, NoTls};

use crate::http;

/// `load` options.
#[derive(clap::Args)]
pub struct Args {
    /// The producer's endpoint, e.g. http://127.0.0.1:3000/products.
    #[arg(long)]
    url: String,
    /// The database the producer writes and the consumer reads.
    #[arg(long)]
    db: String,
    /// Names the run in progress lines.
    #[arg(long)]
    label: String,
    /// Events in the burst (rounded up to whole requests).
    #[arg(long, default_value_t = 20_000)]
    events: u64,
    /// Concurrent producer connections.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Products per request.
    #[arg(long, default_value_t = 10)]
    products: u64,
    /// Updates per product (each one more event).
    #[arg(long, default_value_t = 1)]
    updates: u64,
    /// One-event requests sent before the burst.
    #[arg(long, default_value_t = 50)]
    trickle: u64,
    /// Pause between trickle requests.
    #[arg(long, default_value_t = 50)]
    trickle_gap_ms: u64,
    /// The subscription to wait for before loading.
    #[arg(long, default_value = "bench")]
    subscription: String,
    /// Longest wait for every event to be handled, from the first burst request.
    #[arg(long, default_value_t = 240)]
    timeout_s: u64,
    /// Where to write the results.
    #[arg(long)]
    out: std::path::PathBuf,
    /// The consuming process (bv or the native consumer): its CPU time
    /// while it drains the backlog is reported per event.
    #[arg(long)]
    consumer_pid: Option<u32>,
    /// Clock ticks per second of `/proc/<pid>/stat` (`getconf CLK_TCK`).
    #[arg(long, default_value_t = 100)]
    clk_tck: u64,
}

/// CPU seconds (user + system) of a process, from `/proc/<pid>/stat`.
fn cpu_seconds(pid: u32, clk_tck: u64) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces: fields start after its `)`.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / clk_tck as f64)
}

/// CPU seconds of the PostgreSQL backends serving `database` (their
/// process title names it), so that other databases' work is left out;
/// `except` is the driver's own backend.
fn backend_cpu_seconds(database: &str, except: u32, clk_tck: u64) -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    let needle = format!(" {database} ");
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != except)
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                let title = String::from_utf8_lossy(&c);
                title.starts_with("postgres: ") && title.contains(&needle)
            })
        })
        .filter_map(|pid| cpu_seconds(pid, clk_tck))
        .sum()
}

/// One product of the request body.
fn product(id: &str, n: u64) -> Value {
    json!({
        "productId": id,
        "sku": format!("SKU-{id}"),
        "name": format!("Product {id}"),
        "price": { "amount": 1000 + n % 1000, "currency": "EUR" }
    })
}

async fn connect(db: &str) -> anyhow::Result<Client> {
    let (client, connection) = tokio_postgres::connect(db, NoTls)
        .await
        .with_context(|| format!("connecting to {db}"))?;
    tokio::spawn(connection);
    Ok(client)
}

/// `count(*)` of `sql`; 0 while the consumer has not made its tables.
async fn count(client: &Client, sql: &str) -> anyhow::Result<i64> {
    match client.query_one(sql, &[]).await {
        Ok(row) => Ok(row.get(0)),
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) => Ok(0),
        Err(e) => Err(e).with_context(|| sql.to_string()),
    }
}

/// POSTs one batch; the number of events published.
async fn publish(conn: &mut http::Connection, body: &Value) -> anyhow::Result<u64> {
    let (status, reply) = conn.post(body.to_string()).await?;
    if status != 201 {
        bail!(
            "POST /products answered {status}: {}",
            String::from_utf8_lossy(&reply)
        );
    }
    let reply: Value = serde_json::from_slice(&reply).context("POST /products: reply")?;
    reply["published"]
        .as_u64()
        .context("POST /products: no `published` in the reply")
}

/// Delivery figures of the events whose subject is `LIKE pattern`.
struct Delivery {
    count: i64,
    /// First to last `seen` row.
    seen_span: f64,
    /// First `recorded_at` to last `seen` row.
    wall_span: f64,
    /// Handled after the last event was recorded, and over how long.
    after_publish: i64,
    after_publish_span: f64,
    p50: f64,
    p99: f64,
    max: f64,
}

async fn delivery(client: &Client, pattern: &str) -> anyhow::Result<Delivery> {
    let row = client
        .query_one(
            "WITH j AS (
                 SELECT s.at, o.recorded_at,
                        (extract(epoch FROM s.at - o.recorded_at) * 1000)::float8 AS ms
                 FROM seen s JOIN bv_events.outbox o ON o.source = '/catalog' AND o.id = s.event_id
                 WHERE s.subject LIKE $1
             ), b AS (
                 SELECT min(recorded_at) AS first_pub, max(recorded_at) AS last_pub,
                        min(at) AS first_seen, max(at) AS last_seen
                 FROM j
             )
             SELECT (SELECT count(*) FROM j),
                    extract(epoch FROM b.last_seen - b.first_seen)::float8,
                    extract(epoch FROM b.last_seen - b.first_pub)::float8,
                    (SELECT count(*) FROM j WHERE j.at > b.last_pub),
                    extract(epoch FROM b.last_seen - b.last_pub)::float8,
                    (SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY ms) FROM j),
                    (SELECT percentile_cont(0.99) WITHIN GROUP (ORDER BY ms) FROM j),
                    (SELECT max(ms) FROM j)
             FROM b",
            &[&pattern],
        )
        .await
        .context("reading delivery figures")?;
    Ok(Delivery {
        count: row.get(0),
        seen_span: row.get::<_, Option<f64>>(1).unwrap_or(0.0),
        wall_span: row.get::<_, Option<f64>>(2).unwrap_or(0.0),
        after_publish: row.get(3),
        after_publish_span: row.get::<_, Option<f64>>(4).unwrap_or(0.0),
        p50: row.get::<_, Option<f64>>(5).unwrap_or(0.0),
        p99: row.get::<_, Option<f64>>(6).unwrap_or(0.0),
        max: row.get::<_, Option<f64>>(7).unwrap_or(0.0),
    })
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

/// Runs the trickle and the burst and writes the figures.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let db = connect(&args.db).await?;
    let label = args.label.as_str();

    // The subscription exists once the consumer runs.
    let deadline = Instant::now() + Duration::from_secs(60);
    while count(
        &db,
        &format!(
            "SELECT count(*) FROM bv_events.subscriptions WHERE name = '{}'",
            args.subscription.replace('\'', "''")
        ),
    )
    .await?
        == 0
    {
        if Instant::now() > deadline {
            bail!(
                "subscription `{}` did not appear within 60 s",
                args.subscription
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // 1. Trickle, after one event that warms up both sides (its latency
    // is not counted).
    let mut conn = http::Connection::open(&args.url).await?;
    publish(&mut conn, &json!({ "products": [product("w-0", 0)] })).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while count(&db, "SELECT count(*) FROM seen WHERE subject = 'w-0'").await? < 1 {
        if Instant::now() > deadline {
            bail!("[{label}] the warm-up event was not handled within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for i in 0..args.trickle {
        let body = json!({ "products": [product(&format!("t-{i}"), i)] });
        publish(&mut conn, &body).await?;
        tokio::time::sleep(Duration::from_millis(args.trickle_gap_ms)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while count(&db, "SELECT count(*) FROM seen WHERE subject LIKE 't-%'").await?
        < args.trickle as i64
    {
        if Instant::now() > deadline {
            bail!("[{label}] the trickle's events were not all handled within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let trickle = delivery(&db, "t-%").await?;
    eprintln!(
        "[{label}] trickle: {} events one at a time, latency p50 {:.1} ms, p99 {:.1} ms",
        trickle.count, trickle.p50, trickle.p99
    );

    // 2. Burst.
    let per_request = args.products * (1 + args.updates);
    let requests = args.events.div_ceil(per_request).max(1);
    let events = requests * per_request;
    let next = Arc::new(AtomicUsize::new(0));
    let published = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..args.clients.max(1) {
        let (next, published, url) = (next.clone(), published.clone(), args.url.clone());
        let (products, updates) = (args.products, args.updates);
        workers.spawn(async move {
            let mut conn = http::Connection::open(&url).await?;
            let mut durations = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as u64;
                if i >= requests {
                    return anyhow::Ok(durations);
                }
                let batch: Vec<Value> = (0..products)
                    .map(|j| product(&format!("b-{i}-{j}"), i * products + j))
                    .collect();
                let body = json!({ "products": batch, "updates": updates });
                let t = Instant::now();
                let n = publish(&mut conn, &body).await?;
                durations.push(t.elapsed().as_secs_f64() * 1000.0);
                published.fetch_add(n, Ordering::Relaxed);
            }
        });
    }
    let burst_seen = "SELECT count(*) FROM seen WHERE subject LIKE 'b-%'";
    let mut durations = Vec::new();
    let mut producer_secs = None;
    let mut backlog_at_end = 0i64;
    let row = db
        .query_one("SELECT current_database(), pg_backend_pid()", &[])
        .await?;
    let (database, own_backend): (String, i32) = (row.get(0), row.get(1));
    let cpu = |database: &str| {
        (
            args.consumer_pid
                .and_then(|pid| cpu_seconds(pid, args.clk_tck)),
            backend_cpu_seconds(database, own_backend as u32, args.clk_tck),
        )
    };
    let mut cpu_at_end = (None, 0.0);
    let mut last = (Instant::now(), 0i64);
    let timeout = Duration::from_secs(args.timeout_s);
    loop {
        let tick = tokio::time::sleep(Duration::from_secs(1));
        tokio::pin!(tick);
        if producer_secs.is_none() {
            tokio::select! {
                joined = workers.join_next() => {
                    match joined {
                        Some(result) => durations.extend(result.context("producer task")??),
                        None => {
                            producer_secs = Some(started.elapsed().as_secs_f64());
                            backlog_at_end = events as i64 - count(&db, burst_seen).await?;
                            cpu_at_end = cpu(&database);
                        }
                    }
                    continue;
                }
                _ = &mut tick => {}
            }
        } else {
            tick.await;
        }
        let delivered = count(&db, burst_seen).await?;
        let now = Instant::now();
        let rate = (delivered - last.1) as f64 / now.duration_since(last.0).as_secs_f64();
        last = (now, delivered);
        eprintln!(
            "[{label}] {:6.1} s  published {:>6}/{events}  delivered {:>6}/{events}  ({rate:.0} events/s now)",
            started.elapsed().as_secs_f64(),
            published.load(Ordering::Relaxed),
            delivered,
        );
        if producer_secs.is_some() && delivered >= events as i64 {
            break;
        }
        if started.elapsed() > timeout {
            bail!(
                "[{label}] only {delivered} of {events} events handled after {} s",
                args.timeout_s
            );
        }
    }
    let cpu_drained = cpu(&database);
    let producer_secs = producer_secs.expect("set before the loop ends");
    durations.sort_by(f64::total_cmp);
    let burst = delivery(&db, "b-%").await?;

    // The consumer's work is checked, not assumed.
    let mut problems = Vec::new();
    let total = (events + args.trickle + 1) as i64;
    let seen = count(&db, "SELECT count(*) FROM seen").await?;
    let distinct = count(&db, "SELECT count(DISTINCT event_id) FROM seen").await?;
    let outbox = count(&db, "SELECT count(*) FROM bv_events.outbox").await?;
    let views = count(&db, "SELECT count(*) FROM product_view").await?;
    let updates = count(
        &db,
        "SELECT COALESCE(sum(updates), 0)::int8 FROM product_view",
    )
    .await?;
    let attempts = count(&db, "SELECT count(*) FROM deliveries").await?;
    let dead = count(&db, "SELECT count(*) FROM bv_events.dead_letters").await?;
    let products = (requests * args.products + args.trickle + 1) as i64;
    for (what, got, want) in [
        ("seen rows", seen, total),
        ("distinct events in seen", distinct, total),
        ("outbox rows", outbox, total),
        ("product_view rows", views, products),
        (
            "product_view updates",
            updates,
            (requests * args.products * args.updates) as i64,
        ),
        ("delivery attempts", attempts, total),
        ("dead letters", dead, 0),
    ] {
        if got != want {
            problems.push(format!("{what} {got} (expected {want})"));
        }
    }
    let check = if problems.is_empty() {
        "ok".to_string()
    } else {
        problems.join("; ")
    };

    let mut out = String::new();
    let mut put = |k: &str, v: String| writeln!(out, "{k} {v}").expect("a String");
    put("events", events.to_string());
    put("requests", requests.to_string());
    put("clients", args.clients.to_string());
    put("per_request", per_request.to_string());
    put("producer_s", format!("{producer_secs:.3}"));
    put(
        "producer_rps",
        format!("{:.1}", requests as f64 / producer_secs),
    );
    put(
        "producer_eps",
        format!("{:.1}", events as f64 / producer_secs),
    );
    put(
        "producer_p50_ms",
        format!("{:.2}", percentile(&durations, 0.5)),
    );
    put(
        "producer_p99_ms",
        format!("{:.2}", percentile(&durations, 0.99)),
    );
    put("backlog_at_publish_end", backlog_at_end.to_string());
    put("delivered", burst.count.to_string());
    put("seen_span_s", format!("{:.3}", burst.seen_span));
    put(
        "consumer_eps",
        format!(
            "{:.1}",
            (burst.count - 1).max(0) as f64 / burst.seen_span.max(1e-9)
        ),
    );
    put(
        "e2e_eps",
        format!("{:.1}", burst.count as f64 / burst.wall_span.max(1e-9)),
    );
    put("after_publish", burst.after_publish.to_string());
    put(
        "drain_eps",
        if burst.after_publish >= 100 {
            format!(
                "{:.1}",
                burst.after_publish as f64 / burst.after_publish_span.max(1e-9)
            )
        } else {
            "-".into()
        },
    );
    // CPU per event while draining what was left when publishing ended.
    let drained = backlog_at_end.max(1) as f64;
    put(
        "cpu_consumer_us",
        match (cpu_at_end.0, cpu_drained.0) {
            (Some(a), Some(b)) if backlog_at_end >= 100 => {
                format!("{:.0}", (b - a) * 1e6 / drained)
            }
            _ => "-".into(),
        },
    );
    put(
        "cpu_backends_us",
        if backlog_at_end >= 100 {
            format!("{:.0}", (cpu_drained.1 - cpu_at_end.1) * 1e6 / drained)
        } else {
            "-".into()
        },
    );
    put("lat_p50_ms", format!("{:.2}", burst.p50));
    put("lat_p99_ms", format!("{:.2}", burst.p99));
    put("lat_max_ms", format!("{:.2}", burst.max));
    put("trickle", trickle.count.to_string());
    put("trickle_p50_ms", format!("{:.2}", trickle.p50));
    put("trickle_p99_ms", format!("{:.2}", trickle.p99));
    put("trickle_max_ms", format!("{:.2}", trickle.max));
    put("check", check.clone());
    std::fs::write(&args.out, &out).with_context(|| format!("writing {}", args.out.display()))?;
    eprintln!(
        "[{label}] burst: {events} events in {producer_secs:.1} s ({:.0}/s published), handled at {:.0} events/s; latency p50 {:.0} ms, p99 {:.0} ms; check: {check}",
        events as f64 / producer_secs,
        (burst.count - 1).max(0) as f64 / burst.seen_span.max(1e-9),
        burst.p50,
        burst.p99,
    );
    if !problems.is_empty() {
        bail!("[{label}] the consumer's work does not add up: {check}");
    }
    Ok(())
}
