//! Malformed manifests stop `bv up` with a message naming the file, the field
//! and the problem. (Every rule is unit-tested in `bv-manifest`; these check
//! that the CLI reports them.)

use crate::harness::*;

async fn start_error(manifest: &str, spawn: Spawn) -> String {
    match try_spawn(manifest, spawn).await {
        Ok(_) => panic!("bv started with a bad manifest:\n{manifest}"),
        Err((code, log)) => {
            assert_eq!(code, Some(1), "{log}");
            log
        }
    }
}

fn assert_mentions(log: &str, parts: &[&str]) {
    for part in parts {
        assert!(log.contains(part), "expected `{part}` in:\n{log}");
    }
}

#[tokio::test]
async fn unknown_field() {
    let log = start_error(&probe_app("/p/...", "sorce = \"x\""), Spawn::default()).await;
    assert_mentions(
        &log,
        &["spin.toml", "component.probe.sorce", "unknown field"],
    );
}

#[tokio::test]
async fn missing_component_binary() {
    let manifest = probe_app("/p/...", "").replace("{probe}", "target/missing.wasm");
    let log = start_error(&manifest, Spawn::default()).await;
    assert_mentions(&log, &["spin.toml", "component.probe.source", "bv build"]);
}

#[tokio::test]
async fn duplicate_route() {
    let manifest = format!(
        "{}\n[[trigger.http]]\nroute = \"/p/...\"\ncomponent = \"probe\"\n",
        probe_app("/p/...", "")
    );
    let log = start_error(&manifest, Spawn::default()).await;
    assert_mentions(&log, &["spin.toml", "trigger.http[1].route", "/p/..."]);
}

#[tokio::test]
async fn trigger_names_an_unknown_component() {
    let manifest =
        probe_app("/p/...", "").replace("component = \"probe\"", "component = \"ghost\"");
    let log = start_error(&manifest, Spawn::default()).await;
    assert_mentions(&log, &["spin.toml", "trigger.http[0]", "ghost"]);
}

#[tokio::test]
async fn template_names_an_undeclared_variable() {
    let log = start_error(
        &probe_app("/p/...", "[component.probe.variables]\nx = \"{{ nope }}\""),
        Spawn::default(),
    )
    .await;
    assert_mentions(&log, &["spin.toml", "component.probe.variables", "nope"]);
}

#[tokio::test]
async fn key_value_store_missing_from_runtime_config() {
    let log = start_error(
        &probe_app("/p/...", "key_value_stores = [\"sessions\"]"),
        Spawn::default(),
    )
    .await;
    assert_mentions(&log, &["component.probe.key_value_stores", "sessions"]);
}

#[tokio::test]
async fn bad_outbound_host() {
    let log = start_error(
        &probe_app(
            "/p/...",
            "allowed_outbound_hosts = [\"http://example.com/path\"]",
        ),
        Spawn::default(),
    )
    .await;
    assert_mentions(
        &log,
        &["component.probe.allowed_outbound_hosts", "example.com/path"],
    );
}

#[tokio::test]
async fn wrong_manifest_version() {
    let manifest =
        probe_app("/p/...", "").replace("spin_manifest_version = 2", "spin_manifest_version = 3");
    let log = start_error(&manifest, Spawn::default()).await;
    assert_mentions(&log, &["spin.toml", "spin_manifest_version"]);
}

#[tokio::test]
async fn toml_syntax_error_has_a_position() {
    let log = start_error(
        "spin_manifest_version = 2\n[application\nname = 'x'\n",
        Spawn::default(),
    )
    .await;
    assert_mentions(&log, &["spin.toml", "line 2"]);
}
