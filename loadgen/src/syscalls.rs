//! The server's system calls and io_uring submissions over a scenario's measured window (`--server-syscalls`), counted by `perf stat` attached to the server's process.
//!
//! `perf stat` (Debian's `linux-perf`) is started before the warm-up with
//! its counters disabled (`-D -1`) and switched on and off through its
//! control FIFO (`--control`) at the measured window's edges, so the counts
//! cover exactly the window the CPU figures do. It counts kernel
//! tracepoints, which cost the traced process little but not nothing: a
//! run that counts system calls is not the run to take CPU figures from.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// What is counted: (tracepoint, name in the report). The first is every
/// system call; a tracepoint this kernel lacks is left out.
const EVENTS: &[(&str, &str)] = &[
    ("raw_syscalls:sys_enter", "all"),
    ("syscalls:sys_enter_io_uring_enter", "io_uring_enter"),
    ("io_uring:io_uring_submit_req", "io_uring_sqes"),
    ("syscalls:sys_enter_sendmsg", "sendmsg"),
    ("syscalls:sys_enter_sendto", "sendto"),
    ("syscalls:sys_enter_write", "write"),
    ("syscalls:sys_enter_writev", "writev"),
    ("syscalls:sys_enter_recvfrom", "recvfrom"),
    ("syscalls:sys_enter_recvmsg", "recvmsg"),
    ("syscalls:sys_enter_read", "read"),
    ("syscalls:sys_enter_epoll_wait", "epoll_wait"),
    ("syscalls:sys_enter_epoll_pwait", "epoll_pwait"),
    ("syscalls:sys_enter_futex", "futex"),
];

/// Counts per window: (name, count), "all" first.
pub type Counts = Vec<(&'static str, u64)>;

/// A `perf stat` attached to a process, counting only while enabled.
pub struct Counter {
    child: Child,
    ctl: File,
    ack: File,
    dir: PathBuf,
    names: Vec<&'static str>,
}

/// Whether this kernel has tracepoint `event` (`system:name`).
fn has_tracepoint(event: &str) -> bool {
    let Some((sys, name)) = event.split_once(':') else {
        return false;
    };
    ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
        .iter()
        .any(|root| std::path::Path::new(&format!("{root}/events/{sys}/{name}/id")).exists())
}

/// Makes a FIFO at `path`.
fn mkfifo(path: &std::path::Path) -> Result<(), String> {
    let c =
        std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).map_err(|e| e.to_string())?;
    // SAFETY: `c` is a valid NUL-terminated path for the duration of the call.
    if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } != 0 {
        return Err(format!(
            "mkfifo {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// Opens FIFO `path` for reading and writing: never blocks, whoever is
/// (or is not) at the other end.
fn open_fifo(path: &std::path::Path) -> Result<File, String> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))
}

