//! Unit tests of the settings: defaults, layering, `--print-config` round
//! trips, secrets, and the error for each kind of bad value.

use super::*;

/// A temporary file removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(tag: &str, text: &str) -> TempFile {
        let path =
            std::env::temp_dir().join(format!("janus-config-{tag}-{}.toml", std::process::id()));
        std::fs::write(&path, text).unwrap();
        TempFile(path)
    }

    fn arg(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn cli(args: &[&str]) -> Cli {
    Cli::parse_args(std::iter::once("janus-server").chain(args.iter().copied())).unwrap()
}

fn settings(args: &[&str]) -> Result<Settings, ConfigError> {
    cli(args).settings()
}

#[test]
fn defaults_are_valid() {
    let config = Settings::default().validate().unwrap();
    assert_eq!(config.listen, SocketAddr::from(([0, 0, 0, 0], 8081)));
    assert_eq!(
        config.admin_listen,
        Some(SocketAddr::from(([127, 0, 0, 1], 8082)))
    );
    assert_eq!(
        (config.queue_limit, config.queue_bytes, config.max_frame),
        (4096, 1_048_576, 65_536)
    );
    assert_eq!(config.write_deadline, Duration::from_secs(10));
    assert_eq!(
        (config.max_topics, config.max_connections_per_ip),
        (1_000_000, 1_000)
    );
    assert!(config.per_ip_exempt("127.0.0.1".parse().expect("ip")));
    assert!(config.per_ip_exempt("::ffff:192.168.1.2".parse().expect("ip")));
    assert!(!config.per_ip_exempt("8.8.8.8".parse().expect("ip")));
    assert_eq!(config.session_ttl, Duration::from_secs(60));
    assert_eq!(
        (
            config.history_size,
            config.history_ttl,
            config.history_bytes
        ),
        (6000, Duration::from_secs(300), 256 << 20)
    );
    assert_eq!(config.idle_timeout, None);
    assert_eq!((config.admin_token, config.publish_key), (None, None));
    assert!(config.writer_threads >= 1);
    assert_eq!(Config::default().max_subscriptions, 1024);
}

#[test]
fn every_setting_has_a_file_key_a_flag_and_help() {
    let table = toml::Table::try_from(Settings::default()).unwrap();
    let args: Vec<_> = settings_command().get_arguments().cloned().collect();
    for key in table.keys() {
        assert!(
            args.iter().any(|a| a.get_long() == Some(key)),
            "file key {key} has no flag"
        );
    }
    for arg in &args {
        assert!(arg.get_long().is_some(), "{:?} has no --flag", arg.get_id());
        assert!(arg.get_help().is_some(), "{:?} has no help", arg.get_id());
    }
    let full = Cli::command_with_env();
    for arg in full.get_arguments() {
        let id = arg.get_id().as_str();
        if args.iter().any(|a| a.get_id() == id) {
            assert_eq!(
                arg.get_env().and_then(|e| e.to_str()),
                Some(env_name(id).as_str())
            );
        }
    }
}

#[test]
fn print_config_round_trips() {
    for args in [
        &[][..],
        &[
            "--queue-limit",
            "77",
            "--queue-bytes",
            "2MiB",
            "--idle-timeout",
            "90s",
            "--allow-publish-from",
            "10.0.0.1,fd00::/8",
            "--broker",
            "redis://127.0.0.1:6379/1",
            "--node-id",
            "node-7",
            "--reuse-port",
            "--admin-listen",
            "off",
            "--max-connections",
            "5",
            "--writer-threads",
            "3",
            "--listen",
            "localhost:9001",
            "--log-format",
            "json",
            "--slow-consumer",
            "drop-oldest",
        ],
    ] {
        let original = settings(args).unwrap();
        let printed = original.to_toml().unwrap();
        let file = TempFile::new("round-trip", &printed);
        let reloaded = settings(&["--config", file.arg()]).unwrap();
        assert_eq!(reloaded, original, "{printed}");
        assert_eq!(reloaded.to_toml().unwrap(), printed);
    }
    let printed = settings(&["--queue-bytes", "2MiB"])
        .unwrap()
        .to_toml()
        .unwrap();
    assert!(printed.contains("\nqueue-bytes = 2097152\n"), "{printed}");
    assert!(printed.contains("\n# max-connections =\n"), "{printed}");
}

#[test]
fn secrets_are_never_printed_and_never_round_trip_into_a_wrong_value() {
    let original = settings(&["--admin-token", "s3cret", "--publish-key", "k3y"]).unwrap();
    let printed = original.to_toml().unwrap();
    assert!(
        !printed.contains("s3cret") && !printed.contains("k3y"),
        "{printed}"
    );
    assert!(
        printed.contains("# admin-token is set, but secrets are never printed"),
        "{printed}"
    );
    // The printed file loads, without the secrets: never with a wrong one.
    let file = TempFile::new("secret", &printed);
    let config = settings(&["--config", file.arg()])
        .unwrap()
        .validate()
        .unwrap();
    assert_eq!((config.admin_token, config.publish_key), (None, None));
    // The placeholder older versions printed is refused, wherever it comes from.
    let file = TempFile::new("redacted", "admin-token = \"<redacted>\"\n");
    let err = settings(&["--config", file.arg()])
        .unwrap()
        .validate()
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("admin-token") && err.contains("placeholder"),
        "{err}"
    );
    let err = settings(&["--publish-key", "<redacted>"])
        .unwrap()
        .validate()
        .unwrap_err();
    assert!(err.to_string().contains("publish-key"), "{err}");
}

