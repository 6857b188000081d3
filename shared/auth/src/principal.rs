//! Who a verified token speaks for: parsed types, so that code holding a
//! [`Principal`] never re-checks a subject or a role string.

use std::fmt;

/// What a principal may do. Tokens carry it as the `role` claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// A shopper: their own cart and orders.
    Customer,
    /// An operator: the catalogue, stock, every order, payments.
    Admin,
}

impl Role {
    /// The claim's value.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Customer => "customer",
            Role::Admin => "admin",
        }
    }

    /// Parses the claim's value; anything but `customer` or `admin` is
    /// `None` (no case folding: a token says exactly one of them).
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "customer" => Some(Role::Customer),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A principal's id (the `sub` claim): 1–128 ASCII letters, digits, `-`,
/// `_`, `.` or `@`. Narrow on purpose: services use it as a key (a cart's
/// Redis key, an order's owner) and in log lines, where `:`, spaces or
/// control characters would be trouble.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Subject(String);

impl Subject {
    /// The longest subject.
    pub const MAX_LEN: usize = 128;

    /// Parses a subject; `None` when it breaks the rule above.
    pub fn parse(raw: &str) -> Option<Self> {
        let ok = (1..=Self::MAX_LEN).contains(&raw.len())
            && raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.@".contains(&b));
        ok.then(|| Self(raw.to_string()))
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The authenticated caller of a request: whom the token was issued to
/// and with which role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The user's id.
    pub subject: Subject,
    /// What they may do.
    pub role: Role,
}

impl Principal {
    /// Whether this principal is an administrator.
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    /// The principal as one header value, `<role>:<subject>` (what a
    /// WebSocket component names its connections' principal with).
    pub fn to_header(&self) -> String {
        format!("{}:{}", self.role.as_str(), self.subject.as_str())
    }

    /// Parses [`Principal::to_header`]'s form.
    pub fn from_header(raw: &str) -> Option<Self> {
        let (role, subject) = raw.split_once(':')?;
        Some(Self {
            role: Role::parse(role)?,
            subject: Subject::parse(subject)?,
        })
    }

    /// Whether this principal may act on something `owner` owns: its owner
    /// or an administrator.
    pub fn may_access(&self, owner: &str) -> bool {
        self.is_admin() || self.subject.as_str() == owner
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_and_subjects_parse_strictly() {
        assert_eq!(Role::parse("admin"), Some(Role::Admin));
        assert_eq!(Role::parse("customer"), Some(Role::Customer));
        assert_eq!(Role::parse("Admin"), None);
        assert_eq!(Role::parse("root"), None);
        assert!(Subject::parse("5f1c9a2e-0d4b-4c1e-9f7a-2b3c4d5e6f70").is_some());
        assert!(Subject::parse("alice@example.com").is_some());
        assert!(Subject::parse("").is_none());
        assert!(Subject::parse("a:b").is_none());
        assert!(Subject::parse("a b").is_none());
        assert!(Subject::parse(&"x".repeat(129)).is_none());
    }

    #[test]
    fn owners_and_admins_may_access() {
        let alice = Principal {
            subject: Subject::parse("alice").unwrap(),
            role: Role::Customer,
        };
        let admin = Principal {
            subject: Subject::parse("ops").unwrap(),
            role: Role::Admin,
        };
        assert!(alice.may_access("alice"));
        assert!(!alice.may_access("bob"));
        assert!(admin.may_access("bob"));
    }

    #[test]
    fn header_form_round_trips_and_refuses_garbage() {
        let erin = Principal {
            subject: Subject::parse("erin@example.com").unwrap(),
            role: Role::Customer,
        };
        assert_eq!(erin.to_header(), "customer:erin@example.com");
        assert_eq!(Principal::from_header(&erin.to_header()), Some(erin));
        for bad in [
            "",
            "customer",
            "root:erin",
            "customer:",
            "customer:a b",
            "admin:x:y",
        ] {
            assert_eq!(Principal::from_header(bad), None, "{bad}");
        }
    }
}
