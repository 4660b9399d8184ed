//! `GET /sessions`, `GET /sessions/{token}`, `POST /sessions/{token}/send`
//! and `DELETE /sessions/{token}`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::Json;
use janus_core::message::encode_delivery;
use janus_core::{validate_topic, Timestamp, Token};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::datetime::{rfc3339, seconds_since};
use super::error::ApiError;
use super::server::AdminState;
use super::topics::page_size;
use crate::session::{CloseReason, Session};

/// One session, as the API shows it.
#[derive(Debug, Serialize)]
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
    pub queue_depth: usize,
    /// Bytes held for it: every frame not yet written, with per-frame overhead.
    pub queued_bytes: usize,
    /// Deliveries written to it.
    pub delivered: u64,
}

impl SessionInfo {
    fn of(session: &Session) -> Self {
        let mut subscriptions: Vec<String> = session
            .subscriptions()
            .iter()
            .map(|t| t.to_string())
            .collect();
        subscriptions.sort_unstable();
        let outbound = session.outbound.status();
        Self {
            token: session.token.to_string(),
            peer: session.peer.to_string(),
            connected_at: rfc3339(session.connected_at),
            connected_s: seconds_since(session.connected_at),
            subscriptions,
            queue_depth: outbound.frames,
            queued_bytes: outbound.charged,
            delivered: outbound.delivered,
        }
    }
}

/// Query of `GET /sessions`.
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    /// Start after this token (the `next` of the previous page).
    pub after: Option<String>,
    /// Page size (default 100, at most 10,000).
    pub limit: Option<usize>,
}

/// The body of `GET /sessions`.
#[derive(Debug, Serialize)]
pub struct SessionPage {
    /// Live sessions in total.
    pub total: usize,
    /// This page, ordered by token.
    pub sessions: Vec<SessionInfo>,
    /// The `after` of the next page, or `null` on the last page.
    pub next: Option<String>,
}

fn parse_token(text: &str) -> Result<Token, ApiError> {
    text.parse().map_err(|_| {
        ApiError::bad_request(
            "bad_token",
            format!("{text:?} is not a token (32 lowercase hex digits)"),
        )
    })
}

fn find(state: &AdminState, token: &str) -> Result<Arc<Session>, ApiError> {
    state
        .shared
        .sessions
        .get(&parse_token(token)?)
        .ok_or_else(|| ApiError::unknown_session(token))
}

/// `GET /sessions?after=TOKEN&limit=N`: one page of sessions in token order.
pub async fn list(
    State(state): State<Arc<AdminState>>,
    Query(query): Query<ListQuery>,
) -> Result<Json<SessionPage>, ApiError> {
    let after = query.after.as_deref().map(parse_token).transpose()?;
    let limit = page_size(query.limit);
    let registry = &state.shared.sessions;
    let mut page = registry.page(after, limit + 1);
    let next = if page.len() > limit {
        page.truncate(limit);
        page.last().map(|s| s.token.to_string())
    } else {
        None
    };
    Ok(Json(SessionPage {
        total: registry.len(),
        sessions: page.iter().map(|s| SessionInfo::of(s)).collect(),
        next,
    }))
}

/// `GET /sessions/{token}`.
pub async fn one(
    State(state): State<Arc<AdminState>>,
    Path(token): Path<String>,
) -> Result<Json<SessionInfo>, ApiError> {
    let session = find(&state, &token)?;
    Ok(Json(SessionInfo::of(&session)))
}

/// The body of `POST /sessions/{token}/send`.
#[derive(Debug, Deserialize)]
struct SendBody {
    #[serde(default)]
    topic: String,
    #[serde(default)]
    event: String,
    #[serde(default)]
    message_id: String,
    data: Option<Box<RawValue>>,
}

/// The answer to `POST /sessions/{token}/send`.
#[derive(Debug, Serialize)]
pub struct Sent {
    /// The session the message was queued for.
    pub token: String,
    /// Its queue depth after queueing.
    pub queue_depth: usize,
}

/// `POST /sessions/{token}/send` with `{"data", "topic"?, "event"?,
/// "message_id"?}`: one delivery (PROTOCOL P6) to this session only.
/// `topic` may be empty (the default): the client subscribed to nothing
/// to receive it.
pub async fn send(
    State(state): State<Arc<AdminState>>,
    Path(token): Path<String>,
    body: Bytes,
) -> Result<Json<Sent>, ApiError> {
    let session = find(&state, &token)?;
    if !body.trim_ascii_start().starts_with(b"{") {
        return Err(ApiError::bad_request(
            "bad_json",
            "the body must be a JSON object with a \"data\" field",
        ));
    }
    let body: SendBody = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request("bad_json", format!("body: {e}")))?;
    if !body.topic.is_empty() {
        validate_topic(&body.topic)?;
    }
    let data = body.data.as_deref().map_or("null", RawValue::get);
    let frame = encode_delivery(
        Timestamp::now(),
        &body.topic,
        &body.event,
        &body.message_id,
        data,
    );
    if !state.shared.send(&session, &frame) {
        return Err(ApiError::new(
            axum::http::StatusCode::CONFLICT,
            "not_queued",
            "the session is closing, or its queue is full",
        ));
    }
    Ok(Json(Sent {
        token: session.token.to_string(),
        queue_depth: session.outbound.status().frames,
    }))
}

/// Query of `DELETE /sessions/{token}`.
#[derive(Debug, Deserialize)]
pub struct KickQuery {
    /// The reason sent to the client with `kicked`.
    pub reason: Option<String>,
}

/// The answer to `DELETE /sessions/{token}`.
#[derive(Debug, Serialize)]
pub struct Kicked {
    /// The session being disconnected.
    pub kicked: String,
}

/// `DELETE /sessions/{token}?reason=`: sends `kicked` and disconnects.
pub async fn kick(
    State(state): State<Arc<AdminState>>,
    Path(token): Path<String>,
    Query(query): Query<KickQuery>,
) -> Result<Json<Kicked>, ApiError> {
    let session = find(&state, &token)?;
    let reason = query
        .reason
        .filter(|r| !r.trim().is_empty())
        .unwrap_or_else(|| "disconnected by an operator".to_owned());
    tracing::info!(token = %session.token, peer = %session.peer, %reason, "kicking session");
    state
        .shared
        .close_session(&session, &CloseReason::Kicked(reason));
    Ok(Json(Kicked {
        kicked: session.token.to_string(),
    }))
}
