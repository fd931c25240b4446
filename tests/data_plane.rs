//! The data plane as real Kafka clients and raw frames see it: Produce, Fetch (with long
//! poll), ListOffsets, DeleteRecords and LogAppendTime topics.
//!
//! - confluent-kafka, kafka-python, kcat and the `rdkafka` crate each produce 1,000,000
//!   messages over a 12-partition topic with acks=all and read them all back (every message
//!   once, byte-identical, at its offset, in per-partition order), then again after a graceful
//!   restart on the same data directory.
//! - rdkafka with each compression codec: values read back identical, batches served as
//!   produced (compressed).
//! - Malformed produce and fetch requests get Kafka's error codes and change nothing.
//! - ListOffsets, DeleteRecords, LogAppendTime and long poll.
//!
//! No consumer groups exist yet: every consumer assigns its partitions with explicit offsets
//! and never commits. Every wait is bounded.

mod support;

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use kafka_protocol::messages::delete_records_request::{
    DeleteRecordsPartition, DeleteRecordsTopic,
};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::fetch_response::PartitionData;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::list_offsets_response::ListOffsetsPartitionResponse;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::produce_response::PartitionProduceResponse;
use kafka_protocol::messages::{
    ApiKey, BrokerId, DeleteRecordsRequest, DeleteRecordsResponse, FetchRequest, FetchResponse,
    ListOffsetsRequest, ListOffsetsResponse, ProduceRequest, ProduceResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Message, Timestamp};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use ringbroker::storage::batch::{BatchHeader, build_test_batch, compute_crc};
use support::{Broker, RawClient, run_bounded};

/// Messages in the client runs.
const MILLION: usize = 1_000_000;
/// Partitions of the client runs' topic.
const PARTITIONS: i32 = 12;
/// Bound on one external client program.
const CLIENT_BOUND: Duration = Duration::from_secs(600);

// Kafka error codes.
const NONE: i16 = 0;
const OFFSET_OUT_OF_RANGE: i16 = 1;
const CORRUPT_MESSAGE: i16 = 2;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const MESSAGE_TOO_LARGE: i16 = 10;
const INVALID_REQUIRED_ACKS: i16 = 21;
const INVALID_RECORD: i16 = 87;

// ---------------------------------------------------------------------------------------------
// Helpers: topics, the message stream, rdkafka producer and checking consumer.

fn block<F: std::future::Future>(future: F) -> F::Output {
    futures::executor::block_on(future)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Creates a topic through librdkafka's admin client; panics unless it is created.
fn create_topic(broker: &Broker, name: &str, partitions: i32, configs: &[(&str, &str)]) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .create()
        .expect("admin client");
    let mut topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    for (key, value) in configs {
        topic = topic.set(key, value);
    }
    let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(10)));
    let results = block(admin.create_topics(&[topic], &options)).expect("CreateTopics answers");
    assert_eq!(results[0], Ok(name.to_string()), "creating {name}");
}

/// (low, high) watermarks of every partition, as librdkafka reads them.
fn watermarks(broker: &Broker, topic: &str, partitions: i32) -> Vec<(i64, i64)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("group.id", "watermarks")
        .create()
        .unwrap();
    (0..partitions)
        .map(|p| {
            consumer
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .expect("watermarks")
        })
        .collect()
}

/// Number of messages partition `p` holds when `count` are spread round-robin.
fn expected_in(p: i32, partitions: i32, count: usize) -> i64 {
    let (p, n) = (p as usize, partitions as usize);
    (count / n + usize::from(p < count % n)) as i64
}

const PATTERN: [u8; 768] = {
    let mut out = [0u8; 768];
    let mut i = 0;
    while i < 768 {
        out[i] = (i % 256) as u8;
        i += 1;
    }
    out
};

fn key_of(p: i32, seq: i64) -> Vec<u8> {
    format!("{p}-{seq}").into_bytes()
}

/// A binary value that depends on (p, seq): every byte value occurs, lengths vary.
fn value_of(p: i32, seq: i64) -> Vec<u8> {
    let start = ((seq * 31 + p as i64 * 7) % 256) as usize;
    let length = 16 + ((seq * 13 + p as i64) % 48) as usize;
    let mut value = format!("{p:02}:{seq:08}|").into_bytes();
    value.extend_from_slice(&PATTERN[start..start + length]);
    value
}

/// Counts acknowledgements and keeps the first errors.
#[derive(Default)]
struct Acks {
    acked: AtomicU64,
    errors: Mutex<Vec<String>>,
}

impl ClientContext for Acks {}

impl ProducerContext for Acks {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => {
                self.acked.fetch_add(1, Ordering::Relaxed);
            }
            Err((err, msg)) => {
                let mut errors = self.errors.lock().unwrap();
                if errors.len() < 10 {
                    errors.push(format!("p{} {:?}: {err}", msg.partition(), msg.key()));
                }
            }
        }
    }
}

/// Produces `count` messages round-robin over `partitions` with acks=all and `extra` settings;
/// panics unless every one is acknowledged.
fn rdkafka_produce(
    broker: &Broker,
    topic: &str,
    partitions: i32,
    count: usize,
    extra: &[(&str, &str)],
) -> Duration {
    let started = Instant::now();
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", broker.bootstrap())
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "500000")
        .set("message.timeout.ms", "120000");
    for (key, value) in extra {
        config.set(*key, *value);
    }
    let producer: ThreadedProducer<Acks> = config.create_with_context(Acks::default()).unwrap();
    for i in 0..count {
        let p = (i % partitions as usize) as i32;
        let seq = (i / partitions as usize) as i64;
        let (key, value) = (key_of(p, seq), value_of(p, seq));
        let mut record = BaseRecord::to(topic).partition(p).key(&key).payload(&value);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((err, returned)) => {
                    assert!(
                        matches!(
                            err.rdkafka_error_code(),
                            Some(rdkafka::types::RDKafkaErrorCode::QueueFull)
                        ),
                        "send failed: {err}"
                    );
                    record = returned;
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
    }
    producer
        .flush(Duration::from_secs(180))
        .expect("everything is delivered within 180 s");
    let context = producer.context();
    let errors = context.errors.lock().unwrap().clone();
    assert!(errors.is_empty(), "delivery errors: {errors:?}");
    assert_eq!(context.acked.load(Ordering::Relaxed), count as u64);
    started.elapsed()
}

