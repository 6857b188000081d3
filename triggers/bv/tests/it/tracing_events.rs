//! One checkout is one trace: the commerce services run with tracing on
//! towards the in-test OTLP receiver, and the spans of a checkout (the
//! order's server span, its calls to cart, inventory and payment, their
//! server spans, and the deliveries of every event the checkout published)
//! must form one connected tree under the client's `traceparent`. An event
//! published outside any trace starts a trace of its own at its delivery,
//! and what its handler calls and publishes joins that trace.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::auth_support;
use crate::harness::*;
use crate::otlp_support::*;
use crate::pg_support::*;
use crate::redis::redis_shared_lock;

const JSON: (&str, &str) = ("content-type", "application/json");

/// The event types a paid checkout publishes.
const CHECKOUT_EVENTS: &[&str] = &[
    "com.bitvelocity.order.placed.v1",
    "com.bitvelocity.stock.reserved.v1",
    "com.bitvelocity.order.confirmed.v1",
    "com.bitvelocity.payment.authorized.v1",
    "com.bitvelocity.payment.captured.v1",
    "com.bitvelocity.order.paid.v1",
];

/// The commerce components a checkout touches, as `spin.toml` wires them,
/// plus `event-sink` subscribed to every order, stock and payment event.
/// No cron: the tests publish `order.expired` themselves.
fn manifest(prefix: &str) -> String {
    format!(
        r#"spin_manifest_version = 2
[application]
name = "tracing-events"
[variables]
db_url = {{ required = true }}
redis_url = {{ default = "redis://127.0.0.1:6379" }}
auth_public_keys = {{ required = true }}

[application.trigger.postgres]
address = "{{{{ db_url }}}}"
poll_interval_ms = 100

[[trigger.http]]
route = "/api/products/..."
component = "product"

[[trigger.http]]
route = "/api/inventory/..."
component = "inventory"

[[trigger.http]]
route = "/api/carts/..."
component = "cart"

[[trigger.http]]
route = "/api/payments/..."
component = "payment"

[[trigger.http]]
route = "/api/orders/..."
component = "order"

[[trigger.postgres]]
component = "inventory-projector"
events = ["com.bitvelocity.product.created.v1"]

[[trigger.postgres]]
component = "order-sweeper"
events = ["com.bitvelocity.order.expired.v1"]

[[trigger.postgres]]
component = "event-sink"
events = ["com.bitvelocity.order.*", "com.bitvelocity.stock.*", "com.bitvelocity.payment.*"]
max_attempts = 1

[component.product]
source = "{{wasm:product}}"
allowed_outbound_hosts = ["postgres://127.0.0.1:5432"]
[component.product.variables]
db_url = "{{{{ db_url }}}}"
auth_public_keys = "{{{{ auth_public_keys }}}}"

[component.inventory]
source = "{{wasm:inventory}}"
allowed_outbound_hosts = ["postgres://127.0.0.1:5432"]
[component.inventory.variables]
db_url = "{{{{ db_url }}}}"
auth_public_keys = "{{{{ auth_public_keys }}}}"

[component.inventory-projector]
source = "{{wasm:inventory-projector}}"
allowed_outbound_hosts = ["postgres://127.0.0.1:5432"]
[component.inventory-projector.variables]
db_url = "{{{{ db_url }}}}"

[component.cart]
source = "{{wasm:cart}}"
allowed_outbound_hosts = ["{{{{ redis_url }}}}", "http://product.spin.internal"]
key_value_stores = ["default"]
[component.cart.variables]
redis_url = "{{{{ redis_url }}}}"
cart_ttl_seconds = "3600"
cart_key_prefix = "{prefix}"
product_cache_ttl_seconds = "30"
auth_public_keys = "{{{{ auth_public_keys }}}}"

[component.payment]
source = "{{wasm:payment}}"
allowed_outbound_hosts = ["postgres://127.0.0.1:5432"]
key_value_stores = ["default"]
[component.payment.variables]
db_url = "{{{{ db_url }}}}"
payment_amount_limit = "100000"
payment_latency_ms = "0"
payment_outage = "false"
auth_public_keys = "{{{{ auth_public_keys }}}}"

[component.order]
source = "{{wasm:order}}"
allowed_outbound_hosts = ["postgres://127.0.0.1:5432", "{{{{ redis_url }}}}", "http://inventory.spin.internal", "http://payment.spin.internal", "http://cart.spin.internal"]
[component.order.variables]
db_url = "{{{{ db_url }}}}"
redis_url = "{{{{ redis_url }}}}"
auth_public_keys = "{{{{ auth_public_keys }}}}"

[component.order-sweeper]
source = "{{wasm:order-sweeper}}"
allowed_outbound_hosts = ["postgres://127.0.0.1:5432", "http://inventory.spin.internal", "http://payment.spin.internal"]
environment = {{ SAGA_TIMEOUT_SECONDS = "30" }}
[component.order-sweeper.variables]
db_url = "{{{{ db_url }}}}"

[component.event-sink]
source = "{{wasm:event-sink}}"
# A fresh instance per event, so that each delivery shows its instantiation.
[component.event-sink.tool.bv]
instance_policy = "strict"
"#
    )
}

