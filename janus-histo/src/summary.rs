//! [`Summary`]: the handful of numbers people quote about a latency run.

use serde::{Deserialize, Serialize};

use crate::Recorder;

/// Count, mean and the usual percentiles of a [`Recorder`], in milliseconds.
///
/// Percentiles are upper bounds of the histogram's 0.1 % resolution range, as
/// HdrHistogram reports them. All fields are zero for an empty histogram.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Smallest latency, ms.
    pub min: f64,
    /// Median latency, ms.
    pub p50: f64,
    /// 90th percentile, ms.
    pub p90: f64,
    /// 99th percentile, ms.
    pub p99: f64,
    /// 99.9th percentile, ms.
    pub p999: f64,
    /// Largest latency, ms.
    pub max: f64,
    /// Number of latencies recorded.
    pub count: u64,
    /// Mean latency, ms.
    pub mean: f64,
}

impl Summary {
    /// Computes the summary of `recorder`.
    pub fn of(recorder: &Recorder) -> Summary {
        let ms = |us: u64| us as f64 / 1000.0;
        Summary {
            min: ms(recorder.min_micros()),
            p50: ms(recorder.percentile_micros(50.0)),
            p90: ms(recorder.percentile_micros(90.0)),
            p99: ms(recorder.percentile_micros(99.0)),
            p999: ms(recorder.percentile_micros(99.9)),
            max: ms(recorder.max_micros()),
            count: recorder.count(),
            mean: recorder.mean().as_secs_f64() * 1000.0,
        }
    }
}

impl Summary {
    /// The exact summary of a few values in ms (one per message, say), not
    /// through a histogram: percentiles by nearest rank, so the median is
    /// the lower median, as [`crate::SpanSeries`] reports it. NaN values are
    /// ignored; all fields are zero when none is left.
    pub fn of_values(values: impl IntoIterator<Item = f64>) -> Summary {
        let mut v: Vec<f64> = values.into_iter().filter(|x| !x.is_nan()).collect();
        if v.is_empty() {
            return Summary::default();
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let rank = |p: f64| {
            let r = (p / 100.0 * n as f64).ceil() as usize;
            v[r.clamp(1, n) - 1]
        };
        Summary {
            min: v[0],
            p50: rank(50.0),
            p90: rank(90.0),
            p99: rank(99.0),
            p999: rank(99.9),
            max: v[n - 1],
            count: n as u64,
            mean: v.iter().sum::<f64>() / n as f64,
        }
    }
}

impl From<&Recorder> for Summary {
    fn from(recorder: &Recorder) -> Summary {
        Summary::of(recorder)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_in_milliseconds() {
        let mut r = Recorder::new();
        for v in 1..=1000 {
            r.record_micros(v);
        }
        let s = r.summary();
        assert_eq!(s.count, 1000);
        assert_eq!(s.min, 0.001);
        assert_eq!(s.p50, 0.5);
        assert_eq!(s.p90, 0.9);
        assert_eq!(s.p99, 0.99);
        assert_eq!(s.p999, 0.999);
        assert_eq!(s.max, 1.0);
        assert!((s.mean - 0.5005).abs() < 1e-6);
        let json = serde_json::to_value(s).unwrap();
        assert_eq!(json["p999"], 0.999);
        assert_eq!(Summary::of(&Recorder::new()), Summary::default());
    }

    #[test]
    fn exact_summary_of_values() {
        let s = Summary::of_values([4.0, 1.0, 3.0, 2.0, f64::NAN]);
        assert_eq!((s.count, s.min, s.max), (4, 1.0, 4.0));
        // The lower median, as SpanSeries reports it.
        assert_eq!((s.p50, s.p90, s.p99), (2.0, 4.0, 4.0));
        assert_eq!(s.mean, 2.5);
        let one = Summary::of_values([0.9168]);
        assert_eq!((one.min, one.p50, one.max), (0.9168, 0.9168, 0.9168));
        assert_eq!(Summary::of_values([]), Summary::default());
    }
}
