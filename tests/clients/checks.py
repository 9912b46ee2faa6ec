"""What the Python client tests share: one line per check, and the 'N passed, N failed' summary
tests/clients/run.sh counts."""

import sys

results = {"passed": 0, "failed": 0}


def check(name, cond, detail=""):
    results["passed" if cond else "failed"] += 1
    print(("ok   " if cond else "FAIL ") + name + ("" if cond else f": {detail}"), flush=True)


def finish():
    """Prints the summary and exits 1 if a check failed."""
    print(f"{results['passed']} passed, {results['failed']} failed")
    sys.exit(1 if results["failed"] else 0)