#[test]
fn flags_win_over_the_file_which_wins_over_defaults() {
    let file = TempFile::new(
        "layers",
        "queue-limit = 7\nheartbeat = \"5s\"\nidle-timeout = \"off\"\nslow-consumer = \"drop-oldest\"\n\
         allow-publish-from = [\"10.0.0.0/8\"]\nqueue-bytes = \"64KiB\"\nmax-frame = 1024\n",
    );
    let s = settings(&["--config", file.arg(), "--queue-limit", "9"]).unwrap();
    assert_eq!(s.queue_limit.get(), 9);
    assert_eq!(s.heartbeat, Duration::from_secs(5));
    assert_eq!(s.slow_consumer, SlowConsumerPolicy::DropOldest);
    assert_eq!(s.idle_timeout, Timeout(None));
    assert_eq!(s.queue_bytes, ByteCount(65_536));
    assert_eq!(s.shutdown_timeout, Duration::from_secs(10));
    let config = s.validate().unwrap();
    assert!(config.may_publish("10.1.2.3".parse().unwrap()));
    assert!(!config.may_publish("127.0.0.1".parse().unwrap()));
    // A flag giving the default's value still wins over the file.
    let s = settings(&["--config", file.arg(), "--queue-limit", "1024"]).unwrap();
    assert_eq!(s.queue_limit.get(), 1024);
}

