#!/usr/bin/env python3
"""Medians of the runs written by tuning/e2e-figures.sh: e2e-summary.py [OUT_DIR]."""
import glob, json, os, statistics, sys

out = sys.argv[1] if len(sys.argv) > 1 else "target/loadgen"
med = lambda xs: statistics.median(xs) if xs else float("nan")


def cpus(r):
    busy = r.get("cpu_busy") or {}
    return ", ".join(f"{c} {b:.2f}" for c, (b, _) in sorted(busy.items())) or "n/a"


for size, parts in [(1024, 1), (1024, 12), (100, 1), (100, 12)]:
    m = os.path.join(out, f"max-{size}-{parts}.json")
    if not os.path.exists(m):
        continue
    doc = json.load(open(m))
    mx = doc["summary"]["max"]
    print(f"## {size} B, {parts} partition(s)")
    if mx:
        print(f"  knee ({mx.get('client', '?')}): target {mx['target_rate']:.0f}, achieved"
              f" {mx['achieved_msgs_per_s']:.0f} msg/s {mx['achieved_mb_per_s']:.1f} MB/s;"
              f" e2e p50/p99 {mx['e2e_ms']['p50']:.2f}/{mx['e2e_ms']['p99']:.2f} ms;"
              f" broker {mx['broker_cpu_cores']:.2f} cores (shard {mx['broker_shard_busy_cores']:.2f}"
              f" + waiting {mx['broker_shard_wait_cores']:.2f}), client {mx['client_cpu_cores']:.2f}"
              f" (+ waiting {mx['client_wait_cores']:.2f}); cpus busy: {cpus(mx)}")
    failing = [r for r in doc["runs"] if r["target_rate"] > (mx["target_rate"] if mx else 0)]
    for r in failing[:1]:
        print(f"  first failing step: target {r['target_rate']:.0f} achieved {r['achieved_msgs_per_s']:.0f};"
              f" broker {r['broker_cpu_cores']:.2f} client {r['client_cpu_cores']:.2f}; cpus busy: {cpus(r)}")
    for client in ("lean", "librdkafka"):
        runs = [json.load(open(f))["runs"][0]
                for f in sorted(glob.glob(f"{out}/half-{client}-{size}-{parts}-*.json"))]
        if not runs:
            continue
        g = lambda f: [f(r) for r in runs]
        print(f"  at 50 %, {client} ({len(runs)} runs): achieved msg/s median"
              f" {med(g(lambda r: r['achieved_msgs_per_s'])):.0f}")
        for k in ("p50", "p99", "p999", "max"):
            e = g(lambda r: r["e2e_ms"][k]); p = g(lambda r: r["publish_ms"][k])
            print(f"    e2e {k:<5} {[round(x, 2) for x in e]} median {med(e):.2f} ms | publish median {med(p):.2f} ms")
        print(f"    broker cpu s/MB median {med(g(lambda r: r['broker_cpu_s_per_mb'])):.4f};"
              f" broker cores {med(g(lambda r: r['broker_cpu_cores'])):.2f}, client cores"
              f" {med(g(lambda r: r['client_cpu_cores'])):.2f}; cpus busy (run 1): {cpus(runs[0])}")
for parts in (1, 12):
    runs = [json.load(open(f))["summary"] for f in sorted(glob.glob(f"{out}/catchup-{parts}-*.json"))]
    if runs:
        r = [x["read_mb_per_s"] for x in runs]
        print(f"## catch-up 1 KiB, {parts} partition(s): read MB/s {[round(x) for x in r]} median {med(r):.0f};"
              f" produce MB/s median {med([x['produce_mb_per_s'] for x in runs]):.0f};"
              f" client cores {[round(x.get('client_cpu_cores', 0), 2) for x in runs]}, broker cores {[round(x['broker_cpu_cores'] or 0, 2) for x in runs]}")
