//! `realtime-bench`: the driver and the native baseline of
//! `loadtest/realtime.sh`.
//!
//! - `native-server`: a tokio-tungstenite WebSocket server (and a hyper
//!   Server-Sent Events stream) speaking ws-probe's protocol (`join G` →
//!   `joined G 204`, `group G TEXT` → TEXT to every member and
//!   `group 202 …` to the sender, anything else echoed), with the same
//!   per-connection design as `bv`: a reader, a writer fed by a queue of
//!   256, a 4 KiB read buffer.
//! - `load`: holds `--ws` WebSocket and `--sse` SSE connections to a server,
//!   reads its resident memory (`/proc/<pid>/status`) before and after each
//!   kind, then times `--messages` messages' fan-out to a room of `--room`
//!   members (from the send to each member's receipt). Prints `key value`
//!   lines, also written to `--out`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use clap::Parser;
use futures::{SinkExt, StreamExt};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

#[derive(Parser)]
enum Command {
    /// The native WebSocket and SSE server.
    NativeServer {
        /// Where to listen.
        #[arg(long)]
        listen: SocketAddr,
    },
    /// Holds connections and times a room's fan-out.
    Load(Load),
}

#[derive(Parser)]
struct Load {
    /// The server's address.
    #[arg(long)]
    addr: SocketAddr,
    /// The server's process, whose memory is read.
    #[arg(long)]
    pid: u32,
    /// WebSocket path.
    #[arg(long, default_value = "/ws/bench")]
    ws_path: String,
    /// SSE path (a stream that stays open).
    #[arg(long, default_value = "/s/ticks?n=0&every_ms=10000")]
    sse_path: String,
    /// WebSocket connections held.
    #[arg(long, default_value_t = 10_000)]
    ws: usize,
    /// SSE connections held.
    #[arg(long, default_value_t = 10_000)]
    sse: usize,
    /// Members of the room (among the WebSocket connections).
    #[arg(long, default_value_t = 1_000)]
    room: usize,
    /// Messages sent to the room (the first 3 warm up, not counted).
    #[arg(long, default_value_t = 50)]
    messages: usize,
    /// Connections being opened at once.
    #[arg(long, default_value_t = 200)]
    opening: usize,
    /// Where the `key value` lines go.
    #[arg(long)]
    out: std::path::PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Command::parse() {
        Command::NativeServer { listen } => native_server(listen).await,
        Command::Load(load) => run_load(load).await,
    }
}

// ------------------------------------------------------------------ load

type Client = WebSocketStream<TcpStream>;

/// Resident memory of `pid`, KiB.
fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS")
}

async fn open_ws(addr: SocketAddr, path: &str) -> anyhow::Result<Client> {
    let request = format!("ws://{addr}{path}").into_client_request()?;
    let tcp = TcpStream::connect(addr).await?;
    let (client, _) = tokio_tungstenite::client_async(request, tcp).await?;
    Ok(client)
}

/// The next text message.
async fn next_text(client: &mut Client) -> anyhow::Result<String> {
    loop {
        match tokio::time::timeout(Duration::from_secs(30), client.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => return Ok(t.to_string()),
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            other => anyhow::bail!("expected a text message, got {other:?}"),
        }
    }
}

