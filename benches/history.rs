//! What history costs a subscriber who comes back: the time from sending a `subscribe` with a
//! position to having every missed message, for 1,000 (and 100) missed JSON messages of 64 bytes,
//! through the `shardcast` server's protocol over loopback, on a 2-core server. Also the time of a
//! subscribe to a history topic without a position (its join asks the topic's home core) against
//! a plain topic.
//!
//! `cargo bench --bench history` (about a minute). Wall time: run it on a quiet machine.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use shardcast::server::settings::{Namespace, Settings};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

type Client = WebSocket<MaybeTlsStream<std::net::TcpStream>>;

fn connect(addr: std::net::SocketAddr) -> Client {
    let (mut ws, _) = tungstenite::connect(format!("ws://{addr}/ws")).expect("handshake");
    // Every connection of the server starts with its `welcome`.
    let welcome = next_text(&mut ws);
    assert!(welcome.contains(r#""type":"welcome""#), "{welcome}");
    ws
}

fn next_text(ws: &mut Client) -> String {
    loop {
        if let Message::Text(t) = ws.read().expect("read") {
            return t.to_string();
        }
    }
}

/// `iters` times on a fresh connection: the time from sending `msg` to
/// having its reply and whatever `then` reads after it.
fn timed_subscribes(
    addr: std::net::SocketAddr,
    msg: &str,
    iters: u64,
    mut then: impl FnMut(&mut Client, &str),
) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let mut ws = connect(addr);
        let t = Instant::now();
        ws.send(Message::text(msg)).unwrap();
        let reply = next_text(&mut ws);
        then(&mut ws, &reply);
        total += t.elapsed();
    }
    total
}

fn recovery(c: &mut Criterion) {
    let mut s = Settings::default();
    s.listen = "127.0.0.1:0".parse().unwrap();
    s.cores = Some(2);
    s.pin = false;
    s.stats_interval_ms = 0;
    s.publish_rate = 0.0;
    s.namespaces = vec!["h.*=10000,3600".parse::<Namespace>().unwrap()];
    s.max_recovery = 10_000;
    let mut running = shardcast::server::start(s).expect("server starts");
    let addr = running.handle().local_addr();
    let data = format!("\"{}\"", "x".repeat(62));
    // A position to recover from, then 1,000 messages after it.
    let mut first = connect(addr);
    first
        .send(Message::text(
            r#"{"type":"subscribe","topics":["h.t"],"id":1}"#,
        ))
        .unwrap();
    let reply: serde_json::Value = serde_json::from_str(&next_text(&mut first)).unwrap();
    let epoch = reply["streams"]["h.t"]["epoch"]
        .as_str()
        .unwrap()
        .to_owned();
    for _ in 0..1000 {
        running.handle().publish(
            "h.t",
            &shardcast::server::fuzzing::message_frame("h.t", data.as_bytes()),
        );
    }
    for _ in 0..1000 {
        next_text(&mut first);
    }
    let mut g = c.benchmark_group("history");
    g.sample_size(20).measurement_time(Duration::from_secs(10));
    for missed in [100u64, 1000] {
        let from = 1000 - missed;
        let msg = format!(
            r#"{{"type":"subscribe","topics":["h.t"],"recover":{{"h.t":{{"offset":{from},"epoch":"{epoch}"}}}},"id":1}}"#
        );
        g.bench_function(format!("recover_{missed}_missed"), |b| {
            b.iter_custom(|iters| {
                timed_subscribes(addr, &msg, iters, |ws, reply| {
                    assert!(reply.contains("\"recovered\":true"), "{reply}");
                    for _ in 0..missed {
                        next_text(ws);
                    }
                })
            })
        });
    }
    for topic in ["plain", "h.t"] {
        let msg = format!(r#"{{"type":"subscribe","topics":["{topic}"],"id":1}}"#);
        g.bench_function(
            format!(
                "subscribe_{}",
                if topic == "plain" { "plain" } else { "history" }
            ),
            |b| b.iter_custom(|iters| timed_subscribes(addr, &msg, iters, |_, _| {})),
        );
    }
    g.finish();
    running.shutdown();
}

criterion_group!(benches, recovery);
criterion_main!(benches);
