//! Timestamps as the API writes them: RFC 3339, UTC, microseconds (`2026-01-31T10:28:13.366126Z`).
//! Stored in the database in the same form, which also sorts correctly as text.

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};

pub fn format(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

pub fn now() -> String {
    format(Utc::now())
}

/// Unix seconds as an API timestamp; `None` for values chrono cannot represent.
pub fn from_unix_secs(secs: i64) -> Option<String> {
    Utc.timestamp_opt(secs, 0).single().map(format)
}

/// Unix milliseconds as an API timestamp.
pub fn from_unix_millis(ms: i64) -> Option<String> {
    Utc.timestamp_millis_opt(ms).single().map(format)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn micros_and_zulu() {
        assert_eq!(
            from_unix_secs(1_769_855_293).as_deref(),
            Some("2026-01-31T10:28:13.000000Z")
        );
        assert_eq!(
            from_unix_millis(1_769_855_293_366).as_deref(),
            Some("2026-01-31T10:28:13.366000Z")
        );
        assert_eq!(from_unix_secs(i64::MAX), None);
        let n = now();
        assert!(n.ends_with('Z') && n.len() == 27, "{n}");
    }
}
