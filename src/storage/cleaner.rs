//! The log cleaner: compaction of partitions whose `cleanup.policy` includes `compact`, with
//! Kafka's LogCleaner semantics (docs/COMPACTION.md).
//!
//! Owner: one `Cleaner` per shard, run by the shard's cleaner loop (`pool`) on the background
//! task queue over the partitions the shard owns, one partition and one pass at a time. Its key
//! map is allocated on the first cleaning and reused; it is taken out of its cell for a pass,
//! so no `RefCell` borrow is held across an await. Awaits segment reads and the writes and swap
//! of cleaned segments (`PartitionLog::create_cleaned` / `replace_segments`), and the throttle.
//!
//! What is cleaned: closed segments only (never the active one), from the log start up to the
//! first uncleanable offset, the smallest of the active segment's base, the last stable offset
//! and the first segment holding records younger than `min.compaction.lag.ms`. The part after
//! the cleaner offset checkpoint (`cleaner-offset.checkpoint` in the partition's directory) is
//! dirty; a partition is cleaned when its dirty share of the cleanable bytes reaches
//! `min.cleanable.dirty.ratio`, when its oldest dirty segment is older than
//! `max.compaction.lag.ms`, or when a delete horizon the last cleaning set has passed.
//!
//! A pass: the key map is filled with key hash -> latest offset over the dirty part, skipping
//! control batches and aborted transactions, until the map is full (the pass ends there and the
//! next pass goes on from it); then every cleanable segment below that end is rewritten, in
//! groups of consecutive segments up to `segment.bytes`, keeping per batch:
//! - records at or above the map's end (not yet looked at);
//! - a keyed record that is the latest for its key; a tombstone while its batch's delete
//!   horizon has not passed (a batch that first shows a tombstone gets horizon now +
//!   `delete.retention.ms`, KIP-534); keyless records go;
//! - no record of an aborted transaction;
//! - a control batch while its transaction still has data, then until its horizon passed;
//! - the last batch of every producer the partition knows, if only as an empty batch, so
//!   idempotent producers keep their sequence.
//!
//! Batches stay batches: base offset, last offset delta, producer fields and codec kept,
//! records count and CRC recomputed (`records::rebuild`); an untouched batch is copied byte
//! for byte. I/O is throttled to `log.cleaner.io.max.bytes.per.second` (read plus written,
//! split equally between the shards, as `log.cleaner.dedupe.buffer.size` is).

pub mod offset_map;
pub mod records;

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use crate::config::Config;
use crate::config::topic::CompactionSettings;
use crate::limits::{
    STORAGE_CLEANER_DEDUPE_BYTES_MAX, STORAGE_CLEANER_INFLATED_BATCH_BYTES_MAX,
    STORAGE_CLEANER_READ_BYTES,
};
use crate::storage::batch::{BATCH_HEADER_BYTES, BatchHeader};
use crate::storage::error::{StorageError, StorageResult};
use crate::storage::log::{ClosedSegment, PartitionLog};
use crate::storage::manager::PartitionManager;
use crate::storage::producer_state::AbortedTxn;
use crate::storage::segment::{read_small_file, write_file_atomic};
use crate::storage::txn_index;
use offset_map::OffsetMap;
use records::RecordView;

/// The first dirty offset, per partition directory (a truncation lowers it, `log/truncate.rs`).
pub(crate) const CHECKPOINT_FILE: &str = "cleaner-offset.checkpoint";

/// The broker settings of the cleaner, as one shard's share.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CleanerConfig {
    /// `log.cleaner.enable`.
    pub enabled: bool,
    /// `log.cleaner.backoff.ms`.
    pub backoff_ms: u64,
    /// This shard's share of `log.cleaner.dedupe.buffer.size`.
    pub dedupe_buffer_bytes: usize,
    /// `log.cleaner.io.buffer.load.factor`.
    pub load_factor: f64,
    /// This shard's share of `log.cleaner.io.max.bytes.per.second` (infinite: no throttle).
    pub io_bytes_per_second: f64,
}

impl CleanerConfig {
    /// The settings of one of `shard_count` shards.
    pub fn for_shard(config: &Config, shard_count: usize) -> CleanerConfig {
        let shards = shard_count.max(1);
        let dedupe = config
            .int("log.cleaner.dedupe.buffer.size", 128 << 20)
            .max(0) as usize;
        // Kafka's default is Double.MAX_VALUE: no throttle.
        let io = config.double("log.cleaner.io.max.bytes.per.second", f64::MAX);
        let io_bytes_per_second = if io >= f64::MAX {
            f64::INFINITY
        } else {
            io / shards as f64
        };
        CleanerConfig {
            enabled: config
                .entries
                .get("log.cleaner.enable")
                .is_none_or(|e| e.value.trim() == "true"),
            backoff_ms: config.int("log.cleaner.backoff.ms", 15_000).max(0) as u64,
            dedupe_buffer_bytes: (dedupe / shards).min(STORAGE_CLEANER_DEDUPE_BYTES_MAX),
            load_factor: config.double("log.cleaner.io.buffer.load.factor", 0.9),
            io_bytes_per_second,
        }
    }
}

/// What one partition's cleaning knows about the partition beyond its log.
#[derive(Debug, Clone)]
pub struct PartitionFacts {
    pub settings: CompactionSettings,
    /// The last stable offset: nothing at or after it is cleaned.
    pub last_stable_offset: i64,
    /// Aborted transactions whose markers are at or after the log start offset.
    pub aborted: Vec<AbortedTxn>,
    /// Producer id -> base offset of its last batch.
    pub last_batches: HashMap<i64, i64>,
}

/// What a cleaning did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CleanStats {
    pub passes: u32,
    pub segments_replaced: u32,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub batches_dropped: u64,
    pub records_dropped: u64,
}

