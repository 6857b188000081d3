//! One delivered event, decoded and typed.

use bv_events::CloudEvent;
use serde::de::DeserializeOwned;

/// One delivery of one event: the envelope's attributes, `data` as `T`,
/// and where the delivery stands.
///
/// `T` is any `serde::de::DeserializeOwned` type describing the event's
/// `data` (a struct per event type, an untagged enum for several, or
/// `serde_json::Value` to take anything the schema allowed).
#[derive(Debug, Clone)]
pub struct Event<T = serde_json::Value> {
    /// `id`: unique per `source`; with it, the key [`crate::Transaction::claim`] records.
    pub id: String,
    /// `source`: the producing service, e.g. `/catalog`.
    pub source: String,
    /// `type`, e.g. `com.bitvelocity.product.created.v1`.
    pub ty: String,
    /// `subject`: the entity the event is about, if the producer named one.
    pub subject: Option<String>,
    /// `time`, as the producer wrote it (RFC 3339).
    pub time: String,
    /// The W3C `traceparent`, if the producer was in a trace.
    pub traceparent: Option<String>,
    /// `data`, deserialized.
    pub data: T,
    /// The event's position in the outbox (`bv_events.outbox.seq`).
    pub offset: u64,
    /// 1 on the first delivery, then 2, 3, … on retries.
    pub attempt: u32,
    /// The subscription delivering the event: the consumer name
    /// [`crate::Transaction::claim`] records it under.
    pub subscription: String,
    envelope: CloudEvent,
}

impl<T: DeserializeOwned> Event<T> {
    /// Decodes a delivery: the envelope and its schema
    /// ([`bv_events::decode`]), then `data` into `T`.
    ///
    /// This is what `#[handler]` runs before calling the handler (an error
    /// rejects the event); it is public so that a consumer's logic can be
    /// tested on the host with the same decoding.
    pub fn decode(
        json: &str,
        offset: u64,
        attempt: u32,
        subscription: impl Into<String>,
    ) -> Result<Self, DecodeError> {
        let envelope = bv_events::decode(json).map_err(|e| DecodeError {
            field: e.field().to_string(),
            message: match &e {
                bv_events::EventError::Envelope(env) => env.message.clone(),
                // The schema error's text leads with its path already;
                // keep only what follows it.
                other => strip_field(&other.to_string(), e.field()),
            },
        })?;
        let data = serde_path_to_error::deserialize(envelope.data()).map_err(|e| {
            let path = e.path().to_string();
            DecodeError {
                field: if path == "." {
                    "data".to_string()
                } else {
                    format!("data.{path}")
                },
                message: e.into_inner().to_string(),
            }
        })?;
        Ok(Self {
            id: envelope.id().to_string(),
            source: envelope.source().to_string(),
            ty: envelope.ty().to_string(),
            subject: envelope.subject().map(str::to_string),
            time: envelope.time().to_string(),
            traceparent: envelope.traceparent().map(str::to_string),
            data,
            offset,
            attempt,
            subscription: subscription.into(),
            envelope,
        })
    }
}

impl<T> Event<T> {
    /// The envelope as delivered, `data` as JSON: to forward the event or
    /// read what `T` leaves out.
    pub fn envelope(&self) -> &CloudEvent {
        &self.envelope
    }

    /// The W3C `traceparent` this delivery runs under: with tracing on,
    /// `bv` names its own delivery span here (a child of the producer's),
    /// so what the handler passes it on to joins the same trace.
    pub fn traceparent(&self) -> Option<&str> {
        self.traceparent.as_deref()
    }

    /// `next`, an event published while handling this one, in this
    /// event's trace (see [`Event::traceparent`]).
    pub fn caused(&self, next: CloudEvent) -> CloudEvent {
        next.traced(self.traceparent())
    }
}

fn strip_field(text: &str, field: &str) -> String {
    text.strip_prefix(field)
        .and_then(|rest| rest.strip_prefix(": "))
        .unwrap_or(text)
        .to_string()
}

/// Why a delivery was not handed to the handler; the event is rejected
/// (dead-lettered) with this error's text, `<field>: <message>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct DecodeError {
    /// The envelope attribute (`time`, `type`, …) or `data.…` path at fault.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

/// An error that makes the trigger dead-letter the event at once instead of
/// retrying it: for events that can never be handled, however often they
/// come (a reference to something that cannot exist, a business rule the
/// event breaks).
///
/// Return it from a handler as `Err(Reject::new("…").into())`; it also
/// counts when wrapped in `anyhow` context.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Reject(String);

