//! The command line: flags, their validation into a [`RunConfig`], and exit
//! statuses.
//!
//! The run modes share one set of flags ([`RunArgs`]): `run` measures a
//! fan-out, `churn` adds background connection churn, `soak` adds hostile
//! clients and runs for ten minutes. Errors are printed once, with their
//! causes, on stderr, and the exit status says what kind of failure it was
//! (see [`EXIT_CODES`]).

use std::io::{Seek as _, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::{Args, Parser, Subcommand};
use janus_core::cli::{whole, Worded};

use crate::control::Activity;

/// How the subscribing clients connect (`--transport`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Transport {
    /// Plain TCP, the 2009 protocol.
    Tcp,
    /// WebSocket (protocol X2).
    Ws,
}
use crate::coordinator::{self, RunConfig, Unreachable, Watch};
use crate::plan;
use crate::progress::ProgressMode;
use crate::publisher::{self, PublishMode};
use crate::sys;

/// The exit statuses, as `--help` shows them.
pub const EXIT_CODES: &str = "\
Exit status:
  0  success: every expected delivery arrived (run, churn, soak); the server took the message (publish)
  1  the operation ran and failed: deliveries missing, clients misbehaved, the server refused
  2  usage or configuration error (bad flags or values)
  3  cannot connect to the server (target) or to an agent, or the target is not a Janus
     server (it did not greet with a Janus hello: an HTTP port, say)
  130, 143  interrupted by SIGINT (Ctrl-C) or SIGTERM: one line says what was measured";

/// Load bot for Janus servers: swarms of subscribers, latency on one clock.
#[derive(Debug, Parser)]
#[command(name = "janus-bot", version, after_help = EXIT_CODES)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Cmd,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Measure: N clients subscribe, wait at a barrier, M messages are
    /// published, every delivery's latency is measured.
    ///
    /// One topic by default (the 2009 benchmark); with --topics and
    /// --subscriptions, many topics with a few subscribers each. With
    /// --never-read-percent, some subscribers never read, to see what the
    /// server's slow-consumer policy does to them while the others keep
    /// their latency.
    ///
    /// Example: janus-bot run --clients 19000 --messages 1 --json run.json
    #[command(after_help = EXIT_CODES)]
    Run(RunArgs),
    /// Measure while clients keep coming and going (connection churn).
    ///
    /// As `run`, with background churners that connect, subscribe, stay a
    /// moment, unsubscribe (every other time) and leave, in a loop.
    /// Messages flow for --duration at --rate. Before the measurement, a
    /// warm-up of the same churn without messages; with --server-pid, the
    /// server's memory is read after the warm-up and again once the churn
    /// has stopped.
    ///
    /// Example: janus-bot churn --clients 2000 --topics 200 --churners 200
    /// --duration 30s --rate 100 --server-pid $(pidof janus-server)
    #[command(after_help = EXIT_CODES)]
    Churn(ChurnArgs),
    /// Ten minutes of churn and hostile clients around canary subscribers.
    ///
    /// Churn plus stuck readers (they subscribe and never read), request flooders (`x␀` or subscribe
    /// requests, never reading the answers), tricklers (one byte every few
    /// seconds, never a whole frame) and oversized frames, each in cycles.
    /// The subscribers are canaries whose latency must hold; with
    /// --server-pid, the report says whether the server's memory came back
    /// after the hostile clients left.
    ///
    /// Example: janus-bot soak --clients 20 --duration 10m --server-pid
    /// $(pidof janus-server) --json soak.json
    #[command(after_help = EXIT_CODES)]
    Soak(SoakArgs),
    /// Measure while some clients lose their connection mid-run and resume
    /// (docs/protocol.md, X1): nothing may be lost or repeated.
    ///
    /// As `run`, but --resume-percent of the reading clients opt in to
    /// offsets, drop their connection (a reset, like a lost network) after
    /// a share of their messages between a quarter and three quarters,
    /// stay away --away, then reconnect and resume from their topic
    /// positions. Each must be answered `recovered: true` and end with every
    /// message once, in order; the report gives their resume time and
    /// delivery latency apart.
    ///
    /// Example: janus-bot resume --clients 10000 --messages 200 --rate 100
    /// --resume-percent 10
    #[command(after_help = EXIT_CODES)]
    Resume(ResumeArgs),
    /// Run a long-lived agent that runs worker processes for remote
    /// coordinators (`run --agents`). Prints the bound address first.
    #[command(after_help = EXIT_CODES)]
    Agent(AgentArgs),
    /// Publish one message, like `janus-admin publish TOPIC DATA` but as a
    /// client of the server (protocol P5, X3, or exactly as the 2009 bot).
    ///
    /// Example: janus-bot publish news '{"hello":"world"}' --publish-mode 2009
    #[command(after_help = EXIT_CODES)]
    Publish(PublishArgs),
    /// Internal: a worker process driven over stdin/stdout.
    #[command(hide = true)]
    Worker,
}

