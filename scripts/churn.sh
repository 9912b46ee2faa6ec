#!/usr/bin/env bash
# Connection churn: does the shardcast server give everything back?
#
# Starts the shardcast server binary, then runs `loadgen churn`: ROUNDS rounds
# of CONNECTIONS connections, each subscribing to 1-8 random topics out of
# 100,000 and waiting for every acknowledgement; the server's /metrics must
# show every subscription registered; then all close (10% with a TCP reset
# instead of the closing handshake). After every round the server must report
# 0 connections, topics, subscriptions and timer entries, its table
# capacities back to their values before the first connection, and an RSS
# within 5% of its RSS after round 1. Prints the per-round table and PASS or
# FAIL; exits 1 on FAIL.
#
# Options:
#   --short     300 connections, 3 rounds (CI; about 15 s after the build)
# Environment:
#   PROFILE=release|debug   binaries to use (default release; debug is what
#                           `cargo test` builds already, for CI)
#   CONNECTIONS, ROUNDS     override the counts (default 19,000 and 10:
#                           about 1-2 minutes after the release build)
#   SERVER_CPUS, LOADGEN_CPUS  taskset CPU lists (default 1 and 0)
#   PORT (default 9331), OUT (directory for the JSON line and the table;
#   default: none kept), SKIP_BUILD=1 to use the binaries as they are.
set -euo pipefail
cd "$(dirname "$0")/.."

CONNECTIONS=${CONNECTIONS:-19000}
ROUNDS=${ROUNDS:-10}
if [[ "${1:-}" == --short ]]; then
    CONNECTIONS=${SHORT_CONNECTIONS:-300}
    ROUNDS=${SHORT_ROUNDS:-3}
fi
PROFILE=${PROFILE:-release}
if [[ $(nproc) -ge 2 ]]; then
    SERVER_CPUS=${SERVER_CPUS:-1} LOADGEN_CPUS=${LOADGEN_CPUS:-0}
else
    SERVER_CPUS=${SERVER_CPUS:-0} LOADGEN_CPUS=${LOADGEN_CPUS:-0}
fi
PORT=${PORT:-9331}
BIN=${CARGO_TARGET_DIR:-target}/$PROFILE

if [[ -z "${SKIP_BUILD:-}" ]]; then
    flags=(--locked -p shardcast --bin shardcast -p loadgen --bin loadgen)
    [[ "$PROFILE" == release ]] && flags+=(--release)
    cargo build "${flags[@]}"
fi

work=$(mktemp -d)
SERVER_PID=
cleanup() {
    if [[ -n "$SERVER_PID" ]]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

# One core for the server, one for the loadgen (where the machine has two);
# no per-address connection cap: the loadgen uses few source addresses.
taskset -c "$SERVER_CPUS" "$BIN/shardcast" --listen "127.0.0.1:$PORT" --cores 1 \
    --max-connections-per-ip 0 --stats-interval-ms 0 >"$work/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then break; fi
    sleep 0.1
done

status=0
timeout 900 taskset -c "$LOADGEN_CPUS" "$BIN/loadgen" churn --url "ws://127.0.0.1:$PORT/" \
    --cores 1 -n "$CONNECTIONS" --rounds "$ROUNDS" --server-pid "$SERVER_PID" --json -q \
    >"$work/churn.json" || status=$?

table() {
    python3 - "$work/churn.json" <<'EOF'
import json, sys
lines = [l for l in open(sys.argv[1]) if l.strip()]
if not lines:
    print("no result"); sys.exit(0)
r = json.loads(lines[-1])
print(f"churn: {r['connections']} connections x {r['rounds']} rounds, "
      f"topics {r['topics_per_connection']} of {r['topic_space']}, "
      f"{r['reset_fraction']:.0%} reset, seed {r['seed']}, driver {r['driver']}")
print(f"server RSS before any connection: {r.get('rss_before_kib', '?')} KiB "
      f"(anon {r.get('rss_before_anon_kib', '?')}, file {r.get('rss_before_file_kib', '?')}); "
      f"after round 1: {r.get('rss_after_round1_kib', '?')} KiB (the baseline for rounds 2+)")
print(f"capacities before any connection: {json.dumps(r['baseline_capacities'])}")
cols = [("round", "round"), ("subs", "expected_subscriptions"),
        ("peak topics", "peak_registry_topics"), ("peak subs", "peak_registry_subscriptions"),
        ("peak RSS KiB", "rss_peak_kib"), ("RSS KiB", "rss_kib"),
        ("anon KiB", "rss_anon_kib"), ("file KiB", "rss_file_kib"),
        ("conns", "slab_connections"), ("topics", "registry_topics"),
        ("subs after", "registry_subscriptions"), ("app subs", "app_subscriptions"),
        ("timers", "timer_entries"), ("slab cap", "slab_capacity"),
        ("index cap", "registry_index_capacity"), ("topic slots", "registry_topic_slots"),
        ("sub lists", "registry_subscriber_lists"), ("timer cap", "timer_capacity"),
        ("resets", "resets"), ("round s", "round_secs"), ("ok", "pass")]
print("| " + " | ".join(c for c, _ in cols) + " |")
print("|" + "---|" * len(cols))
for row in r["rounds_detail"]:
    print("| " + " | ".join(str(row.get(k, "-")) for _, k in cols) + " |")
for w in r.get("warnings", []):
    print(f"  {w}")
EOF
}
table | tee "$work/table.md"
if [[ -n "${OUT:-}" ]]; then
    mkdir -p "$OUT"
    cp "$work/churn.json" "$OUT/churn.json"
    cp "$work/table.md" "$OUT/churn.md"
fi
if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    echo "the server exited during the run:"
    tail -5 "$work/server.log"
    status=1
fi

if [[ $status -eq 0 ]]; then
    echo "PASS"
    echo "churn: 1 passed, 0 failed"
else
    echo "FAIL (loadgen exit $status)"
    echo "churn: 0 passed, 1 failed"
    exit 1
fi
