//! The runtime image (`infra/scripts/image.sh`): built without a Docker
//! daemon, pushed to a real registry, pulled back, unpacked, and its
//! entrypoint run as SpinKube's container executor runs it.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bv_test_servers::{free_port, PrivateRegistry};

use crate::harness::*;

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn the_runtime_image_runs_an_app_from_the_registry_with_the_operators_arguments() {
    assert!(
        run(Command::new("id").arg("-u")).trim() == "0",
        "this test unpacks an image and runs it in a chroot, which needs root"
    );
    let registry = PrivateRegistry::start();
    let work = tempfile::tempdir().unwrap();
    let image_ref = format!("{}/bitvelocity/bv:test", registry.host());
    let app_ref = format!("{}/shop/probe:v1", registry.host());

    // Build and push the image from the bv under test.
    run(Command::new("bash")
        .arg(repo_root().join("infra/scripts/image.sh"))
        .args(["--bv", env!("CARGO_BIN_EXE_bv")])
        .arg("--out")
        .arg(work.path().join("layout"))
        .args(["--tag", "test", "--push", &image_ref, "--insecure"]));

    // Push an app: a probe, and a second component left out below.
    let app_dir = work.path().join("app");
    std::fs::create_dir_all(&app_dir).unwrap();
    std::fs::write(
        app_dir.join("spin.toml"),
        resolve_sources(
            r#"spin_manifest_version = 2
[application]
name = "in-cluster"
[[trigger.http]]
route = "/p/..."
component = "probe"
[[trigger.http]]
route = "/other/..."
component = "other"
[component.probe]
source = "{probe}"
key_value_stores = ["default"]
[component.other]
source = "{probe}"
"#,
        ),
    )
    .unwrap();
    run(Command::new(env!("CARGO_BIN_EXE_bv"))
        .args(["registry", "push", "--insecure", "-f"])
        .arg(app_dir.join("spin.toml"))
        .arg(&app_ref));

    // What a node does: pull the image, unpack it.
    let pulled = work.path().join("pulled");
    run(Command::new("skopeo").args([
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{image_ref}"),
        &format!("oci:{}:test", pulled.display()),
    ]));
    let bundle = work.path().join("bundle");
    run(Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:test", pulled.display()))
        .arg(&bundle));
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bundle.join("config.json")).unwrap()).unwrap();
    let process = &config["process"];
    assert_eq!(process["user"]["uid"], 65532, "runs as non-root: {process}");
    assert_eq!(process["user"]["gid"], 65532, "{process}");
    let entrypoint: Vec<String> = process["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    assert_eq!(entrypoint, ["/usr/local/bin/bv", "up"], "{process}");
    let rootfs = bundle.join("rootfs");
    assert!(
        !rootfs.join("bin/sh").exists() && !rootfs.join("usr/bin").exists(),
        "no shell or userland in the image"
    );

    // The Secret the operator mounts at /runtime-config.toml: the default
    // key-value store on Redis.
    std::fs::write(
        rootfs.join("runtime-config.toml"),
        "[key_value_store.default]\ntype = \"redis\"\nurl = \"redis://127.0.0.1:6379\"\n",
    )
    .unwrap();

    // The operator's arguments, after the image's entrypoint (the image's
    // `up` is its default command, which Kubernetes replaces with args).
    let port = free_port();
    let env: Vec<(String, String)> = process["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| {
            e.as_str()?
                .split_once('=')
                .map(|(k, v)| (k.into(), v.into()))
        })
        .collect();
    let mut child = Command::new("chroot")
        .arg("--userspec=65532:65532")
        .arg(&rootfs)
        .arg(&entrypoint[0])
        .args(["up", "--listen", &format!("0.0.0.0:{port}"), "-f", &app_ref])
        .args(["--runtime-config-file", "/runtime-config.toml"])
        .args(["--component-id", "probe"])
        .env_clear()
        .envs(env)
        // In-cluster registries without TLS; and a free admin port here.
        .env("BV_REGISTRY_INSECURE", "1")
        .env("BV_ADMIN_LISTEN", "127.0.0.1:0")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("chroot");
    let stderr = child.stderr.take().unwrap();
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    {
        let log = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                log.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push_str(&format!("{line}\n"));
            }
        });
    }
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(addr).is_err() {
        let log = || log.lock().unwrap().clone();
        if let Some(status) = child.try_wait().unwrap() {
            std::thread::sleep(Duration::from_millis(200));
            panic!("the image's bv exited ({status}):\n{}", log());
        }
        assert!(
            Instant::now() < deadline,
            "the image's bv did not listen:\n{}",
            log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let health = request(addr, "GET", "/.well-known/spin/health", &[], "").await;
    assert_eq!(health.status, 200, "{}", health.text());
    let key = format!("image-test-{}", std::process::id());
    let put = request(
        addr,
        "PUT",
        &format!("/p/kv/default/{key}"),
        &[],
        "from the image",
    )
    .await;
    assert!(put.status < 300, "{} {}", put.status, put.text());
    let got = request(addr, "GET", &format!("/p/kv/default/{key}"), &[], "").await;
    assert_eq!(
        got.text(),
        "from the image",
        "the runtime config reached Redis"
    );
    let mut redis = redis::Client::open("redis://127.0.0.1:6379")
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("*{key}*"))
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!(!keys.is_empty(), "the value is in Redis, not a local file");
    let _: () = redis::cmd("DEL")
        .arg(&keys)
        .query_async(&mut redis)
        .await
        .unwrap();
    // Only the selected component is deployed.
    assert_eq!(
        request(addr, "GET", "/other/headers", &[], "").await.status,
        404
    );

    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    assert!(status.success(), "a clean stop on SIGTERM: {status}");
}
