//! `cargo xtask loadtest`: build, then for each scenario start a fresh
//! server, load it, check the budgets, and finally write the reports.
//!
//! Each scenario gets its own server so that CPU time, peak memory and
//! leftovers belong to that scenario alone, and one scenario's debris never
//! slows the next. Every scenario runs under its file's `timeout_s`; every
//! process it starts is stopped by pid when it ends (see [`crate::process`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};

use crate::bot::Outcome;
use crate::config::{Kind, LoadtestConfig, Scenario, Size};
use crate::process::{self, install_signal_handlers};
use crate::report::{check_budgets, Host, Report, ScenarioReport, Status, REPORT_VERSION};
use crate::server::{log_tail, status_number, Sampler, Server, ServerOptions};
use crate::{baseline, bot, html, project_root, screenshot};

/// Options of `cargo xtask loadtest`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct LoadtestArgs {
    /// Run only these scenarios (repeat the flag or separate names with commas).
    #[arg(long = "scenario", value_name = "NAME", value_delimiter = ',')]
    pub scenarios: Vec<String>,
    /// Run the small CI sizes instead of the full ones.
    #[arg(long)]
    pub quick: bool,
    /// Override the number of (subscribing) clients of every selected scenario.
    /// Budgets stay those of the size being run.
    #[arg(long, value_name = "N")]
    pub clients: Option<usize>,
    /// Override how long messages flow in the churn and soak scenarios,
    /// e.g. `--scenario soak --duration 60s` to try the soak (10 minutes
    /// otherwise). Budgets stay those of the size being run.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// Compare with a saved report and fail on a regression beyond the
    /// scenario file's tolerance.
    #[arg(long, value_name = "FILE")]
    pub baseline: Option<PathBuf>,
    /// Save this run's report as a baseline for later `--baseline` runs.
    #[arg(long, value_name = "FILE")]
    pub save_baseline: Option<PathBuf>,
    /// Pass an extra argument to every janus-server (repeatable), e.g.
    /// `--server-arg=--test-fanout-delay=50us`.
    #[arg(long = "server-arg", value_name = "ARG", allow_hyphen_values = true)]
    pub server_args: Vec<String>,
    /// The scenario file [default: xtask/loadtest.toml].
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Use the release binaries already built (janus-server and janus-bot)
    /// instead of running cargo build.
    #[arg(long)]
    pub no_build: bool,
    /// List the scenarios with their sizes and budgets, and exit.
    #[arg(long)]
    pub list: bool,
}

/// Where cargo puts build output.
pub(crate) fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|p| {
            if p.is_relative() {
                project_root().join(p)
            } else {
                p
            }
        })
        .unwrap_or_else(|| project_root().join("target"))
}

