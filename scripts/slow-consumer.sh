#!/usr/bin/env bash
# What one slow consumer costs the others, measured against the shardcast
# server: SUBSCRIBERS subscribers over TOPICS topics (one publisher per
# topic) receive a sustained fanout at a fixed rate; in the stall runs one
# subscriber stops reading (socket left open) STALL_AFTER seconds into the
# measurement. Three runs with the same parameters, each on a fresh server:
#   baseline        nobody stalls (server defaults: 1 MiB outbox, close)
#   stall, close    1 stalls; server default --slow-consumer close (1013)
#   stall, drop     1 stalls; server --slow-consumer drop
# The rate is RATE publishes/s (default 1500); RATE=auto measures the
# capacity first (a short closed-loop run with the same layout and payload)
# and uses LOAD (default 0.3) x that.
#
# Sizes, and why: a subscriber of 10,000 receives 1/10,000 of the traffic
# (~30 KB/s at the defaults), and the kernel holds ~3.5 MB of a stalled
# one's backlog (mostly the server's send buffer, which grows to 4 MiB;
# the subscriber's own receive buffer is fixed at STALL_RCVBUF) before the
# server's 1 MiB outbox for it even starts to fill. So data is 2 KiB and
# the stall lasts ~3 minutes: the close policy then acts ~2.5 minutes in.
# At 1 KiB and 60 s, or at the rate 0.3 x capacity gave under contention,
# the outbox limit was never reached. The servers run with
# --idle-timeout-secs 600 so that their idle timeout (120 s: a client that
# answers no ping is closed with 1001) cannot act first; all else is the
# default. Closed loop batches publishes: spread evenly at 0.6 x its
# capacity the server queued (p50 over 0.6 s, other jobs using ~1 of the 2
# cores), so the rate stays well below it.
#
# Prints, per run: deliveries/s, the healthy subscribers' latency (p50, p99,
# p99.9) and lost/duplicated/reordered (must be 0), what became of the
# stalled subscriber (the close code it read, or how many messages it
# missed), the server's slow-consumer counters from /metrics, and the
# server's RSS (at the start of the measurement, its maximum, the peak);
# then whether every healthy subscriber got everything. Exits 1 if not.
#
# Writes slow-consumer.json (one JSON line per run, with RSS timelines),
# metrics-<run>.txt, the server logs and the SVG charts (server_rss.svg
# comparing the runs, <label>_rss.svg, latency.svg) to OUT.
#
# Environment: SUBSCRIBERS (10000), TOPICS (100), PAYLOAD bytes of data per
# message (2048), RATE (1500, or auto), LOAD (0.3, for RATE=auto),
# WARMUP (2), DURATION seconds measured (180), STALL_AFTER (5), STALL_RCVBUF
# (65536; 0: the kernel's default), OUT (bench-results/slow-consumer-<UTC
# time>), PORT (9473), SERVER_CPUS (1), LOADGEN_CPUS (0), SKIP_BUILD=1 to
# reuse target/release. Takes about 10 minutes after the release build.
# Every server it starts is stopped by its PID on exit (trap).
set -euo pipefail
cd "$(dirname "$0")/.."

SUBSCRIBERS=${SUBSCRIBERS:-10000}
TOPICS=${TOPICS:-100}
PAYLOAD=${PAYLOAD:-2048}
RATE=${RATE:-1500}
LOAD=${LOAD:-0.3}
WARMUP=${WARMUP:-2}
DURATION=${DURATION:-180}
STALL_AFTER=${STALL_AFTER:-5}
STALL_RCVBUF=${STALL_RCVBUF:-65536}
PORT=${PORT:-9473}
SERVER_CPUS=${SERVER_CPUS:-1}
LOADGEN_CPUS=${LOADGEN_CPUS:-0}
OUT=${OUT:-bench-results/slow-consumer-$(date -u +%Y-%m-%dT%H%M%SZ)}

if [[ -z "${SKIP_BUILD:-}" ]]; then
    cargo build --release --locked -p shardcast -p loadgen --bins
fi
BIN=${CARGO_TARGET_DIR:-target}/release
mkdir -p "$OUT"
RESULTS=$OUT/slow-consumer.json
: >"$RESULTS"
# shellcheck source=lib/server.sh
source scripts/lib/server.sh
trap stop_server EXIT

# The server's counters, summed over cores: metric NAME FILE.
metric() { awk -v m="$1" '$1 == m || index($1, m "{") == 1 { s += $2 } END { print s + 0 }' "$2"; }

