//! Hostile clients and careless operators (issue 13): each test drives one
//! abuse over loopback, asserts the limit and the error the abuser gets,
//! and that a canary subscriber on the same server keeps receiving.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use janus_core::api::{Refusals, Status, TopicDetail, TopicList};
use janus_core::message::MAX_DATA_DEPTH;
use janus_core::{ClientMessage, ServerMessage};
use janus_server::stats::Stats;
use janus_server::Config;
use janus_tests::{
    http, read_http, test_config, wait_until, Client, ServerProcess, TestServer, TIMEOUT,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A test configuration with the admin API on an ephemeral loopback port.
fn admin_config() -> Config {
    Config {
        admin_listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        heartbeat: Duration::from_secs(3600),
        ..test_config()
    }
}

fn admin_addr(server: &TestServer) -> SocketAddr {
    server.shared().admin_addr().expect("admin API enabled")
}

/// `GET /status`.
async fn status(server: &TestServer) -> Status {
    let reply = http(admin_addr(server), "GET", "/status", "").await;
    assert_eq!(reply.status, 200, "{reply:?}");
    serde_json::from_str(&reply.body).expect("a status")
}

/// The value of one sample of `GET /metrics`, named with its labels.
async fn metric(server: &TestServer, sample: &str) -> f64 {
    let reply = http(admin_addr(server), "GET", "/metrics", "").await;
    assert_eq!(reply.status, 200, "{reply:?}");
    reply
        .body
        .lines()
        .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {sample} in /metrics:\n{}", reply.body))
}

/// How long the canary's round trip (publish, ACK, delivery) may take while
/// a hostile client does its worst: a stall of the server's runtime (the
/// 5 s of issue 13's listing) would exceed it many times over.
const PROMPT: Duration = Duration::from_secs(2);

/// A subscriber of `canary`, and a persistent (X3) publisher to it, both
/// connected before the abuse starts, that must keep working whatever else
/// happens (even while the server refuses every new connection).
struct Canary {
    subscriber: Client,
    publisher: Client,
    sent: u32,
}

impl Canary {
    async fn start(addr: SocketAddr) -> Canary {
        let mut subscriber = Client::connect(addr).await;
        subscriber.subscribe("canary").await;
        let publisher = Client::connect(addr).await;
        Canary {
            subscriber,
            publisher,
            sent: 0,
        }
    }

    /// Publishes one message to `canary` and waits for it to arrive, within
    /// [`PROMPT`]. The subscriber sends a `PING` first, so that an idle
    /// timeout never takes it for a silent client.
    async fn check(&mut self) {
        let started = Instant::now();
        self.sent += 1;
        let id = self.sent.to_string();
        self.subscriber.send_raw(b"PING\0").await;
        self.publisher
            .publish_acked("canary", &id, "\"tweet\"")
            .await;
        match self.subscriber.recv().await {
            ServerMessage::Delivery(d) => {
                assert_eq!((d.topic.as_str(), d.message_id.as_str()), ("canary", &*id));
            }
            other => panic!("canary expected a delivery, got {other:?}"),
        }
        let took = started.elapsed();
        assert!(took < PROMPT, "the canary's round trip took {took:?}");
    }
}

/// Reads until the server closes (end of stream or reset), failing after
/// [`TIMEOUT`]; returns what was read.
async fn until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let read = tokio::time::timeout(TIMEOUT, stream.read(&mut buf))
            .await
            .expect("the server closes the connection in time");
        match read {
            Ok(0) | Err(_) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
}

/// Issue 13 item 3: at most `admin-max-connections` admin connections; the
/// rest are answered 503 and closed; idle and slow ones are closed by the
/// timeouts; clients are never affected.
#[tokio::test]
async fn the_admin_port_is_capped_and_timed_out() {
    // Long enough that the twelve refusals below surely happen while the
    // eight idle connections still hold their slots, even on a loaded machine.
    let header_timeout = Duration::from_millis(1500);
    let server = TestServer::start_with(Config {
        admin_max_connections: 8,
        admin_header_timeout: header_timeout,
        admin_request_timeout: Duration::from_millis(800),
        admin_idle_timeout: Duration::from_secs(5),
        ..admin_config()
    })
    .await;
    let admin = admin_addr(&server);
    let mut canary = Canary::start(server.addr()).await;

    // Eight idle connections take every slot...
    let opened = Instant::now();
    let mut idle = Vec::new();
    for _ in 0..8 {
        idle.push(TcpStream::connect(admin).await.expect("connect"));
    }
    // ...so the next twelve are told so and closed at once.
    for _ in 0..12 {
        let mut extra = TcpStream::connect(admin).await.expect("connect");
        let reply = read_http(&mut extra).await;
        assert_eq!(reply.status, 503, "{reply:?}");
        assert!(reply.body.contains("limit of 8 connections"), "{reply:?}");
    }
    canary.check().await;

    // The idle ones are closed once the header timeout passes, not before.
    for stream in &mut idle {
        assert!(until_closed(stream).await.is_empty());
    }
    assert!(opened.elapsed() >= header_timeout, "closed too early");
    let status = http(admin, "GET", "/status", "").await;
    assert_eq!(status.status, 200, "{status:?}");

    // A slowloris sending one header byte at a time is closed at the
    // header timeout, however steadily it trickles.
    let mut slow = TcpStream::connect(admin).await.expect("connect");
    slow.write_all(b"GET /status HTTP/1.1\r\nhost: x\r\n")
        .await
        .expect("write");
    let started = Instant::now();
    let closed = loop {
        let mut byte = [0u8; 1];
        if slow.write_all(b"x").await.is_err() {
            break started.elapsed();
        }
        match tokio::time::timeout(Duration::from_millis(100), slow.read(&mut byte)).await {
            Ok(Ok(0) | Err(_)) => break started.elapsed(),
            Ok(Ok(_)) => panic!("no answer expected to an unfinished request"),
            Err(_) => {}
        }
        assert!(started.elapsed() < TIMEOUT, "slowloris never closed");
    };
    assert!(
        closed >= header_timeout.mul_f32(0.9) && closed < header_timeout * 4,
        "slowloris closed after {closed:?}"
    );

    // A body that never completes gets 408 at the request timeout.
    let mut stalled = TcpStream::connect(admin).await.expect("connect");
    stalled
        .write_all(b"POST /publish HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n{\"topic\":")
        .await
        .expect("write");
    let reply = read_http(&mut stalled).await;
    assert_eq!(reply.status, 408, "{reply:?}");
    assert!(reply.body.contains("\"timeout\""), "{reply:?}");

    canary.check().await;
    server.stop().await;
}

/// Issue 13 item 1: at most `max-topics` topics server-wide. A subscribe
/// that would make one more gets `unavailable` and the connection stays
/// open; topics that exist (the canary's) keep working.
#[tokio::test]
async fn the_topic_cap_answers_unavailable_and_spares_existing_topics() {
    let server = TestServer::start_with(Config {
        max_topics: 10,
        ..admin_config()
    })
    .await;
    let mut canary = Canary::start(server.addr()).await;
    let mut hostile = Client::connect(server.addr()).await;
    let names: Vec<String> = (0..50).map(|i| format!("junk/{i}")).collect();
    send_subscribes(&mut hostile, &names).await;
    let (mut acked, mut refused) = (0, 0);
    for _ in &names {
        match hostile.recv().await {
            ServerMessage::Ack => acked += 1,
            ServerMessage::Error { code, reason, .. } => {
                assert_eq!(code, "unavailable", "{reason}");
                assert!(reason.contains("maximum of 10 topics"), "{reason}");
                refused += 1;
            }
            other => panic!("expected ACK or unavailable, got {other:?}"),
        }
    }
    // The canary's topic is one of the ten.
    assert_eq!((acked, refused), (9, 41));
    assert_eq!(server.shared().topics.topic_count(), 10);
    // Operators see the count against the limit, and the refusals.
    let st = status(&server).await;
    assert_eq!((st.topics, st.limits.max_topics), (10, 10));
    assert_eq!(
        st.refused,
        Refusals {
            max_topics: 41,
            ..Refusals::default()
        }
    );
    assert_eq!(st.errors["unavailable"], 41);
    assert_eq!(metric(&server, "janus_topics").await, 10.0);
    assert_eq!(metric(&server, "janus_max_topics").await, 10.0);
    assert_eq!(
        metric(&server, "janus_refusals_total{reason=\"max_topics\"}").await,
        41.0
    );
    canary.check().await;
    // Still open, and an existing topic is still open to it.
    hostile.subscribe("canary").await;
    canary.check().await;
    match hostile.recv().await {
        ServerMessage::Delivery(d) => assert_eq!(d.topic, "canary"),
        other => panic!("expected the canary's delivery, got {other:?}"),
    }
    server.stop().await;
}

/// Issue 13 item 1: at most `max-connections-per-ip` connections from one
/// address; the next is told why and closed; other addresses (the
/// canary's) are not affected, and a freed slot is usable again.
#[tokio::test]
async fn connections_per_address_are_capped_for_that_address_only() {
    let server = TestServer::start_with(Config {
        max_connections_per_ip: 3,
        // Loopback is exempt by default; here it is not.
        per_ip_exempt: Vec::new(),
        ..admin_config()
    })
    .await;
    let addr = server.addr();
    let mut canary = Canary::start(addr).await;
    let hostile = std::net::IpAddr::from([127, 0, 0, 2]);
    let connect = || async move {
        let mut c = Client::connect_raw_from(addr, hostile).await;
        match c.recv().await {
            ServerMessage::Hello { .. } => {}
            other => panic!("expected hello, got {other:?}"),
        }
        c
    };
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(connect().await);
    }
    for _ in 0..10 {
        let mut refused = Client::connect_raw_from(addr, hostile).await;
        let reason = refused.expect_error("not_allowed").await;
        assert!(
            reason.contains("too many connections from 127.0.0.2 (the limit is 3)"),
            "{reason}"
        );
        refused.expect_closed().await;
        canary.check().await;
    }
    let st = status(&server).await;
    assert_eq!(st.limits.max_connections_per_ip, Some(3));
    assert_eq!((st.refused.per_ip, st.connections_refused), (10, 10));
    assert_eq!(
        metric(&server, "janus_refusals_total{reason=\"per_ip\"}").await,
        10.0
    );
    // 127.0.0.1 has a count of its own: the canary's two, and one more.
    Client::connect(addr).await.expect_open().await;
    drop(held.pop());
    wait_until("the hostile address's slot to be released", || {
        Stats::get(&server.shared().stats.connections) == 4
    })
    .await;
    held.push(connect().await);
    canary.check().await;
    server.stop().await;
}

