//! The scenarios xtask drives itself with [`crate::driver`] clients, because
//! they need more than one topic, clients that never read, or clients that
//! keep coming and going: `topics`, `churn` and `slow`.
//!
//! Each runner connects its clients (at most [`SETUP_PARALLEL`] connecting
//! at once), waits until all are subscribed, publishes on a schedule, waits
//! for the deliveries to drain, and returns its figures. Loss is counted per
//! subscriber against what it should have received; clients that failed to
//! connect or subscribe count as `errors`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use janus_core::ClientMessage;
use janus_histo::{Recorder, SpanSeries};
use tokio::sync::watch;

use crate::config::Size;
use crate::driver::{
    classify, read_deliveries, setup_all, Conn, Frame, PublishMode, Publisher, Seen, Tally,
};
use crate::figures::Figures;
use crate::server::{status_number, Server};

/// Clients connecting and subscribing at the same time during setup.
pub const SETUP_PARALLEL: usize = 200;

/// What a scenario run measured.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Figures by key.
    pub figures: Figures,
    /// Latencies of every counted delivery.
    pub histogram: Option<Recorder>,
    /// Fan-out span per message.
    pub spans: Option<SpanSeries>,
    /// Things a reader of the report should know.
    pub notes: Vec<String>,
    /// Figures that could not be measured, with the reason (their budget
    /// checks are reported as skipped, loudly).
    pub unmeasured: BTreeMap<String, String>,
    /// What produced the figures, for reproducing by hand.
    pub command: String,
}

impl Outcome {
    fn set(&mut self, key: &str, value: f64) {
        self.figures.insert(key.to_owned(), value);
    }

    /// Latency percentiles from `recorder` (nothing when it is empty).
    pub fn set_latencies(&mut self, recorder: &Recorder) {
        if recorder.is_empty() {
            return;
        }
        let s = recorder.summary();
        self.set("p50_ms", s.p50);
        self.set("p90_ms", s.p90);
        self.set("p99_ms", s.p99);
        self.set("p999_ms", s.p999);
        self.set("max_ms", s.max);
    }
}

fn topic_name(i: usize) -> String {
    format!("t{i}")
}

fn publish_note(mode: PublishMode) -> String {
    match mode {
        PublishMode::Persistent => "publisher: one persistent connection (PROTOCOL X3)".into(),
        PublishMode::OneShot => {
            "publisher: one connection per message (PROTOCOL P5; the server refused X3)".into()
        }
    }
}

