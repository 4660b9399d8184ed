//! `examples/client.py`, the runnable client that docs/protocol.md points
//! to, against a real server: it subscribes, publishes, and receives what a
//! Rust publisher sends, so the example cannot rot.

use std::path::PathBuf;
use std::process::Stdio;

use janus_server::Config;
use janus_tests::{exit_code, lines_of, next_line, publish, test_config, Client, TestServer};

fn example(args: &[&str]) -> tokio::process::Command {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/client.py");
    let mut cmd = tokio::process::Command::new("python3");
    cmd.arg(script)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_example_client_subscribes_and_publishes() {
    let server = TestServer::start().await;
    let addr = server.addr().to_string();
    let mut sub = example(&["subscribe", "news", "--count", "2", "--addr", &addr])
        .spawn()
        .expect("run python3 examples/client.py (python3 must be installed)");
    let mut out = lines_of(sub.stdout.take().expect("stdout"));
    let mut err = lines_of(sub.stderr.take().expect("stderr"));
    assert!(next_line(&mut err).await.starts_with("token "));
    assert_eq!(next_line(&mut err).await, "subscribed to news");

    // The example publishes; then a Rust publisher does.
    let mut publisher = example(&["publish", "news", r#"{"hello":"world"}"#, "--addr", &addr])
        .spawn()
        .expect("run the example publisher");
    assert_eq!(exit_code(&mut publisher).await, 0);
    assert_eq!(next_line(&mut out).await, r#"{"hello": "world"}"#);
    publish(server.addr(), "news", "2", "[1,2]").await;
    assert_eq!(next_line(&mut out).await, "[1, 2]");
    assert_eq!(exit_code(&mut sub).await, 0);

    // An error frame ends the subscriber with a message and a failure.
    let mut bad = example(&["subscribe", "", "--addr", &addr])
        .spawn()
        .expect("run the example");
    let mut err = lines_of(bad.stderr.take().expect("stderr"));
    assert_eq!(exit_code(&mut bad).await, 1);
    assert!(next_line(&mut err).await.starts_with("token "));
    assert_eq!(
        next_line(&mut err).await,
        "error: bad_topic: topic is empty"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_example_client_says_why_a_full_server_refused_it() {
    let server = TestServer::start_with(Config {
        max_connections: Some(1),
        ..test_config()
    })
    .await;
    let _holder = Client::connect(server.addr()).await;
    let addr = server.addr().to_string();
    for args in [
        &["subscribe", "news", "--addr", &addr][..],
        &["publish", "news", "1", "--addr", &addr][..],
    ] {
        let mut refused = example(args).spawn().expect("run the example");
        let mut err = lines_of(refused.stderr.take().expect("stderr"));
        assert_eq!(exit_code(&mut refused).await, 1, "{args:?}");
        let line = next_line(&mut err).await;
        assert!(
            line.starts_with("error: not_allowed: the server is at its connection limit (1)"),
            "{args:?}: {line}"
        );
    }
    server.stop().await;
}
