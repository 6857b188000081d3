//! The native baseline: the Postgres trigger's delivery loop and the
//! `event-consumer` component's handler, in plain tokio-postgres.
//!
//! The loop mirrors `triggers/trigger-postgres/src/subscriber.rs` statement
//! for statement: the same position query (128 events at most, only from
//! transactions older than every running one), one run of events per
//! subject with up to `--in-flight` runs at once (the trigger's
//! `max_in_flight`), the position moved once per batch, the dead-letter
//! check before each batch, the lag count when idle and at most once a
//! second while busy, woken by `NOTIFY bv_events` with a poll as fallback.
//!
//! The handler runs, per event, the statements the component runs
//! (`components/testing/event-consumer`): decode and schema-check the
//! envelope (`bv_events::decode`), deserialize `data`, its three
//! `CREATE TABLE IF NOT EXISTS` once per connection (the component makes
//! them once per instance, which under the `reuse` policy handles many
//! events), the
//! `deliveries` row, then `BEGIN`, the claim in `bv_events.processed`, the
//! `seen` row, the `product_view` upsert and `COMMIT`. It does them on
//! connections of its own (one per event in flight; the component's come
//! from bv's pool) with every statement prepared once, as a native service
//! would.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use futures::{StreamExt as _, TryStreamExt as _};
use serde::Deserialize;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::Notify;
use tokio_postgres::types::ToSql;
use tokio_postgres::{AsyncMessage, Client, NoTls, Statement};

/// `native-consumer` options.
#[derive(clap::Args)]
pub struct Args {
    /// The database, e.g. postgres://postgres@127.0.0.1:5432/db?sslmode=disable.
    #[arg(long)]
    db: String,
    /// The subscription's name (its position row and its claims).
    #[arg(long, default_value = "bench")]
    subscription: String,
    /// The event types taken (`*` matches any run of characters).
    #[arg(long, default_value = "com.bitvelocity.product.*")]
    events: Vec<String>,
    /// How often to look without a notification, as `poll_interval_ms`.
    #[arg(long, default_value_t = 100)]
    poll_interval_ms: u64,
    /// Events handled at once, one run per subject, as the trigger's
    /// `max_in_flight` (each run on a connection of its own).
    #[arg(long, default_value_t = 4)]
    in_flight: usize,
}

/// Events read per query, as the trigger's `BATCH`.
const BATCH: i64 = 128;

/// The component's tables, verbatim.
const TABLES: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS deliveries (
        event_id text NOT NULL,
        attempt  int NOT NULL,
        instance bigint,
        at       timestamptz NOT NULL DEFAULT clock_timestamp()
    )",
    "CREATE TABLE IF NOT EXISTS seen (
        n        bigserial PRIMARY KEY,
        subject  text,
        event_id text NOT NULL,
        type     text NOT NULL,
        \"offset\" bigint NOT NULL,
        name     text,
        at       timestamptz NOT NULL DEFAULT clock_timestamp()
    )",
    "CREATE TABLE IF NOT EXISTS product_view (
        product_id   text PRIMARY KEY,
        name         text,
        sku          text,
        price_amount bigint,
        currency     text,
        updates      int NOT NULL DEFAULT 0
    )",
];

const DELIVERY: &str = "INSERT INTO deliveries (event_id, attempt, instance) VALUES ($1, $2, $3)";
const CLAIM: &str = "INSERT INTO bv_events.processed (consumer, source, event_id) \
     VALUES ($1, $2, $3) ON CONFLICT DO NOTHING";
const SEEN: &str =
    "INSERT INTO seen (subject, event_id, type, \"offset\", name) VALUES ($1, $2, $3, $4, $5)";
const VIEW_CREATED: &str =
    "INSERT INTO product_view (product_id, name, sku, price_amount, currency)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (product_id) DO UPDATE SET
                     name = EXCLUDED.name, sku = EXCLUDED.sku,
                     price_amount = EXCLUDED.price_amount, currency = EXCLUDED.currency";
const VIEW_UPDATED: &str =
    "INSERT INTO product_view (product_id, name, price_amount, currency, updates)
                 VALUES ($1, $2, $3, $4, 1)
                 ON CONFLICT (product_id) DO UPDATE SET
                     name = COALESCE(EXCLUDED.name, product_view.name),
                     price_amount = COALESCE(EXCLUDED.price_amount, product_view.price_amount),
                     currency = COALESCE(EXCLUDED.currency, product_view.currency),
                     updates = product_view.updates + 1";

