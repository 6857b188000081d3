//! Telemetry messages ingested together: the parts of a batch that involve
//! no I/O, shared by `iot-ingest` and the native benchmark peer.
//!
//! A batch is a list of messages in arrival order. Each is first
//! [`classify`]'d (accepted, or parked with a reason); the accepted ones
//! are stored with one multi-row insert ([`Columns`]), whose returned keys
//! say which samples are new (a QoS 1 redelivery, or the same sample twice
//! in one batch, is stored once); the detector states of the new samples'
//! metrics are locked in one statement ([`detector_keys`], in key order so
//! that two batches never wait on each other in a cycle), and [`evaluate`]
//! runs the detectors over the new samples in arrival order, so a batch
//! evaluates exactly as the same messages one by one would.

use std::collections::{BTreeSet, HashMap, HashSet};

use crate::detect::{self, Change, DetectorConfig, MetricState};
use crate::device::{DeviceId, DeviceType};
use crate::message::{self, format_ms, Telemetry};

/// How far ahead of the host's clock a device's clock may be.
pub const FUTURE_SKEW_MS: i64 = 60_000;

/// A message that parsed against its device's type, within the window.
#[derive(Debug, Clone)]
pub struct Accepted {
    /// The device.
    pub device: DeviceId,
    /// Its owner.
    pub owner: String,
    /// Its type.
    pub ty: DeviceType,
    /// The values.
    pub telemetry: Telemetry,
}

/// A message refused, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Parked {
    /// The device, when the topic named one.
    pub device: Option<DeviceId>,
    /// Why.
    pub reason: String,
}

/// A registered device's type and owner.
pub type Registered = (DeviceType, String);

/// Accepts or parks one telemetry message of `device` (the topic's):
/// `registry` holds the batch's registered devices, `now_ms` the host's
/// clock, `late_window_ms` how far in the past a sample may be.
pub fn classify(
    device: DeviceId,
    payload: &[u8],
    registry: &HashMap<String, Registered>,
    now_ms: i64,
    late_window_ms: i64,
) -> Result<Accepted, Parked> {
    let park = |device: DeviceId, reason: String| Parked {
        device: Some(device),
        reason,
    };
    let Some((ty, owner)) = registry.get(device.as_str()) else {
        let reason = format!("unknown device {device}");
        return Err(park(device, reason));
    };
    let telemetry = match message::parse(payload, ty) {
        Ok(t) => t,
        Err(invalid) => return Err(park(device, invalid.0)),
    };
    if telemetry.ts_ms < now_ms - late_window_ms || telemetry.ts_ms > now_ms + FUTURE_SKEW_MS {
        let reason = format!(
            "ts {} is outside the accepted window ({} s before to {} s after {})",
            format_ms(telemetry.ts_ms),
            late_window_ms / 1000,
            FUTURE_SKEW_MS / 1000,
            format_ms(now_ms)
        );
        return Err(park(device, reason));
    }
    Ok(Accepted {
        device,
        owner: owner.clone(),
        ty: ty.clone(),
        telemetry,
    })
}

/// The parameters of [`crate::schema::INSERT_TELEMETRY_BATCH`]: one entry
/// per value.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Columns {
    /// Device ids.
    pub devices: Vec<String>,
    /// Times, milliseconds since the epoch.
    pub times: Vec<i64>,
    /// Metric names.
    pub metrics: Vec<String>,
    /// Values, as text (Postgres casts them to `float8`).
    pub values: Vec<String>,
}

impl Columns {
    /// Every value of every accepted message.
    pub fn of(accepted: &[Accepted]) -> Self {
        let mut c = Self::default();
        for a in accepted {
            for (metric, value) in &a.telemetry.values {
                c.devices.push(a.device.as_str().to_string());
                c.times.push(a.telemetry.ts_ms);
                c.metrics.push(metric.clone());
                c.values.push(value.to_string());
            }
        }
        c
    }
}

/// A stored sample: device, metric, time in milliseconds.
pub type Key = (String, String, i64);

