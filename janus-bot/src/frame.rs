//! Cheap reading of server frames on the bot's hot path.
//!
//! A bot worker reads tens of thousands of deliveries per second on a
//! machine it shares with the server, so it does not build a
//! [`janus_core::ServerMessage`] per delivery. It splits the byte stream at
//! the `0x01` terminator (protocol P1) without copying complete frames, and
//! from a delivery (P6) it reads only the two things it needs:
//!
//! ```text
//! {"timestamp":[1764,471234,56789],"topic":"t","event":"e","message_id":"42","data":...}␁
//!               └── server time, sanity check only ──┘          └ sequence ┘
//! ```
//!
//! P6 fixes the key order, and a `"message_id":"` with unescaped quotes cannot
//! occur inside the JSON strings that precede it, so a substring search finds
//! the right field. Everything rarer (hello, errors) goes through
//! [`janus_core::ServerMessage::parse`].

use janus_core::SERVER_TERMINATOR;

/// A server frame, classified without parsing JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame<'a> {
    /// `ACK`.
    Ack,
    /// `PING`.
    Ping,
    /// A delivery (P6).
    Delivery(DeliveryRef<'a>),
    /// Anything else (hello, error, resumed, or garbage): parse it fully.
    Other(&'a [u8]),
}

/// What the bot reads from a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryRef<'a> {
    /// The server's `timestamp` in Unix microseconds, if it was readable.
    pub server_micros: Option<u64>,
    /// The raw bytes of the `message_id` string, without quotes or unescaping.
    pub message_id: &'a [u8],
}

const TIMESTAMP_KEY: &[u8] = b"{\"timestamp\":[";
const MESSAGE_ID_KEY: &[u8] = b"\"message_id\":\"";

/// Classifies one frame payload (terminator removed).
pub fn classify(frame: &[u8]) -> Frame<'_> {
    match frame {
        b"ACK" => return Frame::Ack,
        b"PING" => return Frame::Ping,
        _ => {}
    }
    let Some(after_ts) = frame.strip_prefix(TIMESTAMP_KEY) else {
        return Frame::Other(frame);
    };
    let Some(at) = memchr::memmem::find(after_ts, MESSAGE_ID_KEY) else {
        return Frame::Other(frame);
    };
    let id_start = &after_ts[at + MESSAGE_ID_KEY.len()..];
    let Some(end) = memchr::memchr(b'"', id_start) else {
        return Frame::Other(frame);
    };
    Frame::Delivery(DeliveryRef {
        server_micros: parse_timestamp(after_ts),
        message_id: &id_start[..end],
    })
}

/// Reads `MEGA,SEC,MICRO]` as Unix microseconds.
fn parse_timestamp(s: &[u8]) -> Option<u64> {
    let mut parts = [0u64; 3];
    let mut rest = s;
    for (i, part) in parts.iter_mut().enumerate() {
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        if digits == 0 || digits > 19 {
            return None;
        }
        *part = parse_u64(&rest[..digits])?;
        let sep = if i == 2 { b']' } else { b',' };
        if rest.get(digits) != Some(&sep) {
            return None;
        }
        rest = &rest[digits + 1..];
    }
    let [mega, sec, micro] = parts;
    mega.checked_mul(1_000_000)?
        .checked_add(sec)?
        .checked_mul(1_000_000)?
        .checked_add(micro)
}

fn parse_u64(digits: &[u8]) -> Option<u64> {
    digits.iter().try_fold(0u64, |acc, &d| {
        if d.is_ascii_digit() {
            acc.checked_mul(10)?.checked_add(u64::from(d - b'0'))
        } else {
            None
        }
    })
}

/// The sequence number in a bot message id (plain decimal digits).
pub fn parse_seq(message_id: &[u8]) -> Option<u32> {
    if message_id.is_empty() || message_id.len() > 10 {
        return None;
    }
    parse_u64(message_id).and_then(|v| u32::try_from(v).ok())
}

/// A frame grew past the maximum without a terminator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("server frame longer than {max} bytes")]
pub struct FrameTooLarge {
    /// The maximum in force.
    pub max: usize,
}

