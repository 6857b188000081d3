//! Operating durable events: what `bv events` does, as a library.
//!
//! Every function works on a connection to the database that holds the
//! `bv_events` schema and returns typed rows, so the command line only
//! formats them. Nothing here talks to a running `bv`: a replay or a
//! dead-letter retry changes rows and sends `NOTIFY bv_events`, which wakes
//! whichever process delivers the subscription (or is picked up by the next
//! one to start).

use std::time::Duration;

use anyhow::anyhow;
use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_postgres::config::Host;
use tokio_postgres::{Client, GenericClient, NoTls};

use crate::pattern;
use crate::schema::{self, LOCK_CLASS};

/// How often [`wait_progress`] looks at the lag.
const POLL: Duration = Duration::from_millis(250);

/// How long [`connect`] waits for the server when the address sets no
/// `connect_timeout`: an unreachable host should fail, not hang.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A place in the outbox: the subscription has seen every event up to
/// `(tx, seq)` in `(tx, seq)` order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Position {
    /// Id of the transaction that wrote the last event seen (`xid8`).
    pub tx: u64,
    /// Sequence number (the delivery's `offset`) of the last event seen.
    pub seq: i64,
}

/// One subscription as an operator sees it.
#[derive(Debug, Clone, Serialize)]
pub struct SubscriptionStatus {
    /// The subscription's name (the component id unless the manifest names it).
    pub name: String,
    /// The component its events are delivered to.
    pub component: String,
    /// The event type patterns, as written in the manifest (`*` wildcards).
    pub types: Vec<String>,
    /// The last event it has seen.
    pub position: Position,
    /// Events delivered so far (the trigger's counter).
    pub delivered: i64,
    /// Matching events after its position, not delivered yet.
    pub lag: i64,
    /// Events it gave up on, waiting in `bv_events.dead_letters`.
    pub dead_letters: i64,
    /// When its row last changed.
    #[serde(serialize_with = "rfc3339")]
    pub updated_at: DateTime<Utc>,
    /// Whether a `bv` is delivering it now (holds its advisory lock).
    pub active: bool,
}

/// Where a replay starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayFrom {
    /// The first event whose sequence number (delivery offset) is at least this.
    Offset(i64),
    /// The first event recorded at or after this time.
    Time(DateTime<Utc>),
}

/// What a replay reset.
#[derive(Debug, Clone, Serialize)]
pub struct ReplayStart {
    /// The subscription's new position.
    pub position: Position,
    /// Events that will be (re)delivered from there: the lag after the reset.
    pub events: i64,
    /// Processed marks deleted (with `forget_processed`).
    pub forgotten: u64,
    /// Whether a `bv` is delivering the subscription now; if not, the events
    /// are delivered when one starts.
    pub active: bool,
}

/// A replay's progress, as [`wait_progress`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Events delivered since waiting began (never decreases).
    pub done: i64,
    /// `done + lag`: grows when new events arrive meanwhile.
    pub total: i64,
    /// Events still to deliver.
    pub lag: i64,
    /// Whether a `bv` is delivering the subscription now.
    pub active: bool,
}

/// An event a subscription gave up on.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    /// The dead letter's id (what `retry`, `drop` and `show` take).
    pub id: i64,
    /// The subscription that gave up.
    pub subscription: String,
    /// The event's sequence number (delivery offset).
    pub seq: i64,
    /// The event's CloudEvents `id`.
    pub event_id: String,
    /// The event's type.
    #[serde(rename = "type")]
    pub event_type: String,
    /// The event's subject, if any.
    pub subject: Option<String>,
    /// Deliveries attempted.
    pub attempts: i32,
    /// The last attempt's error.
    pub last_error: String,
    /// Whether a retry was requested and not yet attempted.
    pub retry_requested: bool,
    /// When it was last given up on.
    #[serde(serialize_with = "rfc3339")]
    pub failed_at: DateTime<Utc>,
}

