//! Tests of the replication hooks: the high watermark bound, replica appends, leader epochs
//! and truncation.

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
        segment_bytes: 16 * 1024,
        index_interval_bytes: 1024,
        ..LogConfig::default()
    }
}

/// Every batch of the log, as stored, from the log start to the durable end.
async fn all_batches(log: &PartitionLog) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut offset = log.log_start_offset();
    while offset < log.durable_end() {
        let bytes = log.read_replica(offset, 1 << 20).await.unwrap().to_vec();
        if bytes.is_empty() {
            break;
        }
        let mut at = 0;
        while let Some(h) = BatchHeader::view(&bytes[at..]) {
            let size = h.size_bytes() as usize;
            offset = h.last_offset() + 1;
            out.push(bytes[at..at + size].to_vec());
            at += size;
        }
    }
    out
}

fn epoch_of(batch: &[u8]) -> i32 {
    BatchHeader::view(batch)
        .unwrap()
        .partition_leader_epoch
        .get()
}

#[test]
fn high_watermark_bound_limits_reads_and_wakes_waiters() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let log = Rc::new(
            PartitionLog::open_with(&dir.path().join("t-0"), small_config(), env(1 << 20))
                .await
                .unwrap(),
        );
        for i in 0..5 {
            log.append(Bytes::from(build_test_batch(2, 50, i, 1)))
                .await
                .unwrap();
        }
        assert_eq!((log.high_watermark(), log.durable_end()), (10, 10));
        log.set_replicated_high_watermark(Some(4));
        assert_eq!((log.high_watermark(), log.durable_end()), (4, 10));
        // Consumers read below the high watermark; between it and the durable end the answer
        // is empty; past the durable end it is out of range.
        let below = log.read(0, u32::MAX).await.unwrap().to_vec();
        assert_eq!(last_offset_read(&[Bytes::from(below)]), Some(3));
        assert!(log.read(4, 1000).await.unwrap().is_empty());
        assert!(log.read(10, 1000).await.unwrap().is_empty());
        assert!(matches!(
            log.read(11, 1000).await,
            Err(StorageError::OffsetOutOfRange { .. })
        ));
        // A follower reads to the durable end.
        let replica = log.read_replica(4, u32::MAX).await.unwrap().to_vec();
        assert_eq!(last_offset_read(&[Bytes::from(replica)]), Some(9));

        let waiter = {
            let log = log.clone();
            glommio::spawn_local(async move { log.wait_for_data(5).await })
        };
        let until = {
            let log = log.clone();
            glommio::spawn_local(
                async move { log.wait_until(|hw, _| (hw >= 8).then_some(hw)).await },
            )
        };
        glommio::timer::sleep(Duration::from_millis(5)).await;
        log.set_replicated_high_watermark(Some(6));
        assert_eq!(waiter.await, 6, "woken by the bound moving past the offset");
        log.set_replicated_high_watermark(Some(8));
        assert_eq!(until.await, 8);
        // A bound above the durable end: the durable end.
        log.set_replicated_high_watermark(Some(100));
        assert_eq!(log.high_watermark(), 10);
        // While the bound holds, an append moves the durable end but not the high watermark.
        log.set_replicated_high_watermark(Some(10));
        log.append(Bytes::from(build_test_batch(1, 50, 9, 1)))
            .await
            .unwrap();
        assert_eq!((log.high_watermark(), log.durable_end()), (10, 11));
        log.set_replicated_high_watermark(None);
        assert_eq!(log.high_watermark(), 11);
        let log = Rc::try_unwrap(log).unwrap();
        log.close().await.unwrap();
    });
}