/// What a round found and did for one compacted partition (for metrics).
#[derive(Debug, Clone)]
pub struct PartitionReport {
    pub topic: String,
    pub partition: i32,
    /// Dirty share of the cleanable bytes after the round (0 when nothing is cleanable).
    pub dirty_ratio: f64,
    /// The cleaning, if one ran and finished, and how long it took.
    pub cleaned: Option<(CleanStats, Duration)>,
}

/// Why (and whether) a partition is due for cleaning.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CleanPlan {
    pub first_dirty_offset: i64,
    /// Offsets below this are cleanable (a segment boundary).
    pub cleanable_end: i64,
    pub dirty_bytes: u64,
    pub clean_bytes: u64,
    pub dirty_ratio: f64,
    pub due: bool,
}

#[derive(Debug, Default, Clone, Copy)]
struct PartitionState {
    first_dirty_offset: i64,
    /// The log's `truncation_count` when this was read: a truncation since (which may lower
    /// the checkpoint) makes the state be read again.
    truncations: u64,
    /// The earliest delete horizon among the batches the last cleaning kept.
    next_horizon_ms: Option<i64>,
}

/// The shard's cleaner. See the module header.
#[derive(Debug)]
pub struct Cleaner {
    config: CleanerConfig,
    map: RefCell<Option<OffsetMap>>,
    /// By (directory, `PartitionLog::instance_id`).
    state: RefCell<HashMap<(PathBuf, u64), PartitionState>>,
    throttle_started: Cell<Instant>,
    throttle_bytes: Cell<f64>,
    /// Totals since start (logged with each cleaning).
    cleanings: Cell<u64>,
}

impl Cleaner {
    pub fn new(config: CleanerConfig) -> Cleaner {
        Cleaner {
            config,
            map: RefCell::new(None),
            state: RefCell::new(HashMap::new()),
            throttle_started: Cell::new(Instant::now()),
            throttle_bytes: Cell::new(0.0),
            cleanings: Cell::new(0),
        }
    }

    pub fn config(&self) -> CleanerConfig {
        self.config
    }

    /// Cleanings done since start.
    pub fn cleanings(&self) -> u64 {
        self.cleanings.get()
    }

    /// One round over the shard's compacted partitions: each one that is due is cleaned.
    pub async fn clean_due_partitions(
        &self,
        partitions: &PartitionManager,
        now_ms: i64,
    ) -> Vec<PartitionReport> {
        let mut reports = Vec::new();
        let open_partitions = partitions.open_partitions();
        // Forget the partitions that closed (moved, deleted).
        let open_keys: HashSet<(PathBuf, u64)> = open_partitions
            .iter()
            .map(|(_, _, open)| state_key(&open.log))
            .collect();
        self.state.borrow_mut().retain(|k, _| open_keys.contains(k));
        for (topic, partition, open) in open_partitions {
            let (compact, settings) = {
                let s = open.settings.borrow();
                (s.cleanup_compact, s.compaction)
            };
            if !compact {
                continue;
            }
            let facts = {
                let producers = open.producers.borrow();
                PartitionFacts {
                    settings,
                    last_stable_offset: open.last_stable_offset(),
                    aborted: producers.aborted_in_segment(open.log.log_start_offset(), i64::MAX),
                    last_batches: producers.last_batch_offsets(),
                }
            };
            let started = Instant::now();
            let mut cleaned = None;
            match self.clean_if_due(&open.log, &facts, now_ms).await {
                Ok(Some(stats)) => {
                    let elapsed = started.elapsed();
                    info!(
                        topic,
                        partition,
                        passes = stats.passes,
                        segments = stats.segments_replaced,
                        bytes_read = stats.bytes_read,
                        bytes_written = stats.bytes_written,
                        records_dropped = stats.records_dropped,
                        ms = elapsed.as_millis() as u64,
                        "compacted"
                    );
                    cleaned = Some((stats, elapsed));
                }
                Ok(None) => {}
                Err(StorageError::Closed) => {}
                Err(err) => warn!(topic, partition, %err, "compaction failed"),
            }
            let dirty_ratio = match self.plan(&open.log, &facts, now_ms).await {
                Ok(plan) => plan.map_or(0.0, |p| p.dirty_ratio),
                Err(_) => 0.0,
            };
            reports.push(PartitionReport {
                topic,
                partition,
                dirty_ratio,
                cleaned,
            });
        }
        reports
    }

