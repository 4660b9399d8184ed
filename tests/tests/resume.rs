//! Nothing missed across a reconnect (protocol X1): offsets, topic
//! history, exact resume that is never partial, and the token-only form.

use std::time::Duration;

use janus_core::{ClientMessage, Resume, ServerMessage, TopicPosition};
use janus_server::stats::Stats;
use janus_server::Config;
use janus_tests::{test_config, wait_until, Client, TestServer};

/// Opts a client in to offsets.
async fn opt_in(c: &mut Client) {
    c.send(ClientMessage::Options {
        offsets: Some(true),
    })
    .await;
    assert_eq!(c.recv().await, ServerMessage::Ack);
}

/// Subscribes an offset client; returns the topic's epoch and latest offset.
async fn subscribe_at(c: &mut Client, topic: &str) -> (String, u64) {
    c.send(ClientMessage::Subscribe(topic.to_owned())).await;
    match c.recv().await {
        ServerMessage::Subscribed {
            topic: t,
            epoch,
            offset,
            ..
        } => {
            assert_eq!(t, topic);
            (epoch, offset)
        }
        other => panic!("expected subscribed, got {other:?}"),
    }
}

/// A persistent publisher.
async fn publisher(server: &TestServer) -> Client {
    Client::connect(server.addr()).await
}

async fn publish(p: &mut Client, topic: &str, id: u64) {
    p.publish_acked(topic, &id.to_string(), &id.to_string())
        .await;
}

/// The next delivery's message id and offset.
async fn next(c: &mut Client) -> (u64, Option<u64>) {
    match c.recv().await {
        ServerMessage::Delivery(d) => (d.message_id.parse().expect("id"), d.offset),
        other => panic!("expected a delivery, got {other:?}"),
    }
}

async fn resume(
    addr: std::net::SocketAddr,
    token: &str,
    topics: Vec<TopicPosition>,
) -> (Client, bool, u64) {
    let mut c = Client::connect(addr).await;
    c.send(ClientMessage::Resume(Resume::Positions {
        token: token.to_owned(),
        topics,
    }))
    .await;
    match c.recv().await {
        ServerMessage::Resumed {
            token: t,
            recovered,
            missed,
            ..
        } => {
            assert_eq!(t, token);
            (c, recovered, missed)
        }
        other => panic!("expected resumed, got {other:?}"),
    }
}

fn at(topic: &str, epoch: &str, offset: u64) -> TopicPosition {
    TopicPosition {
        topic: topic.into(),
        epoch: epoch.into(),
        offset,
    }
}

#[tokio::test]
async fn offsets_are_opt_in_and_old_clients_see_the_same_bytes() {
    let server = TestServer::start().await;
    let mut old = Client::connect(server.addr()).await;
    old.subscribe("t").await;
    let mut new = Client::connect(server.addr()).await;
    opt_in(&mut new).await;
    assert_eq!(subscribe_at(&mut new, "t").await.1, 0);
    let mut p = publisher(&server).await;
    for id in 1..=3 {
        publish(&mut p, "t", id).await;
    }
    for id in 1..=3 {
        let raw = old.recv_raw().await;
        let text = String::from_utf8(raw).expect("utf-8");
        assert!(text.ends_with(&format!("\"data\":{id}}}")), "{text}");
        assert!(!text.contains("offset"), "{text}");
        assert_eq!(next(&mut new).await, (id, Some(id)));
    }
    // A late subscriber learns where the stream is.
    let mut late = Client::connect(server.addr()).await;
    opt_in(&mut late).await;
    let (_, latest) = subscribe_at(&mut late, "t").await;
    assert_eq!(latest, 3);
}

#[tokio::test]
async fn resume_with_nothing_missed_goes_on_live() {
    let server = TestServer::start().await;
    let mut c = Client::connect(server.addr()).await;
    opt_in(&mut c).await;
    let (epoch, offset) = subscribe_at(&mut c, "t").await;
    let token = c.token.clone();
    c.lose();
    let (mut c, recovered, missed) =
        resume(server.addr(), &token, vec![at("t", &epoch, offset)]).await;
    assert!(recovered);
    assert_eq!(missed, 0);
    let mut p = publisher(&server).await;
    publish(&mut p, "t", 1).await;
    assert_eq!(next(&mut c).await, (1, Some(1)));
}

