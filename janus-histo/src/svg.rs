//! SVG plots of a [`Report`], written by hand.
//!
//! The first panel is the latency percentile distribution: latency (linear,
//! in µs, ms or s as suits the data) against percentile on a logarithmic
//! "nines" axis where 0 %, 90 %, 99 %, 99.9 %, … are equally spaced, so the
//! tail that a maximum-latency goal is about gets most of the width. Markers
//! show p50, p90, p99, p99.9 (and further nines when there are enough
//! samples) and the maximum; a column on the right lists the numbers.
//!
//! When the report has a [`SpanSeries`], a second panel plots, per message,
//! its fan-out span (publish → last subscriber) and median latency when
//! known, and its spread (first → last subscriber), against publish time or
//! message index.
//!
//! A budget is drawn as a dashed red line with its label, or noted as off
//! scale when it is far above the data.
//!
//! The SVG is self-contained: no scripts, no external fonts or images, and
//! no `<style>` element (CSS inside an inline SVG would leak into the HTML
//! page that embeds it), only presentation attributes.

use std::io::{self, Write};

use crate::duration::{format_micros, Unit};
use crate::format::{decimals_for, escape, group_thousands};
use crate::text::metadata_value;
use crate::{Recorder, Report, SpanSeries};

/// Width of the whole picture, px.
const WIDTH: f64 = 1000.0;
/// Left edge of the plot areas (room for y tick labels and the axis title).
const PLOT_LEFT: f64 = 84.0;
/// Right edge of the plot areas.
const PLOT_RIGHT: f64 = 752.0;
/// Left edge of the side column with the numbers and legends.
const SIDE_LEFT: f64 = 784.0;
/// Right edge of the side column.
const SIDE_RIGHT: f64 = 976.0;
/// Top of the percentile plot area.
const PCT_TOP: f64 = 104.0;
/// Bottom of the percentile plot area.
const PCT_BOTTOM: f64 = 434.0;
/// Top of the span plot area.
const SPAN_TOP: f64 = 540.0;
/// Bottom of the span plot area.
const SPAN_BOTTOM: f64 = 760.0;

pub(crate) const FONT: &str =
    "system-ui, -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif";
pub(crate) const INK: &str = "#222";
pub(crate) const MUTED: &str = "#666";
pub(crate) const GRID: &str = "#e3e3e3";
const GRID_MINOR: &str = "#f0f0f0";
pub(crate) const AXIS: &str = "#555";
pub(crate) const BLUE: &str = "#1f6fb4";
pub(crate) const ORANGE: &str = "#e8710a";
pub(crate) const GREEN: &str = "#2a9d3a";
pub(crate) const RED: &str = "#d62728";

/// A budget this many times above the data is noted rather than drawn, so
/// that the data does not shrink to a flat line at the bottom of the plot.
const BUDGET_OFF_SCALE_FACTOR: f64 = 10.0;

/// Writes the SVG plot of `report` to `out`.
///
/// # Errors
///
/// When writing fails.
pub fn render_svg(report: &Report, out: &mut impl Write) -> io::Result<()> {
    out.write_all(svg_string(report).as_bytes())
}

/// The SVG plot of `report` as a string, ready to inline in an HTML page.
pub fn svg_string(report: &Report) -> String {
    // One message has no "over the run" to show.
    let spans = report.spans.as_ref().filter(|s| s.len() > 1);
    let height = if spans.is_some() { 820.0 } else { 500.0 };
    let mut svg = Svg::new();
    svg.raw(&format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{height}\" \
         viewBox=\"0 0 {WIDTH} {height}\" font-family=\"{FONT}\" font-size=\"13\" fill=\"{INK}\">\n"
    ));
    let title = if report.title.is_empty() {
        "Latency"
    } else {
        &report.title
    };
    svg.raw(&format!("<title>{}</title>\n", escape(title)));
    svg.raw(&format!(
        "<rect x=\"0\" y=\"0\" width=\"{WIDTH}\" height=\"{height}\" fill=\"#ffffff\"/>\n"
    ));
    svg.text(24.0, 36.0, &clip(title, 80), Text::new(21.0).weight("600"));
    svg.text(
        24.0,
        60.0,
        &clip(&subtitle(report), 140),
        Text::new(13.0).fill(MUTED),
    );

    percentile_panel(&mut svg, report);
    if let Some(spans) = spans {
        span_panel(&mut svg, report, spans);
    }
    svg.raw("</svg>\n");
    svg.into_string()
}

