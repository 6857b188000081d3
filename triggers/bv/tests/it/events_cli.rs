//! `bv events`: the real binary against a database of each test's own, whose
//! `bv_events` rows the test writes directly (no component runs here).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio_postgres::{AsyncMessage, Client, NoTls};

use crate::pg_support::TestDb;

const PRODUCT: &str = "com.bitvelocity.product.created.v1";
const ORDER: &str = "com.bitvelocity.order.placed.v1";

/// A client whose `LISTEN bv_events` notifications arrive on the receiver.
async fn listener(db: &TestDb) -> (Client, tokio::sync::mpsc::UnboundedReceiver<String>) {
    let config = format!(
        "host=127.0.0.1 port=5432 user=postgres dbname={} sslmode=disable",
        db.name
    );
    let (client, mut connection) = tokio_postgres::connect(&config, NoTls).await.unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(message)) = futures::StreamExt::next(&mut messages).await {
            if let AsyncMessage::Notification(n) = message {
                let _ = tx.send(n.channel().to_string());
            }
        }
    });
    client.batch_execute("LISTEN bv_events").await.unwrap();
    (client, rx)
}

/// A new database after `bv events init`, with `count` outbox rows (seq
/// 1..=count, one transaction each): odd seqs are product events, even ones
/// orders; row i was recorded at 2025-01-01T00:00:00Z plus i minutes.
async fn seeded(tag: &str, count: i64) -> (TestDb, Client) {
    let db = TestDb::new(tag).await;
    let out = bv(&db, &["init"]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("bv_events schema is ready"), "{out:?}");
    let client = db.client().await;
    for i in 1..=count {
        let ty = if i % 2 == 1 { PRODUCT } else { ORDER };
        client
            .execute(
                "INSERT INTO bv_events.outbox (id, source, type, subject, time, event, recorded_at)
                 VALUES ('e' || $1::bigint, 'test', $2, 's' || $1::bigint, now(),
                         jsonb_build_object('specversion', '1.0', 'id', 'e' || $1::bigint,
                                            'source', 'test', 'type', $2::text),
                         '2025-01-01T00:00:00Z'::timestamptz + make_interval(mins => $1::int))",
                &[&i, &ty],
            )
            .await
            .unwrap();
    }
    (db, client)
}

/// What one `bv` run printed.
#[derive(Debug)]
struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Out {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"))
    }

    /// Exit 1 with exactly one line on stderr containing every `needle`.
    fn assert_error(&self, needles: &[&str]) {
        assert_eq!(self.code, Some(1), "{self:?}");
        let lines: Vec<&str> = self.stderr.trim().lines().collect();
        assert_eq!(lines.len(), 1, "one line expected: {self:?}");
        assert!(lines[0].starts_with("Error: "), "{self:?}");
        for needle in needles {
            assert!(lines[0].contains(needle), "`{needle}` missing: {self:?}");
        }
    }
}

