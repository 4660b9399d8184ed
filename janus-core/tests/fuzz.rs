//! Property-based fuzzing of the codec and the JSON message layer.
//!
//! Each property runs on generated inputs — random bytes biased towards the
//! protocol's own alphabet, and well-formed messages of every kind — and
//! asserts what must hold for any input:
//!
//! - nothing panics, whatever the bytes (decoders, parsers, `validate_data`);
//! - every strict prefix of a valid frame is incomplete (`Ok(None)`);
//! - decode(encode(x)) == x, client → server and server → client;
//! - feeding bytes one at a time, or in random chunks, gives exactly what
//!   feeding them all at once gives (items, and the error that ends it);
//! - `validate_data` accepts exactly the nesting depths up to the limit.
//!
//! `cargo test` runs a quick pass (proptest's default, 256 inputs per
//! property). A long run sets the count, in a release build:
//!
//! ```text
//! PROPTEST_CASES=100000 cargo test --release -p janus-core --test fuzz
//! ```
//!
//! A failing input is shrunk to a minimal one and saved under
//! `janus-core/proptest-regressions/`; commit that file so every later run
//! tries it first.

use bytes::{BufMut, BytesMut};
use janus_core::message::{validate_data, Delivery, MAX_DATA_DEPTH};
use janus_core::{
    ClientCodec, ClientMessage, ProtocolError, Publish, Resume, ServerCodec, ServerMessage,
    Timestamp, TopicPosition,
};
use proptest::prelude::*;
use serde_json::Value;
use tokio_util::codec::{Decoder, Encoder};

/// Largest frame the decoders under test accept: small, so that generated
/// inputs also reach the frame-too-large path.
const MAX_FRAME: usize = 2048;

/// Bytes drawn mostly from what the protocol is made of.
fn protocol_bytes(max_len: usize) -> impl Strategy<Value = Vec<u8>> {
    let byte = prop_oneof![
        3 => Just(0u8),
        1 => Just(1u8),
        6 => prop::sample::select(b"{}[]\":,\\ 0123456789-+.eEtrufalsn".to_vec()),
        2 => prop::sample::select(b"PUBLISHINGOactiondtsubcrme<regula-sok/>".to_vec()),
        2 => any::<u8>(),
    ];
    let token = prop_oneof![
        4 => byte.prop_map(|b| vec![b]),
        1 => prop::sample::select(vec![
            &b"PUBLISH\0"[..],
            b"<regular-socket/>\0",
            b"{\"action\":\"subscribe\",\"data\":\"t\"}\0",
            b"{\"action\":\"publish\",\"data\":{\"topic\":\"t\",\"data\":",
            b"{\"topic\":\"t\",\"data\":[1,{\"a\":2}]}",
            b"PING\0",
        ])
        .prop_map(<[u8]>::to_vec),
    ];
    prop::collection::vec(token, 0..max_len).prop_map(|parts| parts.concat())
}

/// A valid topic name.
fn topic() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9/_. éü-]{1,24}"
}

/// Any JSON value, as compact text.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(6, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(".{0,6}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Any message a client can send.
fn client_message() -> impl Strategy<Value = ClientMessage> {
    prop_oneof![
        topic().prop_map(ClientMessage::Subscribe),
        topic().prop_map(ClientMessage::Unsubscribe),
        Just(ClientMessage::Ping),
        Just(ClientMessage::Pong),
        "[0-9a-f]{32}".prop_map(|t| ClientMessage::Resume(Resume::Token(t))),
        (
            "[0-9a-f]{32}",
            prop::collection::btree_map(topic(), (".{0,8}", any::<u64>()), 0..4)
        )
            .prop_map(|(token, topics)| ClientMessage::Resume(Resume::Positions {
                token,
                topics: topics
                    .into_iter()
                    .map(|(topic, (epoch, offset))| TopicPosition {
                        topic,
                        epoch,
                        offset
                    })
                    .collect(),
            })),
        proptest::option::of(any::<bool>()).prop_map(|offsets| ClientMessage::Options { offsets }),
        (topic(), ".{0,10}", ".{0,10}", json_value(), any::<bool>()).prop_map(
            |(topic, event, id, data, one_shot)| ClientMessage::Publish {
                publish: Publish::new(topic, event, id, &data.to_string())
                    .expect("generated publishes are valid"),
                one_shot,
            }
        ),
    ]
}