/// The topics a resume names are the session's subscriptions from then on:
/// one the session held that the resume leaves out is not followed (nothing
/// could say what the client missed on it).
#[tokio::test]
async fn a_resume_follows_exactly_the_topics_it_names() {
    let server = TestServer::start().await;
    let mut c = Client::connect(server.addr()).await;
    opt_in(&mut c).await;
    let (epoch, offset) = subscribe_at(&mut c, "kept").await;
    subscribe_at(&mut c, "left").await;
    let token = c.token.clone();
    c.lose();
    let (mut c, recovered, missed) =
        resume(server.addr(), &token, vec![at("kept", &epoch, offset)]).await;
    assert!(recovered);
    assert_eq!(missed, 0);
    let mut p = publisher(&server).await;
    publish(&mut p, "left", 1).await;
    publish(&mut p, "kept", 2).await;
    assert_eq!(next(&mut c).await, (2, Some(1)));
    let session = server.shared().sessions.get(&token.parse().expect("token"));
    let session = session.expect("the resumed session");
    let topics: Vec<String> = session.subscriptions().iter().map(str::to_owned).collect();
    assert_eq!(topics, ["kept"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_replays_500_missed_while_publishing_goes_on() {
    let server = TestServer::start().await;
    let mut c = Client::connect(server.addr()).await;
    opt_in(&mut c).await;
    let (epoch, _) = subscribe_at(&mut c, "t").await;
    let token = c.token.clone();
    let mut p = publisher(&server).await;
    for id in 1..=10 {
        publish(&mut p, "t", id).await;
    }
    let mut last = 0;
    for _ in 1..=10 {
        last = next(&mut c).await.1.expect("offset");
    }
    c.lose();
    for id in 11..=510 {
        publish(&mut p, "t", id).await;
    }
    // Publishing goes on while the client resumes.
    let publishing = tokio::spawn(async move {
        for id in 511..=1000 {
            publish(&mut p, "t", id).await;
        }
    });
    let (mut c, recovered, missed) =
        resume(server.addr(), &token, vec![at("t", &epoch, last)]).await;
    assert!(recovered);
    assert!(missed >= 500, "{missed}");
    // Every message after offset 10 exactly once, in order: replay, then live.
    for expected in 11..=1000 {
        assert_eq!(next(&mut c).await, (expected, Some(expected)));
    }
    publishing.await.expect("publisher");
    c.expect_nothing_buffered();
}

#[tokio::test]
async fn resume_past_the_history_is_not_recovered_and_replays_nothing() {
    let server = TestServer::start_with(Config {
        history_size: 5,
        ..test_config()
    })
    .await;
    let mut c = Client::connect(server.addr()).await;
    opt_in(&mut c).await;
    let (epoch, _) = subscribe_at(&mut c, "a").await;
    assert_eq!(subscribe_at(&mut c, "b").await.1, 0);
    let token = c.token.clone();
    c.lose();
    let mut p = publisher(&server).await;
    publish(&mut p, "a", 1).await;
    for id in 1..=8 {
        publish(&mut p, "b", id).await;
    }
    // "a" could be recovered, "b" could not: recovery is all or nothing.
    let (mut c, recovered, missed) = resume(
        server.addr(),
        &token,
        vec![at("a", &epoch, 0), at("b", &epoch, 0)],
    )
    .await;
    assert!(!recovered);
    assert_eq!(missed, 0);
    publish(&mut p, "b", 9).await;
    assert_eq!(
        next(&mut c).await,
        (9, Some(9)),
        "live from now on, no replay"
    );
}

#[tokio::test]
async fn a_restarted_server_has_new_epochs() {
    let first = TestServer::start().await;
    let mut c = Client::connect(first.addr()).await;
    opt_in(&mut c).await;
    let (epoch, offset) = subscribe_at(&mut c, "t").await;
    let token = c.token.clone();
    first.stop().await;
    let second = TestServer::start().await;
    let (_c, recovered, missed) =
        resume(second.addr(), &token, vec![at("t", &epoch, offset)]).await;
    assert!(
        !recovered,
        "an epoch from another server's life is never trusted"
    );
    assert_eq!(missed, 0);
}

#[tokio::test]
async fn token_resume_within_the_ttl_delivers_what_was_queued() {
    let server = TestServer::start().await;
    let mut c = Client::connect(server.addr()).await;
    c.subscribe("t").await;
    let token = c.token.clone();
    c.lose();
    let shared = server.shared().clone();
    let parsed = token.parse().expect("token");
    wait_until("the session to be detached", || {
        shared
            .sessions
            .get(&parsed)
            .is_some_and(|s| s.detached_since().is_some())
    })
    .await;
    janus_tests::publish(server.addr(), "t", "7", "\"queued\"").await;
    let mut c = Client::connect(server.addr()).await;
    c.send(ClientMessage::Resume(Resume::Token(token.clone())))
        .await;
    match c.recv().await {
        ServerMessage::Resumed {
            recovered, missed, ..
        } => assert_eq!((recovered, missed), (true, 1)),
        other => panic!("expected resumed, got {other:?}"),
    }
    match c.recv().await {
        ServerMessage::Delivery(d) => assert_eq!(d.data, "\"queued\""),
        other => panic!("expected the queued delivery, got {other:?}"),
    }
    // Still subscribed: live deliveries follow.
    janus_tests::publish(server.addr(), "t", "8", "\"live\"").await;
    assert!(matches!(c.recv().await, ServerMessage::Delivery(d) if d.data == "\"live\""));
}

#[tokio::test]
async fn token_resume_after_the_ttl_is_unknown_and_the_session_is_freed() {
    let server = TestServer::start_with(Config {
        session_ttl: Duration::from_millis(200),
        ..test_config()
    })
    .await;
    let mut c = Client::connect(server.addr()).await;
    c.subscribe("t").await;
    let token = c.token.clone();
    c.lose();
    let shared = server.shared().clone();
    let parsed = token.parse().expect("token");
    wait_until("the detached session to expire", || {
        shared.sessions.get(&parsed).is_none()
            && shared.topics.topic("t").is_none_or(|t| t.subscribers == 0)
    })
    .await;
    let mut c = Client::connect(server.addr()).await;
    c.send(ClientMessage::Resume(Resume::Token(token))).await;
    c.expect_error("unknown_session").await;
    c.expect_open().await;
}

#[tokio::test]
async fn a_detached_session_that_is_kicked_is_freed() {
    let server = TestServer::start().await;
    let mut c = Client::connect(server.addr()).await;
    c.subscribe("t").await;
    let token = c.token.parse().expect("token");
    c.lose();
    let shared = server.shared().clone();
    wait_until("the session to be detached", || {
        shared
            .sessions
            .get(&token)
            .is_some_and(|s| s.detached_since().is_some())
    })
    .await;
    let session = shared.sessions.get(&token).expect("session");
    assert!(shared.close_session(
        &session,
        &janus_server::session::CloseReason::Kicked("bye".into())
    ));
    drop(session);
    wait_until("the kicked detached session to be freed", || {
        shared.sessions.get(&token).is_none()
    })
    .await;
}

#[tokio::test]
async fn a_resumed_topic_the_topic_limit_refuses_is_not_recovered_and_says_why() {
    let server = TestServer::start_with(Config {
        max_topics: 1,
        ..test_config()
    })
    .await;
    let mut c = Client::connect(server.addr()).await;
    opt_in(&mut c).await;
    let (epoch, offset) = subscribe_at(&mut c, "a").await;
    let token = c.token.clone();
    // The topic, never published to, is forgotten once nobody follows it,
    // and the only topic slot is then taken by another topic.
    c.send(ClientMessage::Unsubscribe("a".into())).await;
    wait_until("topic a forgotten", || {
        server.shared().topics.topic_count() == 0
    })
    .await;
    c.lose();
    let mut other = Client::connect(server.addr()).await;
    other.subscribe("b").await;
    let (mut c, recovered, missed) =
        resume(server.addr(), &token, vec![at("a", &epoch, offset)]).await;
    assert_eq!((recovered, missed), (false, 0));
    let reason = c.expect_error("unavailable").await;
    assert!(reason.contains("\"a\""), "names the topic: {reason}");
    assert_eq!(
        server.shared().topics.subscription_count(),
        1,
        "not subscribed"
    );
}

#[tokio::test]
async fn a_topic_named_twice_in_a_resume_is_replayed_once() {
    let server = TestServer::start().await;
    let mut c = Client::connect(server.addr()).await;
    opt_in(&mut c).await;
    let (epoch, offset) = subscribe_at(&mut c, "t").await;
    let token = c.token.clone();
    c.lose();
    let mut p = publisher(&server).await;
    for id in 1..=3 {
        publish(&mut p, "t", id).await;
    }
    let (mut c, recovered, missed) = resume(
        server.addr(),
        &token,
        vec![at("t", &epoch, offset), at("t", &epoch, offset)],
    )
    .await;
    assert_eq!((recovered, missed), (true, 3));
    for id in 1..=3 {
        assert_eq!(next(&mut c).await, (id, Some(id)));
    }
    publish(&mut p, "t", 4).await;
    assert_eq!(next(&mut c).await, (4, Some(4)), "live, once");
    c.expect_nothing_buffered();
}

/// Past `max-detached-sessions` waiting for a resume, a lost connection's
/// session ends at once (counted as not kept), so clients that subscribe
/// and drop cannot make the server hold sessions without bound; those
/// already waiting still resume. Once the sweep has seen them go, the room
/// is there again.
#[tokio::test]
async fn past_max_detached_sessions_a_lost_session_is_not_kept() {
    let server = TestServer::start_with(Config {
        max_detached_sessions: 2,
        ..test_config()
    })
    .await;
    let shared = server.shared().clone();
    let mut tokens = Vec::new();
    for _ in 0..3 {
        let mut c = Client::connect(server.addr()).await;
        c.subscribe("t").await;
        tokens.push(c.token.clone());
        c.lose();
        let parsed = tokens.last().expect("token").parse().expect("token");
        // One at a time, so which one is refused is known.
        wait_until("the connection to be gone", || {
            shared
                .sessions
                .get(&parsed)
                .is_none_or(|s| s.detached_since().is_some())
        })
        .await;
    }
    let stats = &shared.stats;
    assert_eq!(Stats::get(&stats.sessions_detached), 2);
    assert_eq!(Stats::get(&stats.sessions_not_kept), 1);
    let third = tokens[2].parse().expect("token");
    assert!(shared.sessions.get(&third).is_none(), "the third was freed");
    wait_until("the topic to hold the two waiting sessions only", || {
        shared.topics.topic("t").is_some_and(|t| t.subscribers == 2)
    })
    .await;
    let mut c = Client::connect(server.addr()).await;
    c.send(ClientMessage::Resume(Resume::Token(tokens[2].clone())))
        .await;
    c.expect_error("unknown_session").await;
    let mut resumed = Vec::new();
    for token in &tokens[..2] {
        let mut c = Client::connect(server.addr()).await;
        c.send(ClientMessage::Resume(Resume::Token(token.clone())))
            .await;
        match c.recv().await {
            ServerMessage::Resumed { recovered, .. } => assert!(recovered),
            other => panic!("expected resumed, got {other:?}"),
        }
        resumed.push(c);
    }
    // Once a sweep that began after both detached has seen that none waits
    // any more, both are kept again when they lose their connections. (A
    // count of 0 from a sweep before the detaches does not say so.)
    wait_until("a sweep to count no waiting session", || {
        let sweep = *stats.detached_sweep.lock().expect("not poisoned");
        sweep.detached_before >= 2 && sweep.waiting == 0
    })
    .await;
    for c in resumed {
        c.lose();
    }
    wait_until("both to wait for a resume again", || {
        Stats::get(&stats.sessions_detached) == 4
    })
    .await;
    assert_eq!(Stats::get(&stats.sessions_not_kept), 1);
}
