//! The one signature algorithm, shared by the key set (which refuses a key
//! meant for any other) and the tokens (which refuse a header naming any
//! other).

/// The only `alg` accepted and produced.
pub const ALGORITHM: &str = "EdDSA";