/// The trigger's position query, verbatim.
const NEXT_BATCH: &str = "WITH s AS (
                     SELECT position_tx, position_seq FROM bv_events.subscriptions WHERE name = $1
                 )
                 SELECT s.position_tx::text, s.position_seq, o.seq, o.tx::text, o.id, o.source,
                        o.type, o.subject, o.event::text
                 FROM s LEFT JOIN LATERAL (
                     SELECT * FROM bv_events.outbox o
                     WHERE (o.tx, o.seq) > (s.position_tx, s.position_seq)
                       AND o.tx < pg_snapshot_xmin(pg_current_snapshot())
                       AND o.type LIKE ANY($2)
                     ORDER BY o.tx, o.seq
                     LIMIT $3
                 ) o ON true";

/// The `data` of the two product events, as the component reads it.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Product {
    Created {
        #[serde(rename = "productId")]
        product_id: String,
        sku: String,
        name: String,
        price: Money,
    },
    Updated {
        #[serde(rename = "productId")]
        product_id: String,
        #[allow(dead_code)]
        revision: u64,
        changes: Changes,
    },
}

#[derive(Debug, Deserialize)]
struct Money {
    amount: i64,
    currency: String,
}

#[derive(Debug, Deserialize)]
struct Changes {
    name: Option<String>,
    price: Option<Money>,
}

impl Product {
    fn name(&self) -> &str {
        match self {
            Product::Created { name, .. } => name,
            Product::Updated { changes, .. } => changes.name.as_deref().unwrap_or_default(),
        }
    }
}

/// Where the native consumer's time went, summed over the run.
#[derive(Default)]
struct Timings {
    events: u64,
    batches: u64,
    decode: Duration,
    delivery: Duration,
    transaction: Duration,
    dead_letters: Duration,
    read: Duration,
    position: Duration,
}

impl Timings {
    /// Adds a run's per-event figures.
    fn add_events(&mut self, run: &Timings) {
        self.events += run.events;
        self.decode += run.decode;
        self.delivery += run.delivery;
        self.transaction += run.transaction;
    }

    fn report(&self) -> String {
        let per = |d: Duration, n: u64| d.as_secs_f64() * 1e6 / n.max(1) as f64;
        let (e, b) = (self.events, self.batches);
        format!(
            "native consumer timings: {e} events in {b} batches; per event: decode + schema check {:.0} µs, \
             deliveries row {:.0} µs, \
             transaction (BEGIN, claim, seen, product_view, COMMIT) {:.0} µs; \
             per batch: dead-letter check {:.0} µs, position query {:.0} µs, position update {:.0} µs",
            per(self.decode, e),
            per(self.delivery, e),
            per(self.transaction, e),
            per(self.dead_letters, b),
            per(self.read, b),
            per(self.position, b),
        )
    }
}

/// One outbox row.
struct OutboxEvent {
    seq: i64,
    tx: String,
    subject: Option<String>,
    json: String,
}

/// The handler's connection and its prepared statements.
struct Handler {
    client: Client,
    /// Statements prepared on `client`, by text.
    prepared: HashMap<&'static str, Statement>,
    /// A random number per connection, as the component's per instance.
    instance: i64,
}

impl Handler {
    async fn new(db: &str) -> anyhow::Result<Self> {
        let client = connect(db, None).await?;
        for sql in TABLES {
            client.batch_execute(sql).await.context("creating tables")?;
        }
        use std::hash::{BuildHasher as _, Hasher as _};
        let instance = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish() as i64;
        Ok(Self {
            client,
            prepared: HashMap::new(),
            instance,
        })
    }