#[test]
fn replica_appends_keep_offsets_epochs_and_times() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig {
            timestamp_type: TimestampType::LogAppendTime,
            ..small_config()
        };
        let leader = PartitionLog::open_with(&dir.path().join("l-0"), config, env(1 << 20))
            .await
            .unwrap();
        // Before any leader epoch, the field is left as the producer wrote it.
        let mut unstamped = build_test_batch(1, 30, 1, 1);
        batch::patch_leader_epoch(&mut unstamped, -1);
        leader.append(Bytes::from(unstamped)).await.unwrap();
        assert_eq!(epoch_of(&all_batches(&leader).await[0]), -1);
        assert_eq!(leader.latest_epoch(), None);
        leader.set_leader_epoch(3).await.unwrap();
        for i in 0..30 {
            leader
                .append(Bytes::from(build_test_batch(3, 200, i, i as u8)))
                .await
                .unwrap();
        }
        leader.set_leader_epoch(5).await.unwrap();
        for i in 0..10 {
            leader
                .append(Bytes::from(build_test_batch(2, 200, i, i as u8)))
                .await
                .unwrap();
        }
        assert!(leader.segment_count() > 1);
        assert_eq!(leader.epoch_entries(), vec![(3, 1), (5, 91)]);
        let stored = all_batches(&leader).await;
        assert!(stored[1..31].iter().all(|b| epoch_of(b) == 3));
        assert!(stored[31..].iter().all(|b| epoch_of(b) == 5));
        // From the cache too (it patches a header copy).
        let cached = leader.read(91, 1).await.unwrap();
        assert_eq!(cached.chunks.len(), 2, "served from the cache");
        assert_eq!(epoch_of(&cached.to_vec()), 5);

        let path = dir.path().join("f-0");
        let follower = PartitionLog::open_with(&path, config, env(1 << 20))
            .await
            .unwrap();
        assert_eq!(
            follower
                .append_replica(Bytes::new())
                .await
                .unwrap()
                .base_offset,
            0,
            "empty: a no-op"
        );
        assert_eq!(follower.log_end_offset(), 0);
        // Fetched in a few pieces, as a follower does.
        let mut offset = 0;
        while offset < leader.durable_end() {
            let chunk = leader.read_replica(offset, 4000).await.unwrap().to_vec();
            let info = follower.append_replica(Bytes::from(chunk)).await.unwrap();
            assert_eq!(info.base_offset, offset);
            offset = info.last_offset + 1;
        }
        assert_eq!(follower.log_end_offset(), leader.log_end_offset());
        assert_eq!(all_batches(&follower).await, stored, "byte for byte");
        assert_eq!(follower.epoch_entries(), vec![(3, 1), (5, 91)]);

        // A gap or an overlap is refused and nothing is staged.
        let end = follower.log_end_offset();
        let again = leader.read_replica(90, 1).await.unwrap().to_vec();
        let err = follower
            .append_replica(Bytes::from(again))
            .await
            .unwrap_err();
        assert!(
            matches!(err, StorageError::NonContiguous { expected, got: 88 } if expected == end),
            "{err}"
        );
        let mut backwards = stored[40].clone();
        backwards.extend_from_slice(&stored[39]);
        let mut ahead = backwards.clone();
        batch::patch_base_offset(&mut ahead[..], end + 10);
        let err = follower
            .append_replica(Bytes::from(ahead))
            .await
            .unwrap_err();
        assert!(matches!(err, StorageError::NonContiguous { .. }), "{err}");
        let mut corrupt = stored[40].clone();
        batch::patch_base_offset(&mut corrupt, end);
        *corrupt.last_mut().unwrap() ^= 1;
        assert!(matches!(
            follower.append_replica(Bytes::from(corrupt)).await,
            Err(StorageError::CorruptMessage(_))
        ));
        assert_eq!(follower.log_end_offset(), end);
        assert_eq!(follower.durable_end(), end);
        follower.close().await.unwrap();

        // The epoch checkpoint is Kafka's text; both survive a reopen.
        let text = std::fs::read_to_string(path.join("leader-epoch-checkpoint")).unwrap();
        assert_eq!(text, "0\n2\n3 1\n5 91\n");
        let follower = PartitionLog::open_with(&path, config, env(0))
            .await
            .unwrap();
        assert_eq!(all_batches(&follower).await, stored);
        assert_eq!(follower.epoch_entries(), vec![(3, 1), (5, 91)]);
        assert_eq!(follower.epoch_end_offset(3), (3, 91));
        assert_eq!(follower.epoch_end_offset(4), (3, 91));
        assert_eq!(follower.epoch_end_offset(5), (5, end));
        assert_eq!(follower.epoch_end_offset(6), (-1, -1));
        follower.close().await.unwrap();
        leader.close().await.unwrap();
    });
}

