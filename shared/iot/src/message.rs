//! The two forms of a telemetry message, parsed into [`Telemetry`].
//!
//! **JSON** (docs/IOT.md):
//!
//! ```json
//! {"seq": 17, "ts": "2026-12-07T10:00:00.250Z", "metrics": {"temperature": 21.5}}
//! ```
//!
//! `ts` may also be milliseconds since the epoch (a number). `seq` is the
//! device's message counter (informational; duplicates are found by time).
//!
//! **Binary**, for constrained devices (big-endian):
//!
//! | bytes | field |
//! |---|---|
//! | 1 | magic `0xB7` |
//! | 1 | version `1` |
//! | 4 | `seq`, u32 |
//! | 8 | `ts`, i64 milliseconds since the epoch |
//! | 1 | count `n` |
//! | n × 5 | metric index (u8, the position in the device type) and value (f32) |

use serde::Deserialize;

use crate::device::DeviceType;

/// The first byte of the binary form (never the first byte of JSON text).
pub const BINARY_MAGIC: u8 = 0xB7;
/// The binary form's version.
pub const BINARY_VERSION: u8 = 1;
/// The largest message accepted, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024;

/// One telemetry message, checked against its device type.
#[derive(Debug, Clone, PartialEq)]
pub struct Telemetry {
    /// The device's counter.
    pub seq: u64,
    /// When it was measured, milliseconds since the epoch.
    pub ts_ms: i64,
    /// Metric name and value, in the device type's order; each at most once.
    pub values: Vec<(String, f64)>,
}

/// Why a message was refused: it is parked with this text.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

fn invalid(text: impl Into<String>) -> Invalid {
    Invalid(text.into())
}

