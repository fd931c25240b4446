//! `PartitionLog`: one partition's ordered set of segments, with the append pipeline, reads,
//! lookups, retention and recovery.
//!
//! Ownership: one `PartitionLog` per partition, owned by the shard that owns the partition;
//! everything inside is `Rc`/`RefCell`/`Cell` and no `RefCell` borrow is held across an await.
//!
//! Lifecycle: `open` recovers (or creates) the directory and spawns the log's writer task on
//! the current executor; `close` drains and stops it, syncs, and writes the active segment's
//! indexes. Dropping without `close` lets the writer finish what was staged and exit; the next
//! `open` then recovers by scanning.
//!
//! Append pipeline (group commit): `append` validates every batch, then, synchronously in its
//! first poll (so appends are ordered by first poll), assigns offsets and copies the batches
//! into the current *staging* buffer, an aligned DMA buffer that starts with the partial tail
//! page of the log. The writer task takes the whole staging buffer, writes it with one direct
//! write (padded with zeros to the page end), then fdatasyncs (policy `EveryAppend`), and only
//! then moves the durable end (and with it the high watermark) and resolves the appends.
//! Everything staged while a write or fdatasync was in flight goes out in the next write and
//! shares the next fdatasync. Because one writer issues one write at a time, rewrites of the
//! tail page land in order.
//!
//! Failures: if a write or fdatasync fails (disk full, EIO), every staged append fails with
//! `StorageError::Io`, the in-memory state (offsets, indexes, cache) is rolled back to the
//! last durable batch, and the next append rewrites from there. Nothing after the durable
//! end is ever visible to readers.
//!
//! Two ends: the *durable end* (`durable_end`) is where written and durable data ends; the
//! *high watermark* (`high_watermark`) is what consumers may read, min(durable end, the bound
//! the replication layer sets with `set_replicated_high_watermark`, the minimum over the
//! ISR). Without a bound (every single-replica partition) the two are the same. `read` and
//! `read_below` stop at the high watermark; `read_replica` (a follower's fetch, the producer
//! state replay) at the durable end; an offset past the durable end is out of range, one
//! between the two ends gets an empty answer (as Kafka answers a consumer between its high
//! watermark and log end). Retention only deletes segments wholly below the high watermark.
//!
//! Replication hooks: `append_replica` appends a follower's fetched batches byte for byte
//! (offsets, leader epochs and timestamps as the leader wrote them) through the same staging,
//! group commit and rollback, refusing batches that overlap the log or go back
//! (`StorageError::NonContiguous`; gaps, as a compacted leader's batches leave, are kept). Leader epochs live in the `epoch_cache`, persisted as
//! `leader-epoch-checkpoint`: `set_leader_epoch` starts an epoch at the log end and makes
//! `append` stamp it into every batch (header bytes 12..16, outside the CRC; before any call
//! the field stays as the producer wrote it); `epoch_end_offset` answers OffsetsForLeaderEpoch.
//! A missing checkpoint is rebuilt at open from the batches (all of the last segment, the
//! first batch of each closed one). `truncate_to` and `truncate_fully_and_start_at`
//! (`log/truncate.rs`) cut the log back at a batch boundary, or restart it empty, crash-safely.
//!
//! Space: the active segment's file is reserved (fallocate, file size included) ahead of the
//! tail by a task on the background queue, in steps that grow with what the segment has taken
//! (`segment::reserve_step`: 1 MiB for a partition written now and then, up to 64 MiB for a
//! busy one), so a busy partition's hot path never grows the file and idle partitions do not
//! hold 64 MiB each; each step comes out of the shard's budget (`storage::reserve`), and past
//! it a segment appends without reserving. The end of the log is found by scanning, never
//! from the file size.
//!
//! Reads: the shard cache first; else the sparse index gives a position and one aligned direct
//! read fetches whole batches, which are copied once into a `Bytes`. That copy is deliberate:
//! glommio's `ReadResult`/`DmaBuffer` are !Send (they may belong to the reactor's registered
//! buffer pool) and a fetch response may cross the channel mesh, so the data must be owned
//! by a Send buffer; one memcpy of a contiguous range costs far less than the disk read.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use glommio::TaskQueueHandle;
use glommio::io::DmaBuffer;

use super::batch::{self, BATCH_HEADER_BYTES, BatchHeader};
use super::cache::ShardCache;
use super::config::{FlushPolicy, LogConfig, TimestampType};
use super::epoch_cache::{self, EpochCache};
use super::error::{StorageError, StorageResult};
use super::index::{OffsetIndex, TimeIndex};
use super::records;
use super::reserve::{ReserveBudget, ReserveGrant, budgeted_target};
use super::segment::{
    self, ScanEnd, Segment, SegmentMark, align_down, align_up, open_log_file, read_small_file,
    reserve_step, scan, segment_path, write_file_atomic,
};
use crate::limits::{
    STORAGE_IO_ALIGNMENT_BYTES, STORAGE_STAGED_BYTES_MAX, STORAGE_STAGING_BUFFER_BYTES,
};
use crate::runtime::event::Event;
use recovery::{probe_device, recover_segment};
use writer::{finalize_segment, writer_loop};

mod compact;
mod recovery;
#[cfg(test)]
mod replica_tests;
mod truncate;
mod writer;

pub use compact::{CleanedSegment, CleanedWriter, ClosedSegment, SwapStop};

const CHECKPOINT_FILE: &str = "log-start-offset.checkpoint";
const READ_AHEAD_BYTES_MIN: u64 = 64 * 1024;

/// Result of a successful append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    pub base_offset: i64,
    pub last_offset: i64,
    /// -1 for CreateTime topics.
    pub log_append_time_ms: i64,
    pub log_start_offset: i64,
}

/// Whole batches returned by a read, as reference-counted chunks that are `Send` and can be
/// written to a socket with one vectored write. Concatenated, they are the batches byte for
/// byte as stored.
#[derive(Debug, Clone, Default)]
pub struct ReadSlice {
    pub chunks: Vec<Bytes>,
}

impl ReadSlice {
    pub fn len_bytes(&self) -> usize {
        self.chunks.iter().map(Bytes::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.chunks.iter().all(Bytes::is_empty)
    }

    /// One contiguous copy (tests and tools; the data plane should write the chunks).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len_bytes());
        for c in &self.chunks {
            out.extend_from_slice(c);
        }
        out
    }
}

/// The last offset of the last whole batch in `chunks` (batches as stored, possibly split
/// across chunks at any byte).
pub fn last_offset_read(chunks: &[Bytes]) -> Option<i64> {
    let total: usize = chunks.iter().map(Bytes::len).sum();
    let mut header = [0u8; BATCH_HEADER_BYTES];
    let mut position = 0usize;
    let mut last = None;
    while position + BATCH_HEADER_BYTES <= total {
        copy_out(chunks, position, &mut header);
        let view = BatchHeader::view(&header)?;
        let size = usize::try_from(view.size_bytes()).ok()?;
        if size < BATCH_HEADER_BYTES || position + size > total {
            break;
        }
        last = Some(view.last_offset());
        position += size;
    }
    last
}

/// Copies `out.len()` bytes starting at `position` of the concatenation of `chunks`.
fn copy_out(chunks: &[Bytes], mut position: usize, out: &mut [u8]) {
    let mut filled = 0;
    for chunk in chunks {
        if filled == out.len() {
            break;
        }
        if position >= chunk.len() {
            position -= chunk.len();
            continue;
        }
        let take = (chunk.len() - position).min(out.len() - filled);
        out[filled..filled + take].copy_from_slice(&chunk[position..position + take]);
        filled += take;
        position = 0;
    }
}

