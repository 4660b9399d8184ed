//! A worker: one event loop driving a swarm of clients.
//!
//! A worker is one process (the hidden `janus-bot worker` subcommand, spawned
//! by a coordinator or an agent) holding up to ~18,000 client connections in
//! a single `mio` loop: no task, thread or timer per client. Each client is a
//! small `Conn` in a vector indexed by its `mio::Token`, and walks
//!
//! ```text
//! Waiting ─connect─▶ Connecting ─▶ AwaitHello ─subscribe─▶ AwaitAck ─ACK─▶ Subscribed
//!                        └───────────────┴──────────────────────┴──▶ Failed      └──▶ Disconnected
//! ```
//!
//! At most `connect_concurrency` clients are between `Waiting` and
//! `Subscribed` at once, so the server's accept backlog never overflows; each
//! has `timeout` to get through. Sockets are edge-triggered and read until a
//! short read or `WouldBlock` into one scratch buffer shared by all clients; a
//! per-connection buffer exists only while a frame is cut by a read (see
//! [`crate::frame`]). Each read is stamped once with the shared monotonic
//! clock, and each delivery costs a substring search and a few counters.
//!
//! Commands arrive as lines on stdin (see [`crate::control`]); a thread reads
//! them and wakes the loop through a `mio::Waker`.

use std::collections::{HashMap, VecDeque};
use std::io::{self, BufRead, ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _};
use janus_core::{ClientMessage, ServerMessage};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token, Waker};
use socket2::{Domain, Protocol, Socket, Type};

use crate::control::{write_line, Command, ErrorCount, Event, Progress, Results, Setup};
use crate::frame::{self, Frame};
use crate::sys;
use crate::tally::{Ledger, SeqTracker};

const WAKER: Token = Token(usize::MAX);
/// Size of the one read buffer shared by all clients of a worker.
const SCRATCH: usize = 64 * 1024;
/// How often the loop wakes up when nothing happens (timeouts, progress).
const TICK: Duration = Duration::from_millis(50);
/// How often progress is reported.
const PROGRESS_EVERY_NS: u64 = 250_000_000;
/// File descriptors a worker keeps for itself (epoll, pipes, std streams).
pub const RESERVED_FDS: u64 = 64;

/// Runs a worker on this process's stdin and stdout until it is told to
/// finish or its coordinator goes away.
///
/// # Errors
/// When stdout fails or the event loop cannot be set up.
pub fn run_stdio() -> anyhow::Result<()> {
    let stdout = io::stdout();
    serve(io::BufReader::new(io::stdin()), stdout.lock())
}

/// What the stdin thread hands the loop.
enum Input {
    Command(Command),
    Garbage(String),
    Closed,
}

/// Runs a worker reading commands from `commands` and writing events to `events`.
///
/// # Errors
/// When `events` fails or the event loop cannot be set up.
pub fn serve(
    commands: impl BufRead + Send + 'static,
    mut events: impl Write,
) -> anyhow::Result<()> {
    let limit = sys::raise_open_file_limit().unwrap_or(1024);
    let poll = Poll::new().context("creating the event loop")?;
    let waker = Waker::new(poll.registry(), WAKER).context("creating the event loop waker")?;
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("commands".into())
        .spawn(move || read_commands(commands, &tx, &waker))
        .context("starting the command reader")?;

    let mut poll = poll;
    let mut mio_events = Events::with_capacity(64);
    loop {
        for input in rx.try_iter() {
            match input {
                Input::Closed => return Ok(()),
                Input::Garbage(e) => {
                    write_line(&mut events, &Event::Fatal { error: e })?;
                    return Ok(());
                }
                Input::Command(Command::Ping { t0 }) => {
                    let t = sys::monotonic_ns();
                    write_line(&mut events, &Event::Pong { t0, t })?;
                }
                Input::Command(Command::Setup(setup)) => {
                    if setup.clients() + RESERVED_FDS > limit {
                        let error = format!(
                            "{}: {} clients need more open files than this process may have ({limit})",
                            setup.name,
                            setup.clients()
                        );
                        write_line(&mut events, &Event::Fatal { error })?;
                        return Ok(());
                    }
                    let swarm = Swarm::new(setup, poll)?;
                    return swarm.run(&rx, &mut events);
                }
                Input::Command(Command::Finish) => return Ok(()),
                Input::Command(Command::Sent { .. }) => {}
            }
        }
        match poll.poll(&mut mio_events, Some(Duration::from_secs(1))) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e).context("waiting for commands"),
        }
    }
}

