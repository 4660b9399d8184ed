//! The coordinator of a run: plans the swarm, drives the workers through
//! setup, barrier, publishing and collection, and builds the report.
//!
//! ```text
//! plan ─▶ start workers / connect agents ─▶ clock offsets (agents)
//!      ─▶ setup ─▶ barrier: every client subscribed or failed
//!      ─▶ [warm-up: background activity on, then off; server memory reference]
//!      ─▶ [background activity on]
//!      ─▶ publish M messages at rate R to every target, telling every worker
//!         each send instant (converted to its clock)
//!      ─▶ wait until no live client lacks a sent message, or the timeout
//!      ─▶ [background activity off; server memory while it settles]
//!      ─▶ finish: never-reading clients drained, histograms and counters
//!         collected ─▶ report
//! ```
//!
//! Every wait has a deadline. A worker that exits, an agent that drops its
//! connection, or either going silent ends the run with an error naming it.
//! Workers are killed when the coordinator drops them, and an agent's worker
//! exits when its connection closes.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use janus_core::Publish;
use tokio::sync::mpsc;

use crate::clock::{ClockOffset, Probe};
use crate::control::{topic_name, Activity, Command, ErrorCount, Event, Progress, Results, Setup};
use crate::link::{Inbox, Link, LinkEvent};
use crate::plan::{self, Place, PER_WORKER};
use crate::probe;
use crate::progress::{Display, ProgressMode};
use crate::publisher::{self, Outcome, Persistent, PublishMode};
use crate::report::{self, RunReport, ServerRss};
use crate::sys;
use crate::worker::RESERVED_FDS;

/// Ping-pong exchanges per agent link to measure its clock offset.
pub const CLOCK_PROBES: usize = 20;

/// Publishing to a target stops after this many failures in a row.
const GIVE_UP_AFTER: u32 = 3;

/// The server's memory counts as settled, and is not watched any longer,
/// within this factor of the reference (well inside any budget).
const SETTLED: f64 = 1.02;

/// How often the server's memory is read while it settles.
const RSS_EVERY: Duration = Duration::from_millis(250);

/// A failure to reach a server, target or agent at all: `janus-bot` exits
/// with status 3 for it (see [`crate::cli`]).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Unreachable(pub String);

/// Where a run has got to, kept up to date as it goes, so that an
/// interrupted run can say what it had measured (see [`run_watched`]).
#[derive(Debug, Default)]
pub struct Watch(std::sync::Mutex<Snapshot>);

/// A run's progress at one moment.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// What it was doing ("setting up clients", "publishing", …).
    pub phase: &'static str,
    /// Clients asked for.
    pub clients: u64,
    /// Clients subscribed so far.
    pub subscribed: u64,
    /// Messages to publish.
    pub messages: u32,
    /// Messages published so far.
    pub sent: u32,
    /// Deliveries expected in all.
    pub expected: u64,
    /// Deliveries received so far.
    pub received: u64,
}

impl Watch {
    fn update(&self, f: impl FnOnce(&mut Snapshot)) {
        if let Ok(mut s) = self.0.lock() {
            f(&mut s);
        }
    }

