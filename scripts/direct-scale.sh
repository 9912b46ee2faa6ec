#!/usr/bin/env bash
# The direct io_uring path at scale: one `shardcast --io-path direct`
# process (both CPUs, its open-file limit left at the machine's hard limit,
# 20,000 here) holds N WebSocket connections (default 100,000) opened by
# `loadgen connections` over several worker processes and 127.0.0.x source
# addresses, every one subscribed to one topic. With them held:
#   - a publish to that topic through POST /api/publish; its fanout
#     completion time is the time from the POST until the server's
#     shardcast_frames_written_total has grown by N (every frame written to
#     its socket), read from /metrics every 5 ms;
#   - the server's user RSS per connection (from the loadgen) and the
#     kernel's slab growth per connection (/proc/meminfo Slab);
# then ROUNDS more rounds of N connections opening, subscribing, being held
# and closing (churn). After each round: the server's RSS once it has
# settled (cores give memory back from their once-a-second trim, so the RSS
# is read every second until it has not fallen for 3 s, at most 20 s)
# beside the RSS of the fresh process before round 0 (`rss_fresh_kib`),
# then its connections (must be back to 0). The loadgen's own
# `server_rss_after_kib` is read the moment the last socket closed, before
# any trim. Sessions are off (SESSION_TTL=60 turns them on: each closed
# connection then leaves a kept session, about 730 B, for 60 s, which the
# RSS after a round holds).
# Holds /tmp/shardcast-bench.lock while it runs. Prints JSON lines; takes
# about 30 s a round at N = 100,000.
#
#   scripts/direct-scale.sh [N (default 100000)] [ROUNDS (default 5)]
#
# Needs: cargo build --release -p shardcast -p loadgen
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-100000}
rounds=${2:-5}
bin=${CARGO_TARGET_DIR:-target}/release
ulimit -n "$(ulimit -Hn)"
port=9671
exec 9>/tmp/shardcast-bench.lock
flock 9

"$bin/shardcast" --listen "127.0.0.1:$port" --io-path direct --max-connections-per-ip 0 \
    --publish-rate 0 --session-ttl "${SESSION_TTL:-0}" --log warn >/dev/null 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true' EXIT
for _ in $(seq 50); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
done

# A counter summed over its label sets (one per core).
metric() {
    curl -s "http://127.0.0.1:$port/metrics" |
        awk -v m="$1" '$1 == m || index($1, m "{") == 1 { s += $2 } END { printf "%d\n", s }'
}
healthz_connections() {
    curl -s "http://127.0.0.1:$port/healthz" | python3 -c 'import json,sys; print(json.load(sys.stdin)["connections"])'
}
slab_kib() { awk '$1 == "Slab:" { print $2 }' /proc/meminfo; }
rss_kib() { awk '$1 == "VmRSS:" { print $2 }' "/proc/$pid/status"; }
# The RSS once it has stopped falling: read every second until three reads
# in a row are no lower than the lowest so far (at most 20 s).
settled_rss_kib() {
    local low now still=0
    low=$(rss_kib)
    for _ in $(seq 20); do
        sleep 1
        now=$(rss_kib)
        if ((now < low)); then
            low=$now
            still=0
        else
            ((++still >= 3)) && break
        fi
    done
    echo "$low"
}

sleep 1 # the cores' first trim
rss_fresh=$(rss_kib)
echo "{\"server_pid\":$pid,\"rss_fresh_kib\":$rss_fresh,\"nofile\":$(ulimit -n),\"drivers\":\"$(curl -s "http://127.0.0.1:$port/metrics" | grep -o 'driver="[a-z_-]*"' | sort | uniq -c | tr -s ' ' | tr '\n' ';')\"}"

for ((round = 0; round <= rounds; round++)); do
    slab_before=$(slab_kib)
    hold=2
    ((round == 0)) && hold=20
    "$bin/loadgen" connections --url "ws://127.0.0.1:$port/" -n "$n" --subscribe-topics 1 \
        --hold "$hold" --connect-timeout 120 --cleanup-timeout 60 --server-pid "$pid" \
        --label "round-$round" --json -q >"/tmp/direct-scale-$round.json" &
    lg=$!
    if ((round == 0)); then
        # Wait until every connection is held, then publish once.
        for _ in $(seq 1200); do
            [[ $(healthz_connections) -ge $n ]] && break
            sleep 0.1
        done
        sleep 2 # the last subscriptions answered
        slab_held=$(slab_kib)
        before=$(metric shardcast_frames_written_total)
        t0=$(date +%s%N)
        delivered=$(curl -s -X POST -H 'Content-Type: application/json' \
            -d '{"topic":"t0","data":"to all"}' "http://127.0.0.1:$port/api/publish")
        while :; do
            now=$(metric shardcast_frames_written_total)
            ((now - before >= n)) && break
            (($(date +%s%N) - t0 > 30000000000)) && break
            sleep 0.005
        done
        t1=$(date +%s%N)
        echo "{\"publish\":$delivered,\"frames_written\":$((now - before)),\"fanout_completion_ms\":$(((t1 - t0) / 1000000)),\"kernel_slab_bytes_per_conn\":$(((slab_held - slab_before) * 1024 / n))}"
    fi
    wait "$lg" || true
    cat "/tmp/direct-scale-$round.json"
    settled=$(settled_rss_kib)
    echo "{\"round\":$round,\"connections_after\":$(healthz_connections),\"rss_settled_kib\":$settled,\"rss_fresh_kib\":$rss_fresh}"
done