#[test]
fn a_failed_replica_write_stages_nothing_and_forgets_its_epoch() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let leader = PartitionLog::open_with(&dir.path().join("l-0"), small_config(), env(0))
            .await
            .unwrap();
        leader.set_leader_epoch(1).await.unwrap();
        leader
            .append(Bytes::from(build_test_batch(2, 10, 1, 1)))
            .await
            .unwrap();
        leader.set_leader_epoch(2).await.unwrap();
        leader
            .append(Bytes::from(build_test_batch(2, 10, 1, 1)))
            .await
            .unwrap();
        let follower = PartitionLog::open_with(&dir.path().join("f-0"), small_config(), env(0))
            .await
            .unwrap();
        let first = leader.read_replica(0, 1).await.unwrap();
        follower
            .append_replica(Bytes::from(first.to_vec()))
            .await
            .unwrap();
        follower.inject_write_faults(1);
        let second = leader.read_replica(2, 1).await.unwrap();
        let err = follower
            .append_replica(Bytes::from(second.to_vec()))
            .await
            .unwrap_err();
        assert!(matches!(err, StorageError::Io { .. }), "{err}");
        assert_eq!(follower.log_end_offset(), 2);
        assert_eq!(follower.epoch_entries(), vec![(1, 0)]);
        follower
            .append_replica(Bytes::from(second.to_vec()))
            .await
            .unwrap();
        assert_eq!(follower.epoch_entries(), vec![(1, 0), (2, 2)]);
        assert_eq!(all_batches(&follower).await, all_batches(&leader).await);
        follower.close().await.unwrap();
        leader.close().await.unwrap();
    });
}

/// A leader log of `count` batches of 3 records (offsets 3i..3i+2) in epoch 3, then the rest
/// in epoch 5, rolling small segments.
async fn filled(path: &Path, count: usize, epoch5_from: usize) -> (PartitionLog, Vec<Vec<u8>>) {
    let log = PartitionLog::open_with(path, small_config(), env(1 << 20))
        .await
        .unwrap();
    log.set_leader_epoch(3).await.unwrap();
    for i in 0..count {
        if i == epoch5_from {
            log.set_leader_epoch(5).await.unwrap();
        }
        log.append(Bytes::from(build_test_batch(3, 300, i as i64, i as u8)))
            .await
            .unwrap();
    }
    let batches = all_batches(&log).await;
    assert_eq!(batches.len(), count);
    (log, batches)
}

fn log_files(path: &Path) -> Vec<i64> {
    let mut bases: Vec<i64> = std::fs::read_dir(path)
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_suffix(".log")?.parse().ok()
        })
        .collect();
    bases.sort_unstable();
    bases
}

