//! Cluster mode: the server on the Redis backplane ([`crate::broker`]).
//!
//! With `--broker redis://…`, every publish (local ones included) goes to
//! Redis, and this node delivers to its own subscribers what comes back on
//! its subscription connection ([`Handler::message`]), through the same
//! fan-out as a single node's publishes: one encoding per form, the same
//! queues and writer threads. The offset (X1) is the one Redis assigned,
//! the same on every node.
//!
//! Interest: the node subscribes to a topic's channel when the topic gets
//! its first local subscriber and unsubscribes when the last one leaves.
//! Both requests are made under the topic's lock, so they reach the broker
//! in the order the topic's subscriber list changed. A subscriber that
//! arrives before the broker confirmed the channel waits for its `ACK` (or
//! X1 `subscribed` answer) until the confirmation — or the topic's first
//! message, whichever comes first — so that, as on a single node, a message
//! published after the client read its `ACK` certainly reaches it.
//!
//! Resume (X1) on any node: a node keeps the history of the topics it
//! follows, from the moment it began to follow them. A client that resumes
//! here from a position this node's history does not reach back to (the
//! node did not follow the topic, or only since later) first pins those
//! topics ([`Cluster::prepare_resume`]): the node follows them without a
//! subscriber, waits for the broker's confirmation, reads what lies between
//! the client's position and its own history from the broker's stream and
//! puts it in front ([`Stream::backfill`]). The resume then runs as on a
//! single node, under the topics' locks, and the pins are let go.

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use janus_core::topic::SubscriberId;
use janus_core::{Publish, Timestamp};
use tokio::sync::oneshot;

use crate::broker::{
    Broker, BrokerHandler, BrokerMessage, GapKind, NodeCommand, Published, TopicGap, TopicPosition,
    Unavailable,
};
use crate::history::Stream;
use crate::session::{CloseReason, Session, SessionHandle};
use crate::Shared;

/// This node's membership of a cluster: its broker.
pub struct Cluster {
    /// The backplane.
    pub broker: Broker,
    /// Names each interest in a topic, so that a late confirmation of an
    /// interest that has since ended is not taken for a newer one.
    generation: AtomicU64,
    /// The server, for confirmations that arrive later.
    shared: Weak<Shared>,
}

impl fmt::Debug for Cluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cluster")
            .field("broker", &self.broker)
            .finish_non_exhaustive()
    }
}

/// A session waiting for the broker to confirm a topic's channel.
#[derive(Debug)]
struct Waiting {
    session: Arc<Session>,
    /// Whether it gets an answer (`ACK` or X1 `subscribed`) then; a resume
    /// answered already.
    answer: bool,
}

/// This node's interest in one topic's broker channel (kept in the topic's
/// [`Stream`], under the topic's lock).
pub struct Interest {
    cluster: Arc<Cluster>,
    generation: u64,
    /// Sessions waiting for the confirmation; `None` once confirmed.
    waiting: Option<Vec<Waiting>>,
    /// Resumes being prepared that wait for the confirmation.
    pinned: Vec<oneshot::Sender<()>>,
}

impl fmt::Debug for Interest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Interest")
            .field("generation", &self.generation)
            .field("waiting", &self.waiting.as_ref().map(Vec::len))
            .finish()
    }
}

impl Interest {
    /// The topic's last local subscriber (or pin) left: unsubscribe its
    /// channel. Returns the server, unless it is going away.
    pub(crate) fn end(self, topic: &str) -> Option<Arc<Shared>> {
        self.cluster.broker.unsubscribe_topic(topic);
        self.cluster.shared.upgrade()
    }

    /// Whether the broker confirmed the channel (or its first message came).
    pub(crate) fn confirmed(&self) -> bool {
        self.waiting.is_none()
    }
}

/// How long a resume may wait for the broker while it is prepared; past
/// it, the resume goes on with what this node has (and answers
/// `recovered: false` if that is not everything).
const PREPARE_TIMEOUT: Duration = Duration::from_secs(5);

