//! The server's validated configuration, and how flags, environment and a
//! TOML file combine into it.
//!
//! Every setting has one name used three ways: `--queue-limit 512` on the
//! command line, `JANUS_QUEUE_LIMIT=512` in the environment, and
//! `queue-limit = 512` in the `--config` file. Precedence: flag, then
//! environment, then file, then the built-in default. [`Settings`] is that
//! raw, all-optional layer; [`Config`] is the validated result the library runs on.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Parser, ValueEnum};
use ipnet::IpNet;
use serde::Deserialize;

/// What happens to a subscriber whose outbound queue is full (PROTOCOL P8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SlowConsumerPolicy {
    /// Send `slow_consumer` and close the connection (the default): nothing
    /// is silently lost, and one stuck client cannot hold memory.
    Disconnect,
    /// Drop the oldest queued delivery to make room; the client stays connected.
    DropOldest,
}

/// The validated configuration the server runs with.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address of the client listener.
    pub listen: SocketAddr,
    /// Send `PING` after this long without sending anything (P4).
    pub heartbeat: Duration,
    /// Longest client frame in bytes (P1).
    pub max_frame: usize,
    /// Most simultaneous client connections; `None` means the open-file capacity.
    pub max_connections: Option<usize>,
    /// Most frames queued for one client (deliveries and replies) before the slow-consumer policy applies.
    pub queue_limit: usize,
    /// Most bytes queued for one client, every frame counted.
    pub queue_bytes: usize,
    /// A client whose socket accepts nothing for this long is disconnected.
    pub write_deadline: Duration,
    /// Most topics the server holds at a time.
    pub max_topics: usize,
    /// Most simultaneous connections from one client address.
    pub max_connections_per_ip: usize,
    /// How long a session whose connection was lost waits for a resume (X1); zero: it does not.
    pub session_ttl: Duration,
    /// Messages kept per topic for resumes (X1); zero keeps none.
    pub history_size: usize,
    /// How long a message is kept in its topic's history.
    pub history_ttl: Duration,
    /// Most bytes of history in all, over every topic.
    pub history_bytes: usize,
    /// What to do with a slow consumer.
    pub slow_consumer: SlowConsumerPolicy,
    /// Most topics one session may subscribe to.
    pub max_subscriptions: usize,
    /// Networks allowed to publish without a key.
    pub allow_publish_from: Vec<IpNet>,
    /// A key that allows publishing from anywhere (PROTOCOL X4).
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
}

/// One writer thread per core but one: the clients' thread takes a core
/// (and writes too when it is idle, see `writer::help`). Measured on a
/// 2-core machine with the load bot on it (10,000 subscribers × 200 messages
/// at 100/s): one writer thread gave p99 156–187 ms, two gave 280–364 ms.
fn default_writer_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| usize::from(n).saturating_sub(1).max(1))
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8081)),
            heartbeat: Duration::from_secs(30),
            max_frame: janus_core::DEFAULT_MAX_FRAME,
            max_connections: None,
            queue_limit: 4096,
            queue_bytes: 1024 * 1024,
            write_deadline: Duration::from_secs(10),
            max_topics: 1_000_000,
            max_connections_per_ip: 10_000,
            session_ttl: Duration::from_secs(60),
            history_size: 6000,
            history_ttl: Duration::from_secs(300),
            history_bytes: 256 << 20,
            slow_consumer: SlowConsumerPolicy::Disconnect,
            max_subscriptions: 1024,
            allow_publish_from: default_publishers(),
            publish_key: None,
            idle_timeout: None,
            shutdown_timeout: Duration::from_secs(10),
            admin_listen: Some(SocketAddr::from(([127, 0, 0, 1], 8082))),
            admin_token: None,
            admin_max_connections: 64,
            admin_header_timeout: Duration::from_secs(10),
            admin_request_timeout: Duration::from_secs(10),
            admin_idle_timeout: Duration::from_secs(30),
            writer_threads: default_writer_threads(),
            test_fanout_delay: None,
        }
    }
}

