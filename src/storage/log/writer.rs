//! The writer side of a `PartitionLog`: staging appends into the DMA buffer (`stage`), the
//! writer task that writes and syncs each group (`writer_loop`, `run_group`, `write_group`),
//! space reservation ahead of the tail, rollback after a failed write, and sealing a segment
//! (`finalize_segment`). The pipeline is described in the parent module's documentation.
//!
//! Owner: the log's writer task on the partition's shard, spawned by `PartitionLog::open`;
//! `stage` runs synchronously in an append's first poll. Awaits direct writes, fdatasync and
//! directory syncs; never holds a `RefCell` borrow across an await.

use super::*;

/// The bytes a segment counts as written when its budget ceiling is decided: a segment that
/// follows a roll counts as at least one minimum step, so a fast writer's fresh segment takes
/// from the whole budget, not only from the half cold segments share.
fn warmth(written_bytes: u64, follows_roll: bool) -> u64 {
    if follows_roll {
        written_bytes.max(crate::limits::STORAGE_RESERVE_STEP_MIN_BYTES)
    } else {
        written_bytes
    }
}

/// Sets a segment's grant to what it has reserved beyond what it has written: written bytes
/// fill the reserved space and stop counting against the budget. A sealed segment holds none.
fn settle_grant(seg: &mut Segment) {
    let ahead = if seg.sealed {
        0
    } else {
        seg.reserved_bytes.saturating_sub(seg.written_bytes)
    };
    if let Some(grant) = seg.grant.as_mut() {
        grant.set(ahead.min(grant.bytes()));
    }
}

impl LogInner {
    /// Assigns offsets (a leader append; a replica append keeps them, `StageMode`) and copies
    /// the batches into the staging buffer. No await: this runs in the append's first poll,
    /// which fixes the order of appends.
    pub(super) fn stage(
        &self,
        st: &mut LogState,
        records: &Bytes,
        config: &LogConfig,
        offset_count: i64,
        max_timestamp_ms: i64,
        mode: StageMode,
    ) -> StorageResult<(AppendInfo, Outcome)> {
        let replica = matches!(mode, StageMode::Replica { .. });
        // Where the batches start and end (offsets) once staged.
        let (first_offset_in, end_offset_in) = match mode {
            StageMode::Leader { .. } => (st.next_offset, st.next_offset + offset_count),
            StageMode::Replica { first, end } => (first, end),
        };
        let total = records.len();
        if st.staged_bytes + total as u64 > STORAGE_STAGED_BYTES_MAX {
            return Err(StorageError::Overloaded {
                staged_bytes: st.staged_bytes,
            });
        }
        let now = now_ms();
        if replica && end_offset_in - 1 - st.next_offset > u32::MAX as i64 {
            self.jump_gap(st, first_offset_in)?;
        }
        // Roll by size, age, or relative offset overflow. Age is measured as Kafka does: the
        // incoming batch's timestamp minus the first batch's, or wall time since creation.
        {
            let (_, active) = st.segments.last_key_value().expect("active segment");
            let incoming_ms = if config.timestamp_type == TimestampType::LogAppendTime && !replica {
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
                    || end_offset_in - 1 - active.base_offset > u32::MAX as i64);
            if need_roll {
                if let Some(s) = st.staging.take()
                    && s.has_data()
                {
                    st.queued.push_back(s);
                }
                let (_, active) = st.segments.iter_mut().next_back().expect("active");
                active.sealed = true;
                // A sealed segment takes no more writes: its reservation goes back to the
                // budget (the file is cut to its size when the segment is finalized).
                active.grant = None;
                active.seal_time_index();
                // Named by the log end (a replica's batches may start later, past a compacted
                // leader's gap), so a failed write rolls back to the durable end as ever.
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
        let first_offset = if replica {
            first_offset_in
        } else {
            seg.next_offset
        };
        let mut offset = first_offset;
        let mut position = 0usize;
        let log_append_time = config.timestamp_type == TimestampType::LogAppendTime && !replica;
        let stamp_epoch = match mode {
            StageMode::Leader { leader_epoch } => leader_epoch,
            StageMode::Replica { .. } => None,
        };
        let mut first_max_ts = None;
        while position < total {
            let h = BatchHeader::view(&dst[position..]).expect("validated");
            let size = h.size_bytes() as usize;
            if replica {
                // Kept as the leader wrote it (checked to grow by `append_replica`).
                offset = h.base_offset.get();
            }
            let last = offset + h.last_offset_delta.get() as i64;
            let mut max_ts = h.max_timestamp.get();
            first_max_ts.get_or_insert(max_ts);
            let batch = &mut dst[position..position + size];
            if !replica {
                batch::patch_base_offset(batch, offset);
            }
            if let Some(epoch) = stamp_epoch {
                batch::patch_leader_epoch(batch, epoch);
            }
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
                stamp_epoch,
                patched,
            );
            offset = last + 1;
            position += size;
        }
        debug_assert!(!replica || offset == end_offset_in);
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
                log_append_time_ms: if log_append_time {
                    now
                } else if replica && config.timestamp_type == TimestampType::LogAppendTime {
                    first_max_ts.unwrap_or(-1)
                } else {
                    -1
                },
                log_start_offset: self.log_start_offset.get(),
            },
            outcome,
        ))
    }
}

