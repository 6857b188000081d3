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
            let message = tokio::select! {
                _ = stop.cancelled() => {
                    commit(&consumer, &taken);
                    return Ok(());
                }
                message = consumer.recv() => message?,
            };
            let Some(route) = self.routes.iter().find(|r| r.topic == message.topic()) else {
                continue;
            };
            let dead_letters = route.dead_letters();
            let record = record_of(&message);
            let at = Coordinates {
                topic: message.topic(),
                partition: message.partition(),
                offset: message.offset(),
            };
            let outcome = match binding::from_record(&record, route.wrap.as_ref(), &at) {
                Ok(event) => {
                    // The database may be down: keep this record until it
                    // is written (nothing behind it is taken meanwhile).
                    loop {
                        match db.write(&event).await {
                            Ok(true) => break "written",
                            Ok(false) => break "duplicate",
                            Err(e) => {
                                self.metrics.error("in");
                                tracing::warn!(
                                    "kafka bridge: in: writing event {} from {}/{}@{}: {e:#}; trying again in {:?}",
                                    event.id(), at.topic, at.partition, at.offset, retry.delay()
                                );
                                retry.wait(stop).await;
                                if stop.is_cancelled() {
                                    commit(&consumer, &taken);
                                    return Ok(());
                                }
                            }
                        }
                    }
                }
                Err(reason) => {
                    tracing::warn!(
                        "kafka bridge: in: record {}/{}@{} refused, to {dead_letters}: {reason}",
                        at.topic,
                        at.partition,
                        at.offset
                    );
                    let mut letter = record.clone();
                    letter.headers.extend([
                        (binding::ERROR_HEADER.to_string(), reason.into_bytes()),
                        ("bv_topic".to_string(), at.topic.as_bytes().to_vec()),
                        (
                            "bv_partition".to_string(),
                            at.partition.to_string().into_bytes(),
                        ),
                        ("bv_offset".to_string(), at.offset.to_string().into_bytes()),
                    ]);
                    let delivery = kafka::send(&producer, &dead_letters, &letter).await?;
                    kafka::acknowledged(delivery).await?;
                    "dead_letter"
                }
            };
            consumer
                .store_offset_from_message(&message)
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
            self.metrics
                .consumed
                .get_or_create(&InLabels {
                    topic: route.topic.clone(),
                    outcome,
                })
                .inc();
            retry.reset();
        }
    }
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
    client: Option<tokio_postgres::Client>,
}

impl Database {
    fn new(config: tokio_postgres::Config) -> Self {
        Self {
            config,
            client: None,
        }
    }

    /// Writes `event` into the outbox; `false` when it was already there.
    async fn write(&mut self, event: &bv_events::CloudEvent) -> anyhow::Result<bool> {
        if self.client.as_ref().is_none_or(|c| c.is_closed()) {
            let (mut client, connection) = self
                .config
                .connect(NoTls)
                .await
                .context("connecting to the outbox's database")?;
            tokio::spawn(connection);
            bv_outbox::ensure_schema(&mut client)
                .await
                .context("creating schema bv_events")?;
            self.client = Some(client);
        }
        let client = self.client.as_ref().expect("connected above");
        let written = client
            .execute(
                INSERT,
                &[
                    &event.id(),
                    &event.source(),
                    &event.ty(),
                    &event.subject(),
                    &event.time(),
                    &event.to_json(),
                ],
            )
            .await;
        match written {
            Ok(n) => Ok(n == 1),
            Err(e) => {
                self.client = None;
                Err(e.into())
            }
        }
    }
}
