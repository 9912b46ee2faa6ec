#!/usr/bin/env bash
# Installs and builds the peer servers that start.sh runs: `npm ci` for Bun
# and for Node's ws (only when node_modules is missing, stale or broken) and
# `cargo build --release -p peer-tokio --locked`. Safe to run again: a
# finished setup takes about a second. From scratch it needs the npm
# registry and crates.io and takes a few minutes (mostly the Rust build).
#
#   loadgen/peers/setup.sh
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)

die() {
    echo "setup.sh: $*" >&2
    exit 1
}

for tool in node npm cargo; do
    command -v "$tool" >/dev/null || die "$tool is not installed (node and npm: apt-get install nodejs npm; cargo: rustup)"
done

# npm_ci DIR CHECK...: runs `npm ci` in DIR unless node_modules is there, no
# older than package-lock.json, and CHECK (run in DIR) succeeds.
npm_ci() {
    local dir=$1
    shift
    local stamp=$dir/node_modules/.package-lock.json
    if [[ -f $stamp && ! $dir/package-lock.json -nt $stamp ]] && (cd "$dir" && "$@") >/dev/null 2>&1; then
        echo "setup.sh: $(basename "$dir"): up to date" >&2
        return 0
    fi
    echo "setup.sh: $(basename "$dir"): npm ci" >&2
    (cd "$dir" && timeout 600 npm ci --no-audit --no-fund --loglevel=error >&2) ||
        die "npm ci in $dir failed (is the npm registry reachable? see the npm error above)"
    (cd "$dir" && "$@") >&2 || die "$(basename "$dir"): installed, but the check '$*' fails"
}

# The bun package's postinstall moves the platform's binary into
# node_modules/bun/bin/bun.exe; the check proves it did, at the pinned version.
bun_version=$(sed -n 's/^ *"bun": "\(.*\)"$/\1/p' "$here/bun/package.json")
[[ -n $bun_version ]] || die "no pinned bun version in $here/bun/package.json"
npm_ci "$here/bun" sh -c "[ \"\$(node_modules/bun/bin/bun.exe --version)\" = '$bun_version' ]"
npm_ci "$here/node-ws" node -e "require('ws'); require('bufferutil')"

echo "setup.sh: peer-tokio: cargo build --release" >&2
(cd "$root" && cargo build --release -p peer-tokio --locked >&2) ||
    die "cargo build --release -p peer-tokio failed (crates.io unreachable for a first build? see above)"
echo "setup.sh: peers ready (bun $bun_version, node $(node --version), peer-tokio)" >&2
