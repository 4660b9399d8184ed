//! `janus-bot`: measures a Janus deployment the way the 2009 bot did, but
//! on one clock and at any scale.
//!
//! # Layout
//!
//! A run has one **coordinator** ([`coordinator`]) and one or more
//! **workers** ([`worker`]). The coordinator plans the swarm ([`plan`]),
//! starts worker processes or connects to **agents** ([`agent`]) on other
//! machines, and drives them with the line protocol of [`control`] through
//! [`link`]s. Each worker runs up to ~18,000 subscribing clients in one
//! `mio` event loop, reading frames cheaply ([`frame`]) and counting each
//! client's sequence and each message's latencies ([`tally`]). The
//! coordinator publishes ([`publisher`]), tells the workers each send
//! instant, and merges their results into a [`report::RunReport`].
//!
//! # One clock
//!
//! Latency is receive instant minus send instant, both read on
//! `CLOCK_MONOTONIC` ([`sys::monotonic_ns`]), which every process of one
//! machine shares. Agents on other machines have their own clocks, so their
//! offset is measured by ping-pong and its uncertainty reported ([`clock`]).
//! The server's timestamp is only sanity-checked.
//!
//! The binary's `main` is [`cli::main`].

pub mod agent;
pub mod cli;
pub mod clock;
pub mod control;
pub mod coordinator;
pub mod frame;
pub mod link;
pub mod plan;
pub mod progress;
pub mod publisher;
pub mod report;
pub mod sys;
pub mod tally;
pub mod worker;

pub use coordinator::{run, RunConfig};
pub use report::RunReport;
