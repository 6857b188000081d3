//! `bv registry push` and `bv up -f <reference>` against a real registry
//! (Debian's `docker-registry`, the CNCF distribution server).

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output};

use bv_test_servers::{PrivateRegistry, REGISTRY_USER};

use crate::harness::*;

/// A probe app with files of both kinds (a small one that travels inline,
/// a large one as a layer), environment, variables (one secret and
/// required) and a `tool.bv` setting, all of which must survive the trip.
const APP: &str = r#"spin_manifest_version = 2
[application]
name = "shipped"
version = "1.2.3"
[variables]
greeting = { default = "hello" }
api_key = { required = true, secret = true }
[[trigger.http]]
route = "/p/..."
component = "probe"
[component.probe]
source = "{probe}"
environment = { MODE = "shipped" }
files = ["assets/**/*.txt", { source = "data", destination = "/data" }]
[component.probe.variables]
message = "{{ greeting }}, world"
key = "{{ api_key }}"
[component.probe.tool.bv]
max_request_body_bytes = 1024
"#;

/// Writes [`APP`] and its files into `dir`; returns the manifest path.
fn write_app(dir: &Path) -> std::path::PathBuf {
    let manifest = dir.join("spin.toml");
    std::fs::write(&manifest, resolve_sources(APP)).unwrap();
    for (path, content) in [
        ("assets/small.txt", "small asset".to_string()),
        ("assets/sub/large.txt", "large asset line\n".repeat(64)),
        ("data/c.json", "{\"c\":1}".to_string()),
    ] {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
    manifest
}

fn bv(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bv"))
        .args(args)
        .envs(env.iter().copied())
        .env_remove("DOCKER_CONFIG")
        .env("HOME", "/nonexistent")
        .output()
        .expect("running bv")
}

fn push(manifest: &Path, reference: &str, env: &[(&str, &str)]) -> Output {
    bv(
        &[
            "registry",
            "push",
            "--insecure",
            "-f",
            manifest.to_str().unwrap(),
            reference,
        ],
        env,
    )
}

fn pull(cache_dir: &str, reference: &str) -> Output {
    bv(
        &[
            "registry",
            "pull",
            "--insecure",
            "--registry-cache-dir",
            cache_dir,
            reference,
        ],
        &[],
    )
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The image manifest the registry holds for `repo:tag`.
async fn image_manifest(registry: &PrivateRegistry, repo: &str, tag: &str) -> serde_json::Value {
    let addr: SocketAddr = registry.host().parse().unwrap();
    let reply = request(
        addr,
        "GET",
        &format!("/v2/{repo}/manifests/{tag}"),
        &[("accept", "application/vnd.oci.image.manifest.v1+json")],
        "",
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()
}

#[tokio::test]
async fn an_app_pushed_in_spins_layout_runs_from_the_registry_on_a_clean_machine() {
    let registry = PrivateRegistry::start();
    let source = tempfile::tempdir().unwrap();
    let manifest = write_app(source.path());
    let reference = format!("{}/shop/shipped:v1", registry.host());

    let out = push(&manifest, &reference, &[]);
    assert!(out.status.success(), "push failed: {}", stderr(&out));
    assert!(
        stderr(&out).contains("pushing"),
        "progress: {}",
        stderr(&out)
    );
    let digest = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(digest.starts_with("sha256:"), "printed digest: {digest}");

    // Spin's layout: one wasm layer per component, one data layer per file
    // too large to inline, the locked app as its own layer, and a plain
    // OCI image config labelled with the locked app's digest.
    let m = image_manifest(&registry, "shop/shipped", "v1").await;
    let types: Vec<&str> = m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["mediaType"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "application/vnd.wasm.content.layer.v1+wasm",
            "application/vnd.wasm.content.layer.v1+data",
            "application/vnd.fermyon.spin.application.v1+config",
        ],
        "{m}"
    );
    assert_eq!(
        m["config"]["mediaType"],
        "application/vnd.oci.image.config.v1+json"
    );
    assert_eq!(
        m["annotations"]["org.opencontainers.image.title"],
        "shipped"
    );
    assert_eq!(
        m["annotations"]["org.opencontainers.image.version"],
        "1.2.3"
    );

    // Run it from the registry: its own cache, a state dir of its own, and
    // none of the source directory's files.
    let cache = tempfile::tempdir().unwrap();
    let cache_dir = cache.path().to_str().unwrap().to_string();
    let app = spawn_app_with(
        "spin_manifest_version = 2\n[application]\nname = \"unused\"\n",
        Spawn {
            from: Some(reference.clone()),
            args: vec![
                "--insecure".into(),
                "--registry-cache-dir".into(),
                cache_dir.clone(),
            ],
            env: vec![("SPIN_VARIABLE_API_KEY".into(), "k-9f2".into())],
            ..Default::default()
        },
    )
    .await;
    assert_eq!(
        app.get("/p/file?path=/assets/small.txt").await.text(),
        "small asset"
    );
    assert_eq!(
        app.get("/p/file?path=/assets/sub/large.txt").await.text(),
        "large asset line\n".repeat(64)
    );
    assert_eq!(
        app.get("/p/file?path=/data/c.json").await.text(),
        "{\"c\":1}"
    );
    assert_eq!(app.get("/p/file?path=/spin.toml").await.status, 404);
    assert_eq!(app.get("/p/env/MODE").await.text(), "shipped");
    assert_eq!(app.get("/p/var/message").await.text(), "hello, world");
    assert_eq!(app.get("/p/var/key").await.text(), "k-9f2");
    // The component's `tool.bv` settings came along.
    assert_eq!(
        app.send("POST", "/p/count", vec![1u8; 2048]).await.status,
        413
    );
    let log = app.log();
    assert!(
        log.contains("layers to fetch"),
        "pull progress in the log:\n{log}"
    );
    drop(app);

    // Pulled again, nothing is fetched: every blob is in the cache by digest.
    let out = pull(&cache_dir, &reference);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("0 of 3 layers to fetch"),
        "{}",
        stderr(&out)
    );
    // And by digest, the same app.
    let by_digest = format!("{}/shop/shipped@{digest}", registry.host());
    let out = pull(&cache_dir, &by_digest);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[tokio::test]
async fn a_tampered_blob_is_refused_and_nothing_is_kept() {
    let registry = PrivateRegistry::start();
    let source = tempfile::tempdir().unwrap();
    let manifest = write_app(source.path());
    let reference = format!("{}/shop/tampered:v1", registry.host());
    let out = push(&manifest, &reference, &[]);
    assert!(out.status.success(), "push failed: {}", stderr(&out));

    let m = image_manifest(&registry, "shop/tampered", "v1").await;
    let wasm_digest = m["layers"][0]["digest"].as_str().unwrap().to_string();
    let blob = registry.blob_path(&wasm_digest);
    let mut bytes = std::fs::read(&blob).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&blob, bytes).unwrap();

    let cache = tempfile::tempdir().unwrap();
    let cache_dir = cache.path().to_str().unwrap();
    let out = pull(cache_dir, &reference);
    assert!(!out.status.success(), "a tampered blob was accepted");
    let err = stderr(&out);
    assert!(
        err.contains(&wasm_digest),
        "the error names the layer: {err}"
    );
    assert!(
        err.to_lowercase().contains("digest"),
        "and the digest check: {err}"
    );
    assert!(
        !cache.path().join("apps").exists(),
        "no app directory is left behind"
    );
    assert!(
        !registry_cache_holds(cache.path(), &wasm_digest),
        "the tampered bytes are not cached"
    );

    // `bv up` refuses to start on it, with the same reason.
    let err = try_spawn(
        "spin_manifest_version = 2\n[application]\nname = \"unused\"\n",
        Spawn {
            from: Some(reference),
            args: vec![
                "--insecure".into(),
                "--registry-cache-dir".into(),
                cache_dir.into(),
            ],
            ..Default::default()
        },
    )
    .await
    .err()
    .expect("bv up must refuse a tampered artifact");
    assert_ne!(err.0, Some(0));
    assert!(err.1.contains(&wasm_digest), "{}", err.1);
}

fn registry_cache_holds(cache: &Path, digest: &str) -> bool {
    cache
        .join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"))
        .exists()
}

#[tokio::test]
async fn credentials_come_from_the_docker_config_file() {
    let registry = PrivateRegistry::start_with_auth();
    let source = tempfile::tempdir().unwrap();
    let manifest = write_app(source.path());
    let reference = format!("{}/shop/private:v1", registry.host());

    // Anonymous: refused, and the error says so.
    let out = push(&manifest, &reference, &[]);
    assert!(!out.status.success(), "an anonymous push was accepted");
    let err = stderr(&out);
    assert!(
        err.contains("pushing to") && (err.contains("401") || err.contains("nauthorized")),
        "{err}"
    );

    // With `docker login`'s file.
    let docker = tempfile::tempdir().unwrap();
    let auth = base64_encode(&format!("{}:{}", REGISTRY_USER.0, REGISTRY_USER.1));
    std::fs::write(
        docker.path().join("config.json"),
        format!(
            r#"{{"auths": {{"{}": {{"auth": "{auth}"}}}}}}"#,
            registry.host()
        ),
    )
    .unwrap();
    let env = [("DOCKER_CONFIG", docker.path().to_str().unwrap())];
    let out = Command::new(env!("CARGO_BIN_EXE_bv"))
        .args(["registry", "push", "--insecure", "-f"])
        .arg(&manifest)
        .arg(&reference)
        .envs(env)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "push with credentials: {}",
        stderr(&out)
    );
    let cache = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_bv"))
        .args(["registry", "pull", "--insecure", "--registry-cache-dir"])
        .arg(cache.path())
        .arg(&reference)
        .envs(env)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pull with credentials: {}",
        stderr(&out)
    );
    let pulled = String::from_utf8(out.stdout).unwrap();
    assert!(pulled.trim().ends_with("spin.toml"), "{pulled}");
}

fn base64_encode(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(text)
}

#[test]
fn a_missing_manifest_that_is_no_reference_keeps_the_plain_error() {
    let out = bv(&["up", "-f", "no/such/spin.toml"], &[]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("cannot read manifest"), "{err}");
}
