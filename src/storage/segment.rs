//! One segment of a partition log: the `.log` file (direct I/O), its in-memory sparse indexes
//! and the bookkeeping of what is staged, written and reserved.
//!
//! Owned by the `PartitionLog` of one shard (inside its `RefCell` state; never borrowed across
//! an await: async helpers here take the `Rc<DmaFile>` and plain values, not the segment).
//! Lifecycle: created empty by a roll (file created by the log's writer task) or loaded by
//! recovery; active while it is the last segment; sealed when the next one is created, at
//! which point the writer truncates the file to its logical size and writes `.index` and
//! `.timeindex`; deleted whole by retention or `delete_records`.

use std::path::{Path, PathBuf};
use std::rc::Rc;

use glommio::io::{DmaFile, OpenOptions};

use super::batch::{BATCH_HEADER_BYTES, BatchHeader, compute_crc};
use super::error::{StorageError, StorageResult};
use super::index::{OffsetIndex, TimeIndex};
use crate::limits::{STORAGE_IO_ALIGNMENT_BYTES, STORAGE_SCAN_CHUNK_BYTES};

pub(crate) fn align_down(v: u64) -> u64 {
    v & !(STORAGE_IO_ALIGNMENT_BYTES - 1)
}

pub(crate) fn align_up(v: u64) -> u64 {
    align_down(v + STORAGE_IO_ALIGNMENT_BYTES - 1)
}

pub(crate) fn file_name(base_offset: i64, ext: &str) -> String {
    format!("{base_offset:020}.{ext}")
}

pub(crate) fn segment_path(dir: &Path, base_offset: i64, ext: &str) -> PathBuf {
    dir.join(file_name(base_offset, ext))
}

/// Appended-state of a segment that a failed flush rolls back to.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SegmentMark {
    pub(crate) size_bytes: u64,
    pub(crate) next_offset: i64,
    pub(crate) index_len: usize,
    pub(crate) time_index_len: usize,
    pub(crate) max_timestamp: (i64, i64),
    pub(crate) first_timestamp_ms: Option<i64>,
    pub(crate) bytes_since_index: u64,
}

#[derive(Debug)]
pub(crate) struct Segment {
    pub(crate) base_offset: i64,
    /// None until the writer task created the file (first flush after a roll).
    pub(crate) file: Option<Rc<DmaFile>>,
    /// Logical size including staged, not yet written batches.
    pub(crate) size_bytes: u64,
    /// Logical size of what has been written (readable from disk).
    pub(crate) written_bytes: u64,
    /// Next offset after the staged batches of this segment.
    pub(crate) next_offset: i64,
    pub(crate) index: OffsetIndex,
    pub(crate) time_index: TimeIndex,
    /// (max timestamp, offset of the batch that has it); (-1, -1) when empty.
    pub(crate) max_timestamp: (i64, i64),
    /// Max timestamp of the first batch: the reference for `segment.ms` rolls (as in Kafka).
    pub(crate) first_timestamp_ms: Option<i64>,
    /// Wall-clock creation time (this process's view), for `segment.ms` without timestamps.
    pub(crate) created_ms: i64,
    pub(crate) bytes_since_index: u64,
    /// Bytes of file space reserved (fallocate) from 0.
    pub(crate) reserved_bytes: u64,
    /// What this segment holds of the shard's reservation budget: `reserved_bytes` beyond
    /// `written_bytes` (more while a reservation is in flight). None: nothing.
    pub(crate) grant: Option<super::reserve::ReserveGrant>,
    pub(crate) reserving: bool,
    /// After a failed reservation (a full disk, say): not retried before this instant, and the
    /// failure is logged once per streak rather than after every write.
    pub(crate) reserve_retry_at: Option<std::time::Instant>,
    /// No more appends; the next segment exists.
    pub(crate) sealed: bool,
    /// Index files written and file truncated after sealing.
    pub(crate) finalized: bool,
}

impl Segment {
    pub(crate) fn new(base_offset: i64) -> Segment {
        Segment {
            base_offset,
            file: None,
            size_bytes: 0,
            written_bytes: 0,
            next_offset: base_offset,
            index: OffsetIndex::default(),
            time_index: TimeIndex::default(),
            max_timestamp: (-1, -1),
            first_timestamp_ms: None,
            created_ms: super::log::now_ms(),
            bytes_since_index: 0,
            reserved_bytes: 0,
            grant: None,
            reserving: false,
            reserve_retry_at: None,
            sealed: false,
            finalized: false,
        }
    }

    pub(crate) fn mark(&self) -> SegmentMark {
        SegmentMark {
            size_bytes: self.size_bytes,
            next_offset: self.next_offset,
            index_len: self.index.entries.len(),
            time_index_len: self.time_index.entries.len(),
            max_timestamp: self.max_timestamp,
            first_timestamp_ms: self.first_timestamp_ms,
            bytes_since_index: self.bytes_since_index,
        }
    }

