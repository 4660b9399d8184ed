//! Where the admin API runs and how much it may take: its own OS thread
//! with its own single-threaded tokio runtime, a small connection cap, and
//! timeouts on every stage of a request.
//!
//! Nothing an operator's tool (or anyone who can open a TCP connection to
//! the admin port) does here can reach the clients: a listing of a million
//! topics (about 0.15 s of CPU) runs on this thread, not on the runtime
//! workers that read client requests; at most `admin-max-connections` admin connections are
//! open at once — one more is answered `503` and closed at once, so idle
//! connections can never take descriptors the clients need; and a
//! connection that is slow to send its headers (`admin-header-timeout`, also
//! the longest a kept-alive connection may sit between requests), slow to
//! send its body or be answered (`admin-request-timeout`), or makes no
//! progress at all, e.g. never reads its answer (`admin-idle-timeout`), is
//! closed.
//!
//! hyper's own HTTP/1 connection builder does the serving: it is what
//! `axum::serve` uses underneath, but it exposes the header read timeout
//! and graceful shutdown per connection, which `axum::serve` does not.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use super::error::ApiError;
use super::server::{router, AdminState};
use crate::Shared;

/// How long a stopping admin API lets in-flight requests finish.
const DRAIN: Duration = Duration::from_secs(2);

/// The admin API's resource limits (from the `admin-*` settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdminLimits {
    /// Most admin connections open at once.
    pub max_connections: usize,
    /// Most time to receive a request's headers, and to wait for the next
    /// request on a kept-alive connection.
    pub header_timeout: Duration,
    /// Most time to receive a request's body and answer it.
    pub request_timeout: Duration,
    /// Close a connection on which nothing was read or written for this long.
    pub idle_timeout: Duration,
}

impl AdminLimits {
    /// The limits configured for `shared`.
    pub fn of(shared: &Shared) -> Self {
        let c = &shared.config;
        Self {
            max_connections: c.admin_max_connections,
            header_timeout: c.admin_header_timeout,
            request_timeout: c.admin_request_timeout,
            idle_timeout: c.admin_idle_timeout,
        }
    }
}

/// The admin API's thread; see [`spawn`].
#[derive(Debug)]
pub struct AdminThread {
    done: oneshot::Receiver<()>,
}

impl AdminThread {
    /// Waits (at most `grace`) for the thread to finish once its stop token
    /// has been cancelled. A thread still busy after that is left to end
    /// with the process.
    pub async fn join(self, grace: Duration) {
        let _ = tokio::time::timeout(grace, self.done).await;
    }
}

/// Runs the admin API on `listener` on a thread of its own, with its own
/// single-threaded runtime, until `stop` is cancelled; in-flight requests
/// then get [`DRAIN`] to finish. Errors are logged, never returned once
/// running: the admin API failing must not take the message server down.
///
/// # Errors
/// When the listener cannot be detached from the calling runtime or the
/// thread cannot be started.
pub fn spawn(
    listener: TcpListener,
    shared: Arc<Shared>,
    stop: CancellationToken,
) -> io::Result<AdminThread> {
    // A tokio listener belongs to the runtime that registered it; hand the
    // socket itself to the new runtime.
    let listener = listener.into_std()?;
    let (finished, done) = oneshot::channel();
    std::thread::Builder::new()
        .name("janus-admin".into())
        .spawn(move || {
            // The thread keeps the delivery threads' priority on purpose: it
            // takes topic shard locks, and a lower-priority thread preempted
            // while holding one would stall publishes to that shard for as
            // long as the scheduler starves it (measured: 54 ms at nice 10).
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            match runtime {
                Ok(runtime) => runtime.block_on(async move {
                    match TcpListener::from_std(listener) {
                        Ok(listener) => serve(listener, shared, stop).await,
                        Err(e) => tracing::warn!(error = %e, "admin API cannot listen"),
                    }
                }),
                Err(e) => tracing::warn!(error = %e, "admin API cannot start its runtime"),
            }
            let _ = finished.send(());
        })?;
    Ok(AdminThread { done })
}

