//! A small JSON Schema subset: enough for flat-to-moderately nested event
//! payloads, small enough to audit, and with no dependency beyond
//! serde_json so it builds for wasm32-wasip2 guests.
//!
//! Supported keywords (anything else makes the schema invalid, so a schema
//! never silently relies on a keyword that is not enforced):
//!
//! | keyword | meaning here |
//! |---|---|
//! | `type` | one of `object`, `array`, `string`, `integer`, `number`, `boolean`, `null` (a single name) |
//! | `properties`, `required`, `additionalProperties` | objects; `additionalProperties` is a boolean (default `true`) |
//! | `items`, `minItems`, `maxItems` | arrays; `items` is one schema for every element |
//! | `minLength`, `maxLength` | strings, in characters |
//! | `format` | `date-time` only (RFC 3339) |
//! | `minimum`, `maximum` | numbers, inclusive |
//! | `enum` | a list of allowed JSON values |
//! | `$schema`, `$id`, `title`, `description`, `examples` | annotations, ignored |
//!
//! Deliberately absent: `pattern` (no regex engine in guests), `$ref`,
//! combinators (`oneOf`, `anyOf`, `allOf`, `not`), conditionals.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

/// A compiled schema node.
#[derive(Debug, Clone)]
pub struct Schema {
    pub(crate) ty: Option<Type>,
    pub(crate) properties: BTreeMap<String, Schema>,
    pub(crate) required: Vec<String>,
    additional_properties: bool,
    pub(crate) items: Option<Box<Schema>>,
    min_items: Option<u64>,
    max_items: Option<u64>,
    min_length: Option<u64>,
    max_length: Option<u64>,
    date_time: bool,
    minimum: Option<f64>,
    maximum: Option<f64>,
    enumeration: Option<Vec<Value>>,
}

/// The JSON types a `type` keyword may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Type {
    /// `object`
    Object,
    /// `array`
    Array,
    /// `string`
    String,
    /// `integer` (a number with no fractional part)
    Integer,
    /// `number`
    Number,
    /// `boolean`
    Boolean,
    /// `null`
    Null,
}

impl Type {
    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "object" => Type::Object,
            "array" => Type::Array,
            "string" => Type::String,
            "integer" => Type::Integer,
            "number" => Type::Number,
            "boolean" => Type::Boolean,
            "null" => Type::Null,
            _ => return None,
        })
    }

    /// The keyword's spelling.
    pub fn name(self) -> &'static str {
        match self {
            Type::Object => "object",
            Type::Array => "array",
            Type::String => "string",
            Type::Integer => "integer",
            Type::Number => "number",
            Type::Boolean => "boolean",
            Type::Null => "null",
        }
    }

    fn article(self) -> &'static str {
        match self {
            Type::Object | Type::Array | Type::Integer => "an",
            _ => "a",
        }
    }

    fn matches(self, v: &Value) -> bool {
        match self {
            Type::Object => v.is_object(),
            Type::Array => v.is_array(),
            Type::String => v.is_string(),
            Type::Integer => {
                v.is_i64() || v.is_u64() || v.as_f64().is_some_and(|f| f.fract() == 0.0)
            }
            Type::Number => v.is_number(),
            Type::Boolean => v.is_boolean(),
            Type::Null => v.is_null(),
        }
    }
}

/// A schema outside the supported subset, or malformed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidSchema {
    /// Where in the schema (e.g. `properties.price.minimum`).
    pub at: String,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for InvalidSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "schema {}: {}", self.at, self.message)
    }
}

impl std::error::Error for InvalidSchema {}

/// A value that breaks a schema: the path of the offending field (e.g.
/// `data.price.amount`, `data.items[2].quantity`) and what it must be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The field path, rooted at the name given to [`Schema::validate`].
    pub path: String,
    /// What the field must be, e.g. `must be an integer ≥ 0`.
    pub message: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

fn join(at: &str, key: &str) -> String {
    if at.is_empty() {
        key.to_string()
    } else {
        format!("{at}.{key}")
    }
}

fn format_number(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{}", n as i64)
    } else {
        format!("{n}")
    }
}

impl Schema {
    /// Compiles a schema document, rejecting anything outside the subset.
    pub fn compile(doc: &Value) -> Result<Self, InvalidSchema> {
        Self::compile_at(doc, "")
    }

