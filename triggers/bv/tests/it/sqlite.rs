//! `spin:sqlite/sqlite`: the default database under the state directory,
//! named databases from the runtime config, access control, errors.

use serde_json::{json, Value as Json};

use crate::harness::*;

fn manifest(databases: &str) -> String {
    format!(
        r#"spin_manifest_version = 2
[application]
name = "sqlite"
[[trigger.http]]
route = "/..."
component = "probe"
[component.probe]
source = "{{wasm:redis-probe}}"
sqlite_databases = [{databases}]
"#
    )
}

async fn sql(app: &TestApp, db: &str, statement: &str, params: Json) -> (u16, Json) {
    let reply = app
        .send(
            "POST",
            "/sqlite",
            json!({"db": db, "sql": statement, "params": params}).to_string(),
        )
        .await;
    (reply.status, reply.json())
}

async fn ok(app: &TestApp, db: &str, statement: &str, params: Json) -> Json {
    let (status, body) = sql(app, db, statement, params).await;
    assert_eq!(status, 200, "{statement}: {body}");
    body
}

#[tokio::test]
async fn sqlite_every_value_type_round_trips() {
    let app = spawn_app(&manifest("\"default\"")).await;
    ok(
        &app,
        "default",
        "CREATE TABLE t (id INTEGER PRIMARY KEY, v ANY)",
        json!([]),
    )
    .await;
    let values = [
        json!({"int": i64::MIN}),
        json!({"int": i64::MAX}),
        json!({"real": -1.5e300}),
        json!({"text": "héllo, 世界"}),
        json!({"text": ""}),
        json!({"blob": [0, 1, 254, 255]}),
        json!({"blob": []}),
        json!({"null": null}),
    ];
    for (i, v) in values.iter().enumerate() {
        let out = ok(&app, "default", "INSERT INTO t (v) VALUES (?)", json!([v])).await;
        assert_eq!(out["last_insert_rowid"], i + 1, "{out}");
        assert_eq!(out["changes"], 1, "{out}");
    }
    let out = ok(
        &app,
        "default",
        "SELECT id, v FROM t ORDER BY id",
        json!([]),
    )
    .await;
    assert_eq!(out["columns"], json!(["id", "v"]));
    let got: Vec<Json> = out["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r[1].clone())
        .collect();
    assert_eq!(got, values);
    // Parameters of every type in one statement, and back as a row.
    let out = ok(
        &app,
        "default",
        "SELECT ?, ?, ?, ?, ?",
        json!([{"int": 7}, {"real": 0.25}, {"text": "x"}, {"blob": [9]}, {"null": null}]),
    )
    .await;
    assert_eq!(
        out["rows"],
        json!([[{"int": 7}, {"real": 0.25}, {"text": "x"}, {"blob": [9]}, {"null": null}]])
    );
    // changes counts rows of the last write on this connection.
    let out = ok(&app, "default", "DELETE FROM t WHERE id > 5", json!([])).await;
    assert_eq!(out["changes"], 3, "{out}");
    assert_eq!(out["rows"], json!([]));
}

#[tokio::test]
async fn sqlite_default_database_persists_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let spawn = || Spawn {
        dir: Some(dir.path().to_path_buf()),
        ..Default::default()
    };
    let mut app = spawn_app_with(&manifest("\"default\""), spawn()).await;
    ok(&app, "default", "CREATE TABLE kept (v TEXT)", json!([])).await;
    ok(
        &app,
        "default",
        "INSERT INTO kept VALUES (?)",
        json!([{"text": "still here"}]),
    )
    .await;
    assert_eq!(app.terminate().await, Some(0));
    assert!(
        dir.path().join(".spin/sqlite_db.db").exists(),
        "Spin's file name under the state directory"
    );
    let app = spawn_app_with(&manifest("\"default\""), spawn()).await;
    let out = ok(&app, "default", "SELECT v FROM kept", json!([])).await;
    assert_eq!(out["rows"], json!([[{"text": "still here"}]]));
}

#[tokio::test]
async fn sqlite_unlisted_database_is_access_denied() {
    let app = spawn_app(&manifest("")).await;
    let (status, body) = sql(&app, "default", "SELECT 1", json!([])).await;
    assert_eq!(
        (status, body),
        (500, json!({"error": "Error::AccessDenied"}))
    );
    let (status, body) = sql(&app, "other", "SELECT 1", json!([])).await;
    assert_eq!(
        (status, body),
        (500, json!({"error": "Error::AccessDenied"}))
    );
}

#[tokio::test]
async fn sqlite_errors_carry_sqlites_message() {
    let app = spawn_app(&manifest("\"default\"")).await;
    let (status, body) = sql(&app, "default", "SELEC 1", json!([])).await;
    assert_eq!(status, 500);
    let error = body["error"].as_str().unwrap();
    assert!(
        error.starts_with("Error::Io(") && error.contains("near \\\"SELEC\\\": syntax error"),
        "{error}"
    );
    let (_, body) = sql(&app, "default", "SELECT * FROM no_such_table", json!([])).await;
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("no such table: no_such_table"),
        "{body}"
    );
}

#[tokio::test]
async fn sqlite_named_database_from_runtime_config() {
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("data/analytics.db");
    let runtime_config = format!(
        "[sqlite_database.analytics]\ntype = \"spin\"\npath = \"{}\"\n\n[sqlite_database.scratch]\ntype = \"spin\"\n",
        db_path.display()
    );
    let app = spawn_app_with(
        &manifest("\"analytics\", \"scratch\""),
        Spawn {
            files: vec![("runtime-config.toml".into(), runtime_config)],
            args: vec![
                "--runtime-config-file".into(),
                "{dir}/runtime-config.toml".into(),
            ],
            ..Default::default()
        },
    )
    .await;
    ok(&app, "analytics", "CREATE TABLE e (n INTEGER)", json!([])).await;
    ok(&app, "analytics", "INSERT INTO e VALUES (42)", json!([])).await;
    assert!(db_path.exists(), "the configured path is used");
    // Read it back from outside bv: it really is that file.
    let conn = rusqlite_free_check(&db_path);
    assert!(conn, "analytics.db is a SQLite file");
    // No `path`: an in-memory database that lives as long as the app.
    ok(&app, "scratch", "CREATE TABLE s (v)", json!([])).await;
    ok(&app, "scratch", "INSERT INTO s VALUES (1)", json!([])).await;
    let out = ok(&app, "scratch", "SELECT count(*) FROM s", json!([])).await;
    assert_eq!(out["rows"], json!([[{"int": 1}]]));
    // `default` is not listed for this component.
    let (status, body) = sql(&app, "default", "SELECT 1", json!([])).await;
    assert_eq!(
        (status, body),
        (500, json!({"error": "Error::AccessDenied"}))
    );
}

/// Whether `path` starts with the SQLite file header.
fn rusqlite_free_check(path: &std::path::Path) -> bool {
    std::fs::read(path)
        .map(|b| b.starts_with(b"SQLite format 3\0"))
        .unwrap_or(false)
}
