"""Lists a broker's metadata with kafka-python and confluent-kafka and prints it as JSON.

Usage: list_topics.py BOOTSTRAP. Used by tests/metadata_clients.rs; every call is bounded.
"""
import json
import sys

from confluent_kafka.admin import AdminClient
from kafka import KafkaAdminClient, KafkaConsumer


def main() -> None:
    bootstrap = sys.argv[1]
    out = {}

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    out["kafka_python_topics"] = sorted(consumer.topics())
    out["kafka_python_partitions"] = {
        t: sorted(consumer.partitions_for_topic(t) or []) for t in out["kafka_python_topics"]
    }
    consumer.close()

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    cluster = admin.describe_cluster()
    out["kafka_python_cluster_id"] = cluster["cluster_id"]
    out["kafka_python_controller_id"] = cluster["controller_id"]
    admin.close()

    md = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10)
    out["confluent_cluster_id"] = md.cluster_id
    out["confluent_controller_id"] = md.controller_id
    out["confluent_brokers"] = {str(b.id): f"{b.host}:{b.port}" for b in md.brokers.values()}
    out["confluent_topics"] = {
        name: {
            "partitions": sorted(t.partitions),
            "leaders": sorted({p.leader for p in t.partitions.values()}),
            "error": str(t.error) if t.error else None,
        }
        for name, t in md.topics.items()
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
