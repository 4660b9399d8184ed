//! docs/protocol.md P1–P9 as a 2009 client sees them: hello, subscribe/ACK,
//! both PUBLISH forms, delivery shape and order, framing, and every P7 error.

use std::time::{SystemTime, UNIX_EPOCH};

use janus_core::{ClientMessage, ServerMessage};
use janus_server::Config;
use janus_tests::{publish, publish_legacy, test_config, wait_until, Client, TestServer};

#[tokio::test]
async fn hello_has_timestamp_then_token() {
    let server = TestServer::start().await;
    let mut c = Client::connect_raw(server.addr()).await;
    let raw = String::from_utf8(c.recv_raw().await).unwrap();
    assert!(raw.starts_with("{\"timestamp\":["), "{raw}");
    let v: serde_json::Value = serde_json::from_str(&raw).unwrap();
    let keys: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
    assert_eq!(keys, ["timestamp", "token"]);
    let token = v["token"].as_str().unwrap();
    assert_eq!(token.len(), 32);
    assert!(token
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
    let ts: Vec<u64> = v["timestamp"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect();
    let unix = ts[0] * 1_000_000 + ts[1];
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(now.abs_diff(unix) < 5 && ts[2] < 1_000_000, "{ts:?}");
    // Tokens are unique per connection.
    let other = Client::connect(server.addr()).await;
    assert_ne!(other.token, token);
}

#[tokio::test]
async fn subscribe_ack_then_legacy_publish_is_delivered_with_exact_key_order() {
    let server = TestServer::start().await;
    let mut sub = Client::connect(server.addr()).await;
    sub.send_raw(b"<regular-socket/>\0").await;
    sub.send_raw(b"{\"action\":\"subscribe\",\"data\":\"news\"}\0")
        .await;
    assert_eq!(sub.recv_raw().await, b"ACK");
    // The 2009 publisher: keys in its order, no trailing NUL, then close.
    publish_legacy(
        server.addr(),
        r#"{"topic":"news","event":"breaking","message_id":"42","data":{"headline":"hi","n":[1,2]}}"#,
    )
    .await;
    let raw = String::from_utf8(sub.recv_raw().await).unwrap();
    let (prefix, rest) = raw.split_at(raw.find(']').unwrap() + 1);
    assert!(prefix.starts_with("{\"timestamp\":["), "{raw}");
    assert_eq!(
        rest,
        r#","topic":"news","event":"breaking","message_id":"42","data":{"headline":"hi","n":[1,2]}}"#
    );
}

#[tokio::test]
async fn publish_accepts_nul_termination_and_any_key_order() {
    let server = TestServer::start().await;
    let mut sub = Client::connect(server.addr()).await;
    sub.subscribe("t").await;
    let mut p = Client::connect(server.addr()).await;
    p.send_raw(b"PUBLISH\0{\"data\":\"x\",\"message_id\":\"m1\",\"topic\":\"t\"}\0")
        .await;
    // The server closes a one-shot publisher after handling it.
    p.expect_closed().await;
    let ServerMessage::Delivery(d) = sub.recv().await else {
        panic!("expected delivery")
    };
    assert_eq!(
        (
            d.topic.as_str(),
            d.event.as_str(),
            d.message_id.as_str(),
            d.data.as_str()
        ),
        ("t", "", "m1", "\"x\"")
    );
}

#[tokio::test]
async fn one_timestamp_per_publish_for_every_subscriber() {
    let server = TestServer::start().await;
    let mut a = Client::connect(server.addr()).await;
    let mut b = Client::connect(server.addr()).await;
    a.subscribe("t").await;
    b.subscribe("t").await;
    publish(server.addr(), "t", "1", "1").await;
    let (ra, rb) = (a.recv_raw().await, b.recv_raw().await);
    assert_eq!(ra, rb, "identical bytes, identical timestamp");
}

#[tokio::test]
async fn thousand_messages_arrive_in_order() {
    let server = TestServer::start().await;
    let mut sub = Client::connect(server.addr()).await;
    sub.subscribe("seq").await;
    let reader = tokio::spawn(async move {
        for i in 0..1000 {
            match sub.recv().await {
                ServerMessage::Delivery(d) => assert_eq!(d.message_id, i.to_string()),
                other => panic!("unexpected {other:?}"),
            }
        }
    });
    for i in 0..1000 {
        publish(server.addr(), "seq", &i.to_string(), &i.to_string()).await;
    }
    reader.await.unwrap();
}

#[tokio::test]
async fn unsubscribe_stops_delivery_and_double_subscribe_delivers_once() {
    let server = TestServer::start().await;
    let mut c = Client::connect(server.addr()).await;
    c.subscribe("a").await;
    c.subscribe("a").await; // harmless, ACKed again
    c.subscribe("b").await;
    publish(server.addr(), "a", "a1", "1").await;
    publish(server.addr(), "b", "b1", "1").await;
    let ids: Vec<String> = [c.recv().await, c.recv().await]
        .into_iter()
        .map(|m| match m {
            ServerMessage::Delivery(d) => d.message_id,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(ids, ["a1", "b1"], "one copy of a1, despite two subscribes");
    c.send(ClientMessage::Unsubscribe("a".into())).await;
    c.send(ClientMessage::Unsubscribe("never-subscribed".into()))
        .await;
    // Unsubscribe has no reply; the ACK of a later subscribe proves it was handled.
    c.subscribe("c").await;
    publish(server.addr(), "a", "a2", "1").await;
    publish(server.addr(), "b", "b2", "1").await;
    // a2 was published first; receiving b2 next proves a2 never came.
    let ServerMessage::Delivery(d) = c.recv().await else {
        panic!()
    };
    assert_eq!(d.message_id, "b2");
    assert!(
        server
            .shared()
            .topics
            .topic("a")
            .is_none_or(|t| t.subscribers == 0),
        "topic a has no subscriber left"
    );
}

#[tokio::test]
async fn topics_are_isolated() {
    let server = TestServer::start().await;
    let mut x = Client::connect(server.addr()).await;
    let mut y = Client::connect(server.addr()).await;
    x.subscribe("x").await;
    y.subscribe("y").await;
    publish(server.addr(), "x", "x1", "1").await;
    publish(server.addr(), "y", "y1", "1").await;
    let ServerMessage::Delivery(dx) = x.recv().await else {
        panic!()
    };
    let ServerMessage::Delivery(dy) = y.recv().await else {
        panic!()
    };
    assert_eq!(
        (dx.message_id.as_str(), dy.message_id.as_str()),
        ("x1", "y1")
    );
    // And nothing else is pending for either: a subscribe's ACK comes next.
    x.expect_open().await;
    y.expect_open().await;
}

#[tokio::test]
async fn split_and_coalesced_frames() {
    let server = TestServer::start().await;
    let mut c = Client::connect(server.addr()).await;
    for b in b"<regular-socket/>\0{\"action\":\"subscribe\",\"data\":\"one\"}\0" {
        c.send_raw(&[*b]).await;
    }
    assert_eq!(c.recv().await, ServerMessage::Ack);
    c.send_raw(b"<regular-socket/>\0{\"action\":\"subscribe\",\"data\":\"two\"}\0PING\0{\"action\":\"subscribe\",\"data\":\"three\"}\0").await;
    assert_eq!(c.recv().await, ServerMessage::Ack);
    assert_eq!(c.recv().await, ServerMessage::Ack);
    // A publish split byte by byte, then ended by close.
    let mut p = Client::connect(server.addr()).await;
    for b in b"PUBLISH\0{\"topic\":\"three\",\"data\":3}" {
        p.send_raw(&[*b]).await;
    }
    tokio::io::AsyncWriteExt::shutdown(&mut p.stream)
        .await
        .unwrap();
    p.expect_closed().await;
    let ServerMessage::Delivery(d) = c.recv().await else {
        panic!()
    };
    assert_eq!((d.topic.as_str(), d.data.as_str()), ("three", "3"));
}

#[tokio::test]
async fn ack_is_written_alone() {
    let server = TestServer::start().await;
    let mut c = Client::connect(server.addr()).await;
    c.send_raw(b"{\"action\":\"subscribe\",\"data\":\"t\"}\0")
        .await;
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(
        janus_tests::TIMEOUT,
        tokio::io::AsyncReadExt::read(&mut c.stream, &mut buf),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(
        &buf[..n],
        b"ACK\x01",
        "the ACK arrives as a read of its own"
    );
}

#[tokio::test]
async fn ping_and_pong_from_clients_are_ignored() {
    let server = TestServer::start().await;
    let mut c = Client::connect(server.addr()).await;
    c.send_raw(b"PING\0PONG\0\0").await;
    c.expect_open().await;
}

#[tokio::test]
async fn persistent_publish_is_acked_and_keeps_the_connection() {
    let server = TestServer::start().await;
    let mut sub = Client::connect(server.addr()).await;
    sub.subscribe("p").await;
    let mut p = Client::connect(server.addr()).await;
    for i in 0..3 {
        p.publish_acked("p", &i.to_string(), "null").await;
    }
    for i in 0..3 {
        let ServerMessage::Delivery(d) = sub.recv().await else {
            panic!()
        };
        assert_eq!(d.message_id, i.to_string());
    }
}

// --- P7: every error code, with the connection kept open or closed as specified.

#[tokio::test]
async fn errors_that_keep_the_connection_open() {
    let server = TestServer::start().await;
    let mut c = Client::connect(server.addr()).await;
    for (frame, code) in [
        (&b"this is not json\0"[..], "bad_json"),
        (b"{\"action\":\"subscribe\"\0", "bad_json"),
        (b"{\"action\":\"dance\",\"data\":\"x\"}\0", "unknown_action"),
        (b"{\"action\":\"subscribe\",\"data\":\"\"}\0", "bad_topic"),
        (
            b"{\"action\":\"subscribe\",\"data\":\"a\\u0001b\"}\0",
            "bad_topic",
        ),
        (
            b"{\"action\":\"resume\",\"data\":\"00000000000000000000000000000000\"}\0",
            "unknown_session",
        ),
    ] {
        c.send_raw(frame).await;
        let reason = c.expect_error(code).await;
        assert!(!reason.is_empty());
        c.expect_open().await;
    }
    assert_eq!(
        server
            .shared()
            .stats
            .errors_sent(janus_core::ErrorCode::BadJson),
        2
    );
}

#[tokio::test]
async fn bad_frame_closes() {
    let server = TestServer::start().await;
    let mut c = Client::connect(server.addr()).await;
    let mut bystander = Client::connect(server.addr()).await;
    c.send_raw(b"\xff\xfe\xfd\0").await;
    c.expect_error("bad_frame").await;
    c.expect_closed().await;
    bystander.expect_open().await;
}

#[tokio::test]
async fn frame_too_large_closes() {
    let config = Config {
        max_frame: 1024,
        ..test_config()
    };
    let server = TestServer::start_with(config).await;
    let mut c = Client::connect(server.addr()).await;
    let mut bystander = Client::connect(server.addr()).await;
    bystander.subscribe("b").await;
    c.send_raw(&vec![b'x'; 5000]).await;
    c.expect_error("frame_too_large").await;
    c.expect_closed().await;
    bystander.expect_open().await;
}

#[tokio::test]
async fn not_allowed_publish_closes() {
    // Only 10.0.0.0/8 may publish: loopback may not.
    let config = Config {
        allow_publish_from: vec!["10.0.0.0/8".parse().unwrap()],
        ..test_config()
    };
    let server = TestServer::start_with(config).await;
    let mut sub = Client::connect(server.addr()).await;
    sub.subscribe("t").await;
    let mut p = Client::connect(server.addr()).await;
    p.send_raw(b"PUBLISH\0{\"topic\":\"t\",\"data\":1}\0").await;
    p.expect_error("not_allowed").await;
    p.expect_closed().await;
    // The persistent form is refused the same way.
    let mut p = Client::connect(server.addr()).await;
    p.send_raw(b"{\"action\":\"publish\",\"data\":{\"topic\":\"t\"}}\0")
        .await;
    p.expect_error("not_allowed").await;
    p.expect_closed().await;
    assert_eq!(
        janus_server::stats::Stats::get(&server.shared().stats.messages_published),
        0
    );
    sub.expect_open().await;
}

#[tokio::test]
async fn publish_key_lets_a_publish_through() {
    let config = Config {
        allow_publish_from: vec![],
        publish_key: Some("s3cret".into()),
        ..test_config()
    };
    let server = TestServer::start_with(config).await;
    let mut sub = Client::connect(server.addr()).await;
    sub.subscribe("t").await;
    let mut p = Client::connect(server.addr()).await;
    p.send_raw(b"PUBLISH\0{\"topic\":\"t\",\"data\":1,\"key\":\"wrong\"}\0")
        .await;
    p.expect_error("not_allowed").await;
    publish_legacy(
        server.addr(),
        r#"{"topic":"t","message_id":"k","data":1,"key":"s3cret"}"#,
    )
    .await;
    let raw = String::from_utf8(sub.recv_raw().await).unwrap();
    assert!(
        raw.contains("\"message_id\":\"k\"") && !raw.contains("s3cret"),
        "{raw}"
    );
}

#[tokio::test]
async fn too_many_subscriptions_closes() {
    let config = Config {
        max_subscriptions: 2,
        ..test_config()
    };
    let server = TestServer::start_with(config).await;
    let mut c = Client::connect(server.addr()).await;
    c.subscribe("a").await;
    c.subscribe("b").await;
    c.subscribe("a").await; // already held: not a new subscription
    c.send(ClientMessage::Subscribe("c".into())).await;
    c.expect_error("too_many_subscriptions").await;
    c.expect_closed().await;
    wait_until("subscriptions released", || {
        server.shared().topics.subscription_count() == 0
    })
    .await;
}

#[tokio::test]
async fn slow_consumer_is_cut_and_others_are_not() {
    let config = Config {
        queue_limit: 8,
        ..test_config()
    };
    let server = TestServer::start_with(config).await;
    let mut slow = Client::connect(server.addr()).await;
    slow.subscribe("t").await;
    let mut fast = Client::connect(server.addr()).await;
    fast.subscribe("t").await;
    // Large messages fill the slow client's socket buffers, then its queue.
    let data = format!("\"{}\"", "x".repeat(60_000));
    let mut i = 0;
    while server
        .shared()
        .stats
        .slow_consumers
        .load(std::sync::atomic::Ordering::Relaxed)
        == 0
    {
        assert!(i < 2000, "the slow consumer was never cut");
        publish(server.addr(), "t", &i.to_string(), &data).await;
        let ServerMessage::Delivery(d) = fast.recv().await else {
            panic!()
        };
        assert_eq!(d.message_id, i.to_string());
        i += 1;
    }
    // The slow client finds, after what fit in its buffers, the error and the close.
    loop {
        match slow.recv().await {
            ServerMessage::Delivery(_) => continue,
            ServerMessage::Error { code, .. } => {
                assert_eq!(code, "slow_consumer");
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    slow.expect_closed().await;
    fast.expect_open().await;
}

#[tokio::test]
async fn kicked_closes() {
    let server = TestServer::start().await;
    let mut c = Client::connect(server.addr()).await;
    let token = c.token.parse().unwrap();
    let session = server
        .shared()
        .sessions
        .get(&token)
        .expect("registered session");
    server.shared().close_session(
        &session,
        &janus_server::session::CloseReason::Kicked("operator said so".into()),
    );
    assert_eq!(c.expect_error("kicked").await, "operator said so");
    c.expect_closed().await;
    wait_until("session gone", || {
        server.shared().sessions.get(&token).is_none()
    })
    .await;
}

#[tokio::test]
async fn server_shutdown_is_announced_and_closes() {
    let server = TestServer::start().await;
    let mut c = Client::connect(server.addr()).await;
    let addr = server.addr();
    server.stop().await;
    c.expect_error("server_shutdown").await;
    c.expect_closed().await;
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no longer accepting"
    );
}
