//! The HTTP side: one blocking request at a time, with the bearer token,
//! and every failure sorted into "the server said no" (exit 1) or "cannot
//! reach the server" (exit 3). A Janus client port mistaken for the admin
//! API is recognised by its hello and named as such.

use std::fmt;
use std::io::Read;
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Deserialize;

/// Why a request failed, as scripts see it.
#[derive(Debug)]
pub enum ClientError {
    /// The server answered with an error status.
    Refused {
        /// HTTP status.
        status: u16,
        /// The reason the server gave, or the status text.
        reason: String,
    },
    /// The client port answered with a Janus error frame, or closed the
    /// connection (`janus-admin subscribe`).
    Protocol {
        /// The error code (`bad_topic`, …), or `closed`.
        code: String,
        /// The reason the server gave.
        reason: String,
    },
    /// No usable answer: connection refused, DNS, timeout, bad URL, garbled
    /// reply, or something other than what was asked for on that port.
    Unreachable {
        /// What was tried, e.g. "the admin API at http://127.0.0.1:8082".
        target: String,
        /// What went wrong.
        reason: String,
    },
}

/// Exit code when the operation ran and failed (the server said no).
pub const EXIT_REFUSED: u8 = 1;
/// Exit code when the server cannot be reached (or is not what was asked for).
pub const EXIT_UNREACHABLE: u8 = 3;

impl ClientError {
    /// The process exit code for this failure.
    pub fn exit_code(&self) -> u8 {
        match self {
            ClientError::Refused { .. } | ClientError::Protocol { .. } => EXIT_REFUSED,
            ClientError::Unreachable { .. } => EXIT_UNREACHABLE,
        }
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Refused { status, reason } => {
                write!(f, "the server said no ({status}): {reason}")
            }
            ClientError::Protocol { code, reason } => {
                write!(f, "the server said no ({code}): {reason}")
            }
            ClientError::Unreachable { target, reason } => {
                write!(f, "cannot reach {target}: {reason}")
            }
        }
    }
}

impl std::error::Error for ClientError {}

/// The API's error body.
#[derive(Deserialize)]
struct ErrorBody {
    error: String,
    reason: String,
}

/// A client for one server.
pub struct Client {
    agent: ureq::Agent,
    base: String,
    token: Option<String>,
    timeout: Duration,
}

/// Largest response read (a 10,000-session page is a few MB).
const MAX_BODY: u64 = 64 * 1024 * 1024;

impl Client {
    /// A client for the API at `server` (`http://host:port`; a bare
    /// `host:port` gets `http://`).
    pub fn new(server: &str, token: Option<String>, timeout: Duration) -> Self {
        let mut base = server.trim().trim_end_matches('/').to_owned();
        if !base.contains("://") {
            base = format!("http://{base}");
        }
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(timeout))
            .build()
            .into();
        Self {
            agent,
            base,
            token: token.filter(|t| !t.is_empty()),
            timeout,
        }
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    fn unreachable(&self, reason: impl fmt::Display) -> ClientError {
        let reason = match janus_client_port(&self.base, self.timeout) {
            Some(addr) => format!(
                "{addr} is a Janus client port (it sent a Janus hello, not an HTTP answer); \
                 the admin API is a different port, by default http://127.0.0.1:8082 \
                 (--server or JANUS_ADMIN_URL)"
            ),
            None => reason.to_string(),
        };
        self.unreachable_because(reason)
    }

    fn unreachable_because(&self, reason: impl fmt::Display) -> ClientError {
        ClientError::Unreachable {
            target: format!("the admin API at {}", self.base),
            reason: reason.to_string(),
        }
    }

    /// A request that got no HTTP answer. Only an answer that is not HTTP
    /// at all may come from a Janus client port, so only then is the port
    /// probed for a hello; a timeout or a refused connection is said as is.
    fn no_answer(&self, e: &ureq::Error) -> ClientError {
        match e {
            ureq::Error::Timeout(_) => self.unreachable_because(format!(
                "no answer within {} (--timeout)",
                seconds(self.timeout)
            )),
            ureq::Error::Io(io)
                if matches!(
                    io.kind(),
                    std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::TimedOut
                ) =>
            {
                self.unreachable_because(io)
            }
            ureq::Error::HostNotFound | ureq::Error::ConnectionFailed | ureq::Error::BadUri(_) => {
                self.unreachable_because(describe(e))
            }
            _ => self.unreachable(describe(e)),
        }
    }

