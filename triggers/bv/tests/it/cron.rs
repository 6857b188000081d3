//! The cron trigger (`[[trigger.cron]]`, the spin-trigger-cron plugin's
//! manifest and WIT world): ticks fire the `cron-probe` component, which
//! prints `cron-probe <name> fired at <timestamp>` for each firing.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::harness::{spawn_app, try_spawn, Spawn, TestApp};

/// A name no other test (or test process) uses, to tell firings apart.
fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

fn cron_manifest(expression: &str, name: &str, extra_env: &str) -> String {
    format!(
        r#"spin_manifest_version = 2
[application]
name = "cron-trigger"

[[trigger.http]]
route = "/..."
component = "web"

[[trigger.cron]]
component = "ticker"
cron_expression = "{expression}"

[component.web]
source = "{{probe}}"

[component.ticker]
source = "{{wasm:cron-probe}}"
environment = {{ CRON_PROBE_NAME = "{name}"{extra_env} }}
"#
    )
}

/// The timestamps `name` recorded so far.
fn firings(app: &TestApp, name: &str) -> Vec<u64> {
    let needle = format!("cron-probe {name} fired at ");
    app.log()
        .lines()
        .filter_map(|line| line.split_once(&needle))
        .map(|(_, rest)| {
            // The guest's line is the message of one of bv's JSON log lines:
            // the digits end where the message does.
            let ts: String = rest.chars().take_while(char::is_ascii_digit).collect();
            ts.parse().expect("a timestamp")
        })
        .collect()
}

/// Polls until `done` holds, for at most `limit`.
async fn eventually(app: &TestApp, limit: Duration, what: &str, done: impl Fn(&str) -> bool) {
    let deadline = Instant::now() + limit;
    while !done(&app.log()) {
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within {limit:?}:\n{}",
            app.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn cron_trigger_fires_every_second() {
    let name = unique("every-second");
    let app = spawn_app(&cron_manifest("* * * * * *", &name, "")).await;
    assert!(
        app.log().contains("ticker: cron * * * * * *"),
        "{}",
        app.log()
    );
    tokio::time::sleep(Duration::from_secs(4)).await;
    let fired = firings(&app, &name);
    // Four seconds hold four ticks; the bounds leave room for a slow machine
    // without letting a runaway or a stuck schedule pass.
    assert!(
        (2..=6).contains(&fired.len()),
        "fired {} times in 4 s: {fired:?}\n{}",
        fired.len(),
        app.log()
    );
    // Each firing gets its own tick's time, one second apart.
    for pair in fired.windows(2) {
        assert!(pair[1] > pair[0], "timestamps not increasing: {fired:?}");
    }
    assert!(!app.log().contains("cron handler failed"), "{}", app.log());
}

#[tokio::test]
async fn cron_trigger_rejects_a_bad_expression() {
    let manifest = cron_manifest("every second", &unique("bad"), "");
    // Trigger tables are read before anything listens: bv stops with an
    // error naming the field instead of starting.
    let Err((code, log)) = try_spawn(&manifest, Spawn::default()).await else {
        panic!("bv started with a bad cron expression");
    };
    assert_eq!(code, Some(1), "{log}");
    assert!(
        !log.contains("Serving http://"),
        "bv listened before failing:\n{log}"
    );
    assert!(log.contains("trigger.cron[0].cron_expression"), "{log}");
    assert!(log.contains("every second"), "{log}");

    // A field the plugin does not have is refused too.
    let manifest = cron_manifest("* * * * * *", &unique("bad"), "")
        .replace("cron_expression =", "cron_expresion =");
    let Err((code, log)) = try_spawn(&manifest, Spawn::default()).await else {
        panic!("bv started with a misspelt cron field");
    };
    assert_eq!(code, Some(1), "{log}");
    assert!(log.contains("trigger.cron[0]"), "{log}");
    assert!(log.contains("cron_expresion"), "{log}");
}

#[tokio::test]
async fn cron_trigger_failing_handler_is_counted_and_the_next_tick_fires() {
    let name = unique("failing");
    let app = spawn_app(&cron_manifest(
        "* * * * * *",
        &name,
        r#", CRON_PROBE_FAIL = "1""#,
    ))
    .await;
    // Two failures in a row: the first did not stop the schedule.
    eventually(
        &app,
        Duration::from_secs(15),
        "a second failed firing",
        |log| log.contains("(failures so far: 2)"),
    )
    .await;
    assert!(firings(&app, &name).len() >= 2, "{}", app.log());
    let log = app.log();
    assert!(
        log.contains("cron handler failed: handler returned an error")
            && log.contains(&format!("cron-probe {name} asked to fail")),
        "{log}"
    );
    // …and counted on the admin endpoint.
    let metrics = app.admin_get("/metrics").await.text();
    let errors: u64 = metrics
        .lines()
        .find(|l| {
            l.starts_with("bv_cron_messages_total{")
                && l.contains(r#"component="ticker""#)
                && l.contains(r#"outcome="error""#)
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no cron error counter in:\n{metrics}"));
    assert!(errors >= 2, "{metrics}");
}

#[tokio::test]
async fn cron_trigger_skips_a_tick_while_the_previous_firing_runs() {
    let name = unique("slow");
    // Each firing takes 2.5 s on an every-second schedule.
    let app = spawn_app(&cron_manifest(
        "* * * * * *",
        &name,
        r#", CRON_PROBE_SLEEP_MS = "2500""#,
    ))
    .await;
    eventually(&app, Duration::from_secs(15), "a skipped tick", |log| {
        log.contains("skipped a tick: the previous firing is still running")
    })
    .await;
    // Never two at once: firings start at least ~2.5 s apart, so a few
    // seconds hold far fewer firings than ticks.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let fired = firings(&app, &name);
    for pair in fired.windows(2) {
        assert!(
            pair[1] >= pair[0] + 2,
            "firings overlapped: {fired:?}\n{}",
            app.log()
        );
    }
    assert!(!app.log().contains("cron handler failed"), "{}", app.log());
}
