//! JSON Web Tokens (RFC 7519) signed with EdDSA over Ed25519 (RFC 8037),
//! and nothing else.
//!
//! The algorithm is pinned: a token's header must say `alg: EdDSA`, so
//! `none`, HMAC (`HS*`, where a verifier could be tricked into using the
//! public key as the shared secret) and RSA/ECDSA are refused before any
//! key is looked at. The key comes only from the verifier's own key set,
//! by the header's `kid`; a header that carries or points at a key (`jwk`,
//! `jku`, `x5u`, `x5c`, …) or asks for extensions (`crit`) is refused, as
//! is any header member this code does not know. The signature is checked
//! before the claims are even decoded.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ed25519_dalek::{Signature, Signer as _};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::keys::{KeySet, SigningKeys};
use crate::principal::{Principal, Role, Subject};

pub use crate::alg::ALGORITHM;

/// Tokens longer than this are refused unread: ours are a few hundred bytes.
pub const MAX_TOKEN_BYTES: usize = 4096;

/// Clock skew tolerated on `exp`, `nbf` and `iat`, in seconds.
pub const DEFAULT_LEEWAY_SECONDS: i64 = 30;

/// Why a token was refused. The message is fit for the client (it quotes
/// nothing from the token but a short `kid`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenError {
    /// Not three base64url parts of JSON, or too long.
    Malformed(String),
    /// The header names another algorithm (`none`, `HS256`, `RS256`, …).
    Algorithm(String),
    /// The header carries or points at a key, asks for extensions, or has
    /// members this verifier does not know.
    Header(String),
    /// No `kid` in the header.
    MissingKeyId,
    /// The `kid` is not in the key set.
    UnknownKeyId(String),
    /// The signature does not match.
    Signature,
    /// `exp` has passed.
    Expired,
    /// `nbf` (or `iat`) is in the future.
    NotYetValid,
    /// `iss` is not the expected issuer.
    Issuer,
    /// `aud` does not name this audience.
    Audience,
    /// A claim is missing or has the wrong form.
    Claims(String),
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenError::Malformed(why) => write!(f, "the token is malformed: {why}"),
            TokenError::Algorithm(alg) => {
                write!(
                    f,
                    "the token's algorithm {alg:?} is not accepted (only EdDSA)"
                )
            }
            TokenError::Header(why) => write!(f, "the token's header is refused: {why}"),
            TokenError::MissingKeyId => f.write_str("the token's header has no `kid`"),
            TokenError::UnknownKeyId(kid) => write!(f, "the token's key {kid:?} is not known"),
            TokenError::Signature => f.write_str("the token's signature does not verify"),
            TokenError::Expired => f.write_str("the token has expired"),
            TokenError::NotYetValid => f.write_str("the token is not valid yet"),
            TokenError::Issuer => f.write_str("the token is from another issuer"),
            TokenError::Audience => f.write_str("the token is meant for another audience"),
            TokenError::Claims(why) => write!(f, "the token's claims are refused: {why}"),
        }
    }
}

impl std::error::Error for TokenError {}

/// The header members a token of ours may have.
const KNOWN_HEADER: [&str; 3] = ["alg", "typ", "kid"];

/// Header members that carry or point at a key, or demand extensions.
const KEY_CONFUSION: [&str; 7] = ["jwk", "jku", "x5u", "x5c", "x5t", "x5t#S256", "crit"];

/// A verified token's claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// `sub` and `role`.
    pub principal: Principal,
    /// `iss`.
    pub issuer: String,
    /// `aud` (one or more).
    pub audience: Vec<String>,
    /// `exp`, seconds since the epoch.
    pub expires_at: i64,
    /// `iat`.
    pub issued_at: i64,
    /// `nbf`, when present.
    pub not_before: Option<i64>,
    /// `jti`: the token's own id.
    pub token_id: String,
}

/// `aud`: one string or a list (RFC 7519 §4.1.3).
#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
struct RawClaims {
    sub: Option<String>,
    role: Option<String>,
    iss: Option<String>,
    aud: Option<Audience>,
    exp: Option<i64>,
    iat: Option<i64>,
    nbf: Option<i64>,
    jti: Option<String>,
}

