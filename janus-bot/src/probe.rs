//! What is listening on a target whose clients got no Janus hello.
//!
//! When no client of a target got past the hello, the coordinator opens one
//! more connection to say what the target is instead: a Janus client port
//! greets every connection with a hello at once (protocol P2); an HTTP port
//! (the admin API, a WebSocket port) says nothing until it gets a request,
//! so after a short silence the probe sends one plain `GET /` and reads the
//! answer. The verdict ends up in the error message (see
//! [`crate::coordinator`]), in the style of `janus-admin subscribe`.

use std::net::SocketAddr;
use std::time::Duration;

use janus_core::{ServerMessage, SERVER_TERMINATOR};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long the probe waits for a greeting before it asks in HTTP.
const GREETING_WAIT: Duration = Duration::from_millis(500);
/// How long it waits for an answer to its HTTP request.
const ANSWER_WAIT: Duration = Duration::from_secs(2);
/// Bytes read at most.
const READ_AT_MOST: usize = 4096;

/// What a probe connection found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Greeting {
    /// It greeted with a Janus hello: a Janus client port.
    Janus,
    /// It answered an HTTP request (or spoke HTTP unasked): the status line.
    Http(String),
    /// It sent these bytes (shown, shortened), neither a hello nor HTTP.
    Other(String),
    /// It closed the connection without a byte.
    Closed,
    /// It accepted the connection and said nothing, even to a request.
    Silent,
    /// The probe could not connect (why).
    NoConnection(String),
}

impl Greeting {
    /// What it says about a target that was supposed to be a Janus client
    /// port (`websocket`: a Janus WebSocket port, `--ws-target`).
    pub fn explain(&self, websocket: bool) -> String {
        let wanted = if websocket {
            "a Janus WebSocket port (janus-server --ws-listen)"
        } else {
            "a Janus client port (default 8081)"
        };
        match self {
            Greeting::Janus if websocket => "a probe connection got a Janus hello without asking: \
                 it is a Janus client port (plain TCP, for --target), not a WebSocket port"
                .to_owned(),
            Greeting::Janus => {
                "a probe connection did get a Janus hello: the server is too slow to greet \
                 (overloaded?) or --timeout is too short"
                    .to_owned()
            }
            Greeting::Http(status) => format!(
                "it answered an HTTP request with {status:?}: it looks like an HTTP port \
                 (the admin API, default 8082, or a WebSocket port), not {wanted}"
            ),
            Greeting::Other(bytes) => {
                format!("it sent {bytes}: it does not look like {wanted}")
            }
            Greeting::Closed => {
                format!("it closes connections without a word: it does not look like {wanted}")
            }
            Greeting::Silent => format!(
                "it says nothing, not even to an HTTP request: it does not look like {wanted}"
            ),
            Greeting::NoConnection(why) => format!("a probe connection failed: {why}"),
        }
    }

    /// Whether the target is a Janus server on the port asked for (only
    /// too slow).
    pub fn is_janus(&self, websocket: bool) -> bool {
        matches!(self, Greeting::Janus) && !websocket
    }
}

/// Connects to `addr` and finds out what it is (see the module docs).
pub async fn probe(addr: SocketAddr, limit: Duration) -> Greeting {
    let mut stream = match tokio::time::timeout(limit, TcpStream::connect(addr)).await {
        Err(_) => {
            return Greeting::NoConnection(format!(
                "no connection within {}",
                humantime::format_duration(limit)
            ))
        }
        Ok(Err(e)) => return Greeting::NoConnection(e.to_string()),
        Ok(Ok(s)) => s,
    };
    let mut buf = Vec::new();
    match read_some(&mut stream, &mut buf, GREETING_WAIT).await {
        Read::Bytes => return classify(&buf),
        Read::Closed => return Greeting::Closed,
        Read::Nothing => {}
    }
    let request = format!("GET / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).await.is_err() {
        return Greeting::Closed;
    }
    match read_some(&mut stream, &mut buf, ANSWER_WAIT).await {
        Read::Bytes => classify(&buf),
        Read::Closed => Greeting::Closed,
        Read::Nothing => Greeting::Silent,
    }
}

enum Read {
    Bytes,
    Closed,
    Nothing,
}

/// Reads into `buf` until a line or frame ends, `READ_AT_MOST` bytes, the
/// end of the stream or `wait`.
async fn read_some(stream: &mut TcpStream, buf: &mut Vec<u8>, wait: Duration) -> Read {
    let deadline = tokio::time::Instant::now() + wait;
    let mut chunk = [0u8; 1024];
    loop {
        let complete = buf.contains(&SERVER_TERMINATOR) || buf.contains(&b'\n');
        if complete || buf.len() >= READ_AT_MOST {
            return Read::Bytes;
        }
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) if buf.is_empty() => return Read::Closed,
            Ok(Ok(0)) | Ok(Err(_)) => return Read::Bytes,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Err(_) if buf.is_empty() => return Read::Nothing,
            Err(_) => return Read::Bytes,
        }
    }
}

/// What the first bytes a target sent say it is.
fn classify(bytes: &[u8]) -> Greeting {
    if bytes.starts_with(b"HTTP/") {
        let line = bytes
            .split(|&c| c == b'\r' || c == b'\n')
            .next()
            .unwrap_or(bytes);
        return Greeting::Http(String::from_utf8_lossy(line).into_owned());
    }
    if let Some(end) = bytes.iter().position(|&b| b == SERVER_TERMINATOR) {
        let hello = std::str::from_utf8(&bytes[..end])
            .ok()
            .and_then(|s| ServerMessage::parse(s).ok());
        if matches!(hello, Some(ServerMessage::Hello { .. })) {
            return Greeting::Janus;
        }
    }
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(80)]).into_owned();
    let more = if bytes.len() > 80 { "…" } else { "" };
    Greeting::Other(format!("{text:?}{more}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_bytes_are_classified() {
        let hello = b"{\"timestamp\":[1764,471234,56789],\"token\":\"0123456789abcdef0123456789abcdef\"}\x01";
        assert_eq!(classify(hello), Greeting::Janus);
        assert_eq!(
            classify(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"),
            Greeting::Http("HTTP/1.1 404 Not Found".into())
        );
        assert_eq!(
            classify(b"SSH-2.0-OpenSSH_9.6\r\n"),
            Greeting::Other("\"SSH-2.0-OpenSSH_9.6\\r\\n\"".into())
        );
        let http = Greeting::Http("HTTP/1.1 404 Not Found".into()).explain(false);
        assert!(http.contains("looks like an HTTP port"), "{http}");
        assert!(http.contains("admin API"), "{http}");
        assert!(Greeting::Janus.is_janus(false));
        assert!(!Greeting::Janus.is_janus(true));
        assert!(Greeting::Janus
            .explain(true)
            .contains("not a WebSocket port"));
    }

    #[tokio::test]
    async fn an_http_port_is_recognized_by_its_answer() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut request = vec![0u8; 1024];
            let n = s.read(&mut request).await.unwrap();
            assert!(request[..n].starts_with(b"GET / HTTP/1.1\r\n"));
            s.write_all(b"HTTP/1.1 404 Not Found\r\n\r\n")
                .await
                .unwrap();
        });
        let found = probe(addr, Duration::from_secs(2)).await;
        assert_eq!(found, Greeting::Http("HTTP/1.1 404 Not Found".into()));
        server.await.unwrap();
    }
}
