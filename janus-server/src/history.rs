//! A topic's stream (protocol X1): its epoch, the offset of its latest
//! message, and its recent history, kept for clients that resume.
//!
//! Every publish to a topic takes the next offset (1, 2, 3, …) under the
//! topic's lock, so offsets have no gaps and follow the one order every
//! subscriber sees. The history holds the last `history-size` messages, none
//! older than `history-ttl`, as the encoded frame an offset client receives
//! (shared with the live fan-out, so keeping it costs no copy), and all
//! topics' histories together stay under `history-bytes`: past it, a topic
//! that grows its history gives up its own oldest messages first.
//!
//! A stream exists while its topic has subscribers or history. A topic that
//! lost both is forgotten, and a later publish starts a new stream: a new
//! epoch, offsets from 1 again. An offset is only ever compared with the
//! epoch it came from, so a client can never be told it missed nothing when
//! the history it counted on is gone.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use janus_core::topic::TopicState;

/// How much history is kept; one per server.
#[derive(Debug)]
pub struct HistoryLimits {
    /// Messages per topic; zero keeps none.
    pub size: usize,
    /// Age past which a message is dropped, in seconds.
    pub ttl_secs: u32,
    /// Bytes over all topics.
    pub max_bytes: usize,
    /// Bytes held now, over all topics.
    pub bytes: AtomicUsize,
    /// Messages held now, over all topics.
    pub messages: AtomicUsize,
}

impl HistoryLimits {
    /// Limits of `size` messages per topic, `ttl` of age, `max_bytes` in all.
    pub fn new(size: usize, ttl: Duration, max_bytes: usize) -> Self {
        Self {
            size,
            ttl_secs: u32::try_from(ttl.as_secs()).unwrap_or(u32::MAX),
            max_bytes,
            bytes: AtomicUsize::new(0),
            messages: AtomicUsize::new(0),
        }
    }

    /// Whether history is kept at all.
    pub fn enabled(&self) -> bool {
        self.size > 0 && self.ttl_secs > 0
    }
}

/// One message of a history.
#[derive(Debug)]
struct Entry {
    /// When it was published ([`crate::metrics::secs_now`]).
    secs: u32,
    /// The delivery as an offset client receives it.
    frame: Bytes,
}

/// One topic's stream.
#[derive(Debug, Default)]
pub struct Stream {
    /// Names this stream; made on first use.
    epoch: Option<Box<str>>,
    /// Offset of the latest message; 0 before the first.
    last: u64,
    /// The latest messages: offsets `last - len + 1 ..= last`.
    entries: VecDeque<Entry>,
    /// Bytes of `entries`.
    bytes: usize,
    /// In a cluster: this node's interest in the topic's broker channel,
    /// while it has local subscribers or pins.
    pub(crate) interest: Option<crate::cluster::Interest>,
    /// In a cluster: resumes preparing on this node that keep the topic
    /// followed (and its stream here) until they have subscribed.
    pub(crate) pins: u32,
}

impl TopicState for Stream {
    fn keep(&self) -> bool {
        !self.entries.is_empty() || self.pins > 0
    }

    fn vacated(&mut self, topic: &str) {
        if self.pins == 0 {
            self.unfollow(topic);
        }
    }
}

impl Stream {
    /// In a cluster, the node's interest in the topic ends (no local
    /// subscriber, no pin): the history kept here stops at this point, and
    /// nothing later would extend it, so it is dropped rather than offered
    /// to a resume that would miss what other nodes publish next.
    pub(crate) fn unfollow(&mut self, topic: &str) {
        let Some(interest) = self.interest.take() else {
            return;
        };
        if let Some(shared) = interest.end(topic) {
            self.clear(&shared.history);
        }
    }

    fn clear(&mut self, limits: &HistoryLimits) {
        while !self.entries.is_empty() {
            self.pop(limits);
        }
    }

    /// Whether this node follows the topic in its cluster and the broker
    /// has confirmed where it stands: only then does the stream here run on
    /// without a hole from the cluster's.
    pub(crate) fn followed(&self) -> bool {
        self.interest.as_ref().is_some_and(|i| i.confirmed())
    }

