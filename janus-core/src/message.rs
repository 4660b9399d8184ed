//! Typed protocol messages in both directions, and how each is written.
//!
//! Client → server ([`ClientMessage`]): subscribe, unsubscribe (P3), ping and
//! pong (P4), publish (P5 and the persistent X3 form) and resume (X1).
//! Server → client ([`ServerMessage`]): hello (P2), `ACK`, `PING`, delivery
//! (P6), error (P7) and resumed (X1).
//!
//! Key order matters to 2009 clients, so server messages are written by hand
//! in the exact order of docs/protocol.md rather than through a serializer whose
//! order could drift; strings still go through `serde_json` for escaping.
//!
//! A publish's `data` is forwarded verbatim, so before it reaches anyone it
//! is checked ([`validate_data`]) for what valid JSON can still do to a
//! subscriber's parser: nesting deeper than [`MAX_DATA_DEPTH`] (which
//! overflows recursive parsers) and numbers too large for a double (which
//! parsers turn into infinity or reject).

use std::fmt;
use std::str::FromStr;

use bytes::{BufMut, Bytes, BytesMut};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::time::Timestamp;
use crate::topic::validate_topic;

/// The error codes of protocol P7.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// A frame that is not the JSON it should be. Connection stays open.
    BadJson,
    /// A frame that is not valid UTF-8 or otherwise unreadable. Connection closes.
    BadFrame,
    /// A frame longer than the configured maximum. Connection closes.
    FrameTooLarge,
    /// A JSON object with an action the server does not know. Connection stays open.
    UnknownAction,
    /// An invalid topic name. Connection stays open.
    BadTopic,
    /// A resume of a session that does not exist. Connection stays open.
    UnknownSession,
    /// Publishing from an address that may not publish. Connection closes.
    NotAllowed,
    /// More subscriptions than one session may hold. Connection closes.
    TooManySubscriptions,
    /// The client did not read fast enough. Connection closes.
    SlowConsumer,
    /// An operator disconnected this session. Connection closes.
    Kicked,
    /// The server is shutting down. Connection closes.
    ServerShutdown,
    /// The server cannot take this request right now (in a cluster: the
    /// broker is unreachable; or a server-wide limit is reached). Nothing was
    /// half-done; the client may retry. Connection stays open.
    Unavailable,
}

impl ErrorCode {
    /// Every code, in the order protocol P7 lists them.
    pub const ALL: [ErrorCode; 12] = [
        ErrorCode::BadJson,
        ErrorCode::BadFrame,
        ErrorCode::FrameTooLarge,
        ErrorCode::UnknownAction,
        ErrorCode::BadTopic,
        ErrorCode::UnknownSession,
        ErrorCode::NotAllowed,
        ErrorCode::TooManySubscriptions,
        ErrorCode::SlowConsumer,
        ErrorCode::Kicked,
        ErrorCode::ServerShutdown,
        ErrorCode::Unavailable,
    ];

    /// The code as written on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadJson => "bad_json",
            ErrorCode::BadFrame => "bad_frame",
            ErrorCode::FrameTooLarge => "frame_too_large",
            ErrorCode::UnknownAction => "unknown_action",
            ErrorCode::BadTopic => "bad_topic",
            ErrorCode::UnknownSession => "unknown_session",
            ErrorCode::NotAllowed => "not_allowed",
            ErrorCode::TooManySubscriptions => "too_many_subscriptions",
            ErrorCode::SlowConsumer => "slow_consumer",
            ErrorCode::Kicked => "kicked",
            ErrorCode::ServerShutdown => "server_shutdown",
            ErrorCode::Unavailable => "unavailable",
        }
    }

    /// Whether the server closes the connection after sending this error (P7).
    pub fn closes_connection(self) -> bool {
        !matches!(
            self,
            ErrorCode::BadJson
                | ErrorCode::UnknownAction
                | ErrorCode::BadTopic
                | ErrorCode::UnknownSession
                | ErrorCode::Unavailable
        )
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ErrorCode {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        ErrorCode::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or(())
    }
}

/// A client mistake the server answers with an error frame (P7).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {reason}")]
pub struct ProtocolError {
    /// The P7 code.
    pub code: ErrorCode,
    /// Human-readable explanation sent to the client.
    pub reason: String,
    /// Whether the connection must close after the error frame: the code says
    /// so, or the error ended a one-shot `PUBLISH` connection.
    pub close: bool,
}

impl ProtocolError {
    /// An error whose keep-open/close behaviour is the one P7 gives its code.
    pub fn new(code: ErrorCode, reason: impl Into<String>) -> Self {
        Self {
            code,
            reason: reason.into(),
            close: code.closes_connection(),
        }
    }

    /// The same error, but the connection closes afterwards regardless of code.
    pub fn closing(mut self) -> Self {
        self.close = true;
        self
    }
}

/// A publish request (P5, X3), parsed and validated.
#[derive(Debug, Clone)]
pub struct Publish {
    /// Target topic, validated by [`validate_topic`].
    pub topic: String,
    /// Event name; `""` when absent.
    pub event: String,
    /// Message id; `""` when absent.
    pub message_id: String,
    /// The payload exactly as the publisher wrote it (any JSON value; `null` when absent).
    pub data: Box<RawValue>,
    /// The publish key (X4), never forwarded to subscribers.
    pub key: Option<String>,
}

impl PartialEq for Publish {
    fn eq(&self, other: &Self) -> bool {
        self.topic == other.topic
            && self.event == other.event
            && self.message_id == other.message_id
            && self.data.get() == other.data.get()
            && self.key == other.key
    }
}

