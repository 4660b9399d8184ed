//! WebSocket clients (docs/protocol.md X2) over real sockets: the same
//! protocol as TCP, one frame per text message, on the same sessions,
//! queues and writer threads.

use std::net::SocketAddr;
use std::time::Duration;

use janus_core::{Publish, ServerMessage};
use janus_server::session::CloseReason;
use janus_server::stats::Stats;
use janus_server::Config;
use janus_tests::ws::{Message, WsClient};
use janus_tests::{publish_legacy, test_config, wait_until, Client, TestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn ws_config() -> Config {
    Config {
        ws_listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        ..test_config()
    }
}

async fn start(config: Config) -> (TestServer, SocketAddr) {
    let server = TestServer::start_with(config).await;
    let ws = server.shared().ws_addr().expect("WebSocket listener on");
    (server, ws)
}

fn x3_publish(topic: &str, id: &str, data: &str) -> String {
    let publish = Publish::new(topic, "e", id, data).expect("valid publish");
    format!("{{\"action\":\"publish\",\"data\":{}}}", publish.to_json())
}

#[tokio::test]
async fn ws_subscriber_gets_tcp_and_ws_publishes_in_order() {
    let (server, ws) = start(ws_config()).await;
    let mut sub = WsClient::connect(ws).await;
    assert_eq!(sub.token.len(), 32, "the hello carries a token");
    sub.subscribe("news").await;
    let mut tcp_sub = Client::connect(server.addr()).await;
    tcp_sub.subscribe("news").await;

    // A 2009 one-shot publish over TCP: the WebSocket subscriber gets the
    // P6 delivery, byte for byte, without the 0x01.
    publish_legacy(
        server.addr(),
        r#"{"topic":"news","event":"e","message_id":"1","data":{"n":1}}"#,
    )
    .await;
    let tcp_bytes = tcp_sub.recv_raw().await;
    let text = sub.recv_text().await;
    assert_eq!(text.as_bytes(), &tcp_bytes[..]);
    assert!(text.ends_with(r#""topic":"news","event":"e","message_id":"1","data":{"n":1}}"#));

    // Persistent publishes (X3) from a WebSocket publisher, each ACKed.
    let mut publisher = WsClient::connect(ws).await;
    for id in 2..=20 {
        publisher
            .send(&x3_publish("news", &id.to_string(), "\"x\""))
            .await;
        assert_eq!(publisher.recv().await, ServerMessage::Ack);
    }
    for id in 2..=20 {
        match sub.recv().await {
            ServerMessage::Delivery(d) => assert_eq!(d.message_id, id.to_string()),
            other => panic!("expected delivery {id}, got {other:?}"),
        }
        match tcp_sub.recv().await {
            ServerMessage::Delivery(d) => assert_eq!(d.message_id, id.to_string()),
            other => panic!("expected delivery {id} over TCP, got {other:?}"),
        }
    }

    // Offsets (X1) work the same way.
    sub.send(r#"{"action":"options","data":{"offsets":true}}"#)
        .await;
    assert_eq!(sub.recv().await, ServerMessage::Ack);
    publisher.send(&x3_publish("news", "21", "1")).await;
    assert_eq!(publisher.recv().await, ServerMessage::Ack);
    let text = sub.recv_text().await;
    assert!(
        text.ends_with(r#""message_id":"21","data":1,"offset":21}"#),
        "{text}"
    );

    // Unsubscribe: nothing more arrives; a mistake keeps the connection open.
    sub.send(r#"{"action":"unsubscribe","data":"news"}"#).await;
    sub.send(r#"{"action":"dance"}"#).await;
    match sub.recv().await {
        ServerMessage::Error { code, .. } => assert_eq!(code, "unknown_action"),
        other => panic!("expected unknown_action, got {other:?}"),
    }
    publisher.send(&x3_publish("news", "22", "1")).await;
    assert_eq!(publisher.recv().await, ServerMessage::Ack);
    sub.send("PING").await;
    sub.ws.send_ping_check().await;
    sub.close().await;
    publisher.close().await;
    server.stop().await;
}

trait PingCheck {
    async fn send_ping_check(&mut self);
}

impl PingCheck for tokio_tungstenite::WebSocketStream<TcpStream> {
    /// Sends a WebSocket ping; the next message must be its pong (so nothing
    /// else, such as a delivery after an unsubscribe, was queued before it).
    async fn send_ping_check(&mut self) {
        use futures_util::{SinkExt, StreamExt};
        self.send(Message::Ping(b"are you there".to_vec().into()))
            .await
            .expect("send ping");
        let next = tokio::time::timeout(janus_tests::TIMEOUT, self.next()).await;
        match next {
            Ok(Some(Ok(Message::Pong(payload)))) => assert_eq!(&payload[..], b"are you there"),
            other => panic!("expected the pong, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn heartbeats_and_the_close_handshake() {
    let (server, ws) = start(Config {
        heartbeat: Duration::from_millis(200),
        ..ws_config()
    })
    .await;
    let mut client = WsClient::connect(ws).await;
    // Opting in to offsets starts heartbeats at once (P4): PING as a text
    // message, and a WebSocket ping that the client library answers.
    client
        .send(r#"{"action":"options","data":{"offsets":true}}"#)
        .await;
    assert_eq!(client.recv().await, ServerMessage::Ack);
    let (mut text_ping, mut ws_ping) = (false, false);
    while !(text_ping && ws_ping) {
        match client.next().await {
            Some(Message::Text(t)) if t.as_str() == "PING" => text_ping = true,
            Some(Message::Ping(_)) => ws_ping = true,
            other => panic!("expected heartbeats, got {other:?}"),
        }
    }
    client.send("PONG").await;
    // The client closes: the server answers with a close frame and ends.
    let before = Stats::get(&server.shared().stats.connections);
    client.close().await;
    wait_until("the connection ends", || {
        Stats::get(&server.shared().stats.connections) < before
    })
    .await;
    assert!(server.shared().sessions.is_empty());
    server.stop().await;
}

#[tokio::test]
async fn oversize_binary_and_bad_frames_close_only_that_client() {
    let (server, ws) = start(Config {
        max_frame: 1024,
        ..ws_config()
    })
    .await;
    let mut bystander = WsClient::connect(ws).await;
    bystander.subscribe("t").await;

    let mut big = WsClient::connect(ws).await;
    big.send(&format!("\"{}\"", "x".repeat(2000))).await;
    let reason = big.expect_error_and_close("frame_too_large", 1009).await;
    assert!(reason.contains("1024"), "{reason}");

    let mut binary = WsClient::connect(ws).await;
    futures_util::SinkExt::send(&mut binary.ws, Message::Binary(vec![1, 2, 3].into()))
        .await
        .expect("send");
    binary.expect_error_and_close("bad_frame", 1002).await;

    // An unmasked frame straight on the socket breaks RFC 6455.
    let mut raw = raw_upgrade(ws).await;
    raw.write_all(&janus_core::ws::text_frame(b"{}"))
        .await
        .expect("write");
    let rest = read_to_end(&mut raw).await;
    assert!(String::from_utf8_lossy(&rest).contains("bad_frame"));
    assert!(rest.ends_with(&[0x03, 0xea, b'b', b'a', b'd', b'_', b'f', b'r', b'a', b'm', b'e']));

    // Bad JSON keeps the connection open (P7), as over TCP.
    bystander.send("{not json").await;
    match bystander.recv().await {
        ServerMessage::Error { code, .. } => assert_eq!(code, "bad_json"),
        other => panic!("expected bad_json, got {other:?}"),
    }
    publish_legacy(
        server.addr(),
        r#"{"topic":"t","event":"e","message_id":"still","data":1}"#,
    )
    .await;
    match bystander.recv().await {
        ServerMessage::Delivery(d) => assert_eq!(d.message_id, "still"),
        other => panic!("expected the delivery, got {other:?}"),
    }
    server.stop().await;
}

/// Does the handshake by hand and reads the hello; returns the raw socket.
async fn raw_upgrade(ws: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(ws).await.expect("connect");
    let key = "dGhlIHNhbXBsZSBub25jZQ==";
    s.write_all(janus_core::ws::client_request("localhost", key).as_bytes())
        .await
        .expect("write");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        let n = s.read(&mut chunk).await.expect("read");
        assert!(n > 0, "closed during the handshake");
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = janus_core::ws::client_response(&buf, key).expect("101") {
            // The hello follows the answer: a text frame.
            if buf.len() > end + 2 && buf.len() >= end + 2 + usize::from(buf[end + 1]) {
                return s;
            }
        }
    }
}

async fn read_to_end(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    tokio::time::timeout(janus_tests::TIMEOUT, s.read_to_end(&mut out))
        .await
        .expect("the server closes")
        .expect("read");
    out
}

/// Sends `request` on a fresh connection and returns the HTTP answer.
async fn http_answer(ws: SocketAddr, request: &str) -> String {
    let mut s = TcpStream::connect(ws).await.expect("connect");
    s.write_all(request.as_bytes()).await.expect("write");
    String::from_utf8_lossy(&read_to_end(&mut s).await).into_owned()
}

#[tokio::test]
async fn handshakes_that_are_not_upgrades_get_http_errors() {
    let (server, ws) = start(Config {
        ws_allowed_origins: vec!["https://app.example".into()],
        ..ws_config()
    })
    .await;
    let plain = http_answer(ws, "GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(plain.starts_with("HTTP/1.1 426 "), "{plain}");
    let request = janus_core::ws::client_request("x", "dGhlIHNhbXBsZSBub25jZQ==");
    let path = http_answer(ws, &request.replace("GET / ", "GET /chat ")).await;
    assert!(path.starts_with("HTTP/1.1 404 "), "{path}");
    let evil = request.replace("\r\n\r\n", "\r\nOrigin: https://evil.example\r\n\r\n");
    let origin = http_answer(ws, &evil).await;
    assert!(origin.starts_with("HTTP/1.1 403 "), "{origin}");
    let garbage = http_answer(ws, "\x16\x03\x01 not http\r\n\r\n").await;
    assert!(garbage.starts_with("HTTP/1.1 400 "), "{garbage}");
    let long = format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(64 * 1024));
    let long = http_answer(ws, &long).await;
    assert!(long.starts_with("HTTP/1.1 431 "), "{long}");
    // The allowed origin, and a client without one, get in.
    let good = request.replace("\r\n\r\n", "\r\nOrigin: https://app.example\r\n\r\n");
    let mut s = TcpStream::connect(ws).await.expect("connect");
    s.write_all(good.as_bytes()).await.expect("write");
    let mut answer = vec![0u8; 12];
    s.read_exact(&mut answer).await.expect("read");
    assert_eq!(&answer, b"HTTP/1.1 101");
    drop(s);
    WsClient::connect(ws).await.close().await;
    wait_until("refused handshakes leave nothing behind", || {
        server.shared().sessions.is_empty()
            && Stats::get(&server.shared().stats.connections) == 0
            && server.shared().client_addresses() == 0
    })
    .await;
    server.stop().await;
}

#[tokio::test]
async fn slow_ws_consumer_is_cut_and_kick_reaches_ws_clients() {
    let (server, ws) = start(Config {
        queue_limit: 8,
        ..ws_config()
    })
    .await;
    // A subscriber that stops reading, with a small receive buffer.
    let sock =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    sock.set_recv_buffer_size(4096).expect("rcvbuf");
    sock.connect(&ws.into()).expect("connect");
    sock.set_nonblocking(true).expect("nonblocking");
    let stream = TcpStream::from_std(sock.into()).expect("tokio stream");
    let mut slow = WsClient::over(stream, ws).await;
    slow.subscribe("flood").await;
    let mut fine = WsClient::connect(ws).await;
    fine.subscribe("flood").await;

    let mut publisher = Client::connect(server.addr()).await;
    let data = format!("\"{}\"", "d".repeat(8000));
    let shared = server.shared().clone();
    let mut sent = 0;
    while Stats::get(&shared.stats.slow_consumers) == 0 {
        sent += 1;
        publisher
            .publish_acked("flood", &sent.to_string(), &data)
            .await;
        // The other subscriber keeps up and is never slowed down.
        match fine.recv().await {
            ServerMessage::Delivery(d) => assert_eq!(d.message_id, sent.to_string()),
            other => panic!("expected delivery {sent}, got {other:?}"),
        }
        assert!(sent < 2000, "the slow consumer was never cut");
    }
    // The slow client reads whole deliveries, then slow_consumer and a close.
    let mut got = 0;
    loop {
        match slow.recv().await {
            ServerMessage::Delivery(d) => {
                got += 1;
                assert_eq!(
                    d.message_id,
                    got.to_string(),
                    "in order, no gap before the cut"
                );
            }
            ServerMessage::Error { code, .. } => {
                assert_eq!(code, "slow_consumer");
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    slow.expect_close(1008).await;

    // An operator's kick (the admin API's path) reaches a WebSocket client.
    let token = fine.token.parse().expect("token");
    let session = shared.sessions.get(&token).expect("session registered");
    assert!(shared.close_session(&session, &CloseReason::Kicked("bye".into())));
    let reason = fine.expect_error_and_close("kicked", 1008).await;
    assert_eq!(reason, "bye");
    server.stop().await;
}

/// Drops a connection the way a lost network does: a reset, no close handshake.
fn lose(client: WsClient) {
    let sock = socket2::SockRef::from(client.ws.get_ref());
    sock.set_linger(Some(Duration::ZERO)).expect("linger");
}

#[tokio::test]
async fn token_resume_over_websocket_and_shutdown_says_going_away() {
    let (server, ws) = start(ws_config()).await;
    let mut first = WsClient::connect(ws).await;
    first.subscribe("r").await;
    let token = first.token.clone();
    lose(first);
    let shared = server.shared().clone();
    wait_until("the session waits for a resume", || {
        Stats::get(&shared.stats.sessions_detached) == 1
    })
    .await;
    publish_legacy(
        server.addr(),
        r#"{"topic":"r","event":"e","message_id":"while-away","data":1}"#,
    )
    .await;
    let mut second = WsClient::connect(ws).await;
    second
        .send(&format!("{{\"action\":\"resume\",\"data\":\"{token}\"}}"))
        .await;
    match second.recv().await {
        ServerMessage::Resumed {
            recovered, missed, ..
        } => assert!(recovered && missed == 1),
        other => panic!("expected resumed, got {other:?}"),
    }
    match second.recv().await {
        ServerMessage::Delivery(d) => assert_eq!(d.message_id, "while-away"),
        other => panic!("expected the missed delivery, got {other:?}"),
    }
    // A graceful shutdown: server_shutdown, then close code 1001.
    shared.drain();
    second.expect_error_and_close("server_shutdown", 1001).await;
    server.stop().await;
}

#[tokio::test]
async fn publishing_over_websocket_is_authorised_as_over_tcp() {
    let (server, ws) = start(Config {
        allow_publish_from: Vec::new(),
        publish_key: Some("k3y".into()),
        ..ws_config()
    })
    .await;
    let mut sub = WsClient::connect(ws).await;
    sub.subscribe("auth").await;
    // With the key (X4) it is published; the key never reaches subscribers.
    let mut keyed = WsClient::connect(ws).await;
    keyed
        .send(r#"{"action":"publish","data":{"topic":"auth","message_id":"ok","data":1,"key":"k3y"}}"#)
        .await;
    assert_eq!(keyed.recv().await, ServerMessage::Ack);
    let text = sub.recv_text().await;
    assert!(
        text.contains(r#""message_id":"ok""#) && !text.contains("k3y"),
        "{text}"
    );
    // Without it, from an address that may not publish: not_allowed, close 1008.
    let mut refused = WsClient::connect(ws).await;
    refused.send(&x3_publish("auth", "no", "1")).await;
    refused.expect_error_and_close("not_allowed", 1008).await;
    server.stop().await;
}

#[tokio::test]
async fn positional_resume_over_websocket_replays_what_was_missed() {
    let (server, ws) = start(ws_config()).await;
    let mut first = WsClient::connect(ws).await;
    first
        .send(r#"{"action":"options","data":{"offsets":true}}"#)
        .await;
    assert_eq!(first.recv().await, ServerMessage::Ack);
    first.send(r#"{"action":"subscribe","data":"pos"}"#).await;
    let (epoch, offset) = match first.recv().await {
        ServerMessage::Subscribed { epoch, offset, .. } => (epoch, offset),
        other => panic!("expected subscribed, got {other:?}"),
    };
    let token = first.token.clone();
    lose(first);
    let mut publisher = Client::connect(server.addr()).await;
    for id in ["m1", "m2"] {
        publisher.publish_acked("pos", id, "0").await;
    }
    let mut second = WsClient::connect(ws).await;
    second
        .send(&format!(
            r#"{{"action":"resume","data":{{"token":"{token}","topics":{{"pos":{{"epoch":"{epoch}","offset":{offset}}}}}}}}}"#
        ))
        .await;
    match second.recv().await {
        ServerMessage::Resumed {
            recovered, missed, ..
        } => assert!(recovered && missed == 2),
        other => panic!("expected resumed, got {other:?}"),
    }
    for id in ["m1", "m2"] {
        let text = second.recv_text().await;
        assert!(text.contains(&format!(r#""message_id":"{id}""#)), "{text}");
    }
    server.stop().await;
}

#[tokio::test]
async fn a_handshake_that_takes_too_long_gets_408_and_frees_its_slot() {
    let (server, ws) = start(Config {
        ws_handshake_timeout: Duration::from_millis(300),
        ..ws_config()
    })
    .await;
    // Half a request, then nothing (a slowloris).
    let answer = http_answer(ws, "GET / HTTP/1.1\r\nHost: x\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
    assert!(answer.contains("longer than 300ms"), "{answer}");
    wait_until("the slot is free again", || {
        server.shared().client_addresses() == 0
    })
    .await;
    WsClient::connect(ws).await.close().await;
    server.stop().await;
}

#[tokio::test]
async fn a_full_server_refuses_a_websocket_with_503() {
    let (server, ws) = start(Config {
        max_connections: Some(1),
        ..ws_config()
    })
    .await;
    let mut first = WsClient::connect(ws).await;
    first.subscribe("t").await;
    let request = janus_core::ws::client_request("x", "dGhlIHNhbXBsZSBub25jZQ==");
    let answer = http_answer(ws, &request).await;
    assert!(answer.starts_with("HTTP/1.1 503 "), "{answer}");
    assert!(answer.contains("connection limit (1)"), "{answer}");
    // The client already in is not affected.
    first.ws.send_ping_check().await;
    server.stop().await;
}

#[tokio::test]
async fn the_admin_api_sends_to_and_lists_websocket_sessions() {
    let (server, ws) = start(Config {
        admin_listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        ..ws_config()
    })
    .await;
    let admin = server.shared().admin_addr().expect("admin API on");
    let mut client = WsClient::connect(ws).await;
    let path = format!("/sessions/{}", client.token);
    let one = janus_tests::http(admin, "GET", &path, "").await;
    assert_eq!(one.status, 200, "{}", one.body);
    assert!(one.body.contains(r#""transport":"ws""#), "{}", one.body);
    let sent = janus_tests::http(
        admin,
        "POST",
        &format!("{path}/send"),
        r#"{"topic":"direct","message_id":"u1","data":"hi"}"#,
    )
    .await;
    assert_eq!(sent.status, 200, "{}", sent.body);
    let text = client.recv_text().await;
    assert!(
        text.ends_with(r#""topic":"direct","event":"","message_id":"u1","data":"hi"}"#),
        "{text}"
    );
    let status = janus_tests::http(admin, "GET", "/status", "").await;
    assert!(
        status.body.contains(&format!(r#""websocket":"{ws}""#)),
        "{}",
        status.body
    );
    server.stop().await;
}
