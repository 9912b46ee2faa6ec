//! Verifies that the `shardcast` binary gives back the memory a wave of connections took once they have all closed: its RSS rises while 2,000 subscribed connections are open and falls back to within a third of that rise of where it was before (on the direct path, with an open-file limit that makes each core open several socket rings, which it drops again).

mod server_support;

use std::time::{Duration, Instant};

use server_support::*;

/// Connections opened at once (fewer when this process may not open as
/// many descriptors).
const CONNECTIONS: usize = 2_000;
/// The server's open-file limit on the direct path: its sockets are ring
/// slots, so 2,000 connections need several rings of 256 slots.
const DIRECT_NOFILE: u32 = 256;
/// The RSS must rise by at least this much while the connections are open,
/// or the test would prove nothing.
const MIN_RISE_KIB: u64 = 1_024;
/// How long the RSS may take to come back: the cores trim once a second,
/// and a ring is dropped after a few trims; slack for a loaded machine.
const SETTLE: Duration = Duration::from_secs(30);

/// The RSS of process `pid`, KiB.
fn rss_kib(pid: u32) -> u64 {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the server's /proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// Raises this process's soft open-file limit to its hard limit; returns
/// the limit.
fn raise_nofile() -> u64 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `r` is a valid rlimit for getrlimit to fill and setrlimit to
    // read; neither keeps the pointer.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) != 0 {
            return 1024;
        }
        r.rlim_cur = r.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &r) != 0 {
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut r);
        }
    }
    r.rlim_cur
}

/// Starts the binary with one core, sessions off, on the path
/// `SHARDCAST_IO_PATH` names (direct by default); on the direct path
/// under an open-file limit of `DIRECT_NOFILE`, otherwise of `nofile`.
fn start(direct: bool, nofile: u64) -> (Binary, std::net::SocketAddr) {
    let limit = if direct {
        u64::from(DIRECT_NOFILE)
    } else {
        nofile
    };
    Binary::start_limited(
        limit,
        &[
            "--cores",
            "1",
            "--io-path",
            if direct { "direct" } else { "readiness" },
            "--max-connections-per-ip",
            "0",
            "--publish-rate",
            "0",
            "--session-ttl",
            "0",
        ],
        &["SHARDCAST_IO_PATH", "MIMALLOC_PURGE_DELAY"],
    )
}

/// Opens `n` connections, each subscribed to one of 50 topics.
fn open(addr: std::net::SocketAddr, n: usize) -> Vec<Client> {
    (0..n)
        .map(|i| {
            let mut c = connect(addr, "/");
            subscribe(&mut c, &[&format!("churn.{}", i % 50)]);
            c
        })
        .collect()
}

/// Closes them and waits until the server holds no connection.
fn close(addr: std::net::SocketAddr, clients: Vec<Client>) {
    drop(clients);
    let start = Instant::now();
    while healthz_connections(addr) != 0 {
        assert!(start.elapsed() < SETTLE, "connections left on the server");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The lowest RSS seen once it has stopped falling: read every 250 ms
/// until two seconds pass without a new low (at most `SETTLE`).
fn settled_rss(server: &Binary) -> u64 {
    let start = Instant::now();
    let mut low = rss_kib(server.pid());
    let mut low_at = Instant::now();
    while low_at.elapsed() < Duration::from_secs(2) && start.elapsed() < SETTLE {
        std::thread::sleep(Duration::from_millis(250));
        let now = rss_kib(server.pid());
        if now < low {
            low = now;
            low_at = Instant::now();
        }
    }
    low
}

#[test]
fn rss_returns_to_its_level_once_every_connection_has_closed() {
    // The direct path, the default, unless the environment asks for the
    // readiness path or for epoll (which has no direct path).
    let direct = !std::env::var("SHARDCAST_IO_PATH").is_ok_and(|v| v == "readiness")
        && !std::env::var("MONOIO_FORCE_LEGACY_DRIVER").is_ok_and(|v| v == "1");
    let nofile = raise_nofile();
    // This process holds the clients; the server (readiness) their peers.
    let n = CONNECTIONS.min(nofile.saturating_sub(128) as usize);
    assert!(
        n >= 500,
        "open-file limit {nofile} is too low for this test"
    );
    let (server, addr) = start(direct, nofile);
    if direct {
        let (_, metrics) = http(addr, "GET", "/metrics", &[], "");
        if !metrics.contains("driver=\"io_uring-direct\"") {
            eprintln!("skipped on the direct path: this kernel has no direct io_uring path");
            return;
        }
    }

    // A first, small wave touches what any connection touches (code,
    // per-core scratch), so the baseline is the level the server returns
    // to, not its untouched start.
    close(addr, open(addr, 64));
    let before = settled_rss(&server);

    let clients = open(addr, n);
    assert_eq!(healthz_connections(addr), n as u64);
    let held = rss_kib(server.pid());
    let rise = held.saturating_sub(before);
    assert!(
        rise >= MIN_RISE_KIB,
        "RSS rose by only {rise} KiB with {n} connections open ({before} -> {held} KiB)"
    );

    close(addr, clients);
    // Within a third of the rise: what a core keeps (its heap's partly
    // used pages, its first ring) is small beside what the wave took. (A
    // third, not less: on the readiness path the allocator keeps some
    // freed pages a while, and a loaded machine varies.)
    let bound = before + rise / 3;
    let start = Instant::now();
    let mut after = rss_kib(server.pid());
    while after > bound && start.elapsed() < SETTLE {
        std::thread::sleep(Duration::from_millis(250));
        after = rss_kib(server.pid());
    }
    eprintln!(
        "{} path, {n} connections: RSS {before} KiB before, {held} KiB held, {after} KiB after",
        if direct { "direct" } else { "readiness" }
    );
    assert!(
        after <= bound,
        "RSS {after} KiB after every connection closed: more than a third of the {rise} KiB \
         the connections took above {before} KiB is still held"
    );
    drop(server);
}
