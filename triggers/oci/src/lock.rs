//! From a manifest on disk to a [`LockedApp`] whose code and files are
//! named by digest, plus the layers that carry them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use bv_manifest::FileMount;
use serde_json::{Map, Value};
use sha2::{Digest as _, Sha256};

use crate::locked::{ContentPath, ContentRef, LockedApp, LockedComponent, LockedSource};
use crate::locked::{LockedTrigger, Variable};
use crate::{DATA_MEDIA_TYPE, WASM_MEDIA_TYPE};

/// Files up to this size travel inline in the locked app, as Spin does:
/// some registries refuse blobs of zero or one byte.
const INLINE_MAX: usize = 128;

/// A blob to push: a component's code or one file.
#[derive(Debug, Clone)]
pub struct Layer {
    /// `application/vnd.wasm.content.layer.v1+wasm` or `+data`.
    pub media_type: &'static str,
    /// The bytes.
    pub data: Vec<u8>,
    /// `sha256:<hex>` of `data`.
    pub digest: String,
}

impl Layer {
    fn new(media_type: &'static str, data: Vec<u8>) -> Self {
        let digest = sha256_digest(&data);
        Self {
            media_type,
            data,
            digest,
        }
    }
}

/// `sha256:<hex>` of `data`.
pub fn sha256_digest(data: &[u8]) -> String {
    let hash = Sha256::digest(data);
    let mut out = String::with_capacity(71);
    out.push_str("sha256:");
    for byte in hash {
        out.push_str(&format!("{byte:02x}"));
    }
    out
}

/// Validates the manifest at `path` (as `bv up` would) and locks it: every
/// component's code and files become layers, referenced by digest.
pub fn lock(path: &Path) -> anyhow::Result<(LockedApp, Vec<Layer>)> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read manifest {}", path.display()))?;
    let app = bv_manifest::parse(&text, path)?;
    let doc: toml::Table = toml::from_str(&text)?;
    let mut layers: Vec<Layer> = Vec::new();
    let mut push_layer = |layer: Layer| {
        if !layers.iter().any(|l| l.digest == layer.digest) {
            layers.push(layer);
        }
    };

    let mut metadata = Map::new();
    metadata.insert("name".into(), app.application.name.clone().into());
    if let Some(v) = &app.application.version {
        metadata.insert("version".into(), v.clone().into());
    }
    if let Some(d) = &app.application.description {
        metadata.insert("description".into(), d.clone().into());
    }
    if !app.application.authors.is_empty() {
        metadata.insert("authors".into(), app.application.authors.clone().into());
    }
    let application = doc.get("application").and_then(toml::Value::as_table);
    if let Some(triggers) = application.and_then(|a| a.get("trigger")) {
        metadata.insert("triggers".into(), to_json(triggers)?);
    }
    if let Some(tool) = application.and_then(|a| a.get("tool")) {
        metadata.insert("tool".into(), to_json(tool)?);
    }

    let variables = app
        .variables
        .iter()
        .map(|(name, v)| {
            (
                name.clone(),
                Variable {
                    description: None,
                    default: v.default.clone(),
                    secret: v.secret,
                },
            )
        })
        .collect();

    let mut triggers = Vec::new();
    if let Some(kinds) = doc.get("trigger").and_then(toml::Value::as_table) {
        for (kind, entries) in kinds {
            for (index, entry) in entries.as_array().into_iter().flatten().enumerate() {
                let mut config = entry.as_table().cloned().unwrap_or_default();
                let id = match config.remove("id") {
                    Some(toml::Value::String(id)) => id,
                    _ => format!("{kind}-{index}"),
                };
                triggers.push(LockedTrigger {
                    id,
                    trigger_type: kind.clone(),
                    trigger_config: to_json(&toml::Value::Table(config))?,
                });
            }
        }
    }

    let raw_components = doc.get("component").and_then(toml::Value::as_table);
    let mut components = Vec::new();
    for (id, component) in &app.components {
        let code = std::fs::read(&component.source).with_context(|| {
            format!(
                "component `{id}`: cannot read its source {} (build it first: `bv build`)",
                component.source.display()
            )
        })?;
        let code = Layer::new(WASM_MEDIA_TYPE, code);
        let source = LockedSource {
            content_type: "application/wasm".into(),
            content: ContentRef {
                digest: Some(code.digest.clone()),
                ..Default::default()
            },
        };
        push_layer(code);

        let mut files = Vec::new();
        for (guest_path, host_path) in
            expand_files(&app.base_dir, &component.files, &component.exclude_files)
                .with_context(|| format!("component `{id}`: files"))?
        {
            let data = std::fs::read(&host_path)
                .with_context(|| format!("cannot read {}", host_path.display()))?;
            let layer = Layer::new(DATA_MEDIA_TYPE, data);
            let mut content = ContentRef {
                digest: Some(layer.digest.clone()),
                ..Default::default()
            };
            if layer.data.len() <= INLINE_MAX {
                content.inline = Some(layer.data);
            } else {
                push_layer(layer);
            }
            files.push(ContentPath {
                content,
                path: guest_path,
            });
        }

        let mut meta = Map::new();
        if let Some(d) = &component.description {
            meta.insert("description".into(), d.clone().into());
        }
        meta.insert(
            "allowed_outbound_hosts".into(),
            component.allowed_outbound_hosts.clone().into(),
        );
        if !component.key_value_stores.is_empty() {
            meta.insert(
                "key_value_stores".into(),
                component.key_value_stores.clone().into(),
            );
        }
        if !component.sqlite_databases.is_empty() {
            meta.insert(
                "databases".into(),
                component.sqlite_databases.clone().into(),
            );
        }
        if let Some(tool) = raw_components
            .and_then(|c| c.get(id))
            .and_then(|c| c.get("tool"))
        {
            meta.insert("tool".into(), to_json(tool)?);
        }
        components.push(LockedComponent {
            id: id.clone(),
            metadata: meta,
            source,
            env: component.environment.clone(),
            files,
            config: component
                .variables
                .iter()
                .map(|(k, v)| (k.clone(), v.to_string()))
                .collect(),
            dependencies: Map::new(),
            host_requirements: Map::new(),
        });
    }

    let locked = LockedApp {
        spin_lock_version: 0,
        must_understand: Vec::new(),
        metadata,
        host_requirements: Map::new(),
        variables,
        triggers,
        components,
    };
    Ok((locked, layers))
}

