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
    assert!(
        first.log().contains("compiled and cached"),
        "{}",
        first.log()
    );
    drop(first);
    let cached: Vec<_> = std::fs::read_dir(dir.path().join("own-cache"))
        .unwrap()
        .collect();
    assert_eq!(cached.len(), 1);
    let second = spawn_app_with(&manifest, spawn()).await;
    assert!(
        second.log().contains("loaded from cache"),
        "{}",
        second.log()
    );
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
