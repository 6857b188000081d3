//! `[component.<id>]`: the component model and its validation.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::names::{is_kebab_id, is_label, is_snake_id, KEBAB_RULE, SNAKE_RULE};
use crate::{http_settings, raw, ComponentBvSettings, ManifestError, Template};

/// A `files` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileMount {
    /// A glob pattern relative to the app directory, mounted at the same
    /// relative path in the guest.
    Pattern(String),
    /// A host directory or file (absolute) mounted at `destination` (an
    /// absolute guest path).
    Placement {
        /// Absolute host path.
        source: PathBuf,
        /// Absolute guest path.
        destination: String,
    },
}

/// `[component.<id>.build]`: how `bv build` produces the component's source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildConfig {
    /// Shell commands, run in order.
    pub commands: Vec<String>,
    /// Absolute working directory; `None` means the app directory.
    pub workdir: Option<PathBuf>,
    /// Glob patterns that trigger a rebuild under `bv watch`.
    pub watch: Vec<String>,
}

/// A `[component.<id>]` section.
#[derive(Debug, Clone, PartialEq)]
pub struct Component {
    /// The component id (kebab-case).
    pub id: String,
    /// Absolute path of the `.wasm` file (not checked to exist: see
    /// [`App::check_sources`](crate::App::check_sources)).
    pub source: PathBuf,
    /// `description`.
    pub description: Option<String>,
    /// Raw `allowed_outbound_hosts` entries; literal entries are validated,
    /// templated ones are checked to name defined variables and validated
    /// after rendering at startup.
    pub allowed_outbound_hosts: Vec<String>,
    /// Key-value store labels the component may open.
    pub key_value_stores: Vec<String>,
    /// SQLite database labels the component may open.
    pub sqlite_databases: Vec<String>,
    /// Component variables, whose templates reference application variables.
    pub variables: BTreeMap<String, Template>,
    /// Environment variables for the guest.
    pub environment: BTreeMap<String, String>,
    /// Files made available to the guest.
    pub files: Vec<FileMount>,
    /// Glob patterns excluded from `files`.
    pub exclude_files: Vec<String>,
    /// `build`.
    pub build: Option<BuildConfig>,
    /// Whether component dependencies inherit this component's permissions.
    pub dependencies_inherit_configuration: bool,
    /// `[component.<id>.tool.bv]` overrides.
    pub bv: ComponentBvSettings,
}