/// The connection cap (`max-connections`): past it a client is told why and
/// closed, the clients already in keep receiving, and a freed slot is
/// usable again.
#[tokio::test]
async fn the_connection_cap_refuses_politely_and_spares_the_clients_in() {
    let server = TestServer::start_with(Config {
        max_connections: Some(6),
        ..admin_config()
    })
    .await;
    let addr = server.addr();
    let mut canary = Canary::start(addr).await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(Client::connect(addr).await);
    }
    for _ in 0..10 {
        let mut refused = Client::connect_raw(addr).await;
        let reason = refused.expect_error("not_allowed").await;
        assert!(reason.contains("connection limit (6)"), "{reason}");
        refused.expect_closed().await;
        canary.check().await;
    }
    let st = status(&server).await;
    assert_eq!((st.capacity, st.limits.max_connections), (6, 6));
    assert_eq!(
        (st.refused.max_connections, st.connections_refused),
        (10, 10)
    );
    assert_eq!(metric(&server, "janus_connection_capacity").await, 6.0);
    assert_eq!(
        metric(&server, "janus_refusals_total{reason=\"max_connections\"}").await,
        10.0
    );
    drop(held.pop());
    wait_until("a slot to be released", || {
        Stats::get(&server.shared().stats.connections) == 5
    })
    .await;
    held.push(Client::connect(addr).await);
    canary.check().await;
    server.stop().await;
}

