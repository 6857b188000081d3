//! The native baseline: what `bv`'s MQTT trigger and the `iot-ingest`
//! component do, in plain rumqttc + tokio-postgres.
//!
//! One subscription to `devices/+/telemetry` at QoS 1, messages handled
//! in arrival order, as the trigger does, but acknowledged by rumqttc on
//! receipt (the trigger acknowledges after the handler succeeded): a peer
//! with less to wait for. The messages waiting, up to `--batch` (the
//! component's `message_batch`), are stored together with the
//! component's statements (`bv_iot::schema`), each prepared once on one
//! connection, and the same batch logic (`bv_iot::batch`): the devices'
//! types in one query, parse and window check, then `BEGIN`, the
//! multi-row insert, the detector states locked, evaluated and saved,
//! incidents recorded and published to the outbox, `COMMIT`.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use anyhow::Context as _;
use bv_iot::batch::{self, Accepted, Columns, Key, Parked, Registered};
use bv_iot::detect::{self, DetectorConfig, MetricState, Transition};
use bv_iot::device::DeviceId;
use bv_iot::schema;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, Publish, QoS};
use tokio::signal::unix::{signal, SignalKind};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Statement};

use crate::{broker, connect};

/// `native-consumer` options.
#[derive(clap::Args)]
pub struct Args {
    /// The broker, mqtt://host:port.
    #[arg(long, default_value = "mqtt://127.0.0.1:1883")]
    broker: String,
    /// The database.
    #[arg(long)]
    db: String,
    /// Most messages stored together (the component's `message_batch`).
    #[arg(long, default_value_t = 64)]
    batch: usize,
}

/// The outbox row, as `bv_events_guest::Transaction::publish` writes it.
const PUBLISH: &str = "INSERT INTO bv_events.outbox (id, source, type, subject, time, event) \
     VALUES ($1, $2, $3, $4, $5::text::timestamptz, $6::text::jsonb)";

/// The late window the component uses by default.
const LATE_WINDOW_MS: i64 = 3_600_000;

/// The component's statements, prepared.
struct Statements {
    device_types: Statement,
    park: Statement,
    insert: Statement,
    lock: Statement,
    save: Statement,
    open: Statement,
    clear: Statement,
    publish: Statement,
}

/// Consumes until SIGTERM or Ctrl-C.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let (host, port) = broker(&args.broker)?;
    let db = connect(&args.db).await?;
    let st = Statements {
        device_types: db.prepare(schema::DEVICE_TYPES).await?,
        park: db.prepare(schema::PARK).await?,
        insert: db.prepare(schema::INSERT_TELEMETRY_BATCH).await?,
        lock: db.prepare(schema::LOCK_DETECTORS_BATCH).await?,
        save: db.prepare(schema::SAVE_DETECTORS_BATCH).await?,
        open: db.prepare(schema::OPEN_ANOMALY).await?,
        clear: db.prepare(schema::CLEAR_ANOMALY).await?,
        publish: db.prepare(PUBLISH).await?,
    };

    let mut options = MqttOptions::new(format!("bench-native-{}", std::process::id()), host, port);
    options.set_keep_alive(Duration::from_secs(30));
    let (client, mut eventloop) = AsyncClient::new(options, 256);
    // The event loop runs on its own, as the trigger's does.
    let (tx, mut rx) = tokio::sync::mpsc::channel(256);
    let subscriber = client.clone();
    tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    let _ = subscriber.try_subscribe("devices/+/telemetry", QoS::AtLeastOnce);
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if tx.send(p).await.is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    eprintln!("native consumer: {e}; reconnecting");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    });
    let mut term = signal(SignalKind::terminate())?;
    eprintln!("native consumer: subscribing to devices/+/telemetry");
    loop {
        let publish_packet = tokio::select! {
            p = rx.recv() => match p {
                Some(p) => p,
                None => return Ok(()),
            },
            _ = term.recv() => return Ok(()),
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        let mut messages = vec![publish_packet];
        while messages.len() < args.batch.max(1) {
            match rx.try_recv() {
                Ok(p) => messages.push(p),
                Err(_) => break,
            }
        }
        ingest(&db, &st, &messages).await?;
    }
}

