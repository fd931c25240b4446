"""A minimal raw Kafka client for the one request the chaos harness needs and neither
confluent-kafka nor kafka-python offers: DescribeQuorum (key 55, v0, KIP-595), which names the
active controller (the Raft leader of `__cluster_metadata`).

Wire format (flexible versions): request header v2 = api_key int16, api_version int16,
correlation_id int32, client_id nullable string (int16 length), empty tagged fields; response
header v1 = correlation_id int32, tagged fields. Compact strings and arrays carry length + 1 as
an unsigned varint.
"""

import socket
import struct

DESCRIBE_QUORUM = 55


def _uvarint(value):
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _compact_string(text):
    data = text.encode()
    return _uvarint(len(data) + 1) + data


class _Reader:
    def __init__(self, data):
        self.data = data
        self.pos = 0

    def take(self, n):
        if self.pos + n > len(self.data):
            raise ValueError("DescribeQuorum response truncated")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def int16(self):
        return struct.unpack(">h", self.take(2))[0]

    def int32(self):
        return struct.unpack(">i", self.take(4))[0]

    def int64(self):
        return struct.unpack(">q", self.take(8))[0]

    def uvarint(self):
        shift = 0
        value = 0
        while True:
            byte = self.take(1)[0]
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
            shift += 7

    def compact_string(self):
        n = self.uvarint()
        return None if n == 0 else self.take(n - 1).decode()

    def skip_tags(self):
        for _ in range(self.uvarint()):
            self.uvarint()
            self.take(self.uvarint())


def _recv_exact(sock, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("connection closed mid-response")
        buf += chunk
    return bytes(buf)


def describe_quorum(host, port, timeout=2.0):
    """Returns (leader_id, leader_epoch, high_watermark) as the node at host:port answers, or
    raises (connection error, a partition error code, a malformed answer)."""
    body = _uvarint(2)  # one topic
    body += _compact_string("__cluster_metadata")
    body += _uvarint(2)  # one partition
    body += struct.pack(">i", 0) + _uvarint(0)  # partition_index, tags
    body += _uvarint(0)  # topic tags
    body += _uvarint(0)  # request tags
    client_id = b"chaos"
    header = struct.pack(">hhih", DESCRIBE_QUORUM, 0, 1, len(client_id)) + client_id + _uvarint(0)
    frame = header + body
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        sock.sendall(struct.pack(">i", len(frame)) + frame)
        size = struct.unpack(">i", _recv_exact(sock, 4))[0]
        r = _Reader(_recv_exact(sock, size))
    if r.int32() != 1:
        raise ValueError("DescribeQuorum: correlation id mismatch")
    r.skip_tags()
    top_error = r.int16()
    if top_error:
        raise ValueError(f"DescribeQuorum error code {top_error}")
    topics = r.uvarint() - 1
    for _ in range(topics):
        r.compact_string()
        partitions = r.uvarint() - 1
        for _ in range(partitions):
            r.int32()
            error = r.int16()
            leader_id = r.int32()
            leader_epoch = r.int32()
            high_watermark = r.int64()
            if error:
                raise ValueError(f"DescribeQuorum partition error code {error}")
            return leader_id, leader_epoch, high_watermark
    raise ValueError("DescribeQuorum: no partition in the answer")
