//! `iot-ingest`: device telemetry from MQTT (`[[trigger.mqtt]]` on
//! `devices/+/telemetry`, QoS 1), and the devices' acknowledgements of
//! commands (`devices/+/acks`: the command named by `id` becomes
//! `acknowledged` or `failed`, unless it was settled or timed out before).
//!
//! Telemetry messages that arrive together (the component's
//! `message_batch`, see [`gather`]) are stored together. For each batch:
//!
//! 1. each message's device is the topic's second level; the types of all
//!    the batch's devices come from `iot.devices` in one query;
//! 2. each payload is parsed against its type ([`bv_iot::message`]: JSON or
//!    the compact binary form). A message that does not parse, names an
//!    unknown device, or whose time is outside the accepted window
//!    (`iot_late_window_seconds` in the past, a minute in the future) is
//!    **parked** in `iot.parked` with the reason, and acknowledged: a bad
//!    message never blocks the stream;
//! 3. in one transaction ([`store`]), all the values go into
//!    `iot.telemetry` (one multi-row statement; the key `(device, metric,
//!    time)` makes a QoS 1 redelivery a no-op), the detector states of the
//!    stored metrics are locked, updated in arrival order
//!    ([`bv_iot::batch::evaluate`]) and saved, and an incident that opens or
//!    closes is written to `iot.anomalies` and published as
//!    `iot.anomaly.detected` / `iot.anomaly.cleared` through the outbox.
//!
//! A failure of Postgres is an error: the trigger does not acknowledge the
//! messages, and the broker sends them again (nothing accepted is lost). A
//! batch that fails is tried again message by message, so that one message
//! Postgres refuses cannot hold back the others. A day without a partition
//! yet (the cron creates them ahead) gets one on the spot.

#![deny(missing_docs)]

mod gather;
mod store;

use std::sync::atomic::AtomicBool;

use anyhow::Context as _;
use bv_iot::device::{Channel, DeviceId};
use bv_iot::schema;
use bv_mqtt_trigger::Metadata;
use bv_service::Migration;
use spin_sdk::pg::{Connection, ParameterValue};

static MIGRATED: AtomicBool = AtomicBool::new(false);

const MIGRATIONS: [Migration; 2] = bv_service::migrations(bv_iot::schema::MIGRATIONS);

/// How far in the past a sample may be when `iot_late_window_seconds` is
/// not set.
const DEFAULT_LATE_WINDOW_SECONDS: i64 = 3600;

async fn on_message(payload: Vec<u8>, metadata: Metadata) -> anyhow::Result<()> {
    let topic = metadata.topic;
    if let Ok((device, Channel::Acks)) = DeviceId::from_topic(&topic) {
        let conn = open().await?;
        return acknowledge(&conn, &topic, &device, &payload).await;
    }
    gather::submit(store::Inbound { topic, payload }).await
}

bv_mqtt_trigger::mqtt_handler!(on_message);

/// The IoT database, migrated, with the event log's tables.
async fn open() -> anyhow::Result<Connection> {
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
    Ok(conn)
}

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

async fn park(
    conn: &Connection,
    topic: &str,
    device: Option<&DeviceId>,
    reason: &str,
    payload: &[u8],
) -> anyhow::Result<()> {
    conn.execute(schema::PARK, park_params(topic, device, reason, payload))
        .await
        .context("parking a message")?;
    parked(topic, reason);
    Ok(())
}

/// The parameters of [`schema::PARK`].
fn park_params(
    topic: &str,
    device: Option<&DeviceId>,
    reason: &str,
    payload: &[u8],
) -> Vec<ParameterValue> {
    vec![
        ParameterValue::Str(topic.to_string()),
        device.map_or(ParameterValue::DbNull, |d| {
            ParameterValue::Str(d.to_string())
        }),
        ParameterValue::Str(reason.to_string()),
        ParameterValue::Binary(payload.to_vec()),
    ]
}

/// Counts and logs a parked message.
fn parked(topic: &str, reason: &str) {
    bv_service::telemetry::counter("iot_messages", &[("outcome", "parked")], 1);
    println!("parked a message on {topic}: {reason}");
}
