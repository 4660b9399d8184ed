//! Text rendering of a [`Report`] for terminals: the percentile summary, and
//! the 2009 bucket report (min, one row per bucket with count and percent,
//! max) with a bar per row. Everything fits in 80 columns.
//!
//! ```text
//! sample run
//!   count   19,000       mean    3.21 ms
//!   min     412 µs       p50     2.10 ms
//!   ...
//!
//!   latency in 1 ms buckets
//!   bucket         count       %
//!   min 412 µs
//!    0 –  1 ms     1,234    6.49  ███▌
//!   ...
//!   max 45.1 ms
//! ```

use std::io::{self, Write};
use std::time::Duration;

use crate::bucket::BucketTable;
use crate::duration::{format_micros, format_millis, Unit};
use crate::format::{decimals_for, group_thousands};
use crate::{HistoError, Recorder, Report, SpanSeries};

/// The width everything is laid out to.
pub const COLUMNS: usize = 80;

/// Options of the text rendering.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TextOptions {
    /// Force this bucket width instead of choosing one from the data.
    pub bucket: Option<Duration>,
    /// Draw a bar per bucket row.
    pub bars: bool,
}

impl Default for TextOptions {
    fn default() -> TextOptions {
        TextOptions {
            bucket: None,
            bars: true,
        }
    }
}

/// Renders the whole text report: title, metadata, percentiles, budget check,
/// span summary and the bucket table with bars.
///
/// # Errors
///
/// [`HistoError::TooManyBuckets`] for a forced bucket that is far too narrow,
/// and [`HistoError::Io`] when writing fails.
pub fn render_text(
    report: &Report,
    options: &TextOptions,
    out: &mut impl Write,
) -> Result<(), HistoError> {
    let title = if report.title.is_empty() {
        "latency"
    } else {
        &report.title
    };
    writeln!(out, "{title}")?;
    if !report.metadata.is_empty() {
        let facts: Vec<String> = report
            .metadata
            .iter()
            .map(|(k, v)| format!("{k}: {}", metadata_value(v)))
            .collect();
        for line in wrap(&facts, COLUMNS - 2) {
            writeln!(out, "  {line}")?;
        }
    }
    if report.histogram.is_empty() {
        writeln!(out, "  no samples")?;
        return Ok(());
    }
    render_percentiles(&report.histogram, out)?;
    if let Some(budget) = report.budget_ms {
        let (name, value_us) = report.budget_measure();
        let value = value_us / 1e3;
        let verdict = if value <= budget {
            format!("{name} {} is within it", format_millis(value))
        } else {
            format!("{name} {} EXCEEDS it", format_millis(value))
        };
        writeln!(
            out,
            "  {} {}: {verdict}",
            report.budget_label(),
            format_millis(budget)
        )?;
    }
    if let Some(spans) = &report.spans {
        render_spans(spans, out)?;
    }
    writeln!(out)?;
    let table = BucketTable::new(&report.histogram, options.bucket)?;
    render_buckets(&table, options.bars, out)?;
    Ok(())
}

/// The label of the fan-out span, the 2009 goal: the same words in every
/// Janus tool's output.
pub const FANOUT_LABEL: &str = "fan-out span (publish → last subscriber)";

/// The label of the spread of a message's deliveries, which is not its
/// fan-out span.
pub const SPREAD_LABEL: &str = "spread (first → last subscriber)";

/// Writes the per-message figures of `spans`: the fan-out span (publish →
/// last subscriber) when the points have it, and the spread (first → last
/// subscriber), each with its median and maximum.
///
/// ```text
///   per message, over 5 messages                  median        max
///   fan-out span (publish → last subscriber)     12.0 ms    14.0 ms
///   spread (first → last subscriber)              9.0 ms    11.0 ms
/// ```
///
/// # Errors
///
/// When writing fails.
pub fn render_spans(spans: &SpanSeries, out: &mut impl Write) -> io::Result<()> {
    let Some((spread_p50, spread_max)) = spans.span_p50_max() else {
        return Ok(());
    };
    let n = spans.len();
    let heading = format!(
        "per message, over {} message{}",
        group_thousands(n as u64),
        if n == 1 { "" } else { "s" }
    );
    writeln!(out, "  {heading:<42}  {:>9}  {:>9}", "median", "max")?;
    if let Some((p50, max)) = spans.fanout_p50_max() {
        writeln!(
            out,
            "  {FANOUT_LABEL:<42}  {:>9}  {:>9}",
            format_millis(p50),
            format_millis(max)
        )?;
    }
    writeln!(
        out,
        "  {SPREAD_LABEL:<42}  {:>9}  {:>9}",
        format_millis(spread_p50),
        format_millis(spread_max)
    )?;
    Ok(())
}

