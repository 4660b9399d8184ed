//! [`BucketTable`]: the 2009 report's fixed-width latency buckets.
//!
//! The 2009 `histo` module counted latencies in 500 ms buckets. That says
//! nothing once latencies are sub-second, so the width is chosen from the
//! data: the narrowest width of the 1-2-5 sequence (1 µs, 2 µs, 5 µs, 10 µs,
//! …, 500 ms, 1 s, …) that covers `[min, max]` in at most [`TARGET_ROWS`]
//! rows. A width can also be forced (`--bucket 500ms`). Only rows from the
//! one holding the minimum to the one holding the maximum exist, so there are
//! no empty leading or trailing rows.

use std::time::Duration;

use crate::{HistoError, Recorder};

/// The most rows a chosen bucket width produces.
pub const TARGET_ROWS: u64 = 20;

/// The most rows a forced bucket width may produce.
pub const MAX_ROWS: u64 = 1000;

/// One bucket: the latencies in `[low_us, high_us)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BucketRow {
    /// Inclusive lower bound, µs.
    pub low_us: u64,
    /// Exclusive upper bound, µs.
    pub high_us: u64,
    /// Number of latencies in the bucket.
    pub count: u64,
}

/// Latency counts per fixed-width bucket, from the minimum to the maximum.
#[derive(Clone, Debug, PartialEq)]
pub struct BucketTable {
    /// Width of every bucket, µs.
    pub width_us: u64,
    /// The buckets, lowest first; empty when the histogram is.
    pub rows: Vec<BucketRow>,
    /// Total count (the sum of the rows' counts).
    pub total: u64,
    /// Smallest latency, µs.
    pub min_us: u64,
    /// Largest latency, µs.
    pub max_us: u64,
}

impl BucketTable {
    /// Counts the latencies of `recorder` per bucket, `forced` wide or of a
    /// width chosen with [`choose_bucket_width`].
    ///
    /// # Errors
    ///
    /// [`HistoError::TooManyBuckets`] when a forced width would need more than
    /// [`MAX_ROWS`] rows.
    pub fn new(recorder: &Recorder, forced: Option<Duration>) -> Result<BucketTable, HistoError> {
        let min_us = recorder.min_micros();
        let max_us = recorder.max_micros();
        let width_us = match forced {
            Some(d) => u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1),
            None => choose_bucket_width(min_us, max_us),
        };
        let mut table = BucketTable {
            width_us,
            rows: Vec::new(),
            total: recorder.count(),
            min_us,
            max_us,
        };
        if recorder.is_empty() {
            return Ok(table);
        }
        let first = min_us / width_us;
        let last = max_us / width_us;
        let rows = last - first + 1;
        if rows > MAX_ROWS {
            return Err(HistoError::TooManyBuckets {
                width_us,
                rows,
                max: MAX_ROWS,
            });
        }
        table.rows = (first..=last)
            .map(|i| BucketRow {
                low_us: i * width_us,
                high_us: (i + 1).saturating_mul(width_us),
                count: 0,
            })
            .collect();
        for (value, count) in recorder.recorded() {
            // Values are exact below 2048 µs; above, the histogram keeps a
            // range 0.1 % wide, placed here by its middle.
            let index = (recorder.median_equivalent(value) / width_us).saturating_sub(first);
            let index = usize::try_from(index)
                .unwrap_or(usize::MAX)
                .min(table.rows.len() - 1);
            table.rows[index].count += count;
        }
        Ok(table)
    }

    /// The share of all latencies that fall in `row`, in percent.
    pub fn percent(&self, row: &BucketRow) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            row.count as f64 * 100.0 / self.total as f64
        }
    }
}

/// The narrowest 1-2-5 width (in µs) covering `[min_us, max_us]` in at most
/// [`TARGET_ROWS`] rows, and no narrower than a hundredth of `max_us` (so that
/// nearly constant data does not get 1 µs buckets).
pub fn choose_bucket_width(min_us: u64, max_us: u64) -> u64 {
    let floor = max_us / 100;
    one_two_five()
        .find(|&w| w >= floor && max_us / w - min_us / w < TARGET_ROWS)
        .unwrap_or(u64::MAX)
}

