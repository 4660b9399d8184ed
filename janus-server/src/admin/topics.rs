//! `GET /topics`, `GET /topics/{topic}` and `GET /topics/{topic}/history`.
//!
//! Both ask the topic manager for a bounded page (top-K or a page after a
//! cursor), which it builds without copying more than the page and without
//! holding a shard lock for more than a chunk of entries; see
//! `janus_core::topic`.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, Uri};
use axum::Json;
use janus_core::api::{
    HistoryMessage, TopicDetail, TopicHistory, TopicList, TopicSort, TopicSubscriber, TopicSummary,
};
use janus_core::topic::TopicQuery;
use janus_core::Token;
use serde::Deserialize;

use super::error::ApiError;
use super::server::AdminState;
use super::sessions::parse_token;

/// Entries returned when no `limit` is given.
pub const DEFAULT_LIMIT: usize = 100;
/// Largest `limit` honoured.
pub const MAX_LIMIT: usize = 10_000;

/// Clamps a requested page size to `1..=MAX_LIMIT`.
pub fn page_size(limit: Option<usize>) -> usize {
    limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT)
}

/// Query of `GET /topics`.
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    /// Only topics whose names start with this.
    #[serde(default)]
    pub prefix: String,
    /// Most topics returned (default 100, at most 10,000).
    pub limit: Option<usize>,
    /// Order: `name`, `published` or `subscribers`.
    #[serde(default)]
    pub sort: TopicSort,
    /// Name order only: start after this topic (the `next` of the previous page).
    pub after: Option<String>,
}

/// `GET /topics?prefix=&limit=&sort=&after=`.
pub async fn list(
    State(state): State<Arc<AdminState>>,
    Query(query): Query<ListQuery>,
) -> Result<Json<TopicList>, ApiError> {
    if query.after.is_some() && query.sort != TopicSort::Name {
        return Err(ApiError::bad_request(
            "bad_query",
            "after= pages through the name order only; the other orders list the top entries",
        ));
    }
    let limit = page_size(query.limit);
    let manager = &state.shared.topics;
    let page = manager.topics(&TopicQuery {
        prefix: &query.prefix,
        order: query.sort,
        after: query.after.as_deref(),
        limit,
    });
    let next = match query.sort {
        TopicSort::Name if page.truncated => page.topics.last().map(|t| t.name.clone()),
        _ => None,
    };
    Ok(Json(TopicList {
        total: manager.topic_count() as u64,
        truncated: page.truncated,
        topics: page
            .topics
            .into_iter()
            .map(|t| TopicSummary {
                name: t.name,
                subscribers: t.subscribers as u64,
                published: t.published,
            })
            .collect(),
        next,
    }))
}

/// Query of `GET /topics/{topic}` and `GET /topics/{topic}/history`.
#[derive(Debug, Deserialize)]
pub struct OneQuery {
    /// Most subscribers (or history messages) listed (default 100, at most 10,000).
    pub limit: Option<usize>,
    /// Start after this session token (the `next` of the previous page).
    pub after: Option<String>,
    /// History only: list the messages after this offset (default: from the oldest held).
    pub since: Option<u64>,
}

/// The suffix that asks for a topic's history rather than its subscribers.
const HISTORY: &str = "/history";

/// `GET /topics/{topic}?limit=&after=`: one topic and a page of its
/// subscribers in token order; `GET /topics/{topic}/history?since=&limit=`:
/// its stream and a page of its history. The topic name is percent-decoded
/// and may contain `/`; a literal (unencoded) `/history` at the end of the
/// path asks for the history, so a topic whose name ends in `/history`
/// is reached with its `/` encoded as `%2F`.
pub async fn one(
    State(state): State<Arc<AdminState>>,
    Path(topic): Path<String>,
    uri: Uri,
    Query(query): Query<OneQuery>,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    match topic.strip_suffix(HISTORY) {
        Some(name) if uri.path().ends_with(HISTORY) => {
            Ok(history(&state, name, &query)?.into_response())
        }
        _ => Ok(subscribers(&state, &topic, &query)?.into_response()),
    }
}

/// A topic's stream and up to `limit` messages of its history after `since`.
fn history(
    state: &AdminState,
    topic: &str,
    query: &OneQuery,
) -> Result<Json<TopicHistory>, ApiError> {
    let limit = page_size(query.limit);
    let mut locked = state.shared.topics.lock_topics(&[topic]);
    let Some(stream) = locked.state(topic) else {
        return Err(unknown_topic(topic));
    };
    let (count, bytes) = stream.held();
    let (first, last) = (stream.first(), stream.last());
    let epoch = stream.epoch_name().map(str::to_owned);
    let mut page = stream.page(query.since.unwrap_or(0), limit + 1);
    drop(locked);
    let next = if page.len() > limit {
        page.truncate(limit);
        page.last().map(|(offset, _)| *offset)
    } else {
        None
    };
    let messages = page
        .into_iter()
        .filter_map(|(offset, frame)| {
            let json = frame.strip_suffix(b"\x01").unwrap_or(&frame);
            let text = String::from_utf8(json.to_vec()).ok()?;
            let delivery = serde_json::value::RawValue::from_string(text).ok()?;
            Some(HistoryMessage { offset, delivery })
        })
        .collect();
    Ok(Json(TopicHistory {
        name: topic.to_owned(),
        epoch,
        first,
        last,
        count: count as u64,
        bytes: bytes as u64,
        messages,
        next,
    }))
}

fn unknown_topic(topic: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "unknown_topic",
        format!("no topic {topic:?} (a topic exists while it has subscribers or history)"),
    )
}

/// One topic and a page of its subscribers.
fn subscribers(
    state: &AdminState,
    topic: &str,
    query: &OneQuery,
) -> Result<Json<TopicDetail>, ApiError> {
    let limit = page_size(query.limit);
    let after: Option<Token> = query.after.as_deref().map(parse_token).transpose()?;
    let Some(page) = state
        .shared
        .topics
        .subscribers(topic, |h| h.0.token, after.as_ref(), limit)
    else {
        return Err(unknown_topic(topic));
    };
    let next = page
        .truncated
        .then(|| page.subscribers.last().map(|h| h.0.token.to_string()))
        .flatten();
    Ok(Json(TopicDetail {
        name: page.info.name,
        subscribers: page.info.subscribers as u64,
        published: page.info.published,
        truncated: page.truncated,
        sessions: page
            .subscribers
            .iter()
            .map(|h| TopicSubscriber {
                token: h.0.token.to_string(),
                peer: h.0.peer.to_string(),
                queue_depth: h.0.outbound.status().frames as u64,
            })
            .collect(),
        next,
    }))
}
