//! Access tokens for the driver: the benchmark runs the app with a signing
//! key of its own (`commerce-bench auth-keys` prints the variables that hand
//! it to bv) and mints each customer's token with it, the way the auth
//! service signs them, instead of paying an argon2id login per customer.

use anyhow::{bail, Context as _};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ed25519_dalek::{Signer as _, SigningKey};
use serde_json::json;

/// The issuer and audience every service expects.
const ISSUER: &str = "urn:bitvelocity:auth";
const AUDIENCE: &str = "urn:bitvelocity:api";
/// The benchmark key's id.
const KID: &str = "bench-key-1";

/// `auth-keys` options.
#[derive(clap::Args)]
pub struct KeysArgs {
    /// The Ed25519 seed: 32 bytes, base64url without padding.
    #[arg(long, env = "COMMERCE_BENCH_AUTH_SEED", hide_env_values = true)]
    seed: String,
}

/// Signs tokens with the benchmark key.
pub struct Minter {
    key: SigningKey,
}

impl Minter {
    /// The minter of `seed` (32 bytes, base64url without padding).
    pub fn from_seed(seed: &str) -> anyhow::Result<Self> {
        let bytes = URL_SAFE_NO_PAD
            .decode(seed.trim())
            .context("the auth seed is not base64url")?;
        let Ok(seed) = <[u8; 32]>::try_from(bytes.as_slice()) else {
            bail!("the auth seed must be 32 bytes, not {}", bytes.len());
        };
        Ok(Self {
            key: SigningKey::from_bytes(&seed),
        })
    }

    /// An `authorization` header value for `subject` with `role`, valid
    /// for two hours (longer than any run).
    pub fn bearer(&self, subject: &str, role: &str) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let header = json!({ "alg": "EdDSA", "typ": "JWT", "kid": KID });
        let claims = json!({
            "sub": subject, "role": role, "iss": ISSUER, "aud": AUDIENCE,
            "iat": now, "nbf": now, "exp": now + 7200,
            "jti": format!("bench-{subject}-{now}"),
        });
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = self.key.sign(input.as_bytes());
        format!(
            "Bearer {input}.{}",
            URL_SAFE_NO_PAD.encode(signature.to_bytes())
        )
    }
}

/// Prints `auth_signing_keys` and `auth_public_keys` for the seed, one per
/// line, for `SPIN_VARIABLE_AUTH_SIGNING_KEYS` and
/// `SPIN_VARIABLE_AUTH_PUBLIC_KEYS`.
pub fn print_keys(args: KeysArgs) -> anyhow::Result<()> {
    let minter = Minter::from_seed(&args.seed)?;
    let signing = json!([{ "kid": KID, "seed": args.seed.trim() }]);
    let public = json!({ "keys": [{
        "kty": "OKP", "crv": "Ed25519", "kid": KID, "alg": "EdDSA", "use": "sig",
        "x": URL_SAFE_NO_PAD.encode(minter.key.verifying_key().as_bytes()),
    }]});
    println!("{signing}");
    println!("{public}");
    Ok(())
}
