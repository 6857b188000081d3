//! The product cache kept current by the catalogue's own events: the
//! cart subscribes to `com.bitvelocity.product.updated.v1` and
//! `com.bitvelocity.product.deleted.v1` (a `[[trigger.postgres]]` entry
//! for this component), so a price change shows in carts as soon as the
//! event is delivered, not when the cached copy's freshness runs out.
//!
//! - `product.updated`: the cached copy takes the changed name and price
//!   and is marked as fetched never, so the next lookup asks the product
//!   service; until then, and while that service is down, the copy stands
//!   in with the new values.
//! - `product.deleted`: the cached copy is dropped, so the next lookup
//!   finds the product gone.
//!
//! Both are idempotent, so a redelivered event needs no claim.

use bv_events_guest::Event;
use serde::Deserialize;
use serde_json::{Map, Value};
use spin_sdk::key_value;

use crate::catalog::cache_key;

/// What both events carry.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ProductEvent {
    product_id: String,
    /// `product.updated`'s changed fields.
    #[serde(default)]
    changes: Map<String, Value>,
}

const UPDATED: &str = "com.bitvelocity.product.updated.v1";
const DELETED: &str = "com.bitvelocity.product.deleted.v1";

#[bv_events_guest::handler]
async fn on_product_event(event: Event<ProductEvent>) -> anyhow::Result<()> {
    let prefix = crate::config::key_prefix()
        .await
        .map_err(|p| anyhow::anyhow!("{}", p.detail))?;
    let cache = key_value::Store::open_default()
        .await
        .map_err(|e| anyhow::anyhow!("opening the product cache: {e:?}"))?;
    let key = cache_key(&prefix, &event.data.product_id);
    match event.ty.as_str() {
        DELETED => cache
            .delete(key)
            .await
            .map_err(failed("dropping the copy"))?,
        UPDATED => {
            let Some(bytes) = cache
                .get(key.clone())
                .await
                .map_err(failed("reading the copy"))?
            else {
                return Ok(());
            };
            let Ok(mut cached) = serde_json::from_slice::<Value>(&bytes) else {
                // Not a copy this cart wrote: drop it.
                return cache.delete(key).await.map_err(failed("dropping the copy"));
            };
            cached["fetchedAtMs"] = Value::from(0);
            for field in ["name", "price"] {
                if let Some(value) = event.data.changes.get(field) {
                    cached["product"][field] = value.clone();
                }
            }
            let bytes = serde_json::to_vec(&cached).expect("serializable");
            cache
                .set(key, bytes)
                .await
                .map_err(failed("updating the copy"))?;
        }
        _ => {}
    }
    Ok(())
}

/// A key-value error, with what was being done.
fn failed(doing: &'static str) -> impl Fn(key_value::Error) -> anyhow::Error {
    move |e| anyhow::anyhow!("{doing}: {e:?}")
}