/// Loopback, IPv4 and IPv6.
fn default_publishers() -> Vec<IpNet> {
    vec![
        IpNet::new(IpAddr::from([127, 0, 0, 0]), 8).unwrap_or_default(),
        IpNet::new(IpAddr::from(std::net::Ipv6Addr::LOCALHOST), 128).unwrap_or_default(),
    ]
}

/// Parses `30s`, `250ms`, `1m` and also `off`/`0` (for optional durations).
fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("invalid duration {s:?}: {e} (examples: 30s, 250ms, 2m)"))
}

/// A setting that can also be switched `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OrOff<T>(pub Option<T>);

fn parse_optional_duration(s: &str) -> Result<OrOff<Duration>, String> {
    match s.trim() {
        "off" | "none" | "0" => Ok(OrOff(None)),
        other => parse_duration(other).map(|d| OrOff((!d.is_zero()).then_some(d))),
    }
}

fn parse_admin_listen(s: &str) -> Result<OrOff<SocketAddr>, String> {
    match s.trim() {
        "off" | "none" => Ok(OrOff(None)),
        other => other
            .parse()
            .map(|a| OrOff(Some(a)))
            .map_err(|e| format!("invalid address {other:?}: {e} (or \"off\")")),
    }
}

/// `janus-server`: the Janus messaging server.
///
/// Clients connect over TCP (PROTOCOL.md), subscribe to topics, and receive
/// every message published to them over their own connection. Every option
/// can also be set as JANUS_<NAME> in the environment (e.g.
/// JANUS_QUEUE_LIMIT=512) or as `name = value` in the --config TOML file
/// (e.g. queue-limit = 512); flags win over the environment, which wins over
/// the file. `janus-server --print-config` shows the defaults as a file.
#[derive(Debug, Default, Parser, Deserialize)]
#[command(name = "janus-server", version, about, long_about)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Settings {
    /// Read settings from this TOML file (same names as the flags).
    #[arg(long, env = "JANUS_CONFIG", value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,

    /// Print the effective configuration as a TOML file and exit.
    #[arg(long)]
    #[serde(skip)]
    pub print_config: bool,

    /// Address to accept clients on [default: 0.0.0.0:8081, the 2009 port].
    #[arg(long, env = "JANUS_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,

    /// Send PING to a client after this long without sending it anything [default: 30s].
    #[arg(long, env = "JANUS_HEARTBEAT", value_name = "DURATION", value_parser = parse_duration)]
    #[serde(default, with = "serde_duration")]
    pub heartbeat: Option<Duration>,

    /// Longest client frame in bytes; longer ones get frame_too_large and a close [default: 65536].
    #[arg(long, env = "JANUS_MAX_FRAME", value_name = "BYTES")]
    pub max_frame: Option<usize>,

    /// Most simultaneous client connections [default: what the open-file limit allows].
    #[arg(long, env = "JANUS_MAX_CONNECTIONS", value_name = "N")]
    pub max_connections: Option<usize>,

    /// Frames queued for one client (deliveries and replies) before it counts as a slow consumer [default: 4096].
    #[arg(long, env = "JANUS_QUEUE_LIMIT", value_name = "N")]
    pub queue_limit: Option<usize>,

    /// Bytes queued for one client, every frame counted, before it counts as a slow consumer [default: 1048576].
    #[arg(long, env = "JANUS_QUEUE_BYTES", value_name = "BYTES")]
    pub queue_bytes: Option<usize>,

    /// Disconnect a client whose socket accepts nothing for this long while messages wait [default: 10s].
    #[arg(long, env = "JANUS_WRITE_DEADLINE", value_name = "DURATION", value_parser = parse_duration)]
    #[serde(default, with = "serde_duration")]
    pub write_deadline: Option<Duration>,

    /// Most topics the server holds; subscribing to a new topic past it gets unavailable [default: 1000000].
    #[arg(long, env = "JANUS_MAX_TOPICS", value_name = "N")]
    pub max_topics: Option<usize>,

    /// Most simultaneous connections from one client address; more get not_allowed [default: 10000].
    #[arg(long, env = "JANUS_MAX_CONNECTIONS_PER_IP", value_name = "N")]
    pub max_connections_per_ip: Option<usize>,

    /// How long a session whose connection was lost waits for a resume, or "off" [default: 60s].
    #[arg(long, env = "JANUS_SESSION_TTL", value_name = "DURATION", value_parser = parse_optional_duration)]
    #[serde(default, with = "serde_optional_duration")]
    pub session_ttl: Option<OrOff<Duration>>,

    /// Messages kept per topic so clients can resume without a gap; 0 keeps none [default: 6000, a minute at 100 messages/s].
    #[arg(long, env = "JANUS_HISTORY_SIZE", value_name = "N")]
    pub history_size: Option<usize>,

    /// How long a message stays in its topic's history [default: 5m].
    #[arg(long, env = "JANUS_HISTORY_TTL", value_name = "DURATION", value_parser = parse_duration)]
    #[serde(default, with = "serde_duration")]
    pub history_ttl: Option<Duration>,

    /// Most bytes of history over all topics; past it a topic keeps fewer messages [default: 268435456].
    #[arg(long, env = "JANUS_HISTORY_BYTES", value_name = "BYTES")]
    pub history_bytes: Option<usize>,

    /// What to do with a slow consumer: disconnect it (sending slow_consumer) or drop its oldest queued delivery [default: disconnect].
    #[arg(long, env = "JANUS_SLOW_CONSUMER", value_enum, value_name = "POLICY")]
    pub slow_consumer: Option<SlowConsumerPolicy>,

    /// Most topics one client may subscribe to; more gets too_many_subscriptions and a close [default: 1024].
    #[arg(long, env = "JANUS_MAX_SUBSCRIPTIONS", value_name = "N")]
    pub max_subscriptions: Option<usize>,

    /// Network allowed to publish, as CIDR; repeatable [default: 127.0.0.0/8 and ::1/128].
    #[arg(
        long,
        env = "JANUS_ALLOW_PUBLISH_FROM",
        value_name = "CIDR",
        value_delimiter = ','
    )]
    pub allow_publish_from: Option<Vec<IpNet>>,

    /// Key that lets a publish from any address through, sent as a top-level "key" field [default: none].
    #[arg(
        long,
        env = "JANUS_PUBLISH_KEY",
        value_name = "KEY",
        hide_env_values = true
    )]
    pub publish_key: Option<String>,

    /// Close clients that send nothing for this long, or "off" [default: off; old bots never speak].
    #[arg(long, env = "JANUS_IDLE_TIMEOUT", value_name = "DURATION", value_parser = parse_optional_duration)]
    #[serde(default, with = "serde_optional_duration")]
    pub idle_timeout: Option<OrOff<Duration>>,

    /// On SIGINT/SIGTERM, how long to keep writing queued deliveries before closing [default: 10s].
    #[arg(long, env = "JANUS_SHUTDOWN_TIMEOUT", value_name = "DURATION", value_parser = parse_duration)]
    #[serde(default, with = "serde_duration")]
    pub shutdown_timeout: Option<Duration>,

    /// Address of the admin HTTP API, or "off" [default: 127.0.0.1:8082].
    #[arg(long, env = "JANUS_ADMIN_LISTEN", value_name = "ADDR", value_parser = parse_admin_listen)]
    #[serde(default, with = "serde_admin_listen")]
    pub admin_listen: Option<OrOff<SocketAddr>>,

    /// Bearer token the admin API requires; without one it accepts loopback clients only [default: none].
    #[arg(
        long,
        env = "JANUS_ADMIN_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub admin_token: Option<String>,

    /// Read the admin token from this file (first line).
    #[arg(long, env = "JANUS_ADMIN_TOKEN_FILE", value_name = "FILE")]
    pub admin_token_file: Option<PathBuf>,

    /// Most admin API connections open at once; more are answered 503 and closed, so admin traffic never takes descriptors from clients [default: 64].
    #[arg(long, env = "JANUS_ADMIN_MAX_CONNECTIONS", value_name = "N")]
    pub admin_max_connections: Option<usize>,

    /// Close an admin connection whose request headers take longer than this, or that waits longer than this for its next request [default: 10s].
    #[arg(long, env = "JANUS_ADMIN_HEADER_TIMEOUT", value_name = "DURATION", value_parser = parse_duration)]
    #[serde(default, with = "serde_duration")]
    pub admin_header_timeout: Option<Duration>,

    /// Answer 408 to an admin request whose body has not arrived and been answered within this [default: 10s].
    #[arg(long, env = "JANUS_ADMIN_REQUEST_TIMEOUT", value_name = "DURATION", value_parser = parse_duration)]
    #[serde(default, with = "serde_duration")]
    pub admin_request_timeout: Option<Duration>,

    /// Close an admin connection that moves no byte either way for this long, e.g. one that never reads its answer [default: 30s].
    #[arg(long, env = "JANUS_ADMIN_IDLE_TIMEOUT", value_name = "DURATION", value_parser = parse_duration)]
    #[serde(default, with = "serde_duration")]
    pub admin_idle_timeout: Option<Duration>,

    /// Threads that write deliveries to client sockets, besides the clients' thread [default: one per core but one].
    #[arg(long, env = "JANUS_WRITER_THREADS", value_name = "N")]
    pub writer_threads: Option<usize>,

    /// Test only: busy-wait this long per delivery to simulate a slow fan-out.
    #[arg(long, hide = true, value_parser = parse_duration)]
    #[serde(skip)]
    pub test_fanout_delay: Option<Duration>,
}

