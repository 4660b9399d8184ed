//! `janus-admin subscribe`: an ordinary client on the client port (not the
//! admin API) that prints each message as it arrives, like `nats sub`.
//!
//! It reads the hello, subscribes to each topic and waits for its `ACK`,
//! says so on stderr, then prints every delivery on stdout: one line per
//! message, or with `--json` the delivery exactly as the server sent it.
//! Ctrl-C (or `--count`) ends it with exit 0; an error frame or the server
//! closing the connection ends it with exit 1; failing to connect, exit 3.

use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use janus_core::{ClientMessage, ServerMessage};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_util::codec::{AnyDelimiterCodec, FramedRead};

use crate::client::ClientError;

/// Longest server frame accepted; deliveries carry at most a client frame
/// (64 KiB by default) plus the envelope, so this leaves ample room.
const MAX_FRAME: usize = 16 * 1024 * 1024;

/// What to subscribe to and how to print.
pub struct Subscription<'a> {
    /// The client port, `HOST:PORT`.
    pub addr: &'a str,
    /// The topics.
    pub topics: &'a [String],
    /// Print each delivery's JSON as received instead of a line of text.
    pub json: bool,
    /// Stop after this many messages.
    pub count: Option<u64>,
    /// How long to wait to connect, for the hello, and for each `ACK`.
    pub timeout: Duration,
}

/// Runs the subscription until Ctrl-C, `--count` messages, or the server ends it.
///
/// # Errors
/// [`ClientError::Unreachable`] when the port cannot be reached or does not
/// speak the Janus protocol; [`ClientError::Protocol`] for an error frame
/// or a closed connection; an I/O error when stdout cannot be written.
pub fn run(sub: &Subscription<'_>) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        tokio::select! {
            result = subscribe(sub) => result,
            ctrl_c = tokio::signal::ctrl_c() => ctrl_c.context("waiting for Ctrl-C"),
        }
    })
}

/// The whole life of the subscriber connection.
async fn subscribe(sub: &Subscription<'_>) -> anyhow::Result<()> {
    let unreachable = |reason: String| ClientError::Unreachable {
        target: format!("the client port at {}", sub.addr),
        reason,
    };
    let stream = tokio::time::timeout(sub.timeout, TcpStream::connect(sub.addr))
        .await
        .map_err(|_| unreachable(format!("no connection within {:?}", sub.timeout)))?
        .map_err(|e| unreachable(e.to_string()))?;
    // Deliveries should be printed as they come; the subscribe frames are tiny.
    stream.set_nodelay(true).ok();
    let (read, mut write) = stream.into_split();
    let codec = AnyDelimiterCodec::new_with_max_length(vec![0x01], vec![0x01], MAX_FRAME);
    let mut frames = FramedRead::new(read, codec);

    let no_hello = || {
        unreachable(format!(
            "no Janus hello within {:?}: is this the client port (default 8081)? \
             The admin API (default 8082) speaks HTTP, not the client protocol",
            sub.timeout
        ))
    };
    let hello = tokio::time::timeout(sub.timeout, frames.next())
        .await
        .map_err(|_| no_hello())?;
    match hello.map(|f| f.map(|bytes| parse(&bytes))) {
        Some(Ok(Ok(ServerMessage::Hello { .. }))) => {}
        Some(Ok(Ok(ServerMessage::Error { code, reason, .. }))) => {
            return Err(ClientError::Protocol { code, reason }.into())
        }
        _ => return Err(no_hello().into()),
    }

    for topic in sub.topics {
        let mut frame = BytesMut::new();
        ClientMessage::Subscribe(topic.clone()).encode(&mut frame);
        write
            .write_all(&frame)
            .await
            .map_err(|e| unreachable(format!("sending the subscribe: {e}")))?;
        let answer = tokio::time::timeout(sub.timeout, next(&mut frames))
            .await
            .map_err(|_| unreachable(format!("no ACK for {topic:?} within {:?}", sub.timeout)))??;
        match answer {
            // `subscribed` answers a client that turned on offsets (X1); this one has not.
            (ServerMessage::Ack | ServerMessage::Subscribed { .. }, _) => {}
            (ServerMessage::Error { code, reason, .. }, _) => {
                return Err(ClientError::Protocol { code, reason }.into())
            }
            (other, _) => anyhow::bail!("unexpected answer to subscribe {topic:?}: {other:?}"),
        }
    }
    eprintln!(
        "subscribed to {} on {}; Ctrl-C ends",
        sub.topics.join(", "),
        sub.addr
    );

    let mut received = 0u64;
    while sub.count.is_none_or(|n| received < n) {
        match next(&mut frames).await? {
            (ServerMessage::Delivery(d), raw) => {
                received += 1;
                let mut line = if sub.json {
                    String::from_utf8_lossy(&raw).into_owned()
                } else {
                    let mut line = d.topic;
                    if !d.event.is_empty() {
                        line += &format!(" event={}", d.event);
                    }
                    if !d.message_id.is_empty() {
                        line += &format!(" id={}", d.message_id);
                    }
                    line + " " + &d.data
                };
                line.push('\n');
                let mut stdout = std::io::stdout().lock();
                stdout
                    .write_all(line.as_bytes())
                    .and_then(|()| stdout.flush())
                    .context("writing the output")?;
            }
            (ServerMessage::Ping, _) => {
                let mut pong = BytesMut::new();
                ClientMessage::Pong.encode(&mut pong);
                // A failed PONG shows up as the connection closing.
                let _ = write.write_all(&pong).await;
            }
            (ServerMessage::Error { code, reason, .. }, _) => {
                return Err(ClientError::Protocol { code, reason }.into())
            }
            (
                ServerMessage::Ack
                | ServerMessage::Hello { .. }
                | ServerMessage::Resumed { .. }
                | ServerMessage::Subscribed { .. },
                _,
            ) => {}
        }
    }
    Ok(())
}

/// The next server frame, parsed, with its raw payload.
async fn next(
    frames: &mut FramedRead<tokio::net::tcp::OwnedReadHalf, AnyDelimiterCodec>,
) -> anyhow::Result<(ServerMessage, Bytes)> {
    match frames.next().await {
        Some(Ok(raw)) => {
            let message = parse(&raw).map_err(|e| anyhow::anyhow!("{e}"))?;
            Ok((message, raw))
        }
        Some(Err(e)) => Err(ClientError::Protocol {
            code: "connection".into(),
            reason: format!("reading from the server: {e}"),
        }
        .into()),
        None => Err(ClientError::Protocol {
            code: "closed".into(),
            reason: "the server closed the connection".into(),
        }
        .into()),
    }
}

fn parse(raw: &[u8]) -> Result<ServerMessage, String> {
    let text = std::str::from_utf8(raw).map_err(|e| format!("server frame is not UTF-8: {e}"))?;
    ServerMessage::parse(text)
}
