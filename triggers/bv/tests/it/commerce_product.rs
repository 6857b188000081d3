//! The `product` component (the catalogue) against the real PostgreSQL:
//! CRUD with ETags and preconditions, listing (cursor pages, search,
//! filters) on the indexes made for it, its problems, the demo catalogue,
//! and its events in the outbox.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::auth_support::{self, admin, customer};
use crate::harness::*;
use crate::pg_support::*;
use crate::repo_manifest::RepoManifest;

/// The component's listing SQL, included as is, so that the `EXPLAIN`s
/// below check the statements the component really runs.
#[path = "../../../../components/product/src/list_sql.rs"]
mod list_sql;

const JSON: (&str, &str) = ("content-type", "application/json");

/// The demo catalogue's size (migration `0002_demo_catalog`).
const DEMO: i64 = 10;

/// The catalogue as `spin.toml` has it, plus `extra` (more components).
fn manifest(extra: &str) -> String {
    RepoManifest::load()
        .only("catalog", &["product"])
        .without_rate_limits()
        .merge(extra)
        .render()
}

async fn start(db: &TestDb, manifest: &str) -> TestApp {
    spawn_app_with(
        manifest,
        Spawn {
            env: [("SPIN_VARIABLE_DB_URL".into(), db.url())]
                .into_iter()
                .chain(auth_support::env())
                .collect(),
            ..Default::default()
        },
    )
    .await
}

async fn call(
    app: &TestApp,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Reply {
    request(app.addr, method, path, headers, body.to_string()).await
}

async fn create(app: &TestApp, body: Value) -> Reply {
    call(
        app,
        "POST",
        "/api/products",
        &[admin(), JSON],
        &body.to_string(),
    )
    .await
}

fn mug(sku: &str) -> Value {
    json!({
        "sku": sku,
        "name": "Red mug",
        "description": "350 ml stoneware",
        "category": "mugs",
        "price": { "amount": 1299, "currency": "EUR" }
    })
}

fn header<'r>(r: &'r Reply, name: &str) -> &'r str {
    r.headers
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header in {:?}", r.headers))
        .to_str()
        .unwrap()
}

/// Asserts a problem: its status, `type` and (when given) the `field` or
/// `parameter` it names.
#[track_caller]
fn assert_problem(r: &Reply, status: u16, kind: &str, names: Option<&str>) {
    assert_eq!(r.status, status, "{}", r.text());
    assert_eq!(header(r, "content-type"), "application/problem+json");
    let body = r.json();
    assert_eq!(
        body["type"],
        format!("urn:bitvelocity:problem:{kind}"),
        "{body}"
    );
    assert_eq!(body["status"], status);
    if let Some(name) = names {
        let named = body.get("field").or_else(|| body.get("parameter"));
        assert_eq!(named.and_then(Value::as_str), Some(name), "{body}");
        assert!(body["detail"].as_str().unwrap().contains(name), "{body}");
    }
}

async fn scalar(db: &TestDb, sql: &str) -> i64 {
    db.client().await.query_one(sql, &[]).await.unwrap().get(0)
}

/// Rows, their versions summed, and outbox events: what a rejected
/// request must leave as it was.
async fn state(db: &TestDb) -> (i64, i64, i64) {
    let row = db
        .client()
        .await
        .query_one(
            "SELECT (SELECT count(*) FROM product.products),
                    (SELECT coalesce(sum(version), 0)::bigint FROM product.products),
                    (SELECT count(*) FROM bv_events.outbox)",
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1), row.get(2))
}

/// The outbox's events about `subject`, oldest first.
async fn events_of(db: &TestDb, subject: &str) -> Vec<Value> {
    let rows = db
        .client()
        .await
        .query(
            "SELECT event::text FROM bv_events.outbox WHERE subject = $1 ORDER BY seq",
            &[&subject],
        )
        .await
        .unwrap();
    rows.iter()
        .map(|r| serde_json::from_str(r.get::<_, &str>(0)).unwrap())
        .collect()
}

