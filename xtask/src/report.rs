//! What a load test run found: one [`ScenarioReport`] per scenario with its
//! figures and budget [`Check`]s, gathered in a [`Report`] that is written to
//! `target/loadtest/report.json` (and read back as a baseline).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use janus_histo::{Recorder, SpanSeries};
use serde::{Deserialize, Serialize};

use crate::baseline::Comparison;
use crate::config::{Kind, Size};
use crate::figures::{self, format_number, format_value, Better, Figures};
use crate::server::{ServerExit, TimedSample};

/// Version of the report format, bumped when fields change meaning.
pub const REPORT_VERSION: u32 = 1;

/// The whole run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// [`REPORT_VERSION`].
    pub version: u32,
    /// When the run started, UTC, `YYYY-MM-DD HH:MM:SS`.
    pub started: String,
    /// Whether the `--quick` sizes ran.
    pub quick: bool,
    /// The machine and its load.
    pub host: Host,
    /// Extra `--server-arg`s given on the command line.
    #[serde(default)]
    pub server_args: Vec<String>,
    /// `git describe` of the tree, if available.
    #[serde(default)]
    pub revision: Option<String>,
    /// One entry per scenario run.
    pub scenarios: Vec<ScenarioReport>,
    /// The comparison with `--baseline`, if one was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<Comparison>,
    /// Every scenario passed (and no baseline regression).
    pub pass: bool,
    /// Wall time of the whole run, seconds.
    pub duration_s: f64,
}

/// Facts about the machine.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Host {
    /// Logical CPUs.
    pub cpus: usize,
    /// 1-minute load average before the first scenario.
    pub load_before: Option<f64>,
    /// Kernel and machine, from `uname -srm`.
    #[serde(default)]
    pub uname: Option<String>,
}

/// One scenario's run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScenarioReport {
    /// Scenario name.
    pub name: String,
    /// Scenario kind.
    pub kind: Kind,
    /// What it shows, from the scenario file.
    pub description: String,
    /// The size that ran (with `--clients` applied).
    pub size: Size,
    /// What generated the load (bot command line or driver description).
    pub load: String,
    /// The server's command line.
    pub server_command: String,
    /// Every figure measured.
    pub figures: Figures,
    /// Budget checks, in the file's order.
    pub checks: Vec<Check>,
    /// Remarks for the reader (skipped checks, policies seen, warnings).
    pub notes: Vec<String>,
    /// Latency histogram of the counted deliveries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub histogram: Option<Recorder>,
    /// Fan-out span per message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spans: Option<SpanSeries>,
    /// Server memory and CPU over the scenario.
    #[serde(default)]
    pub resources: Vec<TimedSample>,
    /// How the server ended.
    #[serde(default)]
    pub server_exit: Option<ServerExit>,
    /// 1-minute load average before and after the scenario.
    pub load_avg: (Option<f64>, Option<f64>),
    /// Wall time, seconds.
    pub duration_s: f64,
    /// Why the scenario could not finish, if it could not.
    #[serde(default)]
    pub error: Option<String>,
    /// No error, no failed check.
    pub pass: bool,
}

/// Outcome of one budget check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Within budget.
    Pass,
    /// Over (or under) budget.
    Fail,
    /// The figure could not be measured; the check did not run.
    Skipped,
}

/// One figure against its budget.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Check {
    /// Figure key.
    pub figure: String,
    /// Measured value, if any.
    pub value: Option<f64>,
    /// The budget.
    pub limit: f64,
    /// Whether the budget is an upper (`lower` is better) or lower bound.
    pub upper_bound: bool,
    /// Verdict.
    pub status: Status,
    /// One sentence for people: which figure, how far off.
    pub message: String,
}

/// Checks `figures` against `budget`. Figures missing from `figures` are
/// skipped, with the reason from `unmeasured` when there is one.
pub fn check_budgets(
    scenario: &str,
    figures: &Figures,
    budget: &BTreeMap<String, f64>,
    unmeasured: &BTreeMap<String, String>,
) -> Vec<Check> {
    let mut checks = Vec::new();
    for (key, &limit) in budget {
        let def = figures::lookup(key);
        let label = def.map_or(key.as_str(), |d| d.label);
        let upper_bound = def.is_none_or(|d| d.better == Better::Lower);
        let value = figures.get(key).copied();
        let (status, message) = match value {
            None => {
                let why = unmeasured.get(key).map_or("not measured", String::as_str);
                (
                    Status::Skipped,
                    format!("{scenario}: {label}: {why}; budget check SKIPPED"),
                )
            }
            Some(v) => {
                let ok = if upper_bound { v <= limit } else { v >= limit };
                let relation = if upper_bound { "over" } else { "under" };
                let off = (v - limit).abs();
                let pct = if limit != 0.0 {
                    format!(" ({:+.0}%)", (v - limit) / limit * 100.0)
                } else {
                    String::new()
                };
                if ok {
                    (
                        Status::Pass,
                        format!(
                            "{scenario}: {label} {} is within the budget of {}",
                            format_value(key, v),
                            format_value(key, limit)
                        ),
                    )
                } else {
                    (
                        Status::Fail,
                        format!(
                            "{scenario}: {label} {} is {relation} the budget of {} by {}{pct}",
                            format_value(key, v),
                            format_value(key, limit),
                            format_value(key, off)
                        ),
                    )
                }
            }
        };
        checks.push(Check {
            figure: key.clone(),
            value,
            limit,
            upper_bound,
            status,
            message,
        });
    }
    checks
}

