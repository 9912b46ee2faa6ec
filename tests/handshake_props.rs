//! Verifies that the opening handshake accepts every spelling of a valid
//! upgrade RFC 6455 allows, at any split of the input, and interoperates with
//! tungstenite in both roles.

use std::io::{self, Cursor, Read, Write};

use base64::Engine as _;
use proptest::prelude::*;
use shardcast::proto::handshake::{
    parse_request, write_switching_protocols, ClientHandshake, HandshakeLimits, Parsed, Request,
};

fn complete(buf: &[u8]) -> (Request<'_>, usize) {
    match parse_request(buf, &HandshakeLimits::default()) {
        Ok(Parsed::Complete { value, consumed }) => (value, consumed),
        other => panic!("expected a complete head, got {other:?}"),
    }
}

/// Randomly re-cases an ASCII string.
fn any_case(s: &'static str) -> impl Strategy<Value = String> {
    proptest::collection::vec(any::<bool>(), s.len()).prop_map(move |upper| {
        s.chars()
            .zip(upper)
            .map(|(c, u)| {
                if u {
                    c.to_ascii_uppercase()
                } else {
                    c.to_ascii_lowercase()
                }
            })
            .collect()
    })
}

/// Optional whitespace, as RFC 9110 §5.6.3 allows around field values and
/// list elements.
fn ows() -> impl Strategy<Value = &'static str> {
    prop_oneof![Just(""), Just(" "), Just("\t"), Just("  \t")]
}

/// A comma list holding `token` (re-cased) among other tokens, with stray
/// whitespace and empty elements.
fn list_with(token: &'static str) -> impl Strategy<Value = String> {
    (
        any_case(token),
        proptest::collection::vec("[a-z][a-z0-9-]{0,8}", 0..3),
        any::<prop::sample::Index>(),
        ows(),
        any::<bool>(),
    )
        .prop_map(|(token, mut others, at, space, empty)| {
            others.retain(|o| !o.eq_ignore_ascii_case(&token));
            let at = at.index(others.len() + 1);
            others.insert(at, token);
            if empty {
                others.push(String::new());
            }
            others.join(&format!("{space},{space}"))
        })
}

#[derive(Debug, Clone)]
struct Upgrade {
    head: Vec<u8>,
    key: String,
    target: String,
}

fn upgrade_request() -> impl Strategy<Value = Upgrade> {
    let extra = proptest::collection::vec(("X-[A-Za-z0-9-]{1,12}", "[ -~]{0,30}"), 0..6);
    (
        any::<[u8; 16]>(),
        "/[a-z0-9/._-]{0,20}(\\?[a-z0-9=&%]{0,20})?",
        (
            any_case("Host"),
            any_case("Upgrade"),
            any_case("Connection"),
        ),
        (
            any_case("Sec-WebSocket-Key"),
            any_case("Sec-WebSocket-Version"),
        ),
        (list_with("websocket"), list_with("Upgrade")),
        (ows(), ows()),
        extra,
        any::<u64>(),
    )
        .prop_map(
            |(
                key,
                target,
                (host, upgrade, connection),
                (key_name, version_name),
                (upgrade_value, connection_value),
                (pre, post),
                extra,
                seed,
            )| {
                let key = base64::engine::general_purpose::STANDARD.encode(key);
                let mut fields = vec![
                    (host, "example.com:8080".to_string()),
                    (upgrade, upgrade_value),
                    (connection, connection_value),
                    (key_name, key.clone()),
                    (version_name, "13".to_string()),
                ];
                fields.extend(extra);
                // A deterministic shuffle: field order carries no meaning.
                let mut rng = seed;
                for i in (1..fields.len()).rev() {
                    rng = rng
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    fields.swap(i, (rng >> 33) as usize % (i + 1));
                }
                let mut head = format!("GET {target} HTTP/1.1\r\n");
                for (name, value) in &fields {
                    head.push_str(&format!("{name}:{pre}{value}{post}\r\n"));
                }
                head.push_str("\r\n");
                Upgrade {
                    head: head.into_bytes(),
                    key,
                    target,
                }
            },
        )
}

