//! Schema compatibility: the shape of a schema (its fields, their types and
//! which are required) and the rules for changing a schema without bumping
//! its version.
//!
//! Within one version a schema may only grow optional fields. Removing a
//! field, changing its type, making it required or no longer required
//! breaks producers or consumers already deployed, and needs a new version
//! (a new `schemas/<name>/<n+1>.json`, published alongside the old one
//! until every consumer has moved).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::schema::{Schema, Type};

/// A schema's fields (paths under `data`; `[]` for array elements, e.g.
/// `items[].sku`) and their types, and the required ones.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Shape {
    /// Field path → type name.
    pub fields: BTreeMap<String, String>,
    /// Paths of the fields their parent object requires.
    pub required: BTreeSet<String>,
}

/// The shape of `schema`.
pub fn shape(schema: &Schema) -> Shape {
    let mut shape = Shape::default();
    walk(schema, "", &mut shape);
    shape
}

fn walk(schema: &Schema, path: &str, shape: &mut Shape) {
    match schema.ty() {
        Type::Object => {
            for (name, sub) in &schema.properties {
                let p = if path.is_empty() {
                    name.clone()
                } else {
                    format!("{path}.{name}")
                };
                shape.fields.insert(p.clone(), sub.ty().name().to_string());
                if schema.required.contains(name) {
                    shape.required.insert(p.clone());
                }
                walk(sub, &p, shape);
            }
        }
        Type::Array => {
            if let Some(items) = &schema.items {
                let p = format!("{path}[]");
                shape
                    .fields
                    .insert(p.clone(), items.ty().name().to_string());
                walk(items, &p, shape);
            }
        }
        _ => {}
    }
}

/// The incompatible differences from `old` to `new`, one sentence each;
/// empty when `new` may keep `old`'s version.
pub fn incompatibilities(old: &Shape, new: &Shape) -> Vec<String> {
    let mut problems = Vec::new();
    for (path, ty) in &old.fields {
        match new.fields.get(path) {
            None => problems.push(format!("field `{path}` was removed")),
            Some(t) if t != ty => {
                problems.push(format!("field `{path}` changed type from {ty} to {t}"))
            }
            Some(_) => {}
        }
    }
    for path in new.required.difference(&old.required) {
        if old.fields.contains_key(path) {
            problems.push(format!("optional field `{path}` became required"));
        } else {
            problems.push(format!(
                "new field `{path}` is required (new fields must be optional)"
            ));
        }
    }
    for path in old.required.difference(&new.required) {
        if new.fields.contains_key(path) {
            problems.push(format!(
                "required field `{path}` became optional (consumers rely on it)"
            ));
        }
    }
    problems
}
