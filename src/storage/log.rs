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
//! then moves the high watermark and resolves the appends. Everything staged while a write or
//! fdatasync was in flight goes out in the next write and shares the next fdatasync. Because
//! one writer issues one write at a time, rewrites of the tail page land in order.
//!
//! Failures: if a write or fdatasync fails (disk full, EIO), every staged append fails with
//! `StorageError::Io`, the in-memory state (offsets, indexes, cache) is rolled back to the
//! last durable batch, and the next append rewrites from there. Nothing after the high
//! watermark is ever visible to readers.
//!
//! Space: the active segment's file is reserved (fallocate, file size included) ahead of the
//! tail in `STORAGE_RESERVE_STEP_BYTES` steps by a task on the background queue, so the hot
//! path never grows the file; the end of the log is found by scanning, never from the file size.
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
use super::error::{StorageError, StorageResult};
use super::event::Event;
use super::index::{OffsetIndex, TimeIndex};
use super::segment::{
    self, ScanEnd, Segment, SegmentMark, align_down, align_up, open_log_file, read_small_file,
    scan, segment_path, write_file_atomic,
};
use crate::limits::{
    STORAGE_IO_ALIGNMENT_BYTES, STORAGE_RESERVE_STEP_BYTES, STORAGE_STAGED_BYTES_MAX,
    STORAGE_STAGING_BUFFER_BYTES,
};

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
}

