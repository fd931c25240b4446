//! Corruption tests: a flipped byte, a batch cut in half, a zeroed tail, a missing or damaged
//! index. Each is detected on open and handled: the torn or corrupt tail of the last segment
//! is cut at the first bad batch, earlier batches read back intact, appends continue after it,
//! and indexes are rebuilt.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use ringbroker::storage::batch::{build_test_batch, patch_base_offset};
use ringbroker::storage::{LogConfig, PartitionLog};

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 32 * 1024,
        index_interval_bytes: 512,
        ..LogConfig::default()
    }
}

fn run<F: std::future::Future<Output = ()> + 'static>(f: impl FnOnce() -> F + Send + 'static) {
    glommio::LocalExecutorBuilder::default()
        .spawn(f)
        .unwrap()
        .join()
        .unwrap();
}

/// Appends `n` one-record batches of ~900 bytes; returns (dir, batches as stored).
fn populate(n: usize) -> (tempfile::TempDir, PathBuf, Vec<Vec<u8>>) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c-0");
    let d = dir.clone();
    let batches = glommio::LocalExecutorBuilder::default()
        .spawn(move || async move {
            let log = PartitionLog::open(&d, config()).await.unwrap();
            let mut out = Vec::new();
            for i in 0..n {
                let mut b = build_test_batch(1, 900, i as i64, i as u8);
                let info = log.append(Bytes::from(b.clone())).await.unwrap();
                patch_base_offset(&mut b, info.base_offset);
                out.push(b);
            }
            log.close().await.unwrap();
            out
        })
        .unwrap()
        .join()
        .unwrap();
    (tmp, dir, batches)
}

fn last_segment(dir: &Path) -> (PathBuf, i64) {
    let mut logs: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    logs.sort();
    let p = logs.pop().unwrap();
    let base = p.file_stem().unwrap().to_str().unwrap().parse().unwrap();
    (p, base)
}

/// Byte position of batch `i` inside the segment that starts at batch `base`.
fn position(batches: &[Vec<u8>], base: i64, i: usize) -> usize {
    batches[base as usize..i].iter().map(Vec::len).sum()
}

/// Opens the damaged log and checks: end at `expect_end`, batches below it intact, appends work.
fn check_recovers(dir: PathBuf, batches: Vec<Vec<u8>>, expect_end: i64) {
    run(move || async move {
        let log = PartitionLog::open(&dir, config()).await.unwrap();
        assert_eq!(log.high_watermark(), expect_end);
        for (i, b) in batches.iter().enumerate().take(expect_end as usize) {
            assert_eq!(
                &log.read(i as i64, 1).await.unwrap().to_vec(),
                b,
                "batch {i}"
            );
        }
        let info = log
            .append(Bytes::from(build_test_batch(1, 10, 0, 1)))
            .await
            .unwrap();
        assert_eq!(info.base_offset, expect_end);
        log.close().await.unwrap();
        // And the repaired log reopens the same.
        let log = PartitionLog::open(&dir, config()).await.unwrap();
        assert_eq!(log.high_watermark(), expect_end + 1);
        log.close().await.unwrap();
    });
}

#[test]
fn flipped_byte_in_last_segment_cuts_there() {
    let (_tmp, dir, batches) = populate(90);
    let (path, base) = last_segment(&dir);
    let victim = base as usize + 3;
    let mut data = std::fs::read(&path).unwrap();
    data[position(&batches, base, victim) + 200] ^= 0x40;
    std::fs::write(&path, data).unwrap();
    check_recovers(dir, batches, victim as i64);
}

#[test]
fn batch_cut_in_half_is_dropped() {
    let (_tmp, dir, batches) = populate(90);
    let (path, base) = last_segment(&dir);
    let last = batches.len() - 1;
    let cut = position(&batches, base, last) + batches[last].len() / 2;
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(cut as u64).unwrap();
    check_recovers(dir, batches, last as i64);
}

#[test]
fn zeroed_tail_is_dropped() {
    let (_tmp, dir, batches) = populate(90);
    let (path, base) = last_segment(&dir);
    let from = batches.len() - 2;
    let mut data = std::fs::read(&path).unwrap();
    let p = position(&batches, base, from);
    data[p..].fill(0);
    data.extend_from_slice(&[0u8; 8192]);
    std::fs::write(&path, data).unwrap();
    check_recovers(dir, batches, from as i64);
}

#[test]
fn missing_and_damaged_indexes_are_rebuilt() {
    let (_tmp, dir, batches) = populate(90);
    let mut indexes: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "index"))
        .collect();
    indexes.sort();
    assert!(indexes.len() >= 3, "several segments");
    std::fs::remove_file(&indexes[0]).unwrap();
    std::fs::write(&indexes[1], b"garbage!garbage!x").unwrap();
    let time_index = indexes[0].with_extension("timeindex");
    std::fs::remove_file(&time_index).unwrap();
    let n = batches.len() as i64;
    let first = indexes[0].clone();
    let second = indexes[1].clone();
    check_recovers(dir, batches, n);
    assert!(first.exists(), "missing index rewritten");
    assert_eq!(
        std::fs::metadata(&second).unwrap().len() % 8,
        0,
        "damaged index rewritten"
    );
    assert!(time_index.exists());
}

#[test]
fn offset_for_timestamp_after_reopen() {
    let (_tmp, dir, _batches) = populate(90);
    run(move || async move {
        let log = PartitionLog::open(&dir, config()).await.unwrap();
        assert_eq!(log.offset_for_timestamp(57).await.unwrap(), Some((57, 57)));
        assert_eq!(log.offset_for_timestamp(0).await.unwrap(), Some((0, 0)));
        assert_eq!(log.offset_for_timestamp(1000).await.unwrap(), None);
        assert_eq!(log.max_timestamp(), Some((89, 89)));
        log.close().await.unwrap();
    });
}
