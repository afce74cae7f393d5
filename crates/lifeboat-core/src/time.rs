//! Times are RFC 3339 with fractional seconds, in UTC; stored as microseconds since the
//! Unix epoch.

use crate::error::{Error, Result};

pub fn format_us(us: i64) -> String {
    match chrono::DateTime::from_timestamp_micros(us) {
        Some(t) => t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        None => format!("{us}us"),
    }
}

pub fn parse(text: &str) -> Result<i64> {
    chrono::DateTime::parse_from_rfc3339(text.trim())
        .map(|t| t.timestamp_micros())
        .map_err(|e| {
            Error::usage(format!(
                "time {text:?} is not RFC 3339 (for example 2026-04-05T07:38:12.5Z): {e}"
            ))
        })
}

pub fn now_us() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

/// The variable that sets the control store's clock, for tests only.
pub const TEST_CLOCK_VAR: &str = "LIFEBOAT_TEST_CLOCK";

/// The time the control store stamps its records with (incidents, campaign stages, audit
/// entries) and reports measure downtime up to: now, or the RFC 3339 time in
/// `LIFEBOAT_TEST_CLOCK` when it is set. Tests set it to give records known times; it is
/// never set in production (docs/status.md, "SLA and credits").
pub fn clock_us() -> i64 {
    match std::env::var(TEST_CLOCK_VAR) {
        Ok(text) => match parse(&text) {
            Ok(us) => us,
            Err(e) => {
                tracing::warn!("{TEST_CLOCK_VAR}: {e}; using the real time");
                now_us()
            }
        },
        Err(_) => now_us(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn round_trips() {
        let us = super::parse("2026-04-05T07:38:12.123456Z").expect("parse");
        assert_eq!(super::format_us(us), "2026-04-05T07:38:12.123456Z");
        assert!(super::parse("yesterday").is_err());
    }
}
