#!/usr/bin/env bash
# Compares shardcast with peer WebSocket servers, scenario by scenario, on
# this machine: each server on one CPU (taskset -c 1), the loadgen on the
# other (taskset -c 0, --cores 1), a fresh server for every run.
#
# usage: scripts/compare.sh [--servers "shardcast bun tokio node-ws"]
#            [--rounds N] [--scenarios "fanout-100 fanout-1 ..."] [--smoke]
#            [--out DIR] [--port N] [--quiet-wait SECS] [--skip-build]
#            (--skip-build: neither cargo build nor loadgen/peers/setup.sh)
#            [--start PATH] [--syscalls]
#            (--syscalls: in the fanout and echo scenarios, also count the
#            server's system calls, io_uring_enter calls and io_uring
#            submissions per delivery or round trip over the measured
#            window, with perf stat attached to the server (loadgen
#            --server-syscalls; needs Debian's linux-perf). Counting costs
#            the server CPU: take CPU figures from a run without it.)
#
# Scenarios (full size; --smoke runs each with tiny counts):
#   fanout-100       10,000 subscribers over 100 topics, 10 publishers taking
#                    the topics in turn; closed loop, <= 40,000 deliveries
#                    outstanding, one publish per write once >= 100 are free;
#                    2 s warm-up, 10 s measured
#   fanout-1         the same, all 10,000 on one topic, 4 publishers
#   fanout-fixed     10,000 subscribers over 100 topics, 500 publishes/s in
#                    all from 10 phase-staggered publishers: latency
#   echo             100 connections, strict ping-pong of
#                    {"type":"echo","payload":"<32 characters>"}, 10 s
#   shootout         websocket-shootout broadcast: 1k, 2k, 5k, 10k, 15k, 19k
#                    clients, 4 broadcasts in flight, 100 per step
#   idle             19,000 idle connections: connects/s, RSS/connection
#   idle-subscribed  the same, each subscribed to one of 100 topics
#   fanout-deflate   fanout-100 with 1 KiB JSON messages and every client
#                    negotiating permessage-deflate (servers NAME-deflate:
#                    shardcast --compression shared, Bun's shared
#                    compressor, ws's per-connection zlib; tokio is left
#                    out, tokio-tungstenite has no compression); adds bytes
#                    on the wire per delivery, and for shardcast the
#                    compressions per publish read from its /metrics
#   idle-deflate     19,000 idle connections with permessage-deflate
#                    negotiated: RSS/connection
#   fanout-history   fanout-100 against shardcast with history on its
#                    topics (start.sh shardcast-history), beside fanout-100:
#                    what the home-core hop and the offsets cost (shardcast
#                    only; the peers have no history)
#
# Servers are started by loadgen/peers/start.sh NAME PORT (--start; in the
# foreground; its PID is the server's). shardcast's echo and shootout runs
# use NAME shardcast-shootout: the shardcast server binary speaks its own
# JSON protocol, not the websocket-shootout's, so those two run
# examples/shootout (the engine with a shootout handler). Server
# shardcast-async is the same protocol written in the async style
# (examples/async_echo, one session task per connection): run it in the
# echo, shootout and idle scenarios, e.g. --servers "shardcast
# shardcast-async bun tokio" --scenarios "echo shootout idle" (its idle
# figure compares with shardcast's idle run, which is the server binary's
# callbacks). Each server is stopped by its PID.
#
# Order: within a round, the servers take turns scenario by scenario, and
# the order of the servers rotates from round to round, so the machine's
# drift hits every server alike. Every run holds /tmp/shardcast-bench.lock
# (flock: one benchmark at a time on this machine), then waits (at most
# --quiet-wait seconds, default 5; 0 with --smoke) until the machine is
# >= 90 % idle over 1 s, and records the idle share it saw; the loadgen
# reports the other processes' CPU during the measurement too.
#
# Results (--out, default loadgen/results/compare-<UTC time>/):
#   runs.jsonl      one line per run: {"scenario", "server", "round",
#                   "order", "served_by", "idle_pct_before", "lock_wait_secs",
#                   "quiet_wait_secs",
#                   "run_secs" (server start to stop), "exit",
#                   "result": the loadgen's JSON line (null if none)}
#   raw/R-SCENARIO-SERVER.json   the loadgen's JSON line as printed (R: round)
#   raw/R-SCENARIO-SERVER.err    the loadgen's stderr
#   raw/R-SCENARIO-SERVER.server.log   the server's output
#   summary.md      per scenario: median (min–max) of each figure per
#                   server, the ratio shardcast ÷ best peer, runs whose
#                   loadgen was saturated (†) or that other processes
#                   contended with (‡), failed runs
#   summary.json    the same figures as JSON
#   machine.txt     CPU, kernel, commit, command line, start and end times
#
# Time: about 85 s of runs per server per round at full size (3 fanout
# runs ~13 s each, echo ~12 s, shootout ~20 s, idle runs ~6 s each, server
# starts and stops), so the default 3 rounds x 4 servers take about 18
# minutes on a quiet machine and about 26 on a busy one (every run then
# waits the whole --quiet-wait), plus any wait for the lock. --smoke
# (1 round) takes about 10 s per server, 40 s for the four. Exits 1 when a
# run failed or lost, duplicated or reordered messages (the summary lists
# them).
set -euo pipefail
cd "$(dirname "$0")/.."

