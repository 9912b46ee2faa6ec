use super::super::{parse_request, write_switching_protocols, UpgradeKey};
use super::*;

/// The nonce of RFC 6455 §1.3, whose accept value the RFC gives.
const NONCE: [u8; 16] = *b"the sample nonce";
const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

fn client(protocols: &[&str]) -> ClientHandshake {
    ClientHandshake::with_key(NONCE, "server.example.com", "/chat", protocols, &[])
}

fn response(headers: &[&str]) -> Vec<u8> {
    let mut s = String::from("HTTP/1.1 101 Switching Protocols\r\n");
    for h in headers {
        s.push_str(h);
        s.push_str("\r\n");
    }
    s.push_str("\r\n");
    s.into_bytes()
}

fn ok_response(extra: &[&str]) -> Vec<u8> {
    let accept = format!("Sec-WebSocket-Accept: {ACCEPT}");
    let mut h = vec!["Upgrade: websocket", "Connection: Upgrade", accept.as_str()];
    h.extend_from_slice(extra);
    response(&h)
}

fn check(c: &ClientHandshake, buf: &[u8]) -> Result<Option<String>, HandshakeError> {
    match c.parse_response(buf)? {
        Parsed::Complete { value, .. } => Ok(value.protocol().map(str::to_owned)),
        Parsed::Incomplete => panic!("expected a complete response"),
    }
}

#[test]
fn request_matches_the_rfc_example() {
    let c = client(&["chat", "superchat"]);
    assert_eq!(
        std::str::from_utf8(c.request_bytes()).unwrap(),
        "GET /chat HTTP/1.1\r\n\
         Host: server.example.com\r\n\
         Upgrade: websocket\r\n\
         Connection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: chat, superchat\r\n\r\n"
    );
    assert_eq!(c.expected_accept(), ACCEPT);
    let mut out = b"x".to_vec();
    c.write_request(&mut out);
    assert_eq!(&out[1..], c.request_bytes());
}

#[test]
fn request_passes_server_validation() {
    let c = ClientHandshake::new(
        "localhost:9001",
        "/ws?topic=a",
        &[],
        &[
            ("Origin", "http://localhost"),
            ("Authorization", "Bearer t"),
        ],
    );
    let Ok(Parsed::Complete {
        value: req,
        consumed,
    }) = parse_request(c.request_bytes(), &HandshakeLimits::default())
    else {
        panic!("the request must parse");
    };
    assert_eq!(consumed, c.request_bytes().len());
    assert_eq!(req.query_param("topic"), Some("a"));
    assert_eq!(req.origin(), Some("http://localhost"));
    assert_eq!(req.header_str("authorization"), Some("Bearer t"));
    assert_eq!(req.protocols().count(), 0);
    assert_eq!(
        req.validate_upgrade().unwrap().accept(),
        c.expected_accept()
    );
}

#[test]
fn keys_are_random() {
    let a = ClientHandshake::new("h", "/", &[], &[]);
    let b = ClientHandshake::new("h", "/", &[], &[]);
    assert_ne!(a.expected_accept(), b.expected_accept());
}

#[test]
fn empty_target_means_root() {
    let c = ClientHandshake::with_key(NONCE, "h", "", &[], &[]);
    assert!(c.request_bytes().starts_with(b"GET / HTTP/1.1\r\n"));
}

#[test]
#[should_panic(expected = "CR, LF or NUL")]
fn host_injection_panics() {
    ClientHandshake::new("h\r\nX-Evil: 1", "/", &[], &[]);
}

#[test]
#[should_panic(expected = "space")]
fn target_with_space_panics() {
    ClientHandshake::new("h", "/a b", &[], &[]);
}

#[test]
fn accepts_a_valid_101() {
    assert_eq!(check(&client(&[]), &ok_response(&[])), Ok(None));
    // Case and lists do not matter.
    let accept = format!("sec-websocket-accept: {ACCEPT}");
    let buf = response(&[
        "UPGRADE: WebSocket",
        "connection: keep-alive, upgrade",
        &accept,
    ]);
    assert_eq!(check(&client(&[]), &buf), Ok(None));
}

