//! Log compaction against the real binary: a confluent-kafka producer and consumer see only
//! the latest value per key at the offsets it was produced at, tombstones gone after
//! `delete.retention.ms`; keyless records refused per record (KIP-467); and a broker killed
//! with SIGKILL while it cleans comes back with a consistent log.

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, CreateTopicsRequest, CreateTopicsResponse, FetchRequest, FetchResponse, ProduceRequest,
    ProduceResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use ringbroker::storage::batch::BatchHeader;
use ringbroker::storage::cleaner::records;
use ringbroker::storage::compression::Codec;
use support::{Broker, RawClient, run_bounded};

const INVALID_RECORD: i16 = 87;
/// A cleaner that looks every 100 ms.
const FAST_CLEANER: &str = "log.cleaner.backoff.ms=100";

fn text(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

fn create_compacted(client: &mut RawClient, topic: &str, configs: &[(&str, &str)]) {
    let configs = [("cleanup.policy", "compact")]
        .iter()
        .chain(configs)
        .map(|(k, v)| {
            CreatableTopicConfig::default()
                .with_name(text(k))
                .with_value(Some(text(v)))
        })
        .collect();
    let request = CreateTopicsRequest::default()
        .with_timeout_ms(10_000)
        .with_topics(vec![
            CreatableTopic::default()
                .with_name(TopicName(text(topic)))
                .with_num_partitions(1)
                .with_replication_factor(1)
                .with_configs(configs),
        ]);
    let response: CreateTopicsResponse = client.call(ApiKey::CreateTopics, 5, &request);
    assert_eq!(response.topics[0].error_code, 0, "{:?}", response.topics[0]);
}

fn produce(client: &mut RawClient, version: i16, topic: &str, batch: Vec<u8>) -> ProduceResponse {
    let request = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(TopicName(text(topic)))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(Bytes::from(batch))),
                ]),
        ]);
    client.call(ApiKey::Produce, version, &request)
}

fn batch(records: &[records::KeyValue<'_>], codec: Codec) -> Vec<u8> {
    records::build_keyed_batch(records, 1_700_000_000_000, codec, 0, (-1, -1, -1))
}

#[test]
fn a_real_client_sees_the_latest_value_per_key_at_its_offset() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start_in(
        dir.path(),
        &["--set", FAST_CLEANER, "--set", "metrics-listen=127.0.0.1:0"],
    );
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/compaction.py");
    let bootstrap = broker.bootstrap();
    let (status, stdout, stderr) = run_bounded(
        "python3",
        &[script, &bootstrap, "compacted"],
        Duration::from_secs(150),
    );
    let log = broker.log();
    assert!(
        status.success(),
        "{stderr}\nbroker log tail:\n{}",
        log[log.len().saturating_sub(30)..].join("\n")
    );
    eprintln!("{}", stdout.trim());
    assert!(
        log.iter().any(|l| l.contains("compacted")),
        "the cleaner logged its cleanings"
    );
    let metrics_addr = log
        .iter()
        .find_map(|l| {
            let at = l.find("metrics_listen=")? + "metrics_listen=".len();
            Some(l[at..].split_whitespace().next()?.to_string())
        })
        .expect("the metrics address is logged");
    let body = http_get(&metrics_addr, "/metrics");
    let sum = |name: &str| -> f64 {
        body.lines()
            .filter(|l| l.starts_with(name) && !l.starts_with('#'))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    assert!(sum("ringbroker_cleanings_total{") >= 1.0, "{body}");
    assert!(
        sum("ringbroker_cleaner_bytes_read_total{")
            > sum("ringbroker_cleaner_bytes_written_total{")
    );
    assert!(
        body.contains("ringbroker_cleaner_dirty_ratio{shard="),
        "{body}"
    );
}

fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

#[test]
fn keyless_records_are_refused_one_by_one() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start_in(dir.path(), &[]);
    let mut client = RawClient::connect(broker.addr);
    create_compacted(&mut client, "keyed-only", &[]);
    for codec in [Codec::None, Codec::Zstd] {
        let mixed = batch(
            &[
                (Some(b"a"), Some(b"1")),
                (None, Some(b"2")),
                (Some(b"b"), None),
                (None, Some(b"4")),
            ],
            codec,
        );
        let response = produce(&mut client, 8, "keyed-only", mixed.clone());
        let partition = &response.responses[0].partition_responses[0];
        assert_eq!(partition.error_code, INVALID_RECORD);
        let indexes: Vec<i32> = partition
            .record_errors
            .iter()
            .map(|e| e.batch_index)
            .collect();
        assert_eq!(indexes, [1, 3], "{codec:?}");
        let message = partition.record_errors[0]
            .batch_index_error_message
            .as_ref()
            .unwrap();
        assert!(message.contains("without key"), "{message}");
        // Before v8 the partition is refused all the same, without the per-record list.
        let response = produce(&mut client, 7, "keyed-only", mixed);
        let partition = &response.responses[0].partition_responses[0];
        assert_eq!(partition.error_code, INVALID_RECORD);
        assert!(partition.record_errors.is_empty());
    }
    let keyed = batch(&[(Some(b"a"), Some(b"1")), (Some(b"b"), None)], Codec::Lz4);
    let response = produce(&mut client, 9, "keyed-only", keyed);
    let partition = &response.responses[0].partition_responses[0];
    assert_eq!(
        (partition.error_code, partition.base_offset),
        (0, 0),
        "nothing of the refused batches was written"
    );
}

