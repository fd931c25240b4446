#!/usr/bin/env python3
"""The ringbroker chaos harness (issue 16): a three-node cluster, each node in its own network
namespace, a workload of idempotent acks=all producers and group consumers (confluent-kafka and
kafka-python), a seeded schedule of faults, then heal, wait for the cluster to serve again, read
every partition from the start and check the whole history (checker.py).

Run as root (namespaces, nftables, loop mounts). docs/RELIABILITY.md, "Chaos harness", has the
fault matrix and what the checker checks. The last line of the output is always
`chaos: R runs, F faults, L lost, D duplicated, V violations`; the exit code is 1 when
L + D + V > 0 (2 for a harness error before any run finished).

The seed fixes the schedule: which faults, when, for how long, and which node or partition each
aims at. Targets named by role (the leader of partition k, the active controller) are resolved
when the fault starts, from what the cluster answers then; so a replay runs the same schedule,
not necessarily against the same node ids.
"""

import argparse
import atexit
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import checker  # noqa: E402
import infra  # noqa: E402
from kafka_raw import describe_quorum  # noqa: E402
from workload import admin_client, committed_offsets, parse_value  # noqa: E402

NODES = (1, 2, 3)
CLIENT_PORT = 9092
CONTROLLER_PORT = 9093
HERE = os.path.dirname(os.path.abspath(__file__))

# Fault kinds. "Leader-killing" ones stop a partition leader's process for good (SIGKILL): with
# partitions that are not yet replicated (issue 15) they lose acknowledged data by design.
FAULT_KINDS = {
    "kill": "SIGKILL a random node, restart it when the fault heals",
    "kill-leader": "SIGKILL the leader of a partition, restart it when the fault heals",
    "kill-controller": "SIGKILL the active controller, restart it when the fault heals",
    "wipe-leader": "the leader of a partition loses its disk: SIGKILL, its directories of the "
                   "workload topic's partitions deleted (its metadata log kept), restarted when "
                   "the fault heals",
    "pause": "SIGSTOP a random node, SIGCONT when the fault heals",
    "pause-leader": "SIGSTOP the leader of a partition, SIGCONT when the fault heals",
    "cut": "drop every packet between two nodes, both ways (nftables)",
    "cut-oneway": "drop the packets from one node to another, not back (nftables)",
    "isolate": "cut a random node from both others, both ways",
    "isolate-leader": "cut the leader of a partition from its followers, both ways",
    "isolate-controller": "cut the active controller from the other nodes, both ways",
    "slow": "a lagging node: its link through a 512 kbit/s tbf bandwidth limit, both ways",
    "disk-full": "fill the node's data filesystem (a loop-mounted ext4) to the last block",
    "clock": "SIGKILL a node and restart it in a time namespace whose monotonic and boot-time "
             "clocks are offset by hours to days (the wall clock cannot be offset per "
             "namespace)",
}
LEADER_KILLING = {"kill", "kill-leader", "kill-controller", "wipe-leader", "clock"}

started_at = time.monotonic()


def log(msg):
    print(f"[chaos {time.monotonic() - started_at:7.1f}s] {msg}", flush=True)


# -- the schedule -------------------------------------------------------------------------------

def make_schedule(rng, kinds, duration, partitions, warmup=3.0):
    """Faults one after another, each 2-6 s long with 1-3 s of calm between them, starting after
    the warm-up: [{"at", "kind", "dur", ...targets}], all drawn from rng."""
    faults = []
    t = warmup
    while True:
        dur = round(rng.uniform(2.0, 6.0), 2)
        if t + dur > duration:
            return faults
        kind = rng.choice(kinds)
        a, b = rng.sample(NODES, 2)
        fault = {"at": round(t, 2), "kind": kind, "dur": dur, "node": a, "peer": b,
                 "partition": rng.randrange(partitions),
                 "offset_s": rng.randint(3600, 30 * 86400)}
        faults.append(fault)
        t += dur + rng.uniform(1.0, 3.0)


