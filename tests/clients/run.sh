#!/usr/bin/env bash
# Runs the real-client tests against the shardcast binary: Python `websockets` +
# `prometheus_client`, Node `ws`, and headless Chromium on the status page, and
# all three with permessage-deflate. Builds the debug binary if needed, starts
# three servers on 127.0.0.1 (free ports, 2 cores each; one anonymous, one with
# a JWT secret and small limits, one with --compression shared), runs each
# client, then checks that SIGTERM stops each with exit 0. About 40 s.
#
# Needs: Python with `websockets` and `prometheus_client`, node 18+ with `ws`
# (tests/clients/node_modules), and Debian's `chromium` (or $CHROMIUM).
# scripts/test.sh sets these up (a virtualenv in target/test-venv, npm ci,
# apt-get); run on its own, this script uses $PYTHON, else that virtualenv
# when it exists, else python3, and runs `npm ci` when node_modules is
# missing. Set SKIP_CHROMIUM=1 to leave the browser test out.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"

if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x "$root/target/test-venv/bin/python" ]]; then PYTHON="$root/target/test-venv/bin/python"; else PYTHON=python3; fi
fi

missing=()
"$PYTHON" -c 'import websockets, prometheus_client' 2>/dev/null || missing+=("$PYTHON: websockets prometheus_client (bash scripts/test.sh --setup installs them)")
command -v node >/dev/null || missing+=("node (18+)")
if [[ "${SKIP_CHROMIUM:-0}" != 1 ]]; then
  command -v "${CHROMIUM:-chromium}" >/dev/null || missing+=("apt: chromium")
fi
if ((${#missing[@]})); then
  echo "missing: ${missing[*]}" >&2
  exit 2
fi
[[ -d "$here/node_modules/ws" ]] || (cd "$here" && npm ci --no-audit --no-fund --silent)

cargo build --quiet --bin shardcast
bin="${CARGO_TARGET_DIR:-$root/target}/debug/shardcast"
logs=()
pids=()
trap 'for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done; rm -f "${logs[@]}"' EXIT

# Starts the binary with extra flags; sets $addr and $pid.
start_server() {
  local log; log="$(mktemp)"
  logs+=("$log")
  "$bin" --listen 127.0.0.1:0 --cores 2 --no-pin --log-format json "$@" >"$log" 2>&1 &
  pid=$!
  pids+=("$pid")
  addr=""
  for _ in $(seq 100); do
    addr="$("$PYTHON" -c 'import json,sys
for l in open(sys.argv[1]):
    try: a = json.loads(l).get("fields", {}).get("addr")
    except ValueError: continue
    if a: print(a); break' "$log")"
    [[ -n "$addr" ]] && break
    sleep 0.1
  done
  [[ -n "$addr" ]] || { echo "server did not start:" >&2; cat "$log" >&2; exit 1; }
}

secret="client-test-secret"
start_server --jwt-secret "$secret" --max-subscriptions 2 --publish-rate 1 --publish-burst 2 \
  --auth-timeout-secs 1
jwt_addr="$addr"; jwt_pid="$pid"
start_server --compression shared
zip_addr="$addr"; zip_pid="$pid"
start_server
echo "anonymous server on $addr, JWT server on $jwt_addr, compressing server on $zip_addr"

passed=0; failed=0
run() {
  local name="$1"; shift
  echo "== $name"
  local out
  if out="$(timeout 120 "$@" 2>&1)"; then status=0; else status=$?; fi
  echo "$out"
  local line; line="$(grep -E '^[0-9]+ passed, [0-9]+ failed$' <<<"$out" | tail -1 || true)"
  if [[ -n "$line" ]]; then
    passed=$((passed + ${line%% passed*})); f="${line#*, }"; failed=$((failed + ${f%% failed*}))
  fi
  if ((status != 0)) && [[ -z "$line" || "${f%% failed*}" == 0 ]]; then failed=$((failed + 1)); fi
}
run python "$PYTHON" "$here/test_python.py" "$addr"
run python-auth "$PYTHON" "$here/test_python_auth.py" "$jwt_addr" "$secret"
run node node "$here/test_node.mjs" "$addr"
run python-deflate "$PYTHON" "$here/test_python_deflate.py" "$zip_addr"
if [[ "${SKIP_CHROMIUM:-0}" != 1 ]]; then
  run chromium node "$here/test_chromium.mjs" "$addr" "${SCREENSHOT:-}"
  run deflate-node-chromium node "$here/test_deflate.mjs" "$zip_addr"
else
  run deflate-node node "$here/test_deflate.mjs" "$zip_addr" --no-chromium
fi

echo "== SIGTERM"
for p in "$pid" "$jwt_pid" "$zip_pid"; do
  kill -TERM "$p"
  if wait "$p"; then
    echo "ok   server exited 0 after SIGTERM"; passed=$((passed + 1))
  else
    echo "FAIL server exit status $?"; failed=$((failed + 1))
  fi
done
echo "clients: $passed passed, $failed failed"
((failed == 0))
