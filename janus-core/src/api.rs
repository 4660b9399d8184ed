//! The admin HTTP API's JSON bodies, as one definition for both sides.
//!
//! `janus-server` serializes these and `janus-admin` deserializes the same
//! types, so renaming or retyping a field is a compile error in both rather
//! than a value that silently reads as 0 on one side. `docs/admin-api.md`
//! shows each body; the field docs here are the reference.
//!
//! Fields are required when deserializing (only `Option`s may be absent):
//! a client talking to a server whose API differs says which field is
//! missing instead of printing zeros.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// `GET /health`: the process answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// Always `"ok"`.
    pub status: String,
}

/// `GET /ready`: 200 while accepting clients, 503 while starting or draining.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ready {
    /// Whether the server accepts clients.
    pub ready: bool,
    /// `"starting"` or `"draining"` when not ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Where the server listens (in [`Status`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listen {
    /// The client (protocol) listener.
    pub clients: String,
    /// The admin API, if enabled.
    pub admin: Option<String>,
    /// The WebSocket listener (X2), if enabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub websocket: Option<String>,
}

/// Delivery latency (queue to socket) over the recent window, by bucket:
/// each figure is the upper bound of the bucket holding that quantile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// Deliveries observed in the window.
    pub count: u64,
    /// Mean latency in milliseconds (`null` without deliveries).
    pub mean_ms: Option<f64>,
    /// Median, in milliseconds (bucket upper bound).
    pub p50_ms: Option<f64>,
    /// 99th percentile, in milliseconds (bucket upper bound).
    pub p99_ms: Option<f64>,
}

/// Refusals since start, by the limit that refused (in [`Status`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusals {
    /// Connections from an address that had `max-connections-per-ip` open.
    pub per_ip: u64,
    /// Connections past the capacity (`max-connections` or the open-file limit).
    pub max_connections: u64,
    /// Connections the process had no file descriptor for.
    pub fds: u64,
    /// Subscriptions that would have made a topic past `max-topics`.
    pub max_topics: u64,
}

/// The limits in force (in [`Status`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Most client connections: `max-connections`, or less if the
    /// open-file limit leaves room for fewer (the same as `capacity`).
    pub max_connections: u64,
    /// `max-connections-per-ip`; `null` for no limit.
    pub max_connections_per_ip: Option<u64>,
    /// `max-topics`: most topics the server holds at once.
    pub max_topics: u64,
    /// `max-subscriptions`: most topics one session holds.
    pub max_subscriptions: u64,
    /// `admin-max-connections`: most admin API connections at once.
    pub admin_max_connections: u64,
    /// The process's open-file (soft) limit now; `null` if unreadable.
    pub open_files: Option<u64>,
}

/// `GET /status`: the server in one object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// Server version.
    pub version: String,
    /// Seconds since start.
    pub uptime_s: u64,
    /// When the server started (RFC 3339, UTC).
    pub started_at: String,
    /// Accepting clients (not starting, not draining).
    pub ready: bool,
    /// A drain or shutdown has begun.
    pub draining: bool,
    /// `"token"` or `"loopback"`: how the admin API is protected.
    pub admin_auth: String,
    /// Listen addresses.
    pub listen: Listen,
    /// Most client connections this server holds (from the open-file limit
    /// or `--max-connections`).
    pub capacity: u64,
    /// Client connections open now.
    pub connections: u64,
    /// Most client connections open at once.
    pub connections_peak: u64,
    /// Client connections accepted since start.
    pub connections_total: u64,
    /// Client connections refused (by any limit: see `refused`).
    pub connections_refused: u64,
    /// Refusals since start by the limit that refused.
    pub refused: Refusals,
    /// The limits in force.
    pub limits: Limits,
    /// Live sessions.
    pub sessions: u64,
    /// Live topics.
    pub topics: u64,
    /// Subscriptions (topic, session pairs).
    pub subscriptions: u64,
    /// Messages published since start.
    pub messages_published: u64,
    /// Deliveries queued for subscribers.
    pub deliveries_enqueued: u64,
    /// Deliveries completely written to sockets.
    pub deliveries_sent: u64,
    /// Deliveries dropped by the slow-consumer policy.
    pub deliveries_dropped: u64,
    /// Bytes written to clients.
    pub bytes_out: u64,
    /// Slow consumers disconnected.
    pub slow_consumers: u64,
    /// Error frames sent, by P7 code (every code, zeros included).
    pub errors: BTreeMap<String, u64>,
    /// Seconds the rates cover (10 once the server has run that long).
    pub rate_window_s: f64,
    /// Messages published per second over the window.
    pub publish_rate: f64,
    /// Deliveries written per second over the window.
    pub delivery_rate: f64,
    /// Bytes written to clients per second over the window.
    pub bytes_out_rate: f64,
    /// Delivery latency over the window.
    pub delivery_latency: Latency,
    /// Resumes (X1) and the sessions that wait for one.
    pub resume: ResumeCounters,
    /// Topic history kept for resumes (X1).
    pub history: HistoryHeld,
    /// The cluster broker (absent on a single node, `--broker none`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broker: Option<BrokerInfo>,
}

