//! Verifies that the closing handshake echoes every valid close code and reason, and fails invalid codes, reasons and payloads.

use super::*;

const VALID_CLOSE_CODES: [u16; 13] = [
    1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999,
];

const INVALID_CLOSE_CODES: [u16; 11] = [
    0, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535,
];

#[test]
fn the_closing_handshake_echoes_valid_codes_and_rejects_the_rest() {
    let h = echo_server(1 << 20);
    let mut cases = Vec::new();
    for code in VALID_CLOSE_CODES {
        cases.push(Case {
            name: format!("close {code}"),
            send: frame(CLOSE, &close_payload(code, b"")),
            reply: server_frame(CLOSE, &close_payload(code, b"")),
            close: None,
        });
    }
    for code in INVALID_CLOSE_CODES {
        cases.push(Case::fails(
            format!("close {code}"),
            frame(CLOSE, &close_payload(code, b"")),
            1002,
        ));
    }
    for reason in ["bye", "ünïcødé reason ✓", &"r".repeat(123)] {
        cases.push(Case {
            name: format!("close 1000 with a reason of {} bytes", reason.len()),
            send: frame(CLOSE, &close_payload(1000, reason.as_bytes())),
            reply: server_frame(CLOSE, &close_payload(1000, reason.as_bytes())),
            close: None,
        });
    }
    cases.push(Case::fails(
        "close with a reason of 124 bytes (payload 126)",
        frame(CLOSE, &close_payload(1000, &ascii(124))),
        1002,
    ));
    for (name, reason) in [
        ("surrogate", &b"\xed\xa0\x80"[..]),
        ("overlong", b"\xc0\xaf"),
        ("truncated", b"ok\xe2\x82"),
    ] {
        cases.push(Case::fails(
            format!("close reason with {name} UTF-8"),
            frame(CLOSE, &close_payload(1000, reason)),
            1007,
        ));
    }
    cases.push(Case::fails(
        "close payload of 1 byte",
        frame(CLOSE, &[0x03]),
        1002,
    ));
    // Messages before the close are echoed before the close echo.
    let mut send = frame(TEXT, b"last words");
    send.extend(frame(BINARY, &pattern(70000)));
    send.extend(frame(CLOSE, &close_payload(1000, b"bye")));
    let mut reply = server_frame(TEXT, b"last words");
    reply.extend(server_frame(BINARY, &pattern(70000)));
    reply.extend(server_frame(CLOSE, &close_payload(1000, b"bye")));
    cases.push(Case {
        name: "messages then close".into(),
        send,
        reply,
        close: None,
    });
    // Data after the close is neither echoed nor answered.
    let mut send = frame(CLOSE, &close_payload(1000, b""));
    send.extend(frame(TEXT, b"after close"));
    send.extend(frame(PING, b"after close"));
    cases.push(Case {
        name: "data after close".into(),
        send,
        reply: server_frame(CLOSE, &close_payload(1000, b"")),
        close: None,
    });
    // A close between fragments ends the connection; the partial message
    // is dropped.
    let mut send = part(TEXT, b"unfinished");
    send.extend(frame(CLOSE, &close_payload(1001, b"")));
    cases.push(Case {
        name: "close inside a fragmented message".into(),
        send,
        reply: server_frame(CLOSE, &close_payload(1001, b"")),
        close: None,
    });
    run_closes(h.local_addr(), &cases);

    // An empty close is answered with an empty close or with 1000.
    let mut r = Raw::connect(h.local_addr());
    r.send_raw(&frame(CLOSE, b""));
    let h2 = read_bytes(&mut r, 2, "empty close");
    let answer = match h2[1] {
        0 => h2,
        2 => [h2, read_bytes(&mut r, 2, "empty close")].concat(),
        n => panic!("empty close answered with a {n}-byte payload: {h2:02x?}"),
    };
    assert!(
        answer == [0x88, 0x00] || answer == [0x88, 0x02, 0x03, 0xe8],
        "empty close answered with {answer:02x?}"
    );
    expect_end(&mut r, "empty close");
    stop(h);
}

/// Runs close cases: a case without a close code has closed the
/// connection itself, so after its reply the server must end TCP.
fn run_closes(addr: SocketAddr, cases: &[Case]) {
    for case in cases {
        let mut r = Raw::connect(addr);
        let _ = r.stream.write_all(&case.send);
        expect_bytes(&mut r, &case.reply, &case.name);
        match case.close {
            Some(code) => expect_close(&mut r, code, &case.name),
            None => expect_end(&mut r, &case.name),
        }
    }
}