/// The flags every run mode shares.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Server address(es), HOST:PORT, comma-separated or repeated. Clients are
    /// spread over them; each message is published to every one (unless
    /// --clustered).
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1:8081")]
    pub target: Vec<String>,
    /// Agents (`janus-bot agent`) to run the clients on, HOST:PORT,
    /// comma-separated [default: none: clients run in local worker processes].
    #[arg(long, value_delimiter = ',')]
    pub agents: Vec<String>,
    /// Number of subscribing clients (in a soak: the canaries).
    #[arg(long, short = 'n', value_parser = Worded(whole::<u64, 1>), allow_negative_numbers = true)]
    pub clients: u64,
    /// Topic the clients subscribe to; with --topics N, the base of the
    /// names TOPIC-0 … TOPIC-(N-1).
    #[arg(long, default_value = "janus-bot")]
    pub topic: String,
    /// Topics the messages are spread over: message i goes to topic i mod N.
    #[arg(long, default_value_t = 1, value_parser = Worded(whole::<u32, 1>), allow_negative_numbers = true)]
    pub topics: u32,
    /// Topics each client subscribes to (client c takes topics c·K … c·K+K-1,
    /// mod --topics).
    #[arg(long, default_value_t = 1, value_parser = Worded(whole::<u32, 1>), allow_negative_numbers = true)]
    pub subscriptions: u32,
    /// Number of messages to publish [default: 1; churn and soak: --rate ×
    /// --duration, and this flag is ignored].
    #[arg(long, short = 'm', value_parser = Worded(whole::<u32, 1>), allow_negative_numbers = true)]
    pub messages: Option<u32>,
    /// Messages per second.
    #[arg(long, default_value_t = 10.0, value_parser = Worded(number), allow_negative_numbers = true)]
    pub rate: f64,
    /// Size of each message's data string, bytes.
    #[arg(long, default_value_t = 64, value_parser = Worded(whole::<usize, 0>), allow_negative_numbers = true)]
    pub payload: usize,
    /// Percentage of the subscribing clients that never read after their
    /// ACK (slow consumers); what the server did to them is read at the end.
    #[arg(long, default_value_t = 0.0, value_parser = Worded(number), allow_negative_numbers = true)]
    pub never_read_percent: f64,
    /// Receive buffer of never-reading (and stuck) clients, bytes: small, so
    /// the server's queue for them fills quickly.
    #[arg(long, default_value_t = 4096, value_parser = Worded(whole::<u32, 0>), allow_negative_numbers = true)]
    pub never_read_rcvbuf: u32,
    /// Local worker processes [default: one per 18,000 clients, or fewer
    /// when the open-file limit is lower].
    #[arg(long, value_parser = Worded(whole::<u32, 1>), allow_negative_numbers = true)]
    pub workers: Option<u32>,
    /// Source addresses to bind clients to, e.g. 127.0.0.2-127.0.0.20
    /// [default: the kernel's choice, extended to 127.0.0.2, 127.0.0.3, …
    /// past 12,000 clients per loopback target].
    #[arg(long)]
    pub source_ips: Option<String>,
    /// Limit for every wait: a client's connect + hello + ACK, each publish,
    /// and the deliveries after the last publish.
    #[arg(long, default_value = "10s", value_parser = Worded(duration), allow_negative_numbers = true)]
    pub timeout: Duration,
    /// Clients connecting at once, over all workers.
    #[arg(long, default_value_t = 256, value_parser = Worded(whole::<u32, 0>), allow_negative_numbers = true)]
    pub connect_concurrency: u32,
    /// How messages are published: one-shot PUBLISH connections that wait
    /// for the server to close them (P5), exactly as the 2009 bot (`2009`:
    /// no trailing NUL, closed at once without reading the hello), or one
    /// persistent connection per target (X3).
    #[arg(long, alias = "publish-form", value_enum, default_value = "oneshot")]
    pub publish_mode: PublishMode,
    /// The targets are one cluster: publish each message once, to the first.
    #[arg(long)]
    pub clustered: bool,
    /// How subscribing clients connect: tcp (the 2009 protocol), or ws
    /// (WebSocket, protocol X2) to the --ws-target addresses. Publishers
    /// and background clients use --target either way.
    #[arg(long, value_enum, default_value = "tcp")]
    pub transport: Transport,
    /// The servers' WebSocket addresses (janus-server --ws-listen), HOST:PORT,
    /// one per --target in the same order (with --transport ws).
    #[arg(long, value_delimiter = ',')]
    pub ws_target: Vec<String>,
    /// Publish key (protocol X4), for servers that require one.
    #[arg(long, env = "JANUS_PUBLISH_KEY", hide_env_values = true)]
    pub publish_key: Option<String>,
    /// Write the report as JSON to this file (checked before the run: its
    /// directory must exist).
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write an SVG plot (percentiles, and fan-out per message) to this file
    /// (checked before the run, like --json).
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Progress display on stderr.
    #[arg(long, value_enum, default_value = "auto")]
    pub progress: ProgressMode,
}

