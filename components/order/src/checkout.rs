//! `POST /api/orders`: the checkout, idempotent per `Idempotency-Key`, and
//! its saga.

use bv_events_guest::{CloudEvent, Transaction};
use bv_orders::model::{CustomerId, OrderId, OrderLine, Phase, ProductId, SagaState, Status, Step};
use bv_orders::saga::{self, Failure};
use bv_orders::services::{self, CART};
use bv_orders::store::{self, Entry, Move, Order, SOURCE};
use bv_service::{read_json, telemetry, Currency, Money, Problem, ProblemKind, Reply, Trace};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use spin_sdk::http::{FullBody, Request, Response};
use spin_sdk::pg::{Connection, ParameterValue};

use crate::resilience::Calls;
use crate::{customer, open};

/// The largest checkout body: `{"card": {"token": …}}` is small.
const MAX_BODY: usize = 4 * 1024;

/// The longest `Idempotency-Key`.
const MAX_KEY: usize = 200;

/// The checkout body.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct CheckoutBody {
    card: Card,
}

/// The card to pay with: a processor token, never a card number.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct Card {
    token: Token,
}

/// `tok_…`, 5–64 ASCII letters, digits and `_`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(try_from = "String")]
struct Token(String);

impl TryFrom<String> for Token {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let ok = s.starts_with("tok_")
            && (5..=64).contains(&s.len())
            && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if ok {
            Ok(Self(s))
        } else {
            Err("must be a card token `tok_…` (5–64 letters, digits, `_`)".into())
        }
    }
}

/// A cart line as the cart service answers it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CartLine {
    product_id: ProductId,
    sku: String,
    name: String,
    unit_price: Money,
    quantity: i64,
}

#[derive(Debug, Deserialize)]
struct Cart {
    items: Vec<CartLine>,
    /// Lines whose product the catalogue no longer has.
    #[serde(default)]
    unavailable: Vec<String>,
    /// Set when the cart priced some lines from its last known copy of
    /// the product (the product service was down).
    #[serde(default)]
    degraded: bool,
}

/// `POST /api/orders`.
pub async fn checkout(req: Request) -> Result<Reply, Problem> {
    let customer = customer(&req).await?;
    // The cart is read and emptied with the customer's own token.
    let authorization = bv_auth::authorization(req.headers());
    // Every call and event of the checkout joins the request's trace.
    let trace = Trace::of(&req);
    let key = idempotency_key(&req)?;
    let body: CheckoutBody = read_json(req, MAX_BODY).await?;
    let fingerprint = serde_json::to_string(&body).map_err(Problem::internal)?;
    let conn = open().await?;
    if let Some(reply) = replay(&conn, &customer, &key, &fingerprint).await? {
        return Ok(reply);
    }
    // The cart prices every line from the catalogue, whose lookups need
    // connections from the pool this one came from: under a checkout rush,
    // holding it across the call would leave the lookups none.
    drop(conn);
    let (items, total) = priced_cart(&trace, authorization.as_deref()).await?;
    let conn = open().await?;
    let Some(order) = create(
        &trace,
        &conn,
        &customer,
        &key,
        &fingerprint,
        items,
        total,
        &body,
    )
    .await?
    else {
        // Another request with this key created the order first.
        return replay(&conn, &customer, &key, &fingerprint)
            .await?
            .ok_or_else(|| Problem::internal("idempotency record vanished"));
    };
    // The pool is shared with the services the saga calls: hold no
    // connection across a call.
    drop(conn);
    let started = std::time::Instant::now();
    let saga = run(&trace, &order, &body.card.token.0, authorization.as_deref()).await;
    let outcome = if saga.is_ok() { "paid" } else { "failed" };
    telemetry::observe(
        "checkout_saga_seconds",
        &[("outcome", outcome)],
        started.elapsed().as_secs_f64(),
    );
    let (status, body) = match saga {
        Ok(order) => (201, order.view()),
        Err(problem) => (problem.status, problem.body()),
    };
    db().await?
        .execute(
            "UPDATE orders.idempotency SET status = $3, body = $4
         WHERE customer_id = $1 AND key = $2",
            vec![
                ParameterValue::Str(customer.as_str().to_string()),
                ParameterValue::Str(key),
                ParameterValue::Int32(i32::from(status)),
                ParameterValue::Str(body.to_string()),
            ],
        )
        .await?;
    Ok(answer(status, &body, false))
}