/// Stores `messages` in one transaction, as the component does.
async fn ingest(db: &Client, st: &Statements, messages: &[Publish]) -> anyhow::Result<()> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64;
    let mut parked: Vec<(&Publish, Parked)> = Vec::new();
    let mut named: Vec<(&Publish, DeviceId)> = Vec::new();
    for m in messages {
        match DeviceId::from_telemetry_topic(&m.topic) {
            Ok(d) => named.push((m, d)),
            Err(reason) => parked.push((
                m,
                Parked {
                    device: None,
                    reason,
                },
            )),
        }
    }
    let mut ids: Vec<&str> = named.iter().map(|(_, d)| d.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    let mut registry: HashMap<String, Registered> = HashMap::new();
    for row in db.query(&st.device_types, &[&ids]).await? {
        let ty = serde_json::from_str(row.get::<_, &str>(1))?;
        registry.insert(row.get(0), (ty, row.get(2)));
    }
    let mut accepted: Vec<Accepted> = Vec::new();
    for (m, device) in named {
        match batch::classify(device, &m.payload, &registry, now, LATE_WINDOW_MS) {
            Ok(a) => accepted.push(a),
            Err(p) => parked.push((m, p)),
        }
    }
    db.batch_execute("BEGIN").await?;
    for (m, p) in &parked {
        let device = p.device.as_ref().map(|d| d.to_string());
        db.execute(
            &st.park,
            &[&m.topic, &device, &p.reason, &m.payload.to_vec()],
        )
        .await?;
    }
    let columns = Columns::of(&accepted);
    let stored: HashSet<Key> = db
        .query(
            &st.insert,
            &[
                &columns.devices,
                &columns.times,
                &columns.metrics,
                &columns.values,
            ],
        )
        .await
        .context("insert")?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    if !stored.is_empty() {
        let (devices, metrics) = batch::detector_keys(&stored);
        let states: HashMap<(String, String), MetricState> = db
            .query(&st.lock, &[&devices, &metrics])
            .await?
            .iter()
            .filter_map(|r| {
                let state = serde_json::from_str(r.get::<_, &str>(2)).ok()?;
                Some(((r.get(0), r.get(1)), state))
            })
            .collect();
        let evaluated = batch::evaluate(&DetectorConfig::default(), &accepted, &stored, states);
        for (i, change) in &evaluated.changes {
            let a = &accepted[*i];
            let device = a.device.as_str();
            let at = bv_iot::message::format_ms(a.telemetry.ts_ms);
            let id: i64 = match change.transition {
                Transition::Raised {
                    kind,
                    score,
                    baseline,
                } => {
                    let params: [&(dyn ToSql + Sync); 7] = [
                        &device,
                        &change.metric,
                        &kind.as_str(),
                        &at,
                        &change.value,
                        &score,
                        &baseline,
                    ];
                    db.query_one(&st.open, &params).await?.get(0)
                }
                Transition::Cleared { .. } => db
                    .query_opt(&st.clear, &[&device, &change.metric, &at])
                    .await?
                    .map_or(0, |r| r.get(0)),
            };
            let (ty, data) = detect::event_data(change, id, device, &a.owner, &at);
            let event = bv_events::CloudEvent::new(ty, detect::SOURCE, device, data);
            let json = bv_events::encode(&event)?;
            db.execute(
                &st.publish,
                &[
                    &event.id(),
                    &event.source(),
                    &event.ty(),
                    &event.subject(),
                    &event.time(),
                    &json,
                ],
            )
            .await?;
        }
        let (mut devices, mut metrics, mut json) = (Vec::new(), Vec::new(), Vec::new());
        for (d, m, s) in evaluated.states {
            devices.push(d);
            metrics.push(m);
            json.push(serde_json::to_string(&s).expect("serializes"));
        }
        db.execute(&st.save, &[&devices, &metrics, &json]).await?;
    }
    db.batch_execute("COMMIT").await?;
    Ok(())
}
