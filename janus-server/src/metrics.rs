//! The delivery-latency histogram, and the Prometheus exposition of a
//! server's counters (`GET /metrics` on the admin API).
//!
//! Latency runs from the start of a publish's fan-out (or, for a unicast,
//! from queueing) to the moment the delivery's last byte is handed to the
//! subscriber's socket, so it includes the time the fan-out loop took to
//! reach that subscriber. Costs, measured because this is the hot path:
//! - A clock read costs more than the rest of an enqueue, so the fan-out
//!   reads the clock once per publish and every delivery of it carries that
//!   stamp (`crate::fanout`).
//! - The stamp is a `u32` of microseconds ([`stamp_now`]), which keeps a
//!   queued frame at 40 bytes; an `Instant` made it 56 and the enqueue
//!   measurably slower.
//! - The writer reads the clock once per write and counts the deliveries
//!   it finished into fixed atomic buckets ([`LatencyHistogram`]), one
//!   atomic add per run of deliveries in the same bucket.
//!
//! Nothing here locks or allocates per delivery.
//!
//! The exposition is built at scrape time by a `prometheus-client`
//! [`Collector`] that reads the server's atomics, so the counters themselves
//! stay plain relaxed atomics and every server in a process (tests run
//! several) has its own registry.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, UNIX_EPOCH};

use janus_core::ErrorCode;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use crate::stats::Refusal;
use crate::Shared;

/// Where latency stamps count from: the first stamp taken in the process.
static STAMP_EPOCH: OnceLock<Instant> = OnceLock::new();

/// Now, as a latency stamp: microseconds since [`STAMP_EPOCH`], wrapping
/// every 71 minutes. Only differences of stamps are used.
pub fn stamp_now() -> u32 {
    let micros = STAMP_EPOCH.get_or_init(Instant::now).elapsed().as_micros();
    // Truncation is the wrapping described above.
    micros as u32
}

/// Now, in whole seconds since [`STAMP_EPOCH`] (for time-outs counted in
/// seconds to hours, which latency stamps cannot span).
pub fn secs_now() -> u32 {
    let secs = STAMP_EPOCH.get_or_init(Instant::now).elapsed().as_secs();
    u32::try_from(secs).unwrap_or(u32::MAX)
}

/// Now, in milliseconds since [`STAMP_EPOCH`], wrapping every 49 days (only
/// differences below that are used).
pub fn millis_now() -> u32 {
    let millis = STAMP_EPOCH.get_or_init(Instant::now).elapsed().as_millis();
    // Truncation is the wrapping described above.
    millis as u32
}

/// The time from stamp `from` to stamp `to` (correct below 71 minutes).
pub fn stamp_elapsed(from: u32, to: u32) -> Duration {
    Duration::from_micros(u64::from(to.wrapping_sub(from)))
}

/// Upper bounds of the latency buckets, in nanoseconds: 50 µs to 10 s.
pub const LATENCY_BOUNDS_NS: [u64; 17] = [
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// Number of buckets: one per bound plus the overflow (`+Inf`) bucket.
const BUCKETS: usize = LATENCY_BOUNDS_NS.len() + 1;

/// A fixed-bucket latency histogram updated with relaxed atomics.
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    /// Observations per bucket (not cumulative); the last is `+Inf`.
    counts: [AtomicU64; BUCKETS],
    /// Sum of every observation, in nanoseconds.
    sum_ns: AtomicU64,
}

impl LatencyHistogram {
    /// The bucket an observation of `ns` nanoseconds falls in.
    fn bucket_of(ns: u64) -> usize {
        LATENCY_BOUNDS_NS.partition_point(|&bound| bound < ns)
    }

    /// Records one observation.
    pub fn record(&self, latency: Duration) {
        let ns = duration_ns(latency);
        self.counts[Self::bucket_of(ns)].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// A recorder that gathers a batch of observations (one write's worth)
    /// and adds them to the histogram when dropped.
    pub fn batch(&self) -> LatencyBatch<'_> {
        LatencyBatch {
            histogram: self,
            bucket: 0,
            run: 0,
            sum_ns: 0,
        }
    }

