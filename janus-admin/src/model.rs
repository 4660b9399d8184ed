//! The admin API's JSON, as this client reads it. Every field has a default
//! so that an older or newer server still prints what it can.

use std::collections::BTreeMap;

use serde::Deserialize;

/// `GET /status`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Status {
    pub version: String,
    pub uptime_s: u64,
    pub started_at: String,
    pub ready: bool,
    pub draining: bool,
    pub admin_auth: String,
    pub listen: Listen,
    pub capacity: u64,
    pub connections: u64,
    pub connections_peak: u64,
    pub connections_total: u64,
    pub connections_refused: u64,
    pub sessions: u64,
    pub topics: u64,
    pub subscriptions: u64,
    pub messages_published: u64,
    pub deliveries_enqueued: u64,
    pub deliveries_sent: u64,
    pub deliveries_dropped: u64,
    pub bytes_out: u64,
    pub slow_consumers: u64,
    pub errors: BTreeMap<String, u64>,
    pub rate_window_s: f64,
    pub publish_rate: f64,
    pub delivery_rate: f64,
    pub bytes_out_rate: f64,
    pub delivery_latency: Latency,
}

/// Listen addresses in `/status`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Listen {
    pub clients: String,
    pub admin: Option<String>,
}

/// Recent delivery latency in `/status`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Latency {
    pub count: u64,
    pub mean_ms: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

/// `GET /topics`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct TopicList {
    pub total: u64,
    pub truncated: bool,
    pub topics: Vec<TopicSummary>,
}

/// One topic of `GET /topics`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct TopicSummary {
    pub name: String,
    pub subscribers: u64,
    pub published: u64,
}

/// `GET /topics/{topic}`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct TopicDetail {
    pub name: String,
    pub subscribers: u64,
    pub published: u64,
    pub truncated: bool,
    pub sessions: Vec<Subscriber>,
}

/// One subscriber in `GET /topics/{topic}`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Subscriber {
    pub token: String,
    pub peer: String,
    pub queue_depth: u64,
}

/// `GET /sessions`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct SessionPage {
    pub total: u64,
    pub sessions: Vec<SessionInfo>,
    pub next: Option<String>,
}

/// `GET /sessions/{token}` and one entry of `GET /sessions`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct SessionInfo {
    pub token: String,
    pub peer: String,
    pub connected_at: String,
    pub connected_s: u64,
    pub subscriptions: Vec<String>,
    pub queue_depth: u64,
    pub delivered: u64,
}

/// `POST /publish`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Published {
    pub topic: String,
    pub reached: u64,
}

/// `POST /sessions/{token}/send`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Sent {
    pub token: String,
    pub queue_depth: u64,
}

/// `DELETE /sessions/{token}`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Kicked {
    pub kicked: String,
}

/// `POST /drain`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Draining {
    pub draining: bool,
    pub connections: u64,
}
