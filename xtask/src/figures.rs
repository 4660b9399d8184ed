//! The numbers a load scenario produces, by name, with the direction that
//! counts as better. Budgets (in `loadtest.toml`) and baselines refer to
//! figures by these names, so a typo there is an error rather than a check
//! that silently never runs.

use std::collections::BTreeMap;

pub use janus_histo::format_number;

/// Which way a figure improves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Better {
    /// Latencies, losses, leftovers, resources: a budget is an upper bound.
    Lower,
    /// Throughput: a budget is a lower bound.
    Higher,
}

/// What one figure means.
#[derive(Debug, Clone, Copy)]
pub struct FigureDef {
    /// Key in reports, budgets and baselines.
    pub key: &'static str,
    /// What people call it.
    pub label: &'static str,
    /// Unit suffix when printed ("" for counts).
    pub unit: &'static str,
    /// Which way is better.
    pub better: Better,
    /// Whether a baseline comparison looks at it (noisy or all-or-nothing
    /// figures are left to budgets).
    pub compare: bool,
    /// Differences at or below this absolute amount never count as a
    /// regression (a p50 going from 0.2 ms to 0.4 ms is noise, not a 2x).
    pub noise_floor: f64,
}

const fn def(
    key: &'static str,
    label: &'static str,
    unit: &'static str,
    better: Better,
    compare: bool,
    noise_floor: f64,
) -> FigureDef {
    FigureDef {
        key,
        label,
        unit,
        better,
        compare,
        noise_floor,
    }
}

/// Every figure any scenario reports.
pub const FIGURES: &[FigureDef] = &[
    def("p50_ms", "median latency", "ms", Better::Lower, true, 2.0),
    def("p90_ms", "p90 latency", "ms", Better::Lower, false, 2.0),
    def("p99_ms", "p99 latency", "ms", Better::Lower, true, 5.0),
    def("p999_ms", "p99.9 latency", "ms", Better::Lower, false, 5.0),
    def("max_ms", "max latency", "ms", Better::Lower, true, 10.0),
    def(
        "span_ms",
        "fan-out spread (first to last delivery)",
        "ms",
        Better::Lower,
        true,
        10.0,
    ),
    def(
        "deliveries_expected",
        "deliveries expected",
        "",
        Better::Higher,
        false,
        0.0,
    ),
    def(
        "deliveries_received",
        "deliveries received",
        "",
        Better::Higher,
        false,
        0.0,
    ),
    def("lost", "lost deliveries", "", Better::Lower, false, 0.0),
    def(
        "deliveries_per_s",
        "deliveries per second",
        "/s",
        Better::Higher,
        true,
        1000.0,
    ),
    def(
        "setup_s",
        "connect + subscribe time",
        "s",
        Better::Lower,
        true,
        0.5,
    ),
    def("errors", "client errors", "", Better::Lower, false, 0.0),
    def(
        "churn_cycles",
        "connect/subscribe/disconnect cycles",
        "",
        Better::Higher,
        false,
        0.0,
    ),
    def(
        "churn_cycles_per_s",
        "churn cycles per second",
        "/s",
        Better::Higher,
        true,
        20.0,
    ),
    def(
        "leftover_connections",
        "connections left at the end",
        "",
        Better::Lower,
        false,
        0.0,
    ),
    def(
        "leftover_sessions",
        "sessions left at the end",
        "",
        Better::Lower,
        false,
        0.0,
    ),
    def(
        "leftover_topics",
        "topics left at the end",
        "",
        Better::Lower,
        false,
        0.0,
    ),
    def(
        "leftover_subscriptions",
        "subscriptions left at the end",
        "",
        Better::Lower,
        false,
        0.0,
    ),
    def(
        "rss_growth_mib",
        "server RSS growth after warm-up",
        "MiB",
        Better::Lower,
        false,
        0.0,
    ),
    def(
        "server_reference_rss_mib",
        "server RSS with every subscriber, after the warm-up",
        "MiB",
        Better::Lower,
        false,
        16.0,
    ),
    def(
        "server_start_rss_mib",
        "server RSS before the first client",
        "MiB",
        Better::Lower,
        false,
        16.0,
    ),
    def(
        "server_settled_rss_mib",
        "server RSS once the soak's clients are gone (lowest in the settle time)",
        "MiB",
        Better::Lower,
        false,
        16.0,
    ),
    def(
        "rss_growth_percent",
        "server RSS after the soak above its reference",
        "%",
        Better::Lower,
        false,
        0.0,
    ),
    def(
        "slow_clients",
        "never-reading subscribers",
        "",
        Better::Higher,
        false,
        0.0,
    ),
    def(
        "slow_cut",
        "slow subscribers cut or trimmed",
        "",
        Better::Higher,
        false,
        0.0,
    ),
    def(
        "slow_not_cut",
        "slow subscribers neither cut nor trimmed",
        "",
        Better::Lower,
        false,
        0.0,
    ),
    def(
        "slow_consumers_counted",
        "server's slow_consumers counter",
        "",
        Better::Higher,
        false,
        0.0,
    ),
    def(
        "resumes",
        "subscribers that resumed",
        "",
        Better::Higher,
        false,
        0.0,
    ),
    def(
        "resumes_not_recovered",
        "resumes not recovered or failed",
        "",
        Better::Lower,
        false,
        0.0,
    ),
    def(
        "resume_p99_ms",
        "p99 latency of resumed subscribers (replay included)",
        "ms",
        Better::Lower,
        true,
        10.0,
    ),
    def(
        "steady_p99_ms",
        "p99 latency of the subscribers that did not resume",
        "ms",
        Better::Lower,
        true,
        5.0,
    ),
    def(
        "resume_time_p99_ms",
        "p99 reconnect-to-resumed time",
        "ms",
        Better::Lower,
        true,
        5.0,
    ),
    def(
        "server_cpu_s",
        "server CPU time (user+system)",
        "s",
        Better::Lower,
        true,
        0.5,
    ),
    def(
        "server_peak_rss_mib",
        "server peak RSS (VmHWM)",
        "MiB",
        Better::Lower,
        true,
        16.0,
    ),
    def(
        "server_end_rss_mib",
        "server RSS at the end",
        "MiB",
        Better::Lower,
        false,
        16.0,
    ),
];

/// The definition of `key`, if it is a known figure.
pub fn lookup(key: &str) -> Option<&'static FigureDef> {
    FIGURES.iter().find(|f| f.key == key)
}

/// The figures of one scenario run, by key.
pub type Figures = BTreeMap<String, f64>;

/// `value` with its unit, rounded for people (`1,234 ms`, `0.82 ms`, `412,345/s`).
pub fn format_value(key: &str, value: f64) -> String {
    let unit = lookup(key).map_or("", |f| f.unit);
    let number = format_number(value);
    match unit {
        "" => number,
        "/s" => format!("{number}/s"),
        unit => format!("{number} {unit}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_unique() {
        for (i, f) in FIGURES.iter().enumerate() {
            assert!(FIGURES[i + 1..].iter().all(|g| g.key != f.key), "{}", f.key);
        }
    }

    #[test]
    fn numbers_read_well() {
        assert_eq!(format_value("max_ms", 812.0), "812 ms");
        assert_eq!(format_value("deliveries_per_s", 412345.0), "412,345/s");
        assert_eq!(format_value("lost", 3.0), "3");
    }
}
