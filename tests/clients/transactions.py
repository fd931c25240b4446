"""Transactional clients (confluent-kafka) for tests/transactions.rs.

Usage:
    transactions.py alternate BOOTSTRAP TOPIC TXID TXNS PER_TXN PARTITIONS
        runs TXNS transactions of PER_TXN messages (value b"t<i>-<j>", partition j % PARTITIONS),
        committing the even ones and aborting the odd ones (after their messages are
        delivered); prints `C <i>` or `A <i>` for each.
    transactions.py run BOOTSTRAP TOPIC TXID TXNS PER_TXN PARTITIONS PAUSE_S
        commits TXNS transactions like `alternate`, pausing PAUSE_S seconds inside each one, and
        rides out broker restarts: retriable errors are retried, abortable ones abort the
        transaction (`A <i>`), fatal ones start a new producer (`U <i>`: outcome unknown).
        Prints `C <i>` for each commit that succeeded.
    transactions.py open BOOTSTRAP TOPIC TXID TIMEOUT_MS
        opens a transaction, produces one message b"open" to partition 0, flushes, prints
        `OPEN` and sleeps until killed.
    transactions.py consume BOOTSTRAP TOPIC ISOLATION EXPECTED SECONDS
        reads every partition from the beginning with isolation.level ISOLATION until EXPECTED
        messages arrived and nothing more came for 3 s (or SECONDS passed); prints one JSON
        list of [partition, value] in arrival order.
    transactions.py seed BOOTSTRAP TOPIC COUNT
        produces COUNT plain messages b"<i>" (idempotent, acks=all), round-robin over partitions.
    transactions.py ctp BOOTSTRAP IN OUT GROUP TXID PAUSE_S IDLE_S
        consume-transform-produce: reads IN in GROUP (read_committed, no auto commit), and for
        each polled batch writes the values to OUT and commits the consumed offsets in the same
        transaction (send_offsets_to_transaction), pausing PAUSE_S inside each. Prints
        `P <total>` after each commit; exits after IDLE_S seconds without input.
    transactions.py fence BOOTSTRAP TOPIC TXID
        a zombie and its successor with the same transactional.id; prints one JSON object.

Every wait is bounded.
"""
import json
import sys
import time

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition


def out(line):
    print(line, flush=True)


def producer(bootstrap, txid, timeout_ms=60000):
    p = Producer(
        {
            "bootstrap.servers": bootstrap,
            "transactional.id": txid,
            "transaction.timeout.ms": timeout_ms,
            "message.timeout.ms": timeout_ms,
            "socket.timeout.ms": min(5000, timeout_ms),
            "reconnect.backoff.max.ms": 500,
        }
    )
    p.init_transactions(30)
    return p


def produce_txn(p, topic, i, per_txn, partitions):
    for j in range(per_txn):
        p.produce(topic, value=b"t%d-%d" % (i, j), partition=j % partitions)
        p.poll(0)


def alternate(bootstrap, topic, txid, txns, per_txn, partitions):
    p = producer(bootstrap, txid)
    for i in range(txns):
        p.begin_transaction()
        produce_txn(p, topic, i, per_txn, partitions)
        if i % 2 == 0:
            p.commit_transaction(30)
            out("C %d" % i)
        else:
            # Delivered before the abort, so the aborted records are in the log (an abort
            # purges what is still queued in the client).
            assert p.flush(30) == 0
            p.abort_transaction(30)
            out("A %d" % i)


def finish(p, commit, deadline):
    """Commits or aborts, retrying retriable errors; returns 'C', 'A' or raises for fatal."""
    while True:
        try:
            if commit:
                p.commit_transaction(10)
                return "C"
            p.abort_transaction(10)
            return "A"
        except KafkaException as e:
            err = e.args[0]
            if err.fatal() or time.time() > deadline:
                raise
            if err.txn_requires_abort():
                commit = False
                continue
            if err.retriable():
                time.sleep(0.2)
                continue
            raise


