//! Change data capture: chosen tables' row changes, from PostgreSQL's
//! logical replication (`pgoutput`), to Kafka in Debezium's envelope.
//!
//! The bridge keeps a publication naming the tables and a logical
//! replication slot, and reads the slot through SQL
//! (`pg_logical_slot_peek_binary_changes`): whole transactions, oldest
//! first, without moving it. It produces every change (key = the row's key,
//! so one row's changes stay in one partition, in commit order), waits
//! until the broker acknowledged all of them, and only then advances the
//! slot past those transactions (`pg_replication_slot_advance`). A failure
//! anywhere — broker, database, a `kill -9` — leaves the slot where it
//! was, and the changes are produced again: at least once, duplicates
//! bounded by one batch. The slot keeps the WAL PostgreSQL would otherwise
//! recycle, so nothing is lost while the bridge is away (and the WAL grows:
//! watch `bv_kafka_bridge_cdc_lag_bytes`).
//!
//! No initial snapshot: a new slot captures changes from its creation on.

pub mod debezium;
pub mod pgoutput;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio_postgres::{Client, NoTls};
use tokio_util::sync::CancellationToken;

use crate::config::{BridgeConfig, CdcConfig};
use crate::kafka::{self, Topics};
use crate::metrics::{Metrics, TopicLabels};
use crate::retry::Retry;
use crate::AbortOnDrop;
use debezium::{Change, Op, Origin};
use pgoutput::{Message, Relation};

/// Changes read per round (whole transactions: a larger one is read whole).
const BATCH: i32 = 1024;

/// The change data capture half.
pub struct Cdc {
    /// What to bridge ([`BridgeConfig::cdc`] is set).
    pub config: Arc<BridgeConfig>,
    /// The database whose tables are captured.
    pub db: tokio_postgres::Config,
    /// Figures.
    pub metrics: Arc<Metrics>,
}

impl Cdc {
    /// Captures until `stop`, starting over after every failure.
    pub async fn run(self, stop: CancellationToken) {
        let mut retry = Retry::default();
        while !stop.is_cancelled() {
            match self.session(&stop, &mut retry).await {
                Ok(()) => return,
                Err(e) => {
                    self.metrics.error("cdc");
                    tracing::warn!(
                        "kafka bridge: cdc: {e:#}; trying again in {:?}",
                        retry.delay()
                    );
                    retry.wait(&stop).await;
                }
            }
        }
    }

    fn cdc(&self) -> &CdcConfig {
        self.config
            .cdc
            .as_ref()
            .expect("the cdc half runs with [cdc]")
    }

