#!/usr/bin/env python3
"""The checker against hand-made histories: a clean one passes, and each kind of anomaly it
claims to find (loss, duplicate, reordering, a read that vanished, an offset moved, a corrupt value, committed
offsets going backwards or lost, no progress, no service) is found.
`python3 -m unittest tests/chaos/test_checker.py` (no cluster, no root)."""

import json
import os
import shutil
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import checker  # noqa: E402


class History:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="chaos-checker-")
        self.producer = []
        self.consumer = []
        self.monitor = []
        self.final = {0: [], 1: []}
        self.committed = {}
        self.serve = {"ok": True, "seconds": 1.0, "bound": 30}
        self.t = 1000.0

    def tick(self):
        self.t += 1.0
        return self.t

    def produce(self, seq, p, o, acked=True, final=True):
        v = f"s1:p0:{seq}"
        self.producer.append({"ev": "send", "seq": seq, "p": p, "v": v, "t": self.tick()})
        if acked:
            self.producer.append({"ev": "ack", "seq": seq, "p": p, "o": o, "v": v,
                                  "t": self.tick()})
        if final:
            self.final[p].append([o, v])
        return v

    def write(self):
        named = [("producer-0", self.producer), ("consumer-0", self.consumer),
                 ("monitor", self.monitor)]
        if getattr(self, "txn", None) is not None:
            named.append(("producer-t0", self.txn))
        for name, events in named:
            with open(os.path.join(self.dir, f"{name}.jsonl"), "w") as f:
                for ev in events:
                    f.write(json.dumps(ev) + "\n")
                if not (name == "consumer-0" and getattr(self, "consumer_died", False)):
                    f.write(json.dumps({"ev": "stopped", "t": self.tick()}) + "\n")
        final = {"partitions": {p: sorted(r) for p, r in self.final.items()},
                 "high_watermarks": {p: (max(o for o, _ in r) + 1 if r else 0)
                                     for p, r in self.final.items()},
                 "committed": self.committed, "committed_at": self.tick()}
        final.update(getattr(self, "extra", {}))
        with open(os.path.join(self.dir, "final.json"), "w") as f:
            json.dump(final, f)
        with open(os.path.join(self.dir, "serve.json"), "w") as f:
            json.dump(self.serve, f)
        return checker.check(self.dir)

    def clean(self):
        for seq in range(6):
            self.produce(seq, seq % 2, seq // 2)
        return self


class CheckerTest(unittest.TestCase):
    def setUp(self):
        self.h = History().clean()

    def tearDown(self):
        shutil.rmtree(self.h.dir)

    def transactions(self, h):
        """Three transactions of producer t0: 0 committed, 1 aborted, 2 unknown; returns
        their payloads."""
        out = {}
        for txn, state, seq, p, o in ((0, "committed", 0, 0, 10), (1, "aborted", 1, 1, 10),
                                      (2, "unknown", 2, 0, 11)):
            v = f"s1:t0:{seq}"
            h.txn.append({"ev": "send", "seq": seq, "p": p, "v": v, "txn": txn, "gen": 0,
                          "t": h.tick()})
            h.txn.append({"ev": "ack", "seq": seq, "p": p, "o": o, "v": v, "gen": 0,
                          "t": h.tick()})
            h.txn.append({"ev": f"txn-{state}", "txn": txn, "gen": 0, "t": h.tick()})
            h.final[p].append([o, v])
            out[state] = (p, o, v)
        return out

    def test_transactions_under_read_committed(self):
        h = History()
        h.txn = []
        h.produce(0, 0, 0)
        txns = self.transactions(h)
        committed = {0: [[0, "s1:p0:0"], list(txns["committed"][1:])], 1: []}
        h.extra = {"read_committed": committed}
        self.assertEqual(h.write()["violations"], 0, h.write()["examples"])
        # An unknown outcome may be read or not.
        committed[0].append(list(txns["unknown"][1:]))
        self.assertEqual(h.write()["violations"], 0)
        committed[1].append(list(txns["aborted"][1:]))
        self.assertEqual(h.write()["violation_counts"],
                         {"aborted data under read_committed": 1})
        committed[1].clear()
        committed[0] = [list(txns["committed"][1:])]
        self.assertEqual(h.write()["violation_counts"], {"read_committed misses data": 1})
        committed[0] = [[0, "s1:p0:0"]]
        self.assertEqual(h.write()["violation_counts"], {"committed transaction lost": 1})
        h.extra = {"read_committed": None}
        self.assertEqual(h.write()["violation_counts"], {"no read_committed read": 1})

    def test_clean_history_passes(self):
        self.h.consumer.append({"ev": "read", "p": 0, "o": 0, "v": "s1:p0:0", "t": self.h.tick()})
        self.h.consumer.append({"ev": "commit", "p": 0, "o": 1, "t": self.h.tick()})
        self.h.monitor.append({"ev": "committed", "sent": self.h.tick(), "offsets": {"0": 1}})
        self.h.committed = {0: 1}
        r = self.h.write()
        self.assertEqual((r["lost"], r["duplicated"], r["violations"]), ([], [], 0))

    def test_unacked_message_may_be_missing(self):
        self.h.produce(6, 0, 3, acked=False, final=False)
        r = self.h.write()
        self.assertEqual((r["lost"], r["violations"]), ([], 0))

    def test_loss(self):
        self.h.produce(6, 0, 3, final=False)
        self.assertEqual(self.h.write()["lost"], ["s1:p0:6"])

    def test_ack_without_offset_checked_for_presence(self):
        self.h.producer.append({"ev": "send", "seq": 6, "p": 0, "v": "s1:p0:6", "t": 1.0})
        self.h.producer.append({"ev": "ack", "seq": 6, "p": 0, "o": None, "v": "s1:p0:6",
                                "t": 2.0})
        r = self.h.write()
        self.assertEqual((r["lost"], r["acked_without_offset"]), (["s1:p0:6"], 1))
        self.h.final[0].append([3, "s1:p0:6"])
        r = self.h.write()
        self.assertEqual((r["lost"], r["violations"]), ([], 0))

    def test_duplicate(self):
        v = self.h.produce(6, 0, 3)
        self.h.final[0].append([4, v])
        self.assertEqual(self.h.write()["duplicated"], [v])

    def test_acked_offset_moved(self):
        self.h.produce(6, 0, 3, final=False)
        self.h.final[0].append([5, "s1:p0:6"])
        self.assertTrue(any("final read has it at 0@5" in v for v in self.h.write()["examples"]))

    def test_ack_order(self):
        self.h.produce(6, 0, 9, final=False)
        self.h.produce(7, 0, 8, final=False)
        self.h.final[0] += [[8, "s1:p0:7"], [9, "s1:p0:6"]]
        r = self.h.write()
        self.assertTrue(any(v.startswith("ack order:") for v in r["examples"]))
        self.assertTrue(any(v.startswith("log order:") for v in r["examples"]))

    def test_read_of_vanished_offset(self):
        self.h.consumer.append({"ev": "read", "p": 1, "o": 7, "v": "s1:p0:1", "t": 1.0})
        self.assertTrue(any("no such offset" in v for v in self.h.write()["examples"]))

    def test_read_of_replaced_data(self):
        self.h.consumer.append({"ev": "read", "p": 0, "o": 0, "v": "s1:p0:2", "t": 1.0})
        self.assertTrue(any("final read has s1:p0:0" in v for v in self.h.write()["examples"]))

    def test_consumer_rewind_below_commit(self):
        for o in (0, 1, 2):
            self.h.consumer.append({"ev": "read", "p": 0, "o": o, "v": f"s1:p0:{2 * o}",
                                    "t": 1.0 + o})
        self.h.consumer.append({"ev": "commit", "p": 0, "o": 3, "t": 4.0})
        self.h.consumer.append({"ev": "read", "p": 0, "o": 2, "v": "s1:p0:4", "t": 5.0})
        self.h.consumer.append({"ev": "read", "p": 0, "o": 0, "v": "s1:p0:0", "t": 7.0})
        self.h.committed = {0: 3}
        r = self.h.write()
        self.assertEqual(r["violation_counts"],
                         {"consumer rewound below the committed offset": 1}, r["examples"])

    def test_committed_offset_backwards(self):
        self.h.monitor.append({"ev": "committed", "sent": 1.0, "offsets": {"0": 3}})
        self.h.monitor.append({"ev": "committed", "sent": 2.0, "offsets": {"0": 2}})
        self.h.committed = {0: 3}
        r = self.h.write()
        self.assertTrue(any(v.startswith("committed offset lost:") and "went from 3 to 2" in v
                            for v in r["examples"]), r["examples"])

    def test_committed_offset_rewound_by_consumer(self):
        self.h.consumer.append({"ev": "commit", "p": 0, "o": 3, "t": 0.5})
        self.h.monitor.append({"ev": "committed", "sent": 1.0, "offsets": {"0": 3}})
        self.h.consumer.append({"ev": "commit", "p": 0, "o": 1, "t": 1.5})
        self.h.monitor.append({"ev": "committed", "sent": 2.0, "offsets": {"0": 1}})
        self.h.committed = {0: 3}
        r = self.h.write()
        self.assertEqual(r["violation_counts"], {"committed offset rewound by a consumer": 1})

    def test_committed_offset_vanishes(self):
        self.h.monitor.append({"ev": "committed", "sent": 1.0, "offsets": {"0": 3}})
        self.h.committed = {}
        self.assertTrue(any("went from 3 to None" in v and v.startswith("committed offset lost")
                            for v in self.h.write()["examples"]))

    def test_acked_commit_lost(self):
        self.h.consumer.append({"ev": "commit", "p": 1, "o": 3, "t": 5.0})
        self.h.monitor.append({"ev": "committed", "sent": 6.0, "offsets": {"1": 2}})
        self.h.committed = {1: 2}
        self.assertTrue(any("commit of 1@3" in v for v in self.h.write()["examples"]))

    def test_commit_beyond_final_high_watermark(self):
        self.h.committed = {0: 10}
        self.assertTrue(any("beyond its final high watermark" in v
                            for v in self.h.write()["examples"]))

    def test_no_progress(self):
        self.h.final[2] = []
        self.assertTrue(any("partition 2: 0 acknowledged" in v
                            for v in self.h.write()["examples"]))

    def test_corrupt_value(self):
        self.h.consumer.append({"ev": "read", "p": 0, "o": 0, "v": "s1:p0:0", "t": 1.0,
                                "corrupt": True})
        self.assertTrue(any(v.startswith("corrupt value:") for v in self.h.write()["examples"]))

    def test_replicas_differ(self):
        self.h.extra = {"replicas": {"0": [1, 2]}, "replica_digests": {
            "0": {"1": {"sha256": "aa", "reached": 3}, "2": {"sha256": "bb", "reached": 3}},
            "1": {"1": {"sha256": "cc", "reached": 3}, "2": {"sha256": "cc", "reached": 3}}}}
        r = self.h.write()
        self.assertEqual(r["violation_counts"], {"replicas differ": 1}, r["examples"])

    def test_client_died(self):
        self.h.consumer_died = True
        r = self.h.write()
        self.assertEqual(r["violation_counts"], {"client did not stop cleanly": 1}, r["examples"])

    def test_not_serving(self):
        self.h.serve = {"ok": False, "seconds": None, "bound": 30, "why": "no leader"}
        self.assertTrue(any("not serving" in v for v in self.h.write()["examples"]))


if __name__ == "__main__":
    unittest.main()
