//! Loads and validates a Spin application manifest (`spin.toml`, manifest
//! version 2) and a bv runtime config (`runtime-config.toml`).
//!
//! bv runs unmodified Spin applications, so it must accept what Spin accepts
//! and mean the same thing by it. Unlike Spin, it is strict about everything
//! else: every unknown field, malformed route, undefined variable or bad
//! `allowed_outbound_hosts` entry is an error at load time, reported as
//! `<file>: <dotted.field>: <message>` so the user can fix the manifest
//! without reading bv's source. The resulting [`App`] is a fully-resolved,
//! validated model (absolute paths, parsed routes and templates) that the
//! trigger crates consume without re-checking.
//!
//! Things bv cannot run (remote component sources, inline components, the
//! Wagi executor, AI models, component dependencies) are rejected with a clear
//! "not supported" message rather than ignored.

#![deny(missing_docs)]

mod http_settings;
mod names;
mod raw;
mod template;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Component as PathComponent, Path, PathBuf};

use serde::Deserialize;

pub use bv_routes::RouteSpec;
pub use http_settings::{
    CorsSettings, Count, IpNetwork, RateLimitNumbers, RateLimitSettings,
    DEFAULT_MAX_REQUEST_HEADERS, DEFAULT_MAX_REQUEST_HEADER_BYTES,
};
pub use template::{Template, TemplateError};

use names::{is_kebab_id, is_label, is_snake_id};

/// A manifest or runtime-config problem, located precisely enough to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ManifestError {
    /// The file the problem is in, as the user named it.
    pub file: PathBuf,
    /// Dotted path of the offending field, e.g. `component.hello.source` or
    /// `trigger.http[2].route`; empty when the problem is not about one field
    /// (e.g. a TOML syntax error or an unreadable file).
    pub field: String,
    /// What is wrong and, where possible, how to fix it. Includes the line
    /// and column when the TOML parser knows them.
    pub message: String,
}

impl ManifestError {
    /// Builds an error; public so that later stages (e.g. rendering templates
    /// at startup) can report problems in the same format.
    pub fn new(
        file: impl Into<PathBuf>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        ManifestError {
            file: file.into(),
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}: {}", self.file.display(), self.message)
        } else {
            write!(
                f,
                "{}: {}: {}",
                self.file.display(),
                self.field,
                self.message
            )
        }
    }
}

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

/// An application variable.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Variable {
    /// Value used when no provider supplies one.
    pub default: Option<String>,
    /// The app must not start without a value.
    pub required: bool,
    /// The value must not be logged or shown.
    pub secret: bool,
}

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
    /// [`App::check_sources`]).
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

/// What to do with a component instance after a request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InstancePolicy {
    /// Reuse instances across requests (bounded by `instance_max_requests`)
    /// for throughput.
    #[default]
    Reuse,
    /// A fresh instance per request, exactly like Spin: no state can leak
    /// between requests.
    Strict,
}

/// bv's runtime settings (`[application.tool.bv]`); Spin ignores tool tables,
/// so these keep the manifest runnable by Spin too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BvSettings {
    /// Instance reuse policy (`"reuse"` or `"strict"`).
    pub instance_policy: InstancePolicy,
    /// Requests served by one instance before it is discarded (reuse policy).
    pub instance_max_requests: u32,
    /// Instances of one component alive at the same time.
    pub instance_max_concurrent: u32,
    /// Per-request deadline in milliseconds.
    pub request_timeout_ms: u64,
    /// Linear memory limit per instance, in MiB.
    pub memory_limit_mb: u64,
    /// Requests in flight per component before bv answers 503.
    pub max_concurrent_requests: u32,
    /// The least severe level of the component's stdout/stderr lines that
    /// bv logs; lines below it are dropped.
    pub log_level: LogLevel,
    /// Most bytes of request body the component is given; a longer body is
    /// answered 413 (checked while the body streams, not only against
    /// `Content-Length`). `None` (the default, as under Spin): no limit.
    pub max_request_body_bytes: Option<u64>,
    /// Most request header fields (application-wide); more is answered 431.
    pub max_request_headers: u32,
    /// Most bytes of request header names and values (application-wide);
    /// more is answered 431.
    pub max_request_header_bytes: u32,
    /// `[application.tool.bv.cors]` (application-wide); `None`: no CORS
    /// headers, preflights go to the component.
    pub cors: Option<CorsSettings>,
    /// The component's rate limit; `None`: unlimited.
    pub rate_limit: Option<RateLimitSettings>,
    /// The proxies (addresses or CIDR networks, application-wide) whose
    /// `Forwarded` / `X-Forwarded-For` headers name the client; each entry
    /// may be a `{{ variable }}` template holding a comma-separated list.
    /// Empty: the client is the TCP peer.
    pub trusted_proxies: Vec<Template>,
}

