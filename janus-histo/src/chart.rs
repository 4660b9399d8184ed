//! Lines over time on one or two value axes, as SVG: the load test's server
//! memory and CPU charts. Same look and tick rules as the latency plot of
//! [`crate::svg`]: gridlines at 1-2-5 steps and labels printed with exactly
//! the decimals their step needs, so every label says where its line is.

use crate::format::decimals_for;
use crate::svg::{nice_step, Stroke, Svg, Text, AXIS, FONT, GRID, INK, MUTED};

const WIDTH: f64 = 1000.0;
const HEIGHT: f64 = 260.0;
const LEFT: f64 = 84.0;
const RIGHT: f64 = 916.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 200.0;

/// One value axis: its unit and the lines plotted against it.
#[derive(Debug, Clone, Default)]
pub struct Axis {
    /// Unit shown after each tick label (`MiB`, `%`).
    pub unit: String,
    /// The axis never ends below this, so a flat line near zero is not
    /// blown up to fill the height (e.g. 100 for "% of one core").
    pub min_top: f64,
    /// The lines.
    pub lines: Vec<Line>,
}

/// One line: points of (seconds, value).
#[derive(Debug, Clone, Default)]
pub struct Line {
    /// Legend text.
    pub label: String,
    /// Stroke colour, e.g. `#1f6fb4`.
    pub color: String,
    /// The points, in time order.
    pub points: Vec<(f64, f64)>,
}

/// A chart of lines against seconds, on a left axis and optionally a right one.
#[derive(Debug, Clone, Default)]
pub struct TimeChart {
    /// Heading.
    pub title: String,
    /// The left axis (its labels are in the colour of its first line).
    pub left: Axis,
    /// The right axis, if any.
    pub right: Option<Axis>,
}

/// Ticks from 0 to a round value at or above `max`, at most `n` steps.
fn ticks(max: f64, n: u32) -> (f64, f64) {
    let step = nice_step(max.max(f64::MIN_POSITIVE), n);
    let top = ((max / step).ceil() * step).max(step);
    (step, top)
}

impl TimeChart {
    /// The chart as an inline SVG element; empty when no line has two points.
    pub fn to_svg(&self) -> String {
        let axes: Vec<&Axis> = std::iter::once(&self.left).chain(&self.right).collect();
        let lines = || axes.iter().flat_map(|a| &a.lines);
        if !lines().any(|l| l.points.len() >= 2) {
            return String::new();
        }
        let t_max = lines()
            .flat_map(|l| l.points.iter().map(|p| p.0))
            .fold(0.0, f64::max);
        let (t_step, t_top) = ticks(t_max, 10);
        let x = |t: f64| LEFT + (RIGHT - LEFT) * (t / t_top).clamp(0.0, 1.0);
        let mut svg = Svg::new();
        svg.raw(&format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" \
             viewBox=\"0 0 {WIDTH} {HEIGHT}\" font-family=\"{FONT}\" font-size=\"12\" fill=\"{INK}\">\n\
             <rect width=\"100%\" height=\"100%\" fill=\"#ffffff\"/>\n"
        ));
        svg.text(LEFT, 24.0, &self.title, Text::new(15.0).weight("600"));
        // One set of horizontal gridlines, from the left axis; the right
        // axis uses the same number of steps so its labels sit on them.
        let left_max = axis_max(&self.left);
        let (left_step, left_top) = ticks(left_max, 5);
        let steps = (left_top / left_step).round().max(1.0);
        for (side, axis) in axes.iter().enumerate() {
            let (step, top) = if side == 0 {
                (left_step, left_top)
            } else {
                let raw = axis_max(axis) / steps;
                let step = nice_step(raw * steps, steps as u32);
                (step, step * steps)
            };
            let decimals = decimals_for(step);
            let color = axis.lines.first().map_or(MUTED, |l| l.color.as_str());
            for i in 0..=steps as u32 {
                let v = f64::from(i) * step;
                let y = BOTTOM - (BOTTOM - TOP) * v / top;
                if side == 0 && i > 0 {
                    svg.line(LEFT, y, RIGHT, y, Stroke::new(GRID, 1.0));
                }
                let (lx, anchor) = if side == 0 {
                    (LEFT - 8.0, "end")
                } else {
                    (RIGHT + 8.0, "start")
                };
                svg.text(
                    lx,
                    y + 4.0,
                    &format!("{v:.decimals$} {}", axis.unit),
                    Text::new(12.0).fill(color).anchor(anchor),
                );
            }
            for line in &axis.lines {
                let points: Vec<(f64, f64)> = line
                    .points
                    .iter()
                    .map(|&(t, v)| (x(t), BOTTOM - (BOTTOM - TOP) * (v / top).clamp(0.0, 1.05)))
                    .collect();
                svg.polyline(&points, Stroke::new(&line.color, 2.0));
            }
        }
        let t_decimals = decimals_for(t_step);
        let mut t = 0.0;
        while t <= t_top + t_step * 1e-9 {
            let tx = x(t);
            svg.line(tx, BOTTOM, tx, BOTTOM + 4.0, Stroke::new(AXIS, 1.0));
            svg.text(
                tx,
                BOTTOM + 18.0,
                &format!("{t:.t_decimals$} s"),
                Text::new(12.0).fill(MUTED).anchor("middle"),
            );
            t += t_step;
        }
        svg.line(LEFT, TOP, LEFT, BOTTOM, Stroke::new(AXIS, 1.25));
        svg.line(LEFT, BOTTOM, RIGHT, BOTTOM, Stroke::new(AXIS, 1.25));
        let mut lx = LEFT;
        for line in lines() {
            svg.line(
                lx,
                HEIGHT - 16.0,
                lx + 22.0,
                HEIGHT - 16.0,
                Stroke::new(&line.color, 2.5),
            );
            svg.text(lx + 28.0, HEIGHT - 12.0, &line.label, Text::new(12.0));
            lx += 36.0 + 7.0 * line.label.chars().count() as f64;
        }
        svg.raw("</svg>\n");
        svg.into_string()
    }
}