/// Flags of `churn` (and `soak`).
#[derive(Debug, Args)]
pub struct ChurnArgs {
    /// The measurement.
    #[command(flatten)]
    pub run: RunArgs,
    /// Churners: clients that connect, subscribe to one topic (half of the
    /// names carry messages, half do not), stay --hold, and leave.
    #[arg(long, default_value_t = 100, value_parser = Worded(whole::<u32, 0>), allow_negative_numbers = true)]
    pub churners: u32,
    /// How long a churner stays subscribed.
    #[arg(long, default_value = "50ms", value_parser = Worded(duration), allow_negative_numbers = true)]
    pub hold: Duration,
    /// Background activity before the measurement, without messages.
    #[arg(long, default_value = "5s", value_parser = Worded(duration), allow_negative_numbers = true)]
    pub warmup: Duration,
    /// How long messages flow [default: 30s for churn, 10m for soak].
    #[arg(long, value_parser = Worded(duration), allow_negative_numbers = true)]
    pub duration: Option<Duration>,
    /// After the background clients leave, how long to wait for the
    /// server's memory to come back (with --server-pid).
    #[arg(long, default_value = "15s", value_parser = Worded(duration), allow_negative_numbers = true)]
    pub settle: Duration,
    /// The server's process id, on this machine: its resident memory is
    /// read at the start, after the warm-up and after the churn. It must
    /// exist; a process that is not a janus-server gets a warning.
    #[arg(long, value_parser = Worded(whole::<u32, 0>), allow_negative_numbers = true)]
    pub server_pid: Option<u32>,
}

/// Flags of `resume`.
#[derive(Debug, Args)]
pub struct ResumeArgs {
    /// The measurement.
    #[command(flatten)]
    pub run: RunArgs,
    /// Percentage of the reading clients that drop their connection and resume.
    #[arg(long, default_value_t = 10.0, value_parser = Worded(number), allow_negative_numbers = true)]
    pub resume_percent: f64,
    /// How long a resuming client stays away before it reconnects.
    #[arg(long, default_value = "500ms", value_parser = Worded(duration), allow_negative_numbers = true)]
    pub away: Duration,
    /// Where resuming clients reconnect (HOST:PORT): another node of the
    /// same cluster, to measure resuming on a node other than the one the
    /// client left (docs/scaling.md) [default: the server they left].
    #[arg(long, value_name = "HOST:PORT")]
    pub resume_target: Option<String>,
}

