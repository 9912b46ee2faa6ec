use super::super::{write_rejection, MAX_HEADERS_CAP};
use super::*;

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// The request of RFC 6455 §1.2, as a list of header lines.
fn valid_headers() -> Vec<(String, String)> {
    [
        ("Host", "server.example.com"),
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", KEY),
        ("Origin", "http://example.com"),
        ("Sec-WebSocket-Protocol", "chat, superchat"),
        ("Sec-WebSocket-Version", "13"),
    ]
    .iter()
    .map(|(n, v)| (n.to_string(), v.to_string()))
    .collect()
}

fn head(request_line: &str, headers: &[(String, String)]) -> Vec<u8> {
    let mut out = format!("{request_line}\r\n");
    for (n, v) in headers {
        out.push_str(&format!("{n}: {v}\r\n"));
    }
    out.push_str("\r\n");
    out.into_bytes()
}

fn valid() -> Vec<u8> {
    head("GET /chat HTTP/1.1", &valid_headers())
}

/// The valid request with header `name` removed (all of them) and, if
/// `value` is given, one `name: value` appended instead.
fn with(name: &str, value: Option<&str>) -> Vec<u8> {
    let mut h = valid_headers();
    h.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
    if let Some(v) = value {
        h.push((name.to_string(), v.to_string()));
    }
    head("GET /chat HTTP/1.1", &h)
}

fn with_extra(extra: &[(&str, &str)]) -> Vec<u8> {
    let mut h = valid_headers();
    h.extend(extra.iter().map(|(n, v)| (n.to_string(), v.to_string())));
    head("GET /chat HTTP/1.1", &h)
}

fn parse(buf: &[u8]) -> (Request<'_>, usize) {
    match parse_request(buf, &HandshakeLimits::default()) {
        Ok(Parsed::Complete { value, consumed }) => (value, consumed),
        other => panic!("expected a complete request, got {other:?}"),
    }
}

fn validate(buf: &[u8]) -> Result<UpgradeKey, HandshakeError> {
    parse(buf).0.validate_upgrade()
}

#[test]
fn valid_request_parses_and_validates() {
    let buf = valid();
    let (req, consumed) = parse(&buf);
    assert_eq!(consumed, buf.len());
    assert_eq!(req.method(), "GET");
    assert_eq!(req.path(), "/chat");
    assert_eq!(req.query(), None);
    assert_eq!(req.version(), 1);
    assert_eq!(req.host(), Some("server.example.com"));
    assert_eq!(req.origin(), Some("http://example.com"));
    assert_eq!(req.headers().count(), 7);
    assert_eq!(
        req.headers().next(),
        Some(("Host", &b"server.example.com"[..]))
    );
    assert!(req.is_websocket_upgrade());
    let key = req.validate_upgrade().unwrap();
    assert_eq!(key.accept(), ACCEPT);
}

#[test]
fn header_lookup_is_case_insensitive() {
    let buf = valid();
    let (req, _) = parse(&buf);
    assert_eq!(req.header("SEC-WEBSOCKET-KEY"), Some(KEY.as_bytes()));
    assert_eq!(req.header_str("sec-websocket-version"), Some("13"));
    assert_eq!(req.header("X-Absent"), None);
}

#[test]
fn header_names_and_token_values_ignore_case() {
    let h: Vec<(String, String)> = valid_headers()
        .into_iter()
        .map(|(n, v)| {
            let v = if n == "Sec-WebSocket-Key" {
                v
            } else {
                v.to_uppercase()
            };
            (n.to_lowercase(), v)
        })
        .collect();
    let buf = head("GET /chat HTTP/1.1", &h);
    assert_eq!(validate(&buf).unwrap().accept(), ACCEPT);
}

#[test]
fn header_str_is_none_for_non_utf8() {
    let buf = with_extra(&[]);
    let mut buf = buf[..buf.len() - 2].to_vec();
    buf.extend_from_slice(b"X-Bin: \xff\xfe\r\n\r\n");
    let (req, _) = parse(&buf);
    assert_eq!(req.header("x-bin"), Some(&b"\xff\xfe"[..]));
    assert_eq!(req.header_str("x-bin"), None);
}

