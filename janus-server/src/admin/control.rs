//! `POST /publish` and `POST /drain`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use janus_core::api::{Draining, Published};
use janus_core::Publish;

use super::error::ApiError;
use super::server::AdminState;

/// `POST /publish` with `{"topic","event","message_id","data"}`: publishes
/// exactly like a client `PUBLISH` (protocol P5). In a cluster it goes
/// through the broker (`503 unavailable` when that cannot be reached),
/// `reached` is 0 and `cluster` true: every node delivers it to its own
/// subscribers.
pub async fn publish(
    State(state): State<Arc<AdminState>>,
    body: Bytes,
) -> Result<Json<Published>, ApiError> {
    let text = std::str::from_utf8(&body)
        .map_err(|_| ApiError::bad_request("bad_json", "the body is not UTF-8"))?;
    let mut publish = Publish::from_json(text)?;
    // The admin API is already authorized; a publish key has no meaning here.
    publish.key = None;
    let (reached, cluster) = match state.shared.cluster() {
        Some(cluster) => {
            cluster.publish(&publish).await?;
            (0, true)
        }
        None => (state.shared.publish(&publish), false),
    };
    Ok(Json(Published {
        topic: publish.topic,
        reached: reached as u64,
        cluster,
    }))
}

/// `POST /drain`: stop accepting, send `server_shutdown`, flush queued
/// deliveries, exit. Answers at once (`202`); the server then finishes.
pub async fn drain(State(state): State<Arc<AdminState>>) -> (StatusCode, Json<Draining>) {
    let shared = &state.shared;
    if !shared.draining() {
        tracing::info!("drain requested through the admin API");
    }
    shared.drain();
    (
        StatusCode::ACCEPTED,
        Json(Draining {
            draining: true,
            connections: crate::stats::Stats::get(&shared.stats.connections),
        }),
    )
}
