//! Reading and validating a manifest: the version check, `[application]`,
//! then each section in the order its checks depend on.

use std::path::{Component as PathComponent, Path, PathBuf};

use crate::component::parse_components;
use crate::error::{deserialize_strict, syntax_error};
use crate::triggers::{check_other_triggers, parse_http_triggers};
use crate::variables::{parse_variables, undefined_var};
use crate::{http_settings, raw, App, Application, BvSettings, ManifestError, Template};

/// Reads and validates the manifest at `path`.
pub fn load(path: &Path) -> Result<App, ManifestError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ManifestError::new(path, "", format!("cannot read manifest: {e}")))?;
    parse(&text, path)
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
pub(crate) fn parent_dir(file: &Path) -> PathBuf {
    let abs = absolutize(file);
    abs.parent().map(Path::to_path_buf).unwrap_or(abs)
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
    let variables = parse_variables(raw.variables, path)?;
    let undefined_var = |template: &Template| undefined_var(&variables, template);
    http_settings::validate_app(&app_tool, &undefined_var)
        .map_err(|(field, message)| err(&format!("application.tool.bv.{field}"), message))?;

    // [component.<id>]
    let components = parse_components(raw.component, path, &resolve, &undefined_var)?;

    // [[trigger.http]]
    let http_triggers =
        parse_http_triggers(raw.trigger.special.unwrap_or_default(), &components, path)?;

    // [[trigger.<other kind>]]
    check_other_triggers(&raw.trigger.others, &components, path)?;

    Ok(App {
        path: absolutize(path),
        base_dir,
        application,
        variables,
        http_triggers,
        other_triggers: raw.trigger.others,
        components,
        bv: app_bv,
        unselected: Default::default(),
    })
}
