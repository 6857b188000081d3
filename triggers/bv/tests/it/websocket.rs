//! WebSocket at the edge, with the `ws-probe` component: the runtime holds
//! the connections, calls the component for connect, message and
//! disconnect, and carries what components send to connections and groups,
//! across processes through the real Redis.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::harness::*;

pub(crate) type Client = WebSocketStream<TcpStream>;

/// `ws-probe` on `/ws/...` with `[component.probe.tool.bv.websocket]`
/// holding `websocket`.
fn ws_app(name: &str, websocket: &str) -> String {
    format!(
        r#"spin_manifest_version = 2
[application]
name = "{name}"

[[trigger.http]]
route = "/ws/..."
component = "probe"

[component.probe]
source = "{{wasm:ws-probe}}"
allowed_outbound_hosts = ["http://bv-websocket.spin.internal"]
[component.probe.tool.bv.websocket]
{websocket}
"#
    )
}

/// Opens a WebSocket to `path` on `addr` with `headers`; the client and the
/// handshake's answer.
pub(crate) async fn open_at(
    addr: std::net::SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<(Client, http::Response<Option<Vec<u8>>>), tokio_tungstenite::tungstenite::Error> {
    let mut request = format!("ws://{addr}{path}").into_client_request().unwrap();
    for (name, value) in headers {
        request.headers_mut().insert(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            http::HeaderValue::from_str(value).unwrap(),
        );
    }
    let tcp = TcpStream::connect(addr).await.unwrap();
    tokio_tungstenite::client_async(request, tcp).await
}

async fn open(
    app: &TestApp,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<(Client, http::Response<Option<Vec<u8>>>), tokio_tungstenite::tungstenite::Error> {
    open_at(app.addr, path, headers).await
}

async fn connect(app: &TestApp, path: &str) -> Client {
    open(app, path, &[]).await.expect("handshake").0
}

/// The next text message, within 5 s.
async fn next_text(client: &mut Client) -> String {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), client.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => return text.to_string(),
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            other => panic!("expected a text message, got {other:?}"),
        }
    }
}

/// Sends `text` and gives the answer.
async fn ask(client: &mut Client, text: &str) -> String {
    client.send(Message::text(text)).await.unwrap();
    next_text(client).await
}

/// The next JSON message, within 10 s (the product's WebSocket tests).
pub(crate) async fn next_json(client: &mut Client) -> serde_json::Value {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), client.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => return serde_json::from_str(&text).unwrap(),
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            other => panic!("expected a message, got {other:?}"),
        }
    }
}

/// Sends `command` as JSON and gives the next JSON message.
pub(crate) async fn ask_json(client: &mut Client, command: serde_json::Value) -> serde_json::Value {
    client
        .send(Message::text(command.to_string()))
        .await
        .unwrap();
    next_json(client).await
}

