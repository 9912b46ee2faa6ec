#!/usr/bin/env python3
"""Summarises compare.sh's runs: per scenario, the median and range of each
figure per server, and the ratio shardcast / best peer; as Markdown and JSON.

usage: compare_summary.py RUNS.jsonl SUMMARY.md SUMMARY.json

Each line of RUNS.jsonl is one run, as compare.sh writes it:
{"scenario", "server", "round", "order", "served_by", "idle_pct_before",
 "quiet_wait_secs", "exit", "result": <the loadgen's JSON line or null>}.
Exits 1 when a run failed or lost, duplicated or reordered messages.
A cell is "median (min–max)" over the runs; † marks a server whose loadgen
was saturated in a run, ‡ one that ran while other processes used the
machine; the ratio is shardcast's median over the best
peer's (highest where more is better (↑), lowest where less is (↓)).
Python 3 standard library only.
"""

import json
import statistics
import sys

# The loadgen's CPU at or above this share of its one core: the figure
# measures the load generator, not the server (loadgen's report::CPU_WARN).
SATURATED_PCT = 90.0

# Other processes using at least this many cores during the measurement:
# the run was contended (the loadgen's own CONTENDED MACHINE warning).
CONTENDED_CORES = 0.25

# (key in the loadgen's result, label, scale, better: "hi" / "lo" / None).
# Scale turns the loadgen's unit into the one shown (ns -> µs).
FANOUT = [
    ("deliveries_per_sec", "deliveries/s", 1, "hi"),
    ("server_cpu_ns_per_delivery", "server CPU µs/delivery", 1e-3, "lo"),
    ("server_and_other_cpu_ns_per_delivery", "server + other processes' CPU µs/delivery", 1e-3, "lo"),
    ("latency_p50_us", "latency p50 µs", 1, "lo"),
    ("latency_p99_us", "latency p99 µs", 1, "lo"),
    ("latency_p99.9_us", "latency p99.9 µs", 1, "lo"),
    ("loadgen_cpu_pct_of_its_cores", "loadgen CPU %", 1, None),
    ("loadgen_cpu_ns_per_delivery", "loadgen CPU µs/delivery", 1e-3, None),
    ("other_processes_cpu_cores_used", "other load (cores)", 1, None),
    # With compare.sh --syscalls only.
    ("server_syscalls_per_delivery", "server syscalls/delivery", 1, "lo"),
    ("server_io_uring_enter_per_delivery", "server io_uring_enter/delivery", 1, None),
    ("server_io_uring_sqes_per_delivery", "server io_uring SQEs/delivery", 1, None),
]
FIXED = [
    ("latency_p50_us", "latency p50 µs", 1, "lo"),
    ("latency_p99_us", "latency p99 µs", 1, "lo"),
    ("latency_p99.9_us", "latency p99.9 µs", 1, "lo"),
    ("deliveries_per_sec", "deliveries/s", 1, None),
    ("server_cpu_ns_per_delivery", "server CPU µs/delivery", 1e-3, "lo"),
    ("server_and_other_cpu_ns_per_delivery", "server + other processes' CPU µs/delivery", 1e-3, "lo"),
    ("loadgen_cpu_pct_of_its_cores", "loadgen CPU %", 1, None),
    ("other_processes_cpu_cores_used", "other load (cores)", 1, None),
]
ECHO = [
    ("messages_per_sec", "round trips/s", 1, "hi"),
    ("server_cpu_ns_per_message", "server CPU µs/round trip", 1e-3, "lo"),
    ("server_and_other_cpu_ns_per_message", "server + other processes' CPU µs/round trip", 1e-3, "lo"),
    ("rtt_p50_us", "round trip p50 µs", 1, "lo"),
    ("rtt_p99_us", "round trip p99 µs", 1, "lo"),
    ("rtt_p99.9_us", "round trip p99.9 µs", 1, "lo"),
    ("loadgen_cpu_pct_of_its_cores", "loadgen CPU %", 1, None),
    ("other_processes_cpu_cores_used", "other load (cores)", 1, None),
    ("server_syscalls_per_message", "server syscalls/round trip", 1, "lo"),
    ("server_io_uring_enter_per_message", "server io_uring_enter/round trip", 1, None),
    ("server_io_uring_sqes_per_message", "server io_uring SQEs/round trip", 1, None),
]
IDLE = [
    ("connects_per_sec", "TCP connects/s", 1, "hi"),
    ("handshakes_per_sec", "upgrades/s", 1, "hi"),
    ("server_rss_per_conn_bytes", "server RSS B/connection", 1, "lo"),
    ("upgraded", "connections held", 1, "hi"),
    ("loadgen_cpu_pct_of_its_cores", "loadgen CPU % (opening)", 1, None),
    ("other_processes_cpu_cores_used", "other load (cores)", 1, None),
]
SHOOTOUT_TOP = [
    ("result_clients", "clients at the last step under the limit", 1, "hi"),
    ("loadgen_cpu_pct_of_its_cores", "loadgen CPU % (whole run)", 1, None),
    ("other_processes_cpu_cores_used", "other load (cores)", 1, None),
]
SHOOTOUT_STEP = [
    ("p95_ms", "round trip p95 ms", 1, "lo"),
    ("completion_p95_ms", "fanout completion p95 ms", 1, "lo"),
    ("server_cpu_ns_per_delivery", "server CPU µs/delivery", 1e-3, "lo"),
    ("loadgen_cpu_pct", "loadgen CPU %", 1, None),
]

