//! `GET /sessions`, `GET /sessions/{token}`, `POST /sessions/{token}/send`
//! and `DELETE /sessions/{token}`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::Json;
use janus_core::api::{Kicked, Sent, SessionInfo, SessionPage};
use janus_core::message::{encode_delivery, validate_data};
use janus_core::{validate_topic, Timestamp, Token};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::datetime::{rfc3339, seconds_since};
use super::error::ApiError;
use super::server::AdminState;
use super::topics::page_size;
use crate::broker::{NodeCommand, RouteError};
use crate::cluster::Cluster;
use crate::session::{CloseReason, Session};

/// One session, as the API shows it; `ttl` is the session TTL (how long a
/// detached session waits for a resume).
fn session_info(session: &Session, ttl: std::time::Duration) -> SessionInfo {
    let detached = session.detached_since().map(|since| {
        let waited = crate::metrics::millis_now().wrapping_sub(since);
        std::time::Duration::from_millis(u64::from(waited))
    });
    let mut subscriptions: Vec<String> = session
        .subscriptions()
        .iter()
        .map(|t| t.to_string())
        .collect();
    subscriptions.sort_unstable();
    let outbound = session.outbound.status();
    SessionInfo {
        token: session.token.to_string(),
        peer: session.peer.to_string(),
        connected_at: rfc3339(session.connected_at()),
        connected_s: seconds_since(session.connected_at()),
        subscriptions,
        queue_depth: outbound.frames as u64,
        queued_bytes: outbound.charged as u64,
        delivered: outbound.delivered,
        state: if detached.is_some() {
            "detached"
        } else {
            "attached"
        }
        .to_owned(),
        detached_ms: detached.map(millis),
        expires_in_ms: detached.map(|d| millis(ttl.saturating_sub(d))),
        transport: session.transport.as_str().to_owned(),
    }
}

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Query of `GET /sessions`.
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    /// Start after this token (the `next` of the previous page).
    pub after: Option<String>,
    /// Page size (default 100, at most 10,000).
    pub limit: Option<usize>,
}

/// Parses a session token from a path or query.
///
/// # Errors
/// `400 bad_token` for anything but 32 lowercase hex digits.
pub fn parse_token(text: &str) -> Result<Token, ApiError> {
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
        total: registry.len() as u64,
        sessions: page
            .iter()
            .map(|s| session_info(s, state.shared.config.session_ttl))
            .collect(),
        next,
    }))
}

/// `GET /sessions/{token}`.
pub async fn one(
    State(state): State<Arc<AdminState>>,
    Path(token): Path<String>,
) -> Result<Json<SessionInfo>, ApiError> {
    let session = find(&state, &token)?;
    Ok(Json(session_info(
        &session,
        state.shared.config.session_ttl,
    )))
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

/// `POST /sessions/{token}/send` with `{"data", "topic"?, "event"?,
/// "message_id"?}`: one delivery (protocol P6) to this session only.
/// `topic` may be empty (the default): the client subscribed to nothing
/// to receive it.
pub async fn send(
    State(state): State<Arc<AdminState>>,
    Path(token): Path<String>,
    body: Bytes,
) -> Result<Json<Sent>, ApiError> {
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
    validate_data(data)?;
    let frame = encode_delivery(
        Timestamp::now(),
        &body.topic,
        &body.event,
        &body.message_id,
        data,
    );
    let send = |token| NodeCommand::Send {
        token,
        frame: frame.clone(),
    };
    let Some(session) = here_or_routed(&state, &token, send).await? else {
        return Ok(Json(Sent {
            token,
            queue_depth: 0,
        }));
    };
    if !state.shared.send(&session, &frame) {
        return Err(ApiError::new(
            axum::http::StatusCode::CONFLICT,
            "not_queued",
            "the session is closing, or its queue is full",
        ));
    }
    Ok(Json(Sent {
        token: session.token.to_string(),
        queue_depth: session.outbound.status().frames as u64,
    }))
}

/// The session `token` names, if this node holds it. In a cluster, a
/// session held by another node gets `command` through the broker instead
/// (`None`).
async fn here_or_routed(
    state: &AdminState,
    token: &str,
    command: impl FnOnce(Token) -> NodeCommand,
) -> Result<Option<Arc<Session>>, ApiError> {
    match (find(state, token), state.shared.cluster()) {
        (Ok(session), _) => Ok(Some(session)),
        (Err(_), Some(cluster)) => {
            route(cluster, command(parse_token(token)?)).await?;
            Ok(None)
        }
        (Err(e), None) => Err(e),
    }
}

/// Hands a command for a session this node does not hold to the node that
/// holds it, through the broker.
async fn route(cluster: &Cluster, command: NodeCommand) -> Result<(), ApiError> {
    let token = command.token();
    match cluster.broker.route_to_session(command).await {
        Ok(node) => {
            tracing::info!(%token, %node, "session command routed to another node");
            Ok(())
        }
        Err(RouteError::UnknownSession(_)) => Err(ApiError::unknown_session(&token.to_string())),
        Err(RouteError::Unavailable(e)) => Err(e.into()),
    }
}

/// Query of `DELETE /sessions/{token}`.
#[derive(Debug, Deserialize)]
pub struct KickQuery {
    /// The reason sent to the client with `kicked`.
    pub reason: Option<String>,
}

/// `DELETE /sessions/{token}?reason=`: sends `kicked` and disconnects.
pub async fn kick(
    State(state): State<Arc<AdminState>>,
    Path(token): Path<String>,
    Query(query): Query<KickQuery>,
) -> Result<Json<Kicked>, ApiError> {
    let reason = query
        .reason
        .filter(|r| !r.trim().is_empty())
        .unwrap_or_else(|| "disconnected by an operator".to_owned());
    let kick = |token| NodeCommand::Kick {
        token,
        reason: reason.clone(),
    };
    let Some(session) = here_or_routed(&state, &token, kick).await? else {
        return Ok(Json(Kicked { kicked: token }));
    };
    tracing::info!(token = %session.token, peer = %session.peer, %reason, "kicking session");
    state
        .shared
        .close_session(&session, &CloseReason::Kicked(reason));
    Ok(Json(Kicked {
        kicked: session.token.to_string(),
    }))
}
