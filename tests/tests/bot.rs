//! `janus-bot` end to end: real runs against in-process servers, with local
//! worker processes and with agent processes, every run mode (many topics,
//! never-reading clients, churn, soak), the publish forms, and every way a
//! run can fail with its exit status (0 ok, 1 failed, 2 usage, 3
//! unreachable): refused connections, malformed frames, a server or an
//! agent that dies, an agent that never answers.
//!
//! Sizes are small (tens to a few hundred clients) so each test takes
//! seconds; every wait has a deadline.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;

use janus_core::ServerMessage;
use janus_tests::redis_server::RedisServer;
use janus_tests::{cargo_bin, test_config, wait_until, Client, TestServer, TIMEOUT};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

/// What a finished bot process left behind.
struct Finished {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl std::fmt::Debug for Finished {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

fn bot() -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(cargo_bin("janus-bot"));
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// Runs `janus-bot ARGS` to completion.
async fn run_bot(args: &[&str]) -> Finished {
    let out = tokio::time::timeout(2 * TIMEOUT, bot().args(args).output())
        .await
        .expect("janus-bot finished in time")
        .expect("janus-bot started");
    Finished {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A bot run in progress whose stderr is read line by line.
struct Running {
    child: tokio::process::Child,
    stderr: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStderr>>,
    seen: String,
}

impl Running {
    fn start(args: &[&str]) -> Running {
        let mut child = bot().args(args).spawn().expect("janus-bot started");
        let stderr = child.stderr.take().expect("stderr");
        Running {
            child,
            stderr: tokio::io::BufReader::new(stderr).lines(),
            seen: String::new(),
        }
    }

    /// Reads stderr until a line contains `needle`.
    async fn wait_for(&mut self, needle: &str) {
        let found = tokio::time::timeout(TIMEOUT, async {
            while let Ok(Some(line)) = self.stderr.next_line().await {
                self.seen.push_str(&line);
                self.seen.push('\n');
                if line.contains(needle) {
                    return true;
                }
            }
            false
        })
        .await;
        assert_eq!(found, Ok(true), "no {needle:?} in stderr:\n{}", self.seen);
    }

    async fn finish(mut self) -> Finished {
        let rest = tokio::time::timeout(TIMEOUT, async {
            while let Ok(Some(line)) = self.stderr.next_line().await {
                self.seen.push_str(&line);
                self.seen.push('\n');
            }
            self.child.wait_with_output().await
        })
        .await
        .expect("janus-bot finished in time")
        .expect("janus-bot output");
        Finished {
            code: rest.status.code(),
            stdout: String::from_utf8_lossy(&rest.stdout).into_owned(),
            stderr: self.seen,
        }
    }
}

/// An agent process, killed when dropped.
struct Agent {
    child: Child,
    addr: SocketAddr,
}

impl Agent {
    /// Starts `janus-bot agent --listen 127.0.0.1:0` and reads its address.
    fn start() -> Agent {
        let mut child = Command::new(cargo_bin("janus-bot"))
            .args(["agent", "--listen", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("agent started");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(TIMEOUT).expect("agent printed its address");
        let addr = line
            .trim()
            .parse()
            .expect("first line is the bound address");
        Agent { child, addr }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A fresh path in the temp directory.
fn temp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("janus-bot-e2e-{}-{name}", std::process::id()))
}

fn read_json(path: &PathBuf) -> Value {
    let text = std::fs::read_to_string(path).expect("JSON report written");
    let _ = std::fs::remove_file(path);
    serde_json::from_str(&text).expect("JSON report parses")
}

/// A port on which nothing listens (bound, then released).
fn dead_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_reports_every_delivery() {
    let server = TestServer::start().await;
    let addr = server.addr().to_string();
    let json = temp("run.json");
    let svg = temp("run.svg");
    let done = run_bot(&[
        "run",
        "--target",
        &addr,
        "--clients",
        "120",
        "--messages",
        "3",
        "--rate",
        "50",
        "--json",
        json.to_str().unwrap(),
        "--plot",
        svg.to_str().unwrap(),
        "--progress",
        "none",
    ])
    .await;
    assert_eq!(done.code, Some(0), "{done:?}");
    for needle in [
        "p99.9",
        "every expected delivery arrived",
        "CPU-s per million",
    ] {
        assert!(done.stdout.contains(needle), "{needle:?} missing: {done:?}");
    }
    let v = read_json(&json);
    assert_eq!(v["clients"], 120);
    assert_eq!(v["subscribed"], 120);
    assert_eq!(v["clients_good"], 120);
    assert_eq!(v["deliveries_expected"], 360);
    assert_eq!(v["deliveries_received"], 360);
    assert_eq!(v["success"], true);
    assert!(v["setup_s"].as_f64().unwrap() > 0.0);
    let lat = &v["latency_ms"];
    let keys = ["min", "p50", "p90", "p99", "p999", "max"];
    let values: Vec<f64> = keys.iter().map(|k| lat[k].as_f64().unwrap()).collect();
    assert!(values.windows(2).all(|w| w[0] <= w[1]), "{lat}");
    assert_eq!(lat["count"], 360);
    assert_eq!(v["span_ms"]["count"], 3);
    assert!(v["span_ms"]["max"].as_f64().unwrap() <= values[5] + 0.01);
    assert!(v["histogram"].as_str().unwrap().starts_with("HISTF"));
    assert_eq!(v["spans"].as_array().unwrap().len(), 3);
    // The server agrees: three publishes, 360 deliveries written.
    let stats = &server.shared().stats;
    wait_until("server counted every delivery", || {
        stats.deliveries_sent.load(Ordering::Relaxed) == 360
    })
    .await;
    assert_eq!(stats.messages_published.load(Ordering::Relaxed), 3);
    let plot = std::fs::read_to_string(&svg).expect("SVG written");
    let _ = std::fs::remove_file(&svg);
    assert!(plot.starts_with("<svg"), "{}", &plot[..plot.len().min(80)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_spread_over_targets_and_workers() {
    let a = TestServer::start().await;
    let b = TestServer::start().await;
    let targets = format!("{},{}", a.addr(), b.addr());
    let json = temp("spread.json");
    let done = run_bot(&[
        "run",
        "--target",
        &targets,
        "--clients",
        "150",
        "--messages",
        "2",
        "--rate",
        "100",
        "--workers",
        "2",
        "--publish-mode",
        "persistent",
        "--json",
        json.to_str().unwrap(),
        "--progress",
        "none",
    ])
    .await;
    assert_eq!(done.code, Some(0), "{done:?}");
    let v = read_json(&json);
    assert_eq!(v["workers"], 2);
    assert_eq!(v["targets"].as_array().unwrap().len(), 2);
    assert_eq!(v["deliveries_received"], 300);
    assert_eq!(v["publish_mode"], "persistent");
    // Each server had half the clients, and each message was published to both.
    for (server, clients) in [(&a, 75), (&b, 75)] {
        let stats = &server.shared().stats;
        wait_until("server counted its deliveries", || {
            stats.deliveries_sent.load(Ordering::Relaxed) == 2 * clients
        })
        .await;
        assert_eq!(stats.messages_published.load(Ordering::Relaxed), 2);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_agents_measure_and_report_clock_offsets() {
    let server = TestServer::start().await;
    let (a1, a2) = (Agent::start(), Agent::start());
    let agents = format!("{},{}", a1.addr, a2.addr);
    let json = temp("agents.json");
    let done = run_bot(&[
        "run",
        "--target",
        &server.addr().to_string(),
        "--agents",
        &agents,
        "--clients",
        "101",
        "--messages",
        "2",
        "--rate",
        "100",
        "--json",
        json.to_str().unwrap(),
        "--progress",
        "none",
    ])
    .await;
    assert_eq!(done.code, Some(0), "{done:?}");
    assert!(done.stdout.contains("clock offset"), "{done:?}");
    let v = read_json(&json);
    assert_eq!(v["deliveries_received"], 202);
    let clocks = v["agents"].as_array().unwrap();
    assert_eq!(clocks.len(), 2);
    for c in clocks {
        // Same machine: the measured offset is within its own uncertainty
        // (plus a little slack for scheduling).
        let offset = c["offset_ms"].as_f64().unwrap();
        let uncertainty = c["uncertainty_ms"].as_f64().unwrap();
        assert!(offset.abs() <= uncertainty + 1.0, "{c}");
        assert_eq!(c["probes"], 20);
    }
    assert!(v["latency_method"].as_str().unwrap().contains("offset"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_dies_fails_the_run() {
    let server = TestServer::start().await;
    let mut agent = Agent::start();
    let mut run = Running::start(&[
        "run",
        "--target",
        &server.addr().to_string(),
        "--agents",
        &agent.addr.to_string(),
        "--clients",
        "50",
        "--messages",
        "1000",
        "--rate",
        "20",
        "--timeout",
        "5s",
        "--progress",
        "plain",
    ]);
    run.wait_for("barrier:").await;
    agent.kill();
    let done = run.finish().await;
    // The run was made and failed: 1.
    assert_eq!(done.code, Some(1), "{done:?}");
    assert!(
        done.stderr.contains(&format!("agent {}", agent.addr)),
        "{done:?}"
    );
}

#[tokio::test]
async fn an_agent_that_never_answers_fails_the_run() {
    // Accepts connections and never says anything.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let done = run_bot(&[
        "run",
        "--target",
        "127.0.0.1:9",
        "--agents",
        &addr.to_string(),
        "--clients",
        "10",
        "--timeout",
        "1s",
        "--progress",
        "none",
    ])
    .await;
    holder.abort();
    // It accepted the connection, so it was reached: the run failed (1).
    assert_eq!(done.code, Some(1), "{done:?}");
    assert!(
        done.stderr.contains("did not answer a clock ping"),
        "{done:?}"
    );
}

#[tokio::test]
async fn an_unreachable_agent_exits_3() {
    let done = run_bot(&[
        "run",
        "--target",
        "127.0.0.1:9",
        "--agents",
        &dead_port().to_string(),
        "--clients",
        "10",
        "--timeout",
        "2s",
        "--progress",
        "none",
    ])
    .await;
    assert_eq!(done.code, Some(3), "{done:?}");
    assert!(done.stderr.contains("connecting to agent"), "{done:?}");
}

#[tokio::test]
async fn a_refusing_target_exits_3_and_says_why() {
    let addr = dead_port().to_string();
    let done = run_bot(&[
        "run",
        "--target",
        &addr,
        "--clients",
        "20",
        "--progress",
        "none",
    ])
    .await;
    assert_eq!(done.code, Some(3), "{done:?}");
    assert!(done.stderr.contains(&addr), "{done:?}");
    assert!(done.stderr.contains("Connection refused"), "{done:?}");
    assert!(done.stderr.contains("20 clients"), "{done:?}");
}

/// A Janus hello (P2), as a fake server sends it.
const HELLO: &[u8] =
    b"{\"timestamp\":[1764,471234,56789],\"token\":\"0123456789abcdef0123456789abcdef\"}\x01";

#[tokio::test]
async fn a_malformed_server_frame_is_reported() {
    // A server that greets like Janus, then answers the subscribe with
    // garbage. (Garbage instead of the hello is not a Janus server at all:
    // see a_target_that_does_not_greet_like_janus_exits_3.)
    let fake = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = fake.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut s, _)) = fake.accept().await {
            let _ = s.write_all(HELLO).await;
            let mut request = [0u8; 256];
            let _ = tokio::io::AsyncReadExt::read(&mut s, &mut request).await;
            let _ = s.write_all(b"this is not an ACK\x01").await;
            held.push(s);
        }
    });
    let done = run_bot(&[
        "run",
        "--target",
        &addr.to_string(),
        "--clients",
        "5",
        "--timeout",
        "2s",
        "--progress",
        "none",
    ])
    .await;
    server.abort();
    // It connected, and the server misbehaved: the run failed (1).
    assert_eq!(done.code, Some(1), "{done:?}");
    assert!(done.stderr.contains("malformed server frame"), "{done:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_dies_mid_run_fails_the_run() {
    let server = TestServer::start().await;
    let addr = server.addr().to_string();
    let mut run = Running::start(&[
        "run",
        "--target",
        &addr,
        "--clients",
        "40",
        "--messages",
        "1000",
        "--rate",
        "20",
        "--timeout",
        "2s",
        "--progress",
        "plain",
    ]);
    run.wait_for("barrier:").await;
    server.stop().await;
    let done = run.finish().await;
    assert_eq!(done.code, Some(1), "{done:?}");
    assert!(done.stdout.contains("disconnected 40"), "{done:?}");
    assert!(done.stdout.contains("result: FAILED"), "{done:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_reaches_a_subscriber() {
    let server = TestServer::start().await;
    let mut sub = Client::connect(server.addr()).await;
    sub.subscribe("news").await;
    let target = server.addr().to_string();
    // TOPIC DATA, like `janus-admin publish`: JSON when it parses…
    let done = run_bot(&[
        "publish",
        "news",
        "{\"k\":[1,2]}",
        "--target",
        &target,
        "--event",
        "e",
        "--message-id",
        "7",
    ])
    .await;
    assert_eq!(done.code, Some(0), "{done:?}");
    match sub.recv().await {
        ServerMessage::Delivery(d) => {
            assert_eq!(d.topic, "news");
            assert_eq!(d.event, "e");
            assert_eq!(d.message_id, "7");
            assert_eq!(d.data, "{\"k\":[1,2]}");
        }
        other => panic!("expected a delivery, got {other:?}"),
    }
    // … otherwise a string, and always a string with --string.
    for (args, data) in [
        (&["news", "{nope"][..], "\"{nope\""),
        (&["news", "42", "--string"][..], "\"42\""),
    ] {
        let mut all = vec![
            "publish",
            "--target",
            &target,
            "--publish-mode",
            "persistent",
        ];
        all.extend_from_slice(args);
        let done = run_bot(&all).await;
        assert_eq!(done.code, Some(0), "{done:?}");
        match sub.recv().await {
            ServerMessage::Delivery(d) => assert_eq!(d.data, data),
            other => panic!("expected a delivery, got {other:?}"),
        }
    }
    // A topic the protocol refuses is a usage error (2) and never sent.
    let bad = run_bot(&["publish", "--target", &target, "", "1"]).await;
    assert_eq!(bad.code, Some(2), "{bad:?}");
    assert!(bad.stderr.contains("bad message"), "{bad:?}");
}

/// What the 2009 form puts on the wire, seen by a listener that records
/// every byte and never writes first.
#[tokio::test]
async fn publish_in_the_2009_form_writes_no_nul_and_closes_at_once() {
    use tokio::io::AsyncReadExt;
    let fake = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = fake.local_addr().unwrap();
    let recorder = tokio::spawn(async move {
        let (mut s, _) = fake.accept().await.unwrap();
        // A hello the bot must not wait for.
        let _ = s
            .write_all(b"{\"timestamp\":[1,2,3],\"token\":\"ab\"}\x01")
            .await;
        let mut got = Vec::new();
        // End of stream or a reset: either way the publisher is gone.
        let _ = s.read_to_end(&mut got).await;
        got
    });
    let done = run_bot(&[
        "publish",
        "news",
        "{\"a\":1}",
        "--target",
        &addr.to_string(),
        "--publish-form",
        "2009",
        "--message-id",
        "1",
    ])
    .await;
    assert_eq!(done.code, Some(0), "{done:?}");
    let got = tokio::time::timeout(TIMEOUT, recorder)
        .await
        .expect("the bot closed its connection")
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&got),
        "<regular-socket/>\0PUBLISH\0{\"topic\":\"news\",\"event\":\"\",\"message_id\":\"1\",\"data\":{\"a\":1}}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_topics_count_each_subscription() {
    let server = TestServer::start().await;
    let json = temp("topics.json");
    let done = run_bot(&[
        "run",
        "--target",
        &server.addr().to_string(),
        "--clients",
        "60",
        "--topics",
        "6",
        "--subscriptions",
        "2",
        "--messages",
        "12",
        "--rate",
        "100",
        "--json",
        json.to_str().unwrap(),
        "--progress",
        "none",
    ])
    .await;
    assert_eq!(done.code, Some(0), "{done:?}");
    let v = read_json(&json);
    // 12 messages over 6 topics: 2 each; every client takes 2 topics.
    assert_eq!(v["deliveries_expected"], 60 * 2 * 2);
    assert_eq!(v["deliveries_received"], 240);
    assert_eq!(v["clients_good"], 60);
    assert_eq!(v["topics"], 6);
    let stats = &server.shared().stats;
    wait_until("server counted every delivery", || {
        stats.deliveries_sent.load(Ordering::Relaxed) == 240
    })
    .await;
}

/// `janus-bot resume` against `server`: 40 clients on 2 of 4 topics each,
/// a quarter of them dropping their connection and resuming (`more`: extra
/// flags).
async fn resume_run(
    server: &TestServer,
    json: &std::path::Path,
    timeout: &str,
    more: &[&str],
) -> Finished {
    let target = server.addr().to_string();
    let mut args = vec![
        "resume",
        "--timeout",
        timeout,
        "--target",
        &target,
        "--clients",
        "40",
        "--topics",
        "4",
        "--subscriptions",
        "2",
        "--messages",
        "40",
        "--rate",
        "200",
        "--resume-percent",
        "25",
        "--away",
        "50ms",
        "--json",
        json.to_str().expect("UTF-8 path"),
        "--progress",
        "none",
    ];
    args.extend_from_slice(more);
    run_bot(&args).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resuming_clients_miss_nothing_and_repeat_nothing() {
    let server = TestServer::start().await;
    let json = temp("resume.json");
    let done = resume_run(&server, &json, "10s", &[]).await;
    assert_eq!(done.code, Some(0), "{done:?}");
    let v = read_json(&json);
    // 40 messages over 4 topics: 10 each; every client takes 2 topics.
    assert_eq!(v["deliveries_expected"], 40 * 2 * 10);
    assert_eq!(v["deliveries_received"], 800);
    assert_eq!((&v["duplicates"], &v["reordered"]), (&json!(0), &json!(0)));
    assert_eq!(v["clients_good"], 40);
    let r = &v["resume"];
    assert_eq!(
        (
            &r["clients"],
            &r["recovered"],
            &r["not_recovered"],
            &r["failed"]
        ),
        (&json!(10), &json!(10), &json!(0), &json!(0)),
        "{r}"
    );
    assert!(r["replayed"].as_u64().unwrap() > 0, "{r}");
    assert_eq!(r["resume_time_ms"]["count"], 10, "{r}");
    assert!(done.stdout.contains("10 recovered"), "{done:?}");
    let stats = &server.shared().stats;
    assert_eq!(stats.resumes_recovered.load(Ordering::Relaxed), 10);
    assert_eq!(
        stats.messages_replayed.load(Ordering::Relaxed),
        r["replayed"].as_u64().unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_the_history_cannot_serve_fails_the_run() {
    let server = TestServer::start_with(janus_server::Config {
        history_size: 1,
        ..test_config()
    })
    .await;
    let json = temp("resume-short.json");
    // Those not recovered miss messages for good: no need to wait long for them.
    let done = resume_run(&server, &json, "1s", &[]).await;
    assert_eq!(done.code, Some(1), "{done:?}");
    let r = &read_json(&json)["resume"];
    assert!(r["not_recovered"].as_u64().unwrap() > 0, "{r}");
    assert!(done.stdout.contains("result: FAILED"), "{done:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resuming_clients_can_resume_on_another_node_of_the_cluster() {
    let redis = RedisServer::start().await;
    let (a, b) = (
        TestServer::start_node(&redis.url(), "a").await,
        TestServer::start_node(&redis.url(), "b").await,
    );
    let json = temp("resume-elsewhere.json");
    let elsewhere = b.addr().to_string();
    let done = resume_run(&a, &json, "10s", &["--resume-target", &elsewhere]).await;
    assert_eq!(done.code, Some(0), "{done:?}");
    let v = read_json(&json);
    assert_eq!(v["deliveries_received"], 800);
    assert_eq!((&v["duplicates"], &v["reordered"]), (&json!(0), &json!(0)));
    let r = &v["resume"];
    assert_eq!(
        (&r["recovered"], &r["failed"]),
        (&json!(10), &json!(0)),
        "{r}"
    );
    assert_eq!(r["resumed_on"], json!(elsewhere));
    assert!(
        done.stdout.contains(&format!("resuming on {elsewhere}")),
        "{done:?}"
    );
    // The resumes were answered by B, not by the node the clients left.
    let recovered = |s: &TestServer| s.shared().stats.resumes_recovered.load(Ordering::Relaxed);
    assert_eq!((recovered(&a), recovered(&b)), (0, 10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_target_over_websocket_is_a_usage_error() {
    let bad = run_bot(&[
        "resume",
        "--target",
        "127.0.0.1:9",
        "--transport",
        "ws",
        "--ws-target",
        "127.0.0.1:9",
        "--resume-target",
        "127.0.0.1:9",
    ])
    .await;
    assert_eq!(bad.code, Some(2), "{bad:?}");
    assert!(bad.stderr.contains("--resume-target"), "{bad:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_reading_clients_are_read_at_the_end() {
    let server = TestServer::start().await;
    let json = temp("never.json");
    let done = run_bot(&[
        "run",
        "--target",
        &server.addr().to_string(),
        "--clients",
        "20",
        "--never-read-percent",
        "25",
        "--messages",
        "30",
        "--rate",
        "200",
        "--json",
        json.to_str().unwrap(),
        "--progress",
        "none",
    ])
    .await;
    assert_eq!(done.code, Some(0), "{done:?}");
    let v = read_json(&json);
    // The 15 readers are the measurement; the 5 others are read at the end
    // and, with so little data, got everything without being cut.
    assert_eq!(v["deliveries_expected"], 15 * 30);
    assert_eq!(v["deliveries_received"], 15 * 30);
    let n = &v["never_read"];
    assert_eq!(n["clients"], 5, "{n}");
    assert_eq!(n["complete"], 5, "{n}");
    assert_eq!(n["cut"], 0, "{n}");
    assert!(
        done.stdout.contains("never-reading clients: 5 subscribed"),
        "{done:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_cycles_clients_and_watches_memory() {
    // No resumable sessions and no history: when the bot is gone, nothing of
    // it may stay.
    let server = TestServer::start_with(janus_server::Config {
        session_ttl: std::time::Duration::ZERO,
        history_size: 0,
        ..janus_tests::test_config()
    })
    .await;
    let json = temp("churn.json");
    // The server runs in this test process: its memory is ours.
    let pid = std::process::id().to_string();
    let done = run_bot(&[
        "churn",
        "--target",
        &server.addr().to_string(),
        "--clients",
        "30",
        "--topics",
        "3",
        "--churners",
        "10",
        "--warmup",
        "1s",
        "--duration",
        "2s",
        "--rate",
        "20",
        "--settle",
        "1s",
        "--server-pid",
        &pid,
        "--json",
        json.to_str().unwrap(),
        "--progress",
        "none",
    ])
    .await;
    assert_eq!(done.code, Some(0), "{done:?}");
    let v = read_json(&json);
    assert_eq!(v["messages"], 40, "2 s at 20/s");
    assert_eq!(v["deliveries_received"], v["deliveries_expected"]);
    let churn = &v["activity"]["churner"];
    assert_eq!(churn["clients"], 10, "{churn}");
    assert!(churn["cycles"].as_u64().unwrap() >= 10, "{churn}");
    assert_eq!(churn["failures"], 0, "{churn}");
    let rss = &v["server_rss"];
    assert!(rss["reference_mib"].as_f64().unwrap() > 0.0, "{rss}");
    assert!(rss["end_mib"].as_f64().unwrap() > 0.0, "{rss}");
    // The bot has exited: the server forgets every client and topic.
    let shared = server.shared();
    wait_until("every client and topic forgotten", || {
        shared.stats.connections.load(Ordering::Relaxed) == 0 && shared.topics.topic_count() == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_soak_runs_every_hostile_kind() {
    let server = TestServer::start().await;
    let json = temp("soak.json");
    let done = run_bot(&[
        "soak",
        "--target",
        &server.addr().to_string(),
        "--clients",
        "5",
        "--churners",
        "5",
        "--stuck",
        "3",
        "--flooders",
        "2",
        "--tricklers",
        "3",
        "--oversized",
        "2",
        "--warmup",
        "0s",
        "--duration",
        "3s",
        "--rate",
        "10",
        "--hostile-hold",
        "1s",
        "--trickle-interval",
        "200ms",
        "--json",
        json.to_str().unwrap(),
        "--progress",
        "none",
    ])
    .await;
    assert_eq!(done.code, Some(0), "canaries got everything: {done:?}");
    let v = read_json(&json);
    let a = &v["activity"];
    for role in ["churner", "stuck", "flooder", "trickler", "oversized"] {
        assert!(a[role]["connections"].as_u64().unwrap() >= 1, "{role}: {a}");
    }
    assert!(a["flooder"]["bytes_sent"].as_u64().unwrap() > 0, "{a}");
    assert!(a["trickler"]["bytes_sent"].as_u64().unwrap() > 0, "{a}");
    // The server answers a frame past its limit with frame_too_large.
    assert!(
        a["oversized"]["error_frames"]["frame_too_large"]
            .as_u64()
            .unwrap()
            >= 1,
        "{a}"
    );
    assert!(done.stdout.contains("background trickler"), "{done:?}");
}

#[tokio::test]
async fn publish_to_nothing_exits_3() {
    let addr = dead_port().to_string();
    let done = run_bot(&["publish", "t", "1", "--target", &addr, "--timeout", "2s"]).await;
    assert_eq!(done.code, Some(3), "{done:?}");
    assert!(done.stderr.contains("Connection refused"), "{done:?}");
}

/// A WebSocket client names the address it connects to in its handshake's
/// `Host` header (RFC 6455 4.1), as a proxy or virtual host in front of the
/// server expects.
#[tokio::test]
async fn a_websocket_handshake_names_the_host_it_connects_to() {
    // The publisher's server (TCP); the subscriber goes to the fake one.
    let janus = TestServer::start().await;
    let fake = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = fake.local_addr().unwrap();
    let (tx, mut requests) = tokio::sync::mpsc::unbounded_channel::<String>();
    let server = tokio::spawn(async move {
        while let Ok((s, _)) = fake.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut lines = tokio::io::BufReader::new(s).lines();
                let mut request = String::new();
                while let Ok(Some(line)) = lines.next_line().await {
                    if line.is_empty() {
                        break;
                    }
                    request.push_str(&line);
                    request.push('\n');
                }
                let _ = tx.send(request);
                // Dropped: the handshake fails, which ends the run.
            });
        }
    });
    let done = run_bot(&[
        "run",
        "--target",
        &janus.addr().to_string(),
        "--transport",
        "ws",
        "--ws-target",
        &addr.to_string(),
        "--clients",
        "1",
        "--timeout",
        "2s",
        "--progress",
        "none",
    ])
    .await;
    server.abort();
    let request = requests.recv().await.expect("the bot sent a handshake");
    assert!(
        request.starts_with("GET "),
        "not a WebSocket handshake: {request:?}\n{done:?}"
    );
    let host = request
        .lines()
        .find_map(|l| {
            l.strip_prefix("Host: ")
                .or_else(|| l.strip_prefix("host: "))
        })
        .unwrap_or_else(|| panic!("no Host header in {request:?}"));
    assert_eq!(host, addr.to_string(), "{request:?}");
    assert_ne!(done.code, Some(0), "{done:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_subscribers_are_measured_like_tcp_ones() {
    let server = TestServer::start_with(janus_server::Config {
        ws_listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        ..janus_tests::test_config()
    })
    .await;
    let ws = server.shared().ws_addr().expect("WebSocket listener");
    let json = temp("ws.json");
    let done = run_bot(&[
        "run",
        "--target",
        &server.addr().to_string(),
        "--transport",
        "ws",
        "--ws-target",
        &ws.to_string(),
        "--clients",
        "100",
        "--never-read-percent",
        "10",
        "--messages",
        "5",
        "--rate",
        "100",
        "--json",
        json.to_str().unwrap(),
        "--progress",
        "none",
    ])
    .await;
    assert_eq!(done.code, Some(0), "{done:?}");
    let v = read_json(&json);
    assert_eq!(v["subscribed"], 100, "{v}");
    assert_eq!(v["deliveries_expected"], 90 * 5);
    assert_eq!(v["deliveries_received"], 90 * 5);
    assert_eq!(v["never_read"]["complete"], 10, "{v}");
    let stats = &server.shared().stats;
    assert_eq!(stats.websocket_total.load(Ordering::Relaxed), 100);
    wait_until("server counted every delivery", || {
        stats.deliveries_sent.load(Ordering::Relaxed) == 100 * 5
    })
    .await;
    let done = run_bot(&[
        "run",
        "--target",
        "127.0.0.1:1",
        "--transport",
        "ws",
        "--clients",
        "1",
    ])
    .await;
    assert_eq!(
        done.code,
        Some(2),
        "a WebSocket run needs --ws-target: {done:?}"
    );
}

/// A fake server on loopback that treats every connection with `greet`
/// (what it writes first; empty: nothing) and holds it open.
async fn fake_server(greet: &'static [u8]) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let fake = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = fake.local_addr().expect("bound address");
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut s, _)) = fake.accept().await {
            if !greet.is_empty() {
                let _ = s.write_all(greet).await;
            }
            held.push(s);
        }
    });
    (addr, task)
}

/// A target that is not a Janus client port is "not the service asked
/// for": exit 3 (like refused connections), saying it did not greet like a
/// Janus server, and what it looks like instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_that_does_not_greet_like_janus_exits_3() {
    // The server's own admin API: HTTP, silent until asked.
    let server = TestServer::start_with(janus_server::Config {
        admin_listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        ..test_config()
    })
    .await;
    let admin = server.shared().admin_addr().expect("admin API").to_string();
    let args = |target: &str| -> Vec<String> {
        [
            "run",
            "--target",
            target,
            "--clients",
            "3",
            "--timeout",
            "1s",
            "--progress",
            "none",
        ]
        .map(str::to_owned)
        .to_vec()
    };
    let run = |target: String| async move {
        let a = args(&target);
        run_bot(&a.iter().map(String::as_str).collect::<Vec<_>>()).await
    };
    let done = run(admin.clone()).await;
    assert_eq!(done.code, Some(3), "{done:?}");
    for needle in [
        admin.as_str(),
        "did not greet like a Janus server",
        "timed out waiting for the hello",
        "looks like an HTTP port",
        "admin API",
    ] {
        assert!(done.stderr.contains(needle), "{needle:?} missing: {done:?}");
    }

    // Any listener that never says a word.
    let (silent, task) = fake_server(b"").await;
    let done = run(silent.to_string()).await;
    task.abort();
    assert_eq!(done.code, Some(3), "{done:?}");
    assert!(
        done.stderr.contains("did not greet like a Janus server"),
        "{done:?}"
    );
    assert!(done.stderr.contains("says nothing"), "{done:?}");

    // One that greets with something else than a hello.
    let (other, task) = fake_server(b"SSH-2.0-OpenSSH_9.6\r\n").await;
    let done = run(other.to_string()).await;
    task.abort();
    assert_eq!(done.code, Some(3), "{done:?}");
    assert!(
        done.stderr.contains("did not greet like a Janus server"),
        "{done:?}"
    );
    assert!(done.stderr.contains("SSH-2.0"), "{done:?}");

    // A WebSocket target that is a plain TCP client port.
    let tcp = server.addr().to_string();
    let done = run_bot(&[
        "run",
        "--target",
        &tcp,
        "--transport",
        "ws",
        "--ws-target",
        &tcp,
        "--clients",
        "2",
        "--timeout",
        "1s",
        "--progress",
        "none",
    ])
    .await;
    assert_eq!(done.code, Some(3), "{done:?}");
    assert!(
        done.stderr
            .contains("did not answer like a Janus WebSocket port"),
        "{done:?}"
    );
    assert!(done.stderr.contains("not a WebSocket port"), "{done:?}");

    // A Janus server that greets is reached, whatever else goes wrong: an
    // error frame instead of the hello (a full server) is not exit 3.
    let (full, task) =
        fake_server(b"{\"timestamp\":[1,2,3],\"error\":\"not_allowed\",\"reason\":\"full\"}\x01")
            .await;
    let done = run(full.to_string()).await;
    task.abort();
    assert_eq!(done.code, Some(1), "{done:?}");
    assert!(done.stderr.contains("not_allowed"), "{done:?}");
}

/// Output paths are checked before anything is connected: a path that
/// cannot be written is a usage error (2) naming the flag, and the server
/// never sees a client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_paths_are_checked_before_the_run() {
    let server = TestServer::start().await;
    let addr = server.addr().to_string();
    let missing_dir = temp("no-such-dir").join("r.json");
    let missing = missing_dir.to_str().unwrap();
    let a_dir = std::env::temp_dir();
    let good = temp("good.json");
    let good_svg = temp("good.svg");
    for (flag, path, why) in [
        ("--json", missing, "does not exist"),
        ("--plot", missing, "does not exist"),
        ("--plot", a_dir.to_str().unwrap(), "is a directory"),
    ] {
        let done = run_bot(&[
            "run",
            "--target",
            &addr,
            "--clients",
            "5",
            "--json",
            if flag == "--json" {
                path
            } else {
                good.to_str().unwrap()
            },
            "--plot",
            if flag == "--plot" {
                path
            } else {
                good_svg.to_str().unwrap()
            },
            "--progress",
            "none",
        ])
        .await;
        assert_eq!(done.code, Some(2), "{flag} {path}: {done:?}");
        assert!(done.stderr.contains(flag), "{done:?}");
        assert!(done.stderr.contains(why), "{done:?}");
        assert!(!done.stdout.contains("result:"), "no run: {done:?}");
        // The good one of the pair is not left behind either.
        assert!(!good.exists() && !good_svg.exists(), "{done:?}");
    }
    for mode in ["churn", "soak", "resume"] {
        let done = run_bot(&[mode, "--target", &addr, "-n", "1", "--json", missing]).await;
        assert_eq!(done.code, Some(2), "{mode}: {done:?}");
        assert!(done.stderr.contains("--json"), "{mode}: {done:?}");
    }
    assert_eq!(
        server
            .shared()
            .stats
            .connections_total
            .load(Ordering::Relaxed),
        0,
        "nothing connected"
    );

    // A run that cannot be made leaves no empty report behind.
    let json = temp("refused.json");
    let done = run_bot(&[
        "run",
        "--target",
        &dead_port().to_string(),
        "--clients",
        "2",
        "--json",
        json.to_str().unwrap(),
        "--progress",
        "none",
    ])
    .await;
    assert_eq!(done.code, Some(3), "{done:?}");
    assert!(!json.exists(), "{done:?}");

    // janus-histo checks its outputs before reading anything, too.
    let histo = |args: &[&str]| {
        std::process::Command::new(cargo_bin("janus-histo"))
            .args(args)
            .output()
            .expect("janus-histo ran")
    };
    let input = temp("histo-input.json");
    std::fs::write(&input, "{\"histogram\": [[1000, 2]]}").unwrap();
    let input_s = input.to_str().unwrap();
    for (args, flag) in [
        (vec!["show", input_s, "--plot", missing], "--plot"),
        (vec!["merge", input_s, "-o", missing], "--output"),
        (vec!["merge", input_s, "--plot", missing], "--plot"),
    ] {
        let out = histo(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(flag), "{args:?}: {stderr}");
        assert!(stderr.contains("does not exist"), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "nothing shown first: {args:?}");
    }
    let _ = std::fs::remove_file(&input);
}

/// The line of `text` that starts (after spaces) with `label`.
fn figure_line<'a>(text: &'a str, label: &str) -> Option<&'a str> {
    text.lines()
        .map(str::trim_start)
        .find(|l| l.starts_with(label))
}

/// "Fan-out span" means publish → last subscriber in janus-bot's report,
/// its JSON and janus-histo alike; first → last is the "spread", labelled
/// apart. Older files (no publish instants) show a spread only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_span_means_the_same_in_bot_and_histo() {
    const FANOUT: &str = "fan-out span (publish → last subscriber)";
    const SPREAD: &str = "spread (first → last subscriber)";
    let server = TestServer::start().await;
    let json = temp("fanout.json");
    let done = run_bot(&[
        "run",
        "--target",
        &server.addr().to_string(),
        "--clients",
        "30",
        "--messages",
        "1",
        "--json",
        json.to_str().unwrap(),
        "--progress",
        "none",
    ])
    .await;
    assert_eq!(done.code, Some(0), "{done:?}");
    let show = std::process::Command::new(cargo_bin("janus-histo"))
        .args(["show", json.to_str().unwrap()])
        .output()
        .expect("janus-histo ran");
    assert!(show.status.success(), "{show:?}");
    let histo = String::from_utf8_lossy(&show.stdout).into_owned();
    let v = read_json(&json);

    // The bot: "LABEL over 1 message: min …, p50 …, p99 …, max X".
    let bot_max = |label: &str| {
        let line = figure_line(&done.stdout, label)
            .unwrap_or_else(|| panic!("no {label:?} line: {done:?}"));
        line.rsplit_once("max ").expect("a max").1.to_owned()
    };
    // janus-histo: "LABEL   MEDIAN   MAX".
    let histo_max = |label: &str| {
        let line =
            figure_line(&histo, label).unwrap_or_else(|| panic!("no {label:?} row:\n{histo}"));
        let cols: Vec<&str> = line[label.len()..].split_whitespace().collect();
        assert_eq!(cols.len(), 4, "{line:?}");
        format!("{} {}", cols[2], cols[3])
    };
    assert_eq!(bot_max(FANOUT), histo_max(FANOUT), "{done:?}\n{histo}");
    assert_eq!(bot_max(SPREAD), histo_max(SPREAD), "{done:?}\n{histo}");
    assert!(!histo.contains("fan-out span over"), "{histo}");

    // The JSON: span_ms (as before) is publish → last subscriber, the
    // largest latency of the message; spread_ms is first → last.
    let point = &v["spans"][0];
    let (fanout, spread) = (
        point["max_ms"].as_f64().unwrap(),
        point["span_ms"].as_f64().unwrap(),
    );
    assert_eq!(v["span_ms"]["max"].as_f64(), Some(fanout), "{v}");
    assert_eq!(v["spread_ms"]["max"].as_f64(), Some(spread), "{v}");
    assert!(spread <= fanout, "{v}");
    let latency_max = v["latency_ms"]["max"].as_f64().unwrap();
    assert!(
        (fanout - latency_max).abs() <= latency_max * 0.01 + 0.002,
        "{v}"
    );

    // A report without publish instants (an older janus-histo file): a
    // spread, never called a fan-out span.
    let old = temp("old-histo.json");
    std::fs::write(
        &old,
        serde_json::to_string(&json!({
            "title": "old",
            "histogram": v["histogram"],
            "spans": [{"message": 0, "span_ms": 0.663}],
        }))
        .unwrap(),
    )
    .unwrap();
    let show = std::process::Command::new(cargo_bin("janus-histo"))
        .args(["show", old.to_str().unwrap()])
        .output()
        .expect("janus-histo ran");
    let _ = std::fs::remove_file(&old);
    let text = String::from_utf8_lossy(&show.stdout);
    assert!(show.status.success(), "{show:?}");
    assert!(text.contains(SPREAD), "{text}");
    assert!(text.contains("663 µs"), "{text}");
    assert!(!text.contains("fan-out span"), "{text}");
}

/// `--server-pid` must name a process (2 otherwise); one that is not a
/// janus-server gets a warning naming what it is, and the run goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_pid_is_checked_and_a_stranger_is_named() {
    let server = TestServer::start().await;
    let addr = server.addr().to_string();
    let churn = |pid: String, target: String| async move {
        run_bot(&[
            "churn",
            "--target",
            &target,
            "--clients",
            "3",
            "--churners",
            "2",
            "--warmup",
            "0s",
            "--duration",
            "1s",
            "--rate",
            "5",
            "--settle",
            "0s",
            "--server-pid",
            &pid,
            "--progress",
            "none",
        ])
        .await
    };
    // No such process: a usage error, before anything runs.
    let done = churn(u32::MAX.to_string(), addr.clone()).await;
    assert_eq!(done.code, Some(2), "{done:?}");
    assert!(done.stderr.contains("--server-pid"), "{done:?}");
    assert!(done.stderr.contains("no such process"), "{done:?}");
    assert_eq!(
        server
            .shared()
            .stats
            .connections_total
            .load(Ordering::Relaxed),
        0
    );

    // A wrapper (here a `sleep`): a warning naming it, and the run.
    let mut sleeper = Command::new("sleep")
        .arg("60")
        .spawn()
        .expect("sleep started");
    let done = churn(sleeper.id().to_string(), addr).await;
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    assert_eq!(done.code, Some(0), "{done:?}");
    assert!(
        done.stderr.contains(&format!(
            "warning: --server-pid {} is \"sleep\"",
            sleeper.id()
        )),
        "{done:?}"
    );
    assert!(done.stderr.contains("not a janus-server"), "{done:?}");
    assert!(
        done.stdout.contains("\"sleep\": not a janus-server"),
        "the report says so too: {done:?}"
    );

    // The real thing: no warning.
    let real = janus_tests::ServerProcess::spawn(&[]);
    let done = churn(real.pid().to_string(), real.addr().to_string()).await;
    assert_eq!(done.code, Some(0), "{done:?}");
    assert!(!done.stderr.contains("warning"), "{done:?}");
}

/// Every flag with a default says it in --help (`[default: …]`), -m too.
#[tokio::test]
async fn help_states_every_default() {
    // Flags that take a value and have no default.
    const NO_DEFAULT: &[&str] = &[
        "--clients",
        "--ws-target",
        "--publish-key",
        "--json",
        "--plot",
        "--server-pid",
        "--listen",
    ];
    for mode in ["run", "churn", "soak", "resume", "publish", "agent"] {
        let help = run_bot(&[mode, "--help"]).await;
        assert_eq!(help.code, Some(0), "{help:?}");
        let text = help.stdout.split("Exit status:").next().unwrap_or("");
        // One block per option: its header line, then its indented help.
        let mut blocks: Vec<(String, String)> = Vec::new();
        for line in text.lines() {
            let indent = line.len() - line.trim_start().len();
            if (indent == 2 || indent == 6) && line.trim_start().starts_with('-') {
                blocks.push((line.trim().to_owned(), String::new()));
            } else if let Some((_, body)) = blocks.last_mut() {
                body.push_str(line);
                body.push('\n');
            }
        }
        assert!(blocks.len() >= 2, "{mode}: {text}");
        for (header, body) in &blocks {
            let takes_value = header.contains('<');
            let flag = header
                .split([',', ' '])
                .find(|w| w.starts_with("--"))
                .unwrap_or(header);
            if takes_value && !NO_DEFAULT.contains(&flag) {
                assert!(
                    body.contains("[default:"),
                    "{mode} {flag} does not state its default:\n{header}\n{body}"
                );
            }
        }
        if mode == "run" {
            let (_, messages) = blocks
                .iter()
                .find(|(h, _)| h.starts_with("-m, --messages"))
                .expect("-m in run --help");
            assert!(messages.contains("[default: 1"), "{messages}");
        }
    }
}

/// Ctrl-C (SIGINT to the terminal's process group) ends a run with 130 and
/// one line saying so and what was measured; its workers go too, and no
/// half report is left. An agent logs a line on SIGTERM and exits 143.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_run_says_what_it_had_measured() {
    let server = TestServer::start().await;
    let json = temp("interrupted.json");
    // Its own process group, as a command started from a shell is: Ctrl-C
    // signals the whole group.
    let mut cmd = bot();
    cmd.process_group(0).args([
        "run",
        "--target",
        &server.addr().to_string(),
        "--clients",
        "20",
        "--messages",
        "1000",
        "--rate",
        "20",
        "--json",
        json.to_str().unwrap(),
        "--progress",
        "plain",
    ]);
    let mut child = cmd.spawn().expect("janus-bot started");
    let pid = child.id().expect("pid");
    let stderr = child.stderr.take().expect("stderr");
    let mut run = Running {
        child,
        stderr: tokio::io::BufReader::new(stderr).lines(),
        seen: String::new(),
    };
    run.wait_for("run: delivered").await;
    let stats = &server.shared().stats;
    assert!(stats.deliveries_sent.load(Ordering::Relaxed) > 0);
    let kill = Command::new("kill")
        .args(["-INT", "--", &format!("-{pid}")])
        .status()
        .expect("kill ran");
    assert!(kill.success());
    let done = run.finish().await;
    assert_eq!(done.code, Some(130), "{done:?}");
    assert!(
        done.stderr
            .contains("interrupted by SIGINT (Ctrl-C) while publishing"),
        "{done:?}"
    );
    assert!(
        done.stderr.contains("20 of 20 clients subscribed"),
        "{done:?}"
    );
    assert!(done.stderr.contains("deliveries received"), "{done:?}");
    assert!(!json.exists(), "no half report: {done:?}");
    // Its workers are gone with it: every client connection closes.
    wait_until("the workers' clients closed", || {
        stats.connections.load(Ordering::Relaxed) == 0
    })
    .await;

    // The agent, on SIGTERM.
    let mut agent = Command::new(cargo_bin("janus-bot"))
        .args(["agent", "--listen", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("agent started");
    let mut line = String::new();
    BufReader::new(agent.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("agent printed its address");
    assert!(line.trim().parse::<SocketAddr>().is_ok(), "{line:?}");
    let kill = Command::new("kill")
        .args(["-TERM", &agent.id().to_string()])
        .status()
        .expect("kill ran");
    assert!(kill.success());
    let out = tokio::task::spawn_blocking(move || agent.wait_with_output())
        .await
        .expect("join")
        .expect("agent output");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(143), "{stderr}");
    assert!(stderr.contains("stopping on SIGTERM"), "{stderr}");
}
