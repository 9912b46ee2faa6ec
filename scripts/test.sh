#!/usr/bin/env bash
# Runs every test shardcast has: the workspace's Rust tests on the io_uring
# driver and again on the legacy (epoll) driver. Takes a few minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo test (io_uring driver where available)"
cargo test --workspace --all-targets --locked

echo "== cargo test (legacy epoll driver: MONOIO_FORCE_LEGACY_DRIVER=1)"
MONOIO_FORCE_LEGACY_DRIVER=1 cargo test --workspace --tests --locked
