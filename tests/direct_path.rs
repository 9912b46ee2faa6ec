//! Verifies the direct io_uring data path past the open-file limit: a `shardcast` process allowed 256 descriptors serves 1,000 WebSocket connections (its sockets are slots in io_uring file tables, a ring opened whenever one fills), delivers a publish to every one of them, and gives every connection back when they close.

mod server_support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

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

/// The server, stopped (SIGKILL, by PID) on drop.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the binary on the direct path under a descriptor limit of
/// `NOFILE`, through a shell that lowers its own limit and execs it.
fn start_limited() -> (Server, std::net::SocketAddr) {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit -n {NOFILE} && exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_shardcast"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--no-pin",
            "--log-format",
            "json",
            "--cores",
            "1",
            "--io-path",
            "direct",
            "--max-connections-per-ip",
            "0",
            "--publish-rate",
            "0",
        ])
        .env_remove("RUST_LOG")
        .env_remove("SHARDCAST_IO_PATH")
        .env_remove("MONOIO_FORCE_LEGACY_DRIVER")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("binary starts");
    let stdout = child.stdout.take().unwrap();
    let server = Server(child);
    let mut lines = BufReader::new(stdout).lines();
    let start = Instant::now();
    let addr = loop {
        assert!(start.elapsed() < TIMEOUT, "no listening line");
        let line = lines.next().expect("log line").unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).expect("JSON log line");
        if let Some(a) = v["fields"]["addr"].as_str() {
            break a.parse().unwrap();
        }
    };
    // Keep reading its log so that it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (server, addr)
}

fn healthz_connections(addr: std::net::SocketAddr) -> u64 {
    let (st, body) = http(addr, "GET", "/healthz", &[], "");
    assert_eq!(st, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["connections"].as_u64().unwrap()
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