fn command(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_bv"));
    cmd.arg("events")
        .args(args)
        .current_dir(dir)
        .env_remove("BV_EVENTS_DATABASE")
        .env("RUST_LOG", "warn")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Runs `bv events <args>` in `dir` with `env`, off the test's runtime (so
/// the test's own connections keep running).
async fn run_in(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Out {
    let mut cmd = command(dir, args, env);
    let output = tokio::task::spawn_blocking(move || cmd.output().expect("running bv"))
        .await
        .unwrap();
    Out {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// `bv events <args> --database <db>` in an empty directory.
async fn bv(db: &TestDb, args: &[&str]) -> Out {
    let dir = tempfile::tempdir().unwrap();
    let url = db.url();
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--database", &url]);
    run_in(dir.path(), &all, &[]).await
}

/// Adds a subscription whose position is just after outbox row `after` (0:
/// the start).
async fn subscribe(client: &Client, name: &str, types: &[&str], after: i64) {
    client
        .execute(
            "INSERT INTO bv_events.subscriptions (name, component, types) VALUES ($1, $1, $2)",
            &[&name, &types],
        )
        .await
        .unwrap();
    if after > 0 {
        client
            .execute(
                "UPDATE bv_events.subscriptions s SET position_tx = o.tx, position_seq = o.seq
                 FROM bv_events.outbox o WHERE o.seq = $2 AND s.name = $1",
                &[&name, &after],
            )
            .await
            .unwrap();
    }
}

/// `(tx, seq)` of a subscription, with tx relative to outbox row `seq`'s:
/// `Some(seq)` when the position's tx is that row's.
async fn position(client: &Client, name: &str) -> (Option<i64>, i64) {
    let row = client
        .query_one(
            "SELECT (SELECT min(o.seq) FROM bv_events.outbox o WHERE o.tx = s.position_tx),
                    s.position_seq
             FROM bv_events.subscriptions s WHERE s.name = $1",
            &[&name],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

/// Takes the subscription's delivery lock as a running `bv` would.
async fn hold_lock(client: &Client, name: &str) {
    let row = client
        .query_one("SELECT pg_try_advisory_lock(25206, hashtext($1))", &[&name])
        .await
        .unwrap();
    assert!(row.get::<_, bool>(0));
}

async fn count(client: &Client, sql: &str) -> i64 {
    client.query_one(sql, &[]).await.unwrap().get(0)
}

#[tokio::test]
async fn list_shows_lag_dead_letters_and_who_delivers() {
    let (db, client) = seeded("list", 10).await;
    subscribe(&client, "projector", &["com.bitvelocity.product.*"], 3).await;
    subscribe(&client, "orders", &[ORDER], 0).await;
    subscribe(&client, "everything", &["*"], 10).await;
    client
        .batch_execute(
            "INSERT INTO bv_events.dead_letters (subscription, seq, event_id, type, event, attempts, last_error)
             VALUES ('projector', 1, 'e1', 'com.bitvelocity.product.created.v1', '{}', 5, 'boom'),
                    ('projector', 3, 'e3', 'com.bitvelocity.product.created.v1', '{}', 5, 'boom')",
        )
        .await
        .unwrap();
    let locker = db.client().await;
    hold_lock(&locker, "projector").await;

    let list = bv(&db, &["list", "--json"]).await;
    assert_eq!(list.code, Some(0), "{list:?}");
    let json = list.json();
    let subs = json.as_array().unwrap();
    let names: Vec<&str> = subs.iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["everything", "orders", "projector"]);
    let by = |name: &str| subs.iter().find(|s| s["name"] == name).unwrap().clone();
    // Products are the odd seqs: after 3 come 5, 7, 9.
    let projector = by("projector");
    assert_eq!(projector["lag"], 3, "{projector}");
    assert_eq!(projector["dead_letters"], 2);
    assert_eq!(projector["active"], true);
    assert_eq!(projector["position"]["seq"], 3);
    assert_eq!(projector["component"], "projector");
    assert_eq!(
        projector["types"],
        serde_json::json!(["com.bitvelocity.product.*"])
    );
    let orders = by("orders");
    assert_eq!(
        (orders["lag"].clone(), orders["active"].clone()),
        (5.into(), false.into())
    );
    assert_eq!(orders["dead_letters"], 0);
    assert_eq!(by("everything")["lag"], 0);

    // The lag is what the trigger's reading rule would find.
    let expected = count(
        &client,
        "SELECT count(*) FROM bv_events.outbox o, bv_events.subscriptions s
         WHERE s.name = 'orders' AND (o.tx, o.seq) > (s.position_tx, s.position_seq)
           AND o.type LIKE 'com.bitvelocity.order.placed.v1'",
    )
    .await;
    assert_eq!(orders["lag"], expected);

    let table = bv(&db, &["list"]).await;
    assert_eq!(table.code, Some(0), "{table:?}");
    let lines: Vec<&str> = table.stdout.lines().collect();
    assert!(lines[0].starts_with("SUBSCRIPTION"), "{table:?}");
    let row: Vec<&str> = lines
        .iter()
        .find(|l| l.starts_with("projector"))
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(
        row,
        [
            "projector",
            "projector",
            "3",
            "3",
            "2",
            "yes",
            "com.bitvelocity.product.*"
        ]
    );

    // The lock going away shows.
    drop(locker);
    let mut inactive = false;
    for _ in 0..50 {
        let json = bv(&db, &["list", "--json"]).await.json();
        if json[2]["active"] == false {
            inactive = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(inactive, "projector still shown as delivered");
}

#[tokio::test]
async fn replay_from_offset_moves_the_position_and_forgets_only_that_consumer() {
    let (db, client) = seeded("offset", 10).await;
    subscribe(&client, "projector", &["com.bitvelocity.product.*"], 10).await;
    client
        .batch_execute(
            "INSERT INTO bv_events.processed (consumer, source, event_id) VALUES
               ('projector', 'test', 'e1'), ('projector', 'test', 'e3'), ('projector', 'test', 'e5'),
               ('other', 'test', 'e1'), ('other', 'test', 'e2')",
        )
        .await
        .unwrap();
    let (_listen, mut notes) = listener(&db).await;

    let out = bv(
        &db,
        &["replay", "projector", "--from-offset", "4", "--no-wait"],
    )
    .await;
    assert_eq!(out.code, Some(0), "{out:?}");
    // Just before row 4: rows 5, 7, 9 are products.
    assert_eq!(position(&client, "projector").await, (Some(4), 3));
    assert!(out.stdout.contains("3 event(s) to redeliver"), "{out:?}");
    assert!(
        out.stdout.contains("will be delivered when it starts"),
        "{out:?}"
    );
    assert!(!out.stdout.contains("Forgot"), "{out:?}");
    assert_eq!(
        count(&client, "SELECT count(*) FROM bv_events.processed").await,
        5
    );
    let note = tokio::time::timeout(Duration::from_secs(5), notes.recv()).await;
    assert_eq!(note.unwrap().as_deref(), Some("bv_events"));

    let list = bv(&db, &["list", "--json"]).await.json();
    assert_eq!(list[0]["lag"], 3);

    let out = bv(
        &db,
        &[
            "replay",
            "projector",
            "--from-offset",
            "1",
            "--forget-processed",
            "--no-wait",
        ],
    )
    .await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(position(&client, "projector").await, (Some(1), 0));
    assert!(out.stdout.contains("5 event(s) to redeliver"), "{out:?}");
    assert!(out.stdout.contains("Forgot 3 processed mark(s)"), "{out:?}");
    assert_eq!(
        count(
            &client,
            "SELECT count(*) FROM bv_events.processed WHERE consumer = 'projector'"
        )
        .await,
        0
    );
    assert_eq!(
        count(
            &client,
            "SELECT count(*) FROM bv_events.processed WHERE consumer = 'other'"
        )
        .await,
        2
    );

    // Past the end: nothing to replay, the position is the last event.
    let out = bv(&db, &["replay", "projector", "--from-offset", "100"]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(position(&client, "projector").await, (Some(10), 10));
    assert!(out.stdout.contains("0 event(s) to redeliver"), "{out:?}");
}

#[tokio::test]
async fn replay_from_time_starts_at_the_first_event_recorded_then() {
    let (db, client) = seeded("time", 10).await;
    subscribe(&client, "projector", &["com.bitvelocity.product.*"], 10).await;

    let out = bv(
        &db,
        &["replay", "projector", "--from-time", "2025-01-01T00:06:00Z"],
    )
    .await;
    assert_eq!(out.code, Some(0), "{out:?}");
    // Row 6 is the first recorded at 00:06; products after it: 7, 9.
    assert_eq!(position(&client, "projector").await, (Some(6), 5));
    assert!(out.stdout.contains("2 event(s) to redeliver"), "{out:?}");

    // Another offset, the same instant (between rows 2 and 3).
    let out = bv(
        &db,
        &[
            "replay",
            "projector",
            "--from-time",
            "2025-01-01T01:02:30+01:00",
        ],
    )
    .await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(position(&client, "projector").await, (Some(3), 2));
    assert!(out.stdout.contains("4 event(s) to redeliver"), "{out:?}");
}

#[tokio::test]
async fn replay_shows_progress_until_the_delivering_bv_catches_up() {
    let (db, client) = seeded("progress", 10).await;
    subscribe(&client, "projector", &["com.bitvelocity.product.*"], 10).await;
    let locker = db.client().await;
    hold_lock(&locker, "projector").await;

    let dir = tempfile::tempdir().unwrap();
    let url = db.url();
    let child = command(
        dir.path(),
        &["replay", "projector", "--from-offset", "1"],
        &[("BV_EVENTS_DATABASE", &url)],
    )
    .spawn()
    .unwrap();
    // Wait for the reset, then deliver as the trigger would: one product at a time.
    let deadline = Instant::now() + Duration::from_secs(10);
    while position(&client, "projector").await != (Some(1), 0) {
        assert!(
            Instant::now() < deadline,
            "the replay never reset the position"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for seq in [1, 3, 5, 7, 9] {
        tokio::time::sleep(Duration::from_millis(400)).await;
        client
            .execute(
                "UPDATE bv_events.subscriptions s SET position_tx = o.tx, position_seq = o.seq
                 FROM bv_events.outbox o WHERE o.seq = $1 AND s.name = 'projector'",
                &[&(seq as i64)],
            )
            .await
            .unwrap();
    }
    let output = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("5 event(s) to redeliver"), "{stdout}");
    assert!(stdout.contains("caught up"), "{stdout}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(
        lines.len() >= 2,
        "progress printed about once a second: {stderr}"
    );
    assert_eq!(
        *lines.last().unwrap(),
        "replay projector: 5/5 (100%), 0 to go",
        "{stderr}"
    );
    assert!(
        lines.iter().all(|l| l.starts_with("replay projector: ")),
        "{stderr}"
    );
}

#[tokio::test]
async fn dead_letters_list_show_retry_and_drop() {
    let (db, client) = seeded("dead", 4).await;
    subscribe(&client, "projector", &["com.bitvelocity.product.*"], 4).await;
    subscribe(&client, "orders", &[ORDER], 4).await;
    client
        .batch_execute(
            "INSERT INTO bv_events.dead_letters (subscription, seq, event_id, type, subject, event, attempts, last_error)
             SELECT d.subscription, o.seq, o.id, o.type, o.subject, o.event, 5, d.error
             FROM (VALUES ('projector', 1, 'handler rejected: bad price'),
                          ('projector', 3, 'timeout'),
                          ('orders', 2, 'retry: database down'),
                          ('projector', 4, 'trap')) AS d(subscription, seq, error)
             JOIN bv_events.outbox o ON o.seq = d.seq
             ORDER BY o.seq",
        )
        .await
        .unwrap();
    let ids = |sql: &'static str| {
        let client = &client;
        async move {
            client
                .query(sql, &[])
                .await
                .unwrap()
                .iter()
                .map(|r| r.get::<_, i64>(0))
                .collect::<Vec<i64>>()
        }
    };
    // Ids follow seq: 1 → seq 1, 2 → seq 2 (orders), 3 → seq 3, 4 → seq 4.
    assert_eq!(
        ids("SELECT id FROM bv_events.dead_letters ORDER BY id").await,
        [1, 2, 3, 4]
    );

    let all = bv(&db, &["dead-letters", "list", "--json"]).await;
    assert_eq!(all.code, Some(0), "{all:?}");
    assert_eq!(all.json().as_array().unwrap().len(), 4);
    let orders = bv(
        &db,
        &["dead-letters", "list", "--subscription", "orders", "--json"],
    )
    .await;
    let orders = orders.json();
    assert_eq!(orders.as_array().unwrap().len(), 1);
    assert_eq!(orders[0]["id"], 2);
    assert_eq!(orders[0]["type"], ORDER);
    assert_eq!(orders[0]["last_error"], "retry: database down");
    let table = bv(&db, &["dead-letters", "list"]).await;
    assert!(
        table.stdout.lines().next().unwrap().starts_with("ID"),
        "{table:?}"
    );
    assert_eq!(table.stdout.lines().count(), 5, "{table:?}");

    let show = bv(&db, &["dead-letters", "show", "1"]).await;
    assert_eq!(show.code, Some(0), "{show:?}");
    assert!(
        show.stdout.contains("handler rejected: bad price"),
        "{show:?}"
    );
    assert!(show.stdout.contains("\"specversion\": \"1.0\""), "{show:?}");
    let show = bv(&db, &["dead-letters", "show", "1", "--json"])
        .await
        .json();
    assert_eq!(show["event"]["id"], "e1");
    assert_eq!(show["subscription"], "projector");

    // Unknown ids: an error naming them, nothing changed.
    bv(&db, &["dead-letters", "retry", "2", "98", "99"])
        .await
        .assert_error(&["98, 99", "nothing was changed"]);
    bv(&db, &["dead-letters", "drop", "1", "77"])
        .await
        .assert_error(&["77"]);
    bv(&db, &["dead-letters", "show", "42"])
        .await
        .assert_error(&["no dead letter with id 42"]);
    bv(
        &db,
        &["dead-letters", "retry", "--all", "--subscription", "nosuch"],
    )
    .await
    .assert_error(&["no subscription named `nosuch`", "orders, projector"]);
    assert_eq!(
        ids("SELECT id FROM bv_events.dead_letters WHERE retry_requested").await,
        Vec::<i64>::new()
    );
    assert_eq!(
        ids("SELECT id FROM bv_events.dead_letters ORDER BY id").await,
        [1, 2, 3, 4]
    );

    let (_listen, mut notes) = listener(&db).await;
    let out = bv(&db, &["dead-letters", "retry", "1", "3"]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("retry of 2 dead letter(s)"), "{out:?}");
    assert_eq!(
        ids("SELECT id FROM bv_events.dead_letters WHERE retry_requested ORDER BY id").await,
        [1, 3]
    );
    let note = tokio::time::timeout(Duration::from_secs(5), notes.recv()).await;
    assert_eq!(note.unwrap().as_deref(), Some("bv_events"));
    let out = bv(
        &db,
        &["dead-letters", "retry", "--all", "--subscription", "orders"],
    )
    .await;
    assert!(out.stdout.contains("retry of 1 dead letter(s)"), "{out:?}");
    assert_eq!(
        ids("SELECT id FROM bv_events.dead_letters WHERE retry_requested ORDER BY id").await,
        [1, 2, 3]
    );
    let listed = bv(&db, &["dead-letters", "list", "--json"]).await.json();
    assert_eq!(listed[0]["retry_requested"], true);
    assert_eq!(listed[3]["retry_requested"], false);

    let out = bv(&db, &["dead-letters", "drop", "4"]).await;
    assert!(out.stdout.contains("Dropped 1 dead letter(s)"), "{out:?}");
    assert_eq!(
        ids("SELECT id FROM bv_events.dead_letters ORDER BY id").await,
        [1, 2, 3]
    );
    let out = bv(
        &db,
        &[
            "dead-letters",
            "drop",
            "--all",
            "--subscription",
            "projector",
        ],
    )
    .await;
    assert!(out.stdout.contains("Dropped 2 dead letter(s)"), "{out:?}");
    assert_eq!(
        ids("SELECT id FROM bv_events.dead_letters ORDER BY id").await,
        [2]
    );
    let out = bv(&db, &["dead-letters", "drop", "--all"]).await;
    assert!(out.stdout.contains("Dropped 1 dead letter(s)"), "{out:?}");
    assert!(ids("SELECT id FROM bv_events.dead_letters")
        .await
        .is_empty());
    let out = bv(&db, &["dead-letters", "list"]).await;
    assert_eq!((out.code, out.stdout.as_str()), (Some(0), ""), "{out:?}");

    // Retry needs ids or --all (a usage error from the argument parser).
    let out = bv(&db, &["dead-letters", "retry"]).await;
    assert_ne!(out.code, Some(0), "{out:?}");
}

#[tokio::test]
async fn errors_are_one_line_exit_1_and_change_nothing() {
    let (db, client) = seeded("errors", 4).await;
    subscribe(&client, "projector", &["com.bitvelocity.product.*"], 4).await;
    subscribe(&client, "orders", &[ORDER], 4).await;

    bv(&db, &["replay", "nosuch", "--from-offset", "1"])
        .await
        .assert_error(&["no subscription named `nosuch`; known subscriptions: orders, projector"]);
    assert_eq!(position(&client, "projector").await, (Some(4), 4));
    assert_eq!(position(&client, "orders").await, (Some(4), 4));
    bv(&db, &["dead-letters", "list", "--subscription", "nosuch"])
        .await
        .assert_error(&["no subscription named `nosuch`"]);

    // No address anywhere.
    let empty = tempfile::tempdir().unwrap();
    run_in(empty.path(), &["list"], &[]).await.assert_error(&[
        "no events database",
        "--database",
        "BV_EVENTS_DATABASE",
    ]);

    // A database that does not exist; a password is never shown.
    let missing = "postgres://postgres:hunter2@127.0.0.1:5432/bv_pg_no_such_db?sslmode=disable";
    let out = run_in(empty.path(), &["list", "--database", missing], &[]).await;
    out.assert_error(&[
        "cannot connect to postgres://postgres@127.0.0.1:5432/bv_pg_no_such_db",
        "does not exist",
    ]);
    assert!(!out.stderr.contains("hunter2"), "{out:?}");
    run_in(
        empty.path(),
        &["list"],
        &[(
            "BV_EVENTS_DATABASE",
            "postgres://u@127.0.0.1/db?sslmode=require",
        )],
    )
    .await
    .assert_error(&["sslmode=require"]);

    // A database without the schema.
    let bare = TestDb::new("bare").await;
    bv(&bare, &["list"])
        .await
        .assert_error(&["no bv_events schema", "bv events init"]);
    bv(&bare, &["replay", "projector", "--from-offset", "1"])
        .await
        .assert_error(&["no bv_events schema"]);

    // init is idempotent and keeps the rows.
    let out = bv(&db, &["init"]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(
        count(&client, "SELECT count(*) FROM bv_events.outbox").await,
        4
    );
    assert_eq!(position(&client, "projector").await, (Some(4), 4));
}

#[tokio::test]
async fn the_address_comes_from_the_manifest_when_not_given() {
    let (db, client) = seeded("manifest", 3).await;
    subscribe(&client, "projector", &["com.bitvelocity.product.*"], 0).await;
    let dir = tempfile::tempdir().unwrap();
    let manifest = |variable: &str| {
        format!(
            r#"spin_manifest_version = 2
[application]
name = "events"
[application.trigger.postgres]
address = "{{{{ events_db }}}}"
[variables]
events_db = {variable}
"#
        )
    };
    std::fs::write(
        dir.path().join("spin.toml"),
        manifest(&format!("{{ default = \"{}\" }}", db.url())),
    )
    .unwrap();

    // spin.toml in the current directory, -f with the directory, -f with the file.
    let dir_arg = dir.path().to_str().unwrap().to_string();
    let file_arg = dir.path().join("spin.toml").to_str().unwrap().to_string();
    let elsewhere = tempfile::tempdir().unwrap();
    for (cwd, args) in [
        (dir.path(), vec!["list", "--json"]),
        (elsewhere.path(), vec!["list", "--json", "-f", &dir_arg]),
        (
            elsewhere.path(),
            vec!["--from", &file_arg, "list", "--json"],
        ),
    ] {
        let out = run_in(cwd, &args, &[]).await;
        assert_eq!(out.code, Some(0), "{args:?}: {out:?}");
        assert_eq!(out.json()[0]["lag"], 2, "{out:?}");
    }

    // SPIN_VARIABLE_<NAME> wins over the default, as in `bv up`.
    run_in(
        dir.path(),
        &["list"],
        &[(
            "SPIN_VARIABLE_EVENTS_DB",
            "postgres://postgres@127.0.0.1:5432/bv_pg_from_env?sslmode=disable",
        )],
    )
    .await
    .assert_error(&["bv_pg_from_env", "does not exist"]);
    // --database (or BV_EVENTS_DATABASE) wins over the manifest.
    let out = run_in(
        dir.path(),
        &["list", "--json"],
        &[
            ("SPIN_VARIABLE_EVENTS_DB", "postgres://nowhere/x"),
            ("BV_EVENTS_DATABASE", &db.url()),
        ],
    )
    .await;
    assert_eq!(out.code, Some(0), "{out:?}");

    // A variable without a value.
    std::fs::write(
        dir.path().join("spin.toml"),
        manifest("{ required = true }"),
    )
    .unwrap();
    run_in(dir.path(), &["list"], &[]).await.assert_error(&[
        "application.trigger.postgres.address",
        "`events_db`",
        "SPIN_VARIABLE_EVENTS_DB",
    ]);
}
