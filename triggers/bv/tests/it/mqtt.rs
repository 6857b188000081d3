//! MQTT: outbound publishing (`spin:mqtt`) through the `mqtt-probe`
//! component, and the MQTT trigger with the `mqtt-handler` component, against
//! the local Mosquitto. Every test uses topics and client ids of its own.
//! (The broker-restart test is a binary of its own, `tests/mqtt_restart.rs`,
//! since it would disturb the tests running beside it.)

use std::time::{Duration, Instant};

use rumqttc::QoS;
use serde_json::json;

use crate::harness::{spawn_app, try_spawn, wait_for_log, Spawn, TestApp};

#[path = "mqtt_support.rs"]
pub mod support;

use support::{drop_session, handler_app, publish, unique, Subscriber, BROKER};

fn probe_app(address: &str, allowed: &str) -> String {
    format!(
        r#"spin_manifest_version = 2
[application]
name = "mqtt-probe-test"

[[trigger.http]]
route = "/..."
component = "mqtt-probe"

[component.mqtt-probe]
source = "{{wasm:mqtt-probe}}"
allowed_outbound_hosts = [{allowed}]

[component.mqtt-probe.variables]
mqtt_address = "{address}"
"#
    )
}

async fn publish_via(app: &TestApp, topic: &str, payload: &str, qos: u8) -> crate::harness::Reply {
    let body = json!({ "topic": topic, "payload": payload, "qos": qos }).to_string();
    app.send("POST", "/publish", body).await
}

#[tokio::test]
async fn outbound_publish_at_qos_0_1_and_2_reaches_a_subscriber() {
    let topic = unique("out");
    let sub = Subscriber::new(&topic).await;
    let app = spawn_app(&probe_app(BROKER, r#""mqtt://127.0.0.1:1883""#)).await;
    for (qos, payload) in [
        (0, "at-most-once"),
        (1, "at-least-once"),
        (2, "exactly-once"),
    ] {
        let reply = publish_via(&app, &topic, payload, qos).await;
        assert_eq!(reply.status, 200, "qos {qos}: {}", reply.text());
    }
    // QoS 1/2 returned after the broker's acknowledgement, so the broker has
    // them; QoS 0 arrives too on a healthy local connection.
    for payload in ["at-most-once", "at-least-once", "exactly-once"] {
        sub.wait_for(payload, 1, 10).await;
    }
    // Several publishes reuse one connection and each gets its own ack.
    let replies = futures::future::join_all((0..20).map(|i| {
        let (app, topic) = (&app, &topic);
        async move { publish_via(app, topic, &format!("burst-{i}"), 1).await }
    }))
    .await;
    for r in &replies {
        assert_eq!(r.status, 200, "{}", r.text());
    }
    for i in 0..20 {
        sub.wait_for(&format!("burst-{i}"), 1, 10).await;
    }
}

#[tokio::test]
async fn outbound_publish_is_denied_outside_allowed_outbound_hosts() {
    let topic = unique("denied");
    let sub = Subscriber::new(&topic).await;
    let app = spawn_app(&probe_app(BROKER, r#""mqtt://broker.example:1883""#)).await;
    let reply = publish_via(&app, &topic, "nope", 1).await;
    assert_eq!(reply.status, 500, "{}", reply.text());
    let body = reply.json();
    assert_eq!(body["stage"], "open");
    let error = body["error"].as_str().unwrap();
    assert!(error.contains("ConnectionFailed"), "{error}");
    assert!(error.contains("not permitted"), "{error}");
    wait_for_log(&app, "outbound MQTT connection denied").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(sub.messages().is_empty(), "{:?}", sub.messages());
}

#[tokio::test]
async fn outbound_publish_to_a_dead_broker_fails_fast() {
    // Nothing listens: refused at once.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let app = spawn_app(&probe_app(
        &format!("mqtt://127.0.0.1:{closed}"),
        r#""mqtt://127.0.0.1:*""#,
    ))
    .await;
    let started = Instant::now();
    let reply = publish_via(&app, "t", "x", 1).await;
    assert_eq!(reply.status, 500, "{}", reply.text());
    assert_eq!(reply.json()["stage"], "open");
    assert!(
        reply.text().contains("ConnectionFailed"),
        "{}",
        reply.text()
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    // Accepts TCP but never answers CONNECT: the connect timeout (5 s) ends it.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    let held = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((c, _)) = silent.accept().await {
            conns.push(c);
        }
    });
    let app = spawn_app(&probe_app(
        &format!("mqtt://127.0.0.1:{port}"),
        r#""mqtt://127.0.0.1:*""#,
    ))
    .await;
    let started = Instant::now();
    let reply = publish_via(&app, "t", "x", 1).await;
    let took = started.elapsed();
    held.abort();
    assert_eq!(reply.status, 500, "{}", reply.text());
    assert!(
        reply.text().contains("ConnectionFailed"),
        "{}",
        reply.text()
    );
    assert!(
        took >= Duration::from_secs(4) && took < Duration::from_secs(9),
        "{took:?}"
    );
}