#[test]
fn server_written_101_round_trips() {
    let c = client(&["v1", "v2"]);
    let Ok(Parsed::Complete { value: req, .. }) =
        parse_request(c.request_bytes(), &HandshakeLimits::default())
    else {
        panic!("the request must parse");
    };
    let key = req.validate_upgrade().unwrap();
    let mut out = Vec::new();
    write_switching_protocols(
        &mut out,
        &key,
        req.select_protocol(&["v2"]),
        &[("X-Shard", "1")],
    );
    let Ok(Parsed::Complete { value, consumed }) = c.parse_response(&out) else {
        panic!("the response must be accepted");
    };
    assert_eq!(consumed, out.len());
    assert_eq!(value.protocol(), Some("v2"));
    assert_eq!(value.header_str("x-shard"), Some("1"));
    assert_eq!(value.headers().count(), 5);
}

#[test]
fn incomplete_at_every_split_and_frames_handed_back() {
    let c = client(&[]);
    let mut buf = ok_response(&[]);
    let head_len = buf.len();
    for end in 0..head_len {
        assert_eq!(
            c.parse_response(&buf[..end]),
            Ok(Parsed::Incomplete),
            "{end}"
        );
    }
    // The server's first frame arrives in the same segment.
    buf.extend_from_slice(&[0x81, 0x02, b'h', b'i']);
    let Ok(Parsed::Complete { consumed, .. }) = c.parse_response(&buf) else {
        panic!("complete");
    };
    assert_eq!(consumed, head_len);
    assert_eq!(&buf[consumed..], &[0x81, 0x02, b'h', b'i']);
}

#[test]
fn wrong_or_missing_accept_fails() {
    let c = client(&[]);
    let other = UpgradeKey::from_key(b"AAAAAAAAAAAAAAAAAAAAAA==");
    for accept in [
        format!("Sec-WebSocket-Accept: {}", other.accept()),
        "Sec-WebSocket-Accept: ".into(),
        // The key itself, as a confused server might echo it.
        "Sec-WebSocket-Accept: dGhlIHNhbXBsZSBub25jZQ==".into(),
        // Case matters in base64.
        format!("Sec-WebSocket-Accept: {}", ACCEPT.to_lowercase()),
    ] {
        let buf = response(&["Upgrade: websocket", "Connection: Upgrade", &accept]);
        assert_eq!(
            check(&c, &buf),
            Err(HandshakeError::AcceptMismatch),
            "{accept}"
        );
    }
    let buf = response(&["Upgrade: websocket", "Connection: Upgrade"]);
    assert_eq!(check(&c, &buf), Err(HandshakeError::AcceptMismatch));
    // Twice, even if both are right.
    let accept = format!("Sec-WebSocket-Accept: {ACCEPT}");
    assert_eq!(
        check(&c, &ok_response(&[&accept])),
        Err(HandshakeError::AcceptMismatch)
    );
}

#[test]
fn non_101_carries_the_status() {
    let c = client(&[]);
    let buf = b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n";
    let err = check(&c, buf).unwrap_err();
    assert_eq!(err, HandshakeError::UnexpectedStatus(403));
    assert_eq!(err.to_string(), "server answered 403 instead of 101");
    let buf = b"HTTP/1.1 200 OK\r\nUpgrade: websocket\r\n\r\n";
    assert_eq!(check(&c, buf), Err(HandshakeError::UnexpectedStatus(200)));
}

#[test]
fn http_1_0_101_fails() {
    let mut buf = ok_response(&[]);
    buf[7] = b'0';
    assert!(buf.starts_with(b"HTTP/1.0 101"));
    assert_eq!(
        check(&client(&[]), &buf),
        Err(HandshakeError::UnsupportedHttpVersion)
    );
}

#[test]
fn upgrade_must_be_exactly_websocket() {
    let accept = format!("Sec-WebSocket-Accept: {ACCEPT}");
    for upgrade in [
        None,
        Some("h2c"),
        Some("websocket, h2c"),
        Some("websockets"),
        Some(""),
    ] {
        let mut h = vec!["Connection: Upgrade", accept.as_str()];
        let line = upgrade.map(|u| format!("Upgrade: {u}"));
        h.extend(line.as_deref());
        assert_eq!(
            check(&client(&[]), &response(&h)),
            Err(HandshakeError::NotWebSocketUpgrade),
            "{upgrade:?}"
        );
    }
}