/// What a log shares with the other logs of its shard.
#[derive(Debug, Clone)]
pub struct LogEnv {
    /// The shard's cache of recent batches.
    pub cache: Rc<ShardCache>,
    /// Task queue for background work (space reservation); the current queue if None.
    pub background_queue: Option<TaskQueueHandle>,
    /// Reserve segment space ahead of the tail (true in production; false only to measure the
    /// cost of growing appends).
    pub reserve_space: bool,
    /// The shard's budget for space reserved and not yet written (`storage::reserve`).
    pub reserve_budget: Rc<ReserveBudget>,
}

impl Default for LogEnv {
    fn default() -> Self {
        LogEnv {
            cache: ShardCache::for_current_shard(),
            background_queue: None,
            reserve_space: true,
            // Unbounded: tests and tools; the broker sets `log.segment.reserve.budget.bytes`.
            reserve_budget: ReserveBudget::new(u64::MAX),
        }
    }
}

/// Result of one staged write, shared by the appends it carries.
type Outcome = Rc<RefCell<Option<StorageResult<()>>>>;

/// Bytes staged for one write of the writer task.
#[derive(Debug)]
struct Staging {
    segment_base: i64,
    /// Aligned file position of `buf[0]`.
    file_position: u64,
    buf: DmaBuffer,
    /// Valid bytes in `buf`, the carried-over prefix included.
    len: usize,
    /// Leading bytes of `buf` that are already on disk (the rewritten tail page); what a
    /// failed flush keeps.
    prefix_len: usize,
    /// Holds bytes not yet on disk (new batches, or the tail moved here from a full
    /// predecessor), so it must be written.
    dirty: bool,
    /// Next offset after the batches in this staging.
    end_offset: i64,
    /// Segment and log state when this staging was started: what a failure rolls back to.
    mark: SegmentMark,
    outcome: Outcome,
}

impl Staging {
    fn has_data(&self) -> bool {
        self.dirty
    }
}

#[derive(Debug)]
struct LogState {
    segments: BTreeMap<i64, Segment>,
    next_offset: i64,
    staging: Option<Staging>,
    queued: VecDeque<Staging>,
    staged_bytes: u64,
    unsynced_since: Option<Instant>,
}

#[derive(Debug)]
struct LogInner {
    dir: PathBuf,
    log_id: u64,
    config: Cell<LogConfig>,
    env: LogEnv,
    state: RefCell<LogState>,
    /// Offsets below this are written and durable under the flush policy.
    durable_end: Cell<i64>,
    /// The replication layer's bound on the high watermark (`set_replicated_high_watermark`);
    /// None: the high watermark is the durable end.
    hw_bound: Cell<Option<i64>>,
    log_start_offset: Cell<i64>,
    /// The leader epoch cache (`epoch_cache`), persisted as `leader-epoch-checkpoint`.
    epochs: RefCell<EpochCache>,
    /// The epoch `append` stamps into every batch it stages (`set_leader_epoch`); None: the
    /// field is left as the producer wrote it.
    leader_epoch: Cell<Option<i32>>,
    /// Serialises writes of `leader-epoch-checkpoint` (each writes the cache as it is then).
    epoch_file_permit: glommio::sync::Semaphore,
    /// Serialises replica appends (up to their staging) with one another and with truncation.
    replica_permit: glommio::sync::Semaphore,
    /// A truncation is running: appends wait before staging.
    truncating: Cell<bool>,
    /// Truncations run since open (the cleaner refuses a swap across one).
    truncations: Cell<u64>,
    /// The running truncation has changed the in-memory state: if it fails now, the log
    /// closes (the next open recovers from what is on disk).
    truncation_dirty: Cell<bool>,
    /// The visible high watermark moved, a flush finished, a truncation ended, or the log
    /// closed.
    data_event: Event,
    /// Work staged for the writer, or the log closed.
    writer_event: Event,
    closed: Cell<bool>,
    write_faults: Cell<u32>,
    writer: RefCell<Option<glommio::task::JoinHandle<()>>>,
    /// Held while segments are deleted (retention, DeleteRecords) or swapped for cleaned ones
    /// (`compact`), so the two never work on the same segments.
    segments_permit: glommio::sync::Semaphore,
    /// Test hook: where the next swap stops as if the process died (`compact::SwapStop`).
    swap_stop: Cell<Option<compact::SwapStop>>,
}

/// How `stage` treats the batches it copies.
#[derive(Debug, Clone, Copy)]
pub(super) enum StageMode {
    /// A produced append: offsets assigned, the leader epoch stamped if set, LogAppendTime
    /// patched.
    Leader { leader_epoch: Option<i32> },
    /// A replica append: the batches are kept byte for byte; they span `first..end`.
    Replica { first: i64, end: i64 },
}

impl LogInner {
    /// min(replication bound, durable end).
    fn visible_high_watermark(&self) -> i64 {
        let durable = self.durable_end.get();
        self.hw_bound.get().map_or(durable, |b| b.min(durable))
    }

    /// The log start moved (retention, DeleteRecords): the epoch cache keeps an entry at the
    /// new start and forgets the ones before (Kafka's truncateFromStart).
    async fn epochs_follow_log_start(&self) -> StorageResult<()> {
        let start = self.log_start_offset.get();
        if self.epochs.borrow_mut().truncate_from_start(start) {
            self.persist_epochs().await?;
        }
        Ok(())
    }

    /// Returns once no truncation is running (or the log closed).
    async fn wait_while_truncating(&self) {
        if self.truncating.get() {
            self.data_event
                .wait_for(|| (!self.truncating.get() || self.closed.get()).then_some(()))
                .await;
        }
    }

    /// Writes `leader-epoch-checkpoint` with the cache as it is once the file is ours.
    async fn persist_epochs(&self) -> StorageResult<()> {
        let _permit = self
            .epoch_file_permit
            .acquire_permit(1)
            .await
            .map_err(|_| StorageError::Closed)?;
        let bytes = self.epochs.borrow().encode();
        write_file_atomic(&self.dir, epoch_cache::CHECKPOINT_FILE, &bytes).await
    }

    /// Drops epoch entries starting at or past `end` (what a failed append assigned) and
    /// persists the cache; a failure to persist is logged (the open drops entries past the
    /// log end anyway).
    async fn forget_epochs_from(&self, end: i64) {
        if self.epochs.borrow_mut().truncate_from_end(end)
            && let Err(err) = self.persist_epochs().await
        {
            tracing::warn!(dir = %self.dir.display(), %err, "could not write leader-epoch-checkpoint");
        }
    }
}

/// One partition's log. See the module header.
#[derive(Debug)]
pub struct PartitionLog {
    inner: Rc<LogInner>,
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn alloc_buffer(size: usize) -> DmaBuffer {
    glommio::allocate_dma_buffer(size)
}

impl PartitionLog {
    /// Opens (recovering) or creates the log in `dir` (`<data_dir>/<topic>-<partition>`),
    /// using the current shard's cache. Must run inside a glommio executor.
    pub async fn open(dir: &Path, config: LogConfig) -> StorageResult<PartitionLog> {
        Self::open_with(dir, config, LogEnv::default()).await
    }