/// Whether the plot of `report` draws its budget as a line (`Some(true)`)
/// or only notes it as above the scale (`Some(false)`); `None` without a
/// budget or samples. Captions must say the same as the picture.
pub fn budget_on_scale(report: &Report) -> Option<bool> {
    let budget_us = report.budget_ms? * 1e3;
    if report.histogram.is_empty() {
        return None;
    }
    let axis = YAxis::new(
        report.histogram.max_micros() as f64,
        Some(budget_us),
        PCT_TOP,
        PCT_BOTTOM,
    );
    Some(budget_us <= axis.top_us)
}

/// Sample count and metadata, `·`-separated.
fn subtitle(report: &Report) -> String {
    let mut parts = vec![format!(
        "{} samples",
        group_thousands(report.histogram.count())
    )];
    parts.extend(
        report
            .metadata
            .iter()
            .map(|(k, v)| format!("{k}: {}", metadata_value(v))),
    );
    parts.join("  ·  ")
}

/// The percentile distribution panel with its side column.
fn percentile_panel(svg: &mut Svg, report: &Report) {
    let hist = &report.histogram;
    svg.text(
        PLOT_LEFT,
        PCT_TOP - 16.0,
        "Latency by percentile",
        Text::new(15.0).weight("600"),
    );
    if hist.is_empty() {
        frame(svg, PCT_TOP, PCT_BOTTOM);
        svg.text(
            (PLOT_LEFT + PLOT_RIGHT) / 2.0,
            (PCT_TOP + PCT_BOTTOM) / 2.0,
            "no samples",
            Text::new(16.0).fill(MUTED).anchor("middle"),
        );
        return;
    }
    let count = hist.count() as f64;
    // The last sample sits at log10(count) nines; show at least 99.9 %.
    let max_nines = count.log10();
    let x_nines = max_nines.ceil().clamp(3.0, 9.0);
    let x_of = |nines: f64| PLOT_LEFT + nines.min(x_nines) / x_nines * (PLOT_RIGHT - PLOT_LEFT);

    let max_us = hist.max_micros() as f64;
    let budget_us = report.budget_ms.map(|b| b * 1e3);
    let y_axis = YAxis::new(max_us, budget_us, PCT_TOP, PCT_BOTTOM);

    // Grid: horizontal at y ticks, vertical at each nine and, lighter, at
    // the 50 %, 95 %, 99.5 %, … and 80 %, 98 %, 99.8 %, … in between.
    y_axis.draw_grid(svg);
    for k in 0..x_nines as u32 {
        for minor in [2f64.log10(), 5f64.log10()] {
            let x = x_of(f64::from(k) + minor);
            svg.line(x, PCT_TOP, x, PCT_BOTTOM, Stroke::new(GRID_MINOR, 1.0));
        }
    }
    for k in 0..=x_nines as u32 {
        let x = x_of(f64::from(k));
        svg.line(x, PCT_TOP, x, PCT_BOTTOM, Stroke::new(GRID, 1.0));
        let anchor = if k == 0 { "start" } else { "middle" };
        svg.text(
            x,
            PCT_BOTTOM + 20.0,
            &nines_label(k),
            Text::new(12.0).fill(MUTED).anchor(anchor),
        );
    }
    svg.text(
        x_of(2f64.log10()),
        PCT_BOTTOM + 20.0,
        "50%",
        Text::new(11.0).fill("#999").anchor("middle"),
    );
    frame(svg, PCT_TOP, PCT_BOTTOM);
    svg.text(
        (PLOT_LEFT + PLOT_RIGHT) / 2.0,
        PCT_BOTTOM + 44.0,
        "percentile (log scale: each step adds a nine)",
        Text::new(13.0).anchor("middle"),
    );
    y_axis.draw_labels(svg, "latency");

    // The curve: one sample per horizontal pixel, then the maximum.
    let mut points = Vec::new();
    let pixels = (PLOT_RIGHT - PLOT_LEFT) as usize;
    for px in 0..=pixels {
        let nines = px as f64 / pixels as f64 * x_nines;
        if nines > max_nines {
            break;
        }
        let q = 1.0 - 10f64.powf(-nines);
        points.push((x_of(nines), y_axis.y(hist.quantile_micros(q) as f64)));
    }
    points.push((x_of(max_nines), y_axis.y(max_us)));
    points.push((PLOT_RIGHT, y_axis.y(max_us)));
    let mut area = points.clone();
    area.push((PLOT_RIGHT, PCT_BOTTOM));
    area.push((PLOT_LEFT, PCT_BOTTOM));
    svg.polygon(&area, BLUE, 0.08);
    svg.polyline(&points, Stroke::new(BLUE, 2.25));

    // Markers, labelled above-left of the point: the curve never rises
    // there, since it only goes up to the right.
    let mut markers: Vec<(String, f64, u64)> = Vec::new();
    for (name, percent) in percentiles_to_mark(count) {
        let nines = -(1.0 - percent / 100.0).log10();
        markers.push((name, nines, hist.percentile_micros(percent)));
    }
    markers.push(("max".to_owned(), max_nines, hist.max_micros()));
    for (name, nines, value) in &markers {
        let (x, y) = (x_of(*nines), y_axis.y(*value as f64));
        svg.circle(x, y, 4.0, BLUE);
        svg.text(
            x - 6.0,
            y - 8.0,
            name,
            Text::new(12.0).weight("600").anchor("end").halo(),
        );
    }

    if let Some(budget) = budget_us {
        draw_budget(svg, &y_axis, budget, report.budget_label());
    }

    // Side column: the numbers.
    let mut y = PCT_TOP + 4.0;
    svg.text(SIDE_LEFT, y, "Summary", Text::new(14.0).weight("600"));
    y += 24.0;
    let summary_rows: Vec<(String, String)> = [
        ("samples".to_owned(), group_thousands(hist.count())),
        ("min".to_owned(), format_micros(hist.min_micros() as f64)),
        (
            "mean".to_owned(),
            format_micros(hist.mean().as_secs_f64() * 1e6),
        ),
    ]
    .into_iter()
    .chain(
        markers
            .iter()
            .map(|(name, _, v)| (name.clone(), format_micros(*v as f64))),
    )
    .collect();
    for (name, value) in &summary_rows {
        svg.text(SIDE_LEFT, y, name, Text::new(13.0).fill(MUTED));
        svg.text(
            SIDE_RIGHT,
            y,
            value,
            Text::new(13.0).anchor("end").weight("600"),
        );
        y += 20.0;
    }
    if let Some(budget) = budget_us {
        y += 6.0;
        svg.text(
            SIDE_LEFT,
            y,
            report.budget_label(),
            Text::new(13.0).fill(RED),
        );
        svg.text(
            SIDE_RIGHT,
            y,
            &format_micros(budget),
            Text::new(13.0).anchor("end").fill(RED).weight("600"),
        );
        y += 20.0;
        let (name, value_us) = report.budget_measure();
        let (verdict, color) = if value_us <= budget {
            (format!("{name} within budget"), GREEN)
        } else {
            (format!("{name} over budget"), RED)
        };
        svg.text(
            SIDE_LEFT,
            y,
            &verdict,
            Text::new(13.0).fill(color).weight("600"),
        );
    }
}

