//! The operator surface end to end: every admin HTTP endpoint, the bearer
//! token and the loopback rule, the Prometheus exposition (checked with a
//! parser), a drain that loses no queued message, and every `janus-admin`
//! command (with its exit codes) against an in-process server with real
//! protocol clients, including the `subscribe`/`publish` pair.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::atomic::Ordering;

use janus_core::{ClientMessage, ServerMessage};
use janus_server::stats::Stats;
use janus_server::Config;
use janus_tests::{
    cargo_bin, exit_code, lines_of, next_line, publish, test_config, wait_until, wait_until_async,
    Client, TestServer, TIMEOUT,
};
use serde_json::{json, Value};

/// A test configuration with the admin API on an ephemeral loopback port.
fn admin_config(token: Option<&str>) -> Config {
    Config {
        admin_listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        admin_token: token.map(str::to_owned),
        // The first CLI call may wait for cargo to build the binaries: no
        // heartbeat may slip in meanwhile.
        heartbeat: std::time::Duration::from_secs(3600),
        ..test_config()
    }
}

/// The admin API's base URL of an in-process server.
fn base_url(server: &TestServer) -> String {
    let addr = server.shared().admin_addr().expect("admin API enabled");
    format!("http://{addr}")
}

/// One HTTP answer.
#[derive(Debug)]
struct Reply {
    status: u16,
    content_type: String,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
}

/// A minimal admin API client (blocking `ureq` on the blocking pool).
#[derive(Clone)]
struct Admin {
    base: String,
    token: Option<String>,
}

impl Admin {
    fn new(server: &TestServer, token: Option<&str>) -> Admin {
        Admin {
            base: base_url(server),
            token: token.map(str::to_owned),
        }
    }

    async fn call(&self, method: &'static str, path: &str, body: Option<String>) -> Reply {
        let url = format!("{}{path}", self.base);
        let auth = self.token.as_ref().map(|t| format!("Bearer {t}"));
        tokio::task::spawn_blocking(move || {
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(TIMEOUT))
                .build()
                .into();
            let result = match method {
                "GET" | "DELETE" => {
                    let mut req = if method == "GET" {
                        agent.get(&url)
                    } else {
                        agent.delete(&url)
                    };
                    if let Some(a) = &auth {
                        req = req.header("Authorization", a);
                    }
                    req.call()
                }
                _ => {
                    let mut req = agent.post(&url).header("Content-Type", "application/json");
                    if let Some(a) = &auth {
                        req = req.header("Authorization", a);
                    }
                    req.send(body.unwrap_or_default().as_str())
                }
            };
            let mut resp = result.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
            let content_type = resp
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            Reply {
                status: resp.status().as_u16(),
                content_type,
                body: resp.body_mut().read_to_string().expect("body"),
            }
        })
        .await
        .expect("request task")
    }

    async fn get(&self, path: &str) -> Reply {
        self.call("GET", path, None).await
    }

    async fn post(&self, path: &str, body: Value) -> Reply {
        self.call("POST", path, Some(body.to_string())).await
    }

    async fn delete(&self, path: &str) -> Reply {
        self.call("DELETE", path, None).await
    }
}

/// The next delivery, failing on anything else.
async fn delivery(c: &mut Client) -> janus_core::message::Delivery {
    match c.recv().await {
        ServerMessage::Delivery(d) => d,
        other => panic!("expected a delivery, got {other:?}"),
    }
}

