#!/usr/bin/env bash
# Runs the Autobahn|Testsuite fuzzing client (`wstest -m fuzzingclient`)
# against examples/echo with permessage-deflate on (AUTOBAHN_COMPRESSION,
# default shared; dedicated too; off leaves out sections 12 and 13, the
# permessage-deflate ones): every case, 517 of them (the suite has no
# section 11; 301 cases without 12 and 13). Fails unless every case's behaviour
# and close behaviour is OK or INFORMATIONAL (NON-STRICT, FAILED,
# UNIMPLEMENTED and WRONG CODE fail), and prints the counts per outcome and
# every case that is not plain OK with its id and description, plus what the
# report expected and observed for each failing one
# (scripts/autobahn/summarise.py). Spec: scripts/autobahn/fuzzingclient.json.
#
# Needs: cargo, python3 with venv, network access to PyPI the first time,
# and CPython 2.7.18 from pyenv (`$(pyenv root)/versions/2.7.18`; when it is
# missing the script tries `pyenv install 2.7.18`, which compiles Python and
# needs its build dependencies; PYTHON2=/path/to/python2.7 overrides).
# Autobahn|Testsuite is Python 2.7 software, so the script makes its own
# environments under target/, once: target/autobahn-bootstrap (a Python 3
# venv holding virtualenv 20.21.1, the last release that creates 2.7
# environments), then target/autobahn-venv (Python 2.7) with the pinned
# packages below. A stamp file records the pins; a half-made or differently
# pinned environment is made again. Idempotent: later runs only build and test.
#
# Builds `cargo build --example echo` (AUTOBAHN_PROFILE=release for an
# optimised build), starts it on a free loopback port (--listen 127.0.0.1:0, the
# port read from its first line) with --cores 2, and kills it by PID on exit.
# Every wait is bounded (AUTOBAHN_TIMEOUT, default 900 s, for wstest).
# Report: target/autobahn/report/ (index.json, index.html); logs
# target/autobahn/{echo,wstest}.log.
#
# Time on 2 cores: setup about 30 s the first time (plus several minutes if
# pyenv must compile 2.7.18), then about 8 minutes for the 517 cases, almost
# all of it in sections 12 and 13 and in wstest itself (a release build of
# the server is no faster); about 15 s for the 301 cases without compression.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

die() { echo "scripts/autobahn.sh: $*" >&2; exit 2; }

BOOT=target/autobahn-bootstrap
VENV=target/autobahn-venv
OUT=target/autobahn
PROFILE=${AUTOBAHN_PROFILE:-debug}
WSTEST_TIMEOUT=${AUTOBAHN_TIMEOUT:-900}
COMPRESSION=${AUTOBAHN_COMPRESSION:-shared}
case "$COMPRESSION" in off | shared | dedicated) ;; *) die "AUTOBAHN_COMPRESSION must be off, shared or dedicated" ;; esac
PINS=(setuptools==44.0.0 txaio==2.1.0 incremental==16.10.1 pyOpenSSL==19.1.0
    cryptography==3.3.2 Twisted==19.10.0 zope.interface==4.6.0 jinja2==2.11.3
    markupsafe==1.1.1 Werkzeug==1.0.1 klein==17.10.0 service_identity==18.1.0
    unittest2==1.1.0 six==1.16.0 'autobahn[accelerate,twisted]==0.10.9')
SUITE=autobahntestsuite==25.10.1
STAMP="$VENV/.shardcast-pins"
want_stamp="virtualenv==20.21.1 ${PINS[*]} $SUITE"

# --- Python 2.7 -----------------------------------------------------------
find_python2() {
    if [[ -n "${PYTHON2:-}" ]]; then
        [[ -x "$PYTHON2" ]] || die "PYTHON2=$PYTHON2 is not an executable"
        echo "$PYTHON2"
        return
    fi
    local pyroot
    pyroot=$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")
    for p in "$pyroot/versions/2.7.18/bin/python" "$HOME/.pyenv/versions/2.7.18/bin/python"; do
        [[ -x "$p" ]] && { echo "$p"; return; }
    done
    command -v pyenv >/dev/null ||
        die "CPython 2.7.18 not found under $pyroot/versions/2.7.18 and pyenv is not installed; install pyenv and run \`pyenv install 2.7.18\`, or set PYTHON2=/path/to/python2.7"
    echo "== autobahn: CPython 2.7.18 missing; trying \`pyenv install 2.7.18\` (compiles Python, several minutes)" >&2
    timeout 1800 pyenv install -s 2.7.18 >&2 ||
        die "\`pyenv install 2.7.18\` failed (it needs a C compiler and the headers of zlib, openssl, bzip2, readline, sqlite); install it by hand or set PYTHON2=/path/to/python2.7"
    pyroot=$(pyenv root)
    [[ -x "$pyroot/versions/2.7.18/bin/python" ]] || die "pyenv install 2.7.18 left no $pyroot/versions/2.7.18/bin/python"
    echo "$pyroot/versions/2.7.18/bin/python"
}

