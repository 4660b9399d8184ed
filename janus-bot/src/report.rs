//! The report of a run: merged figures, the text printed at the end, the
//! `--json` document and the `--plot` SVG.
//!
//! The JSON is a superset of a `janus-histo` report (it has `title`,
//! `histogram` and `spans`), so `janus-histo show run.json` and
//! `janus-histo merge` read it as they are.
//!
//! Per message, two times are reported under distinct names, the same in
//! this report, in `janus-histo show` and in the plot:
//!
//! - the **fan-out span**, publish → last subscriber (the 2009 goal):
//!   `span_ms` (summary over the messages) and `spans[].max_ms`;
//! - the **spread**, first → last subscriber: `spread_ms` (summary, added
//!   later) and `spans[].span_ms` (a name kept for older readers, meaning
//!   what it always meant).

use std::io::{self, Write};
use std::time::Duration;

use janus_histo::{
    format_millis, Recorder, Report, SpanPoint, SpanSeries, Summary, TextOptions, FANOUT_LABEL,
    SPREAD_LABEL,
};
use serde::Serialize;
use serde_json::json;

use crate::clock::ClockOffset;
use std::collections::BTreeMap;

use crate::control::{ErrorCount, NeverRead, Results, ResumeCounts, RoleCounts};
use crate::coordinator::{merge_errors, RunConfig};
use crate::link::Link;
use crate::publisher::PublishMode;
use crate::tally::MessageStat;

/// What the coordinator hands over to build a report.
#[derive(Debug)]
pub struct Input<'a> {
    /// The run's configuration.
    pub cfg: &'a RunConfig,
    /// The workers.
    pub links: &'a [Link],
    /// Their results, in link order.
    pub results: &'a [Results],
    /// Seconds from the first setup command to the barrier.
    pub setup_s: f64,
    /// Clients subscribed at the barrier.
    pub subscribed: u64,
    /// Earliest send instant of each message (coordinator clock).
    pub send_times: &'a [Option<u64>],
    /// Messages published to every target without error.
    pub published_ok: u32,
    /// Publish errors, grouped, with counts.
    pub publish_errors: Vec<(String, u32)>,
    /// The wait for deliveries ended by the timeout.
    pub timed_out: bool,
    /// Coordinator CPU, whole run.
    pub coordinator_cpu: Duration,
    /// Coordinator CPU from the barrier on.
    pub coordinator_cpu_measure: Duration,
    /// Worker CPU, whole run.
    pub workers_cpu: Duration,
    /// Worker CPU from their barrier on.
    pub workers_cpu_measure: Duration,
    /// The watched server's memory, with `--server-pid`.
    pub server_rss: Option<ServerRss>,
    /// Wall time of the run.
    pub duration: Duration,
}

/// Resident memory of the server process named by `--server-pid`, MiB.
#[derive(Debug, Clone, Serialize)]
pub struct ServerRss {
    /// Its pid.
    pub pid: u32,
    /// Its process name (`/proc/PID/comm`), `janus-server` unless the pid
    /// was wrong.
    pub process: Option<String>,
    /// Before any client connected.
    pub start_mib: f64,
    /// With every subscriber connected, after the warm-up (if any): the
    /// reference the end is compared with.
    pub reference_mib: f64,
    /// The lowest reading in the settle time after the background clients
    /// left (none without background clients).
    pub end_mib: Option<f64>,
}

impl ServerRss {
    /// How far the end stayed above the reference, percent.
    pub fn growth_percent(&self) -> Option<f64> {
        let end = self.end_mib?;
        (self.reference_mib > 0.0).then(|| (end - self.reference_mib) / self.reference_mib * 100.0)
    }
}

/// What the clients that dropped their connection and resumed saw (X1).
#[derive(Debug, Clone, Serialize)]
pub struct ResumeReport {
    /// Clients planned to resume.
    pub clients: u32,
    /// Where they resumed (`--resume-target`); null: the server they left.
    pub resumed_on: Option<String>,
    /// Resumes answered `recovered: true`.
    pub recovered: u32,
    /// Resumes answered `recovered: false`: a failure, as long as the
    /// server's history reaches back.
    pub not_recovered: u32,
    /// Resumes with no `resumed` answer.
    pub failed: u32,
    /// Messages the server replayed, in all.
    pub replayed: u64,
    /// Reconnect to `resumed` answer.
    pub resume_time_ms: Summary,
    /// Latency of every distinct delivery to a resuming client, replayed or live.
    pub latency_ms: Summary,
    /// Latency of every distinct delivery to the other clients.
    pub others_latency_ms: Summary,
}

