//! Gathers the telemetry messages the trigger hands this instance at the
//! same time (`message_batch` in the component's `tool.bv` table; one at a
//! time, as under Spin, without it) so they are stored in one transaction.
//!
//! The first call to arrive becomes the batch's leader: it yields once, so
//! that the other calls in hand add their messages, then takes all that are
//! waiting and stores them ([`crate::store::ingest`]), and goes on while
//! more arrived meanwhile. Every call returns its own message's result, so
//! each is acknowledged only once it is stored. Batches of one instance
//! never overlap, so each device's samples are evaluated in arrival order.
//!
//! The others wait for their result on a `stream<u8>` of their own whose
//! writable end the leader drops once their batch is stored: the one way
//! here for a call to wake another call of the same instance (wit-bindgen's
//! `inter-task-wakeup` feature does the same with a unit stream, but it
//! would apply to every component of the workspace, and it traps on
//! wasmtime 48 as soon as a task waits on host I/O synchronously).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

use spin_sdk::wasip3::wit_stream;
use spin_sdk::wit_bindgen::StreamWriter;

use crate::store::Inbound;

thread_local! {
    static WAITING: RefCell<Vec<(u64, Inbound)>> = const { RefCell::new(Vec::new()) };
    static RESULTS: RefCell<HashMap<u64, Result<(), String>>> = RefCell::new(HashMap::new());
    /// The writable ends the waiting calls are woken by (dropped).
    static WAKERS: RefCell<HashMap<u64, StreamWriter<u8>>> = RefCell::new(HashMap::new());
    static LEADING: Cell<bool> = const { Cell::new(false) };
    static NEXT: Cell<u64> = const { Cell::new(0) };
}

/// Stores `message` with whatever else arrives with it; returns once it is
/// stored (or parked), or with the reason it could not be.
pub async fn submit(message: Inbound) -> anyhow::Result<()> {
    let ticket = NEXT.replace(NEXT.get() + 1);
    WAITING.with(|w| w.borrow_mut().push((ticket, message)));
    if !LEADING.replace(true) {
        lead().await;
    }
    loop {
        if let Some(result) = RESULTS.with(|r| r.borrow_mut().remove(&ticket)) {
            return result.map_err(anyhow::Error::msg);
        }
        let (writer, mut reader) = wit_stream::new::<u8>();
        WAKERS.with(|w| w.borrow_mut().insert(ticket, writer));
        // Ends when the leader drops the writable end.
        let _ = reader.next().await;
    }
}

async fn lead() {
    loop {
        spin_sdk::wit_bindgen::yield_async().await;
        let batch = WAITING.with(|w| std::mem::take(&mut *w.borrow_mut()));
        if batch.is_empty() {
            break;
        }
        let (tickets, messages): (Vec<u64>, Vec<Inbound>) = batch.into_iter().unzip();
        let results = crate::store::ingest(messages).await;
        RESULTS.with(|r| r.borrow_mut().extend(tickets.iter().copied().zip(results)));
        let woken: Vec<StreamWriter<u8>> = WAKERS.with(|w| {
            let mut w = w.borrow_mut();
            tickets.iter().filter_map(|t| w.remove(t)).collect()
        });
        drop(woken);
    }
    LEADING.set(false);
}
