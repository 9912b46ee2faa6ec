//! SVG charts of a results file (JSON lines as `--json` prints them): latency percentiles per run, the broadcast curves (round trip and deliveries/s against clients), and the server's RSS over time.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::report::Report;

const W: f64 = 760.0;
const H: f64 = 420.0;
const L: f64 = 80.0;
const R: f64 = 20.0;
const T: f64 = 40.0;
const B: f64 = 90.0;
const COLORS: [&str; 6] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
];

/// (x, y) points.
pub type Points = Vec<(f64, f64)>;

/// A named series of (x, y) points.
pub type Series = (String, Points);

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn head(title: &str, y_label: &str) -> String {
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" \
         font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{}\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">{}</text>\n",
        W / 2.0,
        esc(title)
    );
    let _ = writeln!(
        s,
        "<text transform=\"translate(16 {}) rotate(-90)\" text-anchor=\"middle\">{}</text>",
        T + (H - T - B) / 2.0,
        esc(y_label)
    );
    s
}

/// Maps y values to pixels, linearly from 0 or logarithmically.
struct YAxis {
    lo: f64,
    hi: f64,
    log: bool,
}

impl YAxis {
    fn new(values: impl Iterator<Item = f64>, log: bool) -> Self {
        let v: Vec<f64> = values.filter(|v| v.is_finite() && *v > 0.0).collect();
        let max = v.iter().copied().fold(1e-9, f64::max);
        if log {
            let min = v.iter().copied().fold(max, f64::min);
            Self {
                lo: 10f64.powf(min.log10().floor()),
                hi: 10f64.powf(max.log10().ceil().max(min.log10().floor() + 1.0)),
                log,
            }
        } else {
            Self {
                lo: 0.0,
                hi: max * 1.1,
                log,
            }
        }
    }

    fn px(&self, v: f64) -> f64 {
        let f = if self.log {
            (v.max(self.lo).log10() - self.lo.log10()) / (self.hi.log10() - self.lo.log10())
        } else {
            (v - self.lo) / (self.hi - self.lo)
        };
        H - B - f * (H - T - B)
    }

    fn ticks(&self) -> Vec<f64> {
        if self.log {
            let mut t = Vec::new();
            let mut v = self.lo;
            while v <= self.hi * 1.0001 {
                t.push(v);
                v *= 10.0;
            }
            t
        } else {
            (0..=5).map(|i| self.hi * i as f64 / 5.0).collect()
        }
    }

    fn draw(&self, s: &mut String) {
        for v in self.ticks() {
            let y = self.px(v);
            let _ = writeln!(
                s,
                "<line x1=\"{L}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#ddd\"/>\
                 <text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
                W - R,
                L - 6.0,
                y + 4.0,
                fmt_num(v)
            );
        }
    }
}

fn fmt_num(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.0}k", v / 1e3)
    } else if v >= 10.0 || v == v.round() {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn legend(s: &mut String, names: &[&str]) {
    for (i, n) in names.iter().enumerate() {
        let x = L + 10.0 + i as f64 * 110.0;
        let _ = writeln!(
            s,
            "<rect x=\"{x}\" y=\"{}\" width=\"10\" height=\"10\" fill=\"{}\"/>\
             <text x=\"{}\" y=\"{}\">{}</text>",
            H - 22.0,
            COLORS[i % COLORS.len()],
            x + 14.0,
            H - 13.0,
            esc(n)
        );
    }
}

/// A grouped bar chart: one group per label, one bar per series name.
pub fn bar_chart(
    title: &str,
    y_label: &str,
    groups: &[(String, Vec<(String, f64)>)],
    log: bool,
) -> String {
    let mut s = head(title, y_label);
    let y = YAxis::new(groups.iter().flat_map(|g| g.1.iter().map(|b| b.1)), log);
    y.draw(&mut s);
    let gw = (W - L - R) / groups.len().max(1) as f64;
    for (gi, (label, bars)) in groups.iter().enumerate() {
        let bw = gw * 0.8 / bars.len().max(1) as f64;
        for (bi, (_, v)) in bars.iter().enumerate() {
            let x = L + gi as f64 * gw + gw * 0.1 + bi as f64 * bw;
            let top = y.px(*v);
            let _ = writeln!(
                s,
                "<rect x=\"{x:.1}\" y=\"{top:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{}\"><title>{}</title></rect>",
                bw * 0.9,
                (H - B - top).max(0.0),
                COLORS[bi % COLORS.len()],
                fmt_num(*v)
            );
        }
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\" font-size=\"11\">{}</text>",
            L + gi as f64 * gw + gw / 2.0,
            H - B + 16.0,
            esc(label)
        );
    }
    let names: Vec<&str> = groups
        .first()
        .map(|g| g.1.iter().map(|b| b.0.as_str()).collect())
        .unwrap_or_default();
    legend(&mut s, &names);
    s.push_str("</svg>\n");
    s
}

