use std::path::{Path, PathBuf};

use super::*;

const HEAD: &str = r#"spin_manifest_version = 2
[application]
name = "test-app"
"#;

/// A minimal valid manifest with one component `hello` on `/hello`, plus `extra`.
fn manifest(extra: &str) -> String {
    format!(
        r#"{HEAD}
[[trigger.http]]
route = "/hello"
component = "hello"

[component.hello]
source = "hello.wasm"
{extra}"#
    )
}

fn path() -> &'static Path {
    Path::new("/app/spin.toml")
}

fn ok(text: &str) -> App {
    parse(text, path()).unwrap_or_else(|e| panic!("unexpected error: {e}\n{text}"))
}

fn err(text: &str) -> ManifestError {
    match parse(text, path()) {
        Ok(_) => panic!("expected an error for\n{text}"),
        Err(e) => {
            assert_eq!(e.file, path());
            e
        }
    }
}

/// Asserts the error's field and that its message contains `msg`.
#[track_caller]
fn assert_err(text: &str, field: &str, msg: &str) {
    let e = err(text);
    assert_eq!(e.field, field, "field of: {e}");
    assert!(e.message.contains(msg), "message of `{e}` lacks `{msg}`");
}

#[test]
fn full_valid_example() {
    let text = r#"
spin_manifest_version = 2

[application]
name = "shop"
version = "1.2.3"
description = "A shop"
authors = ["A <a@example.com>"]
targets = ["spin-up:3.3"]

[application.trigger.http]
base = "/"

[application.trigger.redis]
address = "redis://localhost:6379"

[application.tool.bv]
instance_policy = "strict"
request_timeout_ms = 5000

[application.tool.other]
anything = { goes = true }

[variables]
api_host = { default = "api.example.com" }
api_token = { required = true, secret = true }
region = { default = "eu", secret = false }

[[trigger.http]]
id = "cart-route"
route = "/cart/..."
component = "cart"
executor = { type = "spin" }

[[trigger.http]]
route = "/items/:id"
component = "items"

[[trigger.http]]
route = { private = true }
component = "internal"

[[trigger.redis]]
channel = "orders"
component = "cart"

[[trigger.cron]]
cron_expression = "0 * * * * *"
component = "items"

[component.cart]
source = "target/wasm32-wasip2/release/cart.wasm"
description = "Shopping cart"
allowed_outbound_hosts = ["https://{{ api_host }}", "http://self", "redis://cache:6379", "postgres://10.0.0.0/8"]
key_value_stores = ["default", "carts"]
sqlite_databases = ["default"]
environment = { RUST_LOG = "info" }
files = ["static/**/*", { source = "assets", destination = "/assets" }]
exclude_files = ["static/secret.txt"]
dependencies_inherit_configuration = true

[component.cart.variables]
api_url = "https://{{ api_host }}/v1/{{ region }}"
token = "{{api_token}}"
plain = "literal"

[component.cart.build]
command = ["cargo build --release", "echo done"]
workdir = "cart"
watch = ["src/**/*.rs"]

[component.cart.tool.bv]
memory_limit_mb = 256
instance_policy = "reuse"

[component.cart.tool.wasm-opt]
level = 3

[component.items]
source = "/abs/items.wasm"
build = { command = "make" }

[component.internal]
source = "./internal.wasm"
"#;
    let app = ok(text);
    assert_eq!(app.path, PathBuf::from("/app/spin.toml"));
    assert_eq!(app.base_dir, PathBuf::from("/app"));
    assert_eq!(app.application.name, "shop");
    assert_eq!(app.application.version.as_deref(), Some("1.2.3"));
    assert_eq!(app.application.description.as_deref(), Some("A shop"));
    assert_eq!(app.application.authors, ["A <a@example.com>"]);
    assert_eq!(app.application.http_base, "/");
    assert_eq!(
        app.application.trigger_settings["redis"]["address"].as_str(),
        Some("redis://localhost:6379")
    );

    assert_eq!(
        app.bv,
        BvSettings {
            instance_policy: InstancePolicy::Strict,
            request_timeout_ms: 5000,
            ..BvSettings::default()
        }
    );

    assert_eq!(app.variables.len(), 3);
    assert_eq!(
        app.variables["api_host"],
        Variable {
            default: Some("api.example.com".into()),
            required: false,
            secret: false
        }
    );
    assert!(app.variables["api_token"].required && app.variables["api_token"].secret);

    assert_eq!(
        app.http_triggers,
        vec![
            HttpTrigger {
                id: Some("cart-route".into()),
                route: RouteSpec::Route("/cart/...".into()),
                component: "cart".into()
            },
            HttpTrigger {
                id: None,
                route: RouteSpec::Route("/items/:id".into()),
                component: "items".into()
            },
            HttpTrigger {
                id: None,
                route: RouteSpec::Private,
                component: "internal".into()
            },
        ]
    );
    assert_eq!(app.other_triggers["redis"].len(), 1);
    assert_eq!(
        app.other_triggers["redis"][0]["channel"].as_str(),
        Some("orders")
    );
    assert_eq!(app.other_triggers["cron"].len(), 1);

    let cart = &app.components["cart"];
    assert_eq!(cart.id, "cart");
    assert_eq!(
        cart.source,
        PathBuf::from("/app/target/wasm32-wasip2/release/cart.wasm")
    );
    assert_eq!(cart.description.as_deref(), Some("Shopping cart"));
    assert_eq!(cart.allowed_outbound_hosts.len(), 4);
    assert_eq!(cart.key_value_stores, ["default", "carts"]);
    assert_eq!(cart.sqlite_databases, ["default"]);
    assert_eq!(cart.environment["RUST_LOG"], "info");
    assert_eq!(
        cart.files,
        vec![
            FileMount::Pattern("static/**/*".into()),
            FileMount::Placement {
                source: PathBuf::from("/app/assets"),
                destination: "/assets".into()
            }
        ]
    );
    assert_eq!(cart.exclude_files, ["static/secret.txt"]);
    assert!(cart.dependencies_inherit_configuration);
    let api_url = &cart.variables["api_url"];
    assert_eq!(
        api_url.variables().collect::<Vec<_>>(),
        ["api_host", "region"]
    );
    let rendered = api_url
        .render(|v| app.variables[v].default.clone())
        .unwrap();
    assert_eq!(rendered, "https://api.example.com/v1/eu");
    assert!(cart.variables["plain"].is_literal());
    assert_eq!(
        cart.build,
        Some(BuildConfig {
            commands: vec!["cargo build --release".into(), "echo done".into()],
            workdir: Some(PathBuf::from("/app/cart")),
            watch: vec!["src/**/*.rs".into()],
        })
    );
    assert_eq!(cart.bv.memory_limit_mb, Some(256));
    let effective = app.bv_settings_for("cart");
    assert_eq!(effective.memory_limit_mb, 256);
    assert_eq!(effective.instance_policy, InstancePolicy::Reuse);
    assert_eq!(effective.request_timeout_ms, 5000);

    let items = &app.components["items"];
    assert_eq!(items.source, PathBuf::from("/abs/items.wasm"));
    assert_eq!(items.build.as_ref().unwrap().commands, ["make"]);
    assert_eq!(items.build.as_ref().unwrap().workdir, None);
    assert_eq!(
        app.components["internal"].source,
        PathBuf::from("/app/internal.wasm")
    );
    assert_eq!(app.bv_settings_for("items"), app.bv);
}

