# Starting and stopping the server under test for the measuring scripts
# (bench.sh, soak.sh, slow-consumer.sh). Source it after setting BIN (the
# binaries' directory), PORT, OUT (server logs go there), SERVER_CPUS and
# LOADGEN_CPUS (taskset CPU lists); the caller sets its own EXIT trap and
# calls stop_server in it.

# How many CPUs a taskset list such as "0,2-3" names.
count() { awk -F, '{n=0; for(i=1;i<=NF;i++){ if($i ~ /-/){split($i,r,"-"); n+=r[2]-r[1]+1} else n++ } print n}' <<<"$1"; }

# Pin only where there are two CPUs to pin to.
if (($(nproc) >= 2)); then
    SERVER_PIN=(taskset -c "$SERVER_CPUS") LOADGEN_PIN=(taskset -c "$LOADGEN_CPUS")
    SERVER_CORES=$(count "$SERVER_CPUS") LOADGEN_CORES=$(count "$LOADGEN_CPUS")
else
    SERVER_PIN=() LOADGEN_PIN=() SERVER_CORES=1 LOADGEN_CORES=1
fi

SERVER_PID=
stop_server() {
    if [[ -n "$SERVER_PID" ]]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
        SERVER_PID=
    fi
}

port_answers() { (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; }

# launch_server LOG_NAME EXECUTABLE [flags...]: starts a server (the
# shardcast binary or an example) pinned to SERVER_CPUS on PORT, logging to
# OUT/LOG_NAME.log, and waits until it answers.
launch_server() {
    stop_server
    local name=$1 exe=$2
    shift 2
    # The server binds with SO_REUSEPORT: a second server on a busy port
    # would silently share its traffic instead of failing. A server just
    # stopped may still answer for a moment: its io_uring ring, which holds
    # the listening socket, is torn down after the process exits.
    for _ in $(seq 30); do
        port_answers || break
        sleep 0.1
    done
    if port_answers; then
        echo "$(basename "$0"): something already listens on port $PORT; set PORT" >&2
        exit 1
    fi
    "${SERVER_PIN[@]}" "$exe" --listen "127.0.0.1:$PORT" --cores "$SERVER_CORES" "$@" \
        >"$OUT/$name.log" 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 100); do
        if port_answers; then return 0; fi
        sleep 0.1
    done
    echo "$(basename "$0"): the server did not start (see $OUT/$name.log)" >&2
    exit 1
}

# start_server LOG_NAME [server flags...]: the shardcast binary, with the
# per-connection publish rate and per-address connection cap lifted (a load
# generator on a few addresses would hit them).
start_server() {
    local name=$1
    shift
    launch_server "$name" "$BIN/shardcast" --publish-rate 0 --max-connections-per-ip 0 --log warn "$@"
}

# run_loadgen LOADGEN LABEL [loadgen arguments...]: one loadgen run against
# the server launch_server started, pinned to LOADGEN_CPUS, its JSON line
# appended to RESULTS. A failed run is reported and the caller goes on.
run_loadgen() {
    local loadgen=$1 label=$2
    shift 2
    timeout 300 "${LOADGEN_PIN[@]}" "$loadgen" "$@" --url "ws://127.0.0.1:$PORT/" \
        --cores "$LOADGEN_CORES" --server-pid "$SERVER_PID" --label "$label" --json \
        >>"$RESULTS" || echo "!! $label $* failed" >&2
}
