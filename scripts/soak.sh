#!/usr/bin/env bash
# Soak test of the shardcast server: many connections under sustained fanout
# for a long time, checking that no message is lost, duplicated or
# reordered and that the server's memory stays flat.
#
# 1. Starts the shardcast server (pinned to SERVER_CPUS) and measures its
#    fanout capacity: a closed-loop `loadgen fanout` run (CAPACITY_SECS) with
#    the soak's layout: CONNECTIONS in all, TOPICS topics, one publisher per
#    topic, the rest subscribers (subscriber i on topic i % TOPICS).
# 2. Restarts the server and runs `loadgen fanout --rate` at LOAD x that
#    capacity (publishes/s) for DURATION seconds: the first 20 % is warm-up,
#    the rest is measured. The loadgen (pinned to LOADGEN_CPUS) samples the
#    server's RSS every RSS_INTERVAL seconds.
# 3. Judges, printing each criterion and a closing `soak: N passed, M failed`:
#    - deliveries: the loadgen's sequence checks found 0 lost, 0 duplicated,
#      0 reordered, 0 misrouted, every delivery drained, and the server
#      closed no connection;
#    - memory flat after warm-up: the 95th percentile of the RSS samples in
#      the last fifth of the measurement (the last 80 % of the run) is at
#      most RSS_TOLERANCE (default 1.05) x the 95th percentile in its first
#      fifth. RSS under fanout swings with the bytes queued at each moment
#      (in quiet 19,000-connection runs between 25 and 35 MiB every few
#      seconds, with a rare burst to 40-43 MiB), so a single sample, or the
#      maximum of a window, judges that swing; a leak or a queue that keeps
#      growing raises the whole distribution, its 95th percentile with it.
#      The windows' maxima and medians and the least-squares slope over the
#      measurement are printed, not judged.
#    Exits 1 when a criterion fails (or a run does not complete).
# Writes capacity.json, soak.json (one JSON line each; soak.json holds the
# RSS timeline), the server logs and the SVG charts (<label>_rss.svg,
# latency.svg) to OUT.
#
# Options (flags, or the environment variables in capitals):
#   --duration SECS      DURATION, traffic time of the soak (default 600)
#   --connections N      CONNECTIONS, subscribers + publishers (default 19000;
#                        one loadgen process: under this machine's 20,000
#                        open files per process)
#   --topics T           TOPICS (default 100; also the number of publishers)
#   --load F             LOAD, fraction of the measured capacity (default 0.70)
#   --out DIR            OUT (default bench-results/soak-<UTC time>)
#   --short              the CI version, a smoke test: 200 connections over
#                        10 topics, 10 s at LOAD 0.5, a 2 s capacity run,
#                        debug binaries, RSS_TOLERANCE 1.5 (10 s of a debug
#                        build cannot show a small leak, only a gross one)
#   PROFILE=release|debug  binaries to use (default release; --short: debug).
#                        The script builds them first unless SKIP_BUILD=1.
#   SERVER_CPUS (default 1), LOADGEN_CPUS (default 0): taskset CPU lists,
#   ignored on a machine with fewer than 2 CPUs. PORT (default 9471),
#   CAPACITY_SECS (default 5), RSS_INTERVAL (default 1; --short 0.25),
#   RSS_TOLERANCE (default 1.05).
# Takes DURATION + about 30 s (the default: about 11 minutes) after the
# build; --short about 25 s. Every server it starts is stopped by its PID on
# exit (trap); every loadgen run is bounded by `timeout`.
set -euo pipefail
cd "$(dirname "$0")/.."

SHORT=0
while [[ $# -gt 0 ]]; do
    case "$1" in
    --duration) DURATION=$2; shift 2 ;;
    --connections) CONNECTIONS=$2; shift 2 ;;
    --topics) TOPICS=$2; shift 2 ;;
    --load) LOAD=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --short) SHORT=1; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "soak.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
if [[ $SHORT == 1 ]]; then
    DURATION=${DURATION:-10} CONNECTIONS=${CONNECTIONS:-200} TOPICS=${TOPICS:-10}
    CAPACITY_SECS=${CAPACITY_SECS:-2} RSS_INTERVAL=${RSS_INTERVAL:-0.25} PROFILE=${PROFILE:-debug}
    LOAD=${LOAD:-0.5} RSS_TOLERANCE=${RSS_TOLERANCE:-1.5}