    /// The latest snapshot.
    pub fn snapshot(&self) -> Snapshot {
        self.0.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

impl Snapshot {
    /// One line: the phase and the counts so far.
    pub fn describe(&self) -> String {
        let phase = if self.phase.is_empty() {
            "starting"
        } else {
            self.phase
        };
        let mut line = format!(
            "while {phase}: {} of {} clients subscribed",
            self.subscribed, self.clients
        );
        if self.sent > 0 || self.received > 0 {
            line.push_str(&format!(
                ", {} of {} messages published, {} of {} deliveries received",
                self.sent, self.messages, self.received, self.expected
            ));
        }
        line
    }
}

/// Everything a run needs, validated.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Servers; clients are spread over them.
    pub targets: Vec<SocketAddr>,
    /// Their WebSocket addresses when subscribers connect over WebSocket
    /// (same order as `targets`); empty for TCP.
    pub ws_targets: Vec<SocketAddr>,
    /// Agent addresses; empty for local worker processes.
    pub agents: Vec<String>,
    /// Number of subscribing clients (readers and never-reading ones).
    pub clients: u64,
    /// Base topic name (see [`topic_name`]).
    pub topic: String,
    /// Topics the messages are spread over.
    pub topics: u32,
    /// Topics each client subscribes to.
    pub subscriptions: u32,
    /// Subscribing clients that never read.
    pub never_read: u64,
    /// Receive buffer of never-reading and stuck clients, bytes.
    pub never_read_rcvbuf: u32,
    /// Messages to publish.
    pub messages: u32,
    /// Messages per second.
    pub rate: f64,
    /// Size of each message's `data` string, bytes.
    pub payload: usize,
    /// Local worker processes (`None`: as many as needed).
    pub workers: Option<u32>,
    /// Source addresses to bind clients to (`None`: automatic).
    pub source_ips: Option<Vec<IpAddr>>,
    /// Limit for every wait.
    pub timeout: Duration,
    /// Clients connecting at once, over all workers.
    pub connect_concurrency: u32,
    /// One-shot, 2009-form or persistent publishing.
    pub publish_mode: PublishMode,
    /// The targets form one cluster: publish each message once, to the first.
    pub clustered: bool,
    /// Publish key (protocol X4), if the servers require one.
    pub publish_key: Option<String>,
    /// How progress is shown.
    pub progress: ProgressMode,
    /// Background clients (all of them, shared out among the workers).
    pub activity: Activity,
    /// Background activity before the measurement, without messages.
    pub warmup: Duration,
    /// How long the server's memory is watched after the activity stops.
    pub settle: Duration,
    /// A server process on this machine whose memory the report tracks.
    pub server_pid: Option<u32>,
    /// Readers that drop their connection mid-run and resume (X1).
    pub resume: u64,
    /// How long a resuming reader stays away.
    pub resume_away: Duration,
    /// Where resuming readers reconnect; None: the server they left.
    pub resume_target: Option<SocketAddr>,
}

impl RunConfig {
    /// Deliveries the reading clients should get, all together.
    pub fn expected_deliveries(&self) -> u64 {
        // Approximate when the topics do not share the messages evenly;
        // the workers count exactly.
        let readers = self.clients.saturating_sub(self.never_read);
        readers * u64::from(self.messages) * u64::from(self.subscriptions.max(1))
            / u64::from(self.topics.max(1))
    }
}

/// What the coordinator knows about one link as the run goes.
#[derive(Debug, Default)]
struct LinkState {
    progress: Progress,
    ready: bool,
    ready_cpu_ns: u64,
    subscribed_per_target: Vec<u32>,
    setup_errors: Vec<ErrorCount>,
    last_seen: Option<Instant>,
    results: Option<Box<Results>>,
}

/// The shared queue of link events, plus events set aside while waiting for
/// one link in particular.
struct Mailbox {
    inbox: Inbox,
    backlog: VecDeque<(usize, LinkEvent)>,
}

impl Mailbox {
    async fn recv(&mut self) -> Option<(usize, LinkEvent)> {
        if let Some(e) = self.backlog.pop_front() {
            return Some(e);
        }
        self.inbox.recv().await
    }
}

/// The workers of a run and what they said last.
struct Swarm {
    links: Vec<Link>,
    states: Vec<LinkState>,
    mail: Mailbox,
    silence: Duration,
    tick: tokio::time::Interval,
}

impl Swarm {
    /// Sends `command` to every worker.
    async fn broadcast(&mut self, command: &Command) -> anyhow::Result<()> {
        for link in &mut self.links {
            link.send(command).await?;
        }
        Ok(())
    }

    /// Handles worker events until `done` holds (true) or `deadline` passes
    /// (false).
    async fn until(
        &mut self,
        deadline: tokio::time::Instant,
        when: &str,
        done: impl Fn(&[LinkState]) -> bool,
    ) -> anyhow::Result<bool> {
        loop {
            if done(&self.states) {
                return Ok(true);
            }
            tokio::select! {
                ev = self.mail.recv() => {
                    let (i, ev) = ev.ok_or_else(|| anyhow!("every worker is gone"))?;
                    on_event(&self.links, &mut self.states, i, ev, when)?;
                }
                _ = self.tick.tick() => check_silence(&self.links, &self.states, self.silence)?,
                _ = tokio::time::sleep_until(deadline) => return Ok(false),
            }
        }
    }

