//! The MQTT trigger reconnects and keeps delivering after Mosquitto
//! restarts.
//!
//! A test binary of its own because it takes Mosquitto down: `cargo test`
//! runs test binaries one after another, so the main suite (`tests/it`) is
//! not running meanwhile. Mosquitto is started again with the same command
//! as `infra/scripts/services.sh` (`mosquitto -d -c
//! /etc/mosquitto/mosquitto.conf`) from a guard, so it comes back even when
//! the test fails.

#[path = "it/harness.rs"]
#[allow(dead_code)]
mod harness;

// The harness logs every app for the suite's secret scan.
#[path = "it/suite_secrets.rs"]
#[allow(dead_code)]
mod suite_secrets;

#[path = "it/mqtt_support.rs"]
mod support;

use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use rumqttc::QoS;

use harness::*;
use support::*;

fn broker_up() -> bool {
    TcpStream::connect_timeout(
        &"127.0.0.1:1883".parse().unwrap(),
        Duration::from_millis(300),
    )
    .is_ok()
}

fn start_mosquitto() {
    if broker_up() {
        return;
    }
    let status = Command::new("mosquitto")
        .args(["-d", "-c", "/etc/mosquitto/mosquitto.conf"])
        .status()
        .expect("starting mosquitto");
    assert!(status.success(), "mosquitto -d failed");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !broker_up() {
        assert!(Instant::now() < deadline, "mosquitto did not come back");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The pid of the running Mosquitto.
fn mosquitto_pid() -> u32 {
    let from_file = std::fs::read_to_string("/run/mosquitto/mosquitto.pid")
        .ok()
        .and_then(|s| s.trim().parse().ok());
    from_file.unwrap_or_else(|| {
        let out = Command::new("pgrep")
            .args(["-x", "mosquitto"])
            .output()
            .expect("pgrep");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .and_then(|l| l.trim().parse().ok())
            .expect("no mosquitto process")
    })
}

/// Starts Mosquitto again (if it is down) when dropped.
struct RestartGuard;

impl Drop for RestartGuard {
    fn drop(&mut self) {
        start_mosquitto();
    }
}

#[tokio::test]
async fn trigger_delivers_again_after_the_broker_restarts() {
    start_mosquitto();
    let _guard = RestartGuard;
    let topic = unique("restart");
    let client = unique("restart-client");
    let seen = Subscriber::new(&format!("{topic}/seen")).await;
    let app = spawn_app(&handler_app(&topic, 1, &client)).await;
    wait_for_log(&app, "mqtt trigger: subscribed").await;

    publish(&topic, "before", QoS::AtLeastOnce).await;
    seen.wait_for("before", 1, 10).await;

    // Stop Mosquitto (SIGTERM: it saves its sessions) and wait for it to go.
    let pid = mosquitto_pid();
    let status = Command::new("kill").arg(pid.to_string()).status().unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while broker_up() || std::path::Path::new(&format!("/proc/{pid}")).exists() {
        assert!(Instant::now() < deadline, "mosquitto did not stop");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_for_log(&app, "mqtt trigger: connection failed").await;

    start_mosquitto();
    // The trigger reconnects (backoff at most 5 s) and, if the session did
    // not survive, subscribes again; retry until a message gets through.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut n = 0;
    loop {
        let payload = format!("after-{n}");
        publish(&topic, &payload, QoS::AtLeastOnce).await;
        let mut got = false;
        for _ in 0..20 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if seen.count(&payload) > 0 {
                got = true;
                break;
            }
        }
        if got {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "nothing delivered after the restart; log:\n{}",
            app.log()
        );
        n += 1;
    }
    let log = app.log();
    assert!(log.contains("mqtt trigger: connected"), "{log}");
    drop(app);
    drop_session(&client).await;
}
