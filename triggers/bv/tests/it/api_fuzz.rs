//! An API fuzz run from the OpenAPI document: schemathesis generates
//! requests for every operation of `docs/openapi.json` and sends them to
//! the whole application (the root `spin.toml`, on a scratch database).
//!
//! Two runs, each with a fixed seed and a bounded number of cases per
//! operation:
//!
//! 1. **Negative**: only requests that break the document (wrong types,
//!    missing or extra members, out-of-range values, unknown methods…),
//!    once with a customer's token and once with an administrator's. Every
//!    answer must be a 4xx, never a 5xx, and the state the application
//!    keeps — every table of every schema of its database, its Redis keys,
//!    its key-value store — must be the same afterwards as before: a
//!    rejected request changes nothing.
//! 2. **Positive**: requests the document allows, with an administrator's
//!    token. No answer may be a 5xx, and every answer must be one the
//!    document describes (status, content type, body schema).
//!
//! Nothing the application keeps is left out of the comparison: once the
//! warm-up's events have reached their consumers, no table, key or entry
//! of it changes by itself.
//!
//! schemathesis is a Python tool: the test installs the pinned version
//! into a virtual environment under `$HOME/.cache/bitvelocity` on first
//! use (from PyPI) and fails if it cannot. Each run's reports (JUnit, JSON
//! and a HAR record of every exchange) stay under `api-fuzz/` in Cargo's
//! scratch directory (`target/tmp`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::auth_support::{self, admin};
use crate::harness::*;
use crate::openapi::{document_path, root_manifest_for};
use crate::pg_support::*;
use crate::redis::redis_shared_lock;

/// The schemathesis release the run is written against: its CLI options,
/// its report formats and the order its generator draws cases in (so the
/// seed picks the same cases) all belong to a version.
const SCHEMATHESIS_VERSION: &str = "4.32.5";

/// The seed of every run, so that CI sends the same cases every time.
const SEED: &str = "20240517";

/// Cases per operation and run. With 47 operations this keeps the whole
/// test to a minute or two on a 2-core machine.
const NEGATIVE_EXAMPLES: &str = "25";
const POSITIVE_EXAMPLES: &str = "25";

/// A run that takes longer than this is stopped and fails.
const RUN_DEADLINE: Duration = Duration::from_secs(300);

const REDIS: &str = "redis://127.0.0.1:6379";

/// The customer whose token the negative run uses, and who owns the cart
/// and order the warm-up makes (so that the fuzzed cart and order requests
/// meet real records).
const CUSTOMER: &str = "fuzz-customer";

/// A demo catalogue product (`components/product/src/migrations.rs`).
const DEMO_MUG: &str = "5eed0000-0000-4000-8000-000000000001";
const DEMO_TEA: &str = "5eed0000-0000-4000-8000-000000000005";

/// Operations left out of the positive run, with why. (The negative run
/// takes every operation: a rejected request may not switch anything.)
const POSITIVE_EXCLUDED: &[(&str, &str)] = &[
    // A valid `{"on": true}` puts the payment processor into its outage
    // mode, in which payment and checkout answer 503 `payment-outage` as
    // documented; the other operations' cases would then fail the no-5xx
    // check for a state this run made on purpose.
    (
        "setPaymentOutage",
        "switches the simulated processor to its documented 503 outage mode",
    ),
    STREAMS[0],
    STREAMS[1],
    STREAMS[2],
];

/// The live streams, left out of every run: schemathesis reads an answer
/// whole, and a stream that may go on for ever would only time out.
/// `commerce_order` and `commerce_inventory` test them.
const STREAMS: &[(&str, &str)] = &[
    (
        "streamOrderEvents",
        "a live event stream never ends by itself",
    ),
    ("streamStock", "a live event stream never ends by itself"),
    (
        "streamFlashSale",
        "a live event stream lasts as long as its sale",
    ),
];

/// The negative runs' hooks: they send only cases that break the
/// document. In negative mode schemathesis still sends some valid cases
/// (the documented examples, and generated cases in which no invalid part
/// survived), marked as positive in their metadata: those are accepted
/// and change state as any valid request does. And a malformed
/// `Content-Type` on an operation that takes no content is left out: the
/// header describes content that is not there (RFC 9110 §8.3), so
/// ignoring it is right, and the request is otherwise valid.
const NEGATIVE_ONLY_HOOKS: &str = r#"
import schemathesis
from schemathesis.core import NOT_SET
from schemathesis.generation import GenerationMode