/// Reads every partition from offset 0 with a BaseConsumer and checks the stream: every message
/// once, at offset == seq, byte-identical, in order, and nothing after it.
fn rdkafka_consume_checked(
    broker: &Broker,
    topic: &str,
    partitions: i32,
    count: usize,
) -> Duration {
    let started = Instant::now();
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("group.id", "data-plane-check")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "error")
        .create()
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    for p in 0..partitions {
        assignment
            .add_partition_offset(topic, p, Offset::Offset(0))
            .unwrap();
    }
    consumer.assign(&assignment).unwrap();
    let expected: Vec<i64> = (0..partitions)
        .map(|p| expected_in(p, partitions, count))
        .collect();
    let mut next = vec![0i64; partitions as usize];
    let mut total = 0usize;
    let mut last_progress = Instant::now();
    while total < count {
        match consumer.poll(Duration::from_millis(500)) {
            None => {
                assert!(
                    last_progress.elapsed() < Duration::from_secs(60),
                    "no progress for 60 s: consumed {next:?} of {expected:?}"
                );
            }
            Some(Err(err)) => panic!("consume error: {err}"),
            Some(Ok(msg)) => {
                let p = msg.partition();
                let seq = next[p as usize];
                assert!(
                    seq < expected[p as usize],
                    "partition {p}: extra message at offset {}",
                    msg.offset()
                );
                assert_eq!(msg.offset(), seq, "partition {p}: offset");
                assert_eq!(msg.key(), Some(&key_of(p, seq)[..]), "partition {p} key");
                assert!(
                    msg.payload() == Some(&value_of(p, seq)[..]),
                    "partition {p} offset {seq}: value differs: {:?}",
                    msg.payload()
                );
                next[p as usize] += 1;
                total += 1;
                last_progress = Instant::now();
            }
        }
    }
    assert_eq!(next, expected);
    assert_eq!(
        watermarks(broker, topic, partitions),
        expected.iter().map(|&n| (0, n)).collect::<Vec<_>>(),
        "nothing beyond the stream"
    );
    started.elapsed()
}

// ---------------------------------------------------------------------------------------------
// One million messages per client, before and after a graceful restart.

/// Runs the Python client's `mode` and returns its reported seconds.
fn python(client: &str, mode: &str, broker: &Broker, topic: &str) -> f64 {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/clients/produce_consume.py"
    );
    let count = MILLION.to_string();
    let partitions = PARTITIONS.to_string();
    let bootstrap = broker.bootstrap();
    let (status, stdout, stderr) = run_bounded(
        "python3",
        &[script, client, mode, &bootstrap, topic, &partitions, &count],
        CLIENT_BOUND,
    );
    assert!(
        status.success(),
        "{client} {mode} failed ({status}): {stderr}\nbroker log tail:\n{}",
        log_tail(broker)
    );
    let out: serde_json::Value = serde_json::from_str(stdout.trim()).expect("JSON stats");
    let seconds = out["seconds"].as_f64().unwrap();
    eprintln!("{client} {mode} {MILLION} messages: {seconds:.1} s");
    seconds
}

fn log_tail(broker: &Broker) -> String {
    let log = broker.log();
    log[log.len().saturating_sub(30)..].join("\n")
}

fn python_million(client: &str) {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start_in(dir.path(), &[]);
    let topic = format!("million-{client}");
    create_topic(&broker, &topic, PARTITIONS, &[]);
    python(client, "produce", &broker, &topic);
    let expected: Vec<(i64, i64)> = (0..PARTITIONS)
        .map(|p| (0, expected_in(p, PARTITIONS, MILLION)))
        .collect();
    assert_eq!(watermarks(&broker, &topic, PARTITIONS), expected);
    python(client, "consume", &broker, &topic);
    let status = broker.stop();
    assert!(status.success(), "graceful stop exits 0, got {status}");
    let broker = Broker::start_in(dir.path(), &[]);
    assert_eq!(watermarks(&broker, &topic, PARTITIONS), expected);
    python(client, "consume", &broker, &topic);
    assert!(broker.stop().success());
}

#[test]
fn confluent_kafka_million_messages_survive_restart() {
    python_million("confluent");
}

#[test]
fn kafka_python_million_messages_survive_restart() {
    python_million("kafka-python");
}

#[test]
fn rdkafka_million_messages_survive_restart() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start_in(dir.path(), &[]);
    create_topic(&broker, "million-rdkafka", PARTITIONS, &[]);
    let took = rdkafka_produce(&broker, "million-rdkafka", PARTITIONS, MILLION, &[]);
    eprintln!("rdkafka produce {MILLION}: {took:?}");
    let took = rdkafka_consume_checked(&broker, "million-rdkafka", PARTITIONS, MILLION);
    eprintln!("rdkafka consume {MILLION}: {took:?}");
    assert!(broker.stop().success());
    let broker = Broker::start_in(dir.path(), &[]);
    let took = rdkafka_consume_checked(&broker, "million-rdkafka", PARTITIONS, MILLION);
    eprintln!("rdkafka consume {MILLION} after restart: {took:?}");
    assert!(broker.stop().success());
}

