//! The `janus-bot` binary; everything lives in the library (see [`janus_bot::cli`]).

fn main() -> std::process::ExitCode {
    janus_bot::cli::main()
}
