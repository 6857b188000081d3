//! The events the catalogue publishes, one per change, written to the
//! outbox in the transaction that makes the change. Subject: the product
//! id, so that a consumer gets one product's events in order.

use bv_events_guest::CloudEvent;
use serde_json::{json, Map, Value};

use crate::domain::Product;

/// The `source` of every catalogue event.
pub const SOURCE: &str = "/catalog";
/// A product was added.
pub const CREATED: &str = "com.bitvelocity.product.created.v1";
/// Fields of a product changed.
pub const UPDATED: &str = "com.bitvelocity.product.updated.v1";
/// A product was withdrawn from the catalogue.
pub const DELETED: &str = "com.bitvelocity.product.deleted.v1";

/// `product.created`: the whole product.
pub fn created(p: &Product) -> CloudEvent {
    let data = json!({
        "productId": p.id,
        "sku": p.sku,
        "name": p.name,
        "description": p.description,
        "category": p.category,
        "price": p.price,
        "status": "active",
    });
    CloudEvent::new(CREATED, SOURCE, &p.id, data)
}

/// `product.updated`: only the fields that differ between `before` and
/// `after`; `None` when none does (nothing to publish).
pub fn updated(before: &Product, after: &Product) -> Option<CloudEvent> {
    let mut changes = Map::new();
    if before.name != after.name {
        changes.insert("name".into(), json!(after.name));
    }
    if before.description != after.description {
        changes.insert("description".into(), json!(after.description));
    }
    if before.category != after.category {
        changes.insert("category".into(), json!(after.category));
    }
    if before.price != after.price {
        changes.insert("price".into(), json!(after.price));
    }
    if changes.is_empty() {
        return None;
    }
    let data = json!({
        "productId": after.id,
        "revision": after.version,
        "changes": Value::Object(changes),
    });
    Some(CloudEvent::new(UPDATED, SOURCE, &after.id, data))
}

/// `product.deleted`: the product, at its final revision.
pub fn deleted(p: &Product) -> CloudEvent {
    let data = json!({
        "productId": p.id,
        "sku": p.sku,
        "revision": p.version,
    });
    CloudEvent::new(DELETED, SOURCE, &p.id, data)
}
