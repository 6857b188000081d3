//! The OpenAPI document (`docs/openapi.json`) against what the application
//! really serves: the `api-docs` component serves it byte for byte; every
//! documented path is routed by the root `spin.toml` and every route is
//! documented; the document hangs together (references resolve, every
//! operation documents its problems); the problem kinds the code answers
//! are the ones it lists; and the parameterless GETs, called on the whole
//! application, answer statuses it documents.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use bv_routes::{RouteSpec, Router};
use serde_json::Value;

use crate::harness::*;
use crate::pg_support::*;
use crate::redis::redis_shared_lock;
use crate::repo_manifest::is_grpc_route;

/// The methods an OpenAPI path item may hold operations for.
const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// The platform database as the root `spin.toml` names it.
const PLATFORM_DB: &str = "postgres://postgres@127.0.0.1:5432/bitvelocity?sslmode=disable";

const PROBLEM_SCHEMA: &str = "#/components/schemas/Problem";
const PROBLEM_PREFIX: &str = "urn:bitvelocity:problem:";

pub(crate) fn document_path() -> PathBuf {
    repo_root().join("docs/openapi.json")
}

fn document_bytes() -> Vec<u8> {
    std::fs::read(document_path()).expect("reading docs/openapi.json")
}

fn document() -> Value {
    serde_json::from_slice(&document_bytes())
        .unwrap_or_else(|e| panic!("docs/openapi.json is not JSON: {e}"))
}

/// `(method, path, operation)` of every operation in the document.
fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("`paths` is an object") {
        for method in METHODS {
            if let Some(op) = item.get(method) {
                out.push((method.to_string(), path.clone(), op.clone()));
            }
        }
    }
    out
}

/// Follows `value`'s `$ref` (repeatedly) within `doc`.
fn resolve<'a>(doc: &'a Value, mut value: &'a Value) -> &'a Value {
    for _ in 0..16 {
        let Some(target) = value.get("$ref").and_then(Value::as_str) else {
            return value;
        };
        value = target
            .strip_prefix('#')
            .and_then(|pointer| doc.pointer(pointer))
            .unwrap_or_else(|| panic!("unresolved $ref {target}"));
    }
    panic!("$ref chain too long at {value}")
}

/// Whether `schema` is, or is built on (`allOf`/`anyOf`/`oneOf`, through
/// references), the schema at `target`.
fn built_on(doc: &Value, schema: &Value, target: &str) -> bool {
    if schema.get("$ref").and_then(Value::as_str) == Some(target) {
        return true;
    }
    let schema = resolve(doc, schema);
    ["allOf", "anyOf", "oneOf"].iter().any(|k| {
        schema[*k]
            .as_array()
            .is_some_and(|parts| parts.iter().any(|p| built_on(doc, p, target)))
    })
}

