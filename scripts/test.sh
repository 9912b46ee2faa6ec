#!/usr/bin/env bash
# Runs every test shardcast has: the workspace's Rust tests (unit, integration,
# doc) on the io_uring driver's direct data path (the default), the
# integration tests again on its readiness path and on the legacy epoll
# driver, a short connection churn (scripts/churn.sh --short: 300
# connections, 3 rounds), the real-client tests (Python websockets, Node ws,
# headless Chromium) against the shardcast binary, then a short soak
# (scripts/soak.sh --short: 200 connections of sustained fanout for 10 s).
# Churn and soak use the debug binaries the cargo tests built. About four
# minutes on 2 cores after the first build.
#
# The client tests set themselves up (before the cargo tests, so that a
# missing tool fails the run at once): a Python virtualenv in
# target/test-venv with `websockets` and `prometheus_client` (pip runs only
# when they are missing; tests/clients/run.sh gets it as $PYTHON), `npm ci`
# in tests/clients when node_modules is missing, and, from the system's
# packages when they are missing, Debian's `nodejs`, `npm`, `chromium` and
# `python3-venv`, and the cluster tests' `nats-server` and `redis-server`
# (apt-get as root, else through passwordless sudo; otherwise the run fails
# naming the package). If clients/js/test.sh
# exists it runs after the client tests and its "N passed, M failed" line
# joins the total. scripts/compare.sh --smoke installs the peer servers
# (Bun and Node ws from npm, the tokio peer) and runs every comparison
# scenario at toy size against each (log: target/compare-smoke.log).
# SKIP_CLIENTS=1 leaves out the client tests and their setup (and
# clients/js), SKIP_CHROMIUM=1 only the browser, SKIP_COMPARE=1 the
# comparison, SKIP_SOAK=1 the soak, SKIP_BROKERS=1 the installation of
# nats-server and redis-server (the cluster tests then skip their broker cases).
# `bash scripts/test.sh --setup` only sets up and exits. A failed churn,
# client run or soak still reaches the closing total, then fails the script.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"

die() { echo "scripts/test.sh: $*" >&2; exit 2; }

# apt_install HINT PACKAGE...: installs Debian packages when they are
# missing, as root or through passwordless sudo; otherwise fails saying
# exactly what to install, then HINT (the way to do without them).
apt_install() {
    local hint=$1; shift
    local sudo=()
    if [[ "$(id -u)" != 0 ]]; then
        sudo -n true 2>/dev/null ||
            die "missing: $*. Installing it needs root; run \`sudo apt-get install -y $*\` and try again. $hint"
        sudo=(sudo -n)
    fi
    command -v apt-get >/dev/null ||
        die "missing: $*, and there is no apt-get here; install it with the system's package manager. $hint"
    echo "== setup: apt-get install $*"
    ${sudo[@]+"${sudo[@]}"} env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null &&
        ${sudo[@]+"${sudo[@]}"} env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null ||
        die "apt-get install -y $* failed; install it by hand. $hint"
}

# Everything the client tests need that does not come with Rust.
setup_clients() {
    if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
        apt_install "Or install Node.js 18+ with npm, or set SKIP_CLIENTS=1 to leave out the client tests." nodejs npm
    fi

    local venv="$root/target/test-venv"
    if [[ ! -x "$venv/bin/python" ]]; then
        # Debian's python3 lacks ensurepip until python3-venv is installed.
        if ! command -v python3 >/dev/null || ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
            apt_install "Or set SKIP_CLIENTS=1 to leave out the client tests." python3 python3-venv
        fi
        echo "== setup: Python virtualenv in target/test-venv"
        python3 -m venv "$venv" || {
            rm -rf "$venv"
            die "python3 -m venv failed: install python3 and python3-venv (apt-get install python3-venv), or set SKIP_CLIENTS=1"
        }
    fi
    if ! "$venv/bin/python" -c 'import websockets, prometheus_client' 2>/dev/null; then
        echo "== setup: pip install websockets prometheus_client (into target/test-venv)"
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check websockets prometheus_client ||
            die "pip install websockets prometheus_client failed"
    fi
    export PYTHON="$venv/bin/python"

    if [[ ! -d tests/clients/node_modules/ws ]]; then
        echo "== setup: npm ci (tests/clients)"
        (cd tests/clients && npm ci --no-audit --no-fund --silent) || die "npm ci in tests/clients failed"
    fi

    if [[ "${SKIP_CHROMIUM:-0}" != 1 ]] && ! command -v "${CHROMIUM:-chromium}" >/dev/null; then
        apt_install "Or point \$CHROMIUM at a Chromium binary, or set SKIP_CHROMIUM=1 to leave out the browser test." chromium
        command -v "${CHROMIUM:-chromium}" >/dev/null || die "chromium installed but not on PATH: set \$CHROMIUM"
    fi
}

