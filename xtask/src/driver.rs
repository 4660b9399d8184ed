//! Small protocol clients for the scenarios `janus-bot` does not cover:
//! subscribers that record latencies, a publisher, and the shared tallies
//! they fill.
//!
//! Latency is measured on one clock, ours: every publish carries its send
//! time (Unix µs) in `data` as `{"t":SENT_US,"p":"padding"}`, and a
//! subscriber subtracts it from its own clock when the delivery arrives. The
//! `message_id` is the message's sequence number, so every subscriber can
//! check order and count gaps, and per-message first/last arrival times give
//! the fan-out span of each message.
//!
//! Deliveries are read with a scan for those two fields, not a JSON parse:
//! the server's key order is fixed (PROTOCOL P6), and a driver holding
//! thousands of connections must leave the CPU to the server. Anything else
//! goes through `janus_core::ServerMessage::parse`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use bytes::{Bytes, BytesMut};
use janus_core::{ClientCodec, ClientMessage, Publish, ServerMessage};
use janus_histo::{Recorder, SpanPoint, SpanSeries};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Semaphore;

/// Microseconds since the Unix epoch, on this machine's clock.
pub fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// What one server frame is, as far as a driver cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A delivery: its sequence number and send time.
    Delivery {
        /// `message_id`, the publish sequence number.
        seq: u64,
        /// `data.t`, Unix µs when the publisher sent it.
        sent_us: u64,
    },
    /// `ACK`.
    Ack,
    /// `PING`.
    Ping,
    /// An error frame, with its code.
    Error(String),
    /// The hello, or anything else (a delivery not made by our publisher).
    Other,
}

