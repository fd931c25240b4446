//! Black-box mutation harness: request frames recorded from real clients (tests/data/frames,
//! see its README.md) are changed a few bytes at a time and sent to the real broker, each on a
//! new connection. The broker must survive every one, keep answering ApiVersions and Metadata,
//! keep its resident memory under `RSS_HWM_BYTES_MAX`, log no panic, and afterwards still serve
//! kcat producing and consuming.
//!
//! Mutations (one to three stacked per frame): bit flips; bytes set to 0x00, 0xFF, 0x7F or
//! 0x80; a 1-, 2- or 4-byte big-endian field overwritten with a boundary value (0, -1, the
//! signed minimum and maximum, large element counts); a huge unsigned varint written over a
//! compact length; byte ranges inserted, deleted or duplicated; truncation; a different api
//! key or version written into the header; two frames spliced. In most mutated Produce frames
//! the batch and message checksums are then recomputed, so that the mutation gets past the
//! CRC check to the batch validator and decompression. Most frames go out with their
//! true 4-byte size; some with a lying one (longer, shorter, zero, negative, 2 GiB); on some
//! connections more requests (recorded or mutated) follow the first.
//!
//! Every choice comes from one PRNG seeded by `MUTATION_SEED` (or the clock), printed first,
//! so a failing run replays with the same seed. `MUTATION_COUNT` (default `COUNT_DEFAULT`) is
//! the number of frames; `MUTATION_DURATION_S`, if set, stops the run after that many seconds
//! instead (the long run is `make fuzz-mutation`). On failure the seed, the frame's index and
//! the hex of the last frames sent are printed, and those frames are saved (size prefix
//! included, exactly as sent) under a directory in the system temp dir; `MUTATION_REPLAY`
//! (such a file or directory) sends saved frames again, unchanged, before the mutations.

mod support;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, MetadataRequest, MetadataResponse,
};
use kafka_protocol::protocol::StrBytes;
use support::{Broker, RawClient, run_bounded};

/// Frames in the short run, part of every `cargo test` (about 10 s on the 2-core dev machine).
const COUNT_DEFAULT: u64 = 3000;

/// Health checks (process alive, ApiVersions and Metadata answered, RSS) every this many frames.
const CHECK_EVERY: u64 = 100;

/// Bound on the broker's RSS high-water mark (VmHWM).
///
/// What the broker may legitimately hold here: one request frame per connection at most
/// `socket.request.max.bytes` (1 MiB below) and all of them together at most
/// `queued.max.request.bytes` (8 MiB below), since this harness has one connection open at a
/// time; the page cache of a few tiny partitions; group, producer and transaction state for a
/// few thousand ids; per-shard glommio buffers and io_uring rings, which dominate at rest (the
/// broker idles at ~40-70 MiB RSS). 1 GiB is well above all of that together, so crossing it
/// means something sized memory from a value read off the wire rather than from bytes that
/// arrived, and far below the 68 GB allocation that issue 12's first mutations triggered.
const RSS_HWM_BYTES_MAX: u64 = 1024 * 1024 * 1024;

/// How long a frame's connection waits for an answer before moving on (a lying size, acks=0).
const ANSWER_WAIT: Duration = Duration::from_millis(250);

/// Frames kept for the failure report.
const RECENT_KEPT: usize = 8;

/// splitmix64: small, seedable, and the same sequence on every platform.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

fn load_corpus() -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/frames");
    let mut frames: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .expect("tests/data/frames exists")
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "bin"))
        .map(|path| {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).unwrap())
        })
        .collect();
    // read_dir order is the file system's; sorting makes a seed mean the same run everywhere.
    frames.sort();
    frames
}

/// Boundary values for a big-endian field of `width` bytes.
fn boundary(rng: &mut Rng, width: usize) -> Vec<u8> {
    match width {
        1 => vec![*rng.pick(&[0x00u8, 0xff, 0x7f, 0x80, 0x01, 0xfe])],
        2 => rng
            .pick(&[0i16, -1, i16::MAX, i16::MIN, 1, 0x0100, 0x4000])
            .to_be_bytes()
            .to_vec(),
        _ => rng
            .pick(&[
                0i32,
                -1,
                i32::MAX,
                i32::MIN,
                1,
                0x0001_0000,
                0x00ff_ffff,
                1_000_000,
                0x4000_0000,
                i32::MAX - 1,
            ])
            .to_be_bytes()
            .to_vec(),
    }
}

