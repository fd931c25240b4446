//! Incremental fetch sessions (KIP-227) as raw frames and kafka-python see them.
//!
//! - Raw Fetch v12 frames: a full fetch with epoch 0 creates a session; incremental fetches
//!   carry only partitions with new records, a moved log start offset or an error, wait like a
//!   full fetch when nothing is new (and wake when something arrives), add and forget
//!   partitions; a replayed epoch gets INVALID_FETCH_SESSION_EPOCH, an unknown id
//!   FETCH_SESSION_ID_NOT_FOUND, epoch -1 closes the session; a cache of no slots answers
//!   sessionless.
//! - kafka-python (which uses sessions by default) reads 300 partitions through one session,
//!   read_uncommitted and read_committed; its idle polls get incremental responses with no
//!   partitions.
//!
//! librdkafka does not implement fetch sessions (it sends session id 0, epoch -1), so it is
//! not used here. Every wait is bounded.

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::delete_records_request::{
    DeleteRecordsPartition, DeleteRecordsTopic,
};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic, ForgottenTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, BrokerId, DeleteRecordsRequest, DeleteRecordsResponse, FetchRequest, FetchResponse,
    ProduceRequest, ProduceResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use ringbroker::storage::batch::build_test_batch;
use support::{Broker, RawClient, run_bounded};

const FETCH_SESSION_ID_NOT_FOUND: i16 = 70;
const INVALID_FETCH_SESSION_EPOCH: i16 = 71;
const TOPIC: &str = "sessions";
const PARTITIONS: i32 = 6;

fn name(topic: &str) -> TopicName {
    TopicName(StrBytes::from_string(topic.to_string()))
}

fn create_topic(broker: &Broker, topic: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .create()
        .expect("admin client");
    let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(30)));
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    let results = futures::executor::block_on(admin.create_topics(&[new], &options))
        .expect("CreateTopics answers");
    assert_eq!(results[0], Ok(topic.to_string()));
}

fn produce(client: &mut RawClient, partition: i32) {
    let request = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(name(TOPIC))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(partition)
                        .with_records(Some(Bytes::from(build_test_batch(1, 10, 1, 7)))),
                ]),
        ]);
    let response: ProduceResponse = client.call(ApiKey::Produce, 9, &request);
    assert_eq!(response.responses[0].partition_responses[0].error_code, 0);
}

/// A Fetch v12 of `session_id`/`epoch` naming `(partition, fetch offset)` pairs of the topic
/// and forgetting `forget`.
fn fetch_request(
    session_id: i32,
    epoch: i32,
    partitions: &[(i32, i64)],
    forget: &[i32],
    max_wait_ms: i32,
) -> FetchRequest {
    let topics = if partitions.is_empty() {
        vec![]
    } else {
        vec![
            FetchTopic::default()
                .with_topic(name(TOPIC))
                .with_partitions(
                    partitions
                        .iter()
                        .map(|&(partition, offset)| {
                            FetchPartition::default()
                                .with_partition(partition)
                                .with_current_leader_epoch(-1)
                                .with_fetch_offset(offset)
                                .with_log_start_offset(-1)
                                .with_partition_max_bytes(1 << 20)
                        })
                        .collect(),
                ),
        ]
    };
    let forgotten = if forget.is_empty() {
        vec![]
    } else {
        vec![
            ForgottenTopic::default()
                .with_topic(name(TOPIC))
                .with_partitions(forget.to_vec()),
        ]
    };
    FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(1)
        .with_max_bytes(1 << 24)
        .with_isolation_level(0)
        .with_session_id(session_id)
        .with_session_epoch(epoch)
        .with_topics(topics)
        .with_forgotten_topics_data(forgotten)
}

