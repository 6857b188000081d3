//! One subscription's delivery loop.
//!
//! A subscriber owns one connection: it LISTENs on `bv_events`, holds the
//! subscription's advisory lock (so one `bv` delivers it at a time; others
//! stand by), reads the outbox in position order and moves the position
//! forward only after the events before it were handled or dead-lettered.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bv_runtime::trigger::record_failure;
use futures::{StreamExt as _, TryStreamExt as _};
use tokio::sync::Notify;
use tokio_postgres::{AsyncMessage, Client, NoTls};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::backoff::Backoff;
use crate::config::Start;
use crate::metrics::Metrics;
use crate::pattern;
use crate::sink::{OutboxEvent, Sink, Unhandled};
use bv_outbox::{ensure_schema, Batch, Position};

/// Events read per query.
const BATCH: i64 = 128;

/// Everything one subscription needs.
pub struct Subscriber<S> {
    /// The subscription's name.
    pub name: String,
    /// The component id, or `-` for a fan-out.
    pub component: String,
    /// The patterns as written.
    pub patterns: Vec<String>,
    /// Their `LIKE` forms.
    pub likes: Vec<String>,
    /// The database.
    pub config: tokio_postgres::Config,
    /// The database, for messages (no password).
    pub address_display: String,
    /// Where a new subscription starts.
    pub start: Start,
    /// Deliveries of one event before it is dead-lettered (or dropped).
    pub max_attempts: u32,
    /// Events handled at once, each subject's in order.
    pub max_in_flight: u32,
    /// Delays between attempts.
    pub backoff: Backoff,
    /// How often to look without a notification.
    pub poll_interval: Duration,
    /// Where events go.
    pub sink: S,
    /// Figures.
    pub metrics: Arc<Metrics>,
}

/// Why a session ended.
enum End {
    /// `stop` was cancelled.
    Stopped,
}

/// What became of one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// The sink handled it.
    Handled,
    /// Dead-lettered or dropped after its attempts.
    GivenUp,
    /// `stop` came first; the event stays where it is.
    Stopped,
}

