#!/usr/bin/env bash
# Checks that every peer server speaks what the loadgen scenarios need: for
# each one, short fanout, shootout echo, broadcast and connections runs,
# each of which must end with nothing lost, duplicated or reordered. Prints
# one PASS/FAIL line per peer and exits non-zero if any failed. Runs
# setup.sh and builds loadgen and shardcast first. Takes two to four
# minutes once built, more while another benchmark holds
# /tmp/shardcast-bench.lock (each loadgen run takes it).
#
#   loadgen/peers/smoke.sh [NAME...]     (default: shardcast bun tokio node-ws)
#   PORT=19400 loadgen/peers/smoke.sh    (the port the servers listen on)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
# Where cargo puts its builds (CARGO_TARGET_DIR, relative to the workspace).
target=${CARGO_TARGET_DIR:-target}
[[ $target == /* ]] || target=$root/$target
port=${PORT:-19400}
peers=("$@")
((${#peers[@]})) || peers=(shardcast bun tokio node-ws)
logs=$(mktemp -d /tmp/peers-smoke.XXXXXX)
loadgen=$target/release/loadgen
lock=/tmp/shardcast-bench.lock

say() { echo "smoke.sh: $*" >&2; }

"$here/setup.sh"
say "building loadgen and shardcast (release)"
(cd "$root" && cargo build --release --locked -p loadgen --bin loadgen >&2 &&
    cargo build --release --locked --bin shardcast --example shootout >&2)

# The server on one CPU and the loadgen on another, where there are two.
if (($(nproc) >= 2)); then
    server_pin=(taskset -c 1) loadgen_pin=(taskset -c 0)
else
    server_pin=() loadgen_pin=()
fi

port_answers() { (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; }

pid=
stop() {
    [[ -n $pid ]] || return 0
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    pid=
    # A stopped server's listening socket can outlive it for a moment
    # (shardcast's io_uring ring is torn down after the process exits).
    for _ in $(seq 50); do
        port_answers || return 0
        sleep 0.1
    done
}
trap stop EXIT

# start NAME: start.sh NAME in the background; pid is the server's own.
start() {
    if port_answers; then
        say "something already listens on 127.0.0.1:$port; set PORT"
        return 1
    fi
    "${server_pin[@]}" "$here/start.sh" "$1" "$port" >"$logs/$1.stdout" 2>>"$logs/$1.stderr" &
    pid=$!
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || break
        port_answers && return 0
        sleep 0.1
    done
    say "$1 did not start listening (see $logs/$1.stderr)"
    stop
    return 1
}

# check FILE SCENARIO: the loadgen's JSON line in FILE passes SCENARIO's
# checks; prints what failed.
check() {
    node - "$1" "$2" <<'JS'
const fs = require("fs");
const [file, scenario] = process.argv.slice(2);
let r;
try {
  r = JSON.parse(fs.readFileSync(file, "utf8").trim().split("\n").pop());
} catch (e) {
  console.log(`no JSON result (${e.message})`);
  process.exit(1);
}
const bad = [];
const want = (cond, what) => { if (!cond) bad.push(what); };
const zero = (...keys) => keys.forEach((k) => want(r[k] === 0, `${k}=${r[k]}`));
switch (scenario) {
  case "fanout":
    want(r.correct === true, "correct=false");
    want(r.deliveries_received > 0, "no deliveries");
    zero("lost", "duplicated", "reordered", "misrouted", "connections_lost");
    break;
  case "echo":
    want(r.correct === true, "correct=false");
    want(r.sent > 0, "nothing sent");
    zero("lost", "duplicated", "reordered", "other_messages", "connections_lost");
    break;
  case "broadcast":
    want(/^reached --max-clients/.test(r.stopped), `stopped: ${r.stopped}`);
    for (const s of r.steps || [])
      want(s.deliveries_received === s.deliveries_expected && s.round_trips > 0,
        `step ${s.clients}: ${s.deliveries_received}/${s.deliveries_expected} deliveries, ${s.round_trips} round trips`);
    want((r.steps || []).length > 0, "no steps");
    break;
  case "connections":
    want(r.upgraded === r.connections, `upgraded ${r.upgraded} of ${r.connections}`);
    zero("connect_failed", "upgrade_failed");
    want(r.server_sockets_held === r.connections, `server held ${r.server_sockets_held} sockets`);
    want(typeof r.server_cleanup_secs === "number", "server did not release every socket");
    break;
}
if (bad.length) {
  console.log(bad.join(", "));
  process.exit(1);
}
const key = { fanout: "deliveries_per_sec", echo: "messages_per_sec", broadcast: "result_clients", connections: "server_rss_per_conn_bytes" }[scenario];
console.log(`${key}=${r[key]}`);
JS
}

# run PEER SCENARIO ARGS...: one loadgen run against the started server;
# appends "SCENARIO ok|FAILED (…)" to the peer's notes, returns 1 on failure.
run() {
    local peer=$1 scenario=$2
    shift 2
    local out=$logs/$peer.$scenario.json
    local rc=0
    flock -w 600 "$lock" timeout 120 "${loadgen_pin[@]}" "$loadgen" "$scenario" "$@" \
        --url "ws://127.0.0.1:$port/" --cores 1 --server-pid "$pid" --json --quiet \
        >"$out" 2>>"$logs/$peer.$scenario.stderr" || rc=$?
    local verdict
    if verdict=$(check "$out" "$scenario") && ((rc == 0)); then
        notes+=("$scenario ok ($verdict)")
        return 0
    fi
    ((rc == 0)) || verdict="loadgen exit $rc; $verdict"
    notes+=("$scenario FAILED ($verdict)")
    return 1
}

pubsub() {
    local peer=$1 ok=0
    run "$peer" fanout --subscribers 200 --topics 10 --duration 2 --warmup 0.5 || ok=1
    run "$peer" connections --connections 1000 --hold 1 || ok=1
    return $ok
}

shootout() {
    local peer=$1 ok=0
    run "$peer" echo --protocol shootout --connections 50 --duration 2 --warmup 0.5 || ok=1
    run "$peer" broadcast --initial-clients 200 --step 200 --max-clients 400 --samples 20 --step-timeout 20 || ok=1
    return $ok
}

# The server's stdout must stay empty (start.sh's contract).
quiet_stdout() {
    if [[ -s $logs/$1.stdout ]]; then
        notes+=("stdout not empty: $(head -c 200 "$logs/$1.stdout")")
        return 1
    fi
}

passed=0 failed=0
for peer in "${peers[@]}"; do
    notes=()
    ok=0
    if [[ $peer == shardcast ]]; then
        # The shardcast binary speaks the pub/sub protocol; the shootout
        # protocol is examples/shootout.
        if start shardcast; then
            pubsub "$peer" || ok=1
            stop
            quiet_stdout shardcast || ok=1
        else
            notes+=("shardcast did not start")
            ok=1
        fi
        if start shardcast-shootout; then
            shootout "$peer" || ok=1
            stop
            quiet_stdout shardcast-shootout || ok=1
        else
            notes+=("shardcast-shootout did not start")
            ok=1
        fi
    elif start "$peer"; then
        pubsub "$peer" || ok=1
        shootout "$peer" || ok=1
        stop
        quiet_stdout "$peer" || ok=1
    else
        notes+=("did not start")
        ok=1
    fi
    if ((ok == 0)); then
        passed=$((passed + 1))
        echo "PASS $peer: $(IFS=';'; echo "${notes[*]}" | sed 's/;/; /g')"
    else
        failed=$((failed + 1))
        echo "FAIL $peer: $(IFS=';'; echo "${notes[*]}" | sed 's/;/; /g') (logs: $logs)"
    fi
done

echo "peers smoke: $passed passed, $failed failed"
if ((failed == 0)); then
    rm -rf "$logs"
else
    exit 1
fi
