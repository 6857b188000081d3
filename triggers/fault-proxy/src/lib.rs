//! A TCP proxy that puts network faults between `bv` and a data service
//! (PostgreSQL, Redis, an MQTT broker), for chaos tests and game days.
//!
//! Clients connect to [`FaultProxy::addr`]; each connection is forwarded to
//! the upstream address through two pumps (one per direction) that apply
//! the [`NetFault`] in force when each chunk passes: added latency, a
//! bandwidth cap, or a blackhole (bytes held, nothing answered, connections
//! left open: what a dead route looks like until it comes back). [`FaultProxy::reset`]
//! cuts every open connection with a TCP reset, and
//! [`FaultProxy::refuse`] closes new connections at once, as a stopped
//! server's port does.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! use std::time::Duration;
//! use bv_fault_proxy::{FaultProxy, NetFault};
//!
//! let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let proxy = FaultProxy::start(upstream.local_addr()?).await?;
//! proxy.set(NetFault { latency: Duration::from_millis(50), ..NetFault::default() });
//! let _client = tokio::net::TcpStream::connect(proxy.addr()).await?;
//! # Ok(())
//! # }
//! ```

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// The faults applied to the bytes passing through, in both directions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetFault {
    /// Added before each chunk is passed on.
    pub latency: Duration,
    /// Most bytes per second per direction of each connection (`None`: no
    /// cap).
    pub bytes_per_second: Option<u64>,
    /// Nothing reaches the other side while it lasts: bytes are held (and
    /// no more read), as TCP retransmits over a dead route, and delivered
    /// in order once it ends; connections stay open.
    pub blackhole: bool,
}

struct Shared {
    fault: watch::Sender<NetFault>,
    /// Bumped by [`FaultProxy::reset`]; pumps reset their connection when
    /// it changes.
    resets: watch::Sender<u64>,
    refusing: AtomicBool,
    open: AtomicUsize,
}

/// A running proxy; stops accepting when dropped (open connections end
/// with their peers).
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.reset();
    }
}

impl FaultProxy {
    /// Listens on a free port of 127.0.0.1 and forwards to `upstream`, with
    /// no fault.
    pub async fn start(upstream: SocketAddr) -> io::Result<Self> {
        Self::start_on("127.0.0.1:0".parse().expect("a valid address"), upstream).await
    }

    /// Listens on `listen` and forwards to `upstream`, with no fault.
    pub async fn start_on(listen: SocketAddr, upstream: SocketAddr) -> io::Result<Self> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            fault: watch::Sender::new(NetFault::default()),
            resets: watch::Sender::new(0),
            refusing: AtomicBool::new(false),
            open: AtomicUsize::new(0),
        });
        let accept = tokio::spawn(accept_loop(listener, upstream, shared.clone()));
        Ok(Self {
            addr,
            shared,
            accept,
        })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Applies `fault` from now on, to open connections too.
    pub fn set(&self, fault: NetFault) {
        tracing::info!(target: "bv::fault_proxy", ?fault, "network fault set");
        self.shared.fault.send_replace(fault);
    }

    /// Cuts every open connection with a TCP reset.
    pub fn reset(&self) {
        self.shared.resets.send_modify(|n| *n += 1);
    }

    /// While `on`, new connections are closed as soon as they are accepted.
    pub fn refuse(&self, on: bool) {
        self.shared.refusing.store(on, Ordering::SeqCst);
    }

    /// Connections open through the proxy now.
    pub fn open_connections(&self) -> usize {
        self.shared.open.load(Ordering::SeqCst)
    }
}

async fn accept_loop(listener: TcpListener, upstream: SocketAddr, shared: Arc<Shared>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        if shared.refusing.load(Ordering::SeqCst) {
            let _ = client.set_zero_linger();
            drop(client);
            continue;
        }
        let shared = shared.clone();
        tokio::spawn(async move {
            let Ok(server) = TcpStream::connect(upstream).await else {
                let _ = client.set_zero_linger();
                return;
            };
            shared.open.fetch_add(1, Ordering::SeqCst);
            relay(client, server, &shared).await;
            shared.open.fetch_sub(1, Ordering::SeqCst);
        });
    }
}

