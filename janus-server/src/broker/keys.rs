//! The names of every Redis key and channel the backplane uses, built from
//! one configurable prefix (default `janus:`). The module docs of
//! [`crate::broker`] list them for operators.
//!
//! A topic's keys put the kind before the topic (`janus:meta:{TOPIC}`), so
//! no topic name can produce another topic's key whatever characters it
//! holds. The topic sits in a Redis Cluster hash tag (`{…}`): the meta hash,
//! the stream and the channel of one topic always hash to the same slot,
//! which the publish script needs if the keys are ever spread over a cluster.

use janus_core::Token;

/// Key and channel names under one prefix.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
    /// `{prefix}topic:{`, the start of every topic channel.
    channel_start: String,
}

impl Keys {
    /// Names under `prefix` (validated by the options: no braces, no
    /// whitespace or control characters).
    pub fn new(prefix: &str) -> Keys {
        Keys {
            prefix: prefix.to_owned(),
            channel_start: format!("{prefix}topic:{{"),
        }
    }

    /// The prefix in force.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The hash holding a topic's `epoch` and latest `offset`.
    pub fn meta(&self, topic: &str) -> String {
        format!("{}meta:{{{topic}}}", self.prefix)
    }

    /// The stream holding a topic's history; entry ids are `OFFSET-0`.
    pub fn stream(&self, topic: &str) -> String {
        format!("{}stream:{{{topic}}}", self.prefix)
    }

    /// The pub/sub channel a topic's messages are published on.
    pub fn channel(&self, topic: &str) -> String {
        format!("{}{topic}}}", self.channel_start)
    }

    /// The topic of a topic channel, or `None` for any other channel.
    pub fn topic_of_channel<'a>(&self, channel: &'a str) -> Option<&'a str> {
        channel
            .strip_prefix(self.channel_start.as_str())?
            .strip_suffix('}')
    }

    /// A node's presence record (JSON, with a TTL).
    pub fn node(&self, node_id: &str) -> String {
        format!("{}node:{node_id}", self.prefix)
    }

    /// The set of node ids that announced themselves (pruned lazily).
    pub fn nodes(&self) -> String {
        format!("{}nodes", self.prefix)
    }

    /// A node's command channel (unicast and kick for its sessions).
    pub fn inbox(&self, node_id: &str) -> String {
        format!("{}inbox:{node_id}", self.prefix)
    }

    /// The key naming the node that holds a session.
    pub fn session(&self, token: Token) -> String {
        format!("{}session:{token}", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_prefixed_and_topics_round_trip_through_channels() {
        let keys = Keys::new("janus:");
        assert_eq!(keys.meta("news"), "janus:meta:{news}");
        assert_eq!(keys.stream("news"), "janus:stream:{news}");
        assert_eq!(keys.channel("news"), "janus:topic:{news}");
        assert_eq!(keys.node("n1"), "janus:node:n1");
        assert_eq!(keys.inbox("n1"), "janus:inbox:n1");
        assert_eq!(keys.nodes(), "janus:nodes");
        assert_eq!(
            keys.session(Token::from_u128(1)),
            "janus:session:00000000000000000000000000000001"
        );
        for topic in ["news", "a:b", "{x}", "}", "a b", "ü"] {
            assert_eq!(
                keys.topic_of_channel(&keys.channel(topic)),
                Some(topic),
                "{topic}"
            );
        }
        assert_eq!(keys.topic_of_channel("janus:inbox:n1"), None);
        assert_eq!(keys.topic_of_channel("other:topic:{x}"), None);
    }

    #[test]
    fn kinds_never_collide_whatever_the_topic() {
        let keys = Keys::new("p:");
        // A topic that looks like another kind's suffix still names its own key.
        assert_ne!(keys.meta("x}:stream:{y"), keys.stream("y"));
        assert_ne!(keys.meta("a"), keys.stream("a"));
    }
}
