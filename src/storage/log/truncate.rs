//! Truncation of a `PartitionLog`: a follower cutting its log back to where it agrees with
//! its leader (`truncate_to`), or restarting it empty at the leader's log start
//! (`truncate_fully_and_start_at`).
//!
//! Owner: the partition's shard (the replication layer calls it through `OpenPartition`).
//! A truncation holds the log's replica permit and segments permit (so replica appends,
//! retention, DeleteRecords and the cleaner's swaps wait), makes leader appends wait, and
//! waits for the writes in flight before it changes anything. Awaits file removals,
//! truncation, fdatasync, directory syncs and the recovery scan of the new active segment.
//!
//! Crash safety: every step leaves a directory that recovery turns into a valid prefix of the
//! old log. Wholly removed segments go newest first, each with its `.txnindex`, `.index` and
//! `.timeindex` before its `.log` (an orphaned `.txnindex` would be loaded at open), then the
//! directory is synced; only then is the segment holding the cut changed: its `.txnindex`
//! rewritten without the entries past the cut, its `.index`/`.timeindex` removed (the last
//! segment is always recovered by a full scan, and a stale index must never be trusted once
//! the segment is closed again), the directory synced, and the file cut at the batch's
//! position and fdatasynced. A full restart writes the log start checkpoint first. An I/O error
//! after the in-memory state began to change closes the log (operations then fail with
//! `StorageError::Closed`); the next open recovers a valid prefix from the disk. `close` waits
//! for a truncation in progress.
//!
//! Cost: the new active segment is recovered by a full scan (one sequential read of at most
//! `segment.bytes`), which rebuilds its indexes, time bounds and tail page exactly.

use super::*;
use crate::storage::txn_index;

/// Clears `truncating` and wakes the appends waiting for it, also when a truncation fails.
struct TruncatingGuard<'a>(&'a LogInner);

impl Drop for TruncatingGuard<'_> {
    fn drop(&mut self) {
        self.0.truncating.set(false);
        self.0.data_event.notify_all();
    }
}

/// Where a truncation cuts.
enum Cut {
    /// Segments with base offsets at or above `from_segment` go whole; the segment before
    /// them is kept whole (nothing, if none: the log restarts at `first_removed`).
    Boundary { from_segment: i64 },
    /// Segments above `segment` go; `segment` is cut at byte `position`.
    Within { segment: i64, position: u64 },
}

impl LogInner {
    /// Resolves once nothing is staged or being written (or the log closed).
    async fn wait_writer_idle(&self) {
        self.data_event
            .wait_for(|| {
                let st = self.state.borrow();
                let idle = st.queued.is_empty()
                    && st.staging.as_ref().is_none_or(|s| !s.has_data())
                    && st.next_offset == self.durable_end.get();
                (idle || self.closed.get()).then_some(())
            })
            .await
    }

    /// Ends a truncation: a failure after the in-memory state changed closes the log, whose
    /// next open recovers a valid prefix from the disk (see the module header).
    fn after_truncation(&self, result: StorageResult<()>) -> StorageResult<()> {
        if let Err(err) = &result
            && self.truncation_dirty.get()
            && !self.closed.get()
        {
            tracing::error!(dir = %self.dir.display(), %err,
                "truncation failed half way; the log is closed until it is opened again");
            self.closed.set(true);
            self.writer_event.notify_all();
            self.data_event.notify_all();
        }
        self.truncation_dirty.set(false);
        result
    }

    /// Lowers the durable end (and a replication bound above it) to `end`.
    fn lower_ends(&self, end: i64) {
        self.truncation_dirty.set(true);
        if self.durable_end.get() > end {
            self.durable_end.set(end);
        }
        if let Some(bound) = self.hw_bound.get()
            && bound > end
        {
            self.hw_bound.set(Some(end));
        }
    }

