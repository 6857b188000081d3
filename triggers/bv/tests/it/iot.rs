//! IoT telemetry end to end (components/iot, components/iot-ingest,
//! `bv mqtt-auth`): devices registered over HTTP publish over MQTT to a
//! real Mosquitto of the test's own, the ingester stores, parks and
//! detects into a real PostgreSQL, the cron rolls up, and the broker's
//! password and ACL files come from the registry.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use bv_iot::message::encode_binary;
use bv_test_servers::{free_port, wait_for_port};
use rumqttc::{AsyncClient, ConnectionError, Event, MqttOptions, Packet, QoS};
use serde_json::{json, Value};

use crate::auth_support::{self, admin, customer};
use crate::harness::*;
use crate::pg_support::*;
use crate::repo_manifest::RepoManifest;

const JSON: (&str, &str) = ("content-type", "application/json");

/// A `mosquitto` of the test's own: anonymous, or with password and ACL
/// files.
pub struct PrivateMosquitto {
    port: u16,
    dir: tempfile::TempDir,
    child: Child,
}

impl PrivateMosquitto {
    pub fn start(authenticated: bool) -> Self {
        let port = free_port();
        let dir = tempfile::tempdir().unwrap();
        // `user root`: as root, Mosquitto would otherwise drop to the
        // mosquitto user, which cannot reach the test's files (no effect
        // when the tests do not run as root).
        let mut conf = format!(
            "user root\nlistener {port} 127.0.0.1\npersistence false\nmax_queued_messages 100000\nmax_inflight_messages 64\npid_file {}\n",
            dir.path().join("mosquitto.pid").display()
        );
        if authenticated {
            std::fs::write(dir.path().join("passwd"), "").unwrap();
            std::fs::write(dir.path().join("acl"), "").unwrap();
            conf.push_str(&format!(
                "per_listener_settings false\nallow_anonymous false\npassword_file {}\nacl_file {}\n",
                dir.path().join("passwd").display(),
                dir.path().join("acl").display()
            ));
        } else {
            conf.push_str("allow_anonymous true\n");
        }
        std::fs::write(dir.path().join("mosquitto.conf"), conf).unwrap();
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(dir.path().join("mosquitto.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting mosquitto (Debian package mosquitto)");
        wait_for_port(port, "mosquitto");
        Self { port, dir, child }
    }

    pub fn address(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// Kills the broker and starts it again on the same port: with
    /// `persistence false`, every session is gone.
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = Command::new("mosquitto")
            .arg("-c")
            .arg(self.dir.path().join("mosquitto.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting mosquitto again");
        wait_for_port(self.port, "mosquitto");
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

impl Drop for PrivateMosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Iot {
    app: TestApp,
    db: TestDb,
    /// What [`Iot::restart`] starts again.
    manifest: String,
    env: Vec<(String, String)>,
}

impl Iot {
    async fn start(tag: &str, broker: &PrivateMosquitto, extra: Vec<(String, String)>) -> Self {
        Self::start_with(tag, broker, |_| extra).await
    }

    /// As [`Iot::start`], with `extra` environment that may depend on the
    /// test's database (a proxy in front of it, say).
    async fn start_with(
        tag: &str,
        broker: &PrivateMosquitto,
        extra: impl FnOnce(&TestDb) -> Vec<(String, String)>,
    ) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let db = TestDb::new(&format!("iot_{tag}")).await;
        let name = format!(
            "iot-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let manifest = RepoManifest::load()
            .only(&name, &["iot", "iot-ingest"])
            .without_rate_limits()
            .render();
        let env: Vec<_> = [
            ("SPIN_VARIABLE_DB_URL".to_string(), db.url()),
            ("SPIN_VARIABLE_MQTT_ADDRESS".to_string(), broker.address()),
        ]
        .into_iter()
        .chain(auth_support::env())
        .chain(extra(&db))
        .collect();
        let app = Self::spawn(&manifest, &env).await;
        Self {
            app,
            db,
            manifest,
            env,
        }
    }

    async fn spawn(manifest: &str, env: &[(String, String)]) -> TestApp {
        let app = spawn_app_with(
            manifest,
            Spawn {
                env: env.to_vec(),
                ..Default::default()
            },
        )
        .await;
        wait_for_log(&app, "mqtt trigger: subscribed").await;
        app
    }

    /// Stops `bv` with SIGTERM (it must exit 0 within 20 s) and starts it
    /// again on the same manifest, so its MQTT sessions (and what the
    /// broker kept unacknowledged for them) carry over. The log of the
    /// run that ended.
    async fn restart(&mut self) -> String {
        let (code, _) = self.app.terminate_within(Duration::from_secs(20)).await;
        assert_eq!(code, Some(0), "{}", self.app.log());
        let log = self.app.log();
        self.app = Self::spawn(&self.manifest, &self.env).await;
        log
    }

    async fn call(&self, method: &str, path: &str, auth: (&str, &str), body: Value) -> Reply {
        let body = if body.is_null() {
            String::new()
        } else {
            body.to_string()
        };
        request(
            self.app.addr,
            method,
            &format!("/api/iot{path}"),
            &[auth, JSON],
            body,
        )
        .await
    }

    /// The type `thermostat` and a device of `owner`'s; its password.
    async fn device(&self, id: &str, owner: &str) -> String {
        let r = self
            .call(
                "POST",
                "/device-types",
                admin(),
                json!({"name": "thermostat", "metrics": [
                    {"name": "temperature", "unit": "°C", "min": -40.0, "max": 85.0},
                    {"name": "humidity", "unit": "%", "min": 0.0, "max": 100.0}
                ]}),
            )
            .await;
        assert!(
            r.status == 201 || r.status == 409,
            "{} {}",
            r.status,
            r.text()
        );
        let r = self
            .call(
                "POST",
                "/devices",
                customer(owner),
                json!({"id": id, "type": "thermostat", "name": "hall"}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text());
        let body = r.json();
        assert_eq!(body["owner"], owner);
        assert_eq!(
            body["mqtt"]["telemetryTopic"],
            format!("devices/{id}/telemetry")
        );
        body["mqtt"]["password"].as_str().unwrap().to_string()
    }

    async fn count(&self, sql: &str) -> i64 {
        self.db
            .client()
            .await
            .query_one(sql, &[])
            .await
            .unwrap()
            .get(0)
    }

    /// Waits until `sql` (a count) is at least `want`.
    async fn wait_at_least(&self, sql: &str, want: i64, secs: u64) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while self.count(sql).await < want {
            assert!(
                Instant::now() < deadline,
                "{sql}: below {want} after {secs} s\n{}",
                self.app.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until `sql` (a count) reaches `want`.
    async fn wait_count(&self, sql: &str, want: i64, secs: u64) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let n = self.count(sql).await;
            if n >= want {
                assert_eq!(n, want, "{sql}");
                return;
            }
            if Instant::now() > deadline {
                panic!("{sql}: {n} after {secs} s, want {want}\n{}", self.app.log());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Connects (as `login`, if given), publishes each payload at QoS 1 and
/// waits for every PUBACK; the broker's refusal to let it in is an `Err`.
pub(crate) async fn publish(
    port: u16,
    login: Option<(&str, &str)>,
    messages: &[(String, Vec<u8>)],
) -> Result<(), ConnectionError> {
    static N: AtomicU32 = AtomicU32::new(0);
    let id = format!(
        "it-dev-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    let mut options = MqttOptions::new(id, "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(5));
    if let Some((user, password)) = login {
        options.set_credentials(user, password);
    }
    let (client, mut eventloop) = AsyncClient::new(options, messages.len() + 10);
    for (topic, payload) in messages {
        client
            .publish(topic.clone(), QoS::AtLeastOnce, false, payload.clone())
            .await
            .unwrap();
    }
    let mut acked = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while acked < messages.len() {
        match tokio::time::timeout_at(deadline, eventloop.poll()).await {
            Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => acked += 1,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => panic!("only {acked} of {} PUBACKs in 10 s", messages.len()),
        }
    }
    let _ = client.disconnect().await;
    Ok(())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn reading(seq: u64, ts_ms: i64, temperature: f64, humidity: f64) -> Vec<u8> {
    json!({"seq": seq, "ts": ts_ms, "metrics": {"temperature": temperature, "humidity": humidity}})
        .to_string()
        .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telemetry_is_stored_once_bad_messages_are_parked_and_series_read_back() {
    let broker = PrivateMosquitto::start(false);
    let iot = Iot::start("ingest", &broker, vec![]).await;
    iot.device("thermo-1", "alice").await;
    let topic = "devices/thermo-1/telemetry".to_string();
    // Two minutes of samples ending three minutes ago, one a second, in
    // both forms; the first ten sent twice (a QoS 1 redelivery).
    let start = (now_ms() / 60_000 - 5) * 60_000;
    let mut messages = Vec::new();
    for i in 0..120i64 {
        let ts = start + i * 1000;
        let payload = if i % 2 == 0 {
            reading(i as u64, ts, 20.0 + (i % 7) as f64 * 0.1, 40.0)
        } else {
            encode_binary(i as u32, ts, &[(0, 20.0 + (i % 7) as f32 * 0.1), (1, 40.0)])
        };
        messages.push((topic.clone(), payload));
    }
    let again: Vec<_> = messages[..10].to_vec();
    messages.extend(again);
    let bad = [
        (topic.clone(), b"not json".to_vec()),
        (topic.clone(), reading(1, start, 120.0, 40.0)),
        (
            topic.clone(),
            br#"{"seq":1,"ts":0,"metrics":{"pressure":1}}"#.to_vec(),
        ),
        (
            topic.clone(),
            reading(1, now_ms() - 3 * 3600 * 1000, 20.0, 40.0),
        ),
        (
            "devices/ghost-7/telemetry".to_string(),
            reading(1, start, 20.0, 40.0),
        ),
        (
            "devices/Not_An_Id/telemetry".to_string(),
            reading(1, start, 20.0, 40.0),
        ),
    ];
    messages.extend(bad.iter().cloned());
    publish(broker.port, None, &messages).await.unwrap();

    iot.wait_count("SELECT count(*) FROM iot.parked", 6, 30)
        .await;
    iot.wait_count("SELECT count(*) FROM iot.telemetry", 240, 30)
        .await;
    let reasons: Vec<String> = iot
        .db
        .client()
        .await
        .query("SELECT reason FROM iot.parked ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    for (reason, want) in reasons.iter().zip([
        "not a telemetry JSON message",
        "outside [-40, 85]",
        "no such metric",
        "outside the accepted window",
        "unknown device ghost-7",
        "device id",
    ]) {
        assert!(
            reason.contains(want),
            "{reason:?} should say {want:?}: {reasons:?}"
        );
    }
    let r = iot.call("GET", "/parked", admin(), Value::Null).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["parked"].as_array().unwrap().len(), 6);
    assert_eq!(
        iot.call("GET", "/parked", customer("alice"), Value::Null)
            .await
            .status,
        403
    );

    // Raw, at a 30 s step: four buckets of 30 samples.
    let from = bv_iot::message::format_ms(start);
    let to = bv_iot::message::format_ms(start + 120_000);
    let path = format!("/devices/thermo-1/series?metric=temperature&from={from}&to={to}&step=30s");
    let r = iot.call("GET", &path, customer("alice"), Value::Null).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.json();
    assert_eq!(body["resolution"], "raw");
    let points = body["points"].as_array().unwrap();
    assert_eq!(points.len(), 4, "{body}");
    assert!(points.iter().all(|p| p["count"] == 30), "{body}");
    assert!((points[0]["min"].as_f64().unwrap() - 20.0).abs() < 1e-6);
    assert!((points[0]["max"].as_f64().unwrap() - 20.6).abs() < 1e-5);
    // Someone else's device is not readable.
    assert_eq!(
        iot.call("GET", &path, customer("bob"), Value::Null)
            .await
            .status,
        403
    );

    // The cron (every 15 s) rolls the closed minutes up: 1 m and 1 h steps
    // read the rollups, with the same totals.
    iot.wait_count(
        "SELECT coalesce(sum(n), 0)::bigint FROM iot.rollup_1m WHERE metric = 'temperature'",
        120,
        40,
    )
    .await;
    let path = format!("/devices/thermo-1/series?metric=temperature&from={from}&to={to}&step=1m");
    let body = iot
        .call("GET", &path, customer("alice"), Value::Null)
        .await
        .json();
    assert_eq!(body["resolution"], "1m", "{body}");
    let counts: Vec<i64> = body["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["count"].as_i64().unwrap())
        .collect();
    assert_eq!(counts, [60, 60], "{body}");
    // The two minutes may straddle an hour: ask for both hours around them.
    let hour_from = bv_iot::message::format_ms(start / 3_600_000 * 3_600_000);
    let hour_to = bv_iot::message::format_ms((start / 3_600_000 + 2) * 3_600_000);
    iot.wait_count(
        "SELECT coalesce(sum(n), 0)::bigint FROM iot.rollup_1h WHERE metric = 'temperature'",
        120,
        40,
    )
    .await;
    let path =
        format!("/devices/thermo-1/series?metric=humidity&from={hour_from}&to={hour_to}&step=1h");
    let body = iot
        .call("GET", &path, customer("alice"), Value::Null)
        .await
        .json();
    assert_eq!(body["resolution"], "1h", "{body}");
    let points = body["points"].as_array().unwrap();
    let total: i64 = points.iter().map(|p| p["count"].as_i64().unwrap()).sum();
    assert_eq!(total, 120, "{body}");
    assert!(points.iter().all(|p| p["p95"] == 40.0), "{body}");

    // Bad queries are problems that name the parameter.
    for (query, parameter) in [
        ("metric=pressure", "metric"),
        ("metric=temperature&step=5w", "step"),
        (
            "metric=temperature&step=1s&from=2026-01-01T00:00:00Z&to=2026-01-02T00:00:00Z",
            "step",
        ),
        ("metric=temperature&from=yesterday", "from"),
        ("metric=temperature&colour=red", "colour"),
    ] {
        let r = iot
            .call(
                "GET",
                &format!("/devices/thermo-1/series?{query}"),
                customer("alice"),
                Value::Null,
            )
            .await;
        assert_eq!(r.status, 422, "{query}: {}", r.text());
        assert_eq!(r.headers["content-type"], "application/problem+json");
        assert!(r.text().contains(parameter), "{query}: {}", r.text());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incident_raises_one_alert_and_one_all_clear_as_durable_events() {
    let broker = PrivateMosquitto::start(false);
    let iot = Iot::start("anomaly", &broker, vec![]).await;
    iot.device("thermo-2", "carol").await;
    let topic = "devices/thermo-2/telemetry".to_string();
    let start = now_ms() - 20 * 60_000;
    // Normal readings with a little noise, a three-sample spike, then calm.
    let noise = |i: i64| ((i * 7919 % 23) as f64 - 11.0) / 66.0;
    let mut messages = Vec::new();
    for i in 0..260i64 {
        let spike = (200..203).contains(&i);
        let t = if spike { 30.0 } else { 21.0 + noise(i) };
        messages.push((
            topic.clone(),
            reading(i as u64, start + i * 1000, t, 40.0 + noise(i + 3)),
        ));
    }
    publish(broker.port, None, &messages).await.unwrap();
    iot.wait_count(
        "SELECT count(*) FROM iot.telemetry WHERE metric = 'temperature'",
        260,
        60,
    )
    .await;

    let client = iot.db.client().await;
    let rows = client
        .query(
            "SELECT metric, kind, cleared_at IS NOT NULL FROM iot.anomalies",
            &[],
        )
        .await
        .unwrap();
    let got: Vec<(String, String, bool)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        got,
        [("temperature".to_string(), "spike".to_string(), true)],
        "{}",
        iot.app.log()
    );
    let events: Vec<(String, Value)> = client
        .query(
            "SELECT type, (event->'data')::text FROM bv_events.outbox WHERE subject = 'thermo-2' ORDER BY seq",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), serde_json::from_str(r.get::<_, &str>(1)).unwrap()))
        .collect();
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[0].0, "com.bitvelocity.iot.anomaly.detected.v1");
    assert_eq!(events[0].1["owner"], "carol");
    assert_eq!(events[0].1["value"], 30.0);
    assert_eq!(
        events[0].1["at"],
        bv_iot::message::format_ms(start + 200_000)
    );
    assert_eq!(events[1].0, "com.bitvelocity.iot.anomaly.cleared.v1");
    assert_eq!(events[1].1["anomalyId"], events[0].1["anomalyId"]);

    let body = iot
        .call(
            "GET",
            "/devices/thermo-2/anomalies",
            customer("carol"),
            Value::Null,
        )
        .await
        .json();
    let list = body["anomalies"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{body}");
    assert_eq!(list[0]["kind"], "spike");
    assert!(list[0]["clearedAt"].is_string(), "{body}");

    // The same messages again (a redelivery after a crash): nothing new.
    publish(broker.port, None, &messages[190..210])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(iot.count("SELECT count(*) FROM iot.anomalies").await, 1);
    assert_eq!(
        iot.count("SELECT count(*) FROM iot.telemetry WHERE metric = 'temperature'")
            .await,
        260
    );
}

fn mqtt_auth(broker: &PrivateMosquitto, db: &TestDb, once: bool) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_bv"));
    cmd.arg("mqtt-auth")
        .arg("--database")
        .arg(db.url())
        .arg("--password-file")
        .arg(broker.path("passwd"))
        .arg("--acl-file")
        .arg(broker.path("acl"))
        .arg("--mosquitto-pid-file")
        .arg(broker.path("mosquitto.pid"))
        .args(["--service-user", "bitvelocity", "--interval", "1"])
        .env("BV_MQTT_SERVICE_PASSWORD", "platform-secret");
    if once {
        cmd.arg("--once");
    }
    cmd
}

fn refused(result: Result<(), ConnectionError>) -> bool {
    matches!(result, Err(ConnectionError::ConnectionRefused(_)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_admits_devices_from_the_registry_and_confines_them_to_their_topics() {
    let broker = PrivateMosquitto::start(true);
    let db_for_files = TestDb::new("iot_auth_files").await;
    // Before the platform starts: the files hold the platform's account only.
    let out = mqtt_auth(&broker, &db_for_files, true).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(db_for_files);
    let pid_before = std::fs::read_to_string(broker.path("mosquitto.pid")).unwrap();
    let iot = Iot::start(
        "auth",
        &broker,
        vec![
            ("SPIN_VARIABLE_MQTT_USERNAME".into(), "bitvelocity".into()),
            (
                "SPIN_VARIABLE_MQTT_PASSWORD".into(),
                "platform-secret".into(),
            ),
        ],
    )
    .await;
    let a = iot.device("sensor-a", "dave").await;
    let b = iot.device("sensor-b", "erin").await;
    // Not yet in the files: refused.
    let own = |id: &str, i: u64| {
        (
            format!("devices/{id}/telemetry"),
            reading(i, now_ms() - 1000 * (100 - i as i64), 21.0, 40.0),
        )
    };
    assert!(refused(
        publish(broker.port, Some(("sensor-a", &a)), &[own("sensor-a", 1)]).await
    ));
    let mut watcher = mqtt_auth(&broker, &iot.db, false)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while refused(publish(broker.port, Some(("sensor-a", &a)), &[own("sensor-a", 2)]).await) {
        assert!(Instant::now() < deadline, "sensor-a never got in");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // sensor-a writes into sensor-b's topic: the broker drops it; its own
    // topic is fine. A wrong password and anonymous are refused.
    publish(
        broker.port,
        Some(("sensor-a", &a)),
        &[own("sensor-b", 3), own("sensor-a", 4)],
    )
    .await
    .unwrap();
    publish(broker.port, Some(("sensor-b", &b)), &[own("sensor-b", 5)])
        .await
        .unwrap();
    assert!(refused(
        publish(broker.port, Some(("sensor-a", &b)), &[own("sensor-a", 6)]).await
    ));
    assert!(refused(
        publish(broker.port, None, &[own("sensor-a", 7)]).await
    ));
    iot.wait_count(
        "SELECT count(DISTINCT ts) FROM iot.telemetry WHERE device_id = 'sensor-a'",
        2,
        20,
    )
    .await;
    iot.wait_count(
        "SELECT count(DISTINCT ts) FROM iot.telemetry WHERE device_id = 'sensor-b'",
        1,
        20,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        iot.count("SELECT count(DISTINCT ts) FROM iot.telemetry WHERE device_id = 'sensor-b'")
            .await,
        1
    );

    // A new password: the old one stops working, the new one works, and
    // the broker was never restarted.
    let r = iot
        .call(
            "POST",
            "/devices/sensor-a/credentials",
            customer("dave"),
            Value::Null,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let rotated = r.json()["mqtt"]["password"].as_str().unwrap().to_string();
    assert_ne!(rotated, a);
    let deadline = Instant::now() + Duration::from_secs(15);
    while !refused(publish(broker.port, Some(("sensor-a", &a)), &[own("sensor-a", 8)]).await) {
        assert!(Instant::now() < deadline, "the old password still works");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    publish(
        broker.port,
        Some(("sensor-a", &rotated)),
        &[own("sensor-a", 9)],
    )
    .await
    .unwrap();
    assert_eq!(
        std::fs::read_to_string(broker.path("mosquitto.pid")).unwrap(),
        pid_before
    );
    assert_eq!(
        iot.call(
            "POST",
            "/devices/sensor-a/credentials",
            customer("erin"),
            Value::Null
        )
        .await
        .status,
        403
    );
    let _ = watcher.kill();
    let _ = watcher.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_input_is_checked_field_by_field() {
    let broker = PrivateMosquitto::start(false);
    let iot = Iot::start("registry", &broker, vec![]).await;
    iot.device("valve-1", "frank").await;
    let cases = [
        (
            "/device-types",
            admin(),
            json!({"name": "x", "metrics": []}),
            422,
            "metrics",
        ),
        (
            "/device-types",
            admin(),
            json!({"name": "x", "metrics": [{"name": "a", "seasonalPeriodSeconds": 10}]}),
            422,
            "seasonalPeriodSeconds",
        ),
        (
            "/device-types",
            customer("frank"),
            json!({"name": "x", "metrics": [{"name": "a"}]}),
            403,
            "",
        ),
        (
            "/device-types",
            admin(),
            json!({"name": "thermostat", "metrics": [{"name": "a"}]}),
            409,
            "exists",
        ),
        (
            "/devices",
            customer("frank"),
            json!({"id": "valve-1", "type": "thermostat"}),
            409,
            "exists",
        ),
        (
            "/devices",
            customer("frank"),
            json!({"id": "Valve 2", "type": "thermostat"}),
            422,
            "id",
        ),
        (
            "/devices",
            customer("frank"),
            json!({"id": "valve-2", "type": "boiler"}),
            422,
            "type",
        ),
        (
            "/devices",
            customer("frank"),
            json!({"id": "valve-2", "type": "thermostat", "owner": "gus"}),
            403,
            "",
        ),
        (
            "/devices",
            customer("frank"),
            json!({"id": "valve-2", "type": "thermostat", "colour": 1}),
            422,
            "colour",
        ),
    ];
    for (path, auth, body, status, says) in cases {
        let r = iot.call("POST", path, auth, body.clone()).await;
        assert_eq!(r.status, status, "{path} {body}: {}", r.text());
        assert!(r.text().contains(says), "{path} {body}: {}", r.text());
    }
    assert_eq!(iot.count("SELECT count(*) FROM iot.devices").await, 1);
    let list = iot
        .call("GET", "/devices", customer("gus"), Value::Null)
        .await
        .json();
    assert_eq!(list["devices"].as_array().unwrap().len(), 0);
    let list = iot
        .call("GET", "/devices", customer("frank"), Value::Null)
        .await
        .json();
    assert_eq!(list["devices"][0]["id"], "valve-1");
    assert!(
        list["devices"][0].get("mqtt").is_none(),
        "the password is shown once only"
    );
    let r = iot
        .call("DELETE", "/devices/valve-1", customer("frank"), Value::Null)
        .await;
    assert_eq!(r.status, 204);
    assert_eq!(
        iot.call("GET", "/devices/valve-1", customer("frank"), Value::Null)
            .await
            .status,
        404
    );
    let r = request(iot.app.addr, "GET", "/api/iot/devices", &[], "").await;
    assert_eq!(r.status, 401);
}

/// A device listening on its command topic: the commands it receives.
async fn listen(port: u16, device: &str) -> tokio::sync::mpsc::UnboundedReceiver<Value> {
    let mut options = MqttOptions::new(
        format!("it-listen-{device}-{}", std::process::id()),
        "127.0.0.1",
        port,
    );
    options.set_keep_alive(Duration::from_secs(5));
    let (client, mut eventloop) = AsyncClient::new(options, 10);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let topic = format!("devices/{device}/commands");
    tokio::spawn(async move {
        let mut ready = Some(ready_tx);
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    client
                        .subscribe(topic.clone(), QoS::AtLeastOnce)
                        .await
                        .unwrap();
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    if let Some(r) = ready.take() {
                        let _ = r.send(());
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let _ = tx.send(serde_json::from_slice(&p.payload).unwrap());
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(10), ready_rx)
        .await
        .unwrap()
        .unwrap();
    rx
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_reaches_its_device_and_settles_by_acknowledgement_or_timeout() {
    let broker = PrivateMosquitto::start(false);
    let iot = Iot::start("commands", &broker, vec![]).await;
    iot.device("lamp-1", "hana").await;
    let mut commands = listen(broker.port, "lamp-1").await;
    let ack = |id: &str, ok: bool| {
        let body = if ok {
            json!({"id": id, "ok": true, "result": {"level": 70}})
        } else {
            json!({"id": id, "ok": false, "error": "bulb missing"})
        };
        (
            "devices/lamp-1/acks".to_string(),
            body.to_string().into_bytes(),
        )
    };
    let state = |id: String| {
        let iot = &iot;
        async move {
            let r = iot
                .call(
                    "GET",
                    &format!("/devices/lamp-1/commands/{id}"),
                    customer("hana"),
                    Value::Null,
                )
                .await;
            assert_eq!(r.status, 200, "{}", r.text());
            r.json()
        }
    };
    let wait_state = |id: String, want: &'static str| async move {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let c = state(id.clone()).await;
            if c["state"] == want {
                return c;
            }
            assert!(Instant::now() < deadline, "command {id} is {c}, not {want}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };

    // Sent, received by the device with its correlation id, acknowledged.
    let r = iot
        .call(
            "POST",
            "/devices/lamp-1/commands",
            customer("hana"),
            json!({"name": "set-brightness", "args": {"level": 70}}),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text());
    let sent = r.json();
    assert_eq!(sent["state"], "sent");
    let id = sent["id"].as_str().unwrap().to_string();
    let got = tokio::time::timeout(Duration::from_secs(10), commands.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got["id"], id.as_str());
    assert_eq!(got["name"], "set-brightness");
    assert_eq!(got["args"]["level"], 70);
    publish(broker.port, None, &[ack(&id, true)]).await.unwrap();
    let done = wait_state(id.clone(), "acknowledged").await;
    assert_eq!(done["result"]["level"], 70);
    assert!(done["settledAt"].is_string());

    // A refusal by the device fails the command.
    let r = iot
        .call(
            "POST",
            "/devices/lamp-1/commands",
            customer("hana"),
            json!({"name": "reboot"}),
        )
        .await;
    let refused = r.json()["id"].as_str().unwrap().to_string();
    tokio::time::timeout(Duration::from_secs(10), commands.recv())
        .await
        .unwrap()
        .unwrap();
    publish(broker.port, None, &[ack(&refused, false)])
        .await
        .unwrap();
    assert_eq!(wait_state(refused, "failed").await["error"], "bulb missing");

    // No acknowledgement within the deadline: timed out, and a late one
    // changes nothing.
    let r = iot
        .call(
            "POST",
            "/devices/lamp-1/commands",
            customer("hana"),
            json!({"name": "ping", "timeoutSeconds": 1}),
        )
        .await;
    let late = r.json()["id"].as_str().unwrap().to_string();
    tokio::time::timeout(Duration::from_secs(10), commands.recv())
        .await
        .unwrap()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(state(late.clone()).await["state"], "timed-out");
    publish(broker.port, None, &[ack(&late, true)])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(state(late.clone()).await["state"], "timed-out");
    let list = iot
        .call(
            "GET",
            "/devices/lamp-1/commands",
            customer("hana"),
            Value::Null,
        )
        .await
        .json();
    let states: Vec<&str> = list["commands"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["timed-out", "failed", "acknowledged"], "{list}");

    // Bad requests, someone else's device, an unknown command.
    for body in [
        json!({"name": "two words"}),
        json!({"name": "a", "timeoutSeconds": 0}),
        json!({"name": "a", "extra": 1}),
    ] {
        let r = iot
            .call(
                "POST",
                "/devices/lamp-1/commands",
                customer("hana"),
                body.clone(),
            )
            .await;
        assert_eq!(r.status, 422, "{body}: {}", r.text());
    }
    assert_eq!(
        iot.call(
            "POST",
            "/devices/lamp-1/commands",
            customer("ivan"),
            json!({"name": "a"})
        )
        .await
        .status,
        403
    );
    assert_eq!(
        iot.call(
            "GET",
            "/devices/lamp-1/commands/nope",
            customer("hana"),
            Value::Null
        )
        .await
        .status,
        404
    );
    assert_eq!(iot.count("SELECT count(*) FROM iot.commands").await, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_far_larger_than_the_triggers_queue_is_ingested_whole() {
    // More messages at once than the trigger's queue (256) and rumqttc's
    // request channel hold: a worker that waited on its acknowledgements
    // while the session task waited on the full queue stalled here for
    // good (the broker then dropped the silent session).
    let broker = PrivateMosquitto::start(false);
    let iot = Iot::start("backlog", &broker, vec![]).await;
    iot.device("meter-1", "jo").await;
    let start = now_ms() - 30 * 60_000;
    let messages: Vec<_> = (0..1500i64)
        .map(|i| {
            let t = 20.0 + (i % 11) as f64 * 0.05;
            (
                "devices/meter-1/telemetry".to_string(),
                reading(i as u64, start + i * 1000, t, 40.0 + (i % 3) as f64),
            )
        })
        .collect();
    publish(broker.port, None, &messages).await.unwrap();
    iot.wait_count(
        "SELECT count(*) FROM iot.telemetry WHERE metric = 'temperature'",
        1500,
        120,
    )
    .await;
    // Batched (message_batch = 64 in spin.toml): rows written by one
    // transaction share its xmin, so far fewer transactions than messages.
    let transactions = iot
        .count("SELECT count(DISTINCT xmin::text) FROM iot.telemetry")
        .await;
    assert!(
        transactions * 4 < 1500,
        "{transactions} transactions for 1500 messages"
    );
    // ...and every sample evaluated, in order (an older sample than the
    // newest seen is stored but not evaluated).
    let evaluated = iot
        .count(
            "SELECT (state->>'n')::int8 FROM iot.detector
             WHERE device_id = 'meter-1' AND metric = 'temperature'",
        )
        .await;
    assert_eq!(evaluated, 1500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_cut_mid_batch_then_a_sigterm_lose_no_sample() {
    // Batches of up to 64 messages share one transaction. Connections cut
    // under them, Postgres refusing for a while, then connections cut again
    // as SIGTERM arrives: every sample published is stored exactly once,
    // (the key is device, metric and time) and nothing is parked for a
    // database failure: the failed messages came back from the broker
    // (unacknowledged, then redelivered).
    use bv_fault_proxy::FaultProxy;
    const SAMPLES: i64 = 3000;
    let broker = PrivateMosquitto::start(false);
    let proxy = FaultProxy::start("127.0.0.1:5432".parse().unwrap())
        .await
        .unwrap();
    let port = proxy.addr().port();
    let mut iot = Iot::start_with("pgcut", &broker, |db| {
        vec![
            (
                "SPIN_VARIABLE_DB_URL".into(),
                db.url().replace(":5432/", &format!(":{port}/")),
            ),
            ("SPIN_VARIABLE_DB_HOST".into(), format!("127.0.0.1:{port}")),
        ]
    })
    .await;
    iot.device("meter-1", "jo").await;

    // About 500 a second, so the faults land while batches are in flight.
    // Half a second apart from 40 minutes ago: all inside the late window
    // (an hour) however long the test takes.
    let start = now_ms() - 40 * 60_000;
    let publisher = tokio::spawn({
        let port = broker.port;
        async move {
            for chunk in 0..SAMPLES / 50 {
                let messages: Vec<_> = (chunk * 50..(chunk + 1) * 50)
                    .map(|i| {
                        (
                            "devices/meter-1/telemetry".to_string(),
                            reading(i as u64, start + i * 500, 20.0, 40.0),
                        )
                    })
                    .collect();
                publish(port, None, &messages).await.unwrap();
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });
    let stored = "SELECT count(*) FROM iot.telemetry WHERE metric = 'temperature'";
    iot.wait_at_least(stored, 500, 60).await;
    proxy.reset();
    proxy.refuse(true);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    proxy.refuse(false);
    iot.wait_at_least(stored, 1500, 60).await;
    proxy.reset();
    let first_run = iot.restart().await;
    assert!(
        first_run.contains("mqtt handler failed"),
        "the faults failed no message:\n{first_run}"
    );
    publisher.await.unwrap();
    iot.wait_count(stored, SAMPLES, 120).await;
    iot.wait_count(
        "SELECT count(*) FROM iot.telemetry WHERE metric = 'humidity'",
        SAMPLES,
        10,
    )
    .await;
    assert_eq!(iot.count("SELECT count(*) FROM iot.parked").await, 0);
}

/// The day partitions a plan reads (`telemetry_YYYYMMDD`), each once.
fn partitions(plan: &str) -> std::collections::BTreeSet<String> {
    plan.match_indices("telemetry_")
        .filter_map(|(at, _)| plan.get(at..at + 18))
        .filter(|name| name[10..].bytes().all(|b| b.is_ascii_digit()))
        .map(str::to_string)
        .collect()
}

/// The plan of `sql` (EXPLAIN, text) on `db`.
async fn plan(db: &tokio_postgres::Client, sql: &str) -> String {
    db.query(&format!("EXPLAIN {sql}"), &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn series_reads_prune_to_their_days_and_use_the_indexes() {
    let db = TestDb::new("iot_explain").await;
    let client = db.client().await;
    for (_, sql) in bv_iot::schema::MIGRATIONS {
        client.batch_execute(sql).await.unwrap();
    }
    // Three days of one sample a minute for 50 devices, in their partitions.
    client
        .batch_execute(
            "SELECT iot.ensure_partitions(now() - interval '2 days', 3);
             INSERT INTO iot.telemetry (device_id, metric, ts, value)
             SELECT 'd-' || d, 'temperature', t, random()
             FROM generate_series(1, 50) d,
                  generate_series(date_trunc('day', now()) - interval '2 days',
                                  date_trunc('day', now()) + interval '23 hours', interval '1 minute') t;
             ANALYZE iot.telemetry",
        )
        .await
        .unwrap();
    let today = "date_trunc('day', now())";
    // One device's metric over an hour of today: only today's partition,
    // through its primary key (device, metric, time).
    let one = plan(
        &client,
        &format!(
            "SELECT value FROM iot.telemetry WHERE device_id = 'd-7' AND metric = 'temperature'
             AND ts >= {today} + interval '1 hour' AND ts < {today} + interval '2 hours'"
        ),
    )
    .await;
    let today_part = client
        .query_one(
            "SELECT 'telemetry_' || to_char(now() AT TIME ZONE 'UTC', 'YYYYMMDD')",
            &[],
        )
        .await
        .unwrap()
        .get::<_, String>(0);
    assert_eq!(
        partitions(&one),
        [today_part.clone()].into(),
        "one partition only:\n{one}"
    );
    assert!(
        one.contains("Index") && one.contains("pkey"),
        "the primary key serves it:\n{one}"
    );
    assert!(!one.contains("Seq Scan"), "{one}");
    // Every device over a time range (the rollups' read): pruned to the
    // range's partitions, and the BRIN index on time can serve it.
    client
        .batch_execute("SET enable_seqscan = off")
        .await
        .unwrap();
    let all = plan(
        &client,
        &format!("SELECT count(*) FROM iot.telemetry WHERE ts >= {today} + interval '1 hour' AND ts < {today} + interval '2 hours'"),
    )
    .await;
    assert_eq!(partitions(&all), [today_part].into(), "{all}");
    assert!(
        all.contains("Bitmap Index Scan on telemetry_") && all.contains("_ts_idx"),
        "{all}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seasonal_metric_is_judged_against_its_phase_of_the_cycle() {
    // A level swinging ±5 over a minute with noise of about 0.1: one
    // baseline would call the swing itself anomalous; the seasonal one
    // (seasonalPeriodSeconds = 60) learns the first minute and then
    // raises only the one real spike.
    let broker = PrivateMosquitto::start(false);
    let iot = Iot::start("seasonal", &broker, vec![]).await;
    let r = iot
        .call(
            "POST",
            "/device-types",
            admin(),
            json!({"name": "tide-gauge", "metrics": [
                {"name": "level", "unit": "m", "seasonalPeriodSeconds": 60}
            ]}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["metrics"][0]["seasonalPeriodSeconds"], 60);
    let r = iot
        .call(
            "POST",
            "/devices",
            customer("mia"),
            json!({"id": "gauge-1", "type": "tide-gauge"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let start = (now_ms() / 60_000 - 11) * 60_000;
    let spike_at = 500;
    let messages: Vec<_> = (0..600i64)
        .map(|i| {
            let wave = 5.0 * (std::f64::consts::TAU * i as f64 / 60.0).sin();
            let noise = ((i * 7919 % 23) as f64 - 11.0) / 66.0;
            let spike = if i == spike_at { 3.0 } else { 0.0 };
            let body = json!({"seq": i, "ts": start + i * 1000,
                              "metrics": {"level": 20.0 + wave + noise + spike}});
            (
                "devices/gauge-1/telemetry".to_string(),
                body.to_string().into_bytes(),
            )
        })
        .collect();
    publish(broker.port, None, &messages).await.unwrap();
    iot.wait_count("SELECT count(*) FROM iot.telemetry", 600, 60)
        .await;
    let anomalies = iot
        .call(
            "GET",
            "/devices/gauge-1/anomalies",
            customer("mia"),
            Value::Null,
        )
        .await
        .json();
    let list = anomalies["anomalies"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{anomalies}");
    assert_eq!(list[0]["kind"], "spike", "{anomalies}");
    let opened = chrono::DateTime::parse_from_rfc3339(list[0]["openedAt"].as_str().unwrap())
        .unwrap()
        .timestamp_millis();
    assert_eq!(opened, start + spike_at * 1000, "{anomalies}");
    let learnt = iot
        .count(
            "SELECT count(*) FROM iot.detector
             WHERE device_id = 'gauge-1' AND (state->'season'->>'learnt')::boolean",
        )
        .await;
    assert_eq!(learnt, 1);
}
