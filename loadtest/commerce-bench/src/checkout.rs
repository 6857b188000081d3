//! `checkout`: fills carts and checks them out concurrently, then proves
//! that every order ended `PAID` and reports what a checkout cost.
//!
//! 1. Carts: customer `i` gets one line (even `i`) or two (odd `i`) of the
//!    catalogue's products, 1–2 units each (`POST /api/carts/me/items`).
//! 2. Warm-up: `--warmup` customers check out (not measured), so that
//!    every component has live instances and pooled connections.
//! 3. Measured: `--customers` checkouts from `--clients` connections (or,
//!    with `--rate`, offered at that many per second whatever the answers
//!    take: an open model), each `POST /api/orders` with its own
//!    `Idempotency-Key` and `{"card":{"token":"tok_visa"}}`; progress every
//!    second.
//! 4. Checks, through the database: every order `PAID`, its saga
//!    finished, its payment captured for the order's total, its
//!    reservation held, the cart cleared, stock reserved to the unit.
//!
//! Around step 3 it reads the CPU time of `bv` and of this database's
//! PostgreSQL backends, bv's per-component request metrics (requests and
//! time, service-chained calls included) and the database's transaction
//! counters. Results go to `--out` as `key value` lines and the
//! per-component table to `--breakdown`, for `loadtest/commerce.sh`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use serde_json::json;
use tokio_postgres::{Client, NoTls};

use crate::measure;
use crate::setup::{self, Product};
use crate::token::Minter;
use bv_load::client::Connection;

/// `checkout` options.
#[derive(clap::Args)]
pub struct Args {
    /// The app, e.g. http://127.0.0.1:3400.
    #[arg(long)]
    url: String,
    /// bv's admin listener, e.g. http://127.0.0.1:9800 (for `/metrics`).
    #[arg(long)]
    admin: String,
    /// The app's database (for the checks and its counters).
    #[arg(long)]
    db: String,
    /// bv's process id (its CPU time is reported per checkout).
    #[arg(long)]
    bv_pid: u32,
    /// Clock ticks per second of `/proc/<pid>/stat` (`getconf CLK_TCK`).
    #[arg(long, default_value_t = 100)]
    clk_tck: u64,
    /// Measured checkouts (one customer each).
    #[arg(long, default_value_t = 2000)]
    customers: usize,
    /// Checkouts before the measured ones.
    #[arg(long, default_value_t = 40)]
    warmup: usize,
    /// Concurrent connections.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Offer the measured checkouts as an open-model load at this many per
    /// second (arrivals on a fixed schedule, each on a pooled connection
    /// or a new one, latency counted from its scheduled start) instead of
    /// from `--clients` closed-loop connections.
    #[arg(long)]
    rate: Option<f64>,
    /// Makes customer ids unique to this run.
    #[arg(long)]
    tag: String,
    /// The seed of the app's signing key (see `auth-keys`): each customer's
    /// access token is minted with it.
    #[arg(long, env = "COMMERCE_BENCH_AUTH_SEED", hide_env_values = true)]
    auth_seed: String,
    /// Seconds to wait for the database's counters to include everything
    /// (an idle backend reports within 10 s).
    #[arg(long, default_value_t = 11)]
    stats_wait_s: u64,
    /// Longest the measured checkouts may take.
    #[arg(long, default_value_t = 240)]
    timeout_s: u64,
    /// Where to write the figures (`key value` lines).
    #[arg(long)]
    out: std::path::PathBuf,
    /// Where to write the per-component table (Markdown).
    #[arg(long)]
    breakdown: std::path::PathBuf,
}

/// The run's customers: their ids and access tokens.
struct Customers {
    tag: String,
    minter: Minter,
}

impl Customers {
    /// Customer `i`'s id.
    fn id(&self, i: usize) -> String {
        format!("bench-{}-{i}", self.tag)
    }

    /// Customer `i`'s `authorization` header value.
    fn bearer(&self, i: usize) -> String {
        self.minter.bearer(&self.id(i), "customer")
    }
}

