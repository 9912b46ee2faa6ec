//! What the churn check reads from the server: its Prometheus metrics, summed over cores, and `/proc/PID/status`.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream as StdStream};
use std::time::{Duration, Instant};

/// Sums of every metric in a Prometheus text page, by name (labels summed
/// over).
pub type Metrics = BTreeMap<String, f64>;

/// Parses Prometheus text: `name{labels} value` lines, summed by name.
pub fn parse_metrics(text: &str) -> Metrics {
    let mut m = Metrics::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let Some(v) = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) else {
            continue;
        };
        *m.entry(line[..name_end].to_string()).or_default() += v;
    }
    m
}

/// `GET path` on `addr` over HTTP/1.1, the body as text.
///
/// # Errors
/// Connect, I/O or a status other than 200.
pub fn fetch_metrics(addr: SocketAddr, path: &str) -> Result<Metrics, String> {
    let mut s = StdStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| format!("metrics: connect {addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| format!("metrics: {e}"))?;
    let mut body = String::new();
    s.read_to_string(&mut body)
        .map_err(|e| format!("metrics: {e}"))?;
    let (head, text) = body.split_once("\r\n\r\n").ok_or("metrics: no HTTP head")?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!("metrics: {}", head.lines().next().unwrap_or("")));
    }
    Ok(parse_metrics(text))
}

/// A `kB` field of `/proc/PID/status` (e.g. `RssAnon`), in KiB.
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

pub(super) fn get(m: &Metrics, k: &str) -> u64 {
    m.get(k).copied().unwrap_or(0.0) as u64
}

/// Polls the server's metrics every 100 ms until `cond` holds or `timeout`
/// passes; returns the last page and whether `cond` held.
pub(super) fn poll_metrics(
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
    mut cond: impl FnMut(&Metrics) -> bool,
) -> Result<(Metrics, bool), String> {
    let deadline = Instant::now() + timeout;
    loop {
        let m = fetch_metrics(addr, path)?;
        if cond(&m) {
            return Ok((m, true));
        }
        if Instant::now() >= deadline {
            return Ok((m, false));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_summed_over_labels() {
        let m = parse_metrics(
            "# HELP x y\n# TYPE x gauge\nshardcast_registry_topics{core=\"0\"} 3\nshardcast_registry_topics{core=\"1\"} 4\nshardcast_uptime_seconds 1.5\n",
        );
        assert_eq!(m["shardcast_registry_topics"], 7.0);
        assert_eq!(m["shardcast_uptime_seconds"], 1.5);
    }

    #[test]
    fn status_fields_are_read_in_kib() {
        let me = std::process::id();
        assert!(status_kib(me, "VmRSS").unwrap() > 0);
        assert!(status_kib(me, "RssAnon").is_some());
        assert_eq!(status_kib(me, "NoSuchField"), None);
    }
}
