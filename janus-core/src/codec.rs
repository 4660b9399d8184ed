//! The framing of protocol P1 as `tokio_util::codec` decoders and encoders.
//!
//! ```text
//!  client → server:  <regular-socket/> 00 {"action":"subscribe","data":"news"} 00
//!                    PUBLISH 00 {"topic":"news",...} (00 | end of stream)
//!  server → client:  {"timestamp":[..],"token":".."} 01  ACK 01  {"timestamp":..,"topic":..} 01
//! ```
//!
//! TCP splits and coalesces at will, so a decoder buffers until it sees a
//! terminator and remembers how far it has already searched (a frame arriving
//! one byte at a time is scanned once, not quadratically). A frame longer than
//! the maximum is an error whether or not its terminator has arrived, so a
//! client can never make the server buffer more than `max_frame` bytes.
//!
//! [`ServerCodec`] is the server's side: it decodes client frames into
//! [`ClientMessage`]s, including the two-frame `PUBLISH` form. A `PUBLISH`
//! body is complete as soon as its bytes form one JSON object, whatever
//! follows (a `0x00`, the end of the stream, or nothing yet): 2009
//! publishers do not terminate it, and some wait for the server to close
//! (protocol P5). [`JsonEnd`] finds that end incrementally, so a body arriving
//! byte by byte is scanned once, and it notices the first byte that means the
//! bytes can never become a JSON object, so such a body is answered at once. Client mistakes that keep the
//! connection open come out as `Ok(Some(Err(ProtocolError)))`; only mistakes
//! that end the connection are decoder errors ([`CodecError`]).
//! [`ClientCodec`] is the client's (and the load bot's) side.

use std::io;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::message::{ClientMessage, ErrorCode, ProtocolError, Publish, ServerMessage};
use crate::{CLIENT_TERMINATOR, DEFAULT_MAX_FRAME, REGULAR_SOCKET_MARKER, SERVER_TERMINATOR};

/// A mistake that ends the connection.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// A frame exceeded the maximum length.
    #[error("frame longer than {max} bytes")]
    FrameTooLarge {
        /// The configured maximum.
        max: usize,
    },
    /// A frame that cannot be read at all (not UTF-8, or not a server frame).
    #[error("bad frame: {0}")]
    BadFrame(String),
    /// The underlying stream failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl CodecError {
    /// The P7 error frame to send before closing, if one applies.
    pub fn protocol_error(&self) -> Option<ProtocolError> {
        match self {
            CodecError::FrameTooLarge { max } => Some(ProtocolError::new(
                ErrorCode::FrameTooLarge,
                format!("frame longer than {max} bytes"),
            )),
            CodecError::BadFrame(why) => Some(ProtocolError::new(ErrorCode::BadFrame, why.clone())),
            CodecError::Io(_) => None,
        }
    }
}

/// Splits a byte stream at one terminator byte, enforcing a maximum frame length.
#[derive(Debug, Clone)]
struct Splitter {
    terminator: u8,
    max_frame: usize,
    /// How far `buf` has been searched without finding a terminator.
    searched: usize,
}

impl Splitter {
    fn new(terminator: u8, max_frame: usize) -> Self {
        Self {
            terminator,
            max_frame,
            searched: 0,
        }
    }

    /// The next complete frame without its terminator, if one has arrived.
    fn next_frame(&mut self, buf: &mut BytesMut) -> Result<Option<BytesMut>, CodecError> {
        let start = self.searched.min(buf.len());
        match memchr::memchr(self.terminator, &buf[start..]) {
            Some(offset) => {
                let end = start + offset;
                self.searched = 0;
                if end > self.max_frame {
                    return Err(CodecError::FrameTooLarge {
                        max: self.max_frame,
                    });
                }
                let frame = buf.split_to(end);
                buf.advance(1);
                Ok(Some(frame))
            }
            None => {
                self.searched = buf.len();
                if buf.len() > self.max_frame {
                    return Err(CodecError::FrameTooLarge {
                        max: self.max_frame,
                    });
                }
                Ok(None)
            }
        }
    }
}

/// Trims ASCII whitespace and a leading `<regular-socket/>` marker.
fn payload_text(frame: &[u8]) -> Result<&str, CodecError> {
    let text = std::str::from_utf8(frame)
        .map_err(|e| CodecError::BadFrame(format!("frame is not UTF-8: {e}")))?;
    let mut text = text.trim_matches(|c: char| c.is_ascii_whitespace());
    // Some clients glue the marker to the next frame without its 0x00.
    while let Some(rest) = text.strip_prefix("<regular-socket/>") {
        text = rest.trim_start_matches(|c: char| c.is_ascii_whitespace());
    }
    debug_assert!(REGULAR_SOCKET_MARKER == b"<regular-socket/>");
    Ok(text)
}