/// Runs the load test.
///
/// # Errors
/// A bad scenario file, a failed build, a scenario that missed a budget or
/// broke, or a baseline regression; the message lists every failure.
pub fn run(args: &LoadtestArgs) -> Result<()> {
    let config_path = args
        .config
        .clone()
        .unwrap_or_else(|| project_root().join("xtask/loadtest.toml"));
    let config = LoadtestConfig::load(&config_path).map_err(crate::Usage)?;
    let selected = config.select(&args.scenarios).map_err(crate::Usage)?;
    if args.list {
        list(&selected);
        return Ok(());
    }
    let baseline = args
        .baseline
        .as_deref()
        .map(baseline::load)
        .transpose()
        .map_err(crate::Usage)?;

    if !args.no_build {
        build()?;
    }
    let release = target_dir().join("release");
    let server_bin = release.join("janus-server");
    let bot_bin = release.join("janus-bot");
    for bin in [&server_bin, &bot_bin] {
        if !bin.exists() {
            bail!(
                "{} does not exist: build it (or drop --no-build)",
                bin.display()
            );
        }
    }
    let out_dir = target_dir().join("loadtest");
    std::fs::create_dir_all(&out_dir)
        .with_context(|| format!("cannot create {}", out_dir.display()))?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let started = Instant::now();
    let started_at = utc_now();
    let host = Host {
        cpus: std::thread::available_parallelism().map_or(1, usize::from),
        load_before: process::load_average(),
        uname: command_output("uname", &["-srm"]),
    };
    println!(
        "\n== loadtest: {} scenario(s), {} sizes, load average {}",
        selected.len(),
        if args.quick { "quick" } else { "full" },
        host.load_before.map_or("?".into(), |l| format!("{l:.2}"))
    );
    let scenario_reports = runtime.block_on(async {
        install_signal_handlers(Duration::from_secs(3))?;
        let ctx = Runner {
            config: &config,
            args,
            server_bin: &server_bin,
            bot_bin: &bot_bin,
            out_dir: &out_dir,
        };
        let mut reports = Vec::new();
        for scenario in &selected {
            let Some(size) = ctx.size(scenario) else {
                println!(
                    "\n== loadtest: {} skipped: it has no --quick size (run it with --scenario {} \
                     and without --quick)",
                    scenario.name, scenario.name
                );
                continue;
            };
            let report = ctx.run_scenario(scenario, size).await;
            print!("{}", report.to_text());
            reports.push(report);
        }
        anyhow::Ok(reports)
    })?;
    runtime.shutdown_timeout(Duration::from_secs(2));

    let mut report = Report {
        version: REPORT_VERSION,
        started: started_at,
        quick: args.quick,
        host,
        server_args: args.server_args.clone(),
        revision: command_output(
            "git",
            &[
                "-C",
                &project_root().display().to_string(),
                "describe",
                "--always",
                "--dirty",
            ],
        ),
        pass: scenario_reports.iter().all(|s| s.pass),
        scenarios: scenario_reports,
        baseline: None,
        duration_s: started.elapsed().as_secs_f64(),
    };
    if let (Some(base), Some(path)) = (&baseline, &args.baseline) {
        let comparison = baseline::compare(
            &path.display().to_string(),
            base,
            &report,
            config.baseline.tolerance,
        );
        print!("{}", comparison.to_text());
        report.pass &= comparison.regressions().is_empty();
        report.baseline = Some(comparison);
    }
    write_reports(&report, &out_dir, args.save_baseline.as_deref())?;

    let failures = report.failures();
    if failures.is_empty() {
        println!(
            "\n== loadtest: PASS ({} scenarios in {:.0} s)",
            report.scenarios.len(),
            report.duration_s
        );
        Ok(())
    } else {
        let mut msg = format!("load test FAILED ({} problem(s)):", failures.len());
        for f in &failures {
            msg.push_str("\n  - ");
            msg.push_str(f);
        }
        bail!(msg)
    }
}

fn list(selected: &[&Scenario]) {
    for s in selected {
        println!("{} ({}): {}", s.name, s.kind(), s.description);
        let sizes = [("full", Some(&s.full)), ("quick", s.quick.as_ref())];
        for (label, size) in sizes.iter().filter_map(|(l, s)| Some((l, (*s)?))) {
            let params = serde_json::to_string(size).unwrap_or_default();
            let budget: Vec<String> = size
                .budget
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            println!(
                "  {label:<5} {params}\n        budget: {}",
                budget.join(", ")
            );
        }
    }
}

/// Builds the release binaries the load test runs. xtask itself only
/// orchestrates (the bot makes the load), so it stays a debug build.
pub(crate) fn build() -> Result<()> {
    let args = [
        "build",
        "--release",
        "-p",
        "janus-server",
        "-p",
        "janus-bot",
    ];
    println!("== loadtest: cargo {}", args.join(" "));
    let status = Command::new(crate::cargo())
        .args(args)
        .current_dir(project_root())
        .status()
        .context("cannot run cargo build")?;
    if !status.success() {
        bail!("release build failed ({status})");
    }
    Ok(())
}

fn write_reports(report: &Report, out_dir: &Path, save_baseline: Option<&Path>) -> Result<()> {
    let json = serde_json::to_string_pretty(report).context("cannot serialize the report")?;
    let json_path = out_dir.join("report.json");
    std::fs::write(&json_path, &json)
        .with_context(|| format!("cannot write {}", json_path.display()))?;
    let html_path = out_dir.join("report.html");
    std::fs::write(&html_path, html::render(report))
        .with_context(|| format!("cannot write {}", html_path.display()))?;
    println!(
        "\n== loadtest: reports: {}\n                      {}",
        json_path.display(),
        html_path.display()
    );
    let png = html_path.with_extension("png");
    // Tall enough for the whole page: about 2,000 px per scenario.
    let height = 900 + 2000 * report.scenarios.len() as u32;
    match screenshot::capture(&html_path, &png, height.min(20_000)) {
        Ok(()) => println!(
            "                      {} (the page in headless Chromium)",
            png.display()
        ),
        Err(e) => println!("== loadtest: NO SCREENSHOT of the report: {e:#}"),
    }
    if let Some(path) = save_baseline {
        std::fs::write(path, &json)
            .with_context(|| format!("cannot save baseline {}", path.display()))?;
        println!("== loadtest: saved baseline {}", path.display());
    }
    Ok(())
}

