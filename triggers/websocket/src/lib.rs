//! WebSocket at the edge for `bv` (beyond Spin, which has no WebSocket
//! support).
//!
//! The runtime holds the connections; components stay request handlers. A
//! component whose manifest has `[component.<id>.tool.bv.websocket]` is
//! called for each event of a connection on its routes, as an HTTP `POST` to
//! the route the client connected to, with [`EVENT_HEADER`] saying which:
//! `connect` (the handshake's headers; a 2xx answer accepts, any other is
//! the client's answer), `message` (the message as the body; a non-empty
//! answer goes back to the sender) and `disconnect`. Every call names the
//! connection ([`CONNECTION_HEADER`]) and the principal the connect answer
//! named ([`PRINCIPAL_HEADER`]).
//!
//! Components send through [`api`], an HTTP interface at
//! `http://bv-websocket.spin.internal`: to one connection, to a group, and
//! they put connections into groups and take them out. The [`Hub`] holds this
//! process's connections and groups; with Redis configured, what targets a
//! connection held by another process, and every group message, crosses to
//! the other processes by Redis pub/sub ([`fanout`]).

mod api;
mod connection;
mod fanout;
mod metrics;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use api::handle as handle_api;
pub use connection::{accept_key, is_upgrade, ConnectionSettings, Pending, Session};
pub use metrics::Metrics;

/// Which event a call to the component is: `connect`, `message` or
/// `disconnect`.
pub const EVENT_HEADER: &str = "bv-websocket-event";
/// The connection the event is about (the id components send to).
pub const CONNECTION_HEADER: &str = "bv-websocket-connection";
/// The principal the component's connect answer named (absent before).
pub const PRINCIPAL_HEADER: &str = "bv-websocket-principal";
/// On `disconnect`: the close code (1000 normal, 1001 going away, 1006 the
/// connection broke without a close, 1009 message too big, ...).
pub const CLOSE_CODE_HEADER: &str = "bv-websocket-close-code";
/// Every header bv sets on an event call: removed from requests arriving
/// from the network, so a client cannot pose as an event.
pub const EVENT_HEADERS: [&str; 4] = [
    EVENT_HEADER,
    CONNECTION_HEADER,
    PRINCIPAL_HEADER,
    CLOSE_CODE_HEADER,
];

/// A boxed future, as [`Events`] returns them.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// What runs a component for a connection's events: the HTTP trigger, with
/// the component's limits, metrics and spans.
pub trait Events: Send + Sync + 'static {
    /// Calls the component with `request` and gives its answer, body
    /// collected; a failure (trap, timeout) is an answer too (a problem).
    fn call(&self, request: http::Request<Bytes>) -> BoxFuture<http::Response<Bytes>>;
}

/// A message to or from a client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Message {
    /// A text message (UTF-8).
    Text(String),
    /// A binary message.
    Binary(Vec<u8>),
}

impl Message {
    /// The message a body of `content_type` makes: text for `text/*` and
    /// JSON (which must then be UTF-8), binary otherwise.
    pub fn from_body(content_type: Option<&str>, body: Bytes) -> Result<Self, String> {
        let essence = content_type
            .and_then(|t| t.split(';').next())
            .map(|t| t.trim().to_ascii_lowercase())
            .unwrap_or_default();
        if essence.starts_with("text/") || essence == "application/json" || essence.is_empty() {
            String::from_utf8(body.to_vec())
                .map(Message::Text)
                .map_err(|_| format!("the body is not UTF-8, as a `{essence}` message must be (send binary as application/octet-stream)"))
        } else {
            Ok(Message::Binary(body.to_vec()))
        }
    }
}

/// Why a send to a connection did not happen.
#[derive(Debug, PartialEq, Eq)]
pub enum SendError {
    /// No process holds a connection of that id (it closed, or never was).
    NotFound,
    /// The other processes could not be reached (Redis is down).
    Unreachable(String),
}

/// What the hub knows of one of this process's connections.
struct Held {
    component: Arc<str>,
    outgoing: mpsc::Sender<Message>,
    close: connection::Closer,
    groups: HashSet<String>,
}

#[derive(Default)]
struct Local {
    connections: HashMap<String, Held>,
    groups: HashMap<String, HashSet<String>>,
}

/// This process's WebSocket connections and groups, and the way to the
/// other processes' (one per application).
pub struct Hub {
    node: String,
    next: AtomicU64,
    local: Mutex<Local>,
    fanout: Option<fanout::Fanout>,
    metrics: Arc<Metrics>,
    /// Cancelled when the server drains: connections close with 1001.
    draining: CancellationToken,
    /// Connections not yet done with their disconnect call; a drain waits
    /// for none.
    running: AtomicUsize,
    /// Signals each connection's end, so a drain can wait for them.
    ended: tokio::sync::Notify,
}