    /// Deletes the files of removed segments, newest first, then syncs the directory.
    async fn delete_segment_files(&self, mut removed: Vec<Segment>) -> StorageResult<()> {
        removed.sort_by_key(|s| std::cmp::Reverse(s.base_offset));
        for seg in removed {
            tracing::info!(dir = %self.dir.display(), base = seg.base_offset, "truncation deletes segment");
            for ext in ["txnindex", "index", "timeindex"] {
                remove_if_exists(&segment_path(&self.dir, seg.base_offset, ext))?;
            }
            match seg.file {
                Some(file) => {
                    file.remove()
                        .await
                        .map_err(|e| StorageError::io("delete segment", e))?;
                    if let Ok(file) = Rc::try_unwrap(file) {
                        let _ = file.close().await;
                    }
                }
                None => remove_if_exists(&segment_path(&self.dir, seg.base_offset, "log"))?,
            }
        }
        writer::sync_dir(&self.dir).await
    }

    /// Empties the log and restarts it at `offset` (log start = end = `offset`). The caller
    /// holds the permits and has waited for the writer.
    async fn restart_at(&self, offset: i64) -> StorageResult<()> {
        // First, so that a crash at any later point reopens at or before `offset`.
        write_file_atomic(&self.dir, CHECKPOINT_FILE, offset.to_string().as_bytes()).await?;
        self.truncation_dirty.set(true);
        let removed: Vec<Segment> = {
            let mut st = self.state.borrow_mut();
            let removed = std::mem::take(&mut st.segments).into_values().collect();
            st.segments.insert(offset, Segment::new(offset));
            st.staging = None;
            st.queued.clear();
            st.staged_bytes = 0;
            st.next_offset = offset;
            removed
        };
        self.durable_end.set(offset);
        self.hw_bound.set(self.hw_bound.get().map(|_| offset));
        self.log_start_offset.set(offset);
        self.env.cache.remove_from(self.log_id, i64::MIN);
        self.delete_segment_files(removed).await?;
        if self.epochs.borrow_mut().clear() {
            self.persist_epochs().await?;
        }
        self.lower_cleaner_checkpoint(offset).await?;
        tracing::info!(dir = %self.dir.display(), offset, "log truncated fully");
        Ok(())
    }

    /// Lowers the cleaner's first dirty offset (`cleaner-offset.checkpoint`) to `end` if it is
    /// above it, so what is appended after the cut gets cleaned (Kafka truncates the cleaner
    /// checkpoint with the log).
    async fn lower_cleaner_checkpoint(&self, end: i64) -> StorageResult<()> {
        let name = crate::storage::cleaner::CHECKPOINT_FILE;
        let current = read_small_file(&self.dir.join(name))
            .await?
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| s.trim().parse::<i64>().ok());
        match current {
            Some(first_dirty) if first_dirty > end => {
                write_file_atomic(&self.dir, name, end.to_string().as_bytes()).await
            }
            _ => Ok(()),
        }
    }

    /// Rewrites segment `base`'s `.txnindex` without the aborted transactions whose markers
    /// are at or past `end` (removes it if none is left).
    async fn trim_txn_index(&self, base: i64, end: i64) -> StorageResult<()> {
        let path = self.dir.join(txn_index::file_name(base));
        let Some(bytes) = read_small_file(&path).await? else {
            return Ok(());
        };
        let all = txn_index::decode(&bytes);
        let kept: Vec<_> = all
            .iter()
            .copied()
            .filter(|t| t.last_offset < end)
            .collect();
        if kept.len() == all.len() && kept.len() * txn_index::ENTRY_BYTES == bytes.len() {
            return Ok(());
        }
        if kept.is_empty() {
            remove_if_exists(&path)?;
            return Ok(());
        }
        write_file_atomic(
            &self.dir,
            &txn_index::file_name(base),
            &txn_index::encode(&kept),
        )
        .await
    }
}

fn remove_if_exists(path: &Path) -> StorageResult<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(StorageError::io("delete segment file", e))
        }
        _ => Ok(()),
    }
}

