//! The log side of compaction: what the cleaner (`storage::cleaner`) may read, how it writes a
//! cleaned segment beside the old ones, and the swap that replaces a group of old segments by
//! it so that a crash at any point leaves the old set or the new one, never a mix.
//!
//! Owner: the partition's shard; called by the shard's cleaner from the background queue.
//! Awaits direct reads and writes, fdatasync and directory syncs; never holds a `RefCell`
//! borrow across an await. The swap holds the log's `segments_permit`, which retention and
//! DeleteRecords hold while they delete segments, so the two never work on the same segments.
//!
//! Files of one swap, in order (`<n>` is the group's first base offset, which the cleaned
//! segment keeps):
//! 1. `<n>.log.cleaned`, `<n>.index.cleaned`, `<n>.timeindex.cleaned`, `<n>.txnindex.cleaned`,
//!    written and fdatasynced. A crash now: recovery deletes every `*.cleaned` file and the old
//!    segments stand.
//! 2. `<n>.swap`, written atomically (temporary file, fdatasync, rename, directory sync),
//!    naming the base offsets of every old segment the cleaned one replaces. This is the
//!    commit point: from here on the new set wins.
//! 3. Roll forward: each `.cleaned` file renamed over its final name (atomically replacing
//!    `<n>`'s old files), then the other old segments' files deleted, the directory synced, and
//!    `<n>.swap` deleted. Recovery (`recover_swaps`, at open, before segments are listed)
//!    repeats step 3 for every `.swap` it finds; each step is idempotent.
//!
//! Readers: a read takes the segment's `Rc<DmaFile>` and positions under one borrow and then
//! reads that file, so a read that started before the swap finishes on the old file (renamed
//! over or unlinked, but open) and sees the old batches whole; reads after the swap see the new
//! segment. Either is a consistent view of the same offsets, as in Kafka. The shard cache's
//! entries for the replaced offsets are dropped with the swap.

use super::*;
use crate::limits::STORAGE_CLEANER_WRITE_BUFFER_BYTES;

const SWAP_SUFFIX: &str = ".swap";
const CLEANED_SUFFIX: &str = ".cleaned";
const SEGMENT_EXTS: [&str; 4] = ["log", "index", "timeindex", "txnindex"];

/// Test hook (`PartitionLog::inject_swap_stop`): a point of the swap where the next one stops,
/// leaving the files as a process killed there would, and fails with an I/O error. The log
/// must then be dropped and reopened, as after the crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SwapStop {
    /// The cleaned files are written, the manifest is not.
    BeforeManifest,
    /// The manifest is durable; nothing is renamed yet.
    AfterManifest,
    /// The cleaned `.log` is renamed over the group's first segment; nothing else is.
    AfterFirstRename,
    /// Every cleaned file is renamed; the other old segments are not deleted yet.
    BeforeDeletes,
}

fn stopped() -> StorageError {
    StorageError::io(
        "swap stopped by the test hook",
        std::io::Error::other("injected stop"),
    )
}

/// A closed segment as the cleaner sees it.
#[derive(Debug, Clone)]
pub struct ClosedSegment {
    pub base_offset: i64,
    /// The base offset of the segment after it: offsets in `[base_offset, next_base)` live here.
    pub next_base: i64,
    pub size_bytes: u64,
    /// Max timestamp of its first batch (KIP-354's reference for `max.compaction.lag.ms`).
    pub first_timestamp_ms: Option<i64>,
    /// Largest timestamp in it, -1 if none.
    pub max_timestamp_ms: i64,
    file: Rc<glommio::io::DmaFile>,
}

/// A cleaned segment being written beside the old ones (`<base>.log.cleaned`).
#[derive(Debug)]
pub struct CleanedWriter {
    dir: PathBuf,
    segment: Segment,
    file: Rc<glommio::io::DmaFile>,
    buf: DmaBuffer,
    /// Valid bytes in `buf`; `buf[0]` is at file position `buf_position` (aligned).
    len: usize,
    buf_position: u64,
    index_interval_bytes: u64,
    /// The log's truncation count the cleaner's reads started from (`truncation_count`);
    /// the swap is refused if a truncation ran since.
    truncations: u64,
}

/// A cleaned segment written whole, ready to be swapped in.
#[derive(Debug)]
pub struct CleanedSegment {
    segment: Segment,
    truncations: u64,
}

impl CleanedSegment {
    pub fn size_bytes(&self) -> u64 {
        self.segment.size_bytes
    }
}

fn cleaned_path(dir: &Path, base: i64, ext: &str) -> PathBuf {
    dir.join(format!("{}{CLEANED_SUFFIX}", segment::file_name(base, ext)))
}