/// What every scenario run needs.
struct Runner<'a> {
    config: &'a LoadtestConfig,
    args: &'a LoadtestArgs,
    server_bin: &'a Path,
    bot_bin: &'a Path,
    out_dir: &'a Path,
}

/// What [`Runner::measure`] returns.
struct Measured {
    outcome: Outcome,
    server_command: String,
    resources: Vec<crate::server::TimedSample>,
    exit: Option<crate::server::ServerExit>,
}

impl Runner<'_> {
    /// The size to run, with the command line's overrides; `None` when
    /// `--quick` skips the scenario.
    fn size(&self, scenario: &Scenario) -> Option<Size> {
        let mut size = scenario.size(self.args.quick)?.clone();
        if let Some(n) = self.args.clients {
            size.clients = n;
        }
        if let (Some(d), Kind::Churn | Kind::Soak) = (self.args.duration, scenario.kind()) {
            size.duration_s = Some(d.as_secs_f64());
        }
        Some(size)
    }

    async fn run_scenario(&self, scenario: &Scenario, size: Size) -> ScenarioReport {
        let load_before = process::load_average();
        let started = Instant::now();
        println!(
            "\n== loadtest: {} ({}, {} clients, timeout {} s)",
            scenario.name,
            scenario.kind(),
            size.clients,
            scenario.timeout_s
        );
        let timeout = Duration::from_secs_f64(scenario.timeout_s);
        let measured = tokio::time::timeout(timeout, self.measure(scenario, &size))
            .await
            .unwrap_or_else(|_| {
                Err(anyhow::anyhow!(
                    "scenario timed out after {} s (timeout_s in the scenario file); every \
                     process it started was stopped",
                    scenario.timeout_s
                ))
            });
        let mut report = ScenarioReport {
            name: scenario.name.clone(),
            kind: scenario.kind(),
            description: scenario.description.clone(),
            size: size.clone(),
            load: String::new(),
            server_command: String::new(),
            figures: Default::default(),
            checks: Vec::new(),
            notes: Vec::new(),
            histogram: None,
            spans: None,
            resources: Vec::new(),
            server_exit: None,
            load_avg: (load_before, None),
            duration_s: 0.0,
            error: None,
            pass: false,
        };
        let unmeasured = match measured {
            Ok(m) => {
                report.load = m.outcome.command;
                report.server_command = m.server_command;
                report.figures = m.outcome.figures;
                report.notes = m.outcome.notes;
                report.histogram = m.outcome.histogram;
                report.spans = m.outcome.spans;
                report.resources = m.resources;
                report.server_exit = m.exit;
                m.outcome.unmeasured
            }
            Err(e) => {
                report.error = Some(format!("{e:#}"));
                Default::default()
            }
        };
        if self.args.clients.is_some() || self.args.duration.is_some() {
            report.notes.push(format!(
                "--clients or --duration overrode the scenario file; the budgets are those of \
                 the {} size",
                if self.args.quick { "quick" } else { "full" }
            ));
        }
        if let Some(exit) = &report.server_exit {
            if exit.killed || exit.code != Some(0) {
                report.notes.push(format!(
                    "WARNING: the server did not exit cleanly on SIGTERM (code {:?}, killed: {})",
                    exit.code, exit.killed
                ));
            }
        }
        report.checks = check_budgets(&scenario.name, &report.figures, &size.budget, &unmeasured);
        if report.error.is_none() {
            for c in report.checks.iter().filter(|c| c.status == Status::Skipped) {
                eprintln!("\n!!! {} !!!", c.message);
            }
        }
        report.pass =
            report.error.is_none() && report.checks.iter().all(|c| c.status != Status::Fail);
        report.duration_s = started.elapsed().as_secs_f64();
        report.load_avg.1 = process::load_average();
        report
    }

    /// Starts the server, runs the load, samples the server, stops it.
    async fn measure(&self, scenario: &Scenario, size: &Size) -> Result<Measured> {
        let mut args = merge_flags(
            &merge_flags(&self.config.server.args, &scenario.server_args),
            &self.args.server_args,
        );
        let nodes = scenario.nodes.unwrap_or(1);
        let mut listen = None;
        // A cluster: Redis first, then every node on one shared port.
        let _redis = if nodes > 1 {
            let (redis_port, port) = crate::server::free_ports()?;
            listen = Some(SocketAddr::from(([127, 0, 0, 1], port)));
            args.extend([
                "--broker".to_owned(),
                format!("redis://127.0.0.1:{redis_port}"),
                "--reuse-port".to_owned(),
            ]);
            Some(crate::cluster::start_redis(redis_port).await?)
        } else {
            None
        };
        let mut opts = ServerOptions {
            binary: self.server_bin.to_path_buf(),
            args,
            listen,
            log: self.out_dir.join(format!("{}.server.log", scenario.name)),
            startup_timeout: Duration::from_secs_f64(self.config.server.startup_timeout_s),
            shutdown_grace: Duration::from_secs_f64(self.config.server.shutdown_timeout_s),
            websocket: scenario.websocket,
        };
        let mut server = Server::start(&opts).await?;
        let mut others = Vec::new();
        for i in 1..nodes {
            opts.log = self
                .out_dir
                .join(format!("{}.server{i}.log", scenario.name));
            others.push(Server::start(&opts).await?);
        }
        for node in std::iter::once(&server).chain(&others) {
            node.wait_ready(opts.startup_timeout).await?;
        }
        let sampler = Sampler::start(server.pid());
        let run = bot::BotRun {
            binary: self.bot_bin,
            scenario: &scenario.name,
            kind: scenario.kind(),
            size,
            out_dir: self.out_dir,
            timeout: Duration::from_secs_f64(scenario.timeout_s)
                .saturating_sub(Duration::from_secs(10)),
            clustered: nodes > 1,
        };
        let mut outcome = bot::run(&run, &server).await;
        if let Ok(o) = &mut outcome {
            self.server_checks(scenario.kind(), size, &server, o).await;
        }
        if let Some(status) = server.exited()? {
            bail!(
                "janus-server died during the scenario ({status})\n{}",
                log_tail(&server.log, 20)
            );
        }
        let end = server.sample()?;
        let resources = sampler.finish();
        let server_command = server.command_line.clone();
        for other in others {
            tokio::task::block_in_place(|| other.stop())?;
        }
        let exit = tokio::task::block_in_place(|| server.stop())?;
        if let Ok(o) = &mut outcome {
            o.figures.insert("server_cpu_s".into(), end.cpu_s);
            o.figures
                .insert("server_peak_rss_mib".into(), end.hwm_kib as f64 / 1024.0);
            o.figures
                .insert("server_end_rss_mib".into(), end.rss_kib as f64 / 1024.0);
        }
        Ok(Measured {
            outcome: outcome?,
            server_command,
            resources,
            exit: Some(exit),
        })
    }
}