#[test]
fn path_query_and_params() {
    let buf = head(
        "GET /ws?topic=news&empty=&bare&topic=second&enc=a%2Fb HTTP/1.1",
        &valid_headers(),
    );
    let (req, _) = parse(&buf);
    assert_eq!(req.path(), "/ws");
    assert_eq!(
        req.target(),
        "/ws?topic=news&empty=&bare&topic=second&enc=a%2Fb"
    );
    assert_eq!(
        req.query(),
        Some("topic=news&empty=&bare&topic=second&enc=a%2Fb")
    );
    assert_eq!(req.query_param("topic"), Some("news"));
    assert_eq!(req.query_param("empty"), Some(""));
    assert_eq!(req.query_param("bare"), Some(""));
    assert_eq!(req.query_param("enc"), Some("a%2Fb"));
    assert_eq!(req.query_param("Topic"), None);
    assert_eq!(req.query_param("missing"), None);
    assert_eq!(
        percent_decode(req.query_param("enc").unwrap()).as_deref(),
        Some("a/b")
    );

    let buf = head("GET /ws? HTTP/1.1", &valid_headers());
    assert_eq!(parse(&buf).0.query(), Some(""));
    assert_eq!(parse(&buf).0.path(), "/ws");
}

#[test]
fn percent_decoding() {
    assert!(matches!(
        percent_decode("plain"),
        Some(Cow::Borrowed("plain"))
    ));
    assert_eq!(percent_decode("a%20b+c").as_deref(), Some("a b+c"));
    assert_eq!(percent_decode("%E2%82%AC").as_deref(), Some("€"));
    assert_eq!(percent_decode("%e2%82%ac").as_deref(), Some("€"));
    assert_eq!(percent_decode("bad%2"), None);
    assert_eq!(percent_decode("bad%zz"), None);
    assert_eq!(percent_decode("%ff"), None);
}

#[test]
fn incomplete_at_every_split() {
    let buf = valid();
    for end in 0..buf.len() {
        assert_eq!(
            parse_request(&buf[..end], &HandshakeLimits::default()),
            Ok(Parsed::Incomplete),
            "prefix of {end} bytes"
        );
    }
    assert!(parse_request(&buf, &HandshakeLimits::default())
        .unwrap()
        .is_complete());
}

#[test]
fn bytes_after_the_head_are_handed_back() {
    let mut buf = valid();
    let head_len = buf.len();
    // A masked text frame sent right behind the handshake.
    let frame = [0x81, 0x82, 1, 2, 3, 4, b'h' ^ 1, b'i' ^ 2];
    buf.extend_from_slice(&frame);
    let (req, consumed) = parse(&buf);
    assert_eq!(consumed, head_len);
    assert_eq!(&buf[consumed..], &frame);
    assert!(req.validate_upgrade().is_ok());
}

#[test]
fn post_body_follows_the_head() {
    let buf = b"POST /api/publish?topic=t HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello";
    let (req, consumed) = parse(buf);
    assert_eq!(req.method(), "POST");
    assert_eq!(req.path(), "/api/publish");
    assert_eq!(req.content_length(), Ok(Some(5)));
    assert_eq!(&buf[consumed..], b"hello");
    assert!(!req.is_websocket_upgrade());
}

#[test]
fn content_length_rules() {
    let cl = |values: &[&str]| {
        let mut s = String::from("POST / HTTP/1.1\r\nHost: h\r\n");
        for v in values {
            s.push_str(&format!("Content-Length: {v}\r\n"));
        }
        s.push_str("\r\n");
        let buf = s.into_bytes();
        let (req, _) = parse(&buf);
        req.content_length()
    };
    assert_eq!(cl(&[]), Ok(None));
    assert_eq!(cl(&["0"]), Ok(Some(0)));
    assert_eq!(cl(&["42", "42"]), Ok(Some(42)));
    assert_eq!(cl(&["18446744073709551615"]), Ok(Some(u64::MAX)));
    assert_eq!(HandshakeError::InvalidContentLength.status(), 400);
    let bad = Err(HandshakeError::InvalidContentLength);
    assert_eq!(cl(&["42", "43"]), bad);
    assert_eq!(cl(&["+5"]), bad);
    assert_eq!(cl(&["-1"]), bad);
    assert_eq!(cl(&["5, 5"]), bad);
    assert_eq!(cl(&["0x10"]), bad);
    assert_eq!(cl(&[""]), bad);
    assert_eq!(cl(&["18446744073709551616"]), bad);
}

#[test]
fn plain_get_is_not_an_upgrade() {
    let buf = b"GET /healthz HTTP/1.1\r\nHost: h\r\n\r\n";
    let (req, _) = parse(buf);
    assert!(!req.is_websocket_upgrade());
    assert_eq!(
        req.validate_upgrade(),
        Err(HandshakeError::NotWebSocketUpgrade)
    );
}