#[tokio::test]
async fn create_read_replace_delete_with_etags_and_their_events() {
    let db = TestDb::new("product_crud").await;
    let app = start(&db, &manifest("")).await;

    let r = create(&app, mug("MUG-RED")).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let product = r.json();
    let id = product["id"].as_str().unwrap().to_string();
    assert_eq!(uuid_version(&id), '4', "{id}");
    assert_eq!(header(&r, "location"), format!("/api/products/{id}"));
    assert_eq!(header(&r, "etag"), "\"1\"");
    assert_eq!(product["sku"], "MUG-RED");
    assert_eq!(
        product["price"],
        json!({ "amount": 1299, "currency": "EUR" })
    );
    assert_eq!(product["version"], 1);

    // GET: ETag, Cache-Control; a matching If-None-Match is 304 without a body.
    let path = format!("/api/products/{id}");
    let r = app.get(&path).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), product);
    assert_eq!(header(&r, "etag"), "\"1\"");
    assert_eq!(header(&r, "cache-control"), "public, max-age=30");
    let r = call(&app, "GET", &path, &[("if-none-match", "\"1\"")], "").await;
    assert_eq!(r.status, 304);
    assert!(r.body.is_empty());
    assert_eq!(header(&r, "etag"), "\"1\"");
    let r = call(&app, "GET", &path, &[("if-none-match", "\"0\"")], "").await;
    assert_eq!(r.status, 200);

    // PUT needs If-Match with the current ETag.
    let mut change = mug("MUG-RED");
    change["name"] = json!("Crimson mug");
    change["price"]["amount"] = json!(999);
    change.as_object_mut().unwrap().remove("description");
    let body = change.to_string();
    let r = call(&app, "PUT", &path, &[admin(), JSON], &body).await;
    assert_problem(&r, 428, "precondition-required", None);
    let r = call(
        &app,
        "PUT",
        &path,
        &[admin(), JSON, ("if-match", "\"7\"")],
        &body,
    )
    .await;
    assert_problem(&r, 412, "precondition-failed", None);
    let r = call(
        &app,
        "PUT",
        &path,
        &[admin(), JSON, ("if-match", "W/\"1\"")],
        &body,
    )
    .await;
    assert_problem(&r, 412, "precondition-failed", None);
    let r = call(
        &app,
        "PUT",
        &path,
        &[admin(), JSON, ("if-match", "\"1\"")],
        &body,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(header(&r, "etag"), "\"2\"");
    let updated = r.json();
    assert_eq!(updated["name"], "Crimson mug");
    assert_eq!(
        updated["description"], "",
        "an absent description is cleared"
    );
    assert_eq!(updated["version"], 2);
    // Putting the same again changes nothing: no new version, no event.
    let r = call(
        &app,
        "PUT",
        &path,
        &[admin(), JSON, ("if-match", "\"2\"")],
        &body,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(header(&r, "etag"), "\"2\"");
    // The old ETag no longer matches.
    let r = call(&app, "GET", &path, &[("if-none-match", "\"1\"")], "").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), updated);

    // Two writers with the same ETag: one wins, the other is told.
    let mut a = change.clone();
    a["name"] = json!("Mug A");
    let mut b = change.clone();
    b["name"] = json!("Mug B");
    let (a, b) = (a.to_string(), b.to_string());
    let headers = [admin(), JSON, ("if-match", "\"2\"")];
    let (ra, rb) = tokio::join!(
        call(&app, "PUT", &path, &headers, &a),
        call(&app, "PUT", &path, &headers, &b),
    );
    let mut statuses = [ra.status, rb.status];
    statuses.sort();
    assert_eq!(statuses, [200, 412], "{} / {}", ra.text(), rb.text());

    // DELETE: 204, then gone from GET, from the listing and for PUT.
    let r = call(&app, "DELETE", &path, &[admin(), ("if-match", "\"2\"")], "").await;
    assert_problem(&r, 412, "precondition-failed", None);
    let r = call(&app, "DELETE", &path, &[admin()], "").await;
    assert_eq!(r.status, 204, "{}", r.text());
    assert!(r.body.is_empty());
    assert_problem(&app.get(&path).await, 404, "not-found", None);
    let r = call(&app, "DELETE", &path, &[admin()], "").await;
    assert_problem(&r, 404, "not-found", None);
    let r = call(
        &app,
        "PUT",
        &path,
        &[admin(), JSON, ("if-match", "*")],
        &body,
    )
    .await;
    assert_problem(&r, 404, "not-found", None);
    let list = app.get("/api/products?limit=100").await.json();
    assert!(list["items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p["id"] != id.as_str()));
    assert_eq!(
        scalar(&db, &format!("SELECT count(*) FROM product.products WHERE id = '{id}' AND deleted_at IS NOT NULL")).await,
        1,
        "soft delete keeps the row"
    );

    // One event per change, in order, each in its change's transaction.
    let events = events_of(&db, &id).await;
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        [
            "com.bitvelocity.product.created.v1",
            "com.bitvelocity.product.updated.v1",
            "com.bitvelocity.product.updated.v1",
            "com.bitvelocity.product.deleted.v1",
        ]
    );
    assert_eq!(
        events[0]["data"],
        json!({
            "productId": id, "sku": "MUG-RED", "name": "Red mug", "description": "350 ml stoneware",
            "category": "mugs", "price": { "amount": 1299, "currency": "EUR" }, "status": "active"
        })
    );
    assert_eq!(events[0]["source"], "/catalog");
    assert_eq!(events[0]["subject"], id.as_str());
    assert_eq!(
        events[1]["data"],
        json!({
            "productId": id, "revision": 2,
            "changes": { "name": "Crimson mug", "description": "", "price": { "amount": 999, "currency": "EUR" } }
        }),
        "only what changed"
    );
    assert_eq!(events[2]["data"]["revision"], 3);
    assert_eq!(
        events[3]["data"],
        json!({ "productId": id, "sku": "MUG-RED", "revision": 4 })
    );
}

