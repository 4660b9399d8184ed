//! Publishing: the one-shot `PUBLISH` connection (protocol P5), exactly as
//! the 2009 bot's publisher does it, and the persistent X3 publish.
//!
//! ```text
//! oneshot:     connect ─ <regular-socket/>␀PUBLISH␀{"topic":…}␀ ─ read until the server closes
//! 2009:        connect ─ <regular-socket/>␀PUBLISH␀{"topic":…}    ─ close at once (no NUL, hello unread)
//! persistent:  connect ─ hello ─ {"action":"publish","data":{…}}␀ ─ ACK ─ {"action":"publish",…}␀ ─ ACK …
//! ```
//!
//! The `2009` form is what the 2009 bot's publisher writes: no terminating
//! NUL after the JSON, and a close without reading the hello, which the
//! kernel then turns into a TCP reset. It measures a server the way old
//! publishers use it (and is the only form the 2009 server accepts). Since
//! it never learns whether the server took the message, messages sent
//! faster than the server handles its connections may be published out of
//! order; `oneshot` waits for each.
//!
//! The send instant of a message is read on the shared monotonic clock right
//! before its bytes are written, after the connection is established, so it
//! is what a subscriber's latency is measured from.
//!
//! Messages to one target go out one after the other: a one-shot publish
//! waits for the server to close its connection before the next one is
//! written. Two one-shot connections in flight at once could be handled in
//! either order, and the bot would then blame the server for reordering.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use janus_core::{ClientMessage, Publish, ServerMessage};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::sys;

/// How messages are published.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PublishMode {
    /// One `PUBLISH` connection per message, closed by the server (protocol P5).
    Oneshot,
    /// One connection per target, `{"action":"publish"}` answered by `ACK` (X3).
    Persistent,
    /// As the 2009 bot: one connection per message, `PUBLISH␀{json}` without
    /// a trailing NUL, closed at once without reading anything (P5).
    #[value(name = "2009")]
    #[serde(rename = "2009")]
    Legacy2009,
}

impl PublishMode {
    /// How the report names it.
    pub fn describe(self) -> &'static str {
        match self {
            PublishMode::Oneshot => "one-shot",
            PublishMode::Persistent => "persistent",
            PublishMode::Legacy2009 => "2009-form",
        }
    }
}

/// Why a publish failed.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The connection could not be established.
    #[error("connecting to {target}: {source}")]
    Connect {
        /// The server.
        target: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The server did not answer in time.
    #[error("{target} did not {what} within {}", humantime::format_duration(*after))]
    Timeout {
        /// The server.
        target: SocketAddr,
        /// What it did not do.
        what: &'static str,
        /// The timeout.
        after: Duration,
    },
    /// The server answered with an error frame.
    #[error("{target} refused the publish: {code}: {reason}")]
    Refused {
        /// The server.
        target: SocketAddr,
        /// The P7 code.
        code: String,
        /// The server's explanation.
        reason: String,
    },
    /// Reading or writing failed, or the server sent something unexpected.
    #[error("{target}: {what}")]
    Broken {
        /// The server.
        target: SocketAddr,
        /// What happened.
        what: String,
    },
}

/// The outcome of one publish: the send instant if the bytes were written
/// (even when the server's answer then went wrong), and the error, if any.
#[derive(Debug)]
pub struct Outcome {
    /// Monotonic ns right before the publish was written.
    pub sent_ns: Option<u64>,
    /// What went wrong.
    pub error: Option<PublishError>,
}

/// Encodes one publish request in the form `mode` sends.
pub fn encode(publish: Publish, mode: PublishMode) -> Vec<u8> {
    let mut buf = BytesMut::new();
    let one_shot = mode != PublishMode::Persistent;
    if one_shot {
        buf.extend_from_slice(janus_core::REGULAR_SOCKET_MARKER);
        buf.extend_from_slice(&[janus_core::CLIENT_TERMINATOR]);
    }
    ClientMessage::Publish { publish, one_shot }.encode(&mut buf);
    if mode == PublishMode::Legacy2009 {
        // The 2009 publisher ends the JSON with nothing at all.
        buf.truncate(buf.len() - 1);
    }
    buf.to_vec()
}

/// Publishes one message as the 2009 bot does: a fresh connection, the
/// frame from [`encode`] with [`PublishMode::Legacy2009`], and a close
/// without reading anything. Success means the bytes were written.
pub async fn publish_2009(target: SocketAddr, frame: &[u8], limit: Duration) -> Outcome {
    match connect_and_write(target, frame, limit).await {
        // Dropping the stream closes it, the hello unread.
        Ok((_stream, sent_ns)) => Outcome {
            sent_ns: Some(sent_ns),
            error: None,
        },
        Err(e) => Outcome {
            sent_ns: None,
            error: Some(e),
        },
    }
}

