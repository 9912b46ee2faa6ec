//! Verifies that async sessions (`Ws::spawn_session`) drive connections over real sockets: echo, typed JSON, publishes shared with callback connections on one server, backpressure both ways (a slow reader makes `send().await` wait without growing the outbox; an application that does not read stops the socket being read), close, and a panic that costs only its own connection.

mod common;
use common::*;

use std::io::{ErrorKind, Write};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shardcast::{
    CloseCode, Config, Handler, Message, OwnedMessage, Rejection, SendError, Server, ServerHandle,
    Session, SpawnError, UpgradeRequest, Ws,
};

/// What the test app records.
#[derive(Default)]
struct Seen {
    /// Largest outbox seen by a sender right after a send returned.
    max_buffered: AtomicUsize,
    /// Sends that returned `Ok`.
    sent: AtomicUsize,
    /// The `flood` session may start reading.
    release: AtomicBool,
    /// `close` callbacks, with the connection's data.
    closes: std::sync::Mutex<Vec<(u16, String)>>,
    /// `spawn_session` outside `open` was refused.
    refused_outside_open: AtomicBool,
}

/// Paths: `/async` echoes from a session (`sub:T`, `pub:T:X`, `json`,
/// `close`, `boom`, `bye` commands); `/flood?n=N&size=S` sends N binary
/// messages of S bytes from a session as fast as `send().await` lets it;
/// `/lazy` does not read until released, then answers each text with its
/// running count; anything else is a callback connection that subscribes
/// to what it is told and echoes.
struct App {
    seen: Arc<Seen>,
}

impl Handler for App {
    type Data = String;
    type Local = ();

    fn upgrade(&self, req: &mut UpgradeRequest<'_>) -> Result<String, Rejection> {
        let r = req.request();
        Ok(format!("{}?{}", r.path(), r.query().unwrap_or("")))
    }

    fn open(&self, ws: &mut Ws<'_, Self>) {
        let target = ws.data().clone();
        let seen = self.seen.clone();
        if target.starts_with("/async") {
            ws.spawn_session(echo).unwrap();
            // A second hand-off is refused.
            assert_eq!(ws.spawn_session(echo), Err(SpawnError::NotInOpen));
        } else if target.starts_with("/flood") {
            ws.spawn_session(move |s| flood(s, seen)).unwrap();
        } else if target.starts_with("/lazy") {
            ws.spawn_session_with(4, move |s| lazy(s, seen)).unwrap();
        }
    }

    fn message(&self, ws: &mut Ws<'_, Self>, msg: Message<'_>) {
        // Callback connections only.
        let Message::Text(t) = msg else { return };
        if let Some(topic) = t.strip_prefix("sub:") {
            ws.subscribe(topic).unwrap();
            ws.send_text(&format!("subscribed:{topic}"));
        } else if t == "spawn" {
            let r = ws.spawn_session(echo);
            self.seen
                .refused_outside_open
                .store(r == Err(SpawnError::NotInOpen), Ordering::SeqCst);
            ws.send_text("spawned?");
        } else {
            ws.send_text(t);
        }
    }

    fn close(&self, ws: &mut Ws<'_, Self>, code: CloseCode, _reason: &str) {
        let data = ws.data().clone();
        self.seen.closes.lock().unwrap().push((code.0, data));
    }
}

#[derive(serde::Deserialize, serde::Serialize)]
struct Point {
    x: i32,
    y: i32,
}

