//! Verifies that permessage-deflate (RFC 7692) is negotiated as configured, and that clients' compressed messages are inflated within the limits or fail the connection with the close code the RFCs name.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use common::{config, Raw, TIMEOUT};
use shardcast::{
    Compression, Config, Handler, Message, Rejection, Server, ServerHandle, UpgradeRequest, Ws,
};

/// Echoes every message; records the negotiated extension each `upgrade`
/// saw, and declines compression for the path `/plain`.
struct Echo {
    seen: Arc<Mutex<Vec<Option<String>>>>,
}

impl Handler for Echo {
    type Data = ();
    type Local = ();

    fn upgrade(&self, req: &mut UpgradeRequest<'_>) -> Result<(), Rejection> {
        self.seen
            .lock()
            .unwrap()
            .push(req.deflate().map(|d| d.response()));
        if req.request().path() == "/plain" {
            req.decline_deflate();
        }
        Ok(())
    }

    fn message(&self, ws: &mut Ws<'_, Self>, msg: Message<'_>) {
        match msg {
            Message::Text(t) => ws.send_text(t),
            Message::Binary(b) => ws.send_binary(b),
        };
    }
}

fn start(config: Config) -> (ServerHandle, Arc<Mutex<Vec<Option<String>>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let handle = Server::new(
        config.listen("127.0.0.1:0".parse().unwrap()),
        Echo { seen: seen.clone() },
    )
    .start()
    .expect("server starts");
    (handle, seen)
}

fn shared() -> Config {
    config(1).compression(Compression::Shared)
}

/// Upgrades with `extensions` as `Sec-WebSocket-Extensions` lines; returns
/// the 101's head and the connection.
fn upgrade(addr: SocketAddr, path: &str, extensions: &[&str]) -> (String, Raw) {
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    );
    for e in extensions {
        req.push_str(&format!("Sec-WebSocket-Extensions: {e}\r\n"));
    }
    req.push_str("\r\n");
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    stream.write_all(req.as_bytes()).unwrap();
    let mut buf = Vec::new();
    let start = Instant::now();
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        assert!(start.elapsed() < TIMEOUT, "no response head");
        let mut tmp = [0u8; 4096];
        let n = stream.read(&mut tmp).unwrap();
        assert!(n > 0, "eof during the handshake");
        buf.extend_from_slice(&tmp[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_string();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    buf.drain(..end);
    (head, Raw { stream, buf })
}

/// The value of the 101's `Sec-WebSocket-Extensions`, if any.
fn extension(head: &str) -> Option<String> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("sec-websocket-extensions")
            .then(|| v.trim().to_owned())
    })
}

const BROWSER_OFFER: &str = "permessage-deflate; client_max_window_bits";
const ANSWER: &str = "permessage-deflate; server_no_context_takeover; client_no_context_takeover; client_max_window_bits=15";

#[test]
fn off_by_default_declines_every_offer() {
    let (h, seen) = start(config(1));
    let (head, mut ws) = upgrade(h.local_addr(), "/", &[BROWSER_OFFER]);
    assert_eq!(extension(&head), None, "{head}");
    assert_eq!(*seen.lock().unwrap(), [None]);
    ws.send_frame(true, 1, b"plain");
    assert_eq!(ws.read_frame(), Some((true, 1, b"plain".to_vec())));
    common::stop(h);
}

#[test]
fn shared_accepts_an_offer_and_tells_the_handler() {
    let (h, seen) = start(shared());
    let addr = h.local_addr();
    let (head, _ws) = upgrade(addr, "/", &[BROWSER_OFFER]);
    assert_eq!(extension(&head).as_deref(), Some(ANSWER), "{head}");
    // Several lines, an invalid first offer: it is declined, the next taken.
    let (head, _ws) = upgrade(
        addr,
        "/",
        &[
            "x-foo, permessage-deflate; client_max_window_bits=16",
            "permessage-deflate; client_max_window_bits=10",
        ],
    );
    assert!(
        extension(&head)
            .unwrap()
            .ends_with("client_max_window_bits=10"),
        "{head}"
    );
    // Only invalid offers: upgraded without compression (RFC 7692 §7: the
    // server declines them).
    let (head, _ws) = upgrade(
        addr,
        "/",
        &[
            "permessage-deflate; foo",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
        ],
    );
    assert_eq!(extension(&head), None, "{head}");
    // No offer.
    let (head, _ws) = upgrade(addr, "/", &[]);
    assert_eq!(extension(&head), None, "{head}");
    // The handler may decline.
    let (head, _ws) = upgrade(addr, "/plain", &[BROWSER_OFFER]);
    assert_eq!(extension(&head), None, "{head}");
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 5);
    assert_eq!(seen[0].as_deref(), Some(ANSWER));
    assert!(seen[1].is_some() && seen[2].is_none() && seen[3].is_none());
    assert_eq!(seen[4].as_deref(), Some(ANSWER));
    common::stop(h);
}

#[test]
fn a_real_client_negotiates_and_talks() {
    let (h, _) = start(shared());
    let addr = h.local_addr();
    // tungstenite offers nothing; it must still work with compression on.
    let mut ws = common::connect(addr, "/");
    common::send_text(&mut ws, "hi");
    assert_eq!(common::read_text(&mut ws), "hi");
    common::stop(h);
}