/// The fan-out span panel with its legend.
fn span_panel(svg: &mut Svg, report: &Report, spans: &SpanSeries) {
    let by_time = spans.has_times();
    svg.text(
        PLOT_LEFT,
        SPAN_TOP - 16.0,
        "Per message: fan-out span (publish → last subscriber) and spread (first → last)",
        Text::new(15.0).weight("600"),
    );
    let xs: Vec<f64> = spans
        .points
        .iter()
        .map(|p| {
            if by_time {
                p.at_s.unwrap_or(0.0)
            } else {
                p.message as f64
            }
        })
        .collect();
    let x_min = xs
        .iter()
        .copied()
        .filter(|x| x.is_finite())
        .fold(f64::INFINITY, f64::min)
        .min(0.0);
    let x_max = xs
        .iter()
        .copied()
        .filter(|x| x.is_finite())
        .fold(0.0, f64::max);
    let x_step = nice_step(x_max - x_min, 8);
    let x_top = ((x_max - x_min) / x_step).ceil().max(1.0) * x_step + x_min;
    let x_of = |v: f64| PLOT_LEFT + (v - x_min) / (x_top - x_min) * (PLOT_RIGHT - PLOT_LEFT);

    let finite_ms = |v: Option<f64>| v.filter(|v| v.is_finite() && *v >= 0.0);
    let data_max_us = spans
        .points
        .iter()
        .flat_map(|p| [Some(p.span_ms), p.p50_ms, p.max_ms])
        .filter_map(finite_ms)
        .fold(0.0, f64::max)
        * 1e3;
    let has_latency = spans
        .points
        .iter()
        .any(|p| p.max_ms.is_some() || p.p50_ms.is_some());
    // A latency budget only means something next to latencies.
    let budget_us = report.budget_ms.map(|b| b * 1e3).filter(|_| has_latency);
    let y_axis = YAxis::new(data_max_us, budget_us, SPAN_TOP, SPAN_BOTTOM);

    y_axis.draw_grid(svg);
    let decimals = decimals_for(x_step);
    let mut tick = x_min;
    while tick <= x_top + x_step * 1e-9 {
        let x = x_of(tick);
        svg.line(x, SPAN_TOP, x, SPAN_BOTTOM, Stroke::new(GRID, 1.0));
        svg.text(
            x,
            SPAN_BOTTOM + 20.0,
            &format!("{tick:.decimals$}"),
            Text::new(12.0).fill(MUTED).anchor("middle"),
        );
        tick += x_step;
    }
    frame(svg, SPAN_TOP, SPAN_BOTTOM);
    let x_title = if by_time {
        "publish time (s since start)"
    } else {
        "message #"
    };
    svg.text(
        (PLOT_LEFT + PLOT_RIGHT) / 2.0,
        SPAN_BOTTOM + 44.0,
        x_title,
        Text::new(13.0).anchor("middle"),
    );
    y_axis.draw_labels(svg, "time");

    let few = spans.len() <= 60;
    let series: [(&str, &str, SpanField); 3] = [
        ("fan-out span", ORANGE, |p| p.max_ms),
        ("median latency", GREEN, |p| p.p50_ms),
        ("spread", BLUE, |p| Some(p.span_ms)),
    ];
    let mut legend = Vec::new();
    for (name, color, get) in series {
        let points: Vec<(f64, f64)> = spans
            .points
            .iter()
            .zip(&xs)
            .filter_map(|(p, &x)| Some((x_of(x), y_axis.y(finite_ms(get(p))? * 1e3))))
            .collect();
        if points.is_empty() {
            continue;
        }
        svg.polyline(&points, Stroke::new(color, 1.75));
        if few {
            for &(x, y) in &points {
                svg.circle(x, y, 2.25, color);
            }
        }
        legend.push((name, color));
    }
    if let Some(budget) = budget_us {
        draw_budget(svg, &y_axis, budget, report.budget_label());
    }

    // Side column: legend and span statistics.
    let mut y = SPAN_TOP + 4.0;
    svg.text(SIDE_LEFT, y, "Per message", Text::new(14.0).weight("600"));
    y += 24.0;
    for (name, color) in legend.iter().rev() {
        svg.line(
            SIDE_LEFT,
            y - 4.5,
            SIDE_LEFT + 22.0,
            y - 4.5,
            Stroke::new(color, 2.5),
        );
        svg.text(SIDE_LEFT + 30.0, y, name, Text::new(13.0));
        y += 20.0;
    }
    y += 6.0;
    let mut stats = vec![("messages", group_thousands(spans.len() as u64))];
    if let Some((p50, max)) = spans.fanout_p50_max() {
        stats.push(("median fan-out span", format_micros(p50 * 1e3)));
        stats.push(("max fan-out span", format_micros(max * 1e3)));
    }
    if let Some((p50, max)) = spans.span_p50_max() {
        stats.push(("median spread", format_micros(p50 * 1e3)));
        stats.push(("max spread", format_micros(max * 1e3)));
    }
    for (name, value) in stats {
        svg.text(SIDE_LEFT, y, name, Text::new(13.0).fill(MUTED));
        svg.text(
            SIDE_RIGHT,
            y,
            &value,
            Text::new(13.0).anchor("end").weight("600"),
        );
        y += 20.0;
    }
}

