//! Spin applications as OCI artifacts: `bv registry push` and `bv up -f <ref>`.
//!
//! The layout is Spin's (`spin registry push`), so an artifact either tool
//! pushed can be pulled by the other: one
//! `application/vnd.wasm.content.layer.v1+wasm` layer per component, one
//! `application/vnd.wasm.content.layer.v1+data` layer per file (files up to
//! 128 bytes travel inline), and the locked application as a layer of type
//! `application/vnd.fermyon.spin.application.v1+config`; the image config is
//! a plain OCI config (`wasm`/`wasip1`) labelled with the locked app's digest.
//!
//! bv keeps what Spin's lock drops and bv needs, the `tool` tables of the
//! application and its components, in the locked app's `metadata` maps;
//! Spin ignores them. Pulling writes a `spin.toml` over the cached blobs
//! ([`unlock::write_app`]) that goes through the same validation as a
//! manifest on disk. Every blob is checked against its digest when it
//! arrives and again when it is read from the cache.

mod auth;
pub mod lock;
pub mod locked;
pub mod store;
pub mod unlock;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
use oci_client::manifest::OciImageManifest;
use oci_client::{Client, Reference};

pub use auth::credentials;
use store::BlobStore;

/// A component's code.
pub const WASM_MEDIA_TYPE: &str = "application/vnd.wasm.content.layer.v1+wasm";
/// One static file.
pub const DATA_MEDIA_TYPE: &str = "application/vnd.wasm.content.layer.v1+data";
/// The locked application.
pub const LOCKED_APP_MEDIA_TYPE: &str = "application/vnd.fermyon.spin.application.v1+config";
/// A tar+gzip bundle of files (Spin's alternative to per-file layers for
/// apps with hundreds of files); bv does not read it yet.
const ARCHIVE_MEDIA_TYPE: &str = "application/vnd.wasm.content.bundle.v1.tar+gzip";
/// The label that ties the image config to the locked app, as Spin sets it.
const LOCKED_APP_DIGEST_LABEL: &str = "com.fermyon.spin.lockedAppDigest";

/// How to reach a registry and where pulled content is kept.
#[derive(Debug, Clone)]
pub struct RegistryOptions {
    /// Plain HTTP instead of HTTPS (a local or in-cluster registry).
    pub insecure: bool,
    /// The pull cache: blobs by digest, and one directory per pulled
    /// manifest digest.
    pub cache_dir: PathBuf,
    /// The Docker config file credentials come from (`None`: the usual
    /// `$DOCKER_CONFIG/config.json` or `~/.docker/config.json`).
    pub docker_config: Option<PathBuf>,
}

impl RegistryOptions {
    /// The default cache: `$XDG_CACHE_HOME/bv/registry`, else
    /// `~/.cache/bv/registry`, else a directory under the system temp dir
    /// (a container's user may have no home).
    pub fn default_cache_dir() -> PathBuf {
        let home_cache = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")));
        match home_cache {
            Some(dir) if dir.is_absolute() => dir.join("bv").join("registry"),
            _ => std::env::temp_dir().join("bv-registry"),
        }
    }
}

/// Whether `from` (a `-f` argument that is not a path on disk) reads as an
/// OCI reference: `host[:port]/name[:tag|@digest]`, the host named by a dot,
/// a port or `localhost`, as Docker tells a registry from a path.
pub fn looks_like_reference(from: &str) -> bool {
    let Some((host, rest)) = from.split_once('/') else {
        return false;
    };
    !rest.is_empty()
        && (host.contains('.') || host.contains(':') || host == "localhost")
        && from.parse::<Reference>().is_ok()
}

fn client(opts: &RegistryOptions) -> Client {
    // reqwest's rustls takes the process-wide provider; bv carries ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    Client::new(ClientConfig {
        protocol: if opts.insecure {
            ClientProtocol::Http
        } else {
            ClientProtocol::Https
        },
        connect_timeout: Some(std::time::Duration::from_secs(10)),
        read_timeout: Some(std::time::Duration::from_secs(60)),
        ..Default::default()
    })
}

fn parse_reference(reference: &str) -> anyhow::Result<Reference> {
    reference.parse().with_context(|| {
        format!("`{reference}` is not an OCI reference (expected registry/name:tag or registry/name@sha256:...)")
    })
}