impl Eq for Publish {}

/// The JSON body of a publish, before validation.
#[derive(Deserialize)]
struct PublishBody {
    topic: Option<serde_json::Value>,
    #[serde(default)]
    event: Option<serde_json::Value>,
    #[serde(default)]
    message_id: Option<serde_json::Value>,
    #[serde(default)]
    data: Option<Box<RawValue>>,
    #[serde(default)]
    key: Option<String>,
}

/// Reads a string field that old publishers sometimes send as a number.
fn text_field(name: &str, value: Option<serde_json::Value>) -> Result<String, ProtocolError> {
    match value {
        None | Some(serde_json::Value::Null) => Ok(String::new()),
        Some(serde_json::Value::String(s)) => Ok(s),
        Some(serde_json::Value::Number(n)) => Ok(n.to_string()),
        Some(_) => Err(ProtocolError::new(
            ErrorCode::BadJson,
            format!("\"{name}\" must be a string"),
        )),
    }
}

impl Publish {
    /// Builds a publish request; `data` must be valid JSON text.
    ///
    /// # Errors
    /// `bad_topic` for an invalid topic, `bad_json` when `data` is not JSON.
    pub fn new(
        topic: impl Into<String>,
        event: impl Into<String>,
        message_id: impl Into<String>,
        data: &str,
    ) -> Result<Self, ProtocolError> {
        let topic = topic.into();
        validate_topic(&topic)?;
        let data = RawValue::from_string(data.to_owned())
            .map_err(|e| ProtocolError::new(ErrorCode::BadJson, format!("data: {e}")))?;
        validate_data(data.get())?;
        Ok(Self {
            topic,
            event: event.into(),
            message_id: message_id.into(),
            data,
            key: None,
        })
    }

    /// Parses the JSON object of a publish (any key order).
    ///
    /// # Errors
    /// `bad_json` for malformed JSON or a missing `topic`, `bad_topic` for an invalid one.
    pub fn from_json(json: &str) -> Result<Self, ProtocolError> {
        // Serde would also accept a JSON array for a struct; the protocol does not.
        if !json.trim_start().starts_with('{') {
            return Err(ProtocolError::new(
                ErrorCode::BadJson,
                "publish body must be a JSON object",
            ));
        }
        let body: PublishBody = serde_json::from_str(json)
            .map_err(|e| ProtocolError::new(ErrorCode::BadJson, format!("publish body: {e}")))?;
        Self::from_body(body)
    }

    fn from_raw(raw: &RawValue) -> Result<Self, ProtocolError> {
        Self::from_json(raw.get())
    }

    fn from_body(body: PublishBody) -> Result<Self, ProtocolError> {
        let topic = match body.topic {
            Some(serde_json::Value::String(t)) => t,
            Some(_) => {
                return Err(ProtocolError::new(
                    ErrorCode::BadTopic,
                    "\"topic\" must be a string",
                ))
            }
            None => {
                return Err(ProtocolError::new(
                    ErrorCode::BadJson,
                    "publish body has no \"topic\"",
                ))
            }
        };
        validate_topic(&topic)?;
        let data = match body.data {
            Some(d) => {
                validate_data(d.get())?;
                d
            }
            None => RawValue::from_string("null".to_owned())
                .map_err(|e| ProtocolError::new(ErrorCode::BadJson, e.to_string()))?,
        };
        Ok(Self {
            topic,
            event: text_field("event", body.event)?,
            message_id: text_field("message_id", body.message_id)?,
            data,
            key: body.key,
        })
    }

    /// Writes the publish body as JSON (with the key, if any).
    pub fn to_json(&self) -> String {
        let mut out = Vec::with_capacity(64 + self.data.get().len());
        out.extend_from_slice(b"{\"topic\":");
        push_json_str(&mut out, &self.topic);
        out.extend_from_slice(b",\"event\":");
        push_json_str(&mut out, &self.event);
        out.extend_from_slice(b",\"message_id\":");
        push_json_str(&mut out, &self.message_id);
        out.extend_from_slice(b",\"data\":");
        out.extend_from_slice(self.data.get().as_bytes());
        if let Some(key) = &self.key {
            out.extend_from_slice(b",\"key\":");
            push_json_str(&mut out, key);
        }
        out.push(b'}');
        // Only valid UTF-8 was pushed: JSON-escaped strings and a RawValue.
        String::from_utf8(out).unwrap_or_default()
    }

    /// Encodes the delivery of this publish, once, for every subscriber (P6).
    pub fn encode_delivery(&self, timestamp: Timestamp) -> Bytes {
        self.encode_delivery_at(timestamp, None)
    }

    /// As [`Publish::encode_delivery`], with the topic offset for clients
    /// that opted in (X1).
    pub fn encode_delivery_at(&self, timestamp: Timestamp, offset: Option<u64>) -> Bytes {
        encode_delivery_at(
            timestamp,
            &self.topic,
            &self.event,
            &self.message_id,
            self.data.get(),
            offset,
        )
    }
}

/// Deepest nesting of arrays and objects a publish's `data` may have: `1`
/// is depth 0, `[1]` depth 1, `{"a":[1]}` depth 2.
///
/// 64 keeps every delivery (which wraps `data` in one more object) well
/// inside the default limits of common parsers — `serde_json` stops at 128,
/// Python's recursive `json.loads` near 1,000 — and leaves room for a client
/// that wraps a message again; real payloads rarely pass 10.
pub const MAX_DATA_DEPTH: usize = 64;

