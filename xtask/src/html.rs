//! `target/loadtest/report.html`: one self-contained page (inline CSS and
//! SVG, no scripts, nothing fetched) that someone can open and understand
//! without reading code: the verdict first, then one section per scenario
//! saying what it does, what was measured against which budget, and the
//! latency plot with the budget on it. Plots, number formatting and
//! escaping come from `janus-histo`, which draws the bot's plots too.

use std::fmt::Write as _;

use janus_histo::{escape, format_number, Axis, Line, Report as HistoReport, TimeChart};

use crate::figures::{self, format_value};
use crate::report::{Report, ScenarioReport, Status};
use crate::server::TimedSample;

const CSS: &str = "
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,Arial,sans-serif;margin:2em auto;max-width:1060px;color:#222;line-height:1.45;padding:0 1em}
h1{margin-bottom:.2em}h2{margin-top:2.2em;border-bottom:2px solid #ddd;padding-bottom:.2em}
table{border-collapse:collapse;margin:.6em 0 1.2em}td,th{border:1px solid #ddd;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#f5f5f5}td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.pass{color:#fff;background:#2a9d3a;padding:.05em .5em;border-radius:3px;font-weight:bold}
.fail{color:#fff;background:#d62728;padding:.05em .5em;border-radius:3px;font-weight:bold}
.skip{color:#222;background:#f2c94c;padding:.05em .5em;border-radius:3px;font-weight:bold}
code{background:#f5f5f5;padding:.1em .3em;border-radius:3px;font-size:90%}
pre.cmd{background:#f5f5f5;padding:.5em .8em;border-radius:4px;font-size:85%;white-space:pre-wrap;overflow-x:auto;margin:.3em 0}
.box{background:#fafafa;border:1px solid #e5e5e5;padding:.6em 1em;border-radius:4px}
.failures{background:#fdecea;border:1px solid #d62728;padding:.6em 1em;border-radius:4px}
.plot svg{max-width:100%;height:auto;border:1px solid #eee}
.muted{color:#666}
";

fn badge(pass: bool) -> &'static str {
    if pass {
        "<span class=\"pass\">PASS</span>"
    } else {
        "<span class=\"fail\">FAIL</span>"
    }
}

/// The whole page.
pub fn render(report: &Report) -> String {
    let mut h = String::new();
    let mode = if report.quick {
        "quick (CI sizes)"
    } else {
        "full sizes"
    };
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>Janus load test {}</title><style>{CSS}</style></head><body>\n",
        if report.pass { "PASS" } else { "FAIL" }
    );
    let _ = writeln!(h, "<h1>Janus load test {}</h1>", badge(report.pass));
    let _ = writeln!(
        h,
        "<p class=\"muted\">{} UTC &middot; {mode} &middot; {} CPUs &middot; load average {} before \
         &middot; {:.0} s in all{}{}</p>",
        escape(&report.started),
        report.host.cpus,
        report.host.load_before.map_or("?".into(), format_number),
        report.duration_s,
        report
            .revision
            .as_ref()
            .map_or(String::new(), |r| format!(" &middot; revision <code>{}</code>", escape(r))),
        report.host.uname.as_ref().map_or(String::new(), |u| format!(" &middot; {}", escape(u)))
    );
    h.push_str(
        "<div class=\"box\"><p><b>What this is.</b> Each scenario below starts a fresh \
         <code>janus-server</code> on loopback, puts a specific load on it, and compares what \
         it measured with the budgets checked in to <code>xtask/loadtest.toml</code>. A scenario \
         fails when any figure misses its budget; the run fails when any scenario fails. \
         <b>Latency</b> is the time from a publisher writing a message to a subscriber \
         reading it, measured by <code>janus-bot</code> on one monotonic clock. <b>Lost</b> counts deliveries a subscriber should \
         have had and never got. Server <b>CPU</b> is user+system time from \
         <code>/proc/PID/stat</code>; <b>peak RSS</b> is <code>VmHWM</code>. The bots and the \
         server share this machine's cores, so figures include the load generator's cost.</p>\
         <p>Reproduce any scenario with <code>cargo xtask loadtest --scenario NAME</code> \
         (add <code>--quick</code> for the CI size).</p></div>\n",
    );
    if !report.server_args.is_empty() {
        let _ = writeln!(
            h,
            "<p><b>Extra server arguments for this run:</b> <code>{}</code></p>",
            escape(&report.server_args.join(" "))
        );
    }
    let failures = report.failures();
    if !failures.is_empty() {
        h.push_str("<div class=\"failures\"><b>Why it failed:</b><ul>");
        for f in &failures {
            let _ = write!(h, "<li>{}</li>", escape(f));
        }
        h.push_str("</ul></div>\n");
    }
    overview(&mut h, report);
    if let Some(b) = &report.baseline {
        baseline(&mut h, b);
    }
    for s in &report.scenarios {
        scenario(&mut h, s);
    }
    h.push_str("</body></html>\n");
    h
}

fn figure_cell(s: &ScenarioReport, key: &str) -> String {
    s.figures
        .get(key)
        .map_or_else(|| "&ndash;".into(), |v| escape(&format_value(key, *v)))
}

fn overview(h: &mut String, report: &Report) {
    h.push_str(
        "<h2>Overview</h2><table><tr><th>scenario</th><th>verdict</th><th>clients</th>\
         <th>p99 latency</th><th>max latency</th><th>lost</th><th>deliveries/s</th>\
         <th>server CPU</th><th>server peak RSS</th></tr>\n",
    );
    for s in &report.scenarios {
        let _ = writeln!(
            h,
            "<tr><td><a href=\"#{0}\">{0}</a></td><td>{1}</td><td class=\"num\">{2}</td>\
             <td class=\"num\">{3}</td><td class=\"num\">{4}</td><td class=\"num\">{5}</td>\
             <td class=\"num\">{6}</td><td class=\"num\">{7}</td><td class=\"num\">{8}</td></tr>",
            escape(&s.name),
            badge(s.pass),
            format_number(s.size.clients as f64),
            figure_cell(s, "p99_ms"),
            figure_cell(s, "max_ms"),
            figure_cell(s, "lost"),
            figure_cell(s, "deliveries_per_s"),
            figure_cell(s, "server_cpu_s"),
            figure_cell(s, "server_peak_rss_mib"),
        );
    }
    h.push_str("</table>\n");
}

fn baseline(h: &mut String, b: &crate::baseline::Comparison) {
    let _ = writeln!(
        h,
        "<h2>Compared with the baseline</h2><p>Baseline <code>{}</code> (run {}). A figure \
         regresses when it is more than {:.0}% worse than in the baseline and beyond its noise \
         floor.</p><table><tr><th>scenario</th><th>figure</th><th>baseline</th><th>now</th>\
         <th>ratio</th><th></th></tr>",
        escape(&b.file),
        escape(&b.baseline_started),
        b.tolerance * 100.0
    );
    for r in &b.rows {
        let verdict = match (r.judged, r.regression) {
            (false, _) => "<span class=\"muted\">not judged</span>",
            (true, true) => "<span class=\"fail\">REGRESSION</span>",
            (true, false) => "<span class=\"pass\">ok</span>",
        };
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{:.2}x</td><td>{verdict}</td></tr>",
            escape(&r.scenario),
            escape(figures::lookup(&r.figure).map_or(&r.figure, |d| d.label)),
            escape(&format_value(&r.figure, r.baseline)),
            escape(&format_value(&r.figure, r.current)),
            r.ratio
        );
    }
    h.push_str("</table>\n");
    for n in &b.notes {
        let _ = writeln!(h, "<p class=\"muted\">{}</p>", escape(n));
    }
}

/// The budget drawn on the latency plot: the max-latency budget, else p99
/// (the plot adds the value to the label), with the percentile it limits.
fn plot_budget(s: &ScenarioReport) -> Option<(f64, &'static str, Option<f64>)> {
    for (key, label, percentile) in [
        ("max_ms", "max latency budget", None),
        ("p99_ms", "p99 budget", Some(99.0)),
    ] {
        if let Some(c) = s.checks.iter().find(|c| c.figure == key) {
            return Some((c.limit, label, percentile));
        }
    }
    None
}

/// What the latency plot shows, saying only what it really draws.
fn plot_caption(plot: &HistoReport) -> String {
    let mut text = "Latency by percentile: read across to see what share of deliveries \
                    arrived within a time; the right end is the slowest delivery."
        .to_owned();
    match janus_histo::budget_on_scale(plot) {
        Some(true) => text.push_str(" The dashed red line is the budget."),
        Some(false) => text.push_str(
            " The budget is far above every delivery, so it is not drawn: the plot says its \
             value in its top left corner.",
        ),
        None => {}
    }
    if plot.spans.as_ref().is_some_and(|s| s.len() > 1) {
        text.push_str(
            " The lower panel shows each message's fan-out spread (first to last delivery) \
             over the run.",
        );
    }
    text
}

/// A command line with one flag (and its value) per line, continued with
/// backslashes as a shell would take it, so that it wraps between flags
/// and never inside a word.
fn command_lines(command: &str) -> String {
    let mut lines: Vec<String> = Vec::new();
    for word in command.split_whitespace() {
        match lines.last_mut() {
            Some(line) if !word.starts_with("--") => {
                line.push(' ');
                line.push_str(word);
            }
            _ => lines.push(word.to_owned()),
        }
    }
    lines.join(" \\\n    ")
}

/// CPU use between consecutive samples, in percent of one core.
fn cpu_percent(samples: &[TimedSample]) -> Vec<(f64, f64)> {
    samples
        .windows(2)
        .filter_map(|w| {
            let dt = w[1].t_s - w[0].t_s;
            (dt > 0.0).then(|| (w[1].t_s, (w[1].cpu_s - w[0].cpu_s) / dt * 100.0))
        })
        .collect()
}

/// The server's memory (left axis) and CPU (right axis) over the scenario.
fn resource_chart(samples: &[TimedSample]) -> TimeChart {
    TimeChart {
        title: "Server resources over the scenario".into(),
        left: Axis {
            unit: "MiB".into(),
            min_top: 1.0,
            lines: vec![Line {
                label: "resident memory (VmRSS, left)".into(),
                color: "#1f6fb4".into(),
                points: samples.iter().map(|s| (s.t_s, s.rss_mib)).collect(),
            }],
        },
        right: Some(Axis {
            unit: "%".into(),
            // One core is 100 %: a quiet server is not drawn as a busy one.
            min_top: 100.0,
            lines: vec![Line {
                label: "CPU, % of one core (right)".into(),
                color: "#e8710a".into(),
                points: cpu_percent(samples),
            }],
        }),
    }
}

fn scenario(h: &mut String, s: &ScenarioReport) {
    let _ = writeln!(
        h,
        "<h2 id=\"{0}\">{0} {1}</h2>\n<p>{2}</p>",
        escape(&s.name),
        badge(s.pass),
        escape(&s.description)
    );
    if let Some(e) = &s.error {
        let _ = writeln!(
            h,
            "<div class=\"failures\"><b>The scenario did not complete:</b> {}</div>",
            escape(e)
        );
    }
    let _ = writeln!(
        h,
        "<p><b>Load:</b></p><pre class=\"cmd\">{}</pre><p><b>Server:</b></p>\
         <pre class=\"cmd\">{}</pre><p class=\"muted\">{:.1} s; machine load average {} \
         before, {} after</p>",
        escape(&command_lines(&s.load)),
        escape(&command_lines(&s.server_command)),
        s.duration_s,
        s.load_avg.0.map_or("?".into(), format_number),
        s.load_avg.1.map_or("?".into(), format_number),
    );

    h.push_str("<table><tr><th>budget</th><th>measured</th><th>limit</th><th>verdict</th></tr>\n");
    for c in &s.checks {
        let label = figures::lookup(&c.figure).map_or(c.figure.as_str(), |d| d.label);
        let (class, word) = match c.status {
            Status::Pass => ("pass", "PASS"),
            Status::Fail => ("fail", "FAIL"),
            Status::Skipped => ("skip", "SKIPPED"),
        };
        let bound = if c.upper_bound { "at most" } else { "at least" };
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{bound} {}</td>\
             <td><span class=\"{class}\">{word}</span> {}</td></tr>",
            escape(label),
            c.value
                .map_or("&ndash;".into(), |v| escape(&format_value(&c.figure, v))),
            escape(&format_value(&c.figure, c.limit)),
            if c.status == Status::Pass {
                String::new()
            } else {
                escape(&c.message)
            }
        );
    }
    h.push_str("</table>\n");

    h.push_str("<details><summary>All figures and parameters</summary><table><tr><th>figure</th><th>value</th></tr>\n");
    for (key, value) in &s.figures {
        let label = figures::lookup(key).map_or(key.as_str(), |d| d.label);
        let _ = writeln!(
            h,
            "<tr><td>{} <span class=\"muted\">({})</span></td><td class=\"num\">{}</td></tr>",
            escape(label),
            escape(key),
            escape(&format_value(key, *value))
        );
    }
    h.push_str("</table><table><tr><th>parameter</th><th>value</th></tr>\n");
    if let Ok(serde_json::Value::Object(params)) = serde_json::to_value(&s.size) {
        for (k, v) in params {
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td class=\"num\">{}</td></tr>",
                escape(&k),
                escape(&v.to_string())
            );
        }
    }
    h.push_str("</table></details>\n");

    if !s.notes.is_empty() {
        h.push_str("<ul>");
        for n in &s.notes {
            let _ = write!(h, "<li>{}</li>", escape(n));
        }
        h.push_str("</ul>\n");
    }

    if let Some(hist) = s.histogram.as_ref().filter(|h| !h.is_empty()) {
        let mut plot = HistoReport::new(
            format!(
                "{}: delivery latency, {} deliveries",
                s.name,
                format_number(hist.count() as f64)
            ),
            hist.clone(),
        );
        plot.spans = s.spans.clone();
        if let Some((ms, label, percentile)) = plot_budget(s) {
            plot.budget_ms = Some(ms);
            plot.budget_label = Some(label.to_owned());
            plot.budget_percentile = percentile;
        }
        let _ = writeln!(h, "<p class=\"muted\">{}</p>", plot_caption(&plot));
        let _ = writeln!(
            h,
            "<div class=\"plot\">{}</div>",
            janus_histo::svg_string(&plot)
        );
    } else {
        h.push_str("<p class=\"muted\">No latencies were recorded.</p>\n");
    }
    let chart = resource_chart(&s.resources).to_svg();
    if !chart.is_empty() {
        let _ = writeln!(h, "<div class=\"plot\">{chart}</div>");
    }
    if let Some(exit) = &s.server_exit {
        let how = match (exit.code, exit.killed) {
            (_, true) => "had to be killed after SIGTERM".to_owned(),
            (Some(0), false) => format!("exited cleanly {:.1} s after SIGTERM", exit.shutdown_s),
            (Some(c), false) => format!("exited with code {c} after SIGTERM"),
            (None, false) => "died of a signal".to_owned(),
        };
        let _ = writeln!(h, "<p class=\"muted\">The server {how}.</p>");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Kind, Size};
    use crate::report::{check_budgets, Host, REPORT_VERSION};
    use janus_histo::Recorder;

    #[test]
    fn commands_break_between_flags_only() {
        let text = command_lines("janus-server --listen 127.0.0.1:1 --quiet --queue-limit 64");
        assert_eq!(
            text,
            "janus-server \\\n    --listen 127.0.0.1:1 \\\n    --quiet \\\n    --queue-limit 64"
        );
    }

    #[test]
    fn cpu_between_samples() {
        let samples: Vec<TimedSample> = (0..3)
            .map(|i| TimedSample {
                t_s: f64::from(i) * 0.25,
                rss_mib: 10.0,
                cpu_s: f64::from(i) * 0.2,
            })
            .collect();
        // 0.2 CPU s per 0.25 s = 80 % of a core.
        assert!((cpu_percent(&samples)[0].1 - 80.0).abs() < 1e-9);
        assert!(resource_chart(&samples).to_svg().contains("<polyline"));
    }

    #[test]
    fn a_page_shows_every_scenario_its_verdict_and_budget() {
        let mut hist = Recorder::new();
        for v in 1..500 {
            hist.record_micros(v * 100);
        }
        let figures: crate::figures::Figures =
            [("max_ms".to_owned(), 49.9), ("lost".to_owned(), 2.0)]
                .into_iter()
                .collect();
        let budget = [("max_ms".to_owned(), 40.0), ("lost".to_owned(), 0.0)]
            .into_iter()
            .collect();
        let checks = check_budgets("fanout", &figures, &budget, &Default::default());
        let s = ScenarioReport {
            name: "fanout".into(),
            kind: Kind::Fanout,
            description: "One <message> to all.".into(),
            size: Size {
                clients: 5000,
                ..Size::default()
            },
            load: "janus-bot run".into(),
            server_command: "janus-server --listen 127.0.0.1:1".into(),
            figures,
            checks,
            notes: vec!["a note".into()],
            histogram: Some(hist),
            spans: None,
            resources: vec![],
            server_exit: None,
            load_avg: (Some(0.5), Some(1.5)),
            duration_s: 3.0,
            error: None,
            pass: false,
        };
        let report = Report {
            version: REPORT_VERSION,
            started: "2025-01-01 00:00:00".into(),
            quick: true,
            host: Host::default(),
            server_args: vec![],
            revision: None,
            scenarios: vec![s],
            baseline: None,
            pass: false,
            duration_s: 3.0,
        };
        let page = render(&report);
        assert!(page.contains("id=\"fanout\""));
        assert!(page.contains("One &lt;message&gt; to all."));
        assert!(page.contains("max latency 49.9 ms is over the budget of 40 ms"));
        assert!(page.contains("<svg"));
        assert!(page.contains("max latency budget"));
        assert!(!page.contains("<script"));
    }
}
