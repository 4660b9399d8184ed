//! The housekeeping sweep: everything about a client that depends on time.
//!
//! Rather than a timer per connection (memory and wake-ups for every idle
//! subscriber), one task looks at every session a few times per interval:
//!
//! - **Heartbeat** (protocol P4): a client that has received its first
//!   delivery and was sent nothing for the heartbeat interval gets `PING`.
//!   Before its first delivery it gets none: the 2009 bot crashes on `PING`.
//! - **Idle timeout** (when configured): a client that sent no complete
//!   request for that long is closed. Bytes that never complete a request
//!   do not count as activity, so trickling cannot defeat it.
//! - **Write deadline**: a client whose socket accepted nothing for that long
//!   while the server had something for it is aborted, and everything it
//!   held is freed at once.
//! - **Close grace**: a closing client that does not read its final frame
//!   (a kick, a slow-consumer cut) is aborted after [`CLOSE_GRACE`]; during a
//!   shutdown, a client that makes no progress for [`SHUTDOWN_STALL`] is.
//!
//! The sweep runs on the client runtime but only reads each session's
//! state under its own short lock; it never touches a socket.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use janus_core::Token;
use tokio_util::sync::CancellationToken;

use crate::metrics::{stamp_elapsed, stamp_now};
use crate::outbound::End;
use crate::session::Session;
use crate::Shared;

/// How long a closing client gets to read its final frame.
pub const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// During a shutdown, how long a client may make no write progress before it
/// is aborted (the others keep being written until the shutdown timeout).
pub const SHUTDOWN_STALL: Duration = Duration::from_millis(500);

/// How often the sweep runs while the server shuts down.
const SHUTDOWN_TICK: Duration = Duration::from_millis(100);

/// Sessions looked at per lock of the registry.
const PAGE: usize = 1024;

/// Topic shards whose histories are expired per tick: a full round takes
/// `shards / HISTORY_SHARDS_PER_TICK` ticks, and no tick holds many locks.
const HISTORY_SHARDS_PER_TICK: usize = 8;

/// Runs the sweep until `stop` is cancelled.
pub(crate) async fn run(shared: Arc<Shared>, stop: CancellationToken) {
    let mut ticker = tokio::time::interval(shared.config.sweep_interval());
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut next_shard = 0;
    let mut not_kept = 0;
    loop {
        let tick = async {
            if shared.draining() {
                tokio::time::sleep(SHUTDOWN_TICK).await;
            } else {
                ticker.tick().await;
            }
        };
        tokio::select! {
            () = tick => {
                sweep(&shared);
                not_kept = warn_not_kept(&shared, not_kept);
                if let Some(cluster) = shared.cluster() {
                    let clients = shared.stats.connections.load(Ordering::Relaxed);
                    cluster.broker.set_client_count(clients);
                }
                next_shard = expire_history(&shared, next_shard);
            }
            () = stop.cancelled() => return,
        }
    }
}

/// Says, at most once a sweep, that sessions were not kept for a resume
/// because `max-detached-sessions` were waiting; returns the count so far.
fn warn_not_kept(shared: &Shared, before: u64) -> u64 {
    let now = shared.stats.sessions_not_kept.load(Ordering::Relaxed);
    if now > before {
        tracing::warn!(
            sessions = now - before,
            "sessions that lost their connection were ended at once: max-detached-sessions ({}) \
             already wait for a resume",
            shared.config.max_detached_sessions
        );
    }
    now
}

/// Expires old history in a few topic shards from `from` on (topics left
/// with neither subscribers nor history go); returns where to go on next time.
fn expire_history(shared: &Shared, from: usize) -> usize {
    let topics = &shared.topics;
    let now = crate::metrics::secs_now();
    let mut i = from;
    for _ in 0..HISTORY_SHARDS_PER_TICK.min(topics.shard_count()) {
        topics.sweep_shard(i, |_, stream| stream.expire(now, &shared.history));
        i = (i + 1) % topics.shard_count();
    }
    i
}

/// One pass over every session.
fn sweep(shared: &Shared) {
    let mut after: Option<Token> = None;
    let mut detached = 0u64;
    // Detached before this pass: the pass counts them (if still waiting).
    let before = shared.stats.sessions_detached.load(Ordering::Relaxed);
    loop {
        let page = shared.sessions.page(after, PAGE);
        let now = stamp_now();
        for session in &page {
            detached += u64::from(check(shared, session, now));
        }
        match page.last() {
            Some(last) if page.len() == PAGE => after = Some(last.token),
            _ => break,
        }
    }
    shared.stats.swept_detached(crate::stats::DetachedSweep {
        waiting: detached,
        detached_before: before,
    });
}

/// Looks after one session; returns whether it is detached and still waits
/// for a resume.
fn check(shared: &Shared, session: &Arc<Session>, now: u32) -> bool {
    let config = &shared.config;
    let status = session.outbound.status();
    let stalled =
        |limit: Duration| status.parked && stamp_elapsed(status.parked_since, now) >= limit;
    if let Some(since) = session.detached_since() {
        // Waiting for a resume: nothing is written and no task looks after
        // it; it goes when its TTL is up, or at once if it was closed meanwhile
        // (a kick, a shutdown), since there is nobody to say goodbye to.
        let expired = crate::metrics::millis_now().wrapping_sub(since)
            >= u32::try_from(config.session_ttl.as_millis()).unwrap_or(u32::MAX);
        if expired || status.end != End::Open {
            tracing::debug!(token = %session.token, "detached session ends");
            if expired {
                shared
                    .stats
                    .sessions_expired
                    .fetch_add(1, Ordering::Relaxed);
            }
            shared.forget(session);
            return false;
        }
        return true;
    }
    match status.end {
        End::Open => {
            if stalled(config.write_deadline) {
                tracing::info!(peer = %session.peer, token = %session.token, frames = status.frames,
                    "giving up on a client whose socket accepted nothing for the write deadline");
                shared.give_up_connection(session);
            } else if config
                .idle_timeout
                .is_some_and(|idle| stamp_elapsed(session.last_request(), now) >= idle)
            {
                tracing::debug!(peer = %session.peer, "closing idle connection");
                shared.close_quietly(session);
            } else if (status.delivered_any || session.offsets())
                && status.attached
                && status.frames == 0
                && stamp_elapsed(status.last_write, now) >= config.heartbeat
            {
                shared.push_control(session, session.transport.heartbeat());
            }
        }
        End::Closing => {
            let limit = if shared.draining() {
                SHUTDOWN_STALL.min(CLOSE_GRACE)
            } else {
                CLOSE_GRACE.min(config.write_deadline)
            };
            if stalled(limit) {
                tracing::debug!(peer = %session.peer, "aborting a closing client that does not read");
                shared.abort(session);
            }
        }
        End::Done | End::Aborted => session.wake(),
    }
    false
}
