#!/usr/bin/env bash
# Runs the JavaScript client's tests with Node's test runner against real shardcast servers (started on free loopback
# ports and stopped by the tests): the client in Node (via the `ws` package) and the status page in headless Chromium.
# Installs `ws` with `npm ci` into clients/js/node_modules on first run; builds the debug server binary if needed.
# About 30 s on 2 cores. Needs node >= 18; Chromium (Debian `chromium`, or $CHROMIUM) or the browser test is skipped.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
[[ -d "$here/node_modules/ws" ]] || (cd "$here" && npm ci --no-audit --no-fund --silent)
(cd "$root" && cargo build --quiet --bin shardcast)
export SHARDCAST_BIN="${CARGO_TARGET_DIR:-$root/target}/debug/shardcast"
cd "$here"
# One file at a time: each test starts its own servers, and the machine may have only 2 cores.
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
rc=0
node --test --test-concurrency=1 test/*.test.mjs | tee "$log" || rc=$?
# The runner's TAP summary ends with "# pass N" and "# fail M".
pass="$(sed -n 's/^# pass \([0-9]*\)$/\1/p' "$log" | tail -1)"
fail="$(sed -n 's/^# fail \([0-9]*\)$/\1/p' "$log" | tail -1)"
echo "js: ${pass:-0} passed, ${fail:-?} failed"
exit "$rc"