/// A dead letter with its event.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetterDetail {
    /// The dead letter.
    #[serde(flatten)]
    pub letter: DeadLetter,
    /// The full CloudEvent, as it was delivered.
    pub event: serde_json::Value,
}

/// Which dead letters an operation applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// These ids; an unknown id fails the whole operation.
    Ids(Vec<i64>),
    /// Every dead letter, or every one of one subscription.
    All {
        /// Only this subscription's.
        subscription: Option<String>,
    },
}

/// Connects to `address` (URL or key-value form) without TLS and drives the
/// connection on a task of its own. An sslmode that needs TLS is refused up
/// front, and a failure names the address without its password.
pub async fn connect(address: &str) -> anyhow::Result<Client> {
    let parsed = bv_factor_outbound_pg::address::parse(address)
        .map_err(|e| anyhow!("database address: {e}"))?;
    let mut config = parsed.config;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    let (client, connection) = config
        .connect(NoTls)
        .await
        .map_err(|e| anyhow!("cannot connect to {}: {}", shown(&config), describe(&e)))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!("events database connection closed: {}", describe(&e));
        }
    });
    Ok(client)
}

/// Creates the `bv_events` schema in the database at `address` (idempotent).
pub async fn init(address: &str) -> anyhow::Result<()> {
    let mut client = connect(address).await?;
    // ensure_schema keeps re-runs quiet itself (no "already exists" notices).
    schema::ensure_schema(&mut client).await.map_err(|e| {
        match e.downcast_ref::<tokio_postgres::Error>() {
            Some(pg) => anyhow!("creating the bv_events schema: {}", describe(pg)),
            None => e.context("creating the bv_events schema"),
        }
    })
}

/// Every subscription, by name.
pub async fn list_subscriptions(client: &Client) -> anyhow::Result<Vec<SubscriptionStatus>> {
    check_schema(client).await?;
    statuses(client, None).await
}

/// One subscription; an unknown name is an error listing the known ones.
pub async fn subscription_status(
    client: &Client,
    subscription: &str,
) -> anyhow::Result<SubscriptionStatus> {
    check_schema(client).await?;
    match statuses(client, Some(subscription)).await?.pop() {
        Some(status) => Ok(status),
        None => Err(unknown_subscription(client, subscription).await),
    }
}