impl PartitionLog {
    /// Removes every batch at or past `offset`, whole batches only (the batch holding
    /// `offset` goes whole, as Kafka's followers truncate at batch boundaries): the log end
    /// becomes the end of the last batch kept, which is the base offset of the first removed
    /// batch (lower only where compaction left a gap). Nothing happens if `offset` is at or
    /// past the log end; below the log start it is `truncate_fully_and_start_at(offset)`.
    /// Waits for the writes in flight first (appends arriving meanwhile wait). Segments wholly
    /// past the cut are deleted, the one holding it is cut at the batch's position and becomes
    /// the active segment (recovered by a scan, so its indexes, tail page and reservation are
    /// rebuilt), the shard cache forgets the removed range, the durable end, a replication
    /// bound and the high watermark come down to the new end, the epoch cache loses the
    /// entries from the new end on. Crash-safe: see the module header.
    pub async fn truncate_to(&self, offset: i64) -> StorageResult<()> {
        let inner = &*self.inner;
        if inner.closed.get() {
            return Err(StorageError::Closed);
        }
        let _replica = inner
            .replica_permit
            .acquire_permit(1)
            .await
            .map_err(|_| StorageError::Closed)?;
        let _segments = inner
            .segments_permit
            .acquire_permit(1)
            .await
            .map_err(|_| StorageError::Closed)?;
        inner.truncating.set(true);
        inner.truncations.set(inner.truncations.get() + 1);
        let _guard = TruncatingGuard(inner);
        let result = self.cut_at(offset).await;
        inner.after_truncation(result)
    }

