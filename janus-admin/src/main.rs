//! `janus-admin`: inspect and steer a running Janus server through its admin
//! HTTP API (see `docs/admin-api.md`), and watch topics as a client.
//!
//! Layout: [`cli`] holds the flags and commands, [`client`] talks HTTP and
//! sorts failures into "the server said no" and "cannot reach the server",
//! `janus_core::api` defines the API's JSON (the server serializes the
//! same types), [`commands`] runs one command and
//! prints a table (or the raw JSON with `--json`), [`format`] holds the
//! table and number formatting, [`top`] is the live terminal view, and
//! [`subscribe`] is an ordinary client on the client port.
//!
//! Exit codes scripts can rely on (the same convention as every Janus
//! binary): 0 done; 1 the operation ran and failed (the server refused the
//! request, or ended a subscription); 2 bad command-line usage (clap's
//! code); 3 cannot connect.

mod cli;
mod client;
mod commands;
mod format;
mod subscribe;
mod top;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

use crate::cli::Cli;
use crate::client::ClientError;

fn main() -> ExitCode {
    // Help and version exit 0, a usage error exits 2.
    let cli = Cli::parse();
    match commands::run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let code = e
                .chain()
                .find_map(|c| c.downcast_ref::<ClientError>())
                .map_or(client::EXIT_REFUSED, ClientError::exit_code);
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