    /// Turns the background activity off and waits until every background
    /// connection is closed.
    async fn stop_activity(&mut self, limit: Duration) -> anyhow::Result<()> {
        self.broadcast(&Command::Activity { on: false }).await?;
        let deadline = tokio::time::Instant::now() + limit;
        // The next progress report of each worker says how many are open.
        let before: Vec<Instant> = self
            .states
            .iter()
            .map(|s| s.last_seen.unwrap_or_else(Instant::now))
            .collect();
        self.until(
            deadline,
            "while stopping the background clients",
            |states| {
                states
                    .iter()
                    .zip(&before)
                    .all(|(s, b)| s.last_seen.is_some_and(|t| t > *b) && s.progress.active == 0)
            },
        )
        .await?;
        Ok(())
    }
}

/// Resident memory of the watched server, MiB (`None` without a pid).
fn server_rss_mib(cfg: &RunConfig) -> anyhow::Result<Option<f64>> {
    cfg.server_pid
        .map(|pid| {
            sys::rss_kib(pid)
                .map(|kib| kib as f64 / 1024.0)
                .with_context(|| format!("reading the memory of server process {pid}"))
        })
        .transpose()
}

/// Runs a measurement.
///
/// # Errors
/// When the run could not be carried out: a worker or agent failed, every
/// client of a target failed to subscribe ([`Unreachable`] when they could
/// not even connect), a wait timed out. A run that completes with missing
/// deliveries is not an error; see [`RunReport::success`].
pub async fn run(cfg: &RunConfig) -> anyhow::Result<RunReport> {
    run_watched(cfg, &Watch::default()).await
}

/// [`run`], keeping `watch` up to date as it goes.
///
/// # Errors
/// As [`run`].
pub async fn run_watched(cfg: &RunConfig, watch: &Watch) -> anyhow::Result<RunReport> {
    watch.update(|s| {
        *s = Snapshot {
            phase: "starting workers",
            clients: cfg.clients,
            messages: cfg.messages,
            expected: cfg.expected_deliveries(),
            ..Snapshot::default()
        }
    });
    let started = Instant::now();
    let cpu_start = sys::cpu_time();
    let rss_start = server_rss_mib(cfg)?;
    let server_process = cfg.server_pid.and_then(|pid| sys::process_name(pid).ok());
    let limit = sys::raise_open_file_limit().unwrap_or(1024);
    let per_worker = if cfg.agents.is_empty() {
        PER_WORKER.min(limit.saturating_sub(RESERVED_FDS)).max(1)
    } else {
        PER_WORKER
    };
    let plans = plan::plan(
        cfg.clients,
        &cfg.targets,
        cfg.source_ips.as_deref(),
        cfg.workers,
        &cfg.agents,
        per_worker,
    )?;

    let (outbox, inbox) = mpsc::unbounded_channel();
    let mut mail = Mailbox {
        inbox,
        backlog: VecDeque::new(),
    };
    let mut links = Vec::with_capacity(plans.len());
    let mut per_agent: HashMap<&str, usize> = HashMap::new();
    for (i, p) in plans.iter().enumerate() {
        let link = match &p.place {
            Place::Local => Link::spawn_local(i, outbox.clone())?,
            Place::Agent(addr) => {
                let n = per_agent.entry(addr.as_str()).or_insert(0);
                *n += 1;
                Link::connect_agent(i, addr, *n, cfg.timeout, outbox.clone()).await?
            }
        };
        links.push(link);
    }
    drop(outbox);
    for (i, link) in links.iter_mut().enumerate() {
        if link.agent.is_some() {
            link.offset = measure_offset(link, i, &mut mail, cfg.timeout).await?;
        }
    }

    // Setup, up to the barrier.
    let mut display = Display::new(cfg.progress, cfg.clients);
    let concurrency = (cfg.connect_concurrency / links.len() as u32).max(1);
    let max_frame = (cfg.payload * 2 + 4096).max(janus_core::DEFAULT_MAX_FRAME);
    let setup_started = Instant::now();
    let mut states: Vec<LinkState> = (0..links.len()).map(|_| LinkState::default()).collect();
    let parts = links.len() as u64;
    for (i, link) in links.iter_mut().enumerate() {
        let p = &plans[i];
        // Never-reading clients in proportion to each worker's share.
        let never = |n: u64| (cfg.never_read * n).checked_div(cfg.clients).unwrap_or(0);
        let never_read = never(p.first + p.clients()) - never(p.first);
        let resuming = |n: u64| (cfg.resume * n).checked_div(cfg.clients).unwrap_or(0);
        let resume = resuming(p.first + p.clients()) - resuming(p.first);
        let setup = Setup {
            name: link.name.clone(),
            topic: cfg.topic.clone(),
            messages: cfg.messages,
            targets: cfg.targets.clone(),
            ws_targets: cfg.ws_targets.clone(),
            groups: p.groups.clone(),
            connect_concurrency: concurrency,
            timeout_ms: cfg.timeout.as_millis() as u64,
            max_frame,
            topics: cfg.topics,
            subscriptions: cfg.subscriptions,
            first_client: p.first,
            never_read: u32::try_from(never_read).unwrap_or(u32::MAX),
            never_read_rcvbuf: cfg.never_read_rcvbuf,
            activity: cfg.activity.share(i as u64, parts),
            resume: crate::control::ResumePlan {
                clients: u32::try_from(resume).unwrap_or(u32::MAX),
                away_ms: cfg.resume_away.as_millis() as u64,
                target: cfg.resume_target,
            },
        };
        link.send(&Command::Setup(Box::new(setup))).await?;
        states[i].last_seen = Some(Instant::now());
    }
    let silence = cfg.timeout.max(Duration::from_secs(5)) + Duration::from_secs(2);
    let mut swarm = Swarm {
        links,
        states,
        mail,
        silence,
        tick: tokio::time::interval(Duration::from_millis(250)),
    };
    watch.update(|s| s.phase = "setting up clients");
    while !swarm.states.iter().all(|s| s.ready) {
        let soon = tokio::time::Instant::now() + Duration::from_millis(250);
        swarm
            .until(soon, "during setup", |s| s.iter().all(|s| s.ready))
            .await?;
        let t = total(&swarm.states);
        display.setup(&t, cfg.clients);
        watch.update(|s| s.subscribed = u64::from(t.subscribed));
    }
    let setup_s = setup_started.elapsed().as_secs_f64();
    display.setup(&total(&swarm.states), cfg.clients);
    let setup_errors = merge_errors(swarm.states.iter().flat_map(|s| s.setup_errors.iter()));
    watch.update(|s| s.phase = "checking the barrier");
    check_barrier(cfg, &swarm.states, &setup_errors).await?;
    let subscribed = u64::from(total(&swarm.states).subscribed);
    watch.update(|s| s.subscribed = subscribed);
    display.note(&format!(
        "barrier: {subscribed} of {} clients subscribed in {setup_s:.2} s",
        cfg.clients
    ));

    // Warm-up and the memory reference.
    let background = cfg.activity.clients() > 0;
    if background && !cfg.warmup.is_zero() {
        watch.update(|s| s.phase = "warming up");
        display.note(&format!(
            "warm-up: {} background clients for {}",
            cfg.activity.clients(),
            humantime::format_duration(cfg.warmup)
        ));
        swarm.broadcast(&Command::Activity { on: true }).await?;
        let end = tokio::time::Instant::now() + cfg.warmup;
        swarm.until(end, "during the warm-up", |_| false).await?;
        swarm.stop_activity(cfg.timeout).await?;
        // Let the server finish with the clients that just left.
        let end = tokio::time::Instant::now() + Duration::from_millis(500);
        swarm.until(end, "after the warm-up", |_| false).await?;
    }
    let rss_reference = server_rss_mib(cfg)?;
    if background {
        swarm.broadcast(&Command::Activity { on: true }).await?;
    }
    display.note("publishing");
    watch.update(|s| s.phase = "publishing");

    // Publishing and delivery.
    let cpu_barrier = sys::cpu_time();
    let expected = cfg.expected_deliveries();
    display.start_deliveries(expected);
    let publish_targets: Vec<SocketAddr> = if cfg.clustered {
        cfg.targets[..1].to_vec()
    } else {
        cfg.targets.clone()
    };
    let (pub_tx, mut pub_rx) = mpsc::unbounded_channel();
    let start = tokio::time::Instant::now() + Duration::from_millis(20);
    for (slot, target) in publish_targets.iter().enumerate() {
        tokio::spawn(publish_loop(PublishJob {
            slot,
            target: *target,
            cfg: cfg.clone(),
            start,
            tx: pub_tx.clone(),
        }));
    }
    drop(pub_tx);
    let mut collecting: HashMap<u32, (Vec<Option<u64>>, usize)> = HashMap::new();
    let mut send_times: Vec<Option<u64>> = vec![None; cfg.messages as usize];
    let mut publish_errors: Vec<(String, u32)> = Vec::new();
    let mut published_ok = 0u32;
    let mut sent = 0u32;
    let mut publish_done: Option<Instant> = (cfg.messages == 0).then(Instant::now);
    let mut timed_out = false;
    loop {
        if let Some(done) = publish_done {
            let all_in = swarm
                .states
                .iter()
                .all(|s| s.progress.sent_seen >= cfg.messages && s.progress.pending == 0);
            if all_in {
                break;
            }
            if done.elapsed() >= cfg.timeout {
                timed_out = true;
                break;
            }
        }
        tokio::select! {
            Some((slot, seq, outcome)) = pub_rx.recv() => {
                let outcome: Outcome = outcome;
                let (times, done) = collecting
                    .entry(seq)
                    .or_insert_with(|| (vec![None; publish_targets.len()], 0));
                times[slot] = outcome.sent_ns;
                *done += 1;
                if let Some(e) = outcome.error {
                    note_error(&mut publish_errors, format!("message {seq}: {e}"));
                }
                if *done < publish_targets.len() {
                    continue;
                }
                let Some((times, _)) = collecting.remove(&seq) else { continue };
                if times.iter().all(Option::is_some) {
                    published_ok += 1;
                }
                send_times[seq as usize] = times.iter().flatten().min().copied();
                let per_target: Vec<Option<u64>> = if cfg.clustered {
                    vec![times[0]; cfg.targets.len()]
                } else {
                    times
                };
                for link in &mut swarm.links {
                    let converted = per_target.iter().map(|t| t.map(|t| link.offset.to_remote(t))).collect();
                    link.send(&Command::Sent { seq, times: converted }).await?;
                }
                sent += 1;
                if sent == cfg.messages {
                    publish_done = Some(Instant::now());
                }
            }
            ev = swarm.mail.recv() => {
                let (i, ev) = ev.ok_or_else(|| anyhow!("every worker is gone"))?;
                on_event(&swarm.links, &mut swarm.states, i, ev, "while publishing")?;
            }
            _ = swarm.tick.tick() => check_silence(&swarm.links, &swarm.states, silence)?,
        }
        let t = total(&swarm.states);
        display.deliveries(sent, cfg.messages, t.received, expected, t.disconnected);
        watch.update(|s| {
            s.sent = sent;
            s.received = t.received;
        });
    }
    display.finish();

    // The background stops; the server's memory should come back.
    let mut rss_end = None;
    if background {
        watch.update(|s| s.phase = "stopping the background clients");
        swarm.stop_activity(cfg.timeout).await?;
        if let Some(reference) = rss_reference {
            let end = tokio::time::Instant::now() + cfg.settle;
            let mut lowest = f64::INFINITY;
            loop {
                let rss = server_rss_mib(cfg)?.unwrap_or(f64::INFINITY);
                lowest = lowest.min(rss);
                let now = tokio::time::Instant::now();
                if lowest <= reference * SETTLED || now >= end {
                    break;
                }
                swarm
                    .until(now + RSS_EVERY, "while the server settles", |_| false)
                    .await?;
            }
            rss_end = Some(lowest);
        }
    }

    // Collection.
    watch.update(|s| s.phase = "collecting the results");
    swarm.broadcast(&Command::Finish).await?;
    // Never-reading clients are read before the results (up to 30 s).
    let drain = if cfg.never_read > 0 {
        Duration::from_secs(35)
    } else {
        Duration::ZERO
    };
    let deadline = tokio::time::Instant::now() + cfg.timeout.max(Duration::from_secs(10)) + drain;
    let collected = swarm
        .until(deadline, "before sending its results", |s| {
            s.iter().all(|s| s.results.is_some())
        })
        .await?;
    if !collected {
        let late: Vec<&str> = swarm
            .links
            .iter()
            .zip(&swarm.states)
            .filter(|(_, s)| s.results.is_none())
            .map(|(l, _)| l.name.as_str())
            .collect();
        bail!("no results from {} in time", late.join(", "));
    }
    let cpu_end = sys::cpu_time();

    let results: Vec<Results> = swarm
        .states
        .iter_mut()
        .filter_map(|s| s.results.take().map(|r| *r))
        .collect();
    let workers_cpu: u64 = results.iter().map(|r| r.cpu_ns).sum();
    let workers_cpu_at_barrier: u64 = swarm.states.iter().map(|s| s.ready_cpu_ns).sum();
    let input = report::Input {
        cfg,
        links: &swarm.links,
        results: &results,
        setup_s,
        subscribed,
        send_times: &send_times,
        published_ok,
        publish_errors,
        timed_out,
        coordinator_cpu: cpu_end.saturating_sub(cpu_start),
        coordinator_cpu_measure: cpu_end.saturating_sub(cpu_barrier),
        workers_cpu: Duration::from_nanos(workers_cpu),
        workers_cpu_measure: Duration::from_nanos(
            workers_cpu.saturating_sub(workers_cpu_at_barrier),
        ),
        server_rss: cfg.server_pid.map(|pid| ServerRss {
            pid,
            process: server_process,
            start_mib: rss_start.unwrap_or(0.0),
            reference_mib: rss_reference.unwrap_or(0.0),
            end_mib: rss_end,
        }),
        duration: started.elapsed(),
    };
    Ok(report::build(input))
}

async fn measure_offset(
    link: &mut Link,
    index: usize,
    mail: &mut Mailbox,
    limit: Duration,
) -> anyhow::Result<ClockOffset> {
    let mut probes = Vec::with_capacity(CLOCK_PROBES);
    for _ in 0..CLOCK_PROBES {
        let t0 = sys::monotonic_ns();
        link.send(&Command::Ping { t0 }).await?;
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let ev = tokio::time::timeout_at(deadline, mail.inbox.recv())
                .await
                .map_err(|_| {
                    anyhow!(
                        "{} did not answer a clock ping within {}",
                        link.name,
                        humantime::format_duration(limit)
                    )
                })?
                .ok_or_else(|| anyhow!("every worker is gone"))?;
            match ev {
                (i, LinkEvent::Event(Event::Pong { t0: echo, t })) if i == index && echo == t0 => {
                    probes.push(Probe {
                        t0,
                        remote: t,
                        t1: sys::monotonic_ns(),
                    });
                    break;
                }
                (i, LinkEvent::Closed(why)) if i == index => {
                    bail!("{} {why} while measuring its clock offset", link.name)
                }
                (i, LinkEvent::Event(Event::Fatal { error })) if i == index => {
                    bail!("{}: {error}", link.name)
                }
                other => mail.backlog.push_back(other),
            }
        }
    }
    ClockOffset::best_of(&probes).ok_or_else(|| anyhow!("no clock probe for {}", link.name))
}