/// Where one JSON object ends in a byte stream, and whether the bytes so far
/// can still become one, found incrementally: the state carries over between
/// calls and no byte is scanned twice. It checks the grammar only (UTF-8 and
/// what the object holds are checked once it is complete) and is never
/// stricter than `serde_json`, which parses the complete object.
#[derive(Debug, Clone, Default)]
struct JsonEnd {
    /// Bytes of the buffer already scanned.
    scanned: usize,
    /// One bit per open container, the innermost lowest: set for an object.
    objects: u128,
    /// Containers open.
    depth: u32,
    /// What the grammar allows next, outside a string, number or literal.
    next: Next,
    /// The string, number or literal being read.
    lexeme: Lexeme,
}

/// What may come next between tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Next {
    /// The body itself: an object.
    #[default]
    Body,
    /// A value (after `:` or after `,` in an array).
    Value,
    /// A value or `]` (after `[`).
    ValueOrEnd,
    /// A key or `}` (after `{`).
    KeyOrEnd,
    /// A key (after `,` in an object).
    Key,
    /// `:` after a key.
    Colon,
    /// `,` or the end of the container (after a value).
    CommaOrEnd,
}

/// A token longer than one byte, part read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Lexeme {
    #[default]
    None,
    /// A string (`key`: an object's key); `escape`: after a backslash (1) or
    /// the hex digits of a `\u` escape still due (2..=5 means 1..=4).
    String {
        key: bool,
        escape: u8,
    },
    Number(Num),
    /// `true`, `false` or `null`: the bytes still due.
    Literal(&'static [u8]),
}

/// Where a number is in JSON's grammar: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Num {
    Minus,
    Zero,
    Int,
    Dot,
    Frac,
    E,
    ESign,
    Exp,
}

impl Num {
    /// The state after `b`, if `b` continues the number.
    fn step(self, b: u8) -> Option<Num> {
        use Num::*;
        match (self, b) {
            (Minus, b'0') => Some(Zero),
            (Minus | Int, b'1'..=b'9') | (Int, b'0') => Some(Int),
            (Zero | Int, b'.') => Some(Dot),
            (Dot | Frac, b'0'..=b'9') => Some(Frac),
            (Zero | Int | Frac, b'e' | b'E') => Some(E),
            (E, b'+' | b'-') => Some(ESign),
            (E | ESign | Exp, b'0'..=b'9') => Some(Exp),
            _ => None,
        }
    }

    /// Whether the number may end here.
    fn complete(self) -> bool {
        matches!(self, Num::Zero | Num::Int | Num::Frac | Num::Exp)
    }
}

/// What [`JsonEnd::scan`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scan {
    /// The object ends right before this position.
    Complete(usize),
    /// A `0x00` at this position came before the object was complete.
    Cut(usize),
    /// The byte at this position means the bytes can never become a JSON
    /// object (at 0: the body is not an object).
    Invalid(usize),
    /// More bytes are needed.
    Incomplete,
}

impl JsonEnd {
    /// Containers nested deeper than this are refused, as `serde_json` does.
    const MAX_DEPTH: u32 = 128;

    /// Scans `buf`, which holds the body from its first byte and grows between calls.
    fn scan(&mut self, buf: &[u8]) -> Scan {
        for (i, &b) in buf.iter().enumerate().skip(self.scanned) {
            let verdict = if b == 0 {
                Some(Scan::Cut(i))
            } else {
                self.step(b, i)
            };
            if let Some(verdict) = verdict {
                *self = JsonEnd::default();
                return verdict;
            }
        }
        self.scanned = buf.len();
        Scan::Incomplete
    }

