"""Partition scale: one broker with a topic of N partitions (docs/BENCHMARKS.md, "Partition scale").

Usage:
    python3 benches/partition_scale.py BINARY PARTITIONS [PARTITIONS...]

For each count, on a fresh data directory: start the release broker (metrics endpoint on), time
CreateTopics, produce one 100-byte message to every partition (kafka-python, acks=all), then
report disk used (allocated blocks of the data directory) and reserved ahead
(`ringbroker_segment_reserved_bytes`), RSS and open descriptors, the median of 3 Metadata and
ListOffsets (latest, all partitions) answer times, the time to consume every message (one
kafka-python consumer, incremental fetch sessions), then SIGKILL, restart (time to the "ready"
log line and to a ListOffsets answer for all partitions), and DeleteTopics (answer time, time
until the disk is freed, bytes freed). Prints one JSON line per count. Every wait is bounded.
"""
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

BOUND = 300


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Broker:
    def __init__(self, binary, data_dir, port, metrics_port):
        self.binary, self.data_dir, self.port, self.metrics_port = binary, data_dir, port, metrics_port
        self.log_path = os.path.join(os.path.dirname(data_dir), "broker-%d.log" % time.monotonic_ns())
        self.proc = None

    def start(self):
        started = time.monotonic()
        log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [self.binary, "serve", "--data-dir", self.data_dir, "--listen", "127.0.0.1:%d" % self.port,
             "--set", "metrics-listen=127.0.0.1:%d" % self.metrics_port],
            stdout=subprocess.DEVNULL, stderr=log, env=dict(os.environ, RUST_LOG="warn,ringbroker=info"))
        while True:
            if time.monotonic() - started > BOUND:
                raise RuntimeError("broker not ready")
            with open(self.log_path) as f:
                if "ringbroker ready" in f.read():
                    return time.monotonic() - started
            if self.proc.poll() is not None:
                raise RuntimeError("broker exited: " + open(self.log_path).read()[-2000:])
            time.sleep(0.01)

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.kill()
            raise RuntimeError("graceful stop took over 60 s")

    def rss_mb(self):
        with open("/proc/%d/status" % self.proc.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
        return -1

    def fds(self):
        return len(os.listdir("/proc/%d/fd" % self.proc.pid))

    def reserved_bytes(self):
        body = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % self.metrics_port, timeout=10).read()
        total = 0
        for line in body.decode().splitlines():
            if line.startswith("ringbroker_segment_reserved_bytes"):
                total += int(float(line.split()[-1]))
        return total


def du_bytes(path):
    # Files may vanish during the walk (DeleteTopics): du then complains but still totals.
    out = subprocess.run(["du", "-sk", path], capture_output=True, text=True).stdout
    return int(out.split()[0]) * 1024 if out.strip() else 0


def median_seconds(f, runs=3):
    times = []
    for _ in range(runs):
        started = time.monotonic()
        f()
        times.append(time.monotonic() - started)
    return statistics.median(times)


def run(binary, partitions):
    root = tempfile.mkdtemp(prefix="rb-scale-")
    data_dir = os.path.join(root, "data")
    broker = Broker(binary, data_dir, free_port(), free_port())
    result = {"partitions": partitions}
    try:
        measure(broker, data_dir, result)
    except Exception:
        print(json.dumps(dict(result, failed=True)), flush=True)
        raise
    finally:
        if broker.proc is not None and broker.proc.poll() is None:
            broker.kill()
        subprocess.run(["rm", "-rf", root], check=False)


def measure(broker, data_dir, result):
    partitions = result["partitions"]
    broker.start()
    bootstrap = "127.0.0.1:%d" % broker.port
    topic = "scale-%d" % partitions
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=BOUND * 1000)
    started = time.monotonic()
    admin.create_topics([NewTopic(topic, partitions, 1)], timeout_ms=BOUND * 1000)
    result["create_topics_s"] = round(time.monotonic() - started, 3)

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20,
                             request_timeout_ms=BOUND * 1000, delivery_timeout_ms=2 * BOUND * 1000)
    started = time.monotonic()
    for p in range(partitions):
        producer.send(topic, value=b"x" * 100, partition=p)
    producer.flush(timeout=BOUND)
    producer.close()
    result["produce_one_each_s"] = round(time.monotonic() - started, 3)
    time.sleep(1)  # let background reservations finish
    result["disk_used_mb"] = round(du_bytes(data_dir) / 2**20, 1)
    result["reserved_mb"] = round(broker.reserved_bytes() / 2**20, 1)
    result["rss_mb"] = round(broker.rss_mb(), 1)
    result["open_fds"] = broker.fds()

    tps = [TopicPartition(topic, p) for p in range(partitions)]
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                             request_timeout_ms=BOUND * 1000, fetch_max_wait_ms=100)
    result["metadata_ms"] = round(1000 * median_seconds(lambda: admin.describe_topics([topic])), 1)
    result["list_offsets_ms"] = round(1000 * median_seconds(lambda: consumer.end_offsets(tps)), 1)
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    started = time.monotonic()
    got = 0
    while got < partitions:
        if time.monotonic() - started > BOUND:
            raise RuntimeError("consumed only %d" % got)
        got += sum(len(m) for m in consumer.poll(timeout_ms=500).values())
    result["consume_all_s"] = round(time.monotonic() - started, 3)
    consumer.close()
    admin.close()

    broker.kill()
    result["restart_to_ready_s"] = round(broker.start(), 3)
    started = time.monotonic()
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, request_timeout_ms=BOUND * 1000)
    ends = consumer.end_offsets(tps)
    assert all(v == 1 for v in ends.values()), "every message survived the kill"
    result["restart_list_offsets_s"] = round(time.monotonic() - started, 3)
    consumer.close()
    result["rss_after_restart_mb"] = round(broker.rss_mb(), 1)
    result["open_fds_after_restart"] = broker.fds()

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=BOUND * 1000)
    before = du_bytes(data_dir)
    started = time.monotonic()
    admin.delete_topics([topic], timeout_ms=BOUND * 1000)
    result["delete_topics_s"] = round(time.monotonic() - started, 3)
    while du_bytes(data_dir) > before * 0.1 + 2**20 and time.monotonic() - started < BOUND:
        time.sleep(0.05)
    result["delete_to_disk_freed_s"] = round(time.monotonic() - started, 3)
    result["freed_mb"] = round((before - du_bytes(data_dir)) / 2**20, 1)
    admin.close()
    started = time.monotonic()
    broker.stop()
    result["graceful_stop_s"] = round(time.monotonic() - started, 3)
    print(json.dumps(result), flush=True)


def main():
    binary = sys.argv[1]
    for count in sys.argv[2:]:
        run(binary, int(count))


if __name__ == "__main__":
    main()