fn swap_name(base: i64) -> String {
    format!("{base:020}{SWAP_SUFFIX}")
}

impl PartitionLog {
    /// The partition's directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// How many truncations (`truncate_to`, `truncate_fully_and_start_at`) ran on this open
    /// log: the cleaner takes it before reading and hands it to `create_cleaned`.
    pub fn truncation_count(&self) -> u64 {
        self.inner.truncations.get()
    }

    /// Tells this open log from an earlier one of the same directory (a topic deleted and
    /// created again under its name): unique per process.
    pub fn instance_id(&self) -> u64 {
        self.inner.log_id
    }

    /// Closed segments (sealed, their indexes written), oldest first; never the active one.
    pub fn closed_segments(&self) -> Vec<ClosedSegment> {
        let st = self.inner.state.borrow();
        let bases: Vec<i64> = st.segments.keys().copied().collect();
        let mut out = Vec::new();
        for (i, base) in bases.iter().enumerate() {
            let Some(&next_base) = bases.get(i + 1) else {
                break;
            };
            let seg = &st.segments[base];
            let Some(file) = seg.file.clone() else { break };
            if !seg.sealed || !seg.finalized {
                break;
            }
            out.push(ClosedSegment {
                base_offset: *base,
                next_base,
                size_bytes: seg.written_bytes,
                first_timestamp_ms: seg.first_timestamp_ms,
                max_timestamp_ms: seg.max_timestamp.0,
                file,
            });
        }
        out
    }

    /// Whole, CRC-checked batches of `segment` from byte `position`, about `budget_bytes` of
    /// them (at least one), concatenated; and the position after them. Empty at the end.
    pub async fn read_closed(
        &self,
        segment: &ClosedSegment,
        position: u64,
        budget_bytes: usize,
    ) -> StorageResult<(Vec<u8>, u64)> {
        let mut out = Vec::with_capacity(budget_bytes.min(segment.size_bytes as usize));
        let (end, why) = scan(
            &segment.file,
            position,
            segment.size_bytes,
            None,
            |_, _, b| {
                if !out.is_empty() && out.len() + b.len() > budget_bytes {
                    return false;
                }
                out.extend_from_slice(b);
                true
            },
        )
        .await?;
        match why {
            ScanEnd::Limit | ScanEnd::Stopped => Ok((out, end)),
            ScanEnd::Torn | ScanEnd::Corrupt => Err(StorageError::CorruptMessage(
                "closed segment does not scan cleanly; not compacting it",
            )),
        }
    }

    /// Starts the cleaned segment that will replace a group starting at `base` (a closed
    /// segment's base offset). `truncations` is `truncation_count()` as it was when the
    /// cleaner first looked at the segments: if a truncation ran since, the swap is refused.
    pub async fn create_cleaned(
        &self,
        base: i64,
        truncations: u64,
    ) -> StorageResult<CleanedWriter> {
        let file = open_log_file(&cleaned_path(&self.inner.dir, base, "log"), true).await?;
        Ok(CleanedWriter {
            dir: self.inner.dir.clone(),
            segment: Segment::new(base),
            file: Rc::new(file),
            buf: alloc_buffer(STORAGE_CLEANER_WRITE_BUFFER_BYTES),
            len: 0,
            buf_position: 0,
            index_interval_bytes: u64::from(self.inner.config.get().index_interval_bytes),
            truncations,
        })
    }