/// Customer `i`'s cart: (product index, quantity) lines, distinct products.
fn cart_plan(i: usize, products: usize) -> Vec<(usize, u64)> {
    let lines = if products > 1 { 1 + i % 2 } else { 1 };
    let quantity = 1 + (i / 2 % 2) as u64;
    let first = i * 7 % products;
    (0..lines)
        .map(|k| ((first + k * 3) % products, quantity))
        .collect()
}

/// Counts done and failed, shared by the workers and the progress line.
#[derive(Default)]
struct Progress {
    done: AtomicUsize,
    failed: AtomicUsize,
    stop: AtomicBool,
    errors: Mutex<Vec<String>>,
}

impl Progress {
    fn fail(&self, message: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        let mut errors = self.errors.lock().unwrap_or_else(|p| p.into_inner());
        if errors.len() < 5 {
            eprintln!("  error: {message}");
            errors.push(message);
        }
    }
}

/// Prints a progress line every second until `progress.stop`.
fn show_progress(label: &'static str, total: usize, progress: Arc<Progress>) {
    tokio::spawn(async move {
        let start = Instant::now();
        let mut last = (start, 0usize);
        while !progress.stop.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if progress.stop.load(Ordering::Relaxed) {
                break;
            }
            let done = progress.done.load(Ordering::Relaxed);
            let now = Instant::now();
            let rate = (done - last.1) as f64 / now.duration_since(last.0).as_secs_f64();
            last = (now, done);
            eprintln!(
                "  [{label}] {:5.1} s  {done:>5}/{total}  {rate:6.0}/s now  {:6.0}/s overall  errors {}",
                start.elapsed().as_secs_f64(),
                done as f64 / start.elapsed().as_secs_f64(),
                progress.failed.load(Ordering::Relaxed),
            );
        }
    });
}

/// What [`run_jobs`] measured.
struct Jobs {
    /// Each job's latency, milliseconds, sorted.
    latencies: Vec<f64>,
    /// When each job ended, seconds from the start, sorted.
    ends: Vec<f64>,
    progress: Arc<Progress>,
    /// First job started to last ended.
    seconds: f64,
}

impl Jobs {
    /// From (latency in ms, end in seconds from the start) samples.
    fn from_samples(samples: &[(f64, f64)], progress: Arc<Progress>, seconds: f64) -> Self {
        let mut latencies: Vec<f64> = samples.iter().map(|s| s.0).collect();
        let mut ends: Vec<f64> = samples.iter().map(|s| s.1).collect();
        latencies.sort_by(f64::total_cmp);
        ends.sort_by(f64::total_cmp);
        Jobs {
            latencies,
            ends,
            progress,
            seconds,
        }
    }

    /// Jobs per second over the first and over the second half of the
    /// jobs (by end time): a rate that falls shows work growing with the
    /// run.
    fn half_rates(&self) -> (f64, f64) {
        let n = self.ends.len();
        if n < 4 {
            return (0.0, 0.0);
        }
        let mid = self.ends[n / 2 - 1];
        let last = self.ends[n - 1];
        ((n / 2) as f64 / mid, (n - n / 2) as f64 / (last - mid))
    }
}