/// Offsets, keys and values of partition 0 of `topic`, read with Fetch from offset 0.
fn fetch_all(client: &mut RawClient, topic: &str) -> Vec<(i64, Vec<u8>, Option<Vec<u8>>)> {
    let mut out = Vec::new();
    let mut offset = 0i64;
    loop {
        let request = FetchRequest::default()
            .with_max_wait_ms(0)
            .with_min_bytes(1)
            .with_max_bytes(8 << 20)
            .with_topics(vec![
                FetchTopic::default()
                    .with_topic(TopicName(text(topic)))
                    .with_partitions(vec![
                        FetchPartition::default()
                            .with_partition(0)
                            .with_fetch_offset(offset)
                            .with_partition_max_bytes(8 << 20),
                    ]),
            ]);
        let response: FetchResponse = client.call(ApiKey::Fetch, 11, &request);
        let partition = &response.responses[0].partitions[0];
        assert_eq!(partition.error_code, 0);
        let bytes = partition.records.clone().unwrap_or_default();
        if bytes.is_empty() {
            return out;
        }
        let mut at = 0;
        while let Some(h) = BatchHeader::view(&bytes[at..]) {
            let size = h.size_bytes() as usize;
            if at + size > bytes.len() {
                break;
            }
            let whole = &bytes[at..at + size];
            let section = records::section(whole, 1 << 26).unwrap();
            for r in records::parse(&section, h.records_count.get()).unwrap() {
                let o = h.base_offset.get() + i64::from(r.offset_delta);
                if o >= offset {
                    out.push((o, r.key.unwrap().to_vec(), r.value.map(<[u8]>::to_vec)));
                }
            }
            offset = h.last_offset() + 1;
            at += size;
        }
        if offset >= partition.high_watermark {
            return out;
        }
    }
}

