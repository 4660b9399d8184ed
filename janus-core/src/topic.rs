//! Topic validation (PROTOCOL P3) and the topic manager: topic → subscribers.
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

use std::collections::hash_map::{Entry, RandomState};
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

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

/// One topic's subscribers, kept in a vector for a tight fan-out loop.
struct Topic<S> {
    subscribers: Vec<(SubscriberId, S)>,
    /// Position of each subscriber in `subscribers`.
    index: HashMap<SubscriberId, usize>,
    published: u64,
}

impl<S> Topic<S> {
    fn new() -> Self {
        Self {
            subscribers: Vec::new(),
            index: HashMap::new(),
            published: 0,
        }
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

type Shard<S> = HashMap<Box<str>, Topic<S>>;

/// A subscription was refused: creating its topic would exceed the
/// manager's topic limit (the value).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the topic limit of {0} is reached")]
pub struct TopicLimit(pub usize);

/// Maps topics to subscribers, and lends a publish the subscriber list of its topic.
pub struct TopicManager<S> {
    shards: Box<[Mutex<Shard<S>>]>,
    max_topics: usize,
    hasher: RandomState,
    topics: AtomicUsize,
    subscriptions: AtomicUsize,
}

impl<S> std::fmt::Debug for TopicManager<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TopicManager")
            .field("topics", &self.topics.load(Ordering::Relaxed))
            .field("subscriptions", &self.subscriptions.load(Ordering::Relaxed))
            .finish()
    }
}

impl<S: Clone> Default for TopicManager<S> {
    fn default() -> Self {
        Self::new()
    }
}

/// Shard count: enough that unrelated topics rarely share a lock.
const SHARDS: usize = 64;

impl<S: Clone> TopicManager<S> {
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

