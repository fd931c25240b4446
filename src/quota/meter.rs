//! Byte-rate measurement and throttle times of client quotas, across shards.
//!
//! Owner: one `QuotaMeters` for the broker process, made before the shards start and shared
//! by all of them (`Arc`); each shard holds a `ShardQuotas` in its context. Nothing here awaits.
//!
//! Measured as Kafka's ClientQuotaManager does: a sampled rate of `quota.window.num` (11)
//! samples of `quota.window.size.seconds` (1 s) each. The bytes of a request are recorded
//! first, then the rate is measured: total bytes of the samples not yet expired over the
//! window they span, taken to be at least `quota.window.num - 1` whole windows (Kafka's
//! `Rate.windowSize`, so a fresh client is not judged on its first instant). When the rate is
//! above the quota, the throttle time is `(rate - quota) / quota * window`, rounded, bounded by
//! the whole measured span (`quota.window.num * quota.window.size.seconds`).
//!
//! Across shards, without locks on the hot path: a client's connections may land on any
//! shard, so each entity's meter (`EntityMeter`) is shared by every shard, and holds one slot
//! of samples per shard. A shard writes only its own slot (single writer: plain atomic loads
//! and stores, no read-modify-write contention), and measures by summing every shard's slot
//! (relaxed loads of `samples * shards` counters). Samples are aligned on whole windows of
//! one clock shared by the process, so the shards' samples line up. A writer resets a sample
//! (bytes to zero, then its window, with release order) before adding to it, so a reader that
//! sees the new window sees the reset bytes or later ones. The one lock is the map from
//! entity to meter, taken the first time a shard meets an entity (each shard keeps its own
//! map of the meters it has met), never per request.
//!
//! Meters are not forgotten while the process runs; they are as many as the (entity, key)
//! pairs clients have been measured against, bounded by the quota entities that exist
//! (`quota::ENTITIES_MAX`), since only an entity with a quota is measured.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::quota::{ClientQuotas, QuotaEntity, QuotaKey};

/// `quota.window.num` and `quota.window.size.seconds`, as Kafka names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaWindows {
    /// Samples kept (`quota.window.num`, Kafka's default 11).
    pub samples: usize,
    /// One sample's span in milliseconds (`quota.window.size.seconds` × 1000, default 1 s).
    pub window_ms: u64,
}

impl Default for QuotaWindows {
    fn default() -> Self {
        QuotaWindows {
            samples: 11,
            window_ms: 1000,
        }
    }
}

/// One sample of one shard: the window it counts (index + 1; 0: never used) and its bytes.
#[derive(Debug, Default)]
struct Sample {
    window: AtomicU64,
    bytes: AtomicU64,
}

/// What one entity (for one key) has been measured at, on every shard, and its throttling.
#[derive(Debug)]
pub struct EntityMeter {
    /// `samples` per shard, shard by shard.
    samples: Box<[Sample]>,
    /// Throttle time handed out, in milliseconds, over all shards (for /metrics).
    throttle_ms_total: AtomicU64,
    /// Requests throttled, over all shards.
    throttled_requests: AtomicU64,
}

/// Every meter of the process. See the module documentation.
#[derive(Debug)]
pub struct QuotaMeters {
    windows: QuotaWindows,
    shards: usize,
    clock: Instant,
    meters: Mutex<HashMap<(QuotaKey, QuotaEntity), Arc<EntityMeter>>>,
}

impl QuotaMeters {
    /// The meters of a process of `shards` shards.
    pub fn new(shards: usize, windows: QuotaWindows) -> Arc<QuotaMeters> {
        Arc::new(QuotaMeters {
            windows: QuotaWindows {
                samples: windows.samples.max(1),
                window_ms: windows.window_ms.max(1),
            },
            shards: shards.max(1),
            clock: Instant::now(),
            meters: Mutex::new(HashMap::new()),
        })
    }

    fn meter(&self, key: QuotaKey, entity: &QuotaEntity) -> Arc<EntityMeter> {
        let mut meters = self
            .meters
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        meters
            .entry((key, entity.clone()))
            .or_insert_with(|| {
                Arc::new(EntityMeter {
                    samples: (0..self.shards * self.windows.samples)
                        .map(|_| Sample::default())
                        .collect(),
                    throttle_ms_total: AtomicU64::new(0),
                    throttled_requests: AtomicU64::new(0),
                })
            })
            .clone()
    }