/// Waits until `tally` counted `expected` deliveries or `drain` passed since
/// the call; returns whether everything arrived.
async fn drain(tally: &Tally, expected: u64, drain: Duration) -> bool {
    let deadline = Instant::now() + drain;
    while tally.received.load(Ordering::Relaxed) < expected {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    true
}

/// Stops readers and merges what they saw.
async fn collect(
    stop: &watch::Sender<bool>,
    readers: Vec<tokio::task::JoinHandle<Seen>>,
) -> (Recorder, u64, u64) {
    let _ = stop.send(true);
    let mut recorder = Recorder::new();
    let (mut received, mut misordered) = (0, 0);
    for r in readers {
        if let Ok(seen) = r.await {
            seen.record_into(&mut recorder);
            received += seen.in_order;
            misordered += seen.misordered;
        }
    }
    (recorder, received, misordered)
}

/// Many topics with a few subscribers each: client `c` subscribes to topics
/// `c*k .. c*k+k` (mod the topic count), message `i` goes to topic `i mod T`.
///
/// # Errors
/// The publisher cannot reach the server.
pub async fn topics(server: &Server, size: &Size) -> Result<Outcome> {
    let addr = server.addr;
    let clients = size.clients;
    let t = size.topics.unwrap_or(1).max(1);
    let k = size.subscriptions_per_client.unwrap_or(1).clamp(1, t);
    let messages = size.messages();
    let mut out = Outcome {
        command: format!(
            "xtask driver: {clients} clients x {k} topics each over {t} topics, \
             {messages} messages at {}/s, {} B payload",
            size.rate(),
            size.payload()
        ),
        ..Outcome::default()
    };
    let tally = Tally::new(messages);
    let setup_started = Instant::now();
    let (conns, failed) = setup_all(clients, SETUP_PARALLEL, |c| async move {
        let mut conn = Conn::connect_retrying(addr, None).await?;
        let topics: Vec<String> = (0..k).map(|j| topic_name((c * k + j) % t)).collect();
        conn.subscribe(&topics).await?;
        Ok((c, conn))
    })
    .await;
    out.set("setup_s", setup_started.elapsed().as_secs_f64());
    out.set("errors", failed as f64);

    let t64 = t as u64;
    let per_topic = |topic: u64| messages / t64 + u64::from(topic < messages % t64);
    let (stop, stopped) = watch::channel(false);
    let mut expected_total = 0;
    let mut readers = Vec::with_capacity(conns.len());
    for (c, conn) in conns {
        let first = ((c * k) % t) as u64;
        let expected: u64 = (0..k as u64).map(|j| per_topic((first + j) % t64)).sum();
        expected_total += expected;
        let tally = Arc::clone(&tally);
        let stopped = stopped.clone();
        readers.push(tokio::spawn(async move {
            let (mut reader, _write) = conn.into_parts();
            let slot = move |seq: u64| ((seq % t64 + t64 - first) % t64) as usize;
            read_deliveries(&mut reader, &tally, expected, k, slot, stopped).await
        }));
    }
    let mut publisher = Publisher::connect(addr, size.payload()).await?;
    out.notes.push(publish_note(publisher.mode()));
    publisher
        .run(&tally, messages, size.rate(), |i| {
            topic_name((i % t64) as usize)
        })
        .await?;
    let refused = publisher.finish().await;
    drain(
        &tally,
        expected_total,
        Duration::from_secs_f64(size.drain_s()),
    )
    .await;
    let (recorder, received, misordered) = collect(&stop, readers).await;
    finish_delivery_figures(
        &mut out,
        &tally,
        recorder,
        expected_total,
        received,
        misordered,
        refused,
    );
    Ok(out)
}

/// Shared tail of every driver: expected, received, lost, rate, errors,
/// and the latencies, histogram and spans of `recorder` and `tally`.
fn finish_delivery_figures(
    out: &mut Outcome,
    tally: &Tally,
    recorder: Recorder,
    expected: u64,
    received: u64,
    misordered: u64,
    refused: Vec<String>,
) {
    out.set("deliveries_expected", expected as f64);
    out.set("deliveries_received", received as f64);
    out.set("lost", expected.saturating_sub(received) as f64);
    let active = tally.active_s();
    if active > 0.0 {
        out.set("deliveries_per_s", received as f64 / active);
    }
    let errors = out.figures.get("errors").copied().unwrap_or(0.0)
        + tally.errors.load(Ordering::Relaxed) as f64
        + refused.len() as f64;
    out.set("errors", errors);
    if misordered > 0 {
        out.notes.push(format!(
            "{misordered} deliveries arrived twice or out of order"
        ));
    }
    if !refused.is_empty() {
        out.notes.push(format!(
            "{} publishes were answered with an error, first: {}",
            refused.len(),
            refused[0]
        ));
    }
    out.set_latencies(&recorder);
    out.histogram = Some(recorder);
    out.spans = Some(tally.spans());
}

/// Some subscribers never read. The others must get every message in time;
/// the slow ones must be cut (or trimmed) by the server's slow-consumer policy.
///
/// # Errors
/// The publisher cannot reach the server.
pub async fn slow(server: &Server, size: &Size) -> Result<Outcome> {
    let addr = server.addr;
    let clients = size.clients;
    let slow_n = ((clients as f64) * size.slow_percent.unwrap_or(10.0) / 100.0).round() as usize;
    let fast_n = clients - slow_n;
    let messages = size.messages();
    let topic = "slow".to_owned();
    let mut out = Outcome {
        command: format!(
            "xtask driver: {fast_n} reading + {slow_n} never-reading subscribers (4 KiB receive \
             buffer) on one topic, {messages} messages of {} B at {}/s",
            size.payload(),
            size.rate()
        ),
        ..Outcome::default()
    };
    let tally = Tally::new(messages);
    let setup_started = Instant::now();
    let t = topic.clone();
    let (conns, failed) = setup_all(clients, SETUP_PARALLEL, move |c| {
        let topic = t.clone();
        async move {
            let is_slow = c < slow_n;
            let mut conn = Conn::connect_retrying(addr, is_slow.then_some(4096)).await?;
            conn.subscribe(&[topic]).await?;
            Ok((is_slow, conn))
        }
    })
    .await;
    out.set("setup_s", setup_started.elapsed().as_secs_f64());
    out.set("errors", failed as f64);

    let (stop, stopped) = watch::channel(false);
    let mut readers = Vec::new();
    let mut slow_conns = Vec::new();
    for (is_slow, conn) in conns {
        if is_slow {
            slow_conns.push(conn);
            continue;
        }
        let tally = Arc::clone(&tally);
        let stopped = stopped.clone();
        readers.push(tokio::spawn(async move {
            let (mut reader, _write) = conn.into_parts();
            read_deliveries(&mut reader, &tally, messages, 1, |_| 0, stopped).await
        }));
    }
    let expected = readers.len() as u64 * messages;
    let mut publisher = Publisher::connect(addr, size.payload()).await?;
    out.notes.push(publish_note(publisher.mode()));
    publisher
        .run(&tally, messages, size.rate(), |_| topic.clone())
        .await?;
    let refused = publisher.finish().await;
    drain(&tally, expected, Duration::from_secs_f64(size.drain_s())).await;
    let (recorder, received, misordered) = collect(&stop, readers).await;
    finish_delivery_figures(
        &mut out, &tally, recorder, expected, received, misordered, refused,
    );

    // Now read what the slow ones were left with.
    let slow_total = slow_conns.len();
    let verdicts: Vec<SlowVerdict> = {
        let tasks: Vec<_> = slow_conns
            .into_iter()
            .map(|conn| tokio::spawn(drain_slow(conn, messages)))
            .collect();
        let mut v = Vec::new();
        for t in tasks {
            v.push(t.await.unwrap_or(SlowVerdict::Failed));
        }
        v
    };
    let count = |f: fn(&SlowVerdict) -> bool| verdicts.iter().filter(|v| f(v)).count();
    let cut = count(|v| matches!(v, SlowVerdict::Cut { .. }));
    let told = count(|v| matches!(v, SlowVerdict::Cut { told: true }));
    let trimmed = count(|v| matches!(v, SlowVerdict::Trimmed));
    let whole = count(|v| matches!(v, SlowVerdict::GotEverything));
    let stalled = count(|v| matches!(v, SlowVerdict::Stalled | SlowVerdict::Failed));
    out.set("slow_clients", slow_total as f64);
    out.set("slow_cut", (cut + trimmed) as f64);
    out.set("slow_not_cut", (whole + stalled) as f64);
    out.notes.push(format!(
        "slow subscribers: {cut} disconnected ({told} of them got a slow_consumer error frame), \
         {trimmed} kept with older messages dropped, {whole} received everything anyway, \
         {stalled} neither closed nor complete"
    ));
    match server.status().await {
        Some(status) => {
            if let Some(n) = status_number(&status, "slow_consumers") {
                out.set("slow_consumers_counted", n);
            }
        }
        None => {
            out.unmeasured.insert(
                "slow_consumers_counted".into(),
                "admin API unavailable".into(),
            );
        }
    }
    Ok(out)
}

/// What became of one never-reading subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SlowVerdict {
    /// The server closed it (`told`: with a `slow_consumer` error frame).
    Cut {
        /// Whether the error frame made it.
        told: bool,
    },
    /// Still connected, with a gap: older messages were dropped.
    Trimmed,
    /// It received every message: the server never treated it as slow.
    GotEverything,
    /// Still connected, incomplete, no gap seen.
    Stalled,
    /// The drain task failed.
    Failed,
}

