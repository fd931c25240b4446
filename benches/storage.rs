//! Storage engine benchmark (`cargo bench --bench storage`): prints figures, no harness.
//!
//! Append throughput per batch size and flush policy, append-to-durable latency of a single
//! writer (hdrhistogram), group commit with many writers, sequential reads cold and from the
//! cache, and reserved versus growing segment files. Runs in a temp dir on the same disk as
//! /tmp. `RB_BENCH_SECS` sets the seconds per throughput case (default 2).

use std::cell::Cell;
use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ringbroker::storage::batch::build_test_batch;
use ringbroker::storage::{FlushPolicy, LogConfig, LogEnv, PartitionLog, ShardCache};

fn enabled(section: &str) -> bool {
    std::env::var("RB_BENCH_ONLY").map_or(true, |v| v.split(',').any(|s| s == section))
}

fn secs() -> f64 {
    std::env::var("RB_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2.0)
}

fn batch_of(bytes: usize) -> Bytes {
    // One record whose value fills the batch to about `bytes`.
    Bytes::from(build_test_batch(1, bytes.saturating_sub(61 + 8), 0, 0x5a))
}

fn env(cache_bytes: usize, reserve: bool) -> LogEnv {
    LogEnv {
        cache: Rc::new(ShardCache::new(cache_bytes)),
        background_queue: None,
        reserve_space: reserve,
        reserve_budget: ringbroker::storage::ReserveBudget::new(u64::MAX),
    }
}

fn policy_name(p: FlushPolicy) -> String {
    match p {
        FlushPolicy::EveryAppend => "every-append".into(),
        FlushPolicy::IntervalMs(ms) => format!("interval-{ms}ms"),
        FlushPolicy::Os => "os".into(),
    }
}

/// Runs `writers` concurrent appenders for `secs`; returns (MB/s, appends/s).
async fn throughput(
    dir: &Path,
    size: usize,
    flush: FlushPolicy,
    writers: usize,
    reserve: bool,
    secs: f64,
) -> (f64, f64) {
    let config = LogConfig {
        flush,
        ..LogConfig::default()
    };
    let log = Rc::new(
        PartitionLog::open_with(dir, config, env(64 << 20, reserve))
            .await
            .unwrap(),
    );
    let batch = batch_of(size);
    let len = batch.len();
    let count = Rc::new(Cell::new(0u64));
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let start = Instant::now();
    let tasks: Vec<_> = (0..writers)
        .map(|_| {
            let (log, batch, count) = (log.clone(), batch.clone(), count.clone());
            glommio::spawn_local(async move {
                while Instant::now() < deadline {
                    log.append(batch.clone()).await.unwrap();
                    count.set(count.get() + 1);
                }
            })
        })
        .collect();
    futures::future::join_all(tasks).await;
    let elapsed = start.elapsed().as_secs_f64();
    Rc::try_unwrap(log).unwrap().close().await.unwrap();
    let n = count.get() as f64;
    (n * len as f64 / elapsed / 1e6, n / elapsed)
}

async fn latency(dir: &Path, size: usize, appends: usize) -> hdrhistogram::Histogram<u64> {
    let log = PartitionLog::open_with(dir, LogConfig::default(), env(64 << 20, true))
        .await
        .unwrap();
    let batch = batch_of(size);
    let mut h = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).unwrap();
    for i in 0..appends + 500 {
        let t = Instant::now();
        log.append(batch.clone()).await.unwrap();
        if i >= 500 {
            h.saturating_record(t.elapsed().as_nanos() as u64);
        }
    }
    log.close().await.unwrap();
    h
}

