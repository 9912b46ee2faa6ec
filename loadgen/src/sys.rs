//! Clocks and process accounting: this process's CPU time, another process's RSS, CPU time and open files.

use std::time::Duration;

/// Nanoseconds of `CLOCK_MONOTONIC`. The same clock on every core and in
/// every process of the machine, so a send time written by one worker can be
/// compared with a receive time taken by another.
#[inline]
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// User plus system CPU time this process (all threads) has used so far.
pub fn self_cpu() -> Duration {
    // SAFETY: an all-zero rusage is a valid value; getrusage fills it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, writable rusage.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Resident set size of process `pid` in bytes (`VmRSS` of `/proc/PID/status`).
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// User plus system CPU time of process `pid` (fields 14 and 15 of `/proc/PID/stat`).
pub fn proc_cpu(pid: u32) -> Option<Duration> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces; fields are counted after its ')'.
    let rest = &s[s.rfind(')')? + 2..];
    let mut f = rest.split_whitespace();
    let utime: u64 = f.nth(11)?.parse().ok()?;
    let stime: u64 = f.next()?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Some(Duration::from_nanos((utime + stime) * 1_000_000_000 / hz))
}

/// Number of open file descriptors of process `pid`.
pub fn open_fds(pid: u32) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

/// This process's soft limit on open files.
pub fn fd_limit() -> u64 {
    // SAFETY: an all-zero rlimit is valid; getrlimit fills it.
    let mut rl: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: `rl` is a valid, writable rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) } != 0 {
        return 1024;
    }
    rl.rlim_cur
}

/// Raises the soft open-files limit to the hard limit (best effort).
pub fn raise_fd_limit() {
    // SAFETY: as in `fd_limit`.
    let mut rl: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: `rl` is valid and writable; setrlimit only reads it.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) == 0 && rl.rlim_cur < rl.rlim_max {
            rl.rlim_cur = rl.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &rl);
        }
    }
}

/// A snapshot of this process's CPU time and, when given, a server's,
/// to report CPU use over an interval.
#[derive(Debug, Clone, Copy)]
pub struct Usage {
    at: std::time::Instant,
    cpu: Duration,
    server: Option<Duration>,
    machine: Option<Duration>,
}

/// CPU time every process of the machine has used so far (the busy fields
/// of the `cpu` line of `/proc/stat`: user, nice, system, irq, softirq, steal).
pub fn machine_cpu() -> Option<Duration> {
    let s = std::fs::read_to_string("/proc/stat").ok()?;
    let line = s.lines().next()?.strip_prefix("cpu ")?;
    let f: Vec<u64> = line
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    let busy = f.first()? + f.get(1)? + f.get(2)? + f.get(5)? + f.get(6)? + f.get(7)?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Some(Duration::from_nanos(busy * 1_000_000_000 / hz))
}

impl Usage {
    /// Takes a snapshot now.
    pub fn now(server_pid: Option<u32>) -> Self {
        Self {
            at: std::time::Instant::now(),
            cpu: self_cpu(),
            server: server_pid.and_then(proc_cpu),
            machine: machine_cpu(),
        }
    }

    /// CPU time used between `self` and `later` by every process of the
    /// machine other than this one and the server.
    pub fn others_until(&self, later: &Usage) -> Option<Duration> {
        let m = later.machine?.saturating_sub(self.machine?);
        let (_, cpu, server) = self.until(later);
        Some(m.saturating_sub(cpu + server.unwrap_or_default()))
    }

    /// Wall time, this process's CPU time and the server's CPU time between
    /// `self` and `later`.
    pub fn until(&self, later: &Usage) -> (Duration, Duration, Option<Duration>) {
        let server = match (self.server, later.server) {
            (Some(a), Some(b)) => Some(b.saturating_sub(a)),
            _ => None,
        };
        (
            later.at.duration_since(self.at),
            later.cpu.saturating_sub(self.cpu),
            server,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_visible() {
        let pid = std::process::id();
        assert!(rss_bytes(pid).unwrap() > 0);
        assert!(open_fds(pid).unwrap() >= 3);
        assert!(proc_cpu(pid).is_some());
        let a = now_ns();
        assert!(now_ns() >= a);
    }
}

/// TCP sockets on this machine whose local address is `addr` and that are
/// established or waiting for their owner to close them (CLOSE_WAIT), from
/// `/proc/net/tcp`: the connections a local server listening on `addr`
/// still holds. Counts sockets, so it works however the server keeps them
/// (plain fds or io_uring fixed files). IPv4 only. The kernel reads the
/// table out in pages without a global lock, so while other sockets are
/// opened and closed an entry can be missed or seen twice.
pub fn server_sockets(addr: std::net::SocketAddr) -> Option<usize> {
    let s = std::fs::read_to_string("/proc/net/tcp").ok()?;
    Some(count_server_sockets(&s, addr))
}

fn count_server_sockets(table: &str, addr: std::net::SocketAddr) -> usize {
    let std::net::IpAddr::V4(ip) = addr.ip() else {
        return 0;
    };
    // The kernel prints the address's network-order bytes as a native u32.
    let want = format!(
        "{:08X}:{:04X}",
        u32::from_ne_bytes(ip.octets()),
        addr.port()
    );
    table
        .lines()
        .skip(1)
        .filter(|l| {
            let mut f = l.split_whitespace();
            let local = f.nth(1).unwrap_or("");
            let state = f.nth(1).unwrap_or("");
            local == want && (state == "01" || state == "08")
        })
        .count()
}

#[cfg(test)]
mod net_tests {
    use super::*;

    #[test]
    fn counts_established_and_close_wait_on_the_port() {
        let t = "  sl  local_address rem_address   st tx_queue rx_queue\n\
           0: 0100007F:238D 00000000:0000 0A 00000000:00000000\n\
           1: 0100007F:238D 0200007F:9C40 01 00000000:00000000\n\
           2: 0100007F:238D 0200007F:9C41 08 00000000:00000000\n\
           3: 0200007F:9C40 0100007F:238D 01 00000000:00000000\n\
           4: 0100007F:238D 0200007F:9C42 06 00000000:00000000\n";
        if cfg!(target_endian = "little") {
            assert_eq!(
                count_server_sockets(t, "127.0.0.1:9101".parse().unwrap()),
                2
            );
            assert_eq!(
                count_server_sockets(t, "127.0.0.2:9101".parse().unwrap()),
                0
            );
        }
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let _c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (_s, _) = l.accept().unwrap();
        assert_eq!(server_sockets(l.local_addr().unwrap()), Some(1));
    }
}
