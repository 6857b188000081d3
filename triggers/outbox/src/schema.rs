//! The `bv_events` schema: created once per database, safely under
//! concurrent starts.

use tokio_postgres::Client;

/// Advisory-lock class of every lock this crate takes (`'bv'` as a number),
/// so the locks do not collide with an application's own.
pub const LOCK_CLASS: i32 = 25206;

/// Applies [`bv_events::POSTGRES_SCHEMA`] in one transaction, serialised by
/// a transaction-level advisory lock: two `bv` processes starting against
/// one database do not race on `CREATE … IF NOT EXISTS`.
pub async fn ensure_schema(client: &mut Client) -> anyhow::Result<()> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1, 0)", &[&LOCK_CLASS])
        .await?;
    // `IF NOT EXISTS` would otherwise log a NOTICE per object on every start.
    tx.batch_execute("SET LOCAL client_min_messages = warning")
        .await?;
    tx.batch_execute(bv_events::POSTGRES_SCHEMA).await?;
    tx.commit().await?;
    Ok(())
}
