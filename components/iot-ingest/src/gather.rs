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
//! The others wait for their result on a timer: first for as long as the
//! last batch took, then every [`POLL`] (a call cannot be woken by another
//! call of the same instance without wit-bindgen's `inter-task-wakeup`,
//! which traps on wasmtime 48 as soon as a task waits on host I/O).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

use spin_sdk::wasip3::clocks::monotonic_clock;

use crate::store::Inbound;

/// How often a message waiting for its batch looks for its result, in
/// nanoseconds.
const POLL: u64 = 250_000;

thread_local! {
    static WAITING: RefCell<Vec<(u64, Inbound)>> = const { RefCell::new(Vec::new()) };
    static RESULTS: RefCell<HashMap<u64, Result<(), String>>> = RefCell::new(HashMap::new());
    static LEADING: Cell<bool> = const { Cell::new(false) };
    static NEXT: Cell<u64> = const { Cell::new(0) };
    /// How long the last batch took to store, in nanoseconds.
    static LAST_BATCH: Cell<u64> = const { Cell::new(POLL) };
}

/// Stores `message` with whatever else arrives with it; returns once it is
/// stored (or parked), or with the reason it could not be.
pub async fn submit(message: Inbound) -> anyhow::Result<()> {
    let ticket = NEXT.replace(NEXT.get() + 1);
    WAITING.with(|w| w.borrow_mut().push((ticket, message)));
    if !LEADING.replace(true) {
        lead().await;
    }
    let mut wait = LAST_BATCH.get().max(POLL);
    loop {
        if let Some(result) = RESULTS.with(|r| r.borrow_mut().remove(&ticket)) {
            return result.map_err(anyhow::Error::msg);
        }
        monotonic_clock::wait_for(wait).await;
        wait = POLL;
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
        let started = monotonic_clock::now();
        let results = crate::store::ingest(messages).await;
        LAST_BATCH.set(monotonic_clock::now().saturating_sub(started));
        RESULTS.with(|r| r.borrow_mut().extend(tickets.into_iter().zip(results)));
    }
    LEADING.set(false);
}
