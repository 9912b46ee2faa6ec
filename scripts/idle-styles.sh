#!/usr/bin/env bash
# Memory per idle connection of the two embedding styles: examples/shootout
# (callbacks) and examples/async_echo (one async session per connection),
# the same protocol. Each server on CPU 1 with one core, the loadgen on
# CPU 0; `loadgen connections -n N --hold 2` reads the server's RSS with
# the connections held. Holds /tmp/shardcast-bench.lock while it runs.
# Prints one JSON line per run. About 10 s per run (3 rounds x 2 styles).
#
#   scripts/idle-styles.sh [N (default 19000)] [ROUNDS (default 3)]
#
# Needs: cargo build --release -p shardcast --example shootout --example async_echo; cargo build --release -p loadgen
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-19000}
rounds=${2:-3}
bin=${CARGO_TARGET_DIR:-target}/release
ulimit -n "$(ulimit -Hn)"
port=9611
exec 9>/tmp/shardcast-bench.lock
flock 9
for ((round = 1; round <= rounds; round++)); do
    for ex in shootout async_echo; do
        port=$((port + 1))
        taskset -c 1 "$bin/examples/$ex" --listen "127.0.0.1:$port" --cores 1 >/dev/null 2>&1 &
        pid=$!
        for _ in $(seq 50); do
            (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
            sleep 0.1
        done
        taskset -c 0 "$bin/loadgen" connections --url "ws://127.0.0.1:$port/" -n "$n" --hold 2 \
            --cores 1 --server-pid "$pid" --label "$ex" --json -q || true
        kill "$pid"
        wait "$pid" 2>/dev/null || true
    done
done