/// Reads one value (ms) of a span point.
type SpanField = fn(&crate::SpanPoint) -> Option<f64>;

/// The percentiles worth a marker for `count` samples: p50, p90, p99 and
/// each further nine that still has well over one sample above it.
fn percentiles_to_mark(count: f64) -> Vec<(String, f64)> {
    let mut marks = vec![("p50".to_owned(), 50.0)];
    for k in 1..=8 {
        let tail = 10f64.powi(-k);
        // Skip nines too close to the maximum (at log10(count) nines) to
        // tell apart on the plot.
        if (tail * count).log10() < 0.2 {
            break;
        }
        let percent = 100.0 * (1.0 - tail);
        let digits = (k - 2).max(0) as usize;
        marks.push((format!("p{percent:.digits$}"), percent));
    }
    marks
}

/// `0%`, `90%`, `99%`, `99.9%`, … for `k` nines.
fn nines_label(k: u32) -> String {
    match k {
        0 => "0%".to_owned(),
        1 => "90%".to_owned(),
        _ => format!("99.{}%", "9".repeat(k as usize - 2)).replace(".%", "%"),
    }
}

/// The dashed red budget line with its label, or an off-scale note.
fn draw_budget(svg: &mut Svg, y_axis: &YAxis, budget_us: f64, label: &str) {
    let text = format!("{label} {}", format_micros(budget_us));
    if budget_us <= y_axis.top_us {
        let y = y_axis.y(budget_us);
        svg.line(PLOT_LEFT, y, PLOT_RIGHT, y, Stroke::new(RED, 1.75).dashed());
        // On the left, where a rising percentile curve is lowest.
        svg.text(
            PLOT_LEFT + 8.0,
            y - 7.0,
            &text,
            Text::new(13.0).fill(RED).weight("600").halo(),
        );
    } else {
        // Top left: the one corner a rising curve never reaches.
        svg.text(
            PLOT_LEFT + 8.0,
            y_axis.top_px + 18.0,
            &format!("↑ {text} (above this scale)"),
            Text::new(13.0).fill(RED).weight("600").halo(),
        );
    }
}

