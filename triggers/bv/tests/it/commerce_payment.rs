//! The `payment` component end to end: the simulated card processor's
//! calls, failure modes and idempotency, checked through HTTP, the
//! `payments` table and the events in `bv_events.outbox`, against the real
//! PostgreSQL.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::auth_support::{self, admin, customer};
use crate::harness::*;
use crate::pg_support::*;
use crate::repo_manifest::RepoManifest;

/// The payment service as `spin.toml` has it.
fn manifest() -> String {
    RepoManifest::load()
        .only("payments", &["payment"])
        .without_rate_limits()
        .render()
}

const AUTHORIZED: &str = "com.bitvelocity.payment.authorized.v1";
const DECLINED: &str = "com.bitvelocity.payment.declined.v1";
const CAPTURED: &str = "com.bitvelocity.payment.captured.v1";
const REFUNDED: &str = "com.bitvelocity.payment.refunded.v1";

struct Processor {
    db: TestDb,
    app: TestApp,
}

impl Processor {
    /// A database with the `bv_events` schema (as `bv events init` makes
    /// it) and a `bv` serving the payment component; `vars` are
    /// `SPIN_VARIABLE_*` values.
    async fn start(tag: &str, vars: &[(&str, &str)]) -> Self {
        let db = TestDb::new(tag).await;
        events_init(&db).await;
        let mut env = vec![("SPIN_VARIABLE_DB_URL".to_string(), db.url())];
        env.extend(auth_support::env());
        env.extend(
            vars.iter()
                .map(|(k, v)| (format!("SPIN_VARIABLE_{}", k.to_uppercase()), v.to_string())),
        );
        let app = spawn_app_with(
            &manifest(),
            Spawn {
                env,
                ..Default::default()
            },
        )
        .await;
        Self { db, app }
    }

    /// A call as an administrator: the payment calls are the order saga's
    /// (over service chaining), and from outside an administrator's.
    async fn call(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Reply {
        let mut headers = headers.to_vec();
        headers.push(admin());
        request(
            self.app.addr,
            method,
            &format!("/api/payments{path}"),
            &headers,
            body.to_string(),
        )
        .await
    }

    async fn authorize(&self, body: &Value) -> Reply {
        self.call(
            "POST",
            "/authorize",
            &[("content-type", "application/json")],
            &body.to_string(),
        )
        .await
    }

    async fn post(&self, path: &str) -> Reply {
        self.call("POST", path, &[], "").await
    }

    async fn get(&self, path: &str) -> Reply {
        self.call("GET", path, &[], "").await
    }

    async fn admin(&self, method: &str, body: &str) -> Reply {
        self.call(
            method,
            "/admin/outage",
            &[("content-type", "application/json")],
            body,
        )
        .await
    }

    /// `count(*)` of `sql`'s table; 0 when the table does not exist yet
    /// (the component migrates on its first database use).
    async fn count(&self, sql: &str) -> i64 {
        let client = self.db.client().await;
        match client.query_one(sql, &[]).await {
            Ok(row) => row.get(0),
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) => 0,
            Err(e) => panic!("{sql}: {e}"),
        }
    }

    /// Nothing recorded at all: no payment, no event.
    async fn assert_nothing_recorded(&self) {
        assert_eq!(self.count("SELECT count(*) FROM payments").await, 0);
        assert_eq!(self.count("SELECT count(*) FROM bv_events.outbox").await, 0);
    }

    /// The events about `payment_id`, in outbox order: (type, data).
    async fn events(&self, payment_id: &str) -> Vec<(String, Value)> {
        let client = self.db.client().await;
        client
            .query(
                "SELECT type, event::text FROM bv_events.outbox WHERE subject = $1 ORDER BY seq",
                &[&payment_id],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| {
                let event: Value = serde_json::from_str(r.get(1)).unwrap();
                assert_eq!(event["source"], "/payments");
                assert_eq!(event["subject"], payment_id);
                (r.get(0), event["data"].clone())
            })
            .collect()
    }

    async fn status(&self, payment_id: &str) -> String {
        let client = self.db.client().await;
        client
            .query_one(
                "SELECT status FROM payments WHERE payment_id = $1",
                &[&payment_id],
            )
            .await
            .unwrap()
            .get(0)
    }
}

fn authorize_body(payment_id: &str, amount: i64, token: &str) -> Value {
    json!({
        "paymentId": payment_id,
        "orderId": format!("order-{payment_id}"),
        "amount": { "amount": amount, "currency": "EUR" },
        "card": { "token": token },
    })
}

