#!/usr/bin/env python3
"""The chaos history checker: reads one run's directory (the clients' JSON-line histories, the
final read of every partition, the time the cluster took to serve again) and reports lost and
duplicated messages and every other violation. `python3 checker.py RUN_DIR` checks a kept run
again.

Files in a run directory:
  producer-*.jsonl   send / ack (partition, offset) / fail events per message (workload.py)
  consumer-*.jsonl   read (partition, offset, payload) and acked commit events
  monitor.jsonl      committed offsets of the group, polled through the admin API
  final.json         {"partitions": {p: [[offset, payload], ...]}, "high_watermarks": {p: hw},
                      "committed": {p: offset}, "replicas": {p: [node, ...]},
                      "replica_digests": {p: {node: {"sha256", "reached"}}}} read after
                      every fault healed (the digests from each node's own segment files)
  serve.json         {"seconds": s, "bound": b, "ok": bool} time to serve after the last heal

What is checked (a message is identified by its unique payload "<run>:<producer>:<seq>"):
  lost        an acknowledged message absent from the final read
  duplicated  a message present more than once in the final read
  violations  a value whose bytes differ from what was written (in a consumer's read or the
              final read: the filler after the payload id is derived from the id); an
              acknowledged message found at another offset than its ack named; two
              acknowledgements of one offset; per producer and partition, acknowledged
              offsets not increasing with the sequence number, or the final log holding one
              producer's messages out of sequence order; a consumer read of an offset the final
              read does not hold with that payload (a read past a high watermark that later
              vanished, or of data later replaced); a read of a payload no producer sent;
              committed offsets going backwards between two observations (told apart: a
              consumer committed the lower offset itself, or none did), a commit the
              coordinator acknowledged missing from the next observation, a committed offset
              vanishing or beyond the final high watermark; replicas of a partition not
              byte-identical below the final high watermark; a consumer going back to read
              a partition below the offset the group had committed (its position was reset
              rather than resumed); no acknowledged message at all in
              some partition (a run that proves nothing); the cluster not serving again within
              its bound; a client that did not stop cleanly when asked (crashed, or hung
              and was killed).
"""

import glob
import json
import os
import sys
from collections import defaultdict


def _events(path):
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                # A process killed mid-line leaves a torn last line; nothing else is torn.
                continue


def _producer_of(payload):
    """(run, producer id, seq) from a payload, or None for a payload of another shape."""
    parts = payload.split(":")
    if len(parts) != 3 or not parts[2].isdigit():
        return None
    return parts[0], parts[1], int(parts[2])


class Violations:
    """Every violation counts; the first few of each kind are kept as examples."""

    EXAMPLES = 5

    def __init__(self):
        self.counts = defaultdict(int)
        self.examples = []

    def add(self, kind, message):
        self.counts[kind] += 1
        if self.counts[kind] <= self.EXAMPLES:
            self.examples.append(f"{kind}: {message}")

    def total(self):
        return sum(self.counts.values())


