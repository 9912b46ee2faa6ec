//! Verifies that a panicking callback costs only its own connection: it is closed with 1011 (a handshake, an HTTP request or a just-accepted socket gets 500), the panic is counted, and the core goes on serving every other connection.

mod common;
use common::*;
use shardcast::{
    CloseCode, Config, Handler, HttpCtx, HttpRequest, HttpResponse, Message, PreparedFrame,
    Rejection, Server, ServerHandle, UpgradeRequest, Ws,
};

/// Panics where the request path says: `/open`, `/message` (on the text
/// "boom"), `/drain`, `/close`, `/upgrade`, or a plain HTTP request to
/// `/http`. Otherwise echoes text; "flood" sends 64 KiB to cause
/// backpressure (and so a `drain`).
struct Panicky;

impl Handler for Panicky {
    type Data = String;
    type Local = ();

    fn upgrade(&self, req: &mut UpgradeRequest<'_>) -> Result<String, Rejection> {
        let path = req.request().path().to_owned();
        if path == "/upgrade" {
            panic!("upgrade hook failed");
        }
        Ok(path)
    }

    fn open(&self, ws: &mut Ws<'_, Self>) {
        if ws.data() == "/open" {
            panic!("open hook failed");
        }
    }

    fn message(&self, ws: &mut Ws<'_, Self>, msg: Message<'_>) {
        let Message::Text(t) = msg else { return };
        match t {
            "boom" if ws.data() == "/message" => panic!("message hook failed"),
            "flood" => {
                let frame = PreparedFrame::binary(&[7u8; 16 << 10]);
                for _ in 0..4 {
                    ws.send_prepared(&frame);
                }
            }
            _ => {
                ws.send_text(t);
            }
        }
    }

    fn drain(&self, ws: &mut Ws<'_, Self>) {
        if ws.data() == "/drain" {
            panic!("drain hook failed");
        }
    }

    fn close(&self, ws: &mut Ws<'_, Self>, _: CloseCode, _: &str) {
        if ws.data() == "/close" {
            panic!("close hook failed");
        }
    }

    fn http(&self, req: &HttpRequest<'_>, _: &mut HttpCtx<'_, Self>) -> HttpResponse {
        if req.request().path() == "/http" {
            panic!("http hook failed");
        }
        HttpResponse::text(200, "fine\n")
    }
}

fn start_panicky() -> ServerHandle {
    // One core: the bystander shares the core with every panicking callback.
    let cfg = Config::new()
        .cores(1)
        .pin(false)
        .outbox_low_water(1024)
        .shutdown_timeout(std::time::Duration::from_secs(1))
        .listen("127.0.0.1:0".parse().unwrap());
    Server::new(cfg, Panicky).start().expect("server starts")
}

/// The bystander still gets its echo, and the panic count reached `n`.
fn core_still_serves(h: &ServerHandle, bystander: &mut Client, n: u64) {
    send_text(bystander, "still there?");
    assert_eq!(read_text(bystander), "still there?");
    wait_until("the panic is counted", || h.stats().handler_panics == n);
}

/// Reads until the close frame and returns its code.
fn close_code(ws: &mut Client) -> Option<u16> {
    loop {
        match ws.read() {
            Ok(tungstenite::Message::Close(f)) => return f.map(|f| u16::from(f.code)),
            Ok(_) => continue,
            Err(e) => panic!("no close frame: {e}"),
        }
    }
}

#[test]
fn a_panic_in_any_callback_closes_only_its_connection() {
    let h = start_panicky();
    let addr = h.local_addr();
    let mut bystander = connect(addr, "/");
    let mut panics = 0;

    // open
    let mut c = connect(addr, "/open");
    assert_eq!(close_code(&mut c), Some(1011));
    panics += 1;
    core_still_serves(&h, &mut bystander, panics);

    // message
    let mut c = connect(addr, "/message");
    send_text(&mut c, "hello");
    assert_eq!(read_text(&mut c), "hello");
    send_text(&mut c, "boom");
    assert_eq!(close_code(&mut c), Some(1011));
    panics += 1;
    core_still_serves(&h, &mut bystander, panics);

    // drain: 64 KiB queued over a 1 KiB low-water mark, then written.
    let mut c = connect(addr, "/drain");
    send_text(&mut c, "flood");
    assert_eq!(close_code(&mut c), Some(1011));
    panics += 1;
    core_still_serves(&h, &mut bystander, panics);

    // close: nothing left to tell the client; the count and the core show it.
    let mut c = connect(addr, "/close");
    c.close(None).unwrap();
    while c.read().is_ok() {}
    panics += 1;
    core_still_serves(&h, &mut bystander, panics);

    // upgrade: the handshake is answered 500.
    let err = tungstenite::connect(format!("ws://{addr}/upgrade")).unwrap_err();
    match err {
        tungstenite::Error::Http(resp) => assert_eq!(resp.status(), 500),
        other => panic!("expected an HTTP 500, got {other}"),
    }
    panics += 1;
    core_still_serves(&h, &mut bystander, panics);

    // http
    let (status, _) = http(addr, "GET /http HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status, 500);
    let (status, body) = http(addr, "GET /other HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!((status, body.ends_with("fine\n")), (200, true));
    panics += 1;
    core_still_serves(&h, &mut bystander, panics);

    // The connection count went back down: nothing leaked on the way.
    wait_until("only the bystander is left", || h.stats().active == 1);
    stop(h);
}

/// Panics in `connect` for the connection after `armed` is set, and in
/// `disconnect` always; echoes text.
struct PanicsAtTheDoor {
    armed: std::sync::atomic::AtomicBool,
}

impl Handler for PanicsAtTheDoor {
    type Data = ();
    type Local = ();

    fn connect(&self, _: std::net::SocketAddr, _: usize) -> Result<(), Rejection> {
        if self.armed.swap(false, std::sync::atomic::Ordering::SeqCst) {
            panic!("connect hook failed");
        }
        Ok(())
    }

    fn disconnect(&self, _: std::net::SocketAddr, _: usize) {
        panic!("disconnect hook failed");
    }

    fn upgrade(&self, _: &mut UpgradeRequest<'_>) -> Result<(), Rejection> {
        Ok(())
    }

    fn message(&self, ws: &mut Ws<'_, Self>, msg: Message<'_>) {
        if let Message::Text(t) = msg {
            ws.send_text(t);
        }
    }
}

#[test]
fn a_panic_in_connect_or_disconnect_costs_only_that_connection_and_frees_its_slot() {
    let cfg = Config::new()
        .cores(1)
        .pin(false)
        .max_connections(1)
        .shutdown_timeout(std::time::Duration::from_secs(1))
        .listen("127.0.0.1:0".parse().unwrap());
    let handler = PanicsAtTheDoor {
        armed: std::sync::atomic::AtomicBool::new(true),
    };
    let h = Server::new(cfg, handler).start().expect("server starts");
    let addr = h.local_addr();
    // connect: answered 500 at once, nothing to release.
    let (status, _) = http(addr, "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status, 500);
    wait_until("the connect panic is counted", || {
        h.stats().handler_panics == 1
    });
    // disconnect: after each connection; with one slot in all, every
    // next connection shows that the panicking hook gave the slot back.
    for round in 0..3u64 {
        wait_until("the slot is free", || h.stats().sockets == 0);
        let mut c = connect(addr, "/");
        send_text(&mut c, "hi");
        assert_eq!(read_text(&mut c), "hi");
        c.close(None).unwrap();
        while c.read().is_ok() {}
        wait_until("the disconnect panic is counted", || {
            h.stats().handler_panics == 2 + round
        });
    }
    stop(h);
}