    /// Takes byte `b` at position `i`; `Some` once the body is decided.
    fn step(&mut self, b: u8, i: usize) -> Option<Scan> {
        match self.lexeme {
            Lexeme::String { key, escape } => {
                let escape = match (escape, b) {
                    (0, b'"') => {
                        self.lexeme = Lexeme::None;
                        self.next = if key { Next::Colon } else { Next::CommaOrEnd };
                        return None;
                    }
                    (0, b'\\') => 1,
                    (0, 0x20..) => 0,
                    (1, b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => 0,
                    (1, b'u') => 5,
                    (2..=5, _) if b.is_ascii_hexdigit() => escape - 1 - u8::from(escape == 2),
                    _ => return Some(Scan::Invalid(i)),
                };
                self.lexeme = Lexeme::String { key, escape };
                return None;
            }
            Lexeme::Number(num) => match num.step(b) {
                Some(num) => {
                    self.lexeme = Lexeme::Number(num);
                    return None;
                }
                None if num.complete() => {
                    self.lexeme = Lexeme::None;
                    self.next = Next::CommaOrEnd;
                }
                None => return Some(Scan::Invalid(i)),
            },
            Lexeme::Literal(rest) => {
                if rest.first() != Some(&b) {
                    return Some(Scan::Invalid(i));
                }
                self.lexeme = match &rest[1..] {
                    [] => {
                        self.next = Next::CommaOrEnd;
                        Lexeme::None
                    }
                    more => Lexeme::Literal(more),
                };
                return None;
            }
            Lexeme::None => {}
        }
        if matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
            return None;
        }
        let in_object = self.objects & 1 == 1;
        match (self.next, b) {
            (Next::Body, b'{') => return self.open(true, i),
            (Next::Body, _) => return Some(Scan::Invalid(i)),
            (Next::ValueOrEnd, b']') | (Next::KeyOrEnd, b'}') => return self.close(i),
            (Next::CommaOrEnd, b']') if !in_object => return self.close(i),
            (Next::CommaOrEnd, b'}') if in_object => return self.close(i),
            (Next::CommaOrEnd, b',') => {
                self.next = if in_object { Next::Key } else { Next::Value };
            }
            (Next::Colon, b':') => self.next = Next::Value,
            (Next::KeyOrEnd | Next::Key, b'"') => {
                self.lexeme = Lexeme::String {
                    key: true,
                    escape: 0,
                };
            }
            (Next::Value | Next::ValueOrEnd, _) => {
                self.lexeme = match b {
                    b'{' => return self.open(true, i),
                    b'[' => return self.open(false, i),
                    b'"' => Lexeme::String {
                        key: false,
                        escape: 0,
                    },
                    b'-' => Lexeme::Number(Num::Minus),
                    b'0' => Lexeme::Number(Num::Zero),
                    b'1'..=b'9' => Lexeme::Number(Num::Int),
                    b't' => Lexeme::Literal(b"rue"),
                    b'f' => Lexeme::Literal(b"alse"),
                    b'n' => Lexeme::Literal(b"ull"),
                    _ => return Some(Scan::Invalid(i)),
                };
            }
            _ => return Some(Scan::Invalid(i)),
        }
        None
    }

    fn open(&mut self, object: bool, i: usize) -> Option<Scan> {
        if self.depth == Self::MAX_DEPTH {
            return Some(Scan::Invalid(i));
        }
        self.objects = (self.objects << 1) | u128::from(object);
        self.depth += 1;
        self.next = if object {
            Next::KeyOrEnd
        } else {
            Next::ValueOrEnd
        };
        None
    }

    fn close(&mut self, i: usize) -> Option<Scan> {
        self.objects >>= 1;
        self.depth -= 1;
        self.next = Next::CommaOrEnd;
        (self.depth == 0).then_some(Scan::Complete(i + 1))
    }
}

/// The server side of the protocol: decodes client frames, encodes server frames.
#[derive(Debug, Clone)]
pub struct ServerCodec {
    splitter: Splitter,
    /// A `PUBLISH` frame was seen; its JSON body comes next.
    publish_pending: bool,
    /// A `PUBLISH` body was refused before its end: the rest of it, up to
    /// its terminator, is skipped.
    skip_body: bool,
    /// How far the pending `PUBLISH` body has been scanned.
    body: JsonEnd,
}

impl Default for ServerCodec {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_FRAME)
    }
}

impl ServerCodec {
    /// A codec accepting client frames of at most `max_frame` bytes.
    pub fn new(max_frame: usize) -> Self {
        Self {
            splitter: Splitter::new(CLIENT_TERMINATOR, max_frame),
            publish_pending: false,
            skip_body: false,
            body: JsonEnd::default(),
        }
    }

    /// Whether a `PUBLISH` keyword was read and its body is still awaited.
    pub fn publish_pending(&self) -> bool {
        self.publish_pending
    }