async fn run_load(load: Load) -> anyhow::Result<()> {
    let mut report: Vec<(String, String)> = Vec::new();
    let mut put = |k: &str, v: String| {
        println!("{k} {v}");
        report.push((k.to_string(), v));
    };
    let base = rss_kib(load.pid)?;
    put("rss_baseline_kib", base.to_string());

    // WebSocket connections; the first `room` join the room. Every
    // connection's frames are read by a task (answering pings); members
    // report what they receive.
    let (received_tx, mut received) = mpsc::unbounded_channel::<(usize, Instant)>();
    let opening = Arc::new(Semaphore::new(load.opening));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(load.ws);
    for i in 0..load.ws {
        let permit = opening.clone().acquire_owned().await?;
        let (addr, path, member) = (load.addr, load.ws_path.clone(), i < load.room);
        let received = received_tx.clone();
        tasks.push(tokio::spawn(async move {
            let mut client = open_ws(addr, &path).await?;
            if member {
                client.send(Message::text("join bench")).await?;
                let answer = next_text(&mut client).await?;
                anyhow::ensure!(answer == "joined bench 204", "join answered {answer}");
            }
            drop(permit);
            let (_sink, mut stream) = client.split();
            while let Some(frame) = stream.next().await {
                if let Ok(Message::Text(text)) = frame {
                    if let Ok(seq) = text.parse::<usize>() {
                        let _ = received.send((seq, Instant::now()));
                    }
                }
            }
            Ok::<_, anyhow::Error>(())
        }));
        if (i + 1) % 1000 == 0 {
            eprintln!("  {} WebSocket connections opened", i + 1);
        }
    }
    // All opened once every permit is back.
    let _all = opening.acquire_many(load.opening as u32).await?;
    let failed = tasks.iter().filter(|t| t.is_finished()).count();
    anyhow::ensure!(
        failed == 0,
        "{failed} WebSocket connections failed or closed"
    );
    put("ws_connections", load.ws.to_string());
    put(
        "ws_open_s",
        format!("{:.2}", started.elapsed().as_secs_f64()),
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let with_ws = rss_kib(load.pid)?;
    put("ws_rss_kib_per_1000", per_1000(base, with_ws, load.ws));

    // The fan-out: a sender outside the room sends each message, then waits
    // until every member has it.
    let mut sender = open_ws(load.addr, &load.ws_path).await?;
    let mut latencies = Vec::with_capacity(load.messages * load.room);
    for seq in 0..load.messages {
        let sent = Instant::now();
        sender
            .send(Message::text(format!("group bench {seq}")))
            .await?;
        let mut got = 0;
        while got < load.room {
            let (s, at) = tokio::time::timeout(Duration::from_secs(30), received.recv())
                .await
                .context("a member did not get a message within 30 s")?
                .context("the members' reports ended")?;
            if s == seq {
                got += 1;
                if seq >= 3 {
                    latencies.push(at.duration_since(sent));
                }
            }
        }
        let answer = next_text(&mut sender).await?;
        anyhow::ensure!(
            answer.starts_with("group 202"),
            "group send answered {answer}"
        );
    }
    latencies.sort();
    let pct = |p: f64| {
        let i = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1;
        format!("{:.2}", latencies[i].as_secs_f64() * 1000.0)
    };
    put("fanout_members", load.room.to_string());
    put(
        "fanout_messages",
        (load.messages.saturating_sub(3)).to_string(),
    );
    put("fanout_p50_ms", pct(0.50));
    put("fanout_p99_ms", pct(0.99));
    put("fanout_max_ms", pct(1.0));
    drop(sender);
    for task in &tasks {
        task.abort();
    }
    drop(tasks);
    // Let the server notice the closed connections.
    tokio::time::sleep(Duration::from_secs(3)).await;

    // SSE connections: a GET each, held once the headers arrived.
    let base = rss_kib(load.pid)?;
    let started = Instant::now();
    let mut streams = Vec::with_capacity(load.sse);
    let mut opening = futures::stream::iter(0..load.sse)
        .map(|_| open_sse(load.addr, &load.sse_path))
        .buffer_unordered(load.opening);
    while let Some(stream) = opening.next().await {
        streams.push(stream?);
        if streams.len() % 1000 == 0 {
            eprintln!("  {} SSE streams opened", streams.len());
        }
    }
    put("sse_connections", load.sse.to_string());
    put(
        "sse_open_s",
        format!("{:.2}", started.elapsed().as_secs_f64()),
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let with_sse = rss_kib(load.pid)?;
    put("sse_rss_kib_per_1000", per_1000(base, with_sse, load.sse));
    drop(streams);

    let text: String = report.iter().map(|(k, v)| format!("{k} {v}\n")).collect();
    std::fs::write(&load.out, text)?;
    Ok(())
}

/// KiB of resident memory per 1,000 of `n` connections, from before and
/// after they were opened.
fn per_1000(before: u64, after: u64, n: usize) -> String {
    format!(
        "{:.0}",
        after.saturating_sub(before) as f64 * 1000.0 / n.max(1) as f64
    )
}

/// A GET of an event stream, once its headers (and 200) arrived.
async fn open_sse(addr: SocketAddr, path: &str) -> anyhow::Result<TcpStream> {
    let mut tcp = TcpStream::connect(addr).await?;
    tcp.write_all(
        format!("GET {path} HTTP/1.1\r\nhost: bench\r\naccept: text/event-stream\r\n\r\n")
            .as_bytes(),
    )
    .await?;
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tcp.read(&mut buf).await?;
        anyhow::ensure!(n > 0, "the server closed the stream before its headers");
        head.extend_from_slice(&buf[..n]);
    }
    anyhow::ensure!(
        head.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    Ok(tcp)
}

// ------------------------------------------------------------------ native

/// Group name → the members' queues.
type Groups = Arc<Mutex<HashMap<String, Vec<mpsc::Sender<Message>>>>>;

async fn native_server(listen: SocketAddr) -> anyhow::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    println!("native realtime server on {listen}");
    let groups: Groups = Arc::default();
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let groups = groups.clone();
        let service = hyper::service::service_fn(move |req| serve(req, groups.clone()));
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades()
                .await;
        });
    }
}

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