/// kcat's text stream: key "p-seq", a printable value without spaces or newlines.
fn kcat_value(p: i32, seq: i64) -> String {
    const ALNUM: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let start = ((seq * 31 + p as i64 * 7) % 62) as usize;
    let length = 8 + ((seq * 13 + p as i64) % 48) as usize;
    let tail: String = (start..start + length)
        .map(|i| ALNUM[i % ALNUM.len()] as char)
        .collect();
    format!("{p:02}:{seq:08}|{tail}")
}

/// Consumes the whole topic with kcat and checks the stream.
fn kcat_consume_checked(broker: &Broker, topic: &str) -> Duration {
    let started = Instant::now();
    let bootstrap = broker.bootstrap();
    let (status, stdout, stderr) = run_bounded(
        "kcat",
        &[
            "-C",
            "-b",
            &bootstrap,
            "-t",
            topic,
            "-o",
            "beginning",
            "-e",
            "-q",
            "-f",
            "%p %o %k %s\n",
        ],
        CLIENT_BOUND,
    );
    assert!(status.success(), "kcat -C failed ({status}): {stderr}");
    let mut next = vec![0i64; PARTITIONS as usize];
    for line in stdout.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        assert_eq!(fields.len(), 4, "unexpected kcat line {line:?}");
        let p: i32 = fields[0].parse().unwrap();
        let offset: i64 = fields[1].parse().unwrap();
        let seq = next[p as usize];
        assert_eq!(offset, seq, "partition {p}: offset ({line})");
        assert_eq!(fields[2], format!("{p}-{seq}"), "partition {p}: key");
        assert_eq!(
            fields[3],
            kcat_value(p, seq),
            "partition {p} offset {seq}: value"
        );
        next[p as usize] += 1;
    }
    let expected: Vec<i64> = (0..PARTITIONS)
        .map(|p| expected_in(p, PARTITIONS, MILLION))
        .collect();
    assert_eq!(next, expected, "messages per partition");
    started.elapsed()
}

#[test]
fn kcat_million_messages_survive_restart() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = tempfile::tempdir().unwrap();
    let broker = Broker::start_in(dir.path(), &[]);
    let topic = "million-kcat";
    create_topic(&broker, topic, PARTITIONS, &[]);

    // One input file and one kcat producer per partition, all at once.
    let mut files = Vec::new();
    for p in 0..PARTITIONS {
        let mut text = String::new();
        for seq in 0..expected_in(p, PARTITIONS, MILLION) {
            text.push_str(&format!("{p}-{seq}:{}\n", kcat_value(p, seq)));
        }
        let path = inputs.path().join(format!("p{p}.txt"));
        std::fs::write(&path, text).unwrap();
        files.push(path);
    }
    let started = Instant::now();
    let producers: Vec<_> = files
        .into_iter()
        .enumerate()
        .map(|(p, path)| {
            let bootstrap = broker.bootstrap();
            std::thread::spawn(move || {
                let partition = p.to_string();
                let path = path.to_str().unwrap().to_string();
                run_bounded(
                    "kcat",
                    &[
                        "-P", "-b", &bootstrap, "-t", topic, "-p", &partition, "-K:", "-X",
                        "acks=all", "-l", &path,
                    ],
                    CLIENT_BOUND,
                )
            })
        })
        .collect();
    for (p, producer) in producers.into_iter().enumerate() {
        let (status, _, stderr) = producer.join().unwrap();
        assert!(status.success(), "kcat -P partition {p} failed: {stderr}");
    }
    eprintln!("kcat produce {MILLION}: {:?}", started.elapsed());
    let expected: Vec<(i64, i64)> = (0..PARTITIONS)
        .map(|p| (0, expected_in(p, PARTITIONS, MILLION)))
        .collect();
    assert_eq!(watermarks(&broker, topic, PARTITIONS), expected);
    eprintln!(
        "kcat consume {MILLION}: {:?}",
        kcat_consume_checked(&broker, topic)
    );
    assert!(broker.stop().success());
    let broker = Broker::start_in(dir.path(), &[]);
    assert_eq!(watermarks(&broker, topic, PARTITIONS), expected);
    eprintln!(
        "kcat consume {MILLION} after restart: {:?}",
        kcat_consume_checked(&broker, topic)
    );
    assert!(broker.stop().success());
}

// ---------------------------------------------------------------------------------------------
// Compression: stored and served as produced.

/// Checks that `topic`'s partition 0 is stored and served with the producer's codec: every
/// batch is compressed with it, except small batches a producer chose to send uncompressed
/// (librdkafka does so when compression would not shrink them), which must stay a minority.
fn assert_served_compressed(broker: &Broker, topic: &str, codec: &str, attribute: i16) {
    let mut client = RawClient::connect(broker.addr);
    let data = fetch(&mut client, topic, 0, 0, 0, 1, 1 << 20);
    assert_eq!(data.error_code, NONE);
    let records = data.records.expect("records");
    let headers = batch_headers(&records);
    assert!(!headers.is_empty());
    let (mut compressed, mut plain) = (0, 0);
    for (base, count, attributes) in &headers {
        match attributes & 0x7 {
            0 => plain += count,
            a if a == attribute => compressed += count,
            _ => panic!("{codec}: batch at {base} has attributes {attributes:#x}"),
        }
    }
    if codec == "lz4" && compressed == 0 {
        // librdkafka enables LZ4 only when the broker advertises FindCoordinator (its proxy for
        // "Kafka >= 0.8.2", rdkafka_feature.c); until consumer groups exist it sends plain.
        eprintln!("lz4: librdkafka sent {plain} records uncompressed (no FindCoordinator)");
        return;
    }
    assert!(
        compressed > plain,
        "{codec}: {compressed} records in compressed batches, {plain} in uncompressed ones"
    );
}

