//! Shared by the integration tests: a test handler, a server started on port 0 and small clients.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shardcast::{
    CloseCode, Config, Handler, Message, PreparedFrame, Rejection, Server, ServerHandle,
    UpgradeRequest, Ws,
};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::WebSocket;

/// Every wait in the tests gives up after this.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// What the test handler records, for assertions.
#[derive(Default)]
pub struct Events {
    pub opened: AtomicUsize,
    pub closed: Mutex<Vec<(u16, String)>>,
    pub drains: AtomicUsize,
}

/// A handler speaking a tiny text protocol:
/// `sub:T` → subscribe, answers `subscribed:T:<core>` (or `refused:T:<why>`);
/// `unsub:T` → answers `unsubscribed:T`;
/// `pub:T:PAYLOAD` → publishes PAYLOAD to T (not to self), answers `published:<delivered>`;
/// `pubself:T:PAYLOAD` → same, to self too;
/// `core` → answers the core id; `close:CODE` → closes with CODE;
/// `flood:N:SIZE` → sends N binary messages of SIZE bytes;
/// anything else is echoed (text or binary).
/// Path `/reject` is refused with 403; `?token=bad` with 401.
pub struct TestHandler {
    pub events: Arc<Events>,
}

impl Handler for TestHandler {
    type Data = u32;
    type Local = ();

    fn upgrade(&self, req: &mut UpgradeRequest<'_>) -> Result<u32, Rejection> {
        if req.request().path() == "/reject" {
            return Err(Rejection::new(403, "rejected by test"));
        }
        if req.request().query_param("token") == Some("bad") {
            return Err(Rejection::new(401, "bad token"));
        }
        Ok(0)
    }

    fn open(&self, _ws: &mut Ws<'_, Self>) {
        self.events.opened.fetch_add(1, Ordering::SeqCst);
    }

    fn message(&self, ws: &mut Ws<'_, Self>, msg: Message<'_>) {
        *ws.data_mut() += 1;
        let text = match msg {
            Message::Binary(b) => {
                ws.send_binary(b);
                return;
            }
            Message::Text(t) => t,
        };
        if let Some(t) = text.strip_prefix("sub:") {
            let reply = match ws.subscribe(t) {
                Ok(_) => format!("subscribed:{t}:{}", ws.core()),
                Err(e) => format!("refused:{t}:{e}"),
            };
            ws.send_text(&reply);
        } else if let Some(t) = text.strip_prefix("unsub:") {
            ws.unsubscribe(t);
            ws.send_text(&format!("unsubscribed:{t}"));
        } else if let Some(rest) = text.strip_prefix("pubself:") {
            let (t, p) = rest.split_once(':').unwrap_or((rest, ""));
            let r = ws.publish(t, &PreparedFrame::text(p), true);
            ws.send_text(&format!("published:{}", r.delivered));
        } else if let Some(rest) = text.strip_prefix("pub:") {
            let (t, p) = rest.split_once(':').unwrap_or((rest, ""));
            let r = ws.publish(t, &PreparedFrame::text(p), false);
            ws.send_text(&format!("published:{}", r.delivered));
        } else if text == "core" {
            let s = ws.core().to_string();
            ws.send_text(&s);
        } else if text == "count" {
            let s = ws.data().to_string();
            ws.send_text(&s);
        } else if let Some(code) = text.strip_prefix("close:") {
            ws.close(CloseCode(code.parse().unwrap_or(1000)), "bye");
        } else if let Some(rest) = text.strip_prefix("flood:") {
            let (n, size) = rest.split_once(':').unwrap_or(("0", "0"));
            let frame = PreparedFrame::binary(&vec![7u8; size.parse().unwrap_or(0)]);
            let mut statuses = [0usize; 3];
            for _ in 0..n.parse::<usize>().unwrap_or(0) {
                match ws.send_prepared(&frame) {
                    shardcast::SendStatus::Sent => statuses[0] += 1,
                    shardcast::SendStatus::Backpressure => statuses[1] += 1,
                    shardcast::SendStatus::Dropped => statuses[2] += 1,
                }
            }
        } else {
            ws.send_text(text);
        }
    }

