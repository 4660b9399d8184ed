//! `GET /topics` and `GET /topics/{topic}`.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use janus_core::topic::TopicInfo;
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::server::AdminState;

/// Entries returned when no `limit` is given.
pub const DEFAULT_LIMIT: usize = 100;
/// Largest `limit` honoured.
pub const MAX_LIMIT: usize = 10_000;

/// Clamps a requested page size to `1..=MAX_LIMIT`.
pub fn page_size(limit: Option<usize>) -> usize {
    limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT)
}

/// How `GET /topics` orders its answer.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Sort {
    /// By name (the default).
    #[default]
    Name,
    /// Most messages published first.
    Published,
    /// Most subscribers first.
    Subscribers,
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
    pub sort: Sort,
}

/// One topic in a listing.
#[derive(Debug, Serialize)]
pub struct TopicSummary {
    /// Topic name.
    pub name: String,
    /// Subscribers now.
    pub subscribers: usize,
    /// Messages published to it since it was created.
    pub published: u64,
}

impl From<TopicInfo> for TopicSummary {
    fn from(t: TopicInfo) -> Self {
        Self {
            name: t.name,
            subscribers: t.subscribers,
            published: t.published,
        }
    }
}

/// The body of `GET /topics`.
#[derive(Debug, Serialize)]
pub struct TopicList {
    /// Live topics on the server (all of them, not only the listed ones).
    pub total: usize,
    /// Whether more topics matched than were returned.
    pub truncated: bool,
    /// The topics.
    pub topics: Vec<TopicSummary>,
}

/// `GET /topics?prefix=&limit=&sort=`.
pub async fn list(
    State(state): State<Arc<AdminState>>,
    Query(query): Query<ListQuery>,
) -> Json<TopicList> {
    let limit = page_size(query.limit);
    let manager = &state.shared.topics;
    let mut topics = match query.sort {
        Sort::Name => manager.topics(&query.prefix, limit + 1),
        Sort::Published | Sort::Subscribers => {
            let mut all = manager.topics(&query.prefix, usize::MAX);
            if query.sort == Sort::Published {
                all.sort_by(|a, b| b.published.cmp(&a.published).then(a.name.cmp(&b.name)));
            } else {
                all.sort_by(|a, b| b.subscribers.cmp(&a.subscribers).then(a.name.cmp(&b.name)));
            }
            all
        }
    };
    let truncated = topics.len() > limit;
    topics.truncate(limit);
    Json(TopicList {
        total: manager.topic_count(),
        truncated,
        topics: topics.into_iter().map(TopicSummary::from).collect(),
    })
}

/// Query of `GET /topics/{topic}`.
#[derive(Debug, Deserialize)]
pub struct OneQuery {
    /// Most subscribers listed (default 100, at most 10,000).
    pub limit: Option<usize>,
}

/// One subscriber of a topic.
#[derive(Debug, Serialize)]
pub struct Subscriber {
    /// Its session token.
    pub token: String,
    /// Its address.
    pub peer: String,
    /// Deliveries queued for it and not yet written.
    pub queue_depth: usize,
}

/// The body of `GET /topics/{topic}`.
#[derive(Debug, Serialize)]
pub struct TopicDetail {
    /// Topic name.
    pub name: String,
    /// Subscribers now (all of them).
    pub subscribers: usize,
    /// Messages published to it since it was created.
    pub published: u64,
    /// Whether `sessions` lists fewer than `subscribers`.
    pub truncated: bool,
    /// Up to `limit` subscribers, ordered by token.
    pub sessions: Vec<Subscriber>,
}

/// `GET /topics/{topic}?limit=`: one topic and its subscribers. The topic
/// name is percent-decoded and may contain `/`.
pub async fn one(
    State(state): State<Arc<AdminState>>,
    Path(topic): Path<String>,
    Query(query): Query<OneQuery>,
) -> Result<Json<TopicDetail>, ApiError> {
    let limit = page_size(query.limit);
    let Some((info, subscribers)) = state.shared.topics.topic(&topic) else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_topic",
            format!("no topic {topic:?} (a topic exists while it has subscribers)"),
        ));
    };
    let mut sessions: Vec<_> = subscribers.into_iter().map(|(_, h)| h.0).collect();
    sessions.sort_unstable_by_key(|s| s.token);
    let truncated = sessions.len() > limit;
    sessions.truncate(limit);
    Ok(Json(TopicDetail {
        name: info.name,
        subscribers: info.subscribers,
        published: info.published,
        truncated,
        sessions: sessions
            .iter()
            .map(|s| Subscriber {
                token: s.token.to_string(),
                peer: s.peer.to_string(),
                queue_depth: s.outbound.status().frames,
            })
            .collect(),
    }))
}
