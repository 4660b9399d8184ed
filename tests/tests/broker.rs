//! The Redis backplane against a real `redis-server` each test starts on a
//! free port: one order per topic across nodes, interest-based
//! subscriptions, history, failures (Redis killed, restarted, or one node
//! cut off with an ACL) and recovery, presence and session routing.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use janus_core::{Publish, Timestamp, Token};
use janus_server::broker::{
    Broker, BrokerError, BrokerEvent, BrokerMessage, BrokerOptions, GapKind, NodeCommand,
    Published, RouteError, TopicGap, Unavailable,
};
use janus_tests::redis_server::{free_port, RedisServer};
use janus_tests::{wait_until, wait_until_async, TIMEOUT};
use tokio::sync::mpsc;

/// One node's broker and what it hands over.
struct Node {
    broker: Arc<Broker>,
    events: mpsc::UnboundedReceiver<BrokerEvent>,
}

/// Options with short timers, so failures are noticed and healed quickly.
fn fast() -> BrokerOptions {
    BrokerOptions {
        reconnect_min: Duration::from_millis(20),
        reconnect_max: Duration::from_millis(200),
        health_interval: Duration::from_millis(200),
        presence_interval: Duration::from_millis(100),
        presence_ttl: Duration::from_secs(1),
        session_ttl: Duration::from_secs(3),
        ..BrokerOptions::default()
    }
}

async fn node(url: &str, id: &str) -> Node {
    node_with(url, id, fast()).await
}

async fn node_with(url: &str, id: &str, options: BrokerOptions) -> Node {
    let (tx, events) = mpsc::unbounded_channel();
    let broker = Broker::connect(url, id, options, Arc::new(tx))
        .await
        .expect("valid broker settings");
    Node {
        broker: Arc::new(broker),
        events,
    }
}

impl Node {
    async fn ready(&self) {
        let what = format!("{} ready", self.broker.node_id());
        wait_until(&what, || self.broker.ready()).await;
    }

    async fn not_ready(&self) {
        let what = format!("{} not ready", self.broker.node_id());
        wait_until(&what, || !self.broker.ready()).await;
    }

    /// The next event other than a link change.
    async fn event(&mut self) -> BrokerEvent {
        loop {
            let event = tokio::time::timeout(TIMEOUT, self.events.recv())
                .await
                .expect("a broker event in time")
                .expect("the broker is alive");
            if !matches!(event, BrokerEvent::Link(_)) {
                return event;
            }
        }
    }

    async fn message(&mut self) -> BrokerMessage {
        match self.event().await {
            BrokerEvent::Message(m) => m,
            other => panic!("expected a message, got {other:?}"),
        }
    }

    async fn messages(&mut self, n: usize) -> Vec<BrokerMessage> {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(self.message().await);
        }
        out
    }

    async fn gap(&mut self) -> TopicGap {
        match self.event().await {
            BrokerEvent::Gap(g) => g,
            other => panic!("expected a gap, got {other:?}"),
        }
    }

    /// Publishes expecting `unavailable`.
    async fn refused(&self, topic: &str) -> Unavailable {
        self.broker
            .publish(&publish_of(topic, "refused"), Timestamp::now())
            .await
            .expect_err("the publish is refused")
    }

    async fn publish(&self, topic: &str, id: &str) -> Published {
        self.broker
            .publish(&publish_of(topic, id), Timestamp::now())
            .await
            .unwrap_or_else(|e| panic!("publish {id} on {topic}: {e}"))
    }
}

fn publish_of(topic: &str, id: &str) -> Publish {
    Publish::new(topic, "ev", id, &format!("{{\"id\":\"{id}\"}}")).expect("valid publish")
}

fn epoch_changed(old_epoch: &str, last: u64, new_epoch: Option<String>) -> TopicGap {
    TopicGap {
        topic: "t".into(),
        kind: GapKind::EpochChanged {
            old_epoch: old_epoch.to_owned(),
            last,
            new_epoch,
        },
    }
}

