//! The Janus server as a library: the binary in `main.rs` only parses flags,
//! sets up logging and signals, and calls [`Server::run`]; tests run the
//! same server in-process on `127.0.0.1:0`.
//!
//! Layout:
//! - [`config`]: flags, `JANUS_*` environment and TOML file → [`Config`].
//! - [`Server`] (here): binds, runs the accept loop, and shuts down gracefully.
//! - [`connection`]: one task per client, reading frames and writing its queue.
//! - [`session`]: the per-client outbound queue the fan-out writes into, and
//!   the token registry.
//! - [`stats`]: counters for logs and the admin API.
//! - [`limits`]: the open-file limit and the connection capacity it allows.
//! - [`admin`]: the admin HTTP API (status, topics, sessions, publish, kick,
//!   drain) on its own port, and [`metrics`]: the delivery-latency histogram
//!   and the Prometheus exposition it serves.
//!
//! A publish (from a `PUBLISH` connection or the admin API) goes to
//! [`Shared::publish`], which stamps it once, encodes the delivery once, and
//! lets the `janus-core` topic manager push the same bytes onto every
//! subscriber's queue; each subscriber's connection task then writes its
//! queue with one vectored write.

pub mod admin;
pub mod broker;
pub mod cluster;
pub mod config;
mod connection;
pub mod fanout;
pub mod history;
mod housekeeping;
pub mod limits;
pub mod metrics;
pub mod outbound;
pub mod session;
pub mod stats;
mod websocket;
pub mod writer;

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use futures_util::FutureExt;
use janus_core::{ProtocolError, Publish, ServerMessage, Token, TopicManager};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::{Config, SlowConsumerPolicy};
use connection::Connection;
use outbound::{Budget, Push};
use session::{CloseReason, Registry, Session, SessionHandle, Socket, Transport};
use stats::{Refusal, Stats};

/// State shared by the accept loop, every connection and the admin API.
#[derive(Debug)]
pub struct Shared {
    /// The configuration in force.
    pub config: Config,
    /// Topic → subscribers, and each topic's stream (offsets, history).
    pub topics: TopicManager<SessionHandle, history::Stream>,
    /// How much history is kept, and how much is held.
    pub history: history::HistoryLimits,
    /// Token → session.
    pub sessions: Registry,
    /// Counters.
    pub stats: Arc<Stats>,
    /// Cancelled to begin a graceful shutdown (signal, admin drain, test).
    pub shutdown: CancellationToken,
    /// When the server started.
    pub started_at: SystemTime,
    /// Monotonic start, for uptime.
    pub started: Instant,
    /// Most client connections this server will hold.
    pub capacity: usize,
    /// The client listener's address.
    pub local_addr: SocketAddr,
    /// The admin API's bound address, if it is enabled.
    admin_addr: Option<SocketAddr>,
    /// The WebSocket listener's bound address, if it is enabled.
    ws_addr: Option<SocketAddr>,
    /// Set once the accept loop runs; `/ready` reports it (with draining).
    pub(crate) accepting: AtomicBool,
    /// Every client's budget.
    budget: Budget,
    /// The writer threads; stopped when the server has shut down.
    writers: writer::Writers,
    /// Open connections per client address (for `max-connections-per-ip`).
    per_ip: Mutex<HashMap<IpAddr, u32>>,
    next_id: AtomicU64,
    /// The cluster this node belongs to (`--broker`), once connected.
    cluster: OnceLock<Arc<cluster::Cluster>>,
}

impl Shared {
    /// Publishes exactly like a client `PUBLISH`: one timestamp, one encoding,
    /// every local subscriber. Returns how many subscribers it reached.
    pub fn publish(&self, publish: &Publish) -> usize {
        fanout::publish(self, publish)
    }

    /// The cluster this node belongs to; `None` for a single node (`--broker none`).
    pub fn cluster(&self) -> Option<&Arc<cluster::Cluster>> {
        self.cluster.get()
    }

    /// Queues one delivery frame for one session (a unicast). Returns whether it was queued.
    pub fn send(&self, session: &Arc<Session>, frame: &Bytes) -> bool {
        fanout::send(self, session, frame)
    }