/// A message sent to one session is in no topic's stream: an offsets client
/// gets it without an offset, and the topic's numbering skips nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_direct_send_carries_no_offset_and_takes_none_from_the_stream() {
    let server = TestServer::start_with(admin_config(None)).await;
    let admin = Admin::new(&server, None);
    let mut c = Client::connect(server.addr()).await;
    c.send(ClientMessage::Options {
        offsets: Some(true),
    })
    .await;
    assert_eq!(c.recv().await, ServerMessage::Ack);
    c.send(ClientMessage::Subscribe("news".into())).await;
    match c.recv().await {
        ServerMessage::Subscribed { offset, .. } => assert_eq!(offset, 0),
        other => panic!("expected subscribed, got {other:?}"),
    }
    let path = format!("/sessions/{}/send", c.token);
    let reply = admin
        .post(&path, json!({"topic": "news", "data": "direct"}))
        .await;
    assert_eq!(reply.status, 200);
    let d = delivery(&mut c).await;
    assert_eq!((d.data.as_str(), d.offset), ("\"direct\"", None));
    let reply = admin
        .post("/publish", json!({"topic": "news", "data": 1}))
        .await;
    assert_eq!(reply.status, 200);
    let d = delivery(&mut c).await;
    assert_eq!((d.data.as_str(), d.offset), ("1", Some(1)));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_health_and_ready() {
    let server = TestServer::start_with(admin_config(None)).await;
    let admin = Admin::new(&server, None);

    let health = admin.get("/health").await;
    assert_eq!(
        (health.status, health.json()),
        (200, json!({"status": "ok"}))
    );
    let ready = admin.get("/ready").await;
    assert_eq!(
        (ready.status, ready.json()["ready"].clone()),
        (200, json!(true))
    );

    let mut sub = Client::connect(server.addr()).await;
    sub.subscribe("news").await;
    for i in 0..5 {
        publish(server.addr(), "news", &i.to_string(), "1").await;
        delivery(&mut sub).await;
    }
    // A bad topic, so that errors have a non-zero count.
    sub.send(ClientMessage::Subscribe(String::new())).await;
    sub.expect_error("bad_topic").await;

    let reply = admin.get("/status").await;
    assert_eq!(reply.status, 200);
    assert!(
        reply.content_type.starts_with("application/json"),
        "{}",
        reply.content_type
    );
    let status = reply.json();
    for key in [
        "connections",
        "connections_peak",
        "sessions",
        "topics",
        "subscriptions",
        "messages_published",
        "deliveries_sent",
        "bytes_out",
        "slow_consumers",
        "errors",
        "publish_rate",
        "delivery_rate",
        "uptime_s",
        "version",
        "listen",
        "capacity",
    ] {
        assert!(status.get(key).is_some(), "/status lacks {key}: {status}");
    }
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(status["listen"]["clients"], server.addr().to_string());
    assert_eq!(
        status["listen"]["admin"],
        server.shared().admin_addr().unwrap().to_string()
    );
    assert_eq!(status["admin_auth"], "loopback");
    assert_eq!(status["capacity"], server.shared().capacity);
    assert!(status["connections"].as_u64().unwrap() >= 1);
    assert!(status["connections_peak"].as_u64().unwrap() >= 2);
    assert_eq!(status["sessions"], 1);
    assert_eq!(
        (status["topics"].clone(), status["subscriptions"].clone()),
        (json!(1), json!(1))
    );
    assert_eq!(status["messages_published"], 5);
    assert_eq!(status["deliveries_sent"], 5);
    assert!(status["bytes_out"].as_u64().unwrap() > 0);
    assert_eq!(status["slow_consumers"], 0);
    assert_eq!(status["errors"]["bad_topic"], 1);
    assert_eq!(status["errors"]["kicked"], 0);
    assert!(status["publish_rate"].as_f64().unwrap() > 0.0, "{status}");
    assert!(status["delivery_rate"].as_f64().unwrap() > 0.0, "{status}");
    assert_eq!(status["delivery_latency"]["count"], 5);
    assert!(status["delivery_latency"]["p99_ms"].as_f64().is_some());

    // Draining: not ready any more, while the admin API still answers.
    let mut slow = Client::connect(server.addr()).await;
    slow.subscribe("slow").await;
    server.shared().drain();
    let ready = admin.get("/ready").await;
    assert_eq!(ready.status, 503);
    assert_eq!(ready.json(), json!({"ready": false, "reason": "draining"}));
    assert_eq!(admin.get("/status").await.json()["draining"], true);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_and_sessions_are_listed_and_paginated() {
    let server = TestServer::start_with(admin_config(None)).await;
    let admin = Admin::new(&server, None);
    let mut clients = Vec::new();
    for topics in [&["news", "news/eu"][..], &["news"], &["sport"]] {
        let mut c = Client::connect(server.addr()).await;
        for t in topics {
            c.subscribe(t).await;
        }
        clients.push(c);
    }
    publish(server.addr(), "news", "1", "1").await;
    publish(server.addr(), "news", "2", "2").await;
    for c in &mut clients[..2] {
        delivery(c).await;
        delivery(c).await;
    }

    let list = admin.get("/topics").await.json();
    assert_eq!(list["total"], 3);
    assert_eq!(list["truncated"], false);
    assert_eq!(
        list["topics"],
        json!([
            {"name": "news", "subscribers": 2, "published": 2},
            {"name": "news/eu", "subscribers": 1, "published": 0},
            {"name": "sport", "subscribers": 1, "published": 0},
        ])
    );
    let prefixed = admin.get("/topics?prefix=news/").await.json();
    assert_eq!(prefixed["topics"].as_array().unwrap().len(), 1);
    let limited = admin.get("/topics?limit=1&sort=subscribers").await.json();
    assert_eq!(
        (
            limited["topics"][0]["name"].clone(),
            limited["truncated"].clone()
        ),
        (json!("news"), json!(true))
    );

    // One topic, with a slash in its name (percent-encoded or not).
    for path in ["/topics/news%2Feu", "/topics/news/eu"] {
        let topic = admin.get(path).await.json();
        assert_eq!(topic["name"], "news/eu", "{path}");
        assert_eq!(topic["subscribers"], 1);
        let subscriber = &topic["sessions"][0];
        assert_eq!(subscriber["token"], clients[0].token);
        assert_eq!(
            subscriber["peer"],
            clients[0].stream.local_addr().unwrap().to_string()
        );
        assert_eq!(subscriber["queue_depth"], 0);
    }
    let missing = admin.get("/topics/nope").await;
    assert_eq!(
        (missing.status, missing.json()["error"].clone()),
        (404, json!("unknown_topic"))
    );

    // Sessions: one page at a time, by token, until `next` is null.
    let mut seen = Vec::new();
    let mut after = String::new();
    loop {
        let page = admin.get(&format!("/sessions?limit=1{after}")).await.json();
        assert_eq!(page["total"], 3);
        let sessions = page["sessions"].as_array().unwrap();
        assert!(sessions.len() <= 1);
        seen.extend(
            sessions
                .iter()
                .map(|s| s["token"].as_str().unwrap().to_owned()),
        );
        match page["next"].as_str() {
            Some(next) => after = format!("&after={next}"),
            None => break,
        }
    }
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(seen, sorted, "pages come in token order");
    let expected: HashSet<_> = clients.iter().map(|c| c.token.clone()).collect();
    assert_eq!(seen.into_iter().collect::<HashSet<_>>(), expected);
    let all = admin.get("/sessions").await.json();
    assert_eq!(
        (
            all["sessions"].as_array().unwrap().len(),
            all["next"].clone()
        ),
        (3, Value::Null)
    );

    let one = admin
        .get(&format!("/sessions/{}", clients[0].token))
        .await
        .json();
    assert_eq!(one["token"], clients[0].token);
    assert_eq!(
        one["peer"],
        clients[0].stream.local_addr().unwrap().to_string()
    );
    assert_eq!(one["subscriptions"], json!(["news", "news/eu"]));
    assert_eq!(one["queue_depth"], 0);
    assert_eq!(one["delivered"], 2);
    assert!(one["connected_at"].as_str().unwrap().ends_with('Z'));

    let unknown = admin
        .get("/sessions/00000000000000000000000000000001")
        .await;
    assert_eq!(
        (unknown.status, unknown.json()["error"].clone()),
        (404, json!("unknown_session"))
    );
    let malformed = admin.get("/sessions/not-a-token").await;
    assert_eq!(
        (malformed.status, malformed.json()["error"].clone()),
        (400, json!("bad_token"))
    );
    let nowhere = admin.get("/no/such/endpoint").await;
    assert_eq!(nowhere.status, 404);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_send_and_kick() {
    let server = TestServer::start_with(admin_config(None)).await;
    let admin = Admin::new(&server, None);
    let mut a = Client::connect(server.addr()).await;
    let mut b = Client::connect(server.addr()).await;
    a.subscribe("news").await;
    b.subscribe("news").await;

    // Publish: exactly like a client PUBLISH, to every subscriber.
    let body =
        json!({"topic": "news", "event": "flash", "message_id": "m1", "data": {"x": [1, 2]}});
    let reply = admin.post("/publish", body).await;
    assert_eq!(
        (reply.status, reply.json()),
        (
            200,
            json!({"topic": "news", "reached": 2, "cluster": false})
        )
    );
    let mut timestamps = Vec::new();
    for c in [&mut a, &mut b] {
        let d = delivery(c).await;
        assert_eq!(
            (
                d.topic.as_str(),
                d.event.as_str(),
                d.message_id.as_str(),
                d.data.as_str()
            ),
            ("news", "flash", "m1", "{\"x\":[1,2]}")
        );
        timestamps.push(d.timestamp);
    }
    assert_eq!(timestamps[0], timestamps[1], "one timestamp per publish");
    let nobody = admin
        .post("/publish", json!({"topic": "empty", "data": 1}))
        .await
        .json();
    assert_eq!(nobody["reached"], 0);
    for (bad, code) in [
        (json!({"data": 1}), "bad_json"),
        (json!({"topic": "", "data": 1}), "bad_topic"),
        (json!(["news"]), "bad_json"),
    ] {
        let reply = admin.post("/publish", bad).await;
        assert_eq!(
            (reply.status, reply.json()["error"].clone()),
            (400, json!(code))
        );
    }

    // Send: one session only, raw delivery frame with the exact key order.
    let path = format!("/sessions/{}/send", a.token);
    let reply = admin
        .post(
            &path,
            json!({"topic": "direct", "message_id": "u1", "data": "hi"}),
        )
        .await;
    assert_eq!(
        (reply.status, reply.json()["token"].clone()),
        (200, json!(a.token))
    );
    let raw = String::from_utf8(a.recv_raw().await).unwrap();
    assert!(
        raw.starts_with("{\"timestamp\":[")
            && raw.ends_with(
                ",\"topic\":\"direct\",\"event\":\"\",\"message_id\":\"u1\",\"data\":\"hi\"}"
            ),
        "{raw}"
    );
    // b got nothing: its next frame is the next publish.
    admin
        .post(
            "/publish",
            json!({"topic": "news", "message_id": "m2", "data": 2}),
        )
        .await;
    assert_eq!(delivery(&mut b).await.message_id, "m2");
    assert_eq!(delivery(&mut a).await.message_id, "m2");
    let unknown = admin
        .post(
            "/sessions/00000000000000000000000000000001/send",
            json!({"data": 1}),
        )
        .await;
    assert_eq!(
        (unknown.status, unknown.json()["error"].clone()),
        (404, json!("unknown_session"))
    );
    let bad = admin.post(&path, json!("just a string")).await;
    assert_eq!(bad.status, 400);

    // Kick: `kicked` with the reason, then the connection closes; b is untouched.
    let reply = admin
        .delete(&format!(
            "/sessions/{}?reason=maintenance%20window",
            a.token
        ))
        .await;
    assert_eq!(
        (reply.status, reply.json()),
        (200, json!({"kicked": a.token}))
    );
    assert_eq!(a.expect_error("kicked").await, "maintenance window");
    a.expect_closed().await;
    let token = a.token.clone();
    let shared = server.shared().clone();
    wait_until("the kicked session to be gone", || {
        shared.sessions.get(&token.parse().unwrap()).is_none()
    })
    .await;
    assert_eq!(admin.get(&format!("/sessions/{token}")).await.status, 404);
    assert_eq!(
        admin.delete(&format!("/sessions/{token}")).await.status,
        404
    );
    b.expect_open().await;
    let status = admin.get("/status").await.json();
    assert_eq!(status["errors"]["kicked"], 1);
    assert_eq!(status["messages_published"], 3);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_guards_everything_but_health() {
    let server = TestServer::start_with(admin_config(Some("s3cret"))).await;
    let mut victim = Client::connect(server.addr()).await;
    victim.subscribe("t").await;
    let right = Admin::new(&server, Some("s3cret"));
    for who in [
        Admin::new(&server, None),
        Admin::new(&server, Some("wrong")),
    ] {
        assert_eq!(who.get("/health").await.status, 200);
        for reply in [
            who.get("/status").await,
            who.get("/ready").await,
            who.get("/metrics").await,
            who.get("/sessions").await,
            who.post("/publish", json!({"topic": "t", "data": 1})).await,
            who.delete(&format!("/sessions/{}", victim.token)).await,
            who.call("POST", "/drain", None).await,
        ] {
            assert_eq!(reply.status, 401, "{reply:?}");
            assert!(reply.body.is_empty(), "a 401 says nothing else: {reply:?}");
        }
    }
    // Nothing happened: no publish, no kick, no drain.
    victim.expect_open().await;
    assert_eq!(Stats::get(&server.shared().stats.messages_published), 0);
    assert!(!server.shared().draining());
    let status = right.get("/status").await;
    assert_eq!(
        (status.status, status.json()["admin_auth"].clone()),
        (200, json!("token"))
    );
    assert_eq!(right.get("/metrics").await.status, 200);
    server.stop().await;
}

/// A server whose admin API is off has no admin address.
#[tokio::test]
async fn admin_off_means_no_listener() {
    let server = TestServer::start().await;
    assert_eq!(server.shared().admin_addr(), None);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_valid_prometheus_text() {
    let server = TestServer::start_with(admin_config(None)).await;
    let admin = Admin::new(&server, None);
    let mut subs = Vec::new();
    for _ in 0..3 {
        let mut c = Client::connect(server.addr()).await;
        c.subscribe("m").await;
        subs.push(c);
    }
    for i in 0..4 {
        publish(server.addr(), "m", &i.to_string(), "{\"pad\":\"xxxxxxxx\"}").await;
    }
    for c in &mut subs {
        for _ in 0..4 {
            delivery(c).await;
        }
    }
    let reply = admin.get("/metrics").await;
    assert_eq!(reply.status, 200);
    assert!(
        reply.content_type.starts_with("text/plain; version=0.0.4"),
        "{}",
        reply.content_type
    );
    let text = reply.body;

    // Every line is a comment the format knows, or a sample the parser reads.
    let mut typed: HashMap<String, String> = HashMap::new();
    let mut helped = HashSet::new();
    for line in text.lines() {
        let info = prometheus_parse::LineInfo::parse(line);
        assert!(
            !matches!(info, prometheus_parse::LineInfo::Ignored),
            "unparsable line: {line:?}"
        );
        let mut words = line.split_whitespace();
        match (words.next(), words.next(), words.next(), words.next()) {
            (Some("#"), Some("TYPE"), Some(name), Some(kind)) => {
                assert!(
                    typed.insert(name.to_owned(), kind.to_owned()).is_none(),
                    "TYPE twice: {name}"
                );
            }
            (Some("#"), Some("HELP"), Some(name), _) => {
                helped.insert(name.to_owned());
            }
            (Some(first), ..) => {
                assert!(!first.starts_with('#'), "unknown comment: {line}");
                let name = first.split('{').next().unwrap();
                assert!(
                    name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                        && name.starts_with("janus_"),
                    "metric name {name}"
                );
                let family = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| {
                        name.strip_suffix(s)
                            .filter(|f| typed.get(*f).is_some_and(|k| k == "histogram"))
                    })
                    .unwrap_or(name);
                assert!(typed.contains_key(family), "sample {name} before its TYPE");
            }
            _ => {}
        }
    }
    assert_eq!(
        typed.keys().collect::<HashSet<_>>(),
        helped.iter().collect::<HashSet<_>>()
    );
    for (name, kind) in &typed {
        assert_eq!(
            kind == "counter",
            name.ends_with("_total"),
            "{name} is a {kind}"
        );
    }

    let scrape =
        prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("parse");
    let value = |metric: &str| {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == metric)
            .map(|s| match &s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => *v,
                other => panic!("{metric}: {other:?}"),
            })
            .unwrap_or_else(|| panic!("no {metric} in\n{text}"))
    };
    assert_eq!(value("janus_messages_published_total"), 4.0);
    assert_eq!(value("janus_deliveries_sent_total"), 12.0);
    assert_eq!(value("janus_subscriptions"), 3.0);
    assert_eq!(value("janus_topics"), 1.0);
    assert_eq!(value("janus_ready"), 1.0);
    assert!(value("janus_sent_bytes_total") > 0.0);
    assert!(value("janus_connections") >= 3.0);
    let errors: Vec<_> = scrape
        .samples
        .iter()
        .filter(|s| s.metric == "janus_errors_total")
        .collect();
    assert_eq!(
        errors.len(),
        janus_core::ErrorCode::ALL.len(),
        "one series per P7 code"
    );
    assert!(errors
        .iter()
        .any(|s| s.labels.get("code") == Some("slow_consumer")));

    let histogram = scrape
        .samples
        .iter()
        .find(|s| s.metric == "janus_delivery_latency_seconds")
        .expect("latency histogram");
    let prometheus_parse::Value::Histogram(buckets) = &histogram.value else {
        panic!("not a histogram: {histogram:?}")
    };
    assert!(buckets.len() > 10);
    assert!(buckets
        .windows(2)
        .all(|w| w[0].less_than < w[1].less_than && w[0].count <= w[1].count));
    let last = buckets.last().unwrap();
    assert_eq!((last.less_than, last.count), (f64::INFINITY, 12.0));
    assert_eq!(value("janus_delivery_latency_seconds_count"), 12.0);
    assert!(value("janus_delivery_latency_seconds_sum") > 0.0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_writes_every_queued_message_first() {
    let server = TestServer::start_with(Config {
        queue_bytes: 64 << 20,
        ..admin_config(None)
    })
    .await;
    let admin = Admin::new(&server, None);
    // A subscriber that does not read yet, so that messages pile up in the
    // socket buffers and in its session queue (within its budget).
    let mut reader = Client::connect(server.addr()).await;
    reader.subscribe("bulk").await;
    let data = format!("\"{}\"", "z".repeat(16 * 1024));
    let count = 600;
    let mut p = Client::connect(server.addr()).await;
    for i in 0..count {
        p.publish_acked("bulk", &i.to_string(), &data).await;
    }
    let shared = server.shared().clone();
    let token: janus_core::Token = reader.token.parse().unwrap();
    let queued = shared
        .sessions
        .get(&token)
        .expect("session")
        .outbound
        .status()
        .frames;
    assert!(
        queued > 0,
        "the test needs messages still queued at the server"
    );

    let reply = admin.call("POST", "/drain", None).await;
    assert_eq!(
        (reply.status, reply.json()["draining"].clone()),
        (202, json!(true))
    );
    assert!(shared.draining());
    for i in 0..count {
        assert_eq!(
            delivery(&mut reader).await.message_id,
            i.to_string(),
            "in order, none lost"
        );
    }
    reader.expect_error("server_shutdown").await;
    reader.expect_closed().await;
    assert_eq!(shared.stats.deliveries_dropped.load(Ordering::Relaxed), 0);
    // `Server::run` returns (the binary then exits 0; see `cli_drain_stops_the_binary`).
    server.stop().await;
}

/// Runs `janus-admin` with `args` against `base`, returning (exit code, stdout, stderr).
async fn cli(base: &str, token: Option<&str>, args: &[&str]) -> (i32, String, String) {
    let mut cmd = tokio::process::Command::new(cargo_bin("janus-admin"));
    cmd.arg("--server").arg(base).args(args);
    cmd.env_remove("JANUS_ADMIN_TOKEN")
        .env_remove("JANUS_ADMIN_URL");
    if let Some(t) = token {
        cmd.env("JANUS_ADMIN_TOKEN", t);
    }
    let out = tokio::time::timeout(TIMEOUT, cmd.stdin(Stdio::null()).output())
        .await
        .expect("janus-admin finished in time")
        .expect("run janus-admin");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Asserts a zero exit and returns stdout.
fn ok((code, stdout, stderr): (i32, String, String)) -> String {
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    assert!(stderr.is_empty(), "{stderr}");
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_commands() {
    let server = TestServer::start_with(admin_config(Some("tok"))).await;
    let base = base_url(&server);
    let tok = Some("tok");
    let mut sub = Client::connect(server.addr()).await;
    sub.subscribe("news").await;
    sub.subscribe("news/eu").await;
    let token = sub.token.clone();

    let status = ok(cli(&base, tok, &["status"]).await);
    assert!(
        status.contains("connections") && status.contains("ready"),
        "{status}"
    );
    // Sizes in the units the size settings are written in; the delivery
    // counters read as totals, not as a backlog.
    let line = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(
        Config::default().history_bytes,
        256 << 20,
        "the default this checks"
    );
    assert!(line("history").contains("of 256.0 MiB"), "{status}");
    assert!(
        line("delivered").contains("0 of 0 queued since start"),
        "{status}"
    );
    let json_status: Value =
        serde_json::from_str(&ok(cli(&base, tok, &["--json", "status"]).await)).unwrap();
    assert_eq!(json_status["subscriptions"], 2);

    let topics = ok(cli(&base, tok, &["topics"]).await);
    assert!(topics.starts_with("TOPIC"), "{topics}");
    assert!(
        topics
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["news/eu", "1", "0"]),
        "{topics}"
    );
    let topics = ok(cli(&base, tok, &["--json", "topics", "--prefix", "news/"]).await);
    let topics: Value = serde_json::from_str(&topics).unwrap();
    assert_eq!(topics["topics"].as_array().unwrap().len(), 1);

    let topic = ok(cli(&base, tok, &["topic", "news/eu"]).await);
    assert!(
        topic.contains("1 subscriber") && topic.contains(&token),
        "{topic}"
    );

    let sessions = ok(cli(&base, tok, &["sessions"]).await);
    assert!(
        sessions.contains(&token) && sessions.contains("(1 of 1 session)"),
        "{sessions}"
    );
    let all = ok(cli(&base, tok, &["sessions", "--all", "--limit", "1", "--json"]).await);
    assert_eq!(
        serde_json::from_str::<Value>(&all).unwrap()["sessions"][0]["token"],
        token
    );

    let session = ok(cli(&base, tok, &["session", &token]).await);
    assert!(session.contains("news, news/eu"), "{session}");

    // A publish through the CLI reaches a real subscriber.
    let out = ok(cli(
        &base,
        tok,
        &[
            "publish",
            "news",
            "{\"n\":1}",
            "--event",
            "ev",
            "--message-id",
            "cli-1",
        ],
    )
    .await);
    assert_eq!(out, "published to news: reached 1 subscriber\n");
    let d = delivery(&mut sub).await;
    assert_eq!(
        (d.event.as_str(), d.message_id.as_str(), d.data.as_str()),
        ("ev", "cli-1", "{\"n\":1}")
    );
    ok(cli(&base, tok, &["publish", "news", "plain text"]).await);
    assert_eq!(delivery(&mut sub).await.data, "\"plain text\"");

    // Send to one session, then kick it.
    ok(cli(&base, tok, &["send", &token, "42", "--topic", "direct"]).await);
    let d = delivery(&mut sub).await;
    assert_eq!((d.topic.as_str(), d.data.as_str()), ("direct", "42"));
    assert!(ok(cli(&base, tok, &["kick", &token, "--reason", "bye"]).await).starts_with("kicked "));
    assert_eq!(sub.expect_error("kicked").await, "bye");
    sub.expect_closed().await;

    // The server said no: exit 1 with one line.
    let (code, stdout, stderr) = cli(&base, tok, &["session", &token]).await;
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("unknown_session"), "{stderr}");
    let (code, _, stderr) = cli(&base, Some("wrong"), &["status"]).await;
    assert_eq!(code, 1);
    assert!(
        stderr.contains("401") && stderr.contains("token"),
        "{stderr}"
    );
    let (code, _, stderr) = cli(&base, None, &["topics"]).await;
    assert_eq!((code, stderr.lines().count()), (1, 1), "{stderr}");
    let (code, _, stderr) = cli(&base, tok, &["publish", "", "1"]).await;
    assert_eq!(code, 1);
    assert!(stderr.contains("bad_topic"), "{stderr}");

    // Cannot reach the server: exit 3 with one line (top too, before touching the terminal).
    let dead = format!("http://{}", unused_addr().await);
    for args in [&["status"][..], &["top"]] {
        let (code, _, stderr) = cli(&dead, None, args).await;
        assert_eq!(code, 3, "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains("cannot reach"), "{stderr}");
    }
    // The client port is not the admin API, and the CLI says so.
    let client_port = format!("http://{}", server.addr());
    let (code, _, stderr) = cli(&client_port, tok, &["status"]).await;
    assert_eq!(code, 3, "{stderr}");
    assert!(stderr.contains("is a Janus client port"), "{stderr}");
    // Bad usage is neither: clap's 2.
    assert_eq!(cli(&base, tok, &["frobnicate"]).await.0, 2);

    // Drain: the in-process server's run() returns.
    let mut last = Client::connect(server.addr()).await;
    last.subscribe("news").await;
    let out = ok(cli(&base, tok, &["drain"]).await);
    assert!(out.starts_with("draining"), "{out}");
    last.expect_error("server_shutdown").await;
    last.expect_closed().await;
    server.stop().await;
}

/// What is on the other end when it is not the admin API, and a timeout
/// that holds: the CLI says which, with exit 3, within its `--timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_names_what_answered_when_it_is_not_the_admin_api() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // Accepts and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    let started = std::time::Instant::now();
    let (code, _, stderr) = cli(
        &format!("http://{silent_addr}"),
        None,
        &["--timeout", "0.5", "status"],
    )
    .await;
    let took = started.elapsed();
    assert_eq!(code, 3, "{stderr}");
    assert!(stderr.contains("no answer within 500 ms"), "{stderr}");
    // It used to probe the port for a Janus hello for 2 s more.
    assert!(
        took < std::time::Duration::from_millis(1800),
        "took {took:?}"
    );
    holder.abort();

    // Some other web server: its 404 page is not an admin API refusal.
    let web = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let web_addr = web.local_addr().unwrap();
    let page = tokio::spawn(async move {
        while let Ok((mut socket, _)) = web.accept().await {
            let mut request = vec![0u8; 4096];
            let _ = socket.read(&mut request).await;
            let body = "<!DOCTYPE HTML>\n<html><body>Not Found</body></html>\n";
            let answer = format!(
                "HTTP/1.1 404 Not Found\r\nContent-Type: text/html\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = socket.write_all(answer.as_bytes()).await;
        }
    });
    let (code, _, stderr) = cli(&format!("http://{web_addr}"), None, &["status"]).await;
    assert_eq!(code, 3, "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("is not from a Janus admin API"), "{stderr}");
    page.abort();

    // A limit of 0 is a usage error, not one line.
    let server = TestServer::start_with(admin_config(None)).await;
    let (code, _, stderr) = cli(&base_url(&server), None, &["topics", "--limit", "0"]).await;
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("at least 1"), "{stderr}");
}

/// Starts `janus-admin subscribe` on the test server's client port.
fn spawn_subscriber(server: &TestServer, args: &[&str]) -> tokio::process::Child {
    tokio::process::Command::new(cargo_bin("janus-admin"))
        .arg("subscribe")
        .args(args)
        .args(["--client", &server.addr().to_string()])
        .env_remove("JANUS_CLIENT_ADDR")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn janus-admin subscribe")
}

/// The README's pair: `janus-admin subscribe` in one terminal, `janus-admin
/// publish` in another, both the built binaries against one server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_subscribe_and_publish_are_a_pair() {
    let server = TestServer::start_with(admin_config(None)).await;
    let base = base_url(&server);

    let mut sub = spawn_subscriber(&server, &["news", "sport"]);
    let mut out = lines_of(sub.stdout.take().expect("stdout"));
    let mut err = lines_of(sub.stderr.take().expect("stderr"));
    let ready = next_line(&mut err).await;
    assert!(
        ready.starts_with("subscribed to news, sport on "),
        "{ready}"
    );
    let said = ok(cli(
        &base,
        None,
        &[
            "publish",
            "news",
            "{\"hello\":\"world\"}",
            "--event",
            "e",
            "--message-id",
            "7",
        ],
    )
    .await);
    assert_eq!(said, "published to news: reached 1 subscriber\n");
    assert_eq!(
        next_line(&mut out).await,
        "news event=e id=7 {\"hello\":\"world\"}"
    );
    ok(cli(&base, None, &["publish", "sport", "goal"]).await);
    assert_eq!(next_line(&mut out).await, "sport \"goal\"");
    // Ctrl-C ends it cleanly.
    let pid = sub.id().expect("pid").to_string();
    let status = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status();
    assert!(status.is_ok_and(|s| s.success()));
    assert_eq!(exit_code(&mut sub).await, 0);

    // --json prints each delivery as the server sent it; --count ends it.
    let mut sub = spawn_subscriber(&server, &["news", "--json", "--count", "1"]);
    let mut out = lines_of(sub.stdout.take().expect("stdout"));
    let mut err = lines_of(sub.stderr.take().expect("stderr"));
    assert!(next_line(&mut err).await.starts_with("subscribed to news"));
    publish(server.addr(), "news", "m1", "[1,2]").await;
    let line = next_line(&mut out).await;
    let json: Value = serde_json::from_str(&line).expect("JSON delivery");
    assert_eq!(
        (&json["topic"], &json["message_id"], &json["data"]),
        (&json!("news"), &json!("m1"), &json!([1, 2]))
    );
    assert!(line.starts_with("{\"timestamp\":["), "{line}");
    assert_eq!(exit_code(&mut sub).await, 0);

    // The server saying no is exit 1; nothing listening is exit 3.
    let mut sub = spawn_subscriber(&server, &[""]);
    let mut err = lines_of(sub.stderr.take().expect("stderr"));
    assert_eq!(exit_code(&mut sub).await, 1);
    assert!(next_line(&mut err).await.contains("bad_topic"));
    let (code, _, stderr) = cli(
        &base,
        None,
        &[
            "subscribe",
            "news",
            "--client",
            &unused_addr().await.to_string(),
        ],
    )
    .await;
    assert_eq!(code, 3, "{stderr}");
    assert!(stderr.contains("cannot reach the client port"), "{stderr}");
    // A server going away ends a subscription with exit 1.
    let mut sub = spawn_subscriber(&server, &["news"]);
    let mut err = lines_of(sub.stderr.take().expect("stderr"));
    assert!(next_line(&mut err).await.starts_with("subscribed to news"));
    server.stop().await;
    assert_eq!(exit_code(&mut sub).await, 1);
    assert!(next_line(&mut err).await.contains("server_shutdown"));
}

/// An address nothing listens on.
async fn unused_addr() -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    l.local_addr().expect("bound address")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_drain_stops_the_binary_with_exit_zero() {
    use std::io::{BufRead, BufReader};
    let mut child = std::process::Command::new(cargo_bin("janus-server"))
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn janus-server");
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let stderr = child.stderr.take().unwrap();
    let mut child = Kill(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let after = |line: &str, marker: &str| -> Option<SocketAddr> {
        let rest = line.split(marker).nth(1)?;
        rest.split([',', ' ']).next()?.parse().ok()
    };
    let (mut addr, mut admin) = (None, None);
    while admin.is_none() {
        let line = rx.recv_timeout(TIMEOUT).expect("start-up lines");
        addr = addr.or(after(&line, "listening on "));
        if let Some(a) = after(&line, "admin API on http://") {
            assert!(line.contains("loopback clients only"), "{line}");
            admin = Some(a);
        }
    }
    let (addr, admin) = (addr.expect("client address"), admin.expect("admin address"));
    let mut c = Client::connect(addr).await;
    c.subscribe("t").await;
    let base = format!("http://{admin}");
    let (code, stdout, stderr) = cli(&base, None, &["publish", "t", "last"]).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert_eq!(delivery(&mut c).await.data, "\"last\"");
    assert_eq!(cli(&base, None, &["drain"]).await.0, 0);
    c.expect_error("server_shutdown").await;
    c.expect_closed().await;
    let mut status = None;
    wait_until("the server to exit", || {
        status = child.0.try_wait().expect("wait");
        status.is_some()
    })
    .await;
    assert!(
        status.is_some_and(|s| s.success()),
        "exit status {status:?}"
    );
}

/// Opts `c` in to offsets (X1) and subscribes it to `topic`; returns the epoch.
async fn subscribe_with_offsets(c: &mut Client, topic: &str) -> String {
    c.send(ClientMessage::Options {
        offsets: Some(true),
    })
    .await;
    assert_eq!(c.recv().await, ServerMessage::Ack);
    c.send(ClientMessage::Subscribe(topic.to_owned())).await;
    match c.recv().await {
        ServerMessage::Subscribed { epoch, .. } => epoch,
        other => panic!("expected subscribed, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_detached_sessions_and_resume_counters() {
    let server = TestServer::start_with(admin_config(None)).await;
    let admin = Admin::new(&server, None);
    let mut c = Client::connect(server.addr()).await;
    let epoch = subscribe_with_offsets(&mut c, "a/b").await;
    for i in 1..=5 {
        publish(server.addr(), "a/b", &i.to_string(), &i.to_string()).await;
    }
    for _ in 1..=5 {
        delivery(&mut c).await;
    }

    // The stream and a page of its history; the topic's `/` encoded.
    let page = admin.get("/topics/a%2Fb/history?since=2&limit=2").await;
    assert_eq!(page.status, 200, "{}", page.body);
    let page = page.json();
    assert_eq!(page["epoch"], json!(epoch));
    assert_eq!(
        (&page["first"], &page["last"], &page["count"]),
        (&json!(1), &json!(5), &json!(5))
    );
    assert!(page["bytes"].as_u64().unwrap() > 0);
    let offsets: Vec<_> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["offset"].clone(), m["delivery"]["offset"].clone()))
        .collect();
    assert_eq!(offsets, [(json!(3), json!(3)), (json!(4), json!(4))]);
    assert_eq!(page["next"], json!(4));
    let last = admin.get("/topics/a%2Fb/history?since=4").await.json();
    assert_eq!(last["messages"][0]["delivery"]["message_id"], json!("5"));
    assert_eq!(last["next"], Value::Null);
    // Without the literal suffix, it is the topic; unknown topics are 404.
    assert_eq!(admin.get("/topics/a%2Fb").await.json()["subscribers"], 1);
    let missing = admin.get("/topics/nope/history").await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()["error"], "unknown_topic");
    let text = ok(cli(
        &base_url(&server),
        None,
        &["history", "a/b", "--since", "3"],
    )
    .await);
    assert!(
        text.contains(&format!("epoch {epoch}, offsets 1..=5")),
        "{text}"
    );
    assert!(text.contains("\"message_id\":\"5\""), "{text}");

    // A lost connection leaves a detached session with its expiry.
    let token = c.token.clone();
    c.lose();
    let path = format!("/sessions/{token}");
    wait_until_async("the session to show as detached", || async {
        admin.get(&path).await.json()["state"] == "detached"
    })
    .await;
    let info = admin.get(&path).await.json();
    assert!(info["expires_in_ms"].as_u64().unwrap() <= 60_000, "{info}");
    let listing = ok(cli(&base_url(&server), None, &["sessions"]).await);
    assert!(listing.contains("detached"), "{listing}");

    // Two missed, then a resume from offset 5 replays them.
    for i in 6..=7 {
        publish(server.addr(), "a/b", &i.to_string(), &i.to_string()).await;
    }
    let mut c = Client::connect(server.addr()).await;
    c.send(ClientMessage::Resume(janus_core::Resume::Positions {
        token: token.clone(),
        topics: vec![janus_core::TopicPosition {
            topic: "a/b".into(),
            epoch,
            offset: 5,
        }],
    }))
    .await;
    assert!(matches!(
        c.recv().await,
        ServerMessage::Resumed {
            recovered: true,
            missed: 2,
            ..
        }
    ));
    let mut unknown = Client::connect(server.addr()).await;
    unknown
        .send(ClientMessage::Resume(janus_core::Resume::Token(
            "0".repeat(32),
        )))
        .await;
    unknown.expect_error("unknown_session").await;
    assert_eq!(admin.get(&path).await.json()["state"], "attached");

    let status = admin.get("/status").await.json();
    let resume = &status["resume"];
    assert_eq!(
        (
            &resume["attempted"],
            &resume["recovered"],
            &resume["unknown_session"],
            &resume["replayed"]
        ),
        (&json!(2), &json!(1), &json!(1), &json!(2)),
        "{status}"
    );
    assert_eq!(status["history"]["entries"], 7);
    assert_eq!(status["history"]["size"], 6000);
    let metrics = admin.get("/metrics").await.body;
    for line in [
        "janus_resumes_total{outcome=\"recovered\"} 1",
        "janus_resumes_total{outcome=\"unknown_session\"} 1",
        "janus_messages_replayed_total 2",
        "janus_history_entries 7",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in\n{metrics}");
    }
    assert!(metrics.contains("janus_history_bytes "), "{metrics}");
    let summary = ok(cli(&base_url(&server), None, &["status"]).await);
    assert!(summary.contains("1 recovered"), "{summary}");
    server.stop().await;
}
