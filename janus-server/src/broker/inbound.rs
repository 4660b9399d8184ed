//! What the backplane hands to the server: topic messages in order, gaps,
//! commands for local sessions and link changes, through a
//! [`BrokerHandler`] the server provides (or a channel of [`BrokerEvent`]s).

use janus_core::Timestamp;
use tokio::sync::mpsc::UnboundedSender;

use super::codec::{Body, NodeCommand};
use super::order::TopicGap;

/// One message of a topic this node has interest in, as every node
/// receives it: same offset, same epoch, same order everywhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerMessage {
    /// The topic.
    pub topic: String,
    /// Its position in the topic (1, 2, 3, … per epoch).
    pub offset: u64,
    /// The topic stream's epoch.
    pub epoch: String,
    /// When the publishing node accepted the publish (protocol P6).
    pub timestamp: Timestamp,
    /// The event name.
    pub event: String,
    /// The message id.
    pub message_id: String,
    /// The JSON text of `data`, as the publishing node validated it.
    pub data: String,
}

impl BrokerMessage {
    /// A message from its decoded body.
    pub(crate) fn new(topic: &str, offset: u64, epoch: &str, body: &Body<'_>) -> BrokerMessage {
        BrokerMessage {
            topic: topic.to_owned(),
            offset,
            epoch: epoch.to_owned(),
            timestamp: body.timestamp,
            event: body.event.to_owned(),
            message_id: body.message_id.to_owned(),
            data: body.data.to_owned(),
        }
    }

    /// The delivery frame of this message with its X1 offset, as an offset
    /// client receives it and a history keeps it.
    pub fn encode_with_offset(&self) -> bytes::Bytes {
        janus_core::message::encode_delivery_at(
            self.timestamp,
            &self.topic,
            &self.event,
            &self.message_id,
            &self.data,
            Some(self.offset),
        )
    }
}

/// Receives what comes from Redis. Every method is called on the
/// backplane's own task, one call at a time, in order; none may block (the
/// fan-out only queues, which is fine). For one topic, messages and gaps
/// come in offset order, each message once.
pub trait BrokerHandler: Send + Sync + 'static {
    /// A message of a topic this node subscribed to.
    fn message(&self, message: BrokerMessage);
    /// Part of a topic could not be recovered for this node.
    fn gap(&self, gap: TopicGap);
    /// A command for a session this node holds (unicast or kick).
    fn command(&self, command: NodeCommand);
    /// The link came up (resubscribed and caught up) or went down.
    fn link(&self, connected: bool) {
        let _ = connected;
    }
}

/// Everything a [`BrokerHandler`] receives, as one value for channels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BrokerEvent {
    /// See [`BrokerHandler::message`].
    Message(BrokerMessage),
    /// See [`BrokerHandler::gap`].
    Gap(TopicGap),
    /// See [`BrokerHandler::command`].
    Command(NodeCommand),
    /// See [`BrokerHandler::link`].
    Link(bool),
}

/// A channel as a handler: every call becomes one [`BrokerEvent`], in order.
/// A closed receiver simply drops them.
impl BrokerHandler for UnboundedSender<BrokerEvent> {
    fn message(&self, message: BrokerMessage) {
        let _ = self.send(BrokerEvent::Message(message));
    }

    fn gap(&self, gap: TopicGap) {
        let _ = self.send(BrokerEvent::Gap(gap));
    }

    fn command(&self, command: NodeCommand) {
        let _ = self.send(BrokerEvent::Command(command));
    }

    fn link(&self, connected: bool) {
        let _ = self.send(BrokerEvent::Link(connected));
    }
}
