//! `cargo xtask ci`: the checks every change must pass, in the order that
//! fails fastest (formatting takes a second, the load test minutes).
//!
//! Each step's output is kept, not shown: the terminal gets one line per
//! step with what it found and how long it took, and only a failing step's
//! full output (then `ci` stops). A passing run prints a dozen lines.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::{cargo, project_root};

/// Options of `cargo xtask ci`.
#[derive(Debug, clap::Args)]
pub struct CiArgs {
    /// Skip the quick load test (for a fast local pre-push check only; CI
    /// always runs it).
    #[arg(long)]
    pub skip_loadtest: bool,
    /// Show every step's full output as it runs, as the tools print it.
    #[arg(long)]
    pub verbose: bool,
}

/// One step: a name and the command that runs it.
struct Step {
    name: &'static str,
    program: std::ffi::OsString,
    args: Vec<String>,
}

impl Step {
    fn cargo(name: &'static str, args: &[&str]) -> Step {
        Step {
            name,
            program: cargo(),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
        }
    }

    fn command_line(&self) -> String {
        format!("{} {}", self.program.to_string_lossy(), self.args.join(" "))
    }
}

/// Runs fmt, clippy, tests and the quick load test, stopping at the first failure.
///
/// # Errors
/// The first step that failed, by name (its output is printed first).
pub fn run(args: &CiArgs) -> Result<()> {
    let started = Instant::now();
    preflight()?;
    let mut steps = vec![
        Step::cargo("format", &["fmt", "--all", "--", "--check"]),
        Step::cargo(
            "clippy",
            &[
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ],
        ),
        Step::cargo("tests", &["test", "--workspace"]),
        // The loom model check of the write-token protocol
        // (janus-server/src/outbound.rs): every interleaving of publish,
        // partial write, park, kick, slow-consumer cut, shutdown and resume.
        Step::cargo(
            "model check",
            &[
                "test",
                "-p",
                "janus-server",
                "--features",
                "model-check",
                "--lib",
                "outbound::model",
            ],
        ),
    ];
    if !args.skip_loadtest {
        let exe = std::env::current_exe().context("finding the xtask executable")?;
        steps.push(Step {
            name: "loadtest --quick",
            program: exe.into_os_string(),
            args: vec!["loadtest".into(), "--quick".into()],
        });
    }
    println!("xtask ci: {} steps", steps.len());
    for step in &steps {
        let t = Instant::now();
        let (ok, summary, output) = run_step(step, args.verbose)?;
        let took = t.elapsed();
        let mark = if ok { "ok  " } else { "FAIL" };
        let line = format!(
            "  [{mark}] {:<17} {:>7}  {summary}",
            step.name,
            seconds(took)
        );
        println!("{}", line.trim_end());
        if !ok {
            if !args.verbose {
                println!("\n----- output of `{}` -----", step.command_line());
                print!("{output}");
                println!("----- end of output -----\n");
            }
            bail!(
                "ci step '{}' failed after {}: `{}`",
                step.name,
                seconds(took),
                step.command_line()
            );
        }
    }
    if args.skip_loadtest {
        println!("  [SKIP] loadtest --quick (--skip-loadtest; CI always runs it)");
    }
    println!("xtask ci: all green in {}", seconds(started.elapsed()));
    Ok(())
}

/// Programs the end-to-end tests start for real, with the Debian package
/// that provides each.
const REAL_COMPONENTS: &[(&str, &str)] = &[
    ("redis-server", "redis-server"),
    ("chromium", "chromium"),
    ("chromedriver", "chromium-driver"),
];

/// Fails at once, naming the packages, when a program the tests start is
/// not installed (rather than minutes later, inside a test).
fn preflight() -> Result<()> {
    let missing: Vec<&str> = REAL_COMPONENTS
        .iter()
        .filter(|(program, _)| !on_path(program))
        .map(|&(_, package)| package)
        .collect();
    if !missing.is_empty() {
        bail!(
            "the end-to-end tests start a real redis-server and headless \
             Chromium; install what is missing: apt-get install -y {} \
             (.ci/run does this on CI)",
            missing.join(" ")
        );
    }
    Ok(())
}

/// Whether `program` is an executable file in a directory of `PATH`.
fn on_path(program: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| {
            std::fs::metadata(dir.join(program))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    })
}

fn seconds(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// Runs one step, its output kept (or shown, with `verbose`); returns
/// whether it passed, a one-line summary, and the output.
fn run_step(step: &Step, verbose: bool) -> Result<(bool, String, String)> {
    let mut command = Command::new(&step.program);
    command
        .args(&step.args)
        .current_dir(project_root())
        .stdin(Stdio::null());
    if verbose {
        let status = command
            .status()
            .with_context(|| format!("cannot run `{}`", step.command_line()))?;
        return Ok((status.success(), String::new(), String::new()));
    }
    let Output {
        status,
        stdout,
        stderr,
    } = command
        .output()
        .with_context(|| format!("cannot run `{}`", step.command_line()))?;
    let mut output = String::from_utf8_lossy(&stdout).into_owned();
    output.push_str(&String::from_utf8_lossy(&stderr));
    Ok((status.success(), summarize(step.name, &output), output))
}

/// The line worth keeping from a step's output.
fn summarize(step: &str, output: &str) -> String {
    match step {
        "tests" => {
            let (mut passed, mut failed, mut binaries) = (0u64, 0u64, 0u64);
            for line in output.lines().filter(|l| l.starts_with("test result:")) {
                binaries += 1;
                passed += count_before(line, " passed");
                failed += count_before(line, " failed");
            }
            format!("{passed} passed, {failed} failed ({binaries} test binaries)")
        }
        "loadtest --quick" => output
            .lines()
            .filter(|l| l.starts_with("== loadtest: PASS") || l.starts_with("== loadtest: NO"))
            .map(|l| l.trim_start_matches("== loadtest: ").to_owned())
            .chain(
                output
                    .lines()
                    .filter_map(|l| l.trim().strip_suffix("report.html"))
                    .map(|dir| format!("report: {dir}report.html")),
            )
            .collect::<Vec<_>>()
            .join("; "),
        _ => output
            .lines()
            .rev()
            .find(|l| l.trim_start().starts_with("Finished"))
            .map_or_else(String::new, |l| l.trim().to_owned()),
    }
}

/// The number just before `word` in `line` (`3 passed` → 3), or 0.
fn count_before(line: &str, word: &str) -> u64 {
    line.split(';')
        .find_map(|part| part.trim().strip_suffix(word.trim()))
        .and_then(|n| n.trim().rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_counts_are_summed() {
        let out = "running 3 tests\n\
                   test result: ok. 31 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 1.06s\n\
                   test result: FAILED. 2 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out\n";
        assert_eq!(
            summarize("tests", out),
            "33 passed, 1 failed (2 test binaries)"
        );
        assert_eq!(
            summarize("clippy", "  Checking x\n    Finished `dev` profile in 3s\n"),
            "Finished `dev` profile in 3s"
        );
        let lt = "== loadtest: reports: /t/loadtest/report.json\n                      /t/loadtest/report.html\n== loadtest: PASS (5 scenarios in 80 s)\n";
        assert_eq!(
            summarize("loadtest --quick", lt),
            "PASS (5 scenarios in 80 s); report: /t/loadtest/report.html"
        );
    }
}
