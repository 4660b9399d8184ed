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
pub mod config;
mod connection;
pub mod limits;
pub mod metrics;
pub mod session;
pub mod stats;
pub mod writer;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
    /// The admin API's bound address, if it is enabled.
    admin_addr: Option<SocketAddr>,
    /// Set once the accept loop runs; `/ready` reports it (with draining).
    accepting: AtomicBool,
    limits: Arc<SessionLimits>,
    /// The writer threads; stopped when the server has shut down.
    writers: writer::Writers,
    next_id: AtomicU64,
}

impl Shared {
    /// Publishes exactly like a client `PUBLISH`: one timestamp, one encoding,
    /// every local subscriber. Returns how many subscribers it reached.
    pub fn publish(&self, publish: &Publish) -> usize {
        let reached = session::batched_fanout(&self.limits.writers, || {
            metrics::during_fanout(|| {
                self.topics
                    .publish(&publish.topic, connection::publish_frame(publish))
            })
        });
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

    /// The address the admin API is bound to (`None` when it is off).
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// Whether the server accepts clients: started and not draining.
    pub fn is_ready(&self) -> bool {
        self.accepting.load(Ordering::Relaxed) && !self.draining()
    }
}

/// A bound server, ready to run.
pub struct Server {
    listener: TcpListener,
    /// The admin API listener, bound with the client one so that a busy
    /// port is a start-up error and tests can read the address at once.
    admin: Option<TcpListener>,
    shared: Arc<Shared>,
}

impl Server {
    /// Binds the client listener of `config.listen`.
    ///
    /// # Errors
    /// The bind error (address in use, permission denied).
    pub async fn bind(config: Config, capacity: usize) -> io::Result<Server> {
        let listener = bind_listener(config.listen)
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
        let writers = writer::Writers::start(config.writer_threads)?;
        let limits = Arc::new(SessionLimits {
            queue_limit: config.queue_limit,
            policy: config.slow_consumer,
            fanout_delay: config.test_fanout_delay,
            stats: stats.clone(),
            writers: writers.queue(),
        });
        let capacity = config.max_connections.unwrap_or(capacity).min(capacity);
        // Accepted sockets inherit TCP_NODELAY from the listener on Linux,
        // which saves a system call per client (PROTOCOL P9 wants it on).
        socket2::SockRef::from(&listener).set_tcp_nodelay(true)?;
        let admin = match config.admin_listen {
            Some(addr) => {
                Some(bind_listener(addr).map_err(|e| annotate(e, &format!("admin API {addr}")))?)
            }
            None => None,
        };
        let shared = Arc::new(Shared {
            local_addr: listener.local_addr()?,
            admin_addr: admin.as_ref().map(TcpListener::local_addr).transpose()?,
            accepting: AtomicBool::new(false),
            config,
            topics: TopicManager::new(),
            sessions: Registry::default(),
            stats,
            shutdown: CancellationToken::new(),
            started_at: SystemTime::now(),
            started: Instant::now(),
            capacity,
            limits,
            writers,
            next_id: AtomicU64::new(1),
        });
        Ok(Server {
            listener,
            admin,
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
            shared,
        } = self;
        let tracker = TaskTracker::new();
        let token = shared.shutdown.clone();
        // The admin API outlives the drain (so `/ready` can say 503 and
        // `/status` can be watched) and stops when this function returns.
        let admin_stop = CancellationToken::new();
        // Also stops the admin thread if this future is dropped unfinished.
        let _admin_guard = admin_stop.clone().drop_guard();
        let admin_thread = admin
            .map(|l| admin::spawn(l, shared.clone(), admin_stop.clone()))
            .transpose()?;
        shared.accepting.store(true, Ordering::Relaxed);
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
        shared.writers.stop();
        admin_stop.cancel();
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
        // 128 random bits do not collide in practice; the registry checks anyway.
        let token = loop {
            let token = Token::random();
            if shared.sessions.get(&token).is_none() {
                break token;
            }
        };
        let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
        let session = Arc::new(Session::new(id, token, peer, stream, shared.limits.clone()));
        if !shared.sessions.insert(session.clone()) {
            tracing::warn!("session token collision; dropping the connection");
            continue;
        }
        shared.stats.connection_opened();
        let conn = Connection::new(session, shared.clone(), Some(permit));
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
