//! The upkeep task: announces the node in Redis (a presence record with a
//! TTL, refreshed periodically) and keeps the session registry (token →
//! node) in step with the sessions this node holds, in pipelined batches.
//!
//! Both are rewritten in full after every reconnect, since a restarted Redis
//! has lost them; in between, only changes are written, and registrations
//! are refreshed every third of their TTL so that those of a node that died
//! expire by themselves.

use std::sync::Arc;
use std::time::{Duration, Instant};

use janus_core::Token;

use super::backplane::{lock, Inner, SessionBook};
use super::Unavailable;

/// Session keys written per pipeline.
const SESSIONS_PER_PIPELINE: usize = 500;

/// Milliseconds of `d`, for `PX`.
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Runs until shutdown.
pub(crate) async fn run(inner: Arc<Inner>) {
    let interval = inner.options.presence_interval;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut announced: Option<(u64, Instant)> = None;
    loop {
        tokio::select! {
            () = inner.shutdown.cancelled() => return,
            _ = tick.tick() => {}
            () = inner.upkeep_wake.notified() => {}
        }
        let Ok((generation, _)) = inner.connection() else {
            continue;
        };
        let due = announced.is_none_or(|(g, at)| g != generation || at.elapsed() >= interval);
        if due {
            match announce(&inner).await {
                Ok(()) => announced = Some((generation, Instant::now())),
                Err(e) => tracing::debug!(error = %e, "presence not refreshed"),
            }
        }
        if let Err(e) = sync_sessions(&inner, generation).await {
            tracing::debug!(error = %e, "session registry not written");
        }
    }
}

/// Writes this node's presence record and adds it to the node set.
async fn announce(inner: &Inner) -> Result<(), Unavailable> {
    let record = serde_json::to_string(&inner.node_info())
        .map_err(|e| Unavailable::new(format!("presence record: {e}")))?;
    let pipe = presence(inner, Some(&record));
    inner
        .run(|mut c| async move { pipe.exec_async(&mut c).await })
        .await
}

/// The commands that write this node's presence `record`, or remove it.
fn presence(inner: &Inner, record: Option<&str>) -> redis::Pipeline {
    let key = inner.keys.node(&inner.node_id);
    let set = inner.keys.nodes();
    let mut pipe = redis::pipe();
    match record {
        Some(record) => pipe
            .cmd("SET")
            .arg(&key)
            .arg(record)
            .arg("PX")
            .arg(millis(inner.options.presence_ttl))
            .ignore()
            .cmd("SADD"),
        None => pipe.cmd("DEL").arg(&key).ignore().cmd("SREM"),
    }
    .arg(&set)
    .arg(&inner.node_id)
    .ignore();
    pipe
}

/// What to write to the session registry.
struct SessionWrites {
    /// Sessions new on this node: registered whatever the key says (a
    /// session resumed here moves here).
    claim: Vec<Token>,
    /// Sessions to refresh: registered only if no other node claimed them
    /// since, and their TTL extended.
    refresh: Vec<Token>,
    /// Sessions gone from this node: released if still registered to it.
    release: Vec<Token>,
    /// Whether `refresh` holds every live session (then a success counts as
    /// a full write in this generation).
    full: bool,
}

/// Takes what must be written now from the session book.
fn take_writes(inner: &Inner, generation: u64) -> SessionWrites {
    let mut book = lock(&inner.sessions);
    let refresh_due = book
        .refreshed
        .is_none_or(|at| at.elapsed() >= inner.options.session_ttl / 3);
    let full = book.synced_generation != generation || refresh_due;
    let claim = std::mem::take(&mut book.added);
    let release = std::mem::take(&mut book.removed);
    let refresh = if full {
        book.live.difference(&claim).copied().collect()
    } else {
        Vec::new()
    };
    SessionWrites {
        claim: claim.into_iter().collect(),
        refresh,
        release: release.into_iter().collect(),
        full,
    }
}

