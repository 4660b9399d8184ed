//! End-to-end tests, one binary with a module per area (STYLE §7).

mod protocol;
mod server;