    /// Every meter's throttling so far: (key, entity, throttle milliseconds, requests).
    pub fn throttle_totals(&self) -> Vec<(QuotaKey, QuotaEntity, u64, u64)> {
        let meters = self
            .meters
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut totals: Vec<_> = meters
            .iter()
            .map(|((key, entity), meter)| {
                (
                    *key,
                    entity.clone(),
                    meter.throttle_ms_total.load(Ordering::Relaxed),
                    meter.throttled_requests.load(Ordering::Relaxed),
                )
            })
            .collect();
        totals.sort();
        totals
    }

    /// Milliseconds on the process's quota clock.
    fn now_ms(&self) -> u64 {
        self.clock.elapsed().as_millis() as u64
    }

    /// Adds `bytes` to `shard`'s sample of the window holding `now_ms`.
    fn record(&self, meter: &EntityMeter, shard: usize, bytes: u64, now_ms: u64) {
        let window = now_ms / self.windows.window_ms + 1;
        let base = (shard % self.shards) * self.windows.samples;
        let sample = &meter.samples[base + (window as usize % self.windows.samples)];
        if sample.window.load(Ordering::Relaxed) != window {
            sample.bytes.store(0, Ordering::Relaxed);
            sample.window.store(window, Ordering::Release);
        }
        let total = sample.bytes.load(Ordering::Relaxed).saturating_add(bytes);
        sample.bytes.store(total, Ordering::Relaxed);
    }

    /// The rate over every shard at `now_ms`, bytes a second, and the span it was measured
    /// over in milliseconds.
    fn rate(&self, meter: &EntityMeter, now_ms: u64) -> (f64, u64) {
        let QuotaWindows { samples, window_ms } = self.windows;
        let current = now_ms / window_ms + 1;
        let oldest_live = current.saturating_sub(samples as u64 - 1).max(1);
        let mut bytes = 0u64;
        let mut oldest = current;
        for sample in meter.samples.iter() {
            let window = sample.window.load(Ordering::Acquire);
            if window >= oldest_live && window <= current {
                bytes = bytes.saturating_add(sample.bytes.load(Ordering::Relaxed));
                oldest = oldest.min(window);
            }
        }
        let mut span = now_ms.saturating_sub((oldest - 1) * window_ms);
        let full = span / window_ms;
        let min_full = samples as u64 - 1;
        if full < min_full {
            span += (min_full - full) * window_ms;
        }
        let span = span.max(1);
        (bytes as f64 * 1000.0 / span as f64, span)
    }
}

fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The throttle times handed out so far, per quota entity and key, in the Prometheus text
/// format (0.0.4): `ringbroker_quota_throttle_time_ms_total` and
/// `ringbroker_quota_throttled_requests_total`, labelled `quota` (the key), `user` and
/// `client_id` (`<default>` for a default entity, empty for a part the entity lacks).
pub fn render_metrics(meters: &QuotaMeters) -> String {
    use std::fmt::Write as _;
    let totals = meters.throttle_totals();
    let mut out = String::new();
    let name = |part: &Option<Option<String>>| match part {
        None => String::new(),
        Some(None) => "<default>".to_string(),
        Some(Some(name)) => label(name),
    };
    for (metric, help, pick) in [
        (
            "ringbroker_quota_throttle_time_ms_total",
            "Throttle time handed to clients by client quotas, in milliseconds.",
            0,
        ),
        (
            "ringbroker_quota_throttled_requests_total",
            "Requests throttled by client quotas.",
            1,
        ),
    ] {
        let _ = writeln!(out, "# HELP {metric} {help}");
        let _ = writeln!(out, "# TYPE {metric} counter");
        for (key, entity, ms, requests) in &totals {
            let value = if pick == 0 { ms } else { requests };
            let _ = writeln!(
                out,
                "{metric}{{quota=\"{}\",user=\"{}\",client_id=\"{}\"}} {value}",
                key.name(),
                name(&entity.user),
                name(&entity.client_id)
            );
        }
    }
    out
}

/// The throttle time of a measured `rate` over `quota` (bytes a second), measured over
/// `span_ms`, bounded by `max_ms`: zero when within the quota.
pub fn throttle_ms(rate: f64, quota: f64, span_ms: u64, max_ms: u64) -> u64 {
    if quota <= 0.0 || rate <= quota {
        return 0;
    }
    let throttle = ((rate - quota) / quota * span_ms as f64).round();
    (throttle as u64).min(max_ms)
}

/// One shard's view of the quota meters. See the module documentation.
#[derive(Debug)]
pub struct ShardQuotas {
    shard: usize,
    meters: Arc<QuotaMeters>,
    known: RefCell<HashMap<(QuotaKey, QuotaEntity), Arc<EntityMeter>>>,
}

impl ShardQuotas {
    /// Shard `shard`'s view of `meters`.
    pub fn new(shard: usize, meters: Arc<QuotaMeters>) -> ShardQuotas {
        ShardQuotas {
            shard,
            meters,
            known: RefCell::new(HashMap::new()),
        }
    }