macro_rules! serde_with {
    ($name:ident, $ty:ty, $parse:path) => {
        mod $name {
            use super::*;
            pub fn deserialize<'de, D: serde::Deserializer<'de>>(
                d: D,
            ) -> Result<Option<$ty>, D::Error> {
                let s = String::deserialize(d)?;
                $parse(&s).map(Some).map_err(serde::de::Error::custom)
            }
        }
    };
}
serde_with!(serde_duration, Duration, parse_duration);
serde_with!(
    serde_optional_duration,
    OrOff<Duration>,
    parse_optional_duration
);
serde_with!(serde_admin_listen, OrOff<SocketAddr>, parse_admin_listen);

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The config file is not valid TOML for these settings.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's explanation.
        message: String,
    },
    /// A value is out of range.
    #[error("invalid setting {name}: {message}")]
    Invalid {
        /// The setting.
        name: &'static str,
        /// What is wrong.
        message: String,
    },
}

impl Settings {
    /// Reads a TOML settings file.
    ///
    /// # Errors
    /// [`ConfigError`] when the file cannot be read or parsed.
    pub fn from_file(path: &Path) -> Result<Settings, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })
    }

    /// Fills every unset field from `lower`.
    pub fn or(self, lower: Settings) -> Settings {
        Settings {
            config: self.config.or(lower.config),
            print_config: self.print_config,
            listen: self.listen.or(lower.listen),
            heartbeat: self.heartbeat.or(lower.heartbeat),
            max_frame: self.max_frame.or(lower.max_frame),
            max_connections: self.max_connections.or(lower.max_connections),
            queue_limit: self.queue_limit.or(lower.queue_limit),
            queue_bytes: self.queue_bytes.or(lower.queue_bytes),
            write_deadline: self.write_deadline.or(lower.write_deadline),
            max_topics: self.max_topics.or(lower.max_topics),
            max_connections_per_ip: self.max_connections_per_ip.or(lower.max_connections_per_ip),
            session_ttl: self.session_ttl.or(lower.session_ttl),
            history_size: self.history_size.or(lower.history_size),
            history_ttl: self.history_ttl.or(lower.history_ttl),
            history_bytes: self.history_bytes.or(lower.history_bytes),
            slow_consumer: self.slow_consumer.or(lower.slow_consumer),
            max_subscriptions: self.max_subscriptions.or(lower.max_subscriptions),
            allow_publish_from: self.allow_publish_from.or(lower.allow_publish_from),
            publish_key: self.publish_key.or(lower.publish_key),
            idle_timeout: self.idle_timeout.or(lower.idle_timeout),
            shutdown_timeout: self.shutdown_timeout.or(lower.shutdown_timeout),
            admin_listen: self.admin_listen.or(lower.admin_listen),
            admin_token: self.admin_token.or(lower.admin_token),
            admin_token_file: self.admin_token_file.or(lower.admin_token_file),
            admin_max_connections: self.admin_max_connections.or(lower.admin_max_connections),
            admin_header_timeout: self.admin_header_timeout.or(lower.admin_header_timeout),
            admin_request_timeout: self.admin_request_timeout.or(lower.admin_request_timeout),
            admin_idle_timeout: self.admin_idle_timeout.or(lower.admin_idle_timeout),
            writer_threads: self.writer_threads.or(lower.writer_threads),
            test_fanout_delay: self.test_fanout_delay.or(lower.test_fanout_delay),
        }
    }

    /// Loads the `--config` file (if any) under these settings and validates the result.
    ///
    /// # Errors
    /// [`ConfigError`] for an unreadable file or an invalid value.
    pub fn resolve(self) -> Result<Config, ConfigError> {
        let merged = match self.config.clone() {
            Some(path) => self.or(Settings::from_file(&path)?),
            None => self,
        };
        merged.into_config()
    }

    fn into_config(self) -> Result<Config, ConfigError> {
        let d = Config::default();
        let positive = |name: &'static str, v: Option<usize>, default: usize| match v {
            Some(0) => Err(ConfigError::Invalid {
                name,
                message: "must be at least 1".into(),
            }),
            Some(v) => Ok(v),
            None => Ok(default),
        };
        let admin_token = match (self.admin_token, self.admin_token_file) {
            (Some(t), _) => Some(t),
            (None, Some(path)) => {
                let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                let token = text.lines().next().unwrap_or("").trim().to_owned();
                if token.is_empty() {
                    return Err(ConfigError::Invalid {
                        name: "admin-token-file",
                        message: format!("{} is empty", path.display()),
                    });
                }
                Some(token)
            }
            (None, None) => None,
        };
        let nonzero = |name: &'static str, v: Option<Duration>, default: Duration| {
            let v = v.unwrap_or(default);
            if v.is_zero() {
                return Err(ConfigError::Invalid {
                    name,
                    message: "must be longer than zero".into(),
                });
            }
            Ok(v)
        };
        let heartbeat = nonzero("heartbeat", self.heartbeat, d.heartbeat)?;
        if self.write_deadline.is_some_and(|d| d.is_zero()) {
            return Err(ConfigError::Invalid {
                name: "write-deadline",
                message: "must be longer than zero".into(),
            });
        }
        Ok(Config {
            listen: self.listen.unwrap_or(d.listen),
            heartbeat,
            max_frame: positive("max-frame", self.max_frame, d.max_frame)?,
            max_connections: match self.max_connections {
                Some(0) => {
                    return Err(ConfigError::Invalid {
                        name: "max-connections",
                        message: "must be at least 1".into(),
                    })
                }
                other => other,
            },
            queue_limit: positive("queue-limit", self.queue_limit, d.queue_limit)?,
            queue_bytes: positive("queue-bytes", self.queue_bytes, d.queue_bytes)?,
            write_deadline: self.write_deadline.unwrap_or(d.write_deadline),
            max_topics: positive("max-topics", self.max_topics, d.max_topics)?,
            max_connections_per_ip: positive(
                "max-connections-per-ip",
                self.max_connections_per_ip,
                d.max_connections_per_ip,
            )?,
            session_ttl: self
                .session_ttl
                .map_or(d.session_ttl, |t| t.0.unwrap_or_default()),
            history_size: self.history_size.unwrap_or(d.history_size),
            history_ttl: self.history_ttl.unwrap_or(d.history_ttl),
            history_bytes: self.history_bytes.unwrap_or(d.history_bytes),
            slow_consumer: self.slow_consumer.unwrap_or(d.slow_consumer),
            max_subscriptions: positive(
                "max-subscriptions",
                self.max_subscriptions,
                d.max_subscriptions,
            )?,
            allow_publish_from: self.allow_publish_from.unwrap_or(d.allow_publish_from),
            publish_key: self.publish_key.filter(|k| !k.is_empty()),
            idle_timeout: self.idle_timeout.map_or(d.idle_timeout, |t| t.0),
            shutdown_timeout: self.shutdown_timeout.unwrap_or(d.shutdown_timeout),
            admin_listen: self.admin_listen.map_or(d.admin_listen, |a| a.0),
            admin_token: admin_token.filter(|t| !t.is_empty()),
            admin_max_connections: positive(
                "admin-max-connections",
                self.admin_max_connections,
                d.admin_max_connections,
            )?,
            admin_header_timeout: nonzero(
                "admin-header-timeout",
                self.admin_header_timeout,
                d.admin_header_timeout,
            )?,
            admin_request_timeout: nonzero(
                "admin-request-timeout",
                self.admin_request_timeout,
                d.admin_request_timeout,
            )?,
            admin_idle_timeout: nonzero(
                "admin-idle-timeout",
                self.admin_idle_timeout,
                d.admin_idle_timeout,
            )?,
            writer_threads: positive("writer-threads", self.writer_threads, d.writer_threads)?,
            test_fanout_delay: self.test_fanout_delay.filter(|d| !d.is_zero()),
        })
    }
}