#[test]
fn connection_must_list_upgrade() {
    let accept = format!("Sec-WebSocket-Accept: {ACCEPT}");
    for connection in [None, Some("keep-alive"), Some("upgraded")] {
        let mut h = vec!["Upgrade: websocket", accept.as_str()];
        let line = connection.map(|c| format!("Connection: {c}"));
        h.extend(line.as_deref());
        assert_eq!(
            check(&client(&[]), &response(&h)),
            Err(HandshakeError::MissingConnectionUpgrade),
            "{connection:?}"
        );
    }
}

#[test]
fn subprotocol_must_be_one_offered() {
    let c = client(&["chat", "superchat"]);
    assert_eq!(check(&c, &ok_response(&[])), Ok(None));
    assert_eq!(
        check(&c, &ok_response(&["Sec-WebSocket-Protocol: superchat"])),
        Ok(Some("superchat".into()))
    );
    let bad = Err(HandshakeError::UnexpectedProtocol);
    assert_eq!(
        check(&c, &ok_response(&["Sec-WebSocket-Protocol: other"])),
        bad
    );
    assert_eq!(
        check(&c, &ok_response(&["Sec-WebSocket-Protocol: Chat"])),
        bad
    );
    assert_eq!(
        check(
            &c,
            &ok_response(&["Sec-WebSocket-Protocol: chat, superchat"])
        ),
        bad
    );
    assert_eq!(
        check(
            &c,
            &ok_response(&[
                "Sec-WebSocket-Protocol: chat",
                "Sec-WebSocket-Protocol: chat"
            ])
        ),
        bad
    );
    // A protocol when none was offered.
    assert_eq!(
        check(
            &client(&[]),
            &ok_response(&["Sec-WebSocket-Protocol: chat"])
        ),
        bad
    );
    let mut buf = ok_response(&[]);
    buf.truncate(buf.len() - 2);
    buf.extend_from_slice(b"Sec-WebSocket-Protocol: \xffchat\r\n\r\n");
    assert_eq!(check(&c, &buf), bad);
}

#[test]
fn extension_must_be_one_offered() {
    let reply =
        ok_response(&["Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover"]);
    assert_eq!(
        check(&client(&[]), &reply),
        Err(HandshakeError::UnexpectedExtension)
    );

    let offering = ClientHandshake::with_key(
        NONCE,
        "h",
        "/",
        &[],
        &[(
            "Sec-WebSocket-Extensions",
            "permessage-deflate; client_max_window_bits",
        )],
    );
    let Ok(Parsed::Complete { value, .. }) = offering.parse_response(&reply) else {
        panic!("an offered extension is accepted");
    };
    let exts: Vec<_> = value.extensions().collect();
    assert_eq!(exts.len(), 1);
    assert_eq!(exts[0].param("server_no_context_takeover"), Some(None));
    let other = ok_response(&["Sec-WebSocket-Extensions: x-other"]);
    assert_eq!(
        check(&offering, &other),
        Err(HandshakeError::UnexpectedExtension)
    );
}

#[test]
fn oversized_response_fails() {
    let limits = HandshakeLimits::default().with_max_header_bytes(64);
    let c = client(&[]).with_limits(limits);
    assert_eq!(
        c.parse_response(&ok_response(&[])),
        Err(HandshakeError::HeadTooLarge { limit: 64 })
    );
    assert_eq!(
        c.parse_response(b"garbage that is not HTTP"),
        Err(HandshakeError::Malformed("invalid HTTP version"))
    );
}

#[test]
fn client_errors_report_502() {
    for err in [
        HandshakeError::UnexpectedStatus(404),
        HandshakeError::AcceptMismatch,
        HandshakeError::UnexpectedProtocol,
        HandshakeError::UnexpectedExtension,
    ] {
        assert_eq!(err.status(), 502);
    }
}
