//! Instants as milliseconds since the epoch, and the one-minute windows.

use chrono::{DateTime, SecondsFormat, Utc};

/// One window: a minute, in milliseconds.
pub const MINUTE_MS: i64 = 60_000;

/// How far behind the latest event time seen an event may be and still
/// count in its window: the watermark is the latest event time minus this.
pub const ALLOWED_LATENESS_MS: i64 = 5 * MINUTE_MS;

/// The earliest instant the API takes (1970-01-01T00:00:00Z).
pub const EARLIEST_MS: i64 = 0;
/// The latest instant the API takes (9999-01-01T00:00:00Z): far enough
/// from the end of four-digit years that the windows around it still have
/// RFC 3339 bounds.
pub const LATEST_MS: i64 = 253_370_764_800_000;

/// An RFC 3339 timestamp, as milliseconds since the epoch (anything below
/// a millisecond dropped).
pub fn parse(text: &str) -> Option<i64> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc).timestamp_millis())
}

/// `ms` as RFC 3339 in UTC with milliseconds (`2026-01-02T03:04:05.678Z`).
pub fn format(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The start of the minute `ms` falls in.
pub fn minute(ms: i64) -> i64 {
    ms.div_euclid(MINUTE_MS) * MINUTE_MS
}

/// Now, by the wall clock.
pub fn now() -> i64 {
    Utc::now().timestamp_millis()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minutes_and_formats() {
        let t = parse("2026-01-02T03:04:05.678+01:00").unwrap();
        assert_eq!(format(t), "2026-01-02T02:04:05.678Z");
        assert_eq!(format(minute(t)), "2026-01-02T02:04:00.000Z");
        assert_eq!(minute(-1), -MINUTE_MS);
        assert_eq!(format(LATEST_MS), "9999-01-01T00:00:00.000Z");
        assert_eq!(parse("yesterday"), None);
    }
}
