#!/usr/bin/env bash
# `make compat`: librdkafka's own regression tests against a fresh ringbroker.
#
#  1. installs build dependencies (install-deps.sh) and builds librdkafka + its test runner
#     from the rdkafka-sys crate source, cached outside the clone (build-suite.sh);
#  2. builds ringbroker (cargo build --release) and starts it on 127.0.0.1:0 with a temporary
#     data directory, reading the bound port from its "ringbroker ready ... listen=" line;
#  3. runs each test number from tests.txt (or COMPAT_TESTS) as its own
#     `./test-runner -p1 -L -E -K -Q` with TESTS=<n>, TEST_KAFKA_VERSION=3.7.0, a test.conf
#     holding bootstrap.servers, and KAFKA_PATH pointing at the kafka-*.sh stand-ins;
#  4. prints a per-test summary and exits 1 if any test did not pass.
#
# Env: COMPAT_TESTS          test numbers, space or comma separated [all of tests.txt]
#      COMPAT_TOTAL_TIMEOUT  seconds for all tests together [1500]
#      COMPAT_TEST_TIMEOUT   upper bound per test in seconds [300]; each test also gets at
#                            most an equal share of the time left, and at least 20 s (or
#                            the min=SECONDS its tests.txt line gives)
#      COMPAT_BROKER_ARGS    extra `ringbroker serve` arguments
#                            [--set num.partitions=4 --set auto.create.topics.enable=true
#                             --set authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
#                             --set allow.everyone.if.no.acl.found=true]
#      COMPAT_DEBUG          librdkafka debug contexts for every client (TEST_DEBUG), e.g. broker,metadata
#      COMPAT_BUILD_DIR      librdkafka build cache [~/.cache/ringbroker/librdkafka-compat]
#      COMPAT_RESULTS_DIR    per-test logs and reports [$COMPAT_BUILD_DIR/results]
#      CARGO_TARGET_DIR      honoured for the ringbroker binary
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
build_root=${COMPAT_BUILD_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/ringbroker/librdkafka-compat}
results=${COMPAT_RESULTS_DIR:-$build_root/results}
total_budget=${COMPAT_TOTAL_TIMEOUT:-1500}
test_cap=${COMPAT_TEST_TIMEOUT:-300}
min_share=20
kafka_version=3.7.0
# librdkafka's default test scenario (tests/scenarios/default.json): auto-created topics with
# 4 partitions; tests such as 0012 produce to partitions 0..3 of an auto-created topic. The ACL
# authorizer is on, with allow.everyone.if.no.acl.found as Kafka's test clusters run it, so
# 0109's deny ACL takes effect and every other test is allowed everything.
default_broker_args="--set num.partitions=4 --set auto.create.topics.enable=true"
default_broker_args+=" --set authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer"
default_broker_args+=" --set allow.everyone.if.no.acl.found=true"
read -r -a broker_args <<<"${COMPAT_BROKER_ARGS-$default_broker_args}"

die() { echo "compat: $*" >&2; exit 2; }
log() { echo "compat: $*" >&2; }

[[ $total_budget =~ ^[0-9]+$ && $test_cap =~ ^[0-9]+$ ]] || die "COMPAT_TOTAL_TIMEOUT and COMPAT_TEST_TIMEOUT must be whole seconds"

# --- test list -------------------------------------------------------------------------------
# tests.txt lines are "NNNN" or "NNNN min=SECONDS": the second form gives a test that needs it
# (say, many group joins that each wait group.initial.rebalance.delay.ms) at least that long,
# whatever its share of the time left; it applies with COMPAT_TESTS too.
declare -A test_min=()
listed=()
while read -r number rest; do
  [[ -n $number ]] || continue
  listed+=("$number")
  if [[ $rest =~ ^min=([0-9]+)$ ]]; then
    test_min[$number]=${BASH_REMATCH[1]}
  elif [[ -n $rest ]]; then
    die "tests.txt: bad line '$number $rest' (expected NNNN or NNNN min=SECONDS)"
  fi
done < <(sed -e 's/#.*//' "$here/tests.txt")
if [[ -n ${COMPAT_TESTS:-} ]]; then
  read -r -a tests <<<"${COMPAT_TESTS//,/ }"
else
  tests=("${listed[@]}")
