# ringbroker: `make run` starts a broker with embedded defaults; `make test` runs every test.

CARGO ?= cargo
RUN_ARGS ?=

.PHONY: run build test deps lint bench fmt clean cluster cluster-stop

run:
	$(CARGO) run --release --bin ringbroker -- serve $(RUN_ARGS)

build:
	$(CARGO) build --release

# Three nodes on 127.0.0.1, each broker and controller-quorum voter, data under ./data/node-N
# (tuning/cluster.sh); prints the bootstrap servers. `make cluster-stop` stops them.
cluster: build
	./tuning/cluster.sh start

cluster-stop:
	./tuning/cluster.sh stop

# Third-party Kafka clients used by the black-box tests (kcat, kafka-python, confluent-kafka).
deps:
	./tests/install-deps.sh

# Every test: unit and black-box tests, then librdkafka's regression suite (`compat`), then the
# short chaos run (`chaos-short`, as root: network namespaces).
# Test binaries run one test at a time: several million-message client runs at once on a
# 2-core machine starve the broker and the clients' own timers.
test: deps
	$(CARGO) test -- --test-threads=1
	$(MAKE) compat
	$(MAKE) chaos-short

# The coordinator-failover tests of tests/cluster.rs (also in `make test`), COORDINATOR_RUNS
# times each: they were flaky until the causes were found, and this is how to look again.
COORDINATOR_RUNS ?= 5
.PHONY: test-coordinator-failover
test-coordinator-failover:
	for i in $$(seq 1 $(COORDINATOR_RUNS)); do \
		$(CARGO) test --test cluster a_group_and_a_transactional_loop -- --test-threads=1 || exit 1; \
	done

# Issue 15's SIGKILL acceptance test in its long mode: SIGKILL_ROUNDS rounds of SIGKILL_MESSAGES
# messages, each killed at a point drawn from SIGKILL_SEED (random unless given; printed first).
# `make test` runs its short mode (one round of 40,000).
SIGKILL_ROUNDS ?= 20
SIGKILL_MESSAGES ?= 200000
SIGKILL_SEED ?=
.PHONY: test-sigkill-long
test-sigkill-long:
	SIGKILL_ROUNDS=$(SIGKILL_ROUNDS) SIGKILL_MESSAGES=$(SIGKILL_MESSAGES) \
	  $(if $(SIGKILL_SEED),SIGKILL_SEED=$(SIGKILL_SEED)) \
	  $(CARGO) test --test cluster acknowledged_messages_survive_the_leader_s_sigkill -- --nocapture

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings

fmt:
	$(CARGO) fmt

# End-to-end load generator (benches/loadgen.rs, docs/BENCHMARKS.md): builds the release broker,
# starts it on core 0 with a temp data dir, pins the generator to core 1 and runs LOADGEN_ARGS
# (`make bench LOADGEN_ARGS=--help` lists the knobs). BENCH=storage runs the storage engine bench,
# BENCH=micro the criterion micro-benchmarks (codec, batch validation), BENCH=router_hop the
# cross-shard call.
LOADGEN_ARGS ?= --partitions 1 --message-size 1024 --rate 5000 --warmup 5 --duration 15
BENCH ?= loadgen
bench:
ifeq ($(BENCH),loadgen)
	$(CARGO) build --release --bin ringbroker
	$(CARGO) bench --bench loadgen -- $(LOADGEN_ARGS)
else
	$(CARGO) bench --bench $(BENCH)
endif

clean:
	$(CARGO) clean

# librdkafka's own regression suite against a fresh ringbroker (tests/compat/, docs/COMPAT.md).
# Builds the suite from the rdkafka-sys crate source (cached in ~/.cache/ringbroker), starts a
# broker on 127.0.0.1:0 and runs the numbers in tests/compat/tests.txt, or COMPAT_TESTS="0001 0002".
# `make test` runs it after the cargo tests.
COMPAT_TESTS ?=
.PHONY: compat
compat:
	COMPAT_TESTS="$(COMPAT_TESTS)" ./tests/compat/run.sh