fn uuid_version(id: &str) -> char {
    assert_eq!(id.len(), 36, "{id}");
    id.chars().nth(14).unwrap()
}

#[tokio::test]
async fn a_sku_is_unique_among_live_products() {
    let db = TestDb::new("product_sku").await;
    let app = start(&db, &manifest("")).await;
    let r = create(&app, mug("MUG-1")).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let first = r.json()["id"].as_str().unwrap().to_string();
    let before = state(&db).await;
    let mut again = mug("MUG-1");
    again["name"] = json!("Another mug");
    let r = create(&app, again.clone()).await;
    assert_problem(&r, 409, "sku-taken", None);
    assert_eq!(r.json()["sku"], "MUG-1");
    assert_eq!(state(&db).await, before, "a refused create writes nothing");
    // The seeded catalogue's SKUs are taken too.
    assert_problem(
        &create(&app, mug("MUG-RED-350")).await,
        409,
        "sku-taken",
        None,
    );
    // Once the product is deleted, its SKU is free again.
    let r = call(
        &app,
        "DELETE",
        &format!("/api/products/{first}"),
        &[admin()],
        "",
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.text());
    let r = create(&app, again).await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_ne!(r.json()["id"], first.as_str());
}

#[tokio::test]
async fn every_rejected_request_is_a_specific_problem_and_changes_nothing() {
    let db = TestDb::new("product_reject").await;
    let app = start(&db, &manifest("")).await;
    let r = create(&app, mug("MUG-1")).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_string();
    let item = format!("/api/products/{id}");
    let unknown = "/api/products/00000000-0000-4000-8000-000000000000";
    let before = state(&db).await;

    let with = |edit: &dyn Fn(&mut Value)| {
        let mut body = mug("MUG-2");
        edit(&mut body);
        body.to_string()
    };
    let big = with(&|b| b["description"] = json!("x".repeat(70 * 1024)));
    // (method, path, headers, body, status, problem kind, field or parameter named)
    type Case<'a> = (
        &'a str,
        String,
        Vec<(&'a str, &'a str)>,
        String,
        u16,
        &'a str,
        Option<&'a str>,
    );
    let cases: Vec<Case> = vec![
        // Bodies.
        (
            "POST",
            "/api/products".into(),
            vec![admin(), JSON],
            "{\"sku\":".into(),
            400,
            "malformed-json",
            None,
        ),
        (
            "POST",
            "/api/products".into(),
            vec![admin(), JSON],
            with(&|b| b["name"] = json!(5)),
            422,
            "invalid-field",
            Some("name"),
        ),
        (
            "POST",
            "/api/products".into(),
            vec![admin(), JSON],
            with(&|b| b["price"]["amount"] = json!(-1)),
            422,
            "invalid-field",
            Some("price.amount"),
        ),
        (
            "POST",
            "/api/products".into(),
            vec![admin(), JSON],
            with(&|b| b["price"]["amount"] = json!(12.5)),
            422,
            "invalid-field",
            Some("price.amount"),
        ),
        (
            "POST",
            "/api/products".into(),
            vec![admin(), JSON],
            with(&|b| b["price"]["currency"] = json!("XXX")),
            422,
            "invalid-field",
            Some("price.currency"),
        ),
        (
            "POST",
            "/api/products".into(),
            vec![admin(), JSON],
            with(&|b| {
                b.as_object_mut().unwrap().remove("sku");
            }),
            422,
            "invalid-field",
            Some("sku"),
        ),
        (
            "POST",
            "/api/products".into(),
            vec![admin(), JSON],
            with(&|b| {
                b["price"].as_object_mut().unwrap().remove("currency");
            }),
            422,
            "invalid-field",
            Some("price.currency"),
        ),
        (
            "POST",
            "/api/products".into(),
            vec![admin(), JSON],
            with(&|b| b["sku"] = json!("mug 2")),
            422,
            "invalid-field",
            Some("sku"),
        ),
        (
            "POST",
            "/api/products".into(),
            vec![admin(), JSON],
            with(&|b| b["category"] = json!("Mugs!")),
            422,
            "invalid-field",
            Some("category"),
        ),
        (
            "POST",
            "/api/products".into(),
            vec![admin(), JSON],
            with(&|b| b["name"] = json!("  ")),
            422,
            "invalid-field",
            Some("name"),
        ),
        (
            "POST",
            "/api/products".into(),
            vec![admin(), JSON],
            with(&|b| b["colour"] = json!("red")),
            422,
            "invalid-field",
            Some("colour"),
        ),
        (
            "POST",
            "/api/products".into(),
            vec![admin(), JSON],
            "[]".into(),
            422,
            "invalid-field",
            Some("$"),
        ),
        (
            "POST",
            "/api/products".into(),
            vec![admin(), JSON],
            big,
            413,
            "body-too-large",
            None,
        ),
        (
            "POST",
            "/api/products".into(),
            vec![admin(), ("content-type", "text/plain")],
            with(&|_| {}),
            415,
            "unsupported-media-type",
            None,
        ),
        // Who and how.
        (
            "POST",
            "/api/products".into(),
            vec![JSON],
            with(&|_| {}),
            401,
            "unauthenticated",
            None,
        ),
        (
            "POST",
            "/api/products".into(),
            vec![customer("shopper"), JSON],
            with(&|_| {}),
            403,
            "forbidden",
            None,
        ),
        (
            "PUT",
            item.clone(),
            vec![JSON, ("if-match", "\"1\"")],
            with(&|b| b["sku"] = json!("MUG-1")),
            401,
            "unauthenticated",
            None,
        ),
        (
            "DELETE",
            item.clone(),
            vec![],
            String::new(),
            401,
            "unauthenticated",
            None,
        ),
        (
            "PATCH",
            item.clone(),
            vec![admin(), JSON],
            "{}".into(),
            405,
            "method-not-allowed",
            None,
        ),
        (
            "DELETE",
            "/api/products".into(),
            vec![admin()],
            String::new(),
            405,
            "method-not-allowed",
            None,
        ),
        // Which product.
        (
            "GET",
            unknown.into(),
            vec![],
            String::new(),
            404,
            "not-found",
            None,
        ),
        (
            "GET",
            "/api/products/not-a-uuid".into(),
            vec![],
            String::new(),
            404,
            "not-found",
            None,
        ),
        (
            "GET",
            format!("{item}/reviews"),
            vec![],
            String::new(),
            404,
            "not-found",
            None,
        ),
        (
            "PUT",
            unknown.into(),
            vec![admin(), JSON, ("if-match", "*")],
            with(&|_| {}),
            404,
            "not-found",
            None,
        ),
        (
            "DELETE",
            unknown.into(),
            vec![admin()],
            String::new(),
            404,
            "not-found",
            None,
        ),
        // Replacing.
        (
            "PUT",
            item.clone(),
            vec![admin(), JSON],
            with(&|b| b["sku"] = json!("MUG-1")),
            428,
            "precondition-required",
            None,
        ),
        (
            "PUT",
            item.clone(),
            vec![admin(), JSON, ("if-match", "\"9\"")],
            with(&|b| b["sku"] = json!("MUG-1")),
            412,
            "precondition-failed",
            None,
        ),
        (
            "PUT",
            item.clone(),
            vec![admin(), JSON, ("if-match", "\"1\"")],
            with(&|_| {}),
            422,
            "invalid-field",
            Some("sku"),
        ),
        (
            "PUT",
            item.clone(),
            vec![admin(), JSON, ("if-match", "\"1\"")],
            with(&|b| {
                b.as_object_mut().unwrap().remove("sku");
                b["price"]["amount"] = json!("12");
            }),
            422,
            "invalid-field",
            Some("price.amount"),
        ),
        (
            "PUT",
            item.clone(),
            vec![admin(), JSON, ("if-match", "\"1\"")],
            "{".into(),
            400,
            "malformed-json",
            None,
        ),
        // Listing.
        (
            "GET",
            "/api/products?limit=0".into(),
            vec![],
            String::new(),
            422,
            "invalid-parameter",
            Some("limit"),
        ),
        (
            "GET",
            "/api/products?limit=101".into(),
            vec![],
            String::new(),
            422,
            "invalid-parameter",
            Some("limit"),
        ),
        (
            "GET",
            "/api/products?limit=ten".into(),
            vec![],
            String::new(),
            422,
            "invalid-parameter",
            Some("limit"),
        ),
        (
            "GET",
            "/api/products?cursor=abc".into(),
            vec![],
            String::new(),
            422,
            "invalid-parameter",
            Some("cursor"),
        ),
        (
            "GET",
            "/api/products?category=Mugs".into(),
            vec![],
            String::new(),
            422,
            "invalid-parameter",
            Some("category"),
        ),
        (
            "GET",
            "/api/products?currency=XXX".into(),
            vec![],
            String::new(),
            422,
            "invalid-parameter",
            Some("currency"),
        ),
        (
            "GET",
            "/api/products?min_price=5".into(),
            vec![],
            String::new(),
            422,
            "invalid-parameter",
            Some("min_price"),
        ),
        (
            "GET",
            "/api/products?currency=EUR&max_price=-5".into(),
            vec![],
            String::new(),
            422,
            "invalid-parameter",
            Some("max_price"),
        ),
        (
            "GET",
            "/api/products?currency=EUR&min_price=9&max_price=5".into(),
            vec![],
            String::new(),
            422,
            "invalid-parameter",
            Some("max_price"),
        ),
        (
            "GET",
            "/api/products?q=".into(),
            vec![],
            String::new(),
            422,
            "invalid-parameter",
            Some("q"),
        ),
        (
            "GET",
            "/api/products?sort=name".into(),
            vec![],
            String::new(),
            422,
            "invalid-parameter",
            Some("sort"),
        ),
    ];
    for (method, path, headers, body, status, kind, names) in &cases {
        let r = call(&app, method, path, headers, body).await;
        eprintln!("{method} {path} → {}", r.status);
        assert_problem(&r, *status, kind, *names);
        if *status == 405 {
            assert!(!header(&r, "allow").is_empty());
        }
    }
    assert_eq!(
        state(&db).await,
        before,
        "no rejected request changed anything"
    );
    let r = app.get(&item).await;
    assert_eq!(r.json()["version"], 1);
}