/// The left and bottom axis lines of a plot area.
fn frame(svg: &mut Svg, top: f64, bottom: f64) {
    svg.line(PLOT_LEFT, top, PLOT_LEFT, bottom, Stroke::new(AXIS, 1.25));
    svg.line(
        PLOT_LEFT,
        bottom,
        PLOT_RIGHT,
        bottom,
        Stroke::new(AXIS, 1.25),
    );
}

/// A linear latency axis from 0 to a nice value above the data.
struct YAxis {
    /// The value at the top of the axis, µs.
    top_us: f64,
    /// Distance between ticks, µs.
    step_us: f64,
    /// The unit of the tick labels.
    unit: Unit,
    /// Pixel row of the top.
    top_px: f64,
    /// Pixel row of zero.
    bottom_px: f64,
}

impl YAxis {
    /// An axis for data up to `max_us`, stretched to include `budget_us`
    /// unless the budget is far above the data.
    fn new(max_us: f64, budget_us: Option<f64>, top_px: f64, bottom_px: f64) -> YAxis {
        let mut high = max_us.max(1.0);
        if let Some(b) = budget_us {
            if b <= high * BUDGET_OFF_SCALE_FACTOR {
                high = high.max(b);
            }
        }
        // Leave a little headroom above the highest point.
        let high = high * 1.04;
        let step_us = nice_step(high, 6);
        let top_us = (high / step_us).ceil() * step_us;
        YAxis {
            top_us,
            step_us,
            unit: Unit::for_micros(top_us),
            top_px,
            bottom_px,
        }
    }