fn idempotency_key(req: &Request) -> Result<String, Problem> {
    let Some(value) = req.headers().get("idempotency-key") else {
        return Err(Problem::new(
            428,
            ProblemKind::IdempotencyKeyRequired,
            "An Idempotency-Key header is required",
            "send a unique `Idempotency-Key` header with each checkout; repeat it to retry safely",
        ));
    };
    let key = value.as_bytes();
    // Visible ASCII only (RFC 5234 VCHAR, 0x21–0x7E): no spaces, no
    // control characters, nothing outside ASCII.
    let visible = key.iter().all(|b| (0x21..=0x7e).contains(b));
    match std::str::from_utf8(key) {
        Ok(key) if visible && !key.is_empty() && key.len() <= MAX_KEY => Ok(key.to_string()),
        _ => Err(Problem::invalid_field(
            "Idempotency-Key",
            format!("must be 1–{MAX_KEY} visible ASCII characters"),
        )),
    }
}

fn answer(status: u16, body: &Value, replayed: bool) -> Reply {
    let content_type = if status >= 400 {
        "application/problem+json"
    } else {
        "application/json"
    };
    let mut builder = Response::builder()
        .status(status)
        .header("content-type", content_type);
    if replayed {
        builder = builder.header("idempotent-replayed", "true");
    }
    if status == 201 {
        if let Some(id) = body.get("orderId").and_then(Value::as_str) {
            builder = builder.header("location", format!("/api/orders/{id}"));
        }
    }
    // Every 503 says when to try again: the breaker's delay when one
    // refused the call, else the default.
    let retry_after = body.get("retryAfterSeconds").and_then(Value::as_u64);
    if let Some(seconds) =
        retry_after.or((status == 503).then_some(bv_service::DEFAULT_RETRY_AFTER_SECONDS))
    {
        builder = builder.header("retry-after", seconds);
    }
    builder
        .body(FullBody::new(Bytes::from(body.to_string())))
        .expect("a valid status")
}

/// The first answer to (`customer`, `key`), when there is one.
async fn replay(
    conn: &Connection,
    customer: &CustomerId,
    key: &str,
    fingerprint: &str,
) -> Result<Option<Reply>, Problem> {
    let rows = conn
        .query(
            "SELECT fingerprint, order_id, coalesce(status, 0) AS status, coalesce(body, '') AS body
             FROM orders.idempotency WHERE customer_id = $1 AND key = $2",
            vec![
                ParameterValue::Str(customer.as_str().to_string()),
                ParameterValue::Str(key.to_string()),
            ],
        )
        .await?
        .collect()
        .await?;
    let Some(row) = rows.first() else {
        return Ok(None);
    };
    let order_id = row.get::<String>("order_id").unwrap_or_default();
    if row.get::<String>("fingerprint").as_deref() != Some(fingerprint) {
        return Err(Problem::new(
            422,
            ProblemKind::IdempotencyMismatch,
            "The Idempotency-Key was used with another body",
            format!("key `{key}` was first used for order `{order_id}` with another body"),
        )
        .with("orderId", order_id));
    }
    let status = row.get::<i32>("status").unwrap_or(0);
    if status == 0 {
        return Err(Problem::new(
            409,
            ProblemKind::CheckoutInProgress,
            "The first request with this Idempotency-Key is still running",
            format!("order `{order_id}` is being checked out; fetch it or retry later"),
        )
        .with("orderId", order_id));
    }
    let body: Value =
        serde_json::from_str(&row.get::<String>("body").unwrap_or_default()).unwrap_or(Value::Null);
    let status = u16::try_from(status).map_err(Problem::internal)?;
    Ok(Some(answer(status, &body, true)))
}

