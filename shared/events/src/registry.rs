//! Every event type and version, with its schema embedded at build time.

use std::sync::OnceLock;

use crate::schema::{InvalidSchema, Schema, Violation};
use crate::CloudEvent;

/// What every event `type` starts with.
pub const TYPE_PREFIX: &str = "com.bitvelocity.";

/// An event `type` split into its name and schema version:
/// `com.bitvelocity.product.created.v1` is name `product.created`, version 1.
///
/// The version lives in `type` (not in a separate attribute or in
/// `dataschema`) so that routing on `type` alone (a topic per type, a
/// consumer that handles `….v1` and `….v2` differently) never mixes
/// payload shapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventType<'a> {
    /// E.g. `product.created`: `<entity>.<past-tense verb>`.
    pub name: &'a str,
    /// The schema version, from 1; bumped on every incompatible change.
    pub version: u32,
}

impl<'a> EventType<'a> {
    /// Splits a `type` attribute; `None` unless it is
    /// `com.bitvelocity.<name>.v<version>`.
    pub fn parse(ty: &'a str) -> Option<Self> {
        let rest = ty.strip_prefix(TYPE_PREFIX)?;
        let (name, version) = rest.rsplit_once(".v")?;
        if name.is_empty() || version.starts_with('0') {
            return None;
        }
        let version = version.parse().ok()?;
        Some(Self { name, version })
    }
}

impl std::fmt::Display for EventType<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{TYPE_PREFIX}{}.v{}", self.name, self.version)
    }
}

/// One event type's schema, as checked in under
/// `shared/events/schemas/<name>/<version>.json`.
#[derive(Debug, Clone, Copy)]
pub struct SchemaSource {
    /// The type's name, e.g. `order.placed`.
    pub name: &'static str,
    /// Its version.
    pub version: u32,
    /// The JSON Schema text.
    pub text: &'static str,
}

impl SchemaSource {
    /// The full `type` attribute of events with this schema.
    pub fn event_type(&self) -> String {
        EventType {
            name: self.name,
            version: self.version,
        }
        .to_string()
    }
}

macro_rules! schemas {
    ($($name:literal / $version:literal),* $(,)?) => {
        /// Every schema, in the order of the `schemas/` folder. A new type or
        /// version is a new file there plus one line here.
        pub const SCHEMAS: &[SchemaSource] = &[
            $(SchemaSource {
                name: $name,
                version: $version,
                text: include_str!(concat!("../schemas/", $name, "/", $version, ".json")),
            }),*
        ];
    };
}

schemas! {
    "chat.message.posted" / 1,
    "iot.anomaly.cleared" / 1,
    "iot.anomaly.detected" / 1,
    "order.cancelled" / 1,
    "order.confirmed" / 1,
    "order.expired" / 1,
    "order.failed" / 1,
    "order.fulfilled" / 1,
    "order.paid" / 1,
    "order.placed" / 1,
    "payment.authorized" / 1,
    "payment.captured" / 1,
    "payment.declined" / 1,
    "payment.refunded" / 1,
    "product.created" / 1,
    "product.deleted" / 1,
    "product.updated" / 1,
    "stock.committed" / 1,
    "stock.released" / 1,
    "stock.reserved" / 1,
    "stock.restocked" / 1,
}

/// Why an event does not match its schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchemaError {
    /// `type` names no known event type and version.
    UnknownType(String),
    /// A checked-in schema is broken (caught by the contract tests first).
    InvalidSchema(String, InvalidSchema),
    /// A field of `data` breaks the schema.
    Violation(Violation),
}

impl std::fmt::Display for SchemaError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SchemaError::UnknownType(ty) => write!(
                f,
                "type: unknown event type `{ty}` (expected {TYPE_PREFIX}<name>.v<version> with a schema in shared/events/schemas)"
            ),
            SchemaError::InvalidSchema(ty, e) => write!(f, "schema of `{ty}`: {e}"),
            SchemaError::Violation(v) => v.fmt(f),
        }
    }
}

impl std::error::Error for SchemaError {}

impl SchemaError {
    /// The field the error is about (`type`, or a `data.…` path).
    pub fn field(&self) -> &str {
        match self {
            SchemaError::UnknownType(_) | SchemaError::InvalidSchema(..) => "type",
            SchemaError::Violation(v) => &v.path,
        }
    }
}

/// The compiled schema of `type` `ty`. Each schema is parsed and compiled
/// the first time its type is asked for, not all at once: a component
/// instance often lives for one event or request and checks one type.
pub fn schema(ty: &str) -> Result<&'static Schema, SchemaError> {
    static COMPILED: [OnceLock<Result<Schema, InvalidSchema>>; SCHEMAS.len()] =
        [const { OnceLock::new() }; SCHEMAS.len()];
    let index = EventType::parse(ty).and_then(|t| {
        SCHEMAS
            .iter()
            .position(|s| s.name == t.name && s.version == t.version)
    });
    let Some(index) = index else {
        return Err(SchemaError::UnknownType(ty.to_string()));
    };
    let compiled = COMPILED[index].get_or_init(|| {
        serde_json::from_str(SCHEMAS[index].text)
            .map_err(|e| InvalidSchema {
                at: "$".into(),
                message: format!("not JSON: {e}"),
            })
            .and_then(|doc| Schema::compile(&doc))
    });
    compiled
        .as_ref()
        .map_err(|e| SchemaError::InvalidSchema(ty.to_string(), e.clone()))
}

/// Checks `event.data` against the schema of `event.type`; the error names
/// the first offending field, e.g. `data.price.amount: must be an integer ≥ 0`.
pub fn validate(event: &CloudEvent) -> Result<(), SchemaError> {
    schema(event.ty())?
        .validate(event.data(), "data")
        .map_err(SchemaError::Violation)
}
