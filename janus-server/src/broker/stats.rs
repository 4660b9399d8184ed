//! Counters of the backplane (relaxed atomics, read without locking) and the
//! status snapshot served by `/status`.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

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

/// The backplane as `/status` and `janus-admin status` show it.
#[derive(Debug, Clone, Serialize)]
pub struct BrokerStatus {
    /// The Redis URL, password redacted.
    pub url: String,
    /// This node's id.
    pub node_id: String,
    /// Whether the link is up, resubscribed and caught up.
    pub connected: bool,
    /// Times the link was lost.
    pub disconnects: u64,
    /// The last connection or link error, if any since start.
    pub last_error: Option<String>,
    /// Topics this node is subscribed to in Redis (has local subscribers of).
    pub topics: u64,
    /// Messages received from Redis.
    pub messages_in: u64,
    /// Publishes sent through Redis.
    pub messages_out: u64,
    /// Publishes refused as unavailable.
    pub publish_failures: u64,
    /// Messages recovered from topic streams.
    pub recovered: u64,
    /// Gaps reported.
    pub gaps: u64,
    /// Median publish round trip in microseconds (bucket upper bound).
    pub publish_rtt_p50_us: Option<u64>,
    /// 99th percentile publish round trip in microseconds (bucket upper bound).
    pub publish_rtt_p99_us: Option<u64>,
}
