# ringbroker: `make run` starts a broker with embedded defaults; `make test` runs every test.

CARGO ?= cargo
RUN_ARGS ?=

.PHONY: run build test deps lint bench fmt clean

run:
	$(CARGO) run --release --bin ringbroker -- serve $(RUN_ARGS)

build:
	$(CARGO) build --release

# Third-party Kafka clients used by the black-box tests (kcat, kafka-python, confluent-kafka).
deps:
	./tests/install-deps.sh

test: deps
	$(CARGO) test

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings

fmt:
	$(CARGO) fmt

bench:
	$(CARGO) bench

clean:
	$(CARGO) clean