/// Checks JSON text that is already known to be valid (a `RawValue`)
/// before it is forwarded to subscribers.
///
/// # Errors
/// `bad_json` when arrays and objects nest deeper than [`MAX_DATA_DEPTH`],
/// or when a number is too large for a 64-bit float (`1e999999`, or an
/// integer of more than 308 digits), which parsers turn into infinity or
/// refuse.
pub fn validate_data(json: &str) -> Result<(), ProtocolError> {
    let bytes = json.as_bytes();
    let mut depth = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                // Skip the string; its content cannot nest or be a number.
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_DATA_DEPTH {
                    return Err(ProtocolError::new(
                        ErrorCode::BadJson,
                        format!("data nests deeper than {MAX_DATA_DEPTH} arrays or objects"),
                    ));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            b'-' | b'0'..=b'9' => {
                let start = i;
                while i + 1 < bytes.len()
                    && matches!(bytes[i + 1], b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-')
                {
                    i += 1;
                }
                let number = &json[start..=i];
                // Without an exponent, only a number of more than 308
                // digits can overflow a double: skip the parse otherwise.
                let may_overflow = number.len() > 300 || number.contains(['e', 'E']);
                if may_overflow && !number.parse::<f64>().is_ok_and(f64::is_finite) {
                    return Err(ProtocolError::new(
                        ErrorCode::BadJson,
                        format!(
                            "data holds a number too large for a 64-bit float: {}",
                            truncate(number, 32)
                        ),
                    ));
                }
            }
            _ => {}
        }
        i += 1;
    }
    Ok(())
}

/// Appends `s` as a JSON string literal.
fn push_json_str(out: &mut Vec<u8>, s: &str) {
    // Writing into a Vec cannot fail and a &str always serializes.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// Encodes a complete delivery frame, terminator included, with the exact key
/// order of protocol P6. `data` must be valid JSON text.
pub fn encode_delivery(
    timestamp: Timestamp,
    topic: &str,
    event: &str,
    message_id: &str,
    data: &str,
) -> Bytes {
    encode_delivery_at(timestamp, topic, event, message_id, data, None)
}

/// As [`encode_delivery`], with `"offset":N` as the last key when `offset`
/// is given (X1: only for clients that opted in).
pub fn encode_delivery_at(
    timestamp: Timestamp,
    topic: &str,
    event: &str,
    message_id: &str,
    data: &str,
    offset: Option<u64>,
) -> Bytes {
    let mut out =
        Vec::with_capacity(120 + topic.len() + event.len() + message_id.len() + data.len());
    out.extend_from_slice(b"{\"timestamp\":");
    out.extend_from_slice(timestamp.to_string().as_bytes());
    out.extend_from_slice(b",\"topic\":");
    push_json_str(&mut out, topic);
    out.extend_from_slice(b",\"event\":");
    push_json_str(&mut out, event);
    out.extend_from_slice(b",\"message_id\":");
    push_json_str(&mut out, message_id);
    out.extend_from_slice(b",\"data\":");
    out.extend_from_slice(data.as_bytes());
    if let Some(offset) = offset {
        out.extend_from_slice(b",\"offset\":");
        out.extend_from_slice(offset.to_string().as_bytes());
    }
    out.extend_from_slice(b"}\x01");
    Bytes::from(out)
}

/// What a client asks of the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientMessage {
    /// `{"action":"subscribe","data":"TOPIC"}` (P3).
    Subscribe(String),
    /// `{"action":"unsubscribe","data":"TOPIC"}` (P3).
    Unsubscribe(String),
    /// `PING` from a client (P4); accepted and ignored.
    Ping,
    /// `PONG` from a client (P4); accepted and ignored.
    Pong,
    /// A publish: the 2009 `PUBLISH` two-frame form (`one_shot`: the server
    /// closes the connection afterwards, P5) or the persistent X3 action.
    Publish {
        /// The request.
        publish: Publish,
        /// True for the `PUBLISH` form, after which the connection closes.
        one_shot: bool,
    },
    /// `{"action":"options","data":{"offsets":true}}` (X1): opt in to offsets.
    Options {
        /// Deliveries carry their topic offset, and subscribes are answered
        /// `subscribed`; `None` leaves the setting as it is.
        offsets: Option<bool>,
    },
    /// `{"action":"resume",...}` (X1), as the first frame of a connection.
    Resume(Resume),
}

/// What a client resumes (X1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resume {
    /// `"data":"TOKEN"`: re-attach a detached session with what was queued for it.
    Token(String),
    /// `"data":{"token":"T","topics":{"TOPIC":{"epoch":"E","offset":N},…}}`:
    /// the session `T`, subscribed to these topics, with everything published
    /// on them after the given positions.
    Positions {
        /// The session token.
        token: String,
        /// Where the client is in each topic, in the order given.
        topics: Vec<TopicPosition>,
    },
}

/// A client's position in one topic's stream (X1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicPosition {
    /// The topic.
    pub topic: String,
    /// The stream the offset belongs to.
    pub epoch: String,
    /// The last offset the client has.
    pub offset: u64,
}

/// The object of a positional resume.
#[derive(Deserialize)]
struct ResumeBody {
    token: String,
    #[serde(default)]
    topics: std::collections::BTreeMap<String, PositionBody>,
}

#[derive(Deserialize)]
struct PositionBody {
    epoch: String,
    offset: u64,
}

/// The object of an `options` request.
#[derive(Deserialize)]
struct OptionsBody {
    #[serde(default)]
    offsets: Option<bool>,
}

