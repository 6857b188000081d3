//! The monitoring configuration in `infra/observability/` against the real
//! `bv`: Prometheus accepts the config and the rules (`promtool`), the alert
//! unit tests pass, and every metric the rules and the Grafana dashboards
//! query is one that a running `bv` (HTTP, Postgres, Redis, MQTT and cron
//! triggers, plus the cart component's own endpoint) actually exports, so a
//! renamed metric cannot silently leave a dashboard empty or an alert mute.
//! Business metrics (`bv_app_*`, reported by components as metric lines)
//! must be ones a `bv_service::telemetry` call in `components/` reports;
//! `component_logs` checks that such calls reach `/metrics`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::*;
use crate::pg_support::*;

const REDIS: &str = "redis://127.0.0.1:6379";

fn config_dir() -> PathBuf {
    repo_root().join("infra/observability")
}

/// Runs `promtool args…` in `infra/observability/`; panics with its output
/// unless it succeeds.
fn promtool(args: &[&str]) {
    let output = match Command::new("promtool")
        .args(args)
        .current_dir(config_dir())
        .output()
    {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "promtool is not installed; it checks infra/observability/. Install it with \
             `apt-get install -y prometheus` (Debian; infra/scripts/test.sh does this), \
             then `systemctl disable --now prometheus` if a service was started"
        ),
        Err(e) => panic!("running promtool: {e}"),
    };
    assert!(
        output.status.success(),
        "promtool {} failed:\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn prometheus_accepts_the_config_and_the_rules() {
    promtool(&["check", "config", "prometheus.yml"]);
    promtool(&["check", "rules", "recording-rules.yml", "alerts.yml"]);
    promtool(&["test", "rules", "tests/alerts.test.yml"]);
}

// --- Reading the configuration ----------------------------------------------

/// The PromQL expressions of a rules file: each `expr:` value, inline or a
/// `|`/`>` block (the files keep to these two forms).
fn rule_exprs(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let mut exprs = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let indent = line.len() - line.trim_start().len();
        i += 1;
        let Some(rest) = line.trim_start().strip_prefix("expr:") else {
            continue;
        };
        let rest = rest.trim();
        if !rest.starts_with('|') && !rest.starts_with('>') {
            exprs.push(rest.to_string());
            continue;
        }
        let mut block = String::new();
        while i < lines.len() {
            let next = lines[i];
            let next_indent = next.len() - next.trim_start().len();
            if !next.trim().is_empty() && next_indent <= indent {
                break;
            }
            block.push_str(next.trim());
            block.push('\n');
            i += 1;
        }
        exprs.push(block);
    }
    assert!(!exprs.is_empty(), "no `expr:` found in {}", path.display());
    exprs
}

/// The `record:` names a rules file defines.
fn recorded_names(path: &Path) -> BTreeSet<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- record:"))
        .map(|n| n.trim().to_string())
        .collect()
}

/// Every `"expr"` string anywhere in a dashboard.
fn dashboard_exprs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("expr", Value::String(e)) => out.push(e.clone()),
                    _ => dashboard_exprs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| dashboard_exprs(v, out)),
        _ => {}
    }
}

