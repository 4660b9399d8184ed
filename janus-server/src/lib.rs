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
//!
//! A publish (from a `PUBLISH` connection or the admin API) goes to
//! [`Shared::publish`], which stamps it once, encodes the delivery once, and
//! lets the `janus-core` topic manager push the same bytes onto every
//! subscriber's queue; each subscriber's connection task then writes its
//! queue with one vectored write.

pub mod config;
mod connection;
pub mod limits;
pub mod session;
pub mod stats;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use janus_core::{Publish, Token, TopicManager};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::{Config, SlowConsumerPolicy};
use connection::Connection;
use session::{Registry, Session, SessionHandle, SessionLimits};
use stats::Stats;

/// State shared by the accept loop, every connection and the admin API.
#[derive(Debug)]
pub struct Shared {
    /// The configuration in force.
    pub config: Config,
    /// Topic → subscribers.
    pub topics: TopicManager<SessionHandle>,
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
    limits: Arc<SessionLimits>,
    next_id: AtomicU64,
}

impl Shared {
    /// Publishes exactly like a client `PUBLISH`: one timestamp, one encoding,
    /// every local subscriber. Returns how many subscribers it reached.
    pub fn publish(&self, publish: &Publish) -> usize {
        let reached = self
            .topics
            .publish(&publish.topic, connection::publish_frame(publish));
        self.stats
            .messages_published
            .fetch_add(1, Ordering::Relaxed);
        reached
    }

    /// Whether the server is draining (no longer accepting).
    pub fn draining(&self) -> bool {
        self.shutdown.is_cancelled()
    }

    /// Starts a graceful shutdown, as SIGTERM does.
    pub fn drain(&self) {
        self.shutdown.cancel();
    }
}

/// A bound server, ready to run.
pub struct Server {
    listener: TcpListener,
    shared: Arc<Shared>,
}

impl Server {
    /// Binds the client listener of `config.listen`.
    ///
    /// # Errors
    /// The bind error (address in use, permission denied).
    pub async fn bind(config: Config, capacity: usize) -> io::Result<Server> {
        let listener = bind_listener(config.listen)?;
        Self::with_listener(listener, config, capacity)
    }

    /// Wraps an already bound listener (tests bind `127.0.0.1:0`).
    ///
    /// # Errors
    /// When the listener's address cannot be read.
    pub fn with_listener(
        listener: TcpListener,
        config: Config,
        capacity: usize,
    ) -> io::Result<Server> {
        let stats = Arc::new(Stats::default());
        let limits = Arc::new(SessionLimits {
            queue_limit: config.queue_limit,
            policy: config.slow_consumer,
            fanout_delay: config.test_fanout_delay,
            stats: stats.clone(),
        });
        let capacity = config.max_connections.unwrap_or(capacity).min(capacity);
        let shared = Arc::new(Shared {
            local_addr: listener.local_addr()?,
            config,
            topics: TopicManager::new(),
            sessions: Registry::default(),
            stats,
            shutdown: CancellationToken::new(),
            started_at: SystemTime::now(),
            started: Instant::now(),
            capacity,
            limits,
            next_id: AtomicU64::new(1),
        });
        Ok(Server { listener, shared })
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
    /// None today; reserved for listener failures that cannot be retried.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> io::Result<()> {
        let Server { listener, shared } = self;
        let tracker = TaskTracker::new();
        let token = shared.shutdown.clone();
        tokio::select! {
            () = accept_loop(&listener, &shared, &tracker) => {}
            () = shutdown => token.cancel(),
            () = token.cancelled() => {}
        }
        drop(listener);
        tracker.close();
        let open = shared.stats.connections.load(Ordering::Relaxed);
        tracing::info!(
            connections = open,
            "shutting down: stopped accepting, flushing queued messages"
        );
        let grace = shared.config.shutdown_timeout + Duration::from_secs(3);
        if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
            tracing::warn!("shutdown timeout: closing the remaining connections");
        }
        tracing::info!(
            published = Stats::get(&shared.stats.messages_published),
            delivered = Stats::get(&shared.stats.deliveries_sent),
            "stopped"
        );
        Ok(())
    }
}

/// Binds with a deep accept backlog: a swarm connects thousands at once.
fn bind_listener(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )?;
    socket.set_reuse_address(true)?;
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

async fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>, tracker: &TaskTracker) {
    let permits = Arc::new(Semaphore::new(shared.capacity));
    // One descriptor held back so that, when the process runs out, a new
    // client can still be accepted, told why, and closed.
    let mut spare = std::fs::File::open("/dev/null").ok();
    let mut last_full_log: Option<Instant> = None;
    loop {
        let accepted = listener.accept().await;
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) if is_resource_error(&e) => {
                log_full(&mut last_full_log, &format!("accept failed: {e}"));
                if spare.take().is_some() {
                    if let Ok((stream, _)) = listener.accept().await {
                        refuse(
                            stream,
                            "the server is out of file descriptors; try again later",
                            shared,
                        );
                    }
                    spare = std::fs::File::open("/dev/null").ok();
                } else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                continue;
            }
            Err(e) => {
                tracing::debug!(error = %e, "accept error");
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            log_full(
                &mut last_full_log,
                &format!("connection limit of {} reached", shared.capacity),
            );
            refuse(
                stream,
                &format!(
                    "the server is at its connection limit ({}); try again later",
                    shared.capacity
                ),
                shared,
            );
            continue;
        };
        let _ = stream.set_nodelay(true);
        let session = loop {
            let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
            let session = Arc::new(Session::new(
                id,
                Token::random(),
                peer,
                shared.limits.clone(),
            ));
            if shared.sessions.insert(session.clone()) {
                break session;
            }
        };
        shared.stats.connection_opened();
        let conn = Connection::new(stream, session, shared.clone(), Some(permit));
        tracker.spawn(conn.run());
    }
}

fn refuse(stream: tokio::net::TcpStream, reason: &str, shared: &Shared) {
    shared
        .stats
        .connections_refused
        .fetch_add(1, Ordering::Relaxed);
    shared.stats.error_sent(janus_core::ErrorCode::NotAllowed);
    if let Ok(std) = stream.into_std() {
        connection::refuse(&std, reason);
    }
}

fn log_full(last: &mut Option<Instant>, what: &str) {
    if last.is_none_or(|t| t.elapsed() > Duration::from_secs(5)) {
        tracing::warn!("refusing new connections: {what}; existing clients are unaffected");
        *last = Some(Instant::now());
    }
}
