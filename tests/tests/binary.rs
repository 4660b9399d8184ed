//! The `janus-server` binary as an operator meets it: `--help`, settings
//! errors and exit codes, `--print-config` and the example file, layering
//! of file, environment and flags, host names, log formats, the start-up
//! line, the open-file capacity, and SIGTERM.

use std::process::Command;

use janus_tests::{cargo_bin, server_command, Client, ServerProcess, TIMEOUT};

/// Runs the server binary to completion: (exit code, stdout, stderr).
fn run_server(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = server_command()
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run janus-server");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A temporary file removed on drop.
struct TempFile(std::path::PathBuf);

impl TempFile {
    fn new(tag: &str, text: &str) -> TempFile {
        let path =
            std::env::temp_dir().join(format!("janus-bin-{tag}-{}.toml", std::process::id()));
        std::fs::write(&path, text).expect("write temp file");
        TempFile(path)
    }

    fn arg(&self) -> &str {
        self.0.to_str().expect("utf-8 temp path")
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn help_explains_every_setting_and_the_exit_codes() {
    let (code, help, _) = run_server(&["--help"], &[]);
    assert_eq!(code, 0);
    for text in [
        "--listen",
        "--heartbeat",
        "--max-frame",
        "--max-connections",
        "--max-connections-per-ip",
        "--per-ip-exempt",
        "--queue-limit",
        "--queue-bytes",
        "--write-deadline",
        "--max-topics",
        "--session-ttl",
        "--history-size",
        "--history-ttl",
        "--slow-consumer",
        "--allow-publish-from",
        "--publish-key",
        "--idle-timeout",
        "--config",
        "--admin-listen",
        "--admin-token",
        "--log-format",
        "JANUS_QUEUE_LIMIT",
        "JANUS_QUEUE_BYTES",
        "[default: 0.0.0.0:8081]",
        "[default: 1048576]",
        "[default: 1000]",
        "[default: 5m]",
        "Exit status: 0",
        "2 bad usage or configuration",
    ] {
        assert!(help.contains(text), "--help lacks {text}");
    }
}

#[test]
fn bad_settings_fail_with_a_clear_message_and_exit_2() {
    let file = TempFile::new("bad", "queue-limit = \"lots\"\n");
    let (code, _, err) = run_server(&["--config", file.arg()], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("queue-limit") && err.contains(file.arg()),
        "{err}"
    );
    let (code, _, err) = run_server(&["--slow-consumer", "sometimes"], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("disconnect"), "{err}");
    let (code, _, err) = run_server(&[], &[("JANUS_QUEUE_LIMIT", "many")]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("queue-limit"), "{err}");
    // An empty label fails inside the resolver, without a DNS query.
    let (code, _, err) = run_server(&["--listen", "a..b:8081", "--admin-listen", "off"], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("cannot resolve \"a..b:8081\""), "{err}");
    // More admin connections than any open-file limit allows (Linux caps
    // it near 2^30): a configuration error that says what to change.
    let (code, _, err) = run_server(
        &[
            "--admin-max-connections",
            "4000000000",
            "--listen",
            "127.0.0.1:0",
        ],
        &[],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("lower admin-max-connections"), "{err}");
    // An allowed origin a browser can never send.
    let (code, _, err) = run_server(&["--ws-allowed-origins", "example.com"], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("scheme://host"), "{err}");
}

/// A bad number, size or duration says, in plain words, what the setting
/// takes and where the bad value came from (flag, variable or file key).
#[test]
fn bad_numbers_say_what_the_setting_takes_and_exit_2() {
    let whole = "must be a whole number of at least 1";
    let expect = |(code, _, err): (i32, String, String), message: &str| {
        assert_eq!(
            (code, err.as_str()),
            (2, format!("error: {message}\n").as_str())
        );
    };
    let flags: [(&[&str], String); 6] = [
        (
            &["--queue-limit", "0"],
            format!("--queue-limit {whole} (got 0)"),
        ),
        (
            &["--queue-limit", "-1"],
            format!("--queue-limit {whole} (got -1)"),
        ),
        (
            &["--queue-limit", "abc"],
            format!("--queue-limit {whole} (got abc)"),
        ),
        (
            &["--history-size", "-1"],
            "--history-size must be a whole number (0 or more) (got -1)".into(),
        ),
        (
            &["--heartbeat", "0"],
            "--heartbeat must be a duration longer than zero, such as 250ms, 30s or 5m (got 0)"
                .into(),
        ),
        (
            &["--max-frame", "-1"],
            "--max-frame must be a size of at least 1 byte, in bytes or with a unit, such as \
             65536, 64KiB or 1MiB (got -1)"
                .into(),
        ),
    ];
    for (args, message) in flags {
        expect(run_server(args, &[]), &message);
    }
    let variables = [
        (
            ("JANUS_QUEUE_LIMIT", "abc"),
            format!("JANUS_QUEUE_LIMIT=abc (the environment form of --queue-limit): {whole}"),
        ),
        (
            ("JANUS_MAX_CONNECTIONS", "0"),
            format!("JANUS_MAX_CONNECTIONS=0 (the environment form of --max-connections): {whole}"),
        ),
        (
            ("JANUS_IDLE_TIMEOUT", "soon"),
            "JANUS_IDLE_TIMEOUT=soon (the environment form of --idle-timeout): must be a \
             duration such as 250ms, 30s or 5m, or \"off\""
                .into(),
        ),
        (
            ("JANUS_QUEUE_BYTES", "lots"),
            "JANUS_QUEUE_BYTES=lots (the environment form of --queue-bytes): must be a size, in \
             bytes or with a unit, such as 65536, 64KiB or 1MiB"
                .into(),
        ),
    ];
    for (variable, message) in variables {
        expect(run_server(&[], &[variable]), &message);
    }
    // A file value names its key and the file.
    let file = TempFile::new("zero", "queue-limit = 0\n");
    let (code, _, err) = run_server(&["--config", file.arg()], &[]);
    assert_eq!(code, 2, "{err}");
    let expected = format!(
        "invalid setting queue-limit in config file {}: {whole} (got 0)",
        file.arg()
    );
    assert!(err.contains(&expected), "{err}");
    // A bad variable that a flag overrides is never read.
    let (code, out, err) = run_server(
        &["--queue-limit", "5", "--print-config"],
        &[("JANUS_QUEUE_LIMIT", "abc")],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.lines().any(|l| l == "queue-limit = 5"), "{out}");
}

/// janus-admin, janus-bot and janus-histo word their numeric flags the same way.
#[test]
fn the_other_binaries_say_what_a_number_must_be_and_exit_2() {
    let cases: [(&str, &[&str], &str); 8] = [
        (
            "janus-admin",
            &["topics", "--limit", "0"],
            "--limit must be a whole number of at least 1 (got 0)",
        ),
        (
            "janus-admin",
            &["--timeout", "-1", "status"],
            "--timeout must be a number of seconds, such as 10 or 0.5 (got -1)",
        ),
        (
            "janus-admin",
            &["subscribe", "t", "--count", "lots"],
            "--count must be a whole number (0 or more) (got lots)",
        ),
        (
            "janus-bot",
            &["run", "-n", "0"],
            "--clients must be a whole number of at least 1 (got 0)",
        ),
        (
            "janus-bot",
            &["run", "-n", "10", "--topics", "-1"],
            "--topics must be a whole number of at least 1 (got -1)",
        ),
        (
            "janus-bot",
            &["churn", "-n", "10", "--hold", "soon"],
            "--hold must be a duration such as 500ms, 10s or 2m (got soon)",
        ),
        (
            "janus-histo",
            &["show", "--bucket", "0", "report.json"],
            "--bucket must be a duration from 1us to one hour, such as 500ms, 2ms or 250us (got 0)",
        ),
        (
            "janus-histo",
            &["merge", "--bucket", "-1", "report.json"],
            "--bucket must be a duration from 1us to one hour, such as 500ms, 2ms or 250us (got -1)",
        ),
    ];
    for (binary, args, message) in cases {
        let out = Command::new(cargo_bin(binary))
            .args(args)
            .env_clear()
            .output()
            .expect("run the binary");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            (out.status.code(), err.as_ref()),
            (Some(2), format!("error: {message}\n").as_str()),
            "{binary} {args:?}"
        );
    }
}

/// janus-histo's help says what its exit statuses mean, for each subcommand,
/// and a report it cannot read is a failure (1), not a usage error.
#[test]
fn janus_histo_states_its_exit_statuses() {
    for args in [&["--help"][..], &["show", "--help"], &["merge", "--help"]] {
        let out = Command::new(cargo_bin("janus-histo"))
            .args(args)
            .output()
            .expect("run janus-histo");
        let help = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        for text in [
            "Exit status:",
            "0  success",
            "1  a report could not be read",
            "2  usage error",
        ] {
            assert!(help.contains(text), "{args:?} lacks {text}: {help}");
        }
    }
    let out = Command::new(cargo_bin("janus-histo"))
        .args(["show", "/nonexistent/report.json"])
        .output()
        .expect("run janus-histo");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/report.json"));
}

#[test]
fn an_address_in_use_exits_1() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let addr = taken.local_addr().expect("address").to_string();
    let (code, _, err) = run_server(&["--listen", &addr, "--admin-listen", "off"], &[]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains(&addr), "{err}");
}

#[test]
fn flags_win_over_environment_which_wins_over_the_file() {
    let file = TempFile::new(
        "layers",
        "queue-limit = 7\nheartbeat = \"5s\"\nmax-topics = 50\n",
    );
    let env = [("JANUS_QUEUE_LIMIT", "8"), ("JANUS_HEARTBEAT", "6s")];
    let (code, out, err) = run_server(
        &[
            "--config",
            file.arg(),
            "--print-config",
            "--heartbeat",
            "9s",
        ],
        &env,
    );
    assert_eq!(code, 0, "{err}");
    for line in ["queue-limit = 8", "heartbeat = \"9s\"", "max-topics = 50"] {
        assert!(out.lines().any(|l| l == line), "{line} in {out}");
    }
    // The file named by JANUS_CONFIG counts as the --config file.
    let (_, out, _) = run_server(&["--print-config"], &[("JANUS_CONFIG", file.arg())]);
    assert!(out.lines().any(|l| l == "queue-limit = 7"), "{out}");
}

#[test]
fn the_example_file_is_what_print_config_prints() {
    let (code, printed, err) = run_server(&["--print-config"], &[]);
    assert_eq!(code, 0, "{err}");
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../janus.toml.example");
    let example = std::fs::read_to_string(&path).expect("janus.toml.example");
    assert!(
        example == printed,
        "janus.toml.example differs from `janus-server --print-config`; regenerate it with\n  \
         cargo run -p janus-server -- --print-config > janus.toml.example"
    );
    // And a server runs from it unchanged.
    let (code, again, err) = run_server(
        &["--config", path.to_str().expect("utf-8"), "--print-config"],
        &[],
    );
    assert_eq!((code, again), (0, printed), "{err}");
}

#[tokio::test]
async fn printed_secrets_never_come_back_wrong() {
    let (code, printed, err) = run_server(
        &[
            "--admin-token",
            "s3cret",
            "--publish-key",
            "k3y",
            "--print-config",
        ],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        !printed.contains("s3cret") && !printed.contains("k3y"),
        "{printed}"
    );
    assert!(
        printed.contains("admin-token is set, but secrets are never printed"),
        "{printed}"
    );
    // A server started from that file has no admin token (loopback only), not a wrong one.
    let file = TempFile::new("secret", &printed);
    let server = ServerProcess::spawn_full(
        None,
        &["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"],
        &["--config", file.arg()],
    );
    let admin = server.log.recv_timeout(TIMEOUT).expect("admin line");
    assert!(
        admin.contains("loopback clients only"),
        "{}{admin}",
        server.startup
    );
    // The placeholder older versions printed is refused with a clear error.
    let old = TempFile::new("redacted", "admin-token = \"<redacted>\"\n");
    let (code, _, err) = run_server(&["--config", old.arg()], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("admin-token") && err.contains("placeholder"),
        "{err}"
    );
}

#[tokio::test]
async fn host_names_and_plain_addresses_are_accepted() {
    let server = ServerProcess::spawn_full(
        None,
        &["--listen", "localhost:0", "--admin-listen", "off"],
        &["--allow-publish-from", "10.0.0.1,::1"],
    );
    let (addr, startup) = (server.addr(), &server.startup);
    assert!(addr.ip().is_loopback(), "{startup}");
    assert!(
        startup.contains("allow-publish-from = [\"10.0.0.1/32\", \"::1/128\"]"),
        "{startup}"
    );
    let mut c = Client::connect(addr).await;
    c.subscribe("t").await;
}

#[tokio::test]
async fn json_logs_and_no_colour_on_a_pipe() {
    let server = ServerProcess::spawn(&["--log-format", "json"]);
    let (addr, startup) = (server.addr(), &server.startup);
    let line = startup.lines().last().expect("a line");
    let event: serde_json::Value = serde_json::from_str(line).expect("a JSON log line");
    let message = event["fields"]["message"].as_str().expect("message");
    assert!(message.contains(&format!("listening on {addr}")), "{line}");
    assert_eq!(event["level"], "INFO");
    let server = ServerProcess::spawn(&[]);
    let startup = &server.startup;
    assert!(
        startup.contains(" INFO ") && !startup.contains('\x1b'),
        "{startup:?}"
    );
}

#[tokio::test]
async fn capacity_follows_the_open_file_limit_and_full_means_polite_refusal() {
    // 64 descriptors are reserved, so a hard limit of 80 leaves room for 16 clients.
    let server = ServerProcess::spawn_with_nofile(Some(80), &["--max-connections", "1000"]);
    let (addr, startup) = (server.addr(), &server.startup);
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

#[test]
fn the_admin_api_s_connections_come_off_the_capacity() {
    // 200 less 64 reserved less the admin API's 8 leaves 128.
    let server = ServerProcess::spawn_full(
        Some(200),
        &["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"],
        &["--admin-max-connections", "8", "--max-connections", "1000"],
    );
    let startup = &server.startup;
    assert!(startup.contains("capacity 128 connections"), "{startup}");
    assert!(
        startup.contains(
            "max-connections 1000 exceeds what the open-file limit allows: 128 clients \
             (open-file limit 200 (hard 200) less 64 descriptors for the server itself and 8 \
             for the admin API's connections)"
        ),
        "{startup}"
    );
}

/// The server keeps its memory in small pages (ARCHITECTURE.md, "Huge
/// pages off"): the kernel reports transparent huge pages off for it, while
/// the test process that started it has them.
#[tokio::test]
async fn transparent_huge_pages_are_off_for_the_server() {
    let thp = |pid: &str| {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .expect("/proc status")
            .lines()
            .find_map(|l| l.strip_prefix("THP_enabled:").map(|v| v.trim().to_owned()))
    };
    if thp("self").as_deref() != Some("1") {
        // Not reported (kernels before 6.x) or already off for everything
        // started here: nothing would tell the server's setting apart.
        return;
    }
    let server = ServerProcess::spawn(&[]);
    assert_eq!(thp(&server.pid().to_string()).as_deref(), Some("0"));
}

#[tokio::test]
async fn sigterm_drains_and_exits_zero() {
    let mut server = ServerProcess::spawn(&[]);
    let addr = server.addr();
    let mut c = Client::connect(addr).await;
    c.subscribe("t").await;
    let pid = server.pid().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    c.expect_error("server_shutdown").await;
    c.expect_closed().await;
    let mut status = None;
    janus_tests::wait_until("the server to exit", || {
        status = server.child().try_wait().expect("wait");
        status.is_some()
    })
    .await;
    assert!(
        status.is_some_and(|s| s.success()),
        "exit status {status:?}"
    );
}
