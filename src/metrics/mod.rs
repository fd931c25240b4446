//! Per-shard metrics and their Prometheus text export.
//!
//! Owner: every shard has its own `ShardMetrics` (plain `Cell`s and `RefCell`s, no atomics, no
//! locks), updated on that shard's hot paths. A scrape of `/metrics` (served by `broker::metrics_http` on shard
//! 0 when `metrics-listen` is set) asks every shard for a `MetricsSnapshot` over the router and
//! renders them with a `shard` label, so collection never costs the data path more than a few
//! increments and one histogram record per request.
//!
//! Latencies are kept in hdrhistogram (microseconds, 3 significant digits) and exported as
//! Prometheus summaries (quantiles 0.5, 0.9, 0.99, 0.999, with `_sum` and `_count`) per shard.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use kafka_protocol::messages::ApiKey;

/// The highest latency a histogram records exactly; longer ones are clamped to it.
const LATENCY_US_MAX: u64 = 60_000_000;

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_US_MAX, 3).expect("static histogram bounds are valid")
}

/// Counters and latencies of one API on one shard.
#[derive(Debug)]
struct ApiMetrics {
    requests: u64,
    errors: u64,
    latency_us: Histogram<u64>,
}

/// One shard's metrics. See the module documentation.
#[derive(Debug)]
pub struct ShardMetrics {
    apis: RefCell<BTreeMap<i16, ApiMetrics>>,
    bytes_in: Cell<u64>,
    bytes_out: Cell<u64>,
    connections_open: Cell<u64>,
    connections_accepted: Cell<u64>,
    cross_shard_calls: Cell<u64>,
    append_latency_us: RefCell<Histogram<u64>>,
    cleaner: RefCell<CleanerSnapshot>,
}

/// The log cleaner's numbers on one shard (`storage::cleaner`).
#[derive(Debug, Clone, Default)]
pub struct CleanerSnapshot {
    /// Cleanings done.
    pub cleanings: u64,
    /// Bytes the cleanings read.
    pub bytes_read: u64,
    /// Bytes the cleanings wrote.
    pub bytes_written: u64,
    /// Time spent cleaning.
    pub seconds: f64,
    /// (topic, partition, dirty ratio) of each compacted partition, as of the last round.
    pub dirty_ratios: Vec<(String, i32, f64)>,
}

impl Default for ShardMetrics {
    fn default() -> Self {
        ShardMetrics {
            apis: RefCell::new(BTreeMap::new()),
            bytes_in: Cell::new(0),
            bytes_out: Cell::new(0),
            connections_open: Cell::new(0),
            connections_accepted: Cell::new(0),
            cross_shard_calls: Cell::new(0),
            append_latency_us: RefCell::new(new_histogram()),
            cleaner: RefCell::default(),
        }
    }
}

fn micros(duration: Duration) -> u64 {
    (duration.as_micros() as u64).clamp(1, LATENCY_US_MAX)
}

impl ShardMetrics {
    /// Records one served request of `api_key`.
    pub fn record_request(&self, api_key: i16, latency: Duration, failed: bool) {
        let mut apis = self.apis.borrow_mut();
        let api = apis.entry(api_key).or_insert_with(|| ApiMetrics {
            requests: 0,
            errors: 0,
            latency_us: new_histogram(),
        });
        api.requests += 1;
        api.errors += u64::from(failed);
        api.latency_us.saturating_record(micros(latency));
    }

    /// Counts request bytes read from clients.
    pub fn add_bytes_in(&self, bytes: usize) {
        self.bytes_in.set(self.bytes_in.get() + bytes as u64);
    }

    /// Counts response bytes written to clients.
    pub fn add_bytes_out(&self, bytes: usize) {
        self.bytes_out.set(self.bytes_out.get() + bytes as u64);
    }

    /// A connection was accepted.
    pub fn connection_opened(&self) {
        self.connections_open.set(self.connections_open.get() + 1);
        self.connections_accepted
            .set(self.connections_accepted.get() + 1);
    }

    /// A connection was closed.
    pub fn connection_closed(&self) {
        self.connections_open
            .set(self.connections_open.get().saturating_sub(1));
    }

    /// A request went to another shard.
    pub fn cross_shard_call(&self) {
        self.cross_shard_calls.set(self.cross_shard_calls.get() + 1);
    }

    /// An append became durable after `latency` (owner side, including the fsync wait).
    pub fn record_append(&self, latency: Duration) {
        self.append_latency_us
            .borrow_mut()
            .saturating_record(micros(latency));
    }