    /// Decodes the body of a `PUBLISH`: one JSON object, complete as soon as
    /// its closing brace arrives. Markers, empty frames and whitespace before
    /// it are skipped; a body that is not an object, or whose bytes can never
    /// become one, is rejected as soon as that shows, so a publisher that
    /// waits for the close is answered at once.
    fn decode_publish_body(
        &mut self,
        buf: &mut BytesMut,
        eof: bool,
    ) -> Result<Option<Result<ClientMessage, ProtocolError>>, CodecError> {
        if self.body.scanned == 0 {
            loop {
                let skip = buf
                    .iter()
                    .take_while(|b| **b == CLIENT_TERMINATOR || b.is_ascii_whitespace())
                    .count();
                buf.advance(skip);
                if buf.starts_with(REGULAR_SOCKET_MARKER) {
                    buf.advance(REGULAR_SOCKET_MARKER.len());
                    continue;
                }
                if !buf.is_empty() && REGULAR_SOCKET_MARKER.starts_with(buf) && !eof {
                    return Ok(None);
                }
                break;
            }
            self.splitter.searched = 0;
            match buf.first() {
                None if eof => {
                    self.publish_pending = false;
                    return Ok(Some(Err(ProtocolError::new(
                        ErrorCode::BadJson,
                        "the stream ended before the PUBLISH body",
                    )
                    .closing())));
                }
                None => return Ok(None),
                Some(_) => {}
            }
        }
        match self.body.scan(buf) {
            Scan::Complete(end) if end > self.splitter.max_frame => {
                Err(CodecError::FrameTooLarge {
                    max: self.splitter.max_frame,
                })
            }
            Scan::Complete(end) => {
                let body = buf.split_to(end);
                if buf.first() == Some(&CLIENT_TERMINATOR) {
                    buf.advance(1);
                }
                let text = std::str::from_utf8(&body)
                    .map_err(|e| CodecError::BadFrame(format!("frame is not UTF-8: {e}")))?;
                Ok(Some(self.publish_body(text)))
            }
            Scan::Cut(at) => {
                buf.advance(at + 1);
                self.publish_pending = false;
                Ok(Some(Err(ProtocolError::new(
                    ErrorCode::BadJson,
                    "the PUBLISH body ended (0x00) before its JSON object was complete",
                )
                .closing())))
            }
            Scan::Invalid(at) => {
                let byte = buf.get(at).copied().unwrap_or_default();
                buf.advance(at);
                self.skip_body = true;
                self.publish_pending = false;
                let reason = match (at, byte) {
                    (0, _) => "publish body must be a JSON object".to_owned(),
                    (_, b' '..=b'~') => format!(
                        "the PUBLISH body can never become valid JSON: unexpected '{}' at byte {}",
                        char::from(byte),
                        at + 1
                    ),
                    _ => format!(
                        "the PUBLISH body can never become valid JSON: unexpected byte 0x{byte:02x} at byte {}",
                        at + 1
                    ),
                };
                Ok(Some(Err(
                    ProtocolError::new(ErrorCode::BadJson, reason).closing()
                )))
            }
            Scan::Incomplete if buf.len() > self.splitter.max_frame => {
                Err(CodecError::FrameTooLarge {
                    max: self.splitter.max_frame,
                })
            }
            Scan::Incomplete if eof => {
                buf.clear();
                self.body = JsonEnd::default();
                self.publish_pending = false;
                Ok(Some(Err(ProtocolError::new(
                    ErrorCode::BadJson,
                    "the stream ended before the PUBLISH body's JSON object was complete",
                )
                .closing())))
            }
            Scan::Incomplete => Ok(None),
        }
    }

    fn publish_body(&mut self, text: &str) -> Result<ClientMessage, ProtocolError> {
        self.publish_pending = false;
        match Publish::from_json(text) {
            Ok(publish) => Ok(ClientMessage::Publish {
                publish,
                one_shot: true,
            }),
            // A one-shot publisher's connection closes whatever happened.
            Err(e) => Err(e.closing()),
        }
    }
}

impl Decoder for ServerCodec {
    type Item = Result<ClientMessage, ProtocolError>;
    type Error = CodecError;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Self::Item>, CodecError> {
        loop {
            if self.skip_body {
                match memchr::memchr(CLIENT_TERMINATOR, buf) {
                    Some(end) => {
                        buf.advance(end + 1);
                        self.skip_body = false;
                    }
                    None => {
                        buf.clear();
                        return Ok(None);
                    }
                }
            }
            if self.publish_pending {
                return self.decode_publish_body(buf, false);
            }
            let Some(frame) = self.splitter.next_frame(buf)? else {
                return Ok(None);
            };
            let text = payload_text(&frame)?;
            if text.is_empty() {
                continue;
            }
            if text == "PUBLISH" {
                self.publish_pending = true;
                continue;
            }
            return Ok(Some(ClientMessage::parse(text)));
        }
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Self::Item>, CodecError> {
        if let Some(item) = self.decode(buf)? {
            return Ok(Some(item));
        }
        if self.publish_pending {
            return self.decode_publish_body(buf, true);
        }
        // An unterminated fragment from a client that went away is not a request.
        buf.clear();
        Ok(None)
    }
}

impl Encoder<ServerMessage> for ServerCodec {
    type Error = io::Error;