/// Asserts a problem answer: status, `type` kind, and the `field`
/// member when given.
fn assert_problem(r: &Reply, status: u16, kind: &str, field: Option<&str>) {
    assert_eq!(r.status, status, "{}", r.text());
    assert_eq!(
        r.headers["content-type"],
        "application/problem+json",
        "{}",
        r.text()
    );
    let body = r.json();
    assert_eq!(
        body["type"],
        format!("urn:bitvelocity:problem:{kind}"),
        "{body}"
    );
    assert_eq!(body["status"], status, "{body}");
    if let Some(field) = field {
        assert_eq!(body["field"], field, "{body}");
    }
}

/// A change to a valid authorize body.
type Edit = Box<dyn Fn(&mut Value)>;

fn remove(body: &mut Value, field: &str) {
    body.as_object_mut().unwrap().remove(field).unwrap();
}

fn replayed(r: &Reply) -> bool {
    r.headers
        .get("idempotent-replayed")
        .is_some_and(|v| v == "true")
}

#[tokio::test]
async fn authorize_capture_refund_with_their_events_and_idempotent_repeats() {
    let p = Processor::start("pay_flow", &[]).await;
    let first = p
        .authorize(&authorize_body("pay-1", 3048, "tok_visa"))
        .await;
    assert_eq!(first.status, 201, "{}", first.text());
    assert!(!replayed(&first));
    let body = first.json();
    assert_eq!(body["paymentId"], "pay-1");
    assert_eq!(body["orderId"], "order-pay-1");
    assert_eq!(body["status"], "AUTHORIZED");
    assert_eq!(body["amount"], json!({ "amount": 3048, "currency": "EUR" }));
    let code = body["authorizationCode"].as_str().unwrap().to_string();
    assert!(!code.is_empty());
    assert!(
        body.get("card").is_none(),
        "the token is never echoed: {body}"
    );

    let got = p.get("/pay-1").await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.json(), body);

    let captured = p.post("/pay-1/capture").await;
    assert_eq!(captured.status, 200, "{}", captured.text());
    assert!(!replayed(&captured));
    assert_eq!(captured.json()["status"], "CAPTURED");
    assert_eq!(captured.json()["authorizationCode"], code.as_str());
    assert!(captured.json()["capturedAt"].is_string());
    let again = p.post("/pay-1/capture").await;
    assert_eq!(again.status, 200, "{}", again.text());
    assert!(replayed(&again));
    assert_eq!(again.json(), captured.json());

    let refunded = p.post("/pay-1/refund").await;
    assert_eq!(refunded.status, 200, "{}", refunded.text());
    assert_eq!(refunded.json()["status"], "REFUNDED");
    assert_eq!(refunded.json()["refundKind"], "refund");
    let again = p.post("/pay-1/refund").await;
    assert_eq!(again.status, 200, "{}", again.text());
    assert!(replayed(&again));
    assert_eq!(again.json(), refunded.json());

    // Capturing a refunded payment is not a repeat but a step back.
    let r = p.post("/pay-1/capture").await;
    assert_problem(&r, 409, "illegal-transition", None);
    assert_eq!(r.json()["paymentStatus"], "REFUNDED");

    // A repeated authorize answers what the first one did.
    let repeat = p
        .authorize(&authorize_body("pay-1", 3048, "tok_visa"))
        .await;
    assert_eq!(repeat.status, 201, "{}", repeat.text());
    assert!(replayed(&repeat));
    assert_eq!(repeat.json(), body);
    assert_eq!(p.get("/pay-1").await.json(), refunded.json());

    assert_eq!(p.status("pay-1").await, "REFUNDED");
    let events = p.events("pay-1").await;
    let types: Vec<&str> = events.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(types, [AUTHORIZED, CAPTURED, REFUNDED]);
    let authorized = &events[0].1;
    assert_eq!(authorized["authorizationCode"], code.as_str());
    assert_eq!(authorized["orderId"], "order-pay-1");
    assert_eq!(authorized["amount"]["amount"], 3048);
    assert_eq!(authorized["authorizedAt"], body["authorizedAt"]);
    assert_eq!(events[1].1["capturedAt"], captured.json()["capturedAt"]);
    assert_eq!(events[2].1["kind"], "refund");
    assert_eq!(p.count("SELECT count(*) FROM bv_events.outbox").await, 3);
}

