//! The WebSocket form of the protocol (docs/protocol.md X2): the opening
//! handshake, and frames in both directions, without any I/O.
//!
//! ```text
//!  client → server:  GET / HTTP/1.1 … Upgrade: websocket …   (handshake)
//!                    [text, masked] {"action":"subscribe","data":"news"}
//!  server → client:  HTTP/1.1 101 Switching Protocols …
//!                    [text] {"timestamp":[..],"token":".."}   [text] ACK   [text] {delivery}
//! ```
//!
//! One protocol frame is one WebSocket text message, without the `0x00` /
//! `0x01` terminators and without the `<regular-socket/>` marker. Server
//! frames are never masked (RFC 6455 §5.1), so a delivery's complete
//! WebSocket frame is the same bytes for every subscriber:
//! [`from_server_frame`] turns the P1 form of a frame into it once, and the
//! result is shared like the P1 bytes.
//!
//! The RFC 6455 details — request validation and the `Sec-WebSocket-Accept`
//! key, frame headers and opcodes — come from `tungstenite` (a maintained
//! implementation that passes the Autobahn test suite); this module adds
//! what a server with its own event loop needs around them: a size bound on
//! the handshake, a decoder over a `BytesMut` that never buffers more than
//! one maximum-size message, and close frames that carry the P7 reason.

use std::io::Cursor;

use bytes::{BufMut, Bytes, BytesMut};
use tokio_util::codec::Decoder;
use tungstenite::handshake::machine::TryParse;
use tungstenite::handshake::server::{create_response, write_response, Request};
use tungstenite::protocol::frame::coding::{Control, Data, OpCode};
use tungstenite::protocol::frame::FrameHeader;

use crate::codec::CodecError;
use crate::message::{ErrorCode, ServerMessage};
use crate::SERVER_TERMINATOR;

/// Most bytes of a handshake request (request line and headers). Browsers
/// send well under 2 KiB; a longer request is refused with 431.
pub const MAX_HANDSHAKE: usize = 16 * 1024;

/// Longest payload of a control frame (RFC 6455 §5.5).
const MAX_CONTROL: usize = 125;

/// Close codes (RFC 6455 §7.4.1).
pub mod close {
    /// The purpose of the connection is fulfilled.
    pub const NORMAL: u16 = 1000;
    /// The server is going away (shutdown).
    pub const GOING_AWAY: u16 = 1001;
    /// The peer broke the WebSocket protocol.
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// A message type the endpoint does not accept (binary).
    pub const UNSUPPORTED: u16 = 1003;
    /// A text message that is not UTF-8.
    pub const INVALID_DATA: u16 = 1007;
    /// The peer broke a rule of the application (kicked, slow consumer, not allowed).
    pub const POLICY: u16 = 1008;
    /// A message longer than the endpoint accepts.
    pub const TOO_BIG: u16 = 1009;
}

/// The close code that goes with a P7 error closing the connection.
pub fn close_code(code: ErrorCode) -> u16 {
    match code {
        ErrorCode::ServerShutdown => close::GOING_AWAY,
        ErrorCode::FrameTooLarge => close::TOO_BIG,
        ErrorCode::BadFrame => close::PROTOCOL_ERROR,
        _ => close::POLICY,
    }
}

/// Appends a server frame's header (final, unmasked) for `len` payload bytes.
fn put_header(out: &mut BytesMut, opcode: OpCode, len: usize) {
    let header = FrameHeader {
        opcode,
        ..FrameHeader::default()
    };
    // Writing to a growable buffer cannot fail.
    let _ = header.format(len as u64, &mut out.writer());
}

/// One unmasked frame of `opcode` with `payload`.
fn server_frame(opcode: OpCode, payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(payload.len() + 10);
    put_header(&mut out, opcode, payload.len());
    out.extend_from_slice(payload);
    out.freeze()
}

/// A text message carrying `payload` (server to client, unmasked).
pub fn text_frame(payload: &[u8]) -> Bytes {
    server_frame(OpCode::Data(Data::Text), payload)
}

/// The WebSocket form of a P1 server frame: its payload, without the
/// `0x01` terminator, as one text message.
pub fn from_server_frame(frame: &[u8]) -> Bytes {
    let payload = frame.strip_suffix(&[SERVER_TERMINATOR]).unwrap_or(frame);
    text_frame(payload)
}