    pub async fn open_with(
        dir: &Path,
        config: LogConfig,
        env: LogEnv,
    ) -> StorageResult<PartitionLog> {
        let config = config.clamped();
        std::fs::create_dir_all(dir).map_err(|e| StorageError::io("create log dir", e))?;
        probe_device(dir).await?;
        compact::recover_swaps(dir).await?;
        let mut bases = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(|e| StorageError::io("list log dir", e))? {
            let entry = entry.map_err(|e| StorageError::io("list log dir", e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".tmp") {
                let _ = std::fs::remove_file(entry.path());
            } else if let Some(stem) = name.strip_suffix(".log")
                && stem.len() == 20
                && let Ok(base) = stem.parse::<i64>()
            {
                bases.push(base);
            }
        }
        bases.sort_unstable();
        let checkpoint = read_small_file(&dir.join(CHECKPOINT_FILE))
            .await?
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| s.trim().parse::<i64>().ok());

        let epoch_checkpoint = match read_small_file(&dir.join(epoch_cache::CHECKPOINT_FILE))
            .await?
        {
            Some(bytes) => match EpochCache::decode(&bytes) {
                Ok(cache) => Some(cache),
                Err(err) => {
                    tracing::warn!(dir = %dir.display(), %err, "rebuilding the leader epoch cache");
                    None
                }
            },
            None => None,
        };
        // A missing checkpoint (a log written before leader epochs were kept, or a damaged
        // file) is rebuilt from the batches' partitionLeaderEpoch: every batch of the last
        // segment (which recovery scans whole anyway) and the first batch of each closed
        // segment (one page read each), so the cost is bounded by the segment count.
        let mut rebuilt = EpochCache::new();
        let rebuild = epoch_checkpoint.is_none();

        let mut segments = BTreeMap::new();
        let mut staging = None;
        let count = bases.len();
        for (i, &base) in bases.iter().enumerate() {
            let last = i + 1 == count;
            let (seg, tail) = recover_segment(
                dir,
                base,
                last,
                &config,
                env.reserve_space.then_some(&env.reserve_budget),
                (rebuild && last).then_some(&mut rebuilt),
            )
            .await?;
            if rebuild
                && !last
                && let Some(file) = &seg.file
                && seg.size_bytes > 0
                && let Some((epoch, first)) = recovery::first_batch_epoch(file).await
            {
                rebuilt.assign(epoch, first);
            }
            if let Some((_, prev)) = segments.last_key_value() {
                let prev: &Segment = prev;
                if prev.next_offset != base {
                    tracing::warn!(dir = %dir.display(), expected = prev.next_offset, base,
                        "offset gap between segments");
                }
            }
            if let Some(tail) = tail {
                staging = Some(Staging {
                    segment_base: base,
                    file_position: align_down(seg.size_bytes),
                    len: tail.1,
                    prefix_len: tail.1,
                    dirty: false,
                    buf: tail.0,
                    end_offset: seg.next_offset,
                    mark: seg.mark(),
                    outcome: Rc::default(),
                });
            }
            segments.insert(base, seg);
        }
        if segments.is_empty() {
            let base = checkpoint.unwrap_or(0).max(0);
            segments.insert(base, Segment::new(base));
        }
        let first_base = *segments.keys().next().expect("at least one segment");
        let next_offset = segments.values().next_back().expect("segment").next_offset;
        let log_start_offset = checkpoint
            .unwrap_or(first_base)
            .max(first_base)
            .min(next_offset);
        let mut epochs = epoch_checkpoint.unwrap_or(rebuilt);
        // Entries at or past the recovered end describe nothing in this log (Kafka's
        // truncateFromEnd at load); the first kept entry starts at the log start.
        let mut epochs_changed = epochs.truncate_from_end(next_offset);
        epochs_changed |= epochs.truncate_from_start(log_start_offset);
        // A rebuild that found no epoch (a log whose producers left the field at -1, as the
        // Java client does) writes nothing: the next open's rebuild costs one page read per
        // closed segment, less than a checkpoint write for every partition at start.
        if (epochs_changed || (rebuild && !epochs.is_empty()))
            && let Err(err) =
                write_file_atomic(dir, epoch_cache::CHECKPOINT_FILE, &epochs.encode()).await
        {
            // The cache in memory is right; the next open rebuilds or trims it again.
            tracing::warn!(dir = %dir.display(), %err, "could not write leader-epoch-checkpoint");
        }
        let cache = env.cache.clone();
        let inner = Rc::new(LogInner {
            dir: dir.to_path_buf(),
            log_id: cache.register_log(),
            config: Cell::new(config),
            env,
            state: RefCell::new(LogState {
                segments,
                next_offset,
                staging,
                queued: VecDeque::new(),
                staged_bytes: 0,
                unsynced_since: None,
            }),
            durable_end: Cell::new(next_offset),
            hw_bound: Cell::new(None),
            log_start_offset: Cell::new(log_start_offset),
            epochs: RefCell::new(epochs),
            leader_epoch: Cell::new(None),
            epoch_file_permit: glommio::sync::Semaphore::new(1),
            replica_permit: glommio::sync::Semaphore::new(1),
            truncating: Cell::new(false),
            truncations: Cell::new(0),
            truncation_dirty: Cell::new(false),
            data_event: Event::default(),
            writer_event: Event::default(),
            closed: Cell::new(false),
            write_faults: Cell::new(0),
            writer: RefCell::new(None),
            segments_permit: glommio::sync::Semaphore::new(1),
            swap_stop: Cell::new(None),
        });
        let task = glommio::spawn_local(writer_loop(inner.clone())).detach();
        *inner.writer.borrow_mut() = Some(task);
        tracing::debug!(dir = %dir.display(), log_start_offset, next_offset, "log opened");
        Ok(PartitionLog { inner })
    }

    pub fn config(&self) -> LogConfig {
        self.inner.config.get()
    }

    /// Replaces the configuration (topic config altered); applies to the next append, roll,
    /// flush and retention pass.
    pub fn set_config(&self, config: LogConfig) {
        self.inner.config.set(config.clamped());
        self.inner.writer_event.notify_all();
    }

    /// Appends one or more concatenated v2 batches (a Produce partition's `records`). All are
    /// validated before any is staged. Resolves when durable under the flush policy.
    /// After `set_leader_epoch`, every batch is stamped with that epoch (partitionLeaderEpoch,
    /// header bytes 12..16, outside the CRC); before, the field stays as the producer wrote it.
    pub async fn append(&self, records: Bytes) -> StorageResult<AppendInfo> {
        let inner = &*self.inner;
        inner.wait_while_truncating().await;
        if inner.closed.get() {
            return Err(StorageError::Closed);
        }
        let config = inner.config.get();
        let mut offset_count = 0i64;
        let mut max_timestamp = -1i64;
        batch::validate_all(&records, config.max_message_bytes, |m| {
            offset_count += m.offset_count;
            max_timestamp = max_timestamp.max(m.max_timestamp);
        })?;
        let (info, outcome) = {
            let mut st = inner.state.borrow_mut();
            let mode = StageMode::Leader {
                leader_epoch: inner.leader_epoch.get(),
            };
            inner.stage(
                &mut st,
                &records,
                &config,
                offset_count,
                max_timestamp,
                mode,
            )?
        };
        inner.writer_event.notify_all();
        inner
            .data_event
            .wait_for(|| outcome.borrow().clone())
            .await?;
        Ok(AppendInfo {
            log_start_offset: inner.log_start_offset.get(),
            ..info
        })
    }