/// Splits `chunk` into frames, continuing the partial frame in `partial`.
///
/// Complete frames inside `chunk` are handed to `on_frame` in place; only a
/// frame cut by the end of a read is copied, into `partial`, which is
/// allocated while such a frame is pending and freed once it completes.
/// `on_frame` returns `false` to stop (the connection is being closed); the
/// rest of the chunk is then dropped.
///
/// # Errors
/// [`FrameTooLarge`] when a pending frame exceeds `max` bytes.
pub fn split(
    partial: &mut Option<Vec<u8>>,
    chunk: &[u8],
    max: usize,
    mut on_frame: impl FnMut(&[u8]) -> bool,
) -> Result<(), FrameTooLarge> {
    let mut rest = chunk;
    if let Some(pending) = partial {
        match memchr::memchr(SERVER_TERMINATOR, rest) {
            None => {
                pending.extend_from_slice(rest);
                if pending.len() > max {
                    return Err(FrameTooLarge { max });
                }
                return Ok(());
            }
            Some(i) => {
                pending.extend_from_slice(&rest[..i]);
                if pending.len() > max {
                    return Err(FrameTooLarge { max });
                }
                rest = &rest[i + 1..];
                let go_on = on_frame(pending);
                *partial = None;
                if !go_on {
                    return Ok(());
                }
            }
        }
    }
    while let Some(i) = memchr::memchr(SERVER_TERMINATOR, rest) {
        if i > max {
            return Err(FrameTooLarge { max });
        }
        if !on_frame(&rest[..i]) {
            return Ok(());
        }
        rest = &rest[i + 1..];
    }
    if !rest.is_empty() {
        if rest.len() > max {
            return Err(FrameTooLarge { max });
        }
        *partial = Some(rest.to_vec());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use janus_core::{Publish, Timestamp};

    fn delivery(id: &str) -> Vec<u8> {
        Publish::new("t\"opic", "e", id, "{\"message_id\":\"x\"}")
            .unwrap()
            .encode_delivery(Timestamp::from_parts(1764, 471_234, 56_789))
            .to_vec()
    }

    #[test]
    fn classifies_frames() {
        let d = delivery("42");
        let body = &d[..d.len() - 1];
        assert_eq!(
            classify(body),
            Frame::Delivery(DeliveryRef {
                server_micros: Some(1_764_471_234_056_789),
                message_id: b"42",
            })
        );
        assert_eq!(classify(b"ACK"), Frame::Ack);
        assert_eq!(classify(b"PING"), Frame::Ping);
        let hello = b"{\"timestamp\":[1,2,3],\"token\":\"ab\"}";
        assert_eq!(classify(hello), Frame::Other(hello));
        let err = b"{\"timestamp\":[1,2,3],\"error\":\"bad_json\",\"reason\":\"x\"}";
        assert_eq!(classify(err), Frame::Other(err));
        assert_eq!(classify(b"garbage"), Frame::Other(b"garbage"));
        // A garbled timestamp still classifies; only the sanity check is lost.
        let odd = b"{\"timestamp\":[1,x,3],\"topic\":\"t\",\"message_id\":\"7\"}";
        assert!(matches!(
            classify(odd),
            Frame::Delivery(DeliveryRef {
                server_micros: None,
                message_id: b"7"
            })
        ));
    }

    #[test]
    fn sequence_numbers() {
        assert_eq!(parse_seq(b"0"), Some(0));
        assert_eq!(parse_seq(b"4294967295"), Some(u32::MAX));
        for bad in [
            &b""[..],
            b"4294967296",
            b"-1",
            b"1a",
            b"abc",
            b"12345678901",
        ] {
            assert_eq!(parse_seq(bad), None, "{bad:?}");
        }
    }

    fn collect(chunks: &[&[u8]], max: usize) -> Result<Vec<Vec<u8>>, FrameTooLarge> {
        let mut partial = None;
        let mut out = Vec::new();
        for chunk in chunks {
            split(&mut partial, chunk, max, |f| {
                out.push(f.to_vec());
                true
            })?;
        }
        Ok(out)
    }

    #[test]
    fn splits_across_any_cut() {
        let mut stream = b"ACK\x01".to_vec();
        stream.extend(delivery("1"));
        stream.extend(delivery("2"));
        let whole = collect(&[&stream], 1024).unwrap();
        assert_eq!(whole.len(), 3);
        for cut in 0..stream.len() {
            let got = collect(&[&stream[..cut], &stream[cut..]], 1024).unwrap();
            assert_eq!(got, whole, "cut at {cut}");
        }
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(collect(&bytes, 1024).unwrap(), whole);
    }

    #[test]
    fn partial_buffer_is_freed_once_the_frame_completes() {
        let mut partial = None;
        split(&mut partial, b"AC", 16, |_| true).unwrap();
        assert_eq!(partial.as_deref(), Some(&b"AC"[..]));
        split(&mut partial, b"K\x01", 16, |_| true).unwrap();
        assert!(partial.is_none());
    }

    #[test]
    fn over_long_frames_are_errors() {
        assert_eq!(collect(&[&[b'x'; 17]], 16), Err(FrameTooLarge { max: 16 }));
        assert_eq!(
            collect(&[&[b'x'; 10], &[b'x'; 10]], 16),
            Err(FrameTooLarge { max: 16 })
        );
        let mut long = vec![b'x'; 20];
        long.push(1);
        assert!(collect(&[&long], 16).is_err());
        assert!(collect(&[&long[..10], &long[10..]], 16).is_err());
        assert_eq!(collect(&[b"xxxx\x01"], 4).unwrap().len(), 1);
    }

    #[test]
    fn stopping_drops_the_rest() {
        let mut partial = None;
        let mut seen = 0;
        split(&mut partial, b"ACK\x01ACK\x01AC", 16, |_| {
            seen += 1;
            false
        })
        .unwrap();
        assert_eq!(seen, 1);
        assert!(partial.is_none());
    }
}
