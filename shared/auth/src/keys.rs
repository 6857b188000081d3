//! Ed25519 keys: the public key set every service verifies with (a JWKS
//! document), and the signing keys only the auth service holds.

use std::collections::HashMap;
use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine as _;
use ed25519_dalek::{SigningKey, VerifyingKey};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::alg::ALGORITHM;

/// Why a key document was refused. Never holds key material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyError(pub String);

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for KeyError {}

fn err(detail: impl Into<String>) -> KeyError {
    KeyError(detail.into())
}

/// Base64url, with or without padding: how humans and tools write seeds and
/// JWK members. Tokens themselves are decoded strictly (no padding).
const LENIENT_URL_SAFE: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// A `kid`: 1–64 visible ASCII characters.
fn check_kid(kid: &str) -> Result<(), KeyError> {
    if (1..=64).contains(&kid.len()) && kid.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(())
    } else {
        Err(err("a `kid` must be 1–64 visible ASCII characters"))
    }
}

/// One JWK as this platform accepts it: an Ed25519 public key.
#[derive(Deserialize)]
struct Jwk {
    kty: Option<String>,
    crv: Option<String>,
    kid: Option<String>,
    x: Option<String>,
    d: Option<serde_json::Value>,
    alg: Option<String>,
    #[serde(rename = "use")]
    usage: Option<String>,
}

#[derive(Deserialize)]
struct Jwks {
    keys: Vec<Jwk>,
}

/// The public keys tokens may be signed with, by `kid`: what every
/// protected service holds. Built from a JWKS document (RFC 7517) of
/// Ed25519 keys (`kty: OKP`, `crv: Ed25519`, RFC 8037).
#[derive(Debug, Clone)]
pub struct KeySet {
    keys: HashMap<String, VerifyingKey>,
}

impl KeySet {
    /// Parses a JWKS document. Refuses (rather than skips) anything it would
    /// not verify with: other key types or curves, an `alg` other than
    /// `EdDSA`, a `use` other than `sig`, a private member (`d`: a
    /// signing key published by mistake), a weak or malformed key, a
    /// missing or repeated `kid`, an empty set.
    pub fn from_jwks(document: &str) -> Result<Self, KeyError> {
        let jwks: Jwks = serde_json::from_str(document)
            .map_err(|e| err(format!("the key set is not a JWKS document: {e}")))?;
        let mut keys = HashMap::new();
        for (i, jwk) in jwks.keys.into_iter().enumerate() {
            let at = |what: &str| err(format!("key {i}: {what}"));
            if jwk.kty.as_deref() != Some("OKP") || jwk.crv.as_deref() != Some("Ed25519") {
                return Err(at("only Ed25519 keys (kty OKP, crv Ed25519) are accepted"));
            }
            if jwk.d.is_some() {
                return Err(at("holds a private key (`d`): publish public keys only"));
            }
            if jwk.alg.as_deref().is_some_and(|a| a != ALGORITHM) {
                return Err(at("`alg` must be EdDSA"));
            }
            if jwk.usage.as_deref().is_some_and(|u| u != "sig") {
                return Err(at("`use` must be sig"));
            }
            let kid = jwk.kid.ok_or_else(|| at("no `kid`"))?;
            check_kid(&kid).map_err(|e| at(&e.0))?;
            let x = jwk.x.ok_or_else(|| at("no `x`"))?;
            let bytes: [u8; 32] = LENIENT_URL_SAFE
                .decode(x.as_bytes())
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| at("`x` is not 32 bytes of base64url"))?;
            let key = VerifyingKey::from_bytes(&bytes).map_err(|_| at("`x` is not a valid key"))?;
            if key.is_weak() {
                return Err(at("`x` is a weak key"));
            }
            if keys.insert(kid.clone(), key).is_some() {
                return Err(err(format!("`kid` {kid:?} appears twice")));
            }
        }
        if keys.is_empty() {
            return Err(err("the key set has no keys"));
        }
        Ok(Self { keys })
    }

    /// The key with this `kid`.
    pub fn get(&self, kid: &str) -> Option<&VerifyingKey> {
        self.keys.get(kid)
    }

    /// The `kid`s, sorted.
    pub fn kids(&self) -> Vec<&str> {
        let mut kids: Vec<&str> = self.keys.keys().map(String::as_str).collect();
        kids.sort_unstable();
        kids
    }
}

