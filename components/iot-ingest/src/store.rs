//! Stores a batch of telemetry messages in one transaction.

use std::collections::{HashMap, HashSet};

use anyhow::Context as _;
use bv_events_guest::{CloudEvent, Transaction};
use bv_iot::batch::{self, Accepted, Columns, Key, Parked, Registered};
use bv_iot::detect::{self, Change, DetectorConfig, MetricState, Transition};
use bv_iot::device::{Channel, DeviceId};
use bv_iot::message::format_ms as rfc3339;
use bv_iot::schema;
use spin_sdk::pg::{Connection, Decode, ParameterValue};

/// A telemetry message as the trigger gave it.
pub struct Inbound {
    /// `devices/<id>/telemetry`.
    pub topic: String,
    /// JSON or the binary form.
    pub payload: Vec<u8>,
}

/// Stores `messages` together; each gets its own result. When the batch
/// fails as a whole, each message is tried alone, so that one Postgres
/// refuses fails alone.
pub async fn ingest(messages: Vec<Inbound>) -> Vec<Result<(), String>> {
    let n = messages.len();
    bv_service::telemetry::observe("iot_ingest_batch_messages", &[], n as f64);
    match ingest_together(&messages).await {
        Ok(()) => vec![Ok(()); n],
        Err(e) if n == 1 => vec![Err(format!("{e:#}"))],
        Err(e) => {
            println!("a batch of {n} messages failed ({e:#}); storing them one by one");
            let mut results = Vec::with_capacity(n);
            for m in &messages {
                let alone = ingest_together(std::slice::from_ref(m)).await;
                results.push(alone.map_err(|e| format!("{e:#}")));
            }
            results
        }
    }
}

async fn ingest_together(messages: &[Inbound]) -> anyhow::Result<()> {
    let conn = crate::open().await?;
    let now = chrono::Utc::now().timestamp_millis();
    let window_ms = crate::late_window().await? * 1000;
    // Parked in arrival order, as they would be one by one.
    let mut parked: Vec<(usize, &Inbound, Parked)> = Vec::new();
    let mut named: Vec<(usize, &Inbound, DeviceId)> = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        match DeviceId::from_topic(&m.topic) {
            Ok((device, Channel::Telemetry)) => named.push((i, m, device)),
            Ok((device, Channel::Acks)) => parked.push((
                i,
                m,
                Parked {
                    device: Some(device),
                    reason: "an acknowledgement among telemetry".into(),
                },
            )),
            Err(reason) => parked.push((
                i,
                m,
                Parked {
                    device: None,
                    reason,
                },
            )),
        }
    }
    let registry = registered(&conn, &named).await?;
    let mut accepted = Vec::with_capacity(named.len());
    for (i, m, device) in named {
        match batch::classify(device, &m.payload, &registry, now, window_ms) {
            Ok(a) => accepted.push(a),
            Err(p) => parked.push((i, m, p)),
        }
    }
    parked.sort_by_key(|(i, _, _)| *i);
    let parked: Vec<(&Inbound, Parked)> = parked.into_iter().map(|(_, m, p)| (m, p)).collect();
    match store(&conn, &parked, &accepted).await {
        Err(e) if e.sqlstate() == Some("23514") => {
            // No partition for a day yet: make them, then once more.
            let mut days: Vec<i64> = accepted
                .iter()
                .map(|a| a.telemetry.ts_ms.div_euclid(86_400_000))
                .collect();
            days.sort_unstable();
            days.dedup();
            for day in days {
                conn.execute(
                    "SELECT iot.ensure_partitions(to_timestamp($1::bigint * 86400), 1)",
                    vec![ParameterValue::Int64(day)],
                )
                .await
                .context("creating a day's partition")?;
            }
            store(&conn, &parked, &accepted).await?;
        }
        other => other?,
    }
    for (m, p) in &parked {
        crate::parked(&m.topic, &p.reason);
    }
    Ok(())
}

