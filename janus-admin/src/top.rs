//! `janus-admin top`: a live view of rates, connections and the busiest
//! topics, redrawn every interval in the terminal's alternate screen;
//! `q`, Esc or Ctrl-C quits.
//!
//! The terminal is restored however the view ends: a guard undoes raw mode
//! and the alternate screen when dropped (normal exit, error, or unwinding
//! panic), and a panic hook restores it before the panic message prints.
//! A failed refresh is shown in the view and retried; only a server that
//! cannot be reached before the view starts is an error (exit 2).

use std::collections::HashMap;
use std::io::{self, Write};
use std::time::{Duration, Instant};

use anyhow::Context;
use crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use crossterm::style::{Attribute, Print, SetAttribute};
use crossterm::terminal::{self, ClearType};
use crossterm::{cursor, execute, queue};

use crate::client::Client;
use crate::format::{self, clip, Table};
use janus_core::api::{Status, TopicList, TopicSummary};

/// Topics fetched per refresh (the busiest by messages since creation);
/// their rates are computed from one refresh to the next.
const TOPICS_FETCHED: usize = 500;

/// Runs the view until the user quits.
///
/// # Errors
/// When the server cannot be reached at start, or the terminal fails.
pub fn run(client: &Client, interval_s: f64) -> anyhow::Result<()> {
    let interval =
        Duration::try_from_secs_f64(interval_s.max(0.1)).unwrap_or(Duration::from_secs(1));
    let mut view = View::new(client.base().to_owned());
    // Fail plainly (exit 1 or 2) before taking over the terminal.
    view.refresh(client)?;
    let _guard = TerminalGuard::enter().context("cannot set up the terminal")?;
    let mut out = io::stdout();
    loop {
        view.draw(&mut out).context("drawing")?;
        let next = Instant::now() + interval;
        loop {
            let left = next.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            if !event::poll(left).context("reading the keyboard")? {
                break;
            }
            match event::read().context("reading the keyboard")? {
                Event::Key(key) if key.kind != KeyEventKind::Release => {
                    let ctrl_c = key.code == KeyCode::Char('c')
                        && key.modifiers.contains(KeyModifiers::CONTROL);
                    if ctrl_c || matches!(key.code, KeyCode::Char('q' | 'Q') | KeyCode::Esc) {
                        return Ok(());
                    }
                }
                Event::Resize(..) => view.draw(&mut out).context("drawing")?,
                _ => {}
            }
        }
        if let Err(e) = view.refresh(client) {
            view.error = Some(format!("{e:#}"));
        }
    }
}

/// What the view shows, and what it remembers between refreshes.
struct View {
    base: String,
    /// The last `/status`; `None` before the first refresh.
    status: Option<Status>,
    /// The busiest topics of the last refresh.
    topics: Vec<TopicSummary>,
    /// Per-topic rates computed at the last refresh, by name.
    topic_rates: HashMap<String, f64>,
    /// Messages per topic at the previous refresh, and when.
    previous: Option<(Instant, HashMap<String, u64>)>,
    refreshed: Instant,
    error: Option<String>,
}

impl View {
    fn new(base: String) -> Self {
        Self {
            base,
            status: None,
            topics: Vec::new(),
            topic_rates: HashMap::new(),
            previous: None,
            refreshed: Instant::now(),
            error: None,
        }
    }

    fn refresh(&mut self, client: &Client) -> anyhow::Result<()> {
        let (status, _): (Status, _) = client.json("GET", "/status", None)?;
        let path = format!("/topics?sort=published&limit={TOPICS_FETCHED}");
        let (topics, _): (TopicList, _) = client.json("GET", &path, None)?;
        let now = Instant::now();
        let counts: HashMap<String, u64> = topics
            .topics
            .iter()
            .map(|t| (t.name.clone(), t.published))
            .collect();
        self.topic_rates.clear();
        if let Some((then, before)) = &self.previous {
            let secs = now.duration_since(*then).as_secs_f64().max(0.001);
            for (name, n) in &counts {
                // A topic that was recreated since starts again from zero.
                let was = before.get(name).copied().filter(|b| b <= n).unwrap_or(0);
                self.topic_rates
                    .insert(name.clone(), (n - was) as f64 / secs);
            }
        }
        self.previous = Some((now, counts));
        self.status = Some(status);
        self.topics = topics.topics;
        self.refreshed = now;
        self.error = None;
        Ok(())
    }

