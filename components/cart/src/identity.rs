//! Who the customer is: the subject of the request's bearer token
//! (verified with `bv-auth`). Everything that needs the customer goes
//! through [`customer`]. A call the order service makes for a customer
//! over service chaining forwards that customer's token, so it is
//! authenticated the same way.

use std::fmt;

use bv_service::Problem;
use spin_sdk::http::Request;

/// A customer's id: a token subject, so 1–128 ASCII letters, digits, `-`,
/// `_`, `.` or `@`. No `:`, so a cart's Redis key can never collide with
/// the service's other keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomerId(String);

impl fmt::Display for CustomerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The customer making the request: 401 `unauthenticated` without a
/// bearer token, 401 `invalid-token` with one that does not verify. Every
/// principal, administrators included, has a cart of their own.
pub async fn customer(req: &Request) -> Result<CustomerId, Problem> {
    let principal = bv_auth::authenticate(req.headers()).await?;
    Ok(CustomerId(principal.subject.as_str().to_string()))
}
