"""Client sessions whose request frames tests/record_frames.rs records as the mutation corpus.

Usage:
    record_scenarios.py admin BOOTSTRAP TOPIC
        kafka-python admin: create TOPIC (2 partitions), describe its configs and the broker's,
        list groups, describe the cluster, list topics, delete TOPIC.
    record_scenarios.py txn BOOTSTRAP TOPIC TXID GROUP
        kafka-python transactional producer: init, begin, send three messages, add offsets of
        GROUP to the transaction, commit; then a second transaction that is aborted.
    record_scenarios.py confluent BOOTSTRAP TOPIC GROUP
        confluent-kafka: an idempotent producer sends ten messages (with headers and keys),
        then a consumer in GROUP reads them back and commits.

Prints `OK <scenario>` at the end. Every wait is bounded.
"""
import sys
import time

TIMEOUT_MS = 10000


def admin(bootstrap, topic):
    from kafka import KafkaAdminClient
    from kafka.admin import ConfigResource, ConfigResourceType, NewTopic

    client = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=TIMEOUT_MS)
    client.create_topics(
        [NewTopic(topic, 2, 1, topic_configs={"retention.ms": "3600000"})],
        timeout_ms=TIMEOUT_MS,
    )
    client.describe_configs(
        [
            ConfigResource(ConfigResourceType.TOPIC, topic),
            ConfigResource(ConfigResourceType.BROKER, "0"),
        ]
    )
    client.list_groups()
    client.describe_cluster()
    client.list_topics()
    client.describe_topics([topic])
    client.delete_topics([topic], timeout_ms=TIMEOUT_MS)
    client.close()


def txn(bootstrap, topic, txid, group):
    from kafka import KafkaProducer
    from kafka.structs import OffsetAndMetadata, TopicPartition

    producer = KafkaProducer(
        bootstrap_servers=bootstrap,
        transactional_id=txid,
        request_timeout_ms=TIMEOUT_MS,
        max_block_ms=TIMEOUT_MS,
    )
    producer.init_transactions()
    producer.begin_transaction()
    for i in range(3):
        producer.send(topic, key=b"k%d" % i, value=b"committed-%d" % i, partition=i % 2)
    producer.flush(timeout=TIMEOUT_MS / 1000)
    producer.send_offsets_to_transaction(
        {TopicPartition(topic, 0): OffsetAndMetadata(1, "", -1)}, group
    )
    producer.commit_transaction()
    producer.begin_transaction()
    producer.send(topic, value=b"aborted", partition=0)
    producer.flush(timeout=TIMEOUT_MS / 1000)
    producer.abort_transaction()
    producer.close(timeout=TIMEOUT_MS / 1000)


def confluent(bootstrap, topic, group):
    from confluent_kafka import Consumer, Producer

    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "compression.type": "lz4",
            "linger.ms": 5,
        }
    )
    for i in range(10):
        producer.produce(
            topic,
            key=b"key-%d" % i,
            value=b"confluent-%d" % i,
            headers=[("h", b"v%d" % i)],
        )
    if producer.flush(TIMEOUT_MS / 1000) != 0:
        raise SystemExit("confluent producer did not deliver everything")

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": 6000,
        }
    )
    consumer.subscribe([topic])
    seen = 0
    deadline = time.monotonic() + TIMEOUT_MS / 1000
    while seen < 10 and time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is None or message.error():
            continue
        seen += 1
    if seen < 10:
        raise SystemExit(f"confluent consumer read {seen} of 10")
    consumer.commit(asynchronous=False)
    consumer.close()


def main():
    scenario = sys.argv[1]
    args = sys.argv[2:]
    {"admin": admin, "txn": txn, "confluent": confluent}[scenario](*args)
    print(f"OK {scenario}", flush=True)


if __name__ == "__main__":
    main()