impl Config {
    /// The configuration as a TOML settings file (secrets redacted).
    pub fn to_toml(&self) -> String {
        let cidrs: Vec<String> = self
            .allow_publish_from
            .iter()
            .map(|n| format!("{n:?}"))
            .collect();
        let dur = |d: Duration| humantime::format_duration(d).to_string();
        let mut out = String::from(
            "# janus-server settings; every key is also a --flag and a JANUS_* variable.\n",
        );
        out += &format!("listen = \"{}\"\n", self.listen);
        out += &format!("heartbeat = \"{}\"\n", dur(self.heartbeat));
        out += &format!("max-frame = {}\n", self.max_frame);
        match self.max_connections {
            Some(n) => out += &format!("max-connections = {n}\n"),
            None => out += "# max-connections = <open-file capacity>\n",
        }
        out += &format!("queue-limit = {}\n", self.queue_limit);
        out += &format!("queue-bytes = {}\n", self.queue_bytes);
        out += &format!("write-deadline = \"{}\"\n", dur(self.write_deadline));
        out += &format!("max-topics = {}\n", self.max_topics);
        out += &format!("max-connections-per-ip = {}\n", self.max_connections_per_ip);
        out += &format!(
            "session-ttl = \"{}\"\n",
            if self.session_ttl.is_zero() {
                "off".into()
            } else {
                dur(self.session_ttl)
            }
        );
        out += &format!("history-size = {}\n", self.history_size);
        out += &format!("history-ttl = \"{}\"\n", dur(self.history_ttl));
        out += &format!("history-bytes = {}\n", self.history_bytes);
        out += &format!(
            "slow-consumer = \"{}\"\n",
            match self.slow_consumer {
                SlowConsumerPolicy::Disconnect => "disconnect",
                SlowConsumerPolicy::DropOldest => "drop-oldest",
            }
        );
        out += &format!("max-subscriptions = {}\n", self.max_subscriptions);
        out += &format!(
            "allow-publish-from = [{}]\n",
            cidrs
                .iter()
                .map(|c| format!("\"{c}\""))
                .collect::<Vec<_>>()
                .join(", ")
        );
        out += if self.publish_key.is_some() {
            "publish-key = \"<redacted>\"\n"
        } else {
            "# publish-key = \"...\"\n"
        };
        out += &format!(
            "idle-timeout = \"{}\"\n",
            self.idle_timeout.map(dur).unwrap_or_else(|| "off".into())
        );
        out += &format!("shutdown-timeout = \"{}\"\n", dur(self.shutdown_timeout));
        out += &format!(
            "admin-listen = \"{}\"\n",
            self.admin_listen
                .map(|a| a.to_string())
                .unwrap_or_else(|| "off".into())
        );
        out += if self.admin_token.is_some() {
            "admin-token = \"<redacted>\"\n"
        } else {
            "# admin-token = \"...\"\n"
        };
        out += &format!("admin-max-connections = {}\n", self.admin_max_connections);
        out += &format!(
            "admin-header-timeout = \"{}\"\n",
            dur(self.admin_header_timeout)
        );
        out += &format!(
            "admin-request-timeout = \"{}\"\n",
            dur(self.admin_request_timeout)
        );
        out += &format!(
            "admin-idle-timeout = \"{}\"\n",
            dur(self.admin_idle_timeout)
        );
        out += &format!("writer-threads = {}\n", self.writer_threads);
        out
    }

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