#[test]
fn http_1_0_parses_but_cannot_upgrade() {
    let buf = head("GET /chat HTTP/1.0", &valid_headers());
    let (req, _) = parse(&buf);
    assert_eq!(req.version(), 0);
    let err = req.validate_upgrade().unwrap_err();
    assert_eq!(err, HandshakeError::UnsupportedHttpVersion);
    assert_eq!(err.status(), 400);
}

#[test]
fn non_get_is_405() {
    for method in ["POST", "PUT", "get", "HEAD"] {
        let buf = head(&format!("{method} /chat HTTP/1.1"), &valid_headers());
        let err = validate(&buf).unwrap_err();
        assert_eq!(err, HandshakeError::MethodNotAllowed, "{method}");
        assert_eq!(err.status(), 405);
    }
}

#[test]
fn host_is_required_once_and_non_empty() {
    assert_eq!(
        validate(&with("Host", None)),
        Err(HandshakeError::MissingHost)
    );
    assert_eq!(
        validate(&with("Host", Some(""))),
        Err(HandshakeError::MissingHost)
    );
    assert_eq!(
        validate(&with_extra(&[("host", "other.example")])),
        Err(HandshakeError::DuplicateHeader("Host"))
    );
    assert_eq!(HandshakeError::MissingHost.status(), 400);
}

#[test]
fn upgrade_must_list_websocket() {
    assert_eq!(HandshakeError::NotWebSocketUpgrade.status(), 400);
    let err = Err(HandshakeError::NotWebSocketUpgrade);
    assert_eq!(validate(&with("Upgrade", None)), err);
    assert_eq!(validate(&with("Upgrade", Some("h2c"))), err);
    assert_eq!(validate(&with("Upgrade", Some("websockets"))), err);
    assert_eq!(validate(&with("Upgrade", Some("web socket"))), err);
    assert_eq!(validate(&with("Upgrade", Some(""))), err);
    for ok in [
        "WebSocket",
        "WEBSOCKET",
        "h2c, websocket",
        "websocket ,foo",
        " , websocket",
    ] {
        assert!(validate(&with("Upgrade", Some(ok))).is_ok(), "{ok}");
    }
    // Several Upgrade fields form one list.
    let mut buf = with("Upgrade", Some("h2c"));
    buf.truncate(buf.len() - 2);
    buf.extend_from_slice(b"Upgrade: websocket\r\n\r\n");
    assert!(validate(&buf).is_ok());
}

#[test]
fn connection_must_list_upgrade() {
    assert_eq!(HandshakeError::MissingConnectionUpgrade.status(), 400);
    let err = Err(HandshakeError::MissingConnectionUpgrade);
    assert_eq!(validate(&with("Connection", None)), err);
    assert_eq!(validate(&with("Connection", Some("keep-alive"))), err);
    assert_eq!(validate(&with("Connection", Some("upgraded"))), err);
    assert_eq!(
        validate(&with("Connection", Some("keep-alive upgrade"))),
        err
    );
    for ok in [
        "upgrade",
        "keep-alive, Upgrade",
        "Upgrade,keep-alive",
        "KEEP-ALIVE ,, UPGRADE",
    ] {
        assert!(validate(&with("Connection", Some(ok))).is_ok(), "{ok}");
    }
    let mut buf = with("Connection", Some("keep-alive"));
    buf.truncate(buf.len() - 2);
    buf.extend_from_slice(b"connection: Upgrade\r\n\r\n");
    assert!(validate(&buf).is_ok());
}