    /// `truncate_to` once the permits are held.
    async fn cut_at(&self, offset: i64) -> StorageResult<()> {
        let inner = &*self.inner;
        inner.wait_writer_idle().await;
        if inner.closed.get() {
            return Err(StorageError::Closed);
        }
        if offset >= inner.state.borrow().next_offset {
            return Ok(());
        }
        if offset < inner.log_start_offset.get() {
            return inner.restart_at(offset).await;
        }
        // The segment that holds `offset` (or the last one before it) and where to search.
        let (segment, file, from, limit) = {
            let st = inner.state.borrow();
            let (&base, seg) = st
                .segments
                .range(..=offset)
                .next_back()
                .or_else(|| st.segments.iter().next())
                .expect("a log has a segment");
            let rel = (offset - base).clamp(0, u32::MAX as i64) as u32;
            (
                base,
                seg.file.clone(),
                seg.index.lookup(rel) as u64,
                seg.written_bytes,
            )
        };
        let mut found = None;
        if let Some(file) = &file {
            let (_, why) = scan(file, from, limit, None, |position, h, _| {
                if h.last_offset() >= offset {
                    found = Some((position, h.base_offset.get()));
                    return false;
                }
                true
            })
            .await?;
            if !matches!(why, ScanEnd::Limit | ScanEnd::Stopped) {
                return Err(StorageError::CorruptMessage(
                    "segment does not scan cleanly; not truncating it",
                ));
            }
        }
        let (cut, first_removed) = match found {
            Some((0, base)) => (
                Cut::Boundary {
                    from_segment: segment,
                },
                base,
            ),
            Some((position, base)) => (Cut::Within { segment, position }, base),
            None => {
                let st = inner.state.borrow();
                let Some((&next, _)) = st.segments.range(segment + 1..).next() else {
                    // Nothing at or past `offset` here or after: the log ends before it.
                    return Ok(());
                };
                (Cut::Boundary { from_segment: next }, next)
            }
        };
        let from = match cut {
            Cut::Boundary { from_segment } => from_segment,
            Cut::Within { segment, .. } => segment + 1,
        };
        let keep = inner
            .state
            .borrow()
            .segments
            .range(..from)
            .next_back()
            .map(|(b, _)| *b);
        let Some(keep) = keep else {
            // Every segment goes: the log restarts empty where the first removed batch began.
            let start = first_removed.min(inner.log_start_offset.get());
            return inner.restart_at(start).await;
        };
        // From here on no reader sees anything at or past the first removed batch.
        inner.lower_ends(first_removed);
        inner.env.cache.remove_from(inner.log_id, first_removed);
        let removed: Vec<Segment> = {
            let mut st = inner.state.borrow_mut();
            st.staging = None;
            st.queued.clear();
            st.staged_bytes = 0;
            st.segments.split_off(&from).into_values().collect()
        };
        inner.delete_segment_files(removed).await?;
        // The new active segment: cut (or kept whole), then recovered as the last segment. It
        // stays in the map meanwhile (readers are bounded below the cut).
        let (old_file, cut_end) = {
            let mut st = inner.state.borrow_mut();
            let old = st.segments.get_mut(&keep).expect("kept segment");
            let cut_end = match cut {
                Cut::Within { position, .. } => position,
                Cut::Boundary { .. } => old.written_bytes,
            };
            old.written_bytes = old.written_bytes.min(cut_end);
            (old.file.clone(), cut_end)
        };
        inner.trim_txn_index(keep, first_removed).await?;
        for ext in ["index", "timeindex"] {
            remove_if_exists(&segment_path(&inner.dir, keep, ext))?;
        }
        writer::sync_dir(&inner.dir).await?;
        if let Some(file) = &old_file {
            file.truncate(cut_end)
                .await
                .map_err(|e| StorageError::io("truncate segment", e))?;
            file.fdatasync()
                .await
                .map_err(|e| StorageError::io("fdatasync segment", e))?;
        }
        let had_file = old_file.is_some();
        let config = inner.config.get();
        let (seg, tail) = if had_file {
            recover_segment(
                &inner.dir,
                keep,
                true,
                &config,
                inner.env.reserve_space.then_some(&inner.env.reserve_budget),
                None,
            )
            .await?
        } else {
            (Segment::new(keep), None)
        };
        let new_end = seg.next_offset;
        {
            let mut st = inner.state.borrow_mut();
            if let Some(tail) = tail {
                st.staging = Some(Staging {
                    segment_base: keep,
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
            // Replaces (and drops) the old in-memory segment.
            st.segments.insert(keep, seg);
            st.next_offset = new_end;
        }
        if let Some(file) = old_file
            && let Ok(file) = Rc::try_unwrap(file)
        {
            let _ = file.close().await;
        }
        inner.lower_ends(new_end);
        inner.env.cache.remove_from(inner.log_id, new_end);
        if new_end < inner.log_start_offset.get() {
            // The batch holding the log start went whole: the log now starts at its end.
            write_file_atomic(&inner.dir, CHECKPOINT_FILE, new_end.to_string().as_bytes()).await?;
            inner.log_start_offset.set(new_end);
        }
        if inner.epochs.borrow_mut().truncate_from_end(new_end) {
            inner.persist_epochs().await?;
        }
        inner.lower_cleaner_checkpoint(new_end).await?;
        tracing::info!(dir = %inner.dir.display(), offset, new_end, "log truncated");
        Ok(())
    }

    /// Deletes every segment and restarts the log empty at `offset`: log start = log end =
    /// durable end = `offset` (a follower whose fetch offset fell below the leader's log
    /// start, or one that must drop everything). The epoch cache is cleared, the shard cache
    /// forgets the log, a replication bound becomes `offset`. Waits for writes in flight
    /// first, as `truncate_to`. Crash-safe: the log start checkpoint is written first, then
    /// the segments are removed newest first.
    pub async fn truncate_fully_and_start_at(&self, offset: i64) -> StorageResult<()> {
        let inner = &*self.inner;
        if inner.closed.get() {
            return Err(StorageError::Closed);
        }
        if offset < 0 {
            return Err(StorageError::OffsetOutOfRange {
                offset,
                log_start_offset: inner.log_start_offset.get(),
                high_watermark: inner.durable_end.get(),
            });
        }
        let _replica = inner
            .replica_permit
            .acquire_permit(1)
            .await
            .map_err(|_| StorageError::Closed)?;
        let _segments = inner
            .segments_permit
            .acquire_permit(1)
            .await
            .map_err(|_| StorageError::Closed)?;
        inner.truncating.set(true);
        inner.truncations.set(inner.truncations.get() + 1);
        let _guard = TruncatingGuard(inner);
        inner.wait_writer_idle().await;
        if inner.closed.get() {
            return Err(StorageError::Closed);
        }
        let result = inner.restart_at(offset).await;
        inner.after_truncation(result)
    }
}
