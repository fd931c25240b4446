"""Consumes a many-partition topic with kafka-python's incremental fetch sessions (KIP-227).

Usage:
    fetch_sessions.py BOOTSTRAP TOPIC PARTITIONS PER_PARTITION ISOLATION

Produces PER_PARTITION messages to each of PARTITIONS partitions (value b"<p>-<i>", acks=all),
(one batch per partition and round), then assigns every partition from offset 0 with isolation_level ISOLATION (read_uncommitted or
read_committed) and reads until each partition's messages came back once, in order. Counts,
from kafka-python's fetch session log, the full responses that created a session and the
incremental responses with how many partitions they carried. Prints one JSON line; on a
failure prints the reason to stderr and exits 1. Used by tests/fetch_sessions.rs; every wait
is bounded.
"""
import json
import logging
import re
import sys
import time

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

BOUND_SECONDS = 90


class SessionLog(logging.Handler):
    """Counts what kafka-python's FetchSessionHandler says about each response."""

    CREATED = re.compile(r"created a new incremental fetch session (\d+)")
    INCREMENTAL = re.compile(r"incremental fetch response for session (\d+) with (\d+) response partitions")

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.created = 0
        self.incremental = 0
        self.incremental_partitions = 0
        self.errors = []

    def emit(self, record):
        message = record.getMessage()
        if self.CREATED.search(message):
            self.created += 1
        match = self.INCREMENTAL.search(message)
        if match:
            self.incremental += 1
            self.incremental_partitions += int(match.group(2))
        if "unable to process the fetch request" in message or "invalid" in message:
            self.errors.append(message)


def fail(reason):
    print(reason, file=sys.stderr, flush=True)
    sys.exit(1)


def main():
    bootstrap, topic, partitions, per_partition, isolation = sys.argv[1:6]
    partitions, per_partition = int(partitions), int(per_partition)
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    # One batch per partition and round, so that the partitions are read over many fetches.
    for i in range(per_partition):
        for p in range(partitions):
            producer.send(topic, value=b"%d-%d" % (p, i), partition=p)
        producer.flush(timeout=60)
    producer.close()

    handler = SessionLog()
    fetch_log = logging.getLogger("kafka.consumer.fetcher")
    fetch_log.setLevel(logging.DEBUG)
    fetch_log.addHandler(handler)
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        isolation_level=isolation,
        fetch_max_wait_ms=100,
        max_partition_fetch_bytes=64 * 1024,
        # A small response budget: each answer carries a few partitions, the rest wait their
        # turn (the session's order moves partitions that returned data to the back).
        fetch_max_bytes=8 * 1024,
    )
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    seen = [0] * partitions
    deadline = time.monotonic() + BOUND_SECONDS
    total = partitions * per_partition
    consumed = 0
    while consumed < total:
        if time.monotonic() > deadline:
            fail("timed out with %d of %d messages" % (consumed, total))
        for tp, messages in consumer.poll(timeout_ms=500).items():
            for m in messages:
                expected = b"%d-%d" % (tp.partition, seen[tp.partition])
                if m.value != expected or m.offset != seen[tp.partition]:
                    fail("partition %d offset %d: got %r, expected %r at %d"
                         % (tp.partition, m.offset, m.value, expected, seen[tp.partition]))
                seen[tp.partition] += 1
                consumed += 1
    # A few more polls with nothing new: incremental responses that carry no partition.
    idle_before = handler.incremental
    idle_until = time.monotonic() + 1.5
    while time.monotonic() < idle_until:
        for tp, messages in consumer.poll(timeout_ms=200).items():
            if messages:
                fail("unexpected extra messages in %s" % (tp,))
    consumer.close()
    print(json.dumps({
        "consumed": consumed,
        "sessions_created": handler.created,
        "incremental_responses": handler.incremental,
        "incremental_partitions": handler.incremental_partitions,
        "idle_incremental_responses": handler.incremental - idle_before,
        "session_errors": handler.errors,
    }), flush=True)


if __name__ == "__main__":
    main()
