//! Event type patterns: `*` matches any run of characters.

/// Why a pattern cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatternError(pub String);

impl std::fmt::Display for PatternError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PatternError {}

/// Checks a manifest pattern: non-empty, printable, no whitespace.
pub fn check(pattern: &str) -> Result<(), PatternError> {
    if pattern.is_empty() {
        return Err(PatternError(
            "an event type pattern must not be empty".into(),
        ));
    }
    if let Some(c) = pattern
        .chars()
        .find(|c| c.is_whitespace() || c.is_control())
    {
        return Err(PatternError(format!(
            "event type pattern `{pattern}` contains {c:?}; types are like com.bitvelocity.order.placed.v1, `*` matches any run of characters"
        )));
    }
    Ok(())
}

/// The SQL `LIKE` form of a pattern (`\` escapes, the default).
pub fn to_like(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len() + 4);
    for c in pattern.chars() {
        match c {
            '*' => out.push('%'),
            '%' | '_' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

/// Whether `ty` matches `pattern`, the same as `ty LIKE to_like(pattern)`.
pub fn matches(pattern: &str, ty: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == ty;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !ty.starts_with(first) || ty.len() < first.len() + last.len() || !ty.ends_with(last) {
        return false;
    }
    let mut rest = &ty[first.len()..ty.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_escapes_sql_wildcards() {
        assert_eq!(
            to_like("com.bitvelocity.order.*"),
            "com.bitvelocity.order.%"
        );
        assert_eq!(to_like("a_b%c\\*"), "a\\_b\\%c\\\\%");
    }

    #[test]
    fn matching() {
        assert!(matches(
            "com.bitvelocity.order.*",
            "com.bitvelocity.order.placed.v1"
        ));
        assert!(!matches(
            "com.bitvelocity.order.*",
            "com.bitvelocity.product.created.v1"
        ));
        assert!(matches("*.v1", "com.bitvelocity.order.placed.v1"));
        assert!(matches(
            "com.*.created.*",
            "com.bitvelocity.product.created.v2"
        ));
        assert!(!matches(
            "com.*.created.*",
            "com.bitvelocity.product.updated.v2"
        ));
        assert!(matches("exact", "exact"));
        assert!(!matches("a*a", "a"));
    }

    #[test]
    fn bad_patterns() {
        assert!(check("").is_err());
        assert!(check("com.bitvelocity order")
            .unwrap_err()
            .0
            .contains("contains ' '"));
        assert!(check("com.bitvelocity.*").is_ok());
    }
}
