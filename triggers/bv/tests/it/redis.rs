//! Outbound Redis (`spin:redis/redis`) and the Redis trigger, against the real
//! Redis on 127.0.0.1:6379. Every test uses its own keys and channels.
//!
//! Each test holds [`redis_shared_lock`] while it runs: the Redis-restart
//! test (`tests/redis_restart.rs`) takes the same lock exclusively, so Redis
//! is never taken down under a test here, even when the two binaries run at
//! the same time.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::{json, Value as Json};

use crate::harness::*;

const REDIS: &str = "redis://127.0.0.1:6379";

/// The lock file the Redis-restart test holds exclusively while Redis is down.
pub const REDIS_RESTART_LOCK: &str = "/tmp/bv-redis-restart.lock";

/// Shared hold on [`REDIS_RESTART_LOCK`]: many tests at once, but never
/// while Redis is being restarted. Released when dropped.
pub fn redis_shared_lock() -> std::fs::File {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(REDIS_RESTART_LOCK)
        .unwrap();
    file.lock_shared().unwrap();
    file
}

/// A name no other test (or test run) uses.
fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "bv-it-{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

async fn client() -> redis::aio::MultiplexedConnection {
    redis::Client::open(REDIS)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .expect("Redis on 127.0.0.1:6379 (run infra/scripts/services.sh)")
}

fn probe_manifest(allowed: &str) -> String {
    format!(
        r#"spin_manifest_version = 2
[application]
name = "redis-probe"
[[trigger.http]]
route = "/..."
component = "probe"
[component.probe]
source = "{{wasm:redis-probe}}"
allowed_outbound_hosts = [{allowed}]
"#
    )
}

async fn op(app: &TestApp, command: Json) -> (u16, Json) {
    let reply = app.send("POST", "/redis", command.to_string()).await;
    (reply.status, reply.json())
}

async fn ok(app: &TestApp, mut command: Json) -> Json {
    if command.get("address").is_none() {
        command["address"] = json!(REDIS);
    }
    let (status, body) = op(app, command.clone()).await;
    assert_eq!(status, 200, "{command} -> {body}");
    body
}

#[tokio::test]
async fn outbound_redis_every_operation_round_trips() {
    let _lock = redis_shared_lock();
    let app = spawn_app(&probe_manifest(&format!("\"{REDIS}\""))).await;
    let key = unique("ops");
    let counter = format!("{key}-n");
    let set = format!("{key}-set");

    assert_eq!(ok(&app, json!({"op": "get", "key": key})).await, Json::Null);
    ok(&app, json!({"op": "set", "key": key, "value": "hello"})).await;
    assert_eq!(
        ok(&app, json!({"op": "get", "key": key})).await,
        json!({"bin": "hello"})
    );
    // Bytes that are not UTF-8 survive both ways.
    ok(
        &app,
        json!({"op": "set", "key": key, "value": [0, 159, 255]}),
    )
    .await;
    assert_eq!(
        ok(&app, json!({"op": "get", "key": key})).await,
        json!({"bytes": [0, 159, 255]})
    );
    assert_eq!(ok(&app, json!({"op": "incr", "key": counter})).await, 1);
    assert_eq!(ok(&app, json!({"op": "incr", "key": counter})).await, 2);
    let (status, body) = op(&app, json!({"address": REDIS, "op": "incr", "key": key})).await;
    assert_eq!(
        (status, body),
        (500, json!({"error": "Error::TypeError"})),
        "incr of a non-integer is error::type-error"
    );
    assert_eq!(
        ok(
            &app,
            json!({"op": "sadd", "key": set, "values": ["a", "b", "c"]})
        )
        .await,
        3
    );
    assert_eq!(
        ok(
            &app,
            json!({"op": "sadd", "key": set, "values": ["c", "d"]})
        )
        .await,
        1
    );
    assert_eq!(
        ok(&app, json!({"op": "smembers", "key": set})).await,
        json!(["a", "b", "c", "d"])
    );
    assert_eq!(
        ok(
            &app,
            json!({"op": "srem", "key": set, "values": ["a", "z"]})
        )
        .await,
        1
    );
    assert_eq!(
        ok(&app, json!({"op": "smembers", "key": set})).await,
        json!(["b", "c", "d"])
    );
    assert_eq!(
        ok(
            &app,
            json!({"op": "del", "keys": [key, counter, set, format!("{key}-missing")]})
        )
        .await,
        3
    );
    assert_eq!(ok(&app, json!({"op": "get", "key": key})).await, Json::Null);

    // publish: a subscriber of ours sees the payload.
    let channel = unique("pub");
    let mut pubsub = redis::Client::open(REDIS)
        .unwrap()
        .get_async_pubsub()
        .await
        .unwrap();
    pubsub.subscribe(&channel).await.unwrap();
    ok(
        &app,
        json!({"op": "publish", "channel": channel, "value": "ping!"}),
    )
    .await;
    let msg = tokio::time::timeout(Duration::from_secs(5), async {
        use futures::StreamExt;
        pubsub.on_message().next().await.unwrap()
    })
    .await
    .expect("published message");
    assert_eq!(msg.get_payload_bytes(), b"ping!");
}