/// SIGKILL at seeded moments while the cleaner rewrites a compacted log: every restart finds
/// each record that a full cleaning keeps, nothing that was never written, growing offsets, and
/// no cleaned file or swap manifest left behind.
#[test]
fn sigkill_while_cleaning_leaves_the_old_set_or_the_new_one() {
    let seed: u64 = std::env::var("COMPACTION_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("COMPACTION_KILL_SEED={seed}");
    let mut rng = seed;
    let mut next = move |bound: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % bound
    };
    let dir = tempfile::tempdir().unwrap();
    // The cleaner stays off while the log is written, so the kills land in a cleaning of
    // everything written, not in a first small one.
    let broker = Broker::start_in(dir.path(), &["--set", "log.cleaner.enable=false"]);
    let mut client = RawClient::connect(broker.addr);
    create_compacted(
        &mut client,
        "killed",
        &[
            ("segment.bytes", "65536"),
            ("min.cleanable.dirty.ratio", "0.01"),
        ],
    );
    let mut written = Vec::new();
    let value = vec![b'x'; 400];
    for i in 0..400u32 {
        let keys: Vec<String> = (0..10)
            .map(|j| format!("key-{}", (i * 10 + j) % 97))
            .collect();
        let recs: Vec<records::KeyValue<'_>> = keys
            .iter()
            .map(|k| (Some(k.as_bytes()), Some(&value[..])))
            .collect();
        let codec = if i % 3 == 0 { Codec::Gzip } else { Codec::None };
        let response = produce(&mut client, 9, "killed", batch(&recs, codec));
        let partition = &response.responses[0].partition_responses[0];
        assert_eq!(partition.error_code, 0);
        for (j, key) in keys.into_iter().enumerate() {
            written.push((partition.base_offset + j as i64, key.into_bytes()));
        }
    }
    let before = fetch_all(&mut client, "killed");
    assert_eq!(before.len(), written.len());
    drop(client);
    broker.stop();
    // What every cleaning must keep: the latest record of each key.
    let mut latest = std::collections::HashMap::new();
    for (offset, key) in &written {
        latest.insert(key.clone(), *offset);
    }
    let mut kills = 0;
    let mut interrupted = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    // Throttled to 4 MB/s (2 MB/s for each of the two shards), a cleaning of the 1.7 MB log
    // builds its map in about 0.9 s and rewrites and swaps segments in the next 0.9 s.
    let slow = [
        "--set",
        FAST_CLEANER,
        "--set",
        "log.cleaner.io.max.bytes.per.second=4000000",
    ];
    for round in 0..4 {
        let broker = Broker::start_in(dir.path(), &slow);
        // Let the cleaner get going, then kill it somewhere in its work.
        std::thread::sleep(Duration::from_millis(600 + next(1400)));
        broker.stop_with("KILL");
        kills += 1;
        let broker = Broker::start_in(dir.path(), &["--set", "log.cleaner.enable=false"]);
        let mut client = RawClient::connect(broker.addr);
        let after = fetch_all(&mut client, "killed");
        interrupted += broker
            .log()
            .iter()
            .filter(|l| {
                l.contains("compaction swap interrupted") || l.contains("unfinished cleaned")
            })
            .count();
        assert!(
            after.windows(2).all(|w| w[0].0 < w[1].0),
            "round {round}: offsets grow (seed {seed})"
        );
        for record in &after {
            assert!(
                before.contains(record),
                "round {round}: nothing new (seed {seed})"
            );
        }
        for (key, offset) in &latest {
            assert!(
                after.iter().any(|(o, k, _)| o == offset && k == key),
                "round {round}: the latest record of {} is kept (seed {seed})",
                String::from_utf8_lossy(key)
            );
        }
        let leftovers: Vec<String> = std::fs::read_dir(dir.path().join("killed-0"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".cleaned") || n.ends_with(".swap"))
            .collect();
        assert!(
            leftovers.is_empty(),
            "round {round}: {leftovers:?} (seed {seed})"
        );
        drop(client);
        broker.stop();
        if Instant::now() > deadline {
            break;
        }
    }
    eprintln!("{kills} kills, {interrupted} interrupted swaps or cleaned files found");
    // Finally let a cleaning finish: only the latest records of closed segments are left.
    let broker = Broker::start_in(dir.path(), &["--set", FAST_CLEANER]);
    let mut client = RawClient::connect(broker.addr);
    let started = Instant::now();
    loop {
        let after = fetch_all(&mut client, "killed");
        if after.len() < before.len() / 4 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "not compacted after {kills} kills"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
