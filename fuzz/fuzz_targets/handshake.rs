//! Fuzzes the opening handshake: arbitrary bytes through the server's parse,
//! validate and response writers, and through a client's response check.
//!
//! The first input byte picks the limits and an optional valid prefix, so the
//! fuzzer reaches the validation rules without first rediscovering HTTP.

#![no_main]

use libfuzzer_sys::fuzz_target;
use shardcast::proto::handshake::{
    parse_request, write_http_response, write_rejection, write_switching_protocols,
    ClientHandshake, HandshakeLimits, Parsed, Request,
};

const SERVER_PREFIX: &[u8] = b"GET /chat?topic=a%2Fb HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\
    Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n";
const KEY_LINE: &[u8] = b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let limits = if selector & 1 == 0 {
        HandshakeLimits::default()
    } else {
        HandshakeLimits::default()
            .with_max_header_bytes(usize::from(selector))
            .with_max_headers(usize::from(selector >> 4))
    };
    let client = ClientHandshake::with_key(
        *b"the sample nonce",
        "h",
        "/chat",
        &["chat", "superchat"],
        &[("Sec-WebSocket-Extensions", "permessage-deflate")],
    )
    .with_limits(limits);

    let mut input = Vec::with_capacity(rest.len() + 256);
    match (selector >> 1) & 3 {
        0 => {}
        1 => input.extend_from_slice(SERVER_PREFIX),
        2 => {
            input.extend_from_slice(SERVER_PREFIX);
            input.extend_from_slice(KEY_LINE);
        }
        _ => {
            input.extend_from_slice(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                  Connection: Upgrade\r\nSec-WebSocket-Accept: ",
            );
            input.extend_from_slice(client.expected_accept().as_bytes());
            input.extend_from_slice(b"\r\n");
        }
    }
    input.extend_from_slice(rest);

    server(&input, &limits);
    check_client(&client, &input, &limits);
});

fn server(buf: &[u8], limits: &HandshakeLimits) {
    let mut out = Vec::new();
    let (req, consumed) = match parse_request(buf, limits) {
        Ok(Parsed::Complete { value, consumed }) => (value, consumed),
        Ok(Parsed::Incomplete) => {
            assert!(buf.len() < limits.max_header_bytes);
            return;
        }
        Err(err) => {
            err.write_response(&mut out);
            assert_response_status(&out, err.status());
            return;
        }
    };
    assert!(consumed <= buf.len() && consumed <= limits.max_header_bytes);
    // The head alone parses the same, and one byte less is not a head.
    match parse_request(&buf[..consumed], limits) {
        Ok(Parsed::Complete { value, consumed: c }) => {
            assert_eq!(c, consumed);
            assert_eq!(value, req);
        }
        other => panic!("head alone: {other:?}"),
    }
    assert_eq!(
        parse_request(&buf[..consumed - 1], limits),
        Ok(Parsed::Incomplete)
    );

    exercise(&req);

    match req.validate_upgrade() {
        Ok(key) => {
            assert!(req.is_websocket_upgrade());
            // Echo a client-chosen value, as a server that accepts any
            // offered protocol would.
            let offered = req.protocols().last().unwrap_or("chat");
            let protocol = req.select_protocol(&["superchat", offered]);
            write_switching_protocols(&mut out, &key, protocol, &[("X-Shard", "0")]);
            assert_response_status(&out, 101);
        }
        Err(err) => {
            err.write_response(&mut out);
            assert_response_status(&out, err.status());
            out.clear();
            write_rejection(&mut out, err.status(), err.reason());
            assert_response_status(&out, err.status());
        }
    }
    out.clear();
    write_http_response(&mut out, 200, "text/plain", &[], &buf[consumed..]);
    assert_response_status(&out, 200);
}

fn exercise(req: &Request<'_>) {
    let _ = (req.method(), req.target(), req.version(), req.origin(), req.host());
    assert!(!req.path().contains('?'));
    if let Some(query) = req.query() {
        for pair in query.split('&').take(8) {
            let name = pair.split('=').next().unwrap_or_default();
            let value = req.query_param(name).expect("a name from the query is found");
            let _ = shardcast::proto::handshake::percent_decode(value);
        }
    }
    for (name, value) in req.headers() {
        assert_eq!(req.header_values(name).count() > 0, req.header(name).is_some());
        assert!(!value.iter().any(|b| matches!(b, b'\r' | b'\n' | b'\0')));
        let _ = req.header_str(name);
    }
    let _ = req.content_length();
    for protocol in req.protocols() {
        assert!(!protocol.is_empty() && !protocol.contains(','));
        assert_eq!(protocol.trim(), protocol);
    }
    for ext in req.extensions() {
        let _ = ext.name();
        for (name, value) in ext.params() {
            let _ = (name, value, ext.param(name));
        }
    }
}

fn check_client(client: &ClientHandshake, buf: &[u8], limits: &HandshakeLimits) {
    match client.parse_response(buf) {
        Ok(Parsed::Complete { value, consumed }) => {
            assert!(consumed <= buf.len() && consumed <= limits.max_header_bytes);
            if let Some(p) = value.protocol() {
                assert!(p == "chat" || p == "superchat");
            }
            for ext in value.extensions() {
                assert_eq!(ext.name(), "permessage-deflate");
                let _ = ext.params().count();
            }
            let _ = (value.headers().count(), value.header_str("upgrade"));
        }
        Ok(Parsed::Incomplete) => assert!(buf.len() < limits.max_header_bytes),
        Err(err) => {
            let _ = (err.status(), err.reason(), err.to_string());
        }
    }
}

/// What a writer produced must start with the status line for `status` and
/// end its head exactly once before any body.
fn assert_response_status(out: &[u8], status: u16) {
    let status_line = format!("HTTP/1.1 {status} ");
    assert!(out.starts_with(status_line.as_bytes()), "{out:?}");
    let head_end = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("the head ends");
    let head = &out[..head_end + 2];
    // Every header line is `Name: value`: nothing was injected.
    for line in head.split(|&b| b == b'\n').skip(1).filter(|l| l.len() > 1) {
        assert!(line.ends_with(b"\r") && line.contains(&b':'), "{line:?}");
        assert!(!line[..line.len() - 1].contains(&b'\r'));
    }
}
