//! A small hand-written SVG chart of the server's memory and CPU over one
//! scenario (the latency plots come from `janus-histo`). Presentation
//! attributes only, no `<style>`, so it can be inlined in the HTML report.

use std::fmt::Write as _;

use crate::server::TimedSample;

const WIDTH: f64 = 1000.0;
const HEIGHT: f64 = 240.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 930.0;
const TOP: f64 = 30.0;
const BOTTOM: f64 = 200.0;

/// A round axis maximum at or above `v` (1, 2, 5 × 10^n).
fn nice_max(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let mag = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|m| *m >= v)
        .unwrap_or(10.0 * mag)
}

/// CPU use between consecutive samples, in percent of one core.
fn cpu_percent(samples: &[TimedSample]) -> Vec<(f64, f64)> {
    samples
        .windows(2)
        .filter_map(|w| {
            let dt = w[1].t_s - w[0].t_s;
            (dt > 0.0).then(|| (w[1].t_s, (w[1].cpu_s - w[0].cpu_s) / dt * 100.0))
        })
        .collect()
}

/// Resident memory (MiB, blue, left axis) and CPU (% of one core, orange,
/// right axis) against seconds since the server started. Empty input gives
/// an empty string.
pub fn resource_chart(samples: &[TimedSample]) -> String {
    if samples.len() < 2 {
        return String::new();
    }
    let t_max = nice_max(samples.last().map_or(1.0, |s| s.t_s));
    let rss_max = nice_max(samples.iter().map(|s| s.rss_mib).fold(0.0, f64::max) * 1.1);
    let cpu = cpu_percent(samples);
    let cpu_max = nice_max(cpu.iter().map(|c| c.1).fold(100.0, f64::max));
    let x = |t: f64| LEFT + (RIGHT - LEFT) * t / t_max;
    let y = |v: f64, max: f64| BOTTOM - (BOTTOM - TOP) * (v / max).clamp(0.0, 1.05);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" \
         viewBox=\"0 0 {WIDTH} {HEIGHT}\" font-family=\"system-ui, sans-serif\" font-size=\"12\" fill=\"#222\">\n"
    );
    s.push_str("<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n");
    let _ = writeln!(
        s,
        "<text x=\"{LEFT}\" y=\"18\" font-weight=\"bold\">Server resources over the scenario</text>"
    );
    let mib_decimals = usize::from(rss_max <= 10.0);
    for i in 0..=4 {
        let f = f64::from(i) / 4.0;
        let gy = BOTTOM - (BOTTOM - TOP) * f;
        let _ = writeln!(
            s,
            "<line x1=\"{LEFT}\" y1=\"{gy:.1}\" x2=\"{RIGHT}\" y2=\"{gy:.1}\" stroke=\"#e3e3e3\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" fill=\"#1f6fb4\">{:.mib_decimals$} MiB</text>\
             <text x=\"{:.1}\" y=\"{:.1}\" fill=\"#e8710a\">{:.0} %</text>",
            LEFT - 6.0,
            gy + 4.0,
            rss_max * f,
            RIGHT + 6.0,
            gy + 4.0,
            cpu_max * f
        );
        let tx = LEFT + (RIGHT - LEFT) * f;
        let decimals = usize::from(t_max < 10.0);
        let _ = writeln!(
            s,
            "<text x=\"{tx:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#666\">{:.decimals$} s</text>",
            BOTTOM + 16.0,
            t_max * f
        );
    }
    let line = |points: Vec<(f64, f64)>, color: &str| {
        let pts: Vec<String> = points
            .iter()
            .map(|(px, py)| format!("{px:.1},{py:.1}"))
            .collect();
        format!(
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{}\"/>\n",
            pts.join(" ")
        )
    };
    s.push_str(&line(
        samples
            .iter()
            .map(|p| (x(p.t_s), y(p.rss_mib, rss_max)))
            .collect(),
        "#1f6fb4",
    ));
    s.push_str(&line(
        cpu.iter().map(|(t, c)| (x(*t), y(*c, cpu_max))).collect(),
        "#e8710a",
    ));
    let _ = writeln!(
        s,
        "<text x=\"{LEFT}\" y=\"{:.1}\" fill=\"#1f6fb4\">— resident memory (VmRSS)</text>\
         <text x=\"{:.1}\" y=\"{:.1}\" fill=\"#e8710a\">— CPU, % of one core (2 cores = 200 %)</text>",
        HEIGHT - 8.0,
        LEFT + 220.0,
        HEIGHT - 8.0
    );
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_maxima_are_round() {
        assert_eq!(nice_max(0.0), 1.0);
        assert_eq!(nice_max(3.2), 5.0);
        assert_eq!(nice_max(120.0), 200.0);
        assert_eq!(nice_max(1000.0), 1000.0);
    }

    #[test]
    fn chart_has_both_lines() {
        let samples: Vec<TimedSample> = (0..5)
            .map(|i| TimedSample {
                t_s: f64::from(i) * 0.25,
                rss_mib: 10.0 + f64::from(i),
                cpu_s: f64::from(i) * 0.2,
            })
            .collect();
        let svg = resource_chart(&samples);
        assert!(svg.starts_with("<svg"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        // 0.2 CPU s per 0.25 s = 80 % of a core.
        assert!((cpu_percent(&samples)[0].1 - 80.0).abs() < 1e-9);
        assert!(resource_chart(&samples[..1]).is_empty());
    }
}