    fn drain(&self, _ws: &mut Ws<'_, Self>) {
        self.events.drains.fetch_add(1, Ordering::SeqCst);
    }

    fn close(&self, _ws: &mut Ws<'_, Self>, code: CloseCode, reason: &str) {
        self.events
            .closed
            .lock()
            .unwrap()
            .push((code.0, reason.to_string()));
    }
}

/// Starts a server on 127.0.0.1:0 with the test handler.
pub fn start(config: Config) -> (ServerHandle, Arc<Events>) {
    let events = Arc::new(Events::default());
    let config = config.listen("127.0.0.1:0".parse().unwrap());
    let handle = Server::new(
        config,
        TestHandler {
            events: events.clone(),
        },
    )
    .start()
    .expect("server starts");
    (handle, events)
}

/// A default test config on `cores` cores, without pinning (tests share the machine).
pub fn config(cores: usize) -> Config {
    Config::new()
        .cores(cores)
        .pin(false)
        .shutdown_timeout(Duration::from_secs(1))
}

pub type Client = WebSocket<MaybeTlsStream<TcpStream>>;

/// Connects a tungstenite client to `path` with read/write timeouts.
pub fn connect(addr: SocketAddr, path: &str) -> Client {
    let (ws, resp) = tungstenite::connect(format!("ws://{addr}{path}")).expect("handshake");
    assert_eq!(resp.status(), 101);
    if let MaybeTlsStream::Plain(s) = ws.get_ref() {
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        s.set_write_timeout(Some(TIMEOUT)).unwrap();
    }
    ws
}

/// Reads the next text message (skipping pings/pongs).
pub fn read_text(ws: &mut Client) -> String {
    loop {
        match ws.read().expect("read") {
            tungstenite::Message::Text(t) => return t.to_string(),
            tungstenite::Message::Ping(_) | tungstenite::Message::Pong(_) => continue,
            other => panic!("expected text, got {other:?}"),
        }
    }
}

/// Sends a text message.
pub fn send_text(ws: &mut Client, text: &str) {
    ws.send(tungstenite::Message::text(text)).expect("send");
}

/// Connects until one client sits on each core (SO_REUSEPORT spreads
/// connections by hash), returning at least one client per core.
pub fn one_per_core(addr: SocketAddr, cores: usize) -> Vec<(usize, Client)> {
    let mut found: Vec<Option<Client>> = (0..cores).map(|_| None).collect();
    let mut extra = Vec::new();
    for _ in 0..200 {
        let mut c = connect(addr, "/");
        send_text(&mut c, "core");
        let core: usize = read_text(&mut c).parse().unwrap();
        if found[core].is_none() {
            found[core] = Some(c);
        } else {
            extra.push(c);
        }
        if found.iter().all(Option::is_some) {
            return found
                .into_iter()
                .enumerate()
                .map(|(i, c)| (i, c.unwrap()))
                .collect();
        }
    }
    panic!("200 connections did not reach all {cores} cores");
}

/// A raw TCP client that completes the handshake by hand, for sending
/// frames a WebSocket library would refuse to send.
pub struct Raw {
    pub stream: TcpStream,
    pub buf: Vec<u8>,
}

