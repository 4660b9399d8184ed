//! What a worker counts: each client's sequence of messages, and each
//! message's latencies.
//!
//! [`SeqTracker`] follows one client. Messages carry their sequence number as
//! `message_id`, and protocol P6 promises each subscriber every message of a
//! topic in publish order, once; so a client expects `0, 1, 2, …` and any
//! departure is a gap (missing), a late arrival (reordered) or a repeat
//! (duplicated). It costs a few words per client, and a list of gaps only for
//! a client that already misbehaved.
//!
//! [`Ledger`] turns receive instants into latencies. The send instant of a
//! message reaches the worker after the publisher wrote it, usually after the
//! first deliveries arrived, so a delivery whose send instant is still unknown
//! waits in a small per-message list until it is.

use std::collections::HashMap;

use janus_histo::Recorder;
use serde::{Deserialize, Serialize};

/// How a delivery fits the sequence a client expected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// The next message, as expected.
    InOrder,
    /// A new message, but some before it have not arrived (yet).
    AfterGap,
    /// A message that had been skipped and arrived late.
    Late,
    /// A message already received.
    Duplicate,
}

impl Seen {
    /// Whether this delivery is the first of its message at this client.
    pub fn is_new(self) -> bool {
        !matches!(self, Seen::Duplicate)
    }
}

/// One client's view of the message sequence.
#[derive(Debug, Default, Clone)]
pub struct SeqTracker {
    next: u32,
    got: u32,
    duplicates: u32,
    late: u32,
    /// Skipped sequence numbers as half-open ranges (empty, unallocated,
    /// unless a gap was seen).
    gaps: Vec<(u32, u32)>,
}

impl SeqTracker {
    /// Accounts for the delivery of message `seq`.
    pub fn observe(&mut self, seq: u32) -> Seen {
        if seq == self.next {
            self.next += 1;
            self.got += 1;
            return Seen::InOrder;
        }
        if seq > self.next {
            self.gaps.push((self.next, seq));
            self.next = seq + 1;
            self.got += 1;
            return Seen::AfterGap;
        }
        if let Some(i) = self.gaps.iter().position(|&(a, b)| a <= seq && seq < b) {
            let (a, b) = self.gaps.swap_remove(i);
            if a < seq {
                self.gaps.push((a, seq));
            }
            if seq + 1 < b {
                self.gaps.push((seq + 1, b));
            }
            self.got += 1;
            self.late += 1;
            return Seen::Late;
        }
        self.duplicates += 1;
        Seen::Duplicate
    }

    /// Distinct messages received.
    pub fn received(&self) -> u32 {
        self.got
    }

    /// Deliveries of a message already received.
    pub fn duplicates(&self) -> u32 {
        self.duplicates
    }

    /// Messages that arrived after a later one.
    pub fn reordered(&self) -> u32 {
        self.late
    }

    /// Whether some message was skipped and is still missing: messages
    /// after it arrived, it did not.
    pub fn has_gaps(&self) -> bool {
        !self.gaps.is_empty()
    }

    /// Messages out of `expected` that never arrived.
    pub fn missing(&self, expected: u32) -> u32 {
        expected.saturating_sub(self.got)
    }
}

/// Latency extremes of one message (one target's copy) at one worker.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageStat {
    /// Distinct deliveries received.
    pub count: u64,
    /// Smallest latency in nanoseconds (publish → first subscriber).
    pub first_ns: i64,
    /// Largest latency in nanoseconds (publish → last subscriber).
    pub last_ns: i64,
}

impl MessageStat {
    /// Adds one latency.
    pub fn add(&mut self, latency_ns: i64) {
        if self.count == 0 {
            self.first_ns = latency_ns;
            self.last_ns = latency_ns;
        } else {
            self.first_ns = self.first_ns.min(latency_ns);
            self.last_ns = self.last_ns.max(latency_ns);
        }
        self.count += 1;
    }

    /// Folds another worker's figures for the same message into these.
    pub fn merge(&mut self, other: &MessageStat) {
        if other.count == 0 {
            return;
        }
        if self.count == 0 {
            *self = *other;
            return;
        }
        self.count += other.count;
        self.first_ns = self.first_ns.min(other.first_ns);
        self.last_ns = self.last_ns.max(other.last_ns);
    }
}

/// Latencies of every delivery a worker received, on the worker's clock.
#[derive(Debug)]
pub struct Ledger {
    messages: u32,
    /// Send instant of each (target, message), on this worker's clock.
    sent: Vec<Option<u64>>,
    /// Receive instants of deliveries whose send instant is not known yet.
    waiting: HashMap<usize, Vec<u64>>,
    stats: Vec<MessageStat>,
    histogram: Recorder,
    /// Deliveries that arrived before their recorded send instant, which only
    /// an error in a clock offset can cause; recorded as zero.
    negative: u64,
}

impl Ledger {
    /// A ledger for `messages` messages published to each of `targets` targets.
    pub fn new(targets: usize, messages: u32) -> Self {
        let n = targets * messages as usize;
        Self {
            messages,
            sent: vec![None; n],
            waiting: HashMap::new(),
            stats: vec![MessageStat::default(); n],
            histogram: Recorder::new(),
            negative: 0,
        }
    }