FANOUT_DEFLATE = FANOUT[:2] + [
    ("wire_bytes_per_delivery", "bytes on the wire/delivery", 1, "lo"),
] + FANOUT[2:]

FIGURES = {
    "fanout-deflate": FANOUT_DEFLATE,
    "fanout-history": FANOUT,
    "idle-deflate": IDLE,
    "fanout-100": FANOUT,
    "fanout-1": FANOUT,
    "fanout-fixed": FIXED,
    "echo": ECHO,
    "idle": IDLE,
    "idle-subscribed": IDLE,
    "shootout": SHOOTOUT_TOP,
}


def derive(result):
    """Adds the server's CPU plus the other processes' (kernel threads such
    as ksoftirqd included) per unit of work: an upper bound on what the
    server caused, for network work the kernel deferred out of the server's
    own time."""
    if not isinstance(result, dict):
        return
    other = result.get("other_processes_cpu_cores_used")
    for per, rate in (("delivery", "deliveries_per_sec"), ("message", "messages_per_sec")):
        mine, r = result.get(f"server_cpu_ns_per_{per}"), result.get(rate)
        if isinstance(mine, (int, float)) and isinstance(other, (int, float)) and r:
            result[f"server_and_other_cpu_ns_per_{per}"] = mine + other * 1e9 / r


def failure(run):
    """Why a run counts as failed, or None."""
    r = run.get("result")
    if run.get("exit") != 0 or not isinstance(r, dict):
        return f"exit status {run.get('exit')}, no result"
    kind = r.get("scenario")
    if kind in ("fanout", "echo"):
        bad = {k: r.get(k, 0) for k in ("lost", "duplicated", "reordered", "connections_lost")}
        if r.get("correct") is not True or any(bad.values()):
            return "delivery check failed: " + ", ".join(f"{v} {k}" for k, v in bad.items() if v)
    if kind == "broadcast":
        stopped = r.get("stopped", "")
        if "not every client" in stopped or "connected" in stopped or "did not finish" in stopped:
            return stopped
    if kind == "connections":
        if r.get("upgraded", 0) < r.get("connections", 0):
            return f"only {r.get('upgraded')} of {r.get('connections')} connections held"
    return None


def saturated(r):
    """Whether the loadgen used most of its core (in a shootout: in any step)."""
    pcts = [r.get("loadgen_cpu_pct_of_its_cores") or 0]
    pcts += [st.get("loadgen_cpu_pct") or 0 for st in r.get("steps", [])]
    return max(pcts) >= SATURATED_PCT


def contended(r):
    return (r.get("other_processes_cpu_cores_used") or 0) >= CONTENDED_CORES


def stats(values):
    if not values:
        return None
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "n": len(values),
        "values": values,
    }


def fmt(v):
    if v is None:
        return "—"
    a = abs(v)
    if a >= 100_000:
        return f"{v / 1000:,.0f}k"
    if a >= 1000:
        return f"{v:,.0f}"
    if a >= 10 or float(v).is_integer():
        return f"{v:.0f}" if float(v).is_integer() else f"{v:.1f}"
    if a < 0.1:
        return f"{v:.3f}"
    return f"{v:.2f}"