/// How many messages wait for a client before it counts as too slow and is
/// closed (a slow client must not hold up a broadcast or grow without end).
const OUTGOING_QUEUE: usize = 256;

impl Hub {
    /// A hub for the application `app`, registering its metrics with
    /// `metrics`; with `redis`, sends reach the connections of every process
    /// using the same Redis and application name. Must be called inside a
    /// Tokio runtime when `redis` is given (the subscriber is spawned).
    pub fn new(app: &str, metrics: Arc<Metrics>, redis: Option<&str>) -> anyhow::Result<Arc<Self>> {
        let node = node_id();
        let fanout = redis
            .map(|url| fanout::Fanout::new(url, app, &node))
            .transpose()?;
        let hub = Arc::new(Self {
            node,
            next: AtomicU64::new(1),
            local: Mutex::new(Local::default()),
            fanout,
            metrics,
            draining: CancellationToken::new(),
            running: AtomicUsize::new(0),
            ended: tokio::sync::Notify::new(),
        });
        if let (Some(fanout), Ok(_)) = (&hub.fanout, tokio::runtime::Handle::try_current()) {
            fanout.subscribe(Arc::downgrade(&hub));
        }
        Ok(hub)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Local> {
        self.local.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many connections this process holds.
    pub fn connections(&self) -> usize {
        self.lock().connections.len()
    }

    /// Closes every connection with 1001 (going away) and waits, at most
    /// `deadline`, until their disconnect calls are done.
    pub async fn drain(&self, deadline: Duration) {
        self.draining.cancel();
        let wait = async {
            loop {
                let ended = self.ended.notified();
                if self.running.load(Ordering::SeqCst) == 0 {
                    return;
                }
                ended.await;
            }
        };
        if tokio::time::timeout(deadline, wait).await.is_err() {
            tracing::warn!(
                connections = self.connections(),
                "WebSocket connections still open at the drain deadline"
            );
        }
    }

    fn register(
        &self,
        component: Arc<str>,
    ) -> (String, mpsc::Receiver<Message>, connection::Closer) {
        let id = format!(
            "{}-{}",
            self.node,
            self.next.fetch_add(1, Ordering::Relaxed)
        );
        let (outgoing, rx) = mpsc::channel(OUTGOING_QUEUE);
        let close = connection::Closer::default();
        self.metrics.opened(&component);
        self.lock().connections.insert(
            id.clone(),
            Held {
                component,
                outgoing,
                close: close.clone(),
                groups: HashSet::new(),
            },
        );
        (id, rx, close)
    }

    fn unregister(&self, id: &str) {
        let held = {
            let mut local = self.lock();
            let held = local.connections.remove(id);
            if let Some(held) = &held {
                for group in &held.groups {
                    if let Some(members) = local.groups.get_mut(group) {
                        members.remove(id);
                        if members.is_empty() {
                            local.groups.remove(group);
                        }
                    }
                }
            }
            held
        };
        if let Some(held) = held {
            self.metrics.closed(&held.component);
        }
    }

    /// Counts a connection until its guard is dropped (after its disconnect
    /// call, or when its handshake was refused or given up).
    fn running(self: &Arc<Self>) -> Running {
        self.running.fetch_add(1, Ordering::SeqCst);
        Running(self.clone())
    }

    /// Whether `connection` is one of this process's ids.
    fn is_local(&self, connection: &str) -> bool {
        connection
            .split_once('-')
            .is_some_and(|(node, _)| node == self.node)
    }

    /// Sends `message` to `connection`, wherever it is held.
    pub async fn send(&self, connection: &str, message: Message) -> Result<(), SendError> {
        self.to_connection(Op::Send {
            connection: connection.into(),
            message,
        })
        .await
    }

    /// Closes `connection` with `code` and `reason`.
    pub async fn close(&self, connection: &str, code: u16, reason: &str) -> Result<(), SendError> {
        self.to_connection(Op::Close {
            connection: connection.into(),
            code,
            reason: reason.into(),
        })
        .await
    }

    /// Puts `connection` into `group` (or, with `join` false, takes it out).
    pub async fn membership(
        &self,
        connection: &str,
        group: &str,
        join: bool,
    ) -> Result<(), SendError> {
        self.to_connection(Op::Membership {
            connection: connection.into(),
            group: group.into(),
            join,
        })
        .await
    }

    /// Sends `message` to every member of `group` in every process; the
    /// number of this process's members it reached.
    pub async fn broadcast(&self, group: &str, message: Message) -> Result<usize, SendError> {
        let here = self.broadcast_local(group, &message);
        if let Some(fanout) = &self.fanout {
            fanout
                .publish_group(&Op::Broadcast {
                    origin: self.node.clone(),
                    group: group.into(),
                    message,
                })
                .await
                .map_err(SendError::Unreachable)?;
        }
        Ok(here)
    }

    async fn to_connection(&self, op: Op) -> Result<(), SendError> {
        let connection = op.connection().unwrap_or_default();
        if self.is_local(connection) {
            return self.apply_local(op);
        }
        let Some(fanout) = &self.fanout else {
            return Err(SendError::NotFound);
        };
        let Some((node, _)) = connection.split_once('-') else {
            return Err(SendError::NotFound);
        };
        match fanout.publish_node(node, &op).await {
            Ok(0) => Err(SendError::NotFound),
            Ok(_) => Ok(()),
            Err(e) => Err(SendError::Unreachable(e)),
        }
    }

    /// Applies an operation on this process's connections.
    fn apply_local(&self, op: Op) -> Result<(), SendError> {
        match op {
            Op::Send {
                connection,
                message,
            } => self.with_held(&connection, |held| {
                self.deliver(&connection, held, message);
            }),
            Op::Close {
                connection,
                code,
                reason,
            } => self.with_held(&connection, |held| held.close.close(code, &reason)),
            Op::Membership {
                connection,
                group,
                join,
            } => {
                let mut local = self.lock();
                let held = local
                    .connections
                    .get_mut(&connection)
                    .ok_or(SendError::NotFound)?;
                if join {
                    held.groups.insert(group.clone());
                    local.groups.entry(group).or_default().insert(connection);
                } else {
                    held.groups.remove(&group);
                    if let Some(members) = local.groups.get_mut(&group) {
                        members.remove(&connection);
                        if members.is_empty() {
                            local.groups.remove(&group);
                        }
                    }
                }
                Ok(())
            }
            Op::Broadcast { group, message, .. } => {
                self.broadcast_local(&group, &message);
                Ok(())
            }
        }
    }

    /// Runs `f` on this process's connection `id`, if it holds it.
    fn with_held(&self, id: &str, f: impl FnOnce(&Held)) -> Result<(), SendError> {
        let local = self.lock();
        f(local.connections.get(id).ok_or(SendError::NotFound)?);
        Ok(())
    }

    fn broadcast_local(&self, group: &str, message: &Message) -> usize {
        let local = self.lock();
        let Some(members) = local.groups.get(group) else {
            return 0;
        };
        for id in members {
            if let Some(held) = local.connections.get(id) {
                self.deliver(id, held, message.clone());
            }
        }
        members.len()
    }

    /// Queues `message` for a client; a client whose queue is full is too
    /// slow and is closed (1008) rather than buffered without end.
    fn deliver(&self, id: &str, held: &Held, message: Message) {
        if held.close.is_closing() {
            return;
        }
        match held.outgoing.try_send(message) {
            Ok(()) => self.metrics.message(&held.component, "out"),
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!(
                    connection = id,
                    component = &*held.component,
                    "WebSocket client too slow: {OUTGOING_QUEUE} messages waiting; closing it"
                );
                self.metrics.slow(&held.component);
                held.close.close(1008, "too slow: messages were waiting");
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }
}

/// A connection's place in the count a drain waits on.
struct Running(Arc<Hub>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::SeqCst);
        self.0.ended.notify_waiters();
    }
}

/// An operation on connections or groups, as it crosses between processes.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Op {
    Send {
        connection: String,
        message: Message,
    },
    Close {
        connection: String,
        code: u16,
        reason: String,
    },
    Membership {
        connection: String,
        group: String,
        join: bool,
    },
    Broadcast {
        origin: String,
        group: String,
        message: Message,
    },
}

impl Op {
    fn connection(&self) -> Option<&str> {
        match self {
            Op::Send { connection, .. }
            | Op::Close { connection, .. }
            | Op::Membership { connection, .. } => Some(connection),
            Op::Broadcast { .. } => None,
        }
    }
}

/// A random id for this process: the prefix of its connections' ids.
fn node_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    format!("{:012x}", hasher.finish() & 0xffff_ffff_ffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_become_messages() {
        assert_eq!(
            Message::from_body(Some("text/plain; charset=utf-8"), Bytes::from("hi")),
            Ok(Message::Text("hi".into()))
        );
        assert_eq!(
            Message::from_body(Some("application/json"), Bytes::from("{}")),
            Ok(Message::Text("{}".into()))
        );
        assert_eq!(
            Message::from_body(
                Some("application/octet-stream"),
                Bytes::from_static(&[0xff])
            ),
            Ok(Message::Binary(vec![0xff]))
        );
        assert!(
            Message::from_body(Some("text/plain"), Bytes::from_static(&[0xff]))
                .unwrap_err()
                .contains("not UTF-8")
        );
    }

    #[test]
    fn ids_name_their_process() {
        let a = node_id();
        assert_eq!(a.len(), 12);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
    }
}
