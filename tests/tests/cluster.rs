//! Cluster mode (docs/protocol.md C1): two in-process nodes joined by a
//! real `redis-server` each test starts on a free port. One order per topic
//! across nodes, interest-based channels, `unavailable` while Redis is
//! gone and recovery after it is back, unicast and kick from another node.

use std::net::SocketAddr;

use janus_core::{ClientMessage, Publish, ServerMessage};
use janus_server::Config;
use janus_tests::redis_server::{free_port, RedisServer};
use janus_tests::{
    http, publish_legacy, test_config, wait_until, wait_until_async, Client, TestServer,
};

/// A node of the cluster on `url`, named `id`, with its admin API on a free port.
async fn node(url: &str, id: &str) -> TestServer {
    TestServer::start_node(url, id).await
}

async fn ready(server: &TestServer, ready: bool) {
    let what = format!("ready = {ready}");
    wait_until(&what, || server.shared().is_ready() == ready).await;
}

fn admin(server: &TestServer) -> SocketAddr {
    server.shared().admin_addr().expect("admin API on")
}

/// Opts a client in to offsets.
async fn opt_in(c: &mut Client) {
    c.send(ClientMessage::Options {
        offsets: Some(true),
    })
    .await;
    assert_eq!(c.recv().await, ServerMessage::Ack);
}

/// Subscribes an offset client; returns the offset it starts after.
async fn subscribe_at(c: &mut Client, topic: &str) -> u64 {
    c.send(ClientMessage::Subscribe(topic.to_owned())).await;
    match c.recv().await {
        ServerMessage::Subscribed { offset, .. } => offset,
        other => panic!("expected subscribed, got {other:?}"),
    }
}

/// Sends a persistent publish (X3) without waiting for its answer.
async fn send_publish(c: &mut Client, topic: &str, id: &str) {
    let publish = Publish::new(topic, "e", id, "{\"n\":1}").expect("valid publish");
    c.send(ClientMessage::Publish {
        publish,
        one_shot: false,
    })
    .await;
}

/// The next delivery's message id and offset.
async fn delivery(c: &mut Client) -> (String, Option<u64>) {
    match c.recv().await {
        ServerMessage::Delivery(d) => (d.message_id, d.offset),
        other => panic!("expected a delivery, got {other:?}"),
    }
}

/// How many nodes subscribe to `topic`'s channel in Redis.
async fn channel_subscribers(redis: &RedisServer, topic: &str) -> i64 {
    let reply: Vec<redis::Value> = redis
        .command(&["PUBSUB", "NUMSUB", &format!("janus:topic:{{{topic}}}")])
        .await;
    match reply.get(1) {
        Some(redis::Value::Int(n)) => *n,
        other => panic!("PUBSUB NUMSUB: {other:?}"),
    }
}

async fn wait_channel_subscribers(redis: &RedisServer, topic: &str, n: i64) {
    let what = format!("{topic}: {n} nodes subscribed");
    wait_until_async(&what, || async {
        channel_subscribers(redis, topic).await == n
    })
    .await;
}

