//! What a guest's statements leave behind on its connection.
//!
//! tokio-postgres does not expose the server's transaction status, so a
//! session follows it from the statements the guest ran. Statements go
//! through the extended protocol, where a statement string holds exactly one
//! command, so the leading keyword tells what a statement can change.

/// Leading keywords that cannot open a transaction or change session state
/// (unless they call one of [`SESSION_FUNCTIONS`]).
const PLAIN: &[&str] = &[
    "SELECT", "INSERT", "UPDATE", "DELETE", "MERGE", "WITH", "VALUES", "TABLE",
];

/// Commands whose effects are transaction-scoped or live in the database,
/// not in the session (a `CREATE` is one unless it makes something
/// temporary).
const NOT_SESSION: &[&str] = &[
    "SAVEPOINT",
    "RELEASE",
    "LOCK",
    "ALTER",
    "DROP",
    "COMMENT",
    "GRANT",
    "REVOKE",
    "TRUNCATE",
    "ANALYZE",
    "REFRESH",
];

/// Functions that leave state on the session when a plain statement calls
/// them: session-level advisory locks and settings.
const SESSION_FUNCTIONS: &[&str] = &["advisory_lock", "set_config"];

/// The session state a guest's statements may have left on a connection.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SessionState {
    /// A transaction block may be open.
    in_transaction: bool,
    /// Something outlives a transaction (a setting, a cursor, a listener, a
    /// prepared statement, a temporary table…).
    changed: bool,
}

impl SessionState {
    /// Follows `statement`, noted before it runs. A statement that then
    /// fails leaves at most an aborted transaction, which
    /// [`needs_reset`](Self::needs_reset) still reports.
    pub fn note(&mut self, statement: &str) {
        let mut words = words(statement);
        let Some(first) = words.next() else { return };
        match first.as_str() {
            k if PLAIN.contains(&k) => {
                if SESSION_FUNCTIONS
                    .iter()
                    .any(|f| contains_ignoring_case(statement, f))
                {
                    self.changed = true;
                }
            }
            k if NOT_SESSION.contains(&k) => {}
            "CREATE" => {
                let temporary = words.take(4).any(|w| w == "TEMP" || w == "TEMPORARY");
                self.changed |= temporary;
            }
            "BEGIN" | "START" => self.in_transaction = true,
            "COMMIT" | "END" | "ABORT" | "ROLLBACK" => {
                // `ROLLBACK TO SAVEPOINT` stays in the transaction; `AND
                // CHAIN` opens the next one at once. A failed `COMMIT` ends
                // the transaction too (it rolls back).
                let rest: Vec<String> = words.collect();
                let to_savepoint = rest.iter().any(|w| w == "TO");
                let chained = rest.windows(2).any(|w| w[0] == "AND" && w[1] == "CHAIN");
                self.in_transaction = to_savepoint || chained;
            }
            _ => self.changed = true,
        }
    }

    /// Whether the connection must be reset before another guest gets it.
    pub fn needs_reset(&self) -> bool {
        self.in_transaction || self.changed
    }
}

/// The statement's words, upper-cased, skipping whitespace, comments and
/// `(`; stops at the first character that is neither.
fn words(sql: &str) -> impl Iterator<Item = String> + '_ {
    let mut rest = sql;
    std::iter::from_fn(move || {
        loop {
            let trimmed = rest.trim_start_matches(|c: char| c.is_whitespace() || c == '(');
            if let Some(after) = trimmed.strip_prefix("--") {
                rest = after.split_once('\n').map(|(_, r)| r).unwrap_or("");
            } else if let Some(after) = trimmed.strip_prefix("/*") {
                rest = after.split_once("*/").map(|(_, r)| r).unwrap_or("");
            } else {
                rest = trimmed;
                break;
            }
        }
        let end = rest
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        if end == 0 {
            return None;
        }
        let word = rest[..end].to_ascii_uppercase();
        rest = &rest[end..];
        Some(word)
    })
}

/// Whether `needle` (lower case ASCII) occurs in `haystack`, whatever the
/// case.
fn contains_ignoring_case(haystack: &str, needle: &str) -> bool {
    haystack
        .as_bytes()
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
}

/// The first keyword of `sql`, skipping whitespace, comments and `(`.
pub fn leading_keyword(sql: &str) -> String {
    words(sql).next().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::{leading_keyword, SessionState};

    fn after(statements: &[&str]) -> bool {
        let mut state = SessionState::default();
        for s in statements {
            state.note(s);
        }
        state.needs_reset()
    }

    #[test]
    fn leading_keywords() {
        assert_eq!(leading_keyword("  select 1"), "SELECT");
        assert_eq!(leading_keyword("-- note\n/* c */ BEGIN"), "BEGIN");
        assert_eq!(leading_keyword("(SELECT 1) UNION (SELECT 2)"), "SELECT");
        assert_eq!(leading_keyword("start transaction"), "START");
        assert_eq!(leading_keyword(""), "");
    }

    #[test]
    fn plain_statements_leave_the_session_clean() {
        assert!(!after(&[
            "SELECT 1",
            "insert into t values (1)",
            "WITH x AS (SELECT 1) TABLE x"
        ]));
    }

    #[test]
    fn a_finished_transaction_leaves_the_session_clean() {
        assert!(!after(&["BEGIN", "UPDATE t SET a = 1", "COMMIT"]));
        assert!(!after(&[
            "start transaction isolation level serializable",
            "ROLLBACK"
        ]));
        assert!(!after(&[
            "BEGIN",
            "SAVEPOINT s",
            "ROLLBACK TO SAVEPOINT s",
            "RELEASE s",
            "end"
        ]));
        assert!(!after(&["BEGIN", "COMMIT AND NO CHAIN"]));
    }

    #[test]
    fn an_open_transaction_or_a_session_change_needs_a_reset() {
        assert!(after(&["BEGIN", "UPDATE t SET a = 1"]));
        assert!(after(&["BEGIN", "ROLLBACK TO SAVEPOINT s"]));
        assert!(after(&["BEGIN", "COMMIT AND CHAIN"]));
        assert!(after(&["SET search_path = x"]));
        assert!(after(&["BEGIN", "SET LOCAL work_mem = '1MB'", "COMMIT"]));
        assert!(after(&["LISTEN x"]));
        assert!(after(&["DECLARE c CURSOR WITH HOLD FOR SELECT 1"]));
        assert!(after(&["CREATE TEMP TABLE x (a int)"]));
        assert!(after(&["create or replace temporary view v as select 1"]));
        assert!(after(&["SELECT pg_advisory_lock(1)"]));
        assert!(after(&["SELECT PG_TRY_ADVISORY_LOCK_SHARED(1)"]));
        assert!(after(&["SELECT set_config('search_path', 'x', false)"]));
        assert!(after(&["PREPARE p AS SELECT 1"]));
        assert!(after(&["DEALLOCATE ALL"]));
    }

    #[test]
    fn schema_changes_and_transaction_scoped_locks_leave_the_session_clean() {
        assert!(!after(&[
            "CREATE TABLE IF NOT EXISTS t (a int)",
            "CREATE INDEX IF NOT EXISTS i ON t (a)",
            "ALTER TABLE t ADD COLUMN b int",
            "DROP TABLE t",
        ]));
        assert!(!after(&[
            "BEGIN",
            "SELECT pg_advisory_xact_lock(1, 2)",
            "LOCK TABLE t IN SHARE MODE",
            "COMMIT"
        ]));
        assert!(!after(&["SELECT pg_advisory_unlock(1)"]));
    }
}