    /// Whether a publish from `ip`, carrying `key` (X4), is allowed. The key
    /// is compared in constant time.
    pub fn may_publish(&self, ip: IpAddr, key: Option<&str>) -> bool {
        use subtle::ConstantTimeEq;
        let keyed = match (&self.config.publish_key, key) {
            (Some(expected), Some(given)) => {
                bool::from(expected.as_bytes().ct_eq(given.as_bytes()))
            }
            _ => false,
        };
        keyed || self.config.may_publish(ip)
    }

    /// Closes a session at once for `reason`: a kick or a slow-consumer cut
    /// discards what is queued and sends the error first; a shutdown writes
    /// what is queued first. Either way the session leaves every topic now;
    /// it stays listed (as closing) until its connection has ended, which the
    /// housekeeping sweep bounds. Returns false if it was already closing.
    pub fn close_session(&self, session: &Arc<Session>, reason: &CloseReason) -> bool {
        let err = ProtocolError::new(reason.code(), reason.reason(&self.budget));
        let frame = ServerMessage::error(&err, janus_core::Timestamp::now()).to_bytes();
        let discard = *reason != CloseReason::Shutdown;
        let push = session
            .outbound
            .close(session.transport.last(Some(frame)), discard);
        if push == Push::Refused {
            return false;
        }
        self.stats.error_sent(err.code);
        session.unsubscribe_all(&self.topics);
        self.after_push(session, push);
        true
    }

    /// Closes a session after what is queued, without a final frame.
    fn close_quietly(&self, session: &Arc<Session>) {
        let push = session.outbound.close(session.transport.last(None), false);
        if push != Push::Refused {
            session.unsubscribe_all(&self.topics);
        }
        self.after_push(session, push);
    }

    /// A fan-out found `session` over its budget under the `disconnect`
    /// policy (its outbound side already holds `slow_consumer`): it leaves
    /// every topic, and its connection task closes it.
    fn slow_consumer_cut(&self, session: &Arc<Session>) {
        tracing::info!(peer = %session.peer, token = %session.token, "disconnecting slow consumer");
        self.stats.slow_consumers.fetch_add(1, Ordering::Relaxed);
        self.stats.error_sent(janus_core::ErrorCode::SlowConsumer);
        session.unsubscribe_all(&self.topics);
        session.wake();
    }

    /// Gives up on a session at once: nothing more is written, it leaves
    /// every topic, and its connection task drops the socket.
    pub(crate) fn abort(&self, session: &Arc<Session>) {
        let unwritten = session.outbound.abort();
        if unwritten > 0 {
            tracing::debug!(peer = %session.peer, frames = unwritten, "aborted with frames unwritten");
        }
        session.unsubscribe_all(&self.topics);
        session.wake();
    }

    /// Queues a control frame from outside the connection task (a `PING`)
    /// and makes sure it gets written.
    fn push_control(&self, session: &Arc<Session>, frame: Bytes) {
        let push = session.outbound.push_control(frame);
        self.after_push(session, push);
    }

    /// After a push from outside the connection task: a claimed token goes to the writers.
    pub(crate) fn after_push(&self, session: &Arc<Session>, push: Push) {
        if push.claimed() {
            self.writers.queue().schedule(session.clone());
        } else {
            session.wake();
        }
    }

    /// The session is over: it leaves everything shared.
    pub(crate) fn forget(&self, session: &Arc<Session>) {
        if session.outbound.status().end != outbound::End::Done {
            session.outbound.abort();
        }
        session.unsubscribe_all(&self.topics);
        self.sessions.remove(session);
        if let Some(cluster) = self.cluster() {
            if !self.sessions.contains(&session.token) {
                cluster.broker.unregister_session(session.token);
            }
        }
    }

    /// A session is registered here: in a cluster, other nodes learn where it is.
    fn registered(&self, session: &Session) {
        if let Some(cluster) = self.cluster() {
            cluster.broker.register_session(session.token);
        }
    }

    /// A connection ended (its session may live on, detached).
    fn connection_closed(&self, peer: SocketAddr) {
        self.release_ip(peer.ip());
        self.stats.connection_closed();
    }