    fn index(&self, target: usize, seq: u32) -> usize {
        target * self.messages as usize + seq as usize
    }

    /// A client of `target` received message `seq` at `recv_ns`.
    pub fn received(&mut self, target: usize, seq: u32, recv_ns: u64) {
        let i = self.index(target, seq);
        match self.sent.get(i) {
            Some(Some(sent)) => self.record(i, recv_ns as i64 - *sent as i64),
            Some(None) => self.waiting.entry(i).or_default().push(recv_ns),
            None => {}
        }
    }

    /// Message `seq` was sent to `target` at `sent_ns` (this worker's clock).
    pub fn sent(&mut self, target: usize, seq: u32, sent_ns: u64) {
        let i = self.index(target, seq);
        let Some(slot) = self.sent.get_mut(i) else {
            return;
        };
        *slot = Some(sent_ns);
        for recv in self.waiting.remove(&i).unwrap_or_default() {
            self.record(i, recv as i64 - sent_ns as i64);
        }
    }

    fn record(&mut self, i: usize, latency_ns: i64) {
        if latency_ns < 0 {
            self.negative += 1;
        }
        self.histogram
            .record_micros(u64::try_from(latency_ns).unwrap_or(0) / 1000);
        self.stats[i].add(latency_ns);
    }

    /// Deliveries still waiting for a send instant.
    pub fn unmatched(&self) -> u64 {
        self.waiting.values().map(|v| v.len() as u64).sum()
    }

    /// Deliveries recorded as zero because they preceded their send instant.
    pub fn negative(&self) -> u64 {
        self.negative
    }

    /// The latency histogram (microseconds).
    pub fn histogram(&self) -> &Recorder {
        &self.histogram
    }

    /// Per-message figures, indexed `target * messages + seq`.
    pub fn stats(&self) -> &[MessageStat] {
        &self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(seqs: &[u32]) -> (SeqTracker, Vec<Seen>) {
        let mut t = SeqTracker::default();
        let seen = seqs.iter().map(|&s| t.observe(s)).collect();
        (t, seen)
    }

    #[test]
    fn sequences() {
        use Seen::*;
        let (t, seen) = run(&[0, 1, 2]);
        assert_eq!(seen, [InOrder, InOrder, InOrder]);
        assert_eq!(
            (t.received(), t.missing(3), t.duplicates(), t.reordered()),
            (3, 0, 0, 0)
        );

        let (t, seen) = run(&[0, 2, 1, 3]);
        assert_eq!(seen, [InOrder, AfterGap, Late, InOrder]);
        assert_eq!((t.received(), t.missing(4), t.reordered()), (4, 0, 1));

        let (t, seen) = run(&[0, 1, 1, 0]);
        assert_eq!(seen, [InOrder, InOrder, Duplicate, Duplicate]);
        assert_eq!((t.received(), t.missing(3), t.duplicates()), (2, 1, 2));

        let (t, seen) = run(&[0, 5, 3, 3, 1, 2, 4]);
        assert_eq!(seen, [InOrder, AfterGap, Late, Duplicate, Late, Late, Late]);
        assert_eq!(
            (t.received(), t.missing(6), t.duplicates(), t.reordered()),
            (6, 0, 1, 4)
        );

        let (t, _) = run(&[2]);
        assert_eq!(t.missing(3), 2);
        assert!(t.has_gaps());
        assert!(!run(&[0, 1]).0.has_gaps());
    }

    #[test]
    fn ledger_matches_early_and_late_send_instants() {
        let mut l = Ledger::new(2, 3);
        l.sent(0, 0, 1_000_000);
        l.received(0, 0, 3_000_000);
        // The delivery beats the send notice.
        l.received(1, 2, 9_000_000);
        assert_eq!(l.unmatched(), 1);
        l.sent(1, 2, 4_000_000);
        assert_eq!(l.unmatched(), 0);
        l.received(1, 2, 5_000_000);
        // Out-of-range messages are ignored.
        l.received(5, 0, 1);
        l.sent(0, 9, 1);
        assert_eq!(l.histogram().count(), 3);
        assert_eq!(l.histogram().min_micros(), 1000);
        assert_eq!(
            l.stats()[0],
            MessageStat {
                count: 1,
                first_ns: 2_000_000,
                last_ns: 2_000_000
            }
        );
        assert_eq!(
            l.stats()[5],
            MessageStat {
                count: 2,
                first_ns: 1_000_000,
                last_ns: 5_000_000
            }
        );
        // A receive before the send (a bad clock offset) is counted and clamped.
        l.sent(0, 1, 10);
        l.received(0, 1, 5);
        assert_eq!(l.negative(), 1);
        assert_eq!(l.histogram().count_at_micros(0), 1);
    }

    #[test]
    fn message_stats_merge() {
        let mut a = MessageStat::default();
        a.merge(&MessageStat::default());
        assert_eq!(a.count, 0);
        let mut b = MessageStat::default();
        b.add(5);
        b.add(-2);
        a.merge(&b);
        let mut c = MessageStat::default();
        c.add(9);
        a.merge(&c);
        assert_eq!(
            a,
            MessageStat {
                count: 3,
                first_ns: -2,
                last_ns: 9
            }
        );
    }
}
