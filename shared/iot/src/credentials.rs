//! Device passwords in the form Mosquitto's `password_file` reads.
//!
//! Mosquitto 2 checks `$7$<iterations>$<salt>$<hash>`: PBKDF2-HMAC-SHA512
//! over the password with a 12-byte salt, 64 bytes out, both in standard
//! base64 (what `mosquitto_passwd` writes). The platform stores only this
//! line's hash part; the password is shown once, when it is made.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

/// `mosquitto_passwd`'s iteration count.
pub const ITERATIONS: u32 = 101;
/// Bytes of salt.
pub const SALT_BYTES: usize = 12;

/// The `$7$…` hash of `password` with `salt`.
pub fn mosquitto_hash(password: &str, salt: &[u8; SALT_BYTES]) -> String {
    let mut out = [0u8; 64];
    pbkdf2::pbkdf2_hmac::<sha2::Sha512>(password.as_bytes(), salt, ITERATIONS, &mut out);
    format!(
        "$7${ITERATIONS}${}${}",
        STANDARD.encode(salt),
        STANDARD.encode(out)
    )
}

/// Whether `password` matches a `$7$…` hash.
pub fn verify(password: &str, hash: &str) -> bool {
    let parts: Vec<&str> = hash.split('$').collect();
    let ["", "7", iterations, salt, expected] = parts.as_slice() else {
        return false;
    };
    let (Ok(iterations), Ok(salt), Ok(expected)) = (
        iterations.parse::<u32>(),
        STANDARD.decode(salt),
        STANDARD.decode(expected),
    ) else {
        return false;
    };
    let mut out = vec![0u8; expected.len()];
    pbkdf2::pbkdf2_hmac::<sha2::Sha512>(password.as_bytes(), &salt, iterations, &mut out);
    out == expected
}

/// A new password from 24 random bytes (base64url, 32 characters).
pub fn password_from(random: &[u8; 24]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_have_mosquittos_shape() {
        let h = mosquitto_hash("s3cret", &[7; SALT_BYTES]);
        assert!(h.starts_with("$7$101$BwcHBwcHBwcHBwcH$"), "{h}");
        assert!(verify("s3cret", &h));
        assert!(!verify("s3cre", &h));
        assert!(!verify("s3cret", "$6$x$y"));
        assert_eq!(password_from(&[0; 24]).len(), 32);
    }
}