/// A pong answering a ping that carried `payload`.
pub fn pong_frame(payload: &[u8]) -> Bytes {
    let payload = &payload[..payload.len().min(MAX_CONTROL)];
    server_frame(OpCode::Control(Control::Pong), payload)
}

/// A ping with no payload (the server's heartbeat; browsers answer it themselves).
pub fn ping_frame() -> Bytes {
    server_frame(OpCode::Control(Control::Ping), b"")
}

/// A close frame with `code` and as much of `reason` as fits (whole characters).
pub fn close_frame(code: u16, reason: &str) -> Bytes {
    let mut end = reason.len().min(MAX_CONTROL - 2);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut payload = Vec::with_capacity(2 + end);
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(&reason.as_bytes()[..end]);
    server_frame(OpCode::Control(Control::Close), &payload)
}

/// The last bytes a server sends before closing a WebSocket connection:
/// the P1 frame `last` as a text message (the P7 error, if any), then a
/// close frame whose code and reason match that error (1000 without one).
pub fn closing(last: Option<&[u8]>) -> Bytes {
    let Some(frame) = last else {
        return close_frame(close::NORMAL, "");
    };
    let payload = frame.strip_suffix(&[SERVER_TERMINATOR]).unwrap_or(frame);
    let error = match std::str::from_utf8(payload).map(ServerMessage::parse) {
        Ok(Ok(ServerMessage::Error { code, .. })) => code,
        _ => String::new(),
    };
    let code = error.parse::<ErrorCode>().map_or(close::NORMAL, close_code);
    let mut out = BytesMut::from(&text_frame(payload)[..]);
    out.extend_from_slice(&close_frame(code, &error));
    out.freeze()
}

/// A handshake request the server accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upgrade {
    /// Bytes of the buffer the request took; what follows is WebSocket frames.
    pub consumed: usize,
    /// The `101 Switching Protocols` answer to write.
    pub response: Vec<u8>,
    /// The `Origin` header, if the client sent one (browsers always do).
    pub origin: Option<String>,
}

/// A handshake request the server refuses, with the HTTP status to answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// HTTP status code.
    pub status: u16,
    /// Why, in words (the response body).
    pub reason: String,
}

impl Rejection {
    /// A refusal with `status` and `reason`.
    pub fn new(status: u16, reason: impl Into<String>) -> Self {
        Self {
            status,
            reason: reason.into(),
        }
    }

    /// The complete HTTP response (the connection closes after it).
    pub fn response(&self) -> Vec<u8> {
        let phrase = match self.status {
            400 => "Bad Request",
            403 => "Forbidden",
            404 => "Not Found",
            408 => "Request Timeout",
            426 => "Upgrade Required",
            431 => "Request Header Fields Too Large",
            503 => "Service Unavailable",
            _ => "Error",
        };
        let body = format!("{}\n", self.reason);
        let mut head = format!(
            "HTTP/1.1 {} {phrase}\r\nContent-Type: text/plain; charset=utf-8\r\n\
             Content-Length: {}\r\nConnection: close\r\n",
            self.status,
            body.len()
        );
        if self.status == 426 {
            head.push_str("Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n");
        }
        head.push_str("\r\n");
        head.push_str(&body);
        head.into_bytes()
    }
}

/// Reads the opening handshake from what has arrived so far: `Ok(None)`
/// while it is incomplete, the upgrade once it is, or why it is refused
/// (not HTTP, not a WebSocket upgrade, a path other than `/`, longer than
/// [`MAX_HANDSHAKE`]).
///
/// # Errors
/// A [`Rejection`] whose [`Rejection::response`] is the answer to send.
pub fn accept(buf: &[u8]) -> Result<Option<Upgrade>, Rejection> {
    let parsed = Request::try_parse(buf)
        .map_err(|e| Rejection::new(400, format!("not a WebSocket opening handshake: {e}")))?;
    let Some((consumed, request)) = parsed else {
        if buf.len() > MAX_HANDSHAKE {
            return Err(Rejection::new(
                431,
                format!("the handshake request is longer than {MAX_HANDSHAKE} bytes"),
            ));
        }
        return Ok(None);
    };
    if consumed > MAX_HANDSHAKE {
        return Err(Rejection::new(
            431,
            format!("the handshake request is longer than {MAX_HANDSHAKE} bytes"),
        ));
    }
    if request.uri().path() != "/" {
        return Err(Rejection::new(
            404,
            format!("no WebSocket endpoint at {}; use /", request.uri().path()),
        ));
    }
    let response = create_response(&request).map_err(|e| {
        Rejection::new(
            426,
            format!("this endpoint speaks WebSocket only (RFC 6455): {e}"),
        )
    })?;
    let mut out = Vec::with_capacity(160);
    write_response(&mut out, &response)
        .map_err(|e| Rejection::new(400, format!("cannot answer the handshake: {e}")))?;
    let origin = request
        .headers()
        .get("Origin")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    Ok(Some(Upgrade {
        consumed,
        response: out,
        origin,
    }))
}

