//! The agent: a long-lived process that runs workers for a remote
//! coordinator (the 2009 `launcher`, across machines).
//!
//! `janus-bot agent --listen ADDR` prints the address it bound on its first
//! stdout line, then accepts coordinator connections. Each connection gets a
//! worker process of its own (this executable's hidden `worker`
//! subcommand), and the agent relays the line protocol of
//! [`crate::control`] between the two, byte for byte. The worker answers
//! clock pings itself, on this machine's clock.
//!
//! When the coordinator's connection closes, the worker's stdin closes and
//! it exits (and is killed if it has not within a few seconds); when the
//! worker exits, the connection is closed. An agent runs no measurement of
//! its own and keeps no state between runs.
//!
//! The agent obeys whoever connects, so listen on loopback or a private test
//! network only. SIGINT or SIGTERM ends it with one log line saying how many
//! coordinators it was serving (their connections and workers end with it).

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::sys;

/// How long a worker may take to exit after its coordinator left.
const EXIT_GRACE: Duration = Duration::from_secs(5);

/// Runs the agent until it is killed.
///
/// # Errors
/// When the address cannot be bound.
pub fn run(listen: &str) -> anyhow::Result<()> {
    let _ = sys::raise_open_file_limit();
    let serving = Arc::new(AtomicUsize::new(0));
    // Before the address is printed: whoever reads it may signal at once.
    watch_signals(Arc::clone(&serving))?;
    let listener = TcpListener::bind(listen).with_context(|| format!("binding {listen}"))?;
    let addr = listener.local_addr().context("reading the bound address")?;
    {
        let mut out = io::stdout().lock();
        writeln!(out, "{addr}").context("writing the bound address")?;
        out.flush().context("writing the bound address")?;
    }
    eprintln!("janus-bot agent: listening on {addr}");
    let exe = std::env::current_exe().context("finding this executable to start workers")?;
    for conn in listener.incoming() {
        match conn {
            Ok(stream) => {
                let exe = exe.clone();
                let serving = Arc::clone(&serving);
                let spawned = std::thread::Builder::new()
                    .name("relay".into())
                    .spawn(move || {
                        serving.fetch_add(1, Ordering::Relaxed);
                        let peer = stream
                            .peer_addr()
                            .map_or_else(|_| "?".to_owned(), |a| a.to_string());
                        match relay(stream, &exe) {
                            Ok(()) => eprintln!("janus-bot agent: coordinator {peer} done"),
                            Err(e) => eprintln!("janus-bot agent: coordinator {peer}: {e:#}"),
                        }
                        serving.fetch_sub(1, Ordering::Relaxed);
                    });
                if let Err(e) = spawned {
                    eprintln!("janus-bot agent: cannot start a relay thread: {e}");
                }
            }
            Err(e) => {
                // Out of descriptors or similar: back off instead of spinning.
                eprintln!("janus-bot agent: accept failed: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
    Ok(())
}

/// Starts a thread that, on SIGINT or SIGTERM, logs one line and exits with
/// 128 + the signal number. The handlers are in place when this returns.
fn watch_signals(serving: Arc<AtomicUsize>) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the signal watcher")?;
    let (mut int, mut term) = {
        let _context = runtime.enter();
        (
            signal(SignalKind::interrupt()).context("watching SIGINT")?,
            signal(SignalKind::terminate()).context("watching SIGTERM")?,
        )
    };
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let (name, status) = runtime.block_on(async {
                tokio::select! {
                    _ = int.recv() => ("SIGINT", 130),
                    _ = term.recv() => ("SIGTERM", 143),
                }
            });
            let n = serving.load(Ordering::Relaxed);
            eprintln!(
                "janus-bot agent: stopping on {name}; {n} coordinator connection{} dropped",
                if n == 1 { "" } else { "s" }
            );
            std::process::exit(status);
        })
        .context("starting the signal watcher")?;
    Ok(())
}

/// Relays one coordinator connection to a fresh worker process.
fn relay(stream: TcpStream, exe: &std::path::Path) -> anyhow::Result<()> {
    let _ = stream.set_nodelay(true);
    let mut child = Command::new(exe)
        .arg("worker")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting a worker process")?;
    let mut stdin = child.stdin.take().context("worker has no stdin")?;
    let mut stdout = child.stdout.take().context("worker has no stdout")?;
    let child = Arc::new(Mutex::new(child));
    let mut from_coordinator = stream.try_clone().context("cloning the connection")?;
    let watched = Arc::clone(&child);
    let inbound = std::thread::Builder::new()
        .name("relay-in".into())
        .spawn(move || {
            let _ = pump(&mut from_coordinator, &mut stdin);
            // The coordinator is gone: closing stdin tells the worker to exit.
            drop(stdin);
            let since = Instant::now();
            while since.elapsed() < EXIT_GRACE {
                if let Ok(mut c) = watched.lock() {
                    if !matches!(c.try_wait(), Ok(None)) {
                        return;
                    }
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            if let Ok(mut c) = watched.lock() {
                let _ = c.kill();
            }
        })
        .context("starting a relay thread")?;
    let mut to_coordinator = stream;
    let copied = pump(&mut stdout, &mut to_coordinator);
    let _ = to_coordinator.shutdown(Shutdown::Both);
    let _ = inbound.join();
    let status = child
        .lock()
        .map_err(|_| anyhow::anyhow!("worker handle poisoned"))?
        .wait()
        .context("waiting for the worker")?;
    copied.context("relaying worker output")?;
    if !status.success() {
        anyhow::bail!("worker exited with {status}");
    }
    Ok(())
}

/// Copies until end of stream, flushing every chunk.
///
/// `std::io::copy` is not used: between a socket and a pipe it may take a
/// `splice` fast path, which ended the relay early in testing.
fn pump(from: &mut impl Read, to: &mut impl Write) -> io::Result<u64> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        to.write_all(&buf[..n])?;
        to.flush()?;
        total += n as u64;
    }
}
