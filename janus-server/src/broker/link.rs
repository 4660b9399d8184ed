//! The link task: owns the two Redis connections of a node, (re)connects
//! with backoff, keeps the node subscribed to exactly the topics it has
//! interest in, and hands every message to the server in offset order —
//! filling holes from the topic streams after a reconnect.
//!
//! One task does all of it, so the per-topic order needs no lock: topic
//! [`Track`]s live here and nowhere else. The connections are replaced
//! together: when either fails (the subscription stream ends, a command
//! times out, a ping goes unanswered) both are dropped and the task starts
//! over, resubscribing and catching up before it reports ready again.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{stream, StreamExt};
use redis::aio::{MultiplexedConnection, PubSubSink, PubSubStream};
use redis::{AsyncConnectionConfig, Msg, RedisResult};
use tokio::sync::{mpsc, oneshot};

use super::backplane::{Inner, TopicPosition};
use super::codec::{decode_body, decode_live, NodeCommand};
use super::inbound::BrokerMessage;
use super::order::{Next, Step, TopicGap, Track, Verdict};
use super::stats::BrokerStats;
use super::Unavailable;

/// Channels per `SUBSCRIBE`/`UNSUBSCRIBE` command.
const CHANNELS_PER_COMMAND: usize = 512;

/// Requests taken from the queue at once, folded into one batch.
const REQUESTS_PER_BATCH: usize = 4096;

/// History reads in flight at once while catching up.
const CONCURRENT_READS: usize = 32;

/// What the [`super::Broker`] handle asks of the link task.
#[derive(Debug)]
pub(crate) enum Request {
    /// Interest in a topic began; answer once Redis confirmed it.
    Subscribe {
        topic: String,
        reply: oneshot::Sender<Result<TopicPosition, Unavailable>>,
    },
    /// Interest in a topic ended.
    Unsubscribe { topic: String },
}

/// The two connections of one link generation.
struct Wire {
    /// Commands: history reads while catching up, pings.
    conn: MultiplexedConnection,
    /// Subscribes and unsubscribes.
    sink: PubSubSink,
    /// Messages of every subscribed channel, in order.
    stream: PubSubStream,
}

/// The link task's state.
pub(crate) struct Link {
    inner: Arc<Inner>,
    requests: mpsc::UnboundedReceiver<Request>,
    /// Topics of interest and where the node is in each.
    topics: HashMap<String, Track>,
    /// Counts connection attempts; tells a stale "link lost" signal apart.
    generation: u64,
    /// This node's inbox channel.
    inbox: String,
    /// Tells [`super::Broker::connect`] how the first attempt went.
    first: Option<oneshot::Sender<Result<(), String>>>,
}

/// Runs `future` within `timeout`, describing a failure for the logs.
async fn within<T>(
    timeout: Duration,
    what: &str,
    future: impl std::future::Future<Output = RedisResult<T>>,
) -> Result<T, String> {
    match tokio::time::timeout(timeout, future).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(format!("{what}: {e}")),
        Err(_) => Err(format!("{what}: no answer within {timeout:?}")),
    }
}

/// A random fraction (0..=25 %) of `delay`, so that nodes restarted
/// together do not reconnect in lockstep.
fn jitter(delay: Duration) -> Duration {
    let random = janus_core::Token::random().as_u128() as u64;
    delay.mul_f64((random % 1000) as f64 / 4000.0)
}

impl Link {
    pub fn new(
        inner: Arc<Inner>,
        requests: mpsc::UnboundedReceiver<Request>,
        first: oneshot::Sender<Result<(), String>>,
    ) -> Link {
        Link {
            inbox: inner.keys.inbox(&inner.node_id),
            inner,
            requests,
            topics: HashMap::new(),
            generation: 0,
            first: Some(first),
        }
    }

