//! The server's settings: one definition, [`Settings`], that is at once the
//! command line, the `JANUS_*` environment, the `--config` TOML file and
//! `--print-config`; and [`Config`], the validated, typed form the library
//! runs on.
//!
//! A value comes from, highest first: a flag (`--queue-limit 512`), an
//! environment variable (`JANUS_QUEUE_LIMIT=512`), the `--config` file
//! (`queue-limit = 512`), the built-in default. clap parses flags and
//! variables, filling in the defaults; `figment` layers the file between the
//! defaults and what the user set explicitly; serde decodes the result. The
//! file, `--print-config` and the flags therefore share one set of names,
//! parsers and defaults, and the printer cannot drift from the parser: it is
//! the same `Serialize`/`Deserialize` pair.
//!
//! # Adding a setting
//!
//! 1. Add a field to [`Settings`]. Its `///` doc is the `--help` text and
//!    the comment `--print-config` writes above the key. Give the default
//!    with `#[arg(long, default_value = "...")]` (clap shows it in `--help`),
//!    or make the field an `Option` when "unset" means something, and say
//!    what in the doc as `[default: ...]`. A count is a [`Count`], a size a
//!    [`ByteCount`] (each with its least value); a `Duration` also takes
//!    `value_parser = Worded(parse_duration)` and
//!    `#[serde(with = "plain::file::duration")]` (`positive_duration` in
//!    both when zero is refused). Their value names (`N`, `SIZE`,
//!    `DURATION`) let a value be a negative number, so that it gets its
//!    message in plain words. The flag `--NAME`, the variable
//!    `JANUS_NAME` and the file key `NAME` all follow from the field name. A
//!    secret gets `hide_env_values = true`, which also keeps it out of
//!    `--print-config`.
//! 2. Add the typed field to [`Config`] and its line in
//!    [`Settings::validate`] (where cross-field rules live too).
//! 3. Regenerate the example file:
//!    `cargo run -p janus-server -- --print-config > janus.toml.example`
//!    (a test fails until it matches).

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::num::IntErrorKind;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use clap::builder::ValueParserFactory;
use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, ValueEnum};
use figment::providers::Serialized;
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

mod plain;

pub use plain::parse_duration;
use plain::{positive_duration, Worded};

/// What happens to a subscriber whose outbound queue is full (docs/protocol.md, sessions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SlowConsumerPolicy {
    /// Send `slow_consumer` and close the connection (the default): nothing
    /// is silently lost, and one stuck client cannot hold memory.
    Disconnect,
    /// Drop the oldest queued delivery to make room; the client stays connected.
    DropOldest,
}

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    /// One human-readable line per event.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// The validated configuration the server runs with.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address of the client listener.
    pub listen: SocketAddr,
    /// Address of the WebSocket listener; `None` disables it.
    pub ws_listen: Option<SocketAddr>,
    /// Origins allowed to open a WebSocket; empty allows any.
    pub ws_allowed_origins: Vec<String>,
    /// Longest time a WebSocket handshake request may take to arrive.
    pub ws_handshake_timeout: Duration,
    /// Send `PING` after this long without sending anything.
    pub heartbeat: Duration,
    /// Longest client frame in bytes.
    pub max_frame: usize,
    /// Most simultaneous client connections; `None` means the open-file capacity.
    pub max_connections: Option<usize>,
    /// Most simultaneous client connections from one IP address (`usize::MAX`
    /// when the setting is 0, "no limit").
    pub max_connections_per_ip: usize,
    /// Networks the per-address limit does not apply to.
    pub per_ip_exempt: Vec<IpNet>,
    /// Most queued frames per session before the slow-consumer policy applies.
    pub queue_limit: usize,
    /// Most bytes queued per session, every frame counted (deliveries,
    /// `ACK`s, errors, `PING`s), before the slow-consumer policy applies.
    pub queue_bytes: usize,
    /// What to do with a slow consumer.
    pub slow_consumer: SlowConsumerPolicy,
    /// A client whose socket accepts nothing for this long while frames wait
    /// for it is disconnected.
    pub write_deadline: Duration,
    /// Most topics one session may subscribe to.
    pub max_subscriptions: usize,
    /// Most topics the server holds at once.
    pub max_topics: usize,
    /// How long a session outlives its connection (resume by token); zero
    /// ends a session with its connection.
    pub session_ttl: Duration,
    /// Most sessions waiting for a resume at once.
    pub max_detached_sessions: usize,
    /// Messages each topic keeps for resume by offset; zero keeps none.
    pub history_size: usize,
    /// Age past which a topic's kept messages are dropped.
    pub history_ttl: Duration,
    /// Most bytes of history in all, over every topic.
    pub history_bytes: usize,
    /// Networks allowed to publish without a key.
    pub allow_publish_from: Vec<IpNet>,
    /// A key that allows publishing from anywhere.
    pub publish_key: Option<String>,
    /// Close connections that send nothing for this long; `None` = never.
    pub idle_timeout: Option<Duration>,
    /// How long shutdown waits for queued deliveries to be written.
    pub shutdown_timeout: Duration,
    /// Admin HTTP API address; `None` disables it.
    pub admin_listen: Option<SocketAddr>,
    /// Bearer token the admin API requires; without one it serves loopback only.
    pub admin_token: Option<String>,
    /// Most admin API connections open at once; more are answered 503 and closed.
    pub admin_max_connections: usize,
    /// Most time an admin request's headers may take, and an idle kept-alive
    /// admin connection may wait for its next request.
    pub admin_header_timeout: Duration,
    /// Most time to receive an admin request's body and answer it.
    pub admin_request_timeout: Duration,
    /// Close an admin connection that moves no byte for this long.
    pub admin_idle_timeout: Duration,
    /// Threads that write deliveries to sockets.
    pub writer_threads: usize,
    /// Test-only: busy-wait this long per delivery, to prove load gates catch a slow fan-out.
    pub test_fanout_delay: Option<Duration>,
    /// The Redis URL of the cluster's broker; `None` runs a single node.
    pub broker: Option<String>,
    /// This node's name in the cluster.
    pub node_id: String,
    /// Whether the client listener sets `SO_REUSEPORT` (several processes on one port).
    pub reuse_port: bool,
}

