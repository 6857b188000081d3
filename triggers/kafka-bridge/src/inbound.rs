//! In: a Kafka topic into the outbox.
//!
//! Each record is read as a CloudEvent (binary or structured mode, or
//! wrapped as configured), checked against its type's registered schema,
//! and written into the outbox deduplicated by `(source, id)`; from there
//! ordinary `[[trigger.postgres]]` subscriptions deliver it with their
//! retries, dead letters and replay. A record's offset is stored for the
//! group's commit only after its write committed, so a crash re-reads it and
//! the write finds the duplicate. A record that cannot be taken goes to the
//! dead-letter topic with the reason in its `bv_error` header and never
//! holds up its partition. While the database is down the bridge keeps
//! trying the same record: nothing after it is taken out of order or lost.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use rdkafka::consumer::{CommitMode, Consumer as _, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Headers as _, Message as _};
use rdkafka::{Offset, TopicPartitionList};
use tokio_postgres::NoTls;
use tokio_util::sync::CancellationToken;

use crate::binding::{self, Coordinates, Record};
use crate::config::{BridgeConfig, InRoute};
use crate::kafka::{self, Topics};
use crate::metrics::{InLabels, Metrics};
use crate::retry::Retry;

/// Records taken into one transaction at most.
const BATCH: usize = 256;

const INSERT: &str = "INSERT INTO bv_events.outbox (id, source, type, subject, time, event) \
     VALUES ($1, $2, $3, $4, $5::text::timestamptz, $6::text::jsonb) \
     ON CONFLICT (source, id) DO NOTHING";

/// The inbound half for the topics of one consumer group (one consumer,
/// so the group never rebalances between the bridge's own members).
pub struct Inbound {
    /// The topics and their settings, all of one group.
    pub routes: Vec<InRoute>,
    /// The whole configuration (brokers, client properties).
    pub config: Arc<BridgeConfig>,
    /// The database holding the outbox.
    pub db: tokio_postgres::Config,
    /// Figures.
    pub metrics: Arc<Metrics>,
}

impl Inbound {
    /// Consumes until `stop`, then commits what was stored.
    pub async fn run(self, stop: CancellationToken) {
        let mut retry = Retry::default();
        while !stop.is_cancelled() {
            match self.session(&stop, &mut retry).await {
                Ok(()) => return,
                Err(e) => {
                    self.metrics.error("in");
                    tracing::warn!(
                        group = %self.routes[0].group,
                        "kafka bridge: in: {e:#}; trying again in {:?}",
                        retry.delay()
                    );
                    retry.wait(&stop).await;
                }
            }
        }
    }

    async fn session(&self, stop: &CancellationToken, retry: &mut Retry) -> anyhow::Result<()> {
        let group = &self.routes[0].group;
        let mut topics = Topics::new(&self.config)?;
        for route in &self.routes {
            topics.ensure(&route.topic).await?;
            topics.ensure(&route.dead_letters()).await?;
        }
        let producer = kafka::producer(&self.config)?;
        let consumer = kafka::consumer(&self.config, group)?;
        let names: Vec<&str> = self.routes.iter().map(|r| r.topic.as_str()).collect();
        consumer.subscribe(&names)?;
        let mut db = Database::new(self.db.clone());
        let mut taken = TopicPartitionList::new();
        tracing::info!(
            "kafka bridge: taking {} into the outbox (group {group})",
            names.join(", ")
        );
        loop {
            let first = tokio::select! {
                _ = stop.cancelled() => {
                    commit(&consumer, &taken);
                    return Ok(());
                }
                message = consumer.recv() => message?,
            };
            // Whatever else has already arrived joins it: one transaction
            // for the batch instead of one per record.
            let mut batch = vec![first];
            while batch.len() < BATCH {
                match tokio::time::timeout(Duration::ZERO, consumer.recv()).await {
                    Ok(message) => batch.push(message?),
                    Err(_) => break,
                }
            }
            let mut events = Vec::with_capacity(batch.len());
            let mut letters = Vec::new();
            for message in &batch {
                let Some(route) = self.routes.iter().find(|r| r.topic == message.topic()) else {
                    continue;
                };
                let record = record_of(message);
                let at = Coordinates {
                    topic: message.topic(),
                    partition: message.partition(),
                    offset: message.offset(),
                };
                match binding::from_record(&record, route.wrap.as_ref(), &at) {
                    Ok(event) => events.push((route, event)),
                    Err(reason) => {
                        tracing::warn!(
                            "kafka bridge: in: record {}/{}@{} refused, to {}: {reason}",
                            at.topic,
                            at.partition,
                            at.offset,
                            route.dead_letters()
                        );
                        letters.push((route, dead_letter(record, &at, reason)));
                    }
                }
            }
            // The database may be down: keep these records until they are
            // written (nothing behind them is taken meanwhile).
            let written = loop {
                let only: Vec<&bv_events::CloudEvent> = events.iter().map(|(_, e)| e).collect();
                match db.write(&only).await {
                    Ok(written) => break written,
                    Err(e) => {
                        self.metrics.error("in");
                        tracing::warn!(
                            "kafka bridge: in: writing {} events: {e:#}; trying again in {:?}",
                            only.len(),
                            retry.delay()
                        );
                        retry.wait(stop).await;
                        if stop.is_cancelled() {
                            commit(&consumer, &taken);
                            return Ok(());
                        }
                    }
                }
            };
            let mut pending = Vec::with_capacity(letters.len());
            for (route, letter) in &letters {
                pending.push(kafka::send(&producer, &route.dead_letters(), letter).await?);
            }
            for delivery in pending {
                kafka::acknowledged(delivery).await?;
            }
            for message in &batch {
                consumer
                    .store_offset_from_message(message)
                    .context("storing the offset")?;
                let next = Offset::Offset(message.offset() + 1);
                if taken
                    .find_partition(message.topic(), message.partition())
                    .is_some()
                {
                    taken.set_partition_offset(message.topic(), message.partition(), next)?;
                } else {
                    taken.add_partition_offset(message.topic(), message.partition(), next)?;
                }
            }
            let count = |route: &InRoute, outcome: &'static str| {
                self.metrics
                    .consumed
                    .get_or_create(&InLabels {
                        topic: route.topic.clone(),
                        outcome,
                    })
                    .inc();
            };
            for ((route, _), new) in events.iter().zip(written) {
                count(route, if new { "written" } else { "duplicate" });
            }
            for (route, _) in &letters {
                count(route, "dead_letter");
            }
            retry.reset();
        }
    }
}