#[tokio::test]
async fn the_listing_pages_searches_and_filters() {
    let db = TestDb::new("product_list").await;
    let app = start(&db, &manifest("")).await;
    // The demo catalogue: three categories.
    let all = app.get("/api/products").await;
    assert_eq!(all.status, 200, "{}", all.text());
    assert_eq!(header(&all, "cache-control"), "public, max-age=5");
    let body = all.json();
    assert_eq!(body["items"].as_array().unwrap().len() as i64, DEMO);
    assert_eq!(body["next"], Value::Null);
    let mut categories: Vec<&str> = body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["category"].as_str().unwrap())
        .collect();
    categories.dedup();
    assert_eq!(categories, ["mugs", "tea", "stationery"]);

    // Seven more teapots, priced 1000, 1100, … 1600 GBP.
    let mut created = Vec::new();
    for i in 0..7 {
        let r = create(
            &app,
            json!({
                "sku": format!("POT-{i}"),
                "name": format!("Teapot number {i}"),
                "description": if i % 2 == 0 { "cast iron, keeps tea warm" } else { "glass" },
                "category": "teapots",
                "price": { "amount": 1000 + 100 * i, "currency": "GBP" }
            }),
        )
        .await;
        assert_eq!(r.status, 201, "{}", r.text());
        created.push(r.json()["id"].as_str().unwrap().to_string());
    }

    // Pages of 3 through the category, following `next`: every product
    // once, in creation order.
    let mut seen = Vec::new();
    let mut path = "/api/products?category=teapots&limit=3".to_string();
    let mut pages = 0;
    loop {
        let r = app.get(&path).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        let page = r.json();
        let items = page["items"].as_array().unwrap();
        seen.extend(items.iter().map(|p| p["id"].as_str().unwrap().to_string()));
        pages += 1;
        match page["next"].as_str() {
            Some(next) => {
                assert_eq!(items.len(), 3);
                assert!(
                    next.contains("category=teapots") && next.contains("limit=3"),
                    "{next}"
                );
                assert_eq!(header(&r, "link"), format!("<{next}>; rel=\"next\""));
                assert!(next.ends_with(page["nextCursor"].as_str().unwrap()));
                path = next.to_string();
            }
            None => break,
        }
    }
    assert_eq!((pages, &seen), (3, &created));

    // Full-text search over name and description, with stemming.
    let names = |r: Reply| -> Vec<String> {
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["sku"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        names(app.get("/api/products?q=mugs").await),
        ["MUG-RED-350", "MUG-BLUE-350", "MUG-TRAVEL-450"]
    );
    assert_eq!(
        names(app.get("/api/products?q=cast%20iron").await),
        ["POT-0", "POT-2", "POT-4", "POT-6"]
    );
    assert_eq!(
        names(
            app.get("/api/products?q=warm&category=teapots&limit=2")
                .await
        ),
        ["POT-0", "POT-2"]
    );
    assert_eq!(
        names(app.get("/api/products?q=bergamot").await),
        ["TEA-EARLGREY-100"]
    );
    assert!(names(app.get("/api/products?q=nothing-like-this").await).is_empty());
    // Price ranges, in one currency, inclusive.
    assert_eq!(
        names(
            app.get("/api/products?currency=GBP&min_price=1200&max_price=1400")
                .await
        ),
        ["POT-2", "POT-3", "POT-4"]
    );
    assert_eq!(
        names(app.get("/api/products?currency=USD&max_price=899").await),
        ["TEA-EARLGREY-100", "TEA-CHAI-20"]
    );
    assert_eq!(
        names(app.get("/api/products?currency=EUR").await),
        Vec::<String>::new()
    );
    assert_eq!(
        names(
            app.get("/api/products?category=teapots&currency=GBP&min_price=1500")
                .await
        ),
        ["POT-5", "POT-6"]
    );

    // Several products by id in one request (as a checkout prices its
    // cart): the live ones, in listing order; unknown ids are left out.
    let unknown = "3f1e9a56-8d1c-4c41-9a8e-0d2b5f7a9c10";
    assert_eq!(
        names(
            app.get(&format!(
                "/api/products?ids={},{unknown},{}",
                created[5].to_uppercase(),
                created[1]
            ))
            .await
        ),
        ["POT-1", "POT-5"]
    );
    let r = app.get("/api/products?ids=POT-1").await;
    assert_eq!(r.status, 422, "{}", r.text());
    assert_eq!(r.json()["parameter"], "ids");

    // Lists carry an ETag too; it changes with the content.
    let r = app.get("/api/products?category=tea").await;
    let etag = header(&r, "etag").to_string();
    let r = call(
        &app,
        "GET",
        "/api/products?category=tea",
        &[("if-none-match", &etag)],
        "",
    )
    .await;
    assert_eq!(r.status, 304);
    assert!(r.body.is_empty());
    let tea = "/api/products/5eed0000-0000-4000-8000-000000000007";
    let r = call(&app, "DELETE", tea, &[admin()], "").await;
    assert_eq!(r.status, 204, "{}", r.text());
    let r = call(
        &app,
        "GET",
        "/api/products?category=tea",
        &[("if-none-match", &etag)],
        "",
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["items"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn the_listing_queries_use_their_indexes() {
    let db = TestDb::new("product_explain").await;
    let app = start(&db, &manifest("")).await;
    // The first request migrates.
    assert_eq!(app.get("/api/products?limit=1").await.status, 200);
    let client = db.client().await;
    client
        .batch_execute(
            "INSERT INTO product.products (id, sku, name, description, category, price_amount, currency)
             SELECT gen_random_uuid(), 'BULK-' || i, 'Bulk item ' || i,
                    CASE WHEN i % 1000 = 0 THEN 'a zephyr blue teapot' ELSE 'plain filler number ' || i END,
                    'cat-' || (i % 200), i, CASE WHEN i % 2 = 0 THEN 'USD' ELSE 'EUR' END
             FROM generate_series(1, 20000) AS i;
             UPDATE product.products SET deleted_at = now() WHERE sku LIKE 'BULK-%' AND random() < 0.1;
             ANALYZE product.products;",
        )
        .await
        .unwrap();
    use list_sql::{select, Filter, Param};
    let cases = [
        (
            "the first page",
            Filter {
                limit: 21,
                ..Default::default()
            },
            "products_page",
        ),
        (
            "a later page",
            Filter {
                after: Some(9000),
                limit: 21,
                ..Default::default()
            },
            "products_page",
        ),
        (
            "a category",
            Filter {
                category: Some("cat-7"),
                limit: 21,
                ..Default::default()
            },
            "products_category",
        ),
        (
            "a category, later page",
            Filter {
                category: Some("cat-7"),
                after: Some(9000),
                limit: 21,
                ..Default::default()
            },
            "products_category",
        ),
        (
            "a price range",
            Filter {
                currency: Some("USD"),
                min_price: Some(100),
                max_price: Some(160),
                limit: 21,
                ..Default::default()
            },
            "products_price",
        ),
        (
            "some products by id",
            Filter {
                ids: Some(
                    "5eed0000-0000-4000-8000-000000000001,5eed0000-0000-4000-8000-000000000002",
                ),
                limit: 2,
                ..Default::default()
            },
            "products_pkey",
        ),
        (
            "a search",
            Filter {
                text: Some("zephyr"),
                limit: 21,
                ..Default::default()
            },
            "products_search",
        ),
    ];
    for (what, filter, index) in cases {
        let (sql, params) = select("id, sku", &filter);
        let params: Vec<Box<dyn tokio_postgres::types::ToSql + Sync>> = params
            .into_iter()
            .map(|p| -> Box<dyn tokio_postgres::types::ToSql + Sync> {
                match p {
                    Param::Text(s) => Box::new(s),
                    Param::Int(n) => Box::new(n),
                }
            })
            .collect();
        let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
            params.iter().map(|p| p.as_ref()).collect();
        let plan: Vec<String> = client
            .query(&format!("EXPLAIN {sql}"), &refs)
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        let plan = plan.join("\n");
        assert!(
            plan.contains(index),
            "{what}: expected {index}\n{sql}\n{plan}"
        );
        assert!(
            !plan.contains("Seq Scan"),
            "{what}: a sequential scan\n{sql}\n{plan}"
        );
    }
}

#[tokio::test]
async fn the_demo_catalogue_and_every_event_reach_a_consumer() {
    let db = TestDb::new("product_events").await;
    // The durable events test consumer, subscribed to the product events
    // it knows: it decodes each against its schema (a bad one would be
    // dead-lettered) and keeps a view of the products.
    let app = start(
        &db,
        &manifest(
            r#"
[application.trigger.postgres]
address = "{{ db_url }}"
poll_interval_ms = 200

[[trigger.postgres]]
component = "consumer"
events = ["com.bitvelocity.product.created.v1", "com.bitvelocity.product.updated.v1"]
max_attempts = 2
retry_initial_ms = 100
retry_max_ms = 200

[component.consumer]
source = "{wasm:event-consumer}"
allowed_outbound_hosts = ["postgres://127.0.0.1:5432"]
[component.consumer.variables]
db_url = "{{ db_url }}"
"#,
        ),
    )
    .await;
    // The first request seeds the catalogue, with its events.
    let r = app.get("/api/products").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        scalar(&db, "SELECT count(*) FROM bv_events.outbox WHERE type = 'com.bitvelocity.product.created.v1'").await,
        DEMO
    );
    let seeded = events_of(&db, "5eed0000-0000-4000-8000-000000000001").await;
    assert_eq!(
        seeded[0]["data"],
        json!({
            "productId": "5eed0000-0000-4000-8000-000000000001", "sku": "MUG-RED-350",
            "name": "Red stoneware mug",
            "description": "350 ml stoneware mug with a glossy red glaze. Dishwasher safe.",
            "category": "mugs", "price": { "amount": 1299, "currency": "USD" }, "status": "active"
        })
    );
    let r = create(&app, mug("MUG-NEW")).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_string();
    let mut change = mug("MUG-NEW");
    change["price"]["amount"] = json!(1500);
    let r = call(
        &app,
        "PUT",
        &format!("/api/products/{id}"),
        &[admin(), JSON, ("if-match", "\"1\"")],
        &change.to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let seen = db
            .client()
            .await
            .query_one("SELECT count(*) FROM seen", &[])
            .await
            .map(|r| r.get::<_, i64>(0))
            .unwrap_or(0);
        if seen == DEMO + 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{seen} events handled\n{}",
            app.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        scalar(&db, "SELECT count(*) FROM bv_events.dead_letters").await,
        0
    );
    let view = db
        .client()
        .await
        .query_one(
            "SELECT sku, price_amount, updates FROM product_view WHERE product_id = $1",
            &[&id],
        )
        .await
        .unwrap();
    assert_eq!(
        (
            view.get::<_, String>(0),
            view.get::<_, i64>(1),
            view.get::<_, i32>(2)
        ),
        ("MUG-NEW".to_string(), 1500, 1)
    );
    assert_eq!(
        scalar(&db, "SELECT count(*) FROM product_view").await,
        DEMO + 1
    );
}