fn read_commands(commands: impl BufRead, tx: &mpsc::Sender<Input>, waker: &Waker) {
    for line in commands.lines() {
        let input = match line {
            Ok(line) if line.trim().is_empty() => continue,
            Ok(line) => match serde_json::from_str::<Command>(&line) {
                Ok(c) => Input::Command(c),
                Err(e) => Input::Garbage(format!("unreadable command {line:?}: {e}")),
            },
            Err(_) => break,
        };
        let stop = matches!(input, Input::Garbage(_));
        if tx.send(input).is_err() {
            return;
        }
        let _ = waker.wake();
        if stop {
            return;
        }
    }
    let _ = tx.send(Input::Closed);
    let _ = waker.wake();
}

/// Where a client is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Waiting,
    Connecting,
    AwaitHello,
    AwaitAck,
    Subscribed,
    Failed,
    Disconnected,
}

impl State {
    /// Started but not yet subscribed (counts against connect concurrency).
    fn in_setup(self) -> bool {
        matches!(
            self,
            State::Connecting | State::AwaitHello | State::AwaitAck
        )
    }

    fn phase(self) -> &'static str {
        match self {
            State::Waiting | State::Connecting => "connect",
            State::AwaitHello | State::AwaitAck => "handshake",
            State::Subscribed | State::Failed | State::Disconnected => "run",
        }
    }
}

/// One client connection.
struct Conn {
    stream: Option<TcpStream>,
    state: State,
    target: u16,
    source: Option<IpAddr>,
    /// When the client must be subscribed by (monotonic ns).
    deadline_ns: u64,
    /// Bytes of the subscribe request the socket did not take yet.
    out: Option<Vec<u8>>,
    /// A frame cut by the end of a read.
    partial: Option<Vec<u8>>,
    seq: SeqTracker,
}

struct Swarm {
    setup: Setup,
    poll: Poll,
    conns: Vec<Conn>,
    next_start: usize,
    inflight: VecDeque<usize>,
    inflight_count: u32,
    progress: Progress,
    subscribed_per_target: Vec<u32>,
    sent_per_target: Vec<u32>,
    ledger: Ledger,
    errors: HashMap<(&'static str, u16, String), u32>,
    subscribe: Vec<u8>,
    scratch: Vec<u8>,
    timeout_ns: u64,
    /// Unix µs minus monotonic µs, to turn receive instants into wall time.
    wall_offset_us: i64,
    server_skew_us: Option<(i64, i64)>,
    unexpected: u64,
    reads: u64,
    wakeups: u64,
}

impl Swarm {
    fn new(setup: Setup, poll: Poll) -> anyhow::Result<Self> {
        if setup.targets.is_empty() || setup.targets.len() > usize::from(u16::MAX) {
            bail!("{}: bad number of targets", setup.name);
        }
        if let Some(g) = setup
            .groups
            .iter()
            .find(|g| usize::from(g.target) >= setup.targets.len())
        {
            bail!(
                "{}: client group names target {} of {}",
                setup.name,
                g.target,
                setup.targets.len()
            );
        }
        let mut conns = Vec::with_capacity(usize::try_from(setup.clients()).unwrap_or(0));
        // Interleave the groups so that every target and source address
        // sees clients from the start.
        let mut left: Vec<u32> = setup.groups.iter().map(|g| g.count).collect();
        while left.iter().any(|&n| n > 0) {
            for (g, n) in setup.groups.iter().zip(left.iter_mut()) {
                if *n > 0 {
                    *n -= 1;
                    conns.push(Conn {
                        stream: None,
                        state: State::Waiting,
                        target: g.target,
                        source: g.source,
                        deadline_ns: 0,
                        out: None,
                        partial: None,
                        seq: SeqTracker::default(),
                    });
                }
            }
        }
        let mut subscribe = Vec::new();
        subscribe.extend_from_slice(janus_core::REGULAR_SOCKET_MARKER);
        subscribe.push(janus_core::CLIENT_TERMINATOR);
        let mut buf = bytes::BytesMut::new();
        ClientMessage::Subscribe(setup.topic.clone()).encode(&mut buf);
        subscribe.extend_from_slice(&buf);
        let wall_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as i64)
            .unwrap_or(0);
        let targets = setup.targets.len();
        Ok(Self {
            ledger: Ledger::new(targets, setup.messages),
            subscribed_per_target: vec![0; targets],
            sent_per_target: vec![0; targets],
            timeout_ns: setup.timeout_ms.saturating_mul(1_000_000),
            setup,
            poll,
            conns,
            next_start: 0,
            inflight: VecDeque::new(),
            inflight_count: 0,
            progress: Progress::default(),
            errors: HashMap::new(),
            subscribe,
            scratch: vec![0; SCRATCH],
            wall_offset_us: wall_us - (sys::monotonic_ns() / 1000) as i64,
            server_skew_us: None,
            unexpected: 0,
            reads: 0,
            wakeups: 0,
        })
    }

