//! A bulkhead of its own for password hashing.
//!
//! One argon2id hash is a fifth of a second of CPU and 19 MiB; a flood of
//! registrations or logins, each its own instance, would otherwise hash on
//! every core at once and starve every other component on the host (a
//! cart's call to the product service then times out). So at most
//! `auth_hash_concurrency` hashes run at once, counted across every
//! instance and every `bv` process sharing the database: a hash runs only
//! while its request holds one of that many slots, each a
//! transaction-level advisory lock (`pg_try_advisory_xact_lock(25207,
//! slot)`). A request that finds every slot taken tries again for up to
//! [`WAIT`], holding no connection in between, and is then answered 503
//! `concurrency-limit` with `Retry-After`. The rest of `auth` (refresh,
//! logout, the JWKS) and every other component keep their own capacity.
//!
//! A slot's transaction ends when the hash is done ([`Slot::release`]); if
//! the instance dies first, the runtime rolls the session back when the
//! connection is dropped, which frees the slot too.

use std::time::Duration;

use bv_service::{Problem, ProblemKind};
use spin_sdk::pg::{Connection, ParameterValue};

/// The variable bounding how many hashes run at once.
pub const CONCURRENCY_VARIABLE: &str = "auth_hash_concurrency";

/// Hashes at once when the variable is not set: one, which leaves the
/// other cores of a small host to the rest of the application.
pub const DEFAULT_CONCURRENCY: i32 = 1;

/// The advisory-lock class of the slots (bv-service's migrations use
/// 25206).
const LOCK_CLASS: i32 = 25207;

/// How long a request waits for a slot before it is refused.
pub const WAIT: Duration = Duration::from_millis(500);

/// Between two tries.
const POLL: Duration = Duration::from_millis(25);

/// `Retry-After` of a refused request, in seconds.
const RETRY_AFTER_SECONDS: u64 = 1;

/// A held slot: a hash may run while it lives.
pub struct Slot {
    conn: Connection,
}

impl Slot {
    /// Frees the slot.
    pub async fn release(self) {
        if let Err(e) = self.conn.execute("ROLLBACK", vec![]).await {
            // Dropping the connection rolls back anyway.
            eprintln!("auth: releasing a hashing slot: {e}");
        }
    }
}

/// Takes a hashing slot, waiting up to [`WAIT`]; 503 `concurrency-limit`
/// (with `Retry-After`) when none frees up in time.
pub async fn slot() -> Result<Slot, Problem> {
    let limit = concurrency().await?;
    let url = spin_sdk::variables::get("db_url")
        .await
        .map_err(|e| Problem::internal(format!("variable db_url: {e:?}")))?;
    let started = std::time::Instant::now();
    loop {
        if let Some(slot) = try_slot(&url, limit).await? {
            return Ok(slot);
        }
        if started.elapsed() >= WAIT {
            return Err(Problem::new(
                503,
                ProblemKind::ConcurrencyLimit,
                "Service Unavailable",
                format!(
                    "password hashing is at its concurrency limit ({limit} at once); retry shortly"
                ),
            )
            .with_header("retry-after", RETRY_AFTER_SECONDS.to_string()));
        }
        spin_sdk::time::sleep(POLL).await;
    }
}

/// One pass over the slots; the connection is given back when none is free.
async fn try_slot(url: &str, limit: i32) -> Result<Option<Slot>, Problem> {
    let conn = Connection::open(url)
        .await
        .map_err(|e| Problem::unavailable(format!("the auth database: {e}")))?;
    conn.execute("BEGIN", vec![]).await?;
    for slot in 0..limit {
        let rows = conn
            .query(
                "SELECT pg_try_advisory_xact_lock($1, $2) AS held",
                vec![
                    ParameterValue::Int32(LOCK_CLASS),
                    ParameterValue::Int32(slot),
                ],
            )
            .await?
            .collect()
            .await?;
        if rows.first().and_then(|r| r.get::<bool>("held")) == Some(true) {
            return Ok(Some(Slot { conn }));
        }
    }
    conn.execute("ROLLBACK", vec![]).await?;
    Ok(None)
}

/// `auth_hash_concurrency`, at least 1; [`DEFAULT_CONCURRENCY`] when unset.
async fn concurrency() -> Result<i32, Problem> {
    match spin_sdk::variables::get(CONCURRENCY_VARIABLE).await {
        Ok(value) => value
            .trim()
            .parse::<i32>()
            .ok()
            .filter(|n| (1..=1024).contains(n))
            .ok_or_else(|| {
                Problem::internal(format!(
                    "variable {CONCURRENCY_VARIABLE}: `{value}` is not a number from 1 to 1024"
                ))
            }),
        Err(spin_sdk::variables::Error::Undefined(_)) => Ok(DEFAULT_CONCURRENCY),
        Err(e) => Err(Problem::internal(format!(
            "variable {CONCURRENCY_VARIABLE}: {e:?}"
        ))),
    }
}