impl ResumeReport {
    /// Whether every planned resume recovered.
    pub fn ok(&self) -> bool {
        self.recovered == self.clients && self.not_recovered == 0 && self.failed == 0
    }
}

/// Clients that did not get every message once, in order, by why.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct BadClients {
    /// Never subscribed (refused, reset, timed out, server error).
    pub setup: u64,
    /// Lost their connection after subscribing.
    pub disconnected: u64,
    /// Stayed connected but missed messages.
    pub missing: u64,
    /// Got a message twice.
    pub duplicated: u64,
    /// Got messages out of order.
    pub reordered: u64,
}

/// One agent's clock, as measured.
#[derive(Debug, Clone, Serialize)]
pub struct AgentClock {
    /// The worker link ("agent A (worker 1)").
    pub name: String,
    /// Agent clock minus coordinator clock, ms.
    pub offset_ms: f64,
    /// Half the best round trip, ms.
    pub uncertainty_ms: f64,
    /// Probes taken.
    pub probes: u32,
}

/// Bot CPU time.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Cpu {
    /// Coordinator process, whole run, s.
    pub coordinator_s: f64,
    /// All worker processes, whole run, s.
    pub workers_s: f64,
    /// Both, s.
    pub total_s: f64,
    /// Coordinator and workers from the barrier to the end (publishing and
    /// deliveries), s.
    pub measure_s: f64,
    /// `measure_s` per million deliveries received.
    pub per_million_deliveries_s: Option<f64>,
    /// Socket reads that returned data, all workers, whole run.
    pub reads: u64,
    /// Event loop wake-ups with socket events, all workers, whole run.
    pub wakeups: u64,
}

/// A client error, with the target by address.
#[derive(Debug, Clone, Serialize)]
pub struct ClientError {
    /// `connect`, `hello` (connected, no Janus hello), `handshake` (the
    /// subscribe), `resume` or `run`.
    pub phase: String,
    /// The server.
    pub target: String,
    /// What happened.
    pub error: String,
    /// To how many clients.
    pub count: u32,
}

/// Smallest and largest difference between the bot's wall clock at receive
/// and the server's timestamp, ms.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Skew {
    /// Smallest, ms.
    pub min: f64,
    /// Largest, ms.
    pub max: f64,
}

/// Everything a run found.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// One-line description.
    pub title: String,
    /// Every expected delivery arrived and every client was good.
    pub success: bool,
    /// The servers.
    pub targets: Vec<String>,
    /// Agents and their clocks (empty for local runs).
    pub agents: Vec<AgentClock>,
    /// Worker processes.
    pub workers: usize,
    /// Topic (the base name when there are several).
    pub topic: String,
    /// Topics the messages were spread over.
    pub topics: u32,
    /// Topics each client subscribed to.
    pub subscriptions: u32,
    /// Messages published (per target).
    pub messages: u32,
    /// Publish rate, messages/s.
    pub rate: f64,
    /// Payload size, bytes.
    pub payload: usize,
    /// One-shot or persistent publishing.
    pub publish_mode: PublishMode,
    /// Messages published to every target without error.
    pub published: u32,
    /// Clients asked for.
    pub clients: u64,
    /// Clients subscribed at the barrier.
    pub subscribed: u64,
    /// Setup time up to the barrier, s.
    pub setup_s: f64,
    /// Clients that got every message once and in order, and stayed connected.
    pub clients_good: u64,
    /// The others.
    pub clients_bad: u64,
    /// Why they are bad.
    pub bad: BadClients,
    /// Deliveries the reading clients should have received.
    pub deliveries_expected: u64,
    /// Distinct deliveries received.
    pub deliveries_received: u64,
    /// Repeated deliveries.
    pub duplicates: u64,
    /// Deliveries that came after a later message.
    pub reordered: u64,
    /// Deliveries with a `message_id` this run did not publish.
    pub unexpected: u64,
    /// Deliveries that seemed to arrive before their publish (clock offset
    /// error; recorded as 0).
    pub negative_latencies: u64,
    /// The wait for deliveries ended by the timeout.
    pub timed_out: bool,
    /// How latency was measured.
    pub latency_method: String,
    /// Latency of every distinct delivery.
    pub latency_ms: Summary,
    /// The fan-out span: per message, publish → last subscriber.
    pub span_ms: Summary,
    /// The spread: per message, first → last subscriber.
    pub spread_ms: Summary,
    /// Latency histogram (janus-histo serialized form, µs).
    pub histogram: Recorder,
    /// Per message: the spread, first → last subscriber (`span_ms`), and the
    /// fan-out span, publish → last subscriber (`max_ms`).
    pub spans: SpanSeries,
    /// Publish failures, grouped.
    pub publish_errors: Vec<String>,
    /// Client failures, grouped.
    pub errors: Vec<ClientError>,
    /// Sanity check of the servers' timestamps against the bot's wall clock.
    pub server_timestamp_skew_ms: Option<Skew>,
    /// Bot CPU time.
    pub cpu: Cpu,
    /// What became of the never-reading clients (none: there were none).
    pub never_read: Option<NeverRead>,
    /// What the background clients did, by kind.
    pub activity: BTreeMap<String, RoleCounts>,
    /// The watched server's memory (`--server-pid`).
    pub server_rss: Option<ServerRss>,
    /// The clients that resumed (none: no resume run).
    pub resume: Option<ResumeReport>,
    /// Wall time of the whole run, s.
    pub duration_s: f64,
}