def cell(s, sat, busy):
    """median (min–max); † when the loadgen was saturated in a run, ‡ when
    other processes used the machine during one."""
    if s is None:
        return "—"
    mark = (" †" if sat else "") + (" ‡" if busy else "")
    if s["n"] == 1:
        return fmt(s["median"]) + mark
    return f"{fmt(s['median'])} ({fmt(s['min'])}–{fmt(s['max'])}){mark}"


def ratio(per_server, better, servers):
    """shardcast's median / the best peer's median."""
    if better is None or "shardcast" not in servers:
        return None
    mine = per_server.get("shardcast")
    # shardcast-async (the async style of the same engine) is not a peer.
    peers = [
        per_server[s]["median"]
        for s in servers
        if not s.startswith("shardcast") and per_server.get(s)
    ]
    if not mine or not peers:
        return None
    best = max(peers) if better == "hi" else min(peers)
    if best == 0:
        return None
    return mine["median"] / best


def figure_rows(runs_by_server, figures, servers, pick):
    """One row per figure: per server stats of pick(result, key) * scale."""
    rows = []
    for key, label, scale, better in figures:
        per = {}
        for s in servers:
            vals = []
            for run in runs_by_server.get(s, []):
                v = pick(run["result"], key)
                if isinstance(v, (int, float)):
                    vals.append(v * scale)
            per[s] = stats(vals)
        if not any(per.values()):
            continue
        rows.append({
            "key": key,
            "label": label,
            "better": better,
            "servers": per,
            "ratio_shardcast_to_best_peer": ratio(per, better, servers),
        })
    return rows


def step_pick(clients):
    def pick(result, key):
        for st in result.get("steps", []):
            if st.get("clients") == clients:
                return st.get(key)
        return None
    return pick


