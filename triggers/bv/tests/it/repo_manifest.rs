//! Test apps derived from the repository's own `spin.toml`, so a test runs
//! the components with the routes, triggers, variables and settings users
//! run, changed only where the test says so.

use std::collections::BTreeSet;

use toml::{Table, Value};

use crate::harness::repo_root;

/// Every component a checkout touches (the cart's product lookups, the
/// saga's calls, the projector that opens stock, the sweeper).
pub const CHECKOUT: [&str; 7] = [
    "product",
    "inventory",
    "inventory-projector",
    "cart",
    "payment",
    "order",
    "order-sweeper",
];

/// The repository's `spin.toml`, cut down and adjusted for one test.
#[derive(Clone)]
pub struct RepoManifest {
    doc: Table,
}

impl RepoManifest {
    /// The whole shipped manifest.
    pub fn load() -> Self {
        let text = std::fs::read_to_string(repo_root().join("spin.toml")).unwrap();
        Self {
            doc: text.parse().expect("spin.toml parses"),
        }
    }

    /// Only `components` and their triggers; the application is named `name`
    /// (so its subscriptions and rate-limit buckets are its own).
    pub fn only(mut self, name: &str, components: &[&str]) -> Self {
        let keep: BTreeSet<&str> = components.iter().copied().collect();
        self.table(&["application"])
            .insert("name".into(), name.into());
        let all = self.table(&["component"]);
        for id in all.keys().cloned().collect::<Vec<_>>() {
            if !keep.contains(id.as_str()) {
                all.remove(&id);
            }
        }
        if let Some(missing) = keep.iter().find(|id| !all.contains_key(**id)) {
            panic!("spin.toml has no component `{missing}`");
        }
        let triggers = self.table(&["trigger"]);
        for entries in triggers.iter_mut().map(|(_, v)| v) {
            let Value::Array(entries) = entries else {
                continue;
            };
            entries.retain(|e| {
                e.get("component")
                    .and_then(Value::as_str)
                    .is_some_and(|c| keep.contains(c))
            });
        }
        triggers.retain(|_, entries| entries.as_array().is_none_or(|e| !e.is_empty()));
        let kinds: BTreeSet<String> = triggers.keys().cloned().collect();
        self.table(&["application", "trigger"])
            .retain(|kind, _| kinds.contains(kind));
        self
    }

    /// `extra` (TOML: more components, triggers, settings) merged in: tables
    /// key by key, arrays of tables appended.
    pub fn merge(mut self, extra: &str) -> Self {
        fn merge_into(into: &mut Table, from: Table) {
            for (key, value) in from {
                match (into.get_mut(&key), value) {
                    (Some(Value::Table(into)), Value::Table(from)) => merge_into(into, from),
                    (Some(Value::Array(into)), Value::Array(from)) => into.extend(from),
                    (_, value) => {
                        into.insert(key, value);
                    }
                }
            }
        }
        let extra: Table = extra.parse().expect("extra manifest TOML parses");
        merge_into(&mut self.doc, extra);
        self
    }

    /// The application variable `name` with the default `value` (declared
    /// when the manifest has no such variable).
    pub fn variable(mut self, name: &str, value: &str) -> Self {
        let mut declared = Table::new();
        declared.insert("default".into(), value.into());
        self.table(&["variables"])
            .insert(name.into(), Value::Table(declared));
        self
    }

    /// The application variable `name`, required (from the environment).
    pub fn required_variable(mut self, name: &str) -> Self {
        let mut declared = Table::new();
        declared.insert("required".into(), true.into());
        self.table(&["variables"])
            .insert(name.into(), Value::Table(declared));
        self
    }

    /// `component`'s variable `name` set to `value` (a literal or a
    /// `{{ template }}`).
    pub fn component_variable(mut self, component: &str, name: &str, value: &str) -> Self {
        self.table(&["component", component, "variables"])
            .insert(name.into(), value.into());
        self
    }

    /// `component`'s environment variable `name` set to `value`.
    pub fn environment(mut self, component: &str, name: &str, value: &str) -> Self {
        self.table(&["component", component, "environment"])
            .insert(name.into(), value.into());
        self
    }

    /// `[application.trigger.<kind>] key = value`.
    pub fn trigger_setting(mut self, kind: &str, key: &str, value: impl Into<Value>) -> Self {
        self.table(&["application", "trigger", kind])
            .insert(key.into(), value.into());
        self
    }