/// The (device, metric) pairs whose detector states the stored samples
/// need, sorted: the two arrays of [`crate::schema::LOCK_DETECTORS_BATCH`].
pub fn detector_keys(stored: &HashSet<Key>) -> (Vec<String>, Vec<String>) {
    let pairs: BTreeSet<(&str, &str)> = stored
        .iter()
        .map(|(d, m, _)| (d.as_str(), m.as_str()))
        .collect();
    pairs
        .into_iter()
        .map(|(d, m)| (d.to_string(), m.to_string()))
        .unzip()
}

/// For each message of `accepted`, for each of its values, whether it is
/// stored by this batch: `stored` (what the insert returned) holds its key
/// and no earlier message of the batch had the same key. The rest are
/// duplicates (stored before, or earlier in the batch).
pub fn first_stored(accepted: &[Accepted], stored: &HashSet<Key>) -> Vec<Vec<bool>> {
    let mut seen: HashSet<Key> = HashSet::new();
    accepted
        .iter()
        .map(|a| {
            a.telemetry
                .values
                .iter()
                .map(|(metric, _)| {
                    let key = (
                        a.device.as_str().to_string(),
                        metric.clone(),
                        a.telemetry.ts_ms,
                    );
                    stored.contains(&key) && seen.insert(key)
                })
                .collect()
        })
        .collect()
}

/// What the detectors made of a batch.
#[derive(Debug, Default)]
pub struct Evaluated {
    /// Each incident opened or closed, with the index (in `accepted`) of
    /// the message that caused it.
    pub changes: Vec<(usize, Change)>,
    /// The states to save: device, metric, state.
    pub states: Vec<(String, String, MetricState)>,
}