/// How much of a component's output (stdout and stderr lines) bv logs
/// (`log_level = "trace" | "debug" | "info" | "warn" | "error" | "off"`).
/// Ordered from the most to the least verbose.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Everything.
    Trace,
    /// Debug and above.
    Debug,
    /// Info and above: plain stdout lines (info) and stderr lines (warn).
    #[default]
    Info,
    /// Warnings and errors.
    Warn,
    /// Errors only.
    Error,
    /// Nothing (metric lines are still counted).
    Off,
}

impl Default for BvSettings {
    fn default() -> Self {
        BvSettings {
            instance_policy: InstancePolicy::Reuse,
            instance_max_requests: 128,
            instance_max_concurrent: 16,
            request_timeout_ms: 30_000,
            memory_limit_mb: 128,
            max_concurrent_requests: 1000,
            log_level: LogLevel::Info,
            max_request_body_bytes: None,
            max_request_headers: DEFAULT_MAX_REQUEST_HEADERS,
            max_request_header_bytes: DEFAULT_MAX_REQUEST_HEADER_BYTES,
            cors: None,
            rate_limit: None,
            trusted_proxies: Vec::new(),
        }
    }
}

/// Per-component overrides of [`BvSettings`] (`[component.<id>.tool.bv]`);
/// `None` inherits the application setting.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComponentBvSettings {
    /// See [`BvSettings::instance_policy`].
    #[serde(default)]
    pub instance_policy: Option<InstancePolicy>,
    /// See [`BvSettings::instance_max_requests`].
    #[serde(default, deserialize_with = "raw::positive_u32")]
    pub instance_max_requests: Option<u32>,
    /// See [`BvSettings::instance_max_concurrent`].
    #[serde(default, deserialize_with = "raw::positive_u32")]
    pub instance_max_concurrent: Option<u32>,
    /// See [`BvSettings::request_timeout_ms`].
    #[serde(default, deserialize_with = "raw::positive_u64")]
    pub request_timeout_ms: Option<u64>,
    /// See [`BvSettings::memory_limit_mb`].
    #[serde(default, deserialize_with = "raw::positive_u64")]
    pub memory_limit_mb: Option<u64>,
    /// See [`BvSettings::max_concurrent_requests`].
    #[serde(default, deserialize_with = "raw::positive_u32")]
    pub max_concurrent_requests: Option<u32>,
    /// See [`BvSettings::log_level`].
    #[serde(default)]
    pub log_level: Option<LogLevel>,
    /// See [`BvSettings::max_request_body_bytes`].
    #[serde(default, deserialize_with = "raw::positive_u64")]
    pub max_request_body_bytes: Option<u64>,
    /// See [`BvSettings::max_request_headers`] (application only).
    #[serde(default, deserialize_with = "raw::positive_u32")]
    pub max_request_headers: Option<u32>,
    /// See [`BvSettings::max_request_header_bytes`] (application only).
    #[serde(default, deserialize_with = "raw::positive_u32")]
    pub max_request_header_bytes: Option<u32>,
    /// See [`BvSettings::cors`] (application only).
    #[serde(default)]
    pub cors: Option<CorsSettings>,
    /// See [`BvSettings::rate_limit`]; at the application level, the limit
    /// of every component that sets none (each has its own buckets).
    #[serde(default)]
    pub rate_limit: Option<RateLimitSettings>,
    /// See [`BvSettings::trusted_proxies`] (application only).
    #[serde(default)]
    pub trusted_proxies: Option<Vec<Template>>,
}