    fn encode(&mut self, item: ServerMessage, dst: &mut BytesMut) -> io::Result<()> {
        item.encode(dst);
        Ok(())
    }
}

/// Pre-encoded frames (deliveries) pass through unchanged.
impl Encoder<Bytes> for ServerCodec {
    type Error = io::Error;

    fn encode(&mut self, item: Bytes, dst: &mut BytesMut) -> io::Result<()> {
        dst.put_slice(&item);
        Ok(())
    }
}

/// The client side of the protocol: decodes server frames, encodes client frames.
#[derive(Debug, Clone)]
pub struct ClientCodec {
    splitter: Splitter,
}

impl Default for ClientCodec {
    fn default() -> Self {
        Self::new(16 * 1024 * 1024)
    }
}

impl ClientCodec {
    /// A codec accepting server frames of at most `max_frame` bytes.
    pub fn new(max_frame: usize) -> Self {
        Self {
            splitter: Splitter::new(SERVER_TERMINATOR, max_frame),
        }
    }

    /// The next raw server frame payload (terminator removed), without parsing it.
    ///
    /// # Errors
    /// [`CodecError::FrameTooLarge`] past the maximum.
    pub fn decode_raw(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, CodecError> {
        Ok(self.splitter.next_frame(buf)?.map(BytesMut::freeze))
    }
}

impl Decoder for ClientCodec {
    type Item = ServerMessage;
    type Error = CodecError;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<ServerMessage>, CodecError> {
        let Some(frame) = self.splitter.next_frame(buf)? else {
            return Ok(None);
        };
        let text = std::str::from_utf8(&frame)
            .map_err(|e| CodecError::BadFrame(format!("server frame is not UTF-8: {e}")))?;
        ServerMessage::parse(text)
            .map(Some)
            .map_err(CodecError::BadFrame)
    }
}

impl Encoder<ClientMessage> for ClientCodec {
    type Error = io::Error;

