//! The bytes the backplane stores and publishes: a message body, the live
//! payload the publish script builds around it, and node commands.
//!
//! ```text
//! body (stored in the stream entry's field `m`, built by the publishing node):
//!     1 SP TS_MICROS SP EVENT_LEN SP MESSAGE_ID_LEN LF EVENT MESSAGE_ID DATA
//! live payload (published on the topic channel, built by the script):
//!     OFFSET SP EPOCH SP body
//! node command (published on a node's inbox channel):
//!     "S" SP TOKEN SP FRAME      one server frame, terminator included, for that session
//!     "K" SP TOKEN SP REASON     kick that session with this reason
//! ```
//!
//! Numbers are ASCII decimal; `1` is the body format's version. `DATA` is the
//! publish's JSON text, unparsed: the publishing node validated it, and a
//! receiving node only slices the payload (no JSON parsing), then encodes
//! the delivery once for all of its subscribers. Redis is trusted: anything
//! that can write to it can publish.

use bytes::Bytes;
use janus_core::{Timestamp, Token};

/// The body format version this code writes and reads.
const BODY_VERSION: &[u8] = b"1";

/// Why bytes from Redis could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed backplane payload: {0}")]
pub struct DecodeError(&'static str);

/// A decoded message body, borrowing from the bytes it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Body<'a> {
    /// When the publishing node accepted the publish.
    pub timestamp: Timestamp,
    /// The event name.
    pub event: &'a str,
    /// The message id.
    pub message_id: &'a str,
    /// The JSON text of `data`.
    pub data: &'a str,
}

/// Encodes the body of a publish.
pub fn encode_body(timestamp: Timestamp, event: &str, message_id: &str, data: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(48 + event.len() + message_id.len() + data.len());
    out.extend_from_slice(BODY_VERSION);
    out.push(b' ');
    out.extend_from_slice(timestamp.unix_micros().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(event.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(message_id.len().to_string().as_bytes());
    out.push(b'\n');
    out.extend_from_slice(event.as_bytes());
    out.extend_from_slice(message_id.as_bytes());
    out.extend_from_slice(data.as_bytes());
    out
}

/// Reads `bytes` up to `end`, returning the field and the rest.
fn field(bytes: &[u8], end: u8) -> Result<(&[u8], &[u8]), DecodeError> {
    let at = bytes
        .iter()
        .position(|b| *b == end)
        .ok_or(DecodeError("truncated header"))?;
    Ok((&bytes[..at], &bytes[at + 1..]))
}

/// An ASCII decimal number (no sign, no leading `+`).
fn number(digits: &[u8]) -> Result<u64, DecodeError> {
    if digits.is_empty() || digits.len() > 20 || !digits.iter().all(u8::is_ascii_digit) {
        return Err(DecodeError("bad number"));
    }
    digits.iter().try_fold(0u64, |n, d| {
        n.checked_mul(10)
            .and_then(|n| n.checked_add(u64::from(d - b'0')))
            .ok_or(DecodeError("number out of range"))
    })
}

fn text(bytes: &[u8]) -> Result<&str, DecodeError> {
    std::str::from_utf8(bytes).map_err(|_| DecodeError("not UTF-8"))
}

/// Splits `len` bytes off the front of `bytes`.
fn take(bytes: &[u8], len: u64) -> Result<(&[u8], &[u8]), DecodeError> {
    let len = usize::try_from(len).map_err(|_| DecodeError("length out of range"))?;
    if len > bytes.len() {
        return Err(DecodeError("truncated body"));
    }
    Ok(bytes.split_at(len))
}

/// Decodes a body.
///
/// # Errors
/// When the bytes are not a body of this format version.
pub fn decode_body(bytes: &[u8]) -> Result<Body<'_>, DecodeError> {
    let (version, rest) = field(bytes, b' ')?;
    if version != BODY_VERSION {
        return Err(DecodeError("unknown body version"));
    }
    let (micros, rest) = field(rest, b' ')?;
    let (event_len, rest) = field(rest, b' ')?;
    let (id_len, rest) = field(rest, b'\n')?;
    let (event, rest) = take(rest, number(event_len)?)?;
    let (message_id, data) = take(rest, number(id_len)?)?;
    Ok(Body {
        timestamp: Timestamp::from_unix_micros(number(micros)?),
        event: text(event)?,
        message_id: text(message_id)?,
        data: text(data)?,
    })
}

/// A decoded live payload: the topic's offset and epoch, then the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Live<'a> {
    /// The message's offset in its topic.
    pub offset: u64,
    /// The topic stream's epoch.
    pub epoch: &'a str,
    /// The message.
    pub body: Body<'a>,
}

/// Decodes a live payload.
///
/// # Errors
/// When the bytes are not a live payload.
pub fn decode_live(bytes: &[u8]) -> Result<Live<'_>, DecodeError> {
    let (offset, rest) = field(bytes, b' ')?;
    let (epoch, rest) = field(rest, b' ')?;
    if epoch.is_empty() {
        return Err(DecodeError("empty epoch"));
    }
    Ok(Live {
        offset: number(offset)?,
        epoch: text(epoch)?,
        body: decode_body(rest)?,
    })
}

