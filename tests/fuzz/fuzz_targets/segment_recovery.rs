//! Recovery of a partition directory: `PartitionLog::open` (the segment scanner: length,
//! magic, CRC-32C and offset continuity of every batch, the torn tail cut off, the sparse
//! indexes trusted or rebuilt), then `manager::rebuild_producer_state` (producer snapshot,
//! transaction index, replay of every batch), then reads of the whole recovered log and a
//! close, as the broker does for a partition it owns at start.
//!
//! The scanner reads files with direct I/O, so the input is written to a partition directory
//! on tmpfs (`/dev/shm`) and the real code runs on a glommio executor kept for the process.
//!
//! Input: a flag byte, the segment's base offset (8 bytes, sign bit cleared), four
//! length-prefixed parts (2 bytes of length each: `.index`, `.timeindex`, producer state
//! `.snapshot` at the base offset, `.txnindex`), then the `.log` file's bytes. Flag bit 0:
//! recompute the batch CRCs first, so everything behind the CRC check is reached; bit 1: the
//! segment is closed (an empty segment follows it), so its index files are read and trusted
//! when well formed; bit 2: use the base offset read from the input rather than 0.
//! Property: no panic, no abort, no allocation beyond libFuzzer's `-malloc_limit_mb`.
#![no_main]

use std::path::{Path, PathBuf};

use glommio::{LocalExecutor, LocalExecutorBuilder};
use libfuzzer_sys::fuzz_target;
use ringbroker::storage::config::LogConfig;
use ringbroker::storage::log::PartitionLog;
use ringbroker::storage::manager;
use ringbroker_fuzz::{Input, fix_batch_crcs};

thread_local! {
    static EXECUTOR: LocalExecutor = LocalExecutorBuilder::default()
        .make()
        .expect("glommio executor");
    static ROOT: PathBuf = {
        let root = Path::new("/dev/shm").join(format!("ringbroker-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&root).expect("tmpfs directory");
        root
    };
}

fn name(base: i64, ext: &str) -> String {
    format!("{base:020}.{ext}")
}

fn write(dir: &Path, file: String, bytes: &[u8]) {
    std::fs::write(dir.join(file), bytes).expect("write to tmpfs");
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let flags = input.byte();
    let base = input.i64() & i64::MAX;
    let base = if flags & 4 != 0 { base } else { 0 };
    let index = input.part();
    let time_index = input.part();
    let producer_snapshot = input.part();
    let txn_index = input.part();
    let mut log_bytes = input.rest().to_vec();
    if flags & 1 != 0 {
        fix_batch_crcs(&mut log_bytes);
    }
    let dir = ROOT.with(|root| root.join("t-0"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("partition directory");
    write(&dir, name(base, "log"), &log_bytes);
    if !producer_snapshot.is_empty() {
        write(&dir, name(base, "snapshot"), producer_snapshot);
    }
    if !txn_index.is_empty() {
        write(&dir, name(base, "txnindex"), txn_index);
    }
    if flags & 2 != 0
        && let Some(next) = base.checked_add(1)
    {
        write(&dir, name(base, "index"), index);
        write(&dir, name(base, "timeindex"), time_index);
        write(&dir, name(next, "log"), &[]);
    }
    EXECUTOR.with(|executor| {
        executor.run(async {
            let Ok(log) = PartitionLog::open(&dir, LogConfig::default()).await else {
                return;
            };
            let _ = manager::rebuild_producer_state(&dir, &log).await;
            let mut offset = log.log_start_offset();
            // Every read returns at least one batch, so this ends; the bound keeps a long
            // recovered log from making one input slow.
            for _ in 0..64 {
                if offset >= log.high_watermark() {
                    break;
                }
                match log.read(offset, 64 * 1024).await {
                    Ok(slice) if !slice.is_empty() => {
                        let last = last_offset(&slice.to_vec());
                        match last {
                            Some(last) if last >= offset && last < i64::MAX => offset = last + 1,
                            _ => break,
                        }
                    }
                    _ => break,
                }
            }
            let _ = log.close().await;
        })
    });
    let _ = std::fs::remove_dir_all(&dir);
});

/// The last offset of the last whole batch in `bytes` (batches as the log returns them).
fn last_offset(bytes: &[u8]) -> Option<i64> {
    let mut at = 0usize;
    let mut last = None;
    while let Some(header) = ringbroker::storage::batch::BatchHeader::view(&bytes[at..]) {
        let size = usize::try_from(header.size_bytes()).ok()?;
        if size < 61 || at + size > bytes.len() {
            break;
        }
        let delta = i64::from(header.last_offset_delta.get());
        last = Some(header.base_offset.get().wrapping_add(delta));
        at += size;
    }
    last
}
