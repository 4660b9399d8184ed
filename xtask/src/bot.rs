//! Running `janus-bot` for a scenario, and reading its JSON report into
//! figures.
//!
//! Every scenario is a `janus-bot` run mode: `fanout` and `train` are
//! `run`, `topics` is `run --topics`, `slow` is `run --never-read-percent`,
//! `churn` is `churn`, `soak` is `soak`, `resume` is `resume`. xtask only picks the flags, so
//! the load test and an engineer at a terminal use one instrument with one
//! clock.
//!
//! The bot's stdout (its human report) is copied to ours when it ends; its
//! stderr (progress) goes to `target/loadtest/<scenario>.bot.log` and its
//! tail is shown when it fails. The bot exits 1 whenever a delivery is
//! missing; that is not an error here as long as it wrote its JSON: the
//! `lost` budget then fails with the numbers.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use janus_histo::{Recorder, SpanSeries};
use serde_json::Value;

use crate::config::{Kind, Size};
use crate::figures::Figures;
use crate::process::ChildGuard;
use crate::server::{log_tail, Server};

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
    fn set(&mut self, key: &str, value: Option<f64>) {
        if let Some(v) = value {
            self.figures.insert(key.to_owned(), v);
        }
    }
}

/// Everything needed to run the bot once.
#[derive(Debug)]
pub struct BotRun<'a> {
    /// The `janus-bot` binary.
    pub binary: &'a Path,
    /// Scenario name (topic and file names).
    pub scenario: &'a str,
    /// What the scenario does.
    pub kind: Kind,
    /// The size to run.
    pub size: &'a Size,
    /// Where logs and the JSON go.
    pub out_dir: &'a Path,
    /// How long the bot may run before it is killed.
    pub timeout: Duration,
    /// The server is one node of a cluster on a shared port: publish once.
    pub clustered: bool,
}

/// `--flag value` for each parameter that is set.
fn push_opt(args: &mut Vec<String>, flag: &str, value: Option<impl ToString>) {
    if let Some(v) = value {
        args.extend([flag.to_owned(), v.to_string()]);
    }
}