/// One mutation of `frame` in place; `other` is a second corpus frame for splicing.
fn mutate_once(rng: &mut Rng, frame: &mut Vec<u8>, other: &[u8]) {
    if frame.is_empty() {
        frame.extend_from_slice(&other[..other.len().min(8)]);
        return;
    }
    let len = frame.len();
    match rng.below(11) {
        0 => {
            let at = rng.below(len);
            frame[at] ^= 1 << rng.below(8);
        }
        1 => {
            let at = rng.below(len);
            frame[at] = *rng.pick(&[0x00, 0xff, 0x7f, 0x80]);
        }
        2 | 3 => {
            // The most productive one: counts and lengths are 2- and 4-byte fields.
            let width = *rng.pick(&[1usize, 2, 4]);
            let at = rng.below(len);
            let value = boundary(rng, width);
            let end = (at + width).min(len);
            frame[at..end].copy_from_slice(&value[..end - at]);
        }
        4 => {
            // Compact arrays and strings carry an unsigned varint length.
            let at = rng.below(len);
            const VARINTS: [&[u8]; 5] = [
                &[0xff, 0xff, 0xff, 0xff, 0x0f],
                &[0x80, 0x80, 0x80, 0x80, 0x08],
                &[0xff, 0xff, 0xff, 0x7f],
                &[0x00],
                &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
            ];
            let varint = *rng.pick(&VARINTS);
            let end = (at + varint.len()).min(len);
            frame[at..end].copy_from_slice(&varint[..end - at]);
        }
        5 => {
            let at = rng.below(len + 1);
            let n = 1 + rng.below(32);
            let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
            frame.splice(at..at, bytes);
        }
        6 => {
            let at = rng.below(len);
            let n = 1 + rng.below((len - at).min(64));
            frame.drain(at..at + n);
        }
        7 => {
            let at = rng.below(len);
            let n = 1 + rng.below((len - at).min(128));
            let copy = frame[at..at + n].to_vec();
            let to = rng.below(frame.len() + 1);
            frame.splice(to..to, copy);
        }
        8 => {
            let keep = rng.below(len);
            frame.truncate(keep);
        }
        9 => {
            // Header: bytes 0..2 api key, 2..4 api version. Another served key with this
            // body, or a version off either end of the range.
            if len >= 4 {
                if rng.chance(50) {
                    let key = rng.below(70) as i16;
                    frame[0..2].copy_from_slice(&key.to_be_bytes());
                } else {
                    let version = *rng.pick(&[-1i16, 0, 1, 3, 4, 7, 9, 12, 13, 17, 100, i16::MAX]);
                    frame[2..4].copy_from_slice(&version.to_be_bytes());
                }
            }
        }
        _ => {
            let cut = rng.below(len + 1);
            let from = rng.below(other.len() + 1);
            frame.truncate(cut);
            frame.extend_from_slice(&other[from..]);
        }
    }
}

/// Recomputes the checksums of the record batches (v2, CRC-32C) and legacy messages (v0 and
/// v1, CRC-32) found in a mutated Produce frame, so that a mutation inside them reaches the
/// record count, attribute, compression and record parsing checks instead of stopping at the
/// checksum. Both formats start `offset i64 | length i32`, with the magic byte at +16: v2 has
/// `leader epoch i32 | magic | crc u32` and its CRC covers attributes to the end, legacy has
/// `crc u32 | magic` and its CRC covers magic to the end.
/// Returns how many it rewrote.
fn fix_checksums(frame: &mut [u8]) -> usize {
    let mut fixed = 0;
    let mut at = 0;
    while at + 21 <= frame.len() {
        let length = i32::from_be_bytes(frame[at + 8..at + 12].try_into().unwrap());
        let end = usize::try_from(length)
            .ok()
            .and_then(|l| (at + 12).checked_add(l));
        let fits = end.filter(|&end| end <= frame.len());
        // Clients write offset 0 (v2, compressed legacy wrappers) or small relative offsets;
        // requiring a small offset and sane legacy attributes keeps the scan from "fixing"
        // bytes of the request header or a topic name.
        let small_offset = frame[at..at + 4] == [0, 0, 0, 0];
        let legacy_attributes = frame[at + 17] & 0xf0 == 0;
        match (frame[at + 16], fits) {
            _ if !small_offset => at += 1,
            (2, Some(end)) if length >= 49 => {
                let crc = crc32c::crc32c(&frame[at + 21..end]);
                frame[at + 17..at + 21].copy_from_slice(&crc.to_be_bytes());
                fixed += 1;
                at = end;
            }
            (0 | 1, Some(end)) if length >= 14 && legacy_attributes => {
                let crc = crc32fast::hash(&frame[at + 16..end]);
                frame[at + 12..at + 16].copy_from_slice(&crc.to_be_bytes());
                fixed += 1;
                at = end;
            }
            _ => at += 1,
        }
    }
    fixed
}

