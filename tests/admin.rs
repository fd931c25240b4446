//! Topic administration through librdkafka's admin client (the `rdkafka` crate): create,
//! grow, configure, describe and delete topics, with Kafka's error codes for what is refused,
//! and the changes persisted across a restart and visible on every shard.

mod support;

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{
    AdminClient, AdminOptions, AlterConfig, ConfigSource, NewPartitions, NewTopic,
    OwnedResourceSpecifier, ResourceSpecifier, TopicReplication,
};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::types::RDKafkaErrorCode;
use support::Broker;

fn admin(broker: &Broker) -> AdminClient<DefaultClientContext> {
    ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .create()
        .expect("admin client")
}

fn options() -> AdminOptions {
    AdminOptions::new().request_timeout(Some(Duration::from_secs(10)))
}

fn block<F: std::future::Future>(future: F) -> F::Output {
    futures::executor::block_on(future)
}

/// Partition counts of every topic, as a fresh client sees them.
fn topics(broker: &Broker) -> Vec<(String, usize)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .create()
        .unwrap();
    let metadata = consumer
        .fetch_metadata(None, Duration::from_secs(10))
        .unwrap();
    let mut topics: Vec<_> = metadata
        .topics()
        .iter()
        .map(|t| (t.name().to_string(), t.partitions().len()))
        .collect();
    topics.sort();
    topics
}

#[test]
fn create_describe_alter_grow_delete_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start_in(dir.path(), &["--set", "num.partitions=4"]);
    let client = admin(&broker);

    let results = block(
        client.create_topics(
            &[
                NewTopic::new("orders", 12, TopicReplication::Fixed(1))
                    .set("retention.ms", "3600000")
                    .set("cleanup.policy", "delete"),
                NewTopic::new("defaults", -1, TopicReplication::Fixed(-1)),
                NewTopic::new("bad/name", 1, TopicReplication::Fixed(1)),
                NewTopic::new("replicated", 1, TopicReplication::Fixed(3)),
                NewTopic::new("zero", 0, TopicReplication::Fixed(1)),
                NewTopic::new("badconfig", 1, TopicReplication::Fixed(1))
                    .set("retention.ms", "soon"),
            ],
            &options(),
        ),
    )
    .unwrap();
    let codes: Vec<_> = results
        .iter()
        .map(|r| r.as_ref().map(String::as_str).map_err(|(_, code)| *code))
        .collect();
    assert_eq!(
        codes,
        vec![
            Ok("orders"),
            Ok("defaults"),
            Err(RDKafkaErrorCode::InvalidTopic),
            Err(RDKafkaErrorCode::InvalidReplicationFactor),
            Err(RDKafkaErrorCode::InvalidPartitions),
            Err(RDKafkaErrorCode::InvalidConfig),
        ]
    );
    let again = block(client.create_topics(
        &[NewTopic::new("orders", 1, TopicReplication::Fixed(1))],
        &options(),
    ))
    .unwrap();
    assert_eq!(
        again[0],
        Err(("orders".to_string(), RDKafkaErrorCode::TopicAlreadyExists))
    );
    let dry = block(client.create_topics(
        &[NewTopic::new("dry-run", 1, TopicReplication::Fixed(1))],
        &options().validate_only(true),
    ))
    .unwrap();
    assert_eq!(dry[0], Ok("dry-run".to_string()));
    // Every connection (spread over the shards by SO_REUSEPORT) sees the same topics.
    for _ in 0..4 {
        assert_eq!(
            topics(&broker),
            vec![("defaults".to_string(), 4), ("orders".to_string(), 12)]
        );
    }

    // Configs: the override and its source, a broker default and its source.
    let described =
        block(client.describe_configs(&[ResourceSpecifier::Topic("orders")], &options())).unwrap();
    let resource = described[0].as_ref().unwrap();
    let retention = resource.get("retention.ms").unwrap();
    assert_eq!(retention.value.as_deref(), Some("3600000"));
    assert_eq!(retention.source, ConfigSource::DynamicTopic);
    let segment = resource.get("segment.bytes").unwrap();
    assert_eq!(segment.value.as_deref(), Some("1073741824"));
    assert_eq!(segment.source, ConfigSource::Default);

    // AlterConfigs replaces the override set: retention.ms goes back to the default.
    let altered = block(client.alter_configs(
        &[AlterConfig::new(ResourceSpecifier::Topic("orders")).set("segment.bytes", "1048576")],
        &options(),
    ))
    .unwrap();
    assert_eq!(
        altered[0],
        Ok(OwnedResourceSpecifier::Topic("orders".to_string()))
    );
    // A value out of range is refused (INVALID_CONFIG; rust-rdkafka does not surface
    // per-resource AlterConfigs errors, so the test checks that nothing changed).
    block(client.alter_configs(
        &[AlterConfig::new(ResourceSpecifier::Topic("orders")).set("segment.bytes", "1")],
        &options(),
    ))
    .unwrap();
    let described = block(client.describe_configs(
        &[
            ResourceSpecifier::Topic("orders"),
            ResourceSpecifier::Broker(0),
        ],
        &options(),
    ))
    .unwrap();
    let topic = described[0].as_ref().unwrap();
    assert_eq!(
        topic.get("segment.bytes").unwrap().value.as_deref(),
        Some("1048576")
    );
    assert_eq!(
        topic.get("retention.ms").unwrap().source,
        ConfigSource::Default
    );
    let broker_configs = described[1].as_ref().unwrap();
    let partitions = broker_configs.get("num.partitions").unwrap();
    assert_eq!(partitions.value.as_deref(), Some("4"));
    assert_eq!(partitions.source, ConfigSource::StaticBroker);

    // Grow, then refuse shrinking.
    let grown = block(client.create_partitions(
        &[
            NewPartitions::new("defaults", 6),
            NewPartitions::new("orders", 3),
        ],
        &options(),
    ))
    .unwrap();
    assert_eq!(grown[0], Ok("defaults".to_string()));
    assert_eq!(
        grown[1],
        Err(("orders".to_string(), RDKafkaErrorCode::InvalidPartitions))
    );

    let deleted = block(client.delete_topics(&["defaults", "missing"], &options())).unwrap();
    assert_eq!(deleted[0], Ok("defaults".to_string()));
    assert_eq!(
        deleted[1],
        Err((
            "missing".to_string(),
            RDKafkaErrorCode::UnknownTopicOrPartition
        ))
    );
    assert_eq!(topics(&broker), vec![("orders".to_string(), 12)]);

    // Everything above survives a restart.
    drop(client);
    assert!(broker.stop().success());
    let broker = Broker::start_in(dir.path(), &[]);
    assert_eq!(topics(&broker), vec![("orders".to_string(), 12)]);
    let described =
        block(admin(&broker).describe_configs(&[ResourceSpecifier::Topic("orders")], &options()))
            .unwrap();
    let topic = described[0].as_ref().unwrap();
    assert_eq!(
        topic.get("segment.bytes").unwrap().value.as_deref(),
        Some("1048576")
    );
}