/// The generic shape of an action frame.
#[derive(Deserialize)]
struct ActionFrame<'a> {
    #[serde(borrow)]
    action: Option<&'a RawValue>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
}

impl ClientMessage {
    /// Interprets one client frame payload that is not a `PUBLISH` body.
    ///
    /// Returns `Ok(None)` for payloads the protocol ignores (the
    /// `<regular-socket/>` marker, empty frames) and `Ok(Some(..))` for the
    /// `PUBLISH` keyword's own frame is not handled here: see the codec.
    ///
    /// # Errors
    /// A [`ProtocolError`] with the P7 code for the mistake.
    pub fn parse(payload: &str) -> Result<Self, ProtocolError> {
        match payload {
            "PING" => return Ok(ClientMessage::Ping),
            "PONG" => return Ok(ClientMessage::Pong),
            _ => {}
        }
        if !payload.starts_with('{') {
            return Err(ProtocolError::new(
                ErrorCode::BadJson,
                format!("expected a JSON object, got {:?}", truncate(payload, 64)),
            ));
        }
        let frame: ActionFrame<'_> = serde_json::from_str(payload).map_err(|e| {
            ProtocolError::new(ErrorCode::BadJson, format!("not a JSON object: {e}"))
        })?;
        let Some(action) = frame.action else {
            return Err(ProtocolError::new(
                ErrorCode::UnknownAction,
                "frame has no \"action\"",
            ));
        };
        let action: &str = match serde_json::from_str::<&str>(action.get()) {
            Ok(a) => a,
            Err(_) => {
                return Err(ProtocolError::new(
                    ErrorCode::UnknownAction,
                    format!("unknown action {}", action.get()),
                ))
            }
        };
        match action {
            "subscribe" => Ok(ClientMessage::Subscribe(topic_of(frame.data)?)),
            "unsubscribe" => Ok(ClientMessage::Unsubscribe(topic_of(frame.data)?)),
            "publish" => {
                let data = frame.data.ok_or_else(|| {
                    ProtocolError::new(ErrorCode::BadJson, "publish without \"data\"")
                })?;
                Ok(ClientMessage::Publish {
                    publish: Publish::from_raw(data)?,
                    one_shot: false,
                })
            }
            "resume" => parse_resume(frame.data),
            "options" => {
                let data = frame.data.map_or("{}", RawValue::get);
                let body: OptionsBody = serde_json::from_str(data).map_err(|e| {
                    ProtocolError::new(
                        ErrorCode::BadJson,
                        format!("options take an object such as {{\"offsets\":true}}: {e}"),
                    )
                })?;
                Ok(ClientMessage::Options {
                    offsets: body.offsets,
                })
            }
            // The 2009 server accepted "ping" and "pong" actions from some clients.
            "ping" => Ok(ClientMessage::Ping),
            "pong" => Ok(ClientMessage::Pong),
            other => Err(ProtocolError::new(
                ErrorCode::UnknownAction,
                format!("unknown action {other:?}"),
            )),
        }
    }

    /// Writes this message as client frames, terminators included.
    pub fn encode(&self, dst: &mut BytesMut) {
        let mut json = Vec::new();
        match self {
            ClientMessage::Subscribe(t) | ClientMessage::Unsubscribe(t) => {
                let action = if matches!(self, ClientMessage::Subscribe(_)) {
                    "subscribe"
                } else {
                    "unsubscribe"
                };
                json.extend_from_slice(b"{\"action\":\"");
                json.extend_from_slice(action.as_bytes());
                json.extend_from_slice(b"\",\"data\":");
                push_json_str(&mut json, t);
                json.push(b'}');
            }
            ClientMessage::Resume(Resume::Token(t)) => {
                json.extend_from_slice(b"{\"action\":\"resume\",\"data\":");
                push_json_str(&mut json, t);
                json.push(b'}');
            }
            ClientMessage::Resume(Resume::Positions { token, topics }) => {
                json.extend_from_slice(b"{\"action\":\"resume\",\"data\":{\"token\":");
                push_json_str(&mut json, token);
                json.extend_from_slice(b",\"topics\":{");
                for (i, p) in topics.iter().enumerate() {
                    if i > 0 {
                        json.push(b',');
                    }
                    push_json_str(&mut json, &p.topic);
                    json.extend_from_slice(b":{\"epoch\":");
                    push_json_str(&mut json, &p.epoch);
                    json.extend_from_slice(format!(",\"offset\":{}}}", p.offset).as_bytes());
                }
                json.extend_from_slice(b"}}}");
            }
            ClientMessage::Options { offsets } => {
                json.extend_from_slice(b"{\"action\":\"options\",\"data\":{");
                if let Some(on) = offsets {
                    json.extend_from_slice(format!("\"offsets\":{on}").as_bytes());
                }
                json.extend_from_slice(b"}}");
            }
            ClientMessage::Ping => json.extend_from_slice(b"PING"),
            ClientMessage::Pong => json.extend_from_slice(b"PONG"),
            ClientMessage::Publish { publish, one_shot } => {
                if *one_shot {
                    dst.put_slice(b"PUBLISH\0");
                    json.extend_from_slice(publish.to_json().as_bytes());
                } else {
                    json.extend_from_slice(b"{\"action\":\"publish\",\"data\":");
                    json.extend_from_slice(publish.to_json().as_bytes());
                    json.push(b'}');
                }
            }
        }
        dst.put_slice(&json);
        dst.put_u8(crate::CLIENT_TERMINATOR);
    }
}

