//! Verifies sessions: every connection starts with a `welcome` naming its session and client, and `?session=ID` resumes a session — its subscriptions back and, on history topics, exactly what the client did not receive — after a clean close, a reset or a silent drop, taking over a connection still open, and only for the identity that opened it, within the TTL and `max_sessions`.

mod server_support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use server_support::*;
use shardcast::server::settings::{Namespace, Settings};

const SECRET: &str = "sessions-secret";

fn with_history(s: &mut Settings) {
    let mut n = "chat.*=1000000,300".parse::<Namespace>().unwrap();
    n.history_max_bytes = 256 << 20;
    s.namespaces = vec![n];
    s.max_recovery = 1_000_000;
    s.publish_rate = 0.0;
}

/// Whether the server can tell what a client's TCP acknowledged: on the
/// direct io_uring path (`SHARDCAST_IO_PATH=direct`) only where the kernel
/// installs a descriptor for a socket's slot to ask (Linux 6.8); a resume
/// there otherwise resends from where the last connection's stream began
/// (docs/design.md, sessions).
fn tracked(running: &shardcast::server::Running) -> bool {
    let direct = running
        .handle()
        .drivers()
        .contains(&shardcast::DriverKind::IoUringDirect);
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut v = release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|p| p.parse::<u32>().ok());
    let at_least_6_8 = (v.next().unwrap_or(0), v.next().unwrap_or(0)) >= (6, 8);
    if direct && !at_least_6_8 {
        eprintln!("direct io_uring path before Linux 6.8: positions are not tracked, skipped");
        return false;
    }
    true
}

fn session_of(welcome: &Value) -> String {
    let id = welcome["session"]
        .as_str()
        .expect("a session id")
        .to_owned();
    let (core, rest) = id.split_once('-').expect("core-connection and secret");
    assert!(core.parse::<usize>().is_ok(), "{id}");
    assert!(
        rest.len() == 16 + 32 && rest.bytes().all(|b| b.is_ascii_hexdigit()),
        "the opener's slab index and generation, then 128 random bits, in hex: {id}"
    );
    id
}

#[test]
fn the_welcome_comes_first_and_names_the_session_and_the_client() {
    let running = start(|_| {});
    let addr = running.local_addr();
    let (_a, w) = connect_welcome(addr, "/ws");
    assert_eq!(w["client"], Value::Null, "{w}");
    assert_eq!(w["resumed"], false, "{w}");
    let a_id = session_of(&w);
    let (_b, w) = connect_welcome(addr, "/ws?client_id=dev-7");
    assert_eq!(w["client"], "dev-7", "{w}");
    assert_ne!(session_of(&w), a_id);
    stop(running);

    // With JWT auth: the token's sub; before an `auth` message, none.
    let running = start(|s| s.jwt_secret = Some(SECRET.into()));
    let addr = running.local_addr();
    let tok = token(SECRET, json!({"sub": "alice", "exp": now() + 600}));
    let (_c, w) = connect_welcome(addr, &format!("/ws?token={tok}"));
    assert_eq!(w["client"], "alice", "{w}");
    session_of(&w);
    let (_d, w) = connect_welcome(addr, "/ws");
    assert_eq!(w["client"], Value::Null, "{w}");
    stop(running);

    // Sessions off: still a welcome, naming none; ?session is ignored.
    let running = start(|s| s.session_ttl_secs = 0);
    let addr = running.local_addr();
    let (_e, w) = connect_welcome(addr, &format!("/ws?client_id=x&session={a_id}"));
    assert_eq!(
        w,
        json!({"type":"welcome","session":null,"client":"x","resumed":false})
    );
    assert!(running.sessions().is_none());
    stop(running);
}

