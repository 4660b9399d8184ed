//! The WebSocket opening handshake (docs/protocol.md X2), before a
//! connection becomes an ordinary client connection.
//!
//! An accepted WebSocket connection holds a connection slot (the listeners
//! share the capacity) while its handshake is read: at most
//! [`janus_core::ws::MAX_HANDSHAKE`] bytes within `ws-handshake-timeout`. A
//! request that is not a WebSocket upgrade of `/`, comes from an origin the
//! operator did not allow, is too long or too slow is answered with an HTTP
//! error status and closed; nothing about it reaches the rest of the
//! server. After the `101` answer the connection is served like a TCP one
//! (same session, queue, writer threads), with WebSocket frames in place
//! of the P1 terminators.

use std::io;
use std::time::Duration;

use janus_core::ws::{self, Rejection};
use tokio::net::TcpStream;

use crate::Shared;

/// How a handshake failed.
enum Failed {
    /// Answer with this HTTP error, then close.
    Refuse(Rejection),
    /// The client went away: there is nobody to answer.
    Gone,
}

/// Reads and answers the opening handshake. Returns the bytes the client
/// sent after its request (already WebSocket frames), or `None` if the
/// connection was refused or lost (and is done with).
pub(crate) async fn handshake(socket: &TcpStream, shared: &Shared) -> Option<Vec<u8>> {
    let limit = shared.config.ws_handshake_timeout;
    let outcome = tokio::time::timeout(limit, upgrade(socket, shared)).await;
    let failed = match outcome {
        Ok(Ok(input)) => return Some(input),
        Ok(Err(failed)) => failed,
        Err(_) => Failed::Refuse(Rejection::new(
            408,
            format!(
                "the handshake request took longer than {}",
                humantime::format_duration(limit)
            ),
        )),
    };
    if let Failed::Refuse(rejection) = failed {
        tracing::debug!(peer = ?socket.peer_addr().ok(), status = rejection.status,
            reason = %rejection.reason, "WebSocket handshake refused");
        let answer = rejection.response();
        let _ = tokio::time::timeout(Duration::from_secs(1), write_all(socket, &answer)).await;
        let _ = socket2::SockRef::from(socket).shutdown(std::net::Shutdown::Write);
    }
    None
}

/// Reads the request, checks it, and writes the `101` answer.
async fn upgrade(socket: &TcpStream, shared: &Shared) -> Result<Vec<u8>, Failed> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 2048];
    let upgrade = loop {
        socket.readable().await.map_err(|_| Failed::Gone)?;
        match crate::connection::read_once(socket, &mut chunk) {
            Ok(0) => return Err(Failed::Gone),
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                if let Some(upgrade) = ws::accept(&buf).map_err(Failed::Refuse)? {
                    break upgrade;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Err(Failed::Gone),
        }
    };
    if !shared.config.origin_allowed(upgrade.origin.as_deref()) {
        let origin = upgrade.origin.unwrap_or_default();
        return Err(Failed::Refuse(Rejection::new(
            403,
            format!("WebSocket connections from origin {origin:?} are not allowed here"),
        )));
    }
    write_all(socket, &upgrade.response)
        .await
        .map_err(|_| Failed::Gone)?;
    buf.drain(..upgrade.consumed);
    Ok(buf)
}

async fn write_all(socket: &TcpStream, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        socket.writable().await?;
        match socket.try_write(bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