#[test]
fn deletion_can_be_disabled() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start_in(dir.path(), &["--set", "delete.topic.enable=false"]);
    let client = admin(&broker);
    block(client.create_topics(
        &[NewTopic::new("kept", 1, TopicReplication::Fixed(1))],
        &options(),
    ))
    .unwrap();
    let deleted = block(client.delete_topics(&["kept"], &options())).unwrap();
    assert_eq!(
        deleted[0],
        Err(("kept".to_string(), RDKafkaErrorCode::TopicDeletionDisabled))
    );
    assert_eq!(topics(&broker), vec![("kept".to_string(), 1)]);
}

#[test]
fn dynamic_broker_configs_apply_to_topics_and_persist() {
    use support::run_bounded;
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start_in(dir.path(), &["--node-id", "3"]);
    let script = r#"
import sys, json
from confluent_kafka.admin import (AdminClient, NewTopic, ConfigResource, ConfigEntry,
                                   AlterConfigOpType)
a = AdminClient({'bootstrap.servers': sys.argv[1]})
step = sys.argv[2]
def describe(kind, name, keys):
    res = ConfigResource(kind, name)
    c = a.describe_configs([res])[res].result()
    return {k: [c[k].value, int(c[k].source), c[k].is_read_only] for k in keys}
def alter(kind, name, key, value):
    res = ConfigResource(kind, name, incremental_configs=[
        ConfigEntry(key, value, incremental_operation=AlterConfigOpType.SET)])
    try:
        a.incremental_alter_configs([res])[res].result()
        return 'ok'
    except Exception as e:
        return e.args[0].name()
out = {}
if step == 'alter':
    a.create_topics([NewTopic('dyn', 1, 1)])['dyn'].result()
    out['node'] = alter('broker', '3', 'log.retention.ms', '1234')
    out['static'] = alter('broker', '3', 'num.partitions', '7')
    out['bad'] = alter('broker', '3', 'log.retention.ms', 'soon')
out['broker'] = describe('broker', '3', ['log.retention.ms', 'log.segment.bytes', 'num.partitions'])
out['topic'] = describe('topic', 'dyn', ['retention.ms', 'segment.bytes'])
print(json.dumps(out))
"#;
    let run = |broker: &Broker, step: &str| -> serde_json::Value {
        let (status, stdout, stderr) = run_bounded(
            "python3",
            &["-c", script, &broker.bootstrap(), step],
            Duration::from_secs(60),
        );
        assert!(status.success(), "{stderr}");
        serde_json::from_str(stdout.trim()).unwrap()
    };
    // The cluster-wide default (BROKER resource ""), which confluent-kafka cannot name.
    {
        use kafka_protocol::messages::incremental_alter_configs_request::{
            AlterConfigsResource, AlterableConfig,
        };
        use kafka_protocol::messages::{
            ApiKey, IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
        };
        use kafka_protocol::protocol::StrBytes;
        let resource = |name: &'static str| {
            AlterConfigsResource::default()
                .with_resource_type(4)
                .with_resource_name(StrBytes::from_static_str(name))
                .with_configs(vec![
                    AlterableConfig::default()
                        .with_name(StrBytes::from_static_str("log.segment.bytes"))
                        .with_config_operation(0)
                        .with_value(Some(StrBytes::from_static_str("2097152"))),
                ])
        };
        let request = IncrementalAlterConfigsRequest::default()
            .with_resources(vec![resource(""), resource("9")]);
        let mut client = support::RawClient::connect(broker.addr);
        let response: IncrementalAlterConfigsResponse =
            client.call(ApiKey::IncrementalAlterConfigs, 1, &request);
        assert_eq!(response.responses[0].error_code, 0);
        assert_eq!(
            response.responses[1].error_code, 42,
            "another broker's id: INVALID_REQUEST"
        );
    }
    let out = run(&broker, "alter");
    assert_eq!(out["node"], "ok");
    assert_eq!(out["static"], "INVALID_CONFIG");
    assert_eq!(out["bad"], "INVALID_CONFIG");
    let expected = serde_json::json!({
        "broker": {
            "log.retention.ms": ["1234", 2, false],
            "log.segment.bytes": ["2097152", 3, false],
            "num.partitions": ["1", 5, true],
        },
        "topic": {
            "retention.ms": ["1234", 2, false],
            "segment.bytes": ["2097152", 3, false],
        },
    });
    assert_eq!(out["broker"], expected["broker"]);
    assert_eq!(out["topic"], expected["topic"]);
    // Dynamic settings live in the metadata log: they survive a restart.
    assert!(broker.stop().success());
    let broker = Broker::start_in(dir.path(), &["--node-id", "3"]);
    let out = run(&broker, "describe");
    assert_eq!(out["broker"], expected["broker"]);
    assert_eq!(out["topic"], expected["topic"]);
}