SERVERS="shardcast bun tokio node-ws"
ROUNDS=
SCENARIOS="fanout-100 fanout-1 fanout-fixed echo shootout idle idle-subscribed fanout-deflate idle-deflate fanout-history"
SMOKE=
OUT=
PORT_BASE=9500
QUIET_WAIT=
SKIP_BUILD=
SYSCALLS=
START=loadgen/peers/start.sh
while (($#)); do
    case "$1" in
    --servers) SERVERS=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --scenarios) SCENARIOS=$2; shift 2 ;;
    --smoke) SMOKE=1; shift ;;
    --out) OUT=$2; shift 2 ;;
    --port) PORT_BASE=$2; shift 2 ;;
    --quiet-wait) QUIET_WAIT=$2; shift 2 ;;
    --skip-build) SKIP_BUILD=1; shift ;;
    --syscalls) SYSCALLS=1; shift ;;
    --start) START=$2; shift 2 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "compare.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
ROUNDS=${ROUNDS:-$([[ -n $SMOKE ]] && echo 1 || echo 3)}
QUIET_WAIT=${QUIET_WAIT:-$([[ -n $SMOKE ]] && echo 0 || echo 5)}
# Seconds over which the machine's idle share is sampled.
SAMPLE=$([[ -n $SMOKE ]] && echo 0.3 || echo 1)
read -ra servers <<<"$SERVERS"
read -ra scenarios <<<"$SCENARIOS"
((${#servers[@]} > 0 && ${#scenarios[@]} > 0 && ROUNDS > 0)) || {
    echo "compare.sh: nothing to run" >&2
    exit 2
}

# The loadgen's arguments per scenario.
args_for() {
    local s=$1
    if [[ -n $SMOKE ]]; then
        local t=(--warmup 0.3 --duration 1)
        case $s in
        fanout-100) echo fanout -s 200 -t 20 -p 4 --max-outstanding 800 --min-free 20 "${t[@]}" ;;
        fanout-1) echo fanout -s 200 -t 1 -p 2 --max-outstanding 800 --min-free 20 "${t[@]}" ;;
        fanout-fixed) echo fanout -s 200 -t 20 -p 4 --rate 200 "${t[@]}" ;;
        echo) echo echo -n 10 --protocol shootout --payload 32 "${t[@]}" ;;
        shootout) echo broadcast --steps 50,100 --samples 20 --step-timeout 10 ;;
        idle) echo connections -n 200 --hold 0.3 --cleanup-timeout 10 ;;
        idle-subscribed) echo connections -n 200 --subscribe-topics 20 --hold 0.3 --cleanup-timeout 10 ;;
        fanout-deflate) echo fanout -s 200 -t 20 -p 4 --max-outstanding 800 --min-free 20 --payload 1024 --deflate "${t[@]}" ;;
        idle-deflate) echo connections -n 200 --hold 0.3 --cleanup-timeout 10 --deflate ;;
        fanout-history) echo fanout -s 200 -t 20 -p 4 --max-outstanding 800 --min-free 20 "${t[@]}" ;;
        *) return 1 ;;
        esac
        return 0
    fi
    local t=(--warmup 2 --duration 10)
    case $s in
    fanout-100) echo fanout -s 10000 -t 100 -p 10 --max-outstanding 40000 --min-free 100 "${t[@]}" ;;
    fanout-1) echo fanout -s 10000 -t 1 -p 4 --max-outstanding 40000 --min-free 100 "${t[@]}" ;;
    fanout-fixed) echo fanout -s 10000 -t 100 -p 10 --rate 500 "${t[@]}" ;;
    echo) echo echo -n 100 --protocol shootout --payload 32 "${t[@]}" ;;
    shootout) echo broadcast --steps 1000,2000,5000,10000,15000,19000 --in-flight 4 --samples 100 ;;
    idle) echo connections -n 19000 --hold 2 ;;
    idle-subscribed) echo connections -n 19000 --subscribe-topics 100 --hold 2 ;;
    fanout-deflate) echo fanout -s 10000 -t 100 -p 10 --max-outstanding 40000 --min-free 100 --payload 1024 --deflate "${t[@]}" ;;
    idle-deflate) echo connections -n 19000 --hold 2 --deflate ;;
    fanout-history) echo fanout -s 10000 -t 100 -p 10 --max-outstanding 40000 --min-free 100 "${t[@]}" ;;
    *) return 1 ;;
    esac
}

