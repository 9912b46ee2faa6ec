#!/usr/bin/env bash
# Runs every test shardcast has: the workspace's Rust tests (unit, integration,
# doc) on the io_uring driver, then the integration tests again on the legacy
# epoll driver. Takes about two minutes on 2 cores after the first build.
set -euo pipefail
cd "$(dirname "$0")/.."
log=$(mktemp)
trap 'rm -f "$log"' EXIT

echo "== cargo test (io_uring driver where the kernel allows it)"
cargo test --workspace --all-targets --locked 2>&1 | tee -a "$log"
cargo test --workspace --doc --locked 2>&1 | tee -a "$log"

echo "== cargo test (legacy epoll driver: MONOIO_FORCE_LEGACY_DRIVER=1)"
MONOIO_FORCE_LEGACY_DRIVER=1 cargo test --workspace --tests --locked 2>&1 | tee -a "$log"

# One closing line over every run above.
awk '/^test result:/ { p += $4; f += $6 } END { printf "total: %d passed, %d failed\n", p, f }' "$log"
