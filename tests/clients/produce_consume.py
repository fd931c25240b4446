"""Produces or consumes a checkable message stream with confluent-kafka or kafka-python.

Usage:
    produce_consume.py CLIENT MODE BOOTSTRAP TOPIC PARTITIONS COUNT [COMPRESSION]

CLIENT is `confluent` or `kafka-python`; MODE is `produce` or `consume`; COMPRESSION is the
producer's compression.type (default none).

Message i (0 <= i < COUNT) goes to partition p = i % PARTITIONS with per-partition sequence
number seq = i // PARTITIONS, key b"<p>-<seq>" and a binary value that depends on (p, seq)
(every byte value occurs; lengths vary), produced with acks=all in per-partition order.

`consume` assigns every partition from offset 0 (no consumer group, no commits) and checks that
every message comes back exactly once, byte-identical, at offset == seq, in per-partition
order, and that nothing follows. Both modes print one JSON line of statistics; on any failure
they print the reason to stderr and exit 1. Used by tests/data_plane.rs; every wait is bounded.
"""
import json
import sys
import time

PATTERN = bytes(range(256)) * 3
# A consumer that sees nothing new for this long gives up.
STALL_SECONDS = 60


def key_of(p: int, seq: int) -> bytes:
    return b"%d-%d" % (p, seq)


def value_of(p: int, seq: int) -> bytes:
    start = (seq * 31 + p * 7) % 256
    length = 16 + (seq * 13 + p) % 48
    return b"%02d:%08d|" % (p, seq) + PATTERN[start : start + length]


def fail(reason: str) -> None:
    print(reason, file=sys.stderr, flush=True)
    sys.exit(1)


class Checker:
    """Checks consumed messages against the stream that was produced."""

    def __init__(self, partitions: int, count: int):
        self.expected = [count // partitions + (1 if p < count % partitions else 0) for p in range(partitions)]
        self.next = [0] * partitions
        self.total = 0
        self.count = count

    def check(self, p: int, offset: int, key: bytes, value: bytes) -> None:
        seq = self.next[p]
        if seq >= self.expected[p]:
            fail(f"partition {p}: unexpected extra message at offset {offset} key={key!r}")
        if offset != seq:
            fail(f"partition {p}: expected offset {seq}, got offset {offset} key={key!r}")
        if key != key_of(p, seq):
            fail(f"partition {p} offset {offset}: expected key {key_of(p, seq)!r}, got {key!r}")
        if value != value_of(p, seq):
            fail(
                f"partition {p} offset {offset}: value differs: expected "
                f"{value_of(p, seq)!r}, got {value!r}"
            )
        self.next[p] = seq + 1
        self.total += 1

    def done(self) -> bool:
        return self.total == self.count

    def missing(self) -> str:
        return ", ".join(
            f"p{p}: {self.next[p]}/{self.expected[p]}"
            for p in range(len(self.expected))
            if self.next[p] != self.expected[p]
        )


def produce_confluent(bootstrap: str, topic: str, partitions: int, count: int, compression: str) -> dict:
    from confluent_kafka import Producer

    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "linger.ms": 5,
            "enable.idempotence": True,
            "queue.buffering.max.messages": 500000,
            "message.timeout.ms": 120000,
            "compression.type": compression,
        }
    )
    stats = {"acked": 0, "errors": []}

    def report(err, msg):
        if err is not None:
            if len(stats["errors"]) < 10:
                stats["errors"].append(f"p{msg.partition()} key={msg.key()!r}: {err}")
            stats.setdefault("failed", 0)
            stats["failed"] += 1
        else:
            stats["acked"] += 1

    for i in range(count):
        p, seq = i % partitions, i // partitions
        while True:
            try:
                producer.produce(topic, value_of(p, seq), key_of(p, seq), partition=p, on_delivery=report)
                break
            except BufferError:
                producer.poll(0.1)
        if i % 1000 == 0:
            producer.poll(0)
    remaining = producer.flush(180)
    if remaining:
        fail(f"confluent-kafka: {remaining} messages not delivered after flush(180)")
    if stats["errors"] or stats["acked"] != count:
        fail(f"confluent-kafka: acked {stats['acked']} of {count}; errors: {stats['errors']}")
    return {"acked": stats["acked"]}


