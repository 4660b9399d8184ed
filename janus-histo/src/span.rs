//! [`SpanSeries`]: how long each message of a run took to reach its
//! subscribers, over time.
//!
//! Two measures of one message are kept, with distinct names:
//!
//! - its **fan-out span**, the 2009 goal: publish → last subscriber, i.e.
//!   the largest latency of the message ([`SpanPoint::max_ms`]);
//! - its **spread**: first → last subscriber, the last latency minus the
//!   first ([`SpanPoint::span_ms`], a field name kept from older files,
//!   whose meaning has not changed).
//!
//! Runs that publish many messages record one [`SpanPoint`] per message, so
//! a plot shows whether fan-out gets slower as the run goes on. Points
//! written by tools that did not know the publish instant have no
//! `max_ms`: they give a spread only.

use serde::{Deserialize, Serialize};

/// The span (and optionally the latencies) of one published message.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct SpanPoint {
    /// Index of the message in the run, from 0.
    pub message: u64,
    /// When the message was published, in seconds since the run started.
    /// Plots use it as the x axis when every point has it, and the message
    /// index otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_s: Option<f64>,
    /// The spread: last delivery minus first delivery (first → last
    /// subscriber), in milliseconds. Not the fan-out span, which is
    /// [`SpanPoint::max_ms`].
    pub span_ms: f64,
    /// Median latency of this message over its subscribers, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p50_ms: Option<f64>,
    /// Largest latency of this message over its subscribers, ms: its
    /// fan-out span, publish → last subscriber.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ms: Option<f64>,
}

impl SpanPoint {
    /// A point with only the message index and the span.
    pub fn new(message: u64, span_ms: f64) -> SpanPoint {
        SpanPoint {
            message,
            at_s: None,
            span_ms,
            p50_ms: None,
            max_ms: None,
        }
    }
}

/// One [`SpanPoint`] per message, in publish order.
///
/// Serializes as a plain JSON array of points:
///
/// ```text
/// [{"message": 0, "at_s": 0.0, "span_ms": 12.5, "p50_ms": 6.1, "max_ms": 12.9}, ...]
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SpanSeries {
    /// The points, in publish order.
    pub points: Vec<SpanPoint>,
}

impl SpanSeries {
    /// An empty series.
    pub fn new() -> SpanSeries {
        SpanSeries::default()
    }

    /// Appends one point.
    pub fn push(&mut self, point: SpanPoint) {
        self.points.push(point);
    }

    /// Number of points.
    pub fn len(&self) -> usize {
        self.points.len()
    }

    /// True when there are no points.
    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// True when every point has a publish time, so time can be the x axis.
    pub fn has_times(&self) -> bool {
        !self.points.is_empty() && self.points.iter().all(|p| p.at_s.is_some())
    }

    /// The median and the largest *spread* (first → last subscriber,
    /// [`SpanPoint::span_ms`]) in ms, or `None` when empty. NaN spreads are
    /// ignored.
    pub fn span_p50_max(&self) -> Option<(f64, f64)> {
        median_max(self.points.iter().map(|p| p.span_ms))
    }

    /// The median and the largest *fan-out span* (publish → last
    /// subscriber, [`SpanPoint::max_ms`]) in ms, over the points that have
    /// one; `None` when none has (older or foreign files).
    pub fn fanout_p50_max(&self) -> Option<(f64, f64)> {
        median_max(self.points.iter().filter_map(|p| p.max_ms))
    }

    /// How many points have a fan-out span ([`SpanPoint::max_ms`]).
    pub fn fanout_count(&self) -> usize {
        self.points.iter().filter(|p| p.max_ms.is_some()).count()
    }
}

/// The (lower) median and the largest of `values`, NaN ignored.
fn median_max(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    let mut values: Vec<f64> = values.filter(|v| !v.is_nan()).collect();
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let median = values[(values.len() - 1) / 2];
    let max = values[values.len() - 1];
    Some((median, max))
}

impl FromIterator<SpanPoint> for SpanSeries {
    fn from_iter<I: IntoIterator<Item = SpanPoint>>(iter: I) -> SpanSeries {
        SpanSeries {
            points: iter.into_iter().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_as_an_array() {
        let mut s = SpanSeries::new();
        s.push(SpanPoint::new(0, 12.5));
        s.push(SpanPoint {
            at_s: Some(1.5),
            p50_ms: Some(3.0),
            max_ms: Some(14.0),
            ..SpanPoint::new(1, 10.0)
        });
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(
            json,
            r#"[{"message":0,"span_ms":12.5},{"message":1,"at_s":1.5,"span_ms":10.0,"p50_ms":3.0,"max_ms":14.0}]"#
        );
        let back: SpanSeries = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s);
        assert!(!s.has_times());
        assert_eq!(s.span_p50_max(), Some((10.0, 12.5)));
        assert_eq!(SpanSeries::new().span_p50_max(), None);
        // Only the second point knows its publish → last subscriber time.
        assert_eq!(s.fanout_p50_max(), Some((14.0, 14.0)));
        assert_eq!(s.fanout_count(), 1);
        assert_eq!(SpanSeries::new().fanout_p50_max(), None);
    }
}