    fn encode(&mut self, item: ClientMessage, dst: &mut BytesMut) -> io::Result<()> {
        item.encode(dst);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUB: &[u8] = b"{\"action\":\"subscribe\",\"data\":\"news\"}\0";

    /// Decodes everything in `input` (then end of stream) and returns the items.
    fn decode_all(input: &[u8]) -> Vec<Result<ClientMessage, ProtocolError>> {
        let mut codec = ServerCodec::new(1024);
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        while let Some(item) = codec.decode(&mut buf).unwrap() {
            out.push(item);
        }
        while let Some(item) = codec.decode_eof(&mut buf).unwrap() {
            out.push(item);
        }
        out
    }

    fn check(input: &[u8], expected: &[ClientMessage]) {
        let got: Vec<_> = decode_all(input).into_iter().map(Result::unwrap).collect();
        assert_eq!(got, expected, "input {:?}", String::from_utf8_lossy(input));
    }

    fn publish_with_data(topic: &str, data: &str) -> ClientMessage {
        ClientMessage::Publish {
            publish: Publish::new(topic, "", "", data).unwrap(),
            one_shot: true,
        }
    }

    fn publish(topic: &str, data: &str, one_shot: bool) -> ClientMessage {
        ClientMessage::Publish {
            publish: Publish::new(topic, "e", "1", data).unwrap(),
            one_shot,
        }
    }

    #[test]
    fn table() {
        let sub = ClientMessage::Subscribe("news".into());
        check(SUB, std::slice::from_ref(&sub));
        check(b"<regular-socket/>\0", &[]);
        check(
            b"\0\0<regular-socket/>\0PING\0PONG\0",
            &[ClientMessage::Ping, ClientMessage::Pong],
        );
        check(
            b"<regular-socket/>{\"action\":\"subscribe\",\"data\":\"news\"}\0",
            std::slice::from_ref(&sub),
        );
        check(b"PING\r\n\0", &[ClientMessage::Ping]);
        let body =
            b"{\"topic\":\"news\",\"event\":\"e\",\"message_id\":\"1\",\"data\":{\"k\":[1]}}";
        // Terminated by NUL, and by end of stream as 2009 publishers do.
        let mut nul = b"<regular-socket/>\0PUBLISH\0".to_vec();
        nul.extend_from_slice(body);
        nul.push(0);
        check(&nul, &[publish("news", "{\"k\":[1]}", true)]);
        check(
            &nul[..nul.len() - 1],
            &[publish("news", "{\"k\":[1]}", true)],
        );
        // Any key order.
        check(
            b"PUBLISH\0{\"data\":5,\"message_id\":\"1\",\"event\":\"e\",\"topic\":\"t\"}",
            &[publish("t", "5", true)],
        );
    }

    #[test]
    fn every_strict_prefix_needs_more() {
        // A PUBLISH body is complete at its closing brace (P5), NUL or not.
        let frames: [&[u8]; 3] = [
            SUB,
            b"PING\0",
            b"<regular-socket/>\0PUBLISH\0{\"topic\":\"t\"}",
        ];
        for frame in frames {
            for cut in 0..frame.len() {
                let mut codec = ServerCodec::new(1024);
                let mut buf = BytesMut::from(&frame[..cut]);
                assert!(
                    codec.decode(&mut buf).unwrap().is_none(),
                    "prefix {cut} of {frame:?}"
                );
            }
            let mut sc = ClientCodec::default();
            let hello = b"{\"timestamp\":[1,2,3],\"token\":\"ab\"}\x01";
            for cut in 0..hello.len() {
                let mut buf = BytesMut::from(&hello[..cut]);
                assert!(sc.decode(&mut buf).unwrap().is_none());
            }
        }
    }

    #[test]
    fn byte_by_byte_equals_all_at_once() {
        let mut input = Vec::new();
        for _ in 0..3 {
            input.extend_from_slice(b"<regular-socket/>\0");
            input.extend_from_slice(SUB);
            input.extend_from_slice(b"{\"action\":\"unsubscribe\",\"data\":\"news\"}\0");
        }
        let whole = decode_all(&input);
        assert_eq!(whole.len(), 6);
        let mut codec = ServerCodec::new(1024);
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for b in &input {
            buf.put_u8(*b);
            while let Some(item) = codec.decode(&mut buf).unwrap() {
                got.push(item);
            }
        }
        assert_eq!(got, whole);
    }

    /// Decodes `input` without an end of stream: what a server that is still
    /// waiting for more bytes would have handled.
    fn decode_open(input: &[u8]) -> Vec<Result<ClientMessage, ProtocolError>> {
        let mut codec = ServerCodec::new(1024);
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        while let Some(item) = codec.decode(&mut buf).unwrap() {
            out.push(item);
        }
        out
    }

    #[test]
    fn a_publish_body_is_complete_at_its_closing_brace() {
        let tricky = b"{\"topic\":\"t\",\"data\":\"}{\\\"]\"}";
        let expected = || publish_with_data("t", "\"}{\\\"]\"");
        // No terminator and no end of stream: handled at once.
        let mut input = b"<regular-socket/>\0PUBLISH\0".to_vec();
        input.extend_from_slice(tricky);
        assert_eq!(decode_open(&input), [Ok(expected())]);
        // Byte by byte, the same.
        let mut codec = ServerCodec::new(1024);
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for b in &input {
            buf.put_u8(*b);
            while let Some(item) = codec.decode(&mut buf).unwrap() {
                got.push(item);
            }
        }
        assert_eq!(got, [Ok(expected())]);
        // Whatever follows the body does not matter.
        input.extend_from_slice(b"garbage");
        assert_eq!(decode_open(&input)[0], Ok(expected()));
        // Markers, empty frames and whitespace before the body are skipped.
        let mut input = b"PUBLISH\0\0 <regular-socket/>\0\n".to_vec();
        input.extend_from_slice(tricky);
        assert_eq!(decode_open(&input), [Ok(expected())]);
    }

    #[test]
    fn a_publish_body_cut_short_is_bad_json() {
        for input in [
            &b"PUBLISH\0{\"topic\":\"t\",\0"[..],
            b"PUBLISH\0{\"topic\":\"t\"",
            b"PUBLISH\0[1,2]\0",
            b"PUBLISH\0nope",
            b"PUBLISH\0",
        ] {
            let items = decode_all(input);
            assert_eq!(items.len(), 1, "{input:?}");
            let err = items[0].as_ref().unwrap_err();
            assert_eq!(err.code, ErrorCode::BadJson, "{input:?}");
            assert!(err.close, "{input:?}");
        }
        // An unterminated body longer than the frame limit is fatal.
        let mut codec = ServerCodec::new(16);
        let mut buf = BytesMut::from(&b"PUBLISH\0{\"topic\":\"xxxxxxxxxxxxxxxxx"[..]);
        assert!(matches!(
            codec.decode(&mut buf),
            Err(CodecError::FrameTooLarge { max: 16 })
        ));
    }

    /// What `serde_json` makes of `bytes`: `Some(true)` a value, `Some(false)`
    /// a value that can never come, `None` one that needs more bytes.
    fn serde_verdict(bytes: &[u8]) -> Option<bool> {
        match serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
            Ok(_) => Some(true),
            Err(e) if e.is_eof() => None,
            Err(_) => Some(false),
        }
    }