#[tokio::test]
async fn outbound_redis_execute_maps_every_parameter_and_result() {
    let _lock = redis_shared_lock();
    let app = spawn_app(&probe_manifest(&format!("\"{REDIS}\""))).await;
    let key = unique("exec");
    let list = format!("{key}-list");
    let exec =
        |command: &str, args: Json| json!({"op": "execute", "command": command, "args": args});

    // status result; binary parameters.
    assert_eq!(
        ok(&app, exec("SET", json!([{"bin": key}, {"bin": "v1"}]))).await,
        json!([{"status": "OK"}])
    );
    // binary result.
    assert_eq!(
        ok(&app, exec("GET", json!([{"bin": key}]))).await,
        json!([{"bin": "v1"}])
    );
    // int64 parameter and result.
    assert_eq!(
        ok(
            &app,
            exec("INCRBY", json!([{"bin": format!("{key}-n")}, {"int": -42}]))
        )
        .await,
        json!([{"int": -42}])
    );
    // nil result.
    assert_eq!(
        ok(
            &app,
            exec("GET", json!([{"bin": format!("{key}-missing")}]))
        )
        .await,
        json!([{"nil": null}])
    );
    // An array reply is flattened, in order, with nils kept.
    assert_eq!(
        ok(
            &app,
            exec("MGET", json!([{"bin": key}, {"bin": format!("{key}-missing")}, {"bin": format!("{key}-n")}]))
        )
        .await,
        json!([{"bin": "v1"}, {"nil": null}, {"bin": "-42"}])
    );
    // Non-UTF-8 binary parameters and results.
    ok(
        &app,
        exec(
            "RPUSH",
            json!([{"bin": list}, {"bytes": [255, 0]}, {"int": 7}]),
        ),
    )
    .await;
    assert_eq!(
        ok(
            &app,
            exec("LRANGE", json!([{"bin": list}, {"int": 0}, {"int": -1}]))
        )
        .await,
        json!([{"bytes": [255, 0]}, {"bin": "7"}])
    );
    // A simple-string reply other than OK.
    assert_eq!(
        ok(&app, exec("PING", json!([]))).await,
        json!([{"status": "PONG"}])
    );
    // A server error is error::other with Redis's message.
    let (status, body) = op(
        &app,
        json!({"address": REDIS, "op": "execute", "command": "NOSUCHCOMMAND", "args": []}),
    )
    .await;
    assert_eq!(status, 500);
    assert!(
        body["error"].as_str().unwrap().contains("unknown command"),
        "{body}"
    );
    ok(
        &app,
        exec(
            "DEL",
            json!([{"bin": key}, {"bin": format!("{key}-n")}, {"bin": list}]),
        ),
    )
    .await;
}

