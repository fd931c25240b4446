#!/usr/bin/env bash
# The end-to-end figures of docs/BENCHMARKS.md: for 1 KiB and 100 B messages, 1 and 12
# partitions, acks=all, default durability (fsync every append): find the max sustainable rate
# with the lean client (the client that costs least, so the broker saturates first), then run
# REPEAT times at 50 % of it with each client of HALF_CLIENTS; then consumer catch-up
# (librdkafka). Each run starts a fresh broker (core 0) with a temp data dir; the generator is
# pinned to core 1. Output: one JSON per run in $OUT, a log with the load average before each
# run; tuning/e2e-summary.py prints the medians.
#
#   CARGO_TARGET_DIR=/work/target-bench tuning/e2e-figures.sh
#   CASES="1024:1" REPEAT=3 tuning/e2e-figures.sh       # one case
#   MAX_CLIENT=librdkafka HALF_CLIENTS=librdkafka tuning/e2e-figures.sh   # librdkafka only
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET=${CARGO_TARGET_DIR:-target}
OUT=${OUT:-$TARGET/loadgen}
REPEAT=${REPEAT:-3}
CASES=${CASES:-"1024:1 1024:12 100:1 100:12"}
MAX_CLIENT=${MAX_CLIENT:-lean}
HALF_CLIENTS=${HALF_CLIENTS:-"lean librdkafka"}
CATCHUP_MB=${CATCHUP_MB:-1000}
# The knee: the last step where the achieved rate is within 5 % of the target with no failed
# delivery and a publish p99 under P99_LIMIT_MS.
P99_LIMIT_MS=${P99_LIMIT_MS:-200}
COMMON=${COMMON:-"--warmup 3 --duration 10 --acks all"}
mkdir -p "$OUT"
cargo build --release --bin ringbroker
cargo bench --bench loadgen --no-run
LOADGEN=$(ls -t "$TARGET"/release/deps/loadgen-* | grep -v '\.d$' | head -1)
log() { echo "$(date -u +%T) load $(cut -d' ' -f1-3 /proc/loadavg) $*" | tee -a "$OUT/figures.log"; }
# A failed run is logged and the next one goes on.
run() { "$@" 2>&1 | tee -a "$OUT/figures.log" || log "FAILED (exit ${PIPESTATUS[0]}): $*"; }
for c in $CASES; do
  size=${c%%:*}; parts=${c##*:}
  start=$(( size >= 1024 ? 100000 : 400000 ))
  log "max-rate $MAX_CLIENT size=$size partitions=$parts"
  run "$LOADGEN" $COMMON --client "$MAX_CLIENT" --message-size "$size" --partitions "$parts" \
      --max-rate --rate "$start" --step-factor 1.3 --bisect 2 --p99-limit-ms "$P99_LIMIT_MS" \
      --out-dir "$OUT" --label "max-$size-$parts"
  max=$(python3 -c "import json;m=json.load(open('$OUT/max-$size-$parts.json'))['summary']['max'];print(m['target_rate'] if m else '')" 2>/dev/null || true)
  if [ -z "$max" ]; then log "no sustainable rate for size=$size partitions=$parts"; continue; fi
  half=$(python3 -c "print(round($max/2))")
  for i in $(seq 1 "$REPEAT"); do
    for client in $HALF_CLIENTS; do
      log "at 50% $half $client size=$size partitions=$parts run $i"
      run "$LOADGEN" $COMMON --client "$client" --message-size "$size" --partitions "$parts" \
          --rate "$half" --out-dir "$OUT" --label "half-$client-$size-$parts-$i"
    done
  done
done
if [[ "$CATCHUP_MB" != 0 ]]; then
  for parts in 1 12; do
    for i in $(seq 1 "$REPEAT"); do
      log "catch-up $CATCHUP_MB MB 1 KiB partitions=$parts run $i"
      run "$LOADGEN" --message-size 1024 --partitions "$parts" --catchup "$CATCHUP_MB" --linger-ms 5 \
          --out-dir "$OUT" --label "catchup-$parts-$i"
    done
  done
fi