    /// Sends one request and returns the body of a 2xx answer.
    ///
    /// # Errors
    /// [`ClientError::Refused`] for any other status, [`ClientError::Unreachable`]
    /// when there is no usable answer.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<String, ClientError> {
        let url = format!("{}{path}", self.base);
        let auth = self.token.as_ref().map(|t| format!("Bearer {t}"));
        let result = match method {
            "GET" | "DELETE" => {
                let mut req = if method == "GET" {
                    self.agent.get(&url)
                } else {
                    self.agent.delete(&url)
                };
                if let Some(auth) = &auth {
                    req = req.header("Authorization", auth);
                }
                req.call()
            }
            _ => {
                let mut req = self.agent.post(&url);
                if let Some(auth) = &auth {
                    req = req.header("Authorization", auth);
                }
                match body {
                    // Compact, not `send_json`: that pretty-prints, and the
                    // server forwards `data` to clients exactly as written.
                    Some(json) => req
                        .header("Content-Type", "application/json")
                        .send(json.to_string()),
                    None => req.send_empty(),
                }
            }
        };
        let mut response = result.map_err(|e| self.no_answer(&e))?;
        let status = response.status();
        let text = response
            .body_mut()
            .with_config()
            .limit(MAX_BODY)
            .read_to_string()
            .map_err(|e| match e {
                ureq::Error::Timeout(_) => self.no_answer(&e),
                e => self.unreachable(format!("reading the answer: {}", describe(&e))),
            })?;
        if status.is_success() {
            return Ok(text);
        }
        let reason = match (status.as_u16(), serde_json::from_str::<ErrorBody>(&text)) {
            (401, _) => "wrong or missing admin token (--token or JANUS_ADMIN_TOKEN)".to_owned(),
            (_, Ok(body)) => format!("{}: {}", body.error, body.reason),
            _ => {
                // The admin API explains every refusal in JSON: an answer
                // without that comes from something else on that port.
                let first = text.lines().next().unwrap_or("").trim();
                let label = status.canonical_reason().unwrap_or("error");
                let answer = if first.is_empty() {
                    format!("{} {label}", status.as_u16())
                } else {
                    format!("{} {label}: {}", status.as_u16(), truncate(first, 80))
                };
                return Err(self.unreachable_because(format!(
                    "the answer to {path} ({answer}) is not from a Janus admin API; check \
                     --server (or JANUS_ADMIN_URL): the admin API is by default \
                     http://127.0.0.1:8082"
                )));
            }
        };
        Err(ClientError::Refused {
            status: status.as_u16(),
            reason,
        })
    }

    /// Sends a request and decodes a 2xx JSON answer.
    ///
    /// # Errors
    /// As [`Client::request`]; a body that is not the expected JSON counts
    /// as unreachable (something else answers on that port).
    pub fn json<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<(T, String), ClientError> {
        let text = self.request(method, path, body)?;
        let value = serde_json::from_str(&text)
            .map_err(|e| self.unreachable(format!("unexpected answer to {path}: {e}")))?;
        Ok((value, text))
    }
}

/// If the host and port of `base` greet a fresh connection with a Janus
/// hello (`{"timestamp":[...],"token":...}` then SOH), that address.
///
/// An HTTP server says nothing until it gets a request, so one short read
/// tells the two apart; this runs only after a request already failed.
fn janus_client_port(base: &str, timeout: Duration) -> Option<String> {
    let authority = base.split_once("://").map_or(base, |(_, rest)| rest);
    let authority = authority.split(['/', '?']).next()?;
    let addr = authority.to_socket_addrs().ok()?.next()?;
    let wait = timeout.clamp(Duration::from_millis(1), Duration::from_secs(2));
    let mut stream = TcpStream::connect_timeout(&addr, wait).ok()?;
    stream.set_read_timeout(Some(wait)).ok()?;
    let mut buf = [0u8; 128];
    let mut len = 0;
    while len < buf.len() {
        match stream.read(&mut buf[len..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => len += n,
        }
        if buf[..len].contains(&0x01) {
            break;
        }
    }
    let hello = &buf[..len];
    (hello.starts_with(b"{\"timestamp\":[") && hello.windows(8).any(|w| w == b"\"token\":"))
        .then(|| authority.to_owned())
}

/// `d` as an operator writes it: "1 s", "2.5 s", "300 ms".
fn seconds(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{} ms", d.as_millis())
    } else {
        format!("{} s", d.as_secs_f64())
    }
}

/// At most `max` characters of `text`, with an ellipsis if cut.
fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

/// A short description of a transport error.
fn describe(e: &ureq::Error) -> String {
    match e {
        ureq::Error::Io(io) => io.to_string(),
        other => other.to_string(),
    }
}

/// Percent-encodes one path segment or query value (everything but the
/// unreserved characters of RFC 3986).
pub fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_encoding() {
        assert_eq!(encode("news/a b"), "news%2Fa%20b");
        assert_eq!(encode("é"), "%C3%A9");
        assert_eq!(encode("A-z_0.9~"), "A-z_0.9~");
    }

    #[test]
    fn exit_codes() {
        let refused = ClientError::Refused {
            status: 404,
            reason: "x".into(),
        };
        let unreachable = ClientError::Unreachable {
            target: "u".into(),
            reason: "r".into(),
        };
        assert_eq!((refused.exit_code(), unreachable.exit_code()), (1, 3));
    }
}
