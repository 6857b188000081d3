//! `iot-ingest`: device telemetry from MQTT (`[[trigger.mqtt]]` on
//! `devices/+/telemetry`, QoS 1), and the devices' acknowledgements of
//! commands (`devices/+/acks`: the command named by `id` becomes
//! `acknowledged` or `failed`, unless it was settled or timed out before).
//!
//! For each message:
//!
//! 1. the device is the topic's second level; its type comes from
//!    `iot.devices`;
//! 2. the payload is parsed against the type ([`bv_iot::message`]: JSON or
//!    the compact binary form). A message that does not parse, names an
//!    unknown device, or whose time is outside the accepted window
//!    (`iot_late_window_seconds` in the past, a minute in the future) is
//!    **parked** in `iot.parked` with the reason, and acknowledged: a bad
//!    message never blocks the stream;
//! 3. in one transaction, its values go into `iot.telemetry` (one
//!    multi-row statement; the key `(device, metric, time)` makes a QoS 1
//!    redelivery a no-op), the detector state of each stored metric is
//!    updated ([`bv_iot::detect`]), and an incident that opens or closes
//!    is written to `iot.anomalies` and published as
//!    `iot.anomaly.detected` / `iot.anomaly.cleared` through the outbox.
//!
//! A failure of Postgres is an error: the trigger does not acknowledge the
//! message, and the broker sends it again (nothing accepted is lost). A
//! day without a partition yet (the cron creates them ahead) gets one on
//! the spot.

#![deny(missing_docs)]

use std::sync::atomic::AtomicBool;

use anyhow::Context as _;
use bv_events_guest::{CloudEvent, Transaction};
use bv_iot::detect::{self, Change, DetectorConfig, MetricState, Transition};
use bv_iot::device::{Channel, DeviceId, DeviceType};
use bv_iot::message::{self, format_ms as rfc3339, Telemetry};
use bv_iot::schema;
use bv_mqtt_trigger::Metadata;
use bv_service::Migration;
use spin_sdk::pg::{Connection, Decode, ParameterValue};

static MIGRATED: AtomicBool = AtomicBool::new(false);

const MIGRATIONS: [Migration; 2] = bv_service::migrations(bv_iot::schema::MIGRATIONS);

/// How far in the past a sample may be when `iot_late_window_seconds` is
/// not set.
const DEFAULT_LATE_WINDOW_SECONDS: i64 = 3600;
/// How far ahead of this host's clock a device's clock may be.
const FUTURE_SKEW_MS: i64 = 60_000;

async fn on_message(payload: Vec<u8>, metadata: Metadata) -> anyhow::Result<()> {
    let url = spin_sdk::variables::get("db_url")
        .await
        .map_err(|e| anyhow::anyhow!("variable db_url: {e:?}"))?;
    let conn = Connection::open(url)
        .await
        .map_err(|e| anyhow::anyhow!("the IoT database: {e}"))?;
    bv_service::migrate(&conn, bv_iot::schema::COMPONENT, &MIGRATIONS, &MIGRATED)
        .await
        .map_err(|p| anyhow::anyhow!(p.detail))?;
    bv_service::event_log::ensure(&conn)
        .await
        .map_err(|p| anyhow::anyhow!(p.detail))?;
    let topic = metadata.topic.as_str();
    let device = match DeviceId::from_topic(topic) {
        Ok((d, Channel::Telemetry)) => d,
        Ok((d, Channel::Acks)) => return acknowledge(&conn, topic, &d, &payload).await,
        Err(reason) => return park(&conn, topic, None, &reason, &payload).await,
    };
    let Some((ty, owner)) = device_type(&conn, &device).await? else {
        let reason = format!("unknown device {device}");
        return park(&conn, topic, Some(&device), &reason, &payload).await;
    };
    let telemetry = match message::parse(&payload, &ty) {
        Ok(t) => t,
        Err(invalid) => return park(&conn, topic, Some(&device), &invalid.0, &payload).await,
    };
    let now = chrono::Utc::now().timestamp_millis();
    let window = late_window().await?;
    if telemetry.ts_ms < now - window * 1000 || telemetry.ts_ms > now + FUTURE_SKEW_MS {
        let reason = format!(
            "ts {} is outside the accepted window ({window} s before to {} s after {})",
            rfc3339(telemetry.ts_ms),
            FUTURE_SKEW_MS / 1000,
            rfc3339(now)
        );
        return park(&conn, topic, Some(&device), &reason, &payload).await;
    }
    match store(&conn, &device, &owner, &ty, &telemetry).await {
        Err(e) if e.sqlstate() == Some("23514") => {
            // No partition for that day yet: make it, then once more.
            conn.execute(
                "SELECT iot.ensure_partitions(to_timestamp($1::bigint / 1000.0), 1)",
                vec![ParameterValue::Int64(telemetry.ts_ms)],
            )
            .await
            .context("creating the day's partition")?;
            store(&conn, &device, &owner, &ty, &telemetry).await?;
        }
        other => other?,
    }
    Ok(())
}

