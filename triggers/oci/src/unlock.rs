//! From a pulled [`LockedApp`] back to a directory `bv up` runs: a
//! `spin.toml` whose sources are the cached blobs and whose files are laid
//! out under `files/<component>/`, so the app goes through the same
//! manifest validation as one on disk.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde_json::Value;

use crate::locked::{ContentRef, LockedApp};
use crate::store::BlobStore;

/// Host requirements bv meets: it serves `*.spin.internal` chaining.
const SUPPORTED_HOST_REQUIREMENTS: &[&str] = &["local_service_chaining"];

/// Writes `dir/spin.toml` (and the components' files) for `locked`, whose
/// content is in `store`. Returns the manifest's path.
pub fn write_app(locked: &LockedApp, store: &BlobStore, dir: &Path) -> anyhow::Result<PathBuf> {
    anyhow::ensure!(
        locked.spin_lock_version <= 1,
        "locked application version {} is newer than bv understands (0 or 1)",
        locked.spin_lock_version
    );
    anyhow::ensure!(
        locked.must_understand.is_empty(),
        "the application requires features bv does not have: {}",
        locked.must_understand.join(", ")
    );
    check_host_requirements("the application", &locked.host_requirements)?;

    let mut doc = toml::Table::new();
    doc.insert("spin_manifest_version".into(), 2.into());

    let meta = &locked.metadata;
    let mut application = toml::Table::new();
    let name = meta
        .get("name")
        .and_then(Value::as_str)
        .context("the locked application has no `metadata.name`")?;
    application.insert("name".into(), name.into());
    for key in ["version", "description", "authors"] {
        if let Some(v) = meta.get(key) {
            application.insert(key.into(), to_toml(v)?);
        }
    }
    if let Some(triggers) = app_trigger_settings(meta) {
        application.insert("trigger".into(), to_toml(&triggers)?);
    }
    if let Some(tool) = meta.get("tool") {
        application.insert("tool".into(), to_toml(tool)?);
    }
    doc.insert("application".into(), application.into());

    if !locked.variables.is_empty() {
        let mut variables = toml::Table::new();
        for (name, v) in &locked.variables {
            let mut t = toml::Table::new();
            match &v.default {
                Some(d) => t.insert("default".into(), d.clone().into()),
                None => t.insert("required".into(), true.into()),
            };
            if v.secret {
                t.insert("secret".into(), true.into());
            }
            variables.insert(name.clone(), t.into());
        }
        doc.insert("variables".into(), variables.into());
    }

    let mut triggers = toml::Table::new();
    for trigger in &locked.triggers {
        let entries = triggers
            .entry(trigger.trigger_type.clone())
            .or_insert_with(|| toml::Value::Array(Vec::new()));
        if let toml::Value::Array(entries) = entries {
            entries.push(
                to_toml(&trigger.trigger_config)
                    .with_context(|| format!("trigger `{}`: its configuration", trigger.id))?,
            );
        }
    }
    doc.insert("trigger".into(), triggers.into());

    let mut components = toml::Table::new();
    for c in &locked.components {
        let what = format!("component `{}`", c.id);
        anyhow::ensure!(
            c.dependencies.is_empty(),
            "{what} has component dependencies, which bv does not run"
        );
        check_host_requirements(&what, &c.host_requirements)?;
        let mut t = toml::Table::new();
        let source = materialize(&c.source.content, store, dir, &c.id)
            .with_context(|| format!("{what}: its code"))?;
        t.insert("source".into(), source.into());
        if let Some(d) = c.metadata.get("description") {
            t.insert("description".into(), to_toml(d)?);
        }
        for (locked_key, manifest_key) in [
            ("allowed_outbound_hosts", "allowed_outbound_hosts"),
            ("key_value_stores", "key_value_stores"),
            ("databases", "sqlite_databases"),
        ] {
            if let Some(v) = c.metadata.get(locked_key) {
                t.insert(manifest_key.into(), to_toml(v)?);
            }
        }
        if !c.env.is_empty() {
            t.insert("environment".into(), toml::Value::try_from(&c.env)?);
        }
        if !c.config.is_empty() {
            t.insert("variables".into(), toml::Value::try_from(&c.config)?);
        }
        if !c.files.is_empty() {
            let rel_root = format!("files/{}", c.id);
            let root = dir.join(&rel_root);
            for file in &c.files {
                let guest = safe_relative(&file.path)
                    .with_context(|| format!("{what}: file `{}`", file.path))?;
                copy_content(&file.content, store, &root.join(guest))
                    .with_context(|| format!("{what}: file `{}`", file.path))?;
            }
            let mut mount = toml::Table::new();
            mount.insert("source".into(), rel_root.into());
            mount.insert("destination".into(), "/".into());
            t.insert("files".into(), toml::Value::Array(vec![mount.into()]));
        }
        if let Some(tool) = c.metadata.get("tool") {
            t.insert("tool".into(), to_toml(tool)?);
        }
        components.insert(c.id.clone(), t.into());
    }
    doc.insert("component".into(), components.into());

    std::fs::create_dir_all(dir)?;
    let manifest = dir.join("spin.toml");
    std::fs::write(&manifest, toml::to_string(&doc)?)
        .with_context(|| format!("writing {}", manifest.display()))?;
    Ok(manifest)
}

