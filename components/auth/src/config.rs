//! The auth service's settings, from Spin variables.

use std::sync::{Arc, Mutex};

use bv_auth::SigningKeys;
use bv_service::Problem;

/// The secret variable with the signing keys: a JSON list of
/// `{"kid", "seed"}` (32-byte Ed25519 seeds, base64url). The first signs.
pub const SIGNING_KEYS_VARIABLE: &str = "auth_signing_keys";

/// The variable listing the emails that get the admin role (comma or
/// whitespace separated; empty for none).
pub const ADMIN_EMAILS_VARIABLE: &str = "auth_admin_emails";

/// Access tokens live this long (seconds).
pub const ACCESS_TOKEN_SECONDS: i64 = 15 * 60;

/// Refresh tokens (and so a session without activity) live this long.
pub const REFRESH_TOKEN_SECONDS: i64 = 30 * 24 * 60 * 60;

async fn variable(name: &str) -> Result<String, Problem> {
    spin_sdk::variables::get(name)
        .await
        .map_err(|e| Problem::internal(format!("variable {name}: {e:?}")))
}

/// The signing keys, parsed once per instance (again only when the
/// variable changes). A key set that does not parse is a 500 whose log
/// line names the problem, never the keys.
pub async fn signing_keys() -> Result<Arc<SigningKeys>, Problem> {
    static CACHE: Mutex<Option<(String, Arc<SigningKeys>)>> = Mutex::new(None);
    let text = variable(SIGNING_KEYS_VARIABLE).await?;
    let mut cache = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((known, keys)) = cache.as_ref() {
        if *known == text {
            return Ok(keys.clone());
        }
    }
    let keys = Arc::new(
        SigningKeys::parse(&text)
            .map_err(|e| Problem::internal(format!("variable {SIGNING_KEYS_VARIABLE}: {e}")))?,
    );
    *cache = Some((text, keys.clone()));
    Ok(keys)
}

/// Whether `email` (normalized) is one of the configured administrators.
pub async fn is_admin_email(email: &str) -> Result<bool, Problem> {
    let list = variable(ADMIN_EMAILS_VARIABLE).await?;
    let listed = admin_emails(&list).any(|a| a == email);
    Ok(listed)
}

/// The emails of an `auth_admin_emails` value, normalized.
fn admin_emails(list: &str) -> impl Iterator<Item = String> + '_ {
    list.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|e| !e.is_empty())
        .map(str::to_lowercase)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_lists_split_on_commas_and_spaces() {
        let list: Vec<String> =
            admin_emails(" Ops@Shop.example, root@x.io\nthird@y.io ,").collect();
        assert_eq!(list, ["ops@shop.example", "root@x.io", "third@y.io"]);
        assert_eq!(admin_emails("").count(), 0);
    }
}