    /// Appends batches fetched from the partition's leader (a follower's append), exactly as
    /// the leader wrote them: base offsets, partitionLeaderEpoch and timestamps are kept (a
    /// LogAppendTime topic keeps the leader's times), nothing is re-checksummed. Each batch is
    /// validated as `append` validates (sizes, magic, CRC-32C, max.message.bytes). Offsets must
    /// continue the log: the first batch must start at or after `log_end_offset()` and each
    /// batch after the previous one's last offset, else `StorageError::NonContiguous` and
    /// nothing is staged. They may leave gaps, as a compacted leader's batches do (Kafka's
    /// follower accepts those too). A batch whose epoch is newer than the epoch cache's latest
    /// starts a new cache entry at its base offset; the checkpoint is written before the batch
    /// is staged. Goes through the same staging, group commit and rollback as `append` and
    /// resolves when durable under the flush policy. Empty `records`: Ok, nothing appended
    /// (base offset the log end, last offset one below).
    pub async fn append_replica(&self, records: Bytes) -> StorageResult<AppendInfo> {
        let inner = &*self.inner;
        if inner.closed.get() {
            return Err(StorageError::Closed);
        }
        if records.is_empty() {
            let end = self.log_end_offset();
            return Ok(AppendInfo {
                base_offset: end,
                last_offset: end - 1,
                log_append_time_ms: -1,
                log_start_offset: inner.log_start_offset.get(),
            });
        }
        let config = inner.config.get();
        let mut offset_count = 0i64;
        let mut max_timestamp = -1i64;
        // (base offset, last offset, leader epoch) of each batch.
        let mut batches: Vec<(i64, i64, i32)> = Vec::new();
        let mut bad_offsets = false;
        batch::validate_all(&records, config.max_message_bytes, |m| {
            offset_count += m.offset_count;
            max_timestamp = max_timestamp.max(m.max_timestamp);
            let h = BatchHeader::view(&records[m.position..]).expect("validated");
            match h.checked_last_offset() {
                Some(last) if h.base_offset.get() >= 0 => {
                    batches.push((h.base_offset.get(), last, h.partition_leader_epoch.get()))
                }
                _ => bad_offsets = true,
            }
        })?;
        if bad_offsets {
            return Err(StorageError::InvalidRecord(
                "replica batch offsets are out of range",
            ));
        }
        for pair in batches.windows(2) {
            if pair[1].0 <= pair[0].1 {
                return Err(StorageError::NonContiguous {
                    expected: pair[0].1 + 1,
                    got: pair[1].0,
                });
            }
        }
        let first = batches[0].0;
        let last = batches[batches.len() - 1].1;
        let permit = inner
            .replica_permit
            .acquire_permit(1)
            .await
            .map_err(|_| StorageError::Closed)?;
        inner.wait_while_truncating().await;
        let check = |inner: &LogInner| -> StorageResult<()> {
            if inner.closed.get() {
                return Err(StorageError::Closed);
            }
            let end = inner.state.borrow().next_offset;
            if first < end {
                return Err(StorageError::NonContiguous {
                    expected: end,
                    got: first,
                });
            }
            Ok(())
        };
        check(inner)?;
        let epochs_changed = {
            let mut epochs = inner.epochs.borrow_mut();
            let mut changed = false;
            for &(base, _, epoch) in &batches {
                changed |= epochs.assign(epoch, base);
            }
            changed
        };
        if epochs_changed && let Err(err) = inner.persist_epochs().await {
            inner.forget_epochs_from(self.log_end_offset()).await;
            return Err(err);
        }
        let staged = check(inner).and_then(|()| {
            let mut st = inner.state.borrow_mut();
            let mode = StageMode::Replica {
                first,
                end: last + 1,
            };
            inner.stage(
                &mut st,
                &records,
                &config,
                offset_count,
                max_timestamp,
                mode,
            )
        });
        let (info, outcome) = match staged {
            Ok(staged) => staged,
            Err(err) => {
                if epochs_changed {
                    inner.forget_epochs_from(self.log_end_offset()).await;
                }
                return Err(err);
            }
        };
        drop(permit);
        inner.writer_event.notify_all();
        let result = inner.data_event.wait_for(|| outcome.borrow().clone()).await;
        if let Err(err) = result {
            // Rolled back to the durable end: epochs that began in the failed batches go.
            inner.forget_epochs_from(self.log_end_offset()).await;
            return Err(err);
        }
        Ok(AppendInfo {
            log_start_offset: inner.log_start_offset.get(),
            ..info
        })
    }

    /// Whole batches from the one containing `offset`, up to `max_bytes` but at least one,
    /// below the high watermark. `offset` past the durable end is out of range; between the
    /// high watermark and the durable end the answer is empty (as Kafka answers a consumer
    /// between its high watermark and log end).
    pub async fn read(&self, offset: i64, max_bytes: u32) -> StorageResult<ReadSlice> {
        self.read_below(offset, max_bytes, i64::MAX).await
    }

    /// As `read`, but bounded by the durable end instead of the high watermark: what a
    /// follower's fetch reads (and the producer state replay).
    pub async fn read_replica(&self, offset: i64, max_bytes: u32) -> StorageResult<ReadSlice> {
        self.read_bounded(offset, max_bytes, self.inner.durable_end.get())
            .await
    }

    /// As `read`, but only batches that start below `upper_offset` (the last stable offset of
    /// a read_committed fetch; batches never straddle it). `offset` is still checked against
    /// the durable end: between the two, the answer is empty.
    pub async fn read_below(
        &self,
        offset: i64,
        max_bytes: u32,
        upper_offset: i64,
    ) -> StorageResult<ReadSlice> {
        let bound = self.inner.visible_high_watermark().min(upper_offset);
        self.read_bounded(offset, max_bytes, bound).await
    }

    /// Reads batches that start below `bound` (at most the durable end).
    async fn read_bounded(
        &self,
        offset: i64,
        max_bytes: u32,
        bound: i64,
    ) -> StorageResult<ReadSlice> {
        let inner = &*self.inner;
        if inner.closed.get() {
            return Err(StorageError::Closed);
        }
        let log_start_offset = inner.log_start_offset.get();
        let durable_end = inner.durable_end.get();
        if offset < log_start_offset || offset > durable_end {
            return Err(StorageError::OffsetOutOfRange {
                offset,
                log_start_offset,
                high_watermark: durable_end,
            });
        }
        let high_watermark = bound.min(durable_end);
        if offset >= high_watermark {
            return Ok(ReadSlice::default());
        }
        if let Some(chunks) = inner
            .env
            .cache
            .read(inner.log_id, offset, max_bytes, high_watermark)
        {
            return Ok(ReadSlice { chunks });
        }
        let mut target = offset;
        loop {
            let (file, position, limit, next_base) = {
                let st = inner.state.borrow();
                let Some((&base, seg)) = st
                    .segments
                    .range(..=target)
                    .next_back()
                    .or_else(|| st.segments.iter().next())
                else {
                    return Ok(ReadSlice::default());
                };
                let rel = (target - base).clamp(0, u32::MAX as i64) as u32;
                let next_base = st.segments.range(base + 1..).next().map(|(b, _)| *b);
                (
                    seg.file.clone(),
                    seg.index.lookup(rel) as u64,
                    seg.written_bytes,
                    next_base,
                )
            };
            if let Some(file) = file
                && let Some(bytes) =
                    read_batches(&file, position, limit, target, max_bytes, high_watermark).await?
            {
                return Ok(ReadSlice {
                    chunks: vec![bytes],
                });
            }
            match next_base {
                Some(b) if b < high_watermark && b > target => target = b,
                _ => return Ok(ReadSlice::default()),
            }
        }
    }

    /// The high watermark: consumers read below it. The durable end while the replication
    /// layer sets no bound (every single-replica partition), else min(bound, durable end).
    pub fn high_watermark(&self) -> i64 {
        self.inner.visible_high_watermark()
    }

    /// Offsets below this are written and durable under the flush policy (what the high
    /// watermark is for a single replica); appends staged past it are not yet.
    pub fn durable_end(&self) -> i64 {
        self.inner.durable_end.get()
    }

