//! Verifies that hostile clients are closed by policy while a well-behaved client keeps being served.

mod server_support;
use server_support::common::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A well-behaved client doing echo round trips on its own thread for as
/// long as a test runs; `finish` asserts that every round trip succeeded.
struct Good {
    stop: Arc<AtomicBool>,
    trips: Arc<AtomicU64>,
    thread: Option<JoinHandle<Result<(), String>>>,
}

impl Good {
    fn start(addr: SocketAddr) -> Good {
        let stop = Arc::new(AtomicBool::new(false));
        let trips = Arc::new(AtomicU64::new(0));
        let mut ws = connect(addr, "/");
        let (s, t) = (stop.clone(), trips.clone());
        let thread = std::thread::spawn(move || {
            let mut i = 0u64;
            while !s.load(Ordering::SeqCst) {
                let text = format!("good-{i}");
                let started = Instant::now();
                ws.send(tungstenite::Message::text(text.clone()))
                    .map_err(|e| format!("send {i}: {e}"))?;
                loop {
                    match ws.read().map_err(|e| format!("read {i}: {e}"))? {
                        tungstenite::Message::Text(got) if got.as_str() == text => break,
                        tungstenite::Message::Ping(_) | tungstenite::Message::Pong(_) => {}
                        other => return Err(format!("round trip {i}: got {other:?}")),
                    }
                }
                // Served, and served promptly: no hostile client may stall its core.
                if started.elapsed() > Duration::from_secs(1) {
                    return Err(format!("round trip {i} took {:?}", started.elapsed()));
                }
                t.fetch_add(1, Ordering::SeqCst);
                i += 1;
                // Pacing, not synchronisation: keeps the client from spinning a CPU.
                std::thread::sleep(Duration::from_millis(5));
            }
            let _ = ws.close(None);
            Ok(())
        });
        let good = Good {
            stop,
            trips,
            thread: Some(thread),
        };
        good.wait_for_trips(1);
        good
    }

    fn trips(&self) -> u64 {
        self.trips.load(Ordering::SeqCst)
    }

    /// Waits until `more` further round trips completed (proof of service now).
    fn wait_for_trips(&self, more: u64) {
        let target = self.trips() + more;
        wait_until("good client round trips", || {
            assert!(
                !self.thread.as_ref().unwrap().is_finished(),
                "good client stopped early"
            );
            self.trips() >= target
        });
    }

    fn finish(mut self) {
        self.wait_for_trips(3);
        self.stop.store(true, Ordering::SeqCst);
        let result = self
            .thread
            .take()
            .unwrap()
            .join()
            .expect("good client thread");
        if let Err(e) = result {
            panic!("good client was not served: {e}");
        }
    }
}

/// Tests here run one at a time: the RSS checks read the whole process,
/// and the socket counts stay within the test's own budget.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Resident memory of this process (the server runs in it), in bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("VmRSS");
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

