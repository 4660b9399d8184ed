//! Sessions: the server-side state behind a token (PROTOCOL P8), and the
//! registry that finds them by token.
//!
//! A session's outbound queue is the only thing the fan-out path touches: a
//! publish pushes one shared `Bytes` handle under the session's own short
//! lock and wakes the connection task if the queue was empty. The connection
//! task takes everything queued at once and writes it with one vectored
//! write, so a burst costs one wakeup and one syscall, not one per message.
//!
//! Slow consumers: the queue holds at most `queue_limit` deliveries. When a
//! delivery finds it full, the policy decides: `disconnect` marks the session
//! for closing (the connection task sends `slow_consumer` and closes) and
//! frees the queue at once; `drop-oldest` discards the oldest queued delivery.
//! Either way the publisher and every other subscriber carry on unaffected.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use janus_core::topic::SubscriberId;
use janus_core::{ErrorCode, Subscriber, Token};
use tokio::sync::Notify;

use crate::config::SlowConsumerPolicy;
use crate::stats::Stats;

/// One frame waiting to be written.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// The complete frame, terminator included.
    pub frame: Bytes,
    /// Control frames (`ACK`, errors) are written in a write of their own:
    /// 2009 clients match a whole read against `ACK` (PROTOCOL P9).
    pub alone: bool,
}

/// Why a session must close, set by someone other than its connection task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// The queue overflowed under the `disconnect` policy.
    SlowConsumer,
    /// An operator kicked the session.
    Kicked(String),
}

#[derive(Debug, Default)]
struct Outbox {
    queue: VecDeque<Outgoing>,
    /// Deliveries (not control frames) in `queue`.
    deliveries: usize,
    /// A close request not yet handed to the connection task.
    close: Option<CloseReason>,
    /// Set with the first close request: no more deliveries are queued.
    closed: bool,
}

/// Settings every session shares; one allocation for all of them.
#[derive(Debug)]
pub struct SessionLimits {
    /// Most queued deliveries.
    pub queue_limit: usize,
    /// What happens past `queue_limit`.
    pub policy: SlowConsumerPolicy,
    /// Test-only per-delivery busy wait.
    pub fanout_delay: Option<Duration>,
    /// Counters to update.
    pub stats: Arc<Stats>,
}

/// The shared half of a session: what the fan-out path, the registry and the
/// admin API see. The connection task owns the socket.
#[derive(Debug)]
pub struct Session {
    /// Numeric id used by the topic manager.
    pub id: SubscriberId,
    /// The token sent in the hello.
    pub token: Token,
    /// The client's address.
    pub peer: SocketAddr,
    /// When the connection was accepted.
    pub connected_at: SystemTime,
    /// Deliveries written to this session's socket.
    pub delivered: AtomicU64,
    outbox: Mutex<Outbox>,
    subscriptions: Mutex<HashSet<Box<str>>>,
    wake: Notify,
    limits: Arc<SessionLimits>,
}

impl Session {
    /// A new session with an empty queue.
    pub fn new(
        id: SubscriberId,
        token: Token,
        peer: SocketAddr,
        limits: Arc<SessionLimits>,
    ) -> Self {
        Self {
            id,
            token,
            peer,
            connected_at: SystemTime::now(),
            delivered: AtomicU64::new(0),
            outbox: Mutex::new(Outbox::default()),
            subscriptions: Mutex::new(HashSet::new()),
            wake: Notify::new(),
            limits,
        }
    }

    fn outbox(&self) -> MutexGuard<'_, Outbox> {
        self.outbox.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The session's subscriptions (locked briefly).
    pub fn subscriptions(&self) -> MutexGuard<'_, HashSet<Box<str>>> {
        self.subscriptions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues a control frame to be written on its own.
    pub fn push_control(&self, frame: Bytes) {
        let mut outbox = self.outbox();
        let was_empty = outbox.queue.is_empty();
        outbox.queue.push_back(Outgoing { frame, alone: true });
        drop(outbox);
        if was_empty {
            self.wake.notify_one();
        }
    }

