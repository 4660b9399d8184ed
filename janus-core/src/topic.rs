//! Topic validation (protocol P3) and the topic manager: topic → subscribers.
//!
//! The manager is generic over the subscriber handle, so the server can plug
//! in its sessions while tests plug in plain vectors.
//! Topics are created on first subscribe and dropped the moment their last
//! subscriber leaves, so a churning population leaves nothing behind.
//!
//! The manager does not deliver anything itself: [`TopicManager::publish`]
//! lends the caller the topic's subscriber list while the topic is locked,
//! and the caller (the server's fan-out) hands each subscriber the same
//! already-encoded bytes. The topics are split over shards, each behind a
//! short `std::sync::Mutex`; because a publish runs under its topic's shard
//! lock, per-topic order is total: two publishes to one topic reach every
//! subscriber in the same order, and a subscriber whose subscription was
//! registered (and acknowledged, see [`TopicManager::subscribe`]) before a
//! publish began receives it.
//!
//! Operators' listings ([`TopicManager::topics`],
//! [`TopicManager::subscribers`]) must never hold up that fan-out, however
//! many topics there are: they keep only the best `limit` entries in a
//! bounded heap (nothing is copied but what is returned), and they look at
//! no more than [`LISTING_CHUNK`] entries per lock of a shard, releasing it
//! between chunks. A listing is therefore not an atomic snapshot: a topic
//! created, removed or published to while it runs may or may not be counted.

use std::cmp::{Ordering as CmpOrdering, Reverse};
use std::collections::hash_map::{Entry, RandomState};
use std::collections::{BinaryHeap, HashMap};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::api::TopicSort;
use crate::message::{ErrorCode, ProtocolError};

/// Longest topic name in bytes (P3).
pub const MAX_TOPIC_LEN: usize = 256;

/// Checks a topic name: non-empty UTF-8, at most 256 bytes, no control characters.
///
/// # Errors
/// A `bad_topic` [`ProtocolError`] saying what is wrong.
pub fn validate_topic(topic: &str) -> Result<(), ProtocolError> {
    if topic.is_empty() {
        return Err(ProtocolError::new(ErrorCode::BadTopic, "topic is empty"));
    }
    if topic.len() > MAX_TOPIC_LEN {
        return Err(ProtocolError::new(
            ErrorCode::BadTopic,
            format!(
                "topic is {} bytes, the limit is {MAX_TOPIC_LEN}",
                topic.len()
            ),
        ));
    }
    if topic.chars().any(char::is_control) {
        return Err(ProtocolError::new(
            ErrorCode::BadTopic,
            "topic contains a control character",
        ));
    }
    Ok(())
}

/// Identifies one subscriber (a session) across topics.
pub type SubscriberId = u64;

/// What the user of a [`TopicManager`] keeps per topic beside its
/// subscribers, under the same lock (the server keeps a topic's offsets and
/// history there). `()` keeps nothing.
pub trait TopicState: Default {
    /// Whether the topic must be kept although it has no subscribers (it
    /// still holds something, e.g. history).
    fn keep(&self) -> bool {
        false
    }

    /// The topic's last subscriber just left (called under the topic's lock,
    /// before the topic may be dropped). The server ends its interest in the
    /// topic's broker channel here.
    fn vacated(&mut self, topic: &str) {
        let _ = topic;
    }
}

impl TopicState for () {}

/// One topic's subscribers, kept in a vector for a tight fan-out loop.
struct Topic<S, T> {
    subscribers: Vec<(SubscriberId, S)>,
    /// Position of each subscriber in `subscribers`.
    index: HashMap<SubscriberId, usize>,
    published: u64,
    state: T,
}

impl<S, T: TopicState> Topic<S, T> {
    fn new() -> Self {
        Self {
            subscribers: Vec::new(),
            index: HashMap::new(),
            published: 0,
            state: T::default(),
        }
    }

    /// Whether nothing keeps the topic: no subscriber, no state worth keeping.
    fn idle(&self) -> bool {
        self.subscribers.is_empty() && !self.state.keep()
    }

    fn remove(&mut self, id: SubscriberId) -> bool {
        let Some(pos) = self.index.remove(&id) else {
            return false;
        };
        self.subscribers.swap_remove(pos);
        if let Some((moved, _)) = self.subscribers.get(pos) {
            self.index.insert(*moved, pos);
        }
        true
    }
}

/// A snapshot of one topic, for operators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    /// Topic name.
    pub name: String,
    /// Current subscriber count.
    pub subscribers: usize,
    /// Messages published to the topic since it was created.
    pub published: u64,
}

/// Entries a listing examines per lock of a shard (or of one topic's
/// subscriber list). At about 10 ns an entry, a publish waiting for that
/// lock waits some 10 µs, whatever the number of topics. (Unit tests use
/// small chunks so that a few thousand topics already span several.)
pub const LISTING_CHUNK: usize = if cfg!(test) { 16 } else { 1024 };

