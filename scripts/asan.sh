#!/usr/bin/env bash
# Runs the unit tests of the modules with SIMD `unsafe` code (proto::mask,
# proto::utf8) under AddressSanitizer, so that an out-of-bounds read or write
# in a kernel fails the run even when the result happens to be right.
# Extra arguments go to the test binary, e.g. `scripts/asan.sh proto::mask`
# (the default filters are then replaced).
#
# Time: 3-6 minutes on 2 cores for the first build (every dependency is
# compiled again, instrumented, in target/asan), then about 30 seconds.
#
# Only a stable toolchain is available here, so RUSTC_BOOTSTRAP=1 unlocks
# -Zsanitizer. The standard library is the prebuilt, uninstrumented one
# (-Zbuild-std would need the rust-src component): accesses made inside std
# are not checked, everything compiled from this repository is. An explicit
# --target keeps RUSTFLAGS away from build scripts and proc-macros, which must
# not be instrumented. Miri would need a nightly toolchain with its component.
set -euo pipefail
cd "$(dirname "$0")/.."

target="$(rustc -vV | sed -n 's/^host: //p')"
filters=("$@")
[[ ${#filters[@]} -eq 0 ]] && filters=(proto::mask proto::utf8)

export RUSTC_BOOTSTRAP=1
export RUSTFLAGS="-Zsanitizer=address -Cforce-frame-pointers=yes ${RUSTFLAGS:-}"
# Abort on the first report.
export ASAN_OPTIONS="abort_on_error=1:${ASAN_OPTIONS:-}"

echo "== cargo test --lib under AddressSanitizer ($target): ${filters[*]}"
cargo test --locked --lib --target "$target" --target-dir target/asan -- "${filters[@]}"
