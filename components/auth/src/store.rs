//! Users and refresh-token families in Postgres.
//!
//! A login starts a *family* (one session); each refresh marks the token
//! it used as rotated and adds the next one to the family. A rotated token
//! that comes back means two parties hold the session (the token was
//! stolen, or a client misbehaved): the whole family is revoked, so
//! neither can go on without logging in.

use std::sync::atomic::AtomicBool;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bv_service::Problem;
use sha2::{Digest, Sha256};
use spin_sdk::pg::{Connection, ParameterValue};

use crate::config::REFRESH_TOKEN_SECONDS;
use crate::schema;

/// Set once this instance has seen the migrations applied.
static MIGRATED: AtomicBool = AtomicBool::new(false);

/// The database, migrated; 503 when it cannot be reached.
pub async fn open() -> Result<Connection, Problem> {
    let url = spin_sdk::variables::get("db_url")
        .await
        .map_err(|e| Problem::internal(format!("variable db_url: {e:?}")))?;
    let conn = Connection::open(url)
        .await
        .map_err(|e| Problem::unavailable(format!("the auth database: {e}")))?;
    bv_service::migrate(&conn, schema::COMPONENT, schema::MIGRATIONS, &MIGRATED).await?;
    Ok(conn)
}

fn text(s: &str) -> ParameterValue {
    ParameterValue::Str(s.to_string())
}

/// A new refresh token: 32 random bytes, base64url. Returns the token (for
/// the client) and its hash (for the table).
pub fn new_refresh_token() -> Result<(String, String), Problem> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| Problem::internal(format!("random: {e}")))?;
    let token = URL_SAFE_NO_PAD.encode(bytes);
    let hash = token_hash(&token);
    Ok((token, hash))
}

/// What the table keeps of a refresh token.
pub fn token_hash(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Creates a user; `None` when the email is taken.
pub async fn create_user(
    conn: &Connection,
    email: &str,
    password_hash: &str,
) -> Result<Option<String>, Problem> {
    let id = uuid::Uuid::new_v4().to_string();
    let rows = conn
        .query(
            "INSERT INTO auth.users (user_id, email, password_hash) VALUES ($1, $2, $3)
             ON CONFLICT (email) DO NOTHING RETURNING user_id",
            vec![text(&id), text(email), text(password_hash)],
        )
        .await?
        .collect()
        .await?;
    Ok((!rows.is_empty()).then_some(id))
}

/// A user's id and password hash, by email.
pub async fn find_user(
    conn: &Connection,
    email: &str,
) -> Result<Option<(String, String)>, Problem> {
    let rows = conn
        .query(
            "SELECT user_id, password_hash FROM auth.users WHERE email = $1",
            vec![text(email)],
        )
        .await?
        .collect()
        .await?;
    Ok(rows.first().and_then(|r| {
        Some((
            r.get::<String>("user_id")?,
            r.get::<String>("password_hash")?,
        ))
    }))
}

/// Adds `hash` to `family` for `user`, valid for [`REFRESH_TOKEN_SECONDS`].
async fn insert_token(
    conn: &Connection,
    hash: &str,
    family: &str,
    user: &str,
) -> Result<(), Problem> {
    conn.execute(
        "INSERT INTO auth.refresh_tokens (token_hash, family_id, user_id, expires_at)
         VALUES ($1, $2, $3, now() + $4::bigint * interval '1 second')",
        vec![
            text(hash),
            text(family),
            text(user),
            ParameterValue::Int64(REFRESH_TOKEN_SECONDS),
        ],
    )
    .await?;
    Ok(())
}

/// Starts a session for `user`: a new family with its first refresh token
/// (hashed as `hash`).
pub async fn start_session(conn: &Connection, user: &str, hash: &str) -> Result<(), Problem> {
    insert_token(conn, hash, &uuid::Uuid::new_v4().to_string(), user).await
}

/// What a refresh did.
#[derive(Debug, PartialEq, Eq)]
pub enum Rotation {
    /// The token was current: it is rotated, `next` joins the family. The
    /// user's id and email.
    Rotated {
        /// The user's id.
        user: String,
        /// The user's email (for the role).
        email: String,
    },
    /// No such token, or revoked, or expired.
    Invalid,
    /// The token had been rotated already: the family is now revoked.
    Reused,
}

/// Uses refresh token `hash`: rotates it to `next_hash` in one transaction,
/// or refuses it (revoking its family when it was already rotated).
pub async fn rotate(conn: &Connection, hash: &str, next_hash: &str) -> Result<Rotation, Problem> {
    let none = Vec::<ParameterValue>::new;
    conn.execute("BEGIN", none()).await?;
    let result = rotate_in_transaction(conn, hash, next_hash).await;
    if result.is_ok() {
        conn.execute("COMMIT", none()).await?;
    } else {
        let _ = conn.execute("ROLLBACK", none()).await;
    }
    result
}

async fn rotate_in_transaction(
    conn: &Connection,
    hash: &str,
    next_hash: &str,
) -> Result<Rotation, Problem> {
    let rows = conn
        .query(
            "SELECT t.family_id, t.user_id, u.email,
                    t.rotated_at IS NOT NULL AS rotated,
                    t.revoked_at IS NOT NULL OR t.expires_at <= now() AS dead
             FROM auth.refresh_tokens t JOIN auth.users u USING (user_id)
             WHERE t.token_hash = $1 FOR UPDATE OF t",
            vec![text(hash)],
        )
        .await?
        .collect()
        .await?;
    let Some(row) = rows.first() else {
        return Ok(Rotation::Invalid);
    };
    let column = |c: &str| {
        row.get::<String>(c)
            .ok_or_else(|| Problem::internal(format!("auth.refresh_tokens: no {c}")))
    };
    let (family, user, email) = (column("family_id")?, column("user_id")?, column("email")?);
    if row.get::<bool>("dead").unwrap_or(true) {
        return Ok(Rotation::Invalid);
    }
    if row.get::<bool>("rotated").unwrap_or(true) {
        revoke_family(conn, &family).await?;
        return Ok(Rotation::Reused);
    }
    conn.execute(
        "UPDATE auth.refresh_tokens SET rotated_at = now() WHERE token_hash = $1",
        vec![text(hash)],
    )
    .await?;
    insert_token(conn, next_hash, &family, &user).await?;
    Ok(Rotation::Rotated { user, email })
}

async fn revoke_family(conn: &Connection, family: &str) -> Result<(), Problem> {
    conn.execute(
        "UPDATE auth.refresh_tokens SET revoked_at = now()
         WHERE family_id = $1 AND revoked_at IS NULL",
        vec![text(family)],
    )
    .await?;
    Ok(())
}

/// Ends the session refresh token `hash` belongs to (whether it is the
/// current token or an older one); nothing for an unknown token.
pub async fn logout(conn: &Connection, hash: &str) -> Result<(), Problem> {
    conn.execute(
        "UPDATE auth.refresh_tokens SET revoked_at = now()
         WHERE revoked_at IS NULL
           AND family_id = (SELECT family_id FROM auth.refresh_tokens WHERE token_hash = $1)",
        vec![text(hash)],
    )
    .await?;
    Ok(())
}