impl Reject {
    /// A rejection with its reason, which becomes the dead letter's
    /// `last_error`.
    pub fn new(reason: impl Into<String>) -> Self {
        Self(reason.into())
    }

    /// The reason given.
    pub fn reason(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::json;

    fn envelope(ty: &str, data: serde_json::Value) -> String {
        json!({
            "specversion": "1.0", "id": "e-1", "source": "/catalog", "type": ty,
            "subject": "p-1", "time": "2026-01-02T03:04:05.678Z",
            "datacontenttype": "application/json", "data": data,
        })
        .to_string()
    }

    fn created() -> serde_json::Value {
        json!({
            "productId": "p-1", "sku": "MUG", "name": "Mug",
            "price": {"amount": 1299, "currency": "EUR"}, "status": "active"
        })
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Created {
        product_id: String,
        price: Price,
    }

    #[derive(Debug, Deserialize)]
    struct Price {
        amount: u32,
    }

    #[test]
    fn decodes_attributes_and_typed_data() {
        let json = envelope("com.bitvelocity.product.created.v1", created());
        let ev: Event<Created> = Event::decode(&json, 7, 2, "projector").unwrap();
        assert_eq!(ev.id, "e-1");
        assert_eq!(ev.source, "/catalog");
        assert_eq!(ev.ty, "com.bitvelocity.product.created.v1");
        assert_eq!(ev.subject.as_deref(), Some("p-1"));
        assert_eq!(ev.time, "2026-01-02T03:04:05.678Z");
        assert_eq!(ev.traceparent, None);
        assert_eq!((ev.offset, ev.attempt), (7, 2));
        assert_eq!(ev.subscription, "projector");
        assert_eq!(ev.data.product_id, "p-1");
        assert_eq!(ev.data.price.amount, 1299);
        assert_eq!(ev.envelope().data()["sku"], "MUG");
        let any: Event = Event::decode(&json, 7, 2, "projector").unwrap();
        assert_eq!(any.data["name"], "Mug");
    }

    #[test]
    fn events_published_while_handling_one_join_its_trace() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let mut doc: serde_json::Value =
            serde_json::from_str(&envelope("com.bitvelocity.product.created.v1", created()))
                .unwrap();
        let next = || CloudEvent::new("com.bitvelocity.x.v1", "/s", "x", json!({}));

        let untraced: Event = Event::decode(&doc.to_string(), 1, 1, "s").unwrap();
        assert_eq!(untraced.traceparent(), None);
        assert_eq!(untraced.caused(next()).traceparent(), None);

        doc["traceparent"] = json!(tp);
        let traced: Event = Event::decode(&doc.to_string(), 1, 1, "s").unwrap();
        assert_eq!(traced.traceparent(), Some(tp));
        assert_eq!(traced.caused(next()).traceparent(), Some(tp));
        // An event that already named a trace takes the handler's.
        let other = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let named = next().with_traceparent(other).unwrap();
        assert_eq!(traced.caused(named).traceparent(), Some(tp));
    }

    #[test]
    fn names_the_field_of_a_broken_envelope_or_schema() {
        let mut bad = created();
        bad["price"]["amount"] = json!(-1);
        let json = envelope("com.bitvelocity.product.created.v1", bad);
        let e = Event::<serde_json::Value>::decode(&json, 1, 1, "s").unwrap_err();
        assert_eq!(e.field, "data.price.amount");
        assert_eq!(e.to_string(), "data.price.amount: must be an integer ≥ 0");

        let json = envelope("com.bitvelocity.nothing.v1", json!({}));
        let e = Event::<serde_json::Value>::decode(&json, 1, 1, "s").unwrap_err();
        assert_eq!(e.field, "type");
        assert!(e.to_string().starts_with("type: unknown event type"), "{e}");

        let e = Event::<serde_json::Value>::decode("{}", 1, 1, "s").unwrap_err();
        assert_eq!(e.to_string(), "specversion: missing");
    }

    #[test]
    fn names_the_data_path_that_does_not_fit_the_type() {
        #[derive(Debug, Deserialize)]
        struct Small {
            #[allow(dead_code)]
            price: Tiny,
        }
        #[derive(Debug, Deserialize)]
        struct Tiny {
            #[allow(dead_code)]
            amount: u8,
        }
        let json = envelope("com.bitvelocity.product.created.v1", created());
        let e = Event::<Small>::decode(&json, 1, 1, "s").unwrap_err();
        assert_eq!(e.field, "data.price.amount");
        assert!(e.message.contains("1299"), "{e}");
        let e = Event::<Vec<u8>>::decode(&json, 1, 1, "s").unwrap_err();
        assert_eq!(e.field, "data");
    }
}