@schemathesis.hook
def filter_case(context, case):
    meta = case.meta
    if meta is None or meta.generation.mode != GenerationMode.NEGATIVE:
        return False
    data = meta.phase.data
    if getattr(data, "parameter", None) == "Content-Type" and case.body is NOT_SET:
        return False
    return True
"#;

/// The virtual environment schemathesis lives in.
fn venv_dir() -> PathBuf {
    let home =
        std::env::var_os("HOME").expect("HOME is not set: no place for the schemathesis venv");
    PathBuf::from(home).join(".cache/bitvelocity/venv-schemathesis")
}

/// The `st` executable of [`SCHEMATHESIS_VERSION`], installed on first
/// use. Once per process (a `OnceLock`) and once per machine at a time
/// (an exclusive lock on a file next to the venv, for concurrent test
/// runs). Panics, with pip's output, when it cannot be installed.
fn schemathesis() -> &'static Path {
    static ST: OnceLock<PathBuf> = OnceLock::new();
    ST.get_or_init(|| {
        let venv = venv_dir();
        let st = venv.join("bin/st");
        std::fs::create_dir_all(venv.parent().unwrap()).unwrap();
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(venv.with_extension("lock"))
            .unwrap();
        lock.lock().unwrap();
        let wanted = format!("st, version {SCHEMATHESIS_VERSION}");
        let installed = || {
            Command::new(&st)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).trim() == wanted)
        };
        if !installed() {
            eprintln!(
                "api_fuzz: installing schemathesis {SCHEMATHESIS_VERSION} into {}",
                venv.display()
            );
            if !venv.join("bin/python").exists() {
                run_install_step(Command::new("python3").arg("-m").arg("venv").arg(&venv));
            }
            run_install_step(
                Command::new(venv.join("bin/python"))
                    .args(["-m", "pip", "install", "--disable-pip-version-check"])
                    .arg(format!("schemathesis=={SCHEMATHESIS_VERSION}")),
            );
            assert!(
                installed(),
                "schemathesis {SCHEMATHESIS_VERSION} was installed into {}, but `st --version` does not say so",
                venv.display()
            );
            eprintln!("api_fuzz: schemathesis {SCHEMATHESIS_VERSION} installed");
        }
        st
    })
}

fn run_install_step(cmd: &mut Command) {
    let shown = format!("{cmd:?}");
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("installing schemathesis: cannot run {shown}: {e}"));
    assert!(
        out.status.success(),
        "installing schemathesis: {shown} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One `st run`.
struct Run<'a> {
    /// For the messages and the report files.
    name: &'a str,
    /// `negative` or `positive`.
    mode: &'a str,
    /// schemathesis' test phases: the stateful one follows links between
    /// operations with valid data, so neither run takes it.
    phases: &'a str,
    /// A schemathesis hooks module for the run, if any.
    hooks: Option<&'a str>,
    checks: &'a str,
    /// The `authorization` header every request carries.
    authorization: &'a str,
    max_examples: &'a str,
    /// `(operationId, reason)` of the operations left out.
    excluded: &'a [(&'a str, &'a str)],
}

/// What a run reported.
struct Outcome {
    /// schemathesis' JSON run report.
    report: Value,
    /// `(operation, failure or error text)` from its JUnit report.
    failures: Vec<(String, String)>,
    /// Its exit code.
    code: Option<i32>,
    /// What it printed.
    output: String,
    /// The HAR record of every request and answer.
    har: Value,
}

