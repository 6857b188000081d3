//! `bv chaos …` and `bv load …`: game days and load scenarios. They are
//! clients of a running platform with a load generator and plotting
//! inside, so they live in their own binary, `bv-load` (crate
//! `loadtest/bv-load`), which `bv` runs with the same arguments, the way
//! `cargo` runs its external subcommands; the runtime image stays free of
//! them.

use std::path::PathBuf;
use std::process::Command;

use anyhow::Context as _;

/// The forwarded arguments.
#[derive(clap::Args)]
pub struct ForwardArgs {
    /// Arguments for `bv-load <command>` (see `bv-load --help`).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
}

/// `bv-load` beside this executable, otherwise on PATH.
fn bv_load() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("bv-load")))
        .filter(|path| path.is_file())
        .unwrap_or_else(|| PathBuf::from("bv-load"))
}

/// Runs `bv-load <prefix…> <args…>` and returns its exit code.
pub fn forward(prefix: &[&str], args: ForwardArgs) -> anyhow::Result<i32> {
    let program = bv_load();
    let status = Command::new(&program)
        .args(prefix)
        .args(&args.args)
        .status()
        .with_context(|| {
            format!(
                "running {} (build it with `cargo build --release -p bv-load`)",
                program.display()
            )
        })?;
    Ok(status.code().unwrap_or(1))
}