impl ComponentBvSettings {
    /// The effective settings for the component: each override, else the
    /// application's value.
    pub fn resolve(&self, app: &BvSettings) -> BvSettings {
        BvSettings {
            instance_policy: self.instance_policy.unwrap_or(app.instance_policy),
            instance_max_requests: self
                .instance_max_requests
                .unwrap_or(app.instance_max_requests),
            instance_max_concurrent: self
                .instance_max_concurrent
                .unwrap_or(app.instance_max_concurrent),
            request_timeout_ms: self.request_timeout_ms.unwrap_or(app.request_timeout_ms),
            memory_limit_mb: self.memory_limit_mb.unwrap_or(app.memory_limit_mb),
            max_concurrent_requests: self
                .max_concurrent_requests
                .unwrap_or(app.max_concurrent_requests),
            log_level: self.log_level.unwrap_or(app.log_level),
            max_request_body_bytes: self.max_request_body_bytes.or(app.max_request_body_bytes),
            max_request_headers: self.max_request_headers.unwrap_or(app.max_request_headers),
            max_request_header_bytes: self
                .max_request_header_bytes
                .unwrap_or(app.max_request_header_bytes),
            cors: self.cors.clone().or_else(|| app.cors.clone()),
            rate_limit: self.rate_limit.clone().or_else(|| app.rate_limit.clone()),
            trusted_proxies: self
                .trusted_proxies
                .clone()
                .unwrap_or_else(|| app.trusted_proxies.clone()),
        }
    }
}

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

/// Reads and validates the manifest at `path`.
pub fn load(path: &Path) -> Result<App, ManifestError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ManifestError::new(path, "", format!("cannot read manifest: {e}")))?;
    parse(&text, path)
}

/// Reads and validates the runtime config at `path`.
pub fn load_runtime_config(path: &Path) -> Result<RuntimeConfig, ManifestError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ManifestError::new(path, "", format!("cannot read runtime config: {e}")))?;
    parse_runtime_config(&text, path)
}

/// Makes `p` absolute (against the current directory) and drops `.`
/// components, without touching the filesystem: sources may not exist yet.
fn absolutize(p: &Path) -> PathBuf {
    let joined = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .unwrap_or_else(|_| PathBuf::from("/"))
            .join(p)
    };
    joined
        .components()
        .filter(|c| !matches!(c, PathComponent::CurDir))
        .collect()
}

/// The absolute directory containing `file`.
fn parent_dir(file: &Path) -> PathBuf {
    let abs = absolutize(file);
    abs.parent().map(Path::to_path_buf).unwrap_or(abs)
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

fn syntax_error(file: &Path, text: &str, e: toml::de::Error) -> ManifestError {
    let message = match e.span() {
        Some(span) => {
            let (line, col) = line_col(text, span.start);
            format!(
                "TOML syntax error at line {line}, column {col}: {}",
                e.message()
            )
        }
        None => format!("TOML syntax error: {}", e.message()),
    };
    ManifestError::new(file, "", message)
}

/// Deserializes `T` from `text`, turning serde errors into [`ManifestError`]s
/// whose field is the dotted path (including an unknown field's own name).
fn deserialize_strict<T: serde::de::DeserializeOwned>(
    text: &str,
    file: &Path,
) -> Result<T, ManifestError> {
    let de = toml::Deserializer::parse(text).map_err(|e| syntax_error(file, text, e))?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        let mut field = e.path().to_string();
        if field == "." {
            field.clear();
        }
        let inner = e.into_inner();
        let mut message = inner.message().to_string();
        if let Some(name) = message
            .strip_prefix("unknown field `")
            .and_then(|r| r.split_once('`'))
            .map(|(name, _)| name.to_string())
        {
            // serde_path_to_error usually records the unknown key already.
            if field.rsplit('.').next() != Some(name.as_str()) {
                field = join(&field, &name);
            }
        }
        if let Some(span) = inner.span() {
            let (line, col) = line_col(text, span.start);
            message.push_str(&format!(" (line {line}, column {col})"));
        }
        ManifestError::new(file, field, message)
    })
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