def describe(fault):
    kind = fault["kind"]
    if kind in ("cut",):
        return f"{kind} {fault['node']}<->{fault['peer']}"
    if kind == "cut-oneway":
        return f"{kind} {fault['node']}->{fault['peer']}"
    if kind.endswith("-leader"):
        return f"{kind} of partition {fault['partition']}"
    if kind.endswith("-controller"):
        return kind
    if kind == "clock":
        return f"{kind} node {fault['node']} +{fault['offset_s']}s"
    return f"{kind} node {fault['node']}"


# -- the cluster --------------------------------------------------------------------------------

class Cluster:
    def __init__(self, hosts, broker_bin, out_dir, settings):
        self.hosts = hosts
        self.bin = broker_bin
        self.out_dir = out_dir
        self.settings = settings
        self.procs = {}
        self.log_files = {}
        self.stopped = set()
        self.cores = os.cpu_count() or 1

    def data_dir(self, n):
        return os.path.join(self.hosts.data_mount(n), "data")

    def props_path(self, n):
        return os.path.join(self.hosts.state_dir, f"node-{n}.properties")

    def write_props(self, n):
        voters = ",".join(f"{m}@{infra.node_addr(m)}:{CONTROLLER_PORT}" for m in NODES)
        addr = infra.node_addr(n)
        lines = [
            f"node.id={n}",
            "process.roles=broker,controller",
            f"controller.quorum.voters={voters}",
            f"listeners=PLAINTEXT://{addr}:{CLIENT_PORT},CONTROLLER://{addr}:{CONTROLLER_PORT}",
            f"advertised.listeners=PLAINTEXT://{addr}:{CLIENT_PORT}",
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "controller.listener.names=CONTROLLER",
            f"log.dirs={self.data_dir(n)}",
            "controller.quorum.election.timeout.ms=1000",
            f"broker.session.timeout.ms={self.settings['session_timeout_ms']}",
            "broker.heartbeat.interval.ms=500",
            "group.initial.rebalance.delay.ms=0",
            f"default.replication.factor={self.settings['rf']}",
            f"min.insync.replicas={self.settings['min_isr']}",
            f"log.segment.reserve.budget.bytes={self.settings['reserve_budget']}",
        ]
        with open(self.props_path(n), "w") as f:
            f.write("\n".join(lines) + "\n")

    def reset(self, run_out):
        """A fresh cluster for one run: empty data dirs, node logs under run_out."""
        self.out_dir = run_out
        for n in NODES:
            shutil.rmtree(self.data_dir(n), ignore_errors=True)
            os.makedirs(self.data_dir(n))
            self.write_props(n)

    def start(self, n, clock_offset_s=None):
        log_path = os.path.join(self.out_dir, f"node-{n}.log")
        offset = os.path.getsize(log_path) if os.path.exists(log_path) else 0
        out = open(log_path, "ab")
        cmd = ["ip", "netns", "exec", self.hosts.ns(n)]
        if clock_offset_s:
            cmd += ["unshare", "--time", "--monotonic", str(clock_offset_s),
                    "--boottime", str(clock_offset_s)]
        cmd += [self.bin, "serve", "--config", self.props_path(n),
                "--cores", str((n - 1) % self.cores)]
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        out.close()
        self.procs[n] = proc
        self.log_files[n] = (log_path, offset)
        self.stopped.discard(n)

    def log_since_start(self, n):
        path, offset = self.log_files[n]
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")

    def wait_ready(self, n, timeout, marker="ringbroker ready"):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if marker in self.log_since_start(n):
                return True
            if self.procs[n].poll() is not None:
                return False
            time.sleep(0.1)
        return False

    def alive(self, n):
        return n in self.procs and self.procs[n].poll() is None

    def signal(self, n, sig):
        if self.alive(n):
            os.kill(self.procs[n].pid, sig)
            if sig == signal.SIGSTOP:
                self.stopped.add(n)
            elif sig == signal.SIGCONT:
                self.stopped.discard(n)

    def kill(self, n):
        if self.alive(n):
            os.kill(self.procs[n].pid, signal.SIGKILL)
            self.procs[n].wait()

    def stop_all(self, graceful_s=0.0):
        for n in list(self.procs):
            if self.alive(n):
                os.kill(self.procs[n].pid, signal.SIGCONT)
                if graceful_s:
                    os.kill(self.procs[n].pid, signal.SIGTERM)
        deadline = time.monotonic() + graceful_s
        for n, proc in list(self.procs.items()):
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        self.procs.clear()
        self.stopped.clear()

    def bootstrap(self):
        return ",".join(f"{infra.node_addr(n)}:{CLIENT_PORT}" for n in NODES)