impl Counter {
    /// Attaches `perf stat`, disabled, to process `pid` (all its threads).
    ///
    /// # Errors
    /// No `perf`, no tracepoints, or `perf` could not attach (it needs the
    /// right to trace `pid`).
    pub fn attach(pid: u32) -> Result<Self, String> {
        let events: Vec<&(&str, &str)> = EVENTS.iter().filter(|(e, _)| has_tracepoint(e)).collect();
        if events.first().map(|(e, _)| *e) != Some(EVENTS[0].0) {
            return Err("no raw_syscalls tracepoints (is tracefs mounted?)".into());
        }
        let dir = std::env::temp_dir().join(format!("loadgen-perf-{}-{pid}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let (ctl_path, ack_path) = (dir.join("ctl"), dir.join("ack"));
        mkfifo(&ctl_path)?;
        mkfifo(&ack_path)?;
        let ctl = open_fifo(&ctl_path)?;
        let ack = open_fifo(&ack_path)?;
        let mut cmd = Command::new("perf");
        cmd.args(["stat", "-x", ",", "-D", "-1", "-p", &pid.to_string()])
            .arg(format!(
                "--control=fifo:{},{}",
                ctl_path.display(),
                ack_path.display()
            ))
            .arg("-o")
            .arg(dir.join("out.csv"));
        for (e, _) in &events {
            cmd.args(["-e", e]);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("perf: {e} (install linux-perf)"))?;
        let mut c = Self {
            child,
            ctl,
            ack,
            dir,
            names: events.iter().map(|(_, n)| *n).collect(),
        };
        // Answers once it has attached: a round trip of the control FIFO.
        c.command("ping")
            .map_err(|e| format!("perf stat did not start: {e}"))?;
        Ok(c)
    }

    /// Sends `cmd` and waits (at most 10 s) for perf's acknowledgement.
    fn command(&mut self, cmd: &str) -> Result<(), String> {
        self.ctl
            .write_all(format!("{cmd}\n").as_bytes())
            .map_err(|e| e.to_string())?;
        let mut got = Vec::new();
        // perf writes "ack\n" and a NUL.
        while !got.windows(4).any(|w| w == b"ack\n") {
            let mut pfd = libc::pollfd {
                fd: self.ack.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd for the duration of the call.
            let n = unsafe { libc::poll(&mut pfd, 1, 10_000) };
            if n <= 0 {
                if let Ok(Some(status)) = self.child.try_wait() {
                    return Err(format!("perf exited: {status}"));
                }
                return Err(format!("no answer to {cmd:?} in 10 s"));
            }
            let mut buf = [0u8; 64];
            let k = self.ack.read(&mut buf).map_err(|e| e.to_string())?;
            got.extend_from_slice(&buf[..k]);
        }
        Ok(())
    }

    /// Starts counting.
    ///
    /// # Errors
    /// perf did not answer.
    pub fn enable(&mut self) -> Result<(), String> {
        self.command("enable")
    }

    /// Stops counting.
    ///
    /// # Errors
    /// perf did not answer.
    pub fn disable(&mut self) -> Result<(), String> {
        self.command("disable")
    }

    /// Ends `perf stat` and reads its counts.
    ///
    /// # Errors
    /// perf did not end or wrote no counts.
    pub fn finish(mut self) -> Result<Counts, String> {
        // SAFETY: signals our own child, which has not been reaped.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while self.child.try_wait().map_err(|e| e.to_string())?.is_none() {
            if std::time::Instant::now() > deadline {
                return Err("perf stat did not end".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let text = std::fs::read_to_string(self.dir.join("out.csv")).map_err(|e| e.to_string())?;
        parse(&text, &self.names)
    }
}

impl Drop for Counter {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Reads `perf stat -x ,` output: `count,unit,event,...` per event, in
/// the order of `names`' events.
fn parse(text: &str, names: &[&'static str]) -> Result<Counts, String> {
    let mut out = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let f: Vec<&str> = line.split(',').collect();
        let (Some(count), Some(event)) = (f.first(), f.get(2)) else {
            continue;
        };
        let Some((_, name)) = EVENTS.iter().find(|(e, _)| e == event) else {
            continue;
        };
        let count: u64 = count
            .trim()
            .parse()
            .map_err(|_| format!("{event}: {count}"))?;
        out.push((*name, count));
    }
    if out.len() != names.len() || out.first().map(|(n, _)| *n) != Some("all") {
        return Err(format!(
            "perf stat counted {} of {} events",
            out.len(),
            names.len()
        ));
    }
    Ok(out)
}

/// Adds the counts to `r`, each per `unit` (e.g. "delivery") over `n`
/// units: `server_syscalls_per_<unit>`, `server_io_uring_enter_per_<unit>`,
/// `server_io_uring_sqes_per_<unit>`, and every count under
/// `server_syscalls` (with `other`: what no named one counted).
pub fn report(r: &mut crate::report::Report, counts: &Counts, unit: &str, n: f64) {
    let get = |name: &str| counts.iter().find(|(k, _)| *k == name).map(|(_, v)| *v);
    if n > 0.0 {
        if let Some(all) = get("all") {
            r.num(&format!("server_syscalls_per_{unit}"), all as f64 / n, 3);
        }
        if let Some(e) = get("io_uring_enter") {
            r.num(
                &format!("server_io_uring_enter_per_{unit}"),
                e as f64 / n,
                3,
            );
        }
        if let Some(s) = get("io_uring_sqes") {
            r.num(&format!("server_io_uring_sqes_per_{unit}"), s as f64 / n, 3);
        }
    }
    let mut by = serde_json::Map::new();
    let mut named = 0;
    for (k, v) in counts {
        if *v == 0 {
            continue;
        }
        if *k != "all" && *k != "io_uring_sqes" {
            named += v;
        }
        by.insert((*k).to_string(), (*v).into());
    }
    if let Some(all) = get("all") {
        by.insert("other".into(), all.saturating_sub(named).into());
    }
    r.set("server_syscalls", serde_json::Value::Object(by));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_perf_csv() {
        let text = "# started on Fri Dec  4\n\n1200,,raw_syscalls:sys_enter,10007,100.00,,\n\
                    300,,syscalls:sys_enter_io_uring_enter,10007,100.00,,\n\
                    900,,io_uring:io_uring_submit_req,10007,100.00,,\n";
        let names = ["all", "io_uring_enter", "io_uring_sqes"];
        let c = parse(text, &names).unwrap();
        assert_eq!(
            c,
            vec![
                ("all", 1200),
                ("io_uring_enter", 300),
                ("io_uring_sqes", 900)
            ]
        );
        let mut r = crate::report::Report::new("echo");
        report(&mut r, &c, "message", 100.0);
        assert_eq!(r.get_f64("server_syscalls_per_message"), Some(12.0));
        assert_eq!(r.get_f64("server_io_uring_sqes_per_message"), Some(9.0));
        assert!(parse("<not counted>,,raw_syscalls:sys_enter,0,0,,\n", &names[..1]).is_err());
        assert!(parse(text, &["all"; 4]).is_err(), "an event missing");
    }

    /// Counts this test's own process: the window sees the system calls
    /// made in it and not those made before it was enabled.
    #[test]
    fn counts_a_process_in_its_window() {
        let mut c = match Counter::attach(std::process::id()) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("no perf or no tracepoints here ({e}): skipped");
                return;
            }
        };
        // Other tests of this process may run meanwhile: the bounds leave
        // them room, but not the 20,000 calls made before the window.
        for _ in 0..20_000 {
            // SAFETY: getppid has no preconditions.
            unsafe { libc::getppid() };
        }
        c.enable().unwrap();
        for _ in 0..2000 {
            // SAFETY: as above.
            unsafe { libc::getppid() };
        }
        c.disable().unwrap();
        let counts = c.finish().unwrap();
        let all = counts[0].1;
        assert!((2000..12_000).contains(&all), "{counts:?}");
    }
}
