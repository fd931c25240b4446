#!/usr/bin/env bash
# Figures for the lean client (docs/BENCHMARKS.md, "Cross-check of the two clients"): a
# cross-check of librdkafka against the lean client at the same moderate rate, then knee
# searches with the lean client, with the broker on core 0 and the generator on core 1.
# Each run starts a fresh broker with a temp data dir. Output: one JSON per run in $OUT and a log
# with the time and the load average before each run; tuning/runs-summary.py prints medians.
#
#   CARGO_TARGET_DIR=/work/target-bench tuning/client-figures.sh
#   PARTS=cross REPEAT=5 tuning/client-figures.sh        # only the cross-check
#   PARTS=knee KNEE_CASES="1024:1" tuning/client-figures.sh
#   NICE=-10 tuning/client-figures.sh   # on a shared host: raise the runs' CPU weight (root)
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET=${CARGO_TARGET_DIR:-target}
OUT=${OUT:-$TARGET/loadgen-clients}
REPEAT=${REPEAT:-3}
PARTS=${PARTS:-"cross knee"}
CROSS_RATE=${CROSS_RATE:-40000}
CROSS_CASES=${CROSS_CASES:-"1024:1 1024:12"}
KNEE_CASES=${KNEE_CASES:-"1024:1 1024:12 100:1 100:12"}
COMMON=${COMMON:-"--warmup 2 --duration 8 --acks all"}
mkdir -p "$OUT"
cargo build --release --bin ringbroker
cargo bench --bench loadgen --no-run
LOADGEN=$(ls -t "$TARGET"/release/deps/loadgen-* | grep -v '\.d$' | head -1)
# The broker is the generator's child, so it runs at the same nice level.
if [[ -n "${NICE:-}" ]]; then LOADGEN="nice -n $NICE $LOADGEN"; fi
log() { echo "$(date -u +%T) load $(cut -d' ' -f1-3 /proc/loadavg) $*" | tee -a "$OUT/figures.log"; }
# A failed run (a broker that stops answering, say) is logged and the next one goes on.
run() { "$@" 2>&1 | tee -a "$OUT/figures.log" || log "FAILED (exit ${PIPESTATUS[0]}): $*"; }
if [[ " $PARTS " == *" cross "* ]]; then
  for i in $(seq 1 "$REPEAT"); do
    for c in $CROSS_CASES; do
      size=${c%%:*}; parts=${c##*:}
      for client in librdkafka lean; do
        log "cross-check $client size=$size partitions=$parts rate=$CROSS_RATE run $i"
        run $LOADGEN $COMMON --client "$client" --message-size "$size" --partitions "$parts" \
            --rate "$CROSS_RATE" --out-dir "$OUT" --label "cross-$client-$size-$parts-$i"
      done
    done
  done
fi
if [[ " $PARTS " == *" knee "* ]]; then
  # The p99 criterion is relaxed to 2 s so that the search stops where a core saturates (the
  # achieved rate falls short), not at the first noise burst of a shared machine.
  for c in $KNEE_CASES; do
    size=${c%%:*}; parts=${c##*:}
    start=$(( size >= 1024 ? 100000 : 200000 ))
    log "knee lean size=$size partitions=$parts"
    run $LOADGEN $COMMON --client lean --message-size "$size" --partitions "$parts" --max-rate \
        --rate "$start" --step-factor 1.3 --bisect 1 --p99-limit-ms 2000 \
        --out-dir "$OUT" --label "knee-lean-$size-$parts"
  done
fi
