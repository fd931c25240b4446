#!/usr/bin/env bash
# The end-to-end figures of docs/BENCHMARKS.md: for 1 KiB and 100 B messages, 1 and 12
# partitions, acks=all, default durability (fsync every append): find the max sustainable rate,
# then run REPEAT times at that rate and REPEAT times at 50 % of it; then consumer catch-up.
# Each run starts a fresh broker (core 0) with a temp data dir; the generator is pinned to core 1.
# Output: one JSON per run in $OUT, a log with the load average before each run.
#
#   CARGO_TARGET_DIR=/work/target-bench tuning/e2e-figures.sh
#   CASES="1024:1" REPEAT=3 tuning/e2e-figures.sh       # one case
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET=${CARGO_TARGET_DIR:-target}
OUT=${OUT:-$TARGET/loadgen}
REPEAT=${REPEAT:-3}
CASES=${CASES:-"1024:1 1024:12 100:1 100:12"}
CATCHUP_MB=${CATCHUP_MB:-1000}
COMMON=${COMMON:-"--warmup 3 --duration 10 --acks all --p99-limit-ms 200"}
mkdir -p "$OUT"
cargo build --release --bin ringbroker
cargo bench --bench loadgen --no-run
LOADGEN=$(ls -t "$TARGET"/release/deps/loadgen-* | grep -v '\.d$' | head -1)
log() { echo "$(date -u +%T) load $(cut -d' ' -f1-3 /proc/loadavg) $*" | tee -a "$OUT/figures.log"; }
for c in $CASES; do
  size=${c%%:*}; parts=${c##*:}
  start=$(( size >= 1024 ? 8000 : 20000 ))
  log "max-rate size=$size partitions=$parts"
  "$LOADGEN" $COMMON --message-size "$size" --partitions "$parts" --max-rate --rate "$start" \
      --step-factor 1.5 --bisect 2 --out-dir "$OUT" --label "max-$size-$parts" | tee -a "$OUT/figures.log"
  max=$(python3 -c "import json;m=json.load(open('$OUT/max-$size-$parts.json'))['summary']['max'];print(m['target_rate'] if m else '')")
  if [ -z "$max" ]; then log "no sustainable rate for size=$size partitions=$parts"; continue; fi
  half=$(python3 -c "print($max/2)")
  for i in $(seq 1 "$REPEAT"); do
    log "at max $max size=$size partitions=$parts run $i"
    "$LOADGEN" $COMMON --message-size "$size" --partitions "$parts" --rate "$max" \
        --out-dir "$OUT" --label "atmax-$size-$parts-$i" | tee -a "$OUT/figures.log"
    log "at 50% $half size=$size partitions=$parts run $i"
    "$LOADGEN" $COMMON --message-size "$size" --partitions "$parts" --rate "$half" \
        --out-dir "$OUT" --label "half-$size-$parts-$i" | tee -a "$OUT/figures.log"
  done
done
for parts in 1 12; do
  for i in $(seq 1 "$REPEAT"); do
    log "catch-up $CATCHUP_MB MB 1 KiB partitions=$parts run $i"
    "$LOADGEN" --message-size 1024 --partitions "$parts" --catchup "$CATCHUP_MB" --linger-ms 5 \
        --out-dir "$OUT" --label "catchup-$parts-$i" | tee -a "$OUT/figures.log"
  done
done