/// Flags of `soak`.
#[derive(Debug, Args)]
pub struct SoakArgs {
    /// The churn.
    #[command(flatten)]
    pub churn: ChurnArgs,
    /// Stuck readers: subscribe to the canaries' topics, never read, leave
    /// after --hostile-hold.
    #[arg(long, default_value_t = 20, value_parser = Worded(whole::<u32, 0>), allow_negative_numbers = true)]
    pub stuck: u32,
    /// Request flooders: write `x␀` (or, every other one, subscribe
    /// requests) over and over without reading the answers.
    #[arg(long, default_value_t = 4, value_parser = Worded(whole::<u32, 0>), allow_negative_numbers = true)]
    pub flooders: u32,
    /// Bytes a flooder writes every 50 ms while its socket takes them.
    #[arg(long, default_value_t = 4096, value_parser = Worded(whole::<u32, 0>), allow_negative_numbers = true)]
    pub flood_chunk: u32,
    /// Tricklers: one byte every --trickle-interval, never completing a frame.
    #[arg(long, default_value_t = 20, value_parser = Worded(whole::<u32, 0>), allow_negative_numbers = true)]
    pub tricklers: u32,
    /// Interval between a trickler's bytes.
    #[arg(long, default_value = "3s", value_parser = Worded(duration), allow_negative_numbers = true)]
    pub trickle_interval: Duration,
    /// Clients that send one frame longer than the server's limit.
    #[arg(long, default_value_t = 4, value_parser = Worded(whole::<u32, 0>), allow_negative_numbers = true)]
    pub oversized: u32,
    /// Length of an oversized frame, bytes (the server's default limit is
    /// 64 KiB).
    #[arg(long, default_value_t = 70_000, value_parser = Worded(whole::<u32, 0>), allow_negative_numbers = true)]
    pub oversized_bytes: u32,
    /// How long a hostile client keeps at it before it leaves and starts again.
    #[arg(long, default_value = "20s", value_parser = Worded(duration), allow_negative_numbers = true)]
    pub hostile_hold: Duration,
}

/// Flags of `agent`.
#[derive(Debug, Args)]
pub struct AgentArgs {
    /// Address to listen on for coordinators, e.g. 127.0.0.1:7070 (port 0:
    /// any free port; the bound address is printed on the first line).
    #[arg(long)]
    pub listen: String,
}

/// Flags of `publish`.
#[derive(Debug, Args)]
pub struct PublishArgs {
    /// The topic.
    pub topic: String,
    /// The message data: used as JSON if it parses as JSON (`42`, `{"a":1}`,
    /// `"text"`), otherwise sent as a JSON string.
    pub data: String,
    /// Always send DATA as a JSON string, even if it parses as JSON.
    #[arg(long)]
    pub string: bool,
    /// Server address, HOST:PORT.
    #[arg(long, default_value = "127.0.0.1:8081")]
    pub target: String,
    /// Event name.
    #[arg(long, default_value = "")]
    pub event: String,
    /// Message id.
    #[arg(long, default_value = "")]
    pub message_id: String,
    /// One-shot PUBLISH connection (P5), exactly as the 2009 bot (`2009`),
    /// or persistent publish (X3).
    #[arg(long, alias = "publish-form", value_enum, default_value = "oneshot")]
    pub publish_mode: PublishMode,
    /// Publish key (protocol X4).
    #[arg(long, env = "JANUS_PUBLISH_KEY", hide_env_values = true)]
    pub publish_key: Option<String>,
    /// How long to wait for the server.
    #[arg(long, default_value = "10s", value_parser = Worded(duration), allow_negative_numbers = true)]
    pub timeout: Duration,
}

/// A usage or configuration error: exit status 2.
#[derive(Debug, thiserror::Error)]
#[error("{0:#}")]
struct Usage(anyhow::Error);

/// The exit status for an error: 3 when something could not be reached,
/// 2 for usage, 1 for everything else.
fn exit_status(e: &anyhow::Error) -> u8 {
    if e.chain().any(|c| c.is::<Unreachable>()) {
        3
    } else if e.chain().any(|c| c.is::<Usage>()) {
        2
    } else {
        1
    }
}

/// Parses the command line, runs it and returns the exit status.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Worker => crate::worker::run_stdio().map(|()| 0),
        Cmd::Agent(args) => crate::agent::run(&args.listen).map(|()| 0),
        Cmd::Run(args) => run_config(&args, None).and_then(|cfg| measure(&args, &cfg)),
        Cmd::Churn(args) => churn_config(&args, None).and_then(|cfg| measure(&args.run, &cfg)),
        Cmd::Soak(args) => soak_config(&args).and_then(|cfg| measure(&args.churn.run, &cfg)),
        Cmd::Resume(args) => resume_config(&args).and_then(|cfg| measure(&args.run, &cfg)),
        Cmd::Publish(args) => publish_command(args),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("janus-bot: error: {e:#}");
            ExitCode::from(exit_status(&e))
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Resolves HOST:PORT, preferring IPv4.
fn resolve(target: &str) -> anyhow::Result<SocketAddr> {
    janus_core::net::resolve_prefer_ipv4(target).map_err(|e| anyhow::anyhow!("target {e}"))
}

