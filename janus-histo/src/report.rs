//! [`Report`]: what a latency run saves, what `janus-histo show` reads and
//! what `janus-histo merge` writes.
//!
//! # JSON shape
//!
//! ```text
//! {
//!   "title": "20k subscribers, 1 message",
//!   "metadata": {"clients": 20000, "server": "127.0.0.1:7000"},   // optional
//!   "summary": {"min": 0.41, "p50": 2.1, "p90": 5.4, "p99": 12.1,
//!               "p999": 20.3, "max": 45.1, "count": 19000, "mean": 3.2},
//!   "budget_ms": 1000.0,                                           // optional
//!   "budget_label": "max budget",                                  // optional
//!   "histogram": "HISTFAAAA...",                                   // see `recorder`
//!   "spans": [{"message": 0, "at_s": 0.0, "span_ms": 12.5}, ...]   // optional
//! }
//! ```
//!
//! `summary` is written for people and `jq`; reading ignores it and
//! recomputes it from `histogram`.
//!
//! [`Report::from_json`] is lenient, so that any tool's output can be shown:
//! it needs only an object with a `histogram` field. Other top-level scalar
//! fields become metadata, and fields it cannot read (a `spans` of another
//! shape, nested objects) are ignored.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{HistoError, Recorder, SpanSeries, Summary};

/// A titled latency histogram with optional context, spans and budget.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct Report {
    /// What was measured, shown as the heading of every rendering.
    pub title: String,
    /// Free-form facts about the run (client count, server address, commit),
    /// shown under the title.
    #[serde(default)]
    pub metadata: BTreeMap<String, Value>,
    /// All latencies of the run.
    pub histogram: Recorder,
    /// Fan-out span (publish → last subscriber) and spread (first → last)
    /// of each message, for runs that publish many.
    #[serde(default)]
    pub spans: Option<SpanSeries>,
    /// The latency budget in ms: the maximum latency should stay below it.
    /// Drawn as a red line on plots and checked in the text report.
    #[serde(default)]
    pub budget_ms: Option<f64>,
    /// How to label the budget line (default `budget`).
    #[serde(default)]
    pub budget_label: Option<String>,
    /// Which latency the budget limits: this percentile (e.g. 99), or the
    /// maximum when absent.
    #[serde(default)]
    pub budget_percentile: Option<f64>,
}

/// The serialized shape of [`Report`], with the summary added.
#[derive(Serialize)]
struct ReportJson<'a> {
    title: &'a str,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    metadata: &'a BTreeMap<String, Value>,
    summary: Summary,
    #[serde(skip_serializing_if = "Option::is_none")]
    budget_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    budget_label: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    budget_percentile: Option<f64>,
    histogram: &'a Recorder,
    #[serde(skip_serializing_if = "Option::is_none")]
    spans: Option<&'a SpanSeries>,
}

impl Serialize for Report {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        ReportJson {
            title: &self.title,
            metadata: &self.metadata,
            summary: self.summary(),
            budget_ms: self.budget_ms,
            budget_label: self.budget_label.as_deref(),
            budget_percentile: self.budget_percentile,
            histogram: &self.histogram,
            spans: self.spans.as_ref(),
        }
        .serialize(serializer)
    }
}

impl Report {
    /// A report with only a title and a histogram.
    pub fn new(title: impl Into<String>, histogram: Recorder) -> Report {
        Report {
            title: title.into(),
            metadata: BTreeMap::new(),
            histogram,
            spans: None,
            budget_ms: None,
            budget_label: None,
            budget_percentile: None,
        }
    }

    /// The summary of the histogram.
    pub fn summary(&self) -> Summary {
        self.histogram.summary()
    }

    /// What the budget limits, by name (`p99`, `max`), and its value in µs.
    pub fn budget_measure(&self) -> (String, f64) {
        match self.budget_percentile {
            Some(p) => (format!("p{p}"), self.histogram.percentile_micros(p) as f64),
            None => ("max".to_owned(), self.histogram.max_micros() as f64),
        }
    }

    /// The label of the budget line: `budget_label`, or `budget`.
    pub fn budget_label(&self) -> &str {
        self.budget_label.as_deref().unwrap_or("budget")
    }

