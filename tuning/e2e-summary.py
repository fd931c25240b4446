#!/usr/bin/env python3
"""Medians of the runs written by tuning/e2e-figures.sh: e2e-summary.py [OUT_DIR]."""
import glob, json, os, statistics, sys

out = sys.argv[1] if len(sys.argv) > 1 else "target/loadgen"
med = lambda xs: statistics.median(xs) if xs else float("nan")
for size, parts in [(1024, 1), (1024, 12), (100, 1), (100, 12)]:
    m = os.path.join(out, f"max-{size}-{parts}.json")
    if not os.path.exists(m):
        continue
    mx = json.load(open(m))["summary"]["max"]
    atmax = [json.load(open(f))["runs"][0] for f in sorted(glob.glob(f"{out}/atmax-{size}-{parts}-*.json"))]
    half = [json.load(open(f))["runs"][0] for f in sorted(glob.glob(f"{out}/half-{size}-{parts}-*.json"))]
    print(f"## {size} B, {parts} partition(s)")
    print(f"  max search: {mx['achieved_msgs_per_s']:.0f} msg/s {mx['achieved_mb_per_s']:.1f} MB/s")
    for name, runs in (("at max", atmax), ("at 50%", half)):
        if not runs:
            continue
        g = lambda f: [f(r) for r in runs]
        print(f"  {name} ({len(runs)} runs): achieved msg/s {[round(x) for x in g(lambda r: r['achieved_msgs_per_s'])]}"
              f" median {med(g(lambda r: r['achieved_msgs_per_s'])):.0f}, MB/s median {med(g(lambda r: r['achieved_mb_per_s'])):.1f}")
        for k in ("p50", "p99", "p999", "max"):
            e = g(lambda r: r["e2e_ms"][k]); p = g(lambda r: r["publish_ms"][k])
            print(f"    e2e {k:<5} {[round(x, 2) for x in e]} median {med(e):.2f} ms | publish median {med(p):.2f} ms")
        print(f"    broker cpu s/MB {[round(x, 4) for x in g(lambda r: r['broker_cpu_s_per_mb'])]} median {med(g(lambda r: r['broker_cpu_s_per_mb'])):.4f};"
              f" broker cores {med(g(lambda r: r['broker_cpu_cores'])):.2f}, client cores {med(g(lambda r: r['client_cpu_cores'])):.2f}")
for parts in (1, 12):
    runs = [json.load(open(f))["summary"] for f in sorted(glob.glob(f"{out}/catchup-{parts}-*.json"))]
    if runs:
        r = [x["read_mb_per_s"] for x in runs]
        print(f"## catch-up 1 KiB, {parts} partition(s): read MB/s {[round(x) for x in r]} median {med(r):.0f};"
              f" produce MB/s median {med([x['produce_mb_per_s'] for x in runs]):.0f};"
              f" client cores {[round(x.get('client_cpu_cores', 0), 2) for x in runs]}, broker cores {[round(x['broker_cpu_cores'] or 0, 2) for x in runs]}")