/// Topics a resume being prepared keeps followed on this node, until it
/// has subscribed to them (or is given up): let go when dropped.
pub(crate) struct Pins {
    shared: Arc<Shared>,
    topics: Vec<String>,
}

impl fmt::Debug for Pins {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pins")
            .field("topics", &self.topics)
            .finish()
    }
}

impl Drop for Pins {
    fn drop(&mut self) {
        for topic in &self.topics {
            self.shared.topics.with_topic(topic, |subscribers, stream| {
                stream.pins = stream.pins.saturating_sub(1);
                if stream.pins == 0 && subscribers.is_empty() {
                    stream.unfollow(topic);
                }
            });
        }
    }
}

impl Cluster {
    /// Connects to the broker of `shared.config` (which must name one).
    ///
    /// # Errors
    /// A message for an invalid URL, node id or option; never for a Redis
    /// that is unreachable (the node then serves, not ready, and retries).
    pub async fn connect(shared: &Arc<Shared>, url: &str) -> Result<Arc<Cluster>, String> {
        let config = &shared.config;
        let options = crate::broker::BrokerOptions {
            history_size: config.history_size.max(1),
            history_ttl: Some(config.history_ttl),
            admin_addr: shared.admin_addr(),
            ..crate::broker::BrokerOptions::default()
        };
        let handler = Arc::new(Handler {
            shared: Arc::downgrade(shared),
        });
        let broker = Broker::connect(url, &config.node_id, options, handler)
            .await
            .map_err(|e| e.to_string())?;
        Ok(Arc::new(Cluster {
            broker,
            generation: AtomicU64::new(0),
            shared: Arc::downgrade(shared),
        }))
    }

    /// Publishes through the broker; every node with subscribers of the
    /// topic (this one included) delivers it from there.
    ///
    /// # Errors
    /// [`Unavailable`]: nothing was published (P7 `unavailable`).
    pub async fn publish(&self, publish: &Publish) -> Result<Published, Unavailable> {
        self.broker.publish(publish, Timestamp::now()).await
    }

    /// A session joins `topic` (under the topic's lock, with its `stream`).
    /// Returns whether the topic's channel is confirmed, so the caller
    /// answers now; otherwise the session's answer (if `answer`) is queued
    /// once the broker confirms.
    pub(crate) fn join(
        self: &Arc<Self>,
        stream: &mut Stream,
        topic: &str,
        session: &Arc<Session>,
        answer: bool,
    ) -> bool {
        match &mut self.interest(stream, topic).waiting {
            None => true,
            Some(waiting) => {
                waiting.push(Waiting {
                    session: session.clone(),
                    answer,
                });
                false
            }
        }
    }