/// A corpus frame with one to three mutations stacked, checksums recomputed in most Produce
/// frames; returns the source file's name and the frame.
fn mutated_frame(rng: &mut Rng, corpus: &[(String, Vec<u8>)]) -> (String, Vec<u8>) {
    let (name, mut frame) = rng.pick(corpus).clone();
    let other = rng.pick(corpus).1.clone();
    let stacked = 1 + [0, 0, 0, 1, 1, 2][rng.below(6)];
    for _ in 0..stacked {
        mutate_once(rng, &mut frame, &other);
    }
    if frame.starts_with(&[0, 0]) && rng.chance(60) {
        fix_checksums(&mut frame);
    }
    (name, frame)
}

/// The 4-byte size sent before `frame`: its true length, or sometimes a lie.
fn size_prefix(rng: &mut Rng, len: usize) -> i32 {
    let len = len as i32;
    if rng.chance(85) {
        return len;
    }
    match rng.below(6) {
        0 => len + 1 + rng.below(100) as i32,
        1 => len - 1 - rng.below(len.max(1) as usize) as i32,
        2 => 0,
        3 => -1,
        4 => i32::MAX,
        _ => 1024 * 1024 + 1,
    }
}

/// What happened to one frame's connection.
#[derive(Default)]
struct Outcome {
    /// A response frame came back whose correlation id is not the request's.
    wrong_correlation: Option<(i32, i32)>,
    answered: bool,
}

/// Sends one frame on a new connection and reads the first response, if any, within
/// `ANSWER_WAIT`. Errors are the broker closing on us, which is a legitimate answer.
fn send_frame(
    addr: SocketAddr,
    wire: &[u8],
    prefix: i32,
    frame: &[u8],
    half_close: bool,
) -> Outcome {
    let mut outcome = Outcome::default();
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return outcome;
    };
    let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
    let _ = stream.set_read_timeout(Some(ANSWER_WAIT));
    if stream.write_all(wire).is_err() {
        return outcome;
    }
    if half_close {
        let _ = stream.shutdown(Shutdown::Write);
    }
    let deadline = Instant::now() + ANSWER_WAIT;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
        if got.len() >= 8 {
            outcome.answered = true;
            // The broker parsed a header out of the first `prefix` bytes; it must echo the
            // correlation id it read there.
            if prefix >= 8 && frame.len() >= 8 {
                let sent = i32::from_be_bytes(frame[4..8].try_into().unwrap());
                let echoed = i32::from_be_bytes(got[4..8].try_into().unwrap());
                if sent != echoed {
                    outcome.wrong_correlation = Some((sent, echoed));
                }
            }
            break;
        }
    }
    outcome
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The broker answers ApiVersions and Metadata on a fresh connection.
fn healthy(addr: SocketAddr) -> Result<(), String> {
    std::panic::catch_unwind(AssertUnwindSafe(|| {
        let mut client = RawClient::connect(addr);
        let versions: ApiVersionsResponse = client.call(
            ApiKey::ApiVersions,
            3,
            &ApiVersionsRequest::default()
                .with_client_software_name(StrBytes::from_static_str("mutation"))
                .with_client_software_version(StrBytes::from_static_str("1")),
        );
        assert_eq!(versions.error_code, 0, "ApiVersions error");
        let metadata: MetadataResponse =
            client.call(ApiKey::Metadata, 12, &MetadataRequest::default());
        assert_eq!(metadata.brokers.len(), 1, "Metadata lists one broker");
    }))
    .map_err(|panic| {
        panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "health check panicked".into())
    })
}