    /// Sets the replication layer's bound on the high watermark: `Some(hw)` (the minimum log
    /// end over the ISR) makes the high watermark min(hw, durable end); `None` (the default)
    /// lets it follow the durable end. Waiters (`wait_for_data`, `wait_until`) are woken
    /// when the visible high watermark changes.
    pub fn set_replicated_high_watermark(&self, bound: Option<i64>) {
        let inner = &*self.inner;
        let before = inner.visible_high_watermark();
        inner.hw_bound.set(bound);
        if inner.visible_high_watermark() != before {
            inner.data_event.notify_all();
        }
    }

    /// This replica now leads the partition in `epoch`: if `epoch` is newer than the epoch
    /// cache's latest entry, (epoch, log_end_offset()) is added and the checkpoint written
    /// (Kafka's maybeAssignEpochStartOffset); from then on `append` stamps `epoch` into every
    /// batch it stages. Replica appends are never stamped.
    pub async fn set_leader_epoch(&self, epoch: i32) -> StorageResult<()> {
        let inner = &*self.inner;
        if inner.closed.get() {
            return Err(StorageError::Closed);
        }
        if epoch < 0 {
            return Err(StorageError::InvalidRecord("leader epoch is negative"));
        }
        let changed = inner
            .epochs
            .borrow_mut()
            .assign(epoch, self.log_end_offset());
        if changed {
            inner.persist_epochs().await?;
        }
        // Stamped only once the entry is durable, so no batch of the epoch is on disk before
        // the cache knows the epoch.
        inner.leader_epoch.set(Some(epoch));
        Ok(())
    }

    /// The newest epoch in the leader epoch cache.
    pub fn latest_epoch(&self) -> Option<i32> {
        self.inner.epochs.borrow().latest_epoch()
    }

    /// OffsetsForLeaderEpoch's (epoch, end offset) for `epoch`, as Kafka's
    /// `LeaderEpochFileCache.endOffsetFor`: for the latest epoch, (it, log_end_offset()); for
    /// an older one, (the largest cached epoch at or below it, the start offset of the next
    /// entry); below every cached epoch, (`epoch`, the first entry's start offset); above the
    /// latest, -1, or an empty cache: (-1, -1) (UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET).
    pub fn epoch_end_offset(&self, epoch: i32) -> (i32, i64) {
        self.inner
            .epochs
            .borrow()
            .end_offset_for(epoch, self.log_end_offset())
    }

    /// The leader epoch cache's entries (epoch, start offset), oldest first.
    pub fn epoch_entries(&self) -> Vec<(i32, i64)> {
        self.inner
            .epochs
            .borrow()
            .entries()
            .iter()
            .map(|e| (e.epoch, e.start_offset))
            .collect()
    }

    pub fn log_start_offset(&self) -> i64 {
        self.inner.log_start_offset.get()
    }

    /// Next offset to be assigned (includes appends staged but not yet durable).
    pub fn log_end_offset(&self) -> i64 {
        self.inner.state.borrow().next_offset
    }

    /// Bytes of written log data over all segments.
    pub fn size_bytes(&self) -> u64 {
        self.inner
            .state
            .borrow()
            .segments
            .values()
            .map(|s| s.written_bytes)
            .sum()
    }

    /// Base offset of the active (last) segment.
    pub fn active_segment_base(&self) -> i64 {
        let st = self.inner.state.borrow();
        st.segments.keys().next_back().copied().unwrap_or(0)
    }

    /// The segment holding `offset`: its base offset and the next segment's (or `i64::MAX`).
    pub fn segment_bounds(&self, offset: i64) -> (i64, i64) {
        let st = self.inner.state.borrow();
        let base = st
            .segments
            .range(..=offset)
            .next_back()
            .map_or(0, |(b, _)| *b);
        let next = st
            .segments
            .range(base + 1..)
            .next()
            .map_or(i64::MAX, |(b, _)| *b);
        (base, next)
    }

    pub fn segment_count(&self) -> usize {
        self.inner.state.borrow().segments.len()
    }

    /// Base offset, logical size and last-modified time (ms; the `.log` file's mtime, or now
    /// for a segment whose file does not exist yet) of every segment, oldest first: what
    /// ListOffsets v0 answers from, as Kafka's does. The file times are read on the blocking
    /// pool, never on the executor.
    pub async fn segment_times(&self) -> Vec<(i64, u64, i64)> {
        let dir = self.inner.dir.clone();
        let segments: Vec<(i64, u64)> = {
            let st = self.inner.state.borrow();
            st.segments
                .values()
                .map(|s| (s.base_offset, s.size_bytes))
                .collect()
        };
        let now = now_ms();
        glommio::executor()
            .spawn_blocking(move || {
                segments
                    .into_iter()
                    .map(|(base, size)| {
                        let modified_ms =
                            std::fs::metadata(segment::segment_path(&dir, base, "log"))
                                .and_then(|m| m.modified())
                                .ok()
                                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                                .map_or(now, |d| d.as_millis() as i64);
                        (base, size, modified_ms)
                    })
                    .collect()
            })
            .await
    }

    /// Base offsets of the segments, oldest first.
    pub fn segment_bases(&self) -> Vec<i64> {
        self.inner.state.borrow().segments.keys().copied().collect()
    }

    /// (offset, timestamp) of the batch with the largest timestamp below the high watermark.
    pub fn max_timestamp(&self) -> Option<(i64, i64)> {
        let hw = self.inner.visible_high_watermark();
        let lso = self.inner.log_start_offset.get();
        let st = self.inner.state.borrow();
        st.segments
            .values()
            .filter(|s| s.max_timestamp.0 >= 0 && s.max_timestamp.1 < hw && s.next_offset > lso)
            .map(|s| (s.max_timestamp.1.max(lso), s.max_timestamp.0))
            .max_by_key(|&(o, t)| (t, -o))
    }

    /// ListOffsets by timestamp: (offset, timestamp) of the first record (at or after the log
    /// start) whose timestamp is `>= timestamp_ms`, as Kafka answers it. The time index gives
    /// where to start; batch headers skip every batch whose max timestamp is below the time;
    /// only the records of a batch that holds it are read (`records`, inflating a compressed
    /// batch). A batch whose records cannot be read is answered by its base offset (or the log
    /// start offset inside it) and its max timestamp.
    pub async fn offset_for_timestamp(
        &self,
        timestamp_ms: i64,
    ) -> StorageResult<Option<(i64, i64)>> {
        let inner = &*self.inner;
        let hw = inner.visible_high_watermark();
        let lso = inner.log_start_offset.get();
        let candidates: Vec<_> = {
            let st = inner.state.borrow();
            st.segments
                .values()
                .filter(|s| {
                    s.max_timestamp.0 >= timestamp_ms && s.next_offset > lso && s.base_offset < hw
                })
                .filter_map(|s| {
                    let start = match s.time_index.lookup(timestamp_ms) {
                        Some(rel) => s.index.lookup(rel) as u64,
                        None => 0,
                    };
                    s.file.clone().map(|f| (f, start, s.written_bytes))
                })
                .collect()
        };
        for (file, start, limit) in candidates {
            let mut found = None;
            scan(&file, start, limit, None, |_, h, bytes| {
                if h.base_offset.get() >= hw {
                    return false;
                }
                if h.last_offset() < lso || h.max_timestamp.get() < timestamp_ms {
                    return true;
                }
                // The batch holds the time: the answer is its first record at or after it
                // (Kafka's searchForTimestamp), or none of its records is (continue).
                match records::first_at_or_after(bytes, timestamp_ms, lso) {
                    Ok(None) => true,
                    Ok(hit) => {
                        found = hit;
                        false
                    }
                    Err(err) => {
                        tracing::warn!(
                            base_offset = h.base_offset.get(),
                            error = %err,
                            "cannot read the records of a batch; answering its first offset"
                        );
                        found = Some((h.base_offset.get().max(lso), h.max_timestamp.get()));
                        false
                    }
                }
            })
            .await?;
            if found.is_some() {
                return Ok(found);
            }
        }
        Ok(None)
    }

