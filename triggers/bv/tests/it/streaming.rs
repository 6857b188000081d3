//! Streamed responses (Server-Sent Events and other long bodies) from the
//! `stream-probe` component: the request timeout ends at the headers, a
//! stream lives while it sends and is cut when it goes silent, a client
//! that leaves ends the component's work, a slow client holds the stream
//! back, and SIGTERM ends event streams cleanly.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::*;

/// `stream-probe` under `/s/...` with `settings` in its `tool.bv` table.
fn stream_app(settings: &str) -> String {
    format!(
        r#"spin_manifest_version = 2
[application]
name = "streams"

[[trigger.http]]
route = "/s/..."
component = "streams"

[component.streams]
source = "{{wasm:stream-probe}}"
[component.streams.tool.bv]
{settings}
"#
    )
}

/// Sends `GET path` on a connection of its own and leaves it open.
async fn open_stream(addr: SocketAddr, path: &str) -> TcpStream {
    open_stream_with(addr, path, &[]).await
}

/// Sends `GET path` with `headers` on a connection of its own and leaves it
/// open.
pub(crate) async fn open_stream_with(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> TcpStream {
    let mut head = format!("GET {path} HTTP/1.1\r\nhost: test\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    stream
}

/// What arrives on `stream` until `received` holds `needle`, the connection
/// closes or `limit` passes.
pub(crate) async fn read_until(
    stream: &mut TcpStream,
    needle: &str,
    limit: Duration,
) -> (String, bool) {
    let deadline = Instant::now() + limit;
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if String::from_utf8_lossy(&received).contains(needle) {
            return (String::from_utf8_lossy(&received).into_owned(), false);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                return (String::from_utf8_lossy(&received).into_owned(), true)
            }
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
            Err(_) => return (String::from_utf8_lossy(&received).into_owned(), false),
        }
    }
}

/// The chunked encoding's last chunk: the body ended cleanly.
pub(crate) const CLEAN_END: &str = "\r\n0\r\n\r\n";

#[tokio::test]
async fn a_stream_that_keeps_sending_outlives_the_request_timeout() {
    let app = spawn_app(&stream_app("request_timeout_ms = 300")).await;
    let mut stream = open_stream(app.addr, "/s/ticks?n=10&every_ms=100").await;
    let (received, _) = read_until(&mut stream, CLEAN_END, Duration::from_secs(10)).await;
    assert!(received.starts_with("HTTP/1.1 200"), "{received}");
    assert!(
        received.contains("content-type: text/event-stream"),
        "{received}"
    );
    for i in 1..=10 {
        assert!(
            received.contains(&format!("data: tick {i}\n")),
            "tick {i} missing from\n{received}\nbv log:\n{}",
            app.log()
        );
    }
    assert!(received.ends_with(CLEAN_END), "{received}");
    wait_for_log(&app, "ticks: done after 10 events").await;
}

#[tokio::test]
async fn a_stream_that_sends_nothing_for_the_idle_timeout_is_cut_off() {
    let app = spawn_app(&stream_app("stream_idle_timeout_ms = 500")).await;
    let started = Instant::now();
    let mut stream = open_stream(app.addr, "/s/silent?after=2").await;
    let (received, closed) = read_until(&mut stream, CLEAN_END, Duration::from_secs(10)).await;
    let took = started.elapsed();
    assert!(received.contains("data: tick 2\n"), "{received}");
    assert!(closed, "the silent stream was not closed:\n{received}");
    assert!(
        !received.contains(CLEAN_END),
        "a stream cut off must not look complete:\n{received}"
    );
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_secs(5),
        "cut off after {took:?} (idle timeout 500 ms)"
    );
    wait_for_log(&app, "response body sent nothing for").await;
    // The component still serves.
    let mut next = open_stream(app.addr, "/s/ticks?n=1").await;
    let (received, _) = read_until(&mut next, CLEAN_END, Duration::from_secs(5)).await;
    assert!(received.contains("data: tick 1\n"), "{received}");
}

#[tokio::test]
async fn a_client_that_leaves_ends_the_components_work() {
    let app = spawn_app(&stream_app("")).await;
    let mut stream = open_stream(app.addr, "/s/ticks?n=0&every_ms=50").await;
    let (received, _) = read_until(&mut stream, "data: tick 3\n", Duration::from_secs(5)).await;
    assert!(received.contains("data: tick 3\n"), "{received}");
    let left = Instant::now();
    drop(stream);
    wait_for_log(&app, "ticks: client left after").await;
    assert!(
        left.elapsed() < Duration::from_secs(2),
        "the component noticed after {:?}",
        left.elapsed()
    );
}

/// The highest `flood: N chunks queued` in the log.
fn flood_queued(log: &str) -> u64 {
    log.lines()
        .filter_map(|l| l.split("flood: ").nth(1))
        .filter_map(|rest| rest.split(' ').next()?.parse().ok())
        .max()
        .unwrap_or(0)
}

#[tokio::test]
async fn a_slow_client_holds_the_stream_back_instead_of_filling_memory() {
    let app = spawn_app(&stream_app("")).await;
    let mut stream = open_stream(app.addr, "/s/flood?kb=16").await;
    let (head, _) = read_until(&mut stream, "\r\n\r\n", Duration::from_secs(5)).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    // The client reads nothing: the component fills what buffers there
    // are (its own channel, the host's pipe, the sockets), then waits.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let stalled = flood_queued(&app.log());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let still = flood_queued(&app.log());
    assert_eq!(
        stalled, still,
        "the component kept writing while nobody read"
    );
    assert!(
        stalled < 4096,
        "{stalled} chunks of 16 KiB buffered for a client that reads nothing"
    );
    // Reading lets it go on.
    let mut buf = vec![0u8; 1 << 20];
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        let _ = tokio::time::timeout(Duration::from_millis(100), stream.read(&mut buf)).await;
    }
    assert!(
        flood_queued(&app.log()) > still,
        "the stream did not go on once the client read"
    );
    drop(stream);
    wait_for_log(&app, "flood: client left after").await;
}

#[tokio::test]
async fn sigterm_ends_event_streams_cleanly_and_promptly() {
    let mut app = spawn_app_with(
        &stream_app(""),
        Spawn {
            env: vec![("BV_DRAIN_TIMEOUT".into(), "20".into())],
            ..Default::default()
        },
    )
    .await;
    let mut stream = open_stream(app.addr, "/s/ticks?n=0&every_ms=100").await;
    let (received, _) = read_until(&mut stream, "data: tick 2\n", Duration::from_secs(5)).await;
    assert!(received.contains("data: tick 2\n"), "{received}");
    let sent = app.sigterm();
    let (rest, _) = read_until(&mut stream, "0\r\n\r\n", Duration::from_secs(5)).await;
    assert!(
        format!("{received}{rest}").ends_with(CLEAN_END),
        "the event stream did not end cleanly on SIGTERM:\n{rest}\nbv log:\n{}",
        app.log()
    );
    // A client closes its side at the end of the stream, then reconnects.
    drop(stream);
    let (code, took) = app.exit_within(sent, Duration::from_secs(10)).await;
    assert_eq!(code, Some(0), "{}", app.log());
    assert!(
        took < Duration::from_secs(5),
        "stopping took {took:?} with an event stream open:\n{}",
        app.log()
    );
}
