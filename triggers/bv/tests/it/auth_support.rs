//! Access tokens for the tests: a fixed Ed25519 test key, the variables
//! that hand it to an app, and tokens minted (or forged) with it the way
//! the auth service signs them. Written independently of `bv-auth`, so a
//! test also checks that what the services accept is the documented
//! format, not whatever the library happens to produce.

use std::collections::HashMap;
use std::sync::Mutex;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ed25519_dalek::{Signer as _, SigningKey};
use serde_json::{json, Value};

/// The issuer and audience every service expects.
pub const ISSUER: &str = "urn:bitvelocity:auth";
pub const AUDIENCE: &str = "urn:bitvelocity:api";

/// The test signing key's id and seed.
pub const KID: &str = "it-key-1";
pub const SEED: [u8; 32] = *b"bitvelocity integration test key";

/// A second key, for rotation.
pub const KID_2: &str = "it-key-2";
pub const SEED_2: [u8; 32] = *b"bitvelocity rotated-in test key!";

/// A key no app knows.
pub const STRANGER_SEED: [u8; 32] = *b"a key the platform never trusted";

pub fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// `auth_signing_keys` for `keys` (first signs).
pub fn signing_keys(keys: &[(&str, [u8; 32])]) -> String {
    Value::Array(
        keys.iter()
            .map(|(kid, seed)| json!({ "kid": kid, "seed": b64(seed) }))
            .collect(),
    )
    .to_string()
}

/// The JWKS of `keys`' public halves (`auth_public_keys`).
pub fn public_keys(keys: &[(&str, [u8; 32])]) -> String {
    let keys: Vec<Value> = keys
        .iter()
        .map(|(kid, seed)| {
            json!({
                "kty": "OKP", "crv": "Ed25519", "kid": kid, "alg": "EdDSA", "use": "sig",
                "x": b64(SigningKey::from_bytes(seed).verifying_key().as_bytes()),
            })
        })
        .collect();
    json!({ "keys": keys }).to_string()
}

/// The environment that gives an app the test key's public half: for
/// manifests declaring `auth_public_keys = { required = true }`.
pub fn env() -> Vec<(String, String)> {
    vec![(
        "SPIN_VARIABLE_AUTH_PUBLIC_KEYS".into(),
        public_keys(&[(KID, SEED)]),
    )]
}

/// [`env`] plus the test key as `auth_signing_keys`, for apps that run the
/// auth component.
pub fn env_with_signing_keys() -> Vec<(String, String)> {
    let mut env = env();
    env.push((
        "SPIN_VARIABLE_AUTH_SIGNING_KEYS".into(),
        signing_keys(&[(KID, SEED)]),
    ));
    env
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// The claims of a token for `subject` with `role`, valid for an hour.
pub fn claims(subject: &str, role: &str) -> Value {
    let now = now();
    json!({
        "sub": subject, "role": role, "iss": ISSUER, "aud": AUDIENCE,
        "iat": now, "nbf": now, "exp": now + 3600,
        "jti": format!("it-{subject}-{now}"),
    })
}

/// A compact JWT of `header` and `claims`, signed with Ed25519 `seed`.
pub fn sign(header: &Value, claims: &Value, seed: &[u8; 32]) -> String {
    let input = format!("{}.{}", b64(header.to_string()), b64(claims.to_string()));
    let signature = SigningKey::from_bytes(seed).sign(input.as_bytes());
    format!("{input}.{}", b64(signature.to_bytes()))
}

/// The header the auth service writes for key `kid`.
pub fn header(kid: &str) -> Value {
    json!({ "alg": "EdDSA", "typ": "JWT", "kid": kid })
}

/// A valid token for `subject` with `role`, signed with the test key.
pub fn token(subject: &str, role: &str) -> String {
    let token = sign(&header(KID), &claims(subject, role), &SEED);
    crate::suite_secrets::used(&token);
    token
}

/// An `authorization` header for `subject` with `role`, minted once per
/// run and kept, so tests can put it in `&[(&str, &str)]` lists.
fn bearer(subject: &str, role: &str) -> (&'static str, &'static str) {
    static MINTED: Mutex<Option<HashMap<(String, String), &'static str>>> = Mutex::new(None);
    let mut minted = MINTED.lock().unwrap();
    let value = minted
        .get_or_insert_with(HashMap::new)
        .entry((subject.to_string(), role.to_string()))
        .or_insert_with(|| Box::leak(format!("Bearer {}", token(subject, role)).into_boxed_str()));
    ("authorization", value)
}

/// The `authorization` header of customer `subject`.
pub fn customer(subject: &str) -> (&'static str, &'static str) {
    bearer(subject, "customer")
}

/// The `authorization` header of an administrator.
pub fn admin() -> (&'static str, &'static str) {
    bearer("it-admin", "admin")
}
