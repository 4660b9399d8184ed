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
    /// Client connections refused because the server was full.
    pub connections_refused: u64,
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
    /// Local subscribers the message was queued for.
    pub reached: u64,
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
    /// A short machine-readable code (a PROTOCOL P7 code where one fits).
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
