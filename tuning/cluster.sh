#!/usr/bin/env bash
# `make cluster` / `make cluster-stop`: three ringbroker nodes on 127.0.0.1, each broker and
# controller-quorum voter (combined mode), data under ./data/node-N, logs in ./data/node-N.log.
#
#   tuning/cluster.sh start    start nodes 1-3 (release build), print the bootstrap servers
#   tuning/cluster.sh stop     SIGTERM each node, SIGKILL what is left after 15 s
#
# Ports: node N serves clients on 9N92-ish (9092, 9192, 9292) and the quorum on 9093, 9193,
# 9293. Each node is pinned to its own core where the host has enough (node N on core
# (N-1) mod cores). Environment: CLUSTER_DATA (default ./data), RINGBROKER_BIN (default the
# release binary under CARGO_TARGET_DIR or ./target).
set -euo pipefail

cmd=${1:-start}
data=${CLUSTER_DATA:-./data}
bin=${RINGBROKER_BIN:-${CARGO_TARGET_DIR:-target}/release/ringbroker}
nodes=(1 2 3)
client_port() { echo $((9092 + ($1 - 1) * 100)); }
controller_port() { echo $((9093 + ($1 - 1) * 100)); }

voters=""
for n in "${nodes[@]}"; do
    voters+="${voters:+,}$n@127.0.0.1:$(controller_port "$n")"
done

stop() {
    local pids=()
    for n in "${nodes[@]}"; do
        local pidfile="$data/node-$n.pid"
        [[ -f $pidfile ]] || continue
        local pid
        pid=$(cat "$pidfile")
        if kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid" && pids+=("$pid")
        fi
        rm -f "$pidfile"
    done
    for _ in $(seq 150); do
        local alive=0
        for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        [[ $alive == 0 ]] && break
        sleep 0.1
    done
    for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    echo "cluster stopped (${#pids[@]} node(s) were running)"
}

start() {
    if [[ ! -x $bin ]]; then
        echo "cluster.sh: no broker binary at $bin (run make build)" >&2
        exit 2
    fi
    mkdir -p "$data"
    local cores
    cores=$(nproc)
    for n in "${nodes[@]}"; do
        if [[ -f $data/node-$n.pid ]] && kill -0 "$(cat "$data/node-$n.pid")" 2>/dev/null; then
            echo "cluster.sh: node $n is already running (make cluster-stop first)" >&2
            exit 2
        fi
        local props="$data/node-$n.properties"
        cat >"$props" <<PROPS
# Written by tuning/cluster.sh; node $n of a three-node combined-mode cluster.
node.id=$n
process.roles=broker,controller
controller.quorum.voters=$voters
listeners=PLAINTEXT://127.0.0.1:$(client_port "$n"),CONTROLLER://127.0.0.1:$(controller_port "$n")
advertised.listeners=PLAINTEXT://127.0.0.1:$(client_port "$n")
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
controller.listener.names=CONTROLLER
log.dirs=$data/node-$n
PROPS
        nohup "$bin" serve --config "$props" --cores $(((n - 1) % cores)) \
            >"$data/node-$n.log" 2>&1 &
        echo $! >"$data/node-$n.pid"
    done
    for n in "${nodes[@]}"; do
        local ready=0
        for _ in $(seq 300); do
            if grep -q "ringbroker ready" "$data/node-$n.log" 2>/dev/null; then
                ready=1
                break
            fi
            if ! kill -0 "$(cat "$data/node-$n.pid")" 2>/dev/null; then
                break
            fi
            sleep 0.1
        done
        if [[ $ready != 1 ]]; then
            echo "cluster.sh: node $n did not start; its log ($data/node-$n.log) ends:" >&2
            tail -5 "$data/node-$n.log" >&2 || true
            stop >/dev/null
            exit 1
        fi
    done
    # Listening is not serving: each broker first registers with the quorum and is unfenced
    # once caught up; until then Metadata lists no brokers. Wait for all three (bounded).
    for n in "${nodes[@]}"; do
        for _ in $(seq 300); do
            grep -q "unfenced: serving" "$data/node-$n.log" 2>/dev/null && break
            sleep 0.1
        done
        grep -q "unfenced: serving" "$data/node-$n.log" 2>/dev/null ||
            echo "cluster.sh: node $n has not joined the quorum yet (see $data/node-$n.log)" >&2
    done
    local bootstrap=""
    for n in "${nodes[@]}"; do bootstrap+="${bootstrap:+,}127.0.0.1:$(client_port "$n")"; done
    echo "cluster of 3 nodes running (logs: $data/node-N.log)"
    echo "bootstrap servers: $bootstrap"
}

case $cmd in
start) start ;;
stop) stop ;;
*)
    echo "usage: $0 start|stop" >&2
    exit 2
    ;;
esac
