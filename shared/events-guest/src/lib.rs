//! Durable events for components: handle the events `bv`'s Postgres
//! trigger delivers, and publish events in the same transaction as the
//! state change they describe.
//!
//! # Consuming
//!
//! [`macro@handler`] exports an async function as the component's
//! `bitvelocity:events/inbound-event@0.1.0` `handle-event`. The function
//! gets an [`Event<T>`]: the envelope's attributes, the delivery's
//! (`offset`, `attempt`, `subscription`) and `data` deserialized into `T`.
//!
//! ```ignore
//! use bv_events_guest::{Event, Transaction};
//! use serde::Deserialize;
//! use spin_sdk::pg::Connection;
//!
//! #[derive(Deserialize)]
//! #[serde(rename_all = "camelCase")]
//! struct ProductCreated {
//!     product_id: String,
//!     name: String,
//! }
//!
//! #[bv_events_guest::handler]
//! async fn on_event(event: Event<ProductCreated>) -> anyhow::Result<()> {
//!     let conn = Connection::open(spin_sdk::variables::get("db_url").await?).await?;
//!     let tx = Transaction::begin(&conn).await?;
//!     if !tx.claim(&event).await? {
//!         // Handled before (a redelivery after a crash): nothing to do.
//!         return Ok(tx.rollback().await?);
//!     }
//!     tx.execute(
//!         "INSERT INTO names (id, name) VALUES ($1, $2)",
//!         [event.data.product_id.into(), event.data.name.into()],
//!     )
//!     .await?;
//!     Ok(tx.commit().await?)
//! }
//! ```
//!
//! (`ignore` only because the export exists for wasm32 components; the
//! test component `components/testing/event-consumer` is a complete one.)
//!
//! What the handler's outcome tells the trigger:
//!
//! | outcome | WIT result | the trigger |
//! |---|---|---|
//! | `Ok(())` | `ok` | moves the subscription past the event |
//! | `Err(e)` | `error::retry("{e:#}")` | retries with backoff, then dead-letters after `max_attempts` |
//! | `Err(e)` where `e` holds a [`Reject`] | `error::reject` | dead-letters the event at once |
//! | envelope or schema broken (checked by [`bv_events::decode`]) | `error::reject("<field>: <problem>")` | dead-letters at once; the function is not called |
//! | `data` does not deserialize into `T` | `error::reject("data.<path>: <problem>")` | the same |
//!
//! Delivery is at least once: an event may come again after its effects
//! were committed (the component crashed before answering, say). Make the
//! effects idempotent with [`Transaction::claim`], which records the event
//! in `bv_events.processed` in the handler's own transaction and answers
//! `false` when the event was already handled.
//!
//! # Producing
//!
//! [`Transaction::publish`] validates an event ([`bv_events::encode`]) and
//! writes it to `bv_events.outbox` inside the transaction: the event
//! exists exactly when the state change commits.
//!
//! ```ignore
//! use bv_events_guest::{CloudEvent, Transaction};
//!
//! let tx = Transaction::begin(&conn).await?;
//! tx.execute("INSERT INTO products (product_id, name) VALUES ($1, $2)", [id.clone().into(), name.into()]).await?;
//! tx.publish(&CloudEvent::new("com.bitvelocity.product.created.v1", "/catalog", &id, data)).await?;
//! tx.commit().await?;
//! ```
//!
//! # Tracing
//!
//! Events carry the W3C `traceparent` of the work that published them, so
//! a trace goes on through every consumer. Publish with the trace of what
//! caused the event: `CloudEvent::traced(Some(header))` in an HTTP handler
//! (`bv_service::Trace::of(&req)`), [`Event::caused`] in an event handler.
//! The Postgres trigger makes each delivery a span that is a child of the
//! event's `traceparent`, and hands the handler the event with
//! `traceparent` naming that delivery span ([`Event::traceparent`]).
//!
//! ```ignore
//! tx.publish(&event.caused(CloudEvent::new("com.bitvelocity.order.paid.v1", "/orders", &id, data))).await?;
//! ```
//!
//! # Dependencies
//!
//! The generated glue names this crate as `::bv_events_guest`: depend on it
//! under that name. The component needs no direct wit-bindgen dependency;
//! any other Spin API (spin-sdk 7) shares this crate's wit-bindgen runtime.
#![deny(missing_docs)]

// The generated code names the runtime through this crate's own path.
extern crate self as bv_events_guest;

mod event;
mod transaction;

pub use bv_events;
pub use bv_events::CloudEvent;
pub use bv_events_guest_macros::handler;
pub use event::{DecodeError, Event, Reject};
pub use transaction::{Error, Transaction};

#[doc(hidden)]
pub use wit_bindgen as __wit_bindgen;

#[doc(hidden)]
pub mod __bindings {
    #![allow(missing_docs)]
    wit_bindgen::generate!({
        world: "bitvelocity:events/event-handler@0.1.0",
        path: "../../wit/deps/bitvelocity-events@0.1.0",
        runtime_path: "::bv_events_guest::__wit_bindgen::rt",
        pub_export_macro: true,
        export_macro_name: "__export_event_handler",
        default_bindings_module: "::bv_events_guest::__bindings",
    });
}

/// What the code `#[handler]` generates calls.
#[doc(hidden)]
pub mod __private {
    use std::future::Future;

    use serde::de::DeserializeOwned;

    pub use crate::__bindings::bitvelocity::events::types::{Delivery, Error as HandlerError};
    use crate::{Event, Reject};

    /// Decodes the delivery, calls the handler, and maps its outcome.
    pub async fn dispatch<T, E, F, Fut>(delivery: Delivery, handler: F) -> Result<(), HandlerError>
    where
        T: DeserializeOwned,
        F: FnOnce(Event<T>) -> Fut,
        Fut: Future<Output = Result<(), E>>,
        E: Into<anyhow::Error>,
    {
        let event = Event::decode(
            &delivery.event,
            delivery.offset,
            delivery.attempt,
            delivery.subscription,
        )
        .map_err(|e| HandlerError::Reject(e.to_string()))?;
        handler(event).await.map_err(|e| verdict(e.into()))
    }

    /// A handler's error: `reject` when a [`Reject`] is anywhere in its
    /// chain, `retry` otherwise; the text is the whole chain.
    pub fn verdict(e: anyhow::Error) -> HandlerError {
        let text = format!("{e:#}");
        if e.chain().any(|cause| cause.is::<Reject>()) {
            HandlerError::Reject(text)
        } else {
            HandlerError::Retry(text)
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use anyhow::Context;

        #[test]
        fn errors_retry_unless_they_hold_a_reject() {
            let e = verdict(anyhow::anyhow!("db down").context("writing view"));
            assert!(matches!(e, HandlerError::Retry(m) if m == "writing view: db down"));
            let e = verdict(anyhow::Error::new(Reject::new("bad sku")));
            assert!(matches!(e, HandlerError::Reject(m) if m == "bad sku"));
            let e = verdict(
                Err::<(), _>(Reject::new("bad sku"))
                    .context("projecting")
                    .unwrap_err(),
            );
            assert!(matches!(e, HandlerError::Reject(m) if m == "projecting: bad sku"));
        }
    }
}