/// Parses and validates manifest `text`; `path` names the file in errors and
/// its directory anchors relative paths.
pub fn parse(text: &str, path: &Path) -> Result<App, ManifestError> {
    let err = |field: &str, message: String| ManifestError::new(path, field, message);

    // Check the version first: a v1 manifest would otherwise drown in
    // unknown-field errors.
    let table: toml::Table = toml::from_str(text).map_err(|e| syntax_error(path, text, e))?;
    if table.contains_key("spin_version") {
        return Err(err(
            "spin_version",
            "Spin manifest version 1 is not supported; convert the manifest to `spin_manifest_version = 2` (e.g. with `spin doctor`)".into(),
        ));
    }
    match table.get("spin_manifest_version") {
        Some(toml::Value::Integer(2)) => {}
        Some(other) => {
            return Err(err(
                "spin_manifest_version",
                format!(
                    "unsupported manifest version {other}; bv requires `spin_manifest_version = 2`"
                ),
            ))
        }
        None => {
            return Err(err(
                "spin_manifest_version",
                "missing; bv requires `spin_manifest_version = 2`".into(),
            ))
        }
    }

    let raw: raw::RawManifest = deserialize_strict(text, path)?;
    let base_dir = parent_dir(path);
    let resolve = |p: &str| -> PathBuf {
        base_dir
            .join(p)
            .components()
            .filter(|c| !matches!(c, PathComponent::CurDir))
            .collect()
    };

    // [application]
    let app_http = raw
        .application
        .trigger
        .special
        .unwrap_or(raw::RawAppHttp { base: None });
    let http_base = app_http.base.unwrap_or_else(|| "/".to_string());
    bv_routes::normalize_base(&http_base)
        .map_err(|e| err("application.trigger.http.base", e.to_string()))?;
    let application = Application {
        name: raw.application.name,
        version: raw.application.version,
        description: raw.application.description,
        authors: raw.application.authors,
        http_base,
        trigger_settings: raw.application.trigger.others,
    };
    let app_tool = raw.application.tool.special.unwrap_or_default();
    let app_bv = app_tool.resolve(&BvSettings::default());

    // [variables]
    let mut variables = BTreeMap::new();
    for (name, v) in raw.variables {
        let field = format!("variables.{name}");
        if !is_snake_id(&name) {
            return Err(err(
                &field,
                format!("invalid variable name `{name}`: {SNAKE_RULE}"),
            ));
        }
        if v.required && v.default.is_some() {
            return Err(err(
                &field,
                "a variable cannot have both a `default` and `required = true`".into(),
            ));
        }
        variables.insert(
            name,
            Variable {
                default: v.default,
                required: v.required,
                secret: v.secret,
            },
        );
    }
    let undefined_var = |template: &Template| -> Option<String> {
        template
            .variables()
            .find(|v| !variables.contains_key(*v))
            .map(|v| {
                format!("`{{{{ {v} }}}}` refers to an undefined application variable; declare `{v}` in [variables]")
            })
    };
    http_settings::validate_app(&app_tool, &undefined_var)
        .map_err(|(field, message)| err(&format!("application.tool.bv.{field}"), message))?;

    // [component.<id>]
    let mut components = BTreeMap::new();
    for (id, rc) in raw.component {
        let prefix = format!("component.{id}");
        let f = |name: &str| format!("{prefix}.{name}");
        if !is_kebab_id(&id) {
            return Err(err(
                &prefix,
                format!("invalid component id `{id}`: {KEBAB_RULE}"),
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

    // [[trigger.http]]
    let mut http_triggers: Vec<HttpTrigger> = Vec::new();
    let mut seen_routes: Vec<(String, usize)> = Vec::new();
    for (i, t) in raw
        .trigger
        .special
        .unwrap_or_default()
        .into_iter()
        .enumerate()
    {
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

    // Other trigger kinds are kept raw, but a dangling component reference
    // is an error whatever the trigger type.
    for (kind, triggers) in &raw.trigger.others {
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

    Ok(App {
        path: absolutize(path),
        base_dir,
        application,
        variables,
        http_triggers,
        other_triggers: raw.trigger.others,
        components,
        bv: app_bv,
    })
}

const SNAKE_RULE: &str =
    "use lowercase letters, digits and single underscores, starting with a letter";
const KEBAB_RULE: &str = "use lowercase letters, digits and single hyphens, starting with a letter";

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
    /// out of [`parse`] because `bv build` loads the manifest before the
    /// sources exist.
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

#[cfg(test)]
mod tests;
