//! The `janus-server` binary as an operator meets it: `--help`, settings
//! errors, the start-up line, the open-file capacity, and SIGTERM.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

use janus_tests::{cargo_bin, Client, TIMEOUT};

/// A server process that is killed if the test fails.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the server binary (optionally under `prlimit`), returning it, the
/// address from its start-up line, and the rest of its stderr as a channel.
fn spawn_server(
    nofile: Option<u32>,
    args: &[&str],
) -> (Proc, SocketAddr, String, mpsc::Receiver<String>) {
    let bin = cargo_bin("janus-server");
    let mut cmd = match nofile {
        Some(n) => {
            let mut c = Command::new("prlimit");
            c.arg(format!("--nofile={n}:{n}")).arg(&bin);
            c
        }
        None => Command::new(&bin),
    };
    cmd.args(["--listen", "127.0.0.1:0", "--admin-listen", "off"])
        .args(args);
    cmd.env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = Proc(cmd.spawn().expect("spawn janus-server"));
    let stderr = child.0.stderr.take().expect("stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = String::new();
    loop {
        let line = rx.recv_timeout(TIMEOUT).expect("start-up line");
        seen.push_str(&line);
        seen.push('\n');
        if let Some(rest) = line.split("listening on ").nth(1) {
            let addr = rest
                .split([',', ' '])
                .next()
                .expect("address")
                .parse()
                .expect("socket address");
            return (child, addr, seen, rx);
        }
    }
}

#[test]
fn help_explains_every_setting() {
    let out = Command::new(cargo_bin("janus-server"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for flag in [
        "--listen",
        "--heartbeat",
        "--max-frame",
        "--max-connections",
        "--queue-limit",
        "--slow-consumer",
        "--allow-publish-from",
        "--publish-key",
        "--idle-timeout",
        "--config",
        "--admin-listen",
        "--admin-token",
        "JANUS_QUEUE_LIMIT",
        "0.0.0.0:8081",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}");
    }
}

#[test]
fn bad_settings_fail_with_a_clear_message() {
    let dir = std::env::temp_dir().join(format!("janus-bin-{}.toml", std::process::id()));
    std::fs::write(&dir, "queue-limit = \"lots\"\n").unwrap();
    let out = Command::new(cargo_bin("janus-server"))
        .arg("--config")
        .arg(&dir)
        .output()
        .unwrap();
    std::fs::remove_file(&dir).unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("queue-limit") && err.contains("janus-bin-"),
        "{err}"
    );
    let out = Command::new(cargo_bin("janus-server"))
        .args(["--slow-consumer", "sometimes"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("disconnect"));
}

#[test]
fn print_config_round_trips() {
    let out = Command::new(cargo_bin("janus-server"))
        .args(["--print-config", "--queue-limit", "77"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("queue-limit = 77") && text.contains("listen = \"0.0.0.0:8081\""),
        "{text}"
    );
}

#[tokio::test]
async fn capacity_follows_the_open_file_limit_and_full_means_polite_refusal() {
    // 64 descriptors are reserved, so a hard limit of 80 leaves room for 16 clients.
    let (_server, addr, startup, _rx) = spawn_server(Some(80), &["--max-connections", "1000"]);
    assert!(startup.contains("capacity 16 connections"), "{startup}");
    assert!(
        startup.contains("max-connections 1000 exceeds"),
        "{startup}"
    );
    let mut clients = Vec::new();
    for _ in 0..16 {
        clients.push(Client::connect(addr).await);
    }
    let mut refused = Client::connect_raw(addr).await;
    refused.expect_error("not_allowed").await;
    refused.expect_closed().await;
    for c in &mut clients {
        c.expect_open().await;
    }
}

#[tokio::test]
async fn sigterm_drains_and_exits_zero() {
    let (mut server, addr, _, _rx) = spawn_server(None, &[]);
    let mut c = Client::connect(addr).await;
    c.subscribe("t").await;
    let pid = server.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    c.expect_error("server_shutdown").await;
    c.expect_closed().await;
    let mut status = None;
    janus_tests::wait_until("the server to exit", || {
        status = server.0.try_wait().expect("wait");
        status.is_some()
    })
    .await;
    assert!(
        status.is_some_and(|s| s.success()),
        "exit status {status:?}"
    );
}
