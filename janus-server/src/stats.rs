//! Server-wide counters, updated with relaxed atomics on the hot path and
//! read by snapshots (logs, the admin API, tests) without locking anything.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use janus_core::ErrorCode;

use crate::metrics::LatencyHistogram;
use crate::outbound::Tally;

/// A housekeeping sweep's count of the sessions waiting for a resume.
#[derive(Debug, Default, Clone, Copy)]
pub struct DetachedSweep {
    /// Sessions the sweep found waiting.
    pub waiting: u64,
    /// [`Stats::sessions_detached`] when the sweep began.
    pub detached_before: u64,
}

/// Monotonic counters and gauges of one server.
#[derive(Debug, Default)]
pub struct Stats {
    /// Client connections open now.
    pub connections: AtomicU64,
    /// Highest value `connections` has had.
    pub connections_peak: AtomicU64,
    /// Client connections accepted since start.
    pub connections_total: AtomicU64,
    /// Of those, WebSocket connections (X2) that completed their handshake.
    pub websocket_total: AtomicU64,
    /// Client connections refused (every reason but `max-topics`).
    pub connections_refused: AtomicU64,
    /// Refusals by reason (indexed like [`Refusal::ALL`]).
    pub refusals: [AtomicU64; Refusal::ALL.len()],
    /// Publishes accepted.
    pub messages_published: AtomicU64,
    /// Deliveries handed to subscriber queues.
    pub deliveries_enqueued: AtomicU64,
    /// Deliveries completely written to sockets.
    pub deliveries_sent: AtomicU64,
    /// Deliveries dropped by the drop-oldest policy or lost with a cut slow consumer.
    pub deliveries_dropped: AtomicU64,
    /// Bytes written to clients.
    pub bytes_out: AtomicU64,
    /// Slow consumers disconnected.
    pub slow_consumers: AtomicU64,
    /// Sessions that lost their connection and wait for a resume.
    pub sessions_detached: AtomicU64,
    /// Detached sessions freed because no resume came within the session TTL.
    pub sessions_expired: AtomicU64,
    /// Detached sessions ended because their client resumed on another
    /// node of the cluster.
    pub sessions_resumed_elsewhere: AtomicU64,
    /// Sessions that lost their connection and were not kept for a resume
    /// because `max-detached-sessions` were already waiting.
    pub sessions_not_kept: AtomicU64,
    /// What the last housekeeping sweep found, as one pair read and written
    /// together: with the detaches since that sweep began, it bounds how
    /// many sessions wait for a resume now.
    pub detached_sweep: Mutex<DetachedSweep>,
    /// Sessions waiting for a resume without a connection, as of the last
    /// housekeeping sweep (a gauge).
    pub sessions_detached_now: AtomicU64,
    /// Messages replayed by resumes: from topic history, or a detached
    /// session's queue.
    pub messages_replayed: AtomicU64,
    /// Resumes asked for (X1), either form.
    pub resumes: AtomicU64,
    /// Resumes answered `recovered: true`.
    pub resumes_recovered: AtomicU64,
    /// Resumes answered `recovered: false` (history or buffer did not reach back).
    pub resumes_not_recovered: AtomicU64,
    /// Token resumes of a session that did not exist (answered `unknown_session`).
    pub resumes_unknown: AtomicU64,
    /// Error frames sent, by code (indexed like [`ErrorCode::ALL`]).
    pub errors: [AtomicU64; ErrorCode::ALL.len()],
    /// Queue-to-socket latency of written deliveries.
    pub delivery_latency: LatencyHistogram,
}

/// Why the server turned a client's request down because of a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A connection from an address that has `max-connections-per-ip` open.
    PerIp,
    /// A connection past the connection capacity (`max-connections`, or
    /// what the open-file limit allows).
    MaxConnections,
    /// A connection the process had no file descriptor for.
    Fds,
    /// A subscription that would have made one topic more than `max-topics`.
    MaxTopics,
}