#[test]
fn minimal_manifest_gets_defaults() {
    let app = ok(&manifest(""));
    assert_eq!(app.application.http_base, "/");
    assert_eq!(app.bv, BvSettings::default());
    assert_eq!(app.bv.instance_max_requests, 128);
    assert_eq!(app.bv.instance_max_concurrent, 16);
    assert_eq!(app.bv.request_timeout_ms, 30_000);
    assert_eq!(app.bv.memory_limit_mb, 128);
    assert_eq!(app.bv.max_concurrent_requests, 1000);
    assert_eq!(app.bv.log_level, LogLevel::Info);
    assert!(app.variables.is_empty() && app.other_triggers.is_empty());
    assert_eq!(app.components["hello"].bv, ComponentBvSettings::default());
}

#[test]
fn relative_manifest_path_resolves_against_cwd() {
    let app = parse(&manifest(""), Path::new("spin.toml")).unwrap();
    let cwd = std::env::current_dir().unwrap();
    assert_eq!(app.base_dir, cwd);
    assert_eq!(app.components["hello"].source, cwd.join("hello.wasm"));
    let app = parse(&manifest(""), Path::new("./sub/spin.toml")).unwrap();
    assert_eq!(app.base_dir, cwd.join("sub"));
}

#[test]
fn display_format() {
    let e = ManifestError::new("/a/spin.toml", "component.x.source", "bad");
    assert_eq!(e.to_string(), "/a/spin.toml: component.x.source: bad");
    let e = ManifestError::new("/a/spin.toml", "", "bad");
    assert_eq!(e.to_string(), "/a/spin.toml: bad");
}

