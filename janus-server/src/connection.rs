//! One client connection: reads its frames, writes its queue, keeps its heartbeat.
//!
//! Each connection is a single task over the socket (no reader/writer split,
//! no per-connection buffers allocated up front): it waits on whichever of
//! "bytes to read", "frames queued", "socket writable again", the heartbeat
//! timer and shutdown comes first. Everything that must survive a
//! cancelled `select!` branch (the read buffer, partially written frames,
//! the codec state) lives in [`Connection`], never in locals.
//!
//! Writing is normally done by the writer threads ([`crate::writer`]); the
//! task writes only when the socket was full (it waits for writability,
//! writes the backlog and hands the socket back) or when the connection is
//! closing. Either way everything queued goes out in `writev`s of up to
//! [`crate::session::MAX_IOVECS`] frames, a partial write keeps its position
//! by advancing the front `Bytes`, and control frames (hello, `ACK`, errors,
//! `PING`) are written alone (PROTOCOL P9).
//!
//! Closing: after an error that closes (P7), a one-shot `PUBLISH`, a slow
//! consumer, a kick or shutdown, the connection first unsubscribes (so no new
//! deliveries arrive), writes what is queued, then half-closes and reads the
//! peer's remaining bytes for a moment, so the final error frame is not
//! destroyed by a TCP reset.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use janus_core::{
    ClientMessage, ErrorCode, ProtocolError, Publish, ServerCodec, ServerMessage, Timestamp,
};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{sleep_until, Instant, Sleep};
use tokio_util::codec::Decoder;

use crate::session::{write_run, CloseReason, Outgoing, Session, SessionHandle};
use crate::Shared;

/// Most reads handled per wakeup before giving other tasks a turn.
const READS_PER_WAKEUP: usize = 16;

/// How long a closing connection waits for the peer to read its last frames.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Where the connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Reading requests and writing deliveries.
    Open,
    /// No more reading or new deliveries: write what is queued, then close.
    Finishing,
}

/// The state of one client connection.
pub(crate) struct Connection {
    session: Arc<Session>,
    shared: Arc<Shared>,
    codec: ServerCodec,
    /// Bytes read but not yet decoded; empty (unallocated) between requests.
    read_buf: BytesMut,
    /// Frames taken from the session queue and not yet completely written.
    pending: VecDeque<Outgoing>,
    phase: Phase,
    /// When the heartbeat was last checked or a `PING` queued.
    heartbeat_checked: Instant,
    last_read: Instant,
    /// When a finishing connection gives up on a peer that does not read.
    finish_deadline: Option<Instant>,
    /// Whether a `server_shutdown` frame has been queued.
    shutdown_sent: bool,
    _permit: Option<OwnedSemaphorePermit>,
}