#[tokio::test]
async fn refunding_an_authorized_payment_voids_it() {
    let p = Processor::start("pay_void", &[]).await;
    let r = p
        .authorize(&authorize_body("pay-v", 500, "tok_mastercard"))
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let r = p.post("/pay-v/refund").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["status"], "REFUNDED");
    assert_eq!(r.json()["refundKind"], "void");
    assert!(r.json().get("capturedAt").is_none());
    let r = p.post("/pay-v/capture").await;
    assert_problem(&r, 409, "illegal-transition", None);
    let events = p.events("pay-v").await;
    let types: Vec<&str> = events.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(types, [AUTHORIZED, REFUNDED]);
    assert_eq!(events[1].1["kind"], "void");
}

#[tokio::test]
async fn decline_tokens_are_recorded_and_a_repeat_gets_the_same_decline() {
    let p = Processor::start("pay_decline", &[]).await;
    for (token, kind) in [
        ("tok_decline", "card-declined"),
        ("tok_insufficient_funds", "insufficient-funds"),
        ("tok_expired", "card-expired"),
    ] {
        let id = format!("pay-{kind}");
        let r = p.authorize(&authorize_body(&id, 1000, token)).await;
        assert_problem(&r, 402, kind, None);
        assert!(!replayed(&r));
        let body = r.json();
        assert_eq!(body["paymentId"], id.as_str());
        assert_eq!(body["paymentStatus"], "DECLINED");
        assert_eq!(body["declineCode"], kind);
        let again = p.authorize(&authorize_body(&id, 1000, token)).await;
        assert_problem(&again, 402, kind, None);
        assert!(replayed(&again));
        assert_eq!(again.json(), body);

        assert_eq!(p.status(&id).await, "DECLINED");
        let got = p.get(&format!("/{id}")).await;
        assert_eq!(got.status, 200, "{}", got.text());
        assert_eq!(got.json()["status"], "DECLINED");
        assert_eq!(got.json()["declineCode"], kind);
        assert!(got.json().get("authorizationCode").is_none());
        for step in ["capture", "refund"] {
            let r = p.post(&format!("/{id}/{step}")).await;
            assert_problem(&r, 409, "illegal-transition", None);
            assert_eq!(r.json()["step"], step);
        }
        let events = p.events(&id).await;
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(events[0].0, DECLINED);
        assert_eq!(events[0].1["reason"], kind);
        assert_eq!(events[0].1["declinedAt"], body["declinedAt"]);
    }
    assert_eq!(p.count("SELECT count(*) FROM payments").await, 3);
}

#[tokio::test]
async fn amounts_over_the_limit_are_declined() {
    let p = Processor::start("pay_limit", &[("payment_amount_limit", "5000")]).await;
    let r = p
        .authorize(&authorize_body("pay-at", 5000, "tok_visa"))
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let r = p
        .authorize(&authorize_body("pay-over", 5001, "tok_visa"))
        .await;
    assert_problem(&r, 402, "amount-limit", None);
    assert_eq!(p.status("pay-over").await, "DECLINED");
    let events = p.events("pay-over").await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].0, DECLINED);
    assert_eq!(events[0].1["reason"], "amount-limit");
    assert_eq!(events[0].1["amount"]["amount"], 5001);
}

#[tokio::test]
async fn every_answer_waits_for_the_configured_latency() {
    let p = Processor::start("pay_latency", &[("payment_latency_ms", "400")]).await;
    let latency = Duration::from_millis(400);
    let started = Instant::now();
    let r = p
        .authorize(&authorize_body("pay-slow", 100, "tok_visa"))
        .await;
    assert!(started.elapsed() >= latency, "{:?}", started.elapsed());
    assert_eq!(r.status, 201, "{}", r.text());
    let started = Instant::now();
    let r = p.get("/pay-slow").await;
    assert!(started.elapsed() >= latency, "{:?}", started.elapsed());
    assert_eq!(r.status, 200, "{}", r.text());
    let started = Instant::now();
    let r = p.get("/pay-unknown").await;
    assert!(started.elapsed() >= latency, "{:?}", started.elapsed());
    assert_eq!(r.status, 404, "{}", r.text());
}

