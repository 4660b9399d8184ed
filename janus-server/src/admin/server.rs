//! The admin API's routes and its shared state.

use std::sync::Arc;

use axum::routing::{get, post};
use axum::Router;

use super::rates::Rates;
use super::{auth, control, error::ApiError, sessions, status, topics};
use crate::metrics::Exposition;
use crate::Shared;

/// What every admin handler can reach.
#[derive(Debug)]
pub struct AdminState {
    /// The server's shared state.
    pub shared: Arc<Shared>,
    /// Counter samples for the rates of `/status`.
    pub rates: Arc<Rates>,
    /// The Prometheus registry behind `/metrics`.
    pub exposition: Exposition,
}

impl AdminState {
    /// State for one server.
    pub fn new(shared: Arc<Shared>) -> Self {
        Self {
            rates: Arc::new(Rates::new(shared.stats.clone())),
            exposition: Exposition::new(shared.clone()),
            shared,
        }
    }
}

/// Every route, behind the authorization middleware.
pub fn router(state: Arc<AdminState>) -> Router {
    Router::new()
        .route("/health", get(status::health))
        .route("/ready", get(status::ready))
        .route("/status", get(status::status))
        .route("/cluster", get(status::cluster))
        .route("/metrics", get(status::metrics))
        .route("/topics", get(topics::list))
        .route("/topics/{*topic}", get(topics::one))
        .route("/sessions", get(sessions::list))
        .route(
            "/sessions/{token}",
            get(sessions::one).delete(sessions::kick),
        )
        .route("/sessions/{token}/send", post(sessions::send))
        .route("/publish", post(control::publish))
        .route("/drain", post(control::drain))
        .route("/ui", get(super::ui::page))
        .fallback(|| async {
            ApiError::new(
                axum::http::StatusCode::NOT_FOUND,
                "not_found",
                "no such endpoint; see docs/admin-api.md",
            )
        })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::authorize,
        ))
        .with_state(state)
}