# --- the Python 2.7 environment, once ------------------------------------
if [[ ! -x "$VENV/bin/wstest" || ! -f "$STAMP" || "$(cat "$STAMP")" != "$want_stamp" ]]; then
    PY2=$(find_python2)
    "$PY2" -c 'import sys; assert sys.version_info[:2] == (2, 7)' 2>/dev/null ||
        die "$PY2 is not Python 2.7"
    echo "== autobahn: setting up $VENV with $PY2"
    if [[ ! -x "$BOOT/bin/virtualenv" ]] ||
        [[ "$("$BOOT/bin/virtualenv" --version 2>/dev/null | awk '{print $2}')" != 20.21.1 ]]; then
        rm -rf "$BOOT"
        python3 -m venv "$BOOT" || die "python3 -m venv failed (Debian: apt-get install python3-venv)"
        timeout 600 "$BOOT/bin/pip" install -q --disable-pip-version-check --timeout 60 virtualenv==20.21.1 ||
            die "could not install virtualenv==20.21.1 into $BOOT"
    fi
    rm -rf "$VENV"
    timeout 300 "$BOOT/bin/virtualenv" -q -p "$PY2" "$VENV" || die "virtualenv -p $PY2 $VENV failed"
    pip2=(timeout 900 "$VENV/bin/pip" install -q --disable-pip-version-check
        --no-python-version-warning --timeout 60)
    "${pip2[@]}" "${PINS[@]}" || die "pip install of the pinned packages into $VENV failed"
    # Its sdist declares no dependencies: the pins above are what it needs.
    "${pip2[@]}" --no-deps "$SUITE" || die "pip install $SUITE into $VENV failed"
    [[ -x "$VENV/bin/wstest" ]] || die "$VENV/bin/wstest missing after the install"
    echo "$want_stamp" >"$STAMP"
fi

# --- the server -------------------------------------------------------------
case "$PROFILE" in
release) cargo build --quiet --locked --release --example echo ;;
debug) cargo build --quiet --locked --example echo ;;
*) die "AUTOBAHN_PROFILE must be release or debug, not $PROFILE" ;;
esac
target_dir=${CARGO_TARGET_DIR:-$root/target}
echo_bin="$target_dir/$PROFILE/examples/echo"
[[ -x "$echo_bin" ]] || die "$echo_bin missing after the build"

rm -rf "$OUT/report"
mkdir -p "$OUT"
: >"$OUT/echo.log"

echo_pid= wstest_pid=
stop_echo() {
    if [[ -n "$wstest_pid" ]]; then
        kill "$wstest_pid" 2>/dev/null || true
        wait "$wstest_pid" 2>/dev/null || true
        wstest_pid=
    fi
    if [[ -n "$echo_pid" ]]; then
        kill "$echo_pid" 2>/dev/null || true
        wait "$echo_pid" 2>/dev/null || true
        echo_pid=
    fi
}
trap stop_echo EXIT
trap 'exit 130' INT TERM

# Port 0: the kernel picks a free port (the engine binds the first core's
# socket, then binds the others to the same address), and the example prints
# it: "echo listening on ws://127.0.0.1:PORT with N cores (...)".
"$echo_bin" --listen 127.0.0.1:0 --cores 2 --compression "$COMPRESSION" >"$OUT/echo.log" 2>&1 &
echo_pid=$!
port=
for _ in $(seq 100); do
    port=$(sed -n 's|^echo listening on ws://127\.0\.0\.1:\([0-9]*\) .*|\1|p' "$OUT/echo.log" | head -1)
    [[ -n "$port" ]] && break
    kill -0 "$echo_pid" 2>/dev/null || break
    sleep 0.1
done
if [[ -z "$port" ]]; then
    cat "$OUT/echo.log" >&2
    die "the echo example did not start within 10 s (log above, $OUT/echo.log)"
fi
for _ in $(seq 50); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
done
echo "== autobahn: examples/echo ($PROFILE, pid $echo_pid) on 127.0.0.1:$port"

if [[ "$COMPRESSION" == off ]]; then
    exclude='"12.*", "13.*"'
    sections="1-11 (12.*, 13.* need compression)"
else
    exclude=
    sections="1-13 (compression $COMPRESSION)"
fi
sed -e "s|@PORT@|$port|" -e "s|@OUTDIR@|$OUT/report|" -e "s|@EXCLUDE@|$exclude|" \
    scripts/autobahn/fuzzingclient.json >"$OUT/spec.json"

echo "== autobahn: wstest -m fuzzingclient, sections $sections, at most ${WSTEST_TIMEOUT}s"
start=$SECONDS
rc=0
# In the background with `wait`, so that a signal to this script stops
# wstest and the server at once (the EXIT trap kills both by PID).
timeout "$WSTEST_TIMEOUT" "$VENV/bin/wstest" -m fuzzingclient -s "$OUT/spec.json" >"$OUT/wstest.log" 2>&1 &
wstest_pid=$!
wait "$wstest_pid" || rc=$?
wstest_pid=
echo "== autobahn: wstest finished in $((SECONDS - start)) s (exit $rc)"
if ! kill -0 "$echo_pid" 2>/dev/null; then
    echo "scripts/autobahn.sh: the echo example exited during the run; its log:" >&2
    tail -30 "$OUT/echo.log" >&2
    echo_pid=
    if ((rc == 0)); then rc=1; fi
fi
if ((rc != 0)) || [[ ! -f "$OUT/report/index.json" ]]; then
    tail -20 "$OUT/wstest.log" >&2
    ((rc == 124)) && echo "scripts/autobahn.sh: wstest did not finish within ${WSTEST_TIMEOUT}s" >&2
    echo "scripts/autobahn.sh: wstest failed (log: $OUT/wstest.log)" >&2
    exit 1
fi
stop_echo

announced=$(sed -n 's/^Ok, will run \([0-9]*\) test cases.*/\1/p' "$OUT/wstest.log" | head -1)
python3 scripts/autobahn/summarise.py "$OUT/report" shardcast ${announced:+"$announced"}