/// The customer's cart as order lines, with the total recomputed. The
/// cart is asked with `Cache-Control: no-cache`, so that it prices every
/// line from the catalogue now rather than from its cache: an order is
/// placed at the current price of products that exist now.
async fn priced_cart(
    trace: &Trace,
    authorization: Option<&str>,
) -> Result<(Vec<OrderLine>, Money), Problem> {
    let cart = services::call_with(
        trace,
        "GET",
        CART,
        authorization,
        &[("cache-control", "no-cache")],
        None,
    )
    .await
    .map_err(|e| {
        eprintln!("order: cart: {e}");
        Problem::unavailable("the cart service failed")
    })?;
    if cart.status != 200 {
        eprintln!("order: cart answered {} {}", cart.status, cart.body);
        return Err(Problem::unavailable("the cart service failed"));
    }
    let cart: Cart = serde_json::from_value(cart.body).map_err(|e| {
        eprintln!("order: the cart does not parse: {e}");
        Problem::unavailable("the cart service answered something unexpected")
    })?;
    if cart.degraded {
        // An order is placed at current prices only, never at stale ones.
        return Err(Problem::new(
            503,
            ProblemKind::DependencyUnavailable,
            "A dependency is unavailable",
            "the product service is unavailable, so the cart's prices cannot be confirmed; retry later",
        )
        .with("dependency", "product"));
    }
    if let Some(gone) = cart.unavailable.first() {
        // A product withdrawn from the catalogue (or now priced in another
        // currency) is not sold, whatever the cart showed before.
        return Err(Problem::new(
            409,
            ProblemKind::UnknownProduct,
            "No such product",
            format!(
                "the catalogue no longer offers product `{gone}`; remove it from the cart and check out again"
            ),
        )
        .with("productId", gone.as_str())
        .with("productIds", cart.unavailable.clone()));
    }
    if cart.items.is_empty() {
        return Err(Problem::new(
            409,
            ProblemKind::EmptyCart,
            "The cart is empty",
            "add items to the cart before checking out",
        ));
    }
    let currency: Currency = cart.items[0].unit_price.currency();
    let mut total = Money::new(0, currency).map_err(Problem::internal)?;
    let mut lines = Vec::new();
    for line in &cart.items {
        let line_total = line
            .unit_price
            .times(line.quantity)
            .filter(|_| line.quantity > 0);
        let Some(line_total) = line_total else {
            return Err(Problem::unavailable("the cart has an invalid line"));
        };
        total = total.plus(line_total).ok_or_else(|| {
            Problem::new(
                409,
                ProblemKind::CurrencyMismatch,
                "The cart mixes currencies",
                "every line of an order must be in one currency",
            )
        })?;
        lines.push(OrderLine {
            product_id: line.product_id.clone(),
            sku: line.sku.clone(),
            name: line.name.clone(),
            unit_price: line.unit_price,
            quantity: line.quantity,
            line_total,
        });
    }
    Ok((lines, total))
}

