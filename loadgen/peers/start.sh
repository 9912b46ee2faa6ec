#!/usr/bin/env bash
# start.sh NAME PORT: execs one server under comparison in the foreground on
# 127.0.0.1:PORT, so its PID is the server's. This version knows only
# `shardcast` (the server binary) and `shardcast-shootout`
# (examples/shootout: the websocket-shootout protocol, which the server
# binary does not speak), both built by `cargo build --release`.
#
# shardcast's flags: no per-connection publish rate limit and no per-address
# connection cap (the load generator's publishers and 19,000 connections come
# from a few loopback addresses); the default outbox limit (1 MiB per
# connection) and connection limit (1,000,000) already let a 40,000-delivery
# window and 19,000 connections through.
set -euo pipefail
cd "$(dirname "$0")/../.."
name=${1:?usage: start.sh NAME PORT}
port=${2:?usage: start.sh NAME PORT}
case "$name" in
shardcast)
    exec "${CARGO_TARGET_DIR:-target}/release/shardcast" --listen "127.0.0.1:$port" --cores 1 \
        --publish-rate 0 --max-connections-per-ip 0 --log warn
    ;;
shardcast-shootout)
    exec "${CARGO_TARGET_DIR:-target}/release/examples/shootout" --listen "127.0.0.1:$port" --cores 1
    ;;
*)
    echo "start.sh: unknown server $name (this placeholder knows only shardcast and shardcast-shootout)" >&2
    exit 2
    ;;
esac
