//! Errors in plain words for numbers, sizes and durations, saying where the
//! bad value came from: the flag (`--queue-limit must be a whole number of
//! at least 1 (got 0)`), the variable (`JANUS_QUEUE_LIMIT=abc (the
//! environment form of --queue-limit): must be ...`) or the file's key
//! (`invalid setting queue-limit in config file F: must be ... (got 0)`).
//!
//! A setting's parser is a [`Parse`]: it returns the value, or what the
//! value must be ("must be a whole number of at least 1"); [`Worded`] and
//! [`from_text`] add the value and where it came from. Flag, variable and
//! file thus share one parser and one message.

use std::fmt;
use std::time::Duration;

use serde::de::{Deserializer, Error as _, Visitor};

pub use janus_core::cli::{Parse, Worded};

/// Reads a file value with its flag's parser: a TOML string, integer, float
/// or boolean is taken as the text it is written as, so the file accepts
/// what the flag accepts, and a bad value gets the same message.
///
/// # Errors
/// What the value must be, and the value.
pub fn from_text<'de, D: Deserializer<'de>, T>(d: D, parse: Parse<T>) -> Result<T, D::Error> {
    let text = d.deserialize_any(Text)?;
    parse(&text).map_err(|why| D::Error::custom(format!("{why} (got {text})")))
}

/// A scalar as text.
struct Text;

impl Visitor<'_> for Text {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a number or a string")
    }

    fn visit_str<E>(self, v: &str) -> Result<String, E> {
        Ok(v.to_owned())
    }

    fn visit_u64<E>(self, v: u64) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_i64<E>(self, v: i64) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_f64<E>(self, v: f64) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_bool<E>(self, v: bool) -> Result<String, E> {
        Ok(v.to_string())
    }
}

/// Parses `30s`, `250ms`, `2m`.
///
/// # Errors
/// What a duration looks like.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|_| "must be a duration such as 250ms, 30s or 5m".to_owned())
}

/// A duration ([`parse_duration`]) longer than zero.
///
/// # Errors
/// What such a duration looks like.
pub fn positive_duration(s: &str) -> Result<Duration, String> {
    parse_duration(s)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| "must be a duration longer than zero, such as 250ms, 30s or 5m".to_owned())
}

/// Durations in the file, read with the flags' parsers and written back
/// as `"30s"`: `#[serde(with = "plain::file::duration")]`.
pub mod file {
    /// Any duration, zero too ([`super::parse_duration`]).
    pub mod duration {
        pub use humantime_serde::serialize;

        /// Reads the duration.
        ///
        /// # Errors
        /// What a duration looks like, and the value.
        pub fn deserialize<'de, D: serde::Deserializer<'de>>(
            d: D,
        ) -> Result<std::time::Duration, D::Error> {
            super::super::from_text(d, super::super::parse_duration)
        }
    }

    /// A duration longer than zero ([`super::positive_duration`]).
    pub mod positive_duration {
        pub use humantime_serde::serialize;

        /// Reads the duration.
        ///
        /// # Errors
        /// What such a duration looks like, and the value.
        pub fn deserialize<'de, D: serde::Deserializer<'de>>(
            d: D,
        ) -> Result<std::time::Duration, D::Error> {
            super::super::from_text(d, super::super::positive_duration)
        }
    }
}