impl Run<'_> {
    /// Runs schemathesis against `base` (`http://host:port`) in `dir`.
    fn run(&self, st: &Path, base: &str, dir: &Path) -> Outcome {
        let dir = dir.join(self.name);
        std::fs::create_dir_all(&dir).unwrap();
        // Only the checks' settings that differ from schemathesis' defaults:
        // a request that breaks the document is rejected with a 4xx — any
        // 4xx (412, 413 and 428 are rejections too), never a 5xx.
        let config = dir.join("schemathesis.toml");
        std::fs::write(
            &config,
            "[checks.negative_data_rejection]\nexpected-statuses = [\"4XX\"]\n",
        )
        .unwrap();
        let junit = dir.join("junit.xml");
        let report = dir.join("report.json");
        let har = dir.join("requests.har");
        let output = std::fs::File::create(dir.join("output.txt")).unwrap();
        let mut cmd = Command::new(st);
        cmd.current_dir(&dir)
            .arg("--config-file")
            .arg(&config)
            .arg("run")
            .arg(document_path())
            .args(["--url", base])
            .args(["--mode", self.mode])
            .args(["--phases", self.phases])
            .args(["--checks", self.checks])
            .args(["--max-examples", self.max_examples])
            .args(["--seed", SEED])
            // No example database: every run starts from the seed alone,
            // not from what an earlier run on this machine found.
            .args(["--generation-database", "none"])
            // One worker: the cases go in the same order every time.
            .args(["--workers", "1"])
            .args(["--request-timeout", "10"])
            // `too_slow` depends on the machine's load, and
            // `filter_too_much` trips where a negative value for a
            // parameter is mostly filtered out (a UUID path segment must
            // stay a valid path segment): fewer cases for that operation,
            // not a fault of the API.
            .args(["--suppress-health-check", "too_slow,filter_too_much"])
            .args(["--include-path-regex", "^/api/"])
            .args(["-H", &format!("Authorization: {}", self.authorization)])
            .args(["--report", "junit,json,har"])
            .arg("--report-junit-path")
            .arg(&junit)
            .arg("--report-json-path")
            .arg(&report)
            .arg("--report-har-path")
            .arg(&har)
            // The failures show the requests as sent: the tokens and
            // passwords here are the test's own.
            .args(["--output-sanitize", "false", "--no-color"])
            .stdin(Stdio::null())
            .stdout(Stdio::from(output.try_clone().unwrap()))
            .stderr(Stdio::from(output));
        for (operation, _reason) in self.excluded {
            cmd.args(["--exclude-operation-id", operation]);
        }
        if let Some(hooks) = self.hooks {
            let path = dir.join("hooks.py");
            std::fs::write(&path, hooks).unwrap();
            cmd.env("SCHEMATHESIS_HOOKS", path);
        }
        eprintln!("api_fuzz: {} run: {cmd:?}", self.name);
        let started = Instant::now();
        let mut child = cmd.spawn().expect("starting schemathesis");
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if started.elapsed() > RUN_DEADLINE {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "the {} run took over {RUN_DEADLINE:?}; its output so far:\n{}",
                    self.name,
                    std::fs::read_to_string(dir.join("output.txt")).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        eprintln!(
            "api_fuzz: {} run took {:.1} s ({status})",
            self.name,
            started.elapsed().as_secs_f64()
        );
        let output = std::fs::read_to_string(dir.join("output.txt")).unwrap_or_default();
        let read_json = |path: &Path| -> Value {
            let text = std::fs::read_to_string(path).unwrap_or_else(|e| {
                panic!(
                    "the {} run wrote no {} ({e}); its output:\n{output}",
                    self.name,
                    path.display()
                )
            });
            serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
        };
        let report = read_json(&report);
        let har = read_json(&har);
        let junit = std::fs::read_to_string(&junit).unwrap_or_else(|e| {
            panic!(
                "the {} run wrote no JUnit report ({e}); its output:\n{output}",
                self.name
            )
        });
        Outcome {
            report,
            failures: junit_failures(&junit),
            code: status.code(),
            output,
            har,
        }
    }
}

impl Outcome {
    /// Panics, naming every failing operation and the request that made
    /// it fail, unless the run tested every operation and found nothing.
    fn assert_clean(&self, name: &str, app: &TestApp) {
        let tested = self.report["operations"]["tested"].as_u64().unwrap_or(0);
        let selected = self.report["operations"]["selected"].as_u64().unwrap_or(0);
        let generated = self.report["test_cases"]["generated"].as_u64().unwrap_or(0);
        let complete = self.report["complete"] == true;
        let clean = self.code == Some(0)
            && self.failures.is_empty()
            && self.report["failures"]
                .as_array()
                .is_some_and(Vec::is_empty)
            && self.report["errors"].as_array().is_some_and(Vec::is_empty);
        if clean && complete && tested == selected && selected > 0 && generated > 0 {
            return;
        }
        let mut message = format!(
            "the {name} fuzz run failed: exit {:?}, {tested} of {selected} operations tested, \
             {generated} cases, complete: {complete}\n",
            self.code
        );
        for (operation, text) in &self.failures {
            message.push_str(&format!("\n=== {operation}\n{}\n", clip(text, 4000)));
        }
        if self.failures.is_empty() {
            message.push_str(&format!(
                "\nschemathesis' output:\n{}\n",
                clip(&self.output, 20000)
            ));
        }
        message.push_str(&format!(
            "\nbv's last warnings and errors:\n{}",
            warnings(&app.log(), 40)
        ));
        panic!("{message}");
    }