/// Checks tokens against a key set, an issuer and an audience.
#[derive(Debug, Clone)]
pub struct Verifier {
    keys: KeySet,
    issuer: String,
    audience: String,
    leeway: i64,
}

fn decode_part(part: &str, name: &str) -> Result<Vec<u8>, TokenError> {
    URL_SAFE_NO_PAD
        .decode(part.as_bytes())
        .map_err(|_| TokenError::Malformed(format!("the {name} is not base64url")))
}

impl Verifier {
    /// A verifier for tokens of `issuer` meant for `audience`, with
    /// [`DEFAULT_LEEWAY_SECONDS`].
    pub fn new(keys: KeySet, issuer: &str, audience: &str) -> Self {
        Self {
            keys,
            issuer: issuer.to_string(),
            audience: audience.to_string(),
            leeway: DEFAULT_LEEWAY_SECONDS,
        }
    }

    /// The same verifier with another clock-skew allowance.
    pub fn with_leeway(mut self, seconds: i64) -> Self {
        self.leeway = seconds.max(0);
        self
    }

    /// Verifies `token` at `now` (seconds since the epoch): header and
    /// algorithm, then the signature with the key its `kid` names, then the
    /// claims (issuer, audience, `exp`/`nbf`/`iat` with the leeway, `sub`,
    /// `role`, `jti`).
    pub fn verify(&self, token: &str, now: i64) -> Result<Claims, TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::Malformed("too long".into()));
        }
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed(
                "a token is three parts separated by `.`".into(),
            ));
        };
        let header: Map<String, Value> = serde_json::from_slice(&decode_part(header, "header")?)
            .map_err(|_| TokenError::Malformed("the header is not a JSON object".into()))?;
        let kid = self.check_header(&header)?;
        let key = self
            .keys
            .get(kid)
            .ok_or_else(|| TokenError::UnknownKeyId(kid.chars().take(64).collect()))?;
        let signature: [u8; 64] = decode_part(signature, "signature")?
            .try_into()
            .map_err(|_| TokenError::Signature)?;
        let signed = &token[..token.len() - signature_len(token)];
        key.verify_strict(signed.as_bytes(), &Signature::from_bytes(&signature))
            .map_err(|_| TokenError::Signature)?;
        let raw: RawClaims = serde_json::from_slice(&decode_part(payload, "payload")?)
            .map_err(|e| TokenError::Claims(format!("not a JSON object of claims ({e})")))?;
        self.check_claims(raw, now)
    }

    fn check_header<'h>(&self, header: &'h Map<String, Value>) -> Result<&'h str, TokenError> {
        match header.get("alg") {
            Some(Value::String(alg)) if alg == ALGORITHM => {}
            Some(Value::String(alg)) => {
                return Err(TokenError::Algorithm(alg.chars().take(32).collect()))
            }
            _ => return Err(TokenError::Header("no `alg`".into())),
        }
        for name in header.keys() {
            if KEY_CONFUSION.contains(&name.as_str()) {
                return Err(TokenError::Header(format!(
                    "`{name}`: keys come from the verifier's key set only"
                )));
            }
            if !KNOWN_HEADER.contains(&name.as_str()) {
                return Err(TokenError::Header("an unknown member".into()));
            }
        }
        if let Some(typ) = header.get("typ") {
            let ok = typ
                .as_str()
                .is_some_and(|t| t.eq_ignore_ascii_case("JWT") || t.eq_ignore_ascii_case("at+jwt"));
            if !ok {
                return Err(TokenError::Header("`typ` must be JWT".into()));
            }
        }
        match header.get("kid") {
            Some(Value::String(kid)) => Ok(kid),
            Some(_) => Err(TokenError::Header("`kid` must be a string".into())),
            None => Err(TokenError::MissingKeyId),
        }
    }

    fn check_claims(&self, raw: RawClaims, now: i64) -> Result<Claims, TokenError> {
        let missing = |name: &str| TokenError::Claims(format!("no `{name}`"));
        let expires_at = raw.exp.ok_or_else(|| missing("exp"))?;
        let issued_at = raw.iat.ok_or_else(|| missing("iat"))?;
        if now > expires_at.saturating_add(self.leeway) {
            return Err(TokenError::Expired);
        }
        if raw
            .nbf
            .is_some_and(|nbf| nbf > now.saturating_add(self.leeway))
            || issued_at > now.saturating_add(self.leeway)
        {
            return Err(TokenError::NotYetValid);
        }
        let issuer = raw.iss.ok_or_else(|| missing("iss"))?;
        if issuer != self.issuer {
            return Err(TokenError::Issuer);
        }
        let audience = match raw.aud.ok_or_else(|| missing("aud"))? {
            Audience::One(a) => vec![a],
            Audience::Many(list) => list,
        };
        if !audience.iter().any(|a| *a == self.audience) {
            return Err(TokenError::Audience);
        }
        let subject = raw.sub.ok_or_else(|| missing("sub"))?;
        let subject = Subject::parse(&subject).ok_or_else(|| {
            TokenError::Claims("`sub` must be 1–128 letters, digits, `-`, `_`, `.` or `@`".into())
        })?;
        let role = raw.role.ok_or_else(|| missing("role"))?;
        let role = Role::parse(&role)
            .ok_or_else(|| TokenError::Claims("`role` must be customer or admin".into()))?;
        let token_id = raw
            .jti
            .filter(|j| !j.is_empty())
            .ok_or_else(|| missing("jti"))?;
        Ok(Claims {
            principal: Principal { subject, role },
            issuer,
            audience,
            expires_at,
            issued_at,
            not_before: raw.nbf,
            token_id,
        })
    }
}