fn upgrade_request(addr: SocketAddr) -> String {
    format!(
        "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
}

/// Whether a read on `s` ends the stream (EOF or reset) within its timeout.
fn reads_eof(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

#[test]
fn slowloris_is_closed_at_the_handshake_timeout() {
    let _serial = serial();
    let timeout = Duration::from_secs(1);
    let (h, _) = start(config(2).handshake_timeout(timeout));
    let addr = h.local_addr();
    let good = Good::start(addr);

    let request = upgrade_request(addr);
    let dribble = Duration::from_millis(300);
    let whole_request = dribble * request.len() as u32;
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_nodelay(true).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    let started = Instant::now();
    let mut w = s.try_clone().unwrap();
    let give_up = Arc::new(AtomicBool::new(false));
    let give_up_w = give_up.clone();
    let writer = std::thread::spawn(move || {
        for b in request.bytes() {
            if give_up_w.load(Ordering::SeqCst) || w.write_all(&[b]).is_err() {
                return;
            }
            std::thread::sleep(dribble);
        }
    });
    assert!(reads_eof(&mut s), "slowloris was not closed");
    let closed_after = started.elapsed();
    give_up.store(true, Ordering::SeqCst);
    writer.join().unwrap();
    assert!(
        closed_after >= timeout - Duration::from_millis(100),
        "closed before the handshake timeout: {closed_after:?}"
    );
    assert!(
        closed_after < timeout * 3 && closed_after < whole_request,
        "closed at {closed_after:?}, not at the handshake timeout"
    );
    good.finish();
    stop(h);
}

#[test]
fn a_thousand_half_open_connections_are_closed_at_the_handshake_timeout() {
    let _serial = serial();
    const N: usize = 1000;
    let (h, _) = start(config(2).handshake_timeout(Duration::from_secs(2)));
    let addr = h.local_addr();
    let good = Good::start(addr);
    let baseline = h.stats().sockets;

    let started = Instant::now();
    let mut silent: Vec<TcpStream> = (0..N)
        .map(|_| TcpStream::connect(addr).expect("connect"))
        .collect();
    wait_until("the server to hold every silent socket", || {
        h.stats().sockets == baseline + N as u64
    });
    good.wait_for_trips(3);

    let mut eofs = 0;
    for s in &mut silent {
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        if reads_eof(s) {
            eofs += 1;
        }
    }
    assert_eq!(eofs, N, "silent connections closed by the server");
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "closed after {:?}",
        started.elapsed()
    );
    wait_until("sockets back to the baseline", || {
        h.stats().sockets == baseline
    });
    drop(silent);
    good.finish();
    stop(h);
}

#[test]
fn header_bomb_gets_431_and_garbage_gets_400() {
    let _serial = serial();
    let (h, _) = start(config(2).max_header_bytes(8 << 10));
    let addr = h.local_addr();
    let good = Good::start(addr);

    let mut bomb = format!("GET / HTTP/1.1\r\nHost: {addr}\r\n");
    for i in 0..2000 {
        bomb.push_str(&format!("X-Bomb-{i}: {}\r\n", "b".repeat(16)));
    }
    bomb.push_str("\r\n");
    assert!(bomb.len() > 32 << 10);
    let (status, _) = http(addr, &bomb);
    assert_eq!(status, 431);

    // The answer to garbage is 400, then the server closes.
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s.write_all(b"\x00\x01\x02 not http at all \xff\xfe\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).expect("closed after the 400");
    assert!(
        answer.starts_with(b"HTTP/1.1 400"),
        "{}",
        String::from_utf8_lossy(&answer)
    );

    let st = h.stats();
    assert!(st.rejected_with(431) >= 1 && st.rejected_with(400) >= 1);
    good.finish();
    stop(h);
}

#[test]
fn a_frame_announcing_two_to_the_62_bytes_is_closed_with_1009_without_allocating() {
    let _serial = serial();
    let (h, _) = start(config(2));
    let addr = h.local_addr();
    let good = Good::start(addr);
    let before = rss();

    let mut r = Raw::connect(addr);
    let mut header = vec![0x82, 0x80 | 127];
    header.extend_from_slice(&(1u64 << 62).to_be_bytes());
    header.extend_from_slice(&[1, 2, 3, 4]);
    header.extend_from_slice(&[0u8; 64]);
    let started = Instant::now();
    r.send_raw(&header);
    assert_eq!(r.expect_close(), Some(1009));
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "1009 after {:?}",
        started.elapsed()
    );
    let growth = rss().saturating_sub(before);
    assert!(growth < 64 << 20, "RSS grew by {growth} bytes");
    good.finish();
    stop(h);
}

/// Sends one binary message as 100,000 one-byte fragments (a writer thread,
/// so a server that closes early cannot block the test) and returns the
/// client to read the answer from.
fn send_fragmented(addr: SocketAddr) -> (Raw, Vec<u8>, JoinHandle<()>) {
    const FRAGMENTS: usize = 100_000;
    let r = Raw::connect(addr);
    let payload: Vec<u8> = (0..FRAGMENTS).map(|i| (i % 251) as u8).collect();
    let mut bytes = Vec::with_capacity(FRAGMENTS * 7);
    for (i, b) in payload.iter().enumerate() {
        let opcode = if i == 0 { 2 } else { 0 };
        bytes.extend_from_slice(&masked_frame(i == FRAGMENTS - 1, 0, opcode, &[*b]));
    }
    let mut w = r.stream.try_clone().unwrap();
    w.set_write_timeout(Some(TIMEOUT)).unwrap();
    let writer = std::thread::spawn(move || {
        let _ = w.write_all(&bytes);
    });
    (r, payload, writer)
}

#[test]
fn a_message_of_100_000_one_byte_fragments_is_echoed_whole() {
    let _serial = serial();
    let (h, _) = start(config(2).max_message_size(1 << 20));
    let addr = h.local_addr();
    let good = Good::start(addr);
    let (mut r, payload, writer) = send_fragmented(addr);
    let (fin, op, got) = r.read_frame().expect("the echo");
    writer.join().unwrap();
    assert!(fin);
    assert_eq!(op, 2);
    assert!(got == payload, "echo differs ({} bytes)", got.len());
    good.finish();
    stop(h);
}

#[test]
fn a_message_of_100_000_one_byte_fragments_over_the_limit_is_closed_with_1009() {
    let _serial = serial();
    let (h, _) = start(config(2).max_message_size(50_000));
    let addr = h.local_addr();
    let good = Good::start(addr);
    let (mut r, _, writer) = send_fragmented(addr);
    assert_eq!(r.expect_close(), Some(1009));
    drop(r);
    writer.join().unwrap();
    good.finish();
    stop(h);
}

#[test]
fn a_ping_flood_is_answered_or_closed_by_the_slow_consumer_policy() {
    let _serial = serial();
    ping_flood(false);
}

#[test]
fn a_ping_flood_never_makes_the_server_hold_more_than_the_outbox_limit() {
    let _serial = serial();
    // The growth depends on how the kernel's buffers happen to fill: three tries.
    for _ in 0..3 {
        ping_flood(true);
    }
}

/// 20,000 pings from a client that reads nothing until it has sent them
/// all; `bounded` also asserts that the pongs the server holds stay within
/// the outbox limit.
fn ping_flood(bounded: bool) {
    const PINGS: usize = 20_000;
    let outbox = 64 << 10;
    let (h, _) = start(config(2).outbox_limit(outbox));
    let addr = h.local_addr();
    let good = Good::start(addr);
    let before_rss = rss();
    let before = h.stats();

    // A small receive window, so the pongs back up into the server rather
    // than into this socket's buffer.
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.connect(&addr.into()).unwrap();
    let mut r = Raw::upgrade(sock.into(), &upgrade_request(addr));
    let payload = [b'p'; 125];
    let mut flood = Vec::with_capacity(PINGS * 131);
    for _ in 0..PINGS {
        flood.extend_from_slice(&masked_frame(true, 0, 9, &payload));
    }
    let flood_len = flood.len();
    let mut w = r.stream.try_clone().unwrap();
    w.set_write_timeout(Some(TIMEOUT)).unwrap();
    let writer = std::thread::spawn(move || w.write_all(&flood).is_ok());
    let all_written = writer.join().unwrap();
    good.wait_for_trips(3);
    // What the server holds for its clients stays within the outbox limit
    // (plus a pong in flight and the good client's few bytes): it answers,
    // drops pongs, or closes, but never buffers the flood.
    let mid = h.stats();
    let read = mid.bytes_in - before.bytes_in;
    let held = h.query(|c| c.queued_bytes()).unwrap().iter().sum::<usize>() as u64;
    eprintln!(
        "ping flood: server read {read} of {} bytes, holds {held}",
        flood_len
    );
    assert!(
        !bounded || held <= (outbox + (128 << 10)) as u64,
        "server holds {held} bytes of pongs"
    );

    // Only now does the flooder read what it was sent.
    let mut pongs = 0;
    let mut close = None;
    while let Some((_, op, p)) = r.read_frame() {
        match op {
            10 => {
                assert_eq!(p, payload);
                pongs += 1;
                if pongs == PINGS {
                    break;
                }
            }
            8 => {
                close = Some(u16::from_be_bytes([p[0], p[1]]));
                break;
            }
            other => panic!("unexpected opcode {other}"),
        }
    }
    let after = h.stats();
    eprintln!("ping flood: written whole {all_written}, {pongs} pongs, close {close:?}");
    match close {
        None => assert_eq!(pongs, PINGS, "every ping answered"),
        Some(code) => {
            assert_eq!(code, 1013);
            assert!(after.slow_closes > before.slow_closes);
        }
    }
    let growth = rss().saturating_sub(before_rss);
    assert!(growth < 64 << 20, "RSS grew by {growth} bytes");
    good.finish();
    stop(h);
}

#[test]
fn a_client_that_stops_reading_and_ignores_pings_is_closed_with_1001() {
    let _serial = serial();
    let idle = Duration::from_secs(2);
    let cfg = config(2)
        .ping_interval(Duration::from_millis(500))
        .idle_timeout(idle)
        .close_timeout(Duration::from_secs(1));
    let (h, events) = start(cfg);
    let addr = h.local_addr();
    let good = Good::start(addr);

    // Never answers a ping and sends nothing. Reading what arrives changes
    // nothing the server can see, and timestamps the close.
    let mut r = Raw::connect(addr);
    let started = Instant::now();
    let mut pings = 0;
    let code = loop {
        let (_, op, p) = r.read_frame().expect("a close frame");
        match op {
            9 => pings += 1,
            8 => break u16::from_be_bytes([p[0], p[1]]),
            other => panic!("unexpected opcode {other}"),
        }
    };
    let closed_after = started.elapsed();
    assert!(
        closed_after >= idle - Duration::from_millis(100) && closed_after < idle * 2,
        "closed after {closed_after:?}"
    );
    assert_eq!(code, 1001);
    assert!(pings >= 1, "pinged before the close");
    // The peer never answers the close either: the server drops the socket
    // after the close timeout and tells the application.
    r.expect_eof();
    wait_until("the application hears of the close", || {
        events
            .closed
            .lock()
            .unwrap()
            .iter()
            .any(|(c, _)| *c == 1001)
    });
    good.finish();
    stop(h);
}

#[test]
fn connections_over_the_limit_get_503_and_do_not_count() {
    let _serial = serial();
    const LIMIT: usize = 4;
    let (h, _) = start(config(2).max_connections(LIMIT));
    let addr = h.local_addr();
    let good = Good::start(addr);
    let mut others: Vec<Raw> = (1..LIMIT).map(|_| Raw::connect(addr)).collect();
    wait_until("all admitted", || h.stats().active == LIMIT as u64);

    for _ in 0..50 {
        let (status, _) = http(addr, &upgrade_request(addr));
        assert_eq!(status, 503);
    }
    let st = h.stats();
    assert!(st.rejected_with(503) >= 50);
    assert_eq!(st.active, LIMIT as u64, "rejected handshakes do not count");
    good.wait_for_trips(3);

    // Freed slots are taken again.
    for r in &mut others {
        r.send_frame(true, 8, &1000u16.to_be_bytes());
        assert_eq!(r.expect_close(), Some(1000));
    }
    others.clear();
    wait_until("the others closed", || h.stats().active == 1);
    let mut again: Vec<Raw> = (1..LIMIT).map(|_| Raw::connect(addr)).collect();
    for r in &mut again {
        r.send_frame(true, 1, b"back");
        assert_eq!(r.read_frame().unwrap().2, b"back");
    }
    assert_eq!(http(addr, &upgrade_request(addr)).0, 503);
    good.finish();
    stop(h);
}

#[test]
fn a_burst_of_handshakes_on_every_core_never_exceeds_the_global_limit() {
    let _serial = serial();
    const LIMIT: usize = 20;
    const THREADS: usize = 40;
    let (h, _) = start(config(2).max_connections(LIMIT));
    let addr = h.local_addr();
    let good = Good::start(addr);
    for round in 0..20 {
        // Every attempt connects first, then all send their requests at once.
        let barrier = Arc::new(std::sync::Barrier::new(THREADS));
        let attempts: Vec<JoinHandle<Option<TcpStream>>> = (0..THREADS)
            .map(|_| {
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    let mut s = TcpStream::connect(addr).unwrap();
                    s.set_read_timeout(Some(TIMEOUT)).unwrap();
                    s.set_nodelay(true).unwrap();
                    barrier.wait();
                    s.write_all(upgrade_request(addr).as_bytes()).unwrap();
                    let mut head = [0u8; 12];
                    s.read_exact(&mut head).unwrap();
                    match &head[9..12] {
                        b"101" => Some(s),
                        b"503" => None,
                        other => panic!("status {}", String::from_utf8_lossy(other)),
                    }
                })
            })
            .collect();
        let admitted: Vec<TcpStream> = attempts
            .into_iter()
            .filter_map(|t| t.join().unwrap())
            .collect();
        let active = h.stats().active;
        assert!(
            admitted.len() < LIMIT && active <= LIMIT as u64,
            "round {round}: {} admitted beside the good client, {active} active, limit {LIMIT}",
            admitted.len()
        );
        drop(admitted);
        wait_until("the burst closed", || h.stats().active == 1);
    }
    good.finish();
    stop(h);
}

