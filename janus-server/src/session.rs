//! Sessions: the server-side state behind a token (protocol P8), and the
//! registry that finds them by token.
//!
//! A [`Session`] is what the rest of the server holds of a client: its
//! token and address, its subscriptions, its [`Outbound`] side (every frame
//! waiting for it and the right to write its socket), and the waker of the
//! connection task that reads it. The fan-out, the writer threads, the
//! admin API and the housekeeping sweep all work through it; only the
//! connection task reads the socket.

use std::collections::BTreeMap;
use std::io::{self, IoSlice, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use janus_core::topic::SubscriberId;
use janus_core::{ErrorCode, Token, TopicManager};
use tokio::net::TcpStream;

use crate::metrics::stamp_now;
use crate::outbound::{Budget, Flushed, Frame, Outbound, Tally};

/// The socket handle an [`Outbound`] writes to.
pub type Socket = Arc<TcpStream>;

/// How a client's connection carries the protocol: the frames queued for a
/// session are in its transport's form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Plain TCP, frames ending in `0x01` (protocol P1).
    Tcp,
    /// WebSocket (X2): each frame a text message.
    WebSocket,
}

impl Transport {
    /// This transport's form of a P1 server frame (a copy for WebSocket;
    /// a fan-out converts each delivery once, not per subscriber).
    pub fn frame(self, p1: Bytes) -> Bytes {
        match self {
            Transport::Tcp => p1,
            Transport::WebSocket => janus_core::ws::from_server_frame(&p1),
        }
    }

    /// The final bytes of a connection closing after the P1 frame `last`
    /// (if any): over WebSocket, followed by a close frame naming the error.
    pub fn last(self, last: Option<Bytes>) -> Option<Bytes> {
        match self {
            Transport::Tcp => last,
            Transport::WebSocket => Some(janus_core::ws::closing(last.as_deref())),
        }
    }

    /// The heartbeat (P4): `PING`, and over WebSocket a ping frame after it
    /// too (a browser answers that by itself).
    pub fn heartbeat(self) -> Bytes {
        match self {
            Transport::Tcp => Bytes::from_static(b"PING\x01"),
            Transport::WebSocket => {
                let mut both = janus_core::ws::text_frame(b"PING").to_vec();
                both.extend_from_slice(&janus_core::ws::ping_frame());
                Bytes::from(both)
            }
        }
    }

    /// The name operators see (`tcp`, `ws`).
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::WebSocket => "ws",
        }
    }
}

/// Why the server closes a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// Its queue overflowed under the `disconnect` policy.
    SlowConsumer,
    /// An operator kicked it.
    Kicked(String),
    /// The server is shutting down.
    Shutdown,
}

impl CloseReason {
    /// The P7 code sent before closing.
    pub fn code(&self) -> ErrorCode {
        match self {
            CloseReason::SlowConsumer => ErrorCode::SlowConsumer,
            CloseReason::Kicked(_) => ErrorCode::Kicked,
            CloseReason::Shutdown => ErrorCode::ServerShutdown,
        }
    }

    /// The human-readable reason sent before closing.
    pub fn reason(&self, budget: &Budget) -> String {
        match self {
            CloseReason::SlowConsumer => format!(
                "more than {} messages or {} bytes waiting: the client reads too slowly",
                budget.frames, budget.bytes
            ),
            CloseReason::Kicked(why) => why.clone(),
            CloseReason::Shutdown => "the server is shutting down".to_owned(),
        }
    }
}

/// A session's topics: a short vector while there are few (the usual case,
/// and the least memory), a hash set past [`Subscriptions::FEW`] so that a
/// client with thousands of topics does not make each subscribe a scan.
#[derive(Debug, Default)]
pub struct Subscriptions {
    few: Vec<Box<str>>,
    many: Option<std::collections::HashSet<Box<str>>>,
}

impl Subscriptions {
    /// Most topics kept in the vector.
    const FEW: usize = 16;

    /// Whether `topic` is one of them.
    pub fn contains(&self, topic: &str) -> bool {
        match &self.many {
            Some(set) => set.contains(topic),
            None => self.few.iter().any(|t| **t == *topic),
        }
    }

    /// Adds `topic`; false if it was there.
    pub fn insert(&mut self, topic: Box<str>) -> bool {
        if self.contains(&topic) {
            return false;
        }
        match &mut self.many {
            Some(set) => {
                set.insert(topic);
            }
            None if self.few.len() < Self::FEW => {
                // Grown one step at a time from one (a `Vec` would start at
                // four): most clients hold one topic or a few.
                if self.few.len() == self.few.capacity() {
                    self.few.reserve_exact(self.few.len().max(1));
                }
                self.few.push(topic);
            }
            None => {
                let mut set: std::collections::HashSet<Box<str>> = self.few.drain(..).collect();
                set.insert(topic);
                self.few = Vec::new();
                self.many = Some(set);
            }
        }
        true
    }

    /// Removes `topic`; false if it was not there.
    pub fn remove(&mut self, topic: &str) -> bool {
        match &mut self.many {
            Some(set) => set.remove(topic),
            None => match self.few.iter().position(|t| **t == *topic) {
                Some(pos) => {
                    self.few.swap_remove(pos);
                    true
                }
                None => false,
            },
        }
    }

