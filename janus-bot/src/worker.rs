//! A worker: one event loop driving a swarm of clients.
//!
//! A worker is one process (the hidden `janus-bot worker` subcommand, spawned
//! by a coordinator or an agent) holding up to ~18,000 client connections in
//! a single `mio` loop: no task, thread or timer per client. Each client is a
//! small `Conn` in a vector indexed by its `mio::Token`, with a role:
//!
//! - **readers** subscribe to their topics and count every delivery: the
//!   measurement (and, in a soak, the canary);
//! - **never-reading** clients subscribe, then leave their socket alone
//!   until the end of the run, when what they were left with is read to see
//!   what the server's slow-consumer policy did to them;
//! - **background** clients run in cycles while the coordinator has the
//!   activity on: churners (connect, subscribe, hold, unsubscribe, leave),
//!   stuck readers, request flooders, tricklers and oversized-frame senders.
//!
//! A subscribing client walks
//!
//! ```text
//! Waiting ─connect─▶ Connecting ─▶ AwaitHello ─subscribe─▶ AwaitAck ─ACK─▶ Subscribed
//!                        └───────────────┴──────────────────────┴──▶ Failed      └──▶ Disconnected
//! ```
//!
//! and a background client goes round `Idle ─▶ Connecting ─▶ AwaitHello ─▶
//! (AwaitAck ─▶ Subscribed | Acting) ─▶ Idle`, timed by one heap of
//! deadlines for the whole worker.
//!
//! At most `connect_concurrency` subscribing clients are between `Waiting`
//! and `Subscribed` at once, so the server's accept backlog never overflows;
//! each has `timeout` to get through. Sockets are edge-triggered and read
//! until a short read or `WouldBlock` into one scratch buffer shared by all
//! clients; a per-connection buffer exists only while a frame is cut by a
//! read (see [`crate::frame`]). Each read is stamped once with the shared
//! monotonic clock, and each delivery costs a substring search and a few
//! counters.
//!
//! Commands arrive as lines on stdin (see [`crate::control`]); a thread reads
//! them and wakes the loop through a `mio::Waker`.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};
use std::io::{self, BufRead, ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _};
use janus_core::{ClientMessage, ServerMessage};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token, Waker};
use nix::errno::Errno;
use socket2::{Domain, Protocol, Socket, Type};

use crate::control::{
    topic_name, write_line, Command, ErrorCount, Event, NeverRead, Progress, Results, ResumeCounts,
    RoleCounts, Setup,
};
use crate::frame::{self, Frame};
use crate::sys;
use crate::tally::{Ledger, SeqTracker};

const WAKER: Token = Token(usize::MAX);
/// Size of the one read buffer shared by all clients of a worker.
const SCRATCH: usize = 64 * 1024;
/// How often the loop wakes up when nothing happens (timeouts, progress).
const TICK: Duration = Duration::from_millis(50);
/// [`TICK`] in nanoseconds: also a flooder's write interval.
const TICK_NS: u64 = 50_000_000;
/// How often progress is reported.
const PROGRESS_EVERY_NS: u64 = 250_000_000;
/// How long a background client waits to reconnect after a failure.
const RETRY_NS: u64 = 100_000_000;
/// How long a hostile client the server cut waits before it comes back.
const HOSTILE_PAUSE_NS: u64 = 1_000_000_000;
/// At the end, never-reading clients are read until none has received a
/// byte for this long…
const DRAIN_QUIET_NS: u64 = 2_000_000_000;
/// … or for this long at most.
const DRAIN_MAX_NS: u64 = 30_000_000_000;
/// What a trickler sends, one byte at a time (then `a`s): a subscribe
/// request whose topic never ends.
const TRICKLE: &[u8] = b"{\"action\":\"subscribe\",\"data\":\"";
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
                    if setup.connections() + RESERVED_FDS > limit {
                        let error = format!(
                            "{}: {} connections need more open files than this process may have ({limit})",
                            setup.name,
                            setup.connections()
                        );
                        write_line(&mut events, &Event::Fatal { error })?;
                        return Ok(());
                    }
                    let swarm = Swarm::new(*setup, poll)?;
                    return swarm.run(&rx, &mut events);
                }
                Input::Command(Command::Finish) => return Ok(()),
                Input::Command(Command::Sent { .. } | Command::Activity { .. }) => {}
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

/// What a client does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Subscribes and counts every delivery.
    Reader,
    /// Subscribes, never reads until the end of the run.
    NeverRead,
    /// Background: connect, subscribe to one topic, hold, leave, again.
    Churner,
    /// Background: subscribes to the run's topics, never reads, leaves
    /// after the hostile hold.
    Stuck,
    /// Background: requests over and over without reading the answers.
    Flooder,
    /// Background: one byte per trickle interval, never a whole frame.
    Trickler,
    /// Background: one frame longer than the server's limit.
    Oversized,
}

impl Role {
    /// The key of its [`RoleCounts`] in the results.
    fn name(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::NeverRead => "never_read",
            Role::Churner => "churner",
            Role::Stuck => "stuck",
            Role::Flooder => "flooder",
            Role::Trickler => "trickler",
            Role::Oversized => "oversized",
        }
    }

    /// A background client, run in cycles while the activity is on.
    fn background(self) -> bool {
        !matches!(self, Role::Reader | Role::NeverRead)
    }
}

/// Where a client is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// A subscribing client not started yet.
    Waiting,
    /// A background client between cycles (or with the activity off).
    Idle,
    Connecting,
    AwaitHello,
    AwaitAck,
    /// Readers count deliveries; never-reading and stuck clients leave the
    /// socket alone; churners hold their subscription.
    Subscribed,
    /// A flooder, trickler or oversized sender after the hello.
    Acting,
    /// A never-reading client being read at the end of the run.
    Draining,
    /// A resuming reader between dropping its connection and reconnecting.
    Away,
    /// A resuming reader that sent its resume and waits for `resumed`.
    AwaitResumed,
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

    /// The phase a failure in this state is reported in: `connect`, `hello`
    /// (connected, but no Janus hello: the coordinator reads it as "not a
    /// Janus server"), `handshake` (the subscribe) or `run`.
    fn phase(self) -> &'static str {
        match self {
            State::Waiting | State::Idle | State::Connecting => "connect",
            State::AwaitHello => "hello",
            State::AwaitAck => "handshake",
            _ => "run",
        }
    }
}

