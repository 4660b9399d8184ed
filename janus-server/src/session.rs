//! Sessions: the server-side state behind a token (PROTOCOL P8), and the
//! registry that finds them by token.
//!
//! A session's outbound queue is the only thing the fan-out path touches: a
//! publish pushes one shared `Bytes` handle under the session's own short
//! lock and, if nobody is writing the session yet, hands it to the writer
//! threads ([`crate::writer`]). A writer takes everything queued at once and
//! writes it with one vectored write, so a burst costs one syscall, not one
//! per message. [`Owner`] says who may write the socket: nobody, a writer
//! thread, or (when the socket is full or the session is closing) the
//! connection task.
//!
//! Slow consumers: the queue holds at most `queue_limit` deliveries. When a
//! delivery finds it full, the policy decides: `disconnect` marks the session
//! for closing (the connection task sends `slow_consumer` and closes) and
//! frees the queue at once; `drop-oldest` discards the oldest queued delivery.
//! Either way the publisher and every other subscriber carry on unaffected.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use bytes::{Buf, Bytes};
use janus_core::topic::SubscriberId;
use janus_core::{ErrorCode, Subscriber, Token};
use tokio::net::TcpStream;
use tokio::sync::Notify;

use crate::config::SlowConsumerPolicy;
use crate::stats::Stats;
use crate::writer::WriterQueue;

/// Most frames gathered into one vectored write.
pub const MAX_IOVECS: usize = 64;

/// Ready sessions collected during one fan-out before they are handed to
/// the writers, so writing starts while a large fan-out is still queuing.
const SCHEDULE_CHUNK: usize = 256;

thread_local! {
    /// Sessions made ready by the fan-out running on this thread, handed to
    /// the writers in chunks rather than one lock and wakeup each.
    static DEFERRED: RefCell<Option<Vec<Arc<Session>>>> = const { RefCell::new(None) };
}

/// Runs `fanout` with scheduling of ready sessions batched, and hands what
/// is left to `writers` at the end (also if `fanout` unwinds).
pub fn batched_fanout<R>(writers: &WriterQueue, fanout: impl FnOnce() -> R) -> R {
    struct Flush<'a>(&'a WriterQueue);
    impl Drop for Flush<'_> {
        fn drop(&mut self) {
            if let Some(mut batch) = DEFERRED.with(|d| d.borrow_mut().take()) {
                self.0.schedule_all(&mut batch);
            }
        }
    }
    DEFERRED.with(|d| *d.borrow_mut() = Some(Vec::with_capacity(SCHEDULE_CHUNK)));
    let _flush = Flush(writers);
    fanout()
}

/// Who may write a session's socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Owner {
    /// Nothing is queued and nobody writes.
    #[default]
    Idle,
    /// A writer thread has the session scheduled or is writing it.
    Writer,
    /// The connection task writes: the socket was full, or it is closing.
    Task,
}