fn compression_round_trip(codec: &str, attribute: i16) {
    const COUNT: usize = 20_000;
    const P: i32 = 3;
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start_in(dir.path(), &[]);
    let topic = format!("compressed-{codec}");
    create_topic(&broker, &topic, P, &[]);
    rdkafka_produce(&broker, &topic, P, COUNT, &[("compression.type", codec)]);
    rdkafka_consume_checked(&broker, &topic, P, COUNT);
    assert_served_compressed(&broker, &topic, codec, attribute);
    // The same after a restart, read from disk.
    assert!(broker.stop().success());
    let broker = Broker::start_in(dir.path(), &[]);
    rdkafka_consume_checked(&broker, &topic, P, COUNT);
    assert_served_compressed(&broker, &topic, codec, attribute);
}

#[test]
fn rdkafka_gzip_round_trip() {
    compression_round_trip("gzip", 1);
}

#[test]
fn rdkafka_snappy_round_trip() {
    compression_round_trip("snappy", 2);
}

#[test]
fn rdkafka_lz4_round_trip() {
    compression_round_trip("lz4", 3);
}

/// Needs the `rdkafka` dev-dependency built with its `zstd` feature; without it librdkafka
/// refuses `compression.type=zstd` ("libzstd not available at build time").
#[test]
fn rdkafka_zstd_round_trip() {
    compression_round_trip("zstd", 4);
}

/// zstd through confluent-kafka's librdkafka (built with zstd), whatever the crate's features.
#[test]
fn confluent_kafka_zstd_round_trip() {
    const COUNT: &str = "20000";
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start_in(dir.path(), &[]);
    create_topic(&broker, "compressed-zstd", 3, &[]);
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/clients/produce_consume.py"
    );
    let bootstrap = broker.bootstrap();
    for mode in ["produce", "consume"] {
        let (status, _, stderr) = run_bounded(
            "python3",
            &[
                script,
                "confluent",
                mode,
                &bootstrap,
                "compressed-zstd",
                "3",
                COUNT,
                "zstd",
            ],
            CLIENT_BOUND,
        );
        assert!(
            status.success(),
            "confluent {mode} with zstd failed: {stderr}"
        );
    }
    assert_served_compressed(&broker, "compressed-zstd", "zstd", 4);
}

// ---------------------------------------------------------------------------------------------
// Raw protocol helpers.

fn name(topic: &str) -> TopicName {
    TopicName(StrBytes::from_string(topic.to_string()))
}

fn produce(
    client: &mut RawClient,
    topic: &str,
    partition: i32,
    acks: i16,
    records: Option<Vec<u8>>,
) -> PartitionProduceResponse {
    let request = ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(name(topic))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(partition)
                        .with_records(records.map(Bytes::from)),
                ]),
        ]);
    let response: ProduceResponse = client.call(ApiKey::Produce, 9, &request);
    assert_eq!(response.responses.len(), 1);
    assert_eq!(response.responses[0].partition_responses.len(), 1);
    response.responses[0].partition_responses[0].clone()
}

fn fetch_request(
    topic: &str,
    partition: i32,
    offset: i64,
    max_wait_ms: i32,
    min_bytes: i32,
    max_bytes: i32,
) -> FetchRequest {
    FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(min_bytes)
        .with_max_bytes(max_bytes)
        .with_isolation_level(0)
        .with_session_id(0)
        .with_session_epoch(-1)
        .with_topics(vec![
            FetchTopic::default()
                .with_topic(name(topic))
                .with_partitions(vec![
                    FetchPartition::default()
                        .with_partition(partition)
                        .with_current_leader_epoch(-1)
                        .with_fetch_offset(offset)
                        .with_log_start_offset(-1)
                        .with_partition_max_bytes(max_bytes),
                ]),
        ])
}

fn fetch(
    client: &mut RawClient,
    topic: &str,
    partition: i32,
    offset: i64,
    max_wait_ms: i32,
    min_bytes: i32,
    max_bytes: i32,
) -> PartitionData {
    let request = fetch_request(topic, partition, offset, max_wait_ms, min_bytes, max_bytes);
    let response: FetchResponse = client.call(ApiKey::Fetch, 12, &request);
    assert_eq!(response.error_code, NONE, "fetch top-level error");
    response.responses[0].partitions[0].clone()
}

/// (base offset, records count, attributes) of every whole batch in a records field.
fn batch_headers(records: &[u8]) -> Vec<(i64, i32, i16)> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(header) = BatchHeader::view(&records[at..]) {
        let size = header.size_bytes() as usize;
        if at + size > records.len() {
            break; // a partial batch at the end is allowed
        }
        out.push((
            header.base_offset.get(),
            header.records_count.get(),
            header.attributes.get(),
        ));
        at += size;
    }
    out
}

/// ListOffsets v7 for one partition and `timestamp` (-1 latest, -2 earliest, -3 max timestamp).
fn list_offset(
    client: &mut RawClient,
    topic: &str,
    partition: i32,
    timestamp: i64,
) -> ListOffsetsPartitionResponse {
    let request = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_isolation_level(0)
        .with_topics(vec![
            ListOffsetsTopic::default()
                .with_name(name(topic))
                .with_partitions(vec![
                    ListOffsetsPartition::default()
                        .with_partition_index(partition)
                        .with_current_leader_epoch(-1)
                        .with_timestamp(timestamp),
                ]),
        ]);
    let response: ListOffsetsResponse = client.call(ApiKey::ListOffsets, 7, &request);
    response.topics[0].partitions[0].clone()
}