struct Shop {
    app: TestApp,
    db: TestDb,
    otlp: OtlpReceiver,
    _lock: std::fs::File,
}

impl Shop {
    async fn start(tag: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let lock = redis_shared_lock();
        let prefix = format!(
            "bv-it-trace-{tag}-{}-{}:",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let db = TestDb::new(&format!("trace_{tag}")).await;
        let otlp = OtlpReceiver::start().await;
        let mut env = tracing_env(&otlp.endpoint());
        env.push(("SPIN_VARIABLE_DB_URL".into(), db.url()));
        env.extend(auth_support::env());
        let app = spawn_app_with(
            &manifest(&prefix),
            Spawn {
                env,
                ..Default::default()
            },
        )
        .await;
        Self {
            app,
            db,
            otlp,
            _lock: lock,
        }
    }

    async fn call(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Reply {
        request(self.app.addr, method, path, headers, body.to_string()).await
    }

    /// A product priced `price` cents with `on_hand` units in stock: its id.
    async fn product(&self, sku: &str, price: i64, on_hand: i64) -> String {
        let admin = auth_support::admin();
        let body = json!({
            "sku": sku, "name": format!("Product {sku}"), "category": "mugs",
            "price": { "amount": price, "currency": "EUR" }
        });
        let r = self
            .call("POST", "/api/products", &[admin, JSON], &body.to_string())
            .await;
        assert_eq!(r.status, 201, "{}", r.text());
        let id = r.json()["id"].as_str().unwrap().to_string();
        // The projector opens the stock record from product.created.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let r = self
                .call("GET", &format!("/api/inventory/{id}"), &[admin], "")
                .await;
            if r.status == 200 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "no stock record\n{}",
                self.app.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let r = self
            .call(
                "POST",
                &format!("/api/inventory/{id}/restock"),
                &[admin, JSON],
                &json!({ "quantity": on_hand }).to_string(),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        id
    }

    /// Puts `quantity` of `product` in `customer`'s cart and checks out,
    /// with `extra` headers (a `traceparent`): the order's id.
    async fn paid_order(
        &self,
        customer: &str,
        product: &str,
        quantity: i64,
        extra: &[(&str, &str)],
    ) -> String {
        let who = auth_support::customer(customer);
        let r = self
            .call(
                "POST",
                "/api/carts/me/items",
                &[who, JSON],
                &json!({ "productId": product, "quantity": quantity }).to_string(),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        let mut headers = vec![who, ("idempotency-key", "k-1"), JSON];
        headers.extend_from_slice(extra);
        let r = self
            .call(
                "POST",
                "/api/orders",
                &headers,
                &json!({ "card": { "token": "tok_visa" } }).to_string(),
            )
            .await;
        assert_eq!(r.status, 201, "{}\n{}", r.text(), self.app.log());
        assert_eq!(r.json()["status"], "PAID");
        r.json()["orderId"].as_str().unwrap().to_string()
    }

    /// `(id, type)` of the events about `subject`, in publishing order.
    async fn events_about(&self, subject: &str) -> Vec<(String, String)> {
        self.db
            .client()
            .await
            .query(
                "SELECT id, type FROM bv_events.outbox WHERE subject = $1 ORDER BY seq",
                &[&subject],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect()
    }

    /// Writes an event into the outbox as a producer outside any trace
    /// would (no `traceparent`): its id.
    async fn publish_untraced(&self, ty: &str, subject: &str, data: serde_json::Value) -> String {
        static N: AtomicU32 = AtomicU32::new(0);
        let id = format!(
            "it-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let event = json!({
            "specversion": "1.0", "id": id, "source": "/orders", "type": ty,
            "subject": subject, "time": "2026-01-02T03:04:05.678Z",
            "datacontenttype": "application/json", "data": data,
        });
        self.db
            .client()
            .await
            .execute(
                "INSERT INTO bv_events.outbox (id, source, type, subject, time, event)
                 VALUES ($1, '/orders', $2, $3, now(), $4::text::jsonb)",
                &[&id, &ty, &subject, &event.to_string()],
            )
            .await
            .unwrap();
        id
    }
}

/// A random W3C trace id (32 hex) and span id (16 hex), never all zero.
fn ids() -> (String, String) {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let seed = (nanos ^ (u128::from(std::process::id()) << 64)) | 1;
    let span = (seed as u64).rotate_left(17) | 1;
    (format!("{seed:032x}"), format!("{span:016x}"))
}

/// The delivery span of event `id` to `component`, if it arrived.
fn delivery<'a>(spans: &'a [SpanRecord], id: &str, component: &str) -> Option<&'a SpanRecord> {
    spans.iter().find(|s| {
        s.kind == KIND_CONSUMER
            && s.attr_str("messaging.message.id") == Some(id)
            && s.attr_str("bv.component") == Some(component)
    })
}

/// Whether `span` is a client span of a call to `host`.
fn calls(span: &SpanRecord, host: &str) -> bool {
    span.kind == KIND_CLIENT
        && (span.attr_str("server.address") == Some(host)
            || span.attr_str("url.full").is_some_and(|u| u.contains(host)))
}

/// The spans of `trace`.
fn in_trace<'a>(spans: &'a [SpanRecord], trace: &str) -> Vec<&'a SpanRecord> {
    spans.iter().filter(|s| s.trace_id == trace).collect()
}

