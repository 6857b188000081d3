//! The Kafka clients the bridge makes, and topic creation.

use std::collections::HashSet;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::StreamConsumer;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::binding::Record;
use crate::config::BridgeConfig;

/// How long the producer keeps retrying one record before it reports the
/// record failed (the batch is then produced again, ids unchanged).
const MESSAGE_TIMEOUT_MS: &str = "30000";

fn base(config: &BridgeConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &config.brokers);
    c.set("client.id", "bv-kafka-bridge");
    c
}

fn with_overrides(mut c: ClientConfig, config: &BridgeConfig) -> ClientConfig {
    for (key, value) in &config.kafka {
        c.set(key, value);
    }
    c
}

/// An idempotent producer: acknowledged by every in-sync replica, in order
/// per partition across its own retries, no duplicates from them.
pub fn producer(config: &BridgeConfig) -> anyhow::Result<FutureProducer> {
    let mut c = base(config);
    c.set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("message.timeout.ms", MESSAGE_TIMEOUT_MS);
    Ok(with_overrides(c, config).create()?)
}

/// A consumer in `group` whose offsets are committed only for records the
/// bridge stored (`enable.auto.offset.store = false`): a record is stored
/// after its write committed, and the periodic commit takes only those.
pub fn consumer(config: &BridgeConfig, group: &str) -> anyhow::Result<StreamConsumer> {
    let mut c = base(config);
    c.set("group.id", group)
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "1000")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "1000")
        .set("max.poll.interval.ms", "60000");
    Ok(with_overrides(c, config).create()?)
}

/// Creates topics the bridge writes to, once each.
pub struct Topics {
    admin: AdminClient<DefaultClientContext>,
    partitions: i32,
    known: HashSet<String>,
}

impl Topics {
    /// An admin client on the configured brokers.
    pub fn new(config: &BridgeConfig) -> anyhow::Result<Self> {
        Ok(Self {
            admin: with_overrides(base(config), config).create()?,
            partitions: config.partitions,
            known: HashSet::new(),
        })
    }

    /// Makes sure `topic` exists (an existing one is kept as it is).
    pub async fn ensure(&mut self, topic: &str) -> anyhow::Result<()> {
        if self.known.contains(topic) {
            return Ok(());
        }
        let new = NewTopic::new(topic, self.partitions, TopicReplication::Fixed(1));
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        for result in self.admin.create_topics([&new], &options).await? {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => anyhow::bail!("creating topic {name}: {code}"),
            }
        }
        self.known.insert(topic.to_string());
        Ok(())
    }
}

/// Hands `record` to the producer's queue (waiting while the queue is
/// full) and returns the acknowledgement to wait for.
pub async fn send(
    producer: &FutureProducer,
    topic: &str,
    record: &Record,
) -> anyhow::Result<rdkafka::producer::DeliveryFuture> {
    let mut headers = OwnedHeaders::new_with_capacity(record.headers.len());
    for (key, value) in &record.headers {
        headers = headers.insert(Header {
            key,
            value: Some(value),
        });
    }
    let mut future_record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic).headers(headers);
    if let Some(key) = &record.key {
        future_record = future_record.key(key);
    }
    if let Some(value) = &record.value {
        future_record = future_record.payload(value);
    }
    loop {
        match producer.send_result(future_record) {
            Ok(delivery) => return Ok(delivery),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                future_record = back;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err((e, _)) => return Err(e.into()),
        }
    }
}

/// Waits for an acknowledgement from [`send`].
pub async fn acknowledged(delivery: rdkafka::producer::DeliveryFuture) -> anyhow::Result<()> {
    match delivery.await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err((e, _))) => Err(anyhow::anyhow!("the broker did not take the record: {e}")),
        Err(_) => Err(anyhow::anyhow!(
            "the producer was closed before the broker answered"
        )),
    }
}