/// Issue 13 item 4: a client that trickles one byte every 200 ms without
/// ever completing a frame is closed at the idle timeout (bytes are not
/// activity, only complete requests are), without an error frame (an idle
/// close is silent, docs/protocol.md P4); the canary, which sends a `PING`
/// now and then, stays.
#[tokio::test]
async fn a_trickler_is_closed_at_the_idle_timeout() {
    let idle = Duration::from_millis(600);
    let server = TestServer::start_with(Config {
        idle_timeout: Some(idle),
        ..test_config()
    })
    .await;
    let mut canary = Canary::start(server.addr()).await;
    let mut trickler = Client::connect(server.addr()).await;
    let frame = b"{\"action\":\"subscribe\",\"data\":\"a-topic-whose-name-never-ends";
    let started = Instant::now();
    let mut sent = 0;
    let closed = loop {
        let byte = &frame[sent % frame.len()..][..1];
        if trickler.stream.write_all(byte).await.is_err() {
            break started.elapsed();
        }
        sent += 1;
        canary.check().await;
        let mut buf = [0u8; 64];
        match tokio::time::timeout(Duration::from_millis(200), trickler.stream.read(&mut buf)).await
        {
            Ok(Ok(0) | Err(_)) => break started.elapsed(),
            Ok(Ok(n)) => panic!(
                "a trickler expects nothing but the close, got {:?}",
                String::from_utf8_lossy(&buf[..n])
            ),
            Err(_) => {}
        }
        assert!(started.elapsed() < TIMEOUT, "the trickler was never closed");
    };
    assert!(sent >= 3, "closed after {sent} bytes");
    assert!(
        closed >= idle.mul_f32(0.9) && closed < idle + Duration::from_secs(2),
        "trickler closed after {closed:?} with an idle timeout of {idle:?}"
    );
    wait_until("the trickler's session to go", || {
        server.shared().sessions.len() == 2
    })
    .await;
    canary.check().await;
    server.stop().await;
}