    /// A consistent-enough copy of the counts (each bucket is read once).
    pub fn snapshot(&self) -> LatencySnapshot {
        LatencySnapshot {
            counts: std::array::from_fn(|i| self.counts[i].load(Ordering::Relaxed)),
            sum_ns: self.sum_ns.load(Ordering::Relaxed),
        }
    }
}

fn duration_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Observations gathered during one write; flushed into the histogram on drop.
#[derive(Debug)]
pub struct LatencyBatch<'a> {
    histogram: &'a LatencyHistogram,
    bucket: usize,
    run: u64,
    sum_ns: u64,
}

impl LatencyBatch<'_> {
    /// Adds one observation to the batch.
    pub fn record(&mut self, latency: Duration) {
        let ns = duration_ns(latency);
        let bucket = LatencyHistogram::bucket_of(ns);
        if bucket != self.bucket && self.run > 0 {
            self.flush_run();
        }
        self.bucket = bucket;
        self.run += 1;
        self.sum_ns = self.sum_ns.saturating_add(ns);
    }

    fn flush_run(&mut self) {
        self.histogram.counts[self.bucket].fetch_add(self.run, Ordering::Relaxed);
        self.run = 0;
    }
}

impl Drop for LatencyBatch<'_> {
    fn drop(&mut self) {
        if self.run > 0 {
            self.flush_run();
            self.histogram
                .sum_ns
                .fetch_add(self.sum_ns, Ordering::Relaxed);
        }
    }
}

/// The counts of a [`LatencyHistogram`] at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LatencySnapshot {
    /// Observations per bucket (not cumulative); the last is `+Inf`.
    pub counts: [u64; BUCKETS],
    /// Sum of every observation, in nanoseconds.
    pub sum_ns: u64,
}

impl LatencySnapshot {
    /// Observations in total.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// What was observed between `earlier` and `self`.
    pub fn since(&self, earlier: &LatencySnapshot) -> LatencySnapshot {
        LatencySnapshot {
            counts: std::array::from_fn(|i| self.counts[i].saturating_sub(earlier.counts[i])),
            sum_ns: self.sum_ns.saturating_sub(earlier.sum_ns),
        }
    }

    /// The upper bound of the bucket holding quantile `q` (0..=1), or `None`
    /// without observations. Past the last bound it reports that bound: the
    /// answer is "at least 10 s".
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        // The rank of the observation that holds the quantile, 1-based.
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                let bound = LATENCY_BOUNDS_NS[i.min(LATENCY_BOUNDS_NS.len() - 1)];
                return Some(Duration::from_nanos(bound));
            }
        }
        None
    }

    /// The mean observation, or `None` without observations.
    pub fn mean(&self) -> Option<Duration> {
        let total = self.count();
        (total > 0).then(|| Duration::from_nanos(self.sum_ns / total))
    }

    /// `(upper bound in seconds, observations in that bucket)` pairs, ending
    /// with `+Inf`. Not cumulative: the Prometheus encoder accumulates them.
    pub fn buckets_seconds(&self) -> Vec<(f64, u64)> {
        self.counts
            .iter()
            .enumerate()
            .map(|(i, count)| {
                let bound = LATENCY_BOUNDS_NS
                    .get(i)
                    .map_or(f64::INFINITY, |ns| *ns as f64 / 1e9);
                (bound, *count)
            })
            .collect()
    }
}

/// A Prometheus registry for one server.
#[derive(Debug)]
pub struct Exposition {
    registry: Registry,
}

impl Exposition {
    /// A registry whose only collector reads `shared` at scrape time.
    pub fn new(shared: Arc<Shared>) -> Self {
        let mut registry = Registry::with_prefix("janus");
        registry.register_collector(Box::new(ServerCollector { shared }));
        Self { registry }
    }

