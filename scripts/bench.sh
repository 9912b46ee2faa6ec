#!/usr/bin/env bash
# Runs shardcast's standard benchmark suite on this machine and records it.
#
# Builds the release binaries, then for each scenario starts a server (an
# example, or the shardcast server binary) pinned to SERVER_CPUS and runs
# loadgen pinned to LOADGEN_CPUS:
#   connections  19,000 idle connections against examples/echo (RSS/connection, cleanup)
#   fanout       10,000 subscribers over 100 topics, and 10,000 on 1 topic, closed
#                loop; 10,000 over 100 topics at 500 publishes/s (examples/pubsub)
#   echo         100 connections ping-pong 64 B (examples/echo, examples/shootout)
#   broadcast    websocket-shootout steps up to the open-files ceiling (examples/shootout)
#   shardcast    the server binary: 19,000 idle connections and the three fanout runs
# Writes bench-results/<UTC date>.json (one JSON line per run), <date>.md
# (tables) and <date>/*.svg (plots). Takes about 4 minutes after the build
# (the release build itself takes several minutes). Every run is bounded in
# time and every server this script starts is stopped by its PID on exit.
#
# Environment: SERVER_CPUS (default 1), LOADGEN_CPUS (default 0),
# DURATION seconds per measurement (default 5), PORT (default 9301),
# SKIP_BUILD=1 to reuse target/release.
set -euo pipefail
cd "$(dirname "$0")/.."

SERVER_CPUS=${SERVER_CPUS:-1}
LOADGEN_CPUS=${LOADGEN_CPUS:-0}
DURATION=${DURATION:-5}
PORT=${PORT:-9301}

if [[ -z "${SKIP_BUILD:-}" ]]; then
    cargo build --release --locked -p loadgen -p shardcast --examples --bins
fi
BIN=${CARGO_TARGET_DIR:-target}/release
LOADAVG=$(cut -d' ' -f1-3 /proc/loadavg)
STAMP=$(date -u +%Y-%m-%dT%H%M%SZ)
OUT=bench-results
mkdir -p "$OUT"
RESULTS="$OUT/$STAMP.json"
: >"$RESULTS"

# shellcheck source=lib/server.sh
source scripts/lib/server.sh
trap stop_server EXIT

start_server() { # example name, or "shardcast" for the server binary
    if [[ "$1" == shardcast ]]; then
        # No per-connection publish rate limit and no per-IP connection cap:
        # the loadgen's publishers and connections are few addresses.
        launch_server "$STAMP.$1" "$BIN/shardcast" --publish-rate 0 --max-connections-per-ip 0
    else
        launch_server "$STAMP.$1" "$BIN/examples/$1"
    fi
}

run() { # label, loadgen arguments...
    local label=$1
    shift
    echo "== $label" >&2
    run_loadgen "$BIN/loadgen" "$label" "$@"
}

start_server echo
run "connections 19000 (echo)" connections -n 19000 --hold 2
start_server echo
run "echo 100c" echo -n 100 --duration "$DURATION"
start_server shootout
run "echo 100c (shootout)" echo -n 100 --protocol shootout --duration "$DURATION"

start_server pubsub
run "fanout 10000s/100t" fanout -s 10000 -t 100 --duration "$DURATION"
start_server pubsub
run "fanout 10000s/1t" fanout -s 10000 -t 1 --duration "$DURATION"
start_server pubsub
run "fanout 10000s/100t @500 pub/s" fanout -s 10000 -t 100 --rate 500 --duration "$DURATION"

start_server shardcast
run "shardcast: connections 19000" connections -n 19000 --hold 2
start_server shardcast
run "shardcast: fanout 10000s/100t" fanout -s 10000 -t 100 --duration "$DURATION"
start_server shardcast
run "shardcast: fanout 10000s/1t" fanout -s 10000 -t 1 --duration "$DURATION"
start_server shardcast
run "shardcast: fanout 10000s/100t @500 pub/s" fanout -s 10000 -t 100 --rate 500 --duration "$DURATION"

start_server shootout
run "broadcast (shootout)" broadcast --initial-clients 1000 --step 2000 --max-clients 19000
stop_server

"$BIN/loadgen" plot "$RESULTS" --out "$OUT/$STAMP" --markdown "$OUT/$STAMP.md" >/dev/null
{
    echo
    echo "Hardware: $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) CPUs, kernel $(uname -r)"
    echo "Server CPUs: $SERVER_CPUS, loadgen CPUs: $LOADGEN_CPUS; load average before the suite: $LOADAVG"
} >>"$OUT/$STAMP.md"
echo "results: $RESULTS, $OUT/$STAMP.md, $OUT/$STAMP/*.svg" >&2