#[test]
fn truncate_mid_segment_at_a_boundary_and_across_segments() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t-0");
        let (log, batches) = filled(&path, 120, 100).await;
        let bases = log.segment_bases();
        assert!(bases.len() >= 4, "{bases:?}");
        assert_eq!(log.epoch_entries(), vec![(3, 0), (5, 300)]);
        log.set_replicated_high_watermark(Some(330));
        let cleaner_checkpoint = path.join(crate::storage::cleaner::CHECKPOINT_FILE);
        std::fs::write(&cleaner_checkpoint, "330").unwrap();

        // Mid-segment, inside a batch of the active segment's predecessor: the batch goes whole.
        let inside = bases[bases.len() - 2] + 7;
        let cut = inside - inside % 3;
        log.truncate_to(inside).await.unwrap();
        assert_eq!(log.log_end_offset(), cut);
        assert_eq!((log.durable_end(), log.high_watermark()), (cut, cut));
        assert_eq!(
            std::fs::read_to_string(&cleaner_checkpoint).unwrap(),
            cut.to_string(),
            "what comes after the cut is dirty"
        );
        assert_eq!(log.segment_bases(), bases[..bases.len() - 1].to_vec());
        assert_eq!(log_files(&path), log.segment_bases());
        assert_eq!(
            all_batches(&log).await,
            batches[..(cut / 3) as usize].to_vec()
        );
        assert_eq!(
            log.epoch_entries(),
            vec![(3, 0), (5, 300)]
                .into_iter()
                .filter(|e| e.1 < cut)
                .collect::<Vec<_>>()
        );
        assert!(matches!(
            log.read(cut + 1, 10).await,
            Err(StorageError::OffsetOutOfRange { .. })
        ));
        // Past the end: nothing happens.
        log.truncate_to(cut + 100).await.unwrap();
        assert_eq!(log.log_end_offset(), cut);

        // At a segment boundary: that segment goes whole, the one before becomes active.
        let boundary = bases[2];
        log.truncate_to(boundary).await.unwrap();
        assert_eq!(log.log_end_offset(), boundary);
        assert_eq!(log.segment_bases(), bases[..2].to_vec());
        assert_eq!(log_files(&path), bases[..2].to_vec());

        // Across segments, into the first one.
        log.truncate_to(4).await.unwrap();
        assert_eq!(log.log_end_offset(), 3);
        assert_eq!(log.segment_bases(), vec![0]);
        assert_eq!(log_files(&path), vec![0]);
        assert_eq!(all_batches(&log).await, batches[..1].to_vec());
        assert_eq!(log.epoch_entries(), vec![(3, 0)]);
        assert_eq!(
            log.high_watermark(),
            3,
            "the replication bound came down too"
        );

        // Appends continue at the new end, rolling again; a reopen sees the same log.
        log.set_replicated_high_watermark(None);
        let mut expected = batches[..1].to_vec();
        for i in 0..40 {
            let info = log
                .append(Bytes::from(build_test_batch(2, 300, 1000 + i, 9)))
                .await
                .unwrap();
            assert_eq!(info.base_offset, 3 + 2 * i);
        }
        expected.extend(all_batches(&log).await[1..].iter().cloned());
        assert!(log.segment_count() > 1);
        let (bases_now, end) = (log.segment_bases(), log.log_end_offset());
        log.close().await.unwrap();
        let log = PartitionLog::open_with(&path, small_config(), env(0))
            .await
            .unwrap();
        assert_eq!(log.segment_bases(), bases_now);
        assert_eq!(log.log_end_offset(), end);
        assert_eq!(all_batches(&log).await, expected);
        assert_eq!(log.epoch_entries(), vec![(3, 0)]);
        assert_eq!(log.read(0, 1).await.unwrap().to_vec(), batches[0]);
        log.close().await.unwrap();
    });
}

#[test]
fn truncation_waits_for_writes_in_flight_and_holds_appends() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t-0");
        let log = Rc::new(
            PartitionLog::open_with(&path, small_config(), env(1 << 20))
                .await
                .unwrap(),
        );
        // Staged, not yet durable, when the truncation starts.
        let staged: Vec<_> = (0..20)
            .map(|i| {
                let log = log.clone();
                glommio::spawn_local(async move {
                    log.append(Bytes::from(build_test_batch(1, 400, i, 1)))
                        .await
                })
            })
            .collect();
        glommio::executor().yield_now().await;
        assert!(log.log_end_offset() > log.durable_end(), "writes in flight");
        let truncation = {
            let log = log.clone();
            glommio::spawn_local(async move { log.truncate_to(12).await })
        };
        glommio::executor().yield_now().await;
        // Arrives during the truncation: waits for it, then lands at the new end.
        let late = {
            let log = log.clone();
            glommio::spawn_local(async move {
                log.append(Bytes::from(build_test_batch(1, 400, 99, 2)))
                    .await
            })
        };
        for s in staged {
            s.await.unwrap();
        }
        truncation.await.unwrap();
        assert_eq!(late.await.unwrap().base_offset, 12);
        assert_eq!(log.log_end_offset(), 13);
        let log = Rc::try_unwrap(log).unwrap();
        let batches = all_batches(&log).await;
        assert_eq!(batches.len(), 13);
        // Dropped without close (a crash after the truncation): the reopened log is the same.
        drop(log);
        let log = PartitionLog::open_with(&path, small_config(), env(0))
            .await
            .unwrap();
        assert_eq!(log.log_end_offset(), 13);
        assert_eq!(all_batches(&log).await, batches);
        log.close().await.unwrap();
    });
}