    /// `METHOD url → status` of every exchange in the HAR record whose
    /// status is one of `statuses`.
    fn answered(&self, statuses: impl Fn(u64) -> bool) -> Vec<String> {
        self.har["log"]["entries"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|entry| {
                let status = entry["response"]["status"].as_u64().unwrap_or(0);
                statuses(status).then(|| {
                    format!(
                        "{} {} → {status}",
                        entry["request"]["method"].as_str().unwrap_or("?"),
                        entry["request"]["url"].as_str().unwrap_or("?")
                    )
                })
            })
            .collect()
    }

    /// How many exchanges the HAR record holds.
    fn requests(&self) -> usize {
        self.har["log"]["entries"].as_array().map_or(0, Vec::len)
    }
}

/// `(testcase name, text)` of every `<failure>` and `<error>` in a JUnit
/// report.
fn junit_failures(xml: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find("<testcase ") {
        rest = &rest[start..];
        let head_end = rest.find('>').unwrap_or(rest.len());
        let name = attribute(&rest[..head_end], "name").unwrap_or_default();
        let end = if rest[..head_end].ends_with('/') {
            head_end
        } else {
            rest.find("</testcase>").unwrap_or(rest.len())
        };
        let body = &rest[head_end..end];
        for tag in ["failure", "error"] {
            let mut inner = body;
            while let Some(at) = inner.find(&format!("<{tag}")) {
                inner = &inner[at..];
                let open_end = inner.find('>').unwrap_or(inner.len());
                let message = attribute(&inner[..open_end], "message").unwrap_or_default();
                let close = inner.find(&format!("</{tag}>")).unwrap_or(inner.len());
                let text = if inner[..open_end].ends_with('/') {
                    String::new()
                } else {
                    unescape(&inner[(open_end + 1).min(close)..close])
                };
                out.push((name.clone(), format!("[{tag} {message}]\n{text}")));
                inner = &inner[open_end.max(1)..];
            }
        }
        rest = &rest[end.max(1)..];
    }
    out
}

fn attribute(tag: &str, name: &str) -> Option<String> {
    let at = tag.find(&format!(" {name}=\""))? + name.len() + 3;
    let len = tag[at..].find('"')?;
    Some(unescape(&tag[at..at + len]))
}

fn unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&#10;", "\n")
        .replace("&amp;", "&")
}

fn clip(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut cut = max;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}\n… ({} more bytes)", &text[..cut], text.len() - cut)
}

/// `items`, one per indented line, or `none`.
fn listed(items: &[String]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items.join("\n  ")
    }
}

/// The last `lines` lines of bv's log at level WARN or ERROR.
fn warnings(log: &str, lines: usize) -> String {
    let all: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("\"level\":\"WARN\"") || l.contains("\"level\":\"ERROR\""))
        .collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Everything the application keeps: every row of every table of every
/// schema of its database, its Redis keys (under the test's prefix) and
/// its key-value stores.
#[derive(Debug, PartialEq)]
struct State {
    /// `schema.table` → its rows as text, sorted.
    tables: BTreeMap<String, Vec<String>>,
    /// key → (type and content, milliseconds left to live or -1).
    redis: BTreeMap<String, (String, i64)>,
    /// `file: table` → its rows, sorted.
    key_value: BTreeMap<String, Vec<String>>,
}