#[test]
fn syntax_errors_give_line_and_column() {
    let e = err("spin_manifest_version = 2\n[application]\nname = \n");
    assert_eq!(e.field, "");
    assert!(
        e.message.contains("TOML syntax error at line 3, column 8"),
        "{e}"
    );
    let e = err("spin_manifest_version = 2\nspin_manifest_version = 2\n");
    assert!(e.message.contains("line 2"), "{e}");
}

#[test]
fn manifest_version_is_required_and_must_be_2() {
    assert_err(
        "[application]\nname = \"x\"\n",
        "spin_manifest_version",
        "missing",
    );
    assert_err(
        "spin_manifest_version = 1\n[application]\nname = \"x\"\n",
        "spin_manifest_version",
        "unsupported manifest version 1",
    );
    assert_err(
        "spin_manifest_version = \"2\"\n[application]\nname = \"x\"\n",
        "spin_manifest_version",
        "unsupported manifest version \"2\"",
    );
    assert_err(
        "spin_version = \"1\"\nname = \"x\"\ntrigger = { type = \"http\" }\n",
        "spin_version",
        "version 1 is not supported",
    );
}

#[test]
fn unknown_fields_are_named() {
    assert_err(
        &format!("{}\nbogus = 1\n", manifest("")).replacen(
            "[application]",
            "bogus = 1\n[application]",
            1,
        ),
        "bogus",
        "unknown field `bogus`",
    );
    assert_err(
        &manifest("").replace("name = \"test-app\"", "name = \"x\"\nnmae = \"y\""),
        "application.nmae",
        "unknown field `nmae`",
    );
    assert_err(
        &manifest("sourc = \"x.wasm\""),
        "component.hello.sourc",
        "unknown field `sourc`",
    );
    assert_err(
        &manifest("").replace("route = \"/hello\"", "route = \"/hello\"\nroutes = \"/x\""),
        "trigger.http[0].routes",
        "unknown field `routes`",
    );
    assert_err(
        &manifest("[variables]\na = { default = \"x\", secrets = true }"),
        "variables.a.secrets",
        "unknown field `secrets`",
    );
    assert_err(
        &manifest("[application.trigger.http]\nbase = \"/\"\nbsae = \"/\""),
        "application.trigger.http.bsae",
        "unknown field `bsae`",
    );
    assert_err(
        &manifest("[application.tool.bv]\nmemory_limit = 1"),
        "application.tool.bv.memory_limit",
        "unknown field `memory_limit`",
    );
    assert_err(
        &manifest("[component.hello.tool.bv]\ntimeout = 1"),
        "component.hello.tool.bv.timeout",
        "unknown field `timeout`",
    );
    assert_err(
        &manifest("[component.hello.build]\ncommand = \"make\"\nworkdirr = \".\""),
        "component.hello.build.workdirr",
        "unknown field `workdirr`",
    );
    assert_err(
        &manifest("files = [{ source = \"a\", destination = \"/a\", mode = \"ro\" }]"),
        "component.hello.files[0].mode",
        "unknown field `mode`",
    );
    // Line information is included for serde errors too.
    let e = err(&manifest("sourc = \"x.wasm\""));
    assert!(e.message.contains("(line 11, column 1)"), "{e}");
}

#[test]
fn missing_and_mistyped_fields() {
    assert_err(
        "spin_manifest_version = 2\n[application]\n",
        "application",
        "missing field `name`",
    );
    assert_err(
        &manifest("").replace("route = \"/hello\"\n", ""),
        "trigger.http[0]",
        "missing field `route`",
    );
    assert_err(
        &manifest("").replace("source = \"hello.wasm\"", "source = 3"),
        "component.hello.source",
        "path to a .wasm file",
    );
    assert_err(
        &manifest("key_value_stores = \"default\""),
        "component.hello.key_value_stores",
        "invalid type",
    );
    assert_err(
        &format!("{HEAD}\n[trigger.http]\nroute = \"/\"\ncomponent = \"x\"\n"),
        "trigger.http",
        "invalid type",
    );
}

