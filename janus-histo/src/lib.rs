//! Latency histograms for Janus: record, merge losslessly, render.
//!
//! # Layout
//!
//! - [`Recorder`] (also named [`LatencyHistogram`]) records latencies in an
//!   HdrHistogram with microsecond resolution, up to an hour, to three
//!   significant digits. Recorders filled by many workers and agents merge
//!   without loss, and travel in JSON as one base64 string (see [`recorder`]).
//! - [`Summary`] is the handful of numbers people quote (min, p50, p90, p99,
//!   p99.9, max, count, mean) in milliseconds.
//! - [`SpanSeries`] holds the fan-out span (publish → last subscriber) and
//!   the spread (first → last subscriber) of each message of a run.
//! - [`Report`] ties a titled histogram to optional metadata, spans and a
//!   latency budget. It is what `janus-bot` saves and what `janus-histo show`
//!   and `janus-histo merge` read.
//! - Rendering writes to any [`std::io::Write`]: [`render_text`] (percentiles
//!   and the 2009-style bucket table with bars, see [`BucketTable`]) and
//!   [`render_svg`] / [`svg_string`] (percentile plot on a "nines" axis and
//!   the span-over-time panel).
//! - [`TimeChart`] draws lines over time on one or two value axes (the
//!   load test's server memory and CPU), with the same look and the same
//!   tick rules as the latency plot.
//! - [`format`] holds the number formatting and escaping every renderer
//!   shares.
//! - [`command`] is what the `janus-histo` binary runs, callable from tests.
//!
//! ```
//! use std::time::Duration;
//! use janus_histo::{Recorder, Report};
//!
//! let mut worker_a = Recorder::new();
//! let mut worker_b = Recorder::new();
//! worker_a.record(Duration::from_micros(850));
//! worker_b.record_micros(1_250);
//! worker_a.merge(&worker_b);
//! assert_eq!(worker_a.count(), 2);
//!
//! let report = Report::new("two deliveries", worker_a);
//! let mut text = Vec::new();
//! janus_histo::render_text(&report, &Default::default(), &mut text).unwrap();
//! let svg = janus_histo::svg_string(&report);
//! assert!(svg.starts_with("<svg"));
//! ```

#![forbid(unsafe_code)]

pub mod bucket;
pub mod chart;
pub mod command;
pub mod duration;
mod error;
pub mod format;
pub mod recorder;
pub mod report;
pub mod span;
pub mod summary;
pub mod svg;
pub mod text;

pub use bucket::{choose_bucket_width, BucketRow, BucketTable};
pub use chart::{Axis, Line, TimeChart};
pub use duration::{format_duration, format_micros, format_millis, parse_duration};
pub use error::HistoError;
pub use format::{escape, format_number, group_thousands};
pub use recorder::{LatencyHistogram, Recorder};
pub use report::Report;
pub use span::{SpanPoint, SpanSeries};
pub use summary::Summary;
pub use svg::{budget_on_scale, render_svg, svg_string};
pub use text::{
    render_buckets, render_percentiles, render_spans, render_text, TextOptions, FANOUT_LABEL,
    SPREAD_LABEL,
};
