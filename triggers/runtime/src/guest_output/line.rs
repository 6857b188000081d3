//! What one line a component printed means: a log line (level, message and
//! any structured fields) or a business metric.
//!
//! Pure functions over `&str`, so every rule is unit-tested here; the
//! capture in the parent module decides what to do with the result.

use std::borrow::Cow;

use serde_json::{Map, Value};
use tracing::Level;

/// The key that makes a JSON line a metric (see `docs/OBSERVABILITY.md`).
pub const METRIC_KEY: &str = "bv.metric";

/// The longest metric or label name.
const MAX_NAME: usize = 64;

/// The longest label value.
const MAX_LABEL_VALUE: usize = 128;

/// The most labels one metric line may carry.
const MAX_LABELS: usize = 8;

/// Label names bv sets itself or that Prometheus reserves.
const RESERVED_LABELS: [&str; 3] = ["component", "le", "quantile"];

/// A log line: its level (`None`: the stream's default), message and the
/// other fields of a JSON line (a compact JSON object).
#[derive(Debug, PartialEq)]
pub struct LogLine<'a> {
    pub level: Option<Level>,
    pub message: Cow<'a, str>,
    pub fields: Option<String>,
}

/// The kind of a metric line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up: `value` is added.
    Counter,
    /// Goes up and down: `value` is the current value.
    Gauge,
    /// A distribution: `value` is one observation.
    Histogram,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// A valid metric line.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricLine {
    /// The name without bv's `bv_app_` prefix or a counter's `_total`.
    pub name: String,
    pub kind: Kind,
    /// Non-negative and whole for counters, finite otherwise.
    pub value: f64,
    /// Sorted by name.
    pub labels: Vec<(String, String)>,
}

/// Why a metric line was refused. `once` is set for mistakes a component
/// repeats on every line (a bad name): they are worth one warning, not one
/// per line.
#[derive(Debug, PartialEq)]
pub struct Malformed {
    pub reason: String,
    pub once: Option<String>,
}

impl Malformed {
    fn new(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            once: None,
        }
    }

    fn once(reason: String, key: String) -> Self {
        Self {
            reason,
            once: Some(key),
        }
    }
}

/// What a line is.
#[derive(Debug, PartialEq)]
pub enum Line<'a> {
    Log(LogLine<'a>),
    Metric(Result<MetricLine, Malformed>),
}

/// Reads `line` (without its newline). Only lines that start with `{` are
/// parsed as JSON; the others cost a look at their first word.
pub fn parse(line: &str) -> Line<'_> {
    let trimmed = line.trim_start();
    if trimmed.starts_with('{') {
        if let Ok(Value::Object(map)) = serde_json::from_str::<Value>(trimmed) {
            if map.contains_key(METRIC_KEY) {
                return Line::Metric(metric(map));
            }
            if let Some(log) = json_log(&map) {
                return Line::Log(log);
            }
        } else if trimmed.contains(&format!("\"{METRIC_KEY}\"")) {
            return Line::Metric(Err(Malformed::new("not a JSON object")));
        }
    }
    Line::Log(plain(line))
}

/// The level a line starts with (`WARN: …`, `error …`, any case), and the
/// rest of the line.
fn level_prefix(line: &str) -> Option<(Level, &str)> {
    let end = line.find([':', ' '])?;
    let level = level_word(&line[..end])?;
    Some((level, line[end + 1..].trim_start()))
}

fn level_word(word: &str) -> Option<Level> {
    const WORDS: [(&str, Level); 7] = [
        ("error", Level::ERROR),
        ("warn", Level::WARN),
        ("warning", Level::WARN),
        ("info", Level::INFO),
        ("debug", Level::DEBUG),
        ("trace", Level::TRACE),
        ("fatal", Level::ERROR),
    ];
    WORDS
        .iter()
        .find(|(w, _)| word.eq_ignore_ascii_case(w))
        .map(|(_, l)| *l)
}

fn plain(line: &str) -> LogLine<'_> {
    match level_prefix(line) {
        Some((level, rest)) => LogLine {
            level: Some(level),
            message: Cow::Borrowed(rest),
            fields: None,
        },
        None => LogLine {
            level: None,
            message: Cow::Borrowed(line),
            fields: None,
        },
    }
}

/// A JSON object with a recognised `level`: `msg` or `message` is the
/// message, every other member is kept as a field.
fn json_log(map: &Map<String, Value>) -> Option<LogLine<'static>> {
    let level = level_word(map.get("level")?.as_str()?)?;
    let message_key = ["msg", "message"]
        .into_iter()
        .find(|k| map.contains_key(*k));
    let message = match message_key.and_then(|k| map.get(k)) {
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => String::new(),
    };
    let rest: Map<String, Value> = map
        .iter()
        .filter(|(k, _)| *k != "level" && Some(k.as_str()) != message_key)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Some(LogLine {
        level: Some(level),
        message: Cow::Owned(message),
        fields: (!rest.is_empty()).then(|| Value::Object(rest).to_string()),
    })
}

