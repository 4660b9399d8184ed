//! `cargo xtask`: the project's automation, written in Rust so it runs
//! wherever cargo does.
//!
//! - `cargo xtask ci` is what CI runs: format check, clippy with warnings
//!   denied, the whole test suite (including the tidy tests of [`tidy`]) and
//!   the quick load test.
//! - `cargo xtask cluster --nodes N` starts a `redis-server` and N nodes on
//!   one port for a person to try ([`cluster`]).
//! - `cargo xtask loadtest` builds the release binaries, starts `janus-server`
//!   on loopback once per scenario, drives it with one `janus-bot` run mode
//!   per scenario, checks every figure against the budgets in
//!   `xtask/loadtest.toml` and writes `target/loadtest/report.{json,html}`
//!   (and a screenshot of the page, when Chromium is installed).
//!
//! xtask generates no load and speaks no protocol itself: every latency in
//! a report is measured by `janus-bot`, on one monotonic clock.
//!
//! Layout: [`config`] reads the scenario file, [`figures`] names the numbers
//! a run produces, [`process`] owns every child process (and kills them on
//! Ctrl-C), [`server`] starts the server and reads its admin API, [`bot`]
//! runs `janus-bot` and reads its report, [`report`], [`html`],
//! [`screenshot`] and [`baseline`] turn results into files and verdicts,
//! and [`loadtest`] ties them together.

#![forbid(unsafe_code)]

mod baseline;
mod bot;
mod ci;
mod cluster;
mod config;
mod figures;
mod html;
mod loadtest;
mod process;
mod report;
mod screenshot;
mod server;
#[cfg(test)]
mod tidy;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The exit statuses, as `--help` shows them.
const EXIT_CODES: &str = "\
Exit status:
  0  success: every check and budget passed
  1  a step ran and failed: a CI step, a budget, a scenario, a baseline regression
  2  usage or configuration error: bad flags, a bad scenario file
  3  cannot connect: a server or bot could not be reached";

/// Project automation for Janus.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask", after_help = EXIT_CODES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The tasks.
#[derive(Debug, Subcommand)]
enum Command {
    /// Everything CI checks: fmt, clippy, tests (with tidy) and `loadtest --quick`.
    #[command(after_help = EXIT_CODES)]
    Ci(ci::CiArgs),
    /// Release build, server on loopback, load scenarios, budgets and reports.
    #[command(after_help = EXIT_CODES)]
    Loadtest(loadtest::LoadtestArgs),
    /// A cluster to try: redis-server and N release janus-server nodes on one
    /// port (SO_REUSEPORT); Ctrl-C stops everything it started.
    Cluster(cluster::ClusterArgs),
    /// Render the HTML page of a saved load test report (a report.json or a baseline).
    Report {
        /// The saved report.json.
        json: PathBuf,
        /// Where to write the page [default: the JSON's path with .html].
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Ci(args) => ci::run(&args),
        Command::Loadtest(args) => loadtest::run(&args),
        Command::Cluster(args) => cluster::run(&args),
        Command::Report { json, out } => render_report(&json, out),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("\nxtask: error: {e:#}");
            ExitCode::from(exit_status(&e))
        }
    }
}

/// A usage or configuration error (exit status 2).
#[derive(Debug, thiserror::Error)]
#[error("{0:#}")]
pub struct Usage(pub anyhow::Error);

/// Something that should answer could not be reached (exit status 3).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Unreachable(pub String);

/// The exit status for an error (see [`EXIT_CODES`]).
fn exit_status(e: &anyhow::Error) -> u8 {
    if e.chain().any(|c| c.is::<Unreachable>()) {
        3
    } else if e.chain().any(|c| c.is::<Usage>()) {
        2
    } else {
        1
    }
}

/// Writes the HTML page of a saved report.
fn render_report(json: &std::path::Path, out: Option<PathBuf>) -> anyhow::Result<()> {
    use anyhow::Context;
    let report = baseline::load(json).map_err(Usage)?;
    let out = out.unwrap_or_else(|| json.with_extension("html"));
    std::fs::write(&out, html::render(&report))
        .with_context(|| format!("cannot write {}", out.display()))?;
    println!("{}", out.display());
    Ok(())
}

/// The workspace root: the parent of this crate's manifest directory.
fn project_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest.clone())
}

/// The cargo that runs us (`$CARGO`), or `cargo` from `PATH`.
fn cargo() -> std::ffi::OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}
