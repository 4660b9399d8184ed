//! `GET /health`, `GET /ready`, `GET /status` and `GET /metrics`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use janus_core::ErrorCode;
use serde::Serialize;

use super::datetime::rfc3339;
use super::error::ApiError;
use super::server::AdminState;

/// `{"status":"ok"}`: the process answers.
#[derive(Debug, Serialize)]
pub struct Health {
    /// Always `"ok"`.
    pub status: &'static str,
}

/// `GET /health`: liveness. Needs no token.
pub async fn health() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// The body of `GET /ready`.
#[derive(Debug, Serialize)]
pub struct Ready {
    /// Whether the server accepts clients.
    pub ready: bool,
    /// `"starting"` or `"draining"` when not ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
}

/// `GET /ready`: 200 while accepting clients, 503 while starting or draining.
pub async fn ready(State(state): State<Arc<AdminState>>) -> (StatusCode, Json<Ready>) {
    let shared = &state.shared;
    if shared.is_ready() {
        return (
            StatusCode::OK,
            Json(Ready {
                ready: true,
                reason: None,
            }),
        );
    }
    let reason = if shared.draining() {
        "draining"
    } else {
        "starting"
    };
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(Ready {
            ready: false,
            reason: Some(reason),
        }),
    )
}

/// Where the server listens.
#[derive(Debug, Serialize)]
pub struct Listen {
    /// The client (protocol) listener.
    pub clients: String,
    /// The admin API, if enabled.
    pub admin: Option<String>,
}

/// Delivery latency (queue to socket) over the recent window, by bucket:
/// each figure is the upper bound of the bucket holding that quantile.
#[derive(Debug, Serialize)]
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

/// The body of `GET /status`.
#[derive(Debug, Serialize)]
pub struct Status {
    /// Server version.
    pub version: &'static str,
    /// Seconds since start.
    pub uptime_s: u64,
    /// When the server started (RFC 3339, UTC).
    pub started_at: String,
    /// Accepting clients (not starting, not draining).
    pub ready: bool,
    /// A drain or shutdown has begun.
    pub draining: bool,
    /// `"token"` or `"loopback"`: how the admin API is protected.
    pub admin_auth: &'static str,
    /// Listen addresses.
    pub listen: Listen,
    /// Most client connections this server holds (from the open-file limit
    /// or `--max-connections`).
    pub capacity: usize,
    /// Client connections open now.
    pub connections: u64,
    /// Most client connections open at once.
    pub connections_peak: u64,
    /// Client connections accepted since start.
    pub connections_total: u64,
    /// Client connections refused because the server was full.
    pub connections_refused: u64,
    /// Live sessions.
    pub sessions: usize,
    /// Live topics.
    pub topics: usize,
    /// Subscriptions (topic, session pairs).
    pub subscriptions: usize,
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
    pub errors: BTreeMap<&'static str, u64>,
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

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// `GET /status`: counters, gauges and recent rates.
pub async fn status(State(state): State<Arc<AdminState>>) -> Json<Status> {
    let shared = &*state.shared;
    let stats = &*shared.stats;
    let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let recent = state.rates.recent();
    Json(Status {
        version: env!("CARGO_PKG_VERSION"),
        uptime_s: shared.started.elapsed().as_secs(),
        started_at: rfc3339(shared.started_at),
        ready: shared.is_ready(),
        draining: shared.draining(),
        admin_auth: if shared.config.admin_token.is_some() {
            "token"
        } else {
            "loopback"
        },
        listen: Listen {
            clients: shared.local_addr.to_string(),
            admin: shared.admin_addr().map(|a| a.to_string()),
        },
        capacity: shared.capacity,
        connections: get(&stats.connections),
        connections_peak: get(&stats.connections_peak),
        connections_total: get(&stats.connections_total),
        connections_refused: get(&stats.connections_refused),
        sessions: shared.sessions.len(),
        topics: shared.topics.topic_count(),
        subscriptions: shared.topics.subscription_count(),
        messages_published: get(&stats.messages_published),
        deliveries_enqueued: get(&stats.deliveries_enqueued),
        deliveries_sent: get(&stats.deliveries_sent),
        deliveries_dropped: get(&stats.deliveries_dropped),
        bytes_out: get(&stats.bytes_out),
        slow_consumers: get(&stats.slow_consumers),
        errors: ErrorCode::ALL
            .iter()
            .map(|c| (c.as_str(), stats.errors_sent(*c)))
            .collect(),
        rate_window_s: recent.window.as_secs_f64(),
        publish_rate: recent.publish_rate,
        delivery_rate: recent.delivery_rate,
        bytes_out_rate: recent.bytes_out_rate,
        delivery_latency: Latency {
            count: recent.latency.count(),
            mean_ms: recent.latency.mean().map(ms),
            p50_ms: recent.latency.quantile(0.5).map(ms),
            p99_ms: recent.latency.quantile(0.99).map(ms),
        },
    })
}

/// `GET /metrics`: the Prometheus text exposition.
pub async fn metrics(State(state): State<Arc<AdminState>>) -> Response {
    match state.exposition.render() {
        Ok(text) => ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response(),
        Err(_) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "could not render the metrics",
        )
        .into_response(),
    }
}