/// The length of the last part (the signature) and its `.`.
fn signature_len(token: &str) -> usize {
    token.len() - token.rfind('.').expect("three parts")
}

/// What a new access token says.
#[derive(Debug, Clone)]
pub struct NewToken<'a> {
    /// `sub` and `role`.
    pub principal: &'a Principal,
    /// `iss`.
    pub issuer: &'a str,
    /// `aud`.
    pub audience: &'a str,
    /// `iat` (and `nbf`).
    pub issued_at: i64,
    /// Seconds until `exp`.
    pub lifetime: i64,
    /// `jti`.
    pub token_id: &'a str,
}

/// Signs `token` with the current key of `keys`: `{alg: EdDSA, typ: JWT,
/// kid}` and the claims, in compact serialization.
pub fn sign(keys: &SigningKeys, token: &NewToken<'_>) -> String {
    let key = keys.current();
    let header = json!({ "alg": ALGORITHM, "typ": "JWT", "kid": key.kid() });
    let claims = json!({
        "sub": token.principal.subject.as_str(),
        "role": token.principal.role.as_str(),
        "iss": token.issuer,
        "aud": token.audience,
        "iat": token.issued_at,
        "nbf": token.issued_at,
        "exp": token.issued_at + token.lifetime,
        "jti": token.token_id,
    });
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature = key.signing_key().sign(signing_input.as_bytes());
    format!(
        "{signing_input}.{}",
        URL_SAFE_NO_PAD.encode(signature.to_bytes())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const ISS: &str = "urn:test:auth";
    const AUD: &str = "urn:test:api";
    const NOW: i64 = 1_800_000_000;

    fn seed(n: u8) -> String {
        URL_SAFE_NO_PAD.encode([n; 32])
    }

    fn keys() -> SigningKeys {
        SigningKeys::parse(&format!(
            r#"[{{"kid":"k1","seed":"{}"}},{{"kid":"k0","seed":"{}"}}]"#,
            seed(1),
            seed(2)
        ))
        .unwrap()
    }

    fn verifier() -> Verifier {
        Verifier::new(keys().key_set(), ISS, AUD)
    }

    fn alice() -> Principal {
        Principal {
            subject: Subject::parse("alice").unwrap(),
            role: Role::Customer,
        }
    }

    fn token_at(issued_at: i64, lifetime: i64) -> String {
        sign(
            &keys(),
            &NewToken {
                principal: &alice(),
                issuer: ISS,
                audience: AUD,
                issued_at,
                lifetime,
                token_id: "t-1",
            },
        )
    }

    fn token() -> String {
        token_at(NOW, 900)
    }

    fn b64(v: impl AsRef<[u8]>) -> String {
        URL_SAFE_NO_PAD.encode(v)
    }

    /// A token with this header and claims, signed by `key` (`None`: the
    /// signature part is `sig`).
    fn forge(header: &Value, claims: &Value, seed_byte: Option<u8>) -> String {
        let input = format!("{}.{}", b64(header.to_string()), b64(claims.to_string()));
        match seed_byte {
            Some(n) => {
                let key = ed25519_dalek::SigningKey::from_bytes(&[n; 32]);
                format!("{input}.{}", b64(key.sign(input.as_bytes()).to_bytes()))
            }
            None => format!("{input}.sig"),
        }
    }

    fn claims() -> Value {
        json!({
            "sub": "alice", "role": "customer", "iss": ISS, "aud": AUD,
            "iat": NOW, "exp": NOW + 900, "jti": "t-1"
        })
    }

    fn header() -> Value {
        json!({ "alg": "EdDSA", "typ": "JWT", "kid": "k1" })
    }

    #[test]
    fn a_good_token_verifies() {
        let claims = verifier().verify(&token(), NOW + 10).unwrap();
        assert_eq!(claims.principal, alice());
        assert_eq!(claims.issuer, ISS);
        assert_eq!(claims.audience, [AUD]);
        assert_eq!(claims.expires_at, NOW + 900);
        assert_eq!(claims.token_id, "t-1");
        // A key set that also verifies the second key, and an `aud` list.
        let mut c = claims_with("aud", json!(["other", AUD]));
        c["role"] = json!("admin");
        let admin = verifier()
            .verify(&forge(&header_with("kid", json!("k0")), &c, Some(2)), NOW)
            .unwrap();
        assert!(admin.principal.is_admin());
    }

    fn claims_with(name: &str, value: Value) -> Value {
        let mut c = claims();
        c[name] = value;
        c
    }

    fn header_with(name: &str, value: Value) -> Value {
        let mut h = header();
        h[name] = value;
        h
    }

    fn refused(token: &str) -> TokenError {
        verifier().verify(token, NOW).unwrap_err()
    }

    #[test]
    fn tampered_payload_or_signature_is_refused() {
        let t = token();
        let parts: Vec<&str> = t.split('.').collect();
        // Another payload under the original signature: admin instead.
        let evil = b64(claims_with("role", json!("admin")).to_string());
        assert_eq!(
            refused(&format!("{}.{evil}.{}", parts[0], parts[2])),
            TokenError::Signature
        );
        // One flipped bit in the signature.
        let mut sig = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        sig[10] ^= 1;
        assert_eq!(
            refused(&format!("{}.{}.{}", parts[0], parts[1], b64(&sig))),
            TokenError::Signature
        );
        // A signature of the wrong length, or none.
        assert_eq!(
            refused(&format!("{}.{}.{}", parts[0], parts[1], b64([0u8; 63]))),
            TokenError::Signature
        );
        assert_eq!(
            refused(&format!("{}.{}.", parts[0], parts[1])),
            TokenError::Signature
        );
        // Signed by a key that is not in the set under a kid that is.
        assert_eq!(
            refused(&forge(&header(), &claims(), Some(9))),
            TokenError::Signature
        );
    }

    #[test]
    fn expiry_and_not_before_are_enforced_with_leeway() {
        let t = token_at(NOW - 1000, 900); // expired 100 s ago
        assert_eq!(refused(&t), TokenError::Expired);
        // Within the 30 s leeway it still passes; past it, not.
        let t = token_at(NOW - 920, 900);
        assert!(verifier().verify(&t, NOW).is_ok());
        assert_eq!(
            verifier().with_leeway(0).verify(&t, NOW).unwrap_err(),
            TokenError::Expired
        );
        // Not before: issued (and nbf) in the future.
        assert_eq!(refused(&token_at(NOW + 600, 900)), TokenError::NotYetValid);
        assert!(verifier().verify(&token_at(NOW + 20, 900), NOW).is_ok());
        let c = claims_with("nbf", json!(NOW + 600));
        assert_eq!(
            refused(&forge(&header(), &c, Some(1))),
            TokenError::NotYetValid
        );
    }

    #[test]
    fn wrong_audience_or_issuer_is_refused() {
        for aud in [json!("urn:other"), json!(["a", "b"]), json!([])] {
            let c = claims_with("aud", aud);
            assert_eq!(
                refused(&forge(&header(), &c, Some(1))),
                TokenError::Audience
            );
        }
        let c = claims_with("iss", json!("urn:evil"));
        assert_eq!(refused(&forge(&header(), &c, Some(1))), TokenError::Issuer);
    }

    #[test]
    fn alg_none_and_other_algorithms_are_refused() {
        let t = token();
        let parts: Vec<&str> = t.split('.').collect();
        for alg in [
            "none", "None", "NONE", "HS256", "RS256", "ES256", "PS256", "EDDSA",
        ] {
            let h = header_with("alg", json!(alg));
            // Unsigned, with the payload of a real token.
            let unsigned = format!("{}.{}.", b64(h.to_string()), parts[1]);
            assert_eq!(
                refused(&unsigned),
                TokenError::Algorithm(alg.into()),
                "{alg}"
            );
        }
        let no_alg = json!({ "typ": "JWT", "kid": "k1" });
        assert!(matches!(
            refused(&forge(&no_alg, &claims(), Some(1))),
            TokenError::Header(_)
        ));
    }

    #[test]
    fn hs256_with_the_public_key_as_secret_is_refused() {
        // The classic key confusion: HMAC-SHA256 keyed with the public key
        // (its JWK `x` bytes, and the JWK text itself), which a verifier
        // that trusts `alg` would accept.
        let public = keys().jwks()["keys"][0].clone();
        let x = URL_SAFE_NO_PAD
            .decode(public["x"].as_str().unwrap())
            .unwrap();
        let h = header_with("alg", json!("HS256"));
        let input = format!("{}.{}", b64(h.to_string()), b64(claims().to_string()));
        for secret in [x.clone(), public.to_string().into_bytes()] {
            let mac = hmac_sha256(&secret, input.as_bytes());
            let forged = format!("{input}.{}", b64(mac));
            assert_eq!(refused(&forged), TokenError::Algorithm("HS256".into()));
        }
    }

    /// HMAC-SHA256 (RFC 2104), as an attacker would compute it.
    fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
        use sha2::{Digest, Sha256};
        let mut k = [0u8; 64];
        if key.len() > 64 {
            k[..32].copy_from_slice(&Sha256::digest(key));
        } else {
            k[..key.len()].copy_from_slice(key);
        }
        let inner = Sha256::new()
            .chain_update(k.map(|b| b ^ 0x36))
            .chain_update(message)
            .finalize();
        Sha256::new()
            .chain_update(k.map(|b| b ^ 0x5c))
            .chain_update(inner)
            .finalize()
            .into()
    }

    #[test]
    fn the_test_hmac_is_hmac_sha256() {
        // RFC 4231, test case 2.
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            mac.iter().map(|b| format!("{b:02x}")).collect::<String>(),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn headers_that_carry_or_point_at_keys_are_refused() {
        let embedded = keys().jwks()["keys"][0].clone();
        for (name, value) in [
            ("jwk", embedded),
            ("jku", json!("https://evil.example/jwks.json")),
            ("x5u", json!("https://evil.example/cert.pem")),
            ("x5c", json!(["MIIB"])),
            ("x5t", json!("abc")),
            ("crit", json!(["exp"])),
        ] {
            let t = forge(&header_with(name, value), &claims(), Some(1));
            assert!(
                matches!(refused(&t), TokenError::Header(ref m) if m.contains(name)),
                "{name}"
            );
        }
        let t = forge(&header_with("cty", json!("JWT")), &claims(), Some(1));
        assert!(matches!(refused(&t), TokenError::Header(_)));
        let t = forge(&header_with("typ", json!("JWE")), &claims(), Some(1));
        assert!(matches!(refused(&t), TokenError::Header(_)));
    }

    #[test]
    fn missing_or_unknown_kid_is_refused() {
        let no_kid = json!({ "alg": "EdDSA", "typ": "JWT" });
        assert_eq!(
            refused(&forge(&no_kid, &claims(), Some(1))),
            TokenError::MissingKeyId
        );
        let t = forge(&header_with("kid", json!("k9")), &claims(), Some(1));
        assert_eq!(refused(&t), TokenError::UnknownKeyId("k9".into()));
        let t = forge(&header_with("kid", json!(1)), &claims(), Some(1));
        assert!(matches!(refused(&t), TokenError::Header(_)));
    }

    #[test]
    fn malformed_base64_and_json_are_refused() {
        let t = token();
        let parts: Vec<&str> = t.split('.').collect();
        for bad in [
            "",
            "abc",
            "a.b",
            "a.b.c.d",
            &format!("{}.{}", parts[0], parts[1]),
            // Padding, the standard alphabet, spaces: not base64url.
            &format!("{}=.{}.{}", parts[0], parts[1], parts[2]),
            &format!("+/{}.{}.{}", parts[0], parts[1], parts[2]),
            &format!("{} .{}.{}", parts[0], parts[1], parts[2]),
            // A header that is not JSON, or not an object.
            &format!("{}.{}.{}", b64("{alg"), parts[1], parts[2]),
            &format!("{}.{}.{}", b64("[1]"), parts[1], parts[2]),
            &"a".repeat(MAX_TOKEN_BYTES + 1),
        ] {
            assert!(
                matches!(refused(bad), TokenError::Malformed(_)),
                "{bad:?}: {:?}",
                refused(bad)
            );
        }
        // A signed payload that is not base64url or not JSON claims.
        let h = b64(header().to_string());
        for payload in [
            "!!!",
            &b64("not json"),
            &b64("[1,2]"),
            &b64("{\"exp\":\"x\"}"),
        ] {
            let input = format!("{h}.{payload}");
            let key = ed25519_dalek::SigningKey::from_bytes(&[1; 32]);
            let t = format!("{input}.{}", b64(key.sign(input.as_bytes()).to_bytes()));
            assert!(
                matches!(
                    refused(&t),
                    TokenError::Malformed(_) | TokenError::Claims(_)
                ),
                "{payload}: {:?}",
                refused(&t)
            );
        }
    }

    #[test]
    fn claims_must_be_complete_and_well_formed() {
        for name in ["sub", "role", "exp", "iat", "iss", "aud", "jti"] {
            let mut c = claims();
            c.as_object_mut().unwrap().remove(name);
            assert!(
                matches!(refused(&forge(&header(), &c, Some(1))), TokenError::Claims(ref m) if m.contains(name)),
                "{name}"
            );
        }
        for (name, value) in [
            ("role", json!("root")),
            ("role", json!("Admin")),
            ("sub", json!("a:b")),
            ("sub", json!("")),
            ("jti", json!("")),
            ("exp", json!(1.5)),
        ] {
            let c = claims_with(name, value.clone());
            assert!(
                matches!(
                    refused(&forge(&header(), &c, Some(1))),
                    TokenError::Claims(_)
                ),
                "{name} = {value}"
            );
        }
    }

    #[test]
    fn messages_quote_nothing_from_the_token_but_a_short_kid() {
        let long_kid = "k".repeat(500);
        let t = forge(&header_with("kid", json!(long_kid)), &claims(), Some(1));
        assert!(refused(&t).to_string().len() < 200);
    }
}
