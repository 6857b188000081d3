//! `order-sweeper`: gives back what stalled checkouts hold.
//!
//! A checkout saga (component `order`) records each step in
//! `orders.sagas` / `orders.saga_log`. When its process dies mid-way (or a
//! dependency hangs), the saga stops moving with stock reserved and maybe
//! a payment authorized. This component finds such sagas and cancels
//! them, in two halves:
//!
//! 1. **Cron** (`[[trigger.cron]]`, e.g. every 2 s): in one transaction,
//!    takes every saga still `running` (or `compensating`) whose last step
//!    is older than the timeout, marks it `compensating` and publishes
//!    `order.expired` for it. The cron world's handler is synchronous, and
//!    a synchronous export may not wait on asynchronous imports (variables,
//!    outbound HTTP); so this half only uses Postgres' blocking calls,
//!    reads the `db_url` variable through `wasi:config/store` (synchronous)
//!    and the timeout from its environment, `SAGA_TIMEOUT_SECONDS`
//!    (default 30).
//! 2. **Event handler** (`[[trigger.postgres]]` on
//!    `com.bitvelocity.order.expired.v1`): releases the reservation and
//!    voids or refunds the payment over service chaining, then moves the
//!    order to `CANCELLED` (reason `saga-timeout`, `order.cancelled`) and
//!    the saga to `finished`. A FAILED order whose compensation did not
//!    complete stays FAILED. Failures are retried by the trigger; every
//!    call is idempotent. It reports `orders{outcome="expired"}` and
//!    `saga_compensations{step, result}` (`bv_service::telemetry`).

#![deny(missing_docs)]

mod cron;

use bv_events_guest::{Event, Transaction};
use bv_orders::model::{OrderId, SagaState, Status, Step};
use bv_orders::store::{self, Move};
use serde::Deserialize;
use serde_json::json;

/// `order.expired`'s data, as far as the handler needs it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Expired {
    order_id: OrderId,
    /// The saga step it stalled at (a fixed set: a metric label).
    #[serde(default)]
    step: String,
}

#[bv_events_guest::handler]
async fn on_expired(event: Event<Expired>) -> anyhow::Result<()> {
    let id = &event.data.order_id;
    let conn = store::open().await.map_err(|p| anyhow::anyhow!(p.detail))?;
    let Some(order) = store::load(&conn, id)
        .await
        .map_err(|p| anyhow::anyhow!(p.detail))?
    else {
        return Ok(());
    };
    let state = conn
        .query(
            "SELECT state FROM orders.sagas WHERE order_id = $1",
            vec![spin_sdk::pg::ParameterValue::Str(id.as_str().to_string())],
        )
        .await?
        .collect()
        .await?
        .first()
        .and_then(|r| r.get::<String>("state"))
        .and_then(|s| SagaState::parse(&s));
    if state != Some(SagaState::Compensating) {
        // Handled before, or the saga finished after all.
        return Ok(());
    }
    // The pool is shared with the services called: hold no connection
    // across a call.
    drop(conn);
    // The calls and the event below join the trace of `order.expired`.
    let trace = bv_service::Trace::from_traceparent(event.traceparent());
    let given_back = bv_orders::services::give_back(&trace, id).await;
    let result = if given_back.is_ok() { "done" } else { "failed" };
    bv_service::telemetry::counter(
        "saga_compensations",
        &[("step", step_label(&event.data.step)), ("result", result)],
        1,
    );
    given_back.map_err(|e| anyhow::anyhow!("order {id}: {e}"))?;
    let conn = store::open().await.map_err(|p| anyhow::anyhow!(p.detail))?;
    if Status::CANCELLABLE.contains(&order.status) {
        let moved = store::transition(
            &conn,
            id,
            Move {
                from: &Status::CANCELLABLE,
                to: Status::Cancelled,
                reason: Some("saga-timeout"),
                saga: Some(SagaState::Finished),
                event: (
                    "com.bitvelocity.order.cancelled.v1",
                    json!({
                        "orderId": id, "customerId": order.customer,
                        "reason": "saga-timeout", "previousStatus": order.status.as_str()
                    }),
                ),
                trace: event.traceparent(),
            },
        )
        .await
        .map_err(|p| anyhow::anyhow!(p.detail))?;
        if moved {
            eprintln!("order-sweeper: order {id} cancelled (saga timed out)");
            bv_service::telemetry::counter("orders", &[("outcome", "expired")], 1);
            return Ok(());
        }
    }
    let tx = Transaction::begin(&conn).await?;
    tx.execute(
        "UPDATE orders.sagas SET state = $2, updated_at = clock_timestamp()
         WHERE order_id = $1",
        vec![
            spin_sdk::pg::ParameterValue::Str(id.as_str().to_string()),
            spin_sdk::pg::ParameterValue::Str(SagaState::Finished.as_str().to_string()),
        ],
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// `step` when it is one of the saga's steps, else `other`: label values
/// stay a fixed set whatever an event carries.
fn step_label(step: &str) -> &'static str {
    Step::parse(step).map_or("other", Step::as_str)
}
