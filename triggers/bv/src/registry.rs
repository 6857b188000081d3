//! `bv registry push` and the registry half of `bv up -f <reference>`.

use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};

/// `bv registry`.
#[derive(Parser)]
pub struct RegistryArgs {
    #[command(subcommand)]
    command: RegistryCommand,
}

#[derive(Subcommand)]
enum RegistryCommand {
    /// Push the application to an OCI registry, in Spin's layout.
    Push(PushArgs),
    /// Pull an application into the local cache and print its manifest path.
    Pull(PullArgs),
}

#[derive(Parser)]
struct PushArgs {
    /// Where to push: registry/name:tag.
    reference: String,
    /// The manifest, or a directory holding spin.toml.
    #[arg(short = 'f', long = "from", default_value = "spin.toml")]
    from: PathBuf,
    /// Build the components before pushing.
    #[arg(long)]
    build: bool,
    #[command(flatten)]
    registry: RegistryFlags,
}

#[derive(Parser)]
struct PullArgs {
    /// What to pull: registry/name:tag or registry/name@sha256:...
    reference: String,
    #[command(flatten)]
    registry: RegistryFlags,
}

/// How to reach a registry; shared by `bv registry` and `bv up`.
#[derive(Args, Clone)]
pub struct RegistryFlags {
    /// Talk plain HTTP to the registry (a local or in-cluster one).
    #[arg(
        long,
        env = "BV_REGISTRY_INSECURE",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    insecure: bool,
    /// The pull cache (default: ~/.cache/bv/registry).
    #[arg(long, env = "BV_REGISTRY_CACHE_DIR", value_name = "DIR")]
    registry_cache_dir: Option<PathBuf>,
}

impl RegistryFlags {
    fn options(&self) -> bv_oci::RegistryOptions {
        bv_oci::RegistryOptions {
            insecure: self.insecure,
            cache_dir: self
                .registry_cache_dir
                .clone()
                .unwrap_or_else(bv_oci::RegistryOptions::default_cache_dir),
            docker_config: None,
        }
    }
}

fn block_on<T>(f: impl std::future::Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(f)
}

/// Runs `bv registry ...`.
pub fn run(args: RegistryArgs) -> anyhow::Result<()> {
    let mut progress = |msg: &str| eprintln!("{msg}");
    match args.command {
        RegistryCommand::Push(push) => {
            let manifest = crate::manifest_path(&push.from);
            if push.build {
                crate::build(&manifest)?;
            }
            let digest = block_on(bv_oci::push(
                &manifest,
                &push.reference,
                &push.registry.options(),
                &mut progress,
            ))?;
            println!("{digest}");
        }
        RegistryCommand::Pull(pull) => {
            let manifest = block_on(bv_oci::pull(
                &pull.reference,
                &pull.registry.options(),
                &mut progress,
            ))?;
            println!("{}", manifest.display());
        }
    }
    Ok(())
}

/// The manifest `bv up -f <from>` runs: a path on disk as it is, or, when
/// no such path exists and `from` reads as a registry reference, the app
/// pulled from there.
pub fn resolve_from(from: &Path, flags: &RegistryFlags) -> anyhow::Result<PathBuf> {
    if from.exists() {
        return Ok(crate::manifest_path(from));
    }
    match from.to_str() {
        Some(reference) if bv_oci::looks_like_reference(reference) => {
            let mut progress = |msg: &str| tracing::info!("{msg}");
            block_on(bv_oci::pull(reference, &flags.options(), &mut progress))
        }
        _ => Ok(crate::manifest_path(from)),
    }
}
