#!/usr/bin/env python3
"""The chaos workload's client processes, one role each, every event appended as a JSON line to
the history file given with --out (chaos.py starts them and stops them with SIGTERM):

  produce   an idempotent acks=all confluent-kafka producer: message seq goes to partition
            seq mod N with the unique payload "<run>:<producer>:<seq>"; records send, ack
            (partition, offset) and fail events. A fatal producer error (librdkafka's
            idempotence state lost) is recorded and a new producer (a new producer id) goes on.
  txn-produce
            a transactional confluent-kafka producer: transactions of 1 to 4 messages (payloads
            as `produce`, the producer id "t<n>"), about 30% of them aborted (seeded by run and
            id); records send and ack events as `produce`, each send with its transaction
            number, then txn-committed, txn-aborted, or txn-unknown (a fatal error: the
            outcome is the coordinator's; a new producer with the same transactional id goes on).
  consume   a group consumer, confluent-kafka or kafka-python (--client), manual commits about
            once a second; records every message read and every commit the coordinator acked.
  monitor   polls the group's committed offsets through the admin API twice a second.

Times are time.time() on the one host that runs everything, so events of different processes
are ordered by them (to within the clock's resolution).
"""

import argparse
import hashlib
import json
import signal
import sys
import time

stopping = False


def make_value(payload, size):
    """The message value: the payload id, then '|' and filler derived from the id up to size
    bytes (nothing when size leaves no room), so that any changed byte is detectable."""
    head = payload.encode()
    if size <= len(head) + 1:
        return head
    filler = hashlib.sha256(head).hexdigest().encode()
    room = size - len(head) - 1
    return head + b"|" + (filler * (room // len(filler) + 1))[:room]


def parse_value(raw, size):
    """(payload id, intact) of a value make_value wrote; probes carry no filler."""
    payload = raw.split(b"|", 1)[0].decode(errors="replace")
    if payload.startswith("probe:"):
        return payload, True
    return payload, raw == make_value(payload, size)


def _stop(_signum, _frame):
    global stopping
    stopping = True


class History:
    def __init__(self, path):
        self.file = open(path, "a", buffering=1)

    def write(self, **event):
        event["t"] = time.time()
        self.file.write(json.dumps(event, separators=(",", ":")) + "\n")


def _delivery_report(args, hist, generation):
    """A delivery callback recording ack (partition, offset) and fail events, with the
    producer generation of the moment."""
    def delivered(err, msg):
        payload = parse_value(msg.value(), args.value_bytes)[0]
        seq = int(payload.rsplit(":", 1)[1])
        if err is None:
            # librdkafka reports some deliveries with no offset (None): persisted, but where is
            # not known to it. The checker then checks presence only.
            hist.write(ev="ack", seq=seq, p=msg.partition(), o=msg.offset(), v=payload,
                       gen=generation[0])
        else:
            hist.write(ev="fail", seq=seq, p=msg.partition(), v=payload, err=str(err),
                       gen=generation[0])
    return delivered


def produce(args, hist):
    from confluent_kafka import KafkaException, Producer

    conf = {
        "bootstrap.servers": args.bootstrap,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "message.timeout.ms": args.message_timeout_ms,
        "request.timeout.ms": 5000,
        "retry.backoff.ms": 100,
        "socket.timeout.ms": 5000,
        "topic.metadata.refresh.interval.ms": 2000,
        "client.id": f"chaos-producer-{args.id}",
    }
    generation = [0]
    fatal = []

    def on_error(err):
        # librdkafka reports a fatal error (its idempotence state can no longer be kept, e.g.
        # OUT_OF_ORDER_SEQUENCE after a leader lost acknowledged data) through this callback;
        # the producer then fails every message and must be replaced.
        if err.fatal():
            fatal.append(str(err))
        else:
            hist.write(ev="client-error", err=str(err)[:200])

    conf["error_cb"] = on_error

    delivered = _delivery_report(args, hist, generation)
    producer = Producer(conf)
    seq = 0
    interval = 1.0 / args.rate
    next_send = time.monotonic()
    while not stopping:
        now = time.monotonic()
        if now < next_send:
            producer.poll(min(0.05, next_send - now))
            continue
        next_send += interval
        if next_send < now - 1.0:
            next_send = now  # do not burst to catch up after a long stall
        partition = seq % args.partitions
        payload = f"{args.run}:{args.id}:{seq}"
        try:
            producer.produce(args.topic, value=make_value(payload, args.value_bytes),
                             partition=partition, on_delivery=delivered)
            hist.write(ev="send", seq=seq, p=partition, v=payload, gen=generation[0])
            seq += 1
        except BufferError:
            producer.poll(0.1)
        except KafkaException as err:
            hist.write(ev="error", err=str(err))
            if err.args and err.args[0].fatal():
                producer = _replace(producer, conf, hist, generation)
            time.sleep(0.1)
        producer.poll(0)
        if fatal:
            hist.write(ev="fatal", err=fatal[0])
            fatal.clear()
            producer = _replace(producer, conf, hist, generation)
    left = producer.flush(args.flush_s)
    hist.write(ev="stopped", unflushed=left, sent=seq)


def txn_produce(args, hist):
    import random

    from confluent_kafka import KafkaException, Producer

    conf = {
        "bootstrap.servers": args.bootstrap,
        "transactional.id": f"chaos-txn-{args.run}-{args.id}",
        "transaction.timeout.ms": 10000,
        "message.timeout.ms": 10000,
        "linger.ms": 5,
        "request.timeout.ms": 5000,
        "retry.backoff.ms": 100,
        "socket.timeout.ms": 5000,
        "topic.metadata.refresh.interval.ms": 2000,
        "client.id": f"chaos-txn-producer-{args.id}",
    }
    rng = random.Random(f"{args.run}:{args.id}")
    generation = [0]

    delivered = _delivery_report(args, hist, generation)

    def start():
        # init_transactions fences an earlier producer of the id and finishes (aborts) its
        # open transaction; retried while the coordinator is unreachable.
        while not stopping:
            producer = Producer(conf)
            try:
                producer.init_transactions(10)
                return producer
            except KafkaException as err:
                hist.write(ev="error", err=f"init_transactions: {err}"[:200])
                time.sleep(0.5)
        return None

    def finish(producer, txn, abort):
        """Commits or aborts; True when the outcome is known (and recorded)."""
        deadline = time.monotonic() + 30
        while True:
            try:
                if abort:
                    producer.abort_transaction(10)
                    hist.write(ev="txn-aborted", txn=txn, gen=generation[0])
                else:
                    producer.commit_transaction(10)
                    hist.write(ev="txn-committed", txn=txn, gen=generation[0])
                return True
            except KafkaException as err:
                e = err.args[0]
                hist.write(ev="error", err=f"{'abort' if abort else 'commit'}: {err}"[:200])
                if e.txn_requires_abort() and not abort:
                    abort = True
                elif not e.retriable() or time.monotonic() > deadline:
                    hist.write(ev="txn-unknown", txn=txn, gen=generation[0])
                    return False
                time.sleep(0.2)

    producer = start()
    seq = 0
    txn = 0
    interval = 1.0 / args.rate
    while producer is not None and not stopping:
        count = rng.randint(1, 4)
        abort = rng.random() < 0.3
        known = False
        try:
            producer.begin_transaction()
            for _ in range(count):
                partition = seq % args.partitions
                payload = f"{args.run}:{args.id}:{seq}"
                producer.produce(args.topic, value=make_value(payload, args.value_bytes),
                                 partition=partition, on_delivery=delivered)
                hist.write(ev="send", seq=seq, p=partition, v=payload, gen=generation[0],
                           txn=txn)
                seq += 1
                producer.poll(0)
            known = finish(producer, txn, abort)
        except (KafkaException, BufferError) as err:
            hist.write(ev="error", err=str(err)[:200])
            known = finish(producer, txn, True)
        txn += 1
        if not known:
            producer.flush(1)
            generation[0] += 1
            hist.write(ev="new-producer", gen=generation[0])
            producer = start()
        time.sleep(interval * count)
    if producer is not None:
        producer.flush(5)
    hist.write(ev="stopped", unflushed=0, sent=seq)


def _replace(producer, conf, hist, generation):
    from confluent_kafka import Producer
    try:
        producer.flush(5)
    except Exception:  # noqa: BLE001 - the old producer is being dropped
        pass
    generation[0] += 1
    hist.write(ev="new-producer", gen=generation[0])
    return Producer(conf)


def _read(hist, partition, offset, raw, size):
    payload, intact = parse_value(raw, size)
    if intact:
        hist.write(ev="read", p=partition, o=offset, v=payload)
    else:
        hist.write(ev="read", p=partition, o=offset, v=payload, corrupt=True)


def consume_confluent(args, hist):
    from confluent_kafka import Consumer, KafkaException

    conf = {
        "bootstrap.servers": args.bootstrap,
        "group.id": args.group,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": 10000,
        "heartbeat.interval.ms": 1000,
        "isolation.level": "read_uncommitted",
        "client.id": f"chaos-consumer-{args.id}",
        "topic.metadata.refresh.interval.ms": 2000,
    }
    consumer = Consumer(conf)
    consumer.subscribe([args.topic])
    last_commit = time.monotonic()
    while not stopping:
        try:
            msg = consumer.poll(0.2)
        except KafkaException as err:
            hist.write(ev="error", err=str(err))
            continue
        if msg is not None:
            if msg.error():
                hist.write(ev="error", err=str(msg.error()))
            else:
                _read(hist, msg.partition(), msg.offset(), msg.value(), args.value_bytes)
        if time.monotonic() - last_commit >= 1.0:
            last_commit = time.monotonic()
            try:
                committed = consumer.commit(asynchronous=False)
            except KafkaException as err:
                # _NO_OFFSET (nothing new to commit) is an error here too; keep going.
                hist.write(ev="commit-error", err=str(err))
                continue
            for tp in committed or []:
                if tp.error is None and tp.offset >= 0:
                    hist.write(ev="commit", p=tp.partition, o=tp.offset)
    try:
        consumer.close()
    except Exception as err:  # noqa: BLE001
        hist.write(ev="error", err=f"close: {err}")
    hist.write(ev="stopped")


def consume_kafka_python(args, hist):
    from kafka import KafkaConsumer, OffsetAndMetadata
    from kafka.errors import KafkaError

    consumer = KafkaConsumer(
        args.topic,
        bootstrap_servers=args.bootstrap.split(","),
        group_id=args.group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=10000,
        heartbeat_interval_ms=1000,
        request_timeout_ms=15000,
        metadata_max_age_ms=2000,
        client_id=f"chaos-consumer-{args.id}",
    )
    positions = {}
    last_commit = time.monotonic()
    while not stopping:
        try:
            batches = consumer.poll(timeout_ms=200)
        except KafkaError as err:
            hist.write(ev="error", err=str(err))
            time.sleep(0.2)
            continue
        for tp, records in batches.items():
            for rec in records:
                _read(hist, tp.partition, rec.offset, rec.value, args.value_bytes)
                positions[tp] = rec.offset + 1
        if time.monotonic() - last_commit >= 1.0:
            last_commit = time.monotonic()
            assigned = consumer.assignment()
            offsets = {tp: OffsetAndMetadata(o, None, -1) for tp, o in positions.items()
                       if tp in assigned}
            positions = {tp: o for tp, o in positions.items() if tp in assigned}
            if not offsets:
                continue
            try:
                consumer.commit(offsets)
            except (KafkaError, TypeError) as err:
                hist.write(ev="commit-error", err=str(err))
                continue
            for tp, om in offsets.items():
                hist.write(ev="commit", p=tp.partition, o=om.offset)
    try:
        consumer.close(autocommit=False)
    except Exception as err:  # noqa: BLE001
        hist.write(ev="error", err=f"close: {err}")
    hist.write(ev="stopped")


def committed_offsets(admin, group, topic):
    """{partition: committed offset} of the group for the topic, through kafka-python's admin
    client (OffsetFetch). confluent-kafka's list_consumer_group_offsets is not used: under
    broker timeouts librdkafka 2.16 aborted the process on an internal assertion
    (rd_kafka_enq_once_del_source_return: eonce->refcnt > 0)."""
    result = admin.list_group_offsets({group: None})[group]
    return {tp.partition: om.offset for tp, om in result.items() if tp.topic == topic}


def admin_client(bootstrap):
    from kafka import KafkaAdminClient
    return KafkaAdminClient(bootstrap_servers=bootstrap.split(","), request_timeout_ms=3000,
                            client_id="chaos-monitor")


def monitor(args, hist):
    admin = None
    while not stopping:
        started = time.time()
        try:
            if admin is None:
                admin = admin_client(args.bootstrap)
            offsets = committed_offsets(admin, args.group, args.topic)
            # The observation's time is when the request was sent: every commit acked before
            # then must be visible in it.
            hist.write(ev="committed", sent=started, offsets=offsets)
        except Exception as err:  # noqa: BLE001 - unreachable cluster during faults
            hist.write(ev="error", err=str(err)[:200])
            if admin is not None:
                try:
                    admin.close()
                except Exception:  # noqa: BLE001 - a broken client is dropped
                    pass
                admin = None
        time.sleep(0.5)
    hist.write(ev="stopped")


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("role", choices=["produce", "txn-produce", "consume", "monitor"])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--run", default="r")
    parser.add_argument("--id", default="0")
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--rate", type=float, default=100.0, help="messages per second")
    parser.add_argument("--message-timeout-ms", type=int, default=20000)
    parser.add_argument("--flush-s", type=float, default=30.0)
    parser.add_argument("--value-bytes", type=int, default=256,
                        help="message value size (the payload id, then checkable filler)")
    parser.add_argument("--group", default="chaos")
    parser.add_argument("--client", choices=["confluent", "kafka-python"], default="confluent")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    hist = History(args.out)
    hist.write(ev="start", role=args.role, client=args.client, id=args.id)
    if args.role == "produce":
        produce(args, hist)
    elif args.role == "txn-produce":
        txn_produce(args, hist)
    elif args.role == "monitor":
        monitor(args, hist)
    elif args.client == "confluent":
        consume_confluent(args, hist)
    else:
        consume_kafka_python(args, hist)
    return 0


if __name__ == "__main__":
    sys.exit(main())
