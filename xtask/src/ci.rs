//! `cargo xtask ci`: the checks every change must pass, in the order that
//! fails fastest (formatting takes a second, the load test minutes).

use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::loadtest::{self, LoadtestArgs};
use crate::{cargo, project_root};

/// Options of `cargo xtask ci`.
#[derive(Debug, clap::Args)]
pub struct CiArgs {
    /// Skip the quick load test (for a fast local pre-push check only; CI
    /// always runs it).
    #[arg(long)]
    pub skip_loadtest: bool,
}

/// Runs fmt, clippy, tests and the quick load test, stopping at the first failure.
///
/// # Errors
/// The first step that failed, by name.
pub fn run(args: &CiArgs) -> Result<()> {
    let started = Instant::now();
    let steps: [(&str, &[&str]); 3] = [
        ("format check", &["fmt", "--all", "--", "--check"]),
        (
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
        ("tests (with tidy)", &["test", "--workspace"]),
    ];
    let mut timings = Vec::new();
    for (name, cargo_args) in steps {
        let t = Instant::now();
        println!("\n== xtask ci: {name}: cargo {}", cargo_args.join(" "));
        let status = Command::new(cargo())
            .args(cargo_args)
            .current_dir(project_root())
            .status()
            .with_context(|| format!("cannot run cargo for {name}"))?;
        if !status.success() {
            bail!(
                "ci step '{name}' failed ({status}): run `cargo {}` to see why",
                cargo_args.join(" ")
            );
        }
        timings.push((name, t.elapsed()));
    }
    if args.skip_loadtest {
        println!("\n== xtask ci: quick load test SKIPPED (--skip-loadtest)");
    } else {
        let t = Instant::now();
        println!("\n== xtask ci: load test: cargo xtask loadtest --quick");
        loadtest::run(&LoadtestArgs::quick()).context("ci step 'loadtest --quick' failed")?;
        timings.push(("loadtest --quick", t.elapsed()));
    }
    println!("\n== xtask ci: all green in {:.0?}", started.elapsed());
    for (name, took) in timings {
        println!("   {name:<20} {:>8.1?}", took);
    }
    Ok(())
}
