//! The inventory's own problem kinds (the common ones come from
//! `bv-service`), and how database errors become problems.

use bv_service::{Problem, ProblemKind};
use serde_json::Value;

/// 409 `insufficient-stock`: some lines cannot be held; `shortages` lists
/// them (`productId`, `requested`, `available`).
pub fn insufficient_stock(shortages: Vec<Value>) -> Problem {
    let names: Vec<String> = shortages
        .iter()
        .map(|s| {
            format!(
                "{} (requested {}, available {})",
                s["productId"].as_str().unwrap_or_default(),
                s["requested"],
                s["available"]
            )
        })
        .collect();
    Problem::new(
        409,
        ProblemKind::InsufficientStock,
        "Not enough stock",
        format!(
            "not enough stock for {}; nothing was reserved",
            names.join(", ")
        ),
    )
    .with("shortages", shortages)
}

/// 409 `illegal-transition`: the reservation is `from` and cannot become
/// `to`.
pub fn illegal_transition(id: &str, from: &str, to: &str) -> Problem {
    Problem::new(
        409,
        ProblemKind::IllegalTransition,
        "The reservation cannot make that change",
        format!("reservation `{id}` is {from}: it cannot become {to}"),
    )
    .with("reservationStatus", from)
}

/// 422 `idempotency-mismatch`: the reservation id was used for another
/// request.
pub fn idempotency_mismatch(id: &str) -> Problem {
    Problem::new(
        422,
        ProblemKind::IdempotencyMismatch,
        "The idempotency key was used for a different request",
        format!(
            "reservation `{id}` exists with a different order or lines; use a new reservationId"
        ),
    )
    .with("field", "reservationId")
}

/// 422 `unknown-product`: lines name products the inventory has no stock
/// record for.
pub fn unknown_products(ids: Vec<String>) -> Problem {
    Problem::new(
        422,
        ProblemKind::UnknownProduct,
        "Unknown product",
        format!(
            "items: no stock record for {}; nothing was reserved",
            ids.iter()
                .map(|id| format!("`{id}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    )
    .with("field", "items")
    .with("productIds", ids)
}

/// A failed statement: a broken stock rule (a CHECK constraint, an
/// overflow) is a 409 the caller can act on; anything else is ours.
pub fn db(e: bv_events_guest::Error) -> Problem {
    match e.sqlstate() {
        Some("23514") => Problem::conflict(format!(
            "the change would break a stock rule (no negative stock, no more reserved than on hand): {e}"
        )),
        Some("22003") => Problem::conflict("the stock count would exceed its largest value"),
        _ => Problem::from(e),
    }
}

/// [`db`] for errors spin-sdk returns directly (reading rows).
pub fn pg(e: spin_sdk::pg::Error) -> Problem {
    db(bv_events_guest::Error::Postgres {
        operation: "query",
        source: e,
    })
}