/// The registered devices among those `named`, with their types and
/// owners.
async fn registered(
    conn: &Connection,
    named: &[(usize, &Inbound, DeviceId)],
) -> anyhow::Result<HashMap<String, Registered>> {
    let mut ids: Vec<Option<String>> = named
        .iter()
        .map(|(_, _, d)| Some(d.as_str().to_string()))
        .collect();
    ids.sort();
    ids.dedup();
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let rows = conn
        .query(schema::DEVICE_TYPES, vec![ParameterValue::ArrayStr(ids)])
        .await?
        .collect()
        .await?;
    let mut registry = HashMap::with_capacity(rows.len());
    for row in rows {
        let id = String::decode(&row[0])?;
        let ty = serde_json::from_str(&String::decode(&row[1])?)
            .context("a stored device type does not parse")?;
        registry.insert(id, (ty, String::decode(&row[2])?));
    }
    Ok(registry)
}

async fn store(
    conn: &Connection,
    parked: &[(&Inbound, Parked)],
    accepted: &[Accepted],
) -> Result<(), bv_events_guest::Error> {
    let tx = Transaction::begin(conn).await?;
    match store_in(&tx, parked, accepted).await {
        Ok(()) => tx.commit().await,
        Err(e) => {
            let _ = tx.rollback().await;
            Err(e)
        }
    }
}

fn texts(items: impl IntoIterator<Item = String>) -> ParameterValue {
    ParameterValue::ArrayStr(items.into_iter().map(Some).collect())
}

async fn store_in(
    tx: &Transaction<'_>,
    parked: &[(&Inbound, Parked)],
    accepted: &[Accepted],
) -> Result<(), bv_events_guest::Error> {
    for (m, p) in parked {
        let params = crate::park_params(&m.topic, p.device.as_ref(), &p.reason, &m.payload);
        tx.execute(schema::PARK, params).await?;
    }
    if accepted.is_empty() {
        return Ok(());
    }
    let columns = Columns::of(accepted);
    let rows = tx
        .query(
            schema::INSERT_TELEMETRY_BATCH,
            vec![
                texts(columns.devices),
                ParameterValue::ArrayInt64(columns.times.into_iter().map(Some).collect()),
                texts(columns.metrics),
                texts(columns.values),
            ],
        )
        .await?
        .collect()
        .await
        .map_err(postgres("insert"))?;
    let stored: HashSet<Key> = rows
        .iter()
        .filter_map(|r| {
            Some((
                String::decode(&r[0]).ok()?,
                String::decode(&r[1]).ok()?,
                i64::decode(&r[2]).ok()?,
            ))
        })
        .collect();
    count_outcomes(accepted, &stored);
    if stored.is_empty() {
        return Ok(());
    }
    let (devices, metrics) = batch::detector_keys(&stored);
    let rows = tx
        .query(
            schema::LOCK_DETECTORS_BATCH,
            vec![texts(devices), texts(metrics)],
        )
        .await?
        .collect()
        .await
        .map_err(postgres("detector"))?;
    let states: HashMap<(String, String), MetricState> = rows
        .iter()
        .filter_map(|r| {
            let key = (String::decode(&r[0]).ok()?, String::decode(&r[1]).ok()?);
            let state = serde_json::from_str(&String::decode(&r[2]).ok()?).ok()?;
            Some((key, state))
        })
        .collect();
    let evaluated = batch::evaluate(&DetectorConfig::default(), accepted, &stored, states);
    for (i, change) in &evaluated.changes {
        let a = &accepted[*i];
        incident(tx, &a.device, &a.owner, change, a.telemetry.ts_ms).await?;
    }
    let (mut devices, mut metrics, mut states) = (Vec::new(), Vec::new(), Vec::new());
    for (d, m, s) in evaluated.states {
        devices.push(d);
        metrics.push(m);
        states.push(serde_json::to_string(&s).expect("a state serializes"));
    }
    tx.execute(
        schema::SAVE_DETECTORS_BATCH,
        vec![texts(devices), texts(metrics), texts(states)],
    )
    .await?;
    Ok(())
}

/// Counts each message as stored (some value new) and as a duplicate (some
/// value stored before, or earlier in the batch).
fn count_outcomes(accepted: &[Accepted], stored: &HashSet<Key>) {
    for values in batch::first_stored(accepted, stored) {
        if values.iter().any(|&new| new) {
            bv_service::telemetry::counter("iot_messages", &[("outcome", "stored")], 1);
        }
        if values.iter().any(|&new| !new) {
            bv_service::telemetry::counter("iot_messages", &[("outcome", "duplicate")], 1);
        }
    }
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