/// DescribeConfigs on the BROKER resource, as confluent-kafka reads it: Kafka's names with the
/// values this node really runs with (the listener it serves, the data directory, retention
/// derived from `log.retention.hours` as Kafka derives it), their sources, read-only flags and
/// synonyms; a topic falls back to the same derived retention.
#[test]
fn broker_configs_are_described_with_kafka_names_and_effective_values() {
    use support::run_bounded;
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start_in(dir.path(), &["--set", "log.retention.hours=2"]);
    let script = r#"
import sys, json
from confluent_kafka.admin import AdminClient, NewTopic, ConfigResource
a = AdminClient({'bootstrap.servers': sys.argv[1]})
a.create_topics([NewTopic('t', 1, 1)])['t'].result()
def describe(kind, name):
    res = ConfigResource(kind, name)
    c = a.describe_configs([res])[res].result()
    return {k: {'value': e.value, 'source': int(e.source), 'read_only': e.is_read_only,
                'synonyms': sorted(e.synonyms.keys())}
            for k, e in c.items()}
print(json.dumps({'broker': describe('broker', '0'), 'topic': describe('topic', 't')}))
"#;
    let (status, stdout, stderr) = run_bounded(
        "python3",
        &["-c", script, &broker.bootstrap()],
        Duration::from_secs(60),
    );
    assert!(status.success(), "{stderr}");
    let out: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    let config = |name: &str| out["broker"][name].clone();
    let value = |name: &str| config(name)["value"].clone();
    let listener = format!("PLAINTEXT://{}", broker.bootstrap());
    // Sources: 4 STATIC_BROKER_CONFIG (the harness passes --listen and --data-dir), 5 DEFAULT.
    assert_eq!(value("listeners"), listener.as_str());
    assert_eq!(value("advertised.listeners"), listener.as_str());
    assert_eq!(config("advertised.listeners")["source"], 4);
    assert_eq!(config("listeners")["read_only"], true);
    let data_dir = dir.path().to_str().unwrap();
    assert_eq!(value("log.dirs"), data_dir);
    assert_eq!(value("log.dir"), data_dir);
    assert_eq!(config("log.dirs")["source"], 4);
    for id in ["node.id", "broker.id"] {
        assert_eq!(value(id), "0");
        assert_eq!(config(id)["source"], 5);
    }
    for (name, expected) in [
        ("num.partitions", "1"),
        ("default.replication.factor", "1"),
        ("min.insync.replicas", "1"),
        ("log.segment.bytes", "1073741824"),
        ("message.max.bytes", "1048588"),
        ("log.retention.bytes", "-1"),
        ("log.roll.ms", "604800000"),
        ("log.roll.hours", "168"),
        ("log.retention.hours", "2"),
        ("log.message.format.version", "3.0-IV1"),
    ] {
        assert_eq!(value(name), expected, "{name}");
    }
    // log.retention.ms is not set: it comes from log.retention.hours, as in Kafka.
    let retention = config("log.retention.ms");
    assert_eq!(retention["value"], "7200000");
    assert_eq!(retention["source"], 4);
    assert_eq!(retention["read_only"], false);
    assert_eq!(
        retention["synonyms"],
        serde_json::json!(["log.retention.hours"])
    );
    assert_eq!(value("log.retention.minutes"), serde_json::Value::Null);
    let topic = &out["topic"]["retention.ms"];
    assert_eq!(topic["value"], "7200000");
    assert_eq!(topic["source"], 4);
    assert_eq!(topic["read_only"], false);
}

