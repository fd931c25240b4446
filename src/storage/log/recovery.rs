//! Opening a `PartitionLog` after a stop or a crash: probing that the directory takes direct
//! I/O (`probe_device`) and recovering each segment (`recover_segment`): scanning, cutting a
//! torn tail, rebuilding indexes.
//!
//! Owner: `PartitionLog::open_with`, on the partition's shard, before the writer task starts.
//! Awaits file reads and writes.

use super::*;

const PROBE_FILE: &str = ".ringbroker-dma-probe";

/// Makes glommio's per-thread, per-device IOPOLL probe run against a non-empty file.
///
/// glommio 0.9 decides whether a device supports polled I/O by reading offset 0 of the first
/// DMA file opened on it (per thread) through the poll ring and caches the answer. If that
/// file is empty the read "succeeds" with 0 bytes, the device is marked pollable, and every
/// later read on it fails with EOPNOTSUPP (virtio disks here have `io_poll` 0). Opening a
/// 4 KiB file first gets the probe a real read and the right answer. Cheap after the first
/// call on a thread (the answer is cached; this is one small open).
pub(super) async fn probe_device(dir: &Path) -> StorageResult<()> {
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

/// Whether a batch read back can follow in segment `base` after offset `next`: offsets grow
/// (compacted segments have gaps where the cleaner removed records, so growing is what
/// continuity means here) and stay within the segment's 32-bit relative range.
fn grows_within(h: &BatchHeader, base: i64, next: i64) -> bool {
    h.base_offset.get() >= next && h.last_offset() - base <= i64::from(u32::MAX)
}

/// Recovers one segment. The last segment is scanned whole (length, magic, CRC, growing
/// offsets), its torn or corrupt tail cut off, its indexes rebuilt. A closed segment
/// trusts a well-formed index and scans only from its last entry; a missing or damaged index
/// is rebuilt by a full scan. Returns the segment and, for the last one, its partial tail page.
/// With `epochs`, every batch a full scan keeps is also offered to the leader epoch cache
/// (rebuilding a missing `leader-epoch-checkpoint`).
pub(super) async fn recover_segment(
    dir: &Path,
    base: i64,
    last: bool,
    config: &LogConfig,
    reserve_budget: Option<&Rc<ReserveBudget>>,
    mut epochs: Option<&mut EpochCache>,
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
                    None => grows_within(h, base, base),
                };
                if !index_fits || !fits {
                    ok = false;
                    return false;
                }
                s.next_offset = h.base_offset.get();
            } else if !grows_within(h, base, s.next_offset) {
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
        let (end, why) = scan(&file, 0, file_size, None, |pos, h, _| {
            if !grows_within(h, base, s.next_offset) {
                return false;
            }
            if let Some(cache) = epochs.as_deref_mut() {
                cache.assign(h.partition_leader_epoch.get(), h.base_offset.get());
            }
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
        // An offset that does not grow is as corrupt as a bad CRC.
        let why = if why == ScanEnd::Stopped {
            ScanEnd::Corrupt
        } else {
            why
        };
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
        if let Some(budget) = reserve_budget {
            let wanted = (align_up(seg.size_bytes) + reserve_step(seg.size_bytes))
                .min(align_up(config.segment_bytes.max(seg.size_bytes)));
            let mut grant = ReserveGrant::new(budget);
            let target = budgeted_target(
                seg.size_bytes,
                seg.size_bytes,
                wanted,
                grant.ceiling(seg.size_bytes),
                STORAGE_IO_ALIGNMENT_BYTES,
            );
            if let Some(target) = target {
                grant.set(target - seg.size_bytes);
                // A reservation that fails (a full disk) does not keep the partition from
                // opening: appends grow the file, and the writer tries to reserve again.
                match file.pre_allocate(target, false).await {
                    Ok(()) => {
                        seg.reserved_bytes = target;
                        seg.grant = Some(grant);
                    }
                    Err(e) => {
                        tracing::warn!(dir = %dir.display(), base, error = %e,
                            "reserving segment space at open failed; appends grow the file");
                        seg.reserve_retry_at = Some(
                            Instant::now()
                                + Duration::from_millis(crate::limits::STORAGE_RESERVE_RETRY_MS),
                        );
                    }
                }
            } else if wanted > seg.size_bytes {
                grant.note_short();
            }
        }
        let prefix_start = align_down(seg.size_bytes);
        let prefix_len = (seg.size_bytes - prefix_start) as usize;
        if prefix_len > 0 {
            let page = file
                .read_at_aligned(prefix_start, STORAGE_IO_ALIGNMENT_BYTES as usize)
                .await
                .map_err(|e| StorageError::io("read tail page", e))?;
            // One page, not a whole staging buffer: the first append moves the page into a
            // full-size buffer (`stage`), and a partition that stays idle after a restart
            // holds 4 KiB instead of 1 MiB (10,000 idle partitions took 2 GB of RSS).
            let mut buf = alloc_buffer(STORAGE_IO_ALIGNMENT_BYTES as usize);
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

/// The leader epoch and base offset of the first batch of a segment file (one page read), if
/// it starts with a well-formed v2 header: what a missing `leader-epoch-checkpoint` is
/// rebuilt from for a closed segment.
pub(super) async fn first_batch_epoch(file: &glommio::io::DmaFile) -> Option<(i32, i64)> {
    let page = file
        .read_at_aligned(0, STORAGE_IO_ALIGNMENT_BYTES as usize)
        .await
        .ok()?;
    let h = BatchHeader::view(&page)?;
    (h.magic == 2 && h.size_bytes() >= BATCH_HEADER_BYTES as i64)
        .then(|| (h.partition_leader_epoch.get(), h.base_offset.get()))
}