    async fn session(&self, stop: &CancellationToken, retry: &mut Retry) -> anyhow::Result<()> {
        let cdc = self.cdc();
        let producer = kafka::producer(&self.config)?;
        let mut topics = Topics::new(&self.config)?;
        let (client, connection) = self
            .db
            .connect(NoTls)
            .await
            .context("connecting to the captured database")?;
        let closed = CancellationToken::new();
        let driver = {
            let closed = closed.clone();
            tokio::spawn(async move {
                let _ = connection.await;
                closed.cancel();
            })
        };
        let _driver = AbortOnDrop(driver);

        let wal_level: String = client.query_one("SHOW wal_level", &[]).await?.get(0);
        if wal_level != "logical" {
            anyhow::bail!(
                "the database's wal_level is `{wal_level}`: change data capture needs \
                 `wal_level = logical` (postgresql.conf; PostgreSQL must be restarted)"
            );
        }
        let db_name: String = client
            .query_one("SELECT current_database()", &[])
            .await?
            .get(0);

        let mut standing_by = false;
        while !client
            .query_one(
                "SELECT pg_try_advisory_lock(hashtext('bv-kafka-bridge-cdc:' || $1))",
                &[&cdc.slot],
            )
            .await?
            .get::<_, bool>(0)
        {
            if !standing_by {
                tracing::info!(
                    "kafka bridge: another bridge reads slot `{}`; standing by",
                    cdc.slot
                );
                standing_by = true;
            }
            tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                _ = closed.cancelled() => anyhow::bail!("lost the database connection"),
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
        ensure_publication(&client, cdc).await?;
        ensure_slot(&client, cdc).await?;
        tracing::info!(
            "kafka bridge: capturing changes of {} to Kafka at {} (slot `{}`)",
            cdc.tables.join(", "),
            self.config.brokers,
            cdc.slot
        );

        // Each table as pgoutput described it, and with its record key.
        let mut described: HashMap<u32, Relation> = HashMap::new();
        let mut relations: HashMap<u32, Relation> = HashMap::new();
        let poll = Duration::from_millis(cdc.poll_interval_ms);
        loop {
            if stop.is_cancelled() {
                return Ok(());
            }
            // Every transaction that committed before `upto` is decoded; if
            // none had a change for us, the slot may move to `upto`.
            let upto: String = client
                .query_one("SELECT pg_current_wal_lsn()::text", &[])
                .await?
                .get(0);
            let rows = client
                .query(
                    "SELECT (lsn - '0/0'::pg_lsn)::bigint, data FROM pg_logical_slot_peek_binary_changes(
                         $1, $2::text::pg_lsn, $3,
                         'proto_version', '1', 'publication_names', $4)",
                    &[&cdc.slot, &upto, &BATCH, &cdc.publication],
                )
                .await
                .context("reading the replication slot")?;

            let mut pending = Vec::new();
            let mut resume_at = None;
            let mut tx: Option<(u32, i64)> = None;
            let now_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64);
            for row in &rows {
                let lsn = row.get::<_, i64>(0) as u64;
                let message = pgoutput::decode(row.get::<_, &[u8]>(1))?;
                let (op, relation, before, after) = match &message {
                    Message::Begin {
                        commit_time, xid, ..
                    } => {
                        tx = Some((*xid, *commit_time));
                        continue;
                    }
                    Message::Commit { end_lsn, .. } => {
                        resume_at = Some(*end_lsn);
                        continue;
                    }
                    Message::Relation(r) => {
                        // Sent again in every round; looked up once per shape.
                        if described.get(&r.id) != Some(r) {
                            relations.insert(r.id, keyed(&client, r).await?);
                            described.insert(r.id, r.clone());
                        }
                        continue;
                    }
                    Message::Insert { relation, new } => (Op::Create, relation, None, Some(new)),
                    Message::Update { relation, old, new } => {
                        (Op::Update, relation, old.as_ref(), Some(new))
                    }
                    Message::Delete { relation, old } => (Op::Delete, relation, Some(old), None),
                    Message::Truncate { relations: ids } => {
                        tracing::info!(
                            "kafka bridge: cdc: {} table(s) truncated; truncation is not produced (as Debezium's default)",
                            ids.len()
                        );
                        continue;
                    }
                    Message::Other(_) => continue,
                };
                let relation = relations.get(relation).with_context(|| {
                    format!("a change of relation {relation} came before its description")
                })?;
                let (xid, commit_time) = tx.context("a change came outside a transaction")?;
                let change = Change {
                    op,
                    relation,
                    before: before.map(Vec::as_slice),
                    after: after.map(Vec::as_slice),
                };
                let origin = Origin {
                    name: &cdc.topic_prefix,
                    db: &db_name,
                    xid,
                    commit_time,
                    lsn,
                };
                let topic = debezium::topic(&cdc.topic_prefix, relation);
                topics.ensure(&topic).await?;
                for record in debezium::records(&change, &origin, now_ms) {
                    pending.push((
                        topic.clone(),
                        kafka::send(&producer, &topic, &record).await?,
                    ));
                }
            }
            let changes = pending.len();
            let acknowledged = async {
                for (topic, delivery) in pending {
                    kafka::acknowledged(delivery).await?;
                    self.metrics
                        .produced
                        .get_or_create(&TopicLabels { topic })
                        .inc();
                }
                anyhow::Ok(())
            };
            tokio::select! {
                // Stopped while the broker is slow: the slot stays, and the
                // changes are produced again by the next start.
                _ = stop.cancelled() => return Ok(()),
                result = acknowledged => result?,
            }
            let to = match resume_at {
                Some(lsn) => format_lsn(lsn),
                None => upto,
            };
            advance(&client, &cdc.slot, &to).await?;
            retry.reset();
            if rows.is_empty() {
                self.update_lag(&client, &cdc.slot).await?;
                tokio::select! {
                    _ = stop.cancelled() => return Ok(()),
                    _ = closed.cancelled() => anyhow::bail!("lost the database connection"),
                    _ = tokio::time::sleep(poll) => {}
                }
            } else {
                tracing::debug!("kafka bridge: cdc: produced {changes} record(s), slot at {to}");
            }
        }
    }

    async fn update_lag(&self, client: &Client, slot: &str) -> anyhow::Result<()> {
        let lag: Option<i64> = client
            .query_one(
                "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint
                 FROM pg_replication_slots WHERE slot_name = $1",
                &[&slot],
            )
            .await?
            .get(0);
        self.metrics.cdc_lag.set(lag.unwrap_or(0));
        Ok(())
    }
}