impl Default for Config {
    /// The built-in defaults, exactly as `janus-server` with no settings runs.
    fn default() -> Self {
        Settings::default()
            .validate()
            // The unit test `defaults_are_valid` proves this holds.
            .expect("the built-in defaults are valid")
    }
}

impl Config {
    /// How often the housekeeping sweep looks at every client: a quarter of
    /// the shortest interval it enforces, between 10 ms and 1 s.
    pub fn sweep_interval(&self) -> Duration {
        let shortest = [
            Some(self.heartbeat),
            self.idle_timeout,
            Some(self.write_deadline),
            Some(self.session_ttl).filter(|t| !t.is_zero()),
            Some(self.history_ttl).filter(|t| !t.is_zero()),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(self.heartbeat);
        (shortest / 4).clamp(Duration::from_millis(10), Duration::from_secs(1))
    }

    /// Whether `ip` is outside `max-connections-per-ip` (per-ip-exempt).
    pub fn per_ip_exempt(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.per_ip_exempt.iter().any(|net| net.contains(&ip))
    }

    /// Whether a WebSocket handshake carrying `origin` (if any) is allowed.
    pub fn origin_allowed(&self, origin: Option<&str>) -> bool {
        match origin {
            Some(origin) if !self.ws_allowed_origins.is_empty() => self
                .ws_allowed_origins
                .iter()
                .any(|o| o.eq_ignore_ascii_case(origin.trim_end_matches('/'))),
            _ => true,
        }
    }

    /// Whether `ip` may publish without a key.
    pub fn may_publish(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.allow_publish_from.iter().any(|net| net.contains(&ip))
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

const AFTER_HELP: &str = "\
Every setting is also an environment variable (JANUS_QUEUE_LIMIT=512) and a key
of the --config TOML file (queue-limit = 512): a flag wins over the variable,
which wins over the file. `janus-server --print-config` prints the effective
settings as a commented file (janus.toml.example in the repository is one).
Durations: 250ms, 30s, 5m. Sizes: bytes, or with a unit (64KiB, 1MiB).
Logs go to stderr, filtered by RUST_LOG (default: info).

Exit status: 0 after a clean shutdown (SIGINT, SIGTERM, `janus-admin drain`)
or --help/--print-config; 1 the server failed while starting or running (for
example, its address is in use); 2 bad usage or configuration.";

/// The Janus messaging server.
///
/// Clients connect over TCP, subscribe to topics, and receive every message
/// published to a topic over their own connection; the protocol is described
/// in docs/protocol.md. An admin HTTP API (see docs/admin-api.md and
/// janus-admin) reports and steers it.
#[derive(Debug, Parser)]
#[command(name = "janus-server", version, after_help = AFTER_HELP)]
pub struct Cli {
    /// Read settings from this TOML file; its keys are the flag names without "--".
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Print the effective settings as a commented TOML file (secrets left out) and exit.
    #[arg(long)]
    pub print_config: bool,

    /// Test only: busy-wait this long per delivery to simulate a slow fan-out.
    #[arg(long, hide = true, value_name = "DURATION", value_parser = Worded(parse_duration))]
    pub test_fanout_delay: Option<Duration>,

    /// The settings, with clap's defaults filled in.
    #[command(flatten)]
    pub settings: Settings,

    /// File keys of the settings given as a flag or variable: they win over the file.
    #[arg(skip)]
    explicit: Vec<String>,
}

/// Help headings, which `--print-config` also uses as section titles.
const CLIENTS: &str = "Clients";
const SLOW: &str = "Slow consumers";
const SESSIONS: &str = "Sessions and heartbeats";
const PUBLISHING: &str = "Publishing";
const ADMIN: &str = "Admin API";
const PROCESS: &str = "Process";
const CLUSTER: &str = "Cluster";

/// Every setting of the server. See the module docs for how to add one.
#[derive(Debug, Clone, PartialEq, Args, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Settings {
    /// Address to accept clients on. A host name is resolved at start-up (to its first IPv4 address, else its first IPv6 one); 8081 is the 2009 port.
    #[arg(long, value_name = "HOST:PORT", default_value = "0.0.0.0:8081", help_heading = CLIENTS)]
    pub listen: HostPort,

    /// Address to accept WebSocket clients on (docs/protocol.md X2), as HOST:PORT (for example 0.0.0.0:8083), or "off". Browsers connect to ws://HOST:PORT/.
    #[arg(long, value_name = "HOST:PORT", default_value = "off", help_heading = CLIENTS)]
    pub ws_listen: AdminListen,

    /// Origins (scheme://host[:port], as browsers send them) allowed to open a WebSocket, comma-separated or repeated; a handshake from another origin gets 403. Clients that send no Origin (not browsers) are always allowed [default: any origin].
    #[arg(long, value_name = "ORIGIN", value_delimiter = ',', help_heading = CLIENTS)]
    pub ws_allowed_origins: Vec<String>,

    /// Longest time a WebSocket client may take to send its handshake request (at most 16 KiB); a slower one gets 408 and is closed.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = Worded(positive_duration), help_heading = CLIENTS)]
    #[serde(with = "plain::file::positive_duration")]
    pub ws_handshake_timeout: Duration,

    /// Most simultaneous client connections; past it a client gets not_allowed and is closed [default: what the open-file limit allows].
    #[arg(long, value_name = "N", help_heading = CLIENTS)]
    pub max_connections: Option<Count<1>>,

    /// Most simultaneous client connections from one IP address outside per-ip-exempt, 0 for no limit: one host on the internet cannot take every connection a process can hold (about 19,900 under a 20,000 open-file limit).
    #[arg(long, value_name = "N", default_value = "1000", help_heading = CLIENTS)]
    pub max_connections_per_ip: Count<0>,

    /// Networks max-connections-per-ip does not apply to, comma-separated or repeated: by default loopback and private networks, where a load-test swarm (the 2009 benchmark runs 20,000 clients from one host) or a NAT gateway legitimately holds thousands of connections. 0.0.0.0/32 exempts nothing.
    #[arg(long, value_name = "NETWORK", value_delimiter = ',', default_values = ["127.0.0.0/8", "::1/128", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"], help_heading = CLIENTS)]
    pub per_ip_exempt: Vec<Network>,

    /// Longest client frame, in bytes or with a unit (64KiB); a longer one gets frame_too_large and a close.
    #[arg(long, value_name = "SIZE", default_value = "65536", help_heading = CLIENTS)]
    pub max_frame: ByteCount<1>,

    /// Most topics one client may subscribe to; one more gets too_many_subscriptions and a close.
    #[arg(long, value_name = "N", default_value = "1024", help_heading = CLIENTS)]
    pub max_subscriptions: Count<1>,

    /// Most topics the server holds at once (server-wide); a subscribe or publish that would create one more is refused.
    #[arg(long, value_name = "N", default_value = "1000000", help_heading = CLIENTS)]
    pub max_topics: Count<1>,

    /// Most frames queued for one client (deliveries and replies) before it is a slow consumer.
    #[arg(long, value_name = "N", default_value = "4096", help_heading = SLOW)]
    pub queue_limit: Count<1>,

    /// Most bytes queued for one client before it is a slow consumer, every frame counted (deliveries, ACKs, errors, PINGs); in bytes or with a unit (1MiB), at least max-frame.
    #[arg(long, value_name = "SIZE", default_value = "1048576", help_heading = SLOW)]
    pub queue_bytes: ByteCount,

    /// What to do with a slow consumer: disconnect it (after sending slow_consumer) or drop its oldest queued delivery.
    #[arg(long, value_enum, value_name = "POLICY", default_value = "disconnect", help_heading = SLOW)]
    pub slow_consumer: SlowConsumerPolicy,

    /// Disconnect a client whose socket has accepted nothing for this long while frames wait for it.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = Worded(positive_duration), help_heading = SLOW)]
    #[serde(with = "plain::file::positive_duration")]
    pub write_deadline: Duration,

    /// Send PING to a client after this long without sending it anything (only once it has had a delivery: 2009 bots crash on an early PING).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = Worded(positive_duration), help_heading = SESSIONS)]
    #[serde(with = "plain::file::positive_duration")]
    pub heartbeat: Duration,

    /// Close clients that send nothing for this long, or "off" (2009 bots never speak after subscribing).
    #[arg(long, value_name = "DURATION", default_value = "off", help_heading = SESSIONS)]
    pub idle_timeout: Timeout,

    /// How long a session whose connection was lost waits for a resume with its token, or "off" (a session then ends with its connection).
    #[arg(long, value_name = "DURATION", default_value = "60s", help_heading = SESSIONS)]
    pub session_ttl: Timeout,

    /// Most sessions waiting for a resume at once; past it, a lost connection's session ends at once, as with session-ttl off. A waiting session holds its subscriptions and what is queued for it (up to its queue budget), like a connected client: without a limit, clients that connect, subscribe and drop could make the server hold every such session for session-ttl.
    #[arg(long, value_name = "N", default_value = "20000", help_heading = SESSIONS)]
    pub max_detached_sessions: Count<1>,

    /// Messages each topic keeps so that a client can resume without a gap (the default is a minute at 100 messages/s); 0 keeps none.
    #[arg(long, value_name = "N", default_value = "6000", help_heading = SESSIONS)]
    pub history_size: Count<0>,

    /// Age past which a topic's kept messages are dropped.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = Worded(positive_duration), help_heading = SESSIONS)]
    #[serde(with = "plain::file::positive_duration")]
    pub history_ttl: Duration,

    /// Most bytes of history over all topics, in bytes or with a unit (256MiB); past it a topic keeps fewer messages.
    #[arg(long, value_name = "SIZE", default_value = "268435456", help_heading = SESSIONS)]
    pub history_bytes: ByteCount,

    /// Addresses or networks allowed to publish without a key, comma-separated or repeated (10.0.0.1 means 10.0.0.1/32, an IPv6 address /128).
    #[arg(long, value_name = "NETWORK", value_delimiter = ',', default_values = ["127.0.0.0/8", "::1/128"], help_heading = PUBLISHING)]
    pub allow_publish_from: Vec<Network>,

    /// Key that lets a publish from any address through, sent as a top-level "key" field [default: none].
    #[arg(long, value_name = "KEY", hide_env_values = true, help_heading = PUBLISHING)]
    pub publish_key: Option<String>,

    /// Address of the admin HTTP API as HOST:PORT, or "off".
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:8082", help_heading = ADMIN)]
    pub admin_listen: AdminListen,

    /// Bearer token the admin API requires [default: none: the API then accepts loopback clients only].
    #[arg(long, value_name = "TOKEN", hide_env_values = true, help_heading = ADMIN)]
    pub admin_token: Option<String>,

    /// Read the admin token from the first line of this file (used when admin-token is not set) [default: none].
    #[arg(long, value_name = "FILE", help_heading = ADMIN)]
    pub admin_token_file: Option<PathBuf>,

    /// Most admin API connections open at once; more are answered 503 and closed, so admin traffic never takes descriptors from clients.
    #[arg(long, value_name = "N", default_value = "64", help_heading = ADMIN)]
    pub admin_max_connections: Count<1>,

    /// Close an admin connection whose request headers take longer than this, or that waits longer than this for its next request.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = Worded(positive_duration), help_heading = ADMIN)]
    #[serde(with = "plain::file::positive_duration")]
    pub admin_header_timeout: Duration,

    /// Answer 408 to an admin request whose body has not arrived and been answered within this.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = Worded(positive_duration), help_heading = ADMIN)]
    #[serde(with = "plain::file::positive_duration")]
    pub admin_request_timeout: Duration,

    /// Close an admin connection that moves no byte either way for this long, e.g. one that never reads its answer.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = Worded(positive_duration), help_heading = ADMIN)]
    #[serde(with = "plain::file::positive_duration")]
    pub admin_idle_timeout: Duration,

    /// On SIGINT/SIGTERM, how long to keep writing queued deliveries before closing.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = Worded(parse_duration), help_heading = PROCESS)]
    #[serde(with = "plain::file::duration")]
    pub shutdown_timeout: Duration,

    /// Threads that write deliveries to client sockets, besides the clients' thread [default: one per core but one].
    #[arg(long, value_name = "N", help_heading = PROCESS)]
    pub writer_threads: Option<Count<1>>,

    /// Log lines as text or as one JSON object per line (colours only when stderr is a terminal).
    #[arg(long, value_enum, value_name = "FORMAT", default_value = "text", help_heading = PROCESS)]
    pub log_format: LogFormat,

    /// The broker that joins several janus-server processes into one cluster (docs/scaling.md): "none" runs this process on its own; redis://[USER:PASSWORD@]HOST:PORT[/DB] uses that Redis. --print-config shows a password in it as ***; give it through JANUS_BROKER or the file.
    #[arg(long, value_name = "URL", default_value = "none", help_heading = CLUSTER)]
    pub broker: BrokerUrl,

    /// This node's name in the cluster: 1 to 128 characters without spaces [default: the host name and the process id, HOST-PID].
    #[arg(long, value_name = "NAME", help_heading = CLUSTER)]
    pub node_id: Option<String>,

    /// Set SO_REUSEPORT on the client listener, so that several janus-server processes on this machine listen on one port and the kernel spreads new clients over them (give each its own admin-listen).
    #[arg(long, help_heading = CLUSTER)]
    pub reuse_port: bool,
}

impl Default for Settings {
    /// The built-in defaults: clap's `default_value`s, without reading the environment.
    fn default() -> Self {
        let matches = settings_command()
            .no_binary_name(true)
            .try_get_matches_from(std::iter::empty::<&str>());
        matches
            .and_then(|m| Settings::from_arg_matches(&m))
            // The unit test `defaults_are_valid` proves this holds.
            .expect("the built-in defaults parse")
    }
}

/// A command holding only the settings' arguments, in their order.
fn settings_command() -> clap::Command {
    Settings::augment_args(clap::Command::new("janus-server"))
}

/// The environment variable of a setting's argument id (`queue_limit` → `JANUS_QUEUE_LIMIT`).
fn env_name(id: &str) -> String {
    format!("JANUS_{}", id.to_uppercase())
}

impl Cli {
    /// The command line definition, with a `JANUS_*` variable attached to
    /// `--config` and to every setting (so none can lack one).
    pub fn command_with_env() -> clap::Command {
        let settings: Vec<String> = settings_command()
            .get_arguments()
            .map(|a| a.get_id().to_string())
            .collect();
        Cli::command().mut_args(|arg| {
            // A number, size or duration may be a negative number: it then
            // reaches its parser, which says what the setting takes, instead
            // of clap taking it for a flag.
            let numeric = arg.get_value_names().is_some_and(|names| {
                names
                    .iter()
                    .all(|n| ["N", "SIZE", "DURATION"].contains(&n.as_str()))
            });
            let arg = arg.allow_negative_numbers(numeric);
            let id = arg.get_id().as_str();
            if id == "config" || settings.iter().any(|s| s == id) {
                let name = env_name(id);
                arg.env(name)
            } else {
                arg
            }
        })
    }

    /// Parses the command line and the `JANUS_*` environment.
    ///
    /// # Errors
    /// clap's error for bad usage (print it with `exit()`: it exits 2, or 0
    /// for `--help` and `--version`).
    pub fn parse_args<I, T>(args: I) -> Result<Cli, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let matches = Self::command_with_env().try_get_matches_from(args)?;
        let mut cli = Cli::from_arg_matches(&matches)?;
        cli.explicit = explicit_keys(&matches);
        Ok(cli)
    }

    /// The settings after layering: defaults < `--config` file < variables and flags.
    ///
    /// # Errors
    /// [`ConfigError`] for an unreadable file, bad TOML, an unknown key or a
    /// value of the wrong kind.
    pub fn settings(&self) -> Result<Settings, ConfigError> {
        let given = Value::serialize(&self.settings)
            .map_err(|e| ConfigError::Internal(e.to_string()))?
            .into_dict()
            .unwrap_or_default();
        let explicit: Dict = given
            .into_iter()
            .filter(|(key, _)| self.explicit.contains(key))
            .collect();
        let mut figment = Figment::from(Serialized::defaults(&self.settings));
        if let Some(path) = &self.config {
            figment = figment.merge(ConfigFile::read(path)?);
        }
        figment
            .merge(Serialized::defaults(explicit))
            .extract()
            .map_err(ConfigError::from_figment)
    }
}

/// The file keys of the settings whose value came from a flag or a variable.
fn explicit_keys(matches: &ArgMatches) -> Vec<String> {
    settings_command()
        .get_arguments()
        .filter(|arg| {
            matches!(
                matches.value_source(arg.get_id().as_str()),
                Some(ValueSource::CommandLine | ValueSource::EnvVariable)
            )
        })
        .filter_map(|arg| arg.get_long().map(str::to_owned))
        .collect()
}

/// The `--config` file as a figment provider, parsed with the workspace's `toml`.
struct ConfigFile {
    path: PathBuf,
    table: toml::Table,
}

impl ConfigFile {
    fn read(path: &Path) -> Result<ConfigFile, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let table = text
            .parse()
            .map_err(|e: toml::de::Error| ConfigError::Parse {
                path: path.to_owned(),
                message: e.to_string(),
            })?;
        Ok(ConfigFile {
            path: path.to_owned(),
            table,
        })
    }
}

