//! End-to-end tests, one binary with a module per area.

mod admin;
mod binary;
mod bot;
mod broker;
mod cluster;
mod delivery;
mod example;
mod hostile;
mod protocol;
mod resume;
mod server;