    /// The stream's epoch (a fresh random name the first time it is asked for).
    pub fn epoch(&mut self) -> &str {
        self.epoch.get_or_insert_with(new_epoch)
    }

    /// The stream's epoch, if it has been named yet (for operators, who
    /// must not name it by looking).
    pub fn epoch_name(&self) -> Option<&str> {
        self.epoch.as_deref()
    }

    /// The offset of the latest message (0: none yet).
    pub fn last(&self) -> u64 {
        self.last
    }

    /// In a cluster: the message at `offset` of stream `epoch` comes from
    /// the broker, which numbers every topic for the whole cluster. The
    /// stream takes that epoch and offset; history that would not run on
    /// without a hole up to it (another epoch, or offsets this node did not
    /// see) is dropped, so a resume never counts on it.
    pub fn follow(&mut self, epoch: &str, offset: u64, limits: &HistoryLimits) {
        let same_epoch = self.epoch.as_deref() == Some(epoch);
        if !same_epoch || offset != self.last + 1 {
            self.clear(limits);
        }
        if !same_epoch {
            self.epoch = Some(epoch.into());
        }
        self.last = offset;
    }

    /// In a cluster, when this node's interest in the topic begins: the
    /// topic stands at `offset` of `epoch` (`None`: never published).
    pub fn start_at(&mut self, epoch: Option<&str>, offset: u64, limits: &HistoryLimits) {
        if let Some(epoch) = epoch {
            if self.epoch.as_deref() != Some(epoch) || self.last != offset {
                self.follow(epoch, offset, limits);
            }
        }
    }

    /// Takes the next offset, for a message being published.
    pub fn take_offset(&mut self) -> u64 {
        self.epoch();
        self.last += 1;
        self.last
    }

    /// Keeps the message at `offset` (just taken with [`Stream::take_offset`]),
    /// then trims to the limits.
    pub fn append(&mut self, offset: u64, frame: Bytes, now: u32, limits: &HistoryLimits) {
        debug_assert_eq!(offset, self.last);
        if !limits.enabled() {
            return;
        }
        self.bytes += frame.len();
        limits.bytes.fetch_add(frame.len(), Ordering::Relaxed);
        limits.messages.fetch_add(1, Ordering::Relaxed);
        self.entries.push_back(Entry { secs: now, frame });
        while self.entries.len() > limits.size
            || (self.entries.len() > 1 && limits.bytes.load(Ordering::Relaxed) > limits.max_bytes)
        {
            self.pop(limits);
        }
        self.expire(now, limits);
    }

    /// Drops messages older than the history TTL.
    pub fn expire(&mut self, now: u32, limits: &HistoryLimits) {
        while self
            .entries
            .front()
            .is_some_and(|e| now.saturating_sub(e.secs) >= limits.ttl_secs)
        {
            self.pop(limits);
        }
    }