/// A fresh connection with `frame` written to it, and the send instant
/// (read right before the write).
async fn connect_and_write(
    target: SocketAddr,
    frame: &[u8],
    limit: Duration,
) -> Result<(TcpStream, u64), PublishError> {
    let mut stream = connect(target, limit).await?;
    let sent_ns = sys::monotonic_ns();
    stream
        .write_all(frame)
        .await
        .map_err(|e| PublishError::Broken {
            target,
            what: format!("writing the publish: {e}"),
        })?;
    Ok((stream, sent_ns))
}

/// Publishes `frame` (from [`encode`]) to `target` once, in `mode`, with
/// `persistent` as the X3 connection.
pub async fn publish(
    mode: PublishMode,
    target: SocketAddr,
    frame: &[u8],
    limit: Duration,
    persistent: &mut Persistent,
) -> Outcome {
    match mode {
        PublishMode::Oneshot => publish_oneshot(target, frame, limit).await,
        PublishMode::Legacy2009 => publish_2009(target, frame, limit).await,
        PublishMode::Persistent => persistent.publish(frame).await,
    }
}

/// A message's `data` as typed on a command line: the text itself when it
/// is JSON (`42`, `{"a":1}`, `"text"`), otherwise the text as a JSON
/// string, or always a string with `as_string` (as `janus-admin publish`).
pub fn data_argument(text: &str, as_string: bool) -> String {
    let is_json = serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok();
    if is_json && !as_string {
        text.to_owned()
    } else {
        serde_json::Value::String(text.to_owned()).to_string()
    }
}

async fn connect(target: SocketAddr, limit: Duration) -> Result<TcpStream, PublishError> {
    let stream = match timeout(limit, TcpStream::connect(target)).await {
        Err(_) => {
            return Err(PublishError::Timeout {
                target,
                what: "accept the publisher's connection",
                after: limit,
            })
        }
        Ok(Err(source)) => return Err(PublishError::Connect { target, source }),
        Ok(Ok(s)) => s,
    };
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// Publishes one message over a fresh connection and waits for the server to
/// close it (protocol P5). `frame` comes from [`encode`] with
/// [`PublishMode::Oneshot`].
pub async fn publish_oneshot(target: SocketAddr, frame: &[u8], limit: Duration) -> Outcome {
    let (mut stream, sent_ns) = match connect_and_write(target, frame, limit).await {
        Ok(written) => written,
        Err(e) => {
            return Outcome {
                sent_ns: None,
                error: Some(e),
            }
        }
    };
    let mut answer = Vec::new();
    let error = match timeout(limit, read_to_close(&mut stream, &mut answer)).await {
        Err(_) => Some(PublishError::Timeout {
            target,
            what: "close the publish connection",
            after: limit,
        }),
        // A reset after the server answered is still a close.
        Ok(Err(e)) if answer.is_empty() => Some(PublishError::Broken {
            target,
            what: format!("reading the answer to the publish: {e}"),
        }),
        Ok(_) => refusal(target, &answer),
    };
    Outcome {
        sent_ns: Some(sent_ns),
        error,
    }
}

async fn read_to_close(stream: &mut TcpStream, answer: &mut Vec<u8>) -> std::io::Result<()> {
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        // Only the first frames matter (hello, perhaps an error).
        if answer.len() < 64 * 1024 {
            answer.extend_from_slice(&buf[..n]);
        }
    }
}

/// The error frame among the server's answer, if any.
fn refusal(target: SocketAddr, answer: &[u8]) -> Option<PublishError> {
    for frame in answer.split(|&b| b == janus_core::SERVER_TERMINATOR) {
        let Ok(text) = std::str::from_utf8(frame) else {
            continue;
        };
        if let Ok(ServerMessage::Error { code, reason, .. }) = ServerMessage::parse(text) {
            return Some(PublishError::Refused {
                target,
                code,
                reason,
            });
        }
    }
    None
}

/// A persistent (X3) publishing connection to one server.
#[derive(Debug)]
pub struct Persistent {
    target: SocketAddr,
    stream: Option<TcpStream>,
    buf: BytesMut,
    codec: janus_core::ClientCodec,
    limit: Duration,
}

impl Persistent {
    /// A publisher that connects on first use (and again after a failure).
    pub fn new(target: SocketAddr, limit: Duration) -> Self {
        Self {
            target,
            stream: None,
            buf: BytesMut::new(),
            codec: janus_core::ClientCodec::default(),
            limit,
        }
    }

    /// Publishes one message and waits for its `ACK`. `frame` comes from
    /// [`encode`] with [`PublishMode::Persistent`].
    pub async fn publish(&mut self, frame: &[u8]) -> Outcome {
        if self.stream.is_none() {
            match self.open().await {
                Ok(()) => {}
                Err(e) => {
                    return Outcome {
                        sent_ns: None,
                        error: Some(e),
                    }
                }
            }
        }
        let Some(stream) = self.stream.as_mut() else {
            return Outcome {
                sent_ns: None,
                error: None,
            };
        };
        let sent_ns = sys::monotonic_ns();
        if let Err(e) = stream.write_all(frame).await {
            self.stream = None;
            return Outcome {
                sent_ns: None,
                error: Some(PublishError::Broken {
                    target: self.target,
                    what: format!("writing the publish: {e}"),
                }),
            };
        }
        let error = match self
            .until(
                |m| matches!(m, ServerMessage::Ack),
                "acknowledge the publish",
            )
            .await
        {
            Ok(()) => None,
            Err(e) => {
                self.stream = None;
                Some(e)
            }
        };
        Outcome {
            sent_ns: Some(sent_ns),
            error,
        }
    }