async fn start_handler(topic: &str, qos: u8, client: &str) -> TestApp {
    let app = spawn_app(&handler_app(topic, qos, client)).await;
    wait_for_log(&app, "mqtt trigger: subscribed").await;
    app
}

#[tokio::test]
async fn trigger_handles_each_message_once_and_survives_failures() {
    let topic = unique("trig");
    let client = unique("trig-client");
    let seen = Subscriber::new(&format!("{topic}/seen")).await;
    let app = start_handler(&topic, 1, &client).await;

    for i in 0..10 {
        publish(&topic, &format!("m-{i}"), QoS::AtLeastOnce).await;
    }
    // A failing handler, then more messages: they are handled as usual.
    publish(&topic, "fail-1", QoS::AtLeastOnce).await;
    publish(&topic, "after-1", QoS::AtMostOnce).await;
    publish(&topic, "after-2", QoS::AtLeastOnce).await;
    for i in 0..10 {
        seen.wait_for(&format!("m-{i}"), 1, 10).await;
    }
    seen.wait_for("fail-1", 1, 10).await;
    seen.wait_for("after-1", 1, 10).await;
    seen.wait_for("after-2", 1, 10).await;
    // Exactly one delivery each.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for i in 0..10 {
        assert_eq!(seen.count(&format!("m-{i}")), 1, "{:?}", seen.messages());
    }
    assert_eq!(seen.count("after-2"), 1);
    assert_eq!(seen.messages().len(), 13, "{:?}", seen.messages());
    // Logged, with the running count of failures.
    wait_for_log(&app, "mqtt handler failed").await;
    let log = plain(&app.log());
    assert!(log.contains("refusing message `fail-1`"), "{log}");
    assert!(log.contains(r#""failures":1"#), "{log}");
    drop(app);
    drop_session(&client).await;
}

/// The `<topic>/uses` figures received so far.
fn uses(sub: &Subscriber) -> Vec<u32> {
    sub.messages().iter().map(|m| m.parse().unwrap()).collect()
}

async fn wait_for_count(sub: &Subscriber, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while sub.messages().len() < n {
        assert!(Instant::now() < deadline, "{:?}", sub.messages());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn batches_keep_their_instance_under_reuse_and_get_fresh_ones_under_strict() {
    for policy in ["reuse", "strict"] {
        let topic = unique("warm");
        let client = unique("warm-client");
        let used = Subscriber::new(&format!("{topic}/uses")).await;
        let manifest = format!(
            "{}\n[component.handler.tool.bv]\nmessage_batch = 8\ninstance_policy = \"{policy}\"\n",
            handler_app(&topic, 1, &client)
        );
        let app = spawn_app(&manifest).await;
        wait_for_log(&app, "mqtt trigger: subscribed").await;
        // 24 at once: batches of up to 8, one after the other.
        let payloads: Vec<String> = (0..24).map(|i| format!("m-{i}")).collect();
        futures::future::join_all(
            payloads
                .iter()
                .map(|p| publish(&topic, p, QoS::AtLeastOnce)),
        )
        .await;
        wait_for_count(&used, 24).await;
        let most = uses(&used).into_iter().max().unwrap();
        match policy {
            // One instance took every batch.
            "reuse" => assert_eq!(most, 24, "{:?}", used.messages()),
            // A fresh instance per batch.
            _ => assert!(most <= 8, "{:?}", used.messages()),
        }
        if policy == "reuse" {
            // A failed message drops its instance: the next starts afresh.
            publish(&topic, "fail-1", QoS::AtLeastOnce).await;
            wait_for_count(&used, 25).await;
            assert_eq!(uses(&used)[24], 25, "{:?}", used.messages());
            wait_for_log(&app, "mqtt handler failed").await;
            publish(&topic, "after", QoS::AtLeastOnce).await;
            wait_for_count(&used, 26).await;
            assert_eq!(uses(&used)[25], 1, "{:?}", used.messages());
        }
        drop(app);
        drop_session(&client).await;
    }
}

#[tokio::test]
async fn an_acknowledgement_is_not_sent_into_a_session_the_broker_lost() {
    // A broker restarted without its sessions numbers packets from 1 again.
    // `slow-1` is packet 1 of the first session; while its handler runs,
    // the broker restarts, and `fail-1` becomes packet 1 of the new one.
    // Acknowledging `slow-1` there would acknowledge `fail-1`, whose
    // handler then fails: the broker would never send it again.
    use crate::iot::{publish as publish_to, PrivateMosquitto};
    let mut broker = PrivateMosquitto::start(false);
    let topic = unique("lost-session");
    let client = unique("lost-session-client");
    let manifest = handler_app(&topic, 1, &client).replace(
        r#"allowed_outbound_hosts = ["mqtt://127.0.0.1:1883"]"#,
        r#"allowed_outbound_hosts = ["mqtt://127.0.0.1:*"]"#,
    );
    let address = broker.address();
    let spawn = || Spawn {
        env: vec![("SPIN_VARIABLE_BROKER".into(), address.clone())],
        ..Default::default()
    };
    let mut app = crate::harness::spawn_app_with(&manifest, spawn()).await;
    wait_for_log(&app, "mqtt trigger: subscribed").await;
    let port = address.rsplit(':').next().unwrap().parse().unwrap();
    let one = |payload: &str| vec![(topic.clone(), payload.as_bytes().to_vec())];
    publish_to(port, None, &one("slow-1")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    broker.restart();
    let deadline = Instant::now() + Duration::from_secs(5);
    while app.log().matches("mqtt trigger: subscribed").count() < 2 {
        assert!(Instant::now() < deadline, "{}", app.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    publish_to(port, None, &one("fail-1")).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !app.log().contains("refusing message `fail-1`") {
        assert!(Instant::now() < deadline, "{}", app.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        app.log()
            .contains("not acknowledging a message of a session the broker no longer has"),
        "{}",
        app.log()
    );
    // `fail-1` is still the broker's to send: a restart of bv gets it again.
    assert_eq!(app.terminate().await, Some(0));
    let app = crate::harness::spawn_app_with(&manifest, spawn()).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !app.log().contains("refusing message `fail-1`") {
        assert!(
            Instant::now() < deadline,
            "fail-1 was not redelivered:\n{}",
            app.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn trigger_redelivers_an_unacknowledged_message_after_a_restart() {
    // Mosquitto never resends an unacknowledged message on the connection
    // it was sent on; it resends it (DUP) when the same client id
    // reconnects to its persistent session. So: fail a message, stop bv,
    // start it again.
    let topic = unique("redeliver");
    let client = unique("redeliver-client");
    let seen = Subscriber::new(&format!("{topic}/seen")).await;

    let mut first = start_handler(&topic, 1, &client).await;
    publish(&topic, "fail-once", QoS::AtLeastOnce).await;
    seen.wait_for("fail-once", 1, 10).await;
    publish(&topic, "fine", QoS::AtLeastOnce).await;
    seen.wait_for("fine", 1, 10).await;
    // Not resent on the same connection.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(seen.count("fail-once"), 1, "{:?}", seen.messages());
    assert_eq!(first.terminate().await, Some(0), "{}", first.log());

    let second = start_handler(&topic, 1, &client).await;
    seen.wait_for("fail-once", 2, 10).await;
    // The acknowledged message is not redelivered.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(seen.count("fine"), 1, "{:?}", seen.messages());
    wait_for_log(&second, "mqtt handler failed").await;
    drop(second);
    drop_session(&client).await;
}

#[tokio::test]
async fn trigger_reconnects_to_get_failed_messages_redelivered() {
    // Past MAX_UNACKED (10) failed QoS 1 messages the trigger reconnects so
    // that the broker redelivers them instead of running out of in-flight
    // slots; the messages after them still get through.
    let topic = unique("nack");
    let client = unique("nack-client");
    let seen = Subscriber::new(&format!("{topic}/seen")).await;
    let app = start_handler(&topic, 1, &client).await;
    for i in 0..10 {
        publish(&topic, &format!("fail-{i}"), QoS::AtLeastOnce).await;
    }
    for i in 0..10 {
        seen.wait_for(&format!("fail-{i}"), 2, 15).await;
    }
    wait_for_log(&app, "reconnecting so the broker redelivers them").await;
    publish(&topic, "still-alive", QoS::AtLeastOnce).await;
    seen.wait_for("still-alive", 1, 15).await;
    drop(app);
    drop_session(&client).await;
}

#[tokio::test]
async fn trigger_manifest_errors_name_the_field() {
    // Trigger tables are read before anything listens: `bv` exits with the
    // error instead of starting.
    let topic = unique("bad");
    for (from, to, expected) in [
        (
            "qos = \"1\"",
            "qos = \"7\"",
            "trigger.mqtt[0].qos: 7 is not a QoS level",
        ),
        (
            "topic = ",
            "topik = ",
            "trigger.mqtt[0].topik: unknown field `topik`",
        ),
    ] {
        let manifest = handler_app(&topic, 1, "x").replace(from, to);
        let Err((code, log)) = try_spawn(&manifest, Spawn::default()).await else {
            panic!("bv started with `{to}`");
        };
        assert_eq!(code, Some(1), "{log}");
        assert!(
            plain(&log).contains(expected),
            "expected `{expected}` in:\n{log}"
        );
        assert!(
            !log.contains("Serving http://"),
            "bv listened before failing:\n{log}"
        );
    }
}

/// `log` without terminal colour codes.
fn plain(log: &str) -> String {
    let mut out = String::with_capacity(log.len());
    let mut chars = log.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
