//! Registry credentials from the Docker config file, as `docker login`
//! (and `spin registry login`) leave them.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use base64::Engine as _;
use oci_client::secrets::RegistryAuth;
use oci_client::Reference;
use serde::Deserialize;

#[derive(Deserialize, Default)]
struct DockerConfig {
    #[serde(default)]
    auths: std::collections::BTreeMap<String, DockerAuth>,
}

#[derive(Deserialize)]
struct DockerAuth {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
}

/// The credentials for `image`'s registry from `config` (or the usual
/// `$DOCKER_CONFIG/config.json`, `~/.docker/config.json`); anonymous when
/// the file or an entry for the registry is absent. Entries are matched by
/// host (`host:port`), with or without an `https://`/`http://` prefix.
pub fn credentials(image: &Reference, config: Option<&Path>) -> anyhow::Result<RegistryAuth> {
    let path = match config {
        Some(p) => Some(p.to_path_buf()),
        None => default_config_path(),
    };
    let Some(path) = path else {
        return Ok(RegistryAuth::Anonymous);
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && config.is_none() => {
            return Ok(RegistryAuth::Anonymous)
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let parsed: DockerConfig = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a Docker config file", path.display()))?;
    let registry = image.resolve_registry();
    let entry = parsed.auths.iter().find(|(key, _)| {
        let host = key
            .trim_start_matches("https://")
            .trim_start_matches("http://")
            .split('/')
            .next()
            .unwrap_or("");
        host == registry || (registry == "index.docker.io" && host == "docker.io")
    });
    let Some((key, entry)) = entry else {
        return Ok(RegistryAuth::Anonymous);
    };
    if let (Some(user), Some(pass)) = (&entry.username, &entry.password) {
        return Ok(RegistryAuth::Basic(user.clone(), pass.clone()));
    }
    let encoded = entry
        .auth
        .as_deref()
        .with_context(|| format!("{}: `auths.{key}` has no `auth`", path.display()))?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .with_context(|| {
            format!(
                "{}: `auths.{key}.auth` is not base64 of user:password",
                path.display()
            )
        })?;
    let (user, pass) = decoded.split_once(':').with_context(|| {
        format!(
            "{}: `auths.{key}.auth` is not base64 of user:password",
            path.display()
        )
    })?;
    Ok(RegistryAuth::Basic(user.to_string(), pass.to_string()))
}

fn default_config_path() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG") {
        return Some(PathBuf::from(dir).join("config.json"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker").join("config.json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth_for(config: &str, image: &str) -> anyhow::Result<RegistryAuth> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(&path, config).unwrap();
        credentials(&image.parse().unwrap(), Some(&path))
    }

    #[test]
    fn credentials_are_found_by_registry_host() {
        let b64 = base64::engine::general_purpose::STANDARD.encode("alice:s3cret");
        let config =
            format!(r#"{{"auths": {{"https://registry.example:5000": {{"auth": "{b64}"}}}}}}"#);
        match auth_for(&config, "registry.example:5000/shop/app:1").unwrap() {
            RegistryAuth::Basic(u, p) => assert_eq!((u.as_str(), p.as_str()), ("alice", "s3cret")),
            _ => panic!("expected basic auth"),
        }
        assert!(matches!(
            auth_for(&config, "other.example/shop/app:1").unwrap(),
            RegistryAuth::Anonymous
        ));
    }

    #[test]
    fn a_malformed_entry_is_an_error_that_names_it() {
        let config = r#"{"auths": {"localhost:5000": {"auth": "not base64!"}}}"#;
        let err = auth_for(config, "localhost:5000/app:1")
            .unwrap_err()
            .to_string();
        assert!(err.contains("auths.localhost:5000.auth"), "{err}");
    }
}
