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
    /// Connect and subscribe a swarm of clients.
    Setup(Setup),
    /// Message `seq` was published; `times[target]` is its send instant on
    /// the worker's clock, or `None` if publishing to that target failed.
    Sent {
        /// Sequence number (the `message_id`).
        seq: u32,
        /// Send instant per target.
        times: Vec<Option<u64>>,
    },
    /// Stop measuring, answer with [`Event::Results`] and exit.
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
    /// The clients, by target and source address.
    pub groups: Vec<ClientGroup>,
    /// Clients of this worker that may be connecting at once.
    pub connect_concurrency: u32,
    /// Time a client has to connect, read the hello and get its `ACK`.
    pub timeout_ms: u64,
    /// Longest server frame accepted.
    pub max_frame: usize,
}

impl Setup {
    /// Total clients in this setup.
    pub fn clients(&self) -> u64 {
        self.groups.iter().map(|g| u64::from(g.count)).sum()
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
        let setup = Command::Setup(Setup {
            name: "worker 1".into(),
            topic: "t".into(),
            messages: 3,
            targets: vec!["127.0.0.1:8081".parse().unwrap()],
            groups: vec![ClientGroup {
                target: 0,
                source: Some("127.0.0.2".parse().unwrap()),
                count: 7,
            }],
            connect_concurrency: 64,
            timeout_ms: 1000,
            max_frame: 1 << 20,
        });
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

        let pong: Event = serde_json::from_str(r#"{"type":"pong","t0":1,"t":2}"#).unwrap();
        assert_eq!(pong, Event::Pong { t0: 1, t: 2 });
    }
}
