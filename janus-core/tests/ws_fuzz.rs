//! Property tests of the WebSocket layer (X2): whatever bytes a client
//! sends before or after its handshake, the server's side never panics, and
//! however TCP splits them, a connection sees the same messages.

use bytes::{BufMut, BytesMut};
use janus_core::ws::{self, Message, WsDecoder};
use proptest::prelude::*;
use tokio_util::codec::Decoder;

const MAX: usize = 256;

/// Messages, then the error that would close the connection, if any.
type Outcome = (Vec<Message>, Option<String>);

/// Feeds `input` to a fresh server decoder in chunks of the given sizes
/// (the last takes the rest).
fn decode(input: &[u8], chunks: &[usize]) -> Outcome {
    let mut decoder = WsDecoder::server(MAX);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut rest = input;
    let mut sizes = chunks.iter().copied();
    while !rest.is_empty() {
        let n = sizes.next().unwrap_or(rest.len()).clamp(1, rest.len());
        let (now, later) = rest.split_at(n);
        buf.put_slice(now);
        rest = later;
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(m)) => out.push(m),
                Ok(None) => break,
                Err(e) => return (out, Some(e.to_string())),
            }
        }
    }
    (out, None)
}

/// A client's text message split into `parts` fragments, each masked with `mask`.
fn fragmented(text: &str, parts: usize, mask: [u8; 4]) -> Vec<u8> {
    let bytes = text.as_bytes();
    let size = bytes.len().div_ceil(parts.max(1)).max(1);
    let pieces: Vec<&[u8]> = if bytes.is_empty() {
        vec![bytes]
    } else {
        bytes.chunks(size).collect()
    };
    let mut out = Vec::new();
    for (i, piece) in pieces.iter().enumerate() {
        let mut frame = ws::client_text_frame(piece, mask);
        let last = i + 1 == pieces.len();
        // FIN only on the last; opcode text on the first, continuation after.
        frame[0] = u8::from(last) << 7 | u8::from(i == 0);
        out.extend(frame);
    }
    out
}

proptest! {
    /// Arbitrary bytes never panic the decoder, and any split gives the same outcome.
    #[test]
    fn decoder_any_bytes_any_split(
        input in prop::collection::vec(any::<u8>(), 0..400),
        chunks in prop::collection::vec(1usize..32, 0..40),
    ) {
        let whole = decode(&input, &[]);
        prop_assert_eq!(&whole, &decode(&input, &vec![1; input.len()]));
        prop_assert_eq!(&whole, &decode(&input, &chunks));
    }

    /// Masked, fragmented text messages come out whole, whatever the split.
    #[test]
    fn fragmented_messages_round_trip(
        texts in prop::collection::vec(".{0,60}", 1..6),
        parts in 1usize..5,
        mask in any::<[u8; 4]>(),
        chunks in prop::collection::vec(1usize..16, 0..40),
    ) {
        let wire: Vec<u8> = texts.iter().flat_map(|t| fragmented(t, parts, mask)).collect();
        let expected: Vec<Message> = texts
            .iter()
            .map(|t| Message::Text(bytes::Bytes::copy_from_slice(t.as_bytes())))
            .collect();
        let got = decode(&wire, &chunks);
        if texts.iter().all(|t| t.len() <= MAX) {
            prop_assert_eq!(got, (expected, None));
        } else {
            prop_assert!(got.1.is_some_and(|e| e.contains("longer than")));
        }
    }

    /// Any bytes as a handshake: an answer or a refusal, never a panic; every
    /// strict prefix of a valid request is incomplete.
    #[test]
    fn handshake_any_bytes(input in prop::collection::vec(any::<u8>(), 0..600), cut in 0usize..200) {
        let _ = ws::accept(&input);
        let request = ws::client_request("example.org", "dGhlIHNhbXBsZSBub25jZQ==");
        let cut = cut.min(request.len() - 1);
        prop_assert_eq!(ws::accept(&request.as_bytes()[..cut]), Ok(None));
        prop_assert!(matches!(ws::accept(request.as_bytes()), Ok(Some(_))));
    }
}