fi
((${#tests[@]})) || die "no tests selected (tests.txt empty or COMPAT_TESTS blank)"
for t in "${tests[@]}"; do
  [[ $t =~ ^[0-9]{4}$ ]] || die "bad test number '$t' (expected four digits, e.g. 0001)"
done

# --- dependencies and builds -----------------------------------------------------------------
"$here/install-deps.sh"
suite=$("$here/build-suite.sh")
[[ -x $suite/test-runner ]] || die "test runner missing in $suite"
for t in "${tests[@]}"; do
  grep -q "_TEST(${t}_" "$suite/test.c" || die "librdkafka's suite has no test $t (see $suite/test.c)"
done

log "building ringbroker (cargo build --release)"
(cd "$repo" && cargo build --release --bin ringbroker) || die "cargo build --release failed"
target=${CARGO_TARGET_DIR:-target}
[[ $target = /* ]] || target=$repo/$target
broker_bin=$target/release/ringbroker
[[ -x $broker_bin ]] || die "ringbroker binary not found at $broker_bin"

# --- broker lifecycle ------------------------------------------------------------------------
tmp=$(mktemp -d "${TMPDIR:-/tmp}/ringbroker-compat.XXXXXX")
broker_pid=
runner_pid=
broker_starts=0
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [[ -n $runner_pid ]]; then
    kill -TERM "$runner_pid" 2>/dev/null || true # timeout(1) passes it on to the test runner
    wait "$runner_pid" 2>/dev/null || true
  fi
  if [[ -n $broker_pid ]] && kill -0 "$broker_pid" 2>/dev/null; then
    kill -TERM "$broker_pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$broker_pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$broker_pid" 2>/dev/null || true
    wait "$broker_pid" 2>/dev/null || true
  fi
  rm -rf "$tmp"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

broker_alive() {
  [[ -n $broker_pid ]] || return 1
  local st
  st=$(ps -o stat= -p "$broker_pid" 2>/dev/null) || return 1
  [[ -n $st && $st != Z* ]]
}

start_broker() {
  broker_starts=$((broker_starts + 1))
  broker_log=$results/broker-$broker_starts.log
  "$broker_bin" serve --data-dir "$tmp/data-$broker_starts" --listen 127.0.0.1:0 "${broker_args[@]}" \
    >/dev/null 2>"$broker_log" &
  broker_pid=$!
  local addr=
  for _ in $(seq 1 300); do
    addr=$(grep -a 'ringbroker ready' "$broker_log" | grep -o 'listen=127\.0\.0\.1:[0-9]\+' | head -n1 | cut -d= -f2 || true)
    [[ -n $addr ]] && break
    broker_alive || { tail -n 20 "$broker_log" >&2; die "ringbroker exited during start (log: $broker_log)"; }
    sleep 0.1
  done
  [[ -n $addr ]] || { tail -n 20 "$broker_log" >&2; die "ringbroker printed no 'ringbroker ready ... listen=127.0.0.1:PORT' line within 30s (log: $broker_log)"; }
  bootstrap=$addr
  cat >"$tmp/test.conf" <<CONF
# written by tests/compat/run.sh for one ringbroker on $bootstrap (plaintext, single broker)
bootstrap.servers=$bootstrap
CONF
  # Pre-flight: the broker answers Metadata to a librdkafka client.
  local pre
  pre=$(BOOTSTRAP=$bootstrap timeout 30 python3 - <<'PY' 2>&1
import os
from confluent_kafka.admin import AdminClient
md = AdminClient({"bootstrap.servers": os.environ["BOOTSTRAP"]}).list_topics(timeout=20)
print(f"Metadata: {len(md.brokers)} broker(s) {sorted(str(b) for b in md.brokers.values())}, {len(md.topics)} topic(s), cluster {md.cluster_id}")
PY
  ) || { echo "$pre" >&2; die "pre-flight Metadata request to $bootstrap failed"; }
  log "ringbroker pid $broker_pid ready on $bootstrap (${broker_args[*]}); $pre"
}

# --- run -------------------------------------------------------------------------------------
rm -rf "$results"
mkdir -p "$results"
# The runner works in the suite's tests/ directory as upstream does (0053 reads
# ../src/statistics_schema.json); drop what earlier runs left there.
rm -f "$suite"/stats_*.json "$suite"/*.offset "$suite"/test_report_*.json
start_broker

runner_env=(
  TEST_KAFKA_VERSION="$kafka_version"
  RDKAFKA_TEST_CONF="$tmp/test.conf"
  KAFKA_PATH="$here/kafka"
  LD_LIBRARY_PATH="$suite/../src:$suite/../src-cpp${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
)
[[ -n ${COMPAT_DEBUG:-} ]] && runner_env+=(TEST_DEBUG="$COMPAT_DEBUG")

summary=$results/summary.tsv
: >"$summary"
deadline=$((SECONDS + total_budget))
n_total=${#tests[@]}
i=0
log "running ${n_total} test(s) with ./test-runner -p1 -L -E -K -Q (budget ${total_budget}s, logs in $results)"
for t in "${tests[@]}"; do
  i=$((i + 1))
  left=$((n_total - i + 1))
  remaining=$((deadline - SECONDS))
  if ((remaining < min_share)); then
    printf '%s\tNOT-RUN\t0\ttotal time budget of %ss used up (COMPAT_TOTAL_TIMEOUT)\n' "$t" "$total_budget" >>"$summary"
    printf '[%2d/%d] %s NOT-RUN (time budget used up)\n' "$i" "$n_total" "$t"
    continue
  fi
  limit=$((remaining / left))
  ((limit < min_share)) && limit=$min_share
  ((limit < ${test_min[$t]:-0})) && limit=${test_min[$t]}
  ((limit > test_cap)) && limit=$test_cap
  if ! broker_alive; then
    wait "$broker_pid" 2>/dev/null && st=0 || st=$?
    log "ringbroker (pid $broker_pid) is gone (exit status $st; log $broker_log); starting a new one"
    start_broker
  fi
  tlog=$results/$t.log
  start=$SECONDS
  rc=0
  # In the background and waited for, so that INT/TERM reach the cleanup trap at once; the
  # 2>/dev/null only silences bash's "Killed" job notice (the runner's output is in $tlog).
  (cd "$suite" && exec env "${runner_env[@]}" TESTS="$t" BROKERS="$bootstrap" TEST_REPORT="$results/$t.json" \
    timeout -k 5 "$limit" stdbuf -oL -eL "$suite/test-runner" -p1 -L -E -K -Q) >"$tlog" 2>&1 &
  runner_pid=$!
  { wait "$runner_pid"; } 2>/dev/null || rc=$?
  runner_pid=
  took=$((SECONDS - start))
  timed_out=0
  if ((rc == 124)) || { ((rc == 137)) && ((took >= limit)); }; then timed_out=1; fi
  IFS=$'\t' read -r status reason < <(python3 "$here/classify.py" "$t" "$tlog" "$results/$t.json" "$rc" "$timed_out" "$limit")
  if ! broker_alive; then
    status=FAILED
    last=$(grep -a . "$broker_log" | grep -av 'shard stopped\|drained\|draining' | tail -n 1 | sed 's/^[0-9TZ:.-]* *//' | cut -c1-160)
    reason="ringbroker exited during the test (${last}; log $broker_log); ${reason}"
  fi
  printf '%s\t%s\t%s\t%s\n' "$t" "$status" "$took" "$reason" >>"$summary"
  printf '[%2d/%d] %s %-7s %4ss  %s\n' "$i" "$n_total" "$t" "$status" "$took" "$reason"
done

# --- summary ---------------------------------------------------------------------------------
echo
echo "== librdkafka compat summary (ringbroker on $bootstrap, TEST_KAFKA_VERSION=$kafka_version) =="
awk -F'\t' '{ printf "%-5s %-8s %5ss  %s\n", $1, $2, $3, $4 }' "$summary"
passed=$(awk -F'\t' '$2 == "PASSED"' "$summary" | wc -l)
skipped=$(awk -F'\t' '$2 == "SKIPPED"' "$summary" | wc -l)
bad=$(awk -F'\t' '$2 != "PASSED" && $2 != "SKIPPED"' "$summary" | wc -l)
echo "passed $passed, skipped $skipped, failed $bad of $n_total; logs: $results/<test>.log, broker: $results/broker-*.log"
if ((bad)); then
  echo "failed: $(awk -F'\t' '$2 != "PASSED" && $2 != "SKIPPED" { printf "%s ", $1 }' "$summary")"
  exit 1
fi