impl Provider for ConfigFile {
    fn metadata(&self) -> Metadata {
        Metadata::named(format!("config file {}", self.path.display()))
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Serialized::defaults(&self.table).data()
    }
}

/// What `--print-config` writes above the settings.
const TOML_HEADER: &str = "\
# janus-server settings, as printed by `janus-server --print-config`.
#
# Every key is also a flag (--queue-limit) and an environment variable
# (JANUS_QUEUE_LIMIT); a flag wins over the variable, which wins over this
# file, which wins over the built-in default. Durations: 250ms, 30s, 5m.
# Sizes: bytes, or with a unit (64KiB, 1MiB). A key left commented out has
# no value unless you give it one; secrets are never printed.
";

impl Settings {
    /// The settings as a commented TOML file: what `--print-config` prints,
    /// and what `janus.toml.example` holds. Secrets are left out.
    ///
    /// # Errors
    /// [`ConfigError::Internal`] if a value cannot be written as TOML (a bug).
    pub fn to_toml(&self) -> Result<String, ConfigError> {
        let table =
            toml::Table::try_from(self).map_err(|e| ConfigError::Internal(e.to_string()))?;
        let mut out = String::from(TOML_HEADER);
        let mut heading = None;
        for arg in settings_command().get_arguments() {
            let Some(key) = arg.get_long() else { continue };
            if arg.get_help_heading() != heading {
                heading = arg.get_help_heading();
                out += &format!("\n# ---- {} ----\n", heading.unwrap_or("Other"));
            }
            out.push('\n');
            let help = arg
                .get_long_help()
                .or(arg.get_help())
                .map(ToString::to_string)
                .unwrap_or_default();
            for line in wrap(&help, 76) {
                out += &format!("# {line}\n");
            }
            match table.get(key) {
                Some(_) if arg.is_hide_env_values_set() => {
                    out += &format!(
                        "# {key} is set, but secrets are never printed: write it here yourself, \
                         or set {}.\n",
                        env_name(arg.get_id().as_str())
                    );
                }
                Some(toml::Value::String(url)) if key == "broker" => {
                    let shown = toml::Value::String(crate::broker::redact_url(url));
                    out += &format!("{key} = {shown}\n");
                }
                Some(value) => out += &format!("{key} = {value}\n"),
                None => out += &format!("# {key} =\n"),
            }
        }
        Ok(out)
    }

