//! Regenerates the mutation corpus, tests/data/frames/ (format in its README.md).
//!
//! Not part of the normal run (`#[ignore]`): the corpus is committed test data, and
//! re-recording changes it. Run it with
//! `cargo test --test record_frames -- --ignored --nocapture` after a client upgrade or when a
//! new API is served. It starts the broker advertising a recording proxy's address, drives the
//! real clients through the proxy scenario by scenario, and writes every distinct request
//! frame (at most `FRAMES_PER_API_MAX` per scenario, API key and version) to the corpus.

#[path = "support/recorder.rs"]
mod recorder;
mod support;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use recorder::{Recorded, Recorder};
use support::{Broker, run_bounded};

const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

/// Consumers poll the same Fetch or Heartbeat again and again; a few of each are enough seeds.
const FRAMES_PER_API_MAX: usize = 3;

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/frames")
}

fn python(args: &[&str]) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/record_scenarios.py");
    let mut full = vec![script.to_str().unwrap()];
    full.extend_from_slice(args);
    let (status, out, err) = run_bounded("python3", &full, CLIENT_TIMEOUT);
    assert!(
        status.success(),
        "record_scenarios.py {args:?}: {out}\n{err}"
    );
}

fn kcat(args: &[&str]) -> String {
    let (status, out, err) = run_bounded("kcat", args, CLIENT_TIMEOUT);
    assert!(status.success(), "kcat {args:?}: {err}");
    out
}

#[test]
#[ignore = "regenerates tests/data/frames; run by hand"]
fn record_client_frames() {
    let proxy = Recorder::bind();
    let dir = tempfile::tempdir().unwrap();
    let advertised = proxy.addr.to_string();
    let broker = Broker::start_in(
        dir.path(),
        &[
            "--advertised-listener",
            &advertised,
            "--set",
            "num.partitions=2",
        ],
    );
    proxy.forward_to(broker.addr);
    let bootstrap = proxy.addr.to_string();
    let b = bootstrap.as_str();

    proxy.scenario("kp-admin");
    python(&["admin", b, "rec-admin"]);

    proxy.scenario("kcat-meta");
    kcat(&["-b", b, "-L"]);

    let input = dir.path().join("kcat-input.txt");
    let lines: String = (0..20)
        .map(|i| format!("key-{i}:value-{i}-abc\n"))
        .collect();
    std::fs::write(&input, lines).unwrap();
    let input = input.to_str().unwrap();
    for codec in ["none", "gzip", "snappy", "lz4", "zstd"] {
        proxy.scenario(&format!("kcat-produce-{codec}"));
        kcat(&[
            "-P",
            "-b",
            b,
            "-t",
            "rec-kcat",
            "-z",
            codec,
            "-K:",
            "-H",
            "origin=kcat",
            "-l",
            input,
        ]);
    }

    proxy.scenario("kcat-consume");
    let out = kcat(&[
        "-C",
        "-b",
        b,
        "-t",
        "rec-kcat",
        "-o",
        "beginning",
        "-e",
        "-q",
        "-f",
        "%k\n",
    ]);
    assert_eq!(out.lines().count(), 100, "kcat -C read {out:?}");

    proxy.scenario("kcat-group");
    let out = kcat(&[
        "-b",
        b,
        "-G",
        "rec-kcat-group",
        "-o",
        "beginning",
        "-c",
        "10",
        "-q",
        "-f",
        "%k\n",
        "rec-kcat",
    ]);
    assert_eq!(out.lines().count(), 10, "kcat -G read {out:?}");

    // Old message formats (v0 and v1 message sets, Fetch v0-3), which take the broker's legacy
    // up- and down-conversion paths.
    for (fallback, codec) in [("0.9.0.0", "gzip"), ("0.8.2.2", "snappy")] {
        let label = format!("kcat-legacy-{}", fallback.replace('.', ""));
        proxy.scenario(&label);
        let legacy = [
            "-X",
            "api.version.request=false",
            "-X",
            &format!("broker.version.fallback={fallback}"),
        ];
        let mut produce = vec!["-P", "-b", b, "-t", "rec-legacy", "-z", codec, "-K:"];
        produce.extend_from_slice(&legacy);
        produce.extend_from_slice(&["-l", input]);
        kcat(&produce);
        let mut consume = vec!["-C", "-b", b, "-t", "rec-legacy", "-o", "beginning", "-e"];
        consume.extend_from_slice(&legacy);
        consume.extend_from_slice(&["-q", "-f", "%k\n"]);
        kcat(&consume);
    }

    proxy.scenario("kp-txn");
    python(&["txn", b, "rec-txn", "rec-txid", "rec-txn-group"]);

    proxy.scenario("ck-client");
    python(&["confluent", b, "rec-ck", "rec-ck-group"]);

    // Let the last client's closing requests arrive.
    std::thread::sleep(Duration::from_millis(300));
    let written = write_corpus(&proxy.frames(), &corpus_dir());
    eprintln!("wrote {written} frames to {}", corpus_dir().display());
    assert!(written > 50, "too few frames recorded: {written}");
    drop(broker);
}

/// Writes distinct frames as `<scenario>-<seq>-k<key>v<version>.bin`, replacing old `.bin`
/// files. Two frames that differ only in their correlation id count as the same.
fn write_corpus(frames: &[Recorded], dir: &Path) -> usize {
    std::fs::create_dir_all(dir).unwrap();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "bin") {
            std::fs::remove_file(path).unwrap();
        }
    }
    let mut seen = HashSet::new();
    let mut per_api: BTreeMap<(String, i16, i16), usize> = BTreeMap::new();
    let mut seq: BTreeMap<String, usize> = BTreeMap::new();
    let mut written = 0;
    for recorded in frames {
        let frame = &recorded.frame;
        if frame.len() < 8 {
            continue;
        }
        let key = i16::from_be_bytes([frame[0], frame[1]]);
        let version = i16::from_be_bytes([frame[2], frame[3]]);
        let mut masked = frame.clone();
        masked[4..8].fill(0);
        if !seen.insert(masked) {
            continue;
        }
        let count = per_api
            .entry((recorded.scenario.clone(), key, version))
            .or_default();
        if *count >= FRAMES_PER_API_MAX {
            continue;
        }
        *count += 1;
        let n = seq.entry(recorded.scenario.clone()).or_default();
        let name = format!("{}-{:03}-k{key}v{version}.bin", recorded.scenario, *n);
        *n += 1;
        std::fs::write(dir.join(name), frame).unwrap();
        written += 1;
    }
    written
}