/// A metric or label name: an ASCII letter, then letters, digits and `_`.
fn valid_name(name: &str) -> bool {
    name.len() <= MAX_NAME
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A name for a message, shortened.
fn shown(name: &str) -> String {
    let mut s: String = name.chars().take(MAX_NAME).collect();
    if s.len() < name.len() {
        s.push('…');
    }
    s
}

fn metric(mut map: Map<String, Value>) -> Result<MetricLine, Malformed> {
    let Some(Value::String(name)) = map.remove(METRIC_KEY) else {
        return Err(Malformed::new(format!("`{METRIC_KEY}` must be a string")));
    };
    if !valid_name(&name) {
        return Err(Malformed::once(
            format!(
                "metric name `{}` is invalid: a letter, then letters, digits or `_`, at most {MAX_NAME}",
                shown(&name)
            ),
            format!("name:{}", shown(&name)),
        ));
    }
    let kind = match map.remove("kind") {
        Some(Value::String(k)) if k == "counter" => Kind::Counter,
        Some(Value::String(k)) if k == "gauge" => Kind::Gauge,
        Some(Value::String(k)) if k == "histogram" => Kind::Histogram,
        _ => {
            return Err(Malformed::new(
                "`kind` must be \"counter\", \"gauge\" or \"histogram\"",
            ))
        }
    };
    let name = match kind {
        Kind::Counter => name.strip_suffix("_total").unwrap_or(&name).to_string(),
        _ => name,
    };
    let value = match (kind, map.remove("value")) {
        (Kind::Counter, Some(Value::Number(n))) => n
            .as_u64()
            .map(|v| v as f64)
            .ok_or_else(|| Malformed::new("a counter's `value` must be a whole number ≥ 0"))?,
        (_, Some(Value::Number(n))) => n
            .as_f64()
            .filter(|v| v.is_finite())
            .ok_or_else(|| Malformed::new("`value` must be a finite number"))?,
        _ => return Err(Malformed::new("`value` must be a number")),
    };
    let labels = match map.remove("labels") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Object(labels)) => self::labels(&name, labels)?,
        Some(_) => return Err(Malformed::new("`labels` must be an object")),
    };
    if let Some(key) = map.keys().next() {
        return Err(Malformed::new(format!(
            "unknown member `{}` (expected {METRIC_KEY}, kind, value, labels)",
            shown(key)
        )));
    }
    Ok(MetricLine {
        name,
        kind,
        value,
        labels,
    })
}

