//! Passwords: the strength rules a new one must meet, and argon2id hashes.
//!
//! The rules follow NIST SP 800-63B: length matters, composition rules do
//! not; obvious choices are refused. Hashes are argon2id with OWASP's
//! minimum parameters (19 MiB, 2 passes, 1 lane) in PHC string format, so
//! the parameters travel with each hash and can be raised later.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

/// The shortest password accepted, in characters.
pub const MIN_CHARS: usize = 12;
/// The longest, in characters (the hash's cost grows with the input).
pub const MAX_CHARS: usize = 128;
/// The fewest different characters a password must use.
pub const MIN_DISTINCT: usize = 6;

/// Fragments that make a password guessable whatever surrounds them.
const GUESSABLE: [&str; 8] = [
    "password",
    "passwort",
    "qwerty",
    "123456",
    "abcdef",
    "letmein",
    "iloveyou",
    "bitvelocity",
];

/// Why `password` is too weak for the account `email`, or `None` when it
/// is fine. The reason never quotes the password.
pub fn weakness(password: &str, email: &str) -> Option<String> {
    let chars = password.chars().count();
    if chars < MIN_CHARS {
        return Some(format!("must be at least {MIN_CHARS} characters"));
    }
    if chars > MAX_CHARS {
        return Some(format!("must be at most {MAX_CHARS} characters"));
    }
    let mut distinct: Vec<char> = password.chars().collect();
    distinct.sort_unstable();
    distinct.dedup();
    if distinct.len() < MIN_DISTINCT {
        return Some(format!(
            "must use at least {MIN_DISTINCT} different characters"
        ));
    }
    let lower = password.to_lowercase();
    if GUESSABLE.iter().any(|g| lower.contains(g)) {
        return Some("is too easy to guess (a common password or sequence)".into());
    }
    let name = email.split('@').next().unwrap_or("").to_lowercase();
    if name.chars().count() >= 3 && lower.contains(&name) {
        return Some("must not contain the email address's name".into());
    }
    None
}

/// The hasher: argon2id, 19 MiB, 2 passes, 1 lane.
fn argon2() -> Argon2<'static> {
    let params = Params::new(19 * 1024, 2, 1, None).expect("valid argon2 parameters");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// The PHC string of `password` hashed with a fresh random salt.
pub fn hash(password: &str) -> Result<String, String> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| format!("random salt: {e}"))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| format!("salt: {e}"))?;
    argon2()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| format!("hashing: {e}"))
}

/// Whether `password` matches the PHC string `stored` (false for a string
/// that does not parse).
pub fn verify(password: &str, stored: &str) -> bool {
    PasswordHash::new(stored)
        .is_ok_and(|h| argon2().verify_password(password.as_bytes(), &h).is_ok())
}

/// A hash no password is known for, with the current parameters: a login
/// for an unknown email verifies against it, so that it costs what a
/// login with a wrong password costs and timing does not tell which
/// emails have accounts.
pub const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$YnZhdXRoZHVtbXlzYWx0MQ$H4zVg3Zx8O3b3e6m0Q2a3cCRdS9yTQhTq1qYp3Vd0hE";

/// Spends what [`verify`] spends on a real account, for an unknown one.
pub fn verify_dummy(password: &str) {
    let _ = verify(password, DUMMY_HASH);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weak_passwords_are_refused_and_strong_ones_pass() {
        let email = "alice.smith@example.com";
        for (password, why) in [
            ("short1!", "at least 12"),
            ("aaaaaaaaaaaaaaaa", "different characters"),
            ("abababab1212", "different characters"),
            ("MyPassword2026!", "easy to guess"),
            ("zx123456789!Q", "easy to guess"),
            ("Alice.Smith-was-here", "name"),
        ] {
            let reason = weakness(password, email).unwrap_or_default();
            assert!(reason.contains(why), "{password}: {reason:?}");
            assert!(!reason.contains(password));
        }
        assert!(weakness(&"x7!".repeat(50), email)
            .unwrap()
            .contains("at most"));
        assert_eq!(weakness("correct horse battery staple", email), None);
        assert_eq!(weakness("Tr0ub4dor&3xyz", email), None);
    }

    #[test]
    fn hashes_verify_and_carry_their_parameters() {
        let h = hash("correct horse battery staple").unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(verify("correct horse battery staple", &h));
        assert!(!verify("correct horse battery stapl", &h));
        assert!(!verify("anything", "not a phc string"));
        // Salted: the same password hashes differently.
        assert_ne!(h, hash("correct horse battery staple").unwrap());
    }

    #[test]
    fn the_dummy_hash_costs_what_a_real_one_costs() {
        let dummy = PasswordHash::new(DUMMY_HASH).unwrap();
        let real_hash = hash("correct horse battery staple").unwrap();
        let real = PasswordHash::new(&real_hash).unwrap();
        assert_eq!(dummy.algorithm, real.algorithm);
        assert_eq!(dummy.version, real.version);
        assert_eq!(dummy.params, real.params);
        assert_eq!(
            dummy.hash.map(|o| o.len()),
            real.hash.map(|o| o.len()),
            "same output length"
        );
        assert!(!verify("correct horse battery staple", DUMMY_HASH));
    }
}
