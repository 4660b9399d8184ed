//! The live progress display of a run, on stderr.
//!
//! On a terminal it is an `indicatif` bar (connected / subscribed / rate
//! during setup, then deliveries); anywhere else (CI logs, pipes) a plain
//! line is printed every second instead, so logs stay readable.

use std::io::IsTerminal as _;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::control::Progress;

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProgressMode {
    /// A bar on a terminal, plain lines otherwise.
    Auto,
    /// Plain lines, once a second.
    Plain,
    /// Nothing.
    None,
}

/// The display.
#[derive(Debug)]
pub struct Display {
    bar: Option<ProgressBar>,
    plain: bool,
    last_line: Option<Instant>,
    started: Instant,
    last_rate: (Instant, u64),
    rate_text: String,
}

impl Display {
    /// A display for a swarm of `clients`.
    pub fn new(mode: ProgressMode, clients: u64) -> Self {
        let tty = std::io::stderr().is_terminal();
        let bar = (mode == ProgressMode::Auto && tty).then(|| {
            let bar = ProgressBar::with_draw_target(Some(clients), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template("{prefix:>10} [{bar:30}] {pos}/{len} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            bar.set_prefix("subscribed");
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        let now = Instant::now();
        Self {
            plain: mode == ProgressMode::Plain || (mode == ProgressMode::Auto && !tty),
            bar: bar.filter(|b| !b.is_hidden()),
            last_line: None,
            started: now,
            last_rate: (now, 0),
            rate_text: String::new(),
        }
    }

    /// The rate of `count` over the last second or so, as text.
    fn rate(&mut self, count: u64) -> String {
        let now = Instant::now();
        let (then, before) = self.last_rate;
        let dt = now.duration_since(then).as_secs_f64();
        if dt >= 1.0 {
            let rate = count.saturating_sub(before) as f64 / dt;
            self.rate_text = format!("  {rate:.0}/s");
            self.last_rate = (now, count);
        }
        self.rate_text.clone()
    }

    fn plain_due(&mut self) -> bool {
        if !self.plain {
            return false;
        }
        let now = Instant::now();
        if self
            .last_line
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1))
        {
            return false;
        }
        self.last_line = Some(now);
        true
    }

    /// Shows setup counters.
    pub fn setup(&mut self, p: &Progress, clients: u64) {
        let due = self.plain_due();
        if self.bar.is_none() && !due {
            return;
        }
        let rate = self.rate(u64::from(p.subscribed));
        let msg = format!("connected {}  failed {}{rate}", p.connected, p.failed);
        if let Some(bar) = &self.bar {
            bar.set_position(u64::from(p.subscribed));
            bar.set_message(msg);
        } else {
            eprintln!(
                "[{:>6.1}s] setup: subscribed {}/{clients}  {msg}",
                self.started.elapsed().as_secs_f64(),
                p.subscribed
            );
        }
    }

    /// Switches to counting deliveries.
    pub fn start_deliveries(&mut self, expected: u64) {
        self.last_rate = (Instant::now(), 0);
        self.rate_text.clear();
        if let Some(bar) = &self.bar {
            bar.set_prefix("delivered");
            bar.set_length(expected);
            bar.set_position(0);
        }
    }

    /// Shows publishing and delivery counters.
    pub fn deliveries(
        &mut self,
        published: u32,
        messages: u32,
        received: u64,
        expected: u64,
        lost: u32,
    ) {
        let due = self.plain_due();
        if self.bar.is_none() && !due {
            return;
        }
        let rate = self.rate(received);
        let lost = if lost > 0 {
            format!("  disconnected {lost}")
        } else {
            String::new()
        };
        let msg = format!("published {published}/{messages}{rate}{lost}");
        if let Some(bar) = &self.bar {
            bar.set_position(received);
            bar.set_message(msg);
        } else {
            eprintln!(
                "[{:>6.1}s] run: delivered {received}/{expected}  {msg}",
                self.started.elapsed().as_secs_f64()
            );
        }
    }

    /// Prints a line above the bar (or plainly).
    pub fn note(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None if self.plain => eprintln!("{line}"),
            None => {}
        }
    }

    /// Removes the bar.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl Drop for Display {
    /// A run that ends early (an error, Ctrl-C) leaves no half-drawn bar
    /// under the line that says why.
    fn drop(&mut self) {
        if let Some(bar) = &self.bar {
            if !bar.is_finished() {
                bar.finish_and_clear();
            }
        }
    }
}