    /// The screen as lines.
    fn lines(&self, width: usize, height: usize) -> Vec<(String, bool)> {
        let Some(s) = &self.status else {
            return Vec::new();
        };
        let state = if s.draining {
            "DRAINING"
        } else if s.ready {
            "ready"
        } else {
            "starting"
        };
        let mut lines = vec![
            (
                format!(
                    "janus-server {} at {}  up {}  {state}",
                    s.version,
                    self.base,
                    format::duration(s.uptime_s)
                ),
                true,
            ),
            (
                format!(
                    "connections {} (peak {}, capacity {})   sessions {}   topics {}   subscriptions {}",
                    format::count(s.connections),
                    format::count(s.connections_peak),
                    format::count(s.capacity),
                    format::count(s.sessions),
                    format::count(s.topics),
                    format::count(s.subscriptions)
                ),
                false,
            ),
            (
                format!(
                    "publish {}   deliver {}   out {}/s   latency p50 {} p99 {}   (last {:.0} s)",
                    format::rate(s.publish_rate),
                    format::rate(s.delivery_rate),
                    format::bytes(s.bytes_out_rate),
                    format::latency(s.delivery_latency.p50_ms),
                    format::latency(s.delivery_latency.p99_ms),
                    s.rate_window_s
                ),
                false,
            ),
            (
                format!(
                    "published {}   delivered {}   dropped {}   slow consumers {}   errors {}",
                    format::count(s.messages_published),
                    format::count(s.deliveries_sent),
                    format::count(s.deliveries_dropped),
                    format::count(s.slow_consumers),
                    format::errors(&s.errors)
                ),
                false,
            ),
            (
                match &self.error {
                    Some(e) => format!("! {e} (retrying)"),
                    None => String::new(),
                },
                false,
            ),
        ];
        let mut busiest: Vec<_> = self.topics.iter().collect();
        let rate_of = |name: &str| self.topic_rates.get(name).copied().unwrap_or(0.0);
        busiest.sort_by(|a, b| {
            rate_of(&b.name)
                .total_cmp(&rate_of(&a.name))
                .then(b.published.cmp(&a.published))
                .then(b.subscribers.cmp(&a.subscribers))
        });
        let rows = height.saturating_sub(lines.len() + 2);
        let mut table = Table::new(&["TOPIC", ">MSG/S", ">SUBSCRIBERS", ">PUBLISHED"]);
        for t in busiest.iter().take(rows) {
            table.row(vec![
                t.name.clone(),
                format!("{:.1}", rate_of(&t.name)),
                format::count(t.subscribers),
                format::count(t.published),
            ]);
        }
        let mut table_lines = table.lines(width).into_iter();
        if let Some(header) = table_lines.next() {
            lines.push((header, true));
        }
        lines.extend(table_lines.map(|l| (l, false)));
        if busiest.is_empty() {
            lines.push(("(no topics)".to_owned(), false));
        }
        lines
    }

    fn draw(&self, out: &mut impl Write) -> io::Result<()> {
        let (cols, rows) = terminal::size().unwrap_or((80, 24));
        let (width, height) = (usize::from(cols), usize::from(rows));
        queue!(out, terminal::Clear(ClearType::All))?;
        let body = self.lines(width, height);
        for (row, (line, bold)) in body.iter().enumerate().take(height.saturating_sub(1)) {
            let row = u16::try_from(row).unwrap_or(u16::MAX);
            queue!(out, cursor::MoveTo(0, row))?;
            if *bold {
                queue!(out, SetAttribute(Attribute::Reverse))?;
            }
            queue!(out, Print(clip(line, width)))?;
            if *bold {
                queue!(out, SetAttribute(Attribute::Reset))?;
            }
        }
        let footer = format!(
            "q quit   refreshed {:.0}s ago",
            self.refreshed.elapsed().as_secs_f64()
        );
        queue!(
            out,
            cursor::MoveTo(0, rows.saturating_sub(1)),
            SetAttribute(Attribute::Dim),
            Print(clip(&footer, width)),
            SetAttribute(Attribute::Reset)
        )?;
        out.flush()
    }
}

/// Raw mode and the alternate screen while alive; restored on drop.
struct TerminalGuard;

impl TerminalGuard {
    fn enter() -> io::Result<Self> {
        terminal::enable_raw_mode()?;
        // From here on, dropping the guard restores the terminal.
        let guard = TerminalGuard;
        execute!(io::stdout(), terminal::EnterAlternateScreen, cursor::Hide)?;
        let default_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore();
            default_hook(info);
        }));
        Ok(guard)
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        restore();
    }
}

/// Leaves the alternate screen and raw mode; harmless if already done.
fn restore() {
    let _ = execute!(io::stdout(), cursor::Show, terminal::LeaveAlternateScreen);
    let _ = terminal::disable_raw_mode();
}
