#!/usr/bin/env bash
# A/B of host settings with `make bench`'s load generator (tuning/README.md, "Host settings
# measured here"). For each setting in SETTINGS, runs REPEAT interleaved pairs (A, B, A, B, ...)
# of the same workload on fresh brokers, then puts the setting back as it was. Needs root; it
# changes only the setting under test, and restores it even when interrupted.
#
#   sudo CARGO_TARGET_DIR=/work/target-bench tuning/host-ab.sh
#   SETTINGS="irq" DISK=vda IRQ=36 WORKLOAD="--client lean --partitions 1 --rate 200000" tuning/host-ab.sh
#
# Settings (A is this machine's state as found, B the alternative):
#   sched   the data disk's io scheduler: as found, then `none` (mq-deadline <-> none)
#   irq     the data disk's completion interrupt on the client core, then on the shard's core 0
#   thp     transparent huge pages `madvise`, then `always`
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET=${CARGO_TARGET_DIR:-target}
OUT=${OUT:-$TARGET/host-ab}
REPEAT=${REPEAT:-3}
SETTINGS=${SETTINGS:-"sched irq thp"}
DISK=${DISK:-$(lsblk -no pkname "$(findmnt -no source -T /tmp)" 2>/dev/null || true)}
DISK=${DISK:-vda}
# The disk's request-queue interrupt (virtio: "virtioN-req.0"; NVMe: "nvme0q1").
IRQ=${IRQ:-$(grep -E 'virtio[0-9]+-req|nvme0q1' /proc/interrupts | head -1 | cut -d: -f1 | tr -d ' ')}
WORKLOAD=${WORKLOAD:-"--client lean --message-size 1024 --partitions 12 --rate 360000"}
COMMON=${COMMON:-"--warmup 2 --duration 8 --acks all"}
mkdir -p "$OUT"
cargo bench --bench loadgen --no-run
cargo build --release --bin ringbroker
LOADGEN=$(ls -t "$TARGET"/release/deps/loadgen-* | grep -v '\.d$' | head -1)
log() { echo "$(date -u +%T) load $(cut -d' ' -f1-3 /proc/loadavg) $*" | tee -a "$OUT/ab.log"; }

sched_file=/sys/block/$DISK/queue/scheduler
thp_file=/sys/kernel/mm/transparent_hugepage/enabled
sched0=$(sed -E 's/.*\[(.*)\].*/\1/' "$sched_file")
thp0=$(sed -E 's/.*\[(.*)\].*/\1/' "$thp_file")
irq0=$(cat "/proc/irq/$IRQ/smp_affinity_list")
restore() {
  echo "$sched0" > "$sched_file"; echo "$thp0" > "$thp_file"
  echo "$irq0" > "/proc/irq/$IRQ/smp_affinity_list" 2>/dev/null || true
}
trap restore EXIT

apply() {  # setting, variant (a|b)
  case "$1:$2" in
    sched:a) echo "$sched0" > "$sched_file" ;;
    sched:b) echo none > "$sched_file" ;;
    irq:a) echo 1 > "/proc/irq/$IRQ/smp_affinity_list" ;;
    irq:b) echo 0 > "/proc/irq/$IRQ/smp_affinity_list" ;;
    thp:a) echo madvise > "$thp_file" ;;
    thp:b) echo always > "$thp_file" ;;
    *) echo "unknown setting $1" >&2; exit 2 ;;
  esac
}

log "disk $DISK (scheduler $sched0), irq $IRQ (affinity $irq0), thp $thp0; workload: $WORKLOAD"
for setting in $SETTINGS; do
  # Managed interrupts (virtio-blk and NVMe queues on recent kernels) refuse a new affinity
  # with EPERM: the kernel spreads them itself.
  if [[ $setting == irq ]] && ! echo "$irq0" 2>/dev/null > "/proc/irq/$IRQ/smp_affinity_list"; then
    log "irq: /proc/irq/$IRQ/smp_affinity_list is not writable (a kernel-managed interrupt); skipped"
    continue
  fi
  for i in $(seq 1 "$REPEAT"); do
    for variant in a b; do
      apply "$setting" "$variant"
      log "$setting $variant run $i"
      "$LOADGEN" $COMMON $WORKLOAD --out-dir "$OUT" --label "$setting-$variant-$i" 2>&1 \
          | grep -v '^broker:' | tee -a "$OUT/ab.log" || log "FAILED: $setting $variant $i"
    done
  done
  restore
done