/// The server process's open descriptors, by number.
fn open_fds(pid: u32) -> Vec<u32> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("/proc/PID/fd of the server")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// Issue 13 item 5: a server whose open-file limit is lowered under it (so
/// that descriptors run out long before its connection capacity) tells
/// every client it cannot take why, keeps serving the clients it has, and
/// admits the first client that comes once one descriptor is free again.
#[tokio::test]
async fn after_descriptor_exhaustion_the_first_client_is_admitted() {
    let server = ServerProcess::spawn_full(
        None,
        &["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"],
        &[],
    );
    let admin: SocketAddr = server
        .log
        .recv_timeout(TIMEOUT)
        .ok()
        .and_then(|l| {
            let rest = l.split("admin API on http://").nth(1)?.to_owned();
            rest.split(',').next()?.parse().ok()
        })
        .expect("the admin API's address after the start-up line");
    let (addr, pid) = (server.addr(), server.pid());
    let mut canary = Canary::start(addr).await;
    canary.check().await;
    // Room for about eight more descriptors (more if there are gaps).
    let open = open_fds(pid);
    let limit = open.iter().max().copied().unwrap_or(0) + 1 + 8;
    let status = std::process::Command::new("prlimit")
        .args(["--pid", &pid.to_string(), &format!("--nofile={limit}:")])
        .status()
        .expect("prlimit (util-linux)");
    assert!(status.success(), "prlimit failed");

    let mut admitted = Vec::new();
    let reason = loop {
        assert!(
            admitted.len() <= limit as usize,
            "descriptors never ran out"
        );
        let mut c = Client::connect_raw(addr).await;
        match c.recv().await {
            ServerMessage::Hello { .. } => admitted.push(c),
            ServerMessage::Error { code, reason, .. } => {
                assert_eq!(code, "not_allowed", "{reason}");
                c.expect_closed().await;
                break reason;
            }
            other => panic!("expected hello or not_allowed, got {other:?}"),
        }
    };
    assert!(reason.contains("out of file descriptors"), "{reason}");
    assert!(!admitted.is_empty(), "not one client fit");
    canary.check().await;
    for _ in 0..5 {
        let mut refused = Client::connect_raw(addr).await;
        let reason = refused.expect_error("not_allowed").await;
        assert!(reason.contains("out of file descriptors"), "{reason}");
        refused.expect_closed().await;
        canary.check().await;
    }

    // One client leaves: the next one in takes its descriptor.
    let before = open_fds(pid).len();
    drop(admitted.pop());
    wait_until("the server to close the client that left", || {
        open_fds(pid).len() < before
    })
    .await;
    let mut next = Client::connect(addr).await;
    next.subscribe("canary").await;
    canary.check().await;
    match next.recv().await {
        ServerMessage::Delivery(d) => assert_eq!(d.topic, "canary"),
        other => panic!("expected the canary's delivery, got {other:?}"),
    }

    // With the limit raised again, operators see what happened.
    let status = std::process::Command::new("prlimit")
        .args(["--pid", &pid.to_string(), "--nofile=4096:"])
        .status()
        .expect("prlimit (util-linux)");
    assert!(status.success(), "prlimit failed");
    let reply = http(admin, "GET", "/status", "").await;
    let st: Status = serde_json::from_str(&reply.body).expect("a status");
    assert_eq!(st.refused.fds, 6, "{st:?}");
    assert_eq!(st.limits.open_files, Some(4096));
}