/// One client connection.
struct Conn {
    stream: Option<TcpStream>,
    role: Role,
    state: State,
    target: u16,
    source: Option<IpAddr>,
    /// Subscribing clients: the first of their topics. Churners: the topic
    /// of the current cycle.
    topic: u32,
    /// Subscribing clients: when they must be subscribed by. Background
    /// clients: when the current cycle ends (monotonic ns).
    deadline_ns: u64,
    /// The instant of this client's pending timer, 0 for none.
    timer_ns: u64,
    /// `ACK`s still expected.
    acks_due: u32,
    /// Cycles a background client completed; bytes a trickler sent.
    count: u32,
    /// Bytes the socket did not take yet.
    out: Option<Vec<u8>>,
    /// A frame cut by the end of a read.
    partial: Option<Vec<u8>>,
    /// One sequence per subscription.
    seqs: Vec<SeqTracker>,
    /// Connected over WebSocket (X2).
    websocket: bool,
    /// Its handshake and frame decoding (taken out while a read is handled).
    ws: Option<Box<WsState>>,
    /// A never-reading client's stream ended while it was drained…
    ended: bool,
    /// … with a `slow_consumer` error frame.
    told: bool,
    /// A reader that drops its connection mid-run and resumes (X1).
    resumer: Option<Box<Resumer>>,
}

/// Where a resuming reader is (see [`crate::control::ResumePlan`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ResumePhase {
    /// Reading until it has `drop_after` messages.
    Planned,
    /// Its connection is dropped; reconnecting since the given instant.
    Resuming(u64),
    /// Resumed (or failed to).
    Done,
}

/// A resuming reader's plan and positions.
struct Resumer {
    phase: ResumePhase,
    /// Distinct messages it receives before dropping its connection.
    drop_after: u32,
    /// The session token from the first hello.
    token: String,
    /// Per subscription: the topic's epoch and the offset of the last
    /// message received.
    positions: Vec<(String, u64)>,
}

impl Conn {
    /// A resuming reader that has dropped its first connection (reconnecting,
    /// resuming or resumed).
    fn reconnecting(&self) -> bool {
        self.resumer
            .as_ref()
            .is_some_and(|r| r.phase != ResumePhase::Planned)
    }

    fn new(role: Role, target: u16, source: Option<IpAddr>, topic: u32, subs: u32) -> Conn {
        Conn {
            stream: None,
            role,
            state: if role.background() {
                State::Idle
            } else {
                State::Waiting
            },
            target,
            source,
            topic,
            deadline_ns: 0,
            timer_ns: 0,
            acks_due: 0,
            count: 0,
            out: None,
            partial: None,
            seqs: vec![SeqTracker::default(); subs as usize],
            websocket: false,
            ws: None,
            ended: false,
            told: false,
            resumer: None,
        }
    }

    /// Whether its socket is read in its current state.
    fn reads(&self) -> bool {
        !matches!(
            (self.role, self.state),
            (Role::NeverRead | Role::Stuck, State::Subscribed) | (Role::Flooder, State::Acting)
        )
    }
}

/// The WebSocket side of a subscribing client (`--transport ws`).
struct WsState {
    /// The `101` answer has been read.
    upgraded: bool,
    decoder: janus_core::ws::WsDecoder,
    /// Bytes of a handshake answer or a frame cut by the end of a read;
    /// unallocated otherwise.
    buf: bytes::BytesMut,
}

/// The handshake key of every bot client (the server only checks its form).
const WS_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
/// The mask of every frame a bot client sends: a browser must pick masks an
/// attacker cannot predict (RFC 6455 §10.3); a load generator need not.
const WS_MASK: [u8; 4] = *b"jbot";

/// Messages of a run of `total` that go to topic `j` of `topics`.
fn per_topic(total: u32, topics: u32, j: u32) -> u32 {
    let t = topics.max(1);
    total / t + u32::from(j < total % t)
}