    /// Resolves once the high watermark is above `offset` (or the log closed); returns the
    /// high watermark. Woken by completed appends, never by polling.
    pub async fn wait_for_data(&self, offset: i64) -> i64 {
        let inner = &*self.inner;
        inner
            .data_event
            .wait_for(|| {
                let hw = inner.visible_high_watermark();
                (hw > offset || inner.closed.get()).then_some(hw)
            })
            .await
    }

    /// Resolves when `ready` (given the high watermark and whether the log closed) says so;
    /// re-evaluated whenever the high watermark moves, the log closes, or `notify_waiters` is
    /// called by whoever changed state that `ready` reads.
    pub async fn wait_until<T>(&self, mut ready: impl FnMut(i64, bool) -> Option<T>) -> T {
        let inner = &*self.inner;
        inner
            .data_event
            .wait_for(|| ready(inner.visible_high_watermark(), inner.closed.get()))
            .await
    }

    /// Wakes `wait_until` and `wait_for_data` waiters to look again.
    pub fn notify_waiters(&self) {
        self.inner.data_event.notify_all();
    }

    /// Moves the log start offset to `offset` (DeleteRecords), persists it, and deletes the
    /// segments entirely below it. Returns the new log start offset.
    pub async fn delete_records(&self, offset: i64) -> StorageResult<i64> {
        let inner = &*self.inner;
        let hw = inner.visible_high_watermark();
        let lso = inner.log_start_offset.get();
        let offset = if offset == -1 { hw } else { offset };
        if offset < 0 || offset > hw {
            return Err(StorageError::OffsetOutOfRange {
                offset,
                log_start_offset: lso,
                high_watermark: hw,
            });
        }
        if offset <= lso {
            return Ok(lso);
        }
        write_file_atomic(&inner.dir, CHECKPOINT_FILE, offset.to_string().as_bytes()).await?;
        inner
            .log_start_offset
            .set(offset.max(inner.log_start_offset.get()));
        self.delete_segments(|_, _| false).await?;
        inner.epochs_follow_log_start().await?;
        Ok(inner.log_start_offset.get())
    }

    /// Deletes closed segments past `retention.ms` (by their largest timestamp) or beyond
    /// `retention.bytes`, oldest first, and moves the log start offset. Run it periodically
    /// from the background task queue. Returns the number of segments deleted.
    pub async fn apply_retention(&self, now_ms: i64) -> StorageResult<usize> {
        let config = self.inner.config.get();
        let mut total: i64 = self.size_bytes() as i64;
        let deleted = self
            .delete_segments(|seg, _| {
                let by_time = config.retention_ms >= 0
                    && seg.max_timestamp.0 >= 0
                    && now_ms - seg.max_timestamp.0 > config.retention_ms;
                let by_size = config.retention_bytes >= 0
                    && total - seg.written_bytes as i64 >= config.retention_bytes;
                if by_time || by_size {
                    total -= seg.written_bytes as i64;
                    true
                } else {
                    false
                }
            })
            .await?;
        if deleted > 0 {
            self.inner.epochs_follow_log_start().await?;
        }
        Ok(deleted)
    }

    async fn delete_segments(
        &self,
        mut doomed: impl FnMut(&Segment, i64) -> bool,
    ) -> StorageResult<usize> {
        let inner = &*self.inner;
        let _permit = inner
            .segments_permit
            .acquire_permit(1)
            .await
            .map_err(|_| StorageError::Closed)?;
        let removed: Vec<Segment> = {
            let mut st = inner.state.borrow_mut();
            let lso = inner.log_start_offset.get();
            let high_watermark = inner.visible_high_watermark();
            let mut bases = Vec::new();
            let keys: Vec<i64> = st.segments.keys().copied().collect();
            for (i, base) in keys.iter().enumerate() {
                let Some(next) = keys.get(i + 1) else { break };
                let seg = &st.segments[base];
                // Only whole, finalized, closed segments go; the active one always stays. As in
                // Kafka, only segments wholly below the high watermark (so never data the
                // followers may still need; for a single replica every closed segment is).
                if !seg.sealed || !seg.finalized || *next > high_watermark {
                    break;
                }
                if *next <= lso || doomed(seg, lso) {
                    bases.push(*base);
                } else {
                    break;
                }
            }
            bases
                .into_iter()
                .filter_map(|b| st.segments.remove(&b))
                .collect()
        };
        if removed.is_empty() {
            return Ok(0);
        }
        {
            let st = inner.state.borrow();
            let first = *st.segments.keys().next().expect("active segment remains");
            if first > inner.log_start_offset.get() {
                inner.log_start_offset.set(first);
            }
        }
        for seg in &removed {
            tracing::info!(dir = %inner.dir.display(), base = seg.base_offset, "deleting segment");
            if let Some(file) = &seg.file {
                file.remove()
                    .await
                    .map_err(|e| StorageError::io("delete segment", e))?;
            }
            for ext in ["index", "timeindex", "txnindex"] {
                let _ = std::fs::remove_file(segment_path(&inner.dir, seg.base_offset, ext));
            }
        }
        Ok(removed.len())
    }

    /// Test hook (fault injection): the next `count` log writes fail with ENOSPC before
    /// reaching the disk, exercising the same path as a full disk or EIO.
    #[doc(hidden)]
    pub fn inject_write_faults(&self, count: u32) {
        self.inner.write_faults.set(count);
    }

    /// Flushes everything staged, stops the writer, syncs and writes the active segment's
    /// indexes, and closes the files.
    /// Later appends and reads on this log fail with `StorageError::Closed`; a second close
    /// does nothing.
    pub async fn close(&self) -> StorageResult<()> {
        self.shut(true).await
    }

    /// Closes a log whose directory is about to be deleted: as `close`, but without writing
    /// index files or cutting the active segment to size (DeleteTopics of 10,000 partitions
    /// spent most of its time writing indexes it then deleted).
    pub async fn close_for_delete(&self) -> StorageResult<()> {
        self.shut(false).await
    }

