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
//! byte by byte is scanned once. Client mistakes that keep the
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

/// Where one JSON object ends in a byte stream, found incrementally: it
/// tracks nesting and strings across calls and never rescans a byte.
#[derive(Debug, Clone, Default)]
struct JsonEnd {
    /// Bytes of the buffer already scanned.
    scanned: usize,
    depth: usize,
    in_string: bool,
    escaped: bool,
}

/// What [`JsonEnd::scan`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scan {
    /// The value ends right before this position.
    Complete(usize),
    /// A `0x00` at this position came before the value was complete.
    Cut(usize),
    /// More bytes are needed.
    Incomplete,
}

impl JsonEnd {
    /// Scans `buf`, which starts with `{` and grows between calls.
    fn scan(&mut self, buf: &[u8]) -> Scan {
        for (i, &b) in buf.iter().enumerate().skip(self.scanned) {
            if b == 0 {
                *self = JsonEnd::default();
                return Scan::Cut(i);
            }
            if self.in_string {
                match b {
                    _ if self.escaped => self.escaped = false,
                    b'\\' => self.escaped = true,
                    b'"' => self.in_string = false,
                    _ => {}
                }
                continue;
            }
            match b {
                b'"' => self.in_string = true,
                b'{' | b'[' => self.depth += 1,
                b'}' | b']' => {
                    self.depth = self.depth.saturating_sub(1);
                    if self.depth == 0 {
                        *self = JsonEnd::default();
                        return Scan::Complete(i + 1);
                    }
                }
                _ => {}
            }
        }
        self.scanned = buf.len();
        Scan::Incomplete
    }
}

/// The server side of the protocol: decodes client frames, encodes server frames.
#[derive(Debug, Clone)]
pub struct ServerCodec {
    splitter: Splitter,
    /// A `PUBLISH` frame was seen; its JSON body comes next.
    publish_pending: bool,
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
            body: JsonEnd::default(),
        }
    }

    /// Whether a `PUBLISH` keyword was read and its body is still awaited.
    pub fn publish_pending(&self) -> bool {
        self.publish_pending
    }

    /// Decodes the body of a `PUBLISH`: one JSON object, complete as soon as
    /// its closing brace arrives. Markers, empty frames and whitespace before
    /// it are skipped; a body that is not an object is read up to its
    /// terminator (or the end of the stream) and rejected.
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
                Some(b'{') => {}
                Some(_) => {
                    // Not an object: take it up to its terminator, as a
                    // 2009 server would have, and reject it.
                    let text = match self.splitter.next_frame(buf)? {
                        Some(frame) => frame,
                        None if eof => buf.split(),
                        None => return Ok(None),
                    };
                    let text = String::from_utf8_lossy(&text).into_owned();
                    return Ok(Some(self.publish_body(&text)));
                }
            }
        }
        match self.body.scan(buf) {
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