    async fn open(&mut self) -> Result<(), PublishError> {
        self.stream = Some(connect(self.target, self.limit).await?);
        self.buf.clear();
        self.codec = janus_core::ClientCodec::default();
        self.until(
            |m| matches!(m, ServerMessage::Hello { .. }),
            "send its hello",
        )
        .await
        .inspect_err(|_| self.stream = None)
    }

    /// Reads frames until one satisfies `done`; PINGs are skipped, errors fail.
    async fn until(
        &mut self,
        done: impl Fn(&ServerMessage) -> bool,
        what: &'static str,
    ) -> Result<(), PublishError> {
        let target = self.target;
        let limit = self.limit;
        let Some(stream) = self.stream.as_mut() else {
            return Err(PublishError::Broken {
                target,
                what: "not connected".into(),
            });
        };
        let wait = async {
            loop {
                while let Some(msg) = next_message(&mut self.codec, &mut self.buf).map_err(|e| {
                    PublishError::Broken {
                        target,
                        what: format!("bad server frame: {e}"),
                    }
                })? {
                    match msg {
                        ServerMessage::Error { code, reason, .. } => {
                            return Err(PublishError::Refused {
                                target,
                                code,
                                reason,
                            })
                        }
                        m if done(&m) => return Ok(()),
                        _ => {}
                    }
                }
                let n = stream
                    .read_buf(&mut self.buf)
                    .await
                    .map_err(|e| PublishError::Broken {
                        target,
                        what: format!("reading: {e}"),
                    })?;
                if n == 0 {
                    return Err(PublishError::Broken {
                        target,
                        what: format!("connection closed before the server did {what}"),
                    });
                }
            }
        };
        match timeout(limit, wait).await {
            Ok(r) => r,
            Err(_) => Err(PublishError::Timeout {
                target,
                what,
                after: limit,
            }),
        }
    }
}

/// The next complete server message in `buf`, if any.
fn next_message(
    codec: &mut janus_core::ClientCodec,
    buf: &mut BytesMut,
) -> Result<Option<ServerMessage>, String> {
    let Some(raw) = codec.decode_raw(buf).map_err(|e| e.to_string())? else {
        return Ok(None);
    };
    let text = std::str::from_utf8(&raw).map_err(|e| format!("server frame is not UTF-8: {e}"))?;
    ServerMessage::parse(text).map(Some)
}

/// The `data` of a bot message: a JSON string of `bytes` characters.
pub fn payload(bytes: usize) -> String {
    let mut s = String::with_capacity(bytes + 2);
    s.push('"');
    s.extend(std::iter::repeat_n('x', bytes));
    s.push('"');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_for_both_modes() {
        let p = Publish::new("t", "e", "7", &payload(3)).unwrap();
        let one = encode(p.clone(), PublishMode::Oneshot);
        assert_eq!(
            one,
            b"<regular-socket/>\0PUBLISH\0{\"topic\":\"t\",\"event\":\"e\",\"message_id\":\"7\",\"data\":\"xxx\"}\0"
        );
        let persistent = encode(p.clone(), PublishMode::Persistent);
        assert!(persistent.starts_with(b"{\"action\":\"publish\",\"data\":{\"topic\":\"t\""));
        assert_eq!(persistent.last(), Some(&0));
        // The 2009 form: the one-shot bytes without the final NUL.
        let old = encode(p, PublishMode::Legacy2009);
        assert_eq!(old, one[..one.len() - 1]);
        assert_eq!(old.last(), Some(&b'}'));
    }

    #[test]
    fn data_arguments_like_janus_admin() {
        assert_eq!(data_argument("42", false), "42");
        assert_eq!(data_argument("{\"a\":1}", false), "{\"a\":1}");
        assert_eq!(data_argument("hello world", false), "\"hello world\"");
        assert_eq!(data_argument("{nope", false), "\"{nope\"");
        assert_eq!(data_argument("42", true), "\"42\"");
    }

    #[test]
    fn error_frames_are_refusals() {
        let target: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let answer = b"{\"timestamp\":[1,2,3],\"token\":\"ab\"}\x01{\"timestamp\":[1,2,3],\"error\":\"not_allowed\",\"reason\":\"no\"}\x01";
        let e = refusal(target, answer).unwrap();
        assert_eq!(
            e.to_string(),
            "127.0.0.1:1 refused the publish: not_allowed: no"
        );
        assert!(refusal(target, b"{\"timestamp\":[1,2,3],\"token\":\"ab\"}\x01").is_none());
    }
}