struct Swarm {
    setup: Setup,
    poll: Poll,
    conns: Vec<Conn>,
    /// Subscribing clients are `conns[..subscribers]`.
    subscribers: usize,
    next_start: usize,
    inflight: VecDeque<usize>,
    inflight_count: u32,
    timers: BinaryHeap<Reverse<(u64, usize)>>,
    activity_on: bool,
    progress: Progress,
    subscribed_per_target: Vec<u32>,
    sent_per_target: Vec<u32>,
    ledger: Ledger,
    /// The latencies of resuming readers only…
    resume_ledger: Ledger,
    /// … and of the other readers, when some resume.
    others_ledger: Ledger,
    resume_counts: ResumeCounts,
    errors: HashMap<(&'static str, u16, String), u32>,
    roles: BTreeMap<&'static str, RoleCounts>,
    scratch: Vec<u8>,
    timeout_ns: u64,
    /// Unix µs minus monotonic µs, to turn receive instants into wall time.
    wall_offset_us: i64,
    server_skew_us: Option<(i64, i64)>,
    unexpected: u64,
    reads: u64,
    wakeups: u64,
    /// Last instant a draining never-reading client received a byte.
    drained_ns: u64,
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
        let topics = setup.topics.max(1);
        let subs = setup.subscriptions.clamp(1, topics);
        let mut conns = Vec::with_capacity(usize::try_from(setup.connections()).unwrap_or(0));
        // Interleave the groups so that every target and source address
        // sees clients from the start.
        let mut left: Vec<u32> = setup.groups.iter().map(|g| g.count).collect();
        while left.iter().any(|&n| n > 0) {
            for (g, n) in setup.groups.iter().zip(left.iter_mut()) {
                if *n > 0 {
                    *n -= 1;
                    let swarm_index = setup.first_client + conns.len() as u64;
                    let first = (swarm_index * u64::from(subs) % u64::from(topics)) as u32;
                    let role = if conns.len() < setup.never_read as usize {
                        Role::NeverRead
                    } else {
                        Role::Reader
                    };
                    conns.push(Conn::new(role, g.target, g.source, first, subs));
                }
            }
        }
        let subscribers = conns.len();
        plan_resumers(&setup, &mut conns);
        let a = &setup.activity;
        for (role, n) in [
            (Role::Churner, a.churners),
            (Role::Stuck, a.stuck),
            (Role::Flooder, a.flooders),
            (Role::Trickler, a.tricklers),
            (Role::Oversized, a.oversized),
        ] {
            for _ in 0..n {
                let target = (conns.len() % setup.targets.len()) as u16;
                let subs = if role == Role::Stuck { subs } else { 1 };
                let first = (conns.len() as u64 * u64::from(subs) % u64::from(topics)) as u32;
                conns.push(Conn::new(role, target, None, first, subs));
            }
        }
        let mut roles = BTreeMap::new();
        for c in &conns[subscribers..] {
            roles
                .entry(c.role.name())
                .or_insert_with(RoleCounts::default)
                .clients += 1;
        }
        let wall_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as i64)
            .unwrap_or(0);
        let targets = setup.targets.len();
        Ok(Self {
            ledger: Ledger::new(targets, setup.messages),
            resume_ledger: Ledger::new(targets, setup.messages),
            others_ledger: Ledger::new(targets, setup.messages),
            resume_counts: ResumeCounts {
                clients: setup.resume.clients,
                ..ResumeCounts::default()
            },
            subscribed_per_target: vec![0; targets],
            sent_per_target: vec![0; targets],
            timeout_ns: setup.timeout_ms.saturating_mul(1_000_000),
            setup,
            poll,
            conns,
            subscribers,
            next_start: 0,
            inflight: VecDeque::new(),
            inflight_count: 0,
            timers: BinaryHeap::new(),
            activity_on: false,
            progress: Progress::default(),
            errors: HashMap::new(),
            roles,
            scratch: vec![0; SCRATCH],
            wall_offset_us: wall_us - (sys::monotonic_ns() / 1000) as i64,
            server_skew_us: None,
            unexpected: 0,
            reads: 0,
            wakeups: 0,
            drained_ns: 0,
        })
    }

    /// The bytes that subscribe to `count` topics from `first` (marker
    /// first), topic indexes taken modulo `space`.
    fn subscribe_bytes(
        &self,
        first: u32,
        count: u32,
        space: u32,
        (offsets, ws): (bool, bool),
    ) -> Vec<u8> {
        let options = offsets.then_some(ClientMessage::Options {
            offsets: Some(true),
        });
        let subscribes = (0..count).map(|s| {
            let name = topic_name(&self.setup.topic, (first + s) % space, self.setup.topics);
            ClientMessage::Subscribe(name)
        });
        requests(options.into_iter().chain(subscribes), ws)
    }

    fn run(mut self, rx: &mpsc::Receiver<Input>, out: &mut impl Write) -> anyhow::Result<()> {
        let mut events = Events::with_capacity(1024);
        let mut ready_sent = false;
        let mut last_progress_ns = 0u64;
        let mut last_sent = Progress::default();
        loop {
            self.start_clients();
            self.poll_once(&mut events)?;
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
                    Input::Command(Command::Activity { on }) => self.set_activity(on),
                    Input::Command(Command::Finish) => {
                        self.set_activity(false);
                        self.drain_never_read(&mut events)?;
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
            if !ready_sent && self.next_start == self.subscribers && self.inflight_count == 0 {
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

    /// Waits for socket events (at most a tick), handles them, then fires
    /// the timers that are due.
    fn poll_once(&mut self, events: &mut Events) -> anyhow::Result<()> {
        match self.poll.poll(events, Some(TICK)) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e).context("polling sockets"),
        }
        if events.iter().any(|e| e.token() != WAKER) {
            self.wakeups += 1;
        }
        for event in events.iter() {
            if event.token() != WAKER {
                self.on_event(event.token().0, event);
            }
        }
        let now = sys::monotonic_ns();
        while let Some(&Reverse((at, idx))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            if self.conns.get(idx).is_some_and(|c| c.timer_ns == at) {
                self.conns[idx].timer_ns = 0;
                self.on_timer(idx, now);
            }
        }
        Ok(())
    }

    fn set_timer(&mut self, idx: usize, at: u64) {
        let at = at.max(1);
        self.conns[idx].timer_ns = at;
        self.timers.push(Reverse((at, idx)));
    }

    /// Starts subscribing clients while fewer than the allowed number are
    /// connecting.
    fn start_clients(&mut self) {
        let now = sys::monotonic_ns();
        while self.inflight_count < self.setup.connect_concurrency.max(1)
            && self.next_start < self.subscribers
        {
            let idx = self.next_start;
            self.next_start += 1;
            self.conns[idx].deadline_ns = now + self.timeout_ns;
            self.inflight_count += 1;
            self.inflight.push_back(idx);
            if let Err(why) = self.connect(idx) {
                self.fail(idx, why);
            }
        }
    }

    /// Opens client `idx`'s connection and registers it.
    fn connect(&mut self, idx: usize) -> Result<(), String> {
        let conn = &mut self.conns[idx];
        conn.state = State::Connecting;
        let ws = !self.setup.ws_targets.is_empty() && !conn.role.background();
        let targets = if ws {
            &self.setup.ws_targets
        } else {
            &self.setup.targets
        };
        let target = match self.setup.resume.target {
            Some(elsewhere) if conn.reconnecting() => elsewhere,
            _ => targets[usize::from(conn.target)],
        };
        conn.websocket = ws;
        conn.ws = ws.then(|| {
            Box::new(WsState {
                upgraded: false,
                decoder: janus_core::ws::WsDecoder::client(self.setup.max_frame),
                buf: bytes::BytesMut::new(),
            })
        });
        let rcvbuf = matches!(conn.role, Role::NeverRead | Role::Stuck)
            .then_some(self.setup.never_read_rcvbuf);
        let mut stream = open(target, conn.source, rcvbuf)
            .map_err(|e| describe_connect_error(&e, conn.source))?;
        self.poll
            .registry()
            .register(
                &mut stream,
                Token(idx),
                Interest::READABLE | Interest::WRITABLE,
            )
            .map_err(|e| format!("registering the socket: {e}"))?;
        conn.stream = Some(stream);
        Ok(())
    }

    /// Fails subscribing clients that took longer than the timeout.
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
                State::Connecting => "timed out connecting".to_owned(),
                State::AwaitHello => no_hello(conn, "timed out waiting for the hello"),
                _ => "timed out waiting for the subscribe ACK".to_owned(),
            };
            self.fail(idx, what);
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
            let connected = match stream.take_error() {
                Ok(Some(e)) | Err(e) => Err(e),
                Ok(None) => stream.peer_addr(),
            };
            let peer = match connected {
                Ok(peer) => peer,
                Err(e) if e.kind() == ErrorKind::NotConnected => return,
                Err(e) => {
                    let why = describe_connect_error(&e, conn.source);
                    self.fail(idx, why);
                    return;
                }
            };
            conn.state = State::AwaitHello;
            if conn.websocket {
                // The Host header names the address connected to (RFC 6455 4.1).
                let host = peer.to_string();
                conn.out = Some(janus_core::ws::client_request(&host, WS_KEY).into_bytes());
            }
            let reconnect = conn.reconnecting();
            if conn.role.background() {
                self.role(idx).connections += 1;
            } else if !reconnect {
                self.progress.connected += 1;
            }
            // A hello that arrived with the connect is in this same event
            // (readable); one that arrives later raises an edge of its own,
            // so a speculative read here would mostly return EAGAIN.
        }
        if event.is_writable() && self.conns[idx].out.is_some() && !self.flush(idx) {
            return;
        }
        if read && self.conns[idx].reads() {
            self.read(idx, event.is_read_closed());
        }
    }

    fn role(&mut self, idx: usize) -> &mut RoleCounts {
        self.roles.entry(self.conns[idx].role.name()).or_default()
    }

    /// Reads everything the socket has, frame by frame.
    fn read(&mut self, idx: usize, read_closed: bool) {
        let now = sys::monotonic_ns();
        let mut scratch = std::mem::take(&mut self.scratch);
        while let Some(stream) = self.conns[idx].stream.as_mut() {
            match stream.read(&mut scratch) {
                Ok(0) => {
                    let conn = &self.conns[idx];
                    let why = if conn.state == State::AwaitHello {
                        no_hello(conn, "connection closed by the server before its hello")
                    } else {
                        "connection closed by the server".to_owned()
                    };
                    self.fail(idx, why);
                    break;
                }
                Ok(n) => {
                    self.reads += 1;
                    if self.conns[idx].state == State::Draining {
                        self.drained_ns = now;
                    }
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
        if self.conns[idx].websocket {
            return self.consume_ws(idx, chunk, now);
        }
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

    /// The same over WebSocket: the handshake answer, then one frame per
    /// text message (pings need no answer; a close is followed by the end
    /// of the stream, handled as over TCP).
    fn consume_ws(&mut self, idx: usize, chunk: &[u8], now: u64) -> bool {
        use janus_core::ws::Message;
        use tokio_util::codec::Decoder as _;
        let Some(mut ws) = self.conns[idx].ws.take() else {
            return false;
        };
        ws.buf.extend_from_slice(chunk);
        if !ws.upgraded {
            match janus_core::ws::client_response(&ws.buf, WS_KEY) {
                Ok(None) => {
                    self.conns[idx].ws = Some(ws);
                    return true;
                }
                Ok(Some(end)) => {
                    let _ = ws.buf.split_to(end);
                    ws.upgraded = true;
                }
                Err(why) => {
                    self.fail(idx, format!("WebSocket handshake: {why}"));
                    return false;
                }
            }
        }
        let mut go_on = true;
        while go_on {
            match ws.decoder.decode(&mut ws.buf) {
                Ok(Some(Message::Text(text))) => go_on = self.on_frame(idx, &text, now),
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => {
                    self.fail(idx, e.to_string());
                    return false;
                }
            }
        }
        if ws.buf.is_empty() && ws.decoder.is_idle() {
            // Nothing pending: no buffer held between reads.
            ws.buf = bytes::BytesMut::new();
        }
        let conn = &mut self.conns[idx];
        if conn.stream.is_none() {
            return false;
        }
        conn.ws = Some(ws);
        go_on
    }

    /// Handles one frame; false once the connection is closed.
    fn on_frame(&mut self, idx: usize, bytes: &[u8], now: u64) -> bool {
        let (role, state) = (self.conns[idx].role, self.conns[idx].state);
        match frame::classify(bytes) {
            Frame::Delivery(d) => match (role, state) {
                (Role::Reader, State::Subscribed | State::AwaitAck) => {
                    self.check_skew(d);
                    if let Some((target, seq)) = self.count_delivery(idx, d) {
                        self.ledger.received(target, seq, now);
                        self.progress.received += 1;
                        if self.conns[idx].resumer.is_some() {
                            self.resume_ledger.received(target, seq, now);
                            return self.track_offset(idx, seq, bytes, now);
                        }
                        if self.setup.resume.clients > 0 {
                            self.others_ledger.received(target, seq, now);
                        }
                    }
                    true
                }
                (Role::NeverRead, State::Draining) => {
                    self.count_delivery(idx, d);
                    true
                }
                (Role::Reader, _) => self.unexpected_frame(idx, bytes),
                // Other clients' deliveries are not measured.
                _ => true,
            },
            Frame::Ack if state == State::AwaitAck => {
                let conn = &mut self.conns[idx];
                conn.acks_due = conn.acks_due.saturating_sub(1);
                if conn.acks_due == 0 {
                    self.on_subscribed(idx, now);
                }
                true
            }
            Frame::Ack if role == Role::Reader && state != State::Subscribed => {
                self.unexpected_frame(idx, bytes)
            }
            Frame::Ack | Frame::Ping => true,
            Frame::Other(bytes) => self.on_other_frame(idx, bytes, now),
        }
    }

    fn unexpected_frame(&mut self, idx: usize, bytes: &[u8]) -> bool {
        let why = format!("unexpected frame {}", show(bytes));
        self.fail(idx, why);
        false
    }

    fn on_other_frame(&mut self, idx: usize, bytes: &[u8], now: u64) -> bool {
        let parsed = std::str::from_utf8(bytes)
            .map_err(|e| format!("server frame is not UTF-8: {e}"))
            .and_then(ServerMessage::parse);
        let (role, state) = (self.conns[idx].role, self.conns[idx].state);
        match parsed {
            Ok(ServerMessage::Hello { token, .. }) if state == State::AwaitHello => {
                if let Some(r) = self.conns[idx].resumer.as_mut() {
                    if r.phase == ResumePhase::Planned {
                        r.token = token;
                    }
                }
                self.on_hello(idx, now)
            }
            Ok(ServerMessage::Subscribed { topic, epoch, .. })
                if state == State::AwaitAck && self.conns[idx].resumer.is_some() =>
            {
                self.on_offset_subscribed(idx, &topic, epoch, now)
            }
            Ok(ServerMessage::Resumed {
                recovered, missed, ..
            }) if state == State::AwaitResumed => {
                self.on_resumed(idx, recovered, missed, now);
                true
            }
            Ok(ServerMessage::Error { code, .. }) if state == State::Draining => {
                self.conns[idx].told |= code == janus_core::ErrorCode::SlowConsumer.as_str();
                true
            }
            Ok(ServerMessage::Error { code, .. }) if role.background() => {
                *self.role(idx).error_frames.entry(code).or_insert(0) += 1;
                true
            }
            Ok(ServerMessage::Error { code, reason, .. }) => {
                // An error frame instead of the hello is still a Janus
                // server talking (e.g. full): not a "hello" failure.
                let phase = (state == State::AwaitHello).then_some("handshake");
                self.fail_as(idx, format!("server error {code}: {reason}"), phase);
                false
            }
            _ if role.background() || state == State::Draining => true,
            Ok(_) => self.unexpected_frame(idx, bytes),
            Err(e) => {
                self.fail(idx, format!("malformed server frame: {}", shorten(&e)));
                false
            }
        }
    }

    /// The hello arrived: subscribe, or start acting.
    fn on_hello(&mut self, idx: usize, now: u64) -> bool {
        let (role, first) = (self.conns[idx].role, self.conns[idx].topic);
        match role {
            Role::Reader if self.conns[idx].reconnecting() => {
                let out = self.resume_bytes(idx);
                let conn = &mut self.conns[idx];
                conn.state = State::AwaitResumed;
                conn.out = Some(out);
                self.flush(idx)
            }
            Role::Reader | Role::NeverRead | Role::Stuck | Role::Churner => {
                let subs = self.conns[idx].seqs.len().max(1) as u32;
                // Churners pick from twice as many topics as carry messages.
                let topics = self.setup.topics.max(1);
                let space = if role == Role::Churner {
                    2 * topics
                } else {
                    topics
                };
                let offsets = self.conns[idx].resumer.is_some();
                let ws = self.conns[idx].websocket;
                let out = self.subscribe_bytes(first, subs, space, (offsets, ws));
                let conn = &mut self.conns[idx];
                conn.acks_due = subs + u32::from(offsets);
                conn.state = State::AwaitAck;
                conn.out = Some(out);
                self.flush(idx)
            }
            Role::Flooder => {
                self.conns[idx].state = State::Acting;
                self.set_timer(idx, now);
                true
            }
            Role::Trickler => {
                self.conns[idx].state = State::Acting;
                self.conns[idx].count = 0;
                self.set_timer(idx, now);
                true
            }
            Role::Oversized => {
                let len = self.setup.activity.oversized_bytes as usize;
                let conn = &mut self.conns[idx];
                conn.state = State::Acting;
                conn.out = Some(vec![b'a'; len]);
                let at = conn.deadline_ns;
                self.set_timer(idx, at);
                self.flush(idx)
            }
        }
    }

    /// Every `ACK` arrived.
    fn on_subscribed(&mut self, idx: usize, now: u64) {
        let conn = &mut self.conns[idx];
        conn.state = State::Subscribed;
        match conn.role {
            Role::Reader | Role::NeverRead => {
                self.inflight_count -= 1;
                self.progress.subscribed += 1;
                self.subscribed_per_target[usize::from(conn.target)] += 1;
            }
            Role::Churner => {
                let hold = self.setup.activity.hold_ms.saturating_mul(1_000_000);
                self.set_timer(idx, now + hold);
            }
            _ => {
                let at = conn.deadline_ns;
                self.set_timer(idx, at);
            }
        }
    }

    /// The subscription slot and sequence of a delivery for client `idx`,
    /// counted in its sequence; `Some((target, seq))` when it is the first
    /// delivery of that message at this client.
    fn count_delivery(&mut self, idx: usize, d: frame::DeliveryRef<'_>) -> Option<(usize, u32)> {
        let topics = self.setup.topics.max(1);
        let conn = &mut self.conns[idx];
        let Some(seq) = frame::parse_seq(d.message_id).filter(|&s| s < self.setup.messages) else {
            self.unexpected += 1;
            return None;
        };
        let slot = ((seq % topics) + topics - conn.topic % topics) % topics;
        let Some(tracker) = conn.seqs.get_mut(slot as usize) else {
            self.unexpected += 1;
            return None;
        };
        tracker
            .observe(seq / topics)
            .is_new()
            .then_some((usize::from(conn.target), seq))
    }

    /// A resuming reader's subscribe was answered `subscribed`: notes the
    /// topic's epoch and latest offset.
    fn on_offset_subscribed(&mut self, idx: usize, topic: &str, epoch: String, now: u64) -> bool {
        let topics = self.setup.topics.max(1);
        let conn = &mut self.conns[idx];
        let slot = (0..conn.seqs.len() as u32)
            .find(|s| topic_name(&self.setup.topic, (conn.topic + s) % topics, topics) == topic);
        let (Some(slot), Some(r)) = (slot, conn.resumer.as_mut()) else {
            let why = format!("subscribed to a topic it did not ask for: {topic:?}");
            self.fail(idx, why);
            return false;
        };
        if let Some(p) = r.positions.get_mut(slot as usize) {
            p.0 = epoch;
        }
        conn.acks_due = conn.acks_due.saturating_sub(1);
        if conn.acks_due == 0 {
            self.on_subscribed(idx, now);
        }
        true
    }

    /// A resuming reader received message `seq` (`bytes`, with its offset
    /// last): notes the offset, and drops the connection once it has its
    /// share of messages. False once the connection is dropped.
    fn track_offset(&mut self, idx: usize, seq: u32, bytes: &[u8], now: u64) -> bool {
        let topics = self.setup.topics.max(1);
        let conn = &mut self.conns[idx];
        let slot = ((seq % topics) + topics - conn.topic % topics) % topics;
        let received: u32 = conn.seqs.iter().map(SeqTracker::received).sum();
        let Some(r) = conn.resumer.as_mut() else {
            return true;
        };
        if let (Some(p), Some(offset)) = (r.positions.get_mut(slot as usize), frame_offset(bytes)) {
            p.1 = offset;
        }
        if r.phase != ResumePhase::Planned || received < r.drop_after {
            return true;
        }
        // Lost like a network: a reset, no goodbye, nothing more read.
        r.phase = ResumePhase::Resuming(0);
        if let Some(mut stream) = conn.stream.take() {
            let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
            let _ = self.poll.registry().deregister(&mut stream);
        }
        conn.partial = None;
        conn.out = None;
        conn.state = State::Away;
        let away = self.setup.resume.away_ms.saturating_mul(1_000_000);
        self.set_timer(idx, now + away);
        false
    }

    /// A resuming reader reconnects, to resume once the hello is there.
    fn reconnect(&mut self, idx: usize, now: u64) {
        if let Some(r) = self.conns[idx].resumer.as_mut() {
            r.phase = ResumePhase::Resuming(now);
        }
        if let Err(why) = self.connect(idx) {
            self.fail(idx, why);
        }
    }

    /// The marker and the resume request of a reconnected resuming reader.
    fn resume_bytes(&self, idx: usize) -> Vec<u8> {
        let topics = self.setup.topics.max(1);
        let conn = &self.conns[idx];
        let mut resume = None;
        if let Some(r) = &conn.resumer {
            let positions = r
                .positions
                .iter()
                .enumerate()
                .map(|(s, (epoch, offset))| janus_core::TopicPosition {
                    topic: topic_name(&self.setup.topic, (conn.topic + s as u32) % topics, topics),
                    epoch: epoch.clone(),
                    offset: *offset,
                })
                .collect();
            resume = Some(ClientMessage::Resume(janus_core::Resume::Positions {
                token: r.token.clone(),
                topics: positions,
            }));
        }
        requests(resume.into_iter(), conn.websocket)
    }

    /// The answer to a resume: live again, after the replay.
    fn on_resumed(&mut self, idx: usize, recovered: bool, missed: u64, now: u64) {
        let conn = &mut self.conns[idx];
        conn.state = State::Subscribed;
        let Some(r) = conn.resumer.as_mut() else {
            return;
        };
        if let ResumePhase::Resuming(since) = r.phase {
            let micros = now.saturating_sub(since) / 1000;
            self.resume_counts.resume_time.record_micros(micros);
        }
        r.phase = ResumePhase::Done;
        let c = &mut self.resume_counts;
        if recovered {
            c.recovered += 1;
        } else {
            c.not_recovered += 1;
        }
        c.replayed += missed;
    }

    /// Compares a reader's delivery with the server's clock (a sanity check
    /// only: latency is measured on the monotonic clock).
    fn check_skew(&mut self, d: frame::DeliveryRef<'_>) {
        if let Some(server) = d.server_micros {
            let wall = (sys::monotonic_ns() / 1000) as i64 + self.wall_offset_us;
            let skew = wall - server as i64;
            self.server_skew_us = Some(match self.server_skew_us {
                None => (skew, skew),
                Some((lo, hi)) => (lo.min(skew), hi.max(skew)),
            });
        }
    }

    /// Writes what is pending; false if the connection failed.
    fn flush(&mut self, idx: usize) -> bool {
        let conn = &mut self.conns[idx];
        let (Some(stream), Some(out)) = (conn.stream.as_mut(), conn.out.as_mut()) else {
            return true;
        };
        let mut written = 0u64;
        let mut result = Ok(());
        while !out.is_empty() {
            match stream.write(out) {
                Ok(0) => break,
                Ok(n) => {
                    written += n as u64;
                    out.drain(..n);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        if out.is_empty() {
            conn.out = None;
        }
        if conn.role.background() {
            self.role(idx).bytes_sent += written;
        }
        match result {
            Ok(()) => true,
            Err(e) => {
                self.fail(idx, format!("writing: {e}"));
                false
            }
        }
    }

    /// Records why client `idx` failed (or, for a background client, that
    /// its connection ended) and closes its connection.
    fn fail(&mut self, idx: usize, why: String) {
        self.fail_as(idx, why, None);
    }

    /// As [`Swarm::fail`], reported in `phase` rather than its state's.
    fn fail_as(&mut self, idx: usize, why: String, phase: Option<&'static str>) {
        let now = sys::monotonic_ns();
        let conn = &mut self.conns[idx];
        if conn.role.background() {
            if conn.stream.is_none() {
                return;
            }
            let started = matches!(conn.state, State::Subscribed | State::Acting);
            let counts = self.roles.entry(conn.role.name()).or_default();
            if started {
                // The server cut a client that had done its thing: a cycle.
                counts.closed_by_server += 1;
                counts.cycles += 1;
            } else {
                counts.failures += 1;
            }
            let pause = match (started, conn.role) {
                (false, _) => RETRY_NS,
                (true, Role::Churner) => 0,
                // A hostile client the server cut (an oversized frame is cut
                // at once) pauses, so it tests the server, not the loopback.
                (true, _) => HOSTILE_PAUSE_NS,
            };
            self.close(idx);
            if self.activity_on {
                self.set_timer(idx, now + pause);
            }
            return;
        }
        if conn
            .resumer
            .as_ref()
            .is_some_and(|r| matches!(r.phase, ResumePhase::Resuming(_)))
        {
            // The resume itself failed: the reader is lost.
            if let Some(r) = conn.resumer.as_mut() {
                r.phase = ResumePhase::Done;
            }
            conn.state = State::Disconnected;
            conn.stream = None;
            conn.partial = None;
            conn.out = None;
            self.progress.disconnected += 1;
            self.resume_counts.failed += 1;
            *self.errors.entry(("resume", conn.target, why)).or_insert(0) += 1;
            return;
        }
        if conn.state == State::Draining {
            conn.ended = true;
            conn.stream = None;
            conn.partial = None;
            return;
        }
        let phase = phase.unwrap_or_else(|| conn.state.phase());
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
            _ => return,
        }
        conn.stream = None;
        conn.partial = None;
        conn.out = None;
        *self.errors.entry((phase, conn.target, why)).or_insert(0) += 1;
    }

    /// Closes a background client's connection; it waits in `Idle`.
    fn close(&mut self, idx: usize) {
        let conn = &mut self.conns[idx];
        conn.stream = None;
        conn.partial = None;
        conn.out = None;
        conn.state = State::Idle;
        conn.timer_ns = 0;
    }

    /// Turns the background clients on (staggered over half a second) or
    /// off (every connection closed at once).
    fn set_activity(&mut self, on: bool) {
        self.activity_on = on;
        let now = sys::monotonic_ns();
        for idx in self.subscribers..self.conns.len() {
            if on {
                if self.conns[idx].state == State::Idle && self.conns[idx].timer_ns == 0 {
                    let stagger = (idx % 100) as u64 * 5_000_000;
                    self.set_timer(idx, now + stagger);
                }
            } else {
                self.close(idx);
            }
        }
    }

    /// A background client's timer fired.
    fn on_timer(&mut self, idx: usize, now: u64) {
        let (role, state) = (self.conns[idx].role, self.conns[idx].state);
        match (role, state) {
            (_, State::Idle) if self.activity_on => self.start_cycle(idx, now),
            (_, State::Idle) => {}
            (Role::Reader, State::Away) => self.reconnect(idx, now),
            (_, State::Connecting | State::AwaitHello | State::AwaitAck) => {
                self.fail(idx, "timed out".to_owned());
            }
            (Role::Churner, State::Subscribed) => {
                // Every other cycle unsubscribes first; the rest just drop.
                let conn = &mut self.conns[idx];
                if conn.count % 2 == 0 {
                    let name = topic_name(
                        &self.setup.topic,
                        conn.topic % (2 * self.setup.topics.max(1)),
                        self.setup.topics,
                    );
                    let mut buf = bytes::BytesMut::new();
                    ClientMessage::Unsubscribe(name).encode(&mut buf);
                    conn.out = Some(buf.to_vec());
                    if !self.flush(idx) {
                        return;
                    }
                }
                self.end_cycle(idx, now);
            }
            (Role::Flooder, State::Acting) if now < self.conns[idx].deadline_ns => {
                if self.conns[idx].out.is_none() {
                    self.conns[idx].out = Some(self.flood_chunk(idx));
                }
                if self.flush(idx) {
                    self.set_timer(idx, now + TICK_NS);
                }
            }
            (Role::Trickler, State::Acting) if now < self.conns[idx].deadline_ns => {
                let conn = &mut self.conns[idx];
                let byte = TRICKLE.get(conn.count as usize).copied().unwrap_or(b'a');
                conn.count += 1;
                conn.out = Some(vec![byte]);
                if self.flush(idx) {
                    let every = self.setup.activity.trickle_ms.max(1) * 1_000_000;
                    self.set_timer(idx, now + every);
                }
            }
            _ => self.end_cycle(idx, now),
        }
    }

    /// What a flooder writes next: `x␀`s, or (every other flooder)
    /// subscribe requests.
    fn flood_chunk(&self, idx: usize) -> Vec<u8> {
        let size = self.setup.activity.flood_chunk.max(2) as usize;
        let unit: Vec<u8> = if idx % 2 == 0 {
            b"x\0".to_vec()
        } else {
            let mut buf = bytes::BytesMut::new();
            let name = topic_name(&self.setup.topic, 0, self.setup.topics);
            ClientMessage::Subscribe(name).encode(&mut buf);
            buf.to_vec()
        };
        unit.iter()
            .copied()
            .cycle()
            .take(size.max(unit.len()))
            .collect()
    }

    /// A background client did its thing: it leaves and starts again.
    fn end_cycle(&mut self, idx: usize, now: u64) {
        self.role(idx).cycles += 1;
        self.conns[idx].count = self.conns[idx].count.wrapping_add(1);
        self.close(idx);
        if self.activity_on {
            self.set_timer(idx, now);
        }
    }

    /// Starts a background client's next cycle.
    fn start_cycle(&mut self, idx: usize, now: u64) {
        let conn = &mut self.conns[idx];
        let hold = match conn.role {
            Role::Churner => {
                // Half the topic names have subscribers that count, half
                // only churners.
                let space = 2 * self.setup.topics.max(1) as usize;
                conn.topic = ((idx * 7919 + conn.count as usize * 31) % space) as u32;
                self.timeout_ns
            }
            _ => self
                .setup
                .activity
                .hostile_hold_ms
                .saturating_mul(1_000_000),
        };
        conn.deadline_ns = now + hold;
        if let Err(_why) = self.connect(idx) {
            self.role(idx).failures += 1;
            self.close(idx);
            self.set_timer(idx, now + RETRY_NS);
            return;
        }
        let limit = now + self.timeout_ns;
        self.set_timer(idx, limit);
    }

    /// At the end of the run: reads what each never-reading client was left
    /// with, until its stream ends or none has received anything for
    /// [`DRAIN_QUIET_NS`].
    fn drain_never_read(&mut self, events: &mut Events) -> anyhow::Result<()> {
        let started = sys::monotonic_ns();
        self.drained_ns = started;
        let draining: Vec<usize> = (0..self.subscribers)
            .filter(|&i| {
                self.conns[i].role == Role::NeverRead && self.conns[i].state == State::Subscribed
            })
            .collect();
        if draining.is_empty() {
            return Ok(());
        }
        for &idx in &draining {
            self.conns[idx].state = State::Draining;
            // Its readiness edges went by unread: read what is there now, up
            // to an end of stream or reset that happened meanwhile (a short
            // read does not mean there is nothing more: no new edge will
            // announce an end that came before).
            self.read(idx, true);
        }
        loop {
            let now = sys::monotonic_ns();
            let open = draining.iter().any(|&i| self.conns[i].stream.is_some());
            if !open
                || now.saturating_sub(self.drained_ns) >= DRAIN_QUIET_NS
                || now.saturating_sub(started) >= DRAIN_MAX_NS
            {
                return Ok(());
            }
            self.poll_once(events)?;
        }
    }

    fn on_sent(&mut self, seq: u32, times: &[Option<u64>]) {
        self.progress.sent_seen += 1;
        if seq >= self.setup.messages {
            return;
        }
        for (target, time) in times.iter().enumerate().take(self.sent_per_target.len()) {
            if let Some(t) = time {
                self.ledger.sent(target, seq, *t);
                if self.setup.resume.clients > 0 {
                    self.resume_ledger.sent(target, seq, *t);
                    self.others_ledger.sent(target, seq, *t);
                }
                self.sent_per_target[target] += 1;
            }
        }
    }

    /// Messages of the first `sent` that client `c` should receive, per
    /// subscription.
    fn expected(&self, c: &Conn, sent: u32) -> impl Iterator<Item = u32> + '_ {
        let topics = self.setup.topics.max(1);
        let first = c.topic;
        (0..c.seqs.len() as u32).map(move |s| per_topic(sent, topics, (first + s) % topics))
    }

    /// Recomputes how many deliveries of sent messages live readers lack,
    /// and how many background connections are open.
    fn update_pending(&mut self) {
        let mut pending = 0u64;
        if self.progress.sent_seen > 0 {
            for c in &self.conns[..self.subscribers] {
                let away = c
                    .resumer
                    .as_ref()
                    .is_some_and(|r| matches!(r.phase, ResumePhase::Resuming(_)));
                if c.role == Role::Reader && (c.state == State::Subscribed || away) {
                    let sent = self.sent_per_target[usize::from(c.target)];
                    for (want, got) in self.expected(c, sent).zip(&c.seqs) {
                        pending += u64::from(want.saturating_sub(got.received()));
                    }
                }
            }
        }
        self.progress.pending = pending;
        self.progress.active = self.conns[self.subscribers..]
            .iter()
            .filter(|c| c.stream.is_some())
            .count() as u32;
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
            clients: u32::try_from(self.subscribers).unwrap_or(u32::MAX),
            subscribed: self.progress.subscribed,
            good: 0,
            bad_setup: 0,
            bad_disconnected: 0,
            bad_missing: 0,
            bad_duplicated: 0,
            bad_reordered: 0,
            expected: 0,
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
            never_read: NeverRead::default(),
            activity: self
                .roles
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect(),
            resume: ResumeCounts {
                latency: self.resume_ledger.histogram().clone(),
                others_latency: self.others_ledger.histogram().clone(),
                ..self.resume_counts.clone()
            },
        };
        for c in &self.conns[..self.subscribers] {
            let want: Vec<u32> = self.expected(c, m).collect();
            let missing: u32 = want.iter().zip(&c.seqs).map(|(w, s)| s.missing(*w)).sum();
            if c.role == Role::NeverRead {
                if !matches!(c.state, State::Draining | State::Subscribed) {
                    r.bad_setup += u32::from(c.state == State::Failed);
                    continue;
                }
                let n = &mut r.never_read;
                n.clients += 1;
                if c.ended {
                    n.cut += 1;
                    n.told += u32::from(c.told);
                } else if c.seqs.iter().any(SeqTracker::has_gaps) {
                    n.trimmed += 1;
                } else if missing == 0 {
                    n.complete += 1;
                } else {
                    n.stalled += 1;
                }
                continue;
            }
            r.expected += u64::from(want.iter().sum::<u32>());
            let (dups, late): (u32, u32) = c
                .seqs
                .iter()
                .fold((0, 0), |(d, l), s| (d + s.duplicates(), l + s.reordered()));
            r.received += c.seqs.iter().map(|s| u64::from(s.received())).sum::<u64>();
            r.duplicates += u64::from(dups);
            r.reordered += u64::from(late);
            match c.state {
                State::Subscribed if dups > 0 => r.bad_duplicated += 1,
                State::Subscribed if late > 0 => r.bad_reordered += 1,
                State::Subscribed if missing > 0 => r.bad_missing += 1,
                State::Subscribed => r.good += 1,
                State::Disconnected => r.bad_disconnected += 1,
                _ => r.bad_setup += 1,
            }
        }
        r
    }
}

/// Makes the last `setup.resume.clients` readers resuming readers, each
/// dropping its connection after a share of its messages spread between a
/// quarter and three quarters (a reader expecting fewer than two messages
/// cannot resume mid-run and stays an ordinary reader).
fn plan_resumers(setup: &Setup, conns: &mut [Conn]) {
    let n = setup.resume.clients as usize;
    let topics = setup.topics.max(1);
    let readers = conns.len().saturating_sub(setup.never_read as usize);
    let first = conns.len() - n.min(readers);
    for (j, conn) in conns[first..].iter_mut().enumerate() {
        let want: u32 = (0..conn.seqs.len() as u32)
            .map(|s| per_topic(setup.messages, topics, (conn.topic + s) % topics))
            .sum();
        if want < 2 {
            continue;
        }
        let share = 0.25 + 0.5 * (j as f64 + 0.5) / n as f64;
        let drop_after = ((f64::from(want) * share).ceil() as u32).clamp(1, want - 1);
        conn.resumer = Some(Box::new(Resumer {
            phase: ResumePhase::Planned,
            drop_after,
            token: String::new(),
            positions: vec![(String::new(), 0); conn.seqs.len()],
        }));
    }
}

/// The `"offset":N` that ends an offset client's delivery.
fn frame_offset(bytes: &[u8]) -> Option<u64> {
    const KEY: &[u8] = b",\"offset\":";
    let at = memchr::memmem::rfind(bytes, KEY)?;
    let digits = bytes[at + KEY.len()..].strip_suffix(b"}")?;
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// The bytes of client requests: over TCP the marker, then each request
/// with its terminator (P1); over WebSocket one masked text message each,
/// without marker or terminator (X2).
fn requests(messages: impl Iterator<Item = ClientMessage>, ws: bool) -> Vec<u8> {
    let mut buf = bytes::BytesMut::new();
    if !ws {
        buf.extend_from_slice(janus_core::REGULAR_SOCKET_MARKER);
        buf.extend_from_slice(&[janus_core::CLIENT_TERMINATOR]);
    }
    let mut out = Vec::new();
    for message in messages {
        message.encode(&mut buf);
        if ws {
            let frame = buf.split();
            let json = frame
                .strip_suffix(&[janus_core::CLIENT_TERMINATOR])
                .unwrap_or(&frame);
            out.extend(janus_core::ws::client_text_frame(json, WS_MASK));
        }
    }
    if ws {
        out
    } else {
        buf.to_vec()
    }
}

/// Opens a non-blocking client socket and starts connecting.
fn open(target: SocketAddr, source: Option<IpAddr>, rcvbuf: Option<u32>) -> io::Result<TcpStream> {
    let socket = Socket::new(
        Domain::for_address(target),
        Type::STREAM.nonblocking(),
        Some(Protocol::TCP),
    )?;
    socket.set_tcp_nodelay(true)?;
    if let Some(size) = rcvbuf {
        // Before connecting, so that the window the server sees is small.
        socket.set_recv_buffer_size(size as usize)?;
    }
    if let Some(ip) = source {
        // Leave the port to connect(), which only needs it unique per target.
        if ip.is_ipv4() {
            sys::set_bind_address_no_port(&socket)?;
        }
        socket.bind(&SocketAddr::new(ip, 0).into())?;
    }
    match socket.connect(&target.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(Errno::EINPROGRESS as i32) => {}
        Err(e) => return Err(e),
    }
    Ok(TcpStream::from_std(socket.into()))
}

fn describe_connect_error(e: &io::Error, source: Option<IpAddr>) -> String {
    let errno = e.raw_os_error().map(Errno::from_raw);
    if errno == Some(Errno::EADDRNOTAVAIL) {
        let from = source.map_or_else(
            || "the default source address".to_owned(),
            |s| s.to_string(),
        );
        return format!("{e}: out of ephemeral ports on {from}; spread clients with --source-ips");
    }
    if matches!(errno, Some(Errno::EMFILE | Errno::ENFILE)) {
        return format!("{e}: out of file descriptors; use more --workers");
    }
    e.to_string()
}

/// A frame for an error message: lossy text, at most 100 characters.
/// Why a client waiting for its hello got none, `what` plus what the peer
/// sent instead, if anything (an HTTP answer says the port is an HTTP one).
fn no_hello(conn: &Conn, what: &str) -> String {
    let sent = conn
        .partial
        .as_deref()
        .or_else(|| conn.ws.as_ref().map(|ws| &ws.buf[..]))
        .filter(|b| !b.is_empty());
    match sent {
        Some(b) if b.starts_with(b"HTTP/") && !conn.websocket => {
            let line = b.split(|&c| c == b'\r' || c == b'\n').next().unwrap_or(b);
            format!("{what}; it answered in HTTP ({}) instead", show(line))
        }
        // A WebSocket client at a plain TCP client port.
        Some(b) if conn.websocket && looks_like_hello(b) => {
            format!("{what}; it sent a Janus hello, not a WebSocket handshake answer")
        }
        Some(b) => format!("{what}; it sent {} instead", show(b)),
        None => what.to_owned(),
    }
}

/// Whether `bytes` start with a whole Janus hello frame.
fn looks_like_hello(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .position(|&b| b == janus_core::SERVER_TERMINATOR)
        .and_then(|end| std::str::from_utf8(&bytes[..end]).ok())
        .is_some_and(|f| matches!(ServerMessage::parse(f), Ok(ServerMessage::Hello { .. })))
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_spread_over_topics() {
        assert_eq!(per_topic(10, 1, 0), 10);
        let counts: Vec<u32> = (0..4).map(|j| per_topic(10, 4, j)).collect();
        assert_eq!(counts, [3, 3, 2, 2]);
        assert_eq!(counts.iter().sum::<u32>(), 10);
    }

    #[test]
    fn offsets_are_read_from_the_end_of_a_delivery() {
        let d = br#"{"timestamp":[1,2,3],"topic":"t","event":"","message_id":"4","data":{"offset":9},"offset":12}"#;
        assert_eq!(frame_offset(d), Some(12));
        assert_eq!(frame_offset(br#"{"topic":"t","data":1}"#), None);
        assert_eq!(frame_offset(br#"{"data":1,"offset":x}"#), None);
    }

    #[test]
    fn resumers_are_the_last_readers_and_drop_mid_run() {
        let setup = Setup {
            name: "w".into(),
            topic: "t".into(),
            messages: 100,
            targets: vec![SocketAddr::from(([127, 0, 0, 1], 1))],
            ws_targets: Vec::new(),
            groups: Vec::new(),
            connect_concurrency: 1,
            timeout_ms: 1,
            max_frame: 1,
            topics: 1,
            subscriptions: 1,
            first_client: 0,
            never_read: 2,
            never_read_rcvbuf: 1,
            activity: crate::control::Activity::default(),
            resume: crate::control::ResumePlan {
                clients: 4,
                away_ms: 1,
                target: None,
            },
        };
        let mut conns: Vec<Conn> = (0..10)
            .map(|_| Conn::new(Role::Reader, 0, None, 0, 1))
            .collect();
        plan_resumers(&setup, &mut conns);
        let drops: Vec<Option<u32>> = conns
            .iter()
            .map(|c| c.resumer.as_ref().map(|r| r.drop_after))
            .collect();
        assert!(drops[..6].iter().all(Option::is_none));
        let drops: Vec<u32> = drops[6..].iter().flatten().copied().collect();
        assert_eq!(drops, [32, 44, 57, 69], "spread over the middle half");
    }
}