    fn compile_at(doc: &Value, at: &str) -> Result<Self, InvalidSchema> {
        let bad = |key: &str, message: &str| InvalidSchema {
            at: if at.is_empty() {
                key.to_string()
            } else {
                join(at, key)
            },
            message: message.to_string(),
        };
        let Value::Object(map) = doc else {
            return Err(InvalidSchema {
                at: if at.is_empty() { "$".into() } else { at.into() },
                message: "a schema must be an object".into(),
            });
        };
        let count = |key: &str| -> Result<Option<u64>, InvalidSchema> {
            match map.get(key) {
                None => Ok(None),
                Some(v) => v
                    .as_u64()
                    .map(Some)
                    .ok_or_else(|| bad(key, "must be a non-negative integer")),
            }
        };
        let number = |key: &str| -> Result<Option<f64>, InvalidSchema> {
            match map.get(key) {
                None => Ok(None),
                Some(v) => v
                    .as_f64()
                    .map(Some)
                    .ok_or_else(|| bad(key, "must be a number")),
            }
        };
        let mut schema = Schema {
            ty: None,
            properties: BTreeMap::new(),
            required: Vec::new(),
            additional_properties: true,
            items: None,
            min_items: count("minItems")?,
            max_items: count("maxItems")?,
            min_length: count("minLength")?,
            max_length: count("maxLength")?,
            date_time: false,
            minimum: number("minimum")?,
            maximum: number("maximum")?,
            enumeration: None,
        };
        for (key, value) in map {
            match key.as_str() {
                "$schema" | "$id" | "title" | "description" | "examples" => {}
                "minItems" | "maxItems" | "minLength" | "maxLength" | "minimum" | "maximum" => {}
                "type" => {
                    let name = value
                        .as_str()
                        .ok_or_else(|| bad(key, "must be one type name"))?;
                    schema.ty =
                        Some(Type::parse(name).ok_or_else(|| bad(key, "unknown type name"))?);
                }
                "properties" => {
                    let props = value
                        .as_object()
                        .ok_or_else(|| bad(key, "must be an object"))?;
                    for (name, sub) in props {
                        let sub_at = join(&join(at, "properties"), name);
                        schema
                            .properties
                            .insert(name.clone(), Self::compile_at(sub, &sub_at)?);
                    }
                }
                "required" => {
                    let names = value
                        .as_array()
                        .ok_or_else(|| bad(key, "must be an array"))?;
                    for name in names {
                        let name = name
                            .as_str()
                            .ok_or_else(|| bad(key, "must hold property names"))?;
                        if schema.required.iter().any(|r| r == name) {
                            return Err(bad(key, &format!("`{name}` listed twice")));
                        }
                        schema.required.push(name.to_string());
                    }
                }
                "additionalProperties" => {
                    schema.additional_properties = value
                        .as_bool()
                        .ok_or_else(|| bad(key, "only a boolean is supported"))?;
                }
                "items" => {
                    schema.items = Some(Box::new(Self::compile_at(value, &join(at, "items"))?));
                }
                "format" => match value.as_str() {
                    Some("date-time") => schema.date_time = true,
                    _ => return Err(bad(key, "only \"date-time\" is supported")),
                },
                "enum" => {
                    let values = value
                        .as_array()
                        .ok_or_else(|| bad(key, "must be an array"))?;
                    if values.is_empty() {
                        return Err(bad(key, "must not be empty"));
                    }
                    schema.enumeration = Some(values.clone());
                }
                other => {
                    return Err(bad(
                        other,
                        "keyword not supported (see bv_events::schema for the subset)",
                    ))
                }
            }
        }
        // Keywords that would be silently ignored for the declared type are
        // mistakes in the schema.
        let ty = schema.ty;
        let needs = |present: bool, key: &str, types: &[Type]| {
            if present && !ty.is_some_and(|t| types.contains(&t)) {
                let names: Vec<&str> = types.iter().map(|t| t.name()).collect();
                Err(bad(key, &format!("needs \"type\": {}", names.join(" or "))))
            } else {
                Ok(())
            }
        };
        needs(
            !schema.properties.is_empty()
                || !schema.required.is_empty()
                || !schema.additional_properties,
            "properties",
            &[Type::Object],
        )?;
        needs(
            schema.items.is_some() || schema.min_items.is_some() || schema.max_items.is_some(),
            "items",
            &[Type::Array],
        )?;
        needs(
            schema.min_length.is_some() || schema.max_length.is_some() || schema.date_time,
            "minLength",
            &[Type::String],
        )?;
        needs(
            schema.minimum.is_some() || schema.maximum.is_some(),
            "minimum",
            &[Type::Integer, Type::Number],
        )?;
        if ty == Some(Type::Array) && schema.items.is_none() {
            return Err(bad("items", "an array schema must describe its items"));
        }
        for name in &schema.required {
            if !schema.properties.contains_key(name) {
                return Err(bad(
                    "required",
                    &format!("`{name}` is required but not in `properties`"),
                ));
            }
        }
        if ty.is_none() {
            return Err(bad("type", "every schema node must declare its type"));
        }
        Ok(schema)
    }

    /// The declared type.
    pub fn ty(&self) -> Type {
        self.ty.expect("compiled schemas always have a type")
    }

