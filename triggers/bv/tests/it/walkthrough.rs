//! docs/WALKTHROUGH.md says what the platform answers: the whole
//! application (the root `spin.toml`, on a fresh database of the test's
//! own, `admin@shop.example` an administrator) is started as the document
//! says, `infra/scripts/walkthrough.sh --check` runs every command of the
//! document against it in order, and each transcript must match what the
//! command printed, up to ids, tokens and times. With
//! `BV_WALKTHROUGH_WRITE=1` the test rewrites the document from its run
//! instead.

use std::process::Command;

use crate::harness::*;
use crate::openapi::root_manifest_for;
use crate::pg_support::*;
use crate::redis::redis_shared_lock;

/// `section`'s header line in `manifest` followed by `line`.
fn set_variable(manifest: &str, section: &str, line: &str) -> String {
    let header = format!("[{section}]\n");
    assert!(
        manifest.contains(&header),
        "the root spin.toml has no [{section}] any more"
    );
    manifest.replacen(&header, &format!("{header}{line}\n"), 1)
}

/// Deletes the test's Redis keys at the end.
struct RedisKeys(String);

impl Drop for RedisKeys {
    fn drop(&mut self) {
        let pattern = format!("{}*", self.0);
        let _ = std::thread::spawn(move || {
            let mut conn = redis::Client::open("redis://127.0.0.1:6379")
                .ok()?
                .get_connection()
                .ok()?;
            let keys: Vec<String> = redis::cmd("KEYS").arg(&pattern).query(&mut conn).ok()?;
            if !keys.is_empty() {
                let _: () = redis::cmd("DEL").arg(keys).query(&mut conn).ok()?;
            }
            Some(())
        })
        .join();
    }
}

#[tokio::test]
async fn the_walkthrough_transcripts_are_what_the_platform_answers() {
    let _redis = redis_shared_lock();
    let db = TestDb::new("walkthrough").await;
    let prefix = format!("bv-it-walkthrough-{}-", std::process::id());
    let _keys = RedisKeys(prefix.clone());
    // Carts, the cache counters and the breakers under a prefix of the
    // test's own: the counts the document shows start from zero.
    // An app name of its own: the rate limits' buckets in Redis are per
    // app, route and address, and other tests (or an earlier run) spend
    // those of `bitvelocity` from this same address.
    let root = root_manifest_for(&db);
    assert!(
        root.contains("name = \"bitvelocity\""),
        "the root spin.toml's application name moved"
    );
    let root = root.replacen(
        "name = \"bitvelocity\"",
        &format!("name = \"{prefix}app\""),
        1,
    );
    let manifest = set_variable(
        &root,
        "component.cart.variables",
        &format!("cart_key_prefix = \"{prefix}cart:\""),
    );
    let manifest = set_variable(
        &manifest,
        "component.order.variables",
        &format!("breaker_key_prefix = \"{prefix}breaker:\""),
    );
    let env: Vec<(String, String)> = [
        ("SPIN_VARIABLE_DB_URL".to_string(), db.url()),
        (
            "SPIN_VARIABLE_AUTH_ADMIN_EMAILS".to_string(),
            "admin@shop.example".to_string(),
        ),
    ]
    .into_iter()
    .chain(crate::auth_support::env_with_signing_keys())
    .collect();
    let app = spawn_app_with(
        &manifest,
        Spawn {
            env: env.clone(),
            ..Default::default()
        },
    )
    .await;

    // `bv events list` in the document runs the bv under test.
    let bv = std::path::Path::new(env!("CARGO_BIN_EXE_bv"));
    let target_dir = bv.parent().and_then(|p| p.parent()).unwrap();
    let (addr, admin, name) = (app.addr, app.admin, db.name.clone());
    let output = tokio::task::spawn_blocking(move || {
        Command::new("bash")
            .arg("infra/scripts/walkthrough.sh")
            // BV_WALKTHROUGH_WRITE=1: rewrite the document from this run.
            .arg(if std::env::var_os("BV_WALKTHROUGH_WRITE").is_some() {
                "--write"
            } else {
                "--check"
            })
            .current_dir(repo_root())
            .envs(env)
            .env("WALKTHROUGH_BASE", format!("http://{addr}"))
            .env("WALKTHROUGH_ADMIN", format!("http://{admin}"))
            .env("WALKTHROUGH_DB", name)
            .env("CARGO_TARGET_DIR", target_dir)
            .output()
            .expect("running infra/scripts/walkthrough.sh")
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "docs/WALKTHROUGH.md differs from what the platform answered \
         (regenerate it with `bash infra/scripts/walkthrough.sh --write` against a fresh platform):\n{}\n{}\nbv log:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        app.log()
    );
}