/// Sets `subscription`'s position back (or forward) so that delivery resumes
/// at the first event, in delivery order, at or after `from`. With no such
/// event the position moves past the last event: nothing is replayed.
///
/// With `forget_processed` the consumer's processed marks
/// (`bv_events.processed` rows whose consumer is the subscription's name) go
/// too, so an idempotent consumer handles the replayed events again instead of
/// skipping them: what rebuilding a projection needs.
///
/// One transaction holding the subscription's row lock; `NOTIFY bv_events`
/// on commit wakes the trigger delivering it.
pub async fn replay(
    client: &mut Client,
    subscription: &str,
    from: ReplayFrom,
    forget_processed: bool,
) -> anyhow::Result<ReplayStart> {
    check_schema(&*client).await?;
    let tx = client.transaction().await.pg("starting the replay")?;
    let row = tx
        .query_opt(
            "SELECT types FROM bv_events.subscriptions WHERE name = $1 FOR UPDATE",
            &[&subscription],
        )
        .await
        .pg("reading the subscription")?;
    let Some(row) = row else {
        return Err(unknown_subscription(&tx, subscription).await);
    };
    let types: Vec<String> = row.get(0);

    let first = match from {
        ReplayFrom::Offset(seq) => {
            tx.query_opt(
                "SELECT tx::text, seq FROM bv_events.outbox WHERE seq >= $1 \
                 ORDER BY tx, seq LIMIT 1",
                &[&seq],
            )
            .await
        }
        ReplayFrom::Time(time) => {
            tx.query_opt(
                "SELECT tx::text, seq FROM bv_events.outbox WHERE recorded_at >= $1 \
                 ORDER BY tx, seq LIMIT 1",
                &[&time],
            )
            .await
        }
    }
    .pg("finding the first event to replay")?;
    let position = match first {
        // Just before it: `(tx, seq) > (tx, seq - 1)` includes it.
        Some(row) => Position {
            tx: parse_xid(row.get(0))?,
            seq: row.get::<_, i64>(1) - 1,
        },
        None => {
            let last = tx
                .query_opt(
                    "SELECT tx::text, seq FROM bv_events.outbox ORDER BY tx DESC, seq DESC LIMIT 1",
                    &[],
                )
                .await
                .pg("finding the last event")?;
            match last {
                Some(row) => Position {
                    tx: parse_xid(row.get(0))?,
                    seq: row.get(1),
                },
                None => Position { tx: 0, seq: 0 },
            }
        }
    };
    tx.execute(
        "UPDATE bv_events.subscriptions \
         SET position_tx = $2::text::xid8, position_seq = $3, updated_at = now() \
         WHERE name = $1",
        &[&subscription, &position.tx.to_string(), &position.seq],
    )
    .await
    .pg("moving the subscription's position")?;
    let forgotten = if forget_processed {
        tx.execute(
            "DELETE FROM bv_events.processed WHERE consumer = $1",
            &[&subscription],
        )
        .await
        .pg("deleting the consumer's processed marks")?
    } else {
        0
    };
    let events = lag(&tx, subscription, &types).await?;
    let active = is_active(&tx, subscription).await?;
    tx.batch_execute("NOTIFY bv_events")
        .await
        .pg("notifying the trigger")?;
    tx.commit().await.pg("committing the replay")?;
    Ok(ReplayStart {
        position,
        events,
        forgotten,
        active,
    })
}

/// Reports `subscription`'s progress every 250 ms until its lag is 0. The
/// first report's lag is the starting total; events arriving meanwhile grow
/// the total, never shrink `done`. Stop early by dropping the future.
pub async fn wait_progress(
    client: &Client,
    subscription: &str,
    mut on_progress: impl FnMut(Progress),
) -> anyhow::Result<()> {
    let mut state: Option<Progress> = None;
    loop {
        let status = subscription_status(client, subscription).await?;
        let progress = match state {
            None => Progress {
                done: 0,
                total: status.lag,
                lag: status.lag,
                active: status.active,
            },
            Some(before) => {
                let done = before.done.max(before.total - status.lag);
                Progress {
                    done,
                    total: done + status.lag,
                    lag: status.lag,
                    active: status.active,
                }
            }
        };
        on_progress(progress);
        if progress.lag == 0 {
            return Ok(());
        }
        state = Some(progress);
        tokio::time::sleep(POLL).await;
    }
}

/// Dead letters by id, of one subscription or all; an unknown subscription
/// (no row and no dead letters) is an error listing the known ones.
pub async fn list_dead_letters(
    client: &Client,
    subscription: Option<&str>,
) -> anyhow::Result<Vec<DeadLetter>> {
    check_schema(client).await?;
    let rows = client
        .query(
            &format!(
                "SELECT {DEAD_LETTER_COLUMNS} FROM bv_events.dead_letters \
                 WHERE $1::text IS NULL OR subscription = $1 ORDER BY id"
            ),
            &[&subscription],
        )
        .await
        .pg("listing dead letters")?;
    if let Some(name) = subscription {
        if rows.is_empty() && !subscription_exists(client, name).await? {
            return Err(unknown_subscription(client, name).await);
        }
    }
    Ok(rows.iter().map(dead_letter).collect())
}