/// Times a shard scan starts over because the shard grew (rehashed, which
/// reorders it) while the scan was between chunks; after that it goes on in
/// the new order and may miss entries, as under any concurrent change.
const LISTING_RESTARTS: usize = 2;

/// Which topics [`TopicManager::topics`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicQuery<'a> {
    /// Only names starting with this.
    pub prefix: &'a str,
    /// The order, and so which `limit` topics are the best.
    pub order: TopicSort,
    /// Name order only: names after this one (the cursor of the previous page).
    pub after: Option<&'a str>,
    /// Most topics returned.
    pub limit: usize,
}

/// The answer of [`TopicManager::topics`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicPage {
    /// Up to `limit` topics, in the requested order.
    pub topics: Vec<TopicInfo>,
    /// Whether more topics matched than were returned.
    pub truncated: bool,
}

/// One topic's summary and a page of its subscribers (see
/// [`TopicManager::subscribers`]).
#[derive(Debug, Clone)]
pub struct SubscriberPage<S> {
    /// The topic.
    pub info: TopicInfo,
    /// Up to `limit` subscriber handles, by ascending key.
    pub subscribers: Vec<S>,
    /// Whether more subscribers matched than were returned.
    pub truncated: bool,
}

/// A key-ordered entry of a [`Best`]; only the key takes part in the order.
struct Ranked<K, V> {
    key: K,
    value: V,
}

impl<K: Ord, V> PartialEq for Ranked<K, V> {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}

impl<K: Ord, V> Eq for Ranked<K, V> {}

impl<K: Ord, V> PartialOrd for Ranked<K, V> {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}

impl<K: Ord, V> Ord for Ranked<K, V> {
    fn cmp(&self, other: &Self) -> CmpOrdering {
        self.key.cmp(&other.key)
    }
}

/// The `limit` smallest keys offered so far, with their values: a max-heap
/// whose top is the worst entry kept, so a candidate that cannot get in is
/// turned away by one comparison, before anything is copied.
struct Best<K, V> {
    limit: usize,
    heap: BinaryHeap<Ranked<K, V>>,
    /// Candidates that matched, admitted or not (for `truncated`).
    offered: usize,
}

impl<K: Ord, V> Best<K, V> {
    fn new(limit: usize) -> Self {
        Self {
            limit,
            heap: BinaryHeap::with_capacity(limit.min(LISTING_CHUNK) + 1),
            offered: 0,
        }
    }

    /// Counts a matching candidate and says whether it gets in: `beats`
    /// says whether it orders before the worst key kept. Only then does
    /// the caller build it and [`Best::push`] it.
    fn admits(&mut self, beats: impl FnOnce(&K) -> bool) -> bool {
        self.offered += 1;
        match self.heap.peek() {
            _ if self.limit == 0 => false,
            Some(worst) if self.heap.len() >= self.limit => beats(&worst.key),
            _ => true,
        }
    }

    fn push(&mut self, key: K, value: V) {
        self.heap.push(Ranked { key, value });
        if self.heap.len() > self.limit {
            self.heap.pop();
        }
    }

    /// The kept entries by ascending key, the first of equal keys only (a
    /// scan that met a shard's reordering may have offered one entry
    /// twice), and whether more matched than were kept.
    fn finish(self) -> (Vec<(K, V)>, bool) {
        let mut sorted = self.heap.into_sorted_vec();
        sorted.dedup_by(|a, b| a.key == b.key);
        let truncated = self.offered > sorted.len();
        (
            sorted.into_iter().map(|r| (r.key, r.value)).collect(),
            truncated,
        )
    }
}

/// The order key of a topic in a listing: smaller is listed first.
fn topic_rank(order: TopicSort, subscribers: usize, published: u64) -> Reverse<u64> {
    Reverse(match order {
        TopicSort::Name => 0,
        TopicSort::Published => published,
        TopicSort::Subscribers => subscribers as u64,
    })
}

type Shard<S, T> = HashMap<Box<str>, Topic<S, T>>;

/// Several topics locked at once (see [`TopicManager::lock_topics`]).
pub struct LockedTopics<'m, S, T> {
    manager: &'m TopicManager<S, T>,
    guards: Vec<(usize, MutexGuard<'m, Shard<S, T>>)>,
}

