//! End-to-end tests, one binary with a module per area.

mod admin;
mod binary;
mod bot;
mod broker;
mod browser;
mod cluster;
mod delivery;
mod example;
mod hostile;
mod protocol;
mod resume;
mod server;
mod websocket;