    /// Replaces the closed segments `old_bases` (consecutive, the first equal to the cleaned
    /// segment's base) by `cleaned`, crash-safely (see the module header), and drops the shard
    /// cache's entries for their offsets. Returns false, and deletes the cleaned files, if the
    /// old segments changed meanwhile (deleted by retention, say, or a truncation ran: the
    /// cleaner may have read data it cut, as Kafka aborts cleaning around a truncation).
    pub async fn replace_segments(
        &self,
        old_bases: &[i64],
        cleaned: CleanedSegment,
    ) -> StorageResult<bool> {
        let inner = &*self.inner;
        let base = cleaned.segment.base_offset;
        assert_eq!(
            old_bases.first(),
            Some(&base),
            "a group keeps its base offset"
        );
        let _permit = inner
            .segments_permit
            .acquire_permit(1)
            .await
            .map_err(|_| StorageError::Closed)?;
        let still_there = {
            let st = inner.state.borrow();
            let last = st.segments.keys().next_back().copied();
            old_bases.iter().all(|b| {
                Some(*b) != last && st.segments.get(b).is_some_and(|s| s.sealed && s.finalized)
            })
        };
        if !still_there || inner.closed.get() || cleaned.truncations != inner.truncations.get() {
            remove_cleaned(&inner.dir, base);
            return Ok(false);
        }
        let stop = inner.swap_stop.take();
        if stop == Some(SwapStop::BeforeManifest) {
            return Err(stopped());
        }
        let manifest: String = old_bases.iter().map(|b| format!("{b}\n")).collect();
        write_file_atomic(&inner.dir, &swap_name(base), manifest.as_bytes()).await?;
        if stop == Some(SwapStop::AfterManifest) {
            return Err(stopped());
        }
        if let Some(stop) = stop {
            roll_forward_until(&inner.dir, base, old_bases, Some(stop)).await?;
            return Err(stopped());
        }
        let group_end = {
            let mut st = inner.state.borrow_mut();
            for b in old_bases {
                st.segments.remove(b);
            }
            st.segments.insert(base, cleaned.segment);
            st.segments
                .range(base + 1..)
                .next()
                .map_or(i64::MAX, |(b, _)| *b)
        };
        inner
            .env
            .cache
            .remove_range(inner.log_id, base, group_end - 1);
        roll_forward(&inner.dir, base, old_bases).await?;
        Ok(true)
    }

    /// Test hook: the next swap stops at `at` (see `SwapStop`).
    #[doc(hidden)]
    pub fn inject_swap_stop(&self, at: SwapStop) {
        self.inner.swap_stop.set(Some(at));
    }
}

impl CleanedWriter {
    /// Appends one whole batch (offsets above every batch appended before).
    pub async fn append(&mut self, batch: &[u8]) -> StorageResult<()> {
        let header = BatchHeader::view(batch).expect("a whole batch");
        if self.len + batch.len() > self.buf.len() {
            self.flush_aligned().await?;
            if self.len + batch.len() > self.buf.len() {
                let mut bigger = alloc_buffer(align_up((self.len + batch.len()) as u64) as usize);
                bigger.as_bytes_mut()[..self.len].copy_from_slice(&self.buf.as_bytes()[..self.len]);
                self.buf = bigger;
            }
        }
        self.buf.as_bytes_mut()[self.len..self.len + batch.len()].copy_from_slice(batch);
        self.len += batch.len();
        let position = self.segment.size_bytes;
        self.segment.track_batch(
            position,
            batch.len() as u64,
            header.base_offset.get(),
            header.last_offset(),
            header.max_timestamp.get(),
            self.index_interval_bytes,
        );
        Ok(())
    }

    /// Writes the whole pages of the buffer and keeps the partial last page.
    async fn flush_aligned(&mut self) -> StorageResult<()> {
        let whole = align_down(self.len as u64) as usize;
        if whole == 0 {
            return Ok(());
        }
        let mut out = alloc_buffer(whole);
        out.as_bytes_mut()
            .copy_from_slice(&self.buf.as_bytes()[..whole]);
        self.write(out, whole).await?;
        let rest = self.len - whole;
        let tail = self.buf.as_bytes()[whole..self.len].to_vec();
        self.buf.as_bytes_mut()[..rest].copy_from_slice(&tail);
        self.len = rest;
        self.buf_position += whole as u64;
        Ok(())
    }

    async fn write(&self, buf: DmaBuffer, len: usize) -> StorageResult<()> {
        assert_eq!(self.buf_position % STORAGE_IO_ALIGNMENT_BYTES, 0);
        let written = self
            .file
            .write_at(buf, self.buf_position)
            .await
            .map_err(|e| StorageError::io("write cleaned segment", e))?;
        if written < len {
            return Err(StorageError::io(
                "write cleaned segment",
                std::io::Error::new(std::io::ErrorKind::WriteZero, "short direct write"),
            ));
        }
        Ok(())
    }

    /// Writes the rest, syncs, cuts the file to its size and writes its indexes and
    /// transaction index (`txn_index`, encoded) beside it. On failure the cleaned files are
    /// deleted.
    pub async fn finish(self, txn_index: &[u8]) -> StorageResult<CleanedSegment> {
        let (dir, base) = (self.dir.clone(), self.segment.base_offset);
        let result = self.finish_files(txn_index).await;
        if result.is_err() {
            remove_cleaned(&dir, base);
        }
        result
    }