async fn serve(
    mut req: http::Request<Incoming>,
    groups: Groups,
) -> Result<http::Response<Body>, Infallible> {
    if let Some(key) = req.headers().get(http::header::SEC_WEBSOCKET_KEY).cloned() {
        let upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(upgraded) = upgrade.await {
                let config = WebSocketConfig::default().read_buffer_size(4096);
                let ws = WebSocketStream::from_raw_socket(
                    TokioIo::new(upgraded),
                    Role::Server,
                    Some(config),
                )
                .await;
                connection(ws, groups).await;
            }
        });
        let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
        let response = http::Response::builder()
            .status(101)
            .header("upgrade", "websocket")
            .header("connection", "upgrade")
            .header("sec-websocket-accept", accept)
            .body(http_body_util::Empty::new().boxed())
            .expect("valid parts");
        return Ok(response);
    }
    // An event stream: a tick every 10 s, without end.
    let ticks = futures::stream::unfold(0u64, |i| async move {
        if i > 0 {
            tokio::time::sleep(Duration::from_secs(10)).await;
        }
        let event = format!("id: {i}\ndata: tick {i}\n\n");
        Some((Ok::<_, Infallible>(Frame::data(Bytes::from(event))), i + 1))
    });
    Ok(http::Response::builder()
        .header("content-type", "text/event-stream")
        .body(BodyExt::boxed(StreamBody::new(ticks)))
        .expect("valid parts"))
}

async fn connection<S>(ws: WebSocketStream<S>, groups: Groups)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sink, mut stream) = ws.split();
    let (tx, mut rx) = mpsc::channel::<Message>(256);
    let writer = tokio::spawn(async move {
        while let Some(message) = rx.recv().await {
            if sink.send(message).await.is_err() {
                break;
            }
        }
    });
    while let Some(Ok(frame)) = stream.next().await {
        let Message::Text(text) = frame else {
            continue;
        };
        let mut words = text.splitn(3, ' ');
        let (command, group, rest) = (
            words.next().unwrap_or(""),
            words.next().unwrap_or(""),
            words.next().unwrap_or(""),
        );
        let answer = match command {
            "join" => {
                groups
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .entry(group.to_string())
                    .or_default()
                    .push(tx.clone());
                format!("joined {group} 204")
            }
            "group" => {
                let message = Message::text(rest.to_string());
                let mut groups = groups.lock().unwrap_or_else(|p| p.into_inner());
                let members = groups.entry(group.to_string()).or_default();
                members.retain(|m| !m.is_closed());
                for member in members.iter() {
                    let _ = member.try_send(message.clone());
                }
                format!("group 202 {{\"delivered_here\":{}}}", members.len())
            }
            _ => format!("echo: {text}"),
        };
        if tx.send(Message::text(answer)).await.is_err() {
            break;
        }
    }
    drop(tx);
    let _ = writer.await;
}