/// Any message the server can send.
fn server_message() -> impl Strategy<Value = ServerMessage> {
    let ts = (0u64..5_000, 0u64..1_000_000, 0u64..1_000_000)
        .prop_map(|(m, s, u)| Timestamp::from_parts(m, s, u));
    prop_oneof![
        Just(ServerMessage::Ack),
        Just(ServerMessage::Ping),
        (ts.clone(), "[0-9a-f]{32}")
            .prop_map(|(timestamp, token)| ServerMessage::Hello { timestamp, token }),
        (ts.clone(), "[a-z_]{1,20}", ".{0,30}").prop_map(|(timestamp, code, reason)| {
            ServerMessage::Error {
                timestamp,
                code,
                reason,
            }
        }),
        (ts.clone(), "[0-9a-f]{32}", any::<bool>(), any::<u64>()).prop_map(
            |(timestamp, token, recovered, missed)| ServerMessage::Resumed {
                timestamp,
                token,
                recovered,
                missed,
            }
        ),
        (ts.clone(), topic(), ".{0,8}", any::<u64>()).prop_map(
            |(timestamp, topic, epoch, offset)| ServerMessage::Subscribed {
                timestamp,
                topic,
                epoch,
                offset,
            }
        ),
        (
            ts,
            topic(),
            ".{0,10}",
            ".{0,10}",
            json_value(),
            proptest::option::of(any::<u64>())
        )
            .prop_map(|(timestamp, topic, event, message_id, data, offset)| {
                ServerMessage::Delivery(Delivery {
                    timestamp,
                    topic,
                    event,
                    message_id,
                    data: data.to_string(),
                    offset,
                })
            }),
    ]
}

/// What a connection sees from a byte stream: every item, then the error
/// that would close it (as text), if any.
type Outcome = (Vec<Result<ClientMessage, ProtocolError>>, Option<String>);

/// Feeds `input` to a fresh server decoder in the given chunk sizes (the
/// last chunk takes the rest), then ends the stream.
fn server_decode(input: &[u8], chunks: &[usize]) -> Outcome {
    let mut codec = ServerCodec::new(MAX_FRAME);
    let mut buf = BytesMut::new();
    let mut items = Vec::new();
    let mut rest = input;
    let mut sizes = chunks.iter().copied();
    loop {
        let n = sizes
            .next()
            .unwrap_or(rest.len())
            .clamp(1, rest.len().max(1));
        let (now, later) = rest.split_at(n.min(rest.len()));
        buf.put_slice(now);
        rest = later;
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(item)) => items.push(item),
                Ok(None) => break,
                Err(e) => return (items, Some(e.to_string())),
            }
        }
        if rest.is_empty() {
            break;
        }
    }
    loop {
        match codec.decode_eof(&mut buf) {
            Ok(Some(item)) => items.push(item),
            Ok(None) => return (items, None),
            Err(e) => return (items, Some(e.to_string())),
        }
    }
}

/// Client frames of `messages`, as a client encoder writes them.
fn encode_client(messages: &[ClientMessage]) -> Vec<u8> {
    let mut codec = ClientCodec::default();
    let mut out = BytesMut::new();
    for m in messages {
        codec
            .encode(m.clone(), &mut out)
            .expect("encoding never fails");
    }
    out.to_vec()
}

