"""What the Python client tests share: one line per check, and the 'N passed, N failed' summary
tests/clients/run.sh counts."""

import asyncio
import json
import sys

import websockets

results = {"passed": 0, "failed": 0}


def check(name, cond, detail=""):
    results["passed" if cond else "failed"] += 1
    print(("ok   " if cond else "FAIL ") + name + ("" if cond else f": {detail}"), flush=True)


def finish():
    """Prints the summary and exits 1 if a check failed."""
    print(f"{results['passed']} passed, {results['failed']} failed")
    sys.exit(1 if results["failed"] else 0)


async def connect(url, **kwargs):
    """Connects and reads the `welcome` every connection of the server starts with (kept as `ws.welcome`)."""
    ws = await websockets.connect(url, **kwargs)
    welcome = json.loads(await asyncio.wait_for(ws.recv(), 10))
    if welcome.get("type") != "welcome":
        raise AssertionError(f"expected a welcome first, got {welcome}")
    ws.welcome = welcome
    return ws