impl<S: Clone, T: TopicState> LockedTopics<'_, S, T> {
    fn shard(&mut self, topic: &str) -> Option<&mut Shard<S, T>> {
        let i = self.manager.shard_index(topic);
        self.guards
            .iter_mut()
            .find(|(j, _)| *j == i)
            .map(|(_, guard)| &mut **guard)
    }

    /// The state of `topic`, if the topic exists. `None` as well for a topic
    /// that was not among those locked.
    pub fn state(&mut self, topic: &str) -> Option<&mut T> {
        self.shard(topic)?.get_mut(topic).map(|t| &mut t.state)
    }

    /// Subscribes `id` to `topic` (which must be among those locked),
    /// creating it if needed; then lets `on_live` act on its state, as
    /// [`TopicManager::subscribe`] does.
    ///
    /// # Errors
    /// [`TopicLimit`] as for [`TopicManager::subscribe`]; also for a topic
    /// that was not locked.
    pub fn subscribe<R>(
        &mut self,
        topic: &str,
        id: SubscriberId,
        subscriber: S,
        on_live: impl FnOnce(&mut T) -> R,
    ) -> Result<R, TopicLimit> {
        let manager = self.manager;
        let shard = self.shard(topic).ok_or(TopicLimit(0))?;
        let entry = manager.entry(shard, topic)?;
        manager.add(entry, id, subscriber);
        Ok(on_live(&mut entry.state))
    }
}

/// A subscription was refused: creating its topic would exceed the
/// manager's topic limit (the value).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the topic limit of {0} is reached")]
pub struct TopicLimit(pub usize);

/// Maps topics to subscribers, and lends a publish the subscriber list of its
/// topic and the topic's state `T`.
pub struct TopicManager<S, T = ()> {
    shards: Box<[Mutex<Shard<S, T>>]>,
    max_topics: usize,
    hasher: RandomState,
    topics: AtomicUsize,
    subscriptions: AtomicUsize,
}

impl<S, T> std::fmt::Debug for TopicManager<S, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TopicManager")
            .field("topics", &self.topics.load(Ordering::Relaxed))
            .field("subscriptions", &self.subscriptions.load(Ordering::Relaxed))
            .finish()
    }
}

impl<S: Clone, T: TopicState> Default for TopicManager<S, T> {
    fn default() -> Self {
        Self::new()
    }
}

/// Shard count: enough that unrelated topics rarely share a lock.
const SHARDS: usize = 64;

impl<S: Clone, T: TopicState> TopicManager<S, T> {
    /// An empty manager without a topic limit.
    pub fn new() -> Self {
        Self::with_max_topics(usize::MAX)
    }