    /// The non-secret settings on one line, `key = value, ...`, for the start-up log.
    pub fn summary(&self) -> String {
        let Ok(table) = toml::Table::try_from(self) else {
            return String::new();
        };
        settings_command()
            .get_arguments()
            .filter(|arg| !arg.is_hide_env_values_set())
            .filter_map(|arg| {
                let key = arg.get_long()?;
                match table.get(key)? {
                    toml::Value::String(url) if key == "broker" => {
                        Some(format!("{key} = {:?}", crate::broker::redact_url(url)))
                    }
                    value => Some(format!("{key} = {value}")),
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Checks the settings together and turns them into the library's [`Config`].
    ///
    /// Host names are resolved here and the admin token file is read here,
    /// so call it once at start-up.
    ///
    /// # Errors
    /// [`ConfigError`] naming the setting and what is wrong with it.
    pub fn validate(&self) -> Result<Config, ConfigError> {
        let invalid = |name: &'static str, message: String| ConfigError::Invalid { name, message };
        let nonzero = |name: &'static str, d: Duration| {
            if d.is_zero() {
                Err(invalid(name, "must be longer than zero".into()))
            } else {
                Ok(d)
            }
        };
        let listen = self.listen.resolve().map_err(|m| invalid("listen", m))?;
        let ws_listen = match &self.ws_listen.0 {
            Some(at) => Some(at.resolve().map_err(|m| invalid("ws-listen", m))?),
            None => None,
        };
        let ws_allowed_origins = self
            .ws_allowed_origins
            .iter()
            .map(|o| o.trim().trim_end_matches('/').to_owned())
            .filter(|o| !o.is_empty())
            .map(|o| match origin_form(&o) {
                Ok(()) => Ok(o),
                Err(why) => Err(invalid(
                    "ws-allowed-origins",
                    format!("{o:?} can never match a browser's Origin header: {why}"),
                )),
            })
            .collect::<Result<_, _>>()?;
        let admin_listen = match &self.admin_listen.0 {
            Some(at) => Some(at.resolve().map_err(|m| invalid("admin-listen", m))?),
            None => None,
        };
        let admin_token = match (&self.admin_token, &self.admin_token_file) {
            (Some(t), _) => secret("admin-token", t)?,
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                let token = secret("admin-token-file", text.lines().next().unwrap_or(""))?;
                if token.is_none() {
                    return Err(invalid(
                        "admin-token-file",
                        format!("{} is empty", path.display()),
                    ));
                }
                token
            }
            (None, None) => None,
        };
        let publish_key = match &self.publish_key {
            Some(k) => secret("publish-key", k)?,
            None => None,
        };
        let max_frame = self
            .max_frame
            .to_usize()
            .map_err(|m| invalid("max-frame", m))?;
        if max_frame == 0 {
            return Err(invalid("max-frame", "must be at least 1 byte".into()));
        }
        let queue_bytes = self
            .queue_bytes
            .to_usize()
            .map_err(|m| invalid("queue-bytes", m))?;
        if queue_bytes < max_frame {
            return Err(invalid(
                "queue-bytes",
                format!(
                    "{queue_bytes} is less than max-frame ({max_frame}): a client could never \
                     be sent one largest message"
                ),
            ));
        }
        let node_id = match &self.node_id {
            Some(id) => id.trim().to_owned(),
            None => default_node_id(),
        };
        if node_id.is_empty()
            || node_id.len() > 128
            || node_id.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(invalid(
                "node-id",
                format!("{node_id:?}: use 1 to 128 characters without spaces"),
            ));
        }
        Ok(Config {
            listen,
            ws_listen,
            ws_allowed_origins,
            ws_handshake_timeout: nonzero("ws-handshake-timeout", self.ws_handshake_timeout)?,
            heartbeat: nonzero("heartbeat", self.heartbeat)?,
            max_frame,
            max_connections: self.max_connections.map(Count::get),
            max_connections_per_ip: match self.max_connections_per_ip.get() {
                0 => usize::MAX,
                n => n,
            },
            queue_limit: self.queue_limit.get(),
            queue_bytes,
            slow_consumer: self.slow_consumer,
            write_deadline: nonzero("write-deadline", self.write_deadline)?,
            max_subscriptions: self.max_subscriptions.get(),
            max_topics: self.max_topics.get(),
            session_ttl: self.session_ttl.0.unwrap_or_default(),
            max_detached_sessions: self.max_detached_sessions.get(),
            history_size: self.history_size.get(),
            history_ttl: nonzero("history-ttl", self.history_ttl)?,
            history_bytes: self
                .history_bytes
                .to_usize()
                .map_err(|m| invalid("history-bytes", m))?,
            allow_publish_from: self.allow_publish_from.iter().map(|n| n.0).collect(),
            per_ip_exempt: self.per_ip_exempt.iter().map(|n| n.0).collect(),
            publish_key,
            idle_timeout: self.idle_timeout.0,
            shutdown_timeout: self.shutdown_timeout,
            admin_listen,
            admin_token,
            admin_max_connections: self.admin_max_connections.get(),
            admin_header_timeout: nonzero("admin-header-timeout", self.admin_header_timeout)?,
            admin_request_timeout: nonzero("admin-request-timeout", self.admin_request_timeout)?,
            admin_idle_timeout: nonzero("admin-idle-timeout", self.admin_idle_timeout)?,
            writer_threads: self
                .writer_threads
                .map_or_else(default_writer_threads, Count::get),
            test_fanout_delay: None,
            broker: self.broker.0.clone(),
            node_id,
            reuse_port: self.reuse_port,
        })
    }
}

/// `HOST-PID`: the host name (from the kernel) and the process id.
fn default_node_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().replace(|c: char| c.is_whitespace(), ""))
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "janus".to_owned());
    format!("{host}-{}", std::process::id())
}

