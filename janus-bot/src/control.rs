//! The worker protocol: how a coordinator drives workers and agents.
//!
//! One JSON object per line, in both directions, over a worker process's
//! stdin/stdout or over an agent's TCP connection (the agent relays the
//! lines to a worker process of its own, byte for byte):
//!
//! ```text
//! coordinator                                 worker
//!   {"type":"ping","t0":…}            ──▶
//!                                     ◀──   {"type":"pong","t0":…,"t":…}       (clock offset)
//!   {"type":"setup",…}                ──▶
//!                                     ◀──   {"type":"progress",…}  (every 250 ms)
//!                                     ◀──   {"type":"ready",…}     (all clients subscribed or failed)
//!   {"type":"sent","seq":0,"times":[…]} ──▶                          (one per published message)
//!                                     ◀──   {"type":"progress",…}
//!   {"type":"finish"}                 ──▶
//!                                     ◀──   {"type":"results",…}   (then the worker exits)
//! ```
//!
//! Times are nanoseconds of `CLOCK_MONOTONIC` on the worker's machine: the
//! coordinator converts its send instants with the clock offset it measured
//! (zero for local workers, which share its clock) before sending them.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr};

use janus_histo::Recorder;
use serde::{Deserialize, Serialize};

use crate::tally::MessageStat;

/// What a coordinator tells a worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Command {
    /// Clock probe: answer with a [`Event::Pong`] carrying the worker's clock.
    Ping {
        /// The coordinator's clock when it sent the ping.
        t0: u64,
    },
    /// Connect and subscribe a swarm of clients (boxed: far larger than the
    /// other commands).
    Setup(Box<Setup>),
    /// Message `seq` was published; `times[target]` is its send instant on
    /// the worker's clock, or `None` if publishing to that target failed.
    Sent {
        /// Sequence number (the `message_id`).
        seq: u32,
        /// Send instant per target.
        times: Vec<Option<u64>>,
    },
    /// Start (`on`) or stop the background activity of [`Setup::activity`]:
    /// churners and hostile clients. Stopping closes all their connections.
    Activity {
        /// Whether the activity should run.
        on: bool,
    },
    /// Stop measuring, read what never-reading clients were left with,
    /// answer with [`Event::Results`] and exit.
    Finish,
}

/// The swarm one worker runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Setup {
    /// Name used in messages ("worker 2", "agent 10.0.0.5:7070").
    pub name: String,
    /// Topic every client subscribes to.
    pub topic: String,
    /// Messages that will be published (sequence numbers `0..messages`).
    pub messages: u32,
    /// Server addresses; clients name them by index.
    pub targets: Vec<SocketAddr>,
    /// With WebSocket subscribers (X2): each target's WebSocket address,
    /// same order; subscribing clients connect there. Empty: plain TCP.
    #[serde(default)]
    pub ws_targets: Vec<SocketAddr>,
    /// The clients, by target and source address.
    pub groups: Vec<ClientGroup>,
    /// Clients of this worker that may be connecting at once.
    pub connect_concurrency: u32,
    /// Time a client has to connect, read the hello and get its `ACK`.
    pub timeout_ms: u64,
    /// Longest server frame accepted.
    pub max_frame: usize,
    /// Topics the messages are spread over: message `seq` goes to topic
    /// `seq % topics` (see [`topic_name`]).
    pub topics: u32,
    /// Topics each subscribing client subscribes to: client `g` of the
    /// swarm takes topics `g*k .. g*k+k` (mod `topics`).
    pub subscriptions: u32,
    /// Index in the whole swarm of this worker's first client, so that
    /// topics are shared out the same way however the swarm is split.
    pub first_client: u64,
    /// How many of this worker's subscribing clients never read (protocol
    /// P8's slow consumers): they subscribe, then leave their socket alone
    /// until [`Command::Finish`], with a small receive buffer.
    pub never_read: u32,
    /// Receive buffer of never-reading and stuck clients, bytes.
    pub never_read_rcvbuf: u32,
    /// Background clients, started and stopped with [`Command::Activity`].
    #[serde(default)]
    pub activity: Activity,
    /// Readers that lose their connection mid-run and resume (docs/protocol.md, X1).
    #[serde(default)]
    pub resume: ResumePlan,
}

