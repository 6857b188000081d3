//! `events-bench`: the driver and the native baseline of
//! `loadtest/events.sh`, the durable-events benchmark.
//!
//! - `events-bench load` sends product batches to the `event-producer`
//!   component's `POST /products`, shows how many events the consumer has
//!   handled so far, waits until every event is handled, and measures
//!   delivery from the database itself: `seen.at − bv_events.outbox.recorded_at`
//!   per event, both written by the server's `clock_timestamp()`.
//! - `events-bench native-consumer` reads the outbox as the Postgres trigger
//!   does and handles each event with the statements the `event-consumer`
//!   component runs: the baseline `bv` is compared with.

mod http;
mod load;
mod native;

use clap::{Parser, Subcommand};

/// The durable-events benchmark's driver and native baseline.
#[derive(Parser)]
#[command(name = "events-bench")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Load the producer, wait for every event to be handled, print figures.
    Load(load::Args),
    /// Consume the outbox natively (the baseline), until SIGTERM or Ctrl-C.
    NativeConsumer(native::Args),
}

fn main() {
    let result = match Cli::parse().command {
        Command::Load(args) => runtime(true).block_on(load::run(args)),
        // One event at a time: a single thread does it with the fewest
        // cross-thread wake-ups, the strongest baseline.
        Command::NativeConsumer(args) => runtime(false).block_on(native::run(args)),
    };
    if let Err(e) = result {
        eprintln!("events-bench: {e:#}");
        std::process::exit(1);
    }
}

fn runtime(multi_thread: bool) -> tokio::runtime::Runtime {
    let mut builder = if multi_thread {
        tokio::runtime::Builder::new_multi_thread()
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    builder.enable_all().build().expect("a tokio runtime")
}
