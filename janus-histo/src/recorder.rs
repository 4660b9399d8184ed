//! [`Recorder`]: a latency histogram in microseconds, and its lossless
//! serialized form.
//!
//! # Serialized form
//!
//! A recorder travels as one JSON string: the standard base64 encoding of the
//! HdrHistogram **V2 deflate** serialization (the same bytes Java's
//! `HistogramLogProcessor` and every other HdrHistogram port read; they start
//! with `HISTFAAA` once base64-encoded). It keeps every count at every value,
//! so decoding and merging lose nothing:
//!
//! ```text
//! "histogram": "HISTFAAAAB14nJNpmSzMwMDAxQABzFCaEUzOmNZg/wEi0NzIyMTAwMDA..."
//! ```
//!
//! When reading, two more shapes are accepted so that other tools can hand us
//! data easily: base64 of the uncompressed V2 serialization, and a list of
//! `[value_us, count]` pairs such as `[[850, 3], [1200, 1]]`.

use std::fmt;
use std::io::Read;
use std::time::Duration;

use base64::Engine as _;
use hdrhistogram::serialization::{Deserializer, Serializer as _, V2DeflateSerializer};
use hdrhistogram::Histogram;
use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

use crate::HistoError;
use crate::Summary;

/// The highest latency [`Recorder::record`] keeps apart: one hour, in
/// microseconds. Larger latencies are recorded as one hour.
pub const MAX_MICROS: u64 = 3_600_000_000;

/// Significant decimal digits kept for every value (0.1 % resolution).
pub const SIGNIFICANT_DIGITS: u8 = 3;

/// The largest serialized histogram we decode, in bytes after base64 and after
/// inflating. Ours are a few kilobytes; this only stops a hostile file from
/// making us allocate gigabytes.
const MAX_DECODED_BYTES: usize = 64 << 20;

/// Size of the uncompressed V2 header: cookie, payload length, normalizing
/// offset, significant digits (4 bytes each), lowest and highest trackable
/// value (8 bytes each) and the integer-to-double ratio (8 bytes).
const V2_HEADER_LEN: usize = 40;

/// Cookie of the uncompressed V2 encoding.
const V2_COOKIE: u32 = 0x1c84_9303 | 0x10;

/// Cookie of the deflate-compressed V2 encoding.
const V2_COMPRESSED_COOKIE: u32 = 0x1c84_9304 | 0x10;

/// A latency histogram with microsecond resolution.
///
/// Values from 0 µs to one hour are kept with three significant digits. Two
/// recorders merge losslessly ([`Recorder::merge`]), whichever worker or agent
/// filled them, and a recorder serializes to a JSON string (see the module
/// docs) both through serde and through [`Recorder::to_serialized`].
#[derive(Clone, Debug)]
pub struct Recorder {
    /// Always auto-resizing, so that adding a histogram decoded from elsewhere
    /// with a wider range cannot fail.
    hist: Histogram<u64>,
}

/// Another name for [`Recorder`], for callers that read better with it.
pub type LatencyHistogram = Recorder;

impl Recorder {
    /// Creates an empty recorder.
    pub fn new() -> Recorder {
        // Bounds and digits are constants that `new_with_bounds` accepts
        // (low >= 1, high >= 2 * low, digits <= 5), so this cannot fail.
        let mut hist = Histogram::new_with_bounds(1, MAX_MICROS, SIGNIFICANT_DIGITS)
            .expect("constant histogram bounds are valid");
        hist.auto(true);
        Recorder { hist }
    }

    /// Records one latency. Sub-microsecond parts are truncated and latencies
    /// above one hour are recorded as one hour.
    pub fn record(&mut self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.record_micros(micros);
    }

    /// Records one latency given in microseconds (clamped to one hour).
    pub fn record_micros(&mut self, micros: u64) {
        self.hist.saturating_record(micros.min(MAX_MICROS));
    }

    /// Records `count` latencies of `micros` microseconds each (clamped to one
    /// hour).
    pub fn record_micros_n(&mut self, micros: u64, count: u64) {
        if count == 0 {
            return;
        }
        let micros = micros.min(MAX_MICROS);
        // The value is within the initial range, so recording cannot fail;
        // fall back to one-by-one saturating records rather than panic.
        if self.hist.record_n(micros, count).is_err() {
            for _ in 0..count {
                self.hist.saturating_record(micros);
            }
        }
    }

    /// Adds every count of `other` to `self`.
    ///
    /// Lossless: the result equals one recorder that saw both sets of values,
    /// count for count, as long as both have the same number of significant
    /// digits (always true for recorders made by this crate).
    pub fn merge(&mut self, other: &Recorder) {
        // `self.hist` auto-resizes, and resizing only fails where `usize` is
        // narrower than 64 bits. Should it ever fail, copy values one by one
        // (clamped), which loses nothing below one hour.
        if self.hist.add(&other.hist).is_err() {
            for v in other.hist.iter_recorded() {
                self.record_micros_n(v.value_iterated_to(), v.count_at_value());
            }
        }
    }