    /// An empty manager holding at most `max_topics` topics at a time.
    pub fn with_max_topics(max_topics: usize) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            max_topics,
            hasher: RandomState::new(),
            topics: AtomicUsize::new(0),
            subscriptions: AtomicUsize::new(0),
        }
    }

    fn shard_index(&self, topic: &str) -> usize {
        (self.hasher.hash_one(topic) as usize) % self.shards.len()
    }

    fn shard(&self, topic: &str) -> MutexGuard<'_, Shard<S, T>> {
        let i = self.shard_index(topic);
        // A panic elsewhere cannot leave a shard half-updated: every update
        // below is completed before anything that could panic.
        self.shards[i]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Visits every topic of one shard, [`LISTING_CHUNK`] entries per lock.
    fn scan_shard(shard: &Mutex<Shard<S, T>>, mut visit: impl FnMut(&str, &Topic<S, T>)) {
        let mut pos = 0;
        let mut capacity = None;
        let mut restarts = 0;
        loop {
            let guard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            // Growth rehashes the map and reorders it: position `pos` no
            // longer means "after what was seen", so start over.
            if capacity.is_some_and(|c| c != guard.capacity()) && restarts < LISTING_RESTARTS {
                pos = 0;
                restarts += 1;
            }
            capacity = Some(guard.capacity());
            let mut seen = 0;
            for (name, topic) in guard.iter().skip(pos).take(LISTING_CHUNK) {
                visit(name, topic);
                seen += 1;
            }
            drop(guard);
            if seen < LISTING_CHUNK {
                return;
            }
            pos += seen;
        }
    }

    /// Subscribes `id` to `topic`, creating the topic if needed.
    ///
    /// `on_live` runs while the subscription is registered and the topic still
    /// locked, so whatever it enqueues (the `ACK`) is ordered before any
    /// delivery of a later publish. Returns `true` if the subscription is new,
    /// `false` if `id` was already subscribed (the handle is kept).
    ///
    /// # Errors
    /// [`TopicLimit`] when the topic does not exist and the manager already
    /// holds its maximum number of topics (`on_live` is not called).
    pub fn subscribe(
        &self,
        topic: &str,
        id: SubscriberId,
        subscriber: S,
        on_live: impl FnOnce(&mut T),
    ) -> Result<bool, TopicLimit> {
        let mut shard = self.shard(topic);
        let entry = self.entry(&mut shard, topic)?;
        let added = self.add(entry, id, subscriber);
        on_live(&mut entry.state);
        Ok(added)
    }

    /// The topic's entry, created if needed (and allowed).
    fn entry<'s>(
        &self,
        shard: &'s mut Shard<S, T>,
        topic: &str,
    ) -> Result<&'s mut Topic<S, T>, TopicLimit> {
        Ok(match shard.entry(topic.into()) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => {
                // Reserve a slot first, so concurrent creations cannot overshoot.
                let before = self.topics.fetch_add(1, Ordering::Relaxed);
                if before >= self.max_topics {
                    self.topics.fetch_sub(1, Ordering::Relaxed);
                    return Err(TopicLimit(self.max_topics));
                }
                e.insert(Topic::new())
            }
        })
    }

    /// Adds a subscriber to a topic; false if it was there already.
    fn add(&self, entry: &mut Topic<S, T>, id: SubscriberId, subscriber: S) -> bool {
        match entry.index.entry(id) {
            Entry::Occupied(_) => false,
            Entry::Vacant(slot) => {
                slot.insert(entry.subscribers.len());
                entry.subscribers.push((id, subscriber));
                self.subscriptions.fetch_add(1, Ordering::Relaxed);
                true
            }
        }
    }

    /// Removes `topic` from its shard if nothing keeps it.
    fn drop_if_idle(&self, shard: &mut Shard<S, T>, topic: &str) {
        if shard.get(topic).is_some_and(Topic::idle) {
            shard.remove(topic);
            self.topics.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Removes `id` from `topic`; drops the topic when nothing keeps it
    /// (no subscriber, and its state does not ask to be kept).
    /// Returns whether `id` was subscribed.
    pub fn unsubscribe(&self, topic: &str, id: SubscriberId) -> bool {
        let mut shard = self.shard(topic);
        let Some(entry) = shard.get_mut(topic) else {
            return false;
        };
        let removed = entry.remove(id);
        if removed {
            self.subscriptions.fetch_sub(1, Ordering::Relaxed);
            if entry.subscribers.is_empty() {
                entry.state.vacated(topic);
            }
        }
        self.drop_if_idle(&mut shard, topic);
        removed
    }

    /// Runs `f` with the subscribers and state of `topic`, if it exists,
    /// while the topic is locked, without counting a publish; drops the
    /// topic afterwards if nothing keeps it any more. `f` must only queue,
    /// as for [`TopicManager::publish`].
    pub fn with_topic<R>(
        &self,
        topic: &str,
        f: impl FnOnce(&[(SubscriberId, S)], &mut T) -> R,
    ) -> Option<R> {
        let mut shard = self.shard(topic);
        let entry = shard.get_mut(topic)?;
        let result = f(&entry.subscribers, &mut entry.state);
        self.drop_if_idle(&mut shard, topic);
        Some(result)
    }

    /// As [`TopicManager::with_topic`], creating the topic first if it does
    /// not exist (and the topic limit allows it). A topic created here
    /// stays only if `f` leaves its state asking to be kept.
    ///
    /// # Errors
    /// [`TopicLimit`] when the topic does not exist and the manager already
    /// holds its maximum number of topics (`f` is not called).
    pub fn with_topic_created<R>(
        &self,
        topic: &str,
        f: impl FnOnce(&[(SubscriberId, S)], &mut T) -> R,
    ) -> Result<R, TopicLimit> {
        let mut shard = self.shard(topic);
        let entry = self.entry(&mut shard, topic)?;
        let result = f(&entry.subscribers, &mut entry.state);
        self.drop_if_idle(&mut shard, topic);
        Ok(result)
    }

    /// Publishes to `topic`: runs `fanout` with the topic's subscribers and
    /// state while the topic is locked, and counts the publish. A topic that
    /// does not exist is created first if `create` (and the topic limit
    /// allows it), else `None` is returned without calling `fanout`.
    ///
    /// `fanout` runs under a shard lock shared with other topics: it must
    /// only queue (no I/O, no blocking, no other shard's lock).
    pub fn publish<R>(
        &self,
        topic: &str,
        create: bool,
        fanout: impl FnOnce(&[(SubscriberId, S)], &mut T) -> R,
    ) -> Option<R> {
        let mut shard = self.shard(topic);
        let entry = match shard.get_mut(topic) {
            Some(entry) => entry,
            None if create => self.entry(&mut shard, topic).ok()?,
            None => return None,
        };
        entry.published += 1;
        let result = fanout(&entry.subscribers, &mut entry.state);
        self.drop_if_idle(&mut shard, topic);
        Some(result)
    }

    /// Locks the shards of every topic in `topics` (in one global order, so
    /// two callers cannot deadlock) for work that must see several topics at
    /// one instant: a resume checks each topic's history, queues what was
    /// missed and subscribes, before any publish to them can run.
    pub fn lock_topics<'m>(&'m self, topics: &[&str]) -> LockedTopics<'m, S, T> {
        let mut indices: Vec<usize> = topics.iter().map(|t| self.shard_index(t)).collect();
        indices.sort_unstable();
        indices.dedup();
        let guards = indices
            .into_iter()
            .map(|i| {
                let guard = self.shards[i]
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                (i, guard)
            })
            .collect();
        LockedTopics {
            manager: self,
            guards,
        }
    }

    /// Visits the state of every topic of shard `i` (of
    /// [`TopicManager::shard_count`]), then drops the topics nothing keeps
    /// any more. For housekeeping that goes round the shards one at a time.
    pub fn sweep_shard(&self, i: usize, mut visit: impl FnMut(&str, &mut T)) {
        let Some(shard) = self.shards.get(i) else {
            return;
        };
        let mut shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
        let before = shard.len();
        shard.retain(|name, topic| {
            visit(name, &mut topic.state);
            !topic.idle()
        });
        self.topics
            .fetch_sub(before - shard.len(), Ordering::Relaxed);
    }

    /// How many shards [`TopicManager::sweep_shard`] goes over.
    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// Number of live topics.
    pub fn topic_count(&self) -> usize {
        self.topics.load(Ordering::Relaxed)
    }

    /// Number of (topic, subscriber) pairs.
    pub fn subscription_count(&self) -> usize {
        self.subscriptions.load(Ordering::Relaxed)
    }

    /// The best `limit` topics of `query`: by name (after `query.after`),
    /// or those with the most messages or subscribers, listed most first
    /// and then by name. Which of several topics tied at the cut-off are
    /// included is unspecified: deciding it by name would read every
    /// topic's name, the one part of an entry not stored inline, and that
    /// cache miss was most of the cost of a listing.
    ///
    /// Costs one pass over the topics in chunks of [`LISTING_CHUNK`] per
    /// shard lock, a heap of `limit` entries, and a copy of the names
    /// returned; nothing else is copied.
    pub fn topics(&self, query: &TopicQuery<'_>) -> TopicPage {
        let mut best: Best<(Reverse<u64>, Box<str>), (usize, u64)> = Best::new(query.limit);
        let by_name = query.order == TopicSort::Name;
        let after = query.after.filter(|_| by_name);
        for shard in self.shards.iter() {
            Self::scan_shard(shard, |name, topic| {
                if !name.starts_with(query.prefix) || after.is_some_and(|a| name <= a) {
                    return;
                }
                let (subscribers, published) = (topic.subscribers.len(), topic.published);
                let rank = topic_rank(query.order, subscribers, published);
                let beats = |worst: &(Reverse<u64>, Box<str>)| {
                    if by_name {
                        name < &*worst.1
                    } else {
                        rank < worst.0
                    }
                };
                if best.admits(beats) {
                    best.push((rank, name.into()), (subscribers, published));
                }
            });
        }
        let (kept, truncated) = best.finish();
        TopicPage {
            topics: kept
                .into_iter()
                .map(|((_, name), (subscribers, published))| TopicInfo {
                    name: name.into(),
                    subscribers,
                    published,
                })
                .collect(),
            truncated,
        }
    }

    /// One topic's summary, or `None` if it does not exist.
    pub fn topic(&self, topic: &str) -> Option<TopicInfo> {
        let shard = self.shard(topic);
        let t = shard.get(topic)?;
        Some(TopicInfo {
            name: topic.to_owned(),
            subscribers: t.subscribers.len(),
            published: t.published,
        })
    }

    /// One topic's summary and the `limit` subscribers with the smallest
    /// `key` above `after` (a page in key order), or `None` if the topic
    /// does not exist. Clones only the handles returned, and looks at
    /// [`LISTING_CHUNK`] subscribers per lock of the topic's shard.
    pub fn subscribers<K: Ord>(
        &self,
        topic: &str,
        key: impl Fn(&S) -> K,
        after: Option<&K>,
        limit: usize,
    ) -> Option<SubscriberPage<S>> {
        let mut best: Best<K, S> = Best::new(limit);
        let mut info = None;
        let mut pos = 0;
        loop {
            let shard = self.shard(topic);
            let Some(t) = shard.get(topic) else {
                break;
            };
            info = Some(TopicInfo {
                name: topic.to_owned(),
                subscribers: t.subscribers.len(),
                published: t.published,
            });
            let rest = t.subscribers.get(pos..).unwrap_or_default();
            let chunk = &rest[..rest.len().min(LISTING_CHUNK)];
            for (_, subscriber) in chunk {
                let k = key(subscriber);
                if after.is_none_or(|a| k > *a) && best.admits(|worst| k < *worst) {
                    best.push(k, subscriber.clone());
                }
            }
            let seen = chunk.len();
            drop(shard);
            if seen < LISTING_CHUNK {
                break;
            }
            pos += seen;
        }
        let info = info?;
        let (kept, truncated) = best.finish();
        Some(SubscriberPage {
            info,
            subscribers: kept.into_iter().map(|(_, s)| s).collect(),
            truncated,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::sync::Arc;

    /// A subscriber that records the frames it is handed.
    #[derive(Clone, Default)]
    struct Inbox(Arc<Mutex<Vec<Bytes>>>);

    impl Inbox {
        fn deliver(&self, frame: &Bytes) {
            self.0.lock().unwrap().push(frame.clone());
        }

        fn frames(&self) -> Vec<Bytes> {
            self.0.lock().unwrap().clone()
        }
    }

    /// Publishes `frame` to every subscriber of `topic`, as the server's fan-out does.
    fn publish<T: TopicState>(
        m: &TopicManager<Inbox, T>,
        topic: &str,
        frame: &'static [u8],
    ) -> usize {
        m.publish(topic, false, |subscribers, _| {
            let frame = Bytes::from_static(frame);
            for (_, inbox) in subscribers {
                inbox.deliver(&frame);
            }
            subscribers.len()
        })
        .unwrap_or(0)
    }

    #[test]
    fn validate_topic_rules() {
        assert!(validate_topic("news").is_ok());
        assert!(validate_topic("ünïcödé/with spaces").is_ok());
        assert!(validate_topic(&"x".repeat(256)).is_ok());
        for bad in ["", "a\nb", "\u{7f}", "tab\there"] {
            assert_eq!(
                validate_topic(bad).unwrap_err().code,
                ErrorCode::BadTopic,
                "{bad:?}"
            );
        }
        assert!(validate_topic(&"x".repeat(257)).is_err());
        // 256 bytes is the limit, not 256 characters.
        assert!(validate_topic(&"é".repeat(129)).is_err());
    }

    #[test]
    fn publish_encodes_once_and_shares_the_bytes() {
        let m: TopicManager<Inbox> = TopicManager::new();
        let inboxes: Vec<Inbox> = (0..5).map(|_| Inbox::default()).collect();
        for (i, inbox) in inboxes.iter().enumerate() {
            assert!(m.subscribe("t", i as u64, inbox.clone(), |_| {}).unwrap());
        }
        let reached = publish(&m, "t", b"frame");
        assert_eq!(reached, 5);
        let first = inboxes[0].frames()[0].as_ptr();
        assert!(
            inboxes.iter().all(|i| i.frames()[0].as_ptr() == first),
            "same buffer"
        );
    }

    #[test]
    fn double_subscribe_is_one_subscription_and_acks_twice() {
        let m: TopicManager<Inbox> = TopicManager::new();
        let inbox = Inbox::default();
        let mut acks = 0;
        assert!(m.subscribe("t", 1, inbox.clone(), |_| acks += 1).unwrap());
        assert!(!m.subscribe("t", 1, inbox.clone(), |_| acks += 1).unwrap());
        assert_eq!(acks, 2);
        assert_eq!(m.subscription_count(), 1);
        publish(&m, "t", b"x");
        assert_eq!(inbox.frames().len(), 1);
    }

    #[test]
    fn topics_vanish_when_empty_and_are_isolated() {
        let m: TopicManager<Inbox> = TopicManager::new();
        let (a, b) = (Inbox::default(), Inbox::default());
        m.subscribe("a", 1, a.clone(), |_| {}).unwrap();
        m.subscribe("b", 2, b.clone(), |_| {}).unwrap();
        m.subscribe("b", 3, a.clone(), |_| {}).unwrap();
        assert_eq!((m.topic_count(), m.subscription_count()), (2, 3));
        assert_eq!(publish(&m, "a", b"1"), 1);
        assert_eq!(b.frames().len(), 0);
        assert!(m.unsubscribe("a", 1));
        assert!(!m.unsubscribe("a", 1));
        assert!(m
            .publish("a", false, |_, _| unreachable!(
                "no subscribers, no fan-out"
            ))
            .is_none());
        assert!(m.unsubscribe("b", 2));
        let page = m.subscribers("b", |_| 0, None, 10).unwrap();
        assert_eq!((page.info.subscribers, page.subscribers.len()), (1, 1));
        assert!(m.unsubscribe("b", 3));
        assert_eq!((m.topic_count(), m.subscription_count()), (0, 0));
        assert!(m.topics(&query("", TopicSort::Name, 10)).topics.is_empty());
        assert!(m.subscribers("b", |_| 0, None, 10).is_none());
    }

    #[test]
    fn the_topic_limit_refuses_new_topics_only() {
        let m: TopicManager<Inbox> = TopicManager::with_max_topics(2);
        let inbox = Inbox::default();
        m.subscribe("a", 1, inbox.clone(), |_| {}).unwrap();
        m.subscribe("b", 1, inbox.clone(), |_| {}).unwrap();
        let mut acked = false;
        assert_eq!(
            m.subscribe("c", 1, inbox.clone(), |_| acked = true),
            Err(TopicLimit(2))
        );
        assert!(!acked, "no ACK for a refused subscription");
        // Existing topics still take subscribers, and a freed slot can be reused.
        assert_eq!(m.subscribe("a", 2, inbox.clone(), |_| {}), Ok(true));
        m.unsubscribe("b", 1);
        assert_eq!(m.subscribe("c", 1, inbox, |_| {}), Ok(true));
        assert_eq!(m.topic_count(), 2);
    }

    /// A state that asks to be kept while it counts something.
    #[derive(Default)]
    struct Kept(u32);

    impl TopicState for Kept {
        fn keep(&self) -> bool {
            self.0 > 0
        }
    }

    #[test]
    fn state_keeps_a_topic_without_subscribers_until_it_lets_go() {
        let m: TopicManager<Inbox, Kept> = TopicManager::new();
        // Publishing may create a topic; it stays while its state says so.
        assert_eq!(
            m.publish("t", true, |subs, k| {
                k.0 += 1;
                subs.len()
            }),
            Some(0)
        );
        assert_eq!(m.topic_count(), 1);
        assert_eq!(m.publish("u", true, |_, _| ()), Some(()));
        assert_eq!(
            m.topic_count(),
            1,
            "a topic nothing keeps is dropped at once"
        );
        assert!(m.publish("u", false, |_, _| ()).is_none());
        m.subscribe("t", 1, Inbox::default(), |k| assert_eq!(k.0, 1))
            .unwrap();
        m.unsubscribe("t", 1);
        assert_eq!(m.topic_count(), 1, "kept by its state");
        for i in 0..m.shard_count() {
            m.sweep_shard(i, |_, k| k.0 = 0);
        }
        assert_eq!(m.topic_count(), 0);
    }

    #[test]
    fn a_topic_made_or_changed_in_place_stays_only_while_something_keeps_it() {
        let m: TopicManager<Inbox, Kept> = TopicManager::with_max_topics(1);
        assert_eq!(
            m.with_topic_created("t", |subs, k| subs.len() + k.0 as usize),
            Ok(0)
        );
        assert_eq!(m.topic_count(), 0, "made, kept by nothing, dropped");
        assert_eq!(m.with_topic_created("t", |_, k| k.0 = 1), Ok(()));
        assert_eq!(m.topic_count(), 1, "kept by its state");
        assert_eq!(
            m.with_topic_created("u", |_, _| ()),
            Err(TopicLimit(1)),
            "the topic limit holds"
        );
        assert_eq!(m.with_topic("t", |_, k| k.0), Some(1));
        assert_eq!(m.with_topic("t", |_, k| k.0 = 0), Some(()));
        assert_eq!(m.topic_count(), 0, "let go: dropped at once");
        assert!(m.with_topic("t", |_, _| ()).is_none());
    }

    #[test]
    fn locked_topics_see_and_subscribe_several_at_once() {
        let m: TopicManager<Inbox, Kept> = TopicManager::new();
        m.publish("a", true, |_, k| k.0 = 5);
        let inbox = Inbox::default();
        {
            let mut locked = m.lock_topics(&["a", "b", "a"]);
            assert_eq!(locked.state("a").map(|k| k.0), Some(5));
            assert!(locked.state("b").is_none());
            assert_eq!(locked.subscribe("b", 1, inbox.clone(), |k| k.0), Ok(0));
            assert_eq!(locked.subscribe("a", 1, inbox.clone(), |k| k.0), Ok(5));
        }
        assert_eq!((m.topic_count(), m.subscription_count()), (2, 2));
        publish(&m, "b", b"x");
        assert_eq!(inbox.frames().len(), 1);
    }

    #[test]
    fn swap_remove_keeps_index_consistent() {
        let m: TopicManager<Inbox> = TopicManager::new();
        let inboxes: Vec<Inbox> = (0..10).map(|_| Inbox::default()).collect();
        for (i, inbox) in inboxes.iter().enumerate() {
            m.subscribe("t", i as u64, inbox.clone(), |_| {}).unwrap();
        }
        for i in [0u64, 5, 9, 3] {
            assert!(m.unsubscribe("t", i));
        }
        publish(&m, "t", b"x");
        for (i, inbox) in inboxes.iter().enumerate() {
            let expect = usize::from(![0, 5, 9, 3].contains(&i));
            assert_eq!(inbox.frames().len(), expect, "subscriber {i}");
        }
        assert_eq!(m.topic("t").unwrap().subscribers, 6);
    }

    fn query(prefix: &str, order: TopicSort, limit: usize) -> TopicQuery<'_> {
        TopicQuery {
            prefix,
            order,
            after: None,
            limit,
        }
    }

    fn names(page: &TopicPage) -> Vec<&str> {
        page.topics.iter().map(|t| t.name.as_str()).collect()
    }

    #[test]
    fn topic_listing_filters_sorts_and_limits() {
        let m: TopicManager<Inbox> = TopicManager::new();
        for name in ["news/b", "news/a", "sport", "news/c"] {
            m.subscribe(name, 1, Inbox::default(), |_| {}).unwrap();
        }
        publish(&m, "news/a", b"x");
        let page = m.topics(&query("news/", TopicSort::Name, 2));
        assert_eq!(names(&page), ["news/a", "news/b"]);
        assert!(page.truncated);
        assert_eq!(page.topics[0].published, 1);
        let page = m.topics(&query("news/", TopicSort::Name, 3));
        assert!(!page.truncated);
        assert!(m.topics(&query("", TopicSort::Name, 0)).truncated);
    }

    /// A listing of many topics, spread over every shard and several chunks
    /// per shard, against a plain sort of everything.
    #[test]
    fn top_k_and_cursor_pages_match_a_full_sort() {
        let m: TopicManager<Inbox> = TopicManager::new();
        let n = SHARDS * LISTING_CHUNK * 2 + 77;
        // Name → (subscribers, published), as the test made them.
        let mut truth: HashMap<String, (usize, u64)> = HashMap::new();
        for i in 0..n {
            let name = format!("t{i:06}");
            // Subscriber counts and publish counts in different orders.
            for s in 0..(i * 7 % 5) {
                m.subscribe(&name, s as u64, Inbox::default(), |_| {})
                    .unwrap();
            }
            if i * 7 % 5 == 0 {
                m.subscribe(&name, 9, Inbox::default(), |_| {}).unwrap();
            }
            for _ in 0..(i * 13 % 11) {
                publish(&m, &name, b"x");
            }
            truth.insert(name, ((i * 7 % 5).max(1), (i * 13 % 11) as u64));
        }
        // Top k: the right counts, true of each topic listed, in order;
        // which topics tied at the cut-off make it is unspecified.
        for order in [TopicSort::Published, TopicSort::Subscribers] {
            let count = |(subscribers, published): (usize, u64)| match order {
                TopicSort::Published => published,
                _ => subscribers as u64,
            };
            let mut all_counts: Vec<u64> = truth.values().map(|v| count(*v)).collect();
            all_counts.sort_unstable_by_key(|c| Reverse(*c));
            for k in [1, 500, n] {
                let page = m.topics(&query("", order, k));
                let got: Vec<_> = page
                    .topics
                    .iter()
                    .map(|t| {
                        assert_eq!(truth[&t.name], (t.subscribers, t.published));
                        (Reverse(count((t.subscribers, t.published))), t.name.clone())
                    })
                    .collect();
                let mut sorted = got.clone();
                sorted.sort();
                assert!(got == sorted, "top {k} by {order} in order");
                let counts: Vec<_> = got.iter().map(|(c, _)| c.0).collect();
                assert!(counts == all_counts[..k], "top {k} by {order}: counts");
                assert_eq!(page.truncated, k < n);
            }
        }
        // Name order, page by page through a cursor: every topic exactly once.
        let mut seen = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = m.topics(&TopicQuery {
                after: after.as_deref(),
                ..query("t", TopicSort::Name, 100)
            });
            seen.extend(page.topics.iter().map(|t| t.name.clone()));
            if !page.truncated {
                break;
            }
            after = page.topics.last().map(|t| t.name.clone());
        }
        let mut names: Vec<_> = truth.into_keys().collect();
        names.sort();
        assert!(seen == names, "name pages");
    }

    #[test]
    fn subscriber_pages_by_key() {
        let m: TopicManager<Inbox> = TopicManager::new();
        let n = LISTING_CHUNK as u64 * 3 + 5;
        for id in 0..n {
            m.subscribe("big", id, Inbox::default(), |_| {}).unwrap();
        }
        // Key: the inbox's address, an order unrelated to insertion.
        let mut ids = Vec::new();
        let mut after = None;
        loop {
            let page = m
                .subscribers(
                    "big",
                    |i: &Inbox| Arc::as_ptr(&i.0) as usize,
                    after.as_ref(),
                    1000,
                )
                .unwrap();
            assert_eq!(page.info.subscribers as u64, n);
            ids.extend(page.subscribers.iter().map(|i| Arc::as_ptr(&i.0) as usize));
            if !page.truncated {
                break;
            }
            after = ids.last().copied();
        }
        let mut sorted = ids.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(ids.len() as u64, n);
        assert!(ids == sorted, "subscribers in key order, each once");
    }
}
