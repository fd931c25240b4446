//! Crash test: a child process (this test binary re-executed with `RB_CRASH_CHILD_DIR` set)
//! appends with sync-every-append from several concurrent writers and prints `ACK <offset>
//! <seq>` for every acknowledged batch; the parent SIGKILLs it at a random moment, recovers the
//! log, and checks that every acknowledged batch reads back byte-identical and that the log
//! holds nothing but whole, valid batches of the child up to its end. Seeded; the seed is printed
//! (`RB_CRASH_SEED` replays a run, `RB_CRASH_RUNS` changes the count, default 50).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ringbroker::storage::batch::{BatchHeader, build_test_batch, patch_base_offset};
use ringbroker::storage::{LogConfig, PartitionLog};

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The batch the child appends as its `seq`-th append: content is a pure function of `seq`
/// (timestamp = seq), so the parent can rebuild any batch it finds.
fn batch_for(seq: u64) -> Vec<u8> {
    let mut s = seq;
    let records = 1 + (splitmix(&mut s) % 4) as i32;
    let value_bytes = (splitmix(&mut s) % 3000) as usize;
    build_test_batch(records, value_bytes, seq as i64, (seq % 251) as u8)
}

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 256 * 1024,
        index_interval_bytes: 4096,
        ..LogConfig::default()
    }
}

#[test]
fn crash_child() {
    let Ok(dir) = std::env::var("RB_CRASH_CHILD_DIR") else {
        return; // Only does something when re-executed by `crash_recovery_keeps_acknowledged`.
    };
    let start_seq: u64 = std::env::var("RB_CRASH_START_SEQ")
        .unwrap()
        .parse()
        .unwrap();
    glommio::LocalExecutorBuilder::default()
        .spawn(move || async move {
            let log = Rc::new(PartitionLog::open(Path::new(&dir), config()).await.unwrap());
            println!("READY");
            let next = Rc::new(std::cell::Cell::new(start_seq));
            let writers: Vec<_> = (0..4)
                .map(|_| {
                    let log = log.clone();
                    let next = next.clone();
                    glommio::spawn_local(async move {
                        loop {
                            let seq = next.get();
                            next.set(seq + 1);
                            let info = log.append(Bytes::from(batch_for(seq))).await.unwrap();
                            println!("ACK {} {}", info.base_offset, seq);
                        }
                    })
                })
                .collect();
            futures::future::join_all(writers).await;
        })
        .unwrap()
        .join()
        .unwrap();
}

#[test]
fn crash_recovery_keeps_acknowledged() {
    let seed: u64 = std::env::var("RB_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    let runs: u64 = std::env::var("RB_CRASH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(50);
    println!("crash test seed {seed} ({runs} runs); replay with RB_CRASH_SEED={seed}");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("crash-0");
    let mut rng = seed;
    let mut next_seq = 0u64;
    let started = Instant::now();
    for run in 0..runs {
        let kill_after = Duration::from_millis(splitmix(&mut rng) % 60);
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["crash_child", "--exact", "--nocapture", "--test-threads=1"])
            .env("RB_CRASH_CHILD_DIR", &dir)
            .env("RB_CRASH_START_SEQ", next_seq.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut acks = Vec::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line.ends_with("READY") {
                    let _ = ready_tx.send(());
                } else if let Some(rest) = line.strip_prefix("ACK ") {
                    let mut it = rest.split(' ');
                    let offset: i64 = it.next().unwrap().parse().unwrap();
                    let seq: u64 = it.next().unwrap().parse().unwrap();
                    acks.push((offset, seq));
                }
            }
            acks
        });
        // The kill lands at a random moment of the append stream, not during start-up.
        ready_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("child opened the log");
        std::thread::sleep(kill_after);
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let acks = reader.join().unwrap();
        let ack_count = acks.len();
        let max_seq = acks.iter().map(|a| a.1).max();
        let d = dir.clone();
        let (end, seqs_seen) = glommio::LocalExecutorBuilder::default()
            .spawn(move || async move { verify(&d, &acks).await })
            .unwrap()
            .join()
            .unwrap();
        println!(
            "run {run}: killed {kill_after:?} after open, {ack_count} acks verified, log end {end}"
        );
        next_seq = next_seq.max(seqs_seen).max(max_seq.map_or(0, |m| m + 1)) + 1000;
    }
    println!("crash test: {runs} runs in {:?}", started.elapsed());
}

/// Recovers the log and checks it; returns (log end offset, one past the largest seq found).
async fn verify(dir: &Path, acks: &[(i64, u64)]) -> (i64, u64) {
    let log = PartitionLog::open(dir, config()).await.unwrap();
    let end = log.high_watermark();
    for &(offset, seq) in acks {
        assert!(
            offset < end,
            "acknowledged offset {offset} (seq {seq}) lost, log end {end}"
        );
        let got = log.read(offset, 1).await.unwrap().to_vec();
        let mut want = batch_for(seq);
        patch_base_offset(&mut want, offset);
        assert_eq!(
            got, want,
            "acknowledged batch at {offset} (seq {seq}) differs"
        );
    }
    // Every batch in the log is a whole batch the child wrote, offsets contiguous to the end.
    let mut offset = log.log_start_offset();
    let mut max_seq = 0;
    while offset < end {
        let got = log.read(offset, 1 << 20).await.unwrap().to_vec();
        let mut at = 0;
        assert!(!got.is_empty());
        while at < got.len() {
            let h = BatchHeader::view(&got[at..]).unwrap();
            assert_eq!(h.base_offset.get(), offset, "contiguous offsets");
            let seq = h.base_timestamp.get() as u64;
            let size = h.size_bytes() as usize;
            let mut want = batch_for(seq);
            patch_base_offset(&mut want, offset);
            assert_eq!(
                &got[at..at + size],
                &want[..],
                "batch at {offset} is the child's"
            );
            max_seq = max_seq.max(seq + 1);
            offset = h.last_offset() + 1;
            at += size;
        }
    }
    assert_eq!(offset, end);
    assert!(log.read(end, 100).await.unwrap().is_empty());
    log.close().await.unwrap();
    (end, max_seq)
}