#[tokio::test]
async fn publishes_on_any_node_reach_every_node_in_one_order() {
    let redis = RedisServer::start().await;
    let a = node(&redis.url(), "a").await;
    let b = node(&redis.url(), "b").await;
    let mut on_a = Client::connect(a.addr()).await;
    opt_in(&mut on_a).await;
    assert_eq!(subscribe_at(&mut on_a, "news").await, 0);
    let mut on_b = Client::connect(b.addr()).await;
    opt_in(&mut on_b).await;
    assert_eq!(subscribe_at(&mut on_b, "news").await, 0);
    let mut plain_b = Client::connect(b.addr()).await;
    plain_b.subscribe("news").await;
    // Interest: each node subscribed the channel once, whatever its clients.
    assert_eq!(channel_subscribers(&redis, "news").await, 2);

    // Two publishers on two nodes, interleaved.
    let (mut pa, mut pb) = (
        Client::connect(a.addr()).await,
        Client::connect(b.addr()).await,
    );
    const N: usize = 20;
    for i in 0..N {
        send_publish(&mut pa, "news", &format!("a{i}")).await;
        send_publish(&mut pb, "news", &format!("b{i}")).await;
    }
    for _ in 0..N {
        assert_eq!(pa.recv().await, ServerMessage::Ack);
        assert_eq!(pb.recv().await, ServerMessage::Ack);
    }
    publish_legacy(
        b.addr(),
        r#"{"topic":"news","event":"e","message_id":"legacy","data":1}"#,
    )
    .await;

    let mut orders = Vec::new();
    for c in [&mut on_a, &mut on_b, &mut plain_b] {
        let mut ids = Vec::new();
        for expected in 1..=(2 * N + 1) as u64 {
            let (id, offset) = delivery(c).await;
            if let Some(offset) = offset {
                assert_eq!(offset, expected, "offsets run 1, 2, 3, … on every node");
            }
            ids.push(id);
        }
        orders.push(ids);
    }
    assert_eq!(orders[0], orders[1], "one order on both nodes");
    assert_eq!(orders[0], orders[2]);
    // Each publisher's messages keep their order.
    let from_a: Vec<&String> = orders[0].iter().filter(|id| id.starts_with('a')).collect();
    let expected: Vec<String> = (0..N).map(|i| format!("a{i}")).collect();
    assert_eq!(from_a, expected.iter().collect::<Vec<_>>());
    assert_eq!(orders[0].last().map(String::as_str), Some("legacy"));

    // A late subscriber on either node starts after the latest offset.
    let mut late = Client::connect(a.addr()).await;
    opt_in(&mut late).await;
    assert_eq!(subscribe_at(&mut late, "news").await, 2 * N as u64 + 1);

    // Interest ends with the node's last local subscriber.
    for c in [&mut on_b, &mut plain_b] {
        c.send(ClientMessage::Unsubscribe("news".into())).await;
    }
    wait_channel_subscribers(&redis, "news", 1).await;
    send_publish(&mut pa, "news", "after").await;
    assert_eq!(pa.recv().await, ServerMessage::Ack);
    assert_eq!(delivery(&mut on_a).await.0, "after");
    plain_b.expect_open().await;
    plain_b.expect_nothing_buffered();
    on_b.expect_nothing_buffered();
}