for s in "${scenarios[@]}"; do
    args_for "$s" >/dev/null || {
        echo "compare.sh: unknown scenario $s" >&2
        exit 2
    }
done

BIN=${CARGO_TARGET_DIR:-target}/release
if [[ -z $SKIP_BUILD ]]; then
    cargo build --release --locked -p loadgen -p shardcast --bins --example shootout --example async_echo
    # The peers (npm ci for Bun and Node ws, the tokio peer's release
    # build); quick when they are already there.
    if [[ " $SERVERS " != " shardcast " ]]; then
        bash loadgen/peers/setup.sh
    fi
fi
# start.sh finds the builds through CARGO_TARGET_DIR, relative to the root.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
if [[ ! -x $START ]]; then
    echo "compare.sh: $START is missing or not executable" >&2
    exit 2
fi

STAMP=$(date -u +%Y-%m-%dT%H%M%SZ)
OUT=${OUT:-loadgen/results/compare-$STAMP}
mkdir -p "$OUT/raw"
RUNS=$OUT/runs.jsonl
: >"$RUNS"
T0=$(date +%s)
{
    echo "started: $(date -u +%FT%TZ)"
    echo "command: $0 --servers \"$SERVERS\" --rounds $ROUNDS --scenarios \"$SCENARIOS\"${SMOKE:+ --smoke}${SYSCALLS:+ --syscalls} --start $START"
    echo "cpu: $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) CPUs; kernel $(uname -r)"
    echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (modified)')"
    echo "server CPU: 1 (taskset -c 1); loadgen CPU: 0 (taskset -c 0, --cores 1)"
} >"$OUT/machine.txt"

SERVER_PID=
stop_server() {
    [[ -n $SERVER_PID ]] || return 0
    kill "$SERVER_PID" 2>/dev/null || true
    # Bounded: 5 s for a graceful stop, then SIGKILL.
    for _ in $(seq 50); do
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.1
    done
    kill -9 "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=
}
trap stop_server EXIT
trap 'exit 130' INT TERM

