//! The CloudEvents 1.0 envelope (JSON format), parsed strictly.

use serde::Serialize;
use serde_json::{Map, Value};

/// The only `specversion` this crate reads or writes.
pub const SPEC_VERSION: &str = "1.0";
/// The only `datacontenttype`: `data` is always a JSON value.
pub const DATA_CONTENT_TYPE: &str = "application/json";

/// One event, in the CloudEvents 1.0 JSON format.
///
/// Built only by [`CloudEvent::new`] or [`CloudEvent::parse`], so that a
/// value of this type always has a well-formed envelope: the right
/// `specversion` and `datacontenttype`, non-empty `id`, `source` and `type`,
/// an RFC 3339 `time`, and a W3C `traceparent` when there is one. Whether
/// `data` matches the schema of `type` is [`crate::validate`]'s job.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CloudEvent {
    specversion: String,
    id: String,
    source: String,
    #[serde(rename = "type")]
    ty: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    subject: Option<String>,
    time: String,
    datacontenttype: String,
    data: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    traceparent: Option<String>,
}

/// Why a JSON text is not a CloudEvent; names the attribute at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvelopeError {
    /// The attribute (e.g. `time`), or `$` for the document itself.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl std::fmt::Display for EnvelopeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl std::error::Error for EnvelopeError {}

fn err(field: &str, message: impl Into<String>) -> EnvelopeError {
    EnvelopeError {
        field: field.to_string(),
        message: message.into(),
    }
}

/// Attributes the envelope knows. Any other is rejected rather than
/// dropped, so a misspelt attribute (`traceParent`) is caught by its sender.
const KNOWN: &[&str] = &[
    "specversion",
    "id",
    "source",
    "type",
    "subject",
    "time",
    "datacontenttype",
    "data",
    "traceparent",
];

impl CloudEvent {
    /// A new event of type `ty` (e.g. `com.bitvelocity.product.created.v1`)
    /// from `source` (e.g. `/catalog`) about `subject` (e.g. the product
    /// id), with a random (v4) UUID as id and the current time.
    pub fn new(
        ty: impl Into<String>,
        source: impl Into<String>,
        subject: impl Into<String>,
        data: Value,
    ) -> Self {
        Self::with_id(uuid::Uuid::new_v4().to_string(), ty, source, subject, data)
    }

    /// Like [`CloudEvent::new`] with a given id: for a producer that derives
    /// ids from its own state (so a retried publish keeps its id and
    /// consumers can drop the duplicate).
    pub fn with_id(
        id: impl Into<String>,
        ty: impl Into<String>,
        source: impl Into<String>,
        subject: impl Into<String>,
        data: Value,
    ) -> Self {
        Self {
            specversion: SPEC_VERSION.to_string(),
            id: id.into(),
            source: source.into(),
            ty: ty.into(),
            subject: Some(subject.into()),
            time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            datacontenttype: DATA_CONTENT_TYPE.to_string(),
            data,
            traceparent: None,
        }
    }

    /// Sets the W3C `traceparent` extension, so a consumer's work joins the
    /// producer's trace.
    pub fn with_traceparent(mut self, traceparent: &str) -> Result<Self, EnvelopeError> {
        check_traceparent(traceparent)?;
        self.traceparent = Some(traceparent.to_string());
        Ok(self)
    }

    /// The event in the trace of whatever caused it: `traceparent` is the
    /// incoming request's header or the handled event's
    /// [`CloudEvent::traceparent`]. Unlike [`CloudEvent::with_traceparent`]
    /// it never fails: `None` or a malformed value (a client's bad header)
    /// leaves the event outside any trace, since tracing must never stop a
    /// publish.
    pub fn traced(mut self, traceparent: Option<&str>) -> Self {
        self.traceparent = traceparent
            .filter(|t| check_traceparent(t).is_ok())
            .map(str::to_string);
        self
    }

    /// Parses a CloudEvents 1.0 JSON text; the error names the first
    /// attribute that is missing, of the wrong type or malformed.
    pub fn parse(json: &str) -> Result<Self, EnvelopeError> {
        let value: Value =
            serde_json::from_str(json).map_err(|e| err("$", format!("not JSON: {e}")))?;
        Self::from_value(value)
    }

    /// [`CloudEvent::parse`] on an already parsed JSON value.
    pub fn from_value(value: Value) -> Result<Self, EnvelopeError> {
        let Value::Object(mut map) = value else {
            return Err(err("$", "must be a JSON object"));
        };
        if let Some(unknown) = map.keys().find(|k| !KNOWN.contains(&k.as_str())) {
            return Err(err(unknown, "unknown attribute"));
        }
        let specversion = string(&mut map, "specversion")?;
        if specversion != SPEC_VERSION {
            return Err(err("specversion", format!("must be \"{SPEC_VERSION}\"")));
        }
        let id = non_empty(&mut map, "id")?;
        let source = non_empty(&mut map, "source")?;
        let ty = non_empty(&mut map, "type")?;
        let subject = optional_string(&mut map, "subject")?;
        let time = string(&mut map, "time")?;
        chrono::DateTime::parse_from_rfc3339(&time)
            .map_err(|e| err("time", format!("must be an RFC 3339 timestamp: {e}")))?;
        let datacontenttype = string(&mut map, "datacontenttype")?;
        if datacontenttype != DATA_CONTENT_TYPE {
            return Err(err(
                "datacontenttype",
                format!("must be \"{DATA_CONTENT_TYPE}\""),
            ));
        }
        let data = map.remove("data").ok_or_else(|| err("data", "missing"))?;
        let traceparent = optional_string(&mut map, "traceparent")?;
        if let Some(t) = &traceparent {
            check_traceparent(t)?;
        }
        Ok(Self {
            specversion,
            id,
            source,
            ty,
            subject,
            time,
            datacontenttype,
            data,
            traceparent,
        })
    }