# ---------------------------------------------------------------------------------------------
# Long mutation run (tests/mutation.rs, docs/RELIABILITY.md): recorded client frames from
# tests/data/frames, mutated and sent to a fresh broker; `make test` runs the short version
# (3000 frames). MUTATION_SEED replays a run; MUTATION_DURATION_S=N runs N seconds instead of
# MUTATION_COUNT frames; MUTATION_REPLAY=DIR first resends the frames a failed run saved. A debug
# build on purpose: its overflow checks turn silent wrap-arounds into panics the run reports.
MUTATION_COUNT ?= 200000
MUTATION_SEED ?=
MUTATION_DURATION_S ?=
MUTATION_REPLAY ?=
.PHONY: fuzz-mutation
fuzz-mutation:
	$(if $(MUTATION_DURATION_S),MUTATION_DURATION_S="$(MUTATION_DURATION_S)",MUTATION_COUNT="$(MUTATION_COUNT)") \
	$(if $(MUTATION_SEED),MUTATION_SEED="$(MUTATION_SEED)") \
	$(if $(MUTATION_REPLAY),MUTATION_REPLAY="$(MUTATION_REPLAY)") \
	$(CARGO) test --test mutation -- --test-threads=1 --nocapture

# ---------------------------------------------------------------------------------------------
# libFuzzer targets (tests/fuzz/README.md). Not part of `make test`: needs the nightly toolchain
# and cargo-fuzz, both installed here if missing. Each of FUZZ_TARGETS runs FUZZ_SECONDS seconds
# on its corpus (tests/fuzz/corpus/<target>, grown by libFuzzer, not committed), the committed
# seeds (tests/fuzz/seeds/<target>) and, for request_frame, the recorded client frames in
# tests/data/frames when that directory exists. A crash, panic, OOM or over-limit allocation
# stops the run and leaves its input in tests/fuzz/artifacts/<target>/.
# ---------------------------------------------------------------------------------------------
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?= request_frame record_batch legacy_format segment_recovery metadata_log quorum_peer
FUZZ_TARGET_DIR ?= $(CURDIR)/target/fuzz
FUZZ_FLAGS ?= -rss_limit_mb=2048 -malloc_limit_mb=512 -timeout=30
.PHONY: fuzz-libfuzzer
fuzz-libfuzzer:
	@rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
	@command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	cargo +nightly fuzz build --fuzz-dir tests/fuzz --target-dir $(FUZZ_TARGET_DIR)
	@set -e; for t in $(FUZZ_TARGETS); do \
	  mkdir -p tests/fuzz/corpus/$$t tests/fuzz/artifacts/$$t; \
	  frames=""; \
	  if [ $$t = request_frame ] && [ -d tests/data/frames ]; then frames=tests/data/frames; fi; \
	  echo "== fuzz $$t for $(FUZZ_SECONDS)s"; \
	  cargo +nightly fuzz run --fuzz-dir tests/fuzz --target-dir $(FUZZ_TARGET_DIR) $$t \
	    tests/fuzz/corpus/$$t tests/fuzz/seeds/$$t $$frames -- \
	    -max_total_time=$(FUZZ_SECONDS) $(FUZZ_FLAGS) \
	    -artifact_prefix=$(CURDIR)/tests/fuzz/artifacts/$$t/; \
	done

# Both long hostile-input runs: the mutation harness, then every libFuzzer target.
.PHONY: fuzz
fuzz: fuzz-mutation fuzz-libfuzzer

# ---------------------------------------------------------------------------------------------
# Chaos harness (tests/chaos/, docs/RELIABILITY.md "Chaos harness"): as root, three nodes in
# network namespaces, a seeded fault schedule under an idempotent acks=all workload, then a
# history check; the last line is `chaos: R runs, F faults, L lost, D duplicated, V violations`.
# CHAOS_SEED replays a run (seeds CHAOS_SEED, CHAOS_SEED+1, ... for CHAOS_RUNS runs);
# CHAOS_ARGS passes more flags (`tests/chaos/chaos.py --help`: --rf, --min-isr, --faults, ...).
# `make test` runs chaos-short (three seeds, about 90 s) after the cargo tests and compat.
CHAOS_RUNS ?= 50
CHAOS_SEED ?=
CHAOS_ARGS ?=
CHAOS_SHORT_RUNS ?= 3
CHAOS_BIN = $(or $(CARGO_TARGET_DIR),target)/release/ringbroker
.PHONY: chaos chaos-short
chaos: deps
	$(CARGO) build --release --bin ringbroker
	python3 tests/chaos/chaos.py --broker-bin $(CHAOS_BIN) --runs $(CHAOS_RUNS) \
	  $(if $(CHAOS_SEED),--seed $(CHAOS_SEED)) $(CHAOS_ARGS)

chaos-short: deps
	$(CARGO) build --release --bin ringbroker
	python3 -m unittest tests/chaos/test_checker.py
	python3 tests/chaos/chaos.py --broker-bin $(CHAOS_BIN) --runs $(CHAOS_SHORT_RUNS) \
	  --duration 20 $(if $(CHAOS_SEED),--seed $(CHAOS_SEED)) $(CHAOS_ARGS)