impl Default for LogEnv {
    fn default() -> Self {
        LogEnv {
            cache: ShardCache::for_current_shard(),
            background_queue: None,
            reserve_space: true,
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
    high_watermark: Cell<i64>,
    log_start_offset: Cell<i64>,
    /// High watermark moved, a flush finished, or the log closed.
    data_event: Event,
    /// Work staged for the writer, or the log closed.
    writer_event: Event,
    closed: Cell<bool>,
    write_faults: Cell<u32>,
    writer: RefCell<Option<glommio::task::JoinHandle<()>>>,
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

        let mut segments = BTreeMap::new();
        let mut staging = None;
        let count = bases.len();
        for (i, &base) in bases.iter().enumerate() {
            let last = i + 1 == count;
            let (seg, tail) = recover_segment(dir, base, last, &config, env.reserve_space).await?;
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
            high_watermark: Cell::new(next_offset),
            log_start_offset: Cell::new(log_start_offset),
            data_event: Event::default(),
            writer_event: Event::default(),
            closed: Cell::new(false),
            write_faults: Cell::new(0),
            writer: RefCell::new(None),
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
    pub async fn append(&self, records: Bytes) -> StorageResult<AppendInfo> {
        let inner = &*self.inner;
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
            inner.stage(&mut st, &records, &config, offset_count, max_timestamp)?
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

    /// Whole batches from the one containing `offset`, up to `max_bytes` but at least one.
    pub async fn read(&self, offset: i64, max_bytes: u32) -> StorageResult<ReadSlice> {
        self.read_below(offset, max_bytes, i64::MAX).await
    }

    /// As `read`, but only batches that start below `upper_offset` (the last stable offset of
    /// a read_committed fetch; batches never straddle it). `offset` is still checked against
    /// the high watermark: between the two, the answer is empty.
    pub async fn read_below(
        &self,
        offset: i64,
        max_bytes: u32,
        upper_offset: i64,
    ) -> StorageResult<ReadSlice> {
        let inner = &*self.inner;
        if inner.closed.get() {
            return Err(StorageError::Closed);
        }
        let log_start_offset = inner.log_start_offset.get();
        if offset < log_start_offset || offset > inner.high_watermark.get() {
            return Err(StorageError::OffsetOutOfRange {
                offset,
                log_start_offset,
                high_watermark: inner.high_watermark.get(),
            });
        }
        let high_watermark = inner.high_watermark.get().min(upper_offset);
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

    /// Offsets below this are readable and durable (under the flush policy).
    pub fn high_watermark(&self) -> i64 {
        self.inner.high_watermark.get()
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
        let hw = self.inner.high_watermark.get();
        let lso = self.inner.log_start_offset.get();
        let st = self.inner.state.borrow();
        st.segments
            .values()
            .filter(|s| s.max_timestamp.0 >= 0 && s.max_timestamp.1 < hw && s.next_offset > lso)
            .map(|s| (s.max_timestamp.1.max(lso), s.max_timestamp.0))
            .max_by_key(|&(o, t)| (t, -o))
    }

    /// ListOffsets by timestamp: (offset, timestamp) of the first batch (at or after the log
    /// start) whose max timestamp is `>= timestamp_ms`. Batch granularity: the offset is the
    /// batch's base offset (or the log start offset inside it), the timestamp its max.
    pub async fn offset_for_timestamp(
        &self,
        timestamp_ms: i64,
    ) -> StorageResult<Option<(i64, i64)>> {
        let inner = &*self.inner;
        let hw = inner.high_watermark.get();
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
            scan(&file, start, limit, None, |_, h, _| {
                if h.base_offset.get() >= hw {
                    return false;
                }
                if h.last_offset() >= lso && h.max_timestamp.get() >= timestamp_ms {
                    found = Some((h.base_offset.get().max(lso), h.max_timestamp.get()));
                    return false;
                }
                true
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
                let hw = inner.high_watermark.get();
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
            .wait_for(|| ready(inner.high_watermark.get(), inner.closed.get()))
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
        let hw = inner.high_watermark.get();
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
        Ok(inner.log_start_offset.get())
    }

    /// Deletes closed segments past `retention.ms` (by their largest timestamp) or beyond
    /// `retention.bytes`, oldest first, and moves the log start offset. Run it periodically
    /// from the background task queue. Returns the number of segments deleted.
    pub async fn apply_retention(&self, now_ms: i64) -> StorageResult<usize> {
        let config = self.inner.config.get();
        let mut total: i64 = self.size_bytes() as i64;
        self.delete_segments(|seg, _| {
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
        .await
    }

    async fn delete_segments(
        &self,
        mut doomed: impl FnMut(&Segment, i64) -> bool,
    ) -> StorageResult<usize> {
        let inner = &*self.inner;
        let removed: Vec<Segment> = {
            let mut st = inner.state.borrow_mut();
            let lso = inner.log_start_offset.get();
            let mut bases = Vec::new();
            let keys: Vec<i64> = st.segments.keys().copied().collect();
            for (i, base) in keys.iter().enumerate() {
                let Some(next) = keys.get(i + 1) else { break };
                let seg = &st.segments[base];
                // Only whole, finalized, closed segments go; the active one always stays.
                if !seg.sealed || !seg.finalized {
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
        let inner = self.inner.clone();
        if inner.writer.borrow().is_none() && inner.closed.get() {
            return Ok(());
        }
        inner.closed.set(true);
        inner.writer_event.notify_all();
        inner.data_event.notify_all();
        let task = inner.writer.borrow_mut().take();
        if let Some(task) = task {
            task.await;
        }
        let to_finalize: Vec<_> = {
            let mut st = inner.state.borrow_mut();
            st.segments
                .values_mut()
                .filter(|s| !s.finalized && s.file.is_some())
                .map(|s| {
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

impl LogInner {
    /// Assigns offsets and copies the batches into the staging buffer. No await: this runs in
    /// the append's first poll, which fixes the order of appends.
    fn stage(
        &self,
        st: &mut LogState,
        records: &Bytes,
        config: &LogConfig,
        offset_count: i64,
        max_timestamp_ms: i64,
    ) -> StorageResult<(AppendInfo, Outcome)> {
        let total = records.len();
        if st.staged_bytes + total as u64 > STORAGE_STAGED_BYTES_MAX {
            return Err(StorageError::Overloaded {
                staged_bytes: st.staged_bytes,
            });
        }
        let now = now_ms();
        // Roll by size, age, or relative offset overflow. Age is measured as Kafka does: the
        // incoming batch's timestamp minus the first batch's, or wall time since creation.
        {
            let (_, active) = st.segments.last_key_value().expect("active segment");
            let incoming_ms = if config.timestamp_type == TimestampType::LogAppendTime {
                now
            } else {
                max_timestamp_ms
            };
            let age_ms = match active.first_timestamp_ms {
                Some(t) if t >= 0 => incoming_ms - t,
                _ => now - active.created_ms,
            };
            let need_roll = active.size_bytes > 0
                && (active.size_bytes + total as u64 > config.segment_bytes
                    || age_ms > config.segment_ms as i64
                    || st.next_offset + offset_count - active.base_offset > u32::MAX as i64);
            if need_roll {
                if let Some(s) = st.staging.take()
                    && s.has_data()
                {
                    st.queued.push_back(s);
                }
                let (_, active) = st.segments.iter_mut().next_back().expect("active");
                active.sealed = true;
                active.seal_time_index();
                let base = st.next_offset;
                st.segments.insert(base, Segment::new(base));
            }
        }
        let LogState {
            segments,
            staging,
            queued,
            next_offset,
            staged_bytes,
            ..
        } = st;
        let (_, seg) = segments.iter_mut().next_back().expect("active segment");
        // Make sure the staging buffer has room; a full one is queued and a new one starts
        // with its partial tail page.
        let room = |s: &Staging| s.buf.len() - s.len >= total + STORAGE_IO_ALIGNMENT_BYTES as usize;
        if staging.as_ref().is_none_or(|s| !room(s)) {
            // A full staging buffer is queued cut at its last page boundary; its partial last
            // page moves to the successor. Queued writes therefore never overlap, and the
            // writer can have several in flight under one fdatasync.
            let old = staging.take();
            let (file_position, moved_len, prefix_len) = match &old {
                Some(old) => {
                    assert_eq!(old.file_position + old.len as u64, seg.size_bytes);
                    let cut = align_down(old.len as u64) as usize;
                    (
                        old.file_position + cut as u64,
                        old.len - cut,
                        old.prefix_len.saturating_sub(cut),
                    )
                }
                None => {
                    assert_eq!(
                        seg.size_bytes % STORAGE_IO_ALIGNMENT_BYTES,
                        0,
                        "a partial tail page always has a staging buffer"
                    );
                    (seg.size_bytes, 0, 0)
                }
            };
            let capacity = STORAGE_STAGING_BUFFER_BYTES.max(
                align_up((moved_len + total) as u64) as usize + STORAGE_IO_ALIGNMENT_BYTES as usize,
            );
            let mut buf = alloc_buffer(capacity);
            let mut dirty = false;
            if let Some(mut old) = old {
                let cut = old.len - moved_len;
                buf.as_bytes_mut()[..moved_len].copy_from_slice(&old.buf.as_bytes()[cut..old.len]);
                dirty = old.dirty && moved_len > prefix_len;
                old.len = cut;
                old.prefix_len = old.prefix_len.min(cut);
                if old.dirty {
                    queued.push_back(old);
                }
            }
            *staging = Some(Staging {
                segment_base: seg.base_offset,
                file_position,
                buf,
                len: moved_len,
                prefix_len,
                dirty,
                end_offset: seg.next_offset,
                mark: seg.mark(),
                outcome: Rc::default(),
            });
        }
        let s = staging.as_mut().expect("staging");
        assert_eq!(s.segment_base, seg.base_offset);
        assert_eq!(s.file_position + s.len as u64, seg.size_bytes);
        let segment_position = seg.size_bytes;
        let dst = &mut s.buf.as_bytes_mut()[s.len..s.len + total];
        dst.copy_from_slice(records);
        let first_offset = seg.next_offset;
        let mut offset = first_offset;
        let mut position = 0usize;
        let log_append_time = config.timestamp_type == TimestampType::LogAppendTime;
        while position < total {
            let h = BatchHeader::view(&dst[position..]).expect("validated");
            let size = h.size_bytes() as usize;
            let last = offset + h.last_offset_delta.get() as i64;
            let mut max_ts = h.max_timestamp.get();
            let batch = &mut dst[position..position + size];
            batch::patch_base_offset(batch, offset);
            let patched = if log_append_time {
                max_ts = now;
                Some((now, batch::patch_log_append_time(batch, now)))
            } else {
                None
            };
            seg.track_batch(
                segment_position + position as u64,
                size as u64,
                offset,
                last,
                max_ts,
                config.index_interval_bytes as u64,
            );
            self.env.cache.insert(
                self.log_id,
                offset,
                last,
                records.slice(position..position + size),
                patched,
            );
            offset = last + 1;
            position += size;
        }
        s.len += total;
        s.dirty = true;
        s.end_offset = offset;
        *next_offset = offset;
        *staged_bytes += total as u64;
        let outcome = s.outcome.clone();
        Ok((
            AppendInfo {
                base_offset: first_offset,
                last_offset: offset - 1,
                log_append_time_ms: if log_append_time { now } else { -1 },
                log_start_offset: self.log_start_offset.get(),
            },
            outcome,
        ))
    }
}

/// The log's writer task: takes staged buffers in order, writes, syncs, publishes.
async fn writer_loop(inner: Rc<LogInner>) {
    loop {
        inner.maybe_interval_sync(false).await;
        let group = {
            let mut st = inner.state.borrow_mut();
            take_group(&mut st)
        };
        match group.is_empty() {
            false => inner.run_group(group).await,
            true => {
                let idle = {
                    let st = inner.state.borrow();
                    st.queued.is_empty() && st.staging.as_ref().is_none_or(|s| !s.has_data())
                };
                if idle && inner.closed.get() {
                    break;
                }
                let wait = inner.writer_event.wait_for(|| {
                    let st = inner.state.borrow();
                    let work =
                        !st.queued.is_empty() || st.staging.as_ref().is_some_and(Staging::has_data);
                    (work || inner.closed.get()).then_some(())
                });
                let deadline = inner.interval_sync_deadline();
                match deadline {
                    Some(d) => {
                        let sleep =
                            glommio::timer::sleep(d.saturating_duration_since(Instant::now()));
                        futures_lite::future::or(wait, sleep).await;
                    }
                    None => wait.await,
                }
            }
        }
    }
    // Sync what the interval policy left unsynced before exiting.
    inner.maybe_interval_sync(true).await;
}

/// Takes the next group of writes: every queued staging of the oldest pending segment, plus
/// the current staging if it belongs to that segment. Their byte ranges do not overlap (full
/// stagings were cut at page boundaries), so they can be written concurrently.
fn take_group(st: &mut LogState) -> Vec<Staging> {
    let mut group = Vec::new();
    let segment = match (st.queued.front(), &st.staging) {
        (Some(front), _) => front.segment_base,
        (None, Some(s)) if s.dirty => s.segment_base,
        _ => return group,
    };
    while st.queued.front().is_some_and(|j| j.segment_base == segment) {
        group.push(st.queued.pop_front().expect("queued"));
    }
    let take_current = st.queued.is_empty()
        && st
            .staging
            .as_ref()
            .is_some_and(|s| s.dirty && s.segment_base == segment);
    if take_current {
        let job = st.staging.take().expect("staging");
        // The successor starts with the partial tail page, which the next write rewrites.
        let end = job.file_position + job.len as u64;
        let prefix_start = align_down(end);
        let prefix_len = (end - prefix_start) as usize;
        let mut buf = alloc_buffer(STORAGE_STAGING_BUFFER_BYTES);
        let from = (prefix_start - job.file_position) as usize;
        buf.as_bytes_mut()[..prefix_len].copy_from_slice(&job.buf.as_bytes()[from..job.len]);
        let seg = st
            .segments
            .get(&job.segment_base)
            .expect("segment of staging");
        st.staging = Some(Staging {
            segment_base: job.segment_base,
            file_position: prefix_start,
            buf,
            len: prefix_len,
            prefix_len,
            dirty: false,
            end_offset: job.end_offset,
            mark: seg.mark(),
            outcome: Rc::default(),
        });
        group.push(job);
    }
    group
}

impl LogInner {
    fn interval_sync_deadline(&self) -> Option<Instant> {
        match self.config.get().flush {
            FlushPolicy::IntervalMs(ms) => self
                .state
                .borrow()
                .unsynced_since
                .map(|t| t + Duration::from_millis(ms)),
            _ => None,
        }
    }

    /// Under the interval policy, fdatasyncs the active file once the interval has passed
    /// (or always, with `force`, if anything is unsynced).
    async fn maybe_interval_sync(&self, force: bool) {
        let due = {
            let st = self.state.borrow();
            match (st.unsynced_since, self.config.get().flush) {
                (None, _) => false,
                (Some(_), _) if force => true,
                (Some(t), FlushPolicy::IntervalMs(ms)) => t.elapsed() >= Duration::from_millis(ms),
                _ => false,
            }
        };
        if !due {
            return;
        }
        let file = {
            let mut st = self.state.borrow_mut();
            st.unsynced_since = None;
            st.segments
                .values()
                .next_back()
                .and_then(|s| s.file.clone())
        };
        if let Some(file) = file
            && let Err(e) = file.fdatasync().await
        {
            tracing::error!(dir = %self.dir.display(), error = %e, "interval fdatasync failed");
        }
    }

    async fn run_group(self: &Rc<Self>, group: Vec<Staging>) {
        let segment_base = group[0].segment_base;
        let mut writes = Vec::with_capacity(group.len());
        let mut first = None;
        let mut outcomes = Vec::with_capacity(group.len());
        let mut new_bytes = 0u64;
        let mut end = (0u64, 0i64);
        for job in group {
            let Staging {
                file_position,
                mut buf,
                len,
                prefix_len,
                end_offset,
                mark,
                outcome,
                ..
            } = job;
            assert_eq!(job.segment_base, segment_base);
            new_bytes += (len - prefix_len) as u64;
            end = (file_position + len as u64, end_offset);
            outcomes.push(outcome.clone());
            // Pad the tail page with zeros (the next write rewrites it) and hand the buffer
            // to the kernel as is: the batches were copied into it once, when staged.
            let write_len = align_up(len as u64) as usize;
            buf.as_bytes_mut()[len..write_len].fill(0);
            buf.trim_to_size(write_len);
            let buf = Rc::new(buf);
            if first.is_none() {
                first = Some((file_position, buf.clone(), prefix_len, mark, outcome));
            }
            if len > 0 {
                writes.push((file_position, buf));
            }
        }
        let result = self.write_group(segment_base, writes).await;
        let (first_position, first_buf, first_prefix_len, first_mark, _) =
            first.expect("group is not empty");
        match result {
            Ok(()) => {
                let reserve = {
                    let mut st = self.state.borrow_mut();
                    st.staged_bytes -= new_bytes.min(st.staged_bytes);
                    let config = self.config.get();
                    if config.flush != FlushPolicy::EveryAppend && st.unsynced_since.is_none() {
                        st.unsynced_since = Some(Instant::now());
                    }
                    let seg = st.segments.get_mut(&segment_base).expect("segment");
                    seg.written_bytes = end.0;
                    assert!(
                        end.1 > self.high_watermark.get(),
                        "high watermark only grows"
                    );
                    self.high_watermark.set(end.1);
                    let target = (seg.reserved_bytes + STORAGE_RESERVE_STEP_BYTES)
                        .min(align_up(config.segment_bytes));
                    let reserve = self.env.reserve_space
                        && !seg.sealed
                        && !seg.reserving
                        && seg.reserve_retry_at.is_none_or(|at| Instant::now() >= at)
                        && seg.written_bytes + STORAGE_RESERVE_STEP_BYTES / 2 > seg.reserved_bytes
                        && target > seg.reserved_bytes;
                    if reserve {
                        seg.reserving = true;
                    }
                    reserve.then(|| (seg.base_offset, seg.file.clone().expect("file"), target))
                };
                if let Some((base, file, target)) = reserve {
                    self.spawn_reservation(base, file, target);
                }
                for o in outcomes {
                    *o.borrow_mut() = Some(Ok(()));
                }
                self.data_event.notify_all();
            }
            Err(e) => {
                tracing::error!(dir = %self.dir.display(), error = %e, "log write failed, rolling back");
                let buf = match Rc::try_unwrap(first_buf) {
                    Ok(b) => b,
                    Err(shared) => {
                        let mut b = alloc_buffer(STORAGE_STAGING_BUFFER_BYTES);
                        b.as_bytes_mut()[..first_prefix_len]
                            .copy_from_slice(&shared.as_bytes()[..first_prefix_len]);
                        b
                    }
                };
                for o in &outcomes {
                    *o.borrow_mut() = Some(Err(e.clone()));
                }
                self.rollback(
                    segment_base,
                    first_position,
                    buf,
                    first_prefix_len,
                    first_mark,
                    e,
                );
                self.data_event.notify_all();
            }
        }
    }

    async fn write_group(
        &self,
        segment_base: i64,
        writes: Vec<(u64, Rc<DmaBuffer>)>,
    ) -> StorageResult<()> {
        let config = self.config.get();
        // Finalize the previous segment the first time its successor is written.
        let (file, previous) = {
            let mut st = self.state.borrow_mut();
            let previous = st
                .segments
                .range_mut(..segment_base)
                .next_back()
                .map(|(_, s)| s)
                .filter(|s| s.sealed && !s.finalized && s.file.is_some())
                .map(|s| {
                    s.finalized = true;
                    (
                        s.base_offset,
                        s.file.clone().expect("file"),
                        s.written_bytes,
                        s.index.encode(),
                        s.time_index.encode(),
                    )
                });
            let file = st
                .segments
                .get(&segment_base)
                .expect("segment")
                .file
                .clone();
            (file, previous)
        };
        if let Some((base, pfile, size, index, time_index)) = previous {
            let sync = config.flush != FlushPolicy::EveryAppend;
            if let Err(e) =
                finalize_segment(&self.dir, base, &pfile, size, &index, &time_index, sync).await
            {
                // Indexes are rebuilt on open; the data itself was already written.
                tracing::warn!(dir = %self.dir.display(), base, error = %e, "finalizing segment failed");
            }
        }
        let file = match file {
            Some(f) => f,
            None => {
                let path = segment_path(&self.dir, segment_base, "log");
                let f = Rc::new(open_log_file(&path, true).await?);
                let reserved = if self.env.reserve_space {
                    let r = STORAGE_RESERVE_STEP_BYTES.min(align_up(config.segment_bytes));
                    f.pre_allocate(r, false)
                        .await
                        .map_err(|e| StorageError::io("reserve segment", e))?;
                    r
                } else {
                    0
                };
                if config.flush == FlushPolicy::EveryAppend {
                    f.fdatasync()
                        .await
                        .map_err(|e| StorageError::io("sync new segment", e))?;
                    sync_dir(&self.dir).await?;
                }
                let mut st = self.state.borrow_mut();
                let seg = st.segments.get_mut(&segment_base).expect("segment");
                seg.file = Some(f.clone());
                seg.reserved_bytes = reserved;
                f
            }
        };
        let injected = self.write_faults.get();
        if injected > 0 {
            self.write_faults.set(injected - 1);
            return Err(StorageError::io(
                "write segment",
                std::io::Error::from_raw_os_error(libc::ENOSPC),
            ));
        }
        let results = futures::future::join_all(writes.iter().map(|(position, buf)| {
            assert_eq!(
                position % STORAGE_IO_ALIGNMENT_BYTES,
                0,
                "DMA position aligned"
            );
            file.write_rc_at(buf.clone(), *position)
        }))
        .await;
        for ((_, buf), result) in writes.iter().zip(results) {
            let written = result.map_err(|e| StorageError::io("write segment", e))?;
            if written != buf.len() {
                return Err(StorageError::io(
                    "write segment",
                    std::io::Error::new(std::io::ErrorKind::WriteZero, "short direct write"),
                ));
            }
        }
        if config.flush == FlushPolicy::EveryAppend {
            file.fdatasync()
                .await
                .map_err(|e| StorageError::io("fdatasync segment", e))?;
        }
        Ok(())
    }

    fn spawn_reservation(self: &Rc<Self>, base: i64, file: Rc<glommio::io::DmaFile>, target: u64) {
        let inner = Rc::downgrade(self);
        let fut = async move {
            let result = file.pre_allocate(target, false).await;
            let Some(inner) = inner.upgrade() else { return };
            let mut st = inner.state.borrow_mut();
            if let Some(seg) = st.segments.get_mut(&base) {
                seg.reserving = false;
                match result {
                    Ok(()) => {
                        seg.reserved_bytes = seg.reserved_bytes.max(target);
                        if seg.reserve_retry_at.take().is_some() {
                            tracing::info!(base, "reserving segment space works again");
                        }
                    }
                    Err(e) => {
                        // Writes go on into the space already reserved (and grow the file
                        // after it); only the reservation waits.
                        if seg.reserve_retry_at.is_none() {
                            tracing::warn!(base, error = %e, "reserving segment space failed; retrying every second");
                        }
                        let retry_ms = crate::limits::STORAGE_RESERVE_RETRY_MS;
                        seg.reserve_retry_at =
                            Some(Instant::now() + Duration::from_millis(retry_ms));
                    }
                }
            }
        };
        let spawned = match self.env.background_queue {
            Some(tq) => glommio::spawn_local_into(fut, tq)
                .map(|t| t.detach())
                .is_ok(),
            None => {
                glommio::spawn_local(fut).detach();
                true
            }
        };
        assert!(spawned, "background task queue must exist");
    }

    /// A write or sync failed: fail every staged append and return to the last durable state
    /// (`mark`, the state when the group's first staging began, which is the high watermark).
    fn rollback(
        &self,
        segment_base: i64,
        file_position: u64,
        buf: DmaBuffer,
        prefix_len: usize,
        mark: SegmentMark,
        error: StorageError,
    ) {
        let mut st = self.state.borrow_mut();
        let mut discarded: Vec<Staging> = st.queued.drain(..).collect();
        if let Some(s) = st.staging.take() {
            discarded.push(s);
        }
        for s in &discarded {
            *s.outcome.borrow_mut() = Some(Err(error.clone()));
        }
        let hw = self.high_watermark.get();
        assert_eq!(
            mark.next_offset, hw,
            "a failed flush starts at the high watermark"
        );
        let newer: Vec<i64> = st
            .segments
            .range(segment_base + 1..)
            .map(|(b, _)| *b)
            .collect();
        for b in newer {
            let seg = st.segments.remove(&b).expect("segment");
            assert!(
                seg.file.is_none(),
                "segments after a failed flush were never written"
            );
        }
        let seg = st.segments.get_mut(&segment_base).expect("segment");
        seg.rollback_to(&mark);
        seg.sealed = false;
        seg.finalized = false;
        st.next_offset = hw;
        st.staged_bytes = 0;
        st.staging = Some(Staging {
            segment_base,
            file_position,
            buf,
            len: prefix_len,
            prefix_len,
            dirty: false,
            end_offset: hw,
            mark,
            outcome: Rc::default(),
        });
        drop(st);
        self.env.cache.remove_from(self.log_id, hw);
    }
}

async fn sync_dir(dir: &Path) -> StorageResult<()> {
    let d = glommio::io::Directory::open(dir)
        .await
        .map_err(|e| StorageError::io("open log dir", e))?;
    d.sync()
        .await
        .map_err(|e| StorageError::io("sync log dir", e))?;
    d.close()
        .await
        .map_err(|e| StorageError::io("close log dir", e))?;
    Ok(())
}

/// Closes out a sealed segment: optional fdatasync, file cut to its logical size (dropping the
/// reservation), `.index` and `.timeindex` written atomically.
async fn finalize_segment(
    dir: &Path,
    base: i64,
    file: &glommio::io::DmaFile,
    size_bytes: u64,
    index: &[u8],
    time_index: &[u8],
    sync: bool,
) -> StorageResult<()> {
    if sync {
        file.fdatasync()
            .await
            .map_err(|e| StorageError::io("fdatasync segment", e))?;
    }
    file.truncate(size_bytes)
        .await
        .map_err(|e| StorageError::io("truncate segment", e))?;
    write_file_atomic(dir, &segment::file_name(base, "index"), index).await?;
    write_file_atomic(dir, &segment::file_name(base, "timeindex"), time_index).await?;
    Ok(())
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

const PROBE_FILE: &str = ".ringbroker-dma-probe";

/// Makes glommio's per-thread, per-device IOPOLL probe run against a non-empty file.
///
/// glommio 0.9 decides whether a device supports polled I/O by reading offset 0 of the first
/// DMA file opened on it (per thread) through the poll ring and caches the answer. If that
/// file is empty the read "succeeds" with 0 bytes, the device is marked pollable, and every
/// later read on it fails with EOPNOTSUPP (virtio disks here have `io_poll` 0). Opening a
/// 4 KiB file first gets the probe a real read and the right answer. Cheap after the first
/// call on a thread (the answer is cached; this is one small open).
async fn probe_device(dir: &Path) -> StorageResult<()> {
    let path = dir.parent().unwrap_or(dir).join(PROBE_FILE);
    let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    if len < STORAGE_IO_ALIGNMENT_BYTES {
        std::fs::write(&path, vec![0u8; STORAGE_IO_ALIGNMENT_BYTES as usize])
            .map_err(|e| StorageError::io("write probe file", e))?;
    }
    let f = glommio::io::DmaFile::open(&path)
        .await
        .map_err(|e| StorageError::io("open probe file", e))?;
    f.close()
        .await
        .map_err(|e| StorageError::io("close probe file", e))?;
    Ok(())
}

/// Recovers one segment. The last segment is scanned whole (length, magic, CRC, offset
/// continuity), its torn or corrupt tail cut off, its indexes rebuilt. A closed segment
/// trusts a well-formed index and scans only from its last entry; a missing or damaged index
/// is rebuilt by a full scan. Returns the segment and, for the last one, its partial tail page.
async fn recover_segment(
    dir: &Path,
    base: i64,
    last: bool,
    config: &LogConfig,
    reserve_space: bool,
) -> StorageResult<(Segment, Option<TailPage>)> {
    let path = segment_path(dir, base, "log");
    let file = open_log_file(&path, false).await?;
    let file_size = file
        .file_size()
        .await
        .map_err(|e| StorageError::io("stat segment", e))?;
    let mut seg = Segment::new(base);
    let interval = config.index_interval_bytes as u64;

    let mut trusted = None;
    if !last {
        let index = read_small_file(&segment_path(dir, base, "index")).await?;
        let time_index = read_small_file(&segment_path(dir, base, "timeindex")).await?;
        if let (Some(ix), Some(tix)) = (index, time_index)
            && let Some(ix) = OffsetIndex::decode(&ix, file_size)
            && let Some(tix) = TimeIndex::decode(&tix, u32::MAX)
        {
            // The time index's offsets are checked against the scanned end below.
            trusted = Some((ix, tix));
        }
    }

    let mut rebuild_full = true;
    if let Some((ix, tix)) = trusted {
        // Scan from the last index entry to find the end; its batch must end at the indexed
        // offset, else the index is not trusted.
        // Index entries are relative to the base offset from the file name; one that overflows
        // it cannot have been written by us, so such an index is not trusted (below).
        let (start, expect_last) = ix
            .entries
            .last()
            .map_or((0, None), |&(o, p)| (p as u64, base.checked_add(o as i64)));
        let index_fits = ix.entries.is_empty() || expect_last.is_some();
        let mut s = Segment::new(base);
        s.index = ix;
        s.time_index = tix;
        if let Some(&(t, o)) = s.time_index.entries.last() {
            s.max_timestamp = (t, base.saturating_add(o as i64));
        }
        s.size_bytes = start;
        let mut ok = true;
        let mut first = true;
        let (end, _) = scan(&file, start, file_size, None, |pos, h, _| {
            if first {
                first = false;
                // From the last index entry the batch must end at the indexed offset; from the
                // start of the file (no entries) it must begin at the segment's base offset.
                let fits = match expect_last {
                    Some(l) => h.last_offset() == l,
                    None => h.base_offset.get() == base,
                };
                if !index_fits || !fits {
                    ok = false;
                    return false;
                }
                s.next_offset = h.base_offset.get();
            } else if h.base_offset.get() != s.next_offset {
                return false;
            }
            let saved = std::mem::take(&mut s.index);
            s.track_batch(
                pos,
                h.size_bytes() as u64,
                h.base_offset.get(),
                h.last_offset(),
                h.max_timestamp.get(),
                u64::MAX,
            );
            s.index = saved;
            true
        })
        .await?;
        let time_index_fits = s
            .time_index
            .entries
            .last()
            .is_none_or(|&(_, o)| base.saturating_add(o as i64) < s.next_offset);
        if ok && time_index_fits && (expect_last.is_some() || end > 0 || file_size == 0) {
            seg = s;
            seg.size_bytes = end;
            rebuild_full = false;
        }
    }
    if rebuild_full {
        let mut s = Segment::new(base);
        let (end, why) = scan(&file, 0, file_size, Some(base), |pos, h, _| {
            s.track_batch(
                pos,
                h.size_bytes() as u64,
                h.base_offset.get(),
                h.last_offset(),
                h.max_timestamp.get(),
                interval,
            );
            true
        })
        .await?;
        if why != ScanEnd::Limit && last {
            tracing::warn!(dir = %dir.display(), base, end, ?why, "truncating log tail at recovery");
        } else if why == ScanEnd::Corrupt {
            tracing::warn!(dir = %dir.display(), base, end, "corrupt batch in closed segment");
        }
        seg = s;
        if !last {
            seg.seal_time_index();
            write_file_atomic(dir, &segment::file_name(base, "index"), &seg.index.encode()).await?;
            write_file_atomic(
                dir,
                &segment::file_name(base, "timeindex"),
                &seg.time_index.encode(),
            )
            .await?;
        }
    }
    seg.written_bytes = seg.size_bytes;
    // Anything after the last good batch goes, so that stale bytes can never be taken for a
    // continuation later.
    if file_size > seg.size_bytes {
        file.truncate(seg.size_bytes)
            .await
            .map_err(|e| StorageError::io("truncate segment", e))?;
        file.fdatasync()
            .await
            .map_err(|e| StorageError::io("fdatasync segment", e))?;
    }
    let mut tail = None;
    if last {
        if reserve_space {
            let target = (align_up(seg.size_bytes) + STORAGE_RESERVE_STEP_BYTES)
                .min(align_up(config.segment_bytes.max(seg.size_bytes)));
            if target > seg.size_bytes {
                file.pre_allocate(target, false)
                    .await
                    .map_err(|e| StorageError::io("reserve segment", e))?;
                seg.reserved_bytes = target;
            }
        }
        let prefix_start = align_down(seg.size_bytes);
        let prefix_len = (seg.size_bytes - prefix_start) as usize;
        if prefix_len > 0 {
            let page = file
                .read_at_aligned(prefix_start, STORAGE_IO_ALIGNMENT_BYTES as usize)
                .await
                .map_err(|e| StorageError::io("read tail page", e))?;
            let mut buf = alloc_buffer(STORAGE_STAGING_BUFFER_BYTES);
            buf.as_bytes_mut()[..prefix_len].copy_from_slice(&page[..prefix_len]);
            tail = Some((buf, prefix_len));
        }
    } else {
        seg.sealed = true;
        seg.finalized = true;
    }
    seg.file = Some(Rc::new(file));
    Ok((seg, tail))
}

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
