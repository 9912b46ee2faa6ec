//! The server's memory over time: a thread samples `/proc/PID/status` (VmRSS, VmHWM) at a fixed interval, and the timeline is summarised for a report.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::report::Report;

/// One sample: seconds since the sampler started, resident set and its
/// high-water mark, in KiB.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// Seconds since [`Sampler::start`].
    pub t: f64,
    /// `VmRSS`, KiB.
    pub rss_kib: u64,
    /// `VmHWM` (the peak RSS so far), KiB.
    pub hwm_kib: u64,
}

/// `VmRSS` and `VmHWM` of process `pid`, in KiB.
pub fn read(pid: u32) -> Option<(u64, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_status(&s)
}

fn parse_status(s: &str) -> Option<(u64, u64)> {
    let field = |name: &str| -> Option<u64> {
        let l = s.lines().find(|l| l.starts_with(name))?;
        l.split_whitespace().nth(1)?.parse().ok()
    };
    Some((field("VmRSS:")?, field("VmHWM:").unwrap_or(0)))
}

/// Samples a process's memory on its own thread until [`finish`](Self::finish).
/// Phase changes are marked with [`mark`](Self::mark), which also takes a
/// sample, so the value at a boundary is exact rather than up to one
/// interval old.
pub struct Sampler {
    pid: u32,
    start: Instant,
    samples: Arc<Mutex<Vec<Sample>>>,
    marks: Vec<(String, f64)>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Sampler {
    /// Starts sampling `pid` every `interval` (at least 10 ms).
    pub fn start(pid: u32, interval: Duration) -> Self {
        let start = Instant::now();
        let samples = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let interval = interval.max(Duration::from_millis(10));
        let thread = {
            let (samples, stop) = (samples.clone(), stop.clone());
            std::thread::Builder::new()
                .name("loadgen-rss".into())
                .spawn(move || {
                    let mut next = Instant::now();
                    while !stop.load(Ordering::Relaxed) {
                        if let Some(s) = take(pid, start) {
                            lock(&samples).push(s);
                        }
                        next += interval;
                        // Short sleeps, so finish() does not wait an interval.
                        while !stop.load(Ordering::Relaxed) && Instant::now() < next {
                            std::thread::sleep(
                                next.saturating_duration_since(Instant::now())
                                    .min(Duration::from_millis(20)),
                            );
                        }
                    }
                })
                .ok()
        };
        Self {
            pid,
            start,
            samples,
            marks: Vec::new(),
            stop,
            thread,
        }
    }

    /// Marks the start of phase `name` now and takes a sample.
    pub fn mark(&mut self, name: &str) {
        if let Some(s) = take(self.pid, self.start) {
            lock(&self.samples).push(s);
        }
        self.marks
            .push((name.to_string(), self.start.elapsed().as_secs_f64()));
    }

    /// Stops sampling; returns the samples in time order and the marks.
    pub fn finish(mut self) -> (Vec<Sample>, Vec<(String, f64)>) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let mut v = std::mem::take(&mut *lock(&self.samples));
        v.sort_by(|a, b| a.t.total_cmp(&b.t));
        (v, std::mem::take(&mut self.marks))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn take(pid: u32, start: Instant) -> Option<Sample> {
    let (rss_kib, hwm_kib) = read(pid)?;
    Some(Sample {
        t: start.elapsed().as_secs_f64(),
        rss_kib,
        hwm_kib,
    })
}

/// What a timeline says about the part between marks `from` and `to`
/// (e.g. `measure` and `drain`: the measurement after warm-up).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    /// RSS at `from` (the last sample at or before it), KiB.
    pub at_start_kib: u64,
    /// Largest RSS from `from` to `to`, KiB.
    pub max_kib: u64,
    /// RSS at `to` (the last sample at or before it), KiB.
    pub at_end_kib: u64,
    /// `max_kib / at_start_kib`.
    pub growth: f64,
    /// Least-squares slope of RSS over the interval, KiB per minute.
    pub slope_kib_per_min: f64,
}

/// Summarises `samples` between times `from` and `to` (seconds); None
/// without a sample at or before `from`.
pub fn summarize(samples: &[Sample], from: f64, to: f64) -> Option<Summary> {
    let at = |t: f64| samples.iter().rev().find(|s| s.t <= t + 1e-9);
    let start = at(from)?;
    let end = at(to)?;
    let inside: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.t >= from - 1e-9 && s.t <= to + 1e-9)
        .collect();
    let max_kib = inside
        .iter()
        .map(|s| s.rss_kib)
        .max()
        .unwrap_or(start.rss_kib)
        .max(start.rss_kib);
    let n = inside.len() as f64;
    let slope = if inside.len() >= 2 {
        let mt = inside.iter().map(|s| s.t).sum::<f64>() / n;
        let mr = inside.iter().map(|s| s.rss_kib as f64).sum::<f64>() / n;
        let cov: f64 = inside
            .iter()
            .map(|s| (s.t - mt) * (s.rss_kib as f64 - mr))
            .sum();
        let var: f64 = inside.iter().map(|s| (s.t - mt).powi(2)).sum();
        if var > 0.0 {
            cov / var * 60.0
        } else {
            0.0
        }
    } else {
        0.0
    };
    Some(Summary {
        at_start_kib: start.rss_kib,
        max_kib,
        at_end_kib: end.rss_kib,
        growth: max_kib as f64 / start.rss_kib.max(1) as f64,
        slope_kib_per_min: slope,
    })
}