async fn reads(dir: &Path) {
    let size = 16 * 1024;
    let total_bytes = 512usize << 20;
    let config = LogConfig {
        flush: FlushPolicy::Os,
        ..LogConfig::default()
    };
    let cache = Rc::new(ShardCache::new(1 << 30));
    let e = LogEnv {
        cache: cache.clone(),
        background_queue: None,
        reserve_space: true,
        reserve_budget: ringbroker::storage::ReserveBudget::new(u64::MAX),
    };
    let log = Rc::new(PartitionLog::open_with(dir, config, e).await.unwrap());
    let batch = batch_of(size);
    let n = total_bytes / batch.len();
    let mut pending = Vec::new();
    for _ in 0..n {
        pending.push(log.append(batch.clone()));
        if pending.len() == 64 {
            futures::future::join_all(pending.drain(..)).await;
        }
    }
    futures::future::join_all(pending).await;
    let end = log.high_watermark();
    let read_all = |log: Rc<PartitionLog>| async move {
        let start = Instant::now();
        let mut offset = 0;
        let mut bytes = 0usize;
        while offset < end {
            let s = log.read(offset, 1 << 20).await.unwrap();
            bytes += s.len_bytes();
            // Each 16 KiB batch holds one record: offsets advance by batches.
            offset += (s.len_bytes() / batch_len(size)) as i64;
        }
        bytes as f64 / start.elapsed().as_secs_f64() / 1e6
    };
    let cached = read_all(log.clone()).await;
    let (hits, _) = cache.stats();
    Rc::try_unwrap(log).unwrap().close().await.unwrap();
    // Cold: reopen with an empty cache; the data comes from disk through direct reads.
    let cold_log = Rc::new(
        PartitionLog::open_with(dir, config, env(0, true))
            .await
            .unwrap(),
    );
    let cold = read_all(cold_log.clone()).await;
    Rc::try_unwrap(cold_log).unwrap().close().await.unwrap();
    println!(
        "read sequential 16KiB batches, 1MiB fetches: from cache {cached:.0} MB/s ({hits} cache hits), cold from disk {cold:.0} MB/s"
    );
}

fn batch_len(size: usize) -> usize {
    batch_of(size).len()
}

fn main() {
    let secs = secs();
    glommio::LocalExecutorBuilder::new(glommio::Placement::Fixed(1))
        .spawn(move || async move {
            let root = tempfile::tempdir_in(std::env::temp_dir()).unwrap();
            let mut case = 0;
            let mut fresh = || {
                case += 1;
                root.path().join(format!("bench-{case}"))
            };
            if enabled("append") {
            println!("== append throughput (16 concurrent writers, {secs}s per case, reserved space)");
            for size in [1024, 16 * 1024, 256 * 1024] {
                for flush in [FlushPolicy::EveryAppend, FlushPolicy::IntervalMs(100), FlushPolicy::Os] {
                    let d = fresh();
                    let (mbs, ops) = throughput(&d, size, flush, 16, true, secs).await;
                    println!("append {:>4} KiB {:<14} {mbs:>8.1} MB/s {ops:>9.0} appends/s", size / 1024, policy_name(flush));
                    let _ = std::fs::remove_dir_all(&d);
                }
            }
            }
            if enabled("latency") {
            println!("== append-to-durable latency, 1 KiB, single writer, every-append");
            let d = fresh();
            let h = latency(&d, 1024, 20_000).await;
            println!(
                "latency 1 KiB: p50 {:.1} us  p99 {:.1} us  p99.9 {:.1} us  max {:.1} us  ({} samples)",
                h.value_at_quantile(0.5) as f64 / 1e3,
                h.value_at_quantile(0.99) as f64 / 1e3,
                h.value_at_quantile(0.999) as f64 / 1e3,
                h.max() as f64 / 1e3,
                h.len()
            );
            let _ = std::fs::remove_dir_all(&d);
            }
            if enabled("group") {
            println!("== group commit, every-append, many writers");
            for (size, writers) in [(1024, 1), (1024, 64), (1024, 256), (64 * 1024, 1), (64 * 1024, 32), (64 * 1024, 128), (1024 * 1024, 16)] {
                let d = fresh();
                let (mbs, ops) = throughput(&d, size, FlushPolicy::EveryAppend, writers, true, secs).await;
                println!("group commit {:>5} KiB x {writers:>3} writers {mbs:>8.1} MB/s {ops:>9.0} appends/s", size / 1024);
                let _ = std::fs::remove_dir_all(&d);
            }
            }
            if enabled("reserve") {
            println!("== reserved vs growing segment files (64 KiB batches, 32 writers)");
            for flush in [FlushPolicy::Os, FlushPolicy::EveryAppend] {
                for reserve in [true, false] {
                    let d = fresh();
                    let (mbs, _) = throughput(&d, 64 * 1024, flush, 32, reserve, secs).await;
                    println!("{:<14} {:<9} {mbs:>8.1} MB/s", policy_name(flush), if reserve { "reserved" } else { "growing" });
                    let _ = std::fs::remove_dir_all(&d);
                }
            }
            }
            if enabled("read") {
            println!("== reads");
            let d = fresh();
            reads(&d).await;
            let _ = std::fs::remove_dir_all(&d);
            }
        })
        .unwrap()
        .join()
        .unwrap();
}
