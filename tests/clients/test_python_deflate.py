"""Verifies permessage-deflate with a real Python client (`websockets`) against a server started with
`--compression shared`: clients that negotiate it and clients that don't subscribe to one topic,
messages are published over HTTP and from a compressing client, everyone gets them whole, and
/metrics shows one compression per publish whatever the number of subscribers.

Usage: python3 test_python_deflate.py HOST:PORT -- run by tests/clients/run.sh. Prints one line per
check and 'N passed, N failed' at the end.
"""

import asyncio
import json
import sys
import urllib.request

import websockets

from checks import check, connect, finish

ADDR = sys.argv[1]
TIMEOUT = 10


def counter(name):
    with urllib.request.urlopen(f"http://{ADDR}/metrics", timeout=TIMEOUT) as r:
        text = r.read().decode()
    return sum(float(l.split()[-1]) for l in text.splitlines() if l.startswith(name + "{") or l.startswith(name + " "))


def payload(i):
    # About 1 KiB of JSON that compresses well, different each time.
    return {"seq": i, "rows": [{"sym": f"S{k:03}", "bid": 100 + k % 7, "ask": 101 + k % 5} for k in range(24)]}


async def recv(ws):
    return json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))


async def main():
    url = f"ws://{ADDR}/ws"
    zipped = [await connect(url, compression="deflate", max_size=None) for _ in range(3)]
    plain = [await connect(url, compression=None) for _ in range(2)]
    ext = zipped[0].response.headers.get("Sec-WebSocket-Extensions", "")
    check("the server accepts websockets' offer", ext.startswith("permessage-deflate") and "server_no_context_takeover" in ext, ext)
    check("no extension without an offer", plain[0].response.headers.get("Sec-WebSocket-Extensions") is None,
          plain[0].response.headers.get("Sec-WebSocket-Extensions"))
    for i, ws in enumerate(zipped + plain):
        await ws.send(json.dumps({"type": "subscribe", "topics": ["z"], "id": i}))
        r = await recv(ws)
        check(f"client {i} subscribed", r.get("type") == "subscribed", r)

    publisher = await connect(url, compression="deflate")
    before = (counter("shardcast_compressions_total"), counter("shardcast_messages_out_compressed_total"))
    sent = []
    for i in range(10):
        data = payload(i)
        sent.append(data)
        if i % 2 == 0:
            # websockets compresses what it sends: the server inflates it.
            await publisher.send(json.dumps({"type": "publish", "topic": "z", "data": data}))
        else:
            body = json.dumps({"topic": "z", "data": data}).encode()
            req = urllib.request.Request(f"http://{ADDR}/api/publish", data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
            urllib.request.urlopen(req, timeout=TIMEOUT).read()
        # One at a time, so HTTP and WebSocket publishes keep their order.
        m = await recv(plain[0])
        check(f"publish {i} reaches a plain subscriber", m.get("data") == data, m)
    for n, ws in enumerate(zipped + plain[1:]):
        got = [(await recv(ws)).get("data") for _ in sent]
        check(f"subscriber {n} gets every publish whole and in order", got == sent, got[:1])
    after = (counter("shardcast_compressions_total"), counter("shardcast_messages_out_compressed_total"))
    check("one compression per publish", after[0] - before[0] == len(sent), (before, after))
    check("every compressing subscriber got compressed frames",
          after[1] - before[1] == len(sent) * len(zipped), (before, after))
    for ws in zipped + plain + [publisher]:
        await ws.close()


asyncio.run(main())
finish()