/// One writer thread per core but one: the clients' thread takes a core
/// (and writes too when it is idle, see `writer::help`). Measured on a
/// 2-core machine with the load bot on it (10,000 subscribers × 200 messages
/// at 100/s): one writer thread gave p99 156–187 ms, two gave 280–364 ms.
fn default_writer_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| usize::from(n).saturating_sub(1).max(1))
}

/// What older `--print-config` output wrote in place of a secret.
const REDACTED: &str = "<redacted>";

/// A secret as given: empty means unset; the old placeholder is refused so
/// that a printed-then-reloaded file never runs with a wrong secret.
fn secret(name: &'static str, value: &str) -> Result<Option<String>, ConfigError> {
    let value = value.trim();
    if value == REDACTED {
        return Err(ConfigError::Invalid {
            name,
            message: format!(
                "{REDACTED:?} is the placeholder older versions of --print-config wrote instead \
                 of the real value; put the real value there, or remove the line"
            ),
        });
    }
    Ok((!value.is_empty()).then(|| value.to_owned()))
}

/// Greedy word wrap for the comments of `--print-config`.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    for paragraph in text.lines() {
        let mut line = String::new();
        for word in paragraph.split_whitespace() {
            if !line.is_empty() && line.len() + 1 + word.len() > width {
                lines.push(std::mem::take(&mut line));
            }
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        }
        lines.push(line);
    }
    lines
}