/// The digits after `key` in `frame`, if `key` occurs.
fn number_after(frame: &[u8], key: &[u8]) -> Option<u64> {
    let at = memfind(frame, key)? + key.len();
    let digits = frame[at..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count();
    std::str::from_utf8(&frame[at..at + digits])
        .ok()?
        .parse()
        .ok()
}

fn memfind(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Classifies one server frame (terminator removed).
pub fn classify(frame: &[u8]) -> Frame {
    match frame {
        b"ACK" => return Frame::Ack,
        b"PING" => return Frame::Ping,
        _ => {}
    }
    if let (Some(seq), Some(sent_us)) = (
        number_after(frame, b",\"message_id\":\""),
        number_after(frame, b",\"data\":{\"t\":"),
    ) {
        return Frame::Delivery { seq, sent_us };
    }
    match std::str::from_utf8(frame).map(ServerMessage::parse) {
        Ok(Ok(ServerMessage::Error { code, .. })) => Frame::Error(code),
        Ok(Ok(ServerMessage::Ack)) => Frame::Ack,
        _ => Frame::Other,
    }
}

/// One client connection, after the server's hello.
#[derive(Debug)]
pub struct Conn {
    stream: TcpStream,
    buf: BytesMut,
    codec: ClientCodec,
}

impl Conn {
    /// Connects, optionally with a small receive buffer (a slow reader
    /// whose kernel buffer fills quickly), and reads the hello.
    ///
    /// # Errors
    /// Connection refused, closed, or no hello within 10 s.
    pub async fn connect(addr: SocketAddr, recv_buffer: Option<u32>) -> Result<Conn> {
        let socket = TcpSocket::new_v4().context("socket")?;
        if let Some(size) = recv_buffer {
            socket.set_recv_buffer_size(size).context("SO_RCVBUF")?;
        }
        let stream = socket
            .connect(addr)
            .await
            .with_context(|| format!("connect to {addr}"))?;
        stream.set_nodelay(true).context("TCP_NODELAY")?;
        let mut conn = Conn {
            stream,
            buf: BytesMut::with_capacity(1024),
            codec: ClientCodec::default(),
        };
        match tokio::time::timeout(Duration::from_secs(10), conn.frame()).await {
            Ok(Ok(Some(_hello))) => Ok(conn),
            Ok(Ok(None)) => bail!("closed before hello"),
            Ok(Err(e)) => Err(e),
            Err(_) => bail!("no hello within 10 s"),
        }
    }

    /// Connects with retries (a listen backlog overflowing under thousands
    /// of simultaneous connects is the server's problem only if it persists).
    ///
    /// # Errors
    /// The last attempt's error.
    pub async fn connect_retrying(addr: SocketAddr, recv_buffer: Option<u32>) -> Result<Conn> {
        let mut delay = Duration::from_millis(50);
        for _ in 0..4 {
            if let Ok(conn) = Conn::connect(addr, recv_buffer).await {
                return Ok(conn);
            }
            tokio::time::sleep(delay).await;
            delay *= 2;
        }
        Conn::connect(addr, recv_buffer).await
    }

    /// Writes client messages in one write.
    ///
    /// # Errors
    /// The connection failed.
    pub async fn send(&mut self, messages: &[ClientMessage]) -> Result<()> {
        let mut out = BytesMut::new();
        for m in messages {
            m.encode(&mut out);
        }
        self.stream.write_all(&out).await.context("write")?;
        Ok(())
    }

    /// The next frame, or `None` at end of stream.
    ///
    /// # Errors
    /// Read errors (including reset) and over-long frames.
    pub async fn frame(&mut self) -> Result<Option<Bytes>> {
        next_frame(&mut self.stream, &mut self.buf, &mut self.codec).await
    }

    /// Subscribes to `topics` and waits for one `ACK` each (10 s at most).
    /// Deliveries that arrive meanwhile are skipped (the scenarios publish
    /// only once every client has subscribed; churn clients discard them).
    ///
    /// # Errors
    /// Error frame, end of stream, or timeout.
    pub async fn subscribe(&mut self, topics: &[String]) -> Result<()> {
        let msgs: Vec<ClientMessage> = topics
            .iter()
            .map(|t| ClientMessage::Subscribe(t.clone()))
            .collect();
        self.send(&msgs).await?;
        let mut acks = 0;
        let wait = async {
            while acks < topics.len() {
                let Some(frame) = self.frame().await? else {
                    bail!("closed while subscribing");
                };
                match classify(&frame) {
                    Frame::Ack => acks += 1,
                    Frame::Error(code) => bail!("subscribe answered with error {code}"),
                    _ => {}
                }
            }
            Ok(())
        };
        tokio::time::timeout(Duration::from_secs(10), wait)
            .await
            .context("no ACK within 10 s")?
    }

    /// Splits off the write half (to close or keep it) and returns a reader.
    pub fn into_parts(self) -> (FrameReader, OwnedWriteHalf) {
        let (read, write) = self.stream.into_split();
        (
            FrameReader {
                read,
                buf: self.buf,
                codec: self.codec,
            },
            write,
        )
    }
}

/// The next raw server frame from `read`, buffering in `buf`; `None` at end of stream.
async fn next_frame(
    read: &mut (impl tokio::io::AsyncRead + Unpin),
    buf: &mut BytesMut,
    codec: &mut ClientCodec,
) -> Result<Option<Bytes>> {
    loop {
        if let Some(frame) = codec.decode_raw(buf)? {
            return Ok(Some(frame));
        }
        if buf.capacity() - buf.len() < 512 {
            buf.reserve(4096);
        }
        if read.read_buf(buf).await.context("read")? == 0 {
            return Ok(None);
        }
    }
}

/// The reading half of a [`Conn`].
#[derive(Debug)]
pub struct FrameReader {
    read: tokio::net::tcp::OwnedReadHalf,
    buf: BytesMut,
    codec: ClientCodec,
}

impl FrameReader {
    /// The next frame, or `None` at end of stream.
    ///
    /// # Errors
    /// Read errors (including reset) and over-long frames.
    pub async fn frame(&mut self) -> Result<Option<Bytes>> {
        next_frame(&mut self.read, &mut self.buf, &mut self.codec).await
    }
}

/// Per-message arrival times and the run's totals, shared by every task.
#[derive(Debug)]
pub struct Tally {
    /// Unix µs at `start`.
    start_unix_us: u64,
    /// Per message: µs since `start` when it was published.
    sent: Vec<AtomicU64>,
    /// Per message: µs since `start` of its first arrival (`u64::MAX` = none yet).
    first: Vec<AtomicU64>,
    /// Per message: µs since `start` of its last arrival.
    last: Vec<AtomicU64>,
    /// Per message: arrivals.
    arrivals: Vec<AtomicU32>,
    /// Deliveries counted (in order, once each).
    pub received: AtomicU64,
    /// Client-side failures: connect, subscribe, read errors, misordering.
    pub errors: AtomicU64,
}

impl Tally {
    /// A tally for `messages` messages.
    pub fn new(messages: u64) -> Arc<Tally> {
        let n = usize::try_from(messages).unwrap_or(usize::MAX);
        let vec = |v: u64| (0..n).map(|_| AtomicU64::new(v)).collect::<Vec<_>>();
        Arc::new(Tally {
            start_unix_us: unix_micros(),
            sent: vec(0),
            first: vec(u64::MAX),
            last: vec(0),
            arrivals: (0..n).map(|_| AtomicU32::new(0)).collect(),
            received: AtomicU64::new(0),
            errors: AtomicU64::new(0),
        })
    }

    /// Records that message `seq` was just sent; returns its send time (Unix µs).
    pub fn sent(&self, seq: u64) -> u64 {
        let now = unix_micros();
        if let Some(slot) = self.sent.get(seq as usize) {
            slot.store(now.saturating_sub(self.start_unix_us), Ordering::Relaxed);
        }
        now
    }

    /// Records an arrival of message `seq` sent at `sent_us`; returns its latency in µs.
    pub fn arrived(&self, seq: u64, sent_us: u64) -> u64 {
        let now = unix_micros();
        let at = now.saturating_sub(self.start_unix_us);
        if let Some(i) = usize::try_from(seq).ok().filter(|i| *i < self.first.len()) {
            self.first[i].fetch_min(at, Ordering::Relaxed);
            self.last[i].fetch_max(at, Ordering::Relaxed);
            self.arrivals[i].fetch_add(1, Ordering::Relaxed);
        }
        self.received.fetch_add(1, Ordering::Relaxed);
        now.saturating_sub(sent_us)
    }

    /// Counts one client-side failure.
    pub fn error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    /// The span series of every message that arrived at least once.
    pub fn spans(&self) -> SpanSeries {
        let mut series = SpanSeries::new();
        for (i, first) in self.first.iter().enumerate() {
            let first = first.load(Ordering::Relaxed);
            if first == u64::MAX {
                continue;
            }
            let last = self.last[i].load(Ordering::Relaxed);
            let sent = self.sent[i].load(Ordering::Relaxed);
            series.push(SpanPoint {
                at_s: Some(sent as f64 / 1e6),
                max_ms: Some(last.saturating_sub(sent) as f64 / 1e3),
                ..SpanPoint::new(i as u64, last.saturating_sub(first) as f64 / 1e3)
            });
        }
        series
    }

    /// Seconds from the first publish to the last arrival of any message.
    pub fn active_s(&self) -> f64 {
        let first_sent = self.sent.first().map_or(0, |s| s.load(Ordering::Relaxed));
        let last = self
            .last
            .iter()
            .map(|l| l.load(Ordering::Relaxed))
            .max()
            .unwrap_or(0);
        last.saturating_sub(first_sent) as f64 / 1e6
    }
}

/// What one subscriber saw.
#[derive(Debug, Default)]
pub struct Seen {
    /// Latency of every delivery, µs.
    pub latencies: Vec<u32>,
    /// Deliveries in order.
    pub in_order: u64,
    /// Deliveries that repeated or went back in sequence.
    pub misordered: u64,
    /// Whether the server closed the connection.
    pub closed: bool,
    /// Error codes the server sent.
    pub error_codes: Vec<String>,
}

impl Seen {
    /// Folds every latency into `recorder`.
    pub fn record_into(&self, recorder: &mut Recorder) {
        for l in &self.latencies {
            recorder.record_micros(u64::from(*l));
        }
    }
}

/// Reads deliveries until `expected` arrived in order, the stream ends, or
/// `stop` fires. `topic_of(seq)` says which of this client's topics (index
/// into its subscriptions) a message belongs to, for the order check.
pub async fn read_deliveries(
    reader: &mut FrameReader,
    tally: &Tally,
    expected: u64,
    topics: usize,
    topic_of: impl Fn(u64) -> usize,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Seen {
    let mut seen = Seen {
        latencies: Vec::with_capacity(usize::try_from(expected).unwrap_or(0).min(1 << 20)),
        ..Seen::default()
    };
    let mut last_seq: Vec<Option<u64>> = vec![None; topics.max(1)];
    while seen.in_order < expected {
        let frame = tokio::select! {
            biased;
            f = reader.frame() => f,
            _ = stop.wait_for(|s| *s) => break,
        };
        match frame {
            Ok(Some(frame)) => match classify(&frame) {
                Frame::Delivery { seq, sent_us } => {
                    let slot = topic_of(seq).min(last_seq.len() - 1);
                    if last_seq[slot].is_some_and(|l| seq <= l) {
                        seen.misordered += 1;
                        tally.error();
                        continue;
                    }
                    last_seq[slot] = Some(seq);
                    let latency = tally.arrived(seq, sent_us);
                    seen.latencies
                        .push(u32::try_from(latency).unwrap_or(u32::MAX));
                    seen.in_order += 1;
                }
                Frame::Error(code) => seen.error_codes.push(code),
                Frame::Ack | Frame::Ping | Frame::Other => {}
            },
            Ok(None) => {
                seen.closed = true;
                break;
            }
            Err(_) => {
                seen.closed = true;
                tally.error();
                break;
            }
        }
    }
    seen
}

/// How the publisher reaches the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishMode {
    /// PROTOCOL X3: one connection, `{"action":"publish",...}`, `ACK` each.
    Persistent,
    /// PROTOCOL P5: one connection per message, closed by the server.
    OneShot,
}

/// Publishes numbered, timestamped messages.
#[derive(Debug)]
pub struct Publisher {
    addr: SocketAddr,
    mode: PublishMode,
    write: Option<OwnedWriteHalf>,
    /// Reads `ACK`s (persistent mode) so the server never blocks on us.
    acks: Option<tokio::task::JoinHandle<(u64, Vec<String>)>>,
    padding: String,
}

impl Publisher {
    /// Connects and finds out whether the server takes persistent publishes
    /// (X3), falling back to one-shot ones (P5).
    ///
    /// # Errors
    /// The server cannot be reached.
    pub async fn connect(addr: SocketAddr, payload: usize) -> Result<Publisher> {
        let mut conn = Conn::connect_retrying(addr, None)
            .await
            .context("publisher")?;
        let probe = ClientMessage::Publish {
            publish: Publish::new("xtask-probe", "probe", "probe", "0")
                .map_err(|e| anyhow::anyhow!("probe publish: {}", e.reason))?,
            one_shot: false,
        };
        conn.send(&[probe]).await?;
        let answer = tokio::time::timeout(Duration::from_secs(3), conn.frame()).await;
        let persistent = matches!(&answer, Ok(Ok(Some(f))) if classify(f) == Frame::Ack);
        // `data` = {"t":SENT,"p":"xxx"}: pad to about `payload` bytes.
        let padding = "x".repeat(payload.saturating_sub(30));
        if !persistent {
            return Ok(Publisher {
                addr,
                mode: PublishMode::OneShot,
                write: None,
                acks: None,
                padding,
            });
        }
        let (mut reader, write) = conn.into_parts();
        let acks = tokio::spawn(async move {
            let mut acks = 0;
            let mut errors = Vec::new();
            while let Ok(Some(frame)) = reader.frame().await {
                match classify(&frame) {
                    Frame::Ack => acks += 1,
                    Frame::Error(code) => errors.push(code),
                    _ => {}
                }
            }
            (acks, errors)
        });
        Ok(Publisher {
            addr,
            mode: PublishMode::Persistent,
            write: Some(write),
            acks: Some(acks),
            padding,
        })
    }

    /// How messages are published.
    pub fn mode(&self) -> PublishMode {
        self.mode
    }

    /// Publishes message `seq` on `topic`, stamped with the send time.
    ///
    /// # Errors
    /// The publish connection failed.
    pub async fn publish(&mut self, tally: &Arc<Tally>, topic: &str, seq: u64) -> Result<()> {
        let sent = tally.sent(seq);
        let data = format!("{{\"t\":{sent},\"p\":\"{}\"}}", self.padding);
        let publish = Publish::new(topic, "load", seq.to_string(), &data)
            .map_err(|e| anyhow::anyhow!("cannot build publish: {}", e.reason))?;
        match self.mode {
            PublishMode::Persistent => {
                let mut out = BytesMut::new();
                ClientMessage::Publish {
                    publish,
                    one_shot: false,
                }
                .encode(&mut out);
                let write = self.write.as_mut().context("publisher closed")?;
                write.write_all(&out).await.context("publish write")?;
            }
            PublishMode::OneShot => {
                // One at a time: two one-shot connections in flight could be
                // handled in either order, and the order check would blame the server.
                if one_shot(self.addr, publish).await.is_err() {
                    tally.error();
                }
            }
        }
        Ok(())
    }

    /// Publishes `count` messages at `rate` per second, message `i` on
    /// `topic_of(i)`, keeping to the schedule (a late start is caught up).
    ///
    /// # Errors
    /// The publish connection failed.
    pub async fn run(
        &mut self,
        tally: &Arc<Tally>,
        count: u64,
        rate: f64,
        topic_of: impl Fn(u64) -> String,
    ) -> Result<()> {
        let start = tokio::time::Instant::now();
        for seq in 0..count {
            let due = start + Duration::from_secs_f64(seq as f64 / rate);
            tokio::time::sleep_until(due).await;
            self.publish(tally, &topic_of(seq), seq).await?;
        }
        Ok(())
    }

    /// Closes the connection and returns the error codes the server
    /// answered publishes with.
    pub async fn finish(mut self) -> Vec<String> {
        if let Some(mut write) = self.write.take() {
            let _ = write.shutdown().await;
        }
        match self.acks.take() {
            Some(task) => match tokio::time::timeout(Duration::from_secs(5), task).await {
                Ok(Ok((_, errors))) => errors,
                _ => Vec::new(),
            },
            None => Vec::new(),
        }
    }
}

/// One PROTOCOL P5 publish on a fresh connection; succeeds when the server
/// closes it without an error frame.
async fn one_shot(addr: SocketAddr, publish: Publish) -> Result<()> {
    let mut conn = Conn::connect_retrying(addr, None).await?;
    conn.send(&[ClientMessage::Publish {
        publish,
        one_shot: true,
    }])
    .await?;
    let drain = async {
        while let Some(frame) = conn.frame().await? {
            if let Frame::Error(code) = classify(&frame) {
                bail!("publish refused: {code}");
            }
        }
        Ok(())
    };
    tokio::time::timeout(Duration::from_secs(10), drain)
        .await
        .context("server did not close a one-shot publish")?
}

/// Runs `setup` for each of `count` clients, at most `parallel` at a time,
/// and returns the successes in order with how many failed.
pub async fn setup_all<T, F, Fut>(count: usize, parallel: usize, setup: F) -> (Vec<T>, usize)
where
    T: Send + 'static,
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Result<T>> + Send + 'static,
{
    let gate = Arc::new(Semaphore::new(parallel.max(1)));
    let mut tasks = Vec::with_capacity(count);
    for i in 0..count {
        let fut = setup(i);
        let gate = Arc::clone(&gate);
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await.ok();
            fut.await
        }));
    }
    let mut ok = Vec::with_capacity(count);
    let mut failed = 0;
    let mut first_error = None;
    for task in tasks {
        match task.await {
            Ok(Ok(v)) => ok.push(v),
            Ok(Err(e)) => {
                failed += 1;
                first_error.get_or_insert(e);
            }
            Err(_) => failed += 1,
        }
    }
    if let Some(e) = first_error {
        eprintln!("xtask: {failed} of {count} clients failed to set up; first: {e:#}");
    }
    (ok, failed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use janus_core::Timestamp;

    #[test]
    fn deliveries_are_recognized_without_parsing() {
        let p = Publish::new("t-1", "load", "42", "{\"t\":1700000000123456,\"p\":\"xx\"}").unwrap();
        let frame = p.encode_delivery(Timestamp::now());
        let frame = &frame[..frame.len() - 1];
        assert_eq!(
            classify(frame),
            Frame::Delivery {
                seq: 42,
                sent_us: 1_700_000_000_123_456
            }
        );
        assert_eq!(classify(b"ACK"), Frame::Ack);
        assert_eq!(classify(b"PING"), Frame::Ping);
        let err = b"{\"timestamp\":[1,2,3],\"error\":\"slow_consumer\",\"reason\":\"queue full\"}";
        assert_eq!(classify(err), Frame::Error("slow_consumer".into()));
        let hello = b"{\"timestamp\":[1,2,3],\"token\":\"abc\"}";
        assert_eq!(classify(hello), Frame::Other);
        let foreign = Publish::new("t", "e", "id", "5")
            .unwrap()
            .encode_delivery(Timestamp::now());
        assert_eq!(classify(&foreign[..foreign.len() - 1]), Frame::Other);
    }

    #[test]
    fn tally_spans() {
        let tally = Tally::new(3);
        let sent = tally.sent(0);
        let l = tally.arrived(0, sent);
        assert!(l < 1_000_000);
        tally.arrived(0, sent);
        tally.arrived(7, sent); // out of range: counted, no span
        assert_eq!(tally.received.load(Ordering::Relaxed), 3);
        let spans = tally.spans();
        assert_eq!(spans.len(), 1);
        assert!(spans.points[0].span_ms >= 0.0);
    }

    /// A fake server: hello, ACK per subscribe, then the given deliveries.
    async fn fake_server(deliveries: Vec<Bytes>) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            s.write_all(b"{\"timestamp\":[1,2,3],\"token\":\"ab\"}\x01")
                .await
                .unwrap();
            let mut buf = [0u8; 256];
            let n = s.read(&mut buf).await.unwrap();
            assert!(buf[..n].starts_with(b"{\"action\":\"subscribe\""));
            s.write_all(b"ACK\x01").await.unwrap();
            for d in deliveries {
                s.write_all(&d).await.unwrap();
            }
        });
        addr
    }

    #[tokio::test]
    async fn a_subscriber_counts_in_order_deliveries_and_end_of_stream() {
        let tally = Tally::new(3);
        let mk = |seq: u64| {
            let sent = tally.sent(seq);
            Publish::new(
                "t",
                "load",
                seq.to_string(),
                &format!("{{\"t\":{sent},\"p\":\"\"}}"),
            )
            .unwrap()
            .encode_delivery(Timestamp::now())
        };
        let addr = fake_server(vec![mk(0), mk(2), mk(1)]).await;
        let mut conn = Conn::connect(addr, None).await.unwrap();
        conn.subscribe(&["t".into()]).await.unwrap();
        let (mut reader, _write) = conn.into_parts();
        let (_tx, rx) = tokio::sync::watch::channel(false);
        let seen = read_deliveries(&mut reader, &tally, 3, 1, |_| 0, rx).await;
        assert_eq!(seen.in_order, 2);
        assert_eq!(seen.misordered, 1);
        assert!(seen.closed);
        assert_eq!(seen.latencies.len(), 2);
    }
}