#[test]
fn variable_rules() {
    assert_err(
        &manifest("[variables]\nApiKey = { default = \"x\" }"),
        "variables.ApiKey",
        "invalid variable name `ApiKey`",
    );
    assert_err(
        &manifest("[variables]\n\"api-key\" = { default = \"x\" }"),
        "variables.api-key",
        "invalid variable name",
    );
    assert_err(
        &manifest("[variables]\n_x = { default = \"x\" }"),
        "variables._x",
        "invalid variable name",
    );
    assert_err(
        &manifest("[variables]\nkey = { default = \"x\", required = true }"),
        "variables.key",
        "both a `default` and `required = true`",
    );
    let app = ok(&manifest(
        "[variables]\nkey2 = { required = true }\nopt = {}",
    ));
    assert!(app.variables["key2"].required);
    assert_eq!(app.variables["opt"], Variable::default());
}

#[test]
fn http_trigger_rules() {
    let two = |route2: &str| {
        format!(
            "{HEAD}\n[[trigger.http]]\nroute = \"/a/:x\"\ncomponent = \"c\"\n\n[[trigger.http]]\n{route2}\ncomponent = \"c\"\n\n[component.c]\nsource = \"c.wasm\"\n"
        )
    };
    assert_err(
        &two("route = \"a/b\""),
        "trigger.http[1].route",
        "routes must start with '/'",
    );
    assert_err(
        &two("route = \"/a/.../b\""),
        "trigger.http[1].route",
        "only allowed as the final segment",
    );
    assert_err(
        &two("route = \"/a//b\""),
        "trigger.http[1].route",
        "empty path segment",
    );
    assert_err(
        &two("route = { private = false }"),
        "trigger.http[1].route",
        "private = false",
    );
    assert_err(
        &two("route = \"/a/:y\""),
        "trigger.http[1].route",
        "duplicate route `/a/:y`: trigger.http[0] (component `c`)",
    );
    // Private routes never conflict.
    let app = ok(&two("route = { private = true }")
        .replace("route = \"/a/:x\"", "route = { private = true }"));
    assert!(app.http_triggers.iter().all(|t| t.route.is_private()));

    assert_err(
        &manifest("").replace("component = \"hello\"", "component = \"nope\""),
        "trigger.http[0].component",
        "component `nope`, which is not defined",
    );
    assert_err(
        &manifest("").replace(
            "component = \"hello\"",
            "component = { source = \"x.wasm\" }",
        ),
        "trigger.http[0].component",
        "inline component tables are not supported",
    );
    assert_err(
        &manifest("").replace(
            "component = \"hello\"",
            "component = \"hello\"\nexecutor = { type = \"wagi\" }",
        ),
        "trigger.http[0].executor",
        "wagi executor is not supported",
    );
    assert_err(
        &manifest("").replace(
            "component = \"hello\"",
            "component = \"hello\"\nexecutor = { type = \"magic\" }",
        ),
        "trigger.http[0].executor",
        "unknown executor type `magic`",
    );
    assert_err(
        &manifest("").replace(
            "component = \"hello\"",
            "component = \"hello\"\nexecutor = { type = \"spin\", argv = \"x\" }",
        ),
        "trigger.http[0].executor.argv",
        "unknown field `argv`",
    );
    let dup_id = format!(
        "{HEAD}\n[[trigger.http]]\nid = \"t\"\nroute = \"/a\"\ncomponent = \"c\"\n\n[[trigger.http]]\nid = \"t\"\nroute = \"/b\"\ncomponent = \"c\"\n\n[component.c]\nsource = \"c.wasm\"\n"
    );
    assert_err(&dup_id, "trigger.http[1].id", "duplicate trigger id `t`");
    let named = dup_id.replacen("component = \"c\"", "component = \"d\"", 1);
    assert_err(
        &named,
        "trigger.http[0].component",
        "trigger `t` uses component `d`",
    );
}

#[test]
fn http_base() {
    let app = ok(&manifest("[application.trigger.http]\nbase = \"/api\""));
    assert_eq!(app.application.http_base, "/api");
    assert_err(
        &manifest("[application.trigger.http]\nbase = \"api\""),
        "application.trigger.http.base",
        "invalid base path `api`",
    );
}