bv_mqtt_trigger::mqtt_handler!(on_message);

async fn late_window() -> anyhow::Result<i64> {
    match spin_sdk::variables::get("iot_late_window_seconds").await {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse::<i64>()
            .ok()
            .filter(|s| *s >= 1)
            .ok_or_else(|| {
                anyhow::anyhow!("iot_late_window_seconds: `{v}` is not a whole number ≥ 1")
            }),
        _ => Ok(DEFAULT_LATE_WINDOW_SECONDS),
    }
}

/// A device's acknowledgement of a command: `{"id", "ok", "result"?,
/// "error"?}`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Ack {
    id: String,
    ok: bool,
    #[serde(default)]
    result: Option<serde_json::Value>,
    #[serde(default)]
    error: Option<String>,
}

/// Settles the command an acknowledgement names; one for an unknown,
/// settled or timed-out command changes nothing.
async fn acknowledge(
    conn: &Connection,
    topic: &str,
    device: &DeviceId,
    payload: &[u8],
) -> anyhow::Result<()> {
    let ack: Ack = match serde_json::from_slice(payload) {
        Ok(a) => a,
        Err(e) => {
            let reason = format!("not a command acknowledgement: {e}");
            return park(conn, topic, Some(device), &reason, payload).await;
        }
    };
    let state = if ack.ok { "acknowledged" } else { "failed" };
    let settled = conn
        .execute(
            schema::SETTLE_COMMAND,
            vec![
                ParameterValue::Str(ack.id.clone()),
                ParameterValue::Str(device.to_string()),
                ParameterValue::Str(state.to_string()),
                ack.result.map_or(ParameterValue::DbNull, |r| {
                    ParameterValue::Str(r.to_string())
                }),
                ack.error
                    .map_or(ParameterValue::DbNull, ParameterValue::Str),
            ],
        )
        .await
        .context("settling a command")?;
    let outcome = if settled == 1 { "settled" } else { "ignored" };
    bv_service::telemetry::counter("iot_command_acks", &[("outcome", outcome)], 1);
    if settled == 0 {
        println!(
            "ignored an acknowledgement from {device} of command {:?}: unknown, settled or late",
            ack.id
        );
    }
    Ok(())
}

/// The device's type and owner, if it is registered.
async fn device_type(
    conn: &Connection,
    device: &DeviceId,
) -> anyhow::Result<Option<(DeviceType, String)>> {
    let rows = conn
        .query(
            schema::DEVICE_TYPE,
            vec![ParameterValue::Str(device.as_str().to_string())],
        )
        .await?
        .collect()
        .await?;
    let Some(row) = rows.first() else {
        return Ok(None);
    };
    let spec = String::decode(&row[0])?;
    let owner = String::decode(&row[1])?;
    let ty = serde_json::from_str(&spec).context("a stored device type does not parse")?;
    Ok(Some((ty, owner)))
}

async fn park(
    conn: &Connection,
    topic: &str,
    device: Option<&DeviceId>,
    reason: &str,
    payload: &[u8],
) -> anyhow::Result<()> {
    conn.execute(
        schema::PARK,
        vec![
            ParameterValue::Str(topic.to_string()),
            device.map_or(ParameterValue::DbNull, |d| {
                ParameterValue::Str(d.to_string())
            }),
            ParameterValue::Str(reason.to_string()),
            ParameterValue::Binary(payload.to_vec()),
        ],
    )
    .await
    .context("parking a message")?;
    bv_service::telemetry::counter("iot_messages", &[("outcome", "parked")], 1);
    println!("parked a message on {topic}: {reason}");
    Ok(())
}

/// Stores the values and runs the detector, in one transaction.
async fn store(
    conn: &Connection,
    device: &DeviceId,
    owner: &str,
    ty: &DeviceType,
    telemetry: &Telemetry,
) -> Result<(), bv_events_guest::Error> {
    let tx = Transaction::begin(conn).await?;
    let result = store_in(&tx, device, owner, ty, telemetry).await;
    match result {
        Ok(()) => tx.commit().await,
        Err(e) => {
            let _ = tx.rollback().await;
            Err(e)
        }
    }
}