    pub(crate) fn rollback_to(&mut self, m: &SegmentMark) {
        self.size_bytes = m.size_bytes;
        self.written_bytes = self.written_bytes.min(m.size_bytes);
        self.next_offset = m.next_offset;
        self.index.entries.truncate(m.index_len);
        self.time_index.entries.truncate(m.time_index_len);
        self.max_timestamp = m.max_timestamp;
        self.first_timestamp_ms = m.first_timestamp_ms;
        self.bytes_since_index = m.bytes_since_index;
    }

    /// Records one batch that was placed at `position` (index and timestamps).
    pub(crate) fn track_batch(
        &mut self,
        position: u64,
        size_bytes: u64,
        base_offset: i64,
        last_offset: i64,
        max_timestamp_ms: i64,
        index_interval_bytes: u64,
    ) {
        // Offsets only grow; a compacted segment has gaps where the cleaner removed records.
        assert!(base_offset >= self.next_offset, "offsets must grow");
        assert_eq!(position, self.size_bytes, "batches must be contiguous");
        let relative_last = (last_offset - self.base_offset) as u32;
        // Both indexes are sparse: one entry per `index.interval.bytes`, as in Kafka. A time
        // entry (T, o) says no batch up to here has a timestamp above T.
        let index_now = self.bytes_since_index >= index_interval_bytes;
        if index_now {
            self.index.push(relative_last, position as u32);
            self.bytes_since_index = 0;
        }
        self.bytes_since_index += size_bytes;
        if max_timestamp_ms > self.max_timestamp.0 {
            self.max_timestamp = (max_timestamp_ms, base_offset);
        }
        if index_now && self.max_timestamp.0 >= 0 {
            let rel = (self.max_timestamp.1 - self.base_offset) as u32;
            self.time_index.maybe_push(self.max_timestamp.0, rel);
        }
        if self.first_timestamp_ms.is_none() {
            self.first_timestamp_ms = Some(max_timestamp_ms);
        }
        self.size_bytes = position + size_bytes;
        self.next_offset = last_offset + 1;
    }

    /// Adds the final time index entry Kafka writes when a segment becomes inactive.
    pub(crate) fn seal_time_index(&mut self) {
        if self.max_timestamp.0 >= 0 {
            let rel = (self.next_offset - 1 - self.base_offset) as u32;
            self.time_index.maybe_push(self.max_timestamp.0, rel);
        }
    }
}

/// Opens (creating if asked, truncating a stale file of the same name) a segment log file for
/// direct reads and writes.
pub(crate) async fn open_log_file(path: &Path, create: bool) -> StorageResult<DmaFile> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .truncate(create)
        .dma_open(path)
        .await
        .map_err(|e| StorageError::io("open segment", e))
}

/// Where a scan stopped and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ScanEnd {
    /// Reached `limit_bytes` exactly.
    Limit,
    /// A zero or impossible length, or a batch running past the limit (torn write).
    Torn,
    /// Bad magic, bad CRC or an offset discontinuity.
    Corrupt,
    /// The visitor asked to stop.
    Stopped,
}

/// Reads batches from `start` to `limit_bytes` in chunks and hands each complete, CRC-checked
/// batch with well-formed offsets (`BatchHeader::checked_last_offset`) to
/// `visit(position, header, bytes)`. `expect_offset`, when set, must match each
/// batch's base offset (continuity). Returns the position after the last good batch.
pub(crate) async fn scan(
    file: &DmaFile,
    start: u64,
    limit_bytes: u64,
    mut expect_offset: Option<i64>,
    mut visit: impl FnMut(u64, &BatchHeader, &[u8]) -> bool,
) -> StorageResult<(u64, ScanEnd)> {
    let mut position = start;
    loop {
        if position >= limit_bytes {
            return Ok((position, ScanEnd::Limit));
        }
        let chunk_start = align_down(position);
        let want = (limit_bytes - chunk_start).min(STORAGE_SCAN_CHUNK_BYTES as u64);
        let chunk = file
            .read_at_aligned(chunk_start, align_up(want) as usize)
            .await
            .map_err(|e| StorageError::io("scan read", e))?;
        let valid = (chunk.len() as u64).min(limit_bytes - chunk_start) as usize;
        // The chunk reaches the limit (or the end of the file): nothing more can follow.
        let chunk_is_last =
            chunk_start + valid as u64 >= limit_bytes || (chunk.len() as u64) < want;
        let mut at = (position - chunk_start) as usize;
        loop {
            let here = chunk_start + at as u64;
            if here >= limit_bytes {
                return Ok((here, ScanEnd::Limit));
            }
            let rest = &chunk[at..valid];
            let Some(h) = BatchHeader::view(rest) else {
                if chunk_is_last {
                    return Ok((here, ScanEnd::Torn));
                }
                break;
            };
            let size = h.size_bytes();
            if size < BATCH_HEADER_BYTES as i64 || here + size as u64 > limit_bytes {
                return Ok((here, ScanEnd::Torn));
            }
            if size as usize > rest.len() {
                if chunk_is_last {
                    return Ok((here, ScanEnd::Torn));
                }
                break;
            }
            let bytes = &rest[..size as usize];
            if h.magic != 2
                || compute_crc(bytes) != h.crc.get()
                || h.checked_last_offset().is_none()
            {
                return Ok((here, ScanEnd::Corrupt));
            }
            if let Some(e) = expect_offset
                && h.base_offset.get() != e
            {
                return Ok((here, ScanEnd::Corrupt));
            }
            if !visit(here, h, bytes) {
                return Ok((here, ScanEnd::Stopped));
            }
            expect_offset = expect_offset.map(|_| h.last_offset() + 1);
            at += size as usize;
        }
        let next = chunk_start + at as u64;
        if next == position {
            // The batch at `position` is larger than a chunk: read exactly it.
            let h_chunk = file
                .read_at_aligned(
                    align_down(position),
                    STORAGE_IO_ALIGNMENT_BYTES as usize * 2,
                )
                .await
                .map_err(|e| StorageError::io("scan read", e))?;
            let off = (position - align_down(position)) as usize;
            let Some(h) = h_chunk.get(off..).and_then(BatchHeader::view) else {
                return Ok((position, ScanEnd::Torn));
            };
            let size = h.size_bytes().max(0) as u64;
            if size < BATCH_HEADER_BYTES as u64 || position + size > limit_bytes {
                return Ok((position, ScanEnd::Torn));
            }
            let big = file
                .read_at(position, size as usize)
                .await
                .map_err(|e| StorageError::io("scan read", e))?;
            if (big.len() as u64) < size {
                return Ok((position, ScanEnd::Torn));
            }
            let Some(h) = BatchHeader::view(&big) else {
                return Ok((position, ScanEnd::Torn));
            };
            if h.magic != 2 || compute_crc(&big) != h.crc.get() || h.checked_last_offset().is_none()
            {
                return Ok((position, ScanEnd::Corrupt));
            }
            if let Some(e) = expect_offset
                && h.base_offset.get() != e
            {
                return Ok((position, ScanEnd::Corrupt));
            }
            if !visit(position, h, &big) {
                return Ok((position, ScanEnd::Stopped));
            }
            expect_offset = expect_offset.map(|_| h.last_offset() + 1);
            position += size;
        } else {
            position = next;
        }
    }
}