fn latest(client: &mut RawClient, topic: &str, partition: i32) -> i64 {
    let answer = list_offset(client, topic, partition, -1);
    assert_eq!(answer.error_code, NONE);
    answer.offset
}

fn earliest(client: &mut RawClient, topic: &str, partition: i32) -> i64 {
    let answer = list_offset(client, topic, partition, -2);
    assert_eq!(answer.error_code, NONE);
    answer.offset
}

/// DeleteRecords v2: (error code, low watermark).
fn delete_records(client: &mut RawClient, topic: &str, partition: i32, offset: i64) -> (i16, i64) {
    let request = DeleteRecordsRequest::default()
        .with_timeout_ms(10_000)
        .with_topics(vec![
            DeleteRecordsTopic::default()
                .with_name(name(topic))
                .with_partitions(vec![
                    DeleteRecordsPartition::default()
                        .with_partition_index(partition)
                        .with_offset(offset),
                ]),
        ]);
    let response: DeleteRecordsResponse = client.call(ApiKey::DeleteRecords, 2, &request);
    let p = &response.topics[0].partitions[0];
    (p.error_code, p.low_watermark)
}

// ---------------------------------------------------------------------------------------------
// Malformed requests.

#[test]
fn malformed_produce_and_fetch_get_kafka_codes_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start_in(dir.path(), &["--set", "auto.create.topics.enable=false"]);
    create_topic(&broker, "strict", 1, &[("max.message.bytes", "2000")]);
    let mut client = RawClient::connect(broker.addr);

    let first = build_test_batch(3, 20, now_ms(), 1);
    let ok = produce(&mut client, "strict", 0, -1, Some(first.clone()));
    assert_eq!((ok.error_code, ok.base_offset), (NONE, 0), "{ok:?}");
    assert_eq!(latest(&mut client, "strict", 0), 3);

    let valid = build_test_batch(2, 20, now_ms(), 2);
    let mut bad_crc = valid.clone();
    *bad_crc.last_mut().unwrap() ^= 0xff;
    let mut magic_1 = valid.clone();
    magic_1[16] = 1;
    let truncated = valid[..valid.len() - 5].to_vec();
    let mut two_batches = valid.clone();
    two_batches.extend_from_slice(&valid);
    let mut negative_length = valid.clone();
    negative_length[8..12].copy_from_slice(&(-1i32).to_be_bytes());
    let too_large = build_test_batch(10, 300, now_ms(), 3);
    assert!(too_large.len() > 2000);

    // (what, topic, partition, acks, records, expected Kafka code)
    type Case = (&'static str, &'static str, i32, i16, Option<Vec<u8>>, i16);
    let cases: Vec<Case> = vec![
        ("bad CRC", "strict", 0, -1, Some(bad_crc), CORRUPT_MESSAGE),
        ("magic 1", "strict", 0, -1, Some(magic_1), INVALID_RECORD),
        (
            "truncated batch",
            "strict",
            0,
            -1,
            Some(truncated),
            INVALID_RECORD,
        ),
        (
            "two batches",
            "strict",
            0,
            -1,
            Some(two_batches),
            INVALID_RECORD,
        ),
        (
            "empty records",
            "strict",
            0,
            -1,
            Some(Vec::new()),
            INVALID_RECORD,
        ),
        // Kafka's ByteBufferLogInputStream: a batch length below the smallest record overhead
        // is a CorruptRecordException.
        (
            "negative batch length",
            "strict",
            0,
            -1,
            Some(negative_length),
            CORRUPT_MESSAGE,
        ),
        (
            "larger than max.message.bytes",
            "strict",
            0,
            -1,
            Some(too_large),
            MESSAGE_TOO_LARGE,
        ),
        (
            "acks=2",
            "strict",
            0,
            2,
            Some(valid.clone()),
            INVALID_REQUIRED_ACKS,
        ),
        (
            "partition 99999",
            "strict",
            99999,
            -1,
            Some(valid.clone()),
            UNKNOWN_TOPIC_OR_PARTITION,
        ),
        (
            "partition -1",
            "strict",
            -1,
            -1,
            Some(valid.clone()),
            UNKNOWN_TOPIC_OR_PARTITION,
        ),
        (
            "unknown topic",
            "no-such-topic",
            0,
            -1,
            Some(valid.clone()),
            UNKNOWN_TOPIC_OR_PARTITION,
        ),
    ];
    let mut wrong = Vec::new();
    for (what, topic, partition, acks, records, expected) in cases {
        let answer = produce(&mut client, topic, partition, acks, records);
        if answer.error_code != expected || answer.base_offset != -1 {
            wrong.push(format!(
                "produce {what}: expected error {expected} and base offset -1, got error {} \
                 base offset {} message {:?}",
                answer.error_code, answer.base_offset, answer.error_message
            ));
        }
    }

    // Fetch: past the end, negative, unknown partition and topic; at the end is fine.
    let fetch_cases: Vec<(&str, &str, i32, i64, i16)> = vec![
        ("offset past the end", "strict", 0, 4, OFFSET_OUT_OF_RANGE),
        (
            "offset far past the end",
            "strict",
            0,
            1 << 40,
            OFFSET_OUT_OF_RANGE,
        ),
        ("negative offset", "strict", 0, -5, OFFSET_OUT_OF_RANGE),
        (
            "partition 99999",
            "strict",
            99999,
            0,
            UNKNOWN_TOPIC_OR_PARTITION,
        ),
        (
            "unknown topic",
            "no-such-topic",
            0,
            0,
            UNKNOWN_TOPIC_OR_PARTITION,
        ),
        ("offset at the end", "strict", 0, 3, NONE),
    ];
    for (what, topic, partition, offset, expected) in fetch_cases {
        let data = fetch(&mut client, topic, partition, offset, 0, 1, 1 << 20);
        let records = data.records.as_ref().map_or(0, Bytes::len);
        if data.error_code != expected || records != 0 {
            wrong.push(format!(
                "fetch {what}: expected error {expected} and no records, got error {} with \
                 {records} bytes of records",
                data.error_code
            ));
        }
    }
    // Nothing changed: the log still ends at 3, the unknown topic was not created, and the
    // next valid produce gets offset 3.
    assert_eq!(latest(&mut client, "strict", 0), 3);
    assert_eq!(earliest(&mut client, "strict", 0), 0);
    assert_eq!(
        list_offset(&mut client, "no-such-topic", 0, -1).error_code,
        UNKNOWN_TOPIC_OR_PARTITION
    );
    let ok = produce(&mut client, "strict", 0, -1, Some(valid.clone()));
    assert_eq!((ok.error_code, ok.base_offset), (NONE, 3), "{ok:?}");
    let check_log = |client: &mut RawClient| {
        let data = fetch(client, "strict", 0, 0, 0, 1, 1 << 20);
        assert_eq!(data.error_code, NONE);
        assert_eq!(data.high_watermark, 5);
        let records = data.records.expect("records");
        // Exactly the two accepted batches, byte for byte but for the base offset.
        assert_eq!(records.len(), first.len() + valid.len());
        assert_eq!(records[8..first.len()], first[8..]);
        assert_eq!(records[first.len()..first.len() + 8], 3i64.to_be_bytes());
        assert_eq!(records[first.len() + 8..], valid[8..]);
    };
    check_log(&mut client);
    drop(client);

    // The same after a restart: nothing refused reached the disk.
    assert!(broker.stop().success());
    let broker = Broker::start_in(dir.path(), &["--set", "auto.create.topics.enable=false"]);
    let mut client = RawClient::connect(broker.addr);
    assert_eq!(latest(&mut client, "strict", 0), 5);
    check_log(&mut client);

    // Every refused request, with the code it got, once the log is known to be intact.
    assert!(
        wrong.is_empty(),
        "wrong answers:\n{}\nbroker log tail:\n{}",
        wrong.join("\n"),
        log_tail(&broker)
    );
}