/// Lets a type that is written as text in flags and in the file go through
/// serde as that text (`#[serde(try_from = "String", into = "String")]`).
macro_rules! serde_as_text {
    ($($ty:ty),*) => {$(
        impl TryFrom<String> for $ty {
            type Error = String;
            fn try_from(s: String) -> Result<Self, String> {
                s.parse()
            }
        }
        impl From<$ty> for String {
            fn from(v: $ty) -> String {
                v.to_string()
            }
        }
    )*};
}
serde_as_text!(HostPort, AdminListen, Network, Timeout, BrokerUrl);

/// Lets clap and the file read a type with its `FromStr` and [`plain`]'s
/// messages (`--queue-limit must be ... (got 0)`), which name the flag,
/// the variable or the file key the bad value came from.
macro_rules! worded {
    ($ty:ident $(<const $least:ident: $int:ty>)?) => {
        impl$(<const $least: $int>)? ValueParserFactory for $ty$(<$least>)? {
            type Parser = Worded<Self>;
            fn value_parser() -> Worded<Self> {
                Worded(<Self as FromStr>::from_str)
            }
        }
        impl<'de, $(const $least: $int)?> Deserialize<'de> for $ty$(<$least>)? {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                plain::from_text(d, <Self as FromStr>::from_str)
            }
        }
    };
}
worded!(Timeout);
worded!(ByteCount<const LEAST: u64>);
worded!(Count<const LEAST: usize>);

