#!/usr/bin/env python3
"""Failover time of a three-node ringbroker cluster (docs/BENCHMARKS.md, "Replication").

Usage:
    benches/failover.py [--bin target/release/ringbroker] [--rounds 5] [--seed S]
                        [--session-timeout-ms 9000] [--lag-ms 30000] [--rate 2000]

Starts three combined-mode nodes on 127.0.0.1 (ephemeral ports, temporary data dirs, two nodes
sharing a core on a 2-core host), creates a topic of 6 partitions with replication factor 3 and
min.insync.replicas=2, and runs an idempotent acks=all confluent-kafka producer at --rate
messages/s. Each round waits a seeded 2-5 s, SIGKILLs the broker leading most partitions, and
measures from the kill to the acknowledgement of the first message sent after it on every
partition that broker led (the producer keeps sending; librdkafka retries on the new leader),
then restarts the node and waits
until every ISR is whole again. Prints one line per round and, at the end, the p50 and max of
the failover times. Every process it starts is killed on exit, also on failure.
"""
import argparse
import atexit
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

PROCS = {}
DIRS = []


def cleanup():
    for proc in PROCS.values():
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    for d in DIRS:
        shutil.rmtree(d, ignore_errors=True)


atexit.register(cleanup)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))


def free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


class Cluster:
    def __init__(self, binary, settings):
        ports = free_ports(6)
        self.client = {n: ports[2 * (n - 1)] for n in (1, 2, 3)}
        self.controller = {n: ports[2 * (n - 1) + 1] for n in (1, 2, 3)}
        self.dirs = {n: tempfile.mkdtemp(prefix="rb-failover-%d-" % n) for n in (1, 2, 3)}
        self.logs = tempfile.mkdtemp(prefix="rb-failover-logs-")
        DIRS.extend(self.dirs.values())
        DIRS.append(self.logs)
        self.binary = binary
        self.settings = settings
        self.voters = ",".join("%d@127.0.0.1:%d" % (n, self.controller[n]) for n in (1, 2, 3))

    def start(self, n):
        sets = [
            "node.id=%d" % n,
            "process.roles=broker,controller",
            "controller.quorum.voters=" + self.voters,
            "listeners=PLAINTEXT://127.0.0.1:%d,CONTROLLER://127.0.0.1:%d"
            % (self.client[n], self.controller[n]),
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        ] + self.settings
        args = [self.binary, "serve", "--data-dir", self.dirs[n],
                "--listen", "127.0.0.1:%d" % self.client[n],
                "--cores", str((n - 1) % os.cpu_count())]
        for s in sets:
            args += ["--set", s]
        log = open(os.path.join(self.logs, "node-%d.log" % n), "a")
        PROCS[n] = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=log)

    def kill(self, n):
        PROCS[n].kill()
        PROCS[n].wait()

    def bootstrap(self, skip=None):
        return ",".join("127.0.0.1:%d" % self.client[n] for n in (1, 2, 3) if n != skip)


def partitions(admin, topic):
    md = admin.list_topics(topic, timeout=5)
    t = md.topics.get(topic)
    if t is None or t.error is not None:
        return None
    return {p: (pm.leader, sorted(pm.replicas), sorted(pm.isrs)) for p, pm in t.partitions.items()}


def wait_whole(admin, topic, bound):
    deadline = time.time() + bound
    while time.time() < deadline:
        try:
            parts = partitions(admin, topic)
        except Exception:
            parts = None
        if parts and all(l >= 0 and r == i for l, r, i in parts.values()):
            return parts
        time.sleep(0.2)
    raise SystemExit("failover: the ISRs did not become whole within %d s" % bound)