/// Sends one subscribe per topic in one write, reading nothing.
async fn send_subscribes(client: &mut Client, topics: &[String]) {
    let mut bytes = bytes::BytesMut::new();
    for t in topics {
        ClientMessage::Subscribe(t.clone()).encode(&mut bytes);
    }
    client.send_raw(&bytes).await;
}

/// Subscribes one client to `topics` (pipelined, then every ACK read).
async fn subscribe_all(client: &mut Client, topics: &[String]) {
    send_subscribes(client, topics).await;
    for _ in topics {
        assert_eq!(client.recv().await, ServerMessage::Ack);
    }
}

/// Publishes `n` messages to `topic` over one persistent connection (X3).
async fn publish_n(client: &mut Client, topic: &str, n: usize) {
    let mut bytes = bytes::BytesMut::new();
    for i in 0..n {
        ClientMessage::Publish {
            publish: janus_core::Publish::new(topic, "e", i.to_string(), "1").expect("publish"),
            one_shot: false,
        }
        .encode(&mut bytes);
    }
    client.send_raw(&bytes).await;
    for _ in 0..n {
        assert_eq!(client.recv().await, ServerMessage::Ack);
    }
}

/// Issue 13 item 2: listings are top-K and cursor pages, correct against
/// the topics the test made, and the canary keeps receiving meanwhile.
#[tokio::test]
async fn topic_listings_are_top_k_and_cursor_pages() {
    let server = TestServer::start_with(Config {
        max_subscriptions: 5_000,
        ..admin_config()
    })
    .await;
    let admin = admin_addr(&server);
    let mut canary = Canary::start(server.addr()).await;
    let names: Vec<String> = (0..3_000).map(|i| format!("load/{i:04}")).collect();
    let mut holder = Client::connect(server.addr()).await;
    subscribe_all(&mut holder, &names).await;
    let mut second = Client::connect(server.addr()).await;
    subscribe_all(&mut second, &names[..5]).await;
    // Topic load/0010+i gets i messages: the top five by messages are known.
    let mut publisher = Client::connect(server.addr()).await;
    for i in 1..=6 {
        publish_n(&mut publisher, &names[10 + i], i).await;
    }

    let get = |path: String| async move {
        let reply = http(admin, "GET", &path, "").await;
        assert_eq!(reply.status, 200, "{path}: {reply:?}");
        reply.body
    };
    let top: TopicList =
        serde_json::from_str(&get("/topics?sort=published&limit=5".into()).await).expect("list");
    let names_of = |list: &TopicList| {
        list.topics
            .iter()
            .map(|t| t.name.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names_of(&top),
        [
            "load/0016",
            "load/0015",
            "load/0014",
            "load/0013",
            "load/0012"
        ]
    );
    assert_eq!(
        (top.topics[0].published, top.truncated, top.next),
        (6, true, None)
    );
    assert_eq!(top.total, 3_001);
    let top: TopicList =
        serde_json::from_str(&get("/topics?sort=subscribers&limit=5&prefix=load/".into()).await)
            .expect("list");
    assert_eq!(names_of(&top), names[..5]);

    // Name order, page by page: every topic once, in order.
    let mut seen = Vec::new();
    let mut after = String::new();
    let mut pages = 0;
    loop {
        let page: TopicList =
            serde_json::from_str(&get(format!("/topics?prefix=load/&limit=700{after}")).await)
                .expect("page");
        pages += 1;
        seen.extend(names_of(&page));
        canary.check().await;
        match page.next {
            Some(next) => after = format!("&after={next}"),
            None => break,
        }
    }
    assert_eq!((pages, seen == names), (5, true));
    let refused = http(admin, "GET", "/topics?sort=published&after=x", "").await;
    assert_eq!(refused.status, 400);
    assert!(refused.body.contains("bad_query"), "{refused:?}");

    // One topic's subscribers, a page at a time by token.
    let mut tokens = Vec::new();
    let mut after = String::new();
    loop {
        let page: TopicDetail =
            serde_json::from_str(&get(format!("/topics/load%2F0000?limit=1{after}")).await)
                .expect("detail");
        assert_eq!(page.subscribers, 2);
        tokens.extend(page.sessions.iter().map(|s| s.token.clone()));
        match page.next {
            Some(next) => after = format!("&after={next}"),
            None => break,
        }
    }
    let mut expected = vec![holder.token.clone(), second.token.clone()];
    expected.sort();
    assert_eq!(tokens, expected);
    canary.check().await;
    server.stop().await;
}

/// Issue 13 item 6: data nested past the limit, or holding a number no
/// double can hold, is `bad_json` on every publish path and reaches nobody.
#[tokio::test]
async fn hostile_data_is_bad_json_and_reaches_nobody() {
    let server = TestServer::start_with(admin_config()).await;
    let mut canary = Canary::start(server.addr()).await;
    let deep = format!(
        "{}1{}",
        "[".repeat(MAX_DATA_DEPTH + 1),
        "]".repeat(MAX_DATA_DEPTH + 1)
    );
    let hostile = [deep.as_str(), "1e999999", "{\"a\":[-1E400]}"];

    // Persistent publishes (X3): an error each, the connection stays open.
    let mut publisher = Client::connect(server.addr()).await;
    for data in hostile {
        let frame = format!(
            "{{\"action\":\"publish\",\"data\":{{\"topic\":\"canary\",\"data\":{data}}}}}\0"
        );
        publisher.send_raw(frame.as_bytes()).await;
        let reason = publisher.expect_error("bad_json").await;
        assert!(
            reason.contains("deeper than 64") || reason.contains("too large"),
            "{reason}"
        );
    }
    publisher.expect_open().await;

    // One-shot PUBLISH: the error, then the close.
    for data in hostile {
        let mut one_shot = Client::connect(server.addr()).await;
        let frame = format!("PUBLISH\0{{\"topic\":\"canary\",\"data\":{data}}}\0");
        one_shot.send_raw(frame.as_bytes()).await;
        one_shot.expect_error("bad_json").await;
        one_shot.expect_closed().await;
    }

    // The admin API refuses it too.
    let admin = admin_addr(&server);
    let body = format!("{{\"topic\":\"canary\",\"data\":{deep}}}");
    let reply = http(admin, "POST", "/publish", &body).await;
    assert_eq!(reply.status, 400, "{reply:?}");
    assert!(reply.body.contains("bad_json"), "{reply:?}");

    // The canary's next message is the first it ever gets: nothing hostile
    // reached it.
    canary.check().await;
    assert_eq!(canary.sent, 1);
    server.stop().await;
}

/// Delivery latencies of the canary, in microseconds, sorted.
struct Latencies(Vec<u64>);

impl Latencies {
    fn at(&self, q: f64) -> u64 {
        let i = ((self.0.len() as f64 - 1.0) * q).round() as usize;
        self.0.get(i).copied().unwrap_or(0)
    }

    fn max(&self) -> u64 {
        self.0.last().copied().unwrap_or(0)
    }
}

impl std::fmt::Display for Latencies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = |us: u64| us as f64 / 1000.0;
        write!(
            f,
            "{} deliveries, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            self.0.len(),
            ms(self.at(0.5)),
            ms(self.at(0.99)),
            ms(self.max())
        )
    }
}