/// Readers that drop their connection during the run and resume from their
/// topic positions (docs/protocol.md, X1): each opts in to offsets, drops its
/// connection (a reset, as a lost network) after a share of its messages
/// between a quarter and three quarters, stays away `away_ms`, then
/// reconnects and resumes. The sequence check spans both connections, so a
/// message lost or repeated across the resume shows as a gap or a duplicate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResumePlan {
    /// How many of this worker's readers resume (the last ones).
    pub clients: u32,
    /// How long a resuming reader stays away, ms.
    pub away_ms: u64,
    /// Where a resuming reader reconnects (another node of the cluster);
    /// None: the server it left.
    #[serde(default)]
    pub target: Option<SocketAddr>,
}

impl Setup {
    /// Total subscribing clients in this setup.
    pub fn clients(&self) -> u64 {
        self.groups.iter().map(|g| u64::from(g.count)).sum()
    }

    /// Every connection this setup may hold at once.
    pub fn connections(&self) -> u64 {
        self.clients() + self.activity.clients()
    }
}

/// The name of topic `index` of a run on base topic `base` with `topics`
/// topics: `base` itself for a one-topic run, else `base-INDEX`. Churners
/// also use indexes from `topics` to `2*topics`, topics without messages.
pub fn topic_name(base: &str, index: u32, topics: u32) -> String {
    if topics <= 1 && index == 0 {
        base.to_owned()
    } else {
        format!("{base}-{index}")
    }
}

/// The clients a worker runs in the background while the activity is on:
/// connection churn and hostile behaviours. Each one runs in cycles:
/// connect, do its thing, leave (or be cut by the server), and again.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Activity {
    /// Clients that connect, subscribe to one topic, stay `hold_ms`,
    /// unsubscribe (every other cycle) and disconnect.
    pub churners: u32,
    /// How long a churner stays subscribed, ms.
    pub hold_ms: u64,
    /// Clients that subscribe to the run's topics and never read.
    pub stuck: u32,
    /// Clients that send requests over and over (`x␀`, or subscribe
    /// requests) without ever reading the answers.
    pub flooders: u32,
    /// Bytes a flooder writes per 50 ms while its socket takes them.
    pub flood_chunk: u32,
    /// Clients that send one byte every `trickle_ms`, never completing a frame.
    pub tricklers: u32,
    /// Interval between a trickler's bytes, ms.
    pub trickle_ms: u64,
    /// Clients that send one frame longer than the server's limit.
    pub oversized: u32,
    /// Length of that frame, bytes.
    pub oversized_bytes: u32,
    /// How long a stuck client, flooder, trickler or oversized sender keeps
    /// at it before it leaves and starts again, ms.
    pub hostile_hold_ms: u64,
}

impl Activity {
    /// Total background clients.
    pub fn clients(&self) -> u64 {
        [
            self.churners,
            self.stuck,
            self.flooders,
            self.tricklers,
            self.oversized,
        ]
        .iter()
        .map(|&n| u64::from(n))
        .sum()
    }

    /// This worker's share: every count divided by `parts`, the `part`-th
    /// share getting one more while a remainder lasts.
    pub fn share(&self, part: u64, parts: u64) -> Activity {
        let cut = |n: u32| {
            let n = u64::from(n);
            let parts = parts.max(1);
            u32::try_from(n / parts + u64::from(part < n % parts)).unwrap_or(u32::MAX)
        };
        Activity {
            churners: cut(self.churners),
            stuck: cut(self.stuck),
            flooders: cut(self.flooders),
            tricklers: cut(self.tricklers),
            oversized: cut(self.oversized),
            ..self.clone()
        }
    }
}

/// `count` clients connecting to one target from one source address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientGroup {
    /// Index into [`Setup::targets`].
    pub target: u16,
    /// Local address to bind before connecting; `None` lets the kernel choose.
    pub source: Option<IpAddr>,
    /// Number of clients.
    pub count: u32,
}

/// What a worker tells its coordinator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// Answer to [`Command::Ping`].
    Pong {
        /// The ping's `t0`, echoed.
        t0: u64,
        /// The worker's clock when it answered.
        t: u64,
    },
    /// Counters, sent periodically.
    Progress(Progress),
    /// Every client is subscribed or has failed: this worker is at the barrier.
    Ready {
        /// Counters at that moment.
        progress: Progress,
        /// Subscribed clients per target.
        subscribed_per_target: Vec<u32>,
        /// Why clients failed, so far.
        errors: Vec<ErrorCount>,
        /// CPU time the worker process had used by then, ns.
        cpu_ns: u64,
    },
    /// The final figures, answer to [`Command::Finish`].
    Results(Box<Results>),
    /// The worker cannot go on.
    Fatal {
        /// Why.
        error: String,
    },
}