/// Applies one link event to the run's state; errors end the run.
fn on_event(
    links: &[Link],
    states: &mut [LinkState],
    i: usize,
    ev: LinkEvent,
    when: &str,
) -> anyhow::Result<()> {
    let name = &links[i].name;
    let state = &mut states[i];
    state.last_seen = Some(Instant::now());
    match ev {
        LinkEvent::Event(Event::Progress(p)) => state.progress = p,
        LinkEvent::Event(Event::Ready {
            progress,
            subscribed_per_target,
            errors,
            cpu_ns,
        }) => {
            state.progress = progress;
            state.ready = true;
            state.ready_cpu_ns = cpu_ns;
            state.subscribed_per_target = subscribed_per_target;
            state.setup_errors = errors;
        }
        LinkEvent::Event(Event::Results(r)) => {
            state.progress.received = r.received;
            state.results = Some(r);
        }
        LinkEvent::Event(Event::Pong { .. }) => {}
        LinkEvent::Event(Event::Fatal { error }) => bail!("{name} failed {when}: {error}"),
        // A worker exits once it has sent its results.
        LinkEvent::Closed(_) if state.results.is_some() => {}
        LinkEvent::Closed(why) => bail!("{name} {why} {when}"),
    }
    Ok(())
}

fn check_silence(links: &[Link], states: &[LinkState], silence: Duration) -> anyhow::Result<()> {
    for (link, state) in links.iter().zip(states) {
        if state.results.is_none() && state.last_seen.is_some_and(|t| t.elapsed() > silence) {
            bail!(
                "{} stopped answering (nothing for {})",
                link.name,
                humantime::format_duration(silence)
            );
        }
    }
    Ok(())
}