    async fn partition_state(&self, log: &PartitionLog) -> StorageResult<PartitionState> {
        if let Some(state) = self.state.borrow().get(&state_key(log))
            && state.truncations == log.truncation_count()
        {
            return Ok(*state);
        }
        let truncations = log.truncation_count();
        let first_dirty_offset = read_small_file(&log.dir().join(CHECKPOINT_FILE))
            .await?
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| s.trim().parse::<i64>().ok())
            .unwrap_or(0);
        let state = PartitionState {
            first_dirty_offset,
            truncations,
            next_horizon_ms: None,
        };
        self.state.borrow_mut().insert(state_key(log), state);
        Ok(state)
    }

    /// Whether `log` is due for cleaning now, and what it would clean.
    pub async fn plan(
        &self,
        log: &PartitionLog,
        facts: &PartitionFacts,
        now_ms: i64,
    ) -> StorageResult<Option<CleanPlan>> {
        let state = self.partition_state(log).await?;
        let closed = log.closed_segments();
        let log_start = log.log_start_offset();
        let first_dirty = state.first_dirty_offset.max(log_start);
        let mut first_uncleanable = facts
            .last_stable_offset
            .min(log.active_segment_base())
            .min(log.high_watermark());
        let lag = facts.settings.min_compaction_lag_ms;
        if lag > 0
            && let Some(young) = closed
                .iter()
                .find(|s| s.max_timestamp_ms > now_ms.saturating_sub(lag))
        {
            first_uncleanable = first_uncleanable.min(young.base_offset);
        }
        let cleanable: Vec<&ClosedSegment> = closed
            .iter()
            .take_while(|s| s.next_base <= first_uncleanable)
            .collect();
        let Some(last) = cleanable.last() else {
            return Ok(None);
        };
        let (dirty, clean): (Vec<&ClosedSegment>, Vec<&ClosedSegment>) =
            cleanable.iter().partition(|s| s.next_base > first_dirty);
        let dirty_bytes: u64 = dirty.iter().map(|s| s.size_bytes).sum();
        let clean_bytes: u64 = clean.iter().map(|s| s.size_bytes).sum();
        let total = dirty_bytes + clean_bytes;
        let dirty_ratio = if total == 0 {
            0.0
        } else {
            dirty_bytes as f64 / total as f64
        };
        let max_lag = facts.settings.max_compaction_lag_ms;
        let forced_by_lag = max_lag < i64::MAX
            && dirty.first().is_some_and(|s| {
                s.first_timestamp_ms
                    .is_some_and(|t| t >= 0 && t <= now_ms.saturating_sub(max_lag))
            });
        let horizon_passed = state.next_horizon_ms.is_some_and(|h| now_ms >= h);
        let due = (dirty_bytes > 0 && dirty_ratio >= facts.settings.min_cleanable_dirty_ratio)
            || forced_by_lag
            || horizon_passed;
        Ok(Some(CleanPlan {
            first_dirty_offset: first_dirty,
            cleanable_end: last.next_base,
            dirty_bytes,
            clean_bytes,
            dirty_ratio,
            due,
        }))
    }

    /// Cleans `log` if it is due: passes until its dirty part is cleaned. `None` if not due.
    pub async fn clean_if_due(
        &self,
        log: &PartitionLog,
        facts: &PartitionFacts,
        now_ms: i64,
    ) -> StorageResult<Option<CleanStats>> {
        let truncations = log.truncation_count();
        let Some(plan) = self.plan(log, facts, now_ms).await? else {
            return Ok(None);
        };
        if !plan.due {
            return Ok(None);
        }
        debug!(dir = %log.dir().display(), ?plan, "cleaning");
        let mut stats = CleanStats::default();
        let mut first_dirty = plan.first_dirty_offset;
        loop {
            let end = self
                .clean_pass(
                    log,
                    facts,
                    now_ms,
                    first_dirty,
                    plan.cleanable_end,
                    &mut stats,
                )
                .await?;
            stats.passes += 1;
            if log.truncation_count() != truncations {
                // The log was cut under the pass (its swaps were refused): its checkpoint is
                // the truncation's to lower, not this pass's to raise.
                break;
            }
            write_file_atomic(log.dir(), CHECKPOINT_FILE, end.to_string().as_bytes()).await?;
            if let Some(state) = self.state.borrow_mut().get_mut(&state_key(log)) {
                state.first_dirty_offset = end;
            }
            if end >= plan.cleanable_end || end <= first_dirty {
                break;
            }
            first_dirty = end;
        }
        self.cleanings.set(self.cleanings.get() + 1);
        Ok(Some(stats))
    }

    /// Waits as long as needed to keep read plus written bytes under the configured rate.
    async fn throttle(&self, bytes: u64) {
        let rate = self.config.io_bytes_per_second;
        if !rate.is_finite() {
            return;
        }
        let total = self.throttle_bytes.get() + bytes as f64;
        let elapsed = self.throttle_started.get().elapsed().as_secs_f64();
        let needed = total / rate;
        if needed > elapsed {
            glommio::timer::sleep(Duration::from_secs_f64(needed - elapsed)).await;
        }
        if elapsed > 1.0 {
            // A new period, so an idle stretch is not banked as credit.
            self.throttle_started.set(Instant::now());
            self.throttle_bytes.set(0.0);
        } else {
            self.throttle_bytes.set(total);
        }
    }

    /// One pass from `first_dirty`: fills the key map, rewrites the segments below its end.
    /// Returns the offset up to which the log is now clean.
    async fn clean_pass(
        &self,
        log: &PartitionLog,
        facts: &PartitionFacts,
        now_ms: i64,
        first_dirty: i64,
        cleanable_end: i64,
        stats: &mut CleanStats,
    ) -> StorageResult<i64> {
        let mut map = self.map.borrow_mut().take().unwrap_or_else(|| {
            OffsetMap::new(self.config.dedupe_buffer_bytes, self.config.load_factor)
        });
        map.clear();
        let result = self
            .clean_pass_with(
                &mut map,
                log,
                facts,
                now_ms,
                first_dirty,
                cleanable_end,
                stats,
            )
            .await;
        *self.map.borrow_mut() = Some(map);
        result
    }

    #[allow(clippy::too_many_arguments)]
    async fn clean_pass_with(
        &self,
        map: &mut OffsetMap,
        log: &PartitionLog,
        facts: &PartitionFacts,
        now_ms: i64,
        first_dirty: i64,
        cleanable_end: i64,
        stats: &mut CleanStats,
    ) -> StorageResult<i64> {
        // Taken before anything is read: a truncation after it voids the pass's swaps.
        let truncations = log.truncation_count();
        let segments: Vec<ClosedSegment> = log
            .closed_segments()
            .into_iter()
            .filter(|s| s.next_base <= cleanable_end)
            .collect();
        let aborted = AbortedIndex::new(&facts.aborted);
        // 1. The key map over the dirty part.
        let mut map_end = first_dirty;
        let mut full = false;
        'segments: for seg in segments.iter().filter(|s| s.next_base > first_dirty) {
            let mut position = 0;
            loop {
                let (bytes, next) = log
                    .read_closed(seg, position, STORAGE_CLEANER_READ_BYTES)
                    .await?;
                if bytes.is_empty() {
                    break;
                }
                stats.bytes_read += bytes.len() as u64;
                for batch in Batches(&bytes) {
                    let h = BatchHeader::view(batch).expect("scanned batch");
                    if h.last_offset() < first_dirty {
                        continue;
                    }
                    if !h.is_control() && !aborted.contains(h) {
                        match index_batch(map, batch, h) {
                            Indexed::All => {}
                            Indexed::FullAt(offset) => {
                                map_end = offset.max(first_dirty);
                                full = true;
                                break 'segments;
                            }
                        }
                    }
                    map_end = h.last_offset() + 1;
                }
                self.throttle(bytes.len() as u64).await;
                position = next;
            }
        }
        if !full {
            // Every dirty segment is in the map: the pass ends where the cleanable part does.
            map_end = segments
                .last()
                .map_or(first_dirty, |s| s.next_base)
                .max(first_dirty);
        }
        // 2. Rewrite, group by group, every segment below the map's end.
        let segment_bytes = log.config().segment_bytes;
        let mut filter = Filter {
            map,
            map_end,
            now_ms,
            delete_retention_ms: facts.settings.delete_retention_ms,
            aborted,
            last_batches: &facts.last_batches,
            txn_has_data: HashMap::new(),
            next_horizon_ms: None,
            markers_kept: HashSet::new(),
        };
        let to_clean: Vec<&ClosedSegment> = segments
            .iter()
            .filter(|s| s.base_offset < map_end)
            .collect();
        for group in group_segments(&to_clean, segment_bytes) {
            let base = group[0].base_offset;
            let group_end = group.last().expect("non-empty group").next_base;
            let mut writer = log.create_cleaned(base, truncations).await?;
            let mut failed = None;
            'group: for seg in &group {
                let mut position = 0;
                loop {
                    let read = log
                        .read_closed(seg, position, STORAGE_CLEANER_READ_BYTES)
                        .await;
                    let (bytes, next) = match read {
                        Ok(r) => r,
                        Err(e) => {
                            failed = Some(e);
                            break 'group;
                        }
                    };
                    if bytes.is_empty() {
                        break;
                    }
                    stats.bytes_read += bytes.len() as u64;
                    let mut written = 0u64;
                    for batch in Batches(&bytes) {
                        let action = filter.decide(batch, stats);
                        let out: &[u8] = match &action {
                            Action::Keep => batch,
                            Action::Rewrite(b) => b,
                            Action::Drop => continue,
                        };
                        written += out.len() as u64;
                        if let Err(e) = writer.append(out).await {
                            failed = Some(e);
                            break 'group;
                        }
                    }
                    stats.bytes_written += written;
                    self.throttle(bytes.len() as u64 + written).await;
                    position = next;
                }
            }
            if let Some(e) = failed {
                writer.abandon();
                return Err(e);
            }
            let entries: Vec<AbortedTxn> = facts
                .aborted
                .iter()
                .filter(|t| {
                    (base..group_end).contains(&t.last_offset)
                        && filter.markers_kept.contains(&t.last_offset)
                })
                .copied()
                .collect();
            let cleaned = writer.finish(&txn_index::encode(&entries)).await?;
            let bases: Vec<i64> = group.iter().map(|s| s.base_offset).collect();
            if !log.replace_segments(&bases, cleaned).await? {
                debug!(dir = %log.dir().display(), base, "segments changed during cleaning");
                return Ok(first_dirty);
            }
            stats.segments_replaced += bases.len() as u32;
        }
        if let Some(state) = self.state.borrow_mut().get_mut(&state_key(log)) {
            state.next_horizon_ms = filter.next_horizon_ms;
        }
        Ok(map_end)
    }
}

