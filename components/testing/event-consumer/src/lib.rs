//! `event-consumer`: the consuming side of the durable event tests, a
//! Postgres trigger handler written with `bv-events-guest`.
//!
//! The database address is the component variable `db_url`. Tables (made
//! if missing, once per instance):
//!
//! - `deliveries(event_id text, attempt int, instance bigint, at timestamptz)`:
//!   one row per delivery, written first and outside the claim transaction,
//!   so that redeliveries show; `instance` is a random number drawn once per
//!   instance, so tests see which deliveries shared an instance;
//! - `seen(n bigserial primary key, subject text, event_id text, type text, "offset" bigint, name text, at timestamptz)`:
//!   one row per event handled, `n` in apply order (`offset` is a reserved
//!   word: quote it), `at` when it was applied (`clock_timestamp()`, so
//!   `at - bv_events.outbox.recorded_at` is the event's end-to-end latency;
//!   `loadtest/events.sh` reads it);
//! - `product_view(product_id text primary key, name text, sku text, price_amount bigint, currency text, updates int)`:
//!   the read model; `product.created` sets every column (keeping
//!   `updates`), `product.updated` sets what changed and adds 1 to
//!   `updates`.
//!
//! `seen` and `product_view` are written in one transaction with the
//! event's claim (`bv_events.processed`), so an event redelivered after it
//! was handled has no second effect.
//!
//! The product's name (`name`, or `changes.name` of an update) chooses
//! a behaviour by its prefix:
//!
//! | prefix   | behaviour |
//! |----------|-----------|
//! | `fail-`  | a retryable error on every attempt (nothing written but `deliveries`) |
//! | `flaky-` | a retryable error on attempt 1, handled on later attempts |
//! | `reject-`| rejected (dead-lettered at once) |
//! | `dup-`   | handled and committed, then a retryable error on attempt 1: a crash after commit |
//! | `slow-`  | sleeps 200 ms, then handled |
//! | other    | handled |

use std::collections::hash_map::RandomState;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{bail, Context};
use bv_events_guest::{Event, Reject, Transaction};
use serde::Deserialize;
use spin_sdk::pg::{Connection, ParameterValue};

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

/// The `data` of the two product events (the subscription takes
/// `com.bitvelocity.product.*`); each field the schema requires, typed.
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
        /// In the schema; the view keeps no revision.
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

static TABLES_READY: AtomicBool = AtomicBool::new(false);

/// This instance's number: drawn from WASI's random source on first use.
fn instance() -> i64 {
    use std::hash::{BuildHasher as _, Hasher as _};
    static INSTANCE: OnceLock<i64> = OnceLock::new();
    *INSTANCE.get_or_init(|| RandomState::new().build_hasher().finish() as i64)
}

/// Creates the tables, one instance at a time: instances handling events
/// side by side would race on `CREATE … IF NOT EXISTS` (a duplicate catalog
/// row, or a failure while the winner has not committed). A transaction
/// advisory lock serialises them, as `bv_service::migrate` does; the second
/// finds the tables.
async fn create_tables(conn: &Connection) -> anyhow::Result<()> {
    let tx = Transaction::begin(conn).await?;
    tx.query(
        "SELECT pg_advisory_xact_lock(hashtext('event-consumer-tables'))",
        Vec::<ParameterValue>::new(),
    )
    .await?;
    for sql in TABLES {
        tx.execute(*sql, Vec::<ParameterValue>::new()).await?;
    }
    tx.commit().await?;
    Ok(())
}

#[bv_events_guest::handler]
async fn on_event(event: Event<Product>) -> anyhow::Result<()> {
    let url = spin_sdk::variables::get("db_url")
        .await
        .context("variable db_url")?;
    let conn = Connection::open(url).await.context("connecting")?;
    if !TABLES_READY.load(Ordering::Relaxed) {
        create_tables(&conn).await.context("creating tables")?;
        TABLES_READY.store(true, Ordering::Relaxed);
    }
    conn.execute(
        "INSERT INTO deliveries (event_id, attempt, instance) VALUES ($1, $2, $3)",
        vec![
            ParameterValue::Str(event.id.clone()),
            ParameterValue::Int32(event.attempt as i32),
            ParameterValue::Int64(instance()),
        ],
    )
    .await
    .context("recording the delivery")?;

    let name = event.data.name().to_string();
    if name.starts_with("fail-") {
        bail!("`{name}`: failing on attempt {} as asked", event.attempt);
    }
    if name.starts_with("flaky-") && event.attempt == 1 {
        bail!("`{name}`: failing on the first attempt as asked");
    }
    if name.starts_with("reject-") {
        return Err(Reject::new(format!("`{name}`: rejected as asked")).into());
    }
    if name.starts_with("slow-") {
        spin_sdk::time::sleep(Duration::from_millis(200)).await;
    }

    let tx = Transaction::begin(&conn).await?;
    if !tx.claim(&event).await? {
        tx.rollback().await?;
        return Ok(());
    }
    apply(&tx, &event).await?;
    tx.commit().await?;

    if name.starts_with("dup-") && event.attempt == 1 {
        bail!("`{name}`: failing after commit on the first attempt as asked");
    }
    Ok(())
}

/// The event's effects, inside the claim transaction.
async fn apply(tx: &Transaction<'_>, event: &Event<Product>) -> anyhow::Result<()> {
    tx.execute(
        "INSERT INTO seen (subject, event_id, type, \"offset\", name) VALUES ($1, $2, $3, $4, $5)",
        vec![
            event
                .subject
                .clone()
                .map_or(ParameterValue::DbNull, ParameterValue::Str),
            ParameterValue::Str(event.id.clone()),
            ParameterValue::Str(event.ty.clone()),
            ParameterValue::Int64(event.offset as i64),
            ParameterValue::Str(event.data.name().to_string()),
        ],
    )
    .await?;
    match &event.data {
        Product::Created {
            product_id,
            sku,
            name,
            price,
        } => {
            tx.execute(
                "INSERT INTO product_view (product_id, name, sku, price_amount, currency)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (product_id) DO UPDATE SET
                     name = EXCLUDED.name, sku = EXCLUDED.sku,
                     price_amount = EXCLUDED.price_amount, currency = EXCLUDED.currency",
                vec![
                    ParameterValue::Str(product_id.clone()),
                    ParameterValue::Str(name.clone()),
                    ParameterValue::Str(sku.clone()),
                    ParameterValue::Int64(price.amount),
                    ParameterValue::Str(price.currency.clone()),
                ],
            )
            .await?;
        }
        Product::Updated {
            product_id,
            changes,
            ..
        } => {
            let text = |v: Option<&String>| {
                v.cloned()
                    .map_or(ParameterValue::DbNull, ParameterValue::Str)
            };
            tx.execute(
                "INSERT INTO product_view (product_id, name, price_amount, currency, updates)
                 VALUES ($1, $2, $3, $4, 1)
                 ON CONFLICT (product_id) DO UPDATE SET
                     name = COALESCE(EXCLUDED.name, product_view.name),
                     price_amount = COALESCE(EXCLUDED.price_amount, product_view.price_amount),
                     currency = COALESCE(EXCLUDED.currency, product_view.currency),
                     updates = product_view.updates + 1",
                vec![
                    ParameterValue::Str(product_id.clone()),
                    text(changes.name.as_ref()),
                    changes
                        .price
                        .as_ref()
                        .map_or(ParameterValue::DbNull, |p| ParameterValue::Int64(p.amount)),
                    text(changes.price.as_ref().map(|p| &p.currency)),
                ],
            )
            .await?;
        }
    }
    Ok(())
}