// ---------------------------------------------------------------------------------------------
// ListOffsets, DeleteRecords, LogAppendTime, long poll.

#[test]
fn list_offsets_earliest_latest_and_by_timestamp() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start_in(dir.path(), &[]);
    create_topic(&broker, "times", 1, &[]);
    let mut client = RawClient::connect(broker.addr);
    assert_eq!(earliest(&mut client, "times", 0), 0);
    assert_eq!(latest(&mut client, "times", 0), 0);
    // Three batches of two records at timestamps 1000, 2000, 3000: offsets 0, 2, 4.
    for (i, ts) in [1000i64, 2000, 3000].into_iter().enumerate() {
        let answer = produce(
            &mut client,
            "times",
            0,
            -1,
            Some(build_test_batch(2, 10, ts, 9)),
        );
        assert_eq!(
            (answer.error_code, answer.base_offset),
            (NONE, 2 * i as i64)
        );
    }
    assert_eq!(earliest(&mut client, "times", 0), 0);
    assert_eq!(latest(&mut client, "times", 0), 6);
    let by_time: Vec<(i64, i16, i64, i64)> = [0i64, 1000, 1500, 2000, 2500, 3000, 3001]
        .into_iter()
        .map(|ts| {
            let a = list_offset(&mut client, "times", 0, ts);
            (ts, a.error_code, a.offset, a.timestamp)
        })
        .collect();
    assert_eq!(
        by_time,
        vec![
            (0, NONE, 0, 1000),
            (1000, NONE, 0, 1000),
            (1500, NONE, 2, 2000),
            (2000, NONE, 2, 2000),
            (2500, NONE, 4, 3000),
            (3000, NONE, 4, 3000),
            (3001, NONE, -1, -1),
        ]
    );
    let max = list_offset(&mut client, "times", 0, -3);
    assert_eq!(max.error_code, NONE);
    assert_eq!(max.timestamp, 3000);
    assert!(
        (4..=5).contains(&max.offset),
        "max timestamp offset {}",
        max.offset
    );
    // rdkafka's offsets_for_times agrees.
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("group.id", "times")
        .create()
        .unwrap();
    let mut query = TopicPartitionList::new();
    query
        .add_partition_offset("times", 0, Offset::Offset(1500))
        .unwrap();
    let found = consumer
        .offsets_for_times(query, Duration::from_secs(10))
        .unwrap();
    assert_eq!(
        found.find_partition("times", 0).unwrap().offset(),
        Offset::Offset(2)
    );
}

