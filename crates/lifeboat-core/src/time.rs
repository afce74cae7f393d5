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

#[cfg(test)]
mod tests {
    #[test]
    fn round_trips() {
        let us = super::parse("2026-04-05T07:38:12.123456Z").expect("parse");
        assert_eq!(super::format_us(us), "2026-04-05T07:38:12.123456Z");
        assert!(super::parse("yesterday").is_err());
    }
}