/// Publishes to `canary` at `rate` per second for `duration` over one
/// persistent connection and measures, on one monotonic clock, how long
/// each message takes to reach the canary subscriber.
async fn canary_latencies(addr: SocketAddr, rate: u32, duration: Duration) -> Latencies {
    let mut subscriber = Client::connect(addr).await;
    subscriber.subscribe("canary").await;
    let publisher = TcpStream::connect(addr).await.expect("connect");
    publisher.set_nodelay(true).expect("nodelay");
    let (mut acks, mut writer) = publisher.into_split();
    // The publisher's hello and ACKs are read and dropped, so its queue never fills.
    let drain = tokio::spawn(async move {
        let mut buf = [0u8; 4096];
        while matches!(acks.read(&mut buf).await, Ok(n) if n > 0) {}
    });
    let count = (f64::from(rate) * duration.as_secs_f64()) as usize;
    let mut ticks = tokio::time::interval(Duration::from_secs(1) / rate);
    let mut sent_at = Vec::with_capacity(count);
    let receiver = tokio::spawn(async move {
        let mut arrived = Vec::with_capacity(count);
        for i in 0..count {
            match subscriber.recv().await {
                ServerMessage::Delivery(d) => {
                    assert_eq!(d.message_id, i.to_string(), "canary order");
                    arrived.push(Instant::now());
                }
                other => panic!("canary expected a delivery, got {other:?}"),
            }
        }
        arrived
    });
    for i in 0..count {
        ticks.tick().await;
        let frame = format!(
            "{{\"action\":\"publish\",\"data\":{{\"topic\":\"canary\",\"message_id\":\"{i}\",\"data\":{i}}}}}\0"
        );
        sent_at.push(Instant::now());
        writer.write_all(frame.as_bytes()).await.expect("publish");
    }
    let arrived = receiver.await.expect("canary receiver");
    drain.abort();
    let mut us: Vec<u64> = sent_at
        .iter()
        .zip(&arrived)
        .map(|(s, a)| a.duration_since(*s).as_micros() as u64)
        .collect();
    us.sort_unstable();
    Latencies(us)
}