/// Writes count, mean, min, p50, p90, p99, p99.9 and max in two columns.
///
/// # Errors
///
/// When writing fails.
pub fn render_percentiles(recorder: &Recorder, out: &mut impl Write) -> io::Result<()> {
    let s = recorder.summary();
    let cells = [
        ("count", group_thousands(s.count)),
        ("mean", format_millis(s.mean)),
        ("min", format_millis(s.min)),
        ("p50", format_millis(s.p50)),
        ("p90", format_millis(s.p90)),
        ("p99", format_millis(s.p99)),
        ("p99.9", format_millis(s.p999)),
        ("max", format_millis(s.max)),
    ];
    for pair in cells.chunks(2) {
        let mut line = String::from(" ");
        for (name, value) in pair {
            line.push_str(&format!(" {name:<6} {value:>9}     "));
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}

/// Writes the 2009 report: `min`, one row per bucket with its count and
/// percentage (and a bar when `bars`), then `max`.
///
/// # Errors
///
/// When writing fails.
pub fn render_buckets(table: &BucketTable, bars: bool, out: &mut impl Write) -> io::Result<()> {
    let width = table.width_us as f64;
    // One unit for every row, the one that reads the bucket width best.
    let unit = Unit::for_micros(width);
    let decimals = decimals_for(width / unit.micros());
    let bound = |us: u64| format!("{:.decimals$}", us as f64 / unit.micros());
    let label_width = table
        .rows
        .last()
        .map_or(0, |r| bound(r.high_us).chars().count());
    let labels: Vec<String> = table
        .rows
        .iter()
        .map(|r| {
            format!(
                "{:>w$} – {:>w$} {}",
                bound(r.low_us),
                bound(r.high_us),
                unit.symbol(),
                w = label_width
            )
        })
        .collect();
    let counts: Vec<String> = table
        .rows
        .iter()
        .map(|r| group_thousands(r.count))
        .collect();
    let heading = format!(
        "latency in {} {} buckets",
        bound(table.width_us),
        unit.symbol()
    );
    let label_col = labels
        .iter()
        .map(|l| l.chars().count())
        .max()
        .unwrap_or(0)
        .max(6);
    let count_col = counts.iter().map(String::len).max().unwrap_or(0).max(5);
    // "  " label "  " count "  " percent(6) "  " bar
    let bar_col = COLUMNS
        .saturating_sub(2 + label_col + 2 + count_col + 2 + 6 + 2 + 1)
        .max(8);

    if table.rows.is_empty() {
        writeln!(out, "  no samples")?;
        return Ok(());
    }
    writeln!(out, "  {heading}")?;
    writeln!(
        out,
        "  {:<label_col$}  {:>count_col$}  {:>6}",
        "bucket", "count", "%"
    )?;
    writeln!(out, "  min {}", format_micros(table.min_us as f64))?;
    let most = table.rows.iter().map(|r| r.count).max().unwrap_or(0);
    for ((row, label), count) in table.rows.iter().zip(&labels).zip(&counts) {
        let percent = table.percent(row);
        let mut line = format!("  {label:<label_col$}  {count:>count_col$}  {percent:>6.2}");
        if bars {
            line.push_str("  ");
            line.push_str(&bar(row.count, most, bar_col));
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    writeln!(out, "  max {}", format_micros(table.max_us as f64))?;
    Ok(())
}

/// A bar of `count / most` of `width` columns in eighth blocks; any non-zero
/// count shows at least a sliver.
fn bar(count: u64, most: u64, width: usize) -> String {
    const EIGHTHS: [char; 8] = ['▏', '▎', '▍', '▌', '▋', '▊', '▉', '█'];
    if count == 0 || most == 0 {
        return String::new();
    }
    let eighths = ((count as f64 / most as f64) * (width * 8) as f64).round() as usize;
    let eighths = eighths.max(1);
    let mut s = "█".repeat(eighths / 8);
    if eighths % 8 != 0 {
        s.push(EIGHTHS[eighths % 8 - 1]);
    }
    s
}

/// A metadata value without JSON quotes around strings.
pub(crate) fn metadata_value(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Joins `items` with two spaces into lines of at most `width` characters
/// (an item longer than `width` gets a line of its own).
fn wrap(items: &[String], width: usize) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    for item in items {
        match lines.last_mut() {
            Some(line) if line.chars().count() + 2 + item.chars().count() <= width => {
                line.push_str("  ");
                line.push_str(item);
            }
            _ => lines.push(item.clone()),
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SpanPoint;

    fn render(report: &Report, options: &TextOptions) -> String {
        let mut out = Vec::new();
        render_text(report, options, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    fn lognormalish(n: u64) -> Recorder {
        let mut r = Recorder::new();
        for i in 0..n {
            // A skewed spread from ~300 µs to ~60 ms.
            let u = (i as f64 + 0.5) / n as f64;
            r.record_micros((300.0 * (6.0 * u * u * u).exp()).round() as u64);
        }
        r
    }

    #[test]
    fn text_report_has_every_part_and_fits_80_columns() {
        let mut report = Report::new("sample run", lognormalish(19_000));
        report.metadata.insert("clients".into(), 19_000.into());
        report.budget_ms = Some(50.0);
        report.spans = Some(SpanSeries::from_iter(
            (0..5).map(|i| SpanPoint::new(i, 10.0 + i as f64)),
        ));
        let text = render(&report, &TextOptions::default());
        for needle in [
            "sample run",
            "clients: 19000",
            "count",
            "19,000",
            "p99.9",
            "budget 50.0 ms: max",
            "EXCEEDS",
            "  per message, over 5 messages",
            "  spread (first → last subscriber)              12.0 ms    14.0 ms\n",
            "latency in 10 ms buckets",
            "  min 300 µs",
            "  max ",
            "█",
        ] {
            assert!(text.contains(needle), "{needle:?} missing in\n{text}");
        }
        for line in text.lines() {
            assert!(line.chars().count() <= COLUMNS, "too wide: {line:?}");
        }
    }

    #[test]
    fn fanout_span_and_spread_are_labelled_apart() {
        let mut report = Report::new("bot run", lognormalish(100));
        // One message, as `janus-bot run -m 1` saves it: first delivery
        // 0.87 ms after the publish, last 1.53 ms after it.
        report.spans = Some(SpanSeries::from_iter([SpanPoint {
            max_ms: Some(1.53),
            ..SpanPoint::new(0, 0.663)
        }]));
        let text = render(&report, &TextOptions::default());
        let row = |label: &str, median: &str, max: &str| {
            format!("  {label:<42}  {median:>9}  {max:>9}\n")
        };
        assert!(
            text.contains(&row(FANOUT_LABEL, "1.53 ms", "1.53 ms")),
            "{text}"
        );
        assert!(
            text.contains(&row(SPREAD_LABEL, "663 µs", "663 µs")),
            "{text}"
        );
        assert!(text.contains("over 1 message "), "{text}");
        assert!(!text.contains("fan-out span over"), "{text}");
        // A file without publish instants (older janus-histo reports) has
        // a spread only, never called a fan-out span.
        report.spans = Some(SpanSeries::from_iter([SpanPoint::new(0, 0.663)]));
        let text = render(&report, &TextOptions::default());
        assert!(text.contains(SPREAD_LABEL), "{text}");
        assert!(!text.contains("fan-out"), "{text}");
    }

    #[test]
    fn bucket_rows_sum_to_total_and_100_percent() {
        let r = lognormalish(19_000);
        let table = BucketTable::new(&r, None).unwrap();
        let mut out = Vec::new();
        render_buckets(&table, false, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let rows: Vec<&str> = text.lines().filter(|l| l.contains(" – ")).collect();
        assert_eq!(rows.len(), table.rows.len());
        let (mut count, mut percent) = (0u64, 0f64);
        for row in rows {
            let fields: Vec<&str> = row.split_whitespace().collect();
            let n = fields.len();
            count += fields[n - 2].replace(',', "").parse::<u64>().unwrap();
            percent += fields[n - 1].parse::<f64>().unwrap();
        }
        assert_eq!(count, 19_000);
        assert!((percent - 100.0).abs() < 0.1, "{percent}");
    }

    #[test]
    fn forced_bucket_and_units() {
        let mut r = Recorder::new();
        for v in [100_000, 700_000, 1_900_000] {
            r.record_micros(v);
        }
        let options = TextOptions {
            bucket: Some(Duration::from_millis(500)),
            bars: true,
        };
        let text = render(&Report::new("", r), &options);
        assert!(text.starts_with("latency\n"), "{text}");
        assert!(text.contains("latency in 500 ms buckets"), "{text}");
        assert!(text.contains("   0 –  500 ms"), "{text}");
        assert!(text.contains("1500 – 2000 ms"), "{text}");

        let mut r = Recorder::new();
        r.record_micros(120);
        r.record_micros(480);
        let text = render(&Report::new("", r), &TextOptions::default());
        assert!(text.contains("latency in 20 µs buckets"), "{text}");
        assert!(text.contains("120 – 140 µs"), "{text}");
    }

    #[test]
    fn empty_report_says_so() {
        let text = render(
            &Report::new("nothing", Recorder::new()),
            &TextOptions::default(),
        );
        assert_eq!(text, "nothing\n  no samples\n");
        let mut out = Vec::new();
        let table = BucketTable::new(&Recorder::new(), None).unwrap();
        render_buckets(&table, true, &mut out).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "  no samples\n");
    }

    #[test]
    fn helpers() {
        assert_eq!(bar(0, 10, 10), "");
        assert_eq!(bar(10, 10, 4), "████");
        assert_eq!(bar(1, 1000, 4), "▏");
        assert_eq!(bar(5, 10, 3), "█▌");
        let items: Vec<String> = ["aaaa", "bbbb", "cc"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(wrap(&items, 10), ["aaaa  bbbb", "cc"]);
    }
}
