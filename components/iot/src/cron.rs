//! The cron half: partitions, retention and rollups, with Postgres'
//! blocking calls only (the cron world's handler is synchronous, see
//! `order-sweeper`).
//!
//! Each firing, in one transaction:
//! 1. daily partitions of `iot.telemetry` from yesterday to three days
//!    ahead exist;
//! 2. raw partitions older than `iot_raw_retention_days` (default 7) are
//!    dropped, one-minute rollups older than [`MINUTE_RETENTION_DAYS`] and
//!    one-hour rollups older than [`HOUR_RETENTION_DAYS`] deleted;
//! 3. the one-minute rollups of the last `iot_rollup_lookback_minutes`
//!    (default 10) closed minutes, and the one-hour rollups of the hours
//!    they fall in, are computed again from the raw samples: samples that
//!    arrive later than that are stored and evaluated, but stay out of
//!    the rollups;
//! 4. commands past their deadline without an acknowledgement are marked
//!    timed out.

use spin_sdk::pg::wit::postgres::{Connection, DbValue, ParameterValue};

wit_bindgen::generate!({
    world: "fermyon:spin-cron/spin-cron@2.0.0",
    path: "../../wit/deps/spin-cron@2.0.0",
});

mod config {
    wit_bindgen::generate!({
        world: "wasi:config/imports@0.2.0-draft-2024-09-27",
        path: "../../wit/deps/wasi-runtime-config-2024-09-27",
    });
    pub use self::wasi::config::store::get;
}

/// One-minute rollups are kept this long.
pub const MINUTE_RETENTION_DAYS: i64 = 30;
/// One-hour rollups are kept this long.
pub const HOUR_RETENTION_DAYS: i64 = 400;

struct Upkeep;

impl Guest for Upkeep {
    fn handle_cron_event(_metadata: Metadata) -> Result<(), Error> {
        upkeep().map_err(Error::Other)
    }
}

export!(Upkeep);

fn setting(name: &str, default: i64) -> Result<i64, String> {
    match config::get(name).map_err(|e| format!("reading variable {name}: {e:?}"))? {
        Some(v) if !v.trim().is_empty() => v
            .trim()
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 1)
            .ok_or_else(|| format!("{name}: `{v}` is not a whole number ≥ 1")),
        _ => Ok(default),
    }
}

fn upkeep() -> Result<(), String> {
    let url = config::get("db_url")
        .map_err(|e| format!("reading variable db_url: {e:?}"))?
        .ok_or_else(|| "variable db_url is not set for this component".to_string())?;
    let retention = setting("iot_raw_retention_days", 7)?;
    let lookback = setting("iot_rollup_lookback_minutes", 10)?;
    let conn = Connection::open(&url).map_err(|e| format!("opening the database: {e:?}"))?;
    let run = |sql: &str, params: &[ParameterValue]| {
        conn.query(sql, params).map_err(|e| format!("{e:?}"))
    };
    let exists = run("SELECT to_regclass('iot.telemetry') IS NOT NULL", &[])?;
    if !matches!(
        exists.rows.first().and_then(|r| r.first()),
        Some(DbValue::Boolean(true))
    ) {
        // The API or the ingester has not run here yet: nothing to keep.
        return Ok(());
    }
    let since = format!("-{lookback} minutes");
    run("BEGIN", &[])?;
    let result = (|| {
        run(
            "SELECT iot.ensure_partitions(now() - interval '1 day', 4)",
            &[],
        )?;
        run(
            "SELECT iot.drop_partitions_before(now() - $1::bigint * interval '1 day')",
            &[ParameterValue::Int64(retention)],
        )?;
        run(
            "DELETE FROM iot.rollup_1m WHERE bucket < now() - $1::bigint * interval '1 day'",
            &[ParameterValue::Int64(MINUTE_RETENTION_DAYS)],
        )?;
        run(
            "DELETE FROM iot.rollup_1h WHERE bucket < now() - $1::bigint * interval '1 day'",
            &[ParameterValue::Int64(HOUR_RETENTION_DAYS)],
        )?;
        let from = run(
            "SELECT (now() + $1::text::interval)::text",
            &[ParameterValue::Str(since.clone())],
        )?;
        let Some(DbValue::Str(from)) = from.rows.first().and_then(|r| r.first()).cloned() else {
            return Err("the rollup window did not compute".to_string());
        };
        run(
            bv_iot::schema::ROLLUP_MINUTES,
            &[ParameterValue::Str(from.clone())],
        )?;
        run(bv_iot::schema::ROLLUP_HOURS, &[ParameterValue::Str(from)])?;
        run(bv_iot::schema::TIME_OUT_COMMANDS, &[])?;
        Ok(())
    })();
    match result {
        Ok(()) => run("COMMIT", &[]).map(|_| ()),
        Err(e) => {
            let _ = run("ROLLBACK", &[]);
            Err(e)
        }
    }
}
