//! Command-line flags and commands.

use std::time::Duration;

use clap::{Parser, Subcommand};
pub use janus_core::api::TopicSort;
use janus_core::cli::{whole, Worded};

const EXIT_CODES: &str = "\
Exit status: 0 done (or Ctrl-C ended `subscribe`); 1 the operation ran and
failed: the server said no (unknown session, wrong token, bad topic) or closed
a subscription; 2 bad usage; 3 cannot connect (nothing listening, timeout, or
a port that is not the service asked for).";

/// Inspect and steer a running Janus server through its admin HTTP API, and
/// watch its topics as a client.
///
/// Every command but `subscribe` talks to the admin API (--server);
/// `subscribe` connects to the client port (--client) like any subscriber.
/// Try it: `janus-admin subscribe news` in one terminal, then
/// `janus-admin publish news '{"hello":"world"}'` in another.
#[derive(Debug, Parser)]
#[command(name = "janus-admin", version, after_help = EXIT_CODES)]
pub struct Cli {
    /// Admin API base URL.
    #[arg(
        long,
        global = true,
        env = "JANUS_ADMIN_URL",
        default_value = "http://127.0.0.1:8082",
        value_name = "URL"
    )]
    pub server: String,

    /// Admin token, sent as `Authorization: Bearer TOKEN`.
    #[arg(
        long,
        global = true,
        env = "JANUS_ADMIN_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,

    /// Print the server's JSON instead of a table (`subscribe`: each delivery as received).
    #[arg(long, global = true)]
    pub json: bool,

    /// Give up on a request (`subscribe`: on connecting, the hello, each ACK) after this many seconds.
    #[arg(long, global = true, default_value_t = 10.0, value_name = "SECONDS", value_parser = Worded(seconds), allow_negative_numbers = true)]
    pub timeout: f64,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// The request timeout, sanitized.
    pub fn timeout(&self) -> Duration {
        Duration::try_from_secs_f64(self.timeout.max(0.1)).unwrap_or(Duration::from_secs(10))
    }
}

/// How to read a DATA argument.
#[derive(Debug, Clone, clap::Args)]
pub struct Data {
    /// The message data: used as JSON if it parses as JSON (`42`, `{"a":1}`,
    /// `"text"`), otherwise sent as a JSON string.
    pub data: String,
    /// Always send DATA as a JSON string, even if it parses as JSON.
    #[arg(long)]
    pub string: bool,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Server summary: uptime, connections, counters, rates over the last 10 s (and the broker, in a cluster).
    Status,
    /// The live nodes of the cluster this server belongs to, with their clients and topics.
    Cluster,
    /// List topics with their subscriber and message counts.
    Topics {
        /// Only topics starting with this.
        #[arg(long, default_value = "")]
        prefix: String,
        /// Most topics listed.
        #[arg(long, default_value_t = 100, value_parser = Worded(whole::<usize, 1>), allow_negative_numbers = true)]
        limit: usize,
        /// Order of the listing: name, published (most first) or subscribers (most first).
        #[arg(long, default_value_t = TopicSort::Name)]
        sort: TopicSort,
        /// Name order only: start after this topic (the "next" of a previous page).
        #[arg(long, value_name = "TOPIC")]
        after: Option<String>,
    },
    /// One topic and its subscribers.
    Topic {
        /// The topic name.
        name: String,
        /// Most subscribers listed.
        #[arg(long, default_value_t = 100, value_parser = Worded(whole::<usize, 1>), allow_negative_numbers = true)]
        limit: usize,
        /// Start after this session token (the "next" of a previous page).
        #[arg(long, value_name = "TOKEN")]
        after: Option<String>,
    },
    /// A topic's stream (epoch, offsets) and the messages its history holds
    /// for clients that resume (X1).
    History {
        /// The topic name.
        name: String,
        /// List the messages after this offset (default: from the oldest held).
        #[arg(long, value_name = "OFFSET", value_parser = Worded(whole::<u64, 0>), allow_negative_numbers = true)]
        since: Option<u64>,
        /// Most messages listed.
        #[arg(long, default_value_t = 20, value_parser = Worded(whole::<usize, 1>), allow_negative_numbers = true)]
        limit: usize,
    },
    /// List sessions (paginated by token).
    Sessions {
        /// Page size.
        #[arg(long, default_value_t = 100, value_parser = Worded(whole::<usize, 1>), allow_negative_numbers = true)]
        limit: usize,
        /// Start after this token (the "next" of a previous page).
        #[arg(long, value_name = "TOKEN")]
        after: Option<String>,
        /// Follow every page to the end.
        #[arg(long, conflicts_with = "after")]
        all: bool,
    },
    /// One session: address, age, subscriptions, queue depth, deliveries.
    Session {
        /// The session token (32 hex digits, from the client's hello).
        // Not named `token`: that id belongs to the global `--token` flag,
        // and clap would fill one from the other.
        #[arg(value_name = "TOKEN")]
        session: String,
    },
    /// Print each message published to TOPIC as it arrives, as an ordinary client
    /// on the client port; Ctrl-C ends it.
    ///
    /// One line per message: the topic, `event=` and `id=` when set, then the
    /// data as JSON. With --json, each delivery exactly as the server sent it.
    /// "subscribed to ..." on stderr says when messages can start arriving.
    Subscribe {
        /// The topics.
        #[arg(required = true, value_name = "TOPIC")]
        topics: Vec<String>,
        /// The server's client port.
        #[arg(
            long,
            env = "JANUS_CLIENT_ADDR",
            default_value = "127.0.0.1:8081",
            value_name = "HOST:PORT"
        )]
        client: String,
        /// Exit after this many messages.
        #[arg(long, value_name = "N", value_parser = Worded(whole::<u64, 0>), allow_negative_numbers = true)]
        count: Option<u64>,
    },
    /// Publish a message to a topic, exactly like a client PUBLISH (through the admin API).
    Publish {
        /// The topic.
        topic: String,
        /// The data.
        #[command(flatten)]
        data: Data,
        /// Event name.
        #[arg(long, default_value = "")]
        event: String,
        /// Message id.
        #[arg(long, default_value = "")]
        message_id: String,
    },
    /// Send one message to one session only.
    Send {
        /// The session token.
        #[arg(value_name = "TOKEN")]
        session: String,
        /// The data.
        #[command(flatten)]
        data: Data,
        /// Topic written in the delivery (the session need not subscribe to it).
        #[arg(long, default_value = "")]
        topic: String,
        /// Event name.
        #[arg(long, default_value = "")]
        event: String,
        /// Message id.
        #[arg(long, default_value = "")]
        message_id: String,
    },
    /// Disconnect a session (it receives a `kicked` error first).
    Kick {
        /// The session token.
        #[arg(value_name = "TOKEN")]
        session: String,
        /// Reason sent to the client.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Stop accepting, tell clients `server_shutdown`, write what is queued, exit.
    Drain,
    /// Live view of rates, connections and the busiest topics; `q` quits.
    Top {
        /// Seconds between refreshes.
        #[arg(long, default_value_t = 1.0, value_name = "SECONDS", value_parser = Worded(seconds), allow_negative_numbers = true)]
        interval: f64,
    },
}

/// A number of seconds, 0 or more (`--timeout`, `--interval`).
fn seconds(text: &str) -> Result<f64, String> {
    text.trim()
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0)
        .ok_or_else(|| "must be a number of seconds, such as 10 or 0.5".to_owned())
}