    async fn shut(&self, finalize: bool) -> StorageResult<()> {
        let inner = self.inner.clone();
        if inner.writer.borrow().is_none() && inner.closed.get() {
            return Ok(());
        }
        inner.closed.set(true);
        inner.writer_event.notify_all();
        inner.data_event.notify_all();
        // A truncation, retention pass or swap in progress finishes first.
        let _permit = inner.segments_permit.acquire_permit(1).await;
        let task = inner.writer.borrow_mut().take();
        if let Some(task) = task {
            task.await;
        }
        let to_finalize: Vec<_> = {
            let mut st = inner.state.borrow_mut();
            st.segments
                .values_mut()
                .filter(|s| finalize && !s.finalized && s.file.is_some())
                .map(|s| {
                    // Finalizing cuts the file to its size: the reservation is given back.
                    s.grant = None;
                    s.seal_time_index();
                    (
                        s.base_offset,
                        s.file.clone().expect("file"),
                        s.written_bytes,
                        s.index.encode(),
                        s.time_index.encode(),
                    )
                })
                .collect()
        };
        for (base, file, size, index, time_index) in to_finalize {
            finalize_segment(&inner.dir, base, &file, size, &index, &time_index, true).await?;
        }
        inner.env.cache.remove_from(inner.log_id, i64::MIN);
        let files: Vec<_> = {
            let mut st = inner.state.borrow_mut();
            st.segments
                .values_mut()
                .filter_map(|s| s.file.take())
                .collect()
        };
        for f in files {
            if let Ok(f) = Rc::try_unwrap(f) {
                f.close()
                    .await
                    .map_err(|e| StorageError::io("close segment", e))?;
            }
        }
        Ok(())
    }
}

impl Drop for PartitionLog {
    fn drop(&mut self) {
        // The writer task holds its own Rc; tell it to finish what is staged and exit.
        self.inner.closed.set(true);
        self.inner.writer_event.notify_all();
        self.inner.data_event.notify_all();
    }
}

/// Reads whole batches from `position` (at or before the batch holding `target`) within
/// `limit` bytes of the segment. `None` if no batch at or after `target` is in the segment.
async fn read_batches(
    file: &glommio::io::DmaFile,
    mut position: u64,
    limit: u64,
    target: i64,
    max_bytes: u32,
    high_watermark: i64,
) -> StorageResult<Option<Bytes>> {
    let err = |e| StorageError::io("read segment", e);
    loop {
        if position + BATCH_HEADER_BYTES as u64 > limit {
            return Ok(None);
        }
        let chunk_start = align_down(position);
        let want = (max_bytes as u64)
            .max(READ_AHEAD_BYTES_MIN)
            .min(limit - position);
        let chunk_end = align_up(position + want).min(align_up(limit));
        let chunk = file
            .read_at_aligned(chunk_start, (chunk_end - chunk_start) as usize)
            .await
            .map_err(err)?;
        let valid = (chunk.len() as u64).min(limit - chunk_start) as usize;
        let mut at = (position - chunk_start) as usize;
        // Skip batches that end before the target.
        while let Some(h) = chunk.get(at..valid).and_then(BatchHeader::view) {
            let size = h.size_bytes() as usize;
            assert!(
                size >= BATCH_HEADER_BYTES,
                "written log data is well formed"
            );
            if h.last_offset() >= target {
                break;
            }
            at += size;
        }
        let Some(first) = chunk.get(at..valid).and_then(BatchHeader::view) else {
            if chunk_start + at as u64 >= limit {
                return Ok(None);
            }
            position = chunk_start + at as u64;
            continue;
        };
        if first.base_offset.get() >= high_watermark {
            return Ok(Some(Bytes::new()));
        }
        let first_size = first.size_bytes() as usize;
        if at + first_size > valid {
            // The first batch alone is larger than what was read: read exactly it.
            let here = chunk_start + at as u64;
            let whole = file.read_at(here, first_size).await.map_err(err)?;
            assert_eq!(whole.len(), first_size, "written batch readable");
            return Ok(Some(Bytes::copy_from_slice(&whole)));
        }
        let mut end = at + first_size;
        while let Some(h) = chunk.get(end..valid).and_then(BatchHeader::view) {
            let size = h.size_bytes() as usize;
            if h.base_offset.get() >= high_watermark
                || end + size > valid
                || (end - at + size) as u64 > max_bytes as u64
            {
                break;
            }
            end += size;
        }
        return Ok(Some(Bytes::copy_from_slice(&chunk[at..end])));
    }
}

type TailPage = (DmaBuffer, usize);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::batch::build_test_batch;