/// Sends a fetch: (top-level error, session id, [(partition, record bytes, log start)], time).
fn fetch(
    client: &mut RawClient,
    request: &FetchRequest,
) -> (i16, i32, Vec<(i32, usize, i64)>, Duration) {
    let started = Instant::now();
    let response: FetchResponse = client.call(ApiKey::Fetch, 12, request);
    let elapsed = started.elapsed();
    let mut partitions: Vec<(i32, usize, i64)> = response
        .responses
        .iter()
        .flat_map(|t| {
            assert_eq!(t.topic.0.as_str(), TOPIC);
            t.partitions.iter().map(|p| {
                assert_eq!(p.error_code, 0, "partition {}", p.partition_index);
                (
                    p.partition_index,
                    p.records.as_ref().map_or(0, |r| r.len()),
                    p.log_start_offset,
                )
            })
        })
        .collect();
    partitions.sort();
    (
        response.error_code,
        response.session_id,
        partitions,
        elapsed,
    )
}

fn numbers(partitions: &[(i32, usize, i64)]) -> Vec<i32> {
    partitions.iter().map(|p| p.0).collect()
}

#[test]
fn incremental_fetches_carry_only_what_changed() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start_in(dir.path(), &[]);
    create_topic(&broker, TOPIC, PARTITIONS);
    let mut producer = RawClient::connect(broker.addr);
    for p in 0..PARTITIONS {
        produce(&mut producer, p);
    }
    let mut client = RawClient::connect(broker.addr);
    let all: Vec<(i32, i64)> = (0..PARTITIONS).map(|p| (p, 0)).collect();

    // A full fetch with epoch 0 creates a session and answers every partition.
    let (error, id, got, _) = fetch(&mut client, &fetch_request(0, 0, &all, &[], 1000));
    assert_eq!(error, 0);
    assert_ne!(id, 0, "a session was created");
    assert_eq!(numbers(&got), (0..PARTITIONS).collect::<Vec<_>>());
    assert!(got.iter().all(|p| p.1 > 0), "every partition has its batch");

    // The consumer moved every position to 1; nothing is new: the fetch waits its max_wait
    // like a full fetch and the answer carries no partition.
    let moved: Vec<(i32, i64)> = (0..PARTITIONS).map(|p| (p, 1)).collect();
    let (error, same_id, got, took) = fetch(&mut client, &fetch_request(id, 1, &moved, &[], 400));
    assert_eq!((error, same_id), (0, id));
    assert!(got.is_empty(), "unchanged partitions are left out: {got:?}");
    assert!(took >= Duration::from_millis(350), "waited {took:?}");

    // New data on partition 2 only: only partition 2 comes back.
    produce(&mut producer, 2);
    let (error, _, got, _) = fetch(&mut client, &fetch_request(id, 2, &[], &[], 5000));
    assert_eq!(error, 0);
    assert_eq!(numbers(&got), vec![2]);
    assert!(got[0].1 > 0);

    // A long poll with nothing new wakes when partition 4 gets data.
    let addr = broker.addr;
    let writer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        let mut producer = RawClient::connect(addr);
        produce(&mut producer, 4);
    });
    let (error, _, got, took) = fetch(&mut client, &fetch_request(id, 3, &[(2, 2)], &[], 10_000));
    writer.join().unwrap();
    assert_eq!(error, 0);
    assert_eq!(numbers(&got), vec![4]);
    assert!(
        took < Duration::from_secs(5),
        "woken by the append, took {took:?}"
    );

    // Replaying an epoch is refused; so is an unknown session.
    let (error, _, got, _) = fetch(&mut client, &fetch_request(id, 3, &[], &[], 100));
    assert_eq!(error, INVALID_FETCH_SESSION_EPOCH);
    assert!(got.is_empty());
    let (error, _, _, _) = fetch(&mut client, &fetch_request(id ^ 0x10000, 4, &[], &[], 100));
    assert_eq!(error, FETCH_SESSION_ID_NOT_FOUND);

    // A moved log start offset is a change worth sending, without records.
    let request = DeleteRecordsRequest::default()
        .with_timeout_ms(10_000)
        .with_topics(vec![
            DeleteRecordsTopic::default()
                .with_name(name(TOPIC))
                .with_partitions(vec![
                    DeleteRecordsPartition::default()
                        .with_partition_index(1)
                        .with_offset(1),
                ]),
        ]);
    let deleted: DeleteRecordsResponse = producer.call(ApiKey::DeleteRecords, 2, &request);
    assert_eq!(deleted.topics[0].partitions[0].error_code, 0);
    let (error, _, got, _) = fetch(&mut client, &fetch_request(id, 4, &[(4, 2)], &[], 500));
    assert_eq!(error, 0);
    assert_eq!(got, vec![(1, 0, 1)]);

    // A forgotten partition is no longer read; a re-added one comes back in full.
    let (error, _, got, _) = fetch(&mut client, &fetch_request(id, 5, &[], &[0], 200));
    assert_eq!((error, got.len()), (0, 0));
    produce(&mut producer, 0);
    let (error, _, got, _) = fetch(&mut client, &fetch_request(id, 6, &[], &[], 300));
    assert_eq!((error, got.len()), (0, 0), "partition 0 was forgotten");
    let (error, _, got, _) = fetch(&mut client, &fetch_request(id, 7, &[(0, 0)], &[], 300));
    assert_eq!(error, 0);
    assert_eq!(numbers(&got), vec![0]);
    assert!(got[0].1 > 0);

    // Epoch -1 closes the session and is served sessionless.
    let (error, none, got, _) = fetch(&mut client, &fetch_request(id, -1, &moved, &[], 100));
    assert_eq!((error, none, got.len()), (0, 0, PARTITIONS as usize));
    let (error, _, _, _) = fetch(&mut client, &fetch_request(id, 8, &[], &[], 100));
    assert_eq!(error, FETCH_SESSION_ID_NOT_FOUND);
    assert!(broker.stop().success());
}