    /// Number of latencies recorded.
    pub fn count(&self) -> u64 {
        self.hist.len()
    }

    /// Number of latencies recorded (same as [`Recorder::count`]).
    pub fn len(&self) -> u64 {
        self.hist.len()
    }

    /// True when nothing has been recorded.
    pub fn is_empty(&self) -> bool {
        self.hist.is_empty()
    }

    /// The smallest latency recorded (zero when empty).
    pub fn min(&self) -> Duration {
        Duration::from_micros(self.min_micros())
    }

    /// The largest latency recorded, to within the histogram's 0.1 %
    /// resolution (zero when empty).
    pub fn max(&self) -> Duration {
        Duration::from_micros(self.max_micros())
    }

    /// The mean latency (zero when empty).
    pub fn mean(&self) -> Duration {
        Duration::from_secs_f64(self.hist.mean().max(0.0) / 1e6)
    }

    /// The latency below or at which `percent` percent of the values lie,
    /// e.g. `percentile(99.9)`. `percent` is clamped to `0.0..=100.0`; zero
    /// when empty.
    pub fn percentile(&self, percent: f64) -> Duration {
        Duration::from_micros(self.percentile_micros(percent))
    }

    /// [`Recorder::min`] in microseconds.
    pub fn min_micros(&self) -> u64 {
        if self.is_empty() {
            0
        } else {
            self.hist.min()
        }
    }

    /// [`Recorder::max`] in microseconds.
    pub fn max_micros(&self) -> u64 {
        if self.is_empty() {
            0
        } else {
            self.hist.max()
        }
    }

    /// [`Recorder::percentile`] in microseconds.
    pub fn percentile_micros(&self, percent: f64) -> u64 {
        self.quantile_micros(percent / 100.0)
    }

    /// The latency at quantile `q` (`0.0..=1.0`) in microseconds; zero when
    /// empty.
    pub fn quantile_micros(&self, q: f64) -> u64 {
        if self.is_empty() {
            return 0;
        }
        let q = if q.is_nan() { 0.0 } else { q.clamp(0.0, 1.0) };
        // The histogram takes the ceiling of `q * count`, so a product that
        // floating point puts a hair above an integer (99.9 / 100 * 1000 is
        // 999.0000000000001) would skip to the next value. Snap such
        // products back to the integer.
        let count = self.hist.len() as f64;
        let rank = q * count;
        let nearest = rank.round();
        let q = if nearest > 0.0 && (rank - nearest).abs() < 1e-9 * count.max(1.0) {
            (nearest - 0.5) / count
        } else {
            q
        };
        self.hist.value_at_quantile(q)
    }

    /// The number of values recorded at `micros`, or at any value the
    /// histogram cannot tell apart from it.
    pub fn count_at_micros(&self, micros: u64) -> u64 {
        self.hist.count_at(micros)
    }

    /// Every distinct recorded value (in microseconds, the highest value of
    /// its equivalence range) with its count, in increasing order.
    pub fn recorded(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.hist
            .iter_recorded()
            .map(|v| (v.value_iterated_to(), v.count_at_value()))
    }

    /// The middle of the range of values the histogram cannot tell apart
    /// from `micros`.
    pub(crate) fn median_equivalent(&self, micros: u64) -> u64 {
        self.hist.median_equivalent(micros)
    }

    /// The usual statistics of this histogram in milliseconds.
    pub fn summary(&self) -> Summary {
        Summary::of(self)
    }

