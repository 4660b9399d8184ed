//! The `janus-histo` binary: shows and merges saved latency reports.
//!
//! Flags become a [`ShowConfig`] or [`MergeConfig`]; the work is done by
//! [`janus_histo::command`].

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use janus_core::cli::Worded;
use janus_histo::command::{self, MergeConfig, ShowConfig};

/// The exit statuses, as `--help` shows them.
const EXIT_CODES: &str = "\
Exit status:
  0  success (also when the output is cut short, as by `| head`)
  1  a report could not be read (missing, unreadable, not a report), --bucket
     would print too many rows, or writing the output failed
  2  usage error: bad flags or values, or an output path (--plot, -o) that cannot be written";

/// Show and merge Janus latency histograms.
#[derive(Debug, Parser)]
#[command(name = "janus-histo", version, after_help = EXIT_CODES)]
struct Cli {
    /// What to do.
    #[command(subcommand)]
    command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
enum Command {
    /// Print percentiles, the bucket table and a bar chart of each saved report.
    ///
    /// FILE is a report written by `janus-histo merge -o`, or any JSON object
    /// with a "histogram" field, such as `janus-bot --json` output.
    #[command(after_help = EXIT_CODES)]
    Show {
        /// Bucket width for the table, e.g. 500ms, 2ms, 250us (default: chosen from the data).
        #[arg(long, value_name = "DURATION", value_parser = Worded(parse_bucket), allow_negative_numbers = true)]
        bucket: Option<Duration>,
        /// Also write an SVG plot here (numbered plot-1.svg, plot-2.svg, … for several files).
        #[arg(long, value_name = "FILE.svg")]
        plot: Option<PathBuf>,
        /// Saved reports to show.
        #[arg(value_name = "FILE", required = true)]
        files: Vec<PathBuf>,
    },
    /// Merge the histograms of several saved reports losslessly and show the result.
    #[command(after_help = EXIT_CODES)]
    Merge {
        /// Write the merged report as JSON here.
        #[arg(short, long, value_name = "OUT.json")]
        output: Option<PathBuf>,
        /// Also write an SVG plot of the merged report here.
        #[arg(long, value_name = "FILE.svg")]
        plot: Option<PathBuf>,
        /// Bucket width for the table, e.g. 500ms, 2ms, 250us (default: chosen from the data).
        #[arg(long, value_name = "DURATION", value_parser = Worded(parse_bucket), allow_negative_numbers = true)]
        bucket: Option<Duration>,
        /// Title of the merged report (default: "merged N reports").
        #[arg(long)]
        title: Option<String>,
        /// Saved reports to merge.
        #[arg(value_name = "FILE", required = true)]
        files: Vec<PathBuf>,
    },
}

/// Parses `--bucket`.
fn parse_bucket(s: &str) -> Result<Duration, String> {
    janus_histo::parse_duration(s).map_err(|_| {
        "must be a duration from 1us to one hour, such as 500ms, 2ms or 250us".to_owned()
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("janus-histo: error: {err:#}");
            // A bad output path is a usage error (2), as for every Janus binary.
            let usage = err.chain().any(|cause| {
                cause
                    .downcast_ref::<janus_histo::HistoError>()
                    .is_some_and(janus_histo::HistoError::is_usage)
            });
            ExitCode::from(if usage { 2 } else { 1 })
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    let written = match cli.command {
        Command::Show {
            bucket,
            plot,
            files,
        } => {
            let config = ShowConfig {
                files,
                bucket,
                plot,
            };
            command::show(&config, &mut out).context("show")?
        }
        Command::Merge {
            output,
            plot,
            bucket,
            title,
            files,
        } => {
            let config = MergeConfig {
                files,
                output,
                plot,
                bucket,
                title,
            };
            command::merge(&config, &mut out).context("merge")?.1
        }
    };
    out.flush().context("writing to stdout")?;
    for path in written {
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// True when the error comes from writing to a closed pipe (`| head`), which
/// is not a failure.
fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
    })
}
