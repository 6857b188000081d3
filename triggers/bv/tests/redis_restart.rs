//! The Redis trigger resubscribes after Redis restarts.
//!
//! A test binary of its own because it takes Redis down: `cargo test` runs
//! test binaries one after another, so the main suite (`tests/it`) is not
//! running meanwhile. It also holds `/tmp/bv-redis-restart.lock`
//! exclusively while Redis may be down; the suite's Redis tests hold it
//! shared, so the two never overlap even when started by separate `cargo
//! test` runs. Redis is started again by `infra/scripts/services.sh` (the
//! same command as everywhere) from a guard, so it comes back even when the
//! test fails.

#[path = "it/harness.rs"]
#[allow(dead_code)]
mod harness;

// The harness logs every app for the suite's secret scan.
#[path = "it/suite_secrets.rs"]
#[allow(dead_code)]
mod suite_secrets;

use std::process::Command;
use std::time::{Duration, Instant};

use harness::*;

const REDIS: &str = "redis://127.0.0.1:6379";
const LOCK: &str = "/tmp/bv-redis-restart.lock";

/// Starts Redis again (if it is down) when dropped.
struct RestartGuard;

impl Drop for RestartGuard {
    fn drop(&mut self) {
        let status = Command::new(repo_root().join("infra/scripts/services.sh"))
            .status()
            .expect("running infra/scripts/services.sh");
        assert!(status.success(), "infra/scripts/services.sh failed");
    }
}

async fn connect() -> Option<redis::aio::MultiplexedConnection> {
    let client = redis::Client::open(REDIS).ok()?;
    tokio::time::timeout(
        Duration::from_secs(2),
        client.get_multiplexed_async_connection(),
    )
    .await
    .ok()?
    .ok()
}

/// Publishes `payload` until some subscriber receives it (retrying while
/// Redis or the trigger's subscription is not back yet), up to `within`.
async fn publish_until_received(channel: &str, payload: &str, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Some(mut conn) = connect().await {
            let receivers: redis::RedisResult<i64> = redis::cmd("PUBLISH")
                .arg(channel)
                .arg(payload)
                .query_async(&mut conn)
                .await;
            if matches!(receivers, Ok(n) if n > 0) {
                return true;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

async fn list(key: &str) -> Vec<String> {
    let Some(mut conn) = connect().await else {
        return Vec::new();
    };
    redis::cmd("LRANGE")
        .arg(key)
        .arg(0)
        .arg(-1)
        .query_async(&mut conn)
        .await
        .unwrap_or_default()
}

async fn wait_for(key: &str, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let got = list(key).await;
        if got.len() >= n || Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn redis_trigger_resubscribes_after_redis_restarts() {
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(LOCK)
        .unwrap();
    lock.lock().unwrap();

    let id = std::process::id();
    let channel = format!("bv-it-restart-chan-{id}");
    let key = format!("bv-it-restart-seen-{id}");
    let manifest = format!(
        r#"spin_manifest_version = 2
[application]
name = "redis-restart"
[application.trigger.redis]
address = "{REDIS}"
[[trigger.redis]]
channel = "{channel}"
component = "handler"
[component.handler]
source = "{{wasm:redis-handler}}"
allowed_outbound_hosts = ["{REDIS}"]
[component.handler.variables]
redis_address = "{REDIS}"
"#
    );
    let app = spawn_app(&manifest).await;
    wait_for_log(&app, "redis trigger: subscribed").await;

    let before = format!("{key} before");
    assert!(
        publish_until_received(&channel, &before, Duration::from_secs(10)).await,
        "no subscriber before the restart"
    );
    assert_eq!(wait_for(&key, 1).await, [before]);

    {
        let _restart = RestartGuard;
        let _ = Command::new("redis-cli")
            .args(["shutdown", "nosave"])
            .status();
        // Wait until the trigger noticed (and the port is really closed).
        wait_for_log(&app, "redis trigger: connection lost; resubscribing").await;
        // Let it fail at least once while Redis is down.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !app.log().contains("redis trigger: cannot subscribe") && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // The guard starts Redis again here.
    }

    let after = format!("{key} after");
    assert!(
        publish_until_received(&channel, &after, Duration::from_secs(20)).await,
        "the trigger did not resubscribe after Redis restarted:\n{}",
        app.log()
    );
    // Redis was restarted without saving: the list starts over.
    assert_eq!(wait_for(&key, 1).await, [after], "{}", app.log());
    let log = app.log();
    assert!(log.contains("redis trigger: cannot subscribe"), "{log}");
    assert!(
        log.matches("redis trigger: subscribed").count() >= 2,
        "{log}"
    );
    if let Some(mut conn) = connect().await {
        let _: redis::RedisResult<()> = redis::cmd("DEL").arg(&key).query_async(&mut conn).await;
    }
}
