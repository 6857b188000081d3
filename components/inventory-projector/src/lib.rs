//! `inventory-projector`: the inventory's side of the catalogue's
//! `com.bitvelocity.product.created.v1`. Each product created gets a
//! stock record (`inventory.stock`) with nothing on hand and nothing
//! reserved; the `inventory` component's restocks fill it.
//!
//! The event is claimed (`bv_events.processed`) in the transaction that
//! writes the record, so a redelivery has no second effect; a second
//! `product.created` for a product that already has stock (the catalogue
//! published it again under a new id, or the record is one of the demo
//! products', stocked by the inventory's migration) only refreshes its
//! SKU and keeps the counts.
//!
//! The tables are the `inventory` component's: this crate applies the
//! same migrations (`../inventory/src/schema.rs`) before writing.

use std::sync::atomic::AtomicBool;

use anyhow::Context;
use bv_events_guest::{Event, Reject, Transaction};
use serde::Deserialize;
use spin_sdk::pg::{Connection, ParameterValue};

#[path = "../../inventory/src/schema.rs"]
mod schema;

/// The longest product id the inventory keeps (as its HTTP API does).
const MAX_ID_BYTES: usize = 256;

/// What the stock record needs of `product.created`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ProductCreated {
    product_id: String,
    sku: String,
}

static MIGRATED: AtomicBool = AtomicBool::new(false);

#[bv_events_guest::handler]
async fn on_event(event: Event<ProductCreated>) -> anyhow::Result<()> {
    let id = &event.data.product_id;
    if id.len() > MAX_ID_BYTES || id.chars().any(char::is_control) {
        return Err(Reject::new(format!(
            "data.productId: `{id}` cannot be a product id here (at most {MAX_ID_BYTES} bytes, no control characters)"
        ))
        .into());
    }
    let url = spin_sdk::variables::get("db_url")
        .await
        .context("variable db_url")?;
    let conn = Connection::open(url).await.context("connecting")?;
    bv_service::migrate(&conn, schema::COMPONENT, schema::MIGRATIONS, &MIGRATED)
        .await
        .map_err(|p| anyhow::anyhow!("migrating: {}", p.detail))?;

    let tx = Transaction::begin(&conn).await?;
    if !tx.claim(&event).await? {
        tx.rollback().await?;
        return Ok(());
    }
    tx.execute(
        "INSERT INTO inventory.stock (product_id, sku) VALUES ($1, $2)
         ON CONFLICT (product_id) DO UPDATE SET sku = EXCLUDED.sku, updated_at = now()",
        vec![
            ParameterValue::Str(id.clone()),
            ParameterValue::Str(event.data.sku.clone()),
        ],
    )
    .await
    .context("writing the stock record")?;
    tx.commit().await?;
    Ok(())
}
