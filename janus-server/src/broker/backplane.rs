//! [`Broker`]: one node's handle on the Redis backplane, and the state its
//! background tasks ([`super::link`], [`super::upkeep`]) share with it.

use std::collections::HashSet;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use janus_core::api::BrokerInfo;
use janus_core::{Publish, Timestamp, Token};
use redis::aio::MultiplexedConnection;
use redis::{RedisError, RedisResult};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, Notify};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::codec::{decode_body, encode_body, NodeCommand};
use super::error::redact_url;
use super::inbound::{BrokerHandler, BrokerMessage};
use super::keys::Keys;
use super::link::{Link, Request};
use super::scripts::{RangeReply, Scripts};
use super::stats::BrokerStats;
use super::{upkeep, BrokerError, BrokerOptions, RouteError, Unavailable};

/// Where a topic stands: its epoch (`None` before its first publish) and
/// an offset.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicPosition {
    /// The topic stream's epoch.
    pub epoch: Option<String>,
    /// The offset: for a new subscription, the topic's latest offset when
    /// this node's interest began (it delivers what follows).
    pub offset: u64,
}

/// A publish Redis accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// The offset it got in its topic.
    pub offset: u64,
    /// The topic stream's epoch.
    pub epoch: String,
}

/// A slice of a topic's history, for a client's resume (protocol X1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryRange {
    /// The topic stream's epoch (`None`: the topic has no history).
    pub epoch: Option<String>,
    /// The topic's latest offset.
    pub latest_offset: u64,
    /// Messages after the offset asked for, in order, at most the limit.
    pub messages: Vec<BrokerMessage>,
    /// Whether `messages` are exactly the messages after the offset asked
    /// for, up to the latest or to the limit: none trimmed, expired (older
    /// than the history TTL) or unreadable. A client whose epoch differs
    /// cannot use them either; that is the caller's check.
    pub complete: bool,
}

/// A live node, as it announces itself in Redis.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// The node's id.
    pub node_id: String,
    /// Its client connections.
    pub clients: u64,
    /// The topics it has local subscribers of.
    pub topics: u64,
    /// Its admin API address, if it has one.
    pub admin_addr: Option<SocketAddr>,
    /// When it started, Unix seconds.
    pub started_at: u64,
    /// When it last refreshed this record, Unix seconds.
    pub announced_at: u64,
}

/// The link's current connection and its last error.
#[derive(Default)]
pub(crate) struct LinkState {
    /// The command connection of the current link generation, while up.
    pub conn: Option<(u64, MultiplexedConnection)>,
    /// The last connection or link error.
    pub last_error: Option<String>,
}

/// This node's sessions as registered in Redis.
#[derive(Debug, Default)]
pub(crate) struct SessionBook {
    /// Sessions this node holds.
    pub live: HashSet<Token>,
    /// Registered since the last flush (and still live).
    pub added: HashSet<Token>,
    /// Released since the last flush (and not live again). Capped at
    /// [`SessionBook::MAX_REMOVED`]: past it, registrations are left to
    /// expire by their TTL.
    pub removed: HashSet<Token>,
    /// The link generation `live` was last written in full to.
    pub synced_generation: u64,
    /// When `live` was last refreshed in full.
    pub refreshed: Option<Instant>,
}

impl SessionBook {
    /// Most releases kept while Redis is unreachable.
    pub const MAX_REMOVED: usize = 65_536;
}

/// What the [`Broker`] handle and its tasks share.
pub(crate) struct Inner {
    /// The Redis URL, password redacted.
    pub url: String,
    pub node_id: String,
    pub options: BrokerOptions,
    pub keys: Keys,
    pub client: redis::Client,
    pub scripts: Scripts,
    pub handler: Arc<dyn BrokerHandler>,
    pub stats: BrokerStats,
    link: Mutex<LinkState>,
    /// Up, resubscribed and caught up.
    ready: AtomicBool,
    pub requests: mpsc::UnboundedSender<Request>,
    /// Signalled when a command found the link broken.
    pub lost: Notify,
    /// The generation `lost` was signalled for.
    pub lost_generation: AtomicU64,
    pub sessions: Mutex<SessionBook>,
    /// Wakes the upkeep task (link up, sessions to write).
    pub upkeep_wake: Notify,
    pub clients: AtomicU64,
    pub topics: AtomicU64,
    /// When this node started, Unix seconds.
    pub started_at: u64,
    pub shutdown: CancellationToken,
    epoch_seed: u64,
    epoch_counter: AtomicU64,
}

