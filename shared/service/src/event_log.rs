//! The durable event log (`bv_events`) a component publishes to.
//!
//! `bv` creates it when a Postgres trigger starts, but a publisher served
//! without any subscriber yet (or before `bv events init`) must still be
//! able to write its events: so the component creates it too, the first
//! time it finds it missing, with the same SQL
//! ([`bv_events_guest::bv_events::POSTGRES_SCHEMA`]) under the same advisory lock as `bv`,
//! so that the two never race.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::Problem;
use bv_events_guest::bv_events::POSTGRES_SCHEMA;
use spin_sdk::pg::{Connection, Decode, ParameterValue};

/// `bv`'s lock on the event log schema: `pg_advisory_xact_lock(25206, 0)`.
const LOCK: &str = "SELECT pg_advisory_xact_lock(25206, 0)";

static PRESENT: AtomicBool = AtomicBool::new(false);

/// Creates the event log unless it exists; once per instance.
pub async fn ensure(conn: &Connection) -> Result<(), Problem> {
    if PRESENT.load(Ordering::Relaxed) {
        return Ok(());
    }
    let none = Vec::<ParameterValue>::new;
    let rows = conn
        .query("SELECT to_regclass('bv_events.outbox') IS NOT NULL", none())
        .await?
        .collect()
        .await?;
    let exists = rows.first().and_then(|r| bool::decode(&r[0]).ok()) == Some(true);
    if !exists {
        conn.execute("BEGIN", none()).await?;
        let result = async {
            conn.execute(LOCK, none()).await?;
            conn.execute("SET LOCAL client_min_messages = warning", none())
                .await?;
            for statement in statements(POSTGRES_SCHEMA) {
                conn.execute(statement, none()).await?;
            }
            conn.execute("COMMIT", none()).await
        }
        .await;
        if let Err(e) = result {
            let _ = conn.execute("ROLLBACK", none()).await;
            return Err(Problem::internal(format!("creating the event log: {e}")));
        }
    }
    PRESENT.store(true, Ordering::Relaxed);
    Ok(())
}

/// Splits a script into statements at `;`, except inside quotes,
/// `$tag$` bodies and `--` comments; pieces holding only comments are
/// dropped.
fn statements(script: &str) -> Vec<&str> {
    fn push<'a>(out: &mut Vec<&'a str>, piece: &'a str) {
        let has_code = piece
            .lines()
            .map(str::trim)
            .any(|l| !l.is_empty() && !l.starts_with("--"));
        if has_code {
            out.push(piece.trim());
        }
    }
    let bytes = script.as_bytes();
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                i = script[i..].find('\n').map_or(bytes.len(), |n| i + n);
            }
            b'\'' => {
                i = script[i + 1..]
                    .find('\'')
                    .map_or(bytes.len(), |n| i + 1 + n + 1);
            }
            b'$' => match dollar_tag(&script[i..]) {
                Some(tag) => {
                    let body = i + tag.len();
                    i = script[body..]
                        .find(tag)
                        .map_or(bytes.len(), |n| body + n + tag.len());
                }
                None => i += 1,
            },
            b';' => {
                push(&mut out, &script[start..i]);
                i += 1;
                start = i;
            }
            _ => i += 1,
        }
    }
    push(&mut out, &script[start..]);
    out
}

/// The `$tag$` (or `$$`) opening a dollar-quoted string at the start of
/// `s`, if one does.
fn dollar_tag(s: &str) -> Option<&str> {
    let rest = &s[1..];
    let end = rest.find('$')?;
    let tag = &rest[..end];
    let ok = tag.is_empty()
        || (tag.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && tag.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
    ok.then(|| &s[..end + 2])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_around_quotes_bodies_and_comments() {
        let script = "-- a; comment\nCREATE TABLE a (x text DEFAULT ';');\n\
                      CREATE FUNCTION f() RETURNS trigger AS $$\nBEGIN\n  PERFORM 1;\n  RETURN NULL;\nEND $$ LANGUAGE plpgsql;\n\
                      -- trailing; comment\n";
        let s = statements(script);
        assert_eq!(s.len(), 2, "{s:#?}");
        assert!(s[0].ends_with("DEFAULT ';')"));
        assert!(s[1].starts_with("CREATE FUNCTION") && s[1].ends_with("LANGUAGE plpgsql"));
        // The real schema: each piece one whole statement.
        let schema = statements(POSTGRES_SCHEMA);
        assert_eq!(schema.len(), 10, "{schema:#?}");
        let code = |s: &str| {
            s.lines()
                .find(|l| !l.trim().is_empty() && !l.trim_start().starts_with("--"))
                .unwrap_or("")
                .to_owned()
        };
        assert!(
            schema.iter().all(|s| code(s).starts_with("CREATE ")),
            "{schema:#?}"
        );
    }
}
