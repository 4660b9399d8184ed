//! `GET /health`, `GET /ready`, `GET /status`, `GET /cluster` and `GET /metrics`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use janus_core::api::{
    ClusterNode, ClusterNodes, Health, HistoryHeld, Latency, Limits, Listen, Ready, Refusals,
    ResumeCounters, Status,
};
use janus_core::ErrorCode;

use super::datetime::rfc3339;
use super::error::ApiError;
use super::server::AdminState;
use crate::stats::Refusal;
use crate::Shared;

/// `GET /health`: liveness. Needs no token.
pub async fn health() -> Json<Health> {
    Json(Health {
        status: "ok".to_owned(),
    })
}

/// `GET /ready`: 200 while accepting clients, 503 while starting or
/// draining, or in a cluster while the broker is not connected (`broker`).
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
    let accepting = shared.accepting.load(Ordering::Relaxed);
    let reason = if shared.draining() {
        "draining"
    } else if accepting && shared.cluster().is_some() {
        "broker"
    } else {
        "starting"
    };
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(Ready {
            ready: false,
            reason: Some(reason.to_owned()),
        }),
    )
}

/// The limits in force (`usize::MAX`, "no limit", reads as `null`).
pub fn limits(shared: &Shared) -> Limits {
    let config = &shared.config;
    let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
    Limits {
        max_connections: count(shared.capacity),
        max_connections_per_ip: (config.max_connections_per_ip != usize::MAX)
            .then(|| count(config.max_connections_per_ip)),
        max_topics: count(config.max_topics),
        max_subscriptions: count(config.max_subscriptions),
        admin_max_connections: count(config.admin_max_connections),
        open_files: crate::limits::FileLimit::current().ok().map(|l| l.soft),
    }
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
        version: env!("CARGO_PKG_VERSION").to_owned(),
        uptime_s: shared.started.elapsed().as_secs(),
        started_at: rfc3339(shared.started_at),
        ready: shared.is_ready(),
        draining: shared.draining(),
        admin_auth: if shared.config.admin_token.is_some() {
            "token"
        } else {
            "loopback"
        }
        .to_owned(),
        listen: Listen {
            clients: shared.local_addr.to_string(),
            admin: shared.admin_addr().map(|a| a.to_string()),
            websocket: shared.ws_addr().map(|a| a.to_string()),
        },
        capacity: shared.capacity as u64,
        connections: get(&stats.connections),
        connections_peak: get(&stats.connections_peak),
        connections_total: get(&stats.connections_total),
        connections_refused: get(&stats.connections_refused),
        refused: Refusals {
            per_ip: stats.refusals(Refusal::PerIp),
            max_connections: stats.refusals(Refusal::MaxConnections),
            fds: stats.refusals(Refusal::Fds),
            max_topics: stats.refusals(Refusal::MaxTopics),
        },
        limits: limits(shared),
        sessions: shared.sessions.len() as u64,
        topics: shared.topics.topic_count() as u64,
        subscriptions: shared.topics.subscription_count() as u64,
        messages_published: get(&stats.messages_published),
        deliveries_enqueued: get(&stats.deliveries_enqueued),
        deliveries_sent: get(&stats.deliveries_sent),
        deliveries_dropped: get(&stats.deliveries_dropped),
        bytes_out: get(&stats.bytes_out),
        slow_consumers: get(&stats.slow_consumers),
        errors: ErrorCode::ALL
            .iter()
            .map(|c| (c.as_str().to_owned(), stats.errors_sent(*c)))
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
        resume: resume_counters(shared),
        history: history_held(shared),
        broker: shared.cluster().map(|c| c.broker.status()),
    })
}

/// Resumes and detached sessions, for `/status`.
fn resume_counters(shared: &crate::Shared) -> ResumeCounters {
    let stats = &*shared.stats;
    let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
    ResumeCounters {
        attempted: get(&stats.resumes),
        recovered: get(&stats.resumes_recovered),
        not_recovered: get(&stats.resumes_not_recovered),
        unknown_session: get(&stats.resumes_unknown),
        replayed: get(&stats.messages_replayed),
        detached: get(&stats.sessions_detached_now),
        detached_total: get(&stats.sessions_detached),
        expired: get(&stats.sessions_expired),
        resumed_elsewhere: get(&stats.sessions_resumed_elsewhere),
        not_kept: get(&stats.sessions_not_kept),
    }
}

/// History held and its limits, for `/status`.
fn history_held(shared: &crate::Shared) -> HistoryHeld {
    let history = &shared.history;
    HistoryHeld {
        entries: history.messages.load(Ordering::Relaxed) as u64,
        bytes: history.bytes.load(Ordering::Relaxed) as u64,
        size: history.size as u64,
        ttl_s: u64::from(history.ttl_secs),
        max_bytes: history.max_bytes as u64,
    }
}

/// `GET /cluster`: the live nodes (`404 not_clustered` on a single node,
/// `503 unavailable` while the broker cannot be asked).
pub async fn cluster(State(state): State<Arc<AdminState>>) -> Result<Json<ClusterNodes>, ApiError> {
    let Some(cluster) = state.shared.cluster() else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_clustered",
            "this server runs on its own (--broker none)",
        ));
    };
    let nodes = cluster.broker.nodes().await?;
    Ok(Json(ClusterNodes {
        this_node: cluster.broker.node_id().to_owned(),
        nodes: nodes
            .into_iter()
            .map(|n| ClusterNode {
                node_id: n.node_id,
                clients: n.clients,
                topics: n.topics,
                admin: n.admin_addr.map(|a| a.to_string()),
                started_at: n.started_at,
                announced_at: n.announced_at,
            })
            .collect(),
    }))
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