    /// The Prometheus text exposition (format 0.0.4).
    ///
    /// # Errors
    /// Only if formatting fails, which writing to a `String` does not.
    pub fn render(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::with_capacity(8 * 1024);
        prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// The `Content-Type` of [`Exposition::render`]'s output.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Reads the server's atomics on every scrape.
#[derive(Debug)]
struct ServerCollector {
    shared: Arc<Shared>,
}

/// Writes one unlabelled counter.
fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    value: u64,
) -> Result<(), std::fmt::Error> {
    encoder
        .encode_descriptor(name, help, unit, MetricType::Counter)?
        .encode_counter::<NoLabelSet, _, u64>(&value, None)
}

/// Writes one unlabelled gauge.
fn gauge<V: prometheus_client::encoding::EncodeGaugeValue>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    value: V,
) -> Result<(), std::fmt::Error> {
    encoder
        .encode_descriptor(name, help, unit, MetricType::Gauge)?
        .encode_gauge(&value)
}

/// Writes one counter with a value per label value: `(name, label)`.
fn labelled_counters<'a>(
    encoder: &mut DescriptorEncoder,
    (name, label): (&str, &str),
    help: &str,
    values: impl IntoIterator<Item = (&'a str, u64)>,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (value, count) in values {
        family
            .encode_family(&[(label, value)])?
            .encode_counter::<NoLabelSet, _, u64>(&count, None)?;
    }
    Ok(())
}

impl Collector for ServerCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let shared = &*self.shared;
        let stats = &*shared.stats;
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let e = &mut encoder;

        encoder_info(e)?;
        let start = shared
            .started_at
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_secs_f64();
        gauge(
            e,
            "start_time",
            "When the server started, in seconds since the Unix epoch.",
            Some(&Unit::Seconds),
            start,
        )?;
        gauge(
            e,
            "ready",
            "1 while the server accepts clients, 0 while starting or draining.",
            None,
            u64::from(shared.is_ready()),
        )?;
        gauge(
            e,
            "connections",
            "Client connections open now.",
            None,
            get(&stats.connections),
        )?;
        gauge(
            e,
            "connections_peak",
            "Most client connections open at once since start.",
            None,
            get(&stats.connections_peak),
        )?;
        gauge(
            e,
            "connection_capacity",
            "Most client connections this server will hold (open-file limit or max-connections).",
            None,
            shared.capacity as u64,
        )?;
        let limits = crate::admin::status::limits(shared);
        gauge(
            e,
            "max_topics",
            "Most topics the server holds at once (max-topics).",
            None,
            limits.max_topics,
        )?;
        if let Some(per_ip) = limits.max_connections_per_ip {
            gauge(
                e,
                "max_connections_per_ip",
                "Most client connections from one address (max-connections-per-ip).",
                None,
                per_ip,
            )?;
        }
        gauge(
            e,
            "admin_max_connections",
            "Most admin API connections at once (admin-max-connections).",
            None,
            limits.admin_max_connections,
        )?;
        if let Some(open_files) = limits.open_files {
            gauge(
                e,
                "open_file_limit",
                "The process's open-file (soft) limit.",
                None,
                open_files,
            )?;
        }
        gauge(
            e,
            "sessions",
            "Live sessions.",
            None,
            shared.sessions.len() as u64,
        )?;
        gauge(
            e,
            "topics",
            "Topics with at least one subscriber.",
            None,
            shared.topics.topic_count() as u64,
        )?;
        gauge(
            e,
            "subscriptions",
            "Subscriptions (topic, session pairs).",
            None,
            shared.topics.subscription_count() as u64,
        )?;
        counter(
            e,
            "connections_accepted",
            "Client connections accepted.",
            None,
            get(&stats.connections_total),
        )?;
        counter(
            e,
            "connections_refused",
            "Client connections refused by any limit (janus_refusals_total says which).",
            None,
            get(&stats.connections_refused),
        )?;
        labelled_counters(
            e,
            ("refusals", "reason"),
            "Connections and subscriptions refused, by the limit that refused them.",
            Refusal::ALL.map(|why| (why.as_str(), stats.refusals(why))),
        )?;
        counter(
            e,
            "messages_published",
            "Messages published (client PUBLISH, persistent publish and admin API).",
            None,
            get(&stats.messages_published),
        )?;
        counter(
            e,
            "deliveries_enqueued",
            "Deliveries queued for subscribers.",
            None,
            get(&stats.deliveries_enqueued),
        )?;
        counter(
            e,
            "deliveries_sent",
            "Deliveries completely written to subscriber sockets.",
            None,
            get(&stats.deliveries_sent),
        )?;
        counter(
            e,
            "deliveries_dropped",
            "Deliveries dropped by the slow-consumer policy.",
            None,
            get(&stats.deliveries_dropped),
        )?;
        counter(
            e,
            "sent",
            "Bytes written to clients.",
            Some(&Unit::Bytes),
            get(&stats.bytes_out),
        )?;
        counter(
            e,
            "slow_consumers",
            "Slow consumers disconnected.",
            None,
            get(&stats.slow_consumers),
        )?;

        resume_metrics(e, shared)?;

        labelled_counters(
            e,
            ("errors", "code"),
            "Error frames sent to clients, by protocol P7 code.",
            ErrorCode::ALL.map(|code| (code.as_str(), stats.errors_sent(code))),
        )?;

        histogram(
            e,
            "delivery_latency",
            "Time from queueing a delivery for a subscriber to writing its last byte.",
            &stats.delivery_latency,
        )?;
        if let Some(cluster) = shared.cluster() {
            broker_metrics(e, cluster.broker.stats(), cluster.broker.ready())?;
        }
        Ok(())
    }
}

