//! The results as Markdown tables: one per scenario, the columns a reader compares first.

use std::fmt::Write as _;

use serde_json::Value;

use crate::plot::label;
use crate::report::Report;

/// The results as Markdown, one table per scenario, the columns a reader
/// compares first.
pub fn tables(reports: &[Report]) -> String {
    const COLS: &[(&str, &[(&str, &str)])] = &[
        (
            "connections",
            &[
                ("connections", "upgraded"),
                ("connects/s", "connects_per_sec"),
                ("handshakes/s", "handshakes_per_sec"),
                ("server RSS/conn (B)", "server_rss_per_conn_bytes"),
                ("server cleanup (s)", "server_cleanup_secs"),
                ("loadgen CPU %", "loadgen_cpu_pct_of_its_cores"),
            ],
        ),
        (
            "fanout",
            &[
                ("deliveries/s", "deliveries_per_sec"),
                ("p50 µs", "latency_p50_us"),
                ("p90 µs", "latency_p90_us"),
                ("p99 µs", "latency_p99_us"),
                ("p99.9 µs", "latency_p99.9_us"),
                ("max µs", "latency_max_us"),
                ("lost", "lost"),
                ("dup", "duplicated"),
                ("reord", "reordered"),
                ("loadgen CPU %", "loadgen_cpu_pct_of_its_cores"),
                ("server cores", "server_cpu_cores_used"),
                ("server ns/delivery", "server_cpu_ns_per_delivery"),
                ("others' cores", "other_processes_cpu_cores_used"),
            ],
        ),
        (
            "echo",
            &[
                ("messages/s", "messages_per_sec"),
                ("p50 µs", "rtt_p50_us"),
                ("p99 µs", "rtt_p99_us"),
                ("p99.9 µs", "rtt_p99.9_us"),
                ("max µs", "rtt_max_us"),
                ("lost", "lost"),
                ("loadgen CPU %", "loadgen_cpu_pct_of_its_cores"),
                ("server cores", "server_cpu_cores_used"),
                ("others' cores", "other_processes_cpu_cores_used"),
            ],
        ),
        (
            "broadcast",
            &[
                ("clients (p95 ≤ limit)", "result_clients"),
                ("p95 ms", "result_p95_ms"),
                ("stopped", "stopped"),
                ("loadgen CPU %", "loadgen_cpu_pct_of_its_cores"),
                ("others' cores", "other_processes_cpu_cores_used"),
            ],
        ),
    ];
    let mut md = String::new();
    for (scenario, cols) in COLS {
        let rows: Vec<&Report> = reports
            .iter()
            .filter(|r| r.map.get("scenario").and_then(Value::as_str) == Some(scenario))
            .collect();
        if rows.is_empty() {
            continue;
        }
        let _ = writeln!(md, "\n### {scenario}\n");
        let _ = writeln!(
            md,
            "| run | {} |",
            cols.iter().map(|c| c.0).collect::<Vec<_>>().join(" | ")
        );
        let _ = writeln!(md, "|---|{}", "---|".repeat(cols.len()));
        for r in rows {
            let cells: Vec<String> = cols
                .iter()
                .map(|(_, k)| match r.map.get(*k) {
                    Some(Value::String(s)) => s.clone(),
                    Some(v) => v.to_string(),
                    None => "–".into(),
                })
                .collect();
            let _ = writeln!(md, "| {} | {} |", label(r), cells.join(" | "));
        }
        if scenario == &"broadcast" {
            for r in reports
                .iter()
                .filter(|r| r.map.get("scenario").and_then(Value::as_str) == Some("broadcast"))
            {
                let _ = writeln!(md, "\n| clients | p50 ms | p95 ms | p99 ms | deliveries/s |\n|---|---|---|---|---|");
                for s in r
                    .map
                    .get("steps")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let _ = writeln!(
                        md,
                        "| {} | {} | {} | {} | {} |",
                        s["clients"],
                        s["p50_ms"],
                        s["p95_ms"],
                        s["p99_ms"],
                        s["deliveries_per_sec"]
                    );
                }
            }
        }
    }
    for r in reports {
        for w in &r.warnings {
            let _ = writeln!(md, "\n> **{}**: {w}", label(r));
        }
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_table_per_scenario_present() {
        let mut f = Report::new("fanout");
        f.set("deliveries_per_sec", 5);
        let md = tables(&[f, Report::new("echo")]);
        assert!(md.contains("### fanout") && md.contains("### echo") && md.contains("| fanout"));
        assert!(!md.contains("### broadcast"));
        assert!(md.contains("| 5 |"));
    }
}
