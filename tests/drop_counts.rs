//! Verifies that every message is accounted for: over two cores and under both slow-consumer policies, the data messages clients received plus the engine's `dropped` and `discarded` counters equal the deliveries the engine attempted (the subscribers each counted publish reached, queued or not).

mod common;
use common::*;
use shardcast::{CloseCode, SlowConsumerPolicy};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

const PUBLISHES: usize = 3000;
const PAYLOAD: usize = 1024;

/// A client whose receive buffer is small, so that a client that stops
/// reading backs up into the server's outbox soon.
fn small_buffer_client(addr: std::net::SocketAddr) -> Client {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.connect(&addr.into()).unwrap();
    let stream: TcpStream = sock.into();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    let (ws, _) = tungstenite::client(format!("ws://{addr}/"), stream).expect("handshake");
    MaybeTls::wrap(ws)
}

/// tungstenite's plain-stream client, as the common helpers type it.
struct MaybeTls;
impl MaybeTls {
    fn wrap(ws: tungstenite::WebSocket<TcpStream>) -> Client {
        let (stream, role) = (ws.into_inner(), tungstenite::protocol::Role::Client);
        tungstenite::WebSocket::from_raw_socket(
            tungstenite::stream::MaybeTlsStream::Plain(stream),
            role,
            None,
        )
    }
}

/// Counts the data messages `ws` receives until the connection ends or,
/// once `quiet` is set, nothing arrives for 300 ms. A stalled client reads
/// nothing until `go` is set.
fn count_messages(mut ws: Client, go: Arc<AtomicBool>, quiet: Arc<AtomicBool>) -> usize {
    while !go.load(Ordering::Acquire) {
        std::thread::sleep(Duration::from_millis(5));
    }
    if let tungstenite::stream::MaybeTlsStream::Plain(s) = ws.get_ref() {
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
    }
    let mut n = 0;
    let started = std::time::Instant::now();
    loop {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "reader never finished"
        );
        match ws.read() {
            Ok(tungstenite::Message::Text(_) | tungstenite::Message::Binary(_)) => n += 1,
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                if quiet.load(Ordering::Acquire) {
                    return n;
                }
            }
            Err(_) => return n,
        }
    }
}

fn accounted(policy: SlowConsumerPolicy) -> usize {
    let cfg = config(2)
        .slow_consumer(policy)
        .outbox_limit(32 << 10)
        .outbox_burst_limit(64 << 10)
        .outbox_low_water(8 << 10)
        .ping_interval(Duration::ZERO);
    let (h, _) = start(cfg);
    let addr = h.local_addr();
    // Readers on every core, and stalled clients that read only later.
    let mut clients: Vec<(Client, bool)> = one_per_core(addr, 2)
        .into_iter()
        .map(|(_, c)| (c, false))
        .collect();
    for _ in 0..4 {
        clients.push((small_buffer_client(addr), true));
    }
    for (c, _) in clients.iter_mut() {
        send_text(c, "sub:news");
        assert!(read_text(c).starts_with("subscribed:news:"));
    }
    let subscribers = clients.len();
    wait_until("every core sees its subscribers", || {
        h.subscriber_count("news").unwrap() == subscribers
    });
    let quiet = Arc::new(AtomicBool::new(false));
    let published = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = clients
        .into_iter()
        .map(|(c, stalled)| {
            let go = if stalled {
                published.clone()
            } else {
                Arc::new(AtomicBool::new(true))
            };
            let quiet = quiet.clone();
            std::thread::spawn(move || count_messages(c, go, quiet))
        })
        .collect();

    let frame = shardcast::PreparedFrame::text(&"x".repeat(PAYLOAD));
    let mut attempted = 0;
    for _ in 0..PUBLISHES {
        let r = h.publish_counted("news", &frame).unwrap();
        attempted += r.delivered + r.dropped;
    }
    published.store(true, Ordering::Release);
    // Everything handed to the cores has been queued, written or thrown away.
    wait_until("the inboxes and outboxes empty", || {
        h.inbox_depths().iter().all(|&d| d == 0)
            && h.query(|c| c.queued_bytes()).unwrap().iter().sum::<usize>() == 0
    });
    quiet.store(true, Ordering::Release);
    let received: usize = readers.into_iter().map(|t| t.join().unwrap()).sum();
    let s = h.stats();
    // A subscriber closed as a slow consumer leaves the topic: later
    // publishes no longer try it.
    assert!(attempted <= PUBLISHES * subscribers);
    eprintln!(
        "attempted {attempted}: received {received}, dropped {}, discarded {}",
        s.dropped, s.discarded
    );
    assert!(
        s.dropped + s.discarded > 0,
        "the stalled clients never backed up: the test exercised nothing"
    );
    assert_eq!(
        received as u64 + s.dropped + s.discarded,
        attempted as u64,
        "received + dropped + discarded = attempted"
    );
    stop(h);
    attempted
}

#[test]
fn every_message_is_received_dropped_or_discarded_when_slow_consumers_are_closed() {
    accounted(SlowConsumerPolicy::Close(
        CloseCode::TRY_AGAIN_LATER,
        "slow consumer".into(),
    ));
}

#[test]
fn every_message_is_received_or_dropped_when_slow_consumers_lose_messages() {
    // Nobody leaves the topic: every publish tries every subscriber.
    let subscribers = 6;
    assert_eq!(
        accounted(SlowConsumerPolicy::DropMessage),
        PUBLISHES * subscribers
    );
}