# -- roles: finding leaders ---------------------------------------------------------------------

def partition_leader(bootstrap, topic, partition):
    from confluent_kafka.admin import AdminClient
    admin = AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": 2000, "log_level": 4})
    try:
        md = admin.list_topics(topic, timeout=3)
        leader = md.topics[topic].partitions[partition].leader
        return leader if leader in NODES else None
    except Exception:  # noqa: BLE001 - no answer within the bound: unknown
        return None


def active_controller():
    for n in NODES:
        try:
            leader, _epoch, _hw = describe_quorum(infra.node_addr(n), CLIENT_PORT, timeout=1.5)
        except (OSError, ValueError):
            continue
        if leader in NODES:
            return leader
    return None


# -- one run ------------------------------------------------------------------------------------

class Run:
    def __init__(self, args, hosts, cluster, seed, out_dir):
        self.args = args
        self.hosts = hosts
        self.cluster = cluster
        self.seed = seed
        self.out = out_dir
        self.topic = f"chaos-{seed}"
        self.group = f"chaos-group-{seed}"
        self.clients = []
        self.faults_done = 0
        self.replicas = {}

    def client(self, name, role, *extra):
        path = os.path.join(self.out, f"{name}.jsonl")
        cmd = [sys.executable, os.path.join(HERE, "workload.py"), role,
               "--bootstrap", self.cluster.bootstrap(), "--topic", self.topic, "--out", path,
               "--run", f"s{self.seed}", "--group", self.group,
               "--partitions", str(self.args.partitions),
               "--value-bytes", str(self.args.value_bytes)] + list(extra)
        err = open(os.path.join(self.out, f"{name}.stderr"), "wb")
        proc = subprocess.Popen(cmd, stdout=err, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        err.close()
        self.clients.append((name, role, proc))
        return proc

    def stop_clients(self, roles, timeout):
        chosen = [(n, r, p) for n, r, p in self.clients if r in roles]
        for _name, _role, proc in chosen:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for name, _role, proc in chosen:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log(f"{name} did not stop within {timeout} s; SIGKILL")
                proc.kill()
                proc.wait()

    def kill_clients(self):
        for _name, _role, proc in self.clients:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    def start_cluster(self):
        self.cluster.reset(self.out)
        for n in NODES:
            self.cluster.start(n)
        for n in NODES:
            if not self.cluster.wait_ready(n, 30):
                raise RuntimeError(f"node {n} did not start; see {self.out}/node-{n}.log")
        for n in NODES:
            if not self.cluster.wait_ready(n, 30, marker="unfenced: serving"):
                raise RuntimeError(f"node {n} did not join the quorum within 30 s")

    def create_topic(self):
        from confluent_kafka.admin import AdminClient, NewTopic
        admin = AdminClient({"bootstrap.servers": self.cluster.bootstrap()})
        topic = NewTopic(self.topic, self.args.partitions, self.args.rf,
                         config={"min.insync.replicas": str(self.args.min_isr)})
        admin.create_topics([topic], operation_timeout=10)[self.topic].result(timeout=15)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            md = admin.list_topics(self.topic, timeout=5)
            parts = md.topics[self.topic].partitions
            if len(parts) == self.args.partitions and all(p.leader in NODES
                                                          for p in parts.values()):
                return {p: parts[p].replicas for p in parts}
            time.sleep(0.2)
        raise RuntimeError(f"topic {self.topic}: partitions without a leader after 20 s")

    # Faults --------------------------------------------------------------------------------

    def resolve(self, fault):
        kind = fault["kind"]
        if kind.endswith("-leader"):
            leader = partition_leader(self.cluster.bootstrap(), self.topic, fault["partition"])
            return leader if leader is not None else fault["node"]
        if kind.endswith("-controller"):
            leader = active_controller()
            return leader if leader is not None else fault["node"]
        return fault["node"]

    def apply(self, fault):
        kind = fault["kind"]
        target = self.resolve(fault)
        fault["target"] = target
        others = [m for m in NODES if m != target]
        if kind in ("kill", "kill-leader", "kill-controller"):
            self.cluster.kill(target)
        elif kind == "wipe-leader":
            self.cluster.kill(target)
            data = self.cluster.data_dir(target)
            wiped = [d for d in os.listdir(data) if d.startswith(f"{self.topic}-")
                     and d[len(self.topic) + 1:].isdigit()]
            for d in wiped:
                shutil.rmtree(os.path.join(data, d))
            fault["wiped"] = sorted(wiped)
        elif kind == "clock":
            self.cluster.kill(target)
            self.cluster.start(target, clock_offset_s=fault["offset_s"])
        elif kind in ("pause", "pause-leader"):
            self.cluster.signal(target, signal.SIGSTOP)
        elif kind == "cut":
            self.hosts.drop(target, fault["peer"])
            self.hosts.drop(fault["peer"], target)
        elif kind == "cut-oneway":
            self.hosts.drop(target, fault["peer"])
        elif kind in ("isolate", "isolate-leader", "isolate-controller"):
            for m in others:
                self.hosts.drop(target, m)
                self.hosts.drop(m, target)
        elif kind == "slow":
            self.hosts.slow(target)
        elif kind == "disk-full":
            fault["filled_bytes"] = self.hosts.fill_disk(target)
        else:
            raise ValueError(f"unknown fault kind {kind}")
        return target

    def heal(self):
        """Heals every fault there may be: links, qdiscs, disks, paused and dead nodes."""
        self.hosts.heal_all()
        for n in NODES:
            if self.cluster.alive(n):
                self.cluster.signal(n, signal.SIGCONT)
        restarted = []
        for n in NODES:
            if not self.cluster.alive(n):
                self.cluster.start(n)
                restarted.append(n)
        return restarted

    # Serving again ---------------------------------------------------------------------------

    def probe(self, attempt):
        """None when every partition takes an acks=all write and the group coordinator
        answers; else why not."""
        from confluent_kafka import Producer
        from confluent_kafka.admin import AdminClient
        admin = AdminClient({"bootstrap.servers": self.cluster.bootstrap(),
                             "socket.timeout.ms": 2000, "log_level": 4})
        try:
            md = admin.list_topics(self.topic, timeout=3)
        except Exception as err:  # noqa: BLE001
            return f"metadata: {err}"
        if len(md.brokers) != len(NODES):
            return f"metadata lists brokers {sorted(md.brokers)}"
        parts = md.topics[self.topic].partitions
        missing = [p for p, meta in parts.items() if meta.leader not in NODES]
        if missing:
            return f"partitions without a leader: {missing}"
        producer = Producer({"bootstrap.servers": self.cluster.bootstrap(), "acks": "all",
                             "message.timeout.ms": 4000, "enable.idempotence": True})
        failures = []
        for p in parts:
            producer.produce(self.topic, value=f"probe:{attempt}:{p}x".encode(), partition=p,
                             on_delivery=lambda err, msg: err and failures.append(
                                 f"{msg.partition()}: {err}"))
        left = producer.flush(6)
        if left or failures:
            return f"probe writes failed: {failures or left}"
        try:
            group_admin = admin_client(self.cluster.bootstrap())
            try:
                committed_offsets(group_admin, self.group, self.topic)
            finally:
                group_admin.close()
        except Exception as err:  # noqa: BLE001
            return f"group coordinator: {err}"
        return None

    def wait_serving(self, bound):
        t0 = time.monotonic()
        attempt = 0
        why = "not tried"
        while time.monotonic() - t0 < bound:
            attempt += 1
            why = self.probe(attempt)
            if why is None:
                return {"ok": True, "seconds": round(time.monotonic() - t0, 2), "bound": bound}
            time.sleep(0.5)
        return {"ok": False, "seconds": None, "bound": bound, "why": why}

    # Final read ------------------------------------------------------------------------------

    def final_read(self):
        committed = None
        committed_at = time.time()
        try:
            group_admin = admin_client(self.cluster.bootstrap())
            try:
                committed = committed_offsets(group_admin, self.group, self.topic)
            finally:
                group_admin.close()
        except Exception as err:  # noqa: BLE001
            log(f"final committed offsets unavailable: {err}")
        consumer = self.final_consumer("read_uncommitted")
        try:
            hws = {p: self.high_watermark(consumer, p) for p in range(self.args.partitions)}
            partitions, corrupt, unread = self.read_from_start(consumer, hws, "final read")
            if unread:
                raise RuntimeError(f"final read incomplete after 60 s: partitions {unread}")
        finally:
            consumer.close()
        return {"partitions": partitions, "high_watermarks": hws, "committed": committed,
                "committed_at": committed_at, "corrupt": corrupt,
                "read_committed": self.read_committed(hws)}

    def high_watermark(self, consumer, partition):
        """The partition's high watermark; a fresh client may not know the partition yet
        (_UNKNOWN_PARTITION before its first Metadata answer), so asked again for up to 30 s."""
        from confluent_kafka import KafkaException, TopicPartition
        deadline = time.monotonic() + 30
        while True:
            try:
                return consumer.get_watermark_offsets(TopicPartition(self.topic, partition),
                                                      timeout=10)[1]
            except KafkaException:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def read_committed(self, hws):
        """Every partition read from the start with isolation.level=read_committed, up to the
        high watermark the read_uncommitted pass saw (the last stable offset reaches it once
        every transaction has ended; a transaction its producer left open is aborted by the
        coordinator after transaction.timeout.ms): {p: [[offset, payload], ...]}, or None when
        it did not get there within 60 s."""
        consumer = self.final_consumer("read_committed")
        try:
            partitions, _corrupt, unread = self.read_from_start(consumer, hws,
                                                                "final read_committed read")
        finally:
            consumer.close()
        if unread:
            log(f"final read_committed read incomplete after 60 s: partitions {unread}")
            return None
        return partitions

    def final_consumer(self, isolation):
        """A fresh consumer for a final read, in its own group, committing nothing."""
        from confluent_kafka import Consumer
        return Consumer({"bootstrap.servers": self.cluster.bootstrap(),
                         "group.id": f"chaos-final-{isolation}-{self.seed}",
                         "enable.auto.commit": False,
                         "isolation.level": isolation,
                         "enable.partition.eof": True})

    def read_from_start(self, consumer, hws, what):
        """Reads every partition of `hws` from its start until the end of the partition is at or
        past its high watermark there, for at most 60 s: ({p: [[offset, payload], ...]},
        [[p, offset, payload] of values with bytes other than written], sorted partitions not
        read to the end)."""
        from confluent_kafka import OFFSET_BEGINNING, TopicPartition
        partitions = {p: [] for p in hws}
        corrupt = []
        consumer.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in hws])
        done = {p for p in hws if hws[p] == 0}
        deadline = time.monotonic() + 60
        while len(done) < len(hws) and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() == msg.error()._PARTITION_EOF:
                    if msg.offset() >= hws[msg.partition()]:
                        done.add(msg.partition())
                    continue
                log(f"{what}: {msg.error()}")
                continue
            payload, intact = parse_value(msg.value(), self.args.value_bytes)
            if not intact:
                corrupt.append([msg.partition(), msg.offset(), payload])
            partitions[msg.partition()].append([msg.offset(), payload])
            if msg.offset() + 1 >= hws[msg.partition()]:
                done.add(msg.partition())
        return partitions, corrupt, sorted(set(hws) - done)

    # The run ---------------------------------------------------------------------------------

    def execute(self, schedule):
        log(f"run seed {self.seed}: topic {self.topic}, {self.args.partitions} partitions, "
            f"RF {self.args.rf}, min.insync.replicas {self.args.min_isr}; "
            f"{len(schedule)} faults: " + "; ".join(f"{f['at']}s {describe(f)} {f['dur']}s"
                                                    for f in schedule))
        self.start_cluster()
        self.replicas = self.create_topic()
        log(f"cluster serving; replicas {self.replicas}")
        for i in range(self.args.producers):
            self.client(f"producer-{i}", "produce", "--id", f"p{i}",
                        "--rate", str(self.args.rate), "--flush-s", "10")
        for i in range(self.args.txn_producers):
            self.client(f"producer-t{i}", "txn-produce", "--id", f"t{i}",
                        "--rate", str(self.args.rate / 4))
        self.client("consumer-0", "consume", "--id", "c0", "--client", "confluent")
        self.client("consumer-1", "consume", "--id", "c1", "--client", "kafka-python")
        self.client("monitor", "monitor")
        t0 = time.monotonic()
        for fault in schedule:
            wait = t0 + fault["at"] - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            target = self.apply(fault)
            self.faults_done += 1
            log(f"fault {describe(fault)}: node {target}")
            time.sleep(fault["dur"])
            restarted = self.heal()
            log(f"healed {describe(fault)}" +
                (f"; restarted node(s) {restarted}" if restarted else ""))
        wait = t0 + self.args.duration - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        restarted = self.heal()
        for n in restarted:
            log(f"node {n} was down at the end; restarted")
        serve = self.wait_serving(self.args.serve_bound)
        log("serving again after the last heal: " +
            (f"{serve['seconds']} s" if serve["ok"] else f"NOT within {serve['bound']} s "
             f"({serve['why']})"))
        with open(os.path.join(self.out, "serve.json"), "w") as f:
            json.dump(serve, f)
        self.stop_clients({"produce", "txn-produce"}, timeout=40)
        time.sleep(self.args.drain)
        self.stop_clients({"consume", "monitor"}, timeout=20)
        final = self.final_read()
        with open(os.path.join(self.out, "final.json"), "w") as f:
            json.dump(final, f)
        with open(os.path.join(self.out, "schedule.json"), "w") as f:
            json.dump({"seed": self.seed, "faults": schedule}, f, indent=1)
        return serve