#[test]
fn other_triggers_are_kept_raw_but_checked_for_components() {
    let app = ok(&manifest(
        "[[trigger.mqtt]]\ntopic = \"t\"\ncomponent = \"hello\"\n[[trigger.postgres]]\nanything = 1",
    ));
    assert_eq!(app.other_triggers["mqtt"][0]["topic"].as_str(), Some("t"));
    assert_eq!(app.other_triggers["postgres"].len(), 1);
    assert_err(
        &manifest("[[trigger.redis]]\nchannel = \"c\"\ncomponent = \"ghost\""),
        "trigger.redis[0].component",
        "component `ghost` is not defined",
    );
}

#[test]
fn component_id_and_source_rules() {
    for bad in ["Hello", "hello_world", "1hello", "hello--x", "-x"] {
        let text = format!("{HEAD}\n[component.\"{bad}\"]\nsource = \"x.wasm\"\n");
        assert_err(&text, &format!("component.{bad}"), "invalid component id");
    }
    ok(&format!(
        "{HEAD}\n[component.hello-2-world]\nsource = \"x.wasm\"\n"
    ));
    assert_err(
        &manifest("").replace(
            "source = \"hello.wasm\"",
            "source = { url = \"https://x/y.wasm\", digest = \"sha256:00\" }",
        ),
        "component.hello.source",
        "remote sources (`{ url = ..., digest = ... }`) are not supported",
    );
    assert_err(
        &manifest("").replace(
            "source = \"hello.wasm\"",
            "source = { registry = \"r.io\", package = \"a:b\", version = \"1\" }",
        ),
        "component.hello.source",
        "registry sources are not supported",
    );
    assert_err(
        &manifest("").replace("source = \"hello.wasm\"", "source = \"\""),
        "component.hello.source",
        "must not be empty",
    );
    assert_err(
        &manifest("").replace("source = \"hello.wasm\"\n", ""),
        "component.hello",
        "missing field `source`",
    );
}

#[test]
fn allowed_outbound_hosts_rules() {
    assert_err(
        &manifest("allowed_outbound_hosts = [\"https://ok.com\", \"example.com\"]"),
        "component.hello.allowed_outbound_hosts[1]",
        "invalid allowed outbound host `example.com`: missing scheme",
    );
    assert_err(
        &manifest("allowed_outbound_hosts = [\"https://example.com/path\"]"),
        "component.hello.allowed_outbound_hosts[0]",
        "path",
    );
    assert_err(
        &manifest("allowed_outbound_hosts = [\"foo://example.com\"]"),
        "component.hello.allowed_outbound_hosts[0]",
        "no known default port",
    );
    assert_err(
        &manifest("allowed_outbound_hosts = [\"https://{{ host }}\"]"),
        "component.hello.allowed_outbound_hosts[0]",
        "`{{ host }}` refers to an undefined application variable",
    );
    assert_err(
        &manifest("allowed_outbound_hosts = [\"https://{{ host\"]"),
        "component.hello.allowed_outbound_hosts[0]",
        "unclosed '{{'",
    );
    let app = ok(&manifest(
        "allowed_outbound_hosts = [\"https://{{ host }}:{{ port }}\", \"*://*:*\"]\n[variables]\nhost = { default = \"x\" }\nport = { required = true }",
    ));
    assert_eq!(app.components["hello"].allowed_outbound_hosts.len(), 2);
    assert_err(
        &manifest("allowed_http_hosts = [\"example.com\"]"),
        "component.hello.allowed_http_hosts",
        "use `allowed_outbound_hosts = [\"https://example.com\"]`",
    );
}

#[test]
fn component_variable_rules() {
    assert_err(
        &manifest("variables = { ApiUrl = \"x\" }"),
        "component.hello.variables.ApiUrl",
        "invalid variable name `ApiUrl`",
    );
    assert_err(
        &manifest("variables = { url = \"https://{{ host }}\" }"),
        "component.hello.variables.url",
        "declare `host` in [variables]",
    );
    assert_err(
        &manifest(
            "variables = { url = \"https://{{ host \" }\n[variables]\nhost = { default = \"h\" }",
        ),
        "component.hello.variables.url",
        "unclosed '{{'",
    );
    assert_err(
        &manifest("variables = { url = \"{{ Host }}\" }"),
        "component.hello.variables.url",
        "invalid variable reference",
    );
}

