//! Starting `janus-server` for one scenario, reading its admin API, and
//! watching its CPU and memory while the scenario runs.
//!
//! The server gets a free loopback port for clients and another for its
//! admin API, its output goes to `target/loadtest/<scenario>.server.log`, and
//! it counts as started once it has logged `listening on` and accepts a TCP
//! connection. If it does not know `--admin-listen` yet, it is started again
//! without, and every admin-based check says loudly that it was skipped.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;

use crate::process::{self, ChildGuard, ProcSample};

/// How to start the server.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// The `janus-server` binary.
    pub binary: PathBuf,
    /// Flags after `--listen` and `--admin-listen`.
    pub args: Vec<String>,
    /// The client address to listen on (the nodes of a cluster share one);
    /// `None`: a free loopback port.
    pub listen: Option<SocketAddr>,
    /// Where its stdout and stderr go.
    pub log: PathBuf,
    /// How long it may take to start listening.
    pub startup_timeout: Duration,
    /// How long it may take to exit after SIGTERM.
    pub shutdown_grace: Duration,
    /// Also accept WebSocket clients (`--ws-listen` on a free loopback port).
    pub websocket: bool,
}

/// A running server, stopped when dropped.
#[derive(Debug)]
pub struct Server {
    guard: ChildGuard,
    /// Where clients connect.
    pub addr: SocketAddr,
    /// The admin API, when the server accepted `--admin-listen`.
    pub admin: Option<SocketAddr>,
    /// Where WebSocket clients connect, when it was asked to accept them.
    pub ws: Option<SocketAddr>,
    /// The full command line, for the report.
    pub command_line: String,
    /// The server's log file.
    pub log: PathBuf,
}

/// How the server ended.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServerExit {
    /// Exit code, if it exited rather than died of a signal.
    pub code: Option<i32>,
    /// Whether SIGTERM was not enough and it had to be killed.
    pub killed: bool,
    /// Seconds from SIGTERM to exit.
    pub shutdown_s: f64,
}

/// Two free loopback ports (bound at the same time, so they differ).
pub fn free_ports() -> Result<(u16, u16)> {
    let a = TcpListener::bind("127.0.0.1:0").context("no free loopback port")?;
    let b = TcpListener::bind("127.0.0.1:0").context("no free loopback port")?;
    Ok((a.local_addr()?.port(), b.local_addr()?.port()))
}

/// The address in a `... listening on ADDR ...` log line, if it has one.
pub fn parse_listening(line: &str) -> Option<Option<SocketAddr>> {
    let rest = &line[line.find("listening on")? + "listening on".len()..];
    let word = rest
        .split_whitespace()
        .next()
        .map(|w| w.trim_matches(|c: char| !(c.is_ascii_alphanumeric() || "[]:.".contains(c))));
    Some(word.and_then(|w| w.parse().ok()))
}

impl Server {
    /// Starts the server and waits until it accepts connections.
    ///
    /// # Errors
    /// It cannot be started, exits, or does not listen in time; the message
    /// includes the end of its log.
    pub async fn start(opts: &ServerOptions) -> Result<Server> {
        match Self::start_once(opts, true).await {
            Err(e) if log_mentions(&opts.log, "admin-listen") => {
                eprintln!(
                    "\n!!! janus-server refused --admin-listen ({e:#}); starting it without the \
                     admin API: checks that need /status will be SKIPPED !!!\n"
                );
                Self::start_once(opts, false).await
            }
            other => other,
        }
    }