/// Reads [`State`]. Nothing is skipped: a table that changed without a
/// request (an event delivered late) shows as a difference, and
/// [`settled_state`] waits for those.
async fn state(db: &TestDb, redis_prefix: &str, state_dir: &Path) -> State {
    let client = db.client().await;
    let mut tables = BTreeMap::new();
    let names = client
        .query(
            "SELECT table_schema, table_name FROM information_schema.tables \
             WHERE table_type = 'BASE TABLE' \
               AND table_schema NOT IN ('pg_catalog', 'information_schema') \
             ORDER BY 1, 2",
            &[],
        )
        .await
        .unwrap();
    for row in names {
        let (schema, table): (String, String) = (row.get(0), row.get(1));
        let quoted = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
        let rows = client
            .query(
                &format!(
                    "SELECT t::text FROM {}.{} t ORDER BY 1",
                    quoted(&schema),
                    quoted(&table)
                ),
                &[],
            )
            .await
            .unwrap_or_else(|e| panic!("reading {schema}.{table}: {e}"));
        tables.insert(
            format!("{schema}.{table}"),
            rows.iter().map(|r| r.get::<_, String>(0)).collect(),
        );
    }

    let mut conn = redis::Client::open(REDIS)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{redis_prefix}*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut redis = BTreeMap::new();
    for key in keys {
        let kind: String = redis::cmd("TYPE")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        let content: Vec<String> = match kind.as_str() {
            "string" => vec![redis::cmd("GET")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .unwrap()],
            "hash" => redis::cmd("HGETALL")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .unwrap(),
            "list" => redis::cmd("LRANGE")
                .arg(&key)
                .arg(0)
                .arg(-1)
                .query_async(&mut conn)
                .await
                .unwrap(),
            "set" => redis::cmd("SMEMBERS")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .unwrap(),
            "zset" => redis::cmd("ZRANGE")
                .arg(&key)
                .arg(0)
                .arg(-1)
                .arg("WITHSCORES")
                .query_async(&mut conn)
                .await
                .unwrap(),
            "none" => continue, // expired between KEYS and TYPE
            other => panic!("Redis key {key} is a {other}, which the snapshot cannot read"),
        };
        let mut content = content;
        if kind == "hash" {
            // HGETALL's order is not stable: sort the field/value pairs.
            let mut pairs: Vec<String> = content
                .chunks(2)
                .map(|p| format!("{}={}", p[0], p.get(1).map_or("", String::as_str)))
                .collect();
            pairs.sort();
            content = pairs;
        } else if kind == "set" {
            content.sort();
        }
        let ttl: i64 = redis::cmd("PTTL")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        redis.insert(key, (format!("{kind} {content:?}"), ttl));
    }

    State {
        tables,
        redis,
        key_value: sqlite_rows(state_dir),
    }
}

/// Every row of every table of every SQLite file in bv's state directory
/// (the key-value stores), read with the venv's Python: the test crate
/// has no SQLite of its own.
fn sqlite_rows(state_dir: &Path) -> BTreeMap<String, Vec<String>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(state_dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|e| e == "db"));
    files.sort();
    if files.is_empty() {
        return BTreeMap::new();
    }
    let script = r#"
