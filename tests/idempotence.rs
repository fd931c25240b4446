//! Idempotent producers: InitProducerId, duplicate detection, sequence and epoch checks,
//! state rebuilt after a restart, and real clients that turn idempotence on by default.

mod support;

use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, InitProducerIdRequest, InitProducerIdResponse, ProduceRequest, ProduceResponse,
    TopicName,
};
use kafka_protocol::protocol::StrBytes;
use ringbroker::storage::batch::{build_test_batch, compute_crc};
use support::{Broker, RawClient, run_bounded};

const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
const INVALID_PRODUCER_EPOCH: i16 = 47;
const UNKNOWN_PRODUCER_ID: i16 = 59;
const INVALID_REQUEST: i16 = 42;

/// A batch of `records` records from producer `producer_id`/`epoch` starting at `sequence`.
fn idempotent_batch(producer_id: i64, epoch: i16, sequence: i32, records: i32) -> Bytes {
    let mut batch = build_test_batch(records, 16, 1_700_000_000_000, sequence as u8);
    batch[43..51].copy_from_slice(&producer_id.to_be_bytes());
    batch[51..53].copy_from_slice(&epoch.to_be_bytes());
    batch[53..57].copy_from_slice(&sequence.to_be_bytes());
    let crc = compute_crc(&batch);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
    Bytes::from(batch)
}

fn init_producer_id(client: &mut RawClient, transactional_id: Option<&str>) -> (i16, i64, i16) {
    let request = InitProducerIdRequest::default()
        .with_transactional_id(
            transactional_id.map(|t| StrBytes::from_string(t.to_string()).into()),
        )
        .with_transaction_timeout_ms(60_000);
    let response: InitProducerIdResponse = client.call(ApiKey::InitProducerId, 4, &request);
    (
        response.error_code,
        response.producer_id.0,
        response.producer_epoch,
    )
}

fn produce(client: &mut RawClient, topic: &str, records: Bytes) -> (i16, i64) {
    let request = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(records)),
                ]),
        ]);
    let response: ProduceResponse = client.call(ApiKey::Produce, 9, &request);
    let partition = &response.responses[0].partition_responses[0];
    (partition.error_code, partition.base_offset)
}

#[test]
fn duplicates_are_answered_with_the_original_offset_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start_in(dir.path(), &[]);
    let mut client = RawClient::connect(broker.addr);
    let (code, producer_id, epoch) = init_producer_id(&mut client, None);
    assert_eq!((code, epoch), (0, 0));
    assert!(producer_id >= 0);
    let (code, second, _) = init_producer_id(&mut client, None);
    assert_eq!(code, 0);
    assert_ne!(second, producer_id, "every producer gets its own id");

    // The first produce auto-creates the topic; the retry lands.
    let first = idempotent_batch(producer_id, 0, 0, 3);
    let (code, _) = produce(&mut client, "idem", first.clone());
    assert_eq!(
        code, 3,
        "UNKNOWN_TOPIC_OR_PARTITION while the topic is created"
    );
    assert_eq!(produce(&mut client, "idem", first.clone()), (0, 0));
    assert_eq!(
        produce(&mut client, "idem", first.clone()),
        (0, 0),
        "duplicate: same offset"
    );
    let next = idempotent_batch(producer_id, 0, 3, 2);
    assert_eq!(produce(&mut client, "idem", next.clone()), (0, 3));
    // A gap, a stale epoch, an unknown producer in mid-sequence.
    let gap = idempotent_batch(producer_id, 0, 9, 1);
    assert_eq!(
        produce(&mut client, "idem", gap).0,
        OUT_OF_ORDER_SEQUENCE_NUMBER
    );
    let newer = idempotent_batch(producer_id, 1, 0, 1);
    assert_eq!(produce(&mut client, "idem", newer), (0, 5));
    let stale = idempotent_batch(producer_id, 0, 5, 1);
    assert_eq!(
        produce(&mut client, "idem", stale).0,
        INVALID_PRODUCER_EPOCH
    );
    let unknown = idempotent_batch(producer_id + 500, 0, 7, 1);
    assert_eq!(produce(&mut client, "idem", unknown).0, UNKNOWN_PRODUCER_ID);

    // Restart: the producer state is rebuilt from the log.
    drop(client);
    assert!(broker.stop().success());
    let broker = Broker::start_in(dir.path(), &[]);
    let mut client = RawClient::connect(broker.addr);
    let newer_retry = idempotent_batch(producer_id, 1, 0, 1);
    assert_eq!(
        produce(&mut client, "idem", newer_retry),
        (0, 5),
        "duplicate after restart"
    );
    assert_eq!(
        produce(&mut client, "idem", idempotent_batch(producer_id, 1, 1, 1)),
        (0, 6)
    );
    // Producer ids are not reused after a restart.
    let (_, after_restart, _) = init_producer_id(&mut client, None);
    assert!(after_restart > second);
}

