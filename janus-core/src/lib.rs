//! The Janus wire protocol and topic fan-out, without any I/O.
//!
//! Janus is a messaging server that writes each published message, over each
//! subscriber's own TCP connection, to every subscriber of a topic. This crate
//! holds everything about that which can be decided by looking at bytes and
//! data structures alone, so every rule can be tested by handing it bytes:
//!
//! - [`codec`]: the two framings of protocol P1 as `tokio_util::codec`
//!   decoders and encoders — [`codec::ServerCodec`] is what a server uses
//!   (decodes NUL-terminated client frames, encodes SOH-terminated ones) and
//!   [`codec::ClientCodec`] is what a client or load bot uses.
//! - [`message`]: typed client messages ([`message::ClientMessage`]), typed
//!   server messages ([`message::ServerMessage`]) and the one-time delivery
//!   encoding ([`message::encode_delivery`]).
//! - [`token`]: the 128-bit session tokens of P2.
//! - [`time`]: the Erlang-style `[MEGA, SEC, MICRO]` timestamp.
//! - [`topic`]: topic validation (P3) and the [`topic::TopicManager`], which
//!   maps topics to subscribers and hands every subscriber of a publish the
//!   same shared, already-encoded bytes.
//! - [`api`]: the admin HTTP API's JSON bodies, one definition shared by the
//!   server and `janus-admin`.
//! - [`ws`]: the WebSocket form of the protocol (X2): the opening handshake
//!   and frames, on top of `tungstenite`'s RFC 6455 pieces.
//!
//! What deliberately does not live here: sockets, task spawning, timers,
//! logging setup and configuration. Those are I/O policy and belong to
//! `janus-server` (or to the bot).

pub mod api;
#[cfg(feature = "cli")]
pub mod cli;
pub mod codec;
pub mod message;
pub mod net;
pub mod time;
pub mod token;
pub mod topic;
pub mod ws;

pub use codec::{ClientCodec, CodecError, ServerCodec};
pub use message::{
    ClientMessage, ErrorCode, ProtocolError, Publish, Resume, ServerMessage, TopicPosition,
};
pub use time::Timestamp;
pub use token::Token;
pub use topic::{validate_topic, TopicManager};

/// Terminator of every frame a client sends (protocol P1).
pub const CLIENT_TERMINATOR: u8 = 0x00;
/// Terminator of every frame the server sends (protocol P1).
pub const SERVER_TERMINATOR: u8 = 0x01;
/// The Flash socket marker clients send; the server ignores it wherever it appears.
pub const REGULAR_SOCKET_MARKER: &[u8] = b"<regular-socket/>";
/// Default maximum frame length (protocol P1).
pub const DEFAULT_MAX_FRAME: usize = 64 * 1024;
