//! Verifies the direct io_uring data path past the open-file limit: a `shardcast` process allowed 256 descriptors serves 1,000 WebSocket connections (its sockets are slots in io_uring file tables, a ring opened whenever one fills), delivers a publish to every one of them, and gives every connection back when they close.

mod server_support;

use server_support::*;

/// Connections: several times the server's descriptor limit.
const CONNECTIONS: usize = 1_000;
/// The server's open-file limit (soft and hard).
const NOFILE: u32 = 256;

/// The kernel's (major, minor) version.
fn kernel_version() -> (u32, u32) {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = release.trim().split(['.', '-']);
    let mut next = || parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    (next(), next())
}

/// Starts the binary on the direct path under a descriptor limit of
/// `NOFILE`.
fn start_limited() -> (Binary, std::net::SocketAddr) {
    Binary::start_limited(
        u64::from(NOFILE),
        &[
            "--cores",
            "1",
            "--io-path",
            "direct",
            "--max-connections-per-ip",
            "0",
            "--publish-rate",
            "0",
        ],
        &["SHARDCAST_IO_PATH", "MONOIO_FORCE_LEGACY_DRIVER"],
    )
}

#[test]
fn one_process_serves_more_connections_than_its_descriptor_limit() {
    let (server, addr) = start_limited();
    let (_, metrics) = http(addr, "GET", "/metrics", &[], "");
    let direct = metrics.contains("driver=\"io_uring-direct\"");
    if !direct {
        // Before 5.19 the kernel lacks the path (its core falls back to
        // readiness); every kernel from 6.0 has all of it.
        assert!(kernel_version() < (6, 0), "no direct path on a 6.x kernel");
        eprintln!("skipped: this kernel has no direct io_uring path");
        return;
    }
    let mut clients = Vec::with_capacity(CONNECTIONS);
    for _ in 0..CONNECTIONS {
        let mut c = connect(addr, "/");
        subscribe(&mut c, &["all"]);
        clients.push(c);
    }
    assert_eq!(healthz_connections(addr), CONNECTIONS as u64);
    let (st, body) = http(
        addr,
        "POST",
        "/api/publish",
        &[],
        r#"{"topic":"all","data":"to every one"}"#,
    );
    assert_eq!(st, 200, "{body}");
    assert_eq!(body.trim(), format!(r#"{{"delivered":{CONNECTIONS}}}"#));
    for c in &mut clients {
        assert_eq!(
            recv_raw(c),
            r#"{"type":"message","topic":"all","data":"to every one"}"#
        );
    }
    // Every connection still answers.
    assert_alive(&mut clients[0]);
    assert_alive(&mut clients[CONNECTIONS - 1]);
    drop(clients);
    wait_until("every connection given back", || {
        healthz_connections(addr) == 0
    });
    // And the slots are free again: the next connections are served.
    let mut again: Vec<_> = (0..NOFILE as usize * 2)
        .map(|_| connect(addr, "/"))
        .collect();
    assert_alive(&mut again[0]);
    drop(server);
}