#[test]
fn an_empty_transactional_id_is_an_invalid_request() {
    // Kafka: a null transactional id means an idempotent producer, an empty one is refused.
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start_in(dir.path(), &[]);
    let mut client = RawClient::connect(broker.addr);
    let (code, producer_id, _) = init_producer_id(&mut client, Some(""));
    assert_eq!((code, producer_id), (INVALID_REQUEST, -1));
}

#[test]
fn default_kafka_python_and_idempotent_librdkafka_producers_work() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start_in(dir.path(), &[]);
    // kafka-python 3 enables idempotence by default; it needs InitProducerId.
    let script = r#"
import sys
from kafka import KafkaProducer
p = KafkaProducer(bootstrap_servers=sys.argv[1])
offsets = [p.send('kp', b'm%d' % i).get(timeout=20).offset for i in range(100)]
assert offsets == list(range(100)), offsets
from confluent_kafka import Producer
q = Producer({'bootstrap.servers': sys.argv[1], 'enable.idempotence': True, 'acks': 'all'})
failed = []
for i in range(20000):
    q.produce('ck', b'v%d' % i, on_delivery=lambda err, msg: err and failed.append(err))
    if i % 1000 == 0:
        q.poll(0)
assert q.flush(30) == 0
assert not failed, failed[:3]
print('ok')
"#;
    let (status, stdout, stderr) = run_bounded(
        "python3",
        &["-c", script, &broker.bootstrap()],
        Duration::from_secs(90),
    );
    assert!(status.success(), "{stdout}\n{stderr}");
    assert_eq!(stdout.trim(), "ok");
}

/// Produces `count` sequence-numbered messages with an idempotent librdkafka producer while
/// the broker is restarted (gracefully, then by SIGKILL) on the same port, and checks that the
/// partition holds each message exactly once, in order.
#[test]
fn retries_across_broker_restarts_leave_no_duplicates_or_gaps() {
    use rdkafka::ClientConfig;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
    use rdkafka::{Message, Offset, TopicPartitionList};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start_in(dir.path(), &["--set", "num.partitions=1"]);
    let addr = broker.bootstrap();
    let acked = Arc::new(AtomicUsize::new(0));
    struct Counter(Arc<AtomicUsize>);
    impl rdkafka::ClientContext for Counter {}
    impl rdkafka::producer::ProducerContext for Counter {
        type DeliveryOpaque = ();
        fn delivery(&self, result: &rdkafka::message::DeliveryResult<'_>, _: ()) {
            assert!(result.is_ok(), "delivery failed: {result:?}");
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
    let producer: ThreadedProducer<Counter> = ClientConfig::new()
        .set("bootstrap.servers", &addr)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "120000")
        .set("reconnect.backoff.max.ms", "200")
        .create_with_context(Counter(acked.clone()))
        .unwrap();
    let count = 60_000usize;
    let mut broker = Some(broker);
    for i in 0..count {
        let value = format!("{i:08}");
        loop {
            let record: BaseRecord<'_, (), String> =
                BaseRecord::to("idem-restart").payload(&value).partition(0);
            match producer.send(record) {
                Ok(()) => break,
                Err((_, _)) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
        // Restart twice while messages are in flight: gracefully, then by SIGKILL.
        if i == count / 3 || i == 2 * count / 3 {
            let old = broker.take().unwrap();
            if i == count / 3 {
                assert!(old.stop().success());
            } else {
                old.signal("KILL");
                drop(old);
            }
            broker = Some(Broker::start_at(
                dir.path(),
                &addr,
                &["--set", "num.partitions=1"],
            ));
        }
    }
    producer.flush(Duration::from_secs(120)).unwrap();
    assert_eq!(acked.load(Ordering::Relaxed), count);

    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &addr)
        .set("group.id", "verify")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset("idem-restart", 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&assignment).unwrap();
    let mut next = 0usize;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while next < count && std::time::Instant::now() < deadline {
        if let Some(message) = consumer.poll(Duration::from_millis(500)) {
            let message = message.unwrap();
            let value = std::str::from_utf8(message.payload().unwrap()).unwrap();
            assert_eq!(
                value,
                format!("{next:08}"),
                "at offset {}",
                message.offset()
            );
            assert_eq!(message.offset() as usize, next, "no gaps, no duplicates");
            next += 1;
        }
    }
    assert_eq!(next, count);
    let (_, high) = consumer
        .fetch_watermarks("idem-restart", 0, Duration::from_secs(10))
        .unwrap();
    assert_eq!(high as usize, count, "nothing was written twice");
}
