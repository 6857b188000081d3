use crate::harness::*;

const ROUTED: &str = r#"spin_manifest_version = 2
[application]
name = "routing"

[[trigger.http]]
route = "/..."
component = "fallback"
[[trigger.http]]
route = "/api/..."
component = "api"
[[trigger.http]]
route = "/api/users/:id"
component = "user"
[[trigger.http]]
route = "/api/users/me"
component = "me"
[[trigger.http]]
route = { private = true }
component = "hidden"

[component.fallback]
source = "{probe}"
environment = { PROBE_NAME = "fallback" }
[component.api]
source = "{probe}"
environment = { PROBE_NAME = "api" }
[component.user]
source = "{probe}"
environment = { PROBE_NAME = "user" }
[component.me]
source = "{probe}"
environment = { PROBE_NAME = "me" }
[component.hidden]
source = "{probe}"
environment = { PROBE_NAME = "hidden" }
"#;

fn name(reply: &Reply) -> String {
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()["name"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn most_specific_route_wins() {
    let app = spawn_app(ROUTED).await;
    assert_eq!(
        name(&app.get("/api/users/me").await),
        "me",
        "exact beats :param"
    );
    assert_eq!(
        name(&app.get("/api/users/42").await),
        "user",
        ":param beats wildcard"
    );
    assert_eq!(
        name(&app.get("/api/headers").await),
        "api",
        "longer prefix beats /..."
    );
    assert_eq!(app.get("/env/PROBE_NAME").await.text(), "fallback");
    assert_eq!(name(&app.get("/headers").await), "fallback");
}

#[tokio::test]
async fn routes_are_printed_at_start() {
    let app = spawn_app(ROUTED).await;
    let log = app.log();
    for line in ["api: http://", "/api/...", "me: http://", "/api/users/me"] {
        assert!(log.contains(line), "missing `{line}` in:\n{log}");
    }
    assert!(
        !log.contains("hidden: http://"),
        "private route printed:\n{log}"
    );
}

#[tokio::test]
async fn param_and_wildcard_headers() {
    let app = spawn_app(ROUTED).await;
    let user = app.get("/api/users/42").await.json();
    assert_eq!(user["headers"]["spin-path-match-id"], "42");
    assert_eq!(user["headers"]["spin-path-info"], "");
    assert_eq!(user["headers"]["spin-matched-route"], "/api/users/:id");

    let api = app.get("/api/headers?q=1").await.json();
    let h = &api["headers"];
    assert_eq!(h["spin-path-info"], "/headers");
    assert_eq!(h["spin-matched-route"], "/api/...");
    assert_eq!(h["spin-raw-component-route"], "/api/...");
    assert_eq!(h["spin-component-route"], "/api");
    assert_eq!(h["spin-base-path"], "/");
}

#[tokio::test]
async fn private_route_is_not_reachable_from_outside() {
    let app = spawn_app(ROUTED).await;
    // `/...` catches everything, so the private component must never answer.
    for path in ["/hidden", "/hidden/headers", "/"] {
        let reply = app.get(path).await;
        if reply.status == 200 {
            assert_ne!(
                reply.json()["name"],
                "hidden",
                "{path} reached the private component"
            );
        }
    }
}

#[tokio::test]
async fn unmatched_path_is_a_problem_json_404() {
    let app = spawn_app(&probe_app("/only/...", "")).await;
    let reply = app.get("/other").await;
    assert_eq!(reply.status, 404);
    assert_eq!(reply.headers["content-type"], "application/problem+json");
    let problem = reply.json();
    assert_eq!(problem["status"], 404);
    assert_eq!(problem["type"], "urn:bitvelocity:problem:route-not-found");
    assert!(problem["detail"].as_str().unwrap().contains("/other"));
}

#[tokio::test]
async fn base_path_prefixes_every_route() {
    let manifest = r#"spin_manifest_version = 2
[application]
name = "based"
[application.trigger.http]
base = "/shop"
[[trigger.http]]
route = "/cart/..."
component = "cart"
[component.cart]
source = "{probe}"
environment = { PROBE_NAME = "cart" }
"#;
    let app = spawn_app(manifest).await;
    let reply = app.get("/shop/cart/headers").await;
    assert_eq!(name(&reply), "cart");
    let h = &reply.json()["headers"];
    assert_eq!(h["spin-base-path"], "/shop");
    assert_eq!(h["spin-matched-route"], "/shop/cart/...");
    assert_eq!(h["spin-path-info"], "/headers");
    assert_eq!(app.get("/cart/headers").await.status, 404);
}
