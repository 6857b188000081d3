//! `spawn_app()` and friends.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// Builds every component of `components/` once per test run (the probe and
/// the other test components included).
fn build_components() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let components = repo_root().join("components");
        let step = bv_build::BuildStep {
            component_id: "test components".into(),
            command: "cargo build --target wasm32-wasip2 --release --workspace".into(),
            workdir: components.clone(),
        };
        let mut progress = |m: &str| eprintln!("{m}");
        let toolchain = bv_build::detect_toolchain().expect("detecting the wasm toolchain");
        bv_build::ensure_toolchain(toolchain, &mut progress).expect("wasm toolchain");
        bv_build::build(&[step], toolchain, &mut progress).expect("building the components");
        components.join("target/wasm32-wasip2/release")
    })
}

/// The path of the built component whose crate is `name` (e.g. `probe`).
pub fn component_wasm(name: &str) -> PathBuf {
    let path = build_components().join(format!("{}.wasm", name.replace('-', "_")));
    assert!(path.exists(), "component not found at {}", path.display());
    path
}

/// The probe component's path.
pub fn probe_wasm() -> &'static Path {
    static PROBE: OnceLock<PathBuf> = OnceLock::new();
    PROBE.get_or_init(|| component_wasm("probe"))
}

/// Replaces `{probe}` and `{wasm:<crate>}` in a manifest with component paths.
pub fn resolve_sources(manifest: &str) -> String {
    let mut out = manifest.replace("{probe}", probe_wasm().to_str().unwrap());
    while let Some(start) = out.find("{wasm:") {
        let end = start + out[start..].find('}').expect("unclosed {wasm:");
        let name = out[start + 6..end].to_string();
        out.replace_range(start..=end, component_wasm(&name).to_str().unwrap());
    }
    out
}

/// Compiled code shared by every test's `bv` (the probe compiles once).
fn shared_cache_dir() -> PathBuf {
    std::env::temp_dir().join(format!("bv-it-cache-{}", std::process::id()))
}

/// A running `bv up`.
pub struct TestApp {
    child: Option<Child>,
    /// `child` is supervise.sh: SIGKILL would leave `bv` running.
    supervised: bool,
    /// The HTTP trigger's address.
    pub addr: SocketAddr,
    /// The admin listener's address.
    pub admin: SocketAddr,
    /// Everything `bv` wrote (stdout and stderr) so far.
    pub log: Arc<Mutex<String>>,
    /// Only what `bv` wrote to stderr (its log lines) so far.
    pub stderr: Arc<Mutex<String>>,
    _tmp: Option<tempfile::TempDir>,
}

/// How to start an app.
#[derive(Default)]
pub struct Spawn {
    /// Environment for the `bv` process.
    pub env: Vec<(String, String)>,
    /// Extra arguments to `bv up`.
    pub args: Vec<String>,
    /// Reuse this directory instead of a new temporary one.
    pub dir: Option<PathBuf>,
    /// Extra files to write into the app directory (relative path, content).
    pub files: Vec<(String, String)>,
    /// Use a compiled-code cache of this app's own instead of the shared one.
    pub own_cache: bool,
    /// Leave `--admin-listen` out, so `bv` chooses the admin address itself.
    pub default_admin_listen: bool,
    /// Run this `--from` (an OCI reference, say) instead of the manifest
    /// written into the app directory.
    pub from: Option<String>,
    /// Run `bv` under `infra/scripts/supervise.sh` with this pid file, as
    /// up.sh does: killed, it is started again on the same addresses
    /// (fixed free ports instead of port 0).
    pub supervised: Option<PathBuf>,
}

/// Starts `bv up` on `manifest`, where `{probe}` stands for the probe
/// component's path and `{wasm:<crate>}` for any other test component's. Panics with `bv`'s output if it does not come up.
pub async fn spawn_app(manifest: &str) -> TestApp {
    spawn_app_with(manifest, Spawn::default()).await
}

/// Like [`spawn_app`], with options.
pub async fn spawn_app_with(manifest: &str, spawn: Spawn) -> TestApp {
    match try_spawn(manifest, spawn).await {
        Ok(app) => app,
        Err((code, log)) => panic!("bv up failed (exit {code:?}):\n{log}"),
    }
}