    /// Connects, serves, and reconnects with backoff until shutdown.
    pub async fn run(mut self) {
        let options = self.inner.options.clone();
        let mut delay = options.reconnect_min;
        let mut failures = 0u32;
        let shutdown = self.inner.shutdown.clone();
        loop {
            self.generation += 1;
            let attempt = tokio::select! {
                attempt = self.establish() => attempt,
                () = shutdown.cancelled() => break,
            };
            match attempt {
                Ok(wire) => {
                    failures = 0;
                    delay = options.reconnect_min;
                    self.inner.set_up(self.generation, wire.conn.clone());
                    self.inner.handler.link(true);
                    if let Some(first) = self.first.take() {
                        let _ = first.send(Ok(()));
                    } else {
                        tracing::info!(url = %self.inner.url, "reconnected to the Redis backplane");
                    }
                    let lost = self.serve(wire).await;
                    self.inner.set_down(lost.clone());
                    self.inner.handler.link(false);
                    let Some(reason) = lost else { break };
                    BrokerStats::bump(&self.inner.stats.disconnects);
                    tracing::warn!(
                        "lost the Redis backplane at {}: {reason}; clients stay connected, publishes are unavailable until it is back",
                        self.inner.url
                    );
                    // Try again at once: a single dropped connection
                    // usually comes back on the first attempt.
                    continue;
                }
                Err(e) => {
                    let e = format!("cannot reach Redis at {}: {e}", self.inner.url);
                    failures += 1;
                    BrokerStats::bump(&self.inner.stats.connect_failures);
                    self.inner.set_down(Some(e.clone()));
                    if let Some(first) = self.first.take() {
                        let _ = first.send(Err(e));
                    } else if failures.is_power_of_two() {
                        tracing::warn!("{e} ({failures} attempts so far; retrying)");
                    }
                }
            }
            if !self.idle(delay + jitter(delay)).await {
                break;
            }
            delay = (delay * 2).min(options.reconnect_max);
        }
        self.inner.set_down(None);
    }