/// One dead letter with its event; an unknown id is an error.
pub async fn show_dead_letter(client: &Client, id: i64) -> anyhow::Result<DeadLetterDetail> {
    check_schema(client).await?;
    let row = client
        .query_opt(
            &format!(
                "SELECT {DEAD_LETTER_COLUMNS}, event::text FROM bv_events.dead_letters WHERE id = $1"
            ),
            &[&id],
        )
        .await
        .pg("reading the dead letter")?
        .ok_or_else(|| {
            anyhow!("no dead letter with id {id} (`bv events dead-letters list` shows them)")
        })?;
    let event: String = row.get(DEAD_LETTER_COLUMN_COUNT);
    let event = serde_json::from_str(&event)
        .map_err(|e| anyhow!("dead letter {id}: its event is not JSON: {e}"))?;
    Ok(DeadLetterDetail {
        letter: dead_letter(&row),
        event,
    })
}

/// Asks the trigger to deliver the selected dead letters again (sets
/// `retry_requested`, then `NOTIFY bv_events`); returns how many. A success
/// deletes the dead letter, a failure records the new error and attempt.
/// Unknown ids fail the whole request, naming them.
pub async fn retry_dead_letters(client: &mut Client, selection: Selection) -> anyhow::Result<u64> {
    check_schema(&*client).await?;
    let tx = client.transaction().await.pg("starting the retry")?;
    let ids = select_dead_letters(&tx, &selection).await?;
    let n = tx
        .execute(
            "UPDATE bv_events.dead_letters SET retry_requested = true WHERE id = ANY($1)",
            &[&ids],
        )
        .await
        .pg("requesting the retry")?;
    tx.batch_execute("NOTIFY bv_events")
        .await
        .pg("notifying the trigger")?;
    tx.commit().await.pg("committing the retry")?;
    Ok(n)
}

/// Deletes the selected dead letters for good; returns how many. Unknown ids
/// fail the whole request, naming them.
pub async fn drop_dead_letters(client: &mut Client, selection: Selection) -> anyhow::Result<u64> {
    check_schema(&*client).await?;
    let tx = client.transaction().await.pg("starting the drop")?;
    let ids = select_dead_letters(&tx, &selection).await?;
    let n = tx
        .execute(
            "DELETE FROM bv_events.dead_letters WHERE id = ANY($1)",
            &[&ids],
        )
        .await
        .pg("deleting the dead letters")?;
    tx.commit().await.pg("committing the drop")?;
    Ok(n)
}

/// Locks the selected dead letters and returns their ids, or fails naming
/// the ids (or the subscription) that do not exist.
async fn select_dead_letters(
    client: &impl GenericClient,
    selection: &Selection,
) -> anyhow::Result<Vec<i64>> {
    match selection {
        Selection::Ids(wanted) => {
            let rows = client
                .query(
                    "SELECT id FROM bv_events.dead_letters WHERE id = ANY($1) FOR UPDATE",
                    &[wanted],
                )
                .await
                .pg("reading the dead letters")?;
            let found: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
            let mut missing: Vec<i64> = wanted
                .iter()
                .copied()
                .filter(|id| !found.contains(id))
                .collect();
            missing.sort_unstable();
            missing.dedup();
            if !missing.is_empty() {
                let list: Vec<String> = missing.iter().map(i64::to_string).collect();
                let noun = if missing.len() == 1 { "id" } else { "ids" };
                return Err(anyhow!(
                    "no dead letter with {noun} {}; nothing was changed (`bv events dead-letters list` shows them)",
                    list.join(", ")
                ));
            }
            Ok(found)
        }
        Selection::All { subscription } => {
            let rows = client
                .query(
                    "SELECT id FROM bv_events.dead_letters \
                     WHERE $1::text IS NULL OR subscription = $1 ORDER BY id FOR UPDATE",
                    &[subscription],
                )
                .await
                .pg("reading the dead letters")?;
            if let Some(name) = subscription {
                if rows.is_empty() && !subscription_exists(client, name).await? {
                    return Err(unknown_subscription(client, name).await);
                }
            }
            Ok(rows.iter().map(|r| r.get(0)).collect())
        }
    }
}