/// One frame waiting to be written.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// The complete frame, terminator included.
    pub frame: Bytes,
    /// Control frames (`ACK`, errors) are written in a write of their own:
    /// 2009 clients match a whole read against `ACK` (PROTOCOL P9).
    pub alone: bool,
    /// A delivery's latency stamp ([`crate::metrics::enqueue_stamp`]);
    /// 0 for control frames, which are not timed.
    pub enqueued: u32,
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
    /// Who writes the socket.
    owner: Owner,
    /// The connection task asked to take over writing (it is closing).
    handover: bool,
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
    /// Where ready sessions go to be written.
    pub writers: Arc<WriterQueue>,
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
    /// The client's socket: written by writer threads or the connection
    /// task (never both, see [`Owner`]), read only by the connection task.
    pub(crate) stream: TcpStream,
    /// Latency stamp ([`crate::metrics::stamp_now`]) of the last write, for heartbeats.
    last_write: AtomicU32,
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
        stream: TcpStream,
        limits: Arc<SessionLimits>,
    ) -> Self {
        Self {
            id,
            token,
            peer,
            connected_at: SystemTime::now(),
            delivered: AtomicU64::new(0),
            stream,
            last_write: AtomicU32::new(crate::metrics::stamp_now()),
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
    ///
    /// When nothing else is queued, the connection task writes it itself on
    /// its next turn (it is the one answering this client): an `ACK` to a
    /// publisher must not wait behind a write round over every subscriber.
    pub fn push_control(self: &Arc<Self>, frame: Bytes) {
        let mut outbox = self.outbox();
        outbox.queue.push_back(Outgoing {
            frame,
            alone: true,
            enqueued: 0,
        });
        if outbox.owner == Owner::Idle {
            outbox.owner = Owner::Task;
        }
        drop(outbox);
        self.wake.notify_one();
    }

    /// After a push: whether the session must now be handed to the writers.
    fn claim_for_writer(&self, outbox: &mut Outbox) -> bool {
        match outbox.owner {
            Owner::Idle => {
                outbox.owner = Owner::Writer;
                true
            }
            Owner::Writer => false,
            Owner::Task => {
                // The task writes (socket full or closing); make sure it looks.
                self.wake.notify_one();
                false
            }
        }
    }

    /// Hands a session that became ready to the writers, batched during a fan-out.
    fn schedule(self: &Arc<Self>) {
        let full = DEFERRED.with(|d| match d.borrow_mut().as_mut() {
            Some(batch) => {
                batch.push(self.clone());
                (batch.len() >= SCHEDULE_CHUNK).then(|| std::mem::take(batch))
            }
            None => {
                self.limits.writers.schedule(self.clone());
                None
            }
        });
        if let Some(mut batch) = full {
            self.limits.writers.schedule_all(&mut batch);
        }
    }

    /// Queues a delivery, applying the slow-consumer policy when full.
    pub fn push_delivery(self: &Arc<Self>, frame: &Bytes) {
        let limits = &*self.limits;
        if let Some(delay) = limits.fanout_delay {
            let until = Instant::now() + delay;
            while Instant::now() < until {
                std::hint::spin_loop();
            }
        }
        let enqueued = crate::metrics::enqueue_stamp();
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
                    limits
                        .stats
                        .deliveries_dropped
                        .fetch_add(lost, Ordering::Relaxed);
                    limits.stats.slow_consumers.fetch_add(1, Ordering::Relaxed);
                    if outbox.owner == Owner::Idle {
                        outbox.owner = Owner::Task;
                    }
                    drop(outbox);
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
        outbox.queue.push_back(Outgoing {
            frame: frame.clone(),
            alone: false,
            enqueued,
        });
        outbox.deliveries += 1;
        let schedule = self.claim_for_writer(&mut outbox);
        drop(outbox);
        limits
            .stats
            .deliveries_enqueued
            .fetch_add(1, Ordering::Relaxed);
        if schedule {
            self.schedule();
        }
    }

    /// Asks the connection task to close the session.
    pub fn close(&self, reason: CloseReason) {
        let mut outbox = self.outbox();
        if !outbox.closed {
            outbox.close = Some(reason);
            outbox.closed = true;
        }
        if outbox.owner == Owner::Idle {
            outbox.owner = Owner::Task;
        }
        drop(outbox);
        self.wake.notify_one();
    }

    /// The connection task takes over writing for good (it is closing): at
    /// once if nobody writes, else when the writer finishes its current write.
    pub(crate) fn request_handover(&self) {
        let mut outbox = self.outbox();
        outbox.handover = true;
        if outbox.owner == Owner::Idle {
            outbox.owner = Owner::Task;
        }
    }

    /// For the connection task: moves what is queued into `into` if the task
    /// owns the socket. When nothing is queued, an open (not handed-over)
    /// session goes back to `Idle`. Returns whether the task owns the
    /// socket, and the close request, which is handed out once.
    pub(crate) fn take_for_task(
        &self,
        into: &mut VecDeque<Outgoing>,
    ) -> (bool, Option<CloseReason>) {
        let mut outbox = self.outbox();
        if outbox.owner != Owner::Task {
            return (false, None);
        }
        into.extend(outbox.queue.drain(..));
        outbox.deliveries = 0;
        let close = outbox.close.take();
        if into.is_empty() && close.is_none() && !outbox.handover && !outbox.closed {
            outbox.owner = Owner::Idle;
        }
        (true, close)
    }

    /// Whether the connection task owns the socket and nothing is queued.
    pub(crate) fn drained_by_task(&self) -> bool {
        let outbox = self.outbox();
        outbox.owner == Owner::Task && outbox.queue.is_empty() && outbox.close.is_none()
    }

    /// For a writer thread: writes what is queued until the queue is empty,
    /// the socket is full, or the connection task must take over.
    pub(crate) fn write_from_writer(&self, in_flight: &mut VecDeque<Outgoing>) {
        loop {
            {
                let mut outbox = self.outbox();
                if outbox.owner != Owner::Writer {
                    return;
                }
                if outbox.handover || outbox.close.is_some() {
                    outbox.owner = Owner::Task;
                    drop(outbox);
                    self.wake.notify_one();
                    return;
                }
                take_run(&mut outbox, in_flight);
                if in_flight.is_empty() {
                    outbox.owner = Owner::Idle;
                    return;
                }
            }
            let written = write_run(&self.stream, in_flight);
            if let Ok(n) = written {
                self.consume_written(in_flight, n);
                if in_flight.is_empty() {
                    continue;
                }
            }
            // Full socket (or an error the task will meet again and close on):
            // put the rest back in front, in order, and let the task wait.
            let mut outbox = self.outbox();
            for out in in_flight.drain(..).rev() {
                if !out.alone {
                    outbox.deliveries += 1;
                }
                outbox.queue.push_front(out);
            }
            outbox.owner = Owner::Task;
            drop(outbox);
            self.wake.notify_one();
            return;
        }
    }

    /// Drops `n` written bytes from the front of `pending`, counting
    /// deliveries, bytes and latency.
    pub(crate) fn consume_written(&self, pending: &mut VecDeque<Outgoing>, mut n: usize) {
        let stats = &self.limits.stats;
        stats.bytes_out.fetch_add(n as u64, Ordering::Relaxed);
        let now = crate::metrics::stamp_now();
        self.last_write.store(now, Ordering::Relaxed);
        let mut delivered = 0u64;
        // One histogram update per run of deliveries in the same bucket.
        let mut latency = stats.delivery_latency.batch();
        while n > 0 {
            let Some(front) = pending.front_mut() else {
                break;
            };
            if n >= front.frame.len() {
                n -= front.frame.len();
                if !front.alone {
                    delivered += 1;
                    latency.record(crate::metrics::stamp_elapsed(front.enqueued, now));
                }
                pending.pop_front();
            } else {
                front.frame.advance(n);
                n = 0;
            }
        }
        if delivered > 0 {
            stats
                .deliveries_sent
                .fetch_add(delivered, Ordering::Relaxed);
            self.delivered.fetch_add(delivered, Ordering::Relaxed);
        }
    }

    /// Time since the last write to the socket.
    pub(crate) fn since_last_write(&self) -> Duration {
        crate::metrics::stamp_elapsed(
            self.last_write.load(Ordering::Relaxed),
            crate::metrics::stamp_now(),
        )
    }

    /// Discards what is queued (the connection is gone); returns how many frames.
    pub(crate) fn discard_queued(&self) -> usize {
        let mut outbox = self.outbox();
        outbox.closed = true;
        outbox.deliveries = 0;
        let n = outbox.queue.len();
        outbox.queue.clear();
        n
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

/// Moves the next write's worth from the queue: one control frame alone, or
/// a run of up to [`MAX_IOVECS`] deliveries.
fn take_run(outbox: &mut Outbox, into: &mut VecDeque<Outgoing>) {
    while into.len() < MAX_IOVECS {
        let Some(front) = outbox.queue.front() else {
            break;
        };
        if front.alone {
            if into.is_empty() {
                if let Some(out) = outbox.queue.pop_front() {
                    into.push_back(out);
                }
            }
            break;
        }
        if let Some(out) = outbox.queue.pop_front() {
            outbox.deliveries -= 1;
            into.push_back(out);
        }
    }
}

/// One write from the front of `pending`: a control frame alone, or a run
/// of deliveries gathered into one `writev`. Returns the bytes written.
///
/// # Errors
/// `WouldBlock` when the socket is full, or the socket's error.
pub(crate) fn write_run(stream: &TcpStream, pending: &VecDeque<Outgoing>) -> io::Result<usize> {
    let Some(front) = pending.front() else {
        return Ok(0);
    };
    if front.alone {
        return stream.try_write(&front.frame);
    }
    let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
    let mut n = 0;
    for out in pending.iter().take(MAX_IOVECS) {
        if out.alone {
            break;
        }
        slices[n] = IoSlice::new(&out.frame);
        n += 1;
    }
    stream.try_write_vectored(&slices[..n])
}
