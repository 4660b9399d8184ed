//! The one error type of this crate, [`HistoError`].
//!
//! Decoding a histogram, loading a report and parsing a bucket width all fail
//! with it; the binary wraps it in `anyhow` and prints the chain with `{:#}`.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong while loading, merging or rendering histograms.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HistoError {
    /// A serialized histogram could not be decoded (bad base64, bad cookie,
    /// truncated or inconsistent payload, bad `[value, count]` pair).
    #[error("invalid serialized histogram: {0}")]
    InvalidHistogram(String),

    /// The JSON text of a report is not valid JSON.
    #[error("invalid JSON")]
    Json(#[from] serde_json::Error),

    /// The JSON document is valid but is not an object.
    #[error("expected a JSON object with a \"histogram\" field")]
    NotAnObject,

    /// The JSON object has no `histogram` field.
    #[error("no \"histogram\" field in the JSON object")]
    NoHistogram,

    /// A duration such as `500ms` or `250us` could not be parsed.
    #[error("invalid duration {input:?}: {reason}")]
    InvalidDuration {
        /// What the user typed.
        input: String,
        /// Why it was rejected.
        reason: &'static str,
    },

    /// A forced bucket width would print an unreasonable number of rows.
    #[error("bucket width {width_us} µs would print {rows} rows (at most {max} allowed); pick a wider bucket")]
    TooManyBuckets {
        /// The forced width in microseconds.
        width_us: u64,
        /// How many rows it would take to cover `[min, max]`.
        rows: u64,
        /// The limit.
        max: u64,
    },

    /// A command was given no input files.
    #[error("no input files")]
    NoInputs,

    /// Writing rendered output failed.
    #[error("cannot write output")]
    Io(#[from] io::Error),

    /// A file could not be read.
    #[error("cannot read file")]
    Read(#[source] io::Error),

    /// A file could not be written.
    #[error("cannot write file")]
    Write(#[source] io::Error),

    /// An output file named by a flag cannot be written. Checked before any
    /// input is read, so that nothing is computed for nothing; a usage error
    /// (the binary exits 2).
    #[error("{flag} {}: {reason}", path.display())]
    Output {
        /// The flag that named it (`--plot`, `--output`).
        flag: &'static str,
        /// The file.
        path: PathBuf,
        /// Why it cannot be written.
        reason: String,
    },

    /// Reading or writing a named file failed, or its content was bad.
    #[error("{}", path.display())]
    File {
        /// The file concerned.
        path: PathBuf,
        /// What went wrong with it.
        #[source]
        source: Box<HistoError>,
    },
}

impl HistoError {
    /// Whether this is a usage error (a bad output path), for which the
    /// binary exits 2 rather than 1.
    pub fn is_usage(&self) -> bool {
        match self {
            HistoError::Output { .. } => true,
            HistoError::File { source, .. } => source.is_usage(),
            _ => false,
        }
    }

    /// Wraps `self` with the path of the file it concerns.
    pub(crate) fn in_file(self, path: impl Into<PathBuf>) -> HistoError {
        HistoError::File {
            path: path.into(),
            source: Box::new(self),
        }
    }
}