    /// The serialized form: base64 of the V2 deflate encoding (see the module
    /// docs).
    pub fn to_serialized(&self) -> String {
        let mut bytes = Vec::new();
        // Serializing into a Vec only fails if a count does not fit the
        // encoding, which cannot happen with u64 counts, or if deflate fails
        // to write to memory. Either way an empty histogram is the only
        // honest fallback, so say so loudly in debug builds.
        if let Err(e) = V2DeflateSerializer::new().serialize(&self.hist, &mut bytes) {
            debug_assert!(false, "serializing a histogram into memory failed: {e:?}");
            bytes.clear();
            let empty = Recorder::new();
            let _ = V2DeflateSerializer::new().serialize(&empty.hist, &mut bytes);
        }
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    /// Decodes the serialized form (base64 of the V2 or V2 deflate encoding).
    ///
    /// # Errors
    ///
    /// [`HistoError::InvalidHistogram`] when the text is not base64, not a V2
    /// encoding, truncated, or larger than 64 MiB decoded.
    pub fn from_serialized(text: &str) -> Result<Recorder, HistoError> {
        let text = text.trim();
        if text.len() > MAX_DECODED_BYTES / 3 * 4 + 4 {
            return Err(invalid("too large"));
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|e| invalid(format!("not base64 ({e})")))?;
        let plain = match cookie(&bytes) {
            Some(V2_COOKIE) => bytes,
            Some(V2_COMPRESSED_COOKIE) => inflate(&bytes)?,
            Some(other) => return Err(invalid(format!("unknown cookie {other:#010x}"))),
            None => return Err(invalid("truncated header")),
        };
        check_v2_header(&plain)?;
        let mut hist: Histogram<u64> = Deserializer::new()
            .deserialize(&mut plain.as_slice())
            .map_err(|e| invalid(format!("{e:?}")))?;
        hist.auto(true);
        Ok(Recorder { hist })
    }

    /// Builds a recorder from `[value_us, count]` pairs (values clamped to one
    /// hour).
    pub fn from_pairs(pairs: impl IntoIterator<Item = (u64, u64)>) -> Recorder {
        let mut r = Recorder::new();
        for (value, count) in pairs {
            r.record_micros_n(value, count);
        }
        r
    }
}

impl Default for Recorder {
    fn default() -> Recorder {
        Recorder::new()
    }
}

impl PartialEq for Recorder {
    /// Equal when both hold the same counts at the same values.
    fn eq(&self, other: &Recorder) -> bool {
        self.hist == other.hist
    }
}

fn invalid(reason: impl Into<String>) -> HistoError {
    HistoError::InvalidHistogram(reason.into())
}

/// The big-endian cookie at the start of an encoding, if there are 4 bytes.
fn cookie(bytes: &[u8]) -> Option<u32> {
    let head: [u8; 4] = bytes.get(..4)?.try_into().ok()?;
    Some(u32::from_be_bytes(head))
}

/// Unwraps the V2 deflate envelope (cookie, compressed length, zlib stream)
/// into the plain V2 encoding, refusing to inflate past [`MAX_DECODED_BYTES`].
fn inflate(bytes: &[u8]) -> Result<Vec<u8>, HistoError> {
    let len: [u8; 4] = bytes
        .get(4..8)
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| invalid("truncated deflate header"))?;
    let len = u32::from_be_bytes(len) as usize;
    let body = bytes
        .get(8..8usize.saturating_add(len))
        .ok_or_else(|| invalid("truncated deflate payload"))?;
    let mut plain = Vec::new();
    flate2::read::ZlibDecoder::new(body)
        .take(MAX_DECODED_BYTES as u64 + 1)
        .read_to_end(&mut plain)
        .map_err(|e| invalid(format!("bad deflate payload ({e})")))?;
    if plain.len() > MAX_DECODED_BYTES {
        return Err(invalid("too large"));
    }
    Ok(plain)
}

/// Checks that the declared payload length of a plain V2 encoding matches the
/// bytes present, before the decoder allocates a buffer of that length.
fn check_v2_header(plain: &[u8]) -> Result<(), HistoError> {
    if cookie(plain) != Some(V2_COOKIE) {
        return Err(invalid("bad inner cookie"));
    }
    let len: [u8; 4] = plain
        .get(4..8)
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| invalid("truncated header"))?;
    let declared = u32::from_be_bytes(len) as usize;
    let present = plain.len().saturating_sub(V2_HEADER_LEN);
    if plain.len() < V2_HEADER_LEN || declared > present {
        return Err(invalid(format!(
            "payload length {declared} but only {present} bytes present"
        )));
    }
    Ok(())
}

impl Serialize for Recorder {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_serialized())
    }
}

impl<'de> Deserialize<'de> for Recorder {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Recorder, D::Error> {
        deserializer.deserialize_any(RecorderVisitor)
    }
}

/// Accepts a serialized string or a sequence of `[value_us, count]` pairs.
struct RecorderVisitor;

