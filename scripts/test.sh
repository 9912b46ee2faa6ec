#!/usr/bin/env bash
# Runs every test shardcast has: the workspace's Rust tests (unit, integration,
# doc) on the io_uring driver, the integration tests again on the legacy epoll
# driver, a short connection churn (scripts/churn.sh --short: 300
# connections, 3 rounds), the real-client tests (Python websockets, Node ws,
# headless Chromium) against the shardcast binary, then a short soak
# (scripts/soak.sh --short: 200 connections of sustained fanout for 10 s).
# Churn and soak use the debug binaries the cargo tests built. About four
# minutes on 2 cores after the first build.
#
# The client tests need python3 with `websockets` and `prometheus_client`,
# Node 18+ and Debian's `chromium` (.ci/run installs them); SKIP_CLIENTS=1
# leaves them out, SKIP_CHROMIUM=1 only the browser. SKIP_SOAK=1 leaves out
# the soak. A failed churn or soak still reaches the closing total, then
# fails the script.
set -euo pipefail
cd "$(dirname "$0")/.."
log=$(mktemp)
trap 'rm -f "$log"' EXIT

echo "== cargo test (io_uring driver where the kernel allows it)"
cargo test --workspace --all-targets --locked 2>&1 | tee -a "$log"
cargo test --workspace --doc --locked 2>&1 | tee -a "$log"

echo "== cargo test (legacy epoll driver: MONOIO_FORCE_LEGACY_DRIVER=1)"
MONOIO_FORCE_LEGACY_DRIVER=1 cargo test --workspace --tests --locked 2>&1 | tee -a "$log"

failed=0
echo "== churn, short (debug binaries): connections and subscriptions come and go, the server returns to baseline"
PROFILE=debug bash scripts/churn.sh --short 2>&1 | tee -a "$log" || failed=1

if [[ "${SKIP_CLIENTS:-0}" != 1 ]]; then
    echo "== real clients against the shardcast binary"
    bash tests/clients/run.sh 2>&1 | tee -a "$log"
fi

if [[ "${SKIP_SOAK:-0}" != 1 ]]; then
    echo "== short soak (scripts/soak.sh --short)"
    bash scripts/soak.sh --short --out target/soak-short 2>&1 | tee -a "$log" || failed=1
fi

# One closing line over every run above: cargo's "test result:" lines and
# every "<name>: N passed, M failed" line (churn, clients, soak).
awk '/^test result:/ { p += $4; f += $6 }
     /^[a-z]+: [0-9]+ passed, [0-9]+ failed$/ && !/^total:/ { p += $2; f += $4 }
     END { printf "total: %d passed, %d failed\n", p, f }' "$log"
exit "$failed"