fn ms(ns: i64) -> f64 {
    ns as f64 / 1e6
}

/// Merges the workers' results.
pub fn build(input: Input<'_>) -> RunReport {
    let cfg = input.cfg;
    let m = cfg.messages as usize;
    let mut histogram = Recorder::new();
    let mut per_message = vec![MessageStat::default(); m];
    let mut bad = BadClients::default();
    let (mut good, mut received, mut duplicates, mut reordered, mut unexpected, mut negative) =
        (0u64, 0u64, 0u64, 0u64, 0u64, 0u64);
    let mut skew: Option<(i64, i64)> = None;
    let mut expected = 0u64;
    let mut never_read = NeverRead::default();
    let mut activity: BTreeMap<String, RoleCounts> = BTreeMap::new();
    let mut resumes = ResumeCounts::default();
    for r in input.results {
        expected += r.expected;
        resumes.merge(&r.resume);
        never_read.merge(&r.never_read);
        for (role, counts) in &r.activity {
            activity.entry(role.clone()).or_default().merge(counts);
        }
        histogram.merge(&r.histogram);
        for (i, stat) in r.messages.iter().enumerate() {
            if m > 0 {
                per_message[i % m].merge(stat);
            }
        }
        good += u64::from(r.good);
        bad.setup += u64::from(r.bad_setup);
        bad.disconnected += u64::from(r.bad_disconnected);
        bad.missing += u64::from(r.bad_missing);
        bad.duplicated += u64::from(r.bad_duplicated);
        bad.reordered += u64::from(r.bad_reordered);
        received += r.received;
        duplicates += r.duplicates;
        reordered += r.reordered;
        unexpected += r.unexpected;
        negative += r.negative;
        if let Some((lo, hi)) = r.server_skew_us {
            skew = Some(skew.map_or((lo, hi), |(a, b)| (a.min(lo), b.max(hi))));
        }
    }
    // Clients a worker never got to run (it failed) count as setup failures.
    let accounted: u64 = input.results.iter().map(|r| u64::from(r.clients)).sum();
    bad.setup += cfg.clients.saturating_sub(accounted);
    let clients_bad = bad.setup + bad.disconnected + bad.missing + bad.duplicated + bad.reordered;

    let first_send = input.send_times.iter().flatten().min().copied();
    let mut spans = SpanSeries::new();
    for (seq, stat) in per_message.iter().enumerate() {
        if stat.count == 0 {
            continue;
        }
        let at_s = match (input.send_times.get(seq).copied().flatten(), first_send) {
            (Some(t), Some(t0)) => Some((t - t0) as f64 / 1e9),
            _ => None,
        };
        spans.push(SpanPoint {
            message: seq as u64,
            at_s,
            span_ms: ms(stat.last_ns - stat.first_ns),
            p50_ms: None,
            max_ms: Some(ms(stat.last_ns)),
        });
    }

    let mut agents = Vec::new();
    for link in input.links {
        if link.agent.is_some() {
            agents.push(agent_clock(&link.name, &link.offset));
        }
    }
    let latency_method = if agents.is_empty() {
        "receive instant minus publish send instant, both read on CLOCK_MONOTONIC of this machine (one clock); the server's timestamp is only sanity-checked".to_owned()
    } else {
        "receive instant on the agent's CLOCK_MONOTONIC minus the coordinator's publish send instant converted to the agent's clock with the measured offset (best of ping-pong probes); each latency is uncertain by that agent's ± uncertainty_ms; the server's timestamp is only sanity-checked".to_owned()
    };

    let errors = merge_errors(input.results.iter().flat_map(|r| r.errors.iter()))
        .into_iter()
        .map(|e: ErrorCount| ClientError {
            target: cfg
                .targets
                .get(usize::from(e.target))
                .map_or_else(|| format!("target {}", e.target), ToString::to_string),
            phase: e.phase,
            error: e.error,
            count: e.count,
        })
        .collect();

    let measure = input.coordinator_cpu_measure + input.workers_cpu_measure;
    let total = input.coordinator_cpu + input.workers_cpu;
    let targets: Vec<String> = cfg.targets.iter().map(ToString::to_string).collect();
    let ws: Vec<String> = cfg.ws_targets.iter().map(ToString::to_string).collect();
    let on = if ws.is_empty() {
        targets.join(", ")
    } else {
        format!(
            "WebSocket {} (publishing to {})",
            ws.join(", "),
            targets.join(", ")
        )
    };
    let title = format!(
        "janus-bot: {} clients on {}, {} message{}",
        cfg.clients,
        on,
        cfg.messages,
        if cfg.messages == 1 { "" } else { "s" }
    );
    let resume = (cfg.resume > 0).then(|| ResumeReport {
        clients: resumes.clients,
        resumed_on: cfg.resume_target.map(|a| a.to_string()),
        recovered: resumes.recovered,
        not_recovered: resumes.not_recovered,
        failed: resumes.failed,
        replayed: resumes.replayed,
        resume_time_ms: resumes.resume_time.summary(),
        latency_ms: resumes.latency.summary(),
        others_latency_ms: resumes.others_latency.summary(),
    });
    RunReport {
        title,
        success: received == expected
            && clients_bad == 0
            && resume.as_ref().is_none_or(ResumeReport::ok),
        targets,
        agents,
        workers: input.links.len(),
        topic: cfg.topic.clone(),
        topics: cfg.topics,
        subscriptions: cfg.subscriptions,
        messages: cfg.messages,
        rate: cfg.rate,
        payload: cfg.payload,
        publish_mode: cfg.publish_mode,
        published: input.published_ok,
        clients: cfg.clients,
        subscribed: input.subscribed,
        setup_s: input.setup_s,
        clients_good: good,
        clients_bad,
        bad,
        deliveries_expected: expected,
        deliveries_received: received,
        duplicates,
        reordered,
        unexpected,
        negative_latencies: negative,
        timed_out: input.timed_out,
        latency_method,
        latency_ms: histogram.summary(),
        // Exact, from the same per-message values as `spans`, so that
        // `janus-histo show` of this report prints the same figures.
        span_ms: Summary::of_values(spans.points.iter().filter_map(|p| p.max_ms)),
        spread_ms: Summary::of_values(spans.points.iter().map(|p| p.span_ms)),
        histogram,
        spans,
        publish_errors: input
            .publish_errors
            .into_iter()
            .map(|(e, n)| {
                if n > 1 {
                    format!("{e} (and {} more like it)", n - 1)
                } else {
                    e
                }
            })
            .collect(),
        errors,
        server_timestamp_skew_ms: skew.map(|(lo, hi)| Skew {
            min: lo as f64 / 1e3,
            max: hi as f64 / 1e3,
        }),
        cpu: Cpu {
            coordinator_s: input.coordinator_cpu.as_secs_f64(),
            workers_s: input.workers_cpu.as_secs_f64(),
            total_s: total.as_secs_f64(),
            measure_s: measure.as_secs_f64(),
            per_million_deliveries_s: (received > 0)
                .then(|| measure.as_secs_f64() * 1e6 / received as f64),
            reads: input.results.iter().map(|r| r.reads).sum(),
            wakeups: input.results.iter().map(|r| r.wakeups).sum(),
        },
        never_read: (cfg.never_read > 0).then_some(never_read),
        activity,
        server_rss: input.server_rss,
        resume,
        duration_s: input.duration.as_secs_f64(),
    }
}

