use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::harness::*;

#[tokio::test]
async fn sigterm_drains_in_flight_requests_and_exits_zero() {
    let mut app = spawn_app(&probe_app("/p/...", "")).await;
    let addr = app.addr;
    let in_flight =
        tokio::spawn(async move { request(addr, "GET", "/p/sleep?ms=1500", &[], "").await });
    tokio::time::sleep(Duration::from_millis(400)).await;
    let code = app.terminate().await;
    let reply = in_flight.await.unwrap();
    assert_eq!(reply.status, 200, "in-flight request was cut off");
    assert_eq!(reply.text(), "slept");
    assert_eq!(code, Some(0), "{}", app.log());
}

#[tokio::test]
async fn admin_endpoints_report_health_and_metrics() {
    let app = spawn_app(&probe_app("/p/...", "")).await;
    assert_eq!(app.admin_get("/healthz").await.status, 200);
    assert_eq!(app.admin_get("/readyz").await.status, 200);
    for _ in 0..3 {
        app.get("/p/headers").await;
    }
    app.get("/p/status/418").await;
    app.get("/nowhere").await;
    let metrics = app.admin_get("/metrics").await.text();
    for expected in [
        r#"bv_http_requests_total{component="probe",route="/p/...",status="200"} 3"#,
        r#"bv_http_requests_total{component="probe",route="/p/...",status="418"} 1"#,
        r#"bv_http_requests_total{component="",route="",status="404"} 1"#,
        r#"bv_http_request_duration_seconds_count{component="probe",route="/p/..."} 4"#,
    ] {
        assert!(
            metrics.contains(expected),
            "missing `{expected}` in:\n{metrics}"
        );
    }
    assert!(metrics.contains("bv_instantiation_duration_seconds_count{component=\"probe\"}"));
    assert_eq!(app.admin_get("/nothing").await.status, 404);
}

#[tokio::test]
async fn compiled_code_is_cached_on_disk() {
    let manifest = probe_app("/p/...", "");
    let dir = tempfile::tempdir().unwrap();
    let spawn = || Spawn {
        dir: Some(dir.path().to_path_buf()),
        own_cache: true,
        ..Default::default()
    };
    let first = spawn_app_with(&manifest, spawn()).await;
    // Log lines (stderr) may arrive a moment after the address (stdout).
    wait_for_log(&first, "compiled and cached").await;
    drop(first);
    let cached: Vec<_> = std::fs::read_dir(dir.path().join("own-cache"))
        .unwrap()
        .collect();
    assert_eq!(cached.len(), 1);
    let second = spawn_app_with(&manifest, spawn()).await;
    wait_for_log(&second, "loaded from cache").await;
    assert_eq!(second.get("/p/headers").await.status, 200);
}

#[tokio::test]
async fn listen_address_in_use_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_bv"));
    let dir = tempfile::tempdir().unwrap();
    let manifest = probe_app("/p/...", "").replace("{probe}", probe_wasm().to_str().unwrap());
    std::fs::write(dir.path().join("spin.toml"), manifest).unwrap();
    let out = cmd
        .args([
            "up",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .arg("--from")
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{err}"
    );
}

/// The admin address `bv` uses unless told otherwise.
const DEFAULT_ADMIN: &str = "127.0.0.1:9400";

