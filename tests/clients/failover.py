"""An idempotent acks=all producer and a checking reader, for failover tests (confluent-kafka).

Usage:
    failover.py produce BOOTSTRAP TOPIC COUNT ACKED_FILE
    failover.py check BOOTSTRAP TOPIC PARTITIONS ACKED_FILE

`produce` sends COUNT messages (value b"m<i>", key b"k<i>", round-robin over the partitions by
the client's partitioner on the key) with enable.idempotence=true and acks=all, keeps going
through broker failures (librdkafka retries until message.timeout.ms), and writes one line
"<partition> <offset> <i>" per acknowledged message to ACKED_FILE, then one JSON line of counts
to stdout: {"acked": A, "failed": F, "errors": {...}}. It prints "progress <acked>" lines as it
goes, so a test can act mid-stream.

`check` reads every partition from the beginning to its end (high watermark) with a consumer
that commits nothing, and checks against ACKED_FILE: every acknowledged message is read
exactly once, at the offset its acknowledgement gave; within a partition the producer's
messages appear in the order they were sent (i increasing); nothing is read twice. Prints one
JSON line {"read": R, "acked": A, "lost": L, "duplicated": D, "misplaced": M, "reordered": O}
and exits 1 if any of L, D, M, O is non-zero. Every wait is bounded.
"""
import json
import sys
import time

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition


def produce(bootstrap, topic, count, acked_file):
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 2,
            "message.timeout.ms": 120000,
            "retry.backoff.ms": 100,
            "reconnect.backoff.max.ms": 500,
            "topic.metadata.refresh.interval.ms": 1000,
        }
    )
    acked = []
    errors = {}

    def on_delivery(err, msg):
        if err is not None:
            name = err.name()
            errors[name] = errors.get(name, 0) + 1
            return
        i = int(msg.value()[1:])
        acked.append((msg.partition(), msg.offset(), i))

    last_report = 0
    for i in range(count):
        while True:
            try:
                producer.produce(topic, key=b"k%d" % i, value=b"m%d" % i, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
        if len(acked) - last_report >= 1000:
            last_report = len(acked)
            print("progress %d" % last_report, flush=True)
        # A steady stream rather than one burst, so a failure lands mid-stream.
        if i % 200 == 199:
            time.sleep(0.01)
    remaining = producer.flush(150)
    with open(acked_file, "w") as out:
        for p, o, i in acked:
            out.write("%d %d %d\n" % (p, o, i))
    print(json.dumps({"acked": len(acked), "failed": sum(errors.values()), "errors": errors,
                      "unflushed": remaining}), flush=True)


def check(bootstrap, topic, partitions, acked_file):
    acked = {}
    for line in open(acked_file):
        p, o, i = map(int, line.split())
        acked[i] = (p, o)
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "failover-check",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
        }
    )
    ends = {}
    for p in range(partitions):
        deadline = time.time() + 60
        while True:
            try:
                low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=5)
                ends[p] = high
                break
            except Exception:
                if time.time() > deadline:
                    raise
                time.sleep(0.5)
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    seen = {}
    duplicated = 0
    misplaced = 0
    reordered = 0
    last_i = {}
    done = {p for p in range(partitions) if ends[p] == 0}
    deadline = time.time() + 120
    read = 0
    while len(done) < partitions and time.time() < deadline:
        msg = consumer.poll(1.0)
        if msg is None:
            continue
        if msg.error():
            if msg.error().code() == KafkaError._PARTITION_EOF:
                if msg.offset() >= ends[msg.partition()]:
                    done.add(msg.partition())
                continue
            print("consumer error: %s" % msg.error(), file=sys.stderr, flush=True)
            continue
        read += 1
        i = int(msg.value()[1:])
        p, o = msg.partition(), msg.offset()
        if i in seen:
            duplicated += 1
        seen[i] = (p, o)
        if i in acked and acked[i] != (p, o):
            misplaced += 1
        if p in last_i and i < last_i[p]:
            reordered += 1
        last_i[p] = i
        if o + 1 >= ends[p]:
            done.add(p)
    consumer.close()
    lost = sum(1 for i in acked if i not in seen)
    result = {"read": read, "acked": len(acked), "lost": lost, "duplicated": duplicated,
              "misplaced": misplaced, "reordered": reordered, "ends": ends}
    print(json.dumps(result), flush=True)
    if lost or duplicated or misplaced or reordered:
        missing = sorted(i for i in acked if i not in seen)[:10]
        print("first lost: %s" % missing, file=sys.stderr, flush=True)
        sys.exit(1)


def main():
    mode = sys.argv[1]
    if mode == "produce":
        produce(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5])
    elif mode == "check":
        check(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5])
    else:
        print("unknown mode %s" % mode, file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