def main():
    ap = argparse.ArgumentParser()
    target = os.environ.get("CARGO_TARGET_DIR", "target")
    ap.add_argument("--bin", default=os.path.join(target, "release", "ringbroker"))
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--session-timeout-ms", type=int, default=9000)
    ap.add_argument("--lag-ms", type=int, default=30000)
    ap.add_argument("--rate", type=float, default=2000)
    a = ap.parse_args()
    seed = a.seed if a.seed is not None else random.randrange(1 << 31)
    rng = random.Random(seed)
    print("failover: seed %d, broker.session.timeout.ms %d, replica.lag.time.max.ms %d"
          % (seed, a.session_timeout_ms, a.lag_ms), flush=True)
    cluster = Cluster(a.bin, ["broker.session.timeout.ms=%d" % a.session_timeout_ms,
                              "replica.lag.time.max.ms=%d" % a.lag_ms])
    for n in (1, 2, 3):
        cluster.start(n)
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap()})
    topic = "failover"
    deadline = time.time() + 30
    while True:
        fs = admin.create_topics([NewTopic(topic, 6, 3, config={"min.insync.replicas": "2"})])
        try:
            fs[topic].result(15)
            break
        except Exception as e:
            if "TOPIC_ALREADY_EXISTS" in str(e):
                break
            if time.time() > deadline:
                raise
            time.sleep(0.5)
    wait_whole(admin, topic, 30)

    acks = []  # (time, partition)
    lock = threading.Lock()
    stop = threading.Event()

    def produce():
        p = Producer({"bootstrap.servers": cluster.bootstrap(), "enable.idempotence": True,
                      "acks": "all", "linger.ms": 1, "message.timeout.ms": 120000,
                      "retry.backoff.ms": 50, "reconnect.backoff.max.ms": 200,
                      "topic.metadata.refresh.interval.ms": 1000})

        def done(err, msg):
            if err is None:
                sent = float(msg.value().split(b" ")[1])
                with lock:
                    acks.append((time.time(), msg.partition(), sent))

        i = 0
        start = time.time()
        while not stop.is_set():
            due = start + i / a.rate
            now = time.time()
            if due > now:
                time.sleep(min(due - now, 0.01))
                p.poll(0)
                continue
            try:
                p.produce(topic, key=b"k%d" % i, value=b"m%d %.6f" % (i, time.time()),
                          on_delivery=done)
                i += 1
            except BufferError:
                p.poll(0.01)
            p.poll(0)
        p.flush(60)

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    times = []
    last_victim = None
    try:
        for round_no in range(a.rounds):
            time.sleep(rng.uniform(2.0, 5.0))
            # Leaders as a node that was not just restarted tells them (a restarted node
            # answers from its own image until it has caught up).
            survivors = AdminClient({"bootstrap.servers": cluster.bootstrap(skip=last_victim)})
            parts = partitions(survivors, topic)
            led = {}
            for p, (leader, _, _) in parts.items():
                led.setdefault(leader, []).append(p)
            victim = max(led, key=lambda n: len(led[n]))
            killed_at = time.time()
            cluster.kill(victim)
            waiting = set(led[victim])
            first = {}
            bound = killed_at + 120
            while waiting and time.time() < bound:
                time.sleep(0.02)
                with lock:
                    for t, p, sent in acks[-5000:]:
                        if sent > killed_at and p in waiting:
                            first[p] = t
                            waiting.discard(p)
            if waiting:
                raise SystemExit("failover: partitions %s got no write within 120 s" % sorted(waiting))
            failover = max(first.values()) - killed_at
            times.append(failover)
            cluster.start(victim)
            last_victim = victim
            wait_whole(AdminClient({"bootstrap.servers": cluster.bootstrap(skip=victim)}), topic, 90)
            print("failover: round %d: SIGKILL broker %d (leading %d partitions): writes on all "
                  "of them again after %.2f s (first after %.2f s)"
                  % (round_no + 1, victim, len(led[victim]), failover,
                     min(first.values()) - killed_at), flush=True)
    finally:
        stop.set()
        producer.join(90)
    print("failover: %d rounds, seed %d: p50 %.2f s, max %.2f s, %d messages acknowledged"
          % (len(times), seed, statistics.median(times), max(times), len(acks)), flush=True)
    print(json.dumps({"seed": seed, "rounds": times}))


if __name__ == "__main__":
    main()