    /// The pixel row of `us`.
    fn y(&self, us: f64) -> f64 {
        self.bottom_px - us.clamp(0.0, self.top_us) / self.top_us * (self.bottom_px - self.top_px)
    }

    /// The tick values, µs.
    fn ticks(&self) -> impl Iterator<Item = f64> + '_ {
        let n = (self.top_us / self.step_us).round() as u32;
        (0..=n).map(|i| f64::from(i) * self.step_us)
    }

    fn draw_grid(&self, svg: &mut Svg) {
        for tick in self.ticks().skip(1) {
            let y = self.y(tick);
            svg.line(PLOT_LEFT, y, PLOT_RIGHT, y, Stroke::new(GRID, 1.0));
        }
    }

    fn draw_labels(&self, svg: &mut Svg, quantity: &str) {
        let decimals = decimals_for(self.step_us / self.unit.micros());
        for tick in self.ticks() {
            svg.text(
                PLOT_LEFT - 8.0,
                self.y(tick) + 4.0,
                &format!("{:.decimals$}", tick / self.unit.micros()),
                Text::new(12.0).fill(MUTED).anchor("end"),
            );
        }
        let x = 26.0;
        let y = (self.top_px + self.bottom_px) / 2.0;
        svg.raw(&format!(
            "<text x=\"{x}\" y=\"{y:.1}\" font-size=\"13\" text-anchor=\"middle\" \
             transform=\"rotate(-90 {x} {y:.1})\">{quantity} ({})</text>\n",
            self.unit.symbol()
        ));
    }
}

/// The smallest step of the 1-2-5 sequence that divides `range` into at most
/// `max_ticks` steps.
pub(crate) fn nice_step(range: f64, max_ticks: u32) -> f64 {
    if !range.is_finite() || range <= 0.0 {
        return 1.0;
    }
    let raw = range / f64::from(max_ticks);
    let magnitude = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|&step| step * f64::from(max_ticks) >= range * (1.0 - 1e-9))
        .unwrap_or(10.0 * magnitude)
}

/// The stroke of a line.
pub(crate) struct Stroke<'a> {
    color: &'a str,
    width: f64,
    dashed: bool,
}

impl<'a> Stroke<'a> {
    pub(crate) fn new(color: &'a str, width: f64) -> Stroke<'a> {
        Stroke {
            color,
            width,
            dashed: false,
        }
    }

    pub(crate) fn dashed(mut self) -> Stroke<'a> {
        self.dashed = true;
        self
    }

    pub(crate) fn attributes(&self) -> String {
        let dash = if self.dashed {
            " stroke-dasharray=\"7 5\""
        } else {
            ""
        };
        format!(
            "stroke=\"{}\" stroke-width=\"{}\"{dash}",
            self.color, self.width
        )
    }
}

/// The look of a text.
pub(crate) struct Text<'a> {
    size: f64,
    fill: &'a str,
    weight: &'a str,
    anchor: &'a str,
    halo: bool,
}

