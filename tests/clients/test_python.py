"""Verifies the shardcast server with a real Python client (`websockets`) and parses /metrics with `prometheus_client`.

Usage: python3 test_python.py HOST:PORT [API_KEY] -- run by tests/clients/run.sh against an
anonymous server. Prints one line per check and 'N passed, N failed' at the end.
"""

import asyncio
import json
import sys
import urllib.error
import urllib.request

import websockets

from checks import check, connect, finish
from prometheus_client.parser import text_string_to_metric_families

ADDR = sys.argv[1]
TIMEOUT = 10


def http(method, path, body=None, headers=None):
    req = urllib.request.Request(f"http://{ADDR}{path}", method=method, data=body, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def metrics():
    _, text = http("GET", "/metrics")
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def total(m, name, **labels):
    return sum(v for l, v in m.get(name, []) if all(l.get(k) == w for k, w in labels.items()))


async def recv(ws):
    return json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))


async def ask(ws, msg):
    await ws.send(json.dumps(msg) if not isinstance(msg, str) else msg)
    return await recv(ws)


async def main():
    url = f"ws://{ADDR}/ws"
    before = metrics()
    check("metrics parse with prometheus_client", "shardcast_connections_active" in before, list(before)[:5])

    # Connect until every core holds a client (the kernel spreads them by hash).
    subs = []
    while len(subs) < 64:
        subs.append(await connect(url))
        per_core = [v for _, v in metrics()["shardcast_connections_active"]]
        if len(subs) >= 4 and all(v > 0 for v in per_core):
            break
    check("clients spread over every core", all(v > 0 for v in per_core), per_core)
    n = len(subs)
    for i, s in enumerate(subs):
        r = await ask(s, {"type": "subscribe", "topics": ["py"], "id": i})
        assert r == {"type": "subscribed", "topics": ["py"], "id": i}, r

    pub = await connect(url)
    w = pub.welcome
    check("the first frame is a welcome naming a session", w.get("resumed") is False and isinstance(w.get("session"), str) and "client" in w, w)
    data = '{"n" : 1.50, "s":"\\u00e9"}'
    await pub.send('{"type":"publish","topic":"py","data":' + data + ',"id":"x"}')
    ack = await recv(pub)
    check("published ack counts every core", ack == {"type": "published", "id": "x", "delivered": n}, ack)
    raws = [await asyncio.wait_for(s.recv(), TIMEOUT) for s in subs]
    want = '{"type":"message","topic":"py","data":' + data + "}"
    check("data arrives byte for byte", all(r == want for r in raws), raws[0])

    st, body = http("POST", "/api/publish", json.dumps({"topic": "py", "data": [1, 2]}).encode(), {"Content-Type": "application/json"})
    check("HTTP publish answers delivered", st == 200 and json.loads(body) == {"delivered": n}, (st, body))
    got = [await recv(s) for s in subs]
    check("HTTP publish reaches WebSocket subscribers", all(g["data"] == [1, 2] for g in got), got[0])

    cases = {
        "bad_request": "{nope",
        "forbidden": {"type": "publish", "topic": "$sys.stats", "data": 1},
    }
    for code, msg in cases.items():
        r = await ask(pub, msg)
        check(f"error {code}", r.get("type") == "error" and r.get("code") == code, r)
    big = await connect(url)
    await big.send(json.dumps({"type": "publish", "topic": "py", "data": "x" * 70000}))
    try:
        await asyncio.wait_for(big.recv(), TIMEOUT)
        code = None
    except websockets.ConnectionClosed as e:
        code = e.rcvd.code if e.rcvd else None
    await big.close()
    check("a message over max_message_size closes 1009", code == 1009, code)
    r = await ask(pub, {"type": "nonsense"})
    check("unknown type is bad_request", r.get("code") == "bad_request", r)
    r = await ask(pub, {"type": "ping", "id": 5})
    check("connection survives errors", r == {"type": "pong", "id": 5}, r)

    after = metrics()
    check(
        "deliveries counter moved",
        total(after, "shardcast_deliveries_total") >= total(before, "shardcast_deliveries_total") + 2 * n,
        total(after, "shardcast_deliveries_total"),
    )
    check(
        "error counter moved",
        total(after, "shardcast_client_errors_total", code="bad_request")
        >= total(before, "shardcast_client_errors_total", code="bad_request") + 2,
    )
    for s in subs + [pub]:
        await s.close()


asyncio.run(main())
finish()