#[tokio::test]
async fn publishes_are_unavailable_while_redis_is_down_and_delivery_resumes() {
    let mut redis = RedisServer::start().await;
    let a = node(&redis.url(), "a").await;
    let b = node(&redis.url(), "b").await;
    let mut sub = Client::connect(b.addr()).await;
    sub.subscribe("t").await;
    let mut publisher = Client::connect(a.addr()).await;
    send_publish(&mut publisher, "t", "before").await;
    assert_eq!(publisher.recv().await, ServerMessage::Ack);
    assert_eq!(delivery(&mut sub).await.0, "before");

    redis.kill();
    ready(&a, false).await;
    let reply = http(admin(&a), "GET", "/ready", "").await;
    assert_eq!(reply.status, 503, "{}", reply.body);
    // Publishes are refused, connections stay open.
    send_publish(&mut publisher, "t", "lost").await;
    let reason = publisher.expect_error("unavailable").await;
    assert!(reason.contains("nothing was published"), "{reason}");
    let reply = http(
        admin(&a),
        "POST",
        "/publish",
        r#"{"topic":"t","message_id":"admin","data":1}"#,
    )
    .await;
    assert_eq!(reply.status, 503, "{}", reply.body);
    assert!(reply.body.contains("unavailable"), "{}", reply.body);
    let mut one_shot = Client::connect(a.addr()).await;
    one_shot
        .send(ClientMessage::Publish {
            publish: Publish::new("t", "e", "x", "1").expect("valid"),
            one_shot: true,
        })
        .await;
    one_shot.expect_error("unavailable").await;
    one_shot.expect_closed().await;

    redis.restart().await;
    ready(&a, true).await;
    ready(&b, true).await;
    // The subscriber was kept, subscribed, and gets what follows.
    send_publish(&mut publisher, "t", "after").await;
    assert_eq!(publisher.recv().await, ServerMessage::Ack);
    assert_eq!(delivery(&mut sub).await.0, "after");
    // The admin API's publish goes through the broker too, and says so
    // rather than counting nobody.
    let reply = http(
        admin(&a),
        "POST",
        "/publish",
        r#"{"topic":"t","message_id":"admin","data":1}"#,
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let published: janus_core::api::Published =
        serde_json::from_str(&reply.body).expect("a publish answer");
    assert!(published.cluster, "{}", reply.body);
    assert_eq!(delivery(&mut sub).await.0, "admin");
    sub.expect_nothing_buffered();
}

#[tokio::test]
async fn a_node_starts_without_redis_and_becomes_ready_when_it_appears() {
    let port = free_port();
    let url = format!("redis://127.0.0.1:{port}");
    let a = TestServer::start_with(Config {
        broker: Some(url.clone()),
        node_id: "early".into(),
        ..test_config()
    })
    .await;
    let mut sub = Client::connect(a.addr()).await;
    // Subscribing works (the interest is made when Redis appears).
    sub.subscribe("t").await;
    assert!(!a.shared().is_ready());
    let _redis = RedisServer::start_on(port).await;
    ready(&a, true).await;
    let mut publisher = Client::connect(a.addr()).await;
    send_publish(&mut publisher, "t", "first").await;
    assert_eq!(publisher.recv().await, ServerMessage::Ack);
    assert_eq!(delivery(&mut sub).await.0, "first");
}

#[tokio::test]
async fn unicast_and_kick_reach_a_session_on_another_node() {
    let redis = RedisServer::start().await;
    let a = node(&redis.url(), "a").await;
    let b = node(&redis.url(), "b").await;
    let mut client = Client::connect(b.addr()).await;
    let key = format!("janus:session:{}", client.token);
    let registered = || async { redis.command::<Option<String>>(&["GET", &key]).await };
    wait_until_async("session registered", || async {
        registered().await.as_deref() == Some("b")
    })
    .await;

    // Operators see the broker and the nodes.
    wait_until_async("both nodes listed", || async {
        let reply = http(admin(&a), "GET", "/cluster", "").await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        let nodes: janus_core::api::ClusterNodes =
            serde_json::from_str(&reply.body).expect("cluster JSON");
        let ids: Vec<&str> = nodes.nodes.iter().map(|n| n.node_id.as_str()).collect();
        nodes.this_node == "a" && ids == ["a", "b"]
    })
    .await;
    let reply = http(admin(&b), "GET", "/status", "").await;
    let status: janus_core::api::Status = serde_json::from_str(&reply.body).expect("status");
    let broker = status.broker.expect("the broker in /status");
    assert_eq!((broker.node_id.as_str(), broker.connected), ("b", true));
    assert_eq!(broker.url, redis.url());
    let reply = http(admin(&b), "GET", "/metrics", "").await;
    assert!(
        reply.body.contains("janus_broker_connected 1"),
        "{}",
        reply.body
    );

    let path = format!("/sessions/{}/send", client.token);
    let reply = http(admin(&a), "POST", &path, r#"{"message_id":"u1","data":7}"#).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(delivery(&mut client).await.0, "u1");

    let unknown = "0123456789abcdef0123456789abcdef";
    let reply = http(
        admin(&a),
        "POST",
        &format!("/sessions/{unknown}/send"),
        "{}",
    )
    .await;
    assert_eq!(reply.status, 404, "{}", reply.body);

    let path = format!("/sessions/{}?reason=bye", client.token);
    let reply = http(admin(&a), "DELETE", &path, "").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let reason = client.expect_error("kicked").await;
    assert!(reason.contains("bye"), "{reason}");
    client.expect_closed().await;
}

#[tokio::test]
async fn a_node_cut_off_from_redis_delivers_what_it_missed_in_order_when_back() {
    let redis = RedisServer::start().await;
    let _: () = redis
        .command(&["ACL", "SETUSER", "b", "on", ">pw", "~*", "&*", "+@all"])
        .await;
    let a = node(&redis.url(), "a").await;
    let b = node(&redis.url_as("b", "pw"), "b").await;
    let mut sub = Client::connect(b.addr()).await;
    opt_in(&mut sub).await;
    let start = subscribe_at(&mut sub, "t").await;
    let mut publisher = Client::connect(a.addr()).await;
    send_publish(&mut publisher, "t", "m0").await;
    assert_eq!(publisher.recv().await, ServerMessage::Ack);
    assert_eq!(delivery(&mut sub).await, ("m0".into(), Some(start + 1)));

    // B loses Redis (its user is gone, its connections closed); A goes on.
    let deleted: i64 = redis.command(&["ACL", "DELUSER", "b"]).await;
    assert_eq!(deleted, 1);
    ready(&b, false).await;
    for i in 1..=5 {
        send_publish(&mut publisher, "t", &format!("m{i}")).await;
        assert_eq!(publisher.recv().await, ServerMessage::Ack);
    }
    // B's clients stayed connected; once B is back it delivers what they
    // missed, in order, from the topic's history, then live messages.
    let _: () = redis
        .command(&["ACL", "SETUSER", "b", "on", ">pw", "~*", "&*", "+@all"])
        .await;
    ready(&b, true).await;
    send_publish(&mut publisher, "t", "m6").await;
    assert_eq!(publisher.recv().await, ServerMessage::Ack);
    for i in 1..=6u64 {
        assert_eq!(
            delivery(&mut sub).await,
            (format!("m{i}"), Some(start + 1 + i))
        );
    }
    sub.expect_nothing_buffered();
    let reply = http(admin(&b), "GET", "/status", "").await;
    let status: janus_core::api::Status = serde_json::from_str(&reply.body).expect("status");
    let broker = status.broker.expect("broker status");
    assert!(
        broker.reconnects >= 1 && broker.recovered >= 5,
        "{broker:?}"
    );
}

/// Runs `janus-admin ARGS` against a node's admin API; returns its stdout.
async fn janus_admin(server: &TestServer, args: &[&str]) -> String {
    let out = tokio::process::Command::new(janus_tests::cargo_bin("janus-admin"))
        .arg("--server")
        .arg(format!("http://{}", admin(server)))
        .args(args)
        .env_remove("JANUS_ADMIN_TOKEN")
        .stdin(std::process::Stdio::null())
        .output();
    let out = tokio::time::timeout(janus_tests::TIMEOUT, out)
        .await
        .expect("janus-admin finished in time")
        .expect("run janus-admin");
    assert!(out.status.success(), "janus-admin {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn janus_admin_shows_the_broker_and_the_live_nodes() {
    let redis = RedisServer::start().await;
    let a = node(&redis.url(), "alpha").await;
    let b = node(&redis.url(), "beta").await;
    let _client = Client::connect(b.addr()).await;
    let status = janus_admin(&a, &["status"]).await;
    assert!(
        status.contains(&format!("{} as node alpha, connected", redis.url())),
        "{status}"
    );
    wait_until_async("both nodes listed by janus-admin cluster", || async {
        let table = janus_admin(&a, &["cluster"]).await;
        table.contains("alpha *") && table.contains("beta") && table.contains("2 live nodes")
    })
    .await;
}

#[tokio::test]
async fn an_offset_client_resumes_on_another_node_that_follows_its_topic() {
    use janus_core::{Resume, TopicPosition};
    let redis = RedisServer::start().await;
    let a = node(&redis.url(), "a").await;
    let b = node(&redis.url(), "b").await;
    // B follows the topic (another subscriber there keeps its history).
    let mut watcher = Client::connect(b.addr()).await;
    watcher.subscribe("t").await;
    let mut c = Client::connect(a.addr()).await;
    opt_in(&mut c).await;
    c.send(ClientMessage::Subscribe("t".into())).await;
    // The epoch is the cluster's from the first subscribe on: every node
    // names the same one, before any message.
    let epoch = match c.recv().await {
        ServerMessage::Subscribed { epoch, offset, .. } => {
            assert_eq!(offset, 0);
            epoch
        }
        other => panic!("expected subscribed, got {other:?}"),
    };
    let mut publisher = Client::connect(a.addr()).await;
    for id in ["m1", "m2"] {
        send_publish(&mut publisher, "t", id).await;
        assert_eq!(publisher.recv().await, ServerMessage::Ack);
    }
    assert_eq!(delivery(&mut c).await, ("m1".into(), Some(1)));
    assert_eq!(delivery(&mut c).await, ("m2".into(), Some(2)));
    let token = c.token.clone();
    drop(c);
    for id in ["m3", "m4"] {
        send_publish(&mut publisher, "t", id).await;
        assert_eq!(publisher.recv().await, ServerMessage::Ack);
    }
    // It comes back on B, from offset 2 of that epoch.
    let mut back = Client::connect(b.addr()).await;
    back.send(ClientMessage::Resume(Resume::Positions {
        token: token.clone(),
        topics: vec![TopicPosition {
            topic: "t".into(),
            epoch,
            offset: 2,
        }],
    }))
    .await;
    match back.recv().await {
        ServerMessage::Resumed {
            token: t,
            recovered,
            missed,
            ..
        } => assert_eq!((t, recovered, missed), (token, true, 2)),
        other => panic!("expected resumed, got {other:?}"),
    }
    assert_eq!(delivery(&mut back).await, ("m3".into(), Some(3)));
    assert_eq!(delivery(&mut back).await, ("m4".into(), Some(4)));
    send_publish(&mut publisher, "t", "m5").await;
    assert_eq!(publisher.recv().await, ServerMessage::Ack);
    assert_eq!(delivery(&mut back).await, ("m5".into(), Some(5)));
    back.expect_nothing_buffered();
}

/// Resumes `token` on `server` from `topics`; returns the client and the
/// `resumed` answer's `recovered` and `missed`.
async fn resume_on(
    server: &TestServer,
    token: &str,
    topics: Vec<janus_core::TopicPosition>,
) -> (Client, bool, u64) {
    let mut back = Client::connect(server.addr()).await;
    back.send(ClientMessage::Resume(janus_core::Resume::Positions {
        token: token.to_owned(),
        topics,
    }))
    .await;
    match back.recv().await {
        ServerMessage::Resumed {
            token: t,
            recovered,
            missed,
            ..
        } => {
            assert_eq!(t, token);
            (back, recovered, missed)
        }
        other => panic!("expected resumed, got {other:?}"),
    }
}

fn position(topic: &str, epoch: &str, offset: u64) -> janus_core::TopicPosition {
    janus_core::TopicPosition {
        topic: topic.into(),
        epoch: epoch.into(),
        offset,
    }
}

/// An offset client on `server` subscribed to `topic`: the client, the
/// topic's epoch and the offset it starts after.
async fn offset_client(server: &TestServer, topic: &str) -> (Client, String, u64) {
    let mut c = Client::connect(server.addr()).await;
    opt_in(&mut c).await;
    c.send(ClientMessage::Subscribe(topic.to_owned())).await;
    match c.recv().await {
        ServerMessage::Subscribed { epoch, offset, .. } => (c, epoch, offset),
        other => panic!("expected subscribed, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_resumes_exactly_on_a_node_that_does_not_follow_its_topic() {
    let redis = RedisServer::start().await;
    let a = node(&redis.url(), "a").await;
    let b = node(&redis.url(), "b").await;
    let (mut c, epoch, _) = offset_client(&a, "t").await;
    let mut publisher = Client::connect(a.addr()).await;
    for id in 1..=5 {
        publisher.publish_acked("t", &id.to_string(), "1").await;
    }
    for id in 1..=5u64 {
        assert_eq!(delivery(&mut c).await, (id.to_string(), Some(id)));
    }
    let token = c.token.clone();
    c.lose();
    for id in 6..=205 {
        publisher.publish_acked("t", &id.to_string(), "1").await;
    }
    // Nobody on B follows "t"; publishing goes on (on A) while the client
    // resumes there.
    assert_eq!(b.shared().topics.topic_count(), 0);
    let publishing = tokio::spawn(async move {
        for id in 206..=400 {
            publisher.publish_acked("t", &id.to_string(), "1").await;
        }
        publisher
    });
    let (mut back, recovered, missed) = resume_on(&b, &token, vec![position("t", &epoch, 5)]).await;
    assert!(recovered, "B read what it lacked from Redis");
    assert!(missed >= 200, "{missed}");
    // Every message after offset 5 exactly once, in order: replay, then live.
    for id in 6..=400u64 {
        assert_eq!(delivery(&mut back).await, (id.to_string(), Some(id)));
    }
    publishing.await.expect("publisher");
    back.expect_nothing_buffered();
    // A ends the session the client left there (detached, waiting for a
    // resume that came to B), well before its session TTL.
    let old: janus_core::Token = token.parse().expect("token");
    wait_until("A let the client's old session go", || {
        !a.shared().sessions.contains(&old)
    })
    .await;
    let elsewhere = &a.shared().stats.sessions_resumed_elsewhere;
    assert_eq!(elsewhere.load(std::sync::atomic::Ordering::Relaxed), 1);
    assert_eq!(a.shared().topics.topic_count(), 0, "A follows nothing");
    // Nothing is left pinned: once the client leaves, B lets the topic and
    // its channel go.
    drop(back);
    wait_until("B forgot the topic", || {
        b.shared().topics.topic_count() == 0
    })
    .await;
    wait_channel_subscribers(&redis, "t", 0).await;
}

#[tokio::test]
async fn a_resume_on_another_node_beyond_the_brokers_history_is_not_recovered() {
    let redis = RedisServer::start().await;
    let config = |id: &str| Config {
        broker: Some(redis.url()),
        node_id: id.to_owned(),
        history_size: 10,
        ..test_config()
    };
    let a = TestServer::start_with(config("a")).await;
    let b = TestServer::start_with(config("b")).await;
    ready(&a, true).await;
    ready(&b, true).await;
    let (c, epoch, start) = offset_client(&a, "t").await;
    let token = c.token.clone();
    c.lose();
    let mut publisher = Client::connect(a.addr()).await;
    for id in 1..=30 {
        publisher.publish_acked("t", &id.to_string(), "1").await;
    }
    // Offsets 1..=20 are gone from Redis's history: nothing is replayed.
    let (mut back, recovered, missed) =
        resume_on(&b, &token, vec![position("t", &epoch, start)]).await;
    assert_eq!((recovered, missed), (false, 0));
    // Another stream's epoch is not recovered either.
    let (other, _, _) = offset_client(&a, "u").await;
    let (_, recovered, missed) =
        resume_on(&b, &other.token, vec![position("u", "0000000000000000", 0)]).await;
    assert_eq!((recovered, missed), (false, 0));
    // The client is live from now on.
    publisher.publish_acked("t", "31", "1").await;
    assert_eq!(delivery(&mut back).await, ("31".into(), Some(31)));
    back.expect_nothing_buffered();
}

#[tokio::test]
async fn a_resume_that_catches_up_on_a_following_node_reads_only_what_it_lacks() {
    // B follows the topic, but only since after the client's position:
    // the part before comes from Redis, the rest from B's own history.
    let redis = RedisServer::start().await;
    let a = node(&redis.url(), "a").await;
    let b = node(&redis.url(), "b").await;
    let (c, epoch, start) = offset_client(&a, "t").await;
    let token = c.token.clone();
    c.lose();
    let mut publisher = Client::connect(a.addr()).await;
    for id in 1..=10 {
        publisher.publish_acked("t", &id.to_string(), "1").await;
    }
    let mut watcher = Client::connect(b.addr()).await;
    watcher.subscribe("t").await;
    // A (the client's detached session) and B.
    wait_channel_subscribers(&redis, "t", 2).await;
    for id in 11..=20 {
        publisher.publish_acked("t", &id.to_string(), "1").await;
    }
    for id in 11..=20 {
        assert!(
            matches!(watcher.recv().await, ServerMessage::Delivery(d) if d.message_id == id.to_string())
        );
    }
    let (mut back, recovered, missed) =
        resume_on(&b, &token, vec![position("t", &epoch, start)]).await;
    assert_eq!((recovered, missed), (true, 20));
    for id in 1..=20u64 {
        assert_eq!(delivery(&mut back).await, (id.to_string(), Some(id)));
    }
    back.expect_nothing_buffered();
}