impl<'a> Text<'a> {
    pub(crate) fn new(size: f64) -> Text<'a> {
        Text {
            size,
            fill: INK,
            weight: "normal",
            anchor: "start",
            halo: false,
        }
    }

    pub(crate) fn fill(mut self, fill: &'a str) -> Text<'a> {
        self.fill = fill;
        self
    }

    pub(crate) fn weight(mut self, weight: &'a str) -> Text<'a> {
        self.weight = weight;
        self
    }

    pub(crate) fn anchor(mut self, anchor: &'a str) -> Text<'a> {
        self.anchor = anchor;
        self
    }

    /// A white outline, so the text stays readable over lines.
    pub(crate) fn halo(mut self) -> Text<'a> {
        self.halo = true;
        self
    }
}

/// An SVG document being written.
pub(crate) struct Svg {
    buf: String,
}

impl Svg {
    pub(crate) fn new() -> Svg {
        Svg {
            buf: String::with_capacity(32 * 1024),
        }
    }

    pub(crate) fn into_string(self) -> String {
        self.buf
    }

    pub(crate) fn raw(&mut self, s: &str) {
        self.buf.push_str(s);
    }

    pub(crate) fn line(&mut self, x1: f64, y1: f64, x2: f64, y2: f64, stroke: Stroke<'_>) {
        self.buf.push_str(&format!(
            "<line x1=\"{x1:.1}\" y1=\"{y1:.1}\" x2=\"{x2:.1}\" y2=\"{y2:.1}\" {}/>\n",
            stroke.attributes()
        ));
    }

    pub(crate) fn polyline(&mut self, points: &[(f64, f64)], stroke: Stroke<'_>) {
        self.buf.push_str(&format!(
            "<polyline fill=\"none\" stroke-linejoin=\"round\" {} points=\"{}\"/>\n",
            stroke.attributes(),
            point_list(points)
        ));
    }

    pub(crate) fn polygon(&mut self, points: &[(f64, f64)], fill: &str, opacity: f64) {
        self.buf.push_str(&format!(
            "<polygon fill=\"{fill}\" fill-opacity=\"{opacity}\" stroke=\"none\" points=\"{}\"/>\n",
            point_list(points)
        ));
    }

    pub(crate) fn circle(&mut self, x: f64, y: f64, r: f64, fill: &str) {
        self.buf.push_str(&format!(
            "<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"{r}\" fill=\"{fill}\" stroke=\"#ffffff\" stroke-width=\"1\"/>\n"
        ));
    }

    pub(crate) fn text(&mut self, x: f64, y: f64, content: &str, t: Text<'_>) {
        let halo = if t.halo {
            " stroke=\"#ffffff\" stroke-width=\"4\" stroke-linejoin=\"round\" paint-order=\"stroke\""
        } else {
            ""
        };
        self.buf.push_str(&format!(
            "<text x=\"{x:.1}\" y=\"{y:.1}\" font-size=\"{}\" font-weight=\"{}\" fill=\"{}\" \
             text-anchor=\"{}\"{halo}>{}</text>\n",
            t.size,
            t.weight,
            t.fill,
            t.anchor,
            escape(content)
        ));
    }
}

/// `x,y x,y …` with one decimal.
fn point_list(points: &[(f64, f64)]) -> String {
    let mut s = String::with_capacity(points.len() * 12);
    for (i, (x, y)) in points.iter().enumerate() {
        if i > 0 {
            s.push(' ');
        }
        s.push_str(&format!("{x:.1},{y:.1}"));
    }
    s
}

/// `text` cut to `max` characters with an ellipsis.
fn clip(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        let mut s: String = text.chars().take(max.saturating_sub(1)).collect();
        s.push('…');
        s
    }
}

