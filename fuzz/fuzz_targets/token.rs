//! The access-token verifier (bv-auth) on arbitrary input. The first byte
//! picks what the rest is:
//!
//! - `0`: a whole token as text. The verifier never panics, and accepts
//!   nothing: no input can carry a valid signature by the fuzz key.
//! - otherwise: a header and claims (JSON text, split at the first NUL)
//!   that the fuzz key signs, so the header and claims checks behind the
//!   signature are reached too. Whatever is accepted must say what the
//!   verifier promises (EdDSA, the issuer, the audience, in its validity
//!   window), and stops being accepted once its signature changes.
#![no_main]

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bv_auth::{KeySet, SigningKeys, Verifier};
use ed25519_dalek::{Signer as _, SigningKey};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

const ISSUER: &str = "urn:bitvelocity:auth";
const AUDIENCE: &str = "urn:bitvelocity:api";
/// A fixed clock: validity windows are judged against it.
const NOW: i64 = 1_800_000_000;
const LEEWAY: i64 = 30;
/// The fuzz key's seed (`fuzz-key`), base64url of 32 bytes.
const SEED: &str = "Yml0dmVsb2NpdHkgZnV6eiB0YXJnZXQga2V5ICEhISE";

struct Fixture {
    key: SigningKey,
    verifier: Verifier,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let keys = SigningKeys::parse(&format!(r#"[{{"kid":"fuzz-key","seed":"{SEED}"}}]"#))
            .expect("the fuzz key parses");
        let set = KeySet::from_jwks(&keys.jwks().to_string()).expect("its JWKS parses");
        let verifier = Verifier::new(set, ISSUER, AUDIENCE).with_leeway(LEEWAY);
        let seed = URL_SAFE_NO_PAD.decode(SEED).expect("the seed is base64url");
        let key = SigningKey::from_bytes(&seed.try_into().expect("a 32-byte seed"));
        Fixture { key, verifier }
    })
}

fn signed(header: &[u8], claims: &[u8]) -> String {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let signature = fixture().key.sign(input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()))
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let verifier = &fixture().verifier;
    if mode == 0 {
        if let Ok(text) = std::str::from_utf8(rest) {
            let verdict = verifier.verify(text, NOW);
            assert!(verdict.is_err(), "accepted an unsigned input: {text:?}");
        }
        return;
    }
    let (header, claims) = match rest.iter().position(|&b| b == 0) {
        Some(at) => (&rest[..at], &rest[at + 1..]),
        None => (rest, &b"{}"[..]),
    };
    let token = signed(header, claims);
    let Ok(accepted) = verifier.verify(&token, NOW) else {
        return;
    };
    let header: serde_json::Value =
        serde_json::from_slice(header).expect("an accepted header is JSON");
    assert_eq!(header["alg"], "EdDSA", "accepted another algorithm");
    assert_eq!(accepted.issuer, ISSUER);
    assert!(accepted.audience.iter().any(|a| a == AUDIENCE));
    assert!(accepted.expires_at > NOW - LEEWAY, "accepted an expired token");
    assert!(accepted.not_before.unwrap_or(i64::MIN) <= NOW + LEEWAY);
    // The same token with another signature is refused (a character well
    // inside the signature: the last one also holds padding bits).
    let mut forged = token.into_bytes();
    let at = forged.len() - 10;
    forged[at] = if forged[at] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).expect("base64url is ASCII");
    assert!(verifier.verify(&forged, NOW).is_err(), "accepted a forged signature");
});