impl<'de> Visitor<'de> for RecorderVisitor {
    type Value = Recorder;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a base64 HdrHistogram V2 string or a list of [value_us, count] pairs")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Recorder, E> {
        Recorder::from_serialized(text).map_err(E::custom)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Recorder, A::Error> {
        let mut r = Recorder::new();
        while let Some((value, count)) = seq.next_element::<(u64, u64)>()? {
            r.record_micros_n(value, count);
        }
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values 1..=1000 µs once each: every value is exact at 3 digits.
    fn one_to_thousand() -> Recorder {
        let mut r = Recorder::new();
        for v in 1..=1000 {
            r.record_micros(v);
        }
        r
    }

    #[test]
    fn percentiles_of_known_data() {
        let r = one_to_thousand();
        assert_eq!(r.count(), 1000);
        assert_eq!(r.len(), 1000);
        assert_eq!(r.min(), Duration::from_micros(1));
        assert_eq!(r.max(), Duration::from_micros(1000));
        assert_eq!(r.percentile(50.0), Duration::from_micros(500));
        assert_eq!(r.percentile(90.0), Duration::from_micros(900));
        assert_eq!(r.percentile(99.0), Duration::from_micros(990));
        assert_eq!(r.percentile(99.9), Duration::from_micros(999));
        assert_eq!(r.percentile(100.0), Duration::from_micros(1000));
        assert_eq!(r.percentile(250.0), Duration::from_micros(1000));
        assert_eq!(r.percentile(f64::NAN), Duration::from_micros(1));
        let mean = r.mean().as_secs_f64() * 1e6;
        assert!((mean - 500.5).abs() < 0.01, "{mean}");
    }

    #[test]
    fn record_duration_truncates_and_clamps() {
        let mut r = Recorder::new();
        r.record(Duration::from_nanos(1_999));
        r.record(Duration::from_secs(7200));
        r.record(Duration::ZERO);
        assert_eq!(r.count_at_micros(1), 1);
        assert_eq!(r.count_at_micros(0), 1);
        assert_eq!(r.min(), Duration::ZERO);
        assert!(r.max() >= Duration::from_secs(3600));
        assert!(r.max() < Duration::from_secs(3605));
    }

    #[test]
    fn empty_is_zero_everywhere() {
        let r = Recorder::new();
        assert!(r.is_empty());
        assert_eq!(r.min(), Duration::ZERO);
        assert_eq!(r.max(), Duration::ZERO);
        assert_eq!(r.mean(), Duration::ZERO);
        assert_eq!(r.percentile(99.0), Duration::ZERO);
    }

    #[test]
    fn merge_equals_recording_everything_into_one() {
        let mut a = Recorder::new();
        let mut b = Recorder::new();
        let mut all = Recorder::new();
        // Values spread over six orders of magnitude, including ones that
        // share an equivalence range.
        let mut x: u64 = 12345;
        for i in 0..20_000u64 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let v = (x >> 33) % (1 << (i % 30));
            if i % 3 == 0 {
                a.record_micros(v);
            } else {
                b.record_micros(v);
            }
            all.record_micros(v);
        }
        let mut merged = a.clone();
        merged.merge(&b);
        assert_eq!(merged.count(), all.count());
        assert_eq!(merged, all);
        let m: Vec<_> = merged.recorded().collect();
        let w: Vec<_> = all.recorded().collect();
        assert_eq!(m, w);
        assert_eq!(merged.min(), all.min());
        assert_eq!(merged.max(), all.max());
    }

    #[test]
    fn serialized_round_trip_is_lossless() {
        let mut r = one_to_thousand();
        r.record_micros(2_000_000);
        r.record_micros_n(123_456, 7);
        let text = r.to_serialized();
        assert!(text.starts_with("HISTF"), "{text}");
        let back = Recorder::from_serialized(&text).unwrap();
        assert_eq!(back, r);
        assert_eq!(
            back.recorded().collect::<Vec<_>>(),
            r.recorded().collect::<Vec<_>>()
        );

        // A decoded histogram still merges (it auto-resizes like ours).
        let mut again = back.clone();
        again.merge(&r);
        assert_eq!(again.count(), 2 * r.count());
    }

    #[test]
    fn serde_round_trip_and_pairs() {
        let r = one_to_thousand();
        let json = serde_json::to_string(&r).unwrap();
        assert!(json.starts_with("\"HISTF"));
        let back: Recorder = serde_json::from_str(&json).unwrap();
        assert_eq!(back, r);

        let pairs: Recorder = serde_json::from_str("[[850, 3], [1200, 1]]").unwrap();
        assert_eq!(pairs.count(), 4);
        assert_eq!(pairs.count_at_micros(850), 3);
        assert_eq!(pairs, Recorder::from_pairs([(850, 3), (1200, 1)]));
    }

    #[test]
    fn bad_serialized_input_is_an_error() {
        for bad in [
            "",
            "!!!",
            "AAAA",
            "HISTFAAAAB14nJNpmSzMwMDA",
            "aGVsbG8gd29ybGQ=",
        ] {
            assert!(
                matches!(
                    Recorder::from_serialized(bad),
                    Err(HistoError::InvalidHistogram(_))
                ),
                "{bad:?}"
            );
        }
        // A plain V2 header that claims a huge payload.
        let mut forged = Vec::new();
        forged.extend_from_slice(&V2_COOKIE.to_be_bytes());
        forged.extend_from_slice(&u32::MAX.to_be_bytes());
        forged.extend_from_slice(&[0; 32]);
        let text = base64::engine::general_purpose::STANDARD.encode(forged);
        assert!(Recorder::from_serialized(&text).is_err());
        assert!(serde_json::from_str::<Recorder>("42").is_err());
        assert!(serde_json::from_str::<Recorder>("[[1]]").is_err());
    }
}