    /// Waits `delay` before the next attempt, recording requests meanwhile.
    /// Returns `false` on shutdown.
    async fn idle(&mut self, delay: Duration) -> bool {
        let sleep = tokio::time::sleep(delay);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                () = &mut sleep => return true,
                () = self.inner.shutdown.cancelled() => return false,
                request = self.requests.recv() => match request {
                    Some(request) => self.offline(request),
                    None => return false,
                },
            }
        }
    }

    /// Records a request while disconnected: interest is kept (or dropped)
    /// and applied on reconnect.
    fn offline(&mut self, request: Request) {
        match request {
            Request::Subscribe { topic, reply } => {
                self.topics.entry(topic).or_default();
                let _ = reply.send(Err(Unavailable::new(format!(
                    "not connected to Redis at {}",
                    self.inner.url
                ))));
            }
            Request::Unsubscribe { topic } => {
                self.topics.remove(&topic);
            }
        }
        self.count_topics();
    }

    fn count_topics(&self) {
        self.inner.topics.store(
            self.topics.len() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// Opens both connections, subscribes the inbox and every topic of
    /// interest, and catches up on what the node missed.
    async fn establish(&mut self) -> Result<Wire, String> {
        let inner = self.inner.clone();
        let timeout = inner.options.connect_timeout;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(inner.options.command_timeout));
        let mut conn = within(
            timeout,
            "command connection",
            inner
                .client
                .get_multiplexed_async_connection_with_config(&config),
        )
        .await?;
        for script in inner.scripts.all() {
            within(
                timeout,
                "loading the backplane scripts (Redis 7 or newer is required)",
                script.load_async(&mut conn),
            )
            .await?;
        }
        let pubsub = within(
            timeout,
            "subscription connection",
            inner.client.get_async_pubsub(),
        )
        .await?;
        let (mut sink, stream) = pubsub.split();
        within(timeout, "SUBSCRIBE", sink.subscribe(&self.inbox)).await?;
        let channels: Vec<String> = self.topics.keys().map(|t| inner.keys.channel(t)).collect();
        for chunk in channels.chunks(CHANNELS_PER_COMMAND) {
            within(timeout, "SUBSCRIBE", sink.subscribe(chunk)).await?;
        }
        self.catch_up_all(&conn).await?;
        Ok(Wire { conn, sink, stream })
    }

    /// Serves the link until it fails (`Some(reason)`) or the broker shuts
    /// down (`None`).
    async fn serve(&mut self, mut wire: Wire) -> Option<String> {
        let interval = self.inner.options.health_interval;
        let mut health = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        health.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let step = tokio::select! {
                () = self.inner.shutdown.cancelled() => return None,
                () = self.inner.lost.notified() => {
                    if self.inner.lost_generation.load(std::sync::atomic::Ordering::Relaxed) != self.generation {
                        continue;
                    }
                    Err(self.inner.last_error().unwrap_or_else(|| "a command to Redis failed".into()))
                }
                message = wire.stream.next() => match message {
                    Some(message) => self.on_message(&wire.conn, &message).await,
                    None => Err("the subscription connection closed".into()),
                },
                request = self.requests.recv() => match request {
                    Some(request) => self.on_requests(request, &mut wire).await,
                    None => return None,
                },
                _ = health.tick() => self.check(&mut wire).await,
            };
            if let Err(reason) = step {
                return Some(reason);
            }
        }
    }

    /// Pings both connections.
    async fn check(&mut self, wire: &mut Wire) -> Result<(), String> {
        let timeout = self.inner.options.command_timeout;
        within(
            timeout,
            "PING on the subscription connection",
            wire.sink.ping::<redis::Value>(),
        )
        .await?;
        within(
            timeout,
            "PING on the command connection",
            redis::cmd("PING").query_async::<redis::Value>(&mut wire.conn),
        )
        .await?;
        Ok(())
    }

    /// Applies a batch of interest changes: one `UNSUBSCRIBE` and one
    /// `SUBSCRIBE` (per 512 channels), then reads where each new topic
    /// starts.
    async fn on_requests(&mut self, first: Request, wire: &mut Wire) -> Result<(), String> {
        let mut batch = vec![first];
        while batch.len() < REQUESTS_PER_BATCH {
            match self.requests.try_recv() {
                Ok(request) => batch.push(request),
                Err(_) => break,
            }
        }
        // The last request for a topic wins.
        let mut wanted: HashMap<String, bool> = HashMap::new();
        let mut replies = Vec::new();
        for request in batch {
            match request {
                Request::Subscribe { topic, reply } => {
                    wanted.insert(topic.clone(), true);
                    replies.push((topic, reply));
                }
                Request::Unsubscribe { topic } => {
                    wanted.insert(topic, false);
                }
            }
        }
        let (mut subscribe, mut unsubscribe) = (Vec::new(), Vec::new());
        for (topic, want) in wanted {
            match (want, self.topics.contains_key(&topic)) {
                (true, false) => subscribe.push(topic),
                (false, true) => unsubscribe.push(topic),
                _ => {}
            }
        }
        let inner = self.inner.clone();
        let timeout = inner.options.command_timeout;
        for topic in &unsubscribe {
            self.topics.remove(topic);
        }
        let channels: Vec<String> = unsubscribe.iter().map(|t| inner.keys.channel(t)).collect();
        for chunk in channels.chunks(CHANNELS_PER_COMMAND) {
            within(timeout, "UNSUBSCRIBE", wire.sink.unsubscribe(chunk)).await?;
        }
        for topic in &subscribe {
            self.topics.insert(topic.clone(), Track::default());
        }
        self.count_topics();
        let channels: Vec<String> = subscribe.iter().map(|t| inner.keys.channel(t)).collect();
        for chunk in channels.chunks(CHANNELS_PER_COMMAND) {
            within(timeout, "SUBSCRIBE", wire.sink.subscribe(chunk)).await?;
        }
        // Subscribed first, position read second: a message published in
        // between is either at or before the position (skipped) or after it
        // (delivered) — never lost, never twice.
        self.catch_up(&wire.conn, subscribe).await?;
        for (topic, reply) in replies {
            let position = self
                .topics
                .get(&topic)
                .map(|t| TopicPosition {
                    epoch: t.epoch.clone(),
                    offset: t.last,
                })
                .unwrap_or_default();
            let _ = reply.send(Ok(position));
        }
        Ok(())
    }

    /// Catches every topic of interest up after (re)connecting.
    async fn catch_up_all(&mut self, conn: &MultiplexedConnection) -> Result<(), String> {
        let topics = self.topics.keys().cloned().collect();
        self.catch_up(conn, topics).await
    }

    /// For each of `topics`: a topic whose position is unknown starts at the
    /// topic's latest offset; the others get what followed their position,
    /// page by page, in order. Reads run concurrently across topics.
    async fn catch_up(
        &mut self,
        conn: &MultiplexedConnection,
        mut pending: Vec<String>,
    ) -> Result<(), String> {
        let page = self.inner.options.recovery_page;
        while !pending.is_empty() {
            let reads: Vec<(String, u64, usize)> = pending
                .drain(..)
                .filter_map(|topic| {
                    let track = self.topics.get(&topic)?;
                    let (from, count) = if track.known {
                        (track.next_offset(), page)
                    } else {
                        (0, 0)
                    };
                    Some((topic, from, count))
                })
                .collect();
            let inner = self.inner.clone();
            let mut replies = stream::iter(reads)
                .map(|(topic, from, count)| {
                    let inner = inner.clone();
                    async move {
                        let reply = if count == 0 {
                            inner.open_on(conn, &topic).await
                        } else {
                            inner.range_on(conn, &topic, from, count).await
                        };
                        (topic, count, reply)
                    }
                })
                .buffered(CONCURRENT_READS);
            while let Some((topic, count, reply)) = replies.next().await {
                let reply = reply.map_err(|e| e.reason)?;
                let Some(track) = self.topics.get_mut(&topic) else {
                    continue;
                };
                if count == 0 {
                    *track = Track::starting_at(reply.epoch, reply.latest);
                    continue;
                }
                let mut steps = Vec::new();
                let next = track.apply_range(&topic, reply, count, u64::MAX, &mut steps);
                let epoch = track.epoch.clone().unwrap_or_default();
                hand_over(&self.inner, &topic, &epoch, steps);
                if next == Next::More {
                    pending.push(topic);
                }
            }
        }
        Ok(())
    }

    /// Handles one message from the subscription connection.
    async fn on_message(
        &mut self,
        conn: &MultiplexedConnection,
        message: &Msg,
    ) -> Result<(), String> {
        let inner = self.inner.clone();
        let stats = &inner.stats;
        BrokerStats::bump(&stats.messages_in);
        let channel = message.get_channel_name();
        let payload = message.get_payload_bytes();
        if channel == self.inbox {
            match NodeCommand::decode(payload) {
                Ok(command) => {
                    BrokerStats::bump(&stats.commands_in);
                    inner.handler.command(command);
                }
                Err(e) => {
                    BrokerStats::bump(&stats.decode_errors);
                    tracing::warn!(error = %e, "unreadable node command");
                }
            }
            return Ok(());
        }
        let Some(topic) = inner.keys.topic_of_channel(channel) else {
            return Ok(());
        };
        // Messages still in flight after interest ended are not wanted.
        let Some(track) = self.topics.get_mut(topic) else {
            return Ok(());
        };
        let live = match decode_live(payload) {
            Ok(live) => live,
            Err(e) => {
                BrokerStats::bump(&stats.decode_errors);
                tracing::warn!(topic, error = %e, "unreadable message from Redis");
                return Ok(());
            }
        };
        let mut gaps = Vec::new();
        let mut verdict = track.live(topic, live.epoch, live.offset, &mut gaps);
        report(&inner, gaps);
        if let Verdict::Fill { to, .. } = verdict {
            // Read the hole from the stream, then judge the message again.
            fill(&inner, conn, topic, track, to).await?;
            let mut gaps = Vec::new();
            verdict = track.live(topic, live.epoch, live.offset, &mut gaps);
            if let Verdict::Fill { to, .. } = verdict {
                gaps.extend(track.skip_to(topic, to));
                verdict = Verdict::Deliver;
            }
            report(&inner, gaps);
        }
        match verdict {
            Verdict::Deliver => {
                track.delivered(live.offset);
                BrokerStats::bump(&stats.delivered);
                inner.handler.message(BrokerMessage::new(
                    topic,
                    live.offset,
                    live.epoch,
                    &live.body,
                ));
            }
            Verdict::Duplicate | Verdict::Fill { .. } => BrokerStats::bump(&stats.duplicates),
        }
        Ok(())
    }
}

