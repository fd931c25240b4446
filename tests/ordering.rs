//! Requests pipelined on one connection are applied in the order they were sent, as Kafka
//! clients rely on (a producer with several requests in flight and no idempotence keeps its
//! order only because the broker does): here across shards, and while the partitions are
//! still being opened after the topic was created.

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, MetadataRequest, MetadataResponse, ProduceRequest, ProduceResponse, TopicName,
};
use kafka_protocol::protocol::{Decodable, StrBytes};
use ringbroker::storage::batch::build_test_batch;
use support::{Broker, RawClient};

const PARTITIONS: i32 = 6;
const ROUNDS: i32 = 40;
const RECORDS_PER_BATCH: i32 = 3;

fn topic_name(topic: &str) -> TopicName {
    TopicName(StrBytes::from_string(topic.to_string()))
}

fn metadata(client: &mut RawClient, topic: &str) -> MetadataResponse {
    let request = MetadataRequest::default()
        .with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(topic_name(topic))),
        ]))
        .with_allow_auto_topic_creation(true);
    client.call(ApiKey::Metadata, 9, &request)
}

#[test]
fn pipelined_produces_are_appended_in_request_order() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start_in(
        dir.path(),
        &["--set", &format!("num.partitions={PARTITIONS}")],
    );
    let mut client = RawClient::connect(broker.addr);
    let topic = "ordered";
    // Auto-create, then wait only until this connection's shard knows the partitions: their
    // owners may still be opening them when the produces arrive.
    let deadline = Instant::now() + Duration::from_secs(20);
    while metadata(&mut client, topic).topics[0].partitions.len() != PARTITIONS as usize {
        assert!(Instant::now() < deadline, "topic never appeared");
        std::thread::sleep(Duration::from_millis(5));
    }

    let batch = Bytes::from(build_test_batch(
        RECORDS_PER_BATCH,
        20,
        1_700_000_000_000,
        7,
    ));
    let mut sent = Vec::new();
    for round in 0..ROUNDS {
        for partition in 0..PARTITIONS {
            let correlation_id = round * PARTITIONS + partition;
            let request = ProduceRequest::default()
                .with_acks(1)
                .with_timeout_ms(10_000)
                .with_topic_data(vec![
                    TopicProduceData::default()
                        .with_name(topic_name(topic))
                        .with_partition_data(vec![
                            PartitionProduceData::default()
                                .with_index(partition)
                                .with_records(Some(batch.clone())),
                        ]),
                ]);
            client.send(ApiKey::Produce, 9, correlation_id, &request);
            sent.push((correlation_id, partition));
        }
    }

    let mut offsets: HashMap<i32, Vec<i64>> = HashMap::new();
    for (correlation_id, partition) in sent {
        let (answered, mut body) = client.recv(ApiKey::Produce, 9);
        assert_eq!(answered, correlation_id, "responses come in request order");
        let response = ProduceResponse::decode(&mut body, 9).unwrap();
        let answer = &response.responses[0].partition_responses[0];
        assert_eq!(answer.index, partition);
        assert_eq!(answer.error_code, 0, "request {correlation_id}");
        offsets
            .entry(partition)
            .or_default()
            .push(answer.base_offset);
    }
    for (partition, bases) in offsets {
        let expected: Vec<i64> = (0..i64::from(ROUNDS))
            .map(|round| round * i64::from(RECORDS_PER_BATCH))
            .collect();
        assert_eq!(
            bases, expected,
            "partition {partition}: appends out of request order"
        );
    }
    broker.stop();
}