fn labels(metric: &str, labels: Map<String, Value>) -> Result<Vec<(String, String)>, Malformed> {
    if labels.len() > MAX_LABELS {
        return Err(Malformed::once(
            format!("metric `{metric}` has more than {MAX_LABELS} labels"),
            format!("labels:{metric}"),
        ));
    }
    labels
        .into_iter()
        .map(|(name, value)| {
            if !valid_name(&name) || name.starts_with("__") || RESERVED_LABELS.contains(&&*name)
            {
                return Err(Malformed::once(
                    format!(
                        "metric `{metric}`: label name `{}` is invalid or reserved (component, le, quantile)",
                        shown(&name)
                    ),
                    format!("label:{metric}:{}", shown(&name)),
                ));
            }
            let value = match value {
                Value::String(s) => s,
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                _ => {
                    return Err(Malformed::new(format!(
                        "label `{name}` must be a string, number or boolean"
                    )))
                }
            };
            // The exposition format would need these escaped; keep them out.
            if value.len() > MAX_LABEL_VALUE
                || value.chars().any(|c| c.is_control() || c == '"' || c == '\\')
            {
                return Err(Malformed::new(format!(
                    "label `{name}`: at most {MAX_LABEL_VALUE} bytes, no quotes, backslashes or control characters"
                )));
            }
            Ok((name, value))
        })
        .collect::<Result<Vec<_>, _>>()
        .map(|mut labels| {
            // One label set, one series, whatever order the line used.
            labels.sort();
            labels
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(line: &str) -> LogLine<'_> {
        match parse(line) {
            Line::Log(l) => l,
            other => panic!("not a log line: {other:?}"),
        }
    }

    fn metric_line(line: &str) -> Result<MetricLine, Malformed> {
        match parse(line) {
            Line::Metric(m) => m,
            other => panic!("not a metric line: {other:?}"),
        }
    }

    #[test]
    fn plain_lines_keep_the_default_level() {
        let l = log("hello world");
        assert_eq!(
            (l.level, &*l.message, l.fields),
            (None, "hello world", None)
        );
        // A level word must be the first word and end with `:` or a space.
        assert_eq!(log("information: x").level, None);
        assert_eq!(log("errors happen").level, None);
        assert_eq!(log("  WARN: indented").level, None);
        assert_eq!(log("{not json").message, "{not json");
    }

    #[test]
    fn a_leading_level_word_sets_the_level() {
        for (line, level, message) in [
            ("ERROR: disk full", Level::ERROR, "disk full"),
            ("warn something odd", Level::WARN, "something odd"),
            ("Warning: old", Level::WARN, "old"),
            ("info:ok", Level::INFO, "ok"),
            ("DEBUG x=1", Level::DEBUG, "x=1"),
            ("trace: deep", Level::TRACE, "deep"),
            ("FATAL: gone", Level::ERROR, "gone"),
        ] {
            let l = log(line);
            assert_eq!((l.level, &*l.message), (Some(level), message), "{line}");
        }
    }

    #[test]
    fn json_lines_with_a_level_keep_their_fields() {
        let l = log(r#"{"level":"debug","msg":"reserved","orderId":"o-1","n":2}"#);
        assert_eq!(l.level, Some(Level::DEBUG));
        assert_eq!(l.message, "reserved");
        assert_eq!(l.fields.as_deref(), Some(r#"{"n":2,"orderId":"o-1"}"#));
        let l = log(r#"{"level":"ERROR","message":"boom"}"#);
        assert_eq!(
            (l.level, &*l.message, l.fields),
            (Some(Level::ERROR), "boom", None)
        );
        // Without a known level a JSON line is a plain line.
        let line = r#"{"level":"loud","msg":"x"}"#;
        assert_eq!(log(line).level, None);
        assert_eq!(log(line).message, line);
        assert_eq!(log(r#"{"a":1}"#).level, None);
    }

    #[test]
    fn metric_lines() {
        let m = metric_line(
            r#"{"bv.metric":"orders_total","kind":"counter","value":3,"labels":{"outcome":"paid","b":1,"ok":true}}"#,
        )
        .unwrap();
        assert_eq!(
            m,
            MetricLine {
                name: "orders".into(),
                kind: Kind::Counter,
                value: 3.0,
                labels: vec![
                    ("b".into(), "1".into()),
                    ("ok".into(), "true".into()),
                    ("outcome".into(), "paid".into())
                ],
            }
        );
        let m = metric_line(r#"{"bv.metric":"queue_depth","kind":"gauge","value":-2.5}"#).unwrap();
        assert_eq!((m.kind, m.value, m.labels.len()), (Kind::Gauge, -2.5, 0));
        let m = metric_line(r#" {"kind":"histogram","value":0.25,"bv.metric":"saga_seconds"}"#)
            .unwrap();
        assert_eq!((m.kind, &*m.name), (Kind::Histogram, "saga_seconds"));
    }

    #[test]
    fn malformed_metric_lines_say_why() {
        for (line, why) in [
            (
                r#"{"bv.metric":"x","kind":"counter","value":1.5}"#,
                "whole number",
            ),
            (
                r#"{"bv.metric":"x","kind":"counter","value":-1}"#,
                "whole number",
            ),
            (r#"{"bv.metric":"x","kind":"counter"}"#, "must be a number"),
            (r#"{"bv.metric":"x","kind":"summary","value":1}"#, "`kind`"),
            (r#"{"bv.metric":"x","value":1}"#, "`kind`"),
            (
                r#"{"bv.metric":7,"kind":"counter","value":1}"#,
                "must be a string",
            ),
            (
                r#"{"bv.metric":"x","kind":"counter","value":1,"labls":{}}"#,
                "unknown member `labls`",
            ),
            (
                r#"{"bv.metric":"x","kind":"counter","value":1,"labels":[]}"#,
                "must be an object",
            ),
            (
                r#"{"bv.metric":"x","kind":"counter","value":1,"labels":{"a":"q\"uote"}}"#,
                "no quotes",
            ),
            (
                r#"{"bv.metric":"x","kind":"counter","value":1,"labels":{"a":{}}}"#,
                "string, number or boolean",
            ),
            (
                r#"{"bv.metric":"x","kind":"counter","value":1"#,
                "not a JSON object",
            ),
        ] {
            let m = metric_line(line).unwrap_err();
            assert!(m.reason.contains(why), "{line}: {}", m.reason);
            assert_eq!(m.once, None, "{line}");
        }
    }

    #[test]
    fn bad_names_are_reported_once_per_name() {
        for (line, key) in [
            (
                r#"{"bv.metric":"bad-name","kind":"counter","value":1}"#,
                "name:bad-name",
            ),
            (
                r#"{"bv.metric":"9lives","kind":"counter","value":1}"#,
                "name:9lives",
            ),
            (
                r#"{"bv.metric":"x","kind":"counter","value":1,"labels":{"component":"y"}}"#,
                "label:x:component",
            ),
            (
                r#"{"bv.metric":"x","kind":"counter","value":1,"labels":{"__a":"y"}}"#,
                "label:x:__a",
            ),
            (
                r#"{"bv.metric":"x","kind":"counter","value":1,"labels":{"a":"1","b":"1","c":"1","d":"1","e":"1","f":"1","g":"1","h":"1","i":"1"}}"#,
                "labels:x",
            ),
        ] {
            let m = metric_line(line).unwrap_err();
            assert_eq!(m.once.as_deref(), Some(key), "{line}: {}", m.reason);
        }
        let long = "n".repeat(200);
        let m = metric_line(&format!(
            r#"{{"bv.metric":"{long}","kind":"counter","value":1}}"#
        ))
        .unwrap_err();
        assert!(m.once.unwrap().len() < 80);
    }
}