run() { # label, file tag, loadgen fanout arguments...
    local label=$1 tag=$2
    shift 2
    echo "== $label" >&2
    timeout 600 "${LOADGEN_PIN[@]}" "$BIN/loadgen" fanout --url "ws://127.0.0.1:$PORT/" \
        --cores "$LOADGEN_CORES" -s "$SUBSCRIBERS" -t "$TOPICS" -p "$TOPICS" \
        --payload "$PAYLOAD" --server-pid "$SERVER_PID" --label "$label" --json -q "$@" \
        >>"$RESULTS"
    curl -sf "http://127.0.0.1:$PORT/metrics" >"$OUT/metrics-$tag.txt" || : >"$OUT/metrics-$tag.txt"
}

if [[ $RATE == auto ]]; then
    start_server capacity-server --idle-timeout-secs 600
    run capacity capacity --duration 5 --warmup 1
    CAPACITY=$(tail -1 "$RESULTS" | grep -o '"publishes_per_sec":[0-9.]*' | cut -d: -f2)
    RATE=$(awk -v c="$CAPACITY" -v l="$LOAD" 'BEGIN { r = int(c * l); print (r < 1 ? 1 : r) }')
    echo "capacity: $CAPACITY publishes/s; rate: $RATE publishes/s ($LOAD x)" >&2
fi

COMMON=(--rate "$RATE" --warmup "$WARMUP" --duration "$DURATION" --drain-timeout 60)
start_server baseline-server --idle-timeout-secs 600
run "baseline" baseline "${COMMON[@]}"
start_server stall-close-server --idle-timeout-secs 600
STALL=(--stall 1 --stall-after "$STALL_AFTER" --stall-rcvbuf "$STALL_RCVBUF")
run "stall 1, close" stall-close "${COMMON[@]}" "${STALL[@]}"
start_server stall-drop-server --idle-timeout-secs 600 --slow-consumer drop
run "stall 1, drop" stall-drop "${COMMON[@]}" "${STALL[@]}"
stop_server
"$BIN/loadgen" plot "$RESULTS" --out "$OUT" >/dev/null

# A value from a JSON line: number, true/false, or string without quotes.
field() { grep -o "\"$2\":\(\"[^\"]*\"\|[^,}]*\)" <<<"$1" | head -1 | cut -d: -f2- | tr -d '"'; }
echo
echo "slow consumer: $SUBSCRIBERS subscribers, $TOPICS topics, $PAYLOAD B data, $RATE publishes/s," \
    "${DURATION} s measured, 1 subscriber stalls ${STALL_AFTER} s in, its SO_RCVBUF $STALL_RCVBUF ($OUT)"
ok=0
for tag in baseline stall-close stall-drop; do
    case $tag in
    baseline) label="baseline" ;;
    stall-close) label="stall 1, close" ;;
    stall-drop) label="stall 1, drop" ;;
    esac
    line=$(grep -F "\"label\":\"$label\"" "$RESULTS" | tail -1)
    m=$OUT/metrics-$tag.txt
    echo "-- $label"
    echo "   deliveries/s $(field "$line" deliveries_per_sec); healthy p50 $(field "$line" latency_p50_us) us," \
        "p99 $(field "$line" latency_p99_us) us, p99.9 $(field "$line" 'latency_p99\.9_us') us," \
        "max $(field "$line" latency_max_us) us"
    echo "   healthy lost/dup/reordered $(field "$line" lost)/$(field "$line" duplicated)/$(field "$line" reordered)," \
        "connections lost $(field "$line" connections_lost), correct $(field "$line" correct)"
    if [[ $tag != baseline ]]; then
        echo "   stalled: $(field "$line" stalled_outcomes); missed $(field "$line" stalled_missed)" \
            "(dup $(field "$line" stalled_duplicated), reordered $(field "$line" stalled_reordered))"
    fi
    echo "   server: slow-consumer closes $(metric shardcast_slow_consumer_closes_total "$m")," \
        "messages dropped $(metric shardcast_dropped_total "$m")"
    echo "   server RSS KiB: measure start $(field "$line" server_rss_measure_start_kib)," \
        "measure max $(field "$line" server_rss_measure_max_kib), peak $(field "$line" server_rss_peak_kib)"
    echo "   CPU: loadgen $(field "$line" loadgen_cpu_cores_used), server $(field "$line" server_cpu_cores_used)," \
        "others $(field "$line" other_processes_cpu_cores_used) cores"
    [[ "$(field "$line" correct)" == true && "$(field "$line" connections_lost)" == 0 ]] || ok=1
done
if ((ok == 0)); then
    echo "healthy subscribers: nothing lost, duplicated or reordered in any run"
else
    echo "healthy subscribers: DELIVERY CHECK FAILED (see above)"
fi
exit "$ok"
