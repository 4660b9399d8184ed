//! One client connection: reads its requests, answers them, and waits on its
//! socket when the socket is full.
//!
//! Each connection is one task. It waits, in one `poll_fn`, for the first of:
//! the socket readable (when reading is allowed), the socket writable (when
//! its session's write token is parked on a full socket), or a wake-up from
//! whoever changed the session's outbound side (a writer that parked or
//! finished, a kick, a slow-consumer cut, the housekeeping sweep). The task
//! holds no timer, no per-connection buffer while idle and no future per
//! event source: an idle subscriber costs its `Session`, this small state
//! and the socket.
//!
//! Reading is allowed while the session is open and under its budget: a
//! client that sends requests but does not read the answers stops being
//! read once the answers fill its budget, and is read again when it has
//! drained to half (protocol P8). Replies (`ACK`, errors) are queued on the
//! session's outbound side like everything else and, when nothing else is
//! being written, written at once by this task; deliveries are written by
//! the writer threads.
//!
//! Work per wake-up is bounded: at most [`READS_PER_WAKEUP`] reads, and a
//! publisher that pipelines a burst is paused (the rest stays in the read
//! buffer) once its publishes have queued [`FANOUT_BUDGET`] deliveries, so
//! that every other connection gets its turn.
//!
//! Closing: an error that closes (P7), a one-shot `PUBLISH`, the end of the
//! client's stream, the idle timeout, a kick, a slow-consumer cut or
//! shutdown all close the session's outbound side; once its final frame is
//! written the task half-closes and reads the peer's remaining bytes for a
//! moment, so that the final frame is not destroyed by a TCP reset. An
//! aborted session (write deadline, socket error) is dropped at once.

use std::future::{poll_fn, Future};
use std::io;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use janus_core::ws::{self, WsDecoder};
use janus_core::{
    ClientMessage, CodecError, ErrorCode, ProtocolError, Publish, Resume, ServerCodec,
    ServerMessage, Timestamp,
};
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::codec::Decoder;

use crate::broker::Unavailable;
use crate::cluster::Pins;
use crate::outbound::{End, Flushed, Push, Tally};
use crate::session::{Session, SessionHandle, Socket, Transport};
use crate::Shared;

/// Most reads handled per wake-up before other connections get a turn.
const READS_PER_WAKEUP: usize = 16;

/// Deliveries a connection's publishes may queue per wake-up before it
/// yields to the other connections.
const FANOUT_BUDGET: usize = 64 * 1024;

/// Writes the task makes itself for a reply before leaving the rest to the writers.
const IN_PLACE_WRITES: usize = 2;

/// How long a closing connection reads what its peer still sends.
const LINGER: Duration = Duration::from_secs(2);

/// The same while the server shuts down: a client that does not close its
/// side must not hold the shutdown up for long.
const LINGER_DRAINING: Duration = Duration::from_millis(250);

/// What woke the connection task.
enum Event {
    /// The socket has bytes (or an error) to read.
    Readable,
    /// The socket drained while the write token was parked on it.
    Writable,
    /// Buffered requests can be decoded again.
    Backlog,
    /// Everything, the final frame included, is written.
    Done,
    /// The session was aborted.
    Aborted,
    /// The socket failed, or was given up on (write deadline): the
    /// connection is lost, the session may wait for a resume.
    Lost,
    /// A resume on another connection took the session over.
    TakenOver,
    /// The broker answered this connection's publish (cluster mode).
    Published(Result<(), Unavailable>),
    /// This connection's resume is prepared (cluster mode).
    Prepared(Pins),
}

/// How the connection ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// The session is done: half-close and let the peer read the last frames.
    Graceful,
    /// The session is aborted: drop the socket now (with a reset).
    Abort,
    /// The connection is lost: the session waits for a resume if it is worth
    /// keeping; the socket is dropped with a reset.
    Lost,
    /// The session belongs to another connection now: only the socket goes.
    TakenOver,
}

/// What a connection's decoder found in the client's bytes.
enum Inbound {
    /// A request, or a mistake that keeps the connection open.
    Request(Result<ClientMessage, ProtocolError>),
    /// A WebSocket ping, to answer with a pong carrying its payload.
    Ping(Bytes),
    /// A WebSocket pong, or an empty text message: the client is alive.
    Alive,
    /// A WebSocket close: answer it and close.
    Close,
}

