//! The `janus-bot` binary; everything lives in the library (see [`janus_bot::cli`]).

#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    janus_bot::cli::main()
}