/// Validates the flags of `run`; `duration` (churn and soak) sets the
/// number of messages from the rate.
///
/// # Errors
/// For any flag out of range (a usage error).
pub fn run_config(args: &RunArgs, duration: Option<Duration>) -> anyhow::Result<RunConfig> {
    check_run(args, duration).map_err(|e| Usage(e).into())
}

fn check_run(args: &RunArgs, duration: Option<Duration>) -> anyhow::Result<RunConfig> {
    let targets = args
        .target
        .iter()
        .map(|t| resolve(t.trim()))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if targets.is_empty() {
        bail!("--target names no server");
    }
    let ws_targets = match args.transport {
        Transport::Tcp if !args.ws_target.is_empty() => {
            bail!("--ws-target needs --transport ws")
        }
        Transport::Tcp => Vec::new(),
        Transport::Ws => {
            let ws = args
                .ws_target
                .iter()
                .map(|t| resolve(t.trim()))
                .collect::<anyhow::Result<Vec<_>>>()?;
            if ws.len() != targets.len() {
                bail!("--transport ws needs one --ws-target per --target, in the same order");
            }
            ws
        }
    };
    janus_core::validate_topic(&args.topic)
        .map_err(|e| anyhow::anyhow!("--topic: {}", e.reason))?;
    if !(args.rate.is_finite() && args.rate > 0.0) {
        bail!("--rate must be a positive number of messages per second");
    }
    if args.payload > 16 << 20 {
        bail!("--payload must be at most 16 MiB");
    }
    if args.timeout.is_zero() {
        bail!("--timeout must be positive");
    }
    if args.clients == 0 {
        bail!("--clients must be at least 1");
    }
    if args.subscriptions > args.topics {
        bail!("--subscriptions cannot exceed --topics");
    }
    if !(0.0..100.0).contains(&args.never_read_percent) {
        bail!("--never-read-percent must be at least 0 and below 100");
    }
    let messages = match (duration, args.messages) {
        (Some(d), _) => {
            let m = (args.rate * d.as_secs_f64()).floor().max(1.0);
            if m > f64::from(u32::MAX) {
                bail!("--rate × --duration is too many messages");
            }
            m as u32
        }
        (None, m) => m.unwrap_or(1),
    };
    let source_ips = args
        .source_ips
        .as_deref()
        .map(plan::parse_source_ips)
        .transpose()?;
    Ok(RunConfig {
        targets,
        ws_targets,
        agents: args
            .agents
            .iter()
            .map(|a| a.trim().to_owned())
            .filter(|a| !a.is_empty())
            .collect(),
        clients: args.clients,
        topic: args.topic.clone(),
        topics: args.topics,
        subscriptions: args.subscriptions,
        never_read: (args.clients as f64 * args.never_read_percent / 100.0).round() as u64,
        never_read_rcvbuf: args.never_read_rcvbuf,
        messages,
        rate: args.rate,
        payload: args.payload,
        workers: args.workers,
        source_ips,
        timeout: args.timeout,
        connect_concurrency: args.connect_concurrency.max(1),
        publish_mode: args.publish_mode,
        clustered: args.clustered,
        publish_key: args.publish_key.clone(),
        progress: args.progress,
        activity: Activity::default(),
        warmup: Duration::ZERO,
        settle: Duration::ZERO,
        server_pid: None,
        resume: 0,
        resume_away: Duration::ZERO,
        resume_target: None,
    })
}

/// Validates the flags of `churn`; `default_duration` is the mode's.
///
/// # Errors
/// For any flag out of range (a usage error).
pub fn churn_config(
    args: &ChurnArgs,
    default_duration: Option<Duration>,
) -> anyhow::Result<RunConfig> {
    let duration = args
        .duration
        .or(default_duration)
        .unwrap_or(Duration::from_secs(30));
    if duration.is_zero() {
        return Err(Usage(anyhow::anyhow!("--duration must be positive")).into());
    }
    if let Some(pid) = args.server_pid {
        if let Err(e) = sys::process_name(pid) {
            let why = if e.kind() == std::io::ErrorKind::NotFound {
                "no such process on this machine".to_owned()
            } else {
                format!("cannot read /proc/{pid}/comm: {e}")
            };
            return Err(Usage(anyhow::anyhow!("--server-pid {pid}: {why}")).into());
        }
    }
    let mut cfg = run_config(&args.run, Some(duration))?;
    cfg.activity = Activity {
        churners: args.churners,
        hold_ms: args.hold.as_millis() as u64,
        ..Activity::default()
    };
    cfg.warmup = args.warmup;
    cfg.settle = args.settle;
    cfg.server_pid = args.server_pid;
    Ok(cfg)
}

