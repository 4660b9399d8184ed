//! The scenario file, `xtask/loadtest.toml`: which scenarios exist, their full
//! and `--quick` sizes, and the budgets each size must meet.
//!
//! ```toml
//! [server]
//! args = ["--queue-limit", "1024"]      # every scenario's server gets these
//!
//! [baseline]
//! tolerance = 0.5                       # --baseline fails past 50 % worse
//!
//! [[scenario]]
//! name = "fanout"                       # kind defaults to the name
//! description = "One message to every subscriber."
//! timeout_s = 240
//! [scenario.full]
//! clients = 19000
//! [scenario.full.budget]
//! max_ms = 1500                         # a figure name from `figures`
//! lost = 0
//! [scenario.quick]
//! clients = 5000
//! ```
//!
//! Unknown keys are errors, budgets must name a known figure, and each kind
//! checks that its size has the parameters it needs, so a typo fails the load
//! test at once rather than quietly disabling a check.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use anyhow::{bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};

use crate::figures;

/// The whole scenario file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadtestConfig {
    /// How every scenario's server is started.
    #[serde(default)]
    pub server: ServerConfig,
    /// How `--baseline` judges a run.
    #[serde(default)]
    pub baseline: BaselineConfig,
    /// The scenarios, in the order they run.
    #[serde(rename = "scenario", default)]
    pub scenarios: Vec<Scenario>,
}

/// How every scenario's server is started.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Flags every server gets (after `--listen` and `--admin-listen`).
    #[serde(default)]
    pub args: Vec<String>,
    /// How long the server may take to print `listening on`.
    #[serde(default = "default_startup_timeout")]
    pub startup_timeout_s: f64,
    /// How long the server may take to exit after SIGTERM before SIGKILL.
    #[serde(default = "default_shutdown_timeout")]
    pub shutdown_timeout_s: f64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            args: Vec::new(),
            startup_timeout_s: default_startup_timeout(),
            shutdown_timeout_s: default_shutdown_timeout(),
        }
    }
}

fn default_startup_timeout() -> f64 {
    20.0
}

fn default_shutdown_timeout() -> f64 {
    15.0
}

/// How `--baseline` judges a run.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaselineConfig {
    /// A compared figure more than this fraction worse than the baseline
    /// (and beyond its noise floor) is a regression: 0.5 means 50 % worse.
    pub tolerance: f64,
}

impl Default for BaselineConfig {
    fn default() -> Self {
        Self { tolerance: 0.5 }
    }
}

/// What a scenario does; each kind has its own runner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// One message to every subscriber of one topic.
    Fanout,
    /// A steady train of messages to every subscriber of one topic.
    Train,
    /// Many topics with a few subscribers each.
    Topics,
    /// Clients connecting, subscribing and leaving while messages flow.
    Churn,
    /// Some subscribers never read.
    Slow,
    /// A long run with churn and hostile clients, canary subscribers and a
    /// memory check (never in `--quick`).
    Soak,
    /// A train during which a share of the subscribers drop their
    /// connection and resume (docs/protocol.md, X1).
    Resume,
}

impl Kind {
    /// The kind a scenario named `name` has when the file does not say.
    fn from_name(name: &str) -> Option<Kind> {
        Some(match name {
            "fanout" => Kind::Fanout,
            "train" => Kind::Train,
            "topics" => Kind::Topics,
            "churn" => Kind::Churn,
            "slow" => Kind::Slow,
            "soak" => Kind::Soak,
            "resume" => Kind::Resume,
            _ => return None,
        })
    }

    /// The size parameters this kind needs.
    fn required(self) -> &'static [&'static str] {
        match self {
            Kind::Fanout => &["clients"],
            Kind::Train => &["clients", "messages", "rate"],
            Kind::Topics => &[
                "clients",
                "topics",
                "subscriptions_per_client",
                "messages",
                "rate",
            ],
            Kind::Churn => &["clients", "topics", "churners", "duration_s", "rate"],
            Kind::Slow => &["clients", "slow_percent", "messages", "rate", "payload"],
            Kind::Soak => &["clients", "duration_s", "rate"],
            Kind::Resume => &["clients", "messages", "rate", "resume_percent"],
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Kind::Fanout => "fanout",
            Kind::Train => "train",
            Kind::Topics => "topics",
            Kind::Churn => "churn",
            Kind::Slow => "slow",
            Kind::Soak => "soak",
            Kind::Resume => "resume",
        };
        f.write_str(name)
    }
}