fn total(states: &[LinkState]) -> Progress {
    let mut t = Progress::default();
    for s in states {
        let p = &s.progress;
        t.connected += p.connected;
        t.subscribed += p.subscribed;
        t.failed += p.failed;
        t.disconnected += p.disconnected;
        t.received += p.received;
        t.pending += p.pending;
        t.sent_seen = t.sent_seen.max(p.sent_seen);
    }
    t
}

/// Sums error counts from several workers.
pub(crate) fn merge_errors<'a>(errors: impl Iterator<Item = &'a ErrorCount>) -> Vec<ErrorCount> {
    let mut merged: HashMap<(&str, u16, &str), u32> = HashMap::new();
    for e in errors {
        *merged.entry((&e.phase, e.target, &e.error)).or_insert(0) += e.count;
    }
    let mut v: Vec<ErrorCount> = merged
        .into_iter()
        .map(|((phase, target, error), count)| ErrorCount {
            phase: phase.to_owned(),
            target,
            error: error.to_owned(),
            count,
        })
        .collect();
    v.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.error.cmp(&b.error)));
    v
}

/// Refuses to publish when some target has no subscribed client at all:
/// that is a run that could not be made, not a measurement.
///
/// A target counts as unreachable (exit status 3) when no client could
/// connect to it, or when they connected but none got a Janus hello: then
/// it is not the service asked for, and a probe connection
/// ([`probe::probe`]) says what it is instead (an HTTP port, say).
async fn check_barrier(
    cfg: &RunConfig,
    states: &[LinkState],
    errors: &[ErrorCount],
) -> anyhow::Result<()> {
    let targets = cfg.targets.len();
    let mut per_target = vec![0u64; targets];
    for s in states {
        for (t, n) in s.subscribed_per_target.iter().enumerate().take(targets) {
            per_target[t] += u64::from(*n);
        }
    }
    let assigned = |t: usize| {
        cfg.clients / targets as u64 + u64::from((t as u64) < cfg.clients % targets as u64)
    };
    let dead: Vec<usize> = (0..targets)
        .filter(|&t| per_target[t] == 0 && assigned(t) > 0)
        .collect();
    if dead.is_empty() {
        return Ok(());
    }
    let websocket = !cfg.ws_targets.is_empty();
    let mut unreachable = true;
    let mut msg = String::new();
    for t in dead {
        // The address the subscribers connected to.
        let target = cfg.ws_targets.get(t).copied().unwrap_or(cfg.targets[t]);
        let mine: Vec<&ErrorCount> = errors
            .iter()
            .filter(|e| usize::from(e.target) == t)
            .collect();
        let why: Vec<String> = mine
            .iter()
            .take(3)
            .map(|e| match e.phase.as_str() {
                "hello" => format!("{} clients: {}", e.count, e.error),
                phase => format!("{} clients: {} ({phase})", e.count, e.error),
            })
            .collect();
        let why = if why.is_empty() {
            "no reason recorded".to_owned()
        } else {
            why.join("; ")
        };
        if !msg.is_empty() {
            msg.push_str("; ");
        }
        // Nobody could even connect: unreachable.
        let refused = mine.iter().all(|e| e.phase == "connect");
        // They connected, and no Janus hello came: not a Janus server.
        let no_hello = mine.iter().any(|e| e.phase == "hello")
            && mine
                .iter()
                .all(|e| e.phase == "connect" || e.phase == "hello");
        if no_hello {
            let greeting = probe::probe(target, cfg.timeout.min(Duration::from_secs(5))).await;
            if greeting.is_janus(websocket) {
                unreachable = false;
                msg.push_str(&format!(
                    "no client could subscribe to {target}: {why}; {}",
                    greeting.explain(websocket)
                ));
            } else {
                let lead = if websocket {
                    "did not answer like a Janus WebSocket port"
                } else {
                    "did not greet like a Janus server"
                };
                msg.push_str(&format!(
                    "{target} {lead} ({why}); {}",
                    greeting.explain(websocket)
                ));
            }
        } else {
            unreachable &= refused;
            msg.push_str(&format!("no client could subscribe to {target}: {why}"));
        }
    }
    if unreachable {
        Err(anyhow::Error::new(Unreachable(msg))).context("setup failed")
    } else {
        Err(anyhow!(msg)).context("setup failed")
    }
}