/// The client side's framing: P1 over TCP, or WebSocket messages (X2).
enum Codec {
    Tcp(ServerCodec),
    Ws(WsDecoder),
}

impl Codec {
    fn new(transport: Transport, max_frame: usize) -> Self {
        match transport {
            Transport::Tcp => Codec::Tcp(ServerCodec::new(max_frame)),
            Transport::WebSocket => Codec::Ws(WsDecoder::server(max_frame)),
        }
    }

    /// The next request (or WebSocket event) in `buf`, if one is complete.
    fn decode(&mut self, buf: &mut BytesMut, eof: bool) -> Result<Option<Inbound>, CodecError> {
        let message = match self {
            Codec::Tcp(codec) => {
                let item = if eof {
                    codec.decode_eof(buf)?
                } else {
                    codec.decode(buf)?
                };
                return Ok(item.map(Inbound::Request));
            }
            Codec::Ws(decoder) => match decoder.decode(buf)? {
                Some(message) => message,
                None => {
                    if eof {
                        // A partial frame from a client that went away is not a request.
                        buf.clear();
                    }
                    return Ok(None);
                }
            },
        };
        Ok(Some(match message {
            ws::Message::Text(text) => {
                // The decoder checked it is UTF-8.
                let text = std::str::from_utf8(&text).unwrap_or_default().trim();
                if text.is_empty() {
                    Inbound::Alive
                } else {
                    Inbound::Request(ClientMessage::parse(text))
                }
            }
            ws::Message::Ping(payload) => Inbound::Ping(payload),
            ws::Message::Pong => Inbound::Alive,
            ws::Message::Close(_) => Inbound::Close,
        }))
    }
}

/// The state of one client connection.
pub(crate) struct Connection {
    /// This connection's id (its first session's id): see [`Session::owned_by`].
    id: u64,
    session: Arc<Session>,
    socket: Socket,
    /// The client's address (a resumed session keeps the address it was created from).
    peer: std::net::SocketAddr,
    shared: Arc<Shared>,
    codec: Codec,
    /// Bytes read but not yet decoded; unallocated between requests.
    read_buf: BytesMut,
    /// The client's stream ended (or failed): nothing more will be read.
    eof: bool,
    /// Complete requests wait in `read_buf` (the fan-out budget ran out, or
    /// the client went over its budget).
    backlog: bool,
    /// The socket failed or the session was aborted: what the client sent
    /// before is still decoded (a 2009 publisher's reset must not lose its
    /// publish), though nothing more can be written.
    salvaging: bool,
    /// In a cluster: what this connection waits for the broker to do
    /// before it reads on. Boxed: it is rare, and every connection's task
    /// carries this field.
    pending: Option<Box<Pending>>,
    _permit: Option<OwnedSemaphorePermit>,
}

/// What a connection in a cluster waits for. Nothing more is read
/// meanwhile, so one connection's requests keep their order.
enum Pending {
    /// A publish on its way to the broker, and whether it came on a
    /// one-shot `PUBLISH`.
    Publish(
        Pin<Box<dyn Future<Output = Result<(), Unavailable>> + Send>>,
        bool,
    ),
    /// A positional resume being prepared ([`crate::cluster::Cluster::prepare_resume`]),
    /// with its session token and topic positions.
    Resume(
        Pin<Box<dyn Future<Output = Pins> + Send>>,
        janus_core::Token,
        Vec<janus_core::TopicPosition>,
    ),
}