#[test]
fn truncate_fully_and_start_elsewhere() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t-0");
        let (log, _) = filled(&path, 60, 30).await;
        assert!(log.segment_count() > 1);
        log.truncate_fully_and_start_at(1000).await.unwrap();
        assert_eq!(
            (
                log.log_start_offset(),
                log.log_end_offset(),
                log.durable_end()
            ),
            (1000, 1000, 1000)
        );
        assert_eq!(log.epoch_entries(), vec![]);
        assert_eq!(log_files(&path), Vec::<i64>::new());
        assert!(matches!(
            log.read(0, 10).await,
            Err(StorageError::OffsetOutOfRange { .. })
        ));
        assert!(log.read(1000, 10).await.unwrap().is_empty());
        // Dropped without close before any append: it reopens empty at 1000.
        drop(log);
        let log = PartitionLog::open_with(&path, small_config(), env(0))
            .await
            .unwrap();
        assert_eq!((log.log_start_offset(), log.log_end_offset()), (1000, 1000));
        let info = log
            .append(Bytes::from(build_test_batch(2, 10, 1, 1)))
            .await
            .unwrap();
        assert_eq!(info.base_offset, 1000);
        // Below the log start, truncate_to restarts the log there (as Kafka's truncateTo).
        log.truncate_to(500).await.unwrap();
        assert_eq!((log.log_start_offset(), log.log_end_offset()), (500, 500));
        log.close().await.unwrap();
        let log = PartitionLog::open_with(&path, small_config(), env(0))
            .await
            .unwrap();
        assert_eq!((log.log_start_offset(), log.log_end_offset()), (500, 500));
        log.close().await.unwrap();
    });
}

#[test]
fn a_missing_epoch_checkpoint_is_rebuilt_and_log_start_moves_trim_it() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t-0");
        // The epoch-5 batches all land in the active segment.
        let (log, _) = filled(&path, 100, 97).await;
        let entries = log.epoch_entries();
        assert_eq!(entries, vec![(3, 0), (5, 291)]);
        assert_ne!(log.active_segment_base(), 0);
        assert!(log.active_segment_base() <= 291);
        log.close().await.unwrap();
        std::fs::remove_file(path.join(epoch_cache::CHECKPOINT_FILE)).unwrap();
        let log = PartitionLog::open_with(&path, small_config(), env(0))
            .await
            .unwrap();
        assert_eq!(log.epoch_entries(), entries);
        assert!(
            path.join(epoch_cache::CHECKPOINT_FILE).exists(),
            "written once rebuilt"
        );
        // DeleteRecords moves the log start: the first entry now starts there.
        log.delete_records(30).await.unwrap();
        assert_eq!(log.epoch_entries(), vec![(3, 30), (5, 291)]);
        assert_eq!(log.epoch_end_offset(2), (2, 30));
        log.close().await.unwrap();
        let text = std::fs::read_to_string(path.join(epoch_cache::CHECKPOINT_FILE)).unwrap();
        assert_eq!(text, "0\n2\n3 30\n5 291\n");
        // A damaged checkpoint is rebuilt too.
        std::fs::write(path.join(epoch_cache::CHECKPOINT_FILE), "0\n7\n").unwrap();
        let log = PartitionLog::open_with(&path, small_config(), env(0))
            .await
            .unwrap();
        assert_eq!(log.epoch_entries(), vec![(3, 30), (5, 291)]);
        log.close().await.unwrap();
    });
}

#[test]
fn a_cleaner_swap_across_a_truncation_is_refused() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let (log, batches) = filled(&dir.path().join("t-0"), 80, 80).await;
        let bases = log.segment_bases();
        let truncations = log.truncation_count();
        let mut writer = log.create_cleaned(bases[0], truncations).await.unwrap();
        writer.append(&batches[0]).await.unwrap();
        let cleaned = writer.finish(&[]).await.unwrap();
        log.truncate_to(bases[2] + 1).await.unwrap();
        assert_eq!(log.truncation_count(), truncations + 1);
        assert!(!log.replace_segments(&[bases[0]], cleaned).await.unwrap());
        assert_eq!(
            all_batches(&log).await,
            batches[..(bases[2] / 3) as usize].to_vec()
        );
        log.close().await.unwrap();
    });
}

