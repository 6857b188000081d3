//! `event-sink`: a Postgres trigger handler that accepts every event whose
//! envelope and schema are valid, and does nothing else. Tests subscribe it
//! to the events they want delivered (the trace tests follow a checkout's
//! events into their deliveries).

use bv_events_guest::Event;

#[bv_events_guest::handler]
async fn on_event(event: Event<serde_json::Value>) -> anyhow::Result<()> {
    let _ = event;
    Ok(())
}
