//! The Erlang `now()` timestamp carried in hellos, deliveries and errors.
//!
//! Erlang split the Unix time into `[MEGA, SEC, MICRO]` where
//! `MEGA * 1_000_000 + SEC` is the Unix second and `MICRO` the microsecond
//! within it. Old clients measure latency from it, so it is reproduced exactly.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A wall-clock instant in the Erlang `[MEGA, SEC, MICRO]` form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timestamp {
    /// Microseconds since the Unix epoch.
    micros: u64,
}

impl Timestamp {
    /// The current wall-clock time. A clock set before 1970 reads as the epoch.
    pub fn now() -> Self {
        let since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        Self::from_unix_micros(u64::try_from(since.as_micros()).unwrap_or(u64::MAX))
    }

    /// A timestamp from microseconds since the Unix epoch.
    pub fn from_unix_micros(micros: u64) -> Self {
        Self { micros }
    }

    /// Builds a timestamp from its three Erlang parts, as read off the wire.
    pub fn from_parts(mega: u64, sec: u64, micro: u64) -> Self {
        Self {
            micros: mega
                .saturating_mul(1_000_000)
                .saturating_add(sec)
                .saturating_mul(1_000_000)
                .saturating_add(micro),
        }
    }

    /// Microseconds since the Unix epoch.
    pub fn unix_micros(self) -> u64 {
        self.micros
    }

    /// The `[MEGA, SEC, MICRO]` parts.
    pub fn parts(self) -> [u64; 3] {
        let secs = self.micros / 1_000_000;
        [secs / 1_000_000, secs % 1_000_000, self.micros % 1_000_000]
    }
}

/// A UTC calendar date and time of day, whole seconds (proleptic Gregorian).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UtcDateTime {
    /// Year, e.g. 2026.
    pub year: i64,
    /// Month, 1..=12.
    pub month: u32,
    /// Day of the month, 1..=31.
    pub day: u32,
    /// Hour, 0..=23.
    pub hour: u32,
    /// Minute, 0..=59.
    pub minute: u32,
    /// Second, 0..=59.
    pub second: u32,
}

impl UtcDateTime {
    /// The calendar date and time of `unix_secs` seconds after the epoch.
    pub fn from_unix_secs(unix_secs: u64) -> Self {
        // u64 seconds / 86_400 always fits an i64.
        let days = i64::try_from(unix_secs / 86_400).unwrap_or(0);
        let rem = unix_secs % 86_400;
        // Howard Hinnant's `civil_from_days`.
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        // Every value below is in range by construction (day 1..=31,
        // month 1..=12, rem < 86_400).
        Self {
            year,
            month: month as u32,
            day: day as u32,
            hour: (rem / 3600) as u32,
            minute: (rem % 3600 / 60) as u32,
            second: (rem % 60) as u32,
        }
    }
}

/// Formats as the JSON array the wire carries, e.g. `[1764,471234,56789]`.
impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [mega, sec, micro] = self.parts();
        write!(f, "[{mega},{sec},{micro}]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_split_like_erlang_now() {
        let ts = Timestamp::from_unix_micros(1_764_471_234_056_789);
        assert_eq!(ts.parts(), [1764, 471_234, 56_789]);
        assert_eq!(ts.to_string(), "[1764,471234,56789]");
        assert_eq!(Timestamp::from_parts(1764, 471_234, 56_789), ts);
    }

    #[test]
    fn calendar_dates() {
        let civil = |s: u64| {
            let d = UtcDateTime::from_unix_secs(s);
            (d.year, d.month, d.day, d.hour, d.minute, d.second)
        };
        assert_eq!(civil(0), (1970, 1, 1, 0, 0, 0));
        assert_eq!(civil(951_782_400), (2000, 2, 29, 0, 0, 0));
        assert_eq!(civil(1_764_471_234), (2025, 11, 30, 2, 53, 54));
        assert_eq!(civil(4_107_542_399), (2100, 2, 28, 23, 59, 59));
    }

    #[test]
    fn now_is_after_2020() {
        assert!(Timestamp::now().unix_micros() > 1_577_836_800_000_000);
    }
}
