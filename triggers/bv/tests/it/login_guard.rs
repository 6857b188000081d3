//! Login brute-force protection end to end: the `auth` component counting
//! failed logins in the real Redis, behind `bv` with a trusted proxy (this
//! test's client, 127.0.0.1) whose `X-Forwarded-For` says which address
//! each attempt comes from. Real PostgreSQL (a database per test).

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::auth_support as keys;
use crate::harness::*;
use crate::pg_support::*;
use crate::redis::redis_shared_lock;
use crate::repo_manifest::RepoManifest;

/// The auth component as `spin.toml` has it, behind a trusted proxy at
/// `trusted` (an address; empty: none), its failed-login keys under
/// `prefix`, `settings` as its login-guard variables.
fn manifest(prefix: &str, trusted: &str, settings: &[(&str, &str)]) -> String {
    let mut manifest = RepoManifest::load()
        .only("login-guard", &["auth"])
        .without_rate_limits()
        .variable("trusted_proxies", trusted)
        .component_variable("auth", "login_key_prefix", prefix);
    for (name, value) in settings {
        manifest = manifest.variable(name, value);
    }
    manifest.render()
}

const OWNER_PASSWORD: &str = "violet harbour tuesday 81";

struct Site {
    app: TestApp,
    _db: TestDb,
    _lock: std::fs::File,
}

impl Site {
    async fn start(tag: &str, trusted: &str, settings: &[(&str, &str)]) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let lock = redis_shared_lock();
        let prefix = format!(
            "bv-it-login-{tag}-{}-{}:",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let db = TestDb::new(&format!("login_{tag}")).await;
        let app = spawn_app_with(
            &manifest(&prefix, trusted, settings),
            Spawn {
                env: vec![
                    ("SPIN_VARIABLE_DB_URL".into(), db.url()),
                    (
                        "SPIN_VARIABLE_AUTH_SIGNING_KEYS".into(),
                        keys::signing_keys(&[(keys::KID, keys::SEED)]),
                    ),
                ],
                ..Default::default()
            },
        )
        .await;
        Self {
            app,
            _db: db,
            _lock: lock,
        }
    }

    async fn register(&self, email: &str, password: &str) {
        crate::suite_secrets::used(password);
        let body = json!({ "email": email, "password": password }).to_string();
        let r = request(
            self.app.addr,
            "POST",
            "/api/auth/register",
            &[("content-type", "application/json")],
            body,
        )
        .await;
        assert_eq!(r.status, 201, "{}\n{}", r.text(), self.app.log());
    }

    /// A login attempt from `from` (as the trusted proxy forwards it, or
    /// as a spoofed header when the proxy is not trusted), and how long it
    /// took.
    async fn login(&self, from: &str, email: &str, password: &str) -> (Reply, Duration) {
        crate::suite_secrets::used(password);
        let body = json!({ "email": email, "password": password }).to_string();
        let start = Instant::now();
        let r = request(
            self.app.addr,
            "POST",
            "/api/auth/login",
            &[
                ("content-type", "application/json"),
                ("x-forwarded-for", from),
            ],
            body,
        )
        .await;
        if r.status == 200 {
            crate::suite_secrets::used(r.json()["accessToken"].as_str().unwrap_or_default());
            crate::suite_secrets::used(r.json()["refreshToken"].as_str().unwrap_or_default());
        }
        (r, start.elapsed())
    }

    /// The value of the metric `name` with the `labels` (`key="value"`).
    async fn metric(&self, name: &str, labels: &[&str]) -> u64 {
        let metrics = self.app.admin_get("/metrics").await.text();
        metrics
            .lines()
            .find(|l| l.starts_with(&format!("{name}{{")) && labels.iter().all(|x| l.contains(x)))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .map_or(0, |v| v as u64)
    }
}