/// Parses either form (the first byte decides) against `ty`.
pub fn parse(payload: &[u8], ty: &DeviceType) -> Result<Telemetry, Invalid> {
    if payload.len() > MAX_MESSAGE_BYTES {
        return Err(invalid(format!(
            "message of {} bytes is larger than {MAX_MESSAGE_BYTES}",
            payload.len()
        )));
    }
    match payload.first() {
        None => Err(invalid("empty message")),
        Some(&BINARY_MAGIC) => parse_binary(payload, ty),
        Some(_) => parse_json(payload, ty),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonMessage {
    seq: u64,
    ts: serde_json::Value,
    metrics: serde_json::Map<String, serde_json::Value>,
}

fn parse_json(payload: &[u8], ty: &DeviceType) -> Result<Telemetry, Invalid> {
    let m: JsonMessage = serde_json::from_slice(payload)
        .map_err(|e| invalid(format!("not a telemetry JSON message: {e}")))?;
    let ts_ms = match &m.ts {
        serde_json::Value::Number(n) => n
            .as_i64()
            .ok_or_else(|| invalid("ts: milliseconds must be a whole number"))?,
        serde_json::Value::String(s) => rfc3339_ms(s)
            .ok_or_else(|| invalid(format!("ts: {s:?} is not an RFC 3339 timestamp")))?,
        _ => return Err(invalid("ts: must be RFC 3339 text or milliseconds")),
    };
    let mut values = Vec::with_capacity(m.metrics.len());
    for (name, value) in &m.metrics {
        let value = value
            .as_f64()
            .ok_or_else(|| invalid(format!("metrics.{name}: must be a number")))?;
        values.push((name.clone(), value));
    }
    finish(m.seq, ts_ms, values, ty)
}

fn parse_binary(payload: &[u8], ty: &DeviceType) -> Result<Telemetry, Invalid> {
    const HEAD: usize = 1 + 1 + 4 + 8 + 1;
    if payload.len() < HEAD {
        return Err(invalid(format!(
            "binary message of {} bytes is shorter than its {HEAD}-byte header",
            payload.len()
        )));
    }
    if payload[1] != BINARY_VERSION {
        return Err(invalid(format!(
            "binary message version {} (only {BINARY_VERSION} is known)",
            payload[1]
        )));
    }
    let seq = u32::from_be_bytes(payload[2..6].try_into().expect("4 bytes"));
    let ts_ms = i64::from_be_bytes(payload[6..14].try_into().expect("8 bytes"));
    let count = payload[14] as usize;
    let body = &payload[HEAD..];
    if body.len() != count * 5 {
        return Err(invalid(format!(
            "binary message says {count} values ({} bytes) but carries {} bytes",
            count * 5,
            body.len()
        )));
    }
    let mut values = Vec::with_capacity(count);
    for chunk in body.chunks_exact(5) {
        let index = chunk[0] as usize;
        let metric = ty.metrics.get(index).ok_or_else(|| {
            invalid(format!(
                "binary metric index {index}: type {} has {} metrics",
                ty.name,
                ty.metrics.len()
            ))
        })?;
        let value = f32::from_be_bytes(chunk[1..5].try_into().expect("4 bytes"));
        values.push((metric.name.clone(), f64::from(value)));
    }
    finish(u64::from(seq), ts_ms, values, ty)
}

/// Checks names, ranges and repeats, and puts the values in type order.
fn finish(
    seq: u64,
    ts_ms: i64,
    mut values: Vec<(String, f64)>,
    ty: &DeviceType,
) -> Result<Telemetry, Invalid> {
    if values.is_empty() {
        return Err(invalid("metrics: no values"));
    }
    let mut order = Vec::with_capacity(values.len());
    for (name, value) in &values {
        let (index, spec) = ty.metric(name).ok_or_else(|| {
            invalid(format!(
                "metrics.{name}: type {} has no such metric",
                ty.name
            ))
        })?;
        if order.contains(&index) {
            return Err(invalid(format!("metrics.{name}: given twice")));
        }
        if !value.is_finite() {
            return Err(invalid(format!(
                "metrics.{name}: {value} is not a finite number"
            )));
        }
        if spec.min.is_some_and(|lo| *value < lo) || spec.max.is_some_and(|hi| *value > hi) {
            return Err(invalid(format!(
                "metrics.{name}: {value} is outside [{}, {}]",
                spec.min.map_or("-inf".into(), |v| v.to_string()),
                spec.max.map_or("inf".into(), |v| v.to_string())
            )));
        }
        order.push(index);
    }
    let mut indexed: Vec<(usize, (String, f64))> =
        order.into_iter().zip(values.drain(..)).collect();
    indexed.sort_by_key(|(i, _)| *i);
    Ok(Telemetry {
        seq,
        ts_ms,
        values: indexed.into_iter().map(|(_, v)| v).collect(),
    })
}

/// Encodes the binary form: what a constrained device sends (the simulator
/// and the tests use it).
pub fn encode_binary(seq: u32, ts_ms: i64, values: &[(u8, f32)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(15 + values.len() * 5);
    out.push(BINARY_MAGIC);
    out.push(BINARY_VERSION);
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(&ts_ms.to_be_bytes());
    out.push(values.len() as u8);
    for (index, value) in values {
        out.push(*index);
        out.extend_from_slice(&value.to_be_bytes());
    }
    out
}

/// An RFC 3339 timestamp to milliseconds since the epoch.
pub fn rfc3339_ms(s: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.timestamp_millis())
}

/// Milliseconds since the epoch as RFC 3339 (UTC, milliseconds).
pub fn format_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn thermostat() -> DeviceType {
        serde_json::from_value(serde_json::json!({
            "name": "thermostat",
            "metrics": [
                {"name": "temperature", "min": -40.0, "max": 85.0},
                {"name": "humidity", "min": 0.0, "max": 100.0}
            ]
        }))
        .unwrap()
    }

    #[test]
    fn json_and_binary_give_the_same_telemetry() {
        let ty = thermostat();
        let json = br#"{"seq": 7, "ts": "2026-12-07T10:00:00.250Z", "metrics": {"humidity": 40, "temperature": 21.5}}"#;
        let a = parse(json, &ty).unwrap();
        assert_eq!(a.ts_ms, 1_796_637_600_250);
        assert_eq!(
            a.values,
            vec![("temperature".into(), 21.5), ("humidity".into(), 40.0)]
        );
        let b = parse(
            &encode_binary(7, 1_796_637_600_250, &[(1, 40.0), (0, 21.5)]),
            &ty,
        )
        .unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn bad_messages_say_why() {
        let ty = thermostat();
        let why = |p: &[u8]| parse(p, &ty).unwrap_err().0;
        assert!(why(b"").contains("empty"));
        assert!(why(b"{").contains("not a telemetry JSON message"));
        assert!(why(br#"{"seq":1,"ts":"yesterday","metrics":{"temperature":1}}"#).contains("ts:"));
        assert!(why(br#"{"seq":1,"ts":0,"metrics":{"pressure":1}}"#).contains("no such metric"));
        assert!(why(br#"{"seq":1,"ts":0,"metrics":{"temperature":99}}"#).contains("outside"));
        assert!(why(br#"{"seq":1,"ts":0,"metrics":{}}"#).contains("no values"));
        assert!(why(&encode_binary(1, 0, &[(5, 1.0)])).contains("index 5"));
        assert!(why(&encode_binary(1, 0, &[(0, 1.0), (0, 2.0)])).contains("twice"));
        assert!(why(&encode_binary(1, 0, &[(0, f32::NAN)])).contains("finite"));
        let mut short = encode_binary(1, 0, &[(0, 1.0)]);
        short.pop();
        assert!(why(&short).contains("carries"));
    }

    #[test]
    fn rfc3339_offsets_and_fractions() {
        assert_eq!(rfc3339_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(rfc3339_ms("1970-01-01T01:00:00+01:00"), Some(0));
        assert_eq!(rfc3339_ms("1970-01-01T00:00:00.5Z"), Some(500));
        assert_eq!(rfc3339_ms("2000-02-29T00:00:00Z"), Some(951_782_400_000));
        assert_eq!(rfc3339_ms("2000-13-01T00:00:00Z"), None);
        assert_eq!(format_ms(1_796_637_600_250), "2026-12-07T10:00:00.250Z");
    }
}
