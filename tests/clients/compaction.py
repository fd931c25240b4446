"""Log compaction seen by confluent-kafka: latest value per key, offsets kept, tombstones gone.

Usage:
    compaction.py BOOTSTRAP TOPIC

Creates TOPIC (one partition) with cleanup.policy=compact, segment.bytes=4096,
min.cleanable.dirty.ratio=0.01 and delete.retention.ms=0; produces ROUNDS values for each of
KEYS keys (lz4-compressed batches and uncompressed ones alternate), then a tombstone for key
"dead", then filler records under one key so that everything before them lies in closed
segments the cleaner may clean. Each produced record's offset is taken from its delivery report.

Then, within a bounded time, consumes the partition from offset 0 again and again until it
shows: for every key exactly one record, its latest value at the offset it was produced at,
no record of "dead", and offsets that grow. A record without a key is refused with
INVALID_RECORD. Prints one JSON line of statistics; on failure the reason on stderr, exit 1.
"""
import json
import sys
import time

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

KEYS = 40
ROUNDS = 25
FILLER = 300
DEADLINE_SECONDS = 60


def fail(reason: str) -> None:
    print(reason, file=sys.stderr, flush=True)
    sys.exit(1)


def produce_all(bootstrap: str, topic: str) -> dict:
    """Produces the stream; returns {offset: (key, value)} from the delivery reports."""
    delivered = {}
    errors = []

    def report(err, msg):
        if err is not None:
            errors.append(str(err))
        else:
            delivered[msg.offset()] = (msg.key(), msg.value())

    for codec in ("lz4", "none"):
        producer = Producer({"bootstrap.servers": bootstrap, "compression.type": codec,
                             "linger.ms": 5, "enable.idempotence": True, "acks": "all",
                             # Small batches, so the stream spans many 4 KiB segments.
                             "batch.num.messages": 5})
        for r in range(ROUNDS // 2 + (1 if codec == "lz4" else 0)):
            round_no = r * 2 + (0 if codec == "lz4" else 1)
            for k in range(KEYS):
                value = b"%d:%d:" % (k, round_no) + b"v" * (20 + k)
                producer.produce(topic, key=b"key-%d" % k, value=value, on_delivery=report)
            producer.flush(30)
        if codec == "none":
            producer.produce(topic, key=b"dead", value=b"alive", on_delivery=report)
            producer.produce(topic, key=b"dead", value=None, on_delivery=report)
            for i in range(FILLER):
                producer.produce(topic, key=b"filler", value=b"f" * 100, on_delivery=report)
        if producer.flush(30) != 0:
            fail("produce did not finish")
    if errors:
        fail(f"delivery errors: {errors[:3]}")
    return delivered


def consume_all(bootstrap: str, topic: str) -> list:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "compaction-check",
                         "enable.auto.commit": False, "enable.partition.eof": True})
    consumer.assign([TopicPartition(topic, 0, 0)])
    out = []
    deadline = time.time() + 30
    while time.time() < deadline:
        msg = consumer.poll(1.0)
        if msg is None:
            continue
        if msg.error():
            if msg.error().code() == KafkaError._PARTITION_EOF:
                break
            fail(f"consume error: {msg.error()}")
        out.append((msg.offset(), msg.key(), msg.value()))
    consumer.close()
    return out


def compacted_view_problem(delivered: dict, seen: list) -> str:
    """Why `seen` is not yet the compacted stream (empty string: it is)."""
    offsets = [o for o, _, _ in seen]
    if offsets != sorted(set(offsets)):
        return "offsets do not grow"
    for offset, key, value in seen:
        if delivered.get(offset) != (key, value):
            return f"offset {offset} holds {key!r}={value!r}, produced {delivered.get(offset)!r}"
    latest = {}
    for offset, (key, value) in sorted(delivered.items()):
        latest[key] = offset
    by_key = {}
    for offset, key, _ in seen:
        by_key.setdefault(key, []).append(offset)
    for key, offset in latest.items():
        if key in (b"dead", b"filler"):
            continue
        if by_key.get(key) != [offset]:
            return f"key {key!r}: offsets {by_key.get(key)}, latest {offset}"
    if b"dead" in by_key:
        return f"key 'dead' still at {by_key[b'dead']}"
    if by_key.get(b"filler", [None])[-1] != latest[b"filler"]:
        return "the latest filler record is missing"
    return ""


def main() -> None:
    bootstrap, topic = sys.argv[1], sys.argv[2]
    admin = AdminClient({"bootstrap.servers": bootstrap})
    configs = {"cleanup.policy": "compact", "segment.bytes": "4096",
               "min.cleanable.dirty.ratio": "0.01", "delete.retention.ms": "0"}
    for f in admin.create_topics([NewTopic(topic, 1, 1, config=configs)]).values():
        f.result(30)
    started = time.time()
    delivered = produce_all(bootstrap, topic)
    produced = len(delivered)

    refused = []
    producer = Producer({"bootstrap.servers": bootstrap, "retries": 0})
    producer.produce(topic, value=b"no key", on_delivery=lambda err, msg: refused.append(err))
    producer.flush(30)
    if len(refused) != 1 or refused[0] is None or refused[0].code() != KafkaError.INVALID_RECORD:
        fail(f"a keyless record was not refused with INVALID_RECORD: {refused}")

    problem = "not consumed yet"
    seen = []
    while time.time() - started < DEADLINE_SECONDS:
        seen = consume_all(bootstrap, topic)
        problem = compacted_view_problem(delivered, seen)
        if not problem:
            break
        time.sleep(0.5)
    if problem:
        fail(f"not compacted within {DEADLINE_SECONDS} s: {problem} ({len(seen)} records seen)")
    print(json.dumps({"produced": produced, "remaining": len(seen),
                      "seconds": round(time.time() - started, 2)}), flush=True)


if __name__ == "__main__":
    main()