/// The close frame's code the server sends next, within 5 s.
async fn close_code(client: &mut Client) -> Option<CloseCode> {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), client.next()).await {
            Ok(Some(Ok(Message::Close(frame)))) => return frame.map(|f| f.code),
            Ok(Some(Ok(_))) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

/// Whether a text message arrives within `wait`.
async fn silent_for(client: &mut Client, wait: Duration) -> bool {
    loop {
        match tokio::time::timeout(wait, client.next()).await {
            Err(_) => return true,
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            Ok(_) => return false,
        }
    }
}

fn connection_id(whoami: &str) -> String {
    whoami.split(' ').next().unwrap().to_string()
}

#[tokio::test]
async fn connect_message_and_disconnect_each_call_the_component() {
    let app = spawn_app(&ws_app("ws-events", "")).await;

    let (mut client, handshake) = open(
        &app,
        "/ws/chat?as=alice",
        &[
            ("authorization", "Bearer secret"),
            ("sec-websocket-protocol", "other, probe.v1"),
        ],
    )
    .await
    .expect("accepted");
    assert_eq!(handshake.status(), 101);
    assert_eq!(handshake.headers()["sec-websocket-protocol"], "probe.v1");

    // The principal the connect answer named comes with every message;
    // the handshake's credentials do not.
    let whoami = ask(&mut client, "whoami").await;
    let id = connection_id(&whoami);
    assert_eq!(whoami, format!("{id} alice auth=no"));
    wait_for_log(&app, &format!("connect {id}")).await;
    assert_eq!(ask(&mut client, "hello there").await, "echo: hello there");
    client
        .send(Message::binary(vec![0u8, 159, 146, 150]))
        .await
        .unwrap();
    match tokio::time::timeout(Duration::from_secs(5), client.next()).await {
        Ok(Some(Ok(Message::Binary(data)))) => assert_eq!(&data[..], &[0u8, 159, 146, 150]),
        other => panic!("expected the binary echo, got {other:?}"),
    }

    client.close(None).await.unwrap();
    wait_for_log(&app, &format!("disconnect {id} code=1005")).await;

    // A plain request to the same route cannot pose as an event.
    let plain = app.get("/ws/chat").await;
    assert_eq!(plain.text(), "plain");
    let forged = request(
        app.addr,
        "GET",
        "/ws/chat",
        &[
            ("bv-websocket-event", "connect"),
            ("bv-websocket-principal", "admin"),
        ],
        bytes::Bytes::new(),
    )
    .await;
    assert_eq!(forged.text(), "plain");

    let metrics = app.admin_get("/metrics").await.text();
    assert!(
        metrics.contains("bv_websocket_messages_total{component=\"probe\",direction=\"in\"} 3"),
        "{metrics}"
    );
    assert!(metrics.contains("bv_websocket_connections{component=\"probe\"} 0"));
}

#[tokio::test]
async fn a_refused_or_malformed_handshake_gets_an_answer_and_leaves_nothing_open() {
    let app = spawn_app(&ws_app("ws-refused", "")).await;

    match open(&app, "/ws/x?refuse", &[]).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 403);
            assert_eq!(
                response.headers()["content-type"],
                "application/problem+json"
            );
            let body = String::from_utf8(response.body().clone().unwrap()).unwrap();
            assert!(body.contains("refused by ws-probe"), "{body}");
        }
        other => panic!("expected the component's 403, got {other:?}"),
    }
    wait_for_log(&app, "refused").await;

    let bad = request(
        app.addr,
        "GET",
        "/ws/x",
        &[
            ("connection", "upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("sec-websocket-version", "8"),
        ],
        bytes::Bytes::new(),
    )
    .await;
    assert_eq!(bad.status, 400);
    assert!(
        bad.text().contains("Sec-WebSocket-Version `8`"),
        "{}",
        bad.text()
    );

    let metrics = app.admin_get("/metrics").await.text();
    assert!(
        !metrics.contains("bv_websocket_connections{component=\"probe\"} 1"),
        "{metrics}"
    );
    assert!(!app.log().contains("disconnect"), "{}", app.log());
}

#[tokio::test]
async fn components_send_to_connections_and_groups_and_close_them() {
    let app = spawn_app(&ws_app("ws-groups", "max_message_bytes = 1024")).await;
    let mut alice = connect(&app, "/ws/room?as=alice").await;
    let mut bob = connect(&app, "/ws/room?as=bob").await;
    let bob_id = connection_id(&ask(&mut bob, "whoami").await);

    assert_eq!(ask(&mut bob, "join room-1").await, "joined room-1 204");
    assert_eq!(
        ask(&mut alice, "group room-1 hi all").await,
        "group 202 {\"delivered_here\":1}"
    );
    assert_eq!(next_text(&mut bob).await, "hi all");
    assert_eq!(
        ask(&mut alice, &format!("to {bob_id} just you")).await,
        "to 202"
    );
    assert_eq!(next_text(&mut bob).await, "just you");
    // A connection nobody holds, and a group name the interface refuses.
    let gone = format!("{}-999999", bob_id.split('-').next().unwrap());
    assert_eq!(ask(&mut alice, &format!("to {gone} x")).await, "to 404");
    assert!(ask(&mut alice, "group bad%20name x")
        .await
        .starts_with("group 400"));

    assert_eq!(ask(&mut bob, "leave room-1").await, "left room-1 204");
    ask(&mut alice, "group room-1 anyone?").await;
    assert!(silent_for(&mut bob, Duration::from_millis(300)).await);

    // Too big a message closes with 1009, and the component hears of it.
    alice.send(Message::text("x".repeat(2000))).await.unwrap();
    assert_eq!(close_code(&mut alice).await, Some(CloseCode::Size));
    wait_for_log(&app, "code=1009").await;

    // A component closes a connection with its own code.
    bob.send(Message::text("close 4001")).await.unwrap();
    assert_eq!(close_code(&mut bob).await, Some(CloseCode::from(4001)));
    wait_for_log(&app, &format!("disconnect {bob_id} code=4001")).await;
}

