//! CloudEvents' Kafka protocol binding, binary mode: every attribute a
//! `ce_` header, `data` the record's value, the subject the key.
//!
//! Out, an outbox event becomes a [`Record`]. In, a record becomes a
//! CloudEvent in binary mode (`ce_specversion` present), in structured mode
//! (`content-type: application/cloudevents+json`, the whole event as the
//! value), or through a configured [`Wrap`]; anything else is refused with
//! the reason, which the dead-letter header carries.

use serde_json::{Map, Value};

use crate::config::{Field, Wrap};

/// The header of the W3C trace context, beside `ce_traceparent`: Kafka
/// instrumentations read this one.
pub const TRACEPARENT: &str = "traceparent";
/// The header of a dead letter saying why it was refused.
pub const ERROR_HEADER: &str = "bv_error";

/// A Kafka record, before it is produced or after it is consumed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Record {
    /// The key: the event's subject.
    pub key: Option<Vec<u8>>,
    /// The value: the event's `data`, JSON.
    pub value: Option<Vec<u8>>,
    /// The headers, in order.
    pub headers: Vec<(String, Vec<u8>)>,
}

impl Record {
    /// The first header called `name` (Kafka allows repeats), as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }
}

/// The record of an outbox event (`json`, the envelope as stored).
pub fn to_record(json: &str) -> anyhow::Result<Record> {
    let Value::Object(mut event) = serde_json::from_str::<Value>(json)? else {
        anyhow::bail!("the outbox row is not a JSON object");
    };
    let data = event.remove("data").unwrap_or(Value::Null);
    let mut headers = Vec::with_capacity(event.len() + 2);
    let mut key = None;
    for (name, value) in &event {
        let text = match value {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        match name.as_str() {
            "datacontenttype" => headers.push(("content-type".to_string(), text.into_bytes())),
            _ => {
                if name == "subject" {
                    key = Some(text.clone().into_bytes());
                }
                if name == "traceparent" {
                    headers.push((TRACEPARENT.to_string(), text.clone().into_bytes()));
                }
                headers.push((format!("ce_{name}"), text.into_bytes()));
            }
        }
    }
    Ok(Record {
        key,
        value: Some(serde_json::to_vec(&data)?),
        headers,
    })
}

/// Where a record was read, for the id of a wrapped one.
#[derive(Debug, Clone)]
pub struct Coordinates<'a> {
    /// The topic.
    pub topic: &'a str,
    /// The partition.
    pub partition: i32,
    /// The offset.
    pub offset: i64,
}

/// The CloudEvent a record carries, checked against its envelope and its
/// type's registered schema; `Err` is the reason to dead-letter it.
pub fn from_record(
    record: &Record,
    wrap: Option<&Wrap>,
    at: &Coordinates<'_>,
) -> Result<bv_events::CloudEvent, String> {
    let structured = record
        .header("content-type")
        .is_some_and(|c| c.starts_with("application/cloudevents+json"));
    let event = if structured {
        let value = record.value.as_deref().unwrap_or_default();
        let text = std::str::from_utf8(value).map_err(|_| "the value is not UTF-8".to_string())?;
        bv_events::CloudEvent::parse(text).map_err(|e| format!("structured CloudEvent: {e}"))?
    } else if record.header("ce_specversion").is_some() {
        binary(record)?
    } else if let Some(wrap) = wrap {
        wrapped(record, wrap, at)?
    } else {
        return Err(
            "not a CloudEvent (no ce_specversion header, no application/cloudevents+json content type) and the topic has no wrap"
                .into(),
        );
    };
    bv_events::validate(&event).map_err(|e| format!("schema of {}: {e}", event.ty()))?;
    // A producer that traces with the plain W3C header rather than the
    // CloudEvents extension still continues its trace here.
    Ok(match event.traceparent() {
        Some(_) => event,
        None => event.traced(record.header(TRACEPARENT)),
    })
}

fn data(record: &Record) -> Result<Value, String> {
    match record.value.as_deref() {
        None | Some([]) => Ok(Value::Null),
        Some(bytes) => {
            serde_json::from_slice(bytes).map_err(|e| format!("the value is not JSON: {e}"))
        }
    }
}

fn binary(record: &Record) -> Result<bv_events::CloudEvent, String> {
    if let Some(ct) = record.header("content-type") {
        if !ct.starts_with("application/json") {
            return Err(format!(
                "content-type `{ct}`: only application/json data is taken"
            ));
        }
    }
    let mut event = Map::new();
    for (name, value) in &record.headers {
        let Some(attribute) = name.strip_prefix("ce_") else {
            continue;
        };
        let text = std::str::from_utf8(value).map_err(|_| format!("header {name} is not UTF-8"))?;
        event.insert(attribute.to_string(), Value::String(text.to_string()));
    }
    event.insert(
        "datacontenttype".into(),
        Value::String(bv_events::DATA_CONTENT_TYPE.into()),
    );
    event.insert("data".into(), data(record)?);
    bv_events::CloudEvent::from_value(Value::Object(event))
        .map_err(|e| format!("binary CloudEvent: {e}"))
}