    /// Checks `value`; the first violation found, with its path under `root`.
    pub fn validate(&self, value: &Value, root: &str) -> Result<(), Violation> {
        self.check(value, root)
    }

    fn describe_type(&self) -> String {
        let ty = self.ty();
        let mut s = format!("must be {} {}", ty.article(), ty.name());
        match (self.minimum, self.maximum) {
            (Some(lo), Some(hi)) => {
                s += &format!(" between {} and {}", format_number(lo), format_number(hi))
            }
            (Some(lo), None) => s += &format!(" ≥ {}", format_number(lo)),
            (None, Some(hi)) => s += &format!(" ≤ {}", format_number(hi)),
            (None, None) => {}
        }
        s
    }

    fn check(&self, value: &Value, path: &str) -> Result<(), Violation> {
        let violation = |message: String| Violation {
            path: path.to_string(),
            message,
        };
        let ty = self.ty();
        if !ty.matches(value) {
            return Err(violation(self.describe_type()));
        }
        if let Some(allowed) = &self.enumeration {
            if !allowed.contains(value) {
                let list: Vec<String> = allowed.iter().map(Value::to_string).collect();
                return Err(violation(format!("must be one of {}", list.join(", "))));
            }
        }
        match value {
            Value::Number(n) => {
                let f = n.as_f64().unwrap_or(f64::NAN);
                if self.minimum.is_some_and(|lo| f < lo) || self.maximum.is_some_and(|hi| f > hi) {
                    return Err(violation(self.describe_type()));
                }
            }
            Value::String(s) => {
                let chars = s.chars().count() as u64;
                if self.min_length.is_some_and(|n| chars < n) {
                    return Err(violation(if self.min_length == Some(1) {
                        "must not be empty".to_string()
                    } else {
                        format!("must be at least {} characters", self.min_length.unwrap())
                    }));
                }
                if let Some(n) = self.max_length.filter(|&n| chars > n) {
                    return Err(violation(format!("must be at most {n} characters")));
                }
                if self.date_time && chrono::DateTime::parse_from_rfc3339(s).is_err() {
                    return Err(violation("must be an RFC 3339 date-time".to_string()));
                }
            }
            Value::Array(items) => {
                let n = items.len() as u64;
                if let Some(min) = self.min_items.filter(|&m| n < m) {
                    return Err(violation(format!("must have at least {min} item(s)")));
                }
                if let Some(max) = self.max_items.filter(|&m| n > m) {
                    return Err(violation(format!("must have at most {max} item(s)")));
                }
                if let Some(item) = &self.items {
                    for (i, v) in items.iter().enumerate() {
                        item.check(v, &format!("{path}[{i}]"))?;
                    }
                }
            }
            Value::Object(map) => self.check_object(map, path)?,
            _ => {}
        }
        Ok(())
    }

    fn check_object(&self, map: &Map<String, Value>, path: &str) -> Result<(), Violation> {
        for name in &self.required {
            if !map.contains_key(name) {
                return Err(Violation {
                    path: join(path, name),
                    message: "is required".to_string(),
                });
            }
        }
        for (name, v) in map {
            match self.properties.get(name) {
                Some(sub) => sub.check(v, &join(path, name))?,
                None if !self.additional_properties => {
                    return Err(Violation {
                        path: join(path, name),
                        message: "is not allowed (unknown field)".to_string(),
                    })
                }
                None => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rejects_keywords_outside_the_subset() {
        let e = Schema::compile(&json!({"type": "string", "pattern": "^a"})).unwrap_err();
        assert_eq!(e.at, "pattern");
        let e = Schema::compile(&json!({"type": "object", "properties": {"a": {"oneOf": []}}}))
            .unwrap_err();
        assert_eq!(e.at, "properties.a.oneOf");
        let e = Schema::compile(&json!({"type": "object", "required": ["x"]})).unwrap_err();
        assert_eq!(e.at, "required");
        let e = Schema::compile(&json!({"type": "string", "minimum": 1})).unwrap_err();
        assert_eq!(e.at, "minimum");
        let e = Schema::compile(&json!({"properties": {"a": {"type": "string"}}})).unwrap_err();
        assert_eq!(e.at, "properties");
        let e = Schema::compile(&json!({"description": "untyped"})).unwrap_err();
        assert_eq!(e.at, "type");
    }

    #[test]
    fn messages() {
        let s = Schema::compile(&json!({"type": "integer", "minimum": 0})).unwrap();
        for bad in [json!(-1), json!("1"), json!(1.5)] {
            let v = s.validate(&bad, "data.n").unwrap_err();
            assert_eq!(v.to_string(), "data.n: must be an integer ≥ 0");
        }
        s.validate(&json!(0), "x").unwrap();
        s.validate(&json!(2.0), "x").unwrap();
    }
}
