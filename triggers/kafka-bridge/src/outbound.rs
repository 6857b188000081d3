//! Out: the outbox's events to Kafka.
//!
//! The bridge is an ordinary outbox subscription (`kafka-bridge` in
//! `bv events list`). It reads a batch after its position, produces every
//! event (key = subject, so one subject's events stay in one partition, in
//! order), waits until the broker acknowledged all of them, and only then
//! moves its position. A failure anywhere — broker, database, a `kill -9` —
//! leaves the position where it was, and the batch is produced again with
//! the same event ids: at least once, duplicates bounded by one batch.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::sync::Notify;
use tokio_postgres::{AsyncMessage, Client, NoTls};
use tokio_util::sync::CancellationToken;

use crate::config::BridgeConfig;
use crate::kafka::{self, Topics};
use crate::metrics::{Metrics, TopicLabels};
use crate::retry::Retry;
use crate::AbortOnDrop;

/// Events read and produced per round.
const BATCH: i64 = 1024;
/// How often to look without a notification.
const POLL: Duration = Duration::from_secs(1);

/// The outbound half.
pub struct Outbound {
    /// What to bridge.
    pub config: Arc<BridgeConfig>,
    /// The database holding the outbox.
    pub db: tokio_postgres::Config,
    /// Figures.
    pub metrics: Arc<Metrics>,
}

impl Outbound {
    /// Bridges until `stop`, starting over after every failure.
    pub async fn run(self, stop: CancellationToken) {
        let mut retry = Retry::default();
        while !stop.is_cancelled() {
            match self.session(&stop, &mut retry).await {
                Ok(()) => return,
                Err(e) => {
                    self.metrics.error("out");
                    tracing::warn!(
                        "kafka bridge: out: {e:#}; trying again in {:?}",
                        retry.delay()
                    );
                    retry.wait(&stop).await;
                }
            }
        }
    }

    async fn session(&self, stop: &CancellationToken, retry: &mut Retry) -> anyhow::Result<()> {
        let name = &self.config.subscription;
        let patterns = self.config.out_patterns();
        let likes: Vec<String> = patterns
            .iter()
            .map(|p| bv_outbox::pattern::to_like(p))
            .collect();
        let producer = kafka::producer(&self.config)?;
        let mut topics = Topics::new(&self.config)?;

        let (mut client, mut connection) = self
            .db
            .connect(NoTls)
            .await
            .context("connecting to the outbox's database")?;
        let wake = Arc::new(Notify::new());
        let closed = CancellationToken::new();
        let driver = {
            let (wake, closed, patterns) = (wake.clone(), closed.clone(), patterns.clone());
            tokio::spawn(async move {
                let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
                while let Some(Ok(message)) = futures::StreamExt::next(&mut messages).await {
                    if let AsyncMessage::Notification(n) = message {
                        if n.payload().is_empty()
                            || patterns
                                .iter()
                                .any(|p| bv_outbox::pattern::matches(p, n.payload()))
                        {
                            wake.notify_one();
                        }
                    }
                }
                closed.cancel();
            })
        };
        let _driver = AbortOnDrop(driver);
        bv_outbox::ensure_schema(&mut client)
            .await
            .context("creating schema bv_events")?;
        bv_outbox::prepare_reader(&client).await?;
        client.batch_execute("LISTEN bv_events").await?;

        let mut standing_by = false;
        while !bv_outbox::try_lock(&client, name).await? {
            if !standing_by {
                tracing::info!(
                    "kafka bridge: another bridge produces subscription `{name}`; standing by"
                );
                standing_by = true;
            }
            tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                _ = closed.cancelled() => anyhow::bail!("lost the database connection"),
                _ = tokio::time::sleep(POLL) => {}
            }
        }
        bv_outbox::register(
            &client,
            name,
            "kafka-bridge",
            &patterns,
            bv_outbox::Start::Earliest,
        )
        .await?;
        tracing::info!(
            "kafka bridge: producing {} to Kafka at {} (subscription `{name}`)",
            patterns.join(", "),
            self.config.brokers
        );

        let mut last_lag = Instant::now() - POLL;
        loop {
            if stop.is_cancelled() {
                return Ok(());
            }
            let read = bv_outbox::next_batch(&client, name, &likes, BATCH).await?;
            if read.events.is_empty() {
                if let Some(horizon) = read.position_after(0)? {
                    bv_outbox::advance(&client, name, &read.position, &horizon, 0).await?;
                }
                if last_lag.elapsed() >= POLL {
                    self.update_lag(&client, &likes).await?;
                    last_lag = Instant::now();
                }
                tokio::select! {
                    _ = stop.cancelled() => return Ok(()),
                    _ = closed.cancelled() => anyhow::bail!("lost the database connection"),
                    _ = wake.notified() => {}
                    _ = tokio::time::sleep(POLL) => {}
                }
                continue;
            }
            // Every record is queued before any acknowledgement is awaited:
            // the producer batches them, and per partition keeps their order.
            let mut pending = Vec::with_capacity(read.events.len());
            for event in &read.events {
                let topic = self.config.topic_for(&event.ty).with_context(|| {
                    format!(
                        "no [[out]] route takes type {} (event {})",
                        event.ty, event.id
                    )
                })?;
                topics.ensure(&topic).await?;
                let record = crate::binding::to_record(&event.json)
                    .with_context(|| format!("event {} (seq {})", event.id, event.seq))?;
                pending.push((
                    topic.clone(),
                    kafka::send(&producer, &topic, &record).await?,
                ));
            }
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
                // Stopped while the broker is slow: the position stays, and
                // the batch is produced again by the next start.
                _ = stop.cancelled() => return Ok(()),
                result = acknowledged => result?,
            }
            if let Some(to) = read.position_after(read.events.len())? {
                bv_outbox::advance(&client, name, &read.position, &to, read.events.len() as i64)
                    .await?;
            }
            retry.reset();
        }
    }

    async fn update_lag(&self, client: &Client, likes: &[String]) -> anyhow::Result<()> {
        let lag: i64 = client
            .query_one(
                "SELECT count(*) FROM bv_events.outbox o, bv_events.subscriptions s
                 WHERE s.name = $1 AND (o.tx, o.seq) > (s.position_tx, s.position_seq)
                   AND o.type LIKE ANY($2)",
                &[&self.config.subscription, &likes],
            )
            .await?
            .get(0);
        self.metrics.out_lag.set(lag);
        Ok(())
    }
}