impl Raw {
    /// Connects and upgrades.
    pub fn connect(addr: SocketAddr) -> Raw {
        Raw::connect_with(
            addr,
            &format!(
                "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ),
        )
    }

    /// Connects and upgrades with the given request.
    pub fn connect_with(addr: SocketAddr, request: &str) -> Raw {
        Raw::upgrade(TcpStream::connect(addr).unwrap(), request)
    }

    /// Upgrades an already connected stream with the given request.
    pub fn upgrade(mut stream: TcpStream, request: &str) -> Raw {
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        let mut raw = Raw {
            stream,
            buf: Vec::new(),
        };
        let head = raw.read_until(b"\r\n\r\n");
        assert!(
            head.starts_with(b"HTTP/1.1 101"),
            "{}",
            String::from_utf8_lossy(&head)
        );
        raw
    }

    fn read_until(&mut self, pat: &[u8]) -> Vec<u8> {
        let start = Instant::now();
        loop {
            if let Some(i) = self.buf.windows(pat.len()).position(|w| w == pat) {
                let out: Vec<u8> = self.buf.drain(..i + pat.len()).collect();
                return out;
            }
            assert!(start.elapsed() < TIMEOUT, "timed out");
            let mut tmp = [0u8; 4096];
            let n = self.stream.read(&mut tmp).expect("read");
            assert!(n > 0, "eof before {:?}", String::from_utf8_lossy(pat));
            self.buf.extend_from_slice(&tmp[..n]);
        }
    }

    /// Sends a masked frame built by hand.
    pub fn send_frame(&mut self, fin: bool, opcode: u8, payload: &[u8]) {
        self.stream
            .write_all(&masked_frame(fin, 0, opcode, payload))
            .unwrap();
    }

    /// Sends raw bytes.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// Reads one frame: (fin, opcode, payload). Server frames are unmasked.
    pub fn read_frame(&mut self) -> Option<(bool, u8, Vec<u8>)> {
        self.read_frame_rsv()
            .map(|(fin, _, op, payload)| (fin, op, payload))
    }

    /// Reads one frame: (fin, RSV bits, opcode, payload).
    pub fn read_frame_rsv(&mut self) -> Option<(bool, u8, u8, Vec<u8>)> {
        let start = Instant::now();
        loop {
            if self.buf.len() >= 2 {
                let b1 = self.buf[1] & 0x7f;
                let (hl, len) = match b1 {
                    126 if self.buf.len() >= 4 => {
                        (4, u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize)
                    }
                    127 if self.buf.len() >= 10 => (
                        10,
                        u64::from_be_bytes(self.buf[2..10].try_into().unwrap()) as usize,
                    ),
                    126 | 127 => (usize::MAX, 0),
                    n => (2, n as usize),
                };
                if hl != usize::MAX && self.buf.len() >= hl + len {
                    let fin = self.buf[0] & 0x80 != 0;
                    let rsv = (self.buf[0] >> 4) & 0b111;
                    let op = self.buf[0] & 0x0f;
                    let payload = self.buf[hl..hl + len].to_vec();
                    self.buf.drain(..hl + len);
                    return Some((fin, rsv, op, payload));
                }
            }
            if start.elapsed() > TIMEOUT {
                panic!("timed out reading a frame");
            }
            let mut tmp = [0u8; 65536];
            match self.stream.read(&mut tmp) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&tmp[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
                Err(e) => panic!("read: {e}"),
            }
        }
    }

    /// Reads frames until a close frame; returns its code (None for an
    /// empty close payload). Panics if the stream ends first.
    pub fn expect_close(&mut self) -> Option<u16> {
        loop {
            let (_, op, payload) = self.read_frame().expect("close frame before EOF");
            if op == 8 {
                return (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
            }
        }
    }

    /// Whether the server closes the TCP stream (EOF or reset) in time.
    pub fn expect_eof(&mut self) {
        loop {
            match self.read_frame() {
                None => return,
                Some(_) => continue,
            }
        }
    }
}

/// A masked client frame.
pub fn masked_frame(fin: bool, rsv: u8, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let key = [0x12, 0x34, 0x56, 0x78];
    let mut out = vec![(u8::from(fin) << 7) | (rsv << 4) | opcode];
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len < 65536 {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(&key);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i & 3]));
    out
}

/// Polls `f` until it is true or the timeout passes.
pub fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < TIMEOUT, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Sends an HTTP request and returns the status code and the whole response.
pub fn http(addr: SocketAddr, request: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

/// Shuts the server down and waits for its cores.
pub fn stop(handle: ServerHandle) {
    handle.shutdown();
    handle.join();
}