/// Writes one latency histogram, in seconds.
fn histogram(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    histogram: &LatencyHistogram,
) -> Result<(), std::fmt::Error> {
    let latency = histogram.snapshot();
    e.encode_descriptor(name, help, Some(&Unit::Seconds), MetricType::Histogram)?
        .encode_histogram::<NoLabelSet>(
            latency.sum_ns as f64 / 1e9,
            latency.count(),
            &latency.buckets_seconds(),
            None,
        )
}

/// The cluster broker's metrics (only in a cluster).
fn broker_metrics(
    e: &mut DescriptorEncoder,
    stats: &crate::broker::BrokerStats,
    connected: bool,
) -> Result<(), std::fmt::Error> {
    let get = crate::broker::BrokerStats::get;
    gauge(
        e,
        "broker_connected",
        "1 while connected to the cluster broker (resubscribed and caught up).",
        None,
        u64::from(connected),
    )?;
    let counters = [
        (
            "broker_reconnects",
            "Times the link to the broker was lost.",
            &stats.disconnects,
        ),
        (
            "broker_messages_in",
            "Messages received from the broker.",
            &stats.messages_in,
        ),
        (
            "broker_messages_out",
            "Publishes the broker accepted from this node.",
            &stats.messages_out,
        ),
        (
            "broker_publish_failures",
            "Publishes refused as unavailable.",
            &stats.publish_failures,
        ),
        (
            "broker_recovered",
            "Messages read back from topic streams after a reconnect or a hole.",
            &stats.recovered,
        ),
        (
            "broker_gaps",
            "Holes in a topic the broker's history could not fill.",
            &stats.gaps,
        ),
    ];
    for (name, help, value) in counters {
        counter(e, name, help, None, get(value))?;
    }
    histogram(
        e,
        "broker_publish_rtt",
        "Round trip of a publish to the broker (script call to its answer).",
        &stats.publish_rtt,
    )
}