/// A refused record as its dead letter: key, value and headers kept, with
/// why and where it was read.
fn dead_letter(mut record: Record, at: &Coordinates<'_>, reason: String) -> Record {
    record.headers.extend([
        (binding::ERROR_HEADER.to_string(), reason.into_bytes()),
        ("bv_topic".to_string(), at.topic.as_bytes().to_vec()),
        (
            "bv_partition".to_string(),
            at.partition.to_string().into_bytes(),
        ),
        ("bv_offset".to_string(), at.offset.to_string().into_bytes()),
    ]);
    record
}

/// Commits, on the way out, the offsets after every record taken (the
/// periodic commit may not have run since the last ones).
fn commit(consumer: &StreamConsumer, taken: &TopicPartitionList) {
    if taken.count() == 0 {
        return;
    }
    match consumer.commit(taken, CommitMode::Sync) {
        Ok(()) => tracing::info!("kafka bridge: in: committed {:?}", taken.to_topic_map()),
        Err(e) => tracing::warn!("kafka bridge: in: committing offsets on the way out: {e}"),
    }
}

fn record_of(message: &BorrowedMessage<'_>) -> Record {
    Record {
        key: message.key().map(<[u8]>::to_vec),
        value: message.payload().map(<[u8]>::to_vec),
        headers: message
            .headers()
            .map(|headers| {
                headers
                    .iter()
                    .map(|h| {
                        (
                            h.key.to_string(),
                            h.value.map(<[u8]>::to_vec).unwrap_or_default(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// The outbox's database, reconnected when a write finds it gone.
struct Database {
    config: tokio_postgres::Config,
    client: Option<(tokio_postgres::Client, tokio_postgres::Statement)>,
}

impl Database {
    fn new(config: tokio_postgres::Config) -> Self {
        Self {
            config,
            client: None,
        }
    }

    /// Writes `events` into the outbox in one transaction; for each,
    /// whether it was new (`false`: already there).
    async fn write(&mut self, events: &[&bv_events::CloudEvent]) -> anyhow::Result<Vec<bool>> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        if self.client.as_ref().is_none_or(|(c, _)| c.is_closed()) {
            let (mut client, connection) = self
                .config
                .connect(NoTls)
                .await
                .context("connecting to the outbox's database")?;
            tokio::spawn(connection);
            bv_outbox::ensure_schema(&mut client)
                .await
                .context("creating schema bv_events")?;
            let insert = client.prepare(INSERT).await?;
            self.client = Some((client, insert));
        }
        let (client, insert) = self.client.as_mut().expect("connected above");
        let written = async {
            let tx = client.transaction().await?;
            // Pipelined: every insert is sent before the first answer.
            let (transaction, insert) = (&tx, &*insert);
            let counts = futures::future::try_join_all(events.iter().map(|e| async move {
                let json = e.to_json();
                transaction
                    .execute(
                        insert,
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
            anyhow::Ok(counts.into_iter().map(|n| n == 1).collect())
        }
        .await;
        if written.is_err() {
            self.client = None;
        }
        written
    }
}