impl Runner<'_> {
    /// What the server itself says after the load: the slow-consumer
    /// counter, and for churn whether it forgot every client and how far
    /// its memory is from where it was after the warm-up.
    async fn server_checks(&self, kind: Kind, size: &Size, server: &Server, o: &mut Outcome) {
        match kind {
            Kind::Slow => match server.status().await {
                Some(status) => {
                    if let Some(n) = status_number(&status, "slow_consumers") {
                        o.figures.insert("slow_consumers_counted".into(), n);
                    }
                }
                None => {
                    o.unmeasured.insert(
                        "slow_consumers_counted".into(),
                        "admin API unavailable".into(),
                    );
                }
            },
            Kind::Churn => {
                server
                    .leftovers(Duration::from_secs_f64(size.settle_s()), o)
                    .await;
                let reference = o.figures.get("server_reference_rss_mib").copied();
                if let (Some(reference), Ok(end)) = (reference, server.sample()) {
                    let end = end.rss_kib as f64 / 1024.0;
                    o.figures.insert("rss_growth_mib".into(), end - reference);
                    o.notes.push(format!(
                        "server RSS {reference:.1} MiB after the warm-up with every subscriber \
                         connected, {end:.1} MiB once every client had left"
                    ));
                }
            }
            Kind::Resume => {
                if let Some(status) = server.status().await {
                    let n = |k: &str| status_number(&status, k).unwrap_or(0.0);
                    o.notes.push(format!(
                        "the server counted {} resumes: {} recovered, {} not recovered, {} \
                         unknown session; {} messages replayed",
                        n("resume.attempted"),
                        n("resume.recovered"),
                        n("resume.not_recovered"),
                        n("resume.unknown_session"),
                        n("resume.replayed")
                    ));
                }
            }
            _ => {}
        }
    }
}

