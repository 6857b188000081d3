//! Business metrics, reported as one JSON line on stdout each:
//!
//! ```text
//! {"bv.metric":"orders","kind":"counter","labels":{"outcome":"paid"},"value":1}
//! ```
//!
//! `bv` reads such lines from a component's stdout and serves them on its
//! admin `/metrics` as `bv_app_<name>_total` (counters), `bv_app_<name>`
//! (gauges) or `bv_app_<name>_bucket/_sum/_count` (histograms), labelled
//! with the component. Under any other Spin host they are ordinary output
//! lines, so components need no host import of bv's own.
//!
//! Names are a letter then letters, digits or `_` (at most 64); label
//! names likewise (not `component`, `le` or `quantile`), label values at
//! most 128 bytes without quotes, backslashes or control characters. Keep
//! label values to a small fixed set (an outcome, a step), never ids: bv
//! keeps at most 100 label sets per metric.

use std::io::Write as _;

use serde_json::{json, Map, Value};

/// Adds `value` to the counter `name` (e.g. `orders` →
/// `bv_app_orders_total`).
pub fn counter(name: &str, labels: &[(&str, &str)], value: u64) {
    emit(&line(name, "counter", json!(value), labels));
}

/// Sets the gauge `name` to `value`.
pub fn gauge(name: &str, labels: &[(&str, &str)], value: f64) {
    emit(&line(name, "gauge", json!(value), labels));
}

/// Records one observation of `value` (seconds, for durations) in the
/// histogram `name`.
pub fn observe(name: &str, labels: &[(&str, &str)], value: f64) {
    emit(&line(name, "histogram", json!(value), labels));
}

/// The metric line (without its newline).
pub fn line(name: &str, kind: &str, value: Value, labels: &[(&str, &str)]) -> String {
    let labels: Map<String, Value> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), Value::from(*v)))
        .collect();
    json!({ "bv.metric": name, "kind": kind, "value": value, "labels": labels }).to_string()
}

/// Writes `line` and its newline in one write, so lines of concurrent
/// tasks never interleave. Output errors are ignored: a metric is never
/// worth failing a request.
fn emit(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(format!("{line}\n").as_bytes());
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_one_json_object() {
        let text = line("orders", "counter", json!(2), &[("outcome", "paid")]);
        let value: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            value,
            json!({ "bv.metric": "orders", "kind": "counter", "value": 2,
                    "labels": { "outcome": "paid" } })
        );
        assert!(!text.contains('\n'));
        let text = line("saga_seconds", "histogram", json!(0.25), &[]);
        assert_eq!(
            serde_json::from_str::<Value>(&text).unwrap()["labels"],
            json!({})
        );
    }
}