/// The bot's command line for the scenario against `server`.
fn bot_args(run: &BotRun<'_>, server: &Server, json: &Path) -> Vec<String> {
    let size = run.size;
    let mode = match run.kind {
        Kind::Fanout | Kind::Train | Kind::Topics | Kind::Slow => "run",
        Kind::Churn => "churn",
        Kind::Soak => "soak",
        Kind::Resume => "resume",
    };
    let mut args: Vec<String> = [
        mode,
        "--target",
        &server.addr.to_string(),
        "--clients",
        &size.clients.to_string(),
        "--topic",
        &format!("loadtest-{}", run.scenario),
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let secs = |s: Option<f64>| s.map(|s| format!("{s}s"));
    let millis = |s: Option<u64>| s.map(|s| format!("{s}ms"));
    if matches!(run.kind, Kind::Churn | Kind::Soak) {
        push_opt(&mut args, "--duration", secs(size.duration_s));
        push_opt(&mut args, "--warmup", secs(size.warmup_s));
        push_opt(&mut args, "--churners", size.churners);
        push_opt(&mut args, "--hold", millis(size.hold_ms));
        args.extend(["--server-pid".to_owned(), server.pid().to_string()]);
    } else {
        args.extend(["--messages".to_owned(), size.messages().to_string()]);
    }
    if run.clustered {
        args.push("--clustered".to_owned());
    }
    if let Some(ws) = server.ws {
        args.extend(["--transport", "ws", "--ws-target"].map(str::to_owned));
        args.push(ws.to_string());
    }
    push_opt(&mut args, "--rate", size.rate);
    push_opt(&mut args, "--payload", size.payload);
    push_opt(&mut args, "--workers", size.workers);
    push_opt(&mut args, "--topics", size.topics);
    push_opt(&mut args, "--subscriptions", size.subscriptions_per_client);
    push_opt(&mut args, "--never-read-percent", size.slow_percent);
    push_opt(&mut args, "--resume-percent", size.resume_percent);
    push_opt(&mut args, "--away", millis(size.away_ms));
    if run.kind == Kind::Soak {
        push_opt(&mut args, "--stuck", size.stuck);
        push_opt(&mut args, "--flooders", size.flooders);
        push_opt(&mut args, "--tricklers", size.tricklers);
        push_opt(&mut args, "--oversized", size.oversized);
        push_opt(&mut args, "--hostile-hold", secs(size.hostile_hold_s));
        push_opt(&mut args, "--settle", secs(size.settle_s));
    } else if run.kind == Kind::Churn {
        // xtask reads the server's memory itself, once every client has
        // left (`server_checks`): the bot need not wait for it.
        args.extend(["--settle".to_owned(), "0s".to_owned()]);
    }
    // The bot's timeout bounds each wait (a client's setup, a publish, the
    // deliveries after the last publish); ours bounds the whole run.
    args.extend([
        "--timeout".to_owned(),
        format!("{}s", size.drain_s().ceil()),
        "--progress".to_owned(),
        "plain".to_owned(),
        "--json".to_owned(),
        json.display().to_string(),
    ]);
    args
}

/// Runs the bot against `server` and turns its JSON into an [`Outcome`].
///
/// # Errors
/// The bot cannot start, times out, or writes no readable JSON.
pub async fn run(run: &BotRun<'_>, server: &Server) -> Result<Outcome> {
    let json = run.out_dir.join(format!("{}.bot.json", run.scenario));
    let stdout_path = run.out_dir.join(format!("{}.bot.out", run.scenario));
    let log = run.out_dir.join(format!("{}.bot.log", run.scenario));
    let _ = std::fs::remove_file(&json);
    let args = bot_args(run, server, &json);
    let command_line = format!("{} {}", run.binary.display(), args.join(" "));
    let mut command = Command::new(run.binary);
    command
        .args(&args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout_path).context("bot stdout file")?)
        .stderr(std::fs::File::create(&log).context("bot log file")?);
    let mut bot = ChildGuard::spawn(&mut command, "janus-bot", Duration::from_secs(5))?;
    let status = match tokio::task::block_in_place(|| bot.wait_for(run.timeout))? {
        Some(status) => status,
        None => {
            drop(bot);
            bail!(
                "janus-bot did not finish within {:?}: `{command_line}`\n{}",
                run.timeout,
                log_tail(&log, 15)
            );
        }
    };
    drop(bot);
    let Ok(text) = std::fs::read_to_string(&json) else {
        let why = format!(
            "janus-bot exited ({status}) without writing {}: `{command_line}`\n{}",
            json.display(),
            log_tail(&log, 15)
        );
        // The bot's status 3: it could not reach the server.
        if status.code() == Some(3) {
            return Err(crate::Unreachable(why).into());
        }
        bail!(why);
    };
    let value: Value = serde_json::from_str(&text)
        .with_context(|| format!("janus-bot wrote invalid JSON to {}", json.display()))?;
    let mut out = outcome_from_json(&value, run.kind, run.size);
    out.command = command_line;
    out.notes
        .push(format!("janus-bot's own report: {}", stdout_path.display()));
    if !status.success() {
        out.notes.push(format!(
            "janus-bot exited with {status} (it does when a delivery is missing); log: {}",
            log.display()
        ));
    }
    Ok(out)
}

fn number(v: &Value, path: &[&str]) -> Option<f64> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_f64()
}