#[tokio::test]
async fn outbound_redis_denied_by_allowed_outbound_hosts() {
    let app = spawn_app(&probe_manifest("\"redis://127.0.0.1:6380\"")).await;
    let (status, body) = op(&app, json!({"address": REDIS, "op": "get", "key": "x"})).await;
    assert_eq!(
        (status, body),
        (500, json!({"error": "Error::InvalidAddress"}))
    );
    wait_for_log(
        &app,
        "outbound redis: destination not allowed by allowed_outbound_hosts",
    )
    .await;
    assert!(
        app.log().contains("redis://127.0.0.1:6379"),
        "{}",
        app.log()
    );
    // Not a redis URL at all.
    let (status, body) = op(
        &app,
        json!({"address": "http://127.0.0.1:6380", "op": "open"}),
    )
    .await;
    assert_eq!(
        (status, body),
        (500, json!({"error": "Error::InvalidAddress"}))
    );
}

#[tokio::test]
async fn outbound_redis_dead_address_fails_fast() {
    // Port 1 refuses at once; 10.255.255.1 does not answer at all, so only the
    // connect timeout (2 s) ends the attempt.
    let app = spawn_app(&probe_manifest(
        "\"redis://127.0.0.1:1\", \"redis://10.255.255.1:6379\"",
    ))
    .await;
    for address in ["redis://127.0.0.1:1", "redis://10.255.255.1:6379"] {
        let started = Instant::now();
        let (status, body) = op(&app, json!({"address": address, "op": "get", "key": "x"})).await;
        let elapsed = started.elapsed();
        assert_eq!(status, 500, "{address}: {body}");
        assert!(
            body["error"].as_str().unwrap().starts_with("Error::Other"),
            "{address}: {body}"
        );
        assert!(
            elapsed < Duration::from_secs(4),
            "{address} took {elapsed:?}"
        );
    }
}

#[tokio::test]
async fn outbound_redis_connections_are_pooled() {
    let _lock = redis_shared_lock();
    // A database number no other test uses, so that CLIENT LIST can pick out
    // the connections of this app alone.
    const DB: u32 = 13;
    let address = format!("{REDIS}/{DB}");
    let app = spawn_app(&probe_manifest(&format!("\"{REDIS}\""))).await;
    let count_clients = || async {
        let list: String = redis::cmd("CLIENT")
            .arg("LIST")
            .query_async(&mut client().await)
            .await
            .unwrap();
        list.lines()
            .filter(|l| l.split(' ').any(|f| f == format!("db={DB}")))
            .count()
    };
    let client_id = || json!({"address": address, "op": "execute", "command": "CLIENT", "args": [{"bin": "ID"}]});
    let mut ids = std::collections::BTreeSet::new();
    for _ in 0..30 {
        ids.insert(ok(&app, client_id()).await.to_string());
    }
    let concurrent: Vec<_> = (0..20).map(|_| ok(&app, client_id())).collect();
    for id in futures::future::join_all(concurrent).await {
        ids.insert(id.to_string());
    }
    assert_eq!(
        ids.len(),
        1,
        "50 requests should share one Redis connection: {ids:?}"
    );
    assert_eq!(
        count_clients().await,
        1,
        "exactly one connection to db {DB} after 50 requests"
    );
}

// --- The Redis trigger -------------------------------------------------------

fn trigger_manifest(channel: &str, extra: &str) -> String {
    format!(
        r#"spin_manifest_version = 2
[application]
name = "redis-trigger"
[application.trigger.redis]
address = "{{{{ redis_url }}}}"
[variables]
redis_url = {{ default = "{REDIS}" }}

[[trigger.redis]]
channel = "{channel}"
component = "handler"

# The same subscription again: still one delivery per message.
[[trigger.redis]]
channel = "{channel}"
component = "handler"

[component.handler]
source = "{{wasm:redis-handler}}"
allowed_outbound_hosts = ["{{{{ redis_url }}}}"]
[component.handler.variables]
redis_address = "{{{{ redis_url }}}}"
{extra}
"#
    )
}