/// The broker: `none`, or a Redis URL the Redis client accepts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct BrokerUrl(pub Option<String>);

impl FromStr for BrokerUrl {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if matches!(s, "none" | "off" | "") {
            return Ok(Self(None));
        }
        let usage = "expected \"none\" or redis://[USER:PASSWORD@]HOST:PORT[/DB]";
        if !(s.starts_with("redis://") || s.starts_with("rediss://")) {
            return Err(format!(
                "{:?} is not a Redis URL: {usage}",
                crate::broker::redact_url(s)
            ));
        }
        if s.contains(":***@") {
            return Err(
                "the password *** is what --print-config shows instead of the real one; \
                 give the real password (JANUS_BROKER keeps it out of the file)"
                    .into(),
            );
        }
        redis::Client::open(s)
            .map_err(|e| format!("{}: {e} ({usage})", crate::broker::redact_url(s)))?;
        Ok(Self(Some(s.to_owned())))
    }
}

impl fmt::Display for BrokerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.as_deref().unwrap_or("none"))
    }
}

/// A `HOST:PORT` to listen on, kept as written; the host is resolved at start-up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct HostPort(String);

impl FromStr for HostPort {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.parse::<SocketAddr>().is_ok() {
            return Ok(Self(s.to_owned()));
        }
        let usage = "expected HOST:PORT, e.g. 0.0.0.0:8081, localhost:8081 or [::1]:8081";
        let (host, port) = s
            .rsplit_once(':')
            .ok_or_else(|| format!("{s:?} has no port: {usage}"))?;
        if port.parse::<u16>().is_err() {
            return Err(format!(
                "{s:?}: the port {port:?} is not a number from 0 to 65535 ({usage})"
            ));
        }
        if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c == ':') {
            return Err(format!("{s:?}: {host:?} is not a host name ({usage})"));
        }
        Ok(Self(s.to_owned()))
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl HostPort {
    /// The address to bind: the host's first IPv4 address, else its first IPv6 one.
    ///
    /// # Errors
    /// A message naming the host when it does not resolve.
    pub fn resolve(&self) -> Result<SocketAddr, String> {
        janus_core::net::resolve_prefer_ipv4(&self.0)
    }
}

/// An optional listener's address (the admin API's, the WebSocket one), or `off`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AdminListen(pub Option<HostPort>);

impl FromStr for AdminListen {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "off" | "none" => Ok(Self(None)),
            other => other
                .parse()
                .map(|a| Self(Some(a)))
                .map_err(|e| format!("{e}, or \"off\"")),
        }
    }
}

