//! `janus-server`: parses settings, raises the open-file limit, logs the
//! effective configuration once, and runs the server until SIGINT/SIGTERM.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use janus_server::config::Settings;
use janus_server::limits::raise_nofile_limit;
use janus_server::Server;

fn main() -> ExitCode {
    let settings = Settings::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(settings) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("janus-server: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(settings: Settings) -> anyhow::Result<()> {
    let print = settings.print_config;
    let config = settings.resolve()?;
    if print {
        print!("{}", config.to_toml());
        return Ok(());
    }
    let limit = raise_nofile_limit().context("reading the open-file limit")?;
    let capacity = limit.connection_capacity();
    if let Some(max) = config.max_connections {
        if max > capacity {
            tracing::warn!(
                "max-connections {max} exceeds what the open-file limit allows ({capacity} clients with \
                 soft limit {} / hard limit {}); the server will refuse clients past {capacity}",
                limit.soft,
                limit.hard
            );
        }
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
            config.to_toml().lines().filter(|l| !l.starts_with('#')).collect::<Vec<_>>().join(", ")
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
