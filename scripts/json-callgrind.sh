#!/usr/bin/env bash
# Instructions per typed JSON parse, serde_json against simd-json, on a
# ~100 B and a ~10 KiB message (benches/json.rs), counted by callgrind so
# that the figures do not depend on what else the machine runs. Each case
# runs N times and once with 0 iterations (setup); the difference / N is
# printed. About 1 minute after the build.
#
#   scripts/json-callgrind.sh [N (default 2000)]
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-2000}
bin=$(cargo bench --bench json --no-run --message-format=json 2>/dev/null |
    python3 -c 'import json,sys
for l in sys.stdin:
    m=json.loads(l)
    if m.get("reason")=="compiler-artifact" and m["target"]["name"]=="json" and m.get("executable"): print(m["executable"])' | tail -1)
[[ -x $bin ]] || { echo "json-callgrind.sh: no bench binary" >&2; exit 1; }
ir() {
    local out
    out=$(mktemp)
    JSON_BENCH=$1 JSON_BENCH_ITERS=$2 valgrind --tool=callgrind --callgrind-out-file="$out" "$bin" >/dev/null 2>&1
    sed -n 's/^summary: //p' "$out"
    rm -f "$out"
}
for case in serde-100 simd-100 serde-10k simd-10k; do
    base=$(ir "$case" 0)
    full=$(ir "$case" "$n")
    echo "$case: $(((full - base) / n)) instructions per parse"
done
