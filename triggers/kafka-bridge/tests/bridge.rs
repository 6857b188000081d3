//! The Kafka bridge against a real Kafka-protocol broker (tansu, started
//! here per test: see `infra/scripts/kafka-broker.sh`), the machine's real
//! PostgreSQL (a database per test) and the bridge's real binary.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use bv_test_servers::{free_port, wait_for_port, PrivatePostgres};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::message::{Header, Headers as _, Message as _, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use tokio_postgres::{Client, NoTls};

const ADMIN_DB: &str = "host=127.0.0.1 port=5432 user=postgres dbname=postgres sslmode=disable";

// ------------------------------------------------------------------ support

fn broker_binary() -> PathBuf {
    static PATH: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    PATH.get_or_init(find_broker).clone()
}

fn find_broker() -> PathBuf {
    if let Ok(path) = std::env::var("BV_KAFKA_BROKER") {
        return PathBuf::from(path);
    }
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../infra/scripts/kafka-broker.sh"
    );
    let out = Command::new("bash")
        .arg(script)
        .arg("path")
        .output()
        .expect("running infra/scripts/kafka-broker.sh path");
    assert!(
        out.status.success(),
        "infra/scripts/kafka-broker.sh path failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// A Kafka-protocol broker of the test's own (memory storage).
struct Broker {
    port: u16,
    child: Option<Child>,
}

impl Broker {
    fn start() -> Self {
        let mut broker = Self {
            port: free_port(),
            child: None,
        };
        broker.restart();
        broker
    }

    fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Starts it (again) on its port.
    fn restart(&mut self) {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let child = Command::new(broker_binary())
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting the broker");
        self.child = Some(child);
        wait_for_port(self.port, "the broker");
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A database of the test's own, with the outbox schema.
struct Db {
    name: String,
    port: u16,
    client: Client,
    /// Dropped at the end (the machine's server), or kept (a private one).
    owned: bool,
}

async fn connect(config: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(config, NoTls)
        .await
        .unwrap_or_else(|e| panic!("connecting to {config}: {e}"));
    tokio::spawn(connection);
    client
}

impl Db {
    async fn new(tag: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "bv_kafka_{tag}_{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        connect(ADMIN_DB)
            .await
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        Self::on(5432, name, true).await
    }

    /// The database `name` on 127.0.0.1:`port`, with the outbox schema.
    async fn on(port: u16, name: String, owned: bool) -> Self {
        let mut client = connect(&format!(
            "host=127.0.0.1 port={port} user=postgres dbname={name} sslmode=disable"
        ))
        .await;
        bv_outbox::ensure_schema(&mut client).await.unwrap();
        Self {
            name,
            port,
            client,
            owned,
        }
    }

    fn url(&self) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/{}?sslmode=disable",
            self.port, self.name
        )
    }

    /// Writes events as a producer does, in one transaction.
    async fn publish(&self, events: &[bv_events::CloudEvent]) {
        let mut sql = String::from("BEGIN;");
        for e in events {
            sql.push_str(&format!(
                "INSERT INTO bv_events.outbox (id, source, type, subject, time, event) VALUES ({}, {}, {}, {}, {}::timestamptz, {}::jsonb);",
                quote(e.id()),
                quote(e.source()),
                quote(e.ty()),
                quote(e.subject().unwrap()),
                quote(e.time()),
                quote(&e.to_json())
            ));
        }
        sql.push_str("COMMIT;");
        self.client.batch_execute(&sql).await.unwrap();
    }

    async fn position(&self, subscription: &str) -> Option<i64> {
        self.client
            .query_opt(
                "SELECT position_seq FROM bv_events.subscriptions WHERE name = $1",
                &[&subscription],
            )
            .await
            .unwrap()
            .map(|r| r.get(0))
    }

    async fn max_seq(&self) -> i64 {
        self.client
            .query_one("SELECT COALESCE(max(seq), 0) FROM bv_events.outbox", &[])
            .await
            .unwrap()
            .get(0)
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        if !self.owned {
            return;
        }
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let admin = connect(ADMIN_DB).await;
                let _ = admin
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await;
            });
        })
        .join();
    }
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The bridge's binary, running with `config` (the bridge's own TOML).
struct Bridge {
    child: Child,
    admin: u16,
    _dir: tempfile::TempDir,
    log: PathBuf,
}