    /// Runs `sql`, prepared on first use.
    async fn run(
        &mut self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, tokio_postgres::Error> {
        let statement = match self.prepared.get(sql) {
            Some(s) => s.clone(),
            None => {
                let s = self.client.prepare(sql).await?;
                self.prepared.insert(sql, s.clone());
                s
            }
        };
        self.client.execute(&statement, params).await
    }

    /// What the component does with one delivery.
    async fn handle(
        &mut self,
        event: &OutboxEvent,
        subscription: &str,
        timings: &mut Timings,
    ) -> anyhow::Result<()> {
        let mut t = Instant::now();
        let mut lap = |into: &mut Duration| {
            let now = Instant::now();
            *into += now - t;
            t = now;
        };
        let envelope = bv_events::decode(&event.json)
            .map_err(|e| anyhow::anyhow!("event at offset {}: {e}", event.seq))?;
        let data = Product::deserialize(envelope.data())
            .with_context(|| format!("event at offset {}: data", event.seq))?;
        lap(&mut timings.decode);
        let attempt = 1i32;
        let instance = self.instance;
        self.run(DELIVERY, &[&envelope.id(), &attempt, &instance])
            .await?;
        lap(&mut timings.delivery);
        timings.events += 1;
        self.run("BEGIN", &[]).await?;
        let claimed = self
            .run(CLAIM, &[&subscription, &envelope.source(), &envelope.id()])
            .await?
            == 1;
        if claimed {
            self.run(
                SEEN,
                &[
                    &envelope.subject(),
                    &envelope.id(),
                    &envelope.ty(),
                    &event.seq,
                    &data.name(),
                ],
            )
            .await?;
            match &data {
                Product::Created {
                    product_id,
                    sku,
                    name,
                    price,
                } => {
                    self.run(
                        VIEW_CREATED,
                        &[product_id, name, sku, &price.amount, &price.currency],
                    )
                    .await?;
                }
                Product::Updated {
                    product_id,
                    changes,
                    ..
                } => {
                    self.run(
                        VIEW_UPDATED,
                        &[
                            product_id,
                            &changes.name,
                            &changes.price.as_ref().map(|p| p.amount),
                            &changes.price.as_ref().map(|p| p.currency.as_str()),
                        ],
                    )
                    .await?;
                }
            }
            self.run("COMMIT", &[]).await?;
        } else {
            self.run("ROLLBACK", &[]).await?;
        }
        lap(&mut timings.transaction);
        Ok(())
    }
}

/// Connects; notifications, if wanted, wake `wake`.
async fn connect(db: &str, wake: Option<Arc<Notify>>) -> anyhow::Result<Client> {
    let (client, mut connection) = tokio_postgres::connect(db, NoTls)
        .await
        .with_context(|| format!("connecting to {db}"))?;
    tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(_)) => {
                    if let Some(wake) = &wake {
                        wake.notify_one();
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    eprintln!("native consumer: connection: {e}");
                    break;
                }
            }
        }
    });
    Ok(client)
}