def run(bootstrap, topic, txid, txns, per_txn, partitions, pause):
    deadline = time.time() + 120
    p = producer(bootstrap, txid)
    i = 0
    while i < txns and time.time() < deadline:
        try:
            p.begin_transaction()
            produce_txn(p, topic, i, per_txn, partitions)
            time.sleep(pause)
            outcome = finish(p, True, deadline)
            out("%s %d" % (outcome, i))
        except KafkaException as e:
            err = e.args[0]
            out("U %d %s" % (i, err.str().replace("\n", " ")))
            if err.fatal() or not err.txn_requires_abort():
                # A new incarnation: init_transactions fences this one and aborts anything open.
                p = None
                while p is None and time.time() < deadline:
                    try:
                        p = producer(bootstrap, txid)
                    except KafkaException:
                        time.sleep(0.5)
            else:
                try:
                    finish(p, False, deadline)
                except KafkaException:
                    p = producer(bootstrap, txid)
        i += 1
    out("DONE")


def open_txn(bootstrap, topic, txid, timeout_ms):
    p = producer(bootstrap, txid, timeout_ms)
    p.begin_transaction()
    p.produce(topic, value=b"open", partition=0)
    assert p.flush(30) == 0
    out("OPEN")
    time.sleep(600)


def consume(bootstrap, topic, isolation, expected, seconds):
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "reader-%s-%f" % (isolation, time.time()),
            "isolation.level": isolation,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    meta = c.list_topics(topic, timeout=20).topics[topic]
    c.assign([TopicPartition(topic, p, 0) for p in sorted(meta.partitions)])
    seen = []
    deadline = time.time() + seconds
    last = time.time()
    while time.time() < deadline:
        msg = c.poll(0.2)
        if msg is None:
            if len(seen) >= expected and time.time() - last > 3:
                break
            continue
        if msg.error():
            continue
        seen.append([msg.partition(), msg.value().decode()])
        last = time.time()
    c.close()
    print(json.dumps(seen), flush=True)


def seed(bootstrap, topic, count):
    p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all"})
    meta = p.list_topics(topic, timeout=20).topics[topic]
    n = len(meta.partitions)
    for i in range(count):
        p.produce(topic, value=b"%d" % i, partition=i % n)
        p.poll(0)
    assert p.flush(60) == 0


def ctp(bootstrap, src, dst, group, txid, pause, idle):
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 6000,
        }
    )
    c.subscribe([src])
    p = producer(bootstrap, txid)
    total = 0
    last = time.time()
    deadline = time.time() + 150
    while time.time() < deadline and time.time() - last < idle:
        msgs = [m for m in c.consume(50, 0.5) if not m.error()]
        if not msgs:
            continue
        last = time.time()
        p.begin_transaction()
        for m in msgs:
            p.produce(dst, value=m.value(), partition=m.partition())
        time.sleep(pause)
        positions = c.position(c.assignment())
        p.send_offsets_to_transaction(positions, c.consumer_group_metadata(), 30)
        p.commit_transaction(30)
        total += len(msgs)
        out("P %d" % total)
    c.close()
    out("DONE %d" % total)


def fence(bootstrap, topic, txid):
    result = {}
    zombie = producer(bootstrap, txid)
    zombie.begin_transaction()
    zombie.produce(topic, value=b"zombie", partition=0)
    assert zombie.flush(30) == 0
    successor = producer(bootstrap, txid)
    try:
        zombie.commit_transaction(30)
        result["zombie_commit"] = "committed"
    except KafkaException as e:
        err = e.args[0]
        result["zombie_commit"] = err.name()
        result["zombie_fatal"] = err.fatal()
    successor.begin_transaction()
    successor.produce(topic, value=b"successor", partition=0)
    successor.commit_transaction(30)
    result["successor"] = "committed"
    print(json.dumps(result), flush=True)


def main():
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == "alternate":
        alternate(args[0], args[1], args[2], int(args[3]), int(args[4]), int(args[5]))
    elif mode == "run":
        run(args[0], args[1], args[2], int(args[3]), int(args[4]), int(args[5]), float(args[6]))
    elif mode == "open":
        open_txn(args[0], args[1], args[2], int(args[3]))
    elif mode == "consume":
        consume(args[0], args[1], args[2], int(args[3]), float(args[4]))
    elif mode == "seed":
        seed(args[0], args[1], int(args[2]))
    elif mode == "ctp":
        ctp(args[0], args[1], args[2], args[3], args[4], float(args[5]), float(args[6]))
    elif mode == "fence":
        fence(args[0], args[1], args[2])
    else:
        sys.exit("unknown mode " + mode)


if __name__ == "__main__":
    main()