    /// The report as pretty-printed JSON (see the module docs).
    pub fn to_json(&self) -> String {
        // Serializing plain data with string keys into a String cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }

    /// Reads a report, or any JSON object with a `histogram` field (see the
    /// module docs). A missing title is left empty.
    ///
    /// # Errors
    ///
    /// [`HistoError::Json`] for invalid JSON, [`HistoError::NotAnObject`],
    /// [`HistoError::NoHistogram`], or [`HistoError::InvalidHistogram`] when
    /// the `histogram` field does not decode.
    pub fn from_json(text: &str) -> Result<Report, HistoError> {
        let Value::Object(mut obj) = serde_json::from_str::<Value>(text)? else {
            return Err(HistoError::NotAnObject);
        };
        let histogram = match obj.remove("histogram") {
            None | Some(Value::Null) => return Err(HistoError::NoHistogram),
            Some(Value::String(s)) => Recorder::from_serialized(&s)?,
            Some(other) => Recorder::deserialize(other)
                .map_err(|e| HistoError::InvalidHistogram(e.to_string()))?,
        };
        let title = match obj.remove("title") {
            Some(Value::String(s)) => s,
            _ => String::new(),
        };
        let mut metadata = match obj.remove("metadata") {
            Some(Value::Object(m)) => m.into_iter().collect(),
            _ => BTreeMap::new(),
        };
        let spans = obj
            .remove("spans")
            .and_then(|v| SpanSeries::deserialize(v).ok())
            .filter(|s| !s.is_empty());
        let budget_ms = obj
            .remove("budget_ms")
            .and_then(|v| v.as_f64())
            .filter(|b| b.is_finite() && *b > 0.0);
        let budget_label = match obj.remove("budget_label") {
            Some(Value::String(s)) => Some(s),
            _ => None,
        };
        let budget_percentile = obj.remove("budget_percentile").and_then(|v| v.as_f64());
        obj.remove("summary");
        for (key, value) in obj {
            let scalar = matches!(value, Value::String(_) | Value::Number(_) | Value::Bool(_));
            if scalar {
                metadata.entry(key).or_insert(value);
            }
        }
        Ok(Report {
            title,
            metadata,
            histogram,
            spans,
            budget_ms,
            budget_label,
            budget_percentile,
        })
    }

    /// Merges several reports into one titled `title`.
    ///
    /// The histograms are merged losslessly. Metadata keeps the entries on
    /// which every input agrees. The strictest (smallest) budget is kept. Span
    /// series cannot be merged (one message's span across agents is not a
    /// function of each agent's span), so they are kept only when a single
    /// input has one.
    pub fn merged<'a>(
        reports: impl IntoIterator<Item = &'a Report>,
        title: impl Into<String>,
    ) -> Report {
        let mut merged = Report::new(title, Recorder::new());
        let mut metadata: Option<BTreeMap<String, Value>> = None;
        let mut spans = Vec::new();
        for report in reports {
            merged.histogram.merge(&report.histogram);
            metadata = Some(match metadata {
                None => report.metadata.clone(),
                Some(mut common) => {
                    common.retain(|k, v| report.metadata.get(k) == Some(v));
                    common
                }
            });
            if let Some(s) = &report.spans {
                spans.push(s);
            }
            if let Some(b) = report.budget_ms {
                if merged.budget_ms.is_none_or(|m| b < m) {
                    merged.budget_ms = Some(b);
                    merged.budget_label.clone_from(&report.budget_label);
                    merged.budget_percentile = report.budget_percentile;
                }
            }
        }
        merged.metadata = metadata.unwrap_or_default();
        if let [only] = spans.as_slice() {
            merged.spans = Some((*only).clone());
        }
        merged
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SpanPoint;

    fn sample() -> Report {
        let mut r = Recorder::new();
        for v in [500, 900, 1_500, 20_000] {
            r.record_micros(v);
        }
        let mut report = Report::new("sample", r);
        report.metadata.insert("clients".into(), 4.into());
        report.spans = Some([SpanPoint::new(0, 19.5)].into_iter().collect());
        report.budget_ms = Some(50.0);
        report
    }

    #[test]
    fn json_round_trip() {
        let report = sample();
        let json = report.to_json();
        let value: Value = serde_json::from_str(&json).unwrap();
        assert_eq!(value["summary"]["count"], 4);
        // 20 ms is kept to 0.1 %: the histogram reports the top of its range.
        assert!((value["summary"]["max"].as_f64().unwrap() - 20.0).abs() < 0.02);
        assert!(value["histogram"].as_str().unwrap().starts_with("HISTF"));
        assert_eq!(Report::from_json(&json).unwrap(), report);
        // The strict serde path reads it too.
        assert_eq!(serde_json::from_str::<Report>(&json).unwrap(), report);
    }

    #[test]
    fn reads_any_object_with_a_histogram() {
        let hist = sample().histogram.to_serialized();
        let bot = format!(
            r#"{{"histogram": "{hist}", "latency_ms": {{"max": 20.0}}, "clients": 4,
                "span_ms": [1, 2], "spans": "not a span series", "topic": "t"}}"#
        );
        let report = Report::from_json(&bot).unwrap();
        assert_eq!(report.title, "");
        assert_eq!(report.histogram.count(), 4);
        assert_eq!(report.spans, None);
        assert_eq!(report.metadata["clients"], 4);
        assert_eq!(report.metadata["topic"], "t");
        assert!(!report.metadata.contains_key("latency_ms"));

        let pairs = Report::from_json(r#"{"histogram": [[1000, 2]]}"#).unwrap();
        assert_eq!(pairs.histogram.count(), 2);
    }

    #[test]
    fn clear_errors_for_bad_input() {
        assert!(matches!(Report::from_json("{"), Err(HistoError::Json(_))));
        assert!(matches!(
            Report::from_json("[1]"),
            Err(HistoError::NotAnObject)
        ));
        assert!(matches!(
            Report::from_json("{\"a\": 1}"),
            Err(HistoError::NoHistogram)
        ));
        let bad = Report::from_json("{\"histogram\": \"nope\"}").unwrap_err();
        assert!(matches!(bad, HistoError::InvalidHistogram(_)), "{bad}");
        let bad = Report::from_json("{\"histogram\": {\"x\": 1}}").unwrap_err();
        assert!(matches!(bad, HistoError::InvalidHistogram(_)), "{bad}");
    }

    #[test]
    fn merge_keeps_common_metadata_and_strictest_budget() {
        let a = sample();
        let mut b = sample();
        b.metadata.insert("clients".into(), 5.into());
        b.metadata.insert("host".into(), "b".into());
        b.budget_ms = Some(20.0);
        b.budget_label = Some("p100".into());
        b.spans = None;
        let m = Report::merged([&a, &b], "both");
        assert_eq!(m.title, "both");
        assert_eq!(m.histogram.count(), 8);
        assert!(m.metadata.is_empty());
        assert_eq!(m.budget_ms, Some(20.0));
        assert_eq!(m.budget_label(), "p100");
        assert_eq!(m.spans, a.spans);
        let twice = Report::merged([&a, &a], "twice");
        assert_eq!(twice.spans, None);
        assert_eq!(twice.metadata, a.metadata);
    }
}