/// At most `max` bytes of `s`, cut on a character boundary.
fn truncate(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The two forms of `resume` (X1). A resume the server cannot read is
/// `unknown_session`: the connection goes on as a fresh session.
fn parse_resume(data: Option<&RawValue>) -> Result<ClientMessage, ProtocolError> {
    let unknown = |why: String| ProtocolError::new(ErrorCode::UnknownSession, why);
    let data = data.ok_or_else(|| unknown("resume needs \"data\"".into()))?;
    let text = data.get();
    if text.starts_with('"') {
        let token: String =
            serde_json::from_str(text).map_err(|e| unknown(format!("resume token: {e}")))?;
        return Ok(ClientMessage::Resume(Resume::Token(token)));
    }
    let body: ResumeBody = serde_json::from_str(text).map_err(|e| {
        unknown(format!(
            "resume takes a token or {{\"token\":..,\"topics\":{{TOPIC:{{\"epoch\":..,\"offset\":N}}}}}}: {e}"
        ))
    })?;
    let mut topics = Vec::with_capacity(body.topics.len());
    for (topic, position) in body.topics {
        validate_topic(&topic)?;
        topics.push(TopicPosition {
            topic,
            epoch: position.epoch,
            offset: position.offset,
        });
    }
    Ok(ClientMessage::Resume(Resume::Positions {
        token: body.token,
        topics,
    }))
}

fn topic_of(data: Option<&RawValue>) -> Result<String, ProtocolError> {
    let data =
        data.ok_or_else(|| ProtocolError::new(ErrorCode::BadTopic, "missing topic in \"data\""))?;
    let topic: String = serde_json::from_str(data.get())
        .map_err(|_| ProtocolError::new(ErrorCode::BadTopic, "topic must be a string"))?;
    validate_topic(&topic)?;
    Ok(topic)
}

/// A delivery as a client reads it (P6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The server's timestamp of the publish.
    pub timestamp: Timestamp,
    /// The topic.
    pub topic: String,
    /// The event name.
    pub event: String,
    /// The message id.
    pub message_id: String,
    /// The payload as JSON text.
    pub data: String,
    /// The message's position in its topic (X1), for clients that opted in.
    pub offset: Option<u64>,
}

/// What the server sends a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerMessage {
    /// The greeting sent right after accept (P2).
    Hello {
        /// Server wall clock at accept.
        timestamp: Timestamp,
        /// The session token (32 hex digits; some old servers sent character codes).
        token: String,
    },
    /// `ACK`: the subscription is live (P3), or a persistent publish was taken (X3).
    Ack,
    /// `PING`: heartbeat (P4).
    Ping,
    /// A published message (P6).
    Delivery(Delivery),
    /// An error (P7).
    Error {
        /// When the server noticed.
        timestamp: Timestamp,
        /// The code as sent (unknown codes from other servers are kept as text).
        code: String,
        /// Human-readable reason.
        reason: String,
    },
    /// The session was re-attached (X1).
    Resumed {
        /// Server wall clock.
        timestamp: Timestamp,
        /// The resumed token.
        token: String,
        /// Whether everything missed follows (`missed` messages); if not,
        /// nothing is replayed and the client must resync.
        recovered: bool,
        /// Messages about to be replayed.
        missed: u64,
    },
    /// A subscription is live, for a client that opted in to offsets (X1).
    Subscribed {
        /// Server wall clock.
        timestamp: Timestamp,
        /// The topic.
        topic: String,
        /// The topic's stream.
        epoch: String,
        /// The topic's latest offset (0: nothing published yet).
        offset: u64,
    },
}

#[derive(Deserialize)]
struct AnyServerObject {
    timestamp: Option<[u64; 3]>,
    token: Option<serde_json::Value>,
    topic: Option<String>,
    event: Option<String>,
    message_id: Option<String>,
    data: Option<Box<RawValue>>,
    error: Option<String>,
    reason: Option<String>,
    resumed: Option<String>,
    recovered: Option<bool>,
    missed: Option<u64>,
    subscribed: Option<String>,
    epoch: Option<String>,
    offset: Option<u64>,
}

impl ServerMessage {
    /// An error frame for `err`, stamped with `timestamp` (the caller reads
    /// the clock, as for [`Publish::encode_delivery`]).
    pub fn error(err: &ProtocolError, timestamp: Timestamp) -> Self {
        ServerMessage::Error {
            timestamp,
            code: err.code.as_str().to_owned(),
            reason: err.reason.clone(),
        }
    }