/// Writes session changes (or all sessions, after a reconnect or when the
/// refresh is due).
async fn sync_sessions(inner: &Inner, generation: u64) -> Result<(), Unavailable> {
    let writes = take_writes(inner, generation);
    if writes.claim.is_empty() && writes.release.is_empty() && !writes.full {
        return Ok(());
    }
    let result = write_sessions(inner, &writes).await;
    let mut book = lock(&inner.sessions);
    match result {
        Ok(()) => {
            if writes.full {
                book.synced_generation = generation;
                book.refreshed = Some(Instant::now());
            }
            Ok(())
        }
        Err(e) => {
            // Try again on the next round (the full write too, since the
            // generation did not advance), unless the session changed since.
            for token in writes.claim {
                if book.live.contains(&token) {
                    book.added.insert(token);
                }
            }
            for token in writes.release {
                if !book.live.contains(&token) && book.removed.len() < SessionBook::MAX_REMOVED {
                    book.removed.insert(token);
                }
            }
            Err(e)
        }
    }
}

async fn write_sessions(inner: &Inner, writes: &SessionWrites) -> Result<(), Unavailable> {
    let ttl = millis(inner.options.session_ttl);
    let node = inner.node_id.as_str();
    for chunk in writes.claim.chunks(SESSIONS_PER_PIPELINE) {
        let mut pipe = redis::pipe();
        for token in chunk {
            pipe.cmd("SET")
                .arg(inner.keys.session(*token))
                .arg(node)
                .arg("PX")
                .arg(ttl)
                .arg("GET");
        }
        let before: Vec<Option<String>> = inner
            .run(|mut c| async move { pipe.query_async(&mut c).await })
            .await?;
        retire_elsewhere(inner, chunk, &before).await?;
    }
    for chunk in writes.refresh.chunks(SESSIONS_PER_PIPELINE) {
        let mut pipe = redis::pipe();
        for token in chunk {
            let key = inner.keys.session(*token);
            pipe.cmd("SET")
                .arg(&key)
                .arg(node)
                .arg("PX")
                .arg(ttl)
                .arg("NX")
                .ignore()
                .cmd("PEXPIRE")
                .arg(&key)
                .arg(ttl)
                .ignore();
        }
        inner
            .run(|mut c| async move { pipe.exec_async(&mut c).await })
            .await?;
    }
    release(inner, &writes.release).await
}

/// A session claimed here that another node held before was resumed here
/// (protocol X1, offset form) by a client that left that node: tells that
/// node to end its copy, which would otherwise wait out its session TTL
/// queueing deliveries for nobody. `before` is each token's previous owner.
async fn retire_elsewhere(
    inner: &Inner,
    tokens: &[Token],
    before: &[Option<String>],
) -> Result<(), Unavailable> {
    let mut pipe = redis::pipe();
    let mut any = false;
    for (token, owner) in tokens.iter().zip(before) {
        if let Some(owner) = owner.as_deref().filter(|o| *o != inner.node_id) {
            let command = super::codec::NodeCommand::Retire { token: *token };
            pipe.cmd("PUBLISH")
                .arg(inner.keys.inbox(owner))
                .arg(command.encode())
                .ignore();
            any = true;
        }
    }
    if any {
        inner
            .run(|mut c| async move { pipe.exec_async(&mut c).await })
            .await?;
    }
    Ok(())
}

/// Releases sessions registered to this node.
async fn release(inner: &Inner, tokens: &[Token]) -> Result<(), Unavailable> {
    for chunk in tokens.chunks(SESSIONS_PER_PIPELINE) {
        let mut pipe = redis::pipe();
        for token in chunk {
            pipe.invoke_script(
                inner
                    .scripts
                    .release
                    .key(inner.keys.session(*token))
                    .arg(&inner.node_id),
            )
            .ignore();
        }
        inner
            .run(|mut c| async move { pipe.exec_async(&mut c).await })
            .await?;
    }
    Ok(())
}

/// Removes this node's presence record and session registrations (on a
/// clean shutdown).
pub(crate) async fn withdraw(inner: &Inner) -> Result<(), Unavailable> {
    let pipe = presence(inner, None);
    inner
        .run(|mut c| async move { pipe.exec_async(&mut c).await })
        .await?;
    let live: Vec<Token> = lock(&inner.sessions).live.iter().copied().collect();
    release(inner, &live).await
}
