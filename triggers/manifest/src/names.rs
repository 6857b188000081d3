//! Spin's identifier rules, shared by component ids, variable names and labels.

/// Words separated by `delim`, each non-empty and made of lowercase ASCII
/// letters and digits; the first word starts with a letter (later words may
/// start with a digit, as in Spin).
fn is_id(s: &str, delim: char) -> bool {
    !s.is_empty()
        && s.split(delim).enumerate().all(|(i, word)| {
            let mut chars = word.chars();
            match chars.next() {
                Some(c) if c.is_ascii_lowercase() || (i > 0 && c.is_ascii_digit()) => {}
                _ => return false,
            }
            chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        })
}

/// `lower_snake_case`: variable names.
pub(crate) fn is_snake_id(s: &str) -> bool {
    is_id(s, '_')
}

/// `kebab-case`: component ids.
pub(crate) fn is_kebab_id(s: &str) -> bool {
    is_id(s, '-')
}

/// Key-value store and SQLite database labels may be either.
pub(crate) fn is_label(s: &str) -> bool {
    is_snake_id(s) || is_kebab_id(s)
}

/// How to fix a name that is not [`is_snake_id`].
pub(crate) const SNAKE_RULE: &str =
    "use lowercase letters, digits and single underscores, starting with a letter";
/// How to fix a name that is not [`is_kebab_id`].
pub(crate) const KEBAB_RULE: &str =
    "use lowercase letters, digits and single hyphens, starting with a letter";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules() {
        for ok in ["a", "abc", "a1", "a_b", "a_1b", "api_key2"] {
            assert!(is_snake_id(ok), "{ok}");
        }
        for bad in ["", "A", "aB", "1a", "_a", "a_", "a__b", "a-b", "a b", "é"] {
            assert!(!is_snake_id(bad), "{bad}");
        }
        for ok in ["a", "hello", "hello-world", "a-1", "v2-api"] {
            assert!(is_kebab_id(ok), "{ok}");
        }
        for bad in ["", "Hello", "-a", "a-", "a--b", "a_b", "1a", "a.b"] {
            assert!(!is_kebab_id(bad), "{bad}");
        }
        assert!(is_label("my-store") && is_label("my_store") && !is_label("my store"));
    }
}
