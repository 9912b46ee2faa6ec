#!/usr/bin/env bash
# Compares two builds of shardcast side by side: the same loadgen scenarios
# against the servers of build A and build B, alternating A, B, A, B so that
# drift in the machine's load hits both alike. For a change that must not
# cost performance (a refactor): build the old tree and the new one, copy
# each target/release (echo, pubsub, shardcast, loadgen) into a directory,
# and run
#     bash scripts/ab.sh DIR_A DIR_B
# Scenarios: fanout 10,000 subscribers over 100 topics (examples/pubsub),
# echo 100 connections ping-pong (examples/echo), 19,000 idle connections
# against the shardcast binary (user RSS per connection). Both builds are
# driven by build B's loadgen. Prints one table; the raw JSON lines go to
# bench-results/ab-<UTC date>.json. About 40 s per scenario and repeat
# (REPEAT, default 2; DURATION seconds per measurement, default 5).
set -euo pipefail
cd "$(dirname "$0")/.."
[[ $# -eq 2 ]] || { echo "usage: $0 DIR_A DIR_B" >&2; exit 2; }
A=$1 B=$2
SERVER_CPUS=${SERVER_CPUS:-1}
LOADGEN_CPUS=${LOADGEN_CPUS:-0}
DURATION=${DURATION:-5}
REPEAT=${REPEAT:-2}
PORT=${PORT:-9311}
OUT=bench-results
mkdir -p "$OUT"
RESULTS="$OUT/ab-$(date -u +%Y-%m-%dT%H%M%SZ).json"
: >"$RESULTS"

# shellcheck source=lib/server.sh
source scripts/lib/server.sh
trap stop_server EXIT

run() { # build label, server executable, server flags..., --, loadgen args...
    local build=$1 exe=$2
    shift 2
    local flags=()
    while [[ $1 != -- ]]; do flags+=("$1"); shift; done
    shift
    launch_server "ab.$build" "$exe" "${flags[@]}"
    run_loadgen "$B/loadgen" "$build" "$@"
    stop_server
}

for _ in $(seq "$REPEAT"); do
    for build in A B; do
        dir=$A; [[ $build == B ]] && dir=$B
        run "$build" "$dir/pubsub" -- fanout -s 10000 -t 100 --duration "$DURATION"
        run "$build" "$dir/echo" -- echo -n 100 --duration "$DURATION"
        run "$build" "$dir/shardcast" --publish-rate 0 --max-connections-per-ip 0 -- \
            connections -n 19000 --hold 2
    done
done

python3 - "$RESULTS" <<'EOF'
import json, sys, statistics as st
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
metrics = {
    "fanout": [("server_cpu_ns_per_delivery", "server CPU ns/delivery"),
               ("deliveries_per_sec", "deliveries/s"),
               ("loadgen_cpu_ns_per_delivery", "loadgen CPU ns/delivery")],
    "echo": [("server_cpu_ns_per_message", "server CPU ns/round trip"),
             ("messages_per_sec", "round trips/s"),
             ("loadgen_cpu_cores_used", "loadgen CPU cores")],
    "connections": [("server_rss_per_conn_bytes", "server RSS bytes/connection"),
                    ("handshakes_per_sec", "handshakes/s")],
}
print(f"{'scenario':<12} {'metric':<28} {'A (each run)':<26} {'B (each run)':<26} B/A")
for scen, ms in metrics.items():
    for key, name in ms:
        vals = {b: [r[key] for r in rows if r.get("scenario") == scen and r.get("label") == b and key in r]
                for b in "AB"}
        if not vals["A"] or not vals["B"]:
            continue
        a, b = st.median(vals["A"]), st.median(vals["B"])
        fa = ", ".join(f"{v:g}" for v in vals["A"])
        fb = ", ".join(f"{v:g}" for v in vals["B"])
        print(f"{scen:<12} {name:<28} {fa:<26} {fb:<26} {b / a if a else float('nan'):.3f}")
warn = sorted({w for r in rows for w in r.get("warnings", [])})
for w in warn:
    print("warning:", w)
EOF
echo "raw results: $RESULTS" >&2