/// One signing key: a `kid` and an Ed25519 key. Its `Debug` shows the `kid`
/// only; the key is wiped from memory when dropped.
pub struct KeyPair {
    kid: String,
    key: SigningKey,
}

impl fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyPair")
            .field("kid", &self.kid)
            .field("key", &"<redacted>")
            .finish()
    }
}

impl KeyPair {
    /// The key's id.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub(crate) fn signing_key(&self) -> &SigningKey {
        &self.key
    }

    /// The public half as a JWK.
    pub fn public_jwk(&self) -> Value {
        json!({
            "kty": "OKP",
            "crv": "Ed25519",
            "kid": self.kid,
            "x": URL_SAFE_NO_PAD.encode(self.key.verifying_key().as_bytes()),
            "alg": ALGORITHM,
            "use": "sig",
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSigningKey {
    kid: String,
    seed: String,
}

/// The auth service's signing keys, in order: the first signs new tokens,
/// all of them (with the first) are published, so tokens signed by a key
/// that was rotated out of first place stay valid until they expire.
#[derive(Debug)]
pub struct SigningKeys {
    keys: Vec<KeyPair>,
}

impl SigningKeys {
    /// Parses `[{"kid": "…", "seed": "<32 bytes, base64url>"}, …]` (the
    /// `auth_signing_keys` secret). Errors never quote a seed.
    pub fn parse(document: &str) -> Result<Self, KeyError> {
        let raw: Vec<RawSigningKey> = serde_json::from_str(document).map_err(|e| {
            // serde's message may quote a value; give only its position.
            err(format!(
                "the signing keys are not a JSON list of {{kid, seed}} (line {}, column {})",
                e.line(),
                e.column()
            ))
        })?;
        let mut keys: Vec<KeyPair> = Vec::with_capacity(raw.len());
        for (i, key) in raw.into_iter().enumerate() {
            check_kid(&key.kid).map_err(|e| err(format!("signing key {i}: {}", e.0)))?;
            if keys.iter().any(|k| k.kid == key.kid) {
                return Err(err(format!("signing key {i}: `kid` {:?} repeats", key.kid)));
            }
            let seed: [u8; 32] = LENIENT_URL_SAFE
                .decode(key.seed.as_bytes())
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| {
                    err(format!(
                        "signing key {i} ({}): `seed` is not 32 bytes of base64url",
                        key.kid
                    ))
                })?;
            keys.push(KeyPair {
                kid: key.kid,
                key: SigningKey::from_bytes(&seed),
            });
        }
        if keys.is_empty() {
            return Err(err("no signing keys"));
        }
        Ok(Self { keys })
    }

    /// The key that signs new tokens.
    pub fn current(&self) -> &KeyPair {
        &self.keys[0]
    }

    /// The JWKS document of every key's public half.
    pub fn jwks(&self) -> Value {
        json!({ "keys": self.keys.iter().map(KeyPair::public_jwk).collect::<Vec<_>>() })
    }

    /// The public key set, as a verifying service would build it from
    /// [`Self::jwks`].
    pub fn key_set(&self) -> KeySet {
        KeySet {
            keys: self
                .keys
                .iter()
                .map(|k| (k.kid.clone(), k.key.verifying_key()))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED_A: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8";

    #[test]
    fn signing_keys_publish_their_public_halves() {
        let keys = SigningKeys::parse(&format!(
            r#"[{{"kid":"k2","seed":"{SEED_A}"}},{{"kid":"k1","seed":"{}="}}]"#,
            URL_SAFE_NO_PAD.encode([7u8; 32])
        ))
        .unwrap();
        assert_eq!(keys.current().kid(), "k2");
        let jwks = keys.jwks();
        let set = KeySet::from_jwks(&jwks.to_string()).unwrap();
        assert_eq!(set.kids(), ["k1", "k2"]);
        assert!(!jwks.to_string().contains(SEED_A));
        assert!(!format!("{keys:?}").contains(SEED_A));
    }

    #[test]
    fn bad_signing_keys_are_refused_without_quoting_them() {
        for (doc, needle) in [
            ("[]", "no signing keys"),
            ("{}", "JSON list"),
            (r#"[{"kid":"a","seed":"c2VjcmV0"}]"#, "32 bytes"),
            (
                &format!(r#"[{{"kid":"a","seed":"{SEED_A}"}},{{"kid":"a","seed":"{SEED_A}"}}]"#),
                "repeats",
            ),
            (&format!(r#"[{{"kid":"","seed":"{SEED_A}"}}]"#), "kid"),
            (
                &format!(r#"[{{"kid":"a","seed":"{SEED_A}","x":1}}]"#),
                "JSON list",
            ),
        ] {
            let e = SigningKeys::parse(doc).unwrap_err().0;
            assert!(e.contains(needle), "{doc}: {e}");
            assert!(!e.contains("c2VjcmV0") && !e.contains(SEED_A), "{e}");
        }
    }

    #[test]
    fn key_sets_refuse_what_they_would_not_verify_with() {
        let good = SigningKeys::parse(&format!(r#"[{{"kid":"a","seed":"{SEED_A}"}}]"#))
            .unwrap()
            .jwks();
        let x = good["keys"][0]["x"].as_str().unwrap().to_string();
        for (doc, needle) in [
            (r#"{"keys":[]}"#.to_string(), "no keys"),
            ("[]".to_string(), "JWKS"),
            (
                r#"{"keys":[{"kty":"RSA","kid":"a","n":"AQAB","e":"AQAB"}]}"#.into(),
                "Ed25519",
            ),
            (
                format!(r#"{{"keys":[{{"kty":"OKP","crv":"X25519","kid":"a","x":"{x}"}}]}}"#),
                "Ed25519",
            ),
            (
                format!(r#"{{"keys":[{{"kty":"OKP","crv":"Ed25519","x":"{x}"}}]}}"#),
                "kid",
            ),
            (
                format!(
                    r#"{{"keys":[{{"kty":"OKP","crv":"Ed25519","kid":"a","x":"{x}","d":"{SEED_A}"}}]}}"#
                ),
                "private",
            ),
            (
                format!(
                    r#"{{"keys":[{{"kty":"OKP","crv":"Ed25519","kid":"a","x":"{x}","alg":"HS256"}}]}}"#
                ),
                "alg",
            ),
            (
                format!(
                    r#"{{"keys":[{{"kty":"OKP","crv":"Ed25519","kid":"a","x":"{x}","use":"enc"}}]}}"#
                ),
                "use",
            ),
            (
                r#"{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"a","x":"AAAA"}]}"#.into(),
                "32 bytes",
            ),
            (
                // The identity point: a weak key any signature could match.
                format!(
                    r#"{{"keys":[{{"kty":"OKP","crv":"Ed25519","kid":"a","x":"{}"}}]}}"#,
                    URL_SAFE_NO_PAD.encode({
                        let mut b = [0u8; 32];
                        b[0] = 1;
                        b
                    })
                ),
                "weak",
            ),
            (
                format!(
                    r#"{{"keys":[{{"kty":"OKP","crv":"Ed25519","kid":"a","x":"{x}"}},{{"kty":"OKP","crv":"Ed25519","kid":"a","x":"{x}"}}]}}"#
                ),
                "twice",
            ),
        ] {
            let e = KeySet::from_jwks(&doc).unwrap_err().0;
            assert!(e.contains(needle), "{doc}: {e}");
        }
    }
}