/// Starts `bv up`; on failure returns its exit code and output.
pub async fn try_spawn(manifest: &str, spawn: Spawn) -> Result<TestApp, (Option<i32>, String)> {
    let (tmp, dir) = match spawn.dir {
        Some(dir) => (None, dir),
        None => {
            let tmp = tempfile::tempdir().unwrap();
            let dir = tmp.path().to_path_buf();
            (Some(tmp), dir)
        }
    };
    let manifest = resolve_sources(manifest);
    std::fs::write(dir.join("spin.toml"), manifest).unwrap();
    for (path, content) in &spawn.files {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
    let (listen, admin_listen) = match spawn.supervised {
        Some(_) => (
            format!("127.0.0.1:{}", bv_test_servers::free_port()),
            format!("127.0.0.1:{}", bv_test_servers::free_port()),
        ),
        None => ("127.0.0.1:0".to_string(), "127.0.0.1:0".to_string()),
    };
    let mut cmd = match &spawn.supervised {
        Some(pid_file) => {
            let mut cmd = Command::new("bash");
            cmd.arg(repo_root().join("infra/scripts/supervise.sh"))
                .arg(pid_file)
                .arg(env!("CARGO_BIN_EXE_bv"));
            cmd
        }
        None => Command::new(env!("CARGO_BIN_EXE_bv")),
    };
    cmd.arg("up")
        .arg("--from")
        .arg(
            spawn
                .from
                .clone()
                .map(PathBuf::from)
                .unwrap_or_else(|| dir.join("spin.toml")),
        )
        .args(["--listen", &listen])
        .args(if spawn.default_admin_listen {
            vec![]
        } else {
            vec!["--admin-listen", &admin_listen]
        })
        .arg("--cache-dir")
        .arg(if spawn.own_cache {
            dir.join("own-cache")
        } else {
            shared_cache_dir()
        })
        .args(
            spawn
                .args
                .iter()
                .map(|a| a.replace("{dir}", dir.to_str().unwrap())),
        )
        .env("RUST_LOG", "info")
        .envs(spawn.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    crate::suite_secrets::used_in_env(&spawn.env);
    let suite_log = crate::suite_secrets::app_log();
    let mut child = cmd.spawn().expect("starting bv");
    let log = Arc::new(Mutex::new(String::new()));
    let stderr_log = Arc::new(Mutex::new(String::new()));
    let stderr = child.stderr.take().unwrap();
    {
        let log = log.clone();
        let stderr_log = stderr_log.clone();
        let suite_log = suite_log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                crate::suite_secrets::append(&suite_log, &line);
                let mut log = log.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
                let mut stderr_log = stderr_log.lock().unwrap();
                stderr_log.push_str(&line);
                stderr_log.push('\n');
            }
        });
    }
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    {
        let log = log.clone();
        std::thread::spawn(move || {
            let mut serving = None;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                crate::suite_secrets::append(&suite_log, &line);
                log.lock().unwrap().push_str(&format!("{line}\n"));
                if let Some(addr) = line.strip_prefix("Serving http://") {
                    serving = Some(addr.parse::<SocketAddr>().unwrap());
                }
                if let Some(addr) = line.strip_prefix("Admin endpoints on http://") {
                    let _ = tx.send((serving.unwrap(), addr.parse::<SocketAddr>().unwrap()));
                }
            }
        });
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok((addr, admin)) = rx.try_recv() {
            return Ok(TestApp {
                child: Some(child),
                supervised: spawn.supervised.is_some(),
                addr,
                admin,
                log,
                stderr: stderr_log,
                _tmp: tmp,
            });
        }
        if let Some(status) = child.try_wait().unwrap() {
            std::thread::sleep(Duration::from_millis(100));
            return Err((status.code(), log.lock().unwrap().clone()));
        }
        assert!(
            std::time::Instant::now() < deadline,
            "bv did not start:\n{}",
            log.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A response, fully read.
pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// Sends one request.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Reply {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut req = http::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(body.into())).unwrap();
    let resp = client.request(req).await.expect("request failed");
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.expect("reading body").to_bytes();
    Reply {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
    }
}

impl TestApp {
    pub async fn get(&self, path: &str) -> Reply {
        request(self.addr, "GET", path, &[], Bytes::new()).await
    }

    pub async fn send(&self, method: &str, path: &str, body: impl Into<Bytes>) -> Reply {
        request(self.addr, method, path, &[], body).await
    }

    pub async fn admin_get(&self, path: &str) -> Reply {
        request(self.admin, "GET", path, &[], Bytes::new()).await
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Kills the process outright (SIGKILL): no draining, no clean-up.
    pub fn kill(&mut self) {
        assert!(
            !self.supervised,
            "SIGKILL to supervise.sh would leave bv running"
        );
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM and waits for the exit code.
    pub async fn terminate(&mut self) -> Option<i32> {
        let mut child = self.child.take().unwrap();
        unsafe_kill(child.id(), "TERM");
        tokio::task::spawn_blocking(move || child.wait().unwrap().code())
            .await
            .unwrap()
    }

    /// Sends SIGTERM and waits up to `limit` for the process to end: its exit
    /// code and how long it took. Panics with the log (after killing it) when
    /// it is still running at `limit`.
    pub async fn terminate_within(&mut self, limit: Duration) -> (Option<i32>, Duration) {
        let sent = self.sigterm();
        self.exit_within(sent, limit).await
    }

    /// Sends SIGTERM without waiting; returns when.
    pub fn sigterm(&self) -> std::time::Instant {
        let child = self.child.as_ref().expect("bv is running");
        unsafe_kill(child.id(), "TERM");
        std::time::Instant::now()
    }

    /// Waits until `limit` after `since` for the process to end: its exit
    /// code and how long after `since` it ended. Panics with the log (after
    /// killing it) when it is still running at `limit`.
    pub async fn exit_within(
        &mut self,
        since: std::time::Instant,
        limit: Duration,
    ) -> (Option<i32>, Duration) {
        let mut child = self.child.take().expect("bv is running");
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                let took = since.elapsed();
                // Let the output threads catch up with the last lines.
                tokio::time::sleep(Duration::from_millis(100)).await;
                return (status.code(), took);
            }
            if since.elapsed() > limit {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "bv was still running {limit:?} after SIGTERM:\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn unsafe_kill(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if self.supervised {
                // The supervisor passes SIGTERM on to bv, then ends.
                unsafe_kill(child.id(), "TERM");
                let deadline = std::time::Instant::now() + Duration::from_secs(15);
                while std::time::Instant::now() < deadline {
                    if child.try_wait().ok().flatten().is_some() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A manifest with one probe component `probe` on `route`, plus `extra`
/// TOML appended to the component table.
pub fn probe_app(route: &str, component_extra: &str) -> String {
    format!(
        r#"spin_manifest_version = 2
[application]
name = "test"

[[trigger.http]]
route = "{route}"
component = "probe"

[component.probe]
source = "{{probe}}"
{component_extra}
"#
    )
}

/// Waits (up to 5 s) until `bv`'s output contains `needle`.
pub async fn wait_for_log(app: &TestApp, needle: &str) {
    for _ in 0..100 {
        if app.log().contains(needle) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("`{needle}` never appeared in the log:\n{}", app.log());
}