#[test]
fn bad_settings_are_clear_errors() {
    let err = |file_text: &str| {
        let file = TempFile::new("bad", file_text);
        settings(&["--config", file.arg()])
            .and_then(|s| s.validate())
            .unwrap_err()
            .to_string()
            .replace(file.arg(), "FILE")
    };
    let e = err("queue-limt = 7\n");
    assert!(
        e.contains("unknown setting queue-limt in config file FILE"),
        "{e}"
    );
    let e = err("queue-limit = \"lots\"\n");
    assert!(
        e.contains("queue-limit in config file FILE") && e.contains("lots"),
        "{e}"
    );
    // A file value gets the flag's words, after the key and the file.
    let e = err("queue-limit = 0\n");
    assert_eq!(
        e,
        "invalid setting queue-limit in config file FILE: must be a whole number of at least 1 \
         (got 0)"
    );
    let e = err("history-size = -3\n");
    assert!(
        e.ends_with("must be a whole number (0 or more) (got -3)"),
        "{e}"
    );
    let e = err("heartbeat = \"soon\"\n");
    assert!(e.contains("heartbeat") && e.contains("duration"), "{e}");
    let e = err("heartbeat = \"0s\"\n");
    assert!(
        e.contains("heartbeat in config file FILE: must be a duration longer than zero"),
        "{e}"
    );
    let e = err("max-frame = -1\n");
    assert!(
        e.contains("max-frame in config file FILE: must be a size of at least 1 byte"),
        "{e}"
    );
    let e = err("listen = [\n");
    assert!(e.contains("invalid config file"), "{e}");
    let e = err("queue-bytes = 1000\n");
    assert!(e.contains("queue-bytes") && e.contains("max-frame"), "{e}");
    let e = err("allow-publish-from = [\"everyone\"]\n");
    assert!(
        e.contains("allow-publish-from") && e.contains("everyone"),
        "{e}"
    );

    let usage = |args: &[&str]| {
        Cli::parse_args(std::iter::once("janus-server").chain(args.iter().copied()))
            .unwrap_err()
            .to_string()
    };
    assert!(usage(&["--heartbeat", "soon"]).contains("30s"));
    // A flag's value gets plain words, zero and negative numbers alike.
    for (args, message) in [
        (
            &["--queue-limit", "0"][..],
            "--queue-limit must be a whole number of at least 1 (got 0)",
        ),
        (
            &["--queue-limit", "-1"],
            "--queue-limit must be a whole number of at least 1 (got -1)",
        ),
        (
            &["--max-connections", "lots"],
            "--max-connections must be a whole number of at least 1 (got lots)",
        ),
        (
            &["--history-size", "-1"],
            "--history-size must be a whole number (0 or more) (got -1)",
        ),
        (
            &["--heartbeat", "0s"],
            "--heartbeat must be a duration longer than zero, such as 250ms, 30s or 5m (got 0s)",
        ),
        (
            &["--max-frame", "0"],
            "--max-frame must be a size of at least 1 byte, in bytes or with a unit, such as \
             65536, 64KiB or 1MiB (got 0)",
        ),
        (
            &["--idle-timeout", "-1"],
            "--idle-timeout must be a duration such as 250ms, 30s or 5m, or \"off\" (got -1)",
        ),
    ] {
        assert_eq!(usage(args), format!("error: {message}\n"), "{args:?}");
    }
    assert!(usage(&["--listen", "8081"]).contains("HOST:PORT"));
    assert!(usage(&["--listen", "localhost:http"]).contains("port"));
    assert!(usage(&["--queue-bytes", "lots"]).contains("1MiB"));
    assert!(usage(&["--slow-consumer", "sometimes"]).contains("disconnect"));

    let invalid = |args: &[&str]| settings(args).unwrap().validate().unwrap_err().to_string();
    // An empty label fails inside the resolver, without a DNS query.
    let e = invalid(&["--listen", "a..b:8081"]);
    assert!(e.contains("listen") && e.contains("a..b"), "{e}");
    assert!(usage(&["--write-deadline", "0s"]).contains("write-deadline"));
    assert!(invalid(&["--admin-token-file", "/nonexistent/token"]).contains("/nonexistent/token"));
    for origin in [
        "example.com",
        "not an origin",
        "https://a.example/app",
        "://x",
    ] {
        let e = invalid(&["--ws-allowed-origins", origin]);
        assert!(
            e.contains("ws-allowed-origins") && e.contains("never match"),
            "{e}"
        );
    }
    for origin in ["https://a.example", "http://127.0.0.1:8080/", "null"] {
        let s = settings(&["--ws-allowed-origins", origin]).unwrap();
        assert!(s.validate().is_ok(), "{origin}");
    }
    let missing = settings(&["--config", "/nonexistent/janus.toml"]);
    assert!(matches!(missing, Err(ConfigError::Read { .. })));
}