#[tokio::test]
async fn an_outage_answers_503_records_nothing_and_can_be_switched_at_run_time() {
    let p = Processor::start("pay_outage", &[("payment_outage", "true")]).await;
    let r = p.authorize(&authorize_body("pay-o", 100, "tok_visa")).await;
    assert_problem(&r, 503, "unavailable", None);
    let retry: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry > 0);
    let r = p.get("/pay-o").await;
    assert_problem(&r, 503, "unavailable", None);
    let r = p.post("/pay-o/capture").await;
    assert_problem(&r, 503, "unavailable", None);
    p.assert_nothing_recorded().await;

    // The switch is for admins only.
    let r = request(
        p.app.addr,
        "POST",
        "/api/payments/admin/outage",
        &[("content-type", "application/json"), customer("cora")],
        r#"{"on":false}"#,
    )
    .await;
    assert_problem(&r, 403, "forbidden", None);
    let r = request(
        p.app.addr,
        "POST",
        "/api/payments/admin/outage",
        &[("content-type", "application/json")],
        r#"{"on":false}"#,
    )
    .await;
    assert_problem(&r, 401, "unauthenticated", None);
    let r = p.admin("GET", "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json(),
        json!({ "on": true, "variable": true, "override": null })
    );
    let r = p.admin("POST", r#"{"on":"no"}"#).await;
    assert_problem(&r, 422, "invalid-field", Some("on"));

    // Switched off: the processor works.
    let r = p.admin("POST", r#"{"on":false}"#).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json(),
        json!({ "on": false, "variable": true, "override": false })
    );
    let r = p.authorize(&authorize_body("pay-o", 100, "tok_visa")).await;
    assert_eq!(r.status, 201, "{}", r.text());

    // Switched on again, then back to the variable's choice.
    let r = p.admin("POST", r#"{"on":true}"#).await;
    assert_eq!(r.json()["on"], true, "{}", r.text());
    let r = p.post("/pay-o/capture").await;
    assert_problem(&r, 503, "unavailable", None);
    assert_eq!(p.status("pay-o").await, "AUTHORIZED");
    let r = p.admin("DELETE", "").await;
    assert_eq!(
        r.json(),
        json!({ "on": true, "variable": true, "override": null })
    );
    assert_eq!(p.events("pay-o").await.len(), 1);
}

#[tokio::test]
async fn the_same_payment_id_with_another_request_is_a_mismatch() {
    let p = Processor::start("pay_mismatch", &[]).await;
    let r = p.authorize(&authorize_body("pay-m", 700, "tok_visa")).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let r = p.authorize(&authorize_body("pay-m", 701, "tok_visa")).await;
    assert_problem(&r, 422, "idempotency-mismatch", None);
    assert_eq!(r.json()["fields"], json!(["amount"]));
    let mut other = authorize_body("pay-m", 700, "tok_amex");
    other["orderId"] = json!("another-order");
    let r = p.authorize(&other).await;
    assert_problem(&r, 422, "idempotency-mismatch", None);
    assert_eq!(r.json()["fields"], json!(["orderId", "card.token"]));
    // A declined id is taken too.
    let r = p
        .authorize(&authorize_body("pay-d", 700, "tok_decline"))
        .await;
    assert_problem(&r, 402, "card-declined", None);
    let r = p.authorize(&authorize_body("pay-d", 700, "tok_visa")).await;
    assert_problem(&r, 422, "idempotency-mismatch", None);
    assert_eq!(p.count("SELECT count(*) FROM payments").await, 2);
    assert_eq!(p.count("SELECT count(*) FROM bv_events.outbox").await, 2);
}

#[tokio::test]
async fn concurrent_repeats_of_one_authorize_make_one_payment() {
    let p = Processor::start("pay_race", &[]).await;
    let body = authorize_body("pay-r", 1200, "tok_visa");
    let answers = futures::future::join_all((0..8).map(|_| p.authorize(&body))).await;
    let first = answers[0].json();
    for r in &answers {
        assert_eq!(r.status, 201, "{}", r.text());
        assert_eq!(r.json(), first);
    }
    assert_eq!(answers.iter().filter(|r| !replayed(r)).count(), 1);
    assert_eq!(p.count("SELECT count(*) FROM payments").await, 1);
    assert_eq!(p.events("pay-r").await.len(), 1);
}

#[tokio::test]
async fn bad_input_is_refused_specifically_and_nothing_is_recorded() {
    let p = Processor::start("pay_input", &[]).await;
    let json_ct = [("content-type", "application/json")];
    let r = p
        .call("POST", "/authorize", &json_ct, r#"{"paymentId":"#)
        .await;
    assert_problem(&r, 400, "malformed-json", None);
    let r = p
        .call(
            "POST",
            "/authorize",
            &[],
            &authorize_body("p", 1, "tok_visa").to_string(),
        )
        .await;
    assert_problem(&r, 415, "unsupported-media-type", None);

    let cases: Vec<(&str, Edit)> = vec![
        ("paymentId", Box::new(|b| remove(b, "paymentId"))),
        (
            "paymentId",
            Box::new(|b| b["paymentId"] = json!("has space")),
        ),
        ("paymentId", Box::new(|b| b["paymentId"] = json!(42))),
        ("orderId", Box::new(|b| remove(b, "orderId"))),
        ("orderId", Box::new(|b| b["orderId"] = json!(""))),
        ("amount", Box::new(|b| remove(b, "amount"))),
        (
            "amount.amount",
            Box::new(|b| b["amount"]["amount"] = json!(-5)),
        ),
        (
            "amount.amount",
            Box::new(|b| b["amount"]["amount"] = json!(0)),
        ),
        (
            "amount.amount",
            Box::new(|b| b["amount"]["amount"] = json!("12")),
        ),
        (
            "amount.amount",
            Box::new(|b| b["amount"]["amount"] = json!(12.5)),
        ),
        (
            "amount.currency",
            Box::new(|b| b["amount"]["currency"] = json!("XXX")),
        ),
        ("card", Box::new(|b| remove(b, "card"))),
        ("card.token", Box::new(|b| b["card"] = json!({}))),
        (
            "card.token",
            Box::new(|b| b["card"]["token"] = json!("visa")),
        ),
        (
            "card.token",
            Box::new(|b| b["card"]["token"] = json!("4242424242424242")),
        ),
        (
            "card.number",
            Box::new(|b| b["card"] = json!({ "number": "4242424242424242", "token": "tok_visa" })),
        ),
    ];
    for (field, edit) in cases {
        let mut body = authorize_body("pay-bad", 100, "tok_visa");
        edit(&mut body);
        let r = p.authorize(&body).await;
        assert_problem(&r, 422, "invalid-field", Some(field));
        assert!(
            r.json()["detail"].as_str().unwrap().starts_with(field),
            "the detail names `{field}`: {}",
            r.text()
        );
    }
    // Card details other than a token are unknown fields.
    let mut body = authorize_body("pay-bad", 100, "tok_visa");
    body["card"]["cvc"] = json!("123");
    let r = p.authorize(&body).await;
    assert_problem(&r, 422, "invalid-field", None);
    assert!(r.text().contains("cvc"), "{}", r.text());

    let huge = json!({ "paymentId": "pay-big", "pad": "x".repeat(100_000) }).to_string();
    let r = p.call("POST", "/authorize", &json_ct, &huge).await;
    assert_problem(&r, 413, "body-too-large", None);

    // Unknown payments, paths and methods.
    assert_problem(&p.get("/pay-none").await, 404, "not-found", None);
    assert_problem(&p.post("/pay-none/capture").await, 404, "not-found", None);
    assert_problem(&p.post("/pay-none/refund").await, 404, "not-found", None);
    assert_problem(&p.get("/bad%20id").await, 404, "not-found", None);
    assert_problem(&p.post("/pay-none/settle").await, 404, "not-found", None);
    assert_problem(&p.get("").await, 404, "not-found", None);
    let r = p.get("/authorize").await;
    assert_problem(&r, 405, "method-not-allowed", None);
    assert_eq!(r.headers["allow"], "POST");
    let r = p.post("/pay-none").await;
    assert_problem(&r, 405, "method-not-allowed", None);
    assert_eq!(r.headers["allow"], "GET, HEAD");

    p.assert_nothing_recorded().await;

    // Capture and refund take the whole amount: a body with fields is refused.
    let r = p
        .authorize(&authorize_body("pay-ok", 100, "tok_visa"))
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let r = p
        .call("POST", "/pay-ok/capture", &json_ct, r#"{"amount":50}"#)
        .await;
    assert_problem(&r, 422, "invalid-field", Some("amount"));
    let r = p.call("POST", "/pay-ok/refund", &json_ct, "{").await;
    assert_problem(&r, 400, "malformed-json", None);
    let r = p.call("POST", "/pay-ok/capture", &json_ct, "{}").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(p.count("SELECT count(*) FROM payments").await, 1);
    assert_eq!(p.events("pay-ok").await.len(), 2);
}