#[track_caller]
fn assert_throttled(r: &Reply) -> u64 {
    assert_eq!(r.status, 429, "{}", r.text());
    assert_eq!(r.headers["content-type"], "application/problem+json");
    assert_eq!(r.json()["type"], "urn:bitvelocity:problem:login-throttled");
    r.headers["retry-after"].to_str().unwrap().parse().unwrap()
}

/// The answer without what differs by nature between two attempts.
fn shape(r: &Reply) -> (u16, Value, Option<String>) {
    let mut body = if r.body.is_empty() {
        Value::Null
    } else {
        r.json()
    };
    // "try again in N s": N counts down.
    if let Some(detail) = body.get_mut("detail") {
        *detail = Value::from("…");
    }
    let retry = r.headers.get("retry-after").map(|_| "present".to_string());
    (r.status, body, retry)
}

#[tokio::test]
async fn brute_force_slows_down_then_locks_the_pair_for_the_window_and_the_owner_still_logs_in() {
    let site = Site::start(
        "brute",
        "127.0.0.1",
        &[
            ("login_slow_after", "3"),
            ("login_lock_after", "10"),
            ("login_lock_seconds", "6"),
        ],
    )
    .await;
    site.register("alice@example.com", OWNER_PASSWORD).await;
    let attacker = "203.0.113.66";

    // Ten wrong passwords: 401 each, the later ones slower and slower.
    let mut took = Vec::new();
    for i in 0..10 {
        let (r, elapsed) = site
            .login(
                attacker,
                "alice@example.com",
                &format!("guess number {i:02} xyz"),
            )
            .await;
        assert_eq!(r.status, 401, "attempt {i}: {}", r.text());
        assert_eq!(
            r.json()["type"],
            "urn:bitvelocity:problem:invalid-credentials"
        );
        took.push(elapsed);
    }
    // Failures 3, 4, 5, 6.. wait 250 ms, 500 ms, 1 s, then 2 s.
    for (i, at_least) in [(3, 250), (4, 500), (5, 1000), (6, 2000), (9, 2000)] {
        assert!(
            took[i] >= Duration::from_millis(at_least),
            "attempt {i} took {:?}, not slowed to {at_least} ms: {took:?}",
            took[i]
        );
    }
    assert!(took[0] < Duration::from_millis(1500), "{took:?}");

    // Locked: 429 with Retry-After, even with the right password.
    let (r, _) = site
        .login(attacker, "alice@example.com", OWNER_PASSWORD)
        .await;
    let locked_at = Instant::now();
    let retry_after = assert_throttled(&r);
    assert!((1..=6).contains(&retry_after), "Retry-After {retry_after}");

    // The owner, from another address, logs in at once.
    let (r, elapsed) = site
        .login("198.51.100.20", "alice@example.com", OWNER_PASSWORD)
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        elapsed < Duration::from_millis(1500),
        "the owner waited {elapsed:?}"
    );

    // The attacker's address stays refused until the window ends, then the
    // right password works again.
    let mut refused_until = Duration::ZERO;
    loop {
        let (r, _) = site
            .login(attacker, "alice@example.com", OWNER_PASSWORD)
            .await;
        if r.status == 200 {
            break;
        }
        assert_throttled(&r);
        refused_until = locked_at.elapsed();
        assert!(
            refused_until < Duration::from_secs(12),
            "still locked after the window"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        refused_until >= Duration::from_secs(4),
        "refused only for {refused_until:?} of a 6 s lock"
    );

    // Each lock and unlock is a security event: logged (no password, no
    // email) and counted.
    wait_for_log(&site.app, "login_unlocked").await;
    let log = site.app.log();
    assert!(log.contains("login_locked"), "{log}");
    assert!(
        !log.contains("alice@example.com"),
        "the log names the email"
    );
    assert!(!log.contains("guess number"), "the log holds a password");
    let lockouts = "bv_app_login_lockouts_total";
    let pair = r#"scope="account_address""#;
    for event in [r#"event="locked""#, r#"event="unlocked""#] {
        assert_eq!(site.metric(lockouts, &[event, pair]).await, 1, "{event}");
    }
    let refused = site
        .metric("bv_app_login_attempts_total", &[r#"outcome="refused""#])
        .await;
    assert!(refused >= 2, "{refused} refused attempts counted");
}

#[tokio::test]
async fn unknown_and_known_accounts_answer_alike_under_attack() {
    let site = Site::start(
        "alike",
        "127.0.0.1",
        &[
            ("login_slow_after", "2"),
            ("login_lock_after", "5"),
            ("login_lock_seconds", "60"),
        ],
    )
    .await;
    site.register("bob@example.com", OWNER_PASSWORD).await;
    let mut known = Vec::new();
    let mut unknown = Vec::new();
    for i in 0..7 {
        let password = format!("wrong guess {i:02} abc");
        let (k, tk) = site.login("192.0.2.10", "bob@example.com", &password).await;
        let (u, tu) = site
            .login("192.0.2.11", "nobody@example.com", &password)
            .await;
        known.push((shape(&k), tk));
        unknown.push((shape(&u), tu));
    }
    for (i, ((k, tk), (u, tu))) in known.iter().zip(&unknown).enumerate() {
        assert_eq!(k, u, "attempt {i}");
        // Same delays: both slowed from the same attempt by the same amount
        // (argon2id runs for both); generous bounds for a busy machine.
        let (a, b) = (tk.as_millis() as i128, tu.as_millis() as i128);
        assert!(
            (a - b).abs() < 400 + a.max(b) / 4,
            "attempt {i}: known {tk:?}, unknown {tu:?}"
        );
    }
    let statuses: Vec<u16> = known.iter().map(|((s, _, _), _)| *s).collect();
    assert_eq!(statuses, [401, 401, 401, 401, 401, 429, 429]);
}

#[tokio::test]
async fn one_address_failing_over_many_accounts_is_locked() {
    let site = Site::start(
        "stuffing",
        "127.0.0.1",
        &[
            ("login_slow_after", "50"),
            ("login_lock_after", "50"),
            ("login_address_lock_after", "6"),
            ("login_lock_seconds", "60"),
        ],
    )
    .await;
    site.register("carol@example.com", OWNER_PASSWORD).await;
    for i in 0..6 {
        let (r, _) = site
            .login(
                "192.0.2.99",
                &format!("user{i}@example.com"),
                "stuffed password 1234",
            )
            .await;
        assert_eq!(r.status, 401, "{}", r.text());
    }
    // Any account from that address now: refused.
    let (r, _) = site
        .login("192.0.2.99", "carol@example.com", OWNER_PASSWORD)
        .await;
    assert_throttled(&r);
    // Carol elsewhere: fine.
    let (r, _) = site
        .login("192.0.2.100", "carol@example.com", OWNER_PASSWORD)
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    wait_for_log(&site.app, "\"scope\":\"address\"").await;
}

#[tokio::test]
async fn a_spoofed_forwarded_address_from_an_untrusted_client_changes_nothing() {
    // No trusted proxy: X-Forwarded-For is the client's own claim.
    let site = Site::start(
        "spoof",
        "",
        &[
            ("login_slow_after", "50"),
            ("login_lock_after", "3"),
            ("login_lock_seconds", "60"),
        ],
    )
    .await;
    site.register("dave@example.com", OWNER_PASSWORD).await;
    for i in 0..3 {
        // A new "address" each time: all of them are 127.0.0.1 really.
        let (r, _) = site
            .login(
                &format!("203.0.113.{i}"),
                "dave@example.com",
                "not the password 99",
            )
            .await;
        assert_eq!(r.status, 401, "{}", r.text());
    }
    for from in ["203.0.113.200", "198.51.100.1, 198.51.100.2", "unknown"] {
        let (r, _) = site.login(from, "dave@example.com", OWNER_PASSWORD).await;
        assert_throttled(&r);
    }
}