    /// The scanner agrees with `serde_json` on every body made by changing
    /// one byte of a valid one, and on every prefix of those.
    #[test]
    fn the_body_scanner_agrees_with_serde_json() {
        let bodies: [&[u8]; 4] = [
            br#"{"topic":"t","event":"e","message_id":"1","data":{"a":[1,-2.5e+3,0,true,false,null,"x\u00e9\"\n"],"b":{},"c":[]}}"#,
            br#"{ "topic" : "t" , "data" : [ 0.5 , 1E9 , -0 , [ [ ] ] , { "k" : "v" } ] }"#,
            b"{\"topic\":\"t\",\"data\":\"\xc3\xa9\"}",
            br#"{"data":12e-3,"topic":"t"}"#,
        ];
        let alphabet = b"{}[]\":,0123-.eE+ tfnul\\/a\x01\x00\n";
        let mut checked = 0;
        for body in bodies {
            assert_eq!(serde_verdict(body), Some(true));
            for pos in 0..body.len() {
                for &with in alphabet {
                    let mut doc = body.to_vec();
                    doc[pos] = with;
                    for len in 1..=doc.len() {
                        let doc = &doc[..len];
                        let verdict = JsonEnd::default().scan(doc);
                        if doc[0] == b'{' && serde_verdict(doc) == Some(true) {
                            let Scan::Complete(end) = verdict else {
                                panic!("{doc:?}: {verdict:?}");
                            };
                            assert!(doc[end..].iter().all(u8::is_ascii_whitespace), "{doc:?}");
                        }
                        match verdict {
                            Scan::Complete(end) => {
                                assert_eq!(serde_verdict(&doc[..end]), Some(true), "{doc:?}");
                            }
                            Scan::Cut(at) => assert_eq!(doc[at], 0),
                            // Not an object (the codec skips the whitespace).
                            Scan::Invalid(at) if doc[..at].iter().all(u8::is_ascii_whitespace) => {
                                assert_ne!(doc[at], b'{');
                            }
                            Scan::Invalid(at) => {
                                // serde_json reads a `\u` escape's four bytes
                                // before it looks at them: give it four more.
                                let more = [&doc[..=at], b"0000"].concat();
                                assert_eq!(serde_verdict(&more), Some(false), "{doc:?} at {at}");
                            }
                            Scan::Incomplete => {
                                // serde_json calls a number cut after `-`,
                                // `.` or `e` invalid rather than unfinished.
                                let digit = [doc, b"0"].concat();
                                assert!(
                                    serde_verdict(doc).is_none() || serde_verdict(&digit).is_none(),
                                    "{doc:?}"
                                );
                            }
                        }
                        checked += 1;
                    }
                }
            }
        }
        assert!(checked > 100_000, "{checked}");
    }

    #[test]
    fn a_publish_body_that_can_never_be_json_is_answered_at_once() {
        // Without a terminator or an end of stream: a publisher waiting for
        // the close must not hang (P5).
        for input in [
            &b"PUBLISH\0[1,2]"[..],
            b"PUBLISH\0\"abc\"",
            b"PUBLISH\0nope",
            b"PUBLISH\0{nope",
            b"PUBLISH\0{\"topic\":\"p\",\"data\":[1}",
            b"PUBLISH\0{\"topic\":\"p\",\"data\":01}",
            b"PUBLISH\0{\"topic\":\"p\" \"data\":1",
        ] {
            let items = decode_open(input);
            assert_eq!(items.len(), 1, "{input:?}");
            let err = items[0].as_ref().unwrap_err();
            assert_eq!(err.code, ErrorCode::BadJson, "{input:?}");
            assert!(err.close, "{input:?}");
        }
        // Containers nested past serde_json's limit are refused as they come.
        let mut deep = b"PUBLISH\0{\"topic\":\"p\",\"data\":".to_vec();
        deep.extend_from_slice(&[b'['; 200]);
        let mut codec = ServerCodec::new(1024);
        let mut buf = BytesMut::from(&deep[..]);
        assert!(matches!(codec.decode(&mut buf), Ok(Some(Err(e))) if e.code == ErrorCode::BadJson));
    }

    #[test]
    fn a_publish_body_past_the_frame_limit_is_fatal_even_when_complete() {
        // Complete within the read that crosses the limit.
        let mut codec = ServerCodec::new(16);
        let mut buf = BytesMut::from(&b"PUBLISH\0{\"topic\":\"xxxxxxxx\"}"[..]);
        assert!(matches!(
            codec.decode(&mut buf),
            Err(CodecError::FrameTooLarge { max: 16 })
        ));
        // Exactly the limit is fine.
        let mut codec = ServerCodec::new(16);
        let mut buf = BytesMut::from(&b"PUBLISH\0{\"topic\":\"xxxx\"}"[..]);
        assert!(matches!(codec.decode(&mut buf), Ok(Some(Ok(_)))));
    }