fi
DURATION=${DURATION:-600}
CONNECTIONS=${CONNECTIONS:-19000}
TOPICS=${TOPICS:-100}
LOAD=${LOAD:-0.70}
PROFILE=${PROFILE:-release}
CAPACITY_SECS=${CAPACITY_SECS:-5}
RSS_INTERVAL=${RSS_INTERVAL:-1}
RSS_TOLERANCE=${RSS_TOLERANCE:-1.05}
PORT=${PORT:-9471}
SERVER_CPUS=${SERVER_CPUS:-1}
LOADGEN_CPUS=${LOADGEN_CPUS:-0}
OUT=${OUT:-bench-results/soak-$(date -u +%Y-%m-%dT%H%M%SZ)}
SUBSCRIBERS=$((CONNECTIONS - TOPICS))
if ((SUBSCRIBERS < TOPICS)); then
    echo "soak.sh: --connections must be at least twice --topics" >&2
    exit 2
fi

if [[ -z "${SKIP_BUILD:-}" ]]; then
    if [[ $PROFILE == release ]]; then
        cargo build --release --locked -p shardcast -p loadgen --bins
    else
        cargo build --locked -p shardcast -p loadgen --bins
    fi
fi
BIN=${CARGO_TARGET_DIR:-target}/$PROFILE
mkdir -p "$OUT"

# shellcheck source=lib/server.sh
source scripts/lib/server.sh
VERDICT=0
on_exit() {
    local rc=$?
    stop_server
    # Whatever stopped the script, scripts/test.sh sees one failed soak.
    if [[ $VERDICT == 0 && $rc != 0 ]]; then echo "soak: 0 passed, 1 failed"; fi
}
trap on_exit EXIT

# A number from a one-line JSON result (no jq needed): field FILE KEY.
field() { grep -o "\"$2\":[^,}]*" "$1" | head -1 | cut -d: -f2 | tr -d '"'; }

loadgen() { # label, timeout seconds, output file, loadgen fanout arguments...
    local label=$1 limit=$2 out=$3
    shift 3
    if ! timeout "$limit" "${LOADGEN_PIN[@]}" "$BIN/loadgen" fanout --url "ws://127.0.0.1:$PORT/" \
        --cores "$LOADGEN_CORES" -s "$SUBSCRIBERS" -t "$TOPICS" -p "$TOPICS" \
        --server-pid "$SERVER_PID" --label "$label" --json -q "$@" >"$out"; then
        echo "soak.sh: the $label run failed" >&2
        exit 1
    fi
}

echo "== capacity: closed loop, $SUBSCRIBERS subscribers, $TOPICS topics, $TOPICS publishers, ${CAPACITY_SECS} s" >&2
start_server capacity-server
loadgen capacity $((CAPACITY_SECS + 120)) "$OUT/capacity.json" --duration "$CAPACITY_SECS" --warmup 1
CAPACITY=$(field "$OUT/capacity.json" publishes_per_sec)
RATE=$(awk -v c="$CAPACITY" -v l="$LOAD" 'BEGIN { r = int(c * l); print (r < 1 ? 1 : r) }')
echo "capacity: $CAPACITY publishes/s ($(field "$OUT/capacity.json" deliveries_per_sec) deliveries/s);" \
    "others used $(field "$OUT/capacity.json" other_processes_cpu_cores_used) cores" >&2

WARMUP=$(awk -v d="$DURATION" 'BEGIN { print d * 0.2 }')
MEASURE=$(awk -v d="$DURATION" 'BEGIN { print d * 0.8 }')
echo "== soak: $RATE publishes/s ($LOAD x capacity) for $DURATION s ($WARMUP s warm-up)" >&2
start_server soak-server
loadgen soak $((DURATION + 180)) "$OUT/soak.json" --rate "$RATE" --warmup "$WARMUP" \
    --duration "$MEASURE" --drain-timeout 30 --rss-interval "$RSS_INTERVAL"
