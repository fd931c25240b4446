//! Legacy message formats (magic 0 and 1) against the real broker: Produce v0-2 up-conversion
//! and Fetch v0-3 down-conversion.
//!
//! librdkafka speaks the old versions itself when told the broker is old
//! (`api.version.request=false`, `broker.version.fallback`): 0.9.0.0 gives Produce v1 with
//! magic 0 and Fetch v1, 0.10.0.0 Produce v2 with magic 1 and Fetch v2. Every codec a legacy
//! message set may carry (none, gzip, snappy, lz4) is produced that way and read back by a
//! modern consumer (Fetch v12, v2 batches) and by a legacy one (down-converted). Protocol-level
//! tests cover what a client cannot be made to send: corrupt messages, zstd data fetched at a
//! version that cannot carry it, and ListOffsets v0's offset lists.

mod support;

use std::time::{Duration, Instant};

use bytes::{Buf, BufMut};
use kafka_protocol::messages::ApiKey;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders, Timestamp};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use ringbroker::kafka::legacy_format::Codec;
use ringbroker::kafka::legacy_format::build::{message_set, read};
use support::{Broker, RawClient, fetch_legacy, raw_call};

const CORRUPT_MESSAGE: i16 = 2;
const UNSUPPORTED_COMPRESSION_TYPE: i16 = 76;
const COUNT: usize = 30;
/// The producer's timestamps: a fixed time in the past, distinct per message.
const BASE_TIMESTAMP_MS: i64 = 1_600_000_000_000;

/// A raw connection with a generous read bound: an fsync on a machine busy with other work
/// can take seconds.
fn connect(broker: &Broker) -> RawClient {
    let client = RawClient::connect(broker.addr);
    client
        .stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    client
}

fn block<F: std::future::Future>(future: F) -> F::Output {
    futures::executor::block_on(future)
}

fn create_topic(broker: &Broker, name: &str, configs: &[(&str, &str)]) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .create()
        .expect("admin client");
    let mut topic = NewTopic::new(name, 1, TopicReplication::Fixed(1));
    for (key, value) in configs {
        topic = topic.set(key, value);
    }
    let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(30)));
    let results = block(admin.create_topics(&[topic], &options)).unwrap_or_else(|err| {
        panic!(
            "CreateTopics: {err}; broker log:\n{}",
            broker.log().join("\n")
        )
    });
    assert_eq!(results[0], Ok(name.to_string()), "creating {name}");
}

fn client(broker: &Broker, fallback: Option<&str>) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", broker.bootstrap());
    if let Some(version) = fallback {
        config
            .set("api.version.request", "false")
            .set("broker.version.fallback", version);
    }
    config
}

/// Produces `COUNT` messages (key, value, timestamp) and waits for every delivery.
fn produce(broker: &Broker, topic: &str, fallback: Option<&str>, codec: &str) {
    let producer: BaseProducer = client(broker, fallback)
        .set("compression.codec", codec)
        .set("enable.idempotence", "false")
        .set("linger.ms", "5")
        .create()
        .expect("producer");
    for i in 0..COUNT {
        let key = format!("key-{i}");
        let value = format!("value-{i}-{}", "x".repeat(i * 7));
        let mut record = BaseRecord::to(topic)
            .key(&key)
            .payload(&value)
            .timestamp(BASE_TIMESTAMP_MS + i as i64);
        if fallback.is_none() {
            // Headers exist only in v2 batches; down-conversion drops them.
            record = record.headers(OwnedHeaders::new().insert(Header {
                key: "h",
                value: Some("header value"),
            }));
        }
        producer.send(record).expect("queued");
    }
    producer
        .flush(Duration::from_secs(30))
        .unwrap_or_else(|err| panic!("{topic}: flush failed: {err}"));
}

/// One consumed message: key, value, timestamp (-1 for none), header count.
type Consumed = (String, String, i64, usize);

fn consume(broker: &Broker, topic: &str, fallback: Option<&str>) -> Vec<Consumed> {
    let consumer: BaseConsumer = client(broker, fallback)
        .set("group.id", "legacy-formats")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    // A legacy consumer resolves "beginning" with ListOffsets v0.
    let start = if fallback.is_some() {
        Offset::Beginning
    } else {
        Offset::Offset(0)
    };
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(topic, 0, start).unwrap();
    consumer.assign(&assignment).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut out = Vec::new();
    while out.len() < COUNT {
        assert!(
            Instant::now() < deadline,
            "{topic}: consumed only {out:?}; broker log:\n{}",
            broker.log().join("\n")
        );
        match consumer.poll(Duration::from_millis(200)) {
            None => {}
            Some(Err(err)) => panic!("{topic}: consume error: {err}"),
            Some(Ok(msg)) => {
                assert_eq!(msg.offset(), out.len() as i64, "{topic}: offsets are dense");
                let timestamp = match msg.timestamp() {
                    Timestamp::NotAvailable => -1,
                    Timestamp::CreateTime(t) | Timestamp::LogAppendTime(t) => t,
                };
                out.push((
                    String::from_utf8(msg.key().unwrap().to_vec()).unwrap(),
                    String::from_utf8(msg.payload().unwrap().to_vec()).unwrap(),
                    timestamp,
                    msg.headers().map_or(0, |h| h.count()),
                ));
            }
        }
    }
    out
}

