//! The delivery path under pressure: whole frames whatever a policy drops,
//! every byte a client makes the server hold bounded, stuck clients released,
//! kicks that take effect at once, one order per topic, and 2009 publishers
//! whose messages must not be lost.

use std::io::{Read, Write};
use std::time::Duration;

use janus_core::{ClientMessage, Publish, ServerMessage};
use janus_server::session::CloseReason;
use janus_server::stats::Stats;
use janus_server::{Config, SlowConsumerPolicy};
use janus_tests::{test_config, wait_until, Client, ServerProcess, TestServer, TIMEOUT};

/// Reads deliveries until message `last` arrives, checking that every frame
/// is a whole delivery and that ids only increase. Returns how many arrived.
async fn read_increasing_until(c: &mut Client, last: usize) -> usize {
    let mut previous: Option<usize> = None;
    let mut received = 0;
    loop {
        let id: usize = match c.recv().await {
            ServerMessage::Delivery(d) => d.message_id.parse().expect("numeric id"),
            other => panic!("expected a delivery, got {other:?}"),
        };
        assert!(
            previous.is_none_or(|p| id > p),
            "out of order: {id} after {previous:?}"
        );
        previous = Some(id);
        received += 1;
        if id == last {
            return received;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_oldest_never_cuts_a_frame() {
    let server = TestServer::start_with(Config {
        slow_consumer: SlowConsumerPolicy::DropOldest,
        queue_limit: 1,
        ..test_config()
    })
    .await;
    let mut reader = Client::connect_with_rcvbuf(server.addr(), 4096).await;
    reader.subscribe("t").await;
    // 8 MiB in all: more than the kernel buffers between server and reader
    // can hold (tcp_wmem allows up to 4 MiB), so the policy has to drop.
    let data = format!("\"{}\"", "d".repeat(4000));
    let mut p = Client::connect(server.addr()).await;
    // While the reader reads nothing, the socket fills mid-frame and the
    // policy keeps dropping around the partly written frame.
    for id in 0..2000 {
        p.publish_acked("t", &id.to_string(), &data).await;
    }
    let received = read_increasing_until(&mut reader, 1999).await;
    assert!(received < 2000, "the policy dropped nothing");
    // Then publishes race a reader that reads slowly.
    let publishing = tokio::spawn(async move {
        for id in 2000..4000 {
            p.publish_acked("t", &id.to_string(), &data).await;
        }
    });
    let mut previous = 1999;
    loop {
        let ServerMessage::Delivery(d) = reader.recv().await else {
            panic!("not a delivery");
        };
        let id: usize = d.message_id.parse().expect("numeric id");
        assert!(id > previous, "out of order: {id} after {previous}");
        previous = id;
        if id == 3999 {
            break;
        }
        if id.is_multiple_of(20) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    publishing.await.expect("publisher");
    assert!(Stats::get(&server.shared().stats.deliveries_dropped) > 0);
    assert_eq!(Stats::get(&server.shared().stats.slow_consumers), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_gets_a_whole_slow_consumer_frame_then_the_close() {
    let server = TestServer::start().await;
    let mut stuck = Client::connect_with_rcvbuf(server.addr(), 4096).await;
    stuck.subscribe("t").await;
    let mut other = Client::connect(server.addr()).await;
    other.subscribe("t").await;
    // The other subscriber reads as fast as it can, until the last message.
    let other_reads = tokio::spawn(async move {
        let mut ids = Vec::new();
        loop {
            match other.recv().await {
                ServerMessage::Delivery(d) if d.message_id == "end" => return ids,
                ServerMessage::Delivery(d) => ids.push(d.message_id.parse::<usize>().expect("id")),
                other => panic!("expected a delivery, got {other:?}"),
            }
        }
    });
    let data = format!("\"{}\"", "s".repeat(700));
    let mut p = Client::connect(server.addr()).await;
    let shared = server.shared().clone();
    let mut published = 0;
    while Stats::get(&shared.stats.slow_consumers) == 0 {
        p.publish_acked("t", &published.to_string(), &data).await;
        published += 1;
        assert!(published < 100_000, "never cut");
    }
    // The cut takes effect at once: the stuck client left the topic.
    let info = shared.topics.topic("t").expect("topic");
    assert_eq!(info.subscribers, 1);
    p.publish_acked("t", "end", "0").await;
    // Now it reads: whole deliveries in order, then slow_consumer, then the end.
    let mut previous: Option<usize> = None;
    loop {
        match stuck.recv_or_eof().await {
            Some(ServerMessage::Delivery(d)) => {
                let id: usize = d.message_id.parse().expect("numeric id");
                assert!(previous.is_none_or(|p| id > p));
                previous = Some(id);
            }
            Some(ServerMessage::Error { code, .. }) => {
                assert_eq!(code, "slow_consumer");
                break;
            }
            other => panic!("expected deliveries then slow_consumer, got {other:?}"),
        }
    }
    stuck.expect_closed().await;
    // The other subscriber got everything, in order.
    let ids = other_reads.await.expect("reader");
    assert_eq!(ids, (0..published).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_never_reads_is_released_at_the_write_deadline() {
    for session_ttl in [Duration::ZERO, Duration::from_secs(60)] {
        let server = TestServer::start_with(Config {
            write_deadline: Duration::from_millis(300),
            queue_bytes: 64 << 20,
            queue_limit: 1 << 20,
            session_ttl,
            ..test_config()
        })
        .await;
        let mut stuck = Client::connect_with_rcvbuf(server.addr(), 4096).await;
        stuck.subscribe("t").await;
        let token = stuck.token.parse().expect("token");
        let shared = server.shared().clone();
        let data = format!("\"{}\"", "w".repeat(4000));
        let mut p = Client::connect(server.addr()).await;
        // Enough to fill every socket buffer on the way and park the writer.
        for id in 0..2000 {
            p.publish_acked("t", &id.to_string(), &data).await;
        }
        if session_ttl.is_zero() {
            wait_until("the stuck subscriber to be dropped and forgotten", || {
                shared.sessions.get(&token).is_none()
                    && shared.topics.topic("t").is_none_or(|t| t.subscribers == 0)
            })
            .await;
        } else {
            // Its connection is dropped; the session waits for a resume, its
            // queue bounded by the budget.
            wait_until("the stuck subscriber's connection to be dropped", || {
                shared
                    .sessions
                    .get(&token)
                    .is_some_and(|s| s.detached_since().is_some())
            })
            .await;
        }
        // Its connection is gone: what the kernel held, then the end.
        while stuck.recv_raw_or_eof().await.is_some() {}
        p.expect_open().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kick_takes_effect_at_once_and_kicked_comes_before_the_backlog() {
    let server = TestServer::start_with(Config {
        queue_bytes: 64 << 20,
        queue_limit: 1 << 20,
        ..test_config()
    })
    .await;
    let mut stuck = Client::connect_with_rcvbuf(server.addr(), 4096).await;
    stuck.subscribe("t").await;
    let token = stuck.token.parse().expect("token");
    let shared = server.shared().clone();
    // 12 MiB: far more than the kernel buffers hold (tcp_wmem: 4 MiB at most).
    let data = format!("\"{}\"", "k".repeat(4000));
    let mut p = Client::connect(server.addr()).await;
    let count = 3000;
    for id in 0..count {
        p.publish_acked("t", &id.to_string(), &data).await;
    }
    let session = shared.sessions.get(&token).expect("session");
    assert!(
        session.outbound.status().frames > 100,
        "a backlog is queued"
    );
    assert!(shared.close_session(&session, &CloseReason::Kicked("bye".into())));
    // At once: out of the topic, its queue freed, closing.
    assert!(shared.topics.topic("t").is_none_or(|t| t.subscribers == 0));
    let status = session.outbound.status();
    assert!(status.frames <= 2, "{status:?}");
    assert_eq!(status.end, janus_server::outbound::End::Closing);
    drop(session);
    // The client reads what the kernel already held, then `kicked`, then the end.
    let mut deliveries = 0;
    loop {
        match stuck.recv_or_eof().await {
            Some(ServerMessage::Delivery(_)) => deliveries += 1,
            Some(ServerMessage::Error { code, reason, .. }) => {
                assert_eq!((code.as_str(), reason.as_str()), ("kicked", "bye"));
                break;
            }
            other => panic!("expected deliveries then kicked, got {other:?}"),
        }
    }
    assert!(deliveries < count, "the queued backlog was not discarded");
    stuck.expect_closed().await;
    wait_until("the kicked session to be forgotten", || {
        shared.sessions.get(&token).is_none()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kicked_client_that_never_reads_is_dropped_after_the_grace() {
    let server = TestServer::start_with(Config {
        queue_bytes: 64 << 20,
        queue_limit: 1 << 20,
        ..test_config()
    })
    .await;
    let mut stuck = Client::connect_with_rcvbuf(server.addr(), 4096).await;
    stuck.subscribe("t").await;
    let token = stuck.token.parse().expect("token");
    let data = format!("\"{}\"", "g".repeat(4000));
    let mut p = Client::connect(server.addr()).await;
    for id in 0..2000 {
        p.publish_acked("t", &id.to_string(), &data).await;
    }
    let shared = server.shared().clone();
    let session = shared.sessions.get(&token).expect("session");
    shared.close_session(&session, &CloseReason::Kicked("bye".into()));
    drop(session);
    let kicked_at = tokio::time::Instant::now();
    wait_until("the kicked connection to be dropped", || {
        shared.sessions.get(&token).is_none()
    })
    .await;
    assert!(
        kicked_at.elapsed() < Duration::from_secs(10),
        "dropped only after {:?}",
        kicked_at.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_does_not_wait_for_a_client_that_never_reads() {
    let server = TestServer::start_with(Config {
        queue_bytes: 64 << 20,
        queue_limit: 1 << 20,
        shutdown_timeout: Duration::from_secs(15),
        ..test_config()
    })
    .await;
    let addr = server.addr();
    let mut stuck = Client::connect_with_rcvbuf(addr, 4096).await;
    stuck.subscribe("t").await;
    let mut good = Client::connect(addr).await;
    good.subscribe("t").await;
    let data = format!("\"{}\"", "z".repeat(2000));
    let mut p = Client::connect(addr).await;
    let count = 3000;
    let reading = tokio::spawn(async move {
        let n = read_increasing_until(&mut good, count - 1).await;
        good.expect_error("server_shutdown").await;
        good.expect_closed().await;
        n
    });
    for id in 0..count {
        p.publish_acked("t", &id.to_string(), &data).await;
    }
    let started = tokio::time::Instant::now();
    server.stop().await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(10),
        "shutdown waited {took:?} for a client that never reads"
    );
    assert_eq!(
        reading.await.expect("reader"),
        count,
        "the reader got everything"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_publishers_one_order_for_every_subscriber() {
    let server = TestServer::start().await;
    let mut subscribers = Vec::new();
    for _ in 0..5 {
        let mut c = Client::connect(server.addr()).await;
        c.subscribe("race").await;
        subscribers.push(c);
    }
    let per_publisher = 400;
    let publishers: Vec<_> = ["a", "b"]
        .into_iter()
        .map(|name| {
            let addr = server.addr();
            tokio::spawn(async move {
                let mut p = Client::connect(addr).await;
                for i in 0..per_publisher {
                    let publish =
                        Publish::new("race", name, i.to_string(), "1").expect("valid publish");
                    p.send(ClientMessage::Publish {
                        publish,
                        one_shot: false,
                    })
                    .await;
                }
                for _ in 0..per_publisher {
                    assert_eq!(p.recv().await, ServerMessage::Ack);
                }
            })
        })
        .collect();
    let mut orders = Vec::new();
    for c in &mut subscribers {
        let mut order = Vec::new();
        for _ in 0..2 * per_publisher {
            match c.recv().await {
                ServerMessage::Delivery(d) => order.push(format!("{}{}", d.event, d.message_id)),
                other => panic!("expected a delivery, got {other:?}"),
            }
        }
        orders.push(order);
    }
    for p in publishers {
        p.await.expect("publisher");
    }
    for order in &orders[1..] {
        assert_eq!(order, &orders[0], "every subscriber sees one order");
    }
}

/// `--test-fanout-delay` (hidden; the load gate's proof that it notices a
/// slow server) really slows every delivery: a publish to four subscribers
/// with 50 ms each is acknowledged no sooner than 200 ms later, since the
/// whole fan-out runs before the ACK is queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_test_fanout_delay_slows_every_delivery() {
    let delay = Duration::from_millis(50);
    let server = TestServer::start_with(janus_server::Config {
        test_fanout_delay: Some(delay),
        ..janus_tests::test_config()
    })
    .await;
    let mut subscribers = Vec::new();
    for _ in 0..4 {
        let mut c = Client::connect(server.addr()).await;
        c.subscribe("slow").await;
        subscribers.push(c);
    }
    let mut p = Client::connect(server.addr()).await;
    let start = std::time::Instant::now();
    p.publish_acked("slow", "1", "1").await;
    let took = start.elapsed();
    assert!(took >= 4 * delay, "the fan-out took {took:?}");
    for c in &mut subscribers {
        assert!(matches!(c.recv().await, ServerMessage::Delivery(_)));
    }
}

/// A 2009 publisher: `PUBLISH␀{json}` without a terminator, then close at
/// once without reading the hello, which the kernel turns into a reset.
fn publish_2009_with_reset(addr: std::net::SocketAddr, id: usize) {
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    let body = format!(
        "<regular-socket/>\0PUBLISH\0{{\"topic\":\"old\",\"event\":\"e\",\"message_id\":\"{id}\",\"data\":{id}}}"
    );
    s.write_all(body.as_bytes()).expect("write");
    socket2::SockRef::from(&s)
        .set_linger(Some(Duration::ZERO))
        .expect("linger");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_2009_publisher_that_resets_loses_nothing() {
    let server = TestServer::start().await;
    let mut c = Client::connect(server.addr()).await;
    c.subscribe("old").await;
    let addr = server.addr();
    let count = 200;
    tokio::task::spawn_blocking(move || {
        for id in 0..count {
            publish_2009_with_reset(addr, id);
        }
    })
    .await
    .expect("publisher");
    let mut ids: Vec<usize> = Vec::new();
    for _ in 0..count {
        match c.recv().await {
            ServerMessage::Delivery(d) => ids.push(d.message_id.parse().expect("id")),
            other => panic!("expected a delivery, got {other:?}"),
        }
    }
    ids.sort_unstable();
    assert_eq!(ids, (0..count).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_2009_publisher_that_waits_for_the_close_is_answered() {
    let server = TestServer::start().await;
    let mut c = Client::connect(server.addr()).await;
    c.subscribe("old").await;
    let addr = server.addr();
    let closed = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(TIMEOUT)).expect("timeout");
        s.write_all(b"PUBLISH\0{\"topic\":\"old\",\"data\":\"waiting\"}")
            .expect("write");
        // No terminator, no close: the server must publish and close by itself.
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).map(|_| rest)
    });
    match c.recv().await {
        ServerMessage::Delivery(d) => assert_eq!(d.data, "\"waiting\""),
        other => panic!("expected a delivery, got {other:?}"),
    }
    let rest = closed.await.expect("publisher").expect("the server closed");
    assert!(rest.ends_with(b"\x01"), "only the hello came back");
}

/// A one-shot publish whose body can never become a JSON object is answered
/// as soon as that shows, without a terminator or a close from the publisher
/// (P5), and publishes nothing.
#[tokio::test]
async fn a_publish_body_that_can_never_be_json_is_answered_without_waiting() {
    let server = TestServer::start().await;
    let mut c = Client::connect(server.addr()).await;
    c.subscribe("old").await;
    for body in [
        &b"[1,2]"[..],
        b"\"old\"",
        b"{nope",
        b"{\"topic\":\"old\",\"data\":[1}",
        b"{\"topic\":\"old\",\"data\":01}",
    ] {
        let mut p = Client::connect(server.addr()).await;
        p.send_raw(&[&b"PUBLISH\0"[..], body].concat()).await;
        // No terminator and no close: the answer comes anyway.
        let reason = p.expect_error("bad_json").await;
        p.expect_closed().await;
        assert!(!reason.is_empty(), "{body:?}");
    }
    let mut publisher = Client::connect(server.addr()).await;
    publisher.publish_acked("old", "1", "\"after\"").await;
    match c.recv().await {
        ServerMessage::Delivery(d) => assert_eq!(d.data, "\"after\""),
        other => panic!("expected the one good publish, got {other:?}"),
    }
}

/// A one-shot publish body longer than max-frame is refused even when it
/// completes within the read that crosses the limit (P1).
#[tokio::test]
async fn a_publish_body_past_max_frame_is_refused_even_when_complete() {
    let server = TestServer::start_with(Config {
        max_frame: 4096,
        ..test_config()
    })
    .await;
    let mut c = Client::connect(server.addr()).await;
    c.subscribe("big").await;
    let mut p = Client::connect(server.addr()).await;
    let body = format!("{{\"topic\":\"big\",\"data\":\"{}\"}}", "y".repeat(4200));
    p.send_raw(format!("PUBLISH\0{body}").as_bytes()).await;
    p.expect_error("frame_too_large").await;
    p.expect_closed().await;
    let mut publisher = Client::connect(server.addr()).await;
    publisher.publish_acked("big", "1", "\"small\"").await;
    match c.recv().await {
        ServerMessage::Delivery(d) => assert_eq!(d.data, "\"small\""),
        other => panic!("expected only the small publish, got {other:?}"),
    }
}

#[tokio::test]
async fn a_refused_client_reads_its_error_even_if_it_sent_something() {
    let server = TestServer::start_with(Config {
        max_connections: Some(1),
        ..test_config()
    })
    .await;
    let _holder = Client::connect(server.addr()).await;
    for _ in 0..20 {
        let mut refused = Client::connect_raw(server.addr()).await;
        refused
            .send_raw(b"<regular-socket/>\0{\"action\":\"subscribe\",\"data\":\"t\"}\0")
            .await;
        refused.expect_error("not_allowed").await;
        refused.expect_closed().await;
    }
}

#[tokio::test]
async fn exempt_networks_are_not_capped() {
    // The default exempts loopback: a load-test host holds many connections.
    let server = TestServer::start_with(Config {
        max_connections_per_ip: 2,
        ..test_config()
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(Client::connect(server.addr()).await);
    }
    for c in &mut held {
        c.expect_open().await;
    }
    assert_eq!(Stats::get(&server.shared().stats.connections), 5);
}

#[tokio::test]
async fn the_topic_limit_refuses_new_topics_and_keeps_the_connection() {
    let server = TestServer::start_with(Config {
        max_topics: 2,
        ..test_config()
    })
    .await;
    let mut c = Client::connect(server.addr()).await;
    c.subscribe("a").await;
    c.subscribe("b").await;
    c.send(ClientMessage::Subscribe("c".into())).await;
    let reason = c.expect_error("unavailable").await;
    assert!(reason.contains("maximum of 2 topics"), "{reason}");
    // Existing topics still work, and the connection stays open.
    let mut d = Client::connect(server.addr()).await;
    d.subscribe("a").await;
    c.send(ClientMessage::Unsubscribe("b".into())).await;
    wait_until("topic b to go", || {
        server.shared().topics.topic_count() == 1
    })
    .await;
    c.subscribe("c").await;
}

/// A client that floods requests and never reads: the server stops reading
/// it once the answers fill its budget, so neither the bytes it manages to
/// send nor the server's memory grow with the flood; then it is aborted at
/// the write deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_floods_requests_and_never_reads_is_bounded() {
    let server = ServerProcess::spawn(&["--write-deadline", "2s"]);
    let rss_before = server.rss_kib();
    let addr = server.addr();
    let flooded = tokio::task::spawn_blocking(move || {
        let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("socket");
        sock.set_recv_buffer_size(4096).expect("rcvbuf");
        sock.connect(&addr.into()).expect("connect");
        let mut s: std::net::TcpStream = sock.into();
        s.set_write_timeout(Some(Duration::from_secs(1)))
            .expect("timeout");
        let chunk = b"x\0".repeat(4096);
        let mut sent = 0usize;
        // 64 MiB of `x\0` would be 32 million error frames.
        while sent < 64 << 20 {
            match s.write(&chunk) {
                Ok(n) => sent += n,
                Err(_) => break,
            }
        }
        sent
    })
    .await
    .expect("flooder");
    assert!(
        flooded < 16 << 20,
        "the server kept reading a client that never reads: {flooded} bytes taken"
    );
    let grown = server.rss_kib().saturating_sub(rss_before);
    assert!(
        grown < 64 * 1024,
        "server RSS grew by {grown} KiB for one flooding client"
    );
}

/// SIGTERM with a subscriber that never reads: the server binary exits in
/// about a second (the stall limit), not after the shutdown timeout; a
/// reading subscriber gets `server_shutdown`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_is_not_held_up_by_a_client_that_never_reads() {
    let mut server = ServerProcess::spawn(&["--shutdown-timeout", "30s"]);
    let addr = server.addr();
    let mut stuck = Client::connect_with_rcvbuf(addr, 4096).await;
    stuck.subscribe("t").await;
    let mut good = Client::connect(addr).await;
    good.subscribe("other").await;
    let data = format!("\"{}\"", "s".repeat(4000));
    let mut p = Client::connect(addr).await;
    // 8 MB for the stuck client: its socket is full and its queue is not empty.
    for id in 0..2000 {
        p.publish_acked("t", &id.to_string(), &data).await;
    }
    let started = std::time::Instant::now();
    let pid = server.pid().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(killed.success());
    good.expect_error("server_shutdown").await;
    good.expect_closed().await;
    let mut status = None;
    wait_until("the server to exit", || {
        status = server.child().try_wait().expect("wait");
        status.is_some()
    })
    .await;
    let took = started.elapsed();
    eprintln!("SIGTERM to exit: {took:?}");
    assert!(
        status.is_some_and(|s| s.success()),
        "exit status {status:?}"
    );
    assert!(
        took < Duration::from_secs(8),
        "SIGTERM took {took:?} with a client that never reads"
    );
}
