//! Versioned migrations, applied once per database.

use spin_sdk::pg::{Connection, Decode, ParameterValue};

use crate::Problem;

/// One migration: a name that orders it (`0001_init`) and its SQL.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// Unique within the component, sorted in the order to apply.
    pub name: &'static str,
    /// One or more statements.
    pub sql: &'static str,
}

/// Migrations from (name, SQL) pairs, for a schema whose SQL lives in a
/// crate that does not know this one (`bv_iot::schema`).
pub const fn migrations<const N: usize>(
    pairs: [(&'static str, &'static str); N],
) -> [Migration; N] {
    let mut out = [Migration { name: "", sql: "" }; N];
    let mut i = 0;
    while i < N {
        out[i] = Migration {
            name: pairs[i].0,
            sql: pairs[i].1,
        };
        i += 1;
    }
    out
}

/// Whether every one of `migrations` is recorded (`false` on any error).
async fn all_applied(conn: &Connection, component: &str, migrations: &[Migration]) -> bool {
    let names = ParameterValue::ArrayStr(
        migrations
            .iter()
            .map(|m| Some(m.name.to_string()))
            .collect(),
    );
    let Ok(result) = conn
        .query(
            "SELECT count(*) FROM bv_migrations WHERE component = $1 AND name = ANY($2::text[])",
            vec![ParameterValue::Str(component.to_string()), names],
        )
        .await
    else {
        return false;
    };
    let Ok(rows) = result.collect().await else {
        return false;
    };
    rows.first()
        .and_then(|r| i64::decode(&r[0]).ok())
        .is_some_and(|n| n == migrations.len() as i64)
}

/// Applies the migrations of `component` that this database has not seen,
/// in order, in one transaction with their records in `bv_migrations`,
/// under an advisory lock so that concurrent instances do not race (a
/// failing migration leaves nothing behind). Cheap once applied: one query. Call it at the
/// start of each request; `applied` (a per-instance flag) skips even that.
pub async fn migrate(
    conn: &Connection,
    component: &str,
    migrations: &[Migration],
    applied: &std::sync::atomic::AtomicBool,
) -> Result<(), Problem> {
    use std::sync::atomic::Ordering;
    if applied.load(Ordering::Relaxed) {
        return Ok(());
    }
    // The common case, in one query without a transaction or the lock: an
    // instance that lives for one message (the MQTT trigger's) asks this
    // every time. A database without `bv_migrations` yet answers an error
    // here and takes the way below.
    if all_applied(conn, component, migrations).await {
        applied.store(true, Ordering::Relaxed);
        return Ok(());
    }
    let none = Vec::<ParameterValue>::new;
    conn.execute("BEGIN", none()).await?;
    let result = async {
        // One lock for every component: `bv_migrations` itself is created
        // here, and concurrent CREATE TABLE IF NOT EXISTS can still collide
        // (a unique violation in pg_type) without it.
        conn.execute(
            "SELECT pg_advisory_xact_lock(25206, hashtext('bv_migrations'))",
            none(),
        )
        .await?;
        conn.execute(
            "CREATE TABLE IF NOT EXISTS bv_migrations (
                 component text NOT NULL, name text NOT NULL,
                 applied_at timestamptz NOT NULL DEFAULT now(),
                 PRIMARY KEY (component, name))",
            none(),
        )
        .await?;
        for m in migrations {
            let done = conn
                .query(
                    "SELECT 1 FROM bv_migrations WHERE component = $1 AND name = $2",
                    vec![
                        ParameterValue::Str(component.to_string()),
                        ParameterValue::Str(m.name.to_string()),
                    ],
                )
                .await?
                .collect()
                .await?;
            if !done.is_empty() {
                continue;
            }
            for statement in m.sql.split(";\n").map(str::trim).filter(|s| !s.is_empty()) {
                conn.execute(statement, none()).await?;
            }
            conn.execute(
                "INSERT INTO bv_migrations (component, name) VALUES ($1, $2)",
                vec![
                    ParameterValue::Str(component.to_string()),
                    ParameterValue::Str(m.name.to_string()),
                ],
            )
            .await?;
        }
        Ok::<(), spin_sdk::pg::Error>(())
    }
    .await;
    match result {
        Ok(()) => {
            conn.execute("COMMIT", none()).await?;
            applied.store(true, Ordering::Relaxed);
            Ok(())
        }
        Err(e) => {
            let _ = conn.execute("ROLLBACK", none()).await;
            Err(Problem::internal(format!("migrating {component}: {e}")))
        }
    }
}
