#!/usr/bin/env bash
# Measures fanout across nodes of a cluster, through NATS and through Redis,
# side by side with single-node fanout.
#
# For each broker (nats-server, redis-server, started here on loopback) it
# starts two shardcast nodes, A and B, sharing it, and runs the loadgen's
# fanout with its subscribers on B and its publishers on A (every delivery
# crosses the broker), then the reverse (subscribers on A, publishers on
# B). The baseline is the same load on one node without a broker
# (subscribers and publishers on B). Each run reports deliveries/s,
# latency percentiles and loss (the loadgen's fanout report), the CPU of
# the subscribers' node (server_cpu_*), and, over the same measurement
# window, the publishers' node's (publisher_node_cpu_*) and the broker's
# (broker_cpu_*).
#
# Writes bench-results/cluster-<UTC date>.json (one JSON line per run) and
# .md (tables). About 2 minutes after the release build. Every process it
# starts is stopped by its PID on exit.
#
# --smoke: toy counts on the debug binaries, a check that every run works
# and loses nothing (fails otherwise), not a measurement; about 30 s.
#
# Environment: SERVER_CPUS (taskset list for the nodes and the broker,
# default 1), LOADGEN_CPUS (default 0), DURATION seconds per measurement
# (default 5), SUBSCRIBERS (default 10000), TOPICS (default 100), RATE
# publishes/s (default 0: closed loop), DEFLATE=1 (nodes compress, shared,
# and the loadgen's subscribers require it), SKIP_BUILD=1 to reuse the
# binaries.
set -euo pipefail
cd "$(dirname "$0")/.."

SMOKE=0
[[ "${1:-}" == --smoke ]] && SMOKE=1
SERVER_CPUS=${SERVER_CPUS:-1}
LOADGEN_CPUS=${LOADGEN_CPUS:-0}
if ((SMOKE)); then
    DURATION=${DURATION:-0.5} SUBSCRIBERS=${SUBSCRIBERS:-50} TOPICS=${TOPICS:-5} RATE=${RATE:-200}
    PROFILE=debug
else
    DURATION=${DURATION:-5} SUBSCRIBERS=${SUBSCRIBERS:-10000} TOPICS=${TOPICS:-100} RATE=${RATE:-0}
    PROFILE=release
fi

find_broker() { # name: its path (Debian puts servers in /usr/sbin)
    command -v "$1" 2>/dev/null && return 0
    for d in /usr/sbin /usr/local/sbin; do
        [[ -x "$d/$1" ]] && { echo "$d/$1"; return 0; }
    done
    echo "$(basename "$0"): $1 not found: apt-get install -y nats-server redis-server" >&2
    exit 1
}
NATS=$(find_broker nats-server)
REDIS=$(find_broker redis-server)

if [[ -z "${SKIP_BUILD:-}" ]]; then
    if [[ $PROFILE == release ]]; then
        cargo build --release --locked -p loadgen -p shardcast --bins
    else
        cargo build --locked -p loadgen -p shardcast --bins
    fi
fi
BIN=${CARGO_TARGET_DIR:-target}/$PROFILE
STAMP=$(date -u +%Y-%m-%dT%H%M%SZ)
OUT=bench-results
((SMOKE)) && OUT=${CARGO_TARGET_DIR:-target}/cluster-smoke
mkdir -p "$OUT"
RESULTS="$OUT/cluster-$STAMP.json"
: >"$RESULTS"
LOGS="$OUT/cluster-$STAMP"
mkdir -p "$LOGS"

if (($(nproc) >= 2)); then
    SERVER_PIN=(taskset -c "$SERVER_CPUS") LOADGEN_PIN=(taskset -c "$LOADGEN_CPUS")
else
    SERVER_PIN=() LOADGEN_PIN=()
fi

PIDS=()
stop_all() {
    local p
    for p in "${PIDS[@]}"; do
        kill "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    PIDS=()
}
trap stop_all EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
answers() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() { # port what
    for _ in $(seq 100); do
        answers "$1" && return 0
        sleep 0.1
    done
    echo "$(basename "$0"): $2 did not start (logs in $LOGS)" >&2
    exit 1
}

BROKER_PID=
start_broker() { # nats|redis: sets BROKER_URL, BROKER_PID
    local port
    port=$(free_port)
    case $1 in
    nats) "${SERVER_PIN[@]}" "$NATS" -a 127.0.0.1 -p "$port" >"$LOGS/nats.log" 2>&1 & ;;
    redis) "${SERVER_PIN[@]}" "$REDIS" --port "$port" --bind 127.0.0.1 --save "" --appendonly no \
        >"$LOGS/redis.log" 2>&1 & ;;
    esac
    BROKER_PID=$!
    PIDS+=("$BROKER_PID")
    BROKER_URL="$1://127.0.0.1:$port"
    wait_port "$port" "$1"
}