def replica_digests(cluster, topic, partitions, hws):
    """Per partition and node, the SHA-256 of the record batches below the final high watermark
    as the node's own segment files hold them (Kafka's layout: <topic>-<p>/<base>.log, v2
    batches back to back; a tail of zeros or a torn batch ends a file), and the offset the
    covered batches reach. Read with the cluster stopped. A node without the directory holds
    nothing (its digest is that of no bytes)."""
    import hashlib
    import struct
    out = {}
    for p in range(partitions):
        hw = hws.get(p, 0)
        out[p] = {}
        for n in NODES:
            d = os.path.join(cluster.data_dir(n), f"{topic}-{p}")
            digest = hashlib.sha256()
            reached = 0
            names = sorted(f for f in os.listdir(d) if f.endswith(".log")) \
                if os.path.isdir(d) else []
            for name in names:
                with open(os.path.join(d, name), "rb") as f:
                    data = f.read()
                pos = 0
                while pos + 27 <= len(data):
                    base, length = struct.unpack_from(">qi", data, pos)
                    if length <= 0 or pos + 12 + length > len(data) or data[pos + 16] != 2:
                        break
                    last = base + struct.unpack_from(">i", data, pos + 23)[0]
                    if last >= hw:
                        break
                    digest.update(data[pos:pos + 12 + length])
                    reached = last + 1
                    pos += 12 + length
            out[p][n] = {"sha256": digest.hexdigest(), "reached": reached}
    return out


