//! `janus-admin`: inspect and steer a running Janus server through its admin
//! HTTP API (see `docs/admin-api.md`).
//!
//! Layout: [`cli`] holds the flags and commands, [`client`] talks HTTP and
//! sorts failures into "the server said no" and "cannot reach the server",
//! `janus_core::api` defines the API's JSON (the server serializes the
//! same types), [`commands`] runs one command and
//! prints a table (or the raw JSON with `--json`), [`format`] holds the
//! table and number formatting, and [`top`] is the live terminal view.
//!
//! Exit codes scripts can rely on: 0 done; 1 the server refused the request
//! (unknown session, wrong token, bad input); 2 the server could not be
//! reached; 64 bad command-line usage.

mod cli;
mod client;
mod commands;
mod format;
mod top;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

use crate::cli::Cli;
use crate::client::ClientError;

/// Exit code for a command line clap rejects (`EX_USAGE`), kept apart from
/// the 1 and 2 that describe the server's answer.
const EXIT_USAGE: u8 = 64;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { 0 };
            // Printing help or a usage error; nothing better to do if it fails.
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    match commands::run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let code = e
                .chain()
                .find_map(|c| c.downcast_ref::<ClientError>())
                .map_or(1, ClientError::exit_code);
            if is_broken_pipe(&e) {
                // `janus-admin sessions | head` is not an error.
                return ExitCode::SUCCESS;
            }
            let _ = std::io::stdout().flush();
            eprintln!("janus-admin: {e:#}");
            ExitCode::from(code)
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain()
        .filter_map(|c| c.downcast_ref::<std::io::Error>())
        .any(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
}