    /// Whether `ip` may publish without a key.
    pub fn may_publish(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        self.allow_publish_from.iter().any(|net| net.contains(&ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_round_trip_through_print_config() {
        let printed = Config::default().to_toml();
        let dir = std::env::temp_dir().join(format!("janus-config-{}", std::process::id()));
        std::fs::write(&dir, &printed).unwrap();
        let cfg = Settings {
            config: Some(dir.clone()),
            ..Settings::default()
        }
        .resolve()
        .unwrap();
        std::fs::remove_file(&dir).unwrap();
        assert_eq!(cfg.to_toml(), printed);
        assert_eq!(cfg.listen.port(), 8081);
    }

    #[test]
    fn flags_win_over_file() {
        let path = std::env::temp_dir().join(format!("janus-config-b-{}", std::process::id()));
        std::fs::write(&path, "queue-limit = 7\nheartbeat = \"5s\"\nidle-timeout = \"off\"\nslow-consumer = \"drop-oldest\"\n").unwrap();
        let cli = Settings::try_parse_from([
            "janus-server",
            "--config",
            path.to_str().unwrap(),
            "--queue-limit",
            "9",
        ])
        .unwrap();
        let cfg = cli.resolve().unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(cfg.queue_limit, 9);
        assert_eq!(cfg.heartbeat, Duration::from_secs(5));
        assert_eq!(cfg.slow_consumer, SlowConsumerPolicy::DropOldest);
        assert_eq!(cfg.idle_timeout, None);
    }

    #[test]
    fn bad_settings_are_clear_errors() {
        let path = std::env::temp_dir().join(format!("janus-config-c-{}", std::process::id()));
        std::fs::write(&path, "queue-limt = 7\n").unwrap();
        let err = Settings {
            config: Some(path.clone()),
            ..Settings::default()
        }
        .resolve()
        .unwrap_err();
        std::fs::remove_file(&path).unwrap();
        assert!(err.to_string().contains("queue-limt"), "{err}");
        let err = Settings {
            queue_limit: Some(0),
            ..Settings::default()
        }
        .resolve()
        .unwrap_err();
        assert!(err.to_string().contains("queue-limit"), "{err}");
        assert!(Settings::try_parse_from(["janus-server", "--heartbeat", "soon"]).is_err());
        let missing = Settings {
            config: Some("/nonexistent/janus.toml".into()),
            ..Settings::default()
        }
        .resolve();
        assert!(matches!(missing, Err(ConfigError::Read { .. })));
    }

    #[test]
    fn publish_permissions() {
        let cfg = Config::default();
        assert!(cfg.may_publish("127.0.0.1".parse().unwrap()));
        assert!(cfg.may_publish("127.9.9.9".parse().unwrap()));
        assert!(cfg.may_publish("::1".parse().unwrap()));
        assert!(cfg.may_publish("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!cfg.may_publish("10.0.0.1".parse().unwrap()));
    }
}