    /// Parses one server frame payload (terminator removed).
    ///
    /// # Errors
    /// A description of what is wrong with the frame.
    pub fn parse(payload: &str) -> Result<Self, String> {
        match payload {
            "ACK" => return Ok(ServerMessage::Ack),
            "PING" => return Ok(ServerMessage::Ping),
            _ => {}
        }
        let obj: AnyServerObject =
            serde_json::from_str(payload).map_err(|e| format!("malformed server frame: {e}"))?;
        let timestamp = obj
            .timestamp
            .map(|[m, s, u]| Timestamp::from_parts(m, s, u))
            .ok_or_else(|| "server frame without \"timestamp\"".to_owned())?;
        if let Some(code) = obj.error {
            return Ok(ServerMessage::Error {
                timestamp,
                code,
                reason: obj.reason.unwrap_or_default(),
            });
        }
        if let Some(token) = obj.resumed {
            return Ok(ServerMessage::Resumed {
                timestamp,
                token,
                recovered: obj.recovered.unwrap_or(false),
                missed: obj.missed.unwrap_or(0),
            });
        }
        if let Some(topic) = obj.subscribed {
            return Ok(ServerMessage::Subscribed {
                timestamp,
                topic,
                epoch: obj.epoch.unwrap_or_default(),
                offset: obj.offset.unwrap_or(0),
            });
        }
        if let Some(topic) = obj.topic {
            return Ok(ServerMessage::Delivery(Delivery {
                timestamp,
                topic,
                event: obj.event.unwrap_or_default(),
                message_id: obj.message_id.unwrap_or_default(),
                data: obj
                    .data
                    .map(|d| d.get().to_owned())
                    .unwrap_or_else(|| "null".into()),
                offset: obj.offset,
            }));
        }
        match obj.token {
            Some(serde_json::Value::String(token)) => Ok(ServerMessage::Hello { timestamp, token }),
            // The 2009 server sent the token as an array of character codes.
            Some(serde_json::Value::Array(codes)) => {
                let token = codes
                    .iter()
                    .map(|c| {
                        c.as_u64()
                            .and_then(|c| char::from_u32(u32::try_from(c).ok()?))
                    })
                    .collect::<Option<String>>()
                    .ok_or_else(|| "hello token is not a string".to_owned())?;
                Ok(ServerMessage::Hello { timestamp, token })
            }
            _ => Err(format!("unrecognized server frame: {payload}")),
        }
    }

    /// Writes the frame, terminator included, with P2/P6/P7 key order.
    pub fn encode(&self, dst: &mut BytesMut) {
        let mut out = Vec::new();
        match self {
            ServerMessage::Hello { timestamp, token } => {
                out.extend_from_slice(b"{\"timestamp\":");
                out.extend_from_slice(timestamp.to_string().as_bytes());
                out.extend_from_slice(b",\"token\":");
                push_json_str(&mut out, token);
                out.push(b'}');
            }
            ServerMessage::Ack => out.extend_from_slice(b"ACK"),
            ServerMessage::Ping => out.extend_from_slice(b"PING"),
            ServerMessage::Delivery(d) => {
                let bytes = encode_delivery_at(
                    d.timestamp,
                    &d.topic,
                    &d.event,
                    &d.message_id,
                    &d.data,
                    d.offset,
                );
                dst.put_slice(&bytes);
                return;
            }
            ServerMessage::Error {
                timestamp,
                code,
                reason,
            } => {
                out.extend_from_slice(b"{\"timestamp\":");
                out.extend_from_slice(timestamp.to_string().as_bytes());
                out.extend_from_slice(b",\"error\":");
                push_json_str(&mut out, code);
                out.extend_from_slice(b",\"reason\":");
                push_json_str(&mut out, reason);
                out.push(b'}');
            }
            ServerMessage::Resumed {
                timestamp,
                token,
                recovered,
                missed,
            } => {
                out.extend_from_slice(b"{\"timestamp\":");
                out.extend_from_slice(timestamp.to_string().as_bytes());
                out.extend_from_slice(b",\"resumed\":");
                push_json_str(&mut out, token);
                out.extend_from_slice(
                    format!(",\"recovered\":{recovered},\"missed\":{missed}}}").as_bytes(),
                );
            }
            ServerMessage::Subscribed {
                timestamp,
                topic,
                epoch,
                offset,
            } => {
                out.extend_from_slice(b"{\"timestamp\":");
                out.extend_from_slice(timestamp.to_string().as_bytes());
                out.extend_from_slice(b",\"subscribed\":");
                push_json_str(&mut out, topic);
                out.extend_from_slice(b",\"epoch\":");
                push_json_str(&mut out, epoch);
                out.extend_from_slice(format!(",\"offset\":{offset}}}").as_bytes());
            }
        }
        dst.put_slice(&out);
        dst.put_u8(crate::SERVER_TERMINATOR);
    }