/// A recorder for tests and the sample: `n` latencies with a lognormal-like
/// shape (median a few ms, a long tail), deterministic.
#[doc(hidden)]
pub fn synthetic_latencies(n: u64, seed: u64) -> Recorder {
    let mut r = Recorder::new();
    let mut state = seed | 1;
    let mut uniform = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        ((state >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    for _ in 0..n {
        // Box-Muller: a standard normal, then exp for a lognormal.
        let z = (-2.0 * uniform().ln()).sqrt() * (std::f64::consts::TAU * uniform()).cos();
        let us = (3_000f64.ln() + 0.6 * z).exp();
        r.record_micros(us.round() as u64);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SpanPoint;

    fn report_with_spans() -> Report {
        let mut report = Report::new(
            "19k subscribers <sample> & co",
            synthetic_latencies(19_000, 7),
        );
        report.metadata.insert("clients".into(), 19_000.into());
        report.spans = Some(
            (0..200)
                .map(|i| SpanPoint {
                    at_s: Some(i as f64 * 0.05),
                    p50_ms: Some(3.0 + (i % 7) as f64 * 0.1),
                    max_ms: Some(9.0 + (i % 11) as f64),
                    ..SpanPoint::new(i, 8.0 + (i % 11) as f64)
                })
                .collect(),
        );
        report
    }

    fn well_formed(svg: &str) {
        assert!(
            svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""),
            "{}",
            &svg[..80]
        );
        assert!(svg.trim_end().ends_with("</svg>"));
        assert!(!svg.contains("href"), "no external references");
        assert!(
            !svg.contains("<style"),
            "no CSS that would leak into a page"
        );
        assert_eq!(svg.matches("<text").count(), svg.matches("</text>").count());
    }

    #[test]
    fn plot_has_axes_labels_and_markers() {
        let svg = svg_string(&report_with_spans());
        well_formed(&svg);
        for needle in [
            "Latency by percentile",
            "percentile (log scale",
            "latency (ms)",
            ">0%<",
            ">90%<",
            ">99%<",
            ">99.9%<",
            ">99.99%<",
            ">p99.99<",
            ">max<",
            "19k subscribers &lt;sample&gt; &amp; co",
            "Per message: fan-out span (publish → last subscriber) and spread",
            "publish time (s since start)",
            ">fan-out span<",
            "median latency",
            ">spread<",
            "max fan-out span",
            "max spread",
        ] {
            assert!(svg.contains(needle), "{needle:?} missing");
        }
        assert!(!svg.contains(RED), "no budget, no red");
        assert!(
            !svg.contains(">p99.999<"),
            "19000 samples do not support five nines"
        );
    }

    #[test]
    fn budget_line_is_drawn_in_red() {
        let mut report = report_with_spans();
        report.budget_ms = Some(20.0);
        report.budget_label = Some("max budget".into());
        let svg = svg_string(&report);
        well_formed(&svg);
        assert!(svg.contains(&format!(
            "stroke=\"{RED}\" stroke-width=\"1.75\" stroke-dasharray"
        )));
        assert!(svg.contains(">max budget 20.0 ms<"));

        // Far above the data it is noted, not drawn.
        report.budget_ms = Some(2_000.0);
        let svg = svg_string(&report);
        assert!(svg.contains("max budget 2.00 s (above this scale)"));
        assert!(!svg.contains("stroke-dasharray"));
    }

    #[test]
    fn no_span_panel_without_spans_and_empty_is_fine() {
        let svg = svg_string(&Report::new("one", synthetic_latencies(100, 1)));
        well_formed(&svg);
        assert!(!svg.contains("fan-out"));
        assert!(svg.contains(">99.9%<"));

        let svg = svg_string(&Report::new("", Recorder::new()));
        well_formed(&svg);
        assert!(svg.contains("no samples"));

        let mut out = Vec::new();
        render_svg(&Report::new("x", synthetic_latencies(10, 1)), &mut out).unwrap();
        assert!(String::from_utf8(out).unwrap().starts_with("<svg"));
    }

    #[test]
    fn span_panel_uses_message_index_without_times() {
        let mut report = Report::new("idx", synthetic_latencies(1000, 3));
        report.spans = Some((0..50).map(|i| SpanPoint::new(i, i as f64)).collect());
        report.budget_ms = Some(30.0);
        let svg = svg_string(&report);
        well_formed(&svg);
        assert!(svg.contains(">message #<"));
        assert!(
            !svg.contains(">fan-out span<") && !svg.contains("max fan-out span"),
            "no publish instants, no fan-out span"
        );
        assert!(svg.contains(">spread<"));
    }

    #[test]
    fn axis_helpers() {
        assert_eq!(nice_step(10.0, 6), 2.0);
        assert_eq!(nice_step(12.0, 6), 2.0);
        assert_eq!(nice_step(13.0, 6), 5.0);
        assert_eq!(nice_step(0.0, 6), 1.0);
        assert_eq!(nines_label(0), "0%");
        assert_eq!(nines_label(1), "90%");
        assert_eq!(nines_label(2), "99%");
        assert_eq!(nines_label(4), "99.99%");
        let marks: Vec<String> = percentiles_to_mark(1000.0)
            .into_iter()
            .map(|m| m.0)
            .collect();
        assert_eq!(marks, ["p50", "p90", "p99"]);
        let marks: Vec<String> = percentiles_to_mark(2000.0)
            .into_iter()
            .map(|m| m.0)
            .collect();
        assert_eq!(marks, ["p50", "p90", "p99", "p99.9"]);
        let axis = YAxis::new(45_000.0, None, 0.0, 100.0);
        assert_eq!(axis.unit, Unit::Millis);
        assert_eq!(axis.top_us, 50_000.0);
        assert_eq!(clip("abcdef", 4), "abc…");
    }
}
