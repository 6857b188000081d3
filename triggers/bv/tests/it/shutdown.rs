//! SIGTERM after each kind of fault (a timeout, a trap, memory exhausted, a
//! stream left open, an outbound call that never answers): the process ends
//! within the drain timeout, with 0 when every request in flight finished
//! and 2 when the drain timeout cut some, and its log says which.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::*;

const DRAINED: &str = "stopped: every in-flight request finished";
const CUT: &str = "the drain timeout cut";

/// `bv up` with a drain timeout of `seconds` (`BV_DRAIN_TIMEOUT`, the same
/// as `--drain-timeout`).
fn drain_timeout(seconds: u64) -> Spawn {
    Spawn {
        env: vec![("BV_DRAIN_TIMEOUT".into(), seconds.to_string())],
        ..Default::default()
    }
}

/// Writes the start of a request on a connection of its own and leaves it
/// open.
async fn start_request(addr: SocketAddr, head: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    stream
}

/// Whatever the server sent before closing the connection (within 10 s).
async fn read_to_close(mut stream: TcpStream) -> String {
    let mut received = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut received)).await;
    String::from_utf8_lossy(&received).into_owned()
}

/// A TCP server that accepts connections and never answers; the returned
/// receiver yields once per accepted connection.
async fn silent_server() -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
            let _ = tx.send(());
        }
    });
    (addr, rx)
}

#[track_caller]
fn assert_drained(app: &TestApp, code: Option<i32>, took: Duration, within: Duration) {
    assert_eq!(code, Some(0), "{}", app.log());
    assert!(took < within, "stopping took {took:?}:\n{}", app.log());
    assert!(app.log().contains(DRAINED), "{}", app.log());
}

#[track_caller]
fn assert_cut(app: &TestApp, code: Option<i32>, took: Duration, drain: Duration) {
    assert_eq!(code, Some(2), "{}", app.log());
    assert!(
        took >= drain && took < drain + Duration::from_secs(4),
        "stopping took {took:?} with a drain timeout of {drain:?}:\n{}",
        app.log()
    );
    assert!(app.log().contains(CUT), "{}", app.log());
    assert!(!app.log().contains(DRAINED), "{}", app.log());
}

#[tokio::test]
async fn sigterm_after_a_request_timed_out_exits_zero_at_once() {
    let manifest = probe_app(
        "/p/...",
        "[component.probe.tool.bv]\nrequest_timeout_ms = 300\n",
    );
    // SIGTERM while the timed-out guest is still looping (its instance goes
    // a moment after the 504), and once its instance has been dropped.
    for (policy, wait) in [
        ("strict", Duration::ZERO),
        ("reuse", Duration::ZERO),
        ("strict", Duration::from_secs(1)),
    ] {
        let mut spawn = drain_timeout(20);
        spawn.args = vec!["--instance-policy".into(), policy.into()];
        let mut app = spawn_app_with(&manifest, spawn).await;
        let reply = app.get("/p/loop").await;
        assert_eq!(reply.status, 504, "{}", reply.text());
        tokio::time::sleep(wait).await;
        if !wait.is_zero() {
            wait_for_log(&app, "instance dropped: busy past the request timeout").await;
        }
        let (code, took) = app.terminate_within(Duration::from_secs(15)).await;
        assert_drained(&app, code, took, Duration::from_secs(5));
    }
}

#[tokio::test]
async fn sigterm_while_a_request_runs_into_its_timeout_exits_zero_after_the_504() {
    let manifest = probe_app(
        "/p/...",
        "[component.probe.tool.bv]\nrequest_timeout_ms = 1000\n",
    );
    for policy in ["strict", "reuse"] {
        let mut spawn = drain_timeout(20);
        spawn.args = vec!["--instance-policy".into(), policy.into()];
        let mut app = spawn_app_with(&manifest, spawn).await;
        let addr = app.addr;
        let looping = tokio::spawn(async move { request(addr, "GET", "/p/loop", &[], "").await });
        tokio::time::sleep(Duration::from_millis(500)).await;
        // The drain waits for the 504; the guest is still looping when it
        // ends.
        let sent = app.sigterm();
        assert_eq!(looping.await.unwrap().status, 504);
        let (code, took) = app.exit_within(sent, Duration::from_secs(15)).await;
        assert_drained(&app, code, took, Duration::from_secs(5));
    }
}

#[tokio::test]
async fn sigterm_after_a_trap_and_memory_exhausted_exits_zero_at_once() {
    let mut app = spawn_app_with(
        &probe_app(
            "/p/...",
            "[component.probe.tool.bv]\nmemory_limit_mb = 32\n",
        ),
        drain_timeout(20),
    )
    .await;
    assert_eq!(app.get("/p/panic").await.status, 500);
    assert_eq!(app.get("/p/alloc?mb=64").await.status, 500);
    let (code, took) = app.terminate_within(Duration::from_secs(15)).await;
    assert_drained(&app, code, took, Duration::from_secs(5));
}