/// Reads `track`'s topic from its next offset up to `until` and hands over
/// what it finds.
async fn fill(
    inner: &Inner,
    conn: &MultiplexedConnection,
    topic: &str,
    track: &mut Track,
    until: u64,
) -> Result<(), String> {
    let page = inner.options.recovery_page;
    loop {
        let want = until.saturating_sub(track.last);
        let count = usize::try_from(want).unwrap_or(page).clamp(1, page);
        let reply = inner
            .range_on(conn, topic, track.next_offset(), count)
            .await
            .map_err(|e| e.reason)?;
        let mut steps = Vec::new();
        let next = track.apply_range(topic, reply, count, until, &mut steps);
        let epoch = track.epoch.clone().unwrap_or_default();
        hand_over(inner, topic, &epoch, steps);
        if next == Next::Done {
            return Ok(());
        }
    }
}

/// Hands recovered entries and gaps of `topic` to the handler, in order.
fn hand_over(inner: &Inner, topic: &str, epoch: &str, steps: Vec<Step>) {
    let stats = &inner.stats;
    for step in steps {
        match step {
            Step::Deliver(offset, body) => match decode_body(&body) {
                Ok(body) => {
                    BrokerStats::bump(&stats.delivered);
                    BrokerStats::bump(&stats.recovered);
                    inner
                        .handler
                        .message(BrokerMessage::new(topic, offset, epoch, &body));
                }
                Err(e) => {
                    BrokerStats::bump(&stats.decode_errors);
                    tracing::warn!(topic, offset, error = %e, "unreadable history entry");
                    report(
                        inner,
                        vec![TopicGap {
                            topic: topic.to_owned(),
                            kind: super::order::GapKind::Missed {
                                epoch: epoch.to_owned(),
                                from: offset,
                                to: offset,
                            },
                        }],
                    );
                }
            },
            Step::Gap(gap) => report(inner, vec![gap]),
        }
    }
}

/// Reports gaps to the handler (and the log).
fn report(inner: &Inner, gaps: Vec<TopicGap>) {
    for gap in gaps {
        BrokerStats::bump(&inner.stats.gaps);
        tracing::warn!(topic = %gap.topic, kind = ?gap.kind, "messages of a topic could not be recovered");
        inner.handler.gap(gap);
    }
}