    /// The process's meters.
    pub fn meters(&self) -> &Arc<QuotaMeters> {
        &self.meters
    }

    /// Records `bytes` of a request of principal name `user` with client id `client_id`
    /// against the quota of `key` that applies to them (`quotas`, by Kafka's precedence), and
    /// gives the throttle time in milliseconds: zero without a quota or within it.
    pub fn record(
        &self,
        quotas: &ClientQuotas,
        user: &str,
        client_id: &str,
        key: QuotaKey,
        bytes: u64,
    ) -> u64 {
        if quotas.is_empty() {
            return 0;
        }
        let Some((entity, quota)) = quotas.resolve(user, client_id, key) else {
            return 0;
        };
        let meter = {
            let mut known = self.known.borrow_mut();
            known
                .entry((key, entity.clone()))
                .or_insert_with(|| self.meters.meter(key, &entity))
                .clone()
        };
        let now = self.meters.now_ms();
        self.meters.record(&meter, self.shard, bytes, now);
        let (rate, span) = self.meters.rate(&meter, now);
        let windows = self.meters.windows;
        let max = windows.window_ms * windows.samples as u64;
        let throttle = throttle_ms(rate, quota as f64, span, max);
        if throttle > 0 {
            meter
                .throttle_ms_total
                .fetch_add(throttle, Ordering::Relaxed);
            meter.throttled_requests.fetch_add(1, Ordering::Relaxed);
        }
        throttle
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meters(shards: usize) -> Arc<QuotaMeters> {
        QuotaMeters::new(shards, QuotaWindows::default())
    }

    #[test]
    fn a_fresh_rate_spans_at_least_the_full_windows() {
        let meters = meters(1);
        let meter = meters.meter(QuotaKey::ProducerByteRate, &QuotaEntity::client(None));
        meters.record(&meter, 0, 10_000, 500);
        // 10 whole windows + the 500 ms of the current one.
        let (rate, span) = meters.rate(&meter, 500);
        assert_eq!(span, 10_500);
        assert!((rate - 10_000.0 * 1000.0 / 10_500.0).abs() < 1e-6, "{rate}");
    }

    #[test]
    fn shards_add_up_and_old_samples_expire() {
        let meters = meters(3);
        let meter = meters.meter(QuotaKey::ConsumerByteRate, &QuotaEntity::client(None));
        for shard in 0..3 {
            meters.record(&meter, shard, 1000, 2_000);
        }
        let (rate, span) = meters.rate(&meter, 2_000);
        assert_eq!(span, 10_000);
        assert!((rate - 300.0).abs() < 1e-6, "{rate}");
        // 11 windows later every sample has expired.
        let (rate, _) = meters.rate(&meter, 2_000 + 11_000);
        assert_eq!(rate, 0.0);
        // A sample slot reused for a later window starts from zero.
        meters.record(&meter, 0, 5, 2_000 + 11_000);
        let (rate, _) = meters.rate(&meter, 2_000 + 11_000);
        assert!((rate - 0.5).abs() < 1e-6, "{rate}");
    }

    #[test]
    fn throttle_time_is_kafkas_and_bounded() {
        assert_eq!(throttle_ms(100.0, 100.0, 10_000, 11_000), 0);
        // 50% over a 10 s span: 5 s.
        assert_eq!(throttle_ms(150.0, 100.0, 10_000, 11_000), 5_000);
        assert_eq!(throttle_ms(10_000.0, 100.0, 10_000, 11_000), 11_000);
    }

    #[test]
    fn only_entities_with_a_quota_are_measured() {
        let meters = meters(2);
        let shard = ShardQuotas::new(1, meters.clone());
        let mut quotas = ClientQuotas::default();
        assert_eq!(
            shard.record(&quotas, "u", "c", QuotaKey::ProducerByteRate, 1 << 30),
            0
        );
        quotas.set(
            &QuotaEntity::client(Some("c")),
            QuotaKey::ProducerByteRate,
            Some(1000),
        );
        assert_eq!(
            shard.record(&quotas, "u", "other", QuotaKey::ProducerByteRate, 1 << 30),
            0
        );
        // 20 000 bytes over the 10 s minimum span is 2000 B/s, twice the quota: 10 s.
        let throttle = shard.record(&quotas, "u", "c", QuotaKey::ProducerByteRate, 20_000);
        assert!((9_000..=11_000).contains(&throttle), "{throttle}");
        let totals = meters.throttle_totals();
        assert_eq!(totals.len(), 1);
        assert_eq!(totals[0].3, 1);
    }
}
