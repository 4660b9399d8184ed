//! Plain-text tables and human-friendly numbers.

use std::fmt::Write;

/// A table with a header row; numeric columns are right-aligned.
#[derive(Debug, Default)]
pub struct Table {
    headers: Vec<&'static str>,
    right: Vec<bool>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these columns; a leading `>` right-aligns a column.
    pub fn new(columns: &[&'static str]) -> Self {
        Self {
            headers: columns.iter().map(|c| c.trim_start_matches('>')).collect(),
            right: columns.iter().map(|c| c.starts_with('>')).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row (missing cells print empty).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as lines, each at most `width` characters (0: no limit).
    pub fn lines(&self, width: usize) -> Vec<String> {
        let cols = self.headers.len();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate().take(cols) {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let render = |cells: &mut dyn Iterator<Item = &str>| {
            let mut line = String::new();
            for (i, cell) in cells.enumerate().take(cols) {
                if i > 0 {
                    line.push_str("  ");
                }
                let pad = widths[i].saturating_sub(cell.chars().count());
                let last = i + 1 == cols;
                if self.right[i] {
                    line.extend(std::iter::repeat_n(' ', pad));
                    line.push_str(cell);
                } else {
                    line.push_str(cell);
                    if !last {
                        line.extend(std::iter::repeat_n(' ', pad));
                    }
                }
            }
            clip(line.trim_end(), width)
        };
        let mut out = vec![render(&mut self.headers.iter().copied())];
        for row in &self.rows {
            out.push(render(&mut row.iter().map(String::as_str)));
        }
        out
    }

    /// The whole table, newline-terminated lines.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for line in self.lines(0) {
            out.push_str(&line);
            out.push('\n');
        }
        out
    }
}

/// Cuts `line` to `width` characters (0: no limit).
pub fn clip(line: &str, width: usize) -> String {
    if width == 0 || line.chars().count() <= width {
        line.to_owned()
    } else {
        line.chars().take(width).collect()
    }
}

/// `1234567` → `1,234,567`.
pub fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    // A separator goes before every digit whose index has this remainder.
    let lead = digits.len() % 3;
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && i % 3 == lead {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `3725` seconds → `1h 02m 05s`.
pub fn duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 {
        format!("{d}d {h}h {m:02}m")
    } else if h > 0 {
        format!("{h}h {m:02}m {s:02}s")
    } else if m > 0 {
        format!("{m}m {s:02}s")
    } else {
        format!("{s}s")
    }
}

/// Bytes with a binary unit, as the server's size settings are written
/// (`--history-bytes 256MiB`): `11.8 MiB`.
pub fn bytes(n: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{value:.0} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// A per-second rate: `12.3/s`, `4.6k/s`.
pub fn rate(per_s: f64) -> String {
    if per_s >= 10_000.0 {
        format!("{:.1}k/s", per_s / 1000.0)
    } else if per_s >= 100.0 {
        format!("{per_s:.0}/s")
    } else {
        format!("{per_s:.1}/s")
    }
}

/// A latency bucket bound in ms: `≤0.25 ms`, or `-` without data.
pub fn latency(ms: Option<f64>) -> String {
    match ms {
        None => "-".to_owned(),
        Some(v) if v < 1.0 => format!("≤{v:.2} ms"),
        Some(v) => format!("≤{v:.0} ms"),
    }
}

/// `bad_json 2, kicked 1`, or `none`; zero counts are left out.
pub fn errors<'a>(errors: impl IntoIterator<Item = (&'a String, &'a u64)>) -> String {
    let mut out = String::new();
    for (code, n) in errors.into_iter().filter(|(_, n)| **n > 0) {
        if !out.is_empty() {
            out.push_str(", ");
        }
        let _ = write!(out, "{code} {n}");
    }
    if out.is_empty() {
        out.push_str("none");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        assert_eq!(count(0), "0");
        assert_eq!(count(1234), "1,234");
        assert_eq!(count(1_234_567), "1,234,567");
        assert_eq!(duration(3725), "1h 02m 05s");
        assert_eq!(duration(59), "59s");
        assert_eq!(duration(90_000), "1d 1h 00m");
        assert_eq!(bytes(999.0), "999 B");
        assert_eq!(bytes(12_345_678.0), "11.8 MiB");
        assert_eq!(bytes(268_435_456.0), "256.0 MiB");
        assert_eq!(bytes(1023.0), "1023 B");
        assert_eq!(rate(12.34), "12.3/s");
        assert_eq!(rate(45_678.0), "45.7k/s");
        assert_eq!(latency(Some(0.25)), "≤0.25 ms");
        assert_eq!(latency(None), "-");
    }

    #[test]
    fn tables_align() {
        let mut t = Table::new(&["NAME", ">COUNT"]);
        t.row(vec!["a".into(), "1".into()]);
        t.row(vec!["long name".into(), "12,345".into()]);
        assert_eq!(
            t.render(),
            "NAME        COUNT\na               1\nlong name  12,345\n"
        );
    }
}
