//! `--baseline FILE`: this run against a saved one (`--save-baseline FILE`
//! writes one; any `report.json` is one), figure by figure, as ratios.
//!
//! A figure regresses when it is worse than the baseline by more than the
//! scenario file's `[baseline] tolerance` *and* by more than the figure's
//! noise floor: with tolerance 0.5, a latency regresses above 1.5x its
//! baseline, a throughput below 1/1.5 = 0.67x. Only figures marked for
//! comparison in [`crate::figures`] are judged; losses and leftovers have
//! absolute budgets instead. Scenarios that ran at a different size than in
//! the baseline are shown but not judged, since their ratios mean nothing.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::figures::{self, format_value, Better};
use crate::report::{Report, REPORT_VERSION};

/// The comparison of a run with a baseline.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Comparison {
    /// The baseline file.
    pub file: String,
    /// When the baseline ran.
    pub baseline_started: String,
    /// The tolerance used.
    pub tolerance: f64,
    /// One row per compared figure.
    pub rows: Vec<Row>,
    /// Scenarios that could not be judged, and why.
    pub notes: Vec<String>,
}

/// One figure, then and now.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    /// Scenario name.
    pub scenario: String,
    /// Figure key.
    pub figure: String,
    /// Value in the baseline.
    pub baseline: f64,
    /// Value now.
    pub current: f64,
    /// `current / baseline`.
    pub ratio: f64,
    /// Worse beyond tolerance and noise floor.
    pub regression: bool,
    /// Whether the sizes matched, so the row was judged at all.
    pub judged: bool,
}

/// Reads a saved report.
///
/// # Errors
/// Unreadable file, not a report, or a report of another format version.
pub fn load(path: &Path) -> Result<Report> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read baseline {}", path.display()))?;
    let report: Report = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a load test report", path.display()))?;
    if report.version != REPORT_VERSION {
        bail!(
            "baseline {} has report format {}, this xtask writes {REPORT_VERSION}",
            path.display(),
            report.version
        );
    }
    Ok(report)
}

/// Whether `current` is worse than `baseline` beyond `tolerance` and the noise floor.
pub fn is_regression(
    better: Better,
    baseline: f64,
    current: f64,
    tolerance: f64,
    floor: f64,
) -> bool {
    match better {
        Better::Lower => current > baseline * (1.0 + tolerance) && current - baseline > floor,
        Better::Higher => current < baseline / (1.0 + tolerance) && baseline - current > floor,
    }
}

/// Compares `current` with `baseline`.
pub fn compare(file: &str, baseline: &Report, current: &Report, tolerance: f64) -> Comparison {
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    for cur in &current.scenarios {
        let Some(base) = baseline.scenarios.iter().find(|b| b.name == cur.name) else {
            notes.push(format!("{}: not in the baseline", cur.name));
            continue;
        };
        let same_size =
            serde_json::to_value(&base.size).ok() == serde_json::to_value(&cur.size).ok();
        if !same_size {
            notes.push(format!(
                "{}: ran at another size than in the baseline{}; ratios shown, not judged",
                cur.name,
                if baseline.quick != current.quick {
                    " (quick vs full)"
                } else {
                    ""
                }
            ));
        }
        for def in figures::FIGURES.iter().filter(|f| f.compare) {
            let (Some(&b), Some(&c)) = (base.figures.get(def.key), cur.figures.get(def.key)) else {
                continue;
            };
            let ratio = if b != 0.0 { c / b } else { f64::NAN };
            rows.push(Row {
                scenario: cur.name.clone(),
                figure: def.key.to_owned(),
                baseline: b,
                current: c,
                ratio,
                regression: same_size
                    && is_regression(def.better, b, c, tolerance, def.noise_floor),
                judged: same_size,
            });
        }
    }
    Comparison {
        file: file.to_owned(),
        baseline_started: baseline.started.clone(),
        tolerance,
        rows,
        notes,
    }
}

impl Comparison {
    /// One line per regression, saying which figure and by how much.
    pub fn regressions(&self) -> Vec<String> {
        self.rows
            .iter()
            .filter(|r| r.regression)
            .map(|r| {
                let label = figures::lookup(&r.figure).map_or(r.figure.as_str(), |d| d.label);
                format!(
                    "{}: {label} regressed to {:.2}x the baseline ({} now, {} in {}; tolerance {:.0}%)",
                    r.scenario,
                    r.ratio,
                    format_value(&r.figure, r.current),
                    format_value(&r.figure, r.baseline),
                    self.file,
                    self.tolerance * 100.0
                )
            })
            .collect()
    }