/// Locks `mutex`, recovering the data if a holder panicked (every critical
/// section here leaves the data consistent).
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Unix seconds now.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Whether an error means the connection itself is broken (rather than
/// Redis refusing one command).
fn is_link_error(e: &RedisError) -> bool {
    e.is_io_error() || e.is_connection_dropped() || e.is_unrecoverable_error() || e.is_timeout()
}

impl Inner {
    /// Runs `f` on `conn` within the command timeout.
    pub async fn call<T, F>(
        &self,
        conn: &MultiplexedConnection,
        f: impl FnOnce(MultiplexedConnection) -> F,
    ) -> Result<T, (Unavailable, bool)>
    where
        F: Future<Output = RedisResult<T>>,
    {
        let timeout = self.options.command_timeout;
        match tokio::time::timeout(timeout, f(conn.clone())).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => {
                let broken = is_link_error(&e);
                Err((
                    Unavailable::new(format!("Redis at {}: {e}", self.url)),
                    broken,
                ))
            }
            Err(_) => Err((
                Unavailable::new(format!(
                    "Redis at {} did not answer within {timeout:?}",
                    self.url
                )),
                true,
            )),
        }
    }

    /// Runs `f` on the current command connection; a broken link is
    /// reported to the link task, which reconnects.
    pub async fn run<T, F>(
        &self,
        f: impl FnOnce(MultiplexedConnection) -> F,
    ) -> Result<T, Unavailable>
    where
        F: Future<Output = RedisResult<T>>,
    {
        let (generation, conn) = self.connection()?;
        self.call(&conn, f).await.map_err(|(e, broken)| {
            if broken {
                self.report_lost(generation, &e.reason);
            }
            e
        })
    }

    /// The current command connection and its generation.
    pub fn connection(&self) -> Result<(u64, MultiplexedConnection), Unavailable> {
        lock(&self.link)
            .conn
            .clone()
            .ok_or_else(|| Unavailable::new(format!("not connected to Redis at {}", self.url)))
    }

    fn report_lost(&self, generation: u64, reason: &str) {
        lock(&self.link).last_error = Some(reason.to_owned());
        self.lost_generation.store(generation, Ordering::Relaxed);
        self.lost.notify_one();
    }

    /// The link is up, resubscribed and caught up.
    pub fn set_up(&self, generation: u64, conn: MultiplexedConnection) {
        lock(&self.link).conn = Some((generation, conn));
        self.ready.store(true, Ordering::Release);
        self.upkeep_wake.notify_one();
    }

    /// The link is down (or was never up), for `reason`.
    pub fn set_down(&self, reason: Option<String>) {
        self.ready.store(false, Ordering::Release);
        let mut link = lock(&self.link);
        link.conn = None;
        if reason.is_some() {
            link.last_error = reason;
        }
    }

    /// The last link error.
    pub fn last_error(&self) -> Option<String> {
        lock(&self.link).last_error.clone()
    }

    /// An epoch for a topic that has none yet: random per node, distinct per
    /// call, so that a new stream never reuses an old one's name.
    fn new_epoch(&self) -> String {
        let n = self.epoch_counter.fetch_add(1, Ordering::Relaxed);
        format!(
            "{:016x}",
            self.epoch_seed ^ n.wrapping_mul(0x9e37_79b9_7f4a_7c15)
        )
    }

    /// Runs the range script on `conn`.
    async fn invoke_range(
        &self,
        mut conn: MultiplexedConnection,
        topic: &str,
        from: u64,
        count: usize,
    ) -> RedisResult<redis::Value> {
        self.scripts
            .range
            .key(self.keys.meta(topic))
            .key(self.keys.stream(topic))
            .arg(from)
            .arg(count)
            .invoke_async(&mut conn)
            .await
    }

    /// Reads a topic's epoch, latest offset and up to `count` entries from
    /// offset `from` on, on a given connection (the link's, while it
    /// catches up).
    pub async fn range_on(
        &self,
        conn: &MultiplexedConnection,
        topic: &str,
        from: u64,
        count: usize,
    ) -> Result<RangeReply, Unavailable> {
        let value = self
            .call(conn, |c| self.invoke_range(c, topic, from, count))
            .await
            .map_err(|(e, _)| e)?;
        RangeReply::parse(value).map_err(|e| Unavailable::new(e.to_string()))
    }

    /// Where `topic` stands as this node's interest begins (see the `OPEN`
    /// script): its epoch (made now if it has none) and latest offset, on
    /// the link's connection.
    pub async fn open_on(
        &self,
        conn: &MultiplexedConnection,
        topic: &str,
    ) -> Result<RangeReply, Unavailable> {
        let epoch = self.new_epoch();
        let ttl_ms = self.history_ttl_ms();
        let (epoch, latest): (String, u64) = self
            .call(conn, |mut c| async move {
                self.scripts
                    .open
                    .key(self.keys.meta(topic))
                    .key(self.keys.stream(topic))
                    .arg(epoch)
                    .arg(ttl_ms)
                    .invoke_async(&mut c)
                    .await
            })
            .await
            .map_err(|(e, _)| e)?;
        Ok(RangeReply {
            epoch: Some(epoch),
            latest,
            entries: Vec::new(),
        })
    }

    /// The history TTL in milliseconds, 0 for none.
    fn history_ttl_ms(&self) -> u64 {
        self.options
            .history_ttl
            .map_or(0, |t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX))
    }

    /// Like [`Inner::range_on`], on the current command connection.
    pub async fn range(
        &self,
        topic: &str,
        from: u64,
        count: usize,
    ) -> Result<RangeReply, Unavailable> {
        let value = self
            .run(|c| self.invoke_range(c, topic, from, count))
            .await?;
        RangeReply::parse(value).map_err(|e| Unavailable::new(e.to_string()))
    }

    /// The presence record of this node, now.
    pub fn node_info(&self) -> NodeInfo {
        NodeInfo {
            node_id: self.node_id.clone(),
            clients: self.clients.load(Ordering::Relaxed),
            topics: self.topics.load(Ordering::Relaxed),
            admin_addr: self.options.admin_addr,
            started_at: self.started_at,
            announced_at: unix_now(),
        }
    }
}