const DEAD_LETTER_COLUMNS: &str =
    "id, subscription, seq, event_id, type, subject, attempts, last_error, retry_requested, failed_at";
const DEAD_LETTER_COLUMN_COUNT: usize = 10;

fn dead_letter(row: &tokio_postgres::Row) -> DeadLetter {
    DeadLetter {
        id: row.get(0),
        subscription: row.get(1),
        seq: row.get(2),
        event_id: row.get(3),
        event_type: row.get(4),
        subject: row.get(5),
        attempts: row.get(6),
        last_error: row.get(7),
        retry_requested: row.get(8),
        failed_at: row.get(9),
    }
}

/// Subscriptions (all, or the one named) with their dead-letter count and
/// whether their advisory lock is held; the lag is counted per subscription,
/// with its patterns turned into `LIKE` patterns here, where the trigger's
/// rule lives ([`pattern::to_like`]).
async fn statuses(
    client: &impl GenericClient,
    only: Option<&str>,
) -> anyhow::Result<Vec<SubscriptionStatus>> {
    let rows = client
        .query(
            &format!(
                "SELECT s.name, s.component, s.types, s.position_tx::text, s.position_seq,
                        s.delivered, s.updated_at,
                        (SELECT count(*) FROM bv_events.dead_letters d WHERE d.subscription = s.name),
                        {ACTIVE}
                 FROM bv_events.subscriptions s
                 WHERE $1::text IS NULL OR s.name = $1
                 ORDER BY s.name",
                ACTIVE = active_condition()
            ),
            &[&only],
        )
        .await
        .pg("listing subscriptions")?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let name: String = row.get(0);
        let types: Vec<String> = row.get(2);
        let lag = lag(client, &name, &types).await?;
        out.push(SubscriptionStatus {
            component: row.get(1),
            position: Position {
                tx: parse_xid(row.get(3))?,
                seq: row.get(4),
            },
            delivered: row.get(5),
            updated_at: row.get(6),
            dead_letters: row.get(7),
            active: row.get(8),
            lag,
            types,
            name,
        });
    }
    Ok(out)
}

/// Matching events after the subscription's position. Unlike the trigger's
/// read, it also counts events of transactions older ones still hide: they
/// are owed all the same.
async fn lag(client: &impl GenericClient, name: &str, types: &[String]) -> anyhow::Result<i64> {
    let likes: Vec<String> = types.iter().map(|t| pattern::to_like(t)).collect();
    let row = client
        .query_one(
            "SELECT count(*) FROM bv_events.outbox o, bv_events.subscriptions s
             WHERE s.name = $1 AND (o.tx, o.seq) > (s.position_tx, s.position_seq)
               AND o.type LIKE ANY($2)",
            &[&name, &likes],
        )
        .await
        .pg("counting the lag")?;
    Ok(row.get(0))
}

/// SQL: whether some session holds subscription `s`'s delivery lock,
/// `pg_try_advisory_lock(LOCK_CLASS, hashtext(name))`. A two-key advisory
/// lock shows in `pg_locks` as classid = key 1, objid = key 2 (as oid),
/// objsubid = 2, in the current database.
fn active_condition() -> String {
    format!(
        "EXISTS (SELECT 1 FROM pg_locks l
                 WHERE l.locktype = 'advisory' AND l.granted
                   AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
                   AND l.classid = {LOCK_CLASS}::int4::oid
                   AND l.objid = hashtext(s.name)::oid
                   AND l.objsubid = 2)"
    )
}

async fn is_active(client: &impl GenericClient, name: &str) -> anyhow::Result<bool> {
    let row = client
        .query_one(
            &format!(
                "SELECT {} FROM (SELECT $1::text AS name) s",
                active_condition()
            ),
            &[&name],
        )
        .await
        .pg("checking whether the subscription is delivered")?;
    Ok(row.get(0))
}