NODE_PID= NODE_PORT=
start_node() { # log name, extra flags...: sets NODE_PID, NODE_PORT
    local name=$1
    shift
    NODE_PORT=$(free_port)
    local deflate=()
    [[ "${DEFLATE:-0}" == 1 ]] && deflate=(--compression shared)
    "${SERVER_PIN[@]}" "$BIN/shardcast" --listen "127.0.0.1:$NODE_PORT" --cores 1 \
        --publish-rate 0 --max-connections-per-ip 0 --log warn "${deflate[@]}" "$@" \
        >"$LOGS/$name.log" 2>&1 &
    NODE_PID=$!
    PIDS+=("$NODE_PID")
    wait_port "$NODE_PORT" "node $name"
}

failed=0
run() { # label, subscribers' port, subscribers' pid, publishers' port, [NAME=PID...]
    local label=$1 sport=$2 spid=$3 pport=$4
    shift 4
    local watch=()
    for w in "$@"; do watch+=(--watch-pid "$w"); done
    echo "== $label" >&2
    local extra=()
    ((RATE > 0)) && extra+=(--rate "$RATE")
    [[ "${DEFLATE:-0}" == 1 ]] && extra+=(--deflate)
    if ! timeout 300 "${LOADGEN_PIN[@]}" "$BIN/loadgen" fanout \
        --url "ws://127.0.0.1:$sport/ws" --publish-url "ws://127.0.0.1:$pport/ws" \
        -s "$SUBSCRIBERS" -t "$TOPICS" --duration "$DURATION" "${extra[@]}" "${watch[@]}" \
        --server-pid "$spid" --label "$label" --json -q >>"$RESULTS"; then
        echo "!! $label failed" >&2
        failed=1
    fi
}

# Single node: subscribers and publishers on one node, no broker.
start_node single
run "single node" "$NODE_PORT" "$NODE_PID" "$NODE_PORT"
stop_all

for broker in nats redis; do
    start_broker "$broker"
    start_node "$broker-a" --broker "$BROKER_URL"
    a_port=$NODE_PORT a_pid=$NODE_PID
    start_node "$broker-b" --broker "$BROKER_URL"
    b_port=$NODE_PORT b_pid=$NODE_PID
    run "$broker: subscribers on B, publishers on A" "$b_port" "$b_pid" "$a_port" \
        "publisher_node=$a_pid" "broker=$BROKER_PID"
    run "$broker: subscribers on A, publishers on B" "$a_port" "$a_pid" "$b_port" \
        "publisher_node=$b_pid" "broker=$BROKER_PID"
    stop_all
done

if ((SMOKE)); then
    # Every run present and correct (nothing lost, duplicated or reordered).
    runs=$(grep -c '"correct":true' "$RESULTS" || true)
    echo "cluster-bench --smoke: $runs of 5 runs correct" >&2
    ((runs == 5)) || failed=1
    exit "$failed"
fi
"$BIN/loadgen" plot "$RESULTS" --out "$OUT/cluster-$STAMP" --markdown "$OUT/cluster-$STAMP.md" >/dev/null
{
    echo
    echo "CPU of the other processes over each measurement:"
    echo
    python3 - "$RESULTS" <<'PY'
import json, sys
print("| run | broker CPU % | broker ns/delivery | publishers' node CPU % | publishers' node ns/delivery |")
print("|---|---|---|---|---|")
for line in open(sys.argv[1]):
    r = json.loads(line)
    g = lambda k: r.get(k, "")
    print(f"| {g('label')} | {g('broker_cpu_percent')} | {g('broker_cpu_ns_per_delivery')} "
          f"| {g('publisher_node_cpu_percent')} | {g('publisher_node_cpu_ns_per_delivery')} |")
PY
    echo
    echo "Hardware: $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) CPUs, kernel $(uname -r)"
    echo "Nodes and broker on CPUs $SERVER_CPUS, loadgen on $LOADGEN_CPUS; $("$NATS" --version), $("$REDIS" --version | cut -d' ' -f1-3)"
} >>"$OUT/cluster-$STAMP.md"
echo "results: $RESULTS, $OUT/cluster-$STAMP.md" >&2
exit "$failed"
