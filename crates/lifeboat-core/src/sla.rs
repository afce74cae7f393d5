//! Service levels: calendar months, a downtime's share of one, monthly uptime and the
//! credit a tier's table gives for it (docs/status.md, "SLA and credits").
//!
//! Uptime is compared with a threshold exactly, in integers: a month of `L` microseconds
//! with `D` of them down is below a threshold `P` percent when `(L - D) / L * 100 < P`.
//! Exactly at the threshold is not below it.

use chrono::{Datelike, NaiveDate, TimeZone, Utc};

use crate::config::{SlaConfig, TierConfig};
use crate::error::{Error, Result};

/// A calendar month in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Month {
    pub year: i32,
    pub month: u32,
}

impl Month {
    /// `YYYY-MM`.
    pub fn parse(text: &str) -> Result<Month> {
        let bad = || Error::usage(format!("month {text:?}: use YYYY-MM, for example 2026-04"));
        let (year, month) = text.trim().split_once('-').ok_or_else(bad)?;
        if year.len() != 4 || month.len() != 2 {
            return Err(bad());
        }
        let year: i32 = year.parse().map_err(|_| bad())?;
        let month: u32 = month.parse().map_err(|_| bad())?;
        if !(1..=12).contains(&month) || year < 1970 {
            return Err(bad());
        }
        Ok(Month { year, month })
    }

    /// The month a time (microseconds since the epoch) falls in.
    pub fn of(us: i64) -> Month {
        let t = chrono::DateTime::from_timestamp_micros(us).unwrap_or_default();
        Month {
            year: t.year(),
            month: t.month(),
        }
    }

    fn first_day_us(year: i32, month: u32) -> i64 {
        NaiveDate::from_ymd_opt(year, month, 1)
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map(|t| Utc.from_utc_datetime(&t).timestamp_micros())
            .unwrap_or(0)
    }

    /// Its first microsecond and the first microsecond of the next month.
    pub fn bounds_us(self) -> (i64, i64) {
        let (next_year, next_month) = if self.month == 12 {
            (self.year + 1, 1)
        } else {
            (self.year, self.month + 1)
        };
        (
            Month::first_day_us(self.year, self.month),
            Month::first_day_us(next_year, next_month),
        )
    }

    pub fn length_us(self) -> i64 {
        let (start, end) = self.bounds_us();
        end - start
    }
}

impl std::fmt::Display for Month {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

/// The part of `[start, end)` inside `month`, in microseconds.
pub fn share_in(start_us: i64, end_us: i64, month: Month) -> i64 {
    let (first, next) = month.bounds_us();
    (end_us.min(next) - start_us.max(first)).max(0)
}

/// A percentage in millionths of a percent (99.9 → 99_900_000), as configured.
fn millionths(percent: f64) -> i128 {
    (percent * 1e6).round() as i128
}

/// Whether `down_us` of downtime in a month of `length_us` leaves uptime below
/// `threshold` percent.
pub fn below(down_us: i64, length_us: i64, threshold: f64) -> bool {
    let up = i128::from(length_us - down_us.clamp(0, length_us));
    up * 100_000_000 < millionths(threshold) * i128::from(length_us)
}

/// Monthly uptime in percent (for showing; comparisons use `below`).
pub fn uptime_percent(down_us: i64, length_us: i64) -> f64 {
    if length_us <= 0 {
        return 100.0;
    }
    let up = (length_us - down_us.clamp(0, length_us)) as f64;
    up * 100.0 / length_us as f64
}

impl TierConfig {
    /// The credit (percent) of the lowest threshold the uptime falls below; 0 when it
    /// falls below none.
    pub fn credit(&self, down_us: i64, length_us: i64) -> f64 {
        self.credits
            .iter()
            .filter(|(threshold, _)| below(down_us, length_us, *threshold))
            .map(|(_, credit)| *credit)
            .next_back()
            .unwrap_or(0.0)
    }

    /// Whether the month's uptime missed the tier's target.
    pub fn missed(&self, down_us: i64, length_us: i64) -> bool {
        below(down_us, length_us, self.target)
    }
}

impl SlaConfig {
    /// The tier of a tenant whose tier attribute is `value`: the tier of that name, or the
    /// default tier. `None`: no tier applies.
    pub fn tier_of(&self, value: Option<&str>) -> Option<(&str, &TierConfig)> {
        if let Some((name, tier)) = value.and_then(|v| self.tiers.get_key_value(v)) {
            return Some((name.as_str(), tier));
        }
        let name = self.default_tier.as_deref()?;
        self.tiers.get_key_value(name).map(|(n, t)| (n.as_str(), t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tier(credits: &[(f64, f64)]) -> TierConfig {
        TierConfig {
            target: credits.first().map(|c| c.0).unwrap_or(100.0),
            credits: credits.to_vec(),
        }
    }

    #[test]
    fn months_parse_strictly_and_know_their_length() {
        let m = Month::parse("2026-02").expect("month");
        assert_eq!(m.length_us(), 28 * 86_400_000_000);
        assert_eq!(
            Month::parse("2024-02").expect("leap").length_us(),
            29 * 86_400_000_000
        );
        assert_eq!(
            Month::parse("2026-12").expect("december").length_us(),
            31 * 86_400_000_000
        );
        for bad in [
            "2026-13", "2026-1", "26-01", "2026/01", "april", "2026-00", "",
        ] {
            let err = Month::parse(bad).expect_err(bad);
            assert!(err.to_string().contains("YYYY-MM"), "{err}");
        }
        let t = crate::time::parse("2026-03-31T23:59:59.999999Z").expect("time");
        assert_eq!(Month::of(t).to_string(), "2026-03");
        assert_eq!(Month::of(t + 1).to_string(), "2026-04");
    }

    #[test]
    fn a_downtime_across_months_counts_its_share_in_each() {
        let start = crate::time::parse("2026-03-31T23:00:00Z").expect("time");
        let end = crate::time::parse("2026-04-01T01:30:00Z").expect("time");
        let march = Month::parse("2026-03").expect("march");
        let april = Month::parse("2026-04").expect("april");
        assert_eq!(share_in(start, end, march), 3_600_000_000);
        assert_eq!(share_in(start, end, april), 5_400_000_000);
        assert_eq!(
            share_in(start, end, Month::parse("2026-05").expect("may")),
            0
        );
    }

    #[test]
    fn credits_at_each_boundary() {
        // A 30-day month: 43 200 minutes; 99.9% up leaves exactly 43.2 minutes down.
        let month = Month::parse("2026-04").expect("april").length_us();
        let t = tier(&[(99.9, 10.0), (99.0, 25.0), (95.0, 50.0)]);
        let at_999 = 2_592_000_000; // 43.2 minutes
        assert_eq!(t.credit(0, month), 0.0);
        assert_eq!(
            t.credit(at_999, month),
            0.0,
            "exactly at 99.9 is not below it"
        );
        assert!(!t.missed(at_999, month));
        assert_eq!(t.credit(at_999 + 1, month), 10.0, "one microsecond more");
        assert!(t.missed(at_999 + 1, month));
        let at_99 = 25_920_000_000; // 432 minutes
        assert_eq!(t.credit(at_99, month), 10.0);
        assert_eq!(t.credit(at_99 + 1, month), 25.0);
        let at_95 = 129_600_000_000; // 36 hours
        assert_eq!(t.credit(at_95, month), 25.0);
        assert_eq!(t.credit(at_95 + 1, month), 50.0);
        assert_eq!(t.credit(month * 2, month), 50.0, "down all month");
        assert!((uptime_percent(at_999, month) - 99.9).abs() < 1e-9);
    }
}
