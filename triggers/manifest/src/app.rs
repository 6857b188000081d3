//! The validated application, [`App`]: its `[application]` section and the
//! lookups the trigger crates make on it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use crate::{BvSettings, Component, HttpTrigger, ManifestError, Variable};

/// A validated Spin application.
#[derive(Debug, Clone, PartialEq)]
pub struct App {
    /// Absolute path of the manifest file.
    pub path: PathBuf,
    /// The manifest's directory; relative paths in the manifest are resolved
    /// against it.
    pub base_dir: PathBuf,
    /// `[application]`.
    pub application: Application,
    /// Top-level `[variables]`: the application variables.
    pub variables: BTreeMap<String, Variable>,
    /// `[[trigger.http]]` entries, in manifest order.
    pub http_triggers: Vec<HttpTrigger>,
    /// Other trigger kinds (`redis`, `mqtt`, `cron`, ...), kept raw (in
    /// manifest order per kind) for the crates that implement them.
    pub other_triggers: BTreeMap<String, Vec<toml::Table>>,
    /// `[component.<id>]`, by id.
    pub components: BTreeMap<String, Component>,
    /// `[application.tool.bv]`, with defaults filled in.
    pub bv: BvSettings,
    /// Components of the manifest left out by [`App::select`]: absent here,
    /// so chaining to one is answered as "not deployed", not "no such
    /// component".
    pub unselected: BTreeSet<String>,
}

/// `[application]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Application {
    /// `name`.
    pub name: String,
    /// `version`.
    pub version: Option<String>,
    /// `description`.
    pub description: Option<String>,
    /// `authors`.
    pub authors: Vec<String>,
    /// `[application.trigger.http] base`, default `"/"`: prefixed to every
    /// HTTP route.
    pub http_base: String,
    /// `[application.trigger.<kind>]` for kinds other than `http`, raw, for
    /// the trigger crates that own them.
    pub trigger_settings: BTreeMap<String, toml::Table>,
}

impl App {
    /// `[application.trigger.<kind>]` parsed strictly into `T` (`None` when
    /// the manifest has no such table). Trigger crates own their settings'
    /// types; errors name this manifest and the field.
    pub fn trigger_settings<T: serde::de::DeserializeOwned>(
        &self,
        kind: &str,
    ) -> Result<Option<T>, ManifestError> {
        self.application
            .trigger_settings
            .get(kind)
            .map(|table| self.parse_table(table, &format!("application.trigger.{kind}")))
            .transpose()
    }

    /// Every `[[trigger.<kind>]]` entry parsed strictly into `T`, in manifest
    /// order; errors name this manifest and the field (`trigger.<kind>[i]...`).
    pub fn trigger_entries<T: serde::de::DeserializeOwned>(
        &self,
        kind: &str,
    ) -> Result<Vec<T>, ManifestError> {
        self.other_triggers
            .get(kind)
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .enumerate()
            .map(|(i, table)| self.parse_table(table, &format!("trigger.{kind}[{i}]")))
            .collect()
    }

    fn parse_table<T: serde::de::DeserializeOwned>(
        &self,
        table: &toml::Table,
        at: &str,
    ) -> Result<T, ManifestError> {
        serde_path_to_error::deserialize(toml::Value::Table(table.clone())).map_err(|e| {
            let path = e.path().to_string();
            let field = if path == "." {
                at.to_string()
            } else {
                format!("{at}.{path}")
            };
            ManifestError::new(&self.path, field, e.into_inner().to_string().trim())
        })
    }

    /// Reports the first component whose source file does not exist. Kept
    /// out of [`parse`](crate::parse) because `bv build` loads the manifest
    /// before the sources exist.
    pub fn check_sources(&self) -> Result<(), ManifestError> {
        for (id, c) in &self.components {
            if !c.source.is_file() {
                return Err(ManifestError::new(
                    &self.path,
                    format!("component.{id}.source"),
                    format!(
                        "source file {} does not exist; run `bv build` to build it",
                        c.source.display()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Keeps only the components `ids` (Spin's `--component-id`, SpinKube's
    /// `components`), and only the triggers of those: the others' routes,
    /// subscriptions and schedules are absent. An id the manifest does not
    /// define is an error that lists the ones it does.
    pub fn select(&mut self, ids: &[String]) -> Result<(), ManifestError> {
        if ids.is_empty() {
            return Ok(());
        }
        for id in ids {
            if !self.components.contains_key(id) {
                return Err(ManifestError::new(
                    &self.path,
                    "--component-id",
                    format!(
                        "component `{id}` is not defined; the manifest's components are: {}",
                        self.components
                            .keys()
                            .cloned()
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            }
        }
        let keep: BTreeSet<&String> = ids.iter().collect();
        let (kept, dropped): (BTreeMap<_, _>, BTreeMap<_, _>) =
            std::mem::take(&mut self.components)
                .into_iter()
                .partition(|(id, _)| keep.contains(id));
        self.components = kept;
        self.unselected.extend(dropped.into_keys());
        self.http_triggers
            .retain(|t| self.components.contains_key(&t.component));
        for triggers in self.other_triggers.values_mut() {
            triggers.retain(|t| {
                matches!(t.get("component"), Some(toml::Value::String(c)) if self.components.contains_key(c))
            });
        }
        self.other_triggers
            .retain(|_, triggers| !triggers.is_empty());
        Ok(())
    }

    /// Looks up a component by id.
    pub fn component(&self, id: &str) -> Option<&Component> {
        self.components.get(id)
    }

    /// The effective bv settings for a component (its overrides over the
    /// application's).
    pub fn bv_settings_for(&self, component: &str) -> BvSettings {
        match self.components.get(component) {
            Some(c) => c.bv.resolve(&self.bv),
            None => self.bv.clone(),
        }
    }
}