fn agent_clock(name: &str, offset: &ClockOffset) -> AgentClock {
    AgentClock {
        name: name.to_owned(),
        offset_ms: offset.offset_ns as f64 / 1e6,
        uncertainty_ms: offset.uncertainty_ns as f64 / 1e6,
        probes: offset.probes,
    }
}

impl RunReport {
    /// The janus-histo report of the latencies (for text and SVG rendering).
    pub fn histo_report(&self) -> Report {
        let mut report = Report::new(
            "latency: publish send → subscriber receive".to_owned(),
            self.histogram.clone(),
        );
        report
            .metadata
            .insert("clients".into(), json!(self.clients));
        report
            .metadata
            .insert("messages".into(), json!(self.messages));
        report
            .metadata
            .insert("targets".into(), json!(self.targets.join(" ")));
        if self.spans.len() > 1 {
            report.spans = Some(self.spans.clone());
        }
        report
    }

    /// The `--json` document.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// The `--plot` SVG.
    pub fn to_svg(&self) -> String {
        let mut report = self.histo_report();
        report.title = self.title.clone();
        janus_histo::svg_string(&report)
    }

    /// Writes the human-readable report.
    ///
    /// # Errors
    /// When writing fails.
    pub fn render(&self, out: &mut impl Write) -> io::Result<()> {
        writeln!(out, "{}", self.title)?;
        writeln!(
            out,
            "  topic {:?}, {} B payload, {} publish at {}/s, {} worker process{}",
            self.topic,
            self.payload,
            self.publish_mode.describe(),
            self.rate,
            self.workers,
            if self.workers == 1 { "" } else { "es" }
        )?;
        for a in &self.agents {
            writeln!(
                out,
                "  {}: clock offset {:+.3} ms ± {:.3} ms (best of {} probes)",
                a.name, a.offset_ms, a.uncertainty_ms, a.probes
            )?;
        }
        if self.topics > 1 {
            writeln!(
                out,
                "  {} topics, {} per client; message i goes to topic i mod {}",
                self.topics, self.subscriptions, self.topics
            )?;
        }
        writeln!(
            out,
            "setup: {} of {} clients subscribed in {:.2} s",
            self.subscribed, self.clients, self.setup_s
        )?;
        let b = &self.bad;
        writeln!(
            out,
            "clients: {} good, {} bad (setup failed {}, disconnected {}, missing messages {}, duplicated {}, reordered {})",
            self.clients_good, self.clients_bad, b.setup, b.disconnected, b.missing, b.duplicated, b.reordered
        )?;
        let pct = if self.deliveries_expected > 0 {
            100.0 * self.deliveries_received as f64 / self.deliveries_expected as f64
        } else {
            100.0
        };
        writeln!(
            out,
            "deliveries: {} expected, {} received ({pct:.3} %), {} duplicated, {} reordered, {} unexpected{}",
            self.deliveries_expected,
            self.deliveries_received,
            self.duplicates,
            self.reordered,
            self.unexpected,
            if self.timed_out { "; stopped waiting at the timeout" } else { "" }
        )?;
        writeln!(
            out,
            "published: {} of {} messages to every target",
            self.published, self.messages
        )?;
        for e in self.publish_errors.iter().take(10) {
            writeln!(out, "  publish error: {e}")?;
        }
        for e in self.errors.iter().take(10) {
            writeln!(
                out,
                "  {} clients of {} failed ({}): {}",
                e.count, e.target, e.phase, e.error
            )?;
        }
        if self.errors.len() > 10 {
            writeln!(
                out,
                "  … {} more kinds of client error in the JSON report",
                self.errors.len() - 10
            )?;
        }
        writeln!(out, "latency method: {}", self.latency_method)?;
        if self.negative_latencies > 0 {
            writeln!(
                out,
                "  {} deliveries seemed to precede their publish (clock offset error) and count as 0",
                self.negative_latencies
            )?;
        }
        writeln!(out)?;
        // The per-message figures follow, with min and p99 as well.
        let mut latencies = self.histo_report();
        latencies.spans = None;
        janus_histo::render_text(&latencies, &TextOptions::default(), out)
            .map_err(io::Error::other)?;
        writeln!(out)?;
        for (label, s) in [
            (FANOUT_LABEL, &self.span_ms),
            (SPREAD_LABEL, &self.spread_ms),
        ] {
            if s.count == 0 {
                continue;
            }
            writeln!(
                out,
                "{label} over {} message{}: min {}, p50 {}, p99 {}, max {}",
                s.count,
                if s.count == 1 { "" } else { "s" },
                format_millis(s.min),
                format_millis(s.p50),
                format_millis(s.p99),
                format_millis(s.max)
            )?;
        }
        if let Some(k) = &self.server_timestamp_skew_ms {
            let note = if k.min < -1000.0 || k.max > 60_000.0 {
                "  ← server clock disagrees with this machine's"
            } else {
                ""
            };
            writeln!(
                out,
                "server timestamps (sanity check only): bot wall clock − server timestamp from {:+.1} ms to {:+.1} ms{note}",
                k.min, k.max
            )?;
        }
        if let Some(n) = &self.never_read {
            writeln!(
                out,
                "never-reading clients: {} subscribed; {} cut by the server ({} told slow_consumer), {} trimmed, {} got everything anyway, {} neither cut nor complete",
                n.clients, n.cut, n.told, n.trimmed, n.complete, n.stalled
            )?;
        }
        if let Some(r) = &self.resume {
            let (t, l, o) = (&r.resume_time_ms, &r.latency_ms, &r.others_latency_ms);
            writeln!(
                out,
                "resumed clients: {} planned{}; {} recovered, {} not recovered, {} failed; {} messages replayed",
                r.clients,
                r.resumed_on
                    .as_deref()
                    .map_or(String::new(), |a| format!(", resuming on {a}")),
                r.recovered,
                r.not_recovered,
                r.failed,
                r.replayed
            )?;
            writeln!(
                out,
                "  resume time (reconnect to resumed): p50 {}, p99 {}, max {}; their deliveries: p50 {}, p99 {}, max {}; the others' deliveries: p50 {}, p99 {}, max {}",
                format_millis(t.p50),
                format_millis(t.p99),
                format_millis(t.max),
                format_millis(l.p50),
                format_millis(l.p99),
                format_millis(l.max),
                format_millis(o.p50),
                format_millis(o.p99),
                format_millis(o.max)
            )?;
        }
        for (role, c) in &self.activity {
            let codes: Vec<String> = c
                .error_frames
                .iter()
                .map(|(code, n)| format!("{code} {n}"))
                .collect();
            writeln!(
                out,
                "background {role}: {} clients, {} connections, {} cycles, {} closed by the server, {} failed, {} bytes sent{}",
                c.clients,
                c.connections,
                c.cycles,
                c.closed_by_server,
                c.failures,
                c.bytes_sent,
                if codes.is_empty() {
                    String::new()
                } else {
                    format!("; error frames: {}", codes.join(", "))
                }
            )?;
        }
        if let Some(m) = &self.server_rss {
            let end = m.end_mib.map_or_else(String::new, |e| {
                format!(
                    ", {e:.1} MiB after the background clients left ({:+.1} %)",
                    m.growth_percent().unwrap_or(0.0)
                )
            });
            let process = match m.process.as_deref() {
                Some(crate::sys::SERVER_PROCESS_NAME) | None => String::new(),
                Some(other) => format!(", {other:?}: not a janus-server"),
            };
            writeln!(
                out,
                "server memory (pid {}{process}): {:.1} MiB at the start, {:.1} MiB with every subscriber{}",
                m.pid, m.start_mib, m.reference_mib, end
            )?;
        }
        let c = &self.cpu;
        let per_million = c.per_million_deliveries_s.map_or_else(String::new, |p| {
            format!(" = {p:.2} CPU-s per million deliveries")
        });
        writeln!(
            out,
            "bot CPU: {:.2} s in all (coordinator {:.2} s, workers {:.2} s); {:.2} s from the barrier on{per_million}",
            c.total_s, c.coordinator_s, c.workers_s, c.measure_s
        )?;
        if c.reads > 0 && c.wakeups > 0 {
            // Setup reads (hello, ACK) are included; they matter only for
            // runs with few messages.
            writeln!(
                out,
                "bot I/O: {} socket reads in {} wake-ups ({:.2} reads per wake-up, {:.2} deliveries per read)",
                c.reads,
                c.wakeups,
                c.reads as f64 / c.wakeups as f64,
                self.deliveries_received as f64 / c.reads as f64
            )?;
        }
        if self.success {
            writeln!(
                out,
                "result: OK, every expected delivery arrived ({:.1} s)",
                self.duration_s
            )?;
        } else {
            let resumes = self
                .resume
                .as_ref()
                .filter(|r| !r.ok())
                .map_or_else(String::new, |r| {
                    format!(
                        ", {} of {} resumes not recovered or failed",
                        r.clients - r.recovered,
                        r.clients
                    )
                });
            writeln!(
                out,
                "result: FAILED, {} of {} deliveries missing, {} bad clients{resumes}",
                self.deliveries_expected
                    .saturating_sub(self.deliveries_received),
                self.deliveries_expected,
                self.clients_bad
            )?;
        }
        Ok(())
    }
}