    /// `key = value` on every `[[trigger.<kind>]]` entry of `component`.
    pub fn trigger_field(
        mut self,
        kind: &str,
        component: &str,
        key: &str,
        value: impl Into<Value>,
    ) -> Self {
        let value = value.into();
        let mut found = false;
        let entries = self.table(&["trigger"]).get_mut(kind);
        for entry in entries.and_then(Value::as_array_mut).into_iter().flatten() {
            let Value::Table(entry) = entry else { continue };
            if entry.get("component").and_then(Value::as_str) == Some(component) {
                entry.insert(key.into(), value.clone());
                found = true;
            }
        }
        assert!(found, "no [[trigger.{kind}]] for `{component}`");
        self
    }

    /// No component rate-limited. Every test's requests come from
    /// 127.0.0.1, so per-address buckets would tie unrelated tests
    /// together; the limits themselves are tested in `rate_limit` and
    /// `login_guard`.
    pub fn without_rate_limits(mut self) -> Self {
        for component in self.table(&["component"]).iter_mut().map(|(_, v)| v) {
            if let Some(Value::Table(bv)) = component.get_mut("tool").and_then(|t| t.get_mut("bv"))
            {
                bv.remove("rate_limit");
            }
        }
        self
    }

    /// The manifest text: component sources as `{wasm:<crate>}` (resolved by
    /// the harness to the components the suite built), no build commands,
    /// and no variable that nothing refers to any more.
    pub fn render(&self) -> String {
        let mut doc = self.doc.clone();
        if let Some(Value::Table(components)) = doc.get_mut("component") {
            for component in components.iter_mut().map(|(_, v)| v) {
                let Value::Table(component) = component else {
                    continue;
                };
                component.remove("build");
                let source = component["source"].as_str().unwrap().to_string();
                if !source.ends_with(".wasm") {
                    continue; // a test's own component, `{wasm:…}` already
                }
                let stem = std::path::Path::new(&source)
                    .file_stem()
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .to_string();
                component.insert("source".into(), format!("{{wasm:{stem}}}").into());
            }
        }
        let without_variables = {
            let mut rest = doc.clone();
            rest.remove("variables");
            toml::to_string(&rest).unwrap()
        };
        if let Some(Value::Table(variables)) = doc.get_mut("variables") {
            variables.retain(|name, _| {
                without_variables.contains(&format!("{{{{ {name} }}}}"))
                    || without_variables.contains(&format!("{{{{{name}}}}}"))
            });
        }
        toml::to_string(&doc).unwrap()
    }

    /// The table at `path`, created when missing.
    fn table(&mut self, path: &[&str]) -> &mut Table {
        let mut table = &mut self.doc;
        for key in path {
            table = table
                .entry(key.to_string())
                .or_insert_with(|| Value::Table(Table::new()))
                .as_table_mut()
                .unwrap_or_else(|| panic!("{key} is not a table"));
        }
        table
    }
}

#[test]
fn a_cut_down_manifest_keeps_what_users_run_of_the_chosen_components() {
    let text = RepoManifest::load()
        .only("cut", &["cart", "product"])
        .without_rate_limits()
        .component_variable("cart", "cart_key_prefix", "t1:")
        .render();
    let doc: Table = text.parse().unwrap();
    let components: Vec<&String> = doc["component"].as_table().unwrap().keys().collect();
    assert_eq!(components, ["cart", "product"]);
    assert_eq!(doc["application"]["name"].as_str(), Some("cut"));
    let cart = &doc["component"]["cart"];
    assert_eq!(cart["source"].as_str(), Some("{wasm:cart}"));
    assert_eq!(cart["variables"]["cart_key_prefix"].as_str(), Some("t1:"));
    assert!(cart["tool"]["bv"].get("rate_limit").is_none());
    assert!(cart.get("build").is_none());
    // The cart's own event subscription comes along; the auth component's
    // secrets and routes do not.
    let postgres = doc["trigger"]["postgres"].as_array().unwrap();
    assert!(postgres
        .iter()
        .all(|e| e["component"].as_str() == Some("cart")));
    assert!(!doc["variables"]
        .as_table()
        .unwrap()
        .contains_key("auth_signing_keys"));
    assert!(doc["variables"]
        .as_table()
        .unwrap()
        .contains_key("auth_public_keys"));
}

/// Whether an HTTP route serves a gRPC service (`/package.Service/...`):
/// its contract is its `.proto` and server reflection, not OpenAPI, and it
/// routes by the full gRPC path, not under a mount.
pub fn is_grpc_route(route: &str) -> bool {
    route
        .trim_start_matches('/')
        .split('/')
        .next()
        .is_some_and(|service| service.contains('.'))
}