    fn pop(&mut self, limits: &HistoryLimits) {
        if let Some(entry) = self.entries.pop_front() {
            self.bytes -= entry.frame.len();
            limits.bytes.fetch_sub(entry.frame.len(), Ordering::Relaxed);
            limits.messages.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// The offset of the oldest message kept (the latest + 1 when none is).
    pub fn first(&self) -> u64 {
        self.last + 1 - self.entries.len() as u64
    }

    /// Every message after `offset` of stream `epoch`, oldest first, if the
    /// history still holds all of them (none expired at `now`); `None` when
    /// it does not (or the epoch is another stream's, or the offset is ahead
    /// of the stream): then nothing can be recovered exactly.
    pub fn since(
        &mut self,
        epoch: &str,
        offset: u64,
        now: u32,
        limits: &HistoryLimits,
    ) -> Option<impl Iterator<Item = &Bytes>> {
        self.expire(now, limits);
        // An unnamed stream is not the one the client counted from.
        if self.epoch.as_deref() != Some(epoch) || offset > self.last {
            return None;
        }
        if offset + 1 < self.first() {
            return None;
        }
        let skip = (offset + 1 - self.first()) as usize;
        Some(self.entries.iter().skip(skip).map(|e| &e.frame))
    }

    /// In a cluster: completes this node's history back to `offset` (the
    /// position a resuming client holds) from messages read from the
    /// broker's. `older` must be the messages of stream `epoch` right
    /// before the oldest one kept here (or the latest, if none is),
    /// oldest first, each with when it was published and its frame; any
    /// that are newer are left to the live stream. Returns whether the
    /// history now reaches back to `offset`: not when the epoch is another,
    /// a message is missing, or the history would outgrow its size.
    pub fn backfill(
        &mut self,
        epoch: &str,
        offset: u64,
        older: impl IntoIterator<Item = (u64, u32, Bytes)>,
        limits: &HistoryLimits,
    ) -> bool {
        if self.epoch.as_deref() != Some(epoch) || !limits.enabled() || offset > self.last {
            return false;
        }
        let first = self.first();
        if offset + 1 >= first {
            return offset <= self.last;
        }
        let wanted = first - offset - 1;
        if self.entries.len() as u64 + wanted > limits.size as u64 {
            return false;
        }
        let missing: Vec<(u64, u32, Bytes)> = older
            .into_iter()
            .filter(|(o, _, _)| *o > offset && *o < first)
            .collect();
        let exact = missing.len() as u64 == wanted
            && missing
                .iter()
                .enumerate()
                .all(|(i, (o, _, _))| *o == offset + 1 + i as u64);
        if !exact {
            return false;
        }
        for (_, secs, frame) in missing.into_iter().rev() {
            self.bytes += frame.len();
            limits.bytes.fetch_add(frame.len(), Ordering::Relaxed);
            limits.messages.fetch_add(1, Ordering::Relaxed);
            self.entries.push_front(Entry { secs, frame });
        }
        true
    }

    /// Up to `limit` messages after `offset`, with their offsets, for operators.
    pub fn page(&self, offset: u64, limit: usize) -> Vec<(u64, Bytes)> {
        let first = self.first();
        let skip = offset.saturating_add(1).saturating_sub(first) as usize;
        self.entries
            .iter()
            .enumerate()
            .skip(skip)
            .take(limit)
            .map(|(i, e)| (first + i as u64, e.frame.clone()))
            .collect()
    }

    /// Messages and bytes held.
    pub fn held(&self) -> (usize, usize) {
        (self.entries.len(), self.bytes)
    }
}

/// A fresh epoch: 64 random bits in hex.
fn new_epoch() -> Box<str> {
    let mut bits = [0u8; 8];
    if getrandom::fill(&mut bits).is_err() {
        // The OS source failed: time and a counter still make a new name.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        bits = now.to_le_bytes();
    }
    format!("{:016x}", u64::from_le_bytes(bits)).into_boxed_str()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(offset: u64) -> Bytes {
        Bytes::from(format!("m{offset}"))
    }

    fn keep(stream: &mut Stream, n: u64, now: u32, limits: &HistoryLimits) {
        for _ in 0..n {
            let offset = stream.take_offset();
            stream.append(offset, frame(offset), now, limits);
        }
    }

    fn recovered(
        stream: &mut Stream,
        offset: u64,
        now: u32,
        limits: &HistoryLimits,
    ) -> Option<Vec<Bytes>> {
        let epoch = stream.epoch().to_owned();
        stream
            .since(&epoch, offset, now, limits)
            .map(|it| it.cloned().collect())
    }

    #[test]
    fn offsets_have_no_gaps_and_history_recovers_exactly() {
        let limits = HistoryLimits::new(3, Duration::from_secs(60), 1 << 20);
        let mut s = Stream::default();
        keep(&mut s, 5, 0, &limits);
        assert_eq!((s.last(), s.first()), (5, 3));
        assert_eq!(recovered(&mut s, 5, 0, &limits), Some(vec![]));
        assert_eq!(
            recovered(&mut s, 3, 0, &limits),
            Some(vec![frame(4), frame(5)])
        );
        assert_eq!(recovered(&mut s, 2, 0, &limits).map(|v| v.len()), Some(3));
        assert_eq!(recovered(&mut s, 1, 0, &limits), None, "offset 2 is gone");
        assert_eq!(
            recovered(&mut s, 6, 0, &limits),
            None,
            "ahead of the stream"
        );
        let epoch = s.epoch().to_owned();
        assert!(
            s.since(&format!("{epoch}x"), 5, 0, &limits).is_none(),
            "another stream"
        );
        assert_eq!(limits.messages.load(Ordering::Relaxed), 3);
        assert_eq!(
            s.page(3, 10).iter().map(|(o, _)| *o).collect::<Vec<_>>(),
            [4, 5]
        );
    }

    #[test]
    fn a_backfill_puts_exactly_the_missing_messages_in_front() {
        let limits = HistoryLimits::new(10, Duration::from_secs(60), 1 << 20);
        let mut s = Stream::default();
        // The node began to follow at offset 4 of the cluster's stream,
        // then saw 5 and 6 live.
        s.start_at(Some("e"), 4, &limits);
        for o in 5..=6 {
            s.follow("e", o, &limits);
            s.append(o, frame(o), 0, &limits);
        }
        let older = |range: std::ops::RangeInclusive<u64>| -> Vec<(u64, u32, Bytes)> {
            range.map(|o| (o, 0, frame(o))).collect()
        };
        assert!(!s.backfill("x", 1, older(2..=6), &limits), "another epoch");
        assert!(
            !s.backfill("e", 1, older(3..=4), &limits),
            "offset 2 is missing"
        );
        assert_eq!(s.first(), 5, "a failed backfill changes nothing");
        // Messages the live stream brings (5, 6) are left to it.
        assert!(s.backfill("e", 1, older(2..=6), &limits));
        assert_eq!(
            s.since("e", 1, 0, &limits)
                .map(|f| f.cloned().collect::<Vec<_>>()),
            Some((2..=6).map(frame).collect())
        );
        assert_eq!(limits.messages.load(Ordering::Relaxed), 5);
        assert!(s.backfill("e", 3, Vec::new(), &limits), "reached already");
        assert!(
            !s.backfill("e", 7, Vec::new(), &limits),
            "ahead of the stream"
        );

        let small = HistoryLimits::new(3, Duration::from_secs(60), 1 << 20);
        let mut t = Stream::default();
        t.start_at(Some("e"), 10, &small);
        assert!(
            !t.backfill("e", 6, older(7..=10), &small),
            "more than the history holds"
        );
        assert!(t.backfill("e", 7, older(8..=10), &small));
    }

    #[test]
    fn history_expires_and_respects_the_global_byte_limit() {
        let limits = HistoryLimits::new(100, Duration::from_secs(10), 1 << 20);
        let mut s = Stream::default();
        keep(&mut s, 2, 0, &limits);
        keep(&mut s, 1, 5, &limits);
        assert_eq!(recovered(&mut s, 0, 9, &limits).map(|v| v.len()), Some(3));
        assert_eq!(
            recovered(&mut s, 0, 10, &limits),
            None,
            "the first two expired"
        );
        assert_eq!(recovered(&mut s, 2, 10, &limits), Some(vec![frame(3)]));
        s.expire(20, &limits);
        assert!(!s.keep(), "an expired history lets its topic go");
        assert_eq!(limits.bytes.load(Ordering::Relaxed), 0);

        let tight = HistoryLimits::new(100, Duration::from_secs(10), 5);
        let (mut a, mut b) = (Stream::default(), Stream::default());
        keep(&mut a, 2, 0, &tight);
        keep(&mut b, 3, 0, &tight);
        assert!(
            tight.bytes.load(Ordering::Relaxed) <= 6,
            "one message over at most"
        );
        assert_eq!(b.held().0, 1, "the growing topic gave up its own oldest");
    }
}