async fn subscription_exists(client: &impl GenericClient, name: &str) -> anyhow::Result<bool> {
    let row = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM bv_events.subscriptions WHERE name = $1)",
            &[&name],
        )
        .await
        .pg("reading the subscription")?;
    Ok(row.get(0))
}

/// The error for a subscription that does not exist, listing those that do.
async fn unknown_subscription(client: &impl GenericClient, name: &str) -> anyhow::Error {
    let known: Vec<String> = match client
        .query(
            "SELECT name FROM bv_events.subscriptions ORDER BY name",
            &[],
        )
        .await
    {
        Ok(rows) => rows.iter().map(|r| r.get(0)).collect(),
        Err(e) => return anyhow!("no subscription named `{name}` ({})", describe(&e)),
    };
    if known.is_empty() {
        anyhow!(
            "no subscription named `{name}`: this database has no subscriptions yet \
             (bv creates one when it starts a [[trigger.postgres]] entry)"
        )
    } else {
        anyhow!(
            "no subscription named `{name}`; known subscriptions: {}",
            known.join(", ")
        )
    }
}

/// Fails clearly when the database has no `bv_events` schema, instead of
/// with "relation does not exist".
async fn check_schema(client: &impl GenericClient) -> anyhow::Result<()> {
    let row = client
        .query_one(
            "SELECT to_regclass('bv_events.subscriptions') IS NOT NULL \
                AND to_regclass('bv_events.dead_letters') IS NOT NULL",
            &[],
        )
        .await
        .pg("checking the bv_events schema")?;
    if !row.get::<_, bool>(0) {
        return Err(anyhow!(
            "this database has no bv_events schema: run `bv events init` \
             (or start bv with a postgres trigger) first"
        ));
    }
    Ok(())
}

fn parse_xid(text: &str) -> anyhow::Result<u64> {
    text.parse()
        .map_err(|_| anyhow!("unexpected transaction id `{text}` in bv_events"))
}

/// `postgres://user@host:port/db`: enough to know which database, never the
/// password.
fn shown(config: &tokio_postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        #[cfg(unix)]
        Some(Host::Unix(p)) => p.display().to_string(),
        None => "localhost".to_string(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let user = config.get_user().unwrap_or("");
    let db = config.get_dbname().unwrap_or(user);
    let user = if user.is_empty() {
        String::new()
    } else {
        format!("{user}@")
    };
    format!("postgres://{user}{host}:{port}/{db}")
}

/// One line: the server's message (and detail) for database errors, the
/// error and its causes otherwise. `DbError`'s own `Display` spans lines.
fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return match db.detail() {
            Some(detail) => format!("{} ({})", db.message(), detail.replace('\n', " ")),
            None => db.message().to_string(),
        };
    }
    let mut out = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}

trait PgResult<T> {
    /// Turns a driver error into one line saying what was being done.
    fn pg(self, doing: &str) -> anyhow::Result<T>;
}

impl<T> PgResult<T> for Result<T, tokio_postgres::Error> {
    fn pg(self, doing: &str) -> anyhow::Result<T> {
        self.map_err(|e| anyhow!("{doing}: {}", describe(&e)))
    }
}

fn rfc3339<S: serde::Serializer>(time: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&time.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shown_address_has_no_password() {
        let c: tokio_postgres::Config = "postgres://app:secret@db.internal:6000/shop"
            .parse()
            .unwrap();
        assert_eq!(shown(&c), "postgres://app@db.internal:6000/shop");
        let c: tokio_postgres::Config = "host=h user=u password=p".parse().unwrap();
        assert_eq!(shown(&c), "postgres://u@h:5432/u");
    }

    #[tokio::test]
    async fn tls_addresses_are_refused_before_connecting() {
        let err = connect("postgres://u@127.0.0.1:1/db?sslmode=require")
            .await
            .unwrap_err();
        assert!(err.to_string().contains("sslmode=require"), "{err}");
    }
}