async fn echo(s: Session<App>) {
    loop {
        let Some(msg) = s.recv().await else { return };
        let text = match &msg {
            OwnedMessage::Binary(_) => {
                s.send(&msg).await.unwrap();
                continue;
            }
            OwnedMessage::Text(t) => t.as_str(),
        };
        if let Some(topic) = text.strip_prefix("sub:") {
            s.subscribe(topic).unwrap();
            s.send_text(&format!("subscribed:{topic}")).await.unwrap();
        } else if let Some(rest) = text.strip_prefix("pub:") {
            let (topic, payload) = rest.split_once(':').unwrap();
            let r = s.publish_text(topic, payload);
            s.send_text(&format!("published:{}", r.delivered))
                .await
                .unwrap();
        } else if text == "json" {
            // The next message, parsed: a Point, or an error answered.
            match s.recv_json::<Point>().await {
                Some(Ok(p)) => s.send_json(&Point { x: p.y, y: p.x }).await.unwrap(),
                Some(Err(e)) => s.send_text(&format!("bad: {e}")).await.unwrap(),
                None => return,
            }
        } else if text == "data" {
            let d = s.with_data(|d| d.clone()).unwrap();
            assert!(s.remote_addr().unwrap().ip().is_loopback());
            s.send_text(&d).await.unwrap();
        } else if text == "close" {
            s.close(CloseCode(4001), "asked").await;
            assert!(!s.is_open());
            assert!(matches!(s.send_text("late").await, Err(SendError::Closed)));
            return;
        } else if text == "boom" {
            panic!("the session panics on purpose");
        } else if text == "bye" {
            return; // the connection closes with 1000
        } else {
            s.send_text(text).await.unwrap();
        }
    }
}

async fn flood(s: Session<App>, seen: Arc<Seen>) {
    let q = s.with_data(|d| d.clone()).unwrap();
    let param = |name: &str| -> usize {
        q.split(['?', '&'])
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
            .unwrap()
    };
    let (n, size) = (param("n"), param("size"));
    for i in 0..n {
        let mut payload = vec![(i % 251) as u8; size];
        payload[..4].copy_from_slice(&(i as u32).to_be_bytes());
        if s.send_binary(&payload).await.is_err() {
            return;
        }
        seen.sent.fetch_add(1, Ordering::SeqCst);
        seen.max_buffered
            .fetch_max(s.buffered_amount(), Ordering::SeqCst);
    }
}

