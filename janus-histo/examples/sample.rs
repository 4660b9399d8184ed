//! Writes a sample report, its SVG plot and its text rendering, to look at
//! what `janus-histo` draws without a load test:
//!
//! ```text
//! cargo run -p janus-histo --example sample -- /tmp/histo-sample
//! ```
//!
//! writes `/tmp/histo-sample.json` and `/tmp/histo-sample.svg`, and prints the
//! text report.

use std::path::PathBuf;

use anyhow::Context as _;
use janus_histo::command::{save_report, write_svg};
use janus_histo::svg::synthetic_latencies;
use janus_histo::{render_text, Report, SpanPoint, SpanSeries};

fn main() -> anyhow::Result<()> {
    let base = std::env::args()
        .nth(1)
        .map_or_else(|| PathBuf::from("/tmp/histo-sample"), PathBuf::from);
    let mut report = Report::new(
        "19,000 subscribers, 200 messages (synthetic)",
        synthetic_latencies(19_000, 42),
    );
    report.metadata.insert("clients".into(), 19_000.into());
    report
        .metadata
        .insert("server".into(), "127.0.0.1:7000".into());
    report.budget_ms = Some(25.0);
    report.budget_label = Some("max budget".into());
    report.spans = Some(spans(200));

    let svg = base.with_extension("svg");
    let json = base.with_extension("json");
    write_svg(&report, &svg)?;
    save_report(&report, &json)?;
    render_text(&report, &Default::default(), &mut std::io::stdout().lock())
        .context("printing the report")?;
    eprintln!("wrote {} and {}", svg.display(), json.display());
    Ok(())
}

/// A span series that slowly degrades, with a hiccup every 50 messages.
fn spans(n: u64) -> SpanSeries {
    (0..n)
        .map(|i| {
            let wobble = ((i * 7919) % 13) as f64 * 0.25;
            let hiccup = if i % 50 == 49 { 6.0 } else { 0.0 };
            let span = 6.0 + i as f64 * 0.02 + wobble + hiccup;
            SpanPoint {
                at_s: Some(i as f64 * 0.05),
                p50_ms: Some(2.5 + span * 0.3),
                max_ms: Some(span + 0.8),
                ..SpanPoint::new(i, span)
            }
        })
        .collect()
}
