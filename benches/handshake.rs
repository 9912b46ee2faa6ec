//! Handshake benchmarks: a browser's upgrade request parsed, validated and
//! answered with a 101, and a client checking that 101, in nanoseconds per handshake.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use shardcast::proto::handshake::{
    parse_request, write_switching_protocols, ClientHandshake, HandshakeLimits, Parsed,
};
use std::hint::black_box;

/// What Chrome sends, header for header.
const BROWSER_REQUEST: &[u8] = b"GET /ws?topic=prices HTTP/1.1\r\n\
Host: localhost:9001\r\n\
Connection: Upgrade\r\n\
Pragma: no-cache\r\n\
Cache-Control: no-cache\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36\r\n\
Upgrade: websocket\r\n\
Origin: http://localhost:3000\r\n\
Sec-WebSocket-Version: 13\r\n\
Accept-Encoding: gzip, deflate, br, zstd\r\n\
Accept-Language: en-US,en;q=0.9\r\n\
Sec-WebSocket-Key: x3JJHMbDL1EzLkh9GBhXDw==\r\n\
Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\
Sec-WebSocket-Protocol: v1.shardcast\r\n\
\r\n";

fn server(c: &mut Criterion) {
    let limits = HandshakeLimits::default();
    let mut g = c.benchmark_group("handshake_server");
    g.throughput(Throughput::Elements(1));
    g.bench_function("parse", |b| {
        b.iter(|| parse_request(black_box(BROWSER_REQUEST), &limits).unwrap())
    });
    let mut out = Vec::with_capacity(256);
    g.bench_function("parse_validate_101", |b| {
        b.iter(|| {
            out.clear();
            let Ok(Parsed::Complete { value: req, .. }) =
                parse_request(black_box(BROWSER_REQUEST), &limits)
            else {
                unreachable!("the request is complete");
            };
            let key = req.validate_upgrade().unwrap();
            let protocol = req.select_protocol(&["v1.shardcast"]);
            write_switching_protocols(&mut out, &key, protocol, &[]);
            black_box(out.len())
        })
    });
    g.finish();
}

fn client(c: &mut Criterion) {
    let client = ClientHandshake::new("localhost:9001", "/ws?topic=prices", &["v1.shardcast"], &[]);
    let Ok(Parsed::Complete { value: req, .. }) =
        parse_request(client.request_bytes(), &HandshakeLimits::default())
    else {
        unreachable!("the client's request is complete");
    };
    let mut response = Vec::new();
    let key = req.validate_upgrade().unwrap();
    write_switching_protocols(&mut response, &key, Some("v1.shardcast"), &[]);

    let mut g = c.benchmark_group("handshake_client");
    g.throughput(Throughput::Elements(1));
    g.bench_function("new", |b| {
        b.iter(|| ClientHandshake::new(black_box("localhost:9001"), "/ws", &["v1.shardcast"], &[]))
    });
    g.bench_function("parse_response", |b| {
        b.iter(|| client.parse_response(black_box(&response)).unwrap())
    });
    g.finish();
}

criterion_group!(benches, server, client);
criterion_main!(benches);
