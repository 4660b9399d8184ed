//! `janus-bot`: measures a Janus deployment the way the 2009 bot did, but
//! on one clock and at any scale. It is the project's one load generator:
//! `cargo xtask loadtest` runs it for every scenario.
//!
//! # Run modes
//!
//! - `run`: N subscribers, a barrier, M messages; one topic or many
//!   (`--topics`, `--subscriptions`), optionally with subscribers that
//!   never read (`--never-read-percent`).
//! - `churn`: `run` while background clients connect, subscribe and leave.
//! - `soak`: `churn` plus hostile clients (stuck readers, request flooders,
//!   tricklers, oversized frames) for ten minutes, the subscribers acting as
//!   canaries, with the server's memory watched (`--server-pid`).
//! - `publish`: one message, in any of the publish forms, including exactly
//!   the 2009 bot's.
//!
//! # Layout
//!
//! A run has one **coordinator** ([`coordinator`]) and one or more
//! **workers** ([`worker`]). The coordinator plans the swarm ([`plan`]),
//! starts worker processes or connects to **agents** ([`agent`]) on other
//! machines, and drives them with the line protocol of [`control`] through
//! [`link`]s. Each worker runs up to ~18,000 clients in one `mio` event
//! loop, reading frames cheaply ([`frame`]) and counting each client's
//! sequence and each message's latencies ([`tally`]); the same loop runs
//! the background clients of `churn` and `soak` in cycles. The
//! coordinator publishes ([`publisher`]), tells the workers each send
//! instant, and merges their results into a [`report::RunReport`]. A
//! target none of whose clients got a Janus hello is probed ([`probe`]) to
//! say what it is instead (an HTTP port, say).
//!
//! # One clock
//!
//! Latency is receive instant minus send instant, both read on
//! `CLOCK_MONOTONIC` ([`sys::monotonic_ns`], through `nix`: the crate has
//! no `unsafe` code), which every process of one
//! machine shares. Agents on other machines have their own clocks, so their
//! offset is measured by ping-pong and its uncertainty reported ([`clock`]).
//! The server's timestamp is only sanity-checked.
//!
//! The binary's `main` is [`cli::main`].

#![forbid(unsafe_code)]

pub mod agent;
pub mod cli;
pub mod clock;
pub mod control;
pub mod coordinator;
pub mod frame;
pub mod link;
pub mod plan;
pub mod probe;
pub mod progress;
pub mod publisher;
pub mod report;
pub mod sys;
pub mod tally;
pub mod worker;

pub use coordinator::{run, run_watched, RunConfig, Watch};
pub use report::RunReport;
