#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ (as listed by `cargo fuzz list`) under
# libFuzzer with AddressSanitizer, one after the other, then prints how many
# inputs each one executed. Installs cargo-fuzz first if it is missing.
#
# Targets: frame_decoder, handshake, mask, utf8 (the sans-IO protocol core);
# ws_command (the server's JSON control messages, through the parser the
# server runs); http_request (plain HTTP on the WebSocket port: request
# head, body framing, routing, API key headers, publish bodies). Inputs in
# fuzz/seeds/<target>/ are copied into the corpus before each run.
#
#   scripts/fuzz.sh                 60 seconds per target
#   scripts/fuzz.sh 300             300 seconds per target
#   scripts/fuzz.sh --runs 1000000  a fixed number of inputs per target
#   scripts/fuzz.sh 30 mask utf8    only the named targets
#
# Time: the first build takes 3-5 minutes on 2 cores (1 minute to install
# cargo-fuzz when it is missing), then the given seconds per target (about
# 6 minutes in all for the default with six targets). For --runs, speeds
# measured on the shared 2-core machine under nice: ws_command ~4,900
# inputs/s (10 million in 34 minutes), http_request ~6,000 inputs/s
# (10 million in 28 minutes). Corpora grow in
# fuzz/corpus/<target>/ and crashes are saved in fuzz/artifacts/<target>/
# (both ignored by git). Exits non-zero if any target found a failure.
#
# Only a stable toolchain is available here: RUSTC_BOOTSTRAP=1 lets it accept
# the nightly-only flags cargo-fuzz passes (-Zsanitizer=address and others).
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

seconds=60
runs=""
if [[ "${1:-}" == "--runs" ]]; then
    runs="${2:?--runs needs a count}"
    shift 2
elif [[ "${1:-}" =~ ^[0-9]+$ ]]; then
    seconds="$1"
    shift
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

export RUSTC_BOOTSTRAP=1
target="$(rustc -vV | sed -n 's/^host: //p')"

if [[ $# -gt 0 ]]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list)
fi
if [[ ${#targets[@]} -eq 0 ]]; then
    echo "no fuzz targets found in fuzz/Cargo.toml" >&2
    exit 1
fi

echo "== building ${targets[*]} for $target"
for t in "${targets[@]}"; do
    cargo fuzz build --target "$target" "$t"
done

if [[ -n "$runs" ]]; then
    limit=("-runs=$runs")
    echo "== running each target for $runs inputs"
else
    limit=("-max_total_time=$seconds")
    echo "== running each target for $seconds s"
fi

log_dir="$(mktemp -d)"
trap 'rm -rf "$log_dir"' EXIT
failed=()
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t"
    # Hand-written starting inputs (tracked, unlike the corpus).
    if [[ -d "seeds/$t" ]]; then
        cp seeds/"$t"/* "corpus/$t/"
    fi
    echo "-- $t"
    if cargo fuzz run --target "$target" "$t" "corpus/$t" -- "${limit[@]}" -print_final_stats=1 \
        >"$log_dir/$t.log" 2>&1; then
        :
    else
        failed+=("$t")
        grep -m 1 -A 4 'panicked at' "$log_dir/$t.log" || true
        tail -n 40 "$log_dir/$t.log"
    fi
done

echo "== summary"
printf '%-16s %14s %10s %10s %s\n' target executions seconds 'execs/s' result
for t in "${targets[@]}"; do
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log_dir/$t.log" | tail -n 1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log_dir/$t.log" | tail -n 1)
    secs=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log_dir/$t.log" | tail -n 1)
    result=ok
    [[ " ${failed[*]} " == *" $t "* ]] && result="FAILED (see fuzz/artifacts/$t/)"
    printf '%-16s %14s %10s %10s %s\n' "$t" "${execs:-?}" "${secs:-?}" "${rate:-?}" "$result"
done
[[ ${#failed[@]} -eq 0 ]]
