//! Email addresses as account names.

/// The longest address (RFC 5321's path limit less the brackets).
const MAX_LEN: usize = 254;

/// Trims and lowercases an address: how it is stored and looked up, so
/// `Alice@Example.com` and `alice@example.com` are one account.
pub fn normalize(raw: &str) -> String {
    raw.trim().to_lowercase()
}

/// Checks a normalized address for registration: `name@domain.tld`, no
/// spaces or control characters, at most 254 bytes (64 before the `@`).
/// Deliverability is not checked.
pub fn check(email: &str) -> Result<(), &'static str> {
    if email.is_empty() || email.len() > MAX_LEN {
        return Err("must be an email address of at most 254 characters");
    }
    let Some((name, domain)) = email.split_once('@') else {
        return Err("must be an email address (name@domain)");
    };
    let visible = |s: &str| s.chars().all(|c| !c.is_whitespace() && !c.is_control());
    let labels_ok = domain.contains('.')
        && domain.split('.').all(|l| {
            !l.is_empty()
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_alphanumeric() || c == '-')
        });
    if name.is_empty() || name.len() > 64 || !visible(name) || name.contains('@') || !labels_ok {
        return Err("must be an email address (name@domain)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_normalized_and_checked() {
        assert_eq!(normalize("  Alice@Example.COM "), "alice@example.com");
        for good in [
            "alice@example.com",
            "a.b+shop@mail.example.co.uk",
            "x@d-1.io",
        ] {
            assert_eq!(check(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "alice",
            "alice@",
            "@example.com",
            "alice@localhost",
            "alice@@example.com",
            "al ice@example.com",
            "alice@exa mple.com",
            "alice@-x.com",
            "alice@example..com",
            &format!("{}@example.com", "a".repeat(65)),
            &format!("a@{}.com", "d".repeat(250)),
        ] {
            assert!(check(bad).is_err(), "{bad}");
        }
    }
}