/// Publishes `chat.s` messages and `news` messages from two threads (each
/// its own connection, on whichever core) until told to stop.
fn publishers(addr: SocketAddr, stop_flag: &Arc<AtomicBool>) -> Vec<std::thread::JoinHandle<u64>> {
    (0..2)
        .map(|p| {
            let stop_flag = stop_flag.clone();
            std::thread::spawn(move || {
                let mut ws = connect(addr, "/ws");
                let mut i = 0u64;
                while !stop_flag.load(Ordering::Relaxed) {
                    let topic = if i % 4 == 3 { "news" } else { "chat.s" };
                    send(
                        &mut ws,
                        &format!(r#"{{"type":"publish","topic":"{topic}","data":"p{p}-{i}"}}"#),
                    );
                    i += 1;
                    if i.is_multiple_of(4) {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
                i
            })
        })
        .collect()
}

// ----- a small client that owns its bytes -----
//
// The cut tests must know exactly which bytes reached the client's socket,
// including those a WebSocket library would hold half-parsed: so this
// client parses frames itself from its own buffer.

struct Raw {
    s: TcpStream,
    buf: Vec<u8>,
}

enum Frame {
    Text(Value),
    Close(u16),
}

/// One whole server frame at the start of `b`: (length, opcode, payload).
fn parse_frame(b: &[u8]) -> Option<(usize, u8, &[u8])> {
    if b.len() < 2 {
        return None;
    }
    let (len, head) = match b[1] & 0x7f {
        126 if b.len() >= 4 => (u16::from_be_bytes([b[2], b[3]]) as usize, 4),
        127 if b.len() >= 10 => (
            u64::from_be_bytes(b[2..10].try_into().unwrap()) as usize,
            10,
        ),
        126 | 127 => return None,
        n => (n as usize, 2),
    };
    (b.len() >= head + len).then(|| (head + len, b[0] & 0x0f, &b[head..head + len]))
}

fn decode(op: u8, payload: &[u8]) -> Option<Frame> {
    match op {
        1 => Some(Frame::Text(serde_json::from_slice(payload).unwrap())),
        8 => Some(Frame::Close(
            payload
                .get(..2)
                .map_or(1005, |c| u16::from_be_bytes([c[0], c[1]])),
        )),
        _ => None,
    }
}

impl Raw {
    /// Connects with a small receive buffer (so that a client that stops
    /// reading closes its TCP window soon) and reads the welcome.
    fn connect(addr: SocketAddr, path: &str) -> (Raw, Value) {
        let sock =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        sock.set_recv_buffer_size(4096).unwrap();
        sock.connect(&addr.into()).unwrap();
        let s: TcpStream = sock.into();
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        let mut raw = Raw { s, buf: Vec::new() };
        write!(
            raw.s,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        .unwrap();
        let head_end = loop {
            if let Some(i) = raw.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            raw.fill();
        };
        assert!(raw.buf.starts_with(b"HTTP/1.1 101"), "handshake refused");
        raw.buf.drain(..head_end);
        let Frame::Text(w) = raw.next() else {
            panic!("closed before the welcome")
        };
        assert_eq!(w["type"], "welcome", "{w}");
        (raw, w)
    }

    fn fill(&mut self) {
        let mut chunk = [0u8; 16 << 10];
        let n = self.s.read(&mut chunk).expect("read");
        assert!(n > 0, "the server closed the connection");
        self.buf.extend_from_slice(&chunk[..n]);
    }

    /// Sends a text message (masked with a zero key: valid, and the
    /// payload stays as written).
    fn send(&mut self, text: &str) {
        let mut f = vec![0x81u8];
        match text.len() {
            n if n < 126 => f.push(0x80 | n as u8),
            n => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
        }
        f.extend_from_slice(&[0; 4]);
        f.extend_from_slice(text.as_bytes());
        self.s.write_all(&f).unwrap();
    }

    /// The next text or close frame, reading as needed.
    fn next(&mut self) -> Frame {
        loop {
            if let Some((n, op, payload)) = parse_frame(&self.buf) {
                let f = decode(op, payload);
                self.buf.drain(..n);
                if let Some(f) = f {
                    return f;
                }
                continue;
            }
            self.fill();
        }
    }

    fn text(&mut self) -> Value {
        match self.next() {
            Frame::Text(v) => v,
            Frame::Close(c) => panic!("closed with {c}"),
        }
    }

    /// Every whole frame the client's socket holds, without taking any
    /// byte out of the kernel (so its TCP window stays as it is).
    fn peek_all(&mut self) -> Vec<Value> {
        self.s.set_nonblocking(true).unwrap();
        let mut kernel = vec![0u8; 1 << 20];
        let n = self.s.peek(&mut kernel).unwrap_or(0);
        self.s.set_nonblocking(false).unwrap();
        let mut all = std::mem::take(&mut self.buf);
        all.extend_from_slice(&kernel[..n]);
        let mut out = Vec::new();
        let mut at = 0;
        while let Some((len, op, payload)) = parse_frame(&all[at..]) {
            if let Some(Frame::Text(v)) = decode(op, payload) {
                out.push(v);
            }
            at += len;
        }
        out
    }

    /// Waits (bounded) until the socket's receive queue stops growing
    /// while publishes go on: the client's TCP window is closed, so its
    /// TCP acknowledges nothing more.
    fn wait_window_closed(&self) {
        let mut probe = vec![0u8; 1 << 20];
        self.s.set_nonblocking(true).unwrap();
        let (mut last, mut still) = (0, 0);
        let until = Instant::now() + TIMEOUT;
        while still < 4 {
            assert!(Instant::now() < until, "the window never closed");
            std::thread::sleep(Duration::from_millis(5));
            let n = self.s.peek(&mut probe).unwrap_or(0);
            if n == last && n > 0 {
                still += 1;
            } else {
                (last, still) = (n, 0);
            }
        }
        self.s.set_nonblocking(false).unwrap();
    }
}

/// What the client holds of `chat.s`: the last offset, every one before it
/// received; duplicates and gaps checked as messages come.
struct Tracker {
    last: u64,
    epoch: String,
    received: u64,
    /// Duplicates, by the kind of cut whose resume sent them.
    duplicates: [u64; 3],
    /// The kind of the last cut.
    mode: usize,
}

impl Tracker {
    fn take(&mut self, m: &Value, cut: u32) {
        if m["topic"] != "chat.s" {
            assert_eq!(m["topic"], "news", "{m}");
            return;
        }
        assert_eq!(m["epoch"], self.epoch.as_str(), "{m}");
        let o = m["offset"].as_u64().unwrap();
        assert!(o <= self.last + 1, "cut {cut}: gap: {} to {o}", self.last);
        if o <= self.last {
            self.duplicates[self.mode] += 1;
        } else {
            self.last = o;
            self.received += 1;
        }
    }
}

/// A resumed welcome: its topics and its `chat.s` stream.
fn check_resumed(w: &Value, id: &str, t: &Tracker, cut: u32) {
    assert_eq!(w["type"], "welcome", "{w}");
    assert_eq!(w["session"], id, "cut {cut}: {w}");
    assert_eq!(w["resumed"], true, "cut {cut}: {w}");
    let mut topics: Vec<&str> = w["topics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    topics.sort_unstable();
    assert_eq!(topics, ["chat.s", "news"], "{w}");
    let s = &w["streams"]["chat.s"];
    assert_eq!(s["recovered"], true, "cut {cut}: {w}");
    assert_eq!(s["epoch"], t.epoch.as_str());
    assert!(s["offset"].as_u64().unwrap() >= t.last, "{w}");
}

/// A subscriber's connection is cut at a few hundred random points of a
/// sustained stream from two publishers, and each time it resumes its
/// session by id alone (it sends no position). Three cuts, in turn:
///
/// - **clean**: a close handshake (1000) after reading what came before
///   the server's close frame. Exact: no gap, no duplicate.
/// - **reset**: the client stops reading until its TCP window is closed
///   (its TCP acknowledges nothing more), takes the whole frames its
///   socket holds, and resets the connection (SO_LINGER 0). The server
///   resumes after the last message the client's TCP acknowledged
///   entirely: no gap; a duplicate only if an acknowledgement had not
///   reached the server yet.
/// - **silent**: on loopback nothing is lost in the network, so "silent"
///   is a client that stops reading and says nothing (as one behind a
///   dead link would: the server only sees its TCP window close). It
///   resumes on a new connection while the old one is still open, which
///   takes the session over: the old connection's position is read at
///   that moment and it is closed with 4001; the client then reads what
///   its old socket received (its process survived). No gap; duplicates
///   are what the old connection had written but not yet seen
///   acknowledged at the takeover (at-least-once).
#[test]
fn cuts_resume_from_what_the_client_received() {
    let running = start(with_history);
    if !tracked(&running) {
        return stop(running);
    }
    let addr = running.local_addr();
    let stop_flag = Arc::new(AtomicBool::new(false));
    let pubs = publishers(addr, &stop_flag);

    let (mut ws, w) = Raw::connect(addr, "/ws");
    let id = session_of(&w);
    ws.send(r#"{"type":"subscribe","topics":["chat.s","news"],"id":1}"#);
    // `news` may deliver before the reply, which waits for chat.s's
    // position.
    let v = loop {
        let v = ws.text();
        if v["type"] != "message" {
            break v;
        }
    };
    assert_eq!(v["type"], "subscribed", "{v}");
    let mut t = Tracker {
        last: v["streams"]["chat.s"]["offset"].as_u64().unwrap(),
        epoch: v["streams"]["chat.s"]["epoch"].as_str().unwrap().to_owned(),
        received: 0,
        duplicates: [0; 3],
        mode: 0,
    };

    let deadline = Instant::now() + Duration::from_secs(20);
    let mut cut = 0u32;
    while cut < 300 && Instant::now() < deadline {
        for _ in 0..fastrand::usize(1..30) {
            let m = ws.text();
            t.take(&m, cut);
        }
        let mode = cut % 3;

        let path = format!("/ws?session={id}");
        let (next, w) = match mode {
            0 => {
                ws.send_close();
                loop {
                    match ws.next() {
                        Frame::Text(m) => t.take(&m, cut),
                        Frame::Close(c) => {
                            assert_eq!(c, 1000);
                            break;
                        }
                    }
                }
                drop(ws);
                // A resume that raced the server's end of the old
                // connection would take it over, reading what its TCP
                // acknowledged (as for a silent cut); a clean close is
                // exact once the server has kept the session.
                wait_until("the session is kept", || {
                    running.sessions().unwrap().kept == 1
                });
                t.mode = 0;
                Raw::connect(addr, &path)
            }
            1 => {
                ws.wait_window_closed();
                for m in ws.peek_all() {
                    t.take(&m, cut);
                }
                socket2::SockRef::from(&ws.s)
                    .set_linger(Some(Duration::ZERO))
                    .unwrap();
                drop(ws);
                t.mode = 1;
                Raw::connect(addr, &path)
            }
            _ => {
                t.mode = 2;
                let (n, w) = Raw::connect(addr, &path);
                check_resumed(&w, &id, &t, cut);
                // The old socket: everything its TCP received, then 4001.
                loop {
                    match ws.next() {
                        Frame::Text(m) => t.take(&m, cut),
                        Frame::Close(c) => {
                            assert_eq!(c, 4001, "the old connection is taken over");
                            break;
                        }
                    }
                }
                (n, w)
            }
        };
        check_resumed(&w, &id, &t, cut);
        ws = next;
        // The replay starts right after what the client holds, at most.
        let first = loop {
            let m = ws.text();
            if m["topic"] == "chat.s" {
                break m;
            }
        };
        if mode == 0 {
            assert_eq!(
                first["offset"].as_u64().unwrap(),
                t.last + 1,
                "cut {cut}: a clean close resumes exactly"
            );
        }
        t.take(&first, cut);
        cut += 1;
    }
    let dups_by_mode = t.duplicates;
    stop_flag.store(true, Ordering::Relaxed);
    for p in pubs {
        p.join().unwrap();
    }
    assert!(cut >= 150, "only {cut} cuts in 20 s");
    assert!(t.received > 1_000, "{} received", t.received);
    eprintln!(
        "{cut} cuts, {} received, duplicates (clean, reset, silent): {dups_by_mode:?}",
        t.received
    );
    assert_eq!(dups_by_mode[0], 0);
    let c = running.sessions().unwrap();
    assert_eq!(c.resumed, u64::from(cut));
    stop(running);
}

impl Raw {
    /// Starts a close handshake with 1000.
    fn send_close(&mut self) {
        self.s
            .write_all(&[0x88, 0x82, 0, 0, 0, 0, 0x03, 0xe8])
            .unwrap();
    }
}

/// A session resumed after its connection closed: subscriptions back
/// (a topic without history from now on), and the missed messages of
/// its history topic in order, then the live stream.
#[test]
fn a_kept_session_is_resumed_with_its_subscriptions_and_what_it_missed() {
    let running = start(with_history);
    if !tracked(&running) {
        return stop(running);
    }
    let addr = running.local_addr();
    let (mut a, w) = connect_welcome(addr, "/ws?client_id=phone");
    let id = session_of(&w);
    let v = ask(
        &mut a,
        r#"{"type":"subscribe","topics":["chat.k","plain"],"id":1}"#,
    );
    assert_eq!(v["streams"]["chat.k"]["offset"], 0, "{v}");
    let epoch = v["streams"]["chat.k"]["epoch"].as_str().unwrap().to_owned();
    let mut publisher = connect(addr, "/ws");
    let publish = |p: &mut Client, topic: &str, n: u64| {
        send(
            p,
            &format!(r#"{{"type":"publish","topic":"{topic}","data":{n},"id":{n}}}"#),
        );
        assert_eq!(recv(p)["type"], "published");
    };
    for n in 1..=3 {
        publish(&mut publisher, "chat.k", n);
        assert_eq!(recv(&mut a)["offset"], n);
    }
    a.close(None).unwrap();
    while a.read().is_ok() {}
    wait_until("the session is kept", || {
        running.sessions().unwrap().kept == 1
    });
    // Missed: 4..=8 of the history topic, and one plain message (lost).
    for n in 4..=8 {
        publish(&mut publisher, "chat.k", n);
    }
    publish(&mut publisher, "plain", 100);
    let (mut b, w) = connect_welcome(addr, &format!("/ws?session={id}&client_id=phone"));
    assert_eq!(w["resumed"], true, "{w}");
    assert_eq!(w["client"], "phone");
    assert_eq!(w["session"], id.as_str());
    let mut topics: Vec<String> = serde_json::from_value(w["topics"].clone()).unwrap();
    topics.sort();
    assert_eq!(topics, ["chat.k", "plain"]);
    assert_eq!(
        w["streams"],
        json!({"chat.k":{"offset":8,"epoch":epoch,"recovered":true}})
    );
    for n in 4..=8 {
        assert_eq!(
            recv(&mut b),
            json!({"type":"message","topic":"chat.k","data":n,"offset":n,"epoch":epoch})
        );
    }
    publish(&mut publisher, "plain", 101);
    assert_eq!(
        recv(&mut b),
        json!({"type":"message","topic":"plain","data":101})
    );
    publish(&mut publisher, "chat.k", 9);
    assert_eq!(recv(&mut b)["offset"], 9);
    let c = running.sessions().unwrap();
    assert_eq!((c.kept, c.resumed), (0, 1));
    // Unknown ids get a fresh session, not an error.
    for bad in ["nonsense", "0-00000000000000000000000000000000", ""] {
        let (_x, w) = connect_welcome(addr, &format!("/ws?session={bad}"));
        assert_eq!(w["resumed"], false, "{w}");
        session_of(&w);
    }
    // The id of a session its opener holds, with one digit of the secret
    // changed, or naming another slot or another generation of the
    // opener's slot: fresh, and the opener keeps its connection.
    let (mut live, w) = connect_welcome(addr, "/ws");
    let live_id = session_of(&w);
    let flip = |s: &str, at: usize| {
        let mut b = s.as_bytes().to_vec();
        b[at] = if b[at] == b'0' { b'1' } else { b'0' };
        String::from_utf8(b).unwrap()
    };
    let dash = live_id.find('-').unwrap();
    for forged in [
        flip(&live_id, live_id.len() - 1),
        flip(&live_id, dash + 8),
        flip(&live_id, dash + 16),
    ] {
        let (_x, w) = connect_welcome(addr, &format!("/ws?session={forged}"));
        assert_eq!(w["resumed"], false, "{forged}: {w}");
        assert_ne!(session_of(&w), live_id);
    }
    let v = ask(&mut live, r#"{"type":"subscribe","topics":["x"],"id":7}"#);
    assert_eq!(v["type"], "subscribed", "{v}");
    assert_eq!(running.sessions().unwrap().resumed, 1);
    stop(running);
}

#[test]
fn only_the_identity_that_opened_a_session_resumes_it() {
    let running = start(|s| {
        s.jwt_secret = Some(SECRET.into());
        with_history(s);
    });
    let addr = running.local_addr();
    let tok = |sub: &str| {
        token(
            SECRET,
            json!({"sub": sub, "exp": now() + 600, "subscribe": ["*"], "publish": ["*"]}),
        )
    };
    let (mut a, w) = connect_welcome(addr, &format!("/ws?token={}", tok("alice")));
    let id = session_of(&w);
    subscribe(&mut a, &["secret"]);
    // While Alice's connection holds it, Bob and a client without a token
    // get sessions of their own, and Alice keeps hers.
    for path in [
        format!("/ws?token={}&session={id}", tok("bob")),
        format!("/ws?session={id}"),
    ] {
        let (_b, w) = connect_welcome(addr, &path);
        assert_eq!(w["resumed"], false, "{w}");
        assert_ne!(w["session"], id.as_str());
    }
    subscribe(&mut a, &["secret.2"]);
    assert_eq!(running.sessions().unwrap().resumed, 0);
    drop(a);
    // Alice's, and the two fresh ones.
    wait_until("the sessions are kept", || {
        running.sessions().unwrap().kept == 3
    });
    // Bob, or a client without a token, gets a session of his own.
    for path in [
        format!("/ws?token={}&session={id}", tok("bob")),
        format!("/ws?session={id}"),
    ] {
        let (_b, w) = connect_welcome(addr, &path);
        assert_eq!(w["resumed"], false, "{w}");
        assert_ne!(w["session"], id.as_str());
    }
    // Alice still can.
    let (_a, w) = connect_welcome(addr, &format!("/ws?token={}&session={id}", tok("alice")));
    assert_eq!(w["resumed"], true, "{w}");
    let mut topics: Vec<String> = serde_json::from_value(w["topics"].clone()).unwrap();
    topics.sort();
    assert_eq!(topics, ["secret", "secret.2"]);
    stop(running);
}

#[test]
fn a_session_still_open_is_taken_over_and_closed_with_4001() {
    let running = start(with_history);
    let addr = running.local_addr();
    let (mut a, w) = connect_welcome(addr, "/ws");
    let id = session_of(&w);
    subscribe(&mut a, &["x"]);
    let (mut b, w) = connect_welcome(addr, &format!("/ws?session={id}"));
    assert_eq!(w["resumed"], true, "{w}");
    assert_eq!(w["topics"], json!(["x"]));
    match a.read() {
        Ok(tungstenite::Message::Close(Some(f))) => {
            assert_eq!(u16::from(f.code), 4001);
            assert_eq!(f.reason, "session resumed");
        }
        other => panic!("expected close 4001, got {other:?}"),
    }
    let mut p = connect(addr, "/ws");
    send(&mut p, r#"{"type":"publish","topic":"x","data":1}"#);
    assert_eq!(recv(&mut b), json!({"type":"message","topic":"x","data":1}));
    // Taken over twice in a row, the second time possibly before the
    // first got its state: the last connection ends up with it.
    for _ in 0..20 {
        let mut c = connect_raw(addr, &format!("/ws?session={id}"));
        // The server claims a session just after it sends the 101, on
        // the connection's core: `c` holds the session once its holder
        // `b` is closed, and only then does `d` come (else `d`'s claim,
        // on the other core, could come first and `c` take it from `d`).
        assert_eq!(expect_close(&mut b), 4001);
        let (mut d, w) = connect_welcome(addr, &format!("/ws?session={id}"));
        assert_eq!(w["resumed"], true, "{w}");
        assert_eq!(w["topics"], json!(["x"]), "{w}");
        assert_eq!(expect_close(&mut c), 4001);
        send(&mut p, r#"{"type":"publish","topic":"x","data":2}"#);
        assert_eq!(recv(&mut d), json!({"type":"message","topic":"x","data":2}));
        b = d;
    }
    drop(b);
    stop(running);
}

#[test]
fn kept_sessions_expire_and_are_evicted_past_max_sessions_counted() {
    let running = start(|s| s.session_ttl_secs = 1);
    let addr = running.local_addr();
    let (a, w) = connect_welcome(addr, "/ws");
    let id = session_of(&w);
    drop(a);
    wait_until("the session expires", || {
        running.sessions().unwrap().expired == 1
    });
    assert_eq!(running.sessions().unwrap().kept, 0);
    let (_b, w) = connect_welcome(addr, &format!("/ws?session={id}"));
    assert_eq!(w["resumed"], false, "{w}");
    let (_, metrics) = http(addr, "GET", "/metrics", &[], "");
    assert!(
        metrics.contains("shardcast_sessions_expired_total 1"),
        "{metrics}"
    );
    assert!(metrics.contains("shardcast_sessions 0"), "{metrics}");
    stop(running);

    // Two kept at most (one per core): of five, at least three go.
    let running = start(|s| s.max_sessions = 2);
    let addr = running.local_addr();
    for _ in 0..5 {
        let (ws, _) = connect_welcome(addr, "/ws");
        drop(ws);
    }
    wait_until("every session kept or evicted", || {
        let c = running.sessions().unwrap();
        c.kept + c.evicted == 5
    });
    let c = running.sessions().unwrap();
    assert!(c.kept <= 2 && c.evicted >= 3, "{c:?}");
    stop(running);
}
