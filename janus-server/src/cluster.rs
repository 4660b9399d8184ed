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

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use janus_core::topic::SubscriberId;
use janus_core::{Publish, Timestamp};

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
    /// The topic's last local subscriber left: unsubscribe its channel.
    pub(crate) fn end(self, topic: &str) {
        self.cluster.broker.unsubscribe_topic(topic);
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
        let interest = stream.interest.get_or_insert_with(|| {
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
            }
        });
        match &mut interest.waiting {
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
            if stream
                .interest
                .as_ref()
                .is_some_and(|i| i.generation == generation)
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
    let Some(waiting) = stream.interest.as_mut().and_then(|i| i.waiting.take()) else {
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