    /// The complete frame as shared bytes.
    pub fn to_bytes(&self) -> Bytes {
        let mut buf = BytesMut::new();
        self.encode(&mut buf);
        buf.freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(b: &Bytes) -> &str {
        std::str::from_utf8(b).unwrap()
    }

    #[test]
    fn hello_key_order_is_timestamp_then_token() {
        let ts = Timestamp::from_parts(1764, 471_234, 56_789);
        let hello = ServerMessage::Hello {
            timestamp: ts,
            token: "0123456789abcdef0123456789abcdef".into(),
        };
        assert_eq!(
            text(&hello.to_bytes()),
            "{\"timestamp\":[1764,471234,56789],\"token\":\"0123456789abcdef0123456789abcdef\"}\u{1}"
        );
    }

    #[test]
    fn delivery_key_order_and_data_verbatim() {
        let p = Publish::from_json(
            r#"{"data":{"b":1,"a":[1,2]},"message_id":"m1","topic":"t","event":"e"}"#,
        )
        .unwrap();
        let bytes = p.encode_delivery(Timestamp::from_parts(1, 2, 3));
        assert_eq!(
            text(&bytes),
            "{\"timestamp\":[1,2,3],\"topic\":\"t\",\"event\":\"e\",\"message_id\":\"m1\",\"data\":{\"b\":1,\"a\":[1,2]}}\u{1}"
        );
        let parsed = ServerMessage::parse(text(&bytes).trim_end_matches('\u{1}')).unwrap();
        let ServerMessage::Delivery(d) = parsed else {
            panic!("not a delivery")
        };
        assert_eq!(d.topic, "t");
        assert_eq!(d.data, "{\"b\":1,\"a\":[1,2]}");
    }

    #[test]
    fn publish_defaults_and_escaping() {
        let p = Publish::from_json(r#"{"topic":"t\"q"}"#).unwrap();
        assert_eq!(p.event, "");
        assert_eq!(p.message_id, "");
        assert_eq!(p.data.get(), "null");
        let d = p.encode_delivery(Timestamp::from_parts(0, 0, 0));
        assert_eq!(text(&d), "{\"timestamp\":[0,0,0],\"topic\":\"t\\\"q\",\"event\":\"\",\"message_id\":\"\",\"data\":null}\u{1}");
        let p = Publish::from_json(r#"{"topic":"t","message_id":42,"key":"k"}"#).unwrap();
        assert_eq!(p.message_id, "42");
        assert_eq!(p.key.as_deref(), Some("k"));
        assert!(!text(&p.encode_delivery(Timestamp::now())).contains("\"key\""));
    }

    #[test]
    fn publish_errors() {
        let check = |json: &str, code: ErrorCode| {
            assert_eq!(Publish::from_json(json).unwrap_err().code, code, "{json}");
        };
        check("{", ErrorCode::BadJson);
        check("[1]", ErrorCode::BadJson);
        check(r#"{"data":1}"#, ErrorCode::BadJson);
        check(r#"{"topic":""}"#, ErrorCode::BadTopic);
        check(r#"{"topic":5}"#, ErrorCode::BadTopic);
        check(r#"{"topic":"t","event":{}}"#, ErrorCode::BadJson);
    }

    #[test]
    fn hostile_data_is_bad_json() {
        let nested = |depth: usize| format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
        let publish = |data: &str| Publish::from_json(&format!(r#"{{"topic":"t","data":{data}}}"#));
        // The limit itself is fine, one more is not; objects count like arrays.
        assert!(publish(&nested(MAX_DATA_DEPTH)).is_ok());
        let err = publish(&nested(MAX_DATA_DEPTH + 1)).unwrap_err();
        assert_eq!(err.code, ErrorCode::BadJson);
        assert!(err.reason.contains("deeper than 64"), "{}", err.reason);
        let objects = format!("{}1{}", r#"{"a":"#.repeat(65), "}".repeat(65));
        assert_eq!(publish(&objects).unwrap_err().code, ErrorCode::BadJson);
        assert!(publish(&nested(30_000)).is_err());
        // Brackets and quotes inside strings are text, not nesting.
        let text = format!(r#"["{}\"{}"]"#, "[".repeat(100), "{".repeat(100));
        assert!(publish(&text).is_ok());
        // Numbers a double cannot hold; a tiny one is merely rounded to zero.
        for bad in [
            "1e999999",
            "-1E400",
            "[1,{\"x\":2.5e308}]",
            &"9".repeat(400),
        ] {
            let err = publish(bad).unwrap_err();
            assert_eq!(err.code, ErrorCode::BadJson, "{bad}");
            assert!(err.reason.contains("too large"), "{}", err.reason);
        }
        for good in [
            "1e308",
            "-1.7976931348623157e308",
            "1e-999999",
            "123456789012345678901234567890",
            "\"1e999999\"",
        ] {
            assert!(publish(good).is_ok(), "{good}");
        }
        // Every way in checks: Publish::new and the persistent X3 form.
        assert!(Publish::new("t", "", "", "1e999").is_err());
        let x3 = format!(
            r#"{{"action":"publish","data":{{"topic":"t","data":{}}}}}"#,
            nested(65)
        );
        assert_eq!(
            ClientMessage::parse(&x3).unwrap_err().code,
            ErrorCode::BadJson
        );
    }

    #[test]
    fn client_messages_parse() {
        let ok = |s: &str, m: ClientMessage| assert_eq!(ClientMessage::parse(s).unwrap(), m, "{s}");
        ok(
            r#"{"action":"subscribe","data":"news"}"#,
            ClientMessage::Subscribe("news".into()),
        );
        ok(
            r#"{"data":"news","action":"unsubscribe"}"#,
            ClientMessage::Unsubscribe("news".into()),
        );
        ok("PING", ClientMessage::Ping);
        ok("PONG", ClientMessage::Pong);
        ok(
            r#"{"action":"resume","data":"abc"}"#,
            ClientMessage::Resume(Resume::Token("abc".into())),
        );
        ok(
            r#"{"action":"resume","data":{"token":"abc","topics":{"b":{"epoch":"e2","offset":7},"a":{"offset":0,"epoch":"e1"}}}}"#,
            ClientMessage::Resume(Resume::Positions {
                token: "abc".into(),
                topics: vec![
                    TopicPosition {
                        topic: "a".into(),
                        epoch: "e1".into(),
                        offset: 0,
                    },
                    TopicPosition {
                        topic: "b".into(),
                        epoch: "e2".into(),
                        offset: 7,
                    },
                ],
            }),
        );
        ok(
            r#"{"action":"options","data":{"offsets":true,"future":1}}"#,
            ClientMessage::Options {
                offsets: Some(true),
            },
        );
        let m = ClientMessage::parse(r#"{"action":"publish","data":{"topic":"t","data":[1]}}"#)
            .unwrap();
        assert!(matches!(
            m,
            ClientMessage::Publish {
                one_shot: false,
                ..
            }
        ));

        let err = |s: &str, code: ErrorCode| {
            assert_eq!(ClientMessage::parse(s).unwrap_err().code, code, "{s}");
        };
        err("hello", ErrorCode::BadJson);
        err("{\"action\":", ErrorCode::BadJson);
        err(r#"{"action":"dance","data":"x"}"#, ErrorCode::UnknownAction);
        err(r#"{"action":7}"#, ErrorCode::UnknownAction);
        err(r#"{"data":"x"}"#, ErrorCode::UnknownAction);
        err(
            r#"{"action":"resume","data":{"topics":{}}}"#,
            ErrorCode::UnknownSession,
        );
        err(
            r#"{"action":"resume","data":{"token":"t","topics":{"a":{"epoch":"e","offset":-1}}}}"#,
            ErrorCode::UnknownSession,
        );
        err(r#"{"action":"options","data":[1]}"#, ErrorCode::BadJson);
        err(r#"{"action":"subscribe"}"#, ErrorCode::BadTopic);
        err(r#"{"action":"subscribe","data":""}"#, ErrorCode::BadTopic);
        err(
            r#"{"action":"subscribe","data":["x"]}"#,
            ErrorCode::BadTopic,
        );
        err(
            &format!(r#"{{"action":"subscribe","data":"{}"}}"#, "x".repeat(257)),
            ErrorCode::BadTopic,
        );
    }

    #[test]
    fn client_messages_round_trip_through_encode() {
        for m in [
            ClientMessage::Subscribe("a \"b\"".into()),
            ClientMessage::Unsubscribe("ü".into()),
            ClientMessage::Ping,
            ClientMessage::Resume(Resume::Token("t".into())),
            ClientMessage::Resume(Resume::Positions {
                token: "t".into(),
                topics: vec![TopicPosition {
                    topic: "x \"y\"".into(),
                    epoch: "e".into(),
                    offset: 42,
                }],
            }),
            ClientMessage::Options {
                offsets: Some(true),
            },
            ClientMessage::Publish {
                publish: Publish::new("t", "e", "1", "{\"x\":1}").unwrap(),
                one_shot: false,
            },
        ] {
            let mut buf = BytesMut::new();
            m.encode(&mut buf);
            assert_eq!(buf.last(), Some(&0));
            let s = std::str::from_utf8(&buf[..buf.len() - 1]).unwrap();
            assert_eq!(ClientMessage::parse(s).unwrap(), m);
        }
    }

    #[test]
    fn server_messages_round_trip() {
        let ts = Timestamp::from_parts(1, 2, 3);
        for m in [
            ServerMessage::Ack,
            ServerMessage::Ping,
            ServerMessage::Hello {
                timestamp: ts,
                token: "ab".into(),
            },
            ServerMessage::Error {
                timestamp: ts,
                code: "bad_json".into(),
                reason: "r \"q\"".into(),
            },
            ServerMessage::Resumed {
                timestamp: ts,
                token: "ab".into(),
                recovered: true,
                missed: 12,
            },
            ServerMessage::Subscribed {
                timestamp: ts,
                topic: "t".into(),
                epoch: "e".into(),
                offset: 3,
            },
            ServerMessage::Delivery(Delivery {
                timestamp: ts,
                topic: "t".into(),
                event: "e".into(),
                message_id: "m".into(),
                data: "[true]".into(),
                offset: None,
            }),
            ServerMessage::Delivery(Delivery {
                timestamp: ts,
                topic: "t".into(),
                event: "e".into(),
                message_id: "m".into(),
                data: "{}".into(),
                offset: Some(9),
            }),
        ] {
            let b = m.to_bytes();
            assert_eq!(b.last(), Some(&1));
            assert_eq!(
                ServerMessage::parse(std::str::from_utf8(&b[..b.len() - 1]).unwrap()).unwrap(),
                m
            );
        }
    }

    #[test]
    fn x1_frames_have_the_documented_key_order() {
        let ts = Timestamp::from_parts(1, 2, 3);
        let subscribed = ServerMessage::Subscribed {
            timestamp: ts,
            topic: "t".into(),
            epoch: "e".into(),
            offset: 3,
        };
        assert_eq!(
            text(&subscribed.to_bytes()),
            "{\"timestamp\":[1,2,3],\"subscribed\":\"t\",\"epoch\":\"e\",\"offset\":3}\u{1}"
        );
        let resumed = ServerMessage::Resumed {
            timestamp: ts,
            token: "ab".into(),
            recovered: false,
            missed: 0,
        };
        assert_eq!(
            text(&resumed.to_bytes()),
            "{\"timestamp\":[1,2,3],\"resumed\":\"ab\",\"recovered\":false,\"missed\":0}\u{1}"
        );
        let publish = Publish::new("t", "e", "1", "[1]").unwrap();
        let plain = publish.encode_delivery(ts);
        let with = publish.encode_delivery_at(ts, Some(9));
        assert_eq!(
            text(&with),
            format!("{},\"offset\":9}}\u{1}", &text(&plain)[..plain.len() - 2])
        );
    }

    #[test]
    fn legacy_hello_with_char_code_token_parses() {
        let m = ServerMessage::parse(r#"{"timestamp":[1,2,3],"token":[97,98]}"#).unwrap();
        assert_eq!(
            m,
            ServerMessage::Hello {
                timestamp: Timestamp::from_parts(1, 2, 3),
                token: "ab".into()
            }
        );
    }

    #[test]
    fn error_codes_round_trip_and_close_rules() {
        for c in ErrorCode::ALL {
            assert_eq!(c.as_str().parse::<ErrorCode>(), Ok(c));
        }
        let open: Vec<_> = ErrorCode::ALL
            .into_iter()
            .filter(|c| !c.closes_connection())
            .collect();
        assert_eq!(
            open,
            [
                ErrorCode::BadJson,
                ErrorCode::UnknownAction,
                ErrorCode::BadTopic,
                ErrorCode::UnknownSession,
                ErrorCode::Unavailable
            ]
        );
    }
}