    /// This node's interest in `topic` (kept in its `stream`), declared to
    /// the broker now if it had none.
    fn interest<'s>(self: &Arc<Self>, stream: &'s mut Stream, topic: &str) -> &'s mut Interest {
        stream.interest.get_or_insert_with(|| {
            let generation = self.generation.fetch_add(1, Ordering::Relaxed);
            let confirmed = self.broker.subscribe_topic(topic);
            let cluster = self.clone();
            let topic = topic.to_owned();
            tokio::spawn(async move {
                let position = confirmed.await;
                cluster.confirmed(&topic, generation, position);
            });
            Interest {
                cluster: self.clone(),
                generation,
                waiting: Some(Vec::new()),
                pinned: Vec::new(),
            }
        })
    }

    /// Before a positional resume on this node: pins each topic whose
    /// history here does not reach back to the client's position, so the
    /// node follows it; once the broker has confirmed them, reads what
    /// this node's history lacks from the broker's stream and puts it in
    /// front. `None` when every topic can be served from here at once.
    /// The resume must run before the returned pins are dropped.
    pub(crate) fn prepare_resume(
        self: &Arc<Self>,
        shared: &Arc<Shared>,
        positions: &[janus_core::TopicPosition],
    ) -> Option<impl Future<Output = Pins> + Send + 'static> {
        let mut pins = Pins {
            shared: shared.clone(),
            topics: Vec::new(),
        };
        let mut confirmations = Vec::new();
        let mut wanted = Vec::new();
        for position in positions {
            if pins.topics.contains(&position.topic) {
                continue;
            }
            let pinned = shared
                .topics
                .with_topic_created(&position.topic, |_, stream| {
                    let here = stream.followed()
                        && (stream.epoch_name() != Some(position.epoch.as_str())
                            || position.offset.saturating_add(1) >= stream.first());
                    if here {
                        // Served from here, or not recoverable anywhere.
                        return None;
                    }
                    stream.pins += 1;
                    let interest = self.interest(stream, &position.topic);
                    let (confirmed, wait) = oneshot::channel();
                    if interest.confirmed() {
                        let _ = confirmed.send(());
                    } else {
                        interest.pinned.push(confirmed);
                    }
                    Some(wait)
                });
            // A topic the topic limit refuses is refused by the resume too.
            if let Ok(Some(wait)) = pinned {
                pins.topics.push(position.topic.clone());
                confirmations.push(wait);
                wanted.push(position.clone());
            }
        }
        if pins.topics.is_empty() {
            return None;
        }
        let cluster = self.clone();
        Some(async move {
            let work = async {
                for wait in confirmations {
                    // A dropped sender: the interest ended; the resume will see it.
                    let _ = wait.await;
                }
                for position in &wanted {
                    cluster.backfill(&pins.shared, position).await;
                }
            };
            if tokio::time::timeout(PREPARE_TIMEOUT, work).await.is_err() {
                tracing::debug!(topics = ?pins.topics, "resume: the broker was too slow; going on without it");
            }
            pins
        })
    }

    /// Reads from the broker the messages of `position`'s topic between the
    /// client's offset and the oldest this node keeps, and puts them in
    /// front of its history (see [`Stream::backfill`]).
    async fn backfill(&self, shared: &Shared, position: &janus_core::TopicPosition) {
        let topic = position.topic.as_str();
        let epoch = position.epoch.as_str();
        let lacking = shared
            .topics
            .with_topic(topic, |_, stream| {
                (stream.followed() && stream.epoch_name() == Some(epoch)).then(|| {
                    stream
                        .first()
                        .saturating_sub(position.offset.saturating_add(1))
                })
            })
            .flatten()
            .unwrap_or(0);
        if lacking == 0 || lacking > shared.history.size as u64 {
            return;
        }
        let range = match self
            .broker
            .history(topic, position.offset, lacking as usize)
            .await
        {
            Ok(range) if range.complete && range.epoch.as_deref() == Some(epoch) => range,
            Ok(_) => return,
            Err(e) => {
                tracing::debug!(%topic, reason = %e.reason, "resume: the broker's history could not be read");
                return;
            }
        };
        let (now_secs, now_micros) = (crate::metrics::secs_now(), Timestamp::now().unix_micros());
        let older: Vec<(u64, u32, Bytes)> = range
            .messages
            .iter()
            .map(|m| {
                let age = now_micros.saturating_sub(m.timestamp.unix_micros()) / 1_000_000;
                let age = u32::try_from(age).unwrap_or(u32::MAX);
                (
                    m.offset,
                    now_secs.saturating_sub(age),
                    m.encode_with_offset(),
                )
            })
            .collect();
        shared.topics.with_topic(topic, |_, stream| {
            stream.backfill(epoch, position.offset, older, &shared.history)
        });
    }

    /// The broker confirmed (or could not yet make) the subscription of
    /// interest `generation` in `topic`.
    fn confirmed(
        &self,
        topic: &str,
        generation: u64,
        position: Result<TopicPosition, Unavailable>,
    ) {
        let Some(shared) = self.shared.upgrade() else {
            return;
        };
        let position = position.unwrap_or_else(|e| {
            // The interest is recorded and takes effect when Redis is back;
            // meanwhile nothing can be published, so nothing is missed.
            tracing::debug!(%topic, reason = %e.reason, "subscribed while the broker is unavailable");
            TopicPosition::default()
        });
        shared.topics.with_topic(topic, |subscribers, stream| {
            // A confirmation that comes after the topic's first message
            // (which confirmed the interest already) must not take the
            // stream back to where it stood when the request was made.
            if stream
                .interest
                .as_ref()
                .is_some_and(|i| i.generation == generation && !i.confirmed())
            {
                stream.start_at(position.epoch.as_deref(), position.offset, &shared.history);
                answer_waiting(&shared, topic, subscribers, stream);
            }
        });
    }
}