impl Connection {
    /// A connection around an accepted socket whose session is registered.
    pub(crate) fn new(
        session: Arc<Session>,
        socket: Socket,
        shared: Arc<Shared>,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Self {
        let codec = Codec::new(session.transport, shared.config.max_frame);
        Self {
            id: session.id,
            peer: session.peer,
            session,
            socket,
            shared,
            codec,
            read_buf: BytesMut::new(),
            eof: false,
            backlog: false,
            salvaging: false,
            pending: None,
            _permit: permit,
        }
    }

    /// Bytes the client sent before the connection was set up (after a
    /// WebSocket handshake); they are decoded first.
    pub(crate) fn with_input(mut self, input: &[u8]) -> Self {
        self.read_buf.extend_from_slice(input);
        self.backlog = !input.is_empty();
        self
    }

    /// Sends the hello (P2) at once, from the accept loop: the client waits
    /// for it before it says anything, so it must not wait behind the other
    /// connections accepted in the same burst.
    pub(crate) fn greet(&mut self) {
        let hello = ServerMessage::Hello {
            timestamp: Timestamp::now(),
            token: self.session.token.to_string(),
        };
        self.reply(hello.to_bytes());
    }

    /// Serves the connection until it closes. What goes wrong on one
    /// connection ends that connection and is logged, nothing more.
    ///
    /// Not an `async fn`: one keeps its arguments twice in its state (once
    /// as passed, once as the body's local), and this future is what every
    /// connection's task holds for its whole life. Written this way the
    /// task holds the connection once (a 384-byte task instead of 640).
    #[expect(
        clippy::manual_async_fn,
        reason = "an async fn would hold the connection twice"
    )]
    pub(crate) fn run(mut self) -> impl Future<Output = ()> + Send {
        async move {
            let ending = self.serve().await;
            if let Some(Pending::Publish(publish, _)) = self.pending.take().map(|p| *p) {
                // The client is gone or closed; its publish still happens.
                tokio::spawn(publish);
            }
            match ending {
                Ending::Graceful | Ending::Abort => self.shared.forget(&self.session),
                Ending::Lost => self.shared.connection_lost(&self.session),
                Ending::TakenOver => {}
            }
            match ending {
                // Boxed: the lingering futures (a timer among them) would
                // otherwise sit in every connection's task for its whole life.
                Ending::Graceful => Box::pin(self.linger()).await,
                Ending::Abort | Ending::Lost | Ending::TakenOver => {
                    // A reset frees the kernel's buffers for this socket at once.
                    let _ = socket2::SockRef::from(&*self.socket).set_linger(Some(Duration::ZERO));
                }
            }
            self.shared.connection_closed(self.peer);
        }
    }

    async fn serve(&mut self) -> Ending {
        loop {
            match poll_fn(|cx| self.poll_event(cx)).await {
                Event::Readable => self.read_ready(),
                Event::Backlog => {
                    self.decode_frames();
                    self.close_at_eof();
                    if self.backlog {
                        // Let every other connection have its turn first.
                        tokio::task::yield_now().await;
                    }
                }
                Event::Writable => {
                    if self.session.outbound.unpark() {
                        self.shared.writers.queue().schedule(self.session.clone());
                    }
                }
                Event::Done => return Ending::Graceful,
                Event::Aborted => {
                    self.salvage();
                    return Ending::Abort;
                }
                Event::Lost => {
                    self.salvage();
                    return Ending::Lost;
                }
                Event::TakenOver => return Ending::TakenOver,
                Event::Published(result) => {
                    self.published(result);
                    self.decode_frames();
                    self.close_at_eof();
                }
                Event::Prepared(pins) => {
                    if let Some(Pending::Resume(_, token, topics)) = self.pending.take().map(|p| *p)
                    {
                        self.resume_at(token, &topics);
                    }
                    // Subscribed (or given up): the topics need no pin any more.
                    drop(pins);
                    self.decode_frames();
                    self.close_at_eof();
                }
            }
        }
    }

    /// What to do next; registers for every wake-up that could change it.
    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Event> {
        self.session.register_task(cx.waker());
        if !self.session.owned_by(self.id) {
            return Poll::Ready(Event::TakenOver);
        }
        let status = self.session.outbound.status();
        match status.end {
            End::Done => return Poll::Ready(Event::Done),
            End::Aborted => return Poll::Ready(Event::Aborted),
            End::Open | End::Closing if !status.attached => return Poll::Ready(Event::Lost),
            End::Open | End::Closing => {}
        }
        if status.parked && self.socket.poll_write_ready(cx).is_ready() {
            return Poll::Ready(Event::Writable);
        }
        if let Some(pending) = &mut self.pending {
            // Nothing is read until the broker has done its part.
            match &mut **pending {
                Pending::Publish(publish, _) => {
                    if let Poll::Ready(result) = publish.as_mut().poll(cx) {
                        return Poll::Ready(Event::Published(result));
                    }
                }
                Pending::Resume(prepared, ..) => {
                    if let Poll::Ready(pins) = prepared.as_mut().poll(cx) {
                        return Poll::Ready(Event::Prepared(pins));
                    }
                }
            }
        } else if status.end == End::Open && self.session.outbound.may_read() {
            if self.backlog {
                return Poll::Ready(Event::Backlog);
            }
            if !self.eof && self.socket.poll_read_ready(cx).is_ready() {
                return Poll::Ready(Event::Readable);
            }
        }
        Poll::Pending
    }

    /// Whether requests may be taken from the client now.
    fn reading(&self) -> bool {
        self.pending.is_none()
            && (self.salvaging
                || (self.session.outbound.status().end == End::Open
                    && self.session.outbound.may_read()))
    }

    /// The session is aborted (often because the peer reset the connection
    /// before reading anything): handles what it sent before the end.
    fn salvage(&mut self) {
        if self.eof {
            return;
        }
        self.salvaging = true;
        self.backlog = false;
        self.read_ready();
        if !self.eof {
            self.eof = true;
            self.decode_frames();
        }
    }

    /// Reads what the socket has, decoding and handling each complete request.
    fn read_ready(&mut self) {
        let mut chunk = [0u8; 8192];
        for _ in 0..READS_PER_WAKEUP {
            if self.eof || self.backlog || !self.reading() {
                break;
            }
            match read_once(&self.socket, &mut chunk) {
                Ok(0) => {
                    self.eof = true;
                    self.decode_frames();
                    self.close_at_eof();
                }
                Ok(n) => {
                    self.read_buf.extend_from_slice(&chunk[..n]);
                    self.decode_frames();
                    if n < chunk.len() {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // Bytes that arrived before a reset still count (P5): a
                    // 2009 publisher closes without reading, often with a reset.
                    tracing::debug!(peer = %self.peer, error = %e, "read failed");
                    self.eof = true;
                    self.decode_frames();
                    if !self.salvaging {
                        self.shared.give_up_connection(&self.session);
                    }
                    return;
                }
            }
        }
        if self.read_buf.is_empty() && self.read_buf.capacity() > 0 {
            // Idle connections hold no read buffer.
            self.read_buf = BytesMut::new();
        }
    }

    /// Once the client's stream has ended and every request in it is handled,
    /// the session closes (after writing what is queued).
    fn close_at_eof(&mut self) {
        if self.eof && !self.backlog && self.pending.is_none() {
            self.close(None);
        }
    }

    /// Decodes and handles buffered requests until none is complete, the
    /// session stops being readable, or this wake-up's fan-out budget is spent.
    fn decode_frames(&mut self) {
        self.backlog = false;
        let mut work = 0;
        loop {
            if self.pending.is_some() {
                // Decoding goes on once the broker has answered.
                return;
            }
            if !self.reading() {
                // Over budget or closing: what is buffered waits (or is dropped on close).
                self.backlog = !self.read_buf.is_empty();
                return;
            }
            if work >= FANOUT_BUDGET {
                self.backlog = true;
                return;
            }
            match self.codec.decode(&mut self.read_buf, self.eof) {
                Ok(Some(Inbound::Request(Ok(message)))) => {
                    self.session.touch();
                    work += 1 + self.handle(message);
                }
                Ok(Some(Inbound::Request(Err(err)))) => {
                    self.session.touch();
                    self.send_error(&err);
                }
                Ok(Some(Inbound::Ping(payload))) => {
                    self.session.touch();
                    self.send_raw(ws::pong_frame(&payload));
                }
                Ok(Some(Inbound::Alive)) => self.session.touch(),
                Ok(Some(Inbound::Close)) => {
                    // The close handshake: answer, then close after what is queued.
                    self.close_raw(Some(ws::close_frame(ws::close::NORMAL, "")));
                    return;
                }
                Ok(None) => return,
                Err(err) => {
                    match err.protocol_error() {
                        Some(p) => self.send_error(&p.closing()),
                        None => self.close(None),
                    }
                    return;
                }
            }
        }
    }

    /// Handles one request; returns the deliveries it queued.
    fn handle(&mut self, message: ClientMessage) -> usize {
        match message {
            ClientMessage::Subscribe(topic) => self.subscribe(topic),
            ClientMessage::Unsubscribe(topic) => {
                let mut subs = self.session.subscriptions();
                if subs.remove(&topic) {
                    self.shared.topics.unsubscribe(&topic, self.session.id);
                }
            }
            ClientMessage::Ping | ClientMessage::Pong => {}
            ClientMessage::Options { offsets } => {
                if let Some(on) = offsets {
                    self.session.set_offsets(on);
                }
                self.reply(Bytes::from_static(b"ACK\x01"));
            }
            ClientMessage::Publish { publish, one_shot } => {
                return self.publish(&publish, one_shot);
            }
            ClientMessage::Resume(Resume::Token(token)) => self.resume_token(&token),
            ClientMessage::Resume(Resume::Positions { token, topics }) => {
                self.resume_positions(&token, &topics);
            }
        }
        0
    }

    /// The token form of resume (X1): re-attaches a session that lost its
    /// connection less than the session TTL ago, with what was queued for it.
    fn resume_token(&mut self, token: &str) {
        let shared = self.shared.clone();
        let stats = &shared.stats;
        stats.resumes.fetch_add(1, Ordering::Relaxed);
        let Some(old) = self.resumable_session(token) else {
            stats.resumes_unknown.fetch_add(1, Ordering::Relaxed);
            self.send_error(&ProtocolError::new(
                ErrorCode::UnknownSession,
                "no session to resume with that token (it expired, or resume was not \
                 the connection's first request); continuing as a fresh session",
            ));
            return;
        };
        let fresh = self.take_over(old);
        shared.forget(&fresh);
        let token = self.session.token.to_string();
        let transport = self.session.transport;
        let attached = self
            .session
            .outbound
            .attach(self.socket.clone(), |recovered, missed| {
                let resumed = ServerMessage::Resumed {
                    timestamp: Timestamp::now(),
                    token,
                    recovered,
                    missed: missed as u64,
                };
                transport.frame(resumed.to_bytes())
            });
        let counter = if attached.overflowed {
            &stats.resumes_not_recovered
        } else {
            &stats.resumes_recovered
        };
        counter.fetch_add(1, Ordering::Relaxed);
        stats
            .messages_replayed
            .fetch_add(attached.missed as u64, Ordering::Relaxed);
        tracing::debug!(peer = %self.peer, token = %self.session.token, missed = attached.missed,
            recovered = !attached.overflowed, "session resumed");
        if attached.claimed {
            self.write_now();
        }
    }

    /// The positional form of resume (X1): session `token` (replacing one
    /// that still exists, or new), subscribed to `topics`, with every message
    /// published on them after the client's positions replayed first — or,
    /// if the history does not hold all of them, none (`recovered: false`).
    fn resume_positions(&mut self, token: &str, topics: &[janus_core::TopicPosition]) {
        let shared = self.shared.clone();
        let stats = &shared.stats;
        stats.resumes.fetch_add(1, Ordering::Relaxed);
        let fresh = self.session.outbound.status();
        let untouched = fresh.frames == 0
            && !fresh.parked
            && fresh.end == End::Open
            && self.session.subscriptions().is_empty();
        let (Ok(token), true) = (token.parse::<janus_core::Token>(), untouched) else {
            stats.resumes_unknown.fetch_add(1, Ordering::Relaxed);
            self.send_error(&ProtocolError::new(
                ErrorCode::UnknownSession,
                "resume needs a session token (32 lowercase hex digits) and must be the \
                 connection's first request; continuing as a fresh session",
            ));
            return;
        };
        if topics.len() > shared.config.max_subscriptions {
            let limit = shared.config.max_subscriptions;
            self.send_error(&ProtocolError::new(
                ErrorCode::TooManySubscriptions,
                format!("a session may hold at most {limit} subscriptions"),
            ));
            return;
        }
        if let Some(prepared) = shared
            .cluster()
            .and_then(|cluster| cluster.prepare_resume(&shared, topics))
        {
            // This node's history must first reach back to the client's
            // positions; the resume goes on once it does.
            let prepared = Box::pin(prepared);
            self.pending = Some(Box::new(Pending::Resume(prepared, token, topics.to_vec())));
            return;
        }
        self.resume_at(token, topics);
    }

    /// The positional resume itself, once the topics' histories here reach
    /// back to the client's positions (or never will).
    fn resume_at(&mut self, token: janus_core::Token, topics: &[janus_core::TopicPosition]) {
        let shared = self.shared.clone();
        let stats = &shared.stats;
        if self.session.outbound.status().end != End::Open {
            // Kicked, or shut down, while the resume was prepared.
            return;
        }
        // Whatever session had this token is replaced (its connection lets
        // it go): the history, not its queue, says what the client missed.
        // It leaves its topics only once the new session has joined them, so
        // no topic's stream ends in between.
        let session = Arc::new(Session::new(
            self.id,
            token,
            self.peer,
            self.socket.clone(),
            self.session.outbound.budget(),
            self.session.transport,
        ));
        session.set_offsets(true);
        let old = shared.sessions.replace(session.clone());
        shared.registered(&session);
        if let Some(old) = &old {
            old.take_over(self.id);
            old.outbound.detach();
            old.wake();
        }
        let fresh = std::mem::replace(&mut self.session, session);
        fresh.outbound.detach();
        shared.forget(&fresh);
        let (recovered, claimed) = self.recover(topics);
        if let Some(old) = old.filter(|o| o.id != self.session.id) {
            shared.forget(&old);
        }
        let counter = if recovered {
            &stats.resumes_recovered
        } else {
            &stats.resumes_not_recovered
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if claimed {
            self.write_now();
        }
    }

    /// Under the locks of every topic at once: subscribes, then queues
    /// `resumed` and what the client missed (if all of it can be replayed
    /// and fits its budget), so no publish can fall between replay and
    /// live. A topic the topic limit refuses is not recovered, and gets
    /// its `unavailable` error after `resumed`. Returns whether everything
    /// missed was replayed, and whether the caller now holds the write token.
    fn recover(&mut self, topics: &[janus_core::TopicPosition]) -> (bool, bool) {
        let shared = &*self.shared;
        let session = &self.session;
        let budget = session.outbound.budget();
        let now = crate::metrics::secs_now();
        // A topic named twice is resumed once, from its first position.
        let mut positions: Vec<&janus_core::TopicPosition> = Vec::with_capacity(topics.len());
        for position in topics {
            if !positions.iter().any(|p| p.topic == position.topic) {
                positions.push(position);
            }
        }
        let cluster = shared.cluster();
        // Lock order: the session's subscriptions, then the topic shards.
        let mut subs = session.subscriptions();
        let names: Vec<&str> = positions.iter().map(|p| p.topic.as_str()).collect();
        let mut locked = shared.topics.lock_topics(&names);
        let mut refused = Vec::new();
        for position in &positions {
            let handle = SessionHandle(session.clone());
            let join = |stream: &mut crate::history::Stream| {
                if let Some(cluster) = cluster {
                    cluster.join(stream, &position.topic, session, false);
                }
            };
            match locked.subscribe(&position.topic, session.id, handle, join) {
                Ok(()) => {
                    subs.insert(position.topic.clone().into_boxed_str());
                }
                Err(limit) => refused.push((position.topic.as_str(), limit)),
            }
        }
        let mut replay: Vec<Bytes> = Vec::new();
        let mut recovered = refused.is_empty();
        for position in &positions {
            let since = locked.state(&position.topic).and_then(|stream| {
                // In a cluster only a followed topic's history runs on
                // without a hole from the cluster's stream.
                if cluster.is_some() && !stream.followed() {
                    return None;
                }
                stream.since(&position.epoch, position.offset, now, &shared.history)
            });
            match since {
                Some(frames) => replay.extend(frames.cloned()),
                None => recovered = false,
            }
        }
        let bytes: usize = replay
            .iter()
            .map(|f| f.len() + crate::outbound::FRAME_OVERHEAD)
            .sum();
        if bytes > budget.bytes / 2 || replay.len() > budget.frames / 2 {
            // More than the client can be sent at once: it resyncs instead.
            recovered = false;
        }
        if !recovered {
            replay.clear();
        }
        let resumed = ServerMessage::Resumed {
            timestamp: Timestamp::now(),
            token: session.token.to_string(),
            recovered,
            missed: replay.len() as u64,
        };
        let transport = session.transport;
        let claimed = session
            .outbound
            .push_control(transport.frame(resumed.to_bytes()))
            .claimed();
        shared
            .stats
            .messages_replayed
            .fetch_add(replay.len() as u64, Ordering::Relaxed);
        let stamp = crate::metrics::stamp_now();
        for frame in &replay {
            session
                .outbound
                .push_delivery(&transport.frame(frame.clone()), stamp, Bytes::new);
        }
        drop(locked);
        drop(subs);
        tracing::debug!(peer = %self.peer, token = %session.token, recovered,
            missed = replay.len(), "session resumed from topic positions");
        let refused: Vec<(String, usize)> = refused
            .into_iter()
            .map(|(topic, limit)| (topic.to_owned(), limit.0))
            .collect();
        for (topic, limit) in refused {
            self.refuse_topic(&topic, limit);
        }
        (recovered, claimed)
    }

    /// The session `token` names, if this connection may take it over: it
    /// exists, is open, is not this connection's own, and this connection
    /// has done nothing yet with its fresh session (resume comes first).
    fn resumable_session(&self, token: &str) -> Option<Arc<Session>> {
        let token: janus_core::Token = token.parse().ok()?;
        let old = self.shared.sessions.get(&token)?;
        let fresh = self.session.outbound.status();
        let untouched = fresh.frames == 0
            && !fresh.parked
            && self.session.subscriptions().is_empty()
            && fresh.end == End::Open;
        // Queued frames are in the form of the transport the session began on.
        let same_transport = old.transport == self.session.transport;
        (old.id != self.session.id
            && old.outbound.status().end == End::Open
            && untouched
            && same_transport)
            .then_some(old)
    }

    /// This connection serves `session` from now on; a connection that served
    /// it before lets it go. Returns the session the connection served until now.
    fn take_over(&mut self, session: Arc<Session>) -> Arc<Session> {
        session.take_over(self.id);
        if session.outbound.detach() {
            // It was still attached to a connection we outlived.
            session.wake();
        }
        std::mem::replace(&mut self.session, session)
    }

    fn subscribe(&mut self, topic: String) {
        let mut subs = self.session.subscriptions();
        if self.session.outbound.status().end != End::Open {
            // Closing: a kick or cut already took the subscriptions away.
            return;
        }
        let known = subs.contains(&topic);
        if !known && subs.len() >= self.shared.config.max_subscriptions {
            drop(subs);
            let limit = self.shared.config.max_subscriptions;
            self.send_error(&ProtocolError::new(
                ErrorCode::TooManySubscriptions,
                format!("a session may hold at most {limit} subscriptions"),
            ));
            return;
        }
        let session = &self.session;
        let cluster = self.shared.cluster();
        let mut claimed = false;
        let subscribed = self.shared.topics.subscribe(
            &topic,
            session.id,
            SessionHandle(session.clone()),
            |stream| {
                // In a cluster, a topic whose broker channel is not confirmed
                // yet answers once it is.
                if cluster.is_some_and(|c| !c.join(stream, &topic, session, true)) {
                    return;
                }
                // Queued under the topic's lock: ordered before any delivery of
                // a publish that starts after the subscription is live, and
                // (for an offset client) naming the offset it starts after.
                let answer = crate::fanout::subscribe_answer(session, &topic, stream);
                claimed = session
                    .outbound
                    .push_control(session.transport.frame(answer))
                    .claimed();
            },
        );
        match subscribed {
            Ok(_) => {
                if !known {
                    subs.insert(topic.into_boxed_str());
                }
                drop(subs);
                if claimed {
                    self.write_now();
                }
            }
            Err(limit) => {
                drop(subs);
                self.refuse_topic(&topic, limit.0);
            }
        }
    }

    /// A subscription to `topic` is refused: the server holds its
    /// maximum of `limit` topics.
    fn refuse_topic(&mut self, topic: &str, limit: usize) {
        self.shared.stats.refused(crate::stats::Refusal::MaxTopics);
        self.send_error(&ProtocolError::new(
            ErrorCode::Unavailable,
            format!(
                "the server holds its maximum of {limit} topics; \
                 the subscription to {topic:?} is refused for now"
            ),
        ));
    }

    fn publish(&mut self, publish: &Publish, one_shot: bool) -> usize {
        let ip = self.peer.ip();
        if !self.shared.may_publish(ip, publish.key.as_deref()) {
            self.send_error(
                &ProtocolError::new(ErrorCode::NotAllowed, format!("{ip} may not publish"))
                    .closing(),
            );
            return 0;
        }
        if let Some(cluster) = self.shared.cluster() {
            let cluster = cluster.clone();
            let publish = publish.clone();
            let pending = async move { cluster.publish(&publish).await.map(|_| ()) };
            self.pending = Some(Box::new(Pending::Publish(Box::pin(pending), one_shot)));
            return 0;
        }
        let reached = crate::fanout::publish(&self.shared, publish);
        if one_shot {
            // The 2009 publisher connection is one-shot (protocol P5).
            self.close(None);
        } else {
            self.reply(Bytes::from_static(b"ACK\x01"));
        }
        reached
    }

    /// The broker took this connection's publish, or could not: `ACK` (X3),
    /// or `unavailable` (P7); a one-shot `PUBLISH` connection closes either way.
    fn published(&mut self, result: Result<(), Unavailable>) {
        let Some(Pending::Publish(_, one_shot)) = self.pending.take().map(|p| *p) else {
            return;
        };
        match result {
            Ok(()) if !one_shot => self.reply(Bytes::from_static(b"ACK\x01")),
            Ok(()) => {}
            Err(e) => self.send_error(&ProtocolError::new(
                ErrorCode::Unavailable,
                format!("{e}; nothing was published, try again"),
            )),
        }
        if one_shot {
            self.close(None);
        }
    }

    /// Queues a reply (a P1 frame, sent in the transport's form) and writes
    /// it now if nobody else is writing.
    fn reply(&mut self, frame: Bytes) {
        self.send_raw(self.session.transport.frame(frame));
    }

    /// Queues bytes already in the transport's form, and writes them now
    /// if nobody else is writing.
    fn send_raw(&mut self, frame: Bytes) {
        let mut tally = Tally::default();
        let flushed = self.session.reply(frame, &mut tally, IN_PLACE_WRITES);
        self.shared.stats.add_written(&mut tally);
        if let Some(Flushed::More { .. }) = flushed {
            self.shared.writers.queue().schedule(self.session.clone());
        }
    }

    /// Queues an error frame, counts it, and closes if the code says so.
    fn send_error(&mut self, err: &ProtocolError) {
        self.shared.stats.error_sent(err.code);
        let frame = ServerMessage::error(err, Timestamp::now()).to_bytes();
        if err.close {
            self.close(Some(frame));
        } else {
            self.reply(frame);
        }
    }

    /// Closes the session after what is queued (and the P1 frame `last`, if
    /// any) is written.
    fn close(&mut self, last: Option<Bytes>) {
        self.close_raw(self.session.transport.last(last));
    }

    /// The same with final bytes already in the transport's form.
    fn close_raw(&mut self, last: Option<Bytes>) {
        let push = self.session.outbound.close(last, false);
        if push != Push::Refused {
            self.session.unsubscribe_all(&self.shared.topics);
        }
        if push.claimed() {
            self.write_now();
        }
    }

    /// The task holds the write token: writes a little itself (a reply must
    /// not wait behind a write round), and hands a longer backlog to the writers.
    fn write_now(&mut self) {
        let mut scratch = Vec::new();
        let mut tally = Tally::default();
        let flushed = self
            .session
            .flush(&mut scratch, &mut tally, IN_PLACE_WRITES);
        self.shared.stats.add_written(&mut tally);
        if let Flushed::More { .. } = flushed {
            self.shared.writers.queue().schedule(self.session.clone());
        }
    }

    /// Half-closes and drains the peer for a moment, so that the last frames
    /// are not destroyed by a reset (closing with unread input sends one).
    async fn linger(&mut self) {
        let _ = socket2::SockRef::from(&*self.socket).shutdown(std::net::Shutdown::Write);
        // On the heap, and only while lingering.
        let mut sink = vec![0u8; 4096];
        let socket = &self.socket;
        let drain = async {
            loop {
                if socket.readable().await.is_err() {
                    return;
                }
                match read_once(socket, &mut sink) {
                    Ok(0) => return,
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => return,
                }
            }
        };
        let limit = if self.shared.draining() {
            LINGER_DRAINING
        } else {
            LINGER
        };
        let _ = tokio::time::timeout(limit, drain).await;
    }
}

/// One `recv` into `buf`. A short read means the socket was drained, so the
/// readiness tokio remembers is cleared at the same time: otherwise the next
/// wait would report readable at once and cost a `recv` that only returns
/// `EAGAIN` (one wasted syscall per request). Data arriving after the read
/// sets readiness again (edge-triggered, and tokio only clears a readiness it
/// has not seen change).
pub(crate) fn read_once(stream: &tokio::net::TcpStream, buf: &mut [u8]) -> io::Result<usize> {
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