/// Creates `count` topics named `bench/N` over `connections` clients
/// (pipelined subscribes, ACKs read as they come).
async fn create_topics(addr: SocketAddr, count: usize, connections: usize) -> Vec<TcpStream> {
    let per = count.div_ceil(connections);
    let mut tasks = Vec::new();
    for c in 0..connections {
        let range = (c * per)..((c + 1) * per).min(count);
        tasks.push(tokio::spawn(async move {
            let stream = TcpStream::connect(addr).await.expect("connect");
            let (mut read, mut write) = stream.into_split();
            let expected = range.len() + 1; // the hello, then one ACK each
            let reader = tokio::spawn(async move {
                let mut frames = 0;
                let mut buf = vec![0u8; 64 * 1024];
                while frames < expected {
                    let n = read.read(&mut buf).await.expect("read ACKs");
                    assert!(n > 0, "server closed a topic holder");
                    frames += buf[..n].iter().filter(|b| **b == 1).count();
                }
                read
            });
            let mut out = Vec::with_capacity(64 * 1024);
            for i in range {
                out.extend_from_slice(
                    format!("{{\"action\":\"subscribe\",\"data\":\"bench/{i:07}\"}}\0").as_bytes(),
                );
                if out.len() > 60 * 1024 {
                    write.write_all(&out).await.expect("subscribe");
                    out.clear();
                }
            }
            write.write_all(&out).await.expect("subscribe");
            let read = reader.await.expect("ACK reader");
            read.reunite(write).expect("same stream")
        }));
    }
    let mut streams = Vec::new();
    for t in tasks {
        streams.push(t.await.expect("topic holder"));
    }
    streams
}

