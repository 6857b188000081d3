//! Who the customer is. Until authentication exists, the caller names the
//! customer in the `x-bv-customer` header; everything that needs the
//! customer goes through [`customer`], the one place to replace.

use std::fmt;

use bv_service::Problem;
use spin_sdk::http::Request;

/// The header that names the customer.
const HEADER: &str = "x-bv-customer";

/// A customer's id: 1–128 ASCII letters, digits, `-`, `_`, `.` or `@`. No
/// `:`, so a cart's Redis key can never collide with the service's other
/// keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomerId(String);

impl CustomerId {
    fn parse(raw: &str) -> Option<Self> {
        let ok = (1..=128).contains(&raw.len())
            && raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.@".contains(&b));
        ok.then(|| Self(raw.to_string()))
    }
}

impl fmt::Display for CustomerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The customer making the request; 401 `unauthenticated` when the request
/// does not name one (or names one that cannot be an id).
pub fn customer(req: &Request) -> Result<CustomerId, Problem> {
    let unauthenticated =
        |detail: &str| Problem::new(401, "unauthenticated", "Not authenticated", detail);
    let value = req
        .headers()
        .get(HEADER)
        .ok_or_else(|| unauthenticated("the `x-bv-customer` header is missing"))?;
    value
        .to_str()
        .ok()
        .and_then(|v| CustomerId::parse(v.trim()))
        .ok_or_else(|| {
            unauthenticated("`x-bv-customer` must be 1–128 letters, digits, `-`, `_`, `.` or `@`")
        })
}