impl<S: Sink> Subscriber<S> {
    /// Delivers until `stop` is cancelled; reconnects after connection
    /// failures with backoff.
    pub async fn run(self, stop: CancellationToken) {
        let reconnect = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(5),
        };
        let mut failures = 0u32;
        loop {
            let started = Instant::now();
            match self.session(&stop).await {
                Ok(End::Stopped) => return,
                Err(e) => {
                    self.metrics.disconnected();
                    if started.elapsed() > Duration::from_secs(10) {
                        failures = 0;
                    }
                    failures += 1;
                    let delay = reconnect.delay(failures);
                    tracing::warn!(
                        subscription = %self.name,
                        "postgres trigger: subscription `{}` on {}: {e:#}; reconnecting in {delay:?}",
                        self.name,
                        self.address_display
                    );
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }

    /// One connection's worth of delivering.
    async fn session(&self, stop: &CancellationToken) -> anyhow::Result<End> {
        let (mut client, mut connection) =
            tokio::time::timeout(Duration::from_secs(10), self.config.connect(NoTls))
                .await
                .context("connecting: timed out")?
                .context("connecting")?;
        let wake = Arc::new(Notify::new());
        let closed = CancellationToken::new();
        let driver = {
            let (wake, closed) = (wake.clone(), closed.clone());
            let patterns = self.patterns.clone();
            tokio::spawn(async move {
                let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
                while let Some(message) = messages.next().await {
                    match message {
                        // The payload is the new event's type (empty: look
                        // anyway); events of other types wait for the next
                        // poll to move the position past them.
                        Ok(AsyncMessage::Notification(n))
                            if n.payload().is_empty()
                                || patterns.iter().any(|p| pattern::matches(p, n.payload())) =>
                        {
                            wake.notify_one()
                        }
                        Ok(_) => {}
                        Err(e) => {
                            tracing::debug!("postgres trigger connection: {e}");
                            break;
                        }
                    }
                }
                closed.cancel();
            })
        };
        let _abort = AbortOnDrop(driver);
        ensure_schema(&mut client)
            .await
            .context("creating schema bv_events")?;
        bv_outbox::prepare_reader(&client).await?;
        client.batch_execute("LISTEN bv_events").await?;

        // Take the subscription; stand by while another process has it.
        let mut standing_by = false;
        loop {
            let locked = bv_outbox::try_lock(&client, &self.name).await?;
            if locked {
                break;
            }
            if !standing_by {
                tracing::info!(
                    subscription = %self.name,
                    "postgres trigger: another process delivers subscription `{}`; standing by",
                    self.name
                );
                standing_by = true;
            }
            tokio::select! {
                _ = stop.cancelled() => return Ok(End::Stopped),
                _ = closed.cancelled() => anyhow::bail!("connection lost"),
                _ = tokio::time::sleep(self.poll_interval) => {}
            }
        }
        self.register(&client).await?;
        tracing::info!(
            subscription = %self.name,
            "postgres trigger: delivering subscription `{}` ({}) to {}",
            self.name,
            self.patterns.join(", "),
            self.component
        );

        let mut last_lag = Instant::now() - Duration::from_secs(60);
        // Whether events were handled since the lag was last counted: once
        // the subscription goes idle after them, the gauge is brought to
        // rest at once (an alert on lag must not see a backlog that is gone).
        let mut handled_since_lag = false;
        loop {
            if stop.is_cancelled() {
                return Ok(End::Stopped);
            }
            if S::KEEPS_DEAD_LETTERS {
                if let Some(end) = self.retry_dead_letters(&client, stop).await? {
                    return Ok(end);
                }
            }
            let read = self.next_batch(&client).await?;
            if read.events.is_empty() {
                self.sink.idle();
                if let Some(horizon) = read.position_after(0)? {
                    self.advance(&client, &read.position, &horizon, 0).await?;
                }
                // At most once a second: every outbox commit wakes every
                // subscription, most of them with nothing to do.
                if handled_since_lag || last_lag.elapsed() > Duration::from_secs(1) {
                    self.update_lag(&client).await?;
                    last_lag = Instant::now();
                    handled_since_lag = false;
                }
                tokio::select! {
                    _ = stop.cancelled() => return Ok(End::Stopped),
                    _ = closed.cancelled() => anyhow::bail!("connection lost"),
                    _ = wake.notified() => {}
                    _ = tokio::time::sleep(self.poll_interval) => {}
                }
                continue;
            }
            let (count, stopped) = self
                .deliver_batch(&client, &read.events, stop, &closed)
                .await?;
            if count > 0 {
                handled_since_lag = true;
                if let Some(to) = read.position_after(count)? {
                    self.advance(&client, &read.position, &to, count as i64)
                        .await?;
                }
            }
            if stopped {
                return Ok(End::Stopped);
            }
            if last_lag.elapsed() > Duration::from_secs(1) {
                self.update_lag(&client).await?;
                last_lag = Instant::now();
                handled_since_lag = false;
            }
        }
    }

    /// Delivers `batch`: one run of events per subject (events without a
    /// subject share one), up to `max_in_flight` runs at a time, each in the
    /// order written; with `max_in_flight = 1`, the whole batch in order.
    /// Returns how many events from the batch's start were all handled or
    /// given up (the position may move past those), and whether `stop`
    /// came first. An event handled after one still pending is delivered
    /// again by the next session: at least once, as always.
    async fn deliver_batch(
        &self,
        client: &Client,
        batch: &[OutboxEvent],
        stop: &CancellationToken,
        closed: &CancellationToken,
    ) -> anyhow::Result<(usize, bool)> {
        let runs = if self.max_in_flight <= 1 {
            vec![(0..batch.len()).collect()]
        } else {
            runs_by_subject(batch)
        };
        let finished: Vec<Vec<(usize, Fate)>> = futures::stream::iter(runs)
            .map(|run| async move {
                let mut fates = Vec::with_capacity(run.len());
                for i in run {
                    // The position could not be recorded: stop delivering
                    // events that would only be delivered again.
                    if closed.is_cancelled() {
                        anyhow::bail!("connection lost");
                    }
                    let fate = self.deliver(client, &batch[i], 0, stop).await?;
                    let stopped = fate == Fate::Stopped;
                    fates.push((i, fate));
                    if stopped {
                        break;
                    }
                }
                Ok(fates)
            })
            .buffer_unordered(self.max_in_flight.max(1) as usize)
            .try_collect()
            .await?;
        Ok(settled_prefix(batch.len(), finished.into_iter().flatten()))
    }

    async fn register(&self, client: &Client) -> anyhow::Result<()> {
        bv_outbox::register(
            client,
            &self.name,
            &self.component,
            &self.patterns,
            self.start,
        )
        .await
    }

    async fn next_batch(&self, client: &Client) -> anyhow::Result<Batch> {
        bv_outbox::next_batch(client, &self.name, &self.likes, BATCH).await
    }

    async fn advance(
        &self,
        client: &Client,
        from: &Position,
        to: &Position,
        delivered: i64,
    ) -> anyhow::Result<()> {
        bv_outbox::advance(client, &self.name, from, to, delivered).await?;
        Ok(())
    }

    async fn update_lag(&self, client: &Client) -> anyhow::Result<()> {
        let lag: i64 = client
            .query_one(
                "SELECT count(*) FROM bv_events.outbox o, bv_events.subscriptions s
                 WHERE s.name = $1 AND (o.tx, o.seq) > (s.position_tx, s.position_seq)
                   AND o.type LIKE ANY($2)",
                &[&self.name, &self.likes],
            )
            .await?
            .get(0);
        self.metrics.set_lag(&self.name, lag);
        Ok(())
    }

    /// Delivers one event with retries. Each attempt is a span (see
    /// [`Sink::span`]) that records how it ended.
    async fn deliver(
        &self,
        client: &Client,
        event: &OutboxEvent,
        attempts_before: i32,
        stop: &CancellationToken,
    ) -> anyhow::Result<Fate> {
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let number = attempts_before.max(0) as u32 + attempt;
            let span = self.sink.span(&self.name, event, number);
            let result = self
                .sink
                .deliver(&self.name, event, number, &span)
                .instrument(span.clone())
                .await;
            let why = match result {
                Ok(()) => {
                    self.metrics.delivery(&self.name, "ok");
                    return Ok(Fate::Handled);
                }
                Err(why) => why,
            };
            self.metrics.delivery(&self.name, why.outcome());
            let error = why.reason();
            record_failure(&span, why.outcome(), &error);
            if matches!(why, Unhandled::Rejected(_)) || attempt >= self.max_attempts {
                // In the attempt's span, so its log line has the trace id.
                self.sink
                    .give_up(
                        client,
                        &self.name,
                        event,
                        attempts_before + attempt as i32,
                        &why,
                        &span,
                    )
                    .instrument(span.clone())
                    .await?;
                return Ok(Fate::GivenUp);
            }
            let delay = self.backoff.delay(attempt);
            span.in_scope(|| {
                tracing::warn!(
                    subscription = %self.name,
                    event_id = %event.id,
                    offset = event.seq,
                    attempt = number,
                    "postgres trigger: delivery to {} failed: {error}; retrying in {delay:?}",
                    self.component
                )
            });
            // The attempt ends here; the wait belongs to no span.
            drop(span);
            tokio::select! {
                _ = stop.cancelled() => return Ok(Fate::Stopped),
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// Re-delivers dead letters that `bv events dead-letters retry` asked
    /// for: a success deletes the dead letter, a failure parks it again.
    async fn retry_dead_letters(
        &self,
        client: &Client,
        stop: &CancellationToken,
    ) -> anyhow::Result<Option<End>> {
        let rows = client
            .query(
                "SELECT d.seq, d.event_id, d.type, d.subject, d.event::text, d.attempts,
                        COALESCE(o.tx::text, '0'), COALESCE(o.source, '')
                 FROM bv_events.dead_letters d
                 LEFT JOIN bv_events.outbox o ON o.seq = d.seq
                 WHERE d.subscription = $1 AND d.retry_requested
                 ORDER BY d.seq",
                &[&self.name],
            )
            .await?;
        for row in rows {
            let event = OutboxEvent {
                seq: row.get(0),
                id: row.get(1),
                ty: row.get(2),
                subject: row.get(3),
                json: row.get(4),
                tx: row.get(6),
                source: row.get(7),
            };
            let attempts: i32 = row.get(5);
            tracing::info!(
                subscription = %self.name,
                event_id = %event.id,
                offset = event.seq,
                "postgres trigger: retrying dead letter"
            );
            match self.deliver(client, &event, attempts, stop).await? {
                Fate::Stopped => return Ok(Some(End::Stopped)),
                Fate::GivenUp => {}
                Fate::Handled => {
                    client
                    .execute(
                        "DELETE FROM bv_events.dead_letters WHERE subscription = $1 AND seq = $2",
                        &[&self.name, &event.seq],
                    )
                    .await?;
                }
            }
        }
        Ok(None)
    }
}

/// The batch's indices in runs that must stay in order: one per subject,
/// in the order each subject first appears.
fn runs_by_subject(batch: &[OutboxEvent]) -> Vec<Vec<usize>> {
    let mut runs: Vec<Vec<usize>> = Vec::new();
    let mut run_of: HashMap<Option<&str>, usize> = HashMap::new();
    for (i, event) in batch.iter().enumerate() {
        let run = *run_of.entry(event.subject.as_deref()).or_insert_with(|| {
            runs.push(Vec::new());
            runs.len() - 1
        });
        runs[run].push(i);
    }
    runs
}

/// How many of `len` events from the start were handled or given up, and
/// whether any run stopped, from each delivered event's fate.
fn settled_prefix(len: usize, fates: impl Iterator<Item = (usize, Fate)>) -> (usize, bool) {
    let mut settled = vec![false; len];
    let mut stopped = false;
    for (i, fate) in fates {
        match fate {
            Fate::Stopped => stopped = true,
            Fate::Handled | Fate::GivenUp => settled[i] = true,
        }
    }
    (settled.iter().take_while(|s| **s).count(), stopped)
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(seq: i64, subject: Option<&str>) -> OutboxEvent {
        OutboxEvent {
            seq,
            tx: "1".into(),
            id: format!("e{seq}"),
            source: "/t".into(),
            ty: "t".into(),
            subject: subject.map(str::to_string),
            json: "{}".into(),
        }
    }

    #[test]
    fn each_subject_is_one_run_in_the_order_written() {
        let batch = [
            event(1, Some("a")),
            event(2, Some("b")),
            event(3, None),
            event(4, Some("a")),
            event(5, None),
            event(6, Some("b")),
        ];
        assert_eq!(
            runs_by_subject(&batch),
            vec![vec![0, 3], vec![1, 5], vec![2, 4]]
        );
    }

    #[test]
    fn the_position_moves_only_past_events_settled_from_the_start() {
        use Fate::*;
        // All settled, in any order of finishing.
        assert_eq!(
            settled_prefix(3, [(2, Handled), (0, GivenUp), (1, Handled)].into_iter()),
            (3, false)
        );
        // Event 1's run stopped: only event 0 may be passed, though 2 was
        // handled (it is delivered again).
        assert_eq!(
            settled_prefix(3, [(0, Handled), (2, Handled), (1, Stopped)].into_iter()),
            (1, true)
        );
        // Event 0 never started.
        assert_eq!(settled_prefix(2, [(1, Handled)].into_iter()), (0, false));
    }
}