fn wrapped(
    record: &Record,
    wrap: &Wrap,
    at: &Coordinates<'_>,
) -> Result<bv_events::CloudEvent, String> {
    let field = |name: &str, value: &str| -> Result<String, String> {
        match Field::parse(value)? {
            Field::Literal(text) => Ok(text),
            Field::Key => record
                .key
                .as_deref()
                .and_then(|k| std::str::from_utf8(k).ok())
                .filter(|k| !k.is_empty())
                .map(str::to_string)
                .ok_or_else(|| format!("wrap.{name}: the record has no UTF-8 key")),
            Field::Header(h) => record
                .header(&h)
                .map(str::to_string)
                .ok_or_else(|| format!("wrap.{name}: the record has no header {h}")),
        }
    };
    let ty = field("type", &wrap.ty)?;
    let source = field("source", &wrap.source)?;
    // The same record read twice gets the same id, so it is written once.
    let id = format!("{}-{}-{}", at.topic, at.partition, at.offset);
    let event = match &wrap.subject {
        Some(subject) => bv_events::CloudEvent::with_id(
            id,
            ty,
            source,
            field("subject", subject)?,
            data(record)?,
        ),
        None => {
            let mut value = serde_json::to_value(bv_events::CloudEvent::with_id(
                id,
                ty,
                source,
                "",
                data(record)?,
            ))
            .map_err(|e| e.to_string())?;
            if let Value::Object(map) = &mut value {
                map.remove("subject");
            }
            bv_events::CloudEvent::from_value(value).map_err(|e| e.to_string())?
        }
    };
    Ok(event)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLACED: &str = r#"{"specversion":"1.0","id":"e1","source":"/orders","type":"com.bitvelocity.order.placed.v1","subject":"o1","time":"2026-12-06T10:00:00.000Z","datacontenttype":"application/json","data":{"order_id":"o1"},"traceparent":"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}"#;

    fn at() -> Coordinates<'static> {
        Coordinates {
            topic: "t",
            partition: 2,
            offset: 7,
        }
    }

    #[test]
    fn an_outbox_event_becomes_a_binary_mode_record() {
        let r = to_record(PLACED).unwrap();
        assert_eq!(r.key.as_deref(), Some(&b"o1"[..]));
        assert_eq!(r.value.as_deref(), Some(&br#"{"order_id":"o1"}"#[..]));
        assert_eq!(r.header("ce_id"), Some("e1"));
        assert_eq!(r.header("ce_type"), Some("com.bitvelocity.order.placed.v1"));
        assert_eq!(r.header("ce_specversion"), Some("1.0"));
        assert_eq!(r.header("ce_time"), Some("2026-12-06T10:00:00.000Z"));
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert!(r.header("ce_datacontenttype").is_none());
        assert_eq!(r.header(TRACEPARENT), r.header("ce_traceparent"));
    }

    #[test]
    fn binary_mode_round_trips_the_envelope() {
        let r = to_record(PLACED).unwrap();
        // The schema check is not this test's subject: compare envelopes.
        let back = binary(&r).unwrap();
        assert_eq!(back, bv_events::CloudEvent::parse(PLACED).unwrap());
    }

    #[test]
    fn records_that_are_not_events_are_refused_with_a_reason() {
        let plain = Record {
            key: Some(b"k".to_vec()),
            value: Some(b"{}".to_vec()),
            headers: vec![],
        };
        assert!(from_record(&plain, None, &at())
            .unwrap_err()
            .contains("not a CloudEvent"));
        let mut bad = to_record(PLACED).unwrap();
        bad.headers.retain(|(k, _)| k != "ce_id");
        assert!(from_record(&bad, None, &at()).unwrap_err().contains("id"));
        let mut not_json = to_record(PLACED).unwrap();
        not_json.value = Some(b"{nope".to_vec());
        assert!(from_record(&not_json, None, &at())
            .unwrap_err()
            .contains("not JSON"));
    }

    #[test]
    fn a_foreign_record_is_wrapped_with_an_id_from_its_place() {
        let wrap = Wrap {
            ty: "header:x-type".into(),
            source: "/partner".into(),
            subject: Some("key".into()),
        };
        let record = Record {
            key: Some(b"p-9".to_vec()),
            value: Some(br#"{"a":1}"#.to_vec()),
            headers: vec![("x-type".into(), b"com.example.thing.v1".to_vec())],
        };
        let event = wrapped(&record, &wrap, &at()).unwrap();
        assert_eq!(event.id(), "t-2-7");
        assert_eq!(event.ty(), "com.example.thing.v1");
        assert_eq!(event.subject(), Some("p-9"));
        assert_eq!(event.source(), "/partner");
        let missing = Record {
            headers: vec![],
            ..record
        };
        assert!(wrapped(&missing, &wrap, &at())
            .unwrap_err()
            .contains("no header x-type"));
    }
}
