//! Crash test of truncation: a child process (this test binary re-executed with
//! `RB_TRUNC_CHILD_DIR` set) appends batches with sync-every-append and now and then truncates
//! its log back a random distance (`PartitionLog::truncate_to`, across small segments),
//! printing `ACK <offset> <seq>`, `TRUNC <offset>` before a truncation and `DONE <end>` after;
//! the parent SIGKILLs it at a random moment, recovers the log and checks that it is a valid
//! prefix: whole batches of the child, contiguous, never shorter than what every completed
//! operation left, never longer than what the child had before an unfinished truncation (plus
//! the one append that may have been in flight). Seeded (`RB_TRUNC_SEED` replays a run,
//! `RB_TRUNC_RUNS` changes the count, default 25).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
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

/// The batch the child appends as its `seq`-th append (timestamp = seq).
fn batch_for(seq: u64) -> Vec<u8> {
    let mut s = seq;
    let records = 1 + (splitmix(&mut s) % 4) as i32;
    let value_bytes = (splitmix(&mut s) % 2500) as usize;
    build_test_batch(records, value_bytes, seq as i64, (seq % 251) as u8)
}

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 16 * 1024,
        index_interval_bytes: 1024,
        ..LogConfig::default()
    }
}

/// (base offset, seq, last offset) of each batch.
type Model = Vec<(i64, u64, i64)>;

#[test]
fn truncate_crash_child() {
    let Ok(dir) = std::env::var("RB_TRUNC_CHILD_DIR") else {
        return; // Only does something when re-executed by the test below.
    };
    let mut seq: u64 = std::env::var("RB_TRUNC_START_SEQ")
        .unwrap()
        .parse()
        .unwrap();
    glommio::LocalExecutorBuilder::default()
        .spawn(move || async move {
            let log = PartitionLog::open(Path::new(&dir), config()).await.unwrap();
            println!("READY");
            let mut rng = seq;
            loop {
                for _ in 0..4 + splitmix(&mut rng) % 16 {
                    let info = log.append(Bytes::from(batch_for(seq))).await.unwrap();
                    println!("ACK {} {}", info.base_offset, seq);
                    seq += 1;
                }
                let end = log.log_end_offset();
                let to = end - (splitmix(&mut rng) % 40) as i64;
                println!("TRUNC {to}");
                log.truncate_to(to.max(0)).await.unwrap();
                println!("DONE {}", log.log_end_offset());
            }
        })
        .unwrap()
        .join()
        .unwrap();
}

#[test]
fn truncation_survives_sigkill_at_any_point() {
    let seed: u64 = std::env::var("RB_TRUNC_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    let runs: u64 = std::env::var("RB_TRUNC_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(25);
    println!("truncation crash test seed {seed} ({runs} runs); replay with RB_TRUNC_SEED={seed}");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("trunc-0");
    let mut rng = seed;
    let mut next_seq = 0u64;
    let mut model: Model = Vec::new();
    let started = Instant::now();
    for run in 0..runs {
        let kill_after = Duration::from_millis(splitmix(&mut rng) % 150);
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "truncate_crash_child",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("RB_TRUNC_CHILD_DIR", &dir)
            .env("RB_TRUNC_START_SEQ", next_seq.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut lines = Vec::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line.ends_with("READY") {
                    let _ = ready_tx.send(());
                } else {
                    lines.push(line);
                }
            }
            lines
        });
        let ready = ready_rx.recv_timeout(Duration::from_secs(30));
        if ready.is_err() {
            let _ = child.kill();
            let _ = child.wait();
            panic!("child did not open the log");
        }
        std::thread::sleep(kill_after);
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let lines = reader.join().unwrap();

        // What every completed operation left, and what an unfinished truncation started from.
        let mut pending_cut = None;
        let mut truncations = 0;
        for line in &lines {
            let mut it = line.split(' ');
            match (it.next(), it.next(), it.next()) {
                (Some("ACK"), Some(o), Some(s)) => {
                    let (offset, seq): (i64, u64) = (o.parse().unwrap(), s.parse().unwrap());
                    let end = model.last().map_or(0, |b| b.2 + 1);
                    assert_eq!(offset, end, "appends continue the log");
                    let last = offset + BatchHeader::view(&batch_for(seq)).unwrap().last_offset();
                    model.push((offset, seq, last));
                }
                (Some("TRUNC"), Some(o), None) => pending_cut = Some(o.parse::<i64>().unwrap()),
                (Some("DONE"), Some(e), None) => {
                    let cut = pending_cut.take().expect("TRUNC before DONE");
                    model.retain(|b| b.2 < cut);
                    assert_eq!(
                        model.last().map_or(0, |b| b.2 + 1),
                        e.parse::<i64>().unwrap()
                    );
                    truncations += 1;
                }
                _ => {}
            }
        }
        let mut lower = model.clone();
        if let Some(cut) = pending_cut {
            lower.retain(|b| b.2 < cut);
        }
        let max_seq = lines
            .iter()
            .filter_map(|l| l.strip_prefix("ACK "))
            .filter_map(|r| r.split(' ').nth(1)?.parse::<u64>().ok())
            .max();
        // An append in flight (no truncation pending) may be durable without its ACK.
        let in_flight = (pending_cut.is_none()).then(|| max_seq.map_or(next_seq, |m| m + 1));
        let d = dir.clone();
        let recovered = glommio::LocalExecutorBuilder::default()
            .spawn(move || async move { recover(&d).await })
            .unwrap()
            .join()
            .unwrap();
        assert!(
            recovered.len() >= lower.len() && recovered[..lower.len()] == lower[..],
            "run {run}: the recovered log lost data a completed operation left (seed {seed})"
        );
        let prefix_of_upper =
            recovered.len() <= model.len() && recovered[..] == model[..recovered.len()];
        let plus_in_flight = recovered.len() == model.len() + 1
            && recovered[..model.len()] == model[..]
            && Some(recovered[model.len()].1) == in_flight;
        assert!(
            prefix_of_upper || plus_in_flight,
            "run {run}: the recovered log is not a prefix of the child's (seed {seed})"
        );
        println!(
            "run {run}: killed {kill_after:?} after open, {truncations} truncations, \
             pending {pending_cut:?}, log end {}, {} segment files",
            recovered.last().map_or(0, |b| b.2 + 1),
            std::fs::read_dir(&dir)
                .unwrap()
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
                .count()
        );
        next_seq = recovered
            .iter()
            .map(|b| b.1)
            .chain(max_seq)
            .max()
            .map_or(next_seq, |m| m + 1)
            + 1000;
        model = recovered;
    }
    println!(
        "truncation crash test: {runs} runs in {:?}",
        started.elapsed()
    );
}

/// Recovers the log; checks that it holds whole batches of the child, contiguous from 0.
async fn recover(dir: &Path) -> Model {
    let log = PartitionLog::open(dir, config()).await.unwrap();
    let end = log.durable_end();
    let mut out = Vec::new();
    let mut offset = log.log_start_offset();
    assert_eq!(offset, 0);
    while offset < end {
        let got = log.read(offset, 1 << 20).await.unwrap().to_vec();
        assert!(!got.is_empty());
        let mut at = 0;
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
            out.push((offset, seq, h.last_offset()));
            offset = h.last_offset() + 1;
            at += size;
        }
    }
    assert_eq!(offset, end);
    log.close().await.unwrap();
    out
}
