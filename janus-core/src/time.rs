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
    fn now_is_after_2020() {
        assert!(Timestamp::now().unix_micros() > 1_577_836_800_000_000);
    }
}