/// Writes a small file atomically (temp file, fdatasync, rename, directory sync) with glommio
/// I/O so the shard is not blocked. Used for index files and the log start checkpoint.
pub(crate) async fn write_file_atomic(
    dir: &Path,
    name: &str,
    contents: &[u8],
) -> StorageResult<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let err = |e| StorageError::io("write metadata file", e);
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .dma_open(&tmp)
        .await
        .map_err(err)?;
    if !contents.is_empty() {
        let size = align_up(contents.len() as u64) as usize;
        let mut buf = file.alloc_dma_buffer(size);
        buf.as_bytes_mut()[..contents.len()].copy_from_slice(contents);
        buf.as_bytes_mut()[contents.len()..].fill(0);
        file.write_at(buf, 0).await.map_err(err)?;
    }
    file.truncate(contents.len() as u64).await.map_err(err)?;
    file.fdatasync().await.map_err(err)?;
    file.rename(dir.join(name)).await.map_err(err)?;
    file.close().await.map_err(err)?;
    let d = glommio::io::Directory::open(dir).await.map_err(err)?;
    d.sync().await.map_err(err)?;
    d.close().await.map_err(err)?;
    Ok(())
}

/// Reads a whole small file, `None` if it does not exist.
pub(crate) async fn read_small_file(path: &Path) -> StorageResult<Option<Vec<u8>>> {
    let file = match glommio::io::DmaFile::open(path).await {
        Ok(f) => f,
        Err(e) => {
            let e: std::io::Error = e.into();
            if e.kind() == std::io::ErrorKind::NotFound {
                return Ok(None);
            }
            return Err(StorageError::io("open metadata file", e));
        }
    };
    let err = |e| StorageError::io("read metadata file", e);
    let size = file.file_size().await.map_err(err)?;
    let out = if size == 0 {
        Vec::new()
    } else {
        file.read_at(0, size as usize).await.map_err(err)?.to_vec()
    };
    file.close().await.map_err(err)?;
    Ok(Some(out))
}

/// How far ahead of `written_bytes` an active segment reserves its next step: the bytes
/// written so far rounded up to a power of two, between `STORAGE_RESERVE_STEP_MIN_BYTES` and
/// `STORAGE_RESERVE_STEP_MAX_BYTES`. Reserved-but-unwritten space so scales with how fast a
/// partition writes, not with how many partitions there are.
pub fn reserve_step(written_bytes: u64) -> u64 {
    written_bytes.next_power_of_two().clamp(
        crate::limits::STORAGE_RESERVE_STEP_MIN_BYTES,
        crate::limits::STORAGE_RESERVE_STEP_MAX_BYTES,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserve_steps_grow_with_what_a_segment_has_taken() {
        const MIB: u64 = 1024 * 1024;
        assert_eq!(reserve_step(0), MIB);
        assert_eq!(reserve_step(100), MIB);
        assert_eq!(reserve_step(MIB + 1), 2 * MIB);
        assert_eq!(reserve_step(33 * MIB), 64 * MIB);
        assert_eq!(reserve_step(u64::MAX / 2), 64 * MIB);
    }
}