/// Creates the order `PENDING` with its idempotency record, saga row, first
/// saga log entry and `order.placed`, in one transaction; `None` when the
/// key was taken meanwhile.
#[allow(clippy::too_many_arguments)]
async fn create(
    trace: &Trace,
    conn: &Connection,
    customer: &CustomerId,
    key: &str,
    fingerprint: &str,
    items: Vec<OrderLine>,
    total: Money,
    body: &CheckoutBody,
) -> Result<Option<Order>, Problem> {
    let tx = Transaction::begin(conn).await?;
    // The order's id is made by the statement that claims the key: an
    // empty answer means the key was taken.
    let claimed = tx
        .query(
            "INSERT INTO orders.idempotency (customer_id, key, fingerprint, order_id)
             VALUES ($1, $2, $3, gen_random_uuid()::text) ON CONFLICT DO NOTHING
             RETURNING order_id",
            vec![
                ParameterValue::Str(customer.as_str().to_string()),
                ParameterValue::Str(key.to_string()),
                ParameterValue::Str(fingerprint.to_string()),
            ],
        )
        .await?
        .collect()
        .await?;
    let Some(id) = claimed
        .first()
        .and_then(|r| r.get::<String>("order_id"))
        .map(OrderId::from)
    else {
        tx.rollback().await?;
        return Ok(None);
    };
    let order_id = ParameterValue::Str(id.as_str().to_string());
    let items_json = serde_json::to_string(&items).map_err(Problem::internal)?;
    let run = async {
        let created = tx
            .query(
                format!(
                    "INSERT INTO orders.orders
                         (order_id, customer_id, status, items, total_amount, currency, card_token)
                     VALUES ($1, $2, 'PENDING', $3::text::jsonb, $4, $5, $6)
                     RETURNING {}",
                    store::COLUMNS
                ),
                vec![
                    order_id.clone(),
                    ParameterValue::Str(customer.as_str().to_string()),
                    ParameterValue::Str(items_json),
                    ParameterValue::Int64(total.amount()),
                    ParameterValue::Str(total.currency().code().to_string()),
                    ParameterValue::Str(body.card.token.0.clone()),
                ],
            )
            .await?
            .collect()
            .await
            .map_err(|e| bv_events_guest::Error::Postgres {
                operation: "query",
                source: e,
            })?;
        tx.execute(
            "WITH saga AS (
                 INSERT INTO orders.sagas (order_id, state, step) VALUES ($1, $2, $3))
             INSERT INTO orders.saga_log (order_id, step, phase) VALUES ($1, $3, $4)",
            vec![
                order_id.clone(),
                ParameterValue::Str(SagaState::Running.as_str().into()),
                ParameterValue::Str(Step::CreateOrder.as_str().into()),
                ParameterValue::Str(Phase::Done.as_str().into()),
            ],
        )
        .await?;
        let placed_items: Vec<Value> = items
            .iter()
            .map(|l| {
                json!({
                    "productId": l.product_id, "sku": l.sku,
                    "quantity": l.quantity, "unitPrice": l.unit_price
                })
            })
            .collect();
        tx.publish(&CloudEvent::new(
            "com.bitvelocity.order.placed.v1",
            SOURCE,
            id.as_str(),
            json!({ "orderId": id, "customerId": customer, "items": placed_items, "total": total }),
        )
        .traced(trace.traceparent()))
        .await?;
        Ok::<_, bv_events_guest::Error>(created)
    }
    .await;
    let created = match run {
        Ok(created) => created,
        Err(e) => {
            let _ = tx.rollback().await;
            return Err(Problem::from(e));
        }
    };
    tx.commit().await?;
    created
        .first()
        .map(Order::from_row)
        .transpose()?
        .map(Some)
        .ok_or_else(|| Problem::internal("the new order vanished"))
}

/// Runs the saga of `order` to `PAID`, or to `FAILED` with its resources
/// given back (the problem to answer). `authorization` is the customer's,
/// forwarded to empty their cart.
async fn run(
    trace: &Trace,
    order: &Order,
    token: &str,
    authorization: Option<&str>,
) -> Result<Order, Problem> {
    match steps(trace, order, token).await? {
        Ok(()) => telemetry::counter("orders", &[("outcome", "paid")], 1),
        Err(failure) => return Err(fail(trace, order, failure).await?),
    }
    // Paid: the saga holds nothing that must be given back any more, and
    // is `finished`, so these entries leave the saga row as it is.
    let id = &order.id;
    store::log_step(&db().await?, id, Step::ClearCart, Phase::Started, None).await?;
    let cleared = services::call(trace, "DELETE", CART, authorization, None).await;
    let (phase, detail) = match saga::clear_cart(cleared) {
        None => (Phase::Done, None),
        Some(why) => (Phase::Failed, Some(why)),
    };
    store::log_step(&db().await?, id, Step::ClearCart, phase, detail.as_deref()).await?;
    store::load(&db().await?, id)
        .await?
        .ok_or_else(|| Problem::internal("the order vanished"))
}

