//! Metadata as real Kafka clients see it: librdkafka (the `rdkafka` crate and Debian's kcat),
//! kafka-python and confluent-kafka read the brokers, the cluster id, the controller and the
//! topics of a broker whose metadata log already holds topics.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use ringbroker::metadata::store::{self, MetadataRecord, MetadataStore, apply_record};
use support::{Broker, run_bounded};

/// Writes topics into the data directory's metadata log, as the controller would.
fn seed_topics(data_dir: &Path, topics: &[(&str, i32)]) {
    let (mut store, mut image) = MetadataStore::open(data_dir).unwrap();
    for (name, partitions) in topics {
        let record = MetadataRecord::TopicCreated {
            name: name.to_string(),
            id: uuid::Uuid::new_v4(),
            partitions: *partitions,
            configs: BTreeMap::new(),
            placement: Vec::new(),
        };
        let offset = image.offset + 1;
        apply_record(&mut image, offset, &record);
        store.append(&[(offset, record)], &image).unwrap();
    }
}

fn cluster_id(data_dir: &Path) -> String {
    std::fs::read_to_string(data_dir.join("meta.properties"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("cluster.id=").map(str::to_string))
        .unwrap()
}

fn start_seeded(dir: &Path, extra: &[&str]) -> Broker {
    store::load_or_create_identity(dir, 7).unwrap();
    seed_topics(
        dir,
        &[("orders", 12), ("events", 3), ("__consumer_offsets", 50)],
    );
    let mut args = vec!["--node-id", "7"];
    args.extend_from_slice(extra);
    Broker::start_in(dir, &args)
}

#[test]
fn rdkafka_reads_brokers_topics_and_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_seeded(dir.path(), &[]);
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("group.id", "metadata-test")
        .create()
        .unwrap();
    let metadata = consumer
        .fetch_metadata(None, Duration::from_secs(10))
        .expect("metadata for all topics");
    let brokers: Vec<_> = metadata
        .brokers()
        .iter()
        .map(|b| (b.id(), b.host().to_string(), b.port()))
        .collect();
    assert_eq!(
        brokers,
        vec![(7, "127.0.0.1".to_string(), broker.addr.port() as i32)]
    );
    let mut topics: Vec<_> = metadata
        .topics()
        .iter()
        .map(|t| (t.name().to_string(), t.partitions().len()))
        .collect();
    topics.sort();
    assert_eq!(
        topics,
        vec![
            ("__consumer_offsets".to_string(), 50),
            ("events".to_string(), 3),
            ("orders".to_string(), 12)
        ]
    );
    let orders = metadata
        .topics()
        .iter()
        .find(|t| t.name() == "orders")
        .unwrap();
    for partition in orders.partitions() {
        assert_eq!(partition.leader(), 7);
        assert_eq!(partition.replicas(), &[7]);
        assert_eq!(partition.isr(), &[7]);
        assert!(partition.error().is_none());
    }

    // One topic by name, and a topic that does not exist.
    let one = consumer
        .fetch_metadata(Some("events"), Duration::from_secs(10))
        .unwrap();
    assert_eq!(one.topics().len(), 1);
    assert_eq!(one.topics()[0].partitions().len(), 3);
    let missing = consumer
        .fetch_metadata(Some("no-such-topic"), Duration::from_secs(10))
        .unwrap();
    assert_eq!(
        missing.topics()[0].error(),
        Some(rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART)
    );
}

#[test]
fn kcat_lists_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_seeded(dir.path(), &["--advertised-listener", "localhost:19092"]);
    // kcat bootstraps on the real port, then is told the advertised address, which it reports.
    let (status, stdout, stderr) = run_bounded(
        "kcat",
        &["-b", &broker.bootstrap(), "-L", "-m", "10"],
        Duration::from_secs(30),
    );
    assert!(status.success(), "kcat failed: {stderr}");
    assert!(stdout.contains("1 brokers:"), "{stdout}");
    assert!(
        stdout.contains("broker 7 at localhost:19092 (controller)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("topic \"orders\" with 12 partitions"),
        "{stdout}"
    );
    assert!(
        stdout.contains("topic \"events\" with 3 partitions"),
        "{stdout}"
    );
    assert!(
        stdout.contains("partition 11, leader 7, replicas: 7, isrs: 7"),
        "{stdout}"
    );
}