ALIVE=yes
kill -0 "$SERVER_PID" 2>/dev/null || ALIVE=no
stop_server
"$BIN/loadgen" plot "$OUT/soak.json" --out "$OUT" >/dev/null

S=$OUT/soak.json
f() { field "$S" "$1"; }
RSS0=$(f server_rss_measure_start_kib)
RSSMAX=$(f server_rss_measure_max_kib)
RSSEND=$(f server_rss_measure_end_kib)
# RSS in the first and the last fifth of the measurement: 95th percentile,
# maximum and median of each.
read -r FIRST LAST FMAX LMAX FMED LMED < <(python3 - "$S" <<'PY'
import json, sys
r = json.loads(open(sys.argv[1]).read().splitlines()[-1])
marks = r.get("server_rss_marks", {})
a, b = marks.get("measure"), marks.get("drain")
pts = r.get("server_rss_timeline", [])
if a is None or b is None or not pts:
    print("0 0 0 0 0 0")
    sys.exit()
w = (b - a) / 5
first = sorted(p[1] for p in pts if a <= p[0] <= a + w) or [0]
last = sorted(p[1] for p in pts if b - w <= p[0] <= b) or [0]
def q(v, f):
    return v[min(len(v) - 1, int(f * len(v)))]
print(q(first, 0.95), q(last, 0.95), first[-1], last[-1], q(first, 0.5), q(last, 0.5))
PY
)
LIMIT=$(awk -v a="$FIRST" -v t="$RSS_TOLERANCE" 'BEGIN { printf "%d", a * t }')
cat <<EOF
soak results ($OUT)
  connections        $CONNECTIONS ($SUBSCRIBERS subscribers, $TOPICS topics, $TOPICS publishers)
  capacity           $CAPACITY publishes/s (closed loop, ${CAPACITY_SECS} s)
  rate               $(f publishes_per_sec) publishes/s measured ($RATE asked, $LOAD x capacity)
  deliveries/s       $(f deliveries_per_sec); received $(f deliveries_received) of $(f deliveries_expected)
  latency            p50 $(f latency_p50_us) us, p99 $(f latency_p99_us) us, p99.9 $(f latency_p99.9_us) us, max $(f latency_max_us) us
  lost/dup/reordered $(f lost) / $(f duplicated) / $(f reordered); misrouted $(f misrouted); connections lost $(f connections_lost)
  server RSS         first $(f server_rss_first_kib) KiB, warm-up end $RSS0 KiB, max after warm-up $RSSMAX KiB, end $RSSEND KiB, peak (HWM) $(f server_rss_hwm_kib) KiB
  RSS windows        first / last fifth of the measurement: p95 $FIRST / $LAST KiB, max $FMAX / $LMAX KiB, median $FMED / $LMED KiB
  RSS slope          $(f server_rss_measure_slope_kib_per_min) KiB/min over the measurement
  CPU                loadgen $(f loadgen_cpu_cores_used) cores, server $(f server_cpu_cores_used) cores, others $(f other_processes_cpu_cores_used) cores
EOF

FAILED=0
judge() { # name, 0|1, detail
    if [[ $2 == 0 ]]; then
        echo "  PASS  $1: $3"
    else
        echo "  FAIL  $1: $3"
        FAILED=$((FAILED + 1))
    fi
}
ok=1
[[ "$(f correct)" == true && "$(f lost)" == 0 && "$(f duplicated)" == 0 && "$(f reordered)" == 0 &&
    "$(f connections_lost)" == 0 && $ALIVE == yes ]] && ok=0
judge deliveries $ok "0 lost, duplicated, reordered and misrouted, all drained, no connection closed, server alive ($(f lost)/$(f duplicated)/$(f reordered), correct=$(f correct), alive=$ALIVE)"
ok=1
((FIRST > 0 && LAST > 0 && LAST <= LIMIT)) && ok=0
judge "RSS flat" $ok "p95 of the last fifth $LAST KiB <= $RSS_TOLERANCE x p95 of the first fifth $FIRST KiB = $LIMIT KiB"
# One line in the form scripts/test.sh adds up: the soak counts as one test.
VERDICT=1
if ((FAILED == 0)); then
    echo "soak: 1 passed, 0 failed"
else
    echo "soak: 0 passed, 1 failed"
    exit 1
fi
