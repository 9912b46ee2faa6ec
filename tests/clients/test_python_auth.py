"""Verifies JWT auth and per-connection limits of the shardcast server with a real Python client (`websockets`).

Usage: python3 test_python_auth.py HOST:PORT SECRET -- run by tests/clients/run.sh against a
server started with --jwt-secret SECRET --max-subscriptions 2 --publish-rate 1 --publish-burst 2
--auth-timeout-secs 1. Tokens are minted here (HS256 with the standard library). Prints one line
per check and 'N passed, N failed' at the end.
"""

import asyncio
import base64
import hashlib
import hmac
import json
import sys
import time

import websockets

from checks import check, connect, finish

ADDR, SECRET = sys.argv[1], sys.argv[2]
TIMEOUT = 10


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt(claims, secret=SECRET):
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps(claims).encode())
    sig = hmac.new(secret.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(sig)}"


def claims(**extra):
    c = {"sub": "py", "exp": int(time.time()) + 600, "subscribe": ["news", "chat.*"], "publish": ["chat.*"]}
    c.update(extra)
    return c


async def recv(ws):
    return json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))


async def ask(ws, msg):
    await ws.send(json.dumps(msg))
    return await recv(ws)


async def refused_status(path):
    try:
        ws = await websockets.connect(f"ws://{ADDR}{path}")
    except websockets.exceptions.InvalidStatus as e:
        return e.response.status_code
    await ws.close()
    return 101


async def close_code(ws):
    try:
        while True:
            await asyncio.wait_for(ws.recv(), TIMEOUT)
    except websockets.exceptions.ConnectionClosed as e:
        return e.rcvd.code if e.rcvd else None


async def main():
    base = f"ws://{ADDR}/ws"
    check("expired token: 401", await refused_status("/ws?token=" + jwt(claims(exp=int(time.time()) - 5))) == 401)
    check("wrong signature: 401", await refused_status("/ws?token=" + jwt(claims(), "not-the-secret")) == 401)

    ws = await connect(base + "?token=" + jwt(claims()))
    r = await ask(ws, {"type": "subscribe", "topics": ["news", "secret"], "id": 1})
    check("valid token subscribes granted topics", r == {"type": "subscribed", "topics": ["news"], "id": 1}, r)
    e = await recv(ws)
    check("forbidden topic for subscribe", e.get("code") == "forbidden" and e.get("topics") == ["secret"], e)
    e = await ask(ws, {"type": "publish", "topic": "news", "data": 1, "id": 2})
    check("forbidden topic for publish", e.get("code") == "forbidden" and e.get("id") == 2, e)
    r = await ask(ws, {"type": "subscribe", "topics": ["chat.a", "chat.b"], "id": 3})
    e = await recv(ws)
    check("too_many_subscriptions", r.get("topics") == ["chat.a"] and e.get("code") == "too_many_subscriptions", (r, e))
    codes = []
    for i in range(6):
        m = await ask(ws, {"type": "publish", "topic": "chat.x", "data": i, "id": 10 + i})
        codes.append(m.get("code") or m.get("type"))
    check("publish flood gets rate_limited", codes[:2] == ["published"] * 2 and "rate_limited" in codes, codes)
    await ws.close()

    headers = {"Authorization": "Bearer " + jwt(claims())}
    try:
        ws = await connect(base, additional_headers=headers)
        r = await ask(ws, {"type": "subscribe", "topics": ["news"]})
        check("bearer header authenticates", r.get("type") == "subscribed", r)
        await ws.close()
    except TypeError:  # older websockets: extra_headers
        ws = await connect(base, extra_headers=headers)
        r = await ask(ws, {"type": "subscribe", "topics": ["news"]})
        check("bearer header authenticates", r.get("type") == "subscribed", r)
        await ws.close()

    ws = await connect(base)
    e = await ask(ws, {"type": "subscribe", "topics": ["news"], "id": 1})
    check("unauthenticated subscribe: unauthorized", e.get("code") == "unauthorized", e)
    r = await ask(ws, {"type": "auth", "token": jwt(claims()), "id": "a"})
    check("auth message authenticates", r == {"type": "authenticated", "sub": "py", "id": "a"}, r)
    await ws.close()

    ws = await connect(base)
    e = await ask(ws, {"type": "auth", "token": jwt(claims(), "wrong")})
    check("bad auth message: unauthorized", e.get("code") == "unauthorized", e)
    check("bad auth message: close 1008", await close_code(ws) == 1008)

    ws = await connect(base)
    e = await recv(ws)
    check("auth deadline: unauthorized", e.get("code") == "unauthorized", e)
    check("auth deadline: close 1008", await close_code(ws) == 1008)


asyncio.run(main())
finish()