/// Validates the flags of `resume`.
///
/// # Errors
/// For any flag out of range (a usage error).
pub fn resume_config(args: &ResumeArgs) -> anyhow::Result<RunConfig> {
    let mut cfg = run_config(&args.run, None)?;
    if !(0.0..=100.0).contains(&args.resume_percent) {
        return Err(Usage(anyhow::anyhow!("--resume-percent must be from 0 to 100")).into());
    }
    let readers = cfg.clients - cfg.never_read;
    cfg.resume = ((readers as f64 * args.resume_percent / 100.0).round() as u64).min(readers);
    cfg.resume_away = args.away;
    if let Some(target) = &args.resume_target {
        if !cfg.ws_targets.is_empty() {
            return Err(Usage(anyhow::anyhow!(
                "--resume-target is a TCP address: it needs --transport tcp"
            ))
            .into());
        }
        cfg.resume_target = Some(resolve(target.trim()).map_err(Usage)?);
    }
    Ok(cfg)
}

/// Validates the flags of `soak`.
///
/// # Errors
/// For any flag out of range (a usage error).
pub fn soak_config(args: &SoakArgs) -> anyhow::Result<RunConfig> {
    let mut cfg = churn_config(&args.churn, Some(Duration::from_secs(600)))?;
    if args.trickle_interval.is_zero() || args.hostile_hold.is_zero() {
        return Err(Usage(anyhow::anyhow!(
            "--trickle-interval and --hostile-hold must be positive"
        ))
        .into());
    }
    cfg.activity = Activity {
        stuck: args.stuck,
        flooders: args.flooders,
        flood_chunk: args.flood_chunk,
        tricklers: args.tricklers,
        trickle_ms: args.trickle_interval.as_millis() as u64,
        oversized: args.oversized,
        oversized_bytes: args.oversized_bytes,
        hostile_hold_ms: args.hostile_hold.as_millis() as u64,
        ..cfg.activity
    };
    Ok(cfg)
}

/// The warning for a `--server-pid` that is not a janus-server, if it is not.
pub fn server_pid_warning(pid: u32) -> Option<String> {
    let name = sys::process_name(pid).ok()?;
    (name != sys::SERVER_PROCESS_NAME).then(|| {
        format!(
            "janus-bot: warning: --server-pid {pid} is {name:?}, not a {}: \
             its memory is reported as the server's all the same",
            sys::SERVER_PROCESS_NAME
        )
    })
}

/// An output file named by a flag (`--json`, `--plot`), opened before the
/// run so that a path that cannot be written fails at once (exit 2), not
/// after a long measurement whose result would be lost.
#[derive(Debug)]
struct Output {
    flag: &'static str,
    path: PathBuf,
    file: std::fs::File,
    /// It did not exist before: removed again if nothing is written to it.
    created: bool,
}

