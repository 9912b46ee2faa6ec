//! Results: an ordered set of named values, printed as a table or as one JSON line.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{Map, Value};

/// The loadgen's CPU use at or above this share of its cores means the
/// loadgen, not the server, may be the bottleneck.
pub const CPU_WARN: f64 = 0.90;

/// A new latency histogram in nanoseconds: 1 ns to 100 s, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("valid histogram bounds")
}

/// One scenario's results, in insertion order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    /// The values.
    pub map: Map<String, Value>,
    /// Loud warnings, printed after the table.
    pub warnings: Vec<String>,
}

impl Report {
    /// A report for `scenario`.
    pub fn new(scenario: &str) -> Self {
        let mut r = Self::default();
        r.set("scenario", scenario);
        r
    }

    /// Sets `key` (keeps its first position when set again).
    pub fn set(&mut self, key: &str, v: impl Into<Value>) -> &mut Self {
        self.map.insert(key.to_string(), v.into());
        self
    }

    /// Sets `key` to a float rounded to `digits` decimals.
    pub fn num(&mut self, key: &str, v: f64, digits: i32) -> &mut Self {
        if digits <= 0 && v.is_finite() && v.abs() < 9e15 {
            return self.set(key, v.round() as i64);
        }
        let p = 10f64.powi(digits);
        self.set(key, (v * p).round() / p)
    }

    /// A float value, if present.
    pub fn get_f64(&self, key: &str) -> Option<f64> {
        self.map.get(key).and_then(Value::as_f64)
    }

    /// Adds a warning.
    pub fn warn(&mut self, w: String) {
        self.warnings.push(w);
    }

    /// Adds latency percentiles (in microseconds) from a nanosecond histogram
    /// under `prefix` (e.g. `latency`): `_p50_us` … `_max_us`.
    pub fn latency(&mut self, prefix: &str, h: &Histogram<u64>) {
        self.set(&format!("{prefix}_samples"), h.len());
        if h.is_empty() {
            return;
        }
        let us = |ns: u64| (ns as f64 / 100.0).round() / 10.0;
        for (name, q) in [
            ("p50", 0.50),
            ("p90", 0.90),
            ("p99", 0.99),
            ("p99.9", 0.999),
        ] {
            self.set(&format!("{prefix}_{name}_us"), us(h.value_at_quantile(q)));
        }
        self.set(&format!("{prefix}_max_us"), us(h.max()));
        self.set(&format!("{prefix}_mean_us"), us(h.mean() as u64));
    }

    /// Adds the loadgen's CPU use over `wall` (`cpu` over `cores` cores), and
    /// the server's when known; warns when the loadgen is near saturation.
    pub fn cpu(&mut self, wall: Duration, cpu: Duration, cores: usize, server: Option<Duration>) {
        let w = wall.as_secs_f64().max(1e-9);
        let share = cpu.as_secs_f64() / w / cores.max(1) as f64;
        self.num("loadgen_cpu_cores_used", cpu.as_secs_f64() / w, 2);
        self.num("loadgen_cpu_pct_of_its_cores", share * 100.0, 1);
        if let Some(s) = server {
            self.num("server_cpu_cores_used", s.as_secs_f64() / w, 2);
        }
        if share >= CPU_WARN {
            self.warn(format!(
                "LOADGEN SATURATED: it used {:.0}% of its {cores} core(s); these figures \
                 measure the load generator, not the server. Give it more cores or less load.",
                share * 100.0
            ));
        }
    }

    /// Adds the CPU time other processes of the machine used over `wall`,
    /// and warns when it is enough to distort the figures.
    pub fn others(&mut self, wall: Duration, others: Option<Duration>, server_known: bool) {
        let Some(o) = others else { return };
        let cores = o.as_secs_f64() / wall.as_secs_f64().max(1e-9);
        let key = if server_known {
            "other_processes_cpu_cores_used"
        } else {
            "other_processes_incl_server_cpu_cores_used"
        };
        self.num(key, cores, 2);
        if server_known && cores >= 0.25 {
            self.warn(format!(
                "CONTENDED MACHINE: other processes used {cores:.2} cores during the \
                 measurement; these figures are lower than this machine can do."
            ));
        }
    }