    async fn start_once(opts: &ServerOptions, with_admin: bool) -> Result<Server> {
        // An explicit --admin-listen among the flags (say `off`) wins.
        let with_admin = with_admin && !opts.args.iter().any(|a| a.starts_with("--admin-listen"));
        let (port, admin_port) = free_ports()?;
        let addr = opts
            .listen
            .unwrap_or(SocketAddr::from(([127, 0, 0, 1], port)));
        let admin = SocketAddr::from(([127, 0, 0, 1], admin_port));
        let mut args = vec!["--listen".to_owned(), addr.to_string()];
        if with_admin {
            args.extend(["--admin-listen".to_owned(), admin.to_string()]);
        }
        let ws = if opts.websocket {
            // Probed while the other two ports are still bound, so it differs.
            let held = (TcpListener::bind(addr), TcpListener::bind(admin));
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .context("no free loopback port")?
                .port();
            drop(held);
            let ws = SocketAddr::from(([127, 0, 0, 1], port));
            args.extend(["--ws-listen".to_owned(), ws.to_string()]);
            Some(ws)
        } else {
            None
        };
        args.extend(opts.args.iter().cloned());
        let command_line = format!("{} {}", opts.binary.display(), args.join(" "));

        let log =
            Arc::new(Mutex::new(File::create(&opts.log).with_context(|| {
                format!("cannot create {}", opts.log.display())
            })?));
        let mut command = Command::new(&opts.binary);
        command
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut guard = ChildGuard::spawn(&mut command, "janus-server", opts.shutdown_grace)?;
        let (tx, rx) = mpsc::channel::<Option<SocketAddr>>();
        let child = guard.child_mut();
        if let Some(out) = child.stdout.take() {
            tee(out, Arc::clone(&log), tx.clone());
        }
        if let Some(err) = child.stderr.take() {
            tee(err, Arc::clone(&log), tx);
        }

        let deadline = Instant::now() + opts.startup_timeout;
        let mut logged: Option<Option<SocketAddr>> = None;
        loop {
            if let Some(status) = guard.try_wait()? {
                // Give the pipe threads a moment to copy the last lines.
                tokio::time::sleep(Duration::from_millis(100)).await;
                bail!(
                    "janus-server exited during start-up ({status}): `{command_line}`\n{}",
                    log_tail(&opts.log, 15)
                );
            }
            if logged.is_none() {
                if let Ok(line_addr) = rx.try_recv() {
                    logged = Some(line_addr);
                }
            }
            if logged.is_some() && TcpStream::connect(addr).await.is_ok() {
                break;
            }
            if Instant::now() >= deadline {
                let what = if logged.is_some() {
                    "accept connections"
                } else {
                    "log `listening on ADDR`"
                };
                return Err(crate::Unreachable(format!(
                    "janus-server did not {what} within {:?}: `{command_line}`\n{}",
                    opts.startup_timeout,
                    log_tail(&opts.log, 15)
                ))
                .into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if let Some(Some(logged)) = logged {
            if logged != addr && logged.port() == addr.port() {
                eprintln!("xtask: note: server says it listens on {logged}, we asked for {addr}");
            }
        }
        Ok(Server {
            guard,
            addr,
            admin: with_admin.then_some(admin),
            ws,
            command_line,
            log: opts.log.clone(),
        })
    }

    /// The server's pid.
    pub fn pid(&self) -> u32 {
        self.guard.pid()
    }

    /// CPU and memory now.
    ///
    /// # Errors
    /// The process is gone.
    pub fn sample(&self) -> Result<ProcSample> {
        process::sample(self.pid())
    }

    /// Whether the server has died.
    ///
    /// # Errors
    /// Its status cannot be read.
    pub fn exited(&mut self) -> Result<Option<ExitStatus>> {
        self.guard.try_wait()
    }

    /// `GET /status` from the admin API, or `None` when there is no admin API
    /// or it does not answer with JSON.
    pub async fn status(&self) -> Option<serde_json::Value> {
        let admin = self.admin?;
        let get = move || get_json(admin, "/status", Duration::from_secs(3));
        tokio::task::spawn_blocking(get).await.ok()?.ok()
    }

    /// Waits until `/ready` says yes (a cluster node: connected to Redis);
    /// at once without an admin API.
    ///
    /// # Errors
    /// Not ready within `limit`.
    pub async fn wait_ready(&self, limit: Duration) -> Result<()> {
        let Some(admin) = self.admin else {
            return Ok(());
        };
        let deadline = Instant::now() + limit;
        loop {
            let get = move || get_json(admin, "/ready", Duration::from_secs(1));
            if let Ok(Ok(_)) = tokio::task::spawn_blocking(get).await {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "janus-server on {} not ready within {limit:?}\n{}",
                    self.addr,
                    log_tail(&self.log, 15)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM, wait for a graceful exit, SIGKILL if needed.
    ///
    /// # Errors
    /// The process cannot be waited for.
    pub fn stop(mut self) -> Result<ServerExit> {
        let started = Instant::now();
        let (status, killed) = self.guard.stop()?;
        Ok(ServerExit {
            code: status.code(),
            killed,
            shutdown_s: started.elapsed().as_secs_f64(),
        })
    }
}

/// Copies a pipe into the log, reporting the first `listening on` line.
fn tee(
    pipe: impl std::io::Read + Send + 'static,
    log: Arc<Mutex<File>>,
    found: mpsc::Sender<Option<SocketAddr>>,
) {
    std::thread::spawn(move || {
        let mut reported = false;
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if !reported {
                if let Some(addr) = parse_listening(&line) {
                    reported = true;
                    let _ = found.send(addr);
                }
            }
            let mut file = log.lock().unwrap_or_else(PoisonError::into_inner);
            let _ = writeln!(file, "{line}");
        }
    });
}

fn log_mentions(log: &Path, needle: &str) -> bool {
    std::fs::read_to_string(log).is_ok_and(|t| t.contains(needle))
}

/// The last `n` lines of a log, indented, for error messages.
pub fn log_tail(log: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(n);
    let mut out = format!("--- last lines of {} ---\n", log.display());
    for line in &lines[start..] {
        out.push_str("  ");
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// `GET path` on the admin API, its body parsed as JSON (blocking: call it
/// off the async runtime).
fn get_json(addr: SocketAddr, path: &str, limit: Duration) -> Result<serde_json::Value> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(limit))
        .build()
        .into();
    let mut response = agent
        .get(&format!("http://{addr}{path}"))
        .header("Accept", "application/json")
        .call()
        .with_context(|| format!("GET {path} from {addr}"))?;
    Ok(response.body_mut().read_json()?)
}

/// Resource use of the server over a scenario, sampled every 250 ms.
#[derive(Debug)]
pub struct Sampler {
    samples: Arc<Mutex<Vec<TimedSample>>>,
    task: tokio::task::JoinHandle<()>,
}

/// One point of [`Sampler`]'s series.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct TimedSample {
    /// Seconds since sampling started.
    pub t_s: f64,
    /// Resident memory, MiB.
    pub rss_mib: f64,
    /// CPU seconds used so far.
    pub cpu_s: f64,
}

impl Sampler {
    /// Starts sampling `pid`.
    pub fn start(pid: u32) -> Sampler {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&samples);
        let task = tokio::spawn(async move {
            let start = Instant::now();
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            loop {
                tick.tick().await;
                let Ok(s) = process::sample(pid) else { break };
                sink.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(TimedSample {
                        t_s: start.elapsed().as_secs_f64(),
                        rss_mib: s.rss_kib as f64 / 1024.0,
                        cpu_s: s.cpu_s,
                    });
            }
        });
        Sampler { samples, task }
    }

    /// Stops sampling and returns the series.
    pub fn finish(self) -> Vec<TimedSample> {
        self.task.abort();
        std::mem::take(&mut *self.samples.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// The leftover counters the churn scenario checks, and their `/status` keys.
const LEFTOVERS: [(&str, &str); 4] = [
    ("leftover_connections", "connections"),
    ("leftover_sessions", "sessions"),
    ("leftover_topics", "topics"),
    ("leftover_subscriptions", "subscriptions"),
];

impl Server {
    /// Polls the admin API until the server holds no connection, session,
    /// topic or subscription, or `settle` passes, and records what is left
    /// as figures. Without an admin API the checks are skipped, loudly.
    pub async fn leftovers(&self, settle: Duration, out: &mut crate::bot::Outcome) {
        let deadline = Instant::now() + settle;
        let mut last = None;
        loop {
            let status = self.status().await;
            let values: Option<Vec<Option<f64>>> = status
                .as_ref()
                .map(|s| LEFTOVERS.iter().map(|(_, k)| status_number(s, k)).collect());
            let clean = values
                .as_ref()
                .is_some_and(|v| v.iter().all(|x| x.is_none_or(|x| x == 0.0)));
            if values.is_some() {
                last = values;
            }
            if clean || Instant::now() >= deadline || (status.is_none() && last.is_none()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let Some(values) = last else {
            let why = "admin API unavailable: leftover check skipped";
            eprintln!("\n!!! {why} !!!\n");
            out.notes.push(format!("WARNING: {why}"));
            for (figure, _) in LEFTOVERS {
                out.unmeasured.insert(figure.into(), why.into());
            }
            return;
        };
        for ((figure, key), value) in LEFTOVERS.iter().zip(values) {
            match value {
                Some(v) => {
                    out.figures.insert((*figure).into(), v);
                }
                None => {
                    out.unmeasured
                        .insert((*figure).into(), format!("admin /status has no `{key}`"));
                }
            }
        }
    }
}

/// Reads a counter from an admin `/status` document (`connections`, or
/// nested paths such as `topics.count`, whichever shape the server uses).
pub fn status_number(status: &serde_json::Value, key: &str) -> Option<f64> {
    let value = key.split('.').try_fold(status, |v, k| v.get(k))?;
    value
        .as_f64()
        .or_else(|| value.get("count").and_then(serde_json::Value::as_f64))
        .or_else(|| value.get("current").and_then(serde_json::Value::as_f64))
        .or_else(|| value.as_array().map(|a| a.len() as f64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_lines() {
        let a: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        assert_eq!(
            parse_listening("janus-server listening on 127.0.0.1:4000"),
            Some(Some(a))
        );
        assert_eq!(
            parse_listening(
                "2025-01-01T00:00:00Z INFO janus: listening on 127.0.0.1:4000, admin on x"
            ),
            Some(Some(a))
        );
        assert_eq!(parse_listening("listening on port"), Some(None));
        assert_eq!(parse_listening("starting"), None);
    }

    #[test]
    fn status_numbers_in_any_shape() {
        let s: serde_json::Value = serde_json::json!({
            "connections": 5, "topics": {"count": 2}, "sessions": [1, 2, 3],
            "deliveries": {"sent": 9}
        });
        assert_eq!(status_number(&s, "connections"), Some(5.0));
        assert_eq!(status_number(&s, "topics"), Some(2.0));
        assert_eq!(status_number(&s, "sessions"), Some(3.0));
        assert_eq!(status_number(&s, "deliveries.sent"), Some(9.0));
        assert_eq!(status_number(&s, "nope"), None);
    }

    #[test]
    fn admin_get_over_http() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            use std::io::{Read, Write};
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 512];
            let n = s.read(&mut buf).unwrap();
            assert!(buf[..n].starts_with(b"GET /status HTTP/1.1"));
            s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 14\r\n\r\n{\"sessions\":0}")
                .unwrap();
        });
        let v = get_json(addr, "/status", Duration::from_secs(5)).unwrap();
        assert_eq!(v["sessions"], 0);
        server.join().unwrap();
    }
}
