#!/usr/bin/env bash
# Runs the tests of the repository's `unsafe` code under AddressSanitizer, so
# that an out-of-bounds read or write fails the run even when the result
# happens to be right:
#
#   1. unit tests of the SIMD kernels (proto::mask, proto::utf8) and of the
#      socket calls (conn::sys: recv into slices and spare Vec capacity,
#      gathered iovec sendmsg, shutdown);
#   2. integration tests that drive those socket calls through a real server
#      on loopback: tests/frames.rs and tests/conformance.rs echo 0 B to
#      several MiB messages (readiness reads, partial gathered writes),
#      tests/pubsub.rs fans frames out to many connections.
#
#   scripts/asan.sh                 everything above
#   scripts/asan.sh proto::mask     only the unit tests matching the filters
#
# Time: about 4 minutes on 2 cores for the first build (every dependency is
# compiled again, instrumented, in target/asan), then under a minute: 46 s
# measured for everything, of which 31 s for the unit tests (the UTF-8
# sweeps dominate) and 14 s for the three integration test binaries.
#
# Prints a summary line per test binary (passed count, seconds) and PASS or
# FAIL; exits non-zero on any failure. A deliberate off-by-one in conn::sys
# (recv length + 1) is reported as a heap-buffer-overflow both by the unit
# tests and, through the running server, by tests/frames.rs.
#
# Only a stable toolchain is available here, so RUSTC_BOOTSTRAP=1 unlocks
# -Zsanitizer. The standard library is the prebuilt, uninstrumented one
# (-Zbuild-std would need the rust-src component): accesses made inside std
# are not checked, everything compiled from this repository is, and so are
# the buffers the kernel reads and writes through recv/sendmsg (ASan checks
# the pointer and length handed to those libc calls). An explicit --target
# keeps RUSTFLAGS away from build scripts and proc-macros, which must not be
# instrumented. Miri would need a nightly toolchain with its component.
set -euo pipefail
cd "$(dirname "$0")/.."

target="$(rustc -vV | sed -n 's/^host: //p')"
filters=("$@")
integration=(frames conformance pubsub)
if [[ ${#filters[@]} -eq 0 ]]; then
    filters=(proto::mask proto::utf8 conn::sys)
else
    integration=()
fi

export RUSTC_BOOTSTRAP=1
export RUSTFLAGS="-Zsanitizer=address -Cforce-frame-pointers=yes ${RUSTFLAGS:-}"
# Abort on the first report.
export ASAN_OPTIONS="abort_on_error=1:${ASAN_OPTIONS:-}"
cargo_test=(cargo test --locked --target "$target" --target-dir target/asan)

started=$SECONDS
echo "== building under AddressSanitizer ($target)"
tests=()
for t in "${integration[@]}"; do
    tests+=(--test "$t")
done
"${cargo_test[@]}" --no-run --lib "${tests[@]}"

log_dir="$(mktemp -d)"
trap 'rm -rf "$log_dir"' EXIT
names=()
results=()
run() {
    local name="$1"
    shift
    echo "== $name"
    local t0=$SECONDS status=0
    local log="$log_dir/${#names[@]}.log"
    "${cargo_test[@]}" "$@" 2>&1 | tee "$log" || status=$?
    local passed
    passed=$(sed -n 's/^test result: .*\. \([0-9]*\) passed.*/\1/p' "$log" |
        awk '{s += $1} END {print s + 0}')
    names+=("$name")
    if [[ $status -eq 0 ]]; then
        results+=("ok      $passed passed in $((SECONDS - t0)) s")
    else
        results+=("FAILED  $passed passed in $((SECONDS - t0)) s (exit $status)")
    fi
}

run "lib: ${filters[*]}" --lib -- "${filters[@]}"
# LeakSanitizer stays on for the unit tests but not here: every server these
# tests stop leaves its per-core state behind (a reference cycle through
# the core's tasks, plus monoio's deliberately leaked Timespec per runtime),
# which would fail every binary on leaks rather than on memory errors.
for t in "${integration[@]}"; do
    ASAN_OPTIONS="detect_leaks=0:$ASAN_OPTIONS" run "tests/$t.rs" --test "$t"
done

echo "== summary (AddressSanitizer, $((SECONDS - started)) s in all)"
failed=0
for i in "${!names[@]}"; do
    printf '%-44s %s\n' "${names[$i]}" "${results[$i]}"
    [[ ${results[$i]} == ok* ]] || failed=1
done
if [[ $failed -eq 0 ]]; then
    echo "PASS"
else
    echo "FAIL"
fi
exit $failed
