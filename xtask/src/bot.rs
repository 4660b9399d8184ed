//! Running `janus-bot` for the `fanout` and `train` scenarios, and reading
//! its JSON report into figures.
//!
//! The bot's stdout (its human report) is copied to ours when it ends; its
//! stderr (progress) goes to `target/loadtest/<scenario>.bot.log` and its
//! tail is shown when it fails. The bot exits non-zero whenever a delivery
//! is missing; that is not an error here as long as it wrote its JSON: the
//! `lost` budget then fails with the numbers.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use janus_histo::{Recorder, SpanSeries};
use serde_json::Value;

use crate::config::Size;
use crate::process::ChildGuard;
use crate::scenarios::Outcome;
use crate::server::{log_tail, Server};

/// Everything needed to run the bot once.
#[derive(Debug)]
pub struct BotRun<'a> {
    /// The `janus-bot` binary.
    pub binary: &'a Path,
    /// Scenario name (topic and file names).
    pub scenario: &'a str,
    /// The size to run.
    pub size: &'a Size,
    /// Where logs and the JSON go.
    pub out_dir: &'a Path,
    /// How long the bot may run before it is killed.
    pub timeout: Duration,
}

/// The bot's command line for `run` against `server`.
fn bot_args(run: &BotRun<'_>, server: &Server, json: &Path) -> Vec<String> {
    let size = run.size;
    let mut args = vec![
        "run".to_owned(),
        "--target".to_owned(),
        server.addr.to_string(),
        "--clients".to_owned(),
        size.clients.to_string(),
        "--topic".to_owned(),
        format!("loadtest-{}", run.scenario),
        "--messages".to_owned(),
        size.messages().to_string(),
    ];
    if let Some(rate) = size.rate {
        args.extend(["--rate".to_owned(), rate.to_string()]);
    }
    if let Some(payload) = size.payload {
        args.extend(["--payload".to_owned(), payload.to_string()]);
    }
    if let Some(workers) = size.workers {
        args.extend(["--workers".to_owned(), workers.to_string()]);
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
    let status = match bot.wait_for(run.timeout).await? {
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
    if let Ok(text) = std::fs::read_to_string(&stdout_path) {
        print!("{text}");
    }
    let text = std::fs::read_to_string(&json).with_context(|| {
        format!(
            "janus-bot exited ({status}) without writing {}: `{command_line}`\n{}",
            json.display(),
            log_tail(&log, 15)
        )
    })?;
    let value: Value = serde_json::from_str(&text)
        .with_context(|| format!("janus-bot wrote invalid JSON to {}", json.display()))?;
    let mut out = outcome_from_json(&value, run.size);
    out.command = command_line;
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
pub fn outcome_from_json(v: &Value, size: &Size) -> Outcome {
    let mut out = Outcome::default();
    let mut set = |key: &str, value: Option<f64>| {
        if let Some(x) = value {
            out.figures.insert(key.to_owned(), x);
        }
    };
    set("setup_s", number(v, &["setup_s"]));
    let expected = number(v, &["deliveries_expected"]);
    let received = number(v, &["deliveries_received"]);
    set("deliveries_expected", expected);
    set("deliveries_received", received);
    if let (Some(e), Some(r)) = (expected, received) {
        set("lost", Some((e - r).max(0.0)));
    }
    for (key, field) in [
        ("p50_ms", "p50"),
        ("p90_ms", "p90"),
        ("p99_ms", "p99"),
        ("p999_ms", "p999"),
        ("max_ms", "max"),
    ] {
        set(key, number(v, &["latency_ms", field]));
    }
    let spans = v
        .get("spans")
        .and_then(|s| serde_json::from_value::<SpanSeries>(s.clone()).ok());
    // Fan-out span: first to last delivery of a message, the worst message.
    let span = spans
        .as_ref()
        .and_then(|s| s.span_p50_max().map(|(_, max)| max))
        .or_else(|| number(v, &["span_ms"]))
        .or_else(|| number(v, &["span_ms", "max"]));
    set("span_ms", span);
    // Client failures: never subscribed, disconnected, duplicates,
    // reordering, failed publishes. Missing deliveries are `lost`.
    let bad = |k: &str| number(v, &["bad", k]).unwrap_or(0.0);
    if v.get("bad").is_some() || v.get("subscribed").is_some() {
        let setup = number(v, &["subscribed"]).map_or(bad("setup"), |s| {
            (size.clients as f64 - s).max(bad("setup"))
        });
        let publish_errors = v
            .get("publish_errors")
            .and_then(Value::as_array)
            .map_or(0, Vec::len) as f64;
        set(
            "errors",
            Some(
                setup + bad("disconnected") + bad("duplicated") + bad("reordered") + publish_errors,
            ),
        );
    }
    // Deliveries over the time from the first publish to the last delivery.
    let active_s = spans
        .as_ref()
        .filter(|s| s.has_times())
        .map(|s| {
            s.points
                .iter()
                .map(|p| p.at_s.unwrap_or(0.0) + p.max_ms.unwrap_or(0.0) / 1000.0)
                .fold(0.0, f64::max)
        })
        .or_else(|| {
            let messages = size.messages() as f64;
            let publish_s = size.rate.map_or(0.0, |r| (messages - 1.0).max(0.0) / r);
            Some(publish_s + number(v, &["latency_ms", "max"])? / 1000.0)
        });
    if let (Some(received), Some(active)) = (received, active_s) {
        if active > 0.0 {
            set("deliveries_per_s", Some(received / active));
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
            "bad": {"setup": 2, "disconnected": 1, "missing": 3, "duplicated": 0, "reordered": 0},
            "publish_errors": [],
            "histogram": serde_json::to_value(&r).unwrap(),
        });
        let size = Size {
            clients: 100,
            messages: Some(2),
            rate: Some(10.0),
            ..Size::default()
        };
        let out = outcome_from_json(&v, &size);
        let f = &out.figures;
        assert_eq!(f["lost"], 6.0);
        assert_eq!(f["errors"], 3.0);
        assert_eq!(f["max_ms"], 5.0);
        assert_eq!(f["p99_ms"], 3.0);
        assert_eq!(f["setup_s"], 1.5);
        // 190 deliveries over 0.1 s of publishing + 5 ms (no spans with times).
        assert!((f["deliveries_per_s"] - 190.0 / 0.105).abs() < 1e-6);
        assert_eq!(f["span_ms"], 5.0);
        assert_eq!(out.histogram.unwrap().count(), 1);
    }

    #[test]
    fn missing_fields_are_left_out() {
        let out = outcome_from_json(&serde_json::json!({}), &Size::default());
        assert!(out.figures.is_empty());
        assert!(out.histogram.is_none());
    }
}