/// One scenario of the file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Name used by `--scenario` and in reports.
    pub name: String,
    /// What it does; defaults to the kind of the same name.
    pub kind: Option<Kind>,
    /// What the scenario shows, for people reading the report.
    pub description: String,
    /// The whole scenario (server start to report) must end within this.
    pub timeout_s: f64,
    /// Extra server flags for this scenario (after `[server] args`).
    #[serde(default)]
    pub server_args: Vec<String>,
    /// The subscribers connect over WebSocket (docs/protocol.md X2): the
    /// server also gets `--ws-listen`, the bot `--transport ws`.
    #[serde(default)]
    pub websocket: bool,
    /// Run a cluster of this many janus-server nodes on one port
    /// (`--reuse-port`), joined by a `redis-server` xtask starts; the bot
    /// spreads its clients over them and publishes each message once
    /// (`--clustered`). Without it: one server, no broker.
    #[serde(default)]
    pub nodes: Option<u16>,
    /// The size of a normal run.
    pub full: Size,
    /// The size of a `--quick` (CI) run; without one, `--quick` skips the
    /// scenario.
    #[serde(default)]
    pub quick: Option<Size>,
}

impl Scenario {
    /// The scenario's kind (checked by [`LoadtestConfig::parse`]).
    pub fn kind(&self) -> Kind {
        self.kind
            .or_else(|| Kind::from_name(&self.name))
            .unwrap_or(Kind::Fanout)
    }

    /// The size to run (`None`: a scenario `--quick` skips).
    pub fn size(&self, quick: bool) -> Option<&Size> {
        if quick {
            self.quick.as_ref()
        } else {
            Some(&self.full)
        }
    }

    /// The sizes the file gives, with their names.
    fn sizes(&self) -> impl Iterator<Item = (&'static str, &Size)> {
        std::iter::once(("full", &self.full)).chain(self.quick.iter().map(|q| ("quick", q)))
    }
}

/// The parameters of one run of a scenario. Each kind uses some of them
/// (see [`Kind::required`]); the rest must be left out.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Size {
    /// Subscribing clients (for `churn`: the steady subscribers).
    pub clients: usize,
    /// Messages published.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub messages: Option<u64>,
    /// Publish rate, messages per second.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
    /// Payload bytes per message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<usize>,
    /// Number of topics.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topics: Option<usize>,
    /// Topics each client subscribes to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subscriptions_per_client: Option<usize>,
    /// Percentage of subscribers that never read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slow_percent: Option<f64>,
    /// How long messages flow (churn).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_s: Option<f64>,
    /// Churn before the memory reference point is taken.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warmup_s: Option<f64>,
    /// Concurrent connect/subscribe/disconnect loops (churn).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub churners: Option<usize>,
    /// How long a churning client stays subscribed, ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hold_ms: Option<u64>,
    /// Soak: stuck readers (subscribe, never read).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stuck: Option<usize>,
    /// Soak: request flooders.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flooders: Option<usize>,
    /// Soak: tricklers (a byte every few seconds, never a whole frame).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tricklers: Option<usize>,
    /// Soak: senders of frames over the server's limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oversized: Option<usize>,
    /// Soak: how long a hostile client keeps at it before it starts again, s.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostile_hold_s: Option<f64>,
    /// Resume: percentage of the subscribers that drop their connection and resume.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resume_percent: Option<f64>,
    /// Resume: how long a resuming subscriber stays away, ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub away_ms: Option<u64>,
    /// `janus-bot --workers`: bot processes sharing the clients.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workers: Option<usize>,
    /// After the last publish, how long deliveries may still take to arrive.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drain_s: Option<f64>,
    /// After every client left, how long the server may take to forget them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub settle_s: Option<f64>,
    /// Figure name to limit: an upper bound for figures where lower is
    /// better, a lower bound for throughput.
    #[serde(default, skip_serializing)]
    pub budget: BTreeMap<String, f64>,
}