fn offsets(messages: &[BrokerMessage]) -> Vec<u64> {
    messages.iter().map(|m| m.offset).collect()
}

fn ids(messages: &[BrokerMessage]) -> Vec<String> {
    messages.iter().map(|m| m.message_id.clone()).collect()
}

/// Creates (or re-creates) an ACL user with every right, so a node can be
/// cut off with `ACL DELUSER` (which closes its connections) and let back in.
async fn allow(redis: &RedisServer, user: &str) {
    let _: () = redis
        .command(&["ACL", "SETUSER", user, "on", ">pw", "~*", "&*", "+@all"])
        .await;
}

async fn cut_off(redis: &RedisServer, user: &str) {
    let deleted: i64 = redis.command(&["ACL", "DELUSER", user]).await;
    assert_eq!(deleted, 1);
}

/// Subscribers of each channel, as Redis counts them.
async fn numsub(redis: &RedisServer, topics: &[&str]) -> Vec<i64> {
    let channels: Vec<String> = topics
        .iter()
        .map(|t| format!("janus:topic:{{{t}}}"))
        .collect();
    let mut args = vec!["PUBSUB", "NUMSUB"];
    args.extend(channels.iter().map(String::as_str));
    let reply: Vec<redis::Value> = redis.command(&args).await;
    reply
        .chunks(2)
        .map(|pair| match pair {
            [_, redis::Value::Int(n)] => *n,
            other => panic!("unexpected NUMSUB reply {other:?}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_deliver_one_order_with_offsets_from_one() {
    let redis = RedisServer::start().await;
    let mut a = node(&redis.url(), "node-a").await;
    let mut b = node(&redis.url(), "node-b").await;
    assert!(a.broker.ready() && b.broker.ready());
    // A topic never published gets its epoch when interest in it begins:
    // every node names the same one from the start.
    let position = a.broker.subscribe_topic("news").await.unwrap();
    assert!(
        position.epoch.is_some() && position.offset == 0,
        "{position:?}"
    );
    assert_eq!(b.broker.subscribe_topic("news").await.unwrap(), position);

    // 40 publishes from each node, all in flight at once.
    let mut publishes = tokio::task::JoinSet::new();
    for i in 0..40 {
        for (name, broker) in [("a", &a.broker), ("b", &b.broker)] {
            let broker = broker.clone();
            let id = format!("{name}{i}");
            publishes.spawn(async move {
                let published = broker
                    .publish(&publish_of("news", &id), Timestamp::now())
                    .await
                    .expect("published");
                (id, published)
            });
        }
    }
    let mut assigned: HashMap<String, u64> = HashMap::new();
    let mut epochs = Vec::new();
    while let Some(joined) = publishes.join_next().await {
        let (id, published) = joined.unwrap();
        assigned.insert(id, published.offset);
        epochs.push(published.epoch);
    }
    let mut all: Vec<u64> = assigned.values().copied().collect();
    all.sort_unstable();
    assert_eq!(all, (1..=80).collect::<Vec<_>>(), "offsets 1..=80, no gaps");
    epochs.dedup();
    assert_eq!(epochs.len(), 1, "one epoch");

    let seen_a = a.messages(80).await;
    let seen_b = b.messages(80).await;
    assert_eq!(offsets(&seen_a), (1..=80).collect::<Vec<_>>());
    assert_eq!(
        seen_a, seen_b,
        "both nodes deliver the same messages in the same order"
    );
    for m in &seen_a {
        assert_eq!(assigned[&m.message_id], m.offset, "{}", m.message_id);
        assert_eq!(m.epoch, epochs[0]);
        assert_eq!((m.topic.as_str(), m.event.as_str()), ("news", "ev"));
        assert_eq!(m.data, format!("{{\"id\":\"{}\"}}", m.message_id));
    }
    // Nothing else came: the next message on each node is the next offset.
    a.publish("news", "last").await;
    assert_eq!(a.message().await.offset, 81);
    assert_eq!(b.message().await.offset, 81);
    let status = a.broker.status();
    assert!(status.connected);
    assert_eq!(status.messages_out, 41);
    assert!(status.publish_rtt_p99_ms.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_subscribes_in_redis_only_to_topics_it_has_interest_in() {
    let redis = RedisServer::start().await;
    let mut a = node(&redis.url(), "node-a").await;
    let b = node(&redis.url(), "node-b").await;
    assert_eq!(numsub(&redis, &["t1", "t2"]).await, [0, 0]);
    a.broker.subscribe_topic("t1").await.unwrap();
    a.broker.subscribe_topic("t2").await.unwrap();
    b.broker.subscribe_topic("t1").await.unwrap();
    assert_eq!(numsub(&redis, &["t1", "t2"]).await, [2, 1]);
    assert_eq!(a.broker.status().topics, 2);

    a.broker.unsubscribe_topic("t1");
    a.broker.unsubscribe_topic("t2");
    wait_until_async("a unsubscribed from t1 and t2", || async {
        numsub(&redis, &["t1", "t2"]).await == [1, 0]
    })
    .await;

    // A message on t1 no longer reaches node a: its next message is on a
    // topic it still has, published after (one connection keeps the order).
    a.broker.subscribe_topic("probe").await.unwrap();
    b.publish("t1", "not for a").await;
    b.publish("probe", "p").await;
    assert_eq!(a.message().await.message_id, "p");

    // Hundreds of topics, requested together, still use two connections
    // per node and a handful of SUBSCRIBE commands.
    let pending: Vec<_> = (0..300)
        .map(|i| a.broker.subscribe_topic(&format!("many{i}")))
        .collect();
    for subscribed in pending {
        subscribed.await.unwrap();
    }
    let clients: String = redis.command(&["CLIENT", "LIST"]).await;
    assert_eq!(
        clients.lines().count(),
        5,
        "two connections per node and this one:\n{clients}"
    );
    assert!(
        clients.lines().any(|l| l.contains(" sub=302 ")),
        "node a's subscription connection holds 300 topics, probe and its inbox:\n{clients}"
    );
    let info: String = redis.command(&["INFO", "commandstats"]).await;
    let subscribes: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("cmdstat_subscribe:calls="))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .expect("SUBSCRIBE call count");
    assert!(
        subscribes < 30,
        "{subscribes} SUBSCRIBE commands for 304 subscriptions"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_reads_are_complete_or_say_they_are_not() {
    let redis = RedisServer::start().await;
    let options = BrokerOptions {
        history_size: 5,
        ..fast()
    };
    let a = node_with(&redis.url(), "node-a", options).await;
    for i in 1..=8 {
        assert_eq!(a.publish("h", &format!("m{i}")).await.offset, i);
    }
    let len: u64 = redis.command(&["XLEN", "janus:stream:{h}"]).await;
    assert_eq!(len, 5, "the stream is trimmed to the history size");

    let trimmed = a.broker.history("h", 0, 100).await.unwrap();
    assert_eq!((trimmed.latest_offset, trimmed.complete), (8, false));
    assert_eq!(offsets(&trimmed.messages), [4, 5, 6, 7, 8]);
    assert!(trimmed.epoch.is_some());

    let whole = a.broker.history("h", 3, 100).await.unwrap();
    assert!(whole.complete);
    assert_eq!(ids(&whole.messages), ["m4", "m5", "m6", "m7", "m8"]);
    assert_eq!(whole.messages[0].data, "{\"id\":\"m4\"}");

    let page = a.broker.history("h", 5, 2).await.unwrap();
    assert!(page.complete);
    assert_eq!(offsets(&page.messages), [6, 7]);

    let caught_up = a.broker.history("h", 8, 10).await.unwrap();
    assert!(caught_up.complete && caught_up.messages.is_empty());
    let position = a.broker.history("h", 2, 0).await.unwrap();
    assert_eq!((position.latest_offset, position.messages.len()), (8, 0));

    let ahead = a.broker.history("h", 9, 10).await.unwrap();
    assert!(
        !ahead.complete,
        "an offset past the latest cannot be resumed"
    );

    let unknown = a.broker.history("never", 0, 10).await.unwrap();
    assert_eq!(
        (unknown.epoch, unknown.latest_offset, unknown.complete),
        (None, 0, true)
    );
    let unknown = a.broker.history("never", 3, 10).await.unwrap();
    assert!(!unknown.complete);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_topics_history_expires_and_its_next_publish_starts_a_new_epoch() {
    let redis = RedisServer::start().await;
    let options = BrokerOptions {
        history_ttl: Some(Duration::from_millis(300)),
        ..fast()
    };
    let a = node_with(&redis.url(), "node-a", options).await;
    let first = a.publish("idle", "1").await;
    assert_eq!(first.offset, 1);
    let ttl: i64 = redis.command(&["PTTL", "janus:stream:{idle}"]).await;
    assert!(ttl > 0 && ttl <= 300, "stream TTL {ttl} ms");
    wait_until_async("the idle topic's keys expire", || async {
        let exists: i64 = redis
            .command(&["EXISTS", "janus:meta:{idle}", "janus:stream:{idle}"])
            .await;
        exists == 0
    })
    .await;
    let range = a.broker.history("idle", 1, 10).await.unwrap();
    assert_eq!((range.epoch, range.complete), (None, false));
    let next = a.publish("idle", "2").await;
    assert_eq!(next.offset, 1);
    assert_ne!(next.epoch, first.epoch);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_starts_without_redis_names_it_and_connects_when_it_appears() {
    let port = free_port();
    let url = format!("redis://127.0.0.1:{port}");
    let mut a = node(&url, "node-a").await;
    assert!(!a.broker.ready());
    let status = a.broker.status();
    let error = status.last_error.expect("the failed attempt is reported");
    assert!(error.contains(&format!("127.0.0.1:{port}")), "{error}");
    let refused = a.refused("t").await;
    assert!(refused.reason.contains(&url), "{refused}");
    // Interest recorded while down takes effect on connection.
    assert!(a.broker.subscribe_topic("t").await.is_err());

    let _redis = RedisServer::start_on(port).await;
    a.ready().await;
    assert_eq!(a.publish("t", "x").await.offset, 1);
    assert_eq!(a.message().await.message_id, "x");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_is_unavailable_while_redis_is_down_and_resumes_after_a_restart() {
    let mut redis = RedisServer::start().await;
    let mut a = node(&redis.url(), "node-a").await;
    a.broker.subscribe_topic("t").await.unwrap();
    let before = a.publish("t", "1").await;
    assert_eq!(a.message().await.offset, 1);

    redis.kill();
    a.not_ready().await;
    let refused = a.refused("t").await;
    assert!(refused.reason.contains(&redis.url()), "{refused}");
    assert!(a.broker.subscribe_topic("later").await.is_err());
    assert!(!a.broker.status().connected);

    redis.restart().await;
    a.ready().await;
    // The restarted Redis lost the topic: the node says so.
    assert_eq!(a.gap().await, epoch_changed(&before.epoch, 1, None));
    let after = a.publish("t", "2").await;
    assert_eq!(after.offset, 1);
    assert_ne!(after.epoch, before.epoch);
    let m = a.message().await;
    assert_eq!((m.message_id.as_str(), m.offset), ("2", 1));
    // The interest recorded while Redis was down was subscribed on reconnect.
    a.publish("later", "l").await;
    assert_eq!(a.message().await.message_id, "l");
    let status = a.broker.status();
    assert!(status.reconnects >= 1 && status.publish_failures >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_hangs_is_noticed_and_the_link_returns_when_it_wakes() {
    let redis = RedisServer::start().await;
    let options = BrokerOptions {
        command_timeout: Duration::from_millis(300),
        connect_timeout: Duration::from_millis(300),
        health_interval: Duration::from_millis(100),
        ..fast()
    };
    let mut a = node_with(&redis.url(), "node-a", options).await;
    a.broker.subscribe_topic("t").await.unwrap();
    a.publish("t", "1").await;
    assert_eq!(a.message().await.offset, 1);

    redis.pause();
    a.not_ready().await;
    a.refused("t").await;
    redis.resume();
    a.ready().await;
    // Whether Redis ran the publish that timed out cannot be known (it sat
    // in the socket): either way the offsets a node delivers stay gapless.
    let last = a.publish("t", "2").await;
    let delivered = a.messages(usize::try_from(last.offset - 1).unwrap()).await;
    assert_eq!(offsets(&delivered), (2..=last.offset).collect::<Vec<_>>());
    assert_eq!(delivered.last().unwrap().message_id, "2");
    assert_eq!(a.broker.status().gaps, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_recovers_what_another_published_meanwhile_in_order() {
    let redis = RedisServer::start().await;
    allow(&redis, "a").await;
    let mut a = node(&redis.url_as("a", "pw"), "node-a").await;
    let mut b = node(&redis.url(), "node-b").await;
    a.broker.subscribe_topic("t").await.unwrap();
    b.broker.subscribe_topic("t").await.unwrap();
    for i in 1..=3 {
        b.publish("t", &i.to_string()).await;
    }
    assert_eq!(offsets(&a.messages(3).await), [1, 2, 3]);

    cut_off(&redis, "a").await;
    a.not_ready().await;
    a.refused("t").await;
    for i in 4..=10 {
        b.publish("t", &i.to_string()).await;
    }
    allow(&redis, "a").await;
    a.ready().await;
    let recovered = a.messages(7).await;
    assert_eq!(offsets(&recovered), (4..=10).collect::<Vec<_>>());
    assert_eq!(ids(&recovered), ["4", "5", "6", "7", "8", "9", "10"]);
    // Live again, with no duplicate in between, and the refused publish
    // left no trace: offsets go on from 10.
    assert_eq!(b.publish("t", "11").await.offset, 11);
    assert_eq!(a.message().await.offset, 11);
    assert_eq!(offsets(&b.messages(11).await), (1..=11).collect::<Vec<_>>());
    let status = a.broker.status();
    assert_eq!(
        (status.reconnects, status.recovered, status.gaps),
        (1, 7, 0)
    );
    // The password never shows.
    assert_eq!(
        status.url,
        format!("redis://a:***@127.0.0.1:{}", redis.port())
    );
    assert!(!status.last_error.unwrap_or_default().contains(":pw@"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_past_the_history_reports_the_gap_then_delivers_the_rest() {
    let redis = RedisServer::start().await;
    allow(&redis, "a").await;
    let options = BrokerOptions {
        history_size: 3,
        ..fast()
    };
    let mut a = node_with(&redis.url_as("a", "pw"), "node-a", options.clone()).await;
    let b = node_with(&redis.url(), "node-b", options).await;
    a.broker.subscribe_topic("t").await.unwrap();
    let first = b.publish("t", "1").await;
    assert_eq!(a.message().await.offset, 1);

    cut_off(&redis, "a").await;
    a.not_ready().await;
    for i in 2..=9 {
        b.publish("t", &i.to_string()).await;
    }
    allow(&redis, "a").await;
    assert_eq!(
        a.gap().await,
        TopicGap {
            topic: "t".into(),
            kind: GapKind::Missed {
                epoch: first.epoch,
                from: 2,
                to: 6,
            },
        }
    );
    assert_eq!(offsets(&a.messages(3).await), [7, 8, 9]);
    b.publish("t", "10").await;
    assert_eq!(a.message().await.offset, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_redis_restart_a_late_node_recovers_the_new_epoch_from_its_start() {
    let mut redis = RedisServer::start().await;
    allow(&redis, "a").await;
    let mut a = node(&redis.url_as("a", "pw"), "node-a").await;
    let mut b = node(&redis.url(), "node-b").await;
    a.broker.subscribe_topic("t").await.unwrap();
    b.broker.subscribe_topic("t").await.unwrap();
    let old = b.publish("t", "old1").await;
    b.publish("t", "old2").await;
    assert_eq!(offsets(&a.messages(2).await), [1, 2]);
    assert_eq!(offsets(&b.messages(2).await), [1, 2]);

    redis.kill();
    a.not_ready().await;
    b.not_ready().await;
    b.refused("t").await;
    // The new Redis does not know user "a" yet: node a stays out while
    // node b reconnects and publishes.
    redis.restart().await;
    b.ready().await;
    assert!(!a.broker.ready());
    assert_eq!(b.gap().await, epoch_changed(&old.epoch, 2, None));
    let mut new_epoch = None;
    for i in 1..=3 {
        let published = b.publish("t", &format!("new{i}")).await;
        assert_eq!(published.offset, i);
        new_epoch = Some(published.epoch);
    }
    assert_eq!(offsets(&b.messages(3).await), [1, 2, 3]);

    allow(&redis, "a").await;
    a.ready().await;
    assert_eq!(
        a.gap().await,
        epoch_changed(&old.epoch, 2, new_epoch.clone())
    );
    let recovered = a.messages(3).await;
    assert_eq!(ids(&recovered), ["new1", "new2", "new3"]);
    assert!(recovered
        .iter()
        .all(|m| Some(&m.epoch) == new_epoch.as_ref()));
    b.publish("t", "new4").await;
    assert_eq!(a.message().await.offset, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_announce_themselves_and_leave_the_listing() {
    let redis = RedisServer::start().await;
    let admin: std::net::SocketAddr = "127.0.0.1:9101".parse().unwrap();
    let a = node_with(
        &redis.url(),
        "node-a",
        BrokerOptions {
            admin_addr: Some(admin),
            ..fast()
        },
    )
    .await;
    let b = node(&redis.url(), "node-b").await;
    let c = node(&redis.url(), "node-c").await;
    a.broker.set_client_count(42);
    a.broker.subscribe_topic("x").await.unwrap();
    wait_until_async("three nodes with a's counts", || async {
        let nodes = b.broker.nodes().await.unwrap();
        nodes.len() == 3 && nodes[0].clients == 42 && nodes[0].topics == 1
    })
    .await;
    let nodes = b.broker.nodes().await.unwrap();
    let names: Vec<&str> = nodes.iter().map(|n| n.node_id.as_str()).collect();
    assert_eq!(names, ["node-a", "node-b", "node-c"]);
    assert_eq!(nodes[0].admin_addr, Some(admin));
    assert!(nodes[0].started_at > 0 && nodes[0].announced_at >= nodes[0].started_at);

    // A clean close leaves at once, sessions included; a node that just
    // stops leaves when its record expires.
    let token = Token::random();
    let key = format!("janus:session:{token}");
    a.broker.register_session(token);
    wait_until_async("the session is registered", || async {
        redis
            .command::<Option<String>>(&["GET", &key])
            .await
            .is_some()
    })
    .await;
    Arc::into_inner(a.broker).expect("sole owner").close().await;
    let names: Vec<String> = b
        .broker
        .nodes()
        .await
        .unwrap()
        .into_iter()
        .map(|n| n.node_id)
        .collect();
    assert_eq!(names, ["node-b", "node-c"]);
    assert_eq!(redis.command::<Option<String>>(&["GET", &key]).await, None);
    drop(c);
    wait_until_async("only node-b left", || async {
        let nodes = b.broker.nodes().await.unwrap();
        nodes.len() == 1 && nodes[0].node_id == "node-b"
    })
    .await;
    let members: Vec<String> = redis.command(&["SMEMBERS", "janus:nodes"]).await;
    assert_eq!(members, ["node-b"], "expired nodes are pruned from the set");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_reach_the_node_holding_the_session() {
    let redis = RedisServer::start().await;
    let mut a = node(&redis.url(), "node-a").await;
    let b = node(&redis.url(), "node-b").await;
    let token = Token::random();
    let key = format!("janus:session:{token}");
    a.broker.register_session(token);
    wait_until_async("the session is registered", || async {
        let holder: Option<String> = redis.command(&["GET", &key]).await;
        holder.as_deref() == Some("node-a")
    })
    .await;

    let frame = Bytes::from_static(b"{\"data\":1}\x01");
    let send = NodeCommand::Send {
        token,
        frame: frame.clone(),
    };
    assert_eq!(
        b.broker.route_to_session(send.clone()).await.unwrap(),
        "node-a"
    );
    assert_eq!(a.event().await, BrokerEvent::Command(send.clone()));
    let kick = NodeCommand::Kick {
        token,
        reason: "bye".into(),
    };
    assert_eq!(
        b.broker.route_to_session(kick.clone()).await.unwrap(),
        "node-a"
    );
    assert_eq!(a.event().await, BrokerEvent::Command(kick));
    // From the holding node itself, the command is handed over directly.
    assert_eq!(
        a.broker.route_to_session(send.clone()).await.unwrap(),
        "node-a"
    );
    assert_eq!(a.event().await, BrokerEvent::Command(send));

    let stranger = Token::random();
    let unknown = NodeCommand::Kick {
        token: stranger,
        reason: String::new(),
    };
    assert_eq!(
        b.broker.route_to_session(unknown).await,
        Err(RouteError::UnknownSession(stranger))
    );

    // A session that moved to node b is not released by node a.
    b.broker.register_session(token);
    wait_until_async("the session moved to node b", || async {
        let holder: Option<String> = redis.command(&["GET", &key]).await;
        holder.as_deref() == Some("node-b")
    })
    .await;
    a.broker.unregister_session(token);
    let marker = Token::random();
    a.broker.register_session(marker);
    wait_until_async("node a's later writes are done", || async {
        let holder: Option<String> = redis
            .command(&["GET", &format!("janus:session:{marker}")])
            .await;
        holder.is_some()
    })
    .await;
    let holder: Option<String> = redis.command(&["GET", &key]).await;
    assert_eq!(holder.as_deref(), Some("node-b"));
    b.broker.unregister_session(token);
    wait_until_async("the session is released", || async {
        let holder: Option<String> = redis.command(&["GET", &key]).await;
        holder.is_none()
    })
    .await;
    let kick = NodeCommand::Kick {
        token,
        reason: String::new(),
    };
    assert_eq!(
        a.broker.route_to_session(kick).await,
        Err(RouteError::UnknownSession(token))
    );
}

#[tokio::test]
async fn bad_settings_are_refused_before_connecting() {
    let (tx, _rx) = mpsc::unbounded_channel::<BrokerEvent>();
    let handler = Arc::new(tx);
    let err = Broker::connect("http://nope", "n", fast(), handler.clone())
        .await
        .unwrap_err();
    assert!(matches!(err, BrokerError::InvalidUrl { .. }), "{err}");
    let err = Broker::connect(
        "redis://u:secret@127.0.0.1:1",
        "bad id",
        fast(),
        handler.clone(),
    )
    .await
    .unwrap_err();
    assert_eq!(err, BrokerError::InvalidNodeId("bad id".into()));
    let err = Broker::connect(
        "redis://127.0.0.1:1",
        "n",
        BrokerOptions {
            history_size: 0,
            ..fast()
        },
        handler,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, BrokerError::InvalidOptions(_)), "{err}");
}