/// Reads everything a slow subscriber was left with, until end of stream
/// or two quiet seconds (30 s at most).
async fn drain_slow(conn: Conn, messages: u64) -> SlowVerdict {
    let (mut reader, _write) = conn.into_parts();
    let mut seqs = 0u64;
    let mut last: Option<u64> = None;
    let mut gap = false;
    let mut told = false;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let next = tokio::time::timeout(Duration::from_secs(2), reader.frame()).await;
        match next {
            Ok(Ok(Some(frame))) => match classify(&frame) {
                Frame::Delivery { seq, .. } => {
                    if last.is_some_and(|l| seq != l + 1) || (last.is_none() && seq != 0) {
                        gap = true;
                    }
                    last = Some(seq);
                    seqs += 1;
                }
                Frame::Error(code) => told |= code == "slow_consumer",
                _ => {}
            },
            Ok(Ok(None)) | Ok(Err(_)) => return SlowVerdict::Cut { told },
            Err(_) => break,
        }
        if Instant::now() >= deadline {
            break;
        }
    }
    if seqs >= messages && !gap {
        SlowVerdict::GotEverything
    } else if gap {
        SlowVerdict::Trimmed
    } else {
        SlowVerdict::Stalled
    }
}

/// Clients connect, subscribe and leave continuously while messages flow to
/// steady subscribers. Afterwards the server must have forgotten every
/// session and topic, and its memory must be back near where it was after
/// a warm-up round of the same churn.
///
/// # Errors
/// The publisher cannot reach the server.
pub async fn churn(server: &Server, size: &Size) -> Result<Outcome> {
    let addr = server.addr;
    let steady = size.clients;
    let t = size.topics.unwrap_or(1).max(1);
    let churners = size.churners.unwrap_or(1);
    let hold = Duration::from_millis(size.hold_ms.unwrap_or(50));
    let duration = Duration::from_secs_f64(size.duration_s.unwrap_or(10.0));
    let warmup = Duration::from_secs_f64(size.warmup_s.unwrap_or(0.0));
    let rate = size.rate();
    let messages = (rate * duration.as_secs_f64()).floor().max(1.0) as u64;
    let mut out = Outcome {
        command: format!(
            "xtask driver: {steady} steady subscribers on {t} topics; {churners} clients \
             connecting, subscribing (to one of {} topics), staying {hold:?} and leaving, in a \
             loop for {duration:?} after a {warmup:?} warm-up; {messages} messages at {rate}/s",
            2 * t
        ),
        ..Outcome::default()
    };
    let tally = Tally::new(messages);
    let at_start = server.sample().ok();
    let setup_started = Instant::now();
    let (conns, failed) = setup_all(steady, SETUP_PARALLEL, |c| async move {
        let mut conn = Conn::connect_retrying(addr, None).await?;
        conn.subscribe(&[topic_name(c % t)]).await?;
        Ok((c, conn))
    })
    .await;
    out.set("setup_s", setup_started.elapsed().as_secs_f64());
    let mut errors = failed as u64;

    // Warm-up: the same churn without messages, then the memory reference.
    let cycles = Arc::new(AtomicU64::new(0));
    let churn_errors = Arc::new(AtomicU64::new(0));
    if !warmup.is_zero() {
        run_churners(addr, churners, t, hold, warmup, &cycles, &churn_errors).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let reference = server.sample().ok();
    let warmup_cycles = cycles.swap(0, Ordering::Relaxed);
    errors += churn_errors.swap(0, Ordering::Relaxed);

    let t64 = t as u64;
    let (stop, stopped) = watch::channel(false);
    let mut expected_total = 0;
    let mut readers = Vec::with_capacity(conns.len());
    for (c, conn) in conns {
        let topic = (c % t) as u64;
        let expected = messages / t64 + u64::from(topic < messages % t64);
        expected_total += expected;
        let tally = Arc::clone(&tally);
        let stopped = stopped.clone();
        readers.push(tokio::spawn(async move {
            let (mut reader, write) = conn.into_parts();
            let seen = read_deliveries(&mut reader, &tally, expected, 1, |_| 0, stopped).await;
            drop(write);
            seen
        }));
    }
    let churn_started = Instant::now();
    let churning = {
        let (cycles, churn_errors) = (Arc::clone(&cycles), Arc::clone(&churn_errors));
        tokio::spawn(async move {
            run_churners(addr, churners, t, hold, duration, &cycles, &churn_errors).await;
        })
    };
    let mut publisher = Publisher::connect(addr, size.payload()).await?;
    out.notes.push(publish_note(publisher.mode()));
    publisher
        .run(&tally, messages, rate, |i| topic_name((i % t64) as usize))
        .await?;
    let refused = publisher.finish().await;
    churning.await.context("churn task failed")?;
    let churn_s = churn_started.elapsed().as_secs_f64();
    drain(
        &tally,
        expected_total,
        Duration::from_secs_f64(size.drain_s()),
    )
    .await;
    // Stopping the readers drops every steady connection.
    let (recorder, received, misordered) = collect(&stop, readers).await;
    let main_cycles = cycles.load(Ordering::Relaxed);
    errors += churn_errors.load(Ordering::Relaxed);
    out.set("errors", errors as f64);
    out.set("churn_cycles", main_cycles as f64);
    out.set("churn_cycles_per_s", main_cycles as f64 / churn_s.max(1e-9));
    finish_delivery_figures(
        &mut out,
        &tally,
        recorder,
        expected_total,
        received,
        misordered,
        refused,
    );
    out.notes.push(format!(
        "{warmup_cycles} warm-up cycles, then {main_cycles} cycles while messages flowed"
    ));

    settle(server, size, &mut out).await;
    if let (Some(reference), Ok(end)) = (reference, server.sample()) {
        let growth = (end.rss_kib as f64 - reference.rss_kib as f64) / 1024.0;
        out.set("rss_growth_mib", growth);
        out.notes.push(format!(
            "server RSS {:.1} MiB before any client, {:.1} MiB after warm-up, {:.1} MiB at the \
             end (peak {:.1} MiB)",
            at_start.map_or(0.0, |s| s.rss_kib as f64 / 1024.0),
            reference.rss_kib as f64 / 1024.0,
            end.rss_kib as f64 / 1024.0,
            end.hwm_kib as f64 / 1024.0
        ));
    }
    Ok(out)
}

/// The leftover counters the churn scenario checks, and their `/status` keys.
const LEFTOVERS: [(&str, &str); 4] = [
    ("leftover_connections", "connections"),
    ("leftover_sessions", "sessions"),
    ("leftover_topics", "topics"),
    ("leftover_subscriptions", "subscriptions"),
];

/// Polls the admin API until the server holds nothing, or `settle_s` passes,
/// and records what is left. Without an admin API the checks are skipped,
/// loudly.
async fn settle(server: &Server, size: &Size, out: &mut Outcome) {
    let deadline = Instant::now() + Duration::from_secs_f64(size.settle_s());
    let mut last = None;
    loop {
        let status = server.status().await;
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
    match last {
        Some(values) => {
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
        None => {
            let why = "admin API unavailable: leftover check skipped";
            eprintln!("\n!!! churn: {why} !!!\n");
            out.notes.push(format!("WARNING: {why}"));
            for (figure, _) in LEFTOVERS {
                out.unmeasured.insert(figure.into(), why.into());
            }
        }
    }
}

/// Runs `churners` connect/subscribe/leave loops for `duration`.
async fn run_churners(
    addr: std::net::SocketAddr,
    churners: usize,
    topics: usize,
    hold: Duration,
    duration: Duration,
    cycles: &Arc<AtomicU64>,
    errors: &Arc<AtomicU64>,
) {
    let deadline = Instant::now() + duration;
    let mut loops = Vec::with_capacity(churners);
    for id in 0..churners {
        let (cycles, errors) = (Arc::clone(cycles), Arc::clone(errors));
        loops.push(tokio::spawn(async move {
            let mut n = 0usize;
            while Instant::now() < deadline {
                // Half the topic names have steady subscribers, half only churners.
                let topic = topic_name((id * 7919 + n * 31) % (2 * topics));
                match churn_once(addr, topic, hold, n % 2 == 0).await {
                    Ok(()) => cycles.fetch_add(1, Ordering::Relaxed),
                    Err(_) => errors.fetch_add(1, Ordering::Relaxed),
                };
                n += 1;
            }
        }));
    }
    for l in loops {
        let _ = l.await;
    }
}

/// One churn cycle: connect, subscribe, read for `hold`, maybe unsubscribe, leave.
async fn churn_once(
    addr: std::net::SocketAddr,
    topic: String,
    hold: Duration,
    unsubscribe: bool,
) -> Result<()> {
    let mut conn = Conn::connect_retrying(addr, None).await?;
    conn.subscribe(std::slice::from_ref(&topic)).await?;
    let until = tokio::time::Instant::now() + hold;
    while let Ok(frame) = tokio::time::timeout_at(until, conn.frame()).await {
        if frame?.is_none() {
            anyhow::bail!("server closed a churn client");
        }
    }
    if unsubscribe {
        conn.send(&[ClientMessage::Unsubscribe(topic)]).await?;
    }
    Ok(())
}
