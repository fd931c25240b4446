//! Log cleaner benchmark (`cargo bench --bench cleaner`): prints figures, no harness.
//!
//! Writes a compacted log of `RB_CLEANER_BYTES` (default 1 GiB) of keyed records (1 KiB values,
//! 16 records a batch, 100 000 keys, so each key is written about ten times) in 128 MiB
//! segments, then times one cleaning of it with the default dedupe buffer and no I/O throttle:
//! MB/s of log read (every closed segment is read twice, once for the key map and once to
//! rewrite it, as in Kafka; the figure counts the log's size once, like Kafka's "cleaned
//! MB/s"), and the size left; then checks that every key is still there. Uncompressed and lz4
//! batches; three runs each, median printed.
//! Runs in a temp dir on the disk of /tmp. `RB_BENCH_ONLY=lz4` (or `none`) runs one case.

use std::collections::HashMap;
use std::rc::Rc;
use std::time::Instant;

use bytes::Bytes;
use ringbroker::config::topic::CompactionSettings;
use ringbroker::storage::batch::BatchHeader;
use ringbroker::storage::cleaner::records::{self, KeyValue, build_keyed_batch};
use ringbroker::storage::cleaner::{Cleaner, CleanerConfig, PartitionFacts};
use ringbroker::storage::compression::Codec;
use ringbroker::storage::{FlushPolicy, LogConfig, LogEnv, PartitionLog, ShardCache};

const KEYS: u64 = 100_000;
const VALUE_BYTES: usize = 1024;
const RECORDS_PER_BATCH: u64 = 16;

fn total_bytes() -> u64 {
    std::env::var("RB_CLEANER_BYTES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1 << 30)
}

/// A log environment without a batch cache, so every read goes to the files.
fn uncached() -> LogEnv {
    LogEnv {
        cache: Rc::new(ShardCache::new(0)),
        background_queue: None,
        reserve_space: true,
        ..LogEnv::default()
    }
}

/// One run: (cleaned MB/s over the closed segments' size, closed MB before, MB after).
async fn run(codec: Codec) -> (f64, f64, f64) {
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let config = LogConfig {
        segment_bytes: 128 << 20,
        flush: FlushPolicy::Os,
        ..LogConfig::default()
    };
    let log = PartitionLog::open_with(&dir.path().join("bench-0"), config, uncached())
        .await
        .unwrap();
    let mut value = vec![0u8; VALUE_BYTES];
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut written = 0u64;
    let mut record = 0u64;
    // 64 appends in flight, so the writes group-commit instead of waiting one by one.
    let mut pending = Vec::new();
    while written < total_bytes() {
        let keys: Vec<String> = (0..RECORDS_PER_BATCH)
            .map(|i| format!("key-{:08}", (record + i).wrapping_mul(7919) % KEYS))
            .collect();
        // Half random letters, half a template every record shares: lz4 roughly halves it.
        for (i, b) in value.iter_mut().enumerate() {
            if i % 2 == 0 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                *b = b'a' + (state % 26) as u8;
            } else {
                *b = b"{\"field\": \"value\"}, "[i % 20];
            }
        }
        let records: Vec<KeyValue<'_>> = keys
            .iter()
            .map(|k| (Some(k.as_bytes()), Some(&value[..])))
            .collect();
        let batch = build_keyed_batch(&records, 1_700_000_000_000, codec, 0, (-1, -1, -1));
        written += batch.len() as u64;
        record += RECORDS_PER_BATCH;
        pending.push(log.append(Bytes::from(batch)));
        if pending.len() == 64 {
            for result in futures::future::join_all(pending.drain(..)).await {
                result.unwrap();
            }
        }
    }
    for result in futures::future::join_all(pending).await {
        result.unwrap();
    }
    log.close().await.unwrap();
    // Reopened, so the cleaning reads from disk, not from what the writes left in memory.
    let log = PartitionLog::open_with(&dir.path().join("bench-0"), config, uncached())
        .await
        .unwrap();
    let closed: u64 = log.closed_segments().iter().map(|s| s.size_bytes).sum();
    let cleaner = Cleaner::new(CleanerConfig {
        enabled: true,
        backoff_ms: 0,
        dedupe_buffer_bytes: 128 << 20,
        load_factor: 0.9,
        io_bytes_per_second: f64::INFINITY,
    });
    let facts = PartitionFacts {
        settings: CompactionSettings {
            min_cleanable_dirty_ratio: 0.5,
            delete_retention_ms: 86_400_000,
            min_compaction_lag_ms: 0,
            max_compaction_lag_ms: i64::MAX,
        },
        last_stable_offset: i64::MAX,
        aborted: Vec::new(),
        last_batches: HashMap::new(),
    };
    let started = Instant::now();
    let stats = cleaner
        .clean_if_due(&log, &facts, 1_700_000_000_000)
        .await
        .unwrap()
        .expect("an all-dirty log is due");
    let secs = started.elapsed().as_secs_f64();
    let after: u64 = log.closed_segments().iter().map(|s| s.size_bytes).sum();
    assert!(stats.bytes_read >= closed);
    // Every key is still there, and at most once below the active segment (which the cleaner
    // leaves alone).
    let active = log.active_segment_base();
    let mut cleaned_keys = std::collections::HashSet::new();
    let mut keys = std::collections::HashSet::new();
    let mut offset = log.log_start_offset();
    while offset < log.high_watermark() {
        let bytes = log.read(offset, 1 << 20).await.unwrap().to_vec();
        let mut at = 0;
        while let Some(h) = BatchHeader::view(&bytes[at..]) {
            let size = h.size_bytes() as usize;
            if at + size > bytes.len() {
                break;
            }
            let section = records::section(&bytes[at..at + size], 1 << 26).unwrap();
            for r in records::parse(&section, h.records_count.get()).unwrap() {
                let key = r.key.unwrap().to_vec();
                if h.base_offset.get() < active {
                    assert!(cleaned_keys.insert(key.clone()), "a key twice");
                }
                keys.insert(key);
            }
            offset = h.last_offset() + 1;
            at += size;
        }
        if at == 0 {
            break;
        }
    }
    assert_eq!(keys.len() as u64, KEYS, "every key kept");
    log.close().await.unwrap();
    let mb = |b: u64| b as f64 / 1e6;
    (mb(closed) / secs, mb(closed), mb(after))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    glommio::LocalExecutorBuilder::default()
        .spawn(|| async {
            for (name, codec) in [("none", Codec::None), ("lz4", Codec::Lz4)] {
                if std::env::var("RB_BENCH_ONLY").is_ok_and(|v| !v.split(',').any(|c| c == name)) {
                    continue;
                }
                let mut rates = Vec::new();
                let mut sizes = (0.0, 0.0);
                for _ in 0..3 {
                    let (rate, before, after) = run(codec).await;
                    println!(
                        "cleaner codec={name}: {before:.0} MB of closed segments -> {after:.0} MB \
                         in {:.2} s: {rate:.0} MB/s",
                        before / rate
                    );
                    rates.push(rate);
                    sizes = (before, after);
                }
                println!(
                    "cleaner codec={name} median of 3: {:.0} MB/s ({:.0} MB -> {:.0} MB)",
                    median(rates),
                    sizes.0,
                    sizes.1
                );
            }
        })
        .unwrap()
        .join()
        .unwrap();
}
