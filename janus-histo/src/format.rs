//! Numbers and text for people, shared by every renderer (the text and SVG
//! reports here, and the HTML load-test report of `xtask`): thousands
//! separators, a precision that suits a number's size, and escaping for
//! HTML and SVG.

/// `n` with thousands separators: `1,234,567`.
pub fn group_thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A number with thousands separators and a precision that suits its size:
/// `1,234,567`, `12.3`, `1.23`, `0.123`.
pub fn format_number(value: f64) -> String {
    if !value.is_finite() {
        return value.to_string();
    }
    let abs = value.abs();
    if abs >= 100.0 || value.fract() == 0.0 {
        let rounded = value.round();
        let sign = if rounded < 0.0 { "-" } else { "" };
        format!("{sign}{}", group_thousands(rounded.abs() as u64))
    } else if abs >= 10.0 {
        format!("{value:.1}")
    } else if abs >= 1.0 {
        format!("{value:.2}")
    } else {
        format!("{value:.3}")
    }
}

/// Digits after the point that show every multiple of `step` exactly (up
/// to 3): axis labels then say what their gridlines are at.
pub fn decimals_for(step: f64) -> usize {
    (0..3)
        .find(|&d| {
            let scaled = step * 10f64.powi(d as i32);
            (scaled - scaled.round()).abs() < 1e-6 * scaled.max(1.0)
        })
        .unwrap_or(3)
}

/// Escapes text for HTML or SVG element content and attribute values;
/// control characters (invalid in XML) are dropped.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() && c != '\n' && c != '\t' => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_well() {
        assert_eq!(group_thousands(0), "0");
        assert_eq!(group_thousands(999), "999");
        assert_eq!(group_thousands(19_000), "19,000");
        assert_eq!(group_thousands(1_234_567), "1,234,567");
        assert_eq!(format_number(1234567.4), "1,234,567");
        assert_eq!(format_number(-1500.0), "-1,500");
        assert_eq!(format_number(0.0), "0");
        assert_eq!(format_number(12.34), "12.3");
        assert_eq!(format_number(1.234), "1.23");
        assert_eq!(format_number(0.1234), "0.123");
    }

    #[test]
    fn decimals_match_steps() {
        assert_eq!(decimals_for(5.0), 0);
        assert_eq!(decimals_for(2.5), 1);
        assert_eq!(decimals_for(0.25), 2);
        assert_eq!(decimals_for(0.001), 3);
    }

    #[test]
    fn escaping() {
        assert_eq!(
            escape("<a href=\"x\">&'\u{1}"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