/// The files a component's `files` entries name, as (guest path relative to
/// `/`, host path), in a stable order; `exclude` globs apply to the guest
/// paths of pattern entries, as in Spin.
fn expand_files(
    base_dir: &Path,
    mounts: &[FileMount],
    exclude: &[String],
) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let excluded = exclude
        .iter()
        .map(|p| glob::Pattern::new(p).with_context(|| format!("invalid exclude_files `{p}`")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut files = BTreeMap::new();
    for mount in mounts {
        match mount {
            FileMount::Pattern(pattern) => {
                let full = base_dir.join(pattern);
                let full = full.to_str().context("file pattern is not UTF-8")?;
                let mut matched = false;
                for entry in
                    glob::glob(full).with_context(|| format!("invalid pattern `{pattern}`"))?
                {
                    let path = entry?;
                    if !path.is_file() {
                        continue;
                    }
                    let rel = portable(path.strip_prefix(base_dir).unwrap_or(&path));
                    matched = true;
                    if !excluded.iter().any(|x| x.matches(&rel)) {
                        files.insert(rel, path);
                    }
                }
                anyhow::ensure!(matched, "`{pattern}` matches no file");
            }
            FileMount::Placement {
                source,
                destination,
            } => {
                let source = base_dir.join(source);
                let dest = destination.trim_matches('/');
                if source.is_dir() {
                    for path in walk(&source)? {
                        let rel = portable(path.strip_prefix(&source).unwrap_or(&path));
                        let guest = if dest.is_empty() {
                            rel
                        } else {
                            format!("{dest}/{rel}")
                        };
                        files.insert(guest, path);
                    }
                } else {
                    anyhow::ensure!(source.is_file(), "{} does not exist", source.display());
                    files.insert(dest.to_string(), source);
                }
            }
        }
    }
    Ok(files.into_iter().collect())
}

/// Every file under `dir`, recursively.
fn walk(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?
        {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
            } else if path.is_file() {
                out.push(path);
            }
        }
    }
    Ok(out)
}

/// A relative path with forward slashes, as the registry carries it.
fn portable(rel: &Path) -> String {
    rel.components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

fn to_json(value: &toml::Value) -> anyhow::Result<Value> {
    Ok(serde_json::to_value(value)?)
}
