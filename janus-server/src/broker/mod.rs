//! The Redis backplane that joins several Janus nodes into one cluster
//! (protocol C1), with per-topic offsets and history for resume (X1).
//!
//! A node holds a [`Broker`]. Every publish, local ones included, goes to
//! Redis ([`Broker::publish`]), and every node delivers what comes back on
//! its subscription connection, so all subscribers everywhere see one order
//! per topic. A node subscribes to a topic's channel only while it has
//! local subscribers ([`Broker::subscribe_topic`] /
//! [`Broker::unsubscribe_topic`]); what arrives is handed, in order, to the
//! [`BrokerHandler`] the server provides.
//!
//! # Connections
//!
//! Exactly two per node, whatever the number of topics or clients: one
//! multiplexed connection for commands (publishes are pipelined on it by
//! the client library), one for subscriptions. They are replaced together.
//!
//! # Keys and channels
//!
//! All names start with the configurable prefix, `janus:` by default. A
//! topic's name sits inside `{…}` (a Redis Cluster hash tag), so a topic's
//! keys and channel always share a slot.
//!
//! | name | type | holds |
//! |---|---|---|
//! | `janus:meta:{TOPIC}` | hash | `epoch` (random, names the stream) and `offset` (latest offset) |
//! | `janus:stream:{TOPIC}` | stream | the topic's last `history_size` messages; entry id `OFFSET-0`, field `m` = body |
//! | `janus:topic:{TOPIC}` | channel | live messages: `OFFSET EPOCH body` |
//! | `janus:node:ID` | string, TTL | a node's presence record (JSON [`NodeInfo`]) |
//! | `janus:nodes` | set | ids of nodes that announced themselves (pruned when their record is gone) |
//! | `janus:inbox:ID` | channel | commands for a node's sessions (send a frame, kick) |
//! | `janus:session:TOKEN` | string, TTL | the id of the node holding a session |
//!
//! The body and payload formats are drawn in the `codec` module.
//!
//! # Publishing: one script
//!
//! A publish is one Lua script, atomic in Redis: it creates the topic's
//! epoch if the topic has none (dropping any stray stream), increments the
//! offset (`HINCRBY`), appends the message to the stream trimmed to the
//! history size (`XADD … MAXLEN N OFFSET-0`), extends both keys' TTL to
//! the history TTL, and `PUBLISH`es `OFFSET EPOCH body` on the topic's
//! channel. The offset, the history entry and the live message are one
//! step: all of it happens or none of it does. The script returns the
//! offset and epoch to the publisher.
//!
//! # Receiving: one order, no duplicates
//!
//! Redis runs scripts one at a time and a channel's messages reach a
//! subscriber in publish order, so live messages arrive in offset order.
//! Each node still checks (the `order` module): a message at or below the last
//! offset it delivered is dropped; one past a hole first makes it read the
//! hole from the stream (`XRANGE`), so nothing is delivered out of order.
//! When a topic gains interest, the node subscribes first and reads the
//! topic's offset second (giving the topic its epoch if it has none, so
//! that every node names the same one before the first message), and
//! delivers what follows that offset.
//!
//! # Failures
//!
//! - Redis unreachable at start: [`Broker::connect`] logs an error naming
//!   the URL and returns; the node serves its clients while the link task
//!   retries with exponential backoff (`reconnect_min` doubling to
//!   `reconnect_max`, with jitter). [`Broker::ready`] is false meanwhile.
//! - Redis lost mid-run (a connection closes, a command times out, a ping
//!   goes unanswered): the node is not ready, publishes fail at once with
//!   [`Unavailable`] (nothing half-published), clients stay connected. The
//!   link reconnects, resubscribes every topic of interest, and for each
//!   reads from its stream what followed the last offset it delivered,
//!   delivering it in order before any live message (live duplicates are
//!   dropped by offset). Where the stream no longer reaches back (trimmed
//!   or expired) or its epoch changed (Redis lost its data), the node
//!   reports a [`TopicGap`] for that topic and continues from what exists:
//!   offset clients see the gap and resume; nothing is reordered or
//!   duplicated.
//! - A publish that times out may still have run in Redis; the publisher
//!   gets `unavailable` and cannot know. Redis is trusted: anything that can
//!   write to it can publish.
//!
//! # Presence and sessions
//!
//! Each node writes its [`NodeInfo`] with a TTL every `presence_interval`;
//! [`Broker::nodes`] lists the records that have not expired. Sessions are
//! registered token → node ([`Broker::register_session`]), written in
//! batches and refreshed every third of their TTL, so a dead node's
//! registrations expire. [`Broker::route_to_session`] looks the token up
//! and publishes a [`NodeCommand`] on that node's inbox; a registration
//! whose node no longer listens is removed.

mod backplane;
mod codec;
mod error;
mod inbound;
mod keys;
mod link;
mod options;
mod order;
mod scripts;
mod stats;
mod upkeep;

pub use backplane::{Broker, HistoryRange, NodeInfo, Published, TopicPosition};
pub use codec::NodeCommand;
pub use error::{redact_url, BrokerError, RouteError, Unavailable};
pub use inbound::{BrokerEvent, BrokerHandler, BrokerMessage};
pub use keys::Keys;
pub use options::BrokerOptions;
pub use order::{GapKind, TopicGap};
pub use stats::BrokerStats;