/// A line chart of `series` against a shared x axis.
pub fn line_chart(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    log: bool,
) -> String {
    line_chart_marked(title, x_label, y_label, series, log, &[])
}

/// A line chart with labelled vertical lines at the x values of `marks`
/// (phase changes). Points get a dot with a tooltip only when there are
/// few of them.
pub fn line_chart_marked(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    log: bool,
    marks: &[(f64, String)],
) -> String {
    let mut s = head(title, y_label);
    let y = YAxis::new(series.iter().flat_map(|se| se.1.iter().map(|p| p.1)), log);
    y.draw(&mut s);
    let xmax = series
        .iter()
        .flat_map(|se| se.1.iter().map(|p| p.0))
        .chain(marks.iter().map(|m| m.0))
        .fold(1e-9, f64::max)
        * 1.05;
    let px = |x: f64| L + x / xmax * (W - L - R);
    for i in 0..=5 {
        let x = xmax / 1.05 * i as f64 / 5.0;
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
            px(x),
            H - B + 16.0,
            fmt_num(x)
        );
    }
    let _ = writeln!(
        s,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
        L + (W - L - R) / 2.0,
        H - B + 36.0,
        esc(x_label)
    );
    for (i, (x, name)) in marks.iter().enumerate() {
        let _ = writeln!(
            s,
            "<line x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{T}\" y2=\"{}\" stroke=\"#999\" stroke-dasharray=\"4 3\"/>\
             <text x=\"{:.1}\" y=\"{}\" font-size=\"10\" fill=\"#555\">{}</text>",
            H - B,
            px(*x) + 3.0,
            T + 10.0 + (i % 3) as f64 * 11.0,
            esc(name),
            x = px(*x),
        );
    }
    for (i, (_, pts)) in series.iter().enumerate() {
        let c = COLORS[i % COLORS.len()];
        let path: Vec<String> = pts
            .iter()
            .map(|&(x, v)| format!("{:.1},{:.1}", px(x), y.px(v)))
            .collect();
        let _ = writeln!(
            s,
            "<polyline fill=\"none\" stroke=\"{c}\" stroke-width=\"2\" points=\"{}\"/>",
            path.join(" ")
        );
        for &(x, v) in pts.iter().filter(|_| pts.len() <= 60) {
            let _ = writeln!(
                s,
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{c}\"><title>{}: {}</title></circle>",
                px(x),
                y.px(v),
                fmt_num(x),
                fmt_num(v)
            );
        }
    }
    let names: Vec<&str> = series.iter().map(|s| s.0.as_str()).collect();
    legend(&mut s, &names);
    s.push_str("</svg>\n");
    s
}

/// A short label for a run: the scenario and its size.
pub fn label(r: &Report) -> String {
    let g = |k: &str| r.map.get(k).map(|v| v.to_string()).unwrap_or_default();
    let name = r.map.get("label").and_then(Value::as_str);
    if let Some(n) = name {
        return n.to_string();
    }
    match r.map.get("scenario").and_then(Value::as_str) {
        Some("fanout") => format!("fanout {}s/{}t", g("subscribers"), g("topics")),
        Some("echo") => format!("echo {}c", g("connections")),
        Some(other) => other.to_string(),
        None => "?".into(),
    }
}