proptest! {
    /// Arbitrary bytes never panic the server's decoder, and however they
    /// are split, the connection sees the same thing.
    #[test]
    fn server_decoder_any_bytes_any_split(
        input in protocol_bytes(400),
        chunks in prop::collection::vec(1usize..64, 0..40),
    ) {
        let whole = server_decode(&input, &[]);
        let byte_by_byte = server_decode(&input, &vec![1; input.len()]);
        prop_assert_eq!(&whole, &byte_by_byte);
        prop_assert_eq!(&whole, &server_decode(&input, &chunks));
    }

    /// Valid client frames decode to exactly what was encoded, whatever the split.
    #[test]
    fn client_frames_round_trip(
        messages in prop::collection::vec(client_message(), 1..8),
        chunks in prop::collection::vec(1usize..32, 0..40),
    ) {
        let wire = encode_client(&messages);
        let expected: Vec<_> = messages.iter().cloned().map(Ok).collect();
        prop_assert_eq!(server_decode(&wire, &[]), (expected.clone(), None));
        prop_assert_eq!(server_decode(&wire, &chunks), (expected, None));
    }

    /// Every strict prefix of a valid client frame is incomplete.
    #[test]
    fn strict_prefixes_of_client_frames_are_incomplete(message in client_message()) {
        let wire = encode_client(std::slice::from_ref(&message));
        for cut in 0..wire.len() {
            let mut codec = ServerCodec::new(MAX_FRAME * 4);
            let mut buf = BytesMut::from(&wire[..cut]);
            let got = codec.decode(&mut buf);
            // protocol P5: a PUBLISH body may be handled as soon as it is one
            // complete JSON value, before its terminator arrives.
            let one_shot_body_complete = matches!(
                &message, ClientMessage::Publish { one_shot: true, .. }
            ) && cut == wire.len() - 1;
            match got {
                Ok(None) => {}
                Ok(Some(Ok(m))) if one_shot_body_complete && m == message => {}
                other => prop_assert!(false, "prefix {cut} of {wire:?} gave {other:?}"),
            }
        }
    }

    /// Server frames round-trip through the client decoder; their strict
    /// prefixes are incomplete; arbitrary bytes never panic it.
    #[test]
    fn server_frames_round_trip_and_prefixes(
        messages in prop::collection::vec(server_message(), 1..6),
        noise in protocol_bytes(200),
    ) {
        let mut wire = BytesMut::new();
        for m in &messages {
            m.encode(&mut wire);
        }
        let bytes = wire.to_vec();
        let mut codec = ClientCodec::default();
        let mut got = Vec::new();
        while let Some(m) = codec.decode(&mut wire).expect("valid frames") {
            got.push(m);
        }
        prop_assert_eq!(&got, &messages);
        let first = messages[0].to_bytes();
        for cut in 0..first.len() {
            let mut buf = BytesMut::from(&first[..cut]);
            prop_assert!(ClientCodec::default().decode(&mut buf).expect("no error").is_none());
        }
        // Byte by byte gives the same messages.
        let mut codec = ClientCodec::default();
        let mut buf = BytesMut::new();
        let mut one_by_one = Vec::new();
        for b in bytes {
            buf.put_u8(b);
            while let Some(m) = codec.decode(&mut buf).expect("valid frames") {
                one_by_one.push(m);
            }
        }
        prop_assert_eq!(&one_by_one, &messages);
        // Noise: any outcome but a panic.
        let mut codec = ClientCodec::new(MAX_FRAME);
        let mut buf = BytesMut::from(&noise[..]);
        while let Ok(Some(_)) = codec.decode(&mut buf) {}
    }

    /// The JSON layer's entry points never panic on any text.
    #[test]
    fn json_layer_any_text(bytes in protocol_bytes(300)) {
        let text = String::from_utf8_lossy(&bytes);
        let _ = ClientMessage::parse(&text);
        let _ = ServerMessage::parse(&text);
        let _ = Publish::from_json(&text);
        let _ = validate_data(&text);
    }

    /// Data nested up to the limit passes, one level more is bad_json,
    /// whatever is around it.
    #[test]
    fn data_depth_limit(depth in 0usize..(2 * MAX_DATA_DEPTH), inner in json_value()) {
        let inner_depth = depth_of(&inner);
        let mut data = inner.to_string();
        for i in 0..depth {
            data = if i % 2 == 0 { format!("[{data}]") } else { format!("{{\"k\":{data}}}") };
        }
        let body = format!("{{\"topic\":\"t\",\"data\":{data}}}");
        let result = Publish::from_json(&body);
        if depth + inner_depth <= MAX_DATA_DEPTH {
            prop_assert!(result.is_ok(), "{:?}", result);
        } else {
            let err = result.expect_err("too deep");
            prop_assert_eq!(err.code.as_str(), "bad_json");
        }
    }
}

/// Arrays and objects nested in `v` (a scalar is 0).
fn depth_of(v: &Value) -> usize {
    match v {
        Value::Array(a) => 1 + a.iter().map(depth_of).max().unwrap_or(0),
        Value::Object(o) => 1 + o.values().map(depth_of).max().unwrap_or(0),
        _ => 0,
    }
}