    /// The event as CloudEvents 1.0 JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("an event always serializes")
    }

    /// `id`: unique per `source`; consumers deduplicate on (`source`, `id`).
    pub fn id(&self) -> &str {
        &self.id
    }
    /// `source`: the producing service, e.g. `/catalog`.
    pub fn source(&self) -> &str {
        &self.source
    }
    /// `type`, which carries the schema version (see [`crate::EventType`]).
    pub fn ty(&self) -> &str {
        &self.ty
    }
    /// `subject`: the entity the event is about (e.g. the order id).
    pub fn subject(&self) -> Option<&str> {
        self.subject.as_deref()
    }
    /// `time`, as sent (RFC 3339).
    pub fn time(&self) -> &str {
        &self.time
    }
    /// `data`, the payload the schema of `type` describes.
    pub fn data(&self) -> &Value {
        &self.data
    }
    /// The W3C `traceparent` extension, if any.
    pub fn traceparent(&self) -> Option<&str> {
        self.traceparent.as_deref()
    }
}

fn string(map: &mut Map<String, Value>, field: &str) -> Result<String, EnvelopeError> {
    match map.remove(field) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(err(field, "must be a string")),
        None => Err(err(field, "missing")),
    }
}

fn non_empty(map: &mut Map<String, Value>, field: &str) -> Result<String, EnvelopeError> {
    let s = string(map, field)?;
    if s.is_empty() {
        return Err(err(field, "must not be empty"));
    }
    Ok(s)
}

fn optional_string(
    map: &mut Map<String, Value>,
    field: &str,
) -> Result<Option<String>, EnvelopeError> {
    match map.remove(field) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(err(field, "must be a string")),
    }
}

/// `00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`, lower case.
fn check_traceparent(t: &str) -> Result<(), EnvelopeError> {
    let parts: Vec<&str> = t.split('-').collect();
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let ok = parts.len() == 4
        && parts[0] == "00"
        && hex(parts[1], 32)
        && hex(parts[2], 16)
        && hex(parts[3], 2)
        && parts[1].bytes().any(|b| b != b'0')
        && parts[2].bytes().any(|b| b != b'0');
    if ok {
        Ok(())
    } else {
        Err(err(
            "traceparent",
            "must be a W3C traceparent: 00-<32 hex>-<16 hex>-<2 hex>, ids not all zero",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Value {
        serde_json::json!({
            "specversion": "1.0",
            "id": "e-1",
            "source": "/catalog",
            "type": "com.bitvelocity.product.created.v1",
            "subject": "p-1",
            "time": "2026-01-02T03:04:05.678Z",
            "datacontenttype": "application/json",
            "data": {},
            "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        })
    }

    #[test]
    fn round_trips() {
        let event = CloudEvent::from_value(sample()).unwrap();
        assert_eq!(CloudEvent::parse(&event.to_json()).unwrap(), event);
    }

    #[test]
    fn new_events_parse() {
        let event = CloudEvent::new("t.v1", "/s", "x", serde_json::json!({"a": 1}));
        assert_eq!(
            uuid::Uuid::parse_str(event.id()).unwrap().get_version_num(),
            4
        );
        assert_eq!(CloudEvent::parse(&event.to_json()).unwrap(), event);
        let other = CloudEvent::new("t.v1", "/s", "x", Value::Null);
        assert_ne!(event.id(), other.id());
    }

    #[test]
    fn traced_joins_a_well_formed_trace_only() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let event = CloudEvent::new("t.v1", "/s", "x", Value::Null);
        let traced = event.clone().traced(Some(tp));
        assert_eq!(traced.traceparent(), Some(tp));
        assert_eq!(
            CloudEvent::parse(&traced.to_json()).unwrap().traceparent(),
            Some(tp)
        );
        assert_eq!(traced.clone().traced(None).traceparent(), None);
        assert_eq!(event.clone().traced(Some("00-abc")).traceparent(), None);
        assert!(!event.traced(None).to_json().contains("traceparent"));
    }

    #[test]
    fn names_the_bad_attribute() {
        let cases: &[(&str, Value, &str)] = &[
            ("specversion", "0.3".into(), "specversion"),
            ("id", "".into(), "id"),
            ("source", 7.into(), "source"),
            ("time", "yesterday".into(), "time"),
            ("datacontenttype", "text/plain".into(), "datacontenttype"),
            ("traceparent", "00-abc".into(), "traceparent"),
            ("traceParent", "x".into(), "traceParent"),
        ];
        for (field, value, named) in cases {
            let mut v = sample();
            v[field] = value.clone();
            let e = CloudEvent::from_value(v).unwrap_err();
            assert_eq!(&e.field, named, "{e}");
        }
        for field in [
            "specversion",
            "id",
            "source",
            "type",
            "time",
            "datacontenttype",
            "data",
        ] {
            let mut v = sample();
            v.as_object_mut().unwrap().remove(field);
            let e = CloudEvent::from_value(v).unwrap_err();
            assert_eq!(e.field, field);
            assert_eq!(e.message, "missing");
        }
        assert_eq!(CloudEvent::parse("[]").unwrap_err().field, "$");
        assert_eq!(CloudEvent::parse("{").unwrap_err().field, "$");
    }
}