def main():
    runs_path, md_path, json_path = sys.argv[1:4]
    runs = []
    with open(runs_path) as f:
        for line in f:
            line = line.strip()
            if line:
                runs.append(json.loads(line))
                derive(runs[-1].get("result"))
    scenarios, servers = [], []
    for r in runs:
        if r["scenario"] not in scenarios:
            scenarios.append(r["scenario"])
        if r["server"] not in servers:
            servers.append(r["server"])
    # shardcast first, then its async style, the peers in the order they ran.
    servers.sort(key=lambda s: (s != "shardcast", not s.startswith("shardcast")))
    failures = []
    checks = {}
    out = {"servers": servers, "scenarios": {}, "failures": failures}
    md = []
    for sc in scenarios:
        mine = [r for r in runs if r["scenario"] == sc]
        for r in mine:
            why = failure(r)
            if why:
                failures.append({"scenario": sc, "server": r["server"], "round": r["round"], "why": why})
        ok = {s: [r for r in mine if r["server"] == s and failure(r) is None] for s in servers}
        sat = {s: sum(1 for r in ok[s] if saturated(r["result"])) for s in servers}
        busy = {s: sum(1 for r in ok[s] if contended(r["result"])) for s in servers}
        quiet = {s: [r.get("idle_pct_before") for r in mine if r["server"] == s] for s in servers}
        binaries = {s: sorted({r.get("served_by", "") for r in mine if r["server"] == s}) for s in servers}
        rows = figure_rows(ok, FIGURES.get(sc, []), servers, lambda res, k: res.get(k))
        step_rows = []
        if sc == "shootout":
            clients = sorted({st["clients"] for rs in ok.values() for r in rs
                              for st in r["result"].get("steps", [])})
            for c in clients:
                for row in figure_rows(ok, SHOOTOUT_STEP, servers, step_pick(c)):
                    row["label"] = f"{c:,} clients: {row['label']}"
                    row["clients"] = c
                    step_rows.append(row)
        # Delivery checks summed over every run that gave a result.
        checks[sc] = {}
        if any((r.get("result") or {}).get("scenario") in ("fanout", "echo") for r in mine):
            for s in servers:
                res = [r["result"] for r in mine if r["server"] == s and isinstance(r.get("result"), dict)]
                checks[sc][s] = {k: sum(x.get(k, 0) for x in res)
                                 for k in ("lost", "duplicated", "reordered")}
        out["scenarios"][sc] = {
            "runs": {s: len(ok[s]) for s in servers},
            "failed_runs": {s: sum(1 for r in mine if r["server"] == s) - len(ok[s]) for s in servers},
            "loadgen_saturated_runs": sat,
            "contended_runs": busy,
            "delivery_checks_all_runs": checks[sc],
            "idle_pct_before_runs": quiet,
            "binaries": binaries,
            "figures": rows + step_rows,
        }
        md.append(f"### {sc}\n")
        md.append("| figure | " + " | ".join(servers) + " | shardcast ÷ best peer |")
        md.append("|---|" + "---|" * len(servers) + "---|")
        for row in rows + step_rows:
            arrow = {"hi": " (↑)", "lo": " (↓)"}.get(row["better"], "")
            r = row["ratio_shardcast_to_best_peer"]
            md.append(f"| {row['label']}{arrow} | "
                      + " | ".join(cell(row["servers"][s], sat[s], busy[s]) for s in servers)
                      + f" | {'—' if r is None else f'{r:.2f}'} |")
        if checks[sc]:
            md.append("| lost / duplicated / reordered (all runs) | "
                      + " | ".join("{lost} / {duplicated} / {reordered}".format(**checks[sc][s])
                                   for s in servers) + " | |")
        # Frames per socket write (and bytes per write), per round, for every
        # shardcast server that serves /metrics: how much each write gathered.
        per_write = {}
        for s in servers:
            ms = [(r["round"], r["server_metrics"]) for r in ok.get(s, [])
                  if (r.get("server_metrics") or {}).get("socket_writes")]
            if ms:
                per_write[s] = [{"round": rd, "frames_per_write": m["frames_written"] / m["socket_writes"],
                                 "bytes_per_write": m["bytes_out"] / m["socket_writes"]} for rd, m in ms]
        if per_write:
            out["scenarios"][sc]["shardcast_writes_per_round"] = per_write
            for key, label, f in (("frames_per_write", "frames per socket write", "{:.2f}"),
                                  ("bytes_per_write", "bytes per socket write", "{:,.0f}")):
                md.append(f"| {label} (shardcast /metrics, whole run, per round) | "
                          + " | ".join(" / ".join(f.format(x[key]) for x in per_write.get(s, []))
                                       for s in servers) + " | |")
        zipped = [r.get("server_metrics") for r in ok.get("shardcast", []) if r.get("server_metrics")]
        if zipped and sum(m["publishes"] for m in zipped) and sc.endswith("-deflate"):
            c = sum(m["compressions"] for m in zipped)
            p = sum(m["publishes"] for m in zipped)
            per = c / p
            out["scenarios"][sc]["shardcast_compressions_per_publish"] = per
            md.append(f"| compressions per publish (shardcast /metrics, all runs) | "
                      + " | ".join((fmt(per) if s == "shardcast" else "") for s in servers) + " | |")
        md.append("| runs ok / loadgen saturated / contended | "
                  + " | ".join(f"{len(ok[s])} / {sat[s]} / {busy[s]}" for s in servers) + " | |")
        md.append("")
        md.append("Served by: " + "; ".join(f"{s}: {', '.join(binaries[s])}" for s in servers) + ".")
        if any(sat.values()):
            md.append(f"† **Loadgen saturated** (≥ {SATURATED_PCT:.0f} % of its core) in "
                      "some of this server's runs: its throughput and latency measure the "
                      "load generator as much as the server; compare server CPU per unit "
                      "of work instead.")
        if any(busy.values()):
            md.append(f"‡ **Contended**: other processes used ≥ {CONTENDED_CORES} cores during "
                      "some of this server's runs; their latencies and rates are lower than "
                      "this machine can do, so rerun on a quiet machine before comparing them.")
        md.append("")
    if failures:
        md.append("### Failed runs\n")
        for f in failures:
            md.append(f"- {f['scenario']} / {f['server']} / round {f['round']}: {f['why']}")
        md.append("")
    with open(md_path, "w") as f:
        f.write("\n".join(md))
    with open(json_path, "w") as f:
        json.dump(out, f, indent=1)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
