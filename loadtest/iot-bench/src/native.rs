//! The native baseline: what `bv`'s MQTT trigger and the `iot-ingest`
//! component do, in plain rumqttc + tokio-postgres.
//!
//! One subscription to `devices/+/telemetry` at QoS 1, messages handled
//! one at a time in arrival order, as the trigger does, but acknowledged
//! by rumqttc on receipt (the trigger acknowledges after the handler
//! succeeded): a peer with less to wait for;
//! per message, the component's statements (`bv_iot::schema`), each
//! prepared once on one connection: the device's type, parse
//! (`bv_iot::message`), the window check, then `BEGIN`, the multi-row
//! insert, the detector states locked, evaluated (`bv_iot::detect`) and
//! saved, incidents recorded and published to the outbox, `COMMIT`.

use std::time::Duration;

use anyhow::Context as _;
use bv_iot::detect::{self, DetectorConfig, MetricState, Transition};
use bv_iot::device::{DeviceId, DeviceType};
use bv_iot::schema;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::signal::unix::{signal, SignalKind};
use tokio_postgres::types::ToSql;

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
}

/// The outbox row, as `bv_events_guest::Transaction::publish` writes it.
const PUBLISH: &str = "INSERT INTO bv_events.outbox (id, source, type, subject, time, event) \
     VALUES ($1, $2, $3, $4, $5::text::timestamptz, $6::text::jsonb)";

/// The late window the component uses by default.
const LATE_WINDOW_MS: i64 = 3_600_000;

/// Consumes until SIGTERM or Ctrl-C.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let (host, port) = broker(&args.broker)?;
    let db = connect(&args.db).await?;
    let device_type = db.prepare(schema::DEVICE_TYPE).await?;
    let park = db.prepare(schema::PARK).await?;
    let insert = db.prepare(schema::INSERT_TELEMETRY).await?;
    let lock = db.prepare(schema::LOCK_DETECTORS).await?;
    let save = db.prepare(schema::SAVE_DETECTORS).await?;
    let open = db.prepare(schema::OPEN_ANOMALY).await?;
    let clear = db.prepare(schema::CLEAR_ANOMALY).await?;
    let publish = db.prepare(PUBLISH).await?;

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
        let topic = publish_packet.topic.clone();
        let payload = publish_packet.payload.to_vec();
        let parked = |reason: String, device: Option<String>| {
            let db = &db;
            let park = &park;
            let topic = topic.clone();
            let payload = payload.clone();
            async move {
                db.execute(park, &[&topic, &device, &reason, &payload])
                    .await
                    .map(|_| ())
            }
        };
        let device = match DeviceId::from_telemetry_topic(&topic) {
            Ok(d) => d,
            Err(reason) => {
                parked(reason, None).await?;
                continue;
            }
        };
        let Some(row) = db.query_opt(&device_type, &[&device.as_str()]).await? else {
            parked(format!("unknown device {device}"), Some(device.to_string())).await?;
            continue;
        };
        let ty: DeviceType = serde_json::from_str(row.get::<_, &str>(0))?;
        let owner: String = row.get(1);
        let telemetry = match bv_iot::message::parse(&payload, &ty) {
            Ok(t) => t,
            Err(invalid) => {
                parked(invalid.0, Some(device.to_string())).await?;
                continue;
            }
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis() as i64;
        if telemetry.ts_ms < now - LATE_WINDOW_MS || telemetry.ts_ms > now + 60_000 {
            parked(
                "outside the accepted window".into(),
                Some(device.to_string()),
            )
            .await?;
            continue;
        }
        db.batch_execute("BEGIN").await?;
        let metrics: Vec<String> = telemetry.values.iter().map(|(m, _)| m.clone()).collect();
        let values: Vec<String> = telemetry
            .values
            .iter()
            .map(|(_, v)| v.to_string())
            .collect();
        let stored: Vec<String> = db
            .query(
                &insert,
                &[&device.as_str(), &telemetry.ts_ms, &metrics, &values],
            )
            .await
            .context("insert")?
            .iter()
            .map(|r| r.get(0))
            .collect();
        if !stored.is_empty() {
            let rows = db.query(&lock, &[&device.as_str(), &stored]).await?;
            let mut states: Vec<(String, MetricState)> = stored
                .iter()
                .map(|m| {
                    let state = rows
                        .iter()
                        .find(|r| r.get::<_, &str>(0) == m)
                        .and_then(|r| serde_json::from_str(r.get::<_, &str>(1)).ok())
                        .unwrap_or_default();
                    (m.clone(), state)
                })
                .collect();
            let changes = detect::evaluate(
                &DetectorConfig::default(),
                telemetry.ts_ms,
                &telemetry.values,
                &mut states,
                |m| ty.metric(m).map(|(_, s)| s.rules()).unwrap_or_default(),
            );
            for change in &changes {
                let at = bv_iot::message::format_ms(telemetry.ts_ms);
                let id: i64 = match change.transition {
                    Transition::Raised {
                        kind,
                        score,
                        baseline,
                    } => {
                        let params: [&(dyn ToSql + Sync); 7] = [
                            &device.as_str(),
                            &change.metric,
                            &kind.as_str(),
                            &at,
                            &change.value,
                            &score,
                            &baseline,
                        ];
                        db.query_one(&open, &params).await?.get(0)
                    }
                    Transition::Cleared { .. } => db
                        .query_opt(&clear, &[&device.as_str(), &change.metric, &at])
                        .await?
                        .map_or(0, |r| r.get(0)),
                };
                let (ty, data) = detect::event_data(change, id, device.as_str(), &owner, &at);
                let event = bv_events::CloudEvent::new(ty, detect::SOURCE, device.as_str(), data);
                let json = bv_events::encode(&event)?;
                db.execute(
                    &publish,
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
            let names: Vec<String> = states.iter().map(|(m, _)| m.clone()).collect();
            let json: Vec<String> = states
                .iter()
                .map(|(_, s)| serde_json::to_string(s).expect("serializes"))
                .collect();
            db.execute(&save, &[&device.as_str(), &names, &json])
                .await?;
        }
        db.batch_execute("COMMIT").await?;
    }
}
