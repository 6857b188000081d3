use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;

use crate::harness::*;

const VARIABLES: &str = r#"spin_manifest_version = 2
[application]
name = "vars"
[variables]
greeting = { default = "hello" }
region = { default = "eu" }
api_key = { required = true, secret = true }
[[trigger.http]]
route = "/p/..."
component = "probe"
[component.probe]
source = "{probe}"
[component.probe.variables]
message = "{{ greeting }}, world"
where = "{{ region }}"
key = "{{ api_key }}"
"#;

#[tokio::test]
async fn variables_defaults_overrides_and_secrets() {
    let secret = "s3cr3t-value-7d1f";
    let app = spawn_app_with(
        VARIABLES,
        Spawn {
            env: vec![
                ("SPIN_VARIABLE_API_KEY".into(), secret.into()),
                ("SPIN_VARIABLE_REGION".into(), "us".into()),
            ],
            ..Default::default()
        },
    )
    .await;
    assert_eq!(app.get("/p/var/message").await.text(), "hello, world");
    assert_eq!(
        app.get("/p/var/where").await.text(),
        "us",
        "SPIN_VARIABLE_* overrides the default"
    );
    assert_eq!(app.get("/p/var/key").await.text(), secret);
    let undefined = app.get("/p/var/greeting").await;
    assert_eq!(
        undefined.status, 500,
        "app variables are only visible through component variables"
    );
    assert!(
        undefined.text().contains("Undefined"),
        "{}",
        undefined.text()
    );
    let invalid = app.get("/p/var/Bad-Name").await;
    assert!(invalid.text().contains("InvalidName"), "{}", invalid.text());
    assert!(
        !app.log().contains(secret),
        "secret value logged:\n{}",
        app.log()
    );
}

#[tokio::test]
async fn missing_required_variable_stops_start_up() {
    let Err((code, log)) = try_spawn(VARIABLES, Spawn::default()).await else {
        panic!("bv started without a required variable");
    };
    assert_eq!(code, Some(1));
    assert!(log.contains("api_key") && log.contains("required"), "{log}");
    assert!(
        log.contains("SPIN_VARIABLE_API_KEY"),
        "message should say how to fix it: {log}"
    );
}

#[tokio::test]
async fn default_key_value_store_persists_across_restarts() {
    let manifest = probe_app("/p/...", r#"key_value_stores = ["default"]"#);
    let dir = tempfile::tempdir().unwrap();
    let spawn = || Spawn {
        dir: Some(dir.path().to_path_buf()),
        ..Default::default()
    };
    {
        let app = spawn_app_with(&manifest, spawn()).await;
        assert_eq!(app.get("/p/kv/default/a").await.status, 404);
        assert_eq!(app.send("PUT", "/p/kv/default/a", "one").await.status, 204);
        assert_eq!(app.send("PUT", "/p/kv/default/b", "two").await.status, 204);
        assert_eq!(app.get("/p/kv/default/a").await.text(), "one");
        assert_eq!(app.get("/p/kv/default/a?exists").await.text(), "true");
        assert_eq!(app.send("DELETE", "/p/kv/default/b", "").await.status, 204);
        assert_eq!(app.get("/p/kv/default/b?exists").await.text(), "false");
        assert_eq!(
            app.get("/p/kv/default").await.json(),
            serde_json::json!(["a"])
        );
    }
    assert!(dir.path().join(".spin/sqlite_key_value.db").exists());
    let app = spawn_app_with(&manifest, spawn()).await;
    assert_eq!(
        app.get("/p/kv/default/a").await.text(),
        "one",
        "value lost on restart"
    );
}

#[tokio::test]
async fn key_value_store_access_is_limited_to_the_manifest() {
    let app = spawn_app(&probe_app("/p/...", "")).await;
    let denied = app.get("/p/kv/default/a").await;
    assert_eq!(denied.status, 403);
    assert!(denied.text().contains("AccessDenied"), "{}", denied.text());
}

#[tokio::test]
async fn redis_key_value_store_from_runtime_config() {
    let manifest = probe_app("/p/...", r#"key_value_stores = ["default", "cache"]"#);
    let app = spawn_app_with(
        &manifest,
        Spawn {
            files: vec![(
                "runtime-config.toml".into(),
                "[key_value_store.cache]\ntype = \"redis\"\nurl = \"redis://127.0.0.1:6379/0\"\n"
                    .into(),
            )],
            args: vec![
                "--runtime-config-file".into(),
                "{dir}/runtime-config.toml".into(),
            ],
            ..Default::default()
        },
    )
    .await;
    let key = format!("bv-it-{}-{}", std::process::id(), app.addr.port());
    assert_eq!(
        app.send("PUT", &format!("/p/kv/cache/{key}"), "in redis")
            .await
            .status,
        204
    );
    let client = redis::Client::open("redis://127.0.0.1:6379/0").unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let stored: Option<String> = redis::cmd("GET")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(stored.as_deref(), Some("in redis"), "value not in Redis");
    assert_eq!(
        app.get(&format!("/p/kv/cache/{key}")).await.text(),
        "in redis"
    );
    assert_eq!(
        app.get(&format!("/p/kv/default/{key}")).await.status,
        404,
        "stores are separate"
    );
    assert_eq!(
        app.send("DELETE", &format!("/p/kv/cache/{key}"), "")
            .await
            .status,
        204
    );
    let gone: Option<String> = redis::cmd("GET")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(gone, None);
}

/// A real HTTP server on a free port answering `upstream <path>`.
async fn upstream() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    |req: hyper::Request<hyper::body::Incoming>| async move {
                        Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from(format!(
                            "upstream {}",
                            req.uri().path()
                        )))))
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