impl Connection {
    /// A connection around an accepted socket whose session is registered.
    pub(crate) fn new(
        session: Arc<Session>,
        shared: Arc<Shared>,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Self {
        let now = Instant::now();
        let codec = ServerCodec::new(shared.config.max_frame);
        Self {
            session,
            shared,
            codec,
            read_buf: BytesMut::new(),
            pending: VecDeque::new(),
            phase: Phase::Open,
            heartbeat_checked: now,
            last_read: now,
            finish_deadline: None,
            shutdown_sent: false,
            _permit: permit,
        }
    }

    /// Serves the connection until it closes. Never returns an error: what
    /// goes wrong on one connection ends that connection and is logged.
    pub(crate) async fn run(mut self) {
        let hello = ServerMessage::Hello {
            timestamp: Timestamp::now(),
            token: self.session.token.to_string(),
        };
        self.session.push_control(hello.to_bytes());
        if let Err(e) = self.serve().await {
            tracing::debug!(peer = %self.session.peer, error = %e, "connection ended with an error");
        }
        self.cleanup();
        if self.phase == Phase::Finishing {
            self.linger().await;
        }
    }

    async fn serve(&mut self) -> io::Result<()> {
        let mut timer: Pin<Box<Sleep>> = Box::pin(sleep_until(self.next_deadline()));
        // Created once: a fresh `cancelled()` per loop turn would register and
        // deregister with the token's waiter list, a lock shared by every
        // connection, on every wakeup.
        let cancelled = self.shared.shutdown.clone().cancelled_owned();
        tokio::pin!(cancelled);
        loop {
            self.flush()?;
            if self.phase == Phase::Finishing
                && self.pending.is_empty()
                && self.session.drained_by_task()
            {
                return Ok(());
            }
            let want_write = !self.pending.is_empty();
            let reading = self.phase == Phase::Open;
            tokio::select! {
                biased;
                () = &mut cancelled, if !self.shutdown_sent => {
                    self.begin_shutdown();
                }
                r = self.session.stream.writable(), if want_write => r?,
                _ = self.session.woken(), if !want_write => {}
                r = self.session.stream.readable(), if reading => {
                    r?;
                    self.read_ready()?;
                }
                _ = &mut timer => {
                    if self.on_timer() {
                        return Ok(());
                    }
                    timer.as_mut().reset(self.next_deadline());
                }
            }
            if self.finish_deadline.is_some() && timer.deadline() > self.next_deadline() {
                timer.as_mut().reset(self.next_deadline());
            }
        }
    }

    /// The next time the timer must look at this connection.
    fn next_deadline(&self) -> Instant {
        let mut next = self.last_activity() + self.shared.config.heartbeat;
        if let Some(idle) = self.shared.config.idle_timeout {
            next = next.min(self.last_read + idle);
        }
        if let Some(deadline) = self.finish_deadline {
            next = next.min(deadline);
        }
        next
    }

    /// Handles a timer expiry; returns `true` when the connection must end now.
    fn on_timer(&mut self) -> bool {
        let now = Instant::now();
        if self.finish_deadline.is_some_and(|d| now >= d) {
            tracing::debug!(peer = %self.session.peer, "closing: peer did not read its last frames in time");
            return true;
        }
        if self.phase == Phase::Open {
            if let Some(idle) = self.shared.config.idle_timeout {
                if now >= self.last_read + idle {
                    tracing::debug!(peer = %self.session.peer, "closing idle connection");
                    self.finish();
                    return false;
                }
            }
        }
        if now >= self.last_activity() + self.shared.config.heartbeat && self.pending.is_empty() {
            self.session.push_control(ServerMessage::Ping.to_bytes());
            // Counts as sending something; the write itself updates it again.
            self.heartbeat_checked = now;
        }
        false
    }

    /// The later of the last write (by anyone) and the last `PING` queued.
    fn last_activity(&self) -> Instant {
        let wrote = Instant::now()
            .checked_sub(self.session.since_last_write())
            .unwrap_or(self.heartbeat_checked);
        wrote.max(self.heartbeat_checked)
    }

    /// Stops reading and taking deliveries; what is queued still goes out.
    fn finish(&mut self) {
        if self.phase == Phase::Finishing {
            return;
        }
        self.phase = Phase::Finishing;
        self.unsubscribe_all();
        self.session.request_handover();
        self.read_buf = BytesMut::new();
        let limit = if self.shared.shutdown.is_cancelled() {
            self.shared.config.shutdown_timeout
        } else {
            CLOSE_GRACE
        };
        self.finish_deadline = Some(Instant::now() + limit);
    }

    fn begin_shutdown(&mut self) {
        self.shutdown_sent = true;
        self.finish();
        self.finish_deadline = Some(Instant::now() + self.shared.config.shutdown_timeout);
        self.send_error(&ProtocolError::new(
            ErrorCode::ServerShutdown,
            "the server is shutting down",
        ));
    }

    /// Queues an error frame, counts it, and starts closing if the code says so.
    fn send_error(&mut self, err: &ProtocolError) {
        self.shared.stats.error_sent(err.code);
        self.session
            .push_control(ServerMessage::error(err, Timestamp::now()).to_bytes());
        if err.close {
            self.finish();
        }
    }

    /// Reads what the socket has, decoding and handling each complete frame.
    fn read_ready(&mut self) -> io::Result<()> {
        let mut chunk = [0u8; 8192];
        for _ in 0..READS_PER_WAKEUP {
            if self.phase != Phase::Open {
                return Ok(());
            }
            match read_once(&self.session.stream, &mut chunk) {
                Ok(0) => {
                    self.decode_frames(true);
                    self.finish();
                    return Ok(());
                }
                Ok(n) => {
                    self.last_read = Instant::now();
                    self.read_buf.extend_from_slice(&chunk[..n]);
                    self.decode_frames(false);
                    if n < chunk.len() {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        if self.read_buf.is_empty() && self.read_buf.capacity() > 0 {
            // Idle connections hold no read buffer.
            self.read_buf = BytesMut::new();
        }
        Ok(())
    }

    fn decode_frames(&mut self, eof: bool) {
        while self.phase == Phase::Open {
            let item = if eof {
                self.codec.decode_eof(&mut self.read_buf)
            } else {
                self.codec.decode(&mut self.read_buf)
            };
            match item {
                Ok(Some(Ok(message))) => self.handle(message),
                Ok(Some(Err(err))) => self.send_error(&err),
                Ok(None) => return,
                Err(err) => {
                    match err.protocol_error() {
                        Some(p) => self.send_error(&p.closing()),
                        None => self.finish(),
                    }
                    return;
                }
            }
        }
    }

    fn handle(&mut self, message: ClientMessage) {
        match message {
            ClientMessage::Subscribe(topic) => self.subscribe(topic),
            ClientMessage::Unsubscribe(topic) => {
                if self.session.subscriptions().remove(topic.as_str()) {
                    self.shared.topics.unsubscribe(&topic, self.session.id);
                }
            }
            ClientMessage::Ping | ClientMessage::Pong => {}
            ClientMessage::Publish { publish, one_shot } => self.publish(&publish, one_shot),
            ClientMessage::Resume(_) => self.send_error(&ProtocolError::new(
                ErrorCode::UnknownSession,
                "no detached session with that token; continuing as a fresh session",
            )),
        }
    }

    fn subscribe(&mut self, topic: String) {
        let mut subs = self.session.subscriptions();
        if !subs.contains(topic.as_str()) && subs.len() >= self.shared.config.max_subscriptions {
            drop(subs);
            let limit = self.shared.config.max_subscriptions;
            self.send_error(&ProtocolError::new(
                ErrorCode::TooManySubscriptions,
                format!("a session may hold at most {limit} subscriptions"),
            ));
            return;
        }
        let session = &self.session;
        self.shared
            .topics
            .subscribe(&topic, session.id, SessionHandle(session.clone()), || {
                session.push_control(Bytes::from_static(b"ACK\x01"));
            });
        subs.insert(topic.into_boxed_str());
    }

    fn publish(&mut self, publish: &Publish, one_shot: bool) {
        let ip = self.session.peer.ip();
        let keyed =
            matches!((&self.shared.config.publish_key, &publish.key), (Some(k), Some(p)) if k == p);
        if !keyed && !self.shared.config.may_publish(ip) {
            self.send_error(
                &ProtocolError::new(ErrorCode::NotAllowed, format!("{ip} may not publish"))
                    .closing(),
            );
            return;
        }
        self.shared.publish(publish);
        if one_shot {
            // The 2009 publisher connection is one-shot (PROTOCOL P5).
            self.finish();
        } else {
            self.session.push_control(Bytes::from_static(b"ACK\x01"));
        }
    }

    fn unsubscribe_all(&self) {
        let topics: Vec<Box<str>> = self.session.subscriptions().drain().collect();
        for topic in topics {
            self.shared.topics.unsubscribe(&topic, self.session.id);
        }
    }

    /// When the task owns the socket, writes as much as it takes without
    /// blocking (otherwise the writer threads are on it).
    fn flush(&mut self) -> io::Result<()> {
        loop {
            if self.pending.is_empty() {
                let (owned, close) = self.session.take_for_task(&mut self.pending);
                if !owned {
                    return Ok(());
                }
                if let Some(reason) = close {
                    self.close_for(&reason);
                }
                if self.pending.is_empty() {
                    return Ok(());
                }
            }
            match write_run(&self.session.stream, &self.pending) {
                Ok(n) => self.session.consume_written(&mut self.pending, n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    fn close_for(&mut self, reason: &CloseReason) {
        if self.phase == Phase::Finishing && self.shutdown_sent {
            return;
        }
        let err = ProtocolError::new(reason.code(), reason.reason(self.shared.config.queue_limit));
        if *reason == CloseReason::SlowConsumer {
            tracing::info!(peer = %self.session.peer, token = %self.session.token, "disconnecting slow consumer");
            // The queue was emptied when the policy fired; say so now, not after a backlog.
            self.pending.retain(|o| o.alone);
        }
        self.finish();
        self.shared.stats.error_sent(err.code);
        self.pending.push_back(Outgoing {
            frame: ServerMessage::error(&err, Timestamp::now()).to_bytes(),
            alone: true,
            enqueued: 0,
        });
    }

    /// Removes the session from everything shared.
    fn cleanup(&mut self) {
        self.unsubscribe_all();
        self.shared.sessions.remove(&self.session.token);
        self.shared.stats.connection_closed();
        let left = self.pending.len() + self.session.discard_queued();
        if left > 0 {
            tracing::debug!(peer = %self.session.peer, frames = left, "closed with frames unwritten");
        }
        self.pending.clear();
    }

    /// Half-closes and drains the peer for a moment so the last frames are not
    /// destroyed by a reset (closing with unread input sends RST).
    async fn linger(&mut self) {
        let _ = socket2::SockRef::from(&self.session.stream).shutdown(std::net::Shutdown::Write);
        // On the heap, and only while lingering: an array here would sit in
        // every connection's future for its whole life.
        let mut sink = vec![0u8; 4096];
        let drain = async {
            loop {
                if self.session.stream.readable().await.is_err() {
                    return;
                }
                match self.session.stream.try_read(&mut sink) {
                    Ok(0) => return,
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => return,
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
    }
}

/// One `recv` into `buf`. A short read means the socket was drained, so the
/// readiness tokio remembers is cleared at the same time: otherwise the next
/// wait would report readable at once and cost a `recv` that only returns
/// `EAGAIN` (one wasted syscall per request). Data arriving after the read
/// sets readiness again (edge-triggered, and tokio only clears a readiness it
/// has not seen change).
fn read_once(stream: &tokio::net::TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    use std::io::Read;
    let sock = socket2::SockRef::from(stream);
    let mut got = 0;
    let result = stream.try_io(tokio::io::Interest::READABLE, || {
        let n = (&*sock).read(buf)?;
        got = n;
        if n > 0 && n < buf.len() {
            Err(io::ErrorKind::WouldBlock.into())
        } else {
            Ok(n)
        }
    });
    match result {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock && got > 0 => Ok(got),
        other => other,
    }
}

/// Answers a connection the server cannot take, without keeping it.
pub(crate) fn refuse(stream: &std::net::TcpStream, reason: &str) {
    use std::io::Write;
    let err = ProtocolError::new(ErrorCode::NotAllowed, reason);
    let frame = ServerMessage::error(&err, Timestamp::now()).to_bytes();
    let _ = stream.set_nonblocking(true);
    let _ = (&*stream).write(&frame);
    let _ = stream.shutdown(std::net::Shutdown::Write);
}

/// Publishes a message the way a client `PUBLISH` does; used by connections and the admin API.
pub(crate) fn publish_frame(publish: &Publish) -> impl FnOnce() -> Bytes + '_ {
    let timestamp = Timestamp::now();
    move || publish.encode_delivery(timestamp)
}