    /// How many.
    pub fn len(&self) -> usize {
        self.many.as_ref().map_or(self.few.len(), |s| s.len())
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every topic, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.few
            .iter()
            .chain(self.many.iter().flatten())
            .map(|t| &**t)
    }

    /// Takes every topic out, leaving none.
    fn take(&mut self) -> Vec<Box<str>> {
        let mut all = std::mem::take(&mut self.few);
        all.extend(self.many.take().into_iter().flatten());
        all
    }
}

/// The shared half of a client. See the module documentation.
#[derive(Debug)]
pub struct Session {
    /// Numeric id used by the topic manager.
    pub id: SubscriberId,
    /// The token sent in the hello.
    pub token: Token,
    /// The client's address.
    pub peer: SocketAddr,
    /// When the connection was accepted, Unix milliseconds (a `SystemTime`
    /// would take 8 more bytes, and a session must stay within 384).
    connected_ms: u64,
    /// The transport of the connection it was created on; every frame
    /// queued for it is in this transport's form.
    pub transport: Transport,
    /// Every frame waiting for this client, and the right to write its socket.
    pub outbound: Outbound<Socket>,
    /// Latency stamp of the last complete frame read from the client (idle timeout).
    last_request: AtomicU32,
    /// The client opted in to offsets (X1): its deliveries carry them, its
    /// subscribes are answered `subscribed`, and heartbeats start at once.
    offsets: AtomicBool,
    /// The connection serving this session now (see [`Session::owned_by`]).
    owner: AtomicU64,
    /// Milliseconds stamp ([`crate::metrics::millis_now`]) since the session
    /// waits for a resume without a connection; 0 while attached.
    detached_since: AtomicU32,
    subscriptions: Mutex<Subscriptions>,
    /// The connection task, woken when the outbound side needs it.
    task: AtomicWaker,
}

impl Session {
    /// A new session writing to `socket`.
    pub fn new(
        id: SubscriberId,
        token: Token,
        peer: SocketAddr,
        socket: Socket,
        budget: Budget,
        transport: Transport,
    ) -> Self {
        let now = stamp_now();
        Self {
            id,
            token,
            peer,
            connected_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            transport,
            outbound: Outbound::new(Some(socket), budget, now),
            last_request: AtomicU32::new(now),
            offsets: AtomicBool::new(false),
            owner: AtomicU64::new(id),
            detached_since: AtomicU32::new(0),
            subscriptions: Mutex::new(Subscriptions::default()),
            task: AtomicWaker::new(),
        }
    }

    /// When the connection was accepted.
    pub fn connected_at(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.connected_ms)
    }

    /// The session's subscriptions (locked briefly). Lock order: a session's
    /// subscriptions before any topic shard; never the other way round.
    pub fn subscriptions(&self) -> MutexGuard<'_, Subscriptions> {
        self.subscriptions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Removes the session from every topic it is subscribed to.
    pub fn unsubscribe_all(&self, topics: &TopicManager<SessionHandle, crate::history::Stream>) {
        let taken = self.subscriptions().take();
        for topic in taken {
            topics.unsubscribe(&topic, self.id);
        }
    }

    /// Registers the connection task's waker (see [`Session::wake`]).
    pub(crate) fn register_task(&self, waker: &std::task::Waker) {
        self.task.register(waker);
    }

    /// Wakes the connection task: the outbound side changed in a way it must see.
    pub fn wake(&self) {
        self.task.wake();
    }

    /// Whether the connection `conn` still serves this session: a resume on
    /// another connection takes it over, after which the old connection
    /// leaves it alone. A session's first connection has the session's id.
    pub(crate) fn owned_by(&self, conn: u64) -> bool {
        self.owner.load(Ordering::Acquire) == conn
    }

    /// Connection `conn` takes the session over.
    pub(crate) fn take_over(&self, conn: u64) {
        self.owner.store(conn, Ordering::Release);
        self.detached_since.store(0, Ordering::Relaxed);
    }

    /// Notes that the session lost its connection and waits for a resume.
    pub(crate) fn mark_detached(&self) {
        self.detached_since
            .store(crate::metrics::millis_now().max(1), Ordering::Relaxed);
    }

    /// Milliseconds stamp since the session waits without a connection, if it does.
    pub fn detached_since(&self) -> Option<u32> {
        Some(self.detached_since.load(Ordering::Relaxed)).filter(|s| *s > 0)
    }

    /// Whether the session is worth keeping when its connection is lost: it
    /// has subscriptions to receive on, or a client that tracks offsets.
    pub(crate) fn resumable(&self) -> bool {
        self.offsets() || !self.subscriptions().is_empty()
    }

    /// Whether the client opted in to offsets (X1).
    pub fn offsets(&self) -> bool {
        self.offsets.load(Ordering::Relaxed)
    }

    /// Opts the client in to (or out of) offsets.
    pub(crate) fn set_offsets(&self, on: bool) {
        self.offsets.store(on, Ordering::Relaxed);
    }

    /// Notes that a complete frame was read from the client.
    pub(crate) fn touch(&self) {
        self.last_request.store(stamp_now(), Ordering::Relaxed);
    }

    /// Latency stamp of the last complete frame read from the client.
    pub(crate) fn last_request(&self) -> u32 {
        self.last_request.load(Ordering::Relaxed)
    }

    /// Queues a reply and writes it at once if nobody else is writing (see
    /// [`Outbound::reply`]); `None` when someone else writes it.
    pub(crate) fn reply(
        &self,
        frame: Bytes,
        tally: &mut Tally,
        max_writes: usize,
    ) -> Option<Flushed> {
        let mut scratch = Vec::new();
        let flushed = self.outbound.reply(
            frame,
            write_socket,
            stamp_now,
            &mut scratch,
            tally,
            max_writes,
        )?;
        self.after_flush(&flushed);
        Some(flushed)
    }

    /// Writes as much as the socket takes; the caller holds the write token.
    /// Wakes the connection task when the result is something it must act on.
    pub(crate) fn flush(
        &self,
        scratch: &mut Vec<Frame>,
        tally: &mut Tally,
        max_writes: usize,
    ) -> Flushed {
        let flushed = self
            .outbound
            .flush(write_socket, stamp_now, scratch, tally, max_writes);
        self.after_flush(&flushed);
        flushed
    }

    /// Wakes the connection task when a flush ended in something it must act on.
    fn after_flush(&self, flushed: &Flushed) {
        match flushed {
            Flushed::Idle { wake } | Flushed::More { wake } => {
                if *wake {
                    self.wake();
                }
            }
            Flushed::Parked | Flushed::Done | Flushed::Aborted | Flushed::Failed(_) => self.wake(),
        }
    }
}

