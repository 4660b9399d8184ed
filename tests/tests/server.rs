//! Server behaviour under load and over time: isolation from a stuck client,
//! wide fan-out, churn that leaves nothing behind, heartbeats, idle timeouts,
//! connection limits and graceful shutdown.

use std::sync::atomic::Ordering;
use std::time::Duration;

use janus_core::ServerMessage;
use janus_server::stats::Stats;
use janus_server::Config;
use janus_tests::{publish, test_config, wait_until, Client, TestServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_is_not_stalled_by_a_subscriber_that_never_reads() {
    // A budget of about 1,000 of these messages: the stuck client passes it,
    // a reader that reads does not.
    let server = TestServer::start_with(Config {
        queue_bytes: 8 << 20,
        ..test_config()
    })
    .await;
    let mut stuck = Client::connect(server.addr()).await;
    stuck.subscribe("big").await;
    let mut reader = Client::connect(server.addr()).await;
    reader.subscribe("big").await;
    let data = format!("\"{}\"", "y".repeat(8 * 1024));
    let count = 2000;
    let receiving = tokio::spawn(async move {
        for i in 0..count {
            let ServerMessage::Delivery(d) = reader.recv().await else {
                panic!("not a delivery")
            };
            assert_eq!(d.message_id, i.to_string());
        }
    });
    // A persistent publisher, so the test is not dominated by connection setup.
    let mut p = Client::connect(server.addr()).await;
    for i in 0..count {
        p.publish_acked("big", &i.to_string(), &data).await;
    }
    receiving.await.unwrap();
    // The stuck client was cut as a slow consumer (default policy), not waited for.
    assert_eq!(Stats::get(&server.shared().stats.slow_consumers), 1);
    drop(stuck);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_publish_reaches_500_subscribers() {
    let server = TestServer::start().await;
    let mut clients = Vec::new();
    for _ in 0..500 {
        let mut c = Client::connect(server.addr()).await;
        c.subscribe("wide").await;
        clients.push(c);
    }
    publish(server.addr(), "wide", "w", "{\"all\":true}").await;
    let mut first: Option<Vec<u8>> = None;
    for c in &mut clients {
        let raw = c.recv_raw().await;
        match &first {
            None => first = Some(raw),
            Some(f) => assert_eq!(&raw, f),
        }
    }
    let shared = server.shared().clone();
    wait_until("500 deliveries counted", || {
        Stats::get(&shared.stats.deliveries_sent) == 500
    })
    .await;
    assert_eq!(Stats::get(&shared.stats.messages_published), 1);
}

#[tokio::test]
async fn connect_subscribe_disconnect_cycles_leave_nothing_behind() {
    let server = TestServer::start().await;
    for i in 0..200 {
        let mut c = Client::connect(server.addr()).await;
        c.subscribe(&format!("churn-{}", i % 7)).await;
        c.subscribe("churn-all").await;
        drop(c);
    }
    let shared = server.shared().clone();
    wait_until("sessions and topics released", || {
        shared.sessions.is_empty()
            && shared.topics.topic_count() == 0
            && shared.topics.subscription_count() == 0
    })
    .await;
    wait_until("connections closed", || {
        shared.stats.connections.load(Ordering::Relaxed) == 0
    })
    .await;
    assert_eq!(Stats::get(&shared.stats.connections_total), 200);
}

#[tokio::test]
async fn graceful_shutdown_delivers_what_was_queued() {
    let server = TestServer::start().await;
    let mut sub = Client::connect(server.addr()).await;
    sub.subscribe("q").await;
    let data = format!("\"{}\"", "z".repeat(4096));
    // The subscriber reads nothing yet: these sit in socket buffers and its queue.
    let n = 200;
    for i in 0..n {
        publish(server.addr(), "q", &i.to_string(), &data).await;
    }
    let stop = tokio::spawn(server.stop());
    for i in 0..n {
        let ServerMessage::Delivery(d) = sub.recv().await else {
            panic!("delivery {i} lost")
        };
        assert_eq!(d.message_id, i.to_string());
    }
    sub.expect_error("server_shutdown").await;
    sub.expect_closed().await;
    stop.await.unwrap();
}

#[tokio::test]
async fn heartbeat_pings_a_quiet_client_after_its_first_delivery() {
    let config = Config {
        heartbeat: Duration::from_millis(200),
        ..test_config()
    };
    let server = TestServer::start_with(config).await;
    // A 2009-style client that never gets a delivery: no PING, ever (P4).
    let mut old = Client::connect(server.addr()).await;
    old.subscribe("quiet").await;
    let mut c = Client::connect(server.addr()).await;
    c.subscribe("t").await;
    publish(server.addr(), "t", "1", "1").await;
    assert!(matches!(c.recv().await, ServerMessage::Delivery(_)));
    assert_eq!(c.recv().await, ServerMessage::Ping);
    c.send_raw(b"PONG\0").await;
    assert_eq!(c.recv().await, ServerMessage::Ping);
    // Two heartbeat intervals have passed for the other client too.
    old.expect_nothing_buffered();
}

#[tokio::test]
async fn no_ping_while_traffic_flows_within_the_interval() {
    let heartbeat = Duration::from_millis(600);
    let config = Config {
        heartbeat,
        ..test_config()
    };
    let server = TestServer::start_with(config).await;
    let mut c = Client::connect(server.addr()).await;
    c.subscribe("t").await;
    // Deliveries every heartbeat/6 for five heartbeat intervals: a server
    // that pinged on a timer regardless of traffic would show a PING here.
    let started = tokio::time::Instant::now();
    let mut sent = 0u32;
    while started.elapsed() < heartbeat * 5 {
        publish(server.addr(), "t", "1", &sent.to_string()).await;
        match c.recv().await {
            ServerMessage::Delivery(d) => assert_eq!(d.data, sent.to_string()),
            other => panic!("expected only deliveries while traffic flows, got {other:?}"),
        }
        sent += 1;
        tokio::time::sleep(heartbeat / 6).await;
    }
    // When the traffic stops, the heartbeat resumes.
    assert_eq!(c.recv().await, ServerMessage::Ping);
}

#[tokio::test]
async fn idle_timeout_closes_silent_clients_only_when_configured() {
    let config = Config {
        idle_timeout: Some(Duration::from_millis(300)),
        ..test_config()
    };
    let server = TestServer::start_with(config).await;
    let mut c = Client::connect(server.addr()).await;
    c.expect_closed().await;
    wait_until("session released", || server.shared().sessions.is_empty()).await;
}

#[tokio::test]
async fn connection_limit_refuses_politely_and_keeps_serving() {
    let config = Config {
        max_connections: Some(2),
        ..test_config()
    };
    let server = TestServer::start_with(config).await;
    let mut a = Client::connect(server.addr()).await;
    let mut b = Client::connect(server.addr()).await;
    a.subscribe("t").await;
    let mut refused = Client::connect_raw(server.addr()).await;
    let reason = refused.expect_error("not_allowed").await;
    assert!(reason.contains("connection limit"), "{reason}");
    refused.expect_closed().await;
    b.expect_open().await;
    a.expect_open().await;
    // A freed slot is usable again.
    drop(b);
    let shared = server.shared().clone();
    wait_until("a slot free", || {
        shared.stats.connections.load(Ordering::Relaxed) == 1
    })
    .await;
    let mut c = Client::connect(server.addr()).await;
    c.expect_open().await;
    assert_eq!(Stats::get(&shared.stats.connections_refused), 1);
}
