#!/usr/bin/env python3
"""Summarises an Autobahn|Testsuite fuzzingclient report for scripts/autobahn.sh.

usage: summarise.py REPORT_DIR AGENT [EXPECTED_CASES]

Reads REPORT_DIR/index.json, prints the number of cases per behaviour and per
close behaviour, then every case whose behaviour or close behaviour is not OK
with its id and description (and, unless INFORMATIONAL, what the report
expected and what it observed). Exits 1 unless every case's behaviour and
close behaviour is OK or INFORMATIONAL, and (when EXPECTED_CASES is given,
the count wstest announced) unless the report holds exactly that many cases.
"""
import collections
import json
import os
import sys

GOOD = ("OK", "INFORMATIONAL")


def case_key(case_id):
    return [int(p) if p.isdigit() else p for p in case_id.split(".")]


def one_line(text):
    """The first line of a report's text (6.x descriptions run on in HTML)."""
    lines = [l.strip() for l in str(text).splitlines() if l.strip()]
    return (lines[0] + (" ..." if len(lines) > 1 else "")) if lines else "?"


def details(report_dir, entry):
    name = entry.get("reportfile", "")
    if name.endswith(".html"):
        name = name[: -len(".html")] + ".json"
    try:
        with open(os.path.join(report_dir, name)) as f:
            return json.load(f), name
    except (OSError, ValueError):
        return {}, name


def main():
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__)
    report_dir, agent = sys.argv[1], sys.argv[2]
    expected = int(sys.argv[3]) if len(sys.argv) == 4 else None
    with open(os.path.join(report_dir, "index.json")) as f:
        index = json.load(f)
    cases = index.get(agent, {})
    behaviour = collections.Counter(v["behavior"] for v in cases.values())
    close = collections.Counter(v["behaviorClose"] for v in cases.values())

    def fmt(counter):
        return ", ".join(f"{n} {o}" for o, n in sorted(counter.items(), key=lambda x: -x[1])) or "none"

    print(f"autobahn: {len(cases)} cases against {agent}")
    print(f"autobahn:   behaviour: {fmt(behaviour)}")
    print(f"autobahn:   close:     {fmt(close)}")

    failed = []
    for case_id in sorted(cases, key=case_key):
        v = cases[case_id]
        if v["behavior"] == "OK" and v["behaviorClose"] == "OK":
            continue
        bad = v["behavior"] not in GOOD or v["behaviorClose"] not in GOOD
        if bad:
            failed.append(case_id)
        d, name = details(report_dir, v)
        print(f"  {'FAIL' if bad else 'ok  '} {case_id} [{v['behavior']}, close {v['behaviorClose']}, "
              f"remote close code {v.get('remoteCloseCode')}]: {one_line(d.get('description', '(no description)'))}")
        if bad:
            print(f"         expected: {one_line(d.get('expectation', '?'))}")
            print(f"         observed: {one_line(d.get('result', '?'))}")
            print(f"         close expected: {d.get('expectedClose', '?')}")
            print(f"         close observed: {d.get('resultClose', '?')}"
                  + (f" ({d['wasNotCleanReason']})" if d.get("wasNotCleanReason") else ""))
            print(f"         report: {os.path.join(report_dir, name)}")

    problems = []
    if not cases:
        problems.append(f"the report holds no cases for agent {agent}")
    if expected is not None and len(cases) != expected:
        problems.append(f"wstest announced {expected} cases, the report holds {len(cases)}")
    if failed:
        problems.append(f"{len(failed)} case(s) not OK/INFORMATIONAL: {' '.join(failed)}")
    for p in problems:
        print(f"autobahn: FAILED: {p}")
    if problems:
        return 1
    print(f"autobahn: passed: all {len(cases)} cases OK or INFORMATIONAL")
    return 0


if __name__ == "__main__":
    sys.exit(main())
