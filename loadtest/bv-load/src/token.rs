//! Access tokens for load clients, signed the way the auth service signs
//! them, so that a run does not pay an argon2id login per virtual user.
//!
//! The key is the platform's own: `SPIN_VARIABLE_AUTH_SIGNING_KEYS` (the
//! auth component's `auth_signing_keys`) when set, otherwise the
//! development key `bash infra/scripts/up.sh` keeps in
//! `.spin/dev-auth-keys.env`.

use std::path::Path;

use anyhow::{bail, Context as _};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ed25519_dalek::{Signer as _, SigningKey};
use serde_json::{json, Value};

/// The issuer and audience every service expects.
const ISSUER: &str = "urn:bitvelocity:auth";
const AUDIENCE: &str = "urn:bitvelocity:api";

/// Signs tokens with one key.
pub struct Minter {
    kid: String,
    key: SigningKey,
}

impl Minter {
    /// The minter of key `kid` with `seed` (32 bytes, base64url without
    /// padding).
    pub fn from_seed(kid: &str, seed: &str) -> anyhow::Result<Self> {
        let bytes = URL_SAFE_NO_PAD
            .decode(seed.trim())
            .context("the auth seed is not base64url")?;
        let Ok(seed) = <[u8; 32]>::try_from(bytes.as_slice()) else {
            bail!("the auth seed must be 32 bytes, not {}", bytes.len());
        };
        Ok(Self {
            kid: kid.to_string(),
            key: SigningKey::from_bytes(&seed),
        })
    }

    /// The minter of the first key of `auth_signing_keys` (the one the
    /// auth service signs with): `[{"kid": …, "seed": …}, …]`.
    pub fn from_signing_keys(json: &str) -> anyhow::Result<Self> {
        let keys: Value = serde_json::from_str(json).context("auth_signing_keys is not JSON")?;
        let first = keys
            .as_array()
            .and_then(|keys| keys.first())
            .context("auth_signing_keys holds no key")?;
        let (Some(kid), Some(seed)) = (first["kid"].as_str(), first["seed"].as_str()) else {
            bail!("auth_signing_keys' first key needs `kid` and `seed`");
        };
        Self::from_seed(kid, seed)
    }

    /// The platform's key: `SPIN_VARIABLE_AUTH_SIGNING_KEYS`, otherwise the
    /// development key file `dev_keys` (`.spin/dev-auth-keys.env`).
    pub fn from_environment(dev_keys: &Path) -> anyhow::Result<Self> {
        if let Ok(json) = std::env::var("SPIN_VARIABLE_AUTH_SIGNING_KEYS") {
            return Self::from_signing_keys(&json).context("SPIN_VARIABLE_AUTH_SIGNING_KEYS");
        }
        let text = std::fs::read_to_string(dev_keys).with_context(|| {
            format!(
                "no signing key to mint tokens with: set SPIN_VARIABLE_AUTH_SIGNING_KEYS to the \
                 platform's auth_signing_keys, or run `bash infra/scripts/up.sh` once, which \
                 keeps a development key in {}",
                dev_keys.display()
            )
        })?;
        let json = text
            .lines()
            .find_map(|line| line.strip_prefix("export SPIN_VARIABLE_AUTH_SIGNING_KEYS="))
            .map(|value| value.trim().trim_matches('\''))
            .with_context(|| {
                format!(
                    "{}: no SPIN_VARIABLE_AUTH_SIGNING_KEYS line",
                    dev_keys.display()
                )
            })?;
        Self::from_signing_keys(json).with_context(|| dev_keys.display().to_string())
    }

    /// The public half, as a JWK (for `auth_public_keys`).
    pub fn public_jwk(&self) -> Value {
        json!({
            "kty": "OKP", "crv": "Ed25519", "kid": self.kid, "alg": "EdDSA", "use": "sig",
            "x": URL_SAFE_NO_PAD.encode(self.key.verifying_key().as_bytes()),
        })
    }

    /// An `authorization` header value for `subject` with `role`, valid
    /// for two hours (longer than any run).
    pub fn bearer(&self, subject: &str, role: &str) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let header = json!({ "alg": "EdDSA", "typ": "JWT", "kid": self.kid });
        let claims = json!({
            "sub": subject, "role": role, "iss": ISSUER, "aud": AUDIENCE,
            "iat": now, "nbf": now, "exp": now + 7200,
            "jti": format!("load-{subject}-{now}"),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_first_signing_key_and_refuses_bad_ones() {
        let seed = URL_SAFE_NO_PAD.encode([7u8; 32]);
        let keys = format!(r#"[{{"kid":"k1","seed":"{seed}"}},{{"kid":"k0","seed":"{seed}"}}]"#);
        let minter = Minter::from_signing_keys(&keys).unwrap();
        assert_eq!(minter.public_jwk()["kid"], "k1");
        let token = minter.bearer("alice", "customer");
        assert_eq!(token.matches('.').count(), 2, "{token}");
        assert!(Minter::from_signing_keys("[]").is_err());
        assert!(Minter::from_seed("k", "c2hvcnQ").is_err());
        let dir = std::env::temp_dir().join(format!("bv-load-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("dev-auth-keys.env");
        std::fs::write(
            &file,
            format!("export SPIN_VARIABLE_AUTH_SIGNING_KEYS='{keys}'\nexport X=1\n"),
        )
        .unwrap();
        if std::env::var_os("SPIN_VARIABLE_AUTH_SIGNING_KEYS").is_none() {
            assert_eq!(
                Minter::from_environment(&file).unwrap().public_jwk()["kid"],
                "k1"
            );
            let missing = Minter::from_environment(&dir.join("none")).err().unwrap();
            assert!(
                format!("{missing:#}").contains("infra/scripts/up.sh"),
                "{missing:#}"
            );
        }
        std::fs::remove_dir_all(dir).unwrap();
    }
}
