//! A product's fields, each a type that can only hold a valid value: a
//! request is parsed into them once, at the edge, and nothing past that
//! point checks again.

use std::fmt;

use bv_service::Money;
use serde::{Deserialize, Serialize};

/// A product's id: a random (v4) UUID made here, not by the client, so
/// that ids never collide and reveal nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProductId(uuid::Uuid);

impl ProductId {
    /// A fresh id.
    pub fn generate() -> Self {
        Self(uuid::Uuid::new_v4())
    }

    /// The id in a path segment; `None` when it is not a UUID (then no
    /// product has it).
    pub fn parse(segment: &str) -> Option<Self> {
        uuid::Uuid::try_parse(segment).ok().map(Self)
    }
}

impl fmt::Display for ProductId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

/// Declares a string newtype that deserializes through `TryFrom<String>`,
/// so that serde reports its refusal at the field's path.
macro_rules! text_type {
    ($(#[$doc:meta])* $name:ident, $check:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl TryFrom<String> for $name {
            type Error = String;
            fn try_from(s: String) -> Result<Self, String> {
                let check: fn(String) -> Result<String, String> = $check;
                check(s).map(Self)
            }
        }

        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0
            }
        }

        impl $name {
            /// The text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
    };
}

text_type!(
    /// A stock-keeping unit: 1–64 of `A–Z`, `0–9` and `-`, starting with a
    /// letter or digit. Upper case only, so that `mug-red` and `MUG-RED`
    /// cannot be two products.
    Sku,
    |s| {
        let ok = (1..=64).contains(&s.len())
            && s.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-')
            && !s.starts_with('-');
        if ok {
            Ok(s)
        } else {
            Err(format!(
                "must be 1–64 characters of A–Z, 0–9 and `-`, starting with a letter or digit; got {s:?}"
            ))
        }
    }
);

text_type!(
    /// A display name: 1–200 characters after trimming, no control
    /// characters.
    Name,
    |s| {
        let s = s.trim().to_string();
        let len = s.chars().count();
        if !(1..=200).contains(&len) {
            return Err(format!("must be 1–200 characters, got {len}"));
        }
        if s.chars().any(char::is_control) {
            return Err("must not contain control characters".into());
        }
        Ok(s)
    }
);

text_type!(
    /// A description: up to 5000 characters (empty when there is none);
    /// line breaks and tabs allowed, other control characters not.
    Description,
    |s| {
        let len = s.chars().count();
        if len > 5000 {
            return Err(format!("must be at most 5000 characters, got {len}"));
        }
        if s.chars().any(|c| c.is_control() && c != '\n' && c != '\t' && c != '\r') {
            return Err("must not contain control characters other than line breaks and tabs".into());
        }
        Ok(s)
    }
);

text_type!(
    /// A category slug: 1–50 of `a–z`, `0–9` and `-`, starting with a
    /// letter or digit (`mugs`, `tea-accessories`).
    Category,
    |s| {
        let ok = (1..=50).contains(&s.len())
            && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !s.starts_with('-');
        if ok {
            Ok(s)
        } else {
            Err(format!(
                "must be 1–50 characters of a–z, 0–9 and `-`, starting with a letter or digit; got {s:?}"
            ))
        }
    }
);

/// The body of `POST /api/products`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewProduct {
    /// Unique among live products.
    pub sku: Sku,
    /// The display name.
    pub name: Name,
    /// Optional; absent or `null` is empty.
    #[serde(default)]
    pub description: Option<Description>,
    /// The category slug.
    pub category: Category,
    /// Integer minor units and a currency.
    pub price: Money,
}

/// The body of `PUT /api/products/{id}`: every mutable field, replaced
/// as a whole (an absent description clears it). The SKU cannot change;
/// it may be sent (a client putting back what it got) but must be the
/// current one.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Replacement {
    /// When present, must equal the product's SKU.
    #[serde(default)]
    pub sku: Option<Sku>,
    /// The new name.
    pub name: Name,
    /// The new description; absent or `null` clears it.
    #[serde(default)]
    pub description: Option<Description>,
    /// The new category.
    pub category: Category,
    /// The new price.
    pub price: Money,
}

/// A product as stored and as answered.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Product {
    /// The id.
    pub id: String,
    /// The SKU.
    pub sku: String,
    /// The display name.
    pub name: String,
    /// The description, possibly empty.
    pub description: String,
    /// The category slug.
    pub category: String,
    /// The price.
    pub price: Money,
    /// Starts at 1, one more on every change: the ETag and the events'
    /// `revision`.
    pub version: i64,
    /// RFC 3339, UTC.
    pub created_at: String,
    /// RFC 3339, UTC.
    pub updated_at: String,
    /// The listing order; not part of the answer (cursors carry it).
    #[serde(skip)]
    pub seq: i64,
}

impl Product {
    /// The entity tag of this version (strong: the representation is a
    /// function of the version).
    pub fn etag(&self) -> String {
        format!("\"{}\"", self.version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fields() {
        assert!(Sku::try_from("MUG-RED-350".to_string()).is_ok());
        for bad in ["", "mug", "-MUG", "MUG RED", &"X".repeat(65)] {
            assert!(Sku::try_from(bad.to_string()).is_err(), "{bad}");
        }
        assert_eq!(
            Name::try_from("  Red mug ".to_string()).unwrap().as_str(),
            "Red mug"
        );
        assert!(Name::try_from("   ".to_string()).is_err());
        assert!(Name::try_from("a\u{7}b".to_string()).is_err());
        assert!(Description::try_from("two\nlines".to_string()).is_ok());
        assert!(Description::try_from("x".repeat(5001)).is_err());
        assert!(Category::try_from("tea-accessories".to_string()).is_ok());
        assert!(Category::try_from("Mugs".to_string()).is_err());
        let id = ProductId::generate();
        assert_eq!(ProductId::parse(&id.to_string()), Some(id));
        assert_eq!(ProductId::parse("nope"), None);
    }
}
