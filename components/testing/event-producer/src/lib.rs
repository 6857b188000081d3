//! `event-producer`: the producing side of the durable event tests. It
//! changes its own table and publishes the matching events in the same
//! transaction, with `bv-events-guest`'s `Transaction`.
//!
//! The database address is the component variable `db_url`; the database
//! must hold the `bv_events` schema (a Postgres trigger or
//! `bv events init` creates it).
//!
//! `POST /products` with
//! `{"products": [{"productId", "sku", "name", "price": {"amount", "currency"}}, …], "rollback"?: bool, "updates"?: n}`:
//!
//! - creates `products(product_id text primary key, sku, name, price_amount bigint, currency, version int)`
//!   if missing (outside the transaction);
//! - in one transaction, per product: upserts its row (`version` 1, or +1
//!   when it exists) and publishes `com.bitvelocity.product.created.v1`
//!   (subject = `productId`, `status` "active" unless given); then, for
//!   k = 1..=n, sets its name to `"<name> v<k>"` (`version` + 1) and
//!   publishes `com.bitvelocity.product.updated.v1` with `revision` k and
//!   `changes.name` = `"<name> v<k>"`;
//! - commits and answers 201 `{"published": <count>, "ids": [<event ids in publishing order>]}`,
//!   or with `"rollback": true` rolls back and answers 200 `{"rolledBack": true}`.
//!
//! An event that breaks its schema (a negative `price.amount`, a missing
//! field, an unknown one) rolls everything back and answers 422
//! `application/problem+json` whose `detail` names the field. A malformed
//! request is 400, a database failure 500 (both problem+json too).

use bv_events_guest::{CloudEvent, Transaction};
use bytes::Bytes;
use serde_json::{json, Map, Value};
use spin_sdk::http::body::IncomingBodyExt;
use spin_sdk::http::{FullBody, Request, Response};
use spin_sdk::http_service;
use spin_sdk::pg::{Connection, ParameterValue};

type Reply = Response<FullBody<Bytes>>;

const SOURCE: &str = "/catalog";
const CREATED: &str = "com.bitvelocity.product.created.v1";
const UPDATED: &str = "com.bitvelocity.product.updated.v1";

const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS products (
    product_id   text PRIMARY KEY,
    sku          text,
    name         text,
    price_amount bigint,
    currency     text,
    version      int NOT NULL
)";

const UPSERT: &str = "INSERT INTO products (product_id, sku, name, price_amount, currency, version)
    VALUES ($1, $2, $3, $4, $5, 1)
    ON CONFLICT (product_id) DO UPDATE SET
        sku = EXCLUDED.sku, name = EXCLUDED.name, price_amount = EXCLUDED.price_amount,
        currency = EXCLUDED.currency, version = products.version + 1";

const RENAME: &str = "UPDATE products SET name = $2, version = version + 1 WHERE product_id = $1";

#[http_service]
async fn handle(req: Request) -> Reply {
    // The route is exactly `/products`: anything after it is not ours.
    let path_info = req
        .headers()
        .get("spin-path-info")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !path_info.trim_end_matches('/').is_empty() {
        return problem(404, "not-found", "Not found", "only POST /products exists");
    }
    if req.method() != "POST" {
        return problem(405, "method", "Method not allowed", "use POST /products");
    }
    let body: Value = match req.into_body().bytes().await {
        Ok(b) => match serde_json::from_slice(&b) {
            Ok(v) => v,
            Err(e) => return Failure::Request(format!("body: not JSON: {e}")).reply(),
        },
        Err(e) => return Failure::Request(format!("body: {e:?}")).reply(),
    };
    match products(&body).await {
        Ok(reply) => reply,
        Err(f) => f.reply(),
    }
}

/// Why a request failed, as the tests see it.
enum Failure {
    /// 400: the request is malformed.
    Request(String),
    /// 422: an event breaks its schema.
    Invalid(String),
    /// 500: the database or the runtime failed.
    Internal(String),
}

impl From<spin_sdk::pg::Error> for Failure {
    fn from(e: spin_sdk::pg::Error) -> Self {
        Failure::Internal(format!("postgres: {e}"))
    }
}

impl From<bv_events_guest::Error> for Failure {
    fn from(e: bv_events_guest::Error) -> Self {
        match e {
            e @ bv_events_guest::Error::Invalid { .. } => Failure::Invalid(e.to_string()),
            e => Failure::Internal(e.to_string()),
        }
    }
}