/// Adds the timeline (`server_rss_timeline`: `[seconds, RSS KiB, HWM KiB]`
/// rows; `server_rss_marks`: phase name → seconds) and, when the marks
/// `measure` and `drain` exist, the summary of the measurement to `r`.
pub fn report(r: &mut Report, samples: &[Sample], marks: &[(String, f64)], interval: Duration) {
    r.set("server_rss_interval_ms", interval.as_millis() as u64);
    if let Some(first) = samples.first() {
        r.set("server_rss_first_kib", first.rss_kib);
    }
    if let Some(peak) = samples.iter().map(|s| s.rss_kib).max() {
        r.set("server_rss_peak_kib", peak);
    }
    if let Some(last) = samples.last() {
        r.set("server_rss_last_kib", last.rss_kib);
        r.set("server_rss_hwm_kib", last.hwm_kib);
    }
    let mark = |name: &str| marks.iter().find(|m| m.0 == name).map(|m| m.1);
    if let (Some(from), Some(to)) = (mark("measure"), mark("drain")) {
        if let Some(s) = summarize(samples, from, to) {
            r.set("server_rss_measure_start_kib", s.at_start_kib);
            r.set("server_rss_measure_max_kib", s.max_kib);
            r.set("server_rss_measure_end_kib", s.at_end_kib);
            r.num("server_rss_measure_growth", s.growth, 4);
            r.num(
                "server_rss_measure_slope_kib_per_min",
                s.slope_kib_per_min,
                1,
            );
        }
    }
    let mut m = serde_json::Map::new();
    for (name, t) in marks {
        m.insert(name.clone(), json!((t * 1000.0).round() / 1000.0));
    }
    r.set("server_rss_marks", Value::Object(m));
    r.set(
        "server_rss_timeline",
        samples
            .iter()
            .map(|s| json!([(s.t * 1000.0).round() / 1000.0, s.rss_kib, s.hwm_kib]))
            .collect::<Vec<_>>(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(t: f64, rss_kib: u64) -> Sample {
        Sample {
            t,
            rss_kib,
            hwm_kib: rss_kib,
        }
    }

    #[test]
    fn parses_proc_status() {
        let st = "Name:\tx\nVmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\n";
        assert_eq!(parse_status(st), Some((1024, 2048)));
        assert_eq!(parse_status("Name:\tx\n"), None);
        let (rss, hwm) = read(std::process::id()).unwrap();
        assert!(rss > 0 && hwm >= rss);
    }

    #[test]
    fn summary_of_flat_and_growing_timelines() {
        let flat: Vec<_> = (0..=10).map(|i| s(i as f64, 1000)).collect();
        let f = summarize(&flat, 2.0, 10.0).unwrap();
        assert_eq!(
            (f.at_start_kib, f.max_kib, f.at_end_kib),
            (1000, 1000, 1000)
        );
        assert_eq!(f.growth, 1.0);
        assert_eq!(f.slope_kib_per_min, 0.0);
        // 10 KiB a second from t = 2 on; the start value is the last sample
        // at or before the mark.
        let grow: Vec<_> = (0..=10)
            .map(|i| s(i as f64, 1000 + 10 * (i.max(2) - 2)))
            .collect();
        let g = summarize(&grow, 2.5, 10.0).unwrap();
        assert_eq!(
            (g.at_start_kib, g.max_kib, g.at_end_kib),
            (1000, 1080, 1080)
        );
        assert!((g.slope_kib_per_min - 600.0).abs() < 1e-6, "{g:?}");
        assert!(summarize(&grow, -1.0, 5.0).is_none());
    }

    #[test]
    fn samples_own_process_with_marks() {
        let mut sm = Sampler::start(std::process::id(), Duration::from_millis(10));
        // Each mark takes a sample of its own.
        sm.mark("measure");
        sm.mark("drain");
        let (samples, marks) = sm.finish();
        assert!(samples.len() >= 2, "{samples:?}");
        assert!(samples.windows(2).all(|w| w[0].t <= w[1].t));
        assert_eq!(marks.len(), 2);
        let mut r = Report::new("x");
        report(&mut r, &samples, &marks, Duration::from_millis(10));
        assert!(r.get_f64("server_rss_measure_growth").unwrap() >= 1.0);
        assert!(r.map["server_rss_timeline"].as_array().unwrap().len() >= 2);
    }
}