/// The saga's steps up to `PAID` ([`saga::CHECKOUT`]), each logged
/// `started` before its call and `done` after it, then its move; the
/// inner `Err` is the failed step. A `done` entry is written with the
/// next write the saga makes anyway (its move, or the next step's
/// `started`), which comes before any further call.
async fn steps(trace: &Trace, order: &Order, token: &str) -> Result<Result<(), Failure>, Problem> {
    let id = &order.id;
    let calls = Calls::open().await?;
    let mut done: Option<Entry<'static>> = None;
    for step in &saga::CHECKOUT {
        let started = Entry::of(step.step, Phase::Started);
        let entries: Vec<Entry<'_>> = done.take().into_iter().chain([started]).collect();
        store::log_steps(&db().await?, id, &entries).await?;
        let call = (step.call)(order, token);
        let called = calls
            .call(
                trace,
                step.dependency,
                call.method,
                &call.url,
                call.body.as_ref(),
            )
            .await;
        if let Err(failure) = (step.classify)(called) {
            return Ok(Err(failure));
        }
        let finished = Entry::of(step.step, Phase::Done);
        match step.then {
            Some(then) => {
                let mut moving = then(order);
                moving.trace = trace.traceparent();
                if !store::transition_logged(&db().await?, id, &[finished], moving).await? {
                    return Ok(Err(Failure::moved_meanwhile(step.step)));
                }
            }
            None => done = Some(finished),
        }
    }
    if let Some(finished) = done {
        store::log_steps(&db().await?, id, &[finished]).await?;
    }
    Ok(Ok(()))
}

/// Gives back what the saga holds and ends the order `FAILED` (unless it
/// moved meanwhile); the problem to answer.
async fn fail(trace: &Trace, order: &Order, f: Failure) -> Result<Problem, Problem> {
    let id = &order.id;
    let step_failed = Entry {
        step: f.step,
        phase: Phase::Failed,
        detail: Some(&f.reason),
    };
    let compensating = Entry::of(Step::Compensate, Phase::Started);
    store::log_steps(&db().await?, id, &[step_failed, compensating]).await?;
    let saga = match Calls::open()
        .await?
        .give_back(trace, id, f.payment_sent)
        .await
    {
        Ok(()) => {
            store::log_step(&db().await?, id, Step::Compensate, Phase::Done, None).await?;
            SagaState::Finished
        }
        Err(e) => {
            eprintln!("order {id}: compensating: {e}");
            store::log_step(&db().await?, id, Step::Compensate, Phase::Failed, Some(&e)).await?;
            // The sweeper finishes the compensation.
            SagaState::Compensating
        }
    };
    let result = if saga == SagaState::Finished {
        "done"
    } else {
        "failed"
    };
    telemetry::counter(
        "saga_compensations",
        &[("step", f.step.as_str()), ("result", result)],
        1,
    );
    if !f.order_cancelled() {
        let failed = store::transition(
            &db().await?,
            id,
            Move {
                from: &Status::FAILABLE,
                to: Status::Failed,
                reason: Some(&f.reason),
                saga: Some(saga),
                event: (
                    "com.bitvelocity.order.failed.v1",
                    json!({
                        "orderId": id, "customerId": order.customer,
                        "reason": f.reason, "step": f.step.as_str()
                    }),
                ),
                trace: trace.traceparent(),
            },
        )
        .await?;
        if failed {
            // The kind is one of a fixed set, unlike the callee's reason.
            telemetry::counter(
                "orders",
                &[("outcome", "failed"), ("reason", f.kind().as_str())],
                1,
            );
        }
    }
    Ok(f.problem(id))
}

/// A connection for one database step, given back to the pool right after.
async fn db() -> Result<Connection, Problem> {
    open().await
}
