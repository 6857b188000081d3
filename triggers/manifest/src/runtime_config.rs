//! The runtime config (`runtime-config.toml`): the backing stores of the
//! non-default key-value stores and SQLite databases.

use std::collections::BTreeMap;
use std::path::{Component as PathComponent, Path, PathBuf};

use crate::error::deserialize_strict;
use crate::load::parent_dir;
use crate::names::is_label;
use crate::{raw, App, ManifestError};

/// Backing stores for non-default key-value stores and SQLite databases.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuntimeConfig {
    /// `[key_value_store.<label>]`.
    pub key_value_stores: BTreeMap<String, KeyValueStoreConfig>,
    /// `[sqlite_database.<label>]`.
    pub sqlite_databases: BTreeMap<String, SqliteDatabaseConfig>,
}

/// `[key_value_store.<label>]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyValueStoreConfig {
    /// `type = "spin"`: bv's local SQLite-backed store; `path` is absolute
    /// (resolved against the runtime config's directory), `None` for the
    /// default location.
    Spin {
        /// Database file.
        path: Option<PathBuf>,
    },
    /// `type = "redis"`.
    Redis {
        /// Connection URL, e.g. `redis://localhost:6379`.
        url: String,
    },
}

/// `[sqlite_database.<label>]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SqliteDatabaseConfig {
    /// `type = "spin"`: a local SQLite file; `path` is absolute, `None` for
    /// the default location.
    Spin {
        /// Database file.
        path: Option<PathBuf>,
    },
}

/// Reads and validates the runtime config at `path`.
pub fn load_runtime_config(path: &Path) -> Result<RuntimeConfig, ManifestError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ManifestError::new(path, "", format!("cannot read runtime config: {e}")))?;
    parse_runtime_config(&text, path)
}

/// Parses and validates runtime-config `text`; `path` names the file in
/// errors and its directory anchors relative `path`s.
pub fn parse_runtime_config(text: &str, path: &Path) -> Result<RuntimeConfig, ManifestError> {
    let raw: raw::RawRuntimeConfig = deserialize_strict(text, path)?;
    let dir = parent_dir(path);
    let resolve = |p: String| -> PathBuf {
        dir.join(p)
            .components()
            .filter(|c| !matches!(c, PathComponent::CurDir))
            .collect()
    };
    let mut rc = RuntimeConfig::default();
    for (label, store) in raw.key_value_store {
        let field = format!("key_value_store.{label}");
        if !is_label(&label) {
            return Err(ManifestError::new(
                path,
                field,
                format!("invalid label `{label}`: use kebab-case or snake_case"),
            ));
        }
        let config = match store {
            raw::RawKeyValueStore::Spin { path: p } => KeyValueStoreConfig::Spin {
                path: p.map(resolve),
            },
            raw::RawKeyValueStore::Redis { url } => {
                if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
                    return Err(ManifestError::new(
                        path,
                        format!("{field}.url"),
                        format!("`{url}` is not a redis:// or rediss:// URL"),
                    ));
                }
                KeyValueStoreConfig::Redis { url }
            }
        };
        rc.key_value_stores.insert(label, config);
    }
    for (label, db) in raw.sqlite_database {
        if !is_label(&label) {
            return Err(ManifestError::new(
                path,
                format!("sqlite_database.{label}"),
                format!("invalid label `{label}`: use kebab-case or snake_case"),
            ));
        }
        let config = match db {
            raw::RawSqliteDatabase::Spin { path: p } => SqliteDatabaseConfig::Spin {
                path: p.map(resolve),
            },
        };
        rc.sqlite_databases.insert(label, config);
    }
    Ok(rc)
}

impl App {
    /// Checks that every non-default key-value store and SQLite database a
    /// component uses is defined in the runtime config, as Spin requires.
    pub fn validate_runtime_config(&self, rc: &RuntimeConfig) -> Result<(), ManifestError> {
        for (id, c) in &self.components {
            if let Some(label) = c
                .key_value_stores
                .iter()
                .find(|l| *l != "default" && !rc.key_value_stores.contains_key(*l))
            {
                return Err(ManifestError::new(
                    &self.path,
                    format!("component.{id}.key_value_stores"),
                    format!("key-value store `{label}` is not defined in the runtime config; add a [key_value_store.{label}] section"),
                ));
            }
            if let Some(label) = c
                .sqlite_databases
                .iter()
                .find(|l| *l != "default" && !rc.sqlite_databases.contains_key(*l))
            {
                return Err(ManifestError::new(
                    &self.path,
                    format!("component.{id}.sqlite_databases"),
                    format!("SQLite database `{label}` is not defined in the runtime config; add a [sqlite_database.{label}] section"),
                ));
            }
        }
        Ok(())
    }
}