def batch_headers(cluster, topic, partitions):
    """Per partition and node, every v2 batch header of the node's segment files as
    [base offset, last offset, leader epoch, producer id, producer epoch, base sequence]: what
    a duplicate or a reordering is read back from (which producer epoch wrote each copy)."""
    import struct
    out = {}
    for p in range(partitions):
        out[p] = {}
        for n in NODES:
            d = os.path.join(cluster.data_dir(n), f"{topic}-{p}")
            names = sorted(f for f in os.listdir(d) if f.endswith(".log")) \
                if os.path.isdir(d) else []
            headers = []
            for name in names:
                with open(os.path.join(d, name), "rb") as f:
                    data = f.read()
                pos = 0
                while pos + 61 <= len(data):
                    base, length, leader_epoch = struct.unpack_from(">qii", data, pos)
                    if length <= 0 or pos + 12 + length > len(data) or data[pos + 16] != 2:
                        break
                    delta = struct.unpack_from(">i", data, pos + 23)[0]
                    pid, pepoch, seq = struct.unpack_from(">qhi", data, pos + 43)
                    headers.append([base, base + delta, leader_epoch, pid, pepoch, seq])
                    pos += 12 + length
            out[p][n] = headers
    return out


def run_once(args, hosts, cluster, seed, results_root):
    out = os.path.join(results_root, f"seed-{seed}")
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    rng = random.Random(seed)
    schedule = make_schedule(rng, args.faults, args.duration, args.partitions)
    run = Run(args, hosts, cluster, seed, out)
    try:
        run.execute(schedule)
    finally:
        run.kill_clients()
        cluster.stop_all(graceful_s=5)
    final_path = os.path.join(out, "final.json")
    with open(final_path) as f:
        final = json.load(f)
    hws = {int(p): hw for p, hw in final["high_watermarks"].items()}
    final["replica_digests"] = replica_digests(cluster, run.topic, args.partitions, hws)
    final["batches"] = batch_headers(cluster, run.topic, args.partitions)
    final["replicas"] = run.replicas
    with open(final_path, "w") as f:
        json.dump(final, f)
    result = checker.check(out)
    return out, run.faults_done, result