/// Validates the manifest's `[component.<id>]` sections. `path` names the
/// manifest in errors, `resolve` makes a manifest-relative path absolute and
/// `undefined_var` reports a template's first undefined application variable.
pub(crate) fn parse_components(
    raw: BTreeMap<String, raw::RawComponent>,
    path: &Path,
    resolve: &dyn Fn(&str) -> PathBuf,
    undefined_var: &dyn Fn(&Template) -> Option<String>,
) -> Result<BTreeMap<String, Component>, ManifestError> {
    let err = |field: &str, message: String| ManifestError::new(path, field, message);
    let mut components = BTreeMap::new();
    for (id, rc) in raw {
        let prefix = format!("component.{id}");
        let f = |name: &str| format!("{prefix}.{name}");
        if !is_kebab_id(&id) {
            return Err(err(
                &prefix,
                format!("invalid component id `{id}`: {KEBAB_RULE}"),
            ));
        }
        if id == crate::WEBSOCKET_HOST_ID {
            return Err(err(
                &prefix,
                format!("component id `{id}` is reserved: `http://{id}.spin.internal` is bv's WebSocket interface"),
            ));
        }
        if let Some(hosts) = &rc.allowed_http_hosts {
            let suggestion: Vec<String> = hosts
                .iter()
                .map(|h| {
                    if h.contains("://") {
                        h.clone()
                    } else {
                        format!("https://{h}")
                    }
                })
                .collect();
            return Err(err(
                &f("allowed_http_hosts"),
                format!("`allowed_http_hosts` is deprecated and not supported by bv; use `allowed_outbound_hosts = {suggestion:?}`"),
            ));
        }
        if !rc.ai_models.is_empty() {
            return Err(err(
                &f("ai_models"),
                "AI models are not supported by bv".into(),
            ));
        }
        if !rc.dependencies.is_empty() {
            return Err(err(
                &f("dependencies"),
                "component dependencies are not supported by bv".into(),
            ));
        }
        if let Some(tool) = &rc.tool.special {
            http_settings::validate_component(tool, &undefined_var)
                .map_err(|(field, message)| err(&format!("{prefix}.tool.bv.{field}"), message))?;
        }
        for (i, entry) in rc.allowed_outbound_hosts.iter().enumerate() {
            let field = format!("{prefix}.allowed_outbound_hosts[{i}]");
            let template = Template::parse(entry).map_err(|e| err(&field, e.to_string()))?;
            if let Some(msg) = undefined_var(&template) {
                return Err(err(&field, msg));
            }
            if template.is_literal() {
                bv_outbound_networking::AllowedHost::parse(entry)
                    .map_err(|e| err(&field, e.to_string()))?;
            }
        }
        for (list, labels) in [
            ("key_value_stores", &rc.key_value_stores),
            ("sqlite_databases", &rc.sqlite_databases),
        ] {
            for (i, label) in labels.iter().enumerate() {
                if !is_label(label) {
                    return Err(err(
                        &format!("{prefix}.{list}[{i}]"),
                        format!("invalid label `{label}`: use kebab-case or snake_case"),
                    ));
                }
            }
        }
        for (name, template) in &rc.variables {
            let field = format!("{prefix}.variables.{name}");
            if !is_snake_id(name) {
                return Err(err(
                    &field,
                    format!("invalid variable name `{name}`: {SNAKE_RULE}"),
                ));
            }
            if let Some(msg) = undefined_var(template) {
                return Err(err(&field, msg));
            }
        }
        for name in rc.environment.keys() {
            if name.is_empty() || name.contains(['=', '\0']) {
                return Err(err(
                    &format!("{prefix}.environment"),
                    format!("invalid environment variable name {name:?}"),
                ));
            }
        }
        let mut files = Vec::new();
        for (i, file) in rc.files.into_iter().enumerate() {
            let field = format!("{prefix}.files[{i}]");
            files.push(match file {
                raw::RawFile::Pattern(p) => {
                    if p.is_empty() {
                        return Err(err(&field, "the pattern must not be empty".into()));
                    }
                    FileMount::Pattern(p)
                }
                raw::RawFile::Placement(p) => {
                    if !p.destination.starts_with('/') {
                        return Err(err(
                            &format!("{field}.destination"),
                            format!("the destination `{}` must be an absolute guest path (start with '/')", p.destination),
                        ));
                    }
                    if p.source.is_empty() {
                        return Err(err(&format!("{field}.source"), "must not be empty".into()));
                    }
                    FileMount::Placement {
                        source: resolve(&p.source),
                        destination: p.destination,
                    }
                }
            });
        }
        let build = match rc.build {
            None => None,
            Some(b) => {
                if b.command.0.is_empty() || b.command.0.iter().any(|c| c.trim().is_empty()) {
                    return Err(err(
                        &f("build.command"),
                        "build commands must not be empty".into(),
                    ));
                }
                Some(BuildConfig {
                    commands: b.command.0,
                    workdir: b.workdir.as_deref().map(&resolve),
                    watch: b.watch,
                })
            }
        };
        components.insert(
            id.clone(),
            Component {
                source: resolve(&rc.source.0),
                description: rc.description,
                allowed_outbound_hosts: rc.allowed_outbound_hosts,
                key_value_stores: rc.key_value_stores,
                sqlite_databases: rc.sqlite_databases,
                variables: rc.variables,
                environment: rc.environment,
                files,
                exclude_files: rc.exclude_files,
                build,
                dependencies_inherit_configuration: rc.dependencies_inherit_configuration,
                bv: rc.tool.special.unwrap_or_default(),
                id,
            },
        );
    }
    Ok(components)
}
