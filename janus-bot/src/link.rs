//! The coordinator's end of one worker: a child process or an agent
//! connection, speaking the line protocol of [`crate::control`].
//!
//! Each link has a reader task that parses the worker's lines and forwards
//! them, tagged with the link's index, to one channel shared by all links,
//! so the coordinator waits on a single queue. When a worker process exits
//! or an agent connection drops, the task sends [`LinkEvent::Closed`] with
//! the reason; a link is never silently lost.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{anyhow, Context as _};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command as Process};
use tokio::sync::mpsc;

use crate::clock::ClockOffset;
use crate::control::{Command, Event};

/// What a link's reader task reports.
#[derive(Debug)]
pub enum LinkEvent {
    /// A line from the worker.
    Event(Event),
    /// The worker is gone, and why.
    Closed(String),
}

/// Events of all links, tagged with the link index.
pub type Inbox = mpsc::UnboundedReceiver<(usize, LinkEvent)>;

/// The sending side of an [`Inbox`].
pub type Outbox = mpsc::UnboundedSender<(usize, LinkEvent)>;

/// One worker as the coordinator sees it.
pub struct Link {
    /// "worker 2" or "agent 10.0.0.5:7070 (worker 1)".
    pub name: String,
    /// Address of the agent, for agent links.
    pub agent: Option<String>,
    /// The worker's clock minus the coordinator's.
    pub offset: ClockOffset,
    writer: Box<dyn AsyncWrite + Unpin + Send>,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Link {
    /// Starts a local worker process (this executable's hidden `worker`
    /// subcommand).
    ///
    /// # Errors
    /// When the process cannot be started.
    pub fn spawn_local(index: usize, outbox: Outbox) -> anyhow::Result<Link> {
        let exe = std::env::current_exe().context("finding this executable to start workers")?;
        let mut child = Process::new(&exe)
            .arg("worker")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            // A group of its own: Ctrl-C at the terminal reaches the
            // coordinator alone, which says what it had measured and then
            // kills its workers (a worker also exits when its stdin closes).
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting worker process {}", exe.display()))?;
        let name = format!("worker {}", index + 1);
        let stdin = child
            .stdin
            .take()
            .ok_or_else(|| anyhow!("worker has no stdin"))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow!("worker has no stdout"))?;
        tokio::spawn(read_events(index, stdout, Some(child), outbox));
        Ok(Link {
            name,
            agent: None,
            offset: ClockOffset::SAME_CLOCK,
            writer: Box::new(stdin),
        })
    }

    /// Connects to an agent, which starts a worker for this connection.
    ///
    /// # Errors
    /// When the agent cannot be reached within `limit`.
    pub async fn connect_agent(
        index: usize,
        agent: &str,
        worker_no: usize,
        limit: Duration,
        outbox: Outbox,
    ) -> anyhow::Result<Link> {
        let stream = match tokio::time::timeout(limit, TcpStream::connect(agent)).await {
            Err(_) => {
                return Err(crate::coordinator::Unreachable(format!(
                    "agent {agent} did not accept a connection within {}",
                    humantime::format_duration(limit)
                ))
                .into())
            }
            Ok(r) => r.map_err(|e| {
                crate::coordinator::Unreachable(format!("connecting to agent {agent}: {e}"))
            })?,
        };
        let _ = stream.set_nodelay(true);
        let (read, write) = stream.into_split();
        tokio::spawn(read_events(index, read, None, outbox));
        Ok(Link {
            name: format!("agent {agent} (worker {worker_no})"),
            agent: Some(agent.to_owned()),
            offset: ClockOffset::SAME_CLOCK,
            writer: Box::new(write),
        })
    }

    /// Sends one command.
    ///
    /// # Errors
    /// When the worker is gone.
    pub async fn send(&mut self, command: &Command) -> anyhow::Result<()> {
        let mut line = serde_json::to_vec(command).context("encoding a command")?;
        line.push(b'\n');
        self.writer
            .write_all(&line)
            .await
            .and(self.writer.flush().await)
            .with_context(|| format!("{} stopped taking commands", self.name))
    }
}

async fn read_events(
    index: usize,
    from: impl AsyncRead + Unpin,
    child: Option<Child>,
    outbox: Outbox,
) {
    let mut lines = BufReader::new(from).lines();
    let why = loop {
        match lines.next_line().await {
            Ok(Some(line)) if line.trim().is_empty() => {}
            Ok(Some(line)) => match serde_json::from_str::<Event>(&line) {
                Ok(event) => {
                    if outbox.send((index, LinkEvent::Event(event))).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let shown: String = line.chars().take(120).collect();
                    break format!("sent an unreadable line ({e}): {shown:?}");
                }
            },
            Ok(None) => break "closed the connection".to_owned(),
            Err(e) => break format!("connection failed: {e}"),
        }
    };
    let why = match child {
        Some(mut child) => match tokio::time::timeout(Duration::from_secs(2), child.wait()).await {
            Ok(Ok(status)) => format!("exited ({status})"),
            _ => why,
        },
        None => why,
    };
    let _ = outbox.send((index, LinkEvent::Closed(why)));
}