/// One node's link to the Redis backplane: publishing, interest-based
/// subscriptions, history, presence and session routing. See the module
/// docs of [`crate::broker`] for how it works.
///
/// Dropping it stops its background tasks; [`Broker::close`] also removes
/// the node's presence and sessions from Redis.
pub struct Broker {
    inner: Arc<Inner>,
    tasks: TaskTracker,
}

impl fmt::Debug for Broker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Broker")
            .field("url", &self.inner.url)
            .field("node_id", &self.inner.node_id)
            .field("ready", &self.ready())
            .finish_non_exhaustive()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.inner.shutdown.cancel();
    }
}

/// Checks a node id: it names keys and channels.
fn validate_node_id(node_id: &str) -> Result<(), BrokerError> {
    if node_id.is_empty()
        || node_id.len() > 128
        || node_id.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(BrokerError::InvalidNodeId(node_id.to_owned()));
    }
    Ok(())
}

impl Broker {
    /// Starts the backplane of node `node_id` on the Redis at `url`
    /// (`redis://[user:password@]host:port[/db]`), handing what arrives to
    /// `handler`.
    ///
    /// Waits for the first connection attempt. If Redis cannot be reached,
    /// logs an error naming the URL and returns anyway: the broker keeps
    /// retrying in the background with exponential backoff, [`Broker::ready`]
    /// says `false` meanwhile and publishes are [`Unavailable`], while topic
    /// interest is recorded and takes effect once connected.
    ///
    /// # Errors
    /// An invalid URL, node id or option. Never an unreachable Redis.
    pub async fn connect(
        url: &str,
        node_id: &str,
        options: BrokerOptions,
        handler: Arc<dyn BrokerHandler>,
    ) -> Result<Broker, BrokerError> {
        options.validate()?;
        validate_node_id(node_id)?;
        let shown = redact_url(url);
        let client = redis::Client::open(url).map_err(|e| BrokerError::InvalidUrl {
            url: shown.clone(),
            reason: e.to_string(),
        })?;
        let (requests, requests_rx) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            url: shown,
            node_id: node_id.to_owned(),
            keys: Keys::new(&options.prefix),
            options,
            client,
            scripts: Scripts::default(),
            handler,
            stats: BrokerStats::default(),
            link: Mutex::new(LinkState::default()),
            ready: AtomicBool::new(false),
            requests,
            lost: Notify::new(),
            lost_generation: AtomicU64::new(0),
            sessions: Mutex::new(SessionBook::default()),
            upkeep_wake: Notify::new(),
            clients: AtomicU64::new(0),
            topics: AtomicU64::new(0),
            started_at: unix_now(),
            shutdown: CancellationToken::new(),
            // Token::random draws 128 bits from the OS; 64 name an epoch.
            epoch_seed: Token::random().as_u128() as u64,
            epoch_counter: AtomicU64::new(0),
        });
        let (first_tx, first_rx) = oneshot::channel();
        let tasks = TaskTracker::new();
        tasks.spawn(Link::new(inner.clone(), requests_rx, first_tx).run());
        tasks.spawn(upkeep::run(inner.clone()));
        tasks.close();
        match first_rx.await {
            Ok(Ok(())) => {
                tracing::info!(url = %inner.url, node = %inner.node_id, "connected to the Redis backplane")
            }
            Ok(Err(e)) => {
                tracing::error!("{e}; serving without the backplane and retrying in the background")
            }
            Err(_) => {}
        }
        Ok(Broker { inner, tasks })
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.inner.node_id
    }

    /// Whether the link is up, every topic of interest resubscribed and
    /// caught up: what `/ready` reports.
    pub fn ready(&self) -> bool {
        self.inner.ready.load(Ordering::Acquire)
    }

    /// The counters, for Prometheus.
    pub fn stats(&self) -> &BrokerStats {
        &self.inner.stats
    }

    /// A snapshot for `/status` (a password in the URL shows as `***`).
    pub fn status(&self) -> BrokerInfo {
        let stats = &self.inner.stats;
        let rtt = stats.publish_rtt.snapshot();
        let ms = |q| rtt.quantile(q).map(|d: Duration| d.as_secs_f64() * 1000.0);
        BrokerInfo {
            url: self.inner.url.clone(),
            node_id: self.inner.node_id.clone(),
            connected: self.ready(),
            reconnects: BrokerStats::get(&stats.disconnects),
            last_error: self.inner.last_error(),
            topics: self.inner.topics.load(Ordering::Relaxed),
            messages_in: BrokerStats::get(&stats.messages_in),
            messages_out: BrokerStats::get(&stats.messages_out),
            publish_failures: BrokerStats::get(&stats.publish_failures),
            recovered: BrokerStats::get(&stats.recovered),
            gaps: BrokerStats::get(&stats.gaps),
            publish_rtt_p50_ms: ms(0.5),
            publish_rtt_p99_ms: ms(0.99),
        }
    }

    /// Declares interest in `topic` (its first local subscriber arrived):
    /// the node subscribes to the topic's channel and delivers its messages
    /// from the returned position on. Subscribe requests arriving together
    /// are sent as one `SUBSCRIBE`.
    ///
    /// The request is made at once; the returned future tells when Redis
    /// confirmed it (a message published after that reaches this node) and
    /// may be dropped. Calling it for a topic already of interest is
    /// harmless and returns the node's current position in it.
    ///
    /// # Errors
    /// [`Unavailable`] when not connected: the interest is recorded anyway
    /// and takes effect when the link is back.
    pub fn subscribe_topic(
        &self,
        topic: &str,
    ) -> impl Future<Output = Result<TopicPosition, Unavailable>> + Send + 'static {
        let (reply, answer) = oneshot::channel();
        let _ = self.inner.requests.send(Request::Subscribe {
            topic: topic.to_owned(),
            reply,
        });
        async move {
            answer
                .await
                .unwrap_or_else(|_| Err(Unavailable::new("the link to Redis was lost")))
        }
    }

    /// Ends interest in `topic` (its last local subscriber left): the node
    /// unsubscribes from its channel and stops delivering it.
    pub fn unsubscribe_topic(&self, topic: &str) {
        let _ = self.inner.requests.send(Request::Unsubscribe {
            topic: topic.to_owned(),
        });
    }

    /// Publishes through Redis: assigns the topic's next offset, appends to
    /// its history and publishes it to every node with interest (this one
    /// included, which delivers it to its own subscribers from there), in
    /// one atomic script.
    ///
    /// # Errors
    /// [`Unavailable`] when Redis cannot be reached or refused the script;
    /// nothing was published then (after a timeout, the script may still
    /// have run: the publisher cannot know).
    pub async fn publish(
        &self,
        publish: &Publish,
        timestamp: Timestamp,
    ) -> Result<Published, Unavailable> {
        let inner = &*self.inner;
        let body = encode_body(
            timestamp,
            &publish.event,
            &publish.message_id,
            publish.data.get(),
        );
        let topic = publish.topic.as_str();
        let epoch = inner.new_epoch();
        let ttl_ms = inner.history_ttl_ms();
        let started = Instant::now();
        let result: Result<(u64, String), _> = inner
            .run(|mut c| async move {
                inner
                    .scripts
                    .publish
                    .key(inner.keys.meta(topic))
                    .key(inner.keys.stream(topic))
                    .arg(inner.keys.channel(topic))
                    .arg(epoch)
                    .arg(body)
                    .arg(inner.options.history_size)
                    .arg(ttl_ms)
                    .invoke_async(&mut c)
                    .await
            })
            .await;
        match result {
            Ok((offset, epoch)) => {
                inner.stats.publish_rtt.record(started.elapsed());
                BrokerStats::bump(&inner.stats.messages_out);
                Ok(Published { offset, epoch })
            }
            Err(e) => {
                BrokerStats::bump(&inner.stats.publish_failures);
                Err(e)
            }
        }
    }

    /// Reads up to `limit` messages of `topic` after offset `after` from
    /// its history, with the topic's epoch and latest offset (`limit` 0
    /// reads only those two).
    ///
    /// # Errors
    /// [`Unavailable`] when Redis cannot be asked.
    pub async fn history(
        &self,
        topic: &str,
        after: u64,
        limit: usize,
    ) -> Result<HistoryRange, Unavailable> {
        let inner = &*self.inner;
        let reply = inner.range(topic, after.saturating_add(1), limit).await?;
        let oldest = inner.options.history_ttl.map(|ttl| {
            Timestamp::now()
                .unix_micros()
                .saturating_sub(u64::try_from(ttl.as_micros()).unwrap_or(u64::MAX))
        });
        let epoch = reply.epoch.clone().unwrap_or_default();
        let mut messages = Vec::with_capacity(reply.entries.len());
        let mut expected = after.saturating_add(1);
        let mut complete = after <= reply.latest;
        for (offset, body) in &reply.entries {
            let Ok(body) = decode_body(body) else {
                BrokerStats::bump(&inner.stats.decode_errors);
                complete = false;
                continue;
            };
            if oldest.is_some_and(|oldest| body.timestamp.unix_micros() < oldest) {
                complete = false;
                continue;
            }
            complete &= *offset == expected;
            expected = offset.saturating_add(1);
            messages.push(BrokerMessage::new(topic, *offset, &epoch, &body));
        }
        // Whatever was asked for and exists must have come back.
        let wanted_end = reply
            .latest
            .min(after.saturating_add(u64::try_from(limit).unwrap_or(u64::MAX)));
        complete &= expected > wanted_end || after >= wanted_end;
        Ok(HistoryRange {
            epoch: reply.epoch,
            latest_offset: reply.latest,
            messages,
            complete,
        })
    }

    /// Records that this node holds session `token` (created or resumed
    /// here), so that other nodes can route to it. Written to Redis in
    /// batches by a background task, and again after every reconnect.
    pub fn register_session(&self, token: Token) {
        let mut book = lock(&self.inner.sessions);
        book.live.insert(token);
        book.added.insert(token);
        book.removed.remove(&token);
        drop(book);
        self.inner.upkeep_wake.notify_one();
    }

    /// Records that session `token` is gone from this node.
    pub fn unregister_session(&self, token: Token) {
        let mut book = lock(&self.inner.sessions);
        if book.live.remove(&token) {
            book.added.remove(&token);
            if book.removed.len() < SessionBook::MAX_REMOVED {
                book.removed.insert(token);
            }
        }
        drop(book);
        self.inner.upkeep_wake.notify_one();
    }

    /// Tells this node's client count, announced in its presence record.
    pub fn set_client_count(&self, clients: u64) {
        self.inner.clients.store(clients, Ordering::Relaxed);
    }

    /// Sends `command` to the node holding its session: this one (handed to
    /// the handler at once) or another, through its inbox channel. Returns
    /// that node's id.
    ///
    /// # Errors
    /// [`RouteError::UnknownSession`] when no live node holds it;
    /// [`RouteError::Unavailable`] when Redis cannot be asked.
    pub async fn route_to_session(&self, command: NodeCommand) -> Result<String, RouteError> {
        let inner = &*self.inner;
        let token = command.token();
        let key = inner.keys.session(token);
        let node: Option<String> = inner
            .run(|mut c| async move { redis::cmd("GET").arg(&key).query_async(&mut c).await })
            .await?;
        let Some(node) = node else {
            return Err(RouteError::UnknownSession(token));
        };
        if node == inner.node_id {
            BrokerStats::bump(&inner.stats.commands_in);
            inner.handler.command(command);
            return Ok(node);
        }
        let payload = command.encode();
        let inbox = inner.keys.inbox(&node);
        let receivers: u64 = inner
            .run(|mut c| async move {
                redis::cmd("PUBLISH")
                    .arg(&inbox)
                    .arg(payload)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        if receivers == 0 {
            // That node is gone; its registration is stale.
            let key = inner.keys.session(token);
            let _ = inner
                .run(|mut c| async move {
                    inner
                        .scripts
                        .release
                        .key(key)
                        .arg(&node)
                        .invoke_async::<i64>(&mut c)
                        .await
                })
                .await;
            return Err(RouteError::UnknownSession(token));
        }
        Ok(node)
    }

    /// The live nodes of the cluster (this one included once it announced
    /// itself), sorted by id. Nodes whose record expired are pruned.
    ///
    /// # Errors
    /// [`Unavailable`] when Redis cannot be asked.
    pub async fn nodes(&self) -> Result<Vec<NodeInfo>, Unavailable> {
        let inner = &*self.inner;
        let set = &inner.keys.nodes();
        let ids: Vec<String> = inner
            .run(|mut c| async move { redis::cmd("SMEMBERS").arg(set).query_async(&mut c).await })
            .await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = ids.iter().map(|id| inner.keys.node(id)).collect();
        let records: Vec<Option<String>> = inner
            .run(|mut c| async move { redis::cmd("MGET").arg(&keys).query_async(&mut c).await })
            .await?;
        let mut nodes = Vec::new();
        let mut gone = Vec::new();
        for (id, record) in ids.into_iter().zip(records) {
            match record.map(|r| serde_json::from_str::<NodeInfo>(&r)) {
                Some(Ok(node)) => nodes.push(node),
                Some(Err(e)) => {
                    tracing::warn!(node = %id, error = %e, "unreadable presence record")
                }
                None => gone.push(id),
            }
        }
        if !gone.is_empty() {
            let _ = inner
                .run(|mut c| async move {
                    redis::cmd("SREM")
                        .arg(set)
                        .arg(&gone)
                        .query_async::<i64>(&mut c)
                        .await
                })
                .await;
        }
        nodes.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        Ok(nodes)
    }

    /// Leaves the cluster cleanly: removes this node's presence record and
    /// session registrations (if Redis is reachable) and stops the
    /// background tasks.
    pub async fn close(&self) {
        if let Err(e) = upkeep::withdraw(&self.inner).await {
            tracing::debug!(error = %e, "could not withdraw from Redis on close");
        }
        self.inner.shutdown.cancel();
        let grace = self.inner.options.command_timeout * 2;
        let _ = tokio::time::timeout(grace, self.tasks.wait()).await;
    }
}