#[tokio::test]
async fn sends_reach_connections_held_by_another_process_through_redis() {
    let name = format!("ws-fanout-{}", std::process::id());
    let manifest = ws_app(&name, "redis = \"redis://127.0.0.1:6379\"");
    let mut first = spawn_app(&manifest).await;
    let second = spawn_app(&manifest).await;

    let mut alice = connect(&first, "/ws/room?as=alice").await;
    let alice_id = connection_id(&ask(&mut alice, "whoami").await);
    assert_eq!(ask(&mut alice, "join lobby").await, "joined lobby 204");
    let mut bob = connect(&second, "/ws/room?as=bob").await;
    assert_eq!(ask(&mut bob, "join lobby").await, "joined lobby 204");

    // Bob's process holds Bob only; the group message reaches Alice too
    // (Bob, a member, gets it before the answer to his send).
    assert_eq!(ask(&mut bob, "group lobby from bob").await, "from bob");
    assert_eq!(
        next_text(&mut bob).await,
        "group 202 {\"delivered_here\":1}"
    );
    assert_eq!(next_text(&mut alice).await, "from bob");
    assert_eq!(
        ask(&mut bob, &format!("to {alice_id} psst")).await,
        "to 202"
    );
    assert_eq!(next_text(&mut alice).await, "psst");

    // Alice's process dies: her connection is gone for everyone.
    first.kill();
    assert_eq!(
        ask(&mut bob, &format!("to {alice_id} hello?")).await,
        "to 404"
    );
    // Nor does another application's traffic cross over.
    let other = spawn_app(&ws_app(
        &format!("{name}-other"),
        "redis = \"redis://127.0.0.1:6379\"",
    ))
    .await;
    let mut carol = connect(&other, "/ws/room").await;
    ask(&mut carol, "group lobby not for you").await;
    assert!(silent_for(&mut bob, Duration::from_millis(300)).await);
}

#[tokio::test]
async fn sigterm_closes_connections_with_going_away_after_their_disconnect() {
    let mut app = spawn_app_with(
        &ws_app("ws-drain", ""),
        Spawn {
            env: vec![("BV_DRAIN_TIMEOUT".into(), "20".into())],
            ..Spawn::default()
        },
    )
    .await;
    let mut client = connect(&app, "/ws/live").await;
    let id = connection_id(&ask(&mut client, "whoami").await);
    let sent = app.sigterm();
    assert_eq!(close_code(&mut client).await, Some(CloseCode::Away));
    let (code, took) = app.exit_within(sent, Duration::from_secs(10)).await;
    assert_eq!(code, Some(0), "{}", app.log());
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert!(
        app.log().contains(&format!("disconnect {id} code=1001")),
        "{}",
        app.log()
    );
}

#[tokio::test]
async fn a_silent_client_is_closed_after_two_ping_intervals() {
    let app = spawn_app(&ws_app("ws-idle", "ping_interval_ms = 200")).await;
    let mut client = connect(&app, "/ws/idle").await;
    let id = connection_id(&ask(&mut client, "whoami").await);
    // Not reading: the pings go unanswered.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut pings = 0;
    let code = loop {
        match tokio::time::timeout(Duration::from_secs(5), client.next()).await {
            Ok(Some(Ok(Message::Ping(_)))) => pings += 1,
            Ok(Some(Ok(Message::Close(frame)))) => break frame.map(|f| f.code),
            other => panic!("expected pings then a close, got {other:?}"),
        }
    };
    assert!(pings >= 1, "no ping came first");
    assert_eq!(code, Some(CloseCode::Away));
    wait_for_log(&app, &format!("disconnect {id} code=1001")).await;

    // A client that reads (and so answers the pings) stays open.
    let mut awake = connect(&app, "/ws/idle").await;
    let deadline = std::time::Instant::now() + Duration::from_millis(1500);
    while std::time::Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_millis(100), awake.next()).await {
            Err(_) | Ok(Some(Ok(Message::Ping(_)))) => {}
            other => panic!("an answering client was closed: {other:?}"),
        }
    }
    assert_eq!(ask(&mut awake, "still here").await, "echo: still here");
}

