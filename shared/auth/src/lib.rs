//! Authentication and authorization for BitVelocity's components.
//!
//! - [`token`]: JWTs signed with EdDSA (Ed25519) and nothing else —
//!   [`Verifier`] (algorithm pinned, `kid` looked up in the verifier's own
//!   [`KeySet`], issuer, audience, `exp`/`nbf`/`iat` with a small leeway)
//!   and [`sign`] for the auth service.
//! - [`keys`]: the public key set (a JWKS document, the
//!   `auth_public_keys` variable) and the signing keys (the
//!   `auth_signing_keys` secret, the auth service's alone).
//! - [`Principal`], [`Role`], [`Subject`]: who a verified token speaks for.
//! - [`guest`]: what a protected component calls per request
//!   ([`authenticate`], [`require_admin`], [`require_internal_or_admin`]),
//!   answering RFC 9457 problems: 401 `unauthenticated` (no token), 401
//!   `invalid-token` (a token that does not verify), 403 `forbidden` (the
//!   role does not allow it).
#![deny(missing_docs)]

mod alg;
pub mod guest;
pub mod keys;
mod principal;
pub mod token;

pub use guest::{
    authenticate, authenticate_handshake, authorization, is_chained, require_admin,
    require_internal_or_admin, Caller, AUDIENCE, ISSUER,
};
pub use keys::{KeyError, KeySet, SigningKeys};
pub use principal::{Principal, Role, Subject};
pub use token::{sign, Claims, NewToken, TokenError, Verifier};