/// `metadata.triggers`; or, from older Spin, the single `metadata.trigger`
/// with its `type`.
fn app_trigger_settings(meta: &serde_json::Map<String, Value>) -> Option<Value> {
    if let Some(t) = meta.get("triggers") {
        return Some(t.clone());
    }
    let mut single = meta.get("trigger")?.as_object()?.clone();
    let kind = single.remove("type")?.as_str()?.to_string();
    (!single.is_empty())
        .then(|| Value::Object([(kind, Value::Object(single))].into_iter().collect()))
}

fn check_host_requirements(
    what: &str,
    requirements: &serde_json::Map<String, Value>,
) -> anyhow::Result<()> {
    let unmet: Vec<&str> = requirements
        .iter()
        .filter(|(k, v)| {
            v.as_str() != Some("optional") && !SUPPORTED_HOST_REQUIREMENTS.contains(&k.as_str())
        })
        .map(|(k, _)| k.as_str())
        .collect();
    anyhow::ensure!(
        unmet.is_empty(),
        "{what} requires host features bv does not have: {}",
        unmet.join(", ")
    );
    Ok(())
}

/// The content as a `source` for the manifest: the cached blob itself
/// (absolute), or inline content written under `dir` (relative to it, so
/// the directory can be moved into place after it is written).
fn materialize(
    content: &ContentRef,
    store: &BlobStore,
    dir: &Path,
    name: &str,
) -> anyhow::Result<String> {
    match (&content.inline, &content.digest) {
        (Some(_), _) => {
            let rel = format!("wasm/{name}.wasm");
            copy_content(content, store, &dir.join(&rel))?;
            Ok(rel)
        }
        (None, Some(digest)) => {
            let blob = store
                .get(digest)?
                .with_context(|| format!("layer {digest} was not pulled"))?;
            Ok(path_str(&blob)?.to_string())
        }
        (None, None) => anyhow::bail!("names neither a digest nor inline content"),
    }
}

fn copy_content(content: &ContentRef, store: &BlobStore, to: &Path) -> anyhow::Result<()> {
    if let Some(dir) = to.parent() {
        std::fs::create_dir_all(dir)?;
    }
    if let Some(data) = &content.inline {
        if let Some(digest) = &content.digest {
            let actual = crate::lock::sha256_digest(data);
            anyhow::ensure!(
                &actual == digest,
                "inline content does not match its digest {digest} (got {actual})"
            );
        }
        std::fs::write(to, data)?;
        return Ok(());
    }
    let digest = content
        .digest
        .as_deref()
        .context("names neither a digest nor inline content")?;
    let blob = store
        .get(digest)?
        .with_context(|| format!("layer {digest} was not pulled"))?;
    std::fs::copy(&blob, to).with_context(|| format!("writing {}", to.display()))?;
    Ok(())
}

/// A guest path from the registry as a relative path that stays inside the
/// mount: no `..`, no absolute parts.
fn safe_relative(path: &str) -> anyhow::Result<PathBuf> {
    let mut out = PathBuf::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => anyhow::bail!("path leaves the mount"),
            p => out.push(p),
        }
    }
    anyhow::ensure!(out.components().next().is_some(), "empty path");
    Ok(out)
}

fn path_str(p: &Path) -> anyhow::Result<&str> {
    p.to_str()
        .with_context(|| format!("{} is not UTF-8", p.display()))
}

fn to_toml(value: &Value) -> anyhow::Result<toml::Value> {
    toml::Value::try_from(value).context("a value TOML cannot hold (null?)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_paths_stay_inside_the_mount() {
        assert_eq!(safe_relative("a/b.txt").unwrap(), PathBuf::from("a/b.txt"));
        assert_eq!(safe_relative("/a//b").unwrap(), PathBuf::from("a/b"));
        assert!(safe_relative("../etc/passwd").is_err());
        assert!(safe_relative("a/../../x").is_err());
        assert!(safe_relative("/").is_err());
    }
}