/// Resumes (X1) since start, and the sessions waiting for one (in [`Status`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResumeCounters {
    /// Resumes asked for, either form.
    pub attempted: u64,
    /// Answered `recovered: true`: everything missed was delivered.
    pub recovered: u64,
    /// Answered `recovered: false`: the history or the session's buffer did
    /// not reach back far enough, so the client must resync.
    pub not_recovered: u64,
    /// Refused with `unknown_session` (expired or unknown token, or not the
    /// connection's first request).
    pub unknown_session: u64,
    /// Messages replayed from topic history or a detached session's queue.
    pub replayed: u64,
    /// Sessions waiting for a resume without a connection now.
    pub detached: u64,
    /// Sessions that lost their connection and were kept for a resume.
    pub detached_total: u64,
    /// Detached sessions freed because no resume came within the session TTL.
    pub expired: u64,
    /// Detached sessions ended because their client resumed on another
    /// node of the cluster.
    #[serde(default)]
    pub resumed_elsewhere: u64,
    /// Sessions that lost their connection and ended at once, because
    /// `max-detached-sessions` were already waiting for a resume.
    #[serde(default)]
    pub not_kept: u64,
}

/// Topic history held now, and its limits (in [`Status`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryHeld {
    /// Messages held, over all topics.
    pub entries: u64,
    /// Bytes held, over all topics.
    pub bytes: u64,
    /// Most messages kept per topic (`--history-size`).
    pub size: u64,
    /// Longest a message is kept, in seconds (`--history-ttl`).
    pub ttl_s: u64,
    /// Most bytes kept over all topics (`--history-bytes`).
    pub max_bytes: u64,
}

/// The node's link to the cluster broker (in [`Status`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BrokerInfo {
    /// The Redis URL, password hidden.
    pub url: String,
    /// This node's id.
    pub node_id: String,
    /// Connected, resubscribed and caught up.
    pub connected: bool,
    /// Times the link was lost (each followed by reconnection attempts).
    pub reconnects: u64,
    /// The last link error since start.
    pub last_error: Option<String>,
    /// Topics whose channel this node subscribes to.
    pub topics: u64,
    /// Messages received from the broker.
    pub messages_in: u64,
    /// Publishes the broker accepted from this node.
    pub messages_out: u64,
    /// Publishes refused as unavailable.
    pub publish_failures: u64,
    /// Messages read back from topic streams after a reconnect.
    pub recovered: u64,
    /// Holes the topic streams could not fill.
    pub gaps: u64,
    /// Median publish round trip to the broker, in milliseconds.
    pub publish_rtt_p50_ms: Option<f64>,
    /// 99th percentile publish round trip, in milliseconds.
    pub publish_rtt_p99_ms: Option<f64>,
}

/// `GET /cluster`: the live nodes of the cluster, as they announce themselves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterNodes {
    /// The node that answered.
    pub this_node: String,
    /// Live nodes by id.
    pub nodes: Vec<ClusterNode>,
}

/// One live node (in [`ClusterNodes`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterNode {
    /// Its id.
    pub node_id: String,
    /// Its client connections.
    pub clients: u64,
    /// Topics it has local subscribers of.
    pub topics: u64,
    /// Its admin API address, if it has one.
    pub admin: Option<String>,
    /// When it started, Unix seconds.
    pub started_at: u64,
    /// When it last announced itself, Unix seconds.
    pub announced_at: u64,
}

/// How `GET /topics` orders its answer (`sort=`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TopicSort {
    /// By name (the default); the only order `after=` pages through.
    #[default]
    Name,
    /// Most messages published first, then by name (which of several
    /// topics tied at the cut-off are listed is unspecified).
    Published,
    /// Most subscribers first, then by name (ties at the cut-off as above).
    Subscribers,
}

impl TopicSort {
    /// Every order, as `sort=` spells them.
    pub const ALL: [TopicSort; 3] = [
        TopicSort::Name,
        TopicSort::Published,
        TopicSort::Subscribers,
    ];

    /// The value of `sort=`.
    pub fn as_str(self) -> &'static str {
        match self {
            TopicSort::Name => "name",
            TopicSort::Published => "published",
            TopicSort::Subscribers => "subscribers",
        }
    }
}

impl fmt::Display for TopicSort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TopicSort {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        TopicSort::ALL
            .into_iter()
            .find(|o| o.as_str() == s)
            .ok_or_else(|| format!("unknown order {s:?} (name, published or subscribers)"))
    }
}

/// One topic in a listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicSummary {
    /// Topic name.
    pub name: String,
    /// Subscribers now.
    pub subscribers: u64,
    /// Messages published to it since it was created.
    pub published: u64,
}

/// `GET /topics`: one page of topics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicList {
    /// Live topics on the server (all of them, not only the listed ones).
    pub total: u64,
    /// Whether more topics matched than were returned.
    pub truncated: bool,
    /// The topics, in the requested order.
    pub topics: Vec<TopicSummary>,
    /// The `after` of the next page in name order, or `null` on the last
    /// page (and always for the other orders, which give the top entries only).
    pub next: Option<String>,
}