/// The identifiers of a PromQL expression outside string literals (metric
/// and recording-rule names, functions, label names, keywords).
fn identifiers(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = expr.chars().peekable();
    let mut current = String::new();
    while let Some(c) = chars.next() {
        if c == '"' || c == '\'' || c == '`' {
            // Skip the string literal (label values, Grafana's legend).
            let quote = c;
            while let Some(s) = chars.next() {
                if s == '\\' {
                    chars.next();
                } else if s == quote {
                    break;
                }
            }
        } else if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
            current.push(c);
            continue;
        }
        if !current.is_empty() {
            out.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// `le` values an expression selects (`le="0.25"`).
fn le_values(expr: &str) -> Vec<String> {
    expr.match_indices("le=\"")
        // `le` itself, not the end of another label name (`schedule="…"`).
        .filter(|(at, _)| {
            expr[..*at]
                .chars()
                .next_back()
                .is_none_or(|c| c == '{' || c == ',' || c.is_whitespace())
        })
        .map(|(at, m)| {
            let rest = &expr[at + m.len()..];
            rest[..rest.find('"').unwrap()].to_string()
        })
        .collect()
}

/// What the configuration refers to, by the file it is in.
struct Used {
    /// Exported metric names (`bv_…`, `cart_…`), with the file using them.
    metrics: BTreeMap<String, BTreeSet<String>>,
    /// Business metric names (`bv_app_…`), with the file using them.
    app: BTreeMap<String, BTreeSet<String>>,
    /// Recording-rule names (`a:b:c`), with the file using them.
    recorded: BTreeMap<String, BTreeSet<String>>,
    /// Histogram bucket bounds selected with `le="…"`.
    le: BTreeSet<String>,
}

fn used_by_config() -> Used {
    let dir = config_dir();
    let mut sources: Vec<(String, Vec<String>)> = Vec::new();
    for file in ["recording-rules.yml", "alerts.yml"] {
        sources.push((file.into(), rule_exprs(&dir.join(file))));
    }
    let mut dashboards: Vec<_> = std::fs::read_dir(dir.join("grafana"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    dashboards.sort();
    assert!(
        dashboards.len() >= 3,
        "expected the service, SLO and events dashboards in infra/observability/grafana"
    );
    for path in dashboards {
        let json: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let mut exprs = Vec::new();
        dashboard_exprs(&json, &mut exprs);
        let name = format!("grafana/{}", path.file_name().unwrap().to_string_lossy());
        assert!(!exprs.is_empty(), "{name} has no queries");
        sources.push((name, exprs));
    }
    let mut used = Used {
        metrics: BTreeMap::new(),
        app: BTreeMap::new(),
        recorded: BTreeMap::new(),
        le: BTreeSet::new(),
    };
    for (file, exprs) in sources {
        for expr in exprs {
            used.le.extend(le_values(&expr));
            for id in identifiers(&expr) {
                let target = if id.contains(':') {
                    &mut used.recorded
                } else if id.starts_with("bv_app_") {
                    &mut used.app
                } else if id.starts_with("bv_") || id.starts_with("cart_") {
                    &mut used.metrics
                } else {
                    continue;
                };
                target.entry(id).or_default().insert(file.clone());
            }
        }
    }
    used
}

// --- What components report -------------------------------------------------

/// Every `.rs` file under `dir` (build outputs excluded).
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n != "target") {
                rust_files(&path, out);
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The series names `bv` serves for the metrics the components report with
/// a literal name (`telemetry::counter("orders", …)` → `bv_app_orders_total`;
/// a histogram gives `_bucket`, `_sum` and `_count`), with the file.
fn reported_app_metrics() -> BTreeMap<String, PathBuf> {
    let mut files = Vec::new();
    rust_files(&repo_root().join("components"), &mut files);
    let mut names = BTreeMap::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for (call, suffixes) in [
            ("telemetry::counter(", &["_total"][..]),
            ("telemetry::gauge(", &[""][..]),
            ("telemetry::observe(", &["_bucket", "_sum", "_count"][..]),
        ] {
            for (at, _) in text.match_indices(call) {
                let rest = text[at + call.len()..].trim_start();
                let Some(literal) = rest.strip_prefix('"') else {
                    continue; // a name computed at run time (a test component)
                };
                let name = &literal[..literal.find('"').unwrap()];
                let name = name.strip_suffix("_total").unwrap_or(name);
                for suffix in suffixes {
                    names.insert(format!("bv_app_{name}{suffix}"), file.clone());
                }
            }
        }
    }
    names
}

#[test]
fn business_metrics_in_the_config_are_ones_components_report() {
    let used = used_by_config();
    let reported = reported_app_metrics();
    for expected in [
        "bv_app_orders_total",
        "bv_app_saga_compensations_total",
        "bv_app_checkout_saga_seconds_bucket",
    ] {
        assert!(
            reported.contains_key(expected),
            "{expected} is not reported by any component: {reported:?}"
        );
    }
    let unknown: Vec<_> = used
        .app
        .iter()
        .filter(|(name, _)| !reported.contains_key(*name))
        .collect();
    assert!(
        unknown.is_empty(),
        "infra/observability queries business metrics no component reports: {unknown:?}\nreported: {:?}",
        reported.keys().collect::<Vec<_>>()
    );
    assert!(
        used.app.contains_key("bv_app_orders_total"),
        "the saga alert and the checkout dashboard use bv_app_orders_total"
    );
}

// --- What bv exports ---------------------------------------------------------

/// Sample names and histogram `le` bounds of an exposition.
fn exposition(text: &str, names: &mut BTreeSet<String>, le: &mut BTreeSet<String>) {
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let end = line.find(['{', ' ']).unwrap_or(line.len());
        names.insert(line[..end].to_string());
        le.extend(le_values(line));
    }
}

/// HTTP (a probe that fails, traps and times out; an event producer; the
/// cart), the Postgres trigger (a consumer that dead-letters `reject-`
/// events), Redis, MQTT and cron: every trigger registers its metrics.
fn manifest(channel: &str, topic: &str, client_id: &str, prefix: &str) -> String {
    format!(
        r#"spin_manifest_version = 2
[application]
name = "observability"
[variables]
db_url = {{ required = true }}

[application.trigger.postgres]
address = "{{{{ db_url }}}}"
poll_interval_ms = 200
[application.trigger.redis]
address = "{REDIS}"
[application.trigger.mqtt]
address = "mqtt://127.0.0.1:1883?client_id={client_id}"
username = ""
password = ""
keep_alive_interval = "5"

[[trigger.http]]
route = "/api/probe/..."
component = "probe"
[[trigger.http]]
route = "/api/carts/..."
component = "cart"
[[trigger.http]]
route = "/products"
component = "producer"
[[trigger.postgres]]
component = "consumer"
events = ["com.bitvelocity.product.*"]
max_attempts = 2
retry_initial_ms = 50
retry_max_ms = 100
[[trigger.redis]]
channel = "{channel}"
component = "redis-handler"
[[trigger.mqtt]]
component = "mqtt-handler"
topic = "{topic}"
qos = "1"
[[trigger.cron]]
component = "ticker"
cron_expression = "*/1 * * * * *"

[component.probe]
source = "{{probe}}"
[component.probe.tool.bv]
request_timeout_ms = 300

[component.cart]
source = "{{wasm:cart}}"
allowed_outbound_hosts = ["{REDIS}", "http://product.spin.internal"]
key_value_stores = ["default"]
[component.cart.variables]
redis_url = "{REDIS}"
cart_ttl_seconds = "60"
cart_key_prefix = "{prefix}"
product_cache_ttl_seconds = "60"

[component.producer]
source = "{{wasm:event-producer}}"
allowed_outbound_hosts = ["postgres://127.0.0.1:5432"]
[component.producer.variables]
db_url = "{{{{ db_url }}}}"

[component.consumer]
source = "{{wasm:event-consumer}}"
allowed_outbound_hosts = ["postgres://127.0.0.1:5432"]
[component.consumer.variables]
db_url = "{{{{ db_url }}}}"

[component.redis-handler]
source = "{{wasm:redis-handler}}"
allowed_outbound_hosts = ["{REDIS}"]
[component.redis-handler.variables]
redis_address = "{REDIS}"

[component.mqtt-handler]
source = "{{wasm:mqtt-handler}}"
allowed_outbound_hosts = ["mqtt://127.0.0.1:1883"]
[component.mqtt-handler.variables]
mqtt_address = "mqtt://127.0.0.1:1883"

[component.ticker]
source = "{{wasm:cron-probe}}"
"#
    )
}

fn product(id: &str, name: &str) -> Value {
    json!({
        "productId": id,
        "sku": format!("SKU-{id}"),
        "name": name,
        "price": { "amount": 1299, "currency": "EUR" }
    })
}

#[tokio::test]
async fn rules_and_dashboards_query_only_metrics_bv_exports() {
    let used = used_by_config();

    let db = TestDb::new("observability").await;
    let channel = crate::mqtt::support::unique("obs-redis");
    let topic = crate::mqtt::support::unique("obs-mqtt");
    let client_id = crate::mqtt::support::unique("obs-client");
    let prefix = format!("{}:", crate::mqtt::support::unique("obs-cart"));
    let app = spawn_app_with(
        &manifest(&channel, &topic, &client_id, &prefix),
        Spawn {
            env: vec![("SPIN_VARIABLE_DB_URL".into(), db.url())],
            ..Default::default()
        },
    )
    .await;

    // Traffic that touches every family: families without a sample yet are
    // not in the exposition at all.
    assert_eq!(app.get("/api/probe/status/503").await.status, 503);
    app.get("/api/probe/panic").await;
    assert_eq!(app.get("/api/probe/loop").await.status, 504);
    let reply = app
        .send(
            "POST",
            "/products",
            json!({ "products": [product("o1", "mug"), product("o2", "reject-plate")] })
                .to_string(),
        )
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    let mut redis = redis::Client::open(REDIS)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .expect("Redis on 127.0.0.1:6379 (run infra/scripts/services.sh)");

    let cart = app.get("/api/carts/metrics").await;
    assert_eq!(cart.status, 200, "{}", cart.text());

    let mut exported = BTreeSet::new();
    let mut buckets = BTreeSet::new();
    exposition(&cart.text(), &mut exported, &mut buckets);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut missing: Vec<&String>;
    loop {
        // Repeated: the subscribers may not be listening yet.
        crate::mqtt::support::publish(&topic, "hello", rumqttc::QoS::AtLeastOnce).await;
        let _: i64 = redis::cmd("PUBLISH")
            .arg(&channel)
            .arg("hello")
            .query_async(&mut redis)
            .await
            .unwrap();
        let metrics = app.admin_get("/metrics").await.text();
        exposition(&metrics, &mut exported, &mut buckets);
        missing = used
            .metrics
            .keys()
            .filter(|m| !exported.contains(*m))
            .collect();
        if missing.is_empty() || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let report: Vec<String> = missing
        .iter()
        .map(|m| format!("  {m} (used in {:?})", used.metrics[*m]))
        .collect();
    assert!(
        report.is_empty(),
        "infra/observability queries metrics bv does not export:\n{}\nexported:\n  {}",
        report.join("\n"),
        exported.iter().cloned().collect::<Vec<_>>().join("\n  ")
    );

    // Recording rules used anywhere are defined.
    let dir = config_dir();
    let defined = recorded_names(&dir.join("recording-rules.yml"));
    let undefined: Vec<_> = used
        .recorded
        .iter()
        .filter(|(name, _)| !defined.contains(*name))
        .collect();
    assert!(
        undefined.is_empty(),
        "recording rules used but not defined in recording-rules.yml: {undefined:?}"
    );

    // Bucket bounds the SLIs select exist in bv's histograms.
    let unknown: Vec<_> = used.le.difference(&buckets).collect();
    assert!(
        unknown.is_empty(),
        "le bounds not in bv's histograms: {unknown:?} (buckets: {buckets:?})"
    );
}

#[test]
fn alert_thresholds_follow_the_slo_targets() {
    let dir = config_dir();
    let targets = std::fs::read_to_string(dir.join("sli-targets.yaml")).unwrap();
    let alerts = std::fs::read_to_string(dir.join("alerts.yml")).unwrap();
    let objectives: Vec<&str> = targets
        .lines()
        .filter_map(|l| l.trim().strip_prefix("objective:"))
        .map(str::trim)
        .collect();
    assert_eq!(
        objectives.len(),
        3,
        "availability, latency and event delivery objectives"
    );
    for objective in objectives {
        assert!(
            alerts.contains(&format!("(1 - {objective})")),
            "sli-targets.yaml has objective {objective}, which no alert in alerts.yml uses"
        );
    }
    for (burn, name) in [("14.4", "FastBurn"), ("6", "SlowBurn")] {
        assert!(
            alerts.contains(&format!("({burn} * (1 - 0.999))"))
                && alerts.contains(&format!("({burn} * (1 - 0.99))")),
            "{name}: burn rate {burn}x missing for an SLO"
        );
    }
}
