#!/usr/bin/env python3
"""Records seeds for the fuzz targets from a real run of the broker and real clients.

Starts the broker binary (argument 1) on a temporary data directory behind a recording proxy
(clients are told the proxy's address as the advertised listener, so every connection goes
through it), runs kcat and kafka-python scenarios (admin, produce with every codec, consume,
consume in a group, a transaction, and the legacy message formats through old protocol
versions), stops the broker, and writes into tests/fuzz/seeds/:

  request_frame/client-<scenario>-<seq>-k<key>v<version>.bin   each distinct request frame
  record_batch/client-<n>.bin       each distinct Produce v3+ `records` field, flag byte 0
  legacy_format/client-up-<n>.bin   each Produce v0-2 message set (flag 0: up-conversion)
  legacy_format/client-down-<n>.bin each stored segment's batches (flag 1: down-conversion)
  segment_recovery/client-<n>.bin   each segment file in the target's input layout
  metadata_log/client-0.bin         the metadata log in the target's input layout

Usage: tests/fuzz/tools/record_seeds.py target/debug/ringbroker
"""

import hashlib
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SEEDS = os.path.join(HERE, "..", "seeds")
SEGMENT_SEED_BYTES_MAX = 64 * 1024


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Recorder:
    def __init__(self, listen_port, upstream_port):
        self.scenario = "start"
        self.frames = []  # (scenario, bytes)
        self.lock = threading.Lock()
        self.upstream_port = upstream_port
        self.server = socket.socket()
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.server.bind(("127.0.0.1", listen_port))
        self.server.listen(64)
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            threading.Thread(target=self.client_to_broker, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self.pump, args=(upstream, client), daemon=True).start()

    def pump(self, src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def client_to_broker(self, client, upstream):
        buf = b""
        try:
            while True:
                data = client.recv(65536)
                if not data:
                    break
                upstream.sendall(data)
                buf += data
                while len(buf) >= 4:
                    (size,) = struct.unpack(">i", buf[:4])
                    if len(buf) < 4 + size:
                        break
                    with self.lock:
                        self.frames.append((self.scenario, buf[4 : 4 + size]))
                    buf = buf[4 + size :]
        except OSError:
            pass
        for s in (client, upstream):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def run(cmd, **kw):
    subprocess.run(cmd, check=False, timeout=60, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)


def attempt(fn, *args):
    """Runs one admin call; a call this kafka-python or the broker does not support is skipped."""
    try:
        return fn(*args)
    except Exception as err:
        print(f"{getattr(fn, '__name__', fn)} skipped: {err}")


def scenarios(rec, bootstrap):
    import kafka
    from kafka.admin import KafkaAdminClient, NewTopic, NewPartitions, ConfigResource, ConfigResourceType

    rec.scenario = "admin"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    admin.create_topics([NewTopic("seeds", 2, 1), NewTopic("legacy", 1, 1), NewTopic("gone", 1, 1, topic_configs={"retention.ms": "60000"})])
    attempt(admin.describe_configs, [ConfigResource(ConfigResourceType.TOPIC, "seeds")])
    attempt(admin.alter_configs, [ConfigResource(ConfigResourceType.TOPIC, "gone", configs={"retention.ms": "120000"})])
    attempt(admin.create_partitions, {"gone": NewPartitions(2)})
    admin.list_topics()
    attempt(admin.describe_cluster)
    attempt(admin.delete_topics, ["gone"])

    for codec in ["none", "gzip", "snappy", "lz4", "zstd"]:
        rec.scenario = f"kcat-produce-{codec}"
        msgs = "".join(f"key{i}:value {codec} {i}\n" for i in range(5)).encode()
        run(["kcat", "-b", bootstrap, "-P", "-t", "seeds", "-K:", "-z", codec, "-X", "linger.ms=50"], input=msgs)
    rec.scenario = "kcat-produce-idempotent"
    run(["kcat", "-b", bootstrap, "-P", "-t", "seeds", "-X", "enable.idempotence=true", "-H", "h=v"], input=b"a\nb\nc\n")

    for fallback, codecs in [("0.9.0", ["none", "gzip", "snappy", "lz4"]), ("0.10.2", ["none", "gzip", "snappy", "lz4"])]:
        for codec in codecs:
            rec.scenario = f"kcat-legacy-{fallback}-{codec}"
            msgs = "".join(f"k{i}:legacy {fallback} {codec} {i}\n" for i in range(4)).encode()
            run(["kcat", "-b", bootstrap, "-P", "-t", "legacy", "-K:", "-z", codec,
                 "-X", "api.version.request=false", "-X", f"broker.version.fallback={fallback}"], input=msgs)
            rec.scenario = f"kcat-legacy-consume-{fallback}"
            run(["kcat", "-b", bootstrap, "-C", "-t", "legacy", "-o", "beginning", "-e",
                 "-X", "api.version.request=false", "-X", f"broker.version.fallback={fallback}"])

    rec.scenario = "kcat-consume"
    run(["kcat", "-b", bootstrap, "-C", "-t", "seeds", "-o", "beginning", "-e"])
    rec.scenario = "kcat-group"
    run(["kcat", "-b", bootstrap, "-G", "seedgroup", "seeds", "-e", "-X", "auto.offset.reset=earliest"])
    rec.scenario = "kcat-metadata"
    run(["kcat", "-b", bootstrap, "-L"])

    rec.scenario = "python-group"
    consumer = kafka.KafkaConsumer("seeds", bootstrap_servers=bootstrap, group_id="pygroup",
                                   auto_offset_reset="earliest", consumer_timeout_ms=3000)
    for _ in consumer:
        pass
    consumer.commit()
    consumer.close()
    rec.scenario = "admin-groups"
    attempt(admin.list_groups)
    attempt(admin.describe_groups, ["pygroup"])
    attempt(admin.list_group_offsets, "pygroup")
    attempt(admin.delete_groups, ["seedgroup"])
    attempt(admin.list_transactions)
    attempt(admin.describe_transactions, ["seed-txn"])
    spec = getattr(kafka.admin, "OffsetSpec", None)
    if spec is not None:
        attempt(admin.list_partition_offsets, {kafka.TopicPartition("seeds", 0): list(spec)[0]})

    rec.scenario = "python-transaction"
    try:
        producer = kafka.KafkaProducer(bootstrap_servers=bootstrap, transactional_id="seed-txn")
        producer.init_transactions()
        producer.begin_transaction()
        producer.send("seeds", b"in a transaction")
        producer.commit_transaction()
        producer.begin_transaction()
        producer.send("seeds", b"aborted")
        producer.abort_transaction()
        producer.close()
    except Exception as err:  # older kafka-python without transactions
        print("transaction scenario skipped:", err)
    admin.close()


def unique(items):
    seen = set()
    for item in items:
        digest = hashlib.sha1(item[-1]).digest()
        if digest not in seen:
            seen.add(digest)
            yield item


def clear(dir, prefix):
    os.makedirs(dir, exist_ok=True)
    for name in os.listdir(dir):
        if name.startswith(prefix):
            os.remove(os.path.join(dir, name))


def produce_records(frame):
    """(version, [records]) of a Produce frame with a non-flexible body (v0-8); else None."""
    key, version = struct.unpack(">hh", frame[:4])
    if key != 0 or version > 8:
        return None
    at = 8
    (client_len,) = struct.unpack(">h", frame[at : at + 2])
    at += 2 + max(client_len, 0)
    if version >= 3:
        (txn_len,) = struct.unpack(">h", frame[at : at + 2])
        at += 2 + max(txn_len, 0)
    at += 2 + 4  # acks, timeout
    out = []
    (topics,) = struct.unpack(">i", frame[at : at + 4]); at += 4
    for _ in range(topics):
        (name_len,) = struct.unpack(">h", frame[at : at + 2]); at += 2 + name_len
        (parts,) = struct.unpack(">i", frame[at : at + 4]); at += 4
        for _ in range(parts):
            at += 4
            (size,) = struct.unpack(">i", frame[at : at + 4]); at += 4
            if size > 0:
                out.append(frame[at : at + size]); at += size
    return version, out


def whole_batches(log):
    """The prefix of a segment file that holds whole batches (the file may be reserved ahead)."""
    at = 0
    while at + 61 <= len(log):
        (length,) = struct.unpack(">i", log[at + 8 : at + 12])
        if length < 49 or at + 12 + length > len(log):
            break
        at += 12 + length
    return log[:at]


def main():
    binary = os.path.abspath(sys.argv[1])
    data = tempfile.mkdtemp(prefix="ringbroker-seeds-")
    broker_port, proxy_port = free_port(), free_port()
    rec = Recorder(proxy_port, broker_port)
    broker = subprocess.Popen([binary, "serve", "--data-dir", data, "--listen", f"127.0.0.1:{broker_port}",
                               "--advertised-listener", f"127.0.0.1:{proxy_port}", "--cores", "0"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", broker_port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        scenarios(rec, f"127.0.0.1:{proxy_port}")
        time.sleep(1)
    finally:
        broker.terminate()
        try:
            broker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            broker.kill()
            broker.wait()

    frames_dir = os.path.join(SEEDS, "request_frame")
    clear(frames_dir, "client-")
    batches, message_sets = [], []
    for seq, (scenario, frame) in enumerate(unique(rec.frames)):
        key, version = struct.unpack(">hh", frame[:4])
        with open(os.path.join(frames_dir, f"client-{scenario}-{seq:04d}-k{key}v{version}.bin"), "wb") as f:
            f.write(frame)
        parsed = produce_records(frame)
        if parsed:
            (batches if parsed[0] >= 3 else message_sets).extend(parsed[1])
    batch_dir = os.path.join(SEEDS, "record_batch")
    clear(batch_dir, "client-")
    for n, (records,) in enumerate(unique([(r,) for r in batches])):
        with open(os.path.join(batch_dir, f"client-{n}.bin"), "wb") as f:
            f.write(bytes([3 << 1]) + records)
    legacy_dir = os.path.join(SEEDS, "legacy_format")
    clear(legacy_dir, "client-")
    for n, (message_set,) in enumerate(unique([(m,) for m in message_sets])):
        with open(os.path.join(legacy_dir, f"client-up-{n}.bin"), "wb") as f:
            f.write(bytes([0]) + message_set)

    segment_dir = os.path.join(SEEDS, "segment_recovery")
    clear(segment_dir, "client-")
    n = 0
    for root, _, files in sorted(os.walk(data)):
        for name in sorted(files):
            if not name.endswith(".log") or "__cluster_metadata" in root:
                continue
            log = whole_batches(open(os.path.join(root, name), "rb").read())[:SEGMENT_SEED_BYTES_MAX]
            if not log:
                continue
            base = int(name[:20])
            part = lambda ext: (open(os.path.join(root, name[:20] + ext), "rb").read()
                                if os.path.exists(os.path.join(root, name[:20] + ext)) else b"")
            parts = [part(".index"), part(".timeindex"), part(".snapshot"), part(".txnindex")]
            layout = bytes([4 if base else 0]) + struct.pack(">q", base)
            layout += b"".join(struct.pack(">H", len(p)) + p for p in parts) + log
            with open(os.path.join(segment_dir, f"client-{n}.bin"), "wb") as f:
                f.write(layout)
            for magic_flag in (1, 1 | 4):
                down = bytes([magic_flag]) + struct.pack(">q", 0) + struct.pack(">HH", 1024, 0) + log
                with open(os.path.join(legacy_dir, f"client-down-{n}-{magic_flag}.bin"), "wb") as f:
                    f.write(down)
            n += 1

    meta_dir = os.path.join(SEEDS, "metadata_log")
    clear(meta_dir, "client-")
    meta = os.path.join(data, "__cluster_metadata")
    log = open(os.path.join(meta, "metadata.log"), "rb").read()
    snapshot_path = os.path.join(meta, "snapshot.json")
    snapshot = open(snapshot_path, "rb").read() if os.path.exists(snapshot_path) else b""
    with open(os.path.join(meta_dir, "client-0.bin"), "wb") as f:
        f.write(bytes([2 if snapshot else 0]) + struct.pack(">H", len(snapshot)) + snapshot + log)
    print(f"{len(rec.frames)} frames recorded, {n} segments, data in {data}")
    shutil.rmtree(data)


if __name__ == "__main__":
    main()
