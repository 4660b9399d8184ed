//! `cargo xtask cluster --nodes N`: a cluster on this machine for a person
//! to try (docs/scaling.md): a `redis-server` without persistence and N
//! release `janus-server` nodes sharing one client port (`--reuse-port`),
//! each with its own admin port. It prints how to load it with `janus-bot`
//! and how to look at it with `janus-admin`, and runs until Ctrl-C (or a
//! node dies), then stops everything it started.

use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::process::{install_signal_handlers, ChildGuard};

/// Flags of `cargo xtask cluster`.
#[derive(Debug, Args)]
pub struct ClusterArgs {
    /// Number of janus-server nodes.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=32))]
    pub nodes: u16,
    /// The client port every node listens on (127.0.0.1).
    #[arg(long, default_value_t = 8081)]
    pub port: u16,
    /// The first node's admin port; node i uses this + i.
    #[arg(long, default_value_t = 8082)]
    pub admin_port: u16,
    /// The port of the redis-server it starts.
    #[arg(long, default_value_t = 6380)]
    pub redis_port: u16,
    /// Use the release janus-server already built.
    #[arg(long)]
    pub no_build: bool,
    /// More flags for every node, e.g. `-- --history-size 100`.
    #[arg(last = true)]
    pub server_args: Vec<String>,
}

/// Waits until something accepts TCP connections on `addr`.
fn wait_listening(addr: SocketAddr, what: &str, limit: Duration) -> Result<()> {
    let deadline = Instant::now() + limit;
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        if Instant::now() >= deadline {
            bail!(crate::Unreachable(format!(
                "{what} does not listen on {addr} after {limit:?}"
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Starts a `redis-server` without persistence on loopback port `port` and
/// waits until it accepts connections.
///
/// # Errors
/// It is not installed, or does not listen within 10 s.
pub async fn start_redis(port: u16) -> Result<ChildGuard> {
    let mut redis = Command::new("redis-server");
    redis
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no", "--loglevel", "warning"])
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    let guard = ChildGuard::spawn(&mut redis, "redis-server", Duration::from_secs(3))
        .context("is redis-server installed? (apt-get install -y redis-server)")?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let limit = Duration::from_secs(10);
    let deadline = Instant::now() + limit;
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        if Instant::now() >= deadline {
            bail!(crate::Unreachable(format!(
                "redis-server does not listen on {addr} after {limit:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(guard)
}

/// Runs the cluster until Ctrl-C.
///
/// # Errors
/// A build failure, a port in use, a process that cannot start or dies.
pub fn run(args: &ClusterArgs) -> Result<()> {
    if !args.no_build {
        crate::loadtest::build()?;
    }
    let server_bin = crate::loadtest::target_dir().join("release/janus-server");
    if !server_bin.exists() {
        bail!(
            "{} does not exist: build it (or drop --no-build)",
            server_bin.display()
        );
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(args, &server_bin))
}

/// Starts Redis and the nodes, then watches them until Ctrl-C.
async fn serve(args: &ClusterArgs, server_bin: &std::path::Path) -> Result<()> {
    install_signal_handlers(Duration::from_secs(3))?;

    let redis_addr = SocketAddr::from(([127, 0, 0, 1], args.redis_port));
    if TcpStream::connect_timeout(&redis_addr, Duration::from_millis(200)).is_ok() {
        bail!(crate::Usage(anyhow::anyhow!(
            "something already listens on {redis_addr}: give another --redis-port"
        )));
    }
    let mut children = vec![start_redis(args.redis_port).await?];
    let broker = format!("redis://{redis_addr}");
    let listen = format!("127.0.0.1:{}", args.port);
    let mut admins = Vec::new();
    for i in 0..args.nodes {
        let admin = SocketAddr::from(([127, 0, 0, 1], args.admin_port + i));
        let mut node = Command::new(server_bin);
        node.args(["--broker", &broker, "--reuse-port", "--listen", &listen])
            .args(["--admin-listen", &admin.to_string()])
            .args(["--node-id", &format!("node{i}")])
            .args(&args.server_args)
            .stdin(Stdio::null());
        children.push(ChildGuard::spawn(
            &mut node,
            &format!("node{i}"),
            Duration::from_secs(12),
        )?);
        admins.push(admin);
    }
    for admin in &admins {
        wait_listening(*admin, "a node's admin API", Duration::from_secs(20))?;
    }
    println!(
        "\n== cluster: {} node{} on {listen} (SO_REUSEPORT), Redis on {redis_addr}",
        args.nodes,
        if args.nodes == 1 { "" } else { "s" }
    );
    for (i, admin) in admins.iter().enumerate() {
        println!("   node{i}: admin http://{admin}");
    }
    println!(
        "\n   janus-admin --server http://{} cluster\n   \
         janus-bot run --target {listen} --clustered -n 10000 -m 1\n\n\
         Ctrl-C stops everything.",
        admins[0]
    );
    loop {
        for child in &mut children {
            if let Some(status) = child.try_wait()? {
                for other in &mut children {
                    let _ = other.stop();
                }
                bail!("a process of the cluster exited ({status}); stopped the others");
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