/// One subscriber of a topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicSubscriber {
    /// Its session token.
    pub token: String,
    /// Its address.
    pub peer: String,
    /// Deliveries queued for it and not yet written.
    pub queue_depth: u64,
}

/// `GET /topics/{topic}`: one topic and a page of its subscribers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicDetail {
    /// Topic name.
    pub name: String,
    /// Subscribers now (all of them).
    pub subscribers: u64,
    /// Messages published to it since it was created.
    pub published: u64,
    /// Whether `sessions` lists fewer than `subscribers`.
    pub truncated: bool,
    /// Up to `limit` subscribers, ordered by token.
    pub sessions: Vec<TopicSubscriber>,
    /// The `after` of the next page of subscribers, or `null` on the last.
    pub next: Option<String>,
}

/// One message of a topic's history.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HistoryMessage {
    /// Its offset in the topic's stream.
    pub offset: u64,
    /// The delivery exactly as an offset client receives it (with `"offset"` last).
    pub delivery: Box<serde_json::value::RawValue>,
}

/// `GET /topics/{topic}/history`: a topic's stream (X1) and a page of its history.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TopicHistory {
    /// Topic name.
    pub name: String,
    /// The stream's epoch; `null` while nothing has asked for one yet.
    pub epoch: Option<String>,
    /// Offset of the oldest message held (`last + 1` when none is).
    pub first: u64,
    /// Offset of the latest message published (0: none yet).
    pub last: u64,
    /// Messages held.
    pub count: u64,
    /// Bytes held.
    pub bytes: u64,
    /// Up to `limit` messages after `since`, oldest first.
    pub messages: Vec<HistoryMessage>,
    /// The `since` of the next page, or `null` on the last.
    pub next: Option<u64>,
}

/// One session, as `GET /sessions` and `GET /sessions/{token}` show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionInfo {
    /// The token from its hello.
    pub token: String,
    /// The client's address.
    pub peer: String,
    /// When it connected (RFC 3339, UTC).
    pub connected_at: String,
    /// Seconds since it connected.
    pub connected_s: u64,
    /// Its topics, sorted.
    pub subscriptions: Vec<String>,
    /// Frames queued and not yet completely written: deliveries and replies.
    pub queue_depth: u64,
    /// Bytes held for it: every frame not yet written, with per-frame overhead.
    pub queued_bytes: u64,
    /// Deliveries written to it.
    pub delivered: u64,
    /// `"attached"` (it has a connection) or `"detached"` (it lost it and
    /// waits for a resume, X1).
    pub state: String,
    /// Detached only: milliseconds since it lost its connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detached_ms: Option<u64>,
    /// Detached only: milliseconds left before it is freed if no resume comes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in_ms: Option<u64>,
    /// How it is connected: `tcp` or `ws` (WebSocket, X2).
    #[serde(default = "tcp")]
    pub transport: String,
}

fn tcp() -> String {
    "tcp".to_owned()
}

/// `GET /sessions`: one page of sessions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionPage {
    /// Live sessions in total.
    pub total: u64,
    /// This page, ordered by token.
    pub sessions: Vec<SessionInfo>,
    /// The `after` of the next page, or `null` on the last page.
    pub next: Option<String>,
}

/// The answer to `POST /publish`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Published {
    /// The topic published to.
    pub topic: String,
    /// Local subscribers the message was queued for (0 in a cluster).
    pub reached: u64,
    /// The server is in a cluster: the message went through the broker and
    /// every node delivers it to its own subscribers, so `reached` counts
    /// none of them.
    #[serde(default)]
    pub cluster: bool,
}

/// The answer to `POST /sessions/{token}/send`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sent {
    /// The session the message was queued for.
    pub token: String,
    /// Its queue depth after queueing.
    pub queue_depth: u64,
}

/// The answer to `DELETE /sessions/{token}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kicked {
    /// The session being disconnected.
    pub kicked: String,
}

/// The answer to `POST /drain`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Draining {
    /// Always `true`.
    pub draining: bool,
    /// Client connections still open when the drain began.
    pub connections: u64,
}

/// Every refused request's body: `{"error": CODE, "reason": TEXT}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiErrorBody {
    /// A short machine-readable code (a protocol P7 code where one fits).
    pub error: String,
    /// A human-readable explanation.
    pub reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sort_names_round_trip() {
        for sort in TopicSort::ALL {
            assert_eq!(sort.as_str().parse::<TopicSort>(), Ok(sort));
            let json = serde_json::to_string(&sort).unwrap();
            assert_eq!(json, format!("\"{sort}\""));
        }
        assert!("size".parse::<TopicSort>().is_err());
    }

    #[test]
    fn a_missing_field_is_an_error_not_a_zero() {
        let err = serde_json::from_str::<Published>(r#"{"topic":"t","reach":2}"#).unwrap_err();
        assert!(err.to_string().contains("missing field `reached`"), "{err}");
        let ready: Ready = serde_json::from_str(r#"{"ready":true}"#).unwrap();
        assert_eq!(ready.reason, None);
    }
}
