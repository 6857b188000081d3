use std::time::{Duration, Instant};

use crate::harness::*;

/// The value of the first series of `metrics` that starts with
/// `name_and_labels`; 0 when there is none.
pub(crate) fn metric(metrics: &str, name_and_labels: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with(name_and_labels))
        .and_then(|l| l.rsplit(' ').next())
        .map(|v| v.parse().unwrap())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn a_panic_fails_only_its_own_request() {
    let app = spawn_app(&probe_app("/p/...", "")).await;
    assert_eq!(app.get("/p/headers").await.status, 200);
    let failed = app.get("/p/panic").await;
    assert_eq!(failed.status, 500);
    assert_eq!(failed.headers["content-type"], "application/problem+json");
    for _ in 0..3 {
        assert_eq!(
            app.get("/p/headers").await.status,
            200,
            "later requests must not fail"
        );
    }
    let metrics = app.admin_get("/metrics").await.text();
    assert_eq!(
        metric(&metrics, r#"bv_instance_traps_total{component="probe"}"#),
        1.0,
        "{metrics}"
    );
}

#[tokio::test]
async fn a_guest_that_never_answers_gets_504() {
    let app = spawn_app(&probe_app(
        "/p/...",
        "[component.probe.tool.bv]\nrequest_timeout_ms = 300\n",
    ))
    .await;
    let start = Instant::now();
    let reply = app.get("/p/loop").await;
    assert_eq!(reply.status, 504, "{}", reply.text());
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "timeout took {:?}",
        start.elapsed()
    );
    assert_eq!(app.get("/p/headers").await.status, 200);
    let metrics = app.admin_get("/metrics").await.text();
    assert_eq!(
        metric(
            &metrics,
            r#"bv_limit_rejections_total{component="probe",limit="timeout"}"#
        ),
        1.0,
        "{metrics}"
    );
}

#[tokio::test]
async fn memory_is_capped_per_instance() {
    let app = spawn_app(&probe_app(
        "/p/...",
        "[component.probe.tool.bv]\nmemory_limit_mb = 32\n",
    ))
    .await;
    assert_eq!(app.get("/p/alloc?mb=4").await.status, 200);
    assert_eq!(
        app.get("/p/alloc?mb=64").await.status,
        500,
        "allocation past the cap must fail"
    );
    assert_eq!(
        app.get("/p/alloc?mb=4").await.status,
        200,
        "next request must succeed"
    );
}

#[tokio::test]
async fn concurrency_limit_answers_503_with_retry_after() {
    let app = spawn_app(&probe_app(
        "/p/...",
        "[component.probe.tool.bv]\nmax_concurrent_requests = 2\n",
    ))
    .await;
    let addr = app.addr;
    let slow =
        |_| tokio::spawn(async move { request(addr, "GET", "/p/sleep?ms=1500", &[], "").await });
    let first: Vec<_> = (0..2).map(slow).collect();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let rejected = app.get("/p/headers").await;
    assert_eq!(rejected.status, 503, "{}", rejected.text());
    assert_eq!(rejected.headers["retry-after"], "1");
    for task in first {
        assert_eq!(task.await.unwrap().status, 200);
    }
    assert_eq!(
        app.get("/p/headers").await.status,
        200,
        "capacity must come back"
    );
    let metrics = app.admin_get("/metrics").await.text();
    assert_eq!(
        metric(
            &metrics,
            r#"bv_limit_rejections_total{component="probe",limit="concurrency"}"#
        ),
        1.0
    );
}

#[tokio::test]
async fn strict_policy_gives_every_request_a_fresh_instance() {
    let app = spawn_app_with(
        &probe_app("/p/...", ""),
        Spawn {
            args: vec!["--instance-policy".into(), "strict".into()],
            ..Default::default()
        },
    )
    .await;
    for _ in 0..3 {
        assert_eq!(
            app.get("/p/counter").await.text(),
            "1",
            "state leaked between requests"
        );
    }
}

#[tokio::test]
async fn reuse_policy_keeps_instances_for_a_bounded_number_of_requests() {
    let app = spawn_app(&probe_app(
        "/p/...",
        "[component.probe.tool.bv]\ninstance_policy = \"reuse\"\ninstance_max_requests = 3\n",
    ))
    .await;
    let counts: Vec<String> = {
        let mut v = Vec::new();
        for _ in 0..5 {
            v.push(app.get("/p/counter").await.text());
        }
        v
    };
    assert_eq!(
        counts,
        ["1", "2", "3", "1", "2"],
        "instance should serve exactly 3 requests"
    );
}

#[tokio::test]
async fn more_requests_at_once_than_instance_slots_get_503_with_retry_after_not_500() {
    // Two slots in the runtime's pool (shared by every component), a fresh
    // instance per request, and six requests to two components holding
    // theirs: the rest find no slot.
    let manifest = format!(
        "{}\n[[trigger.http]]\nroute = \"/q/...\"\ncomponent = \"other\"\n\n[component.other]\nsource = \"{{probe}}\"\n",
        probe_app("/p/...", "")
    );
    let app = spawn_app_with(
        &manifest,
        Spawn {
            env: vec![("BV_POOL_INSTANCES".into(), "2".into())],
            args: vec!["--instance-policy".into(), "strict".into()],
            ..Default::default()
        },
    )
    .await;
    let paths: Vec<String> = (0..6)
        .map(|i| format!("/{}/sleep?ms=1500", ["p", "q"][i % 2]))
        .collect();
    let replies = futures::future::join_all(paths.iter().map(|path| app.get(path))).await;
    let statuses: Vec<u16> = replies.iter().map(|r| r.status).collect();
    assert!(statuses.contains(&200), "{statuses:?}\n{}", app.log());
    assert!(statuses.contains(&503), "{statuses:?}\n{}", app.log());
    assert!(!statuses.contains(&500), "{statuses:?}\n{}", app.log());
    for refused in replies.iter().filter(|r| r.status == 503) {
        assert_eq!(refused.headers["retry-after"], "1");
        assert_eq!(refused.headers["content-type"], "application/problem+json");
        assert!(
            refused.text().contains("instance slot"),
            "{}",
            refused.text()
        );
    }
    // Once the slots are free again, requests are served. A slot is freed
    // when its instance's task ends, a moment after the client has read the
    // last byte of the response, so the first request may still find none.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut status = app.get("/p/headers").await.status;
    while status == 503 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        status = app.get("/p/headers").await.status;
    }
    assert_eq!(status, 200, "{}", app.log());
    let metrics = app.admin_get("/metrics").await.text();
    let rejections = |component: &str| {
        metric(
            &metrics,
            &format!(r#"bv_limit_rejections_total{{component="{component}",limit="instances"}}"#),
        )
    };
    assert!(
        rejections("probe") + rejections("other") >= 1.0,
        "{metrics}"
    );
}