/// Serves the admin API on `listener` (on the current runtime) until
/// `stop` is cancelled, then gives in-flight requests [`DRAIN`] to finish.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, stop: CancellationToken) {
    let limits = AdminLimits::of(&shared);
    let state = Arc::new(AdminState::new(shared));
    tokio::spawn(state.rates.clone().run(stop.clone()));
    let timeout = limits.request_timeout;
    let app = router(state).layer(axum::middleware::from_fn(move |req, next| {
        request_timeout(timeout, req, next)
    }));
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let tracker = TaskTracker::new();
    let mut last_refusal_log: Option<Instant> = None;
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Out of descriptors (or a connection reset before accept):
                // back off briefly rather than spin.
                tracing::debug!(error = %e, "admin accept error");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            if last_refusal_log.is_none_or(|t| t.elapsed() > Duration::from_secs(5)) {
                tracing::warn!(
                    limit = limits.max_connections,
                    %peer,
                    "admin API at its connection limit: refusing new admin connections"
                );
                last_refusal_log = Some(Instant::now());
            }
            refuse(&stream, limits.max_connections);
            continue;
        };
        tracker.spawn(connection(
            stream,
            peer,
            app.clone(),
            limits,
            stop.clone(),
            permit,
        ));
    }
    drop(listener);
    tracker.close();
    let _ = tokio::time::timeout(DRAIN, tracker.wait()).await;
}

/// Answers `503` without reading the request and closes: the connection
/// holds its descriptor for one non-blocking write.
fn refuse(stream: &TcpStream, limit: usize) {
    let body = format!(
        "{{\"error\":\"busy\",\"reason\":\"the admin API is at its limit of {limit} connections; try again later\"}}"
    );
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    // Best effort: a full socket buffer on a fresh connection means the
    // peer is gone anyway; dropping the stream closes it either way.
    let _ = stream.try_write(answer.as_bytes());
}

/// Serves one admin connection under the limits; the permit is released
/// when it ends.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    limits: AdminLimits,
    stop: CancellationToken,
    _permit: OwnedSemaphorePermit,
) {
    let progress = Arc::new(Progress::new());
    let io = TokioIo::new(Watched {
        inner: stream,
        progress: progress.clone(),
    });
    // Handlers see the peer address as axum's `ConnectInfo`.
    let service = app.map_request(move |mut request: Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        request
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .serve_connection(io, TowerToHyperService::new(service));
    tokio::pin!(conn);
    let mut stopping = false;
    loop {
        let idle_deadline = progress.last() + limits.idle_timeout;
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, %peer, "admin connection ended");
                }
                return;
            }
            () = stop.cancelled(), if !stopping => {
                conn.as_mut().graceful_shutdown();
                stopping = true;
            }
            () = tokio::time::sleep_until(idle_deadline.into()) => {
                if progress.last().elapsed() >= limits.idle_timeout {
                    tracing::debug!(%peer, "closing an idle admin connection");
                    return;
                }
            }
        }
    }
}

/// Answers `408` when a request's body has not arrived and been answered
/// within `limit` (the headers have their own timeout in hyper).
async fn request_timeout(limit: Duration, request: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "timeout",
            format!(
                "the request was not received and answered within {}",
                humantime::format_duration(limit)
            ),
        )
        .into_response(),
    }
}

/// When a connection last moved a byte either way.
#[derive(Debug)]
struct Progress {
    base: Instant,
    /// Milliseconds after `base`.
    last_ms: AtomicU64,
}

impl Progress {
    fn new() -> Self {
        Self {
            base: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.base + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

/// A stream that records every read or write that moved bytes.
struct Watched {
    inner: TcpStream,
    progress: Arc<Progress>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.progress.touch();
        }
        result
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.progress.touch();
        }
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.progress.touch();
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