impl Refusal {
    /// Every reason, in the order of [`Stats::refusals`].
    pub const ALL: [Refusal; 4] = [
        Refusal::PerIp,
        Refusal::MaxConnections,
        Refusal::Fds,
        Refusal::MaxTopics,
    ];

    /// Its name in `/status` and in the metrics' `reason` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::PerIp => "per_ip",
            Refusal::MaxConnections => "max_connections",
            Refusal::Fds => "fds",
            Refusal::MaxTopics => "max_topics",
        }
    }
}

impl Stats {
    /// Counts a refusal (and, for a connection, a refused connection).
    pub fn refused(&self, why: Refusal) {
        self.refusals[why as usize].fetch_add(1, Ordering::Relaxed);
        if why != Refusal::MaxTopics {
            self.connections_refused.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Refusals for `why` so far.
    pub fn refusals(&self, why: Refusal) -> u64 {
        self.refusals[why as usize].load(Ordering::Relaxed)
    }

    /// Counts a new connection and updates the peak.
    pub fn connection_opened(&self) {
        let now = self.connections.fetch_add(1, Ordering::Relaxed) + 1;
        self.connections_total.fetch_add(1, Ordering::Relaxed);
        self.connections_peak.fetch_max(now, Ordering::Relaxed);
    }

    /// Counts a closed connection.
    pub fn connection_closed(&self) {
        self.connections.fetch_sub(1, Ordering::Relaxed);
    }

    /// Counts an error frame sent.
    pub fn error_sent(&self, code: ErrorCode) {
        if let Some(i) = ErrorCode::ALL.iter().position(|c| *c == code) {
            self.errors[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Error frames sent with `code` so far.
    pub fn errors_sent(&self, code: ErrorCode) -> u64 {
        ErrorCode::ALL
            .iter()
            .position(|c| *c == code)
            .map_or(0, |i| self.errors[i].load(Ordering::Relaxed))
    }

    /// Counts one fan-out: `published` publishes (0 for a unicast), `queued`
    /// deliveries queued and `dropped` discarded by the slow-consumer policy.
    pub fn count_fanout(&self, published: u64, queued: u64, dropped: u64) {
        if published > 0 {
            self.messages_published
                .fetch_add(published, Ordering::Relaxed);
        }
        if queued > 0 {
            self.deliveries_enqueued
                .fetch_add(queued, Ordering::Relaxed);
        }
        if dropped > 0 {
            self.deliveries_dropped
                .fetch_add(dropped, Ordering::Relaxed);
        }
    }

    /// Adds what a writer wrote (bytes, deliveries and their latencies) and
    /// resets `tally` for the next batch.
    pub fn add_written(&self, tally: &mut Tally) {
        if tally.bytes > 0 {
            self.bytes_out.fetch_add(tally.bytes, Ordering::Relaxed);
        }
        if tally.deliveries > 0 {
            self.deliveries_sent
                .fetch_add(tally.deliveries, Ordering::Relaxed);
        }
        let mut batch = self.delivery_latency.batch();
        for micros in tally.latencies.drain(..) {
            batch.record(Duration::from_micros(u64::from(micros)));
        }
        tally.bytes = 0;
        tally.deliveries = 0;
    }

    /// An upper bound on the sessions waiting for a resume now: those the
    /// last sweep found, plus those detached since it began (resumes and
    /// expiries since then are not subtracted, and a session detached while
    /// the sweep ran may count twice: the bound errs high, never low).
    pub fn detached_at_most(&self) -> u64 {
        let sweep = *self
            .detached_sweep
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let total = Self::get(&self.sessions_detached);
        sweep.waiting + total.saturating_sub(sweep.detached_before)
    }

    /// Records a sweep's count (see [`Stats::detached_at_most`]).
    pub fn swept_detached(&self, sweep: DetachedSweep) {
        self.sessions_detached_now
            .store(sweep.waiting, Ordering::Relaxed);
        *self
            .detached_sweep
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = sweep;
    }

    /// Reads one counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}