/// Running counters of a worker.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// Clients whose TCP connection is established (now or earlier).
    pub connected: u32,
    /// Clients that got their `ACK`.
    pub subscribed: u32,
    /// Clients that failed before subscribing.
    pub failed: u32,
    /// Subscribed clients whose connection was lost.
    pub disconnected: u32,
    /// Distinct deliveries received.
    pub received: u64,
    /// Deliveries of sent messages that live clients still wait for.
    pub pending: u64,
    /// `sent` commands processed so far.
    pub sent_seen: u32,
    /// Background (activity) connections open now.
    #[serde(default)]
    pub active: u32,
}

/// How many clients failed one way, on one target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorCount {
    /// When: `connect`, `handshake` or `run`.
    pub phase: String,
    /// Target index.
    pub target: u16,
    /// The error, e.g. "Connection refused (os error 111)".
    pub error: String,
    /// Clients it happened to.
    pub count: u32,
}

/// Everything a worker measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Results {
    /// Clients this worker ran.
    pub clients: u32,
    /// Clients that subscribed.
    pub subscribed: u32,
    /// Clients that received every message once, in order, and stayed connected.
    pub good: u32,
    /// Clients that never subscribed.
    pub bad_setup: u32,
    /// Subscribed clients that lost their connection.
    pub bad_disconnected: u32,
    /// Connected clients that missed a message.
    pub bad_missing: u32,
    /// Connected clients that got a message twice.
    pub bad_duplicated: u32,
    /// Connected clients that got messages out of order.
    pub bad_reordered: u32,
    /// Deliveries the reading clients should receive (never-reading ones
    /// are not counted).
    pub expected: u64,
    /// Distinct deliveries received.
    pub received: u64,
    /// Repeated deliveries.
    pub duplicates: u64,
    /// Deliveries that arrived after a later message.
    pub reordered: u64,
    /// Deliveries whose `message_id` is not one this run published.
    pub unexpected: u64,
    /// Deliveries that seemed to precede their publish (clock offset error).
    pub negative: u64,
    /// Deliveries of messages whose send instant never arrived.
    pub unmatched: u64,
    /// Latency of every distinct delivery, µs.
    pub histogram: Recorder,
    /// Per-message figures, indexed `target * messages + seq`.
    pub messages: Vec<MessageStat>,
    /// Why clients failed or disconnected.
    pub errors: Vec<ErrorCount>,
    /// Smallest and largest (bot wall clock − server timestamp), µs.
    pub server_skew_us: Option<(i64, i64)>,
    /// CPU time the worker process used, ns.
    pub cpu_ns: u64,
    /// Socket reads that returned data.
    pub reads: u64,
    /// Event loop wake-ups with at least one socket event.
    pub wakeups: u64,
    /// What became of the never-reading clients.
    #[serde(default)]
    pub never_read: NeverRead,
    /// What the background clients did, by kind (`churner`, `stuck`, …).
    #[serde(default)]
    pub activity: BTreeMap<String, RoleCounts>,
    /// What the resuming readers saw (see [`ResumePlan`]).
    #[serde(default)]
    pub resume: ResumeCounts,
}

/// What resuming readers saw.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ResumeCounts {
    /// Readers planned to resume.
    pub clients: u32,
    /// Resumes answered `recovered: true`.
    pub recovered: u32,
    /// Resumes answered `recovered: false` (which must not happen while the
    /// server's history reaches back).
    pub not_recovered: u32,
    /// Resumes that got no `resumed` answer (an error, or the connection failed).
    pub failed: u32,
    /// Messages the server said it replayed (`missed`), in all.
    pub replayed: u64,
    /// Reconnect to `resumed` answer, µs.
    pub resume_time: Recorder,
    /// Latency of every distinct delivery to a resuming reader, replayed or
    /// live, µs.
    pub latency: Recorder,
    /// Latency of every distinct delivery to the other readers, µs: the
    /// run's latency as if nobody had resumed.
    #[serde(default)]
    pub others_latency: Recorder,
}

