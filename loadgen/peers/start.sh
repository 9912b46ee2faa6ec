#!/usr/bin/env bash
# Runs one server under test in the foreground on 127.0.0.1:PORT. The
# script execs it, so the PID its caller holds is the server's own (for CPU
# and RSS read from /proc). Nothing is printed on stdout; the server's own
# messages go to stderr. Run setup.sh first (and `cargo build --release` for
# shardcast).
#
#   loadgen/peers/start.sh NAME PORT
#
# NAME:
#   shardcast            target/release/shardcast, one core, no per-address
#                        connection cap, no publish rate limit
#   shardcast-shootout   target/release/examples/shootout, one core (the
#                        echo/broadcast protocol, which the shardcast binary
#                        does not speak)
#   shardcast-async      target/release/examples/async_echo, one core: the
#                        same protocol with every connection driven by an
#                        async session (Ws::spawn_session) instead of
#                        callbacks
#   bun                  bun/server.ts on Bun.serve
#   tokio                peer-tokio (tokio + tokio-tungstenite)
#   node-ws              node-ws/server.mjs on Node.js and ws
#   shardcast-history    shardcast with history on the loadgen's topics
#                        (t*: 100 messages, 60 s): every publish goes
#                        through its topic's home core and gets an offset
#   shardcast-direct, shardcast-shootout-direct, shardcast-async-direct
#                        the same forced onto the direct io_uring data path
#                        (SHARDCAST_IO_PATH=direct: direct descriptors,
#                        provided buffers, sends as submissions; the
#                        default where the kernel has it)
#   shardcast-readiness, shardcast-shootout-readiness,
#   shardcast-async-readiness
#                        the same on the readiness data path
#                        (SHARDCAST_IO_PATH=readiness: readiness, then recv
#                        and sendmsg calls; a task per connection)
#   shardcast-deflate, bun-deflate, node-ws-deflate
#                        the same with permessage-deflate: shardcast
#                        --compression shared, Bun's shared compressor, ws's
#                        per-connection zlib (tokio-tungstenite has none)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
# Where cargo puts its builds (CARGO_TARGET_DIR, relative to the workspace).
target=${CARGO_TARGET_DIR:-target}
[[ $target == /* ]] || target=$root/$target
names="shardcast shardcast-shootout shardcast-async shardcast-history bun tokio node-ws shardcast-deflate bun-deflate node-ws-deflate shardcast-direct shardcast-shootout-direct shardcast-async-direct shardcast-readiness shardcast-shootout-readiness shardcast-async-readiness"

die() {
    echo "start.sh: $*" >&2
    exit 2
}

(($# == 2)) || die "usage: start.sh NAME PORT (NAME: ${names// /, })"
name=$1 port=$2
[[ $port =~ ^[0-9]+$ ]] && ((port > 0 && port < 65536)) || die "$port is not a port"

# executable PATH HOW: PATH, or an error telling how to make it.
executable() {
    [[ -x $1 ]] || die "$name: $1 is missing; $2"
    printf '%s' "$1"
}

# Benchmarks open up to ~20,000 connections: allow as many files as the
# hard limit does (Bun raises its own limit; Node and tokio do not).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

case $name in
shardcast-direct | shardcast-shootout-direct | shardcast-async-direct)
    export SHARDCAST_IO_PATH=direct name=${name%-direct}
    ;;
*-direct) die "$name: only shardcast has the direct path" ;;
shardcast-readiness | shardcast-shootout-readiness | shardcast-async-readiness)
    export SHARDCAST_IO_PATH=readiness name=${name%-readiness}
    ;;
*-readiness) die "$name: only shardcast has a readiness path" ;;
esac

deflate=()
case $name in
tokio-deflate | shardcast-shootout-deflate) die "$name: that server has no permessage-deflate" ;;
*-deflate) deflate=(--deflate) name=${name%-deflate} ;;
esac

case $name in
shardcast)
    bin=$(executable "$target/release/shardcast" "run cargo build --release")
    ((${#deflate[@]})) && deflate=(--compression shared)
    exec "$bin" --listen "127.0.0.1:$port" --cores 1 \
        --max-connections-per-ip 0 --publish-rate 0 --log warn "${deflate[@]}" >&2
    ;;
shardcast-history)
    bin=$(executable "$target/release/shardcast" "run cargo build --release")
    exec "$bin" --listen "127.0.0.1:$port" --cores 1 \
        --max-connections-per-ip 0 --publish-rate 0 --log warn --history 't*=100,60' >&2
    ;;
shardcast-shootout)
    bin=$(executable "$target/release/examples/shootout" "run cargo build --release --example shootout")
    exec "$bin" --listen "127.0.0.1:$port" --cores 1 >&2
    ;;
shardcast-async)
    bin=$(executable "$target/release/examples/async_echo" "run cargo build --release --example async_echo")
    exec "$bin" --listen "127.0.0.1:$port" --cores 1 >&2
    ;;
bun)
    bin=$(executable "$here/bun/node_modules/bun/bin/bun.exe" "run $here/setup.sh")
    exec "$bin" "$here/bun/server.ts" --port "$port" "${deflate[@]}" >&2
    ;;
tokio)
    bin=$(executable "$target/release/peer-tokio" "run $here/setup.sh")
    exec "$bin" --listen "127.0.0.1:$port" >&2
    ;;
node-ws)
    [[ -d $here/node-ws/node_modules/ws ]] || die "node-ws: $here/node-ws/node_modules is missing; run $here/setup.sh"
    exec node "$here/node-ws/server.mjs" --port "$port" "${deflate[@]}" >&2
    ;;
*)
    die "unknown server '$name' (one of: ${names// /, })"
    ;;
esac