answers() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# The start.sh name serving SCENARIO for SERVER.
start_name() {
    local server=$1 scenario=$2
    if [[ $server == shardcast && ($scenario == echo || $scenario == shootout) ]]; then
        echo shardcast-shootout
    elif [[ $server == shardcast-direct && ($scenario == echo || $scenario == shootout) ]]; then
        echo shardcast-shootout-direct
    elif [[ $server == shardcast-readiness && ($scenario == echo || $scenario == shootout) ]]; then
        echo shardcast-shootout-readiness
    elif [[ $scenario == *-deflate ]]; then
        echo "$server-deflate"
    elif [[ $scenario == fanout-history ]]; then
        echo "$server-history"
    else
        echo "$server"
    fi
}

# Whether SERVER can run SCENARIO (tokio-tungstenite has no compression;
# only shardcast has history; shardcast-async speaks the shootout's echo
# and broadcast only; shardcast-direct and shardcast-readiness, shardcast
# forced onto one io_uring data path, run the scenarios without
# compression or history).
runs() {
    case $1 in
    shardcast-async) [[ $2 == echo || $2 == shootout || $2 == idle ]] ;;
    shardcast-direct | shardcast-readiness) [[ $2 != *-deflate && $2 != fanout-history ]] ;;
    *) [[ ! ($1 == tokio && $2 == *-deflate) && ! ($1 != shardcast && $2 == fanout-history) ]] ;;
    esac
}

# shardcast's write and compression counters, as JSON, from its /metrics on
# PORT (whole run: warm-up and measurement).
shardcast_metrics() {
    python3 - "$1" <<'PY' 2>/dev/null || echo null
import json, sys, urllib.request
text = urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/metrics", timeout=5).read().decode()
def total(name):
    return sum(float(l.split()[-1]) for l in text.splitlines() if l.startswith(name + "{") or l.startswith(name + " "))
print(json.dumps({"compressions": total("shardcast_compressions_total"), "publishes": total("shardcast_publishes_total"),
                  "messages_out_compressed": total("shardcast_messages_out_compressed_total"),
                  "socket_writes": total("shardcast_socket_writes_total"),
                  "frames_written": total("shardcast_frames_written_total"),
                  "bytes_out": total("shardcast_bytes_out_total")}))
PY
}

# Busy and total jiffies of the machine, from the cpu line of /proc/stat.
jiffies() { awk '/^cpu /{ idle=$5+$6; t=0; for(i=2;i<=9;i++) t+=$i; print t-idle, t; exit }' /proc/stat; }

# Waits until the machine is >= 90 % idle over SAMPLE seconds, at most
# QUIET_WAIT seconds; sets IDLE_PCT (last sample) and WAITED (seconds).
wait_quiet() {
    local start b0 t0 b1 t1
    start=$(date +%s.%N)
    while :; do
        read -r b0 t0 < <(jiffies)
        sleep "$SAMPLE"
        read -r b1 t1 < <(jiffies)
        IDLE_PCT=$(awk -v b="$((b1 - b0))" -v t="$((t1 - t0))" 'BEGIN{ printf "%.1f", (t > 0 ? 100 * (1 - b / t) : 100) }')
        WAITED=$(awk -v s="$start" -v n="$(date +%s.%N)" 'BEGIN{ printf "%.1f", n-s }')
        awk -v i="$IDLE_PCT" 'BEGIN{ exit !(i >= 90) }' && return 0
        awk -v w="$WAITED" -v m="$QUIET_WAIT" 'BEGIN{ exit !(w >= m) }' && return 0
    done
}