/// The root `spin.toml`'s HTTP routes, `(route, component)`; private
/// routes are `None`.
fn manifest_routes() -> Vec<(Option<String>, String)> {
    let path = repo_root().join("spin.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let manifest: toml::Table =
        toml::from_str(&text).unwrap_or_else(|e| panic!("{} does not parse: {e}", path.display()));
    let entries = manifest["trigger"]["http"]
        .as_array()
        .expect("spin.toml has [[trigger.http]] entries");
    entries
        .iter()
        .map(|entry| {
            let component = entry["component"].as_str().unwrap().to_string();
            let route = entry["route"].as_str().map(str::to_string);
            (route, component)
        })
        .collect()
}

/// `path` with every `{param}` segment replaced by a sample value, as a
/// client would send it.
fn concrete(path: &str) -> String {
    path.split('/')
        .map(|s| {
            if s.starts_with('{') && s.ends_with('}') {
                "sample-1"
            } else {
                s
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// The `{param}` names of a path template.
fn template_params(path: &str) -> BTreeSet<String> {
    path.split('/')
        .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn the_served_document_is_docs_openapi_json() {
    let app = spawn_app(
        r#"spin_manifest_version = 2
[application]
name = "api-docs"

[[trigger.http]]
route = "/api/openapi.json"
component = "api-docs"

[component.api-docs]
source = "{wasm:api-docs}"
"#,
    )
    .await;
    let reply = app.get("/api/openapi.json").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.headers["content-type"], "application/json");
    assert!(
        reply.body.as_ref() == document_bytes().as_slice(),
        "the served document differs from docs/openapi.json: rebuild the components"
    );
    let doc = reply.json();
    let version = doc["openapi"].as_str().unwrap_or_default();
    assert!(
        version.starts_with("3.1."),
        "openapi is {version:?}, not 3.1.x"
    );
    assert!(reply.headers.contains_key("cache-control"));
    let etag = reply.headers["etag"].to_str().unwrap().to_string();
    assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");

    let again = request(
        app.addr,
        "GET",
        "/api/openapi.json",
        &[("if-none-match", &etag)],
        "",
    )
    .await;
    assert_eq!(again.status, 304);
    assert!(again.body.is_empty());
    assert_eq!(again.headers["etag"].to_str().unwrap(), etag);

    let post = app.send("POST", "/api/openapi.json", "{}").await;
    assert_eq!(post.status, 405);
    assert_eq!(post.headers["content-type"], "application/problem+json");
    assert_eq!(post.headers["allow"], "GET, HEAD");
    assert_eq!(
        post.json()["type"],
        "urn:bitvelocity:problem:method-not-allowed"
    );
}

#[test]
fn every_path_is_routed_and_every_route_is_documented() {
    let doc = document();
    let routes = manifest_routes();
    let specs = routes.iter().map(|(route, component)| {
        let spec = match route {
            Some(r) => RouteSpec::parse(r).unwrap_or_else(|e| panic!("spin.toml: {e}")),
            None => RouteSpec::Private,
        };
        (spec, component.clone())
    });
    let router = Router::build("/", specs).unwrap_or_else(|e| panic!("spin.toml: {e}"));

    let mut unrouted = Vec::new();
    let mut documented_routes = BTreeSet::new();
    for path in doc["paths"].as_object().unwrap().keys() {
        match router.route(&concrete(path)) {
            Some(m) => {
                documented_routes.insert(m.raw_route.to_string());
            }
            None => unrouted.push(path.clone()),
        }
    }
    let undocumented: Vec<String> = routes
        .iter()
        .filter(|(_, component)| component != "hello")
        .filter_map(|(route, component)| {
            let route = route.as_ref().filter(|r| !is_grpc_route(r))?;
            (!documented_routes.contains(route)).then(|| format!("{route} (component {component})"))
        })
        .collect();
    assert!(
        unrouted.is_empty() && undocumented.is_empty(),
        "docs/openapi.json and spin.toml disagree:\n  \
         paths no [[trigger.http]] route serves: {unrouted:?}\n  \
         routes with no path in the document: {undocumented:?}"
    );
}

#[test]
fn references_resolve_and_every_operation_documents_its_problems() {
    let doc = document();
    let mut faults = Vec::new();

    // Every $ref points into this document, at something.
    fn refs(value: &Value, at: &str, out: &mut Vec<(String, String)>) {
        match value {
            Value::Object(map) => {
                for (k, v) in map {
                    if k == "$ref" {
                        out.push((at.to_string(), v.as_str().unwrap_or("").to_string()));
                    } else {
                        refs(v, &format!("{at}/{k}"), out);
                    }
                }
            }
            Value::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    refs(v, &format!("{at}/{i}"), out);
                }
            }
            _ => {}
        }
    }
    let mut all = Vec::new();
    refs(&doc, "", &mut all);
    for (at, target) in &all {
        let found = target
            .strip_prefix('#')
            .is_some_and(|pointer| doc.pointer(pointer).is_some());
        if !found {
            faults.push(format!("{at}: $ref {target:?} does not resolve"));
        }
    }
    if !faults.is_empty() {
        panic!("docs/openapi.json:\n  {}", faults.join("\n  "));
    }

    let mut operation_ids = BTreeMap::new();
    for (method, path, op) in operations(&doc) {
        let name = format!("{} {path}", method.to_uppercase());
        match op["operationId"].as_str() {
            Some(id) => {
                if let Some(other) = operation_ids.insert(id.to_string(), name.clone()) {
                    faults.push(format!("{name}: operationId {id} is also {other}'s"));
                }
            }
            None => faults.push(format!("{name}: no operationId")),
        }

        // At least one 4xx answer that is a problem.
        let responses = op["responses"].as_object().cloned().unwrap_or_default();
        let problem_4xx = responses.iter().any(|(status, response)| {
            let response = resolve(&doc, response);
            status.starts_with('4')
                && response["content"]["application/problem+json"]
                    .get("schema")
                    .is_some_and(|schema| built_on(&doc, schema, PROBLEM_SCHEMA))
        });
        if !problem_4xx {
            faults.push(format!(
                "{name}: no 4xx response with an application/problem+json Problem"
            ));
        }
        // Every problem answer (any status) is a Problem.
        for (status, response) in &responses {
            let response = resolve(&doc, response);
            if let Some(schema) = response["content"]["application/problem+json"].get("schema") {
                if !built_on(&doc, schema, PROBLEM_SCHEMA) {
                    faults.push(format!(
                        "{name}: the {status} problem is not built on Problem"
                    ));
                }
            }
        }

        // Path parameters: declared exactly as the template names them.
        let item = &doc["paths"][&path];
        let declared: BTreeSet<String> = [&item["parameters"], &op["parameters"]]
            .into_iter()
            .filter_map(Value::as_array)
            .flatten()
            .map(|p| resolve(&doc, p))
            .filter(|p| p["in"] == "path")
            .inspect(|p| {
                if p["required"] != true {
                    faults.push(format!(
                        "{name}: path parameter {} is not required",
                        p["name"]
                    ));
                }
            })
            .filter_map(|p| p["name"].as_str().map(str::to_string))
            .collect();
        let named = template_params(&path);
        if declared != named {
            faults.push(format!(
                "{name}: the template names {named:?}, the parameters declare {declared:?}"
            ));
        }
    }

    // The problem kinds: stable URNs with error statuses.
    let kinds = doc["x-problem-types"]
        .as_object()
        .expect("x-problem-types lists the problem kinds");
    for (uri, kind) in kinds {
        let ok_uri = uri.strip_prefix(PROBLEM_PREFIX).is_some_and(|k| {
            !k.is_empty()
                && k.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        });
        if !ok_uri {
            faults.push(format!(
                "x-problem-types: {uri} is not {PROBLEM_PREFIX}<kind>"
            ));
        }
        let statuses = kind["status"].as_array().cloned().unwrap_or_default();
        if statuses.is_empty()
            || !statuses
                .iter()
                .all(|s| s.as_u64().is_some_and(|s| (400..600).contains(&s)))
        {
            faults.push(format!(
                "x-problem-types: {uri} needs error statuses, has {statuses:?}"
            ));
        }
    }
    assert!(
        faults.is_empty(),
        "docs/openapi.json:\n  {}",
        faults.join("\n  ")
    );
}

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The source the HTTP API's problems come from: the HTTP components (not
/// the test components), `bv-service`, `bv-auth` and the runtime's HTTP
/// trigger.
fn problem_sources() -> Vec<PathBuf> {
    let root = repo_root();
    let mut files = Vec::new();
    for entry in std::fs::read_dir(root.join("components"))
        .unwrap()
        .flatten()
    {
        let name = entry.file_name();
        if entry.path().is_dir() && name != "target" && name != "testing" {
            rust_files(&entry.path().join("src"), &mut files);
        }
    }
    rust_files(&root.join("shared/service/src"), &mut files);
    rust_files(&root.join("shared/auth/src"), &mut files);
    rust_files(&root.join("shared/orders/src"), &mut files);
    rust_files(&root.join("triggers/trigger-http/src"), &mut files);
    files
}

/// `bv_service::ProblemKind`'s variants and the kinds they name, read from
/// its `problem_kinds!` table (`Variant => "kind",`).
fn problem_kind_table() -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(repo_root().join("shared/service/src/problem.rs")).unwrap();
    let table = text
        .split_once("problem_kinds! {")
        .expect("shared/service/src/problem.rs lists the kinds in `problem_kinds! {`")
        .1;
    let table = table.split_once("\n}").unwrap().0;
    table
        .lines()
        .filter_map(|line| {
            let (variant, kind) = line.trim().split_once(" => ")?;
            let kind = kind.trim_end_matches(',').trim_matches('"');
            Some((variant.to_string(), kind.to_string()))
        })
        .collect()
}

/// `(status, kind)` of every problem the source builds with a fixed kind:
/// `Problem::new(<status>, ProblemKind::<Variant>, …)` (or a literal kind),
/// bv-service's own `Self::new(…)` and the runtime's
/// `problem::response(<status>, "<kind>", …)`. The status is `None` when it
/// is not an integer literal.
fn fixed_kinds(
    text: &str,
    calls: &[&str],
    table: &BTreeMap<String, String>,
) -> Vec<(Option<u64>, String)> {
    let mut out = Vec::new();
    for call in calls {
        for (at, _) in text.match_indices(call) {
            let args = &text[at + call.len()..];
            let Some((status, rest)) = args.split_once(',') else {
                continue;
            };
            let rest = rest.trim_start();
            let kind = if let Some(literal) = rest.strip_prefix('"') {
                literal.split_once('"').map(|(kind, _)| kind.to_string())
            } else if let Some(variant) = rest.strip_prefix("ProblemKind::") {
                let variant: String = variant
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric())
                    .collect();
                Some(table.get(&variant).cloned().unwrap_or_else(|| {
                    panic!("ProblemKind::{variant} is not in the problem_kinds! table")
                }))
            } else {
                None
            };
            if let Some(kind) = kind {
                out.push((status.trim().parse().ok(), kind));
            }
        }
    }
    out
}

#[test]
fn the_problem_kinds_the_code_answers_are_listed() {
    let doc = document();
    let kinds = doc["x-problem-types"].as_object().unwrap();
    let root = repo_root();
    let table = problem_kind_table();
    let mut faults = BTreeSet::new();
    let mut all_text = String::new();
    for file in problem_sources() {
        let text = std::fs::read_to_string(&file).unwrap();
        let mut calls = vec!["Problem::new(", "problem::response("];
        if file.starts_with(root.join("shared/service")) {
            calls.push("Self::new(");
        }
        let shown = file.strip_prefix(&root).unwrap().display().to_string();
        for (status, kind) in fixed_kinds(&text, &calls, &table) {
            let uri = format!("{PROBLEM_PREFIX}{kind}");
            match kinds.get(&uri) {
                None => {
                    faults.insert(format!("{shown}: kind `{kind}` is not in x-problem-types"));
                }
                Some(listed) => {
                    let statuses = listed["status"].as_array().unwrap();
                    if let Some(status) = status {
                        if !statuses.iter().any(|s| s.as_u64() == Some(status)) {
                            faults.insert(format!(
                                "{shown}: kind `{kind}` is answered with {status}, x-problem-types lists {statuses:?}"
                            ));
                        }
                    }
                }
            }
        }
        // The table itself names every kind: it does not count as a use.
        let uses = text
            .lines()
            .filter(|line| !line.trim_start().ends_with("\",") || !line.contains(" => \""));
        for line in uses {
            all_text.push_str(line);
            all_text.push('\n');
        }
    }
    // And the other way round: every listed kind is still in the code (its
    // variant, or a literal somewhere for kinds built from a value, like
    // the payment declines).
    let variant_of: BTreeMap<&str, &str> = table
        .iter()
        .map(|(variant, kind)| (kind.as_str(), variant.as_str()))
        .collect();
    for uri in kinds.keys() {
        let kind = uri.trim_start_matches(PROBLEM_PREFIX);
        let by_variant = variant_of
            .get(kind)
            .is_some_and(|v| all_text.contains(&format!("ProblemKind::{v}")));
        if !by_variant && !all_text.contains(&format!("\"{kind}\"")) {
            faults.insert(format!(
                "x-problem-types lists `{kind}`, which no component answers any more"
            ));
        }
    }
    assert!(
        faults.is_empty(),
        "problem kinds out of sync with docs/openapi.json:\n  {}",
        faults.into_iter().collect::<Vec<_>>().join("\n  ")
    );
}

/// The root `spin.toml` as it is, with its sources made absolute (the
/// harness built them where it points) and the platform database replaced
/// by `db` wherever it is named (variable defaults and components'
/// environments alike).
pub(crate) fn root_manifest_for(db: &TestDb) -> String {
    let root = repo_root();
    component_wasm("api-docs");
    std::fs::read_to_string(root.join("spin.toml"))
        .unwrap()
        .replace(
            "source = \"components/",
            &format!("source = \"{}/components/", root.display()),
        )
        .replace(PLATFORM_DB, &db.url())
}

/// The environment that lifts the root manifest's rate limits and login
/// lockouts (variables a deployment tunes), for tests that send it far
/// more requests from one address than a client would.
pub(crate) fn unlimited_env() -> Vec<(String, String)> {
    let lots = "1000000".to_string();
    [
        "RATE_LIMIT_AUTH_PER_MINUTE",
        "RATE_LIMIT_AUTH_BURST",
        "RATE_LIMIT_WRITE_PER_MINUTE",
        "RATE_LIMIT_WRITE_BURST",
        "RATE_LIMIT_READ_PER_MINUTE",
        "RATE_LIMIT_READ_BURST",
        "LOGIN_SLOW_AFTER",
        "LOGIN_LOCK_AFTER",
        "LOGIN_ADDRESS_LOCK_AFTER",
    ]
    .into_iter()
    .map(|name| (format!("SPIN_VARIABLE_{name}"), lots.clone()))
    .collect()
}

/// A sample value for a required header parameter, so that a call gets
/// past the caller checks.
fn sample_header(name: &str) -> &'static str {
    match name.to_ascii_lowercase().as_str() {
        "x-bv-role" => "admin",
        "x-bv-customer" => "openapi-check",
        _ => "sample-1",
    }
}