#[test]
fn label_files_build_and_unsupported_rules() {
    assert_err(
        &manifest("key_value_stores = [\"default\", \"My Store\"]"),
        "component.hello.key_value_stores[1]",
        "invalid label `My Store`",
    );
    assert_err(
        &manifest("sqlite_databases = [\"a.b\"]"),
        "component.hello.sqlite_databases[0]",
        "invalid label",
    );
    ok(&manifest(
        "key_value_stores = [\"snake_case\", \"kebab-case\"]",
    ));
    assert_err(
        &manifest("files = [{ source = \"a\", destination = \"rel\" }]"),
        "component.hello.files[0].destination",
        "must be an absolute guest path",
    );
    assert_err(
        &manifest("files = [\"\"]"),
        "component.hello.files[0]",
        "must not be empty",
    );
    assert_err(
        &manifest("files = [3]"),
        "component.hello.files[0]",
        "glob pattern string",
    );
    assert_err(
        &manifest("build = { command = [] }"),
        "component.hello.build.command",
        "must not be empty",
    );
    assert_err(
        &manifest("build = { command = 3 }"),
        "component.hello.build.command",
        "command string or an array",
    );
    assert_err(
        &manifest("environment = { \"A=B\" = \"x\" }"),
        "component.hello.environment",
        "invalid environment variable name",
    );
    assert_err(
        &manifest("ai_models = [\"llama2-chat\"]"),
        "component.hello.ai_models",
        "not supported",
    );
    assert_err(
        &manifest("[component.hello.dependencies]\n\"a:b/c\" = \"1.0\""),
        "component.hello.dependencies",
        "not supported",
    );
}