/// Runs the detectors over the samples of `accepted` that `stored` holds
/// (each key at most once, at its first message), in arrival order,
/// starting from `states` (those missing start empty).
pub fn evaluate(
    config: &DetectorConfig,
    accepted: &[Accepted],
    stored: &HashSet<Key>,
    mut states: HashMap<(String, String), MetricState>,
) -> Evaluated {
    let mut out = Evaluated::default();
    let mut touched: BTreeSet<(String, String)> = BTreeSet::new();
    let first = first_stored(accepted, stored);
    for (i, (a, new)) in accepted.iter().zip(first).enumerate() {
        let device = a.device.as_str();
        let mut mine: Vec<(String, MetricState)> = Vec::new();
        for ((metric, _), new) in a.telemetry.values.iter().zip(new) {
            if new {
                let state = states
                    .remove(&(device.to_string(), metric.clone()))
                    .unwrap_or_default();
                mine.push((metric.clone(), state));
            }
        }
        if mine.is_empty() {
            continue;
        }
        let changes = detect::evaluate(
            config,
            a.telemetry.ts_ms,
            &a.telemetry.values,
            &mut mine,
            |m| a.ty.metric(m).map(|(_, s)| s.rules()).unwrap_or_default(),
        );
        out.changes.extend(changes.into_iter().map(|c| (i, c)));
        for (metric, state) in mine {
            touched.insert((device.to_string(), metric.clone()));
            states.insert((device.to_string(), metric), state);
        }
    }
    out.states = touched
        .into_iter()
        .map(|(d, m)| {
            let s = states.remove(&(d.clone(), m.clone())).unwrap_or_default();
            (d, m, s)
        })
        .collect();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn thermostat() -> DeviceType {
        serde_json::from_value(serde_json::json!({
            "name": "thermostat",
            "metrics": [{"name": "temperature"}, {"name": "humidity"}]
        }))
        .unwrap()
    }

    fn accepted(device: &str, ts_ms: i64, t: f64) -> Accepted {
        let h = 40.0 + (ts_ms / 500 % 7) as f64 / 10.0;
        Accepted {
            device: DeviceId::parse(device).unwrap(),
            owner: "alice".into(),
            ty: thermostat(),
            telemetry: Telemetry {
                seq: 0,
                ts_ms,
                values: vec![("temperature".into(), t), ("humidity".into(), h)],
            },
        }
    }

    fn all_stored(batch: &[Accepted]) -> HashSet<Key> {
        let c = Columns::of(batch);
        (0..c.devices.len())
            .map(|i| (c.devices[i].clone(), c.metrics[i].clone(), c.times[i]))
            .collect()
    }

    #[test]
    fn a_batch_evaluates_as_its_messages_one_by_one() {
        // Two devices interleaved, a spike on one of them.
        let batch: Vec<Accepted> = (0..400)
            .map(|i| {
                let device = if i % 2 == 0 { "dev-a" } else { "dev-b" };
                let t = 20.0 + ((i * 7919 % 23) as f64 - 11.0) / 66.0;
                let t = if i == 300 { 30.0 } else { t };
                accepted(device, 1_000_000 + i as i64 * 500, t)
            })
            .collect();
        let config = DetectorConfig::default();
        let together = evaluate(&config, &batch, &all_stored(&batch), HashMap::new());
        let mut states = HashMap::new();
        let mut alone = Vec::new();
        for (i, a) in batch.iter().enumerate() {
            let one = std::slice::from_ref(a);
            let mine: HashMap<_, _> = states
                .iter()
                .filter(|((d, _), _): &(&(String, String), _)| d == a.device.as_str())
                .map(|(k, v): (&(String, String), &MetricState)| (k.clone(), v.clone()))
                .collect();
            let e = evaluate(&config, one, &all_stored(one), mine);
            alone.extend(e.changes.into_iter().map(|(_, c)| (i, c)));
            for (d, m, s) in e.states {
                states.insert((d, m), s);
            }
        }
        assert_eq!(together.changes, alone);
        // The spike on dev-a opens one incident, and it closes.
        assert_eq!(together.changes.len(), 2, "{:?}", together.changes);
        assert_eq!(together.changes[0].0, 300);
        assert!(together.changes[1].0 > 300 && together.changes[1].0.is_multiple_of(2));
        assert_eq!(together.states.len(), 4);
    }

    #[test]
    fn a_sample_twice_in_a_batch_is_evaluated_once_and_unstored_ones_not_at_all() {
        let batch = vec![
            accepted("dev-a", 1_000, 20.0),
            accepted("dev-a", 1_000, 20.0),
        ];
        let mut stored = all_stored(&batch);
        stored.remove(&("dev-a".into(), "humidity".into(), 1_000));
        // Counted as: the first stores its temperature (its humidity was
        // there before), the second is a duplicate through and through.
        assert_eq!(
            first_stored(&batch, &stored),
            vec![vec![true, false], vec![false, false]]
        );
        let e = evaluate(&DetectorConfig::default(), &batch, &stored, HashMap::new());
        assert_eq!(e.states.len(), 1);
        assert_eq!(e.states[0].2.n, 1);
        assert_eq!(
            detector_keys(&stored),
            (vec!["dev-a".into()], vec!["temperature".into()])
        );
    }

    #[test]
    fn classify_parks_unknown_devices_bad_payloads_and_late_samples() {
        let registry: HashMap<String, Registered> =
            [("dev-a".to_string(), (thermostat(), "alice".to_string()))].into();
        let now = 10_000_000;
        let body = |ts: i64| format!(r#"{{"seq":1,"ts":{ts},"metrics":{{"temperature":20}}}}"#);
        let id = |s: &str| DeviceId::parse(s).unwrap();
        let ok = classify(id("dev-a"), body(now).as_bytes(), &registry, now, 60_000);
        assert!(ok.is_ok(), "{ok:?}");
        let unknown = classify(id("dev-b"), body(now).as_bytes(), &registry, now, 60_000);
        assert_eq!(unknown.unwrap_err().reason, "unknown device dev-b");
        let late = classify(
            id("dev-a"),
            body(now - 120_000).as_bytes(),
            &registry,
            now,
            60_000,
        );
        assert!(late
            .unwrap_err()
            .reason
            .contains("outside the accepted window"));
        assert!(classify(id("dev-a"), b"{", &registry, now, 60_000).is_err());
    }
}