import json, sqlite3, sys
out = {}
for path in sys.argv[1:]:
    db = sqlite3.connect("file:" + path + "?mode=ro", uri=True)
    for (table,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"):
        rows = sorted(repr(r) for r in db.execute('SELECT * FROM "%s"' % table.replace('"', '""')))
        out[path.rsplit("/", 1)[-1] + ": " + table] = rows
print(json.dumps(out))
"#;
    let out = Command::new(venv_dir().join("bin/python"))
        .arg("-c")
        .arg(script)
        .args(&files)
        .output()
        .expect("running python to read the key-value store");
    assert!(
        out.status.success(),
        "reading {files:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// [`state`] once it stopped moving: read until two readings a second
/// apart agree (events from the warm-up reach their consumers, the
/// sweeper finishes), for up to 30 s.
async fn settled_state(db: &TestDb, redis_prefix: &str, state_dir: &Path) -> State {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = state(db, redis_prefix, state_dir).await;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = state(db, redis_prefix, state_dir).await;
        if differences(&last, &now).is_empty() {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "the state never settled:\n  {}",
            differences(&last, &now).join("\n  ")
        );
        last = now;
    }
}

/// What differs from `before` to `after`. A Redis key's time to live only
/// counts when it went up: it runs down by itself, and is set again only
/// by a write.
fn differences(before: &State, after: &State) -> Vec<String> {
    fn rows_diff(
        kind: &str,
        before: &BTreeMap<String, Vec<String>>,
        after: &BTreeMap<String, Vec<String>>,
        out: &mut Vec<String>,
    ) {
        let names: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
        for name in names {
            let (b, a) = (before.get(name), after.get(name));
            if b == a {
                continue;
            }
            let (b, a) = (
                b.cloned().unwrap_or_default(),
                a.cloned().unwrap_or_default(),
            );
            let removed: Vec<&String> = b.iter().filter(|r| !a.contains(r)).collect();
            let added: Vec<&String> = a.iter().filter(|r| !b.contains(r)).collect();
            out.push(format!(
                "{kind} {name}: {} rows before, {} after; gone: {:?}; new: {:?}",
                b.len(),
                a.len(),
                removed.iter().take(5).collect::<Vec<_>>(),
                added.iter().take(5).collect::<Vec<_>>()
            ));
        }
    }
    let mut out = Vec::new();
    rows_diff("table", &before.tables, &after.tables, &mut out);
    rows_diff("key-value", &before.key_value, &after.key_value, &mut out);
    let keys: BTreeSet<&String> = before.redis.keys().chain(after.redis.keys()).collect();
    for key in keys {
        match (before.redis.get(key), after.redis.get(key)) {
            (Some((b, b_ttl)), Some((a, a_ttl))) => {
                if a != b {
                    out.push(format!("Redis {key}: {b} became {a}"));
                } else if (*b_ttl < 0) != (*a_ttl < 0) || a_ttl > b_ttl {
                    out.push(format!(
                        "Redis {key}: its time to live went from {b_ttl} ms to {a_ttl} ms"
                    ));
                }
            }
            (b, a) => out.push(format!("Redis {key}: {b:?} became {a:?}")),
        }
    }
    out
}

/// Deletes the test's Redis keys at the end.
struct RedisKeys(String);

impl Drop for RedisKeys {
    fn drop(&mut self) {
        let pattern = format!("{}*", self.0);
        let _ = std::thread::spawn(move || {
            let mut conn = redis::Client::open(REDIS).ok()?.get_connection().ok()?;
            let keys: Vec<String> = redis::cmd("KEYS").arg(&pattern).query(&mut conn).ok()?;
            if !keys.is_empty() {
                let _: () = redis::cmd("DEL").arg(keys).query(&mut conn).ok()?;
            }
            Some(())
        })
        .join();
    }
}

/// Where the runs' reports go: `api-fuzz/<pid>` in Cargo's scratch
/// directory, kept after the test for a look at every exchange of a
/// failing run. Those of test processes that have ended go first.
fn reports_dir() -> PathBuf {
    let all = Path::new(env!("CARGO_TARGET_TMPDIR")).join("api-fuzz");
    for entry in std::fs::read_dir(&all).into_iter().flatten().flatten() {
        let pid = entry.file_name().to_string_lossy().into_owned();
        if !Path::new("/proc").join(&pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    all.join(std::process::id().to_string())
}

/// `section`'s header line in `manifest` followed by `line`: a variable
/// the root manifest leaves unset, set for this test.
fn set_variable(manifest: &str, section: &str, line: &str) -> String {
    let header = format!("[{section}]\n");
    assert!(
        manifest.contains(&header),
        "the root spin.toml has no [{section}] any more"
    );
    manifest.replacen(&header, &format!("{header}{line}\n"), 1)
}

/// Valid requests that bring every component's tables into being and give
/// the negative run real records to meet: the demo catalogue (and its
/// stock records), a registered account, a paid order, a cart with a line
/// in it, and the payment outage switch set.
async fn warm_up(app: &TestApp, db: &TestDb) {
    let json_type = ("content-type", "application/json");
    let customer = auth_support::customer(CUSTOMER);
    let call = |method: &'static str,
                path: String,
                headers: Vec<(&'static str, &'static str)>,
                body: String| async move {
        let r = request(app.addr, method, &path, &headers, body).await;
        (r.status, r.text(), r)
    };

    let (status, text, _) =
        call("GET", "/api/products?limit=5".into(), vec![], String::new()).await;
    assert_eq!(status, 200, "{text}");
    // The catalogue's product.created reach inventory-projector, which
    // opens the demo stock records.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let client = db.client().await;
        let stock = client
            .query_one("SELECT count(*) FROM inventory.stock", &[])
            .await
            .map_or(0, |r| r.get::<_, i64>(0));
        if stock >= 10 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no demo stock records:\n{}",
            app.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let password = "copper-kettle-lantern-97";
    crate::suite_secrets::used(password);
    let account = json!({ "email": "warm.up@example.com", "password": password }).to_string();
    let (status, text, _) = call(
        "POST",
        "/api/auth/register".into(),
        vec![json_type],
        account.clone(),
    )
    .await;
    assert_eq!(status, 201, "{text}");
    let (status, text, r) = call("POST", "/api/auth/login".into(), vec![json_type], account).await;
    assert_eq!(status, 200, "{text}");
    for token in ["accessToken", "refreshToken"] {
        crate::suite_secrets::used(r.json()[token].as_str().unwrap_or_default());
    }

    let line = |id: &str| json!({ "productId": id, "quantity": 2 }).to_string();
    let (status, text, _) = call(
        "POST",
        "/api/carts/me/items".into(),
        vec![customer, json_type],
        line(DEMO_MUG),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let (status, text, _) = call(
        "POST",
        "/api/orders".into(),
        vec![customer, json_type, ("idempotency-key", "fuzz-warm-up")],
        json!({ "card": { "token": "tok_visa" } }).to_string(),
    )
    .await;
    assert_eq!(status, 201, "checkout: {text}\n{}", app.log());
    let (status, text, _) = call(
        "POST",
        "/api/carts/me/items".into(),
        vec![customer, json_type],
        line(DEMO_TEA),
    )
    .await;
    assert_eq!(status, 200, "{text}");

    // A chat room, so that the chat's tables exist and hold something (no
    // message: its send-rate counter would expire during the run).
    let (status, text, _) = call(
        "POST",
        "/api/chat/rooms".into(),
        vec![customer, json_type],
        json!({ "kind": "group", "name": "Fuzz", "members": ["someone"] }).to_string(),
    )
    .await;
    assert_eq!(status, 201, "{text}");

    // The IoT tables (made by the first request that reaches the database)
    // and a device that holds something: a rejected request must not be
    // what creates them.
    let (status, text, _) = call(
        "POST",
        "/api/iot/device-types".into(),
        vec![admin(), json_type],
        json!({ "name": "fuzz-meter", "metrics": [{ "name": "level" }] }).to_string(),
    )
    .await;
    assert_eq!(status, 201, "{text}");
    let (status, text, _) = call(
        "POST",
        "/api/iot/devices".into(),
        vec![customer, json_type],
        json!({ "id": "fuzz-meter-1", "type": "fuzz-meter" }).to_string(),
    )
    .await;
    assert_eq!(status, 201, "{text}");

    // The payment processor's run-time outage switch, set (to off) in the
    // key-value store: no rejected request may flip it.
    let (status, text, _) = call(
        "POST",
        "/api/payments/admin/outage".into(),
        vec![admin(), json_type],
        json!({ "on": false }).to_string(),
    )
    .await;
    assert_eq!(status, 200, "{text}");
}

#[tokio::test]
async fn fuzzing_from_the_openapi_document_finds_no_5xx_and_rejected_requests_change_nothing() {
    let started = Instant::now();
    let st = tokio::task::spawn_blocking(schemathesis).await.unwrap();

    let _redis = redis_shared_lock();
    let db = TestDb::new("api_fuzz").await;
    let redis_prefix = format!("bv-it-fuzz-{}-", std::process::id());
    let _keys = RedisKeys(redis_prefix.clone());
    // The cart's and the order breakers' Redis keys under a prefix of the
    // test's own, so that the snapshot sees exactly this app's keys.
    let manifest = set_variable(
        &root_manifest_for(&db),
        "component.cart.variables",
        &format!("cart_key_prefix = \"{redis_prefix}cart:\""),
    );
    let manifest = set_variable(
        &manifest,
        "component.order.variables",
        &format!("breaker_key_prefix = \"{redis_prefix}breaker:\""),
    );
    let manifest = set_variable(
        &manifest,
        "component.chat.variables",
        &format!("chat_key_prefix = \"{redis_prefix}chat:\""),
    );
    // Failed logins are counted under a prefix of the run's own, outside
    // the snapshot's: the fuzzer's wrong passwords are expected to count.
    let manifest = set_variable(
        &manifest,
        "component.auth.variables",
        &format!(
            "login_key_prefix = \"bv-it-fuzz-login-{}:\"",
            std::process::id()
        ),
    );
    let app_dir = tempfile::tempdir().unwrap();
    let state_dir = app_dir.path().join(".spin");
    // A broker of its own: telemetry other tests publish on the machine's
    // Mosquitto would otherwise land in this database (parked) mid-run.
    let broker = crate::iot::PrivateMosquitto::start(false);
    let app = spawn_app_with(
        &manifest,
        Spawn {
            env: [
                ("SPIN_VARIABLE_DB_URL".into(), db.url()),
                ("SPIN_VARIABLE_MQTT_ADDRESS".into(), broker.address()),
            ]
            .into_iter()
            .chain(auth_support::env_with_signing_keys())
            .chain(crate::openapi::unlimited_env())
            .collect(),
            dir: Some(app_dir.path().to_path_buf()),
            ..Default::default()
        },
    )
    .await;
    let base = format!("http://{}", app.addr);
    let reports = reports_dir();

    warm_up(&app, &db).await;
    let before = settled_state(&db, &redis_prefix, &state_dir).await;
    assert!(
        before.tables.len() >= 10 && !before.redis.is_empty() && !before.key_value.is_empty(),
        "the warm-up left too little state to compare: {:?} tables, Redis {:?}, key-value {:?}",
        before.tables.keys().collect::<Vec<_>>(),
        before.redis.keys().collect::<Vec<_>>(),
        before.key_value.keys().collect::<Vec<_>>()
    );

    let customer = auth_support::customer(CUSTOMER).1;
    let negative_checks = "not_a_server_error,negative_data_rejection";
    let mut negative = Vec::new();
    for (name, authorization) in [
        ("negative-customer", customer),
        ("negative-admin", admin().1),
    ] {
        let run = Run {
            name,
            mode: "negative",
            // The examples phase sends the document's examples, all valid.
            phases: "coverage,fuzzing",
            hooks: Some(NEGATIVE_ONLY_HOOKS),
            checks: negative_checks,
            authorization,
            max_examples: NEGATIVE_EXAMPLES,
            excluded: STREAMS,
        };
        let base = base.clone();
        let dir = reports.clone();
        let outcome = tokio::task::spawn_blocking(move || run.run(st, &base, &dir))
            .await
            .unwrap();
        negative.push((name, outcome));
    }
    let after = settled_state(&db, &redis_prefix, &state_dir).await;
    for (name, outcome) in &negative {
        outcome.assert_clean(name, &app);
        eprintln!("api_fuzz: {name}: {} requests", outcome.requests());
    }
    // Every answer a 4xx, read from the record of the exchanges rather
    // than from schemathesis' check alone (which lets some answers pass
    // when it judges the invalid part could not have been seen).
    let not_rejected: Vec<String> = negative
        .iter()
        .flat_map(|(name, o)| {
            o.answered(|status| !(400..500).contains(&status))
                .into_iter()
                .map(move |r| format!("{name}: {r}"))
        })
        .collect();
    let changed = differences(&before, &after);
    assert!(
        changed.is_empty() && not_rejected.is_empty(),
        "requests that break the document:\n\
         answered with other than a 4xx:\n  {}\n\
         changed the state:\n  {}\n(every exchange: {}/negative-*/requests.har)",
        listed(&not_rejected),
        listed(&changed),
        reports.display()
    );

    let positive = Run {
        name: "positive",
        mode: "positive",
        phases: "examples,coverage,fuzzing",
        hooks: None,
        checks: "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
        authorization: admin().1,
        max_examples: POSITIVE_EXAMPLES,
        excluded: POSITIVE_EXCLUDED,
    };
    let dir = reports.clone();
    let outcome = tokio::task::spawn_blocking(move || positive.run(st, &base, &dir))
        .await
        .unwrap();
    outcome.assert_clean("positive", &app);
    let server_errors = outcome.answered(|status| status >= 500);
    assert!(
        server_errors.is_empty(),
        "the positive run's 5xx answers:\n  {}\n(every exchange: {}/positive/requests.har)",
        listed(&server_errors),
        reports.display()
    );
    eprintln!(
        "api_fuzz: positive: {} requests; the whole test took {:.1} s",
        outcome.requests(),
        started.elapsed().as_secs_f64()
    );
}
