//! Several `bv` processes, one set of connections: operations on a
//! connection another process holds, and every group message, cross by Redis
//! pub/sub.
//!
//! Each process subscribes to its own channel (`bv:websocket:{app}:node:{id}`)
//! and to the application's group channel (`bv:websocket:{app}:groups`). An
//! operation on a connection is published to the channel of the process its
//! id names; `PUBLISH` answers how many subscribers got it, so 0 means that
//! process is gone and the connection with it. A group message is delivered
//! to this process's members at once and published for the others.
//!
//! Pub/sub keeps nothing: a process that is not subscribed at the moment of
//! a publish (Redis restarting, say) misses it. That is the semantics of a
//! WebSocket send, which reaches the connections open at the time; the
//! subscriber reconnects with backoff.

use std::sync::Weak;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::OnceCell;

use crate::{Hub, Op};

pub(crate) struct Fanout {
    client: redis::Client,
    publisher: OnceCell<redis::aio::ConnectionManager>,
    node_prefix: String,
    own: String,
    groups: String,
}

/// How long a publish may take before the send is answered 503.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(2);

impl Fanout {
    pub(crate) fn new(url: &str, app: &str, node: &str) -> anyhow::Result<Self> {
        let client = redis::Client::open(url)
            .map_err(|e| anyhow::anyhow!("websocket.redis: invalid Redis address: {e}"))?;
        let node_prefix = format!("bv:websocket:{app}:node:");
        Ok(Self {
            client,
            publisher: OnceCell::new(),
            own: format!("{node_prefix}{node}"),
            node_prefix,
            groups: format!("bv:websocket:{app}:groups"),
        })
    }

    /// Spawns the subscriber; it lives as long as the hub.
    pub(crate) fn subscribe(&self, hub: Weak<Hub>) {
        let client = self.client.clone();
        let channels = [self.own.clone(), self.groups.clone()];
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(100);
            loop {
                match listen(&client, &channels, &hub).await {
                    Ok(()) => return,
                    Err(e) => tracing::warn!(
                        "WebSocket fan-out: Redis subscription lost ({e}); retrying in {backoff:?}"
                    ),
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                if hub.strong_count() == 0 {
                    return;
                }
            }
        });
    }

    /// Publishes `op` to the process `node`; how many processes got it.
    pub(crate) async fn publish_node(&self, node: &str, op: &Op) -> Result<i64, String> {
        self.publish(&format!("{}{node}", self.node_prefix), op)
            .await
    }

    /// Publishes a group message to every process.
    pub(crate) async fn publish_group(&self, op: &Op) -> Result<(), String> {
        self.publish(&self.groups, op).await.map(|_| ())
    }

    async fn publish(&self, channel: &str, op: &Op) -> Result<i64, String> {
        let payload = serde_json::to_vec(op).map_err(|e| e.to_string())?;
        let work = async {
            let publisher = self
                .publisher
                .get_or_try_init(|| redis::aio::ConnectionManager::new(self.client.clone()))
                .await?;
            redis::cmd("PUBLISH")
                .arg(channel)
                .arg(payload)
                .query_async::<i64>(&mut publisher.clone())
                .await
        };
        match tokio::time::timeout(PUBLISH_TIMEOUT, work).await {
            Ok(Ok(receivers)) => Ok(receivers),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {PUBLISH_TIMEOUT:?}")),
        }
    }
}

/// Receives until the subscription breaks (`Err`) or the hub is gone (`Ok`).
async fn listen(
    client: &redis::Client,
    channels: &[String; 2],
    hub: &Weak<Hub>,
) -> redis::RedisResult<()> {
    let mut pubsub = client.get_async_pubsub().await?;
    for channel in channels {
        pubsub.subscribe(channel).await?;
    }
    tracing::debug!("WebSocket fan-out subscribed to {channels:?}");
    let mut messages = pubsub.on_message();
    while let Some(message) = messages.next().await {
        let Some(hub) = hub.upgrade() else {
            return Ok(());
        };
        let op: Op = match serde_json::from_slice(message.get_payload_bytes()) {
            Ok(op) => op,
            Err(e) => {
                tracing::warn!("WebSocket fan-out: unreadable operation ignored: {e}");
                continue;
            }
        };
        if matches!(&op, Op::Broadcast { origin, .. } if *origin == hub.node) {
            continue;
        }
        // A connection gone since the publish: nothing to do.
        let _ = hub.apply_local(op);
    }
    Err(redis::RedisError::from((
        redis::ErrorKind::IoError,
        "the subscription ended",
    )))
}