# The brokers of the cluster tests (tests/cluster.rs): Debian's nats-server
# and redis-server (installed into /usr/sbin, not always on PATH). Once
# they are here the cluster tests must find them: a missing broker fails
# them instead of skipping them.
setup_brokers() {
    local missing=() b
    for b in nats-server redis-server; do
        command -v "$b" >/dev/null || [[ -x /usr/sbin/$b ]] || missing+=("$b")
    done
    if ((${#missing[@]})); then
        apt_install "Or set SKIP_BROKERS=1: the cluster tests then skip their broker cases." "${missing[@]}"
    fi
    export SHARDCAST_REQUIRE_BROKERS=1
}

if [[ "${SKIP_CLIENTS:-0}" != 1 ]]; then
    setup_clients
fi
if [[ "${SKIP_BROKERS:-0}" != 1 ]]; then
    setup_brokers
fi
if [[ "${1:-}" == --setup ]]; then
    exit 0
fi

log=$(mktemp)
trap 'rm -f "$log"' EXIT

echo "== cargo test (the default: the direct io_uring data path where the kernel has it)"
cargo test --workspace --all-targets --locked 2>&1 | tee -a "$log"
cargo test --workspace --doc --locked 2>&1 | tee -a "$log"

echo "== cargo test (readiness io_uring data path: SHARDCAST_IO_PATH=readiness)"
SHARDCAST_IO_PATH=readiness cargo test --workspace --tests --locked 2>&1 | tee -a "$log"

echo "== cargo test (legacy epoll driver: MONOIO_FORCE_LEGACY_DRIVER=1)"
MONOIO_FORCE_LEGACY_DRIVER=1 cargo test --workspace --tests --locked 2>&1 | tee -a "$log"

failed=0
echo "== churn, short (debug binaries): connections and subscriptions come and go, the server returns to baseline"
PROFILE=debug bash scripts/churn.sh --short 2>&1 | tee -a "$log" || failed=1

if [[ "${SKIP_CLIENTS:-0}" != 1 ]]; then
    echo "== real clients against the shardcast binary"
    bash tests/clients/run.sh 2>&1 | tee -a "$log" || failed=1

    # A client library's own tests, when the tree has one. Its last
    # "N passed, M failed" line (with or without a "name: " prefix) joins
    # the total as "jsclient: ..."; a failing exit without one counts as one
    # failure.
    if [[ -f clients/js/test.sh ]]; then
        echo "== clients/js/test.sh"
        js_out=$(mktemp)
        if bash clients/js/test.sh 2>&1 | tee "$js_out"; then js_status=0; else js_status=1; fi
        js_line=$(grep -Eo '[0-9]+ passed, [0-9]+ failed$' "$js_out" | tail -1 || true)
        rm -f "$js_out"
        if [[ -n "$js_line" ]]; then
            js_pass=${js_line%% passed*}; js_fail=${js_line#*, }; js_fail=${js_fail%% failed*}
        else
            js_pass=0; js_fail=0
        fi
        if ((js_status != 0)); then
            failed=1
            ((js_fail > 0)) || js_fail=1
        elif [[ -z "$js_line" ]]; then
            js_pass=1
        fi
        echo "jsclient: $js_pass passed, $js_fail failed" | tee -a "$log"
    fi
fi

if [[ "${SKIP_COMPARE:-0}" != 1 ]]; then
    # The side-by-side benchmark at toy size: every peer server installs,
    # starts and serves every scenario without losing a message. Its
    # figures mean nothing at this size and on a busy machine.
    echo "== scripts/compare.sh --smoke (shardcast and the peer servers, tiny counts)"
    mkdir -p target
    if bash scripts/compare.sh --smoke --out target/compare-smoke >target/compare-smoke.log 2>&1; then
        tail -n 3 target/compare-smoke.log
        echo "compare: 1 passed, 0 failed" | tee -a "$log"
    else
        tail -n 80 target/compare-smoke.log
        failed=1
        echo "compare: 0 passed, 1 failed" | tee -a "$log"
    fi
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