/// A command for a session held by one node, sent through its inbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeCommand {
    /// Queue `frame` (one complete server frame, terminator included) for
    /// the session, as `POST /sessions/{token}/send` does locally.
    Send {
        /// The session.
        token: Token,
        /// The frame to queue.
        frame: Bytes,
    },
    /// Disconnect the session with `kicked` and this reason.
    Kick {
        /// The session.
        token: Token,
        /// The reason given to the client.
        reason: String,
    },
    /// The session's client resumed on the sending node: end the session
    /// here if it is still detached (waiting for a resume that has come
    /// elsewhere), so it stops queueing for nobody.
    Retire {
        /// The session.
        token: Token,
    },
}

impl NodeCommand {
    /// The session the command is for.
    pub fn token(&self) -> Token {
        match self {
            NodeCommand::Send { token, .. }
            | NodeCommand::Kick { token, .. }
            | NodeCommand::Retire { token } => *token,
        }
    }

    /// Encodes the command for a node's inbox.
    pub fn encode(&self) -> Vec<u8> {
        let (tag, token, rest): (&[u8], _, &[u8]) = match self {
            NodeCommand::Send { token, frame } => (b"S", token, frame),
            NodeCommand::Kick { token, reason } => (b"K", token, reason.as_bytes()),
            NodeCommand::Retire { token } => (b"R", token, &[]),
        };
        let mut out = Vec::with_capacity(36 + rest.len());
        out.extend_from_slice(tag);
        out.push(b' ');
        out.extend_from_slice(token.to_string().as_bytes());
        out.push(b' ');
        out.extend_from_slice(rest);
        out
    }

    /// Decodes a command from a node's inbox.
    ///
    /// # Errors
    /// When the bytes are not a command.
    pub fn decode(bytes: &[u8]) -> Result<NodeCommand, DecodeError> {
        let (tag, rest) = field(bytes, b' ')?;
        let (token, rest) = field(rest, b' ')?;
        let token: Token = text(token)?.parse().map_err(|_| DecodeError("bad token"))?;
        match tag {
            b"S" => Ok(NodeCommand::Send {
                token,
                frame: Bytes::copy_from_slice(rest),
            }),
            b"K" => Ok(NodeCommand::Kick {
                token,
                reason: text(rest)?.to_owned(),
            }),
            b"R" if rest.is_empty() => Ok(NodeCommand::Retire { token }),
            _ => Err(DecodeError("unknown command")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body() -> Vec<u8> {
        encode_body(
            Timestamp::from_unix_micros(1_712_345_678_901_234),
            "ev ent",
            "id\n1",
            "{\"a\":[1,2]}",
        )
    }

    #[test]
    fn a_body_round_trips_with_any_bytes_in_its_fields() {
        let bytes = body();
        assert_eq!(
            decode_body(&bytes),
            Ok(Body {
                timestamp: Timestamp::from_unix_micros(1_712_345_678_901_234),
                event: "ev ent",
                message_id: "id\n1",
                data: "{\"a\":[1,2]}",
            })
        );
        let empty = encode_body(Timestamp::from_unix_micros(0), "", "", "null");
        let decoded = decode_body(&empty).unwrap();
        assert_eq!(
            (decoded.event, decoded.message_id, decoded.data),
            ("", "", "null")
        );
    }

    #[test]
    fn a_live_payload_carries_offset_and_epoch() {
        let mut payload = b"42 e0f1 ".to_vec();
        payload.extend_from_slice(&body());
        let live = decode_live(&payload).unwrap();
        assert_eq!((live.offset, live.epoch), (42, "e0f1"));
        assert_eq!(live.body.message_id, "id\n1");
    }

    #[test]
    fn every_truncation_and_corruption_is_an_error_not_a_panic() {
        let mut payload = b"7 ep ".to_vec();
        payload.extend_from_slice(&body());
        // Truncating anywhere before the data leaves a broken header or body.
        let data_start = payload.len() - "{\"a\":[1,2]}".len();
        for end in 0..data_start {
            assert!(
                decode_live(&payload[..end]).is_err(),
                "prefix of {end} bytes"
            );
        }
        for bad in [
            &b"x ep 1 0 0 0\n"[..],
            b"7  1 0 0 0\n",
            b"7 ep 2 0 0 0\n",
            b"7 ep 1 0 5 0\nab",
            b"7 ep 1 0 0 99999999999999999999999\n",
            b"7 ep 1 -1 0 0\n",
            b"7 ep 1 0 1 0\n\xff",
            b"",
        ] {
            assert!(
                decode_live(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn node_commands_round_trip_and_reject_garbage() {
        let token = Token::from_u128(0xabc);
        for command in [
            NodeCommand::Send {
                token,
                frame: Bytes::from_static(b"{\"data\":1}\x01"),
            },
            NodeCommand::Kick {
                token,
                reason: "bye now".into(),
            },
            NodeCommand::Retire { token },
        ] {
            assert_eq!(NodeCommand::decode(&command.encode()), Ok(command.clone()));
            assert_eq!(command.token(), token);
        }
        for bad in [
            &b"X 00000000000000000000000000000abc x"[..],
            b"S nottoken x",
            b"S",
            b"R 00000000000000000000000000000abc x",
        ] {
            assert!(NodeCommand::decode(bad).is_err());
        }
    }
}
