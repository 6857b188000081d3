//! `[[trigger.<kind>]]`: the HTTP triggers and their routes, and the
//! component references of the other trigger kinds.

use std::collections::BTreeMap;
use std::path::Path;

use crate::{raw, Component, ManifestError, RouteSpec};

/// A `[[trigger.http]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpTrigger {
    /// Optional `id`, unique among HTTP triggers.
    pub id: Option<String>,
    /// The validated route.
    pub route: RouteSpec,
    /// Id of the component it invokes (checked to exist).
    pub component: String,
}

/// Validates the `[[trigger.http]]` entries against the `components`;
/// `path` names the manifest in errors.
pub(crate) fn parse_http_triggers(
    raw: Vec<raw::RawHttpTrigger>,
    components: &BTreeMap<String, Component>,
    path: &Path,
) -> Result<Vec<HttpTrigger>, ManifestError> {
    let err = |field: &str, message: String| ManifestError::new(path, field, message);
    let mut http_triggers: Vec<HttpTrigger> = Vec::new();
    let mut seen_routes: Vec<(String, usize)> = Vec::new();
    for (i, t) in raw.into_iter().enumerate() {
        let prefix = format!("trigger.http[{i}]");
        let name = match &t.id {
            Some(id) => format!("trigger `{id}`"),
            None => "this trigger".to_string(),
        };
        let component = t.component.0;
        if !components.contains_key(&component) {
            return Err(err(
                &format!("{prefix}.component"),
                format!("{name} uses component `{component}`, which is not defined; add a [component.{component}] section"),
            ));
        }
        if let Some(id) = &t.id {
            if http_triggers.iter().any(|o| o.id.as_ref() == Some(id)) {
                return Err(err(
                    &format!("{prefix}.id"),
                    format!("duplicate trigger id `{id}`"),
                ));
            }
        }
        if let Some(canonical) = t.route.canonical() {
            if let Some((_, j)) = seen_routes.iter().find(|(c, _)| *c == canonical) {
                return Err(err(
                    &format!("{prefix}.route"),
                    format!(
                        "duplicate route `{}`: trigger.http[{j}] (component `{}`) already uses an equivalent route",
                        t.route, http_triggers[*j].component
                    ),
                ));
            }
            seen_routes.push((canonical, i));
        }
        http_triggers.push(HttpTrigger {
            id: t.id,
            route: t.route,
            component,
        });
    }
    Ok(http_triggers)
}

/// Other trigger kinds are kept raw, but a dangling component reference is
/// an error whatever the trigger type.
pub(crate) fn check_other_triggers(
    others: &BTreeMap<String, Vec<toml::Table>>,
    components: &BTreeMap<String, Component>,
    path: &Path,
) -> Result<(), ManifestError> {
    let err = |field: &str, message: String| ManifestError::new(path, field, message);
    for (kind, triggers) in others {
        for (i, t) in triggers.iter().enumerate() {
            if let Some(toml::Value::String(c)) = t.get("component") {
                if !components.contains_key(c) {
                    return Err(err(
                        &format!("trigger.{kind}[{i}].component"),
                        format!("component `{c}` is not defined; add a [component.{c}] section"),
                    ));
                }
            }
        }
    }
    Ok(())
}
