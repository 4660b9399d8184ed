//! The command line: flags, their validation into a [`RunConfig`], and exit
//! statuses.
//!
//! Exit status: 0 when every expected delivery arrived, 1 when the run
//! completed but deliveries were missing or clients misbehaved, 2 when the
//! run could not be made (bad flags, refused connections, a worker or agent
//! that failed). Errors are printed once, with their causes, on stderr.

use std::io::Write as _;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::{Args, Parser, Subcommand};

use crate::coordinator::{self, RunConfig};
use crate::plan;
use crate::progress::ProgressMode;
use crate::publisher::{self, PublishMode};

/// Load bot for Janus servers: swarms of subscribers, latency on one clock.
#[derive(Debug, Parser)]
#[command(name = "janus-bot", version)]
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
    Run(RunArgs),
    /// Run a long-lived agent that runs worker processes for remote
    /// coordinators (`run --agents`). Prints the bound address first.
    Agent(AgentArgs),
    /// Publish one message.
    Publish(PublishArgs),
    /// Internal: a worker process driven over stdin/stdout.
    #[command(hide = true)]
    Worker,
}

/// Flags of `run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Server address(es), HOST:PORT, comma-separated or repeated. Clients are
    /// spread over them; each message is published to every one (unless
    /// --clustered).
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1:8081")]
    pub target: Vec<String>,
    /// Agents (`janus-bot agent`) to run the clients on, HOST:PORT,
    /// comma-separated. Without it, clients run in local worker processes.
    #[arg(long, value_delimiter = ',')]
    pub agents: Vec<String>,
    /// Number of subscribing clients.
    #[arg(long, short = 'n')]
    pub clients: u64,
    /// Topic the clients subscribe to and messages are published on.
    #[arg(long, default_value = "janus-bot")]
    pub topic: String,
    /// Number of messages to publish.
    #[arg(long, short = 'm', default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub messages: u32,
    /// Messages per second.
    #[arg(long, default_value_t = 10.0)]
    pub rate: f64,
    /// Size of each message's data string, bytes.
    #[arg(long, default_value_t = 64)]
    pub payload: usize,
    /// Local worker processes (default: one per 18,000 clients).
    #[arg(long)]
    pub workers: Option<u32>,
    /// Source addresses to bind clients to, e.g. 127.0.0.2-127.0.0.20
    /// (default: the kernel's choice, extended to 127.0.0.2, 127.0.0.3, …
    /// past 12,000 clients per loopback target).
    #[arg(long)]
    pub source_ips: Option<String>,
    /// Limit for every wait: a client's connect + hello + ACK, each publish,
    /// and the deliveries after the last publish.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Clients connecting at once, over all workers.
    #[arg(long, default_value_t = 256)]
    pub connect_concurrency: u32,
    /// How messages are published: one-shot PUBLISH connections (2009) or
    /// one persistent connection per target (X3).
    #[arg(long, value_enum, default_value = "oneshot")]
    pub publish_mode: PublishMode,
    /// The targets are one cluster: publish each message once, to the first.
    #[arg(long)]
    pub clustered: bool,
    /// Publish key (PROTOCOL X4), for servers that require one.
    #[arg(long, env = "JANUS_PUBLISH_KEY", hide_env_values = true)]
    pub publish_key: Option<String>,
    /// Write the report as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write an SVG plot (percentiles, and spans per message) to this file.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Progress display on stderr.
    #[arg(long, value_enum, default_value = "auto")]
    pub progress: ProgressMode,
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
    /// Server address, HOST:PORT.
    #[arg(long, default_value = "127.0.0.1:8081")]
    pub target: String,
    /// Topic.
    #[arg(long)]
    pub topic: String,
    /// The message's data, any JSON value.
    #[arg(long)]
    pub data: String,
    /// Event name.
    #[arg(long, default_value = "")]
    pub event: String,
    /// Message id.
    #[arg(long, default_value = "")]
    pub message_id: String,
    /// One-shot PUBLISH connection (2009) or persistent publish (X3).
    #[arg(long, value_enum, default_value = "oneshot")]
    pub publish_mode: PublishMode,
    /// Publish key (PROTOCOL X4).
    #[arg(long, env = "JANUS_PUBLISH_KEY", hide_env_values = true)]
    pub publish_key: Option<String>,
    /// How long to wait for the server.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

/// Parses the command line, runs it and returns the exit status.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Worker => crate::worker::run_stdio().map(|()| 0),
        Cmd::Agent(args) => crate::agent::run(&args.listen).map(|()| 0),
        Cmd::Run(args) => run_command(args),
        Cmd::Publish(args) => publish_command(args),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("janus-bot: error: {e:#}");
            ExitCode::from(2)
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
    let addrs: Vec<SocketAddr> = target
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve target {target:?} (expected HOST:PORT)"))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .with_context(|| format!("target {target:?} resolves to no address"))
}

/// Validates the flags of `run`.
///
/// # Errors
/// For any flag out of range.
pub fn run_config(args: &RunArgs) -> anyhow::Result<RunConfig> {
    let targets = args
        .target
        .iter()
        .map(|t| resolve(t.trim()))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if targets.is_empty() {
        bail!("--target names no server");
    }
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
    let source_ips = args
        .source_ips
        .as_deref()
        .map(plan::parse_source_ips)
        .transpose()?;
    Ok(RunConfig {
        targets,
        agents: args
            .agents
            .iter()
            .map(|a| a.trim().to_owned())
            .filter(|a| !a.is_empty())
            .collect(),
        clients: args.clients,
        topic: args.topic.clone(),
        messages: args.messages,
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
    })
}

fn run_command(args: RunArgs) -> anyhow::Result<u8> {
    let cfg = run_config(&args)?;
    let report = runtime()?.block_on(coordinator::run(&cfg))?;
    let mut text = Vec::new();
    report.render(&mut text).context("rendering the report")?;
    // A closed stdout (e.g. `| head`) must not hide the exit status.
    let _ = std::io::stdout().lock().write_all(&text);
    if let Some(path) = &args.json {
        std::fs::write(path, report.to_json() + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.plot {
        std::fs::write(path, report.to_svg())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(if report.success { 0 } else { 1 })
}

fn publish_command(args: PublishArgs) -> anyhow::Result<u8> {
    let target = resolve(&args.target)?;
    let mut publish = janus_core::Publish::new(
        args.topic.as_str(),
        args.event.as_str(),
        args.message_id.as_str(),
        &args.data,
    )
    .map_err(|e| anyhow::anyhow!("{}", e.reason))
    .context("bad message")?;
    publish.key.clone_from(&args.publish_key);
    let frame = publisher::encode(publish, args.publish_mode);
    let outcome = runtime()?.block_on(async {
        match args.publish_mode {
            PublishMode::Oneshot => publisher::publish_oneshot(target, &frame, args.timeout).await,
            PublishMode::Persistent => {
                publisher::Persistent::new(target, args.timeout)
                    .publish(&frame)
                    .await
            }
        }
    });
    if let Some(e) = outcome.error {
        return Err(e).context("publishing");
    }
    println!("published to {target}, topic {:?}", args.topic);
    Ok(0)
}
