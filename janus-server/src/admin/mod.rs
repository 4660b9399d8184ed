//! The admin HTTP API: a small JSON API on its own port (default
//! `127.0.0.1:8082`) that lets operators and `janus-admin` see and steer a
//! running server. `docs/admin-api.md` documents every endpoint.
//!
//! Layout:
//! - [`listener`]: the admin API's own thread and runtime, its connection
//!   cap and timeouts ([`spawn`] is the entry point).
//! - [`server`]: binds the routes together.
//! - [`auth`]: the bearer token, or loopback-only access without one.
//! - [`rates`]: a once-a-second sampler giving rates over the last 10 s.
//! - [`status`], [`topics`], [`sessions`], [`control`]: the handlers.
//! - [`error`]: the JSON error every handler answers with.
//! - [`datetime`]: RFC 3339 timestamps for JSON.
//! - [`ui`]: the operator's web page at `/ui` (embedded, no build step).
//!
//! The API reads atomics and bounded pages: a topic listing holds a shard
//! lock for at most one chunk of entries (see `janus_core::topic`), all of
//! it runs off the runtime that serves clients, and it never touches a
//! connection's socket (a kick or a unicast goes through the session's
//! queue like any delivery).

pub mod auth;
pub mod control;
pub mod datetime;
pub mod error;
pub mod listener;
pub mod rates;
pub mod server;
pub mod sessions;
pub mod status;
pub mod topics;
pub mod ui;

pub use listener::{serve, spawn, AdminLimits, AdminThread};
pub use server::{router, AdminState};