fn state_key(log: &PartitionLog) -> (PathBuf, u64) {
    (log.dir().to_path_buf(), log.instance_id())
}

/// Consecutive segments whose total size fits `segment_bytes` and whose offsets fit one
/// segment's 32-bit relative range (Kafka's `groupSegmentsBySize`).
fn group_segments<'a>(
    segments: &[&'a ClosedSegment],
    segment_bytes: u64,
) -> Vec<Vec<&'a ClosedSegment>> {
    let mut groups: Vec<Vec<&ClosedSegment>> = Vec::new();
    let mut size = 0u64;
    for &seg in segments {
        let fits = groups.last().is_some_and(|g| {
            size + seg.size_bytes <= segment_bytes
                && seg.next_base - g[0].base_offset <= i64::from(u32::MAX)
        });
        if fits {
            groups.last_mut().expect("group").push(seg);
            size += seg.size_bytes;
        } else {
            groups.push(vec![seg]);
            size = seg.size_bytes;
        }
    }
    groups
}

/// The whole batches of a buffer read by `read_closed`.
struct Batches<'a>(&'a [u8]);

impl<'a> Iterator for Batches<'a> {
    type Item = &'a [u8];
    fn next(&mut self) -> Option<&'a [u8]> {
        let h = BatchHeader::view(self.0)?;
        let size = (h.size_bytes() as usize).min(self.0.len());
        let (batch, rest) = self.0.split_at(size);
        self.0 = rest;
        Some(batch)
    }
}

enum Indexed {
    All,
    /// The map filled up at this record's offset.
    FullAt(i64),
}

/// Puts a data batch's keys into the map. A batch whose records cannot be read (it inflates
/// past the bound, or is malformed) adds nothing: its keys' older records are then kept, the
/// safe side.
fn index_batch(map: &mut OffsetMap, batch: &[u8], h: &BatchHeader) -> Indexed {
    let base = h.base_offset.get();
    let Ok(section) = records::section(batch, STORAGE_CLEANER_INFLATED_BATCH_BYTES_MAX) else {
        return Indexed::All;
    };
    let Ok(parsed) = records::parse(&section, h.records_count.get()) else {
        return Indexed::All;
    };
    for r in &parsed {
        let Some(key) = r.key else { continue };
        let offset = base + i64::from(r.offset_delta);
        if !map.put(records::key_hash(key), offset) {
            return Indexed::FullAt(offset);
        }
    }
    Indexed::All
}

/// Aborted transactions by producer: `(first offset, marker offset)` ranges.
#[derive(Debug, Default)]
struct AbortedIndex(HashMap<i64, Vec<(i64, i64)>>);

impl AbortedIndex {
    fn new(aborted: &[AbortedTxn]) -> Self {
        let mut map: HashMap<i64, Vec<(i64, i64)>> = HashMap::new();
        for t in aborted {
            map.entry(t.producer_id)
                .or_default()
                .push((t.first_offset, t.last_offset));
        }
        AbortedIndex(map)
    }