    /// A table for the terminal.
    pub fn to_text(&self) -> String {
        let mut s = format!(
            "\n=== baseline {} (run {}), tolerance {:.0}%\n",
            self.file,
            self.baseline_started,
            self.tolerance * 100.0
        );
        let _ = writeln!(
            s,
            "  {:<10} {:<20} {:>14} {:>14} {:>7}",
            "scenario", "figure", "baseline", "now", "ratio"
        );
        for r in &self.rows {
            let verdict = match (r.judged, r.regression) {
                (false, _) => "  (not judged)",
                (true, true) => "  REGRESSION",
                (true, false) => "",
            };
            let _ = writeln!(
                s,
                "  {:<10} {:<20} {:>14} {:>14} {:>6.2}x{verdict}",
                r.scenario,
                r.figure,
                format_value(&r.figure, r.baseline),
                format_value(&r.figure, r.current),
                r.ratio
            );
        }
        for n in &self.notes {
            let _ = writeln!(s, "  note: {n}");
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Kind, Size};
    use crate::report::{Host, ScenarioReport};

    fn report(quick: bool, clients: usize, figures: &[(&str, f64)]) -> Report {
        Report {
            version: REPORT_VERSION,
            started: "2025-01-01 00:00:00".into(),
            quick,
            host: Host::default(),
            server_args: vec![],
            revision: None,
            scenarios: vec![ScenarioReport {
                name: "fanout".into(),
                kind: Kind::Fanout,
                description: String::new(),
                size: Size {
                    clients,
                    ..Size::default()
                },
                load: String::new(),
                server_command: String::new(),
                figures: figures.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(),
                checks: vec![],
                notes: vec![],
                histogram: None,
                spans: None,
                resources: vec![],
                server_exit: None,
                load_avg: (None, None),
                duration_s: 1.0,
                error: None,
                pass: true,
            }],
            baseline: None,
            pass: true,
            duration_s: 1.0,
        }
    }

    #[test]
    fn regressions_need_tolerance_and_noise_floor() {
        assert!(is_regression(Better::Lower, 100.0, 160.0, 0.5, 10.0));
        assert!(!is_regression(Better::Lower, 100.0, 140.0, 0.5, 10.0));
        // 3x, but only 2 ms worse: noise.
        assert!(!is_regression(Better::Lower, 1.0, 3.0, 0.5, 10.0));
        assert!(is_regression(
            Better::Higher,
            900_000.0,
            500_000.0,
            0.5,
            1000.0
        ));
        assert!(!is_regression(
            Better::Higher,
            900_000.0,
            700_000.0,
            0.5,
            1000.0
        ));
    }

    #[test]
    fn comparison_reports_ratios_and_regressions() {
        let base = report(
            true,
            5000,
            &[("max_ms", 100.0), ("deliveries_per_s", 1e6), ("lost", 0.0)],
        );
        let now = report(
            true,
            5000,
            &[
                ("max_ms", 400.0),
                ("deliveries_per_s", 1.1e6),
                ("lost", 5.0),
            ],
        );
        let c = compare("base.json", &base, &now, 0.5);
        assert_eq!(c.rows.len(), 2, "lost is not compared: {:?}", c.rows);
        let reg = c.regressions();
        assert_eq!(reg.len(), 1);
        assert_eq!(
            reg[0],
            "fanout: max latency regressed to 4.00x the baseline (400 ms now, 100 ms in base.json; tolerance 50%)"
        );
        assert!(c.to_text().contains("REGRESSION"));
    }

    #[test]
    fn other_sizes_are_not_judged() {
        let base = report(false, 19000, &[("max_ms", 100.0)]);
        let now = report(true, 5000, &[("max_ms", 400.0)]);
        let c = compare("b", &base, &now, 0.5);
        assert!(c.regressions().is_empty());
        assert!(c.notes[0].contains("quick vs full"), "{:?}", c.notes);
    }

    #[test]
    fn saved_reports_load_back() {
        let dir = std::env::temp_dir().join(format!("xtask-baseline-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("b.json");
        std::fs::write(
            &path,
            serde_json::to_string(&report(true, 1, &[("max_ms", 1.0)])).unwrap(),
        )
        .unwrap();
        let back = load(&path).unwrap();
        assert_eq!(back.scenarios[0].figures["max_ms"], 1.0);
        std::fs::write(&path, "{}").unwrap();
        assert!(load(&path).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
