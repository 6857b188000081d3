//! The cron half: finds stalled sagas with Postgres' blocking calls only.

use bv_events::CloudEvent;
use serde_json::json;
use spin_sdk::pg::wit::postgres::{Connection, DbValue, ParameterValue};

wit_bindgen::generate!({
    world: "fermyon:spin-cron/spin-cron@2.0.0",
    path: "../../wit/deps/spin-cron@2.0.0",
});

/// `wasi:config/store`: the component's variables, synchronously (the
/// cron world's handler may not wait on `spin:variables`' async `get`).
mod config {
    wit_bindgen::generate!({
        world: "wasi:config/imports@0.2.0-draft-2024-09-27",
        path: "../../wit/deps/wasi-runtime-config-2024-09-27",
    });
    pub use self::wasi::config::store::get;
}

/// The timeout when `SAGA_TIMEOUT_SECONDS` is not set.
const DEFAULT_TIMEOUT_SECONDS: i64 = 30;

/// The most sagas taken over in one firing.
const BATCH: i64 = 100;

struct Sweeper;

impl Guest for Sweeper {
    fn handle_cron_event(_metadata: Metadata) -> Result<(), Error> {
        sweep().map_err(Error::Other)
    }
}

export!(Sweeper);

fn sweep() -> Result<(), String> {
    let url = config::get("db_url")
        .map_err(|e| format!("reading variable db_url: {e:?}"))?
        .ok_or_else(|| "variable db_url is not set for this component".to_string())?;
    let timeout = match std::env::var("SAGA_TIMEOUT_SECONDS") {
        Ok(v) => v
            .parse::<i64>()
            .ok()
            .filter(|t| *t >= 1)
            .ok_or_else(|| format!("SAGA_TIMEOUT_SECONDS: `{v}` is not a whole number ≥ 1"))?,
        Err(_) => DEFAULT_TIMEOUT_SECONDS,
    };
    let conn = Connection::open(&url).map_err(|e| format!("opening the database: {e:?}"))?;
    let exists = conn
        .query("SELECT to_regclass('orders.sagas') IS NOT NULL", &[])
        .map_err(|e| format!("{e:?}"))?;
    if !matches!(
        exists.rows.first().and_then(|r| r.first()),
        Some(DbValue::Boolean(true))
    ) {
        // No order was ever placed here.
        return Ok(());
    }
    let run = |sql: &str, params: &[ParameterValue]| {
        conn.query(sql, params).map_err(|e| format!("{e:?}"))
    };
    run("BEGIN", &[])?;
    let result = (|| {
        let stale = run(
            "WITH stale AS (
                 SELECT order_id FROM orders.sagas
                 WHERE state IN ('running', 'compensating')
                   AND updated_at < clock_timestamp() - $1::bigint * interval '1 second'
                 ORDER BY updated_at LIMIT $2
                 FOR UPDATE SKIP LOCKED)
             UPDATE orders.sagas s SET state = 'compensating', updated_at = clock_timestamp()
             FROM stale, orders.orders o
             WHERE s.order_id = stale.order_id AND o.order_id = s.order_id
             RETURNING s.order_id, o.customer_id, o.status, s.step",
            &[ParameterValue::Int64(timeout), ParameterValue::Int64(BATCH)],
        )?;
        for row in &stale.rows {
            let text = |i: usize| match row.get(i) {
                Some(DbValue::Str(s)) => s.clone(),
                _ => String::new(),
            };
            let (id, customer, status, step) = (text(0), text(1), text(2), text(3));
            let event = CloudEvent::new(
                "com.bitvelocity.order.expired.v1",
                "/orders",
                &id,
                json!({
                    "orderId": id, "customerId": customer, "status": status,
                    "step": step, "timeoutSeconds": timeout
                }),
            );
            let encoded = bv_events::encode(&event).map_err(|e| e.to_string())?;
            run(
                "INSERT INTO bv_events.outbox (id, source, type, subject, time, event)
                 VALUES ($1, $2, $3, $4, $5::text::timestamptz, $6::text::jsonb)",
                &[
                    ParameterValue::Str(event.id().to_string()),
                    ParameterValue::Str(event.source().to_string()),
                    ParameterValue::Str(event.ty().to_string()),
                    ParameterValue::Str(id.clone()),
                    ParameterValue::Str(event.time().to_string()),
                    ParameterValue::Str(encoded),
                ],
            )?;
            eprintln!("order-sweeper: saga of order {id} stalled at {step}: taking it over");
        }
        Ok::<(), String>(())
    })();
    match result {
        Ok(()) => run("COMMIT", &[]).map(|_| ()),
        Err(e) => {
            let _ = run("ROLLBACK", &[]);
            Err(e)
        }
    }
}