    fn run(mut self, rx: &mpsc::Receiver<Input>, out: &mut impl Write) -> anyhow::Result<()> {
        let mut events = Events::with_capacity(1024);
        let mut ready_sent = false;
        let mut last_progress_ns = 0u64;
        let mut last_sent = Progress::default();
        loop {
            self.start_clients();
            match self.poll.poll(&mut events, Some(TICK)) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e).context("polling sockets"),
            }
            if events.iter().any(|e| e.token() != WAKER) {
                self.wakeups += 1;
            }
            for event in &events {
                if event.token() == WAKER {
                    continue;
                }
                self.on_event(event.token().0, event);
            }
            for input in rx.try_iter() {
                match input {
                    Input::Closed => return Ok(()),
                    Input::Garbage(error) => {
                        write_line(out, &Event::Fatal { error })?;
                        return Ok(());
                    }
                    Input::Command(Command::Ping { t0 }) => {
                        let t = sys::monotonic_ns();
                        write_line(out, &Event::Pong { t0, t })?;
                    }
                    Input::Command(Command::Sent { seq, times }) => self.on_sent(seq, &times),
                    Input::Command(Command::Finish) => {
                        let results = self.results();
                        write_line(out, &Event::Results(Box::new(results)))?;
                        return Ok(());
                    }
                    Input::Command(Command::Setup(_)) => {
                        let error = format!("{}: set up twice", self.setup.name);
                        write_line(out, &Event::Fatal { error })?;
                        return Ok(());
                    }
                }
            }
            let now = sys::monotonic_ns();
            self.expire(now);
            if !ready_sent && self.next_start == self.conns.len() && self.inflight_count == 0 {
                ready_sent = true;
                self.update_pending();
                write_line(
                    out,
                    &Event::Ready {
                        progress: self.progress,
                        subscribed_per_target: self.subscribed_per_target.clone(),
                        errors: self.error_counts(),
                        cpu_ns: sys::cpu_time().as_nanos() as u64,
                    },
                )?;
                last_sent = self.progress;
                last_progress_ns = now;
            }
            if now.saturating_sub(last_progress_ns) >= PROGRESS_EVERY_NS {
                self.update_pending();
                // Unchanged counters are repeated once a second as a heartbeat.
                if self.progress != last_sent
                    || now.saturating_sub(last_progress_ns) >= 4 * PROGRESS_EVERY_NS
                {
                    write_line(out, &Event::Progress(self.progress))?;
                    last_sent = self.progress;
                    last_progress_ns = now;
                }
            }
        }
    }

    /// Starts clients while fewer than the allowed number are connecting.
    fn start_clients(&mut self) {
        let now = sys::monotonic_ns();
        while self.inflight_count < self.setup.connect_concurrency.max(1)
            && self.next_start < self.conns.len()
        {
            let idx = self.next_start;
            self.next_start += 1;
            let conn = &mut self.conns[idx];
            let target = self.setup.targets[usize::from(conn.target)];
            conn.deadline_ns = now + self.timeout_ns;
            conn.state = State::Connecting;
            self.inflight_count += 1;
            self.inflight.push_back(idx);
            match open(target, conn.source) {
                Ok(mut stream) => {
                    let interest = Interest::READABLE | Interest::WRITABLE;
                    match self
                        .poll
                        .registry()
                        .register(&mut stream, Token(idx), interest)
                    {
                        Ok(()) => conn.stream = Some(stream),
                        Err(e) => self.fail(idx, format!("registering the socket: {e}")),
                    }
                }
                Err(e) => {
                    let why = describe_connect_error(&e, conn.source);
                    self.fail(idx, why);
                }
            }
        }
    }

    /// Fails clients that took longer than the timeout to subscribe.
    fn expire(&mut self, now: u64) {
        while let Some(&idx) = self.inflight.front() {
            let conn = &self.conns[idx];
            if !conn.state.in_setup() {
                self.inflight.pop_front();
                continue;
            }
            if conn.deadline_ns > now {
                break;
            }
            let what = match conn.state {
                State::Connecting => "timed out connecting",
                State::AwaitHello => "timed out waiting for the hello",
                _ => "timed out waiting for the subscribe ACK",
            };
            self.fail(idx, what.to_owned());
            self.inflight.pop_front();
        }
    }

    fn on_event(&mut self, idx: usize, event: &mio::event::Event) {
        let Some(conn) = self.conns.get_mut(idx) else {
            return;
        };
        let Some(stream) = conn.stream.as_mut() else {
            return;
        };
        let read = event.is_readable() || event.is_read_closed() || event.is_error();
        if conn.state == State::Connecting {
            if !(event.is_writable() || event.is_error() || event.is_write_closed()) {
                return;
            }
            match stream.take_error() {
                Ok(Some(e)) | Err(e) => {
                    let why = describe_connect_error(&e, conn.source);
                    self.fail(idx, why);
                    return;
                }
                Ok(None) => {}
            }
            match stream.peer_addr() {
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::NotConnected => return,
                Err(e) => {
                    let why = describe_connect_error(&e, conn.source);
                    self.fail(idx, why);
                    return;
                }
            }
            conn.state = State::AwaitHello;
            self.progress.connected += 1;
            // A hello that arrived with the connect is in this same event
            // (readable); one that arrives later raises an edge of its own,
            // so a speculative read here would mostly return EAGAIN.
        }
        if event.is_writable() && conn.out.is_some() {
            self.flush(idx);
        }
        if read {
            self.read(idx, event.is_read_closed());
        }
    }

    /// Reads everything the socket has, frame by frame.
    fn read(&mut self, idx: usize, read_closed: bool) {
        let now = sys::monotonic_ns();
        let mut scratch = std::mem::take(&mut self.scratch);
        while let Some(stream) = self.conns[idx].stream.as_mut() {
            match stream.read(&mut scratch) {
                Ok(0) => {
                    self.fail(idx, "connection closed by the server".to_owned());
                    break;
                }
                Ok(n) => {
                    self.reads += 1;
                    if !self.consume(idx, &scratch[..n], now) {
                        break;
                    }
                    // A short read emptied the socket; the next arrival is a
                    // new edge. Only a pending end of stream must be read now.
                    if n < scratch.len() && !read_closed {
                        break;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    self.fail(idx, e.to_string());
                    break;
                }
            }
        }
        self.scratch = scratch;
    }

    /// Handles one chunk of bytes; false once the connection is gone.
    fn consume(&mut self, idx: usize, chunk: &[u8], now: u64) -> bool {
        let mut partial = self.conns[idx].partial.take();
        let max = self.setup.max_frame;
        let result = frame::split(&mut partial, chunk, max, |f| self.on_frame(idx, f, now));
        let conn = &mut self.conns[idx];
        if conn.stream.is_none() {
            return false;
        }
        match result {
            Ok(()) => {
                conn.partial = partial;
                true
            }
            Err(e) => {
                self.fail(idx, e.to_string());
                false
            }
        }
    }

    /// Handles one frame; false once the connection is closed.
    fn on_frame(&mut self, idx: usize, bytes: &[u8], now: u64) -> bool {
        let state = self.conns[idx].state;
        match (frame::classify(bytes), state) {
            (Frame::Delivery(d), State::Subscribed | State::AwaitAck) => {
                self.deliver(idx, d, now);
                true
            }
            (Frame::Ack, State::AwaitAck) => {
                let conn = &mut self.conns[idx];
                conn.state = State::Subscribed;
                self.inflight_count -= 1;
                self.progress.subscribed += 1;
                self.subscribed_per_target[usize::from(conn.target)] += 1;
                true
            }
            (Frame::Ack | Frame::Ping, State::AwaitAck | State::Subscribed) => true,
            (Frame::Ping, State::AwaitHello) => true,
            (Frame::Other(bytes), _) => self.on_other_frame(idx, bytes, state),
            (_, _) => {
                let why = format!("unexpected frame {}", show(bytes));
                self.fail(idx, why);
                false
            }
        }
    }

    fn on_other_frame(&mut self, idx: usize, bytes: &[u8], state: State) -> bool {
        let parsed = std::str::from_utf8(bytes)
            .map_err(|e| format!("server frame is not UTF-8: {e}"))
            .and_then(ServerMessage::parse);
        match parsed {
            Ok(ServerMessage::Hello { .. }) if state == State::AwaitHello => {
                self.conns[idx].state = State::AwaitAck;
                self.write_subscribe(idx)
            }
            Ok(ServerMessage::Error { code, reason, .. }) => {
                self.fail(idx, format!("server error {code}: {reason}"));
                false
            }
            Ok(_) => {
                self.fail(idx, format!("unexpected frame {}", show(bytes)));
                false
            }
            Err(e) => {
                self.fail(idx, format!("malformed server frame: {}", shorten(&e)));
                false
            }
        }
    }

    fn deliver(&mut self, idx: usize, d: frame::DeliveryRef<'_>, now: u64) {
        let conn = &mut self.conns[idx];
        match frame::parse_seq(d.message_id) {
            Some(seq) if seq < self.setup.messages => {
                if conn.seq.observe(seq).is_new() {
                    self.ledger.received(usize::from(conn.target), seq, now);
                    self.progress.received += 1;
                }
            }
            _ => self.unexpected += 1,
        }
        if let Some(server) = d.server_micros {
            let wall = (now / 1000) as i64 + self.wall_offset_us;
            let skew = wall - server as i64;
            self.server_skew_us = Some(match self.server_skew_us {
                None => (skew, skew),
                Some((lo, hi)) => (lo.min(skew), hi.max(skew)),
            });
        }
    }

    fn write_subscribe(&mut self, idx: usize) -> bool {
        let conn = &mut self.conns[idx];
        conn.out = Some(self.subscribe.clone());
        self.flush(idx)
    }

    /// Writes what is pending; false if the connection failed.
    fn flush(&mut self, idx: usize) -> bool {
        let conn = &mut self.conns[idx];
        let (Some(stream), Some(out)) = (conn.stream.as_mut(), conn.out.as_mut()) else {
            return true;
        };
        while !out.is_empty() {
            match stream.write(out) {
                Ok(0) => break,
                Ok(n) => {
                    out.drain(..n);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    self.fail(idx, format!("writing the subscribe request: {e}"));
                    return false;
                }
            }
        }
        conn.out = None;
        true
    }

    /// Records why client `idx` failed and closes its connection.
    fn fail(&mut self, idx: usize, why: String) {
        let conn = &mut self.conns[idx];
        let phase = conn.state.phase();
        match conn.state {
            State::Waiting | State::Connecting | State::AwaitHello | State::AwaitAck => {
                if conn.state != State::Waiting {
                    self.inflight_count -= 1;
                }
                conn.state = State::Failed;
                self.progress.failed += 1;
            }
            State::Subscribed => {
                conn.state = State::Disconnected;
                self.progress.disconnected += 1;
            }
            State::Failed | State::Disconnected => return,
        }
        conn.stream = None;
        conn.partial = None;
        conn.out = None;
        *self.errors.entry((phase, conn.target, why)).or_insert(0) += 1;
    }

    fn on_sent(&mut self, seq: u32, times: &[Option<u64>]) {
        self.progress.sent_seen += 1;
        if seq >= self.setup.messages {
            return;
        }
        for (target, time) in times.iter().enumerate().take(self.sent_per_target.len()) {
            if let Some(t) = time {
                self.ledger.sent(target, seq, *t);
                self.sent_per_target[target] += 1;
            }
        }
    }

    /// Recomputes how many deliveries of sent messages live clients lack.
    fn update_pending(&mut self) {
        let mut pending = 0u64;
        if self.progress.sent_seen > 0 {
            for c in &self.conns {
                if c.state == State::Subscribed {
                    let sent = self.sent_per_target[usize::from(c.target)];
                    pending += u64::from(sent.saturating_sub(c.seq.received()));
                }
            }
        }
        self.progress.pending = pending;
    }

    fn error_counts(&self) -> Vec<ErrorCount> {
        let mut v: Vec<ErrorCount> = self
            .errors
            .iter()
            .map(|((phase, target, error), count)| ErrorCount {
                phase: (*phase).to_owned(),
                target: *target,
                error: error.clone(),
                count: *count,
            })
            .collect();
        v.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.error.cmp(&b.error)));
        v
    }

    fn results(&self) -> Results {
        let m = self.setup.messages;
        let mut r = Results {
            clients: u32::try_from(self.conns.len()).unwrap_or(u32::MAX),
            subscribed: self.progress.subscribed,
            good: 0,
            bad_setup: 0,
            bad_disconnected: 0,
            bad_missing: 0,
            bad_duplicated: 0,
            bad_reordered: 0,
            received: 0,
            duplicates: 0,
            reordered: 0,
            unexpected: self.unexpected,
            negative: self.ledger.negative(),
            unmatched: self.ledger.unmatched(),
            histogram: self.ledger.histogram().clone(),
            messages: self.ledger.stats().to_vec(),
            errors: self.error_counts(),
            server_skew_us: self.server_skew_us,
            cpu_ns: sys::cpu_time().as_nanos() as u64,
            reads: self.reads,
            wakeups: self.wakeups,
        };
        for c in &self.conns {
            r.received += u64::from(c.seq.received());
            r.duplicates += u64::from(c.seq.duplicates());
            r.reordered += u64::from(c.seq.reordered());
            match c.state {
                State::Subscribed if c.seq.duplicates() > 0 => r.bad_duplicated += 1,
                State::Subscribed if c.seq.reordered() > 0 => r.bad_reordered += 1,
                State::Subscribed if c.seq.missing(m) > 0 => r.bad_missing += 1,
                State::Subscribed => r.good += 1,
                State::Disconnected => r.bad_disconnected += 1,
                _ => r.bad_setup += 1,
            }
        }
        r
    }
}