    #[test]
    fn recoverable_errors_come_out_as_items() {
        let items = decode_all(
            b"nope\0{\"action\":\"fly\"}\0{\"action\":\"subscribe\",\"data\":\"\"}\0PING\0",
        );
        let codes: Vec<_> = items
            .iter()
            .map(|i| i.as_ref().err().map(|e| e.code))
            .collect();
        assert_eq!(
            codes,
            [
                Some(ErrorCode::BadJson),
                Some(ErrorCode::UnknownAction),
                Some(ErrorCode::BadTopic),
                None
            ]
        );
        assert!(items[..3].iter().all(|i| !i.as_ref().unwrap_err().close));
        // A bad one-shot publish body closes the connection.
        let items = decode_all(b"PUBLISH\0{nope}\0");
        assert!(items[0].as_ref().unwrap_err().close);
    }

    #[test]
    fn over_long_frames_are_fatal() {
        let mut codec = ServerCodec::new(16);
        // Unterminated and over the limit.
        let mut buf = BytesMut::from(&[b'x'; 17][..]);
        let err = codec.decode(&mut buf).unwrap_err();
        assert!(matches!(err, CodecError::FrameTooLarge { max: 16 }));
        assert_eq!(err.protocol_error().unwrap().code, ErrorCode::FrameTooLarge);
        // Terminated but over the limit.
        let mut codec = ServerCodec::new(16);
        let mut buf = BytesMut::from(&b"xxxxxxxxxxxxxxxxxxxx\0"[..]);
        assert!(codec.decode(&mut buf).is_err());
        // Exactly the limit is fine.
        let mut codec = ServerCodec::new(4);
        let mut buf = BytesMut::from(&b"PING\0"[..]);
        assert_eq!(
            codec.decode(&mut buf).unwrap(),
            Some(Ok(ClientMessage::Ping))
        );
    }

    #[test]
    fn non_utf8_is_bad_frame() {
        let mut codec = ServerCodec::new(64);
        let mut buf = BytesMut::from(&b"\xff\xfe\0"[..]);
        let err = codec.decode(&mut buf).unwrap_err();
        assert_eq!(err.protocol_error().unwrap().code, ErrorCode::BadFrame);
    }

    #[test]
    fn client_codec_decodes_coalesced_server_frames() {
        let mut codec = ClientCodec::default();
        let mut buf = BytesMut::from(
            &b"{\"timestamp\":[1,2,3],\"token\":\"ab\"}\x01ACK\x01PING\x01{\"time"[..],
        );
        assert!(matches!(
            codec.decode(&mut buf).unwrap(),
            Some(ServerMessage::Hello { .. })
        ));
        assert_eq!(codec.decode(&mut buf).unwrap(), Some(ServerMessage::Ack));
        assert_eq!(codec.decode(&mut buf).unwrap(), Some(ServerMessage::Ping));
        assert_eq!(codec.decode(&mut buf).unwrap(), None);
        buf.put_slice(b"stamp\":[1,2,3],\"error\":\"bad_json\",\"reason\":\"x\"}\x01");
        assert!(matches!(
            codec.decode(&mut buf).unwrap(),
            Some(ServerMessage::Error { .. })
        ));
        let mut bad = BytesMut::from(&b"garbage\x01"[..]);
        assert!(matches!(
            codec.decode(&mut bad),
            Err(CodecError::BadFrame(_))
        ));
    }

    #[test]
    fn encoders_round_trip() {
        let mut client = ClientCodec::default();
        let mut server = ServerCodec::default();
        let mut wire = BytesMut::new();
        let msgs = [
            ClientMessage::Subscribe("a".into()),
            publish("t", "[1,2]", false),
            ClientMessage::Unsubscribe("a".into()),
        ];
        for m in msgs.clone() {
            client.encode(m, &mut wire).unwrap();
        }
        for m in &msgs {
            assert_eq!(server.decode(&mut wire).unwrap(), Some(Ok(m.clone())));
        }
        // One-shot publish round trip.
        client.encode(publish("t", "1", true), &mut wire).unwrap();
        assert_eq!(
            server.decode(&mut wire).unwrap(),
            Some(Ok(publish("t", "1", true)))
        );

        let mut down = BytesMut::new();
        server.encode(ServerMessage::Ack, &mut down).unwrap();
        server.encode(ServerMessage::Ping, &mut down).unwrap();
        assert_eq!(client.decode(&mut down).unwrap(), Some(ServerMessage::Ack));
        assert_eq!(client.decode(&mut down).unwrap(), Some(ServerMessage::Ping));
    }
}