    /// A cleaning finished.
    pub fn record_cleaning(&self, bytes_read: u64, bytes_written: u64, elapsed: Duration) {
        let mut cleaner = self.cleaner.borrow_mut();
        cleaner.cleanings += 1;
        cleaner.bytes_read += bytes_read;
        cleaner.bytes_written += bytes_written;
        cleaner.seconds += elapsed.as_secs_f64();
    }

    /// The dirty ratios the cleaner saw in its last round.
    pub fn set_dirty_ratios(&self, ratios: Vec<(String, i32, f64)>) {
        self.cleaner.borrow_mut().dirty_ratios = ratios;
    }

    /// A `Send` copy of the current values, for a scrape.
    pub fn snapshot(&self, extra: SnapshotGauges) -> MetricsSnapshot {
        let apis = self
            .apis
            .borrow()
            .iter()
            .map(|(key, api)| ApiSnapshot {
                api_key: *key,
                requests: api.requests,
                errors: api.errors,
                latency: LatencySnapshot::of(&api.latency_us),
            })
            .collect();
        MetricsSnapshot {
            apis,
            bytes_in: self.bytes_in.get(),
            bytes_out: self.bytes_out.get(),
            connections_open: self.connections_open.get(),
            connections_accepted: self.connections_accepted.get(),
            cross_shard_calls: self.cross_shard_calls.get(),
            append_latency: LatencySnapshot::of(&self.append_latency_us.borrow()),
            cleaner: self.cleaner.borrow().clone(),
            gauges: extra,
        }
    }
}

/// Values a shard reads from elsewhere at scrape time.
#[derive(Debug, Clone, Default)]
pub struct SnapshotGauges {
    /// Open partitions on the shard.
    pub partitions: u64,
    /// Batch cache hits and misses.
    pub cache_hits: u64,
    /// Batch cache misses.
    pub cache_misses: u64,
    /// Bytes held by the batch cache.
    pub cache_bytes: u64,
    /// Consumer groups coordinated on the shard.
    pub groups: u64,
    /// File space the shard's active segments hold reserved ahead of their tails.
    pub segment_reserved_bytes: u64,
    /// Replication: partitions this shard leads, those whose ISR lacks a replica, and those
    /// whose ISR is below `min.insync.replicas`; ISR shrinks and expansions committed.
    pub replication: ReplicationGauges,
}

/// A shard's replication numbers (all zero on a lone node).
#[derive(Debug, Clone, Copy, Default)]
pub struct ReplicationGauges {
    /// Partitions led here.
    pub leader_partitions: u64,
    /// Led partitions with fewer in-sync replicas than replicas.
    pub under_replicated_partitions: u64,
    /// Led partitions whose ISR is below `min.insync.replicas`.
    pub under_min_isr_partitions: u64,
    /// ISR shrinks committed for partitions led here.
    pub isr_shrinks: u64,
    /// ISR expansions committed for partitions led here.
    pub isr_expands: u64,
}

/// Quantiles of a latency histogram, in microseconds.
#[derive(Debug, Clone, Default)]
pub struct LatencySnapshot {
    /// Recorded values.
    pub count: u64,
    /// Sum of the recorded values (approximate: mean times count).
    pub sum_us: f64,
    /// (quantile, value) pairs.
    pub quantiles: Vec<(f64, u64)>,
}

impl LatencySnapshot {
    fn of(histogram: &Histogram<u64>) -> Self {
        let count = histogram.len();
        LatencySnapshot {
            count,
            sum_us: histogram.mean() * count as f64,
            quantiles: [0.5, 0.9, 0.99, 0.999]
                .into_iter()
                .map(|q| {
                    (
                        q,
                        if count == 0 {
                            0
                        } else {
                            histogram.value_at_quantile(q)
                        },
                    )
                })
                .collect(),
        }
    }
}

/// One API's numbers in a snapshot.
#[derive(Debug, Clone)]
pub struct ApiSnapshot {
    /// The API key.
    pub api_key: i16,
    /// Requests served.
    pub requests: u64,
    /// Requests that ended their connection (malformed, refused).
    pub errors: u64,
    /// Request latency, from dispatch to the response being ready.
    pub latency: LatencySnapshot,
}

/// A shard's metrics at one moment; crosses the mesh to the shard that renders the scrape.
#[derive(Debug, Clone, Default)]
pub struct MetricsSnapshot {
    /// Per API.
    pub apis: Vec<ApiSnapshot>,
    /// Request bytes read.
    pub bytes_in: u64,
    /// Response bytes written.
    pub bytes_out: u64,
    /// Connections open now.
    pub connections_open: u64,
    /// Connections accepted since start.
    pub connections_accepted: u64,
    /// Requests sent to other shards.
    pub cross_shard_calls: u64,
    /// Append-to-durable latency on this shard's partitions.
    pub append_latency: LatencySnapshot,
    /// The log cleaner.
    pub cleaner: CleanerSnapshot,
    /// Values read at scrape time.
    pub gauges: SnapshotGauges,
}