/// The spans of `trace` whose parent is not in it, but for `root`, whose
/// parent must be `root_parent` (`""`: none).
fn orphans(trace: &[&SpanRecord], root: &SpanRecord, root_parent: &str) -> Vec<SpanRecord> {
    let ids: HashSet<&str> = trace.iter().map(|s| s.span_id.as_str()).collect();
    trace
        .iter()
        .filter(|s| {
            if s.span_id == root.span_id {
                s.parent_span_id != root_parent
            } else {
                !ids.contains(s.parent_span_id.as_str())
            }
        })
        .map(|s| (*s).clone())
        .collect()
}

/// The spans received once the trace of `root` is whole: a span is
/// exported when it ends, and a server span of a reused instance may end
/// a little after its children (when the instance moves on or is
/// dropped), so this waits (up to 10 s) until no span of the trace misses
/// its parent.
async fn settled(otlp: &OtlpReceiver, root: &SpanRecord, root_parent: &str) -> Vec<SpanRecord> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let spans = otlp.spans();
        if orphans(&in_trace(&spans, &root.trace_id), root, root_parent).is_empty()
            || Instant::now() >= deadline
        {
            return spans;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Asserts that every span of `trace` has its parent in the trace, except
/// the root, whose parent is `root_parent` (`""`: none).
#[track_caller]
fn assert_connected(trace: &[&SpanRecord], root: &SpanRecord, root_parent: &str) {
    let orphans = orphans(trace, root, root_parent);
    assert!(
        orphans.is_empty(),
        "spans whose parent is not in the trace:\n{}\nthe trace:\n{}",
        describe(&orphans),
        describe(&trace.iter().map(|s| (*s).clone()).collect::<Vec<_>>())
    );
}

/// Asserts the messaging attributes of a delivery span.
#[track_caller]
fn assert_delivery(span: &SpanRecord, ty: &str, subscription: &str) {
    assert_eq!(span.name, format!("process {ty}"), "{span:?}");
    assert_eq!(span.kind, KIND_CONSUMER, "{span:?}");
    assert_eq!(
        span.attr_str("messaging.system"),
        Some("bv_events"),
        "{span:?}"
    );
    assert_eq!(
        span.attr_str("messaging.destination.name"),
        Some(subscription),
        "{span:?}"
    );
    assert_eq!(
        span.attr_str("cloudevents.event_type"),
        Some(ty),
        "{span:?}"
    );
    assert_eq!(span.attr_i64("bv.event.attempt"), Some(1), "{span:?}");
    assert_ne!(span.status_code, 2, "{span:?}");
}

#[tokio::test]
async fn one_checkout_is_one_trace() {
    let shop = Shop::start("checkout").await;
    let mug = shop.product("MUG", 1299, 5).await;
    let (trace, client_parent) = ids();
    let traceparent = format!("00-{trace}-{client_parent}-01");
    let order_id = shop
        .paid_order("alice", &mug, 2, &[("traceparent", &traceparent)])
        .await;

    // Every event of the checkout, and its delivery to event-sink.
    let events = shop.events_about(&order_id).await;
    let types: Vec<&str> = events.iter().map(|(_, t)| t.as_str()).collect();
    for ty in CHECKOUT_EVENTS {
        assert!(types.contains(ty), "{ty} not published: {types:?}");
    }
    shop.otlp
        .wait_for_spans(Duration::from_secs(30), |spans| {
            events
                .iter()
                .all(|(id, _)| delivery(spans, id, "event-sink").is_some())
                && spans.iter().any(|s| {
                    s.trace_id == trace
                        && s.kind == KIND_SERVER
                        && s.attr_str("bv.component") == Some("order")
                })
        })
        .await;
    let root = shop
        .otlp
        .spans()
        .into_iter()
        .find(|s| {
            s.trace_id == trace
                && s.kind == KIND_SERVER
                && s.attr_str("bv.component") == Some("order")
        })
        .unwrap();
    let spans = settled(&shop.otlp, &root, &client_parent).await;
    let trace_spans = in_trace(&spans, &trace);
    let by_id: HashMap<&str, &SpanRecord> = trace_spans
        .iter()
        .map(|s| (s.span_id.as_str(), *s))
        .collect();
    let children = |parent: &SpanRecord| -> Vec<&SpanRecord> {
        trace_spans
            .iter()
            .filter(|s| s.parent_span_id == parent.span_id)
            .copied()
            .collect()
    };

    // The order's server span is the root, under the client's span.
    let roots: Vec<&&SpanRecord> = trace_spans
        .iter()
        .filter(|s| s.kind == KIND_SERVER && s.attr_str("bv.component") == Some("order"))
        .collect();
    assert_eq!(roots.len(), 1, "{}", describe(&spans));
    let order = *roots[0];
    assert_eq!(order.parent_span_id, client_parent, "{order:?}");
    assert_eq!(order.attr_str("http.request.method"), Some("POST"));
    assert_connected(&trace_spans, order, &client_parent);

    // order → cart, inventory, payment: client spans under the order's
    // server span, each with the callee's server span under it.
    for (host, component) in [
        ("cart.spin.internal", "cart"),
        ("inventory.spin.internal", "inventory"),
        ("payment.spin.internal", "payment"),
    ] {
        let clients: Vec<&SpanRecord> = children(order)
            .into_iter()
            .filter(|s| calls(s, host))
            .collect();
        assert!(
            !clients.is_empty(),
            "no call to {host} under the order's span:\n{}",
            describe(&spans)
        );
        for client in clients {
            let served = children(client)
                .into_iter()
                .any(|s| s.kind == KIND_SERVER && s.attr_str("bv.component") == Some(component));
            assert!(
                served,
                "no {component} server span under {client:?}:\n{}",
                describe(&spans)
            );
        }
    }

    // Each event's delivery is in the trace, a child of the server span
    // of the request that published it.
    for (id, ty) in &events {
        let span = delivery(&spans, id, "event-sink").unwrap();
        assert_eq!(span.trace_id, trace, "{ty} delivered in another trace");
        assert_delivery(span, ty, "event-sink");
        assert_eq!(span.attr_str("bv.component"), Some("event-sink"));
        let publisher = by_id
            .get(span.parent_span_id.as_str())
            .unwrap_or_else(|| panic!("{ty}: parent not in the trace: {span:?}"));
        let producer = match ty.split('.').nth(2) {
            Some("order") => "order",
            Some("stock") => "inventory",
            Some("payment") => "payment",
            other => panic!("unexpected type {other:?}"),
        };
        assert_eq!(publisher.kind, KIND_SERVER, "{ty}: {publisher:?}");
        assert_eq!(
            publisher.attr_str("bv.component"),
            Some(producer),
            "{ty}: {publisher:?}"
        );
        // The handler's instance is made under its delivery.
        assert!(
            children(span)
                .iter()
                .any(|s| s.name == "instantiate event-sink"),
            "{ty}: no instantiation under the delivery:\n{}",
            describe(&spans)
        );
    }
    // The checkout's events name the trace themselves.
    let stored: Vec<String> = shop
        .db
        .client()
        .await
        .query(
            "SELECT coalesce(event->>'traceparent', '') FROM bv_events.outbox WHERE subject = $1",
            &[&order_id],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    for t in stored {
        assert!(t.starts_with(&format!("00-{trace}-")), "{t}");
    }

    // Nothing of this checkout went to another trace.
    let strays: Vec<SpanRecord> = spans
        .iter()
        .filter(|s| s.trace_id != trace)
        .filter(|s| {
            s.attributes
                .values()
                .any(|v| v.as_str().is_some_and(|v| v.contains(&order_id)))
        })
        .cloned()
        .collect();
    assert!(
        strays.is_empty(),
        "spans of the checkout in other traces:\n{}",
        describe(&strays)
    );
}

#[tokio::test]
async fn an_untraced_event_starts_a_trace_its_handler_continues() {
    let shop = Shop::start("untraced").await;
    let mug = shop.product("MUG", 1299, 5).await;
    // No traceparent from the client: the checkout is a trace of its own.
    let order_id = shop.paid_order("bob", &mug, 1, &[]).await;

    // Make the saga look stalled and publish its expiry as the sweeper's
    // cron half does: outside any trace.
    shop.db
        .client()
        .await
        .execute(
            "UPDATE orders.sagas SET state = 'compensating' WHERE order_id = $1",
            &[&order_id],
        )
        .await
        .unwrap();
    let expired = shop
        .publish_untraced(
            "com.bitvelocity.order.expired.v1",
            &order_id,
            json!({
                "orderId": order_id, "customerId": "bob", "status": "PAID",
                "step": "capture-payment", "timeoutSeconds": 1
            }),
        )
        .await;
    // An event that breaks its schema: rejected and dead-lettered at once.
    let broken = shop
        .publish_untraced(
            "com.bitvelocity.order.expired.v1",
            &order_id,
            json!({ "orderId": order_id }),
        )
        .await;

    let cancelled_id = |spans: &[SpanRecord]| -> Option<String> {
        spans
            .iter()
            .find(|s| {
                s.attr_str("cloudevents.event_type") == Some("com.bitvelocity.order.cancelled.v1")
                    && s.attr_str("bv.component") == Some("event-sink")
            })
            .and_then(|s| s.attr_str("messaging.message.id").map(str::to_string))
    };
    // What giving back publishes, delivered to event-sink.
    let given_back = |spans: &[SpanRecord]| {
        [
            "com.bitvelocity.stock.released.v1",
            "com.bitvelocity.payment.refunded.v1",
        ]
        .iter()
        .all(|ty| {
            spans.iter().any(|s| {
                s.attr_str("cloudevents.event_type") == Some(ty)
                    && s.attr_str("bv.component") == Some("event-sink")
            })
        })
    };
    shop.otlp
        .wait_for_spans(Duration::from_secs(30), |spans| {
            delivery(spans, &expired, "order-sweeper").is_some()
                && delivery(spans, &expired, "event-sink").is_some()
                && delivery(spans, &broken, "event-sink").is_some()
                && cancelled_id(spans).is_some()
                && given_back(spans)
        })
        .await;
    let root = delivery(&shop.otlp.spans(), &expired, "order-sweeper")
        .unwrap()
        .clone();
    let spans = settled(&shop.otlp, &root, "").await;

    // Without a traceparent, each delivery is a root.
    let sweep = delivery(&spans, &expired, "order-sweeper").unwrap();
    assert_eq!(sweep.parent_span_id, "", "{sweep:?}");
    assert_delivery(sweep, "com.bitvelocity.order.expired.v1", "order-sweeper");
    assert_eq!(
        sweep.attr_str("cloudevents.event_subject"),
        Some(order_id.as_str())
    );
    let sunk = delivery(&spans, &expired, "event-sink").unwrap();
    assert_eq!(sunk.parent_span_id, "", "{sunk:?}");
    assert_ne!(sunk.trace_id, sweep.trace_id);

    // The handler's work joins the delivery's trace: its statements (the
    // instance works under the delivery span), its calls to inventory and
    // payment with their server spans, and the delivery of the
    // order.cancelled it published.
    let trace = in_trace(&spans, &sweep.trace_id);
    assert_connected(&trace, sweep, "");
    let under = |parent: &SpanRecord| -> Vec<&SpanRecord> {
        trace
            .iter()
            .filter(|s| s.parent_span_id == parent.span_id)
            .copied()
            .collect()
    };
    assert!(
        under(sweep)
            .iter()
            .any(|s| s.attr_str("db.system.name") == Some("postgresql")),
        "no Postgres statement under the delivery:\n{}",
        describe(&spans)
    );
    for (host, component) in [
        ("inventory.spin.internal", "inventory"),
        ("payment.spin.internal", "payment"),
    ] {
        let client = under(sweep)
            .into_iter()
            .find(|s| calls(s, host))
            .unwrap_or_else(|| panic!("no call to {host}:\n{}", describe(&spans)));
        assert!(
            under(client)
                .iter()
                .any(|s| s.kind == KIND_SERVER && s.attr_str("bv.component") == Some(component)),
            "no {component} server span under {client:?}"
        );
    }
    let cancelled = cancelled_id(&spans).unwrap();
    let cancelled = delivery(&spans, &cancelled, "event-sink").unwrap();
    assert_delivery(
        cancelled,
        "com.bitvelocity.order.cancelled.v1",
        "event-sink",
    );
    assert_eq!(cancelled.trace_id, sweep.trace_id, "{cancelled:?}");
    assert_eq!(cancelled.parent_span_id, sweep.span_id, "{cancelled:?}");

    // A rejected delivery is an error, marked as dead-lettered.
    let rejected = delivery(&spans, &broken, "event-sink").unwrap();
    assert_eq!(rejected.status_code, 2, "{rejected:?}");
    assert_eq!(
        rejected.attr_str("error.type"),
        Some("rejected"),
        "{rejected:?}"
    );
    assert_eq!(
        rejected.attributes.get("bv.event.dead_lettered"),
        Some(&json!(true)),
        "{rejected:?}"
    );
}

/// A Redis message and a cron tick each start a trace (neither carries
/// trace context): a consumer span per message, a span per firing, with
/// the instance's work (its instantiation, its outbound Redis commands)
/// under them and failures recorded.
#[tokio::test]
async fn messages_and_ticks_are_spans() {
    let _lock = redis_shared_lock();
    let channel = format!("bv-it-trace-{}", std::process::id());
    let list = format!("{channel}-seen");
    let manifest = format!(
        r#"spin_manifest_version = 2
[application]
name = "tracing-messages"
[application.trigger.redis]
address = "redis://127.0.0.1:6379"

[[trigger.http]]
route = "/..."
component = "web"

[[trigger.redis]]
channel = "{channel}"
component = "handler"

[[trigger.cron]]
component = "ticker"
cron_expression = "*/1 * * * * *"

[component.web]
source = "{{probe}}"

[component.handler]
source = "{{wasm:redis-handler}}"
allowed_outbound_hosts = ["redis://127.0.0.1:6379"]
[component.handler.variables]
redis_address = "redis://127.0.0.1:6379"

[component.ticker]
source = "{{wasm:cron-probe}}"
environment = {{ CRON_PROBE_NAME = "{channel}" }}
"#
    );
    let otlp = OtlpReceiver::start().await;
    let app = spawn_app_with(
        &manifest,
        Spawn {
            env: tracing_env(&otlp.endpoint()),
            ..Default::default()
        },
    )
    .await;
    let mut redis = redis::Client::open("redis://127.0.0.1:6379")
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    // The subscription is made while bv starts: publish until it is heard.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let heard: i64 = redis::cmd("PUBLISH")
            .arg(&channel)
            .arg(format!("{list} ok"))
            .query_async(&mut redis)
            .await
            .unwrap();
        if heard > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{}", app.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _: i64 = redis::cmd("PUBLISH")
        .arg(&channel)
        .arg(format!("fail {list}"))
        .query_async(&mut redis)
        .await
        .unwrap();

    let name = format!("process {channel}");
    let tick = "cron */1 * * * * *";
    let spans = otlp
        .wait_for_spans(Duration::from_secs(20), |spans| {
            spans.iter().filter(|s| s.name == name).count() >= 2
                && spans.iter().any(|s| s.name == tick)
        })
        .await;
    let _: () = redis::cmd("DEL")
        .arg(&list)
        .query_async(&mut redis)
        .await
        .unwrap();

    let messages: Vec<&SpanRecord> = spans.iter().filter(|s| s.name == name).collect();
    for span in &messages {
        assert_eq!(span.kind, KIND_CONSUMER, "{span:?}");
        assert_eq!(span.parent_span_id, "", "{span:?}");
        assert_eq!(span.attr_str("messaging.system"), Some("redis"));
        assert_eq!(
            span.attr_str("messaging.destination.name"),
            Some(channel.as_str())
        );
        assert_eq!(span.attr_str("bv.component"), Some("handler"));
    }
    let failed = messages.iter().filter(|s| s.status_code == 2).count();
    assert_eq!(failed, 1, "{}", describe(&spans));
    let failed = messages.iter().find(|s| s.status_code == 2).unwrap();
    assert_eq!(failed.attr_str("error.type"), Some("error"), "{failed:?}");
    for span in &messages {
        let spans = settled(&otlp, span, "").await;
        let under: Vec<&SpanRecord> = spans
            .iter()
            .filter(|s| s.parent_span_id == span.span_id)
            .collect();
        assert!(
            under.iter().any(|s| s.name == "instantiate handler"),
            "{}",
            describe(&spans)
        );
        // The handler's RPUSH, under the message it handles.
        assert!(
            under
                .iter()
                .any(|s| s.kind == KIND_CLIENT && s.attr_str("db.system.name") == Some("redis")),
            "no Redis command under {span:?}:\n{}",
            describe(&spans)
        );
    }

    let firing = spans.iter().find(|s| s.name == tick).unwrap();
    assert_eq!(firing.parent_span_id, "", "{firing:?}");
    assert_eq!(firing.attr_str("bv.component"), Some("ticker"));
    assert_eq!(firing.attr_str("bv.cron.expression"), Some("*/1 * * * * *"));
    let spans = settled(&otlp, firing, "").await;
    assert!(
        spans
            .iter()
            .any(|s| s.parent_span_id == firing.span_id && s.name == "instantiate ticker"),
        "{}",
        describe(&spans)
    );
}

/// A checkout whose caller left its trace out (sampled flag off) exports
/// nothing anywhere downstream: not the order's span, not the calls it
/// chains, not the deliveries of the events it published; those events
/// carry the trace on with the flag off. A traced checkout right after it
/// is exported whole.
#[tokio::test]
async fn a_checkout_its_caller_left_out_is_left_out_downstream() {
    let shop = Shop::start("left_out").await;
    let mug = shop.product("MUG", 1299, 5).await;
    let (left_out, caller) = ids();
    let order_id = shop
        .paid_order(
            "alice",
            &mug,
            1,
            &[("traceparent", &format!("00-{left_out}-{caller}-00"))],
        )
        .await;
    let db = shop.db.client().await;
    let rows = db
        .query(
            "SELECT seq, event->>'traceparent' FROM bv_events.outbox WHERE subject = $1",
            &[&order_id],
        )
        .await
        .unwrap();
    assert!(
        rows.len() >= CHECKOUT_EVENTS.len() - 2,
        "{} events",
        rows.len()
    );
    let mut last_seq = 0i64;
    for row in &rows {
        last_seq = last_seq.max(row.get(0));
        let traceparent: Option<String> = row.get(1);
        let traceparent = traceparent.expect("the event carries the trace on");
        assert!(
            traceparent.starts_with(&format!("00-{left_out}-")) && traceparent.ends_with("-00"),
            "{traceparent}"
        );
    }
    // Every one of them delivered to event-sink.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let at: Option<i64> = db
            .query_opt(
                "SELECT position_seq FROM bv_events.subscriptions WHERE name = 'event-sink'",
                &[],
            )
            .await
            .unwrap()
            .map(|r| r.get(0));
        if at.is_some_and(|at| at >= last_seq) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "event-sink is at {at:?}, not {last_seq}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let (traced, parent) = ids();
    shop.paid_order(
        "bob",
        &mug,
        1,
        &[("traceparent", &format!("00-{traced}-{parent}-01"))],
    )
    .await;
    shop.otlp
        .wait_for_spans(Duration::from_secs(30), |spans| {
            spans.iter().any(|s| {
                s.trace_id == traced
                    && s.kind == KIND_SERVER
                    && s.attr_str("bv.component") == Some("order")
            })
        })
        .await;
    // Past several export intervals.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let spans = shop.otlp.spans();
    assert!(
        in_trace(&spans, &left_out).is_empty(),
        "the left-out checkout exported spans:\n{}",
        describe(
            &in_trace(&spans, &left_out)
                .into_iter()
                .cloned()
                .collect::<Vec<_>>()
        )
    );
    assert!(in_trace(&spans, &traced).len() >= 8, "{}", describe(&spans));
}
