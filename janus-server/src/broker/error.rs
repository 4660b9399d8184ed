//! The backplane's errors, and the redaction of passwords from the Redis
//! URL wherever it is shown.

use janus_core::Token;

/// Why a broker could not be created. Redis being unreachable is not one of
/// them: the node starts anyway and keeps trying (see `Broker::connect`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BrokerError {
    /// The URL is not a Redis URL the client understands.
    #[error("invalid broker URL {url}: {reason}")]
    InvalidUrl {
        /// The URL, password redacted.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The node id cannot name a node in Redis.
    #[error("invalid node id {0:?}: use 1 to 128 characters without spaces or control characters")]
    InvalidNodeId(String),
    /// A setting is out of range.
    #[error("invalid broker settings: {0}")]
    InvalidOptions(String),
}

/// The broker cannot take this request now (Redis is unreachable, slow or
/// refused it). Nothing was half-done: a publish either happened entirely
/// or not at all (protocol P7 `unavailable`), though after a timeout the
/// publisher cannot know which.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the broker is unavailable: {reason}")]
pub struct Unavailable {
    /// What went wrong, for logs and the error frame's reason.
    pub reason: String,
}

impl Unavailable {
    /// An `Unavailable` with this reason.
    pub fn new(reason: impl Into<String>) -> Unavailable {
        Unavailable {
            reason: reason.into(),
        }
    }
}

/// Why a command for a session could not be routed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// No live node holds this session.
    #[error("no node holds session {0}")]
    UnknownSession(Token),
    /// Redis could not be asked.
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
}

/// `url` with the password (if any) replaced by `***`, for logs and status.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_owned();
    };
    // `user@host` names a user without a password.
    let Some((user, _password)) = rest[..at].split_once(':') else {
        return url.to_owned();
    };
    format!("{scheme}://{user}:***{}", &rest[at..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_show() {
        for (url, shown) in [
            ("redis://127.0.0.1:6379", "redis://127.0.0.1:6379"),
            ("redis://:secret@host:1/0", "redis://:***@host:1/0"),
            ("redis://user:secret@host", "redis://user:***@host"),
            ("redis://user:se@cret@host/2", "redis://user:***@host/2"),
            ("rediss://someone@host", "rediss://someone@host"),
            ("not a url", "not a url"),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
        }
    }
}
