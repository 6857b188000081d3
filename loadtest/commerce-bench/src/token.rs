//! Access tokens for the driver: the benchmark runs the app with a signing
//! key of its own (`commerce-bench auth-keys` prints the variables that hand
//! it to bv) and mints each customer's token with it, the way the auth
//! service signs them, instead of paying an argon2id login per customer.

pub use bv_load::token::Minter;
use serde_json::json;

/// The benchmark key's id.
const KID: &str = "bench-key-1";

/// `auth-keys` options.
#[derive(clap::Args)]
pub struct KeysArgs {
    /// The Ed25519 seed: 32 bytes, base64url without padding.
    #[arg(long, env = "COMMERCE_BENCH_AUTH_SEED", hide_env_values = true)]
    seed: String,
}

/// The minter of the benchmark key with `seed`.
pub fn minter(seed: &str) -> anyhow::Result<Minter> {
    Minter::from_seed(KID, seed)
}

/// Prints `auth_signing_keys` and `auth_public_keys` for the seed, one per
/// line, for `SPIN_VARIABLE_AUTH_SIGNING_KEYS` and
/// `SPIN_VARIABLE_AUTH_PUBLIC_KEYS`.
pub fn print_keys(args: KeysArgs) -> anyhow::Result<()> {
    let minter = minter(&args.seed)?;
    let signing = json!([{ "kid": KID, "seed": args.seed.trim() }]);
    let public = json!({ "keys": [minter.public_jwk()] });
    println!("{signing}");
    println!("{public}");
    Ok(())
}