fn note_error(errors: &mut Vec<(String, u32)>, e: String) {
    // Group by the error text without the message number.
    let key = e
        .split_once(": ")
        .map_or(e.as_str(), |(_, rest)| rest)
        .to_owned();
    match errors
        .iter_mut()
        .find(|(k, _)| k.split_once(": ").map(|(_, r)| r) == Some(key.as_str()))
    {
        Some((_, n)) => *n += 1,
        None => errors.push((e, 1)),
    }
}

struct PublishJob {
    slot: usize,
    target: SocketAddr,
    cfg: RunConfig,
    start: tokio::time::Instant,
    tx: mpsc::UnboundedSender<(usize, u32, Outcome)>,
}

/// Publishes every message to one target, on schedule, one after the other.
async fn publish_loop(job: PublishJob) {
    let PublishJob {
        slot,
        target,
        cfg,
        start,
        tx,
    } = job;
    let data = publisher::payload(cfg.payload);
    let mut persistent = Persistent::new(target, cfg.timeout);
    let mut failures = 0u32;
    for seq in 0..cfg.messages {
        // A target given up on is reported at once, not on schedule.
        if failures < GIVE_UP_AFTER {
            let at = start + Duration::from_secs_f64(f64::from(seq) / cfg.rate);
            tokio::time::sleep_until(at).await;
        }
        let topic = topic_name(&cfg.topic, seq % cfg.topics.max(1), cfg.topics);
        let outcome = if failures >= GIVE_UP_AFTER {
            Outcome {
                sent_ns: None,
                error: Some(publisher::PublishError::Broken {
                    target,
                    what: format!("not published after {GIVE_UP_AFTER} failures in a row"),
                }),
            }
        } else {
            match Publish::new(topic, "janus-bot", seq.to_string(), &data) {
                Ok(mut p) => {
                    p.key.clone_from(&cfg.publish_key);
                    let frame = publisher::encode(p, cfg.publish_mode);
                    publisher::publish(
                        cfg.publish_mode,
                        target,
                        &frame,
                        cfg.timeout,
                        &mut persistent,
                    )
                    .await
                }
                Err(e) => Outcome {
                    sent_ns: None,
                    error: Some(publisher::PublishError::Broken {
                        target,
                        what: format!("cannot build the publish: {e}"),
                    }),
                },
            }
        };
        if outcome.error.is_some() {
            failures += 1;
        } else {
            failures = 0;
        }
        if tx.send((slot, seq, outcome)).is_err() {
            return;
        }
    }
}