/// Records of one batch with different timestamps (as librdkafka batches them): ListOffsets by
/// timestamp answers the first record at or after the time, with its own timestamp, not the
/// batch's first offset; for uncompressed and compressed batches alike.
#[test]
fn list_offsets_by_timestamp_looks_inside_batches() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start_in(dir.path(), &[]);
    // Create times 1000, 1040, 1010, 1030, 1050 (not in order) at offsets 0 to 4.
    let stamps = [1000i64, 1040, 1010, 1030, 1050];
    for (codec, attribute) in [("none", 0), ("gzip", 1), ("zstd", 4)] {
        let topic = format!("inside-{codec}");
        create_topic(&broker, &topic, 1, &[]);
        let producer: rdkafka::producer::BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", broker.bootstrap())
            .set("acks", "all")
            .set("linger.ms", "500")
            .set("compression.type", codec)
            .create()
            .unwrap();
        for ts in stamps {
            producer
                .send(
                    BaseRecord::to(&topic)
                        .partition(0)
                        .key("key")
                        .payload("a value long enough to be worth compressing, repeated repeated")
                        .timestamp(ts),
                )
                .unwrap();
        }
        producer.flush(Duration::from_secs(30)).unwrap();
        let mut client = RawClient::connect(broker.addr);
        let data = fetch(&mut client, &topic, 0, 0, 0, 1, 1 << 20);
        let headers = batch_headers(&data.records.expect("records"));
        assert_eq!(headers.len(), 1, "{codec}: one batch of five: {headers:?}");
        assert_eq!(headers[0].2 & 7, attribute, "{codec}: stored as produced");
        let by_time: Vec<(i64, i64, i64)> = [0i64, 1000, 1001, 1020, 1035, 1041, 1050, 1051]
            .into_iter()
            .map(|ts| {
                let a = list_offset(&mut client, &topic, 0, ts);
                assert_eq!(a.error_code, NONE);
                (ts, a.offset, a.timestamp)
            })
            .collect();
        assert_eq!(
            by_time,
            vec![
                (0, 0, 1000),
                (1000, 0, 1000),
                (1001, 1, 1040),
                (1020, 1, 1040),
                (1035, 1, 1040),
                (1041, 4, 1050),
                (1050, 4, 1050),
                (1051, -1, -1),
            ],
            "{codec}"
        );
        // rdkafka's offsets_for_times agrees.
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", broker.bootstrap())
            .set("group.id", "inside")
            .create()
            .unwrap();
        let mut query = TopicPartitionList::new();
        query
            .add_partition_offset(&topic, 0, Offset::Offset(1041))
            .unwrap();
        let found = consumer
            .offsets_for_times(query, Duration::from_secs(10))
            .unwrap();
        assert_eq!(
            found.find_partition(&topic, 0).unwrap().offset(),
            Offset::Offset(4),
            "{codec}"
        );
    }
}

#[test]
fn delete_records_moves_the_log_start() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start_in(dir.path(), &[]);
    create_topic(&broker, "trim", 1, &[]);
    let mut client = RawClient::connect(broker.addr);
    for i in 0..5 {
        let answer = produce(
            &mut client,
            "trim",
            0,
            -1,
            Some(build_test_batch(2, 10, now_ms(), i)),
        );
        assert_eq!(
            (answer.error_code, answer.base_offset),
            (NONE, 2 * i as i64)
        );
    }
    assert_eq!(delete_records(&mut client, "trim", 0, 4), (NONE, 4));
    assert_eq!(earliest(&mut client, "trim", 0), 4);
    assert_eq!(latest(&mut client, "trim", 0), 10);
    let below = fetch(&mut client, "trim", 0, 2, 0, 1, 1 << 20);
    assert_eq!(below.error_code, OFFSET_OUT_OF_RANGE);
    let at = fetch(&mut client, "trim", 0, 4, 0, 1, 1 << 20);
    assert_eq!(at.error_code, NONE);
    assert_eq!(at.log_start_offset, 4);
    assert_eq!(at.high_watermark, 10);
    let headers = batch_headers(at.records.as_ref().unwrap());
    assert_eq!(
        headers.iter().map(|h| (h.0, h.1)).collect::<Vec<_>>(),
        vec![(4, 2), (6, 2), (8, 2)]
    );
    // Beyond the high watermark is refused; -1 means the high watermark.
    assert_eq!(
        delete_records(&mut client, "trim", 0, 11).0,
        OFFSET_OUT_OF_RANGE
    );
    assert_eq!(earliest(&mut client, "trim", 0), 4);
    assert_eq!(delete_records(&mut client, "trim", 0, 8), (NONE, 8));
    assert_eq!(
        delete_records(&mut client, "no-such-topic", 0, 1).0,
        UNKNOWN_TOPIC_OR_PARTITION
    );
    drop(client);
    // The log start offset survives a restart.
    assert!(broker.stop().success());
    let broker = Broker::start_in(dir.path(), &[]);
    let mut client = RawClient::connect(broker.addr);
    assert_eq!(earliest(&mut client, "trim", 0), 8);
    assert_eq!(latest(&mut client, "trim", 0), 10);
    assert_eq!(
        fetch(&mut client, "trim", 0, 6, 0, 1, 1 << 20).error_code,
        OFFSET_OUT_OF_RANGE
    );
    assert_eq!(delete_records(&mut client, "trim", 0, -1), (NONE, 10));
    assert_eq!(earliest(&mut client, "trim", 0), 10);
    // Appends continue after the last offset.
    let answer = produce(
        &mut client,
        "trim",
        0,
        -1,
        Some(build_test_batch(1, 10, now_ms(), 7)),
    );
    assert_eq!((answer.error_code, answer.base_offset), (NONE, 10));
}