impl Output {
    /// Opens (creates) `path` for writing, without truncating it yet.
    fn open(flag: &'static str, path: &Path) -> anyhow::Result<Output> {
        let bad = |why: String| -> anyhow::Error {
            Usage(anyhow::anyhow!("{flag} {}: {why}", path.display())).into()
        };
        if path.as_os_str().is_empty() {
            return Err(Usage(anyhow::anyhow!("{flag} needs a file name")).into());
        }
        if path.is_dir() {
            return Err(bad("is a directory".to_owned()));
        }
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        if !dir.is_dir() {
            return Err(bad(format!(
                "the directory {} does not exist",
                dir.display()
            )));
        }
        let created = path.symlink_metadata().is_err();
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| bad(format!("cannot write to it: {e}")))?;
        Ok(Output {
            flag,
            path: path.to_owned(),
            file,
            created,
        })
    }

    /// Replaces the file's content with `bytes`.
    fn write(mut self, bytes: &[u8]) -> anyhow::Result<()> {
        let path = self.path.display().to_string();
        // A regular file is truncated now; a pipe or /dev/stdout cannot be.
        if self.file.metadata().is_ok_and(|m| m.is_file()) {
            self.file
                .set_len(0)
                .and_then(|()| self.file.rewind())
                .with_context(|| format!("{} {path}: truncating", self.flag))?;
        }
        self.file
            .write_all(bytes)
            .and_then(|()| self.file.flush())
            .with_context(|| format!("{} {path}: writing", self.flag))
    }

    /// Gives up on the file: one this run created is removed.
    fn discard(self) {
        if self.created {
            drop(self.file);
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// The output files of a run.
#[derive(Debug)]
struct Outputs {
    json: Option<Output>,
    plot: Option<Output>,
}

impl Outputs {
    fn open(args: &RunArgs) -> anyhow::Result<Outputs> {
        let json = args
            .json
            .as_deref()
            .map(|p| Output::open("--json", p))
            .transpose()?;
        let plot = match args.plot.as_deref().map(|p| Output::open("--plot", p)) {
            Some(Err(e)) => {
                if let Some(j) = json {
                    j.discard();
                }
                return Err(e);
            }
            other => other.transpose()?,
        };
        Ok(Outputs { json, plot })
    }

    fn discard(self) {
        for o in [self.json, self.plot].into_iter().flatten() {
            o.discard();
        }
    }
}

/// A signal that ended a run early, and the exit status it gives.
#[derive(Debug, Clone, Copy)]
struct Interrupt {
    name: &'static str,
    status: u8,
}

/// Waits for SIGINT (Ctrl-C) or SIGTERM; never returns if they cannot be
/// watched.
async fn interrupted() -> Interrupt {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(mut int), Ok(mut term)) => tokio::select! {
            _ = int.recv() => Interrupt { name: "SIGINT (Ctrl-C)", status: 130 },
            _ = term.recv() => Interrupt { name: "SIGTERM", status: 143 },
        },
        _ => std::future::pending().await,
    }
}

/// Runs a measurement and writes its report; 0 when every expected
/// delivery arrived, 1 otherwise, 128 + the signal when interrupted.
fn measure(args: &RunArgs, cfg: &RunConfig) -> anyhow::Result<u8> {
    // Before anything is connected: a bad output path fails now.
    let outputs = Outputs::open(args)?;
    if let Some(warning) = cfg.server_pid.and_then(server_pid_warning) {
        eprintln!("{warning}");
    }
    let watch = Watch::default();
    let outcome = runtime().map(|rt| {
        rt.block_on(async {
            tokio::select! {
                biased;
                signal = interrupted() => Err(signal),
                report = coordinator::run_watched(cfg, &watch) => Ok(report),
            }
        })
    });
    let report = match outcome {
        Ok(Ok(Ok(report))) => report,
        Ok(Err(signal)) => {
            outputs.discard();
            eprintln!(
                "janus-bot: interrupted by {} {}; no report written",
                signal.name,
                watch.snapshot().describe()
            );
            return Ok(signal.status);
        }
        Ok(Ok(Err(e))) | Err(e) => {
            outputs.discard();
            return Err(e);
        }
    };
    let mut text = Vec::new();
    report.render(&mut text).context("rendering the report")?;
    // A closed stdout (e.g. `| head`) must not hide the exit status.
    let _ = std::io::stdout().lock().write_all(&text);
    let json = outputs
        .json
        .map(|out| out.write((report.to_json() + "\n").as_bytes()));
    let plot = outputs
        .plot
        .map(|out| out.write(report.to_svg().as_bytes()));
    json.transpose()?;
    plot.transpose()?;
    Ok(if report.success { 0 } else { 1 })
}

fn publish_command(args: PublishArgs) -> anyhow::Result<u8> {
    let target = resolve(&args.target).map_err(Usage)?;
    let data = publisher::data_argument(&args.data, args.string);
    let mut publish = janus_core::Publish::new(
        args.topic.as_str(),
        args.event.as_str(),
        args.message_id.as_str(),
        &data,
    )
    .map_err(|e| Usage(anyhow::anyhow!("bad message: {}", e.reason)))?;
    publish.key.clone_from(&args.publish_key);
    let frame = publisher::encode(publish, args.publish_mode);
    let outcome = runtime()?.block_on(async {
        let mut persistent = publisher::Persistent::new(target, args.timeout);
        publisher::publish(
            args.publish_mode,
            target,
            &frame,
            args.timeout,
            &mut persistent,
        )
        .await
    });
    match outcome.error {
        Some(e @ publisher::PublishError::Connect { .. }) => {
            Err(Unreachable(format!("publishing: {e}")).into())
        }
        Some(e) => Err(e).context("publishing"),
        None => {
            println!("published to {target}, topic {:?}", args.topic);
            Ok(0)
        }
    }
}