/// Opens a non-blocking client socket and starts connecting.
fn open(target: SocketAddr, source: Option<IpAddr>) -> io::Result<TcpStream> {
    let socket = Socket::new(
        Domain::for_address(target),
        Type::STREAM.nonblocking(),
        Some(Protocol::TCP),
    )?;
    socket.set_tcp_nodelay(true)?;
    if let Some(ip) = source {
        // Leave the port to connect(), which only needs it unique per target.
        if ip.is_ipv4() {
            sys::set_bind_address_no_port(&socket)?;
        }
        socket.bind(&SocketAddr::new(ip, 0).into())?;
    }
    match socket.connect(&target.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(TcpStream::from_std(socket.into()))
}

fn describe_connect_error(e: &io::Error, source: Option<IpAddr>) -> String {
    if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) {
        let from = source.map_or_else(
            || "the default source address".to_owned(),
            |s| s.to_string(),
        );
        return format!("{e}: out of ephemeral ports on {from}; spread clients with --source-ips");
    }
    if e.raw_os_error() == Some(libc::EMFILE) || e.raw_os_error() == Some(libc::ENFILE) {
        return format!("{e}: out of file descriptors; use more --workers");
    }
    e.to_string()
}

/// A frame for an error message: lossy text, at most 100 characters.
fn show(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    format!("{:?}", shorten(&text))
}

fn shorten(s: &str) -> String {
    let mut end = s.len().min(100);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    if end < s.len() {
        format!("{}…", &s[..end])
    } else {
        s.to_owned()
    }
}