/// Resumes (X1), detached sessions and topic history.
fn resume_metrics(e: &mut DescriptorEncoder, shared: &Shared) -> Result<(), std::fmt::Error> {
    let stats = &*shared.stats;
    let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
    labelled_counters(
        e,
        ("resumes", "outcome"),
        "Resumes (X1) by outcome: recovered, not_recovered (the client must resync) or unknown_session.",
        [
            ("recovered", get(&stats.resumes_recovered)),
            ("not_recovered", get(&stats.resumes_not_recovered)),
            ("unknown_session", get(&stats.resumes_unknown)),
        ],
    )?;
    counter(
        e,
        "messages_replayed",
        "Messages replayed by resumes, from topic history or a detached session's queue.",
        None,
        get(&stats.messages_replayed),
    )?;
    counter(
        e,
        "sessions_detached",
        "Sessions that lost their connection and were kept for a resume.",
        None,
        get(&stats.sessions_detached),
    )?;
    counter(
        e,
        "sessions_expired",
        "Detached sessions freed because no resume came within the session TTL.",
        None,
        get(&stats.sessions_expired),
    )?;
    counter(
        e,
        "sessions_resumed_elsewhere",
        "Detached sessions ended because their client resumed on another node of the cluster.",
        None,
        get(&stats.sessions_resumed_elsewhere),
    )?;
    counter(
        e,
        "sessions_not_kept",
        "Sessions that lost their connection and ended at once because max-detached-sessions were already waiting for a resume.",
        None,
        get(&stats.sessions_not_kept),
    )?;
    gauge(
        e,
        "sessions_waiting",
        "Detached sessions waiting for a resume (as of the last housekeeping sweep).",
        None,
        get(&stats.sessions_detached_now),
    )?;
    gauge(
        e,
        "history_entries",
        "Messages held in topic history, over all topics.",
        None,
        shared.history.messages.load(Ordering::Relaxed) as u64,
    )?;
    gauge(
        e,
        "history",
        "Bytes held in topic history, over all topics.",
        Some(&Unit::Bytes),
        shared.history.bytes.load(Ordering::Relaxed) as u64,
    )
}

/// `janus_build_info{version="…"} 1`.
fn encoder_info(e: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
    let labels = [("version", env!("CARGO_PKG_VERSION"))];
    e.encode_descriptor(
        "build_info",
        "Always 1; the label says which version runs.",
        None,
        MetricType::Gauge,
    )?
    .encode_family(&labels)?
    .encode_gauge(&1u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_upper_inclusive() {
        let h = LatencyHistogram::default();
        h.record(Duration::from_micros(50));
        h.record(Duration::from_nanos(50_001));
        h.record(Duration::from_secs(60));
        let s = h.snapshot();
        assert_eq!((s.counts[0], s.counts[1], s.counts[BUCKETS - 1]), (1, 1, 1));
        let buckets = s.buckets_seconds();
        assert_eq!(buckets.len(), BUCKETS);
        assert_eq!(buckets[0], (0.00005, 1));
        assert_eq!(buckets[2], (0.00025, 0));
        assert_eq!(buckets[BUCKETS - 1], (f64::INFINITY, 1));
    }

    #[test]
    fn batches_equal_single_records() {
        let single = LatencyHistogram::default();
        let batched = LatencyHistogram::default();
        let samples = [3u64, 3, 70, 70, 70, 4_000, 3, 20_000_000];
        {
            let mut batch = batched.batch();
            for us in samples {
                single.record(Duration::from_micros(us));
                batch.record(Duration::from_micros(us));
            }
        }
        assert_eq!(single.snapshot(), batched.snapshot());
    }

    #[test]
    fn stamps_wrap() {
        assert_eq!(stamp_elapsed(u32::MAX - 9, 10), Duration::from_micros(20));
        let before = stamp_now();
        assert!(stamp_elapsed(before, stamp_now()) < Duration::from_secs(60));
    }

    #[test]
    fn quantiles_and_deltas() {
        let h = LatencyHistogram::default();
        assert_eq!(h.snapshot().quantile(0.5), None);
        for _ in 0..98 {
            h.record(Duration::from_micros(80));
        }
        let before = h.snapshot();
        h.record(Duration::from_millis(3));
        h.record(Duration::from_millis(3));
        let s = h.snapshot();
        assert_eq!(s.quantile(0.5), Some(Duration::from_micros(100)));
        assert_eq!(s.quantile(0.99), Some(Duration::from_millis(5)));
        let recent = s.since(&before);
        assert_eq!(recent.count(), 2);
        assert_eq!(recent.quantile(0.5), Some(Duration::from_millis(5)));
        assert_eq!(recent.mean(), Some(Duration::from_millis(3)));
    }
}