struct Sent {
    index: u64,
    source: String,
    wire: Vec<u8>,
}

/// Prints and saves the recent frames, then fails the test with `why`.
fn fail(seed: u64, recent: &[Sent], broker: &Broker, why: &str) -> ! {
    let dir: PathBuf = std::env::temp_dir().join(format!("ringbroker-mutation-{seed}"));
    let _ = std::fs::create_dir_all(&dir);
    eprintln!("MUTATION FAILURE: {why}");
    eprintln!("seed {seed}; replay with MUTATION_SEED={seed}");
    for sent in recent {
        let path = dir.join(format!("{:07}.bin", sent.index));
        let _ = std::fs::write(&path, &sent.wire);
        eprintln!(
            "frame #{} (from {}), {} bytes as sent, saved to {}:\n{}",
            sent.index,
            sent.source,
            sent.wire.len(),
            path.display(),
            hex(&sent.wire)
        );
    }
    let log = broker.log();
    let tail = &log[log.len().saturating_sub(40)..];
    panic!(
        "{why} (seed {seed}, last frame #{}); broker log tail:\n{}",
        recent.last().map_or(0, |s| s.index),
        tail.join("\n")
    );
}

/// Saved frames (size prefix included) from `path`, a file or a directory of `.bin` files.
fn load_replay(path: &Path) -> Vec<(String, Vec<u8>)> {
    let files: Vec<PathBuf> = if path.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "bin"))
            .collect();
        files.sort();
        files
    } else {
        vec![path.to_path_buf()]
    };
    files
        .into_iter()
        .map(|file| {
            let wire = std::fs::read(&file).unwrap();
            assert!(wire.len() >= 4, "{} has no size prefix", file.display());
            (file.display().to_string(), wire)
        })
        .collect()
}

/// Bytes of files under `dir` (what the run left on disk).
fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|entry| match entry.metadata() {
            Ok(meta) if meta.is_dir() => dir_bytes(&entry.path()),
            Ok(meta) => meta.len(),
            Err(_) => 0,
        })
        .sum()
}

fn env_u64(key: &str) -> Option<u64> {
    std::env::var(key).ok().map(|v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{key} must be a number"))
    })
}

/// kcat produces and consumes a few messages on a fresh topic.
fn real_client_works(broker: &Broker, dir: &Path) -> Result<(), String> {
    let input = dir.join("kcat-after.txt");
    let lines: String = (0..5).map(|i| format!("after-{i}\n")).collect();
    std::fs::write(&input, lines).unwrap();
    let b = broker.bootstrap();
    let bound = Duration::from_secs(30);
    let topic = "mutation-after";
    let (status, _, err) = run_bounded(
        "kcat",
        &["-P", "-b", &b, "-t", topic, "-l", input.to_str().unwrap()],
        bound,
    );
    if !status.success() {
        return Err(format!("kcat -P failed: {err}"));
    }
    let (status, out, err) = run_bounded(
        "kcat",
        &["-C", "-b", &b, "-t", topic, "-o", "beginning", "-e", "-q"],
        bound,
    );
    let expected: Vec<String> = (0..5).map(|i| format!("after-{i}")).collect();
    let got: Vec<String> = out.lines().map(str::to_string).collect();
    if !status.success() || got != expected {
        return Err(format!("kcat -C read {got:?} ({status}): {err}"));
    }
    Ok(())
}

/// The checksum fix-up finds the batches and messages of every recorded Produce frame (v0, v1
/// and v9 are in the corpus) and, on an unmutated frame, recomputes exactly what the client
/// wrote.
#[test]
fn checksum_fixup_reproduces_client_checksums() {
    let produce: Vec<_> = load_corpus()
        .into_iter()
        .filter(|(_, frame)| frame.starts_with(&[0, 0]))
        .collect();
    assert!(produce.len() >= 10, "{} Produce frames", produce.len());
    for (name, frame) in produce {
        let mut fixed = frame.clone();
        assert!(fix_checksums(&mut fixed) >= 1, "{name}: no batch found");
        assert_eq!(fixed, frame, "{name}: a recomputed checksum differs");
    }
}