/// Pumps both directions until either side closes or a reset is asked for.
async fn relay(client: TcpStream, server: TcpStream, shared: &Shared) {
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let mut resets = shared.resets.subscribe();
    resets.mark_unchanged();
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let reset = tokio::select! {
        _ = async {
            tokio::join!(
                pump(&mut client_read, &mut server_write, shared.fault.subscribe()),
                pump(&mut server_read, &mut client_write, shared.fault.subscribe()),
            )
        } => false,
        _ = resets.changed() => true,
    };
    if reset {
        if let (Ok(client), Ok(server)) = (
            client_read.reunite(client_write),
            server_read.reunite(server_write),
        ) {
            let _ = client.set_zero_linger();
            let _ = server.set_zero_linger();
        }
    }
}

/// Copies `from` to `to` under the fault in force, until `from` ends.
async fn pump(
    from: &mut tokio::net::tcp::OwnedReadHalf,
    to: &mut tokio::net::tcp::OwnedWriteHalf,
    mut fault: watch::Receiver<NetFault>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        // A dead route: TCP would retransmit until it came back, so the
        // bytes are held (and nothing more is read), not lost.
        if fault.wait_for(|f| !f.blackhole).await.is_err() {
            break;
        }
        let now = *fault.borrow();
        if !now.latency.is_zero() {
            tokio::time::sleep(now.latency).await;
        }
        if let Some(rate) = now.bytes_per_second.filter(|r| *r > 0) {
            tokio::time::sleep(Duration::from_secs_f64(n as f64 / rate as f64)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// An upstream that echoes every byte back.
    async fn echo() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    async fn round_trip(stream: &mut TcpStream, bytes: &[u8]) -> io::Result<Vec<u8>> {
        stream.write_all(bytes).await?;
        let mut back = vec![0u8; bytes.len()];
        stream.read_exact(&mut back).await?;
        Ok(back)
    }

    #[tokio::test]
    async fn bytes_pass_then_wait_then_vanish() {
        let proxy = FaultProxy::start(echo().await).await.unwrap();
        let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(round_trip(&mut client, b"ping").await.unwrap(), b"ping");

        proxy.set(NetFault {
            latency: Duration::from_millis(100),
            ..NetFault::default()
        });
        let start = Instant::now();
        assert_eq!(round_trip(&mut client, b"slow").await.unwrap(), b"slow");
        assert!(start.elapsed() >= Duration::from_millis(200), "both ways");

        proxy.set(NetFault {
            bytes_per_second: Some(100_000),
            ..NetFault::default()
        });
        let start = Instant::now();
        let big = vec![7u8; 50_000];
        assert_eq!(round_trip(&mut client, &big).await.unwrap(), big);
        assert!(
            // 0.5 s each way; the two directions overlap.
            start.elapsed() >= Duration::from_millis(450),
            "{:?}",
            start.elapsed()
        );

        proxy.set(NetFault {
            blackhole: true,
            ..NetFault::default()
        });
        let lost =
            tokio::time::timeout(Duration::from_millis(300), round_trip(&mut client, b"gone"))
                .await;
        assert!(lost.is_err(), "nothing comes back from a blackhole");
        assert_eq!(proxy.open_connections(), 1, "and the connection stays open");
        proxy.set(NetFault::default());
        let mut held = [0u8; 4];
        tokio::time::timeout(Duration::from_secs(2), client.read_exact(&mut held))
            .await
            .expect("held bytes arrive once the route is back")
            .unwrap();
        assert_eq!(&held, b"gone");
    }

    #[tokio::test]
    async fn a_reset_cuts_open_connections_and_refusing_closes_new_ones() {
        let proxy = FaultProxy::start(echo().await).await.unwrap();
        let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(round_trip(&mut client, b"one").await.unwrap(), b"one");
        proxy.reset();
        let mut buf = [0u8; 1];
        let cut = tokio::time::timeout(Duration::from_secs(2), client.read(&mut buf))
            .await
            .expect("the reset arrives");
        assert!(
            matches!(&cut, Err(e) if e.kind() == io::ErrorKind::ConnectionReset)
                || matches!(cut, Ok(0)),
            "{cut:?}"
        );

        proxy.refuse(true);
        let mut refused = TcpStream::connect(proxy.addr()).await.unwrap();
        assert!(round_trip(&mut refused, b"x").await.is_err());
        proxy.refuse(false);
        let mut again = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(round_trip(&mut again, b"two").await.unwrap(), b"two");
    }
}