async fn lazy(s: Session<App>, seen: Arc<Seen>) {
    while !seen.release.load(Ordering::SeqCst) {
        monoio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut count = 0u64;
    while let Some(msg) = s.recv().await {
        count += 1;
        if msg.as_text() == Some("last") {
            s.send_text(&count.to_string()).await.unwrap();
        }
    }
}

fn start_app(config: Config) -> (ServerHandle, Arc<Seen>) {
    let seen = Arc::new(Seen::default());
    let h = Server::new(
        config.listen("127.0.0.1:0".parse().unwrap()),
        App { seen: seen.clone() },
    )
    .start()
    .expect("server starts");
    (h, seen)
}

/// Waits (bounded) until `cond` holds.
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn read_close(c: &mut Client) -> u16 {
    loop {
        match c.read() {
            Ok(tungstenite::Message::Close(f)) => return f.map_or(1005, |f| u16::from(f.code)),
            Ok(_) => continue,
            Err(e) => panic!("no close frame: {e}"),
        }
    }
}

#[test]
fn a_session_echoes_and_answers_typed_json() {
    let (h, _) = start_app(config(1));
    let mut c = connect(h.local_addr(), "/async?me");
    send_text(&mut c, "hello");
    assert_eq!(read_text(&mut c), "hello");
    c.send(tungstenite::Message::binary(vec![1u8, 2, 3]))
        .unwrap();
    assert_eq!(
        c.read().unwrap(),
        tungstenite::Message::binary(vec![1u8, 2, 3])
    );
    send_text(&mut c, "data");
    assert_eq!(read_text(&mut c), "/async?me");

    send_text(&mut c, "json");
    send_text(&mut c, r#"{"x":1,"y":2}"#);
    assert_eq!(read_text(&mut c), r#"{"x":2,"y":1}"#);
    send_text(&mut c, "json");
    send_text(&mut c, r#"{"x":"one"}"#);
    let bad = read_text(&mut c);
    assert!(bad.starts_with("bad: invalid JSON message"), "{bad}");
    // The session goes on after a bad message.
    send_text(&mut c, "still here");
    assert_eq!(read_text(&mut c), "still here");
}

#[test]
fn both_styles_share_one_server_and_its_publishes() {
    let (h, seen) = start_app(config(2));
    let addr = h.local_addr();
    let mut cb = connect(addr, "/callback");
    let mut asy = connect(addr, "/async");
    send_text(&mut cb, "sub:news");
    assert_eq!(read_text(&mut cb), "subscribed:news");
    send_text(&mut asy, "sub:news");
    assert_eq!(read_text(&mut asy), "subscribed:news");

    // From a thread: both styles get the same publish.
    assert!(h.publish_text("news", "from the handle") >= 1);
    assert_eq!(read_text(&mut cb), "from the handle");
    assert_eq!(read_text(&mut asy), "from the handle");

    // From the session: the callback connection gets it, the sender not.
    send_text(&mut asy, "pub:news:from the session");
    assert_eq!(read_text(&mut cb), "from the session");
    assert!(read_text(&mut asy).starts_with("published:"));

    // spawn_session is refused outside `open`.
    send_text(&mut cb, "spawn");
    assert_eq!(read_text(&mut cb), "spawned?");
    assert!(seen.refused_outside_open.load(Ordering::SeqCst));
    // And the callback connection still works as before.
    send_text(&mut cb, "ping");
    assert_eq!(read_text(&mut cb), "ping");
}

#[test]
fn a_slow_reader_makes_send_wait_and_the_outbox_stays_under_its_mark() {
    let low = 64 << 10;
    let (h, seen) = start_app(config(1).outbox_low_water(low));
    let (n, size) = (400usize, 32 << 10);
    // 12.5 MiB in all: far more than the kernel's socket buffers hold.
    let mut c = connect(h.local_addr(), &format!("/flood?n={n}&size={size}"));
    // Not reading: the sender must stop well before the end.
    let mut last = usize::MAX;
    wait_until("the sender to stall", || {
        let now = seen.sent.load(Ordering::SeqCst);
        let stalled = now == last && now > 0;
        last = now;
        if !stalled {
            std::thread::sleep(Duration::from_millis(100));
        }
        stalled
    });
    let stalled_at = seen.sent.load(Ordering::SeqCst);
    assert!(stalled_at < n, "all {n} sends completed without a reader");
    // While the sender waits: at most one message past the mark is queued
    // (and its 10-byte header), however much is left to send.
    let queued = h.query(|c| c.queued_bytes()).unwrap()[0];
    assert!(queued <= low + size + 10, "{queued} bytes queued");
    // Now read everything, in order.
    for i in 0..n {
        let m = c.read().expect("read");
        let tungstenite::Message::Binary(b) = m else {
            panic!("expected binary, got {m:?}")
        };
        assert_eq!(b.len(), size);
        assert_eq!(u32::from_be_bytes(b[..4].try_into().unwrap()) as usize, i);
    }
    // The last frame can reach the client before the session's task
    // resumes from its `send_binary(..).await` and counts it.
    wait_until("the sender to count its last send", || {
        seen.sent.load(Ordering::SeqCst) == n
    });
    let max = seen.max_buffered.load(Ordering::SeqCst);
    // One message past the mark at most (and its 10-byte header).
    assert!(max <= low + size + 10, "outbox reached {max} bytes");
    assert_eq!(h.stats().dropped, 0);
    eprintln!("sender stalled at {stalled_at}/{n} with {queued} B queued; largest outbox after a send {max} B");
}

#[test]
fn an_app_that_does_not_read_stops_the_socket_being_read() {
    let (h, seen) = start_app(config(1));
    let mut raw = Raw::connect_with(
        h.local_addr(),
        "GET /lazy HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    );
    // Write 1 KiB messages until the kernel takes no more.
    let frame = masked_frame(true, 0, 0x1, &[b'x'; 1024]);
    raw.stream.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + TIMEOUT;
    let mut written = 0usize;
    let mut stuck_since: Option<Instant> = None;
    loop {
        assert!(Instant::now() < deadline, "the socket never filled");
        match raw.stream.write(&frame[written % frame.len()..]) {
            Ok(k) => {
                written += k;
                stuck_since = None;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                // Full for 300 ms in a row: the server is not reading.
                let t = *stuck_since.get_or_insert_with(Instant::now);
                if t.elapsed() > Duration::from_millis(300) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("write: {e}"),
        }
    }
    // The server decoded at most its queue's worth (4) of those messages.
    let decoded = h.stats().messages_in;
    assert!(
        decoded <= 4,
        "{decoded} messages decoded while the app did not read"
    );
    let sent_msgs = written / frame.len();
    assert!(sent_msgs > 100, "only {sent_msgs} messages written");
    // Release the app, finish the frame in progress, send the last one.
    seen.release.store(true, Ordering::SeqCst);
    raw.stream.set_nonblocking(false).unwrap();
    let partial = written % frame.len();
    if partial != 0 {
        raw.stream.write_all(&frame[partial..]).unwrap();
    }
    let total = sent_msgs + usize::from(partial != 0);
    raw.stream
        .write_all(&masked_frame(true, 0, 0x1, b"last"))
        .unwrap();
    // Every message reached the app, none dropped.
    let (opcode, reply) = loop {
        let (_, opcode, reply) = raw.read_frame().expect("an answer");
        if opcode != 0x9 {
            break (opcode, reply);
        }
    };
    assert_eq!(opcode, 0x1);
    assert_eq!(String::from_utf8(reply).unwrap(), (total + 1).to_string());
    eprintln!("{written} bytes ({total} messages) waited in the kernel; {decoded} decoded early");
}

#[test]
fn close_return_and_panic_each_end_only_their_connection() {
    let (h, seen) = start_app(config(1));
    let addr = h.local_addr();
    let mut other = connect(addr, "/async?other");

    let mut c = connect(addr, "/async?closer");
    send_text(&mut c, "close");
    assert_eq!(read_close(&mut c), 4001);

    let mut c = connect(addr, "/async?leaver");
    send_text(&mut c, "bye");
    assert_eq!(read_close(&mut c), 1000);

    let mut c = connect(addr, "/async?panicker");
    send_text(&mut c, "boom");
    assert_eq!(read_close(&mut c), 1011);
    assert_eq!(h.stats().handler_panics, 1);

    // The others go on.
    send_text(&mut other, "still here");
    assert_eq!(read_text(&mut other), "still here");
    // `close` ran for each, with its data.
    wait_until("three close callbacks", || {
        seen.closes.lock().unwrap().len() == 3
    });
    let mut closes = seen.closes.lock().unwrap().clone();
    closes.sort();
    assert_eq!(
        closes,
        vec![
            (1000, "/async?leaver".to_string()),
            (1011, "/async?panicker".to_string()),
            (4001, "/async?closer".to_string()),
        ]
    );
}

#[test]
fn a_server_with_sessions_shuts_down_and_tells_them() {
    let (h, seen) = start_app(config(2));
    let addr = h.local_addr();
    let mut clients: Vec<Client> = (0..4)
        .map(|i| connect(addr, &format!("/async?{i}")))
        .collect();
    for c in &mut clients {
        send_text(c, "ready?");
        assert_eq!(read_text(c), "ready?");
    }
    let started = Instant::now();
    h.shutdown();
    for c in &mut clients {
        assert_eq!(read_close(c), 1001);
        // tungstenite queued its answer to the close: send it.
        let _ = c.flush();
    }
    h.join();
    assert!(
        started.elapsed() < TIMEOUT,
        "shutdown took {:?}",
        started.elapsed()
    );
    // Every session's connection reported its close.
    assert_eq!(seen.closes.lock().unwrap().len(), 4);
}