#[tokio::test]
async fn two_apps_run_side_by_side_with_the_default_admin_address() {
    // Whoever holds the default admin port (this test, or another app on the
    // machine), neither app may fail to start because of it.
    let _held = std::net::TcpListener::bind(DEFAULT_ADMIN);
    let spawn = || Spawn {
        default_admin_listen: true,
        ..Default::default()
    };
    let first = spawn_app_with(&probe_app("/p/...", ""), spawn()).await;
    let second = spawn_app_with(&probe_app("/q/...", ""), spawn()).await;
    assert_ne!(first.admin, second.admin);
    for app in [&first, &second] {
        assert_ne!(app.admin.to_string(), DEFAULT_ADMIN, "{}", app.log());
        assert!(
            app.log().contains(&format!(
                "admin address {DEFAULT_ADMIN} is taken; admin endpoints on {}",
                app.admin
            )),
            "{}",
            app.log()
        );
        assert_eq!(app.admin_get("/healthz").await.status, 200);
    }
    // Each admin port belongs to its own app.
    assert_eq!(first.get("/p/headers").await.status, 200);
    assert_eq!(second.get("/q/headers").await.status, 200);
    let metrics = first.admin_get("/metrics").await.text();
    assert!(metrics.contains(r#"route="/p/...""#), "{metrics}");
    assert!(!metrics.contains(r#"route="/q/...""#), "{metrics}");
    let metrics = second.admin_get("/metrics").await.text();
    assert!(metrics.contains(r#"route="/q/...""#), "{metrics}");
    assert!(!metrics.contains(r#"route="/p/...""#), "{metrics}");
}

#[tokio::test]
async fn an_admin_address_asked_for_is_used_or_is_an_error() {
    // From the environment.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = free.local_addr().unwrap();
    drop(free);
    let app = spawn_app_with(
        &probe_app("/p/...", ""),
        Spawn {
            default_admin_listen: true,
            env: vec![("BV_ADMIN_LISTEN".into(), addr.to_string())],
            ..Default::default()
        },
    )
    .await;
    assert_eq!(app.admin, addr);
    assert_eq!(app.admin_get("/healthz").await.status, 200);

    // Taken, from the environment or the command line: start-up stops.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    for spawn in [
        Spawn {
            default_admin_listen: true,
            env: vec![("BV_ADMIN_LISTEN".into(), format!("127.0.0.1:{port}"))],
            ..Default::default()
        },
        Spawn {
            default_admin_listen: true,
            args: vec!["--admin-listen".into(), format!("127.0.0.1:{port}")],
            ..Default::default()
        },
    ] {
        let Err((code, log)) = try_spawn(&probe_app("/p/...", ""), spawn).await else {
            panic!("bv started on a taken admin address");
        };
        assert_eq!(code, Some(1), "{log}");
        assert!(
            log.contains(&format!("cannot listen on 127.0.0.1:{port} (admin)")),
            "{log}"
        );
    }
}

/// Starts `bv up` with its stderr on a new pseudo-terminal and `env`; returns
/// what it wrote there up to the point it serves (and a moment more).
fn log_on_a_terminal(env: &[(&str, &str)]) -> String {
    use std::io::{BufRead, Read};
    use std::os::fd::FromRawFd;

    let (mut master, mut slave) = (-1, -1);
    // SAFETY: openpty writes two new descriptors into the two integers; the
    // name, termios and window-size arguments may be null.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors were just opened and are owned by nobody else.
    let (master, slave) = unsafe {
        (
            std::fs::File::from_raw_fd(master),
            std::fs::File::from_raw_fd(slave),
        )
    };
    let dir = tempfile::tempdir().unwrap();
    let manifest = probe_app("/p/...", "").replace("{probe}", probe_wasm().to_str().unwrap());
    std::fs::write(dir.path().join("spin.toml"), manifest).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_bv"))
        .args([
            "up",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .arg("--from")
        .arg(dir.path())
        .env_remove("BV_LOG_FORMAT")
        .env("RUST_LOG", "info")
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(slave)
        .spawn()
        .unwrap();
    let terminal = Arc::new(Mutex::new(String::new()));
    {
        let terminal = terminal.clone();
        let mut master = master;
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // Ends with an error once the process (the last holder of the
            // terminal's other side) is gone.
            while let Ok(n) = master.read(&mut buf) {
                if n == 0 {
                    break;
                }
                terminal
                    .lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
    }
    let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut served = false;
    for line in stdout.lines().map_while(Result::ok) {
        if line.starts_with("Serving http://") {
            served = true;
            break;
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    let _ = child.kill();
    let _ = child.wait();
    let text = terminal.lock().unwrap().clone();
    assert!(served, "bv did not start:\n{text}");
    text
}

#[tokio::test]
async fn logs_are_text_on_a_terminal_and_json_otherwise() {
    let line_of = |log: &str| {
        log.lines()
            .find(|l| l.contains("loaded 1 component(s)"))
            .unwrap_or_else(|| panic!("no start-up line in:\n{log}"))
            .trim()
            .to_string()
    };
    // A person at a terminal reads text.
    let log = tokio::task::spawn_blocking(|| log_on_a_terminal(&[]))
        .await
        .unwrap();
    let line = line_of(&log);
    assert!(!line.starts_with('{'), "{line}");
    assert!(line.contains("INFO"), "{line}");
    // Asked for, JSON on a terminal too.
    for env in [
        &[("BV_LOG_FORMAT", "json")][..],
        &[("BV_LOG_FORMAT", "text")][..],
    ] {
        let log = tokio::task::spawn_blocking(move || log_on_a_terminal(env))
            .await
            .unwrap();
        let line = line_of(&log);
        let json = serde_json::from_str::<serde_json::Value>(&line);
        assert_eq!(json.is_ok(), env[0].1 == "json", "{env:?}: {line}");
    }
    // A log collector (a pipe, a file) reads JSON.
    let app = spawn_app(&probe_app("/p/...", "")).await;
    let stderr = app.stderr.lock().unwrap().clone();
    let value: serde_json::Value = serde_json::from_str(&line_of(&stderr)).unwrap();
    assert_eq!(value["level"], "INFO", "{value}");
}