# -- main ---------------------------------------------------------------------------------------

def parse_args():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--broker-bin", required=True, help="the ringbroker release binary")
    p.add_argument("--seed", type=int, help="first run's seed (default: random, printed)")
    p.add_argument("--runs", type=int, default=1, help="runs, with seeds seed, seed+1, ...")
    p.add_argument("--duration", type=float, default=30.0, help="seconds of faults per run")
    p.add_argument("--faults", default=",".join(FAULT_KINDS),
                   help="comma-separated fault kinds (default: all): " + ", ".join(FAULT_KINDS))
    p.add_argument("--no-leader-kills", action="store_true",
                   help="drop the kinds that SIGKILL a node (" +
                        ", ".join(sorted(LEADER_KILLING)) + ")")
    p.add_argument("--partitions", type=int, default=6)
    p.add_argument("--rf", type=int, default=3, help="replication factor of the topic")
    p.add_argument("--min-isr", type=int, default=2, help="min.insync.replicas of the topic")
    p.add_argument("--producers", type=int, default=2)
    p.add_argument("--txn-producers", type=int, default=1,
                   help="transactional producers (commits and aborts; checked under "
                        "read_committed)")
    p.add_argument("--value-bytes", type=int, default=256,
                   help="message size: the unique payload id, then filler the readers check")
    p.add_argument("--session-timeout-ms", type=int, default=4000,
                   help="the nodes' broker.session.timeout.ms: a node unheard of for longer is "
                        "fenced and its partitions change leader epoch (faults last 2-6 s)")
    p.add_argument("--reserve-budget", type=int, default=0,
                   help="the nodes' log.segment.reserve.budget.bytes (default 0: segments "
                        "reserve no space ahead, so that disk-full bites at once)")
    p.add_argument("--rate", type=float, default=100.0, help="messages/s per producer")
    p.add_argument("--serve-bound", type=float, default=30.0,
                   help="seconds the cluster may take to serve again after the last heal")
    p.add_argument("--drain", type=float, default=5.0,
                   help="seconds the consumers go on reading after the producers stop")
    p.add_argument("--disk-mb", type=int, default=256, help="each node's data filesystem")
    p.add_argument("--results", default="/tmp/ringbroker-chaos-results",
                   help="where run histories are kept (passed runs are removed unless --keep)")
    p.add_argument("--keep", action="store_true", help="keep the histories of passed runs")
    args = p.parse_args()
    kinds = [k.strip() for k in args.faults.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in FAULT_KINDS]
    if unknown:
        p.error(f"unknown fault kinds {unknown}; known: {', '.join(FAULT_KINDS)}")
    if args.no_leader_kills:
        kinds = [k for k in kinds if k not in LEADER_KILLING]
    if not kinds:
        p.error("no fault kinds left")
    args.faults = kinds
    if not (1 <= args.rf <= len(NODES)):
        p.error(f"--rf must be 1 to {len(NODES)}")
    if not os.access(args.broker_bin, os.X_OK):
        p.error(f"--broker-bin {args.broker_bin}: not an executable")
    args.broker_bin = os.path.abspath(args.broker_bin)
    return args