proptest! {
    #[test]
    fn every_valid_spelling_is_accepted(req in upgrade_request()) {
        let (parsed, consumed) = complete(&req.head);
        prop_assert_eq!(consumed, req.head.len());
        let expected_target = req.target.as_str();
        prop_assert_eq!(parsed.target(), expected_target);
        prop_assert!(parsed.is_websocket_upgrade());
        let key = parsed.validate_upgrade().map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(key.accept(), tungstenite::handshake::derive_accept_key(req.key.as_bytes()));
    }

    #[test]
    fn any_split_is_incomplete_then_complete(req in upgrade_request(), at in any::<prop::sample::Index>()) {
        let split = at.index(req.head.len());
        prop_assert_eq!(
            parse_request(&req.head[..split], &HandshakeLimits::default()),
            Ok(Parsed::Incomplete)
        );
        prop_assert!(parse_request(&req.head, &HandshakeLimits::default()).unwrap().is_complete());
    }

    #[test]
    fn trailing_bytes_are_never_consumed(req in upgrade_request(), tail in proptest::collection::vec(any::<u8>(), 0..64)) {
        let mut buf = req.head.clone();
        buf.extend_from_slice(&tail);
        let (_, consumed) = complete(&buf);
        prop_assert_eq!(consumed, req.head.len());
        prop_assert_eq!(&buf[consumed..], &tail[..]);
    }

    #[test]
    fn client_and_server_agree(
        host in "[a-z]{1,10}(\\.[a-z]{1,10}){0,2}(:[0-9]{1,5})?",
        target in "/[a-zA-Z0-9/._~-]{0,30}",
        offered in proptest::collection::vec("[a-z][a-z0-9.-]{0,10}", 0..4),
        supported in proptest::collection::vec("[a-z][a-z0-9.-]{0,10}", 0..4),
    ) {
        let offered: Vec<&str> = offered.iter().map(String::as_str).collect();
        let supported: Vec<&str> = supported.iter().map(String::as_str).collect();
        let client = ClientHandshake::new(&host, &target, &offered, &[]);
        let (req, _) = complete(client.request_bytes());
        prop_assert_eq!(req.host(), Some(host.as_str()));
        prop_assert_eq!(req.path(), target.as_str());
        prop_assert_eq!(req.protocols().collect::<Vec<_>>(), offered.clone());
        let key = req.validate_upgrade().map_err(|e| TestCaseError::fail(e.to_string()))?;
        let selected = req.select_protocol(&supported);
        let mut response = Vec::new();
        write_switching_protocols(&mut response, &key, selected, &[]);
        match client.parse_response(&response) {
            Ok(Parsed::Complete { value, consumed }) => {
                prop_assert_eq!(consumed, response.len());
                prop_assert_eq!(value.protocol(), selected);
            }
            other => return Err(TestCaseError::fail(format!("{other:?}"))),
        }
    }

    #[test]
    fn arbitrary_bytes_yield_a_writable_verdict(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut out = Vec::new();
        match parse_request(&bytes, &HandshakeLimits::default()) {
            Ok(Parsed::Complete { value, .. }) => {
                if let Err(e) = value.validate_upgrade() {
                    e.write_response(&mut out);
                    prop_assert!((400..500).contains(&e.status()));
                }
            }
            Ok(Parsed::Incomplete) => {}
            Err(e) => {
                e.write_response(&mut out);
                prop_assert!(e.status() == 400 || e.status() == 431);
            }
        }
    }
}

/// An in-memory stream: reads what the test put in `input` (or would block),
/// records what is written.
#[derive(Default)]
struct Pipe {
    input: Cursor<Vec<u8>>,
    output: Vec<u8>,
}

impl Read for Pipe {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.input.read(buf)? {
            0 => Err(io::ErrorKind::WouldBlock.into()),
            n => Ok(n),
        }
    }
}

impl Write for Pipe {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.output.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn tungstenite_client_accepts_our_101() {
    use tungstenite::client::IntoClientRequest;
    use tungstenite::handshake::HandshakeError;

    let mut request = "ws://example.com/chat?topic=t"
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", "v1, v2".parse().unwrap());
    let mut mid = match tungstenite::client(request, Pipe::default()) {
        Err(HandshakeError::Interrupted(mid)) => mid,
        _ => panic!("the client must wait for our response"),
    };

    let sent = mid.get_ref().get_ref().output.clone();
    let (req, consumed) = complete(&sent);
    assert_eq!(consumed, sent.len());
    assert_eq!(req.query_param("topic"), Some("t"));
    let key = req.validate_upgrade().unwrap();
    let mut response = Vec::new();
    write_switching_protocols(&mut response, &key, req.select_protocol(&["v2"]), &[]);
    // A first frame right behind the 101: unmasked text "hi".
    response.extend_from_slice(&[0x81, 0x02, b'h', b'i']);
    mid.get_mut().get_mut().input = Cursor::new(response);

    let (mut ws, response) = match mid.handshake() {
        Ok(done) => done,
        Err(e) => panic!("tungstenite refused our 101: {e:?}"),
    };
    assert_eq!(response.status(), 101);
    assert_eq!(response.headers()["Sec-WebSocket-Protocol"], "v2");
    assert_eq!(ws.read().unwrap().into_text().unwrap(), "hi");
}

#[test]
// The callback's signature, error type included, is tungstenite's.
#[allow(clippy::result_large_err)]
fn tungstenite_server_accepts_our_request() {
    let client = ClientHandshake::new("example.com", "/chat", &["v1"], &[]);
    let pipe = Pipe {
        input: Cursor::new(client.request_bytes().to_vec()),
        output: Vec::new(),
    };
    let ws = tungstenite::accept_hdr(
        pipe,
        |_req: &tungstenite::handshake::server::Request,
         mut resp: tungstenite::handshake::server::Response| {
            resp.headers_mut()
                .insert("Sec-WebSocket-Protocol", "v1".parse().unwrap());
            Ok(resp)
        },
    )
    .unwrap_or_else(|e| panic!("tungstenite refused our request: {e:?}"));
    let written = &ws.get_ref().output;
    match client.parse_response(written) {
        Ok(Parsed::Complete { value, consumed }) => {
            assert_eq!(consumed, written.len());
            assert_eq!(value.protocol(), Some("v1"));
        }
        other => panic!("we refused tungstenite's 101: {other:?}"),
    }
}
