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
use std::collections::HashMap;
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

const CHECKPOINT_FILE: &str = "cleaner-offset.checkpoint";

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
    /// This shard's share of `log.cleaner.io.max.bytes.per.second`.
    pub io_bytes_per_second: f64,
}

impl CleanerConfig {
    /// The settings of one of `shard_count` shards.
    pub fn for_shard(config: &Config, shard_count: usize) -> CleanerConfig {
        let shards = shard_count.max(1);
        let dedupe = config.int("log.cleaner.dedupe.buffer.size", 128 << 20).max(0) as usize;
        CleanerConfig {
            enabled: config
                .entries
                .get("log.cleaner.enable")
                .is_none_or(|e| e.value.trim() == "true"),
            backoff_ms: config.int("log.cleaner.backoff.ms", 15_000).max(0) as u64,
            dedupe_buffer_bytes: (dedupe / shards).min(STORAGE_CLEANER_DEDUPE_BYTES_MAX),
            load_factor: config.double("log.cleaner.io.buffer.load.factor", 0.9),
            io_bytes_per_second: config.double("log.cleaner.io.max.bytes.per.second", f64::MAX)
                / shards as f64,
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
    /// The earliest delete horizon among the batches the last cleaning kept.
    next_horizon_ms: Option<i64>,
}

/// The shard's cleaner. See the module header.
#[derive(Debug)]
pub struct Cleaner {
    config: CleanerConfig,
    map: RefCell<Option<OffsetMap>>,
    state: RefCell<HashMap<PathBuf, PartitionState>>,
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
    pub async fn clean_due_partitions(&self, partitions: &PartitionManager, now_ms: i64) {
        for (topic, partition, open) in partitions.open_partitions() {
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
            match self.clean_if_due(&open.log, &facts, now_ms).await {
                Ok(Some(stats)) => info!(
                    topic,
                    partition,
                    passes = stats.passes,
                    segments = stats.segments_replaced,
                    bytes_read = stats.bytes_read,
                    bytes_written = stats.bytes_written,
                    records_dropped = stats.records_dropped,
                    "compacted"
                ),
                Ok(None) => {}
                Err(StorageError::Closed) => {}
                Err(err) => warn!(topic, partition, %err, "compaction failed"),
            }
        }
    }

    async fn partition_state(&self, log: &PartitionLog) -> StorageResult<PartitionState> {
        if let Some(state) = self.state.borrow().get(log.dir()) {
            return Ok(*state);
        }
        let first_dirty_offset = read_small_file(&log.dir().join(CHECKPOINT_FILE))
            .await?
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| s.trim().parse::<i64>().ok())
            .unwrap_or(0);
        let state = PartitionState {
            first_dirty_offset,
            next_horizon_ms: None,
        };
        self.state
            .borrow_mut()
            .insert(log.dir().to_path_buf(), state);
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
                .clean_pass(log, facts, now_ms, first_dirty, plan.cleanable_end, &mut stats)
                .await?;
            stats.passes += 1;
            write_file_atomic(log.dir(), CHECKPOINT_FILE, end.to_string().as_bytes()).await?;
            if let Some(state) = self.state.borrow_mut().get_mut(log.dir()) {
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
        if !rate.is_finite() || rate >= f64::MAX / 2.0 {
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
            markers_kept: Vec::new(),
        };
        let to_clean: Vec<&ClosedSegment> =
            segments.iter().filter(|s| s.base_offset < map_end).collect();
        for group in group_segments(&to_clean, segment_bytes) {
            let base = group[0].base_offset;
            let group_end = group.last().expect("non-empty group").next_base;
            let mut writer = log.create_cleaned(base).await?;
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
        if let Some(state) = self.state.borrow_mut().get_mut(log.dir()) {
            state.next_horizon_ms = filter.next_horizon_ms;
        }
        Ok(map_end)
    }
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
    markers_kept: Vec<i64>,
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
                self.markers_kept.push(base);
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
                self.markers_kept.push(base);
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
                    self.markers_kept.push(base);
                    Action::Keep
                }
                None => {
                    let horizon = self.horizon();
                    let section = &batch[BATCH_HEADER_BYTES..];
                    let Ok(all) = records::parse(section, h.records_count.get()) else {
                        self.markers_kept.push(base);
                        return Action::Keep;
                    };
                    match records::rebuild(batch, &all, Some(horizon)) {
                        Ok(b) => {
                            self.note_horizon(horizon);
                            self.markers_kept.push(base);
                            Action::Rewrite(b)
                        }
                        Err(_) => {
                            self.markers_kept.push(base);
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
                    r.value_is_null && existing_horizon.is_some_and(|hz| self.now_ms >= hz);
                latest && !tombstone_expired
            } else {
                false
            };
            if keep {
                tombstone_kept |= r.value_is_null && offset < self.map_end;
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