#[test]
fn no_slots_means_sessionless_fetches() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start_in(
        dir.path(),
        &["--set", "max.incremental.fetch.session.cache.slots=0"],
    );
    create_topic(&broker, TOPIC, 1);
    let mut client = RawClient::connect(broker.addr);
    let (error, id, got, _) = fetch(&mut client, &fetch_request(0, 0, &[(0, 0)], &[], 10));
    assert_eq!((error, id, got.len()), (0, 0, 1));
    assert!(broker.stop().success());
}

#[test]
fn kafka_python_reads_many_partitions_through_one_session() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start_in(dir.path(), &[]);
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/clients/fetch_sessions.py"
    );
    for (topic, isolation) in [("many", "read_uncommitted"), ("many-rc", "read_committed")] {
        create_topic(&broker, topic, 300);
        let (status, stdout, stderr) = run_bounded(
            "python3",
            &[script, &broker.bootstrap(), topic, "300", "5", isolation],
            Duration::from_secs(150),
        );
        assert!(status.success(), "{isolation}: {stderr}");
        let out: serde_json::Value = serde_json::from_str(stdout.trim()).expect("JSON");
        eprintln!("{isolation}: {out}");
        assert_eq!(out["consumed"], 1500);
        assert_eq!(out["session_errors"], serde_json::json!([]));
        assert!(out["sessions_created"].as_u64().unwrap() >= 1);
        let incremental = out["incremental_responses"].as_u64().unwrap();
        // The 8 KiB response budget spreads the 1,500 batches over many incremental answers.
        assert!(
            out["incremental_partitions"].as_u64().unwrap() >= 100,
            "{out}"
        );
        // Idle polls get incremental answers without partitions, not all 300 again.
        assert!(out["idle_incremental_responses"].as_u64().unwrap() > 0);
        let per_response = out["incremental_partitions"].as_u64().unwrap() / incremental;
        assert!(
            per_response < 300,
            "incremental answers carry {per_response} partitions"
        );
    }
    assert!(broker.stop().success());
}