#[tokio::test]
async fn sigterm_cuts_a_guest_looping_past_the_drain_timeout() {
    let mut app = spawn_app_with(
        &probe_app(
            "/p/...",
            "[component.probe.tool.bv]\nrequest_timeout_ms = 60000\n",
        ),
        drain_timeout(2),
    )
    .await;
    let stream = start_request(app.addr, "GET /p/loop HTTP/1.1\r\nhost: t\r\n\r\n").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (code, took) = app.terminate_within(Duration::from_secs(15)).await;
    assert_cut(&app, code, took, Duration::from_secs(2));
    assert!(app.log().contains("cut 1 connection(s)"), "{}", app.log());
    let answer = read_to_close(stream).await;
    assert!(!answer.contains("200"), "{answer}");
}

#[tokio::test]
async fn sigterm_waits_for_a_request_body_that_ends_within_the_drain_timeout() {
    let mut app = spawn_app_with(&probe_app("/p/...", ""), drain_timeout(10)).await;
    let mut stream = start_request(
        app.addr,
        "POST /p/count HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sent = app.sigterm();
    // The rest of the body comes after SIGTERM.
    tokio::time::sleep(Duration::from_millis(700)).await;
    stream.write_all(b"4\r\ndefg\r\n0\r\n\r\n").await.unwrap();
    let answer = read_to_close(stream).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // The body, "7", with a length or as one chunk.
    assert!(
        answer.ends_with("\r\n\r\n7") || answer.contains("\r\n\r\n1\r\n7\r\n"),
        "{answer}"
    );
    let (code, took) = app.exit_within(sent, Duration::from_secs(20)).await;
    assert_drained(&app, code, took, Duration::from_secs(5));
}

#[tokio::test]
async fn sigterm_cuts_a_request_body_left_open_at_the_drain_timeout() {
    let mut app = spawn_app_with(&probe_app("/p/...", ""), drain_timeout(2)).await;
    let stream = start_request(
        app.addr,
        "POST /p/count HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (code, took) = app.terminate_within(Duration::from_secs(15)).await;
    assert_cut(&app, code, took, Duration::from_secs(2));
    let answer = read_to_close(stream).await;
    assert!(!answer.contains("200"), "{answer}");
}

#[tokio::test]
async fn sigterm_after_an_outbound_call_hung_and_timed_out_exits_zero_at_once() {
    let (server, mut accepted) = silent_server().await;
    let mut app = spawn_app_with(
        &probe_app(
            "/p/...",
            &format!(
                "allowed_outbound_hosts = [\"http://{server}\"]\n\
                 [component.probe.tool.bv]\nrequest_timeout_ms = 300\n"
            ),
        ),
        drain_timeout(20),
    )
    .await;
    let reply = app.get(&format!("/p/fetch?url=http://{server}/")).await;
    assert_eq!(reply.status, 504, "{}", reply.text());
    accepted.recv().await.unwrap();
    let (code, took) = app.terminate_within(Duration::from_secs(15)).await;
    assert_drained(&app, code, took, Duration::from_secs(5));
}

#[tokio::test]
async fn sigterm_cuts_an_outbound_call_hung_past_the_drain_timeout() {
    let (server, mut accepted) = silent_server().await;
    let mut app = spawn_app_with(
        &probe_app(
            "/p/...",
            &format!(
                "allowed_outbound_hosts = [\"http://{server}\"]\n\
                 [component.probe.tool.bv]\nrequest_timeout_ms = 60000\n"
            ),
        ),
        drain_timeout(2),
    )
    .await;
    let stream = start_request(
        app.addr,
        &format!("GET /p/fetch?url=http://{server}/ HTTP/1.1\r\nhost: t\r\n\r\n"),
    )
    .await;
    tokio::time::timeout(Duration::from_secs(10), accepted.recv())
        .await
        .expect("the component's outbound call")
        .unwrap();
    let (code, took) = app.terminate_within(Duration::from_secs(15)).await;
    assert_cut(&app, code, took, Duration::from_secs(2));
    let answer = read_to_close(stream).await;
    assert!(!answer.contains("200"), "{answer}");
}

#[tokio::test]
async fn while_draining_readyz_asks_to_retry_and_a_second_sigterm_stops_at_once() {
    let drain = Duration::from_secs(30);
    let mut app = spawn_app_with(
        &probe_app(
            "/p/...",
            "[component.probe.tool.bv]\nrequest_timeout_ms = 60000\n",
        ),
        drain_timeout(drain.as_secs()),
    )
    .await;
    assert_eq!(app.admin_get("/readyz").await.status, 200);
    let stream = start_request(app.addr, "GET /p/loop HTTP/1.1\r\nhost: t\r\n\r\n").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    app.sigterm();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ready = app.admin_get("/readyz").await;
    assert_eq!(ready.status, 503, "{}", app.log());
    assert_eq!(
        ready
            .headers
            .get("retry-after")
            .map(|v| v.to_str().unwrap()),
        Some("1"),
        "a 503 says when to ask again"
    );
    // The looping request would hold the drain for its whole 30 s.
    let second = app.sigterm();
    let (code, took) = app.exit_within(second, Duration::from_secs(10)).await;
    assert_eq!(code, Some(2), "{}", app.log());
    assert!(
        took < Duration::from_secs(5),
        "took {took:?}:\n{}",
        app.log()
    );
    assert!(app.log().contains("second signal"), "{}", app.log());
    assert!(!app.log().contains(DRAINED), "{}", app.log());
    let answer = read_to_close(stream).await;
    assert!(!answer.contains("200"), "{answer}");
}