RUN_NO=0
# run_one ROUND ORDER SCENARIO SERVER: one run under the lock, one line in RUNS.
run_one() {
    local round=$1 order=$2 scenario=$3 server=$4
    local name="$round-$scenario-$server" port served rc=0 deadline
    port=$((PORT_BASE + RUN_NO % 50))
    RUN_NO=$((RUN_NO + 1))
    served=$(start_name "$server" "$scenario")
    read -ra largs <<<"$(args_for "$scenario")"
    if [[ -n $SYSCALLS && ($scenario == fanout* || $scenario == echo) ]]; then
        largs+=(--server-syscalls)
    fi
    # Wait (bounded) for a server stopped a moment ago to let go of the port:
    # with SO_REUSEPORT a second server would share it silently.
    for _ in $(seq 50); do
        answers "$port" || break
        sleep 0.1
    done
    if answers "$port"; then
        echo "compare.sh: port $port is taken; use --port" >&2
        return 1
    fi
    local t_start=$SECONDS
    taskset -c 1 "$START" "$served" "$port" >"$OUT/raw/$name.server.log" 2>&1 &
    SERVER_PID=$!
    deadline=$((SECONDS + 30))
    until answers "$port"; do
        if ! kill -0 "$SERVER_PID" 2>/dev/null || ((SECONDS >= deadline)); then
            echo "!! $name: the server did not start (see $OUT/raw/$name.server.log)" >&2
            stop_server
            rc=125
            break
        fi
        sleep 0.1
    done
    IDLE_PCT=null WAITED=0 metrics=null
    if ((rc == 0)); then
        wait_quiet
        echo "== round $round: $scenario / $server (machine ${IDLE_PCT}% idle)" >&2
        timeout 600 taskset -c 0 "$BIN/loadgen" "${largs[@]}" --url "ws://127.0.0.1:$port/" \
            --cores 1 --server-pid "$SERVER_PID" --label "$server" --json -q \
            >"$OUT/raw/$name.json" 2>"$OUT/raw/$name.err" || rc=$?
        metrics=null
        # The shardcast binary serves /metrics (examples/shootout does not).
        if [[ $served == shardcast* && $served != shardcast-shootout* ]]; then
            metrics=$(shardcast_metrics "$port")
        fi
        stop_server
    fi
    local result
    result=$(tail -n 1 "$OUT/raw/$name.json" 2>/dev/null || true)
    [[ $result == \{* ]] || result=null
    printf '{"scenario":"%s","server":"%s","round":%d,"order":%d,"served_by":"%s","idle_pct_before":%s,"lock_wait_secs":%d,"quiet_wait_secs":%s,"run_secs":%d,"exit":%d,"server_metrics":%s,"result":%s}\n' \
        "$scenario" "$server" "$round" "$order" "start.sh $served" \
        "$IDLE_PCT" "$LOCK_WAIT" "$WAITED" "$((SECONDS - t_start))" "$rc" "$metrics" "$result" >>"$RUNS"
    ((rc == 0)) || echo "!! $name failed (exit $rc; see $OUT/raw/$name.err)" >&2
}

exec 9>/tmp/shardcast-bench.lock
n=${#servers[@]}
for ((round = 1; round <= ROUNDS; round++)); do
    for ((si = 0; si < ${#scenarios[@]}; si++)); do
        # Rotate the servers' order by round and by scenario.
        for ((k = 0; k < n; k++)); do
            server=${servers[$(((k + round - 1 + si) % n))]}
            runs "$server" "${scenarios[$si]}" || continue
            lock_start=$SECONDS
            if ! flock -w 900 9; then
                echo "compare.sh: /tmp/shardcast-bench.lock stayed taken for 15 minutes" >&2
                exit 1
            fi
            LOCK_WAIT=$((SECONDS - lock_start))
            run_one "$round" "$k" "${scenarios[$si]}" "$server" || true
            flock -u 9
        done
    done
done

echo "ended: $(date -u +%FT%TZ) ($(($(date +%s) - T0)) s)" >>"$OUT/machine.txt"
status=0
python3 scripts/lib/compare_summary.py "$RUNS" "$OUT/summary.md" "$OUT/summary.json" || status=$?
cat "$OUT/summary.md"
echo "results: $OUT (took $(($(date +%s) - T0)) s)" >&2
exit "$status"