    /// The session's connection is lost: the session waits, subscribed,
    /// for a resume (protocol X1) if it is worth keeping, else it goes.
    fn connection_lost(&self, session: &Arc<Session>) {
        session.outbound.detach();
        if self.config.session_ttl.is_zero() || self.draining() || !session.resumable() {
            self.forget(session);
        } else if self.stats.detached_at_most() >= self.config.max_detached_sessions as u64 {
            self.stats.sessions_not_kept.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(token = %session.token, "not kept for a resume: max-detached-sessions reached");
            self.forget(session);
        } else {
            session.mark_detached();
            self.stats.sessions_detached.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The client's socket accepts nothing: the connection is given up on
    /// (its connection task then ends it, and the session may wait for a resume).
    fn give_up_connection(&self, session: &Arc<Session>) {
        session.outbound.detach();
        session.wake();
    }

    /// Counts a connection from `ip`; false if it already has the most allowed.
    fn admit_ip(&self, ip: IpAddr) -> bool {
        let mut per_ip = self.per_ip.lock().unwrap_or_else(PoisonError::into_inner);
        let count = per_ip.entry(ip).or_insert(0);
        if *count as usize >= self.config.max_connections_per_ip && !self.config.per_ip_exempt(ip) {
            return false;
        }
        *count += 1;
        true
    }

    fn release_ip(&self, ip: IpAddr) {
        let mut per_ip = self.per_ip.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = per_ip.get_mut(&ip) {
            *count -= 1;
            if *count == 0 {
                per_ip.remove(&ip);
            }
        }
    }

    /// Client addresses with at least one open connection.
    pub fn client_addresses(&self) -> usize {
        self.per_ip
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether the server is draining (no longer accepting).
    pub fn draining(&self) -> bool {
        self.shutdown.is_cancelled()
    }

    /// Starts a graceful shutdown, as SIGTERM does.
    pub fn drain(&self) {
        self.shutdown.cancel();
    }

    /// The address the admin API is bound to (`None` when it is off).
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// The address WebSocket clients connect to (`None` when it is off).
    pub fn ws_addr(&self) -> Option<SocketAddr> {
        self.ws_addr
    }

    /// Whether the server accepts clients: started and not draining, and in
    /// a cluster connected to the broker (resubscribed and caught up).
    pub fn is_ready(&self) -> bool {
        self.accepting.load(Ordering::Relaxed)
            && !self.draining()
            && self.cluster().is_none_or(|c| c.broker.ready())
    }

    /// Every live session, in token order.
    fn all_sessions(&self) -> Vec<Arc<Session>> {
        self.sessions.page(None, usize::MAX)
    }
}

/// A bound server, ready to run.
pub struct Server {
    listener: TcpListener,
    /// The admin API listener, bound with the client one so that a busy
    /// port is a start-up error and tests can read the address at once.
    admin: Option<TcpListener>,
    /// The WebSocket listener (X2), bound the same way.
    ws: Option<TcpListener>,
    shared: Arc<Shared>,
}

impl Server {
    /// Binds the client listener of `config.listen`.
    ///
    /// # Errors
    /// The bind error (address in use, permission denied).
    pub async fn bind(config: Config, capacity: usize) -> io::Result<Server> {
        let listener = bind_listener(config.listen, config.reuse_port)
            .map_err(|e| annotate(e, &format!("client listener {}", config.listen)))?;
        Self::with_listener(listener, config, capacity)
    }

    /// Wraps an already bound listener (tests bind `127.0.0.1:0`), and binds
    /// the admin API's listener when `config.admin_listen` is set (tests use
    /// `127.0.0.1:0`; [`Shared::admin_addr`] tells the port).
    ///
    /// # Errors
    /// When the listener's address cannot be read, or the admin address
    /// cannot be bound.
    pub fn with_listener(
        listener: TcpListener,
        config: Config,
        capacity: usize,
    ) -> io::Result<Server> {
        let stats = Arc::new(Stats::default());
        let writers = writer::Writers::start(config.writer_threads, stats.clone())?;
        let budget = Budget {
            bytes: config.queue_bytes,
            frames: config.queue_limit,
            policy: config.slow_consumer,
        };
        let capacity = config.max_connections.unwrap_or(capacity).min(capacity);
        // Accepted sockets inherit TCP_NODELAY from the listener on Linux,
        // which saves a system call per client (protocol P9 wants it on).
        socket2::SockRef::from(&listener).set_tcp_nodelay(true)?;
        let admin = match config.admin_listen {
            Some(addr) => Some(
                bind_listener(addr, false)
                    .map_err(|e| annotate(e, &format!("admin API {addr}")))?,
            ),
            None => None,
        };
        let ws = match config.ws_listen {
            Some(addr) => {
                let ws = bind_listener(addr, false)
                    .map_err(|e| annotate(e, &format!("WebSocket listener {addr}")))?;
                socket2::SockRef::from(&ws).set_tcp_nodelay(true)?;
                Some(ws)
            }
            None => None,
        };
        let shared = Arc::new(Shared {
            local_addr: listener.local_addr()?,
            admin_addr: admin.as_ref().map(TcpListener::local_addr).transpose()?,
            ws_addr: ws.as_ref().map(TcpListener::local_addr).transpose()?,
            accepting: AtomicBool::new(false),
            topics: TopicManager::with_max_topics(config.max_topics),
            history: history::HistoryLimits::new(
                config.history_size,
                config.history_ttl,
                config.history_bytes,
            ),
            config,
            sessions: Registry::default(),
            stats,
            shutdown: CancellationToken::new(),
            started_at: SystemTime::now(),
            started: Instant::now(),
            capacity,
            budget,
            writers,
            per_ip: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            cluster: OnceLock::new(),
        });
        Ok(Server {
            listener,
            admin,
            ws,
            shared,
        })
    }

    /// The client listener's address.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    /// The shared state (counters, topics, sessions, shutdown switch).
    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    /// Accepts and serves clients until `shutdown` completes or
    /// [`Shared::drain`] is called; then stops accepting, lets every
    /// connection write what is queued and send `server_shutdown` (bounded by
    /// the shutdown timeout), and returns.
    ///
    /// # Errors
    /// When the admin API's thread cannot be started.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> io::Result<()> {
        let Server {
            listener,
            admin,
            ws,
            shared,
        } = self;
        if let Some(url) = shared.config.broker.clone() {
            let cluster = cluster::Cluster::connect(&shared, &url)
                .await
                .map_err(io::Error::other)?;
            let _ = shared.cluster.set(cluster);
        }
        let tracker = TaskTracker::new();
        let token = shared.shutdown.clone();
        // The admin API and the sweep outlive the drain (so `/ready` can say
        // 503, `/status` can be watched and stuck clients are still cut) and
        // stop when this function returns.
        let stop = CancellationToken::new();
        // Also stops the admin thread if this future is dropped unfinished.
        let _stop_guard = stop.clone().drop_guard();
        let admin_thread = admin
            .map(|l| admin::spawn(l, shared.clone(), stop.clone()))
            .transpose()?;
        let sweep = tokio::spawn(housekeeping::run(shared.clone(), stop.clone()));
        let helper = tokio::spawn(writer::help(
            shared.writers.queue().clone(),
            shared.stats.clone(),
            stop.clone(),
        ));
        if let Some(ws) = &ws {
            let origins = &shared.config.ws_allowed_origins;
            let from = if origins.is_empty() {
                "any origin (set ws-allowed-origins to restrict browsers)".to_owned()
            } else {
                origins.join(", ")
            };
            tracing::info!(addr = %ws.local_addr()?, "WebSocket clients accepted from {from}");
        }
        shared.accepting.store(true, Ordering::Relaxed);
        // Both listeners share the connection capacity.
        let limits = Limits {
            permits: Arc::new(Semaphore::new(shared.capacity)),
            refusals: Arc::new(Semaphore::new(REFUSALS_LINGERING)),
        };
        let ws_loop = async {
            match &ws {
                Some(ws) => accept_loop(ws, Transport::WebSocket, &shared, &tracker, &limits).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = accept_loop(&listener, Transport::Tcp, &shared, &tracker, &limits) => {}
            () = ws_loop => {}
            () = shutdown => token.cancel(),
            () = token.cancelled() => {}
        }
        drop(listener);
        drop(ws);
        tracker.close();
        let open = shared.stats.connections.load(Ordering::Relaxed);
        tracing::info!(
            connections = open,
            "shutting down: stopped accepting, writing what is queued"
        );
        for session in shared.all_sessions() {
            shared.close_session(&session, &CloseReason::Shutdown);
        }
        if tokio::time::timeout(shared.config.shutdown_timeout, tracker.wait())
            .await
            .is_err()
        {
            let left = shared.all_sessions();
            tracing::warn!(
                connections = left.len(),
                "shutdown timeout: dropping the clients that have not taken their last frames"
            );
            for session in &left {
                shared.abort(session);
            }
            // Aborted connections end at their next poll.
            let _ = tokio::time::timeout(Duration::from_secs(2), tracker.wait()).await;
        }
        tracing::info!(
            published = Stats::get(&shared.stats.messages_published),
            delivered = Stats::get(&shared.stats.deliveries_sent),
            "stopped"
        );
        shared.writers.stop();
        if let Some(cluster) = shared.cluster() {
            cluster.broker.close().await;
        }
        stop.cancel();
        let _ = sweep.await;
        let _ = helper.await;
        if let Some(thread) = admin_thread {
            // Lets in-flight admin responses (the drain request's own) finish.
            thread.join(Duration::from_secs(3)).await;
        }
        Ok(())
    }
}

/// Prefixes an I/O error with what was being done, keeping its kind.
fn annotate(e: io::Error, what: &str) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// Binds with a deep accept backlog: a swarm connects thousands at once.
/// With `reuse_port`, several processes may bind the same address
/// (`SO_REUSEPORT`): the kernel spreads new connections over them.
fn bind_listener(addr: SocketAddr, reuse_port: bool) -> io::Result<TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    TcpListener::from_std(socket.into())
}

/// Whether an accept error means the process (or system) is out of descriptors or memory.
fn is_resource_error(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// A descriptor held back so that, when the process runs out, a new client
/// can still be accepted, told why, and closed.
fn spare_descriptor() -> Option<std::fs::File> {
    std::fs::File::open("/dev/null").ok()
}

/// Connections being refused that still wait for their peer to read the
/// error frame; past this many, a refused connection is closed at once.
const REFUSALS_LINGERING: usize = limits::REFUSALS_LINGERING as usize;

/// Session tokens drawn from the operating system's random source 256 at a
/// time: one `getrandom` call per 256 clients instead of one each.
struct Tokens {
    bits: Vec<u128>,
}

impl Tokens {
    fn next(&mut self) -> Token {
        if let Some(bits) = self.bits.pop() {
            return Token::from_u128(bits);
        }
        let mut buf = [0u8; 16 * 256];
        if getrandom::fill(&mut buf).is_err() {
            // The OS source failed: fall back to one token at a time.
            return Token::random();
        }
        self.bits.extend(
            buf.chunks_exact(16)
                .filter_map(|c| c.try_into().ok().map(u128::from_le_bytes)),
        );
        self.next()
    }
}

/// The connection capacity, and the refusals that may linger, shared by the listeners.
struct Limits {
    permits: Arc<Semaphore>,
    refusals: Arc<Semaphore>,
}

async fn accept_loop(
    listener: &TcpListener,
    transport: Transport,
    shared: &Arc<Shared>,
    tracker: &TaskTracker,
    limits: &Limits,
) {
    let mut tokens = Tokens { bits: Vec::new() };
    let mut spare = spare_descriptor();
    let mut last_full_log: Option<Instant> = None;
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(pair) => pair,
            Err(e) if is_resource_error(&e) => {
                log_full(&mut last_full_log, &format!("accept failed: {e}"));
                if spare.take().is_none() {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    spare = spare_descriptor();
                    continue;
                }
                // With the spare descriptor freed, take whoever is waiting
                // now (never wait for a later client here).
                let waiting = listener.accept().now_or_never();
                spare = spare_descriptor();
                match waiting {
                    // A descriptor was freed meanwhile: serve the client.
                    Some(Ok((stream, peer))) if spare.is_some() => (stream, peer),
                    Some(Ok((stream, _))) => {
                        refuse(
                            stream,
                            transport,
                            (
                                Refusal::Fds,
                                "the server is out of file descriptors; try again later",
                            ),
                            shared,
                            None,
                        );
                        spare = spare_descriptor();
                        continue;
                    }
                    _ => continue,
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "accept error");
                continue;
            }
        };
        if spare.is_none() {
            spare = spare_descriptor();
        }
        admit(
            (stream, peer, transport),
            shared,
            tracker,
            limits,
            (&mut last_full_log, &mut tokens),
        );
    }
}

/// Registers an accepted client and starts its connection task, or refuses
/// it politely when a limit says no.
fn admit(
    (stream, peer, transport): (tokio::net::TcpStream, SocketAddr, Transport),
    shared: &Arc<Shared>,
    tracker: &TaskTracker,
    limits: &Limits,
    (last_full_log, tokens): (&mut Option<Instant>, &mut Tokens),
) {
    let refusals = &limits.refusals;
    let Ok(permit) = limits.permits.clone().try_acquire_owned() else {
        log_full(
            last_full_log,
            &format!("connection limit of {} reached", shared.capacity),
        );
        let reason = format!(
            "the server is at its connection limit ({}); try again later",
            shared.capacity
        );
        refuse(
            stream,
            transport,
            (Refusal::MaxConnections, &reason),
            shared,
            Some(refusals),
        );
        return;
    };
    if !shared.admit_ip(peer.ip()) {
        let reason = format!(
            "too many connections from {} (the limit is {})",
            peer.ip(),
            shared.config.max_connections_per_ip
        );
        refuse(
            stream,
            transport,
            (Refusal::PerIp, &reason),
            shared,
            Some(refusals),
        );
        return;
    }
    let socket = Arc::new(stream);
    let token = tokens.next();
    match transport {
        Transport::Tcp => {
            let conn = open(shared, (socket, peer, transport), token, permit, &[]);
            tracker.spawn(conn.run());
        }
        Transport::WebSocket => {
            let shared = shared.clone();
            tracker.spawn(async move {
                // Boxed: the handshake's buffer and timer are gone once it is done.
                let handshake = Box::pin(websocket::handshake(&socket, &shared)).await;
                let Some(input) = handshake else {
                    shared.release_ip(peer.ip());
                    return;
                };
                let conn = open(&shared, (socket, peer, transport), token, permit, &input);
                drop(input);
                conn.run().await;
            });
        }
    }
}

/// Registers a new session on an accepted (and, for WebSocket, upgraded)
/// connection, greets the client, and returns the connection to run;
/// `input` is what the client sent after its handshake.
fn open(
    shared: &Arc<Shared>,
    (socket, peer, transport): (Socket, SocketAddr, Transport),
    mut token: Token,
    permit: tokio::sync::OwnedSemaphorePermit,
    input: &[u8],
) -> Connection {
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    // 128 random bits do not collide in practice; the registry checks anyway.
    let session = loop {
        let session = Arc::new(Session::new(
            id,
            token,
            peer,
            socket.clone(),
            shared.budget,
            transport,
        ));
        if shared.sessions.insert(session.clone()) {
            break session;
        }
        token = Token::random();
    };
    shared.registered(&session);
    shared.stats.connection_opened();
    if transport == Transport::WebSocket {
        shared.stats.websocket_total.fetch_add(1, Ordering::Relaxed);
    }
    let mut conn = Connection::new(session, socket, shared.clone(), Some(permit)).with_input(input);
    conn.greet();
    conn
}

/// Answers a client the server cannot take with `not_allowed`, half-closes,
/// and (while few refusals are pending) reads what the client still sends
/// for a moment, so the error frame is not destroyed by a reset.
fn refuse(
    stream: tokio::net::TcpStream,
    transport: Transport,
    (why, reason): (Refusal, &str),
    shared: &Shared,
    lingering: Option<&Arc<Semaphore>>,
) {
    use std::io::Write;
    shared.stats.refused(why);
    shared.stats.error_sent(janus_core::ErrorCode::NotAllowed);
    let err = ProtocolError::new(janus_core::ErrorCode::NotAllowed, reason);
    let frame = match transport {
        Transport::Tcp => ServerMessage::error(&err, janus_core::Timestamp::now()).to_bytes(),
        // Before the handshake: a plain HTTP refusal.
        Transport::WebSocket => janus_core::ws::Rejection::new(503, reason)
            .response()
            .into(),
    };
    let sock = socket2::SockRef::from(&stream);
    let _ = (&*sock).write(&frame);
    let _ = sock.shutdown(std::net::Shutdown::Write);
    let Some(permit) = lingering.and_then(|s| s.clone().try_acquire_owned().ok()) else {
        return;
    };
    tokio::spawn(async move {
        let mut sink = [0u8; 512];
        let drain = async {
            loop {
                if stream.readable().await.is_err() {
                    return;
                }
                match connection::read_once(&stream, &mut sink) {
                    Ok(0) => return,
                    Err(e) if e.kind() != io::ErrorKind::WouldBlock => return,
                    _ => {}
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
        drop(permit);
    });
}

fn log_full(last: &mut Option<Instant>, what: &str) {
    if last.is_none_or(|t| t.elapsed() > Duration::from_secs(5)) {
        tracing::warn!("refusing new connections: {what}; existing clients are unaffected");
        *last = Some(Instant::now());
    }
}