#[tokio::test]
async fn parameterless_gets_answer_documented_statuses() {
    let doc = document();
    let _redis = redis_shared_lock();
    let db = TestDb::new("openapi").await;
    let app = spawn_app_with(
        &root_manifest_for(&db),
        Spawn {
            env: [("SPIN_VARIABLE_DB_URL".into(), db.url())]
                .into_iter()
                .chain(crate::auth_support::env_with_signing_keys())
                .collect(),
            ..Default::default()
        },
    )
    .await;

    let mut faults = Vec::new();
    let mut called = 0;
    for (method, path, op) in operations(&doc) {
        if method != "get" || !template_params(&path).is_empty() {
            continue;
        }
        let item = &doc["paths"][&path];
        let headers: Vec<(String, &str)> = [&item["parameters"], &op["parameters"]]
            .into_iter()
            .filter_map(Value::as_array)
            .flatten()
            .map(|p| resolve(&doc, p))
            .filter(|p| p["in"] == "header" && p["required"] == true)
            .map(|p| {
                let name = p["name"].as_str().unwrap().to_string();
                let value = sample_header(&name);
                (name, value)
            })
            .collect();
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        let reply = request(app.addr, "GET", &path, &headers, "").await;
        called += 1;
        let status = reply.status.to_string();
        let range = format!("{}XX", &status[..1]);
        let responses = &op["responses"];
        let Some(documented) = responses.get(&status).or_else(|| responses.get(&range)) else {
            faults.push(format!(
                "GET {path} answered {status}, not documented: {}",
                reply.text()
            ));
            continue;
        };
        let documented = resolve(&doc, documented);
        let content_type = reply
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let media = content_type.split(';').next().unwrap_or("").trim();
        let Some(content) = documented["content"].get(media) else {
            if !reply.body.is_empty() {
                faults.push(format!(
                    "GET {path} answered {status} as {content_type:?}, which its {status} response does not document"
                ));
            }
            continue;
        };
        if media.ends_with("json") {
            let body = reply.json();
            let schema = resolve(&doc, &content["schema"]);
            for field in schema["required"].as_array().into_iter().flatten() {
                let field = field.as_str().unwrap();
                if body.get(field).is_none() {
                    faults.push(format!(
                        "GET {path} answered {status} without required member `{field}`: {body}"
                    ));
                }
            }
            if media == "application/problem+json" {
                let kind = body["type"].as_str().unwrap_or_default();
                if doc["x-problem-types"].get(kind).is_none() {
                    faults.push(format!(
                        "GET {path} answered the unlisted problem type {kind:?}"
                    ));
                }
            }
        }
    }
    assert!(called > 0, "no parameterless GET in the document");
    assert!(
        faults.is_empty(),
        "answers the document does not describe:\n  {}\nbv log:\n{}",
        faults.join("\n  "),
        app.log()
    );
}