/// One complete WebSocket message, as the decoder hands it over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A text message (fragments joined), checked to be UTF-8.
    Text(Bytes),
    /// A ping, with its payload (to be echoed in the pong).
    Ping(Bytes),
    /// A pong.
    Pong,
    /// A close frame, with its code if it had one.
    Close(Option<u16>),
}

/// Decodes WebSocket frames into [`Message`]s. A server's decoder requires
/// masked frames (RFC 6455 §5.1), a client's unmasked ones. A message
/// (fragments together) longer than the maximum is
/// [`CodecError::FrameTooLarge`] as soon as its header says so, so the
/// buffer never holds more than one maximum-size message; every other
/// violation (binary data, reserved bits or opcodes, bad fragmentation,
/// control frames over 125 bytes, text that is not UTF-8) is
/// [`CodecError::BadFrame`].
#[derive(Debug, Clone)]
pub struct WsDecoder {
    max_message: usize,
    /// Server side: frames must be masked.
    masked: bool,
    /// The header of the frame whose payload is awaited.
    header: Option<(FrameHeader, usize)>,
    /// A fragmented text message's payload so far.
    fragments: Option<BytesMut>,
}

impl WsDecoder {
    /// The server's decoder: client frames are masked, messages at most `max_message` bytes.
    pub fn server(max_message: usize) -> Self {
        Self {
            max_message,
            masked: true,
            header: None,
            fragments: None,
        }
    }

    /// A client's decoder (load bot, tests): server frames are not masked.
    pub fn client(max_message: usize) -> Self {
        Self {
            masked: false,
            ..Self::server(max_message)
        }
    }

    /// Whether it holds nothing between messages (no header or fragment pending).
    pub fn is_idle(&self) -> bool {
        self.header.is_none() && self.fragments.is_none()
    }

    fn too_large(&self) -> CodecError {
        CodecError::FrameTooLarge {
            max: self.max_message,
        }
    }

    /// Takes the next frame's header off `buf`, if it has arrived.
    fn next_header(
        &mut self,
        buf: &mut BytesMut,
    ) -> Result<Option<(FrameHeader, usize)>, CodecError> {
        if let Some(header) = self.header.take() {
            return Ok(Some(header));
        }
        let mut cursor = Cursor::new(&buf[..]);
        let parsed = FrameHeader::parse(&mut cursor)
            .map_err(|e| CodecError::BadFrame(format!("bad WebSocket frame: {e}")))?;
        let Some((header, len)) = parsed else {
            return Ok(None);
        };
        let used = cursor.position() as usize;
        let _ = buf.split_to(used);
        if header.rsv1 || header.rsv2 || header.rsv3 {
            return Err(bad("reserved bits set (no extension was negotiated)"));
        }
        if header.mask.is_some() != self.masked {
            return Err(bad(if self.masked {
                "a client's frames must be masked"
            } else {
                "a server's frames must not be masked"
            }));
        }
        let len = usize::try_from(len).map_err(|_| self.too_large())?;
        match header.opcode {
            OpCode::Control(_) if len > MAX_CONTROL || !header.is_final => {
                return Err(bad("a control frame must be final and at most 125 bytes"));
            }
            OpCode::Data(_) => {
                let so_far = self.fragments.as_ref().map_or(0, BytesMut::len);
                if so_far.saturating_add(len) > self.max_message {
                    return Err(self.too_large());
                }
            }
            OpCode::Control(_) => {}
        }
        Ok(Some((header, len)))
    }
}

fn bad(why: &str) -> CodecError {
    CodecError::BadFrame(format!("WebSocket protocol error: {why}"))
}