#[test]
fn log_append_time_topics_get_the_broker_time() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start_in(dir.path(), &[]);
    create_topic(
        &broker,
        "appended",
        1,
        &[("message.timestamp.type", "LogAppendTime")],
    );
    create_topic(&broker, "created", 1, &[]);
    let mut client = RawClient::connect(broker.addr);

    // Raw: the response carries the broker's time, the stored batch has the LogAppendTime bit
    // and that time as its max timestamp, and a valid CRC.
    let before = now_ms();
    let answer = produce(
        &mut client,
        "appended",
        0,
        -1,
        Some(build_test_batch(2, 10, 1000, 1)),
    );
    let after = now_ms();
    assert_eq!(answer.error_code, NONE);
    assert!(
        (before..=after).contains(&answer.log_append_time_ms),
        "log_append_time_ms {} not in [{before}, {after}]",
        answer.log_append_time_ms
    );
    let data = fetch(&mut client, "appended", 0, 0, 0, 1, 1 << 20);
    let records = data.records.unwrap();
    let header = BatchHeader::view(&records).unwrap();
    assert_eq!(header.attributes.get() & 0x8, 0x8, "timestamp type bit");
    assert_eq!(header.max_timestamp.get(), answer.log_append_time_ms);
    assert_eq!(
        header.crc.get(),
        compute_crc(&records[..header.size_bytes() as usize])
    );
    let created = produce(
        &mut client,
        "created",
        0,
        -1,
        Some(build_test_batch(2, 10, 1000, 1)),
    );
    assert_eq!((created.error_code, created.log_append_time_ms), (NONE, -1));

    // rdkafka: a record produced with an old timestamp comes back with the broker's time, of
    // type LogAppendTime; on a CreateTime topic it keeps its own.
    let producer: rdkafka::producer::BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("acks", "all")
        .create()
        .unwrap();
    let before = now_ms();
    for topic in ["appended", "created"] {
        producer
            .send(
                BaseRecord::to(topic)
                    .partition(0)
                    .key("k")
                    .payload("v")
                    .timestamp(5000),
            )
            .unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    let after = now_ms();
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("group.id", "timestamps")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset("appended", 0, Offset::Offset(2))
        .unwrap();
    assignment
        .add_partition_offset("created", 0, Offset::Offset(2))
        .unwrap();
    consumer.assign(&assignment).unwrap();
    let mut seen = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.len() < 2 && Instant::now() < deadline {
        if let Some(msg) = consumer.poll(Duration::from_millis(500)) {
            let msg = msg.expect("consume");
            seen.insert(msg.topic().to_string(), msg.timestamp());
        }
    }
    match seen.get("appended") {
        Some(Timestamp::LogAppendTime(t)) => {
            assert!(
                (before..=after).contains(t),
                "{t} not in [{before}, {after}]"
            )
        }
        other => panic!("appended topic: expected a LogAppendTime timestamp, got {other:?}"),
    }
    assert_eq!(seen.get("created"), Some(&Timestamp::CreateTime(5000)));
}

#[test]
fn long_poll_returns_data_produced_while_waiting() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start_in(dir.path(), &[]);
    create_topic(&broker, "poll", 4, &[]);
    let mut client = RawClient::connect(broker.addr);

    // An empty partition with a short wait answers empty, without error.
    let empty = fetch(&mut client, "poll", 1, 0, 200, 1, 1 << 20);
    assert_eq!(empty.error_code, NONE);
    assert_eq!(empty.records.as_ref().map_or(0, Bytes::len), 0);

    for partition in [0, 3] {
        let addr = broker.addr;
        let waiter = std::thread::spawn(move || {
            let mut client = RawClient::connect(addr);
            let started = Instant::now();
            let data = fetch(&mut client, "poll", partition, 0, 5000, 1, 1 << 20);
            (data, started.elapsed())
        });
        std::thread::sleep(Duration::from_millis(300));
        let batch = build_test_batch(3, 50, now_ms(), partition as u8);
        let answer = produce(&mut client, "poll", partition, -1, Some(batch.clone()));
        assert_eq!((answer.error_code, answer.base_offset), (NONE, 0));
        let (data, took) = waiter.join().unwrap();
        eprintln!("long poll on partition {partition} answered after {took:?}");
        assert_eq!(data.error_code, NONE);
        assert_eq!(data.high_watermark, 3);
        let records = data
            .records
            .expect("the long poll returns the produced batch");
        assert_eq!(records[8..], batch[8..]);
    }
}

#[test]
fn offset_for_leader_epoch_reports_the_end_of_epoch_zero() {
    use kafka_protocol::messages::offset_for_leader_epoch_request::{
        OffsetForLeaderPartition, OffsetForLeaderTopic,
    };
    use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};
    const UNKNOWN_LEADER_EPOCH: i16 = 75;
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start_in(dir.path(), &[]);
    create_topic(&broker, "epochs", 2, &[]);
    rdkafka_produce(&broker, "epochs", 2, 10, &[]);
    let partition = |p: i32, current: i32, epoch: i32| {
        OffsetForLeaderPartition::default()
            .with_partition(p)
            .with_current_leader_epoch(current)
            .with_leader_epoch(epoch)
    };
    let request = OffsetForLeaderEpochRequest::default()
        .with_replica_id((-1).into())
        .with_topics(vec![
            OffsetForLeaderTopic::default()
                .with_topic(kafka_protocol::messages::TopicName(
                    StrBytes::from_static_str("epochs"),
                ))
                .with_partitions(vec![
                    partition(0, 0, 0),
                    partition(1, -1, 0),
                    partition(0, -1, 3),
                    partition(1, 7, 0),
                    partition(9, -1, 0),
                ]),
        ]);
    let mut client = RawClient::connect(broker.addr);
    let response: OffsetForLeaderEpochResponse =
        client.call(ApiKey::OffsetForLeaderEpoch, 4, &request);
    let got: Vec<(i32, i16, i32, i64)> = response.topics[0]
        .partitions
        .iter()
        .map(|p| (p.partition, p.error_code, p.leader_epoch, p.end_offset))
        .collect();
    assert_eq!(
        got,
        vec![
            (0, 0, 0, 5),
            (1, 0, 0, 5),
            (0, 0, -1, -1),
            (1, UNKNOWN_LEADER_EPOCH, -1, -1),
            (9, 3, -1, -1),
        ]
    );
}