fn fetch(url: &str) -> String {
    let encoded: String = url
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    format!("/p/fetch?url={encoded}")
}

#[tokio::test]
async fn outbound_http_is_limited_to_allowed_hosts() {
    let allowed = upstream().await;
    let other = upstream().await;
    let app = spawn_app(&probe_app(
        "/p/...",
        &format!(
            r#"allowed_outbound_hosts = ["http://127.0.0.1:{}"]"#,
            allowed.port()
        ),
    ))
    .await;
    let ok = app.get(&fetch(&format!("http://{allowed}/x"))).await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(ok.json()["body"], "upstream /x");
    let denied = app.get(&fetch(&format!("http://{other}/x"))).await;
    assert_eq!(denied.status, 502);
    assert!(
        denied.text().contains("HttpRequestDenied"),
        "{}",
        denied.text()
    );
    wait_for_log(&app, "outbound request denied").await;
}

#[tokio::test]
async fn outbound_hosts_can_use_variables() {
    let allowed = upstream().await;
    let manifest = r#"spin_manifest_version = 2
[application]
name = "templated"
[variables]
upstream_port = { default = "1" }
[[trigger.http]]
route = "/p/..."
component = "probe"
[component.probe]
source = "{probe}"
allowed_outbound_hosts = ["http://127.0.0.1:{{ upstream_port }}"]
"#;
    let app = spawn_app_with(
        manifest,
        Spawn {
            env: vec![(
                "SPIN_VARIABLE_UPSTREAM_PORT".into(),
                allowed.port().to_string(),
            )],
            ..Default::default()
        },
    )
    .await;
    let ok = app.get(&fetch(&format!("http://{allowed}/t"))).await;
    assert_eq!(ok.status, 200, "{}", ok.text());
}

const CHAINED: &str = r#"spin_manifest_version = 2
[application]
name = "chained"
[[trigger.http]]
route = "/front/..."
component = "front"
[[trigger.http]]
route = "/closed/..."
component = "closed"
[[trigger.http]]
route = { private = true }
component = "back"
[component.front]
source = "{probe}"
environment = { PROBE_NAME = "front" }
allowed_outbound_hosts = ["http://back.spin.internal"]
[component.closed]
source = "{probe}"
environment = { PROBE_NAME = "closed" }
[component.back]
source = "{probe}"
environment = { PROBE_NAME = "back" }
"#;

#[tokio::test]
async fn service_chaining_reaches_private_components_in_process() {
    let app = spawn_app(CHAINED).await;
    let reply = app
        .get("/front/fetch?url=http%3A%2F%2Fback.spin.internal%2Fheaders")
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let inner: serde_json::Value =
        serde_json::from_str(reply.json()["body"].as_str().unwrap()).unwrap();
    assert_eq!(inner["name"], "back");
    assert_eq!(inner["headers"]["spin-path-info"], "/headers");
    let denied = app
        .get("/closed/fetch?url=http%3A%2F%2Fback.spin.internal%2Fheaders")
        .await;
    assert_eq!(
        denied.status,
        502,
        "chaining without permission: {}",
        denied.text()
    );
    assert!(
        denied.text().contains("HttpRequestDenied"),
        "{}",
        denied.text()
    );
}

/// `--component-id` (Spin's selective deployment, SpinKube's `components`):
/// only the chosen components are served; the others' routes and triggers
/// are absent, and chaining to one answers 502 with a problem.
#[tokio::test]
async fn component_id_serves_only_the_chosen_components() {
    let manifest = format!(
        "{CHAINED}
[[trigger.cron]]
cron_expression = \"* * * * * *\"
component = \"ticker\"
[component.ticker]
source = \"{{wasm:cron-probe}}\"
"
    );
    let app = spawn_app_with(
        &manifest,
        Spawn {
            args: ["--component-id", "front", "--component-id", "closed"]
                .map(String::from)
                .to_vec(),
            ..Default::default()
        },
    )
    .await;
    // The chosen ones are served…
    let reply = app.get("/closed/headers").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    // …the others' routes are absent (the private `back` has none anyway,
    // so front reaches it only by chaining), and so are their triggers.
    let chained = app
        .get("/front/fetch?url=http%3A%2F%2Fback.spin.internal%2Fheaders")
        .await;
    assert_eq!(chained.status, 200, "{}", chained.text());
    let answer = chained.json();
    assert_eq!(answer["status"], 502, "{answer}");
    let problem: serde_json::Value =
        serde_json::from_str(answer["body"].as_str().unwrap()).unwrap();
    assert_eq!(problem["status"], 502, "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("component `back` is not deployed in this process"),
        "{problem}"
    );
    let log = app.log();
    assert!(
        log.contains("not deployed here: back, ticker"),
        "the start-up log names what is left out:\n{log}"
    );
    // The listing of what is served has the chosen routes, not the cron
    // trigger of the component left out.
    assert!(log.contains("closed: "), "{log}");
    assert!(
        !log.contains("ticker: "),
        "the cron trigger is absent:\n{log}"
    );

    // An id the manifest does not define is a clear error.
    let err = try_spawn(
        &manifest,
        Spawn {
            args: ["--component-id", "ghost"].map(String::from).to_vec(),
            ..Default::default()
        },
    )
    .await
    .err()
    .expect("an unknown component id must not start");
    assert!(
        err.1.contains(
            "--component-id: component `ghost` is not defined; the manifest's components are: back, closed, front, ticker"
        ),
        "{}",
        err.1
    );
}