    /// Whether a transactional data batch belongs to an aborted transaction.
    fn contains(&self, h: &BatchHeader) -> bool {
        if !h.is_transactional() || h.is_control() {
            return false;
        }
        let offset = h.base_offset.get();
        self.0
            .get(&h.producer_id.get())
            .is_some_and(|ranges| ranges.iter().any(|&(f, l)| f <= offset && offset < l))
    }
}

enum Action {
    Keep,
    Drop,
    Rewrite(Vec<u8>),
}

/// The per-batch rules of a rewrite (module header), with what they learn along the log.
struct Filter<'a> {
    map: &'a OffsetMap,
    map_end: i64,
    now_ms: i64,
    delete_retention_ms: i64,
    aborted: AbortedIndex,
    last_batches: &'a HashMap<i64, i64>,
    /// Per transactional producer: whether its current transaction kept any record.
    txn_has_data: HashMap<i64, bool>,
    next_horizon_ms: Option<i64>,
    /// Offsets of the control batches kept.
    markers_kept: HashSet<i64>,
}

impl Filter<'_> {
    fn horizon(&self) -> i64 {
        self.now_ms.saturating_add(self.delete_retention_ms)
    }

    fn note_horizon(&mut self, horizon: i64) {
        self.next_horizon_ms = Some(self.next_horizon_ms.map_or(horizon, |h| h.min(horizon)));
    }

    fn decide(&mut self, batch: &[u8], stats: &mut CleanStats) -> Action {
        let h = BatchHeader::view(batch).expect("scanned batch");
        let base = h.base_offset.get();
        let producer_id = h.producer_id.get();
        let count = u64::try_from(h.records_count.get()).unwrap_or(0);
        if base >= self.map_end {
            if h.is_control() {
                self.markers_kept.insert(base);
            } else if h.is_transactional() && count > 0 {
                self.txn_has_data.insert(producer_id, true);
            }
            return Action::Keep;
        }
        let last_of_producer =
            producer_id >= 0 && self.last_batches.get(&producer_id) == Some(&base);
        let existing_horizon = records::delete_horizon_ms(h);
        if h.is_control() {
            let has_data = self.txn_has_data.remove(&producer_id).unwrap_or(false);
            if has_data {
                self.markers_kept.insert(base);
                return Action::Keep;
            }
            return match existing_horizon {
                Some(horizon) if self.now_ms >= horizon => {
                    stats.batches_dropped += 1;
                    stats.records_dropped += count;
                    Action::Drop
                }
                Some(horizon) => {
                    self.note_horizon(horizon);
                    self.markers_kept.insert(base);
                    Action::Keep
                }
                None => {
                    let horizon = self.horizon();
                    let section = &batch[BATCH_HEADER_BYTES..];
                    let Ok(all) = records::parse(section, h.records_count.get()) else {
                        self.markers_kept.insert(base);
                        return Action::Keep;
                    };
                    match records::rebuild(batch, &all, Some(horizon)) {
                        Ok(b) => {
                            self.note_horizon(horizon);
                            self.markers_kept.insert(base);
                            Action::Rewrite(b)
                        }
                        Err(_) => {
                            self.markers_kept.insert(base);
                            Action::Keep
                        }
                    }
                }
            };
        }
        if self.aborted.contains(h) {
            stats.records_dropped += count;
            if last_of_producer {
                return match records::rebuild(batch, &[], None) {
                    Ok(b) => Action::Rewrite(b),
                    Err(_) => Action::Keep,
                };
            }
            stats.batches_dropped += 1;
            return Action::Drop;
        }
        let Ok(section) = records::section(batch, STORAGE_CLEANER_INFLATED_BATCH_BYTES_MAX) else {
            self.keep_whole(h, count);
            return Action::Keep;
        };
        let Ok(parsed) = records::parse(&section, h.records_count.get()) else {
            self.keep_whole(h, count);
            return Action::Keep;
        };
        let mut kept: Vec<RecordView<'_>> = Vec::with_capacity(parsed.len());
        let mut tombstone_kept = false;
        for r in &parsed {
            let offset = base + i64::from(r.offset_delta);
            let keep = if offset >= self.map_end {
                true
            } else if let Some(key) = r.key {
                let latest = self
                    .map
                    .get(records::key_hash(key))
                    .is_none_or(|o| offset >= o);
                let tombstone_expired =
                    r.value.is_none() && existing_horizon.is_some_and(|hz| self.now_ms >= hz);
                latest && !tombstone_expired
            } else {
                false
            };
            if keep {
                tombstone_kept |= r.value.is_none() && offset < self.map_end;
                kept.push(*r);
            }
        }
        if h.is_transactional() && !kept.is_empty() {
            self.txn_has_data.insert(producer_id, true);
        }
        let set_horizon = tombstone_kept && existing_horizon.is_none();
        if tombstone_kept && let Some(hz) = existing_horizon {
            self.note_horizon(hz);
        }
        let dropped = (parsed.len() - kept.len()) as u64;
        if dropped == 0 && !set_horizon {
            return Action::Keep;
        }
        stats.records_dropped += dropped;
        if kept.is_empty() && !last_of_producer {
            stats.batches_dropped += 1;
            return Action::Drop;
        }
        let horizon = set_horizon.then(|| self.horizon());
        match records::rebuild(batch, &kept, horizon) {
            Ok(b) => {
                if let Some(hz) = horizon {
                    self.note_horizon(hz);
                }
                Action::Rewrite(b)
            }
            Err(err) => {
                debug!(%err, base, "cannot rebuild a batch; keeping it whole");
                stats.records_dropped -= dropped;
                Action::Keep
            }
        }
    }

    fn keep_whole(&mut self, h: &BatchHeader, count: u64) {
        if h.is_transactional() && count > 0 {
            self.txn_has_data.insert(h.producer_id.get(), true);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::rc::Rc;

    use bytes::Bytes;

    use super::*;
    use crate::storage::batch::{ControlMarker, TRANSACTIONAL_ATTRIBUTE_BIT, build_control_batch};
    use crate::storage::compression::Codec;
    use crate::storage::log::{LogEnv, SwapStop};
    use crate::storage::{LogConfig, ShardCache};

    fn run<F: std::future::Future<Output = ()> + 'static>(f: impl FnOnce() -> F + Send + 'static) {
        glommio::LocalExecutorBuilder::default()
            .spawn(f)
            .expect("executor")
            .join()
            .expect("join");
    }

    fn config() -> LogConfig {
        LogConfig {
            segment_bytes: 8192,
            index_interval_bytes: 1024,
            ..LogConfig::default()
        }
    }

    async fn open(path: &std::path::Path) -> PartitionLog {
        let env = LogEnv {
            cache: Rc::new(ShardCache::new(1 << 20)),
            background_queue: None,
            reserve_space: false,
            ..LogEnv::default()
        };
        PartitionLog::open_with(path, config(), env).await.unwrap()
    }

    fn cleaner(dedupe_buffer_bytes: usize) -> Cleaner {
        Cleaner::new(CleanerConfig {
            enabled: true,
            backoff_ms: 0,
            dedupe_buffer_bytes,
            load_factor: 0.9,
            io_bytes_per_second: f64::INFINITY,
        })
    }

    fn facts() -> PartitionFacts {
        PartitionFacts {
            settings: CompactionSettings {
                min_cleanable_dirty_ratio: 0.0,
                delete_retention_ms: 1000,
                min_compaction_lag_ms: 0,
                max_compaction_lag_ms: i64::MAX,
            },
            last_stable_offset: i64::MAX,
            aborted: Vec::new(),
            last_batches: HashMap::new(),
        }
    }

    /// (offset, key, value) of every record, and the number of batches, read back in order.
    type Read = Vec<(i64, Option<Vec<u8>>, Option<Vec<u8>>)>;

    async fn read_all(log: &PartitionLog) -> (Read, usize) {
        let mut out = Vec::new();
        let mut batches = 0;
        let mut offset = log.log_start_offset();
        while offset < log.high_watermark() {
            let bytes = log.read(offset, 1 << 20).await.unwrap().to_vec();
            if bytes.is_empty() {
                break;
            }
            for batch in Batches(&bytes) {
                let h = BatchHeader::view(batch).unwrap();
                assert_eq!(crate::storage::batch::compute_crc(batch), h.crc.get());
                offset = h.last_offset() + 1;
                batches += 1;
                if h.is_control() {
                    out.push((h.base_offset.get(), Some(b"<marker>".to_vec()), None));
                    continue;
                }
                let section = records::section(batch, 1 << 24).unwrap();
                for r in records::parse(&section, h.records_count.get()).unwrap() {
                    out.push((
                        h.base_offset.get() + i64::from(r.offset_delta),
                        r.key.map(<[u8]>::to_vec),
                        r.value.map(<[u8]>::to_vec),
                    ));
                }
            }
        }
        (out, batches)
    }

    fn keyed(key: &str, value: Option<&str>, codec: Codec) -> Bytes {
        Bytes::from(records::build_keyed_batch(
            &[(Some(key.as_bytes()), value.map(str::as_bytes))],
            1_000,
            codec,
            0,
            (-1, -1, -1),
        ))
    }

    /// The model: below `end`, only the last record of each key; at and above it, everything.
    fn latest_per_key(all: &Read, end: i64) -> Read {
        all.iter()
            .filter(|(o, k, _)| {
                *o >= end || !all.iter().any(|(o2, k2, _)| o2 > o && *o2 < end && k2 == k)
            })
            .cloned()
            .collect()
    }

    #[test]
    fn keeps_the_latest_record_per_key_with_offsets_and_survives_reopening() {
        run(|| async {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("t-0");
            let log = open(&path).await;
            let codecs = [
                Codec::None,
                Codec::Gzip,
                Codec::Snappy,
                Codec::Lz4,
                Codec::Zstd,
            ];
            for i in 0..300usize {
                // Hex of a hash: compresses to about half, so segments still fill.
                let value = format!("{:032x}{:032x}", records::key_hash(&i.to_be_bytes()), i);
                let batch = keyed(&format!("k{}", i % 17), Some(&value), codecs[i % 5]);
                log.append(batch).await.unwrap();
            }
            let (before, _) = read_all(&log).await;
            assert!(log.segment_count() > 3, "{}", log.segment_count());
            let end = log.active_segment_base();
            let cleaner = cleaner(1 << 20);
            let stats = cleaner
                .clean_if_due(&log, &facts(), 0)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(stats.passes, 1);
            assert!(stats.bytes_written < stats.bytes_read / 2, "{stats:?}");
            let expected = latest_per_key(&before, end);
            let (after, _) = read_all(&log).await;
            assert_eq!(after, expected);
            assert!(after.len() < before.len());
            // Nothing dirty is left: not due again.
            assert!(
                cleaner
                    .clean_if_due(&log, &facts(), 0)
                    .await
                    .unwrap()
                    .is_none()
            );
            // Appends go on; the cleaned segments recover as they are.
            log.append(keyed("k1", Some("new"), Codec::None))
                .await
                .unwrap();
            log.close().await.unwrap();
            let log = open(&path).await;
            let (reopened, _) = read_all(&log).await;
            assert_eq!(&reopened[..after.len()], &after[..]);
            assert_eq!(reopened.len(), after.len() + 1);
            let mut expected_files: Vec<String> = std::fs::read_dir(&path)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".cleaned") || n.ends_with(".swap"))
                .collect();
            expected_files.sort();
            assert!(expected_files.is_empty(), "{expected_files:?}");
            log.close().await.unwrap();
        });
    }

    #[test]
    fn broker_settings_are_split_between_shards() {
        let config = Config::build(&[]).unwrap();
        let shard = CleanerConfig::for_shard(&config, 2);
        assert!(shard.enabled);
        assert_eq!(shard.backoff_ms, 15_000);
        assert_eq!(shard.dedupe_buffer_bytes, 64 << 20);
        assert_eq!(
            shard.io_bytes_per_second,
            f64::INFINITY,
            "Kafka's default: no throttle"
        );
        let config = Config::build(&[
            (
                "log.cleaner.io.max.bytes.per.second".into(),
                "1000000".into(),
            ),
            ("log.cleaner.enable".into(), "false".into()),
            ("log.cleaner.io.buffer.load.factor".into(), "0.5".into()),
        ])
        .unwrap();
        let shard = CleanerConfig::for_shard(&config, 4);
        assert!(!shard.enabled);
        assert_eq!(shard.io_bytes_per_second, 250_000.0);
        assert_eq!(shard.load_factor, 0.5);
        assert!(
            Config::build(&[("log.cleaner.io.buffer.load.factor".into(), "2".into())]).is_err()
        );
    }

    #[test]
    fn several_passes_when_the_key_map_is_full() {
        run(|| async {
            let dir = tempfile::tempdir().unwrap();
            let log = open(&dir.path().join("t-0")).await;
            for round in 0..3 {
                for key in 0..60 {
                    let value = format!("{round}-{}", "y".repeat(100));
                    log.append(keyed(&format!("key-{key}"), Some(&value), Codec::None))
                        .await
                        .unwrap();
                }
            }
            let (before, _) = read_all(&log).await;
            let end = log.active_segment_base();
            // Room for 18 keys of the 60.
            let cleaner = cleaner(offset_map::SLOT_BYTES * 20);
            let stats = cleaner
                .clean_if_due(&log, &facts(), 0)
                .await
                .unwrap()
                .unwrap();
            assert!(stats.passes > 2, "{stats:?}");
            let (after, _) = read_all(&log).await;
            assert_eq!(after, latest_per_key(&before, end));
            log.close().await.unwrap();
        });
    }

    #[test]
    fn tombstones_stay_for_delete_retention_after_the_cleaning_that_saw_them() {
        run(|| async {
            let dir = tempfile::tempdir().unwrap();
            let log = open(&dir.path().join("t-0")).await;
            log.append(keyed("gone", Some("v"), Codec::None))
                .await
                .unwrap();
            log.append(keyed("gone", None, Codec::Lz4)).await.unwrap();
            for i in 0..80 {
                let value = "z".repeat(200);
                log.append(keyed(
                    &format!("other-{}", i % 5),
                    Some(&value),
                    Codec::None,
                ))
                .await
                .unwrap();
            }
            let cleaner = cleaner(1 << 20);
            let facts = facts();
            cleaner
                .clean_if_due(&log, &facts, 10_000)
                .await
                .unwrap()
                .unwrap();
            let (after, _) = read_all(&log).await;
            let gone: Vec<_> = after
                .iter()
                .filter(|(_, k, _)| k.as_deref() == Some(&b"gone"[..]))
                .collect();
            assert_eq!(gone.len(), 1, "the tombstone alone is left: {gone:?}");
            assert_eq!(gone[0].0, 1);
            assert!(gone[0].2.is_none());
            // Before the horizon (10 000 + 1000 ms) nothing is due and it stays.
            assert!(
                cleaner
                    .clean_if_due(&log, &facts, 10_500)
                    .await
                    .unwrap()
                    .is_none()
            );
            // After it, the horizon alone makes the partition due, and the tombstone goes.
            cleaner
                .clean_if_due(&log, &facts, 11_001)
                .await
                .unwrap()
                .unwrap();
            let (after, _) = read_all(&log).await;
            assert!(
                after
                    .iter()
                    .all(|(_, k, _)| k.as_deref() != Some(&b"gone"[..]))
            );
            log.close().await.unwrap();
        });
    }

    #[test]
    fn aborted_data_goes_markers_follow_and_last_producer_batches_stay() {
        run(|| async {
            let dir = tempfile::tempdir().unwrap();
            let log = open(&dir.path().join("t-0")).await;
            let txn = |key: &str, pid: i64, seq: i32| {
                Bytes::from(records::build_keyed_batch(
                    &[(Some(key.as_bytes()), Some(b"txn-value"))],
                    1_000,
                    Codec::None,
                    TRANSACTIONAL_ATTRIBUTE_BIT,
                    (pid, 0, seq),
                ))
            };
            let marker = |pid: i64, commit: bool| {
                Bytes::from(build_control_batch(
                    pid,
                    0,
                    ControlMarker {
                        commit,
                        coordinator_epoch: 0,
                    },
                    1_000,
                ))
            };
            // Producer 7 aborts a transaction at 0..=1 (marker 2); producer 8 commits 3 (marker
            // 4); producer 9 (idempotent) writes key "idem" at 5, superseded at 6.
            log.append(txn("a", 7, 0)).await.unwrap();
            log.append(txn("b", 7, 1)).await.unwrap();
            log.append(marker(7, false)).await.unwrap();
            log.append(txn("c", 8, 0)).await.unwrap();
            log.append(marker(8, true)).await.unwrap();
            let idem = records::build_keyed_batch(
                &[(Some(b"idem"), Some(b"1"))],
                1_000,
                Codec::None,
                0,
                (9, 0, 0),
            );
            log.append(Bytes::from(idem)).await.unwrap();
            log.append(keyed("idem", Some("2"), Codec::None))
                .await
                .unwrap();
            log.append(keyed("c", Some("later"), Codec::None))
                .await
                .unwrap();
            for i in 0..60 {
                log.append(keyed(
                    &format!("fill-{}", i % 3),
                    Some(&"f".repeat(200)),
                    Codec::None,
                ))
                .await
                .unwrap();
            }
            let mut facts = facts();
            facts.aborted = vec![AbortedTxn {
                producer_id: 7,
                first_offset: 0,
                last_offset: 2,
                last_stable_offset: 0,
            }];
            facts.last_batches = HashMap::from([(9, 5)]);
            let cleaner = cleaner(1 << 20);
            cleaner
                .clean_if_due(&log, &facts, 10_000)
                .await
                .unwrap()
                .unwrap();
            let (after, _) = read_all(&log).await;
            let offsets: Vec<i64> = after.iter().map(|r| r.0).take_while(|&o| o < 9).collect();
            // Aborted 0, 1 gone; both markers kept (the abort's until its horizon; the commit's
            // transaction is empty now that "c" has a later value, so it too gets a horizon);
            // 5's record is gone but its batch stays, empty.
            assert_eq!(offsets, [2, 4, 6, 7], "{after:?}");
            let bytes = log.read(5, 1).await.unwrap().to_vec();
            let h = BatchHeader::view(&bytes).unwrap();
            assert_eq!(
                (
                    h.base_offset.get(),
                    h.records_count.get(),
                    h.producer_id.get()
                ),
                (5, 0, 9),
                "the producer's last batch is kept empty"
            );
            assert_eq!(h.base_sequence.get(), 0);
            cleaner
                .clean_if_due(&log, &facts, 11_001)
                .await
                .unwrap()
                .unwrap();
            let (after, _) = read_all(&log).await;
            let offsets: Vec<i64> = after.iter().map(|r| r.0).take_while(|&o| o < 9).collect();
            assert_eq!(
                offsets,
                [6, 7],
                "markers gone after their horizon: {after:?}"
            );
            log.close().await.unwrap();
        });
    }

    #[test]
    fn nothing_past_the_last_stable_offset_or_younger_than_the_lag_is_cleaned() {
        run(|| async {
            let dir = tempfile::tempdir().unwrap();
            let log = open(&dir.path().join("t-0")).await;
            for i in 0..100 {
                log.append(keyed(
                    "same",
                    Some(&format!("{i}{}", "q".repeat(200))),
                    Codec::None,
                ))
                .await
                .unwrap();
            }
            let cleaner = cleaner(1 << 20);
            let mut facts = facts();
            facts.last_stable_offset = 0;
            assert!(
                cleaner
                    .clean_if_due(&log, &facts, 0)
                    .await
                    .unwrap()
                    .is_none()
            );
            facts.last_stable_offset = i64::MAX;
            facts.settings.min_compaction_lag_ms = 10_000;
            // Batches carry timestamp 1000: younger than the lag at 5000, not at 20 000.
            assert!(
                cleaner
                    .clean_if_due(&log, &facts, 5_000)
                    .await
                    .unwrap()
                    .is_none()
            );
            facts.settings.min_cleanable_dirty_ratio = 1.0;
            facts.settings.max_compaction_lag_ms = 100;
            // A ratio of 1.0 is reached by an all-dirty log; max lag forces it anyway.
            assert!(
                cleaner
                    .clean_if_due(&log, &facts, 20_000)
                    .await
                    .unwrap()
                    .is_some()
            );
            log.close().await.unwrap();
        });
    }

    #[test]
    fn a_swap_stopped_anywhere_recovers_the_old_set_or_the_new_one() {
        for stop in [
            None,
            Some(SwapStop::BeforeManifest),
            Some(SwapStop::AfterManifest),
            Some(SwapStop::AfterFirstRename),
            Some(SwapStop::BeforeDeletes),
        ] {
            run(move || async move {
                let dir = tempfile::tempdir().unwrap();
                let path = dir.path().join("t-0");
                let log = open(&path).await;
                let cleaner = cleaner(1 << 20);
                for round in 0..2 {
                    for i in 0..200 {
                        let value = format!("{round}-{i}-{}", "w".repeat(150));
                        let codec = if i % 2 == 0 { Codec::None } else { Codec::Gzip };
                        log.append(keyed(&format!("k{}", i % 4), Some(&value), codec))
                            .await
                            .unwrap();
                    }
                    if round == 0 {
                        // Leaves small cleaned segments, which the next cleaning merges with
                        // others: groups of several segments, each swap replacing them all.
                        cleaner
                            .clean_if_due(&log, &facts(), 0)
                            .await
                            .unwrap()
                            .unwrap();
                    }
                }
                let (before, _) = read_all(&log).await;
                let end = log.active_segment_base();
                let cleaned = latest_per_key(&before, end);
                let segments_before = log.segment_count();
                if let Some(stop) = stop {
                    log.inject_swap_stop(stop);
                    assert!(cleaner.clean_if_due(&log, &facts(), 0).await.is_err());
                    drop(log);
                } else {
                    cleaner
                        .clean_if_due(&log, &facts(), 0)
                        .await
                        .unwrap()
                        .unwrap();
                    log.close().await.unwrap();
                }
                let log = open(&path).await;
                let (after, _) = read_all(&log).await;
                // The stop came in the first group's swap: that group is old or new whole, and
                // the later groups are old.
                assert!(
                    after.windows(2).all(|w| w[0].0 < w[1].0),
                    "offsets grow, no segment is doubled ({stop:?})"
                );
                assert!(
                    after.iter().all(|r| before.contains(r)),
                    "nothing new ({stop:?})"
                );
                assert!(
                    cleaned.iter().all(|r| after.contains(r)),
                    "nothing the cleaning keeps was lost ({stop:?})"
                );
                if stop == Some(SwapStop::BeforeManifest) {
                    assert!(after == before, "the old set");
                    assert_eq!(log.segment_count(), segments_before);
                } else {
                    assert!(
                        log.segment_count() < segments_before,
                        "the first group swapped"
                    );
                }
                cleaner.clean_if_due(&log, &facts(), 0).await.unwrap();
                assert!(
                    read_all(&log).await.0 == cleaned,
                    "cleaned again ({stop:?})"
                );
                let leftovers: Vec<String> = std::fs::read_dir(&path)
                    .unwrap()
                    .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .filter(|n| n.ends_with(".cleaned") || n.ends_with(".swap"))
                    .collect();
                assert!(leftovers.is_empty(), "{leftovers:?}");
                log.close().await.unwrap();
            });
        }
    }
}
