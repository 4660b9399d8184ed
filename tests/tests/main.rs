//! End-to-end tests, one binary with a module per area (STYLE §7).

mod admin;
mod binary;
mod bot;
mod broker;
mod browser;
mod delivery;
mod example;
mod hostile;
mod protocol;
mod resume;
mod server;
mod websocket;