impl Decoder for WsDecoder {
    type Item = Message;
    type Error = CodecError;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Message>, CodecError> {
        loop {
            let Some((header, len)) = self.next_header(buf)? else {
                return Ok(None);
            };
            if buf.len() < len {
                buf.reserve(len - buf.len());
                self.header = Some((header, len));
                return Ok(None);
            }
            let mut payload = buf.split_to(len);
            if let Some(mask) = header.mask {
                for (i, b) in payload.iter_mut().enumerate() {
                    *b ^= mask[i & 3];
                }
            }
            let text = match header.opcode {
                OpCode::Control(Control::Ping) => return Ok(Some(Message::Ping(payload.freeze()))),
                OpCode::Control(Control::Pong) => return Ok(Some(Message::Pong)),
                OpCode::Control(_) => {
                    let code =
                        (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
                    return Ok(Some(Message::Close(code)));
                }
                OpCode::Data(Data::Binary) => {
                    return Err(bad(
                        "binary messages are not part of the protocol; send text",
                    ))
                }
                OpCode::Data(Data::Text) if self.fragments.is_some() => {
                    return Err(bad("a new message began before the fragmented one ended"))
                }
                OpCode::Data(Data::Text) if header.is_final => payload,
                OpCode::Data(Data::Text) => {
                    self.fragments = Some(payload);
                    continue;
                }
                OpCode::Data(Data::Continue) => {
                    let Some(mut so_far) = self.fragments.take() else {
                        return Err(bad("a continuation frame without a message to continue"));
                    };
                    so_far.extend_from_slice(&payload);
                    if !header.is_final {
                        self.fragments = Some(so_far);
                        continue;
                    }
                    so_far
                }
                OpCode::Data(Data::Reserved(_)) => return Err(bad("reserved opcode")),
            };
            if std::str::from_utf8(&text).is_err() {
                return Err(CodecError::BadFrame(
                    "a WebSocket text message that is not UTF-8".into(),
                ));
            }
            return Ok(Some(Message::Text(text.freeze())));
        }
    }
}

/// A client's masked text message (load bot, tests).
pub fn client_text_frame(payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let header = FrameHeader {
        opcode: OpCode::Data(Data::Text),
        mask: Some(mask),
        ..FrameHeader::default()
    };
    let mut out = Vec::with_capacity(payload.len() + 14);
    let _ = header.format(payload.len() as u64, &mut out);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
    out
}

/// A client's opening handshake request for `host` (load bot, tests);
/// `key` is 16 random bytes, base64-encoded (24 characters).
pub fn client_request(host: &str, key: &str) -> String {
    format!(
        "GET / HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
}

/// Checks the server's answer to [`client_request`]: `Ok(None)` while
/// incomplete, the bytes it took once it is a `101` with the right
/// `Sec-WebSocket-Accept`.
///
/// # Errors
/// A description of what is wrong with the answer.
pub fn client_response(buf: &[u8], key: &str) -> Result<Option<usize>, String> {
    let Some(end) = memchr::memmem::find(buf, b"\r\n\r\n") else {
        return if buf.len() > MAX_HANDSHAKE {
            Err("handshake answer too long".into())
        } else {
            Ok(None)
        };
    };
    let head = String::from_utf8_lossy(&buf[..end]);
    if !head.starts_with("HTTP/1.1 101") {
        let first = head.lines().next().unwrap_or("");
        return Err(format!("the server refused the upgrade: {first}"));
    }
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    let ok = head.lines().any(|line| {
        line.split_once(':').is_some_and(|(name, value)| {
            name.trim().eq_ignore_ascii_case("sec-websocket-accept") && value.trim() == accept
        })
    });
    if ok {
        Ok(Some(end + 4))
    } else {
        Err("wrong or missing Sec-WebSocket-Accept".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    fn request() -> String {
        client_request("localhost", KEY)
    }

    #[test]
    fn handshake_answers_with_the_rfc_accept_key() {
        let mut buf = request().into_bytes();
        buf.extend_from_slice(b"extra");
        let up = accept(&buf).expect("valid").expect("complete");
        assert_eq!(up.consumed, buf.len() - 5);
        let text = String::from_utf8(up.response.clone()).expect("ascii");
        // RFC 6455 §1.3's example key and answer.
        assert!(text.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "{text}");
        assert_eq!(
            client_response(&up.response, KEY),
            Ok(Some(up.response.len()))
        );
    }

    #[test]
    fn handshake_waits_then_refuses_what_is_not_one() {
        let req = request();
        assert_eq!(accept(&req.as_bytes()[..10]), Ok(None));
        let refused = |raw: &str| accept(raw.as_bytes()).expect_err(raw).status;
        assert_eq!(refused("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), 426);
        assert_eq!(refused(&req.replace("GET / ", "GET /x ")), 404);
        assert_eq!(refused(&req.replace("GET", "POST")), 400);
        assert_eq!(refused("\x00\x01garbage\r\n\r\n"), 400);
        let long = format!("GET / HTTP/1.1\r\nX: {}\r\n", "a".repeat(MAX_HANDSHAKE));
        assert_eq!(refused(&long), 431);
        let text = String::from_utf8(Rejection::new(426, "no").response()).expect("ascii");
        assert!(text.starts_with("HTTP/1.1 426 Upgrade Required\r\n"));
    }

    fn decode_all(dec: &mut WsDecoder, bytes: &[u8]) -> Result<Vec<Message>, CodecError> {
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        // One byte at a time: a frame may arrive in any split.
        for b in bytes {
            buf.put_u8(*b);
            while let Some(m) = dec.decode(&mut buf)? {
                out.push(m);
            }
        }
        Ok(out)
    }

    #[test]
    fn decodes_masked_text_in_any_split_and_fragments() {
        let mut bytes =
            client_text_frame(b"{\"action\":\"subscribe\",\"data\":\"t\"}", [1, 2, 3, 4]);
        // A fragmented "hello": "hel" (text, not final) + "lo" (continuation, final).
        let mut first = client_text_frame(b"hel", [9, 9, 9, 9]);
        first[0] &= 0x7f;
        let mut rest = client_text_frame(b"lo", [7, 0, 7, 0]);
        rest[0] &= 0xf0;
        bytes.extend(first);
        // A ping may come between fragments.
        bytes.extend([0x89, 0x82, 0, 0, 0, 0, b'h', b'i']);
        bytes.extend(rest);
        let got = decode_all(&mut WsDecoder::server(1024), &bytes).expect("valid");
        assert_eq!(
            got,
            vec![
                Message::Text(Bytes::from_static(
                    b"{\"action\":\"subscribe\",\"data\":\"t\"}"
                )),
                Message::Ping(Bytes::from_static(b"hi")),
                Message::Text(Bytes::from_static(b"hello")),
            ]
        );
    }

    #[test]
    fn refuses_oversize_unmasked_binary_and_bad_utf8() {
        let big = client_text_frame(&[b'a'; 200], [1, 1, 1, 1]);
        // The header alone is enough to refuse it.
        let err = decode_all(&mut WsDecoder::server(100), &big[..8]).expect_err("too big");
        assert!(matches!(err, CodecError::FrameTooLarge { max: 100 }));
        let unmasked = text_frame(b"x");
        assert!(matches!(
            decode_all(&mut WsDecoder::server(100), &unmasked),
            Err(CodecError::BadFrame(_))
        ));
        let mut binary = client_text_frame(b"x", [0; 4]);
        binary[0] = 0x82;
        assert!(decode_all(&mut WsDecoder::server(100), &binary).is_err());
        let bad_utf8 = client_text_frame(&[0xff, 0xfe], [3; 4]);
        assert!(decode_all(&mut WsDecoder::server(100), &bad_utf8).is_err());
        let mut long_ping = client_text_frame(&[0; 126], [0; 4]);
        long_ping[0] = 0x89;
        assert!(decode_all(&mut WsDecoder::server(1000), &long_ping).is_err());
    }

    #[test]
    fn server_frames_are_plain_text_and_closing_names_the_error() {
        assert_eq!(&from_server_frame(b"ACK\x01")[..], b"\x81\x03ACK");
        let long = vec![b'x'; 300];
        let frame = text_frame(&long);
        assert_eq!(&frame[..4], &[0x81, 126, 1, 44]);
        let mut dec = WsDecoder::client(1024);
        assert_eq!(
            decode_all(&mut dec, &frame).expect("valid"),
            vec![Message::Text(Bytes::from(long))]
        );
        let err = b"{\"timestamp\":[1,2,3],\"error\":\"kicked\",\"reason\":\"bye\"}\x01";
        let last = closing(Some(err));
        let got = decode_all(&mut WsDecoder::client(1024), &last).expect("valid");
        assert_eq!(got.len(), 2);
        assert_eq!(got[1], Message::Close(Some(close::POLICY)));
        assert_eq!(&closing(None)[..], &[0x88, 2, 0x03, 0xe8]);
        assert_eq!(close_frame(1000, &"é".repeat(100)).len(), 2 + 2 + 122);
    }
}