async fn publish(channel: &str, payload: &str) {
    let _: i64 = redis::cmd("PUBLISH")
        .arg(channel)
        .arg(payload)
        .query_async(&mut client().await)
        .await
        .unwrap();
}

async fn list(key: &str) -> Vec<String> {
    redis::cmd("LRANGE")
        .arg(key)
        .arg(0)
        .arg(-1)
        .query_async(&mut client().await)
        .await
        .unwrap()
}

/// Waits (up to 15 s) until `key` holds `n` entries.
async fn wait_for_len(key: &str, n: usize) -> Vec<String> {
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
async fn redis_trigger_delivers_each_message_once_in_order() {
    let _lock = redis_shared_lock();
    let channel = unique("chan");
    let key = unique("seen");
    let app = spawn_app(&trigger_manifest(&channel, "")).await;
    wait_for_log(&app, "redis trigger: subscribed").await;
    const N: usize = 25;
    let sent: Vec<String> = (0..N).map(|i| format!("{key} {i}")).collect();
    for payload in &sent {
        publish(&channel, payload).await;
    }
    let got = wait_for_len(&key, N).await;
    // Anything extra would arrive right behind the last one.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got_after = list(&key).await;
    assert_eq!(got, sent, "every message once, in publish order");
    assert_eq!(got_after, sent, "no duplicate deliveries");
    let _: () = redis::cmd("DEL")
        .arg(&key)
        .query_async(&mut client().await)
        .await
        .unwrap();
}

#[tokio::test]
async fn redis_trigger_failing_handler_does_not_stop_the_next_message() {
    let _lock = redis_shared_lock();
    let channel = unique("chan");
    let key = unique("seen");
    let app = spawn_app(&trigger_manifest(
        &channel,
        "[component.handler.tool.bv]\nrequest_timeout_ms = 1000",
    ))
    .await;
    wait_for_log(&app, "redis trigger: subscribed").await;
    let sent = [
        format!("fail {key} 1"),
        format!("{key} 2"),
        format!("panic {key} 3"),
        format!("{key} 4"),
        format!("hang {key} 5"),
        format!("{key} 6"),
    ];
    for payload in &sent {
        publish(&channel, payload).await;
    }
    let got = wait_for_len(&key, sent.len()).await;
    assert_eq!(got, sent, "each message was delivered, failures or not");
    // The last one succeeded; the three failures were logged and counted.
    wait_for_log(&app, "(failures so far: 3)").await;
    let log = app.log();
    assert!(
        log.contains("redis handler failed: handler returned an error")
            && log.contains("refusing message"),
        "{log}"
    );
    assert!(log.contains("redis handler failed: trap"), "{log}");
    assert!(log.contains("redis handler failed: timed out"), "{log}");
    assert!(!log.contains("(failures so far: 4)"), "{log}");
    let _: () = redis::cmd("DEL")
        .arg(&key)
        .query_async(&mut client().await)
        .await
        .unwrap();
}

#[tokio::test]
async fn redis_trigger_rejects_a_bad_manifest() {
    let manifest = trigger_manifest("c", "").replace("channel = \"c\"", "chanel = \"c\"");
    // Trigger tables are read before anything listens: bv stops with an
    // error naming the field instead of starting.
    let Err((code, log)) = try_spawn(&manifest, Spawn::default()).await else {
        panic!("bv started with a bad redis trigger table");
    };
    assert_eq!(code, Some(1), "{log}");
    assert!(
        !log.contains("Serving http://"),
        "bv listened before failing:\n{log}"
    );
    assert!(log.contains("trigger.redis[0]"), "{log}");
    assert!(log.contains("chanel"), "{log}");
}