async fn store_in(
    tx: &Transaction<'_>,
    device: &DeviceId,
    owner: &str,
    ty: &DeviceType,
    telemetry: &Telemetry,
) -> Result<(), bv_events_guest::Error> {
    let id = || ParameterValue::Str(device.as_str().to_string());
    let texts =
        |items: Vec<String>| ParameterValue::ArrayStr(items.into_iter().map(Some).collect());
    let stored = tx
        .query(
            schema::INSERT_TELEMETRY,
            vec![
                id(),
                ParameterValue::Int64(telemetry.ts_ms),
                texts(telemetry.values.iter().map(|(m, _)| m.clone()).collect()),
                texts(
                    telemetry
                        .values
                        .iter()
                        .map(|(_, v)| v.to_string())
                        .collect(),
                ),
            ],
        )
        .await?
        .collect()
        .await
        .map_err(postgres("insert"))?;
    let stored: Vec<String> = stored
        .iter()
        .filter_map(|r| String::decode(&r[0]).ok())
        .collect();
    if stored.len() < telemetry.values.len() {
        bv_service::telemetry::counter("iot_messages", &[("outcome", "duplicate")], 1);
    }
    if stored.is_empty() {
        return Ok(());
    }
    bv_service::telemetry::counter("iot_messages", &[("outcome", "stored")], 1);
    let rows = tx
        .query(schema::LOCK_DETECTORS, vec![id(), texts(stored.clone())])
        .await?
        .collect()
        .await
        .map_err(postgres("detector"))?;
    let mut states: Vec<(String, MetricState)> = stored
        .iter()
        .map(|metric| {
            let state = rows
                .iter()
                .find(|r| String::decode(&r[0]).ok().as_deref() == Some(metric.as_str()))
                .and_then(|r| String::decode(&r[1]).ok())
                .and_then(|s| serde_json::from_str(&s).ok())
                .unwrap_or_default();
            (metric.clone(), state)
        })
        .collect();
    let changes = detect::evaluate(
        &DetectorConfig::default(),
        telemetry.ts_ms,
        &telemetry.values,
        &mut states,
        |metric| {
            ty.metric(metric)
                .map(|(_, s)| s.rules())
                .unwrap_or_default()
        },
    );
    for change in &changes {
        incident(tx, device, owner, change, telemetry.ts_ms).await?;
    }
    tx.execute(
        schema::SAVE_DETECTORS,
        vec![
            id(),
            texts(states.iter().map(|(m, _)| m.clone()).collect()),
            texts(
                states
                    .iter()
                    .map(|(_, s)| serde_json::to_string(s).expect("a state serializes"))
                    .collect(),
            ),
        ],
    )
    .await?;
    Ok(())
}

/// Records an incident opening or closing, and publishes it.
async fn incident(
    tx: &Transaction<'_>,
    device: &DeviceId,
    owner: &str,
    change: &Change,
    ts_ms: i64,
) -> Result<(), bv_events_guest::Error> {
    let at = rfc3339(ts_ms);
    let mut params = vec![
        ParameterValue::Str(device.as_str().to_string()),
        ParameterValue::Str(change.metric.clone()),
    ];
    let sql = match change.transition {
        Transition::Raised {
            kind,
            score,
            baseline,
        } => {
            bv_service::telemetry::counter("iot_anomalies", &[("kind", kind.as_str())], 1);
            params.extend([
                ParameterValue::Str(kind.as_str().to_string()),
                ParameterValue::Str(at.clone()),
                ParameterValue::Floating64(change.value),
                ParameterValue::Floating64(score),
                ParameterValue::Floating64(baseline),
            ]);
            schema::OPEN_ANOMALY
        }
        Transition::Cleared { .. } => {
            params.push(ParameterValue::Str(at.clone()));
            schema::CLEAR_ANOMALY
        }
    };
    let rows = tx
        .query(sql, params)
        .await?
        .collect()
        .await
        .map_err(postgres("anomaly"))?;
    let id = rows
        .first()
        .and_then(|r| i64::decode(&r[0]).ok())
        .unwrap_or(0);
    let (ty, data) = detect::event_data(change, id, device.as_str(), owner, &at);
    tx.publish(&CloudEvent::new(ty, detect::SOURCE, device.as_str(), data))
        .await
}

fn postgres(operation: &'static str) -> impl Fn(spin_sdk::pg::Error) -> bv_events_guest::Error {
    move |source| bv_events_guest::Error::Postgres { operation, source }
}