/// Writes the charts for `reports` into `out`; returns the files written.
///
/// # Errors
/// When a file cannot be written.
pub fn plot(reports: &[Report], out: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(out)?;
    let mut files = Vec::new();
    let mut groups = Vec::new();
    for r in reports {
        let prefix = match r.map.get("scenario").and_then(Value::as_str) {
            Some("fanout") => "latency",
            Some("echo") => "rtt",
            _ => continue,
        };
        let bars: Vec<(String, f64)> = ["p50", "p90", "p99", "p99.9", "max"]
            .iter()
            .filter_map(|p| Some((p.to_string(), r.get_f64(&format!("{prefix}_{p}_us"))?)))
            .collect();
        if !bars.is_empty() {
            groups.push((label(r), bars));
        }
    }
    if !groups.is_empty() {
        let f = out.join("latency.svg");
        std::fs::write(
            &f,
            bar_chart(
                "Latency percentiles per run (fanout: publish to delivery; echo: round trip)",
                "microseconds (log scale)",
                &groups,
                true,
            ),
        )?;
        files.push(f);
    }
    for r in reports {
        if r.map.get("scenario").and_then(Value::as_str) != Some("broadcast") {
            continue;
        }
        let Some(steps) = r.map.get("steps").and_then(Value::as_array) else {
            continue;
        };
        let pts = |k: &str| -> Vec<(f64, f64)> {
            steps
                .iter()
                .filter_map(|s| Some((s["clients"].as_f64()?, s[k].as_f64()?)))
                .collect()
        };
        let name = file_name(&label(r));
        let f = out.join(format!("{name}_round_trip.svg"));
        std::fs::write(
            &f,
            line_chart(
                "Broadcast round trip vs clients (websocket-shootout rules)",
                "clients",
                "milliseconds",
                &[
                    ("p50".into(), pts("p50_ms")),
                    ("p95".into(), pts("p95_ms")),
                    ("p99".into(), pts("p99_ms")),
                ],
                false,
            ),
        )?;
        files.push(f);
        let f = out.join(format!("{name}_deliveries.svg"));
        std::fs::write(
            &f,
            line_chart(
                "Broadcast deliveries per second vs clients",
                "clients",
                "deliveries/s",
                &[("deliveries/s".into(), pts("deliveries_per_sec"))],
                false,
            ),
        )?;
        files.push(f);
    }
    files.extend(plot_rss(reports, out)?);
    Ok(files)
}

/// A file name made of a run's label.
fn file_name(label: &str) -> String {
    let name: String = label
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let mut name = name.trim_matches('_').to_string();
    while name.contains("__") {
        name = name.replace("__", "_");
    }
    name
}

/// A run's RSS timeline (`server_rss_timeline` rows: seconds, RSS KiB,
/// HWM KiB) as (seconds, MiB) points for RSS and for its high-water mark.
fn rss_points(r: &Report) -> Option<(Points, Points)> {
    let rows = r.map.get("server_rss_timeline")?.as_array()?;
    let mib = |v: &Value| Some(v.as_f64()? / 1024.0);
    let pick = |k: usize| -> Vec<(f64, f64)> {
        rows.iter()
            .filter_map(|row| Some((row.get(0)?.as_f64()?, mib(row.get(k)?)?)))
            .collect()
    };
    let rss = pick(1);
    (!rss.is_empty()).then(|| (rss, pick(2)))
}

fn rss_marks(r: &Report) -> Vec<(String, f64)> {
    let mut m: Vec<(String, f64)> = r
        .map
        .get("server_rss_marks")
        .and_then(Value::as_object)
        .map(|o| {
            o.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_f64()?)))
                .collect()
        })
        .unwrap_or_default();
    m.sort_by(|a, b| a.1.total_cmp(&b.1));
    m
}