/// 1, 2, 5, 10, 20, 50, … up to the largest such value below `u64::MAX`.
fn one_two_five() -> impl Iterator<Item = u64> {
    (0..19u32).flat_map(|exp| {
        let decade = 10u64.pow(exp);
        [decade, 2 * decade, 5 * decade]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recorder(values: impl IntoIterator<Item = u64>) -> Recorder {
        let mut r = Recorder::new();
        for v in values {
            r.record_micros(v);
        }
        r
    }

    #[test]
    fn width_suits_the_data() {
        // Sub-millisecond data gets sub-millisecond buckets.
        let w = choose_bucket_width(100, 900);
        assert!((10..1000).contains(&w), "{w}");
        assert_eq!(w, 50);
        // Multi-second data gets 500 ms .. 1 s buckets.
        let w = choose_bucket_width(200_000, 9_000_000);
        assert!((500_000..=1_000_000).contains(&w), "{w}");
        // A 2 s max starting at 0 gets 100 ms or 200 ms buckets.
        assert_eq!(choose_bucket_width(0, 1_999_000), 100_000);
        // Constant data does not get 1 µs buckets.
        assert_eq!(choose_bucket_width(5_000, 5_000), 50);
        assert_eq!(choose_bucket_width(0, 0), 1);
        assert_eq!(
            choose_bucket_width(0, u64::MAX / 2),
            500_000_000_000_000_000
        );
    }

    #[test]
    fn rows_cover_min_to_max_and_sum_to_total() {
        let r = recorder((0..19_000).map(|i| 300 + (i * 37) % 4_700));
        let table = BucketTable::new(&r, None).unwrap();
        assert!(table.rows.len() as u64 <= TARGET_ROWS && table.rows.len() >= 8);
        assert_eq!(table.rows.iter().map(|r| r.count).sum::<u64>(), r.count());
        let percent: f64 = table.rows.iter().map(|row| table.percent(row)).sum();
        assert!((percent - 100.0).abs() < 1e-9, "{percent}");
        let first = table.rows[0];
        let last = table.rows[table.rows.len() - 1];
        assert!(first.low_us <= table.min_us && table.min_us < first.high_us);
        assert!(last.low_us <= table.max_us && table.max_us < last.high_us);
        assert!(first.count > 0 && last.count > 0);
    }

    #[test]
    fn forced_width_is_respected() {
        let r = recorder([100_000, 700_000, 1_900_000]);
        let table = BucketTable::new(&r, Some(Duration::from_millis(500))).unwrap();
        assert_eq!(table.width_us, 500_000);
        let rows: Vec<_> = table.rows.iter().map(|r| (r.low_us, r.count)).collect();
        assert_eq!(rows, [(0, 1), (500_000, 1), (1_000_000, 0), (1_500_000, 1)]);

        let err = BucketTable::new(&r, Some(Duration::from_micros(1))).unwrap_err();
        assert!(matches!(err, HistoError::TooManyBuckets { .. }), "{err}");
    }

    #[test]
    fn boundaries_are_exact_where_values_are() {
        let r = recorder([99, 100, 199, 200]);
        let table = BucketTable::new(&r, Some(Duration::from_micros(100))).unwrap();
        let counts: Vec<_> = table.rows.iter().map(|r| (r.low_us, r.count)).collect();
        assert_eq!(counts, [(0, 1), (100, 2), (200, 1)]);

        // Above 2048 µs values are kept to 0.1 %, still in the right bucket
        // when they are not within 0.1 % of a boundary.
        let r = recorder([4_990_000, 5_010_000, 5_400_000]);
        let table = BucketTable::new(&r, Some(Duration::from_millis(500))).unwrap();
        let counts: Vec<_> = table.rows.iter().map(|r| (r.low_us, r.count)).collect();
        assert_eq!(counts, [(4_500_000, 1), (5_000_000, 2)]);
    }

    #[test]
    fn empty_histogram_has_no_rows() {
        let table = BucketTable::new(&Recorder::new(), None).unwrap();
        assert!(table.rows.is_empty());
        assert_eq!(table.total, 0);
    }
}