impl Size {
    /// Whether parameter `name` is set.
    fn has(&self, name: &str) -> bool {
        match name {
            "clients" => self.clients > 0,
            "messages" => self.messages.is_some(),
            "rate" => self.rate.is_some(),
            "payload" => self.payload.is_some(),
            "topics" => self.topics.is_some(),
            "subscriptions_per_client" => self.subscriptions_per_client.is_some(),
            "slow_percent" => self.slow_percent.is_some(),
            "duration_s" => self.duration_s.is_some(),
            "churners" => self.churners.is_some(),
            "resume_percent" => self.resume_percent.is_some(),
            _ => false,
        }
    }

    /// Messages published, defaulting to one.
    pub fn messages(&self) -> u64 {
        self.messages.unwrap_or(1)
    }

    /// Drain time after the last publish, defaulting to 10 s.
    pub fn drain_s(&self) -> f64 {
        self.drain_s.unwrap_or(10.0)
    }

    /// Settle time after the last client left, defaulting to 10 s.
    pub fn settle_s(&self) -> f64 {
        self.settle_s.unwrap_or(10.0)
    }
}

impl LoadtestConfig {
    /// Reads and checks the scenario file.
    ///
    /// # Errors
    /// Unreadable file, bad TOML, unknown keys, or a scenario that does not add up.
    pub fn load(path: &Path) -> Result<LoadtestConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read scenario file {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("bad scenario file {}", path.display()))
    }

    /// Parses and checks scenario file text.
    ///
    /// # Errors
    /// Bad TOML, unknown keys, or a scenario that does not add up.
    pub fn parse(text: &str) -> Result<LoadtestConfig> {
        let config: LoadtestConfig = toml::from_str(text)?;
        ensure!(!config.scenarios.is_empty(), "no [[scenario]] in the file");
        ensure!(
            config.baseline.tolerance > 0.0,
            "[baseline] tolerance must be positive"
        );
        for (i, s) in config.scenarios.iter().enumerate() {
            ensure!(
                config.scenarios[..i].iter().all(|o| o.name != s.name),
                "scenario {:?} appears twice",
                s.name
            );
            s.check()
                .with_context(|| format!("scenario {:?}", s.name))?;
        }
        Ok(config)
    }

    /// The scenarios named in `names` (all of them when empty), in file order.
    ///
    /// # Errors
    /// A name that is not in the file.
    pub fn select(&self, names: &[String]) -> Result<Vec<&Scenario>> {
        for name in names {
            if !self.scenarios.iter().any(|s| &s.name == name) {
                let known: Vec<&str> = self.scenarios.iter().map(|s| s.name.as_str()).collect();
                bail!("no scenario {name:?}; the file has {}", known.join(", "));
            }
        }
        Ok(self
            .scenarios
            .iter()
            .filter(|s| names.is_empty() || names.contains(&s.name))
            .collect())
    }
}