/// Kafka 3.9 still accepts `message.format.version` (deprecated, ignored from inter-broker
/// protocol 3.0 on): accepted when it names a version, described like any other; the topic
/// configs it still honours and the broker does not implement are refused, never ignored.
#[test]
fn deprecated_topic_configs_are_accepted_as_kafka_3_9_does() {
    use support::run_bounded;
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start_in(dir.path(), &[]);
    let script = r#"
import sys, json
from confluent_kafka.admin import (AdminClient, NewTopic, ConfigResource, ConfigEntry,
                                   AlterConfigOpType)
a = AdminClient({'bootstrap.servers': sys.argv[1]})
def create(name, configs):
    try:
        a.create_topics([NewTopic(name, 1, 1, config=configs)])[name].result()
        return 'ok'
    except Exception as e:
        return e.args[0].name()
def alter(name, key, value):
    res = ConfigResource('topic', name, incremental_configs=[
        ConfigEntry(key, value, incremental_operation=AlterConfigOpType.SET)])
    try:
        a.incremental_alter_configs([res])[res].result()
        return 'ok'
    except Exception as e:
        return e.args[0].name()
def describe(name, key):
    res = ConfigResource('topic', name)
    e = a.describe_configs([res])[res].result()[key]
    return [e.value, int(e.source)]
out = {
    'old': create('old', {'message.format.version': '0.10.2'}),
    'bad': create('bad', {'message.format.version': '9.9'}),
    'down': create('down', {'message.downconversion.enable': 'false'}),
    'diff': create('diff', {'message.timestamp.difference.max.ms': '1000'}),
    'plain': create('plain', {}),
}
out['old_described'] = describe('old', 'message.format.version')
out['plain_described'] = describe('plain', 'message.format.version')
out['alter'] = alter('plain', 'message.format.version', '2.8-IV1')
out['alter_bad'] = alter('plain', 'message.format.version', '2.8-IV7')
out['altered'] = describe('plain', 'message.format.version')
print(json.dumps(out))
"#;
    let (status, stdout, stderr) = run_bounded(
        "python3",
        &["-c", script, &broker.bootstrap()],
        Duration::from_secs(60),
    );
    assert!(status.success(), "{stderr}");
    let out: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(
        out,
        serde_json::json!({
            "old": "ok",
            "bad": "INVALID_CONFIG",
            "down": "INVALID_CONFIG",
            "diff": "INVALID_CONFIG",
            "plain": "ok",
            "old_described": ["0.10.2", 1],
            "plain_described": ["3.0-IV1", 5],
            "alter": "ok",
            "alter_bad": "INVALID_CONFIG",
            "altered": ["2.8-IV1", 1],
        })
    );
}

