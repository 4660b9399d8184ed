//! Parsing durations typed by people (`500ms`, `250us`, `1.5s`) and writing
//! latencies in units people read at a glance (`850 µs`, `12.3 ms`, `1.24 s`).

use std::time::Duration;

use crate::recorder::MAX_MICROS;
use crate::HistoError;

/// Parses a positive duration made of a decimal number and a unit: `us` (or
/// `µs`), `ms` or `s`, e.g. `500ms`, `2ms`, `250us`, `1.5s`, `0.2 ms`.
///
/// # Errors
///
/// [`HistoError::InvalidDuration`] when the number or unit is missing or
/// unknown, or the duration is below 1 µs or above one hour.
pub fn parse_duration(input: &str) -> Result<Duration, HistoError> {
    let err = |reason| HistoError::InvalidDuration {
        input: input.to_owned(),
        reason,
    };
    let text = input.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| err("missing unit (use us, ms or s)"))?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().map_err(|_| err("not a number"))?;
    let scale = match unit.trim() {
        "us" | "µs" | "μs" => 1.0,
        "ms" => 1e3,
        "s" => 1e6,
        _ => return Err(err("unknown unit (use us, ms or s)")),
    };
    let micros = number * scale;
    if micros < 1.0 {
        return Err(err("must be at least 1us"));
    }
    if micros > MAX_MICROS as f64 {
        return Err(err("must be at most one hour"));
    }
    Ok(Duration::from_micros(micros.round() as u64))
}

/// A unit for showing latencies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Unit {
    /// Microseconds.
    Micros,
    /// Milliseconds.
    Millis,
    /// Seconds.
    Secs,
}

impl Unit {
    /// The unit in which `micros` reads as a number from 1 to 999 (seconds
    /// from one second up).
    pub(crate) fn for_micros(micros: f64) -> Unit {
        if micros < 1e3 {
            Unit::Micros
        } else if micros < 1e6 {
            Unit::Millis
        } else {
            Unit::Secs
        }
    }

    /// Microseconds per unit.
    pub(crate) fn micros(self) -> f64 {
        match self {
            Unit::Micros => 1.0,
            Unit::Millis => 1e3,
            Unit::Secs => 1e6,
        }
    }

    /// The unit's symbol.
    pub(crate) fn symbol(self) -> &'static str {
        match self {
            Unit::Micros => "µs",
            Unit::Millis => "ms",
            Unit::Secs => "s",
        }
    }
}

/// Writes a latency in microseconds with three significant digits and the
/// unit that suits it: `0 µs`, `850 µs`, `1.25 ms`, `12.3 ms`, `1.24 s`.
pub fn format_micros(micros: f64) -> String {
    if !micros.is_finite() || micros <= 0.0 {
        return "0 µs".to_owned();
    }
    let mut unit = Unit::for_micros(micros);
    loop {
        let value = micros / unit.micros();
        let decimals = if unit == Unit::Micros || value >= 100.0 {
            0
        } else if value >= 10.0 {
            1
        } else {
            2
        };
        let text = format!("{value:.decimals$}");
        // 999.7 µs rounds to "1000": say "1.00 ms" instead.
        let rounded_up = text.parse::<f64>().is_ok_and(|v| v >= 1000.0);
        match unit {
            Unit::Micros if rounded_up => unit = Unit::Millis,
            Unit::Millis if rounded_up => unit = Unit::Secs,
            _ => return format!("{text} {}", unit.symbol()),
        }
    }
}

/// [`format_micros`] for a [`Duration`].
pub fn format_duration(d: Duration) -> String {
    format_micros(d.as_secs_f64() * 1e6)
}

/// [`format_micros`] for milliseconds.
pub fn format_millis(ms: f64) -> String {
    format_micros(ms * 1e3)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_durations() {
        let ok = [
            ("500ms", 500_000),
            ("2ms", 2_000),
            ("250us", 250),
            ("250µs", 250),
            ("1.5s", 1_500_000),
            (" 0.2 ms ", 200),
            ("1s", 1_000_000),
        ];
        for (input, micros) in ok {
            assert_eq!(
                parse_duration(input).unwrap(),
                Duration::from_micros(micros),
                "{input}"
            );
        }
        for bad in [
            "",
            "500",
            "ms",
            "5 parsecs",
            "0ms",
            "0.1us",
            "2h",
            "7200s",
            "1..2ms",
            "-1ms",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn formats_with_three_digits() {
        let cases = [
            (0.0, "0 µs"),
            (7.0, "7 µs"),
            (850.0, "850 µs"),
            (999.7, "1.00 ms"),
            (1_250.0, "1.25 ms"),
            (12_345.0, "12.3 ms"),
            (123_456.0, "123 ms"),
            (999_999.0, "1.00 s"),
            (1_240_000.0, "1.24 s"),
            (3_600_000_000.0, "3600 s"),
        ];
        for (micros, text) in cases {
            assert_eq!(format_micros(micros), text, "{micros}");
        }
        assert_eq!(format_duration(Duration::from_millis(2)), "2.00 ms");
        assert_eq!(format_millis(0.5), "500 µs");
    }
}