/// Consumes until SIGTERM or Ctrl-C.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let wake = Arc::new(Notify::new());
    let mut reader = connect(&args.db, Some(wake.clone())).await?;
    // The schema, the reader's session and the lock, as the trigger has
    // them (bv-outbox).
    bv_outbox::ensure_schema(&mut reader).await?;
    bv_outbox::prepare_reader(&reader).await?;
    reader.batch_execute("LISTEN bv_events").await?;
    let locked = bv_outbox::try_lock(&reader, &args.subscription).await?;
    if !locked {
        bail!(
            "subscription `{}` is delivered elsewhere",
            args.subscription
        );
    }
    reader
        .execute(
            "WITH start AS (SELECT '0'::xid8, 0::bigint)
             INSERT INTO bv_events.subscriptions (name, component, types, position_tx, position_seq)
             SELECT $1, $2, $3, start.* FROM start
             ON CONFLICT (name) DO UPDATE SET component = EXCLUDED.component, types = EXCLUDED.types",
            &[&args.subscription, &"native", &args.events],
        )
        .await?;
    let in_flight = args.in_flight.max(1);
    let mut idle = Vec::with_capacity(in_flight);
    for _ in 0..in_flight {
        idle.push(Handler::new(&args.db).await?);
    }
    let idle = std::sync::Mutex::new(idle);
    let likes: Vec<String> = args
        .events
        .iter()
        .map(|p| bv_outbox::pattern::to_like(p))
        .collect();
    let poll = Duration::from_millis(args.poll_interval_ms);
    let mut term = signal(SignalKind::terminate())?;
    println!(
        "native consumer ready: subscription `{}`",
        args.subscription
    );

    let name = args.subscription.as_str();
    let mut last_lag = Instant::now() - Duration::from_secs(60);
    let mut timings = Timings::default();
    loop {
        // The trigger's dead-letter check before every batch.
        let t = Instant::now();
        reader
            .query(
                "SELECT d.seq, d.event_id, d.type, d.subject, d.event::text, d.attempts,
                        COALESCE(o.tx::text, '0'), COALESCE(o.source, '')
                 FROM bv_events.dead_letters d
                 LEFT JOIN bv_events.outbox o ON o.seq = d.seq
                 WHERE d.subscription = $1 AND d.retry_requested
                 ORDER BY d.seq",
                &[&name],
            )
            .await?;
        let dead_letters = t.elapsed();
        let t = Instant::now();
        let rows = reader.query(NEXT_BATCH, &[&name, &likes, &BATCH]).await?;
        let read = t.elapsed();
        let Some(first) = rows.first() else {
            bail!("subscription `{name}` disappeared from bv_events.subscriptions");
        };
        let position = (first.get::<_, String>(0), first.get::<_, i64>(1));
        let batch: Vec<OutboxEvent> = rows
            .iter()
            .filter(|r| r.get::<_, Option<i64>>(2).is_some())
            .map(|r| OutboxEvent {
                seq: r.get(2),
                tx: r.get(3),
                subject: r.get(7),
                json: r.get(8),
            })
            .collect();
        if batch.is_empty() {
            update_lag(&reader, name, &likes).await?;
            last_lag = Instant::now();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => break,
                _ = term.recv() => break,
                _ = wake.notified() => {}
                _ = tokio::time::sleep(poll) => {}
            }
            continue;
        }
        timings.batches += 1;
        timings.dead_letters += dead_letters;
        timings.read += read;
        let runs = if in_flight == 1 {
            vec![batch.iter().collect()]
        } else {
            runs_by_subject(&batch)
        };
        let idle = &idle;
        let finished: Vec<Timings> = futures::stream::iter(runs)
            .map(|run| async move {
                // At most `in_flight` runs at once, so one is always idle.
                let mut handler = idle.lock().unwrap().pop().expect("an idle handler");
                let mut run_timings = Timings::default();
                let mut result = Ok(());
                for event in run {
                    result = handler.handle(event, name, &mut run_timings).await;
                    if result.is_err() {
                        break;
                    }
                }
                idle.lock().unwrap().push(handler);
                result.map(|()| run_timings)
            })
            .buffer_unordered(in_flight)
            .try_collect()
            .await?;
        for run in &finished {
            timings.add_events(run);
        }
        let last = batch.last().expect("not empty");
        let t = Instant::now();
        reader
            .execute(
                "UPDATE bv_events.subscriptions
                 SET position_tx = $2::text::xid8, position_seq = $3,
                     delivered = delivered + $4, updated_at = now()
                 WHERE name = $1 AND position_tx = $5::text::xid8 AND position_seq = $6",
                &[
                    &name,
                    &last.tx,
                    &last.seq,
                    &(batch.len() as i64),
                    &position.0,
                    &position.1,
                ],
            )
            .await?;
        timings.position += t.elapsed();
        if last_lag.elapsed() > Duration::from_secs(1) {
            update_lag(&reader, name, &likes).await?;
            last_lag = Instant::now();
        }
    }
    eprintln!("{}", timings.report());
    Ok(())
}

/// The batch in runs that must stay in order, one per subject (events
/// without one share a run), as the trigger makes them.
fn runs_by_subject(batch: &[OutboxEvent]) -> Vec<Vec<&OutboxEvent>> {
    let mut runs: Vec<Vec<&OutboxEvent>> = Vec::new();
    let mut run_of: HashMap<Option<&str>, usize> = HashMap::new();
    for event in batch {
        let run = *run_of.entry(event.subject.as_deref()).or_insert_with(|| {
            runs.push(Vec::new());
            runs.len() - 1
        });
        runs[run].push(event);
    }
    runs
}

/// The trigger's lag count (it feeds a gauge there; here it only costs
/// what it costs there).
async fn update_lag(client: &Client, name: &str, likes: &[String]) -> anyhow::Result<()> {
    let _lag: i64 = client
        .query_one(
            "SELECT count(*) FROM bv_events.outbox o, bv_events.subscriptions s
             WHERE s.name = $1 AND (o.tx, o.seq) > (s.position_tx, s.position_seq)
               AND o.type LIKE ANY($2)",
            &[&name, &likes],
        )
        .await?
        .get(0);
    Ok(())
}