/// RFC 9110: a 405 lists the methods the resource has (`Allow`), and a
/// resource that answers GET answers HEAD the same way, without a body.
/// Every documented path, on the whole application, with an
/// administrator's token so that no caller check stands in the way.
#[tokio::test]
async fn every_405_names_allow_and_head_answers_like_get() {
    let doc = document();
    let _redis = redis_shared_lock();
    let db = TestDb::new("openapi_methods").await;
    let app = spawn_app_with(
        &root_manifest_for(&db),
        Spawn {
            env: [("SPIN_VARIABLE_DB_URL".into(), db.url())]
                .into_iter()
                .chain(crate::auth_support::env_with_signing_keys())
                .collect(),
            ..Default::default()
        },
    )
    .await;
    let admin = crate::auth_support::admin();
    let mut faults = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        let documented: BTreeSet<String> = METHODS
            .iter()
            .filter(|m| item.get(**m).is_some())
            .map(|m| m.to_ascii_uppercase())
            .collect();
        let mut expected = documented.clone();
        if documented.contains("GET") {
            expected.insert("HEAD".into());
        }
        let url = concrete(path);
        let headers = [admin, ("x-bv-customer", "openapi-check")];
        let r = request(app.addr, "PATCH", &url, &headers, "").await;
        let allow: BTreeSet<String> = r
            .headers
            .get("allow")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .split(',')
            .map(|m| m.trim().to_string())
            .filter(|m| !m.is_empty())
            .collect();
        if r.status != 405 {
            faults.push(format!("PATCH {url} answered {}: {}", r.status, r.text()));
        } else if allow != expected {
            faults.push(format!(
                "PATCH {url}: 405 with Allow {allow:?}, the resource has {expected:?}"
            ));
        }
        if documented.contains("GET") {
            let get = request(app.addr, "GET", &url, &headers, "").await;
            let head = request(app.addr, "HEAD", &url, &headers, "").await;
            if head.status != get.status {
                faults.push(format!(
                    "HEAD {url} answered {} where GET answered {}: {}",
                    head.status,
                    get.status,
                    head.text()
                ));
            } else if !head.body.is_empty() {
                faults.push(format!("HEAD {url} answered a body: {}", head.text()));
            } else if head.headers.get("content-type") != get.headers.get("content-type") {
                faults.push(format!(
                    "HEAD {url}: content-type {:?}, GET's {:?}",
                    head.headers.get("content-type"),
                    get.headers.get("content-type")
                ));
            }
        }
    }
    assert!(
        faults.is_empty(),
        "methods answered against RFC 9110:\n  {}\nbv log:\n{}",
        faults.join("\n  "),
        app.log()
    );
}