impl fmt::Display for AdminListen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(at) => at.fmt(f),
            None => f.write_str("off"),
        }
    }
}

/// A network allowed to publish: CIDR, or a bare address meaning just that
/// address (/32 for IPv4, /128 for IPv6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Network(pub IpNet);

impl FromStr for Network {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        s.parse::<IpNet>()
            .map(|net| net.trunc())
            .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
            .map(Self)
            .map_err(|_| {
                format!(
                    "{s:?} is neither an address (10.0.0.1, ::1) nor a network (10.0.0.0/8, fd00::/8)"
                )
            })
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A duration that can also be `off` (`0` and `0s` mean off too).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(into = "String")]
pub struct Timeout(pub Option<Duration>);

impl FromStr for Timeout {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "off" | "none" | "0" => Ok(Self(None)),
            other => parse_duration(other)
                .map(|d| Self((!d.is_zero()).then_some(d)))
                .map_err(|e| format!("{e}, or \"off\"")),
        }
    }
}

impl fmt::Display for Timeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(d) => humantime::format_duration(d).fmt(f),
            None => f.write_str("off"),
        }
    }
}

/// A size in bytes of at least `LEAST`: a plain number, or a number with a
/// unit (`64KiB`, `1MiB`, `1.5 MB`), read by `bytesize`. Written back as a
/// plain number, so nothing is rounded on the way out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct ByteCount<const LEAST: u64 = 0>(pub u64);

impl<const LEAST: u64> ByteCount<LEAST> {
    fn to_usize(self) -> Result<usize, String> {
        usize::try_from(self.0).map_err(|_| format!("{} bytes is too large", self.0))
    }
}

impl<const LEAST: u64> FromStr for ByteCount<LEAST> {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        s.parse::<u64>()
            .or_else(|_| s.parse::<bytesize::ByteSize>().map(|b| b.as_u64()))
            .ok()
            .filter(|&n| n >= LEAST)
            .map(Self)
            .ok_or_else(|| {
                let least = match LEAST {
                    0 => String::new(),
                    1 => " of at least 1 byte".to_owned(),
                    n => format!(" of at least {n} bytes"),
                };
                format!(
                    "must be a size{least}, in bytes or with a unit, such as 65536, 64KiB or 1MiB"
                )
            })
    }
}

impl<const LEAST: u64> fmt::Display for ByteCount<LEAST> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A whole number of at least `LEAST` (`Count<1>` for "at least one").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Count<const LEAST: usize>(usize);

impl<const LEAST: usize> Count<LEAST> {
    /// The number.
    pub fn get(self) -> usize {
        self.0
    }
}

impl<const LEAST: usize> FromStr for Count<LEAST> {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().parse::<usize>() {
            Ok(n) if n >= LEAST => Ok(Self(n)),
            Err(e) if *e.kind() == IntErrorKind::PosOverflow => Err(format!(
                "must be a whole number from {LEAST} to {}",
                usize::MAX
            )),
            _ if LEAST == 0 => Err("must be a whole number (0 or more)".to_owned()),
            _ => Err(format!("must be a whole number of at least {LEAST}")),
        }
    }
}

impl<const LEAST: usize> fmt::Display for Count<LEAST> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The config file is not valid TOML.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's explanation.
        message: String,
    },
    /// A value does not fit its setting (wrong kind, unknown key).
    #[error("{message}")]
    Value {
        /// What is wrong, where.
        message: String,
    },
    /// A value is out of range, or settings contradict each other.
    #[error("invalid setting {name}: {message}")]
    Invalid {
        /// The setting.
        name: &'static str,
        /// What is wrong.
        message: String,
    },
    /// A bug: the settings could not be written out.
    #[error("internal error in the settings: {0}")]
    Internal(String),
}

impl ConfigError {
    /// Every problem figment found, each with its key and where it came from.
    fn from_figment(err: figment::Error) -> ConfigError {
        let message = err
            .into_iter()
            .map(|e| {
                let origin = e
                    .metadata
                    .as_ref()
                    .map(|m| format!(" in {}", m.name))
                    .unwrap_or_default();
                if let figment::error::Kind::UnknownField(key, _) = &e.kind {
                    format!("unknown setting {key}{origin} (janus-server --print-config lists them all)")
                } else if e.path.is_empty() {
                    format!("invalid settings{origin}: {}", e.kind)
                } else {
                    format!("invalid setting {}{origin}: {}", e.path.join("."), e.kind)
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        ConfigError::Value { message }
    }
}

/// Whether `origin` has the form browsers send in `Origin`:
/// `scheme://host[:port]`, or `null` (a page opened from a file).
fn origin_form(origin: &str) -> Result<(), &'static str> {
    if origin == "null" {
        return Ok(());
    }
    let Some((scheme, authority)) = origin.split_once("://") else {
        return Err("expected scheme://host[:port], e.g. https://app.example.com");
    };
    let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !scheme_ok {
        return Err("the scheme (before ://) is not one, e.g. https");
    }
    if authority.is_empty() {
        return Err("no host after ://");
    }
    if authority.contains(['/', '?', '#']) {
        return Err("an origin has no path, query or fragment");
    }
    if authority
        .chars()
        .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err("a host has no spaces");
    }
    if authority.contains('@') {
        return Err("an origin has no user name");
    }
    Ok(())
}

#[cfg(test)]
mod tests;