    /// One JSON line.
    pub fn to_json(&self) -> String {
        let mut m = self.map.clone();
        if !self.warnings.is_empty() {
            m.insert("warnings".into(), self.warnings.clone().into());
        }
        Value::Object(m).to_string()
    }

    /// Parses a JSON line written by [`to_json`](Self::to_json).
    pub fn from_json(line: &str) -> Option<Self> {
        let Value::Object(mut map) = serde_json::from_str(line).ok()? else {
            return None;
        };
        let warnings = match map.remove("warnings") {
            Some(Value::Array(a)) => a
                .into_iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        };
        Some(Self { map, warnings })
    }

    /// A two-column table.
    pub fn to_table(&self) -> String {
        let w = self.map.keys().map(String::len).max().unwrap_or(0);
        let mut out = String::new();
        for (k, v) in &self.map {
            let v = match v {
                Value::String(s) => s.clone(),
                // Timelines: hundreds of rows belong in the JSON, not here.
                Value::Array(items) if items.len() > 20 => {
                    format!("({} entries; see --json)", items.len())
                }
                Value::Array(items) => items
                    .iter()
                    .map(Value::to_string)
                    .collect::<Vec<_>>()
                    .join(&format!("\n  {:w$}  ", "")),
                other => other.to_string(),
            };
            out.push_str(&format!("  {k:<w$}  {v}\n"));
        }
        for warning in &self.warnings {
            out.push_str(&format!("\n  !!! {warning}\n"));
        }
        out
    }
}

/// Progress on stderr: rewritten in place on a terminal, a line a second otherwise.
pub struct Progress {
    tty: bool,
    last: std::time::Instant,
    enabled: bool,
}

impl Progress {
    /// A progress display; `enabled` false makes it silent.
    pub fn new(enabled: bool) -> Self {
        use std::io::IsTerminal;
        Self {
            tty: std::io::stderr().is_terminal(),
            last: std::time::Instant::now(),
            enabled,
        }
    }

    /// Shows `msg` (rate-limited when not on a terminal).
    pub fn show(&mut self, msg: &str) {
        if !self.enabled {
            return;
        }
        if self.tty {
            eprint!("\r\x1b[2K{msg}");
        } else if self.last.elapsed() >= Duration::from_secs(1) {
            eprintln!("{msg}");
            self.last = std::time::Instant::now();
        }
    }

    /// Ends the current progress line.
    pub fn done(&mut self, msg: &str) {
        if !self.enabled {
            return;
        }
        if self.tty {
            eprintln!("\r\x1b[2K{msg}");
        } else {
            eprintln!("{msg}");
        }
    }
}

/// A text bar: `[#####.....] 50%`.
pub fn bar(done: u64, total: u64) -> String {
    let frac = if total == 0 {
        1.0
    } else {
        (done as f64 / total as f64).min(1.0)
    };
    let n = (frac * 30.0) as usize;
    format!(
        "[{}{}] {:>3.0}%",
        "#".repeat(n),
        ".".repeat(30 - n),
        frac * 100.0
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trip_keeps_order_and_warnings() {
        let mut r = Report::new("echo");
        r.set("b", 2).set("a", "x");
        r.cpu(Duration::from_secs(1), Duration::from_secs(2), 2, None);
        assert_eq!(r.warnings.len(), 1);
        let back = Report::from_json(&r.to_json()).unwrap();
        assert_eq!(back, r);
        let keys: Vec<_> = back.map.keys().cloned().collect();
        assert_eq!(&keys[..3], ["scenario", "b", "a"]);
        assert!(r.to_table().contains("LOADGEN SATURATED"));
    }

    #[test]
    fn latency_in_microseconds() {
        let mut h = histogram();
        for v in 1..=1000u64 {
            h.record(v * 1000).unwrap();
        }
        let mut r = Report::new("x");
        r.latency("latency", &h);
        let p50 = r.get_f64("latency_p50_us").unwrap();
        assert!((499.0..=501.0).contains(&p50), "{p50}");
        let max = r.get_f64("latency_max_us").unwrap();
        assert!((999.0..=1001.0).contains(&max), "{max}");
    }
}