    /// Queues a delivery, applying the slow-consumer policy when full.
    pub fn push_delivery(&self, frame: &Bytes) {
        let limits = &*self.limits;
        if let Some(delay) = limits.fanout_delay {
            let until = Instant::now() + delay;
            while Instant::now() < until {
                std::hint::spin_loop();
            }
        }
        let mut outbox = self.outbox();
        if outbox.closed {
            return;
        }
        if outbox.deliveries >= limits.queue_limit {
            match limits.policy {
                SlowConsumerPolicy::Disconnect => {
                    let lost = outbox.deliveries as u64 + 1;
                    outbox.queue.retain(|o| o.alone);
                    outbox.deliveries = 0;
                    outbox.close = Some(CloseReason::SlowConsumer);
                    outbox.closed = true;
                    drop(outbox);
                    limits
                        .stats
                        .deliveries_dropped
                        .fetch_add(lost, Ordering::Relaxed);
                    limits.stats.slow_consumers.fetch_add(1, Ordering::Relaxed);
                    self.wake.notify_one();
                    return;
                }
                SlowConsumerPolicy::DropOldest => {
                    if let Some(pos) = outbox.queue.iter().position(|o| !o.alone) {
                        outbox.queue.remove(pos);
                        outbox.deliveries -= 1;
                        limits
                            .stats
                            .deliveries_dropped
                            .fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
        let was_empty = outbox.queue.is_empty();
        outbox.queue.push_back(Outgoing {
            frame: frame.clone(),
            alone: false,
        });
        outbox.deliveries += 1;
        drop(outbox);
        limits
            .stats
            .deliveries_enqueued
            .fetch_add(1, Ordering::Relaxed);
        if was_empty {
            self.wake.notify_one();
        }
    }

    /// Asks the connection task to close the session.
    pub fn close(&self, reason: CloseReason) {
        let mut outbox = self.outbox();
        if !outbox.closed {
            outbox.close = Some(reason);
            outbox.closed = true;
        }
        drop(outbox);
        self.wake.notify_one();
    }

    /// Moves everything queued into `into` (keeping order). Returns how many
    /// deliveries moved and the close request, which is handed out once.
    pub fn take_queued(&self, into: &mut VecDeque<Outgoing>) -> (usize, Option<CloseReason>) {
        let mut outbox = self.outbox();
        let moved = outbox.deliveries;
        if into.is_empty() {
            std::mem::swap(into, &mut outbox.queue);
        } else {
            into.extend(outbox.queue.drain(..));
        }
        outbox.deliveries = 0;
        (moved, outbox.close.take())
    }

    /// Deliveries queued and not yet taken by the writer.
    pub fn queue_depth(&self) -> usize {
        self.outbox().deliveries
    }

    /// Waits until something is queued or a close is requested.
    pub async fn woken(&self) {
        self.wake.notified().await;
    }
}

/// The handle the topic manager holds for each subscription.
#[derive(Debug, Clone)]
pub struct SessionHandle(pub Arc<Session>);

impl Subscriber for SessionHandle {
    fn deliver(&self, frame: &Bytes) {
        self.0.push_delivery(frame);
    }
}

/// Live sessions by token, ordered so listings can be paginated.
#[derive(Debug, Default)]
pub struct Registry {
    sessions: Mutex<BTreeMap<Token, Arc<Session>>>,
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<Token, Arc<Session>>> {
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a session; returns `false` if its token is already taken.
    pub fn insert(&self, session: Arc<Session>) -> bool {
        let mut map = self.lock();
        if map.contains_key(&session.token) {
            return false;
        }
        map.insert(session.token, session);
        true
    }

    /// Unregisters a session.
    pub fn remove(&self, token: &Token) {
        self.lock().remove(token);
    }

    /// Looks a session up by token.
    pub fn get(&self, token: &Token) -> Option<Arc<Session>> {
        self.lock().get(token).cloned()
    }

    /// Number of live sessions.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether there are no sessions.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Up to `limit` sessions with tokens after `after`, in token order.
    pub fn page(&self, after: Option<Token>, limit: usize) -> Vec<Arc<Session>> {
        use std::ops::Bound;
        let map = self.lock();
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        map.range((start, Bound::Unbounded))
            .take(limit)
            .map(|(_, s)| s.clone())
            .collect()
    }

    /// Every session (for shutdown and kicks).
    pub fn all(&self) -> Vec<Arc<Session>> {
        self.lock().values().cloned().collect()
    }
}

/// Error code for a close reason.
impl CloseReason {
    /// The P7 code sent before closing.
    pub fn code(&self) -> ErrorCode {
        match self {
            CloseReason::SlowConsumer => ErrorCode::SlowConsumer,
            CloseReason::Kicked(_) => ErrorCode::Kicked,
        }
    }

    /// The human-readable reason sent before closing.
    pub fn reason(&self, queue_limit: usize) -> String {
        match self {
            CloseReason::SlowConsumer => {
                format!("more than {queue_limit} messages waiting: the client reads too slowly")
            }
            CloseReason::Kicked(why) => why.clone(),
        }
    }
}