impl ScenarioReport {
    /// The failed checks' messages (and the error, if the scenario broke).
    pub fn failures(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .error
            .iter()
            .map(|e| format!("{}: did not complete: {e}", self.name))
            .collect();
        out.extend(
            self.checks
                .iter()
                .filter(|c| c.status == Status::Fail)
                .map(|c| c.message.clone()),
        );
        out
    }

    /// A plain-text block for the terminal.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let verdict = if self.pass { "PASS" } else { "FAIL" };
        let _ = writeln!(
            s,
            "\n=== {} [{}] {verdict} in {:.1} s",
            self.name, self.kind, self.duration_s
        );
        let _ = writeln!(s, "load:   {}", self.load);
        let _ = writeln!(s, "server: {}", self.server_command);
        if let Some(e) = &self.error {
            let _ = writeln!(s, "ERROR:  {e}");
        }
        let width = self.figures.keys().map(String::len).max().unwrap_or(0);
        for (key, value) in &self.figures {
            let _ = writeln!(s, "  {key:<width$}  {}", format_value(key, *value));
        }
        for c in &self.checks {
            let mark = match c.status {
                Status::Pass => "ok  ",
                Status::Fail => "FAIL",
                Status::Skipped => "SKIP",
            };
            let _ = writeln!(s, "  [{mark}] {}", c.message);
        }
        for n in &self.notes {
            let _ = writeln!(s, "  note: {n}");
        }
        let (before, after) = self.load_avg;
        let _ = writeln!(
            s,
            "  machine load average: {} before, {} after",
            before.map_or("?".into(), format_number),
            after.map_or("?".into(), format_number)
        );
        s
    }
}

impl Report {
    /// Every failure of the run, one line each.
    pub fn failures(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .scenarios
            .iter()
            .flat_map(ScenarioReport::failures)
            .collect();
        if let Some(b) = &self.baseline {
            out.extend(b.regressions());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(pairs: &[(&str, f64)]) -> BTreeMap<String, f64> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
    }

    #[test]
    fn failures_say_which_figure_and_by_how_much() {
        let figures: Figures = budget(&[("max_ms", 1234.0), ("deliveries_per_s", 400_000.0)]);
        let checks = check_budgets(
            "fanout",
            &figures,
            &budget(&[
                ("max_ms", 800.0),
                ("deliveries_per_s", 500_000.0),
                ("lost", 0.0),
            ]),
            &BTreeMap::new(),
        );
        let by = |k: &str| checks.iter().find(|c| c.figure == k).unwrap();
        assert_eq!(by("max_ms").status, Status::Fail);
        assert_eq!(
            by("max_ms").message,
            "fanout: max latency 1,234 ms is over the budget of 800 ms by 434 ms (+54%)"
        );
        assert_eq!(by("deliveries_per_s").status, Status::Fail);
        assert_eq!(
            by("deliveries_per_s").message,
            "fanout: deliveries per second 400,000/s is under the budget of 500,000/s by 100,000/s (-20%)"
        );
        assert_eq!(by("lost").status, Status::Skipped);
        assert!(by("lost").message.contains("SKIPPED"));
    }

    #[test]
    fn passing_and_exact_limits() {
        let figures: Figures = budget(&[("lost", 0.0), ("p99_ms", 10.0)]);
        let checks = check_budgets(
            "x",
            &figures,
            &budget(&[("lost", 0.0), ("p99_ms", 10.0)]),
            &BTreeMap::new(),
        );
        assert!(checks.iter().all(|c| c.status == Status::Pass));
        let lost = check_budgets(
            "x",
            &budget(&[("lost", 3.0)]),
            &budget(&[("lost", 0.0)]),
            &BTreeMap::new(),
        );
        assert_eq!(
            lost[0].message,
            "x: lost deliveries 3 is over the budget of 0 by 3"
        );
    }

    #[test]
    fn skipped_checks_give_the_reason() {
        let unmeasured = [(
            "leftover_sessions".to_owned(),
            "admin API unavailable".to_owned(),
        )]
        .into_iter()
        .collect();
        let checks = check_budgets(
            "churn",
            &Figures::new(),
            &budget(&[("leftover_sessions", 0.0)]),
            &unmeasured,
        );
        assert_eq!(
            checks[0].message,
            "churn: sessions left at the end: admin API unavailable; budget check SKIPPED"
        );
    }
}