impl LogInner {
    /// A replica append whose batches end more than 2^32 offsets past the log end (a
    /// compacted leader's gap no segment starting at the log end can hold): once nothing is
    /// in flight, the log end and the durable end move to `first` (no offset between exists
    /// anywhere) and a new segment starts there; an empty active segment is replaced (its
    /// empty file removed), a non-empty one sealed as by a roll. With writes in flight the
    /// append is refused as `Overloaded` (retriable).
    fn jump_gap(&self, st: &mut LogState, first: i64) -> StorageResult<()> {
        let idle = st.queued.is_empty()
            && st.staging.as_ref().is_none_or(|s| !s.has_data())
            && self.durable_end.get() == st.next_offset;
        if !idle {
            return Err(StorageError::Overloaded {
                staged_bytes: st.staged_bytes,
            });
        }
        let (&old, active) = st.segments.iter_mut().next_back().expect("active segment");
        if active.size_bytes == 0 {
            let had_file = active.file.is_some();
            st.segments.remove(&old);
            if had_file {
                let _ = std::fs::remove_file(segment_path(&self.dir, old, "log"));
            }
        } else {
            active.sealed = true;
            active.grant = None;
            active.seal_time_index();
        }
        st.staging = None;
        st.segments.insert(first, Segment::new(first));
        st.next_offset = first;
        self.durable_end.set(first);
        Ok(())
    }
}

/// The log's writer task: takes staged buffers in order, writes, syncs, publishes.
pub(super) async fn writer_loop(inner: Rc<LogInner>) {
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
                    // A segment after a roll belongs to a log that filled one: not a cold one.
                    let follows_roll = st.segments.len() > 1;
                    let seg = st.segments.get_mut(&segment_base).expect("segment");
                    seg.written_bytes = end.0;
                    assert!(end.1 > self.durable_end.get(), "durable end only grows");
                    self.durable_end.set(end.1);
                    if !seg.reserving {
                        settle_grant(seg);
                    }
                    let step = reserve_step(seg.written_bytes);
                    // From the end of what is reserved, or of what is written when writes went
                    // past it (the budget was spent).
                    let from = seg.reserved_bytes.max(align_up(seg.written_bytes));
                    let wanted = (from + step).min(align_up(config.segment_bytes));
                    let due = self.env.reserve_space
                        && !seg.sealed
                        && !seg.reserving
                        && seg.reserve_retry_at.is_none_or(|at| Instant::now() >= at)
                        && seg.written_bytes + step / 2 > seg.reserved_bytes
                        && wanted > seg.reserved_bytes;
                    // The step comes out of the shard's budget: cut to what is left, or
                    // skipped (appends grow the file) when that is less than a minimum step.
                    let target = due
                        .then(|| {
                            let budget = &self.env.reserve_budget;
                            let grant = seg.grant.get_or_insert_with(|| ReserveGrant::new(budget));
                            let target = budgeted_target(
                                seg.written_bytes,
                                seg.reserved_bytes,
                                wanted,
                                grant.ceiling(warmth(seg.written_bytes, follows_roll)),
                                STORAGE_IO_ALIGNMENT_BYTES,
                            );
                            if target != Some(wanted) {
                                grant.note_short();
                            }
                            if let Some(t) = target {
                                let taken = grant.set(t - seg.written_bytes);
                                assert!(taken, "a budgeted target fits the grant's ceiling");
                            }
                            target
                        })
                        .flatten();
                    if target.is_some() {
                        seg.reserving = true;
                    }
                    target.map(|t| (seg.base_offset, seg.file.clone().expect("file"), t))
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
            // Only now: retention and the cleaner take finalized segments only, and must not
            // delete or replace files that are still being written.
            if let Some(s) = self.state.borrow_mut().segments.get_mut(&base) {
                s.finalized = true;
            }
        }
        let file = match file {
            Some(f) => f,
            None => {
                let path = segment_path(&self.dir, segment_base, "log");
                let f = Rc::new(open_log_file(&path, true).await?);
                // The first step out of the shard's budget. A reservation that fails (a full
                // disk) does not fail the write: the write grows the file if the data fits,
                // and the reservation is retried later.
                let follows_roll = self.state.borrow().segments.len() > 1;
                let mut grant = None;
                let mut retry_at = None;
                let reserved = if self.env.reserve_space {
                    let wanted = reserve_step(0).min(align_up(config.segment_bytes));
                    let mut g = ReserveGrant::new(&self.env.reserve_budget);
                    let target = budgeted_target(
                        0,
                        0,
                        wanted,
                        g.ceiling(warmth(0, follows_roll)),
                        STORAGE_IO_ALIGNMENT_BYTES,
                    );
                    if target != Some(wanted) {
                        g.note_short();
                    }
                    match target {
                        Some(r) => {
                            g.set(r);
                            match f.pre_allocate(r, false).await {
                                Ok(()) => {
                                    grant = Some(g);
                                    r
                                }
                                Err(e) => {
                                    tracing::warn!(dir = %self.dir.display(), base = segment_base, error = %e,
                                        "reserving a new segment failed; writes grow the file");
                                    retry_at = Some(
                                        Instant::now()
                                            + Duration::from_millis(
                                                crate::limits::STORAGE_RESERVE_RETRY_MS,
                                            ),
                                    );
                                    0
                                }
                            }
                        }
                        None => 0,
                    }
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
                seg.grant = grant;
                seg.reserve_retry_at = retry_at;
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
                        settle_grant(seg);
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
                        settle_grant(seg);
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
    /// (`mark`, the state when the group's first staging began, which is the durable end).
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
        let hw = self.durable_end.get();
        assert_eq!(
            mark.next_offset, hw,
            "a failed flush starts at the durable end"
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

pub(super) async fn sync_dir(dir: &Path) -> StorageResult<()> {
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
pub(super) async fn finalize_segment(
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