#[test]
fn legacy_librdkafka_producers_and_consumers_round_trip_every_codec() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start_in(dir.path(), &[]);
    for (fallback, magic) in [("0.9.0.0", 0), ("0.10.0.0", 1)] {
        for codec in ["none", "gzip", "snappy", "lz4"] {
            let topic = format!("legacy-m{magic}-{codec}");
            create_topic(&broker, &topic, &[]);
            produce(&broker, &topic, Some(fallback), codec);
            // A modern consumer reads the up-converted v2 batches. Magic 0 carries no
            // timestamps and no headers; magic 1 the producer's timestamps.
            let modern = consume(&broker, &topic, None);
            for (i, (key, value, timestamp, headers)) in modern.iter().enumerate() {
                assert_eq!(key, &format!("key-{i}"), "{topic}");
                assert_eq!(value, &format!("value-{i}-{}", "x".repeat(i * 7)));
                let want = if magic == 0 {
                    -1
                } else {
                    BASE_TIMESTAMP_MS + i as i64
                };
                assert_eq!(*timestamp, want, "{topic} message {i}");
                assert_eq!(*headers, 0);
            }
            // A legacy consumer of the same era reads them down-converted.
            let legacy = consume(&broker, &topic, Some(fallback));
            assert_eq!(legacy, modern, "{topic}");
        }
    }
}