#[test]
fn mutated_client_frames_do_not_hurt_the_broker() {
    let seed = env_u64("MUTATION_SEED").unwrap_or_else(|| {
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        nanos ^ u64::from(std::process::id()).rotate_left(32)
    });
    let duration = env_u64("MUTATION_DURATION_S").map(Duration::from_secs);
    let count = env_u64("MUTATION_COUNT").unwrap_or(if duration.is_some() {
        u64::MAX
    } else {
        COUNT_DEFAULT
    });
    eprintln!(
        "mutation seed {seed} (replay: MUTATION_SEED={seed}), count {}, duration {duration:?}",
        if count == u64::MAX {
            "unbounded".to_string()
        } else {
            count.to_string()
        }
    );

    let corpus = load_corpus();
    assert!(corpus.len() >= 50, "corpus has {} frames", corpus.len());

    let dir = tempfile::tempdir().unwrap();
    // Small limits, so that a frame the broker must refuse is refused cheaply, and small
    // segments, so that the topics mutated CreateTopics and Produce requests create take
    // little disk (a segment reserves 1 MiB ahead of its tail until it has taken more).
    let mut broker = Broker::start_in(
        dir.path(),
        &[
            "--set",
            "socket.request.max.bytes=1048576",
            "--set",
            "queued.max.request.bytes=8388608",
            "--set",
            "message.max.bytes=262144",
            "--set",
            "log.segment.bytes=1048576",
            "--set",
            "request-read-timeout-ms=2000",
            "--set",
            "connections.max.idle.ms=10000",
            "--set",
            "group.initial.rebalance.delay.ms=0",
        ],
    );
    if let Err(why) = healthy(broker.addr) {
        panic!("broker unhealthy before any mutation: {why}");
    }
    let rss_start = broker.rss_bytes();

    let mut recent: Vec<Sent> = Vec::new();
    // Frames a failed run saved (a file, or a directory of them), sent first as they are.
    if let Ok(replay) = std::env::var("MUTATION_REPLAY") {
        for (name, wire) in load_replay(Path::new(&replay)) {
            eprintln!("replaying {name} ({} bytes)", wire.len());
            let prefix = i32::from_be_bytes(wire[..4].try_into().unwrap());
            send_frame(broker.addr, &wire, prefix, &wire[4..], true);
            recent.push(Sent {
                index: 0,
                source: name,
                wire,
            });
            std::thread::sleep(Duration::from_millis(100));
            if !broker.is_running() {
                fail(
                    seed,
                    &recent,
                    &broker,
                    "broker process exited on a replayed frame",
                );
            }
        }
    }

    let mut rng = Rng(seed);
    let mut answered = 0u64;
    let started = Instant::now();
    let mut sent_total = 0u64;
    let mut rss_peak = rss_start.1;
    let mut log_scanned = 0;
    for index in 0..count {
        if duration.is_some_and(|d| started.elapsed() >= d) {
            break;
        }
        let (name, frame) = mutated_frame(&mut rng, &corpus);
        let prefix = size_prefix(&mut rng, frame.len());
        let half_close = rng.chance(75);
        let mut wire = prefix.to_be_bytes().to_vec();
        wire.extend_from_slice(&frame);
        // Sometimes more requests follow on the same connection (true sizes, recorded or
        // mutated): the broker reads ahead and answers in order while the first one is still
        // being handled or refused.
        if rng.chance(10) {
            for _ in 0..1 + rng.below(3) {
                let (_, next) = if rng.chance(50) {
                    rng.pick(&corpus).clone()
                } else {
                    mutated_frame(&mut rng, &corpus)
                };
                wire.extend_from_slice(&(next.len() as i32).to_be_bytes());
                wire.extend_from_slice(&next);
            }
        }

        recent.push(Sent {
            index,
            source: name,
            wire: wire.clone(),
        });
        if recent.len() > RECENT_KEPT {
            recent.remove(0);
        }
        let outcome = send_frame(broker.addr, &wire, prefix, &frame, half_close);
        sent_total += 1;
        if outcome.answered {
            answered += 1;
        }
        // Cheap (a waitpid): a frame that kills the broker is then the last one or close to it.
        if !broker.is_running() {
            // Let the dying process's last stderr lines (an abort message) reach the log.
            std::thread::sleep(Duration::from_millis(200));
            fail(seed, &recent, &broker, "broker process exited");
        }
        if let Some((sent, echoed)) = outcome.wrong_correlation {
            fail(
                seed,
                &recent,
                &broker,
                &format!("answer carries correlation id {echoed}, request had {sent}"),
            );
        }

        if (index + 1) % CHECK_EVERY == 0 {
            if let Err(why) = healthy(broker.addr) {
                fail(
                    seed,
                    &recent,
                    &broker,
                    &format!("health check failed: {why}"),
                );
            }
            let (_, hwm) = broker.rss_bytes();
            rss_peak = hwm;
            if hwm > RSS_HWM_BYTES_MAX {
                fail(
                    seed,
                    &recent,
                    &broker,
                    &format!("RSS high-water {hwm} bytes above {RSS_HWM_BYTES_MAX}"),
                );
            }
            let new_lines = broker.log_from(log_scanned);
            log_scanned += new_lines.len();
            if let Some(line) = new_lines.iter().find(|l| l.contains("panicked")) {
                fail(seed, &recent, &broker, &format!("broker log: {line}"));
            }
            if (index + 1) % (CHECK_EVERY * 100) == 0 {
                eprintln!(
                    "{} frames, {answered} answered, RSS high-water {} MiB, {:?}",
                    index + 1,
                    hwm >> 20,
                    started.elapsed()
                );
            }
        }
    }

    if !broker.is_running() {
        fail(seed, &recent, &broker, "broker process exited");
    }
    if let Err(why) = healthy(broker.addr) {
        fail(
            seed,
            &recent,
            &broker,
            &format!("final health check failed: {why}"),
        );
    }
    if let Err(why) = real_client_works(&broker, dir.path()) {
        fail(
            seed,
            &recent,
            &broker,
            &format!("kcat after the run: {why}"),
        );
    }
    let (rss, hwm) = broker.rss_bytes();
    rss_peak = rss_peak.max(hwm);
    if hwm > RSS_HWM_BYTES_MAX {
        fail(
            seed,
            &recent,
            &broker,
            &format!("RSS high-water {hwm} above bound"),
        );
    }
    if let Some(line) = broker.log().iter().find(|l| l.contains("panicked")) {
        fail(seed, &recent, &broker, &format!("broker log: {line}"));
    }
    eprintln!(
        "mutation seed {seed}: {sent_total} frames in {:?}, {answered} answered; \
         RSS at start {} MiB (high-water {} MiB), at end {} MiB, high-water {} MiB (bound {} MiB); \
         data dir {} MiB",
        started.elapsed(),
        rss_start.0 >> 20,
        rss_start.1 >> 20,
        rss >> 20,
        rss_peak >> 20,
        RSS_HWM_BYTES_MAX >> 20,
        dir_bytes(dir.path()) >> 20
    );
    // What the broker said about the frames: one line per refused frame, grouped by its
    // message with the numbers taken out, shows which checks the mutations reached.
    let mut said: std::collections::BTreeMap<String, usize> = Default::default();
    for line in broker.log() {
        let message = match line.split_once("reason=") {
            Some((_, reason)) => format!("closed: {reason}"),
            None if line.contains(" WARN ") || line.contains(" ERROR ") => line
                .split_once(": ")
                .map_or(line.clone(), |(_, rest)| rest.to_string()),
            None => continue,
        };
        let message: String = message
            .chars()
            .filter(|c| !c.is_ascii_digit())
            .take(100)
            .collect();
        *said.entry(message).or_default() += 1;
    }
    let mut said: Vec<_> = said.into_iter().collect();
    said.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
    for (message, n) in said.iter().take(30) {
        eprintln!("said {n:>7}x {message}");
    }
    assert!(
        answered > sent_total / 10,
        "only {answered} of {sent_total} mutated frames were answered: the mutations are too \
         destructive to reach the decoders"
    );
}