#[test]
fn listen_addresses_and_publish_networks() {
    let config = settings(&[
        "--listen",
        "localhost:0",
        "--admin-listen",
        "[::1]:0",
        "--allow-publish-from",
        "10.0.0.1",
        "--allow-publish-from",
        "2001:db8::1,192.168.1.7/16",
    ])
    .unwrap()
    .validate()
    .unwrap();
    assert!(config.listen.ip().is_loopback(), "{}", config.listen);
    assert_eq!(config.admin_listen, Some("[::1]:0".parse().unwrap()));
    let nets: Vec<String> = config
        .allow_publish_from
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(nets, ["10.0.0.1/32", "2001:db8::1/128", "192.168.0.0/16"]);
    assert!(config.may_publish("10.0.0.1".parse().unwrap()));
    assert!(!config.may_publish("10.0.0.2".parse().unwrap()));
    assert!(config.may_publish("::ffff:192.168.9.9".parse().unwrap()));

    let cfg = Config::default();
    assert!(cfg.may_publish("127.9.9.9".parse().unwrap()));
    assert!(cfg.may_publish("::1".parse().unwrap()));
    assert!(cfg.may_publish("::ffff:127.0.0.1".parse().unwrap()));
    assert!(!cfg.may_publish("10.0.0.1".parse().unwrap()));
}

#[test]
fn sizes_and_durations() {
    assert_eq!("1MiB".parse::<ByteCount>(), Ok(ByteCount(1_048_576)));
    assert_eq!("64 KiB".parse::<ByteCount>(), Ok(ByteCount(65_536)));
    assert_eq!("4096".parse::<ByteCount>(), Ok(ByteCount(4096)));
    assert!("-1".parse::<ByteCount>().is_err());
    assert_eq!("off".parse::<Timeout>(), Ok(Timeout(None)));
    let off = settings(&["--session-ttl", "off", "--max-connections-per-ip", "0"]).unwrap();
    let config = off.validate().unwrap();
    assert_eq!(
        (config.session_ttl, config.max_connections_per_ip),
        (Duration::ZERO, usize::MAX)
    );
    assert_eq!("0s".parse::<Timeout>(), Ok(Timeout(None)));
    assert_eq!(
        "2m".parse::<Timeout>(),
        Ok(Timeout(Some(Duration::from_secs(120))))
    );
    let file = TempFile::new("sizes", "queue-bytes = 2097152\nhistory-ttl = \"1h\"\n");
    let s = settings(&["--config", file.arg()]).unwrap();
    assert_eq!(
        (s.queue_bytes, s.history_ttl),
        (ByteCount(2_097_152), Duration::from_secs(3600))
    );
}

#[test]
fn cluster_settings() {
    let single = Settings::default().validate().unwrap();
    assert_eq!((single.broker.as_deref(), single.reuse_port), (None, false));
    assert!(
        single
            .node_id
            .ends_with(&format!("-{}", std::process::id())),
        "{}",
        single.node_id
    );
    let config = settings(&[
        "--broker",
        "redis://127.0.0.1:6379",
        "--node-id",
        "n1",
        "--reuse-port",
    ])
    .unwrap()
    .validate()
    .unwrap();
    assert_eq!(config.broker.as_deref(), Some("redis://127.0.0.1:6379"));
    assert_eq!((config.node_id.as_str(), config.reuse_port), ("n1", true));
    // A password never shows, and its placeholder is refused.
    let printed = settings(&["--broker", "redis://u:pw@h:1/2"])
        .unwrap()
        .to_toml()
        .unwrap();
    assert!(
        printed.contains("\nbroker = \"redis://u:***@h:1/2\"\n"),
        "{printed}"
    );
    let file = TempFile::new("broker", &printed);
    let err = settings(&["--config", file.arg()]).unwrap_err().to_string();
    assert!(err.contains("***"), "{err}");
    for bad in ["http://h:1", "redis://"] {
        assert!(
            Cli::parse_args(["janus-server", "--broker", bad]).is_err(),
            "{bad}"
        );
    }
    let err = settings(&["--node-id", "a b"])
        .unwrap()
        .validate()
        .unwrap_err()
        .to_string();
    assert!(err.contains("node-id"), "{err}");
}