/// Splits command-line flags into `(name, tokens)` groups: `--name value`,
/// `--name=value` and a bare `--switch` each make one group.
fn flag_groups(args: &[String]) -> Vec<(String, Vec<String>)> {
    let mut groups: Vec<(String, Vec<String>)> = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        let name = arg.split('=').next().unwrap_or(arg).to_owned();
        let mut tokens = vec![arg.clone()];
        let takes_next = arg.starts_with("--")
            && !arg.contains('=')
            && args.get(i + 1).is_some_and(|next| !next.starts_with("--"));
        if takes_next {
            tokens.push(args[i + 1].clone());
            i += 1;
        }
        groups.push((name, tokens));
        i += 1;
    }
    groups
}

/// `base` with the flags of `overrides` replacing those of the same name
/// (janus-server refuses a flag given twice), new ones appended.
fn merge_flags(base: &[String], overrides: &[String]) -> Vec<String> {
    let over = flag_groups(overrides);
    let mut out: Vec<String> = flag_groups(base)
        .into_iter()
        .filter(|(name, _)| !over.iter().any(|(o, _)| o == name))
        .flat_map(|(_, tokens)| tokens)
        .collect();
    out.extend(over.into_iter().flat_map(|(_, tokens)| tokens));
    out
}

/// The trimmed stdout of a command, if it ran and succeeded.
fn command_output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .filter(|s| !s.is_empty())
}

/// Now, UTC, as `YYYY-MM-DD HH:MM:SS`.
fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format_utc(secs)
}

/// Unix seconds as `YYYY-MM-DD HH:MM:SS` (UTC).
fn format_utc(secs: u64) -> String {
    let time = UNIX_EPOCH + Duration::from_secs(secs);
    humantime::format_rfc3339_seconds(time)
        .to_string()
        .replace('T', " ")
        .trim_end_matches('Z')
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn utc_dates() {
        assert_eq!(format_utc(0), "1970-01-01 00:00:00");
        assert_eq!(format_utc(951_782_400), "2000-02-29 00:00:00");
        assert_eq!(format_utc(1_764_471_234), "2025-11-30 02:53:54");
    }

    fn strings(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn later_flags_replace_earlier_ones() {
        let base = strings(&[
            "--queue-limit",
            "1024",
            "--slow-consumer",
            "disconnect",
            "--verbose",
        ]);
        let over = strings(&["--queue-limit=64", "--test-fanout-delay", "50us"]);
        assert_eq!(
            merge_flags(&base, &over),
            strings(&[
                "--slow-consumer",
                "disconnect",
                "--verbose",
                "--queue-limit=64",
                "--test-fanout-delay",
                "50us"
            ])
        );
        assert_eq!(merge_flags(&base, &[]), base);
    }

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: LoadtestArgs,
    }

    #[test]
    fn flags_parse_including_hyphenated_server_args() {
        let cli = Cli::try_parse_from([
            "x",
            "--quick",
            "--scenario",
            "fanout,train",
            "--scenario=slow",
            "--server-arg",
            "--test-fanout-delay=50us",
            "--server-arg=--queue-limit=8",
            "--clients",
            "100",
        ])
        .unwrap();
        assert!(cli.args.quick);
        assert_eq!(cli.args.scenarios, ["fanout", "train", "slow"]);
        assert_eq!(
            cli.args.server_args,
            ["--test-fanout-delay=50us", "--queue-limit=8"]
        );
        assert_eq!(cli.args.clients, Some(100));
    }
}
