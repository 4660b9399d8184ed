//! `janus-server`: reads its settings, sets up logging, raises the open-file
//! limit, logs the effective configuration once, and runs the server until
//! SIGINT/SIGTERM.
//!
//! Exit status (as `--help` says): 0 clean shutdown, 1 failed while starting
//! or running, 2 bad usage or configuration.

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::Context;
use janus_server::config::{Cli, Config, LogFormat, Settings};
use janus_server::limits::raise_nofile_limit;
use janus_server::Server;

/// mimalloc instead of glibc's malloc, which kept freed memory after churn
/// (see "Memory" in ARCHITECTURE.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Bad usage or configuration; clap uses the same code for its own errors.
const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let cli = match Cli::parse_args(std::env::args_os()) {
        Ok(cli) => cli,
        // Prints help or the usage error, exits 0 or 2.
        Err(e) => e.exit(),
    };
    let loaded = cli.settings().and_then(|settings| {
        let config = settings.validate()?;
        Ok((settings, config))
    });
    let (settings, mut config) = match loaded {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("janus-server: error: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if cli.print_config {
        return match settings.to_toml() {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("janus-server: error: {e}");
                ExitCode::FAILURE
            }
        };
    }
    config.test_fanout_delay = cli.test_fanout_delay.filter(|d| !d.is_zero());
    init_logging(settings.log_format);
    match run(&settings, config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("janus-server: error: {e:#}");
            if e.downcast_ref::<Misconfigured>().is_some() {
                ExitCode::from(EXIT_CONFIG)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// Settings that are each valid but cannot work together on this machine
/// (found once the open-file limit is known): a configuration error, exit 2.
#[derive(Debug)]
struct Misconfigured(String);

impl std::fmt::Display for Misconfigured {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Misconfigured {}

/// Logs to stderr in the chosen format, filtered by `RUST_LOG` (default
/// `info`), with colours only when stderr is a terminal and `NO_COLOR` is unset.
fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn run(settings: &Settings, config: Config) -> anyhow::Result<()> {
    if let Err(e) = janus_server::limits::disable_transparent_huge_pages() {
        tracing::debug!("transparent huge pages stay on: {e}");
    }
    let limit = raise_nofile_limit().context("reading the open-file limit")?;
    let admin_connections = if config.admin_listen.is_some() {
        config.admin_max_connections
    } else {
        0
    };
    let capacity = limit.connection_capacity(admin_connections);
    let budget = format!(
        "open-file limit {} (hard {}) less {} descriptors for the server itself and {} for the \
         admin API's connections",
        limit.soft,
        limit.hard,
        janus_server::limits::RESERVED_FDS,
        admin_connections
    );
    if capacity == 0 {
        let lower = if admin_connections > 0 {
            "lower admin-max-connections or "
        } else {
            ""
        };
        return Err(Misconfigured(format!(
            "no room for any client: {budget}; {lower}raise the open-file limit (ulimit -n)"
        ))
        .into());
    }
    if let Some(max) = config.max_connections.filter(|max| *max > capacity) {
        tracing::warn!(
            "max-connections {max} exceeds what the open-file limit allows: {capacity} clients \
             ({budget}); the server will refuse clients past {capacity}"
        );
    }
    let per_ip = config.max_connections_per_ip;
    if per_ip != usize::MAX && per_ip > capacity.min(config.max_connections.unwrap_or(capacity)) {
        tracing::warn!(
            "max-connections-per-ip {per_ip} is more than the server's capacity: it never \
             refuses anyone"
        );
    }
    // One thread serves every client connection (accepting, reading
    // requests, fanning publishes out to queues); the writer threads write.
    // Events are then handled in the order the kernel reports them, so
    // publishes from separate connections keep their arrival order.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let server = Server::bind(config.clone(), capacity)
            .await
            .context("cannot listen")?;
        let shared = server.shared();
        tracing::info!(
            "janus-server {} listening on {}, capacity {} connections (open-file limit {}), config: {}",
            env!("CARGO_PKG_VERSION"),
            server.local_addr(),
            shared.capacity,
            limit.soft,
            settings.summary()
        );
        match (shared.admin_addr(), config.admin_token.is_some()) {
            (None, _) => tracing::info!("admin API off"),
            (Some(addr), true) => {
                tracing::info!("admin API on http://{addr}, token-protected (Authorization: Bearer)")
            }
            (Some(addr), false) => {
                tracing::info!(
                    "admin API on http://{addr}, no admin token set: loopback clients only"
                );
                if !addr.ip().is_loopback() {
                    tracing::warn!(
                        "admin API listens on {addr} without a token: remote clients are refused; \
                         set --admin-token to allow them"
                    );
                }
            }
        }
        server.run(shutdown_signal()).await.context("server failed")
    })
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let term = async {
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!("cannot listen for SIGTERM: {e}");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
        () = term => tracing::info!("SIGTERM received"),
    }
}