#[test]
fn bv_settings_rules() {
    let app = ok(&manifest(
        "[application.tool.bv]\ninstance_policy = \"strict\"\ninstance_max_requests = 1\ninstance_max_concurrent = 2\nrequest_timeout_ms = 3\nstream_idle_timeout_ms = 6\nmemory_limit_mb = 4\nmax_concurrent_requests = 5\nlog_level = \"warn\"\n[component.hello.tool.bv]\nmax_concurrent_requests = 50\nlog_level = \"debug\"\nmessage_batch = 32\n",
    ));
    let expected = BvSettings {
        instance_policy: InstancePolicy::Strict,
        instance_max_requests: 1,
        instance_max_concurrent: 2,
        request_timeout_ms: 3,
        stream_idle_timeout_ms: 6,
        memory_limit_mb: 4,
        max_concurrent_requests: 5,
        log_level: LogLevel::Warn,
        ..BvSettings::default()
    };
    assert_eq!(app.bv, expected);
    assert_eq!(
        app.bv_settings_for("hello"),
        BvSettings {
            max_concurrent_requests: 50,
            log_level: LogLevel::Debug,
            message_batch: 32,
            ..expected
        }
    );
    for field in [
        "instance_max_requests",
        "instance_max_concurrent",
        "request_timeout_ms",
        "stream_idle_timeout_ms",
        "memory_limit_mb",
        "max_concurrent_requests",
        "message_batch",
    ] {
        assert_err(
            &manifest(&format!("[application.tool.bv]\n{field} = 0")),
            &format!("application.tool.bv.{field}"),
            "must be greater than 0",
        );
        assert_err(
            &manifest(&format!("[component.hello.tool.bv]\n{field} = 0")),
            &format!("component.hello.tool.bv.{field}"),
            "must be greater than 0",
        );
    }
    assert_err(
        &manifest("[application.tool.bv]\ninstance_policy = \"sometimes\""),
        "application.tool.bv.instance_policy",
        "unknown variant `sometimes`",
    );
    assert_err(
        &manifest("[component.hello.tool.bv]\nlog_level = \"verbose\""),
        "component.hello.tool.bv.log_level",
        "unknown variant `verbose`, expected one of `trace`, `debug`, `info`, `warn`, `error`, `off`",
    );
    assert_err(
        &manifest("[application.tool.bv]\nlog_level = \"INFO\""),
        "application.tool.bv.log_level",
        "unknown variant `INFO`",
    );
    assert_err(
        &manifest("[application.tool.bv]\nlog_level = 3"),
        "application.tool.bv.log_level",
        "wanted string",
    );
    assert_err(
        &manifest("[application.tool.bv]\nmemory_limit_mb = -1"),
        "application.tool.bv.memory_limit_mb",
        "invalid value",
    );
    // Other tools are ignored, whatever their contents.
    ok(&manifest(
        "[application.tool.spin-test]\nx = [1, 2]\n[component.hello.tool.wasm-opt]\ny = {}",
    ));
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("bv-manifest-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn load_and_check_sources() {
    let dir = temp_dir("sources");
    let file = dir.join("spin.toml");
    std::fs::write(&file, manifest("")).unwrap();
    let app = load(&file).unwrap();
    let e = app.check_sources().unwrap_err();
    assert_eq!(e.field, "component.hello.source");
    assert!(e.message.contains("run `bv build`"), "{e}");
    assert!(e
        .message
        .contains(&dir.join("hello.wasm").display().to_string()));
    std::fs::write(dir.join("hello.wasm"), b"\0asm").unwrap();
    app.check_sources().unwrap();

    let e = load(&dir.join("missing.toml")).unwrap_err();
    assert_eq!(e.field, "");
    assert!(e.message.contains("cannot read manifest"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

fn rc_path() -> &'static Path {
    Path::new("/app/runtime-config.toml")
}

#[track_caller]
fn assert_rc_err(text: &str, field: &str, msg: &str) {
    let e = parse_runtime_config(text, rc_path()).unwrap_err();
    assert_eq!(e.file, rc_path());
    assert_eq!(e.field, field, "field of: {e}");
    assert!(e.message.contains(msg), "message of `{e}` lacks `{msg}`");
}

#[test]
fn runtime_config_parses() {
    let rc = parse_runtime_config(
        r#"
[key_value_store.carts]
type = "spin"
path = "data/carts.db"

[key_value_store.default]
type = "spin"

[key_value_store.cache]
type = "redis"
url = "redis://localhost:6379"

[sqlite_database.analytics]
type = "spin"
path = "/var/db/analytics.db"
"#,
        rc_path(),
    )
    .unwrap();
    assert_eq!(
        rc.key_value_stores["carts"],
        KeyValueStoreConfig::Spin {
            path: Some(PathBuf::from("/app/data/carts.db"))
        }
    );
    assert_eq!(
        rc.key_value_stores["default"],
        KeyValueStoreConfig::Spin { path: None }
    );
    assert_eq!(
        rc.key_value_stores["cache"],
        KeyValueStoreConfig::Redis {
            url: "redis://localhost:6379".into()
        }
    );
    assert_eq!(
        rc.sqlite_databases["analytics"],
        SqliteDatabaseConfig::Spin {
            path: Some(PathBuf::from("/var/db/analytics.db"))
        }
    );
    assert_eq!(
        parse_runtime_config("", rc_path()).unwrap(),
        RuntimeConfig::default()
    );
}

#[test]
fn runtime_config_errors() {
    assert_rc_err(
        "[key_value_store.x]\ntype = \"azure_cosmos\"",
        "key_value_store.x.type",
        "unknown variant `azure_cosmos`",
    );
    assert_rc_err(
        "[key_value_store.x]\ntype = \"redis\"",
        "key_value_store.x",
        "missing field `url`",
    );
    assert_rc_err(
        "[key_value_store.x]\ntype = \"spin\"\npath = \"a\"\nsize = 3",
        "key_value_store.x.size",
        "unknown field `size`",
    );
    assert_rc_err(
        "[key_value_store.x]\npath = \"a\"",
        "key_value_store.x",
        "missing field `type`",
    );
    assert_rc_err(
        "[key_value_store.x]\ntype = \"redis\"\nurl = \"http://x\"",
        "key_value_store.x.url",
        "not a redis:// or rediss:// URL",
    );
    assert_rc_err(
        "[sqlite_database.x]\ntype = \"libsql\"",
        "sqlite_database.x.type",
        "unknown variant `libsql`",
    );
    assert_rc_err(
        "[variables_provider]\ntype = \"env\"",
        "variables_provider",
        "unknown field `variables_provider`",
    );
    assert_rc_err(
        "[key_value_store.\"Bad Label\"]\ntype = \"spin\"",
        "key_value_store.Bad Label",
        "invalid label",
    );
    assert_rc_err("[key_value_store.x\n", "", "TOML syntax error at line 1");
    let e = load_runtime_config(Path::new("/definitely/not/here.toml")).unwrap_err();
    assert!(e.message.contains("cannot read runtime config"), "{e}");
}

#[test]
fn runtime_config_is_validated_against_the_app() {
    let app = ok(&manifest(
        "key_value_stores = [\"default\", \"carts\"]\nsqlite_databases = [\"default\", \"analytics\"]",
    ));
    let e = app
        .validate_runtime_config(&RuntimeConfig::default())
        .unwrap_err();
    assert_eq!(e.field, "component.hello.key_value_stores");
    assert!(e.message.contains("key-value store `carts`"), "{e}");
    assert!(e.message.contains("[key_value_store.carts]"), "{e}");

    let mut rc = RuntimeConfig::default();
    rc.key_value_stores
        .insert("carts".into(), KeyValueStoreConfig::Spin { path: None });
    let e = app.validate_runtime_config(&rc).unwrap_err();
    assert_eq!(e.field, "component.hello.sqlite_databases");
    assert!(e.message.contains("`analytics`"), "{e}");

    rc.sqlite_databases.insert(
        "analytics".into(),
        SqliteDatabaseConfig::Spin { path: None },
    );
    app.validate_runtime_config(&rc).unwrap();

    // "default" never needs runtime config.
    let app = ok(&manifest("key_value_stores = [\"default\"]"));
    app.validate_runtime_config(&RuntimeConfig::default())
        .unwrap();
}

#[test]
fn select_keeps_only_the_chosen_components_and_their_triggers() {
    let mut app = ok(&manifest(
        r#"
[[trigger.http]]
route = "/cart/..."
component = "cart"

[[trigger.redis]]
channel = "orders"
component = "cart"

[[trigger.cron]]
cron_expression = "0 * * * * *"
component = "hello"

[component.cart]
source = "cart.wasm"
"#,
    ));
    app.select(&["cart".into()]).unwrap();
    assert_eq!(app.components.keys().collect::<Vec<_>>(), ["cart"]);
    assert_eq!(app.unselected.iter().collect::<Vec<_>>(), ["hello"]);
    assert_eq!(app.http_triggers.len(), 1);
    assert_eq!(app.http_triggers[0].component, "cart");
    assert_eq!(app.other_triggers.keys().collect::<Vec<_>>(), ["redis"]);

    let mut all = ok(&manifest(""));
    all.select(&[]).unwrap();
    assert_eq!(all.components.len(), 1, "no selection keeps everything");

    let e = ok(&manifest("")).select(&["ghost".into()]).unwrap_err();
    assert_eq!(e.field, "--component-id");
    assert!(
        e.message
            .contains("component `ghost` is not defined; the manifest's components are: hello"),
        "{e}"
    );
}

#[test]
fn websocket_settings() {
    let app = ok(&manifest(
        "[component.hello.tool.bv.websocket]\nmax_message_bytes = 1024\n",
    ));
    let ws = app
        .bv_settings_for("hello")
        .websocket
        .expect("websocket on");
    assert_eq!(ws.max_message_bytes(), 1024);
    assert_eq!(ws.ping_interval_ms(), DEFAULT_WEBSOCKET_PING_INTERVAL_MS);
    assert_eq!(ws.redis, None);
    assert_eq!(ok(&manifest("")).bv_settings_for("hello").websocket, None);

    assert_err(
        &manifest("[component.hello.tool.bv.websocket]\nredis = \"http://x\"\n"),
        "component.hello.tool.bv.websocket.redis",
        "is not a redis:// or rediss:// URL",
    );
    assert_err(
        &manifest("[component.hello.tool.bv.websocket]\nredis = \"{{ nope }}\"\n"),
        "component.hello.tool.bv.websocket.redis",
        "nope",
    );
    assert_err(
        &manifest("[component.hello.tool.bv.websocket]\nping_interval_ms = 0\n"),
        "component.hello.tool.bv.websocket.ping_interval_ms",
        "",
    );
    assert_err(
        &format!("{HEAD}[application.tool.bv.websocket]\n"),
        "application.tool.bv.websocket",
        "set per component",
    );
    assert_err(
        &format!(
            "{HEAD}[[trigger.http]]\nroute = \"/ws\"\ncomponent = \"bv-websocket\"\n[component.bv-websocket]\nsource = \"a.wasm\"\n"
        ),
        "component.bv-websocket",
        "reserved",
    );
}