/// Locks the manifest at `manifest`, pushes it to `reference` and returns
/// the manifest digest (`sha256:...`). `progress` hears one line per step.
pub async fn push(
    manifest: &Path,
    reference: &str,
    opts: &RegistryOptions,
    progress: &mut dyn FnMut(&str),
) -> anyhow::Result<String> {
    let image = parse_reference(reference)?;
    let (locked, layers) = lock::lock(manifest)?;
    let mut image_layers: Vec<ImageLayer> = layers
        .into_iter()
        .map(|l| ImageLayer::new(l.data, l.media_type.to_string(), None))
        .collect();
    let locked_json = serde_json::to_vec(&locked)?;
    let locked_layer = ImageLayer::new(locked_json, LOCKED_APP_MEDIA_TYPE.to_string(), None);
    let locked_digest = locked_layer.sha256_digest();
    image_layers.push(locked_layer);

    let config_file = oci_client::config::ConfigFile {
        architecture: oci_client::config::Architecture::Wasm,
        os: oci_client::config::Os::Other("wasip1".into()),
        config: Some(oci_client::config::Config {
            labels: Some(HashMap::from([(
                LOCKED_APP_DIGEST_LABEL.to_string(),
                locked_digest,
            )])),
            ..Default::default()
        }),
        ..Default::default()
    };
    let config = Config::oci_v1_from_config_file(config_file, None)?;
    let mut annotations = BTreeMap::new();
    if let Some(name) = locked.metadata.get("name").and_then(|v| v.as_str()) {
        annotations.insert(
            oci_client::annotations::ORG_OPENCONTAINERS_IMAGE_TITLE.to_string(),
            name.to_string(),
        );
    }
    if let Some(version) = locked.metadata.get("version").and_then(|v| v.as_str()) {
        annotations.insert(
            oci_client::annotations::ORG_OPENCONTAINERS_IMAGE_VERSION.to_string(),
            version.to_string(),
        );
    }
    let image_manifest = OciImageManifest::build(&image_layers, &config, Some(annotations));
    let total: usize = image_layers.iter().map(|l| l.data.len()).sum();
    progress(&format!(
        "pushing {} layers ({} KiB) to {image}",
        image_layers.len(),
        total / 1024
    ));
    let auth = credentials(&image, opts.docker_config.as_deref())?;
    let client = client(opts);
    client
        .push(&image, &image_layers, config, &auth, Some(image_manifest))
        .await
        .with_context(|| format!("pushing to {image}"))?;
    let digest = client
        .fetch_manifest_digest(&image, &auth)
        .await
        .with_context(|| format!("reading back the digest of {image}"))?;
    progress(&format!("pushed {image}@{digest}"));
    Ok(digest)
}

/// Pulls `reference` into the cache (blobs already there are not fetched
/// again) and returns the path of a `spin.toml` that runs it.
pub async fn pull(
    reference: &str,
    opts: &RegistryOptions,
    progress: &mut dyn FnMut(&str),
) -> anyhow::Result<PathBuf> {
    let image = parse_reference(reference)?;
    let store = BlobStore::new(&opts.cache_dir);
    let auth = credentials(&image, opts.docker_config.as_deref())?;
    let client = client(opts);
    let (manifest, digest) = client
        .pull_image_manifest(&image, &auth)
        .await
        .with_context(|| format!("pulling the manifest of {image}"))?;
    let app_dir = store.root().join("apps").join(
        digest
            .strip_prefix("sha256:")
            .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
            .with_context(|| format!("unsupported manifest digest `{digest}`"))?,
    );

    let locked_layer = manifest
        .layers
        .iter()
        .find(|l| l.media_type == LOCKED_APP_MEDIA_TYPE)
        .with_context(|| {
            format!("{image} is not a Spin application: no `{LOCKED_APP_MEDIA_TYPE}` layer")
        })?;
    for layer in &manifest.layers {
        match layer.media_type.as_str() {
            WASM_MEDIA_TYPE | DATA_MEDIA_TYPE | LOCKED_APP_MEDIA_TYPE => {}
            ARCHIVE_MEDIA_TYPE => anyhow::bail!(
                "{image} packs its files as an archive layer, which bv does not read yet; push it without SPIN_OCI_ARCHIVE_LAYERS"
            ),
            other => anyhow::bail!("{image} has a layer of unknown type `{other}`"),
        }
    }
    let missing: Vec<_> = manifest
        .layers
        .iter()
        .filter(|l| store.get(&l.digest).map(|p| p.is_none()).unwrap_or(true))
        .collect();
    let bytes: i64 = missing.iter().map(|l| l.size).sum();
    progress(&format!(
        "pulling {image}@{digest}: {} of {} layers to fetch ({} KiB)",
        missing.len(),
        manifest.layers.len(),
        bytes / 1024
    ));
    for layer in missing {
        let mut data = Vec::with_capacity(usize::try_from(layer.size).unwrap_or(0));
        // oci-client checks the bytes against the layer's digest as they
        // arrive; the store checks again before keeping them.
        client
            .pull_blob(&image, layer, &mut data)
            .await
            .with_context(|| format!("pulling layer {} of {image}", layer.digest))?;
        store
            .put(&layer.digest, &data)
            .with_context(|| format!("layer {} of {image}", layer.digest))?;
    }

    let locked_path = store
        .get(&locked_layer.digest)?
        .context("the locked application vanished from the cache")?;
    let locked: locked::LockedApp = serde_json::from_slice(&std::fs::read(&locked_path)?)
        .with_context(|| format!("{image}: the locked application is not valid"))?;
    // Written beside and renamed into place, so a crash mid-way leaves no
    // half-written app that a later run would take as complete.
    let staging = tempfile::Builder::new()
        .prefix(".staging-")
        .tempdir_in(store.root())?;
    unlock::write_app(&locked, &store, staging.path())?;
    let _ = std::fs::remove_dir_all(&app_dir);
    std::fs::create_dir_all(app_dir.parent().expect("apps dir"))?;
    let staging = staging.keep();
    std::fs::rename(&staging, &app_dir)
        .with_context(|| format!("moving the pulled app to {}", app_dir.display()))?;
    progress(&format!("pulled {image}@{digest}"));
    Ok(app_dir.join("spin.toml"))
}