def check(run_dir, min_acked_per_partition=1):
    """Returns a dict: sent, acked, read, commits, observations, lost and duplicated (lists of
    payloads), violations (the count), violation_counts (per kind), examples (strings)."""
    violations = Violations()
    final_path = os.path.join(run_dir, "final.json")
    if not os.path.exists(final_path):
        violations.add("no final read", "the run stopped before reading every partition back")
        final = {"partitions": {}, "high_watermarks": {}}
    else:
        with open(final_path) as f:
            final = json.load(f)
    final_parts = {int(p): [(int(o), v) for o, v in recs]
                   for p, recs in final["partitions"].items()}
    hws = {int(p): int(hw) for p, hw in final["high_watermarks"].items()}
    at_offset = {p: dict(recs) for p, recs in final_parts.items()}
    where = defaultdict(list)  # payload -> [(p, o)] in the final read
    for p, recs in final_parts.items():
        for o, v in recs:
            where[v].append((p, o))

    for p, o, v in final.get("corrupt", []):
        violations.add("corrupt value", f"the final read of {p}@{o} ({v}) has bytes other "
                       "than written")

    # -- producers ---------------------------------------------------------------------------
    sent = set()
    acks = []  # (producer file, gen, seq, p, o, payload)
    ack_at = {}
    failed = fatal = 0
    acks_without_offset = []
    for path in sorted(glob.glob(os.path.join(run_dir, "producer-*.jsonl"))):
        name = os.path.basename(path)
        for ev in _events(path):
            if ev["ev"] == "send":
                sent.add(ev["v"])
            elif ev["ev"] == "ack" and ev["o"] is None:
                # Delivered, offset not reported by the client: checked for presence only.
                acks_without_offset.append(ev["v"])
            elif ev["ev"] == "ack":
                acks.append((name, ev.get("gen", 0), ev["seq"], ev["p"], ev["o"], ev["v"]))
            elif ev["ev"] == "fail":
                failed += 1
            elif ev["ev"] == "fatal":
                fatal += 1

    # Every client stopped when asked (its last event): one that crashed, or hung past its
    # bound and was killed, leaves a history that proves less than it seems to.
    for path in sorted(glob.glob(os.path.join(run_dir, "*.jsonl"))):
        last = None
        for ev in _events(path):
            last = ev
        if last is None or last["ev"] != "stopped":
            violations.add("client did not stop cleanly",
                           f"{os.path.basename(path)} ends with {last and last['ev']} (see "
                           f"its .stderr)")
    lost = []
    for name, gen, seq, p, o, v in acks:
        key = (p, o)
        if key in ack_at and ack_at[key] != v:
            violations.add("two acks of one offset", f"{p}@{o}: {ack_at[key]} and {v}")
        ack_at[key] = v
        places = where.get(v, [])
        if not places:
            lost.append(v)
        elif (p, o) not in places:
            violations.add("acked at another offset", f"acked {v} at {p}@{o}, final read has it at "
                              f"{', '.join(f'{pp}@{oo}' for pp, oo in places)}")
    for v in acks_without_offset:
        if not where.get(v):
            lost.append(v)
    duplicated = sorted(v for v, places in where.items()
                        if len(places) > 1 and not v.startswith("probe:"))

    # Order: per producer (and producer generation: a replaced producer is a new producer id)
    # and partition, acknowledged offsets increase with the sequence number.
    by_stream = defaultdict(list)
    for name, gen, seq, p, o, v in acks:
        by_stream[(name, gen, p)].append((seq, o, v))
    for (name, gen, p), items in sorted(by_stream.items()):
        items.sort()
        for (s1, o1, v1), (s2, o2, v2) in zip(items, items[1:]):
            if o2 <= o1:
                violations.add("ack order", f"{v1} acked at {p}@{o1} but later {v2} at {p}@{o2}")
    # And the final log holds each producer's messages in sequence order.
    for p, recs in sorted(final_parts.items()):
        last = {}
        for o, v in recs:
            ident = _producer_of(v)
            if ident is None:
                continue
            stream = (ident[0], ident[1])
            if stream in last and ident[2] <= last[stream][0]:
                violations.add("log order", f"partition {p}: {v} at {o} "
                                  f"after seq {last[stream][0]} at {last[stream][1]}")
            last[stream] = (ident[2], o)

    # -- transactions -------------------------------------------------------------------------
    # A transactional producer's sends carry their transaction's number; its outcome is what
    # the producer was told (txn-committed, txn-aborted; txn-unknown after a fatal error, which
    # either may be). Under read_committed (the final read_committed pass), no record of an
    # aborted transaction is read, every record of a committed one is, and so is every
    # acknowledged record written outside transactions.
    txn_of = {}  # payload -> (producer file, gen, txn)
    outcome = {}  # (producer file, gen, txn) -> "committed" | "aborted" | "unknown"
    for path in sorted(glob.glob(os.path.join(run_dir, "producer-*.jsonl"))):
        name = os.path.basename(path)
        for ev in _events(path):
            if ev["ev"] == "send" and "txn" in ev:
                txn_of[ev["v"]] = (name, ev.get("gen", 0), ev["txn"])
            elif ev["ev"] in ("txn-committed", "txn-aborted", "txn-unknown"):
                outcome[(name, ev.get("gen", 0), ev["txn"])] = ev["ev"][4:]
    committed_read = final.get("read_committed")
    if txn_of and committed_read is None:
        violations.add("no read_committed read", "the final read_committed pass did not reach "
                       "the high watermarks (a transaction left open?)")
    elif committed_read is not None:
        rc_where = defaultdict(list)
        for p, recs in committed_read.items():
            for o, v in recs:
                rc_where[v].append((int(p), o))
        for v, key in sorted(txn_of.items()):
            state = outcome.get(key)
            if state == "aborted" and v in rc_where:
                violations.add("aborted data under read_committed",
                               f"{v} (transaction {key[2]} of {key[0]}, aborted) read at "
                               f"{rc_where[v][0][0]}@{rc_where[v][0][1]}")
            elif state == "committed" and v not in rc_where:
                violations.add("committed transaction lost",
                               f"{v} (transaction {key[2]} of {key[0]}, committed) not read "
                               "under read_committed")
        for _name, _gen, _seq, _p, _o, v in acks:
            if v not in txn_of and v not in rc_where:
                violations.add("read_committed misses data",
                               f"{v}, acknowledged outside any transaction, not read under "
                               "read_committed")

    # -- consumers ---------------------------------------------------------------------------
    reads = 0
    commits = []  # (t, p, o, consumer)
    for path in sorted(glob.glob(os.path.join(run_dir, "consumer-*.jsonl"))):
        name = os.path.basename(path)
        for ev in _events(path):
            if ev["ev"] == "read":
                reads += 1
                if ev.get("corrupt"):
                    violations.add("corrupt value", f"{name} read {ev['p']}@{ev['o']} "
                                   f"({ev['v']}) with bytes other than written")
                p, o, v = ev["p"], ev["o"], ev["v"]
                have = at_offset.get(p, {}).get(o)
                if v not in sent and not v.startswith("probe:"):
                    violations.add("phantom read", f"{name} read {v} at {p}@{o}, which no producer sent")
                elif have is None:
                    violations.add("read past the final high watermark",
                                   f"{name} read {p}@{o} ({v}); the final read has no "
                                   f"such offset (high watermark {hws.get(p)})")
                elif have != v:
                    violations.add("read of replaced data",
                                   f"{name} read {v} at {p}@{o}; the final read has "
                                   f"{have} there")
            elif ev["ev"] == "commit":
                commits.append((ev["t"], ev["p"], ev["o"], name))

    # A consumer that (re)starts reading a partition below what the group had committed well
    # before (2 s: room for a rebalance that fetched the committed offset just before a last
    # commit) rewound: its position was reset, not resumed from the committed offset.
    for path in sorted(glob.glob(os.path.join(run_dir, "consumer-*.jsonl"))):
        name = os.path.basename(path)
        last = {}
        for ev in _events(path):
            if ev["ev"] != "read":
                continue
            p, o, t = ev["p"], ev["o"], ev["t"]
            if p in last and o != last[p] + 1 and o < last[p]:
                floor = max((co for ct, cp, co, _n in commits if cp == p and ct < t - 2.0),
                            default=-1)
                if o < floor:
                    violations.add("consumer rewound below the committed offset",
                                   f"{name} read {p}@{o} after {p}@{last[p]}; the group had "
                                   f"committed {floor}")
            last[p] = o

    # -- committed offsets -------------------------------------------------------------------
    observations = []  # (sent time, {p: offset})
    monitor = os.path.join(run_dir, "monitor.jsonl")
    if os.path.exists(monitor):
        for ev in _events(monitor):
            if ev["ev"] == "committed":
                observations.append((ev["sent"], {int(p): o for p, o in ev["offsets"].items()}))
    if final.get("committed") is not None:
        observations.append((final.get("committed_at", float("inf")),
                             {int(p): o for p, o in final["committed"].items()}))
    observations.sort(key=lambda item: item[0])
    # Each backward step between two observations counts once. It is told apart by cause: a
    # consumer's own acknowledged commit of the lower offset (the consumer rewound: its position
    # went back, e.g. reset to the earliest offset after an answer it took for truncation), or
    # no such commit (the coordinator lost committed offsets).
    def committed_by_consumer(p, offset, t_from, t_to):
        return any(cp == p and co == offset and t_from - 1.0 <= ct <= t_to
                   for ct, cp, co, _name in commits)

    prev = {}
    high = {}
    for t, offsets in observations:
        for p, (seen, seen_t) in list(prev.items()):
            now = offsets.get(p)
            if now is None or now < 0 or now < seen:
                if now is not None and committed_by_consumer(p, now, seen_t, t):
                    violations.add("committed offset rewound by a consumer",
                                   f"partition {p} went from {seen} to {now} (observed at "
                                   f"{seen_t:.3f}, then {t:.3f}); a consumer committed {now}")
                else:
                    violations.add("committed offset lost",
                                   f"partition {p} went from {seen} to {now} (observed at "
                                   f"{seen_t:.3f}, then {t:.3f}); no consumer committed it")
        for p, o in offsets.items():
            if o is not None and o >= 0:
                prev[p] = (o, t)
                if o >= high.get(p, (-1, 0))[0]:
                    high[p] = (o, t)
    # An acknowledged commit must show in the next observation sent after its acknowledgement,
    # unless a later acknowledged commit changed it (that one is then what is checked).
    for t, p, o, name in commits:
        nxt = next((offs for ot, offs in observations if ot > t), None)
        if nxt is None:
            continue
        now = nxt.get(p)
        superseded = any(cp == p and ct > t and co == now for ct, cp, co, _n in commits)
        if (now is None or now < o) and not superseded:
            violations.add("acknowledged commit lost",
                           f"{name}'s commit of {p}@{o} (acked at {t:.3f}) not in the next "
                           f"observation ({now})")
    for p, (o, _t) in sorted(high.items()):
        if p in hws and o > hws[p]:
            violations.add("commit beyond the log", f"committed offset {o} of partition {p} beyond its final high "
                              f"watermark {hws[p]}")

    # -- replicas ---------------------------------------------------------------------------
    # Every replica of a partition holds the same bytes below the final high watermark (the
    # harness read each node's segment files with the cluster stopped).
    digests = final.get("replica_digests")
    replicas = final.get("replicas") or {}
    if digests is not None:
        for p, per_node in sorted(digests.items(), key=lambda item: int(item[0])):
            nodes = replicas.get(str(p), replicas.get(p)) or [int(n) for n in per_node]
            seen = {(per_node[str(n)]["sha256"], per_node[str(n)]["reached"])
                    for n in nodes if str(n) in per_node}
            if len(seen) > 1:
                desc = ", ".join(f"node {n} up to {per_node[str(n)]['reached']}"
                                 for n in nodes if str(n) in per_node)
                violations.add("replicas differ",
                               f"partition {p} (high watermark {hws.get(int(p))}): {desc}")

    # -- progress and availability ------------------------------------------------------------
    per_partition = defaultdict(int)
    for _name, _gen, _seq, p, _o, _v in acks:
        per_partition[p] += 1
    for p in sorted(final_parts):
        if per_partition[p] < min_acked_per_partition:
            violations.add("no progress", f"partition {p}: {per_partition[p]} acknowledged messages "
                              f"(at least {min_acked_per_partition} needed for the run to "
                              "prove anything)")
    serve_path = os.path.join(run_dir, "serve.json")
    if os.path.exists(serve_path):
        with open(serve_path) as f:
            serve = json.load(f)
        if not serve["ok"]:
            violations.add("not serving", f"cluster not serving {serve['bound']} s after the last heal "
                              f"({serve.get('why', '')})")
    else:
        violations.add("not serving", "no serve.json: the run stopped before the cluster served again")

    return {
        "sent": len(sent),
        "acked": len(acks) + len(acks_without_offset),
        "acked_without_offset": len(acks_without_offset),
        "failed": failed,
        "fatal": fatal,
        "read": reads,
        "commits": len(commits),
        "observations": len(observations),
        "lost": sorted(lost),
        "duplicated": duplicated,
        "violations": violations.total(),
        "violation_counts": dict(violations.counts),
        "examples": violations.examples,
    }


def main():
    if len(sys.argv) != 2:
        print("usage: checker.py RUN_DIR", file=sys.stderr)
        return 2
    result = check(sys.argv[1])
    for v in result["lost"][:20]:
        print(f"lost: {v}")
    for v in result["duplicated"][:20]:
        print(f"duplicated: {v}")
    for v in result["examples"]:
        print(f"violation: {v}")
    print(f"sent {result['sent']}, acked {result['acked']}, read {result['read']}")
    bad = len(result["lost"]) + len(result["duplicated"]) + result["violations"]
    print(f"chaos: 1 runs, 0 faults, {len(result['lost'])} lost, "
          f"{len(result['duplicated'])} duplicated, {result['violations']} violations")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