#[test]
fn kafka_python_and_confluent_kafka_list_topics() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_seeded(dir.path(), &[]);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/list_topics.py");
    let (status, stdout, stderr) = run_bounded(
        "python3",
        &[script, &broker.bootstrap()],
        Duration::from_secs(60),
    );
    assert!(status.success(), "list_topics.py failed: {stderr}");
    let out: serde_json::Value = serde_json::from_str(stdout.trim()).expect("JSON output");
    let cluster = cluster_id(dir.path());

    // kafka-python hides internal topics (exclude_internal_topics), which we mark as such.
    assert_eq!(
        out["kafka_python_topics"],
        serde_json::json!(["events", "orders"])
    );
    assert_eq!(
        out["kafka_python_partitions"]["events"],
        serde_json::json!([0, 1, 2])
    );
    assert_eq!(out["kafka_python_cluster_id"], cluster.as_str());
    assert_eq!(out["kafka_python_controller_id"], 7);

    assert_eq!(out["confluent_cluster_id"], cluster.as_str());
    assert_eq!(out["confluent_controller_id"], 7);
    assert_eq!(
        out["confluent_brokers"]["7"],
        serde_json::json!(broker.bootstrap())
    );
    assert_eq!(
        out["confluent_topics"]["orders"]["partitions"]
            .as_array()
            .unwrap()
            .len(),
        12
    );
    assert_eq!(
        out["confluent_topics"]["orders"]["leaders"],
        serde_json::json!([7])
    );
    assert_eq!(
        out["confluent_topics"]["orders"]["error"],
        serde_json::Value::Null
    );
}

#[test]
fn topics_and_identity_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start_seeded(dir.path(), &[]);
    let cluster = cluster_id(dir.path());
    assert!(broker.stop().success());
    let broker = Broker::start_in(dir.path(), &["--node-id", "7"]);
    assert_eq!(cluster_id(dir.path()), cluster);
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .create()
        .unwrap();
    let metadata = consumer
        .fetch_metadata(None, Duration::from_secs(10))
        .unwrap();
    assert_eq!(metadata.topics().len(), 3);
}

fn metadata_for(client: &mut support::RawClient, topic: &str, allow: bool) -> (i16, usize) {
    use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
    use kafka_protocol::messages::{ApiKey, MetadataRequest, MetadataResponse, TopicName};
    use kafka_protocol::protocol::StrBytes;
    let request = MetadataRequest::default()
        .with_topics(Some(vec![MetadataRequestTopic::default().with_name(Some(
            TopicName(StrBytes::from_string(topic.to_string())),
        ))]))
        .with_allow_auto_topic_creation(allow);
    let response: MetadataResponse = client.call(ApiKey::Metadata, 12, &request);
    let topic = &response.topics[0];
    (topic.error_code, topic.partitions.len())
}

#[test]
fn metadata_auto_creates_topics_when_allowed() {
    const LEADER_NOT_AVAILABLE: i16 = 5;
    const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
    const INVALID_TOPIC: i16 = 17;
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start_in(dir.path(), &["--set", "num.partitions=3"]);
    let mut client = support::RawClient::connect(broker.addr);
    // The request must allow it (v4+): a consumer-style request does not create.
    assert_eq!(
        metadata_for(&mut client, "fresh", false),
        (UNKNOWN_TOPIC_OR_PARTITION, 0)
    );
    // Kafka answers the creating request LEADER_NOT_AVAILABLE; the retry finds the topic.
    assert_eq!(
        metadata_for(&mut client, "fresh", true),
        (LEADER_NOT_AVAILABLE, 0)
    );
    assert_eq!(metadata_for(&mut client, "fresh", true), (0, 3));
    assert_eq!(
        metadata_for(&mut client, "bad name", true),
        (INVALID_TOPIC, 0)
    );
    drop(broker);

    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start_in(dir.path(), &["--set", "auto.create.topics.enable=false"]);
    let mut client = support::RawClient::connect(broker.addr);
    assert_eq!(
        metadata_for(&mut client, "fresh", true),
        (UNKNOWN_TOPIC_OR_PARTITION, 0)
    );
}