#[test]
fn log_append_time_topics_stamp_legacy_messages() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start_in(dir.path(), &[]);
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    for (fallback, codec) in [("0.9.0.0", "none"), ("0.10.0.0", "gzip")] {
        let topic = format!("lat-{codec}");
        create_topic(
            &broker,
            &topic,
            &[("message.timestamp.type", "LogAppendTime")],
        );
        produce(&broker, &topic, Some(fallback), codec);
        for reader in [None, Some("0.10.0.0")] {
            for (_, _, timestamp, _) in consume(&broker, &topic, reader) {
                assert!(
                    (before..before + 120_000).contains(&timestamp),
                    "{topic} read by {reader:?}: {timestamp} is not the broker's time"
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Protocol level

/// A Produce v2 request body (acks -1) for one partition of `topic`.
fn produce_v2_body(topic: &str, records: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    body.put_i16(-1);
    body.put_i32(10_000);
    body.put_i32(1);
    body.put_i16(topic.len() as i16);
    body.put_slice(topic.as_bytes());
    body.put_i32(1);
    body.put_i32(0);
    body.put_i32(records.len() as i32);
    body.put_slice(records);
    body
}

/// (error code, base offset) of a Produce v2 response for one partition.
fn produce_v2(client: &mut RawClient, topic: &str, records: &[u8]) -> (i16, i64) {
    let mut response = raw_call(client, ApiKey::Produce, 2, &produce_v2_body(topic, records));
    assert_eq!(response.get_i32(), 1);
    let len = response.get_i16() as usize;
    response.advance(len);
    assert_eq!(response.get_i32(), 1);
    assert_eq!(response.get_i32(), 0);
    let error = response.get_i16();
    let base_offset = response.get_i64();
    let _log_append_time = response.get_i64();
    let _throttle = response.get_i32();
    assert!(response.is_empty());
    (error, base_offset)
}

#[test]
fn corrupt_legacy_messages_are_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start_in(dir.path(), &[]);
    create_topic(&broker, "corrupt", &[]);
    let mut client = connect(&broker);
    let good = message_set(
        1,
        Codec::None,
        &[(5, Some(b"k1"), Some(b"v1")), (6, None, Some(b"v2"))],
    );
    // A flipped bit in the second message's value: CRC-32 mismatch, and the first message
    // of the set is not written either.
    let mut bad = good.clone();
    *bad.last_mut().unwrap() ^= 0x10;
    assert_eq!(produce_v2(&mut client, "corrupt", &bad).0, CORRUPT_MESSAGE);
    // A corrupt inner message of a compressed wrapper.
    let wrapped = message_set(1, Codec::Gzip, &[(5, None, Some(b"inner"))]);
    let mut bad_wrapper = wrapped.clone();
    let last = bad_wrapper.len() - 1;
    bad_wrapper[last] ^= 0x01;
    assert_eq!(
        produce_v2(&mut client, "corrupt", &bad_wrapper).0,
        CORRUPT_MESSAGE
    );
    // A message set cut short.
    assert_eq!(
        produce_v2(&mut client, "corrupt", &good[..good.len() - 3]).0,
        CORRUPT_MESSAGE
    );
    let (error, high_watermark, records) = fetch_legacy(&mut client, 2, "corrupt");
    assert_eq!((error, high_watermark, records.len()), (0, 0, 0));
    // The good set lands at offset 0, and the connection still works.
    assert_eq!(produce_v2(&mut client, "corrupt", &good), (0, 0));
    let (error, high_watermark, records) = fetch_legacy(&mut client, 2, "corrupt");
    assert_eq!((error, high_watermark), (0, 2));
    let messages = read(&records).unwrap();
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[0].0, 0);
    assert_eq!(messages[1].0, 1);
    assert_eq!(messages[0].3, 5);
    assert_eq!(messages[0].4.as_deref(), Some(&b"k1"[..]));
    assert_eq!(messages[1].5.as_deref(), Some(&b"v2"[..]));
    // ListOffsets v0: the log end offset, the segment bases, newest first.
    assert_eq!(list_offsets_v0(&mut client, "corrupt", -1, 1), (0, vec![2]));
    assert_eq!(
        list_offsets_v0(&mut client, "corrupt", -1, 10),
        (0, vec![2, 0])
    );
    assert_eq!(
        list_offsets_v0(&mut client, "corrupt", -2, 10),
        (0, vec![0])
    );
    assert_eq!(list_offsets_v0(&mut client, "corrupt", 1, 10), (0, vec![]));
    assert_eq!(list_offsets_v0(&mut client, "absent", -1, 1), (3, vec![]));
}

/// ListOffsets v0 of partition 0: (error code, offsets).
fn list_offsets_v0(
    client: &mut RawClient,
    topic: &str,
    timestamp: i64,
    max_num_offsets: i32,
) -> (i16, Vec<i64>) {
    let mut body = Vec::new();
    body.put_i32(-1);
    body.put_i32(1);
    body.put_i16(topic.len() as i16);
    body.put_slice(topic.as_bytes());
    body.put_i32(1);
    body.put_i32(0);
    body.put_i64(timestamp);
    body.put_i32(max_num_offsets);
    let mut response = raw_call(client, ApiKey::ListOffsets, 0, &body);
    assert_eq!(response.get_i32(), 1);
    let len = response.get_i16() as usize;
    response.advance(len);
    assert_eq!(response.get_i32(), 1);
    assert_eq!(response.get_i32(), 0);
    let error = response.get_i16();
    let count = response.get_i32();
    let offsets = (0..count).map(|_| response.get_i64()).collect();
    assert!(response.is_empty());
    (error, offsets)
}

#[test]
fn modern_batches_down_convert_exactly_and_zstd_cannot() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start_in(dir.path(), &[]);
    create_topic(&broker, "modern", &[]);
    create_topic(&broker, "modern-zstd", &[]);
    produce(&broker, "modern", None, "snappy");
    produce(&broker, "modern-zstd", None, "zstd");
    let mut client = connect(&broker);
    for version in 0..4 {
        let (error, high_watermark, records) = fetch_legacy(&mut client, version, "modern");
        assert_eq!((error, high_watermark), (0, COUNT as i64));
        let magic = if version < 2 { 0 } else { 1 };
        let messages = read(&records).unwrap();
        assert!(!messages.is_empty(), "v{version}");
        assert_eq!(messages.len(), COUNT, "v{version}: every message");
        for (i, (offset, m_magic, _, timestamp, key, value)) in messages.into_iter().enumerate() {
            assert_eq!(m_magic, magic, "v{version}");
            // Compressed wrappers carry relative inner offsets for magic 1.
            if magic == 0 {
                assert_eq!(offset, i as i64);
            }
            assert_eq!(key.as_deref(), Some(format!("key-{i}").as_bytes()));
            assert_eq!(
                value.as_deref(),
                Some(format!("value-{i}-{}", "x".repeat(i * 7)).as_bytes())
            );
            let want = if magic == 0 {
                -1
            } else {
                BASE_TIMESTAMP_MS + i as i64
            };
            assert_eq!(timestamp, want);
        }
        let (error, _, records) = fetch_legacy(&mut client, version, "modern-zstd");
        assert_eq!(
            (error, records.len()),
            (UNSUPPORTED_COMPRESSION_TYPE, 0),
            "v{version}"
        );
    }
}