fn api_name(key: i16) -> String {
    ApiKey::try_from(key)
        .map(|k| format!("{k:?}"))
        .unwrap_or_else(|_| key.to_string())
}

/// Renders the snapshots (index = shard id) in the Prometheus text format, version 0.0.4.
pub fn render(snapshots: &[MetricsSnapshot]) -> String {
    let mut out = String::new();
    let counter = |out: &mut String,
                   name: &str,
                   help: &str,
                   kind: &str,
                   value: &dyn Fn(&MetricsSnapshot) -> u64| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (shard, snapshot) in snapshots.iter().enumerate() {
            let _ = writeln!(out, "{name}{{shard=\"{shard}\"}} {}", value(snapshot));
        }
    };
    counter(
        &mut out,
        "ringbroker_bytes_in_total",
        "Request bytes read from clients.",
        "counter",
        &|s| s.bytes_in,
    );
    counter(
        &mut out,
        "ringbroker_bytes_out_total",
        "Response bytes written to clients.",
        "counter",
        &|s| s.bytes_out,
    );
    counter(
        &mut out,
        "ringbroker_connections",
        "Client connections open.",
        "gauge",
        &|s| s.connections_open,
    );
    counter(
        &mut out,
        "ringbroker_connections_accepted_total",
        "Client connections accepted.",
        "counter",
        &|s| s.connections_accepted,
    );
    counter(
        &mut out,
        "ringbroker_cross_shard_calls_total",
        "Requests sent to another shard.",
        "counter",
        &|s| s.cross_shard_calls,
    );
    counter(
        &mut out,
        "ringbroker_partitions",
        "Partitions open on the shard.",
        "gauge",
        &|s| s.gauges.partitions,
    );
    counter(
        &mut out,
        "ringbroker_cache_hits_total",
        "Reads served from the batch cache.",
        "counter",
        &|s| s.gauges.cache_hits,
    );
    counter(
        &mut out,
        "ringbroker_cache_misses_total",
        "Reads that went to disk.",
        "counter",
        &|s| s.gauges.cache_misses,
    );
    counter(
        &mut out,
        "ringbroker_cache_bytes",
        "Bytes held by the batch cache.",
        "gauge",
        &|s| s.gauges.cache_bytes,
    );
    counter(
        &mut out,
        "ringbroker_segment_reserved_bytes",
        "File space active segments hold reserved ahead of their tails (log.segment.reserve.budget.bytes bounds it per shard).",
        "gauge",
        &|s| s.gauges.segment_reserved_bytes,
    );
    counter(
        &mut out,
        "ringbroker_leader_partitions",
        "Partitions this broker leads (Kafka's LeaderCount).",
        "gauge",
        &|s| s.gauges.replication.leader_partitions,
    );
    counter(
        &mut out,
        "ringbroker_under_replicated_partitions",
        "Partitions led here whose ISR lacks a replica (Kafka's UnderReplicatedPartitions).",
        "gauge",
        &|s| s.gauges.replication.under_replicated_partitions,
    );
    counter(
        &mut out,
        "ringbroker_under_min_isr_partitions",
        "Partitions led here whose ISR is below min.insync.replicas (Kafka's UnderMinIsrPartitionCount).",
        "gauge",
        &|s| s.gauges.replication.under_min_isr_partitions,
    );
    counter(
        &mut out,
        "ringbroker_isr_shrinks_total",
        "ISR shrinks committed for partitions led here.",
        "counter",
        &|s| s.gauges.replication.isr_shrinks,
    );
    counter(
        &mut out,
        "ringbroker_isr_expands_total",
        "ISR expansions committed for partitions led here.",
        "counter",
        &|s| s.gauges.replication.isr_expands,
    );
    counter(
        &mut out,
        "ringbroker_consumer_groups",
        "Consumer groups coordinated on the shard.",
        "gauge",
        &|s| s.gauges.groups,
    );
    counter(
        &mut out,
        "ringbroker_cleanings_total",
        "Log cleanings (compactions) done.",
        "counter",
        &|s| s.cleaner.cleanings,
    );
    counter(
        &mut out,
        "ringbroker_cleaner_bytes_read_total",
        "Bytes the log cleaner read.",
        "counter",
        &|s| s.cleaner.bytes_read,
    );
    counter(
        &mut out,
        "ringbroker_cleaner_bytes_written_total",
        "Bytes the log cleaner wrote.",
        "counter",
        &|s| s.cleaner.bytes_written,
    );
    let _ = writeln!(
        out,
        "# HELP ringbroker_cleaner_seconds_total Time spent cleaning logs."
    );
    let _ = writeln!(out, "# TYPE ringbroker_cleaner_seconds_total counter");
    for (shard, snapshot) in snapshots.iter().enumerate() {
        let _ = writeln!(
            out,
            "ringbroker_cleaner_seconds_total{{shard=\"{shard}\"}} {:.6}",
            snapshot.cleaner.seconds
        );
    }
    let _ = writeln!(
        out,
        "# HELP ringbroker_cleaner_dirty_ratio Dirty share of a compacted partition's cleanable bytes."
    );
    let _ = writeln!(out, "# TYPE ringbroker_cleaner_dirty_ratio gauge");
    for (shard, snapshot) in snapshots.iter().enumerate() {
        for (topic, partition, ratio) in &snapshot.cleaner.dirty_ratios {
            let _ = writeln!(
                out,
                "ringbroker_cleaner_dirty_ratio{{shard=\"{shard}\",topic=\"{topic}\",partition=\"{partition}\"}} {ratio:.4}"
            );
        }
    }

    let _ = writeln!(
        out,
        "# HELP ringbroker_requests_total Requests served, by API."
    );
    let _ = writeln!(out, "# TYPE ringbroker_requests_total counter");
    for (shard, snapshot) in snapshots.iter().enumerate() {
        for api in &snapshot.apis {
            let _ = writeln!(
                out,
                "ringbroker_requests_total{{shard=\"{shard}\",api=\"{}\"}} {}",
                api_name(api.api_key),
                api.requests
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP ringbroker_request_errors_total Requests that closed their connection, by API."
    );
    let _ = writeln!(out, "# TYPE ringbroker_request_errors_total counter");
    for (shard, snapshot) in snapshots.iter().enumerate() {
        for api in &snapshot.apis {
            let _ = writeln!(
                out,
                "ringbroker_request_errors_total{{shard=\"{shard}\",api=\"{}\"}} {}",
                api_name(api.api_key),
                api.errors
            );
        }
    }
    let summary =
        |out: &mut String, name: &str, help: &str, series: Vec<(String, &LatencySnapshot)>| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} summary");
            for (labels, latency) in series {
                for (q, value) in &latency.quantiles {
                    let _ = writeln!(
                        out,
                        "{name}{{{labels},quantile=\"{q}\"}} {}",
                        *value as f64 / 1e6
                    );
                }
                let _ = writeln!(out, "{name}_sum{{{labels}}} {}", latency.sum_us / 1e6);
                let _ = writeln!(out, "{name}_count{{{labels}}} {}", latency.count);
            }
        };
    let request_series = snapshots
        .iter()
        .enumerate()
        .flat_map(|(shard, s)| {
            s.apis.iter().map(move |api| {
                (
                    format!("shard=\"{shard}\",api=\"{}\"", api_name(api.api_key)),
                    &api.latency,
                )
            })
        })
        .collect();
    summary(
        &mut out,
        "ringbroker_request_latency_seconds",
        "Request latency from dispatch to response, by API.",
        request_series,
    );
    let append_series = snapshots
        .iter()
        .enumerate()
        .map(|(shard, s)| (format!("shard=\"{shard}\""), &s.append_latency))
        .collect();
    summary(
        &mut out,
        "ringbroker_append_latency_seconds",
        "Append latency until durable under the topic's flush policy.",
        append_series,
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_is_prometheus_text() {
        let metrics = ShardMetrics::default();
        metrics.record_request(ApiKey::Produce as i16, Duration::from_micros(150), false);
        metrics.record_request(ApiKey::Produce as i16, Duration::from_micros(250), true);
        metrics.add_bytes_in(100);
        metrics.connection_opened();
        let text = render(&[
            metrics.snapshot(SnapshotGauges::default()),
            MetricsSnapshot::default(),
        ]);
        assert!(text.contains("ringbroker_requests_total{shard=\"0\",api=\"Produce\"} 2"));
        assert!(text.contains("ringbroker_request_errors_total{shard=\"0\",api=\"Produce\"} 1"));
        assert!(text.contains("ringbroker_bytes_in_total{shard=\"0\"} 100"));
        assert!(text.contains("ringbroker_bytes_in_total{shard=\"1\"} 0"));
        assert!(
            text.contains(
                "ringbroker_request_latency_seconds_count{shard=\"0\",api=\"Produce\"} 2"
            )
        );
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let value = line.rsplit(' ').next().unwrap();
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }
}