/// One chart per run with an RSS timeline (`<label>_rss.svg`, phases
/// marked), and with two or more such runs one chart comparing them from
/// the start of traffic (`server_rss.svg`).
fn plot_rss(reports: &[Report], out: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut compare = Vec::new();
    for r in reports {
        let Some((rss, hwm)) = rss_points(r) else {
            continue;
        };
        let marks = rss_marks(r);
        let f = out.join(format!("{}_rss.svg", file_name(&label(r))));
        std::fs::write(
            &f,
            line_chart_marked(
                &format!("Server RSS over time: {}", label(r)),
                "seconds since the loadgen started",
                "MiB",
                &[("VmRSS".into(), rss.clone()), ("VmHWM (peak)".into(), hwm)],
                false,
                &marks
                    .iter()
                    .map(|(n, t)| (*t, n.clone()))
                    .collect::<Vec<_>>(),
            ),
        )?;
        files.push(f);
        let t0 = marks.iter().find(|m| m.0 == "warmup").map_or(0.0, |m| m.1);
        compare.push((
            label(r),
            rss.into_iter()
                .filter(|p| p.0 >= t0)
                .map(|(t, v)| (t - t0, v))
                .collect::<Vec<_>>(),
        ));
    }
    if compare.len() >= 2 {
        let f = out.join("server_rss.svg");
        std::fs::write(
            &f,
            line_chart(
                "Server RSS over time, per run",
                "seconds since traffic started (warm-up)",
                "MiB",
                &compare,
                false,
            ),
        )?;
        files.push(f);
    }
    Ok(files)
}

/// Reads JSON lines from `input`, writes the charts into `out` and, when
/// given, Markdown tables into `markdown`.
///
/// # Errors
/// An unreadable input or unwritable output.
pub fn plot_file(
    input: &Path,
    out: &Path,
    markdown: Option<&Path>,
) -> Result<Vec<PathBuf>, String> {
    let text = std::fs::read_to_string(input).map_err(|e| format!("{}: {e}", input.display()))?;
    let reports: Vec<Report> = text.lines().filter_map(Report::from_json).collect();
    if reports.is_empty() {
        return Err(format!("{}: no results", input.display()));
    }
    let mut files = plot(&reports, out).map_err(|e| format!("{}: {e}", out.display()))?;
    if let Some(md) = markdown {
        std::fs::write(md, crate::markdown::tables(&reports))
            .map_err(|e| format!("{}: {e}", md.display()))?;
        files.push(md.to_path_buf());
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_latency_and_broadcast_charts() {
        let mut f = Report::new("fanout");
        f.set("subscribers", 10).set("topics", 1);
        f.set("latency_p50_us", 100.0).set("latency_p99_us", 900.0);
        let mut b = Report::new("broadcast");
        b.set(
            "steps",
            serde_json::json!([
                {"clients": 1000, "p50_ms": 1.0, "p95_ms": 2.0, "p99_ms": 3.0, "deliveries_per_sec": 5000.0},
                {"clients": 2000, "p50_ms": 2.0, "p95_ms": 4.0, "p99_ms": 6.0, "deliveries_per_sec": 9000.0}
            ]),
        );
        let dir = std::env::temp_dir().join(format!("loadgen-plot-{}", std::process::id()));
        let files = plot(&[f, b], &dir).unwrap();
        assert_eq!(files.len(), 3);
        let svg = std::fs::read_to_string(&files[0]).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("fanout 10s/1t") && svg.contains("p99"));
        let line = std::fs::read_to_string(&files[1]).unwrap();
        assert_eq!(line.matches("<polyline").count(), 3);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn draws_rss_timelines_per_run_and_compared() {
        let run = |name: &str, peak: u64| {
            let mut r = Report::new("fanout");
            r.set("label", name);
            r.set(
                "server_rss_marks",
                serde_json::json!({"warmup": 1.0, "measure": 2.0, "drain": 4.0}),
            );
            r.set(
                "server_rss_timeline",
                serde_json::json!([
                    [0.5, 2048, 2048],
                    [1.0, 4096, 4096],
                    [3.0, peak, peak],
                    [4.0, 4096, peak]
                ]),
            );
            r
        };
        let dir = std::env::temp_dir().join(format!("loadgen-rss-{}", std::process::id()));
        let files = plot(&[run("base line", 5120), run("stall 1", 8192)], &dir).unwrap();
        let names: Vec<_> = files
            .iter()
            .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            ["base_line_rss.svg", "stall_1_rss.svg", "server_rss.svg"]
        );
        let one = std::fs::read_to_string(&files[0]).unwrap();
        assert_eq!(one.matches("<polyline").count(), 2);
        assert!(one.contains(">measure<") && one.contains("stroke-dasharray"));
        let both = std::fs::read_to_string(&files[2]).unwrap();
        assert!(both.contains("stall 1") && both.matches("<polyline").count() == 2);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