/// A number (`--rate`, the percentages), range-checked with the other flags.
fn number(text: &str) -> Result<f64, String> {
    text.trim()
        .parse()
        .map_err(|_| "must be a number, such as 10 or 2.5".to_owned())
}

/// A duration: `500ms`, `10s`, `2m`.
fn duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|_| "must be a duration such as 500ms, 10s or 2m".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("janus-bot").chain(args.iter().copied()))
    }

    #[test]
    fn modes_parse_into_configs() {
        let Cmd::Run(run) = parse(&["run", "-n", "10", "--topics", "4", "--subscriptions", "2"])
            .unwrap()
            .command
        else {
            panic!("run")
        };
        let cfg = run_config(&run, None).unwrap();
        assert_eq!((cfg.topics, cfg.subscriptions, cfg.messages), (4, 2, 1));
        assert_eq!(cfg.expected_deliveries(), 10 * 2 / 4);

        let Cmd::Soak(soak) = parse(&[
            "soak",
            "-n",
            "5",
            "--rate",
            "2",
            "--duration",
            "3s",
            "--stuck",
            "7",
        ])
        .unwrap()
        .command
        else {
            panic!("soak")
        };
        let cfg = soak_config(&soak).unwrap();
        assert_eq!(cfg.messages, 6);
        assert_eq!(cfg.activity.stuck, 7);
        assert_eq!(cfg.activity.churners, 100);
        assert_eq!(cfg.activity.trickle_ms, 3000);

        let Cmd::Churn(churn) = parse(&["churn", "-n", "5"]).unwrap().command else {
            panic!("churn")
        };
        let cfg = churn_config(&churn, None).unwrap();
        assert_eq!(cfg.messages, 300, "30 s at 10/s");
        assert_eq!(cfg.activity.stuck, 0);
    }

    #[test]
    fn errors_map_to_exit_statuses() {
        let Cmd::Run(run) = parse(&["run", "-n", "1", "--rate", "0"]).unwrap().command else {
            panic!("run")
        };
        let e = run_config(&run, None).unwrap_err();
        assert_eq!(exit_status(&e), 2);
        let e = anyhow::Error::new(Unreachable("x".into())).context("setup failed");
        assert_eq!(exit_status(&e), 3);
        assert_eq!(exit_status(&anyhow::anyhow!("lost")), 1);
        // clap itself exits 2 on bad flags.
        assert_eq!(parse(&["run", "--nope"]).unwrap_err().exit_code(), 2);
        assert_eq!(
            parse(&["publish", "t"]).unwrap_err().kind(),
            clap::error::ErrorKind::MissingRequiredArgument
        );
        // A bad number is a usage error in plain words.
        for (args, message) in [
            (
                &["run", "-n", "0"][..],
                "--clients must be a whole number of at least 1 (got 0)",
            ),
            (
                &["run", "-n", "1", "--topics", "-1"],
                "--topics must be a whole number of at least 1 (got -1)",
            ),
            (
                &["run", "-n", "1", "--payload", "lots"],
                "--payload must be a whole number (0 or more) (got lots)",
            ),
            (
                &["run", "-n", "1", "--rate", "fast"],
                "--rate must be a number, such as 10 or 2.5 (got fast)",
            ),
            (
                &["run", "-n", "1", "--timeout", "soon"],
                "--timeout must be a duration such as 500ms, 10s or 2m (got soon)",
            ),
        ] {
            let e = parse(args).unwrap_err();
            assert_eq!(
                (e.exit_code(), e.to_string()),
                (2, format!("error: {message}\n"))
            );
        }
        // A negative rate reaches its range check.
        let Cmd::Run(run) = parse(&["run", "-n", "1", "--rate", "-5"]).unwrap().command else {
            panic!("run")
        };
        let e = run_config(&run, None).unwrap_err().to_string();
        assert!(e.contains("--rate must be a positive number"), "{e}");
        let help = parse(&["run", "--help"]).unwrap_err().to_string();
        assert!(help.contains("3  cannot connect"), "{help}");
    }

    #[test]
    fn the_2009_publish_form_is_a_mode() {
        let Cmd::Publish(p) = parse(&["publish", "t", "1", "--publish-form", "2009"])
            .unwrap()
            .command
        else {
            panic!("publish")
        };
        assert_eq!(p.publish_mode, PublishMode::Legacy2009);
        assert_eq!((p.topic.as_str(), p.data.as_str()), ("t", "1"));
    }
}
