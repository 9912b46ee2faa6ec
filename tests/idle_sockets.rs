//! Verifies that sockets count toward the connection limits from their accept: idle sockets that never send a handshake fill `max_connections` and the per-address limit, the next connection is refused as a WebSocket over the limit is (503, 429), and a slot comes back as soon as its socket closes or is answered.

mod server_support;

use std::io::Read;
use std::net::TcpStream;

use server_support::*;

/// Opens `n` TCP connections that never send a byte, and waits until the
/// server holds them all (beside `before` sockets it held already).
fn idle(running: &shardcast::server::Running, n: usize, before: u64) -> Vec<TcpStream> {
    let held: Vec<TcpStream> = (0..n)
        .map(|_| TcpStream::connect(running.local_addr()).unwrap())
        .collect();
    wait_until("the idle sockets are accepted", || {
        running.handle().stats().sockets == before + n as u64
    });
    held
}

/// The status of a connection the server answers without reading a
/// request (or after it): the first line of what it writes.
fn status_of_next(running: &shardcast::server::Running) -> u16 {
    let mut s = TcpStream::connect(running.local_addr()).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out);
    text.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text:?}"))
}

#[test]
fn idle_sockets_fill_the_server_and_the_next_connection_gets_503() {
    let running = start(|s| {
        s.max_connections = 4;
        s.max_connections_per_ip = 0;
    });
    let addr = running.local_addr();
    let mut held = idle(&running, 4, 0);
    // Refused at once, without a request: a WebSocket client reads 503.
    assert_eq!(refused(addr, "/", &[]), 503);
    assert_eq!(status_of_next(&running), 503);
    let (st, _) = http(addr, "GET", "/healthz", &[], "");
    assert_eq!(st, 503, "plain HTTP is refused too");
    // One idle socket goes: its slot is free again.
    drop(held.pop());
    wait_until("the closed idle socket is released", || {
        running.handle().stats().sockets == 3
    });
    let mut ws = connect(addr, "/");
    assert_alive(&mut ws);
    assert_eq!(refused(addr, "/", &[]), 503);
    let rejected: u64 = running.handle().stats().rejected_with(503);
    assert!(rejected >= 4, "{rejected}");
    drop(held);
    // Answered plain-HTTP requests do not keep their slot while the
    // server waits for the client to close: many in a row all pass.
    wait_until("the idle sockets are released", || {
        running.handle().stats().sockets == 1
    });
    for _ in 0..20 {
        assert_eq!(http(addr, "GET", "/healthz", &[], "").0, 200);
    }
    assert_alive(&mut ws);
    stop(running);
}

#[test]
fn idle_sockets_count_toward_the_per_address_limit() {
    let running = start(|s| s.max_connections_per_ip = 3);
    let addr = running.local_addr();
    let held = idle(&running, 3, 0);
    assert_eq!(refused(addr, "/", &[]), 429);
    assert_eq!(status_of_next(&running), 429);
    drop(held);
    wait_until("the idle sockets are released", || {
        running.handle().stats().sockets == 0
    });
    let mut a = connect(addr, "/");
    let _b = connect(addr, "/");
    // Two WebSockets and one idle socket make three.
    let _idle = idle(&running, 1, 2);
    assert_eq!(refused(addr, "/", &[]), 429);
    assert_alive(&mut a);
    stop(running);
}
