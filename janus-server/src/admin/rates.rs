//! Rates over the last 10 s: a task samples the counters once a second and
//! keeps 10 s of samples; a reader compares the counters now with the
//! oldest sample. Nothing on the fan-out path knows about it.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::metrics::LatencySnapshot;
use crate::stats::Stats;

/// How far back rates look.
pub const WINDOW: Duration = Duration::from_secs(10);

/// How often the counters are sampled.
const INTERVAL: Duration = Duration::from_secs(1);

/// The counters rates are computed from, at one moment.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Instant,
    published: u64,
    delivered: u64,
    bytes_out: u64,
    latency: LatencySnapshot,
}

impl Sample {
    fn take(stats: &Stats) -> Self {
        Self {
            at: Instant::now(),
            published: stats.messages_published.load(Ordering::Relaxed),
            delivered: stats.deliveries_sent.load(Ordering::Relaxed),
            bytes_out: stats.bytes_out.load(Ordering::Relaxed),
            latency: stats.delivery_latency.snapshot(),
        }
    }
}

/// Rates and latency over the recent window.
#[derive(Debug, Clone, Copy)]
pub struct Recent {
    /// Length of the window actually covered (shorter just after start).
    pub window: Duration,
    /// Messages published per second.
    pub publish_rate: f64,
    /// Deliveries written per second.
    pub delivery_rate: f64,
    /// Bytes written to clients per second.
    pub bytes_out_rate: f64,
    /// The latency observations within the window.
    pub latency: LatencySnapshot,
}

/// The sample history.
#[derive(Debug)]
pub struct Rates {
    stats: Arc<Stats>,
    samples: Mutex<VecDeque<Sample>>,
}

impl Rates {
    /// A history starting with one sample taken now.
    pub fn new(stats: Arc<Stats>) -> Self {
        let first = Sample::take(&stats);
        Self {
            stats,
            samples: Mutex::new(VecDeque::from([first])),
        }
    }

    fn record(&self) {
        let sample = Sample::take(&self.stats);
        let mut samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        samples.push_back(sample);
        while samples
            .front()
            .is_some_and(|s| sample.at.duration_since(s.at) >= WINDOW)
        {
            samples.pop_front();
        }
    }

    /// Samples every second until `stop`.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let mut ticks = tokio::time::interval(INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = ticks.tick() => self.record(),
            }
        }
    }

    /// The counters now against the oldest sample in the window.
    pub fn recent(&self) -> Recent {
        let now = Sample::take(&self.stats);
        let oldest = self
            .samples
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .front()
            .copied()
            .unwrap_or(now);
        let window = now.at.duration_since(oldest.at);
        let secs = window.as_secs_f64();
        let rate = |now: u64, then: u64| {
            if secs < 0.001 {
                0.0
            } else {
                now.saturating_sub(then) as f64 / secs
            }
        };
        Recent {
            window,
            publish_rate: rate(now.published, oldest.published),
            delivery_rate: rate(now.delivered, oldest.delivered),
            bytes_out_rate: rate(now.bytes_out, oldest.bytes_out),
            latency: now.latency.since(&oldest.latency),
        }
    }
}