#[tokio::test]
async fn a_client_that_stops_reading_is_closed_while_the_others_are_served() {
    let app = spawn_app(&ws_app("ws-slow", "")).await;
    let mut sender = connect(&app, "/ws/room").await;
    let mut slow = connect(&app, "/ws/room").await;
    let mut reader = connect(&app, "/ws/room").await;
    let slow_id = connection_id(&ask(&mut slow, "whoami").await);
    assert_eq!(ask(&mut slow, "join flood").await, "joined flood 204");
    assert_eq!(ask(&mut reader, "join flood").await, "joined flood 204");
    let reading = tokio::spawn(async move {
        let mut got = 0usize;
        while let Ok(Some(Ok(message))) =
            tokio::time::timeout(Duration::from_secs(5), reader.next()).await
        {
            if let Message::Text(text) = message {
                if text.len() > 1000 {
                    got += 1;
                }
            }
        }
        got
    });
    // The slow member reads nothing from here on: its socket fills, then
    // its queue of 256, and it is closed; the sender and the reading
    // member go on.
    let chunk = "x".repeat(60 * 1024);
    let mut sent = 0;
    while sent < 600
        && !app
            .log()
            .contains(&format!("disconnect {slow_id} code=1008"))
    {
        let answer = ask(&mut sender, &format!("group flood {chunk}")).await;
        assert!(answer.starts_with("group 202"), "{answer}");
        sent += 1;
    }
    wait_for_log(&app, &format!("disconnect {slow_id}")).await;
    assert!(app.log().contains("too slow"), "{}", app.log());
    let got = reading.await.unwrap();
    assert_eq!(got, sent, "the reading member missed messages");
    let metrics = app.admin_get("/metrics").await.text();
    assert!(
        metrics.contains("bv_websocket_slow_clients_closed_total{component=\"probe\"} 1"),
        "{metrics}"
    );
}

/// `bv ws URL [args]` with `stdin`: its exit code, stdout and stderr.
async fn bv_ws(url: String, args: &[&str], stdin: &'static str) -> (Option<i32>, String, String) {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_bv"))
            .arg("ws")
            .arg(&url)
            .args(&args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn bv_ws_sends_stdin_lines_and_prints_what_comes_back() {
    let app = spawn_app(&ws_app("ws-cli", "")).await;
    let url = |path: &str| format!("ws://{}{path}", app.addr);

    // Each stdin line is a message; each answer a line; it closes once
    // stdin ended and nothing more came.
    let (code, out, err) = bv_ws(
        url("/ws/cli?as=alice"),
        &["--linger-ms", "300"],
        "whoami\nhello\n",
    )
    .await;
    assert_eq!(code, Some(0), "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(lines[0].ends_with(" alice auth=no"), "{out}");
    assert_eq!(lines[1], "echo: hello");

    // --messages stops after that many, whatever stdin still holds.
    // (Headers go with the handshake only: the walkthrough's chat, whose
    // handshake needs the token, shows them arriving.)
    let (code, out, _) = bv_ws(
        url("/ws/cli"),
        &["-H", "authorization: Bearer x", "--messages", "1"],
        "whoami\nhello\n",
    )
    .await;
    assert_eq!(code, Some(0));
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(out.trim_end().ends_with(" - auth=no"), "{out}");

    // A refused handshake: exit 1, the status on stderr, the problem on
    // stdout.
    let (code, out, err) = bv_ws(url("/ws/cli?refuse"), &[], "").await;
    assert_eq!(code, Some(1));
    assert!(err.contains("403"), "{err}");
    assert!(out.contains("refused by ws-probe"), "{out}");

    // Not a ws:// URL, and a bad header: clear errors.
    let (code, _, err) = bv_ws("wss://127.0.0.1:1/x".into(), &[], "").await;
    assert_ne!(code, Some(0));
    assert!(err.contains("only ws://"), "{err}");
    let (code, _, err) = bv_ws(url("/ws/cli"), &["-H", "no colon"], "").await;
    assert_ne!(code, Some(0));
    assert!(err.contains("expected `name: value`"), "{err}");
}