/// DescribeLogDirs through kafka-python's admin client: the node's one log directory (absolute),
/// each asked partition that has a log with its size (the bytes of its batches) and lag 0, the
/// file system's size and free space; partitions that do not exist are left out. Without
/// DESCRIBE on the cluster the answer is CLUSTER_AUTHORIZATION_FAILED.
#[test]
fn describe_log_dirs_reports_the_data_directory_and_partition_sizes() {
    use support::run_bounded;
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start_in(dir.path(), &[]);
    let script = r#"
import json, sys
from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import NewTopic
a = KafkaAdminClient(bootstrap_servers=sys.argv[1])
a.create_topics([NewTopic('sized', 2, 1)])
p = KafkaProducer(bootstrap_servers=sys.argv[1], acks='all')
for i in range(10):
    p.send('sized', b'x' * 100, partition=0)
p.flush()
asked = a.describe_log_dirs({'sized': [0, 1, 7]})
every = a.describe_log_dirs()
print(json.dumps({'asked': asked, 'every': every}))
"#;
    let (status, stdout, stderr) = run_bounded(
        "python3",
        &["-c", script, &broker.bootstrap()],
        Duration::from_secs(60),
    );
    assert!(status.success(), "{stderr}");
    let out: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    let asked = &out["asked"];
    assert_eq!(asked.as_array().unwrap().len(), 1, "{asked}");
    assert_eq!(asked[0]["broker"], 0);
    let dirs = asked[0]["log_dirs"].as_array().unwrap();
    assert_eq!(dirs.len(), 1, "one data directory: {asked}");
    let log_dir = &dirs[0];
    assert_eq!(log_dir["error_code"], 0);
    assert_eq!(log_dir["log_dir"], dir.path().to_str().unwrap());
    let total = log_dir["total_bytes"].as_i64().unwrap();
    let usable = log_dir["usable_bytes"].as_i64().unwrap();
    assert!(total > 0 && (0..=total).contains(&usable), "{log_dir}");
    let topics = log_dir["topics"].as_array().unwrap();
    assert_eq!(topics.len(), 1);
    assert_eq!(topics[0]["name"], "sized");
    let partitions: Vec<(i64, i64, i64)> = topics[0]["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["partition_index"].as_i64().unwrap(),
                p["partition_size"].as_i64().unwrap(),
                p["offset_lag"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        partitions.len(),
        2,
        "partition 7 does not exist: {partitions:?}"
    );
    assert_eq!(partitions[0].0, 0);
    assert!(
        partitions[0].1 > 1000,
        "ten 100-byte records: {partitions:?}"
    );
    assert_eq!(partitions[1], (1, 0, 0));
    assert_eq!(partitions[0].2, 0);
    // Null topics: every log, the internal topics' too once they exist.
    let every = out["every"][0]["log_dirs"][0]["topics"].as_array().unwrap();
    assert!(every.iter().any(|t| t["name"] == "sized"), "{every:?}");
    drop(broker);

    // An authorizer that lets nobody describe the cluster.
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start_in(
        dir.path(),
        &[
            "--set",
            "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        ],
    );
    use kafka_protocol::messages::{ApiKey, DescribeLogDirsRequest, DescribeLogDirsResponse};
    let mut client = support::RawClient::connect(broker.addr);
    for version in [1, 4] {
        let response: DescribeLogDirsResponse = client.call(
            ApiKey::DescribeLogDirs,
            version,
            &DescribeLogDirsRequest::default(),
        );
        assert!(response.results.is_empty());
        if version >= 3 {
            assert_eq!(response.error_code, 31, "CLUSTER_AUTHORIZATION_FAILED");
        }
    }
}

/// DescribeProducers through kafka-python's admin client: an idempotent producer with its last
/// sequence and timestamp, a transactional one with the first offset of its open transaction,
/// which closes (and the coordinator epoch is recorded) once the commit marker is written.
/// Raw frames: a partition that does not exist is UNKNOWN_TOPIC_OR_PARTITION, and a topic the
/// client may not READ is TOPIC_AUTHORIZATION_FAILED.
#[test]
fn describe_producers_lists_the_partition_producer_state() {
    use kafka_protocol::messages::describe_producers_request::TopicRequest;
    use kafka_protocol::messages::{ApiKey, DescribeProducersRequest, DescribeProducersResponse};
    use support::run_bounded;
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start_in(dir.path(), &[]);
    let script = r#"
import json, sys, time
from kafka import KafkaAdminClient, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
b = sys.argv[1]
a = KafkaAdminClient(bootstrap_servers=b)
a.create_topics([NewTopic('prod', 1, 1)])
before = int(time.time() * 1000)
p = KafkaProducer(bootstrap_servers=b, enable_idempotence=True, acks='all', linger_ms=50)
for i in range(3):
    p.send('prod', b'v', partition=0)
p.flush()
t = KafkaProducer(bootstrap_servers=b, transactional_id='tx-desc')
t.init_transactions()
t.begin_transaction()
t.send('prod', b't', partition=0)
t.flush()
def states():
    r = a.describe_producers([TopicPartition('prod', 0)])[TopicPartition('prod', 0)]
    return [[s.producer_id, s.producer_epoch, s.last_sequence, s.last_timestamp,
             s.coordinator_epoch, s.current_transaction_start_offset]
            for s in r.active_producers]
open_txn = states()
t.commit_transaction()
deadline = time.time() + 10
committed = states()
while committed[1][5] != -1 and time.time() < deadline:
    time.sleep(0.05)
    committed = states()
print(json.dumps({'before': before, 'after': int(time.time() * 1000), 'open': open_txn,
                  'committed': committed}))
"#;
    let (status, stdout, stderr) = run_bounded(
        "python3",
        &["-c", script, &broker.bootstrap()],
        Duration::from_secs(60),
    );
    assert!(status.success(), "{stderr}");
    let out: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    let (before, after) = (
        out["before"].as_i64().unwrap(),
        out["after"].as_i64().unwrap(),
    );
    let row = |which: &str, i: usize| -> Vec<i64> {
        out[which][i]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap())
            .collect()
    };
    // [id, epoch, last sequence, last timestamp, coordinator epoch, open transaction's start].
    let idempotent = row("open", 0);
    assert_eq!(
        (idempotent[2], idempotent[4], idempotent[5]),
        (2, -1, -1),
        "{out}"
    );
    assert!((before..=after).contains(&idempotent[3]), "{out}");
    let transactional = row("open", 1);
    assert_eq!(
        (transactional[2], transactional[4], transactional[5]),
        (0, -1, 3)
    );
    assert!((before..=after).contains(&transactional[3]), "{out}");
    let committed = row("committed", 1);
    assert_eq!(committed[0], transactional[0]);
    assert_eq!(
        committed[5], -1,
        "the commit marker closed the transaction: {out}"
    );
    assert!(committed[4] >= 0, "the marker's coordinator epoch: {out}");
    assert_eq!(row("committed", 0), idempotent);

    let request = |partitions: Vec<i32>| {
        DescribeProducersRequest::default().with_topics(vec![
            TopicRequest::default()
                .with_name(kafka_protocol::messages::TopicName("prod".into()))
                .with_partition_indexes(partitions),
        ])
    };
    let mut client = support::RawClient::connect(broker.addr);
    let response: DescribeProducersResponse =
        client.call(ApiKey::DescribeProducers, 0, &request(vec![0, 5]));
    let partitions = &response.topics[0].partitions;
    assert_eq!(
        (
            partitions[0].error_code,
            partitions[0].active_producers.len()
        ),
        (0, 2)
    );
    assert_eq!(
        (partitions[1].partition_index, partitions[1].error_code),
        (5, 3)
    );
    drop(client);
    drop(broker);

    // With an authorizer and no ACL, the topic may not be read.
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start_in(
        dir.path(),
        &[
            "--set",
            "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        ],
    );
    let mut client = support::RawClient::connect(broker.addr);
    let response: DescribeProducersResponse =
        client.call(ApiKey::DescribeProducers, 0, &request(vec![0]));
    assert_eq!(
        response.topics[0].partitions[0].error_code, 29,
        "TOPIC_AUTHORIZATION_FAILED"
    );
}

/// ElectLeaders on a lone node, as a one-broker Kafka answers: every partition is led by its
/// only replica, its preferred one, so no election is needed (confluent-kafka's
/// `AdminClient.elect_leaders`); unknown partitions are UNKNOWN_TOPIC_OR_PARTITION; without ALTER
/// on the cluster, CLUSTER_AUTHORIZATION_FAILED for the request and each partition.
#[test]
fn elect_leaders_on_a_lone_node_is_never_needed() {
    use kafka_protocol::messages::elect_leaders_request::TopicPartitions;
    use kafka_protocol::messages::{ApiKey, ElectLeadersRequest, ElectLeadersResponse, TopicName};
    use kafka_protocol::protocol::StrBytes;
    use support::run_bounded;
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start_in(dir.path(), &[]);
    let created = block(admin(&broker).create_topics(
        &[NewTopic::new("lone", 2, TopicReplication::Fixed(1))],
        &options(),
    ))
    .unwrap();
    assert!(created[0].is_ok(), "{created:?}");
    let script = r#"
import sys
from confluent_kafka import TopicPartition, ElectionType
from confluent_kafka.admin import AdminClient
a = AdminClient({'bootstrap.servers': sys.argv[1]})
asked = [TopicPartition('lone', 0), TopicPartition('lone', 1), TopicPartition('lone', 7),
         TopicPartition('nope', 0)]
for kind, parts in [(ElectionType.PREFERRED, asked), (ElectionType.UNCLEAN, asked[:1]),
                    (ElectionType.PREFERRED, None)]:
    result = a.elect_leaders(kind, parts).result(timeout=30)
    print(kind.name, sorted('%s:%d=%s' % (tp.topic, tp.partition, e.name() if e else 'NONE')
                            for tp, e in result.items()))
"#;
    let (status, out, err) = run_bounded(
        "python3",
        &["-c", script, &broker.bootstrap()],
        Duration::from_secs(60),
    );
    assert!(status.success(), "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        vec![
            "PREFERRED ['lone:0=ELECTION_NOT_NEEDED', 'lone:1=ELECTION_NOT_NEEDED', \
             'lone:7=UNKNOWN_TOPIC_OR_PART', 'nope:0=UNKNOWN_TOPIC_OR_PART']",
            "UNCLEAN ['lone:0=ELECTION_NOT_NEEDED']",
            "PREFERRED []",
        ],
        "{out}"
    );
    drop(broker);

    // With an authorizer and no ACL for the anonymous principal: refused.
    let authorized = tempfile::tempdir().unwrap();
    let broker = Broker::start_in(
        authorized.path(),
        &[
            "--set",
            "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        ],
    );
    let mut client = support::RawClient::connect(broker.addr);
    let request = ElectLeadersRequest::default()
        .with_election_type(0)
        .with_topic_partitions(Some(vec![
            TopicPartitions::default()
                .with_topic(TopicName(StrBytes::from_static_str("lone")))
                .with_partitions(vec![0, 1]),
        ]));
    let response: ElectLeadersResponse = client.call(ApiKey::ElectLeaders, 2, &request);
    assert_eq!(response.error_code, 31, "CLUSTER_AUTHORIZATION_FAILED");
    let codes: Vec<i16> = response.replica_election_results[0]
        .partition_result
        .iter()
        .map(|p| p.error_code)
        .collect();
    assert_eq!(codes, vec![31, 31]);
    // An election type Kafka does not have: INVALID_REQUEST (v1 and later carry the type).
    drop(client);
    drop(broker);
    let broker = Broker::start_in(authorized.path(), &[]);
    let mut client = support::RawClient::connect(broker.addr);
    let response: ElectLeadersResponse =
        client.call(ApiKey::ElectLeaders, 1, &request.with_election_type(5));
    assert_eq!(response.error_code, 42, "INVALID_REQUEST");
}
