#!/usr/bin/env python3
"""Medians of loadgen runs grouped by label: runs-summary.py OUT_DIR [LABEL_PREFIX].

Single runs (`<label>-<n>.json`, written with `--label <label>-<n>`) are grouped by the label
without its trailing run number; max-rate searches (`summary.max`) print every step. Columns:
achieved msg/s, e2e p50/p99/p99.9 (ms), process CPU of broker and client (cores), the broker's
shard threads on-CPU and runnable-but-waiting (cores), and client CPU per 100 k msg/s."""
import collections, glob, json, os, re, statistics, sys

out = sys.argv[1] if len(sys.argv) > 1 else "target/loadgen"
prefix = sys.argv[2] if len(sys.argv) > 2 else ""
med = lambda xs: statistics.median(xs) if xs else float("nan")
fmt = lambda v, d=2: "n/a" if v is None else f"{v:.{d}f}"


def row(r):
    per100k = r["client_cpu_cores"] / r["achieved_msgs_per_s"] * 1e5 if r["achieved_msgs_per_s"] else None
    return {
        "msgs": r["achieved_msgs_per_s"], "p50": r["e2e_ms"]["p50"], "p99": r["e2e_ms"]["p99"],
        "p999": r["e2e_ms"]["p999"], "broker": r.get("broker_cpu_cores"),
        "client": r["client_cpu_cores"], "shard": r.get("broker_shard_busy_cores"),
        "shard_wait": r.get("broker_shard_wait_cores"), "client_wait": r.get("client_wait_cores"),
        "client_per_100k": per100k, "target": r["target_rate"], "failed": r["failed"],
    }


groups = collections.OrderedDict()
searches = []
for f in sorted(glob.glob(os.path.join(out, f"{prefix}*.json"))):
    doc = json.load(open(f))
    name = os.path.basename(f)[:-5]
    if "max" in doc.get("summary", {}):
        searches.append((name, doc["runs"]))
    elif "run" in doc.get("summary", {}):
        groups.setdefault(re.sub(r"-\d+$", "", name), []).append(row(doc["runs"][0]))
cols = ["msgs", "p50", "p99", "p999", "broker", "shard", "shard_wait", "client", "client_wait", "client_per_100k"]
print("label runs | " + " | ".join(cols) + "   (medians; per-run p99 in brackets)")
for label, rows in groups.items():
    meds = [med([r[c] for r in rows if r[c] is not None]) for c in cols]
    print(f"{label} {len(rows)} | " + " | ".join(fmt(m, 0 if c == 'msgs' else 2) for c, m in zip(cols, meds))
          + "   [" + " / ".join(fmt(r["p99"]) for r in rows) + "]")
for name, runs in searches:
    print(f"## {name}: target -> achieved msg/s, e2e p50/p99 ms, broker/shard/shard-wait/client/client-wait cores")
    for r in map(row, runs):
        print(f"  {r['target']:.0f} -> {r['msgs']:.0f}  {fmt(r['p50'])} / {fmt(r['p99'])}  "
              f"broker {fmt(r['broker'])} shard {fmt(r['shard'])} wait {fmt(r['shard_wait'])} "
              f"client {fmt(r['client'])} wait {fmt(r['client_wait'])} failed {r['failed']}")
