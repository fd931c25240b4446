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