/// `relation` with its primary key's columns as the key, as Debezium keys
/// records; without a primary key, the replica identity's index columns,
/// or no key at all when the identity is the full row or nothing.
async fn keyed(client: &Client, relation: &Relation) -> anyhow::Result<Relation> {
    let primary_key: Vec<String> = client
        .query(
            "SELECT a.attname::text FROM pg_index i
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
             WHERE i.indrelid = $1 AND i.indisprimary",
            &[&relation.id],
        )
        .await
        .with_context(|| {
            format!(
                "looking up the primary key of {}.{}",
                relation.schema, relation.name
            )
        })?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut keyed = relation.clone();
    for column in &mut keyed.columns {
        column.key = if !primary_key.is_empty() {
            primary_key.contains(&column.name)
        } else {
            column.key && relation.replica_identity == b'i'
        };
    }
    Ok(keyed)
}

/// `hi/lo` in hexadecimal, as PostgreSQL writes an LSN.
fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)
}

fn quoted_table(table: &str) -> String {
    // Checked by the configuration: `schema.table` of plain identifiers.
    table
        .split('.')
        .map(|part| format!("\"{part}\""))
        .collect::<Vec<_>>()
        .join(".")
}

/// Creates the publication, or sets its tables to exactly the configured
/// ones.
async fn ensure_publication(client: &Client, cdc: &CdcConfig) -> anyhow::Result<()> {
    let tables: Vec<String> = cdc.tables.iter().map(|t| quoted_table(t)).collect();
    let exists = client
        .query_opt(
            "SELECT 1 FROM pg_publication WHERE pubname = $1",
            &[&cdc.publication],
        )
        .await?
        .is_some();
    let statement = if exists {
        format!(
            "ALTER PUBLICATION {} SET TABLE {}",
            cdc.publication,
            tables.join(", ")
        )
    } else {
        format!(
            "CREATE PUBLICATION {} FOR TABLE {}",
            cdc.publication,
            tables.join(", ")
        )
    };
    client.batch_execute(&statement).await.with_context(|| {
        format!(
            "publishing {} (publication `{}`)",
            cdc.tables.join(", "),
            cdc.publication
        )
    })
}

async fn ensure_slot(client: &Client, cdc: &CdcConfig) -> anyhow::Result<()> {
    let plugin: Option<String> = client
        .query_opt(
            "SELECT plugin FROM pg_replication_slots WHERE slot_name = $1",
            &[&cdc.slot],
        )
        .await?
        .map(|r| r.get(0));
    match plugin.as_deref() {
        Some("pgoutput") => Ok(()),
        Some(other) => anyhow::bail!(
            "replication slot `{}` exists with plugin `{other}`; change data capture needs one with `pgoutput` (choose another `slot`)",
            cdc.slot
        ),
        None => {
            client
                .execute(
                    "SELECT pg_create_logical_replication_slot($1, 'pgoutput')",
                    &[&cdc.slot],
                )
                .await
                .with_context(|| format!("creating replication slot `{}`", cdc.slot))?;
            tracing::info!(
                "kafka bridge: cdc: created replication slot `{}`; changes from now on are captured",
                cdc.slot
            );
            Ok(())
        }
    }
}

/// Moves the slot to `lsn` (never back).
async fn advance(client: &Client, slot: &str, lsn: &str) -> anyhow::Result<()> {
    client
        .execute(
            "SELECT pg_replication_slot_advance($1, GREATEST($2::text::pg_lsn, confirmed_flush_lsn))
             FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot, &lsn],
        )
        .await
        .context("advancing the replication slot")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsns_are_written_as_postgresql_writes_them() {
        assert_eq!(format_lsn(0x0000_0001_0000_00A8), "1/A8");
        assert_eq!(format_lsn(0x16B_3740), "0/16B3740");
    }
}