impl Bridge {
    fn start(config: &str, db: &Db, broker: &Broker) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bridge.toml");
        std::fs::write(&file, config).unwrap();
        let log = dir.path().join("bridge.log");
        let admin = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_bv-kafka-bridge"))
            .arg("--from")
            .arg(&file)
            .args(["--brokers", &broker.address(), "--db-url", &db.url()])
            .args(["--admin-listen", &format!("127.0.0.1:{admin}")])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("starting bv-kafka-bridge");
        wait_for_port(admin, "the bridge's admin listener");
        Self {
            child,
            admin,
            _dir: dir,
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn metrics(&self) -> String {
        let out = Command::new("curl")
            .args(["-sf", &format!("http://127.0.0.1:{}/metrics", self.admin)])
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap()
    }

    fn kill_9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM; the exit status and what it logged.
    fn terminate(mut self) -> (std::process::ExitStatus, String) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status, self.log());
            }
            assert!(
                Instant::now() < deadline,
                "the bridge did not stop on SIGTERM:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn restocked(i: usize, subject: &str) -> bv_events::CloudEvent {
    bv_events::CloudEvent::with_id(
        format!("ev-{i}"),
        "com.bitvelocity.stock.restocked.v1",
        "/inventory",
        subject,
        serde_json::json!({
            "productId": subject, "sku": format!("SKU-{i}"), "warehouseId": "w1",
            "quantity": 1, "onHand": i,
        }),
    )
}

/// One record as read back from a topic.
#[derive(Debug, Clone)]
struct Read {
    key: Option<String>,
    value: serde_json::Value,
    headers: BTreeMap<String, String>,
}

/// Reads every partition of `topic` from the start until `want` records
/// came or `limit` passed.
fn read_topic(broker: &Broker, topic: &str, want: usize, limit: Duration) -> Vec<Read> {
    read_topic_until(broker, topic, limit, |records| records.len() >= want)
}

/// Reads every partition of `topic` from the start until `done` says so or
/// `limit` passed.
fn read_topic_until(
    broker: &Broker,
    topic: &str,
    limit: Duration,
    done: impl Fn(&[Read]) -> bool,
) -> Vec<Read> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.address())
        .set("group.id", format!("reader-{}", free_port()))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let deadline = Instant::now() + limit;
    let partitions = loop {
        if let Ok(meta) = consumer.fetch_metadata(Some(topic), Duration::from_secs(5)) {
            let n = meta
                .topics()
                .first()
                .map(|t| t.partitions().len())
                .unwrap_or(0);
            if n > 0 {
                break n;
            }
        }
        assert!(Instant::now() < deadline, "topic {topic} never appeared");
        std::thread::sleep(Duration::from_millis(200));
    };
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p as i32, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    while !done(&out) && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            let mut headers = BTreeMap::new();
            if let Some(hs) = m.headers() {
                for h in hs.iter() {
                    headers.insert(
                        h.key.to_string(),
                        String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                    );
                }
            }
            out.push(Read {
                key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                // A dead letter may carry anything: text that is not JSON
                // is kept as a string.
                value: serde_json::from_slice(m.payload().unwrap_or(b"null")).unwrap_or_else(
                    |_| {
                        serde_json::Value::String(
                            String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned(),
                        )
                    },
                ),
                headers,
            });
        }
    }
    out
}

async fn wait_until<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Asserts that every subject's events came in the order they were
/// written: counting each id at its first arrival (a redelivered batch
/// repeats ids already seen), each subject's ids only go up.
fn assert_in_order_per_subject(records: &[Read]) {
    let mut seen = std::collections::HashSet::new();
    let mut last: HashMap<String, i64> = HashMap::new();
    for r in records {
        let id = r.headers["ce_id"].clone();
        if !seen.insert(id.clone()) {
            continue;
        }
        let subject = r.key.clone().expect("every record has its subject as key");
        let n: i64 = id.trim_start_matches("ev-").parse().unwrap();
        if let Some(prev) = last.insert(subject.clone(), n) {
            assert!(n > prev, "{subject}: ev-{n} arrived first after ev-{prev}");
        }
    }
}

const OUT_CONFIG: &str = r#"
[[out]]
events = ["com.bitvelocity.stock.*"]
"#;
const TOPIC: &str = "bv.stock.restocked.v1";

// ------------------------------------------------------------------ out