/// One vectored write straight to the socket. On `EAGAIN`, the readiness
/// tokio remembers for it is cleared too, so the connection task's wait for
/// writability really waits.
fn write_socket(socket: &Socket, slices: &[IoSlice<'_>]) -> io::Result<usize> {
    let result = (&*socket2::SockRef::from(&**socket)).write_vectored(slices);
    if matches!(&result, Err(e) if e.kind() == io::ErrorKind::WouldBlock) {
        let _ = socket.try_io(tokio::io::Interest::WRITABLE, || {
            Err::<(), _>(io::ErrorKind::WouldBlock.into())
        });
    }
    result
}

/// The handle the topic manager holds for each subscription.
#[derive(Debug, Clone)]
pub struct SessionHandle(pub Arc<Session>);

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
        match self.lock().entry(session.token) {
            std::collections::btree_map::Entry::Occupied(_) => false,
            std::collections::btree_map::Entry::Vacant(slot) => {
                slot.insert(session);
                true
            }
        }
    }

    /// Registers a session in place of whatever had its token; returns that.
    pub fn replace(&self, session: Arc<Session>) -> Option<Arc<Session>> {
        self.lock().insert(session.token, session)
    }

    /// Unregisters `session` (if the token still names it).
    pub fn remove(&self, session: &Session) {
        let mut map = self.lock();
        if map.get(&session.token).is_some_and(|s| s.id == session.id) {
            map.remove(&session.token);
        }
    }

    /// Looks a session up by token.
    pub fn get(&self, token: &Token) -> Option<Arc<Session>> {
        self.lock().get(token).cloned()
    }

    /// Whether a token names a live session.
    pub fn contains(&self, token: &Token) -> bool {
        self.lock().contains_key(token)
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

#[cfg(test)]
mod tests {
    use super::{Session, Subscriptions};

    /// Every connection holds one `Arc<Session>`: 16 bytes of counts plus
    /// the session must stay within the allocator's 384-byte size class
    /// (the next is 448), so a field added here has to pay for itself.
    #[test]
    fn a_session_fits_its_size_class() {
        let size = std::mem::size_of::<Session>();
        assert!(size <= 368, "Session is {size} bytes");
    }

    /// One topic costs one slot, not the four a `Vec` starts with.
    #[test]
    fn one_subscription_takes_one_slot() {
        let mut subs = Subscriptions::default();
        subs.insert("news".into());
        assert_eq!(subs.few.capacity(), 1);
        subs.insert("sport".into());
        subs.insert("weather".into());
        assert_eq!(subs.few.capacity(), 4);
    }

    #[test]
    fn subscriptions_switch_to_a_set_and_stay_exact() {
        let mut subs = Subscriptions::default();
        for i in 0..100 {
            assert!(subs.insert(format!("t{i}").into()));
            assert!(!subs.insert(format!("t{i}").into()), "twice is once");
        }
        assert_eq!(subs.len(), 100);
        assert!(subs.contains("t0") && subs.contains("t99") && !subs.contains("t100"));
        assert!(subs.remove("t5") && !subs.remove("t5"));
        let mut all: Vec<_> = subs.iter().map(str::to_owned).collect();
        all.sort();
        assert_eq!(all.len(), 99);
        assert_eq!(subs.take().len(), 99);
        assert!(subs.is_empty());
    }
}
