//! Settings of the Redis backplane, with defaults for production and their
//! validation.

use std::net::SocketAddr;
use std::time::Duration;

use super::BrokerError;

/// How a node uses Redis. [`BrokerOptions::default`] suits production;
/// tests shorten the timers.
#[derive(Debug, Clone)]
pub struct BrokerOptions {
    /// Prefix of every key and channel (default `janus:`): several clusters
    /// can share one Redis under different prefixes.
    pub prefix: String,
    /// Messages kept per topic stream (`XADD … MAXLEN`). The default, 6,000,
    /// is a minute of a topic publishing 100 messages a second.
    pub history_size: usize,
    /// How long a topic's history lives: an idle topic's stream and offset
    /// expire this long after its last publish (so its next publish starts
    /// a new epoch), and history reads ignore entries older than this.
    /// `None` keeps history until it is trimmed. Default: 2 minutes.
    pub history_ttl: Option<Duration>,
    /// How long one connection attempt may take.
    pub connect_timeout: Duration,
    /// How long a command (a publish included) may wait for Redis before
    /// the publish is reported unavailable and the link is checked.
    pub command_timeout: Duration,
    /// First wait before reconnecting after a failed attempt; doubles per
    /// failure, with up to 25 % jitter.
    pub reconnect_min: Duration,
    /// Longest wait between reconnection attempts.
    pub reconnect_max: Duration,
    /// How often both connections are pinged, to notice a Redis that hangs
    /// without closing its sockets.
    pub health_interval: Duration,
    /// How often the node refreshes its presence record and its sessions'
    /// registrations.
    pub presence_interval: Duration,
    /// How long a node's presence record lives without a refresh: a node
    /// that stopped refreshing leaves the cluster listing after this.
    pub presence_ttl: Duration,
    /// How long a session registration (token → node) lives without a
    /// refresh; refreshed every third of it while the session lives.
    pub session_ttl: Duration,
    /// Stream entries read per request when catching up after a reconnect.
    pub recovery_page: usize,
    /// The node's admin API address, announced in its presence record.
    pub admin_addr: Option<SocketAddr>,
}

impl Default for BrokerOptions {
    fn default() -> Self {
        BrokerOptions {
            prefix: "janus:".into(),
            history_size: 6_000,
            history_ttl: Some(Duration::from_secs(120)),
            connect_timeout: Duration::from_secs(2),
            command_timeout: Duration::from_secs(2),
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(5),
            health_interval: Duration::from_secs(2),
            presence_interval: Duration::from_secs(2),
            presence_ttl: Duration::from_secs(10),
            session_ttl: Duration::from_secs(300),
            recovery_page: 500,
            admin_addr: None,
        }
    }
}

impl BrokerOptions {
    /// Checks the options.
    ///
    /// # Errors
    /// [`BrokerError::InvalidOptions`] naming the first bad setting.
    pub fn validate(&self) -> Result<(), BrokerError> {
        let bad = |what: &str| Err(BrokerError::InvalidOptions(what.to_owned()));
        if self.prefix.is_empty()
            || self
                .prefix
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || c == '{' || c == '}')
        {
            return bad(
                "the key prefix must be non-empty, without spaces, control characters or braces",
            );
        }
        if self.history_size == 0 {
            return bad("the history size must be at least 1");
        }
        if self.history_ttl.is_some_and(|t| t.as_millis() == 0) {
            return bad("the history TTL must be at least 1 ms (or none)");
        }
        if self.recovery_page == 0 {
            return bad("the recovery page must be at least 1");
        }
        let timers = [
            self.connect_timeout,
            self.command_timeout,
            self.reconnect_min,
            self.health_interval,
            self.presence_interval,
        ];
        if timers.iter().any(Duration::is_zero) {
            return bad("timeouts and intervals must be longer than zero");
        }
        if self.reconnect_max < self.reconnect_min {
            return bad("the longest reconnect wait is shorter than the first");
        }
        if self.presence_ttl <= self.presence_interval {
            return bad("the presence TTL must be longer than the presence interval");
        }
        if self.session_ttl <= self.presence_interval * 3 {
            return bad("the session TTL must be longer than three presence intervals");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_settings_are_named() {
        assert!(BrokerOptions::default().validate().is_ok());
        type Change = fn(&mut BrokerOptions);
        let cases: [(&str, Change); 5] = [
            ("prefix", |o| o.prefix = "a {b}".into()),
            ("history size", |o| o.history_size = 0),
            ("zero", |o| o.health_interval = Duration::ZERO),
            ("reconnect", |o| o.reconnect_max = Duration::from_millis(1)),
            ("presence TTL", |o| o.presence_ttl = o.presence_interval),
        ];
        for (what, change) in cases {
            let mut options = BrokerOptions::default();
            change(&mut options);
            let err = options.validate().unwrap_err().to_string();
            assert!(err.contains(what), "{what}: {err}");
        }
    }
}