impl Failure {
    fn reply(self) -> Reply {
        match self {
            Failure::Request(d) => problem(400, "bad-request", "Bad request", &d),
            Failure::Invalid(d) => problem(422, "invalid-event", "Event breaks its schema", &d),
            Failure::Internal(d) => problem(500, "internal", "Internal error", &d),
        }
    }
}

fn reply(status: u16, body: Value) -> Reply {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(FullBody::new(Bytes::from(body.to_string())))
        .expect("valid status")
}

fn problem(status: u16, kind: &str, title: &str, detail: &str) -> Reply {
    let body = json!({
        "type": format!("urn:bitvelocity:problem:{kind}"),
        "title": title,
        "status": status,
        "detail": detail,
    });
    Response::builder()
        .status(status)
        .header("content-type", "application/problem+json")
        .body(FullBody::new(Bytes::from(body.to_string())))
        .expect("valid status")
}

async fn products(body: &Value) -> Result<Reply, Failure> {
    let products = body["products"]
        .as_array()
        .ok_or_else(|| Failure::Request("products: must be an array".into()))?;
    let rollback = match &body["rollback"] {
        Value::Null => false,
        Value::Bool(b) => *b,
        _ => return Err(Failure::Request("rollback: must be a boolean".into())),
    };
    let updates = match &body["updates"] {
        Value::Null => 0,
        v => v
            .as_u64()
            .ok_or_else(|| Failure::Request("updates: must be a non-negative integer".into()))?,
    };
    let url = spin_sdk::variables::get("db_url")
        .await
        .map_err(|e| Failure::Internal(format!("variable db_url: {e:?}")))?;
    let conn = Connection::open(url).await?;
    // Concurrent first requests would race on CREATE TABLE IF NOT EXISTS
    // (a unique violation in pg_type): serialise them.
    let setup = Transaction::begin(&conn).await?;
    setup
        .execute(
            "SELECT pg_advisory_xact_lock(4242)",
            Vec::<ParameterValue>::new(),
        )
        .await?;
    setup
        .execute(CREATE_TABLE, Vec::<ParameterValue>::new())
        .await?;
    setup.commit().await?;

    let tx = Transaction::begin(&conn).await?;
    match write(&tx, products, updates).await {
        Err(f) => {
            // Nothing of this request may stay; the error to report is `f`.
            let _ = tx.rollback().await;
            Err(f)
        }
        Ok(_) if rollback => {
            tx.rollback().await?;
            Ok(reply(200, json!({"rolledBack": true})))
        }
        Ok(ids) => {
            tx.commit().await?;
            Ok(reply(201, json!({"published": ids.len(), "ids": ids})))
        }
    }
}

/// The state changes and their events; the ids of the events published.
async fn write(
    tx: &Transaction<'_>,
    products: &[Value],
    updates: u64,
) -> Result<Vec<String>, Failure> {
    let mut ids = Vec::new();
    for (i, product) in products.iter().enumerate() {
        let Value::Object(fields) = product else {
            return Err(Failure::Request(format!(
                "products[{i}]: must be an object"
            )));
        };
        let id = text(fields.get("productId"));
        tx.execute(
            UPSERT,
            vec![
                ParameterValue::Str(id.clone()),
                param_text(fields.get("sku")),
                param_text(fields.get("name")),
                product["price"]["amount"]
                    .as_i64()
                    .map_or(ParameterValue::DbNull, ParameterValue::Int64),
                param_text(product["price"].get("currency")),
            ],
        )
        .await?;
        let mut data: Map<String, Value> = fields.clone();
        data.entry("status").or_insert_with(|| json!("active"));
        let event = CloudEvent::new(CREATED, SOURCE, &id, Value::Object(data));
        tx.publish(&event).await?;
        ids.push(event.id().to_string());

        let name = text(fields.get("name"));
        for k in 1..=updates {
            let renamed = format!("{name} v{k}");
            tx.execute(
                RENAME,
                vec![
                    ParameterValue::Str(id.clone()),
                    ParameterValue::Str(renamed.clone()),
                ],
            )
            .await?;
            let data = json!({"productId": id, "revision": k, "changes": {"name": renamed}});
            let event = CloudEvent::new(UPDATED, SOURCE, &id, data);
            tx.publish(&event).await?;
            ids.push(event.id().to_string());
        }
    }
    Ok(ids)
}

/// A string field, or "" (the event's schema check reports it).
fn text(v: Option<&Value>) -> String {
    v.and_then(Value::as_str).unwrap_or_default().to_string()
}

fn param_text(v: Option<&Value>) -> ParameterValue {
    v.and_then(Value::as_str)
        .map_or(ParameterValue::DbNull, |s| {
            ParameterValue::Str(s.to_string())
        })
}