    fn run<F: std::future::Future<Output = ()> + 'static>(f: impl FnOnce() -> F + Send + 'static) {
        glommio::LocalExecutorBuilder::default()
            .spawn(f)
            .expect("executor")
            .join()
            .expect("join");
    }

    fn env(cache_bytes: usize) -> LogEnv {
        LogEnv {
            cache: Rc::new(ShardCache::new(cache_bytes)),
            background_queue: None,
            reserve_space: true,
            reserve_budget: ReserveBudget::new(u64::MAX),
        }
    }

    fn small_config() -> LogConfig {
        LogConfig {
            segment_bytes: 64 * 1024,
            index_interval_bytes: 1024,
            ..LogConfig::default()
        }
    }

    /// Found by the `segment_recovery` fuzz target (tests/fuzz). The base offset is not covered
    /// by the CRC, so a file can hold a CRC-valid batch whose last offset overflows: recovery
    /// computed the next offset with an overflowing add. And a closed segment whose index has
    /// no entries trusted a first batch at another base offset, whose relative offset then
    /// overflowed. Both batches are corrupt now: cut from the last segment, dropped from a
    /// closed one's rebuild.
    #[test]
    fn recovery_refuses_batches_whose_offsets_overflow() {
        run(|| async {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("t-0");
            std::fs::create_dir_all(&path).unwrap();
            let base = i64::MAX - 10;
            let mut good = build_test_batch(2, 10, 1000, 1);
            batch::patch_base_offset(&mut good, base);
            let mut overflowing = build_test_batch(101, 1, 1000, 2);
            batch::patch_base_offset(&mut overflowing, base + 2);
            let mut file = good.clone();
            file.extend_from_slice(&overflowing);
            std::fs::write(segment_path(&path, base, "log"), &file).unwrap();
            let log = PartitionLog::open_with(&path, LogConfig::default(), env(0))
                .await
                .unwrap();
            assert_eq!(log.high_watermark(), base + 2);
            assert_eq!(log.read(base, 1 << 20).await.unwrap().to_vec(), good);
            log.close().await.unwrap();

            let path = dir.path().join("t-1");
            std::fs::create_dir_all(&path).unwrap();
            let base = 1i64 << 62;
            let mut elsewhere = build_test_batch(1, 10, 1000, 3);
            batch::patch_base_offset(&mut elsewhere, i64::MIN);
            std::fs::write(segment_path(&path, base, "log"), &elsewhere).unwrap();
            std::fs::write(segment_path(&path, base, "index"), []).unwrap();
            std::fs::write(segment_path(&path, base, "timeindex"), []).unwrap();
            std::fs::write(segment_path(&path, base + 1, "log"), []).unwrap();
            let log = PartitionLog::open_with(&path, LogConfig::default(), env(0))
                .await
                .unwrap();
            assert_eq!(log.high_watermark(), base + 1);
            assert_eq!(log.segment_count(), 2);
            log.close().await.unwrap();
        });
    }

    #[test]
    fn append_read_roll_reopen() {
        run(|| async {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("t-0");
            let mut expected = Vec::new();
            {
                let log = PartitionLog::open_with(&path, small_config(), env(0))
                    .await
                    .unwrap();
                for i in 0..200 {
                    let b = build_test_batch(2, 500 + i, 1000 + i as i64, i as u8);
                    let info = log.append(Bytes::from(b.clone())).await.unwrap();
                    assert_eq!(info.base_offset, 2 * i as i64);
                    assert_eq!(info.last_offset, 2 * i as i64 + 1);
                    let mut p = b;
                    batch::patch_base_offset(&mut p, info.base_offset);
                    expected.push(p);
                }
                assert!(log.segment_count() > 1, "rolled");
                assert_eq!(log.high_watermark(), 400);
                for (i, e) in expected.iter().enumerate() {
                    let r = log.read(2 * i as i64 + 1, 1).await.unwrap();
                    assert_eq!(&r.to_vec(), e, "batch {i}");
                }
                assert!(log.read(400, 100).await.unwrap().is_empty());
                assert!(log.read(401, 100).await.is_err());
                assert_eq!(
                    log.offset_for_timestamp(1100).await.unwrap(),
                    Some((200, 1100))
                );
                assert_eq!(log.max_timestamp(), Some((398, 1199)));
                log.close().await.unwrap();
            }
            let log = PartitionLog::open_with(&path, small_config(), env(1 << 20))
                .await
                .unwrap();
            assert_eq!(log.high_watermark(), 400);
            for (i, e) in expected.iter().enumerate() {
                let r = log.read(2 * i as i64, 1).await.unwrap();
                assert_eq!(&r.to_vec(), e, "batch {i} after reopen");
            }
            let all = log.read(0, u32::MAX).await.unwrap();
            let first_seg: usize = all.len_bytes();
            assert!(first_seg > 0);
            // Appends after reopen continue the offsets and are served from the cache.
            let b = build_test_batch(1, 10, 5000, 9);
            let info = log.append(Bytes::from(b.clone())).await.unwrap();
            assert_eq!(info.base_offset, 400);
            let r = log.read(400, 1000).await.unwrap();
            assert_eq!(r.chunks.len(), 2, "from cache: header + body");
            let mut p = b;
            batch::patch_base_offset(&mut p, 400);
            assert_eq!(r.to_vec(), p);
            assert_eq!(
                log.offset_for_timestamp(4000).await.unwrap(),
                Some((400, 5000))
            );
            log.close().await.unwrap();
        });
    }

    #[test]
    fn write_failure_rolls_back_and_recovers() {
        run(|| async {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("t-0");
            let log = PartitionLog::open_with(&path, small_config(), env(1 << 20))
                .await
                .unwrap();
            let b = Bytes::from(build_test_batch(1, 100, 1, 1));
            log.append(b.clone()).await.unwrap();
            log.inject_write_faults(1);
            let err = log.append(b.clone()).await.unwrap_err();
            assert!(matches!(err, StorageError::Io { .. }), "{err}");
            assert_eq!(log.high_watermark(), 1);
            assert_eq!(log.log_end_offset(), 1);
            assert!(log.read(1, 100).await.unwrap().is_empty());
            let info = log.append(b.clone()).await.unwrap();
            assert_eq!(info.base_offset, 1);
            log.close().await.unwrap();
            let log = PartitionLog::open_with(&path, small_config(), env(0))
                .await
                .unwrap();
            assert_eq!(log.high_watermark(), 2);
            assert_eq!(log.read(1, 1).await.unwrap().len_bytes(), b.len());
        });
    }

    #[test]
    fn group_commit_and_wait_for_data() {
        run(|| async {
            let dir = tempfile::tempdir().unwrap();
            let log = Rc::new(
                PartitionLog::open_with(&dir.path().join("t-0"), small_config(), env(1 << 20))
                    .await
                    .unwrap(),
            );
            let waiter = {
                let log = log.clone();
                glommio::spawn_local(async move { log.wait_for_data(5).await })
            };
            let b = Bytes::from(build_test_batch(1, 100, 1, 1));
            let futs: Vec<_> = (0..20).map(|_| log.append(b.clone())).collect();
            let infos = futures::future::join_all(futs).await;
            for (i, info) in infos.into_iter().enumerate() {
                assert_eq!(info.unwrap().base_offset, i as i64, "order of first poll");
            }
            assert!(waiter.await > 5);
            let log = Rc::try_unwrap(log).unwrap();
            assert_eq!(log.delete_records(7).await.unwrap(), 7);
            assert!(log.read(6, 10).await.is_err());
            log.close().await.unwrap();
            let log = PartitionLog::open_with(&dir.path().join("t-0"), small_config(), env(0))
                .await
                .unwrap();
            assert_eq!(log.log_start_offset(), 7);
        });
    }

    #[test]
    fn retention_deletes_old_segments() {
        run(|| async {
            let dir = tempfile::tempdir().unwrap();
            let mut config = small_config();
            config.segment_bytes = 8192;
            let log = PartitionLog::open_with(&dir.path().join("t-0"), config, env(0))
                .await
                .unwrap();
            for i in 0..40 {
                log.append(Bytes::from(build_test_batch(1, 1000, i * 1000, 1)))
                    .await
                    .unwrap();
            }
            let before = log.segment_count();
            assert!(before > 3);
            config.retention_bytes = 8192 * 2;
            config.retention_ms = -1;
            log.set_config(config);
            let deleted = log.apply_retention(0).await.unwrap();
            assert!(deleted > 0);
            assert!(log.size_bytes() <= 8192 * 3);
            let lso = log.log_start_offset();
            assert_eq!(lso, log.segment_bases()[0]);
            assert!(log.read(lso, 1).await.unwrap().len_bytes() > 0);
            config.retention_ms = 1;
            log.set_config(config);
            log.apply_retention(1_000_000).await.unwrap();
            assert_eq!(log.segment_count(), 1);
            log.close().await.unwrap();
        });
    }

    #[test]
    fn pipelined_groups_of_full_staging_buffers() {
        run(|| async {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("t-0");
            let config = LogConfig {
                segment_bytes: 4 << 20,
                ..LogConfig::default()
            };
            let log = PartitionLog::open_with(&path, config, env(0))
                .await
                .unwrap();
            let mk = |i: usize| build_test_batch(1, 70_000 + i * 13, i as i64, i as u8);
            let mut expected = Vec::new();
            for round in 0..3 {
                if round == 1 {
                    // One failing group in the middle: all its appends fail, nothing remains.
                    log.inject_write_faults(1);
                }
                let futs: Vec<_> = (0..40)
                    .map(|i| log.append(Bytes::from(mk(round * 40 + i))))
                    .collect();
                let results = futures::future::join_all(futs).await;
                if round == 1 {
                    assert!(results.iter().all(|r| r.is_err()));
                    continue;
                }
                for (i, r) in results.into_iter().enumerate() {
                    let info = r.unwrap();
                    let mut b = mk(round * 40 + i);
                    batch::patch_base_offset(&mut b, info.base_offset);
                    expected.push(b);
                }
            }
            assert!(log.segment_count() >= 2, "rolled while pipelining");
            for (i, e) in expected.iter().enumerate() {
                assert_eq!(
                    &log.read(i as i64, 1).await.unwrap().to_vec(),
                    e,
                    "batch {i}"
                );
            }
            log.close().await.unwrap();
            let log = PartitionLog::open_with(&path, config, env(0))
                .await
                .unwrap();
            assert_eq!(log.high_watermark(), expected.len() as i64);
            for (i, e) in expected.iter().enumerate() {
                assert_eq!(
                    &log.read(i as i64, 1).await.unwrap().to_vec(),
                    e,
                    "batch {i} reopened"
                );
            }
        });
    }

    #[test]
    fn log_append_time_is_patched_alike_in_cache_and_on_disk() {
        run(|| async {
            let dir = tempfile::tempdir().unwrap();
            let config = LogConfig {
                timestamp_type: TimestampType::LogAppendTime,
                ..small_config()
            };
            let cache = Rc::new(ShardCache::new(1 << 20));
            let e = LogEnv {
                cache: cache.clone(),
                background_queue: None,
                reserve_space: true,
                reserve_budget: ReserveBudget::new(u64::MAX),
            };
            let log = PartitionLog::open_with(&dir.path().join("t-0"), config, e)
                .await
                .unwrap();
            let info = log
                .append(Bytes::from(build_test_batch(3, 50, 7, 1)))
                .await
                .unwrap();
            assert!(info.log_append_time_ms > 7);
            let cached = log.read(0, 1).await.unwrap();
            assert_eq!(cached.chunks.len(), 2, "served from the cache");
            let cached = cached.to_vec();
            let (_, h) = batch::validate_one(&cached, u32::MAX).unwrap();
            assert_eq!(h.max_timestamp.get(), info.log_append_time_ms);
            assert_ne!(h.attributes.get() & (1 << 3), 0, "timestamp type bit set");
            cache.remove_from(log.inner.log_id, i64::MIN);
            let disk = log.read(0, 1).await.unwrap();
            assert_eq!(disk.chunks.len(), 1, "served from disk");
            assert_eq!(disk.to_vec(), cached);
            log.close().await.unwrap();
        });
    }
}