    fn shard(&self, topic: &str) -> MutexGuard<'_, Shard<S>> {
        let i = (self.hasher.hash_one(topic) as usize) % self.shards.len();
        // A panic elsewhere cannot leave a shard half-updated: every update
        // below is completed before anything that could panic.
        self.shards[i]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
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
        on_live: impl FnOnce(),
    ) -> Result<bool, TopicLimit> {
        let mut shard = self.shard(topic);
        let entry = match shard.entry(topic.into()) {
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
        };
        let added = match entry.index.entry(id) {
            Entry::Occupied(_) => false,
            Entry::Vacant(slot) => {
                slot.insert(entry.subscribers.len());
                entry.subscribers.push((id, subscriber));
                self.subscriptions.fetch_add(1, Ordering::Relaxed);
                true
            }
        };
        on_live();
        Ok(added)
    }

    /// Removes `id` from `topic`; drops the topic when it empties.
    /// Returns whether `id` was subscribed.
    pub fn unsubscribe(&self, topic: &str, id: SubscriberId) -> bool {
        let mut shard = self.shard(topic);
        let Some(entry) = shard.get_mut(topic) else {
            return false;
        };
        let removed = entry.remove(id);
        if removed {
            self.subscriptions.fetch_sub(1, Ordering::Relaxed);
        }
        if entry.subscribers.is_empty() {
            shard.remove(topic);
            self.topics.fetch_sub(1, Ordering::Relaxed);
        }
        removed
    }

    /// Publishes to `topic`: runs `fanout` with the topic's subscribers while
    /// the topic is locked, and counts the publish. Returns `None` (without
    /// calling `fanout`) when the topic has no subscribers.
    ///
    /// `fanout` runs under a shard lock shared with other topics: it must
    /// only queue (no I/O, no blocking, no other shard's lock).
    pub fn publish<R>(
        &self,
        topic: &str,
        fanout: impl FnOnce(&[(SubscriberId, S)]) -> R,
    ) -> Option<R> {
        let mut shard = self.shard(topic);
        let entry = shard.get_mut(topic)?;
        entry.published += 1;
        Some(fanout(&entry.subscribers))
    }

    /// Number of live topics.
    pub fn topic_count(&self) -> usize {
        self.topics.load(Ordering::Relaxed)
    }

    /// Number of (topic, subscriber) pairs.
    pub fn subscription_count(&self) -> usize {
        self.subscriptions.load(Ordering::Relaxed)
    }

    /// Up to `limit` topics whose names start with `prefix`, sorted by name.
    /// Locks one shard at a time, briefly.
    pub fn topics(&self, prefix: &str, limit: usize) -> Vec<TopicInfo> {
        let mut out = Vec::new();
        for shard in self.shards.iter() {
            let shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            out.extend(
                shard
                    .iter()
                    .filter(|(name, _)| name.starts_with(prefix))
                    .map(|(name, t)| TopicInfo {
                        name: name.to_string(),
                        subscribers: t.subscribers.len(),
                        published: t.published,
                    }),
            );
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out.truncate(limit);
        out
    }

    /// One topic's summary and subscriber handles, or `None` if it does not exist.
    pub fn topic(&self, topic: &str) -> Option<(TopicInfo, Vec<(SubscriberId, S)>)> {
        let shard = self.shard(topic);
        let t = shard.get(topic)?;
        Some((
            TopicInfo {
                name: topic.to_owned(),
                subscribers: t.subscribers.len(),
                published: t.published,
            },
            t.subscribers.clone(),
        ))
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
    fn publish(m: &TopicManager<Inbox>, topic: &str, frame: &'static [u8]) -> usize {
        m.publish(topic, |subscribers| {
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
        let m = TopicManager::new();
        let inboxes: Vec<Inbox> = (0..5).map(|_| Inbox::default()).collect();
        for (i, inbox) in inboxes.iter().enumerate() {
            assert!(m.subscribe("t", i as u64, inbox.clone(), || {}).unwrap());
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
        let m = TopicManager::new();
        let inbox = Inbox::default();
        let mut acks = 0;
        assert!(m.subscribe("t", 1, inbox.clone(), || acks += 1).unwrap());
        assert!(!m.subscribe("t", 1, inbox.clone(), || acks += 1).unwrap());
        assert_eq!(acks, 2);
        assert_eq!(m.subscription_count(), 1);
        publish(&m, "t", b"x");
        assert_eq!(inbox.frames().len(), 1);
    }

    #[test]
    fn topics_vanish_when_empty_and_are_isolated() {
        let m = TopicManager::new();
        let (a, b) = (Inbox::default(), Inbox::default());
        m.subscribe("a", 1, a.clone(), || {}).unwrap();
        m.subscribe("b", 2, b.clone(), || {}).unwrap();
        m.subscribe("b", 3, a.clone(), || {}).unwrap();
        assert_eq!((m.topic_count(), m.subscription_count()), (2, 3));
        assert_eq!(publish(&m, "a", b"1"), 1);
        assert_eq!(b.frames().len(), 0);
        assert!(m.unsubscribe("a", 1));
        assert!(!m.unsubscribe("a", 1));
        assert!(m
            .publish("a", |_| unreachable!("no subscribers, no fan-out"))
            .is_none());
        assert!(m.unsubscribe("b", 2));
        let (info, subs) = m.topic("b").unwrap();
        assert_eq!((info.subscribers, subs[0].0), (1, 3));
        assert!(m.unsubscribe("b", 3));
        assert_eq!((m.topic_count(), m.subscription_count()), (0, 0));
        assert!(m.topics("", 10).is_empty());
    }

    #[test]
    fn the_topic_limit_refuses_new_topics_only() {
        let m = TopicManager::with_max_topics(2);
        let inbox = Inbox::default();
        m.subscribe("a", 1, inbox.clone(), || {}).unwrap();
        m.subscribe("b", 1, inbox.clone(), || {}).unwrap();
        let mut acked = false;
        assert_eq!(
            m.subscribe("c", 1, inbox.clone(), || acked = true),
            Err(TopicLimit(2))
        );
        assert!(!acked, "no ACK for a refused subscription");
        // Existing topics still take subscribers, and a freed slot can be reused.
        assert_eq!(m.subscribe("a", 2, inbox.clone(), || {}), Ok(true));
        m.unsubscribe("b", 1);
        assert_eq!(m.subscribe("c", 1, inbox, || {}), Ok(true));
        assert_eq!(m.topic_count(), 2);
    }

    #[test]
    fn swap_remove_keeps_index_consistent() {
        let m = TopicManager::new();
        let inboxes: Vec<Inbox> = (0..10).map(|_| Inbox::default()).collect();
        for (i, inbox) in inboxes.iter().enumerate() {
            m.subscribe("t", i as u64, inbox.clone(), || {}).unwrap();
        }
        for i in [0u64, 5, 9, 3] {
            assert!(m.unsubscribe("t", i));
        }
        publish(&m, "t", b"x");
        for (i, inbox) in inboxes.iter().enumerate() {
            let expect = usize::from(![0, 5, 9, 3].contains(&i));
            assert_eq!(inbox.frames().len(), expect, "subscriber {i}");
        }
        assert_eq!(m.topic("t").unwrap().0.subscribers, 6);
    }

    #[test]
    fn topic_listing_filters_sorts_and_limits() {
        let m = TopicManager::new();
        for name in ["news/b", "news/a", "sport", "news/c"] {
            m.subscribe(name, 1, Inbox::default(), || {}).unwrap();
        }
        publish(&m, "news/a", b"x");
        let list = m.topics("news/", 2);
        assert_eq!(
            list.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
            ["news/a", "news/b"]
        );
        assert_eq!(list[0].published, 1);
    }
}