#[test]
fn version_other_than_13_is_426_with_header() {
    for version in [
        Some("8"),
        Some("12"),
        Some("14"),
        Some("13, 8"),
        Some("013"),
        None,
    ] {
        let err = validate(&with("Sec-WebSocket-Version", version)).unwrap_err();
        assert_eq!(err, HandshakeError::UnsupportedVersion, "{version:?}");
        assert_eq!(err.status(), 426);
        let mut out = Vec::new();
        err.write_response(&mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 426 Upgrade Required\r\n"));
        assert!(text.contains("\r\nSec-WebSocket-Version: 13\r\n"));
    }
    assert_eq!(
        validate(&with_extra(&[("Sec-WebSocket-Version", "13")])),
        Err(HandshakeError::DuplicateHeader("Sec-WebSocket-Version"))
    );
}

#[test]
fn version_is_checked_before_the_key() {
    // An old client (version 8) with a key we would also refuse learns the
    // version it needs.
    let mut h = valid_headers();
    h.retain(|(n, _)| n != "Sec-WebSocket-Key" && n != "Sec-WebSocket-Version");
    h.push(("Sec-WebSocket-Version".into(), "8".into()));
    let buf = head("GET /chat HTTP/1.1", &h);
    assert_eq!(validate(&buf), Err(HandshakeError::UnsupportedVersion));
}

#[test]
fn key_must_be_base64_of_16_bytes() {
    assert_eq!(
        validate(&with("Sec-WebSocket-Key", None)),
        Err(HandshakeError::MissingKey)
    );
    let invalid = [
        "",
        // 15 bytes.
        "AAAAAAAAAAAAAAAAAAAA",
        "YWJjZGVmZ2hpamtsbW5v",
        // 17 bytes.
        "YWJjZGVmZ2hpamtsbW5vcHE=",
        // 18 bytes: 24 characters, no padding.
        "YWJjZGVmZ2hpamtsbW5vcHFy",
        // 16 bytes without padding.
        "dGhlIHNhbXBsZSBub25jZQ",
        // Not base64 alphabet.
        "dGhlIHNhbXBsZSBub25jZQ!=",
        "dGhlIHNhbXBsZSBub25jZQ-_",
        // URL-safe alphabet.
        "-_-_-_-_-_-_-_-_-_-_-w==",
        // Non-canonical: the last character carries non-zero trailing bits.
        "dGhlIHNhbXBsZSBub25jZR==",
        // Whitespace inside.
        "dGhlIHNhbXBsZS Bub25jZQ==",
    ];
    for key in invalid {
        let err = validate(&with("Sec-WebSocket-Key", Some(key))).unwrap_err();
        assert_eq!(err, HandshakeError::InvalidKey, "{key:?}");
        assert_eq!(err.status(), 400);
    }
    assert_eq!(
        validate(&with_extra(&[("sec-websocket-key", KEY)])),
        Err(HandshakeError::DuplicateHeader("Sec-WebSocket-Key"))
    );
    // Surrounding whitespace is not part of the value.
    let buf = with("Sec-WebSocket-Key", Some(&format!("  {KEY}\t")));
    assert_eq!(validate(&buf).unwrap().accept(), ACCEPT);
    // Any 16 bytes will do.
    let buf = with("Sec-WebSocket-Key", Some("AAAAAAAAAAAAAAAAAAAAAA=="));
    assert!(validate(&buf).is_ok());
}

#[test]
fn protocols_from_all_fields() {
    let buf = with_extra(&[("sec-websocket-protocol", " v2.shardcast ,,  x ")]);
    let (req, _) = parse(&buf);
    assert_eq!(
        req.protocols().collect::<Vec<_>>(),
        ["chat", "superchat", "v2.shardcast", "x"]
    );
    assert_eq!(
        req.select_protocol(&["superchat", "chat"]),
        Some("superchat")
    );
    assert_eq!(req.select_protocol(&["nope", "x"]), Some("x"));
    assert_eq!(req.select_protocol(&["CHAT"]), None);
    assert_eq!(req.select_protocol(&[]), None);

    let buf = with("Sec-WebSocket-Protocol", None);
    assert_eq!(parse(&buf).0.protocols().count(), 0);
}

#[test]
fn protocol_list_splits_at_every_comma() {
    // Found by fuzzing: quotes once shielded a comma, so `a="x,y"` came out
    // as one protocol that, echoed in the 101, the client would read as two.
    let buf = with("Sec-WebSocket-Protocol", Some(r#"a="x,y", b"#));
    let (req, _) = parse(&buf);
    assert_eq!(
        req.protocols().collect::<Vec<_>>(),
        [r#"a="x"#, r#"y""#, "b"]
    );
    assert!(req.protocols().all(|p| !p.contains(',')));
}

#[test]
fn extensions_offered_by_a_browser() {
    let buf = with_extra(&[(
        "Sec-WebSocket-Extensions",
        "permessage-deflate; client_max_window_bits, x-webkit-deflate-frame",
    )]);
    let (req, _) = parse(&buf);
    let exts: Vec<_> = req.extensions().collect();
    assert_eq!(exts.len(), 2);
    assert_eq!(exts[0].name(), "permessage-deflate");
    assert_eq!(exts[0].param("client_max_window_bits"), Some(None));
    assert_eq!(exts[1].name(), "x-webkit-deflate-frame");
}

#[test]
fn head_over_byte_limit_is_431() {
    let limits = HandshakeLimits::default();
    let mut big = with_extra(&[("X-Pad", &"a".repeat(9000))]);
    // Complete but too long: the parser never looks past the limit, so it
    // sees an unfinished head that already fills it.
    let err = parse_request(&big, &limits).unwrap_err();
    assert_eq!(err, HandshakeError::HeadTooLarge { limit: 8192 });
    assert_eq!(err.status(), 431);
    // Incomplete and already too long.
    big.truncate(8192);
    assert_eq!(parse_request(&big, &limits), Err(err));
    // One byte under the limit is still just incomplete.
    big.truncate(8191);
    assert_eq!(parse_request(&big, &limits), Ok(Parsed::Incomplete));
}

#[test]
fn head_of_exactly_the_limit_is_accepted() {
    let buf = valid();
    let exact = HandshakeLimits::default().with_max_header_bytes(buf.len());
    assert!(parse_request(&buf, &exact).unwrap().is_complete());
    let limits = HandshakeLimits::default().with_max_header_bytes(buf.len() - 1);
    assert_eq!(
        parse_request(&buf, &limits),
        Err(HandshakeError::HeadTooLarge {
            limit: buf.len() - 1
        })
    );
    // Trailing bytes do not count against the limit.
    let mut pipelined = valid();
    pipelined.extend_from_slice(&[0u8; 100_000]);
    assert!(parse_request(&pipelined, &exact).unwrap().is_complete());
}

#[test]
fn header_bomb_is_431() {
    let limits = HandshakeLimits::default();
    let pad: Vec<(String, String)> = (0..64 - 7)
        .map(|i| (format!("X-{i}"), "v".into()))
        .collect();
    let mut h = valid_headers();
    h.extend(pad);
    let buf = head("GET /chat HTTP/1.1", &h);
    assert!(
        parse_request(&buf, &limits).unwrap().is_complete(),
        "64 fields are fine"
    );

    h.push(("X-One-Too-Many".into(), "v".into()));
    let buf = head("GET /chat HTTP/1.1", &h);
    let err = parse_request(&buf, &limits).unwrap_err();
    assert_eq!(err, HandshakeError::TooManyHeaders { limit: 64 });
    assert_eq!(err.status(), 431);
    // Detected before the head is complete.
    assert_eq!(parse_request(&buf[..buf.len() - 2], &limits), Err(err));

    let tight = HandshakeLimits::default().with_max_headers(3);
    assert_eq!(
        parse_request(&valid(), &tight),
        Err(HandshakeError::TooManyHeaders { limit: 3 })
    );
    // Beyond the cap, the cap applies.
    let huge = HandshakeLimits::default()
        .with_max_headers(usize::MAX)
        .with_max_header_bytes(usize::MAX);
    let many: Vec<(String, String)> = (0..=MAX_HEADERS_CAP)
        .map(|i| (format!("X-{i}"), "v".into()))
        .collect();
    let buf = head("GET / HTTP/1.1", &many);
    assert_eq!(
        parse_request(&buf, &huge),
        Err(HandshakeError::TooManyHeaders {
            limit: MAX_HEADERS_CAP
        })
    );
}

#[test]
fn malformed_heads_are_400() {
    let cases: [&[u8]; 7] = [
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        b"GET /chat HTTP/2.0\r\n\r\n",
        b"GET /chat\r\n\r\n",
        b"GET  /chat HTTP/1.1\r\n\r\n",
        b"GET /chat HTTP/1.1\r\nBad Header: x\r\n\r\n",
        b"GET /chat HTTP/1.1\r\nX: a\rb\r\n\r\n",
        b"GET /chat HTTP/1.1\r\nX: a\r\n folded\r\n\r\n",
    ];
    for case in cases {
        let err = parse_request(case, &HandshakeLimits::default()).unwrap_err();
        assert!(
            matches!(err, HandshakeError::Malformed(_)),
            "{case:?}: {err:?}"
        );
        assert_eq!(err.status(), 400);
        let mut out = Vec::new();
        err.write_response(&mut out);
        assert!(out.starts_with(b"HTTP/1.1 400 Bad Request\r\n"));
    }
}

#[test]
fn every_error_status_can_be_written() {
    for err in [
        HandshakeError::HeadTooLarge { limit: 1 },
        HandshakeError::MethodNotAllowed,
        HandshakeError::InvalidKey,
        HandshakeError::UnsupportedVersion,
        HandshakeError::UnexpectedStatus(404),
    ] {
        let mut out = Vec::new();
        write_rejection(&mut out, err.status(), err.reason());
        let prefix = format!("HTTP/1.1 {} ", err.status());
        assert!(out.starts_with(prefix.as_bytes()));
    }
}