/// A WebSocket client of the standalone server, connecting from `source`
/// (any 127.0.0.0/8 address reaches the loopback listener), so one test can
/// play several client addresses.
fn connect_from(source: [u8; 4], addr: SocketAddr) -> Result<server_support::Client, u16> {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.bind(&SocketAddr::from((source, 0)).into()).unwrap();
    sock.connect(&addr.into()).unwrap();
    let stream: TcpStream = sock.into();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(TIMEOUT)).unwrap();
    let stream = tungstenite::stream::MaybeTlsStream::Plain(stream);
    match tungstenite::client(format!("ws://{addr}/"), stream) {
        Ok((mut ws, _)) => {
            // Every connection of the server starts with its `welcome`.
            let welcome = server_support::recv(&mut ws);
            assert_eq!(welcome["type"], "welcome", "{welcome}");
            Ok(ws)
        }
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(resp))) => {
            Err(resp.status().as_u16())
        }
        Err(e) => panic!("handshake from {source:?} failed otherwise: {e}"),
    }
}

#[test]
fn connections_over_the_per_address_limit_get_429_and_other_addresses_are_served() {
    let _serial = serial();
    const PER_IP: usize = 3;
    let running = server_support::start(|s| s.max_connections_per_ip = PER_IP);
    let addr = running.local_addr();
    let mut good = connect_from([127, 0, 0, 2], addr).expect("the good address is admitted");
    server_support::assert_alive(&mut good);

    let hostile = [127, 0, 0, 1];
    let mut held: Vec<_> = (0..PER_IP)
        .map(|_| connect_from(hostile, addr).expect("within the limit"))
        .collect();
    for i in 0..50 {
        assert_eq!(connect_from(hostile, addr).err(), Some(429));
        if i % 10 == 0 {
            server_support::assert_alive(&mut good);
        }
    }
    assert_eq!(
        running.handle().stats().active,
        PER_IP as u64 + 1,
        "rejected handshakes do not count"
    );

    // The refused never took a slot: once the held ones go, as many come back.
    for ws in &mut held {
        let _ = ws.close(None);
        let _ = ws.flush();
    }
    drop(held);
    wait_until("the hostile address's connections closed", || {
        running.handle().stats().active == 1
    });
    let mut again: Vec<_> = (0..PER_IP)
        .map(|_| connect_from(hostile, addr).expect("slots freed"))
        .collect();
    assert_eq!(connect_from(hostile, addr).err(), Some(429));
    for ws in &mut again {
        server_support::assert_alive(ws);
    }
    server_support::assert_alive(&mut good);
    server_support::stop(running);
}
