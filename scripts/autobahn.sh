#!/usr/bin/env bash
# Runs the Autobahn|Testsuite fuzzing client (wstest -m fuzzingclient)
# against examples/echo: every case of sections 1-11 (12 and 13 are
# permessage-deflate, which the engine does not offer yet). Fails unless
# every case's behaviour and close behaviour is OK or INFORMATIONAL, and
# prints the counts per outcome and every other case with its description.
#
# Autobahn|Testsuite is Python 2.7 software. The script makes its own
# environment, once, under target/: a Python 3 venv holding virtualenv
# 20.21.1 (the last release that creates 2.7 environments), then a 2.7
# virtualenv with the pinned packages below. It needs CPython 2.7.18 from
# pyenv (PYTHON2 overrides the path). About 30 s to set up the first time,
# then about 15 s per run on 2 cores (debug build of the echo example).
# Report: target/autobahn/report/index.html.
set -euo pipefail
cd "$(dirname "$0")/.."

PY2=${PYTHON2:-$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")/versions/2.7.18/bin/python}
BOOT=target/autobahn-bootstrap
VENV=target/autobahn-venv
OUT=target/autobahn
PORT=${PORT:-9371}

if [[ ! -x "$VENV/bin/wstest" ]]; then
    if [[ ! -x "$PY2" ]] && command -v pyenv >/dev/null && [[ -z "${PYTHON2:-}" ]]; then
        echo "== autobahn: pyenv install 2.7.18 (several minutes)"
        pyenv install -s 2.7.18
    fi
    if [[ ! -x "$PY2" ]]; then
        echo "autobahn: CPython 2.7.18 not found at $PY2 (pyenv install 2.7.18, or set PYTHON2)" >&2
        exit 2
    fi
    echo "== autobahn: setting up $VENV (Python 2.7)"
    python3 -m venv "$BOOT"
    "$BOOT/bin/pip" install -q --disable-pip-version-check virtualenv==20.21.1
    "$BOOT/bin/virtualenv" -q -p "$PY2" "$VENV"
    pip2=("$VENV/bin/pip" install -q --disable-pip-version-check --no-python-version-warning)
    "${pip2[@]}" setuptools==44.0.0 txaio==2.1.0 incremental==16.10.1 pyOpenSSL==19.1.0 \
        cryptography==3.3.2 Twisted==19.10.0 zope.interface==4.6.0 jinja2==2.11.3 \
        markupsafe==1.1.1 Werkzeug==1.0.1 klein==17.10.0 service_identity==18.1.0 \
        unittest2==1.1.0 six==1.16.0 'autobahn[accelerate,twisted]==0.10.9'
    # Its sdist declares no dependencies: the pins above are what it needs.
    "${pip2[@]}" autobahntestsuite==25.10.1
fi

cargo build --quiet --locked --example echo
rm -rf "$OUT/report"
mkdir -p "$OUT"
cat >"$OUT/spec.json" <<EOF
{"outdir": "$OUT/report",
 "servers": [{"agent": "shardcast", "url": "ws://127.0.0.1:$PORT"}],
 "cases": ["*"], "exclude-cases": ["12.*", "13.*"], "exclude-agent-cases": {}}
EOF

"${CARGO_TARGET_DIR:-target}/debug/examples/echo" --listen "127.0.0.1:$PORT" --cores 2 \
    >"$OUT/echo.log" 2>&1 &
echo_pid=$!
trap 'kill "$echo_pid" 2>/dev/null || true' EXIT
for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
    sleep 0.1
done

echo "== autobahn: wstest -m fuzzingclient, sections 1-11, against examples/echo"
timeout 900 "$VENV/bin/wstest" -m fuzzingclient -s "$OUT/spec.json" >"$OUT/wstest.log" 2>&1 || {
    tail -20 "$OUT/wstest.log" >&2
    echo "autobahn: wstest failed (log: $OUT/wstest.log)" >&2
    exit 1
}

python3 - "$OUT/report/index.json" <<'EOF'
import collections, json, sys
cases = json.load(open(sys.argv[1]))["shardcast"]
good = ("OK", "INFORMATIONAL")
counts = collections.Counter(f"{v['behavior']}/{v['behaviorClose']}" for v in cases.values())
bad = {k: v for k, v in cases.items() if v["behavior"] not in good or v["behaviorClose"] not in good}
print(f"autobahn: {len(cases)} cases: " + ", ".join(f"{n} {o}" for o, n in sorted(counts.items())))
def key(case):
    return [int(p) for p in case.split(".")]
for k in sorted(bad, key=key):
    v = bad[k]
    print(f"  {k}: {v['behavior']} (close {v['behaviorClose']}), see report/{v['reportfile']}")
print(f"autobahn: {len(cases) - len(bad)} passed, {len(bad)} failed")
sys.exit(1 if bad or not cases else 0)
EOF
