//! Clock offsets between the coordinator and its agents.
//!
//! Processes on one machine read the same `CLOCK_MONOTONIC`
//! ([`crate::sys::monotonic_ns`]), so local workers need no correction. An
//! agent on another machine has its own clock, so the coordinator measures
//! the offset NTP-style: it sends `t0`, the agent answers its clock `t`, the
//! answer arrives at `t1`. If the two legs took equally long, the agent read
//! its clock at the coordinator's `(t0 + t1) / 2`, so
//!
//! ```text
//! offset = t − (t0 + t1) / 2        agent clock = coordinator clock + offset
//! ```
//!
//! and however unequal the legs, the error is at most half the round trip.
//! Of several probes, the one with the smallest round trip bounds it best.

use serde::{Deserialize, Serialize};

/// One ping-pong exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    /// Coordinator clock when the ping left.
    pub t0: u64,
    /// Remote clock when it answered.
    pub remote: u64,
    /// Coordinator clock when the pong arrived.
    pub t1: u64,
}

impl Probe {
    /// Round trip time, ns.
    pub fn rtt_ns(&self) -> u64 {
        self.t1.saturating_sub(self.t0)
    }

    /// Remote clock minus coordinator clock, ns.
    pub fn offset_ns(&self) -> i64 {
        let mid = (i128::from(self.t0) + i128::from(self.t1)) / 2;
        i64::try_from(i128::from(self.remote) - mid).unwrap_or(0)
    }
}

/// A measured clock offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClockOffset {
    /// Remote clock minus coordinator clock, ns.
    pub offset_ns: i64,
    /// The error bound: half the best round trip, ns.
    pub uncertainty_ns: u64,
    /// Probes taken.
    pub probes: u32,
}

impl ClockOffset {
    /// The offset of a process sharing the coordinator's clock.
    pub const SAME_CLOCK: ClockOffset = ClockOffset {
        offset_ns: 0,
        uncertainty_ns: 0,
        probes: 0,
    };

    /// The estimate from the probe with the smallest round trip, if any.
    pub fn best_of(probes: &[Probe]) -> Option<ClockOffset> {
        let best = probes.iter().min_by_key(|p| p.rtt_ns())?;
        Some(ClockOffset {
            offset_ns: best.offset_ns(),
            uncertainty_ns: best.rtt_ns() / 2,
            probes: u32::try_from(probes.len()).unwrap_or(u32::MAX),
        })
    }

    /// Converts a coordinator instant to the remote clock.
    pub fn to_remote(&self, local_ns: u64) -> u64 {
        u64::try_from(i128::from(local_ns) + i128::from(self.offset_ns)).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn best_round_trip_wins() {
        // Remote clock is 1_000_000 ns ahead. The first probe had a slow
        // return leg, the second symmetric legs.
        let probes = [
            Probe {
                t0: 100,
                remote: 1_000_150,
                t1: 500,
            },
            Probe {
                t0: 1000,
                remote: 1_001_020,
                t1: 1040,
            },
        ];
        assert_eq!(probes[0].offset_ns(), 999_850);
        let best = ClockOffset::best_of(&probes).unwrap();
        assert_eq!(best.offset_ns, 1_000_000);
        assert_eq!(best.uncertainty_ns, 20);
        assert_eq!(best.probes, 2);
        assert_eq!(best.to_remote(5), 1_000_005);
        assert_eq!(ClockOffset::best_of(&[]), None);
    }

    #[test]
    fn negative_offsets() {
        let p = Probe {
            t0: 5_000,
            remote: 1_000,
            t1: 5_010,
        };
        assert_eq!(p.offset_ns(), -4_005);
        let o = ClockOffset::best_of(&[p]).unwrap();
        assert_eq!(o.to_remote(5_005), 1_000);
        assert_eq!(o.to_remote(0), 0);
    }
}