/// Kills a child process (one this test started) when dropped.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Issue 13 item 2, measured: the canary's delivery latency while
/// `janus-admin top` polls the busiest 500 of many topics every second
/// stays within 2× of its latency without it.
///
/// By default this runs small (20,000 topics, 2 s phases) and checks only
/// that everything arrives and `top` keeps polling. The measurement of the
/// issue is
///
/// ```text
/// JANUS_LISTING_BENCH=1000000 cargo test --release -p tests --test e2e -- \
///     hostile::listing --nocapture
/// ```
///
/// which holds 1,000,000 topics, runs two rounds of 20 s without and 20 s
/// with `top`, prints both figures and asserts the 2× bound on the maximum
/// and the p99.
#[test]
fn listing_does_not_slow_deliveries() {
    let bench: Option<usize> = std::env::var("JANUS_LISTING_BENCH")
        .ok()
        .and_then(|v| v.parse().ok());
    let topics = bench.unwrap_or(20_000);
    let phase = if bench.is_some() {
        Duration::from_secs(20)
    } else {
        Duration::from_secs(2)
    };
    // The server on a runtime of its own, as in the binary (one worker per core).
    let server_runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("server")
        .build()
        .expect("server runtime");
    let server = server_runtime.block_on(TestServer::start_with(Config {
        max_subscriptions: topics,
        // The canary's topic comes on top of the bench's.
        max_topics: topics + 1,
        ..admin_config()
    }));
    let (addr, admin) = (server.addr(), admin_addr(&server));
    // Built (if need be) now, not while measuring.
    let janus_admin = janus_tests::cargo_bin("janus-admin");
    janus_tests::block_on(async move {
        let started = Instant::now();
        let holders = create_topics(addr, topics, 100.min(topics)).await;
        eprintln!("{topics} topics created in {:.1?}", started.elapsed());

        let listing = Instant::now();
        let reply = http(admin, "GET", "/topics?sort=published&limit=500", "").await;
        let listing = listing.elapsed();
        assert_eq!(reply.status, 200);
        let list: TopicList = serde_json::from_str(&reply.body).expect("topic list");
        assert_eq!((list.topics.len(), list.total), (500, topics as u64));
        eprintln!("one /topics?sort=published&limit=500 call: {listing:.1?}");

        // Two rounds of (without, with), so that a change in the machine's
        // other load biases neither side.
        let (mut quiet, mut busy) = (Vec::new(), Vec::new());
        for _ in 0..2 {
            quiet.extend(canary_latencies(addr, 50, phase).await.0);
            // `janus-admin top` needs a terminal: `script` gives it one.
            let command = format!(
                "{} --server http://{admin} top --interval 1",
                janus_admin.display()
            );
            let top = std::process::Command::new("script")
                .args(["-qfec", &command, "/dev/null"])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("script (util-linux) runs janus-admin top");
            let mut top = KillOnDrop(top);
            busy.extend(canary_latencies(addr, 50, phase).await.0);
            assert!(
                top.0.try_wait().expect("top status").is_none(),
                "janus-admin top exited during the measurement"
            );
        }
        quiet.sort_unstable();
        busy.sort_unstable();
        let (quiet, busy) = (Latencies(quiet), Latencies(busy));
        eprintln!("canary without top: {quiet}");
        eprintln!("canary with top:    {busy}");
        if bench.is_some() {
            // Below half a millisecond, twice is noise: the floor.
            for (what, q, b) in [
                ("max", quiet.max(), busy.max()),
                ("p99", quiet.at(0.99), busy.at(0.99)),
            ] {
                assert!(
                    b <= 2 * q.max(500),
                    "canary {what} {b} µs with top vs {q} µs without"
                );
            }
        }
        drop(holders);
    });
    server_runtime.block_on(server.stop());
}
