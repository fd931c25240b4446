"""A consumer group member for tests/groups.rs.

Usage:
    group_member.py produce BOOTSTRAP TOPIC COUNT
    group_member.py member CLIENT BOOTSTRAP TOPIC GROUP SECONDS

`produce` writes COUNT messages (value b"<i>") with confluent-kafka, spread round-robin over
the topic's partitions. `member` (CLIENT `confluent` or `kafka-python`) subscribes to TOPIC in
GROUP with a 6000 ms session timeout, prints one line `M <partition> <offset>` per message
and `A <partitions>` after each assignment, commits synchronously after each message, and
after SECONDS closes cleanly (leaving the group) and prints `CLOSED`. Every wait is bounded.
"""
import sys
import time


def produce(bootstrap, topic, count):
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "partitioner": "murmur2_random"})
    for i in range(count):
        p.produce(topic, value=b"%d" % i, key=b"%d" % i)
        p.poll(0)
    left = p.flush(60)
    if left:
        print("unflushed %d" % left, file=sys.stderr)
        sys.exit(1)


def out(line):
    print(line, flush=True)


def member_confluent(bootstrap, topic, group, seconds):
    from confluent_kafka import Consumer

    def on_assign(consumer, partitions):
        out("A " + ",".join(str(p.partition) for p in partitions))

    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 1000,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    c.subscribe([topic], on_assign=on_assign)
    end = time.time() + seconds
    while time.time() < end:
        m = c.poll(0.2)
        if m is None or m.error():
            continue
        out("M %d %d" % (m.partition(), m.offset()))
        c.commit(message=m, asynchronous=False)
    c.close()
    out("CLOSED")


def member_kafka_python(bootstrap, topic, group, seconds):
    from kafka import KafkaConsumer, ConsumerRebalanceListener

    class Listener(ConsumerRebalanceListener):
        def on_partitions_revoked(self, revoked):
            pass

        def on_partitions_assigned(self, assigned):
            out("A " + ",".join(str(tp.partition) for tp in assigned))

    c = KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=group,
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    c.subscribe([topic], listener=Listener())
    end = time.time() + seconds
    while time.time() < end:
        batches = c.poll(timeout_ms=200)
        for tp, msgs in batches.items():
            for m in msgs:
                out("M %d %d" % (tp.partition, m.offset))
            c.commit()
    c.close()
    out("CLOSED")


def main():
    mode = sys.argv[1]
    if mode == "produce":
        produce(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    elif mode == "member":
        client, bootstrap, topic, group, seconds = sys.argv[2:7]
        if client == "confluent":
            member_confluent(bootstrap, topic, group, float(seconds))
        else:
            member_kafka_python(bootstrap, topic, group, float(seconds))
    else:
        sys.exit("unknown mode " + mode)


if __name__ == "__main__":
    main()