impl ResumeCounts {
    /// Adds another worker's counts.
    pub fn merge(&mut self, o: &ResumeCounts) {
        self.clients += o.clients;
        self.recovered += o.recovered;
        self.not_recovered += o.not_recovered;
        self.failed += o.failed;
        self.replayed += o.replayed;
        self.resume_time.merge(&o.resume_time);
        self.latency.merge(&o.latency);
        self.others_latency.merge(&o.others_latency);
    }
}

/// What became of never-reading clients, read at the end of the run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NeverRead {
    /// Never-reading clients that subscribed.
    pub clients: u32,
    /// The server closed them (a slow consumer cut).
    pub cut: u32,
    /// Of those, the ones whose stream ended with a `slow_consumer` error frame.
    pub told: u32,
    /// Still connected, with older messages dropped (a gap).
    pub trimmed: u32,
    /// Still connected and got every message: never treated as slow.
    pub complete: u32,
    /// Still connected, incomplete, without a gap: neither cut nor trimmed.
    pub stalled: u32,
}

impl NeverRead {
    /// Adds another worker's counts.
    pub fn merge(&mut self, o: &NeverRead) {
        self.clients += o.clients;
        self.cut += o.cut;
        self.told += o.told;
        self.trimmed += o.trimmed;
        self.complete += o.complete;
        self.stalled += o.stalled;
    }
}

/// What one kind of background client did over the run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleCounts {
    /// Clients of this kind.
    pub clients: u32,
    /// Connections made.
    pub connections: u64,
    /// Cycles completed (the client did its thing and left, or was cut).
    pub cycles: u64,
    /// Connections the server closed before the client left.
    pub closed_by_server: u64,
    /// Connections that failed: refused, timed out, reset before the hello.
    pub failures: u64,
    /// Bytes written.
    pub bytes_sent: u64,
    /// Error frames received, by code.
    pub error_frames: BTreeMap<String, u64>,
}

impl RoleCounts {
    /// Adds another worker's counts.
    pub fn merge(&mut self, o: &RoleCounts) {
        self.clients += o.clients;
        self.connections += o.connections;
        self.cycles += o.cycles;
        self.closed_by_server += o.closed_by_server;
        self.failures += o.failures;
        self.bytes_sent += o.bytes_sent;
        for (code, n) in &o.error_frames {
            *self.error_frames.entry(code.clone()).or_insert(0) += n;
        }
    }
}

/// Writes one value as a JSON line and flushes.
///
/// # Errors
/// When writing fails (the peer is gone).
pub fn write_line(out: &mut impl Write, value: &impl Serialize) -> io::Result<()> {
    serde_json::to_writer(&mut *out, value)?;
    out.write_all(b"\n")?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip() {
        let setup = Command::Setup(Box::new(Setup {
            name: "worker 1".into(),
            topic: "t".into(),
            messages: 3,
            targets: vec!["127.0.0.1:8081".parse().unwrap()],
            ws_targets: vec!["127.0.0.1:8083".parse().unwrap()],
            groups: vec![ClientGroup {
                target: 0,
                source: Some("127.0.0.2".parse().unwrap()),
                count: 7,
            }],
            connect_concurrency: 64,
            timeout_ms: 1000,
            max_frame: 1 << 20,
            topics: 1,
            subscriptions: 1,
            first_client: 0,
            never_read: 0,
            never_read_rcvbuf: 4096,
            activity: Activity::default(),
            resume: ResumePlan::default(),
        }));
        let mut buf = Vec::new();
        write_line(&mut buf, &setup).unwrap();
        write_line(&mut buf, &Command::Finish).unwrap();
        let text = String::from_utf8(buf).unwrap();
        let lines: Vec<Command> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines, [setup, Command::Finish]);
        assert!(text.starts_with("{\"type\":\"setup\""));

        assert_eq!(topic_name("t", 0, 1), "t");
        assert_eq!(topic_name("t", 1, 1), "t-1");
        assert_eq!(topic_name("t", 0, 5), "t-0");
        let a = Activity {
            churners: 5,
            stuck: 1,
            ..Activity::default()
        };
        let shares: Vec<u32> = (0..3).map(|i| a.share(i, 3).churners).collect();
        assert_eq!(shares, [2, 2, 1]);
        assert_eq!(a.share(1, 3).stuck, 0);
        assert_eq!(a.clients(), 6);

        let pong: Event = serde_json::from_str(r#"{"type":"pong","t0":1,"t":2}"#).unwrap();
        assert_eq!(pong, Event::Pong { t0: 1, t: 2 });
    }
}