def produce_kafka_python(bootstrap: str, topic: str, partitions: int, count: int, compression: str) -> dict:
    from kafka import KafkaProducer

    producer = KafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        linger_ms=5,
        batch_size=64 * 1024,
        # Idempotence makes a retried batch (after a request timeout under load) land once.
        enable_idempotence=True,
        request_timeout_ms=30000,
        compression_type=None if compression == "none" else compression,
    )
    stats = {"acked": 0, "failed": 0, "errors": []}

    def ok(_metadata):
        stats["acked"] += 1

    def bad(exc):
        stats["failed"] += 1
        if len(stats["errors"]) < 10:
            stats["errors"].append(repr(exc))

    for i in range(count):
        p, seq = i % partitions, i // partitions
        producer.send(topic, value=value_of(p, seq), key=key_of(p, seq), partition=p).add_callback(
            ok
        ).add_errback(bad)
    producer.flush(timeout=180)
    producer.close(timeout=30)
    if stats["failed"] or stats["acked"] != count:
        fail(f"kafka-python: acked {stats['acked']} of {count}; errors: {stats['errors']}")
    return {"acked": stats["acked"]}


def consume_confluent(bootstrap: str, topic: str, partitions: int, count: int, _compression: str) -> dict:
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            # librdkafka wants a group id; assign() never joins the group.
            "group.id": "produce-consume-check",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "error",
        }
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    checker = Checker(partitions, count)
    last_progress = time.monotonic()
    while not checker.done():
        messages = consumer.consume(num_messages=10000, timeout=1.0)
        for msg in messages:
            if msg.error() is not None:
                fail(f"confluent-kafka consume error: {msg.error()}")
            checker.check(msg.partition(), msg.offset(), msg.key(), msg.value())
        if messages:
            last_progress = time.monotonic()
        elif time.monotonic() - last_progress > STALL_SECONDS:
            fail(f"confluent-kafka: no progress for {STALL_SECONDS}s; missing {checker.missing()}")
    # Nothing beyond the stream: the high watermarks are exactly the counts.
    for p in range(partitions):
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
        if (low, high) != (0, checker.expected[p]):
            fail(f"partition {p}: watermarks {(low, high)}, expected {(0, checker.expected[p])}")
    consumer.close()
    return {"consumed": checker.total}


def consume_kafka_python(bootstrap: str, topic: str, partitions: int, count: int, _compression: str) -> dict:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="none",
        max_poll_records=10000,
        request_timeout_ms=30000,
    )
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    consumer.assign(tps)
    for tp in tps:
        consumer.seek(tp, 0)
    checker = Checker(partitions, count)
    last_progress = time.monotonic()
    while not checker.done():
        batches = consumer.poll(timeout_ms=1000, max_records=10000)
        got = 0
        for tp, records in batches.items():
            for r in records:
                checker.check(tp.partition, r.offset, r.key, r.value)
            got += len(records)
        if got:
            last_progress = time.monotonic()
        elif time.monotonic() - last_progress > STALL_SECONDS:
            fail(f"kafka-python: no progress for {STALL_SECONDS}s; missing {checker.missing()}")
    ends = consumer.end_offsets(tps)
    starts = consumer.beginning_offsets(tps)
    for tp in tps:
        if (starts[tp], ends[tp]) != (0, checker.expected[tp.partition]):
            fail(
                f"partition {tp.partition}: offsets {(starts[tp], ends[tp])}, "
                f"expected {(0, checker.expected[tp.partition])}"
            )
    consumer.close()
    return {"consumed": checker.total}


def main() -> None:
    client, mode, bootstrap, topic, partitions, count = sys.argv[1:7]
    partitions, count = int(partitions), int(count)
    compression = sys.argv[7] if len(sys.argv) > 7 else "none"
    run = {
        ("confluent", "produce"): produce_confluent,
        ("confluent", "consume"): consume_confluent,
        ("kafka-python", "produce"): produce_kafka_python,
        ("kafka-python", "consume"): consume_kafka_python,
    }[(client, mode)]
    started = time.monotonic()
    out = run(bootstrap, topic, partitions, count, compression)
    out["seconds"] = round(time.monotonic() - started, 2)
    out["client"] = client
    out["mode"] = mode
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