def main():
    args = parse_args()
    if os.geteuid() != 0:
        print("chaos: needs root (network namespaces, nftables, loop mounts)", file=sys.stderr)
        return 2
    for tool in ("ip", "nft", "tc", "mkfs.ext4", "mount", "unshare"):
        if not shutil.which(tool):
            print(f"chaos: {tool} missing (tests/install-deps.sh installs it)", file=sys.stderr)
            return 2
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "big")
    print(f"chaos: seed {seed} (replay with --seed {seed} --runs {args.runs}); fault kinds: "
          f"{', '.join(args.faults)}", flush=True)

    alive = infra.remove_leftovers(log)
    if alive:
        print(f"chaos: another chaos run is alive ({', '.join(sorted(alive))}); refusing",
              file=sys.stderr)
        return 2
    run_id = infra.FAMILY + os.urandom(2).hex()
    hosts = infra.Infra(run_id, NODES, args.disk_mb, log)
    cluster = Cluster(hosts, args.broker_bin, None, {"rf": args.rf, "min_isr": args.min_isr,
                                                       "reserve_budget": args.reserve_budget,
                                                       "session_timeout_ms":
                                                           args.session_timeout_ms})
    cleaned = []

    def cleanup():
        if cleaned:
            return
        cleaned.append(True)
        cluster.stop_all()
        hosts.cleanup()

    def on_signal(signum, _frame):
        signal.signal(signum, signal.SIG_IGN)
        raise KeyboardInterrupt(f"signal {signum}")

    atexit.register(cleanup)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)

    results_root = os.path.join(args.results, run_id)
    os.makedirs(results_root, exist_ok=True)
    runs = faults = lost = dup = viol = 0
    status = 0
    try:
        log(f"run id {run_id}: namespaces {hosts.ns(1)}..{hosts.ns(len(NODES))}, bridge "
            f"{hosts.bridge} {infra.BRIDGE_ADDR}, node data on {args.disk_mb} MiB loop ext4")
        hosts.setup()
        for i in range(args.runs):
            s = seed + i
            try:
                out, done, result = run_once(args, hosts, cluster, s, results_root)
            except KeyboardInterrupt:
                raise
            except Exception as err:  # noqa: BLE001 - a broken run is a violation, not a crash
                log(f"run seed {s} could not finish: {err}")
                runs += 1
                viol += 1
                continue
            runs += 1
            faults += done
            lost += len(result["lost"])
            dup += len(result["duplicated"])
            viol += result["violations"]
            bad = result["lost"] or result["duplicated"] or result["violations"]
            log(f"run seed {s}: {done} faults, sent {result['sent']}, acked {result['acked']} "
                f"({result['acked_without_offset']} without an offset), "
                f"failed {result['failed']}, {result['fatal']} fatal producer errors, "
                f"read {result['read']}, {result['commits']} commits, "
                f"{len(result['lost'])} lost, {len(result['duplicated'])} duplicated, "
                f"{result['violations']} violations" + (f"; history in {out}" if bad else ""))
            if result["lost"]:
                log(f"  lost: {', '.join(result['lost'][:8])}" +
                    (" ..." if len(result["lost"]) > 8 else ""))
            if result["duplicated"]:
                log(f"  duplicated: {', '.join(result['duplicated'][:8])}" +
                    (" ..." if len(result["duplicated"]) > 8 else ""))
            for kind, count in sorted(result["violation_counts"].items()):
                log(f"  {count} x {kind}")
            for v in result["examples"]:
                log(f"    {v}")
            if not bad and not args.keep:
                shutil.rmtree(out, ignore_errors=True)
    except KeyboardInterrupt as err:
        log(f"interrupted ({err}); cleaning up")
        status = 130
    except Exception as err:  # noqa: BLE001
        log(f"harness error: {err}")
        status = 2
    finally:
        cleanup()
        try:
            os.rmdir(results_root)
        except OSError:
            pass
    print(f"chaos: {runs} runs, {faults} faults, {lost} lost, {dup} duplicated, "
          f"{viol} violations", flush=True)
    if lost + dup + viol:
        return 1
    return status


if __name__ == "__main__":
    sys.exit(main())