    async fn finish_files(mut self, txn_index: &[u8]) -> StorageResult<CleanedSegment> {
        if self.len > 0 {
            let padded = align_up(self.len as u64) as usize;
            let mut out = alloc_buffer(padded);
            out.as_bytes_mut()[..self.len].copy_from_slice(&self.buf.as_bytes()[..self.len]);
            out.as_bytes_mut()[self.len..].fill(0);
            self.write(out, padded).await?;
        }
        let size = self.segment.size_bytes;
        let err = |e| StorageError::io("finish cleaned segment", e);
        self.file.truncate(size).await.map_err(err)?;
        self.file.fdatasync().await.map_err(err)?;
        let seg = &mut self.segment;
        seg.seal_time_index();
        seg.written_bytes = size;
        seg.sealed = true;
        seg.finalized = true;
        seg.file = Some(self.file.clone());
        let base = seg.base_offset;
        let name = |ext| format!("{}{CLEANED_SUFFIX}", segment::file_name(base, ext));
        write_file_atomic(&self.dir, &name("index"), &seg.index.encode()).await?;
        write_file_atomic(&self.dir, &name("timeindex"), &seg.time_index.encode()).await?;
        write_file_atomic(&self.dir, &name("txnindex"), txn_index).await?;
        Ok(CleanedSegment {
            segment: self.segment,
            truncations: self.truncations,
        })
    }

    /// Gives up: deletes what was written.
    pub fn abandon(self) {
        remove_cleaned(&self.dir, self.segment.base_offset);
    }
}

fn remove_cleaned(dir: &Path, base: i64) {
    for ext in SEGMENT_EXTS {
        let _ = std::fs::remove_file(cleaned_path(dir, base, ext));
    }
}

/// Step 3 of a swap (module header): idempotent, so recovery can repeat it after a crash
/// anywhere inside it.
async fn roll_forward(dir: &Path, base: i64, old_bases: &[i64]) -> StorageResult<()> {
    roll_forward_until(dir, base, old_bases, None).await
}

async fn roll_forward_until(
    dir: &Path,
    base: i64,
    old_bases: &[i64],
    stop: Option<SwapStop>,
) -> StorageResult<()> {
    for ext in SEGMENT_EXTS {
        let from = cleaned_path(dir, base, ext);
        match std::fs::rename(&from, segment_path(dir, base, ext)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(StorageError::io("swap in cleaned segment", e)),
        }
        if stop == Some(SwapStop::AfterFirstRename) {
            return writer::sync_dir(dir).await;
        }
    }
    writer::sync_dir(dir).await?;
    if stop == Some(SwapStop::BeforeDeletes) {
        return Ok(());
    }
    for &old in old_bases.iter().filter(|&&b| b != base) {
        for ext in SEGMENT_EXTS {
            match std::fs::remove_file(segment_path(dir, old, ext)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(StorageError::io("delete compacted segment", e)),
            }
        }
    }
    writer::sync_dir(dir).await?;
    match std::fs::remove_file(dir.join(swap_name(base))) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(StorageError::io("delete swap manifest", e)),
    }
    writer::sync_dir(dir).await
}

/// At open, before segments are listed: finishes every swap whose manifest is on disk and
/// deletes the cleaned files of swaps that never reached their commit point.
pub(super) async fn recover_swaps(dir: &Path) -> StorageResult<()> {
    let mut manifests = Vec::new();
    let mut cleaned = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| StorageError::io("list log dir", e))? {
        let entry = entry.map_err(|e| StorageError::io("list log dir", e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(stem) = name.strip_suffix(SWAP_SUFFIX)
            && stem.len() == 20
            && let Ok(base) = stem.parse::<i64>()
        {
            manifests.push(base);
        } else if name.ends_with(CLEANED_SUFFIX) {
            cleaned.push(entry.path());
        }
    }
    manifests.sort_unstable();
    for base in manifests {
        let path = dir.join(swap_name(base));
        let text = read_small_file(&path)
            .await?
            .and_then(|b| String::from_utf8(b).ok())
            .unwrap_or_default();
        let old: Option<Vec<i64>> = text.lines().map(|l| l.trim().parse().ok()).collect();
        match old {
            Some(old) if old.first() == Some(&base) => {
                tracing::info!(dir = %dir.display(), base, replaced = old.len(),
                    "finishing a compaction swap interrupted by a stop");
                roll_forward(dir, base, &old).await?;
            }
            _ => {
                // Written atomically, so this is not ours; leave the segments as they are.
                tracing::warn!(path = %path.display(), "ignoring a malformed swap manifest");
                let _ = std::fs::remove_file(&path);
            }
        }
    }
    for path in cleaned {
        if path.exists() {
            tracing::info!(path = %path.display(), "deleting an unfinished cleaned segment");
            let _ = std::fs::remove_file(&path);
        }
    }
    Ok(())
}
