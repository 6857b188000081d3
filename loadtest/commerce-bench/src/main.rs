//! `commerce-bench`: the driver and the native baseline of
//! `loadtest/commerce.sh`, the commerce services' benchmark.
//!
//! - `commerce-bench setup` waits for the demo catalogue and its stock
//!   records, restocks every product and prints the first product's id.
//! - `commerce-bench checkout` fills carts and checks them out
//!   concurrently, checks every order in the database and reports
//!   checkouts/s, latency and what a checkout cost.
//! - `commerce-bench native-product` answers the product component's GETs
//!   natively from the same database: the baseline of the product GETs.
//! - `commerce-bench auth-keys` prints the auth variables of the
//!   benchmark's signing key (setup and checkout mint tokens with it).
//! - `commerce-bench otlp-sink` accepts and drops OTLP exports (the tracing
//!   benchmark's collector).

mod checkout;
mod measure;
mod native;
mod otlp_sink;
mod setup;
mod token;

use clap::{Parser, Subcommand};

/// The commerce benchmark's driver and native baseline.
#[derive(Parser)]
#[command(name = "commerce-bench")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Make the demo catalogue ready to sell; print the first product's id.
    Setup(setup::Args),
    /// Fill carts, check them out concurrently, verify, print figures.
    Checkout(checkout::Args),
    /// Serve GET /api/products[/{id}] natively, until killed.
    NativeProduct(native::Args),
    /// Accept and drop OTLP/HTTP exports, until killed; GET /stats counts them.
    OtlpSink(otlp_sink::Args),
    /// Print auth_signing_keys and auth_public_keys for the benchmark's seed.
    AuthKeys(token::KeysArgs),
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let result = match Cli::parse().command {
        Command::Setup(args) => runtime.block_on(setup::run(args)),
        Command::Checkout(args) => runtime.block_on(checkout::run(args)),
        Command::NativeProduct(args) => runtime.block_on(native::run(args)),
        Command::OtlpSink(args) => runtime.block_on(otlp_sink::run(args)),
        Command::AuthKeys(args) => token::print_keys(args),
    };
    if let Err(e) = result {
        eprintln!("commerce-bench: {e:#}");
        std::process::exit(1);
    }
}