/// The highest value on an axis, at least its `min_top`.
fn axis_max(axis: &Axis) -> f64 {
    axis.lines
        .iter()
        .flat_map(|l| l.points.iter().map(|p| p.1))
        .filter(|v| v.is_finite())
        .fold(axis.min_top, f64::max)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chart(t_end: f64, rss: f64) -> TimeChart {
        let points = |f: &dyn Fn(f64) -> f64| -> Vec<(f64, f64)> {
            (0..=10)
                .map(|i| (t_end * f64::from(i) / 10.0, f(f64::from(i))))
                .collect()
        };
        TimeChart {
            title: "Server resources".into(),
            left: Axis {
                unit: "MiB".into(),
                min_top: 0.0,
                lines: vec![Line {
                    label: "resident memory".into(),
                    color: "#1f6fb4".into(),
                    points: points(&|i| rss * i / 10.0),
                }],
            },
            right: Some(Axis {
                unit: "%".into(),
                min_top: 100.0,
                lines: vec![Line {
                    label: "CPU".into(),
                    color: "#e8710a".into(),
                    points: points(&|i| 15.0 * i),
                }],
            }),
        }
    }

    /// The numbers of the labels ending in `unit`.
    fn labels(svg: &str, unit: &str) -> Vec<f64> {
        svg.split('>')
            .filter_map(|s| s.strip_suffix(&format!(" {unit}</text")))
            .filter_map(|s| s.parse().ok())
            .collect()
    }

    #[test]
    fn labels_are_the_gridline_values() {
        // 12.5 MiB and 50 s: steps of 5 MiB and 5 s, whole numbers.
        let svg = chart(50.0, 12.5).to_svg();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        let mib = labels(&svg, "MiB");
        assert_eq!(mib, [0.0, 5.0, 10.0, 15.0]);
        let secs = labels(&svg, "s");
        assert_eq!(secs.first(), Some(&0.0));
        assert!(
            secs.windows(2).all(|w| (w[1] - w[0] - 5.0).abs() < 1e-9),
            "{secs:?}"
        );
        // The right axis has as many steps as the left, at round values.
        let pct = labels(&svg, "%");
        assert_eq!(pct.len(), mib.len());
        assert!(pct.iter().all(|v| v.fract() == 0.0), "{pct:?}");
        assert!(*pct.last().unwrap() >= 150.0);
        assert_eq!(svg.matches("<polyline").count(), 2);
        // Small values keep the decimals their step needs.
        let svg = chart(2.0, 0.9).to_svg();
        assert!(labels(&svg, "MiB").contains(&0.2), "{svg}");
        assert!(labels(&svg, "s").contains(&0.2));
    }

    #[test]
    fn nothing_to_draw_is_empty() {
        let mut c = chart(1.0, 1.0);
        c.left.lines[0].points.truncate(1);
        c.right = None;
        assert!(c.to_svg().is_empty());
    }
}