/// Figures from the bot's JSON report. Tolerates missing fields: a figure
/// that is not there is left out, and a budget on it reports "not measured".
pub fn outcome_from_json(v: &Value, kind: Kind, size: &Size) -> Outcome {
    let mut out = Outcome::default();
    out.set("setup_s", number(v, &["setup_s"]));
    let expected = number(v, &["deliveries_expected"]);
    let received = number(v, &["deliveries_received"]);
    out.set("deliveries_expected", expected);
    out.set("deliveries_received", received);
    if let (Some(e), Some(r)) = (expected, received) {
        out.set("lost", Some((e - r).max(0.0)));
    }
    for (key, field) in [
        ("p50_ms", "p50"),
        ("p90_ms", "p90"),
        ("p99_ms", "p99"),
        ("p999_ms", "p999"),
        ("max_ms", "max"),
    ] {
        out.set(key, number(v, &["latency_ms", field]));
    }
    let spans = v
        .get("spans")
        .and_then(|s| serde_json::from_value::<SpanSeries>(s.clone()).ok());
    // Fan-out spread: first to last delivery of a message (janus-bot's
    // `spans[].span_ms`), the worst message.
    let span = spans
        .as_ref()
        .and_then(|s| s.span_p50_max().map(|(_, max)| max))
        .or_else(|| number(v, &["span_ms", "max"]));
    out.set("span_ms", span);
    // Client failures: never subscribed, disconnected, duplicates,
    // reordering, failed publishes. Missing deliveries are `lost`.
    let bad = |k: &str| number(v, &["bad", k]).unwrap_or(0.0);
    let publish_errors = v
        .get("publish_errors")
        .and_then(Value::as_array)
        .map_or(0, Vec::len) as f64;
    let mut errors = bad("setup") + bad("disconnected") + bad("duplicated") + bad("reordered");
    errors += publish_errors;
    // Churners the server closed, or that could not connect, count too.
    let churn = |k: &str| number(v, &["activity", "churner", k]);
    if kind == Kind::Churn {
        errors += churn("failures").unwrap_or(0.0) + churn("closed_by_server").unwrap_or(0.0);
    }
    if v.get("bad").is_some() {
        out.set("errors", Some(errors));
    }
    if let Some(cycles) = churn("cycles") {
        out.set("churn_cycles", Some(cycles));
        let seconds = size.duration_s.unwrap_or(0.0) + size.warmup_s.unwrap_or(0.0);
        if seconds > 0.0 {
            out.set("churn_cycles_per_s", Some(cycles / seconds));
        }
    }
    // Deliveries over the time from the first publish to the last delivery.
    let active_s = spans.as_ref().filter(|s| s.has_times()).map(|s| {
        s.points
            .iter()
            .map(|p| p.at_s.unwrap_or(0.0) + p.max_ms.unwrap_or(0.0) / 1000.0)
            .fold(0.0, f64::max)
    });
    if let (Some(received), Some(active)) = (received, active_s) {
        if active > 0.0 {
            out.set("deliveries_per_s", Some(received / active));
        }
    }
    if let Some(n) = v.get("never_read").filter(|n| !n.is_null()) {
        let count = |k: &str| number(n, &[k]).unwrap_or(0.0);
        out.set("slow_clients", Some(count("clients")));
        out.set("slow_cut", Some(count("cut") + count("trimmed")));
        out.set("slow_not_cut", Some(count("complete") + count("stalled")));
        out.notes.push(format!(
            "never-reading subscribers: {} disconnected ({} of them got a slow_consumer error \
             frame), {} kept with older messages dropped, {} received everything anyway, {} \
             neither closed nor complete",
            count("cut"),
            count("told"),
            count("trimmed"),
            count("complete"),
            count("stalled")
        ));
    }
    if let Some(r) = v.get("resume").filter(|r| !r.is_null()) {
        let count = |k: &str| number(r, &[k]).unwrap_or(0.0);
        out.set("resumes", Some(count("clients")));
        out.set(
            "resumes_not_recovered",
            Some(count("clients") - count("recovered")),
        );
        out.set("resume_p99_ms", number(r, &["latency_ms", "p99"]));
        out.set("steady_p99_ms", number(r, &["others_latency_ms", "p99"]));
        out.set("resume_time_p99_ms", number(r, &["resume_time_ms", "p99"]));
        out.notes.push(format!(
            "resuming subscribers: {} planned, {} recovered, {} not recovered, {} failed; {} \
             messages replayed; resume time p50 {} ms, p99 {} ms; their deliveries p50 {} ms, \
             p99 {} ms, max {} ms; the other subscribers' deliveries p50 {} ms, p99 {} ms",
            count("clients"),
            count("recovered"),
            count("not_recovered"),
            count("failed"),
            count("replayed"),
            number(r, &["resume_time_ms", "p50"]).unwrap_or(0.0),
            number(r, &["resume_time_ms", "p99"]).unwrap_or(0.0),
            number(r, &["latency_ms", "p50"]).unwrap_or(0.0),
            number(r, &["latency_ms", "p99"]).unwrap_or(0.0),
            number(r, &["latency_ms", "max"]).unwrap_or(0.0),
            number(r, &["others_latency_ms", "p50"]).unwrap_or(0.0),
            number(r, &["others_latency_ms", "p99"]).unwrap_or(0.0),
        ));
    }
    if let Some(rss) = v.get("server_rss").filter(|r| !r.is_null()) {
        out.set("server_reference_rss_mib", number(rss, &["reference_mib"]));
        if kind == Kind::Soak {
            out.set("server_start_rss_mib", number(rss, &["start_mib"]));
            out.set("server_settled_rss_mib", number(rss, &["end_mib"]));
            let (reference, end) = (number(rss, &["reference_mib"]), number(rss, &["end_mib"]));
            if let (Some(r), Some(e)) = (reference, end) {
                if r > 0.0 {
                    out.set("rss_growth_percent", Some((e - r) / r * 100.0));
                }
            }
        }
    }
    if let Some(Value::Object(roles)) = v.get("activity") {
        for (role, c) in roles {
            let n = |k: &str| number(c, &[k]).unwrap_or(0.0);
            out.notes.push(format!(
                "background clients of kind {role}: {} clients, {} connections, {} cycles, {} closed by the \
                 server, {} failed, {} bytes sent; error frames: {}",
                n("clients"),
                n("connections"),
                n("cycles"),
                n("closed_by_server"),
                n("failures"),
                n("bytes_sent"),
                c.get("error_frames")
                    .map_or("none".into(), Value::to_string)
            ));
        }
    }
    out.histogram = v
        .get("histogram")
        .and_then(|h| serde_json::from_value::<Recorder>(h.clone()).ok());
    out.spans = spans;
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_from_the_bot_json() {
        let mut r = Recorder::new();
        r.record_micros(1500);
        let v = serde_json::json!({
            "clients": 100, "subscribed": 98, "setup_s": 1.5,
            "deliveries_expected": 196, "deliveries_received": 190,
            "latency_ms": {"min": 0.1, "p50": 1.0, "p90": 2.0, "p99": 3.0, "p999": 4.0, "max": 5.0},
            "span_ms": {"max": 5.0},
            "spans": [
                {"message": 0, "at_s": 0.0, "span_ms": 1.0, "max_ms": 4.0},
                {"message": 1, "at_s": 0.1, "span_ms": 2.0, "max_ms": 5.0},
            ],
            "bad": {"setup": 2, "disconnected": 1, "missing": 3, "duplicated": 0, "reordered": 0},
            "publish_errors": [],
            "never_read": {"clients": 10, "cut": 7, "told": 6, "trimmed": 1, "complete": 2, "stalled": 0},
            "activity": {"churner": {"clients": 5, "connections": 40, "cycles": 30,
                "closed_by_server": 1, "failures": 2, "bytes_sent": 9, "error_frames": {}}},
            "server_rss": {"pid": 1, "start_mib": 5.0, "reference_mib": 10.0, "end_mib": 10.5},
            "histogram": serde_json::to_value(&r).unwrap(),
        });
        let size = Size {
            clients: 100,
            messages: Some(2),
            rate: Some(10.0),
            duration_s: Some(10.0),
            ..Size::default()
        };
        let out = outcome_from_json(&v, Kind::Churn, &size);
        let f = &out.figures;
        assert_eq!(f["lost"], 6.0);
        assert_eq!(f["errors"], 3.0 + 3.0, "clients plus churner failures");
        assert_eq!(f["max_ms"], 5.0);
        assert_eq!(f["p99_ms"], 3.0);
        assert_eq!(f["setup_s"], 1.5);
        // 190 deliveries from the first publish to 0.1 s + 5 ms.
        assert!((f["deliveries_per_s"] - 190.0 / 0.105).abs() < 1e-6);
        assert_eq!(f["span_ms"], 2.0);
        assert_eq!((f["slow_cut"], f["slow_not_cut"]), (8.0, 2.0));
        assert_eq!((f["churn_cycles"], f["churn_cycles_per_s"]), (30.0, 3.0));
        assert!(!f.contains_key("rss_growth_percent"), "soak only");
        assert_eq!(out.histogram.unwrap().count(), 1);
        let soak = outcome_from_json(&v, Kind::Soak, &size);
        assert!((soak.figures["rss_growth_percent"] - 5.0).abs() < 1e-9);
        assert_eq!(soak.figures["errors"], 3.0);
    }

    #[test]
    fn missing_fields_are_left_out() {
        let out = outcome_from_json(&serde_json::json!({}), Kind::Fanout, &Size::default());
        assert!(out.figures.is_empty());
        assert!(out.histogram.is_none());
    }
}