/// Confirms the topic's interest: every session still waiting (and still
/// subscribed) gets its answer, in the order they subscribed.
fn answer_waiting(
    shared: &Shared,
    topic: &str,
    subscribers: &[(SubscriberId, SessionHandle)],
    stream: &mut Stream,
) {
    let Some(interest) = stream.interest.as_mut() else {
        return;
    };
    for pinned in interest.pinned.drain(..) {
        let _ = pinned.send(());
    }
    let Some(waiting) = interest.waiting.take() else {
        return;
    };
    let answering: Vec<&Waiting> = waiting.iter().filter(|w| w.answer).collect();
    if answering.is_empty() {
        return;
    }
    let subscribed: std::collections::HashSet<SubscriberId> =
        subscribers.iter().map(|(id, _)| *id).collect();
    for w in answering {
        if subscribed.contains(&w.session.id) {
            let frame = crate::fanout::subscribe_answer(&w.session, topic, stream);
            let push = w.session.outbound.push_control(frame);
            shared.after_push(&w.session, push);
        }
    }
}

/// Receives what the broker hands over, on the backplane's task.
struct Handler {
    shared: Weak<Shared>,
}

impl BrokerHandler for Handler {
    fn message(&self, message: BrokerMessage) {
        if let Some(shared) = self.shared.upgrade() {
            crate::fanout::deliver_message(&shared, &message, |subscribers, stream| {
                // The topic's first message came before the confirmation:
                // the subscription is live, and stood just before it.
                if stream
                    .interest
                    .as_ref()
                    .is_some_and(|i| i.waiting.is_some())
                {
                    let before = message.offset.saturating_sub(1);
                    stream.start_at(Some(&message.epoch), before, &shared.history);
                    answer_waiting(&shared, &message.topic, subscribers, stream);
                }
            });
        }
    }

    fn gap(&self, gap: TopicGap) {
        // The next message's offset shows the hole (the topic's history
        // here restarts from it); offset clients see it and resume.
        match &gap.kind {
            GapKind::Missed { from, to, .. } => {
                tracing::warn!(topic = %gap.topic, from, to, "messages lost while the broker was away")
            }
            GapKind::EpochChanged { last, .. } => {
                tracing::warn!(topic = %gap.topic, last, "the topic's stream was replaced in the broker")
            }
        }
    }

    fn command(&self, command: NodeCommand) {
        let Some(shared) = self.shared.upgrade() else {
            return;
        };
        let Some(session) = shared.sessions.get(&command.token()) else {
            return;
        };
        match command {
            NodeCommand::Send { frame, .. } => {
                shared.send(&session, &frame);
            }
            NodeCommand::Kick { reason, .. } => {
                tracing::info!(token = %session.token, peer = %session.peer, %reason, "kicking session (from another node)");
                shared.close_session(&session, &CloseReason::Kicked(reason));
            }
            NodeCommand::Retire { .. } => {
                // Only a session still waiting for its client: one that a
                // connection here has taken back since is that client's now.
                if session.detached_since().is_some() {
                    tracing::debug!(token = %session.token, "detached session ends: its client resumed on another node");
                    shared
                        .stats
                        .sessions_resumed_elsewhere
                        .fetch_add(1, Ordering::Relaxed);
                    shared.forget(&session);
                }
            }
        }
    }

    fn link(&self, connected: bool) {
        if connected {
            tracing::info!("broker link up: resubscribed and caught up");
        } else {
            tracing::warn!("broker link down: publishes are unavailable until it is back");
        }
    }
}
