//! Verifies that the engine accepts valid upgrades and answers bad ones with the right HTTP status, without disturbing other clients.

mod common;
use common::*;
use std::io::{Read, Write};

#[test]
fn valid_upgrade_and_rejections() {
    let (h, _) = start(config(2));
    let addr = h.local_addr();
    let mut ok = connect(addr, "/");
    send_text(&mut ok, "hello");
    assert_eq!(read_text(&mut ok), "hello");

    // The application's upgrade hook decides.
    let e = tungstenite::connect(format!("ws://{addr}/reject")).unwrap_err();
    match e {
        tungstenite::Error::Http(r) => assert_eq!(r.status(), 403),
        other => panic!("{other:?}"),
    }
    let (status, _) = http(addr, &upgrade_request(addr, "/?token=bad", "13"));
    assert_eq!(status, 401);

    // Wrong version: 426 with the version we speak.
    let (status, text) = http(addr, &upgrade_request(addr, "/", "8"));
    assert_eq!(status, 426);
    assert!(
        text.to_ascii_lowercase()
            .contains("sec-websocket-version: 13"),
        "{text}"
    );

    // Missing key: 400.
    let (status, _) = http(
        addr,
        &format!("GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n"),
    );
    assert_eq!(status, 400);

    // Garbage: 400.
    let (status, _) = http(addr, "\x16\x03\x01 definitely not http\r\n\r\n");
    assert_eq!(status, 400);

    // Header bomb: 431.
    let bomb = format!(
        "GET / HTTP/1.1\r\nHost: {addr}\r\nX-Big: {}\r\n\r\n",
        "a".repeat(16 * 1024)
    );
    let (status, _) = http(addr, &bomb);
    assert_eq!(status, 431);

    // Plain HTTP gets the handler's default answer.
    let (status, _) = http(addr, &format!("GET /x HTTP/1.1\r\nHost: {addr}\r\n\r\n"));
    assert_eq!(status, 426);

    // The first client never noticed.
    send_text(&mut ok, "still here");
    assert_eq!(read_text(&mut ok), "still here");
    let st = h.stats();
    assert!(st.rejected_with(400) >= 2 && st.rejected_with(431) >= 1 && st.rejected_with(426) >= 1);
    stop(h);
}

#[test]
fn a_frame_pipelined_behind_the_request_is_not_lost() {
    let (h, _) = start(config(1));
    let addr = h.local_addr();
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut bytes = upgrade_request(addr, "/", "13").into_bytes();
    bytes.extend_from_slice(&masked_frame(true, 0, 1, b"early"));
    s.write_all(&bytes).unwrap();
    let mut got = Vec::new();
    let mut tmp = [0u8; 1024];
    while !got.ends_with(b"early") {
        let n = s.read(&mut tmp).unwrap();
        assert!(n > 0, "eof: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&tmp[..n]);
    }
    assert!(got.starts_with(b"HTTP/1.1 101"));
    stop(h);
}

#[test]
fn origin_allowlist_and_connection_limit() {
    let cfg = config(1)
        .allowed_origins(vec!["https://good.example".into()])
        .max_connections(2);
    let (h, _) = start(cfg);
    let addr = h.local_addr();
    let req = |origin: &str| {
        format!(
            "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nOrigin: {origin}\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
    };
    assert_eq!(http(addr, &req("https://evil.example")).0, 403);
    let mut a = Raw::connect_with(addr, &req("https://good.example"));
    let _b = Raw::connect_with(addr, &req("https://GOOD.example"));
    assert_eq!(http(addr, &req("https://good.example")).0, 503);
    a.send_frame(true, 1, b"x");
    assert_eq!(a.read_frame().unwrap().2, b"x");
    stop(h);
}

fn upgrade_request(addr: std::net::SocketAddr, path: &str, version: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: {version}\r\n\r\n"
    )
}

#[test]
fn a_request_that_arrives_in_pieces_is_answered() {
    let (h, _) = start(config(1));
    let addr = h.local_addr();
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s.set_nodelay(true).unwrap();
    let req = upgrade_request(addr, "/", "13").into_bytes();
    // Three pieces, each after the server has read the previous one (a
    // request line alone cannot be answered, so nothing comes back early).
    let (a, rest) = req.split_at(10);
    let (b, c) = rest.split_at(rest.len() / 2);
    let mut sent = 0;
    for piece in [a, b] {
        s.write_all(piece).unwrap();
        sent += piece.len() as u64;
        wait_until("bytes read", || h.stats().bytes_in >= sent);
    }
    let mut tail = c.to_vec();
    tail.extend_from_slice(&masked_frame(true, 0, 1, b"whole"));
    s.write_all(&tail).unwrap();
    let mut got = Vec::new();
    let mut tmp = [0u8; 1024];
    while !got.ends_with(b"whole") {
        let n = s.read(&mut tmp).unwrap();
        assert!(n > 0, "eof: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&tmp[..n]);
    }
    assert!(got.starts_with(b"HTTP/1.1 101"));
    stop(h);
}

/// A handler whose answers the HTTP writer would refuse.
struct Careless;

impl shardcast::Handler for Careless {
    type Data = ();
    type Local = ();
    fn upgrade(
        &self,
        _req: &mut shardcast::UpgradeRequest<'_>,
    ) -> Result<(), shardcast::Rejection> {
        Err(shardcast::Rejection::new(302, "not an error status"))
    }
    fn http(
        &self,
        _req: &shardcast::HttpRequest<'_>,
        _ctx: &mut shardcast::HttpCtx<'_, Self>,
    ) -> shardcast::HttpResponse {
        let mut r = shardcast::HttpResponse::text(200, "x");
        r.headers
            .push(("X-Evil".into(), "a\r\nSet-Cookie: b".into()));
        r
    }
}

#[test]
fn invalid_answers_from_the_application_become_500_not_a_dead_core() {
    let h = shardcast::Server::new(config(1).listen("127.0.0.1:0".parse().unwrap()), Careless)
        .start()
        .unwrap();
    let addr = h.local_addr();
    for _ in 0..2 {
        assert_eq!(http(addr, &upgrade_request(addr, "/", "13")).0, 500);
        let (status, text) = http(addr, &format!("GET /x HTTP/1.1\r\nHost: {addr}\r\n\r\n"));
        assert_eq!(status, 500);
        assert!(!text.contains("Set-Cookie"), "{text}");
    }
    stop(h);
}