impl Scenario {
    fn check(&self) -> Result<()> {
        ensure!(
            self.kind.is_some() || Kind::from_name(&self.name).is_some(),
            "say which kind it is (kind = \"fanout\" | \"train\" | \"topics\" | \"churn\" | \"slow\" | \"soak\" | \"resume\")"
        );
        ensure!(self.timeout_s > 0.0, "timeout_s must be positive");
        ensure!(
            self.nodes.is_none_or(|n| (1..=32).contains(&n)),
            "nodes must be 1 to 32"
        );
        ensure!(
            self.kind() != Kind::Soak || self.quick.is_none(),
            "a soak has no [quick] size: it is never part of --quick"
        );
        ensure!(
            self.kind() == Kind::Soak || self.quick.is_some(),
            "[quick] size missing: CI runs every scenario but the soak"
        );
        for (label, size) in self.sizes() {
            for needed in self.kind().required() {
                ensure!(
                    size.has(needed),
                    "[{label}] needs `{needed}` for a {} scenario",
                    self.kind()
                );
            }
            for key in size.budget.keys() {
                ensure!(
                    figures::lookup(key).is_some(),
                    "[{label}.budget] has unknown figure `{key}`; known: {}",
                    figures::FIGURES
                        .iter()
                        .map(|f| f.key)
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            ensure!(
                !size.budget.is_empty(),
                "[{label}.budget] is empty: a scenario without budgets cannot fail"
            );
            if let Some(p) = size.slow_percent {
                ensure!(
                    (0.0..100.0).contains(&p),
                    "[{label}] slow_percent must be in 0..100"
                );
            }
            if let (Some(t), Some(k)) = (size.topics, size.subscriptions_per_client) {
                ensure!(
                    k >= 1 && k <= t,
                    "[{label}] subscriptions_per_client must be between 1 and topics"
                );
            }
            ensure!(
                size.rate.is_none_or(|r| r > 0.0),
                "[{label}] rate must be positive"
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        [[scenario]]
        name = "fanout"
        description = "d"
        timeout_s = 60
        [scenario.full]
        clients = 100
        [scenario.full.budget]
        max_ms = 10
        [scenario.quick]
        clients = 10
        [scenario.quick.budget]
        max_ms = 10
    "#;

    #[test]
    fn minimal_file_parses_with_defaults() {
        let c = LoadtestConfig::parse(MINIMAL).unwrap();
        assert_eq!(c.scenarios[0].kind(), Kind::Fanout);
        assert_eq!(c.scenarios[0].size(true).map(|s| s.clients), Some(10));
        assert_eq!(c.baseline.tolerance, 0.5);
        assert_eq!(c.server.startup_timeout_s, 20.0);
    }

    #[test]
    fn typos_are_errors() {
        let bad_budget = MINIMAL.replacen("max_ms = 10", "max_msec = 10", 1);
        let err = format!("{:#}", LoadtestConfig::parse(&bad_budget).unwrap_err());
        assert!(err.contains("unknown figure `max_msec`"), "{err}");
        let bad_key = MINIMAL.replacen("clients = 100", "clients = 100\nclient = 3", 1);
        assert!(LoadtestConfig::parse(&bad_key).is_err());
        let bad_name = MINIMAL.replacen("\"fanout\"", "\"blast\"", 1);
        let err = format!("{:#}", LoadtestConfig::parse(&bad_name).unwrap_err());
        assert!(err.contains("kind"), "{err}");
    }

    #[test]
    fn kinds_check_their_parameters() {
        let train = MINIMAL.replacen("\"fanout\"", "\"train\"", 1);
        let err = format!("{:#}", LoadtestConfig::parse(&train).unwrap_err());
        assert!(err.contains("needs `messages`"), "{err}");
        let no_budget = MINIMAL.replacen("[scenario.quick.budget]\n        max_ms = 10", "", 1);
        let err = format!("{:#}", LoadtestConfig::parse(&no_budget).unwrap_err());
        assert!(err.contains("cannot fail"), "{err}");
    }

    #[test]
    fn selection_keeps_file_order_and_rejects_unknown_names() {
        let two = format!(
            "{MINIMAL}\n{}",
            MINIMAL.replacen("\"fanout\"", "\"other\"\n        kind = \"fanout\"", 1)
        );
        let c = LoadtestConfig::parse(&two).unwrap();
        let all: Vec<&str> = c
            .select(&[])
            .unwrap()
            .iter()
            .map(|s| s.name.as_str())
            .collect();
        assert_eq!(all, ["fanout", "other"]);
        let one = c.select(&["other".into()]).unwrap();
        assert_eq!(one.len(), 1);
        let err = c.select(&["nope".into()]).unwrap_err().to_string();
        assert!(err.contains("fanout, other"), "{err}");
    }

    #[test]
    fn the_checked_in_file_is_valid() {
        let path = crate::project_root().join("xtask/loadtest.toml");
        let c = LoadtestConfig::load(&path).unwrap();
        let names: Vec<&str> = c.scenarios.iter().map(|s| s.name.as_str()).collect();
        for expected in ["fanout", "train", "topics", "churn", "slow", "soak"] {
            assert!(names.contains(&expected), "missing {expected}");
        }
        for s in &c.scenarios {
            if let Some(q) = &s.quick {
                assert!(q.clients <= s.full.clients, "{}", s.name);
            }
        }
        let soak = c.scenarios.iter().find(|s| s.name == "soak").unwrap();
        assert!(soak.quick.is_none(), "the soak is not part of --quick");
        assert!(
            soak.full.duration_s.unwrap() >= 600.0,
            "a soak lasts 10 minutes"
        );
    }
}