#[test]
fn retention_keeps_what_is_above_the_high_watermark() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = filled(&dir.path().join("t-0"), 80, 80).await;
        let bases = log.segment_bases();
        let mut config = log.config();
        config.retention_bytes = 1;
        config.retention_ms = -1;
        log.set_config(config);
        log.set_replicated_high_watermark(Some(bases[1]));
        assert_eq!(
            log.apply_retention(0).await.unwrap(),
            1,
            "only the segment below it"
        );
        assert_eq!(log.log_start_offset(), bases[1]);
        assert_eq!(log.epoch_entries(), vec![(3, bases[1])]);
        log.set_replicated_high_watermark(None);
        assert_eq!(log.apply_retention(0).await.unwrap(), bases.len() - 2);
        assert_eq!(log.segment_count(), 1);
        log.close().await.unwrap();
    });
}

#[test]
fn replica_batches_may_leave_gaps_as_a_compacted_leader_does() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f-0");
        let log = PartitionLog::open_with(&path, small_config(), env(0))
            .await
            .unwrap();
        let at = |base: i64| {
            let mut b = build_test_batch(2, 100, base, 1);
            batch::patch_base_offset(&mut b, base);
            b
        };
        // A gap inside the active segment, then one past its 32-bit range while it is empty.
        let far = (1i64 << 33) + 5;
        log.append_replica(Bytes::from(at(10))).await.unwrap();
        log.append_replica(Bytes::from(at(20))).await.unwrap();
        assert_eq!(log.log_end_offset(), 22);
        log.truncate_fully_and_start_at(22).await.unwrap();
        let info = log.append_replica(Bytes::from(at(far))).await.unwrap();
        assert_eq!((info.base_offset, info.last_offset), (far, far + 1));
        assert_eq!(log.segment_bases(), vec![far]);
        let mut two = at(far + 2);
        two.extend_from_slice(&at(far + 100));
        log.append_replica(Bytes::from(two)).await.unwrap();
        let mut expected = vec![at(far), at(far + 2), at(far + 100)];
        // Past the range of a non-empty active segment: it is sealed, a new one starts.
        let farther = far + (1i64 << 33);
        log.append_replica(Bytes::from(at(farther))).await.unwrap();
        expected.push(at(farther));
        assert_eq!(log.segment_bases(), vec![far, farther]);
        // A gap across a size roll, and a failed write there: rolled back, then written.
        let big = |base: i64| {
            let mut b = build_test_batch(1, 12_000, base, 2);
            batch::patch_base_offset(&mut b, base);
            b
        };
        log.append_replica(Bytes::from(big(farther + 10)))
            .await
            .unwrap();
        expected.push(big(farther + 10));
        log.inject_write_faults(1);
        assert!(
            log.append_replica(Bytes::from(big(farther + 50)))
                .await
                .is_err()
        );
        assert_eq!(log.log_end_offset(), farther + 11);
        log.append_replica(Bytes::from(big(farther + 50)))
            .await
            .unwrap();
        expected.push(big(farther + 50));
        assert_eq!(all_batches(&log).await, expected);
        log.close().await.unwrap();
        let log = PartitionLog::open_with(&path, small_config(), env(0))
            .await
            .unwrap();
        assert_eq!(log.log_end_offset(), farther + 51);
        assert_eq!(all_batches(&log).await, expected);
        log.close().await.unwrap();
    });
}

#[test]
fn a_log_without_epochs_writes_no_checkpoint() {
    run(|| async {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t-0");
        let log = PartitionLog::open_with(&path, small_config(), env(0))
            .await
            .unwrap();
        for i in 0..30 {
            let mut b = build_test_batch(2, 900, i, 1);
            batch::patch_leader_epoch(&mut b, -1);
            log.append(Bytes::from(b)).await.unwrap();
        }
        assert!(log.segment_count() > 1);
        log.close().await.unwrap();
        for _ in 0..2 {
            let log = PartitionLog::open_with(&path, small_config(), env(0))
                .await
                .unwrap();
            assert_eq!(log.latest_epoch(), None);
            assert_eq!(log.epoch_end_offset(0), (-1, -1));
            log.close().await.unwrap();
            assert!(!path.join(epoch_cache::CHECKPOINT_FILE).exists());
        }
    });
}