#[tokio::test(flavor = "multi_thread")]
async fn out_produces_every_event_in_order_per_subject_as_binary_cloudevents() {
    let broker = Broker::start();
    let db = Db::new("out").await;
    let subjects = ["p1", "p2", "p3", "p4", "p5"];
    let events: Vec<_> = (0..300).map(|i| restocked(i, subjects[i % 5])).collect();
    db.publish(&events[..150]).await;
    // A type no route takes stays in the outbox only.
    db.publish(&[bv_events::CloudEvent::with_id(
        "other",
        "com.bitvelocity.product.deleted.v1",
        "/catalog",
        "p1",
        serde_json::json!({"productId": "p1"}),
    )])
    .await;
    let bridge = Bridge::start(OUT_CONFIG, &db, &broker);
    db.publish(&events[150..]).await;

    let records = read_topic(&broker, TOPIC, 300, Duration::from_secs(60));
    assert_eq!(records.len(), 300, "bridge log:\n{}", bridge.log());
    // Each subject's events in the order written, none missing, no repeats.
    let mut per_subject: HashMap<String, Vec<String>> = HashMap::new();
    for r in &records {
        per_subject
            .entry(r.key.clone().unwrap())
            .or_default()
            .push(r.headers["ce_id"].clone());
    }
    for (k, subject) in subjects.iter().enumerate() {
        let want: Vec<String> = (0..300)
            .filter(|i| i % 5 == k)
            .map(|i| format!("ev-{i}"))
            .collect();
        assert_eq!(per_subject[*subject], want, "subject {subject}");
    }
    // Binary mode: attributes in ce_ headers, data as the value.
    let first = records
        .iter()
        .find(|r| r.headers["ce_id"] == "ev-0")
        .unwrap();
    assert_eq!(
        first.headers["ce_type"],
        "com.bitvelocity.stock.restocked.v1"
    );
    assert_eq!(first.headers["ce_source"], "/inventory");
    assert_eq!(first.headers["ce_specversion"], "1.0");
    assert_eq!(first.headers["ce_subject"], "p1");
    assert_eq!(first.headers["ce_time"], events[0].time());
    assert_eq!(first.headers["content-type"], "application/json");
    assert_eq!(&first.value, events[0].data());

    // The position moves once the broker has them all; it is an ordinary
    // subscription, next to `bv`'s own.
    let last = db.max_seq().await;
    wait_until(
        "the bridge's position reaches the outbox's end",
        Duration::from_secs(20),
        || async { db.position("kafka-bridge").await == Some(last) },
    )
    .await;
    let metrics = bridge.metrics();
    assert!(
        metrics.contains(&format!(
            "bv_kafka_bridge_produced_events_total{{topic=\"{TOPIC}\"}} 300"
        )),
        "{metrics}"
    );
    assert_eq!(bridge.terminate().0.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn out_loses_nothing_across_a_kill_9_of_the_bridge_and_a_broker_restart() {
    let mut broker = Broker::start();
    let db = Db::new("outfault").await;
    let subjects = ["a", "b", "c"];
    let event = |i: usize| restocked(i, subjects[i % 3]);

    // A stream of transactions; the bridge is killed once it is under way.
    let bridge = Bridge::start(OUT_CONFIG, &db, &broker);
    for chunk in 0..5 {
        let batch: Vec<_> = (chunk * 60..(chunk + 1) * 60).map(event).collect();
        db.publish(&batch).await;
    }
    wait_until(
        "the bridge has started producing",
        Duration::from_secs(60),
        || async { db.position("kafka-bridge").await.unwrap_or(0) > 0 },
    )
    .await;
    bridge.kill_9();
    for chunk in 5..10 {
        let batch: Vec<_> = (chunk * 60..(chunk + 1) * 60).map(event).collect();
        db.publish(&batch).await;
    }
    let bridge = Bridge::start(OUT_CONFIG, &db, &broker);
    let last = db.max_seq().await;
    wait_until(
        "the restarted bridge has produced everything",
        Duration::from_secs(60),
        || async { db.position("kafka-bridge").await == Some(last) },
    )
    .await;
    let records = read_topic(&broker, TOPIC, usize::MAX, Duration::from_secs(15));
    let ids: std::collections::BTreeSet<_> =
        records.iter().map(|r| r.headers["ce_id"].clone()).collect();
    for i in 0..600 {
        assert!(
            ids.contains(&format!("ev-{i}")),
            "ev-{i} lost; bridge log:\n{}",
            bridge.log()
        );
    }
    // Repeats come only from the batch in hand when the bridge died.
    let repeats = records.len() - ids.len();
    assert!(repeats <= 1024, "{repeats} repeats: more than one batch");
    assert_in_order_per_subject(&records);

    // The broker goes away (memory storage: it comes back empty). Events
    // written meanwhile wait in the outbox: the position does not move
    // until a broker has acknowledged them.
    broker.kill();
    let before = db.position("kafka-bridge").await.unwrap();
    let during: Vec<_> = (600..660).map(event).collect();
    db.publish(&during).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        db.position("kafka-bridge").await.unwrap(),
        before,
        "moved without a broker"
    );
    broker.restart();
    let last = db.max_seq().await;
    wait_until(
        "the bridge produced what was written while the broker was down",
        Duration::from_secs(90),
        || async { db.position("kafka-bridge").await == Some(last) },
    )
    .await;
    let records = read_topic(&broker, TOPIC, 60, Duration::from_secs(30));
    let ids: std::collections::BTreeSet<_> =
        records.iter().map(|r| r.headers["ce_id"].clone()).collect();
    for e in &during {
        assert!(
            ids.contains(e.id()),
            "{} lost across the broker restart; log:\n{}",
            e.id(),
            bridge.log()
        );
    }
    assert!(bridge
        .metrics()
        .contains("bv_kafka_bridge_errors_total{direction=\"out\"}"));
}

// ------------------------------------------------------------------ in

/// A record to produce: key, headers, value.
type Outgoing<'a> = (Option<&'a str>, Vec<(&'static str, String)>, Vec<u8>);

async fn produce(broker: &Broker, topic: &str, records: Vec<Outgoing<'_>>) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", broker.address())
        .set("enable.idempotence", "true")
        .create()
        .unwrap();
    for (key, headers, value) in records {
        let mut hs = OwnedHeaders::new();
        for (k, v) in &headers {
            hs = hs.insert(Header {
                key: k,
                value: Some(v.as_bytes()),
            });
        }
        let mut r: FutureRecord<'_, str, [u8]> = FutureRecord::to(topic)
            .payload(value.as_slice())
            .headers(hs);
        if let Some(k) = key {
            r = r.key(k);
        }
        producer
            .send(r, Duration::from_secs(30))
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }
}

fn binary(e: &bv_events::CloudEvent) -> Outgoing<'_> {
    let mut headers = vec![
        ("ce_specversion", "1.0".to_string()),
        ("ce_id", e.id().to_string()),
        ("ce_source", e.source().to_string()),
        ("ce_type", e.ty().to_string()),
        ("ce_time", e.time().to_string()),
        ("content-type", "application/json".to_string()),
        (
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_string(),
        ),
    ];
    if let Some(s) = e.subject() {
        headers.push(("ce_subject", s.to_string()));
    }
    (e.subject(), headers, serde_json::to_vec(e.data()).unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn in_writes_each_event_once_dead_letters_the_rest_and_commits_after_writing() {
    let broker = Broker::start();
    let db = Db::new("in").await;
    let config = r#"
[[in]]
topic = "partner.stock"
group = "bridge-in"

[[in]]
topic = "partner.raw"
group = "bridge-in"
wrap = { type = "header:x-type", source = "/partner", subject = "key" }
"#;
    let a = restocked(1, "p1");
    let b = restocked(2, "p2");
    let structured = restocked(3, "p3");
    let fourth = restocked(4, "p4");
    let mut wrong_schema = binary(&fourth);
    wrong_schema.2 = br#"{"productId":"p4"}"#.to_vec();
    produce(
        &broker,
        "partner.stock",
        vec![
            binary(&a),
            binary(&b),
            binary(&a), // a duplicate: written once
            (
                Some("p3"),
                vec![("content-type", "application/cloudevents+json".to_string())],
                structured.to_json().into_bytes(),
            ),
            wrong_schema,
            (Some("k"), vec![], b"plain text".to_vec()),
        ],
    )
    .await;
    produce(
        &broker,
        "partner.raw",
        vec![(
            Some("p9"),
            vec![("x-type", "com.bitvelocity.stock.restocked.v1".to_string())],
            serde_json::to_vec(&serde_json::json!({
                "productId": "p9", "sku": "S9", "warehouseId": "w", "quantity": 2, "onHand": 5
            }))
            .unwrap(),
        )],
    )
    .await;
    let bridge = Bridge::start(config, &db, &broker);

    let rows = || async {
        db.client
            .query(
                "SELECT id, source, subject, event::text FROM bv_events.outbox ORDER BY seq",
                &[],
            )
            .await
            .unwrap()
    };
    wait_until(
        "four events reached the outbox",
        Duration::from_secs(60),
        || async { rows().await.len() >= 4 },
    )
    .await;
    let letters = read_topic(
        &broker,
        "partner.stock.dead-letters",
        2,
        Duration::from_secs(30),
    );
    assert_eq!(letters.len(), 2, "bridge log:\n{}", bridge.log());
    // Dead letters keep their key, value and headers, plus why and whence.
    let reasons: Vec<&str> = letters
        .iter()
        .map(|l| l.headers["bv_error"].as_str())
        .collect();
    let schema = letters
        .iter()
        .find(|l| l.headers["bv_error"].contains("schema of com.bitvelocity.stock.restocked.v1"))
        .unwrap_or_else(|| panic!("no schema refusal among {reasons:?}"));
    assert_eq!(schema.headers["ce_id"], "ev-4");
    assert_eq!(schema.key.as_deref(), Some("p4"));
    let plain = letters
        .iter()
        .find(|l| l.headers["bv_error"].contains("not a CloudEvent"))
        .unwrap_or_else(|| panic!("no refusal of the plain record among {reasons:?}"));
    assert_eq!(plain.value, serde_json::json!("plain text"));
    assert_eq!(plain.headers["bv_topic"], "partner.stock");
    assert!(plain.headers["bv_offset"].parse::<i64>().is_ok());

    let found = rows().await;
    let ids: Vec<String> = found.iter().map(|r| r.get(0)).collect();
    assert_eq!(ids.len(), 4, "{ids:?}");
    for id in ["ev-1", "ev-2", "ev-3"] {
        assert_eq!(
            ids.iter().filter(|i| *i == id).count(),
            1,
            "{id} in {ids:?}"
        );
    }
    let wrapped = found
        .iter()
        .find(|r| r.get::<_, String>(1) == "/partner")
        .expect("the wrapped record");
    // Its id is its place (topic-partition-offset): read again, it is the same.
    let id: String = wrapped.get(0);
    assert!(id.starts_with("partner.raw-") && id.ends_with("-0"), "{id}");
    assert_eq!(wrapped.get::<_, Option<String>>(2).as_deref(), Some("p9"));
    // The trace context of a binary-mode record comes along.
    let a_row: String = found
        .iter()
        .find(|r| r.get::<_, String>(0) == "ev-1")
        .unwrap()
        .get(3);
    assert!(
        a_row.contains("0af7651916cd43dd8448eb211c80319c"),
        "{a_row}"
    );

    // Offsets are committed for everything taken: a clean stop commits,
    // and a restart reads only what came after.
    let (status, log) = bridge.terminate();
    assert_eq!(status.code(), Some(0), "{log}");
    let committed: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.address())
        .set("group.id", "bridge-in")
        .create()
        .unwrap();
    // The test's producer made the topic (with the broker's default
    // partitions) before the bridge started.
    let partitions = committed
        .fetch_metadata(Some("partner.stock"), Duration::from_secs(10))
        .unwrap()
        .topics()[0]
        .partitions()
        .len();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition("partner.stock", p as i32);
    }
    let offsets = committed
        .committed_offsets(tpl, Duration::from_secs(10))
        .unwrap();
    let total: i64 = offsets
        .elements()
        .iter()
        .map(|e| match e.offset() {
            Offset::Offset(n) => n,
            _ => 0,
        })
        .sum();
    assert_eq!(total, 6, "committed offsets: {offsets:?}\n{log}");

    let later = restocked(5, "p5");
    produce(&broker, "partner.stock", vec![binary(&later)]).await;
    let bridge = Bridge::start(config, &db, &broker);
    wait_until(
        "the later event reached the outbox",
        Duration::from_secs(60),
        || async { rows().await.len() >= 5 },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let ids: Vec<String> = rows().await.iter().map(|r| r.get(0)).collect();
    assert_eq!(
        ids.len(),
        5,
        "re-read after restart: {ids:?}\n{}",
        bridge.log()
    );
    let metrics = bridge.metrics();
    assert!(
        metrics.contains(
            "bv_kafka_bridge_consumed_records_total{topic=\"partner.stock\",outcome=\"written\"} 1"
        ),
        "{metrics}"
    );
}

// ------------------------------------------------------------------ faults

fn deleted(i: usize) -> bv_events::CloudEvent {
    bv_events::CloudEvent::with_id(
        format!("in-{i}"),
        "com.bitvelocity.product.deleted.v1",
        "/partner",
        format!("p{}", i % 7),
        serde_json::json!({"productId": format!("p{}", i % 7), "sku": format!("S{i}"), "revision": 1}),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_stopped_mid_flight_loses_nothing_in_either_direction() {
    let broker = Broker::start();
    let mut pg = PrivatePostgres::start();
    let db = Db::on(pg.port, "postgres".into(), false).await;
    let config = r#"
[[out]]
events = ["com.bitvelocity.stock.*"]

[[in]]
topic = "partner.deletions"
"#;
    let bridge = Bridge::start(config, &db, &broker);
    let subjects = ["a", "b", "c", "d"];
    let out: Vec<_> = (0..300).map(|i| restocked(i, subjects[i % 4])).collect();
    let taken: Vec<_> = (0..300).map(deleted).collect();

    db.publish(&out[..150]).await;
    produce(
        &broker,
        "partner.deletions",
        taken[..150].iter().map(binary).collect(),
    )
    .await;
    wait_until(
        "the bridge is under way both ways",
        Duration::from_secs(60),
        || async {
            db.position("kafka-bridge").await.unwrap_or(0) > 0
                && db
                    .client
                    .query_one(
                        "SELECT count(*) FROM bv_events.outbox WHERE source = '/partner'",
                        &[],
                    )
                    .await
                    .unwrap()
                    .get::<_, i64>(0)
                    > 0
        },
    )
    .await;

    // The database crashes; records keep arriving on Kafka meanwhile.
    pg.stop();
    produce(
        &broker,
        "partner.deletions",
        taken[150..].iter().map(binary).collect(),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    pg.restart();
    let db = Db::on(pg.port, "postgres".into(), false).await;
    db.publish(&out[150..]).await;

    let count = || async {
        db.client
            .query_one(
                "SELECT count(*), count(DISTINCT id) FROM bv_events.outbox WHERE source = '/partner'",
                &[],
            )
            .await
            .map(|r| (r.get::<_, i64>(0), r.get::<_, i64>(1)))
            .unwrap_or((0, 0))
    };
    wait_until(
        "every Kafka record is in the outbox",
        Duration::from_secs(90),
        || async { count().await.0 >= 300 },
    )
    .await;
    assert_eq!(count().await, (300, 300), "log:\n{}", bridge.log());
    let last = db.max_seq().await;
    wait_until(
        "every outbox event is on Kafka",
        Duration::from_secs(90),
        || async { db.position("kafka-bridge").await == Some(last) },
    )
    .await;
    let records = read_topic(&broker, TOPIC, usize::MAX, Duration::from_secs(15));
    let ids: std::collections::BTreeSet<_> =
        records.iter().map(|r| r.headers["ce_id"].clone()).collect();
    for e in &out {
        assert!(
            ids.contains(e.id()),
            "{} lost; log:\n{}",
            e.id(),
            bridge.log()
        );
    }
    assert_in_order_per_subject(&records);
    let metrics = bridge.metrics();
    assert!(
        metrics.contains("bv_kafka_bridge_errors_total{direction=\"in\"}"),
        "{metrics}"
    );
}

// ------------------------------------------------------------------ cdc

/// A private PostgreSQL with logical replication, its `postgres` database
/// holding `shop.orders` (replica identity `FULL`, so updates and deletes
/// carry the whole old row) and `shop.audit` (not captured).
async fn logical_postgres() -> (PrivatePostgres, Db) {
    let pg = PrivatePostgres::start_with(&[("wal_level", "logical")]);
    let db = Db::on(pg.port, "postgres".into(), false).await;
    db.client
        .batch_execute(
            "CREATE SCHEMA shop;
             CREATE TABLE shop.orders (id bigint PRIMARY KEY, customer text NOT NULL,
                                       total numeric(12,2), paid boolean NOT NULL, note jsonb);
             ALTER TABLE shop.orders REPLICA IDENTITY FULL;
             CREATE TABLE shop.audit (id serial PRIMARY KEY, what text);",
        )
        .await
        .unwrap();
    (pg, db)
}

const CDC_CONFIG: &str = "[cdc]\ntables = [\"shop.orders\"]\npoll_interval_ms = 50\n";
const CDC_TOPIC: &str = "bv.cdc.shop.orders";

async fn slot_exists(db: &Db) -> bool {
    db.client
        .query_opt(
            "SELECT 1 FROM pg_replication_slots WHERE slot_name = 'bv_kafka_bridge'",
            &[],
        )
        .await
        .unwrap()
        .is_some()
}

async fn current_lsn(db: &Db) -> String {
    db.client
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .unwrap()
        .get(0)
}

/// Whether the slot's position is at or past `lsn`.
async fn slot_reached(db: &Db, lsn: &str) -> bool {
    db.client
        .query_one(
            "SELECT confirmed_flush_lsn >= $1::text::pg_lsn FROM pg_replication_slots
             WHERE slot_name = 'bv_kafka_bridge'",
            &[&lsn],
        )
        .await
        .unwrap()
        .get(0)
}

fn order_id(r: &Read) -> i64 {
    let key: serde_json::Value = serde_json::from_str(r.key.as_deref().unwrap()).unwrap();
    key["id"].as_i64().unwrap()
}

/// The ids of the `c` events among `records`, each once.
fn created_ids(records: &[Read]) -> std::collections::BTreeSet<i64> {
    records
        .iter()
        .filter(|r| r.value["op"] == "c")
        .map(order_id)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn cdc_produces_row_changes_in_debeziums_envelope_in_commit_order_per_row() {
    let broker = Broker::start();
    let (_pg, db) = logical_postgres().await;
    let bridge = Bridge::start(CDC_CONFIG, &db, &broker);
    wait_until("the slot exists", Duration::from_secs(30), || {
        slot_exists(&db)
    })
    .await;

    db.client
        .batch_execute(
            r#"BEGIN;
               INSERT INTO shop.orders VALUES (1, 'ann', 12.50, false, '{"gift": true}');
               INSERT INTO shop.orders VALUES (2, 'bob', 3.00, false, NULL);
               COMMIT;
               UPDATE shop.orders SET paid = true WHERE id = 1;
               INSERT INTO shop.audit (what) VALUES ('not captured');
               DELETE FROM shop.orders WHERE id = 2;
               INSERT INTO shop.orders VALUES (3, 'cy', NULL, false, NULL);"#,
        )
        .await
        .unwrap();
    let done = current_lsn(&db).await;

    // c1 c2 u1 d2 tombstone2 c3
    let records = read_topic(&broker, CDC_TOPIC, 6, Duration::from_secs(60));
    assert_eq!(records.len(), 6, "{records:#?}\n{}", bridge.log());
    let mut by_row: BTreeMap<i64, Vec<&Read>> = BTreeMap::new();
    for r in &records {
        by_row.entry(order_id(r)).or_default().push(r);
    }
    let ops = |id: i64| -> Vec<String> {
        by_row[&id]
            .iter()
            .map(|r| r.value["op"].as_str().unwrap_or("tombstone").to_string())
            .collect()
    };
    assert_eq!(ops(1), ["c", "u"]);
    assert_eq!(ops(2), ["c", "d", "tombstone"]);
    assert_eq!(ops(3), ["c"]);

    let created = &by_row[&1][0].value;
    assert_eq!(created["before"], serde_json::Value::Null);
    assert_eq!(
        created["after"],
        serde_json::json!({"id": 1, "customer": "ann", "total": "12.50", "paid": false,
                           "note": "{\"gift\": true}"})
    );
    let source = &created["source"];
    assert_eq!(source["connector"], "postgresql");
    assert_eq!(source["name"], "bv.cdc");
    assert_eq!(
        (&source["db"], &source["schema"], &source["table"]),
        (&"postgres".into(), &"shop".into(), &"orders".into())
    );
    assert!(
        source["ts_ms"].as_i64().unwrap() > 1_700_000_000_000,
        "{source}"
    );
    // One transaction, one txId; later changes have later LSNs.
    assert_eq!(source["txId"], by_row[&2][0].value["source"]["txId"]);
    let lsn = |r: &Read| r.value["source"]["lsn"].as_u64().unwrap();
    assert!(lsn(by_row[&1][1]) > lsn(by_row[&1][0]));

    // The key is the primary key, also under replica identity FULL.
    assert_eq!(by_row[&1][1].key.as_deref(), Some(r#"{"id":1}"#));
    let updated = &by_row[&1][1].value;
    assert_eq!(updated["before"]["paid"], false);
    assert_eq!(updated["after"]["paid"], true);
    let deleted = &by_row[&2][1].value;
    assert_eq!(deleted["after"], serde_json::Value::Null);
    assert_eq!(deleted["before"]["customer"], "bob");
    assert_eq!(
        by_row[&3][0].value["after"]["total"],
        serde_json::Value::Null
    );

    // Only the configured table is published, and the slot moved past
    // what was produced.
    let published: Vec<String> = db
        .client
        .query(
            "SELECT schemaname || '.' || tablename FROM pg_publication_tables
             WHERE pubname = 'bv_kafka_bridge'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(published, ["shop.orders"]);
    wait_until("the slot moved on", Duration::from_secs(30), || {
        slot_reached(&db, &done)
    })
    .await;
    let metrics = bridge.metrics();
    assert!(
        metrics.contains(&format!(
            "bv_kafka_bridge_produced_events_total{{topic=\"{CDC_TOPIC}\"}} 6"
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains("bv_kafka_bridge_cdc_lag_bytes"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cdc_loses_nothing_across_a_kill_9_and_moves_the_slot_only_after_the_broker_acknowledged() {
    let mut broker = Broker::start();
    let (_pg, db) = logical_postgres().await;
    let bridge = Bridge::start(CDC_CONFIG, &db, &broker);
    wait_until("the slot exists", Duration::from_secs(30), || {
        slot_exists(&db)
    })
    .await;

    // Rows arrive one transaction each while the bridge is killed and
    // started again.
    let writer = {
        let url = db.url();
        tokio::spawn(async move {
            let client = connect(&url).await;
            for i in 1..=300i64 {
                client
                    .execute(
                        "INSERT INTO shop.orders (id, customer, paid) VALUES ($1, $2, false)",
                        &[&i, &format!("c{i}")],
                    )
                    .await
                    .unwrap();
                if i % 3 == 0 {
                    client
                        .execute("UPDATE shop.orders SET paid = true WHERE id = $1", &[&i])
                        .await
                        .unwrap();
                }
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
        })
    };
    let first = read_topic(&broker, CDC_TOPIC, 20, Duration::from_secs(60));
    assert!(first.len() >= 20, "{}", bridge.log());
    bridge.kill_9();
    let bridge = Bridge::start(CDC_CONFIG, &db, &broker);
    writer.await.unwrap();
    let records = read_topic_until(&broker, CDC_TOPIC, Duration::from_secs(90), |records| {
        created_ids(records).len() >= 300
    });
    assert_eq!(
        created_ids(&records),
        (1..=300).collect(),
        "{}",
        bridge.log()
    );
    // At least once, a repeat bounded by what one round reads; and each
    // row's update comes after its insert.
    assert!(records.len() <= 400 + 1024, "{} records", records.len());
    let mut created = std::collections::HashSet::new();
    for r in &records {
        let id = order_id(r);
        match r.value["op"].as_str().unwrap() {
            "c" => {
                created.insert(id);
            }
            "u" => assert!(created.contains(&id), "row {id} updated before created"),
            other => panic!("unexpected op {other}"),
        }
    }

    // With the broker down, the slot stays before the changes made
    // meanwhile; once it is back, they arrive.
    let settled = current_lsn(&db).await;
    wait_until("the slot caught up", Duration::from_secs(30), || {
        slot_reached(&db, &settled)
    })
    .await;
    broker.kill();
    let before = current_lsn(&db).await;
    for i in 1001..=1050i64 {
        db.client
            .execute(
                "INSERT INTO shop.orders (id, customer, paid) VALUES ($1, 'late', false)",
                &[&i],
            )
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after_first_change = db
        .client
        .query_one(
            "SELECT confirmed_flush_lsn > $1::text::pg_lsn FROM pg_replication_slots
             WHERE slot_name = 'bv_kafka_bridge'",
            &[&before],
        )
        .await
        .unwrap()
        .get::<_, bool>(0);
    assert!(
        !after_first_change,
        "the slot moved past changes no broker acknowledged"
    );
    broker.restart();
    let records = read_topic_until(&broker, CDC_TOPIC, Duration::from_secs(90), |records| {
        created_ids(records).len() >= 50
    });
    assert_eq!(
        created_ids(&records),
        (1001..=1050).collect(),
        "{}",
        bridge.log()
    );
    let (status, log) = bridge.terminate();
    assert!(status.success(), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn cdc_without_logical_replication_is_a_clear_error_and_the_bridge_keeps_trying() {
    let broker = Broker::start();
    let _pg = PrivatePostgres::start();
    let db = Db::on(_pg.port, "postgres".into(), false).await;
    let bridge = Bridge::start("[cdc]\ntables = [\"public.t\"]\n", &db, &broker);
    wait_until("the error is logged", Duration::from_secs(30), || async {
        bridge.log().contains("wal_level = logical")
    })
    .await;
    assert!(
        bridge
            .log()
            .contains("the database's wal_level is `replica`"),
        "{}",
        bridge.log()
    );
    let metrics = bridge.metrics();
    assert!(
        metrics.contains("bv_kafka_bridge_errors_total{direction=\"cdc\"}"),
        "{metrics}"
    );
    // Nothing was created on the way to the error.
    let slots: i64 = db
        .client
        .query_one("SELECT count(*) FROM pg_replication_slots", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(slots, 0);
}
