//! Counters of the backplane (relaxed atomics, read without locking) and the
//! status snapshot served by `/status`.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::metrics::LatencyHistogram;

/// Counters of one node's backplane, for `/status` and Prometheus.
#[derive(Debug, Default)]
pub struct BrokerStats {
    /// Times the link to Redis was lost (and then re-established or retried).
    pub disconnects: AtomicU64,
    /// Failed connection attempts.
    pub connect_failures: AtomicU64,
    /// Publishes Redis accepted.
    pub messages_out: AtomicU64,
    /// Publishes refused as unavailable.
    pub publish_failures: AtomicU64,
    /// Messages received on the subscription connection.
    pub messages_in: AtomicU64,
    /// Messages handed to the handler (live and recovered).
    pub delivered: AtomicU64,
    /// Of those, messages read back from topic streams (after a reconnect
    /// or to fill a hole).
    pub recovered: AtomicU64,
    /// Messages dropped as already delivered.
    pub duplicates: AtomicU64,
    /// Gaps reported (history no longer reaching back, or epoch changes).
    pub gaps: AtomicU64,
    /// Payloads from Redis that could not be decoded (and were skipped).
    pub decode_errors: AtomicU64,
    /// Node commands received for this node's sessions.
    pub commands_in: AtomicU64,
    /// Round trip of each accepted publish (script call to reply).
    pub publish_rtt: LatencyHistogram,
}

impl BrokerStats {
    /// Adds one to `counter`.
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Reads `counter`.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}