/// Runs `job(i)` for every `i` in `range` from `clients` connections; the
/// latency of each job in milliseconds. Failures are counted, not fatal.
async fn run_jobs<F, Fut>(
    label: &'static str,
    url: &str,
    clients: usize,
    range: std::ops::Range<usize>,
    job: F,
) -> anyhow::Result<Jobs>
where
    F: Fn(Connection, usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = (Connection, Result<(), String>)> + Send,
{
    let total = range.len();
    let next = Arc::new(AtomicUsize::new(range.start));
    let progress = Arc::new(Progress::default());
    let job = Arc::new(job);
    let mut workers = tokio::task::JoinSet::new();
    let mut conns = Vec::new();
    for _ in 0..clients.max(1) {
        conns.push(Connection::open(url).await?);
    }
    show_progress(label, total, progress.clone());
    let started = Instant::now();
    for mut conn in conns {
        let (next, progress, job) = (next.clone(), progress.clone(), job.clone());
        let end = range.end;
        workers.spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= end {
                    return latencies;
                }
                let t = Instant::now();
                let (back, result) = job(conn, i).await;
                conn = back;
                let ended = started.elapsed().as_secs_f64();
                latencies.push((t.elapsed().as_secs_f64() * 1000.0, ended));
                match result {
                    Ok(()) => {}
                    Err(e) => progress.fail(e),
                }
                progress.done.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    let mut samples = Vec::with_capacity(total);
    while let Some(joined) = workers.join_next().await {
        samples.extend(joined.context("a load worker")?);
    }
    progress.stop.store(true, Ordering::Relaxed);
    Ok(Jobs::from_samples(
        &samples,
        progress,
        started.elapsed().as_secs_f64(),
    ))
}

/// Starts `job(i)` for every `i` in `range` at `rate` per second on a fixed
/// schedule, whatever the answers take (an open model): each on an idle
/// pooled connection or a new one. A job's latency runs from its scheduled
/// start, so time spent behind a slow server counts.
async fn run_open<F, Fut>(
    label: &'static str,
    url: &str,
    rate: f64,
    range: std::ops::Range<usize>,
    job: F,
) -> anyhow::Result<Jobs>
where
    F: Fn(Connection, usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = (Connection, Result<(), String>)> + Send,
{
    anyhow::ensure!(rate > 0.0, "--rate must be above 0");
    let total = range.len();
    let progress = Arc::new(Progress::default());
    let job = Arc::new(job);
    let idle: Arc<Mutex<Vec<Connection>>> = Arc::default();
    let url: Arc<str> = url.into();
    let mut jobs = tokio::task::JoinSet::new();
    show_progress(label, total, progress.clone());
    let started = Instant::now();
    for (n, i) in range.enumerate() {
        let due = started + Duration::from_secs_f64(n as f64 / rate);
        tokio::time::sleep_until(due.into()).await;
        let (progress, job, idle, url) = (progress.clone(), job.clone(), idle.clone(), url.clone());
        jobs.spawn(async move {
            let pooled = idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
            let conn = match pooled {
                Some(conn) => Ok(conn),
                None => Connection::open(&url).await,
            };
            let result = match conn {
                Ok(conn) => {
                    let (back, result) = job(conn, i).await;
                    idle.lock().unwrap_or_else(|p| p.into_inner()).push(back);
                    result
                }
                Err(e) => Err(format!("connecting: {e:#}")),
            };
            let latency = due.elapsed().as_secs_f64() * 1000.0;
            if let Err(e) = result {
                progress.fail(e);
            }
            progress.done.fetch_add(1, Ordering::Relaxed);
            (latency, started.elapsed().as_secs_f64())
        });
    }
    let mut samples = Vec::with_capacity(total);
    while let Some(joined) = jobs.join_next().await {
        samples.push(joined.context("a checkout")?);
    }
    progress.stop.store(true, Ordering::Relaxed);
    Ok(Jobs::from_samples(
        &samples,
        progress,
        started.elapsed().as_secs_f64(),
    ))
}

/// Adds customer `i`'s lines to their cart.
async fn fill_cart(
    mut conn: Connection,
    customers: &Customers,
    products: &[Product],
    i: usize,
) -> (Connection, Result<(), String>) {
    let customer = customers.id(i);
    let bearer = customers.bearer(i);
    for (p, quantity) in cart_plan(i, products.len()) {
        let body = json!({ "productId": products[p].id, "quantity": quantity });
        let headers = [("authorization", bearer.as_str())];
        match conn
            .send("POST", "/api/carts/me/items", &headers, Some(&body))
            .await
        {
            Ok(a) if a.status == 200 => {}
            Ok(a) => {
                return (
                    conn,
                    Err(format!("{customer}: cart add {} {}", a.status, a.text())),
                )
            }
            Err(e) => return (conn, Err(format!("{customer}: cart add: {e:#}"))),
        }
    }
    (conn, Ok(()))
}

/// Checks customer `i`'s cart out: 201 and `PAID`, or the reason why not.
async fn check_out(
    mut conn: Connection,
    customers: &Customers,
    i: usize,
) -> (Connection, Result<(), String>) {
    let customer = customers.id(i);
    let bearer = customers.bearer(i);
    let key = format!("checkout-{}-{i}", customers.tag);
    let headers = [
        ("authorization", bearer.as_str()),
        ("idempotency-key", key.as_str()),
    ];
    let body = json!({ "card": { "token": "tok_visa" } });
    let result = match conn
        .send("POST", "/api/orders", &headers, Some(&body))
        .await
    {
        Ok(a) if a.status == 201 && a.json()["status"] == "PAID" => Ok(()),
        Ok(a) => Err(format!("{customer}: checkout {} {}", a.status, a.text())),
        Err(e) => Err(format!("{customer}: checkout: {e:#}")),
    };
    (conn, result)
}

async fn connect(db: &str) -> anyhow::Result<Client> {
    let (client, connection) = tokio_postgres::connect(db, NoTls)
        .await
        .with_context(|| format!("connecting to {db}"))?;
    tokio::spawn(connection);
    Ok(client)
}

/// The database checks of every order of this run: a list of what is
/// wrong (empty when everything adds up).
async fn verify(
    db: &Client,
    tag: &str,
    expected_orders: i64,
    expected_units: i64,
) -> anyhow::Result<Vec<String>> {
    let pattern = format!("bench-{tag}-%");
    let row = db
        .query_one(
            "SELECT count(*),
                    count(*) FILTER (WHERE o.status = 'PAID'),
                    count(*) FILTER (WHERE s.state = 'finished'),
                    count(*) FILTER (WHERE p.status = 'CAPTURED' AND p.amount = o.total_amount),
                    count(*) FILTER (WHERE r.status = 'RESERVED'),
                    count(*) FILTER (WHERE EXISTS (
                        SELECT 1 FROM orders.saga_log l
                        WHERE l.order_id = o.order_id AND l.step = 'clear-cart' AND l.phase = 'done')),
                    coalesce(sum((SELECT sum((l->>'quantity')::bigint) FROM jsonb_array_elements(o.items) l)), 0)::bigint
             FROM orders.orders o
             LEFT JOIN orders.sagas s ON s.order_id = o.order_id
             LEFT JOIN payments p ON p.payment_id = o.order_id
             LEFT JOIN inventory.reservations r ON r.reservation_id = o.order_id
             WHERE o.customer_id LIKE $1",
            &[&pattern],
        )
        .await
        .context("checking the orders")?;
    let reserved: i64 = db
        .query_one(
            "SELECT coalesce(sum(reserved), 0)::bigint FROM inventory.stock",
            &[],
        )
        .await?
        .get(0);
    let mut problems = Vec::new();
    let checks = [
        ("orders", row.get::<_, i64>(0), expected_orders),
        ("orders PAID", row.get(1), expected_orders),
        ("sagas finished", row.get(2), expected_orders),
        (
            "payments captured for the order's total",
            row.get(3),
            expected_orders,
        ),
        ("reservations held", row.get(4), expected_orders),
        ("carts cleared", row.get(5), expected_orders),
        ("units in the orders", row.get(6), expected_units),
        (
            "units reserved in inventory.stock",
            reserved,
            expected_units,
        ),
    ];
    for (what, got, want) in checks {
        if got != want {
            problems.push(format!("{what}: {got} (expected {want})"));
        }
    }
    Ok(problems)
}

/// CPU seconds so far: bv, the trigger's backends, the other backends,
/// and the machine's busy and total jiffies.
struct Cpu {
    bv: f64,
    trigger: f64,
    pool: f64,
    machine: (u64, u64),
}

/// Fills the carts, checks out, checks, writes the figures.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let customers = Arc::new(Customers {
        tag: args.tag.clone(),
        minter: crate::token::minter(&args.auth_seed)?,
    });
    let tag = args.tag.clone();
    let db = connect(&args.db).await?;
    let row = db
        .query_one("SELECT current_database(), pg_backend_pid()", &[])
        .await?;
    let (database, own_backend): (String, i32) = (row.get(0), row.get(1));
    let mut conn = Connection::open(&args.url).await?;
    let products = Arc::new(setup::products(&mut conn).await?);
    let (warm, all) = (args.warmup, args.warmup + args.customers);
    let units: u64 = (0..all)
        .flat_map(|i| cart_plan(i, products.len()))
        .map(|(_, q)| q)
        .sum();
    let adds = (warm..all)
        .map(|i| cart_plan(i, products.len()).len())
        .sum::<usize>();
    eprintln!(
        "checkout: {} products ({}), {warm} warm-up + {} measured customers, {} connections, {units} units in all",
        products.len(),
        products[0].currency,
        args.customers,
        args.clients
    );

    let fill = {
        let (customers, products) = (customers.clone(), products.clone());
        move |conn, i| {
            let (customers, products) = (customers.clone(), products.clone());
            async move { fill_cart(conn, &customers, &products, i).await }
        }
    };
    let order = {
        let customers = customers.clone();
        move |conn, i| {
            let customers = customers.clone();
            async move { check_out(conn, &customers, i).await }
        }
    };
    let failed = |jobs: &Jobs| jobs.progress.failed.load(Ordering::Relaxed);

    // Warm-up.
    eprintln!("== warm-up: {warm} carts and checkouts");
    let carts = run_jobs(
        "warm-up carts",
        &args.url,
        args.clients,
        0..warm,
        fill.clone(),
    )
    .await?;
    let orders = run_jobs(
        "warm-up checkouts",
        &args.url,
        args.clients,
        0..warm,
        order.clone(),
    )
    .await?;
    if failed(&carts) + failed(&orders) > 0 {
        bail!(
            "{} warm-up requests failed (see above)",
            failed(&carts) + failed(&orders)
        );
    }
    let warm_end = Instant::now();

    // The measured carts.
    eprintln!("== carts of the {} measured customers", args.customers);
    let carts = run_jobs("carts", &args.url, args.clients, warm..all, fill).await?;
    if failed(&carts) > 0 {
        bail!("{} carts could not be filled (see above)", failed(&carts));
    }

    // Let the database's counters catch up with the warm-up before the
    // measured window opens.
    let settle = Duration::from_secs(args.stats_wait_s);
    if let Some(rest) = settle.checked_sub(warm_end.elapsed()) {
        eprintln!(
            "== waiting {:.0} s for the database's counters to settle",
            rest.as_secs_f64()
        );
        tokio::time::sleep(rest).await;
    }

    let trigger = measure::trigger_backends(&db).await?;
    let cpu = || {
        let (t, p) =
            measure::backend_cpu_seconds(&database, own_backend as u32, &trigger, args.clk_tck);
        Cpu {
            bv: measure::cpu_seconds(args.bv_pid, args.clk_tck).unwrap_or(0.0),
            trigger: t,
            pool: p,
            machine: measure::machine_jiffies(),
        }
    };
    let db_before = measure::db_counters(&db).await?;
    let metrics_before = measure::scrape(&args.admin).await?;
    let cpu_before = cpu();

    let orders = match args.rate {
        Some(rate) => {
            eprintln!(
                "== {} checkouts offered at {rate}/s (open model)",
                args.customers
            );
            run_open("checkouts", &args.url, rate, warm..all, order).await?
        }
        None => {
            eprintln!(
                "== {} checkouts from {} connections",
                args.customers, args.clients
            );
            run_jobs("checkouts", &args.url, args.clients, warm..all, order).await?
        }
    };

    let cpu_after = cpu();
    let metrics_after = measure::scrape(&args.admin).await?;
    let measured_end = Instant::now();
    let errors = failed(&orders);

    eprintln!("== checking every order in the database");
    let mut problems = verify(&db, &tag, all as i64, units as i64).await?;
    if errors > 0 {
        problems.insert(0, format!("{errors} checkouts failed"));
    }
    let check = if problems.is_empty() {
        format!("ok: {all} orders PAID (saga finished, payment captured, stock reserved, cart cleared), {units} units reserved")
    } else {
        problems.join("; ")
    };
    eprintln!("   {check}");

    if let Some(rest) = settle.checked_sub(measured_end.elapsed()) {
        eprintln!(
            "== waiting {:.0} s for the database's counters",
            rest.as_secs_f64()
        );
        tokio::time::sleep(rest).await;
    }
    let db_after = measure::db_counters(&db).await?;

    // Figures.
    let n = args.customers as f64;
    let per = |a: i64, b: i64| format!("{:.1}", (a - b) as f64 / n);
    let us = |a: f64, b: f64| format!("{:.0}", (a - b) * 1e6 / n);
    let (busy, total) = (
        cpu_after.machine.0 - cpu_before.machine.0,
        cpu_after.machine.1 - cpu_before.machine.1,
    );
    let (first_half, second_half) = orders.half_rates();
    let ms = |v: &[f64], p: f64| format!("{:.1}", measure::percentile(v, p));
    let mut out = String::new();
    let mut put = |k: &str, v: String| writeln!(out, "{k} {v}").expect("a String");
    put("customers", args.customers.to_string());
    put("warmup", warm.to_string());
    put("clients", args.clients.to_string());
    put(
        "offered_rate",
        args.rate.map_or("-".to_string(), |r| format!("{r}")),
    );
    put("products", products.len().to_string());
    put("units", units.to_string());
    put("checkout_s", format!("{:.2}", orders.seconds));
    put("checkout_rate", format!("{:.1}", n / orders.seconds));
    put("checkout_rate_first_half", format!("{first_half:.1}"));
    put("checkout_rate_second_half", format!("{second_half:.1}"));
    put("checkout_p50_ms", ms(&orders.latencies, 0.5));
    put("checkout_p90_ms", ms(&orders.latencies, 0.9));
    put("checkout_p99_ms", ms(&orders.latencies, 0.99));
    put("checkout_max_ms", ms(&orders.latencies, 1.0));
    put("checkout_errors", errors.to_string());
    put("carts", carts.latencies.len().to_string());
    put("cart_adds", adds.to_string());
    put(
        "cart_rate",
        format!("{:.1}", carts.latencies.len() as f64 / carts.seconds),
    );
    put("cart_p50_ms", ms(&carts.latencies, 0.5));
    put("cart_p99_ms", ms(&carts.latencies, 0.99));
    put("cpu_bv_us", us(cpu_after.bv, cpu_before.bv));
    put("cpu_pg_pool_us", us(cpu_after.pool, cpu_before.pool));
    put(
        "cpu_pg_trigger_us",
        us(cpu_after.trigger, cpu_before.trigger),
    );
    put("trigger_backends", trigger.len().to_string());
    put(
        "machine_busy_pct",
        format!("{:.0}", 100.0 * busy as f64 / total.max(1) as f64),
    );
    put("db_commits", per(db_after.commits, db_before.commits));
    put("db_rollbacks", per(db_after.rollbacks, db_before.rollbacks));
    put(
        "db_rows_written",
        per(db_after.rows_written, db_before.rows_written),
    );
    put("events", per(db_after.events, db_before.events));
    put("outbox_rows", db_after.events.to_string());
    put("check", check.clone());
    std::fs::write(&args.out, &out).with_context(|| format!("writing {}", args.out.display()))?;

    let times = measure::delta(&metrics_before, &metrics_after);
    let mut table = String::from(
        "| component | requests per checkout | mean time per request | time per checkout | non-2xx |\n|---|---:|---:|---:|---:|\n",
    );
    for (component, t) in &times {
        writeln!(
            table,
            "| {component} | {:.2} | {:.2} ms | {:.2} ms | {:.0} |",
            t.count / n,
            t.seconds * 1000.0 / t.count,
            t.seconds * 1000.0 / n,
            t.non_2xx
        )
        .expect("a String");
    }
    std::fs::write(&args.breakdown, &table)
        .with_context(|| format!("writing {}", args.breakdown.display()))?;

    eprintln!(
        "checkout: {} in {:.1} s = {:.0}/s (first half {first_half:.0}/s, second half {second_half:.0}/s), p50 {} ms, p99 {} ms; {errors} errors",
        args.customers,
        orders.seconds,
        n / orders.seconds,
        ms(&orders.latencies, 0.5),
        ms(&orders.latencies, 0.99),
    );
    if !problems.is_empty() {
        bail!("the checkouts do not add up: {check}");
    }
    Ok(())
}
